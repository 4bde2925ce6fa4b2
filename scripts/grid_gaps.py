"""Per variant of an experiment folder: test metrics as mean and 95 % t-interval over seeds,
the paired difference from a reference variant (same seed, same test faces), and the largest
gender-accuracy gap between races (mean over seeds).

    python scripts/grid_gaps.py runs/exp-distill [--reference baseline] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}  # t(0.975, df)


def interval(x: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95 % t-interval (Student's t quantile in place of the normal's:
    three seeds are too few for the normal approximation)."""
    from facemtl.subgroups import mean_interval

    a = np.asarray(x, float)
    lo, hi = mean_interval(a, z=T95.get(len(a) - 1, 1.96))
    return float(a.mean()), (hi - lo) / 2


def seed_figures(run: Path) -> dict[str, float]:
    d = np.load(run / "test_predictions.npz", allow_pickle=True)
    ok_g = d["pred/gender"] == d["true/gender"]
    race = d["attr/race"]
    by_race = {r: float(ok_g[race == r].mean()) for r in np.unique(race[~np.isnan(race.astype(float))])}
    return {"age_mae": float(np.abs(d["pred/age"] - d["true/age"]).mean()),
            "gender": float(ok_g.mean()), "race": float((d["pred/race"] == d["true/race"]).mean()),
            "gender_gap": max(by_race.values()) - min(by_race.values())}


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
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
