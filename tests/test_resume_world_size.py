"""Resuming a run on another number of processes than trained it: refused in one sentence,
leaving the run folder as it was, unless FACEMTL_ACCEPT_WORLD_SIZE=1, which trains on (the global
batch changes) and lists both starts in run_info.json. Also: DDP without find_unused_parameters
(every trainable parameter gets a gradient at every step, whatever the recipe), and a process of
the run killed under torchrun named by the others in one sentence with the way to continue."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_recipe

from facemtl.config import config_from_dict
from facemtl.data.dataset import label_columns
from facemtl.losses import labelled
from facemtl.model import MultiTaskNet
from facemtl.tasks import build_task
from facemtl.training.runfolder import WORLD_SIZE_ENV
from facemtl.weighting import build_weighting

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def recipe(utkface_root, tmp_path_factory) -> Path:
    return tiny_recipe(tmp_path_factory.mktemp("world"), utkface_root, limit=160, epochs=1, batch_size=16)


def torchrun(*args: str, nproc: int = 2, env: dict[str, str] | None = None,
             wait: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "facemtl.cli", "train", *args, "--no-progress"]
    full = {k: v for k, v in os.environ.items() if k != WORLD_SIZE_ENV}
    full.update(OMP_NUM_THREADS="1", **(env or {}))
    if not wait:
        return subprocess.Popen(cmd, env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    return subprocess.run(cmd, env=full, capture_output=True, text=True, timeout=300)


def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def errors(text: str) -> list[str]:
    return [x for x in text.splitlines() if x.startswith("facemtl: ")]


@pytest.fixture(scope="module")
def two_process_run(recipe) -> Path:
    """One epoch trained by two processes (a run stopped after it: last.pt holds epoch 1)."""
    out = recipe.parent / "two"
    r = torchrun("--config", str(recipe), "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "find_unused_parameters" not in r.stderr  # DDP's warning that it searched for nothing
    return out


@pytest.fixture(scope="module")
def one_process_run(recipe) -> Path:
    """One epoch trained by one process."""
    from facemtl.cli import main

    out = recipe.parent / "one"
    assert main(["train", "--config", str(recipe), "--out", str(out), "--no-progress"]) == 0
    return out


def test_a_two_process_run_resumed_as_one_process_is_refused_and_left_as_it_was(two_process_run, tmp_path,
                                                                                  capsys, monkeypatch):
    from facemtl.cli import main

    monkeypatch.delenv(WORLD_SIZE_ENV, raising=False)
    out = shutil.copytree(two_process_run, tmp_path / "run")
    before = snapshot(out)
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "train.epochs=2", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one sentence, said before anything is read or trained
    assert err[0] == (f"facemtl: error: {out} was trained on 2 processes and this resume runs 1 process, so the global "
                      f"batch (train.batch_size is per process) would change from 32 to 16 faces and the result would "
                      f"differ from a run never stopped; resume it on 2 processes in all (torchrun: --nnodes x "
                      f"--nproc_per_node = 2), or "
                      f"set {WORLD_SIZE_ENV}=1 to continue on 1 process anyway")
    assert snapshot(out) == before


def test_the_opt_in_trains_on_with_one_process_and_records_both_starts(two_process_run, tmp_path, capsys,
                                                                       monkeypatch):
    from facemtl.cli import main

    monkeypatch.setenv(WORLD_SIZE_ENV, "1")
    out = shutil.copytree(two_process_run, tmp_path / "run")
    first = json.loads((out / "run_info.json").read_text())
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "train.epochs=2", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert (f"warning: continuing {out} on 1 process though it was trained on 2 processes ({WORLD_SIZE_ENV} is set): "
            f"the global batch changes from 32 to 16 faces (train.batch_size=32 would keep it)") in err
    info = json.loads((out / "run_info.json").read_text())
    for k in ("started", "world_size", "backend", "threads_per_process", "hardware"):
        assert info[k] == first[k], k  # the first start's fields, kept for readers of older runs
    assert info["world_size"] == 2 and info["backend"] == "gloo"
    starts = [(s["world_size"], s["backend"], s["after_epoch"], s["batch_size"], s["global_batch"])
              for s in info["starts"]]
    assert starts == [(2, "gloo", 0, 16, 32), (1, None, 1, 16, 16)]
    assert info["starts"][0]["started"] == info["started"] <= info["starts"][1]["started"]
    assert all(s["threads_per_process"] >= 1 and "hardware" in s for s in info["starts"])
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert torch.load(out / "last.pt", weights_only=True)["world_size"] == 1
    assert "ranks" in first and "ranks" not in info  # (the two ranks' checksums of epoch 1 were kept: a user test)


def test_a_one_process_run_resumed_on_two_is_refused_then_accepted(one_process_run, tmp_path):
    out = shutil.copytree(one_process_run, tmp_path / "run")
    before = snapshot(out)
    r = torchrun("--out", str(out), "--resume", "train.epochs=2")
    assert r.returncode != 0  # torchrun's own status (1) for processes that failed
    said = errors(r.stderr)
    assert said and set(said) == {  # every process says the same sentence
        f"facemtl: error: {out} was trained on 1 process and this resume runs 2 processes, so the global batch "
        f"(train.batch_size is per process) would change from 16 to 32 faces and the result would differ from a run "
        f"never stopped; resume it as one process (facemtl train without torchrun), or set {WORLD_SIZE_ENV}=1 to "
        f"continue on 2 processes anyway"}
    assert snapshot(out) == before

    r = torchrun("--out", str(out), "--resume", "train.epochs=2", env={WORLD_SIZE_ENV: "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "the global batch changes from 16 to 32 faces (train.batch_size=8 would keep it)" in r.stderr
    assert "find_unused_parameters" not in r.stderr
    info = json.loads((out / "run_info.json").read_text())
    assert info["world_size"] == 1 and [(s["world_size"], s["after_epoch"]) for s in info["starts"]] == [(1, 0), (2, 1)]
    ranks = info["ranks"]  # rank 1, which the stopped run did not have, trained in step with rank 0
    assert ranks[0]["param_checksum"] == ranks[1]["param_checksum"]
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_every_trainable_parameter_gets_a_gradient_when_no_task_has_a_label():
    """Why DDP runs without find_unused_parameters: for every recipe in configs/ (training-only
    tasks included), every weighting, with and without a task frozen by Early Freeze, a step in
    which no image has any label still reaches every parameter that requires a gradient."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: a second thread only waits (a second a step on a busy machine)
    try:
        _check_every_recipe()
    finally:
        torch.set_num_threads(threads)


