"""Numbers of a report: per-variant mean and spread over seeds, and the sources' claims tested.

A claim "A beats B" is judged per task on paired runs (both variants trained with the same
seed on the same split and tested on the same faces). The per-seed differences of the task's
headline metric are kept for the reader; the verdict rests on the faces:

* per seed and face, the paired difference of the face's score (:meth:`Task.sample_scores`: 1/0
  for a right or wrong answer, the absolute error for a numeric task; signed so that positive
  favours A), a matrix ``D`` of ``S`` seeds by ``F`` faces (a face unscored in any seed dropped);
* the 95 % interval of its mean (:func:`paired_interval`). Over the faces alone, from the
  per-face means over the seeds: ``mean ± 1.96 sd / sqrt(F)`` (sd with ddof=1; a normal
  approximation, the test splits hold hundreds of faces). With two seeds or more, the seeds'
  share too, as a crossed two-way random-effects design (seed x face; method of moments, as
  in generalizability theory): ``Var(mean) = (MS_seed + MS_face - MS_resid) / (S F)``, with
  Satterthwaite's degrees of freedom for Student's t, wherever that is wider than the faces'
  alone (a seed-to-seed shift common to every face, which the faces cannot see). Its mean is
  the mean of the per-seed headline differences (accuracy and MAE are means over faces).

Verdicts:

* **supported**: the interval lies above 0;
* **contradicted**: it lies below 0;
* **within noise**: it holds 0;
* **no difference**: the headline is equal for every seed.

With one seed, the interval covers the faces only, and another seed may land elsewhere: a
verdict other than "within noise" says so, **supported (one seed)** or **contradicted (one
seed)** (a user test: one seed of one epoch read plainly "supported").

Before 2026-11-28 the interval covered the faces alone: three seeds whose differences were
+0.3, -0.1 and +0.1 years on every face read "supported" (0.06 to 0.15) where they say little.

Runs saved without per-face test predictions (``test_predictions.npz``; older runs), tested on
different faces, or a task whose headline is not a mean of its per-face scores, fall back to
the seeds alone: **supported (seeds only)** or **contradicted (seeds only)** when two or more
seeds all agree, **no difference** when all are equal, else **inconclusive**; the result says
why there is no interval (``no_interval``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..metrics import mean_and_spread
from ..subgroups import Z95, t975
from ..tasks import MetricColumn, Task
from ..training.evaluation import headline_metrics
from .load import ReportInput, RunLog, VariantRuns


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
    """Per task: paired per-seed differences of the headline (positive = ``better`` is better),
    the 95 % interval of the per-face paired difference (``interval``, over ``faces`` faces, or
    ``None`` and why in ``no_interval``) and a verdict (see the module's docstring).

    Also ``seeds`` (paired: both variants finished with them) and ``missing`` (``"<variant>
    seed <k>"`` for each run of the experiment's seeds that one of the two variants lacks)."""
    if claim.better not in data.variants or claim.worse not in data.variants:
        return None
    better, worse = data.variants[claim.better], data.variants[claim.worse]
    runs_a = {r.seed: r for r in better.runs}
    runs_b = {r.seed: r for r in worse.runs}
    a = {s: headline_metrics(r.test, r.tasks) for s, r in runs_a.items()}
    b = {s: headline_metrics(r.test, r.tasks) for s, r in runs_b.items()}
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    missing = [f"{v.name} seed {s}" for s in sorted(set(data.seeds) | set(a) | set(b))
               for v, runs in ((better, a), (worse, b)) if s not in runs]
    tasks = claim.tasks or sorted(set.intersection(*(set(a[s]) & set(b[s]) for s in seeds)))
    per_task = {}
    for t in tasks:
        paired = [s for s in seeds if a[s].get(t) and b[s].get(t)]
        if not paired:
            continue
        task = better.first.task(t)
        head = task.headline
        sign = -1.0 if head.lower_is_better else 1.0
        diffs = [sign * (a[s][t][head.key] - b[s][t][head.key]) for s in paired]
        per_face, why = _face_differences(task, sign, (better.name, worse.name),
                                          [(runs_a[s], runs_b[s]) for s in paired],
                                          [(a[s][t][head.key], b[s][t][head.key]) for s in paired])
        interval, over = None, None
        if per_face is not None:
            interval, over = paired_interval(per_face)
        if all(d == 0 for d in diffs):
            verdict = "no difference"
        elif interval is not None:
            verdict = ("supported" if interval[0] > 0 else "contradicted" if interval[1] < 0 else "within noise")
            if len(paired) == 1 and verdict != "within noise":  # (how far another seed lands is not measured)
                verdict += " (one seed)"
        elif len(diffs) > 1 and all(d > 0 for d in diffs):
            verdict = "supported (seeds only)"
        elif len(diffs) > 1 and all(d < 0 for d in diffs):
            verdict = "contradicted (seeds only)"
        else:
            verdict = "inconclusive"
        per_task[t] = {"metric": head.key, "header": head.header, "lower_is_better": head.lower_is_better,
                       "percent": head.percent, "diffs": diffs, "seeds": paired, "mean": float(np.mean(diffs)),
                       "interval": interval, "interval_over": over,
                       "faces": None if per_face is None else per_face.shape[1],
                       "no_interval": why, "verdict": verdict}
    if not per_task:
        return None
    verdicts = {x["verdict"] for x in per_task.values()}
    if len(verdicts) > 1:  # a task with no difference at all sides with any other (a user test: age "within
        verdicts.discard("no difference")  # noise", gender and race "no difference" read "mixed")
    overall = verdicts.pop() if len(verdicts) == 1 else "mixed"
    return {"claim": claim, "tasks": per_task, "verdict": overall, "seeds": seeds, "missing": missing}


def paired_interval(d: np.ndarray) -> tuple[list[float], str]:
    """The 95 % interval of the mean of paired differences ``d`` ``(S seeds, F faces)`` and what it
    covers (``"faces"`` or ``"faces and seeds"``; see the module's description).

    Faces: the per-face means over the seeds, ``mean ± 1.96 sd / sqrt(F)``. Seeds and faces
    (``S >= 2``), a crossed random-effects design: with ``MS_seed = F var(row means)``, ``MS_face
    = S var(column means)`` and ``MS_resid`` the interaction's mean square (``(S-1)(F-1)`` degrees
    of freedom), ``Var(mean) = (MS_seed + MS_face - MS_resid) / (S F)``, Student's t at
    Satterthwaite's ``df = (MS_seed + MS_face - MS_resid)^2 / (MS_seed^2 / (S-1) + MS_face^2 /
    (F-1) + MS_resid^2 / ((S-1)(F-1)))`` (rounded down), where ``MS_seed > MS_resid`` (the seeds
    shift every face more than the seed-by-face noise explains; ``Var(mean)`` is then above the
    faces' ``MS_face / (S F)``), and never narrower than the faces'. Seeds that agree on every
    face give ``MS_seed = MS_resid = 0`` and the faces' interval."""
    d = np.asarray(d, float)
    s, f = d.shape
    mean = float(d.mean())
    faces = d.mean(0)
    half = Z95 * float(faces.std(ddof=1)) / np.sqrt(f)
    over = "faces"
    if s >= 2:
        rows = d.mean(1)
        ms_seed = f * float(rows.var(ddof=1))
        ms_face = s * float(faces.var(ddof=1))
        ms_resid = float(((d - rows[:, None] - faces[None, :] + mean) ** 2).sum()) / ((s - 1) * (f - 1))
        # the seeds' shift is more than their faces' noise (past rounding: seeds that agree give 0 and 0)
        if ms_seed - ms_resid > 1e-9 * (ms_seed + ms_face + ms_resid):
            combined = ms_seed + ms_face - ms_resid
            df = combined ** 2 / (ms_seed ** 2 / (s - 1) + ms_face ** 2 / (f - 1) + ms_resid ** 2 / ((s - 1) * (f - 1)))
            half = max(half, t975(max(int(df), 1)) * float(np.sqrt(combined / (s * f))))
            over = "faces and seeds"
    return [mean - half, mean + half], over


def _face_differences(task: Task, sign: float, names: tuple[str, str], pairs: Sequence[tuple[RunLog, RunLog]],
                      heads: Sequence[tuple[float, float]]) -> tuple[np.ndarray | None, str]:
    """Per seed and face, the paired score difference ``sign * (better - worse)`` ``(S, F)``, for
    the paired seeds ``pairs`` (runs of the variants ``names``; faces unscored in any seed dropped),
    and ``""``; or ``None`` and why not (what follows "no per-face test: ").

    ``heads``: each pair's headline values, which the means of the scores must reproduce (else
    the headline is not a mean over faces and the faces cannot test it)."""
    rows: list[np.ndarray] = []
    faces: np.ndarray | None = None
    for (ra, rb), (ha, hb) in zip(pairs, heads):
        scores, paths = [], []
        for name, r, h in ((names[0], ra, ha), (names[1], rb, hb)):
            pr = r.predictions
            if pr is None or f"pred/{task.name}" not in pr or f"true/{task.name}" not in pr or "paths" not in pr:
                return None, f"{name} seed {r.seed} has no per-face test predictions"
            sc = np.asarray(task.sample_scores(pr[f"pred/{task.name}"], pr[f"true/{task.name}"]), float)
            if sc.ndim != 1 or len(sc) != len(pr["paths"]):
                return None, f"{task.name}'s per-face scores do not line up with the faces"
            known = sc[~np.isnan(sc)]
            if not len(known) or abs(float(known.mean()) - h) > 1e-6 * max(1.0, abs(h)):
                return None, f"{task.name}'s {task.headline.key} is not the mean of its per-face scores"
            scores.append(sc)
            paths.append(pr["paths"])
        pa, pb = paths
        if not np.array_equal(pa, pb):
            return None, f"{names[0]} and {names[1]} seed {ra.seed} were tested on different faces"
        if faces is None:
            faces = pa
        elif not np.array_equal(faces, pa):
            return None, f"seed {pairs[0][0].seed} and seed {ra.seed} were tested on different faces"
        rows.append(sign * (scores[0] - scores[1]))
    d = np.stack(rows)
    d = d[:, ~np.isnan(d).any(0)]
    if d.shape[1] < 2:
        return None, f"{d.shape[1]} face scored for {task.name} in every paired run"
    return d, ""


def describe_diff(t: str, d: dict[str, Any]) -> str:
    """E.g. ``gender: accuracy 1.20 pt higher (95% interval -0.40 to +2.80 over 812 faces; per seed:
    +0.90, +1.50) → within noise``; without an interval, why not in its place."""
    scale, unit = (100.0, " pt") if d["percent"] else (1.0, "")
    word = "lower" if d["lower_is_better"] else "higher"
    name = d["header"] if d["lower_is_better"] else d["metric"]
    if d["mean"] < 0:
        word = "higher" if word == "lower" else "lower"

    def signed(x: float) -> str:
        # rounded first, and + 0.0: an equal result reads "+0.00", not "-0.00" (which reads as a loss)
        return f"{round(scale * x, 2) + 0.0:+.2f}"

    seeds = ", ".join(signed(x) for x in d["diffs"])
    if d.get("interval"):
        lo, hi = d["interval"]
        faces = f"{d['faces']:,} face" + ("" if d["faces"] == 1 else "s")
        if d.get("interval_over") == "faces and seeds":
            faces += f" and {len(d['seeds'])} seeds"
        basis = f"95% interval {signed(lo)} to {signed(hi)} over {faces}; "
    elif d.get("no_interval"):
        basis = f"no per-face test: {d['no_interval']}; "
    else:
        basis = ""
    return f"{t}: {name} {abs(scale * d['mean']):.2f}{unit} {word} ({basis}per seed: {seeds}) → {d['verdict']}"
