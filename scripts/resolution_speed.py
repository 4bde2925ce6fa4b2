"""What a higher input resolution would cost the shipped network's speed (issue 17's rule:
128-160 px only if the shipped model's speed stays within 10 %, else only for the opt-in
variant).

    python scripts/resolution_speed.py --data ../shared/data/utkface --out docs/results/resolution_speed.json

The network is fully convolutional up to its global pooling, so the shipped weights run at
any input size: for each size this copies ``utkface_lite0.pt`` with ``data.image_size``
set to it, exports it to INT8 ONNX exactly as the shipped file is made (``--force``: an
untrained size fails the accuracy check, and only speed is measured here), and times the
network alone (:mod:`facemtl.benchmark.network`, one process per size, real test-split
crops at that size), in rounds that rotate the order. Speed only: a model trained at the
larger size would run at the same speed as this one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

SIZES = [112, 128, 144, 160]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="UTKFace folder (default: the one the shipped model records)")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0, help="per rate measured")
    ap.add_argument("--out")
    a = ap.parse_args()

    import torch

    from facemtl.benchmark.network import measure_process
    from facemtl.data.model_data import model_data
    from facemtl.data.table import evenly_spaced
    from facemtl.export import export_model
    from facemtl.images import load_rgb
    from facemtl.inference import default_model_path, load_predictor
    from facemtl.system import hardware

    shipped_pt = default_model_path().with_suffix(".pt")
    test = model_data(load_predictor(default_model_path()).info, a.data).test
    paths = [test.paths[i] for i in evenly_spaced(len(test), 256)]
    sizes = [int(s) for s in a.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="facemtl-res-"))
    models, faces = {}, {}
    for s in sizes:
        state = torch.load(shipped_pt, weights_only=False, map_location="cpu")
        state["config"]["data"]["image_size"] = s
        torch.save(state, work / f"lite0_{s}.pt")
        models[s] = work / f"lite0_{s}.onnx"
        print(f"exporting {s} px", file=sys.stderr)
        export_model(work / f"lite0_{s}.pt", "onnx-int8", models[s], a.data, force=True, check_faces=64)
        faces[s] = work / f"faces_{s}.npy"
        np.save(faces[s], np.stack([load_rgb(p, s) for p in paths]).transpose(0, 3, 1, 2).copy())
    rows: dict[int, list[dict]] = {s: [] for s in sizes}
    for r in range(a.rounds):
        for s in sizes[r % len(sizes):] + sizes[:r % len(sizes)]:
            rows[s].append(measure_process(models[s], "onnxruntime", faces[s], None, a.seconds))
            print(f"round {r + 1}, {s} px: {rows[s][-1]['faces_per_s_batch32']} faces/s at batch 32, "
                  f"{rows[s][-1]['latency_ms_median']} ms one face", file=sys.stderr)
    base = sizes[0]
    med = {s: {k: statistics.median(x[k] for x in rows[s]) for k in ("faces_per_s_batch32", "latency_ms_median")}
           for s in sizes}
    result = {"machine": hardware(), "rounds": a.rounds, "model": str(shipped_pt), "sizes": {
        str(s): {**med[s], "speed_vs_%d" % base: round(med[s]["faces_per_s_batch32"] / med[base]["faces_per_s_batch32"], 3),
                 "latency_vs_%d" % base: round(med[s]["latency_ms_median"] / med[base]["latency_ms_median"], 3)}
        for s in sizes}}
    print("| input | faces/s at batch 32 | speed vs %d px | one face, median ms | latency vs %d px |" % (base, base))
    print("|---:|---:|---:|---:|---:|")
    for s in sizes:
        x = result["sizes"][str(s)]
        print(f"| {s} px | {x['faces_per_s_batch32']:.0f} | {x['speed_vs_%d' % base]:.2f}x | "
              f"{x['latency_ms_median']:.2f} | {x['latency_vs_%d' % base]:.2f}x |")
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
