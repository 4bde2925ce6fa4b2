"""Experiment grids: the variants of the sources' tables, built from one base recipe.

An experiment file (YAML) names a base recipe, the budget every variant shares
(overrides such as ``train.epochs=3``), the seeds, and the variants::

    name: utkface-cpu
    base: cpu.yaml              # a training recipe, relative to this file
    seeds: [0, 1]
    overrides: [data.image_size=64, train.epochs=3]
    variants: standard          # the grid below; or a list of variant mappings
    skip: [gradnorm]            # leave some standard variants out
    extra: []                   # variants of your own, added to the standard ones

A variant mapping: ``{name, label, group, tasks: [kept task names] | null,
task_changes: {task: {setting: value}}, overrides: [section.key=value]}``.

Overrides typed on the command line (``facemtl experiment --config X --out Y train.epochs=2``)
join the file's ``overrides`` after them: each run's settings are the base recipe with the
variant's task choice and task changes (``tasks``, ``task_changes``), then the file's
overrides, then the command line's (so they win over the file's, as ``facemtl train``'s win
over its recipe), then the variant's own ``overrides``, then the run's seed. An override of a
setting that a variant sets itself (``weighting.name`` in the standard grid) is refused, as are
``tasks`` when a variant chooses or changes tasks, ``name`` (each run's is its variant's) and
``train.seed`` (the ``seeds`` list gives it): overriding a variant's setting would make it
another variant's run under its name, and letting the variant win would ignore what was typed.

The standard grid (paper Tables II-III, thesis Tables 4.x and 5.x):

============================  ==========================================================
``single_<task>``             one network per attribute (paper "Single Task" rows)
``equal``                     all tasks, equal weights
``fixed``                     hand-set weights (paper "without uncertainty")
``nominal_<task>``            ordinal tasks as K-way softmax (paper "without ordinal")
``regression_<task>``         ordinal tasks as normalised regression (the thesis's age)
``proposed``                  ordinal + uncertainty weighting (the paper's model)
``learned``                   the thesis's loss weight layer (lambda = 0.1)
``dwa`` / ``gradnorm``        the engine's other weightings
``early_freeze``              proposed + thesis Early Freeze
``frozen_backbone``           proposed with the backbone frozen: heads only
============================  ==========================================================

``proposed`` is also the fine-tuned network that ``frozen_backbone`` is compared with,
and the network without Early Freeze that ``early_freeze`` is compared with.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ..config import (
    DATA_PATHS,
    Config,
    ConfigError,
    check_recipe,
    config_from_dict,
    kept_as_written,
    parse_override,
    resolve_data_root,
    typed_path,
)
from ..registry import NameNotFound
from ..tasks import build_task


@dataclass
class Variant:
    name: str
    #: One line for tables, e.g. "multi-task, equal weights".
    label: str = ""
    #: Which comparison it belongs to: single-task, weighting, ordinal, early freeze, backbone.
    group: str = ""
    #: Task names kept (None: all of the base recipe's tasks).
    tasks: list[str] | None = None
    #: Per task, settings replaced in its spec, e.g. ``{"age": {"method": "softmax"}}``.
    task_changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: ``section.key=value`` overrides on top of the experiment's.
    overrides: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError(f"variant name {self.name!r} must be non-empty and contain no '/'")
        self.label = self.label or self.name


@dataclass
class Experiment:
    name: str
    #: The base recipe as a mapping (already read from its YAML file).
    base: dict[str, Any]
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    overrides: list[str] = field(default_factory=list)
    variants: list[Variant] = field(default_factory=list)
    #: The variant reports centre on (Grad-CAM, confusion matrices, bias study).
    reference: str = "proposed"
    #: Where the base recipe and its data folder came from (:attr:`facemtl.config.Config.origin`).
    origin: dict[str, str] = field(default_factory=dict)
    #: Of :attr:`overrides` (the last of them), those typed on the command line, for people
    #: reading the folder; they apply as part of :attr:`overrides`, not again.
    command_line: list[str] = field(default_factory=list)

    def config(self, variant: Variant, seed: int) -> Config:
        """The full training config of one run: base, experiment overrides, variant changes, seed."""
        data = copy.deepcopy(self.base)
        specs = [dict(t) for t in data.get("tasks", [])]
        names = [t.get("name") for t in specs]
        for task in list(variant.tasks or []) + list(variant.task_changes):
            if task not in names:
                raise ConfigError(f"variant {variant.name!r} names task {task!r}, which the base recipe lacks")
        if variant.tasks is not None:
            specs = [t for t in specs if t["name"] in variant.tasks]
        for t in specs:
            for k, v in variant.task_changes.get(t["name"], {}).items():
                if v is None:
                    t.pop(k, None)
                else:
                    t[k] = v
        data["tasks"] = specs
        data["name"] = f"{self.name}/{variant.name}"
        cfg = config_from_dict(data, [*self.overrides, *variant.overrides, f"train.seed={seed}"])
        cfg.origin = dict(self.origin)
        return cfg

    def run_config(self, variant: Variant, seed: int) -> Config:
        """:meth:`config` as the runner trains it: every seed on the first seed's split
        (``data.split_seed`` pinned where the recipe leaves it unset), recorded in the run's
        ``config.yaml`` so that evaluating any run later rebuilds the same test faces."""
        cfg = self.config(variant, seed)
        if cfg.data.split_seed is None:
            cfg.data.split_seed = self.seeds[0]
        return cfg

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise NameNotFound(f"no variant {name!r}; this experiment has: {', '.join(v.name for v in self.variants)}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "base": self.base, "seeds": self.seeds, "overrides": self.overrides,
                "command_line_overrides": self.command_line, "reference": self.reference,
                "variants": [asdict(v) for v in self.variants]}


#: Settings added after runs were first hashed, left out of the digest while at the value that
#: keeps what runs did before (None: unset), so that adding a setting does not make every finished
#: run look changed (and be trained again). ``data.group_copies`` only changes CSV data that
#: holds byte-identical copies of an image.
ADDED_SETTINGS = {("data", "split_seed"): None, ("data", "targets"): None, ("data", "group_copies"): True}


def experiment_from_dict(d: dict[str, Any]) -> Experiment:
    """The :class:`Experiment` that :meth:`Experiment.to_dict` wrote (``OUT/experiment.yaml``)."""
    return Experiment(name=str(d.get("name", "")), base=d.get("base") or {}, seeds=[int(s) for s in d.get("seeds", [])],
                      overrides=[str(o) for o in d.get("overrides") or []],
                      variants=[_variant(v) for v in d.get("variants") or []],
                      reference=str(d.get("reference", "proposed")),
                      command_line=[str(o) for o in d.get("command_line_overrides") or []])


def changed_settings(exp: Experiment, variant: str, seed: int, saved: dict[str, Any]) -> list[str]:
    """How the settings a run was trained with (``saved``: its ``config.yaml``) differ from
    those ``exp`` gives it now, as ``"train.epochs 2, now 3"``; empty when they agree.

    A run trained under another budget (``--only`` reran some variants after it changed)
    must not be compared with the others as if alike. The saved settings are read again as
    a recipe, so a setting added to facemtl since (with its default) is no difference, unlike
    :func:`config_hash`, which changes with every added setting.
    """
    from ..training.runfolder import differences

    now = exp.run_config(exp.variant(variant), seed)
    try:
        then = config_from_dict(saved)
    except ConfigError as exc:
        return [f"its settings no longer load ({exc})"]
    if then.data.split_seed is None:  # saved before the setting existed; the grid split on the first seed then too
        then.data.split_seed = now.data.split_seed
    return [f"{k} {a!r}, now {b!r}" for k, a, b in differences(then.to_dict(), now.to_dict())]


def left_out(exp: Experiment, variant: str, seed: int, saved: dict[str, Any] | None) -> str | None:
    """``"<variant> seed <k> (<what differs>)"`` for a finished run trained with other settings
    than ``exp`` gives it now (``saved``: its ``config.yaml``, None when it has none), which the
    experiment's summary and its report leave out and list; None when the run is alike."""
    changed = ["no config.yaml"] if saved is None else changed_settings(exp, variant, seed, saved)
    return f"{variant} seed {seed} ({'; '.join(changed[:2])})" if changed else None


