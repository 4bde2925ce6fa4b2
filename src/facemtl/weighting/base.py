"""The loss-weighting interface: turn ``{task: loss}`` into one total, report the weights.

A weighting is an ``nn.Module`` (it may own learnable parameters, which the
trainer hands to the optimiser without weight decay). The trainer calls only:

* ``total = weighting(losses, model)``: the scalar to back-propagate, a 0-dim tensor
  (``losses``: ``{task: 0-dim tensor}``, each task's mean loss over the batch);
* ``weighting.weights()``: the effective weight of each task, for the logs (required:
  every epoch's record holds them);
* ``weighting.after_step()`` and ``weighting.epoch_end(mean_losses)``: hooks that
  some methods need (renormalising, epoch-level statistics); no-ops by default.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch
from torch import nn

from ..registry import Registry

WEIGHTINGS: Registry["Weighting"] = Registry("loss weighting")


class Weighting(nn.Module):
    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__()
        self.task_names = list(tasks)

    def forward(self, losses: dict[str, torch.Tensor], model: nn.Module | None = None) -> torch.Tensor:
        raise NotImplementedError

    def weights(self) -> dict[str, float]:
        raise NotImplementedError

    def normalised(self) -> dict[str, float] | None:
        """Weights normalised to sum 1 where the method defines them (the paper's eq. 16), else ``None``."""
        return None

    def after_step(self) -> None:
        pass

    def epoch_end(self, mean_losses: dict[str, float]) -> None:
        """After each epoch: each task's mean training loss over the epoch's batches with a label of
        it, NaN for a task that had none (every process's, under torchrun)."""

    def extra_state(self) -> dict[str, Any]:
        """Plain-Python state that is not a tensor (saved in checkpoints)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass


def build_weighting(name: str, tasks: Sequence[str], params: dict[str, Any] | None = None) -> Weighting:
    """The weighting registered as ``name`` with its settings ``params``.

    A setting the method does not take is refused in one sentence (a misspelt one would
    otherwise be ignored without a word).
    """
    cls = WEIGHTINGS.get(name)
    params = dict(params or {})
    takes = [p for p in inspect.signature(cls).parameters if p != "tasks"]
    unknown = sorted(set(params) - set(takes))
    if unknown:
        raise ValueError(f"loss weighting {name!r} has no setting {unknown[0]!r}; it takes: "
                         f"{', '.join(takes) if takes else 'no settings'}")
    try:
        built = cls(tasks, **params)
    except TypeError as exc:
        raise ValueError(f"loss weighting {name!r}: {exc}") from None
    if not isinstance(built, nn.Module):
        raise ValueError(f"loss weighting {name!r} was built as an object of type {type(built).__qualname__}; a "
                         "weighting is a torch nn.Module (subclass facemtl.weighting.Weighting)")
    return built
