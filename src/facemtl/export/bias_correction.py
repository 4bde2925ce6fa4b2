"""Bias correction for ONNX Runtime's INT8 (QDQ) models: each quantized convolution's weights,
rounded to INT8, shift the mean of its output; the shift is measured on calibration faces and
taken out of the layer's bias (Nagel et al. 2019, "Data-Free Quantization Through Weight
Equalization and Bias Correction", section 4.2, the empirical variant).

For a convolution with float weights ``W`` (C_out, C_in/g, kh, kw), quantized weights
``Ŵ = (q - z) · s`` (per output channel) and input ``x̂`` (the quantized model's own input to
that layer, on the calibration faces), the expected output error of channel ``c`` is

    e_c = E[(Ŵ - W) ⊛ x̂]_c = Σ_{k, i, j} (Ŵ - W)[c, k, i, j] · M[k, i, j],
    M[k, i, j] = mean over faces and output positions (p, q) of x̂_pad[k, p·s_h + i, q·s_w + j],

exact for explicit zero padding and any stride or grouping (convolution is linear, so the
mean of the output is the convolution of the mean input; dilated convolutions and
``auto_pad`` are skipped, as this network has neither). The INT32 bias
``b̂ = round(b / (s_x · s_w))`` becomes ``b̂ - round(e / (s_x · s_w))``. The graph is otherwise
untouched, so the file runs exactly as fast as before.

Written here because ONNX Runtime's ``quantize_static`` has no bias correction, and NNCF's
ONNX backend, which has, writes a different graph (signed INT8 activations, every ReLU6 kept
as a ``Clip``) that ONNX Runtime ran 8.7x slower than its own on this project's network
(412 against 48 ms for 32 faces with one thread, 5.5x with two; 2-core CPU with nothing else
running, ``scripts/probe_nncf_onnx_int8.py``, ``docs/results/int8_nncf_onnx_probe.json``).

On the shipped model, 300 calibration faces: age MAE on the 4,211 random-split test faces
5.06 -> 4.98 years, face by face -0.09 (-0.12 to -0.05); the FP32 network reads 4.95
(``docs/results/compare_bias_correction_test.json``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class _Layer:
    node: Any  # the QDQ model's Conv
    weight_error: np.ndarray  # Ŵ - W, (C_out, C_in/g, kh, kw), float64
    bias: str  # name of the INT32 bias initializer
    bias_scale: np.ndarray  # (C_out,) s_x · s_w


def output_shift(weight_error: np.ndarray, mean_input: np.ndarray, pads: list[int], strides: list[int],
                 group: int) -> np.ndarray:
    """``(C_out,)`` mean over output positions of ``conv(mean_input, weight_error)``.

    ``weight_error``: ``(C_out, C_in/g, kh, kw)``; ``mean_input``: ``(C_in, H, W)``, the
    input averaged over faces; ``pads``: ONNX order ``[top, left, bottom, right]``.
    """
    xp = np.pad(mean_input, ((0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    cout, cin_g, kh, kw = weight_error.shape
    oh = (xp.shape[1] - kh) // strides[0] + 1
    ow = (xp.shape[2] - kw) // strides[1] + 1
    m = np.empty((xp.shape[0], kh, kw))
    for i in range(kh):
        for j in range(kw):
            window = xp[:, i : i + strides[0] * oh : strides[0], j : j + strides[1] * ow : strides[1]]
            m[:, i, j] = window.mean(axis=(1, 2))
    per_group = np.einsum("goikl,gikl->go", weight_error.reshape(group, cout // group, cin_g, kh, kw),
                          m.reshape(group, cin_g, kh, kw))
    return per_group.reshape(cout)


def _quantized_convs(float_model: Any, qdq: Any) -> tuple[list[_Layer], int]:
    """The QDQ model's convolutions whose weights and bias were quantized, with ``Ŵ - W``, and
    how many quantized convolutions were left out (no bias, or no float twin).

    The float weights come from the model ``quantize_static`` read (``float_model``), whose
    Conv nodes carry the same names (each name must be unique there)."""
    from onnx import numpy_helper

    produced = {o: n for n in qdq.graph.node for o in n.output}
    q_init = {i.name: i for i in qdq.graph.initializer}
    f_init = {i.name: i for i in float_model.graph.initializer}
    names = Counter(n.name for n in float_model.graph.node if n.op_type == "Conv")
    f_conv = {n.name: n for n in float_model.graph.node if n.op_type == "Conv" and n.name and names[n.name] == 1}

    def array(name: str) -> np.ndarray:
        return numpy_helper.to_array(q_init[name]).astype(np.float64)

    layers, skipped = [], 0
    for n in qdq.graph.node:
        if n.op_type != "Conv":
            continue
        w = produced.get(n.input[1])
        b = produced.get(n.input[2]) if len(n.input) > 2 else None
        if w is None or w.op_type != "DequantizeLinear":
            continue  # left in FP32 (the first convolution)
        quantized = [w.input[0], w.input[1], *w.input[2:3]] + ([b.input[0], b.input[1]] if b is not None else [])
        ok = (b is not None and b.op_type == "DequantizeLinear" and n.name in f_conv
              and all(x in q_init for x in quantized) and f_conv[n.name].input[1] in f_init)
        if not ok:  # no bias, or no float twin to compare with: nothing to correct
            skipped += 1
            continue
        q, s = array(w.input[0]), array(w.input[1])
        z = array(w.input[2]) if len(w.input) > 2 else np.zeros_like(s)
        shape = (-1,) + (1,) * (q.ndim - 1)  # per output channel (axis 0), or one scale for all
        w_hat = (q - z.reshape(shape)) * s.reshape(shape)
        w_float = numpy_helper.to_array(f_init[f_conv[n.name].input[1]]).astype(np.float64)
        if w_float.shape != w_hat.shape:
            raise ValueError(f"bias correction: Conv {n.name!r} has weights {w_hat.shape} in the quantized model "
                             f"but {w_float.shape} in the float one; they are not the same layer")
        layers.append(_Layer(n, w_hat - w_float, b.input[0], array(b.input[1]).reshape(-1)))
    return layers, skipped


def _mean_inputs(qdq: Any, names: list[str], images: np.ndarray, batch: int = 50) -> dict[str, np.ndarray]:
    """``{tensor: (C, H, W)}`` each named tensor of ``qdq`` averaged over ``images``."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    names = list(dict.fromkeys(names))  # a tensor two layers read is summed once
    if len(images) == 0:
        raise ValueError("bias correction needs calibration faces, and none were given")
    model = onnx.ModelProto()
    model.CopyFrom(qdq)
    have = {o.name for o in model.graph.output}
    model.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names if n not in have)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    sums: dict[str, np.ndarray] = {}
    for i in range(0, len(images), batch):
        for n, y in zip(names, session.run(names, {session.get_inputs()[0].name: images[i : i + batch]})):
            sums[n] = sums.get(n, 0.0) + y.sum(axis=0, dtype=np.float64)
    return {n: s / len(images) for n, s in sums.items()}


