"""Subgroup table (age group x gender x race) of a checkpoint on its test split, as Markdown and JSON.

    python scripts/subgroup_report.py --checkpoint src/facemtl/weights/utkface_lite0.onnx \
        --data-root ../shared/data/utkface --out docs/results/default_model_subgroups

Cells are grouped by the *true* labels, in the order ``facemtl report`` gives them (age bands
upwards, male before female, races in the class order); accuracy intervals are Wilson 95 %
intervals, MAE intervals Student-t 95 % intervals; the largest gap among cells of 30 faces or
more carries the 95 % interval of that difference (Newcombe's for accuracies; facemtl.subgroups).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from facemtl.inference.runtimes import runtime_for
from facemtl.metrics import group_names, to_groups
from facemtl.subgroups import gap_cells, largest_gap, subgroup_table
from facemtl.training.evaluation import predict_checkpoint, predict_exported, score_predictions

AGE_EDGES = [0, 20, 40, 60]  # 0-19, 20-39, 40-59, 60+ (coarse, so that cells keep some size)
GENDERS = ["male", "female"]
RACES = ["white", "black", "asian", "indian", "others"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data-root")
    ap.add_argument("--split", default="test")
    ap.add_argument("--out", required=True, help="path prefix for .md and .json")
    a = ap.parse_args()
    torch.set_num_threads(2)
    # a checkpoint in PyTorch; an exported file (the shipped ONNX model) in its own runtime, as evaluate does
    predict = predict_checkpoint if runtime_for(a.checkpoint).name == "torch" else predict_exported
    res, tasks, data, _ = predict(a.checkpoint, a.split, a.data_root, device="cpu")
    overall = score_predictions(res, tasks, data.baselines)
    true = res["true"]
    ok = ~np.isnan(true["race"])
    names = group_names(AGE_EDGES)
    groups = {
        "age group": np.array([names[g] for g in to_groups(true["age"], AGE_EDGES)])[ok],
        "gender": np.array([GENDERS[int(g)] for g in true["gender"][ok]]),
        "race": np.array([RACES[int(r)] for r in true["race"][ok]]),
    }
    kinds = {"age": "mae", "gender": "accuracy", "race": "accuracy"}
    scores = {t.name: t.sample_scores(res["pred"][t.name], true[t.name])[ok] for t in tasks}
    rows = subgroup_table(scores, kinds, groups, order={"age group": names, "gender": GENDERS, "race": RACES})
    gaps = {t: largest_gap(rows, f"{t}_{k}", 30) for t, k in kinds.items()}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"overall": overall, "cells": rows, "gaps": gaps}, indent=1, default=str))
    lines = ["| age group | gender | race | n | age MAE (95% CI) | gender acc. (95% CI) | race acc. (95% CI) |",
             "|---|---|---|---:|---|---|---|"]
    for r in rows:
        def fmt(t: str, pct: bool) -> str:
            t = f"{t}_{kinds[t]}"
            if np.isnan(r[t]):
                return "–"
            if pct:
                return f"{100 * r[t]:.1f}% ({100 * r[t + '_lo']:.0f}–{100 * r[t + '_hi']:.0f})"
            lo, hi = r[t + "_lo"], r[t + "_hi"]
            return f"{r[t]:.2f} ({lo:.1f}–{hi:.1f})" if not np.isnan(lo) else f"{r[t]:.2f}"
        lines.append(f"| {r['age group']} | {r['gender']} | {r['race']} | {r['n']} | {fmt('age', False)} | "
                     f"{fmt('gender', True)} | {fmt('race', True)} |")
    lines.append("")
    for t, g in gaps.items():
        key = f"{t}_{kinds[t]}"
        compared = len(gap_cells(rows, key, 30))
        if g:
            cell = lambda r: f"{r['age group']} {r['gender']} {r['race']} (n={r['n']})"  # noqa: E731
            scale, unit = (100, " points") if kinds[t] == "accuracy" else (1, " years")
            lo, hi = (scale * x for x in g["ci95"])
            lines.append(f"- Largest {t} {'accuracy' if scale == 100 else 'MAE'} gap among the {compared} of "
                         f"{len(rows)} cells with n >= 30: {scale * g['gap']:.2f}{unit} (95% CI {lo:.2f} to {hi:.2f}) "
                         f"between {cell(g['min'])} and {cell(g['max'])}.")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(json.dumps({t: {k: overall[t][k] for k in ("accuracy", "mae") if k in overall[t]} for t in kinds}))


if __name__ == "__main__":
    main()
