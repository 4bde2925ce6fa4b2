"""Evaluation metrics on 1-D arrays of predictions and targets (label units).

Formulas follow the paper's Section IV: accuracy, MAE, MSE and the cumulative
score ``CS(k) = N_{|e| <= k} / N`` (eq. 17), plus age-group accuracy.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

# Age groups used for "age-group accuracy" unless a task sets its own edges:
# [0-2], [3-9], [10-19], [20-29], [30-39], [40-49], [50-59], [60-69], [70+].
# Decades as in the paper's bias study, with infants and children split off.
DEFAULT_AGE_EDGES: tuple[float, ...] = (0, 3, 10, 20, 30, 40, 50, 60, 70)


def accuracy(pred: np.ndarray, true: np.ndarray) -> float:
    """Fraction of exact matches, in [0, 1]."""
    return float(np.mean(np.asarray(pred) == np.asarray(true))) if len(true) else float("nan")


def mae(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean absolute error, in label units (years for age)."""
    return float(np.mean(np.abs(np.asarray(pred, float) - np.asarray(true, float)))) if len(true) else float("nan")


def mse(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean squared error, in squared label units."""
    return float(np.mean((np.asarray(pred, float) - np.asarray(true, float)) ** 2)) if len(true) else float("nan")


def cumulative_score(pred: np.ndarray, true: np.ndarray, ks: Iterable[int] = range(11),
                     step: float = 1.0) -> dict[int, float]:
    """``CS(k)`` = fraction of samples with ``|pred - true| <= k * step`` (paper eq. 17, where
    ``step`` is a year), per k."""
    err = np.abs(np.asarray(pred, float) - np.asarray(true, float))
    return {int(k): (float(np.mean(err <= (k + 1e-9) * step)) if len(err) else float("nan")) for k in ks}


def to_groups(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Group index of each value: group g holds ``edges[g] <= v < edges[g+1]``; the last is open."""
    return np.clip(np.searchsorted(np.asarray(edges, float), np.asarray(values, float), side="right") - 1, 0, len(edges) - 1)


def group_names(edges: Sequence[float], whole: bool | None = None) -> list[str]:
    """Readable names for :func:`to_groups` groups, e.g. ``["0-2", "3-9", ..., "70+"]``."""
    integers = all(float(x).is_integer() for x in edges)
    if integers and whole is not False:  # (fractional edges are never cut to whole numbers)
        # whole numbers (ages, ranks): a group ends one below the next
        e: list[Any] = [int(x) for x in edges]
        spans = [(a, b - 1) for a, b in zip(e[:-1], e[1:])]
    else:  # bands of a continuous value: a group ends where the next starts
        e = [float(f"{float(x):g}") for x in edges]
        spans = list(zip(e[:-1], e[1:]))
    names = [f"{a:g}" if a == b else f"{a:g} to {b:g}" if a < 0 or b < 0 else f"{a:g}-{b:g}"
             for a, b in spans]  # (-5 to -4, not -5--4)
    return names + [f"{e[-1]:g}+"]


def half_up(values: Any) -> np.ndarray:
    """Values rounded to whole numbers, halves up (``1.5`` is 2, ``2.5`` is 3, ``-1.5`` is -1; NumPy's
    ``rint`` takes halves to even), as a person reads a rank or an age, as an answer's level is
    named and its groups are counted, and as the page's ``Math.round`` shows it."""
    return np.floor(np.asarray(values, float) + 0.5)


def group_accuracy(pred: np.ndarray, true: np.ndarray, edges: Sequence[float], whole: bool | None = None) -> float:
    """Fraction of samples whose predicted value falls in the same group as the true one.

    For whole-number values (``whole``; by default, where the edges are whole numbers),
    continuous predictions are rounded to the nearest integer first, so that an age of 2.6
    counts as 3 (the "3-9" group), as a person would read it; edges with fractions (bands of a
    0..1 value) take the predictions as they are.
    """
    if not len(true):
        return float("nan")
    whole = whole if whole is not None else all(float(e).is_integer() for e in edges)
    p = half_up(pred) if whole else np.asarray(pred, float)
    return float(np.mean(to_groups(p, edges) == to_groups(true, edges)))


def confusion_matrix(pred: np.ndarray, true: np.ndarray, num_classes: int) -> np.ndarray:
    """``(C, C)`` counts, rows = true class, columns = predicted class."""
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(true, int), np.asarray(pred, int)), 1)
    return m


def regression_metrics(pred: np.ndarray, true: np.ndarray, edges: Sequence[float], whole: bool | None = None,
                       cs_step: float = 1.0) -> dict:
    """MAE, MSE, CS(0..10) in steps of ``cs_step`` (``cs``, keyed by the step count ``"0"`` ..
    ``"10"``; ``cs_step``) and group accuracy (age groups, or ``edges``' bands) for ordinal and
    regression tasks (``whole``: values are whole numbers, see :func:`group_names`)."""
    return {
        "mae": mae(pred, true),
        "mse": mse(pred, true),
        "cs": {str(k): v for k, v in cumulative_score(pred, true, step=cs_step).items()},
        "cs_step": float(cs_step),
        "group_accuracy": group_accuracy(pred, true, edges, whole),
        "groups": group_names(edges, whole),
        "n": int(len(true)),
    }


def mean_and_spread(values: Sequence[float]) -> dict:
    """``{"mean", "std", "values"}`` of a metric over seeds; ``std`` is the sample standard
    deviation (ddof=1), 0 for a single value."""
    v = np.asarray(values, float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "values": v.tolist()}
