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


def group_lrs(cfg: Config, groups: int) -> list[float]:
    """The base learning rate of each of ``build_optimizer``'s ``groups`` parameter groups."""
    return [cfg.optim.lr, cfg.weighting.lr or cfg.optim.lr][:groups]


def retune(optimizer: torch.optim.Optimizer, scheduler: Any, cfg: Config,
           saved_lrs: list[float] | None = None) -> None:
    """After a resume loaded the saved optimiser and schedule (which bring back the stopped run's
    rates and settings), apply ``cfg``'s: weight decay and SGD's momentum as set, and each group's
    learning rate scaled by new / old base rate (``optim.lr``; ``weighting.lr`` for the
    weighting's group), so the schedule goes on from where it was at the new scale: its current
    rate, its base, OneCycle's peak and floor. Before this, such an override was written to the
    run's ``config.yaml`` and ignored (a user test: ``optim.lr=0.5`` recorded, 0.003 trained).

    The old base rate is the one the group trains at, as the optimiser holds it: OneCycle's peak
    (``max_lr``), else the schedule's base (``base_lrs``); for ``plateau``, whose rate has no base
    once cut, ``saved_lrs`` (the stopped run's recorded rates; none: left as it is). So a run an
    earlier facemtl resumed with an ignored override comes to the rate asked for now. Momentum is
    left to OneCycle, which cycles it (``optim.momentum`` is not read with it, on a fresh run
    either). A resume with no override leaves every value as it was, bit for bit. ``plateau``'s
    factor and patience as set (its saved state holds them). Another optimiser or schedule is
    refused before (:data:`~facemtl.training.runfolder.FIXED_ON_RESUME`)."""
    o = cfg.optim
    new = group_lrs(cfg, len(optimizer.param_groups))
    base = list(scheduler.base_lrs) if hasattr(scheduler, "base_lrs") else None  # (a copy: a state loaded from
    # another scheduler's state_dict() shares its list)
    cycles_momentum = isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR)
    for i, group in enumerate(optimizer.param_groups):
        old = group["max_lr"] if "max_lr" in group else base[i] if base is not None else \
            saved_lrs[i] if saved_lrs and i < len(saved_lrs) else new[i]
        if new[i] != old:
            ratio = new[i] / old
            for key in ("lr", "initial_lr", "max_lr", "min_lr"):
                if key in group:
                    group[key] *= ratio
            if base is not None:
                base[i] *= ratio
        if i == 0:  # (the weighting's group keeps no weight decay)
            group["weight_decay"] = o.weight_decay
        if "momentum" in group and o.name == "sgd" and not cycles_momentum:
            group["momentum"] = o.momentum
    if base is not None:
        scheduler.base_lrs = base
    if hasattr(scheduler, "_last_lr"):
        scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.factor, scheduler.patience = o.plateau_factor, o.plateau_patience


def saved_lrs(settings: dict[str, Any] | None) -> list[float] | None:
    """The base rates of :func:`group_lrs` as the settings ``settings`` (a checkpoint's ``config``,
    as saved) name them; ``None`` where they name none."""
    optim = (settings or {}).get("optim") or {}
    if not isinstance(optim.get("lr"), (int, float)):
        return None
    weighting = (settings or {}).get("weighting") or {}
    return [float(optim["lr"]), float(weighting.get("lr") or optim["lr"])]
