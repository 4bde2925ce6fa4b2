"""Bias correction for ONNX Runtime's INT8 (QDQ) models: each quantized convolution's weights,
rounded to INT8, shift the mean of its output; the shift is measured on calibration faces and
taken out of the layer's bias (Nagel et al. 2019, "Data-Free Quantization Through Weight
Equalization and Bias Correction", section 4.2, the empirical variant).

For a convolution with float weights ``W`` (C_out, C_in/g, kh, kw), quantized weights
``Ŵ = (q - z) · s`` (per output channel) and input ``x̂`` (the quantized model's own input to
that layer, on the calibration faces), the expected output error of channel ``c`` is

    e_c = E[(Ŵ - W) ⊛ x̂]_c = Σ_{k, i, j} (Ŵ - W)[c, k, i, j] · M[k, i, j],
    M[k, i, j] = mean over faces and output positions (p, q) of x̂_pad[k, p·s_h + i, q·s_w + j],

exact for zero padding and any stride or grouping (convolution is linear, so the mean of the
output is the convolution of the mean input). The INT32 bias ``b̂ = round(b / (s_x · s_w))``
becomes ``b̂ - round(e / (s_x · s_w))``. The graph is otherwise untouched, so the file runs
exactly as fast as before.

Written here because ONNX Runtime's ``quantize_static`` has no bias correction, and NNCF's
ONNX backend, which has, writes a different graph (signed INT8 activations, every ReLU6 kept
as a ``Clip``) that ONNX Runtime ran 8.7x slower than its own on this project's network
(412 against 48 ms for 32 faces with one thread, 5.5x with two; idle 2-core CPU,
``scripts/probe_nncf_onnx_int8.py``, ``docs/results/int8_nncf_onnx_probe.json``).

On the shipped model, 300 calibration faces: age MAE on the 4,211 random-split test faces
5.06 -> 4.97 years, face by face -0.10 (-0.13 to -0.06); the FP32 network reads 4.95.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

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
            m[:, i, j] = xp[:, i : i + strides[0] * oh : strides[0], j : j + strides[1] * ow : strides[1]].mean(axis=(1, 2))
    per_group = np.einsum("goikl,gikl->go", weight_error.reshape(group, cout // group, cin_g, kh, kw),
                          m.reshape(group, cin_g, kh, kw))
    return per_group.reshape(cout)


def _quantized_convs(float_model: Any, qdq: Any) -> list[_Layer]:
    """The QDQ model's convolutions whose weights and bias were quantized, with ``Ŵ - W``.

    The float weights come from the model ``quantize_static`` read (``float_model``), whose
    Conv nodes carry the same names."""
    from onnx import numpy_helper

    produced = {o: n for n in qdq.graph.node for o in n.output}
    q_init = {i.name: i for i in qdq.graph.initializer}
    f_init = {i.name: i for i in float_model.graph.initializer}
    f_conv = {n.name: n for n in float_model.graph.node if n.op_type == "Conv"}

    def array(name: str) -> np.ndarray:
        return numpy_helper.to_array(q_init[name]).astype(np.float64)

    layers = []
    for n in qdq.graph.node:
        if n.op_type != "Conv" or len(n.input) < 3 or n.name not in f_conv:
            continue
        w, b = produced.get(n.input[1]), produced.get(n.input[2])
        if not (w and b and w.op_type == b.op_type == "DequantizeLinear" and b.input[0] in q_init):
            continue  # left in FP32 (the first convolution)
        q, s = array(w.input[0]), array(w.input[1])
        z = array(w.input[2]) if len(w.input) > 2 else np.zeros_like(s)
        shape = (-1,) + (1,) * (q.ndim - 1)
        w_hat = (q - z.reshape(shape)) * s.reshape(shape)
        w_float = numpy_helper.to_array(f_init[f_conv[n.name].input[1]]).astype(np.float64)
        layers.append(_Layer(n, w_hat - w_float, b.input[0], array(b.input[1]).reshape(-1)))
    return layers


def _mean_inputs(qdq: Any, names: list[str], images: np.ndarray, batch: int = 50) -> dict[str, np.ndarray]:
    """``{tensor: (C, H, W)}`` each named tensor of ``qdq`` averaged over ``images``."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

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


def correct_bias(float_model: Any, qdq: Any, images: np.ndarray, log: Callable[[str], None] = lambda s: None) -> dict:
    """Take each quantized convolution's weight-rounding shift out of its INT32 bias, in place.

    ``float_model``: the ONNX model ``quantize_static`` quantized; ``qdq``: its output
    (edited); ``images``: ``uint8 (N, 3, S, S)`` calibration faces. Every layer's shift is
    measured on the quantized model's own inputs in one pass, so upstream layers' rounding
    is part of what each layer sees. Returns ``{"layers": n, "largest_shift": max |e_c|}``.
    """
    from onnx import helper, numpy_helper

    layers = _quantized_convs(float_model, qdq)
    if not layers:
        return {"layers": 0, "largest_shift": 0.0}
    inputs = list(dict.fromkeys(layer.node.input[0] for layer in layers))
    means = _mean_inputs(qdq, inputs, images)
    q_init = {i.name: i for i in qdq.graph.initializer}
    largest = 0.0
    for layer in layers:
        a = {x.name: helper.get_attribute_value(x) for x in layer.node.attribute}
        if list(a.get("dilations", [1, 1])) != [1, 1] or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            continue  # not in this network; the window arithmetic above assumes neither
        e = output_shift(layer.weight_error, means[layer.node.input[0]], list(a.get("pads", [0, 0, 0, 0])),
                         list(a.get("strides", [1, 1])), int(a.get("group", 1)))
        b = numpy_helper.to_array(q_init[layer.bias]).astype(np.int64)
        b = np.clip(b - np.round(e / layer.bias_scale).astype(np.int64), -(2**31), 2**31 - 1).astype(np.int32)
        q_init[layer.bias].CopyFrom(numpy_helper.from_array(b, layer.bias))
        largest = max(largest, float(np.abs(e).max()))
    log(f"bias correction: {len(layers)} quantized convolutions, largest channel shift {largest:.3g}")
    return {"layers": len(layers), "largest_shift": largest}
