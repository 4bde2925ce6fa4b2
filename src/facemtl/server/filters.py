"""Query parameters built from the model's tasks: ``?gender=female&race=asian&age_min=20&age_max=39``.

A task that names classes (:meth:`Task.class_names`) is filtered by class (repeat the
parameter for several: any of them matches); any other task by a value range
``<task>_min`` / ``<task>_max`` in its label units (on a named scale, a level's name or its
rank: ``?severity_min=mild``). The parameters, their allowed values
and their descriptions come from the tasks, so they appear in the OpenAPI document and
are validated before any query runs.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional, Sequence

from fastapi import Query
from fastapi.exceptions import RequestValidationError

from ..store.queries import AnswerFilter, bound_value, filter_classes
from ..tasks import Task

#: Query parameters of the routes themselves; a task with one of these names is filtered
#: as ``task_<name>``.
FIXED = {"since", "until", "source", "session", "track", "closed", "limit", "cursor", "bucket", "of", "task",
         "annotate", "seconds"}


@dataclass
class TaskFilter:
    task: Task
    #: The query parameter names (one for classes, two for a range).
    params: list[str]
    #: The classes a class filter takes: the task's, then those earlier models' tasks of its
    #: name had (their faces are stored under them).
    classes: list[str] | None = None
    #: A named scale's levels (:meth:`Task.level_names`): its bounds take their names too.
    levels: list[str] | None = None

    @property
    def by_class(self) -> bool:
        return len(self.params) == 1


def task_filters(tasks: Sequence[Task], stored: dict[str, list[str]] | None = None) -> list[TaskFilter]:
    """A filter per task; ``stored``: more class names per task (an earlier model's, see
    :meth:`Store.class_names`), so that the faces it stored can be asked for."""
    out = []
    for t in tasks:
        base = t.name if t.name not in FIXED else f"task_{t.name}"
        names = filter_classes(t, stored)
        out.append(TaskFilter(t, [f"{base}_min", f"{base}_max"], levels=t.level_names()) if names is None
                   else TaskFilter(t, [base], names))
    return out


def answer_filter_dependency(filters: Sequence[TaskFilter]) -> Callable[..., list[AnswerFilter]]:
    """A FastAPI dependency whose parameters are the tasks' filters; it returns the
    :class:`AnswerFilter` list of the ones a request set."""
    params: list[inspect.Parameter] = []
    plan: list[tuple[TaskFilter, list[str]]] = []
    for k, f in enumerate(filters):
        names = f.classes
        if names is not None:
            py = f"c{k}"
            params.append(inspect.Parameter(
                py, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[list[Literal[tuple(names)]]],  # type: ignore
                default=Query(None, alias=f.params[0],
                              description=f"{f.task.name} is one of these classes (repeat for several)")))
            plan.append((f, [py]))
        elif f.levels:  # a level's name or its rank: text, read by bound_value
            pys = [f"lo{k}", f"hi{k}"]
            for py, alias, word in zip(pys, f.params, ("at least", "at most")):
                params.append(inspect.Parameter(
                    py, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
                    default=Query(None, alias=alias, description=f"{f.task.name} is {word} this level (one of "
                                  f"{', '.join(f.levels)}, case aside) or its rank (0..{len(f.levels) - 1})")))
            plan.append((f, pys))
        else:
            pys = [f"lo{k}", f"hi{k}"]
            for py, alias, word in zip(pys, f.params, ("at least", "at most")):
                params.append(inspect.Parameter(
                    py, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[float],
                    default=Query(None, alias=alias, allow_inf_nan=False,
                                  description=f"{f.task.name} is {word} this (in its label units)")))
            plan.append((f, pys))

    def bound(f: TaskFilter, alias: str, value: Any) -> float | None:
        if value is None or not f.levels:
            return value
        number = bound_value(f.task, value)
        if number is None:  # said as FastAPI says any other invalid parameter (a 422, one sentence)
            raise RequestValidationError([{"type": "value_error", "loc": ("query", alias), "input": value,
                                           "msg": f"should be one of the levels {', '.join(f.levels)} "
                                                  "(case aside) or a rank number"}])
        return number

    def dependency(**kw: Any) -> list[AnswerFilter]:
        out = []
        for f, pys in plan:
            if f.by_class:
                if kw[pys[0]]:
                    out.append(AnswerFilter(f.task.name, classes=list(kw[pys[0]])))
            elif kw[pys[0]] is not None or kw[pys[1]] is not None:
                out.append(AnswerFilter(f.task.name, lo=bound(f, f.params[0], kw[pys[0]]),
                                        hi=bound(f, f.params[1], kw[pys[1]])))
        return out

    dependency.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return dependency
