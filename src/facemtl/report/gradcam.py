"""Grad-CAM maps per task head (paper Fig. 5), with captum's ``LayerGradCam``.

For each task the map is taken at the output of the last backbone stage that the
task's head reads (its branch, or the shared trunk when the whole trunk is shared):
``relu(sum_c alpha_c A_c)`` with ``alpha_c`` the spatial mean of d score / d A_c,
upsampled to the input size and scaled to [0, 1] per face (so colours compare regions of
one face, not faces).

The upsampling puts each cell of the map where its receptive field is centred in the input
(:func:`cell_grid`: pixel ``stride * i + offset``; ``32 i`` for Lite0's last stage, whose
convolutions pad symmetrically), where that can be measured (:func:`placement` warns where
not). Stretching the map edge to edge instead (bilinear with ``align_corners=False``, as
Grad-CAM tools do) drew a 4 x 4 map of a 112 px face at pixels
14, 42, 70, 98 rather than 0, 32, 64, 96: regions up to 14 px down and right of their place.

The score differentiated is the task's own :meth:`Task.explain_score`: the evidence for
the decision its head made (the predicted class's logit for nominal tasks; for binary tasks
the logit, sign-flipped for a predicted negative class; for K-1 binary ordinal tasks each
threshold's logit so signed, summed: every "label > r_k" decision the rank is decoded from,
paper eq. 6, pushed the way it went).
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import torch

from ..preprocess import to_input
from ..tasks import Task


def target_layer(model: Any, task: str) -> torch.nn.Module:
    """The last backbone stage whose output the ``task``'s head reads."""
    branch = model.branches[model.branch_of[model.output_of.get(task, task)]]
    return branch[-1] if len(branch) else model.trunk[-1]


#: Elementwise activations the geometry copy drops (pointwise: they move no pixel, and ReLU6 and
#: the like would cut the gradient that traces a receptive field).
_POINTWISE = (torch.nn.ReLU, torch.nn.ReLU6, torch.nn.LeakyReLU, torch.nn.PReLU, torch.nn.ELU, torch.nn.SELU,
              torch.nn.CELU, torch.nn.GELU, torch.nn.SiLU, torch.nn.Mish, torch.nn.Hardswish, torch.nn.Hardsigmoid,
              torch.nn.Sigmoid, torch.nn.Tanh, torch.nn.Hardtanh, torch.nn.Softplus)


def _geometry_copy(model: Any) -> Any:
    """A float64 copy of ``model`` that keeps where every cell looks and nothing else: linear
    (:data:`_POINTWISE` activations and facemtl's squeeze-excite gates, a per-channel scale whose
    global mean would make every cell see the whole input, the identity), every convolution's
    weights equal and positive, batch norms the identity, max pooling averaged over the same
    windows; so a cell's input gradient is non-zero exactly over its receptive field."""
    import copy

    from ..model.backbones.mbconv import SqueezeExcite

    nn = torch.nn
    geo = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for parent in list(geo.modules()):
            for child_name, m in parent.named_children():
                if isinstance(m, nn.MaxPool2d):  # its argmax would pick one pixel of a window
                    if m.dilation not in (1, (1, 1)):
                        raise ValueError("a dilated max pooling (no averaging twin)")
                    setattr(parent, child_name, nn.AvgPool2d(m.kernel_size, m.stride, m.padding, m.ceil_mode))
                elif isinstance(m, _POINTWISE + (SqueezeExcite,)):
                    setattr(parent, child_name, nn.Identity())
        for m in geo.modules():
            if isinstance(m, nn.modules.conv._ConvNd):
                m.weight.fill_(1.0 / m.weight[0].numel())
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
                if m.affine:
                    m.weight.fill_(1.0)
                    m.bias.zero_()
    return geo


