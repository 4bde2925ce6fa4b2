"""Homoscedastic uncertainty weighting (Kendall, Gal and Cipolla 2018; paper eq. 15-16)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .base import WEIGHTINGS, Weighting


@WEIGHTINGS.register("uncertainty")
class Uncertainty(Weighting):
    """``total = sum_t exp(-s_t) L_t + s_t / 2`` with learned ``s_t = log sigma_t^2``.

    ``d total / d s_t = -exp(-s_t) L_t + 1/2``, so at the optimum
    ``sigma_t^2 = 2 L_t``: noisier tasks get smaller weights. ``weights()`` reports
    the effective multipliers ``exp(-s_t)``; ``normalised()`` the paper's eq. 16
    ``beta_i = 1 / sum_j (sigma_i^2 / sigma_j^2)``, which sum to 1.

    Every task takes this form, Kendall et al.'s for a classification likelihood, as the
    paper's tasks are all classifications (softmax, and age's K-1 binary subproblems). For a
    ``regression`` task (the ``regression_age`` ablation, or one's own) Kendall et al. write
    ``exp(-s) L / 2 + s / 2`` instead: here its weight is twice theirs at the same ``s``.
    """

    def __init__(self, tasks: Sequence[str], init: float = 0.0) -> None:
        super().__init__(tasks)
        self.log_var = nn.Parameter(torch.full((len(self.task_names),), float(init)))

    def forward(self, losses: dict[str, torch.Tensor], model=None) -> torch.Tensor:
        s = self.log_var
        return sum(torch.exp(-s[i]) * losses[t] + s[i] / 2 for i, t in enumerate(self.task_names))

    def weights(self) -> dict[str, float]:
        return {t: float(torch.exp(-self.log_var[i].detach())) for i, t in enumerate(self.task_names)}

    def normalised(self) -> dict[str, float]:
        beta = torch.softmax(-self.log_var.detach(), 0)  # 1/sigma_i^2 / sum_j 1/sigma_j^2
        return {t: float(beta[i]) for i, t in enumerate(self.task_names)}
