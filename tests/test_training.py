"""End to end on real UTKFace faces: train, resume, evaluate, CLI errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from facemtl.cli import main
from facemtl.config import ConfigError, config_from_dict, load_config
from facemtl.training import Trainer

REPO = Path(__file__).resolve().parents[1]

TASKS = [
    {"name": "age", "type": "ordinal", "min_value": 1, "max_value": 116},
    {"name": "gender", "type": "nominal", "num_classes": 2, "classes": ["male", "female"]},
    {"name": "race", "type": "nominal", "num_classes": 5},
]


def cfg(root, **over):
    d = {
        "tasks": TASKS,
        "data": {"root": str(root), "image_size": 64, "limit": 700, "workers": 0},
        "model": {"backbone": "efficientnet_lite0", "pretrained": True, "shared_stages": None},
        "optim": {"name": "adamw", "lr": 0.001, "weight_decay": 0.0001},
        "weighting": {"name": "uncertainty", "lr": 0.01},
        "train": {"epochs": 3, "batch_size": 32, "threads": 2},
    }
    for k, v in over.items():
        sec, key = k.split("__")
        d.setdefault(sec, {})[key] = v
    return config_from_dict(d)


def test_tiny_run_beats_trivial_baselines(utkface_root, tmp_path, capsys):
    c = cfg(utkface_root, train__epochs=4, data__limit=900)
    summary = Trainer(c, tmp_path, progress=False, log=lambda s: None).fit()
    assert summary["epochs_run"] == 4
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(tmp_path / "best.pt"), "--split", "test", "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert set(m) == {"age", "gender", "race"}
    assert {"accuracy", "per_class_accuracy", "confusion", "n"} <= set(m["gender"])
    assert {"mae", "mse", "cs", "group_accuracy", "groups"} <= set(m["age"])
    assert m["race"]["n"] == m["gender"]["n"] > 100
    assert m["age"]["mae"] < m["age"]["baseline"]["mae"]
    assert m["gender"]["accuracy"] > m["gender"]["baseline"]["accuracy"]
    assert m["race"]["accuracy"] > m["race"]["baseline"]["accuracy"]
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 4
    assert sum(lines[-1]["weights_normalised"].values()) == pytest.approx(1.0)
    assert set(m["age"]["cs"]) == {str(k) for k in range(11)}


def test_resume_continues_exactly(utkface_root, tmp_path):
    small = dict(data__limit=300, model__backbone="tiny_mbconv", model__pretrained=False, model__shared_stages=3,
                 data__image_size=48)
    straight = tmp_path / "straight"
    Trainer(cfg(utkface_root, train__epochs=3, **small), straight, progress=False, log=lambda s: None).fit()
    split = tmp_path / "split"
    t = Trainer(cfg(utkface_root, train__epochs=3, **small), split, progress=False, log=lambda s: None)
    t.cfg.train.epochs = 2  # a run "killed" after epoch 2
    t.fit()
    t2 = Trainer(cfg(utkface_root, train__epochs=3, **small), split, resume=True, progress=False, log=lambda s: None)
    assert t2.epoch == 2
    t2.fit()
    a = torch.load(straight / "last.pt", weights_only=False)["model"]
    b = torch.load(split / "last.pt", weights_only=False)["model"]
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k
    la = (straight / "metrics.jsonl").read_text().splitlines()
    lb = (split / "metrics.jsonl").read_text().splitlines()
    assert len(la) == len(lb) == 3
    assert json.loads((split / "run_info.json").read_text())["starts"][-1]["changed"] == {"train.epochs": 3}


def test_a_resume_with_other_settings_records_them(utkface_root, tmp_path, capsys):
    """A user test: resumed with train.epochs=3 (or another batch size on another number of
    processes), the run's config.yaml, and so its report, still said 2 epochs."""
    from facemtl.report import write_report

    out = tmp_path / "run"
    c = cfg(utkface_root, train__epochs=1, data__limit=200, model__backbone="tiny_mbconv", model__pretrained=False,
            model__shared_stages=3, data__image_size=32)
    Trainer(c, out, progress=False, log=lambda s: None).fit()
    assert main(["train", "--out", str(out), "--resume", "--no-progress", "train.epochs=2", "train.batch_size=16",
                 "optim.lr=0.002", "optim.weight_decay=0.01"]) == 0
    saved = load_config(out / "config.yaml")
    assert saved.train.epochs == 2 and saved.train.batch_size == 16
    start = json.loads((out / "run_info.json").read_text())["starts"][-1]
    assert start["changed"] == {"train.epochs": 2, "train.batch_size": 16, "optim.lr": 0.002,
                                "optim.weight_decay": 0.01} and start["after_epoch"] == 1
    # what the run records is what it trained with (a user test: optim.lr=0.5 recorded, the saved 0.003 trained)
    groups = torch.load(out / "last.pt", weights_only=False)["optimizer"]["param_groups"]
    assert groups[0]["lr"] == pytest.approx(0.002) and groups[0]["weight_decay"] == pytest.approx(0.01)
    assert groups[1]["lr"] == pytest.approx(0.01) and groups[1]["weight_decay"] == 0.0  # weighting.lr, as set
    report = write_report(out, tmp_path / "report", gradcam=False)
    text = (report.parent / "report.md").read_text()
    assert "| training | 2 epochs, from epoch 1: batch 32; from epoch 2: batch 16," in text
    n = json.loads((out / "data_report.json").read_text())
    assert f"{n['train_images']:,} / {n['val_images']:,} / {n['test_images']:,} faces to train, validate and test" in text


