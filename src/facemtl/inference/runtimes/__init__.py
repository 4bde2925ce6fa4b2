"""Runtimes: what runs a model file's network. One table, chosen by file suffix or by name.

A runtime is a class with ``name``, ``info`` (a :class:`~facemtl.inference.model_info.ModelInfo`
read from the file), ``precision`` and ``run(batch uint8 (N, 3, S, S)) -> {task: float32 (N, D)}``;
its module is imported only when it is used, so the plain install never imports torch.
To add one: a module here and a row below.

Threads. ``threads`` is the runtime's intra-op thread count. The default
(:func:`default_threads`) is one per usable core, and the ONNX Runtime and OpenVINO
pools are told not to spin while they wait for work: a spinning pool keeps every core
busy between batches, which starves the pipeline's decode/detect workers and any other
process sharing the cores (that is how eager PyTorch collapsed to 17 faces/s beside
another program). Measured with ``facemtl benchmark``; see README "Speed".
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...system import usable_cores


@dataclass(frozen=True)
class RuntimeSpec:
    name: str
    #: File suffixes this runtime reads; the runtime listed first for a suffix is its default.
    suffixes: tuple[str, ...]
    #: ``module:Class`` implementing it.
    target: str
    #: The install extra that brings what it needs, named in the error when it is missing.
    extra: str
    #: Python packages whose absence means the extra is missing.
    needs: tuple[str, ...]
    #: One line for ``--help`` and the README.
    about: str = ""


RUNTIMES: dict[str, RuntimeSpec] = {
    "onnxruntime": RuntimeSpec("onnxruntime", (".onnx",), "facemtl.inference.runtimes.onnxrt:OnnxRuntime", "",
                               ("onnxruntime", "onnx"), "ONNX Runtime (the plain install): .onnx files, CPU or CUDA"),
    "openvino": RuntimeSpec("openvino", (".xml", ".onnx"), "facemtl.inference.runtimes.openvino:OpenVinoRuntime",
                            "export", ("openvino", "onnx"), "OpenVINO: IR (.xml + .bin) or .onnx files, Intel CPUs"),
    "torch": RuntimeSpec("torch", (".pt", ".pth"), "facemtl.inference.runtimes.pytorch:TorchRuntime", "train",
                         ("torch",), "eager PyTorch: training checkpoints (.pt)"),
    "tensorrt": RuntimeSpec("tensorrt", (".engine", ".plan"), "facemtl.inference.runtimes.tensorrt:TensorRtRuntime",
                            "train", ("tensorrt", "torch"), "TensorRT: FP16 engines built by 'facemtl export' (CUDA)"),
}


def known_runtime(name: str) -> str:
    """``name`` if :data:`RUNTIMES` has it, after loading the plugins (:mod:`facemtl.plugins`), which
    may add a row, where it does not; ``ValueError`` naming the choices (and a plugin that failed)
    otherwise."""
    if name not in RUNTIMES:
        from ...plugins import failure_suffix

        _look_for_runtime(name)
        if name not in RUNTIMES:
            raise ValueError(f"unknown runtime {name!r}; choose one of: {', '.join(RUNTIMES)}{failure_suffix()}")
    return name


def _look_for_runtime(name: str) -> None:
    """Let a plugin add the runtime ``name`` (:func:`facemtl.plugins.look_for`): its entry point
    names a :class:`RuntimeSpec` of that name."""
    from ...plugins import look_for

    def take(spec: Any) -> None:
        if not isinstance(spec, RuntimeSpec) or spec.name != name:
            raise ValueError(f"a runtime's entry point names a RuntimeSpec called {name!r}, not "
                             + (f"one called {spec.name!r}" if isinstance(spec, RuntimeSpec) else
                                f"a {type(spec).__name__}"))
        RUNTIMES[name] = spec

    look_for("runtime", name, lambda: name in RUNTIMES, take)


def default_threads() -> int:
    """Intra-op threads a runtime uses when not told: one per usable core."""
    return usable_cores()


def runtime_for(path: str | Path, name: str | None = None) -> RuntimeSpec:
    """The runtime named ``name``, or the first one in :data:`RUNTIMES` that reads ``path``'s suffix."""
    suffix = Path(path).suffix.lower()
    if name is not None:
        spec = RUNTIMES[known_runtime(name)]
        if suffix not in spec.suffixes:
            raise ValueError(f"the {name} runtime cannot read {Path(path).name}: it reads {', '.join(spec.suffixes)} files")
        return spec
    spec = _reading(suffix)
    if spec is None:  # a plugin's runtime may read it: load them (each entry point, then the modules)
        failed = _load_plugin_runtimes()
        spec = _reading(suffix)
    if spec is not None:
        return spec
    known = ", ".join(dict.fromkeys(s for spec in RUNTIMES.values() for s in spec.suffixes))
    raise ValueError(f"no runtime reads {Path(path).name}: facemtl model files end in {known}"
                     + (f" ({'; '.join(failed)})" if failed else ""))


