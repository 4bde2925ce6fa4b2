"""Issue 12, item 8: a run folder is never wiped or mixed silently. ``train --out`` into an
existing run needs ``--resume`` or ``--overwrite``; ``--resume`` with another recipe says
how they differ; a lock file keeps a second trainer out and is taken over, with a
warning, when the process that left it is gone."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from facemtl.cli import main

LOCK_NAME = "facemtl.lock"


def recipe(tmp_path, root, name="r.yaml", epochs=1, lr=0.003):
    p = tmp_path / name
    p.write_text(
        "tasks: [{name: gender, type: nominal, num_classes: 2}]\n"
        f"data: {{root: {root}, image_size: 32, limit: 120, workers: 0}}\n"
        "model: {backbone: tiny_mbconv, pretrained: false, shared_stages: 2}\n"
        f"optim: {{name: adam, lr: {lr}}}\n"
        f"train: {{epochs: {epochs}, batch_size: 32}}\n")
    return p


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("facemtl: error: ") and not any("Traceback" in x for x in err), err
    return err[-1]


def test_an_existing_run_is_not_overwritten_without_overwrite(utkface_root, tmp_path, capsys):
    r = recipe(tmp_path, utkface_root)
    out = tmp_path / "run"
    assert main(["train", "--config", str(r), "--out", str(out), "--no-progress"]) == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    log = (out / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert main(["train", "--config", str(r), "--out", str(out), "--no-progress"]) == 2
    err = one_line_error(capsys)
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert (out / "metrics.jsonl").read_text() == log
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    # --overwrite starts again: the old run's files are gone before the new one writes
    (out / "notes.txt").write_text("mine")
    (out / "test_metrics.json").write_text("{}")
    assert main(["train", "--config", str(r), "--out", str(out), "--no-progress", "--overwrite",
                 "train.epochs=2"]) == 0
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert json.loads((out / "test_metrics.json").read_text())  # written again by this run
    assert (out / "notes.txt").read_text() == "mine"  # files that are not the run's are kept
    from facemtl.training.runfolder import LOCK_NAME as name

    assert name == LOCK_NAME and not (out / LOCK_NAME).exists()  # released on exit


def test_resume_with_another_recipe_says_how_it_differs(utkface_root, tmp_path, capsys):
    r = recipe(tmp_path, utkface_root)
    out = tmp_path / "run"
    assert main(["train", "--config", str(r), "--out", str(out), "--no-progress"]) == 0
    other = recipe(tmp_path, utkface_root, "other.yaml", lr=0.1)
    capsys.readouterr()
    assert main(["train", "--config", str(other), "--out", str(out), "--resume", "--no-progress"]) == 2
    err = one_line_error(capsys)
    assert "optim.lr" in err and "0.003" in err and "0.1" in err
    # the same recipe, or none at all: the run continues with its saved settings (plus overrides)
    assert main(["train", "--config", str(r), "--out", str(out), "--resume", "--no-progress", "train.epochs=2"]) == 0
    assert main(["train", "--out", str(out), "--resume", "--no-progress", "train.epochs=3"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["epochs_run"] == 3
    # an override that changes the faces, their split or the network is refused, the run untouched
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    for change in ("data.limit=100", "data.split_seed=5", "data.image_size=48"):
        assert main(["train", "--out", str(out), "--resume", "--no-progress", "train.epochs=4", change]) == 2
        err = one_line_error(capsys)
        assert f"resuming with {change.split('=')[0]}=" in err and "start a new run" in err, err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert main(["train", "--out", str(tmp_path / "nothing"), "--resume"]) == 2
    assert "holds no run" in one_line_error(capsys)
    assert main(["train", "--out", str(tmp_path / "nothing")]) == 2  # a new run needs a recipe
    assert "--config" in capsys.readouterr().err


def test_a_second_trainer_is_kept_out_and_a_dead_ones_lock_taken_over(tmp_path, capsys):
    from facemtl.training.runfolder import RunFolderError, RunLock

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("tasks: [{name: g, type: binary}]\n")  # a run in progress
    code = ("import sys, time\nfrom facemtl.training.runfolder import RunLock\n"
            f"lock = RunLock({str(out)!r}).acquire()\nprint('locked', flush=True)\ntime.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderError, match=rf"in use by process {holder.pid} on "):
            RunLock(out).acquire()
        assert main(["train", "--out", str(out), "--resume"]) == 2
        assert f"in use by process {holder.pid}" in one_line_error(capsys)
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # dies without releasing: the lock file stays
        holder.wait()
    assert (out / LOCK_NAME).exists()
    said = []
    with RunLock(out, warn=said.append):
        assert f"pid {os.getpid()} " in (out / LOCK_NAME).read_text()
        with pytest.raises(RunFolderError, match="in use"):  # a second lock in this process too
            RunLock(out).acquire()
    assert len(said) == 1 and f"process {holder.pid}" in said[0] and "no longer runs" in said[0]
    assert not (out / LOCK_NAME).exists()


def test_a_lock_left_on_another_machine_is_not_taken_over(tmp_path):
    from facemtl.training.runfolder import RunFolderError, RunLock

    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text("pid 4242 host elsewhere.example since 2026-01-01T00:00:00Z\n")
    with pytest.raises(RunFolderError, match="elsewhere.example"):
        RunLock(out).acquire()
    assert "elsewhere.example" in (out / LOCK_NAME).read_text()


def test_sigterm_during_train_ends_as_ctrl_c_does_and_the_run_resumes(utkface_root, tmp_path, capsys):
    """SIGTERM (``kill``, a scheduler's stop) once ended the process at once: exit 143 but the
    lock file left behind and no word on how to go on. Now it unwinds as Ctrl-C does."""
    from fakes import sigterm_once

    r = recipe(tmp_path, utkface_root, epochs=200)
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "facemtl.cli", "train", "--config", str(r), "--out", str(out),
                             "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err = sigterm_once(proc, out / "last.pt")
    assert proc.returncode == 143, err
    assert "facemtl: interrupted; continue with --resume" in err and "Traceback" not in err, err
    assert not (out / LOCK_NAME).exists()
    done = len((out / "metrics.jsonl").read_text().splitlines())
    assert done >= 1
    assert main(["train", "--out", str(out), "--resume", "--no-progress", f"train.epochs={done + 1}"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["epochs_run"] == done + 1


def test_a_failed_start_leaves_nothing_in_the_way_of_the_next(utkface_root, tmp_path, capsys, monkeypatch):
    """A start that failed before its first epoch ended is no run: a data error leaves no
    folder at all, a crash in epoch 1 leaves files the next ``train --out`` replaces, and
    ``--resume`` says to start again rather than "no checkpoint"."""
    import facemtl.training.trainer as trainer_module

    r = recipe(tmp_path, utkface_root)
    out = tmp_path / "run"
    bad = recipe(tmp_path, tmp_path / "empty-data", "bad.yaml")
    (tmp_path / "empty-data").mkdir()
    assert main(["train", "--config", str(bad), "--out", str(out), "--no-progress"]) == 2
    one_line_error(capsys)
    assert not out.exists()  # the folder the failed start made is gone with it

    def crash(self):
        raise RuntimeError("crashed in epoch 1")

    monkeypatch.setattr(trainer_module.Trainer, "train_epoch", crash)
    assert main(["train", "--config", str(r), "--out", str(out), "--no-progress"]) == 2
    assert "crashed in epoch 1" in one_line_error(capsys)
    assert (out / "config.yaml").is_file() and not (out / "last.pt").exists()
    (out / "notes.txt").write_text("mine")
    assert main(["train", "--out", str(out), "--resume", "--no-progress"]) == 2
    err = one_line_error(capsys)
    assert "no checkpoint" in err and "without --resume" in err
    monkeypatch.undo()
    assert main(["train", "--config", str(r), "--out", str(out), "--no-progress"]) == 0
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1]
    assert (out / "notes.txt").read_text() == "mine" and (out / "best.pt").is_file()


def test_the_run_folder_is_refused_before_the_data_is_read(utkface_root, tmp_path, capsys, monkeypatch):
    import facemtl.data.dataset as dataset_module

    r = recipe(tmp_path, utkface_root)
    out = tmp_path / "run"
    assert main(["train", "--config", str(r), "--out", str(out), "--no-progress"]) == 0
    (out / "last.pt").rename(out / "kept.pt")  # a run whose last.pt is gone: --resume cannot continue it
    capsys.readouterr()

    def no_data(*a, **k):
        raise AssertionError("the data was read before the run folder was checked")

    monkeypatch.setattr(dataset_module, "build_data", no_data)  # (what the trainer's split_as_trained calls)
    assert main(["train", "--config", str(r), "--out", str(out), "--no-progress"]) == 2
    assert "already holds a run" in one_line_error(capsys)
    assert main(["train", "--out", str(out), "--resume", "--no-progress"]) == 2
    assert "holds no last.pt to continue from" in one_line_error(capsys)  # (and says --overwrite, which is taken)
    from facemtl.config import load_config
    from facemtl.training import Trainer
    from facemtl.training.runfolder import RunFolderError

    with pytest.raises(RunFolderError, match="already holds a run"):  # the Python API too
        Trainer(load_config(r), out, progress=False, log=lambda s: None)


def test_overwrite_warns_of_the_stale_report_and_a_resume_with_no_epochs_left_says_so(utkface_root, tmp_path,
                                                                                      capsys):
    r = recipe(tmp_path, utkface_root, epochs=2)
    out = tmp_path / "run"
    assert main(["train", "--config", str(r), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--no-progress", "train.epochs=1"]) == 0
    err = capsys.readouterr().err
    assert "nothing to train: this run already finished 2 epochs and train.epochs is 1" in err
    (out / "report").mkdir()
    (out / "report" / "report.md").write_text("# old")
    (out / "mine").mkdir()
    assert main(["train", "--config", str(r), "--out", str(out), "--no-progress", "--overwrite",
                 "train.epochs=1"]) == 0
    assert "describes the run just removed" in capsys.readouterr().err
    assert (out / "report" / "report.md").read_text() == "# old" and (out / "mine").is_dir()  # nothing of theirs goes


def test_a_folder_with_logs_results_or_a_kept_recipe_but_no_checkpoint_is_still_a_run(tmp_path):
    """Only a failed start (the trainer's own config.yaml and run_info.json, no epoch logged) is
    reused; logs, test results or a recipe kept by hand make a run that --overwrite alone removes."""
    from facemtl.training.runfolder import RunFolderError, check_fresh

    cases = {"log": {"config.yaml": "x", "run_info.json": "{}", "metrics.jsonl": '{"epoch": 1}\n'},
             "results": {"config.yaml": "x", "run_info.json": "{}", "test_metrics.json": "{}"},
             "recipe": {"config.yaml": "# my recipe"}}
    for name, files in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        for f, text in files.items():
            (folder / f).write_text(text)
        with pytest.raises(RunFolderError, match="already holds a run"):
            check_fresh(folder, overwrite=False)
        assert sorted(p.name for p in folder.iterdir()) == sorted(files), name
    failed = tmp_path / "failed"
    failed.mkdir()
    for f in ("config.yaml", "run_info.json", "data_report.json", "metrics.jsonl"):
        (failed / f).write_text("")
    (failed / "notes.txt").write_text("mine")
    check_fresh(failed, overwrite=False)
    assert [p.name for p in failed.iterdir()] == ["notes.txt"]


def test_a_data_root_that_does_not_exist_is_named_as_given(utkface_root, tmp_path, capsys):
    r = recipe(tmp_path, utkface_root)
    missing = tmp_path / "nodata"
    assert main(["train", "--config", str(r), "--out", str(tmp_path / "a"), "--data-root", str(missing)]) == 2
    err = one_line_error(capsys)
    assert f"the data folder {missing} given with --data-root does not exist" in err and "pass --data-root" not in err
    out = tmp_path / "run"
    assert main(["train", "--config", str(r), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--data-root", str(missing)]) == 2
    err = one_line_error(capsys)
    assert "given with --data-root does not exist" in err and "pass --data-root" not in err
    assert not (out / LOCK_NAME).exists()


def test_an_interrupt_before_the_first_epoch_ended_says_to_start_again(utkface_root, tmp_path, capsys, monkeypatch):
    import facemtl.training.trainer as trainer_module

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module.Trainer, "train_epoch", interrupted)
    out = tmp_path / "run"
    assert main(["train", "--config", str(recipe(tmp_path, utkface_root)), "--out", str(out), "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert "facemtl: interrupted; no epoch had ended, so there is nothing to resume: start it again" in err, err


def test_a_stop_while_an_epoch_is_saved_waits_until_it_is_saved(utkface_root, tmp_path, capsys, monkeypatch):
    """A user test: Ctrl-C just after epoch 1 was logged, before last.pt was written, left best.pt
    and the log but no last.pt: "nothing to resume: start it again", then a new start said "already
    holds a run", and --resume "holds no checkpoint": a circle. The stop now waits for the saves."""
    import facemtl.training.trainer as trainer_module

    saved, save = [], trainer_module.save_checkpoint

    def stopped_while_saving(state, path):
        if not saved:  # Ctrl-C between the log line and the checkpoints (best.pt first)
            os.kill(os.getpid(), signal.SIGINT)
        saved.append(Path(path).name)
        save(state, path)

    monkeypatch.setattr(trainer_module, "save_checkpoint", stopped_while_saving)
    out = tmp_path / "run"
    assert main(["train", "--config", str(recipe(tmp_path, utkface_root, epochs=3)), "--out", str(out),
                 "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert saved == ["best.pt", "last.pt"] and "facemtl: interrupted; continue with --resume" in err, err
    monkeypatch.setattr(trainer_module, "save_checkpoint", save)
    assert main(["train", "--out", str(out), "--resume", "--no-progress"]) == 0
    # killed there (no handler runs): --resume and the interrupt's sentence both say --overwrite
    (out / "last.pt").unlink()
    from facemtl.cli import _train_interrupted
    from facemtl.training.runfolder import RunFolderError, check_resumable

    assert _train_interrupted(out) == "; it holds no last.pt to continue from: start it again with --overwrite"
    with pytest.raises(RunFolderError, match="holds no last.pt to continue from .*start it again with --overwrite"):
        check_resumable(out)


def test_a_missing_labels_file_is_called_a_file_not_a_folder(tmp_path, capsys):
    """A user test: --data-root gone.csv and data.root=nothere.csv read "data folder ... does not
    exist"; a csv reader's root is its labels file."""
    recipe = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
    out = str(tmp_path / "r")
    assert main(["train", "--config", str(recipe), "--out", out, "--data-root", "gone.csv"]) == 2
    assert "error: the labels file gone.csv given with --data-root does not exist" in capsys.readouterr().err
    assert main(["train", "--config", str(recipe), "--out", out, f"data.root={tmp_path}/nothere.csv"]) == 2
    assert f"error: labels file {tmp_path}/nothere.csv (data.root on the command line) does not exist" \
        in capsys.readouterr().err
    assert main(["train", "--config", str(recipe), "--out", out, "--data-root", "gone"]) == 2
    assert "error: the data folder gone given with --data-root does not exist" in capsys.readouterr().err


def test_resume_with_a_recipe_that_leaves_task_defaults_out_is_the_same_run(tmp_path):
    """A user test: --resume --config listed `tasks:` as differing because the saved config spells
    out the task's defaults (method: binary, decoding: threshold) and the recipe does not."""
    import yaml

    from facemtl.tasks import build_task
    from facemtl.training.runfolder import RunFolderError, resume_config

    age = {"name": "age", "type": "ordinal", "min_value": 1, "max_value": 116}
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"tasks": [age], "data": {"root": str(tmp_path)}}))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"tasks": [build_task(dict(age)).to_dict()],
                                                     "data": {"root": str(tmp_path)}}))
    assert resume_config(run, recipe, []).tasks[0]["name"] == "age"
    recipe.write_text(yaml.safe_dump({"tasks": [{**age, "max_value": 100}], "data": {"root": str(tmp_path)}}))
    with pytest.raises(RunFolderError, match=r"\(tasks\.age\.max_value: 116 in the run, 100 in recipe\.yaml\)"):
        resume_config(run, recipe, [])  # a real difference still is one, said per task and setting
    # a task renamed: named, not both task lists spelled out (a user test read 2,175 characters)
    gender = {"name": "gender", "type": "binary", "classes": ["male", "female"]}
    (run / "config.yaml").write_text(yaml.safe_dump({"tasks": [build_task(dict(t)).to_dict() for t in (age, gender)],
                                                     "data": {"root": str(tmp_path)}}))
    recipe.write_text(yaml.safe_dump({"tasks": [age, {**gender, "name": "sex", "label": "gender"}],
                                      "data": {"root": str(tmp_path)}}))
    with pytest.raises(RunFolderError) as caught:
        resume_config(run, recipe, [])
    assert "(tasks.gender: in the run, not in recipe.yaml; tasks.sex: in recipe.yaml, not in the run)" \
        in str(caught.value) and len(str(caught.value)) < 500
    recipe.write_text(yaml.safe_dump({"tasks": [gender, age], "data": {"root": str(tmp_path)}}))
    with pytest.raises(RunFolderError, match=r"tasks \(their order\): \['age', 'gender'\] in the run, "
                                             r"\['gender', 'age'\] in recipe\.yaml"):
        resume_config(run, recipe, [])


