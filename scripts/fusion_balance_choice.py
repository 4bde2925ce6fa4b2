"""Choose (or refuse) a change to the accurate variant's gender answers, on the validation faces.

    python scripts/fusion_balance_choice.py [--data ../shared/data/utkface] [--work DIR] [--out FILE] [--young]

Applies the rule of ``docs/results/fusion_balance_rule.md``, written before any candidate was
fitted, or with ``--young`` that of ``docs/results/fusion_young_rule.md``. Every candidate is a
fusion file fitted by ``facemtl fusion`` (the shipped command, with the shipped networks):

* ``shipped``: the file both rules started from: the shipped classifiers (the refit is checked
  equal to them), mixed in at every age (no ``--networks-alone``);
* ``race_gender``: ``--balance gender=race,gender``;
* ``race_gender_age``: ``--balance gender=race,gender,age`` (age in its bias bands);
* with ``--young`` instead of the two above, ``young_networks_only``: ``--networks-alone
  gender:age<10``, gender answered by the networks alone on faces whose age answer is under 10.

Each is scored on the shipped split's validation faces as ``analyze --accurate`` answers them
(:meth:`FusionHead.fused`, what :class:`FusedPredictor` runs): the mean of the networks' raw
outputs (each network reading the aligned crop at its own side, as
:class:`~facemtl.inference.runtimes.ensemble.EnsembleRuntime` does) mixed with the descriptor
classifier's probabilities, the most probable class; a face without a descriptor keeps the
networks' answer. The descriptors come from the teacher cache (the same dlib call on the same
file as ``analyze --aligned``). Printed and written: per candidate, gender and race accuracy
with 95 % Wilson intervals, gender accuracy by race and the largest gap between races
(:func:`facemtl.subgroups.accuracy_gap`), gender accuracy by race and age band; then which candidate the rule chose, and its fusion
file in ``--work``. The test split is never read.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

CANDIDATES = {"shipped": None, "race_gender": ["race", "gender"], "race_gender_age": ["race", "gender", "age"]}  # --balance
GAP_DROP, GENDER_LOSS = 0.5, 0.3  # points: the rule's thresholds
YOUNG = 10  # years: fusion_young_rule.md's line
AGE_BANDS = [(0, 4), (5, 9), (10, 19), (20, 39), (40, 59), (60, 200)]  # years, for the breakdown by age


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="UTKFace folder (default: the one the shipped model records)")
    ap.add_argument("--work", help="folder for the candidates' fusion files (default: a temporary one)")
    ap.add_argument("--out", help="also write the figures as JSON here")
    ap.add_argument("--young", action="store_true", help="fusion_young_rule.md's candidate instead of the reweighted ones")
    a = ap.parse_args()

    from facemtl.cli import fusion
    from facemtl.data.model_data import model_data, recorded_data
    from facemtl.data.teacher import teacher_features
    from facemtl.faces.descriptor import NAME
    from facemtl.images import read_square
    from facemtl.inference import load_predictor
    from facemtl.inference.fusion import FusionHead, default_fusion_path
    from facemtl.inference.runtimes.ensemble import resize_batch
    from facemtl.preprocess import to_batch
    from facemtl.subgroups import accuracy_gap, wilson_interval

    shipped = FusionHead.load(default_fusion_path())
    networks = shipped.networks or []
    checkpoint = str(default_fusion_path().parent / "utkface_lite0.pt")
    work = Path(a.work or tempfile.mkdtemp(prefix="fusion_balance_"))
    work.mkdir(parents=True, exist_ok=True)
    specs = {"shipped": {}}  # name: the --balance and --networks-alone settings of its fusion file
    if a.young:
        specs["young_networks_only"] = {"networks_alone": {"gender": ("age", YOUNG)}}
    else:
        specs.update({n: {"balance": {"gender": cols}} for n, cols in CANDIDATES.items() if cols})
    heads = {}
    for name, spec in specs.items():
        path = work / f"fusion_{name}.json"
        fusion(checkpoint, str(path), a.data, shipped.mix, networks, spec.get("balance"), spec.get("networks_alone"))
        heads[name] = FusionHead.load(path)
    # the refit without weights must give the shipped classifiers: otherwise the comparison is not the rule's
    drift = max(float(np.abs(np.asarray(heads["shipped"].tasks[t][k]) - np.asarray(shipped.tasks[t][k])).max())
                for t in shipped.tasks for k in ("W", "b"))
    if drift > 1e-4:
        raise SystemExit(f"refitting the shipped fusion file gives other classifiers (largest difference {drift:.2g})")

    preds = [load_predictor(n) for n in networks]
    tasks = preds[0].tasks
    val = model_data(preds[0].info, a.data).val
    side = max(p.size for p in preds)
    with ThreadPoolExecutor(2) as ex:
        batch = to_batch(np.stack(list(ex.map(lambda f: read_square(f, side)[0], val.paths))))
    raws = [p.raw_images(resize_batch(batch, p.size)) for p in preds]
    raw = {t.name: sum(r[t.name] for r in raws) / len(raws) for t in tasks}
    cfg, _ = recorded_data(preds[0].info, a.data)
    feats = teacher_features(val.paths, cfg.cache_dir, NAME)
    has_desc = ~np.isnan(feats).any(1)
    race_task = next(t for t in tasks if t.label == "race")
    race_names = race_task.class_names()
    race = val.attributes["race"]
    by_name = {t.name: t for t in tasks}

    rule = "docs/results/fusion_young_rule.md" if a.young else "docs/results/fusion_balance_rule.md"
    out: dict = {"split": "val", "faces": len(val.paths), "faces_without_descriptor": int((~has_desc).sum()),
                 "networks": [Path(n).name for n in networks], "mix": shipped.mix, "rule": rule, "candidates": {}}
    if a.young:
        age_task = next(t for t in tasks if t.label == "age")
        young = age_task.predict(raw[age_task.name]) < YOUNG  # the accurate variant's own age answer
        out["faces_predicted_under"] = {"years": YOUNG, "faces": int(young.sum())}
    for name, head in heads.items():
        row: dict = {"balance_gender_by": CANDIDATES.get(name)}
        if head.networks_alone:
            row["gender_by_networks_alone_under_years"] = head.networks_alone["gender"]["below"]
        for t in tasks:
            if t.name not in head.tasks:
                continue
            p = np.where(has_desc[:, None], head.fused(t.name, raw, np.nan_to_num(feats), by_name),
                         t.probabilities(raw[t.name]))
            y = val.attributes[t.label]
            ok = ~np.isnan(y)
            hit = (p.argmax(1) == y)[ok].astype(float)
            row[t.name] = {"accuracy": round(float(hit.mean()), 4),
                           "ci95": [round(x, 4) for x in wilson_interval(int(hit.sum()), len(hit))], "n": len(hit)}
            if t.name == "gender":
                m = ok & ~np.isnan(race)
                row["gender_gap"] = accuracy_gap((p.argmax(1) == y)[m].astype(float), race[m], race_names)
                # where the gap lives: gender accuracy per race and age band (true age, years)
                age = val.attributes["age"]
                row["gender_by_race_and_age"] = {
                    f"{lo}-{hi}" if hi < 200 else f"{lo}+": {
                        rn: {"accuracy": round(float((p.argmax(1) == y)[c].mean()), 4), "n": int(c.sum())}
                        for ri, rn in enumerate(race_names) if (c := m & (race == ri) & (age >= lo) & (age <= hi)).any()}
                    for lo, hi in AGE_BANDS}
        out["candidates"][name] = row
        print(name, json.dumps(row))

    base = out["candidates"]["shipped"]
    def hundredths(points: float) -> int:  # compared in whole hundredths of a point: no float edge at the line
        return round(100 * points)

    qualified = [n for n, r in out["candidates"].items() if n != "shipped"
                 and hundredths(r["gender_gap"]["gap_points"]) <= hundredths(base["gender_gap"]["gap_points"] - GAP_DROP)
                 and hundredths(100 * r["gender"]["accuracy"]) - hundredths(100 * base["gender"]["accuracy"])
                 >= -hundredths(GENDER_LOSS)]
    chosen = min(qualified, key=lambda n: (out["candidates"][n]["gender_gap"]["gap_points"], n != "race_gender"),
                 default=None)
    out["qualified"], out["chosen"] = qualified, chosen
    if chosen:
        shutil.copy(work / f"fusion_{chosen}.json", work / "chosen_fusion.json")
        out["chosen_fusion_file"] = str(work / "chosen_fusion.json")
    print("qualified:", qualified, "chosen:", chosen)
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
