"""Per-subgroup metrics with 95 % confidence intervals (the paper's intersectional bias study).

Accuracy intervals are Wilson score intervals for a binomial proportion; MAE
intervals are Student-t intervals ``mean +- t(0.975, n-1) s / sqrt(n)`` on the absolute
errors (1.96 for large cells; 12.7 for two faces, where the normal 1.96 read ``25.5
(22.6-28.4)`` for an interval some +-18.8 wide: a user test). Cells are every combination of the grouping columns that occurs;
:func:`default_columns` picks the grouping columns when none are named.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, Sequence

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


#: Student's t at 0.975 for 1..30 degrees of freedom (a table of ours: SciPy, which has it,
#: is not among the plain install's packages, and these 30 numbers never change).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t975(df: int) -> float:
    """Student's t quantile at 0.975 for ``df`` degrees of freedom: the table to 30, then the
    Cornish-Fisher expansion around :data:`Z95` (within 0.001 of the exact value past 30)."""
    if df < 1:
        return float("nan")
    if df <= len(_T975):
        return _T975[df - 1]
    z = Z95
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df * df)


def mean_interval(x: np.ndarray) -> tuple[float, float]:
    """Student-t 95 % interval of the mean of ``x`` (NaN for fewer than 2 values). Values that
    are never negative (absolute errors) have a mean that is not either: the lower end is then
    cut at 0 (a few large errors in a small cell read ``2.5 (-0.4-5.4)`` otherwise)."""
    x = np.asarray(x, float)
    if len(x) < 2:
        return (float("nan"), float("nan"))
    half = t975(len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    lo = x.mean() - half
    return (float(max(lo, 0.0) if x.min() >= 0 else lo), float(x.mean() + half))


def score_summary(x: np.ndarray, kind: str) -> tuple[float, tuple[float, float], float]:
    """Of scores ``x`` (NaN dropped: 1.0 / 0.0 per answer when ``kind`` is ``"accuracy"``, absolute
    errors when ``"mae"``): the mean, its 95 % interval (Wilson, or Student-t) and the standard
    error of the mean that the interval of a difference between two means takes (``sqrt(p (1 - p)
    / n)`` for an accuracy ``p``, ``s / sqrt(n)`` for errors; NaN where there is none)."""
    n = len(x)
    m = float(x.mean()) if n else float("nan")
    if kind == "accuracy":
        ci, var = wilson_interval(int(round(x.sum())), n), m * (1 - m) if n else float("nan")
    else:
        ci, var = mean_interval(x), float(x.var(ddof=1)) if n > 1 else float("nan")
    return m, ci, math.sqrt(var / n) if n and var == var else float("nan")


def gap_interval(kind: str, hi: tuple[float, Sequence[float], float],
                 lo: tuple[float, Sequence[float], float]) -> list[float]:
    """The 95 % interval of ``hi[0] - lo[0]``, the gap between two independent cells, each given as
    ``(mean, its 95 % interval, its standard error)`` (:func:`score_summary`).

    Accuracies (``kind`` ``"accuracy"``): Newcombe's hybrid score interval (1998, method 10) from the
    two Wilson intervals ``[l, u]``: ``gap - sqrt((p_hi - l_hi)^2 + (u_lo - p_lo)^2)`` to ``gap +
    sqrt((u_hi - p_hi)^2 + (p_lo - l_lo)^2)``. The Wald form ``gap +- 1.96 sqrt(se_hi^2 + se_lo^2)``
    gave a cell at 100 % or 0 % no uncertainty (40 right of 40 faces): a gap of 100 points between
    30 of 30 and 0 of 30 read [100, 100] (a researcher's test). Errors: that normal form, with the
    cells' Student-t standard errors. NaN where an interval or a standard error is."""
    gap = hi[0] - lo[0]
    if kind == "accuracy":
        (p1, (l1, u1), _), (p2, (l2, u2), _) = hi, lo
        return [gap - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), gap + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)]
    half = Z95 * math.sqrt(hi[2] ** 2 + lo[2] ** 2)
    return [gap - half, gap + half]


def group_order(order: Sequence[str] | None) -> Callable[[Any], tuple[int, str]]:
    """A sort key putting groups in ``order`` first, in its order, then any other by name."""
    place = {str(g): k for k, g in enumerate(order or ())}
    return lambda g: (place.get(str(g), len(place)), str(g))


