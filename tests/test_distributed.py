"""Training beyond one process: torchrun + DDP on the CPU (gloo, two processes), data decoded on
the fly, and WebDataset shards."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_recipe


@pytest.fixture(scope="module")
def recipe(utkface_root, tmp_path_factory) -> Path:
    return tiny_recipe(tmp_path_factory.mktemp("ddp"), utkface_root, limit=320, epochs=3, batch_size=32)


def torchrun(*args: str, wait: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "facemtl.cli", "train", *args, "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def ddp_run(recipe) -> Path:
    out = recipe.parent / "run"
    r = torchrun("--config", str(recipe), "--out", str(out), "train.early_freeze=1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert len([x for x in r.stdout.splitlines() if x.startswith("{")]) == 1  # one summary for the run
    return out


def test_two_processes_train_one_normal_run(ddp_run, utkface_root):
    from facemtl.cli import evaluate

    info = json.loads((ddp_run / "run_info.json").read_text())
    assert info["world_size"] == 2 and info["backend"] == "gloo"
    for f in ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "test_metrics.json", "test_predictions.npz"):
        assert (ddp_run / f).is_file(), f
    m = evaluate(str(ddp_run / "best.pt"), data_root=str(utkface_root))
    assert 0 <= m["gender"]["accuracy"] <= 1
    # the report says the batch was per process (a user test: "batch 32" read as a one-process run)
    from facemtl.report import write_report

    page = write_report(ddp_run, ddp_run.parent / "ddp-report", gradcam=False)
    assert "batch 32 per process x 2 processes (64 in all)" in (page.parent / "report.md").read_text()
    record = json.loads((ddp_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["train"]["images_per_s"] > 0  # every process's images (rank 0's alone before)


def test_every_rank_ends_with_the_same_parameters_and_frozen_tasks(ddp_run):
    ranks = json.loads((ddp_run / "run_info.json").read_text())["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["param_checksum"] == ranks[1]["param_checksum"]
    assert ranks[0]["frozen"] == ranks[1]["frozen"]  # Early Freeze decided once, applied on both


def test_validation_covers_the_whole_split(ddp_run, utkface_root):
    """The last epoch's validation metrics (gathered from both ranks' shares) equal one process
    evaluating the same checkpoint on the whole validation split."""
    from facemtl.cli import evaluate

    last = [json.loads(x) for x in (ddp_run / "metrics.jsonl").read_text().splitlines()][-1]["val"]
    alone = evaluate(str(ddp_run / "last.pt"), split="val", data_root=str(utkface_root))
    for task, key in (("age", "mae"), ("gender", "accuracy"), ("race", "accuracy")):
        assert last[task]["n"] == alone[task]["n"]
        assert last[task][key] == pytest.approx(alone[task][key], abs=1e-9)
        assert last[task]["loss"] == pytest.approx(alone[task]["loss"], rel=1e-4)


def test_a_killed_distributed_run_resumes(recipe, tmp_path):
    out = tmp_path / "killed"
    p = torchrun("--config", str(recipe), "--out", str(out), "train.epochs=4", wait=False)
    deadline = time.time() + 300
    while time.time() < deadline and not ((out / "last.pt").is_file() and (out / "metrics.jsonl").is_file()):
        time.sleep(0.5)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert (out / "last.pt").is_file()
    done = torch.load(out / "last.pt", weights_only=True)["epoch"]
    assert done < 4
    r = torchrun("--config", str(recipe), "--out", str(out), "train.epochs=4", "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads([x for x in r.stdout.splitlines() if x.startswith("{")][0])
    assert summary["epochs_run"] == 4
    epochs = [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]  # numbered from 1, each once (the epoch cut short was cut from the log)


def test_torchruns_restart_of_a_run_continues_it_and_anothers_folder_is_left_to_the_usual_checks(
        recipe, tmp_path, monkeypatch, capsys):
    """A user test: torchrun --max-restarts starts its workers again with the command it was given,
    which names no --resume; the restart was refused as "already holds a run" (and with
    --overwrite would have removed the run's epochs). A restart of the same torchrun (its id in the
    last start of run_info.json) after an epoch ended continues from last.pt. (One process stands
    in for torchrun's: the decision reads only the environment and the folder; checked by hand
    with torchrun --max-restarts 1 and a worker killed.)"""
    from facemtl.cli import main

    out = tmp_path / "run"
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "first-torchrun")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    args = ["train", "--config", str(recipe), "--out", str(out), "--no-progress", "--overwrite"]
    assert main([*args, "train.epochs=1"]) == 0
    assert json.loads((out / "run_info.json").read_text())["starts"][-1]["torchrun_id"] == "first-torchrun"
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    capsys.readouterr()
    assert main([*args, "train.epochs=2"]) == 0  # --overwrite too: the epoch trained is kept
    assert "torchrun started the run again (restart 1): continuing" in capsys.readouterr().err
    epochs = [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2] and len(json.loads((out / "run_info.json").read_text())["starts"]) == 2
    # another torchrun's restart (its first start refused: the folder held this run) is refused as before,
    # and so is one of torchrun's shared id "none" (no --rdzv-id), which tells no launch from another (a review)
    for other in ("another-torchrun", "none"):
        if other == "none":
            info = json.loads((out / "run_info.json").read_text())
            info["starts"][-1]["torchrun_id"] = "none"
            (out / "run_info.json").write_text(json.dumps(info))
        monkeypatch.setenv("TORCHELASTIC_RUN_ID", other)
        assert main([a for a in args if a != "--overwrite"] + ["train.epochs=3"]) == 2
        assert "already holds a run" in capsys.readouterr().err


def test_an_elastic_launchs_workers_started_again_when_its_nodes_change_continue_the_run(
        recipe, tmp_path, monkeypatch, capsys):
    """torchrun --nnodes MIN:MAX starts its workers again when a node joins or leaves, without
    counting a restart (restart 0 again): the run was refused as a run already there, and the
    launch died at the first node that joined (a note's "left" item). The same agent (this
    process's parent, its start recorded per start) continues the run; a later torchrun of
    the same --rdzv-id is another agent and is refused as before. (One process stands in for
    torchrun's, as above. By hand, two agents on one machine, --nnodes 1:2, c10d: torchrun 2.13's
    own second rendezvous timed out on its role_info keys in both agents, before any worker
    started again, as pytorch#147064 reports for agents sharing a host.)"""
    from facemtl.cli import main
    from facemtl.system import process_start

    out = tmp_path / "run"
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "elastic-job")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    args = ["train", "--config", str(recipe), "--out", str(out), "--no-progress"]
    assert main([*args, "train.epochs=1"]) == 0
    agent = json.loads((out / "run_info.json").read_text())["starts"][-1]["torchrun_agent"]
    assert agent == [socket.gethostname(), os.getppid(), process_start(os.getppid())] and agent[2]
    capsys.readouterr()
    assert main([*args, "train.epochs=2"]) == 0  # its nodes changed: the same agent, restart 0
    assert f"torchrun started the run again (its nodes changed): continuing {out} from its last.pt" \
        in capsys.readouterr().err
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    info = json.loads((out / "run_info.json").read_text())
    info["starts"][-1]["torchrun_agent"][2] = "another start"  # a torchrun of the same id before: another agent
    (out / "run_info.json").write_text(json.dumps(info))
    assert main([*args, "train.epochs=3"]) == 2 and "already holds a run" in capsys.readouterr().err
    # a rank of another node (its agent another, or a node that just joined) goes by the id: rank 0 decides
    monkeypatch.setenv("RANK", "1")
    from facemtl.training.runfolder import torchrun_restarted

    assert torchrun_restarted(out)
    # ...but never takes the launch's own fresh folder, whose run_info.json rank 0 may have written already,
    # for one to start again (no last.pt yet: a first start)
    from facemtl.training.runfolder import torchrun_restarted_unsaved

    (out / "last.pt").rename(out / "last.pt.aside")
    assert not torchrun_restarted_unsaved(out) and not torchrun_restarted(out)
    (out / "last.pt.aside").rename(out / "last.pt")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "a-later-launch")
    assert not torchrun_restarted(out)


