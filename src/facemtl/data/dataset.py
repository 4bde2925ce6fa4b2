"""From a :class:`DataConfig` and the tasks to train / val / test sets of images and labels.

``FaceSet`` holds, for one split, the image paths, the label matrix
``(N, T) float32`` (one column per task, ``NaN`` = missing) and, when cached,
the decoded images ``(N, 3, S, S) uint8``. ``batches()`` yields
``(images uint8 (B, 3, S, S), labels (B, T))`` either from the cache or from
loader processes that decode on the fly.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..tasks import Task
from .images import decode_all, read_image
from .splits import carve_validation, strata_key, stratified_split
from .table import LabelTable, evenly_spaced



def read_table(cfg: Any) -> LabelTable:
    """Run the reader named by ``cfg.dataset`` (imports only that reader)."""
    root = Path(cfg.root)
    if not root.exists():
        raise FileNotFoundError(f"data folder {root} does not exist")
    if cfg.dataset == "utkface":
        from .utkface import read_utkface

        return read_utkface(root, "coral" if cfg.split == "coral" else "all", limit=cfg.limit)
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
    elif cfg.dataset == "csv":
        from .manifest import read_manifest

        table = read_manifest(root, path_column=cfg.path_column, columns=cfg.columns)
    else:
        raise ValueError(f"unknown dataset {cfg.dataset!r}; choose utkface, adience, celeba, fairface, csv or shards")
    if cfg.limit is not None:
        table = table.subset(evenly_spaced(len(table), cfg.limit))
    return table


@dataclass
class FaceSet:
    paths: list[str]
    labels: torch.Tensor
    size: int
    images: torch.Tensor | None = None
    workers: int = 2
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: Every label column of the data for these rows (also those no task reads), for subgroup studies.
    attributes: dict[str, np.ndarray] = field(default_factory=dict)

    def subset(self, idx: np.ndarray) -> "FaceSet":
        """The rows ``idx`` (cache rows shared by indexing, labels and attributes sliced)."""
        idx = np.asarray(idx, dtype=np.int64)
        t = torch.from_numpy(idx)
        rows = self.rows[idx] if len(self.rows) == len(self) else self.rows
        return FaceSet([self.paths[i] for i in idx], self.labels[t], self.size,
                       None if self.images is None else self.images[t], self.workers, rows,
                       {k: v[idx] for k, v in self.attributes.items()})

    def with_labels(self, labels: np.ndarray) -> "FaceSet":
        """The same images (cache shared, not copied) with another label matrix."""
        return FaceSet(self.paths, torch.from_numpy(np.asarray(labels, np.float32)), self.size, self.images,
                       self.workers, self.rows, self.attributes)

    def __len__(self) -> int:
        return len(self.paths)

    def cache(self, progress: bool = False) -> None:
        if self.images is None:
            self.images = decode_all(self.paths, self.size, self.workers, progress)

    def batches(
        self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None, drop_last: bool = False,
        shard: tuple[int, int, int, int] | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches ``(uint8 (B, 3, S, S), labels (B, T))`` in a seeded order.

        The order is drawn from ``generator`` here, when called, not when the first
        batch is taken, so however the batches are consumed (in another thread, say)
        they never interleave with the augmentation's draws from the same generator.
        ``shard=(rank, world, seed, epoch)``: this process's share of a distributed run, from
        PyTorch's ``DistributedSampler`` (the same permutation of ``seed + epoch`` on every
        rank, each rank taking every ``world``-th image, padded to equal length).
        """
        n = len(self)
        if shard is not None:
            from torch.utils.data.distributed import DistributedSampler

            rank, world, seed, epoch = shard
            sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=shuffle, seed=seed,
                                         drop_last=drop_last)
            sampler.set_epoch(epoch)
            order = torch.tensor(list(sampler), dtype=torch.long)
        else:
            order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        m = len(order)
        stop = m - (m % batch_size) if drop_last and m >= batch_size else m
        if self.images is None:
            return self._decoded(order[:stop], batch_size)

        def cached() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for i in range(0, stop, batch_size):
                idx = order[i : i + batch_size]
                yield self.images[idx], self.labels[idx]

        return cached()

    def _decoded(self, order: torch.Tensor, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader = DataLoader(
            _Rows(self.paths, self.labels, self.size),
            batch_size=batch_size,
            sampler=order.tolist(),
            num_workers=self.workers,
            persistent_workers=False,
        )
        yield from loader


class _Rows(Dataset):
    def __init__(self, paths: Sequence[str], labels: torch.Tensor, size: int) -> None:
        self.paths, self.labels, self.size = paths, labels, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return torch.from_numpy(read_image(self.paths[i], self.size)).permute(2, 0, 1), self.labels[i]


@dataclass
class DataBundle:
    train: FaceSet
    val: FaceSet
    test: FaceSet
    report: dict[str, Any]
    #: Trivial predictions from training labels, per task (majority class / median).
    baselines: dict[str, float]

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
            cols = [_attribute(fs, t.label) for t in tasks]
            sets[part] = fs.with_labels(np.stack(cols, 1) if cols else np.zeros((len(fs), 0)))
        return DataBundle(sets["train"], sets["val"], sets["test"], dict(self.report),
                          trivial_baselines(tasks, sets["train"].labels.numpy()))


def trivial_baselines(tasks: Sequence[Task], train_labels: np.ndarray) -> dict[str, float]:
    """Per task, the trivial prediction learned from the training labels ``(N, T)``
    (:meth:`Task.baseline`: majority class or median)."""
    return {t.name: t.baseline(train_labels[:, j]) for j, t in enumerate(tasks)}


def _attribute(fs: FaceSet, name: str) -> np.ndarray:
    try:
        return fs.attributes[name]
    except KeyError:
        raise KeyError(f"no label column {name!r}; this data has: {', '.join(sorted(fs.attributes))}") from None


def label_matrix(table: LabelTable, tasks: Sequence[Task]) -> np.ndarray:
    cols = []
    for t in tasks:
        cols.append(table.column(t.label))
    return np.stack(cols, 1).astype(np.float32) if cols else np.zeros((len(table), 0), np.float32)


def assign_splits(table: LabelTable, tasks: Sequence[Task], cfg: Any, seed: int) -> np.ndarray:
    """Split per row; stratified on the tasks' labels, each label column binned by the
    first task that reads it (:meth:`Task.strata`)."""
    readers = {}
    for t in tasks:
        readers.setdefault(t.label, t)
    strata = strata_key([t.strata(table.column(label)) for label, t in readers.items()], len(table))
    if cfg.split == "random":
        return stratified_split(strata, cfg.val_fraction, cfg.test_fraction, seed, table.groups)
    if table.split is None:
        raise ValueError(f"the {cfg.dataset} reader gives no predefined split; use data.split: random")
    split = np.asarray(table.split, dtype=object)
    if not (split == "val").any():
        split = carve_validation(split, strata, cfg.val_fraction, seed, table.groups)
    return split


def read_split(cfg: Any, tasks: Sequence[Task], seed: int = 0) -> tuple[LabelTable, np.ndarray, dict[str, Any]]:
    """The table ``cfg`` (a DataConfig) describes, filtered (``age_range``), with a split per row,
    and the report of what was found and done."""
    table = read_table(cfg)
    report = dict(table.report)
    if cfg.age_range is not None:
        lo, hi = cfg.age_range
        age = table.column("age")
        keep = np.flatnonzero((age >= lo) & (age <= hi))
        report["outside_age_range_dropped"] = int(len(table) - len(keep))
        table = table.subset(keep)
    return table, assign_splits(table, tasks, cfg, seed), report


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
                        trivial_baselines(tasks, sets["train"].labels.numpy()))
    if load_images:
        in_memory, report["image_cache"] = cache_decision(cfg, sum(len(s) for s in sets.values()))
        if in_memory:
            for s in sets.values():
                s.cache(progress=len(s) > 2000 and sys.stderr.isatty())  # no bars in a log file
    return bundle


