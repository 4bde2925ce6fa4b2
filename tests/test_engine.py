"""The loop runs every weighting, task type and Early Freeze without naming them."""

import csv
import json

import numpy as np
import pytest

from facemtl.config import config_from_dict
from facemtl.data import build_data
from facemtl.model import load_model
from facemtl.training import Trainer
from facemtl.weighting import WEIGHTINGS


def small(root, weighting="uncertainty", tasks=None, **train):
    return config_from_dict({
        "tasks": tasks or [
            {"name": "age", "type": "ordinal", "min_value": 1, "max_value": 116, "method": "corn"},
            {"name": "gender", "type": "binary"},
            {"name": "race", "type": "nominal", "num_classes": 5},
        ],
        "data": {"root": str(root), "image_size": 40, "limit": 160, "workers": 0},
        "model": {"backbone": "tiny_mbconv", "pretrained": False, "shared_stages": 3, "task_fc": [8]},
        "weighting": {"name": weighting},
        "optim": {"name": "adam", "lr": 0.001, "scheduler": "plateau"},
        "train": {"epochs": 2, "batch_size": 16, **train},
    })


@pytest.mark.parametrize("name", WEIGHTINGS.names())
def test_every_weighting_trains_and_logs_weights(utkface_root, tmp_path, name):
    Trainer(small(utkface_root, name), tmp_path, progress=False, log=lambda s: None).fit()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    for rec in lines:
        assert set(rec["weights"]) == {"age", "gender", "race"}
        assert all(np.isfinite(v) for v in rec["weights"].values())
        assert np.isfinite(rec["val"]["score"])


def test_early_freeze_in_the_loop(utkface_root, tmp_path):
    t = Trainer(small(utkface_root, epochs=6, early_freeze=1), tmp_path, progress=False, log=lambda s: None)
    t.fit()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    frozen = [set(r["frozen"]) for r in lines]
    assert all(a <= b for a, b in zip(frozen, frozen[1:]))  # once frozen, stays frozen
    assert frozen[-1], "with patience 1 some task must converge within 6 epochs"
    assert not any(p.requires_grad for p in t.model.trunk.parameters())
    # a frozen model reloads from its checkpoint with the same frozen tasks
    model, *_ = load_model(tmp_path / "last.pt")
    assert model.frozen_tasks == set(lines[-1]["frozen"])
    # an epoch whose freeze restored weights is scored as restored (a review: the restored model was
    # never validated nor tested, so best.pt and the test read the model from before the restore)
    restored = [r for r in lines if "val_before_restore" in r]
    assert restored and all(r["val"] != r["val_before_restore"] for r in restored)
    first = restored[0]
    task = first["frozen"][0]  # the first freeze: its validation loss is its best one's again
    assert first["val"][task]["loss"] == pytest.approx(min(r["val"][task]["loss"] for r in lines[:first["epoch"] - 1]),
                                                       rel=1e-5)
    from facemtl.cli import evaluate

    scored = evaluate(str(tmp_path / "last.pt"), split="val", data_root=str(utkface_root))
    assert scored["score"] == pytest.approx(lines[-1]["val"]["score"], abs=1e-6)
    assert scored[task]["loss"] == pytest.approx(lines[-1]["val"][task]["loss"], rel=1e-5)


