"""An ordinal task whose ranks have names (``levels``, or the names ``data.columns`` gives its
column) answers the name beside the rank, in every output: JSON, CSV, the table, tracks,
the database and the API's schema. Before, a user test found named levels answered as bare
ranks (``severity: 2``), the names left to be looked up in the recipe."""

from __future__ import annotations

import csv
import io
import json
import re

import numpy as np
import pytest
import yaml

from facemtl.inference.results import FaceResult, TaskAnswer, csv_columns
from facemtl.tasks import build_task

LEVELS = ["none", "mild", "moderate", "severe"]


def _raw(*ranks: int, k: int = 4) -> np.ndarray:
    """Threshold logits whose decoded rank is each of ``ranks``, sure of it (``(N, k-1)``)."""
    return np.array([[9.0 if j < r else -9.0 for j in range(k - 1)] for r in ranks], np.float32)


def test_levels_name_the_ranks_known_values():
    t = build_task({"name": "severity", "type": "ordinal", "levels": LEVELS})
    assert (t.min_value, t.max_value, t.num_classes) == (0, 3, 4)  # max_value follows the levels
    assert t.label_classes() == t.level_names() == LEVELS and t.class_names() is None
    assert t.group_names() == LEVELS and t.subgroups(np.array([0, 3, np.nan])).tolist() == ["none", "severe", "?"]
    assert t.describe(2) == "moderate" and t.describe_prediction(2.4) == "moderate" and t.describe(2.6) == "severe"
    a, b = t.answers(_raw(2, 0))
    assert a.fields("severity") == {"severity": 2.0, "severity_level": "moderate", "severity_interval": [2, 2]}
    assert a.short("severity") == "severity moderate (2, 2-2)" and a.value_text() == "moderate"
    assert b.fields("severity")["severity_level"] == "none"
    # read back from its fields (analyze --json's output), as FaceResult.from_dict does
    face = FaceResult([0.0, 0.0, 9.0, 9.0], 1.0, None, {"severity": a})
    assert FaceResult.from_dict(json.loads(json.dumps(face.to_dict()))).answers == {
        "severity": TaskAnswer(2.0, interval=(2, 2), level="moderate")}
    # the recipe's settings survive a model file (to_dict -> build_task)
    assert build_task(t.to_dict()).to_dict() == t.to_dict()
    # bands of several levels are named by their ends
    eight = build_task({"name": "s", "type": "ordinal", "levels": list("abcdefgh"), "bias_edges": [0, 3, 6]})
    assert eight.group_names() == ["a to c", "d to f", "g to h"]
    # without levels nothing changes: ranks, no level field
    plain = build_task({"name": "s", "type": "ordinal", "min_value": 0, "max_value": 3})
    assert plain.level_names() is None and "s_level" not in plain.answers(_raw(2))[0].fields("s")


@pytest.mark.parametrize("settings, why", [
    ({"levels": ["a"]}, "its levels must be two or more names"),
    ({"levels": ["mild", "Mild "]}, "its levels name Mild, mild twice"),
    ({"levels": ["a", ""]}, "its levels hold an empty name"),
    ({"levels": ["a", "b"], "min_value": 1, "max_value": 2}, "its 2 levels name the ranks 0..1, but it runs from "
                                                              "min_value 1 to max_value 2: set min_value: 0"),
    ({"levels": ["a", "b"], "max_value": 5}, "its 2 levels name the ranks 0..1, but it runs from min_value 0 to "
                                             "max_value 5"),
])
def test_levels_that_cannot_name_the_ranks_are_refused(settings, why):
    with pytest.raises(ValueError, match="^task 's': " + why):
        build_task({"name": "s", "type": "ordinal", **settings})


