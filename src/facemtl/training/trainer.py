"""The training loop. It never asks which task, backbone or weighting it runs.

One step: decode a batch from the cache, augment it, run the model, ask each
task for its masked loss, let the weighting combine them, step the optimiser.
Around it, callbacks log, checkpoint, stop early or freeze tasks early.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import yaml

from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import Config, check_recipe, check_task_names
from ..data.augment import augment
from ..data.dataset import (
    DataBundle,
    balance_weights,
    data_fingerprint,
    faces_id,
    fit_to_training,
    label_columns,
    split_as_trained,
)
from ..device import seed_everything, to_device
from ..jsonutil import dumps, dumps_strict
from ..losses import labelled
from ..model import BACKBONES, MultiTaskNet
from ..preprocess import to_input
from ..system import hardware, out_of_memory, signals_deferred
from ..tasks import adopt_level_names, build_task, check_named_ranges
from ..weighting import WEIGHTINGS, build_weighting
from . import distributed
from .callbacks import Callback, EarlyFreeze, EarlyStopping, JsonlLogger, ProgressBar
from .checkpointing import Checkpointing
from .evaluation import merge_predictions, predict_set, score_predictions
from .optim import build_optimizer, build_scheduler
from .runfolder import (
    TORCHRUN_ID_ENV,
    WORLD_SIZE_ENV,
    check_fresh,
    check_resumable,
    check_world_size,
    restart_sentence,
    torchrun_agent,
)


class TrainingDiverged(RuntimeError):
    """An epoch's loss was not a finite number (NaN or infinite): training stops, saying which."""


@contextlib.contextmanager
def _naming(what: str) -> Iterator[None]:
    """Say ``what`` failed, in front of the framework's own words: a loss or weighting of one's own
    that fails raised PyTorch's sentence about tensor sizes, which names neither (a user test).
    Running out of memory and a missing method (the command line names its class) pass as they are."""
    try:
        yield
    except NotImplementedError:
        raise
    except Exception as exc:
        if out_of_memory(exc):
            raise
        raise ValueError(f"{what} failed: {type(exc).__name__}: {exc}") from exc


