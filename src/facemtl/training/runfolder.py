"""A run folder: whether it already holds a run, clearing it for ``--overwrite``, the
settings ``--resume`` continues with, and the lock that keeps two trainers out of one folder.

The lock is the file ``LOCK_NAME`` in the folder, holding the owner's pid, host and start
time, and held with ``fcntl.flock`` for as long as the owner runs. The kernel drops a flock
when its process dies, however it dies, so a lock file whose flock is free was left by a
process that no longer runs (``kill -9``, a crash): it is taken over with a warning. A
lock file written on another machine is not taken over (that trainer may still be running
on a shared folder): the message says which machine, and to delete the file if it is not.
POSIX only (``fcntl``), like the rest of the training tools.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

#: The lock file's name inside the run folder.
LOCK_NAME = "facemtl.lock"

#: The files a training run writes; ``--overwrite`` removes these and nothing else.
RUN_FILES = ("config.yaml", "config.yaml.tmp", "data_report.json", "run_info.json", "metrics.jsonl", "metrics.jsonl.tmp", "last.pt",
             "last.tmp", "best.pt", "best.tmp", "test_metrics.json", "test_predictions.npz")


#: The files whose presence makes a folder a run worth protecting: the work of a finished epoch.
CHECKPOINTS = ("last.pt", "best.pt")

#: The folder ``facemtl report`` writes into a run by default, and a file that shows it wrote it.
REPORT_DIR, REPORT_MARK = "report", "report.md"


class RunFolderError(RuntimeError):
    """A run folder that cannot be used as asked; the message is one sentence."""


def holds_run(folder: str | Path) -> bool:
    """Whether ``folder`` holds a training run worth protecting: a checkpoint (:data:`CHECKPOINTS`),
    a logged epoch (a non-empty ``metrics.jsonl``), test results, or a ``config.yaml`` that no
    trainer wrote (a recipe kept there by hand: no ``run_info.json`` beside it).

    A start that failed before its first epoch ended (a bad setting, a crash in epoch 1)
    leaves the trainer's ``config.yaml``, ``run_info.json`` and a data report but nothing
    ``--resume`` could continue, so such a folder is no run: refusing it would leave no way
    forward but ``--overwrite``.
    """
    folder = Path(folder)
    if any((folder / name).exists() for name in CHECKPOINTS + ("test_metrics.json", "test_predictions.npz")):
        return True
    log = folder / "metrics.jsonl"
    if log.is_file() and log.stat().st_size > 0:
        return True
    return (folder / "config.yaml").exists() and not (folder / "run_info.json").exists()


def clear_run(folder: str | Path) -> None:
    """Remove a previous run's files from ``folder`` (:data:`RUN_FILES`), keeping anything else.
    A report ``facemtl report`` wrote into it (``report/``) is left, with a warning that it is
    stale: the folder may hold files of the user's own."""
    folder = Path(folder)
    for name in RUN_FILES:
        (folder / name).unlink(missing_ok=True)
    if (folder / REPORT_DIR / REPORT_MARK).is_file():
        print(f"facemtl: warning: {folder / REPORT_DIR} describes the run just removed; run 'facemtl report' "
              "again once the new one has trained", file=sys.stderr)


def check_fresh(folder: str | Path, overwrite: bool, clear: bool = True) -> None:
    """Before a new run in ``folder``: refuse when it holds a run, unless ``overwrite`` (then clear it).

    A folder with a failed start's files but no run (:func:`holds_run`) is reused: those files
    (:data:`RUN_FILES` only) are removed, so that they never mix with the new run's.
    ``clear=False`` only refuses, removing nothing: the trainer asks so before it reads the
    data (minutes), and clears once the data and the model are ready.

    An experiment's folder (``experiment.yaml``) is refused whatever ``overwrite`` says: a run
    trained into it was hidden by the report, which read the folder as the grid (a user test).
    """
    if (Path(folder) / "experiment.yaml").is_file():
        raise RunFolderError(f"{folder} holds an experiment grid (experiment.yaml), not a run; choose another --out "
                             "for a training run")
    if not holds_run(folder):
        if clear:
            for name in RUN_FILES:
                Path(folder, name).unlink(missing_ok=True)
        return
    if not overwrite:
        raise RunFolderError(f"{folder} already holds a run; continue it with --resume, start it again with "
                             f"--overwrite, or choose another --out (from Python: Trainer(..., resume=True) or "
                             f"overwrite=True, or another folder)")
    if clear:
        clear_run(folder)


