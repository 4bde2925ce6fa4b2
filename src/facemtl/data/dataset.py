"""From a :class:`DataConfig` and the tasks to train / val / test sets of images and labels:
reading the data, checking its labels, splitting it, and the :class:`DataBundle` of the three
:class:`~facemtl.data.faceset.FaceSet` splits (one split's images and labels, cached or
decoded on the fly: :mod:`facemtl.data.faceset`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..registry import NameNotFound
from ..tasks import Task
from .faceset import FaceSet, cache_decision
from .label_checks import check_labelled, check_labels, warn  # noqa: F401  (data.dataset.check_labels, as before)
from .splits import carve_validation, strata_key, stratified_split
from .table import LabelTable, data_place, evenly_spaced

#: The label column that holds ``data.teacher``'s feature vector per image.
TEACHER_COLUMN = "teacher"
#: Prefix of the label columns read from ``data.targets`` (``target_gender``, ...).
TARGET_PREFIX = "target_"


#: What ``data.root`` names for each reader: a folder, or (``csv``) the manifest file itself.
ROOTS: dict[str, str] = {
    "utkface": "a folder: the one holding UTKFace's *.jpg files, or its parent",
    "adience": "a folder: the one holding its fold_N_data.txt files",
    "celeba": "a folder: the one holding list_attr_celeba.txt (or Anno/)",
    "fairface": "a folder: the one holding its label CSVs",
    "shards": "a folder: the one 'facemtl shards' wrote",
    "csv": "the manifest CSV file itself",
}


def read_table(cfg: Any, tasks: Sequence[Task] = ()) -> LabelTable:
    """Run the reader named by ``cfg.dataset`` (imports only that reader).

    ``tasks``: the tasks to be trained; a csv manifest reads every column they read (also one
    ``data.columns`` leaves out), and the text labels of a column that ``data.columns`` names
    no classes for by the names of the first task that reads it (:meth:`Task.label_classes`), so
    ``male`` / ``female`` need not be repeated in the recipe.
    """
    root = Path(cfg.root)
    if not root.exists():
        raise FileNotFoundError(f"{data_place(root)} {root} does not exist")
    if cfg.dataset not in ROOTS:
        raise ValueError(f"unknown dataset {cfg.dataset!r}; choose {', '.join(list(ROOTS)[:-1])} or {list(ROOTS)[-1]}")
    if cfg.dataset != "csv" and not root.is_dir():  # the csv reader says what it wants itself
        raise ValueError(f"data.root {root} is a file, but the {cfg.dataset} reader wants {ROOTS[cfg.dataset]}"
                         + (" (a CSV of image paths and labels is read by data.dataset=csv)"
                            if root.suffix.lower() == ".csv" else ""))
    if cfg.dataset == "utkface":
        from .utkface import read_utkface

        table = read_utkface(root, "coral" if cfg.split == "coral" else "all", limit=cfg.limit)
        present = sum(table.report.get("coral_listed", {}).values()) - table.report.get("coral_listed_but_absent", 0)
        if cfg.split == "coral" and cfg.limit is not None and cfg.limit < present:  # (read_utkface thins those)
            from .label_checks import warn as say  # (a review: data.limit cut the published test list without a word)

            n = table.report["coral_test_kept"] = int((table.split == "test").sum())
            say(f"data.limit={cfg.limit} keeps {n:,} of the CORAL protocol's {table.report['coral_listed']['test']:,} "
                 "test images: its MAE is not comparable with the published protocol's (leave data.limit out)")
        return table
    if cfg.split == "coral":
        raise ValueError("data.split 'coral' needs the utkface dataset")
    if cfg.dataset == "adience":
        from .adience import adience_fold_split, read_adience

        table = read_adience(root)
        table.split = adience_fold_split(table, cfg.fold)
    elif cfg.dataset == "celeba":
        from .celeba import read_celeba

        table = read_celeba(root)
    elif cfg.dataset == "fairface":
        from .fairface import read_fairface

        table = read_fairface(root)
    elif cfg.dataset == "shards":
        from .shards import read_shards

        table = read_shards(root)
    else:
        from .manifest import read_manifest

        named: dict[str, list[str] | None] = {}
        for t in tasks:
            if not t.derives_label and named.get(str(t.label)) is None:
                named[str(t.label)] = t.label_classes()
        table = read_manifest(root, path_column=cfg.path_column, columns=cfg.columns, classes=named,
                              group_copies=cfg.group_copies)
        if table.report.get("duplicate_rows"):
            _warn_duplicates(table, root, cfg.split)
        if table.report.get("copies_by_content"):
            _warn_copies(table.report, root, cfg.split)
        _warn_odd_rows(table.report, root)
        skipped = table.report.get("rows_without_valid_split_skipped", 0)
        if skipped and cfg.split == "predefined":  # (the data report alone counted them: a user test)
            warn(f"{root}: {skipped} row(s) whose split cell is empty or not train / val / test are left out")
        if table.split is not None and cfg.split == "random":
            # Rows with no valid split cell are still skipped: the rows read, and so the random split
            # of a model trained before this warning, stay the same.
            skipped = table.report.get("rows_without_valid_split_skipped", 0)
            warn(f"{root} has a 'split' column, which is not used: data.split is random, so the split is drawn "
                 "anew (set data.split=predefined to train on the column's split)"
                 + (f"; its {skipped} row(s) with no valid split are skipped all the same" if skipped else ""))
    own = {"adience": f"the five folds, fold {cfg.fold} the test one (data.fold)",
           "celeba": "list_eval_partition.txt", "fairface": "its train and val label files"}.get(cfg.dataset)
    if own and table.split is not None and cfg.split == "random":  # (a user test: data.fold went unused, unsaid)
        warn(f"the {cfg.dataset} reader gives a split of its own ({own}), which is not used: data.split is random, "
             "so the split is drawn anew (set data.split=predefined to train and test on it)")
    if cfg.limit is not None:
        table = table.subset(evenly_spaced(len(table), cfg.limit))
    return table


def _warn_copies(report: dict[str, Any], root: Any, split: str) -> None:
    """Say that a manifest's images include byte-identical copies under other names (a user
    test: they were split apart, one copy trained on and its twin scored)."""
    n, example = report["copies_by_content"], report.get("copies_by_content_example", "")
    conflicting = report.get("copies_by_content_conflicting", 0)
    labelled = f"; {conflicting} set(s) of copies carry different labels" if conflicting else ""
    across = report.get("copies_by_content_across_splits", 0)
    if split == "predefined" and across:
        warn(f"{root}: {n} image(s) are byte-identical copies of others under other names (e.g. {example}), and "
             f"the split column puts {across} set(s) of copies in more than one split: the model would be scored "
             f"on faces it trained on{labelled}")
    elif split != "predefined":
        warn(f"{root}: {n} image(s) are byte-identical copies of others under other names (e.g. {example}); the "
             f"copies are kept together in one split{labelled}")
    elif conflicting:
        warn(f"{root}: {n} image(s) are byte-identical copies of others under other names (e.g. {example})"
             f"{labelled}")


def _warn_duplicates(table: LabelTable, root: Any, split: str) -> None:
    """Say that a manifest lists images on several rows: a random split keeps an image's rows
    together (the reader groups them); a predefined split is the file's, and one image in two of
    its splits would score the model on a face it trained on."""
    n = table.report["duplicate_rows"]
    if table.split is None or split != "predefined":
        rows: dict[str, list[int]] = {}
        for i, p in enumerate(table.paths):
            rows.setdefault(os.path.normpath(p), []).append(i)
        labels = np.column_stack([np.asarray(v, float).reshape(len(table.paths), -1) for v in table.labels.values()]) \
            if table.labels else np.zeros((len(table.paths), 0))
        other = [p for p, r in rows.items() if len(r) > 1 and not all(
            np.array_equal(labels[r[0]], labels[j], equal_nan=True) for j in r[1:])]
        said = (f"; {len(other)} of them with other labels (e.g. {other[0]}), each row trained on as it is"
                if other else ", with the same labels")  # ("perhaps with other labels" before: a user test)
        warn(f"{root} lists {n} image(s) again on later rows (the same path){said}; the rows of one image are kept "
             "together in one split")
        return
    parts: dict[str, set] = {}
    for p, part in zip(table.paths, table.split):
        parts.setdefault(os.path.normpath(p), set()).add(part)
    mixed = [(p, sorted(v)) for p, v in parts.items() if len(v) > 1]
    if mixed:
        warn(f"{root}'s split column puts {len(mixed)} image(s) in more than one split (e.g. {mixed[0][0]} in "
             f"{' and '.join(mixed[0][1])}): the model would be scored on faces it trained on; give each image "
             "one split")
    else:
        warn(f"{root} lists {n} image(s) again on later rows (the same path, perhaps with other labels), each "
             "within one split")


@dataclass
class DataBundle:
    train: FaceSet
    val: FaceSet
    test: FaceSet
    report: dict[str, Any]
    #: Trivial predictions from training labels, per task (majority class / median).
    baselines: dict[str, float]
    #: The specs of the tasks whose labels stratified the split (an experiment grid's whole
    #: recipe, of which a variant may train one task): what a checkpoint records, so that
    #: ``evaluate`` and ``--resume`` draw the same split again (:func:`split_as_trained`).
    split_tasks: list[dict[str, Any]] | None = None

    def split(self, name: str) -> FaceSet:
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}; choose train, val or test")
        return getattr(self, name)

    def with_tasks(self, tasks: Sequence[Task]) -> "DataBundle":
        """The same split and images labelled for other ``tasks`` (e.g. one task of several).

        Experiments use it so that every variant of a grid trains and tests on exactly
        the same images, whatever tasks it keeps.
        """
        sets = {}
        for part in ("train", "val", "test"):
            fs = self.split(part)
            sets[part] = fs.with_labels(_as_matrix([_attribute(fs, t.label) for t in tasks], len(fs)))
        return DataBundle(sets["train"], sets["val"], sets["test"], dict(self.report),
                          trivial_baselines(tasks, sets["train"].labels.numpy()), self.split_tasks)


def split_as_trained(cfg: Any, tasks: Sequence[Task], seed: int,
                     split_tasks: Sequence[dict[str, Any]] | None, load_images: bool = True) -> "DataBundle":
    """The data a checkpoint was trained on, labelled for ``tasks``: split as its training split
    it, stratified on ``split_tasks`` (what the checkpoint records, :attr:`DataBundle.split_tasks`;
    ``None`` in checkpoints written before 2026-11-28: on ``tasks``, as those runs did). A grid
    variant that trains one task of the recipe was split on them all (a user test: its run could
    not be evaluated or resumed, "the data changed since training")."""
    from ..tasks import build_task  # (only what a spec names: a plugin's task type too)

    if not split_tasks or [dict(s) for s in split_tasks] == [t.to_dict() for t in tasks]:
        return build_data(cfg, tasks, seed, load_images=load_images)
    return build_data(cfg, [build_task(s) for s in split_tasks], seed, load_images=load_images).with_tasks(tasks)


def trivial_baselines(tasks: Sequence[Task], train_labels: np.ndarray) -> dict[str, float | list[float]]:
    """Per task, the trivial prediction learned from the training label matrix
    (:meth:`Task.baseline`: majority class, median or mean vector)."""
    return {t.name: t.baseline(train_labels[:, c]) for t, c in zip(tasks, label_columns(tasks))}


def _attribute(fs: FaceSet, name: str) -> np.ndarray:
    try:
        return fs.attributes[name]
    except KeyError:
        raise NameNotFound(f"no label column {name!r}; this data has: {', '.join(sorted(fs.attributes))}") from None


#: Environment variable that lets ``--resume`` and ``evaluate`` go on although the data changed.
DATA_CHANGE_ENV = "FACEMTL_ACCEPT_DATA_CHANGE"


def accept_data_change(said: str, going: str, log: Any) -> None:
    """``ValueError(said)`` unless :data:`DATA_CHANGE_ENV` accepts a change of the data since
    training (:func:`data_fingerprint`); then ``log`` a warning: ``said`` up to its first ``;``
    and ``going`` (what is done anyway)."""
    if os.environ.get(DATA_CHANGE_ENV, "").strip().lower() in ("", "0", "false", "no"):
        raise ValueError(said)
    log(f"warning: {said.split(';')[0]}; {going} ({DATA_CHANGE_ENV} is set)")


#: What each kind of odd manifest row means for the run (the data report alone counted them: a user test).
ODD_ROWS = {
    "long_rows": "hold more cells than the header (an unquoted comma in a cell?); their extra cells are ignored",
    "short_rows": "hold fewer cells than the header; their missing cells are missing labels",
    "rows_without_path_skipped": "have an empty path cell and are left out",
}


def _warn_odd_rows(report: dict[str, Any], root: Any) -> None:
    """One warning per kind of odd row of a manifest, with the file line of the first."""
    lines = report.get("odd_rows_first_line") or {}
    for kind, means in ODD_ROWS.items():
        if report.get(kind):
            warn(f"{root}: {report[kind]} row(s) {means} (the first on line {lines.get(kind, '?')})")


def data_fingerprint(data: "DataBundle", tasks: Sequence[Task]) -> dict[str, dict[str, Any]]:
    """Per split, its size and the SHA-256 (first 16 hex digits) of its file names and the labels
    of the tasks that answer at inference, in order: what ``--resume`` compares, so that a run
    never goes on over other faces (a manifest edited or re-ordered between the two starts).

    File names, not paths, so a data folder that moved (``data.root=...``) reads the same;
    training-only targets (a teacher's features, soft targets) are left out, since a
    recomputed cache may differ in its last bits."""
    import hashlib

    keep = [t.label for t in tasks if t.inference]
    out = {}
    for name in ("train", "val", "test"):
        fs = data.split(name)
        h = hashlib.sha256("\n".join(Path(p).name for p in fs.paths).encode())
        for column in keep:
            # the columns as read (attributes), not the label matrix: an image that cannot be
            # decoded has its labels masked there, in memory caching and not when streaming
            values = np.asarray(fs.attributes.get(column, np.zeros(0)))
            if values.dtype.kind in "biuf":
                h.update(np.nan_to_num(np.round(values.astype(np.float64), 4), nan=-1e9).tobytes())
            else:
                h.update("\n".join(map(str, values.tolist())).encode())
        out[name] = {"faces": len(fs), "sha256": h.hexdigest()[:16]}
    return out


def faces_id(paths: Sequence[str]) -> str:
    """A short digest of the file names of the faces scored, in any order: two evaluations of the
    same id scored the same faces (a user test: a recipe without one task, same seed, drew
    another test split, 46 of 200 faces shared, and nothing in the output told)."""
    import hashlib

    return hashlib.sha256("\n".join(sorted(Path(p).name for p in paths)).encode()).hexdigest()[:12]


def label_columns(tasks: Sequence[Task]) -> list[int | slice]:
    """Where each task's labels sit in the label matrix: a column index for a scalar label
    (``labels[:, c]`` is ``(N,)``), a slice for a vector label (``(N, D)``)."""
    out: list[int | slice] = []
    at = 0
    for t in tasks:
        w = t.label_width
        out.append(at if w == 1 else slice(at, at + w))
        at += w
    return out


def fit_to_training(tasks: Sequence[Task], data: "DataBundle") -> dict[str, Any]:
    """Each task's :meth:`Task.fit_training_labels` on the training split's labels (an ordinal
    task's ``importance: counts``), as the trainer and ``evaluate`` (whose losses need them)
    both call it; returns what the tasks recorded, by task name."""
    train = data.train.labels.numpy()
    fitted = {}
    for task, col in zip(tasks, label_columns(tasks)):
        if said := task.fit_training_labels(train[:, col]):
            fitted[task.name] = said
    return fitted


def _as_matrix(columns: list[np.ndarray], n: int) -> np.ndarray:
    """The columns ``(n,)`` or ``(n, D)`` side by side, ``(n, sum of widths)`` (also for ``n = 0``,
    which NumPy cannot reshape to ``(0, -1)``: an empty split)."""
    cols = [np.asarray(c, np.float32) for c in columns]
    cols = [c.reshape(n, 1) if c.ndim <= 1 else c.reshape(n, int(np.prod(c.shape[1:]))) for c in cols]
    return np.concatenate(cols, 1) if cols else np.zeros((n, 0), np.float32)


def label_matrix(table: LabelTable, tasks: Sequence[Task]) -> np.ndarray:
    """``(N, sum of label widths) float32``: each task's label column(s), NaN where missing."""
    for t in tasks:
        got = table.column(t.label).reshape(len(table), -1).shape[1]
        if got != t.label_width:
            raise ValueError(f"task {t.name!r} reads {t.label_width} label column(s), but {t.label!r} has {got}")
    return _as_matrix([table.column(t.label) for t in tasks], len(table))


def assign_splits(table: LabelTable, tasks: Sequence[Task], cfg: Any, seed: int) -> np.ndarray:
    """Split per row; stratified on the tasks' labels, each label column binned by the
    first task that reads it (:meth:`Task.strata`). ``seed``: the run's seed, unless
    ``cfg.split_seed`` names the split's own."""
    seed = _split_seed(cfg, seed)
    readers = {}
    for t in tasks:
        if not t.derives_label:  # made from the split, so no part of it
            readers.setdefault(t.label, t)
    parts = [t.strata(table.column(label)) for label, t in readers.items()]
    strata = strata_key([p for p in parts if p is not None], len(table))
    if cfg.split == "random":
        return stratified_split(strata, cfg.val_fraction, cfg.test_fraction, seed, table.groups)
    if table.split is None:
        hint = " (or give the labels file a 'split' column of train, val and test)" if cfg.dataset == "csv" else ""
        raise ValueError(f"the {cfg.dataset} reader gives no predefined split here; use data.split: random{hint}")
    split = np.asarray(table.split, dtype=object)
    if not (split == "val").any():
        split = carve_validation(split, strata, cfg.val_fraction, seed, table.groups)
    return split


def balance_weights(attributes: dict[str, np.ndarray], tasks: Sequence[Task],
                    columns: Sequence[str]) -> tuple[torch.Tensor, dict]:
    """Sampling weights ``1 / size of the row's cell`` over the groups of ``columns`` (each grouped as
    the first task reading it groups its values for subgroup tables: classes, or age bands).

    Every occurring cell is then drawn equally often; a row with a missing label in a
    balancing column forms its own "?" group.
    """
    readers = {t.label: t for t in reversed(tasks)}
    keys = []
    for c in columns:
        if c not in attributes:
            raise ValueError(f"train.balance_by names {c!r}, which this data does not have; it has: "
                             f"{', '.join(sorted(attributes))}")
        v = attributes[c]
        t = readers.get(c)
        g = t.subgroups(v) if t is not None else None
        keys.append(np.asarray(g if g is not None else np.where(np.isnan(v), -1, v).astype(str), dtype=str))
    cell = np.array(["|".join(k) for k in zip(*keys)])
    names, inverse, counts = np.unique(cell, return_inverse=True, return_counts=True)
    w = 1.0 / counts[inverse]
    return torch.from_numpy(w / w.sum()), {"by": list(columns), "cells": int(len(names)),
                                            "smallest_cell": int(counts.min()), "largest_cell": int(counts.max())}


def standardise_teacher(table: LabelTable, train: np.ndarray) -> dict[str, float]:
    """Z-score the teacher column per dimension with the training rows' mean and spread.

    A face descriptor's mean direction is shared by all faces (dlib's: cosine 0.94 between a
    face and the mean), so what tells faces apart is the deviation from it; standardised,
    every dimension weighs alike and the trivial prediction (the mean) scores zero.
    """
    v = table.labels[TEACHER_COLUMN]
    ref = v[train & ~np.isnan(v).any(1)]
    mean, std = ref.mean(0), ref.std(0) + 1e-6
    table.labels[TEACHER_COLUMN] = (v - mean) / std
    return {"train_rows": int(len(ref)), "mean_norm": float(np.linalg.norm(mean)), "mean_std": float(std.mean())}


def read_targets(table: LabelTable, root: str | Path, file: str | Path) -> dict[str, Any]:
    """Add the columns of the target file ``file`` to ``table`` as ``target_<column>`` label columns.

    The file (``.npz``) holds ``files`` (image paths relative to the data folder ``root``, or to
    the folder of a csv manifest) and
    per column an array of ``len(files)`` rows; a table row whose image the file lacks gets
    NaN (a missing label, masked like any other). Returns what was matched, for the report.
    """
    path = Path(file).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"data.targets: the target file {path} does not exist; it is needed to train, and to "
                                "score an unslimmed checkpoint's training-only tasks (scripts/export_model.py slims "
                                "them away; exported files never need it)")
    try:
        with np.load(path, allow_pickle=False) as z:
            files = [str(f) for f in np.atleast_1d(z["files"])]
            cols = {k: np.asarray(z[k], np.float32) for k in z.files if k != "files"}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"data.targets: {path} is not a target file: a 'files' array and numeric columns "
                         f"({type(exc).__name__}: {exc})") from None
    for k, v in cols.items():
        if v.ndim == 0 or len(v) != len(files):
            raise ValueError(f"data.targets: column {k!r} of {path} has {len(v) if v.ndim else 0} rows for "
                             f"{len(files)} files")
    at = {f: i for i, f in enumerate(files)}
    if len(at) < len(files):
        raise ValueError(f"data.targets: {path} names {len(files) - len(at)} file(s) twice")
    base = Path(root).resolve()
    base = base.parent if base.is_file() else base  # a csv manifest: paths relative to its folder
    rows = np.array([at.get(_relative(p, base), -1) for p in table.paths], dtype=np.int64)
    found = rows >= 0
    if len(table) and not found.any():
        raise ValueError(f"data.targets: none of this data's {len(table)} images is in {path} (its paths are "
                         f"relative to the data folder, e.g. {files[0] if files else '(none)'!r})")
    for k, v in cols.items():
        out = np.full((len(table),) + v.shape[1:], np.nan, np.float32)
        out[found] = v[rows[found]]
        table.labels[TARGET_PREFIX + k] = out
    return {"file": str(path), "columns": sorted(TARGET_PREFIX + k for k in cols), "matched": int(found.sum()),
            "missing": int((~found).sum())}


