"""Soft targets from a teacher head (training only): knowledge distillation into a nominal task.

A multinomial logistic regression fitted on the teacher's feature vectors (dlib's face
descriptor) of the training faces gives, per face, a probability vector ``q (C,)`` over a
nominal task's classes. Those soft targets tell the student how alike the classes look
to a network that has seen millions of faces, which hard labels cannot (Hinton, Vinyals
and Dean 2015, "Distilling the knowledge in a neural network"):

    L_soft = -T^2 / N * sum_i sum_c q_ic^(T) log softmax(z_i / T)_c

with ``z`` the taught task's own logits (``of``: the task shares that head, it has none of
its own) and ``q^(T)`` the teacher's probabilities softened by the temperature ``T``
(``q^(1/T)`` renormalised; ``T = 1`` leaves them as fitted). The hard-label loss of the
taught task stays; the weighting weighs the two as any pair of tasks.

The soft targets of training faces are **out of fold**: the training rows are cut into
``folds`` parts and each part's probabilities come from a head fitted on the others, so a
face's target never comes from a teacher that saw its own label (a head scored on its own
training faces is over-confident). Validation and test faces get the head fitted on all
training faces. The fit starts from zero (no random numbers), so adding this task leaves
every other task's training as it was.

Given targets: with ``features: null`` the task fits no head and reads its probabilities from
its label column as given, e.g. ``target_gender`` from ``data.targets`` (a file of another
model's answers: ``scripts/ensemble_targets.py`` writes the accurate variant's, an ensemble
taught to one network as Hinton et al. did). :class:`SoftThresholdTask` does the same for an
ordinal head's threshold probabilities ``P(value > r_k)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .base import TASK_TYPES, MetricColumn, Task, sigmoid

if TYPE_CHECKING:
    import torch


@dataclass
class _TeachingTask(Task):
    """What every soft-target task shares: it trains the head of the task ``of`` (it has none of
    its own), with a ``temperature`` ``T``, at training only, on targets ``(N, D)`` made or read
    once the split is known (so no strata, no subgroups, no answers)."""

    of: str = ""
    temperature: float = 1.0

    inference: ClassVar[bool] = False
    derives_label: ClassVar[bool] = True
    #: What the task named by ``of`` must be, for the error that names it.
    teaches: ClassVar[str] = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.of:
            raise ValueError(f"task {self.name!r} needs 'of': the {self.teaches} task whose head it teaches")
        if self.temperature <= 0:
            raise ValueError(f"task {self.name!r}: temperature must be positive")

    @property
    def output_of(self) -> str | None:  # type: ignore[override]
        return self.of

    @classmethod
    def head_named(cls, spec: dict[str, Any]) -> str | None:
        return spec.get("of")

    @property
    def output_size(self) -> int:
        return self.label_width

    def answers(self, raw: np.ndarray, interval: float = 0.8) -> list:
        raise RuntimeError(f"task {self.name!r} is training-only and gives no answers at inference")

    def baseline(self, train_true: np.ndarray) -> list[float]:
        """The mean target vector of the training faces with one (:meth:`_no_target` without any)."""
        t = np.asarray(train_true, float).reshape(len(train_true), -1)
        t = t[~np.isnan(t).any(1)]
        return (t.mean(0) if len(t) else self._no_target()).tolist()

    def _no_target(self) -> np.ndarray:
        raise NotImplementedError

    def strata(self, values: np.ndarray) -> None:
        return None  # made after the split, from it

    def subgroups(self, values: np.ndarray) -> None:
        return None


@TASK_TYPES.register("soft")
@dataclass
class SoftTargetTask(_TeachingTask):
    """Teach the nominal task ``of`` (``num_classes`` classes, left out in a recipe: ``of``'s; hard
    labels in the column ``source``, default ``of``) the class probabilities of a logistic head fitted on the vectors in
    ``features`` (default ``teacher``, the column ``data.teacher`` fills).

    ``label``: the column the soft targets are written to (default: the task's name), or, with
    ``features: null``, read from as given (no head is fitted: e.g. ``target_gender``);
    ``l2``: the head's L2 strength; ``temperature``: ``T`` above; ``folds``: see the module
    docstring. Labels are ``(N, num_classes)``; a face without a descriptor has none.
    """

    num_classes: int = 2
    source: str | None = None
    features: str | None = "teacher"
    l2: float = 1e-3
    folds: int = 5

    width_setting: ClassVar[str | None] = "num_classes"  # (left out: the taught head's classes)
    kind: ClassVar[str] = "soft"
    teaches: ClassVar[str] = "nominal"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.source is None:
            self.source = self.of
        if self.num_classes < 2:
            raise ValueError(f"task {self.name!r} needs at least 2 classes")
        if self.folds < 2:
            raise ValueError(f"task {self.name!r}: folds must be at least 2")
        if self.label in (self.source, self.features):
            raise ValueError(f"task {self.name!r} would write its soft targets over the column {self.label!r} it reads")

    @property
    def label_width(self) -> int:
        return self.num_classes

    # -- the soft targets --------------------------------------------------------
    def derive_labels(self, labels: dict[str, np.ndarray], train: np.ndarray, seed: int,
                      report: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
        """``{label: (N, C) teacher probabilities}`` (see the module docstring); NaN rows where a face
        has no feature vector, or the teacher had no labelled training face to learn from.

        ``report[name]`` gets the teacher head's accuracy against the hard labels: out of fold on
        the training faces, and on the faces outside the training split."""
        from ..logistic import fit_logistic, logistic_probabilities

        if self.features is None:  # given targets: read as they are
            return _given(self, labels, self.num_classes)
        for col in (self.features, self.source):
            if col not in labels:
                raise ValueError(f"task {self.name!r} reads the column {col!r}, which this data does not have"
                                 + ("; set data.teacher" if col == self.features else ""))
        x = np.asarray(labels[self.features], np.float32).reshape(len(train), -1)
        y = np.asarray(labels[self.source], float)
        has_x = ~np.isnan(x).any(1)
        known = y[~np.isnan(y)]
        if len(known) and (known.min() < 0 or known.max() >= self.num_classes or (known != np.round(known)).any()):
            raise ValueError(f"task {self.name!r}: the column {self.source!r} holds values other than class indices "
                             f"0..{self.num_classes - 1} (soft targets are for a nominal task; check num_classes)")
        fit = np.flatnonzero(train & has_x & ~np.isnan(y))
        out = np.full((len(train), self.num_classes), np.nan, np.float32)
        if len(fit) == 0:
            return {str(self.label): out}
        w, b = fit_logistic(x[fit], y[fit], self.num_classes, self.l2)
        rest = np.flatnonzero(~train & has_x)
        out[rest] = logistic_probabilities(x[rest], w, b)
        # out of fold for the training faces (a separate generator: the global one stays untouched)
        fold = np.random.default_rng(seed).permutation(len(fit)) % self.folds
        for k in range(self.folds):
            held, rest_k = fit[fold == k], fit[fold != k]
            wk, bk = fit_logistic(x[rest_k], y[rest_k], self.num_classes, self.l2)
            out[held] = logistic_probabilities(x[held], wk, bk)
        # training faces with a vector but no hard label: the head fitted on all
        unlabelled = np.flatnonzero(train & has_x & np.isnan(y))
        out[unlabelled] = logistic_probabilities(x[unlabelled], w, b)
        if report is not None:
            held = ~train & has_x & ~np.isnan(y)
            report[self.name] = {
                "teacher_head_accuracy_train_out_of_fold": float((out[fit].argmax(1) == y[fit]).mean()),
                "teacher_head_accuracy_outside_train": float((out[held].argmax(1) == y[held]).mean()) if held.any()
                else None,
                "faces_with_targets": int((~np.isnan(out).any(1)).sum()), "l2": self.l2, "folds": self.folds}
        return {str(self.label): out}

    def soften(self, q: "torch.Tensor") -> "torch.Tensor":
        """``q^(1/T)`` renormalised over the classes (``q`` unchanged at ``T = 1``)."""
        if self.temperature == 1.0:
            return q
        p = q.clamp_min(1e-12).pow(1.0 / self.temperature)
        return p / p.sum(1, keepdim=True)

    def _loss(self, out: "torch.Tensor", y: "torch.Tensor") -> "torch.Tensor":
        import torch.nn.functional as F

        t = self.temperature
        q = self.soften(y.float())
        return -(q * F.log_softmax(out / t, 1)).sum(1).mean() * t * t

    def explain_score(self, out: "torch.Tensor") -> "torch.Tensor":
        return out.gather(1, out.detach().argmax(1, keepdim=True)).squeeze(1)

    # -- evaluation: how often the student agrees with its teacher -------------------
    def predict(self, raw: np.ndarray) -> np.ndarray:
        return np.asarray(raw).argmax(1).astype(np.float32)

    def metric_columns(self) -> list[MetricColumn]:
        return [MetricColumn("agreement", "agrees", percent=True)]

    def summary(self, metrics: dict[str, Any]) -> str:
        return f"agrees {metrics['agreement']:.3f}"

    def metrics(self, pred: np.ndarray, true: np.ndarray) -> dict[str, Any]:
        """``agreement``: share of faces whose predicted class is the teacher's most probable one.

        ``pred``: ``(N,)`` predicted classes, or ``(N, C)`` class scores (e.g. the baseline's mean
        probability vector, broadcast), whose most probable class is taken."""
        t = np.asarray(true, float).reshape(len(true), -1)
        ok = ~np.isnan(t).any(1)
        p = np.asarray(pred)
        p = p.argmax(1) if p.ndim == 2 else p
        agree = p[ok] == t[ok].argmax(1)
        return {"agreement": float(agree.mean()) if ok.any() else float("nan"), "n": int(ok.sum())}

    def _no_target(self) -> np.ndarray:
        """Uniform: the baseline (:meth:`baseline`, the mean teacher probability vector) is the
        trivial answer :meth:`metrics` scores through its most probable class."""
        return np.full(self.num_classes, 1.0 / self.num_classes)

    def skill(self, metrics: dict[str, Any], baseline_metrics: dict[str, Any]) -> float:
        base = baseline_metrics["agreement"]
        return float("nan") if base >= 1.0 - 1e-9 else (metrics["agreement"] - base) / (1.0 - base)

    def sample_scores(self, pred: np.ndarray, true: np.ndarray) -> np.ndarray:
        t = np.asarray(true, float)
        return np.where(np.isnan(t).any(1), np.nan, (np.asarray(pred) == np.nan_to_num(t).argmax(1)).astype(float))

    def outcomes(self, pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = self.sample_scores(pred, true)
        return s == 1.0, s == 0.0



def _given(task: Task, labels: dict[str, np.ndarray], width: int) -> dict[str, np.ndarray]:
    """Nothing to derive: check that ``task``'s given target column is there, with ``width``
    probabilities (0..1) per face."""
    col = labels.get(str(task.label))
    if col is None:
        raise ValueError(f"task {task.name!r} reads its targets as given from the column {task.label!r}, which this "
                         f"data does not have (set data.targets to a target file with that column)")
    q = np.asarray(col, float).reshape(len(col), -1)
    if q.shape[1] != width:
        raise ValueError(f"task {task.name!r} expects {width} target values per face; {task.label!r} has {q.shape[1]}")
    known = q[~np.isnan(q)]
    if len(known) and (known.min() < 0 or known.max() > 1):
        raise ValueError(f"task {task.name!r}: the column {task.label!r} holds values outside 0..1; soft targets "
                         f"are probabilities (not logits)")
    return {}


@TASK_TYPES.register("soft_ordinal")
@dataclass
class SoftThresholdTask(_TeachingTask):
    """Teach an ordinal task's head (``of``; ``method: binary`` or ``coral``, whose ``K-1`` outputs
    are the logits of ``P(value > r_k)``) a teacher's threshold probabilities ``q (N, K-1)``,
    read as given from the column ``label`` (e.g. ``target_age`` from ``data.targets``):

        L = -T^2 / N * sum_i sum_k [q_ik log s(z_ik / T) + (1 - q_ik) log(1 - s(z_ik / T))]

    with ``s`` the logistic function, ``z`` the taught head's logits and ``q`` softened as
    ``s(logit(q) / T)`` (unchanged at ``T = 1``): the binary cross-entropy of the ordinal loss
    (paper eq. 7, summed over the thresholds) with soft labels in place of "label > r_k".
    ``width``: ``K-1`` (left out in a recipe: the taught head's). Training only; it scores how far the student's threshold-decoded rank
    (``sum [s(z_k) > 0.5]``) lies from the teacher's (``sum [q_k > 0.5]``), in ranks (years).
    """

    width: int = 1

    width_setting: ClassVar[str | None] = "width"  # (left out: the taught head's K-1 outputs)
    kind: ClassVar[str] = "soft_ordinal"
    category: ClassVar[str] = "ordinal"
    subgroup_metric: ClassVar[str] = "mae"
    teaches: ClassVar[str] = "ordinal"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.width < 2:  # one threshold is a binary task; its labels would be (N,), not (N, K-1)
            raise ValueError(f"task {self.name!r}: width (the taught head's K-1 outputs) must be at least 2")

    def check_head(self, head: Task) -> None:
        """The taught head's outputs must be the logits of ``P(value > r_k)``: an ordinal head of
        ``method`` ``binary`` or ``coral`` (``corn``'s are conditional, ``softmax``'s per rank)."""
        if getattr(head, "method", None) not in ("binary", "coral"):
            raise ValueError(f"task {self.name!r} teaches threshold probabilities, but the head of {head.name!r} is "
                             f"not an ordinal head of method binary or coral")

    def hand_weight(self) -> float:
        """``1 / width``: the loss sums ``width`` binary terms, as the taught ordinal task's does."""
        return round(1.0 / self.width, 6)

    @property
    def label_width(self) -> int:
        return self.width

    def derive_labels(self, labels: dict[str, np.ndarray], train: np.ndarray, seed: int,
                      report: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
        return _given(self, labels, self.width)

    def _loss(self, out: "torch.Tensor", y: "torch.Tensor") -> "torch.Tensor":
        import torch
        import torch.nn.functional as F

        t = self.temperature
        q = y.float()
        if t != 1.0:
            q = torch.sigmoid(torch.logit(q.clamp(1e-6, 1 - 1e-6)) / t)
        return F.binary_cross_entropy_with_logits(out / t, q, reduction="none").sum(1).mean() * t * t

    def explain_score(self, out: "torch.Tensor") -> "torch.Tensor":
        """Each threshold's logit signed by its decision, summed (as :meth:`NumericTask.explain_score`)."""
        return (out * out.detach().sign()).sum(1)

    @staticmethod
    def _ranks(p: np.ndarray) -> np.ndarray:
        return (np.asarray(p, float) > 0.5).sum(1).astype(np.float32)

    def predict(self, raw: np.ndarray) -> np.ndarray:
        """The threshold-decoded rank ``sum [s(z_k) > 0.5]``, ``(N,)``."""
        return self._ranks(sigmoid(raw))

    def metric_columns(self) -> list[MetricColumn]:
        return [MetricColumn("rank_gap", "ranks from teacher", lower_is_better=True)]

    def summary(self, metrics: dict[str, Any]) -> str:
        return f"{metrics['rank_gap']:.2f} from teacher"

    def metrics(self, pred: np.ndarray, true: np.ndarray) -> dict[str, Any]:
        """``rank_gap``: mean ``|student rank - teacher rank|`` over faces with targets.

        ``pred``: ``(N,)`` ranks, or ``(N, K-1)`` threshold probabilities (e.g. the baseline's
        mean vector, broadcast), decoded as the teacher's are."""
        t = np.asarray(true, float).reshape(len(true), -1)
        ok = ~np.isnan(t).any(1)
        p = np.asarray(pred, float)
        p = self._ranks(p) if p.ndim == 2 else p
        gap = np.abs(p[ok] - self._ranks(t[ok]))
        return {"rank_gap": float(gap.mean()) if ok.any() else float("nan"), "n": int(ok.sum())}

    def _no_target(self) -> np.ndarray:
        return np.full(self.width, 0.5)

    def skill(self, metrics: dict[str, Any], baseline_metrics: dict[str, Any]) -> float:
        base = baseline_metrics["rank_gap"]
        return float("nan") if base <= 1e-9 else 1.0 - metrics["rank_gap"] / base

    def sample_scores(self, pred: np.ndarray, true: np.ndarray) -> np.ndarray:
        t = np.asarray(true, float)
        gap = np.abs(np.asarray(pred, float) - self._ranks(np.nan_to_num(t)))
        return np.where(np.isnan(t).any(1), np.nan, gap)

    def outcomes(self, pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = self.sample_scores(pred, true)
        return s <= 2, s >= 10
