"""Ordinal (K-1 binary subproblems, CORAL, CORN) and regression tasks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..losses import corn_loss, decode_ranks, ordinal_bce_loss, ordinal_probabilities
from ..metrics import DEFAULT_AGE_EDGES, regression_metrics
from .base import TASK_TYPES, Task, valid


@dataclass
class _Numeric(Task):
    """Shared metrics for tasks predicting a number (MAE, MSE, CS(k), group accuracy)."""

    min_value: float = 0.0
    max_value: float = 100.0
    #: Group edges for "age-group accuracy"; defaults to :data:`DEFAULT_AGE_EDGES`.
    group_edges: list[float] = field(default_factory=lambda: list(DEFAULT_AGE_EDGES))

    category: ClassVar[str] = "ordinal"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.max_value > self.min_value:
            raise ValueError(f"task {self.name!r}: max_value must exceed min_value")

    def metrics(self, pred: np.ndarray, true: np.ndarray) -> dict[str, Any]:
        m = valid(true)
        return regression_metrics(np.asarray(pred, float)[m], np.asarray(true, float)[m], self.group_edges)

    def baseline(self, train_true: np.ndarray) -> float:
        t = np.asarray(train_true, float)[valid(train_true)]
        return float(np.median(t)) if len(t) else self.min_value

    def skill(self, metrics: dict[str, Any], baseline_metrics: dict[str, Any]) -> float:
        """``1 - MAE / MAE_median``: 0 for predicting the training median, 1 when exact."""
        return 1.0 - metrics["mae"] / max(1e-6, baseline_metrics["mae"])


class CoralHead(nn.Module):
    """CORAL output layer: one shared weight vector, K-1 biases (Cao et al. 2020).

    ``(N, F) -> (N, K-1)``: ``z_k = w . x + b_k``; biases start descending in (0, 1]
    as in ``coral_pytorch.layers.CoralLayer(preinit_bias=True)``.
    """

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Linear(in_features, 1, bias=False)
        self.bias = nn.Parameter(torch.arange(num_classes - 1, 0, -1).float() / (num_classes - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight(x) + self.bias


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
    """

    method: str = "binary"
    decoding: str = "threshold"
    reduction: str = "sum"

    kind: ClassVar[str] = "ordinal"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method not in ("binary", "coral", "corn", "softmax"):
            raise ValueError(
                f"task {self.name!r}: unknown ordinal method {self.method!r}; choose binary, coral, corn or softmax"
            )
        if self.decoding not in ("threshold", "expected"):
            raise ValueError(f"task {self.name!r}: unknown decoding {self.decoding!r}; choose threshold or expected")
        if self.reduction not in ("sum", "mean"):
            raise ValueError(f"task {self.name!r}: reduction must be 'sum' or 'mean'")

    @property
    def category(self) -> str:  # type: ignore[override]
        return "nominal" if self.method == "softmax" else "ordinal"

    @property
    def num_classes(self) -> int:
        return int(round(self.max_value - self.min_value)) + 1

    def ranks(self, y: torch.Tensor) -> torch.Tensor:
        return (torch.round(y) - self.min_value).clamp(0, self.num_classes - 1).long()

    def make_head(self, in_features: int) -> nn.Module:
        if self.method == "coral":
            return CoralHead(in_features, self.num_classes)
        if self.method == "softmax":
            return nn.Linear(in_features, self.num_classes)
        return nn.Linear(in_features, self.num_classes - 1)

    def _loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        r = self.ranks(y)
        if self.method == "corn":
            return corn_loss(out, r)
        if self.method == "softmax":
            return F.cross_entropy(out, r)
        return ordinal_bce_loss(out, r, reduction=self.reduction)

    def threshold_probabilities(self, out: torch.Tensor) -> torch.Tensor:
        """``P(value > min_value + k)``, ``(N, K-1)``."""
        if self.method == "softmax":
            return (1 - out.softmax(1).cumsum(1)[:, :-1]).clamp(0, 1)
        return ordinal_probabilities(out, self.method)

    def predict(self, out: torch.Tensor) -> torch.Tensor:
        if self.method == "softmax" and self.decoding == "threshold":
            return self.min_value + out.argmax(1).float()
        return self.min_value + decode_ranks(self.threshold_probabilities(out), self.decoding)

    def probabilities(self, out: torch.Tensor) -> torch.Tensor:
        """``P(value = min_value + k)`` for k = 0..K-1, from the threshold probabilities.

        Differences of a non-increasing sequence; clipped at 0 and renormalised where
        independent heads are not rank-consistent.
        """
        if self.method == "softmax":
            return out.softmax(1)
        gt = self.threshold_probabilities(out)
        ones = torch.ones_like(gt[:, :1])
        cdf_gt = torch.cat([ones, gt, torch.zeros_like(ones)], 1)
        p = (cdf_gt[:, :-1] - cdf_gt[:, 1:]).clamp_min(0)
        return p / p.sum(1, keepdim=True).clamp_min(1e-12)


@TASK_TYPES.register("regression")
@dataclass
class RegressionTask(_Numeric):
    """Scalar regression on targets normalised to [0, 1] by ``(y - min) / (max - min)``.

    The thesis regresses normalised age. ``loss``: ``mse`` or ``l1`` on the
    normalised scale; predictions are mapped back and clipped to [min, max].
    """

    loss_fn: str = "mse"

    kind: ClassVar[str] = "regression"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss_fn not in ("mse", "l1"):
            raise ValueError(f"task {self.name!r}: loss_fn must be 'mse' or 'l1'")

    def make_head(self, in_features: int) -> nn.Module:
        return nn.Linear(in_features, 1)

    def normalise(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.min_value) / (self.max_value - self.min_value)

    def _loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fn = F.mse_loss if self.loss_fn == "mse" else F.l1_loss
        return fn(out[:, 0], self.normalise(y.float()))

    def predict(self, out: torch.Tensor) -> torch.Tensor:
        v = self.min_value + out[:, 0] * (self.max_value - self.min_value)
        return v.clamp(self.min_value, self.max_value)
