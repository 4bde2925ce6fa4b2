"""The one result schema: the JSON ``analyze --json`` prints is pinned, and every writer
(JSON lines, CSV, table) is written from the same typed results."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from facemtl.cli import main
from facemtl.inference.results import FaceResult, ImageResult, TaskAnswer, csv_columns
from facemtl.sinks import CsvSink, JsonLinesSink, TableSink
from facemtl.tasks import build_task

REPO = Path(__file__).resolve().parents[1]
PINNED = REPO / "tests" / "data" / "pinned"
PROB_TOL = 2e-4  # float32 rounding at the 4th decimal; every label, value and interval must match exactly
#: The pins were made with the float checkpoint; the shipped INT8 ONNX file is compared with it below.
CHECKPOINT = str(REPO / "src" / "facemtl" / "weights" / "utkface_lite0.pt")

pytest.importorskip("dlib")


def _same(got: dict, want: dict) -> None:
    """``got`` equals ``want`` key for key and in key order; probabilities within PROB_TOL."""
    assert list(got) == list(want)
    for k, w in want.items():
        g = got[k]
        if k == "faces":
            assert len(g) == len(w)
            for gf, wf in zip(g, w):
                _same(gf, wf)
        elif isinstance(w, dict):
            assert list(g) == list(w)
            assert all(abs(g[c] - w[c]) <= PROB_TOL for c in w), k
        elif k.endswith("_probability"):
            assert abs(g - w) <= PROB_TOL, k
        else:
            assert g == w, k


def test_aligned_json_is_pinned(utkface_root, capsys):
    want = [json.loads(x) for x in (PINNED / "analyze_aligned.jsonl").read_text().splitlines()]
    files = [str(utkface_root / "UTKFace" / r["file"]) for r in want]
    assert main(["analyze", *files, "--aligned", "--json", "--no-progress", "--checkpoint", CHECKPOINT]) == 0
    got = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    for g, w in zip(got, want, strict=True):
        g["file"] = os.path.basename(g["file"])
        _same(g, w)
    # the shipped model (INT8 ONNX, the default) gives the same labels, and ages within 3 years
    assert main(["analyze", *files, "--aligned", "--json", "--no-progress"]) == 0
    shipped = [json.loads(x)["faces"][0] for x in capsys.readouterr().out.splitlines()]
    pinned = [w["faces"][0] for w in want]
    assert sum(s["gender"] == p["gender"] for s, p in zip(shipped, pinned)) >= 19
    assert sum(s["race"] == p["race"] for s, p in zip(shipped, pinned)) >= 19
    assert max(abs(s["age"] - p["age"]) for s, p in zip(shipped, pinned)) <= 3


@pytest.mark.parametrize("detector", ["dlib", "mtcnn"])
def test_photo_json_is_pinned(detector, capsys):
    assert main(["analyze", str(REPO / "examples" / "astronaut.jpg"), "--json", "--detector", detector,
                 "--no-progress", "--checkpoint", CHECKPOINT]) == 0
    got = json.loads(capsys.readouterr().out)
    got["file"] = os.path.basename(got["file"])
    _same(got, json.loads((PINNED / f"analyze_astronaut_{detector}.json").read_text()))


TASKS = [build_task({"name": "age", "type": "ordinal", "min_value": 1, "max_value": 116}),
         build_task({"name": "gender", "type": "nominal", "classes": ["male", "female"]})]


def _face() -> FaceResult:
    return FaceResult([1.0, 2.0, 30.0, 40.0], 0.9, [[5.0, 6.0]] * 5,
                      {"age": TaskAnswer(31.04, interval=(26, 37), decimals=1),  # as the age task sets it
                       "gender": TaskAnswer("female", 0.93127, {"male": 0.06873, "female": 0.93127})})


def test_result_json_forms():
    ok = ImageResult(file="a.jpg", width=64, height=48, faces=[_face()])
    assert ok.to_dict() == {"file": "a.jpg", "width": 64, "height": 48, "faces": [{
        "box": [1.0, 2.0, 30.0, 40.0], "score": 0.9, "landmarks": [[5.0, 6.0]] * 5, "age": 31.0, "age_interval": [26, 37],
        "gender": "female", "gender_probability": 0.9313, "gender_probabilities": {"male": 0.0687, "female": 0.9313}}],
        "status": "ok"}
    unreadable = ImageResult(file="b.jpg").fail("not an image")
    assert list(unreadable.to_dict()) == ["file", "status", "error", "faces"]
    frame = ImageResult(frame=12, time=0.4, width=64, height=48)
    assert list(frame.to_dict())[:2] == ["frame", "time"] and frame.name == "frame 12"


def test_writers_share_the_schema():
    results = [ImageResult(file="none.jpg", width=10, height=10, status="no_face"),
               ImageResult(file="bad.jpg").fail("truncated"),
               ImageResult(file="a.jpg", width=64, height=48, faces=[_face(), _face()])]
    out = io.StringIO()
    sink = CsvSink(TASKS, out)
    for r in results:
        sink.write(r)
    lines = out.getvalue().splitlines()
    # the header comes from the tasks, even though the first file has no face
    assert lines[0].split(",") == csv_columns(TASKS) == [
        "file", "status", "error", "face", "x1", "y1", "x2", "y2", "score", "age", "age_interval", "gender",
        "gender_probability", "gender_p_male", "gender_p_female"]
    assert lines[1].startswith("none.jpg,no_face,") and lines[2].startswith("bad.jpg,error,truncated")
    assert lines[3].split(",")[9:] == ["31.0", "26-37", "female", "0.9313", "0.0687", "0.9313"]
    assert len(lines) == 5
    js = io.StringIO()
    JsonLinesSink(js).write(results[2])
    assert json.loads(js.getvalue()) == results[2].to_dict()
    table = io.StringIO()
    TableSink(table).write(results[2])
    assert "age 31 (26-37), gender female 93%" in table.getvalue()


def test_a_stored_face_of_the_api_reads_back_with_its_answers_only():
    """A user test: a /v1/faces item read with FaceResult.from_dict made answers of its record's
    fields (id, session, track_id, ...), and to_dict then failed on them."""
    from facemtl.inference.results import FaceResult

    face = {"box": [1.0, 2.0, 30.0, 40.0], "score": 0.99, "landmarks": None, "age": 31.0, "age_interval": [26, 37],
            "gender": "female", "gender_probability": 0.93}
    stored = {**face, "id": 7, "session": 2, "track_id": None, "media_time": None, "model_name": "m",
              "model_version": "1", "thumbnail": "/v1/faces/7/thumbnail.jpg", "time": 1.8e9, "source": "cam"}
    got = FaceResult.from_dict(stored)
    assert sorted(got.answers) == ["age", "gender"]
    assert got.to_dict() == FaceResult.from_dict(face).to_dict()
