"""Where a model runs (``device="auto"``) and how runs are seeded."""

from __future__ import annotations

import random

import numpy as np


def check_device_name(name: str) -> None:
    """Refuse a device name facemtl does not know, in one sentence and without torch (every
    runtime checks it, also those that would otherwise ignore it): ``auto``, ``cpu``,
    ``cuda`` or ``cuda:N``."""
    import re

    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(name)):
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")


def resolve_device(name: str = "auto"):
    """A ``torch.device`` from a name: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    An unknown name or a CUDA device on a machine without one is a ``ValueError`` in one sentence.
    """
    import torch

    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for, but this machine has no CUDA GPU")
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def to_device(t, device):
    """Tensor ``t`` on ``device`` (a ``torch.device``); from the CPU to a GPU through pinned memory, without blocking.

    A pageable host tensor makes the copy wait for the GPU to finish what is queued, so
    a step that copied several small tensors would stall the host at each of them.
    """
    if device.type == "cuda" and t.device.type == "cpu" and not t.is_pinned():
        t = t.pin_memory()
    return t.to(device, non_blocking=True)
