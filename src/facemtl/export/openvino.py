"""OpenVINO exporters: FP32 IR (``openvino``) and INT8 IR quantized by NNCF (``openvino-int8``).

Both convert the ONNX export with OpenVINO's own converter; NNCF quantizes the OpenVINO
model (its PyTorch backend is not used: it fails on torch 2.13).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ..inference.model_files import INFO_KEY
from .network import exported_info, info_json, to_onnx


def _convert(source: Any, opset: int) -> Any:
    import openvino as ov

    with tempfile.TemporaryDirectory() as tmp:
        onnx_file = Path(tmp) / "fp32.onnx"
        to_onnx(source, str(onnx_file), opset)
        return ov.convert_model(str(onnx_file))


def _save(model: Any, out: Path, info: Any) -> None:
    import openvino as ov

    model.set_rt_info(info_json(info), [INFO_KEY])
    # FP32 weights as they are: compress_to_fp16 would round a checkpoint's weights.
    ov.save_model(model, str(out), compress_to_fp16=False)


def export_openvino(source: Any, out: Path, faces: Any, fmt: Any, opset: int = 18, **_: Any) -> None:
    """The network as an FP32 OpenVINO IR (``out`` = the ``.xml``; the ``.bin`` lands beside it)."""
    _save(_convert(source, opset), out, exported_info(source.info, fmt, opset=opset))


def export_openvino_int8(source: Any, out: Path, faces: Any, fmt: Any, opset: int = 18, calibration: int = 300,
                         **_: Any) -> None:
    """FP32 IR, then NNCF post-training quantization (the mixed preset's defaults: per-channel
    symmetric INT8 weights, activation ranges from ``calibration`` real training faces,
    fast bias correction)."""
    import nncf

    model = _convert(source, opset)
    images = faces.calibration
    data = nncf.Dataset([images[i : i + 1] for i in range(len(images))])
    quantized = nncf.quantize(model, data, subset_size=len(images))
    _save(quantized, out, exported_info(source.info, fmt, opset=opset, calibration_faces=len(images)))
