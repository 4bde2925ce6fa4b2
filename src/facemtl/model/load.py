"""Rebuild a trained network from its checkpoint alone, for inference.

Imports the model, the tasks and the checkpoint reader only: never the trainer, the
loss weightings, the data readers or augmentation (a test checks ``sys.modules``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..checkpoint import load_checkpoint
from ..config import Config, config_from_dict
from ..tasks import Task, build_task
from .net import MultiTaskNet


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[MultiTaskNet, list[Task], Config, dict[str, Any]]:
    """``(model, tasks, config, state)`` from a checkpoint, in eval mode, in float32, with no network access."""
    state = load_checkpoint(path)
    cfg = config_from_dict(state["config"])
    tasks = [build_task(t) for t in state["tasks"]]
    model = MultiTaskNet.from_config(cfg.model, tasks, pretrained=False)
    for name in state.get("frozen", []):
        model.freeze(name)
    model.load_state_dict(state["model"])
    model.to(device).float().eval()
    return model, tasks, cfg, state
