"""scripts/model_soup.py: the weight average and the batch-norm statistics estimated again."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from facemtl.data.dataset import FaceSet

REPO = Path(__file__).resolve().parents[1]


def _soup_module():
    spec = importlib.util.spec_from_file_location("model_soup", REPO / "scripts" / "model_soup.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_average_is_the_mean_of_float_tensors_and_keeps_the_first_counters():
    soup = _soup_module()
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(7)}
    b = {"w": torch.tensor([3.0, 6.0]).half(), "n": torch.tensor(9)}
    out = soup.average([a, b])
    assert out["w"].dtype == torch.float16 and out["w"].tolist() == [2.0, 4.0]
    assert out["n"].item() == 7


def test_batch_norm_statistics_are_those_of_the_data():
    """One BN layer: with batches of equal size its running mean must be each channel's mean
    over every pixel of every image (a cumulative mean over the batches, each counting once)."""
    soup = _soup_module()
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8, generator=g)
    data = FaceSet([f"{i}.jpg" for i in range(10)], torch.zeros(10, 1), 4, images)
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(3), torch.nn.Dropout(0.5))
    model[0].running_mean.fill_(5.0)
    soup.recompute_batch_norm(model, data, batch_size=5, channels_last=False)
    x = images.float() / 255
    per_channel = x.permute(1, 0, 2, 3).reshape(3, -1)
    assert torch.allclose(model[0].running_mean, per_channel.mean(1), atol=1e-6)
    # the cumulative mean of the batches' unbiased variances: close to, not exactly, the pooled variance
    assert torch.allclose(model[0].running_var, per_channel.var(1), rtol=0.05)
    assert model[0].momentum == 0.1 and not model.training
