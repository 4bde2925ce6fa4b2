"""Numeric answers keep the precision their task gives them, in every output; intervals with
negative ends stay readable in CSV; a task's columns are never lost (database export, CSV
sinks); the export check counts an answer changed only when its written value changes."""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass
from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import pytest

from facemtl.export.checks import compare_outputs
from facemtl.inference.results import FaceResult, ImageResult, TaskAnswer, _answer_cells, csv_columns, interval_text
from facemtl.sinks import CsvSink, TableSink, VideoCsvSink
from facemtl.store.export import flatten, write_records
from facemtl.store.rows import AnswerCodec, answer_from_row, tasks_from_specs
from facemtl.tasks import Task, build_task
from facemtl.video.smoothing import TrackSmoother

AGE = build_task({"name": "age", "type": "ordinal", "min_value": 1, "max_value": 116})
SCORE = build_task({"name": "score", "type": "regression", "min_value": 0, "max_value": 1})


@dataclass
class Bmi(Task):
    """A user's numeric task that gives an interval without saying so (``has_interval`` is the
    base default, False) and writes 3 digits; from a raw output ``x``: ``x`` in ``(x - 1.5, x + 1)``,
    with no interval where ``only_positive`` and ``x <= 0``."""

    only_positive: bool = False

    kind: ClassVar[str] = "test_bmi"

    @property
    def output_size(self) -> int:
        return 1

    def answers(self, raw: np.ndarray, interval: float = 0.8) -> list[TaskAnswer]:
        return [TaskAnswer(float(x), interval=None if self.only_positive and x <= 0 else (float(x) - 1.5, float(x) + 1),
                           decimals=3) for x in np.asarray(raw, np.float32)[:, 0]]


# -- A: the task decides its answers' precision ------------------------------------------------------

def test_built_in_numeric_tasks_set_their_decimals_from_their_range():
    assert AGE.decimals == 1 and SCORE.decimals == 3
    assert build_task({"name": "x", "type": "regression", "min_value": 0, "max_value": 10}).decimals == 2
    assert build_task({"name": "x", "type": "ordinal", "min_value": 0, "max_value": 100}).decimals == 1


def test_a_numeric_label_is_described_at_its_tasks_digits():
    """A user test: Grad-CAM's captions of a 0..1 score read "wrong: true 0, pred 0" (whole numbers);
    ages and a scale of whole values stay whole, as they are read."""
    assert SCORE.describe(0.17) == "0.170" and SCORE.describe_prediction(0.8349) == "0.835"
    assert AGE.describe(33.4) == "33"
    assert build_task({"name": "x", "type": "ordinal", "min_value": 1, "max_value": 5}).describe(2.0) == "2"


def test_a_regression_answer_in_0_1_keeps_three_digits_everywhere():
    (a,) = SCORE.answers(np.array([[0.4321]], np.float32))
    assert a.decimals == 3 and a.fields("score") == {"score": 0.432}
    assert a.short("score") == "score 0.43"
    face = FaceResult([0.0, 0.0, 10.0, 10.0], 0.9, None, {"score": a})
    assert face.to_dict()["score"] == 0.432 and face.describe() == "score 0.43"
    assert _answer_cells({"score": a}) == {"score": 0.432}


def test_age_answers_are_written_as_before():
    raw = np.full((1, 115), -9.0, np.float32)
    raw[0, :32] = 9.0  # 32 thresholds passed: age 33
    (a,) = AGE.answers(raw)
    assert a.fields("age") == {"age": 33.0, "age_interval": [33, 33]}
    assert a.short("age") == "age 33 (33-33)"
    assert TaskAnswer(31.04, interval=(26, 37), decimals=1).short("age") == "age 31 (26-37)"
    assert TaskAnswer(31.04, interval=(26.0, 36.0), decimals=1).fields("age") == {"age": 31.0,
                                                                                   "age_interval": [26.0, 36.0]}