def test_torchruns_restart_before_last_pt_was_saved_starts_the_run_again(recipe, tmp_path, monkeypatch, capsys):
    """A kill between best.pt and last.pt in the first epoch left a folder that every restart of
    torchrun refused as holding a run (a note's "left" item); the same torchrun's restart now
    starts it again in place, and another torchrun's start is refused as before."""
    from facemtl.cli import main

    out = tmp_path / "run"
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "first-torchrun")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    args = ["train", "--config", str(recipe), "--out", str(out), "--no-progress", "train.epochs=1"]
    assert main(args) == 0
    (out / "last.pt").unlink()  # (as a kill after best.pt was written)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "another-torchrun")
    capsys.readouterr()
    assert main(args) == 2 and "already holds a run" in capsys.readouterr().err
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "first-torchrun")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert main(args) == 0
    assert "before its first epoch was saved: starting" in capsys.readouterr().err
    assert (out / "last.pt").is_file()
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1]


def test_the_way_on_after_a_stop_says_when_torchrun_restarts_the_run_itself(tmp_path, monkeypatch):
    """"continue with --resume" misled when torchrun had restarts left and was about to continue
    the run itself (a note's "left" item), from its beginning when no epoch was saved; with none
    left, or under the shared id "none", the sentence is as before."""
    from facemtl.cli import _train_interrupted

    (tmp_path / "last.pt").write_bytes(b"")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "this-torchrun")
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "3")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert _train_interrupted(tmp_path) == ("; torchrun starts it again from last.pt by itself (2 restarts of "
                                            "--max-restarts left); if torchrun itself was stopped, continue with "
                                            "--resume")
    for name, value in (("TORCHELASTIC_RESTART_COUNT", "3"), ("TORCHELASTIC_RUN_ID", "none")):
        monkeypatch.setenv(name, value)
        assert _train_interrupted(tmp_path) == "; continue with --resume"
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "this-torchrun")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    (tmp_path / "last.pt").unlink()
    assert "from its beginning by itself, as no epoch was saved (3 restarts" in _train_interrupted(tmp_path)
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "0")
    assert "nothing to resume" in _train_interrupted(tmp_path)