def _check_every_recipe() -> None:
    recipes = {p: yaml.safe_load(Path(p).read_text()) for p in sorted(glob.glob(str(REPO / "configs" / "*.yaml")))}
    recipes = {p: d for p, d in recipes.items() if "tasks" in d}  # not the experiment files
    checked = 0
    for path, d in recipes.items():
        d.setdefault("model", {}).update(backbone="tiny_mbconv", pretrained=False,
                                         shared_stages=min(d["model"].get("shared_stages") or 3, 3))
        cfg = config_from_dict(d)
        tasks = [build_task(s) for s in cfg.tasks]
        cols = label_columns(tasks)
        width = max(c.stop if isinstance(c, slice) else c + 1 for c in cols)
        for weighting in dict.fromkeys([cfg.weighting.name, "equal", "uncertainty", "gradnorm", "dwa", "learned"]):
            for frozen in (None, tasks[0].name):
                torch.manual_seed(0)
                model = MultiTaskNet.from_config(cfg.model, tasks)
                if frozen:
                    model.freeze(frozen)
                params = cfg.weighting.params if weighting == cfg.weighting.name else {}
                w = build_weighting(weighting, [t.name for t in tasks], params)
                model.train(), w.train()
                out = model(torch.randn(2, 3, 32, 32))
                y = torch.full((2, width), float("nan"))
                losses = {t.name: t.loss(out[t.name].float(), y[:, c], labelled(y[:, c])) for t, c in zip(tasks, cols)}
                w(losses, model).backward()
                missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
                assert not missing, (Path(path).name, weighting, frozen, missing[:3])
                checked += 1
    assert checked >= 100


