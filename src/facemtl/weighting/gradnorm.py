"""GradNorm (Chen, Badrinarayanan, Lee and Rabinovich 2018)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .base import WEIGHTINGS, Weighting


@WEIGHTINGS.register("gradnorm")
class GradNorm(Weighting):
    """Learn ``w_t`` so every task's gradient norm on the last shared layer matches its training rate.

    With ``G_t = ||grad_W (w_t L_t)||``, ``G_bar = mean_t G_t`` and the relative
    inverse training rate ``r_t = (L_t / L_t(0)) / mean_k (L_k / L_k(0))``, the
    weights follow ``grad_w sum_t |G_t - [G_bar r_t^alpha]|`` (target held fixed),
    the network follows ``sum_t w_t L_t`` (the total returned is the sum of both terms; each
    reaches only its own parameters), and after each step the weights are
    renormalised to sum to the number of tasks. Needs ``model.last_shared_parameters()``.
    """

    def __init__(self, tasks: Sequence[str], alpha: float = 1.5) -> None:
        super().__init__(tasks)
        self.alpha = float(alpha)
        self.w = nn.Parameter(torch.ones(len(self.task_names)))
        self.register_buffer("initial", torch.zeros(len(self.task_names)))

    def forward(self, losses: dict[str, torch.Tensor], model: nn.Module | None = None) -> torch.Tensor:
        L = torch.stack([losses[t] for t in self.task_names])
        if self.training and model is not None and torch.is_grad_enabled():
            shared = [p for p in model.last_shared_parameters() if p.requires_grad]
            if shared:
                if not bool((self.initial > 0).all()):
                    self.initial.copy_(L.detach().clamp_min(1e-8))
                norms = []
                for i in range(len(self.task_names)):
                    g = torch.autograd.grad(L[i], shared, retain_graph=True, allow_unused=True)
                    norms.append(torch.sqrt(sum((x.detach() ** 2).sum() for x in g if x is not None)))
                G = self.w * torch.stack(norms)
                ratio = L.detach() / self.initial
                target = (G.mean() * (ratio / ratio.mean()) ** self.alpha).detach()
                # GradNorm's own loss joins the total rather than setting w.grad here: its gradient
                # reaches w only (the norms and the target are detached), and it goes through the same
                # backward as every other gradient, so a mixed-precision loss scaler scales and
                # unscales it too (a gradient set here by hand was divided by the loss scale).
                return (self.w.detach() * L).sum() + (G - target).abs().sum()
        return (self.w.detach() * L).sum()

    @torch.no_grad()
    def after_step(self) -> None:
        self.w.clamp_(min=1e-3)
        self.w.mul_(len(self.task_names) / self.w.sum())

    def weights(self) -> dict[str, float]:
        return {t: float(self.w[i].detach()) for i, t in enumerate(self.task_names)}
