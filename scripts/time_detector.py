"""Where MTCNN's time goes: the detector alone, one thread, per photo and per stage, and ONNX
Runtime's own profile of each of its three networks (the share of each operator type), as
this checkout loads them and as the files are shipped.

    python scripts/time_detector.py --photos /work/bench-work/photos_640x480_100_ff23da17 \\
        /work/bench-work/photos_1280x960_100_ff23da17 --out docs/results/detector_time.json
    PYTHONPATH=/tmp/base/src python scripts/time_detector.py ...   # another checkout's facemtl

Photos are searched as `analyze` searches them (shrunk to 1024 px for detection, smallest face
40 px). Milliseconds a photo, the best of ``--repeats`` passes: ``total``; ``stage1``, the
pyramid (P-Net, its resizes and its suppression); ``pnet``, ``rnet``, ``onet``, the networks;
``crops``, the R-Net and O-Net crops (area resize); ``nms``, every suppression. The networks'
profile runs each one 20 times on a fixed random input the size of a typical call (P-Net: one
192x144 level; R-Net: 67 crops; O-Net: 17).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def checkout(src: str | Path) -> dict:
    """The git commit of the checkout holding ``src``, and whether its files differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(src), *args], capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD") or None, "changed_files": bool(git("status", "--porcelain", "--", "."))}


def stage_times(folders: list[Path], repeats: int, limit: int | None) -> dict:
    import facemtl.faces.mtcnn as M
    from facemtl.images import read_image

    det = M.MTCNNDetector()
    spent: collections.Counter = collections.Counter()

    def timed(name, fn):
        def run(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] += time.perf_counter() - t
        return run

    class Session:  # an onnxruntime session whose run() is timed
        def __init__(self, session, name):
            self.session, self.name = session, name

        def run(self, *a):
            return timed(self.name, self.session.run)(*a)

    det.pnet, det.rnet, det.onet = Session(det.pnet, "pnet"), Session(det.rnet, "rnet"), Session(det.onet, "onet")
    M.crops, M.nms = timed("crops", M.crops), timed("nms", M.nms)
    det._stage1 = timed("stage1", det._stage1)
    out = {}
    for folder in folders:
        files = sorted(p for p in folder.iterdir() if p.suffix == ".jpg")[:limit]
        images = [read_image(str(p), 2048)[0] for p in files]
        for im in images[:3]:  # warm-up
            det.detect(im, 40 / min(1.0, 1024 / max(im.shape[:2])))
        best: dict | None = None
        for _ in range(repeats):
            spent.clear()
            t = time.perf_counter()
            faces = sum(len(det.detect(im, 40 / min(1.0, 1024 / max(im.shape[:2])))) for im in images)
            total = time.perf_counter() - t
            if best is None or total < best["total"]:
                best = {"total": total, **spent, "faces": faces}
        n = len(images)
        ms = {k: round(v / n * 1e3, 2) for k, v in best.items() if k != "faces"}
        out[folder.name] = {"photos": n, "faces": best["faces"], "ms_per_photo": ms}
    return out


def network_profiles() -> dict:
    import onnxruntime as ort

    import facemtl.faces.mtcnn as M
    from facemtl.inference.model_files import check_onnx_file

    rng = np.random.default_rng(0)
    shapes = {"pnet": (1, 192, 144, 3), "rnet": (67, 24, 24, 3), "onet": (17, 48, 48, 3)}
    out = {}
    for name, shape in shapes.items():
        shipped = check_onnx_file(Path(M.__file__).with_name("mtcnn_onnx") / f"{name}.onnx")[0]
        x = rng.uniform(-1, 1, shape).astype(np.float32)
        entry = {}
        for kind, data in (("as shipped", shipped), ("as loaded", M._network(name))):
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.log_severity_level = 3
            session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
            feed = {session.get_inputs()[0].name: x}
            for _ in range(3):
                session.run(None, feed)
            best = min(_ms(session, feed) for _ in range(5))
            opts.enable_profiling = True
            with tempfile.TemporaryDirectory() as tmp:
                opts.profile_file_prefix = os.path.join(tmp, "p")
                profiled = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
                for _ in range(20):
                    profiled.run(None, feed)
                events = json.loads(Path(profiled.end_profiling()).read_text())
            by_op: collections.Counter = collections.Counter()
            for e in events:
                if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                    by_op[e["args"]["op_name"]] += e["dur"]
            whole = sum(by_op.values())
            entry[kind] = {"ms": round(best, 2), "share": {op: round(us / whole, 3) for op, us in by_op.most_common()}}
        out[name] = {"input": list(shape), **entry}
    return out


def _ms(session, feed, n: int = 20) -> float:
    t = time.perf_counter()
    for _ in range(n):
        session.run(None, feed)
    return (time.perf_counter() - t) / n * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", nargs="+", required=True, type=Path, help="folders of photos (*.jpg)")
    ap.add_argument("--limit", type=int, help="photos per folder (default: all)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", help="write the JSON here too")
    a = ap.parse_args()

    import facemtl.faces.mtcnn as M
    from facemtl.system import hardware

    result = {"when_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "facemtl": str(Path(M.__file__).parents[2]), **checkout(Path(M.__file__).parents[2]),
              "machine": hardware(), "stages": stage_times(a.photos, a.repeats, a.limit),
              "networks": network_profiles()}
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
