"""Runtimes: what runs a model file's network. One table, chosen by file suffix or by name.

A runtime is a class with ``name``, ``info`` (a :class:`~facemtl.inference.model_info.ModelInfo`
read from the file) and ``run(batch uint8 (N, 3, S, S)) -> {task: float32 (N, D)}``; its
module is imported only when it is used, so the plain install never imports torch.
To add one: a module here and a row below.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RuntimeSpec:
    name: str
    #: File suffixes this runtime reads (the first match in table order wins).
    suffixes: tuple[str, ...]
    #: ``module:Class`` implementing it.
    target: str
    #: The install extra that brings what it needs, named in the error when it is missing.
    extra: str
    #: Python package whose absence means the extra is missing.
    needs: str


RUNTIMES: dict[str, RuntimeSpec] = {
    "torch": RuntimeSpec("torch", (".pt", ".pth"), "facemtl.inference.runtimes.pytorch:TorchRuntime", "train", "torch"),
}


def runtime_for(path: str | Path, name: str | None = None) -> RuntimeSpec:
    """The runtime named ``name``, or the one that reads ``path``'s suffix."""
    if name is not None:
        try:
            return RUNTIMES[name]
        except KeyError:
            raise ValueError(f"unknown runtime {name!r}; choose one of: {', '.join(RUNTIMES)}") from None
    suffix = "".join(Path(path).suffixes[-1:]).lower()
    for spec in RUNTIMES.values():
        if suffix in spec.suffixes:
            return spec
    known = ", ".join(s for spec in RUNTIMES.values() for s in spec.suffixes)
    raise ValueError(f"no runtime reads {Path(path).name}: facemtl model files end in {known}")


def open_runtime(path: str | Path, name: str | None = None, **options: Any) -> Any:
    """Load ``path`` with its runtime (see :func:`runtime_for`); ``options`` go to the runtime."""
    spec = runtime_for(path, name)
    if importlib.util.find_spec(spec.needs) is None:
        raise RuntimeError(f"the {spec.name} runtime needs {spec.needs}: pip install 'facemtl[{spec.extra}]'")
    module, cls = spec.target.split(":")
    return getattr(importlib.import_module(module), cls)(path, **options)
