"""TensorRT exporter: an FP16 engine, built from the ONNX export on the machine's CUDA GPU.

UNTESTED: written on a machine without a GPU, following TensorRT 10's Python API.
Built only where CUDA and TensorRT exist; anywhere else :func:`export_tensorrt` refuses
in one sentence before doing any work. The engine cannot hold metadata, so the
ModelInfo goes into ``<engine>.json`` beside it.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from ..inference.model_files import DIGEST_KEY, INFO_KEY, weights_sha256
from .network import exported_info, to_onnx, with_check_failed


def tensorrt_unavailable() -> str | None:
    """Why no engine can be built here (one sentence), or ``None`` when it can."""
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        return "the tensorrt format needs NVIDIA's tensorrt package and a CUDA GPU; this machine has no tensorrt"
    import torch

    if not torch.cuda.is_available():
        return "the tensorrt format needs a CUDA GPU, and this machine has none"
    return None


def mark_check_failed(path: str | Path, failed: dict[str, Any]) -> None:
    """Record in the engine's metadata file (``<engine>.json``) that its check failed."""
    side = Path(str(path) + ".json")
    d = json.loads(side.read_text())
    d[INFO_KEY] = json.loads(with_check_failed(json.dumps(d[INFO_KEY]), failed))
    side.write_text(json.dumps(d, default=str))


def export_tensorrt(source: Any, out: Path, faces: Any, fmt: Any, opset: int = 18, max_batch: int = 64,
                    **_: Any) -> None:
    why = tensorrt_unavailable()
    if why:
        raise RuntimeError(why)
    import tensorrt as trt

    s = source.info.image_size
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_file = Path(tmp) / "fp32.onnx"
        to_onnx(source, str(onnx_file), opset)
        if not parser.parse(onnx_file.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT cannot parse the exported network: {errors}")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape("images", (1, 3, s, s), (min(32, max_batch), 3, s, s), (max_batch, 3, s, s))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError("TensorRT could not build an engine for this network")
    data = bytes(engine)
    Path(out).write_bytes(data)
    info = exported_info(source.info, fmt, opset=opset, max_batch=max_batch, tensorrt=trt.__version__,
                         **{DIGEST_KEY: weights_sha256(data)})
    Path(str(out) + ".json").write_text(json.dumps({INFO_KEY: info.to_dict()}, default=str))
