"""The training side's commands: ``train``, ``evaluate``, ``shards``, ``experiment`` and
``report`` (each a typed function, its flags, and how its answer is printed; the table
of commands is :data:`facemtl.cli.COMMANDS`)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from .cli_args import model_file as _model_file
from .cli_args import positive as _positive
from .cli_args import runtime_flag as _runtime_flag

#: The train command's help epilog.
EPILOG = "Overrides: section.key=value, e.g. train.epochs=3 data.image_size=112 weighting.name=equal"

def train(config: str | None, out: str, overrides: Sequence[str] = (), resume: bool = False,
          progress: bool | None = None,
          overwrite: bool = False, data_root: str | None = None) -> dict:
    """Train the model described by ``config`` into the folder ``out``; returns the run's summary.

    ``progress``: a bar per epoch (default: on a terminal only).
    A new run refuses an ``out`` that already holds one unless ``overwrite``. ``resume``
    continues the run in ``out`` with its saved settings plus ``overrides``; a ``config``
    given as well must describe the same run. ``data_root``: the data folder in place of
    the recipe's (relative: to the current folder). The folder is locked while training.
    """
    from .config import ConfigError, check_recipe, load_config
    from .system import abort_on_signals
    from .training import Trainer
    from .training.runfolder import (
        RESTART_ENV,
        RunFolderError,
        RunLock,
        check_fresh,
        check_resumable,
        resume_config,
        torchrun_restarted,
        torchrun_restarted_unsaved,
    )

    overrides = list(overrides)
    # torchrun --max-restarts starts the same command again, and so does an elastic launch whose nodes changed
    why = f"restart {os.environ.get(RESTART_ENV)}" if os.environ.get(RESTART_ENV, "0") != "0" else "its nodes changed"
    if not resume and torchrun_restarted(out):
        print(f"torchrun started the run again ({why}): continuing {out} from its last.pt", file=sys.stderr,
              flush=True)
        resume, overwrite = True, False
    elif not resume and torchrun_restarted_unsaved(out):
        print(f"torchrun started the run again ({why}) before its first epoch was saved: starting {out} again",
              file=sys.stderr, flush=True)
        overwrite = True
    if resume:
        if not (Path(out) / "config.yaml").is_file():
            raise RunFolderError(f"cannot resume: {out} holds no run (no config.yaml)")
    elif config is None:
        raise ConfigError("a new run needs --config (a YAML recipe); add --resume to continue the run in " + str(out))
    else:  # a bad recipe, a missing data folder or a folder holding a run fails before the folder is touched
        cfg = load_config(config, overrides)
        check_recipe(cfg)
        cfg = _with_data_root(cfg, data_root)
        check_fresh(out, overwrite, clear=False)
    # Under torchrun only rank 0 locks the folder (the other ranks write nothing there).
    lock = RunLock(out) if int(os.environ.get("RANK", "0")) == 0 else contextlib.nullcontext()
    # SIGTERM unwinds as Ctrl-C does (the lock released, "continue with --resume", exit 143).
    with abort_on_signals(), lock:
        if resume:
            check_resumable(out)  # under the lock (a first epoch may be running), before the data is read
            cfg = resume_config(out, config, overrides, data_root)
        log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
        trainer = Trainer(cfg, out, resume=resume, progress=progress, log=log, overwrite=overwrite)
        try:
            summary = trainer.fit()
            test = trainer.test()  # rank 0 of a distributed run; every rank alone
        finally:
            trainer.dist.close()
    if test is not None:
        summary["test_score"] = test["score"]
    summary["rank"] = trainer.dist.rank
    return summary


def _with_data_root(cfg: Any, data_root: str | None) -> Any:
    """``cfg`` with ``data_root`` (typed on the command line) in place of its data folder; a
    ``FileNotFoundError`` naming the folder, and where a relative one came from, when it is missing."""
    if data_root is not None:
        from .config import typed_path

        cfg.data.root = typed_path(data_root)
        cfg.origin.update(data_root=data_root, data_root_from="the command line")
    if not Path(cfg.data.root).exists():
        from .data.table import data_place

        o = cfg.origin
        whence = (f" (data.root {o['data_root']!r} in {o['data_root_from']}, relative to its folder)"
                  if o.get("data_root_from") not in (None, "the command line")
                  and not Path(o["data_root"]).is_absolute() else "")
        if data_root is not None:  # never ask for the flag just passed
            raise FileNotFoundError(f"the {data_place(data_root)} {data_root} given with --data-root does not exist")
        if o.get("data_root_from") == "the command line":  # a data.root=... override
            raise FileNotFoundError(f"{data_place(cfg.data.root)} {cfg.data.root} (data.root on the command line) does "
                                    "not exist")
        raise FileNotFoundError(f"{data_place(cfg.data.root)} {cfg.data.root} does not exist{whence}; pass --data-root "
                                "or fix data.root")
    return cfg


def evaluate(
    checkpoint: str | Sequence[str],
    split: str = "test",
    data_root: str | None = None,
    device: str = "auto",
    batch_size: int = 128,
    tta: str = "none",
    runtime: str | None = None,
    by: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Metrics of a model file on ``split`` of the data it was trained on (same seed, same split).

    ``checkpoint``: a ``.pt`` checkpoint or a file from ``facemtl export`` (``.onnx``, ``.xml``,
    ...), run by ``runtime`` (default: by suffix); an exported file records the data settings
    and seed, and its faces go through the :class:`~facemtl.inference.Predictor`.
    Several files are an ensemble (the mean of their raw outputs), each run by its runtime,
    scored on the first file's split, whose faces must be held out from every file's
    training. ``tta="flip"`` averages the outputs of each face and its mirror image. The
    result is keyed by task, plus ``score`` and ``_info`` (what was evaluated, with the task
    specs). ``by``: task names whose true labels group the faces (``["race"]``, ``["race",
    "gender"]``): each task's metrics then carry ``by_group``, its metric per group with 95 %
    intervals and the largest gap between groups (:func:`~facemtl.training.evaluation.score_groups`),
    the bias study of any model file, the shipped one included.
    """
    from .inference.runtimes import runtime_for

    checkpoint = [_model_file(c) for c in checkpoint] if not isinstance(checkpoint, (str, Path)) \
        else _model_file(checkpoint)
    if not isinstance(checkpoint, (str, Path)):
        files = [str(c) for c in checkpoint]
        if len(files) != 1:
            return _evaluate_file(files, split, data_root, device, batch_size, tta, runtime, by)
        checkpoint = files[0]
    if runtime_for(checkpoint, runtime).name != "torch":
        return _evaluate_file(checkpoint, split, data_root, device, batch_size, tta, runtime, by)
    from .data.dataset import faces_id
    from .training.evaluation import predict_checkpoint, score_predictions

    res, tasks, data, state = predict_checkpoint(checkpoint, split, data_root, device, batch_size, tta,
                                                 _group_check(by))
    metrics = score_predictions(res, tasks, data.baselines)
    _add_groups(metrics, res, tasks, by)
    metrics["_info"] = {"checkpoint": str(checkpoint), "split": split, "images": len(data.split(split)),
                        "faces_id": faces_id(data.split(split).paths),
                        "epoch": state.get("epoch"), "tta": tta, "runtime": "torch", "tasks": [t.to_dict() for t in tasks]}
    return metrics


