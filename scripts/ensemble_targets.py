"""The accurate variant's answers on the shipped model's training (and validation) faces, as a target file.

    python scripts/ensemble_targets.py --data ../shared/data/utkface --out targets.npz [--parts train val]
        [--fusion F.json] [--limit N]
    python scripts/ensemble_targets.py --data ../shared/data/utkface --check targets.npz   # how they score

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
    ap.add_argument("--out", help="the target file (.npz) to write")
    ap.add_argument("--parts", nargs="+", default=["train", "val"], choices=["train", "val", "test"])
    ap.add_argument("--fusion", help="fusion file (default: the shipped one)")
    ap.add_argument("--limit", type=int, help="first N faces of each part only (a quick look)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--check", metavar="FILE", help="compute nothing: score the target file FILE against the labels of "
                    "each part (the teacher's answers read as a model's; training faces are in-sample)")
    a = ap.parse_args()
    if not a.check and not a.out:
        ap.error("--out is needed (or --check FILE)")

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
    if a.check:  # no descriptor needed
        return check(a.check, pred.tasks, data, root, a.parts)
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
            q = t.soft_targets(raw[t.name])  # the networks' mean answer: probabilities, or P(value > r_k)
            if q is None:
                continue
            if t.name in head.tasks:  # mixed with the descriptor's where there is one (as analyze does)
                q[has] = head.fused(t.name, {k: v[has] for k, v in raw.items()}, f[has], by_name)
            cols[t.name].append(np.asarray(q, np.float32))
        done = i + len(chunk)
        rate = done / (time.perf_counter() - t0)
        print(f"{done}/{len(paths)} faces, {rate:.1f}/s", file=sys.stderr, flush=True)
    rel = [str(Path(p).resolve().relative_to(root)) for p in paths]
    out = {name: np.concatenate(v) for name, v in cols.items() if v}
    np.savez_compressed(a.out, files=np.array(rel), **out)
    print(f"wrote {a.out}: {len(rel)} faces, columns {', '.join(f'{k} {v.shape}' for k, v in out.items())}; "
          f"{int((~np.isnan(feats).any(1)).sum())} with a descriptor")


def check(file: str, tasks: list, data, root: Path, parts: list[str]) -> None:
    """Print, per part and task, the target file's answers scored as a model's (the task's own
    metrics on its :meth:`~facemtl.tasks.Task.predict` of the targets) and the mean largest
    probability, as JSON."""
    import json

    from facemtl.data.dataset import TARGET_PREFIX, read_targets
    from facemtl.data.table import LabelTable

    out: dict = {"file": file}
    for part in parts:
        faces = getattr(data, part)
        table = LabelTable(paths=list(faces.paths), labels={})
        found = read_targets(table, root, file)  # matched as training matches them
        row: dict = {"faces": len(table), "in_file": found["matched"]}
        for t in tasks:
            col = table.labels.get(TARGET_PREFIX + t.name)
            if col is None:
                continue
            has = ~np.isnan(col).any(1)
            q = col[has]
            m = t.metrics(t.predict(t.raw_from_soft_targets(q)), faces.attributes[t.label][has])
            row[t.name] = {k: round(float(v), 4) for k, v in m.items() if k in ("mae", "accuracy")}
            row[t.name]["n"] = int(m["n"])
            if t.class_names() is not None:  # how sure the teacher is: its probability for its answer
                row[t.name]["mean_largest_probability"] = round(float(q.max(1).mean()), 4)
        out[part] = row
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
