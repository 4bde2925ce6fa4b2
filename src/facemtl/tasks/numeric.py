"""What tasks that predict a number share (:class:`NumericTask`): the value range, its groups
and bands, MAE / MSE / CS(k) / group accuracy, subgroups and confusion between groups.

The task types themselves: :mod:`facemtl.tasks.ordinal` (K-1 binary subproblems, CORAL, CORN)
and :mod:`facemtl.tasks.regression`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np

from ..metrics import DEFAULT_AGE_EDGES, confusion_matrix, group_names, half_up, regression_metrics, to_groups
from ..subgroups import mean_interval
from .base import MetricColumn, Task, some_values, valid

if TYPE_CHECKING:
    import torch


@dataclass
class NumericTask(Task):
    """Shared metrics for tasks predicting a number (MAE, MSE, CS(k), group accuracy)."""

    min_value: float = 0.0
    max_value: float = 100.0
    #: Group edges for "group accuracy". Default: :data:`DEFAULT_AGE_EDGES` for a task that
    #: reads ages (its label column is ``age``), else five equal bands of ``min_value ..
    #: max_value`` (a 0..1 value or a -5..5 tilt grouped by age bands fell in one group).
    group_edges: list[float] | None = None
    #: Coarser groups for subgroup (bias) tables and group confusion matrices, so that
    #: intersections with other attributes keep some size. Default: 0-19, 20-39, 40-59, 60+
    #: for ages, else four equal bands of the range.
    bias_edges: list[float] | None = None
    #: The error one step k of CS(k) stands for, in the task's units; ``None``: chosen from the
    #: range (:meth:`cs_step`). An ordinal task's regression ablation sets its ranks' 1, so that
    #: both variants' CS(5) count the same errors (a user test: CS(0.05) under a CS(5) heading).
    cs_unit: float | None = None

    category: ClassVar[str] = "ordinal"
    subgroup_metric: ClassVar[str] = "mae"
    #: Whether its values are whole numbers (an ordinal task's ranks).
    whole_values: ClassVar[bool] = False
    #: What becomes of a label outside ``min_value .. max_value`` (the end of the warning).
    outside_range: ClassVar[str] = "it is learned as it is"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.max_value > self.min_value:
            raise ValueError(f"task {self.name!r}: max_value must exceed min_value")
        if self.cs_unit is not None and not self.cs_unit > 0:
            raise ValueError(f"task {self.name!r}: cs_unit must be above 0 (or null: chosen from the range), "
                             f"not {self.cs_unit}")
        ages = self.reads_ages
        if self.group_edges is None:
            self.group_edges = list(DEFAULT_AGE_EDGES) if ages else self._bands(5)
        if self.bias_edges is None:
            self.bias_edges = self._within_range([0, 20, 40, 60]) if ages else self._bands(4)

    @property
    def reads_ages(self) -> bool:
        """Whether its values are ages in years: its column is ``age`` and its range is wider
        than a few ranks (Adience's 0..7 age groups, or named levels, are ranks, not years)."""
        return self.label == "age" and self.max_value - self.min_value >= 10

    @property
    def unit(self) -> str:
        return "years" if self.reads_ages else ""

    def cs_step(self) -> float:
        """The error one step k of CS(k) stands for: 1 (a year, a rank) where answers are whole,
        are ages, or span 30 units or more; else the power of ten nearest a hundredth of the
        range (0.01 for a 0..1 score, 0.1 for 0..10), so that CS(0..10) shows the errors that
        occur: in steps of 1, a 0..1 score read CS(1) = 100 % for any model (a user test).
        ``cs_unit``, where set, instead."""
        if self.cs_unit is not None:
            return float(self.cs_unit)
        span = float(self.max_value - self.min_value)
        if self.whole_values or self.reads_ages or span >= 30 or span <= 0:
            return 1.0
        return float(10.0 ** round(math.log10(span / 100)))

    def cs_label(self, k: int, metrics: dict[str, Any] | None = None) -> str:
        """``CS(5)`` for ages; ``CS(0.05)`` for a 0..1 score: the error level, in the task's
        units, that ``k`` steps of a :meth:`metrics` result stand for (saved before steps were
        recorded: 1)."""
        step = (metrics or {}).get("cs_step", self.cs_step() if metrics is None else 1.0)
        return f"CS({k * step:.6g})"

    @property
    def error_step(self) -> float | None:
        """1 where answers are whole numbers (an ordinal task's ranks and ages), else ``None`` (a
        regression's answers move by any amount, ages too)."""
        return 1.0 if self.whole_values else None

    def named_levels_problem(self, names: Sequence[str], exact: bool = False) -> str | None:
        """Named levels (``[child, teen, adult, senior]``) are read as the ranks 0 .. K-1: another
        start shifts every label (a user test: with 1..4, child and teen both became 1). ``exact``
        (a new run): the range must be exactly that, as a wider top (the default 100, max_value
        left out) trains ranks no face has and answers no level names (a user test: a 101-rank
        head for four levels, without a word); a model or run made before reads its data as it did."""
        top = len(names) - 1
        if self.min_value == 0 and (self.max_value == top or (self.max_value > top and not exact)):
            return None
        return (f"the data names the values of column {self.label!r} {'[' + ', '.join(map(str, names)) + ']'}, read "
                f"as the ranks 0..{top} in that order, but task {self.name!r} runs from min_value {self.min_value:g} "
                f"to max_value {self.max_value:g}: set min_value: 0 and max_value: {top} (its answers are the "
                f"ranks 0..{top}: {names[0]} is 0), or give the column numbers")

    @property
    def whole_groups(self) -> bool:
        """Whether its groups hold whole numbers (ranks, or ages: ``0-19`` ends at 19), not
        bands of a continuous value (``0-0.25`` ends where ``0.25-0.5`` starts)."""
        return self.whole_values or self.reads_ages

    def _within_range(self, edges: list[float]) -> list[float]:
        """``edges`` less those that make a group outside the range, or of its top value alone: the
        CORAL protocol's ages 21..60 in 0-19, 20-39, 40-59 and 60+ had an empty group and one of
        60-year-olds only; they are grouped 20-39 and 40+ (1..116 keeps all four)."""
        kept = [e for k, e in enumerate(edges) if e < self.max_value and
                (k + 1 == len(edges) or edges[k + 1] > self.min_value)]
        return kept or [edges[0]]

    def _bands(self, n: int) -> list[float]:
        """``n`` equal bands of ``min_value .. max_value`` (their lower edges; whole numbers for
        whole values)."""
        if self.whole_values and self.max_value - self.min_value + 1 <= n:  # a rank each: 0..3 in five bands
            return list(range(int(self.min_value), int(self.max_value) + 1))  # had merged 2 and 3 into "2+"
        step = (self.max_value - self.min_value) / n
        edges = [self.min_value + k * step for k in range(n)]
        if self.whole_values:
            return sorted({int(np.floor(e + 0.5)) for e in edges})  # (halves up: 0..10 gives 0, 2, 4, 6, 8)
        return [round(e, self.decimals) for e in edges]

    def check_recipe(self) -> None:
        """Group edges are the groups' lower ends, in order: values below the first one were
        counted in the first group, under a name that leaves them out (``0.3-0.7`` for 0.1)."""
        for key in ("group_edges", "bias_edges"):
            edges = [float(e) for e in getattr(self, key) or []]
            if edges and (edges[0] > self.min_value or edges != sorted(set(edges))):
                raise ValueError(f"task {self.name!r}: {key} {getattr(self, key)} must rise and start at or below "
                                 f"min_value ({self.min_value:g}): each edge is the lower end of a group, and a value "
                                 "below the first would be counted in a group whose name leaves it out")

    def invalid_labels(self, values: np.ndarray) -> tuple[int, str]:
        """Labels outside ``min_value .. max_value`` are counted, not refused: the task still
        learns from them (:attr:`outside_range` says how), but the person should know that
        an age of 150 or 0 in the data is not what the model learns."""
        v = np.asarray(values, float)
        v = v[~np.isnan(v)]
        out = v[(v < self.min_value) | (v > self.max_value)]
        if not len(out):
            return 0, ""
        fix = (f"its levels name the ranks 0..{len(names) - 1}: give the column those ranks, or the names"
               if (names := self.level_names()) else "widen min_value / max_value, or drop those rows")
        if self.min_value >= 0 and (out < 0).any():  # (a readers' test: -1 for "unknown", learned as age 1)
            fix += ("; if a negative value stands for unknown, leave those cells empty or write NA: they are read "
                    "as missing")
        return len(out), (f"task {self.name!r} takes values {self.min_value:g}..{self.max_value:g}, but {len(out)} "
                          f"label(s) of its column {self.label!r} lie outside ({some_values(out)}); "
                          f"{self.outside_range} ({fix})")

    def metric_columns(self) -> list[MetricColumn]:
        return [MetricColumn("mae", "MAE", lower_is_better=True), MetricColumn("mse", "MSE", lower_is_better=True),
                MetricColumn("cs5", self.cs_label(5), percent=True),
                MetricColumn("group_accuracy", "group acc.", percent=True)]

    def scalar_metrics(self, metrics: dict[str, Any]) -> dict[str, float]:
        """MAE, MSE, group accuracy and ``cs5`` = CS(5) (paper eq. 17; five of :meth:`cs_step`)."""
        out = {k: float(metrics[k]) for k in ("mae", "mse", "group_accuracy") if k in metrics}
        if "cs" in metrics:
            out["cs5"] = float(metrics["cs"]["5"])
        return out

    def summary(self, metrics: dict[str, Any]) -> str:
        return f"MAE {metrics['mae']:.2f}"

    def metrics_text(self, metrics: dict[str, Any]) -> str:
        cs = metrics["cs"]
        lo, hi = metrics.get("mae_interval") or (float("nan"), float("nan"))  # (saved before: none)
        ci = f" ({lo:.3f}-{hi:.3f}, 95%)" if lo == lo else ""
        return (f"MAE {metrics['mae']:.3f}{ci}  MSE {metrics['mse']:.2f}  {self.cs_label(5, metrics)} {cs['5']:.3f}  "
                f"group accuracy {metrics['group_accuracy']:.4f} (median baseline MAE {metrics['baseline']['mae']:.3f}, "
                f"n={metrics['n']})\n  groups: {', '.join(metrics['groups'])}")

    def metrics(self, pred: np.ndarray, true: np.ndarray) -> dict[str, Any]:
        m = valid(true)
        p, t = np.asarray(pred, float)[m], np.asarray(true, float)[m]
        out = regression_metrics(p, t, self.group_edges, self.whole_groups, self.cs_step())
        out["groups"] = self._group_labels(self.group_edges)  # (a named scale's levels, not its ranks)
        # 95 % Student-t interval of the MAE (mean +- t s / sqrt(n) of the absolute errors)
        out["mae_interval"] = list(mean_interval(np.abs(p - t)))
        return out

    def baseline(self, train_true: np.ndarray) -> float:
        t = np.asarray(train_true, float)[valid(train_true)]
        return float(np.median(t)) if len(t) else self.min_value

    def skill(self, metrics: dict[str, Any], baseline_metrics: dict[str, Any]) -> float:
        """``1 - MAE / MAE_median``: 0 for predicting the training median, 1 when exact; NaN
        (undefined) when the median itself is exact on every face scored."""
        if baseline_metrics["mae"] <= 1e-9:
            return float("nan")
        return 1.0 - metrics["mae"] / baseline_metrics["mae"]

    def describe(self, value: float) -> str:
        """The number at the task's :attr:`decimals` (a user test: a 0..1 score's Grad-CAM captions
        read "wrong: true 0, pred 0"); whole for ages and a scale of whole values, as they are read."""
        return f"{value:.0f}" if self.reads_ages or self.whole_values else f"{value:.{self.decimals}f}"

    @property
    def decimals(self) -> int:
        """Digits after the point its answers are written with: about a thousandth of the value
        range, ``max(0, 3 - floor(log10(max_value - min_value)))`` (1 for age 1..116, 2 for
        0..10, 3 for 0..1); at most 1 for the whole values of a scale that is not age (an ordinal
        1..5 answers 2.0 or, decoded as an expectation, 2.4, and its table reads 2; an age task
        keeps what its range gives, 2 for the CORAL protocol's 21..60)."""
        d = max(0, 3 - int(np.floor(np.log10(self.max_value - self.min_value))))
        return min(d, 1) if self.whole_values and self.label != "age" else d

    def strata(self, values: np.ndarray) -> np.ndarray:
        """About ten bins over the value range."""
        width = max(1.0, (self.max_value - self.min_value) / 10)
        v = np.floor(np.asarray(values, float) / width)
        return np.where(np.isnan(v), -1, v).astype(np.int64)

    def cumulative_curve(self, metrics: dict[str, Any]) -> dict[float, float]:
        step = float(metrics.get("cs_step", 1.0))  # (saved before steps were recorded: 1)
        return {round(int(k) * step, 9): float(v) for k, v in (metrics.get("cs") or {}).items()}

    @property
    def subgroup_column(self) -> str:
        return f"{self.label} group"

    def group_names(self) -> list[str]:
        """The coarse groups of :attr:`bias_edges`, in order (``0-19``, ``20-39``, ... for ages)."""
        return self._group_labels(self.bias_edges)

    def _group_labels(self, edges: Sequence[float]) -> list[str]:
        """The names of the groups whose lower ends are ``edges``."""
        return group_names(edges, self.whole_groups)

    def subgroups(self, values: np.ndarray) -> np.ndarray:
        """The coarse groups of :attr:`bias_edges` (for ages 0-19, 20-39, 40-59, 60+; four bands
        of the range otherwise)."""
        names = self._group_labels(self.bias_edges)  # (values as read: halves up, see _as_read)
        v = self._as_read(values)
        return np.array(["?" if np.isnan(x) else names[g] for x, g in zip(v, to_groups(np.nan_to_num(v), self.bias_edges))],
                        dtype=object)

    def _as_read(self, values: np.ndarray) -> np.ndarray:
        """Values as a person reads them before they are grouped: whole numbers (halves up) where
        the groups hold whole numbers, so that a predicted 19.6 years is in ``20-39`` and a rank
        of 1.5 in the group of rank 2, the level its answer names (group accuracy rounds so too)."""
        # (metrics.half_up: floor(x + 0.5), for negative values too, as the page's Math.round)
        v = np.asarray(values, float)
        return half_up(v) if self.whole_groups else v

    def confusion(self, pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Between the coarse groups of :attr:`bias_edges`."""
        ok = valid(true)
        names = self._group_labels(self.bias_edges)
        g_p = to_groups(self._as_read(pred)[ok], self.bias_edges)
        g_t = to_groups(np.asarray(true, float)[ok], self.bias_edges)
        return confusion_matrix(g_p, g_t, len(names)), names

    def sample_scores(self, pred: np.ndarray, true: np.ndarray) -> np.ndarray:
        """The absolute error (NaN where unlabelled)."""
        return np.abs(np.asarray(pred, float) - np.asarray(true, float))

    def outcomes(self, pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Clearly right and clearly wrong: for ages within 2 years of the truth, and 10 or more
        off; for a scale of ranks the right rank (read halves up), and ``max(1, ceil(K / 10))`` or
        more ranks off (a user test: on four levels "within 2" took every answer for right); for
        another value within 2 % of its range, and 10 % or more off."""
        ok = valid(true)
        t = np.nan_to_num(np.asarray(true, float))
        if self.reads_ages:
            err = np.abs(np.asarray(pred, float) - t)
            return ok & (err <= 2), ok & (err >= 10)
        span = self.max_value - self.min_value
        if self.whole_values:
            err = np.abs(half_up(pred) - t)
            return ok & (err == 0), ok & (err >= max(1, int(np.ceil(0.1 * (span + 1)))))
        err = np.abs(np.asarray(pred, float) - t)
        return ok & (err <= 0.02 * span), ok & (err >= 0.1 * span)

    def explain_score(self, out: "torch.Tensor") -> "torch.Tensor":
        """For K-1 threshold logits ``z_k``, ``sum_k sign(z_k) z_k``: each "label > r_k" decision
        (paper eq. 5) pushed the way the head took it, so the map shows what supports the decoded
        rank (eq. 6), as a binary task's sign-flipped logit does. The plain sum ``sum_k z_k`` measured
        how old a face looked, against a young face's "no" decisions (its maps came out blank for 12
        of 19 faces predicted under 20, a researcher's test); a scale of two levels has one such
        logit, signed alike. A regression task explains its value instead
        (:meth:`RegressionTask.explain_score <facemtl.tasks.regression.RegressionTask.explain_score>`)."""
        return (out * out.detach().sign()).sum(1)
