#!/usr/bin/env bash
# The plain install, as a user without PyTorch gets it: `pip install .` (no extras) into a
# fresh virtual environment, no torch in it, and `facemtl analyze` finds the face in the
# shipped sample photo with the shipped ONNX model. .ci/run calls this after the tests.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
# Beside the checkout, not in /tmp: CI's /tmp ran out of space here once (after the suite's
# temporary folders), while the checkout's disk had just held the test environment.
tmp="$(mktemp -d "$repo/.ci/plain.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
export TMPDIR="$tmp/tmp" PIP_NO_CACHE_DIR=1
mkdir -p "$TMPDIR"
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! "$tmp/venv/bin/python" -m pip install -q "$repo" > "$tmp/pip.log" 2>&1; then
    grep -v "^WARNING: Location" "$tmp/pip.log" || true
    df -h "$tmp" /tmp || true
    echo "plain install check FAILED: pip could not install the package (above)"; exit 1
fi
if "$tmp/venv/bin/python" -c "import torch" >/dev/null 2>&1; then
    echo "plain install check FAILED: torch came with the plain install"; exit 1
fi
cd "$tmp"
"$tmp/venv/bin/facemtl" analyze "$repo/examples/astronaut.jpg" --json --no-progress > "$tmp/out.json"
"$tmp/venv/bin/python" - "$tmp/out.json" <<'PY'
import json, sys
faces = json.load(open(sys.argv[1]))["faces"]
assert len(faces) == 1, faces
f = faces[0]
print(f"plain install check: torch absent; the sample photo: 1 face, age {f['age']:.0f}, {f['gender']}, {f['race']}")
PY