def correct_bias(float_model: Any, qdq: Any, images: np.ndarray) -> dict:
    """Take each quantized convolution's weight-rounding shift out of its INT32 bias, in place.

    ``float_model``: the ONNX model ``quantize_static`` quantized; ``qdq``: its output
    (edited); ``images``: ``uint8 (N, 3, S, S)`` calibration faces. Every layer's shift is
    measured on the quantized model's own inputs in one pass, before any is corrected: each
    layer is corrected for its own weights' rounding only (correcting every layer for the total
    error at its output, all at once, overcorrected downstream layers and diverged when tried
    here). Returns ``{"layers": corrected, "skipped": quantized convolutions left as they were
    (no bias, no float twin, dilated), "largest_shift": max |e_c|, "clipped": bias values
    clipped to INT32's range}``; the ``onnx-int8`` export records it in the file's metadata.
    """
    from onnx import helper, numpy_helper

    layers, skipped = _quantized_convs(float_model, qdq)
    attrs = [{x.name: helper.get_attribute_value(x) for x in layer.node.attribute} for layer in layers]
    plain = [(layer, a) for layer, a in zip(layers, attrs)
             if list(a.get("dilations", [1, 1])) == [1, 1] and a.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")]
    skipped += len(layers) - len(plain)  # dilated or auto-padded: the window arithmetic assumes neither
    report = {"layers": len(plain), "skipped": skipped, "largest_shift": 0.0, "clipped": 0}
    if not plain:
        return report
    means = _mean_inputs(qdq, [layer.node.input[0] for layer, _ in plain], images)
    q_init = {i.name: i for i in qdq.graph.initializer}
    for layer, a in plain:
        e = output_shift(layer.weight_error, means[layer.node.input[0]], list(a.get("pads", [0, 0, 0, 0])),
                         list(a.get("strides", [1, 1])), int(a.get("group", 1)))
        b = numpy_helper.to_array(q_init[layer.bias]).astype(np.int64) - np.round(e / layer.bias_scale).astype(np.int64)
        report["clipped"] += int(np.sum((b < -(2**31)) | (b > 2**31 - 1)))  # INT32's range: 0 in practice
        b = np.clip(b, -(2**31), 2**31 - 1).astype(np.int32)
        q_init[layer.bias].CopyFrom(numpy_helper.from_array(b, layer.bias))
        report["largest_shift"] = max(report["largest_shift"], float(np.abs(e).max()))
    return report
