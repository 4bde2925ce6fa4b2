"""Assemble a report from run logs: ``report.html`` (self-contained), ``report.md``, PNGs, ``report.json``.

Sections: set-up; metrics of every variant beside the sources' figures (with
protocols); the sources' claims tested; task weights beta_t (paper Fig. 3) and loss
curves; CS(k) curves (Fig. 4); confusion matrices; the intersectional bias study
(Fig. 6), grouped by the columns :func:`bias_groups` picks or is given; Grad-CAM maps (Fig. 5).
Nothing is retrained: Grad-CAM runs the saved best checkpoint forward and backward on a few
test faces, everything else reads files.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from ..jsonutil import jsonable
from . import figures, stats
from .bias import bias_groups, bias_section
from .document import Image, Para, Section, Table, to_html, to_markdown
from .load import ReportInput, load
from .sources import figures_for, protocol_of

if TYPE_CHECKING:
    from ..tasks import Task
    from ..tasks.base import MetricColumn



def write_report(path: str | Path, out: str | Path | None = None, gradcam: bool = True, samples: int = 2,
                 log: Callable[[str], None] = lambda s: None, groups: str | Sequence[str] | None = None) -> Path:
    """Write the report of the run or experiment folder ``path`` into ``out`` (default ``path/report``).

    ``groups``: the grouping columns of the bias study, as task names (a list, or one string
    ``"age,gender"``); ``None`` for the default of :func:`bias_groups`. A name that is no grouping
    column is a ``ValueError`` naming the known ones, raised before anything is written.
    """
    t0 = time.perf_counter()
    data = load(path)
    plan = bias_groups(data.ref.first, groups)
    out = Path(out) if out else data.path / "report"
    if out.exists() and not out.is_dir():  # (said, not "[Errno 17] File exists": a user test)
        raise ValueError(f"--out {out} is a file; the report is a folder (report.html, report.md, its PNGs): "
                         "name a folder")
    out.mkdir(parents=True, exist_ok=True)
    if (out / "report.json").is_file():  # an earlier report here: its images go, so none is left unreferenced
        for old in out.glob("*.png"):
            old.unlink()
    facts: dict[str, Any] = {"name": data.name, "kind": data.kind, "reference": data.reference}
    sections = [
        _setup(data, facts),
        _metrics(data, facts),
    ]
    if data.kind == "experiment":
        sections.append(_claims(data, facts))
    sections += [_curves(data), _cumulative(data), _confusion(data), bias_section(data, facts, plan)]
    if gradcam:
        sections.append(_gradcam(data, samples, log))
    images = [b for s in sections for b in s.blocks if isinstance(b, Image)]
    for im in images:
        (out / im.name).write_bytes(im.png)
    sections[0].add(Para(f"Report written in {time.perf_counter() - t0:.0f} s from the run logs "
                         f"(`facemtl report {data.path}`); nothing was retrained."))
    title = f"facemtl report: {data.name}"
    (out / "report.md").write_text(to_markdown(title, sections))
    (out / "report.json").write_text(json.dumps(facts, indent=1, default=_json))
    html_file = out / "report.html"
    html_file.write_text(to_html(title, sections))
    return html_file


def _json(x: Any) -> Any:
    if isinstance(x, stats.Claim):
        return {"source": x.source, "text": x.text, "better": x.better, "worse": x.worse}
    return jsonable(x)


def _all_tasks(data: ReportInput) -> list[Task]:
    """Every task of every variant, once, in the order they first appear."""
    seen: dict[str, Task] = {}
    for v in data.variants.values():
        for t in v.first.tasks:
            seen.setdefault(t.name, t)
    return list(seen.values())


# -- sections -----------------------------------------------------------------------


def _split_sizes(report: dict[str, Any]) -> str:
    """``; 2,093 / 298 / 594 faces to train, validate and test`` from a run's ``data_report.json``
    (the faces used, after what the data's checks dropped), or nothing where it does not say."""
    n = [report.get(f"{p}_images") for p in ("train", "val", "test")]
    if not all(isinstance(x, int) for x in n):
        return ""
    return f"; {n[0]:,} / {n[1]:,} / {n[2]:,} faces to train, validate and test"


def _batch(batch_size: Any, info: dict[str, Any]) -> str:
    """``batch 32``, or under torchrun ``batch 32 per process x 2 processes (64 in all)``; each
    start's when a resume changed either (``run_info.json``'s ``starts``; a start recorded by
    an older facemtl, without its batch, is left out)."""
    starts = [s for s in info.get("starts") or [info] if isinstance(s, dict)]
    known = [(int(s.get("world_size") or 1), s["batch_size"], int(s.get("after_epoch") or 0)) for s in starts
             if isinstance(s.get("batch_size"), int)] or [(int(info.get("world_size") or 1), batch_size, 0)]

    def said(world: int, batch: Any) -> str:
        if world == 1:
            return f"batch {batch}"
        total = f" ({world * batch} in all)" if isinstance(batch, int) else ""
        return f"batch {batch} per process x {world} processes{total}"

    kinds = [said(w, b) for w, b, _ in known]
    if len(set(kinds)) == 1:
        return kinds[0]
    return "; ".join(f"from epoch {e + 1}: {k}" for (_, _, e), k in zip(known, kinds))


def _setup(data: ReportInput, facts: dict[str, Any]) -> Section:
    cfg = data.base_config
    d, m, tr, o = (cfg.get(k) or {} for k in ("data", "model", "train", "optim"))
    runs = [r for v in data.variants.values() for r in v.runs]
    train_s = sum(r.train_seconds for r in runs)
    info = data.ref.first.info
    hw = data.summary.get("hardware") or info.get("hardware")
    # The data folder as the recipe wrote it, not as resolved on the machine that trained
    # (older runs recorded only the resolved one).
    root = info.get("data_root") or d.get("root", "?")
    where = f" (relative to {Path(info['data_root_from']).name})" if info.get("data_root_from") and \
        not Path(root).is_absolute() and info["data_root_from"] != "the command line" else ""
    protocol = protocol_of(cfg)
    facts.update(protocol=protocol, runs=len(runs), train_seconds=train_s, hardware=hw, seeds=data.seeds,
                 data_root=root)
    s = Section("Set-up", "setup")
    rows = [
        ["report of", f"{'experiment' if data.kind == 'experiment' else 'single run'} `{data.path}`"],
        ["data", f"{d.get('dataset', '?')} at `{root}`{where}; {protocol}; "
                 f"{d.get('image_size', '?')} px input{_split_sizes(data.ref.first.data_report)}"],
        ["model", f"{m.get('backbone', '?')} (pretrained: {m.get('pretrained')}), shared stages "
                  f"{m.get('shared_stages')}, branches by {m.get('branch_by', 'category')}"],
        ["training", f"{tr.get('epochs')} epoch{'' if tr.get('epochs') == 1 else 's'}, {_batch(tr.get('batch_size'), info)}, {o.get('name')} lr {o.get('lr')}"],
        ["seeds", ", ".join(map(str, data.seeds))],
        ["runs", f"{len(runs)} finished ({len(data.variants)} variant(s))"],
        ["training time", f"{train_s / 60:.1f} min in all (sum of per-epoch times in the logs)"],
        ["hardware", ", ".join(f"{k} {v}" for k, v in hw.items()) if hw else "not recorded in the run logs"],
    ]
    if data.overrides:
        rows.insert(4, ["budget (every variant)", ", ".join(f"`{x}`" for x in data.overrides)])
    facts["left_out"] = data.left_out
    facts["not_finished"] = data.not_finished
    if data.not_finished:
        shown = ", ".join(data.not_finished[:12]) + (f" and {len(data.not_finished) - 12} more"
                                                    if len(data.not_finished) > 12 else "")
        rows.insert(6, ["not finished", f"{len(data.not_finished)} run(s) of the grid have no result (not trained, "
                                        f"--only, or stopped before the end), so every table leaves them out: {shown}; "
                                        "`facemtl experiment` with the same settings trains them"])
    if data.left_out:
        rows.insert(6, ["left out", f"{len(data.left_out)} finished run(s) trained with other settings than "
                                    f"`experiment.yaml` now holds (another budget, say), so not compared: "
                                    f"{', '.join(data.left_out)}; run `facemtl experiment` again to retrain them"])
    return s.add(Table(["", ""], rows))


def _metric_columns(data: ReportInput) -> list[tuple[str, MetricColumn]]:
    """``(task, column)`` pairs for the metrics table, from each task's :meth:`Task.metric_columns`."""
    return [(t.name, c) for t in _all_tasks(data) for c in t.metric_columns()]


def _metrics(data: ReportInput, facts: dict[str, Any]) -> Section:
    s = Section("Metrics of every variant", "metrics")
    cols = _metric_columns(data)
    rows, table = [], {}
    for name, v in data.variants.items():
        vm = stats.variant_metrics(v)
        table[name] = {"label": v.label, "group": v.group, "metrics": vm,
                       "train_seconds_per_run": float(np.mean([r.train_seconds for r in v.runs]))}
        rows.append([f"**{name}**" if name == data.reference else name, v.label, str(len(v.runs))]
                    + [stats.fmt(vm.get(t, {}).get(c.key), c) for t, c in cols]
                    + [f"{table[name]['train_seconds_per_run'] / 60:.1f}"])
    facts["variants"] = table
    n = len(data.seeds)
    counted = {len(v.runs) for v in data.variants.values()}
    # (a user test: "over 3 seed(s)" above rows of one finished run each, the grid stopped early)
    over = f"{n} seed(s)" if counted == {n} else \
        f"the finished runs of each variant (the 'seeds' column; {n} seed(s) in the grid)"
    groups = _groups_text(data)
    s.add(Para(f"Test-split metrics, mean ± sample standard deviation over {over}. Accuracies in %; MAE "
               "and MSE in each numeric task's label units (years for age) and their squares; CS(5): share of "
               "faces whose error is at most 5 such units (5 hundredths of the range, CS(0.05), for a "
               "narrow continuous value such as a 0..1 score); other columns as their task defines them."
               + (f" Group accuracy: the prediction falls in the true group ({groups})." if groups else "")))
    s.add(Table(["variant", "what it is", "seeds"] + [f"{t} {c.header}" for t, c in cols] + ["min / run"], rows))
    protocol = protocol_of(data.base_config)
    dataset = (data.base_config.get("data") or {}).get("dataset", "")
    src = figures_for(dataset)
    if src:
        srows = []
        for f in src:
            cells = []
            for t, c in cols:
                val = f.metrics.get(t, {}).get(c.key)
                cells.append("–" if val is None else (f"{100 * val:.2f}%" if c.percent else f"{val:.3f}"))
            same = "same protocol" if f.protocol.split(" (")[0] == protocol.split(" (")[0] else "**different protocol**"
            srows.append([f.source, f.model, f"{f.protocol} ({same})"] + cells)
        s.add(Para(f"The sources' figures on the same dataset. This report's protocol: **{protocol}**. "
                   "Rows marked 'different protocol' must not be compared with the table above; even under the "
                   "same protocol name, the sources' own random splits, input sizes and training budgets differ."))
        s.add(Table(["source", "model", "protocol"] + [f"{t} {c.header}" for t, c in cols], srows))
    return s


def _groups_text(data: ReportInput) -> str:
    for v in data.variants.values():
        for r in v.runs:
            for t, m in (r.test or {}).items():
                if isinstance(m, dict) and "groups" in m:
                    return f"{t} groups {', '.join(m['groups'])}"
    return ""


def _claims(data: ReportInput, facts: dict[str, Any]) -> Section:
    s = Section("The sources' claims, tested", "claims")
    rows, judged = [], []
    for claim in stats.standard_claims(data.ref.first.tasks):
        res = stats.judge(claim, data)
        if res is None:
            continue
        judged.append(res)
        rows.append([claim.text, claim.source, claim.evidence or "–", f"{claim.better} vs {claim.worse}",
                     _paired_seeds(res, data.left_out), f"**{res['verdict']}**",
                     "; ".join(stats.describe_diff(t, d) for t, d in res["tasks"].items())])
    facts["claims"] = judged
    s.add(Para("Each claim compares two variants trained with the same seeds on the same split and tested on the "
               "same faces (\"seeds paired\": the seeds both variants finished; a missing run is named). Per face, "
               "the difference of its score (right or wrong; the absolute error for age) is taken in each paired "
               "seed, and the verdict rests on the 95% interval of its mean: over the faces (mean ± 1.96 s.d. / √n "
               "of the per-face means over the seeds), or over the faces and the seeds where the seeds disagree "
               "more than the faces explain (a crossed seed x face random-effects design, Student's t at "
               "Satterthwaite's degrees of freedom; the text then says \"and N seeds\"): **supported**: the "
               "interval lies above 0 (the first variant is better); **contradicted**: it lies below 0; "
               "**within noise**: it holds 0 (with one seed, a verdict other than this says **(one seed)**: another "
               "seed may land elsewhere, which one seed cannot measure); **no difference**: the metric is "
               "equal for every seed; **mixed**: the verdict differs between tasks (a task with no difference "
               "takes the others' verdict). Runs without per-face test "
               "predictions are judged on the seeds alone: **supported (seeds only)** or **contradicted (seeds "
               "only)** when two or more seeds agree, else **inconclusive**. Differences are first minus second, "
               "in the direction of the claim (positive favours the claim; accuracy in percentage points, MAE in "
               "the task's label units: years for age)."))
    if rows:
        s.add(Table(["claim", "source", "the source on UTKFace", "variants", "seeds paired", "verdict here",
                     "per task here"], rows))
    else:
        s.add(Para("This experiment has none of the variant pairs the claims need."))
    return s


def _paired_seeds(res: dict[str, Any], left_out: Sequence[str] = ()) -> str:
    """``2 seeds (0, 1)``, or ``1 seed (0); proposed seed 1 missing``: the seeds a claim was judged
    on, and the runs of the experiment's seeds that one of its variants lacks (not finished, or
    ``left out``: trained with other settings, :attr:`ReportInput.left_out`)."""
    seeds = res["seeds"]
    said = f"{len(seeds)} seed{'' if len(seeds) == 1 else 's'} ({', '.join(str(x) for x in seeds)})"
    gone = [f"{m} left out" if any(x.startswith(f"{m} (") for x in left_out) else f"{m} missing"
            for m in res.get("missing") or []]
    return "; ".join([said] + gone)


def _curves(data: ReportInput) -> Section:
    s = Section("Task weights and loss curves", "curves")
    series = []
    for name, v in data.variants.items():
        recs = v.first.records
        if recs and any(figures.normalised_weights(r) for r in recs) and len(v.first.tasks) > 1:
            series.append((f"{name} (seed {v.first.seed})", recs))
    if series:
        s.add(Para("Normalised task weights beta_t per epoch (paper eq. 16: beta_i = 1 / sum_j sigma_i² / sigma_j² "
                   "for uncertainty weighting; for the other weightings, their effective weights scaled to sum 1). "
                   "Paper Fig. 3."))
        s.add(Image("weights.png", figures.weight_curves(series), "beta_t per epoch, first seed of each multi-task variant"))
        last = data.ref.first.records[-1] if data.ref.first.records else {}
        beta = figures.normalised_weights(last)
        if beta:
            s.add(Table(["task", "final beta_t", "raw weight"],
                        [[t, f"{b:.3f}", f"{float((last.get('weights') or {}).get(t, math.nan)):.4g}"]
                         for t, b in beta.items()], f"{data.reference}, seed {data.ref.first.seed}, last epoch"))
    recs = data.ref.first.records
    if recs:
        s.add(Image("losses.png", figures.loss_curves(recs, [t.name for t in data.ref.first.tasks]),
                    f"training and validation loss per task, {data.reference} seed {data.ref.first.seed}"))
    return s


def _cumulative(data: ReportInput) -> Section:
    s = Section("Cumulative score CS(k)", "cs")
    tasks = [t for t in _all_tasks(data) if t.cumulative_curve({}) is not None]
    if not tasks:
        return s.add(Para("No task with a numeric error (ordinal or regression): no CS(k) curve."))
    s.add(Para("CS(k) = share of test faces whose absolute error is at most k of the task's units (years for "
               "age; paper eq. 17, Fig. 4), mean over seeds."))
    for task in tasks:
        curves, rows = {}, []
        for name, v in data.variants.items():
            cs = [task.cumulative_curve(r.test[task.name]) for r in v.runs if r.test and task.name in r.test]
            cs = [c for c in cs if c]
            if cs:
                curves[name] = {k: float(np.mean([c[k] for c in cs])) for k in cs[0]}
                rows.append([name] + [f"{100 * curves[name][k]:.1f}" for k in sorted(curves[name])])
        if curves:
            s.add(Image(f"cs_{task.name}.png", figures.cs_curves(curves, task.name, task.unit), f"CS(k) of {task.name}, every variant"))
            # one table per set of error levels: a variant whose curve steps otherwise (a user's own
            # variant of another range) gets a table of its own, not the first one's headings (a user test)
            by_levels: dict[tuple[float, ...], list[list[str]]] = {}
            for row, curve in zip(rows, curves.values()):
                by_levels.setdefault(tuple(sorted(curve)), []).append(row)
            for ks, group in by_levels.items():
                s.add(Table(["variant"] + [f"k={k:g}" for k in ks], group, f"CS(k) of {task.name} in %"))
    return s


def _confusion(data: ReportInput) -> Section:
    s = Section("Confusion matrices", "confusion")
    run = data.ref.first
    pr = run.predictions
    mats = []
    for task in run.tasks:
        if pr is None or f"pred/{task.name}" not in pr:
            continue
        found = task.confusion(pr[f"pred/{task.name}"], pr[f"true/{task.name}"])
        if found is not None:
            mats.append((task.name, found[0], found[1]))
    if not mats:
        return s.add(Para(f"The reference run has no test predictions (test_predictions.npz): {run.no_predictions_why}."))
    s.add(Para(f"{data.reference}, seed {run.seed}, test split. Rows: true class (or group); columns: predicted; "
               "colour: share of the row; numbers: counts."))
    return s.add(Image("confusion.png", figures.confusion_matrices(mats), "confusion matrices per task"))


def _gradcam(data: ReportInput, samples: int, log: Callable[[str], None]) -> Section:
    s = Section("Grad-CAM per task head", "gradcam")
    run = data.ref.first
    if run.checkpoint is None:
        return s.add(Para("The reference run has no checkpoint; no Grad-CAM maps."))
    if run.predictions is None:
        return s.add(Para(f"The reference run has no test predictions (test_predictions.npz): {run.no_predictions_why}; "
                          "no Grad-CAM maps."))
    try:
        import captum  # noqa: F401
    except ImportError:
        return s.add(Para("captum is not installed (`pip install facemtl[report]`); no Grad-CAM maps."))
    import torch

    from ..images import load_rgb
    from ..model import load_model
    from .gradcam import gradcam_maps, pick_samples

    model, tasks, cfg, _ = load_model(run.checkpoint, "cpu")
    size = cfg.data.image_size
    pr = run.predictions
    s.add(Para(f"{data.reference}, seed {run.seed}, best checkpoint, test faces. Maps from captum's LayerGradCam at "
               "the output of the last backbone stage each head reads (1/32 of the input's side for Lite0), each "
               "cell drawn where its receptive field is centred (measured on the network; where it cannot be, "
               "the map is stretched edge to edge and a warning says so); red: regions that raise the score of the "
               "decision made (nominal: the predicted class's logit; ordinal: every threshold's logit signed by "
               "its decision, summed), scaled per face (colours compare regions of one face, not faces). Correct "
               "and wrong as each task defines them (a class task: the right or the wrong class; a numeric one, "
               "age: within 2 years, or 10 or more off; a scale of ranks: the right rank, or a tenth of them "
               "off; another number: within 2 % of its range, or 10 % or more off). Paper Fig. 5."))
    torch.set_grad_enabled(True)
    for i, task in enumerate(tasks):
        if f"pred/{task.name}" not in pr or not task.inference:
            continue  # a training-only task makes no decision at inference to explain
        picks = pick_samples(task, pr[f"pred/{task.name}"], pr[f"true/{task.name}"], samples, seed=i)
        panels = []
        for outcome, idx in picks.items():
            if not len(idx):
                continue
            imgs = np.stack([load_rgb(str(pr["paths"][j]), size) for j in idx])
            maps, pred = gradcam_maps(model, task, imgs)
            for img, cam, p, j in zip(imgs, maps, pred, idx):
                true = task.describe(float(pr[f"true/{task.name}"][j]))
                panels.append((img / 255.0, cam, f"{outcome}: true {true}, pred {task.describe_prediction(float(p))}"))
        if panels:
            s.add(Image(f"gradcam_{task.name}.png", figures.gradcam_grid(panels, cols=max(2, 2 * samples)),
                        f"Grad-CAM of the {task.name} head"))
        log(f"Grad-CAM of {task.name}: {len(panels)} faces")
    return s
