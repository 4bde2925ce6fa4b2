"""The TensorRT runtime: FP16 engines that ``facemtl export --format tensorrt`` built on this machine.

Needs a CUDA GPU, the ``tensorrt`` package and a CUDA build of torch (for the device
buffers). UNTESTED: written on a machine without a GPU; the code follows TensorRT 10's
Python API (named I/O tensors, ``execute_async_v3``).

An engine is compiled GPU code for one GPU model and one TensorRT version, so it can
only come from ``facemtl export`` on the machine that runs it; facemtl reads it with
TensorRT's host-code embedding disallowed (an engine that carries host code, such as a
lean runtime, is refused by TensorRT) and only beside its facemtl metadata file
(``<engine>.json``). Load engines you built yourself.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ..model_files import check_digest, read_sidecar, weights_sha256
from . import check_io


class TensorRtRuntime:
    name = "tensorrt"
    precision = "fp16"

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None) -> None:
        import tensorrt as trt
        import torch

        if not torch.cuda.is_available() or device == "cpu":
            raise ValueError("the tensorrt runtime needs a CUDA GPU; use --runtime onnxruntime on the CPU")
        self.info = read_sidecar(path)
        self.device = "cuda"
        self._torch = torch
        logger = trt.Logger(trt.Logger.ERROR)
        runtime = trt.Runtime(logger)
        runtime.engine_host_code_allowed = False
        data = Path(path).read_bytes()
        check_digest(self.info, lambda: weights_sha256(data), Path(path))
        self.engine = runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise ValueError(f"TensorRT cannot load {path} (built for another GPU or TensorRT version?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        check_io(self.info, [(n, list(self.engine.get_tensor_shape(n)), str(self.engine.get_tensor_dtype(n)).lower())
                             for n in inputs], outs, path)
        self.input = inputs[0]
        self.outputs = [t.name for t in self.info.build_tasks()]
        self.stream = torch.cuda.Stream()
        # one execution context (its shapes and tensor addresses) and one CUDA stream: a call at a
        # time (serve analyses uploads in several threads; a shared OpenVINO request mixed them up)
        self._lock = threading.Lock()

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``uint8 (N, 3, S, S)`` -> ``{task: float32 (N, D)}``."""
        with self._lock:
            return self._run(batch)

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(batch)).cuda()
        self.context.set_input_shape(self.input, tuple(x.shape))
        self.context.set_tensor_address(self.input, x.data_ptr())
        outs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            outs[name] = torch.empty(shape, dtype=torch.float32, device="cuda")
            self.context.set_tensor_address(name, outs[name].data_ptr())
        self.context.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()
        return {k: v.cpu().numpy() for k, v in outs.items()}
