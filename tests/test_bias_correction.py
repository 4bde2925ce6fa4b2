"""INT8 bias correction (facemtl.export.bias_correction): the window arithmetic against
PyTorch's convolution, and on a small quantized graph the shift it removes."""

from __future__ import annotations

import numpy as np
import pytest

from facemtl.export.bias_correction import correct_bias, output_shift


@pytest.mark.parametrize("shape,pads,strides,group", [
    ((6, 1, 3, 3), [1, 1, 1, 1], [1, 1], 6),  # depthwise 3x3, as in every MBConv block
    ((6, 1, 5, 5), [2, 2, 2, 2], [2, 2], 6),  # depthwise 5x5, stride 2: most taps fall on the padding at 4x4
    ((4, 6, 1, 1), [0, 0, 0, 0], [1, 1], 1),  # pointwise projection
    ((4, 3, 3, 3), [0, 1, 1, 0], [2, 1], 2),  # grouped, uneven padding and strides
])
def test_output_shift_is_the_mean_of_the_convolution(shape, pads, strides, group):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    dw = rng.normal(size=shape)
    x = rng.uniform(0, 6, size=(shape[1] * group, 4, 5))
    xp = torch.nn.functional.pad(torch.tensor(x)[None], (pads[1], pads[3], pads[0], pads[2]))
    want = torch.nn.functional.conv2d(xp, torch.tensor(dw), stride=strides, groups=group).mean((0, 2, 3)).numpy()
    np.testing.assert_allclose(output_shift(dw, x, pads, strides, group), want, rtol=1e-10, atol=1e-12)


def _graph(weights: np.ndarray):
    """images (N, 4, 8, 8) float -> depthwise 3x3 Conv (pad 1, named "dw") -> ``conv_out``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    conv = helper.make_node("Conv", ["images", "w", "b"], ["conv_out"], name="dw", group=4, pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [conv], "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [None, 4, 8, 8])],
        [helper.make_tensor_value_info("conv_out", TensorProto.FLOAT, [None, 4, 8, 8])],
        [numpy_helper.from_array(weights.astype(np.float32), "w"),
         numpy_helper.from_array(np.full(4, 0.25, np.float32), "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _channel_means(model, images):
    import onnxruntime as ort

    out = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"images": images})
    return out[0].astype(np.float64).mean(axis=(0, 2, 3))


def test_correction_takes_the_weight_rounding_shift_out_of_the_bias(tmp_path):
    """Weights made to round the same way: per channel, one weight of 1.0 sets the INT8 scale
    to 1/127, and the other eight sit 0.45 of a step above a level, so each rounds down by
    0.45/127. On inputs in [0, 1] the channel's mean output drops by about 8 · 0.0035 · 0.5;
    after correction it matches the float graph's to within the bias's own INT32 step."""
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
    assert np.all(before - ref < -0.008)  # every channel reads low: about -0.014

    report = correct_bias(fp32, qdq, images)
    after = _channel_means(qdq, images)
    assert report["layers"] == 1 and report["largest_shift"] == pytest.approx(np.abs(before - ref).max(), rel=0.2)
    assert np.all(np.abs(after - ref) < 0.1 * np.abs(before - ref))
    # the graph is unchanged but for the bias values: the same nodes in the same order
    assert [n.op_type for n in qdq.graph.node] == [n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node]
