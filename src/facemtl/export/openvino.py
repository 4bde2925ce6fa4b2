"""OpenVINO exporters: FP32 IR (``openvino``) and INT8 IR quantized by NNCF (``openvino-int8``).

Both convert the ONNX export with OpenVINO's own converter; NNCF quantizes the OpenVINO
model (its PyTorch backend is not used: it fails on torch 2.13).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ..inference.model_files import DIGEST_KEY, INFO_KEY, weights_sha256
from .network import exported_info, info_json, to_onnx, with_check_failed, with_extra


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
    digest = weights_sha256(Path(out).with_suffix(".bin"))  # known once the .bin is written
    _edit_info(out, lambda text: with_extra(text, **{DIGEST_KEY: digest}))


def _edit_info(path: str | Path, edit: Any) -> None:
    """Replace the value of the ``<facemtl_model_info value="..."/>`` element by ``edit(value)``,
    in the text of the ``.xml``: the network and its ``.bin`` stay byte for byte as they are."""
    import xml.etree.ElementTree as ET
    from xml.sax.saxutils import escape

    path = Path(path)
    node = ET.parse(path).getroot().find(f"rt_info/{INFO_KEY}")
    if node is None or node.get("value") is None:
        raise ValueError(f"{path} carries no facemtl metadata to mark")
    text = path.read_text(encoding="utf-8")
    tag = f'<{INFO_KEY} value="'
    start = text.rindex(tag) + len(tag)
    end = text.index('"', start)  # (the value's own quotes are written as &quot;)
    value = escape(edit(node.get("value")), {'"': "&quot;"})
    path.write_text(text[:start] + value + text[end:], encoding="utf-8")


def mark_check_failed(path: str | Path, failed: dict[str, Any]) -> None:
    """Record in the IR's ``rt_info`` that its check failed (``extra.check_failed``)."""
    _edit_info(path, lambda text: with_check_failed(text, failed))


def export_openvino(source: Any, out: Path, faces: Any, fmt: Any, opset: int = 18, **_: Any) -> None:
    """The network as an FP32 OpenVINO IR (``out`` = the ``.xml``; the ``.bin`` lands beside it)."""
    _save(_convert(source, opset), out, exported_info(source.info, fmt, opset=opset))


def keep_float(model: Any) -> list[str]:
    """Names of the operations INT8 leaves in FP32, as the ONNX INT8 export does
    (:func:`facemtl.export.onnx.keep_float`): the first convolution, whose three input
    channels carry the whole image, and the task heads (every MatMul: the network has no
    other)."""
    ops = model.get_ordered_ops()
    convs = [op.get_friendly_name() for op in ops if op.get_type_name() == "Convolution"]
    heads = [op.get_friendly_name() for op in ops if op.get_type_name() == "MatMul"]
    return convs[:1] + heads


def export_openvino_int8(source: Any, out: Path, faces: Any, fmt: Any, opset: int = 18, calibration: int = 300,
                         **_: Any) -> None:
    """FP32 IR, then NNCF post-training quantization (the mixed preset's defaults: per-channel
    symmetric INT8 weights, activation ranges from ``calibration`` real training faces,
    full bias correction), the first convolution and the heads left in FP32 (:func:`keep_float`).
    With every layer quantized and fast bias correction, the soft-target model's export lost
    4.6 % of age MAE and 1 point of race on 500 validation faces and was refused; with the two
    changes, on 1,000: age +0.4 %, gender and race -0.1 points each.

    NNCF writes its log and progress bars to standard output; they go to standard error here,
    so that ``facemtl export --json`` prints nothing but its JSON, and its log says warnings only.
    """
    import contextlib
    import logging
    import sys

    with contextlib.redirect_stdout(sys.stderr):
        import nncf

        for h in logging.getLogger("nncf").handlers:
            if isinstance(h, logging.StreamHandler) and h.stream in (sys.__stdout__, sys.stdout):
                h.setStream(sys.stderr)
        # its warnings only (a user test: hundreds of INFO lines in a benchmark's output); export says the rest
        logging.getLogger("nncf").setLevel(logging.WARNING)
        model = _convert(source, opset)
        images = faces.calibration
        data = nncf.Dataset([images[i : i + 1] for i in range(len(images))])
        quantized = nncf.quantize(model, data, subset_size=len(images), fast_bias_correction=False,
                                  ignored_scope=nncf.IgnoredScope(names=keep_float(model), validate=False))
    _save(quantized, out, exported_info(source.info, fmt, opset=opset, calibration_faces=len(images)))
