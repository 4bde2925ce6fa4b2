"""Run an experiment grid: every variant x seed on the same data, reusing finished runs.

Layout of the experiment folder::

    OUT/experiment.yaml              the resolved experiment (base recipe, budget, variants)
    OUT/experiment.json              summary: per variant, mean / std / values of every metric
    OUT/runs/<variant>/seed<k>/      a normal training run (config.yaml, metrics.jsonl,
                                     best.pt, last.pt, test_metrics.json,
                                     test_predictions.npz) plus result.json when finished

A run with ``result.json`` whose settings digest matches is reused as it is; a run
with ``last.pt`` and the same settings resumes where it stopped. A run trained (wholly or
in part) with other settings is never deleted unasked: the grid is refused before anything
runs, naming the runs and what changed, unless ``overwrite``, when they start over. So
running the same command again finishes an interrupted grid. The settings include the overrides typed on
the command line (recorded in ``experiment.yaml`` under ``overrides``, and on their own
under ``command_line_overrides``): a run is reused only with the same ones.

The data is read and split once per experiment with the base recipe's full task list
(the split seed is the first seed), and every variant sees exactly those images: a
single-task variant only drops label columns. Seeds vary initialisation and batch
order, so differences between variants are paired comparisons on one test set.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from ..config import check_recipe
from ..data import build_data
from ..epochlog import read_epochs
from ..jsonutil import dumps_strict, nan_for_null
from ..metrics import mean_and_spread
from ..system import hardware
from ..tasks import build_task
from ..training.evaluation import headline_metrics
from .grid import Experiment, check_same_data, config_hash, left_out


def run_experiment(
    exp: Experiment,
    out: str | Path,
    only: Sequence[str] | None = None,
    progress: bool = False,
    log: Callable[[str], None] = print,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train and test every run of ``exp`` not finished yet; write and return the summary.

    The experiment folder is locked while it runs (:class:`~facemtl.training.runfolder.RunLock`),
    so two grids never train into the same runs. Runs to do that hold epochs trained with
    other settings are refused (``FileExistsError`` naming them) unless ``overwrite``.
    """
    from ..training.runfolder import RunFolderError, RunLock, holds_run

    if holds_run(out) and not (Path(out) / "experiment.yaml").is_file():  # (a report would read it as one or the other)
        raise RunFolderError(f"{out} holds a training run (config.yaml), not an experiment grid; choose another --out "
                             "for the grid")
    with RunLock(out):
        return _run_experiment(exp, Path(out), only, progress, log, overwrite)


def _trained_otherwise(exp: Experiment, out: Path, todo: list[tuple[Any, int]]) -> list[str]:
    """The runs of ``todo`` holding a result or a checkpoint trained with other settings, each
    named with what changed (``"b seed 0 (train.epochs 2, now 1)"``)."""
    found = []
    for variant, seed in todo:
        run_dir = out / "runs" / variant.name / f"seed{seed}"
        result, digest = run_dir / "result.json", config_hash(exp.config(variant, seed))
        if result.is_file():  # finished: its result says what it was trained with
            if json.loads(result.read_text()).get("config_hash") == digest and _alike(exp, run_dir, variant, seed):
                continue
        elif not (run_dir / "last.pt").is_file() or (_saved_hash(run_dir) == digest
                                                     and _alike(exp, run_dir, variant, seed)):
            continue  # nothing trained yet, or an interrupted run that resumes
        saved = run_dir / "config.yaml"
        found.append(left_out(exp, variant.name, seed, (yaml.safe_load(saved.read_text()) or {})
                              if saved.is_file() else None)
                     or f"{variant.name} seed {seed} (its settings digest differs, though no setting shown does: "
                        "one added or renamed since it was trained?)")
    return found


