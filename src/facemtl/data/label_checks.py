"""Checks of the label columns against the tasks, before a run reads an image: class names
that disagree, values a task would learn wrongly, cells no reader could read, and tasks left
with no labelled face in a split. Each refusal is one sentence naming the column and why.

Kept apart from :mod:`facemtl.data.dataset`, which reads, splits and caches the data.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Sequence

import numpy as np

from ..tasks import Task
from .manifest import folded
from .table import LabelTable


def warn(sentence: str) -> None:
    """One warning line on stderr, from the first process of a distributed run only (each
    process reads the data, so the others would repeat it)."""
    if os.environ.get("RANK", "0") == "0":
        print(f"facemtl: warning: {sentence}", file=sys.stderr)


def _names(classes: Sequence[str]) -> str:
    return "[" + ", ".join(classes) + "]"


def check_labels(table: LabelTable, tasks: Sequence[Task], cfg: Any) -> dict[str, Any]:
    """Check each task's label column before the split, in one sentence (``ValueError``) where
    the task cannot learn it, and return what the data report should add.

    * Class names: where both the data (``data.columns``, a reader's own names) and the task
      (:meth:`Task.label_classes`) name the classes of a column, they must be the same list in
      the same order (case and outer spaces aside): otherwise the data's class 0 is not the
      model's class 0 and every answer is another class, with nothing failing. Where only one
      side names them there is nothing to compare: the data's indices are the task's.
    * Values: :meth:`Task.invalid_labels` refuses, or counts (``invalid_labels`` in the report,
      one warning line each), labels the task would learn wrongly.
    * Unreadable cells (a class name the data's names do not list, text in a numeric column)
      become missing labels; a column that keeps some labels gets one warning line saying how
      many were lost (one with none is refused after the split, :func:`check_labelled`).
    """
    invalid: dict[str, Any] = {}
    report, warned = table.report, set()
    for t in tasks:
        col = str(t.label)
        if t.derives_label or col not in table.labels:
            continue
        ours, theirs = t.label_classes(), table.classes.get(col)
        if ours is not None and theirs is not None and folded(ours) != folded(theirs):
            raise ValueError(f"task {t.name!r} names the classes of column {col!r} {_names(ours)}, but "
                             f"{_class_source(table, tasks, cfg, col)} names them {_names(theirs)}; they must be the "
                             "same list in the same order, or every label is read as another class")
        if ours is None and theirs is not None and (problem := t.named_levels_problem(list(theirs))):
            raise ValueError(problem)
        n, why = t.invalid_labels(table.labels[col])
        if n:
            invalid[t.name] = {"column": col, "rows": int(n), "warning": why}
            warn(why)
        lost = _unreadable(report, col)
        if lost and col not in warned and not np.isnan(table.labels[col]).all():
            warned.add(col)
            warn(f"{lost[0]} value(s) of column {col!r} {_what_unreadable(table, col, lost)}, so task {t.name!r} "
                 "has no label on those faces")
    return {"invalid_labels": invalid} if invalid else {}


def _class_source(table: LabelTable, tasks: Sequence[Task], cfg: Any, col: str) -> str:
    """Who named the data's classes of ``col``, for the sentence that compares them with a task's."""
    if col in table.report.get("classes_from_tasks", ()):
        first = next(t for t in tasks if str(t.label) == col and t.label_classes() is not None)
        return f"task {first.name!r}, which reads that column too,"
    if getattr(cfg, "columns", None) and col in cfg.columns:
        return f"data.columns.{col}"
    return f"the {cfg.dataset} reader"


def _unreadable(report: dict[str, Any], col: str) -> tuple[int, str] | None:
    """``(count, kind)`` of the cells of ``col`` a reader could not read (``unknown_class``: not one
    of the column's class names; ``unparsable``: not a number), from its report; None if none."""
    for kind in ("unknown_class", "unparsable"):
        n = int((report.get(kind) or {}).get(col, 0))
        if n:
            return n, kind
    return None


def _what_unreadable(table: LabelTable, col: str, lost: tuple[int, str]) -> str:
    examples = (table.report.get(f"{lost[1]}_examples") or {}).get(col)
    eg = f" (e.g. {', '.join(repr(x) for x in examples)})" if examples else ""
    if lost[1] == "unknown_class":
        return f"are not among its classes {_names(table.classes.get(col, []))}{eg}"
    return f"are not numbers{eg}"


def check_labelled(table: LabelTable, tasks: Sequence[Task], split: np.ndarray) -> None:
    """``ValueError`` in one sentence for a task with no labelled face in the training split, or
    (a task that answers at inference) in the validation split when there is one: it would
    train (or be scored) on nothing, its
    metrics NaN, and the run would still end well. Says why where the reader's report knows
    (how many values were not its classes, not numbers, or empty)."""
    for t in tasks:
        col = str(t.label)
        if col not in table.labels:
            continue  # label_matrix names the missing column
        v = np.asarray(table.labels[col], float).reshape(len(table), -1)
        has = ~np.isnan(v).any(1)
        for part, name in (("train", "training"), ("val", "validation")):
            rows = split == part
            if not rows.any() or (has & rows).any():
                continue
            if part == "val" and not t.inference:  # a training-only task is not scored on validation
                continue
            n, labelled = len(table), int(has.sum())
            lost = _unreadable(table.report, col)
            if labelled:
                why = f"its column {col!r} has labels on {labelled} of the {n} faces, none of them in that split"
            else:
                why = f"its column {col!r} has no label on any of the {n} faces"
            if lost and not labelled:
                why += f": {lost[0]} of the values read {_what_unreadable(table, col, lost)}"
                if lost[1] == "unparsable" and t.text_labels_hint(col):
                    why += "; " + t.text_labels_hint(col)
            need = ", which training learns from and evaluate's baseline is fitted on" if part == "train" else ""
            raise ValueError(f"task {t.name!r} has no labelled face in the {name} split ({int(rows.sum())} faces)"
                             f"{need}: {why}")
        if v.shape[1] == 1 and (split == "train").any() and (said := t.unlearned(v[split == "train", 0])):
            warn(said)
