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
            glued = [k for k in unknown if ":" in str(k)]  # YAML reads "age:0.5" as one key
            raise ValueError(f"weights given for unknown tasks: {', '.join(sorted(map(str, unknown)))}"
                             + (f" (YAML needs a space after the colon: {glued[0].split(':')[0]}: "
                                f"{glued[0].split(':', 1)[1]})" if glued else ""))
        self.w = {t: float(weights.get(t, 1.0)) for t in tasks}
        negative = {t: w for t, w in self.w.items() if not w >= 0}
        if negative:  # a negative weight maximises the task's loss
            raise ValueError("fixed weights must be zero or more, not " + ", ".join(f"{t}: {w:g}"
                                                                                   for t, w in negative.items()))

    def forward(self, losses: dict[str, torch.Tensor], model=None) -> torch.Tensor:
        return sum(self.w[t] * losses[t] for t in self.task_names)

    def weights(self) -> dict[str, float]:
        return dict(self.w)


@WEIGHTINGS.register("equal")
class Equal(Fixed):
    """``total = sum_t L_t``."""

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__(tasks)
