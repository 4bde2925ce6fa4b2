"""``facemtl fusion``: fit the accurate variant's classifiers on dlib's face descriptor
beside a model's network, and write its fusion file.

Kept apart from :mod:`facemtl.cli`, which lists it in its command table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence


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
    classifiers never saw its test faces. Default: ``checkpoint`` itself (a user test: a file
    fitted for one's own model, given to ``analyze --fusion`` alone, ran the shipped network
    beside classifiers fitted on another split, without a word).
    """
    from .data.dataset import balance_weights, split_as_trained
    from .data.teacher import teacher_features
    from .faces.descriptor import NAME
    from .inference.fusion import checked_networks_alone, fit_fusion
    from .model import load_model
    from .system import check_new_file

    if os.path.isdir(out):  # before any descriptor is computed (a user test: refused after the fit)
        raise ValueError(f"--out {out} is a folder; give a file name, e.g. {os.path.join(out, 'fusion.json')}")
    check_new_file(out, f"--out {out}")
    _, tasks, cfg, state = load_model(checkpoint)
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
    data = split_as_trained(cfg.data, [t for t in tasks if not t.derives_label], cfg.train.seed,
                            state.get("split_tasks"), load_images=False)
    weights = {}  # checked and made before any descriptor is computed
    for task, columns in (balance or {}).items():
        if task not in {t.name for t in chosen}:
            raise ValueError(f"--balance names task {task!r}; the fusion file covers {', '.join(t.name for t in chosen)}")
        missing = [c for c in columns if c not in data.train.attributes]
        if not columns or missing:
            raise ValueError(f"--balance {task}= needs label columns of this data ({', '.join(sorted(data.train.attributes))})"
                             + (f"; it has no {missing[0]!r}" if missing else ""))
        weights[task] = balance_weights(data.train.attributes, tasks, columns)[0].numpy()
    networks = [network] if isinstance(network, str) else list(network or [checkpoint])
    for net in networks:
        if Path(net).resolve() != Path(checkpoint).resolve():
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
    if networks:  # (always: the checkpoint when none is named)
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
    from .data.model_data import model_data, same_files
    from .inference import load_predictor

    info = load_predictor(network, device="cpu").info
    missing = [t for t in tasks if t not in {x.name for x in info.build_tasks()}]
    if missing:
        raise ValueError(f"{network} does not answer task {missing[0]!r}, which the fusion file covers")
    theirs = model_data(info, data_root)
    for part in ("train", "val", "test"):  # (as resolved paths: a relative data folder is the same folder)
        if same_files(theirs.split(part).paths) != same_files(data.split(part).paths):
            raise ValueError(f"{network} was trained on another split than {checkpoint} (its {part} faces "
                             "differ): the descriptor classifiers may have seen its test faces")



def fusion_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="the model (.pt) whose classification tasks to help")
    p.add_argument("--out", required=True, help="the fusion file to write (JSON)")
    p.add_argument("--data-root", "--data", metavar="DIR", help="data folder, if it moved since training")
    p.add_argument("--mix", type=float, default=0.5,
                   help="weight of the network's probabilities (the rest: the descriptor's)")
    p.add_argument("--network", metavar="MODEL_FILE", action="append",
                   help="the network 'analyze --fusion' runs when no --checkpoint is given (default: "
                        "--checkpoint's model); repeat it for an ensemble (the mean of the networks' outputs); each "
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



def fusion_run(a: argparse.Namespace) -> int:
    print(json.dumps(fusion(a.checkpoint, a.out, a.data_root, a.mix, a.network, _parse_balance(a.balance),
                            _parse_networks_alone(a.networks_alone))))
    return 0