def _group_check(by: Sequence[str] | None) -> Any:
    """What refuses ``--by`` names before any face is predicted (``None`` without them)."""
    if not by:
        return None
    from .training.evaluation import check_group_names

    return lambda tasks: check_group_names(tasks, by)


def _add_groups(metrics: dict[str, Any], res: dict[str, Any], tasks: Sequence[Any], by: Sequence[str] | None) -> None:
    """Each task's ``by_group`` (:func:`~facemtl.training.evaluation.score_groups`) when ``by`` names any."""
    if not by:
        return
    from .training.evaluation import score_groups

    for name, g in score_groups(res, tasks, by).items():
        metrics[name]["by_group"] = g


def _evaluate_file(path: str | list[str], split: str, data_root: str | None, device: str, batch_size: int, tta: str,
                   runtime: str | None, by: Sequence[str] | None = None) -> dict[str, Any]:
    """:func:`evaluate` for an exported model file, through the Predictor."""
    from .data.dataset import faces_id
    from .training.evaluation import predict_exported, score_predictions

    res, tasks, data, predictor = predict_exported(path, split, data_root, runtime, device, batch_size, tta,
                                                   _group_check(by))
    metrics = score_predictions(res, tasks, data.baselines)
    _add_groups(metrics, res, tasks, by)
    extra = predictor.info.extra
    metrics["_info"] = {"checkpoint": path if isinstance(path, list) else str(path), "split": split,
                        "faces_id": faces_id(data.split(split).paths),
                        "images": len(data.split(split)), "epoch": extra.get("epoch"), "tta": tta,
                        "runtime": predictor.runtime.name, "precision": predictor.runtime.precision,
                        "tasks": [t.to_dict() for t in predictor.tasks]}
    return metrics


