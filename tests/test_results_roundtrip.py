"""JSON output read back into the typed results (``ImageResult.from_dict`` and its kin): what a
user loading ``analyze --json`` or ``stream --json`` lines gets is what was written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from facemtl.inference.results import FaceResult, ImageResult, TaskAnswer, TrackResult

REPO = Path(__file__).resolve().parents[1]


def test_analyze_json_lines_read_back_into_the_same_records(tmp_path):
    r = subprocess.run([sys.executable, "-m", "facemtl.cli", "analyze", str(REPO / "examples" / "astronaut.jpg"),
                        str(tmp_path / "missing.jpg"), "--json", "--no-progress"], capture_output=True, text=True,
                       timeout=300)
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["status"] for x in lines] == ["error", "ok"]
    for line in lines:
        back = ImageResult.from_dict(line)
        assert back.to_dict() == line
    face = ImageResult.from_dict(lines[1]).faces[0]
    assert set(face.answers) == {"age", "gender", "race"} and face.answers["gender"].value in ("male", "female")
    assert face.answers["age"].interval is not None and face.describe().startswith("age ")


def test_stream_face_and_track_lines_read_back():
    age = TaskAnswer(33.4, interval=(26, 42), decimals=1)
    gender = TaskAnswer("female", 0.9, {"female": 0.9, "male": 0.1})
    frame = ImageResult(frame=7, time=0.23, wall_time=1.7e9, source="gate",
                        faces=[FaceResult([1.0, 2.0, 30.0, 40.0], 0.99, [[5.0, 6.0]] * 5,
                                          {"age": age, "gender": gender}, track=3, raw={"age": age, "gender": gender})])
    (line,) = frame.face_lines()
    face = FaceResult.from_dict(line)
    assert face.track == 3 and face.box == [1.0, 2.0, 30.0, 40.0] and set(face.answers) == {"age", "gender"}
    assert face.to_dict() == {k: v for k, v in line.items() if k not in ("type", "source", "frame", "time", "wall_time")}
    track = TrackResult(3, 0, 7, 8, {"age": age, "gender": gender}, 0.0, 0.23, 0.8, "gate", 1.7e9, 1.7e9 + 0.23)
    assert TrackResult.from_dict(track.to_dict()).to_dict() == track.to_dict()
