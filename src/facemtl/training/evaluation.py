"""Run a model over a split and compute every task's loss and metrics."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..config import typed_path
from ..data.dataset import FaceSet, label_columns
from ..data.table import data_place
from ..losses import labelled
from ..preprocess import to_input
from ..tasks import Task, predictions_of

TTA_MODES = ("none", "flip")


def forward(model: torch.nn.Module, x: torch.Tensor, tta: str = "none") -> dict[str, torch.Tensor]:
    """``model(x)``; with ``tta="flip"`` the mean raw outputs of ``x`` and its mirror image.

    Horizontal-flip test-time augmentation: faces are roughly symmetric and training
    flips them, so the two views are equally valid inputs; averaging their outputs
    (logits) halves some of the noise of a single view at twice the compute.
    """
    if tta == "none":
        return model(x)
    if tta != "flip":
        raise ValueError(f"unknown test-time augmentation {tta!r}; choose one of: {', '.join(TTA_MODES)}")
    a, b = model(x), model(torch.flip(x, dims=[3]))
    return {k: (a[k].float() + b[k].float()) / 2 for k in a}


@torch.no_grad()
def predict_set(
    model: torch.nn.Module,
    data: FaceSet,
    tasks: Sequence[Task],
    device: torch.device,
    batch_size: int = 128,
    channels_last: bool = True,
    tta: str = "none",
) -> dict[str, Any]:
    """Predictions, mean losses and labels over ``data`` (``tta``: see :func:`forward`).

    Returns ``{"pred": {task: (N,)}, "loss": {task: float}, "n": {task: labelled faces},
    "true": {task: (N,)}, "prob": {task: (N, C) or None}}`` as numpy arrays. Outputs are decoded by the tasks
    on NumPy, exactly as every inference runtime decodes them.
    """
    was_training = model.training
    model.eval()
    preds: dict[str, list] = {t.name: [] for t in tasks}
    probs: dict[str, list] = {t.name: [] for t in tasks}
    loss_sum = {t.name: 0.0 for t in tasks}
    loss_n = {t.name: 0 for t in tasks}
    cols = label_columns(tasks)
    seen: list[torch.Tensor] = []  # the labels as the batches carry them (below)
    for images, labels in data.batches(batch_size):
        seen.append(labels)
        out = forward(model, to_input(images, device, channels_last), tta)
        labels = labels.to(device)
        for t, c in zip(tasks, cols):
            o = out[t.name].float()
            y = labels[:, c]
            n = int(labelled(y).sum())
            if n:
                loss_sum[t.name] += float(t.loss(o, y)) * n
                loss_n[t.name] += n
            raw = o.cpu().numpy()
            preds[t.name].append(predictions_of(t, raw))
            p = t.probabilities(raw)
            if p is not None:
                probs[t.name].append(p)
    model.train(was_training)
    # Not data.labels: an image the streamed path cannot read comes as a black image with every
    # label masked, and scoring it against the split's labels counted a guess on a black image
    # (a user test). The batches come in the split's order, so these are its rows.
    true = torch.cat(seen).numpy() if seen else data.labels.numpy()
    return {
        "pred": {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in preds.items()},
        "prob": {k: (np.concatenate(v) if v else None) for k, v in probs.items()},
        "loss": {k: (loss_sum[k] / loss_n[k] if loss_n[k] else float("nan")) for k in loss_sum},
        "n": dict(loss_n),
        "true": {t.name: true[:, c] for t, c in zip(tasks, cols)},
    }


def predict_set_runtime(predictor: Any, data: FaceSet, tta: str = "none") -> dict[str, Any]:
    """:func:`predict_set` for a model file in any runtime (an exported ONNX / OpenVINO file):
    the :class:`~facemtl.inference.predictor.Predictor` runs the cached images and the tasks
    decode its raw outputs exactly as for a checkpoint. No losses (``loss`` is empty)."""
    data.cache(progress=len(data) > 2000 and sys.stderr.isatty())  # no bar drawn into a log file
    raw = predictor.raw_images(data.images.numpy(), tta)
    true = data.labels.numpy()
    tasks = predictor.tasks
    return {
        "pred": {t.name: predictions_of(t, raw[t.name]) for t in tasks},
        "prob": {t.name: t.probabilities(raw[t.name]) for t in tasks},
        "loss": {},
        "true": {t.name: true[:, c] for t, c in zip(tasks, label_columns(tasks))},
    }


def merge_predictions(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One :func:`predict_set` result from the results of consecutive shares of a split, in order
    (mean losses weighted by how many labelled faces each share had). A share with no face (more
    processes than faces to score) is left out: its arrays have no rows, nor their shape (a user
    test: a 2-face validation split on 3 processes failed every epoch)."""
    first = parts[0]
    sized = [p for p in parts if any(len(v) for v in p["true"].values())] or [first]

    def cat(key: str, name: str) -> np.ndarray | None:
        arrays = [p[key][name] for p in sized]
        return None if arrays[0] is None else np.concatenate(arrays)

    n = {k: sum(p["n"][k] for p in parts) for k in first["n"]}
    loss = {k: (sum(p["loss"][k] * p["n"][k] for p in parts if p["n"][k]) / n[k] if n[k] else float("nan"))
            for k in first["loss"]}
    return {"pred": {k: cat("pred", k) for k in first["pred"]}, "prob": {k: cat("prob", k) for k in first["prob"]},
            "true": {k: cat("true", k) for k in first["true"]}, "loss": loss, "n": n}


