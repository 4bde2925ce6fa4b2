"""Run a model over a split and compute every task's loss and metrics."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from .data.dataset import FaceSet
from .data.transfer import to_device
from .tasks import Task


def to_input(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """``uint8 (N, 3, H, W)`` -> float in [0, 1] on ``device`` (channels-last when asked).

    On a GPU the batch goes through pinned memory, so the copy does not stall the host.
    """
    x = to_device(images, device).float().div_(255)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


TTA_MODES = ("none", "flip")


def forward(model: torch.nn.Module, x: torch.Tensor, tta: str = "none") -> dict[str, torch.Tensor]:
    """``model(x)``; with ``tta="flip"`` the mean raw outputs of ``x`` and its mirror image.

    Horizontal-flip test-time augmentation: faces are roughly symmetric and training
    flips them, so the two views are equally valid inputs; averaging their outputs
    (logits) halves some of the noise of a single view at twice the compute.
    """
    if tta == "none":
        return model(x)
    if tta != "flip":
        raise ValueError(f"unknown test-time augmentation {tta!r}; choose one of: {', '.join(TTA_MODES)}")
    a, b = model(x), model(torch.flip(x, dims=[3]))
    return {k: (a[k].float() + b[k].float()) / 2 for k in a}


@torch.no_grad()
def predict_set(
    model: torch.nn.Module,
    data: FaceSet,
    tasks: Sequence[Task],
    device: torch.device,
    batch_size: int = 128,
    channels_last: bool = True,
    tta: str = "none",
) -> dict[str, Any]:
    """Predictions, mean losses and labels over ``data`` (``tta``: see :func:`forward`).

    Returns ``{"pred": {task: (N,)}, "loss": {task: float}, "true": {task: (N,)},
    "prob": {task: (N, C) or None}}`` as numpy arrays.
    """
    was_training = model.training
    model.eval()
    preds: dict[str, list] = {t.name: [] for t in tasks}
    probs: dict[str, list] = {t.name: [] for t in tasks}
    loss_sum = {t.name: 0.0 for t in tasks}
    loss_n = {t.name: 0 for t in tasks}
    for images, labels in data.batches(batch_size):
        out = forward(model, to_input(images, device, channels_last), tta)
        labels = labels.to(device)
        for j, t in enumerate(tasks):
            o = out[t.name].float()
            y = labels[:, j]
            n = int((~torch.isnan(y)).sum())
            if n:
                loss_sum[t.name] += float(t.loss(o, y)) * n
                loss_n[t.name] += n
            preds[t.name].append(t.predict(o).cpu())
            p = t.probabilities(o)
            if p is not None:
                probs[t.name].append(p.cpu())
    model.train(was_training)
    true = data.labels.numpy()
    return {
        "pred": {k: (torch.cat(v).numpy() if v else np.zeros(0)) for k, v in preds.items()},
        "prob": {k: (torch.cat(v).numpy() if v else None) for k, v in probs.items()},
        "loss": {k: (loss_sum[k] / loss_n[k] if loss_n[k] else float("nan")) for k in loss_sum},
        "true": {t.name: true[:, j] for j, t in enumerate(tasks)},
    }


def score_predictions(result: dict[str, Any], tasks: Sequence[Task], baselines: dict[str, float]) -> dict[str, Any]:
    """Per-task metrics, the trivial baseline's metrics, and the mean skill score.

    ``skill`` is 0 for the trivial baseline (majority class / training median)
    and 1 for a perfect model; its mean over tasks picks the best epoch.
    """
    metrics: dict[str, Any] = {}
    skills = []
    for t in tasks:
        true = result["true"][t.name]
        m = t.metrics(result["pred"][t.name], true)
        base = t.metrics(np.full(len(true), baselines[t.name]), true)
        m["loss"] = result["loss"][t.name]
        m["baseline"] = {k: v for k, v in base.items() if k in ("accuracy", "mae", "mse")}
        if m.get("n", 0):
            m["skill"] = t.skill(m, base)
            skills.append(m["skill"])
        metrics[t.name] = m
    metrics["score"] = float(np.mean(skills)) if skills else float("nan")
    return metrics


#: The scalar metrics :func:`headline_metrics` keeps per task.
HEADLINE_METRICS = ("accuracy", "mae", "mse", "group_accuracy")


def headline_metrics(metrics: dict[str, Any] | None) -> dict[str, dict[str, float]]:
    """Per task, the scalar metrics of a :func:`score_predictions` result (``cs5`` = CS(5)).

    Skips the ``score`` and ``_info`` entries; used by experiment summaries and reports.
    """
    out: dict[str, dict[str, float]] = {}
    for task, m in (metrics or {}).items():
        if task.startswith("_") or not isinstance(m, dict):
            continue
        row = {k: float(m[k]) for k in HEADLINE_METRICS if k in m}
        if "cs" in m:
            row["cs5"] = float(m["cs"]["5"])
        out[task] = row
    return out