def subgroup_table(
    scores: dict[str, np.ndarray],
    kinds: dict[str, str],
    groups: dict[str, np.ndarray],
    min_count: int = 1,
    order: dict[str, Sequence[str]] | None = None,
) -> list[dict[str, Any]]:
    """One row per occurring cell of ``groups`` (e.g. age group x gender x race).

    ``scores``: per task, one value per sample (:meth:`Task.sample_scores`): 1 or 0 for a
    right or wrong answer when ``kinds[task]`` is ``"accuracy"``, the absolute error when it
    is ``"mae"``; NaN where the sample has no label. ``groups``: per grouping column, a
    label per sample. Each row: the group labels, ``n`` (the cell's samples), and per task
    ``"{task}_{kind}"`` (e.g. ``age_mae``, ``gender_accuracy``) with ``*_lo`` / ``*_hi`` bounds
    and ``*_n``, the cell's samples that have the task's label (those it is computed on), so
    group and task names never collide. ``order``: per grouping column, the order of its groups
    (its task's :meth:`~facemtl.tasks.Task.group_names`: a named scale's levels, child before
    adult); other groups, and columns without one, by name after them.
    """
    names = list(groups)
    labels = [np.asarray(groups[g]) for g in names]
    rows = []
    for combo in itertools.product(*(sorted(set(x.tolist()), key=group_order((order or {}).get(g)))
                                     for g, x in zip(names, labels))):
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
            # (the standard error: for the interval of a gap between cells, largest_gap)
            row[key], (row[f"{key}_lo"], row[f"{key}_hi"]), row[f"{key}_se"] = score_summary(x, kind)
            row[f"{key}_n"] = int(len(x))
        rows.append(row)
    return rows


#: The default grouping takes at most this many columns ...
DEFAULT_MAX_COLUMNS = 3
#: ... making at most this many cells together.
DEFAULT_MAX_CELLS = 100


def default_columns(groups: dict[str, np.ndarray], max_columns: int = DEFAULT_MAX_COLUMNS,
                    max_cells: int = DEFAULT_MAX_CELLS, missing: str = "?") -> list[str]:
    """The grouping columns a bias study takes when none are named, from the candidates ``groups``
    (per column, in order of preference, a group label per sample; ``missing`` where a sample has none).

    In the order given, a column is taken when its labelled samples fall in at least 2 groups (one
    group sets nothing against anything) and the cells of the columns taken so far, times its groups,
    stay at most ``max_cells``; at most ``max_columns`` are taken. Why: cells are intersections,
    so their number multiplies -- five attributes of 4, 2, 5, 2 and 2 groups make 160 cells, most of a
    test split's faces spread thin and many cells too small for an interval worth reading -- while the
    paper's study (Fig. 6), age group x gender x race, is 4 x 2 x 5 = 40 cells, which this rule keeps
    whenever those are the first attributes. The order is the user's (the recipe's task order), since
    nothing in the labels says which attributes are the demographic ones a bias study is about.
    """
    chosen: list[str] = []
    cells = 1
    for name, g in groups.items():
        g = np.asarray(g)
        k = len(set(g[g != missing].tolist()))
        if k < 2 or cells * k > max_cells:
            continue
        chosen.append(name)
        cells *= k
        if len(chosen) >= max_columns:
            break
    return chosen


def _extremes(items: list[Any], value: Callable[[Any], float]) -> tuple[Any, Any]:
    """The first lowest and the first highest of ``items``, two of them wherever there are two:
    when every value ties, the second item is the highest (a review: two groups both 40 of 40
    read "a against a", with no interval)."""
    lo, hi = min(items, key=value), max(items, key=value)
    if hi is lo and len(items) > 1:
        hi = next(x for x in items if x is not lo)
    return lo, hi


def gap_cells(rows: Sequence[dict[str, Any]], key: str, min_count: int = 30) -> list[dict[str, Any]]:
    """The cells :func:`largest_gap` compares for metric ``key``: those of ``min_count``+ samples
    scored (``{key}_n`` where the rows have it, else ``n``) with a value (how many: what the
    report, ``evaluate --by`` and the subgroup script say beside the gap)."""
    return [r for r in rows if r.get(f"{key}_n", r["n"]) >= min_count and not math.isnan(r[key])]


