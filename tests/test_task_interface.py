"""A task type registered here, which no code outside this file knows, goes through training,
evaluation, the report and analysis by its own rules: nothing outside ``tasks/`` asks a
task its type."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pytest
import yaml

from facemtl.tasks import TASK_TYPES, MetricColumn, Task
from facemtl.tasks.base import softmax, valid


@TASK_TYPES.register("test_age_band")
@dataclass
class AgeBand(Task):
    """Life stage from the age column: child (< 20), adult (< 60), senior. Its one metric is
    called ``hits`` (not ``accuracy``), so any code guessing from metric names would miss it."""

    edges: list[float] = field(default_factory=lambda: [20.0, 60.0])

    kind: ClassVar[str] = "test_age_band"
    NAMES: ClassVar[list[str]] = ["child", "adult", "senior"]

    def class_names(self) -> list[str]:
        return list(self.NAMES)

    @property
    def output_size(self) -> int:
        return 3

    def band(self, age: np.ndarray) -> np.ndarray:
        a = np.asarray(age, float)
        return np.where(np.isnan(a), np.nan, np.searchsorted(self.edges, np.nan_to_num(a), side="right"))

    def describe(self, value: float) -> str:  # a label is an age
        return f"{value:.0f}"

    def describe_prediction(self, value: float) -> str:  # a prediction is a band
        return self.NAMES[int(value)]

    def _loss(self, out, y):
        import torch
        import torch.nn.functional as F

        bands = torch.bucketize(y.contiguous(), torch.tensor(self.edges, device=y.device), right=True)
        return F.cross_entropy(out, bands)

    def explain_score(self, out):
        return out.gather(1, out.detach().argmax(1, keepdim=True)).squeeze(1)

    def predict(self, raw: np.ndarray) -> np.ndarray:
        return np.asarray(raw).argmax(1).astype(np.float32)

    def probabilities(self, raw: np.ndarray) -> np.ndarray:
        return softmax(raw, 1)

    def answers(self, raw: np.ndarray, interval: float = 0.8) -> list:
        from facemtl.inference.results import TaskAnswer

        p = self.probabilities(raw)
        return [TaskAnswer(self.NAMES[int(k)], float(p[j, int(k)]), dict(zip(self.NAMES, map(float, p[j]))))
                for j, k in enumerate(self.predict(raw))]

    def metric_columns(self) -> list[MetricColumn]:
        return [MetricColumn("hits", "hits", percent=True)]

    def metrics(self, pred: np.ndarray, true: np.ndarray) -> dict[str, Any]:
        m = valid(true)
        hits = float(np.mean(np.asarray(pred)[m] == self.band(true)[m])) if m.any() else float("nan")
        return {"hits": hits, "n": int(m.sum())}

    def baseline(self, train_true: np.ndarray) -> float:
        b = self.band(train_true)
        return float(np.bincount(b[~np.isnan(b)].astype(int), minlength=3).argmax())

    def skill(self, metrics: dict[str, Any], baseline_metrics: dict[str, Any]) -> float:
        return (metrics["hits"] - baseline_metrics["hits"]) / max(1e-6, 1 - baseline_metrics["hits"])

    def strata(self, values: np.ndarray) -> np.ndarray:
        b = self.band(values)
        return np.where(np.isnan(b), -1, b).astype(np.int64)

    def subgroups(self, values: np.ndarray) -> np.ndarray:
        return np.array(["?" if np.isnan(b) else self.NAMES[int(b)] for b in self.band(values)], dtype=object)

    def sample_scores(self, pred: np.ndarray, true: np.ndarray) -> np.ndarray:
        b = self.band(true)
        return np.where(np.isnan(b), np.nan, (np.asarray(pred) == b).astype(float))

    def confusion(self, pred: np.ndarray, true: np.ndarray):
        from facemtl.metrics import confusion_matrix

        m = valid(true)
        return confusion_matrix(np.asarray(pred)[m].astype(int), self.band(true)[m].astype(int), 3), self.class_names()

    def outcomes(self, pred: np.ndarray, true: np.ndarray):
        s = self.sample_scores(pred, true)
        return s == 1, s == 0


@pytest.fixture(scope="module")
def band_run(utkface_root, tmp_path_factory):
    from facemtl.cli import main

    tmp = tmp_path_factory.mktemp("band")
    recipe = {
        "name": "band",
        "tasks": [{"name": "stage", "type": "test_age_band", "label": "age"},
                  {"name": "gender", "type": "nominal", "classes": ["male", "female"]}],
        "data": {"root": str(utkface_root), "image_size": 64, "limit": 300, "workers": 0},
        "model": {"backbone": "tiny_mbconv", "pretrained": False, "shared_stages": 3},
        "optim": {"name": "adamw", "lr": 0.003},
        "train": {"epochs": 2, "batch_size": 32},
    }
    (tmp / "band.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["train", "--config", str(tmp / "band.yaml"), "--out", str(tmp / "run"), "--no-progress"]) == 0
    return tmp / "run"


def test_new_task_type_trains_and_logs_its_own_metric(band_run):
    records = [json.loads(x) for x in (band_run / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2
    assert 0 <= records[-1]["val"]["stage"]["hits"] <= 1 and "skill" in records[-1]["val"]["stage"]
    test = json.loads((band_run / "test_metrics.json").read_text())
    assert set(test["stage"]) >= {"hits", "n", "baseline", "skill"}


def test_new_task_type_evaluates(band_run, capsys):
    from facemtl.cli import evaluate, main

    m = evaluate(str(band_run / "best.pt"))
    assert 0 <= m["stage"]["hits"] <= 1 and m["_info"]["tasks"][0]["type"] == "test_age_band"
    assert main(["evaluate", "--checkpoint", str(band_run / "best.pt")]) == 0
    assert "stage: hits" in capsys.readouterr().out


def test_new_task_type_reports(band_run):
    from facemtl.report import write_report

    html = write_report(band_run, band_run / "report", gradcam=True, samples=1)
    facts = json.loads((html.parent / "report.json").read_text())
    assert "stage_accuracy" in facts["bias"]["cells"][0]  # scored by its own sample_scores
    assert {c["age"] for c in facts["bias"]["cells"]} <= {"child", "adult", "senior"}  # grouped by its own subgroups
    md = (html.parent / "report.md").read_text()
    assert "stage hits" in md  # its own metric column
    assert (html.parent / "gradcam_stage.png").is_file() and (html.parent / "confusion.png").is_file()


def test_new_task_type_analyzes(band_run, utkface_root, tmp_path, capsys):
    from facemtl.cli import main
    from facemtl.data.utkface import read_utkface

    files = read_utkface(utkface_root, limit=20).paths[:3]
    assert main(["analyze", *files, "--aligned", "--json", "--no-progress", "--checkpoint", str(band_run / "best.pt")]) == 0
    faces = [json.loads(x)["faces"][0] for x in capsys.readouterr().out.splitlines()]
    assert all(f["stage"] in ("child", "adult", "senior") for f in faces)
    assert all(sum(f["stage_probabilities"].values()) == pytest.approx(1, abs=1e-3) for f in faces)
    assert main(["analyze", *files, "--aligned", "--csv", "--no-progress", "--checkpoint", str(band_run / "best.pt")]) == 0
    header = capsys.readouterr().out.splitlines()[0].split(",")
    assert header[9:] == ["stage", "stage_probability", "gender", "gender_probability", "stage_p_child", "stage_p_adult",
                          "stage_p_senior", "gender_p_male", "gender_p_female"]


# --------------------------------------------------------------------------- labels the data gives a task


def test_label_classes_and_invalid_labels_known_values():
    from facemtl.tasks import build_task

    nan = float("nan")
    g = build_task({"name": "gender", "type": "nominal", "label": "sex", "classes": ["male", "female"]})
    assert g.label_classes() == ["male", "female"]
    assert build_task({"name": "race", "type": "nominal", "num_classes": 5}).label_classes() is None
    assert g.invalid_labels(np.array([0, 1, nan, 1.0])) == (0, "")
    with pytest.raises(ValueError, match=r"^task 'gender' has 2 classes \(male, female\), so the labels of its column "
                                         r"'sex' must be class indices 0..1, but 4 row\(s\) hold -1, 1.5, 2, inf \("):
        g.invalid_labels(np.array([0, 2, 1.5, -1, np.inf, nan]))
    b = build_task({"name": "glasses", "type": "binary"})
    with pytest.raises(ValueError, match=r"^task 'glasses' has 2 classes, so .* 0..1, but 1 row\(s\) hold 3 "):
        b.invalid_labels(np.array([0, 1, 3]))
    age = build_task({"name": "age", "type": "ordinal", "min_value": 1, "max_value": 116})
    assert age.label_classes() is None and age.invalid_labels(np.array([1, 116, 30.4, nan])) == (0, "")
    n, why = age.invalid_labels(np.array([150, -3, 0, 5, nan, 150]))
    assert n == 4 and why.startswith("task 'age' takes values 1..116, but 4 label(s) of its column 'age' lie outside "
                                     "(-3, 0, 150); the loss learns each as the nearest end of the range")
    assert why.endswith("if a negative value stands for unknown, leave those cells empty or write NA: they are "
                        "read as missing)")
    assert "unknown" not in age.invalid_labels(np.array([150, 0]))[1]  # no negative value: no such hint
    n, why = build_task({"name": "age", "type": "regression", "min_value": 0, "max_value": 1}).invalid_labels(
        np.array([0.5, 1.5, 2, 3, 4, 5, 6]))
    assert n == 6 and "(1.5, 2, 3, 4, 5, ...)" in why and "predictions are clipped" in why
    # the base class: numbers, nothing to refuse (a task that reads ages, though it names classes of its own)
    band = AgeBand("stage", label="age")
    assert band.class_names() == ["child", "adult", "senior"] and band.label_classes() is None
    assert band.invalid_labels(np.array([-5.0, 500.0])) == (0, "")


def test_the_data_path_asks_a_new_task_type_about_its_labels(tmp_path, capsys):
    """A task type the data layer has never heard of says what labels it learns wrongly; the
    data path counts and prints its sentence, and compares the class names it gives."""
    from facemtl.config import DataConfig
    from facemtl.data.dataset import read_split

    @dataclass
    class PickyBand(AgeBand):
        def invalid_labels(self, values):
            n = int((np.asarray(values) > 99).sum())
            return n, f"{n} ages over 99 are seniors to {self.name!r}" if n else ""

    @dataclass
    class NamedBand(AgeBand):
        def label_classes(self):
            return ["young", "old"]

    (tmp_path / "m.csv").write_text("path,age\n" + "".join(f"f{i}.jpg,{[5, 30, 70, 100, 120][i % 5]}\n"
                                                            for i in range(30)))
    cfg = DataConfig(dataset="csv", root=str(tmp_path / "m.csv"))
    _, _, report = read_split(cfg, [PickyBand("stage", label="age")], 0)
    assert report["invalid_labels"]["stage"] == {"column": "age", "rows": 12,
                                                 "warning": "12 ages over 99 are seniors to 'stage'"}
    assert capsys.readouterr().err == "facemtl: warning: 12 ages over 99 are seniors to 'stage'\n"
    with pytest.raises(ValueError, match=r"task 'stage' names the classes of column 'age' \[young, old\], but "
                                         r"data.columns.age names them \[kid, grown\]"):
        read_split(DataConfig(dataset="csv", root=str(tmp_path / "m.csv"), columns={"age": ["kid", "grown"]}),
                   [NamedBand("stage", label="age")], 0)


def test_a_task_of_ones_own_may_set_its_decimals():
    """A review: Task.decimals as a property refused `self.decimals = 2` in a task of one's own."""
    from facemtl.tasks import NominalTask

    t = NominalTask("g", classes=["a", "b"])
    assert t.decimals is None
    t.decimals = 2
    assert t.decimals == 2
