"""Issue 12, items 2, 3 and parts of 11: a run killed at the worst moment and resumed ends
with the same checkpoints, log and test score as one never killed; epochs are numbered
from 1 wherever a person reads them; a degenerate baseline gives no absurd score.

Kills are simulated by making ``save_checkpoint`` raise at a chosen save, the moments a
real ``kill -9`` can fall between."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import facemtl.training.trainer as trainer_module
from facemtl.checkpoint import load_checkpoint, save_checkpoint
from facemtl.config import config_from_dict
from facemtl.training import Trainer


def small(root, epochs=3):
    return config_from_dict({
        "tasks": [{"name": "age", "type": "ordinal", "min_value": 1, "max_value": 116},
                  {"name": "gender", "type": "nominal", "num_classes": 2, "classes": ["male", "female"]}],
        "data": {"root": str(root), "image_size": 32, "limit": 200, "workers": 0},
        "model": {"backbone": "tiny_mbconv", "pretrained": False, "shared_stages": 2},
        "optim": {"name": "adam", "lr": 0.003},
        "train": {"epochs": epochs, "batch_size": 32},
    })


class Killed(Exception):
    """Stands for a kill -9 at a save."""


def quiet(cfg, out, **kw):
    return Trainer(cfg, out, progress=False, log=lambda s: None, **kw)


@pytest.fixture(scope="module")
def straight(utkface_root, tmp_path_factory):
    """An uninterrupted run, with the (epoch, file) of every save it made."""
    out = tmp_path_factory.mktemp("straight")
    saves = []

    def recording(state, path):
        saves.append((state["epoch"], Path(path).name))
        save_checkpoint(state, path)

    trainer_module.save_checkpoint = recording
    try:
        t = quiet(small(utkface_root), out)
        summary = t.fit()
        test = t.test()
    finally:
        trainer_module.save_checkpoint = save_checkpoint
    return out, summary, test, saves


def killed_then_resumed(root, out, monkeypatch, kill):
    """Train with ``kill(epoch, file, files_saved_so_far_this_epoch)`` deciding which save dies; then resume."""
    seen: list[tuple[int, str]] = []

    def killing(state, path):
        name = Path(path).name
        before = [n for e, n in seen if e == state["epoch"]]
        seen.append((state["epoch"], name))
        if kill(state["epoch"], name, before):
            raise Killed
        save_checkpoint(state, path)

    monkeypatch.setattr(trainer_module, "save_checkpoint", killing)
    with pytest.raises(Killed):
        quiet(small(root), out).fit()
    monkeypatch.setattr(trainer_module, "save_checkpoint", save_checkpoint)
    t = quiet(small(root), out, resume=True)
    summary = t.fit()
    return t, summary, t.test()


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def epochs_logged(out: Path) -> list[int]:
    return [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]


def test_a_kill_between_the_two_checkpoint_saves_never_mixes_models(utkface_root, tmp_path, monkeypatch, straight):
    """Item 2: killed between the best.pt and last.pt saves of the best epoch. Before the fix,
    last.pt went first, so best.pt stayed one improvement behind while the resumed run named
    the newer epoch as best and scored the older model on the test split."""
    s_out, s_summary, s_test, saves = straight
    best_epoch_saves = [e for e, n in saves if n == "best.pt"]
    kill_at = best_epoch_saves[-1]
    out = tmp_path / "killed"
    t, summary, test = killed_then_resumed(utkface_root, out, monkeypatch,
                                           lambda epoch, name, before: epoch == kill_at and len(before) == 1)
    assert summary["best_epoch"] == s_summary["best_epoch"]
    assert same_weights(out / "best.pt", s_out / "best.pt")
    assert load_checkpoint(out / "best.pt")["epoch"] == summary["best_epoch"]
    assert test["score"] == pytest.approx(s_test["score"], abs=1e-9)
    assert test["_info"]["best_epoch"] == summary["best_epoch"]


def test_a_kill_before_last_pt_leaves_no_duplicate_epoch_in_the_log(utkface_root, tmp_path, monkeypatch, straight):
    """Item 3: killed after the epoch's log line, before its checkpoints. Before the fix the
    resumed run appended the epoch again ([0, 1, 1, 2])."""
    s_out, s_summary, s_test, _ = straight
    out = tmp_path / "killed"
    killed_then_resumed(utkface_root, out, monkeypatch, lambda epoch, name, before: epoch == 2 and not before)
    assert epochs_logged(out) == epochs_logged(s_out) == [1, 2, 3]
    a = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (s_out / "metrics.jsonl").read_text().splitlines()]
    assert [r["val"]["score"] for r in a] == pytest.approx([r["val"]["score"] for r in b], abs=1e-9)
    assert same_weights(out / "best.pt", s_out / "best.pt") and same_weights(out / "last.pt", s_out / "last.pt")


def test_readers_count_each_epoch_once(tmp_path):
    """Item 3: logs already written with duplicate epochs read as one record per epoch (the last)."""
    from facemtl.epochlog import read_epochs
    from facemtl.report.load import RunLog

    lines = [{"epoch": 0, "seconds": 10.0}, {"epoch": 1, "seconds": 11.0}, {"epoch": 1, "seconds": 12.0},
             {"epoch": 2, "seconds": 13.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    run = RunLog(tmp_path)
    assert [r["epoch"] for r in run.records] == [1, 2, 3]  # numbered from 1, as everywhere else
    assert run.train_seconds == 10 + 12 + 13
    assert [r["seconds"] for r in read_epochs(tmp_path / "metrics.jsonl")] == [10.0, 12.0, 13.0]


def test_test_refuses_a_missing_or_stale_best_checkpoint(utkface_root, tmp_path):
    """Item 2: test() scores the epoch the summary names or nothing (before: the current weights
    when best.pt was missing, whatever best.pt held otherwise)."""
    t = quiet(small(utkface_root, epochs=2), tmp_path)
    summary = t.fit()
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == summary["best_epoch"]
    stale = dict(best, epoch=summary["best_epoch"] + 5)
    save_checkpoint({k: v for k, v in stale.items() if k != "format"}, tmp_path / "best.pt")
    with pytest.raises(RuntimeError, match="best.pt holds epoch"):
        t.test()
    (tmp_path / "best.pt").unlink()
    with pytest.raises(RuntimeError, match="best.pt is missing"):
        t.test()
    assert not (tmp_path / "test_metrics.json").exists()


def test_epochs_are_numbered_from_one_in_log_summary_and_files(utkface_root, tmp_path):
    """Item 11: the log said "epoch 1" where the summary said best_epoch 0."""
    said = []
    t = Trainer(small(utkface_root, epochs=2), tmp_path, progress=False, log=said.append)
    summary = t.fit()
    test = t.test()
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    best = max(records, key=lambda r: r["val"]["score"])
    assert summary["best_epoch"] == best["epoch"] == records[-1]["best_epoch"]
    assert test["_info"]["best_epoch"] == summary["best_epoch"]
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == summary["best_epoch"]
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 2 == summary["epochs_run"]
    assert [s.split(":")[0] for s in said if s.startswith("epoch ")] == ["epoch 1", "epoch 2"]


def test_a_degenerate_baseline_gives_no_absurd_score():
    """Item 11: a 1-image test split gave test_score -333333 (skill divided by a perfect baseline)."""
    from facemtl.tasks import build_task
    from facemtl.training.evaluation import score_predictions

    tasks = [build_task({"name": "age", "type": "ordinal", "min_value": 1, "max_value": 116}),
             build_task({"name": "gender", "type": "nominal", "num_classes": 2}),
             build_task({"name": "race", "type": "nominal", "num_classes": 5})]
    one = {"pred": {"age": np.array([30.0]), "gender": np.array([1.0]), "race": np.array([2.0])},
           "true": {"age": np.array([25.0]), "gender": np.array([0.0]), "race": np.array([2.0])},
           "loss": {"age": 1.0, "gender": 1.0, "race": 1.0}, "prob": {}}
    m = score_predictions(one, tasks, {"age": 25.0, "gender": 0.0, "race": 1.0})
    # age and gender: the baseline is exactly right on the only face, so skill is undefined
    assert np.isnan(m["age"]["skill"]) and np.isnan(m["gender"]["skill"])
    assert m["race"]["skill"] == pytest.approx(1.0)
    assert m["score"] == pytest.approx(1.0)
    one["pred"]["race"] = np.array([0.0])
    m = score_predictions(one, tasks, {"age": 25.0, "gender": 0.0, "race": 2.0})
    assert np.isnan(m["score"])


def test_a_cosine_run_resumes_and_an_older_last_pt_with_numpy_rates_loads(tmp_path):
    """The cosine factor is a Python float (a NumPy one landed in the saved learning rates, and
    torch.load(weights_only) refused the file); a last.pt written so before still loads."""
    import numpy as np
    import torch

    from facemtl.checkpoint import load_checkpoint, save_checkpoint

    save_checkpoint({"scheduler": {"base_lrs": [np.float64(0.01)], "_last_lr": [np.float64(0.005)]}},
                    tmp_path / "old.pt")
    state = load_checkpoint(tmp_path / "old.pt")
    assert state["scheduler"]["_last_lr"] == [0.005]
    torch.save({"format": "facemtl-1", "code": print}, tmp_path / "evil.pt")  # anything else is still refused
    with pytest.raises(ValueError, match="holds Python objects other than weights"):
        load_checkpoint(tmp_path / "evil.pt")
    from types import SimpleNamespace

    from facemtl.training.optim import build_scheduler

    cfg = SimpleNamespace(optim=SimpleNamespace(scheduler="cosine", warmup_epochs=1), train=SimpleNamespace(epochs=3))
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = build_scheduler(cfg, opt, steps_per_epoch=4)
    for _ in range(6):
        opt.step()
        sched.step()
    assert all(type(x) is float for x in sched.get_last_lr())


@pytest.mark.parametrize("scheduler", ["cosine", "onecycle", "plateau"])
@pytest.mark.parametrize("weighting_lr", [0.05, None])
def test_a_resume_at_another_learning_rate_goes_on_with_the_schedule_at_the_new_scale(scheduler, weighting_lr):
    """retune after loading the saved optimiser and schedule: the rates of a run resumed at 0.02
    (base, current, OneCycle's peak and floor) are those of the run stopped at 0.01, doubled; the
    weighting's group keeps its own rate (or follows optim.lr when it has none); momentum (but
    OneCycle's, which it cycles), weight decay and plateau's patience as set. With no override,
    every value is the saved one, bit for bit (a review: OneCycle's momentum was reset)."""
    import torch

    from facemtl.config import config_from_dict
    from facemtl.training.optim import build_optimizer, build_scheduler, retune, saved_lrs

    class Weighting(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.log_var = torch.nn.Parameter(torch.zeros(2))

    def make(**optim):
        cfg = config_from_dict({"tasks": [{"name": "gender", "type": "binary"}], "weighting": {"lr": weighting_lr},
                                "optim": {"scheduler": scheduler, "warmup_epochs": 1, **optim},
                                "train": {"epochs": 4}})
        model = torch.nn.Linear(3, 1)
        opt = build_optimizer(cfg, model, Weighting())
        return cfg, model, opt, build_scheduler(cfg, opt, steps_per_epoch=5)

    def step(opt, sched):
        opt.step()
        sched.step(1.0) if scheduler == "plateau" else sched.step()

    saved_cfg, model, opt, sched = make(lr=0.01)
    for _ in range(7):
        model(torch.ones(1, 3)).sum().backward()
        step(opt, sched)
    saved = saved_lrs(saved_cfg.to_dict())
    same, _, opt1, sched1 = make(lr=0.01)  # no override: as saved, bit for bit
    opt1.load_state_dict(opt.state_dict())
    sched1.load_state_dict(sched.state_dict())
    retune(opt1, sched1, same, saved)
    assert opt1.state_dict() == opt.state_dict() and sched1.state_dict() == sched.state_dict()

    before = [dict((k, g[k]) for k in ("lr", "initial_lr", "max_lr", "min_lr", "momentum") if k in g)
              for g in opt.param_groups]
    cfg, _, opt2, sched2 = make(lr=0.02, momentum=0.5, weight_decay=0.01, plateau_patience=9)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    retune(opt2, sched2, cfg, saved)
    scale = [2, 1 if weighting_lr else 2]
    for i, (g, b) in enumerate(zip(opt2.param_groups, before)):
        for k, v in b.items():
            want = v if k == "momentum" else v * scale[i]
            assert g[k] == pytest.approx(0.5 if k == "momentum" and scheduler != "onecycle" else want), (i, k)
    assert [g["weight_decay"] for g in opt2.param_groups] == [0.01, 0.0]
    if scheduler == "plateau":
        assert sched2.patience == 9
    else:  # the schedule goes on: the next step's rate is the stopped run's, doubled
        step(opt, sched), step(opt2, sched2)
        assert [g["lr"] for g in opt2.param_groups] == pytest.approx(
            [s * g["lr"] for s, g in zip(scale, opt.param_groups)])
        assert sched2.get_last_lr()[0] == pytest.approx(opt2.param_groups[0]["lr"])
        # a run an earlier facemtl resumed with an ignored override (0.02 recorded, 0.01 trained): the
        # rate the optimiser holds is the old one, so it comes to 0.02 now
        _, _, opt3, sched3 = make(lr=0.02)
        opt3.load_state_dict(opt1.state_dict())
        sched3.load_state_dict(sched1.state_dict())
        retune(opt3, sched3, cfg, [0.02, 0.02])
        assert opt3.param_groups[0]["lr"] == pytest.approx(2 * opt1.param_groups[0]["lr"])


def test_a_resume_from_python_may_not_change_the_optimiser_either(tmp_path):
    """The check of the command line's resume_config, in Trainer's resume too (a review: from
    Python, AdamW's state went into SGD and failed with a bare KeyError at the first step)."""
    from facemtl.training.runfolder import RunFolderError, fixed_on_resume

    saved = {"optim": {"name": "adamw", "scheduler": "none"}}
    fixed_on_resume(saved, {"optim": {"name": "adamw", "scheduler": "none", "lr": 9.0}}, "run")
    fixed_on_resume(None, {"optim": {"name": "sgd"}}, "run")  # (no saved settings: nothing to compare)
    with pytest.raises(RunFolderError, match="run was trained with optim.name='adamw'; a resume goes on"):
        fixed_on_resume(saved, {"optim": {"name": "sgd", "scheduler": "none"}}, "run")


def test_a_checkpoint_of_another_format_says_so(tmp_path):
    import torch

    from facemtl.checkpoint import load_checkpoint

    torch.save({"format": "facemtl-2", "model": {}}, tmp_path / "newer.pt")
    with pytest.raises(ValueError, match="is a facemtl-2 checkpoint, and this facemtl reads facemtl-1"):
        load_checkpoint(tmp_path / "newer.pt")
    torch.save({"weights": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="is not a facemtl checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_a_full_disk_at_a_checkpoint_save_is_one_sentence_and_keeps_the_earlier_file(tmp_path, monkeypatch):
    """PyTorch reports a short write as ``RuntimeError: ... unexpected pos``: it becomes an
    OSError naming the file (the CLI's one sentence, exit 1), and no partial file is left."""
    import collections
    import errno

    import facemtl.checkpoint as checkpoint

    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1}, path)

    def short_write(obj, f):
        Path(f).write_bytes(b"PK partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(torch, "save", short_write)
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda p: usage(10 << 20, 10 << 20, 4096))
    with pytest.raises(OSError) as full:
        save_checkpoint({"epoch": 2}, path)
    assert full.value.errno == errno.ENOSPC and full.value.filename == str(path)
    assert "no space left" in full.value.strerror.lower()
    assert load_checkpoint(path)["epoch"] == 1 and not path.with_suffix(".tmp").exists()

    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda p: usage(1 << 40, 0, 1 << 40))
    with pytest.raises(OSError, match="The write failed") as other:
        save_checkpoint({"epoch": 2}, path)
    assert other.value.errno == errno.EIO and not path.with_suffix(".tmp").exists()


def test_a_resume_over_changed_data_is_refused_unless_accepted(utkface_root, tmp_path, capsys, monkeypatch):
    """A manifest edited between the two starts (rows re-ordered, labels changed) resumed without
    a word: the split picked other faces, so test faces could be trained on."""
    from facemtl.cli import main
    from facemtl.data.utkface import read_utkface

    files = read_utkface(utkface_root, limit=60).paths
    manifest = tmp_path / "faces.csv"

    def write(rows):
        manifest.write_text("path,sex\n" + "".join(f"{p},{s}\n" for p, s in rows))

    rows = [(p, ["male", "female"][int(Path(p).name.split("_")[1])]) for p in files]
    write(rows)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"tasks: [{{name: gender, type: nominal, label: sex, classes: [male, female]}}]\n"
                      f"data: {{dataset: csv, root: {manifest}, image_size: 32, workers: 0}}\n"
                      "model: {backbone: tiny_mbconv, pretrained: false, shared_stages: 2}\n"
                      "train: {epochs: 1, batch_size: 16}\n")
    run = tmp_path / "run"
    assert main(["train", "--config", str(recipe), "--out", str(run), "--no-progress"]) == 0
    write([(p, {"male": "female", "female": "male"}[s] if i < 10 else s) for i, (p, s) in enumerate(rows)])
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--no-progress", "train.epochs=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "the data changed since this run started (" in err and "(other files or labels)" in err
    assert "--overwrite" in err and "FACEMTL_ACCEPT_DATA_CHANGE=1" in err
    assert load_checkpoint(run / "last.pt")["epoch"] == 1  # nothing trained over the other labels
    monkeypatch.setenv("FACEMTL_ACCEPT_DATA_CHANGE", "1")
    assert main(["train", "--out", str(run), "--resume", "--no-progress", "train.epochs=2"]) == 0
    assert "the data changed since this run started" in capsys.readouterr().err
    assert load_checkpoint(run / "last.pt")["epoch"] == 2


def test_an_interrupted_checkpoint_save_leaves_no_partial_file(tmp_path, monkeypatch):
    """A review: only RuntimeError and OSError removed the partial file; Ctrl-C during a save left
    last.tmp behind."""
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1}, path)

    def interrupted(obj, f):
        Path(f).write_bytes(b"PK partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"epoch": 2}, path)
    assert load_checkpoint(path)["epoch"] == 1 and not path.with_suffix(".tmp").exists()


def test_a_checkpoint_whose_weights_changed_on_disk_is_refused(tmp_path):
    """PyTorch's reader checks structure, not bytes: a bit flipped in a weight loaded as another
    weight. save_checkpoint records the weights' SHA-256 and load_checkpoint checks it."""
    from facemtl.checkpoint import DIGEST_KEY

    weights = {"w": torch.arange(1000, dtype=torch.float32), "n": torch.tensor(3)}
    save_checkpoint({"model": weights, "epoch": 1}, tmp_path / "a.pt")
    assert load_checkpoint(tmp_path / "a.pt")[DIGEST_KEY]
    data = bytearray((tmp_path / "a.pt").read_bytes())
    at = data.find(weights["w"].numpy().tobytes()[400:416])
    data[at + 3] ^= 1
    (tmp_path / "b.pt").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="is damaged: its weights are not those it recorded"):
        load_checkpoint(tmp_path / "b.pt")
    torch.save({"format": "facemtl-1", "model": weights}, tmp_path / "old.pt")  # written before: no digest, loads
    assert torch.equal(load_checkpoint(tmp_path / "old.pt")["model"]["w"], weights["w"])
