"""Backbones (shared trunks), pluggable by name through :data:`BACKBONES`."""

from .efficientnet import BACKBONES, EfficientNet, load_lite0_imagenet
from .mbconv import MBConv, StageSpec

__all__ = ["BACKBONES", "EfficientNet", "MBConv", "StageSpec", "load_lite0_imagenet"]
