"""Read what training left on disk: a single run folder or an experiment folder.

A report only reads these files; it never trains (issue: "reports read the run logs
only"). A run folder holds ``config.yaml``, ``metrics.jsonl`` (one JSON record per
epoch), and after testing ``test_metrics.json`` and ``test_predictions.npz``. An
experiment folder holds ``experiment.yaml`` and ``runs/<variant>/seed<k>/`` run folders.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..epochlog import read_epochs
from ..jsonutil import loads_metrics
from ..tasks import Task, adopt_level_names, build_task


@dataclass
class RunLog:
    """One training run's files."""

    path: Path
    seed: int = 0

    @cached_property
    def config(self) -> dict[str, Any]:
        f = self.path / "config.yaml"
        return yaml.safe_load(f.read_text()) if f.is_file() else {}

    @cached_property
    def records(self) -> list[dict[str, Any]]:
        """Per-epoch records of ``metrics.jsonl`` (train losses, validation metrics, weights), one
        per epoch, numbered from 1 (:func:`facemtl.epochlog.read_epochs`)."""
        return read_epochs(self.path / "metrics.jsonl")

    @cached_property
    def test(self) -> dict[str, Any] | None:
        """``test_metrics.json``: per task the full metrics (CS(k), confusion matrix, ...)."""
        f = self.path / "test_metrics.json"
        return loads_metrics(f.read_text()) if f.is_file() else None

    @cached_property
    def predictions(self) -> dict[str, np.ndarray] | None:
        """``test_predictions.npz``: ``paths``, ``pred/<task>``, ``true/<task>``, ``prob/<task>``, ``attr/<column>``."""
        f = self.path / "test_predictions.npz"
        if not f.is_file():
            return None
        with np.load(f, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    @cached_property
    def info(self) -> dict[str, Any]:
        """``run_info.json``: the hardware it trained on and when it started."""
        f = self.path / "run_info.json"
        return json.loads(f.read_text()) if f.is_file() else {}

    @cached_property
    def data_report(self) -> dict[str, Any]:
        """``data_report.json``: what was read and dropped, and the faces of each split (``train_images``, ...)."""
        f = self.path / "data_report.json"
        try:
            report = json.loads(f.read_text()) if f.is_file() else {}
        except ValueError:
            report = {}
        return report if isinstance(report, dict) else {}

    @property
    def no_predictions_why(self) -> str:
        """Why the run has no test predictions, as a report says it: no test split (its
        ``data_report.json`` counts no test face), or training that did not finish."""
        report = self.data_report
        if report.get("test_images") == 0:
            return "its test split is empty (data.test_fraction=0, or too few faces), so no face was scored on it"
        return "run training to the end"

    @property
    def checkpoint(self) -> Path | None:
        for name in ("best.pt", "last.pt"):
            if (self.path / name).is_file():
                return self.path / name
        return None

    @property
    def task_specs(self) -> list[dict[str, Any]]:
        return list(self.config.get("tasks") or [])

    @cached_property
    def tasks(self) -> list[Task]:
        """The run's tasks, built from its config (they know how to summarise themselves), with
        the names its data gave their values (as the trainer gave them, :func:`adopt_level_names`)."""
        tasks = [build_task(s) for s in self.task_specs]
        adopt_level_names(tasks, self.data_report)
        return tasks

    def task(self, name: str) -> Task | None:
        return next((t for t in self.tasks if t.name == name), None)

    @property
    def train_seconds(self) -> float:
        return float(sum(r.get("seconds", 0.0) for r in self.records))


@dataclass
class VariantRuns:
    name: str
    label: str
    group: str
    runs: list[RunLog] = field(default_factory=list)

    @property
    def first(self) -> RunLog:
        return self.runs[0]


@dataclass
class ReportInput:
    """Everything a report shows, as read from disk."""

    path: Path
    kind: str  # "run" or "experiment"
    name: str
    variants: dict[str, VariantRuns]
    reference: str
    seeds: list[int]
    overrides: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    #: Finished runs left out of every comparison, as ``"<variant> seed <k>"``: trained with other
    #: settings (another budget, say) than the experiment's current ``experiment.yaml``.
    left_out: list[str] = field(default_factory=list)
    #: Runs of the grid with no result yet, as ``"<variant> seed <k>"``: not trained (``--only``),
    #: or stopped before they finished; named, so that a table over fewer seeds says so.
    not_finished: list[str] = field(default_factory=list)

    @property
    def ref(self) -> VariantRuns:
        return self.variants[self.reference]

    @property
    def base_config(self) -> dict[str, Any]:
        return self.ref.first.config


def load(path: str | Path) -> ReportInput:
    """Read a run folder or an experiment folder; raise ``FileNotFoundError`` with one sentence otherwise."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a folder")
    if (path / "experiment.yaml").is_file():
        return _load_experiment(path)
    if (path / "metrics.jsonl").is_file():
        run = RunLog(path, int((RunLog(path).config.get("train") or {}).get("seed", 0)))
        name = str(run.config.get("name") or path.name)
        v = VariantRuns("run", name, "run", [run])
        return ReportInput(path, "run", name, {"run": v}, "run", [run.seed])
    raise FileNotFoundError(f"{path} is neither a run folder (metrics.jsonl) nor an experiment folder (experiment.yaml)")


def _load_experiment(path: Path) -> ReportInput:
    """The finished runs of an experiment folder whose settings are the experiment's current ones.

    ``experiment.yaml`` holds the settings of the last ``facemtl experiment`` call; a run whose
    ``config.yaml`` differs from them (say, trained with ``train.epochs=2`` before the budget
    became 3 and only some variants ran again) is left out and named, with the settings that
    differ, in :attr:`ReportInput.left_out`, so runs of different budgets are never compared as alike.
    """
    from ..experiments.grid import experiment_from_dict, left_out

    spec = yaml.safe_load((path / "experiment.yaml").read_text()) or {}
    seeds = [int(s) for s in spec.get("seeds", [])]
    exp = experiment_from_dict(spec)
    variants: dict[str, VariantRuns] = {}
    stale_runs: list[str] = []
    unfinished: list[str] = []
    for v in spec.get("variants", []):
        runs = []
        for s in seeds:
            run = RunLog(path / "runs" / v["name"] / f"seed{s}", s)
            if not (run.path / "result.json").is_file():
                unfinished.append(f"{v['name']} seed {s}")
                continue
            stale = left_out(exp, v["name"], s, run.config if (run.path / "config.yaml").is_file() else None)
            if stale:
                stale_runs.append(stale)
                continue
            runs.append(run)
        if runs:
            variants[v["name"]] = VariantRuns(v["name"], v.get("label") or v["name"], v.get("group", ""), runs)
    if not variants:
        if stale_runs:
            raise FileNotFoundError(f"{path} holds no finished run with the settings its experiment.yaml now holds "
                                    f"({len(stale_runs)} were trained with others); run facemtl experiment again")
        raise FileNotFoundError(f"{path} holds no finished run yet (runs/<variant>/seed<k>/result.json)")
    reference = spec.get("reference", "proposed")
    if reference not in variants:
        reference = next(iter(variants))
    summary_file = path / "experiment.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    return ReportInput(path, "experiment", str(spec.get("name", path.name)), variants, reference, seeds,
                       [str(o) for o in spec.get("overrides", [])], summary, stale_runs, unfinished)
