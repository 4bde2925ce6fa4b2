"""Response schemas, derived from the result schema and the model's tasks.

The per-task fields of a face are the ones :meth:`TaskAnswer.fields` writes for each task
(``<task>``, and where the task gives them ``<task>_interval``, ``<task>_probability``,
``<task>_probabilities``); which of them a task gives is read off one answer the task
decodes from a zero output, so a task type a user registers gets its own fields in the
OpenAPI document without code here.
"""

from __future__ import annotations

import re
from typing import Any, Collection, Optional, Sequence, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, create_model

from ..config import RESERVED_TASK_NAMES
from ..tasks import Task, answers_of

#: Fields a task's name may not take (it would overwrite a face's own field); training refuses
#: them, and a model file made before it did has such a task left out of the API.
RESERVED = RESERVED_TASK_NAMES


def usable_tasks(tasks: Sequence[Task]) -> tuple[list[Task], list[str]]:
    """The tasks whose fields fit beside a face's own, and a warning for each left out."""
    ok, warnings, seen = [], [], set()
    for t in tasks:
        if t.name in seen:
            continue
        seen.add(t.name)
        if t.name in RESERVED or any(t.name + suffix in RESERVED for suffix in ("", "_interval")):
            warnings.append(f"task {t.name!r} has the name of a field of the API; its answers are left out of it")
            continue
        ok.append(t)
    return ok, warnings


def task_fields(task: Task) -> dict[str, Any]:
    """The JSON fields of one of ``task``'s answers and their types, e.g. ``{"gender": str, ...}``."""
    sample = answers_of(task, np.zeros((1, task.output_size), np.float32))[0]
    types: dict[str, Any] = {}
    for key, value in sample.fields(task.name).items():
        if key == task.name or isinstance(value, str):  # (a class, a level's name)
            types[key] = str if isinstance(value, str) else float
        elif isinstance(value, dict):
            types[key] = dict[str, float]
        elif isinstance(value, list):
            types[key] = list[Union[int, float]]  # an ordinal task's interval is whole numbers: kept as ints
        else:
            types[key] = float
    return types


def _py(key: str, k: int) -> str:
    return key if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) and not key.startswith("model_") else f"f{k}_"


def _answer_fields(tasks: Sequence[Task], kinds: dict[str, Collection[str]] | None = None) -> dict[str, Any]:
    """The answer fields of the records the API returns. ``kinds``: per task name, what the
    stored models of that name answered (``classes``, ``numbers``, ``levels``), so that stored
    faces of another model than the one served keep their form: a class where the served task
    gives numbers, or the other way (they answered 500), a ``<task>_level`` where the served
    model names no levels (it was dropped)."""
    fields: dict[str, Any] = {}
    for t in tasks:
        own = task_fields(t)
        stored = set((kinds or {}).get(t.name, ()))
        numeric = t.class_names() is None
        if "levels" in stored:
            own.setdefault(f"{t.name}_level", str)
        if ("classes" in stored and numeric) or ("numbers" in stored and not numeric):
            own[t.name] = Union[float, str]
            for suffix, typ in (("_probability", float), ("_probabilities", dict[str, float]),
                                ("_interval", list[Union[int, float]])):
                own.setdefault(f"{t.name}{suffix}", typ)
        for key, typ in own.items():
            fields[_py(key, len(fields))] = (Optional[typ], Field(None, alias=key, description=f"task {t.name}"))
    return fields


_CONFIG = ConfigDict(populate_by_name=True, protected_namespaces=())


class ErrorOut(BaseModel):
    """Every error the API returns itself (400, 401, 404, 413, 415, 503): one sentence."""

    detail: str


class Health(BaseModel):
    status: str
    database: str


class TaskInfo(BaseModel):
    name: str
    #: The classes a classification task picks from, then any other class name an earlier model
    #: of the task's name stored faces under (its filter takes them all); ``None`` for numeric tasks.
    classes: Optional[list[str]]
    #: A named scale's levels, ranks 0..K-1 in order (its ``_min`` / ``_max`` take their names);
    #: ``None`` for any other task.
    levels: Optional[list[str]] = None
    #: The query parameters that filter on the task (``gender`` or ``age_min`` / ``age_max``).
    filters: list[str]
    #: The fields its answers have in a face record.
    fields: list[str]
    #: The groups ``/v1/stats`` counts it by, in order (its classes, or bands such as age's
    #: ``0-19``, ``20-39``, ...); ``None`` where there is no fixed list.
    groups: Optional[list[str]] = None


