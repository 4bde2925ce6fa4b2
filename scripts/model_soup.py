"""Average the weights of networks fine-tuned from the same start: a greedy "model soup".

    python scripts/model_soup.py ep20.pt ens.pt shipped.pt distilled.pt previous.pt \\
        --data-root ../shared/data/utkface --out soup.pt --record soup.json

Wortsman et al. (2022), "Model soups", recipe 2 (greedy soup): networks fine-tuned from the
same pretrained weights often lie in one basin of the loss, so the mean of their weights is a
single network, as fast as any of them, that can answer better than each. The ingredients
(slimmed ``.pt`` files with the same tasks, architecture, training seed and split) are
ordered by the trainer's validation score recorded in each (``best_score``); the soup starts
as the first; each next ingredient joins if the uniform mean of the soup's members and it
scores higher on the validation faces (the mean skill over the tasks that answer at
inference, :func:`facemtl.training.evaluation.score_predictions`, the score that picked each
run's best epoch). The test faces are never read.

Batch norm: the running mean and variance of a weight average are not the average of the
members' statistics, so they are estimated again with the averaged weights over the training
faces (evaluation preprocessing, one pass, PyTorch's ``momentum=None``: a cumulative mean over
the batches, each counting once, as ``torch.optim.swa_utils.update_bn`` does).
A soup of one is the ingredient unchanged. Weights are rounded to float16 before scoring, as
the slimmed file stores them.

Our own code, not a library's: PyTorch's ``torch.optim.swa_utils`` averages one run's
snapshots and recomputes batch norm from a loader of batches; the greedy choice on
validation and our data's cached uint8 batches are ours, and the whole is 100 lines.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch


def sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def average(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The uniform mean of every floating-point tensor (rounded to float16, as stored); integer
    buffers (batch norm's counters) from the first."""
    out = {}
    for k, v in states[0].items():
        if v.is_floating_point():
            out[k] = torch.stack([s[k].float() for s in states]).mean(0).half()
        else:
            out[k] = v.clone()
    return out


@torch.no_grad()
def recompute_batch_norm(model: torch.nn.Module, data, batch_size: int = 256, channels_last: bool = True) -> None:
    """Batch-norm running statistics estimated again over ``data`` (a FaceSet) with the model's
    current weights: every BN layer reset, ``momentum=None`` (the mean over batches, each batch
    counting once, so the last, smaller batch a little more than its share), the rest of the
    model in eval mode (dropout off), one pass without gradients."""
    from facemtl.preprocess import to_input

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    model.eval()
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    for images, _ in data.batches(batch_size):
        model(to_input(images, "cpu", channels_last))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ingredients", nargs="+", help="slimmed .pt files (scripts/export_model.py)")
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--out", required=True, help="the soup, a slimmed .pt file")
    ap.add_argument("--record", help="every step's validation metrics as JSON here")
    a = ap.parse_args()

    from facemtl.checkpoint import load_checkpoint
    from facemtl.config import config_from_dict
    from facemtl.data import build_data
    from facemtl.model import MultiTaskNet
    from facemtl.model.load import load_weights
    from facemtl.tasks import build_task
    from facemtl.training.evaluation import headline_metrics, predict_set, score_predictions

    torch.manual_seed(0)
    states = {p: load_checkpoint(p) for p in a.ingredients}
    order = sorted(a.ingredients, key=lambda p: -float(states[p]["best_score"]))
    first = states[order[0]]
    cfg = config_from_dict(first["config"])
    cfg.data.root = str(Path(a.data_root).expanduser().resolve())
    tasks = [build_task(t) for t in first["tasks"]]
    for p in order[1:]:
        s = states[p]
        if [t["name"] for t in s["tasks"]] != [t.name for t in tasks] or s["config"]["train"]["seed"] != cfg.train.seed:
            raise SystemExit(f"{p}: other tasks or another training seed than {order[0]}")
        if {k: v.shape for k, v in s["model"].items()} != {k: v.shape for k, v in first["model"].items()}:
            raise SystemExit(f"{p}: another architecture than {order[0]}")
    data = build_data(cfg.data, tasks, cfg.train.seed, load_images=False)
    for p in order[1:]:  # the same split, from each ingredient's own data settings
        other = config_from_dict(states[p]["config"])
        other.data.root = cfg.data.root
        if build_data(other.data, tasks, cfg.train.seed, load_images=False).val.paths != data.val.paths:
            raise SystemExit(f"{p}: another validation split than {order[0]}")
    t0 = time.time()
    data.train.cache(progress=sys.stderr.isatty())
    data.val.cache(progress=False)
    print(f"{len(data.train)} training and {len(data.val)} validation faces decoded in {time.time() - t0:.0f} s",
          flush=True)

    def build(weights: dict[str, torch.Tensor], recalibrate: bool) -> torch.nn.Module:
        model = MultiTaskNet.from_config(cfg.model, tasks, pretrained=False)
        load_weights(model, weights, "soup")
        model.float().eval()
        if recalibrate:
            recompute_batch_norm(model, data.train, channels_last=cfg.model.channels_last)
        return model

    def score(model: torch.nn.Module) -> dict:
        res = predict_set(model, data.val, tasks, torch.device("cpu"), channels_last=cfg.model.channels_last)
        m = score_predictions(res, tasks, data.baselines)
        return {"score": m["score"], "metrics": headline_metrics(m, tasks)}

    steps = []
    members = [order[0]]
    model = build(first["model"], recalibrate=False)
    best = score(model)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    steps.append({"ingredient": order[0], "joined": True, **best})
    print(f"{order[0]}: score {best['score']:.5f} {best['metrics']}", flush=True)
    for p in order[1:]:
        t0 = time.time()
        cand = build(average([states[q]["model"] for q in members + [p]]), recalibrate=True)
        got = score(cand)
        joined = got["score"] > best["score"]
        steps.append({"ingredient": p, "joined": joined, **got, "seconds": round(time.time() - t0, 1)})
        print(f"+ {p}: score {got['score']:.5f} {'joins' if joined else 'stays out'} {got['metrics']}", flush=True)
        if joined:
            members.append(p)
            best = got
            weights = {k: v.clone() for k, v in cand.state_dict().items()}

    soup = {k: first[k] for k in first if k != "model"}
    soup["model"] = {k: (v.half() if v.is_floating_point() else v) for k, v in weights.items()}
    soup["source"] = "greedy soup of " + ", ".join(Path(m).name for m in members)
    soup["best_score"] = best["score"]
    soup["soup"] = {"members": members, "sha256": {m: sha256(m) for m in members},
                    "batch_norm": "recomputed on the training faces" if len(members) > 1 else "the first ingredient's"}
    torch.save(soup, a.out)
    record = {"ingredients": [{"file": p, "sha256": sha256(p), "best_score": float(states[p]["best_score"])}
                              for p in order],
              "steps": steps, "members": members, "out": a.out, "faces": {"train": len(data.train), "val": len(data.val)}}
    if a.record:
        Path(a.record).write_text(json.dumps(record, indent=2, default=float) + "\n")
    print(f"{a.out}: the soup of {len(members)} ({', '.join(members)}), validation score {best['score']:.5f}")


if __name__ == "__main__":
    main()
