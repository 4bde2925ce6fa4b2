"""Feature distillation: regress a teacher network's feature vector (training only).

A face-recognition network trained on millions of faces knows much about the nominal
attributes (gender, ancestry) that a few thousand labelled faces cannot teach; regressing
its descriptor from the shared trunk moves that knowledge into our features (Hinton et
al. 2015 distil outputs; Romero et al. 2015, "FitNets", distil features). The task has
no output at inference: it is not exported, not in the analyze result, and not in the
score that picks the best epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .base import TASK_TYPES, MetricColumn, Task

if TYPE_CHECKING:
    import torch


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows of ``(N, D)`` arrays."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(den, 1e-12)


@TASK_TYPES.register("feature")
@dataclass
class FeatureTask(Task):
    """Regress the ``dim``-D vector in the label column (e.g. ``teacher``: dlib's descriptor).

    ``loss_fn``: ``cosine`` (``1 - cos(z, y)``, scale-free) or ``mse`` (on ``y`` as given).
    The data layer standardises the teacher's vectors with the training split's statistics
    (:func:`facemtl.data.dataset.standardise_teacher`), so the mean face scores zero.
    ``branch``: the paper's category branch the head reads (``nominal``: the one gender and
    race share, where the teacher's knowledge is wanted).
    Labels are ``(N, dim)``; a row with any NaN is a missing label.
    """

    label: str | None = "teacher"
    dim: int = 128
    loss_fn: str = "cosine"
    branch: str = "nominal"

    kind: ClassVar[str] = "feature"
    inference: ClassVar[bool] = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss_fn not in ("cosine", "mse"):
            raise ValueError(f"task {self.name!r}: loss_fn must be 'cosine' or 'mse'")
        if self.branch not in ("nominal", "ordinal"):
            raise ValueError(f"task {self.name!r}: branch must be 'nominal' or 'ordinal'")

    @property
    def category(self) -> str:  # type: ignore[override]
        return self.branch

    @property
    def output_size(self) -> int:
        return self.dim

    @property
    def label_width(self) -> int:
        return self.dim

    def _loss(self, out: "torch.Tensor", y: "torch.Tensor") -> "torch.Tensor":
        import torch.nn.functional as F

        if self.loss_fn == "cosine":
            return (1 - F.cosine_similarity(out, y.float(), dim=1)).mean()
        return F.mse_loss(out, y.float())

    def explain_score(self, out: "torch.Tensor") -> "torch.Tensor":
        return out.norm(dim=1)

    def predict(self, raw: np.ndarray) -> np.ndarray:
        """The predicted vector itself, ``(N, dim)``."""
        return np.asarray(raw, np.float32)

    def answers(self, raw: np.ndarray, interval: float = 0.8) -> list:
        raise RuntimeError(f"task {self.name!r} is training-only and gives no answers at inference")

    def metric_columns(self) -> list[MetricColumn]:
        return [MetricColumn("cosine", "cosine")]

    def summary(self, metrics: dict[str, Any]) -> str:
        return f"cos {metrics['cosine']:.3f}"

    def metrics(self, pred: np.ndarray, true: np.ndarray) -> dict[str, Any]:
        t = np.asarray(true, float).reshape(len(true), -1)
        ok = ~np.isnan(t).any(1)
        p = np.asarray(pred, float).reshape(len(pred), -1)
        cos = cosine_rows(p[ok], t[ok]) if ok.any() else np.zeros(0)
        return {"cosine": float(cos.mean()) if len(cos) else float("nan"),
                "mse": float(((p[ok] - t[ok]) ** 2).mean()) if ok.any() else float("nan"), "n": int(ok.sum())}

    def baseline(self, train_true: np.ndarray) -> list[float]:
        """The mean training vector (a list, so checkpoints stay plain data)."""
        t = np.asarray(train_true, float).reshape(len(train_true), -1)
        t = t[~np.isnan(t).any(1)]
        return (t.mean(0) if len(t) else np.zeros(self.dim)).tolist()

    def skill(self, metrics: dict[str, Any], baseline_metrics: dict[str, Any]) -> float:
        base = baseline_metrics["cosine"]
        return (metrics["cosine"] - base) / max(1e-6, 1.0 - base)

    def strata(self, values: np.ndarray) -> None:
        return None  # splits are not stratified on a vector

    def subgroups(self, values: np.ndarray) -> None:
        return None

    def sample_scores(self, pred: np.ndarray, true: np.ndarray) -> np.ndarray:
        t = np.asarray(true, float)
        s = cosine_rows(np.nan_to_num(pred), np.nan_to_num(t))
        return np.where(np.isnan(t).any(1), np.nan, s)

    def outcomes(self, pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = self.sample_scores(pred, true)
        return s >= 0.9, s <= 0.5
