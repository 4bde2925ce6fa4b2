"""What a result was measured on (the machine, its processor and the library versions), how a
long command stops on a signal, and which write failures the machine is to blame for."""

from __future__ import annotations

import contextlib
import errno
import io
import math
import os
import platform
import re
import select
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

#: ``errno`` values of a read or write the machine refused (a read-only or full disk, a
#: permission, a quota, an I/O error), as opposed to a mistake in the command (a path through
#: a file, a missing folder): every command ends on these with exit status 1, not 2.
REFUSED_BY_THE_MACHINE = frozenset({errno.EROFS, errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EIO})


def probe_writable(folder: Any) -> None:
    """Raise the ``OSError`` a write into ``folder`` meets (a read-only disk, a permission, a
    full disk) by writing and removing a temporary file there: ``os.access`` says yes to root
    on a read-only disk."""
    import tempfile

    with tempfile.TemporaryFile(dir=folder):
        pass


def check_writable_folder(folder: Any, what: str, filename: Any = None) -> None:
    """Before any work: make and remove a file in ``folder`` (:func:`probe_writable`), because
    ``os.access`` says yes to root in ``/proc`` and ``/sys`` and on a read-only disk, and outputs
    there were refused only after the work (a user test: ``stream --annotate /proc/a.mp4`` after
    the whole stream). ``what`` (``--out x.json``) begins the sentence. The machine's refusal
    (read-only, full, permissions) is an ``OSError`` (exit status 1, as any write it refuses); a
    folder that takes no file at all (``/proc``) a ``ValueError``. ``filename``: the file the
    ``OSError`` names (the output file, not its folder: a user test read "...: ro" for
    ``--output jsonl:ro/a.jsonl``); ``folder`` without it."""
    try:
        probe_writable(folder)
    except OSError as exc:
        if exc.errno in REFUSED_BY_THE_MACHINE:
            raise OSError(exc.errno, f"{what} cannot be written ({exc.strerror})",
                          str(folder if filename is None else filename)) from None
        raise ValueError(f"{what} cannot be written: no file can be made in {folder} ({exc.strerror or exc})") \
            from None


