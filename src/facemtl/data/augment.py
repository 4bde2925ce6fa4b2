"""Batch augmentation on tensors: horizontal flip, small affine, colour jitter.

Works on a whole batch ``(N, 3, H, W)`` float in [0, 1] at once (on CPU or GPU),
with a per-sample random draw, so it costs a few milliseconds per batch instead
of per-image Python work in loader processes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    """Augmentation settings; every range is symmetric around "no change"."""

    flip: bool = True
    #: Maximum rotation, degrees.
    rotate: float = 10.0
    #: Maximum relative change of scale (0.1 -> 0.9 .. 1.1).
    scale: float = 0.1
    #: Maximum shift, as a fraction of the image side.
    translate: float = 0.05
    #: Maximum relative change of brightness, contrast and saturation.
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2

    def __post_init__(self) -> None:
        for name in ("rotate", "scale", "translate", "brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ValueError(f"augment.{name} must be >= 0")


def _uniform(n: int, r: float, g: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return (torch.rand(n, generator=g, device="cpu") * 2 - 1).mul_(r).to(device)


def augment(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Augment ``x`` ``(N, 3, H, W)`` float in [0, 1]; returns a new tensor of the same shape."""
    n, dev = x.shape[0], x.device
    if cfg.flip:
        flip = torch.rand(n, generator=generator) < 0.5
        x = torch.where(flip.to(dev).view(n, 1, 1, 1), x.flip(3), x)
    if cfg.rotate or cfg.scale or cfg.translate:
        ang = _uniform(n, math.radians(cfg.rotate), generator, dev)
        sc = 1 + _uniform(n, cfg.scale, generator, dev)
        tx = _uniform(n, 2 * cfg.translate, generator, dev)
        ty = _uniform(n, 2 * cfg.translate, generator, dev)
        cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
        theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if cfg.brightness:
        x = x * (1 + _uniform(n, cfg.brightness, generator, dev)).view(n, 1, 1, 1)
    if cfg.contrast:
        mean = x.mean((1, 2, 3), keepdim=True)
        x = (x - mean) * (1 + _uniform(n, cfg.contrast, generator, dev)).view(n, 1, 1, 1) + mean
    if cfg.saturation:
        gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        x = (x - gray) * (1 + _uniform(n, cfg.saturation, generator, dev)).view(n, 1, 1, 1) + gray
    return x.clamp_(0, 1)
