"""Slim a training checkpoint into a deployable model file (half-precision weights).

    python scripts/export_model.py runs/cpu/best.pt src/facemtl/weights/utkface_lite0.pt

Keeps what ``facemtl.training.load_model`` needs (config, task specs, weights,
frozen tasks, baselines, validation metrics) and drops optimiser and RNG state.
Weights are stored as float16 (half the size; loading casts them back to float32).

Training-only tasks (a distilled face descriptor: ``Task.inference`` is false) are dropped
with their heads and the data's ``teacher`` and ``targets`` settings, unless ``--keep-training-tasks``: the
network that answers is the same, the split is the same (a vector target gives no strata),
and ``facemtl evaluate`` on the file no longer computes the teacher's descriptor for every
face first. What was dropped is recorded under ``"distilled"``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from facemtl.checkpoint import load_checkpoint, save_checkpoint
from facemtl.tasks import build_task

KEEP = ("format", "config", "tasks", "frozen", "epoch", "best_score", "best_epoch", "epochs_from", "baselines", "weights", "val_metrics")


def drop_training_tasks(slim: dict) -> list[str]:
    """Remove training-only tasks (spec, config entry, the layers only they used, baselines,
    metrics) in place. Refuses a task whose labels stratify the split: without it the split
    would change."""
    from facemtl.config import config_from_dict
    from facemtl.model import MultiTaskNet

    specs = {t["name"]: build_task(t) for t in slim["tasks"]}
    dropped = [n for n, t in specs.items() if not t.inference]
    if not dropped:
        return []
    for n in dropped:
        t = specs[n]
        labels = np.zeros(4) if t.label_width == 1 else np.zeros((4, t.label_width))
        if t.strata(labels) is not None:
            raise SystemExit(f"task {n!r} is training-only but stratifies the split; keep it (--keep-training-tasks)")
    slim["tasks"] = [t for t in slim["tasks"] if t["name"] not in dropped]
    slim["config"]["tasks"] = [t for t in slim["config"]["tasks"] if t["name"] not in dropped]
    slim["frozen"] = [n for n in slim.get("frozen", []) if n not in dropped]
    # the layers the remaining tasks' network has (a dropped task's own branch or neck goes too)
    net = MultiTaskNet.from_config(config_from_dict(slim["config"]).model, [build_task(t) for t in slim["tasks"]],
                                   pretrained=False)
    wanted = set(net.state_dict())
    missing = wanted - set(slim["model"])
    if missing:
        raise SystemExit(f"the checkpoint lacks {sorted(missing)[:3]} for the remaining tasks")
    slim["model"] = {k: v for k, v in slim["model"].items() if k in wanted}
    for key in ("baselines", "val_metrics", "weights"):
        if isinstance(slim.get(key), dict):
            slim[key] = {k: v for k, v in slim[key].items() if k not in dropped}
    slim["distilled"] = {"tasks": dropped, "teacher": slim["config"]["data"].get("teacher")}
    slim["config"]["data"]["teacher"] = None
    if slim["config"]["data"].get("targets"):  # a target file (data.targets) taught a dropped task
        slim["distilled"]["targets"] = slim["config"]["data"]["targets"]
        slim["config"]["data"]["targets"] = None
    return dropped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--data-root", default="../shared/data/utkface",
                    help="data folder recorded in the model (relative to where evaluate runs)")
    ap.add_argument("--keep-training-tasks", action="store_true",
                    help="keep training-only tasks (a distillation head) and the data's teacher setting")
    a = ap.parse_args()
    state = load_checkpoint(a.checkpoint)
    slim = {k: state[k] for k in KEEP if k in state}
    slim["config"]["data"]["root"] = a.data_root
    slim["model"] = {k: (v.half() if v.is_floating_point() else v) for k, v in state["model"].items()}
    slim["source"] = Path(a.checkpoint).name
    dropped = [] if a.keep_training_tasks else drop_training_tasks(slim)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(slim, a.out)  # (with the weights' digest that loading checks)
    print(f"{a.out}: {Path(a.out).stat().st_size / 2**20:.1f} MiB"
          + (f" (training-only tasks dropped: {', '.join(dropped)})" if dropped else ""))


if __name__ == "__main__":
    main()
