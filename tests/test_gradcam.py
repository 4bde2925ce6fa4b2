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
    assert cell_grid(net, net[-1]) == (stride, offset)


def test_lite0_cells_are_centred_on_multiples_of_32():
    """Lite0's convolutions pad symmetrically: the last stage's cell i is centred on pixel 32 i
    (not 14 + 28 i, where stretching a 4 x 4 map over 112 px drew it)."""
    from facemtl.model import MultiTaskNet
    from facemtl.report.gradcam import target_layer
    from facemtl.tasks import build_task

    model = MultiTaskNet([build_task({"name": "gender", "type": "nominal", "classes": ["m", "f"]})],
                         pretrained=False)
    assert cell_grid(model, target_layer(model, "gender")) == (32, 0)


def test_upsample_draws_each_cell_at_its_centre():
    cam = np.zeros((1, 4, 4))
    cam[0, 1, 2] = 1.0
    up = upsample(cam, (112, 112), 32, 0)
    assert up.shape == (1, 112, 112)
    assert np.unravel_index(up[0].argmax(), (112, 112)) == (32, 64)
    assert up[0, 32, 64] == 1 and up[0, 48, 64] == 0.5 and up[0, 0, 64] == 0  # linear between centres
    flat = upsample(np.full((1, 4, 4), 0.25), (112, 96), 32, 0)  # the edge cells' value beyond them
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
