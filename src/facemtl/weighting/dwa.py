"""Dynamic Weight Average (Liu, Johns and Davison 2019, "End-to-End Multi-Task Learning with Attention")."""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from .base import WEIGHTINGS, Weighting


@WEIGHTINGS.register("dwa")
class DWA(Weighting):
    """``w_t(e) = T exp(r_t(e-1) / tau) / sum_k exp(r_k(e-1) / tau)``, ``r_t(e-1) = L_t(e-1) / L_t(e-2)``.

    ``L_t(e)`` is task t's mean training loss over epoch e; the first two epochs use
    ``w_t = 1``. Tasks whose loss falls slowly get more weight. ``tau`` = 2 as in the paper.
    A task with no mean loss in either epoch (NaN: no batch had a label of it) takes ``r_t = 1``,
    a loss that did not change (a user test: its 0.0 read as a loss gone to nothing).
    """

    def __init__(self, tasks: Sequence[str], temperature: float = 2.0) -> None:
        super().__init__(tasks)
        self.temperature = float(temperature)
        self.history: list[dict[str, float]] = []
        self.w = {t: 1.0 for t in self.task_names}

    def forward(self, losses: dict[str, torch.Tensor], model=None) -> torch.Tensor:
        return sum(self.w[t] * losses[t] for t in self.task_names)

    def weights(self) -> dict[str, float]:
        return dict(self.w)

    def epoch_end(self, mean_losses: dict[str, float]) -> None:
        self.history = (self.history + [dict(mean_losses)])[-2:]
        if len(self.history) < 2:
            return
        prev, last = self.history
        r = {t: last[t] / max(prev[t], 1e-12) if math.isfinite(last[t]) and math.isfinite(prev[t]) else 1.0
             for t in self.task_names}
        z = {t: math.exp(r[t] / self.temperature) for t in self.task_names}
        total = sum(z.values())
        self.w = {t: len(self.task_names) * z[t] / total for t in self.task_names}

    def extra_state(self) -> dict[str, Any]:
        return {"history": self.history, "w": self.w}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.history = state.get("history", [])
        self.w = state.get("w", self.w)
