"""Nominal (softmax cross-entropy, paper eq. 3) and binary (sigmoid BCE) tasks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np

from ..metrics import accuracy, confusion_matrix
from ..subgroups import wilson_interval
from .base import TASK_TYPES, MetricColumn, Task, sigmoid, softmax, some_values, valid

if TYPE_CHECKING:
    import torch

    from ..inference.results import TaskAnswer


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

    def check_recipe(self) -> None:
        """Text labels are read case aside and trimmed: two class names that read alike, or an
        empty one (an empty CSV cell reads as missing), would leave a class no label reaches."""
        if self.classes is None:
            return
        folded = [c.strip().casefold() for c in self.classes]
        if "" in folded:
            raise ValueError(f"task {self.name!r}: a class name is empty; name every class")
        twice = sorted({c for c in self.classes if folded.count(c.strip().casefold()) > 1})
        if twice:
            raise ValueError(f"task {self.name!r}: the class names {twice} read alike (labels are read case "
                             "aside); give each class its own name")

    def class_names(self) -> list[str]:
        return self.classes or [str(i) for i in range(self.num_classes)]

    def adopt_level_names(self, names: Sequence[str] | None) -> None:
        """Take the names the data gives the task's column (``data.columns``, a reader's own: CelebA's
        ``young``) as :attr:`classes` where the task names none and they name every class: a model
        trained so answered ``smiling 0`` and ``young 1`` (a user test), and answers the names now."""
        if self.classes is None and names and len(names) == self.num_classes:
            self.classes = [str(x).strip() for x in names]

    def label_classes(self) -> list[str] | None:
        """The names of ``classes``; ``None`` when the task names none (its labels are bare indices)."""
        return None if self.classes is None else list(self.classes)

    def text_labels_hint(self, column: str) -> str:
        """Text labels are read by class names: the task's, or the data's for the column."""
        return f"name its classes in the task (classes: [...]) or in data.columns.{column} to read text"

    def invalid_labels(self, values: np.ndarray) -> tuple[int, str]:
        """Labels must be class indices ``0..C-1``; any other is refused, since it would stop the
        loss mid-run (an index past the head's outputs), or the metrics after an epoch, or be
        learned as no class at all (a binary label of 3)."""
        v = np.asarray(values, float)
        v = v[~np.isnan(v)]
        bad = v[~np.isfinite(v) | (v != np.round(v)) | (v < 0) | (v >= self.num_classes)]
        if len(bad):
            names = f" ({', '.join(self.classes)})" if self.classes else ""
            raise ValueError(f"task {self.name!r} has {self.num_classes} classes{names}, so the labels of its column "
                             f"{self.label!r} must be class indices 0..{self.num_classes - 1}, but {len(bad)} "
                             f"row(s) hold {some_values(bad)} (fix those rows, or the task's classes)")
        return 0, ""

    def unlearned(self, train_labels: np.ndarray) -> str | None:
        """Classes no training face has: the head learns nothing of them, and their probability
        is what the others leave (a user test: a class 'pacific' that never appeared passed
        without a word)."""
        v = np.asarray(train_labels, float)
        seen = set(v[~np.isnan(v)].astype(int).tolist())
        none = [n for k, n in enumerate(self.class_names()) if k not in seen]
        if not none:
            return None
        return (f"task {self.name!r}: no training face has the class(es) {', '.join(none)}; the model cannot learn "
                "them and will rarely answer them (give it faces of them, or leave them out of the task's classes)")

    def metric_columns(self) -> list[MetricColumn]:
        return [MetricColumn("accuracy", "acc.", percent=True)]

    def summary(self, metrics: dict[str, Any]) -> str:
        return f"acc {metrics['accuracy']:.3f}"

    def metrics_text(self, metrics: dict[str, Any]) -> str:
        lo, hi = metrics.get("accuracy_interval") or (float("nan"), float("nan"))  # (saved before: none)
        ci = f", 95% interval {lo:.4f}-{hi:.4f}" if lo == lo else ""
        return (f"accuracy {metrics['accuracy']:.4f} (majority baseline {metrics['baseline']['accuracy']:.4f}, "
                f"n={metrics['n']}{ci})")

    def answers(self, raw: np.ndarray, interval: float = 0.8) -> list["TaskAnswer"]:
        return self._answers(self.predict(raw), self.probabilities(raw))

    def answers_from_probabilities(self, prob: np.ndarray) -> list["TaskAnswer"]:
        """Answers from class probabilities ``(N, C)`` obtained otherwise (e.g. the network's
        mixed with another model's, :mod:`facemtl.inference.fusion`): the most probable class."""
        return self._answers(np.asarray(prob).argmax(1), np.asarray(prob))

    def _answers(self, pred: np.ndarray, prob: np.ndarray) -> list["TaskAnswer"]:
        from ..inference.results import TaskAnswer

        names = self.class_names()
        out = []
        for j in range(len(pred)):
            k = int(pred[j])
            out.append(TaskAnswer(names[k], float(prob[j, k]), {c: float(v) for c, v in zip(names, prob[j])}))
        return out

    def metrics(self, pred: np.ndarray, true: np.ndarray) -> dict[str, Any]:
        m = valid(true)
        p, t = np.asarray(pred)[m].astype(int), np.asarray(true)[m].astype(int)
        cm = confusion_matrix(p, t, self.num_classes)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_class = np.diag(cm) / cm.sum(1)
        hits = int((p == t).sum())
        return {
            "accuracy": accuracy(p, t),
            # 95 % Wilson interval: what the accuracy on these faces says of the model's (a user test:
            # evaluate gave 64.0 % on 200 faces with nothing to tell it from 57 % or 70 %)
            "accuracy_interval": list(wilson_interval(hits, int(m.sum()))),
            "per_class_accuracy": {c: (None if np.isnan(a) else float(a)) for c, a in zip(self.class_names(), per_class)},
            "confusion": cm.tolist(),
            "n": int(m.sum()),
        }

    def baseline(self, train_true: np.ndarray) -> float:
        t = np.asarray(train_true)[valid(train_true)].astype(int)
        return float(np.bincount(t, minlength=self.num_classes).argmax()) if len(t) else 0.0

    def skill(self, metrics: dict[str, Any], baseline_metrics: dict[str, Any]) -> float:
        """Cohen-style skill: ``(acc - acc_majority) / (1 - acc_majority)``; NaN (undefined) when
        the majority class is right on every face scored, as on a split of one face."""
        base = baseline_metrics["accuracy"]
        if base >= 1.0 - 1e-9:
            return float("nan")
        return (metrics["accuracy"] - base) / (1.0 - base)

    def subgroups(self, values: np.ndarray) -> np.ndarray | None:
        """The class names; ``None`` past 10 classes (cells would be too many to read)."""
        return super().subgroups(values) if self.num_classes <= 10 else None

    def confusion(self, pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, list[str]]:
        m = valid(true)
        return confusion_matrix(np.asarray(pred)[m].astype(int), np.asarray(true)[m].astype(int),
                                self.num_classes), self.class_names()

    def sample_scores(self, pred: np.ndarray, true: np.ndarray) -> np.ndarray:
        t = np.asarray(true, float)
        return np.where(np.isnan(t), np.nan, (np.asarray(pred, float) == t).astype(float))

    def outcomes(self, pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ok = valid(true)
        right = np.asarray(pred) == np.nan_to_num(true, nan=-1)
        return ok & right, ok & ~right


@TASK_TYPES.register("nominal")
@dataclass
class NominalTask(_Classification):
    """C-way softmax classifier; ``L = -1/N sum_i log softmax(z_i)[y_i]`` (paper eq. 3)."""

    kind: ClassVar[str] = "nominal"
    category: ClassVar[str] = "nominal"

    @property
    def output_size(self) -> int:
        return self.num_classes

    def _loss(self, out: "torch.Tensor", y: "torch.Tensor") -> "torch.Tensor":
        import torch.nn.functional as F

        return F.cross_entropy(out, y.long())

    def explain_score(self, out: "torch.Tensor") -> "torch.Tensor":
        """The logit of the predicted class."""
        return out.gather(1, out.detach().argmax(1, keepdim=True)).squeeze(1)

    def predict(self, raw: np.ndarray) -> np.ndarray:
        return np.asarray(raw).argmax(1).astype(np.float32)

    def probabilities(self, raw: np.ndarray) -> np.ndarray:
        return softmax(raw, 1)

    def soft_targets(self, raw: np.ndarray) -> np.ndarray:
        """The class probabilities ``(N, C)`` (a ``soft`` task's targets)."""
        return self.probabilities(raw)

    def raw_from_soft_targets(self, q: np.ndarray) -> np.ndarray:
        return np.log(np.clip(np.asarray(q, np.float64), 1e-12, None))  # softmax(log q) = q


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

    @property
    def output_size(self) -> int:
        return 1

    def adopt_level_names(self, names: Sequence[str] | None) -> None:
        """As a class task does; where neither the recipe nor the data names its two values, it
        answers ``not <name>`` / ``<name>`` for 0 / 1, as CelebA's attributes do (a user test: a
        CSV's 0 / 1 column of a task ``smiling`` answered "smiling 0")."""
        super().adopt_level_names(names)
        if self.classes is None:
            self.classes = [f"not {self.name}", self.name]

    def _loss(self, out: "torch.Tensor", y: "torch.Tensor") -> "torch.Tensor":
        import torch.nn.functional as F

        return F.binary_cross_entropy_with_logits(out[:, 0], y.float())

    def explain_score(self, out: "torch.Tensor") -> "torch.Tensor":
        """The logit, sign-flipped for a predicted negative class (evidence for the decision made)."""
        import torch

        s = out[:, 0]
        return torch.where(s.detach() >= 0, s, -s)

    def predict(self, raw: np.ndarray) -> np.ndarray:
        return (np.asarray(raw)[:, 0] > 0).astype(np.float32)

    def probabilities(self, raw: np.ndarray) -> np.ndarray:
        p = sigmoid(np.asarray(raw)[:, 0])
        return np.stack([1 - p, p], 1)