def score_predictions(result: dict[str, Any], tasks: Sequence[Task], baselines: dict[str, float]) -> dict[str, Any]:
    """Per-task metrics, the trivial baseline's metrics, and the mean skill score.

    ``skill`` is 0 for the trivial baseline (majority class / training median)
    and 1 for a perfect model; its mean over the tasks that answer at inference and where it
    is defined, ``score``, picks the best epoch (NaN when no task's skill is defined, e.g. on
    a split of one face whose labels the baselines guess right; a training-only task, such
    as a distilled feature, is reported but does not choose the model).
    """
    metrics: dict[str, Any] = {}
    skills = []
    for t in tasks:
        true = result["true"][t.name]
        m = t.metrics(result["pred"][t.name], true)
        base = t.metrics(np.broadcast_to(np.asarray(baselines[t.name], float), np.shape(true)), true)
        if t.name in result["loss"]:  # a model file outside PyTorch reports no loss
            m["loss"] = result["loss"][t.name]
        m["baseline"] = {k: v for k, v in base.items() if k in ("accuracy", "mae", "mse", t.headline.key)}
        if m.get("n", 0):
            m["skill"] = float(t.skill(m, base))
            if t.inference and not np.isnan(m["skill"]):
                skills.append(m["skill"])
        metrics[t.name] = m
    metrics["score"] = float(np.mean(skills)) if skills else float("nan")
    return metrics