def test_a_task_takes_the_names_its_data_gives_only_where_they_name_every_rank():
    t = build_task({"name": "s", "type": "ordinal", "max_value": 3})
    t.adopt_level_names(LEVELS)
    assert t.levels == LEVELS and t.group_edges == t.bias_edges == [0, 1, 2, 3]
    for spec, names in (({"max_value": 5}, LEVELS), ({"levels": ["w", "x", "y", "z"]}, LEVELS),
                        ({"min_value": 1, "max_value": 4}, LEVELS)):
        other = build_task({"name": "s", "type": "ordinal", **spec})
        before = other.to_dict()
        other.adopt_level_names(names)
        assert other.to_dict() == before
    gender = build_task({"name": "g", "type": "nominal", "classes": ["male", "female"]})
    gender.adopt_level_names(["female", "male"])  # a classifier that names its classes keeps them
    assert gender.level_names() is None and gender.classes == ["male", "female"]
    # one that names none takes the data's names of every class (it answered "smiling 0": a user test)
    smiling = build_task({"name": "smiling", "type": "binary"})
    smiling.adopt_level_names(["no", "yes"])
    assert smiling.classes == ["no", "yes"] and smiling.answers(np.array([[2.0]]))[0].value == "yes"
    three = build_task({"name": "c", "type": "nominal", "num_classes": 3})
    three.adopt_level_names(["a", "b"])  # not every class named: nothing
    assert three.classes is None
    # a binary task that neither the recipe nor the data names answers "not <name>" / "<name>" for
    # 0 / 1, as CelebA's attributes do (a user test: a CSV's 0 / 1 column answered "smiling 0")
    bare = build_task({"name": "smiling", "type": "binary"})
    bare.adopt_level_names(None)
    assert bare.classes == ["not smiling", "smiling"] and bare.answers(np.array([[-2.0]]))[0].value == "not smiling"


def test_a_fractional_rank_is_named_grouped_and_written_alike():
    """A user test with decoding: expected: 1.4916 was written 1.5 and named teen (rank 1), the
    table wrote it 2 (.0f takes halves to even), the page 2, and /v1/stats counted 0.8 as child and
    1.5 as teen. One rule now: the value as written, halves up, everywhere."""
    t = build_task({"name": "s", "type": "ordinal", "levels": LEVELS, "decoding": "expected"})
    a = TaskAnswer(1.4916, interval=(0, 3), decimals=t.decimals)
    a.level = t.level(float(a.number(a.value)))
    assert a.fields("s")["s"] == 1.5 and a.level == "moderate" and a.short("s") == "s moderate (2, 0-3)"
    assert list(t.subgroups(np.array([0.8, 1.5, 2.49, 2.5]))) == ["mild", "moderate", "moderate", "severe"]
    assert TaskAnswer(2.5, decimals=1).number_text() == "3" and TaskAnswer(32.5, decimals=1).number_text() == "33"
    # answers name the rank their written value rounds to: P(>0) 0.9, P(>1) 0.5, P(>2) 0.09 sums to 1.49 -> 1.5
    logits = np.log(np.array([[0.9, 0.5, 0.09]]) / (1 - np.array([[0.9, 0.5, 0.09]]))).astype(np.float32)
    (ans,) = t.answers(logits)
    assert ans.fields("s")["s"] == 1.5 and ans.level == "moderate"
    # its metrics, confusion and Grad-CAM examples speak of levels: right is the right rank, wrong one off
    assert t.metrics(np.array([0.0, 1.0, 3.0]), np.array([0.0, 2.0, 3.0]))["groups"] == LEVELS
    right, wrong = t.outcomes(np.array([1.4, 1.6, 3.0]), np.array([1.0, 1.0, 0.0]))
    assert right.tolist() == [True, False, False] and wrong.tolist() == [False, True, True]
    age = build_task({"name": "age", "type": "ordinal", "min_value": 1, "max_value": 116})
    right, wrong = age.outcomes(np.array([30.0, 45.0]), np.array([32.0, 32.0]))  # ages keep 2 and 10 years
    assert right.tolist() == [True, False] and wrong.tolist() == [False, True]


