"""Slim a training checkpoint into a deployable model file (half-precision weights).

    python scripts/export_model.py runs/cpu/best.pt src/facemtl/weights/utkface_lite0.pt

Keeps what ``facemtl.training.load_model`` needs (config, task specs, weights,
frozen tasks, baselines, validation metrics) and drops optimiser and RNG state.
Weights are stored as float16 (half the size; loading casts them back to float32).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from facemtl.checkpoint import load_checkpoint

KEEP = ("format", "config", "tasks", "frozen", "epoch", "best_score", "best_epoch", "epochs_from", "baselines", "weights", "val_metrics")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--data-root", default="../shared/data/utkface",
                    help="data folder recorded in the model (relative to where evaluate runs)")
    a = ap.parse_args()
    state = load_checkpoint(a.checkpoint)
    slim = {k: state[k] for k in KEEP if k in state}
    slim["config"]["data"]["root"] = a.data_root
    slim["model"] = {k: (v.half() if v.is_floating_point() else v) for k, v in state["model"].items()}
    slim["source"] = Path(a.checkpoint).name
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(slim, a.out)
    print(f"{a.out}: {Path(a.out).stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
