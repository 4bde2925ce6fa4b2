"""The optimiser and the learning-rate schedule of a training run."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..config import Config
from ..weighting import Weighting


def build_optimizer(cfg: Config, model: torch.nn.Module, weighting: Weighting) -> torch.optim.Optimizer:
    """SGD (the paper), Adam (the thesis) or AdamW; the weighting's own parameters in a group
    without weight decay, at ``weighting.lr`` when set."""
    o = cfg.optim
    groups = [{"params": [p for p in model.parameters()], "weight_decay": o.weight_decay}]
    wparams = list(weighting.parameters())
    if wparams:
        groups.append({"params": wparams, "weight_decay": 0.0, "lr": cfg.weighting.lr or o.lr})
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum)
    if o.name == "adam":
        return torch.optim.Adam(groups, lr=o.lr)
    return torch.optim.AdamW(groups, lr=o.lr)


def build_scheduler(cfg: Config, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> Any:
    """``plateau`` (lr / 10 when the validation loss stalls: the thesis), ``onecycle``, or a
    per-step factor: a linear warm-up ramp times a constant (``none``) or times a cosine decay
    over all the run's steps. The two are multiplied from the first step, so with ``cosine``
    the peak is a little under ``optim.lr`` (0.98 x with one warm-up epoch of 12, as
    ``cpu.yaml``; 0.75 x with one of 3): kept so, as the shipped models were trained with it."""
    o, epochs = cfg.optim, cfg.train.epochs
    total = epochs * steps_per_epoch
    warm = int(o.warmup_epochs * steps_per_epoch)
    if o.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=o.plateau_factor, patience=o.plateau_patience)
    if o.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total, pct_start=0.15
        )

    def factor(step: int) -> float:
        w = min(1.0, (step + 1) / warm) if warm else 1.0
        if o.scheduler == "cosine":
            # a Python float: a NumPy one would land in the saved learning rates, which torch.load refuses
            return w * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(1, total)))
        return w

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