def check_resumable(folder: str | Path) -> None:
    """Before a resumed run: a :class:`RunFolderError` in one sentence when ``folder`` has no
    ``last.pt`` to continue from (checked before the data is read, which can take minutes)."""
    folder = Path(folder)
    if (folder / "last.pt").is_file():
        return
    if not (folder / "config.yaml").is_file():
        raise RunFolderError(f"cannot resume: {folder} holds no run (no config.yaml)")
    if holds_run(folder):  # an epoch logged, or best.pt, but nothing to continue from: a new start is refused too
        raise RunFolderError(f"cannot resume: {folder} holds no last.pt to continue from (it stopped while its first "
                             "epoch was being saved, or last.pt was removed); start it again with --overwrite")
    raise RunFolderError(f"cannot resume: {folder} holds no checkpoint (last.pt), so no epoch of it finished; start "
                         f"it again without --resume (the same --out is accepted)")


#: What torchrun tells the processes it starts: which start of its workers this is (0 the first;
#: more with ``--max-restarts``), and its rendezvous id (a fresh one per ``--standalone`` torchrun).
RESTART_ENV, TORCHRUN_ID_ENV = "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_RUN_ID"
#: How many restarts torchrun was given (``--max-restarts``; 0 by default).
MAX_RESTARTS_ENV = "TORCHELASTIC_MAX_RESTARTS"


def torchrun_restarted(folder: str | Path) -> bool:
    """Whether this process is torchrun's restart (``--max-restarts``) of the run in ``folder``:
    a restart (:data:`RESTART_ENV` over 0) of the same torchrun (its id, :data:`TORCHRUN_ID_ENV`,
    is the last start's in ``run_info.json``) after an epoch ended (``last.pt``). torchrun starts
    its workers again with the command it was given, which names no ``--resume``: such a restart
    is refused as a run already there (a user test), or with ``--overwrite`` would remove the
    epochs this very run trained. Any other folder (another run's, one whose first start was
    refused) is not this run's, and is left to the usual checks. The id must be the launch's own:
    ``--standalone`` draws one; on several machines, ``--rdzv-id`` names it, and torchrun's
    ``none`` (no ``--rdzv-id``) is never taken for a match."""
    return (Path(folder) / "last.pt").is_file() and _this_torchruns(folder)


def torchrun_restarted_unsaved(folder: str | Path) -> bool:
    """Whether this process is torchrun's restart of the run in ``folder`` (as
    :func:`torchrun_restarted`) where no ``last.pt`` was saved: the first epoch was cut short
    after ``best.pt`` was written and before ``last.pt`` was. Nothing can be continued, and the
    folder's files are this very launch's, so the restart starts the run again in place; before,
    the folder was refused as holding a run, and every restart failed (a note's "left" item)."""
    return not (Path(folder) / "last.pt").is_file() and _this_torchruns(folder, other_ranks=False)


def _this_torchruns(folder: str | Path, other_ranks: bool = True) -> bool:
    """A start again of the torchrun whose id the last start in ``folder``'s ``run_info.json``
    records (never torchrun's shared ``none``): a restart after a failure (:data:`RESTART_ENV`
    over 0), or the same torchrun agent starting its workers again because an elastic launch's
    nodes changed (``--nnodes MIN:MAX``: a node joined or left), which torchrun does without
    counting a restart (restart 0 again, a note's "left" item: the run was refused as a run
    already there). Rank 0 decides that by its agent, this process's parent (:func:`torchrun_agent`),
    which the last start recorded; the other ranks by the id alone, since their nodes' agents are
    others and a node may have just joined (a review): where rank 0 refuses the folder, its exit
    stops them (torchrun ends the whole group). Only with ``other_ranks`` (a ``last.pt`` there):
    at a first start, rank 0 may have written ``run_info.json`` already, and the others would
    take the launch's own fresh folder for one to start again."""
    try:
        restart = int(os.environ.get(RESTART_ENV) or 0)
    except ValueError:
        return False
    folder = Path(folder)
    import json

    try:
        starts = json.loads((folder / "run_info.json").read_text()).get("starts") or []
    except (OSError, ValueError, AttributeError):
        return False
    own = os.environ.get(TORCHRUN_ID_ENV, "")
    # "none": torchrun's id when none is given (--rdzv-id), the same for every launch: no sign of this one (a review)
    if own in ("", "none") or not starts or not isinstance(starts[-1], dict) or starts[-1].get("torchrun_id") != own:
        return False
    if restart >= 1:
        return True
    if os.environ.get("RANK", "0") != "0":
        return other_ranks
    return starts[-1].get("torchrun_agent") == torchrun_agent()