def nearest_existing(path: Any) -> Path:
    """``path``, or the nearest of its parents that exists (where missing folders will be made)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_new_file(path: Any, what: str, filename: Any = None) -> None:
    """:func:`check_writable_folder` for an output file ``path`` written in place, in the nearest
    folder of it that exists; nothing where ``path`` exists (a file, a pipe, ``/dev/stdout``: it is
    opened as it is, whatever its folder takes). ``filename``: what the ``OSError`` names (the
    folder without it)."""
    if not os.path.exists(path):
        check_writable_folder(nearest_existing(path), what, filename)


def hardware(device: Any = None) -> dict[str, Any]:
    """Machine, CPU model and count, the load average, Python and torch versions (when torch
    is installed), and the GPU when there is one."""
    import importlib.util

    from . import __version__

    info: dict[str, Any] = {"machine": platform.machine(), "processor": _cpu_model() or platform.machine(),
                            "cpus": os.cpu_count(), "usable_cores": usable_cores(),
                            "python": platform.python_version(), "facemtl": __version__}
    commit = source_commit()
    if commit:
        info["facemtl_commit"] = commit
    if hasattr(os, "getloadavg"):
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    if importlib.util.find_spec("torch") is not None:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    if device is not None:
        info["device"] = str(device)
    return info


def source_commit() -> str | None:
    """The git commit facemtl runs from (``+`` appended when its files differ from it), where it
    runs from a git checkout (an editable install); ``None`` for an installed package or without
    git. What a run or a benchmark was made with, beside the version (a review: runs recorded
    neither)."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "--show-toplevel", "HEAD"], capture_output=True,
                              text=True, timeout=5)
        lines = head.stdout.split()
        if head.returncode != 0 or len(lines) != 2 or not (Path(lines[0]) / "src" / "facemtl").resolve() == here:
            return None  # (not facemtl's own checkout: a package installed inside another repository)
        dirty = subprocess.run(["git", "-C", lines[0], "status", "--porcelain", "--untracked-files=no", "--", "src"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return lines[1] + ("+" if dirty.stdout.strip() else "")


def process_start(pid: int) -> str | None:
    """When process ``pid`` of this machine started, as a text to compare for equality; ``None``
    where it does not run or this cannot be read. With the host name and the number it names
    one process, whose number a later one may hold: a container restarted after a kill runs as
    process 1 again. A store session records its writer's, a training start its torchrun's.

    On Linux ``<boot id>:<clock ticks from the boot to its start>`` (``/proc``), which no clock
    step changes. psutil's ``create_time`` there is the boot time read from the clock now plus
    those ticks, so a clock stepped by NTP (a device without a real-time clock, a VM resumed)
    made a live writer another process, and the next writer ended its session (a review).
    Elsewhere psutil's ``create_time`` (macOS and Windows record the start itself), in seconds;
    ``None`` without psutil (the ``serve`` and ``train`` extras bring it)."""
    if os.path.isdir("/proc/self"):  # (Linux; psutil reads the same files, but adds the clock's boot time)
        try:
            stat = Path(f"/proc/{int(pid)}/stat").read_bytes()
            boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
            return f"{boot}:{int(stat[stat.rindex(b')') + 2:].split()[19])}"  # (field 22, starttime)
        except FileNotFoundError:  # it does not run
            return None
        except (OSError, ValueError, IndexError, OverflowError):
            pass  # (an unusual /proc: psutil below)
    try:
        import psutil  # (a maintained library: a process's start on macOS and Windows alike)
    except ImportError:
        return None
    try:
        return f"{psutil.Process(int(pid)).create_time():.3f}"
    except (psutil.Error, OSError, ValueError, OverflowError):
        return None


def usable_cores() -> int:
    """CPU cores this process may use: those it may run on (its affinity where the OS says, else
    all), at most its control group's CPU quota rounded up (Docker's ``--cpus``, a Kubernetes
    limit). A user test: in a one-CPU container on a 16-core host, threads for 16 cores ran
    throttled, slower than one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cpu_quota()
    return max(1, min(cores, math.ceil(quota))) if quota is not None else cores


def cpu_quota(proc_cgroup: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup") -> float | None:
    """The CPUs' worth of time this process's control group may use (quota / period, the
    smallest along its path), or ``None`` when there is no quota or no cgroup file says.

    cgroup v2 writes ``cpu.max`` (``150000 100000``, or ``max 100000``); v1 ``cpu.cfs_quota_us``
    (``-1``: none) and ``cpu.cfs_period_us``. Python's ``os.process_cpu_count`` reads the
    affinity only and no maintained library reads these, hence this reader. A container sees its
    own group at the mount's root while ``/proc/self/cgroup`` may name the host's path, so each
    level from the named folder up to the root is looked at."""
    try:
        with open(proc_cgroup) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    found: list[float] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # v2: one hierarchy
            bases = [root]
        elif "cpu" in controllers.split(","):  # v1: the cpu controller's own hierarchy
            bases = [f"{root}/{controllers}", f"{root}/cpu", f"{root}/cpu,cpuacct"]
        else:
            continue
        rel = [p for p in path.strip("/").split("/") if p]
        for base in dict.fromkeys(bases):
            for depth in range(len(rel), -1, -1):
                folder = "/".join([base, *rel[:depth]])
                q = _v2_quota(folder) if controllers == "" else _v1_quota(folder)
                if q is not None:
                    found.append(q)
    return min(found) if found else None


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _v2_quota(folder: str) -> float | None:
    text = (_read(f"{folder}/cpu.max") or "").split()
    try:
        return int(text[0]) / int(text[1]) if len(text) == 2 and text[0] != "max" and int(text[1]) > 0 else None
    except ValueError:
        return None


def _v1_quota(folder: str) -> float | None:
    try:
        quota, period = int(_read(f"{folder}/cpu.cfs_quota_us") or -1), int(_read(f"{folder}/cpu.cfs_period_us") or 0)
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says memory ran out: Python's and NumPy's ``MemoryError``, ONNX Runtime's
    "Failed to allocate memory", PyTorch's "can't allocate memory", C++'s ``bad_alloc``."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return any(w in text for w in ("failed to allocate memory", "can't allocate memory", "bad_alloc",
                                   "out of memory", "cannot allocate memory"))


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


#: Exit statuses of a command stopped by a signal (the shell's 128 + the signal's number).
SIGNAL_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}


class SignalAbort(KeyboardInterrupt):
    """A second stop signal while the first is being honoured: abort now. ``status``: the exit
    status the signal asks for (:data:`SIGNAL_STATUS`: 130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.status = SIGNAL_STATUS[signum]


def loader_killed_by(exc: BaseException) -> int | None:
    """The signal number when ``exc`` is PyTorch's error for a DataLoader worker process killed
    by a signal (``DataLoader worker (pid 123) is killed by signal: Terminated.``), else ``None``.

    A stop signal sent to a process group (torchrun stopping a run, a shell's Ctrl-C) reaches
    the loader processes too, and PyTorch raises this in the main process, often before the
    main process's own handler has run: the stop is then this signal, not an error."""
    import re

    m = re.search(r"DataLoader worker \(pid.*?\) is killed by signal: ([^.]+)", str(exc))
    if m is None:
        return None
    names = {signal.strsignal(s): s for s in signal.valid_signals() if signal.strsignal(s)}
    return names.get(m.group(1).strip())


def loader_killed(exc: BaseException) -> str | None:
    """One sentence for a DataLoader process killed by a signal other than a stop (see
    :func:`loader_killed_by`), saying what usually does it; ``None`` for any other error."""
    signum = loader_killed_by(exc)
    if signum is None:
        # PyTorch's other wording, when it finds the process gone before its signal handler tells
        # it how (a user test: kill -9 of a loader process said only this, with no way on)
        if re.search(r"DataLoader worker \(pid\(s\) [^)]*\) exited unexpectedly", str(exc)):
            return "a data loader process ended unexpectedly (killed? out of memory? fewer data.workers need less)"
        return None
    why = {signal.SIGKILL: "out of memory? fewer data.workers need less",
           signal.SIGBUS: "shared memory (/dev/shm) ran out: a container's is small by default (docker run "
                          "--shm-size 2g), or use fewer data.workers"}.get(signum, "")
    name = signal.Signals(signum).name
    return f"a data loader process was killed ({name}{': ' + why if why else ''})"


@contextlib.contextmanager
def stop_on_signals(on_first: Callable[[int], None]) -> Iterator[list[int]]:
    """SIGINT (Ctrl-C) and SIGTERM ask a long command to stop cleanly while this block runs.

    The first signal calls ``on_first(signum)`` (which should make the work end soon, keeping
    what is done); a second raises :class:`SignalAbort` (a ``KeyboardInterrupt``) to abort.
    Yields the list of signals received (empty when none; ``SIGNAL_STATUS[received[0]]`` is
    then the exit status). Off the main thread, where Python cannot install handlers, nothing
    is installed. The previous handlers come back when the block ends.
    """
    received: list[int] = []

    def handler(signum: int, _frame: Any) -> None:
        if received:
            raise SignalAbort(signum)
        received.append(signum)
        on_first(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, handler) for sig in SIGNAL_STATUS}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM received while the block runs act once it has ended, as they would have
    acted then (sent again to this process: the handlers outside the block answer); a second one
    acts at once (:class:`SignalAbort`). For a few steps that must not be cut apart: an epoch's
    log line and its checkpoints (a user test: Ctrl-C between them left a run that neither
    --resume nor a new start would take). Off the main thread nothing is deferred."""
    with stop_on_signals(lambda signum: None) as received:
        yield
    if received:
        signal.raise_signal(received[0])


@contextlib.contextmanager
def abort_on_signals() -> Iterator[None]:
    """While the block runs, SIGTERM (like SIGINT) raises :class:`SignalAbort` at once.

    For commands with nothing to finish gracefully (``train``, ``experiment``): Python's
    default SIGTERM ends the process at once, skipping every ``finally`` and ``with`` exit,
    so a run folder kept its lock file and nobody was told how to go on. Raised as a
    ``KeyboardInterrupt`` instead, it unwinds as Ctrl-C does: the lock is released, the epoch
    in progress is lost (``last.pt``, replaced atomically at each epoch's end, holds the one
    before), and the command line names the next step and exits with :data:`SIGNAL_STATUS`
    (143 for SIGTERM, 130 for SIGINT).
    """

    def abort(signum: int) -> None:
        raise SignalAbort(signum)

    with stop_on_signals(abort) as received:
        try:
            yield
        except Exception as exc:
            if received:  # the stop's SignalAbort, raised inside a library that made it its own error
                raise SignalAbort(received[0]) from None  # (torch.export in a half-done import: a user test
            # read "Failed to export the model with torch.export", exit 2, for a Ctrl-C)
            # a stop sent to the whole process group (torchrun's, a terminal's Ctrl-C) reaches the
            # DataLoader processes too, and PyTorch may say so before this process's handler runs
            signum = loader_killed_by(exc) if isinstance(exc, RuntimeError) else None
            if signum in SIGNAL_STATUS:
                raise SignalAbort(signum) from None
            raise


def stdout_closed() -> bool:
    """Whether the reader of standard output has gone (``facemtl ... | head`` after head's lines):
    a pipe whose reading end is closed polls as an error. False when stdout is no such pipe."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):  # no poll(), or a test's StringIO
        return False


def quiet_stdout() -> None:
    """Point stdout at /dev/null once it can no longer be written (its reader gone, a full disk),
    so that Python's flush at exit adds no second error; what was written before stays."""
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
    with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):  # not a file: a test's StringIO
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
