"""Training on several processes with PyTorch's own engine: ``torchrun`` + DistributedDataParallel.

``torchrun --nproc_per_node N $(which facemtl) train ...`` starts N copies of the trainer;
each reads its rank and the world size from the environment torchrun sets (``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``) and joins one process
group: NCCL on CUDA, gloo on CPU. :class:`Dist` is what the trainer asks of it; in a plain
``facemtl train`` it is a single process and every call is a no-op, so nothing changes.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.distributed as dist

from ..device import resolve_device


@dataclass
class Dist:
    """This process's place in the run: ``rank`` of ``world`` processes (``backend`` None alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Whether this process writes files (checkpoints, logs): rank 0 only."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src)
        return box[0]

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Each value averaged over the ranks (every rank gets the same numbers)."""
        if not self.active or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        dist.all_reduce(t)
        return {k: float(v) / self.world for k, v in zip(keys, t.tolist())}

    def average_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Average the gradients of parameters DDP does not own (a loss weighting's), so every rank steps alike."""
        if not self.active:
            return
        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad.div_(self.world)

    def sync_buffers(self, module: torch.nn.Module) -> None:
        """Rank 0's buffers (e.g. GradNorm's initial losses) on every rank."""
        if not self.active:
            return
        for b in module.buffers():
            dist.broadcast(b, 0)

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()

    @contextlib.contextmanager
    def guard(self, then: Callable[[], str]) -> Iterator[None]:
        """While the block runs, an error of the process group that says another process of the
        run went away (killed, crashed, cut off: :func:`peer_failure`) becomes a ``RuntimeError``
        in one sentence ending with ``then()``, what to do next, in place of the backend's own
        ("Connection closed by peer ... GLHF!"). Alone, nothing changes."""
        try:
            yield
        except RuntimeError as exc:
            reason = peer_failure(exc) if self.active else None
            if reason is None:
                raise
            raise RuntimeError(f"another process of this run stopped, so process {self.rank} stops too ({reason}); "
                               f"{then()}") from exc


#: What gloo and NCCL say when a peer process is gone (its sockets closed by the kernel, or silent).
_PEER_GONE = ("closed by peer", "reset by peer", "broken pipe", "connection refused", "timed out", "timeout",
              "nccl communicator was aborted", "remote process exited")


def peer_failure(exc: BaseException) -> str | None:
    """The backend's reason, shortened, when ``exc`` is a failed collective operation (a
    ``torch.distributed.DistError``, or a ``RuntimeError`` of gloo or NCCL saying that a peer is
    gone, as DDP's gradient reduction may raise it), else ``None``.

    ``"[.../gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:178: Connection reset by peer.
    This is typically caused by ... GLHF!"`` -> ``"Read error [127.0.0.1]:178: Connection reset by peer"``.
    """
    text = str(exc).strip()
    low = text.lower()
    if not isinstance(exc, dist.DistError) and not (
            ("gloo" in low or "nccl" in low or "processgroup" in low) and any(s in low for s in _PEER_GONE)):
        return None
    first = re.sub(r"^\[[^\]]*\]\s*", "", text.splitlines()[0] if text else "")  # the C++ source location
    first = re.split(r"\.\s+This is typically caused", first)[0].rstrip(". ")
    return (first[:200] + "...") if len(first) > 200 else (first or type(exc).__name__)


def setup(device: str = "auto") -> tuple[Dist, torch.device]:
    """Join the process group torchrun describes (if any) and pick this process's device.

    Alone (no ``WORLD_SIZE`` above 1 in the environment): ``Dist()`` and ``resolve_device(device)``.
    Under torchrun: CUDA device ``LOCAL_RANK`` with NCCL when CUDA is wanted and present,
    else the CPU with gloo.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), resolve_device(device)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        with _stoppable():
            _join(backend, rank, world)
    return Dist(rank, world, local, backend), dev


@contextlib.contextmanager
def _stoppable() -> Iterator[None]:
    """SIGTERM ends the process at once while it waits for the others to join: inside PyTorch's
    C++ wait, Python's handler (a clean stop) cannot run, so when another process stopped before
    joining (rank 0 refused the run folder: in use, already a run), torchrun's SIGTERM went
    unheard for 30 s until its SIGKILL (a user test). Nothing is written before joining, so
    nothing is lost; the process that stopped has said why. (Rank 0, stopped so, leaves its lock
    of the run folder, which the next start takes over with a warning.)"""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.getsignal(signal.SIGTERM)  # (None: a handler not set from Python, which cannot be put back)
    if before is None:
        yield
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _join(backend: str, rank: int, world: int) -> None:
    """``init_process_group`` from the environment torchrun sets."""
    from .runfolder import RESTART_ENV

    restart = os.environ.get(RESTART_ENV, "0")
    if restart in ("", "0"):
        dist.init_process_group(backend, rank=rank, world_size=world)
    else:  # torchrun --max-restarts: the restarted workers' keys apart from the stopped ones'
        # torchrun's store outlives its workers, and the addresses the stopped workers left in it
        # were read by the new ones, whose connections were refused (a user test; pytorch#167288):
        # the store torchrun describes, under a prefix of this start's own
        from torch.distributed.rendezvous import rendezvous

        store, rank, world = next(rendezvous("env://", rank, world))
        dist.init_process_group(backend, store=dist.PrefixStore(f"facemtl/restart_{restart}", store),
                                rank=rank, world_size=world)


def wrap(model: torch.nn.Module, d: Dist, device: torch.device) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when there are several processes, else itself.

    ``find_unused_parameters`` is off: every parameter DDP holds gets a gradient at every step,
    so there is nothing for it to search the graph for (an extra traversal per step, and a
    warning from every process that it found nothing). The cases that look otherwise do not
    leave a parameter out: a task with no label in a batch still sends a zero through its head
    (:func:`facemtl.losses.zero_loss` stays on the graph); drop-path scales a block's output
    rather than skipping it; a training-only task (a teacher's features, soft targets) runs its
    head like any other, or has none of its own; and the parameters Early Freeze freezes (or
    ``model.freeze_backbone``) stop requiring a gradient, which DDP honours only when it is built,
    so the trainer wraps the model again whenever the frozen tasks change. A parameter left
    out by a future change fails loudly (DDP: "Expected to have finished reduction in the prior
    iteration"); ``tests/test_resume_world_size.py`` checks every recipe in ``configs/``.
    """
    if not d.active:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    return DDP(model, device_ids=ids, find_unused_parameters=False)