def test_a_custom_task_keeps_its_own_rounding_or_none():
    assert TaskAnswer(1.23456, interval=(0.98765, 1.5), decimals=3).fields("x") == {"x": 1.235, "x_interval": [0.988, 1.5]}
    unrounded = TaskAnswer(0.123456, interval=(0.1, 0.2))
    assert unrounded.fields("x") == {"x": 0.123456, "x_interval": [0.1, 0.2]}
    assert unrounded.short("x") == "x 0.123456 (0.1-0.2)"
    assert TaskAnswer(np.float32(2.5), interval=(np.int64(2), np.int64(3)), decimals=0).fields("x") == {
        "x": 2.0, "x_interval": [2, 3]}  # numpy ints become ints (JSON-ready)


def test_from_fields_round_trips():
    for a in (TaskAnswer(0.43219, interval=(-1.01834, 1.16812), decimals=3), TaskAnswer(33.0, interval=(26, 42), decimals=1),
              TaskAnswer("female", 0.93127, {"male": 0.06873, "female": 0.93127})):
        d = a.fields("t")
        assert TaskAnswer.from_fields("t", d).fields("t") == d
        assert TaskAnswer.from_fields("t", d, a.decimals).fields("t") == d
    assert TaskAnswer.from_fields("t", {"t": 0.5}, 3).decimals == 3


def test_smoothing_keeps_the_decimals_of_its_answers():
    s = TrackSmoother(numeric="median")
    for v in (0.12341, 0.23456, 0.34567):
        s.add({"score": TaskAnswer(v, interval=(v - 1.01834, v + 1.5), decimals=3)}, 1.0)
    a = s.answers()["score"]
    assert a.decimals == 3 and a.fields("score") == {"score": 0.235, "score_interval": [-0.784, 1.735]}
    m = TrackSmoother(numeric="mean")
    for v in (0.1, 0.2):
        m.add({"score": TaskAnswer(v, decimals=3)}, 1.0)
    assert m.answers()["score"].fields("score") == {"score": 0.15}
    age = TrackSmoother(numeric="mean")
    for v in (30.0, 33.0, 35.0):
        age.add({"age": TaskAnswer(v, interval=(v - 5, v + 7), decimals=1)}, 1.0)
    assert age.answers()["age"].fields("age") == {"age": 32.7, "age_interval": [28, 40]}


def test_the_database_stores_and_reads_back_the_written_value():
    (a,) = SCORE.answers(np.array([[0.075]], np.float32))
    row = AnswerCodec(SCORE).row(a)
    assert row["value_num"] == 0.075 and row["lo"] is None
    back = answer_from_row(SimpleNamespace(value_text=None, **{k: row[k] for k in ("value_num", "probability", "lo", "hi",
                                                                                    "probabilities")}))
    assert back.fields("score") == a.fields("score") == {"score": 0.075}
    age = AnswerCodec(AGE).row(TaskAnswer(31.04, interval=(26, 37), decimals=1))
    assert (age["value_num"], age["lo"], age["hi"], age["grp"]) == (31.0, 26.0, 37.0, "20-39")


# -- B: interval cells ---------------------------------------------------------------------------

def test_interval_cells_are_unambiguous_with_negative_ends():
    assert interval_text(26, 42) == "26-42" and interval_text(26.0, 36.0) == "26.0-36.0"
    assert interval_text(-1.018, 1.168) == "[-1.018, 1.168]" and interval_text(-3, -1) == "[-3, -1]"
    answers = {"age": TaskAnswer(33.0, interval=(26, 42), decimals=1),
               "bmi": TaskAnswer(0.075, interval=(-1.01834, 1.16812), decimals=3)}
    cells = _answer_cells(answers)
    assert cells["age_interval"] == "26-42" and cells["bmi_interval"] == "[-1.018, 1.168]"
    # the database export writes the same cells (one helper)
    record = {"box": [0, 0, 1, 1], **answers["age"].fields("age"), **answers["bmi"].fields("bmi")}
    assert {k: flatten(record)[k] for k in ("age_interval", "bmi_interval")} == {"age_interval": "26-42",
                                                                                  "bmi_interval": "[-1.018, 1.168]"}
    # in a CSV file: no formula guard needed (the cell starts with "["), read back as JSON
    out = io.StringIO()
    CsvSink([AGE, Bmi("bmi")], out).write(ImageResult(file="a.jpg", faces=[FaceResult([0.0, 0.0, 9.0, 9.0], 0.9, None,
                                                                                         answers)]))
    (row,) = csv.DictReader(io.StringIO(out.getvalue()))
    assert row["age_interval"] == "26-42" and json.loads(row["bmi_interval"]) == [-1.018, 1.168]
    assert TaskAnswer(-2.0, interval=(-3, -1), decimals=1).short("x") == "x -2 (-3 to -1)"


