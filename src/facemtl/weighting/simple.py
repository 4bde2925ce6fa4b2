"""Equal and hand-set ("fixed") weights: ``total = sum_t w_t L_t``.

``fixed`` is the paper's "without uncertainty" ablation.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .base import WEIGHTINGS, Weighting


@WEIGHTINGS.register("fixed")
class Fixed(Weighting):
    """``total = sum_t w_t L_t`` with ``w_t`` from the config (missing tasks get 1)."""

    def __init__(self, tasks: Sequence[str], weights: dict[str, float] | None = None) -> None:
        super().__init__(tasks)
        weights = dict(weights or {})
        unknown = set(weights) - set(tasks)
        if unknown:
            raise ValueError(f"weights given for unknown tasks: {', '.join(sorted(unknown))}")
        self.w = {t: float(weights.get(t, 1.0)) for t in tasks}

    def forward(self, losses: dict[str, torch.Tensor], model=None) -> torch.Tensor:
        return sum(self.w[t] * losses[t] for t in self.task_names)

    def weights(self) -> dict[str, float]:
        return dict(self.w)


@WEIGHTINGS.register("equal")
class Equal(Fixed):
    """``total = sum_t L_t``."""

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__(tasks)