def cache_decision(cfg: Any, n: int) -> tuple[bool, str]:
    """Whether to decode ``n`` images into memory once, and the sentence that says why.

    ``data.cache``: ``memory`` always, ``stream`` never (decoded on the fly by ``data.workers``
    DataLoader processes, batch by batch), ``auto`` when the decoded images of every process
    on this machine (``LOCAL_WORLD_SIZE`` under torchrun) fit in ``data.cache_limit_gb``.
    """
    import os

    per_process = n * 3 * cfg.image_size**2
    procs = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    need, budget = per_process * procs, cfg.cache_limit_gb * 1024**3
    size = f"{n:,} images at {cfg.image_size} px take {per_process / 1024**3:.2f} GB" + \
        (f" per process, {need / 1024**3:.2f} GB for {procs} processes" if procs > 1 else "")
    if cfg.cache == "memory" or (cfg.cache == "auto" and need <= budget):
        return True, f"decoded into memory once: {size} (budget {cfg.cache_limit_gb:g} GB, data.cache={cfg.cache})"
    why = "data.cache=stream" if cfg.cache == "stream" else f"over the {cfg.cache_limit_gb:g} GB budget (data.cache_limit_gb)"
    return False, f"decoded on the fly by {cfg.workers} loader processes: {size}, {why}"