# -- C: a stored task this process cannot build ---------------------------------------------------------

def test_db_csv_export_keeps_the_columns_of_an_unregistered_task_type(caplog):
    specs = [AGE.to_dict(), {"name": "bmi", "type": "test_not_registered_bmi", "min_value": 10}]
    with caplog.at_level(logging.WARNING, logger="facemtl.store"):
        tasks = tasks_from_specs(specs)
    assert [t.name for t in tasks] == ["age"]
    assert "'bmi'" in caplog.text and "'test_not_registered_bmi' is not registered" in caplog.text
    assert "import the package that registers it" in caplog.text
    rec = {"id": 1, "time": 5.0, "source": "cam", "box": [1.0, 2.0, 3.0, 4.0], "score": 0.9, "landmarks": [[0, 0]] * 5,
           "thumbnail": False, "age": 33.0, "age_interval": [26, 42], "bmi": 23.456, "bmi_interval": [-1.5, 25.0],
           "raw": {"age": 31.0, "age_interval": [25, 40], "bmi": 22.0}}
    out = io.StringIO()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="facemtl.store"):
        assert write_records(iter([rec, {**rec, "id": 2}]), out, "csv", "faces", tasks) == 2
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    header = out.getvalue().splitlines()[0].split(",")
    assert header[-3:] == ["bmi", "bmi_interval", "raw_bmi"] and "thumbnail" not in header
    assert [(r["id"], r["bmi"], r["bmi_interval"], r["raw_bmi"], r["age_interval"]) for r in rows] == [
        ("1", "23.456", "[-1.5, 25.0]", "22.0", "26-42"), ("2", "23.456", "[-1.5, 25.0]", "22.0", "26-42")]
    assert "bmi, bmi_interval, raw_bmi" in caplog.text
    # with every task known: the columns as before, and no warning
    caplog.clear()
    out = io.StringIO()
    with caplog.at_level(logging.WARNING, logger="facemtl.store"):
        write_records(iter([{k: v for k, v in rec.items() if not k.startswith("bmi")} | {"raw": {"age": 31.0}}]), out,
                      "csv", "faces", tasks)
    assert out.getvalue().splitlines()[0].endswith(",age,age_interval,raw_age,raw_age_interval") and not caplog.text


# -- D: CSV sinks and a task that gives intervals without saying so ------------------------------------------

def test_csv_sinks_keep_the_interval_of_a_task_that_does_not_declare_it():
    bmi = Bmi("bmi")
    assert not bmi.has_interval() and csv_columns([bmi])[-2:] == ["bmi", "bmi_interval"]
    face = FaceResult([0.0, 0.0, 9.0, 9.0], 0.9, None, {"bmi": bmi.answers(np.array([[23.4567]], np.float32))[0]})
    out = io.StringIO()
    CsvSink([bmi], out).write(ImageResult(file="a.jpg", faces=[face]))
    (row,) = csv.DictReader(io.StringIO(out.getvalue()))
    assert (row["bmi"], row["bmi_interval"]) == ("23.457", "21.957-24.457")
    video = io.StringIO()
    face.track, face.raw = 1, face.answers
    VideoCsvSink([bmi], video).write(ImageResult(frame=3, time=0.1, faces=[face]))
    (vrow,) = csv.DictReader(io.StringIO(video.getvalue()))
    assert (vrow["bmi_interval"], vrow["raw_bmi_interval"]) == ("21.957-24.457", "21.957-24.457")


