"""Host batches onto the training device."""

from __future__ import annotations

import torch


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; from the CPU to a GPU through pinned memory, without blocking.

    A pageable host tensor makes the copy wait for the GPU to finish what is queued, so
    a step that copied several small tensors would stall the host at each of them.
    """
    if device.type == "cuda" and t.device.type == "cpu" and not t.is_pinned():
        t = t.pin_memory()
    return t.to(device, non_blocking=True)
