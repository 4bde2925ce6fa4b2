"""Loss weightings: totals, reported weights and gradients in closed form."""

import math

import pytest
import torch
from torch import nn

from facemtl.weighting import WEIGHTINGS, build_weighting

TASKS = ["age", "gender", "race"]


def losses(values, requires_grad=False):
    return {t: torch.tensor(v, requires_grad=requires_grad) for t, v in zip(TASKS, values)}


def test_equal_and_fixed():
    assert build_weighting("equal", TASKS)(losses([1.0, 2.0, 3.0])).item() == pytest.approx(6.0)
    w = build_weighting("fixed", TASKS, {"weights": {"age": 0.5, "race": 2.0}})
    assert w(losses([1.0, 2.0, 3.0])).item() == pytest.approx(0.5 + 2.0 + 6.0)
    assert w.weights() == {"age": 0.5, "gender": 1.0, "race": 2.0}
    with pytest.raises(ValueError, match="unknown tasks"):
        build_weighting("fixed", TASKS, {"weights": {"height": 1.0}})


def test_uncertainty_total_and_closed_form_gradient():
    w = build_weighting("uncertainty", TASKS)
    with torch.no_grad():
        w.log_var.copy_(torch.tensor([0.5, -1.0, 2.0]))
    L = [3.0, 0.4, 1.5]
    total = w(losses(L))
    s = [0.5, -1.0, 2.0]
    assert total.item() == pytest.approx(sum(math.exp(-si) * li + si / 2 for si, li in zip(s, L)), rel=1e-6)
    total.backward()
    expected = [-math.exp(-si) * li + 0.5 for si, li in zip(s, L)]  # d total / d s_t
    assert w.log_var.grad.tolist() == pytest.approx(expected, rel=1e-6)
    # Paper eq. 16: beta_i = 1 / sum_j sigma_i^2 / sigma_j^2, summing to 1.
    sig2 = [math.exp(si) for si in s]
    beta = w.normalised()
    for i, t in enumerate(TASKS):
        assert beta[t] == pytest.approx(1 / sum(sig2[i] / sj for sj in sig2), rel=1e-6)
    assert sum(beta.values()) == pytest.approx(1.0)
    assert w.weights()["age"] == pytest.approx(math.exp(-0.5))


def test_uncertainty_optimum_is_sigma2_equals_2L():
    w = build_weighting("uncertainty", ["a"])
    opt = torch.optim.SGD(w.parameters(), lr=0.1)
    for _ in range(500):
        opt.zero_grad()
        w({"a": torch.tensor(2.0)}).backward()
        opt.step()
    assert math.exp(w.log_var.item()) == pytest.approx(4.0, rel=1e-3)


def test_learned_weight_layer():
    w = build_weighting("learned", TASKS, {"lam": 0.1})
    ws = w.weights()
    assert sum(ws.values()) == pytest.approx(1.0)
    L = [3.0, 0.4, 1.5]
    assert w(losses(L)).item() == pytest.approx(sum(L) / 3 + 0.1 * 3 * (1 / 3) ** 2)
    opt = torch.optim.SGD(w.parameters(), lr=0.5)
    for _ in range(50):
        opt.zero_grad()
        w(losses(L)).backward()
        opt.step()
    ws = w.weights()
    assert sum(ws.values()) == pytest.approx(1.0)
    assert ws["gender"] > ws["race"] > ws["age"]  # the easiest task gains weight, held back by lambda


def test_dwa_by_hand():
    w = build_weighting("dwa", ["a", "b"], {"temperature": 2.0})
    w.epoch_end({"a": 1.0, "b": 1.0})
    assert w.weights() == {"a": 1.0, "b": 1.0}
    w.epoch_end({"a": 0.5, "b": 1.0})  # r_a = 0.5, r_b = 1
    za, zb = math.exp(0.25), math.exp(0.5)
    assert w.weights()["a"] == pytest.approx(2 * za / (za + zb))
    assert w.weights()["b"] == pytest.approx(2 * zb / (za + zb))


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.shared = nn.Linear(2, 2)

    def last_shared_parameters(self):
        return list(self.shared.parameters())


