"""Grad-CAM maps per task head (paper Fig. 5), with captum's ``LayerGradCam``.

For each task the map is taken at the output of the last backbone stage that the
task's head reads (its branch, or the shared trunk when the whole trunk is shared):
``relu(sum_c alpha_c A_c)`` with ``alpha_c`` the spatial mean of d score / d A_c,
upsampled to the input size and scaled to [0, 1] per face.

The score differentiated is the task's own :meth:`Task.explain_score`: the evidence for
the decision its head made (the predicted class's logit for nominal tasks; for K-1
binary ordinal tasks, the sum of the threshold logits, the quantity whose sign pattern is
decoded as the rank, paper eq. 6; for binary tasks the logit, sign-flipped for a predicted
negative class).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..preprocess import to_input
from ..tasks import Task


def target_layer(model: Any, task: str) -> torch.nn.Module:
    """The last backbone stage whose output the ``task``'s head reads."""
    branch = model.branches[model.branch_of[model.output_of.get(task, task)]]
    return branch[-1] if len(branch) else model.trunk[-1]


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

    cam = LayerGradCam(score, target_layer(model, task.name))
    # Gradients must flow even through frozen (requires_grad=False) layers.
    x.requires_grad_(True)
    attr = cam.attribute(x, relu_attributions=True)
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