def score_groups(result: dict[str, Any], tasks: Sequence[Task], by: Sequence[str], min_gap: int = 30
                 ) -> dict[str, Any]:
    """Every answering task's subgroup metric (:attr:`Task.subgroup_metric`: accuracy, or MAE) per
    group of the tasks named in ``by``, crossed (their true labels, grouped by
    :meth:`Task.subgroups`: a classifier's classes, a numeric task's bias bands), with 95 %
    intervals, and per task the largest gap between groups of ``min_gap`` or more faces with the
    interval of that difference (:mod:`facemtl.subgroups`: Wilson / Student-t / Newcombe). Faces
    without a label in a grouping column are left out, and counted.

    Returns ``{task: {"columns", "left_out", "cells": [{column: group, ..., "n", metric, "ci95"}],
    "largest_gap": {"gap", "ci95", "highest", "lowest", "compared", "groups"}, or {} with fewer than
    two groups of ``min_gap`` faces}}``.
    A name in ``by`` that is no grouping task of these is a ``ValueError`` naming those that are."""
    from ..subgroups import gap_cells, largest_gap, subgroup_table

    answering = [t for t in tasks if t.inference]
    wanted = check_group_names(tasks, by)
    labels, order = {}, {}
    by_name = {t.name: t for t in answering}
    for t in (by_name[w] for w in wanted):  # in the order asked (race x gender, not the model's)
        g = t.subgroups(result["true"][t.name])
        if g is None:
            raise ValueError(f"--by {t.name}: its labels make no groups here")
        labels[t.subgroup_column] = np.asarray(g, dtype=object)
        order[t.subgroup_column] = t.group_names() or ()
    ok = np.ones(len(next(iter(labels.values()))), bool)
    for g in labels.values():
        ok &= g != "?"
    kinds = {t.name: t.subgroup_metric for t in answering}
    scores = {t.name: t.sample_scores(result["pred"][t.name], result["true"][t.name])[ok] for t in answering}
    rows = subgroup_table(scores, kinds, {c: g[ok] for c, g in labels.items()}, order=order)
    out: dict[str, Any] = {}
    for t in answering:
        key = f"{t.name}_{kinds[t.name]}"
        cells = [{**{c: r[c] for c in labels}, "n": r[f"{key}_n"], kinds[t.name]: r[key],
                  "ci95": [r[f"{key}_lo"], r[f"{key}_hi"]]} for r in rows if r[f"{key}_n"]]
        gap = largest_gap(rows, key, min_gap)
        compared = len(gap_cells(rows, key, min_gap))
        name = lambda r: " ".join(str(r[c]) for c in labels)  # noqa: E731
        out[t.name] = {"columns": list(labels), "left_out": int((~ok).sum()), "cells": cells, "largest_gap": {
            "gap": gap["gap"], "ci95": gap["ci95"], "highest": name(gap["max"]), "lowest": name(gap["min"]),
            "compared": compared, "groups": len(cells)} if compared >= 2 else {}}  # (one group: no gap)
    return out


def check_group_names(tasks: Sequence[Task], by: Sequence[str]) -> list[str]:
    """The task names in ``by`` (stripped, once each), each an answering task that makes groups
    (:meth:`Task.subgroups`); otherwise a ``ValueError`` naming those that do. Asked before any
    face is predicted (:func:`predict_checkpoint`'s ``check``)."""
    can = [t.name for t in tasks if t.inference and t.subgroups(np.array([np.nan])) is not None]
    wanted = list(dict.fromkeys(x.strip() for x in by if x.strip()))
    unknown = [w for w in wanted if w not in can]
    if unknown or not wanted:
        raise ValueError(f"--by {','.join(unknown) or '(nothing)'}: group by a task of the model that makes groups: "
                         f"{', '.join(can) or 'none'}")
    return wanted


def headline_metrics(metrics: dict[str, Any] | None, tasks: Sequence[Task]) -> dict[str, dict[str, float]]:
    """Per task, the scalar metrics of a :func:`score_predictions` result (:meth:`Task.scalar_metrics`).

    Used by experiment summaries and reports.
    """
    metrics = metrics or {}
    return {t.name: t.scalar_metrics(metrics[t.name]) for t in tasks if isinstance(metrics.get(t.name), dict)}


def predict_checkpoint(checkpoint: str | Path, split: str = "test", data_root: str | None = None, device: str = "auto",
                       batch_size: int = 128, tta: str = "none", check: Callable[[list[Task]], Any] | None = None
                       ) -> tuple[dict[str, Any], list[Task], Any, dict]:
    """A ``.pt`` checkpoint's predictions on ``split`` of the data it was trained on (same
    seed, same split): ``(predictions as from predict_set, tasks, the data, the checkpoint's state)``.
    ``check``: called with the model's tasks before any data is read (to refuse a request up front).

    ``data_root``: the data folder if it moved since training; otherwise the checkpoint's
    ``data.root``, which, when relative, resolves against the checkpoint's folder.
    """
    from ..data.dataset import fit_to_training, split_as_trained
    from ..device import resolve_device
    from ..model import load_model

    dev = resolve_device(device)
    model, tasks, cfg, state = load_model(checkpoint, dev)
    if check is not None:
        check(tasks)
    if data_root:
        cfg.data.root = typed_path(data_root)
    if not Path(cfg.data.root).exists():
        written = str((state.get("config") or {}).get("data", {}).get("root", ""))
        from ..model.load import data_anchor

        anchor = "the current folder" if data_anchor(checkpoint) == Path.cwd() else "the model file's folder"
        whence = (f" (the model file's data.root {written!r}, relative to {anchor})"
                  if written and not Path(written).expanduser().is_absolute() else " (the model file's data.root)")
        if data_root:  # (never ask for the flag just passed: a user test)
            raise FileNotFoundError(f"the {data_place(data_root)} {data_root} given with --data-root does not exist")
        raise FileNotFoundError(f"{data_place(cfg.data.root)} {cfg.data.root} does not exist{whence}; pass --data-root")
    data = split_as_trained(cfg.data, tasks, cfg.train.seed, state.get("split_tasks"), load_images=False)
    fit_to_training(tasks, data)  # (the losses it reports need what training took from the training labels)
    part = data.split(split)
    if len(part) == 0:
        raise ValueError(f"the {split} split of this data is empty")
    _check_same_split(state, data, tasks, split, cfg.data.root)
    part.cache(progress=len(part) > 2000 and sys.stderr.isatty())
    return predict_set(model, part, tasks, dev, batch_size, cfg.model.channels_last, tta), tasks, data, state