def test_csv_sinks_never_fail_half_way_and_say_what_they_left_out(caplog):
    bmi = Bmi("bmi", only_positive=True)  # no interval for a zero output: its columns have none
    assert csv_columns([bmi])[-1] == "bmi"
    faces = [FaceResult([0.0, 0.0, 9.0, 9.0], 0.9, None, {"bmi": a}) for a in bmi.answers(np.array([[-1.0], [2.0]]))]
    for sink_out, write in ((io.StringIO(), None), (io.StringIO(), "video")):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="facemtl.sinks"):
            if write is None:
                sink = CsvSink([bmi], sink_out)
                for f in faces:
                    sink.write(ImageResult(file="a.jpg", faces=[f]))
            else:
                sink = VideoCsvSink([bmi], sink_out)
                for i, f in enumerate(faces):
                    sink.write(ImageResult(frame=i, faces=[f]))
        rows = list(csv.DictReader(io.StringIO(sink_out.getvalue())))
        assert [r["bmi"] for r in rows] == ["-1.0", "2.0"]
        assert caplog.text.count("bmi_interval") == 1 and "left out" in caplog.text


def test_table_prints_the_task_precision():
    out = io.StringIO()
    TableSink(out).write(ImageResult(file="a.jpg", faces=[FaceResult(None, None, None, {
        "age": TaskAnswer(33.0, interval=(26, 42), decimals=1), "score": TaskAnswer(0.4321, decimals=3)})]))
    assert "age 33 (26-42), score 0.43" in out.getvalue()


# -- E: the export check ----------------------------------------------------------------------------------------

def test_export_check_counts_a_numeric_answer_changed_only_when_its_written_value_changes():
    rng = np.random.default_rng(0)
    raw = rng.uniform(0.1, 0.9, (30, 1)).astype(np.float32)
    near = raw + np.float32(1e-7)
    r = compare_outputs([SCORE], {"score": raw}, {"score": near})["score"]
    assert r["changed"] == 0.0 and r["mean_change"] < 1e-6
    far = raw.copy()
    far[:3] += 0.01  # 3 of 30 faces move by 0.01: their written value changes
    assert compare_outputs([SCORE], {"score": raw}, {"score": far})["score"]["changed"] == 0.1
    # ordinal (age) and nominal answers: as before, a face changed when its decoded answer does
    gender = build_task({"name": "gender", "type": "nominal", "classes": ["male", "female"]})
    age_ref = np.full((4, 115), -9.0, np.float32)
    age_ref[:, :30] = 9.0
    age_new = age_ref.copy()
    age_new[0, 30] = 9.0  # one face one year older
    g_ref = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]], np.float32)
    g_new = g_ref.copy()
    g_new[1] = [1.0, 0.0]
    rows = compare_outputs([AGE, gender], {"age": age_ref, "gender": g_ref}, {"age": age_new, "gender": g_new})
    assert rows["age"]["changed"] == 0.25 and rows["age"]["mean_change"] == 0.25
    assert rows["gender"]["changed"] == 0.25 and "mean_change" not in rows["gender"]


def test_rows_stored_unrounded_and_video_labels_read_at_the_tasks_decimals():
    """Track answers stored before 2026-11-27 hold unrounded numbers; read without their task's
    decimals they came back as 31.43721 where the API said 31.4. The video label formats the
    value once, as the table does (it parsed the table's text)."""
    from types import SimpleNamespace

    from facemtl.inference.results import FaceResult
    from facemtl.store.rows import answer_fields, stored_decimals
    from facemtl.video.writer import face_label

    decimals = stored_decimals([{"name": "age", "type": "ordinal", "min_value": 1, "max_value": 116},
                                {"name": "gender", "type": "nominal", "classes": ["male", "female"]},
                                {"name": "odd", "type": "no_such_type"}])
    assert decimals == {"age": 1}
    row = SimpleNamespace(task="age", value_text=None, value_num=31.43721, probability=None, probabilities=None,
                          lo=26.0, hi=37.0)
    assert answer_fields([row], decimals) == {"age": 31.4, "age_interval": [26, 37]}
    face = FaceResult([0, 0, 9, 9], 1.0, None, {"age": TaskAnswer(33.26, interval=(26, 42), decimals=1),
                                                "gender": TaskAnswer("female", 0.9)}, track=4)
    assert face_label(face, {"age": "years"}) == "#4 33 female"
    assert face.describe() == "age 33 (26-42), gender female 90%"
    # the unit says it, not the name: Adience's age groups (ranks) are named, an age under another name is not
    assert face_label(face) == "#4 age 33 female"
    renamed = FaceResult([0, 0, 9, 9], 1.0, None, {"years_old": TaskAnswer(33.0, decimals=1)})
    assert face_label(renamed, {"years_old": "years"}) == "33"
    # values that do not say which task answered them carry its name (a label read "#6 no black 0.25")
    other = FaceResult([0, 0, 9, 9], 1.0, None, {"glasses": TaskAnswer("no", 0.8), "hair": TaskAnswer("black", 0.7),
                                                 "smile": TaskAnswer(0.25, decimals=3)}, track=6)
    assert face_label(other) == "#6 glasses no black smile 0.25"