def test_gradnorm_moves_weight_to_the_task_with_small_gradients():
    net = _Net()
    w = build_weighting("gradnorm", ["a", "b"], {"alpha": 0.0})
    opt = torch.optim.SGD(w.parameters(), lr=0.01)
    x = torch.ones(4, 2)
    for _ in range(200):
        h = net.shared(x)
        L = {"a": 10 * h.pow(2).mean(), "b": h.pow(2).mean()}  # a's gradient is 10x b's
        opt.zero_grad()
        total = w(L, net)
        assert total.requires_grad
        total.backward()
        opt.step()
        w.after_step()
    ws = w.weights()
    assert sum(ws.values()) == pytest.approx(2.0)
    assert ws["b"] > 1.5 > ws["a"]


def test_registry_names_and_unknown():
    assert set(WEIGHTINGS.names()) >= {"equal", "fixed", "uncertainty", "learned", "dwa", "gradnorm"}
    with pytest.raises(KeyError, match="unknown loss weighting"):
        build_weighting("kendall", TASKS)


def test_gradnorm_weights_learn_under_a_mixed_precision_loss_scaler():
    """The AMP scaler multiplies the loss by its scale and divides every gradient by it before
    the step; GradNorm's weight gradient must come out unscaled like the others."""
    grads = {}
    for scaled in (False, True):
        torch.manual_seed(0)
        net = _Net()
        w = build_weighting("gradnorm", ["a", "b"], {"alpha": 0.0})
        opt = torch.optim.SGD(list(w.parameters()) + list(net.parameters()), lr=0.01)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16, enabled=scaled)
        h = net.shared(torch.ones(4, 2))
        total = w({"a": 10 * h.pow(2).mean(), "b": h.pow(2).mean()}, net)
        scaler.scale(total).backward()
        scaler.unscale_(opt)
        grads[scaled] = w.w.grad.clone()
    assert grads[True].abs().max() > 0.1
    assert torch.allclose(grads[True], grads[False], rtol=1e-4)


def test_unknown_weighting_settings_are_refused():
    with pytest.raises(ValueError, match="no setting 'alhpa'; it takes: alpha"):
        build_weighting("gradnorm", TASKS, {"alhpa": 0.5})
    with pytest.raises(ValueError, match="no setting 'weights'; it takes: no settings"):
        build_weighting("equal", TASKS, {"weights": {"age": 1.0}})
    with pytest.raises(ValueError, match="no setting 'lambda'"):
        build_weighting("learned", TASKS, {"lambda": 0.1})


def test_dwa_takes_a_task_without_a_loss_as_unchanged_and_the_epoch_mean_is_nan_not_zero():
    """A user test: a task with no label in an epoch's batches logged a training loss of 0.0, and
    DWA read it as a loss gone to nothing (race's weight fell to 0.73). The epoch's mean is NaN,
    DWA takes r = 1 for it, and on several processes the mean counts each rank's batches."""
    import math
    from types import SimpleNamespace

    from facemtl.training.trainer import Trainer
    from facemtl.weighting import WEIGHTINGS

    dwa = WEIGHTINGS.get("dwa")(["age", "race"])
    dwa.epoch_end({"age": 2.0, "race": 1.0})
    dwa.epoch_end({"age": 1.0, "race": float("nan")})
    ea, er = math.exp(0.5 / 2), math.exp(1.0 / 2)  # r_age = 1/2, r_race = 1 (no loss): tau = 2
    assert dwa.weights() == pytest.approx({"age": 2 * ea / (ea + er), "race": 2 * er / (ea + er)})

    alone = SimpleNamespace(dist=SimpleNamespace(active=False), _loss_batches={"age": 3, "race": 0})
    out = Trainer._every_ranks(alone, {"age": 1.5, "race": float("nan")})
    assert out["age"] == 1.5 and math.isnan(out["race"])

    other = {"sum/age": 4 * 3.0, "n/age": 4.0, "sum/race": 0.0, "n/race": 0.0}  # rank 1: 4 batches at 3.0; no race

    def mean(values):  # two ranks' all-reduced mean
        return {k: (values[k] + other[k]) / 2 for k in values}

    two = SimpleNamespace(dist=SimpleNamespace(active=True, world=2, mean=mean), _loss_batches={"age": 1, "race": 2})
    out = Trainer._every_ranks(two, {"age": 1.0, "race": 0.5})
    assert out == {"age": pytest.approx((1 * 1.0 + 4 * 3.0) / 5), "race": pytest.approx(0.5)}  # by batches, not ranks
    assert two._loss_batches == {"age": 5, "race": 2}
