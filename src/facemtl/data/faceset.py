"""One split's images and labels (:class:`FaceSet`), and whether they are decoded into memory
once or on the fly (:func:`cache_decision`).

``FaceSet`` holds, for one split, the image paths, the label matrix ``(N, T) float32`` (one
column per task, ``NaN`` = missing) and, when cached, the decoded images ``(N, 3, S, S)
uint8``. ``batches()`` yields ``(images uint8 (B, 3, S, S), labels (B, T))`` either from the
cache or from loader processes that decode on the fly.

Kept apart from :mod:`facemtl.data.dataset`, which reads, checks and splits the data into them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .images import decode_all, decoded
from .label_checks import warn


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
    #: Relative probability of drawing each row in a shuffled epoch (balanced sampling), or None.
    sample_weights: torch.Tensor | None = None
    #: ``(row, why)`` of each image :meth:`cache` could not decode (their labels masked).
    unreadable: list[tuple[int, str]] = field(default_factory=list)
    #: Paths the streamed path (:meth:`batches` without a cache) said it could not read: each said once a run.
    said: set[str] = field(default_factory=set, repr=False)

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
            bad: list[tuple[int, str]] = []
            self.images = decode_all(self.paths, self.size, self.workers, progress, unreadable=bad)
            self.unreadable = bad
            if bad:  # left out as faces with no label: the run goes on, and says which
                self.labels[[k for k, _ in bad]] = float("nan")
                first = "; ".join(f"{self.paths[k]}: {w}" for k, w in bad[:3])
                warn(f"{len(bad)} image(s) cannot be read and are left out (every label masked): {first}"
                     + (" ..." if len(bad) > 3 else ""))

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
        if shuffle and self.sample_weights is not None:  # balanced: cells drawn equally often (each rank its own draws)
            k = n if shard is None else -(-n // shard[1])
            order = torch.multinomial(self.sample_weights, k, replacement=True, generator=generator)
        elif shard is not None:
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
            # Every DataLoader iterator draws its workers' base seed from this generator, by default
            # PyTorch's global one, which also draws dropout: each epoch's two loaders then moved
            # the run's random state, so the streamed path trained otherwise than the cached one
            # (a user test). Decoding draws nothing, so a generator of its own changes nothing else.
            generator=torch.Generator(),
        )
        done = 0
        for images, labels, why in loader:  # said here, once a path: a worker's warning came every epoch
            for k, w in enumerate(why):
                path = self.paths[int(order[done + k])]
                if w and path not in self.said:
                    self.said.add(path)
                    warn(f"image {path} cannot be read and is left out (every label masked): {w}"
                         + (" (said once; it stays left out)" if len(self.said) == 1 else ""))
            done += len(why)
            yield images, labels


class _Rows(Dataset):
    def __init__(self, paths: Sequence[str], labels: torch.Tensor, size: int) -> None:
        self.paths, self.labels, self.size = paths, labels, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        """``(image, labels, why)``: a face decoded on the fly, and ``""``; one that cannot be read
        is left out as the cached path leaves it (a black image, every label masked), and ``why``
        says why (the loader's caller says it, once)."""
        try:
            return decoded(self.paths[i], self.size), self.labels[i], ""
        except (OSError, ValueError) as exc:
            return (torch.zeros((3, self.size, self.size), dtype=torch.uint8),
                    torch.full_like(self.labels[i], float("nan")), str(exc) or type(exc).__name__)


def _amount(size: float) -> str:
    """Bytes as GB, or MB under 0.1 GB (a small cache read "0.00 GB")."""
    return f"{size / 1024**3:.2f} GB" if size >= 0.1 * 1024**3 else f"{size / 1024**2:.1f} MB"


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
    size = f"{n:,} images at {cfg.image_size} px take {_amount(per_process)}" + \
        (f" per process, {_amount(need)} for {procs} processes" if procs > 1 else "")
    if cfg.cache == "memory" or (cfg.cache == "auto" and need <= budget):
        return True, f"decoded into memory once: {size} (budget {cfg.cache_limit_gb:g} GB, data.cache={cfg.cache})"
    why = "data.cache=stream" if cfg.cache == "stream" else f"over the {cfg.cache_limit_gb:g} GB budget (data.cache_limit_gb)"
    by = "in the training process" if cfg.workers == 0 else \
        f"by {cfg.workers} loader process{'es' if cfg.workers > 1 else ''}"
    return False, f"decoded on the fly {by}: {size}, {why}"
