"""Per-subgroup metrics with 95 % confidence intervals (the paper's intersectional bias study).

Accuracy intervals are Wilson score intervals for a binomial proportion; MAE
intervals are normal-approximation intervals ``mean +- 1.96 s / sqrt(n)`` on the
absolute errors. Cells are every combination of the grouping columns that occurs.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Sequence

import numpy as np

Z95 = 1.959963984540054


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes in ``n`` trials."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(x: np.ndarray, z: float = Z95) -> tuple[float, float]:
    """Normal-approximation interval of the mean of ``x`` (NaN for fewer than 2 values)."""
    x = np.asarray(x, float)
    if len(x) < 2:
        return (float("nan"), float("nan"))
    half = z * x.std(ddof=1) / math.sqrt(len(x))
    return (float(x.mean() - half), float(x.mean() + half))


def subgroup_table(
    scores: dict[str, np.ndarray],
    kinds: dict[str, str],
    groups: dict[str, np.ndarray],
    min_count: int = 1,
) -> list[dict[str, Any]]:
    """One row per occurring cell of ``groups`` (e.g. age group x gender x race).

    ``scores``: per task, one value per sample (:meth:`Task.sample_scores`): 1 or 0 for a
    right or wrong answer when ``kinds[task]`` is ``"accuracy"``, the absolute error when it
    is ``"mae"``; NaN where the sample has no label. ``groups``: per grouping column, a
    label per sample. Each row: the group labels, ``n``, and per task ``"{task}_{kind}"``
    (e.g. ``age_mae``, ``gender_accuracy``) with ``*_lo`` / ``*_hi`` bounds, so group and
    task names never collide.
    """
    names = list(groups)
    labels = [np.asarray(groups[g]) for g in names]
    rows = []
    for combo in itertools.product(*(sorted(set(x.tolist()), key=str) for x in labels)):
        mask = np.ones(len(labels[0]), bool)
        for arr, v in zip(labels, combo):
            mask &= arr == v
        n = int(mask.sum())
        if n < min_count:
            continue
        row: dict[str, Any] = dict(zip(names, combo))
        row["n"] = n
        for task, kind in kinds.items():
            x = np.asarray(scores[task], float)[mask]
            x = x[~np.isnan(x)]
            key = f"{task}_{kind}"
            row[key] = float(x.mean()) if len(x) else float("nan")
            if kind == "accuracy":
                row[f"{key}_lo"], row[f"{key}_hi"] = wilson_interval(int(round(x.sum())), len(x))
            else:
                row[f"{key}_lo"], row[f"{key}_hi"] = mean_interval(x)
        rows.append(row)
    return rows


def largest_gap(rows: Sequence[dict[str, Any]], key: str, min_count: int = 30) -> dict[str, Any]:
    """The lowest and highest cells for metric ``key`` (e.g. ``age_mae``) among cells of ``min_count``+ samples."""
    cells = [r for r in rows if r["n"] >= min_count and not math.isnan(r[key])]
    if not cells:
        return {}
    lo = min(cells, key=lambda r: r[key])
    hi = max(cells, key=lambda r: r[key])
    return {"min": lo, "max": hi, "gap": hi[key] - lo[key]}


def accuracy_gap(hit: np.ndarray, group: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """Accuracy per group and the largest gap between groups, in points.

    ``hit``: ``(N,)`` 1.0 / 0.0 for a right or wrong answer; ``group``: ``(N,)`` group indices into
    ``names`` (e.g. race). Returns ``by`` (per group with any face: accuracy, 95 % Wilson
    interval, n), ``gap_points`` (highest minus lowest accuracy), ``between`` (the highest and
    lowest group) and ``gap_ci95``, a normal-approximation interval for a difference of two
    independent proportions: ``gap +- 1.96 sqrt(p1 q1 / n1 + p2 q2 / n2)``.
    """
    hit, group = np.asarray(hit, float), np.asarray(group)
    by, acc = {}, {}
    for gi, name in enumerate(names):
        h = hit[group == gi]
        if len(h):
            acc[name] = float(h.mean())
            by[name] = {"accuracy": round(acc[name], 4),
                        "ci95": [round(x, 4) for x in wilson_interval(int(h.sum()), len(h))], "n": len(h)}
    if not acc:
        return {"by": {}, "gap_points": float("nan"), "between": [], "gap_ci95": [float("nan")] * 2}
    hi, lo = max(acc, key=acc.get), min(acc, key=acc.get)
    gap = acc[hi] - acc[lo]
    se = sum(acc[r] * (1 - acc[r]) / by[r]["n"] for r in (hi, lo)) ** 0.5
    return {"by": by, "gap_points": round(100 * gap, 2), "between": [hi, lo],
            "gap_ci95": [round(100 * (gap + z * Z95 * se), 2) for z in (-1, 1)]}
