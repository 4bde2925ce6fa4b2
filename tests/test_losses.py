"""Every loss and decoder against values worked by hand and against coral-pytorch."""

import math

import numpy as np
import pytest
import torch

from facemtl.losses import corn_loss, levels_from_ranks, ordinal_bce_loss
from facemtl.tasks import BinaryTask, NominalTask, OrdinalTask, RegressionTask, build_task
from facemtl.tasks.regression import decode_ranks, ordinal_probabilities

coral = pytest.importorskip("coral_pytorch")
from coral_pytorch.dataset import corn_label_from_logits, levels_from_labelbatch, proba_to_label  # noqa: E402
from coral_pytorch.layers import CoralLayer  # noqa: E402
from coral_pytorch.losses import coral_loss as ref_coral_loss  # noqa: E402
from coral_pytorch.losses import corn_loss as ref_corn_loss  # noqa: E402


def test_levels_by_hand():
    assert levels_from_ranks(torch.tensor([0, 2, 4]), 5).tolist() == [[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]]


def test_levels_match_coral_pytorch():
    r = torch.tensor([0, 3, 1, 5, 2])
    assert torch.equal(levels_from_ranks(r, 6), levels_from_labelbatch(r, 6))


def test_ordinal_bce_by_hand():
    # logits 0 -> p = 0.5 for both thresholds: each term is log 2, summed over K-1 = 2.
    loss = ordinal_bce_loss(torch.zeros(1, 2), torch.tensor([1]))
    assert loss.item() == pytest.approx(2 * math.log(2), abs=1e-6)
    # rank 2 of K=3 with logits [ln 3, 0]: -log(3/4) - log(1/2)
    loss = ordinal_bce_loss(torch.tensor([[math.log(3), 0.0]]), torch.tensor([2]))
    assert loss.item() == pytest.approx(-math.log(0.75) + math.log(2), abs=1e-6)
    assert ordinal_bce_loss(torch.zeros(1, 2), torch.tensor([1]), reduction="mean").item() == pytest.approx(math.log(2))


def test_ordinal_importance_weights_known_values():
    """Paper eq. 7's lambda_k, settable now (a researcher's test: they could not be set from a
    recipe): a list, or Niu et al.'s sqrt of the training faces per rank scaled to a mean of 1."""
    t = build_task({"name": "s", "type": "ordinal", "min_value": 0, "max_value": 3, "importance": [2.0, 0.0, 1.0]})
    # rank 2 with logits [ln 3, 0, 0]: terms -log(3/4), log 2, log 2; weighted 2, 0, 1
    loss = t.loss(torch.tensor([[math.log(3), 0.0, 0.0]]), torch.tensor([2.0]))
    assert loss.item() == pytest.approx(-2 * math.log(0.75) + math.log(2), abs=1e-6)
    counts = build_task({"name": "s", "type": "ordinal", "min_value": 1, "max_value": 4, "importance": "counts"})
    with pytest.raises(RuntimeError, match="which this task was not given"):
        counts.loss(torch.zeros(1, 3), torch.tensor([2.0]))
    # ranks 0 (x4), 1 (x1), 2 (x2), 3 (x1), one unlabelled: sqrt(4), sqrt(1), sqrt(2) scaled to a mean of 1
    fitted = counts.fit_training_labels(np.array([1, 1, 1, 1, 2, 3, 3, 4, np.nan]))
    want = np.array([2, 1, math.sqrt(2)]) * 3 / (3 + math.sqrt(2))
    assert fitted == {"importance": [round(float(x), 4) for x in want]}
    assert counts.loss(torch.zeros(2, 3), torch.tensor([1.0, 4.0])).item() == pytest.approx(3 * math.log(2), abs=1e-6)
    # a rank no training face has still trains its threshold (n at least 1)
    assert counts.fit_training_labels(np.array([1.0, 1.0, 1.0, 1.0]))["importance"] == [1.5, 0.75, 0.75]
    assert build_task({"name": "s", "type": "ordinal", "max_value": 3}).fit_training_labels(np.zeros(3)) is None
    for bad, why in (({"importance": [1, 1]}, "takes 3 weights"), ({"importance": [0, 0, 0]}, "not all 0"),
                     ({"importance": "sqrt"}, "or 'counts', not 'sqrt'"),
                     ({"importance": "counts", "method": "corn"}, "a corn head has none")):
        with pytest.raises(ValueError, match=why):
            build_task({"name": "s", "type": "ordinal", "min_value": 0, "max_value": 3, **bad})
    # the grid's ablations that change the head drop it (a softmax or regression task has no thresholds)
    for ab in build_task({"name": "s", "type": "ordinal", "max_value": 3, "importance": "counts"}).ablations():
        assert ab.changes["importance"] is None


