"""The accurate variant against the fast path on the shipped model's held-out test split.

    python scripts/evaluate_accurate.py [--data ../shared/data/utkface] [--limit N] [--out FILE]
        [--model M.pt --fusion F.json]   # another model and its fusion file (facemtl fusion)

Runs the same aligned test crops through ``FaceAnalyzer(aligned)`` twice in one process,
without and with ``fusion=True`` (the shipped fusion file: classifiers on dlib's face
descriptor mixed into gender and race), and prints for each: accuracy of every
classification task with its 95 % Wilson interval, the gender accuracy by race with the
largest gap between races, and the seconds per face each path took (in-process, the same
minutes; `facemtl benchmark` measures the whole processes). Ages are the network's in both
paths (the fusion touches only classification tasks), so age is not repeated here.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


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
    from facemtl.subgroups import wilson_interval as wilson

    model = a.model or default_model_path()
    info = load_predictor(model).info
    test = model_data(info, a.data).test
    paths = list(test.paths[: a.limit] if a.limit else test.paths)
    classif = [t for t in info.build_tasks() if t.class_names() is not None]
    truth = {t.name: test.attributes[t.label][: len(paths)] for t in classif}
    race = test.attributes["race"][: len(paths)] if "race" in test.attributes else None
    race_names = next((t.class_names() for t in classif if t.label == "race"), None)

    out: dict = {"faces": len(paths), "model": str(model), "fusion": a.fusion or "shipped"}
    for name, fusion in (("fast", None), ("accurate", a.fusion or True)):
        with FaceAnalyzer(model, fusion=fusion) as analyzer:
            t0 = time.perf_counter()
            results = list(analyzer.analyze_files(paths, aligned=True))
            seconds = time.perf_counter() - t0
        row: dict = {"seconds_per_face": round(seconds / len(paths), 4)}
        for t in classif:
            names = t.class_names()
            pred = np.array([names.index(r.faces[0].answers[t.name].value) if r.faces else -1 for r in results])
            y = truth[t.name]
            ok = ~np.isnan(y)
            k, n = int((pred[ok] == y[ok]).sum()), int(ok.sum())
            row[t.name] = {"accuracy": round(k / n, 4), "ci95": [round(x, 4) for x in wilson(k, n)], "n": n}
            if t.name == "gender" and race is not None:
                by = {}
                for ri, rn in enumerate(race_names or []):
                    m = ok & (race == ri)
                    kk, nn = int((pred[m] == y[m]).sum()), int(m.sum())
                    if nn:
                        by[rn] = {"accuracy": round(kk / nn, 4), "ci95": [round(x, 4) for x in wilson(kk, nn)], "n": nn}
                accs = {r: v["accuracy"] for r, v in by.items()}
                row["gender_by_race"] = by
                row["gender_gap_points"] = round(100 * (max(accs.values()) - min(accs.values())), 2)
                row["gender_gap_between"] = [max(accs, key=accs.get), min(accs, key=accs.get)]
        out[name] = row
        print(name, json.dumps(row))
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
