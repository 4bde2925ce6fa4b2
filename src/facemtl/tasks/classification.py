"""Nominal (softmax cross-entropy, paper eq. 3) and binary (sigmoid BCE) tasks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..metrics import accuracy, confusion_matrix
from .base import TASK_TYPES, Task, valid


@dataclass
class _Classification(Task):
    num_classes: int = 2
    classes: list[str] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.classes is not None:
            self.classes = [str(c) for c in self.classes]
            if self.num_classes != len(self.classes):
                if self.num_classes == 2 and len(self.classes) != 2:
                    self.num_classes = len(self.classes)  # num_classes left at its default
                else:
                    raise ValueError(f"task {self.name!r}: {len(self.classes)} class names for {self.num_classes} classes")
        if self.num_classes < 2:
            raise ValueError(f"task {self.name!r} needs at least 2 classes")

    def class_names(self) -> list[str]:
        return self.classes or [str(i) for i in range(self.num_classes)]

    def metrics(self, pred: np.ndarray, true: np.ndarray) -> dict[str, Any]:
        m = valid(true)
        p, t = np.asarray(pred)[m].astype(int), np.asarray(true)[m].astype(int)
        cm = confusion_matrix(p, t, self.num_classes)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_class = np.diag(cm) / cm.sum(1)
        return {
            "accuracy": accuracy(p, t),
            "per_class_accuracy": {c: (None if np.isnan(a) else float(a)) for c, a in zip(self.class_names(), per_class)},
            "confusion": cm.tolist(),
            "n": int(m.sum()),
        }

    def baseline(self, train_true: np.ndarray) -> float:
        t = np.asarray(train_true)[valid(train_true)].astype(int)
        return float(np.bincount(t, minlength=self.num_classes).argmax()) if len(t) else 0.0

    def skill(self, metrics: dict[str, Any], baseline_metrics: dict[str, Any]) -> float:
        """Cohen-style skill: ``(acc - acc_majority) / (1 - acc_majority)``."""
        base = baseline_metrics["accuracy"]
        return (metrics["accuracy"] - base) / max(1e-6, 1.0 - base)


@TASK_TYPES.register("nominal")
@dataclass
class NominalTask(_Classification):
    """C-way softmax classifier; ``L = -1/N sum_i log softmax(z_i)[y_i]`` (paper eq. 3)."""

    kind: ClassVar[str] = "nominal"
    category: ClassVar[str] = "nominal"

    def make_head(self, in_features: int) -> nn.Module:
        return nn.Linear(in_features, self.num_classes)

    def _loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, y.long())

    def predict(self, out: torch.Tensor) -> torch.Tensor:
        return out.argmax(1).float()

    def probabilities(self, out: torch.Tensor) -> torch.Tensor:
        return out.softmax(1)


@TASK_TYPES.register("binary")
@dataclass
class BinaryTask(_Classification):
    """One sigmoid output; ``L = BCE(s(z), y)`` with y in {0, 1} (e.g. CelebA's Young)."""

    kind: ClassVar[str] = "binary"
    category: ClassVar[str] = "nominal"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_classes != 2:
            raise ValueError(f"binary task {self.name!r} has exactly 2 classes")

    def make_head(self, in_features: int) -> nn.Module:
        return nn.Linear(in_features, 1)

    def _loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(out[:, 0], y.float())

    def predict(self, out: torch.Tensor) -> torch.Tensor:
        return (out[:, 0] > 0).float()

    def probabilities(self, out: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(out[:, 0])
        return torch.stack([1 - p, p], 1)
