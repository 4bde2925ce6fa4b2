"""Checkpoints: ``last.pt`` holds everything ``--resume`` needs; ``best.pt`` what inference needs.

Both carry the resolved config and the task specs, so a checkpoint alone
rebuilds its model (``load_model``) without the YAML file that trained it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(trainer: Any, path: Path, full: bool, metrics: dict[str, Any] | None = None) -> None:
    state: dict[str, Any] = {
        "format": "facemtl-1",
        "config": trainer.cfg.to_dict(),
        "tasks": [t.to_dict() for t in trainer.tasks],
        "model": trainer.model.state_dict(),
        "frozen": sorted(trainer.model.frozen_tasks),
        "epoch": trainer.epoch,
        "best_score": trainer.best_score,
        "best_epoch": trainer.best_epoch,
        "baselines": trainer.data.baselines,
        "weights": trainer.weighting.weights(),
    }
    if metrics is not None:
        state["val_metrics"] = metrics
    if full:
        state.update(
            optimizer=trainer.optimizer.state_dict(),
            scheduler=trainer.scheduler.state_dict(),
            weighting=trainer.weighting.state_dict(),
            weighting_extra=trainer.weighting.extra_state(),
            generator=trainer.generator.get_state(),
            torch_rng=torch.get_rng_state(),
            callbacks=[cb.state_dict() for cb in trainer.callbacks],
        )
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a run killed mid-save leaves the previous checkpoint intact


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file
        raise ValueError(f"{path} is not a readable facemtl checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != "facemtl-1":
        raise ValueError(f"{path} is not a facemtl checkpoint")
    return state


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """``(model, tasks, config, state)`` from a checkpoint, in eval mode, with no network access."""
    from ..config import config_from_dict
    from ..tasks import build_task
    from .trainer import build_model

    state = load_checkpoint(path)
    cfg = config_from_dict(state["config"])
    tasks = [build_task(t) for t in state["tasks"]]
    model = build_model(cfg, tasks, pretrained=False)
    for name in state.get("frozen", []):
        model.freeze(name)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    return model, tasks, cfg, state
