"""The ONNX Runtime runtime: ``.onnx`` files from ``facemtl export`` (the plain install's runtime)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..model_files import read_onnx
from . import check_io, default_threads


class OnnxRuntime:
    """Raw outputs of an exported ONNX network on batches of ``uint8 (N, 3, S, S)`` crops.

    ``device``: ``auto`` (CUDA when ONNX Runtime has its CUDA provider, else CPU), ``cpu``
    or ``cuda``. ``threads``: intra-op threads (default: one per core; the pool never
    spins, see :mod:`facemtl.inference.runtimes`). The file is checked (no custom
    operators, no external data, facemtl metadata) before ONNX Runtime sees its bytes.
    """

    name = "onnxruntime"

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None) -> None:
        import onnxruntime as ort

        data, self.info = read_onnx(path)
        self.precision = str(self.info.extra.get("precision", "fp32"))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or default_threads()
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        opts.log_severity_level = 3
        has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
        if device.startswith("cuda") and not has_cuda:
            raise ValueError(f"device {device!r} was asked for, but this ONNX Runtime has no CUDA provider")
        use_cuda = has_cuda and device != "cpu"
        providers = (["CUDAExecutionProvider"] if use_cuda else []) + ["CPUExecutionProvider"]
        self.device = "cuda" if use_cuda else "cpu"
        try:
            self.session = ort.InferenceSession(data, opts, providers=providers)
        except Exception as exc:  # a graph ONNX Runtime cannot build
            raise ValueError(f"ONNX Runtime cannot load {path}: {str(exc).splitlines()[0][:200]}") from None
        self.input = self.session.get_inputs()[0].name
        self.outputs = [t.name for t in self.info.build_tasks()]
        check_io(self.info, [(i.name, i.shape, i.type) for i in self.session.get_inputs()],
                 {o.name: (o.shape[-1] if o.shape else None) for o in self.session.get_outputs()}, path)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``uint8 (N, 3, S, S)`` -> ``{task: float32 (N, D)}``."""
        return dict(zip(self.outputs, self.session.run(self.outputs, {self.input: batch})))