def test_a_worker_killed_under_torchrun_max_restarts_is_restarted_and_the_run_continues(recipe, tmp_path):
    """The whole path by torchrun: a worker killed, torchrun starts both again with the command it
    was given, and the run continues from last.pt (before: refused as a run already there, and,
    once continued, its processes could not connect through torchrun's store: pytorch#167288)."""
    out = tmp_path / "restarted"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--max-restarts",
           "1", "-m", "facemtl.cli", "train", "--config", str(recipe), "--out", str(out), "--no-progress",
           "train.epochs=40"]
    p = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not (out / "last.pt").is_file():
            time.sleep(0.2)
        workers = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
        os.kill(int(workers[-1]), signal.SIGKILL)
        said, _ = p.communicate(timeout=600)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 0, said[-3000:]
    assert said.count("torchrun started the run again (restart 1): continuing") == 2  # (each process says it)
    # the process left standing said that torchrun would continue the run, not "continue with --resume" (a note)
    assert "torchrun starts it again from last.pt by itself (1 restart of --max-restarts left)" in said, said[-3000:]
    epochs = [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    starts = json.loads((out / "run_info.json").read_text())["starts"]
    assert epochs == list(range(1, 41)) and len(starts) == 2 and 1 <= starts[1]["after_epoch"] < 40


def test_when_rank_0_refuses_the_folder_the_others_stop_at_torchruns_signal(recipe, tmp_path):
    """A user test: rank 0 refused the folder (in use) before the others had joined it; they waited
    inside PyTorch's C++ join, where torchrun's SIGTERM went unheard, until its SIGKILL 30 s later."""
    from facemtl.training.runfolder import LOCK_NAME

    out = tmp_path / "locked"
    out.mkdir()
    (out / LOCK_NAME).write_text("pid 4242 host another-machine since 2026-11-29T00:00:00Z\n")
    r = torchrun("--config", str(recipe), "--out", str(out))
    assert r.returncode != 0 and "is locked by process 4242 on another-machine" in r.stderr, r.stderr[-3000:]
    assert "Unable to shutdown process" not in r.stderr, r.stderr[-3000:]  # (torchrun's word for its SIGKILL)


def _batches(fs, seed: int = 0):
    return list(fs.batches(16, shuffle=True, generator=torch.Generator().manual_seed(seed), drop_last=True))


def test_on_the_fly_decoding_gives_the_cached_batches(recipe):
    from facemtl.config import load_config
    from facemtl.data import build_data
    from facemtl.tasks import build_task

    cfg = load_config(recipe, ["data.cache=stream"])
    tasks = [build_task(t) for t in cfg.tasks]
    streamed = build_data(cfg.data, tasks, 0)
    assert streamed.train.images is None and "on the fly" in streamed.report["image_cache"]
    cached = build_data(load_config(recipe).data, tasks, 0)
    assert cached.train.images is not None and "into memory" in cached.report["image_cache"]
    for (xa, ya), (xb, yb) in zip(_batches(streamed.train), _batches(cached.train), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya.nan_to_num(-1), yb.nan_to_num(-1))
    # the budget decides: the same data over a tiny budget streams, and says why
    small = load_config(recipe, ["data.cache_limit_gb=0.0001"])
    assert "over the" in build_data(small.data, tasks, 0).report["image_cache"]


def test_shards_give_the_same_faces_labels_and_split(recipe, tmp_path):
    from facemtl.cli import shards
    from facemtl.config import load_config
    from facemtl.data import build_data
    from facemtl.tasks import build_task

    index = shards(str(recipe), str(tmp_path / "shards"), shard_size=100)
    assert len(list(index.parent.glob("faces-*.tar"))) == 4  # 320 faces, 100 a shard
    cfg = load_config(recipe)
    tasks = [build_task(t) for t in cfg.tasks]
    files = build_data(cfg.data, tasks, 0)
    from_shards = build_data(load_config(recipe, ["data.dataset=shards", f"data.root={index.parent}",
                                                  "data.split=predefined"]).data, tasks, 0)
    for part in ("train", "val", "test"):
        a, b = files.split(part), from_shards.split(part)
        assert len(a) == len(b)
        assert torch.equal(a.images, b.images)
        assert np.array_equal(a.labels.numpy(), b.labels.numpy(), equal_nan=True)


def test_shards_refuse_a_folder_holding_shards_and_overwrite_leaves_no_stale_one(recipe, tmp_path, capsys):
    import json

    from facemtl.cli import main, shards

    out = tmp_path / "shards"
    shards(str(recipe), str(out), shard_size=100)  # 320 faces: 4 shards
    (out / "notes.txt").write_text("mine")
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(["shards", "--config", str(recipe), "--out", str(out), "--shard-size", "200"]) == 2
    assert "already holds 5 shard or index file(s)" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # nothing touched
    # --overwrite: 2 shards now, and the index lists only those (the old 3rd and 4th are gone)
    assert main(["shards", "--config", str(recipe), "--out", str(out), "--shard-size", "200", "--overwrite"]) == 0
    index = json.loads((out / "index.json").read_text())
    assert [s["url"] for s in index["shardlist"]] == ["faces-000000.tar", "faces-000001.tar"]
    assert [s["nsamples"] for s in index["shardlist"]] == [200, 120]
    assert sorted(p.name for p in out.glob("faces-*.tar")) == ["faces-000000.tar", "faces-000001.tar"]
    assert (out / "notes.txt").read_text() == "mine"


def test_streamed_and_cached_runs_train_alike_and_shards_stream(recipe, tmp_path):
    """A user test: (1) the streamed path trained otherwise than the cached one (each epoch's
    DataLoaders drew their seeds from the global random state that dropout draws from), though the
    README promised the same; (2) shards could not be streamed at all ("none of the images of the
    training split exists (e.g. shards:...#0)"), the one way to train on data that does not fit in
    memory; (3) the summary's images/s was one process's."""
    from facemtl.cli import shards, train

    common = ["train.epochs=1", "data.workers=0"]
    cached = train(str(recipe), str(tmp_path / "cached"), common)
    streamed = train(str(recipe), str(tmp_path / "streamed"), common + ["data.cache=stream"])
    assert streamed["best_score"] == cached["best_score"] and streamed["test_score"] == cached["test_score"]
    index = shards(str(recipe), str(tmp_path / "shards"), shard_size=100)
    run = tmp_path / "from-shards"
    summary = train(str(recipe), str(run), common + ["data.cache=stream", "data.dataset=shards",
                                                     f"data.root={index.parent}", "data.split=predefined"])
    assert summary["epochs_run"] == 1 and np.isfinite(summary["test_score"])
    assert "on the fly in the training process" in json.loads((run / "data_report.json").read_text())["image_cache"]


def test_an_unreadable_streamed_image_is_not_scored(recipe, tmp_path, capsys):
    """A user test: in the streamed path a test image that could not be read came as a black image
    with its labels masked in the batch, and was scored against the split's labels all the same
    (n 301 where evaluate said 300)."""
    from facemtl.config import load_config
    from facemtl.data import build_data
    from facemtl.model import MultiTaskNet
    from facemtl.tasks import build_task
    from facemtl.training.evaluation import predict_set

    cfg = load_config(recipe, ["data.cache=stream", "data.workers=0"])
    tasks = [build_task(t) for t in cfg.tasks]
    test = build_data(cfg.data, tasks, 0).test
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a whole jpeg")
    test.paths[3] = str(broken)
    model = MultiTaskNet.from_config(cfg.model, tasks)
    res = predict_set(model, test, tasks, torch.device("cpu"), 16)
    assert capsys.readouterr().err.count("broken.jpg cannot be read and is left out") == 1
    for t in tasks:
        assert np.isnan(res["true"][t.name][3]) and not np.isnan(test.labels.numpy()[3]).all()
        assert res["n"][t.name] == int((~np.isnan(res["true"][t.name])).sum())
    # read again (the next epoch): masked again, not said again (a user test: the line came every epoch)
    again = predict_set(model, test, tasks, torch.device("cpu"), 16)
    assert "cannot be read" not in capsys.readouterr().err and np.isnan(again["true"][tasks[0].name][3])


def test_shares_of_a_split_smaller_than_the_processes_merge_as_the_whole(recipe):
    """A user test: a 2-face validation split on 3 processes left the last rank an empty share,
    whose arrays (no rows, no shape) failed the merge every epoch. Merged, the shares are the
    whole split's predictions, with the empty one left out."""
    from facemtl.config import load_config
    from facemtl.data import build_data
    from facemtl.model import MultiTaskNet
    from facemtl.tasks import build_task
    from facemtl.training.evaluation import merge_predictions, predict_set

    cfg = load_config(recipe, ["data.workers=0"])
    tasks = [build_task(t) for t in cfg.tasks]
    val = build_data(cfg.data, tasks, 0).val.subset(np.arange(2))
    model = MultiTaskNet.from_config(cfg.model, tasks)
    whole = predict_set(model, val, tasks, torch.device("cpu"), 16)
    shares = [predict_set(model, val.subset(i), tasks, torch.device("cpu"), 16)
              for i in np.array_split(np.arange(2), 3)]
    assert [len(s["true"][tasks[0].name]) for s in shares] == [1, 1, 0]
    merged = merge_predictions(shares)
    for key in ("pred", "true", "prob"):
        for t in tasks:
            if whole[key][t.name] is None:
                assert merged[key][t.name] is None
            else:
                np.testing.assert_allclose(merged[key][t.name], whole[key][t.name], rtol=1e-5, atol=1e-6)
    assert merged["n"] == whole["n"]


def test_a_stop_that_reaches_the_loader_processes_first_is_a_stop(recipe, tmp_path, monkeypatch, capsys):
    """A user test: torchrun's SIGTERM reached the DataLoader processes before the trainer's own
    handler, and the survivor said `error: DataLoader worker (pid N) is killed by signal:
    Terminated.` (exit 2, no word of --resume) instead of stopping."""
    from facemtl.cli import main
    from facemtl.training import Trainer

    def killed(self):
        raise RuntimeError("DataLoader worker (pid 4242) is killed by signal: Terminated. ")

    monkeypatch.setattr(Trainer, "fit", killed)
    assert main(["train", "--config", str(recipe), "--out", str(tmp_path / "a"), "--no-progress"]) == 143
    assert "facemtl: interrupted" in capsys.readouterr().err

    def oom(self):
        raise RuntimeError("DataLoader worker (pid(s) 4242) is killed by signal: Killed. ")

    monkeypatch.setattr(Trainer, "fit", oom)
    assert main(["train", "--config", str(recipe), "--out", str(tmp_path / "b"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "a data loader process was killed (SIGKILL: out of memory?" in err and "no epoch had ended" in err

    def gone(self):  # (PyTorch's wording when it finds the process gone before it learns the signal: a user test)
        raise RuntimeError("DataLoader worker (pid(s) 4242) exited unexpectedly")

    monkeypatch.setattr(Trainer, "fit", gone)
    assert main(["train", "--config", str(recipe), "--out", str(tmp_path / "c"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "a data loader process ended unexpectedly (killed? out of memory?" in err and "no epoch had ended" in err