def largest_gap(rows: Sequence[dict[str, Any]], key: str, min_count: int = 30) -> dict[str, Any]:
    """The lowest and highest cells for metric ``key`` (e.g. ``age_mae``) among cells of ``min_count``+
    samples scored (``{key}_n`` where the rows have it, the samples with the task's label; else ``n``),
    their ``gap`` and its 95 % interval ``ci95`` (:func:`gap_interval`, from the cells' ``{key}_lo``,
    ``{key}_hi`` and ``{key}_se``; NaN where the rows have none), as :func:`group_gap`'s. The interval
    is of the difference between these two cells: the largest of many gaps, picked after the fact,
    tends to read larger than the same two cells would on other faces."""
    cells = gap_cells(rows, key, min_count)
    if not cells:
        return {}
    lo, hi = _extremes(cells, lambda r: r[key])
    gap = hi[key] - lo[key]
    nan = float("nan")
    if hi is lo:  # a cell against itself has no interval, as in group_gap
        return {"min": lo, "max": hi, "gap": gap, "ci95": [nan, nan]}
    cell = lambda r: (r[key], (r.get(f"{key}_lo", nan), r.get(f"{key}_hi", nan)), r.get(f"{key}_se", nan))  # noqa: E731
    return {"min": lo, "max": hi, "gap": gap, "ci95": gap_interval(key.rsplit("_", 1)[-1], cell(hi), cell(lo))}


def group_gap(scores: np.ndarray, group: np.ndarray, names: Sequence[str], kind: str = "accuracy",
              min_count: int = 1) -> dict[str, Any]:
    """Each group's mean score and the largest gap between groups, with 95 % intervals.

    ``scores``: ``(N,)`` one score per sample, 1.0 / 0.0 for a right or wrong answer when ``kind`` is
    ``"accuracy"``, the absolute error when it is ``"mae"``; NaN where the sample has no label.
    ``group``: ``(N,)`` group indices into ``names`` (e.g. race); NaN or out of range: no group.
    Groups of at least ``min_count`` scored samples take part. Returns ``by`` (per group: ``mean``,
    its interval ``ci95`` -- Wilson for accuracy, Student-t for MAE -- and ``n``), ``highest`` and
    ``lowest`` (the groups with the highest and lowest mean), ``gap`` (highest minus lowest mean, in
    the score's unit) and ``gap_ci95``, its 95 % interval (:func:`gap_interval`: Newcombe's for two
    proportions; for errors ``gap +- 1.96 sqrt(s_hi^2 / n_hi + s_lo^2 / n_lo)``, sample variances).
    With no group: ``highest`` and ``lowest`` are None and the gap NaN. With one group the gap
    is 0 and its interval NaN (a group against itself); an error group of one sample has no
    variance, so an interval that needs it is NaN too. ``names`` must be distinct.
    """
    if kind not in ("accuracy", "mae"):
        raise ValueError(f"kind must be 'accuracy' or 'mae', not {kind!r}")
    scores, group = np.asarray(scores, float), np.asarray(group, float)
    by: dict[str, dict[str, Any]] = {}
    se: dict[str, float] = {}
    for gi, name in enumerate(names):
        x = scores[(group == gi) & ~np.isnan(scores)]
        if len(x) < max(1, min_count):
            continue
        m, ci, se[name] = score_summary(x, kind)
        by[name] = {"mean": m, "ci95": [float(c) for c in ci], "n": int(len(x))}
    if not by:
        nan = float("nan")
        return {"by": {}, "highest": None, "lowest": None, "gap": nan, "gap_ci95": [nan, nan]}
    lo, hi = _extremes(list(by), lambda r: by[r]["mean"])
    gap = by[hi]["mean"] - by[lo]["mean"]
    cell = lambda r: (by[r]["mean"], by[r]["ci95"], se[r])  # noqa: E731
    ci = gap_interval(kind, cell(hi), cell(lo)) if hi != lo else [float("nan")] * 2
    return {"by": by, "highest": hi, "lowest": lo, "gap": gap, "gap_ci95": ci}


def accuracy_gap(hit: np.ndarray, group: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """:func:`group_gap` of right (1.0) and wrong (0.0) answers, in points, as result files record it.

    Returns ``by`` (per group with any scored face: ``accuracy``, its Wilson ``ci95``, ``n``; four decimals),
    ``gap_points`` (highest minus lowest accuracy, in points), ``between`` (the highest and lowest
    group) and ``gap_ci95`` (points; two decimals).
    """
    g = group_gap(hit, group, names, "accuracy")
    if g["highest"] is None:
        return {"by": {}, "gap_points": float("nan"), "between": [], "gap_ci95": [float("nan")] * 2}
    return {"by": {r: {"accuracy": round(v["mean"], 4), "ci95": [round(x, 4) for x in v["ci95"]], "n": v["n"]}
                   for r, v in g["by"].items()},
            "gap_points": round(100 * g["gap"], 2), "between": [g["highest"], g["lowest"]],
            "gap_ci95": [round(100 * x, 2) for x in g["gap_ci95"]]}
