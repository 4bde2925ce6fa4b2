"""Command line: ``facemtl train`` and ``facemtl evaluate``.

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
    print(json.dumps(summary))
    return summary


def evaluate(
    checkpoint: str,
    split: str = "test",
    data_root: str | None = None,
    device: str = "auto",
    batch_size: int = 128,
) -> dict[str, Any]:
    """Metrics of ``checkpoint`` on ``split`` of the data it was trained on (same seed, same split)."""
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
    res = predict_set(model, part, tasks, dev, batch_size, cfg.model.channels_last)
    metrics = score_predictions(res, tasks, data.baselines)
    metrics["_info"] = {"checkpoint": str(checkpoint), "split": split, "images": len(part), "epoch": state.get("epoch")}
    return metrics


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

    args = parser.parse_args(argv)
    from .config import ConfigError

    try:
        if args.command == "train":
            train(args.config, args.out, args.overrides, args.resume, not args.no_progress)
        elif args.command == "evaluate":
            metrics = evaluate(args.checkpoint, args.split, args.data_root, args.device)
            if args.json:
                print(json.dumps(metrics))
            else:
                _print_table(metrics)
    except (ConfigError, FileNotFoundError, ValueError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"facemtl: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("facemtl: interrupted; continue with --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
