"""The training loop. It never asks which task, backbone or weighting it runs.

One step: decode a batch from the cache, augment it, run the model, ask each
task for its masked loss, let the weighting combine them, step the optimiser.
Around it, callbacks log, checkpoint, stop early or freeze tasks early.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import Config
from ..data.augment import augment
from ..data.dataset import DataBundle, balance_weights, build_data, label_columns
from ..device import resolve_device, seed_everything, to_device
from ..jsonutil import dumps
from ..losses import labelled
from ..model import MultiTaskNet
from ..preprocess import to_input
from ..system import hardware
from ..tasks import build_task
from ..weighting import build_weighting
from .callbacks import Callback, EarlyFreeze, EarlyStopping, JsonlLogger, ProgressBar
from .evaluation import predict_set, score_predictions
from .optim import build_optimizer, build_scheduler


class Trainer:
    """Builds everything from a :class:`Config` and trains into ``out_dir``.

    Files written: ``config.yaml`` (resolved settings), ``data_report.json``,
    ``metrics.jsonl`` (one line per epoch), ``last.pt`` (every epoch, for
    ``--resume``), ``best.pt`` (best validation score).
    """

    def __init__(
        self,
        cfg: Config,
        out_dir: str | Path,
        resume: bool = False,
        progress: bool = True,
        log: Callable[[str], None] = print,
        data: DataBundle | None = None,
        callbacks: list[Callback] | None = None,
    ) -> None:
        self.cfg = cfg
        self.out = Path(out_dir)
        self.log = log
        t = cfg.train
        seed_everything(t.seed)
        if t.threads:
            torch.set_num_threads(t.threads)
        self.device = resolve_device(t.device)
        if self.device.type == "cuda":
            # Fixed input size: let cuDNN pick the fastest convolution algorithms once.
            torch.backends.cudnn.benchmark = True
        self.tasks = [build_task(s) for s in cfg.tasks]
        self.task_names = [x.name for x in self.tasks]
        self.label_columns = label_columns(self.tasks)
        self.data = data if data is not None else build_data(cfg.data, self.tasks, t.seed)
        if t.balance_by:
            self.data.train.sample_weights, balance = balance_weights(self.data.train.attributes, self.tasks, t.balance_by)
            self.log(f"balanced sampling by {' x '.join(t.balance_by)}: {balance['cells']} cells of "
                     f"{balance['smallest_cell']} to {balance['largest_cell']} training images, drawn equally often")
        # Seed again: the initial weights depend on the seed only, not on whether the
        # data was read here or handed over (experiment grids read it once).
        seed_everything(t.seed)
        self.model = MultiTaskNet.from_config(cfg.model, self.tasks).to(self.device)
        if cfg.model.freeze_backbone:
            self.model.freeze_backbone()
        self.channels_last = cfg.model.channels_last
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.weighting = build_weighting(cfg.weighting.name, self.task_names, cfg.weighting.params).to(self.device)
        self.optimizer = build_optimizer(cfg, self.model, self.weighting)
        self.steps_per_epoch = max(1, len(self.data.train) // t.batch_size)
        if t.max_batches:
            self.steps_per_epoch = min(self.steps_per_epoch, t.max_batches)
        self.scheduler = build_scheduler(cfg, self.optimizer, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda", enabled=t.amp and self.device.type == "cuda")
        self.progress = ProgressBar(progress)
        self.callbacks: list[Callback] = []
        if t.early_stopping:
            self.callbacks.append(EarlyStopping(t.early_stopping))
        if t.early_freeze:
            self.callbacks.append(EarlyFreeze(t.early_freeze))
        self.callbacks += callbacks or []
        # Last, so they see what the others added to the epoch's record.
        self.callbacks += [self.progress, JsonlLogger(self.out / "metrics.jsonl")]
        self.epoch = 0
        self.best_score = -float("inf")
        self.best_epoch = -1
        self._stop_reason: str | None = None
        self.generator = torch.Generator().manual_seed(t.seed)
        #: The split epochs are scored on: the validation split, or the training split when it is empty.
        self.val_split = "val" if len(self.data.val) else "train"
        if self.val_split == "train":
            self.log("warning: the validation split is empty, so epochs are scored and the best one is chosen on "
                     "the training split (raise data.val_fraction to hold images out)")
        self.out.mkdir(parents=True, exist_ok=True)
        if resume:
            self._resume()
        else:
            (self.out / "metrics.jsonl").unlink(missing_ok=True)

    # -- set-up -----------------------------------------------------------------
    def stop(self, reason: str) -> None:
        self._stop_reason = reason

    # -- loop -------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        if self.epoch == 0:
            (self.out / "config.yaml").write_text(_dump_yaml(cfg.to_dict()))
            (self.out / "data_report.json").write_text(dumps(self.data.report, indent=2))
            info = {"hardware": hardware(self.device), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "val_split": self.val_split}
            (self.out / "run_info.json").write_text(json.dumps(info, indent=1))
        for cb in self.callbacks:
            cb.on_fit_start(self)
        while self.epoch < cfg.train.epochs and self._stop_reason is None:
            t0 = time.perf_counter()
            train_losses, n_images = self.train_epoch()
            train_seconds = time.perf_counter() - t0
            val = self.validate()
            self.weighting.epoch_end(train_losses)
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.step(sum(val[t]["loss"] for t in self.task_names))
            record = {
                "epoch": self.epoch,
                "train": {"loss": train_losses, "images_per_s": n_images / max(train_seconds, 1e-9)},
                "val": val,
                "weights": self.weighting.weights(),
                "lr": self.optimizer.param_groups[0]["lr"],
                "seconds": time.perf_counter() - t0,
            }
            normalised = self.weighting.normalised()
            if normalised is not None:
                record["weights_normalised"] = normalised
            improved = val["score"] > self.best_score
            if improved:
                self.best_score, self.best_epoch = val["score"], self.epoch
            record["best_epoch"] = self.best_epoch
            for cb in self.callbacks:
                cb.on_epoch_end(self, record)
            self.epoch += 1
            save_checkpoint(self.state(full=True), self.out / "last.pt")
            if improved:
                save_checkpoint(self.state(full=False, metrics=val), self.out / "best.pt")
        if self._stop_reason:
            self.log(self._stop_reason)
        for cb in self.callbacks:
            cb.on_fit_end(self)
        return {"best_epoch": self.best_epoch, "best_score": self.best_score, "epochs_run": self.epoch,
                "val_split": self.val_split}

    def train_epoch(self) -> tuple[dict[str, float], int]:
        self.model.train()
        self.weighting.train()
        t = self.cfg.train
        self.progress.start_epoch(self.epoch, t.epochs, self.steps_per_epoch)
        # Summed on the device and read once per epoch: reading a GPU loss every step
        # would make the host wait for the device at every step.
        sums: dict[str, torch.Tensor | float] = {n: 0.0 for n in self.task_names}
        counts = {n: 0 for n in self.task_names}
        seen = 0
        batches = self.data.train.batches(t.batch_size, shuffle=True, generator=self.generator, drop_last=True)
        for step, (images, labels) in enumerate(batches):
            if step >= self.steps_per_epoch:
                break
            losses = self.train_step(images, labels)
            seen += len(images)
            for n, v in losses.items():
                if v is not None:
                    sums[n] = sums[n] + v
                    counts[n] += 1
            for cb in self.callbacks:
                cb.on_batch_end(self, losses)
        return {n: float(sums[n]) / max(1, counts[n]) for n in self.task_names}, seen

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """One optimiser step on a batch ``uint8 (B, 3, S, S)``, labels ``(B, T)`` (on the CPU).

        Returns each task's loss as a detached 0-dim tensor on the training device
        (``None`` when no image of the batch has that task's label).
        """
        cols = self.label_columns
        # which rows each task may learn from, known on the host
        rows = torch.stack([labelled(labels[:, c]) for c in cols], 1) if cols else torch.zeros(len(labels), 0, dtype=torch.bool)
        x = to_input(images, self.device, False)
        x = augment(x, self.cfg.data.augment, self.generator)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        labels = to_device(labels, self.device)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, enabled=self.scaler.is_enabled()):
            out = self.model(x)
        losses = {t.name: t.loss(out[t.name].float(), labels[:, c], rows[:, j])
                  for j, (t, c) in enumerate(zip(self.tasks, cols))}
        total = self.weighting(losses, self.model)
        self.scaler.scale(total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.weighting.after_step()
        if not isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step()
        has = rows.any(0).tolist()
        return {t.name: (losses[t.name].detach() if has[j] else None) for j, t in enumerate(self.tasks)}

    def test(self) -> dict[str, Any] | None:
        """Score the best epoch on the test split; write ``test_metrics.json`` and ``test_predictions.npz``.

        The predictions file holds, per task, ``pred/<task>`` ``(N,)``, ``true/<task>`` and
        ``prob/<task>`` ``(N, C)`` where the task has class probabilities, plus every label
        column of the data as ``attr/<column>`` and the image paths, so that reports
        (confusion matrices, subgroup tables, Grad-CAM samples) never run the model again.
        Returns the metrics, or ``None`` when the data has no test split.
        """
        part = self.data.test
        if len(part) == 0:
            return None
        best = self.out / "best.pt"
        if best.is_file():
            self.model.load_state_dict(load_checkpoint(best)["model"])
        t0 = time.perf_counter()
        res = predict_set(self.model, part, self.tasks, self.device, self.cfg.train.eval_batch_size, self.channels_last)
        metrics = score_predictions(res, self.tasks, self.data.baselines)
        metrics["_info"] = {"split": "test", "images": len(part), "best_epoch": self.best_epoch,
                            "seconds": time.perf_counter() - t0}
        arrays: dict[str, np.ndarray] = {"paths": np.asarray(part.paths, dtype=str)}
        for t in self.tasks:
            arrays[f"pred/{t.name}"] = res["pred"][t.name]
            arrays[f"true/{t.name}"] = res["true"][t.name]
            if res["prob"][t.name] is not None:
                arrays[f"prob/{t.name}"] = res["prob"][t.name].astype(np.float32)
        for k, v in part.attributes.items():
            if v.ndim == 1:  # vectors (teacher features) stay out: they are no grouping column
                arrays[f"attr/{k}"] = v
        np.savez_compressed(self.out / "test_predictions.npz", **arrays)
        (self.out / "test_metrics.json").write_text(dumps(metrics, indent=1))
        return metrics

    def validate(self) -> dict[str, Any]:
        part = self.data.split(self.val_split)
        res = predict_set(self.model, part, self.tasks, self.device, self.cfg.train.eval_batch_size, self.channels_last)
        return score_predictions(res, self.tasks, self.data.baselines)

    def state(self, full: bool, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        """What a checkpoint holds: config, task specs, weights and bookkeeping; with ``full``,
        also everything ``--resume`` needs (optimiser, schedule, weighting, generators, callbacks)."""
        state: dict[str, Any] = {
            "config": self.cfg.to_dict(),
            "tasks": [t.to_dict() for t in self.tasks],
            "model": self.model.state_dict(),
            "frozen": sorted(self.model.frozen_tasks),
            "epoch": self.epoch,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "baselines": self.data.baselines,
            "weights": self.weighting.weights(),
        }
        if metrics is not None:
            state["val_metrics"] = metrics
        if full:
            state.update(
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                weighting=self.weighting.state_dict(),
                weighting_extra=self.weighting.extra_state(),
                generator=self.generator.get_state(),
                torch_rng=torch.get_rng_state(),
                callbacks=[cb.state_dict() for cb in self.callbacks],
            )
        return state

    def _resume(self) -> None:
        path = self.out / "last.pt"
        if not path.is_file():
            raise FileNotFoundError(f"cannot resume: no checkpoint at {path}")
        state = load_checkpoint(path)
        for name in state.get("frozen", []):
            self.model.freeze(name)
        self.model.load_state_dict(state["model"])
        self.weighting.load_state_dict(state["weighting"])
        self.weighting.load_extra_state(state.get("weighting_extra", {}))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.epoch = state["epoch"]
        self.best_score, self.best_epoch = state["best_score"], state["best_epoch"]
        for cb, cb_state in zip(self.callbacks, state.get("callbacks", [])):
            cb.load_state_dict(cb_state)
        self.log(f"resumed from {path} at epoch {self.epoch + 1}")


def _dump_yaml(d: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False)