def config_hash(cfg: Config) -> str:
    """A short digest of a run's settings: a finished run is reused only when it matches."""
    d = cfg.to_dict()
    for (section, key), neutral in ADDED_SETTINGS.items():
        if isinstance(d.get(section), dict) and d[section].get(key, neutral) == neutral:
            d[section].pop(key, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def standard_variants(tasks: list[dict[str, Any]], early_freeze_patience: int = 1) -> list[Variant]:
    """The comparison grid of both sources for the base recipe's ``tasks`` (see module docstring).

    Hand-set weights (``fixed``) are each task's :meth:`Task.hand_weight` (for an ordinal
    task whose loss sums K - 1 binary terms, 1 / (K - 1), so that each threshold weighs like
    one binary task): what one would set by hand without a learned weighting. The
    per-task ablations (``nominal_age``, ``regression_age``) are each task's :meth:`Task.ablations`.
    """
    built = [build_task(t) for t in tasks]
    # a task that trains another's head (soft targets) is no task alone
    out = [Variant(f"single_{t.name}", f"single task: {t.name}", "single-task", tasks=[t.name],
                   overrides=["weighting.name=equal"]) for t in built if t.output_of is None]
    fixed = {t.name: t.hand_weight() for t in built}
    out += [
        Variant("equal", "multi-task, equal weights", "weighting", overrides=["weighting.name=equal"]),
        Variant("fixed", "multi-task, hand-set weights (without uncertainty)", "weighting",
                overrides=["weighting.name=fixed", "weighting.params={weights: " + json.dumps(fixed) + "}"]),
    ]
    for t in built:
        # a task that trains this one's head (soft targets) goes with it: the ablated head differs
        taught = [u.name for u in built if u.output_of == t.name]
        kept = [u.name for u in built if u.name not in taught] if taught else None
        for ab in t.ablations():
            out.append(Variant(f"{ab.suffix}_{t.name}", ab.label, "task ablation", tasks=kept,
                               task_changes={t.name: ab.changes}, overrides=["weighting.name=uncertainty"]))
    out += [
        Variant("proposed", "ordinal + uncertainty weighting (the paper's model; fine-tuned, no Early Freeze)",
                "proposed", overrides=["weighting.name=uncertainty"]),
        Variant("learned", "multi-task, learned loss weight layer (the thesis)", "weighting",
                overrides=["weighting.name=learned"]),
        Variant("dwa", "multi-task, dynamic weight average", "weighting", overrides=["weighting.name=dwa"]),
        Variant("gradnorm", "multi-task, GradNorm", "weighting", overrides=["weighting.name=gradnorm"]),
        Variant("early_freeze", f"proposed + Early Freeze (patience {early_freeze_patience})", "early freeze",
                overrides=["weighting.name=uncertainty", f"train.early_freeze={early_freeze_patience}"]),
        Variant("frozen_backbone", "proposed, backbone frozen (heads only)", "backbone",
                overrides=["weighting.name=uncertainty", "model.freeze_backbone=true"]),
    ]
    return out


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> Experiment:
    """Read an experiment file (see module docstring); every mistake is one :class:`ConfigError` sentence.

    ``overrides``: ``section.key=value`` settings typed on the command line, applied to every
    run after the file's own (relative ``data.root`` / ``targets`` / ``cache_dir``: to the current folder).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiment file {path} does not exist")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"experiment file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    known = {"name", "base", "seeds", "overrides", "variants", "skip", "extra", "reference", "early_freeze_patience"}
    unknown = set(spec) - known
    if unknown:
        raise ConfigError(f"unknown experiment setting {sorted(unknown)[0]!r}; an experiment takes: {', '.join(sorted(known))}")
    if "base" not in spec:
        raise ConfigError(f"experiment file {path} names no 'base' recipe")
    base_path = Path(spec["base"])
    if not base_path.is_absolute():
        base_path = path.resolve().parent / base_path
    if not base_path.is_file():
        raise ConfigError(f"the base recipe {base_path} does not exist")
    base = yaml.safe_load(base_path.read_text()) or {}
    data = base.setdefault("data", {})
    written = str(data.get("root", "."))
    data["root"] = resolve_data_root(written, base_path)
    for key in DATA_PATHS[1:]:  # the target file and the teacher's cache: as load_config resolves them
        if isinstance(data.get(key), str) and not Path(data[key]).expanduser().is_absolute():
            data[key] = resolve_data_root(data[key], base_path)
    tasks = base.get("tasks") or []
    variants_spec = spec.get("variants", "standard")
    if variants_spec == "standard":
        variants = standard_variants(tasks, int(spec.get("early_freeze_patience", 1)))
    elif isinstance(variants_spec, list):
        variants = [_variant(v) for v in variants_spec]
    else:
        raise ConfigError("'variants' must be 'standard' or a list of variant mappings")
    skip = set(spec.get("skip") or [])
    variants = [v for v in variants if v.name not in skip] + [_variant(v) for v in spec.get("extra") or []]
    if len({v.name for v in variants}) != len(variants):
        raise ConfigError("variant names must be unique")
    seeds = spec.get("seeds", [0, 1])
    if isinstance(seeds, int):
        seeds = list(range(seeds))
    if not seeds:
        raise ConfigError("an experiment needs at least one seed")
    try:
        seeds = [int(s) for s in seeds]
    except (TypeError, ValueError):
        raise ConfigError(f"seeds must be whole numbers (or how many: seeds: 3), not {seeds!r}") from None
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:  # one run counted twice passed for two seeds ("± 0.00": a user test)
        raise ConfigError(f"seeds name {', '.join(map(str, twice))} twice; each seed is one run")
    typed = _command_line_overrides(overrides or [])
    exp = Experiment(name=str(spec.get("name", path.stem)), base=base, seeds=seeds,
                     overrides=[*(str(o) for o in spec.get("overrides") or []), *(o for o, _, _ in typed)],
                     variants=variants, reference=str(spec.get("reference", "proposed")),
                     origin={"recipe": str(base_path), "data_root": written, "data_root_from": str(base_path)},
                     command_line=[o for o, _, _ in typed])
    for o, keys, value in typed:
        _check_not_a_variant_setting(o, keys, value, variants)
    for o in overrides or []:
        keys, value = parse_override(o)
        if keys == ["data", "root"]:
            exp.origin.update(data_root=str(value), data_root_from="the command line")
    if exp.reference not in {v.name for v in variants}:
        exp.reference = variants[0].name if variants else exp.reference
    base_tasks = {t["name"]: build_task(t).to_dict() for t in tasks}
    check_same_data(exp, variants)  # fail now, not an hour into the grid
    for v in variants:
        check_recipe(exp.run_config(v, exp.seeds[0]))  # what its trainer would refuse (data.limit=0: a user test)
        for t in (build_task(t) for t in exp.config(v, exp.seeds[0]).tasks):
            if t.derives_label and t.to_dict() != base_tasks[t.name]:
                # the grid reads and splits the data once, with the base recipe's tasks (runner.py)
                raise ConfigError(f"variant {v.name!r} changes task {t.name!r}, whose label column is made once "
                                  "for the whole grid from the base recipe; change it in the base recipe instead")
    return exp


def check_same_data(exp: Experiment, variants: list[Variant]) -> None:
    """A ``ConfigError`` naming the first of ``variants`` whose data settings differ from the
    first variant's (the split seed aside: every seed runs on the first seed's split). The grid
    reads, splits and decodes the data once (runner.py); such a variant was refused only when
    its turn came, after the others had trained (a user test)."""
    if not variants:
        return
    first = exp.run_config(exp.variants[0], exp.seeds[0]).data
    for v in variants:
        if replace(exp.run_config(v, exp.seeds[0]).data, split_seed=first.split_seed) != first:
            raise ConfigError(f"variant {v.name!r} changes data settings; every variant of a grid uses the same "
                              "data (set them in the base recipe or the experiment's overrides)")


def _command_line_overrides(overrides: list[str]) -> list[tuple[str, list[str], Any]]:
    """``(override, keys, value)`` per command-line override; a relative ``data.root``,
    ``data.targets`` or ``data.cache_dir`` is made absolute against the current folder (as ``facemtl train`` does),
    so the override recorded in the experiment folder names the same folder from anywhere."""
    out = []
    for o in overrides:
        keys, value = parse_override(o)
        if keys == ["train", "seed"]:
            raise ConfigError(f"override {o!r}: each run's train.seed comes from the experiment's seeds; "
                              "change 'seeds' in the experiment file instead")
        if (len(keys) == 2 and keys[0] == "data" and keys[1] in DATA_PATHS and isinstance(value, str)
                and not kept_as_written(keys[1], value)):
            value = typed_path(value)
            o = f"{'.'.join(keys)}={value if _yaml_reads(value) == value else json.dumps(value)}"
        out.append((o, keys, value))
    return out


def _yaml_reads(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def _sets(keys: list[str], value: Any, path: list[str]) -> bool:
    """Whether the override ``keys=value`` sets (or replaces a section holding) the setting at ``path``."""
    if path[:len(keys)] != keys:
        return keys[:len(path)] == path  # the override sets something inside the section ``path``
    for k in path[len(keys):]:  # the override replaces a section above ``path``: does its value name it?
        if not isinstance(value, dict) or k not in value:
            return False
        value = value[k]
    return True


def _check_not_a_variant_setting(override: str, keys: list[str], value: Any, variants: list[Variant]) -> None:
    """Refuse a command-line override of a setting that some variant sets itself (see module docstring)."""
    if keys == ["name"]:
        raise ConfigError(f"override {override!r}: each run is named after its variant; name the experiment in "
                          "its file instead")
    if keys[0] == "tasks":  # the variants' task choice and task changes were applied to the tasks it replaces
        chooser = next((v.name for v in variants if v.tasks is not None or v.task_changes), None)
        if chooser is not None:
            raise ConfigError(f"override {override!r} replaces the tasks that variant {chooser!r} chooses or changes, "
                              "which is what the grid compares; change the base recipe's tasks instead")
    clashes = []
    for v in variants:
        for vo in v.overrides:
            vkeys = parse_override(vo)[0]
            if _sets(keys, value, vkeys):
                clashes.append((v.name, vo))
                break
    if clashes:
        name, own = clashes[0]
        more = f" (and {len(clashes) - 1} other variant{'s' if len(clashes) > 2 else ''})" if len(clashes) > 1 else ""
        raise ConfigError(f"override {override!r} changes a setting that variant {name!r}{more} sets itself "
                          f"({own}), which is what the grid compares; change the variants in the experiment file "
                          "instead, or leave that setting out")


def _variant(spec: Any) -> Variant:
    if not isinstance(spec, dict):
        raise ConfigError(f"a variant must be a mapping, not {spec!r}")
    try:
        return Variant(**spec)
    except TypeError as exc:
        raise ConfigError(f"variant {spec.get('name', '?')!r}: {exc}") from None
