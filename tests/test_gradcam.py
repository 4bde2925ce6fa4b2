"""Grad-CAM (paper Fig. 5): where a map's cells are drawn, and what an ordinal head's map explains."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from facemtl.report.gradcam import cell_grid, upsample  # noqa: E402


@pytest.mark.parametrize("layers,stride,offset", [
    # two 3x3 stride-2 convolutions without padding: cell i sees input rows 4i .. 4i + 6
    (lambda nn: [nn.Conv2d(3, 4, 3, 2, 0), nn.ReLU(), nn.Conv2d(4, 4, 3, 2, 0)], 4, 3),
    # symmetric padding throughout, then a 2x2 max pool: rows 8m - 6 .. 8m + 10, centre 8m + 2
    (lambda nn: [nn.Conv2d(3, 4, 3, 2, 1), nn.BatchNorm2d(4), nn.ReLU6(), nn.Conv2d(4, 4, 5, 2, 2), nn.MaxPool2d(2)],
     8, 2),
    # a dilated convolution and a padded 3x3 pool keep the centres on 4i
    (lambda nn: [nn.Conv2d(3, 4, 3, 2, 1), nn.Conv2d(4, 4, 3, 1, 2, dilation=2), nn.MaxPool2d(3, 2, 1)], 4, 0),
])
def test_cell_grid_measures_known_geometries(layers, stride, offset):
    net = torch.nn.Sequential(*layers(torch.nn))
    assert cell_grid(net, net[-1], (64, 64)) == ((stride, offset), (stride, offset))


def test_cell_grid_measures_rows_and_columns_apart_and_size_dependent_padding():
    import math

    import torch.nn.functional as F

    nn = torch.nn
    # padding (left 1, right 1, top 0, bottom 2), then a stride of 2 down and 1 across
    net = nn.Sequential(nn.ZeroPad2d((1, 1, 0, 2)), nn.Conv2d(3, 4, 3, (2, 1), 0), nn.Conv2d(4, 4, 3, 2, 1))
    assert cell_grid(net, net[-1], (64, 64)) == ((4, 1), (2, 0))

    class SameConv(nn.Conv2d):  # TensorFlow's "same": the padding depends on the input's size
        def forward(self, x):
            pad = [max((math.ceil(n / 2) - 1) * 2 + 3 - n, 0) for n in x.shape[-2:]]
            x = F.pad(x, [pad[1] // 2, pad[1] - pad[1] // 2, pad[0] // 2, pad[0] - pad[0] // 2])
            return F.conv2d(x, self.weight, self.bias, 2)

    net = nn.Sequential(*[SameConv(3 if i == 0 else 4, 4, 3) for i in range(5)])
    # at 112 px each level pads its end, 15 px in all; at 113, 16; at 100, 3 (checked against the
    # receptive fields of the cells at that size itself)
    for size, offset in ((112, 15), (113, 16), (100, 3)):
        assert cell_grid(net, net[-1], (size, size)) == ((32, offset), (32, offset))


def test_lite0_cells_are_centred_on_multiples_of_32():
    """Lite0's convolutions pad symmetrically: the last stage's cell i is centred on pixel 32 i
    (not 14 + 28 i, where stretching a 4 x 4 map over 112 px drew it)."""
    from facemtl.model import MultiTaskNet
    from facemtl.report.gradcam import target_layer
    from facemtl.tasks import build_task

    model = MultiTaskNet([build_task({"name": "gender", "type": "nominal", "classes": ["m", "f"]})],
                         pretrained=False)
    assert cell_grid(model, target_layer(model, "gender"), (112, 112)) == ((32, 0), (32, 0))


def test_the_tiny_backbones_squeeze_excite_gates_do_not_stop_the_measure():
    """A review: tiny_mbconv's (and efficientnet_b0's) squeeze-excite blocks, a global mean, made
    every cell see the whole strip, and the maps fell back to edge-to-edge stretching unsaid."""
    import warnings

    from facemtl.model import MultiTaskNet
    from facemtl.report.gradcam import gradcam_maps, placement, target_layer
    from facemtl.tasks import build_task

    task = build_task({"name": "gender", "type": "nominal", "classes": ["m", "f"]})
    model = MultiTaskNet([task], backbone="tiny_mbconv", pretrained=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback, which warns
        assert placement(model, target_layer(model, "gender"), (64, 64)) == ((16, 0), (16, 0))
        maps, _ = gradcam_maps(model, task, np.zeros((2, 64, 64, 3), np.uint8) + 100)
    assert maps.shape == (2, 64, 64)


def test_upsample_draws_each_cell_at_its_centre():
    cam = np.zeros((1, 4, 4))
    cam[0, 1, 2] = 1.0
    up = upsample(cam, (112, 112), (32, 0), (32, 0))
    assert up.shape == (1, 112, 112)
    assert np.unravel_index(up[0].argmax(), (112, 112)) == (32, 64)
    assert up[0, 32, 64] == 1 and up[0, 48, 64] == 0.5 and up[0, 0, 64] == 0  # linear between centres
    flat = upsample(np.full((1, 4, 4), 0.25), (112, 96), (32, 0), (32, 0))  # the edge cells' value beyond them
    assert np.allclose(flat, 0.25)


def test_an_ordinal_heads_score_backs_each_threshold_decision():
    """Each "label > r_k" logit signed by its decision, summed (paper eq. 5-6): a young face's
    many "no" decisions count for it; the plain sum counted them against it."""
    from facemtl.tasks import build_task

    task = build_task({"name": "age", "type": "ordinal", "min_value": 1, "max_value": 4})
    out = torch.tensor([[2.0, -1.0, -3.0]], requires_grad=True)
    score = task.explain_score(out)
    assert score.item() == 6.0
    (grad,) = torch.autograd.grad(score.sum(), out)
    assert grad.tolist() == [[1.0, -1.0, -1.0]]
    # a scale of two levels has one logit: signed alike (a "no" scored -2, a review)
    two = build_task({"name": "s", "type": "ordinal", "min_value": 0, "max_value": 1})
    assert two.explain_score(torch.tensor([[-2.0]])).item() == 2.0
    # CORN's conditional logits signed by the cumulative decision: z = [3, .1, .1] decodes rank 2
    # (s(3) s(.1) = 0.50 > 0.5, then 0.26): the third logit counts against it
    corn = build_task({"name": "s", "type": "ordinal", "min_value": 0, "max_value": 3, "method": "corn"})
    out = torch.tensor([[3.0, 0.1, 0.1]], requires_grad=True)
    (grad,) = torch.autograd.grad(corn.explain_score(out).sum(), out)
    assert grad.tolist() == [[1.0, 1.0, -1.0]]
    # a regression explains its value
    reg = build_task({"name": "r", "type": "regression", "min_value": 0, "max_value": 1})
    assert reg.explain_score(torch.tensor([[-0.5]])).item() == -0.5


def test_age_maps_of_young_faces_are_not_blank(utkface_root):
    """The shipped network on real faces under 15: the sum of threshold logits left half of their
    age maps empty (no region raised it); every map shows something now."""
    pytest.importorskip("captum")
    from facemtl.data.utkface import read_utkface
    from facemtl.images import load_rgb
    from facemtl.inference.predictor import DEFAULT_CHECKPOINT, default_model_path
    from facemtl.model import load_model
    from facemtl.report.gradcam import gradcam_maps

    t = read_utkface(utkface_root, limit=400)
    young = [p for p, a in zip(t.paths, t.labels["age"]) if a < 15][:8]
    model, tasks, cfg, _ = load_model(default_model_path(DEFAULT_CHECKPOINT), "cpu")
    age = next(x for x in tasks if x.name == "age")
    imgs = np.stack([load_rgb(str(p), cfg.data.image_size) for p in young])
    with torch.enable_grad():
        maps, pred = gradcam_maps(model, age, imgs)
        age.explain_score = lambda out: out.sum(1)  # the earlier score, on this task object alone
        before, _ = gradcam_maps(model, age, imgs)
    assert len(young) == 8 and (pred < 20).sum() >= 4
    assert (maps.reshape(len(maps), -1).max(1) == 1).all()
    assert (before.reshape(len(before), -1).max(1) < 1).sum() >= 3  # 4 of these 8 were blank
