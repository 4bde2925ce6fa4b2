"""Per variant of an experiment folder: test metrics as mean and 95 % t-interval over seeds,
the paired difference from a reference variant (same seed, same test faces), and the largest
gender-accuracy gap between races (mean over seeds); then, per variant, the difference from
the reference pooled over seeds face by face (each test face's score difference averaged over
the seeds both ran, with the Student-t 95 % interval over faces: it covers the draw of test
faces, the seed-wise t-interval covers the seeds).

    python scripts/grid_gaps.py runs/exp-distill [--reference baseline] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def interval(x: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95 % Student-t interval (three seeds are too few for the normal
    approximation; :func:`facemtl.subgroups.mean_interval`, whose ``z`` argument this script still
    passed after it had become Student-t itself: the script failed)."""
    from facemtl.subgroups import mean_interval

    a = np.asarray(x, float)
    lo, hi = mean_interval(a)
    return float(a.mean()), (hi - lo) / 2


def seed_figures(run: Path) -> dict[str, float]:
    d = np.load(run / "test_predictions.npz", allow_pickle=True)
    ok_g = d["pred/gender"] == d["true/gender"]
    race = d["attr/race"]
    by_race = {r: float(ok_g[race == r].mean()) for r in np.unique(race[~np.isnan(race.astype(float))])}
    return {"age_mae": float(np.abs(d["pred/age"] - d["true/age"]).mean()),
            "gender": float(ok_g.mean()), "race": float((d["pred/race"] == d["true/race"]).mean()),
            "gender_gap": max(by_race.values()) - min(by_race.values())}


def face_scores(run: Path) -> dict[str, np.ndarray]:
    """Per test face: right (1) or wrong (0) for gender and race (NaN: no label), absolute age error."""
    d = np.load(run / "test_predictions.npz", allow_pickle=True)
    out = {"age_mae": np.abs(d["pred/age"] - d["true/age"]).astype(float)}
    for k in ("gender", "race"):
        t = d[f"true/{k}"].astype(float)
        out[k] = np.where(np.isnan(t), np.nan, (d[f"pred/{k}"] == t).astype(float))
    return out


def pooled_difference(folder: Path, variant: str, reference: str, seeds: list[str]) -> dict[str, list[float]]:
    """``{metric: [mean, half-width]}`` of the per-face difference, averaged over ``seeds`` first."""
    from facemtl.subgroups import mean_interval

    per_seed = [(face_scores(folder / variant / s), face_scores(folder / reference / s)) for s in seeds]
    out = {}
    for k, scale in (("age_mae", 1), ("gender", 100), ("race", 100)):
        d = np.mean([v[k] - r[k] for v, r in per_seed], 0) * scale
        d = d[~np.isnan(d)]
        lo, hi = mean_interval(d)
        out[k] = [float(d.mean()), (hi - lo) / 2]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--reference", default="baseline")
    ap.add_argument("--out")
    a = ap.parse_args()
    runs = Path(a.folder) / "runs"
    figs = {v.name: {s.name: seed_figures(s) for s in sorted(v.iterdir()) if (s / "test_predictions.npz").is_file()}
            for v in sorted(runs.iterdir())}
    ref = figs[a.reference]
    out = {}
    print("| variant | seeds | age MAE | gender % | race % | gender gap between races, points | "
          f"vs {a.reference}: age MAE | gender | race | gap |")
    print("|---|---:|---|---|---|---|---|---|---|---|")
    for v, seeds in figs.items():
        row = {"seeds": len(seeds)}
        cells = []
        for k, scale in (("age_mae", 1), ("gender", 100), ("race", 100), ("gender_gap", 100)):
            m, h = interval([s[k] * scale for s in seeds.values()])
            row[k] = [m, h]
            cells.append(f"{m:.2f} ± {h:.2f}")
        diffs = []
        for k, scale in (("age_mae", 1), ("gender", 100), ("race", 100), ("gender_gap", 100)):
            common = [s for s in seeds if s in ref]
            m, h = interval([(seeds[s][k] - ref[s][k]) * scale for s in common])
            row[f"diff_{k}"] = [m, h]
            diffs.append("" if v == a.reference else f"{m:+.2f} ± {h:.2f}")
        out[v] = row
        print(f"| {v} | {len(seeds)} | " + " | ".join(cells) + " | " + " | ".join(diffs) + " |")
    print(f"\nPooled face by face over the seeds, vs {a.reference} (95 % interval over test faces):")
    for v, seeds in figs.items():
        common = [s for s in seeds if s in ref]
        if v == a.reference or not common:
            continue
        out[v]["pooled_diff"] = p = pooled_difference(runs, v, a.reference, common)
        print(f"  {v}: age MAE {p['age_mae'][0]:+.2f} ± {p['age_mae'][1]:.2f} years, gender {p['gender'][0]:+.2f} ± "
              f"{p['gender'][1]:.2f} points, race {p['race'][0]:+.2f} ± {p['race'][1]:.2f} points ({len(common)} seeds)")
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