class ModelOut(BaseModel):
    model_config = _CONFIG
    name: str
    version: str
    tasks: list[dict[str, Any]]


class VersionOut(BaseModel):
    model_config = _CONFIG
    facemtl: str
    api: str
    model: Optional[ModelOut]
    database: dict[str, Optional[str]]


class SourceOut(BaseModel):
    id: int
    name: str
    kind: str
    host: Optional[str]
    #: ``running``, ``silent`` (missed heartbeats) or ``stopped``.
    state: str
    last_seen: Optional[float]
    seconds_since_seen: Optional[float]
    session: Optional[int]
    #: A running stream's frames analysed per second from this source over the last 10 s (for a
    #: stream of one source, the FPS its summary prints); ``None`` for uploads, analyze runs, stopped.
    fps: Optional[float]
    heartbeat: Optional[float]
    #: When the latest live frame (``/v1/sources/{id}/snapshot.jpg``) was captured.
    snapshot_time: Optional[float]


class BucketOut(BaseModel):
    start: float
    counts: dict[str, int]


class TaskCountsOut(BaseModel):
    groups: list[str]
    buckets: list[BucketOut]


class StatsOut(BaseModel):
    bucket: float
    since: float
    until: float
    of: str
    tasks: dict[str, TaskCountsOut]


class Schemas:
    """The models whose fields depend on the tasks: analysis results, stored faces and
    tracks, and their pages."""

    def __init__(self, tasks: Sequence[Task], kinds: dict[str, Collection[str]] | None = None) -> None:
        answers = _answer_fields(tasks, kinds)
        self.Raw = create_model("RawAnswers", __config__=_CONFIG, **answers)
        self.AnalysisFace = create_model(
            "AnalysisFace", __config__=_CONFIG,
            box=(Optional[list[float]], Field(None, description="[x1, y1, x2, y2] in pixels")),
            score=(Optional[float], Field(None, description="the detector's confidence")),
            landmarks=(Optional[list[list[float]]], Field(None, description="five [x, y] in pixels")),
            **answers)
        self.Analysis = create_model(
            "Analysis", __config__=_CONFIG,
            file=(Optional[str], None), width=(Optional[int], None), height=(Optional[int], None),
            faces=(list[self.AnalysisFace], ...), status=(str, Field(..., description="ok, no_face or error")),
            error=(Optional[str], None),
            annotated=(Optional[str], Field(None, description="with ?annotate=true: the photo with boxes and labels "
                                                              "drawn, as a data:image/jpeg;base64 URL (in `analyze "
                                                              "--json --annotate`: the path of the copy written)")))
        self.Face = create_model(
            "StoredFace", __config__=_CONFIG,
            id=(int, ...), time=(float, Field(..., description="seconds since the epoch, UTC")),
            source=(Optional[str], None), session=(int, ...),
            track_id=(Optional[int], Field(None, description="the track's id in /v1/tracks")),
            track=(Optional[int], Field(None, description="the stream's own track number")),
            frame=(Optional[int], None), media_time=(Optional[float], None), file=(Optional[str], None),
            box=(Optional[list[float]], None), score=(Optional[float], None),
            landmarks=(Optional[list[list[float]]], None),
            model_name=(Optional[str], None), model_version=(Optional[str], None),
            thumbnail=(bool, Field(False, description="whether /v1/faces/{id}/thumbnail.jpg exists")),
            raw=(Optional[self.Raw], Field(None, description="a tracked face's own answers, beside the track's "
                                                             "smoothed ones above")),
            **answers)
        self.Track = create_model(
            "StoredTrack", __config__=_CONFIG,
            id=(int, ...), source=(Optional[str], None), session=(int, ...), track=(int, ...),
            first_frame=(Optional[int], None), last_frame=(Optional[int], None), frames=(int, ...), faces=(int, ...),
            first_time=(Optional[float], None), last_time=(Optional[float], None), started=(float, ...),
            ended=(float, ...), confidence=(Optional[float], None),
            closed=(bool, Field(..., description="the stream reported its end; open tracks carry the smoothed "
                                                 "answers of their latest face")),
            **answers)
        self.FacePage = create_model("FacePage", items=(list[self.Face], ...),
                                     next=(Optional[str], Field(None, description="cursor of the next page")))
        self.TrackPage = create_model("TrackPage", items=(list[self.Track], ...),
                                      next=(Optional[str], Field(None, description="cursor of the next page")))