def test_a_resume_may_not_change_how_the_losses_are_weighed(tmp_path):
    """A review resumed an `equal` run with weighting.name=fixed: its last epoch trained otherwise,
    and its config (which reports read) then named the whole run `fixed`."""
    import yaml

    from facemtl.training.runfolder import RunFolderError, resume_config

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"tasks": [{"name": "gender", "type": "binary"}],
                                                     "data": {"root": str(tmp_path)}, "weighting": {"name": "equal"}}))
    assert resume_config(run, None, ["train.epochs=4", "weighting.lr=0.01"]).train.epochs == 4  # these may change
    for override in ("weighting.name=fixed", "weighting.params={lam: 0.5}"):
        with pytest.raises(RunFolderError, match=r"was trained with weighting\.(name|params)"):
            resume_config(run, None, [override])



def test_a_resume_may_not_change_the_optimiser_or_its_schedule(tmp_path):
    """A user test: a resume with optim.name=sgd loaded AdamW's state into SGD, failed with a bare
    "momentum" at the first step, and left config.yaml saying sgd, so every later resume failed."""
    import yaml

    from facemtl.training.runfolder import RunFolderError, resume_config

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"tasks": [{"name": "gender", "type": "binary"}],
                                                     "data": {"root": str(tmp_path)}, "optim": {"name": "adamw"}}))
    assert resume_config(run, None, ["optim.lr=0.5", "optim.weight_decay=0.1"]).optim.lr == 0.5  # these apply
    for override, key in (("optim.name=sgd", "optim.name"), ("optim.scheduler=cosine", "optim.scheduler")):
        with pytest.raises(RunFolderError, match=rf"was trained with {key}=.*saved optimiser and schedule"):
            resume_config(run, None, [override])


def test_a_run_and_an_experiment_never_share_a_folder(tmp_path):
    """A user test: `experiment --out A` on a training run and `train --out E` on a grid were both
    taken; the report then read the folder as the grid and the run was hidden."""
    from facemtl.experiments import runner
    from facemtl.training.runfolder import RunFolderError, check_fresh

    grid = tmp_path / "grid"
    grid.mkdir()
    (grid / "experiment.yaml").write_text("name: x\n")
    for overwrite in (False, True):
        with pytest.raises(RunFolderError, match="holds an experiment grid"):
            check_fresh(grid, overwrite)
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"x")  # a run worth protecting
    with pytest.raises(RunFolderError, match="holds a training run"):
        runner.run_experiment(None, run)
    assert sorted(p.name for p in run.iterdir()) == ["best.pt"]