def _relative(path: str, root: Path) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)


def read_split(cfg: Any, tasks: Sequence[Task], seed: int = 0) -> tuple[LabelTable, np.ndarray, dict[str, Any]]:
    """The table ``cfg`` (a DataConfig) describes, filtered (``age_range``), with a split per row,
    and the report of what was found and done."""
    table = read_table(cfg, tasks)
    if not len(table):  # (a folder of photos not named as the reader reads labels: a NumPy error before)
        skipped = table.report.get("unreadable_names_skipped")
        raise ValueError(f"data.root {cfg.root}: the {cfg.dataset} reader found no labelled image there"
                         + (f" ({skipped} file name(s) hold no labels it can read)" if skipped else ""))
    report = dict(table.report)
    if table.classes:  # (an ordinal task takes them as its levels' names: Task.adopt_level_names)
        report["column_names"] = {col: list(names) for col, names in table.classes.items()}
    if table.offered_classes:  # (taken by a task naming none; never compared: LabelTable.offered_classes)
        report["offered_names"] = {col: list(names) for col, names in table.offered_classes.items()}
    if cfg.age_range is not None:
        lo, hi = cfg.age_range
        if "age" in (table.classes or {}):  # (a user test: it filtered Adience's and FairFace's group numbers)
            raise ValueError(f"data.age_range filters ages in years, but the {cfg.dataset} reader gives age groups "
                             f"({', '.join(map(str, table.classes['age']))}), not years: leave data.age_range out")
        age = table.column("age")
        keep = np.flatnonzero((age >= lo) & (age <= hi))  # (a face of unknown age is not known to be in it)
        report["outside_age_range_dropped"] = int(len(table) - len(keep))
        if not len(keep):  # (NumPy's "cannot reshape array of size 0" followed)
            known = age[~np.isnan(age)]
            raise ValueError(f"data.age_range [{lo}, {hi}] leaves none of the {len(table):,} faces"
                             + (f" (their ages run from {known.min():g} to {known.max():g})" if len(known) else
                                " (none has an age)"))
        table = table.subset(keep)
    if cfg.targets:
        report["targets"] = read_targets(table, cfg.root, cfg.targets)
    for t in tasks:  # now, not after minutes of teacher descriptors
        if str(t.label).startswith(TARGET_PREFIX) and t.label not in table.labels:
            raise ValueError(f"task {t.name!r} reads the column {t.label!r}, which only a target file gives"
                             + (f"; {cfg.targets} has {', '.join(report['targets']['columns'])}" if cfg.targets
                                else ": set data.targets (e.g. data.targets=targets.npz on the command line)"))
    report.update(check_labels(table, tasks, cfg))
    if cfg.teacher:  # before the split: the split must know every task's column (the teacher's gives no strata)
        from .teacher import teacher_features

        vecs = teacher_features(table.paths, cfg.cache_dir, cfg.teacher, workers=max(1, cfg.workers),
                                progress=len(table) > 2000)
        table.labels[TEACHER_COLUMN] = vecs
        report["teacher"] = {"name": cfg.teacher, "missing": int(np.isnan(vecs).any(1).sum())}
    for t in tasks:  # (a contributor's test: "no label column 'is_adult'; this data has: ..." hid the cause)
        if not t.derives_label and str(t.label) not in table.labels \
                and type(t).derive_labels is not Task.derive_labels:
            raise ValueError(f"task {t.name!r}: the data has no column {t.label!r}, and {type(t).__qualname__} makes "
                             "its labels in derive_labels() but does not say derives_label = True (a class attribute)")
    split = assign_splits(table, tasks, cfg, seed)
    if cfg.teacher:
        report["teacher"].update(standardise_teacher(table, split == "train"))
    for t in tasks:
        made = t.derive_labels(table.labels, split == "train", _split_seed(cfg, seed), report)
        if t.derives_label and str(t.label) not in made and str(t.label) not in table.labels:
            raise ValueError(f"task {t.name!r}: {type(t).__qualname__}.derive_labels() gave the columns "
                             f"{', '.join(map(repr, made)) or 'none'}, not its label column {t.label!r}")
        table.labels.update(made)
    check_labelled(table, tasks, split)
    return table, split, report


