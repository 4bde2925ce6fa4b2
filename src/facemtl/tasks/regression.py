"""Regression tasks: a value normalised to [0, 1], learned with MSE or L1."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ..metrics import DEFAULT_AGE_EDGES  # noqa: F401 - (imported from here before the split)
from .base import TASK_TYPES
from .numeric import NumericTask
from .ordinal import OrdinalTask, decode_ranks, ordinal_probabilities  # noqa: F401 - (their home before the split)

if TYPE_CHECKING:
    import torch

    from ..inference.results import TaskAnswer


@TASK_TYPES.register("regression")
@dataclass
class RegressionTask(NumericTask):
    """Scalar regression on targets normalised to [0, 1] by ``(y - min) / (max - min)``.

    The thesis regresses normalised age. ``loss_fn``: ``mse`` or ``l1`` on the
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

    def explain_score(self, out: "torch.Tensor") -> "torch.Tensor":
        """The value itself: the map shows the regions that raise it."""
        return out[:, 0]

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
