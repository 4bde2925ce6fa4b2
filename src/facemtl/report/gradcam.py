"""Grad-CAM maps per task head (paper Fig. 5), with captum's ``LayerGradCam``.

For each task the map is taken at the output of the last backbone stage that the
task's head reads (its branch, or the shared trunk when the whole trunk is shared):
``relu(sum_c alpha_c A_c)`` with ``alpha_c`` the spatial mean of d score / d A_c,
upsampled to the input size and scaled to [0, 1] per face.

The score differentiated: the predicted class's logit for nominal (and softmax
ordinal) tasks; for K-1 binary ordinal tasks, the sum of the threshold logits (the
quantity whose sign pattern is decoded as the rank, paper eq. 6); for binary and
regression tasks, the single output (sign-flipped for a predicted negative class, so
the map shows evidence for the decision made).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch


def target_layer(model: Any, task: str) -> torch.nn.Module:
    """The last backbone stage whose output the ``task``'s head reads."""
    branch = model.branches[model.branch_of[task]]
    return branch[-1] if len(branch) else model.trunk[-1]


def _score_fn(model: Any, task: Any):
    name = task.name

    def score(x: torch.Tensor) -> torch.Tensor:
        out = model(x)[name].float()
        if out.shape[1] > 1 and (task.kind == "nominal" or getattr(task, "method", "") == "softmax"):
            return out  # captum picks the target column
        if task.kind == "binary":
            s = out[:, 0]
            return torch.where(s.detach() >= 0, s, -s)
        return out.sum(1)

    return score


def gradcam_maps(model: Any, task: Any, images: np.ndarray, channels_last: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM of ``task`` on ``images`` ``(N, H, W, 3) uint8``.

    Returns ``(maps (N, H, W) in [0, 1], predictions (N,))`` (predictions decoded by the task).
    """
    from captum.attr import LayerAttribution, LayerGradCam

    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255)
    with torch.no_grad():
        pred = task.predict(model(x)[task.name].float()).numpy()
    score = _score_fn(model, task)
    target = None
    with torch.no_grad():
        out = score(x)
    if out.dim() == 2:
        target = [int(i) for i in out.argmax(1)]
    cam = LayerGradCam(score, target_layer(model, task.name))
    # Gradients must flow even through frozen (requires_grad=False) layers.
    x.requires_grad_(True)
    attr = cam.attribute(x, target=target, relu_attributions=True)
    up = LayerAttribution.interpolate(attr, tuple(x.shape[2:]), interpolate_mode="bilinear")
    maps = up.detach().sum(1).numpy()
    lo = maps.reshape(len(maps), -1).min(1)[:, None, None]
    hi = maps.reshape(len(maps), -1).max(1)[:, None, None]
    return (maps - lo) / np.maximum(hi - lo, 1e-8), pred


def pick_samples(pred: np.ndarray, true: np.ndarray, kind: str, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Indices of ``n`` correct and ``n`` wrong test faces (numeric tasks: |error| <= 2 years vs >= 10)."""
    ok = ~np.isnan(true)
    if kind in ("ordinal", "regression"):
        err = np.abs(pred - true)
        good, bad = ok & (err <= 2), ok & (err >= 10)
    else:
        good, bad = ok & (pred == true), ok & (pred != true)
    rng = np.random.default_rng(seed)

    def take(mask: np.ndarray) -> np.ndarray:
        idx = np.flatnonzero(mask)
        return np.sort(rng.choice(idx, size=min(n, len(idx)), replace=False)) if len(idx) else idx

    return {"correct": take(good), "wrong": take(bad)}


def describe(task: Any, value: float) -> str:
    if task.kind in ("ordinal", "regression"):
        return f"{value:.0f}"
    names: Sequence[str] = task.class_names() if hasattr(task, "class_names") else []
    i = int(value)
    return names[i] if 0 <= i < len(names) else str(i)