def test_a_lost_peer_is_one_sentence_and_other_errors_pass():
    from facemtl.training.distributed import Dist

    gloo = ("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:178: "
            "Connection reset by peer. This is typically caused by a remote worker hanging or bugs in the "
            "application. Check the logs of the remote worker before reporting an error. GLHF!")
    with pytest.raises(RuntimeError) as caught, Dist(0, 2).guard(lambda: "continue with --resume"):
        raise torch.distributed.DistBackendError(gloo)
    assert str(caught.value) == ("another process of this run stopped, so process 0 stops too (Read error "
                                 "[127.0.0.1]:178: Connection reset by peer); continue with --resume")
    for d, exc in ((Dist(0, 2), RuntimeError("mat1 and mat2 shapes cannot be multiplied")),
                   (Dist(), torch.distributed.DistBackendError(gloo))):  # not a peer; alone, no peer to lose
        with pytest.raises(RuntimeError) as caught, d.guard(lambda: "never"):
            raise exc
        assert caught.value is exc


def test_a_worker_killed_under_torchrun_is_named_with_the_way_on(recipe, tmp_path):
    """kill -9 of rank 1: rank 0 says, in one sentence, that another process stopped and how to
    continue (or, when torchrun's SIGTERM reaches it first, that it was interrupted), never gloo's
    "Connection closed by peer ... GLHF!"."""
    out = tmp_path / "killed"
    p = torchrun("--config", str(recipe), "--out", str(out), "train.epochs=200", wait=False)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "last.pt").is_file():
            time.sleep(0.1)
        assert (out / "last.pt").is_file()
        rank1 = [w for w in _children(p.pid) if environ(w).get("RANK") == "1"]
        assert rank1, "torchrun's rank 1 process was not found"
        os.kill(int(rank1[0]), signal.SIGKILL)
        text, _ = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert p.returncode != 0
    said = errors(text)
    assert len(said) == 1 and "GLHF" not in said[0], text
    assert said[0] == "facemtl: interrupted; continue with --resume" or (
        said[0].startswith("facemtl: error: another process of this run stopped, so process 0 stops too (")
        and said[0].endswith("); if it printed an error, fix that first, then continue with --resume on 2 processes "
                             "(the same --nproc_per_node)")), text


def environ(pid: str) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return dict(x.split("=", 1) for x in raw.split("\0") if "=" in x)


def _children(pid: int) -> list[str]:
    """The processes whose parent is ``pid`` (from each ``/proc/N/stat``: the 4th field after the
    command name), whichever of its threads started them."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(stat.parent.name)
    return found


def test_the_world_size_sentences_name_the_batch_that_keeps_it_or_that_none_does_and_every_node(tmp_path,
                                                                                               monkeypatch):
    """A user test: 2 -> 3 processes (32 -> 48 faces) said no word of train.batch_size, which the
    README promised; and the way on named --nproc_per_node alone where two machines trained it."""
    from types import SimpleNamespace

    from facemtl.training.runfolder import check_world_size
    from facemtl.training.trainer import Trainer

    state = {"world_size": 2, "config": {"train": {"batch_size": 16}}}
    assert check_world_size("run", state, 3, 16, True).endswith(
        "the global batch changes from 32 to 48 faces (no train.batch_size keeps 32 on 3 processes) and the result "
        "differs from a run never stopped")
    assert "(train.batch_size=8 would keep it)" in check_world_size("run", state, 4, 16, True)
    with pytest.raises(Exception, match=r"resume it on 2 processes in all \(torchrun: --nnodes x --nproc_per_node"):
        check_world_size("run", state, 1, 16, False)
    (tmp_path / "last.pt").write_bytes(b"")
    run = SimpleNamespace(out=tmp_path, dist=SimpleNamespace(world=2))  # (what _next_step reads of a trainer)
    for local, same in (("2", "(the same --nproc_per_node)"), ("1", "(the same --nnodes and --nproc_per_node)")):
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local)  # (1: two machines of one process each)
        assert Trainer._next_step(run).endswith(f"continue with --resume on 2 processes {same}")
