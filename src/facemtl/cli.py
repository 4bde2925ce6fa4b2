"""Command line: ``facemtl train``, ``evaluate``, ``analyze``, ``experiment`` and ``report``.

Each subcommand is an ordinary typed function; argparse only maps flags onto it.
User mistakes (bad config, missing folder, unknown task type) end in one
sentence on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

EPILOG = "Overrides: section.key=value, e.g. train.epochs=3 data.image_size=112 weighting.name=equal"


def train(config: str, out: str, overrides: Sequence[str] = (), resume: bool = False, progress: bool = True) -> dict:
    """Train the model described by ``config`` into the folder ``out``."""
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
    print(json.dumps(summary))
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

    ``tta="flip"`` averages the outputs of each face and its mirror image.
    """
    from .data import build_data
    from .evaluation import predict_set, score_predictions
    from .training import load_model, resolve_device

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
                        "tta": tta}
    return metrics


def analyze(
    paths: Sequence[str],
    as_json: bool = False,
    as_csv: bool = False,
    annotate_dir: str | None = None,
    aligned: bool = False,
    checkpoint: str | None = None,
    detector: str = "dlib",
    device: str = "cpu",
    progress: bool | None = None,
    min_face: float | None = None,
    workers: int | None = None,
) -> int:
    """Analyse every face in PATHs; returns the exit status (1 only when no file could be read)."""
    from .analysis import FaceAnalyzer
    from .analysis.inputs import expand_inputs
    from .analysis.output import CsvWriter, annotate, write_json, write_table

    files, missing = expand_inputs(list(paths))
    for m in missing:
        print(f"facemtl: warning: {m} matches no file", file=sys.stderr)
    if not files:
        raise FileNotFoundError("no input files found in " + ", ".join(paths))
    analyzer = FaceAnalyzer(checkpoint, detector, device, min_face=min_face, workers=workers)
    writer = CsvWriter() if as_csv else None
    show_bar = progress if progress is not None else (len(files) > 1 and sys.stderr.isatty())
    bar = None
    if show_bar:
        from tqdm import tqdm

        bar = tqdm(total=len(files), unit="image", file=sys.stderr)
    readable = 0
    for rec in analyzer.analyze_files(files, aligned=aligned):
        readable += rec["status"] != "error"
        if writer is not None:
            writer.write(rec)
        elif as_json:
            write_json(rec)
        else:
            write_table(rec)
        if annotate_dir:
            annotate(rec, Path(annotate_dir))
        if bar is not None:
            bar.update(1)
    analyzer.close()
    if bar is not None:
        bar.close()
    return 0 if readable else 1


def experiment(config: str, out: str, only: Sequence[str] | None = None, progress: bool = False) -> dict[str, Any]:
    """Run (or finish) the experiment grid of ``config`` in the folder ``out``."""
    from .experiments import load_experiment, run_experiment

    exp = load_experiment(config)
    return run_experiment(exp, out, only=only, progress=progress, log=lambda s: print(s, file=sys.stderr, flush=True))


def report(path: str, out: str | None = None, gradcam: bool = True, samples: int = 2) -> Path:
    """Write the HTML / Markdown / PNG report of a run or experiment folder; returns the HTML file."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise RuntimeError("facemtl report needs matplotlib (and captum for Grad-CAM): pip install 'facemtl[report]'")
    from .report import write_report

    return write_report(path, out, gradcam=gradcam, samples=samples)


def _print_table(metrics: dict[str, Any]) -> None:
    for name, m in metrics.items():
        if name.startswith("_") or name == "score":
            continue
        if "accuracy" in m:
            print(f"{name:>12}: accuracy {m['accuracy']:.4f} (majority baseline {m['baseline']['accuracy']:.4f}, n={m['n']})")
        else:
            cs = m["cs"]
            print(
                f"{name:>12}: MAE {m['mae']:.3f}  MSE {m['mse']:.2f}  CS(5) {cs['5']:.3f}  "
                f"group accuracy {m['group_accuracy']:.4f} (median baseline MAE {m['baseline']['mae']:.3f}, n={m['n']})"
            )
            print(f"{'':>12}  groups: {', '.join(m['groups'])}")
    print(f"{'score':>12}: {metrics['score']:.4f} (mean skill over tasks: 0 = trivial baseline, 1 = perfect)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="facemtl", description="Multi-task face attribute estimation.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a multi-task model from a YAML recipe", epilog=EPILOG)
    p.add_argument("--config", required=True, help="YAML recipe (see configs/)")
    p.add_argument("--out", required=True, help="run folder for checkpoints and logs")
    p.add_argument("--resume", action="store_true", help="continue a stopped run from OUT/last.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", help="section.key=value settings that replace the recipe's")

    p = sub.add_parser("evaluate", help="evaluate a checkpoint on a split")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--data-root", help="data folder, if it moved since training")
    p.add_argument("--device", default="auto")
    p.add_argument("--tta", default="none", choices=["none", "flip"],
                   help="test-time augmentation: flip averages each face with its mirror image")

    p = sub.add_parser("analyze", help="estimate the attributes of every face in photos")
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
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("experiment", help="run a grid of variants (the sources' ablations) with several seeds")
    p.add_argument("--config", required=True, help="experiment YAML (see configs/experiment_*.yaml)")
    p.add_argument("--out", required=True, help="experiment folder; finished runs in it are reused")
    p.add_argument("--only", help="comma-separated variant names to run now")
    p.add_argument("--progress", action="store_true", help="a progress bar per epoch")

    p = sub.add_parser("report", help="write an HTML, Markdown and PNG report of a run or experiment folder")
    p.add_argument("path", metavar="RUN_DIR_OR_EXPERIMENT_DIR")
    p.add_argument("--out", help="report folder (default: PATH/report)")
    p.add_argument("--no-gradcam", action="store_true", help="leave out the Grad-CAM maps")
    p.add_argument("--samples", type=int, default=2, help="Grad-CAM faces per task, each of correct and wrong")

    args = parser.parse_args(argv)
    from .config import ConfigError

    try:
        if args.command == "train":
            train(args.config, args.out, args.overrides, args.resume, not args.no_progress)
        elif args.command == "analyze":
            return analyze(args.paths, args.json, args.csv, args.annotate, args.aligned, args.checkpoint,
                           args.detector, args.device, False if args.no_progress else None, args.min_face,
                           args.workers)
        elif args.command == "experiment":
            only = [x for x in args.only.split(",") if x] if args.only else None
            summary = experiment(args.config, args.out, only, args.progress)
            print(json.dumps({k: v for k, v in summary.items() if k != "variants"}))
        elif args.command == "report":
            print(report(args.path, args.out, not args.no_gradcam, args.samples))
        elif args.command == "evaluate":
            metrics = evaluate(args.checkpoint, args.split, args.data_root, args.device, tta=args.tta)
            if args.json:
                # One object keyed by task name only, as documented; the summary goes to stderr.
                print(json.dumps({k: v for k, v in metrics.items() if not k.startswith("_") and k != "score"}))
                print(json.dumps({"score": metrics["score"], **metrics["_info"]}), file=sys.stderr)
            else:
                _print_table(metrics)
    except (ConfigError, FileNotFoundError, ValueError, KeyError, RuntimeError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"facemtl: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("facemtl: interrupted; continue with --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
