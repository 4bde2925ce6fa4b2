"""What a training checkpoint holds and how a resume reads it back: the :class:`Checkpointing`
part of :class:`~facemtl.training.trainer.Trainer` (kept apart from the loop itself).

A full state (``last.pt``) adds to the model's everything ``--resume`` needs: the optimiser,
the learning-rate schedule (rescaled when a resume runs on another number of processes),
the weighting, the random generators of every process and the callbacks' states by class.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from ..checkpoint import load_checkpoint
from ..data.dataset import DATA_CHANGE_ENV, accept_data_change
from ..epochlog import truncate_epochs
from ..model.load import load_weights
from .callbacks import EarlyFreeze, EarlyStopping
from .optim import retune, saved_lrs
from .runfolder import fixed_on_resume, saved_world_size


class Checkpointing:
    """The trainer's checkpoint state and resume. It reads the trainer's ``cfg``, ``tasks``,
    ``model``, ``data``, ``weighting``, ``optimizer``, ``scheduler``, ``generator``,
    ``callbacks``, ``dist``, ``out``, ``log``, epoch bookkeeping and ``_last`` (the
    ``last.pt`` read before the data)."""

    def state(self, full: bool, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        """What a checkpoint holds: config, task specs, weights and bookkeeping (``epoch``: epochs
        finished; ``best_epoch``: the number, from 1, of the best one, whose weights ``best.pt``
        holds); with ``full``, also everything ``--resume`` needs (optimiser, schedule,
        weighting, generators, callbacks)."""
        state: dict[str, Any] = {
            "config": self.cfg.to_dict(),
            "tasks": [t.to_dict() for t in self.tasks],
            "model": self.model.state_dict(),
            "frozen": sorted(self.model.frozen_tasks),
            "epoch": self.epoch,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "epochs_from": 1,
            "baselines": self.data.baselines,
            "weights": self.weighting.weights(),
            # the splits' faces and labels: --resume refuses other data, and evaluate other splits
            "data_fingerprint": self.data_fingerprint,
            # the tasks whose labels stratified the split (a grid's whole recipe): evaluate and
            # --resume draw it again from them (data.dataset.split_as_trained)
            "split_tasks": self.data.split_tasks or [t.to_dict() for t in self.tasks],
        }
        if metrics is not None:
            state["val_metrics"] = metrics
        if full:
            state.update(
                world_size=self.dist.world,  # a resume on another number of processes is refused unless accepted
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                weighting=self.weighting.state_dict(),
                weighting_extra=self.weighting.extra_state(),
                generator=self.generator.get_state(),
                generators=self.dist.gather(self.generator.get_state()),
                torch_rng=torch.get_rng_state(),
                callbacks=[cb.state_dict() for cb in self.callbacks],
                # whose each state is: a resume may add or drop early stopping or freezing (train.*)
                callback_names=[_class_name(type(cb)) for cb in self.callbacks],
            )
        return state

    def _check_same_data(self) -> None:
        """Refuse a resume over other faces or labels than the run started with (a manifest
        edited or re-ordered since: ``data.limit`` and the split would pick other faces, and
        test faces could be trained on), unless :data:`DATA_CHANGE_ENV` accepts it."""
        then = (self._last or {}).get("data_fingerprint")
        if not then or then == self.data_fingerprint:  # (a last.pt written before 2026-11-27 records none)
            return
        changed = ", ".join(f"{k} {then.get(k, {}).get('faces')} -> {v['faces']} faces"
                            if then.get(k, {}).get("faces") != v["faces"]
                            else f"{k} (other files or labels)" for k, v in self.data_fingerprint.items()
                            if then.get(k) != v)
        said = (f"the data changed since this run started ({changed}): going on would train and score on other "
                "faces than its first epochs; start it again with --overwrite (from Python: overwrite=True), or set "
                f"{DATA_CHANGE_ENV}=1 to go on anyway")
        accept_data_change(said, "going on", self.log)

    def _resume(self) -> None:
        path = self.out / "last.pt"  # read in __init__, before the data was
        state, self._last = self._last or load_checkpoint(path), None
        for name in state.get("frozen", []):
            self.model.freeze(name)
        load_weights(self.model, state["model"], path)
        self.weighting.load_state_dict(state["weighting"])
        self.weighting.load_extra_state(state.get("weighting_extra", {}))
        fixed_on_resume(state.get("config"), self.cfg.to_dict(), path)  # (from Python too: before the state is read)
        self.optimizer.load_state_dict(state["optimizer"])
        self._load_schedule(state)
        retune(self.optimizer, self.scheduler, self.cfg, saved_lrs(state.get("config")))  # this resume's overrides
        ranks = state.get("generators") or [state["generator"]]
        if self.dist.rank < len(ranks):
            self.generator.set_state(ranks[self.dist.rank])
        # else: a process the stopped run did not have (a resume on more processes, accepted) keeps its own seed
        torch.set_rng_state(state["torch_rng"])
        self.epoch = state["epoch"]
        self.best_score, self.best_epoch = state["best_score"], state["best_epoch"]
        if state.get("epochs_from") != 1:  # facemtl 0.1 counted the best epoch from 0 (-1: none)
            self.best_epoch += 1
        # by class (a review: a resume adding train.early_stopping gave Early Freeze its state)
        states = state.get("callbacks", [])
        names = state.get("callback_names") or [_old_callback_name(st) for st in states]
        saved: dict[str, list[Any]] = {}
        for name, cb_state in zip(names, states):
            if name is not None:
                saved.setdefault(name, []).append(cb_state)
        for cb in self.callbacks:
            if saved.get(_class_name(type(cb))):
                cb.load_state_dict(saved[_class_name(type(cb))].pop(0))
        # Epochs logged after last.pt was written (a kill in between) are done again.
        if self.dist.main:
            truncate_epochs(self.out / "metrics.jsonl", self.epoch)
        best = self.out / "best.pt"
        held = load_checkpoint(best).get("epoch") if best.is_file() else None
        if self.dist.main and held != self.best_epoch and held != self.epoch + 1:
            self.log(f"warning: {best.name} holds epoch {held}, not the best epoch {self.best_epoch} that last.pt "
                     f"names; the test split will not be scored unless a later epoch does better")
        self.log(f"resumed from {path} after epoch {self.epoch}")

    def _load_schedule(self, state: dict[str, Any]) -> None:
        """The saved learning-rate schedule, continued. ``OneCycleLR`` keeps this run's length in
        steps (the saved one ended where the stopped run's ``train.epochs`` did, and stepping past
        it fails when a resume raises them). After a resume on another number of processes
        (accepted), which takes more or fewer steps per epoch, the step count moves to this epoch's
        first step at the new ``steps_per_epoch``, so warm-up and decay still end where they were set to."""
        saved = state["scheduler"]
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.load_state_dict(saved)
            return
        own = copy.deepcopy(self.scheduler.state_dict())
        saved = {**saved, **{k: own[k] for k in ("total_steps", "_schedule_phases") if k in own}}
        step = state["epoch"] * self.steps_per_epoch
        rescale = saved_world_size(state) != self.dist.world and state["epoch"] < self.cfg.train.epochs
        if rescale:
            saved.update(last_epoch=step - 1, _step_count=step + 1)  # step() below: the learning rate of that step
        self.scheduler.load_state_dict(saved)
        if rescale:
            self.scheduler.step()


def _class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _old_callback_name(state: Any) -> str | None:
    """Whose a callback state is, in a checkpoint that kept them by position only (before
    2026-11-28): told by its keys (Early Freeze keeps snapshots, early stopping its best score
    and bad epochs); ``None`` for one that needs nothing (the progress bar, the log) or another's."""
    if isinstance(state, dict) and "snapshots" in state:
        return _class_name(EarlyFreeze)
    if isinstance(state, dict) and set(state) == {"best", "bad"}:
        return _class_name(EarlyStopping)
    return None
