"""ONNX exporters: FP32 (``onnx``), FP32 with FP16-stored weights (``onnx-fp16w``) and static INT8
(``onnx-int8``, ONNX Runtime's QDQ quantizer, then bias correction)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..inference.model_files import DIGEST_KEY, INFO_KEY, onnx_weights_digest
from .bias_correction import correct_bias
from .network import exported_info, info_json, to_onnx, with_check_failed


def put_metadata(model: Any, info: Any) -> None:
    """Store ``info`` (ModelInfo JSON) in the ``metadata_props`` of ``model`` (an ``onnx.ModelProto``),
    with the SHA-256 of the model's weights as they are now (so call it last)."""
    info.extra[DIGEST_KEY] = onnx_weights_digest(model)
    del model.metadata_props[:]
    model.metadata_props.add(key=INFO_KEY, value=info_json(info))
    model.producer_name = "facemtl"


def set_metadata(path: str | Path, info: Any) -> None:
    """Store ``info`` (ModelInfo JSON) in the ONNX file's ``metadata_props``."""
    import onnx

    model = onnx.load(str(path))
    put_metadata(model, info)
    onnx.save(model, str(path))


def mark_check_failed(path: str | Path, failed: dict[str, Any]) -> None:
    """Record in the ONNX file's metadata that its check failed (``extra.check_failed``)."""
    import onnx

    model = onnx.load(str(path))
    for p in model.metadata_props:
        if p.key == INFO_KEY:
            p.value = with_check_failed(p.value, failed)
    onnx.save(model, str(path))


def export_onnx(source: Any, out: Path, faces: Any, fmt: Any, opset: int = 18, **_: Any) -> None:
    """The network as FP32 ONNX at ``opset``, with a dynamic batch axis and its ModelInfo."""
    to_onnx(source, str(out), opset)
    set_metadata(out, exported_info(source.info, fmt, opset=opset))


def export_onnx_fp16w(source: Any, out: Path, faces: Any, fmt: Any, opset: int = 18, **_: Any) -> None:
    """FP32 ONNX whose weights are stored as FP16: half the file, the same arithmetic.

    Every FP32 initializer of 64 values or more is stored as FP16 and turned back by a
    ``Cast`` node in front of the graph; ONNX Runtime folds those casts into FP32 constants
    when it loads the file (constant folding, on at every optimisation level), so the network
    runs as fast as the FP32 file, on weights rounded to FP16 (about 3 significant digits).
    Written here because onnxconverter-common's ``convert_float_to_float16`` also moves the
    arithmetic to FP16, which ONNX Runtime's CPU kernels mostly lack.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    to_onnx(source, str(out), opset)
    model = onnx.load(str(out))
    graph = model.graph
    inits, casts = [], []
    for init in graph.initializer:
        w = numpy_helper.to_array(init)
        if w.dtype != np.float32 or w.size < 64:  # biases and scalars: too small to matter
            inits.append(init)
            continue
        half = numpy_helper.from_array(w.astype(np.float16), init.name + "__fp16")
        inits.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                      name=init.name + "__to_fp32"))
    del graph.initializer[:]
    graph.initializer.extend(inits)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    put_metadata(model, exported_info(source.info, fmt, opset=opset))
    onnx.save(model, str(out))


def keep_float(path: Path) -> list[str]:
    """Names of the nodes INT8 leaves in FP32: the first Conv, and every Gemm / MatMul that
    writes a graph output (a task head)."""
    import onnx

    graph = onnx.load(str(path)).graph
    outputs = {o.name for o in graph.output}
    convs = [n.name for n in graph.node if n.op_type == "Conv"]
    heads = [n.name for n in graph.node if n.op_type in ("Gemm", "MatMul") and set(n.output) & outputs]
    return convs[:1] + heads


class _Calibration:
    """ONNX Runtime's calibration reader over ``uint8 (N, 3, S, S)`` faces, 16 at a time."""

    def __init__(self, images: np.ndarray) -> None:
        self.batches = iter([images[i : i + 16] for i in range(0, len(images), 16)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        b = next(self.batches, None)
        return None if b is None else {"images": b}


def export_onnx_int8(source: Any, out: Path, faces: Any, fmt: Any, opset: int = 18, calibration: int = 300,
                     **_: Any) -> None:
    """FP32 ONNX, then static quantization: QDQ nodes, per-channel INT8 weights, UINT8
    activations with ranges calibrated (min-max) on ``calibration`` real training faces.

    U8 activations with S8 weights is the pairing x86 VNNI instructions run fastest
    (ONNX Runtime's quantization guide). Two kinds of layer stay FP32 (:func:`keep_float`):
    the first convolution, whose three input channels carry the whole image (quantizing it
    alone moved the age MAE on 1,000 test faces from 5.10 to 5.19, kept FP32: 5.14), and
    the task heads, whose outputs are the answers (a few thousand multiply-adds).

    Then bias correction (:mod:`facemtl.export.bias_correction`) takes the mean shift that
    rounding the weights to INT8 puts on each convolution's output out of its bias, measured on
    the same calibration faces: on the shipped model's 4,211 test faces, age MAE 5.06 -> 4.98
    (FP32: 4.95), gender +0.14 and race +0.09 points (neither with confidence).
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    reader = type("Reader", (_Calibration, CalibrationDataReader), {})(faces.calibration)
    with tempfile.TemporaryDirectory() as tmp:
        fp32, pre = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx"
        to_onnx(source, str(fp32), opset)
        quant_pre_process(str(fp32), str(pre))
        quantize_static(str(pre), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=keep_float(pre))
        model = onnx.load(str(out))
        corrected = correct_bias(onnx.load(str(pre)), model, faces.calibration)
        put_metadata(model, exported_info(source.info, fmt, opset=opset, calibration_faces=len(faces.calibration),
                                          bias_correction=corrected))
        onnx.save(model, str(out))