def shards(config: str, out: str, shard_size: int = 5000, resize: int | None = None,
           overrides: Sequence[str] = (), overwrite: bool = False) -> Path:
    """Write the recipe's data, split as training would split it, as WebDataset shards in ``out``;
    a folder already holding shards is refused unless ``overwrite`` (checked before the data is read)."""
    from .config import load_config
    from .data.dataset import read_split
    from .data.shards import check_out, write_shards
    from .tasks import build_task

    cfg = load_config(config, list(overrides))
    if not overwrite:
        check_out(out)  # refused before minutes of reading; --overwrite deletes only once the data is read
    table, split, _ = read_split(cfg.data, [build_task(t) for t in cfg.tasks], cfg.train.seed)
    return write_shards(table, split, out, shard_size, resize, log=lambda s: print(s, file=sys.stderr),
                        overwrite=overwrite)


def experiment(config: str, out: str, only: Sequence[str] | None = None, progress: bool = False,
               overrides: Sequence[str] = (), overwrite: bool = False) -> dict[str, Any]:
    """Run (or finish) the experiment grid of ``config`` in the folder ``out``. ``overrides``
    (``section.key=value``) apply to every run, after the experiment file's own and before each
    variant's; one of a setting a variant sets itself is refused (:mod:`facemtl.experiments.grid`).
    Runs in ``out`` trained with other settings are refused unless ``overwrite`` (they train again)."""
    from .experiments import load_experiment, run_experiment
    from .system import abort_on_signals

    exp = load_experiment(config, list(overrides))  # a bad override fails here, before any run
    with abort_on_signals():  # SIGTERM unwinds as Ctrl-C does: the lock released, exit 143
        return run_experiment(exp, out, only=only, progress=progress, overwrite=overwrite,
                              log=lambda s: print(s, file=sys.stderr, flush=True))


