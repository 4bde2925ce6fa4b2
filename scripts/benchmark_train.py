"""Training throughput of ``facemtl train`` against a bare PyTorch loop, same model and batch.

Not a test: run it by hand on an otherwise idle machine::

    python scripts/benchmark_train.py --config configs/cpu.yaml --batches 40

It reports, in images per second:

* ``decode``: JPEG decoding + resizing into the cache (the data loader's work);
* ``augment``: batch augmentation alone (flip, affine, colour jitter);
* ``bare``: a plain loop (forward, summed task losses, backward, SGD/AdamW step) on
  a pre-made batch, i.e. the network alone;
* ``facemtl``: ``Trainer.train_epoch`` (cache batching, augmentation, masked task
  losses, loss weighting, callbacks, scheduler) on the same model and batch size;

plus the overhead ``1 - facemtl / bare`` and the peak resident memory (and peak CUDA
memory on a GPU). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import torch

from facemtl.config import load_config
from facemtl.data import augment, build_data
from facemtl.data.dataset import label_columns
from facemtl.data.images import decode_all
from facemtl.preprocess import to_input
from facemtl.tasks import build_task
from facemtl.training import Trainer
from facemtl.device import resolve_device
from facemtl.model import MultiTaskNet
from facemtl.training import build_optimizer
from facemtl.weighting import build_weighting


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/cpu.yaml")
    ap.add_argument("--batches", type=int, default=40, help="timed training steps per loop")
    ap.add_argument("--images", type=int, default=3000, help="images to load (a slice of the data)")
    ap.add_argument("--repeats", type=int, default=2, help="alternate the two loops this many times, keep the best")
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    cfg = load_config(a.config, ["train.epochs=1", f"data.limit={a.images}", *a.overrides])
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    dev = resolve_device(cfg.train.device)
    tasks = [build_task(t) for t in cfg.tasks]
    bs = cfg.train.batch_size

    data = build_data(cfg.data, tasks, cfg.train.seed, load_images=False)
    paths = data.train.paths[: min(len(data.train), 1024)]
    t0 = time.perf_counter()
    decode_all(paths, cfg.data.image_size, cfg.data.workers)
    decode_ips = len(paths) / (time.perf_counter() - t0)
    data.train.cache()

    x8 = data.train.images[:bs]
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(20):
        augment(to_input(x8, dev, False), cfg.data.augment, g)
    augment_ips = 20 * bs / (time.perf_counter() - t0)

    # --- bare loop -------------------------------------------------------------------
    model = MultiTaskNet.from_config(cfg.model, tasks).to(dev)
    if cfg.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    weighting = build_weighting("equal", [t.name for t in tasks])
    opt = build_optimizer(cfg, model, weighting)
    x = to_input(x8, dev, cfg.model.channels_last)
    y = data.train.labels[:bs].to(dev)
    model.train()

    def bare(n: int) -> float:
        for i in range(n + 3):
            if i == 3:
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
            out = model(x)
            loss = sum(task.loss(out[task.name], y[:, c]) for task, c in zip(tasks, label_columns(tasks)))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return n * bs / (time.perf_counter() - t)

    # --- facemtl's own epoch loop, same model settings ---------------------------------
    cfg.train.max_batches = a.batches
    trainer = Trainer(cfg, "/tmp/facemtl-bench", progress=False, log=lambda s: None, data=data, overwrite=True)

    def ours() -> float:
        trainer.train_epoch()  # warm-up (first batches allocate)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        _, n = trainer.train_epoch()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return n / (time.perf_counter() - t)

    bare_ips, ours_ips = 0.0, 0.0
    for _ in range(a.repeats):
        bare_ips = max(bare_ips, bare(a.batches))
        ours_ips = max(ours_ips, ours())
    result = {
        "config": a.config,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "image_size": cfg.data.image_size,
        "batch_size": bs,
        "backbone": cfg.model.backbone,
        "shared_stages": cfg.model.shared_stages,
        "decode_images_per_s": round(decode_ips, 1),
        "augment_images_per_s": round(augment_ips, 1),
        "bare_images_per_s": round(bare_ips, 2),
        "facemtl_images_per_s": round(ours_ips, 2),
        "overhead": round(1 - ours_ips / bare_ips, 4),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    if dev.type == "cuda":
        result["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
