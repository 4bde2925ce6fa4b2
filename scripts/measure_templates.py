"""Measure where each detector finds the five landmarks on UTKFace's aligned crops.

Writes ``src/facemtl/faces/templates.json``: per landmark scheme, the median landmark
positions over a spread sample of the 200x200 training crops, so that alignment
puts a face from a photo where the model saw faces in training::

    python scripts/measure_templates.py --root ../shared/data/utkface --n 400
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from facemtl.images import load_rgb
from facemtl.data.table import evenly_spaced
from facemtl.data.utkface import read_utkface
from facemtl.faces import build_detector

PAD = 60


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="../shared/data/utkface")
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "src/facemtl/faces/templates.json"))
    a = ap.parse_args()
    table = read_utkface(a.root)
    paths = [table.paths[i] for i in evenly_spaced(len(table), a.n)]
    result = {"_about": f"median landmarks on {a.n} UTKFace 200x200 crops (scripts/measure_templates.py)"}
    for name in ("dlib", "mtcnn"):
        det = build_detector(name)
        pts = []
        for p in paths:
            img = load_rgb(p)
            padded = np.pad(img, ((PAD, PAD), (PAD, PAD), (0, 0)), mode="edge")
            faces = det.detect(padded)
            if faces:
                pts.append(faces[0].landmarks - PAD)
        pts = np.array(pts)
        med = np.median(pts, 0)
        spread = np.median(np.abs(pts - med), 0)
        result[det.scheme] = {
            "points": med.round(2).tolist(),
            "median_abs_deviation": spread.round(2).tolist(),
            "faces_found": int(len(pts)),
            "faces_tried": len(paths),
        }
        print(name, len(pts), "of", len(paths), med.round(1).tolist())
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
