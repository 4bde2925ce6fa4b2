"""Ordinal (K-1 binary subproblems, CORAL, CORN) and regression tasks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np

from ..metrics import DEFAULT_AGE_EDGES, confusion_matrix, group_names, regression_metrics, to_groups
from .base import TASK_TYPES, Ablation, MetricColumn, Task, sigmoid, softmax, some_values, valid

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..inference.results import TaskAnswer


def ordinal_probabilities(logits: np.ndarray, method: str) -> np.ndarray:
    """``P(rank > k)`` for each threshold, ``(N, K-1)``, from the head's logits.

    For independent heads and CORAL these are the sigmoids; for CORN they are the
    chained conditionals ``prod_{j<=k} s(z_j)`` (rank-consistent by construction).
    """
    p = sigmoid(logits)
    return np.cumprod(p, axis=1) if method == "corn" else p


def decode_ranks(prob_gt: np.ndarray, decoding: str = "threshold") -> np.ndarray:
    """Rank from threshold probabilities ``(N, K-1)`` -> ``(N,)`` float ranks in ``0..K-1``.

    * ``threshold`` (paper eq. 6): ``rank = sum_k [p_k > 0.5]`` (the paper counts
      ranks from 1, i.e. ``1 + sum``; we count from 0 and add the task's first value).
    * ``expected``: ``rank = sum_k p_k``, the expected rank when the ``p_k`` are
      rank-consistent (``E[r] = sum_k P(r > k)``).
    """
    if decoding == "threshold":
        return (prob_gt > 0.5).sum(1).astype(np.float32)
    if decoding == "expected":
        return prob_gt.sum(1, dtype=np.float32)
    raise ValueError(f"unknown ordinal decoding {decoding!r}; choose 'threshold' or 'expected'")


def _whole(x: float) -> float | int:
    return int(x) if float(x).is_integer() else x


@dataclass
class _Numeric(Task):
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

    def named_levels_problem(self, names: Sequence[str]) -> str | None:
        """Named levels (``[child, teen, adult, senior]``) are read as the ranks 0 .. K-1: a range
        other than that shifts every label (a user test: with 1..4, child and teen both became 1)."""
        top = len(names) - 1
        if self.min_value == 0 and self.max_value >= top:  # (a wider top: ranks left unused, nothing shifted)
            return None
        return (f"the data names the values of column {self.label!r} {'[' + ', '.join(map(str, names)) + ']'}, read "
                f"as the ranks 0..{top} in that order, but task {self.name!r} runs from min_value {self.min_value:g} "
                f"to max_value {self.max_value:g}: set min_value: 0 and max_value: {top} or more (its answers are the "
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
        return len(out), (f"task {self.name!r} takes values {self.min_value:g}..{self.max_value:g}, but {len(out)} "
                          f"label(s) of its column {self.label!r} lie outside ({some_values(out)}); "
                          f"{self.outside_range} (widen min_value / max_value, or drop those rows)")

    def metric_columns(self) -> list[MetricColumn]:
        return [MetricColumn("mae", "MAE", lower_is_better=True), MetricColumn("mse", "MSE", lower_is_better=True),
                MetricColumn("cs5", "CS(5)", percent=True), MetricColumn("group_accuracy", "group acc.", percent=True)]

    def scalar_metrics(self, metrics: dict[str, Any]) -> dict[str, float]:
        """MAE, MSE, group accuracy and ``cs5`` = CS(5) (paper eq. 17)."""
        out = {k: float(metrics[k]) for k in ("mae", "mse", "group_accuracy") if k in metrics}
        if "cs" in metrics:
            out["cs5"] = float(metrics["cs"]["5"])
        return out

    def summary(self, metrics: dict[str, Any]) -> str:
        return f"MAE {metrics['mae']:.2f}"

    def metrics_text(self, metrics: dict[str, Any]) -> str:
        cs = metrics["cs"]
        return (f"MAE {metrics['mae']:.3f}  MSE {metrics['mse']:.2f}  CS(5) {cs['5']:.3f}  group accuracy "
                f"{metrics['group_accuracy']:.4f} (median baseline MAE {metrics['baseline']['mae']:.3f}, "
                f"n={metrics['n']})\n  groups: {', '.join(metrics['groups'])}")

    def metrics(self, pred: np.ndarray, true: np.ndarray) -> dict[str, Any]:
        m = valid(true)
        return regression_metrics(np.asarray(pred, float)[m], np.asarray(true, float)[m], self.group_edges,
                                  self.whole_groups)

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
        return f"{value:.0f}"

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

    def cumulative_curve(self, metrics: dict[str, Any]) -> dict[int, float]:
        return {int(k): float(v) for k, v in (metrics.get("cs") or {}).items()}

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
        names = self._group_labels(self.bias_edges)
        v = np.asarray(values, float)
        return np.array(["?" if np.isnan(x) else names[g] for x, g in zip(v, to_groups(np.nan_to_num(v), self.bias_edges))],
                        dtype=object)

    def confusion(self, pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Between the coarse groups of :attr:`bias_edges`."""
        ok = valid(true)
        names = self._group_labels(self.bias_edges)
        g_p = to_groups(np.asarray(pred, float)[ok], self.bias_edges)
        g_t = to_groups(np.asarray(true, float)[ok], self.bias_edges)
        return confusion_matrix(g_p, g_t, len(names)), names

    def sample_scores(self, pred: np.ndarray, true: np.ndarray) -> np.ndarray:
        """The absolute error (NaN where unlabelled)."""
        return np.abs(np.asarray(pred, float) - np.asarray(true, float))

    def outcomes(self, pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Within 2 units (years) of the truth, and 10 or more off."""
        ok = valid(true)
        err = np.abs(np.asarray(pred, float) - np.nan_to_num(true))
        return ok & (err <= 2), ok & (err >= 10)

    def explain_score(self, out: "torch.Tensor") -> "torch.Tensor":
        """The sum of the outputs: for K-1 threshold logits, the quantity whose sign pattern is decoded
        as the rank (paper eq. 6); for one regression output, the output itself."""
        return out.sum(1)


@TASK_TYPES.register("ordinal")
@dataclass
class OrdinalTask(_Numeric):
    """Ordinal attribute with integer values ``min_value .. max_value`` (K ranks).

    ``method``:
      * ``binary`` (paper eq. 5-7): K-1 independent sigmoid outputs, BCE on "label > r_k";
      * ``coral``: shared weights, one bias per threshold (rank-consistent);
      * ``corn``: conditional training, chained probabilities (rank-consistent);
      * ``softmax``: no ordinal treatment, a K-way softmax over the ranks with
        cross-entropy (the paper's "without ordinal" ablation); it joins the
        nominal branch and ``threshold`` decoding takes the most probable rank.
    ``decoding``: ``threshold`` (paper eq. 6, ``rank = sum [p_k > 0.5]``) or
    ``expected`` (``sum p_k``). Decoded value = ``min_value + rank``.
    ``reduction``: ``sum`` (paper eq. 7 and coral-pytorch) or ``mean`` over the K-1 terms.
    ``levels``: the names of the ranks ``0 .. K-1``, in order (``[none, mild, moderate,
    severe]``); see :attr:`levels`.
    """

    method: str = "binary"
    decoding: str = "threshold"
    reduction: str = "sum"
    #: Weights ``[lambda_mean, lambda_var]`` of the mean-variance loss (Pan et al. 2018) added on
    #: the distribution over values the head implies; ``null``: none. The authors use [0.2, 0.05].
    mean_variance: list[float] | None = None
    #: Names of the ranks ``0 .. K-1``, in order. Text cells of the task's column are read by them
    #: (``moderate`` is rank 2), each answer carries its rank's name (``<task>_level``) beside the
    #: rank, and groups (bias tables, the database's bands) are named by them. ``max_value`` left
    #: at its default follows their number. A model trained on a column whose values
    #: ``data.columns`` names takes those names when the task gives none (:meth:`adopt_level_names`),
    #: so it answers names however its recipe named the levels.
    levels: list[str] | None = None

    kind: ClassVar[str] = "ordinal"
    whole_values: ClassVar[bool] = True
    outside_range: ClassVar[str] = "the loss learns each as the nearest end of the range (its rank is clamped)"

    def check_recipe(self) -> None:
        """An ordinal task's ranks are whole numbers: fractional bounds shifted every label."""
        if not (float(self.min_value).is_integer() and float(self.max_value).is_integer()):
            raise ValueError(f"task {self.name!r}: an ordinal task's ranks are whole numbers, so min_value and "
                             f"max_value must be too, not {self.min_value:g} and {self.max_value:g} (labels were "
                             "shifted by the fraction); use a regression task for other values")
        super().check_recipe()

    def __post_init__(self) -> None:
        if self.levels is not None:
            self._check_levels()
        super().__post_init__()
        if self.method not in ("binary", "coral", "corn", "softmax"):
            raise ValueError(
                f"task {self.name!r}: unknown ordinal method {self.method!r}; choose binary, coral, corn or softmax"
            )
        if self.decoding not in ("threshold", "expected"):
            raise ValueError(f"task {self.name!r}: unknown decoding {self.decoding!r}; choose threshold or expected")
        if self.reduction not in ("sum", "mean"):
            raise ValueError(f"task {self.name!r}: reduction must be 'sum' or 'mean'")
        if self.mean_variance is not None and len(self.mean_variance) != 2:
            raise ValueError(f"task {self.name!r}: mean_variance takes two weights, [lambda_mean, lambda_var]")

    def _check_levels(self) -> None:
        """Level names: text, two or more, unique (case aside), naming the ranks 0 .. K-1; a
        ``max_value`` left at its default (100) is set to K-1, and the groups are a level each
        (up to ten) where the recipe sets none."""
        if isinstance(self.levels, str) or not all(isinstance(x, (str, int, float)) for x in self.levels or []):
            raise ValueError(f"task {self.name!r}: levels is a list of names, e.g. [none, mild, moderate, severe]")
        self.levels = [str(x).strip() for x in self.levels]
        k = len(self.levels)
        folded = [x.casefold() for x in self.levels]
        twice = sorted({x for x, f in zip(self.levels, folded) if folded.count(f) > 1})
        if k < 2 or "" in self.levels or twice:
            why = "must be two or more names" if k < 2 else "hold an empty name" if "" in self.levels else \
                f"name {', '.join(twice)} twice (case aside)"
            raise ValueError(f"task {self.name!r}: its levels {why}; they name the ranks 0..K-1 in order")
        if self.min_value == 0 and self.max_value == 100 and k != 101:  # (max_value left at its default)
            self.max_value = float(k - 1)
        if self.min_value != 0 or self.max_value != k - 1:
            raise ValueError(f"task {self.name!r}: its {k} levels name the ranks 0..{k - 1}, but it runs from "
                             f"min_value {self.min_value:g} to max_value {self.max_value:g}: set min_value: 0 and "
                             f"max_value: {k - 1} (or leave max_value out)")
        if k <= 10:
            self.group_edges = self.group_edges if self.group_edges is not None else list(range(k))
            self.bias_edges = self.bias_edges if self.bias_edges is not None else list(range(k))

    def adopt_level_names(self, names: Sequence[str] | None) -> None:
        """Take the names the data gives the task's column (``data.columns``) as :attr:`levels`
        where the task names none and they name every rank 0 .. K-1 (a model answers them then); its
        default groups become a level each, as :attr:`levels` set in the recipe makes them."""
        if self.levels is not None or not names or self.min_value != 0 or len(names) != self.num_classes:
            return
        defaults = (self._bands(5), self._bands(4))
        self.levels = [str(x).strip() for x in names]
        if len(self.levels) <= 10:
            if self.group_edges == defaults[0]:
                self.group_edges = list(range(len(self.levels)))
            if self.bias_edges == defaults[1]:
                self.bias_edges = list(range(len(self.levels)))

    def level_names(self) -> list[str] | None:
        return None if self.levels is None else list(self.levels)

    def label_classes(self) -> list[str] | None:
        """:attr:`levels`: the data's names of the column must be them, and text cells are read by them."""
        return self.level_names()

    def text_labels_hint(self, column: str) -> str:
        return f"name its levels in the task (levels: [...]) or in data.columns.{column} to read text"

    def level(self, value: float) -> str | None:
        """The name of the rank nearest ``value`` (a decoded prediction or a label); ``None``
        without :attr:`levels` or for a missing value."""
        if self.levels is None or not np.isfinite(value):
            return None
        return self.levels[int(np.clip(np.floor(value - self.min_value + 0.5), 0, len(self.levels) - 1))]

    def describe(self, value: float) -> str:
        name = self.level(value)
        return name if name is not None else super().describe(value)

    def _group_labels(self, edges: Sequence[float]) -> list[str]:
        """With :attr:`levels`: a group of one rank is its level's name (``mild``), of several
        ``first to last`` (``none to mild``); else the numbers (``0-1``)."""
        if self.levels is None or not all(float(e).is_integer() for e in edges):
            return super()._group_labels(edges)
        k = len(self.levels)
        starts = [max(0, int(e - self.min_value)) for e in edges]
        ends = [b - 1 for b in starts[1:]] + [k - 1]

        def name(r: int) -> str:
            return self.levels[r] if 0 <= r < k else str(r)  # type: ignore[index]

        return [name(a) if a >= b else f"{name(a)} to {name(min(b, k - 1))}" for a, b in zip(starts, ends)]

    @property
    def category(self) -> str:  # type: ignore[override]
        return "nominal" if self.method == "softmax" else "ordinal"

    @property
    def num_classes(self) -> int:
        return int(round(self.max_value - self.min_value)) + 1

    @property
    def output_size(self) -> int:
        return self.num_classes if self.method == "softmax" else self.num_classes - 1

    def ranks(self, y: "torch.Tensor") -> "torch.Tensor":
        return (y.round() - self.min_value).clamp(0, self.num_classes - 1).long()

    def make_head(self, in_features: int) -> "nn.Module":
        if self.method == "coral":
            from ..model.heads import CoralHead

            return CoralHead(in_features, self.num_classes)
        return super().make_head(in_features)

    def _loss(self, out: "torch.Tensor", y: "torch.Tensor") -> "torch.Tensor":
        import torch.nn.functional as F

        from ..losses import corn_loss, ordinal_bce_loss

        r = self.ranks(y)
        if self.method == "corn":
            loss = corn_loss(out, r)
        elif self.method == "softmax":
            loss = F.cross_entropy(out, r)
        else:
            loss = ordinal_bce_loss(out, r, reduction=self.reduction)
        if self.mean_variance:
            from ..losses import mean_variance_loss

            lm, lv = self.mean_variance
            loss = loss + mean_variance_loss(self._value_distribution(out), r, lm, lv)
        return loss

    def _value_distribution(self, out: "torch.Tensor") -> "torch.Tensor":
        """``P(rank = k)``, ``(N, K)``, as torch (differentiable): the softmax, or the differences of
        the threshold probabilities ``P(rank > k)`` (clipped at 0, renormalised). The torch twin of
        :meth:`probabilities`, which stays NumPy-only so that inference needs no torch."""
        import torch

        if self.method == "softmax":
            return out.softmax(1)
        gt = torch.sigmoid(out)
        if self.method == "corn":
            gt = torch.cumprod(gt, 1)
        ones = torch.ones_like(gt[:, :1])
        p = (torch.cat([ones, gt], 1) - torch.cat([gt, torch.zeros_like(ones)], 1)).clamp_min(0)
        return p / p.sum(1, keepdim=True).clamp_min(1e-12)

    def explain_score(self, out: "torch.Tensor") -> "torch.Tensor":
        if self.method == "softmax":  # the most probable rank's logit
            return out.gather(1, out.detach().argmax(1, keepdim=True)).squeeze(1)
        return super().explain_score(out)

    def soft_targets(self, raw: np.ndarray) -> np.ndarray | None:
        """The threshold probabilities ``P(value > r_k)``, ``(N, K-1)`` (a ``soft_ordinal`` task's
        targets), for the heads whose outputs are their logits (``binary``, ``coral``); else ``None``."""
        return self.threshold_probabilities(raw) if self.method in ("binary", "coral") else None

    def raw_from_soft_targets(self, q: np.ndarray) -> np.ndarray:
        if self.method not in ("binary", "coral"):
            raise NotImplementedError(f"task {self.name!r}: a {self.method} head has no threshold targets")
        q = np.clip(np.asarray(q, np.float64), 1e-12, 1 - 1e-12)
        return np.log(q) - np.log1p(-q)  # the logits of P(value > r_k)

    def threshold_probabilities(self, raw: np.ndarray) -> np.ndarray:
        """``P(value > min_value + k)``, ``(N, K-1)``."""
        if self.method == "softmax":
            return np.clip(1 - softmax(raw, 1).cumsum(1)[:, :-1], 0, 1)
        return ordinal_probabilities(raw, self.method)

    def predict(self, raw: np.ndarray) -> np.ndarray:
        if self.method == "softmax" and self.decoding == "threshold":
            return self.min_value + np.asarray(raw).argmax(1).astype(np.float32)
        return self.min_value + decode_ranks(self.threshold_probabilities(raw), self.decoding)

    def probabilities(self, raw: np.ndarray) -> np.ndarray:
        """``P(value = min_value + k)`` for k = 0..K-1, from the threshold probabilities.

        Differences of a non-increasing sequence; clipped at 0 and renormalised where
        independent heads are not rank-consistent.
        """
        if self.method == "softmax":
            return softmax(raw, 1)
        gt = self.threshold_probabilities(raw)
        ones = np.ones_like(gt[:, :1])
        cdf_gt = np.concatenate([ones, gt, np.zeros_like(ones)], 1)
        p = np.clip(cdf_gt[:, :-1] - cdf_gt[:, 1:], 0, None)
        return p / np.clip(p.sum(1, keepdims=True), 1e-12, None)

    def has_interval(self) -> bool:
        return True

    def answers(self, raw: np.ndarray, interval: float = 0.8) -> list["TaskAnswer"]:
        """The decoded value and the central ``interval`` of the predicted distribution over values."""
        from ..inference.results import TaskAnswer

        pred = self.predict(raw)
        cdf = self.probabilities(raw).cumsum(1)
        lo_q, hi_q = (1 - interval) / 2, 1 - (1 - interval) / 2
        out = []
        for j in range(len(pred)):  # (whole ranks written as ints, whatever type min_value came as)
            lo, hi = (_whole(self.min_value + int(np.searchsorted(cdf[j], q))) for q in (lo_q, hi_q))
            out.append(TaskAnswer(float(pred[j]), interval=(lo, hi), decimals=self.decimals,
                                  level=self.level(float(pred[j]))))
        return out

    def ablations(self) -> list[Ablation]:
        return [
            Ablation("nominal", f"{self.name} as nominal softmax (without ordinal)",
                     {"method": "softmax", "decoding": "threshold"},
                     f"the ordinal decomposition beats {self.name} as a nominal softmax", "paper (ablation, Table IV)"),
            Ablation("regression", f"{self.name} as normalised regression",
                     {"type": "regression", "method": None, "decoding": None, "reduction": None},
                     f"the ordinal decomposition beats {self.name} as normalised regression",
                     "paper (vs regression methods)"),
        ]

    def hand_weight(self) -> float:
        """``1 / (K - 1)`` when the loss sums K-1 binary terms (each threshold weighs like one
        binary task), else 1."""
        k = int(round(self.max_value - self.min_value))
        summed = self.reduction == "sum" and self.method != "softmax"
        return round(1.0 / k, 6) if summed and k > 0 else 1.0


@TASK_TYPES.register("regression")
@dataclass
class RegressionTask(_Numeric):
    """Scalar regression on targets normalised to [0, 1] by ``(y - min) / (max - min)``.

    The thesis regresses normalised age. ``loss``: ``mse`` or ``l1`` on the
    normalised scale; predictions are mapped back and clipped to [min, max].
    """

    loss_fn: str = "mse"

    kind: ClassVar[str] = "regression"
    outside_range: ClassVar[str] = ("the loss learns them, but predictions are clipped to the range, so those faces are "
                                    "never answered right")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss_fn not in ("mse", "l1"):
            raise ValueError(f"task {self.name!r}: loss_fn must be 'mse' or 'l1'")

    @property
    def output_size(self) -> int:
        return 1

    def normalise(self, y: "torch.Tensor") -> "torch.Tensor":
        return (y - self.min_value) / (self.max_value - self.min_value)

    def _loss(self, out: "torch.Tensor", y: "torch.Tensor") -> "torch.Tensor":
        import torch.nn.functional as F

        fn = F.mse_loss if self.loss_fn == "mse" else F.l1_loss
        return fn(out[:, 0], self.normalise(y.float()))

    def predict(self, raw: np.ndarray) -> np.ndarray:
        v = self.min_value + np.asarray(raw, np.float32)[:, 0] * (self.max_value - self.min_value)
        return np.clip(v, self.min_value, self.max_value).astype(np.float32)

    def answers(self, raw: np.ndarray, interval: float = 0.8) -> list["TaskAnswer"]:
        from ..inference.results import TaskAnswer

        return [TaskAnswer(float(v), decimals=self.decimals) for v in self.predict(raw)]