def torchrun_agent() -> list[Any] | None:
    """The torchrun agent that started this process (its parent): ``[host, pid, started]``
    (:func:`~facemtl.system.process_start`), as ``run_info.json``
    records it per start; ``None`` outside torchrun or where its start cannot be read. A
    later torchrun of the same ``--rdzv-id`` is another agent, even as process 1 again."""
    from ..system import process_start

    if not os.environ.get(TORCHRUN_ID_ENV):
        return None
    parent = os.getppid()
    started = process_start(parent)
    return None if started is None else [socket.gethostname(), parent, started]


def torchrun_restarts_left() -> int:
    """How many more times torchrun (``--max-restarts``) will start this run's processes again by
    itself after a failure, 0 outside torchrun. A restart continues the run only when torchrun has
    an id of its own for this launch (:func:`torchrun_restarted`), so under the shared ``none``
    (several machines, no ``--rdzv-id``) none is counted. A stop of torchrun itself (Ctrl-C at its
    terminal) restarts nothing, whatever this says."""
    try:
        left = int(os.environ.get(MAX_RESTARTS_ENV) or 0) - int(os.environ.get(RESTART_ENV) or 0)
    except ValueError:
        return 0
    return max(left, 0) if os.environ.get(TORCHRUN_ID_ENV, "") not in ("", "none") else 0


def restart_sentence(folder: str | Path) -> str | None:
    """The way on when torchrun will start the run in ``folder`` again by itself (restarts left):
    from ``last.pt``, or from its beginning when no epoch was saved; else ``None``. "continue with
    --resume" misled there, as torchrun was about to continue it (a note's "left" item)."""
    left = torchrun_restarts_left()
    if not left:
        return None
    plural = "s" if left > 1 else ""
    if (Path(folder) / "last.pt").is_file():
        return (f"torchrun starts it again from last.pt by itself ({left} restart{plural} of --max-restarts left); "
                "if torchrun itself was stopped, continue with --resume")
    return (f"torchrun starts it again from its beginning by itself, as no epoch was saved ({left} restart{plural} of "
            "--max-restarts left); if torchrun itself was stopped, start it again (the same --out)")


#: The environment variable that, set to 1, lets ``--resume`` continue a run on another number of
#: processes than trained it (the global batch changes; see :func:`check_world_size`). An
#: environment variable, so that torchrun hands it to every process it starts.
WORLD_SIZE_ENV = "FACEMTL_ACCEPT_WORLD_SIZE"


def saved_world_size(state: dict[str, Any]) -> int:
    """How many processes trained the checkpoint ``state`` (``last.pt``): its ``world_size``; in
    files written before that was recorded, the number of per-process generators it holds (a
    file with none predates torchrun support, so one process trained it)."""
    if "world_size" in state:
        return int(state["world_size"])
    return max(1, len(state.get("generators") or []))


def _processes(n: int) -> str:
    return "1 process" if n == 1 else f"{n} processes"


def check_world_size(folder: str | Path, state: dict[str, Any], world: int, batch_size: int,
                     accept: bool) -> str | None:
    """Before a resumed run on ``world`` processes of ``batch_size`` faces each: ``None`` when
    ``state`` (its ``last.pt``) was trained by as many; otherwise a :class:`RunFolderError` in
    one sentence naming both numbers and how to go on, or with ``accept``, the warning to print.

    ``train.batch_size`` is per process, so another number of processes changes the global
    batch (the faces one optimiser step sees) and each process's share and random draws: the
    result would no longer be the same as a run never stopped, which ``--resume`` promises.
    """
    saved = saved_world_size(state)
    if saved == world:
        return None
    before = saved * int(((state.get("config") or {}).get("train") or {}).get("batch_size", batch_size))
    after = world * batch_size
    if not accept:
        change = (f"the global batch (train.batch_size is per process) would change from {before} to {after} faces"
                  if before != after else f"the global batch would stay {after} faces but each step would see "
                                          f"other faces, augmented otherwise")
        how = "as one process (facemtl train without torchrun)" if saved == 1 else \
            f"on {saved} processes in all (torchrun: --nnodes x --nproc_per_node = {saved})"
        raise RunFolderError(f"{folder} was trained on {_processes(saved)} and this resume runs {_processes(world)}, "
                             f"so {change} and the result would differ from a run never stopped; resume it {how}, or "
                             f"set {WORLD_SIZE_ENV}=1 to continue on {_processes(world)} anyway")
    if before != after:
        keep = (f" (train.batch_size={before // world} would keep it)" if before % world == 0 else
                f" (no train.batch_size keeps {before} on {_processes(world)})")
        change = f"the global batch changes from {before} to {after} faces{keep}"
    else:
        change = f"the global batch stays {after} faces but each step sees other faces"
    return (f"continuing {folder} on {_processes(world)} though it was trained on {_processes(saved)} "
            f"({WORLD_SIZE_ENV} is set): {change} and the result differs from a run never stopped")


