"""Command line: ``facemtl <command>``, one table from subcommand to function.

Each subcommand is an ordinary typed function (``train``, ``evaluate``, ``analyze``, ...);
:data:`COMMANDS` maps its name to that function, its flags and how its answer is printed.
User mistakes (bad config, missing folder, unknown task type) end in one sentence on
stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

EPILOG = "Overrides: section.key=value, e.g. train.epochs=3 data.image_size=112 weighting.name=equal"


# -- the commands ----------------------------------------------------------------------


def train(config: str, out: str, overrides: Sequence[str] = (), resume: bool = False, progress: bool = True) -> dict:
    """Train the model described by ``config`` into the folder ``out``; returns the run's summary."""
    from .config import load_config
    from .training import Trainer

    cfg = load_config(config, list(overrides))
    if resume:
        saved = Path(out) / "config.yaml"
        if saved.is_file():
            cfg = load_config(saved, list(overrides))
    trainer = Trainer(cfg, out, resume=resume, progress=progress, log=lambda s: print(s, file=sys.stderr))
    summary = trainer.fit()
    test = trainer.test()
    if test is not None:
        summary["test_score"] = test["score"]
    return summary


def evaluate(
    checkpoint: str,
    split: str = "test",
    data_root: str | None = None,
    device: str = "auto",
    batch_size: int = 128,
    tta: str = "none",
) -> dict[str, Any]:
    """Metrics of ``checkpoint`` on ``split`` of the data it was trained on (same seed, same split).

    ``tta="flip"`` averages the outputs of each face and its mirror image. The result is
    keyed by task, plus ``score`` and ``_info`` (what was evaluated, with the task specs).
    """
    from .data import build_data
    from .device import resolve_device
    from .model import load_model
    from .training.evaluation import predict_set, score_predictions

    dev = resolve_device(device)
    model, tasks, cfg, state = load_model(checkpoint, dev)
    if data_root:
        cfg.data.root = data_root
    data = build_data(cfg.data, tasks, cfg.train.seed, load_images=False)
    part = data.split(split)
    if len(part) == 0:
        raise ValueError(f"the {split} split of this data is empty")
    part.cache(progress=len(part) > 2000)
    res = predict_set(model, part, tasks, dev, batch_size, cfg.model.channels_last, tta)
    metrics = score_predictions(res, tasks, data.baselines)
    metrics["_info"] = {"checkpoint": str(checkpoint), "split": split, "images": len(part), "epoch": state.get("epoch"),
                        "tta": tta, "tasks": [t.to_dict() for t in tasks]}
    return metrics


def analyze(
    paths: Sequence[str],
    as_json: bool = False,
    as_csv: bool = False,
    annotate_dir: str | None = None,
    aligned: bool = False,
    checkpoint: str | None = None,
    detector: str = "dlib",
    device: str = "auto",
    progress: bool | None = None,
    min_face: float | None = None,
    workers: int | None = None,
    runtime: str | None = None,
    fusion: str | bool | None = None,
) -> int:
    """Analyse every face in PATHs; returns the exit status (1 only when no file could be read)."""
    from .inference import FaceAnalyzer
    from .inference.inputs import expand_inputs
    from .sinks import AnnotateSink, CsvSink, JsonLinesSink, TableSink

    files, missing = expand_inputs(list(paths))
    for m in missing:
        print(f"facemtl: warning: {m} matches no file", file=sys.stderr)
    if not files:
        raise FileNotFoundError("no input files found in " + ", ".join(paths))
    with FaceAnalyzer(checkpoint, detector, device, min_face=min_face, workers=workers, runtime=runtime,
                      keep_images=annotate_dir is not None, fusion=fusion) as analyzer:
        out = CsvSink(analyzer.tasks) if as_csv else JsonLinesSink() if as_json else TableSink()
        annotated = AnnotateSink(annotate_dir) if annotate_dir else None
        if annotated is not None:
            annotated.out_dir.mkdir(parents=True, exist_ok=True)
        show_bar = progress if progress is not None else (len(files) > 1 and sys.stderr.isatty())
        bar = None
        if show_bar:
            from tqdm import tqdm

            bar = tqdm(total=len(files), unit="image", file=sys.stderr)
        readable = 0
        for res in analyzer.analyze_files(files, aligned=aligned):
            readable += res.status != "error"
            if annotated is not None:
                annotated.write(res)
            out.write(res)
            if bar is not None:
                bar.update(1)
        out.close()
        if bar is not None:
            bar.close()
    return 0 if readable else 1