def test_csv_manifest_mixes_label_sets(utkface_root, tmp_path):
    """Two 'datasets' in one manifest: one labels age only, the other gender and race only."""
    from facemtl.data.utkface import read_utkface

    t = read_utkface(utkface_root, limit=120)
    rows = []
    for i, p in enumerate(t.paths):
        a, g, r = t.labels["age"][i], t.labels["gender"][i], t.labels["race"][i]
        if i % 2:
            rows.append({"path": p, "age": int(a), "gender": "", "race": ""})
        else:
            rows.append({"path": p, "age": "", "gender": ["male", "female"][int(g)], "race": "" if np.isnan(r) else int(r)})
    man = tmp_path / "faces.csv"
    with man.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "age", "gender", "race"])
        w.writeheader()
        w.writerows(rows)
    cfg = small(tmp_path, tasks=[
        {"name": "age", "type": "regression", "min_value": 1, "max_value": 116},
        {"name": "gender", "type": "nominal", "classes": ["male", "female"]},
        {"name": "race", "type": "nominal", "num_classes": 5},
    ])
    cfg.data.dataset, cfg.data.root = "csv", str(man)
    cfg.data.columns = {"age": None, "gender": ["male", "female"], "race": None}
    data = build_data(cfg.data, [__import__("facemtl").build_task(t) for t in cfg.tasks], 0, load_images=False)
    lab = np.concatenate([data.train.labels.numpy(), data.val.labels.numpy(), data.test.labels.numpy()])
    assert np.isnan(lab[:, 0]).sum() == 60 and np.isnan(lab[:, 1]).sum() == 60
    Trainer(cfg, tmp_path / "run", progress=False, log=lambda s: None).fit()
    rec = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert rec["val"]["age"]["n"] + rec["val"]["gender"]["n"] == len(data.val)
    # the labels file moved: an INT8 export calibrates on it, named as the file it is (a user test: the
    # export took --data for a folder only, and the CSV reader refused a folder)
    from facemtl.cli import main

    moved = tmp_path / "moved"
    moved.mkdir()
    man.rename(moved / "faces.csv")
    assert main(["export", str(tmp_path / "run" / "best.pt"), "--format", "onnx-int8", "--out", str(tmp_path / "q.onnx"),
                 "--data", str(moved / "faces.csv"), "--check-faces", "8", "--calibration", "8"]) == 0
    assert (tmp_path / "q.onnx").is_file()


@pytest.mark.parametrize("cache", ["memory", "stream"])
def test_an_unreadable_training_image_is_left_out_not_fatal(utkface_root, tmp_path, capsys, cache):
    """One file that is no image among 60: the run trains, says which file, and masks its labels,
    whether images are decoded once into memory or on the fly by loader processes."""
    from facemtl.data.utkface import read_utkface

    t = read_utkface(utkface_root, limit=60)
    bad = tmp_path / "broken.jpg"
    bad.write_text("not an image")
    man = tmp_path / "faces.csv"
    with man.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "gender"])
        w.writeheader()
        w.writerows([{"path": str(bad) if i == 0 else p, "gender": ["male", "female"][int(t.labels["gender"][i])]}
                     for i, p in enumerate(t.paths)])
    cfg = small(tmp_path, tasks=[{"name": "gender", "type": "nominal", "classes": ["male", "female"]}])
    cfg.data.dataset, cfg.data.root, cfg.data.cache = "csv", str(man), cache
    Trainer(cfg, tmp_path / "run", progress=False, log=lambda s: None).fit()
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "cannot be read and" in err and "left out (every label masked)" in err, err
    assert [json.loads(x)["epoch"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    if cache == "memory":  # decoded before the run: the data report counts it too (streamed, it is found later)
        report = json.loads((tmp_path / "run" / "data_report.json").read_text())
        assert sum(report["unreadable_images"].values()) == 1 and "broken.jpg" in report["unreadable_examples"][0]


def test_a_resume_that_adds_early_stopping_keeps_each_callbacks_own_state(utkface_root, tmp_path):
    """A review: callback states were paired by position, so a resume that added early stopping
    gave Early Freeze's state to it (a KeyError, or a dict as its best score)."""
    from facemtl.training.callbacks import EarlyFreeze, EarlyStopping

    Trainer(small(utkface_root, epochs=2, early_freeze=5), tmp_path, progress=False, log=lambda s: None).fit()
    t = Trainer(small(utkface_root, epochs=3, early_freeze=5, early_stopping=4), tmp_path, resume=True,
                progress=False, log=lambda s: None)
    freeze = next(cb for cb in t.callbacks if isinstance(cb, EarlyFreeze))
    stopping = next(cb for cb in t.callbacks if isinstance(cb, EarlyStopping))
    assert set(freeze.best) == {"age", "gender", "race"} and stopping.bad == 0
    t.fit()
    # a checkpoint from before the states were named (by position only) is read by their keys
    from facemtl.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(tmp_path / "last.pt")
    del state["callback_names"]
    save_checkpoint(state, tmp_path / "last.pt")
    t = Trainer(small(utkface_root, epochs=4, early_freeze=5), tmp_path, resume=True, progress=False,
                log=lambda s: None)  # early stopping dropped again: positions shift the other way
    freeze = next(cb for cb in t.callbacks if isinstance(cb, EarlyFreeze))
    assert set(freeze.best) == {"age", "gender", "race"} and freeze.snapshots
