"""Batch augmentation on tensors: horizontal flip, small affine, colour jitter.

Works on a whole batch ``(N, 3, H, W)`` float in [0, 1] at once (on CPU or GPU),
with a per-sample random draw, so it costs a few milliseconds per batch instead
of per-image Python work in loader processes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..config import AugmentConfig
from ..device import to_device


def _uniform(n: int, r: float, g: torch.Generator | None) -> torch.Tensor:
    """``n`` draws, uniform in [-r, r], on the CPU."""
    return (torch.rand(n, generator=g) * 2 - 1).mul_(r)


def _draws(n: int, cfg: AugmentConfig, g: torch.Generator | None) -> torch.Tensor:
    """Every random number of one batch ``(8, n)``, drawn on the CPU generator in a fixed order.

    Rows: flip (0/1), angle (rad), scale factor, shift x, shift y, brightness, contrast
    and saturation factors. One tensor, so a GPU batch needs one host-to-device copy.
    """
    flip = (torch.rand(n, generator=g) < 0.5).float() if cfg.flip else torch.zeros(n)
    geo = bool(cfg.rotate or cfg.scale or cfg.translate)
    ang, sc, tx, ty = [_uniform(n, r, g) if geo else torch.zeros(n)
                       for r in (math.radians(cfg.rotate), cfg.scale, 2 * cfg.translate, 2 * cfg.translate)]
    col = [_uniform(n, r, g) if r else torch.zeros(n) for r in (cfg.brightness, cfg.contrast, cfg.saturation)]
    return torch.stack([flip, ang, 1 + sc, tx, ty, *(1 + c for c in col)])


def augment(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Augment ``x`` ``(N, 3, H, W)`` float in [0, 1]; returns a new tensor of the same shape.

    The random draws come from ``generator`` on the CPU (repeatable whatever the device)
    and travel to ``x``'s device in one non-blocking copy, so a GPU step does not wait.
    """
    n, dev = x.shape[0], x.device
    d = to_device(_draws(n, cfg, generator), dev)

    def col(i: int) -> torch.Tensor:
        return d[i].view(n, 1, 1, 1)

    if cfg.flip:
        x = torch.where(col(0) > 0.5, x.flip(3), x)
    if cfg.rotate or cfg.scale or cfg.translate:
        ang, sc, tx, ty = d[1], d[2], d[3], d[4]
        cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
        theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if cfg.brightness:
        x = x * col(5)
    if cfg.contrast:
        mean = x.mean((1, 2, 3), keepdim=True)
        x = (x - mean) * col(6) + mean
    if cfg.saturation:
        gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        x = (x - gray) * col(7) + gray
    return x.clamp_(0, 1)