def fusion(checkpoint: str, out: str, data_root: str | None = None, mix: float = 0.5) -> dict[str, Any]:
    """Fit the accurate variant's descriptor classifiers for ``checkpoint``'s classification tasks on
    its own training faces (L2 strength chosen on its validation faces); write the fusion file."""
    from .data import build_data
    from .data.teacher import teacher_features
    from .faces.descriptor import NAME
    from .inference.fusion import fit_fusion
    from .model import load_model

    _, tasks, cfg, _ = load_model(checkpoint)
    if data_root:
        cfg.data.root = data_root
    data = build_data(cfg.data, tasks, cfg.train.seed, load_images=False)
    chosen = [t for t in tasks if t.inference and t.class_names() is not None]
    if not chosen:
        raise ValueError(f"{checkpoint} has no classification task for the descriptor to help")
    feats = {p: teacher_features(data.split(p).paths, cfg.data.cache_dir, NAME, workers=max(1, cfg.data.workers),
                                 log=lambda s: print(s, file=sys.stderr)) for p in ("train", "val")}
    labels = {p: {t.name: data.split(p).attributes[t.label] for t in chosen} for p in ("train", "val")}
    head, scores = fit_fusion(feats["train"], labels["train"], {t.name: t.class_names() for t in chosen},
                              feats["val"], labels["val"], NAME)
    head.mix = mix
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(head.to_dict()))
    return {"out": out, "validation_accuracy_by_l2": scores}


def experiment(config: str, out: str, only: Sequence[str] | None = None, progress: bool = False) -> dict[str, Any]:
    """Run (or finish) the experiment grid of ``config`` in the folder ``out``."""
    from .experiments import load_experiment, run_experiment

    exp = load_experiment(config)
    return run_experiment(exp, out, only=only, progress=progress, log=lambda s: print(s, file=sys.stderr, flush=True))