def _split_seed(cfg: Any, seed: int) -> int:
    """The seed that draws the split (and folds derived labels): ``data.split_seed``, else the run's."""
    return seed if getattr(cfg, "split_seed", None) is None else int(cfg.split_seed)


def build_data(cfg: Any, tasks: Sequence[Task], seed: int = 0, load_images: bool = True) -> DataBundle:
    """Read, filter, split and (optionally) cache the data described by ``cfg`` (a DataConfig)."""
    table, split, report = read_split(cfg, tasks, seed)
    labels = label_matrix(table, tasks)
    sets = {}
    for part in ("train", "val", "test"):
        idx = np.flatnonzero(split == part)
        sets[part] = FaceSet(
            paths=[table.paths[i] for i in idx],
            labels=torch.from_numpy(labels[idx]),
            size=cfg.image_size,
            workers=cfg.workers,
            rows=idx,
            attributes={k: v[idx] for k, v in table.labels.items()},
        )
        report[f"{part}_images"] = int(len(idx))
    if len(sets["train"]) == 0:
        raise ValueError("the training split is empty")
    bundle = DataBundle(sets["train"], sets["val"], sets["test"], report,
                        trivial_baselines(tasks, sets["train"].labels.numpy()), [t.to_dict() for t in tasks])
    if load_images:
        in_memory, report["image_cache"] = cache_decision(cfg, sum(len(s) for s in sets.values()))
        if in_memory:
            for s in sets.values():
                s.cache(progress=len(s) > 2000 and sys.stderr.isatty())  # no bars in a log file
            bad = {part: s.unreadable for part, s in sets.items() if s.unreadable}
            if bad:  # in the report too (a user test: stderr alone said so, and the counts still held them)
                report["unreadable_images"] = {part: len(v) for part, v in bad.items()}
                report["unreadable_examples"] = [f"{sets[part].paths[k]}: {why}" for part, v in bad.items()
                                                 for k, why in v][:5]
            _check_decoded(sets["train"], tasks)
        else:  # read while training: at least the files must be there
            from .shards import is_shard, shard_exists

            train = sets["train"]
            if not any(shard_exists(p) if is_shard(p) else os.path.exists(p) for p in train.paths):
                raise ValueError(f"none of the {len(train)} images of the training split exists (e.g. "
                                 f"{train.paths[0]}); check data.root and the paths")
    return bundle


def _check_decoded(train: FaceSet, tasks: Sequence[Task]) -> None:
    """``ValueError`` in one sentence for a task left with no labelled face in the training split
    once the images that cannot be read were masked (paths that point at the wrong folder: the
    run would train on nothing and end well with a NaN score); :func:`check_labelled` has seen
    labels on the rows before the images were read."""
    if not train.unreadable:
        return
    labels = train.labels.numpy()
    for t, col in zip(tasks, label_columns(tasks)):
        v = labels[:, col].reshape(len(train), -1)
        if (~np.isnan(v).any(1)).any():
            continue
        first = "; ".join(f"{train.paths[k]}: {why}" for k, why in train.unreadable[:2])
        raise ValueError(f"task {t.name!r} has no labelled face left in the training split: {len(train.unreadable)} "
                         f"of its {len(train)} images cannot be read ({first}); check data.root and the paths")