def _check_same_split(state: dict[str, Any], data: Any, tasks: Sequence[Task], split: str, root: str) -> None:
    """Refuse to score ``split`` when its faces or labels are not those the run saw (the
    checkpoint's ``data_fingerprint``; none in checkpoints written before 2026-11-27): rows
    added to or re-ordered in a manifest draw another split, whose "test" faces the model may
    have trained on. :data:`~facemtl.data.dataset.DATA_CHANGE_ENV` scores anyway, with a warning."""
    from ..data.dataset import DATA_CHANGE_ENV, accept_data_change, data_fingerprint

    then = (state.get("data_fingerprint") or {}).get(split)
    if not then:
        return
    now = data_fingerprint(data, tasks)[split]
    if now == then:
        return
    what = f"{then['faces']} faces then, {now['faces']} now" if then["faces"] != now["faces"] else \
        f"{now['faces']} faces, other files or labels"
    said = (f"the {split} split of {root} is not the one this model was trained beside ({what}): the data changed "
            "since training, so it may hold faces the model trained on; evaluate on the data as it was, or set "
            f"{DATA_CHANGE_ENV}=1 to score it anyway")
    accept_data_change(said, "scoring anyway", lambda line: print(line, file=sys.stderr))


def predict_exported(path: str | Path | Sequence[str | Path], split: str = "test", data_root: str | None = None,
                     runtime: str | None = None, device: str = "auto", batch_size: int = 128,
                     tta: str = "none", check: Callable[[list[Task]], Any] | None = None
                     ) -> tuple[dict[str, Any], list[Task], Any, Any]:
    """:func:`predict_checkpoint` for a file from ``facemtl export`` (``.onnx``, ``.xml``, ...),
    run by ``runtime`` (default: by suffix) through its Predictor on the split its metadata
    records: ``(predictions as from predict_set_runtime, tasks, the data, the predictor)``.
    A list of files is an ensemble (:func:`~facemtl.inference.load_predictor`), scored on the
    first file's split once its faces are known to be held out from every file's training.

    ``data_root`` is made absolute as :func:`predict_checkpoint` makes it, so that a
    checkpoint and its export list the same face paths.
    """
    from ..data.model_data import model_data
    from ..inference import load_predictor

    predictor = load_predictor(path, runtime, device, batch_size)
    if check is not None:
        check(predictor.tasks)
    root = typed_path(data_root) if data_root else None
    data = model_data(predictor.info, root)
    part = data.split(split)
    if len(part) == 0:
        raise ValueError(f"the {split} split of this data is empty")
    _check_same_split(predictor.info.extra, data, predictor.tasks, split,
                      str(root or predictor.info.extra.get("data_root")))
    members = predictor.info.extra.get("ensemble")
    if members:  # several files: each must hold out the faces the ensemble is scored on
        from ..data.model_data import check_held_out

        check_held_out(part.paths, split, [(m["file"], rt.info) for m, rt in zip(members, predictor.runtime.runtimes)],
                       root)
    return predict_set_runtime(predictor, part, tta), predictor.tasks, data, predictor
