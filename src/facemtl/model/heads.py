"""Output layers that are more than a ``Linear``."""

from __future__ import annotations

import torch
from torch import nn


class CoralHead(nn.Module):
    """CORAL output layer: one shared weight vector, K-1 biases (Cao et al. 2020).

    ``(N, F) -> (N, K-1)``: ``z_k = w . x + b_k``; biases start descending in (0, 1]
    as in ``coral_pytorch.layers.CoralLayer(preinit_bias=True)``.
    """

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Linear(in_features, 1, bias=False)
        self.bias = nn.Parameter(torch.arange(num_classes - 1, 0, -1).float() / (num_classes - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight(x) + self.bias
