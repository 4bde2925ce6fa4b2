"""Training events as callbacks, so the loop never names a feature.

Each callback may implement ``on_fit_start(trainer)``, ``on_batch_end(trainer,
batch_losses)`` (per task a detached 0-dim tensor on the training device, or ``None``
when the batch had no label for it: call ``float()`` only when needed, since on a GPU
that waits for the step to finish), ``after_validation(trainer, record)`` (before the best
epoch is chosen; returns whether it changed the weights, which are then validated again),
``on_epoch_end(trainer, record)`` and ``on_fit_end(trainer)``, and ``state_dict`` /
``load_state_dict`` to survive ``--resume``. ``record`` is the epoch's dict that also goes
to ``metrics.jsonl``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ..epochlog import append_epoch


class Callback:
    def on_fit_start(self, trainer: Any) -> None: ...

    def on_batch_end(self, trainer: Any, losses: dict[str, Any]) -> None: ...

    def after_validation(self, trainer: Any, record: dict[str, Any]) -> bool:
        """Called with the epoch's validation metrics before the best epoch is chosen; ``True``
        when it changed the model's weights (Early Freeze restoring a task's best): the trainer
        then validates the model again, and that is what the epoch is scored and kept by."""
        return False

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None: ...

    def on_fit_end(self, trainer: Any) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class JsonlLogger(Callback):
    """Appends one JSON object per epoch (metrics, losses, task weights) to ``metrics.jsonl``
    (:mod:`facemtl.epochlog`)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        append_epoch(self.path, record)


