"""The task interface: one object holds an attribute's head, loss, decoding, metrics and
everything else the rest of facemtl needs to know about its kind.

Labels reach a task as a float tensor ``(N,)`` in label units (class index,
age in years ...) with ``NaN`` where a sample has no label; the task masks those
rows out of its loss and metrics, so datasets with different label sets mix.

Nothing outside ``tasks/`` asks a task its type: the CLI, the trainer's callbacks, the
splitter, the reports, Grad-CAM, the experiment grid and every runtime call the methods
below, so a task type a user registers is trained, summarised, stratified, decoded and
explained by its own rules.

Decoding works on NumPy arrays (the raw outputs of any runtime: PyTorch, ONNX Runtime,
OpenVINO), so the inference install needs no torch and every runtime decodes the same
way; only the head and the loss use torch, imported where they are built.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields, is_dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np

from ..registry import Registry

if TYPE_CHECKING:  # torch is needed only to train and to run the PyTorch runtime
    import torch
    from torch import nn

    from ..inference.results import TaskAnswer

def _take_kind(name: str, cls: Any) -> None:
    """A task type's ``kind`` is what a model file stores to build the task again: the name it is
    registered under, set here, so that a type of one's own that leaves it out (its models then
    could not be read back: "unknown task type ''") or inherits its parent's (read back as the
    parent, silently) gets its own. A class may name another registered type as its own
    ``kind`` on purpose (its models then read back as that type: on a stock install, say, or a
    class registered under a second name); a kind no type is registered as is refused."""
    if not isinstance(cls, type):
        return
    metric = getattr(cls, "subgroup_metric", "accuracy")
    if isinstance(metric, str) and metric not in ("accuracy", "mae"):  # (any other was scored as MAE)
        raise ValueError(f"task type class {cls.__qualname__} says subgroup_metric = {cls.subgroup_metric!r}; the "
                         "bias tables score a cell by 'accuracy' (Task.sample_scores 1 or 0) or 'mae'")
    own = vars(cls).get("kind")
    if own and own != name:
        if own in TASK_TYPES:
            return
        raise ValueError(f"task type class {cls.__qualname__} says kind = {own!r} but is registered as {name!r}, and "
                         f"no task type is registered as {own!r}: its models could not be read back (leave kind out)")
    cls.kind = name


TASK_TYPES: Registry["Task"] = Registry("task type", on_register=_take_kind)


@dataclass(frozen=True)
class MetricColumn:
    """A scalar metric a task reports: its key in :meth:`Task.metrics`, a column header,
    whether it reads as a percentage, and whether lower is better."""

    key: str
    header: str
    percent: bool = False
    lower_is_better: bool = False


@dataclass(frozen=True)
class Ablation:
    """A variant of a task for experiment grids: the task's settings changed by ``changes``
    (a value ``None`` removes a setting), and the claim of a source that it tests."""

    suffix: str
    label: str
    changes: dict[str, Any]
    claim: str = ""
    source: str = ""


@dataclass
class Task:
    """Base class. Subclasses are dataclasses whose fields are the task's settings.

    ``name`` keys the model's output dict; ``label`` names the data column it
    reads (defaults to ``name``).
    """

    name: str
    label: str | None = None

    #: The name the type is registered under (:data:`TASK_TYPES` sets it); a model file stores it.
    kind: ClassVar[str] = ""
    #: "nominal" or "ordinal": which category-specific branch of the paper's Fig. 2 it joins.
    category: ClassVar[str] = "nominal"
    #: Whether the task answers at inference. ``False`` for training-only tasks (e.g. a
    #: distillation target): no output in results, not exported, no headline in analyze.
    inference: ClassVar[bool] = True
    #: How subgroup (bias) tables score the task per cell: ``accuracy`` (share right, Wilson
    #: intervals) or ``mae`` (mean absolute error, Student-t intervals).
    subgroup_metric: ClassVar[str] = "accuracy"
    #: Whether the task's label column is made from other columns once the split is known
    #: (:meth:`derive_labels`), rather than read from the data.
    derives_label: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError("every task needs a non-empty 'name'")
        if self.label is None:
            self.label = self.name

    # -- what it is ------------------------------------------------------------
    @property
    def unit(self) -> str:
        """The unit of the task's numbers (labels, errors, MAE) for reports and comparisons:
        ``years`` for ages, ``""`` where none is known (a report said "years" for every
        numeric task, a 0..3 rank's MAE too)."""
        return ""

    @property
    def error_step(self) -> float | None:
        """The smallest change of a numeric answer as it is read (1 for ranks and ages), which an
        error moves by when one face is one step further off; ``None`` where there is none."""
        return None

    def class_names(self) -> list[str] | None:
        """Names of the classes a classification task picks from; ``None`` for numeric tasks."""
        return None

    def unlearned(self, train_labels: np.ndarray) -> str | None:
        """A sentence about what the task cannot learn from its training labels ``(N,)`` (a
        class no training face has, say), or ``None``. Said as a warning; the run goes on."""
        return None

    def named_levels_problem(self, names: Sequence[str], exact: bool = False) -> str | None:
        """Why the task cannot read a column whose cells the data names ``names`` (read as their
        indices ``0 .. len(names) - 1``) where the task itself names none; ``None`` if it can.
        ``exact``: for a new run, which may be held to more than a model made before."""
        return None

    def level_names(self) -> list[str] | None:
        """Names of an ordinal task's ranks, which its answers carry beside the rank
        (``<task>_level``); ``None`` where the task names none."""
        return None

    def fit_training_labels(self, train: np.ndarray) -> dict[str, Any] | None:
        """Take what the task's loss needs from its training labels ``(N,)`` (``(N, D)`` for a
        vector label; NaN = missing) before training starts: e.g. an ordinal task's importance
        weights from the counts per rank. Returns what the data report should record under
        the task's name, or ``None``; a no-op for most tasks."""
        return None

    def adopt_level_names(self, names: Sequence[str] | None) -> None:
        """Take the names the data gives the values of the task's column, where the task would
        answer them (an ordinal task's levels); a no-op for the others."""

    def label_classes(self) -> list[str] | None:
        """The class names the task's label column holds, in index order, where the task names
        them; ``None`` where its labels are numbers (ages, indices of unnamed classes).

        The data path compares them with the names the data gives the column (a CSV's
        ``data.columns``, a reader's own): class ``0`` of the data must be class ``0`` of the
        task, else every answer is another class. A reader that finds text labels in a column
        the recipe gives no names for reads them by these.
        """
        return None

    def invalid_labels(self, values: np.ndarray) -> tuple[int, str]:
        """Check the labels ``values`` (``(N,)`` in label units, NaN = missing) of the task's column
        before training: ``ValueError`` in one sentence for labels the task cannot learn at all
        (its loss would fail mid-run, or learn another class); for labels it learns only in a
        changed form (e.g. clamped to its range), ``(how many, a sentence saying so)``, which the
        data path counts in the data report and prints as a warning. ``(0, "")``: all usable."""
        return 0, ""

    def text_labels_hint(self, column: str) -> str:
        """How the recipe can make text in this task's label ``column`` readable, where it can
        (a clause to append to "none of its values were numbers"); ``""`` where it cannot."""
        return ""

    @property
    def output_size(self) -> int:
        """Width ``D`` of the raw output ``(N, D)`` of the task's head."""
        raise NotImplementedError

    @property
    def output_of(self) -> str | None:
        """The task whose output (head) this one trains too, having none of its own (e.g. soft
        targets for a classifier); ``None``: the task has its own head."""
        return None

    #: For a task that trains another's head: the setting of its width, which a spec may leave out
    #: to take that head's (:func:`with_head_widths`); ``None``: none such.
    width_setting: ClassVar[str | None] = None

    @classmethod
    def head_named(cls, spec: dict[str, Any]) -> str | None:
        """The task whose head a task of this type, of settings ``spec``, trains (what
        :attr:`output_of` will say, read before it is built); ``None``: its own head."""
        return None

    @property
    def label_width(self) -> int:
        """Columns of the label matrix the task reads: 1 for a scalar label (``(N,)``), D for a
        vector label (``(N, D)``, e.g. a teacher's feature vector)."""
        return 1

    @property
    def headline(self) -> MetricColumn:
        """The metric that judges the task (the first of :meth:`metric_columns`)."""
        return self.metric_columns()[0]

    def metric_columns(self) -> list[MetricColumn]:
        """The scalar metrics of :meth:`metrics` worth a column in tables, headline first."""
        raise NotImplementedError

    def derive_labels(self, labels: dict[str, np.ndarray], train: np.ndarray, seed: int,
                      report: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
        """Label columns this task makes from the data's columns ``labels`` (each ``(N,)`` or
        ``(N, D)``) once the split is known (``train``: ``(N,) bool``, the training rows; ``seed``:
        the split's seed), e.g. a teacher's class probabilities fitted on the training faces.
        ``{}`` for tasks that read their column as the data gives it (:attr:`derives_label`).
        ``report``: the data report, where the task may say what it made (``report[name]``)."""
        return {}

    # -- network (torch) ---------------------------------------------------------
    def make_head(self, in_features: int) -> "nn.Module":
        """Output layer mapping ``(N, in_features)`` to this task's raw outputs ``(N, output_size)``."""
        from torch import nn

        return nn.Linear(in_features, self.output_size)

    # -- training (torch) --------------------------------------------------------
    def loss(self, out: "torch.Tensor", y: "torch.Tensor", rows: "torch.Tensor | None" = None) -> "torch.Tensor":
        """Mean loss over the rows of ``y`` that carry a label (0 if none do).

        ``rows``: optionally the same mask ``(N,) bool``, already on the CPU. The trainer
        passes it so that a GPU step never waits for the device to say which rows are
        labelled (the usual case, every row labelled, then needs no indexing at all).
        """
        from ..losses import labelled, zero_loss

        m = labelled(y) if rows is None else rows
        n = int(m.sum())
        if n == 0:
            return zero_loss(out)
        if n == len(m):
            return self._loss(out, y)
        idx = m.nonzero().squeeze(1).to(out.device, non_blocking=True)
        return self._loss(out.index_select(0, idx), y.index_select(0, idx))

    def _loss(self, out: "torch.Tensor", y: "torch.Tensor") -> "torch.Tensor":
        raise NotImplementedError

    def explain_score(self, out: "torch.Tensor") -> "torch.Tensor":
        """The score ``(N,)`` Grad-CAM differentiates: the evidence for the decision the head made."""
        raise NotImplementedError

    # -- decoding (NumPy, any runtime) ---------------------------------------------
    def predict(self, raw: np.ndarray) -> np.ndarray:
        """Decoded prediction ``(N,)`` in label units from raw outputs ``(N, output_size)``."""
        raise NotImplementedError

    def probabilities(self, raw: np.ndarray) -> np.ndarray | None:
        """Probabilities ``(N, C)`` over the task's classes or values, or ``None``."""
        return None

    def answers_from_probabilities(self, prob: np.ndarray) -> list["TaskAnswer"]:
        """Answers from class probabilities ``(N, C)`` obtained otherwise (the network's mixed with
        another model's: :mod:`facemtl.inference.fusion`); only a task with classes has them."""
        raise ValueError(f"task {self.name!r} ({type(self).__name__}) cannot answer from class probabilities")

    def answers(self, raw: np.ndarray, interval: float = 0.8) -> list["TaskAnswer"]:
        """One :class:`~facemtl.inference.results.TaskAnswer` per row of ``raw``.

        ``interval``: central probability mass of the interval numeric tasks report. A numeric
        answer sets its ``decimals``, the digits after the point every output writes it with
        (``None``: unrounded).
        """
        raise NotImplementedError

    def has_interval(self) -> bool:
        """Whether :meth:`answers` carries an interval (a CSV column for it)."""
        return False

    #: Digits after the point its numeric answers are written with (:meth:`answers` sets each
    #: answer's); ``None`` for a task that answers classes, or numbers written unrounded. The
    #: results database reads stored numbers back at these digits. A class attribute (a numeric
    #: task computes it: a property), so a task of one's own may set it as it likes.
    decimals: ClassVar[int | None] = None

    def describe(self, value: float) -> str:
        """A label value as a person reads it (class name, or the number)."""
        names = self.class_names()
        if names is not None and not np.isnan(value):
            return names[int(value)]
        return f"{value:.0f}"

    def describe_prediction(self, value: float) -> str:
        """A decoded prediction (:meth:`predict`) as a person reads it; the same as :meth:`describe`
        where predictions are in label units."""
        return self.describe(value)

    # -- evaluation ------------------------------------------------------------
    def metrics(self, pred: np.ndarray, true: np.ndarray) -> dict[str, Any]:
        """Metrics on labelled rows only (``true`` may hold NaN); always includes ``n``."""
        raise NotImplementedError

    def baseline(self, train_true: np.ndarray) -> float | list[float]:
        """The trivial prediction learned from training labels (majority class, median, mean vector)."""
        raise NotImplementedError

    def skill(self, metrics: dict[str, Any], baseline_metrics: dict[str, Any]) -> float:
        """Unitless score, 0 for the trivial baseline and 1 for a perfect model; NaN where it is
        undefined (the baseline is perfect on the faces scored: nothing is left to gain).

        Used to pick the best epoch across heterogeneous tasks.
        """
        raise NotImplementedError

    def scalar_metrics(self, metrics: dict[str, Any]) -> dict[str, float]:
        """The scalar metrics of a :meth:`metrics` result named by :meth:`metric_columns`."""
        return {c.key: float(metrics[c.key]) for c in self.metric_columns() if c.key in metrics}

    def summary(self, metrics: dict[str, Any]) -> str:
        """The headline in a few words, e.g. ``acc 0.912`` or ``MAE 4.94``."""
        h = self.headline
        return f"{h.header} {metrics[h.key]:.3f}"

    def metrics_text(self, metrics: dict[str, Any]) -> str:
        """The metrics as ``facemtl evaluate`` prints them (may span lines)."""
        return self.summary(metrics)

    def strata(self, values: np.ndarray) -> np.ndarray | None:
        """An integer stratum per label value for stratified splits (``-1`` for a missing label),
        or ``None`` when splits should not be stratified on this task's labels."""
        v = np.asarray(values, float)
        return np.where(np.isnan(v), -1, v).astype(np.int64)

    @property
    def subgroup_column(self) -> str:
        """The name subgroup tables give the groups of this task's label column."""
        return str(self.label)

    def group_names(self) -> list[str] | None:
        """Every group :meth:`subgroups` can put a value in, in order (``None``: no fixed list):
        a classification task's classes; counts and charts keep this order and its colours."""
        return self.class_names()

    def subgroups(self, values: np.ndarray) -> np.ndarray | None:
        """A group name per true label value for subgroup (bias) tables (``"?"`` when missing),
        or ``None`` when the values make no useful groups."""
        v = np.asarray(values, float)
        return np.array(["?" if np.isnan(x) else self.describe(x) for x in v], dtype=object)

    def cumulative_curve(self, metrics: dict[str, Any]) -> dict[float, float] | None:
        """CS(k), the share of faces with an error of at most k units (paper eq. 17, Fig. 4), from
        a :meth:`metrics` result, keyed by the error level k in the task's units; for tasks with
        a numeric error, ``None`` for the others."""
        return None

    def confusion(self, pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, list[str]] | None:
        """A confusion matrix (rows: true, columns: predicted) over the task's classes or
        groups, with their names; ``None`` where none applies."""
        return None

    def sample_scores(self, pred: np.ndarray, true: np.ndarray) -> np.ndarray:
        """Per sample, what subgroup tables average (see :attr:`subgroup_metric`): 1 or 0 for a
        right or wrong answer, or the absolute error; NaN where the sample has no label."""
        raise NotImplementedError

    def outcomes(self, pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Masks of clearly right and clearly wrong predictions (for Grad-CAM examples)."""
        raise NotImplementedError

    # -- experiment grids ----------------------------------------------------------
    def ablations(self) -> list[Ablation]:
        """Variants of this task that the sources compare it with (paper Table IV)."""
        return []

    def hand_weight(self) -> float:
        """The loss weight one would set by hand without a learned weighting."""
        return 1.0

    def check_recipe(self) -> None:
        """``ValueError`` in one sentence for settings a recipe may not train with (checked when a
        run starts, :func:`facemtl.config.check_recipe`; a model file trained before is read as
        it is)."""

    def check_head(self, head: "Task") -> None:
        """For a task that trains ``head``'s outputs (:attr:`output_of`): ``ValueError`` in one
        sentence if those outputs do not mean what this task's loss takes them for."""

    def soft_targets(self, raw: np.ndarray) -> np.ndarray | None:
        """What a student's soft-target task learns from this task's raw outputs ``(N, D)`` of a
        teacher: class probabilities ``(N, C)`` (:class:`~facemtl.tasks.soft.SoftTargetTask`), an
        ordinal head's threshold probabilities ``(N, K-1)`` (``soft_ordinal``); ``None``: nothing."""
        return None

    def raw_from_soft_targets(self, q: np.ndarray) -> np.ndarray:
        """Raw outputs whose :meth:`soft_targets` are ``q`` (so :meth:`predict` reads a teacher's
        targets as its answers)."""
        raise NotImplementedError(f"task {self.name!r} has no soft targets")

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, **asdict(self)}


def answers_of(task: Task, raw: np.ndarray, interval: float = 0.8) -> list["TaskAnswer"]:
    """``task.answers(raw, interval)``, checked to give one answer per row of ``raw`` ``(N, D)``:
    ``ValueError`` naming the task otherwise (a task type of one's own that gave fewer failed with
    an ``IndexError`` deep in the result code)."""
    got = list(task.answers(raw, interval))
    if len(got) != len(raw):
        raise ValueError(f"task {task.name!r} ({type(task).__qualname__}.answers) gave {len(got)} answers for "
                         f"{len(raw)} faces; it must give one per row of its raw outputs")
    return got


def predictions_of(task: Task, raw: np.ndarray) -> np.ndarray:
    """``task.predict(raw)``, checked to be ``(N,)``, or ``(N, D)`` for a vector label of width D
    (a teacher's features; soft targets give ``(N,)`` classes): ``ValueError`` naming the task
    otherwise (an ``(N, 1)`` column was taken and compared with ``(N,)`` labels by broadcasting,
    which scored nonsense without a word)."""
    pred = np.asarray(task.predict(raw))
    want = [(len(raw),)] + ([(len(raw), task.label_width)] if task.label_width > 1 else [])
    if pred.shape not in want:
        raise ValueError(f"task {task.name!r} ({type(task).__qualname__}.predict) gave predictions of shape "
                         f"{pred.shape} for {len(raw)} faces; it must give shape {' or '.join(map(str, want))}, in "
                         "label units")
    return pred


def check_named_ranges(tasks: Sequence[Task], report: dict[str, Any]) -> None:
    """For a new run: ``ValueError`` in one sentence for a task whose column the data names
    (``column_names`` in the data report) and whose range is not exactly those names' ranks
    (:meth:`Task.named_levels_problem` with ``exact``)."""
    names = report.get("column_names") or {}
    for t in tasks:
        theirs = names.get(str(t.label))
        if theirs and t.label_classes() is None and (problem := t.named_levels_problem(theirs, exact=True)):
            raise ValueError(problem)


def adopt_level_names(tasks: Sequence[Task], report: dict[str, Any]) -> None:
    """Give each task the names the data report says the data gave its column's values
    (``column_names``), or the names a reader offers for it (``offered_names``: CelebA's "not
    smiling" / "smiling"), where it would answer them (:meth:`Task.adopt_level_names`: a task
    whose recipe names none)."""
    names, offered = report.get("column_names") or {}, report.get("offered_names") or {}
    for t in tasks:
        t.adopt_level_names(names.get(str(t.label)) or offered.get(str(t.label)))


def build_task(spec: dict[str, Any]) -> Task:
    """Build a task from a config mapping ``{"name": ..., "type": ..., **settings}``.

    Every mistake is a ``ValueError`` in one sentence: an unknown type, a misspelt setting
    (named, with the task type's valid settings), a value of the wrong type.
    """
    from ..typecheck import SettingTypeError, check, did_you_mean, hints

    spec = dict(spec)
    kind = spec.pop("type", None)
    name = spec.get("name", "?")
    if kind is None:
        raise ValueError(f"task {name!r} has no 'type'; choose one of: {', '.join(TASK_TYPES.names())}")
    cls = TASK_TYPES.get(kind)
    if is_dataclass(cls):
        valid_keys = [f.name for f in fields(cls) if f.init]
        for key in spec:
            if key not in valid_keys and key in vars(cls).get("__annotations__", {}) \
                    and "__dataclass_fields__" not in vars(cls):  # (a contributor's test: the cause was hidden)
                raise ValueError(f"task {name!r} of type {kind!r}: {cls.__qualname__} declares the setting {key!r} but "
                                 "is not a @dataclass itself, so only its parent's settings are taken: put @dataclass "
                                 "on the class")
            if key not in valid_keys:
                raise ValueError(f"task {name!r} of type {kind!r} has no setting {key!r}{did_you_mean(str(key), valid_keys)}; "
                                 f"it takes: type, {', '.join(valid_keys)}")
        for f in fields(cls):
            if f.init and f.name not in spec and f.default is MISSING and f.default_factory is MISSING:
                raise ValueError(f"a task of type {kind!r} needs the setting {f.name!r}")
        types = hints(cls)
        try:
            spec = {k: check(v, types.get(k, Any), f"tasks.{name}.{k}") for k, v in spec.items()}
        except SettingTypeError as exc:
            raise ValueError(str(exc)) from None
    try:
        task = cls(**spec)
    except TypeError as exc:  # a task type that is no dataclass, or a required setting left out
        raise ValueError(f"task {name!r} of type {kind!r}: {exc}") from None
    if not isinstance(task, Task):  # (a plugin's function: a traceback far from its cause, a contributor's test)
        raise ValueError(f"task {name!r}: the task type {kind!r} ({getattr(cls, '__module__', '?')}."
                         f"{getattr(cls, '__qualname__', cls)!s}) built a {type(task).__name__}, not a facemtl Task: "
                         "register a Task subclass")
    return task


def with_head_widths(specs: list[dict[str, Any]]) -> None:
    """Each spec of a task that trains another's head and leaves out its width
    (:attr:`Task.width_setting`) given that head's width, in place (a user test: ``{type: soft, of:
    race}`` took 2 classes, and was refused against race's 5). A spec that cannot be built is left
    for :func:`build_task` to name."""
    def kind_of(spec: dict[str, Any]) -> Any:
        try:
            return TASK_TYPES.get(spec.get("type"))
        except Exception:  # noqa: BLE001 - an unknown type: build_task says so
            return None

    kinds = [(spec, kind_of(spec)) for spec in specs]
    heads = {}
    for spec, cls in kinds:
        if cls is not None and getattr(cls, "width_setting", None) is None:
            try:
                task = build_task(spec)
            except Exception:  # noqa: BLE001 - said when the tasks are built
                continue
            if task.output_of is None:
                heads[task.name] = task
    for spec, cls in kinds:
        key = getattr(cls, "width_setting", None)
        head = heads.get(cls.head_named(spec)) if key is not None and key not in spec else None
        if head is not None:
            spec[key] = head.output_size


def check_shared_heads(tasks: "list[Task]") -> None:
    """A task that trains another's head (:attr:`Task.output_of`) needs that task among ``tasks``,
    with a head of its own and the same output width; ``ValueError`` in one sentence otherwise."""
    heads = {t.name: t for t in tasks if t.output_of is None}
    for t in tasks:
        if t.output_of is None:
            continue
        head = heads.get(str(t.output_of))
        if head is None:
            raise ValueError(f"task {t.name!r} trains the head of {t.output_of!r}, which is not a task with a "
                             f"head of its own here; tasks: {', '.join(heads)}")
        if head.output_size != t.output_size:
            raise ValueError(f"task {t.name!r} has {t.output_size} outputs, but the head of {head.name!r} it "
                             f"trains has {head.output_size} (set its num_classes, or width)")
        t.check_head(head)


def some_values(values: np.ndarray, most: int = 5) -> str:
    """Up to ``most`` distinct values of ``values``, smallest first, as a person reads them
    (``2, 7`` or ``-3, 0, 150, ...``), for sentences that name bad labels."""
    v = np.unique(np.asarray(values, float))
    text = ", ".join(f"{x:g}" for x in v[:most])
    return text + (", ..." if len(v) > most else "")


def valid(true: np.ndarray) -> np.ndarray:
    return ~np.isnan(np.asarray(true, float))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function in float32."""
    x = np.asarray(x, np.float32)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(np.float32)


def softmax(x: np.ndarray, axis: int = 1) -> np.ndarray:
    x = np.asarray(x, np.float32)
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)