def test_config_errors_are_one_sentence(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: [{name: age, type: ordinall}]\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("facemtl: error: unknown task type 'ordinall'") and "\n" not in err
    bad.write_text("tasks: [{name: age, type: nominal}]\ntrain: {epoch: 3}\n")
    with pytest.raises(ConfigError, match="unknown setting 'train.epoch'"):
        load_config(bad)
    bad.write_text("tasks: [{name: age, type: nominal}]\ndata: {root: /nonexistent/faces}\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "r")]) == 2
    assert main(["evaluate", "--checkpoint", str(tmp_path / "none.pt")]) == 2
    bad.write_text("tasks: [oops\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_settings_out_of_range_are_refused():
    """A user test: a negative fixed weight (it maximised the age loss), a negative lam, Early
    Freeze at -2 and data.limit=0 (numpy's "cannot reshape array of size 0") were taken."""
    from facemtl.config import check_recipe
    from facemtl.weighting import WEIGHTINGS

    for over, words in (({"train": {"early_freeze": -2}}, "train.early_freeze must be at least 1"),
                        ({"train": {"early_stopping": 0}}, "train.early_stopping must be at least 1"),
                        ({"data": {"limit": 0}}, "data.limit must be at least 1")):
        cfg = config_from_dict({"tasks": TASKS, **over})  # read (a model file that records it still loads) ...
        with pytest.raises(ConfigError, match=words):
            check_recipe(cfg)  # ... and refused when a run starts
    with pytest.raises(ValueError, match="fixed weights must be zero or more, not age: -1"):
        WEIGHTINGS.get("fixed")(["age", "gender"], weights={"age": -1})
    with pytest.raises(ValueError, match=r"YAML needs a space after the colon: age: 0.5"):
        WEIGHTINGS.get("fixed")(["age", "gender"], weights={"age:0.5": None})
    with pytest.raises(ValueError, match="lam must be zero or more"):
        WEIGHTINGS.get("learned")(["age", "gender"], lam=-0.1)


def test_overrides_and_recipes_parse():
    for name in ("paper", "thesis", "cpu", "cpu_coral", "tiny"):
        c = load_config(f"configs/{name}.yaml", ["train.epochs=2"])
        assert c.train.epochs == 2
    c = load_config("configs/paper.yaml")
    assert (c.optim.name, c.optim.lr, c.optim.momentum, c.optim.weight_decay) == ("sgd", 0.001, 0.9, 0.0005)
    assert (c.train.batch_size, c.train.epochs, c.data.image_size) == (32, 80, 224)
    t = load_config("configs/thesis.yaml")
    assert (t.optim.name, t.optim.lr, t.weighting.name, t.weighting.params["lam"]) == ("adam", 3e-5, "learned", 0.1)


def test_cli_help_runs():
    out = subprocess.run([sys.executable, "-m", "facemtl.cli", "train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--resume" in out.stdout


def test_flip_tta_averages_a_face_and_its_mirror():
    from facemtl.training.evaluation import forward

    class LeftColumn(torch.nn.Module):  # sees only the leftmost pixel column: a mirror changes it
        def forward(self, x):
            return {"t": x[:, 0, :, 0].sum(1, keepdim=True)}

    x = torch.zeros(1, 3, 4, 4)
    x[0, 0, :, 0] = 1.0  # left column 4, right column 0
    assert forward(LeftColumn(), x)["t"].item() == 4.0
    assert forward(LeftColumn(), x, "flip")["t"].item() == 2.0
    with pytest.raises(ValueError, match="flip"):
        forward(LeftColumn(), x, "rotate")


def test_batch_order_is_drawn_when_asked_not_when_iterated():
    """The shuffle is drawn at the call, so batch order and augmentation draws never interleave."""
    from facemtl.data.dataset import FaceSet

    fs = FaceSet([f"{i}.jpg" for i in range(10)], torch.arange(10.0).view(10, 1), 4,
                 images=torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 4, 4).contiguous())
    g = torch.Generator().manual_seed(0)
    it = fs.batches(3, shuffle=True, generator=g, drop_last=True)
    after_call = g.get_state()
    rows = [lab.view(-1).tolist() for _, lab in it]
    assert torch.equal(g.get_state(), after_call)
    assert len(rows) == 3 and len({r for b in rows for r in b}) == 9
    expected = torch.randperm(10, generator=torch.Generator().manual_seed(0))[:9].float().tolist()
    assert [r for b in rows for r in b] == expected


def test_an_empty_validation_split_is_reported(utkface_root, tmp_path):
    c = config_from_dict({
        "tasks": TASKS[1:2], "data": {"root": str(utkface_root), "image_size": 32, "limit": 200, "workers": 0,
                                      "val_fraction": 0.0},
        "model": {"backbone": "tiny_mbconv", "pretrained": False, "shared_stages": 2},
        "train": {"epochs": 1, "batch_size": 32}})
    said = []
    summary = Trainer(c, tmp_path, progress=False, log=said.append).fit()
    assert any("validation split is empty" in s and "training split" in s for s in said)
    assert summary["val_split"] == "train"
    assert json.loads((tmp_path / "run_info.json").read_text())["val_split"] == "train"


def test_the_plateau_schedule_reads_the_tasks_that_have_a_validation_loss(utkface_root, tmp_path):
    """A task with no labelled validation face has a NaN loss: summed in, it made every epoch
    a plateau, so the learning rate was cut every `patience` epochs whatever the others did."""
    c = config_from_dict({
        "tasks": TASKS[1:], "data": {"root": str(utkface_root), "image_size": 32, "limit": 200, "workers": 0},
        "model": {"backbone": "tiny_mbconv", "pretrained": False, "shared_stages": 2},
        "optim": {"scheduler": "plateau"}, "train": {"epochs": 2, "batch_size": 32}})
    t = Trainer(c, tmp_path, progress=False, log=lambda s: None)
    validate, read = t.validate, []

    def without_race_labels():
        val = validate()
        val["race"]["loss"] = float("nan")
        return val

    t.validate, t.scheduler.step = without_race_labels, read.append
    t.fit()
    assert len(read) == 2 and all(x == x for x in read)  # gender's loss alone, never NaN


def test_best_pt_holds_the_weights_that_earned_the_best_score(utkface_root, tmp_path):
    """Early Freeze restores older weights in place at the end of an epoch; best.pt was saved
    after it, so it held the restored weights beside the score of the ones validated (a user
    test: best.pt scored 0.087 on validation where the run recorded 0.175). Here a callback
    moves every weight after validation, as a restore would."""
    from facemtl.checkpoint import load_checkpoint
    from facemtl.training.callbacks import Callback

    c = config_from_dict({
        "tasks": TASKS[1:], "data": {"root": str(utkface_root), "image_size": 32, "limit": 200, "workers": 0},
        "model": {"backbone": "tiny_mbconv", "pretrained": False, "shared_stages": 2},
        "train": {"epochs": 1, "batch_size": 32}})
    t = Trainer(c, tmp_path, progress=False, log=lambda s: None)
    validated = {}

    class Restore(Callback):
        def on_epoch_end(self, trainer, record):
            validated.update({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})
            with torch.no_grad():
                for p in trainer.model.parameters():
                    p.add_(1.0)

    t.callbacks.append(Restore())
    t.fit()
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == best["best_epoch"] == 1
    assert all(torch.equal(best["model"][k], v) for k, v in validated.items())
    last = load_checkpoint(tmp_path / "last.pt")  # the weights training goes on from: the moved ones
    assert not all(torch.equal(last["model"][k], v) for k, v in validated.items())


def test_evaluate_refuses_a_split_whose_faces_changed_since_training(utkface_root, tmp_path, capsys, monkeypatch):
    """A user test: 40 rows appended to the manifest after training, `evaluate --split test` drew
    another split and scored 68 "test" faces, 54 of which the model had trained or validated on."""
    files = sorted((utkface_root / "UTKFace").glob("*.jpg"))[:240]
    manifest = tmp_path / "faces.csv"

    def write(n):
        manifest.write_text("path,gender\n" + "".join(f"{f},{f.name.split('_')[1]}\n" for f in files[:n]))

    write(200)
    c = config_from_dict({
        "tasks": TASKS[1:2], "data": {"dataset": "csv", "root": str(manifest), "image_size": 32, "workers": 0},
        "model": {"backbone": "tiny_mbconv", "pretrained": False, "shared_stages": 2},
        "train": {"epochs": 1, "batch_size": 32}})
    Trainer(c, tmp_path / "run", progress=False, log=lambda s: None).fit()
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--split", "test", "--json"]) == 0
    onnx = tmp_path / "m.onnx"  # an export of it carries the fingerprints too (a user test: it scored anyway)
    assert main(["export", str(tmp_path / "run" / "best.pt"), "--format", "onnx", "--out", str(onnx)]) == 0
    write(240)
    for model in (tmp_path / "run", onnx):
        capsys.readouterr()
        assert main(["evaluate", "--checkpoint", str(model), "--split", "test", "--json"]) == 2, model
        err = capsys.readouterr().err
        assert "the test split of" in err and "faces then" in err and "FACEMTL_ACCEPT_DATA_CHANGE=1" in err
    monkeypatch.setenv("FACEMTL_ACCEPT_DATA_CHANGE", "1")
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--split", "test", "--json"]) == 0
    assert "scoring anyway" in capsys.readouterr().err


def test_a_run_whose_images_cannot_be_read_is_refused(tmp_path, capsys):
    """A user test: a manifest whose paths all pointed at the wrong folder trained, scored NaN and
    exited 0 ("best_score": null)."""
    manifest = tmp_path / "faces.csv"
    manifest.write_text("path,gender\n" + "".join(f"missing/f{i}.jpg,{i % 2}\n" for i in range(60)))
    assert main(["train", "--config", str(REPO / "configs" / "tiny.yaml"), "--out", str(tmp_path / "run"),
                 f"data.root={manifest}", "data.dataset=csv", "tasks=[{name: gender, type: nominal, "
                 "num_classes: 2}]", "train.epochs=1"]) == 2
    err = capsys.readouterr().err
    assert "task 'gender' has no labelled face left in the training split" in err and "check data.root" in err
    assert main(["train", "--config", str(REPO / "configs" / "tiny.yaml"), "--out", str(tmp_path / "run2"),
                 f"data.root={manifest}", "data.dataset=csv", "tasks=[{name: gender, type: nominal, "
                 "num_classes: 2}]", "train.epochs=1", "data.cache=stream"]) == 2  # read while training: the same
    err = capsys.readouterr().err
    assert "none of the" in err and "images of the training split exists" in err


def test_each_epoch_logs_the_weights_it_trained_with(utkface_root, tmp_path):
    """DWA's epoch_end sets the next epoch's weights, and the log took them after it: epoch 2
    (trained with 1, 1) logged epoch 3's. Its first two epochs train with weight 1, the third with
    T exp(r_t / 2) / sum_k exp(r_k / 2), r_t = L_t(2) / L_t(1) (mean training losses)."""
    import math

    c = config_from_dict({
        "tasks": TASKS[1:], "data": {"root": str(utkface_root), "image_size": 32, "limit": 200, "workers": 0},
        "model": {"backbone": "tiny_mbconv", "pretrained": False, "shared_stages": 2},
        "weighting": {"name": "dwa"}, "train": {"epochs": 3, "batch_size": 32}})
    Trainer(c, tmp_path, progress=False, log=lambda s: None).fit()
    log = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [e["weights"] for e in log[:2]] == [{"gender": 1.0, "race": 1.0}] * 2
    r = {t: log[1]["train"]["loss"][t] / log[0]["train"]["loss"][t] for t in ("gender", "race")}
    z = {t: math.exp(v / 2) for t, v in r.items()}
    assert log[2]["weights"] == pytest.approx({t: 2 * v / sum(z.values()) for t, v in z.items()})


def test_evaluate_given_a_run_folder_scores_its_best_checkpoint(utkface_root, tmp_path, capsys):
    """``--checkpoint runs/r1`` once said "no runtime reads r1": a run folder means its best.pt."""
    c = cfg(utkface_root, train__epochs=1, data__limit=200, data__image_size=32,
            model__backbone="tiny_mbconv", model__pretrained=False, model__shared_stages=2)
    run = tmp_path / "r1"
    Trainer(c, run, progress=False, log=lambda s: None).fit()
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run), "--json"]) == 0
    from_folder = json.loads(capsys.readouterr().out)
    assert main(["evaluate", "--checkpoint", str(run / "best.pt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == from_folder
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", "--checkpoint", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0] == (f"facemtl: error: {tmp_path / 'empty'} is a folder, not a model file, and "
                                        f"holds no best.pt; pass a model file such as {tmp_path / 'empty' / 'best.pt'} "
                                        "or one from 'facemtl export'")
    # export takes the run folder too (a user test: "checkpoint r1 does not exist")
    assert main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "r1.onnx")]) == 0
    assert (tmp_path / "r1.onnx").is_file()
    assert main(["export", str(tmp_path / "empty"), "--format", "onnx", "--out", str(tmp_path / "e.onnx")]) == 2
    assert "is a folder, not a model file, and holds no best.pt" in capsys.readouterr().err


