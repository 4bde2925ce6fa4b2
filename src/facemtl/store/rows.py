"""Between the result schema and the tables: answers to rows, rows back to answers.

A task's answer is stored generically (see :mod:`facemtl.store.models`): the class name
in ``value_text`` and its index in ``value_num`` for classification tasks, the number
in ``value_num`` for numeric ones (and an ordinal rank's level name, where its levels are
named, in ``value_text``), and ``grp``, the group the task itself puts the
value in (:meth:`Task.subgroups`: its class, or e.g. ``20-39`` for age), so counts by
group need no knowledge of the task's type. Reading turns rows back into
:class:`~facemtl.inference.results.TaskAnswer` and then into exactly the fields
``analyze --json`` prints.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Sequence

import numpy as np

from ..inference.results import TaskAnswer, whole_number
from ..tasks import TASK_TYPES, Task, build_task

log = logging.getLogger("facemtl.store")


class AnswerCodec:
    """Stores one task's answers. Without the task (a session that recorded no model), the
    class name is its own group and numbers get none."""

    def __init__(self, task: Task | None) -> None:
        self.task = task
        names = task.class_names() if task is not None else None
        self.index = {c: i for i, c in enumerate(names)} if names is not None else None
        self._groups: dict[float, str | None] = {}

    def group(self, value: float) -> str | None:
        """The task's group for a label value (class index or number); cached per value."""
        if value in self._groups:
            return self._groups[value]
        g: str | None = None
        if self.task is not None:
            groups = self.task.subgroups(np.array([value], float))
            g = str(groups[0]) if groups is not None else self.task.describe(value)
        if len(self._groups) < 100_000:
            self._groups[value] = g
        return g

    def row(self, a: TaskAnswer) -> dict[str, Any]:
        """The columns of ``answers`` / ``track_answers`` for one answer."""
        if isinstance(a.value, str):
            num = float(self.index[a.value]) if self.index is not None and a.value in self.index else None
            grp = self.group(num) if num is not None else a.value
            text = a.value
        else:  # stored as every output writes it (at the task's decimals), so read back the same
            num, text = float(a.number(float(a.value))), a.level
            grp = self.group(num)
        lo, hi = (a.number(x) for x in a.interval) if a.interval is not None else (None, None)
        probs = {c: float(p) for c, p in a.probabilities.items()} if a.probabilities is not None else None
        return dict(value_text=text, value_num=num, probability=None if a.probability is None else float(a.probability),
                    lo=None if lo is None else float(lo), hi=None if hi is None else float(hi),
                    probabilities=probs, grp=grp)


def codecs_for(tasks: Iterable[Task]) -> dict[str, AnswerCodec]:
    return {t.name: AnswerCodec(t) for t in tasks}


def tasks_from_specs(specs: Sequence[dict[str, Any]] | None, left_out: list[str] | None = None,
                     warn: bool = True) -> list[Task]:
    """Tasks from stored specs, leaving out any this process cannot build (a plugin's task type
    whose package is not imported here): their names are appended to ``left_out``, and said on
    the ``facemtl.store`` log when ``warn``. Their stored answers are still read and exported
    (:func:`~facemtl.store.export.write_records` takes their columns from the records)."""
    out = []
    for s in specs or []:
        try:
            t = build_task(s)
        except (ValueError, KeyError) as exc:
            if left_out is not None:
                left_out.append(str(s.get("name")))
            if warn:
                kind = s.get("type")
                why = (f"its type {kind!r} is not registered in this process (import the package that registers it)"
                       if kind not in TASK_TYPES.names() else str(exc).strip("'\""))
                log.warning("stored task %r is left out of the tasks known here: %s; its stored answers are still "
                            "exported as stored", s.get("name"), why)
            continue
        if t.inference:
            out.append(t)
    return out


def _number(x: float | None) -> float | int | None:
    """Interval ends come back as they went in: whole numbers as ints."""
    return None if x is None else whole_number(x)


def answer_from_row(row: Any, decimals: int | None = None) -> TaskAnswer:
    """A stored answer row (anything with the columns of ``answers``) as a :class:`TaskAnswer`
    (``decimals``: its task's, so rows stored unrounded, before 2026-11-27, read as written; a
    numeric task's, known by its decimals, reads ``value_text`` as its level name; a class answer,
    which carries its probability, stays a class whatever model of the name answers now)."""
    numeric = decimals is not None and row.value_num is not None and row.probability is None
    value = row.value_num if numeric or row.value_text is None else row.value_text
    interval = (_number(row.lo), _number(row.hi)) if row.lo is not None else None
    return TaskAnswer(value, row.probability, row.probabilities, interval, decimals,
                      row.value_text if numeric else None)


def stored_decimals(specs: Sequence[dict[str, Any]] | None) -> dict[str, int]:
    """``{task: decimals}`` of the numeric tasks among stored specs (quietly skipping any this
    process cannot build; :func:`tasks_from_specs` says so where it matters)."""
    return {t.name: t.decimals for t in tasks_from_specs(specs, warn=False) if t.decimals is not None}


def answer_fields(rows: Iterable[Any], decimals: dict[str, int] | None = None) -> dict[str, Any]:
    """The flat ``analyze --json`` fields of a face's or track's answer rows (``<task>``,
    ``<task>_interval``, ``<task>_probability``, ``<task>_probabilities``), numbers at their
    task's ``decimals``."""
    out: dict[str, Any] = {}
    for r in rows:
        out.update(answer_from_row(r, (decimals or {}).get(r.task)).fields(r.task))
    return out
