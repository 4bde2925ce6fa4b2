"""The one result schema: typed answers, faces and images.

Every output is written from these dataclasses: ``analyze --json`` and ``--csv``, the
table, annotated images, and later video events, database rows and the HTTP API. The
field names of the JSON form are fixed here (and pinned by a test):

* a face: ``box`` ``[x1, y1, x2, y2]`` in pixels, ``score`` (the detector's confidence, on
  the detector's own scale: see below), ``landmarks`` (five ``[x, y]``), then per task ``<task>`` (the class name, or the value
  in label units, e.g. years), and where the task gives them ``<task>_level`` (the name of
  an ordinal task's rank, when its levels are named), ``<task>_interval``
  ``[lo, hi]``, ``<task>_probability`` (of the chosen class) and ``<task>_probabilities``
  (``{class: p}``);
* an image: what it was (``file``, ``index`` or ``frame``), ``width``, ``height``,
  ``faces``, ``status`` (``ok``, ``no_face`` or ``error``) and ``error`` (why: e.g. ``no such
  file``, ``empty file``, ``not an image ...``, a truncated or too large image; an
  ``error`` found after the faces, such as ``annotated copy not written: ...``, keeps them),
  then, with ``analyze --annotate``, ``annotated`` (the path of its annotated copy; absent
  where none was written, and in every run without ``--annotate``).

Detection scores are not comparable between detectors: ``dlib`` gives its HOG + linear
SVM margin (unbounded; real frontal faces score about 0.5 to 3, and faces under 0.25 are
dropped), ``mtcnn`` the probability of its last network (O-Net) that the box is a face,
in [0, 1] (under 0.7 dropped). Compare or threshold scores only within one detector.

No torch here: the inference install builds these from NumPy outputs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    from ..tasks import Task

#: Image statuses.
OK, NO_FACE, ERROR = "ok", "no_face", "error"


@dataclass
class TaskAnswer:
    """One task's answer for one face.

    ``value``: the class name for classification tasks, else a number in label units
    (years for age). ``probability``: of the chosen class. ``probabilities``: per class.
    ``interval``: ``(lo, hi)`` holding the central share of the predicted distribution
    (see :class:`~facemtl.inference.predictor.Predictor`'s ``interval``). ``decimals``: the
    digits after the point a numeric value and its interval are written with, which the task
    decides (1 for age in years, 3 for a value in 0..1); ``None``: as given, unrounded.
    ``level``: the name of the rank ``value`` rounds to, for an ordinal task whose levels are
    named (``moderate`` for rank 2 of ``[none, mild, moderate, severe]``).
    """

    value: float | str
    probability: float | None = None
    probabilities: dict[str, float] | None = None
    interval: tuple[float, float] | None = None
    decimals: int | None = None
    level: str | None = None

    def number(self, x: float) -> float | int:
        """A numeric value or interval end as this answer writes it: rounded to :attr:`decimals`
        (none when ``None``); a whole number given as an int stays an int."""
        if isinstance(x, (int, np.integer)):
            return int(x)
        return float(x) if self.decimals is None else round(float(x), self.decimals)

    def fields(self, name: str) -> dict[str, Any]:
        """The flat JSON fields of this answer under the task's ``name``."""
        out: dict[str, Any] = {name: self.value if isinstance(self.value, str) else self.number(float(self.value))}
        if self.level is not None:
            out[f"{name}_level"] = self.level
        if self.interval is not None:
            out[f"{name}_interval"] = [self.number(x) for x in self.interval]
        if self.probability is not None:
            out[f"{name}_probability"] = round(float(self.probability), 4)
        if self.probabilities is not None:
            out[f"{name}_probabilities"] = {c: round(float(p), 4) for c, p in self.probabilities.items()}
        return out

    def short(self, name: str) -> str:
        """E.g. ``age 31 (26-37)`` or ``gender female 93%``: a number with one digit less than
        :attr:`decimals` (none for age), or its shortest form (``g``) without ``decimals``."""
        f = self.fields(name)  # the rounded values, so the text says what the JSON says
        if isinstance(self.value, str):
            p = f.get(f"{name}_probability")
            return f"{name} {self.value}" + (f" {p:.0%}" if p is not None else "")
        iv = f.get(f"{name}_interval")
        if self.level is not None:  # severity moderate (2, 1-3)
            return f"{name} {self.level} ({self.number_text()}" + (
                f", {interval_text(*iv, prose=True)})" if iv is not None else ")")
        return f"{name} {self.value_text()}" + (f" ({interval_text(*iv, prose=True)})" if iv is not None else "")

    def value_text(self) -> str:
        """The value in a few characters, as :meth:`short` and labels on images write it: a class
        name or a rank's level name, or the number as written (:meth:`fields`) with one digit
        less than :attr:`decimals` (``33`` for age), or its shortest form without ``decimals``."""
        if isinstance(self.value, str):
            return self.value
        return self.level if self.level is not None else self.number_text()

    def number_text(self) -> str:
        """A numeric value as :meth:`value_text` writes it without a level name: the number as
        written, one digit less, halves up (``32.5`` is ``33``, ``1.5`` is ``2``, ``-1.5`` is ``-1``,
        as an ordinal answer's level is named and the page rounds; a format's ``.0f`` took halves to
        even, ``2.5`` to ``2``)."""
        x = float(self.number(float(self.value)))
        if self.decimals is None or not np.isfinite(x):
            return f"{x:g}"
        digits = max(0, self.decimals - 1)
        scaled = round(x * 10**digits, 6)  # (1.45 * 10 is 14.499999999999998: a half as written)
        return f"{np.floor(scaled + 0.5) / 10**digits:.{digits}f}"  # floor(x + 0.5): -1.5 is -1, as the page

    @classmethod
    def from_fields(cls, name: str, d: dict[str, Any], decimals: int | None = None) -> "TaskAnswer":
        """The answer whose :meth:`fields` under ``name`` are ``d`` (``decimals``: the task's, if known)."""
        iv = d.get(f"{name}_interval")
        level = d[f"{name}_level"] if _belongs(d, f"{name}_level", "_level") else None
        return cls(d[name], d.get(f"{name}_probability"), d.get(f"{name}_probabilities"),
                   tuple(iv) if iv is not None else None, decimals, level)


#: Suffixes of the fields an answer adds to its task's name (``age_interval``, ``gender_probability``,
#: ``gender_probabilities``, ``severity_level``; CSV also writes ``<task>_p_<class>``).
ANSWER_SUFFIXES = ("_interval", "_probability", "_probabilities", "_level")

#: Fields of a face (and of a ``stream --json`` face line's frame) that are no task's answer.
_FACE_KEYS = frozenset({"type", "source", "file", "index", "frame", "time", "wall_time", "track", "box", "score",
                        "landmarks", "raw"})
_TRACK_KEYS = frozenset({"type", "source", "track", "first_frame", "last_frame", "frames", "first_time", "last_time",
                         "first_wall_time", "last_wall_time", "confidence"})
#: The fields a stored face adds (``GET /v1/faces``, ``db export``): read back by
#: :meth:`FaceResult.from_dict` as no task's answers (a user test: they became answers, and
#: ``to_dict`` then failed on them).
_STORED_KEYS = frozenset({"id", "session", "track_id", "media_time", "model_name", "model_version", "thumbnail"})
#: Every field of a face or track record that is no task's answer: names no task may take
#: (:data:`facemtl.config.RESERVED_TASK_NAMES` includes them; a task ``last_wall_time`` wrote its
#: answer over a track's clock, a review).
RESULT_KEYS = _FACE_KEYS | _TRACK_KEYS


def _answers(d: dict[str, Any], other: set[str] | frozenset[str]) -> dict[str, TaskAnswer]:
    """The task answers among the flat fields ``d`` (keys in ``other`` are not answers; a key
    that is another's ``_interval``, ``_probability``, ``_probabilities`` or ``_level`` belongs to
    it: :func:`_belongs`)."""
    names = [k for k in d if k not in other and not any(_belongs(d, k, x) for x in ANSWER_SUFFIXES)]
    return {n: TaskAnswer.from_fields(n, d) for n in names}


def _belongs(d: dict[str, Any], key: str, suffix: str) -> bool:
    """Whether field ``key`` is another field's ``suffix`` (``age_interval`` of ``age``). A
    ``x_level`` is ``x``'s level only as a name beside a number, not another task's answer (a
    task ``stress_level`` beside ``stress``, from before levels: a number, or a class with its
    probability)."""
    if key not in d or not key.endswith(suffix) or key[: -len(suffix)] not in d:
        return False
    if suffix == "_level":
        return isinstance(d[key], str) and not isinstance(d[key[: -len(suffix)]], str) and \
            f"{key}_probability" not in d
    return True


def answer_fields(answers: dict[str, TaskAnswer]) -> dict[str, Any]:
    """The flat JSON fields of a face's or track's ``answers`` (:meth:`TaskAnswer.fields` under
    each task's name): what ``analyze --json``, ``stream --json``, the database's documents and
    :meth:`FaceAnalyzer.predict_crops <facemtl.inference.analyzer.FaceAnalyzer.predict_crops>` write."""
    return {k: v for name, a in answers.items() for k, v in a.fields(name).items()}


def whole_number(x: float) -> float | int:
    """A whole number as an int, any other as it is: how interval ends of whole ranks are written
    (``[26, 42]``, not ``[26.0, 42.0]``) wherever an answer is made or read back."""
    return int(x) if float(x).is_integer() else x


def interval_text(lo: float, hi: float, prose: bool = False) -> str:
    """An interval as one CSV cell: ``lo-hi`` where neither end is negative (age's ``26-42``),
    else as in JSON, ``[lo, hi]`` (``[-3, -1]``, ``[-1.018, 1.168]``), since a ``-`` between
    negative ends would be ambiguous; ``prose`` (the table): ``-3 to -1`` instead."""
    if lo >= 0 and hi >= 0:
        return f"{lo}-{hi}"
    return f"{lo} to {hi}" if prose else f"[{lo}, {hi}]"


@dataclass
class FaceResult:
    """One face: where it is and every task's answer.

    ``box`` ``[x1, y1, x2, y2]`` and ``landmarks`` ``[[x, y] * 5]`` in pixels of the
    (orientation-corrected) image; ``None`` for an aligned crop's landmarks. ``score``:
    the detector's confidence on its own scale (dlib: SVM margin, about 0.25 to 3; MTCNN:
    a probability in [0, 1]; see the module docstring), ``None`` without detection.
    """

    box: list[float] | None
    score: float | None
    landmarks: list[list[float]] | None
    answers: dict[str, TaskAnswer] = field(default_factory=dict)
    #: In a video: the track the face belongs to. Its ``answers`` are then the track's
    #: smoothed answers so far and ``raw`` the frame's own (``None`` outside videos).
    track: int | None = None
    raw: dict[str, TaskAnswer] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {} if self.track is None else {"track": self.track}
        d.update(box=self.box, score=self.score, landmarks=self.landmarks)
        return d | self.answer_fields()

    def answer_fields(self) -> dict[str, Any]:
        """The answers' flat fields (:func:`answer_fields`), the frame's own under ``raw`` in a video."""
        d = answer_fields(self.answers)
        if self.raw is not None:
            d["raw"] = answer_fields(self.raw)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FaceResult":
        """The face whose :meth:`to_dict` is ``d`` (also a ``stream --json`` face line: its frame
        fields are left out; or a stored face of ``GET /v1/faces``: its record's fields are left
        out), e.g. to read ``analyze --json`` output back into typed results."""
        raw = d.get("raw")
        return cls(d.get("box"), d.get("score"), d.get("landmarks"), _answers(d, _FACE_KEYS | _STORED_KEYS),
                   track=d.get("track"),
                   raw=_answers(raw, set()) if isinstance(raw, dict) else None)

    def scaled(self, factor: float) -> "FaceResult":
        """The same face in an image ``factor`` times larger: box and landmarks multiplied (a
        photo decoded reduced draws its faces in the pixels it was searched in)."""
        return replace(self, box=[v * factor for v in self.box] if self.box else None,
                       landmarks=[[x * factor, y * factor] for x, y in self.landmarks] if self.landmarks else None)

    def describe(self) -> str:
        """Every answer in a few words: ``age 31 (26-37), gender female 93%, ...``."""
        return ", ".join(a.short(n) for n, a in self.answers.items())


@dataclass
class ImageResult:
    """One image (a file, an in-memory image, a video frame) and its faces, largest first.

    Exactly one of ``file`` / ``index`` / ``frame`` says what it was; ``time`` is the
    position in a video, in seconds. ``image`` holds the decoded RGB pixels when the
    caller asked to keep them (to draw on them); it is never serialised.
    """

    file: str | None = None
    index: int | None = None
    frame: int | None = None
    time: float | None = None
    #: Wall-clock time (seconds since the epoch) a live source delivered the frame.
    wall_time: float | None = None
    #: Which source it came from when one process reads several (a camera's name or URL).
    source: str | None = None
    width: int | None = None
    height: int | None = None
    status: str = OK
    error: str | None = None
    faces: list[FaceResult] = field(default_factory=list)
    image: np.ndarray | None = field(default=None, repr=False, compare=False)
    #: Where its annotated copy was written (``analyze --annotate``: the copy's path); ``None``
    #: where none was, and then left out of :meth:`to_dict`. (The HTTP API's ``annotated`` is the
    #: copy itself, a ``data:`` URL, the same field's answer where no file is written.)
    annotated: str | None = None

    @property
    def name(self) -> str:
        """What a person calls this image in a message: the file, ``image N`` or ``frame N``."""
        if self.file is not None:
            return self.file
        if self.frame is not None:
            return f"frame {self.frame}"
        return f"image {self.index}"

    def faces_on_image(self) -> list[FaceResult]:
        """The faces with boxes and landmarks in the pixels of :attr:`image`: a large photo is
        decoded reduced (its long side under 4096 px) while the faces are in the photo's own
        pixels (:attr:`width`). What draws on or crops from :attr:`image` takes these."""
        scale = self.image.shape[1] / self.width if self.image is not None and self.width else 1.0
        return [f.scaled(scale) for f in self.faces] if scale != 1.0 else list(self.faces)

    def fail(self, error: str, keep_faces: bool = False) -> "ImageResult":
        """Mark this image ``error`` with the reason ``error``; its faces are dropped unless
        ``keep_faces`` (a failure after they were found, e.g. writing its annotated copy)."""
        self.status, self.error = ERROR, error
        if not keep_faces:
            self.faces = []
        return self

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ImageResult":
        """The image whose :meth:`to_dict` is ``d``: a line of ``analyze --json`` read back."""
        known = {k: d.get(k) for k in ("file", "index", "frame", "time", "wall_time", "source", "width", "height",
                                       "error", "annotated")}
        return cls(**known, status=d.get("status", OK), faces=[FaceResult.from_dict(f) for f in d.get("faces") or []])

    def face_lines(self) -> list[dict[str, Any]]:
        """One JSON object per face, as video output writes them (``stream --json``)::

            {"type": "face", ["source",] "frame", "time", ["wall_time",] **FaceResult.to_dict()}
        """
        where: dict[str, Any] = {"type": "face"}
        for key in ("source", "file", "index", "frame", "time", "wall_time"):
            v = getattr(self, key)
            if v is not None:
                where[key] = v
        return [{**where, **f.to_dict()} for f in self.faces]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for key in ("source", "file", "index", "frame", "time", "wall_time"):
            v = getattr(self, key)
            if v is not None:
                d[key] = v
        if self.width is not None:
            d["width"], d["height"] = self.width, self.height
        faces = [f.to_dict() for f in self.faces]
        if self.status == ERROR:
            d.update(status=self.status, error=self.error, faces=faces)
        else:
            d.update(faces=faces, status=self.status)
        if self.annotated is not None:  # (last: a record of a run without --annotate is as it was)
            d["annotated"] = self.annotated
        return d


@dataclass
class TrackResult:
    """One person followed through a video: first and last frame, how many frames, and the
    answers aggregated over them (with ``confidence``, in [0, 1], of the aggregate)."""

    track: int
    first_frame: int
    last_frame: int
    frames: int
    answers: dict[str, TaskAnswer] = field(default_factory=dict)
    first_time: float | None = None
    last_time: float | None = None
    confidence: float | None = None
    source: str | None = None
    #: Clock time (seconds since the epoch) of the first and last frame, for live sources.
    first_wall_time: float | None = None
    last_wall_time: float | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrackResult":
        """The track whose :meth:`to_dict` is ``d``: a ``{"type": "track", ...}`` line read back."""
        return cls(d["track"], d["first_frame"], d["last_frame"], d["frames"], _answers(d, _TRACK_KEYS),
                   d.get("first_time"), d.get("last_time"), d.get("confidence"), d.get("source"),
                   d.get("first_wall_time"), d.get("last_wall_time"))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": "track"}
        if self.source is not None:
            d["source"] = self.source
        d.update(track=self.track, first_frame=self.first_frame, last_frame=self.last_frame, frames=self.frames)
        if self.first_time is not None:
            d.update(first_time=self.first_time, last_time=self.last_time)
        if self.first_wall_time is not None:
            d.update(first_wall_time=self.first_wall_time, last_wall_time=self.last_wall_time)
        d.update(answer_fields(self.answers))
        if self.confidence is not None:
            d["confidence"] = round(float(self.confidence), 4)
        return d


def has_interval(task: "Task") -> bool:
    """Whether ``task``'s answers carry an interval (a ``<task>_interval`` column): it says so
    (:meth:`Task.has_interval`), or one answer it decodes from a zero output ``(1, output_size)``
    has one (a task type that gives intervals without saying so loses none)."""
    if task.has_interval():
        return True
    from ..tasks.base import answers_of

    return answers_of(task, np.zeros((1, task.output_size), np.float32))[0].interval is not None


def _task_columns(tasks: Sequence["Task"], prefix: str = "") -> tuple[list[str], list[str]]:
    """Per inference task: its answer columns, and (apart, to go last) its per-class probability columns."""
    cols: list[str] = []
    probs: list[str] = []
    for t in tasks:
        if not t.inference:
            continue
        cols.append(prefix + t.name)
        if t.level_names() is not None:
            cols.append(f"{prefix}{t.name}_level")
        if has_interval(t):
            cols.append(f"{prefix}{t.name}_interval")
        names = t.class_names()
        if names is not None:
            cols.append(f"{prefix}{t.name}_probability")
            probs += [f"{prefix}{t.name}_p_{c}" for c in names]
    return cols, probs


def csv_cells(key: str, value: Any) -> dict[str, Any]:
    """The CSV cells of one flat JSON field (an answer's, or a stored record's): ``<task>_probabilities``
    as one ``<task>_p_<class>`` column per class, an interval ``[lo, hi]`` as :func:`interval_text`
    (``lo-hi``, or ``[lo, hi]`` with a negative end), another list as JSON, the rest as it is."""
    if key.endswith("_probabilities") and isinstance(value, dict):
        return {f"{key[: -len('_probabilities')]}_p_{c}": p for c, p in value.items()}
    if isinstance(value, list):
        return {key: interval_text(*value) if len(value) == 2 else json.dumps(value)}
    return {key: value}


def _answer_cells(answers: dict[str, TaskAnswer], prefix: str = "") -> dict[str, Any]:
    """CSV cells of a face's answers (:func:`csv_cells` of their :func:`answer_fields`), each column
    name after ``prefix``."""
    return {prefix + c: x for k, v in answer_fields(answers).items() for c, x in csv_cells(k, v).items()}


def csv_columns(tasks: Sequence["Task"], ref: str = "file", annotated: bool = False) -> list[str]:
    """The CSV header, from the tasks alone (never from a row): one row per face.

    ``ref``: the column naming the image (``file``, ``index`` or ``frame``). ``annotated``: a
    last column with the path of the image's annotated copy (``--annotate``; an image's field on
    each of its rows, as ``file`` and ``status``), last so that every other column keeps its place.
    """
    cols, probs = _task_columns(tasks)
    return [ref, "status", "error", "face", "x1", "y1", "x2", "y2", "score"] + cols + probs + \
        (["annotated"] if annotated else [])


def csv_rows(result: ImageResult, ref: str = "file") -> list[dict[str, Any]]:
    """One CSV row per face of ``result`` (one row with no face columns when it has none)."""
    base = {ref: getattr(result, ref) if ref != "file" else result.name, "status": result.status,
            "error": result.error or ""}
    if result.annotated is not None:
        base["annotated"] = result.annotated
    if not result.faces:
        return [base]
    rows = []
    for i, f in enumerate(result.faces, 1):
        row = dict(base, face=i, score=f.score)
        if f.box:
            row.update(zip(("x1", "y1", "x2", "y2"), f.box))
        row.update(_answer_cells(f.answers))
        rows.append(row)
    return rows


def video_csv_columns(tasks: Sequence["Task"], source: bool = False) -> list[str]:
    """The CSV header of video output (``stream --csv``): one row per face and frame, the
    track's smoothed answers, then the frame's own under ``raw_`` (empty where the face was
    tracked, not analysed). ``source``: a first column naming the source (several sources)."""
    cols, probs = _task_columns(tasks)
    raw_cols, raw_probs = _task_columns(tasks, "raw_")
    head = ["source"] if source else []
    return head + ["frame", "time", "wall_time", "track", "x1", "y1", "x2", "y2", "score"] + cols + raw_cols \
        + probs + raw_probs


def video_csv_rows(result: ImageResult) -> list[dict[str, Any]]:
    """One row per face of a video frame (none for a frame without faces)."""
    rows = []
    for f in result.faces:
        row = {"source": result.source, "frame": result.frame, "time": result.time, "wall_time": result.wall_time,
               "track": f.track, "score": f.score}
        if f.box:
            row.update(zip(("x1", "y1", "x2", "y2"), f.box))
        row.update(_answer_cells(f.answers))
        row.update(_answer_cells(f.raw or {}, "raw_"))
        rows.append(row)
    return rows