def report(path: str, out: str | None = None, gradcam: bool = True, samples: int = 2) -> Path:
    """Write the HTML / Markdown / PNG report of a run or experiment folder; returns the HTML file."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise RuntimeError("facemtl report needs matplotlib (and captum for Grad-CAM): pip install 'facemtl[train]'")
    from .report import write_report

    return write_report(path, out, gradcam=gradcam, samples=samples)


# -- flags and printing, per command -------------------------------------------------------


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="YAML recipe (see configs/)")
    p.add_argument("--out", required=True, help="run folder for checkpoints and logs")
    p.add_argument("--resume", action="store_true", help="continue a stopped run from OUT/last.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", help="section.key=value settings that replace the recipe's")


def _train_run(a: argparse.Namespace) -> int:
    print(json.dumps(train(a.config, a.out, a.overrides, a.resume, not a.no_progress)))
    return 0


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--data-root", help="data folder, if it moved since training")
    p.add_argument("--device", default="auto")
    p.add_argument("--tta", default="none", choices=["none", "flip"],
                   help="test-time augmentation: flip averages each face with its mirror image")


def _evaluate_run(a: argparse.Namespace) -> int:
    metrics = evaluate(a.checkpoint, a.split, a.data_root, a.device, tta=a.tta)
    info = metrics.pop("_info")
    if a.json:
        # One object keyed by task name only, as documented; the summary goes to stderr.
        print(json.dumps({k: v for k, v in metrics.items() if k != "score"}))
        print(json.dumps({"score": metrics["score"], **{k: v for k, v in info.items() if k != "tasks"}}), file=sys.stderr)
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
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or globs")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON object per input file, one per line")
    fmt.add_argument("--csv", action="store_true", help="CSV, one row per face")
    p.add_argument("--annotate", metavar="DIR", help="write copies of the images with boxes and labels drawn")
    p.add_argument("--aligned", action="store_true", help="each image is one aligned face crop: no detection")
    p.add_argument("--checkpoint", help="a model trained with 'facemtl train' instead of the default one")
    p.add_argument("--detector", default="dlib", help="face detector: dlib (default) or mtcnn")
    p.add_argument("--min-face", type=float, metavar="PX",
                   help="smallest face to look for, in pixels of the photo as the detector sees it (shrunk to "
                        "1024 px on its long side); default: 40 for dlib, 20 for mtcnn. 80 makes dlib about 3x faster "
                        "on photos")
    p.add_argument("--workers", type=int, metavar="N", help="threads that decode and search photos (default: one per core)")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--accurate", nargs="?", const=True, metavar="FUSION_FILE",
                   help="the accurate variant: mix a classifier on dlib's face descriptor into gender and race "
                        "(the shipped fusion file, or FUSION_FILE from 'facemtl fusion'); tens of ms more per face")


def _analyze_run(a: argparse.Namespace) -> int:
    return analyze(a.paths, a.json, a.csv, a.annotate, a.aligned, a.checkpoint, a.detector, a.device,
                   False if a.no_progress else None, a.min_face, a.workers, fusion=a.accurate)


def _fusion_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="the model (.pt) whose classification tasks to help")
    p.add_argument("--out", required=True, help="the fusion file to write (JSON)")
    p.add_argument("--data-root", help="data folder, if it moved since training")
    p.add_argument("--mix", type=float, default=0.5, help="weight of the network's probabilities (the rest: the descriptor's)")


def _fusion_run(a: argparse.Namespace) -> int:
    print(json.dumps(fusion(a.checkpoint, a.out, a.data_root, a.mix)))
    return 0


def _experiment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="experiment YAML (see configs/experiment_*.yaml)")
    p.add_argument("--out", required=True, help="experiment folder; finished runs in it are reused")
    p.add_argument("--only", help="comma-separated variant names to run now")
    p.add_argument("--progress", action="store_true", help="a progress bar per epoch")


def _experiment_run(a: argparse.Namespace) -> int:
    only = [x for x in a.only.split(",") if x] if a.only else None
    summary = experiment(a.config, a.out, only, a.progress)
    print(json.dumps({k: v for k, v in summary.items() if k != "variants"}))
    return 0


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="RUN_DIR_OR_EXPERIMENT_DIR")
    p.add_argument("--out", help="report folder (default: PATH/report)")
    p.add_argument("--no-gradcam", action="store_true", help="leave out the Grad-CAM maps")
    p.add_argument("--samples", type=int, default=2, help="Grad-CAM faces per task, each of correct and wrong")


def _report_run(a: argparse.Namespace) -> int:
    print(report(a.path, a.out, not a.no_gradcam, a.samples))
    return 0


@dataclass(frozen=True)
class Command:
    #: Runs the command from parsed flags; returns the exit status.
    run: Callable[[argparse.Namespace], int]
    #: Adds the command's flags to its parser.
    flags: Callable[[argparse.ArgumentParser], None]
    help: str
    epilog: str | None = None


COMMANDS: dict[str, Command] = {
    "train": Command(_train_run, _train_args, "train a multi-task model from a YAML recipe", EPILOG),
    "evaluate": Command(_evaluate_run, _evaluate_args, "evaluate a checkpoint on a split"),
    "analyze": Command(_analyze_run, _analyze_args, "estimate the attributes of every face in photos"),
    "fusion": Command(_fusion_run, _fusion_args,
                      "fit the accurate variant: classifiers on dlib's face descriptor beside a model's network"),
    "experiment": Command(_experiment_run, _experiment_args,
                          "run a grid of variants (the sources' ablations) with several seeds"),
    "report": Command(_report_run, _report_args,
                      "write an HTML, Markdown and PNG report of a run or experiment folder"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facemtl", description="Multi-task face attribute estimation.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, cmd in COMMANDS.items():
        cmd.flags(sub.add_parser(name, help=cmd.help, epilog=cmd.epilog))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .config import ConfigError

    try:
        return COMMANDS[args.command].run(args)
    except (ConfigError, FileNotFoundError, ValueError, KeyError, RuntimeError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"facemtl: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("facemtl: interrupted; continue with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
