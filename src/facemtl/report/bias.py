"""The report's intersectional bias study (paper Fig. 6): which columns group the test faces
(:func:`bias_groups`: the recipe's first tasks that make groups, or those ``--groups``
names), and the section that scores every task per cell with 95 % intervals and names the
largest gap between cells of enough faces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from . import figures
from .document import Image, Para, Section, Table
from .load import ReportInput, RunLog

if TYPE_CHECKING:
    from ..tasks import Task

#: Cells smaller than this are shown but left out of the "largest gap".
GAP_MIN_COUNT = 30


@dataclass
class BiasGroups:
    """The grouping columns of the bias study of one run (:func:`bias_groups`)."""

    #: The tasks whose label columns group the faces, in order.
    tasks: list[Task]
    #: Per grouping column, named as the tables name it (:attr:`Task.subgroup_column`, e.g.
    #: ``age group``), a group per test face (``"?"``: no label).
    labels: dict[str, np.ndarray]
    #: Whether the columns were named (``--groups``) rather than picked by default.
    given: bool
    #: The other tasks that could group (for the sentence saying how to choose).
    others: list[str] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        return list(self.labels)

    def missing(self) -> np.ndarray:
        """``(N,) bool``: the test faces without a label in some grouping column."""
        n = len(next(iter(self.labels.values()))) if self.labels else 0
        out = np.zeros(n, bool)
        for g in self.labels.values():
            out |= np.asarray(g, dtype=object) == "?"
        return out


def _candidates(run: RunLog) -> dict[str, tuple[Task, str, np.ndarray]]:
    """Per task of ``run`` that groups test faces, in recipe order: the task, its column's name in
    the tables and a group per face (``"?"`` where the face has no label). A task groups when the
    test predictions hold its label column and :meth:`Task.subgroups` makes groups of it (not a
    vector, not a classifier of too many classes, not a training-only target)."""
    pr = run.predictions or {}
    out: dict[str, tuple[Task, str, np.ndarray]] = {}
    for task in run.tasks:
        key = f"attr/{task.label}"
        if key not in pr or np.asarray(pr[key]).ndim != 1:
            continue
        vals = pr[key].astype(float)
        g = task.subgroups(vals)
        if g is None:
            continue
        out[task.name] = (task, task.subgroup_column, np.asarray(g, dtype=object))  # "?" where unlabelled
    return out


def bias_groups(run: RunLog, names: str | Sequence[str] | None = None) -> BiasGroups | None:
    """The grouping columns of ``run``'s bias study; ``None`` where it has no test predictions.

    ``names``: task names (a list, or one comma-separated string); a numeric task groups by its
    bias bands (e.g. age 0-19, 20-39, 40-59, 60+), a classifier by its classes. The column a
    report names (``age group``) is taken for its task too. A name that is no grouping column is a
    ``ValueError`` in one sentence naming the known ones; two names of one column count once.

    ``None``: the default, :func:`facemtl.subgroups.default_columns` over the tasks that group,
    in recipe order (one column per label column, as its first task groups it): the first columns
    of at least two groups, at most 3 columns and 100 cells. The standard age / gender / race
    recipe so gets age group x gender x race (the paper's Fig. 6); a recipe that adds glasses and
    smile after them keeps the same three rather than crossing all five into 160 cells, most of them
    tiny. No type is asked: a task groups by its own :meth:`Task.subgroups`, counted on the test faces.
    """
    from ..subgroups import default_columns

    cands = _candidates(run)
    # without predictions nothing groups yet: any task's name is accepted
    names_known = [t.name for t in run.tasks] if run.predictions is None else list(cands)
    known = ", ".join(names_known) or "none (the test predictions hold no label column a task of this run groups)"
    if names is not None:
        wanted = [x.strip() for x in names.split(",")] if isinstance(names, str) else [str(x).strip() for x in names]
        wanted = [x for x in wanted if x]
        if not wanted:
            raise ValueError(f"groups (--groups) names no column for the bias study; the known grouping columns are: {known}")
        by_column = {col: name for name, (_, col, _) in reversed(list(cands.items()))}
        chosen: list[str] = []
        for w in wanted:
            name = w if w in cands else by_column.get(w)
            if name is None and run.predictions is None and any(t.name == w for t in run.tasks):
                continue  # no predictions to group: the section says so, the name is a task's
            if name is None:
                what = (f"task {w!r} makes no groups" if any(t.name == w for t in run.tasks)
                        else f"{w!r} is no task of this run")
                raise ValueError(f"groups (--groups): {what} for the bias study; the known grouping columns are: {known}")
            if name not in chosen:
                chosen.append(name)
    if run.predictions is None:
        return None
    if names is None:
        first: dict[str, str] = {}
        for name, (_, col, _) in cands.items():
            first.setdefault(col, name)
        cols = default_columns({col: cands[name][2] for col, name in first.items()})
        chosen = [first[c] for c in cols]
    labels: dict[str, np.ndarray] = {}
    tasks: list[Task] = []
    for name in chosen:
        task, col, g = cands[name]
        if col not in labels:
            labels[col] = g
            tasks.append(task)
    taken = {cands[n][1] for n in chosen}
    others = [n for n, (_, col, _) in cands.items() if col not in taken]
    return BiasGroups(tasks, labels, names is not None, others)


def bias_section(data: ReportInput, facts: dict[str, Any], plan: BiasGroups | None) -> Section:
    from ..subgroups import gap_cells, largest_gap, subgroup_table

    s = Section("Intersectional bias study", "bias")
    run = data.ref.first
    pr = run.predictions
    if pr is None or plan is None:
        return s.add(Para("The reference run has no test_predictions.npz; no bias study."))
    if not plan.labels:
        return s.add(Para("No grouping column: the test data carries no label column that a task groups with "
                          "two groups or more (age bands, nominal labels)."))
    gcols = plan.columns
    out = plan.missing()
    ok = ~out
    left_out, faces = int(out.sum()), len(out)
    facts["bias"] = {"groups": [t.name for t in plan.tasks], "columns": gcols,
                     "chosen": "given" if plan.given else "default", "faces": faces, "left_out": left_out,
                     "cells": [], "gaps": {}}
    how = ("as asked (`--groups`)" if plan.given else
           "by default (the recipe's first tasks that make two groups or more, up to 3 columns and 100 cells)")
    others = f" (the other tasks that group: {', '.join(plan.others)})" if plan.others else ""
    s.add(Para(f"Grouped by {' x '.join(gcols)}, {how}; choose other columns with `facemtl report --groups "
               f"TASK[,TASK...]`{others}. {left_out} of {faces} test faces left out for a missing grouping label; "
               "a face missing another task's label stays, and that task's metric in its cell is computed on the "
               "faces with its label (its n shown where it differs)."))
    if not ok.any():
        return s.add(Para("Every test face misses a grouping label: no cell."))
    scored = [t for t in run.tasks if f"pred/{t.name}" in pr and t.inference]  # what users are told
    kinds = {t.name: t.subgroup_metric for t in scored}
    units = {t.name: t.unit for t in scored}
    scores = {t.name: t.sample_scores(pr[f"pred/{t.name}"], pr[f"true/{t.name}"])[ok] for t in scored}
    order = {col: t.group_names() or () for col, t in zip(plan.columns, plan.tasks)}
    rows = subgroup_table(scores, kinds, {k: v[ok] for k, v in plan.labels.items()}, order=order)
    gaps = {n: largest_gap(rows, f"{n}_{k}", GAP_MIN_COUNT) for n, k in kinds.items()}
    facts["bias"].update(cells=rows, gaps=gaps)
    s.add(Para(f"{data.reference}, seed {run.seed}, test split, cells by the true labels "
               f"({' x '.join(gcols)}). Accuracy intervals: Wilson 95%; MAE intervals: Student-t 95% "
               "(mean ± t s / sqrt(n)); a combination of groups no test face has is no cell. The largest gap is "
               f"taken among cells with at least {GAP_MIN_COUNT} faces scored (how many of the cells: in the "
               "table); its interval is that of the difference between those two cells (accuracy: Newcombe's, "
               "from their Wilson intervals; MAE: gap ± 1.96 sqrt(se² + se²)), and the largest of many gaps, "
               "picked after the fact, tends to read larger than the same two cells would on other faces. "
               "Paper Fig. 6."))
    gap_rows = []
    for n, g in gaps.items():
        key = f"{n}_{kinds[n]}"
        compared = f"{len(gap_cells(rows, key, GAP_MIN_COUNT))} of {len(rows)}"
        if not g:
            gap_rows.append([n, "–", "no cell of enough faces", "", compared, "", ""])
            continue
        cell = lambda r: " ".join(str(r[c]) for c in gcols) + f" (n={r.get(f'{key}_n', r['n'])})"  # noqa: E731
        scale = 100.0 if kinds[n] == "accuracy" else 1.0
        unit = " pt" if scale == 100.0 else (f" {units[n]}" if units[n] else "")
        lo, hi = g.get("ci95", (float("nan"), float("nan")))
        gap_rows.append([n, kinds[n], f"{scale * g['gap']:.2f}{unit}",
                         f"{scale * lo:.2f} to {scale * hi:.2f}" if lo == lo else "–", compared,
                         f"{cell(g['min'])}: {scale * g['min'][key]:.2f}", f"{cell(g['max'])}: {scale * g['max'][key]:.2f}"])
    s.add(Table(["task", "metric", "largest gap", "95% interval", "cells compared", "lowest cell", "highest cell"],
                gap_rows, "largest gap between groups"))
    keys = [(f"{n}_{k}", f"{n} {(f'MAE ({units[n]})' if units[n] else 'MAE') if k == 'mae' else 'accuracy (%)'}")
            for n, k in kinds.items()]
    if len(gcols) >= 2:
        s.add(Image("bias.png", figures.bias_heatmaps(rows, keys, gcols[0], gcols[1:], order),
                    "per-cell metrics (colour), with counts"))
    head = gcols + ["n"] + [f"{n} {'MAE' if k == 'mae' else 'acc.'} (95% CI)" for n, k in kinds.items()]
    trows = []
    for r in rows:
        cells = []
        for n, k in kinds.items():
            key = f"{n}_{k}"
            v, lo, hi = r[key], r[f"{key}_lo"], r[f"{key}_hi"]
            scored_n = r.get(f"{key}_n", r["n"])
            if np.isnan(v):
                cells.append("–")
            elif k == "accuracy":
                cells.append(f"{100 * v:.1f}% ({100 * lo:.0f}–{100 * hi:.0f})")
            else:
                cells.append(f"{v:.2f} ({lo:.1f}–{hi:.1f})" if not np.isnan(lo) else f"{v:.2f}")
            if scored_n != r["n"] and not np.isnan(v):
                cells[-1] += f", n={scored_n}"
        trows.append([str(r[c]) for c in gcols] + [str(r["n"])] + cells)
    return s.add(Table(head, trows, "every cell"))