def _run_experiment(exp: Experiment, out: Path, only: Sequence[str] | None, progress: bool,
                    log: Callable[[str], None], overwrite: bool = False) -> dict[str, Any]:
    from ..training import Trainer
    from ..training.runfolder import RunLock
    from ..training.trainer import TrainingDiverged

    variants = [exp.variant(n) for n in only] if only else exp.variants
    check_same_data(exp, variants)  # (before any run: the data is read once for them all)
    for v in variants:  # what each run's trainer would refuse, before the data is read (a grid
        check_recipe(exp.run_config(v, exp.seeds[0]))  # built in Python; load_experiment checks it too)
    other = _trained_otherwise(exp, out, [(v, s) for v in variants for s in exp.seeds])
    if other and not overwrite:
        more = f" and {len(other) - 1} more" if len(other) > 1 else ""
        raise FileExistsError(f"{out} holds runs trained with other settings ({other[0]}{more}); add --overwrite "
                              "to train them again (their results are deleted), or choose another --out")
    for name in other:
        log(f"{name}: trained with other settings, to be trained again (--overwrite)")
    (out / "experiment.yaml").write_text(yaml.safe_dump(exp.to_dict(), sort_keys=False))
    t_start = time.perf_counter()
    base_cfg = exp.config(exp.variants[0], exp.seeds[0]) if exp.variants else None
    full_tasks = [build_task(t) for t in exp.base.get("tasks", [])]
    bundle = None
    diverged: list[str] = []
    todo = [(v, s) for v in variants for s in exp.seeds]
    for i, (variant, seed) in enumerate(todo, 1):
        run_dir = out / "runs" / variant.name / f"seed{seed}"
        # the digest of the settings before the split seed is pinned: finished runs stay valid
        digest = config_hash(exp.config(variant, seed))
        cfg = exp.run_config(variant, seed)  # every seed on the first seed's split (below)
        result_file = run_dir / "result.json"
        alike = _alike(exp, run_dir, variant, seed)  # (its config.yaml: a `train --resume` may have changed it)
        if result_file.is_file() and json.loads(result_file.read_text()).get("config_hash") == digest and alike:
            log(f"[{i}/{len(todo)}] {variant.name} seed {seed}: finished before, reused")
            continue
        resume = (run_dir / "last.pt").is_file() and _saved_hash(run_dir) == digest and alike
        if run_dir.exists() and not resume:
            shutil.rmtree(run_dir)
        if bundle is None:
            # One read, split and decode for the whole grid (see module docstring).
            data_cfg = base_cfg.data  # the experiment's overrides apply; variants must not change data
            bundle = build_data(data_cfg, full_tasks, exp.seeds[0])
        tasks = [build_task(t) for t in cfg.tasks]
        log(f"[{i}/{len(todo)}] {variant.name} seed {seed}: {'resuming' if resume else 'training'} in {run_dir}")
        t0 = time.perf_counter()
        # locked as `facemtl train` locks a run: a `train --resume` of this run meanwhile is refused
        # (a user test: the two trainers wrote one folder, result and best.pt of different epochs)
        try:
            with RunLock(run_dir):
                trainer = Trainer(cfg, run_dir, resume=resume, progress=progress, log=log,
                                  data=bundle.with_tasks(tasks))
                (run_dir / "config_hash").write_text(digest)
                summary = trainer.fit()
                test = trainer.test() or {}
        except TrainingDiverged as exc:  # one cell of a sweep (a learning rate too high): the others go on
            diverged.append(f"{variant.name} seed {seed}")
            log(f"    {variant.name} seed {seed}: {exc}; the grid goes on without it (it has no result: the report "
                "names it as not finished)")
            continue
        seconds = time.perf_counter() - t0
        records = read_epochs(run_dir / "metrics.jsonl")
        result = {
            "variant": variant.name, "seed": seed, "config_hash": digest, **summary,
            "seconds": seconds,
            "train_seconds": float(sum(r.get("seconds", 0.0) for r in records)),
            "test": headline_metrics(test, tasks),
        }
        result_file.write_text(dumps_strict(result, indent=1))
        log(f"    {variant.name} seed {seed}: " + ", ".join(
            f"{t}: {', '.join(f'{k} {v:.4g}' for k, v in m.items())}" for t, m in result["test"].items()))
    summary = summarise(exp, out)
    if summary["left_out"]:
        log(f"left out of the summary, trained with other settings than {out / 'experiment.yaml'} now holds: "
            f"{', '.join(summary['left_out'])} (run them again to compare them)")
    if diverged:
        log(f"stopped because their loss was not finite (NaN): {', '.join(diverged)}; the others finished")
    summary["diverged"] = diverged
    summary["grid_seconds_this_call"] = time.perf_counter() - t_start
    (out / "experiment.json").write_text(dumps_strict(summary, indent=1))
    return summary


def _alike(exp: Experiment, run_dir: Path, variant: Any, seed: int) -> bool:
    """Whether the run's ``config.yaml`` holds the settings ``exp`` gives it now (also true where
    none was written yet). The grid's digest files say what the grid trained; ``facemtl train
    --resume`` on the run folder (``train.epochs=2``) changes only its ``config.yaml``, and such a
    run was left out of every summary yet reused by every rerun (a user test)."""
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return True
    return left_out(exp, variant.name, seed, yaml.safe_load(saved.read_text()) or {}) is None


def _saved_hash(run_dir: Path) -> str | None:
    f = run_dir / "config_hash"
    return f.read_text().strip() if f.is_file() else None


def summarise(exp: Experiment, out: str | Path) -> dict[str, Any]:
    """Mean, sample standard deviation and per-seed values of every metric of every finished variant.

    Only runs trained with the experiment's current settings count: a run left from an
    earlier budget (``--only`` reruns some variants) is listed under ``left_out`` instead, with
    the settings that differ (:func:`~facemtl.experiments.grid.changed_settings`), never
    averaged or compared with the others as if it were alike.
    """
    out = Path(out)
    variants: dict[str, Any] = {}
    stale_runs: list[str] = []
    for v in exp.variants:
        results = []
        for s in exp.seeds:
            f = out / "runs" / v.name / f"seed{s}" / "result.json"
            if f.is_file():
                saved = f.parent / "config.yaml"
                stale = left_out(exp, v.name, s, yaml.safe_load(saved.read_text()) or {} if saved.is_file() else None)
                if stale:
                    stale_runs.append(stale)
                    continue
                result = json.loads(f.read_text())
                result["test"] = nan_for_null(result.get("test", {}))  # a metric no labelled face reached
                results.append(result)
        entry: dict[str, Any] = {"label": v.label, "group": v.group, "seeds": [r["seed"] for r in results],
                                 "metrics": {}, "train_seconds": float(sum(r["train_seconds"] for r in results))}
        for task in sorted({t for r in results for t in r["test"]}):
            entry["metrics"][task] = {}
            for metric in sorted({k for r in results for k in r["test"].get(task, {})}):
                vals = [r["test"][task][metric] for r in results if metric in r["test"].get(task, {})]
                entry["metrics"][task][metric] = mean_and_spread(vals)
        variants[v.name] = entry
    return {"name": exp.name, "reference": exp.reference, "seeds": exp.seeds, "overrides": exp.overrides,
            "command_line_overrides": exp.command_line, "hardware": hardware(), "variants": variants,
            "left_out": stale_runs,
            "train_seconds": float(sum(v["train_seconds"] for v in variants.values()))}
