#!/usr/bin/env bash
# The plain install, as a user without PyTorch gets it: `pip install .` (no extras) into a
# fresh virtual environment, no torch in it, and `facemtl analyze` finds the face in the
# shipped sample photo with the shipped ONNX model. .ci/run calls this after the tests.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
"$tmp/venv/bin/python" -m pip install -q "$repo" 2>&1 | grep -v "^WARNING: Location" || true
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
