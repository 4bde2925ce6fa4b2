"""The data a model records, rebuilt from its :class:`~facemtl.inference.model_info.ModelInfo` alone.

A checkpoint and every file ``facemtl export`` writes record the data settings and the
seed of the run that trained them (``info.extra["data"]``, ``info.extra["seed"]``), so
``facemtl evaluate`` and the export checks rebuild exactly the same train / validation /
test split from an exported file as from its checkpoint.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .dataset import TARGET_PREFIX, TEACHER_COLUMN, DataBundle, FaceSet, build_data
from .table import data_place, evenly_spaced


def recorded_data(info: Any, data_root: str | None = None) -> tuple[Any, int]:
    """``(DataConfig, seed)`` the model was trained with; ``data_root`` replaces the recorded folder.

    Relative folders resolve against the working directory, as ``facemtl evaluate`` always did.
    """
    from ..config import DataConfig, _build

    data = info.extra.get("data")
    if not isinstance(data, dict):
        raise ValueError(f"model {info.name!r} records no data settings, so its split cannot be rebuilt")
    cfg = _build(DataConfig, data, "data")
    if "group_copies" not in data:  # trained before copies were kept together: its split as it was
        cfg.group_copies = False
    if data_root:
        cfg.root = str(data_root)
    # absolute, so that two files' face paths compare as paths whichever way each records its
    # folder (a user test: the shipped model's '../shared/...' never met a run's '/work/shared/...',
    # and an ensemble with it was scored on faces it had trained on)
    cfg.root = str(Path(cfg.root).expanduser().absolute())
    return cfg, int(info.extra.get("seed", 0))


def model_data(info: Any, data_root: str | None = None) -> DataBundle:
    """The model's train / val / test split (images not decoded yet), labelled for the
    tasks that answer at inference."""
    cfg, seed = recorded_data(info, data_root)
    if not Path(cfg.root).exists():
        if data_root:  # (never ask for the flag just passed)
            raise FileNotFoundError(f"the {data_place(data_root)} {data_root} given with --data-root does not exist")
        written = str(info.extra["data"].get("root", ""))
        where = "" if Path(written).expanduser().is_absolute() else f" ({written!r} relative to the current folder)"
        raise FileNotFoundError(f"the data folder {cfg.root}{where} that model {info.name!r} records does not exist; "
                                "pass the folder where it lives now with --data-root")
    from ..tasks import build_task

    # The split is stratified on every task the model trained, training-only ones too.
    trained = [build_task(t) for t in info.extra.get("split_tasks") or info.tasks]
    answering = info.build_tasks()
    # A column made after the split (Task.derives_label) gives no strata: its tasks are left out
    # unless they answer, so no teacher head is fitted only to be dropped.
    names = {t.name for t in answering}
    trained = [t for t in trained if not t.derives_label or t.name in names]
    if cfg.teacher and not any(t.label == TEACHER_COLUMN for t in answering):
        # Only a training-only task reads the teacher's vectors, and a vector gives no strata
        # (Task.strata), so the split is the same without them; computing dlib's descriptor
        # for every face only to drop it would cost minutes on a fresh machine.
        cfg.teacher = None
        trained = [t for t in trained if t.label != TEACHER_COLUMN]
    if cfg.targets and not any(str(t.label).startswith(TARGET_PREFIX) for t in answering):
        # Target columns (data.targets) feed training-only tasks and give no strata: the split is
        # the same without the file, which a model's user need not have.
        cfg.targets = None
        trained = [t for t in trained if not str(t.label).startswith(TARGET_PREFIX)]
    return build_data(cfg, trained, seed, load_images=False).with_tasks(answering)


def same_files(paths: Sequence[str]) -> set[str]:
    """``paths`` as comparable names of files: resolved (``..``, symbolic links and relative
    folders taken out), so two models' splits compare whichever way each recorded its data
    folder."""
    return {os.path.realpath(p) for p in paths}


def check_held_out(scored: Sequence[str], split: str, models: Sequence[tuple[str, Any]],
                   data_root: str | None = None) -> None:
    """A ``ValueError`` unless the faces ``scored`` (the first model's ``split``, already built by
    the caller) are held out from every other model: none of them among its training faces,
    nor, for ``test``, among its validation faces (which chose its best epoch).
    ``models``: ``(label, ModelInfo)``, the first being the one whose split is scored.

    An ensemble scored on faces that one member trained on would read too well. The splits
    are rebuilt from what each file records and compared file by file: members may differ
    in their train / validation partition (under the CORAL protocol the test list is fixed
    and the validation faces follow the training seed) as long as the scored faces are
    held out from all of them.
    """
    (first, _), *rest = models
    faces = same_files(scored)
    for label, other in rest:
        theirs = model_data(other, data_root)
        for part in ("train", "val") if split == "test" else ("train",):
            seen = len(faces & same_files(theirs.split(part).paths))
            if seen:
                raise ValueError(f"{label} was trained on another split than {first}: {seen} of the {split} faces "
                                 f"scored are among its {part} faces, so an ensemble with it cannot be scored on them")


def sample(part: FaceSet, n: int | None) -> FaceSet:
    """``n`` faces spread evenly over ``part`` (all when ``n`` is ``None``), decoded into memory."""
    if n is not None and n < len(part):
        keep = evenly_spaced(len(part), n)
        part = FaceSet([part.paths[i] for i in keep], part.labels[keep], part.size, None, part.workers,
                       part.rows[keep] if len(part.rows) else part.rows,
                       {k: np.asarray(v)[keep] for k, v in part.attributes.items()})
    part.cache(progress=len(part) > 2000 and sys.stderr.isatty())  # no bar drawn into a log file
    return part