def test_numeric_tasks_that_do_not_read_ages_are_grouped_by_bands_of_their_own_range():
    """A 0..1 value and a -5..5 tilt were grouped by age bands (0-2, 3-9, ..., 70+): every face
    fell in one group, and the bias study and group accuracy said nothing."""
    from facemtl.metrics import group_accuracy

    tilt = build_task({"name": "tilt", "type": "regression", "min_value": -5, "max_value": 5})
    assert tilt.bias_edges == [-5.0, -2.5, 0.0, 2.5]
    assert list(tilt.subgroups(np.array([-4.0, -1.0, 0.5, 4.0, np.nan]))) == [
        "-5 to -2.5", "-2.5 to 0", "0-2.5", "2.5+", "?"]
    light = build_task({"name": "brightness", "type": "regression", "min_value": 0, "max_value": 1})
    assert light.group_edges == [0.0, 0.2, 0.4, 0.6, 0.8]
    assert group_accuracy(np.array([0.31, 0.45]), np.array([0.35, 0.35]), light.group_edges, False) == 0.5
    quality = build_task({"name": "quality", "type": "ordinal", "min_value": 1, "max_value": 5})
    assert list(quality.subgroups(np.array([1.0, 4.0, 5.0]))) == ["1", "4+", "4+"]
    age = build_task({"name": "age", "type": "ordinal", "min_value": 1, "max_value": 116})
    years = build_task({"name": "years", "type": "regression", "label": "age"})  # reads ages: age groups
    assert age.bias_edges == years.bias_edges == [0, 20, 40, 60]
    # whole-number groups take a value as a person reads it, halves up (as group accuracy does, and as the
    # table writes 19.6 years: 20): a user test found a rank of 1.5 named by one rank and grouped with another
    assert list(years.subgroups(np.array([19.4, 19.6, 20.0]))) == ["0-19", "20-39", "20-39"]
    # a user test: a 0..3 rank (child, teen, adult, senior) in five bands merged 2 and 3 into "2+", so "group
    # accuracy" counted 15 of 16 seniors taken for adults as right (84.6 % against 75.4 % exact): a rank each
    band = build_task({"name": "age_band", "type": "ordinal", "min_value": 0, "max_value": 3})
    assert band.group_edges == band.bias_edges == [0, 1, 2, 3]
    assert group_accuracy(np.array([2.0, 3.0]), np.array([3.0, 3.0]), band.group_edges, True) == 0.5
    assert quality.group_edges == [1, 2, 3, 4, 5]  # five ranks, five groups (4 and 5 were one)
    # and a report says "years" for ages only (it said so of every numeric task)
    assert (age.unit, years.unit, band.unit, tilt.unit) == ("years", "years", "", "")
    assert build_task({"name": "gender", "type": "nominal", "classes": ["m", "f"]}).unit == ""