def test_ordinal_bce_matches_coral_docstring_and_random():
    levels = torch.tensor([[1.0, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    logits = torch.tensor([[2.1, 1.8, -2.1, -1.8], [1.9, -1.0, -1.5, -1.3], [1.9, 1.8, 1.7, 1.6]])
    ranks = levels.sum(1).long()
    assert ordinal_bce_loss(logits, ranks).item() == pytest.approx(0.6920, abs=1e-4)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 9, generator=g)
    ranks = torch.randint(0, 10, (16,), generator=g)
    ref = ref_coral_loss(logits, levels_from_labelbatch(ranks, 10))
    assert ordinal_bce_loss(logits, ranks).item() == pytest.approx(ref.item(), rel=1e-6)


def test_corn_matches_coral_pytorch():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(32, 6, generator=g)
    ranks = torch.randint(0, 7, (32,), generator=g)
    assert corn_loss(logits, ranks).item() == pytest.approx(ref_corn_loss(logits, ranks, 7).item(), rel=1e-6)


def test_corn_by_hand():
    # One sample of rank 1, K = 3: subproblem 0 (target 1) and subproblem 1 (target 0) both used.
    loss = corn_loss(torch.zeros(1, 2), torch.tensor([1]))
    assert loss.item() == pytest.approx(math.log(2))
    # Rank 0: only subproblem 0 is in its conditional set.
    loss = corn_loss(torch.tensor([[0.0, 5.0]]), torch.tensor([0]))
    assert loss.item() == pytest.approx(math.log(2))


def test_decoders_by_hand():
    p = np.array([[0.9, 0.7, 0.4, 0.1], [0.6, 0.6, 0.6, 0.6]], np.float32)
    assert decode_ranks(p, "threshold").tolist() == [2.0, 4.0]
    assert decode_ranks(p, "expected").tolist() == pytest.approx([2.1, 2.4])
    assert decode_ranks(p, "threshold").astype(int).tolist() == proba_to_label(torch.from_numpy(p)).tolist()
    with pytest.raises(ValueError):
        decode_ranks(p, "median")


def test_corn_decoding_matches_coral_pytorch():
    logits = torch.tensor([[2.0, 1.0, -0.5, 3.0], [0.5, 0.5, 0.5, 0.5], [-1.0, 2.0, 2.0, 2.0]])
    probs = ordinal_probabilities(logits.numpy(), "corn")
    assert decode_ranks(probs, "threshold").astype(int).tolist() == corn_label_from_logits(logits).tolist()


def test_ordinal_task_paper_decoding_rank_is_one_plus_sum():
    # Paper eq. 6: rank = 1 + sum of thresholded outputs; ages start at min_value = 1.
    t = OrdinalTask("age", min_value=1, max_value=5)
    logits = np.array([[3.0, 2.0, -1.0, -4.0]], np.float32)
    assert t.predict(logits).item() == 3.0
    probs = t.probabilities(logits)
    assert probs.sum() == pytest.approx(1.0)
    assert probs.argmax() == 2  # value 3


def test_coral_head_matches_coral_layer_init():
    t = OrdinalTask("age", min_value=0, max_value=9, method="coral")
    head = t.make_head(4)
    ref = CoralLayer(4, 10)
    assert torch.allclose(head.bias, ref.coral_bias)
    head.weight.weight.data.copy_(ref.coral_weights.weight.data)
    x = torch.randn(3, 4)
    assert torch.allclose(head(x), ref(x))


def test_nominal_binary_regression_by_hand():
    t = NominalTask("race", num_classes=2)
    assert t.loss(torch.tensor([[0.0, math.log(3)]]), torch.tensor([1.0])).item() == pytest.approx(-math.log(0.75))
    b = BinaryTask("young")
    assert b.loss(torch.tensor([[0.0]]), torch.tensor([1.0])).item() == pytest.approx(math.log(2))
    assert b.predict(np.array([[0.3], [-0.2]])).tolist() == [1.0, 0.0]
    r = RegressionTask("age", min_value=0, max_value=100)
    # target 50 -> 0.5 normalised; output 0.7 -> (0.2)^2
    assert r.loss(torch.tensor([[0.7]]), torch.tensor([50.0])).item() == pytest.approx(0.04)
    r1 = RegressionTask("age", min_value=0, max_value=100, loss_fn="l1")
    assert r1.loss(torch.tensor([[0.7]]), torch.tensor([50.0])).item() == pytest.approx(0.2)
    assert r.predict(np.array([[0.25], [1.5]])).tolist() == [25.0, 100.0]


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "a", "type": "ordinal", "min_value": 0, "max_value": 6},
        {"name": "a", "type": "ordinal", "min_value": 0, "max_value": 6, "method": "coral"},
        {"name": "a", "type": "ordinal", "min_value": 0, "max_value": 6, "method": "corn"},
        {"name": "a", "type": "nominal", "num_classes": 4},
        {"name": "a", "type": "binary"},
        {"name": "a", "type": "regression", "min_value": 0, "max_value": 6},
    ],
)
def test_masked_labels_change_nothing(spec):
    task = build_task(spec)
    g = torch.Generator().manual_seed(0)
    out = torch.randn(6, task.make_head(3).__call__(torch.zeros(1, 3)).shape[1], generator=g, requires_grad=True)
    y = torch.tensor([1.0, 0.0, 3.0, 2.0, 1.0, 0.0])
    if spec["type"] == "binary":
        y = (y > 0).float()
    y_masked = y.clone()
    y_masked[[1, 4]] = float("nan")
    full = task.loss(out[[0, 2, 3, 5]], y[[0, 2, 3, 5]])
    masked = task.loss(out, y_masked)
    assert masked.item() == pytest.approx(full.item(), rel=1e-6)
    masked.backward()
    assert out.grad[[1, 4]].abs().sum().item() == 0.0
    # All labels missing: a zero loss that still back-propagates.
    empty = task.loss(out, torch.full((6,), float("nan")))
    assert empty.item() == 0.0 and empty.requires_grad


def test_unknown_task_type_and_bad_settings():
    with pytest.raises(KeyError, match="unknown task type 'ordinall'"):
        build_task({"name": "age", "type": "ordinall"})
    with pytest.raises(ValueError, match="task 'age' of type 'nominal' has no setting 'bogus'; it takes: type, name"):
        build_task({"name": "age", "type": "nominal", "bogus": 1})
    with pytest.raises(ValueError, match="method"):
        build_task({"name": "age", "type": "ordinal", "method": "xyz"})


def test_task_metrics_ignore_missing_labels():
    t = OrdinalTask("age", min_value=0, max_value=100)
    m = t.metrics(np.array([10.0, 20.0, 99.0]), np.array([12.0, 20.0, np.nan]))
    assert m["mae"] == pytest.approx(1.0) and m["n"] == 2
