"""INT8 bias correction (facemtl.export.bias_correction): the window arithmetic against
ONNX Runtime's own convolution, and on a small quantized graph the shift it removes."""

from __future__ import annotations

import numpy as np
import pytest

from facemtl.export.bias_correction import correct_bias, output_shift


def _conv_mean(weights: np.ndarray, x: np.ndarray, pads: list[int], strides: list[int], group: int) -> np.ndarray:
    """``(C_out,)`` spatial mean of ONNX Runtime's Conv of ``x (C, H, W)`` (no bias; float32, as
    ONNX Runtime's CPU Conv has no float64 kernel)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=pads, strides=strides, group=group)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(weights.astype(np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x[None].astype(np.float32)})[0]
    return y.astype(np.float64).mean(axis=(0, 2, 3))


@pytest.mark.parametrize("shape,pads,strides,group", [
    ((6, 1, 3, 3), [1, 1, 1, 1], [1, 1], 6),  # depthwise 3x3, as in every MBConv block
    ((6, 1, 5, 5), [2, 2, 2, 2], [2, 2], 6),  # depthwise 5x5, stride 2: most taps fall on the padding at 4x5
    ((4, 6, 1, 1), [0, 0, 0, 0], [1, 1], 1),  # pointwise projection
    ((4, 3, 3, 3), [0, 1, 2, 3], [2, 1], 2),  # grouped; top, left, bottom, right all different
    ((4, 3, 2, 3), [3, 0, 1, 2], [1, 2], 2),  # the same the other way round, a non-square kernel
])
def test_output_shift_is_the_mean_of_the_convolution(shape, pads, strides, group):
    rng = np.random.default_rng(0)
    dw = rng.normal(size=shape)
    x = rng.uniform(0, 6, size=(shape[1] * group, 4, 5))
    np.testing.assert_allclose(output_shift(dw, x, pads, strides, group), _conv_mean(dw, x, pads, strides, group),
                               rtol=1e-5, atol=1e-5)


def _graph(weights: np.ndarray):
    """images (N, 4, 8, 8) float -> two depthwise 3x3 Convs with biases (pad 1, "dw" and "dw2",
    both reading ``images``) and a pointwise Conv without one ("pw")."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Conv", ["images", "w", "b"], ["out1"], name="dw", group=4, pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["images", "w", "b"], ["out2"], name="dw2", group=4, pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["images", "w_pw"], ["out3"], name="pw")]
    outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, [None, 4, 8, 8]) for o in ("out1", "out2", "out3")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [None, 4, 8, 8])], outputs,
        [numpy_helper.from_array(weights.astype(np.float32), "w"),
         numpy_helper.from_array(np.full(4, 0.25, np.float32), "b"),
         numpy_helper.from_array(np.eye(4, dtype=np.float32).reshape(4, 4, 1, 1), "w_pw")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _channel_means(model, images) -> list[np.ndarray]:
    import onnxruntime as ort

    outs = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"images": images})
    return [o.astype(np.float64).mean(axis=(0, 2, 3)) for o in outs]


def test_correction_takes_the_weight_rounding_shift_out_of_the_bias(tmp_path):
    """Weights made to round the same way: per channel, one weight of 1.0 sets the INT8 scale
    to 1/127, and the other eight sit 0.45 of a step above a level, so each rounds down by
    0.45/127. On inputs in [0, 1] each channel's mean output drops by about 8 · 0.0035 · 0.5;
    after correction what is left is under a tenth of that (the input's own rounding). Both
    convolutions that read the same input are corrected once each; the one without a bias
    is left as it was."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    rng = np.random.default_rng(1)
    w = (rng.integers(0, 100, size=(4, 1, 3, 3)) + 0.45) / 127
    w[:, 0, 1, 1] = 1.0
    images = rng.uniform(0, 1, size=(64, 4, 8, 8)).astype(np.float32)
    fp32 = _graph(w)
    onnx.save(fp32, str(tmp_path / "f.onnx"))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"images": images[i : i + 16]} for i in range(0, 64, 16)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    qdq = onnx.load(str(tmp_path / "q.onnx"))
    ref, before = _channel_means(fp32, images), _channel_means(qdq, images)
    for k in (0, 1):
        assert np.all(before[k] - ref[k] < -0.008)  # every channel reads low: about -0.014

    report = correct_bias(fp32, qdq, images)
    after = _channel_means(qdq, images)
    assert (report["layers"], report["skipped"], report["clipped"]) == (2, 1, 0)
    assert report["largest_shift"] == pytest.approx(np.abs(before[0] - ref[0]).max(), rel=0.2)
    for k in (0, 1):
        assert np.all(np.abs(after[k] - ref[k]) < 0.1 * np.abs(before[k] - ref[k]))
    np.testing.assert_array_equal(after[2], before[2])  # no bias: untouched
    # the graph is unchanged but for the bias values: the same nodes in the same order
    assert [n.op_type for n in qdq.graph.node] == [n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node]


def test_a_float_model_that_is_not_the_quantized_one_is_refused(tmp_path):
    """Same node names, other shapes: a clear sentence, not a broadcast error or a wrong bias."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    images = np.random.default_rng(2).uniform(0, 1, size=(16, 4, 8, 8)).astype(np.float32)
    onnx.save(_graph(np.full((4, 1, 3, 3), 0.1)), str(tmp_path / "f.onnx"))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"images": images}])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    other = _graph(np.full((4, 1, 3, 3), 0.1))
    other.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(np.zeros((4, 1, 5, 5), np.float32), "w"))
    with pytest.raises(ValueError, match="not the same layer"):
        correct_bias(other, onnx.load(str(tmp_path / "q.onnx")), images)
