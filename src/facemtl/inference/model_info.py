"""What a model file says about itself: enough to use it with no YAML and no checkpoint beside it.

Every runtime reads one of these from its model file (a PyTorch checkpoint's config, an
ONNX file's metadata, ...): the model's name and version, its tasks (types, classes,
ordinal ranks and decoding, as :meth:`Task.to_dict` writes them) and its input (side,
layout, and the normalisation the network applies inside itself).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..tasks import Task, build_task


@dataclass
class ModelInfo:
    #: The recipe's name (``config.name``), e.g. ``cpu``.
    name: str
    #: A version that changes whenever the weights do: the recorded one, or the first 12
    #: hex digits of the SHA-256 of the weights file.
    version: str
    #: Task specs, as :meth:`Task.to_dict` writes them (``type`` plus the task's settings).
    tasks: list[dict[str, Any]]
    #: Side in pixels of the square aligned crop the network reads.
    image_size: int
    #: The network's input: ``uint8 (N, 3, S, S)`` RGB; an exported network scales by 1/255
    #: and normalises with ``(x - mean) / std`` inside itself (a ``.pt`` one is given the
    #: scaled floats by :func:`facemtl.preprocess.to_input` and normalises inside itself).
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    #: Where the weights came from (a file name) and anything else the writer recorded.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def input_layout(self) -> str:
        return f"uint8 (N, 3, {self.image_size}, {self.image_size}) RGB, scaled by 1/255 and normalised inside the network"

    def build_tasks(self) -> list[Task]:
        """The tasks that answer at inference (training-only tasks are left out)."""
        return [t for t in (build_task(s) for s in self.tasks) if t.inference]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelInfo":
        known = {k: d[k] for k in ("name", "version", "tasks", "image_size", "mean", "std", "extra") if k in d}
        return cls(**known)


def file_version(path: str | Path) -> str:
    """First 12 hex digits of the SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]