def _reading(suffix: str) -> RuntimeSpec | None:
    """The first runtime in :data:`RUNTIMES` that reads files ending in ``suffix``."""
    return next((spec for spec in RUNTIMES.values() if suffix in spec.suffixes), None)


def _load_plugin_runtimes() -> list[str]:
    """Load every plugin that may add a runtime; the sentences of those that failed."""
    from ...plugins import PluginError, declared_names, failures, load_plugins

    failed = []
    for name in declared_names("runtime"):
        try:
            _look_for_runtime(name)
        except PluginError as exc:
            failed.append(str(exc))
    load_plugins()
    return failed + failures()


def missing_extra(spec: RuntimeSpec) -> str | None:
    """The one sentence saying what to install when ``spec``'s packages are absent, else ``None``."""
    missing = [p for p in spec.needs if importlib.util.find_spec(p) is None]
    if not missing:
        return None
    # tensorrt is in no extra (NVIDIA's wheel wants a CUDA machine): name its own package
    extras = [f"'facemtl[{spec.extra}]'"] if spec.extra and set(missing) - {"tensorrt"} else []
    what = " and ".join(extras + (["tensorrt"] if "tensorrt" in missing else [])) or "facemtl"
    return f"the {spec.name} runtime needs {', '.join(missing)}: pip install {what}"


def open_runtime(path: str | Path, name: str | None = None, **options: Any) -> Any:
    """Load ``path`` with its runtime (see :func:`runtime_for`); ``options`` (``device``,
    ``threads``) go to the runtime."""
    from ...device import check_device_name

    check_device_name(options.get("device", "auto"))
    spec = runtime_for(path, name)
    msg = missing_extra(spec)
    if msg:
        raise RuntimeError(msg)
    module, cls = spec.target.split(":")
    return getattr(importlib.import_module(module), cls)(path, **options)


def check_io(info: Any, inputs: list[tuple[str, Any, str]], outputs: list[str] | dict[str, Any], path: Any) -> None:
    """Refuse a file whose network does not take ``uint8 (N, 3, S, S)`` or lacks an output per task;
    ``outputs`` given as ``{name: width}`` (``width`` ``None`` where the runtime does not know it):
    refuse one whose width is not its task's (metadata that does not describe the network would
    drop or invent classes silently)."""
    tasks = info.build_tasks()
    names = [t.name for t in tasks]
    if len(inputs) != 1:
        raise ValueError(f"{path} is not a facemtl model: its network takes {len(inputs)} inputs, not one")
    _, shape, dtype = inputs[0]
    s = info.image_size
    is_uint8 = "uint8" in str(dtype).lower() or str(dtype) == "u8"
    if not is_uint8 or list(shape)[1:] != [3, s, s]:
        raise ValueError(f"{path} is not a facemtl model: its input is {dtype} {list(shape)}, not uint8 (N, 3, {s}, {s})")
    lacking = [n for n in names if n not in outputs]
    if lacking:
        raise ValueError(f"{path} is not a facemtl model: it has no output for task(s) {', '.join(lacking)}")
    if isinstance(outputs, dict):
        for t in tasks:
            width = outputs[t.name]
            if isinstance(width, int) and width != t.output_size:
                raise ValueError(f"{path} does not match its own metadata: the network's {t.name!r} output is {width} "
                                 f"wide, and its metadata describes {t.output_size} (a damaged or edited file)")
