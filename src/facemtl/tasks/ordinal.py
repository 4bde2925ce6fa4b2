"""Ordinal tasks: K-1 binary subproblems (paper eq. 5-7), CORAL, CORN, or a softmax over the ranks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np

from ..metrics import half_up
from .base import TASK_TYPES, Ablation, sigmoid, softmax
from .numeric import NumericTask

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


@TASK_TYPES.register("ordinal")
@dataclass
class OrdinalTask(NumericTask):
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
    severe]``); see :attr:`levels`. ``importance``: the weights ``lambda_k`` of the K-1 binary
    subproblems in paper eq. 7; see :attr:`importance`.
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
    #: The weights ``lambda_k`` of the K-1 binary subproblems (paper eq. 7; ``binary`` and ``coral``
    #: heads): ``null``, all 1; a list of K-1 weights; or ``counts``, Niu et al.'s (2016) task
    #: importance from the training labels, ``lambda_k proportional to sqrt(n_k)`` with ``n_k`` the
    #: training faces of rank ``k`` (at least 1, so that no threshold goes untrained), scaled to a
    #: mean of 1 so the loss keeps its size (Niu et al. scale them to a sum of 1; ``reduction: mean``
    #: then matches theirs).
    importance: list[float] | str | None = None

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
        self._lambdas: np.ndarray | None = None  # the importance weights the loss applies
        if self.importance is not None:
            self._check_importance()

    def _check_importance(self) -> None:
        where = f"task {self.name!r}: importance"
        if self.method not in ("binary", "coral"):
            raise ValueError(f"{where} weighs the K-1 binary subproblems of a binary or coral head, and a "
                             f"{self.method} head has none: leave it out, or set method: binary")
        if isinstance(self.importance, str):
            if self.importance != "counts":
                raise ValueError(f"{where} is a list of {self.num_classes - 1} weights or 'counts', not "
                                 f"{self.importance!r}")
            return
        w = np.asarray(self.importance, float)
        if w.shape != (self.num_classes - 1,) or not np.isfinite(w).all() or (w < 0).any() or not w.any():
            raise ValueError(f"{where} takes {self.num_classes - 1} weights (one per threshold between its "
                             f"{self.num_classes} ranks), none negative and not all 0, not {list(self.importance)}")
        self._lambdas = w

    def fit_training_labels(self, train: np.ndarray) -> dict[str, Any] | None:
        """``importance: counts``: the weights from the training labels ``(N,)`` (see :attr:`importance`)."""
        if self.importance != "counts":
            return None
        v = np.asarray(train, float)
        ranks = np.clip(np.round(v[~np.isnan(v)] - self.min_value), 0, self.num_classes - 1).astype(int)
        n = np.bincount(ranks, minlength=self.num_classes)[: self.num_classes - 1]
        root = np.sqrt(np.maximum(n, 1))
        self._lambdas = root * (len(root) / root.sum())
        return {"importance": [round(float(x), 4) for x in self._lambdas]}

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
        return self.levels[int(np.clip(half_up(value - self.min_value), 0, len(self.levels) - 1))]

    def describe(self, value: float) -> str:
        name = self.level(value)
        return name if name is not None else super().describe(value)

    def _written_level(self, value: float) -> str | None:
        """The level of a decoded value as its answer writes it (at :attr:`decimals`): 1.49 is
        written 1.5 and named for rank 2, as the table writes it (2) and its group counts it."""
        return self.level(round(float(value), self.decimals)) if np.isfinite(value) else None

    def describe_prediction(self, value: float) -> str:
        """A decoded value's level as its answer names it (a track's aggregate too), else the number."""
        name = self._written_level(value)
        return name if name is not None else super().describe_prediction(value)

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
        import torch
        import torch.nn.functional as F

        from ..losses import corn_loss, ordinal_bce_loss

        r = self.ranks(y)
        if self.method == "corn":
            loss = corn_loss(out, r)
        elif self.method == "softmax":
            loss = F.cross_entropy(out, r)
        else:
            if self.importance == "counts" and self._lambdas is None:  # (a program's own use of the task)
                raise RuntimeError(f"task {self.name!r}: importance 'counts' is taken from the training labels, "
                                   "which this task was not given (Task.fit_training_labels)")
            lam = None if self._lambdas is None else torch.as_tensor(self._lambdas, dtype=out.dtype, device=out.device)
            loss = ordinal_bce_loss(out, r, importance=lam, reduction=self.reduction)
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
        """The softmax head: the most probable rank's logit. CORN's conditional logits: each signed
        by the decision the rank is decoded from, ``prod_{j<=k} s(z_j) > 0.5`` (a logit's own sign
        would push the thresholds past the rank against it); the others: :meth:`NumericTask.explain_score`."""
        import torch

        if self.method == "softmax":  # the most probable rank's logit
            return out.gather(1, out.detach().argmax(1, keepdim=True)).squeeze(1)
        if self.method == "corn":
            yes = torch.cumprod(torch.sigmoid(out.detach()), 1) > 0.5
            return (out * torch.where(yes, 1.0, -1.0)).sum(1)
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
        from ..inference.results import TaskAnswer, whole_number

        pred = self.predict(raw)
        cdf = self.probabilities(raw).cumsum(1)
        lo_q, hi_q = (1 - interval) / 2, 1 - (1 - interval) / 2
        out = []
        for j in range(len(pred)):  # (whole ranks written as ints, whatever type min_value came as)
            lo, hi = (whole_number(self.min_value + int(np.searchsorted(cdf[j], q))) for q in (lo_q, hi_q))
            out.append(TaskAnswer(float(pred[j]), interval=(lo, hi), decimals=self.decimals,
                                  level=self._written_level(float(pred[j]))))
        return out

    def ablations(self) -> list[Ablation]:
        """The paper's two: the ranks as a nominal softmax, and as normalised regression (which has
        no thresholds, no importance weights and no levels; a named scale's range, which its levels
        had set, is then given: a user test's regression ran on 0..100 for four levels; so is the
        step of its CS(k), the ranks' 1, where its own would be hundredths of a narrow range)."""
        regression: dict[str, Any] = {"type": "regression", "method": None, "decoding": None, "reduction": None,
                                      "levels": None, "importance": None, "mean_variance": None}
        if self.levels is not None:  # (its text labels: the grid reads the data once, by the base recipe's tasks)
            regression.update(min_value=self.min_value, max_value=self.max_value, group_edges=self.group_edges,
                              bias_edges=self.bias_edges)
        if not (self.reads_ages or self.max_value - self.min_value >= 30):  # (else its step is 1 already)
            regression["cs_unit"] = self.cs_step()  # CS(k) in ranks, as this task's (not hundredths of the range)
        return [
            Ablation("nominal", f"{self.name} as nominal softmax (without ordinal)",
                     {"method": "softmax", "decoding": "threshold", "importance": None},
                     f"the ordinal decomposition beats {self.name} as a nominal softmax", "paper (ablation, Table IV)"),
            Ablation("regression", f"{self.name} as normalised regression", regression,
                     f"the ordinal decomposition beats {self.name} as normalised regression",
                     "paper (vs regression methods)"),
        ]

    def hand_weight(self) -> float:
        """``1 / (K - 1)`` when the loss sums K-1 binary terms (each threshold weighs like one
        binary task), else 1."""
        k = int(round(self.max_value - self.min_value))
        summed = self.reduction == "sum" and self.method != "softmax"
        return round(1.0 / k, 6) if summed and k > 0 else 1.0