class Trainer(Checkpointing):
    """Builds everything from a :class:`Config` and trains into ``out_dir``.

    A new run (``resume=False``) refuses a folder that already holds one unless
    ``overwrite``, which removes the old run's files first (:mod:`.runfolder`).

    Files written: ``config.yaml`` (resolved settings), ``data_report.json``,
    ``metrics.jsonl`` (one line per epoch, :mod:`facemtl.epochlog`), ``last.pt`` (every
    epoch, for ``--resume``), ``best.pt`` (best validation score).

    Epochs are numbered from 1 everywhere: ``epoch`` is the number of epochs finished,
    ``best_epoch`` the number of the best one (0 before any). ``best.pt`` is written before
    ``last.pt``, and ``last.pt`` records which epoch ``best.pt`` must hold, so a run killed
    between the two saves redoes that epoch on ``--resume``, and :meth:`test` refuses a
    ``best.pt`` that holds any other epoch than the one the summary names.

    A resume runs on as many processes as the run was trained by (``train.batch_size`` is per
    process, so another number changes the global batch): another number is refused before the
    data is read, unless ``accept_world_size`` (default: the environment variable
    :data:`~.runfolder.WORLD_SIZE_ENV` set to 1). ``run_info.json`` keeps the first start's
    fields and lists every start under ``starts`` (time, processes, threads, batch, hardware).
    """

    def __init__(
        self,
        cfg: Config,
        out_dir: str | Path,
        resume: bool = False,
        progress: bool | None = None,
        log: Callable[[str], None] = print,
        data: DataBundle | None = None,
        callbacks: list[Callback] | None = None,
        overwrite: bool = False,
        accept_world_size: bool | None = None,
    ) -> None:
        self.cfg = cfg
        self.out = Path(out_dir)
        t = cfg.train
        seed_everything(t.seed)
        if t.threads:
            torch.set_num_threads(t.threads)
        #: This process's rank among those torchrun started (one process: rank 0 of 1).
        self.dist, self.device = distributed.setup(t.device)
        self.log = log if self.dist.main else (lambda s: None)
        # The run folder is checked before the data is read (minutes on a full data set), so a
        # folder that cannot be used is refused at once.
        self._resumed = resume
        self._last: dict[str, Any] | None = None
        if resume:
            check_resumable(self.out)
            self._last = load_checkpoint(self.out / "last.pt")
            if accept_world_size is None:
                accept_world_size = os.environ.get(WORLD_SIZE_ENV, "").strip().lower() not in ("", "0", "false", "no")
            warning = check_world_size(self.out, self._last, self.dist.world, t.batch_size, accept_world_size)
            if warning:
                self.log(f"warning: {warning}")
        elif self.dist.main:
            check_fresh(self.out, overwrite, clear=False)
        if self.device.type == "cuda":
            # Fixed input size: let cuDNN pick the fastest convolution algorithms once.
            torch.backends.cudnn.benchmark = True
        if not resume:  # (a run resumed goes on with the settings it started with)
            check_recipe(cfg)
        self.tasks = [build_task(s) for s in cfg.tasks]
        self.task_names = [x.name for x in self.tasks]
        self.label_columns = label_columns(self.tasks)
        BACKBONES.get(cfg.model.backbone)  # a misspelt name fails here, before the images are read
        WEIGHTINGS.get(cfg.weighting.name)
        # a resume splits as the run did (a grid variant's split was stratified on the whole recipe)
        self.data = data if data is not None else split_as_trained(
            cfg.data, self.tasks, t.seed, (self._last or {}).get("split_tasks"))
        if not resume:  # (a run resumed goes on with the range it started with)
            check_named_ranges(self.tasks, self.data.report)
        adopt_level_names(self.tasks, self.data.report)
        if not resume:  # a task x_level beside x whose levels the data named (the recipe's check saw none)
            check_task_names(self.task_names, [x.name for x in self.tasks if x.level_names() is not None])
        fitted = fit_to_training(self.tasks, self.data)
        if fitted:  # (recorded in data_report.json)
            self.data.report["fitted"] = fitted
        self.data_fingerprint = data_fingerprint(self.data, self.tasks)
        if resume:
            self._check_same_data()
        if "image_cache" in self.data.report:
            self.log(f"images: {self.data.report['image_cache']}")
        if t.balance_by:
            self.data.train.sample_weights, balance = balance_weights(self.data.train.attributes, self.tasks, t.balance_by)
            self.log(f"balanced sampling by {' x '.join(t.balance_by)}: {balance['cells']} cells of "
                     f"{balance['smallest_cell']} to {balance['largest_cell']} training images, drawn equally often")
        # Seed again: the initial weights depend on the seed only, not on whether the
        # data was read here or handed over (experiment grids read it once).
        seed_everything(t.seed)
        self.model = MultiTaskNet.from_config(cfg.model, self.tasks).to(self.device)
        self.model.check_shapes(cfg.data.image_size)
        if cfg.model.freeze_backbone:
            self.model.freeze_backbone()
        self.channels_last = cfg.model.channels_last
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.weighting = build_weighting(cfg.weighting.name, self.task_names, cfg.weighting.params).to(self.device)
        self.optimizer = build_optimizer(cfg, self.model, self.weighting)
        self._total_sum: torch.Tensor | float = 0.0  # this epoch's weighted totals (train_epoch, _check_finite)
        # Each process takes its share of every epoch (1/world of it), in steps of batch_size; the
        # schedule counts those steps, so its warm-up and decay span the epochs they are set in.
        self.steps_per_epoch = max(1, len(self.data.train) // (self.dist.world * t.batch_size))
        if t.max_batches:
            self.steps_per_epoch = min(self.steps_per_epoch, t.max_batches)
        self.scheduler = build_scheduler(cfg, self.optimizer, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda", enabled=t.amp and self.device.type == "cuda")
        if self.dist.active:
            if self.device.type == "cuda":
                # One batch-norm statistic over every GPU's share of the batch; on the CPU (gloo)
                # PyTorch's SyncBatchNorm refuses, so each process normalises its own share.
                self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            self.log(f"distributed: {self.dist.world} processes ({self.dist.backend}), batch {t.batch_size} per "
                     f"process ({self.dist.world * t.batch_size} in all), {torch.get_num_threads()} torch threads each")
        with self.dist.guard(self._next_step):  # DDP's first broadcast waits for every process
            self.net = distributed.wrap(self.model, self.dist, self.device)
        self._wrapped_frozen = set(self.model.frozen_tasks)
        if progress is None:  # a bar per epoch on a terminal, none drawn into a log file or a notebook's capture
            progress = sys.stderr.isatty()
        self.progress = ProgressBar(progress and self.dist.main)
        self.callbacks: list[Callback] = []
        if t.early_stopping:
            self.callbacks.append(EarlyStopping(t.early_stopping))
        if t.early_freeze:
            self.callbacks.append(EarlyFreeze(t.early_freeze))
        self.callbacks += callbacks or []
        # Last, so they see what the others added to the epoch's record; only rank 0 writes.
        self.callbacks += [self.progress] + ([JsonlLogger(self.out / "metrics.jsonl")] if self.dist.main else [])
        self.epoch = 0
        self.best_score = -float("inf")
        self.best_epoch = 0
        self._stop_reason: str | None = None
        # Augmentation draws (and, alone, the batch order); each rank of a distributed run draws its own.
        self.generator = torch.Generator().manual_seed(t.seed + self.dist.rank)
        #: The split epochs are scored on: the validation split, or the training split when it is empty.
        self.val_split = "val" if len(self.data.val) else "train"
        if self.val_split == "train":
            self.log("warning: the validation split is empty, so epochs are scored and the best one is chosen on "
                     "the training split (raise data.val_fraction to hold images out)")
        if self.dist.main:  # checked above; the old run's files go once everything else is ready (rank 0)
            self.out.mkdir(parents=True, exist_ok=True)
            if not resume:
                check_fresh(self.out, overwrite)
        with self.dist.guard(self._next_step):
            self.dist.barrier()
        if resume:
            self._resume()

    # -- set-up -----------------------------------------------------------------
    def stop(self, reason: str) -> None:
        self._stop_reason = reason

    def _next_step(self) -> str:
        """What to do after another process of the run stopped (the end of that sentence)."""
        restart = restart_sentence(self.out)
        if restart:
            return restart
        if (self.out / "last.pt").is_file():
            local = int(os.environ.get("LOCAL_WORLD_SIZE") or self.dist.world)
            same = "--nproc_per_node" if local == self.dist.world else "--nnodes and --nproc_per_node"
            return (f"if it printed an error, fix that first, then continue with --resume on {self.dist.world} "
                    f"processes (the same {same})")
        return ("if it printed an error, fix that first; no epoch had ended, so there is nothing to resume: start it "
                "again (the same --out)")

    # -- loop -------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train up to ``train.epochs`` epochs (from the last finished one when resumed); returns
        the summary. Under torchrun, a process of the run that stops (killed, crashed) stops the
        others with one sentence saying so and how to continue (:meth:`.distributed.Dist.guard`)."""
        if self.dist.main:
            self._record_start()
        with self.dist.guard(self._next_step):
            return self._fit()

    def _record_start(self) -> None:
        """``config.yaml``, ``data_report.json`` and ``run_info.json`` at a new run's start; at a
        resume, this start added to ``run_info.json``'s ``starts`` (the first start's fields kept),
        with the settings it changed (``changed``: more epochs, another batch size on another
        number of processes, where the data now lives), and ``config.yaml`` rewritten to the
        settings the run goes on with, which reports and the next resume read."""
        cfg, t = self.cfg, self.cfg.train
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        start = {"started": now, "after_epoch": self.epoch, "world_size": self.dist.world, "backend": self.dist.backend,
                 "threads_per_process": torch.get_num_threads(), "batch_size": t.batch_size,
                 "global_batch": self.dist.world * t.batch_size, "hardware": hardware(self.device)}
        if os.environ.get(TORCHRUN_ID_ENV):  # (a torchrun restart of this start resumes it: runfolder.torchrun_restarted)
            start["torchrun_id"] = os.environ[TORCHRUN_ID_ENV]
            agent = torchrun_agent()  # (an elastic launch's nodes changing starts it again too: _this_torchruns)
            if agent is not None:
                start["torchrun_agent"] = agent
        f = self.out / "run_info.json"
        info: dict[str, Any] = {}
        if self._resumed:
            try:
                info = json.loads(f.read_text())
            except (OSError, ValueError):  # missing or damaged: this start's fields stand in for the first's
                info = {}
            if not isinstance(info, dict):
                info = {}
            if info and "starts" not in info:  # written by a facemtl that recorded the first start only
                info["starts"] = [{"started": info.get("started"), "after_epoch": 0,
                                   **{k: info.get(k) for k in ("world_size", "backend", "threads_per_process")}}]
            saved = self.out / "config.yaml"
            try:
                before = yaml.safe_load(saved.read_text())
            except (OSError, yaml.YAMLError):
                before = None
            # (a user test: resumed with train.epochs=3, it still said 2); a resume with no epoch left
            # to train changes nothing, and says so (_fit)
            if before != cfg.to_dict() and self.epoch < cfg.train.epochs:
                from .runfolder import differences

                start["changed"] = {k: b for k, _, b in differences(before or {}, cfg.to_dict())}
                tmp = saved.with_name(saved.name + ".tmp")  # every resume reads it: never left cut off
                tmp.write_text(_dump_yaml(cfg.to_dict()))
                os.replace(tmp, saved)
        else:
            (self.out / "config.yaml").write_text(_dump_yaml(cfg.to_dict()))
            (self.out / "data_report.json").write_text(dumps(self.data.report, indent=2))
        first = {"hardware": start["hardware"], "started": now, "val_split": self.val_split,
                 "world_size": self.dist.world, "backend": self.dist.backend,
                 "threads_per_process": start["threads_per_process"],
                 # data.root as the person wrote it (config.yaml holds it resolved), for reports
                 "data_root": cfg.origin.get("data_root", cfg.data.root),
                 "data_root_from": cfg.origin.get("data_root_from"),
                 # per split: its size and a digest of its file names and labels (what --resume compares)
                 "data_fingerprint": self.data_fingerprint}
        for k, v in first.items():  # the first start's, kept as they were (readers of older runs use them)
            info.setdefault(k, v)
        info["starts"] = info.get("starts", []) + [start]
        f.write_text(json.dumps(info, indent=1))

    def _fit(self) -> dict[str, Any]:
        cfg = self.cfg
        if self.epoch and self.epoch >= cfg.train.epochs:  # a resume asking for no more epochs: say so
            self.log(f"nothing to train: this run already finished {self.epoch} epochs and train.epochs is "
                     f"{cfg.train.epochs}; raise train.epochs to train on (the best epoch, {self.best_epoch}, is "
                     f"scored on the test split again)")
        for cb in self.callbacks:
            cb.on_fit_start(self)
        while self.epoch < cfg.train.epochs and self._stop_reason is None:
            t0 = time.perf_counter()
            train_losses, n_images = self.train_epoch()
            train_seconds = time.perf_counter() - t0
            train_losses = self._every_ranks(train_losses)  # every rank's weighting sees the same epoch losses
            self._check_finite({n: v for n, v in train_losses.items() if self._loss_batches[n]},
                               self.dist.mean({"total": float(self._total_sum)})["total"])
            # DDP sends rank 0's batch-norm statistics out before each forward; after the last step each
            # rank holds its own: align them, so every rank validates (and rank 0 saves) the same model.
            self.dist.sync_buffers(self.model)
            val = self.validate()
            # the weights this epoch trained with: DWA's epoch_end sets the next epoch's
            weights, normalised = self.weighting.weights(), self.weighting.normalised()
            self.weighting.epoch_end(train_losses)
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                # tasks with no validation loss (NaN: no labelled face) left out; a NaN sum is never
                # better, so it would cut the learning rate every `patience` epochs, whatever the others did
                finite = [val[t]["loss"] for t in self.task_names if math.isfinite(val[t]["loss"])]
                if finite:
                    self.scheduler.step(sum(finite))
            record = {
                "epoch": self.epoch + 1,
                # every process's images (each takes an equal share: DistributedSampler pads them)
                "train": {"loss": train_losses, "images_per_s": self.dist.world * n_images / max(train_seconds, 1e-9)},
                "val": val,
                "weights": weights,
                "lr": self.optimizer.param_groups[0]["lr"],
                "seconds": time.perf_counter() - t0,
            }
            if normalised is not None:
                record["weights_normalised"] = normalised
            # (every one runs; a callback that is not a Callback may lack the hook)
            changed = [getattr(cb, "after_validation", lambda *a: False)(self, record) for cb in self.callbacks]
            # every rank decides alike on the same gathered metrics; rank 0's decision is the one
            # followed, so that every rank makes the same collective calls (_agree checks the rest)
            if self.dist.broadcast(any(changed)):  # Early Freeze restored weights: the epoch is scored as restored
                self.dist.sync_buffers(self.model)
                record["val_before_restore"], val = val, self.validate()
                record["val"] = val
            improved = self.best_epoch == 0 or _rank(val["score"]) > _rank(self.best_score)
            best = None
            if improved:
                self.best_score, self.best_epoch = val["score"], self.epoch + 1
                if self.dist.main:  # the weights validated (after any restore Early Freeze made)
                    best = self.state(full=False, metrics=val)
                    best["model"] = {k: v.detach().to("cpu", copy=True) for k, v in best["model"].items()}
                    best["epoch"] = self.epoch + 1
            record["best_epoch"] = self.best_epoch
            with signals_deferred():  # the epoch's log line and both checkpoints, or none of them
                self._end_epoch(record, best)
        if self._stop_reason:
            self.log(self._stop_reason)
        for cb in self.callbacks:
            cb.on_fit_end(self)
        self._record_ranks()
        return {"best_epoch": self.best_epoch, "best_score": self.best_score, "epochs_run": self.epoch,
                "val_split": self.val_split}

    def _end_epoch(self, record: dict[str, Any], best: dict[str, Any] | None) -> None:
        """Log the epoch (the callbacks' ``on_epoch_end``) and save ``best`` (when it improved) and
        the state to continue from."""
        for cb in self.callbacks:
            cb.on_epoch_end(self, record)
        self._agree()
        self.epoch += 1
        state = self.state(full=True)  # every rank takes part (it gathers the ranks' generators)
        if self.dist.main:
            # best.pt first: a kill between the two saves leaves last.pt one epoch behind, and
            # --resume redoes that epoch (writing best.pt again), so the pair never disagrees.
            if best is not None:
                save_checkpoint(best, self.out / "best.pt")
            save_checkpoint(state, self.out / "last.pt")
        self.dist.barrier()

    def _agree(self) -> None:
        """Early Freeze and early stopping are decided once, by rank 0, and applied on every rank.

        Every rank runs the callbacks on the same gathered validation metrics, so they decide
        alike; rank 0's decision is nevertheless what counts, and a rank that decided otherwise
        is a bug worth stopping for.
        """
        if not self.dist.active:
            return
        mine = (sorted(self.model.frozen_tasks), self._stop_reason)
        frozen, reason = self.dist.broadcast(mine)
        if frozen != mine[0]:
            raise RuntimeError(f"rank {self.dist.rank} froze {mine[0]} but rank 0 froze {frozen}")
        self._stop_reason = reason

    def _record_ranks(self) -> None:
        """Every rank's parameter checksum and frozen tasks in ``run_info.json`` (they must agree);
        none for one process, whose resume of a distributed run removes the earlier start's (a user
        test: they stayed, naming two ranks and parameters of epochs before)."""
        if not self.dist.active:
            f = self.out / "run_info.json"
            try:
                info = json.loads(f.read_text())
            except (OSError, ValueError):  # missing or damaged: nothing of ranks in it to remove
                return
            if isinstance(info, dict) and info.pop("ranks", None) is not None:
                f.write_text(json.dumps(info, indent=1))
            return
        with torch.no_grad():
            checksum = float(sum(p.double().sum() for p in self.model.state_dict().values() if p.is_floating_point()))
        ranks = self.dist.gather({"rank": self.dist.rank, "param_checksum": checksum,
                                  "frozen": sorted(self.model.frozen_tasks)})
        if self.dist.main:
            f = self.out / "run_info.json"
            info = json.loads(f.read_text()) if f.is_file() else {}
            info["ranks"] = ranks
            f.write_text(json.dumps(info, indent=1))

    def train_epoch(self) -> tuple[dict[str, float], int]:
        self.model.train()
        self.weighting.train()
        t = self.cfg.train
        self.progress.start_epoch(self.epoch + 1, t.epochs, self.steps_per_epoch)
        # Summed on the device and read once per epoch: reading a GPU loss every step
        # would make the host wait for the device at every step.
        sums: dict[str, torch.Tensor | float] = {n: 0.0 for n in self.task_names}
        counts = {n: 0 for n in self.task_names}
        self._total_sum = 0.0
        seen = 0
        if self.model.frozen_tasks != self._wrapped_frozen:  # DDP must know which parameters still learn
            self.net = distributed.wrap(self.model, self.dist, self.device)
            self._wrapped_frozen = set(self.model.frozen_tasks)
        shard = (self.dist.rank, self.dist.world, t.seed, self.epoch) if self.dist.active else None
        batches = self.data.train.batches(t.batch_size, shuffle=True, generator=self.generator, drop_last=True,
                                          shard=shard)
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
        self._loss_batches = counts
        return {n: float(sums[n]) / counts[n] if counts[n] else float("nan") for n in self.task_names}, seen

    def _every_ranks(self, means: dict[str, float]) -> dict[str, float]:
        """Each task's mean training loss over the epoch's batches with a label of it, on every rank
        (alone: ``means``); NaN where no batch had one (as a validation loss with no labelled face). Before,
        such a task's loss read 0.0, which DWA took for a loss gone to nothing, and each rank's mean
        counted alike, whatever its number of batches with labels (a user test). Sets
        ``_loss_batches`` to every rank's count."""
        counts = self._loss_batches
        if self.dist.active:
            both = self.dist.mean({**{f"sum/{n}": means[n] * counts[n] if counts[n] else 0.0 for n in means},
                                   **{f"n/{n}": float(counts[n]) for n in means}})
            self._loss_batches = counts = {n: both[f"n/{n}"] * self.dist.world for n in means}
            means = {n: both[f"sum/{n}"] / both[f"n/{n}"] if both[f"n/{n}"] else float("nan") for n in means}
        return means

    def _check_finite(self, losses: dict[str, float], total: float) -> None:
        """:class:`TrainingDiverged` when an epoch's mean loss of a task, or the sum of its weighted
        totals, is not a finite number: the weights are then NaN, and every later epoch would
        train and save them without a word (a user test: a plugin's loss gave NaN and training ran
        on to its end). Read once per epoch (a GPU loss read every step would stall the device),
        after the ranks' means, so every rank stops alike."""
        bad = [n for n, v in losses.items() if not math.isfinite(v)]
        if not bad and math.isfinite(total):
            return
        if self.scaler.is_enabled() and all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            # float16 (train.amp): a batch whose forward overflowed gives an infinite loss, and the
            # scaler skips its step; the weights are sound, so training goes on
            self.log(f"epoch {self.epoch + 1}: the loss of some steps was not finite in float16 (train.amp); the "
                     "gradient scaler skipped them and the weights are finite, so training goes on")
            return
        what = (f"the training loss of task {bad[0]!r} is {losses[bad[0]]}" if bad else
                f"the total of the loss weighting {self.cfg.weighting.name!r} is {total} while every task's "
                "loss is finite")
        kept = (f"the {self.epoch} epoch(s) before it are kept in {self.out} (last.pt to resume from, best.pt)"
                if self.epoch else "nothing was trained to keep")
        raise TrainingDiverged(f"training stopped in epoch {self.epoch + 1}: {what} (a learning rate too high, or a "
                               f"task type, loss or weighting of your own that gives NaN); {kept}")

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
            out = self.net(x)
        losses = {}
        for j, (t, c) in enumerate(zip(self.tasks, cols)):
            with _naming(f"the loss of task {t.name!r} ({type(t).__qualname__})"):
                losses[t.name] = t.loss(out[t.name].float(), labels[:, c], rows[:, j])
        with _naming(f"the loss weighting {self.cfg.weighting.name!r}"):
            total = self.weighting(losses, self.model)
        if not (isinstance(total, torch.Tensor) and total.numel() == 1):
            what = f"a tensor of shape {tuple(total.shape)}" if isinstance(total, torch.Tensor) else \
                f"a {type(total).__qualname__}"
            raise ValueError(f"the loss weighting {self.cfg.weighting.name!r} gave {what}; it must give the total "
                             "loss as a 0-dim tensor (torch.stack(...).sum(), not float(...)), which training "
                             "differentiates")
        self._total_sum = self._total_sum + total.detach().float().reshape(())
        self.scaler.scale(total).backward()
        self.dist.average_gradients(self.weighting.parameters())  # DDP averages the network's; these are ours
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.weighting.after_step()
        self.dist.sync_buffers(self.weighting)
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
        if not self.dist.main:
            return None
        if len(part) == 0:
            self.log("no test split (data.test_fraction=0, or too few faces): nothing is scored on test faces")
            return None
        self.model.load_state_dict(self._best_weights())
        t0 = time.perf_counter()
        res = predict_set(self.model, part, self.tasks, self.device, self.cfg.train.eval_batch_size, self.channels_last)
        metrics = score_predictions(res, self.tasks, self.data.baselines)
        metrics["_info"] = {"split": "test", "images": len(part), "faces_id": faces_id(part.paths),
                            "best_epoch": self.best_epoch,
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
        (self.out / "test_metrics.json").write_text(dumps_strict(metrics, indent=1))
        return metrics

    def _best_weights(self) -> dict[str, torch.Tensor]:
        """The weights in ``best.pt``, checked to be those of :attr:`best_epoch`; a
        ``RuntimeError`` in one sentence otherwise (never another model in their place)."""
        best = self.out / "best.pt"
        if not best.is_file():
            raise RuntimeError(f"cannot score the best epoch ({self.best_epoch}) on the test split: {best.name} is "
                               f"missing from {self.out}")
        state = load_checkpoint(best)
        if state.get("epoch") != self.best_epoch:
            raise RuntimeError(f"{best.name} holds epoch {state.get('epoch')}, but this run's best epoch is "
                               f"{self.best_epoch} (the file was left by another or an interrupted run), so the "
                               f"test split is not scored; train again with --overwrite (from Python: overwrite=True)")
        return state["model"]

    def validate(self) -> dict[str, Any]:
        """Metrics over the whole validation split: each rank predicts a contiguous share, and
        the shares are gathered, in order, on every rank before scoring."""
        part = self.data.split(self.val_split)
        if self.dist.active:
            part = part.subset(np.array_split(np.arange(len(part)), self.dist.world)[self.dist.rank])
        res = predict_set(self.model, part, self.tasks, self.device, self.cfg.train.eval_batch_size, self.channels_last)
        if self.dist.active:
            res = merge_predictions(self.dist.gather(res))
        return score_predictions(res, self.tasks, self.data.baselines)


def _rank(score: float) -> float:
    """A validation score for comparisons: NaN (no task could be scored) ranks lowest."""
    return -float("inf") if score != score else score


def _dump_yaml(d: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False)
