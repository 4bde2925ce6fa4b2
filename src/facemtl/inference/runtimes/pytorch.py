"""The PyTorch runtime: a training checkpoint (``.pt``) run eagerly (needs ``facemtl[train]``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...device import resolve_device
from ...model import load_model
from ...preprocess import to_input
from ..model_info import ModelInfo, file_version


class TorchRuntime:
    """Raw outputs of a checkpoint's network on batches of ``uint8 (N, 3, S, S)`` crops.

    ``threads``: torch's intra-op threads for this process (``None``: torch's default).
    """

    name = "torch"

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.device = resolve_device(device)
        self.model, tasks, cfg, state = load_model(path, self.device)
        self.channels_last = cfg.model.channels_last
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.info = ModelInfo(
            name=cfg.name, version=str(state.get("model_version") or file_version(path)),
            tasks=[t.to_dict() for t in tasks], image_size=cfg.data.image_size,
            mean=[float(v) for v in self.model.mean.flatten()], std=[float(v) for v in self.model.std.flatten()],
            extra={"source": str(state.get("source") or Path(path).name), "epoch": state.get("epoch"),
                   "data_root": cfg.data.root},
        )

    @torch.inference_mode()
    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``uint8 (N, 3, S, S)`` -> ``{task: float32 (N, D)}``."""
        out = self.model(to_input(batch, self.device, self.channels_last))
        return {k: v.float().cpu().numpy() for k, v in out.items()}
