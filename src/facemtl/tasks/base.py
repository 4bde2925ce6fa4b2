"""The task interface: one object holds an attribute's head, loss, decoding and metrics.

Labels reach a task as a float tensor ``(N,)`` in label units (class index,
age in years ...) with ``NaN`` where a sample has no label; the task masks those
rows out of its loss and metrics, so datasets with different label sets mix.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..losses import labelled, zero_loss
from ..registry import Registry

TASK_TYPES: Registry["Task"] = Registry("task type")


@dataclass
class Task:
    """Base class. Subclasses are dataclasses whose fields are the task's settings.

    ``name`` keys the model's output dict; ``label`` names the data column it
    reads (defaults to ``name``).
    """

    name: str
    label: str | None = None

    kind: ClassVar[str] = ""
    #: "nominal" or "ordinal": which category-specific branch of the paper's Fig. 2 it joins.
    category: ClassVar[str] = "nominal"

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError("every task needs a non-empty 'name'")
        if self.label is None:
            self.label = self.name

    # -- network -------------------------------------------------------------
    def make_head(self, in_features: int) -> nn.Module:
        """Output layer mapping ``(N, in_features)`` to this task's raw outputs."""
        raise NotImplementedError

    # -- training ------------------------------------------------------------
    def loss(self, out: torch.Tensor, y: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Mean loss over the rows of ``y`` that carry a label (0 if none do).

        ``rows``: optionally the same mask ``(N,) bool``, already on the CPU. The trainer
        passes it so that a GPU step never waits for the device to say which rows are
        labelled (the usual case, every row labelled, then needs no indexing at all).
        """
        m = labelled(y) if rows is None else rows
        n = int(m.sum())
        if n == 0:
            return zero_loss(out)
        if n == len(m):
            return self._loss(out, y)
        idx = m.nonzero().squeeze(1).to(out.device, non_blocking=True)
        return self._loss(out.index_select(0, idx), y.index_select(0, idx))

    def _loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # -- inference -----------------------------------------------------------
    def predict(self, out: torch.Tensor) -> torch.Tensor:
        """Decoded prediction ``(N,)`` in label units."""
        raise NotImplementedError

    def probabilities(self, out: torch.Tensor) -> torch.Tensor | None:
        """Class probabilities ``(N, C)`` for classification tasks, else ``None``."""
        return None

    # -- evaluation ----------------------------------------------------------
    def metrics(self, pred: np.ndarray, true: np.ndarray) -> dict[str, Any]:
        """Metrics on labelled rows only (``true`` may hold NaN)."""
        raise NotImplementedError

    def baseline(self, train_true: np.ndarray) -> float:
        """The trivial prediction learned from training labels (majority class or median)."""
        raise NotImplementedError

    def skill(self, metrics: dict[str, Any], baseline_metrics: dict[str, Any]) -> float:
        """Unitless score, 0 for the trivial baseline and 1 for a perfect model.

        Used to pick the best epoch across heterogeneous tasks.
        """
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, **asdict(self)}


def build_task(spec: dict[str, Any]) -> Task:
    """Build a task from a config mapping ``{"name": ..., "type": ..., **settings}``."""
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind is None:
        raise ValueError(f"task {spec.get('name', '?')!r} has no 'type'; choose one of: {', '.join(TASK_TYPES.names())}")
    cls = TASK_TYPES.get(kind)
    try:
        return cls(**spec)
    except TypeError as exc:
        raise ValueError(f"task {spec.get('name', '?')!r} of type {kind!r}: {exc}") from None


def valid(true: np.ndarray) -> np.ndarray:
    return ~np.isnan(np.asarray(true, float))
