"""Numbers of a report: per-variant mean and spread over seeds, and the sources' claims tested.

A claim "A beats B" is judged on paired per-seed differences (both variants trained
with the same seed on the same split and tested on the same images):

* **supported**: A is better than B for every seed;
* **contradicted**: B is better than A for every seed;
* **no difference**: equal for every seed;
* **inconclusive**: anything else (the seeds disagree).

With two or three seeds this is a weak test; the report prints the differences so
that a reader can judge the size against the seed-to-seed spread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..metrics import mean_and_spread
from ..tasks import MetricColumn, Task
from ..training.evaluation import headline_metrics
from .load import ReportInput, VariantRuns


def variant_metrics(v: VariantRuns) -> dict[str, dict[str, dict[str, Any]]]:
    """``{task: {metric: {"mean", "std", "values", "seeds"}}}`` over the variant's seeds (std: ddof=1)."""
    per_run = [(r.seed, headline_metrics(r.test, r.tasks)) for r in v.runs]
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for task in sorted({t for _, m in per_run for t in m}):
        out[task] = {}
        for metric in sorted({k for _, m in per_run for k in m.get(task, {})}):
            pairs = [(s, m[task][metric]) for s, m in per_run if metric in m.get(task, {})]
            out[task][metric] = {**mean_and_spread([x for _, x in pairs]), "seeds": [s for s, _ in pairs]}
    return out


def fmt(stat: dict[str, Any] | None, column: MetricColumn) -> str:
    """``mean ± std`` in the metric's usual unit (percentages for :attr:`MetricColumn.percent`)."""
    if not stat:
        return "–"
    scale = 100.0 if column.percent else 1.0
    digits = 1 if scale == 100.0 else (1 if column.key == "mse" else 2)
    mean = abs(scale * stat["mean"])
    if 0 < mean < 1:  # at least two significant digits: a 0..1 task's MSE of 0.0949 read "0.1"
        digits = max(digits, 1 - int(np.floor(np.log10(mean))))
    s = f"{scale * stat['mean']:.{digits}f}"
    if len(stat["values"]) > 1:
        s += f" ± {scale * stat['std']:.{digits}f}"
    return s + ("%" if scale == 100.0 else "")


@dataclass
class Claim:
    source: str
    text: str
    better: str
    worse: str
    #: Tasks on which the claim is judged (None: every task both variants have).
    tasks: Sequence[str] | None = None
    #: What the source itself reports for it on UTKFace, where we have read it.
    evidence: str = ""


def standard_claims(tasks: Sequence[Task]) -> list[Claim]:
    """The claims of the paper and the thesis that the standard grid can test (the tasks'
    own :meth:`Task.ablations` among them)."""
    paper_single = {"age": "age-group accuracy 60.17% single task vs 64.74% proposed",
                    "gender": "90.09% single task vs 90.91% proposed", "race": "76.23% single task vs 79.98% proposed"}
    claims = [Claim("paper (Table II)", f"sharing helps {t.name}: the multi-task model beats the single-task network",
                    "proposed", f"single_{t.name}", [t.name], paper_single.get(t.name, "")) for t in tasks]
    for t in tasks:
        claims += [Claim(ab.source, ab.claim, "proposed", f"{ab.suffix}_{t.name}", [t.name]) for ab in t.ablations()]
    claims += [
        Claim("paper (ablation, Table IV)", "uncertainty weighting beats hand-set weights", "proposed", "fixed"),
        Claim("paper (implied)", "uncertainty weighting beats equal weights", "proposed", "equal"),
        Claim("thesis (Tables 4.x)", "the learned loss weight layer beats equal weights", "learned", "equal"),
        Claim("thesis (Algorithm 1, Tables 5.x)", "Early Freeze improves on training without it", "early_freeze", "proposed"),
        Claim("thesis (frozen vs fine-tuned)", "fine-tuning the backbone beats training the heads only",
              "proposed", "frozen_backbone"),
    ]
    return claims


def judge(claim: Claim, data: ReportInput) -> dict[str, Any] | None:
    """Per task: paired per-seed differences (positive = ``better`` is better) and a verdict."""
    if claim.better not in data.variants or claim.worse not in data.variants:
        return None
    better, worse = data.variants[claim.better], data.variants[claim.worse]
    a = {r.seed: headline_metrics(r.test, r.tasks) for r in better.runs}
    b = {r.seed: headline_metrics(r.test, r.tasks) for r in worse.runs}
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    tasks = claim.tasks or sorted(set.intersection(*(set(a[s]) & set(b[s]) for s in seeds)))
    per_task = {}
    for t in tasks:
        pairs = [(a[s].get(t), b[s].get(t)) for s in seeds]
        pairs = [(x, y) for x, y in pairs if x and y]
        if not pairs:
            continue
        head = better.first.task(t).headline
        sign = -1.0 if head.lower_is_better else 1.0
        diffs = [sign * (x[head.key] - y[head.key]) for x, y in pairs]
        verdict = ("supported" if all(d > 0 for d in diffs) else
                   "contradicted" if all(d < 0 for d in diffs) else
                   "no difference" if all(d == 0 for d in diffs) else "inconclusive")
        per_task[t] = {"metric": head.key, "header": head.header, "lower_is_better": head.lower_is_better,
                       "percent": head.percent, "diffs": diffs, "mean": float(np.mean(diffs)), "verdict": verdict}
    if not per_task:
        return None
    verdicts = {x["verdict"] for x in per_task.values()}
    overall = verdicts.pop() if len(verdicts) == 1 else "mixed"
    return {"claim": claim, "tasks": per_task, "verdict": overall, "seeds": seeds}


def describe_diff(t: str, d: dict[str, Any]) -> str:
    """E.g. ``age: MAE 0.21 lower (seeds: +0.30, +0.12)``."""
    scale, unit = (100.0, " pt") if d["percent"] else (1.0, "")
    word = "lower" if d["lower_is_better"] else "higher"
    name = d["header"] if d["lower_is_better"] else d["metric"]
    if d["mean"] < 0:
        word = "higher" if word == "lower" else "lower"
    # rounded first, and + 0.0: an equal result reads "+0.00", not "-0.00" (which reads as a loss)
    seeds = ", ".join(f"{round(scale * x, 2) + 0.0:+.2f}" for x in d["diffs"])
    return f"{t}: {name} {abs(scale * d['mean']):.2f}{unit} {word} (per seed: {seeds}) → {d['verdict']}"
