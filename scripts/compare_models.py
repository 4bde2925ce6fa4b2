"""Two models face by face on the same held-out split: paired differences with 95 % intervals.

    python scripts/compare_models.py src/facemtl/weights/utkface_lite0.pt runs/cpu_distill/best.pt \\
        --data-root ../shared/data/utkface --out docs/results/compare.json

Both checkpoints must have been trained on the same data with the same seed, so that their
test splits hold the same faces (checked). For every task the two share (by name), each
face's score is what the subgroup tables average (:meth:`Task.sample_scores`: 1 or 0 for
a right or wrong class, the absolute error in years for age). Printed per task:

* each model's figure with its 95 % interval (Wilson for accuracy, normal for MAE);
* the paired difference B - A, the mean of the per-face differences with its normal 95 %
  interval (the same faces, so face-to-face difficulty cancels out);
* per model, the largest gap between the groups of ``--by`` (default: race) among groups
  of at least 30 faces, with the 95 % interval of that difference between two independent
  groups.

One seed per model: the intervals cover which faces were drawn for the test split, not
the training run's own randomness (``scripts/grid_gaps.py`` covers seeds).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

MIN_GROUP = 30


def _interval(x: np.ndarray, kind: str) -> list[float]:
    from facemtl.subgroups import mean_interval, wilson_interval

    if kind == "accuracy":
        return list(wilson_interval(int(round(x.sum())), len(x)))
    return list(mean_interval(x))


def _gap(scores: np.ndarray, groups: np.ndarray, names: list[str], kind: str) -> dict:
    """The highest and lowest groups among groups of at least ``MIN_GROUP`` faces, their difference
    and its 95 % interval (:func:`facemtl.subgroups.group_gap`: Newcombe's for accuracies)."""
    from facemtl.subgroups import group_gap

    if not names:  # an unnamed column: its own values name the groups
        values = sorted(set(groups.astype(float).tolist()))
        names, groups = [str(v) for v in values], np.searchsorted(values, groups.astype(float))
    g = group_gap(scores, groups, names, kind, MIN_GROUP)
    return {"highest": g["highest"], "lowest": g["lowest"], "gap": g["gap"], "ci95": g["gap_ci95"], "groups": g["by"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="the reference model: a checkpoint (.pt) or an exported file (.onnx, .xml)")
    ap.add_argument("b", help="the candidate model, likewise")
    ap.add_argument("--split", default="test")
    ap.add_argument("--data-root", help="the data folder, if it moved since training")
    ap.add_argument("--by", default="race", help="label column whose groups' largest gap is reported")
    ap.add_argument("--out", help="also write every figure as JSON here")
    a = ap.parse_args()

    from facemtl.inference.runtimes import runtime_for
    from facemtl.subgroups import mean_interval
    from facemtl.training.evaluation import predict_checkpoint, predict_exported

    runs = {}
    for key, path in (("a", a.a), ("b", a.b)):
        # a checkpoint in PyTorch, an exported file (the shipped INT8 ONNX model) in its own runtime
        predict = predict_checkpoint if runtime_for(path).name == "torch" else predict_exported
        res, tasks, data, _ = predict(path, a.split, a.data_root)
        runs[key] = (res, {t.name: t for t in tasks}, data.split(a.split))
    pa, pb = runs["a"][2], runs["b"][2]
    if list(pa.paths) != list(pb.paths):
        raise SystemExit(f"the two checkpoints' {a.split} splits hold different faces: train them on the same data "
                         "with the same seed")
    by = pa.attributes.get(a.by)
    by_task = next((t for t in runs["a"][1].values() if t.label == a.by and t.class_names()), None)
    by_names = by_task.class_names() if by_task else []
    out: dict = {"a": a.a, "b": a.b, "split": a.split, "faces": len(pa), "by": a.by, "tasks": {}}
    for name, ta in runs["a"][1].items():
        tb = runs["b"][1].get(name)
        if (tb is None or not ta.inference or f"{name}" not in runs["a"][0]["pred"]
                or ta.subgroup_metric not in ("accuracy", "mae")):
            continue  # training-only tasks (a teacher's vector, soft targets) answer nothing to compare
        kind = ta.subgroup_metric
        sa = ta.sample_scores(runs["a"][0]["pred"][name], runs["a"][0]["true"][name]).astype(float)
        sb = tb.sample_scores(runs["b"][0]["pred"][name], runs["b"][0]["true"][name]).astype(float)
        ok = ~np.isnan(sa) & ~np.isnan(sb)
        d = sb[ok] - sa[ok]
        row = {"kind": kind, "n": int(ok.sum()),
               "a": {"value": float(sa[ok].mean()), "ci95": _interval(sa[ok], kind)},
               "b": {"value": float(sb[ok].mean()), "ci95": _interval(sb[ok], kind)},
               "b_minus_a": {"value": float(d.mean()), "ci95": list(mean_interval(d))}}
        if by is not None:
            g = ok & ~np.isnan(by.astype(float))
            row["gap_a"] = _gap(sa[g], by[g], by_names, kind)
            row["gap_b"] = _gap(sb[g], by[g], by_names, kind)
        out["tasks"][name] = row
        scale, unit = (100, " points") if kind == "accuracy" else (1, f" {ta.unit}" if ta.unit else "")
        f = lambda v, ci: f"{scale * v:.2f} ({scale * ci[0]:.2f} to {scale * ci[1]:.2f})"  # noqa: E731
        print(f"{name} ({kind}, {row['n']} faces): A {f(row['a']['value'], row['a']['ci95'])}, "
              f"B {f(row['b']['value'], row['b']['ci95'])}, B - A {f(d.mean(), row['b_minus_a']['ci95'])}{unit}")
        for k in ("gap_a", "gap_b") if by is not None else ():
            gp = row[k]
            print(f"  largest {a.by} gap, {k[-1].upper()}: {gp['highest']} vs {gp['lowest']} "
                  f"{f(gp['gap'], gp['ci95'])}{unit}")
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