#: Optimiser settings a resume cannot change: the saved state is of one optimiser and schedule (an
#: SGD step on Adam's saved state failed, a user test; OneCycle's state read by another schedule would
#: be neither). The others (``optim.lr``, momentum, weight decay) apply: :func:`~facemtl.training.optim.retune`.
FIXED_ON_RESUME = ("optim.name", "optim.scheduler")

#: Settings a resume may change: where the data lives and how it is read, not which faces, how
#: they are split, labelled or augmented, nor the network (``data.*``, ``tasks``, ``model.*``),
#: nor how the losses are weighed (``weighting.name`` and ``weighting.params``: a review resumed an
#: ``equal`` run as ``fixed``, and its report then named the whole run ``fixed``).
RESUME_MAY_CHANGE = {"data.root", "data.cache", "data.cache_limit_gb", "data.workers", "data.cache_dir"}


def fixed_on_resume(saved: dict[str, Any] | None, settings: dict[str, Any], where: str | Path) -> None:
    """:class:`RunFolderError` when ``settings`` change a setting of :data:`FIXED_ON_RESUME` from
    the ``saved`` ones (the run's, as stopped; ``None``: unknown, nothing to compare)."""
    for k in FIXED_ON_RESUME:
        section, key = k.split(".")
        a = ((saved or {}).get(section) or {}).get(key)
        b = (settings.get(section) or {}).get(key)
        if saved is not None and a is not None and a != b:
            raise RunFolderError(f"{where} was trained with {k}={a!r}; a resume goes on with its saved optimiser and "
                                 f"schedule, which {k}={b!r} cannot take; start a new run for it (another --out, or "
                                 "--overwrite; from Python: overwrite=True)")


def resume_config(folder: str | Path, recipe: str | Path | None, overrides: list[str],
                  data_root: str | None = None) -> Any:
    """The settings a resumed run continues with: its saved ``config.yaml`` plus ``overrides``
    (and ``data_root``, a data folder typed on the command line, relative to the current one).

    A ``recipe`` given as well must describe the same run (with the same overrides);
    otherwise a :class:`RunFolderError` names the settings that differ. The data folder
    must exist (``FileNotFoundError`` naming it otherwise).
    """
    from ..config import load_config, typed_path

    saved = Path(folder) / "config.yaml"
    if not saved.is_file():
        raise RunFolderError(f"cannot resume: {folder} holds no run (no config.yaml)")
    import yaml

    cfg, before = load_config(saved, overrides), load_config(saved)
    # begun before copies were kept together (2026-11-27): its split as it was
    old_split = "group_copies" not in ((yaml.safe_load(saved.read_text()) or {}).get("data") or {})
    if old_split:
        cfg.data.group_copies = before.data.group_copies = False
    if data_root is not None:
        cfg.data.root = typed_path(data_root)
    changed = [(k, a, b) for k, a, b in differences(before.to_dict(), cfg.to_dict())
               if (k.split(".")[0] in ("data", "tasks", "model") or k.startswith(("weighting.name", "weighting.params")))
               and k not in RESUME_MAY_CHANGE]
    fixed_on_resume(before.to_dict(), cfg.to_dict(), folder)
    if changed:
        k, a, b = changed[0]
        raise RunFolderError(f"{folder} was trained with {k}={a!r}; resuming with {k}={b!r} would continue on other "
                             "faces, another network or another weighing of the losses than its epochs so far (a run "
                             "never stopped would not); start a new run for it (another --out, or --overwrite; from Python: overwrite=True)")
    if recipe is not None:
        other = load_config(recipe, overrides)
        if data_root is not None:
            other.data.root = cfg.data.root
        if old_split:  # (a recipe of today's facemtl says nothing of it: the run keeps its split)
            other.data.group_copies = False
        ours, theirs = _tasks_spelled_out(cfg.to_dict()), _tasks_spelled_out(other.to_dict())
        diff = differences(ours, theirs)
        order = [list(x["tasks"]) for x in (ours, theirs) if isinstance(x.get("tasks"), dict)]
        if len(order) == 2 and order[0] != order[1] and sorted(order[0]) == sorted(order[1]):
            diff.append(("tasks (their order)", order[0], order[1]))
        if diff:
            name = Path(recipe).name

            def said(k: str, a: Any, b: Any) -> str:  # a task in one only: named, not spelled out (a user test
                if isinstance(a, dict) and b is None:  # read both whole task lists, 2,175 characters)
                    return f"{k}: in the run, not in {name}"
                if a is None and isinstance(b, dict):
                    return f"{k}: in {name}, not in the run"
                return f"{k}: {a!r} in the run, {b!r} in {name}"

            shown = "; ".join(said(k, a, b) for k, a, b in diff[:3])
            more = f" and {len(diff) - 3} more" if len(diff) > 3 else ""
            raise RunFolderError(f"{folder} was trained with other settings than {recipe} ({shown}{more}); leave out "
                                 f"--config to continue it as it was (section.key=value overrides still apply)")
    if not Path(cfg.data.root).exists():
        from ..data.table import data_place

        if data_root is not None:  # typed on the command line: do not ask for what was just passed
            raise FileNotFoundError(f"the {data_place(data_root)} {data_root} given with --data-root does not exist")
        raise FileNotFoundError(f"{data_place(cfg.data.root)} {cfg.data.root} (from {saved}) does not exist; pass "
                                "--data-root")
    return cfg