def report(path: str, out: str | None = None, gradcam: bool = True, samples: int = 2,
           groups: str | Sequence[str] | None = None) -> Path:
    """Write the HTML / Markdown / PNG report of a run or experiment folder; returns the HTML file.

    ``groups``: the bias study's grouping columns as task names (``"age,gender"`` or a list);
    ``None``: the default of :func:`facemtl.report.bias.bias_groups`."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise RuntimeError("facemtl report needs matplotlib (and captum for Grad-CAM): pip install 'facemtl[train]'")
    from .report import write_report
    from .system import check_writable_folder, nearest_existing

    # before the maps are computed (a user test: a read-only --out failed at the first figure)
    folder = nearest_existing(Path(out) if out else Path(path) / "report")
    if folder.is_dir():
        check_writable_folder(folder, f"the report in {folder}")

    return write_report(path, out, gradcam=gradcam, samples=samples, groups=groups)


# -- flags and printing, per command -------------------------------------------------------


def train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML recipe (see configs/); relative paths in it resolve against its folder. "
                                    "Needed for a new run; with --resume, optional and checked against the run's own")
    p.add_argument("--out", required=True, help="run folder for checkpoints and logs")
    p.add_argument("--resume", action="store_true",
                   help="continue the stopped run in OUT from OUT/last.pt, with its saved settings")
    p.add_argument("--overwrite", action="store_true", help="start again in an OUT that already holds a run, "
                                                            "removing that run's files")
    p.add_argument("--data-root", "--data", metavar="DIR", help="data folder in place of the recipe's data.root "
                                                      "(relative: to the current folder)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (bars are drawn only when stderr is a terminal)")
    p.add_argument("overrides", nargs="*", metavar="section.key=value",
                   help="settings that replace the recipe's (typed here, so relative paths are to the current folder)")


def train_run(a: argparse.Namespace) -> int:
    summary = train(a.config, a.out, a.overrides, a.resume, not a.no_progress and sys.stderr.isatty(), a.overwrite,
                    a.data_root)
    if summary.pop("rank") == 0:  # under torchrun, one summary for the run
        # An undefined score (NaN: no task's skill defined on a tiny split) prints as null: valid JSON.
        print(json.dumps({k: None if isinstance(v, float) and v != v else v for k, v in summary.items()}))
    return 0


def evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", "--model", dest="checkpoint", required=True, action="append", metavar="MODEL_FILE",
                   help="a model file: a .pt checkpoint from 'facemtl train' (e.g. RUN/best.pt; a run folder "
                        "stands for its best.pt) or a file from 'facemtl export'; repeat it for an ensemble (the "
                        "mean of the networks' outputs)")
    _runtime_flag(p)
    p.add_argument("--split", default="test", choices=["train", "val", "test"],
                   help="which split of the model's own data (same seed, same split as in training)")
    p.add_argument("--json", action="store_true", help="print one JSON object keyed by task")
    p.add_argument("--data-root", "--data", metavar="DIR", help="data folder, if it moved since training (relative: to the "
                                                      "current folder). Without it, a relative data.root recorded "
                                                      "in a .pt resolves against the .pt's folder, and in an "
                                                      "exported file (or the shipped .pt) against the current "
                                                      "folder")
    p.add_argument("--device", default="auto", help="auto (a CUDA GPU when there is one), cpu, cuda or cuda:N")
    p.add_argument("--tta", default="none", choices=["none", "flip"],
                   help="test-time augmentation: flip averages each face with its mirror image")
    p.add_argument("--by", metavar="TASK[,TASK]",
                   help="a bias study: each task's metric per group of these tasks' true labels (e.g. race, or "
                        "race,gender crossed), with 95%% intervals, and the largest gap between groups of 30 faces "
                        "or more")


def evaluate_run(a: argparse.Namespace) -> int:
    by = a.by.split(",") if a.by is not None else None
    if by is not None and not any(x.strip() for x in by):
        raise ValueError("--by names no task; e.g. --by race")
    metrics = evaluate(a.checkpoint, a.split, a.data_root, a.device, tta=a.tta, runtime=a.runtime, by=by)
    info = metrics.pop("_info")
    if a.json:
        # One object keyed by task name only, as documented; the summary goes to stderr.
        from .jsonutil import finite

        print(json.dumps(finite({k: v for k, v in metrics.items() if k != "score"}), allow_nan=False))
        print(json.dumps(finite({"score": metrics["score"], **{k: v for k, v in info.items() if k != "tasks"}})),
              file=sys.stderr)
        return 0
    from .tasks import build_task

    for t in (build_task(s) for s in info["tasks"]):
        lines = t.metrics_text(metrics[t.name]).splitlines()
        print(f"{t.name:>12}: {lines[0]}")
        for line in lines[1:]:
            print(f"{'':>12}{line}")
        if "by_group" in metrics[t.name]:
            _print_groups(t, metrics[t.name]["by_group"])
    print(f"{'score':>12}: {metrics['score']:.4f} (mean skill over tasks: 0 = trivial baseline, 1 = perfect)")
    print(f"{'faces':>12}: {info['images']} {info['split']} faces, id {info['faces_id']} (the same id: the same "
          "faces, whichever model is scored)")
    return 0


def _print_groups(task: Any, g: dict[str, Any]) -> None:
    """``evaluate --by``'s lines for one task: its metric per group, then the largest gap."""
    kind = task.subgroup_metric
    pct = kind == "accuracy"

    def num(x: float) -> str:
        return f"{100 * x:.2f}" if pct else f"{x:.2f}"

    head = f"by {' x '.join(g['columns'])}" + (f" ({g['left_out']} faces without a grouping label left out)"
                                               if g["left_out"] else "")
    print(f"{'':>12}{head}:")
    width = max(len(" ".join(str(c[k]) for k in g["columns"])) for c in g["cells"]) if g["cells"] else 0
    for c in g["cells"]:
        lo, hi = c["ci95"]
        ci = f" ({num(lo)}-{num(hi)})" if lo == lo else ""
        print(f"{'':>14}{' '.join(str(c[k]) for k in g['columns']):<{width}}  {kind} {num(c[kind])}{'%' if pct else ''}"
              f"{ci}, n={c['n']}")
    gap = g["largest_gap"]
    unit = " points" if pct else (f" {task.unit}" if task.unit else "")
    if not gap:
        print(f"{'':>14}largest gap: no two groups of 30 faces or more")
        return
    lo, hi = gap["ci95"]
    ci = f" (95% {num(lo)} to {num(hi)})" if lo == lo else ""
    print(f"{'':>14}largest gap: {num(gap['gap'])}{unit}{ci}, {gap['highest']} against {gap['lowest']} "
          f"({gap['compared']} of {gap['groups']} groups of 30 faces or more compared)")


