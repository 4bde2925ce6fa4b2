"""``LabelTable``: what every dataset reader returns.

A table is image paths plus label columns (float arrays, ``NaN`` = missing),
an optional predefined split per row (``"train"``, ``"val"``, ``"test"``), an
optional group id per row (images that must stay in the same split, such as
byte-identical copies or one person's faces), and a report of what the reader
found wrong and what it did about it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..registry import NameNotFound


def data_place(root: Any) -> str:
    """What ``data.root`` names, as a sentence says it: ``labels file`` for a csv reader's file
    (``labels.csv``), else ``data folder`` (a user test read "data folder gone.csv does not exist")."""
    return "labels file" if os.path.splitext(str(root))[1].lower() in (".csv", ".tsv", ".txt") else "data folder"


@dataclass
class LabelTable:
    paths: list[str]
    labels: dict[str, np.ndarray]
    split: np.ndarray | None = None
    groups: np.ndarray | None = None
    report: dict[str, Any] = field(default_factory=dict)
    #: Class names of categorical columns, where the source names them.
    classes: dict[str, list[str]] = field(default_factory=dict)
    #: Names a reader offers for columns it does not name for certain (CelebA's attributes:
    #: ``["not smiling", "smiling"]``): a task naming no classes answers them; a task naming its
    #: own keeps them, without the comparison :attr:`classes` gets (``no, yes`` is as right).
    offered_classes: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.paths)
        for k, v in self.labels.items():
            self.labels[k] = np.asarray(v, dtype=np.float64)
            if len(self.labels[k]) != n:
                raise ValueError(f"label column {k!r} has {len(v)} rows for {n} images")
        for name in ("split", "groups"):
            arr = getattr(self, name)
            if arr is not None and len(arr) != n:
                raise ValueError(f"{name} has {len(arr)} rows for {n} images")

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, idx: np.ndarray | list[int]) -> "LabelTable":
        idx = np.asarray(idx, dtype=np.int64)
        return LabelTable(
            paths=[self.paths[i] for i in idx],
            labels={k: v[idx] for k, v in self.labels.items()},
            split=None if self.split is None else self.split[idx],
            groups=None if self.groups is None else self.groups[idx],
            report=dict(self.report),
            classes=dict(self.classes),
            offered_classes=dict(self.offered_classes),
        )

    def column(self, name: str) -> np.ndarray:
        try:
            return self.labels[name]
        except KeyError:
            found = self.report.get("columns")  # a CSV's own header: data.columns may read only some of them
            extra = (f" (the file's columns: {', '.join(found)}; data.columns reads only those it lists, and a "
                     "task's own column)") if found else ""
            raise NameNotFound(f"no label column {name!r}; this data has: {', '.join(sorted(self.labels))}{extra}") \
                from None


def evenly_spaced(n: int, k: int) -> np.ndarray:
    """``k`` row indices spread evenly over ``0..n-1`` (a deterministic, label-blind sample)."""
    if k >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))