def test_the_regression_ablation_of_a_named_scale_keeps_its_range_and_the_bias_study_its_order():
    """A user test: the grid's regression_<task> dropped the levels, and with them the range they
    set: a regression on 0..100 for four levels (group accuracy 1.0, every answer in one band).
    And the bias tables listed levels by name, adult before child."""
    from facemtl.subgroups import subgroup_table

    t = build_task({"name": "s", "type": "ordinal", "levels": LEVELS})
    spec = {"name": "s", "type": "ordinal", "levels": LEVELS}
    for k, v in next(a for a in t.ablations() if a.suffix == "regression").changes.items():
        spec.pop(k, None) if v is None else spec.__setitem__(k, v)
    reg = build_task(spec)
    assert (reg.kind, reg.min_value, reg.max_value, reg.bias_edges) == ("regression", 0, 3, [0, 1, 2, 3])
    # its CS(k) counts ranks as the ordinal's does (a user test: the report put its CS(0.05) under CS(5))
    assert reg.cs_step() == t.cs_step() == 1.0 and reg.cs_label(5) == "CS(5)"
    assert build_task({"name": "s", "type": "regression", "max_value": 3}).cs_step() == 0.01  # its own: hundredths
    plain = build_task({"name": "s", "type": "ordinal", "max_value": 3})  # no levels: the range is not set
    assert set(next(a for a in plain.ablations() if a.suffix == "regression").changes) == {
        "type", "method", "decoding", "reduction", "levels", "importance", "mean_variance", "cs_unit"}
    age = build_task({"name": "age", "type": "ordinal", "min_value": 1, "max_value": 116})  # a grid's digest as before
    assert "cs_unit" not in next(a for a in age.ablations() if a.suffix == "regression").changes
    with pytest.raises(ValueError, match="cs_unit must be above 0"):
        build_task({"name": "s", "type": "regression", "cs_unit": 0})
    groups = np.array(["severe", "none", "moderate", "mild", "none"], dtype=object)
    rows = subgroup_table({"x": np.ones(5)}, {"x": "accuracy"}, {"s group": groups}, order={"s group": LEVELS})
    assert [r["s group"] for r in rows] == LEVELS
    n, why = t.invalid_labels(np.array([1.0, 4.0]))  # labels 1..4 for levels of ranks 0..3
    assert n == 1 and why.endswith("(its levels name the ranks 0..3: give the column those ranks, or the names)")


def test_csv_columns_and_cells_carry_the_level():
    from facemtl.inference.results import _answer_cells

    t = build_task({"name": "severity", "type": "ordinal", "levels": LEVELS})
    assert csv_columns([t])[9:] == ["severity", "severity_level", "severity_interval"]
    assert _answer_cells({"severity": t.answers(_raw(3))[0]}) == {"severity": 3.0, "severity_level": "severe",
                                                                  "severity_interval": "3-3"}


def test_a_tracks_aggregate_carries_its_level():
    from facemtl.video.smoothing import TrackSmoother

    t = build_task({"name": "severity", "type": "ordinal", "levels": LEVELS})
    s = TrackSmoother(numeric="mean", levels={"severity": t.describe_prediction})
    for r in (1, 2, 2):
        s.add({"severity": t.answers(_raw(r))[0]}, 1.0)
    a = s.answers()["severity"]
    assert a.value == pytest.approx(5 / 3) and a.level == "moderate"
    # named as written (a review: a mean of 1.49, written 1.5, was named for rank 1)
    halves = TrackSmoother(numeric="mean", levels={"severity": t.describe_prediction})
    halves.add({"severity": t.answers(_raw(1))[0]}, 0.51)
    halves.add({"severity": t.answers(_raw(2))[0]}, 0.49)
    b = halves.answers()["severity"]
    assert b.fields("severity")["severity"] == 1.5 and b.level == "moderate" and t.subgroups([1.5])[0] == "moderate"
    plain = TrackSmoother(numeric="mean")  # a smoother told no names keeps none
    plain.add({"severity": t.answers(_raw(1))[0]}, 1.0)
    assert plain.answers()["severity"].level is None


def test_the_database_stores_and_returns_the_level(db_url):
    from fakes import model_info, photos, stream

    from facemtl.inference.results import TrackResult
    from facemtl.server.schemas import task_fields
    from facemtl.sinks.db import DbSink
    from facemtl.store import Query, Store

    spec = {"type": "ordinal", "name": "severity", "levels": LEVELS}
    info = model_info([spec, {"type": "nominal", "name": "gender", "classes": ["male", "female"]}])
    items = list(photos(info, 6)) + list(stream(info, 20, people=1, track_len=6))
    sink = DbSink(db_url, model_info=info)
    for it in items:
        (sink.write_track if isinstance(it, TrackResult) else sink.write)(it)
    sink.close()
    with Store(db_url) as store:
        faces = list(store.records("faces", Query()))
        assert faces and all(f["severity_level"] == LEVELS[round(f["severity"])] for f in faces)
        closed = [t for t in store.records("tracks", Query()) if t["closed"]]  # read from the answer rows
        ends = {t.track: t.answers["severity"] for t in items if isinstance(t, TrackResult)}
        assert closed and all(t["severity_level"] == ends[t["track"]].level and
                              t["severity"] == ends[t["track"]].value for t in closed)
        stats = store.stats(0, 2e9, 2e9)
        groups = stats["tasks"]["severity"]["groups"]  # counted under the levels' names, in their order
        assert len(groups) >= 2 and groups == [g for g in LEVELS if g in groups]
    assert task_fields(build_task(spec)) == {"severity": float, "severity_level": str, "severity_interval": list[int | float]}


