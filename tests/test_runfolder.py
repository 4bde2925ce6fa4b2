"""Issue 12, item 8: a run folder is never wiped or mixed silently. ``train --out`` into an
existing run needs ``--resume`` or ``--overwrite``; ``--resume`` with another recipe says
how they differ; a lock file keeps a second trainer out and is taken over, with a
warning, when the process that left it is gone."""

import json
import os
import signal
import subprocess
import sys

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
