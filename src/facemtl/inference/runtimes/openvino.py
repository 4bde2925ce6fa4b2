"""The OpenVINO runtime: IR files (``.xml`` + ``.bin``) from ``facemtl export``, or ``.onnx`` files.

Needs ``facemtl[export]`` (the ``openvino`` package).
"""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np

from ..model_files import read_onnx, read_openvino
from . import check_io, default_threads


class OpenVinoRuntime:
    """Raw outputs of an exported network, compiled by OpenVINO for the CPU.

    ``threads``: inference threads (default: one per core). Arithmetic: ``f32`` for FP32
    files (OpenVINO would otherwise run them in bfloat16 on CPUs that have it, which moves
    ages by a year on about a fifth of faces), as stored for INT8 files; ``precision``
    ``"bf16"`` asks for bfloat16 anyway. The file is checked (standard opsets only,
    facemtl metadata) before OpenVINO reads it, from memory.
    """

    name = "openvino"

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None,
                 precision: str | None = None) -> None:
        import openvino as ov

        if device.startswith("cuda"):
            if Path(path).suffix.lower() == ".onnx":
                raise ValueError("the openvino runtime runs on the CPU; use --runtime onnxruntime or tensorrt for CUDA")
            # an IR: neither of those reads it (a user test was told to use them)
            raise ValueError(f"the openvino runtime runs on the CPU, and no CUDA runtime reads an OpenVINO IR such as "
                             f"{Path(path).name}: for CUDA, export the model to .onnx (or .engine) with 'facemtl "
                             "export', or leave out --device cuda")
        core = ov.Core()
        if Path(path).suffix.lower() == ".onnx":
            data, self.info = read_onnx(path)
            model = core.read_model(io.BytesIO(data))
        else:
            xml, weights, self.info = read_openvino(path)
            try:
                model = core.read_model(xml, ov.Tensor(np.frombuffer(weights, np.uint8)))
            except RuntimeError as exc:  # OpenVINO's message is several lines of C++ check: keep its last
                said = [line for line in str(exc).splitlines() if line.strip()]
                raise ValueError(f"OpenVINO cannot read {path}: {said[-1][:200] if said else type(exc).__name__} "
                                 "(export the model again)") from None
        self.precision = precision or str(self.info.extra.get("precision", "fp32"))
        config = {"INFERENCE_NUM_THREADS": threads or default_threads(), "PERFORMANCE_HINT": "LATENCY",
                  "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bf16" else "f32"}
        try:
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:
            raise ValueError(f"OpenVINO cannot compile {path}: {str(exc).splitlines()[0][:200]}") from None
        # One inference request per thread: a request's input and output tensors are its state, and
        # serve analyses uploads in several threads at once (one shared request gave an upload
        # another's answers, in a review: 89 of 300 concurrent runs).
        self._requests = threading.local()
        self.device = "cpu"
        inputs = [(i.any_name, [d.get_length() if d.is_static else None for d in i.get_partial_shape()],
                   i.get_element_type().get_type_name()) for i in self.compiled.inputs]
        outs = {o.any_name: k for k, o in enumerate(self.compiled.outputs)}
        widths = {o.any_name: (o.get_partial_shape()[-1].get_length() if o.get_partial_shape().rank.is_static
                               and o.get_partial_shape()[-1].is_static else None) for o in self.compiled.outputs}
        check_io(self.info, inputs, widths, path)
        self.outputs = [(t.name, outs[t.name]) for t in self.info.build_tasks()]

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``uint8 (N, 3, S, S)`` -> ``{task: float32 (N, D)}``."""
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self.compiled.create_infer_request()
        res = request.infer({0: batch})
        return {name: np.array(res[k], dtype=np.float32, copy=True) for name, k in self.outputs}
