"""The PyTorch runtime: a training checkpoint (``.pt``) run eagerly (needs ``facemtl[train]``)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...device import resolve_device
from ...model import load_model
from ...preprocess import to_input
from ..model_info import ModelInfo, file_version


def checkpoint_info(path: str | Path, model: Any, tasks: list, cfg: Any, state: dict[str, Any]) -> ModelInfo:
    """What a checkpoint says about itself, as every runtime reports it.

    ``extra`` also records what ``facemtl evaluate`` needs to rebuild the model's data
    split from an exported file alone: the data settings and the seed.
    """
    return ModelInfo(
        name=cfg.name, version=str(state.get("model_version") or file_version(path)),
        tasks=[t.to_dict() for t in tasks], image_size=cfg.data.image_size,
        mean=[float(v) for v in model.mean.flatten()], std=[float(v) for v in model.std.flatten()],
        extra={"source": str(state.get("source") or Path(path).name), "epoch": state.get("epoch"),
               "data_root": cfg.data.root, "data": asdict(cfg.data), "seed": cfg.train.seed,
               "split_tasks": state.get("split_tasks") or [t.to_dict() for t in tasks],
               "precision": "fp32",
               # the splits' faces and labels when trained (checkpoints since 2026-11-27): evaluate
               # refuses a split redrawn over changed data, from the checkpoint or an export of it
               **({"data_fingerprint": state["data_fingerprint"]} if state.get("data_fingerprint") else {})},
    )


class TorchRuntime:
    """Raw outputs of a checkpoint's network on batches of ``uint8 (N, 3, S, S)`` crops.

    ``threads``: torch's intra-op threads for this process (``None``: torch's default, which
    counts the machine's cores, not a CPU quota; a process-wide setting left to the caller).
    """

    name = "torch"
    precision = "fp32"

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.device = resolve_device(device)
        self.model, tasks, cfg, state = load_model(path, self.device)
        self.tasks, self.config = tasks, cfg
        self.channels_last = cfg.model.channels_last
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.info = checkpoint_info(path, self.model, tasks, cfg, state)

    @torch.inference_mode()
    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``uint8 (N, 3, S, S)`` -> ``{task: float32 (N, D)}``."""
        out = self.model(to_input(batch, self.device, self.channels_last))
        return {k: v.float().cpu().numpy() for k, v in out.items()}