def cell_grid(model: Any, layer: torch.nn.Module, size: tuple[int, int], extra: int = 2048
              ) -> tuple[tuple[float, float], tuple[float, float]]:
    """``((stride, offset) of rows, (stride, offset) of columns)``: cell ``(i, j)`` of ``layer``'s
    output map is centred on input pixel ``(stride_r i + offset_r, stride_c j + offset_c)`` for an
    input of ``size`` ``(H, W)`` (pixel centres at whole numbers), measured on the network.

    The :func:`_geometry_copy` reads a strip ``extra`` pixels longer than the input each way in
    turn, ``(H + extra, W)`` for rows and ``(H, W + extra)`` for columns (``extra`` a power of two,
    so that padding that depends on the input's size, TensorFlow's "same", pads alike); the
    receptive fields of two inner cells of the strip, where no border cuts them, give their
    centres, hence the stride and the offset (Lite0's last stage: 32 and 0, its field about 800
    pixels). A ``ValueError`` where that cannot be measured (a field wider than a third of the
    strip, a layer the strip never reaches); the caller falls back."""
    name = {m: n for n, m in model.named_modules()}[layer]
    geo = _geometry_copy(model)
    target = dict(geo.named_modules())[name]
    out = []
    for axis in (0, 1):
        shape = (size[0] + extra, size[1]) if axis == 0 else (size[0], size[1] + extra)
        x = torch.ones((1, 3, *shape), dtype=torch.float64, requires_grad=True)
        acts: dict[str, torch.Tensor] = {}
        hook = target.register_forward_hook(lambda _m, _i, o: acts.__setitem__("a", o))
        try:
            geo(x)
        finally:
            hook.remove()
        if "a" not in acts:
            raise ValueError("the layer was not reached")
        a = acts["a"]
        n, length = a.shape[2 + axis], shape[axis]
        cells, centres = (n // 3, 2 * n // 3), []
        if cells[0] == cells[1]:
            raise ValueError("too few cells along the strip")
        for i in cells:
            cell = a[0, :, i, a.shape[3] // 2] if axis == 0 else a[0, :, a.shape[2] // 2, i]
            (g,) = torch.autograd.grad(cell.sum(), x, retain_graph=True)
            support = np.flatnonzero(g.abs().sum((0, 1, 3) if axis == 0 else (0, 1, 2)).numpy() > 0)
            if not len(support) or support[0] == 0 or support[-1] == length - 1:
                raise ValueError(f"a receptive field wider than a third of {length} pixels")
            centres.append((support[0] + support[-1]) / 2)
        stride = (centres[1] - centres[0]) / (cells[1] - cells[0])
        out.append((float(stride), float(centres[0] - stride * cells[0])))
    return out[0], out[1]


def upsample(maps: np.ndarray, shape: tuple[int, int], rows: tuple[float, float], cols: tuple[float, float]
             ) -> np.ndarray:
    """Maps ``(N, h, w)`` to ``(N, H, W)`` (``shape``), bilinear between cell centres
    ``stride * i + offset`` (``rows`` and ``cols``: :func:`cell_grid`), the edge cells' values
    beyond them."""

    def weights(cells: int, size: int, grid: tuple[float, float]) -> np.ndarray:  # (size, cells)
        stride, offset = grid
        u = np.clip((np.arange(size) - offset) / stride, 0, cells - 1)
        i0 = np.floor(u).astype(int)
        i1 = np.minimum(i0 + 1, cells - 1)
        r = np.zeros((size, cells))
        r[np.arange(size), i0] += 1 - (u - i0)
        r[np.arange(size), i1] += u - i0
        return r

    return np.einsum("yi,nij,xj->nyx", weights(maps.shape[1], shape[0], rows), maps,
                     weights(maps.shape[2], shape[1], cols))


#: :func:`cell_grid` per (layer, input size), measured once; ``None`` where it could not be.
_GRIDS: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def placement(model: Any, layer: torch.nn.Module, size: tuple[int, int]) -> Any:
    """:func:`cell_grid` of ``layer`` at input ``size``, measured once per model and size; ``None``
    (with a warning, once) where it cannot be measured: the maps are then stretched edge to edge."""
    import warnings

    grids = _GRIDS.setdefault(layer, {})
    if size not in grids:
        try:
            grids[size] = cell_grid(model, layer, size)
        except Exception as exc:  # (any layer a plugin brings: a map is still drawn, and it is said how)
            grids[size] = None
            warnings.warn(f"Grad-CAM maps are stretched over the face edge to edge: where each cell of the "
                          f"network's map looks could not be measured ({exc})", stacklevel=3)
    return grids[size]


def gradcam_maps(model: Any, task: Task, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM of ``task`` on ``images`` ``(N, H, W, 3) uint8``.

    Returns ``(maps (N, H, W) in [0, 1], predictions (N,))`` (predictions decoded by the task).
    """
    from captum.attr import LayerAttribution, LayerGradCam

    model.eval()
    x = to_input(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    with torch.no_grad():
        pred = task.predict(model(x)[task.name].float().numpy())

    def score(inp: torch.Tensor) -> torch.Tensor:
        return task.explain_score(model(inp)[task.name].float())

    layer = target_layer(model, task.name)
    cam = LayerGradCam(score, layer)
    # Gradients must flow even through frozen (requires_grad=False) layers.
    x.requires_grad_(True)
    attr = cam.attribute(x, relu_attributions=True)
    grid = placement(model, layer, tuple(x.shape[2:]))
    if grid is not None:
        maps = upsample(attr.detach().sum(1).double().numpy(), tuple(x.shape[2:]), *grid)
    else:
        up = LayerAttribution.interpolate(attr, tuple(x.shape[2:]), interpolate_mode="bilinear")
        maps = up.detach().sum(1).numpy()
    lo = maps.reshape(len(maps), -1).min(1)[:, None, None]
    hi = maps.reshape(len(maps), -1).max(1)[:, None, None]
    return (maps - lo) / np.maximum(hi - lo, 1e-8), pred


def pick_samples(task: Task, pred: np.ndarray, true: np.ndarray, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Indices of ``n`` clearly right and ``n`` clearly wrong test faces (:meth:`Task.outcomes`)."""
    good, bad = task.outcomes(pred, true)
    rng = np.random.default_rng(seed)

    def take(mask: np.ndarray) -> np.ndarray:
        idx = np.flatnonzero(mask)
        return np.sort(rng.choice(idx, size=min(n, len(idx)), replace=False)) if len(idx) else idx

    return {"correct": take(good), "wrong": take(bad)}