def test_export_names_a_missing_data_folder_as_given(tmp_path, capsys):
    """``--data /nonexist`` once got "the data folder that the model records ... pass --data DIR"."""
    from pathlib import Path

    legacy = Path(__file__).parent / "data" / "legacy_0.1.0" / "run" / "best.pt"
    missing = tmp_path / "nonexist"
    assert main(["export", str(legacy), "--format", "onnx-int8", "--out", str(tmp_path / "q.onnx"),
                 "--data", str(missing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"facemtl: error: INT8 calibration needs real faces, and the data folder {missing} given with "
                   "--data does not exist"]
    assert not (tmp_path / "q.onnx").exists()


def test_the_epoch_bar_is_drawn_on_a_terminal_only(utkface_root, tmp_path):
    """A user test: Trainer(cfg, out).fit() from a script drew its bars into a log file."""
    c = config_from_dict({
        "tasks": TASKS[1:2], "data": {"root": str(utkface_root), "image_size": 32, "limit": 100, "workers": 0},
        "model": {"backbone": "tiny_mbconv", "pretrained": False, "shared_stages": 2}, "train": {"epochs": 1}})
    assert not Trainer(c, tmp_path / "a", log=lambda s: None).progress.enabled  # pytest's stderr: no terminal
    assert Trainer(c, tmp_path / "b", log=lambda s: None, progress=True).progress.enabled


def test_test_metrics_json_is_strict_json_and_the_report_reads_nan_back(utkface_root, tmp_path, monkeypatch):
    """A metric no labelled test face reached was written as a bare ``NaN``, which ``jq``, browsers
    and other languages refuse; it is ``null`` now, and the report reads it back as NaN."""
    import math

    import facemtl.training.trainer as trainer_module
    from facemtl.report.load import RunLog

    c = config_from_dict({
        "tasks": TASKS[1:], "data": {"root": str(utkface_root), "image_size": 32, "limit": 120, "workers": 0},
        "model": {"backbone": "tiny_mbconv", "pretrained": False, "shared_stages": 2},
        "train": {"epochs": 1, "batch_size": 32}})
    score = trainer_module.score_predictions

    def gender_unlabelled(*args, **kw):
        metrics = score(*args, **kw)
        metrics["gender"]["accuracy"] = float("nan")
        return metrics

    monkeypatch.setattr(trainer_module, "score_predictions", gender_unlabelled)
    t = Trainer(c, tmp_path, progress=False, log=lambda s: None)
    t.fit()
    t.test()
    text = (tmp_path / "test_metrics.json").read_text()
    strict = json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name} in test_metrics.json"))
    assert strict["gender"]["accuracy"] is None and isinstance(strict["race"]["accuracy"], float)
    assert strict["_info"]["best_epoch"] == 1
    read = RunLog(tmp_path).test
    assert math.isnan(read["gender"]["accuracy"]) and read["race"]["accuracy"] == strict["race"]["accuracy"]
    assert read["_info"] == strict["_info"]
