"""What a result was measured on (the machine, its processor and the library versions), how a
long command stops on a signal, and which write failures the machine is to blame for."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import platform
import select
import signal
import sys
import threading
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


def hardware(device: Any = None) -> dict[str, Any]:
    """Machine, CPU model and count, the load average, Python and torch versions (when torch
    is installed), and the GPU when there is one."""
    import importlib.util

    info: dict[str, Any] = {"machine": platform.machine(), "processor": _cpu_model() or platform.machine(),
                            "cpus": os.cpu_count(), "usable_cores": usable_cores(),
                            "python": platform.python_version()}
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


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity where the OS says, else all)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


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

    with stop_on_signals(abort):
        try:
            yield
        except RuntimeError as exc:
            # a stop sent to the whole process group (torchrun's, a terminal's Ctrl-C) reaches the
            # DataLoader processes too, and PyTorch may say so before this process's handler runs
            signum = loader_killed_by(exc)
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