def _tasks_spelled_out(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` with each task as its class writes it, defaults included, by name: a recipe
    that leaves a default out (``decoding: threshold``) describes the same run as a saved config
    that spells it, and a difference is said per task and setting (``tasks.age.max_value``)."""
    from ..tasks import build_task

    try:
        tasks = [build_task(dict(t)).to_dict() for t in settings.get("tasks") or []]
    except Exception:  # noqa: BLE001 - a task that cannot be built is compared as written
        return settings
    return {**settings, "tasks": {t.get("name", f"#{i}"): t for i, t in enumerate(tasks)}}


def differences(a: Any, b: Any, key: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, value in a, value in b)`` for every setting that differs (nested mappings, as
    ``Config.to_dict`` gives them)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in list(a) + [k for k in b if k not in a]:
            out += differences(a.get(k), b.get(k), f"{key}.{k}" if key else str(k))
        return out
    return [] if a == b else [(key, a, b)]


class RunLock:
    """The lock of a run folder (see the module docstring); a context manager.

    ``warn``: where the warning about a stale lock goes (default: stderr).
    """

    def __init__(self, folder: str | Path, warn: Callable[[str], None] | None = None) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.warn = warn or (lambda s: print(f"facemtl: warning: {s}", file=sys.stderr))
        self._fd: int | None = None
        self._made_folder = False

    def acquire(self) -> "RunLock":
        # A folder made here and still empty at release (the start failed before writing
        # anything) is removed then, so a failed start leaves nothing behind.
        self._made_folder = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _owner(os.pread(fd, 4096, 0).decode(errors="replace"))
                os.close(fd)
                raise RunFolderError(f"{self.folder} is in use by process {owner.get('pid', '?')} on "
                                     f"{owner.get('host', '?')} (since {owner.get('since', '?')}); wait for it to "
                                     f"end or choose another --out") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the previous owner removed the file as we opened it: open the new one
        previous = _owner(os.pread(fd, 4096, 0).decode(errors="replace"))
        if previous:
            host = socket.gethostname()
            if previous.get("host") not in (None, host):
                os.close(fd)
                raise RunFolderError(f"{self.folder} is locked by process {previous.get('pid', '?')} on "
                                     f"{previous['host']} (since {previous.get('since', '?')}); if no trainer runs "
                                     f"there any more, delete {self.path}")
            self.warn(f"taking over the lock of {self.folder} left by process {previous.get('pid', '?')} "
                      f"(since {previous.get('since', '?')}), which no longer runs")
        text = (f"pid {os.getpid()} host {socket.gethostname()} "
                f"since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # while still holding it, so nobody takes a file about to vanish
        os.close(self._fd)
        self._fd = None
        if self._made_folder:
            with contextlib.suppress(OSError):  # not empty (the run wrote there), or gone: keep it as it is
                self.folder.rmdir()

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _owner(text: str) -> dict[str, str]:
    """``{"pid": ..., "host": ..., "since": ...}`` from a lock file's ``pid N host H since T`` line."""
    words = text.split()
    return {k: v for k, v in zip(words[::2], words[1::2]) if k in ("pid", "host", "since")}
