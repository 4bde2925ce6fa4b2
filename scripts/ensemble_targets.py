"""The accurate variant's answers on the shipped model's training (and validation) faces, as a target file.

    python scripts/ensemble_targets.py --data ../shared/data/utkface --out targets.npz [--parts train val]
        [--fusion F.json] [--limit N]

For every face of the named parts of the split the shipped model records (the fusion
file's first network's split), the accurate variant's probabilities, computed as
``analyze --accurate --aligned`` computes them but from the crops and the cached dlib
descriptors (:func:`facemtl.data.teacher.teacher_features`, the cache training fills):

- ``age``: ``(N, K-1)`` threshold probabilities ``P(age > r_k)`` of the ensemble's mean raw
  output (the ordinal head's own reading of it);
- ``gender``, ``race``: ``(N, C)`` class probabilities as :meth:`FusionHead.fused` mixes them
  (networks and descriptor, the networks alone where ``networks_alone`` says so).

The file is an ``.npz`` with ``files`` (paths relative to the data folder) and one array per
column, which ``data.targets`` reads into label columns (``target_<name>``) for a ``soft``
task to teach (Hinton et al. 2015: distilling an ensemble into one network). The networks
saw these training faces' labels, so these targets are in-sample, as Hinton's were.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="the UTKFace folder")
    ap.add_argument("--out", required=True, help="the target file (.npz)")
    ap.add_argument("--parts", nargs="+", default=["train", "val"], choices=["train", "val", "test"])
    ap.add_argument("--fusion", help="fusion file (default: the shipped one)")
    ap.add_argument("--limit", type=int, help="first N faces of each part only (a quick look)")
    ap.add_argument("--batch", type=int, default=256)
    a = ap.parse_args()

    from facemtl.data.model_data import model_data
    from facemtl.data.teacher import teacher_features
    from facemtl.images import read_square
    from facemtl.inference import load_predictor
    from facemtl.inference.fusion import FusionHead, default_fusion_path

    head = FusionHead.load(a.fusion or default_fusion_path())
    if not head.networks:
        raise SystemExit("the fusion file names no networks")
    pred = load_predictor(head.networks)
    data = model_data(pred.info, a.data)
    root = Path(a.data).resolve()
    paths: list[str] = []
    for part in a.parts:
        p = list(getattr(data, part).paths)
        paths += p[: a.limit] if a.limit else p
    by_name = {t.name: t for t in pred.tasks}
    feats = teacher_features(paths, teacher=head.teacher, progress=True)
    cols: dict[str, list[np.ndarray]] = {t.name: [] for t in pred.tasks}
    t0 = time.perf_counter()
    for i in range(0, len(paths), a.batch):
        chunk = paths[i : i + a.batch]
        imgs = np.stack([read_square(p, pred.size)[0].transpose(2, 0, 1) for p in chunk])
        raw = pred.raw_images(imgs)
        f = feats[i : i + len(chunk)]
        has = ~np.isnan(f).any(1)
        for t in pred.tasks:
            if hasattr(t, "threshold_probabilities"):  # ordinal: P(value > r_k), what its head outputs
                cols[t.name].append(t.threshold_probabilities(raw[t.name]).astype(np.float32))
            elif t.name in head.tasks:  # no descriptor: the networks alone (as analyze does)
                fused = head.fused(t.name, {k: v[has] for k, v in raw.items()}, f[has], by_name)
                p = t.probabilities(raw[t.name])
                p[has] = fused
                cols[t.name].append(p.astype(np.float32))
            else:
                cols[t.name].append(t.probabilities(raw[t.name]).astype(np.float32))
        done = i + len(chunk)
        rate = done / (time.perf_counter() - t0)
        print(f"{done}/{len(paths)} faces, {rate:.1f}/s", file=sys.stderr, flush=True)
    rel = [str(Path(p).resolve().relative_to(root)) for p in paths]
    out = {name: np.concatenate(v) for name, v in cols.items()}
    np.savez_compressed(a.out, files=np.array(rel), **out)
    print(f"wrote {a.out}: {len(rel)} faces, columns {', '.join(f'{k} {v.shape}' for k, v in out.items())}; "
          f"{int((~np.isnan(feats).any(1)).sum())} with a descriptor")


if __name__ == "__main__":
    main()