class EarlyStopping(Callback):
    """Stop when the validation score has not improved for ``patience`` epochs."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best = -math.inf
        self.bad = 0

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        score = record["val"]["score"]
        if score > self.best:
            self.best, self.bad = score, 0
        else:
            self.bad += 1
            if self.bad >= self.patience:
                trainer.stop(f"early stopping: no better validation score for {self.patience} epochs")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad": self.bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.bad = state["best"], state["bad"]


class EarlyFreeze(Callback):
    """Thesis Algorithm 1 ("Early Freeze"), per-task patience ``P`` on validation loss.

    For every task not yet frozen: remember the model state at its lowest
    validation loss; when it has not improved for ``P`` epochs, restore the
    shared layers and that task's own layers from that state and freeze them
    (``model.freeze``). The other tasks keep training their own layers on the
    frozen shared features, and are judged afresh on them: their best losses and states
    from before were measured on shared layers that are gone, so a later freeze restores a
    task's own layers to its best on the frozen ones, never the shared layers again (a
    review: a second freeze wrote its older state over the shared layers the first had
    frozen, and the first task's layers then read features they never saw). Two tasks that
    converge in the same epoch freeze together on the first one's shared layers, each with
    its own layers from its best state. The model as restored is validated again before
    the epoch is scored (:meth:`after_validation`), so ``best.pt`` and the test read what
    Early Freeze produced. Training stops when every task is frozen. A task that trains
    another's head (:attr:`Task.output_of`, e.g. soft targets) has no layers to freeze: it
    freezes with that head's task, never by its own patience. Nor does a task whose
    validation loss is not a number (no labelled validation face, or a diverged loss): a NaN
    never improves, so it would freeze the shared layers after ``P`` epochs while the other
    tasks still improve; it is not judged (said once), and training stops when every task
    that is judged is frozen.
    """

    def __init__(self, patience: int, min_delta: float = 0.0) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best: dict[str, float] = {}
        self.bad: dict[str, int] = {}
        self.snapshots: dict[str, dict[str, torch.Tensor]] = {}
        self.frozen_at: dict[str, int] = {}
        self.unjudged: set[str] = set()  # tasks said to have no validation loss (said once each)

    def after_validation(self, trainer: Any, record: dict[str, Any]) -> bool:
        model = trainer.model
        follows = getattr(model, "output_of", {})
        unjudged = set()
        shared_frozen = bool(model.frozen_tasks)
        restored = False
        for name in trainer.task_names:
            if name in model.frozen_tasks or name in follows:
                continue
            loss = record["val"][name]["loss"]
            if not math.isfinite(loss):
                unjudged.add(name)
                if name not in self.unjudged:
                    self.unjudged.add(name)
                    trainer.log(f"warning: early freeze: task {name!r} has no validation loss this epoch (no labelled "
                                "validation face, or its loss diverged); it is not frozen by its own patience")
                continue
            if loss < self.best.get(name, math.inf) - self.min_delta:
                self.best[name], self.bad[name] = loss, 0
                self.snapshots[name] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            else:
                self.bad[name] = self.bad.get(name, 0) + 1
                if self.bad[name] >= self.patience:
                    restored = self._freeze(model, name, shared=not model.frozen_tasks) or restored
                    self.frozen_at[name] = record["epoch"]
        if model.frozen_tasks and not shared_frozen:  # the shared layers froze this epoch: judge the rest afresh
            for name in trainer.task_names:
                if name not in model.frozen_tasks:
                    self.best.pop(name, None)
                    self.bad.pop(name, None)
                    self.snapshots.pop(name, None)
        for name, head in follows.items():
            if head in model.frozen_tasks and name not in model.frozen_tasks:
                model.freeze(name)
                self.frozen_at[name] = record["epoch"]
        record["frozen"] = sorted(model.frozen_tasks)
        judged = set(trainer.task_names) - unjudged - {n for n in follows if follows[n] in unjudged}
        if model.frozen_tasks and judged <= model.frozen_tasks:
            trainer.stop("early freeze: every task has converged" if judged == set(trainer.task_names) else
                         f"early freeze: every task judged has converged ({', '.join(sorted(unjudged))}: no "
                         "validation loss)")
        return restored

    def _freeze(self, model: Any, name: str, shared: bool) -> bool:
        """Restore ``name``'s own layers (and the shared ones, when ``shared``: the first freeze)
        to its best state, parameters and BatchNorm statistics, and freeze them; returns whether
        any weight was restored (no snapshot: its first epoch was its best, or it is judged
        afresh and has none yet)."""
        snap = self.snapshots.pop(name, None)
        restored = False
        if snap is not None:
            mods = (model.shared_modules() if shared else []) + model.own_modules(name)
            prefixes = tuple(n + "." for n, m in model.named_modules() if any(m is k for k in mods))
            state = model.state_dict()
            for key, value in state.items():
                if key.startswith(prefixes):
                    value.copy_(snap[key].to(value.device))
                    restored = True
        model.freeze(name)
        return restored

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad": self.bad, "snapshots": self.snapshots, "frozen_at": self.frozen_at,
                "judged_afresh": True}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.bad = state["best"], state["bad"]
        self.snapshots, self.frozen_at = state["snapshots"], state.get("frozen_at", {})
        if self.frozen_at and not state.get("judged_afresh"):
            # saved before the others were judged afresh after the first freeze: their bests and
            # states were measured on shared layers that are gone; judged from the next epoch on
            for name in [n for n in self.best if n not in self.frozen_at]:
                self.best.pop(name, None)
                self.bad.pop(name, None)
                self.snapshots.pop(name, None)


class ProgressBar(Callback):
    """A tqdm bar per epoch showing the running mean of every task's loss."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar = None
        self.sums: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.n = 0

    def start_epoch(self, epoch: int, epochs: int, total: int) -> None:
        """A bar for epoch number ``epoch`` (from 1) of ``epochs``, ``total`` batches long."""
        if not self.enabled:
            return
        from tqdm import tqdm

        self.sums, self.counts, self.n = {}, {}, 0
        self.bar = tqdm(total=total, desc=f"epoch {epoch}/{epochs}", unit="batch", dynamic_ncols=True)

    def on_batch_end(self, trainer: Any, losses: dict[str, Any]) -> None:
        if self.bar is None:
            return
        self.n += 1
        for k, v in losses.items():
            if v is not None:
                self.sums[k] = self.sums.get(k, 0.0) + v
                self.counts[k] = self.counts.get(k, 0) + 1
        self.bar.update(1)
        if self.n % 10 == 0 or self.n == self.bar.total:  # reading the sums waits for the device
            self.bar.set_postfix({k: f"{float(v) / self.counts[k]:.3f}" for k, v in self.sums.items()}, refresh=False)

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        v = record["val"]
        parts = [f"val score {v['score']:.3f}"]
        parts += [f"{t.name} {t.summary(v[t.name])}" for t in trainer.tasks]
        trainer.log(f"epoch {record['epoch']}: " + ", ".join(parts) + f" ({record['seconds']:.0f} s)")
