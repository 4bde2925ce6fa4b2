"""The accurate variant against the fast path on the shipped model's held-out test split.

    python scripts/evaluate_accurate.py [--data ../shared/data/utkface] [--limit N] [--out FILE]
        [--model M.pt --fusion F.json]   # another model and its fusion file (facemtl fusion)

Runs the same aligned test crops through ``FaceAnalyzer(aligned)`` twice in one process:
the fast path (the default model, or ``--model``) and ``--accurate`` (the shipped fusion
file, or ``--fusion``: classifiers on dlib's face descriptor mixed into gender and race,
over the networks the fusion file names, the shipped one an ensemble of seven, five of them
160 px, unless ``--model`` is given). For each it prints every classification task's
accuracy with its 95 % Wilson interval, each numeric task's mean absolute error with its
95 % interval, the gender accuracy and each numeric task's error by race with the largest
gap between races (95 % intervals), the gender gap again among faces aged 10 and over (with
each race's share of younger faces), and the seconds per face each path took (in-process,
the same minutes; ``facemtl benchmark`` times whole processes); then, face by face,
accurate minus fast for every task with a 95 % interval of the mean difference. Both
paths' networks must record the same split, so the test faces are the same.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

#: Age (years) from which faces enter the second gender-gap reading: gender is a guess on an
#: infant's face, and the races' shares of children differ (UTKFace: a quarter of its Asian
#: faces are under 10, a tenth of its White ones).
OLDER_THAN = 10


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="UTKFace folder (default: the one the shipped model records)")
    ap.add_argument("--limit", type=int, help="first N test faces only")
    ap.add_argument("--out", help="also write the figures as JSON here")
    ap.add_argument("--model", help="the model file (default: the shipped one)")
    ap.add_argument("--fusion", help="its fusion file (default: the shipped one, for the shipped model)")
    a = ap.parse_args()

    from facemtl.data.model_data import model_data
    from facemtl.inference import FaceAnalyzer, default_model_path, load_predictor
    from facemtl.subgroups import accuracy_gap, group_gap, mean_interval, wilson_interval as wilson

    model = a.model or default_model_path()
    info = load_predictor(model).info
    test = model_data(info, a.data).test
    paths = list(test.paths[: a.limit] if a.limit else test.paths)
    tasks = info.build_tasks()
    truth = {t.name: test.attributes[t.label][: len(paths)] for t in tasks}
    race = test.attributes["race"][: len(paths)] if "race" in test.attributes else None
    race_names = next((t.class_names() for t in tasks if t.label == "race"), None)
    age = test.attributes["age"][: len(paths)] if "age" in test.attributes else None

    out: dict = {"faces": len(paths), "model": str(model), "fusion": a.fusion or "shipped"}
    scores: dict = {}  # per path and task, one score per face: correct (0/1) or absolute error
    for name, fusion in (("fast", None), ("accurate", a.fusion or True)):
        # without --model the accurate path runs the network its fusion file names
        with FaceAnalyzer(a.model if name == "accurate" else model, fusion=fusion) as analyzer:
            used = analyzer.predictor.info
            if model_data(used, a.data).test.paths[: len(paths)] != paths:
                raise SystemExit(f"the {name} path's network records another test split")
            t0 = time.perf_counter()
            results = list(analyzer.analyze_files(paths, aligned=True))
            seconds = time.perf_counter() - t0
        row: dict = {"network": used.name, "image_size": used.image_size, "version": used.version,
                     "seconds_per_face": round(seconds / len(paths), 4)}
        scores[name] = {}
        for t in tasks:
            y = truth[t.name]
            ok = ~np.isnan(y)
            names = t.class_names()
            if names is None:  # numeric: mean absolute error, in the task's unit
                pred = np.array([float(r.faces[0].answers[t.name].value) if r.faces else np.nan for r in results])
                err = np.abs(pred - y)
                scores[name][t.name] = err
                e = err[ok]
                row[t.name] = {"mae": round(float(e.mean()), 3), "ci95": [round(x, 3) for x in mean_interval(e)],
                               "n": int(ok.sum())}
                if race is not None:  # the error by race, and the largest gap between races
                    g = group_gap(err[ok], race[ok], race_names or [], "mae")
                    row[f"{t.name}_by_race"] = {rn: {"mae": round(v["mean"], 3), "ci95": [round(x, 3) for x in v["ci95"]],
                                                     "n": v["n"]} for rn, v in g["by"].items()}
                    row[f"{t.name}_gap"] = round(g["gap"], 2)
                    row[f"{t.name}_gap_between"] = [g["highest"], g["lowest"]]
                    row[f"{t.name}_gap_ci95"] = [round(x, 2) for x in g["gap_ci95"]]
                continue
            pred = np.array([names.index(r.faces[0].answers[t.name].value) if r.faces else -1 for r in results])
            hit = (pred == y).astype(float)
            scores[name][t.name] = hit
            k, n = int(hit[ok].sum()), int(ok.sum())
            row[t.name] = {"accuracy": round(k / n, 4), "ci95": [round(x, 4) for x in wilson(k, n)], "n": n}
            if t.name == "gender" and race is not None:
                m = ok & ~np.isnan(race)
                gap = accuracy_gap(hit[m], race[m], race_names or [])
                row["gender_by_race"] = gap["by"]
                row["gender_gap_points"], row["gender_gap_between"] = gap["gap_points"], gap["between"]
                row["gender_gap_ci95"] = gap["gap_ci95"]
                if age is not None:  # the same among faces old enough for the face to show gender
                    adult = m & (age >= OLDER_THAN)
                    older = accuracy_gap(hit[adult], race[adult], race_names or [])
                    row[f"gender_by_race_age_{OLDER_THAN}_plus"] = {
                        **older, "share_under": {rn: round(float((age[m & (race == ri)] < OLDER_THAN).mean()), 3)
                                                 for ri, rn in enumerate(race_names or []) if (m & (race == ri)).any()}}
        out[name] = row
        print(name, json.dumps(row))
    # face by face: accurate minus fast (accuracy in points, error in the task's unit)
    diff = {}
    for t in tasks:
        ok = ~np.isnan(truth[t.name])
        d = (scores["accurate"][t.name] - scores["fast"][t.name])[ok]
        scale = 1 if t.class_names() is None else 100
        diff[t.name] = {"mean": round(scale * float(d.mean()), 3),
                        "ci95": [round(scale * x, 3) for x in mean_interval(d)]}
    out["accurate_minus_fast"] = diff
    print("accurate - fast", json.dumps(diff))
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