def test_stored_answers_read_back_by_what_they_are():
    """A review: a class answer an earlier model stored under a task name a numeric task now has
    was read back as a number with a level; the API dropped a stored level when the served model
    of the name names none; JSON of a model with tasks `stress` and `stress_level` (allowed before
    levels) lost its second task."""
    from types import SimpleNamespace

    from facemtl.config import check_task_names
    from facemtl.server.schemas import Schemas
    from facemtl.store.rows import answer_from_row

    def row(text, num, probability=None):
        return SimpleNamespace(value_text=text, value_num=num, probability=probability,
                               probabilities={"(25-32)": probability} if probability else None, lo=None, hi=None)

    assert answer_from_row(row("(25-32)", 4.0, 0.8), 1).value == "(25-32)"  # a class, though age has decimals now
    assert answer_from_row(row("adult", 2.0), 0).fields("s") == {"s": 2.0, "s_level": "adult"}
    plain = build_task({"name": "severity", "type": "ordinal", "max_value": 3})
    stored = {"id": 1, "time": 1.0, "session": 1, "severity": 2.0, "severity_level": "moderate"}
    assert "severity_level" not in Schemas([plain]).Face.model_validate(stored).model_dump(by_alias=True)
    kinds = {"severity": {"numbers", "levels"}}
    assert Schemas([plain], kinds).Face.model_validate(stored).model_dump(by_alias=True)["severity_level"] == "moderate"
    # a class served where a stored model gave numbers (or the other way): each face keeps its form, no 500
    classes = build_task({"name": "severity", "type": "nominal", "classes": ["low", "high"]})
    face = Schemas([classes], {"severity": {"classes", "numbers", "levels"}}).Face.model_validate(
        {**stored, "severity_interval": [1, 3]}).model_dump(by_alias=True)
    assert (face["severity"], face["severity_level"], face["severity_interval"]) == (2.0, "moderate", [1, 3])
    check_task_names(["stress", "stress_level"])  # a recipe from before: read as it was
    with pytest.raises(Exception, match="task 'stress' writes a field of that name"):
        check_task_names(["stress", "stress_level"], ["stress"])
    old = {"box": None, "score": None, "landmarks": None, "stress": "no", "stress_probability": 0.9, "stress_level": 2.0}
    assert set(FaceResult.from_dict(old).answers) == {"stress", "stress_level"}


