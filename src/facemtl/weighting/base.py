"""The loss-weighting interface: turn ``{task: loss}`` into one total, report the weights.

A weighting is an ``nn.Module`` (it may own learnable parameters, which the
trainer hands to the optimiser without weight decay). The trainer calls only:

* ``total = weighting(losses, model)``: the scalar to back-propagate;
* ``weighting.weights()``: the effective weight of each task, for the logs;
* ``weighting.after_step()`` and ``weighting.epoch_end(mean_losses)``: hooks that
  some methods need (renormalising, epoch-level statistics); no-ops by default.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ..registry import Registry

WEIGHTINGS: Registry["Weighting"] = Registry("loss weighting")


class Weighting(nn.Module):
    def __init__(self, tasks: Sequence[str], **_: Any) -> None:
        super().__init__()
        self.task_names = list(tasks)

    def forward(self, losses: dict[str, torch.Tensor], model: nn.Module | None = None) -> torch.Tensor:
        raise NotImplementedError

    def weights(self) -> dict[str, float]:
        raise NotImplementedError

    def after_step(self) -> None:
        pass

    def epoch_end(self, mean_losses: dict[str, float]) -> None:
        pass

    def extra_state(self) -> dict[str, Any]:
        """Plain-Python state that is not a tensor (saved in checkpoints)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass


def build_weighting(name: str, tasks: Sequence[str], params: dict[str, Any] | None = None) -> Weighting:
    try:
        return WEIGHTINGS.get(name)(tasks, **(params or {}))
    except TypeError as exc:
        raise ValueError(f"loss weighting {name!r}: {exc}") from None
