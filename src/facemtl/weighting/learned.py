"""The thesis's "loss weight layer" (Sundriyal 2020, eq. 3.5)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .base import WEIGHTINGS, Weighting


@WEIGHTINGS.register("learned")
class LearnedWeights(Weighting):
    """``total = sum_t w_t L_t + lambda ||w||^2`` with ``w = softmax(theta)`` (sums to 1).

    Without the penalty the weights would collapse onto the task with the smallest loss; the
    ``lambda ||w||^2`` term (lambda = 0.1 in the thesis) is smallest at equal weights and pulls
    them back only as far as the losses allow. On the simplex the minimum is at
    ``w_t = max(0, mu - L_t) / (2 lambda)`` (``mu`` making them sum to 1), so a task whose loss
    exceeds the smallest by ``2 lambda`` (0.2) or more tends to weight 0 as ``theta`` converges
    (a review: with age's loss at 32 against gender's 0.6 and race's 1.4, Adam at cpu.yaml's
    ``weighting.lr`` took age's weight from 1/3 to 0.06 in 300 steps and near 0 in 3,000).
    The penalty keeps the weights apart only where the losses are of one scale: normalise
    them (e.g. age as a normalised regression, as the thesis does) or raise ``lam``.
    """

    def __init__(self, tasks: Sequence[str], lam: float = 0.1) -> None:
        super().__init__(tasks)
        self.lam = float(lam)
        if not self.lam >= 0:  # a negative penalty rewards large weights without bound
            raise ValueError(f"the learned weighting's lam must be zero or more, not {lam}")
        self.theta = nn.Parameter(torch.zeros(len(self.task_names)))

    def w(self) -> torch.Tensor:
        return torch.softmax(self.theta, 0)

    def forward(self, losses: dict[str, torch.Tensor], model=None) -> torch.Tensor:
        w = self.w()
        return sum(w[i] * losses[t] for i, t in enumerate(self.task_names)) + self.lam * (w**2).sum()

    def weights(self) -> dict[str, float]:
        w = self.w().detach()
        return {t: float(w[i]) for i, t in enumerate(self.task_names)}
