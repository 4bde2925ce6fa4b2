"""Which networks to average: every subset of the given model files, scored on one split.

    python scripts/ensemble_choice.py A.onnx B.onnx [C.pt ...] [--split val] [--data DIR] [--out FILE] [--all-only]
        [--before K]

Each network reads the split's aligned crops once (at the largest member's side, resized to
its own as :class:`facemtl.inference.runtimes.ensemble.EnsembleRuntime` does); then every
subset of two or more is scored as the mean of its members' raw outputs, decoded by the
tasks, beside each network alone: MAE (numeric tasks) and accuracy with 95 % intervals.
The networks must record the same split (the first file's is used). Choose on ``--split
val``; report the chosen ensemble once on ``test`` with ``--all-only`` (each network alone
and all of them together: no other subset is scored, so none can be chosen there). With
``--before K`` (and ``--all-only``), the first K networks together are scored too, the
ensemble before the others joined, and all minus them face by face: the change in absolute
error or in hits per face, with a 95 % interval of its mean.
"""

from __future__ import annotations

import argparse
import itertools
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="model files (two or more)")
    ap.add_argument("--split", default="val", choices=["val", "test"])
    ap.add_argument("--data", help="the data folder, if it moved since training")
    ap.add_argument("--out", help="also write the figures as JSON here")
    ap.add_argument("--all-only", action="store_true", help="each network alone and all together, no other subset")
    ap.add_argument("--before", type=int, help="with --all-only: also the first K networks together, and all minus them")
    a = ap.parse_args()
    if a.before is not None and not (a.all_only and 1 <= a.before < len(a.models)):
        raise SystemExit(f"--before needs --all-only and 1 <= K < {len(a.models)}")

    from facemtl.data.model_data import check_held_out, model_data
    from facemtl.images import read_square
    from facemtl.inference import load_predictor
    from facemtl.inference.predictor import member_labels
    from facemtl.inference.runtimes.ensemble import resize_batch
    from facemtl.preprocess import to_batch
    from facemtl.subgroups import mean_interval, wilson_interval

    preds = [load_predictor(m) for m in a.models]
    names = member_labels(a.models)
    part = model_data(preds[0].info, a.data).split(a.split)
    try:  # the scored faces must be held out from every network's training
        check_held_out(part.paths, a.split, list(zip(names, (p.info for p in preds))), a.data)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    side = max(p.size for p in preds)
    with ThreadPoolExecutor(2) as ex:
        batch = to_batch(np.stack(list(ex.map(lambda f: read_square(f, side)[0], part.paths))))
    raw = [p.raw_images(resize_batch(batch, p.size)) for p in preds]
    tasks = preds[0].tasks
    out: dict = {"split": a.split, "faces": len(part.paths), "models": names, "rows": []}

    def per_face(combo: tuple[int, ...]) -> dict[str, np.ndarray]:
        """Per task, each labelled face's score: its absolute error, or 1.0 / 0.0 for a right or
        wrong class (:meth:`Task.sample_scores`), from the mean of ``combo``'s raw outputs."""
        got = {}
        for t in tasks:
            y = part.attributes[t.label]
            got[t.name] = t.sample_scores(t.predict(sum(raw[i][t.name] for i in combo) / len(combo)), y)[~np.isnan(y)]
        return got

    combos = [c for k in ([1, len(preds)] if a.all_only else range(1, len(preds) + 1))
              for c in itertools.combinations(range(len(preds)), k)]
    if a.before:
        combos.insert(-1, tuple(range(a.before)))
    scores: dict[tuple[int, ...], dict[str, np.ndarray]] = {}
    for combo in combos:
        got = scores[combo] = scores.get(combo) or per_face(combo)
        row: dict = {"members": [names[i] for i in combo]}
        for t in tasks:
            v = got[t.name]
            if t.class_names() is None:
                row[t.name] = {"mae": round(float(v.mean()), 3), "ci95": [round(x, 3) for x in mean_interval(v)]}
            else:
                hit, n = int(v.sum()), len(v)
                row[t.name] = {"accuracy": round(hit / n, 4), "ci95": [round(x, 4) for x in wilson_interval(hit, n)]}
        out["rows"].append(row)
        print(json.dumps(row))
    if a.before:  # all minus the first K, face by face (years of absolute error; accuracy points)
        old, new = scores[tuple(range(a.before))], scores[tuple(range(len(preds)))]
        out["all_minus_before"] = {}
        for t in tasks:
            d = new[t.name] - old[t.name]
            scale = 1.0 if t.class_names() is None else 100.0
            out["all_minus_before"][t.name] = {"mean": round(float(d.mean()) * scale, 3),
                                               "ci95": [round(x * scale, 3) for x in mean_interval(d)]}
        print(json.dumps({"all_minus_before": out["all_minus_before"]}))
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