def shards_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="the recipe whose data (reader, filters, split) to write")
    p.add_argument("--out", required=True, help="folder for the shards and their index.json")
    p.add_argument("--shard-size", type=int, default=5000, help="faces per tar shard")
    p.add_argument("--resize", type=int, metavar="PX", help="re-encode each face at PX x PX (default: its own bytes)")
    p.add_argument("--overwrite", action="store_true", help="replace the shards and index already in --out")
    p.add_argument("overrides", nargs="*", help="section.key=value settings that replace the recipe's")


def shards_run(a: argparse.Namespace) -> int:
    print(shards(a.config, a.out, a.shard_size, a.resize, a.overrides, a.overwrite))
    return 0


def experiment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="experiment YAML (see configs/experiment_*.yaml)")
    p.add_argument("--out", required=True, help="experiment folder; finished runs in it are reused")
    p.add_argument("--only", metavar="NAMES", help="comma-separated variant names to run now (default: all)")
    p.add_argument("--progress", action="store_true", help="a progress bar per epoch (on a terminal)")
    p.add_argument("--overwrite", action="store_true",
                   help="train again the runs in --out trained with other settings (without it they are refused)")
    p.add_argument("overrides", nargs="*", metavar="section.key=value",
                   help="settings for every run of the grid, e.g. train.epochs=2 data.root=DIR: on top of the base "
                        "recipe and the experiment file's overrides (these win over the file's; typed here, so "
                        "relative paths are to the current folder). A setting that a variant sets itself (e.g. "
                        "weighting.name) is refused, not overridden, and so is train.seed (use the file's seeds). "
                        "Finished runs are reused only when trained with the same overrides")


def experiment_run(a: argparse.Namespace) -> int:
    only = [x for x in a.only.split(",") if x] if a.only else None
    summary = experiment(a.config, a.out, only, a.progress and sys.stderr.isatty(), a.overrides, a.overwrite)
    print(json.dumps({k: v for k, v in summary.items() if k != "variants"}))
    return 0


def report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="RUN_DIR_OR_EXPERIMENT_DIR", help="a run folder or an experiment folder")
    p.add_argument("--out", help="report folder (default: PATH/report)")
    p.add_argument("--no-gradcam", action="store_true", help="leave out the Grad-CAM maps")
    p.add_argument("--samples", type=_positive(int), default=2, help="Grad-CAM faces per task, each of correct and wrong")
    p.add_argument("--groups", metavar="COL[,COL...]",
                   help="grouping columns of the bias study, as task names (a numeric task such as age groups by "
                        "its bias bands); default: the recipe's first tasks of 2 groups or more, up to 3 columns and "
                        "100 cells (age group x gender x race for the standard tasks)")
    p.add_argument("--threads", type=_positive(int), metavar="N",
                   help="PyTorch's threads for the Grad-CAM maps (default: one per core; on a machine busy with other "
                        "work, 1 can be ten times faster: eager PyTorch's thread pool stalls when the cores are shared)")


def report_run(a: argparse.Namespace) -> int:
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    print(report(a.path, a.out, not a.no_gradcam, a.samples, a.groups))
    return 0