def test_a_long_label_on_a_small_photo_is_wrapped_not_cut_off():
    """Six tasks' answers on a 200 px crop were cut off after the second."""
    from PIL import Image, ImageDraw

    from facemtl.inference.results import FaceResult
    from facemtl.sinks.annotate import _font, _wrap, draw_faces

    face = FaceResult([20, 20, 180, 180], 1.0, None, {n: TaskAnswer(0.2861, decimals=3) for n in
                                                      ["brightness", "tilt", "quality", "smiling", "hair", "age"]})
    draw = ImageDraw.Draw(Image.new("RGB", (200, 200)))
    lines = _wrap(draw, face.describe(), _font(11), 196).split("\n")
    assert len(lines) >= 2 and all(draw.textlength(line, font=_font(11)) <= 196 for line in lines)
    assert ", ".join(line.rstrip(",") for line in lines) == face.describe()  # nothing left out
    assert draw_faces(np.zeros((200, 200, 3), np.uint8), [face]).shape == (200, 200, 3)


def test_an_ordinal_scale_answers_with_one_decimal_at_most():
    """A 1..5 ordinal got three decimals (2.00 in the table, 2.0 in JSON) from its range alone."""
    quality = build_task({"name": "quality", "type": "ordinal", "min_value": 1, "max_value": 5})
    assert quality.decimals == 1
    (a,) = quality.answers(np.zeros((1, quality.output_size), np.float32))
    assert a.short("quality").split(" (")[0] in {f"quality {k}" for k in range(1, 6)}


def test_the_shipped_recipes_age_tasks_answer_and_group_as_before():
    """Age tasks keep what their range gave them before answers carried a task's precision: one
    decimal for 1..116, two for the CORAL protocol's 21..60, and the age groups."""
    from pathlib import Path

    from facemtl.config import load_config
    from facemtl.tasks.regression import DEFAULT_AGE_EDGES

    seen = set()
    recipes = [p for p in sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
               if not p.name.startswith("experiment")]  # (experiment files are grids, not recipes)
    for recipe in recipes:
        for spec in load_config(recipe).tasks:
            t = build_task(spec)
            if getattr(t, "label", None) == "age" and hasattr(t, "decimals"):
                want = 1 if (t.min_value, t.max_value) == (1, 116) else 2 if (t.min_value, t.max_value) == (21, 60) \
                    else None
                assert want is None or t.decimals == want, (recipe.name, t.decimals)
                if "group_edges" not in spec:  # (the CORAL recipes name their own)
                    assert list(t.group_edges) == list(DEFAULT_AGE_EDGES), recipe.name
                if "bias_edges" not in spec:  # (21..60: no empty 0-19, no 60+ of 60-year-olds alone)
                    want_bias = [20, 40] if (t.min_value, t.max_value) == (21, 60) else [0, 20, 40, 60]
                    assert list(t.bias_edges) == want_bias, recipe.name
                seen.add((t.min_value, t.max_value))
    assert {(1, 116), (21, 60)} <= seen


def test_a_number_is_written_one_digit_shorter_halves_up_and_infinity_as_it_is():
    """The table took halves to even (2.5 years read 2, while a rank of 2.5 is named for 3); a
    review found Decimal's halves away from zero (-1.5 as -2, the page's Math.round -1) and an
    infinite value raising."""
    cases = [(32.5, 1, "33"), (2.5, 1, "3"), (1.45, 2, "1.5"), (-1.5, 1, "-1"), (-1.25, 2, "-1.2"), (31.04, 1, "31"),
             (7.0, 0, "7"), (float("inf"), 1, "inf")]
    assert [TaskAnswer(v, decimals=d).number_text() for v, d, _ in cases] == [w for _, _, w in cases]


def test_the_stream_labels_its_video_by_each_tasks_unit(tmp_path):
    """``stream --annotate`` gives the video writer each task's unit: the age (years) is drawn alone."""
    pytest.importorskip("av")
    from facemtl.tasks import build_task
    from facemtl.video.command import build_sinks

    tasks = [build_task({"name": "age", "type": "ordinal", "min_value": 1, "max_value": 116}),
             build_task({"name": "gender", "type": "nominal", "classes": ["male", "female"]})]
    sinks = build_sinks(tasks, annotate=str(tmp_path / "out.mp4"), out=io.StringIO())
    try:
        assert sinks[-1].units == {"age": "years", "gender": ""}
    finally:
        for s in sinks:
            s.close()
