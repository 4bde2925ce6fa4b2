"""Steady answers: each track's attributes aggregated over its frames, weighted by face quality.

A single frame's estimate flickers with blur, pose, light and size; a person's age or
gender does not. Each analysed face of a track becomes a *sample*: the frame's own answers
and a quality weight in (0, 1] (:func:`face_quality`). The track's answer is then

* for a classification task (the answer carries class probabilities): the weighted sum of
  the samples' probabilities, normalised; the class is its arg-max;
* for a numeric task (age): the weighted median of the samples' values (or the weighted
  mean, ``numeric="mean"``); its interval is the weighted median of the samples' bounds;
  both are written with the samples' digits (their ``decimals``, which the task sets).

The rule is read from the answers themselves (``probabilities`` present or not), so a task
type a user registers is smoothed without asking its type.

History is bounded: a track keeps at most ``history`` samples, the heaviest ones (a new
sample replaces the lightest when it weighs more), so a day-long track holds the same
memory as a short one. MiVOLO's demo smooths age per track with a winsorised mean but
keeps every frame; this keeps the best frames instead.

The track's ``confidence`` says how much good evidence its answers rest on:
``W / (W + 1)`` where ``W`` is the summed quality of every sample it has had (one perfect
frame gives 0.5, four give 0.8, nine 0.9).
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..inference.results import TaskAnswer, whole_number


@dataclass(frozen=True)
class QualitySettings:
    """How a face's quality weight is made (each factor in (0, 1], the weight is their product).

    ``full_side``: detector box side in pixels from which size no longer adds weight
    (``min(1, side / full_side)``). ``blur_ref``: variance of the Laplacian of the aligned
    grey crop at which the blur factor is one half (``v / (v + blur_ref)``). The detection
    score's factor is ``min(1, score / sure_score)`` (the detector's sure score).
    """

    full_side: float = 80.0
    blur_ref: float = 50.0
    floor: float = 1e-3


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the grey ``crop (S, S, 3) uint8``: low when blurred (Pech-Pacheco et al. 2000)."""
    import cv2

    grey = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def face_quality(box: Sequence[float], score: float | None, crop: np.ndarray, sure_score: float,
                 settings: QualitySettings = QualitySettings()) -> float:
    """Quality weight in ``[floor, 1]`` of one detected face: size x detection score x sharpness."""
    side = min(box[2] - box[0], box[3] - box[1])
    size = min(1.0, max(side, 0.0) / settings.full_side)
    conf = 1.0 if score is None else min(1.0, max(float(score), 0.0) / sure_score)
    v = sharpness(crop)
    blur = v / (v + settings.blur_ref)
    return max(settings.floor, size * conf * blur)


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The value at which the cumulative weight first reaches half the total (lower weighted median)."""
    order = np.argsort(values, kind="stable")
    v, w = np.asarray(values, float)[order], np.asarray(weights, float)[order]
    c = np.cumsum(w)
    return float(v[np.searchsorted(c, 0.5 * c[-1])])


class TrackSmoother:
    """A track's samples (at most ``history``, the heaviest) and their aggregate answers.

    ``numeric``: ``median`` or ``mean`` for numeric answers. ``levels``: per task whose ranks
    have names, what names an aggregate value (:meth:`Task.describe_prediction`), so a track's
    answer carries its level as each face's does.
    """

    def __init__(self, history: int = 64, numeric: str = "median",
                 levels: dict[str, Callable[[float], str]] | None = None) -> None:
        if history < 1:
            raise ValueError(f"history must be at least 1 sample, not {history}")
        if numeric not in ("median", "mean"):
            raise ValueError(f"numeric smoothing must be 'median' or 'mean', not {numeric!r}")
        self.history = history
        self.numeric = numeric
        self.levels = levels or {}
        #: min-heap of (weight, order, answers): the lightest sample on top.
        self._heap: list[tuple[float, int, dict[str, TaskAnswer]]] = []
        self._order = itertools.count()
        self.total_weight = 0.0
        self.count = 0
        self._cache: dict[str, TaskAnswer] | None = None

    def __len__(self) -> int:
        return len(self._heap)

    def wants(self, weight: float, queued: int = 0) -> bool:
        """Whether a sample of quality ``weight`` would be kept (so is worth the network):
        the history is not full (counting ``queued`` samples on their way), or it outweighs
        the lightest sample kept."""
        return len(self._heap) + queued < self.history or (bool(self._heap) and weight > self._heap[0][0])

    def add(self, answers: dict[str, TaskAnswer], weight: float) -> None:
        """One analysed face of the track with its quality ``weight`` (> 0)."""
        item = (float(weight), next(self._order), answers)
        self.total_weight += float(weight)
        self.count += 1
        self._cache = None
        if len(self._heap) < self.history:
            heapq.heappush(self._heap, item)
        elif item[0] > self._heap[0][0]:
            heapq.heapreplace(self._heap, item)

    @property
    def confidence(self) -> float:
        """``W / (W + 1)`` with ``W`` the summed quality of all samples so far (0 with none)."""
        return self.total_weight / (self.total_weight + 1.0)

    def answers(self) -> dict[str, TaskAnswer]:
        """The aggregate answer per task (empty before the first sample)."""
        if self._cache is None:
            self._cache = self._aggregate()
        return self._cache

    def _aggregate(self) -> dict[str, TaskAnswer]:
        if not self._heap:
            return {}
        w = np.array([s[0] for s in self._heap])
        samples = [s[2] for s in self._heap]
        out: dict[str, TaskAnswer] = {}
        for name, first in samples[0].items():
            if first.probabilities is not None:
                out[name] = _classes([s[name] for s in samples], w)
            else:
                out[name] = self._number([s[name] for s in samples], w, self.levels.get(name))
        return out

    def _number(self, answers: list[TaskAnswer], w: np.ndarray,
                level: Callable[[float], str] | None = None) -> TaskAnswer:
        values = np.array([float(a.value) for a in answers])
        value = weighted_median(values, w) if self.numeric == "median" else float(np.average(values, weights=w))
        interval = None
        if all(a.interval is not None for a in answers):
            lo = np.array([a.interval[0] for a in answers], float)
            hi = np.array([a.interval[1] for a in answers], float)
            interval = (weighted_median(lo, w), weighted_median(hi, w))
            interval = tuple(whole_number(v) for v in interval)
        return TaskAnswer(value, interval=interval, decimals=answers[0].decimals,  # written as the samples are
                          level=level(value) if level is not None and answers[0].level is not None else None)


def _classes(answers: list[TaskAnswer], w: np.ndarray) -> TaskAnswer:
    names = list(answers[0].probabilities)
    p = np.array([[a.probabilities.get(c, 0.0) for c in names] for a in answers], float)
    mean = (w[:, None] * p).sum(0) / w.sum()
    k = int(np.argmax(mean))
    return TaskAnswer(names[k], float(mean[k]), {c: float(v) for c, v in zip(names, mean)})
