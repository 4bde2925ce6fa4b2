"""Compose test photos of one to five real test-split faces, with their true boxes, outside the repository.

    python scripts/compose_photos.py --size 640x480 --n 100 --out /tmp/facemtl-photos/640x480

The faces come from the shipped model's test split (which it never trained on), rebuilt
from what the model file records; see ``facemtl.benchmark.photos`` for how a photo is
made and how ``labels.json`` is read. ``facemtl benchmark`` builds the same photos itself.
Needs ``facemtl[train]`` (to rebuild the split).
"""

from __future__ import annotations

import argparse

from facemtl.benchmark.photos import compose_photos
from facemtl.data.model_data import model_data
from facemtl.inference import load_predictor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="640x480", help="WIDTHxHEIGHT")
    ap.add_argument("--n", type=int, default=100, help="how many photos")
    ap.add_argument("--out", required=True, help="folder to write (keep it outside the repository)")
    ap.add_argument("--data-root", help="UTKFace folder (default: the one the shipped model records)")
    ap.add_argument("--seed", type=int, help="default: the photo width, as facemtl benchmark uses")
    a = ap.parse_args()
    w, h = (int(v) for v in a.size.lower().split("x"))
    test = model_data(load_predictor().info, a.data_root).test
    out = compose_photos(test.paths, a.out, (w, h), a.n, seed=w if a.seed is None else a.seed)
    print(f"{a.n} photos of {w}x{h} with labels.json in {out}")


if __name__ == "__main__":
    main()
