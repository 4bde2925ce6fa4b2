"""MTCNN's pyramid factor and stage thresholds: speed against recall, on validation-split faces.

    python scripts/tune_mtcnn.py --out /tmp/facemtl-tune --json docs/results/mtcnn_tuning.json

Two measurements, both on faces of the shipped model's *validation* split, so nothing is
chosen on the test-split photos that ``facemtl benchmark`` then measures:

1. photos of one to five faces (``facemtl.benchmark.photos``), 640x480 and 1280x960: per
   setting, CPU milliseconds a photo (one detector in one thread, as each pipeline worker
   runs it; process time, so other programs on the machine matter less), recall and false
   positives counted as the benchmark counts them;
2. recall by face size: each of ``--faces`` crops alone on a flat 640x480 background at
   crop sides from 70 to 298 pixels (faces of about 35 to 150 pixels), so that the gaps
   a coarser pyramid leaves between its scales show instead of averaging out.

Needs ``facemtl[train]`` (to rebuild the split).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from facemtl.benchmark.photos import compose_photos, recall
from facemtl.data.model_data import model_data
from facemtl.faces.mtcnn import MTCNNDetector
from facemtl.images import read_image
from facemtl.inference import load_predictor
from facemtl.system import hardware

FACTORS = (0.709, 0.65, 0.6)
THRESHOLDS = ((0.6, 0.7, 0.7), (0.7, 0.8, 0.7))
SIDES = range(70, 300, 12)


def size_curve(paths: list[str], factors: tuple[float, ...]) -> dict[str, dict[int, float]]:
    """Per factor, the share of faces found at each crop side (one face per canvas)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    canvas = Image.fromarray(rng.integers(40, 220, (4, 5, 3), dtype=np.uint8)).resize((640, 480), Image.BICUBIC)
    faces = [Image.open(p).convert("RGB") for p in paths]
    out: dict[str, dict[int, float]] = {}
    for factor in factors:
        det = MTCNNDetector(factor=factor)
        out[str(factor)] = {}
        for side in SIDES:
            found, truth = {}, {}
            for k, face in enumerate(faces):
                c = canvas.copy()
                x, y = 100 + (k * 37) % (540 - side), 20
                c.paste(face.resize((side, side), Image.BILINEAR), (x, y))
                found[k], truth[k] = [f.box.tolist() for f in det.detect(np.asarray(c))], [[x, y, x + side, y + side]]
            out[str(factor)][side] = recall(found, truth)["recall"]  # a face found as the benchmark counts it
        print(f"factor {factor}: isolated faces found {np.mean(list(out[str(factor)].values())):.4f}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for the composed photos (outside the repository)")
    ap.add_argument("--n", type=int, default=150, help="photos per size")
    ap.add_argument("--data-root", help="UTKFace folder (default: the one the shipped model records)")
    ap.add_argument("--faces", type=int, default=80, help="faces per size in the size sweep")
    ap.add_argument("--json", help="write the table here")
    a = ap.parse_args()
    val = model_data(load_predictor().info, a.data_root).val
    sets = {}
    for w, h in ((640, 480), (1280, 960)):
        d = Path(a.out) / f"{w}x{h}"
        if not (d / "labels.json").is_file():
            compose_photos(val.paths, d, (w, h), a.n, seed=7 + w)
        labels = json.loads((d / "labels.json").read_text())
        sets[f"{w}x{h}"] = (labels, [read_image(str(d / k), 2048)[0] for k in labels])
    rows = []
    for thresholds in THRESHOLDS:
        for factor in FACTORS:
            det = MTCNNDetector(thresholds=thresholds, factor=factor)
            row = {"factor": factor, "thresholds": list(thresholds)}
            for name, (labels, images) in sets.items():
                min_face = det.min_face / min(1.0, 1024 / max(images[0].shape[:2]))  # as the pipeline searches
                det.detect(images[0], min_face)  # warm-up
                t = time.process_time()
                found = {k: [f.box.tolist() for f in det.detect(im, min_face)] for k, im in zip(labels, images)}
                row[name] = {"cpu_ms_per_photo": round((time.process_time() - t) / len(images) * 1e3, 2),
                             **recall(found, labels)}
            rows.append(row)
            print(f"thresholds {thresholds} factor {factor}: " + "; ".join(
                f"{n} {row[n]['cpu_ms_per_photo']} ms, recall {row[n]['recall']:.4f}, "
                f"{row[n]['false_positives']} false" for n in sets), flush=True)
    from facemtl.data.table import evenly_spaced

    curve = size_curve([val.paths[i] for i in evenly_spaced(len(val), a.faces)], FACTORS)
    if a.json:
        Path(a.json).write_text(json.dumps({"machine": hardware(), "photos_per_size": a.n, "split": "validation",
                                            "rows": rows, "faces_per_side": a.faces, "found_by_side": curve},
                                           indent=1) + "\n")


if __name__ == "__main__":
    main()