def test_trained_on_named_levels_the_model_answers_them(utkface_root, tmp_path, capsys):
    """A tiny run on real faces whose CSV names an ordinal column's values (data.columns), the
    task naming none: the model file carries the names, and analyze writes them."""
    from facemtl.cli import main
    from facemtl.data.utkface import read_utkface
    from facemtl.report.load import RunLog

    table = read_utkface(utkface_root, limit=240)
    ages = table.labels["age"]
    stage = ["child" if a < 20 else "adult" if a < 60 else "senior" for a in ages]
    labels = tmp_path / "faces.csv"
    labels.write_text("path,stage\n" + "".join(f"{p},{s}\n" for p, s in zip(table.paths, stage)))
    recipe = {
        "name": "stages",
        "tasks": [{"name": "stage", "type": "ordinal", "max_value": 2, "importance": "counts"}],
        "data": {"dataset": "csv", "root": str(labels), "columns": {"stage": ["child", "adult", "senior"]},
                 "image_size": 64, "workers": 0},
        "model": {"backbone": "tiny_mbconv", "pretrained": False, "shared_stages": 3},
        "optim": {"name": "adamw", "lr": 0.003},
        "train": {"epochs": 1, "batch_size": 32},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["train", "--config", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    run = RunLog(tmp_path / "run")
    assert run.task("stage").group_names() == ["child", "adult", "senior"]  # its report's
    weights = run.data_report["fitted"]["stage"]["importance"]  # (importance: counts, from the training faces)
    assert len(weights) == 2 and sum(weights) == pytest.approx(2, abs=1e-3)
    files = table.paths[:3]
    capsys.readouterr()
    model = str(tmp_path / "run" / "best.pt")
    assert main(["analyze", *files, "--aligned", "--json", "--no-progress", "--checkpoint", model]) == 0
    faces = [json.loads(x)["faces"][0] for x in capsys.readouterr().out.splitlines()]
    assert len(faces) == 3 and all(f["stage_level"] == ["child", "adult", "senior"][round(f["stage"])] for f in faces)
    assert main(["analyze", *files, "--aligned", "--csv", "--no-progress", "--checkpoint", model]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["stage_level"] for r in rows] == [f["stage_level"] for f in faces]
    # evaluate scores it (a user test: importance: counts made it fail, its weights not fitted again)
    assert main(["evaluate", "--checkpoint", model, "--split", "test"]) == 0
    assert "stage: MAE" in capsys.readouterr().out
    # the grid's regression variant of a scale its recipe names (a user test: it ran on 0..100; the first
    # mend's data.columns override then made the runner refuse it as changing the data)
    from facemtl.experiments import load_experiment, run_experiment

    named = {**recipe, "tasks": [{"name": "stage", "type": "ordinal", "levels": ["child", "adult", "senior"]}],
             "data": {k: v for k, v in recipe["data"].items() if k != "columns"}}
    (tmp_path / "named.yaml").write_text(yaml.safe_dump(named))
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump({"name": "named", "base": "named.yaml", "seeds": [0],
                                                       "variants": "standard"}))
    out = tmp_path / "grid"
    run_experiment(load_experiment(tmp_path / "exp.yaml"), out, only=["regression_stage"], log=lambda s: None)
    settings = yaml.safe_load((out / "runs" / "regression_stage" / "seed0" / "config.yaml").read_text())
    assert settings["tasks"][0]["type"] == "regression" and settings["tasks"][0]["max_value"] == 2
    assert "mae" in json.loads((out / "runs" / "regression_stage" / "seed0" / "test_metrics.json").read_text())["stage"]


def test_a_task_named_like_the_level_field_of_levels_the_data_names_is_refused(utkface_root, tmp_path):
    """A review: tasks `stress` and `stress_level` with data.columns naming stress's values passed the
    recipe's check (no levels written in it), and stress_level's number overwrote stress's level."""
    from facemtl.cli import main
    from facemtl.data.utkface import read_utkface

    table = read_utkface(utkface_root, limit=60)
    labels = tmp_path / "faces.csv"
    labels.write_text("path,stress,other\n" + "".join(f"{p},{['low', 'mid', 'high'][i % 3]},{i % 2}\n"
                                                      for i, p in enumerate(table.paths)))
    recipe = {"name": "clash",
              "tasks": [{"name": "stress", "type": "ordinal", "max_value": 2},
                        {"name": "stress_level", "type": "binary", "label": "other"}],
              "data": {"dataset": "csv", "root": str(labels), "columns": {"stress": ["low", "mid", "high"]},
                       "image_size": 32, "workers": 0},
              "model": {"backbone": "tiny_mbconv", "pretrained": False, "shared_stages": 3},
              "train": {"epochs": 1, "batch_size": 16}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["train", "--config", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert not (tmp_path / "run" / "best.pt").exists()


def test_a_named_scale_is_filtered_by_its_levels_names(db_url, tmp_path):
    """The Left list (a user test's request): ``/v1/faces`` took a named scale's bounds as ranks
    only (``?severity_min=2``), and the page showed number boxes for them. A bound takes a
    level's name (case aside) or its rank, in the API and in ``db export --where``; anything
    else is one sentence (422, exit 2); ``/v1/tasks`` lists the levels the page offers."""
    pytest.importorskip("fastapi")
    from fakes import model_info, store_photos
    from fastapi.testclient import TestClient

    from facemtl.cli import main
    from facemtl.server import create_app
    from facemtl.store import Store
    from facemtl.store.queries import parse_answer_filters

    spec = {"type": "ordinal", "name": "severity", "levels": LEVELS}
    info = model_info([spec, {"type": "ordinal", "name": "age", "min_value": 1, "max_value": 116}])
    store_photos(db_url, info, 30)
    store = Store(db_url)
    with TestClient(create_app(store, None)) as client:
        every = client.get("/v1/faces", params={"limit": 500}).json()["items"]
        ranks = [LEVELS.index(f["severity_level"]) for f in every]
        assert len(set(ranks)) >= 3  # (the fake answers spread over the scale)

        def levels_of(**params) -> list[str]:
            r = client.get("/v1/faces", params={"limit": 500, **params})
            assert r.status_code == 200, r.text
            return sorted(f["severity_level"] for f in r.json()["items"])

        want = sorted(LEVELS[k] for k in ranks if 1 <= k <= 2)
        assert want and levels_of(severity_min="mild", severity_max="moderate") == want
        assert levels_of(severity_min="MILD", severity_max="Moderate") == want  # case aside
        assert levels_of(severity_min="1", severity_max="2") == want  # ranks, as before
        assert levels_of(severity_min="severe") == sorted(LEVELS[k] for k in ranks if k == 3)
        bad = client.get("/v1/faces", params={"severity_min": "awful"})
        assert bad.status_code == 422
        assert bad.json()["detail"] == ("query parameter 'severity_min': should be one of the levels none, mild, "
                                        "moderate, severe (case aside) or a rank number")
        assert client.get("/v1/faces", params={"age_min": "old"}).status_code == 422  # numbers, as before
        tasks = {t["name"]: t for t in client.get("/v1/tasks").json()}
        assert tasks["severity"]["levels"] == LEVELS and tasks["age"]["levels"] is None
        openapi = client.get("/openapi.json").json()["paths"]["/v1/faces"]["get"]["parameters"]
        described = next(p for p in openapi if p["name"] == "severity_min")["description"]
        assert "none, mild, moderate, severe" in described
    tasks = store.tasks()
    store.close()
    [f] = parse_answer_filters(["severity_min=Mild", "severity_max=2"], tasks)
    assert (f.task, f.lo, f.hi) == ("severity", 1.0, 2.0)
    with pytest.raises(ValueError, match="severity_min is given twice; give each bound once"):
        parse_answer_filters(["severity_min=Mild", "severity_min=2"], tasks)  # (the last was kept, without a word)
    for term, why in (("severity_min=awful", "takes a level (none, mild, moderate, severe) or its rank"),
                      ("severity=mild", "use severity_min=mild / severity_max=mild"),
                      ("age_min=old", "takes a number in age's units")):
        with pytest.raises(ValueError, match=re.escape(why)):
            parse_answer_filters([term], tasks)
    out = tmp_path / "mild.csv"
    assert main(["db", "export", "faces", "--db", db_url, "--out", str(out), "--where", "severity_min=mild",
                 "--where", "severity_max=moderate"]) == 0
    rows = list(csv.DictReader(out.open()))  # CSV, as the file's name says (it was JSON lines)
    assert sorted(r["severity_level"] for r in rows) == want
    assert main(["db", "export", "faces", "--db", db_url, "--out", str(out), "--format", "jsonl"]) == 2
    assert list(csv.DictReader(out.open())) == rows  # refused, the file kept


def test_a_class_task_naming_no_classes_answers_the_names_its_data_gives(utkface_root, tmp_path, capsys):
    """A user test: a binary task whose CSV column data.columns names [no, yes] answered
    "smiling 0" after training; the model file now carries the names, and analyze writes them."""
    from facemtl.cli import main
    from facemtl.data.utkface import read_utkface

    table = read_utkface(utkface_root, limit=200)
    labels = tmp_path / "faces.csv"
    labels.write_text("path,adult\n" + "".join(f"{p},{'yes' if a >= 20 else 'no'}\n"
                                               for p, a in zip(table.paths, table.labels["age"])))
    recipe = {"name": "adults", "tasks": [{"name": "adult", "type": "binary"}],
              "data": {"dataset": "csv", "root": str(labels), "columns": {"adult": ["no", "yes"]},
                       "image_size": 64, "workers": 0},
              "model": {"backbone": "tiny_mbconv", "pretrained": False, "shared_stages": 3},
              "train": {"epochs": 1, "batch_size": 32}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["train", "--config", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["analyze", *table.paths[:3], "--aligned", "--json", "--no-progress", "--checkpoint",
                 str(tmp_path / "run" / "best.pt")]) == 0
    faces = [json.loads(x)["faces"][0] for x in capsys.readouterr().out.splitlines()]
    assert all(f["adult"] in ("no", "yes") and set(f["adult_probabilities"]) == {"no", "yes"} for f in faces)


def test_a_binary_task_takes_the_names_a_reader_offers_and_a_recipe_keeps_its_own():
    """A readers' test: a binary task of CelebA's Smiling answered 1 / 0. The reader offers
    ``not smiling`` / ``smiling``; a task naming no classes answers them, one naming its own
    (``no, yes``) keeps them and is not refused for differing (the offer is not the data's word)."""
    from types import SimpleNamespace

    from facemtl.data.label_checks import check_labels
    from facemtl.data.table import LabelTable
    from facemtl.tasks import adopt_level_names, build_task

    offered = {"Smiling": ["not smiling", "smiling"]}
    bare = build_task({"name": "smile", "type": "binary", "label": "Smiling"})
    own = build_task({"name": "smile_own", "type": "binary", "label": "Smiling", "classes": ["no", "yes"]})
    table = LabelTable(paths=["a.jpg", "b.jpg"], labels={"Smiling": [0.0, 1.0]}, offered_classes=offered)
    assert check_labels(table, [bare, own], SimpleNamespace(dataset="celeba", columns=None)) == {}
    adopt_level_names([bare, own], {"offered_names": offered})
    assert bare.class_names() == ["not smiling", "smiling"] and own.class_names() == ["no", "yes"]
    # the data's own names come first where a column has both
    later = build_task({"name": "smile", "type": "binary", "label": "Smiling"})
    adopt_level_names([later], {"column_names": {"Smiling": ["frown", "smile"]}, "offered_names": offered})
    assert later.class_names() == ["frown", "smile"]


def test_stats_keep_the_level_names_another_model_stored(db_url):
    """`/v1/stats` counts every face in the served model's groups, regrouping numbers by value
    (ages of two models' bands). Ranks of another model's named levels are not values on the
    served model's scale: `high`, rank 1 of `[low, high]`, was counted as `mild`. A stored level
    keeps its name; the served model's own levels are counted as before."""
    from collections import Counter

    from fakes import model_info, store_photos

    from facemtl.store import Query, Store

    old = model_info([{"type": "ordinal", "name": "severity", "levels": ["low", "high"]}], name="old")
    new = model_info([{"type": "ordinal", "name": "severity", "levels": LEVELS}], name="new")
    store_photos(db_url, old, 10, seed=1)
    store_photos(db_url, new, 10, seed=2)
    served = build_task({"type": "ordinal", "name": "severity", "levels": LEVELS})
    with Store(db_url) as store:
        faces = list(store.records("faces", Query()))
        stats = store.stats(0, 2e9, 2e9, order={"severity": served.group_names()},
                            regroup={"severity": served.subgroups})["tasks"]["severity"]
    counts = Counter()
    for b in stats["buckets"]:
        counts.update(b["counts"])
    want = Counter(f["severity_level"] for f in faces)
    assert {"low", "high"} & set(want) and set(want) & set(LEVELS)  # both models' answers are there
    assert counts == want and stats["groups"][:len(set(want) & set(LEVELS))] == [g for g in LEVELS if g in want]


def test_the_report_tables_cs_curves_of_other_steps_apart():
    """A user test: a variant whose CS(k) steps otherwise (hundredths of the range) was tabled under
    the first variant's headings k=0..10, and read as 0 % within 5 ranks."""
    from types import SimpleNamespace

    from facemtl.report.document import Table
    from facemtl.report.writer import _cumulative

    t = build_task({"name": "s", "type": "ordinal", "levels": LEVELS})
    ranks = {"cs_step": 1.0, "cs": {str(k): min(1.0, 0.5 + 0.1 * k) for k in range(11)}}
    narrow = {"cs_step": 0.01, "cs": {str(k): 0.02 * k for k in range(11)}}
    run = lambda m: SimpleNamespace(tasks=[t], test={"s": m})  # noqa: E731
    variants = {name: SimpleNamespace(first=run(m), runs=[run(m)])
                for name, m in (("ordinal", ranks), ("other", narrow), ("ordinal2", ranks))}
    tables = [b for b in _cumulative(SimpleNamespace(variants=variants)).blocks if isinstance(b, Table)]
    assert [t_.headers[1:4] for t_ in tables] == [["k=0", "k=1", "k=2"], ["k=0", "k=0.01", "k=0.02"]]
    assert [[r[0] for r in t_.rows] for t_ in tables] == [["ordinal", "ordinal2"], ["other"]]
    assert tables[1].rows[0][6] == "10.0"  # 5 hundredths: 10 %, under its own heading
