"""Grad-CAM maps per task head (paper Fig. 5), with captum's ``LayerGradCam``.

For each task the map is taken at the output of the last backbone stage that the
task's head reads (its branch, or the shared trunk when the whole trunk is shared):
``relu(sum_c alpha_c A_c)`` with ``alpha_c`` the spatial mean of d score / d A_c,
upsampled to the input size and scaled to [0, 1] per face (so colours compare regions of
one face, not faces).

The upsampling puts each cell of the map where its receptive field is centred in the input
(:func:`cell_grid`: pixel ``stride * i + offset``; ``32 i`` for Lite0's last stage, whose
convolutions pad symmetrically). Stretching the map edge to edge instead (bilinear with
``align_corners=False``, as Grad-CAM tools do) drew a 4 x 4 map of a 112 px face at pixels
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


def cell_grid(model: Any, layer: torch.nn.Module, length: int = 2048) -> tuple[float, float]:
    """``(stride, offset)``: cell ``i`` of ``layer``'s output map is centred on input pixel
    ``stride * i + offset`` (pixel centres at whole numbers), measured on the network, not assumed.

    The geometry is a copy's: linear (activation modules the identity: pointwise, they move no
    pixel), every convolution's weights equal and positive, batch norms the identity, max pooling
    averaged (same windows), in float64, so that the input gradient of a cell is non-zero exactly
    over its receptive field. The copy reads a strip ``length`` pixels tall (Lite0's last stage
    sees about 800 of them); the receptive fields of two inner cells of its middle column, where
    no border cuts them, give their centres, hence the stride and the offset. Rows and columns are
    taken alike (square kernels and strides). Raises ``ValueError`` where the strip is too short
    to tell."""
    import copy

    nn = torch.nn
    name = {m: n for n, m in model.named_modules()}[layer]
    geo = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for parent in list(geo.modules()):
            for child_name, m in parent.named_children():
                if isinstance(m, nn.MaxPool2d):  # its argmax would pick one pixel of a window
                    setattr(parent, child_name, nn.AvgPool2d(m.kernel_size, m.stride, m.padding, m.ceil_mode))
                elif type(m).__module__ == nn.ReLU.__module__:  # ReLU6 and the like cut gradients
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
    x = torch.ones((1, 3, length, 32), dtype=torch.float64, requires_grad=True)
    acts: dict[str, torch.Tensor] = {}
    hook = dict(geo.named_modules())[name].register_forward_hook(lambda _m, _i, out: acts.__setitem__("a", out))
    try:
        geo(x)
    finally:
        hook.remove()
    a = acts["a"]
    rows, col = a.shape[2], a.shape[3] // 2
    cells, centres = (rows // 3, 2 * rows // 3), []
    for i in cells:
        (g,) = torch.autograd.grad(a[0, :, i, col].sum(), x, retain_graph=True)
        support = np.flatnonzero(g.abs().sum((0, 1, 3)).numpy() > 0)
        if not len(support) or support[0] == 0 or support[-1] == length - 1:
            raise ValueError(f"a receptive field wider than a third of {length} pixels")
        centres.append((support[0] + support[-1]) / 2)
    stride = (centres[1] - centres[0]) / (cells[1] - cells[0])
    return float(stride), float(centres[0] - stride * cells[0])


def upsample(maps: np.ndarray, shape: tuple[int, int], stride: float, offset: float) -> np.ndarray:
    """Maps ``(N, h, w)`` to ``(N, H, W)`` (``shape``), bilinear between cell centres
    ``stride * i + offset`` (:func:`cell_grid`), the edge cells' values beyond them."""

    def weights(cells: int, size: int) -> np.ndarray:  # (size, cells): each pixel between its two cells
        u = np.clip((np.arange(size) - offset) / stride, 0, cells - 1)
        i0 = np.floor(u).astype(int)
        i1 = np.minimum(i0 + 1, cells - 1)
        r = np.zeros((size, cells))
        r[np.arange(size), i0] += 1 - (u - i0)
        r[np.arange(size), i1] += u - i0
        return r

    rows, cols = weights(maps.shape[1], shape[0]), weights(maps.shape[2], shape[1])
    return np.einsum("yi,nij,xj->nyx", rows, maps, cols)


#: :func:`cell_grid` of each layer maps were made at, measured once.
_GRIDS: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[float, float]]" = weakref.WeakKeyDictionary()


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
    try:
        if layer not in _GRIDS:
            _GRIDS[layer] = cell_grid(model, layer)
        maps = upsample(attr.detach().sum(1).double().numpy(), tuple(x.shape[2:]), *_GRIDS[layer])
    except (ValueError, RuntimeError):  # a network that cannot read the probe: stretched edge to edge
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
