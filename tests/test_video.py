"""Live video, the parts that need no model: tracker (IoU, Kalman, two-stage association,
bounded state), per-track smoothing, face quality, source forms, live and file readers, the
FPS cap, and the video output schema."""

from __future__ import annotations

import io
import queue
import threading
import time

import numpy as np
import pytest

pytest.importorskip("scipy")

from facemtl.inference.results import FaceResult, ImageResult, TaskAnswer, TrackResult, video_csv_columns
from facemtl.sinks import JsonLinesSink, TableSink, VideoCsvSink
from facemtl.tasks import build_task
from facemtl.video.reader import FrameReader
from facemtl.video.smoothing import TrackSmoother, face_quality, weighted_median
from facemtl.video.sources import (
    Camera,
    Folder,
    Frame,
    Source,
    SourceError,
    SourceSettings,
    Url,
    VideoFile,
    open_source,
    open_sources,
    read_sources_file,
)
from facemtl.video.tracker import KalmanBoxFilter, Tracker, TrackerSettings, iou_matrix

# -- tracker ---------------------------------------------------------------------------


def test_iou_known_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 2, 2]])
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30]])
    iou = iou_matrix(a, b)
    assert iou.shape == (2, 3)
    assert iou[0, 0] == pytest.approx(50 / 150)  # half overlap: 50 / (100 + 100 - 50)
    assert iou[0, 1] == 1.0 and iou[0, 2] == 0.0
    assert iou[1, 1] == pytest.approx(4 / 100)
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)


def test_kalman_predict_and_update_known_values():
    kf = KalmanBoxFilter([0, 0, 10, 20])
    assert np.allclose(kf.mean[:4], [5, 10, 0.5, 20]) and np.allclose(kf.mean[4:], 0)
    # initial std: position 2 h / 20 = 2, velocity 10 h / 160 = 1.25; process noise: h / 20 = 1
    assert kf.covariance[0, 0] == pytest.approx(4.0) and kf.covariance[4, 4] == pytest.approx(1.5625)
    kf.predict()
    assert np.allclose(kf.mean[:4], [5, 10, 0.5, 20])  # no velocity yet: the box stays
    assert kf.covariance[0, 0] == pytest.approx(4.0 + 1.5625 + 1.0)  # P + P_v + Q
    assert kf.covariance[0, 4] == pytest.approx(1.5625)
    # a box moving 3 px per frame: the filter learns the velocity and predicts the next box
    kf = KalmanBoxFilter([0, 0, 40, 40])
    for k in range(1, 30):
        kf.predict()
        kf.update([3 * k, 0, 3 * k + 40, 40])
    kf.predict()
    assert kf.mean[4] == pytest.approx(3.0, abs=0.05)
    assert np.allclose(kf.box, [90, 0, 130, 40], atol=0.5)


def test_two_stage_association_keeps_ids():
    tr = Tracker(TrackerSettings(max_lost=3, new_score=0.5), sure_score=0.5)  # sure faces alone start tracks here
    a, b = [100, 100, 160, 160], [300, 100, 360, 160]
    step = tr.update([a, b], [1.0, 1.0])  # first frame: tracks start confirmed
    assert [(t.id, d) for t, d in step.tracked] == [(1, 0), (2, 1)]
    step = tr.update([[304, 100, 364, 160], [102, 100, 162, 160]], [0.9, 0.9])  # swapped order, moved
    assert sorted((t.id, d) for t, d in step.tracked) == [(1, 1), (2, 0)]
    # track 1 seen only weakly (second round keeps it), track 2 missed, a weak face elsewhere starts nothing
    step = tr.update([[104, 100, 164, 160], [500, 300, 560, 360]], [0.3, 0.3])
    assert [(t.id, d) for t, d in step.tracked] == [(1, 0)] and not step.started
    assert {t.id: t.state for t in tr.tracks} == {1: "tracked", 2: "lost"}
    # a new sure face is tentative until its next match, then confirmed with a new id
    step = tr.update([[106, 100, 166, 160], [500, 300, 560, 360]], [0.9, 0.9])
    assert [t.id for t, _ in step.started] == [3] and [t.id for t, _ in step.tracked] == [1]
    step = tr.update([[108, 100, 168, 160], [501, 300, 561, 360]], [0.9, 0.9])
    assert sorted(t.id for t, _ in step.tracked) == [1, 3]
    # track 2, lost for more than max_lost (3) frames, ends; a tentative face not seen again is dropped silently
    step = tr.update([[110, 100, 170, 160], [501, 300, 561, 360], [20, 400, 80, 460]], [0.9, 0.9, 0.9])
    assert [t.id for t in step.ended] == [2] and [t.id for t, _ in step.started] == [4]
    step = tr.update([[112, 100, 172, 160], [502, 300, 562, 360]], [0.9, 0.9])
    assert [t.id for t in step.dropped] == [4]
    # between detections the boxes move along their prediction (here: 2 px per frame to the right)
    for _ in range(5):
        step = tr.predict()
    assert [t.id for t, d in step.tracked] == [1, 3] and all(d is None for _, d in step.tracked)
    assert step.tracked[0][0].box[0] == pytest.approx(122, abs=1.5)
    assert [t.id for t in tr.close().ended] == [1, 3] and len(tr) == 0


def test_tracker_state_stays_bounded_over_a_long_stream():
    rng = np.random.default_rng(0)
    tr = Tracker(TrackerSettings(max_lost=10))
    ended = 0
    for f in range(5000):  # people come and go; only the ones on screen (and briefly lost) are kept
        k = (f // 50) % 7
        boxes = [[100 * i + (f % 50), 50 * i, 100 * i + 60 + (f % 50), 50 * i + 60] for i in range(k)]
        step = tr.update(boxes, rng.uniform(0.6, 1.0, len(boxes))) if f % 3 == 0 else tr.predict()
        ended += len(step.ended)
        assert len(tr) <= 7 + 7  # on screen plus lost
    assert ended > 50


# -- smoothing -----------------------------------------------------------------------------


def _answers(age: float, p_female: float) -> dict[str, TaskAnswer]:
    return {"age": TaskAnswer(age, interval=(age - 5, age + 5)),
            "gender": TaskAnswer("female" if p_female > 0.5 else "male", max(p_female, 1 - p_female),
                                 {"male": 1 - p_female, "female": p_female})}


def test_smoother_known_values():
    assert weighted_median(np.array([10.0, 20.0, 30.0]), np.array([1.0, 1.0, 5.0])) == 30.0
    assert weighted_median(np.array([10.0, 20.0, 30.0]), np.array([1.0, 1.0, 1.0])) == 20.0
    s = TrackSmoother(history=10)
    assert s.answers() == {} and s.confidence == 0
    s.add(_answers(30, 0.9), 1.0)
    s.add(_answers(40, 0.6), 1.0)
    s.add(_answers(90, 0.2), 0.25)  # a poor frame: little weight
    a = s.answers()
    assert a["age"].value == 40.0 and a["age"].interval == (35, 45)
    p_female = (0.9 + 0.6 + 0.25 * 0.2) / 2.25
    assert a["gender"].value == "female" and a["gender"].probability == pytest.approx(p_female)
    assert s.confidence == pytest.approx(2.25 / 3.25)
    mean = TrackSmoother(numeric="mean")
    mean.add(_answers(30, 0.9), 1.0)
    mean.add(_answers(60, 0.9), 2.0)
    assert mean.answers()["age"].value == pytest.approx(50.0)


def test_smoother_history_is_bounded_and_keeps_the_best_frames():
    s = TrackSmoother(history=8)
    for k in range(10000):
        s.add(_answers(float(k % 100), 0.7), 0.5 + (k % 97) / 1000)
    assert len(s) == 8 and s.count == 10000
    assert min(w for w, _, _ in s._heap) >= 0.5 + 90 / 1000  # the eight heaviest samples


def test_face_quality_prefers_large_sharp_sure_faces():
    import cv2

    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 255, (112, 112, 3), np.uint8)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 3)
    q = face_quality([0, 0, 100, 100], 1.0, sharp, 0.5)
    assert 0.9 < q <= 1.0
    assert face_quality([0, 0, 100, 100], 1.0, blurred, 0.5) < q / 2
    assert face_quality([0, 0, 40, 40], 1.0, sharp, 0.5) == pytest.approx(q * 0.5, rel=1e-6)
    assert face_quality([0, 0, 100, 100], 0.25, sharp, 0.5) == pytest.approx(q * 0.5, rel=1e-6)


# -- sources -------------------------------------------------------------------------------


def test_source_forms(tmp_path):
    (tmp_path / "frames").mkdir()
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    assert isinstance(open_source("0"), Camera) and open_source("1").name == "camera 1"
    rtsp, http = open_source("rtsp://cam/live"), open_source("http://host/video.mp4")
    assert isinstance(rtsp, Url) and rtsp.live and isinstance(http, Url) and not http.live
    assert isinstance(open_source(str(tmp_path / "frames")), Folder)
    assert isinstance(open_source(str(video)), VideoFile)
    with pytest.raises(SourceError, match="no such file"):
        open_source(str(tmp_path / "missing.mp4"))
    with pytest.raises(SourceError, match="unknown kind of URL"):
        open_source("gopher://x")
    listing = tmp_path / "cams.txt"
    listing.write_text(f"# two cameras\nfront=rtsp://10.0.0.5/live\n\n{video}  # the clip\n")
    assert read_sources_file(listing) == [("front", "rtsp://10.0.0.5/live"), (None, str(video))]
    both = open_sources(str(listing))
    assert [s.name for s in both] == ["front", str(video)]
    # an operator test: "Lobby North=clip.mp4" said "no such file" (names were letters, digits, _ . - only)
    assert [s.name for s in open_sources([f"Lobby North={video}", f"gate 2 ={video}"])] == ["Lobby North", "gate 2"]
    with pytest.raises(SourceError, match=r"no such file \(name=SOURCE: a name may not hold"):
        open_sources([f"{tmp_path}/a=missing.mp4"])
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(SourceError, match="lists no source"):
        open_sources(str(tmp_path / "empty.txt"))


class _Fake(Source):
    def __init__(self, n: int, live: bool, fps: float = 30.0) -> None:
        super().__init__("fake")
        self.n, self.live, self.fps = n, live, fps

    def frames(self, stop, log):
        for i in range(self.n):
            if stop.is_set():
                return
            yield Frame(i, i / self.fps, np.zeros((4, 4, 3), np.uint8))


class _Reconnecting(Source):
    """A live source that drops after 100 frames and reconnects 0.5 s later, handing over 100 more at once."""

    live = True

    def __init__(self) -> None:
        super().__init__("reconnecting")

    def frames(self, stop, log):
        for i in range(200):
            if i == 100:
                time.sleep(0.5)  # past the opening window of the first connection
            yield Frame(i, i / 30, np.zeros((4, 4, 3), np.uint8), opened=i in (0, 100))


class _Fed(Source):
    """A live source that hands over as many frames as the test puts in its queue (``None`` ends it)."""

    live = True

    def __init__(self) -> None:
        super().__init__("fed")
        self.queue: queue.Queue = queue.Queue()

    def frames(self, stop, log):
        i = 0
        while (n := self.queue.get()) is not None:
            for _ in range(n):
                yield Frame(i, i / 30, np.zeros((4, 4, 3), np.uint8))
                i += 1


def _drain(reader: FrameReader) -> list[int]:
    got = []
    while True:
        with reader.ready:
            f = reader.take()
            if f is None and reader.finished:
                return got
            if f is None:
                reader.ready.wait(0.01)
        if f is not None:
            got.append(f.index)


def test_a_live_reader_drops_the_oldest_frames_a_file_reader_waits():
    ready = threading.Condition()
    live = FrameReader(_Fake(500, live=True), ready, print, size=4, opening=0).start()
    live._thread.join(5)  # nobody takes: the reader runs to the end without waiting
    assert live.finished and len(live.buffer) == 4 and live.dropped == 496
    assert [f.index for f in live.buffer] == [496, 497, 498, 499]  # the newest frames
    # while it opens, a live source may hand over a burst (what FFmpeg buffered while probing): kept, up to 64
    burst = FrameReader(_Fake(100, live=True), threading.Condition(), print, size=4).start()
    burst._thread.join(5)
    assert burst.finished and [f.index for f in burst.buffer] == list(range(36, 100)) and burst.dropped == 36
    # a reconnection (a frame marked ``opened``) may bring a burst again: the window reopens
    again = FrameReader(_Reconnecting(), threading.Condition(), print, size=4, opening=0.3).start()
    again._thread.join(5)
    assert again.finished and [f.index for f in again.buffer] == list(range(136, 200))
    file = FrameReader(_Fake(500, live=False), threading.Condition(), print, size=4).start()
    time.sleep(0.2)
    assert not file.finished and len(file.buffer) == 4  # waits for room
    assert _drain(file) == list(range(500)) and file.dropped == 0


def test_a_burst_kept_at_the_opening_is_worked_through_not_dropped_at_once():
    # a user test: two sources under --realtime lost about 1 s of frames (and the tracks on them)
    # when the opening window ended and the reader dropped all but 4 of a 40-frame backlog at once
    source, ready = _Fed(), threading.Condition()
    reader = FrameReader(source, ready, print, size=4, opening=1.0).start()  # (room for a loaded machine)

    def fed(n: int, last: int) -> list[int]:
        source.queue.put(n)
        with ready:
            assert ready.wait_for(lambda: reader.buffer and reader.buffer[-1].index == last, 5)
            return [f.index for f in reader.buffer]

    assert fed(30, 29) == list(range(30))  # the opening burst: kept
    time.sleep(1.1)  # the window ends
    assert fed(1, 30) == list(range(1, 31)) and reader.dropped == 1  # one in, the oldest out
    with ready:
        taken = [reader.take().index for _ in range(20)]
    assert taken == list(range(1, 21))
    assert fed(5, 35) == list(range(26, 36)) and reader.dropped == 6  # never regrows past what was left
    with ready:
        [reader.take() for _ in range(10)]
    assert fed(6, 41) == list(range(38, 42))  # caught up: the usual buffer of 4
    source.queue.put(None)
    reader._thread.join(5)
    assert reader.finished

def test_fps_cap_keeps_frames_by_source_time():
    reader = FrameReader(_Fake(90, live=False, fps=30), threading.Condition(), print, size=100, fps_cap=10).start()
    got = _drain(reader)
    assert got == list(range(0, 90, 3)) and reader.skipped == 60


def test_realtime_pacing_hands_frames_over_at_their_times_and_drops_behind(tmp_path):
    from PIL import Image

    from facemtl.video.pacing import Paced

    for i in range(6):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / f"f{i}.png")
    source = open_source(str(tmp_path), SourceSettings(fps=20, realtime=True))
    assert isinstance(source, Paced) and source.live and source.name == str(tmp_path)
    assert not open_source(str(tmp_path), SourceSettings(fps=20)).live  # without it: every frame, no waiting
    arrived = []
    for f in source.frames(threading.Event(), print):
        arrived.append((f.index, f.time, time.monotonic(), f.wall_time, time.time()))
    assert [a[:2] for a in arrived] == [(i, round(i / 20, 4)) for i in range(6)]  # the source's own numbers and times
    first = arrived[0]
    assert source.waited >= 0.2  # the waits for the frames' times, which the reader leaves out of its read time
    for _, t, at, wall_time, now in arrived:
        assert at - first[2] >= t - 0.005  # never before its time (5 frames at 20 FPS: 0.25 s in all)
        # the clock time it was due at, as a camera's: the first frame's arrival plus its media time
        assert wall_time == pytest.approx(first[3] + t, abs=1e-3) and wall_time <= now + 1e-3
    # a reader nobody takes from keeps the newest frames and counts the rest dropped, as for a camera
    reader = FrameReader(Paced(_Fake(40, live=False, fps=200)), threading.Condition(), print, size=4, opening=0).start()
    reader._thread.join(5)
    assert reader.finished and [f.index for f in reader.buffer] == [36, 37, 38, 39] and reader.dropped == 36
    # a stop while it waits for a frame's time ends it at once
    slow, stop = Paced(_Fake(10, live=False, fps=0.1)), threading.Event()
    frames = slow.frames(stop, print)
    assert next(frames).index == 0
    threading.Timer(0.1, stop.set).start()
    t = time.monotonic()
    assert list(frames) == [] and time.monotonic() - t < 2


def test_folder_source_reads_in_natural_order_and_skips_unreadable(tmp_path):
    from PIL import Image

    for i in (1, 2, 10):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / f"frame_{i}.png")
    (tmp_path / "frame_3.png").write_bytes(b"not a png")
    warnings: list[str] = []
    frames = list(Folder(str(tmp_path), fps=10).frames(threading.Event(), warnings.append))
    assert [(f.index, f.time, int(f.rgb[0, 0, 0])) for f in frames] == [(0, 0.0, 1), (1, 0.1, 2), (3, 0.3, 10)]
    assert len(warnings) == 1 and "frame_3.png" in warnings[0]


def test_source_settings_are_checked():
    with pytest.raises(ValueError, match="timeout"):
        SourceSettings(timeout=0)
    with pytest.raises(ValueError, match="reconnect"):
        SourceSettings(reconnect=-2)
    SourceSettings(reconnect=-1)  # FOREVER: no limit


# -- output schema -------------------------------------------------------------------------

TASKS = [build_task({"name": "age", "type": "ordinal", "min_value": 1, "max_value": 116}),
         build_task({"name": "gender", "type": "nominal", "classes": ["male", "female"]})]


def _frame() -> ImageResult:
    smooth, raw = _answers(31.0, 0.9), _answers(28.0, 0.8)
    faces = [FaceResult([1.0, 2.0, 30.0, 40.0], 0.9, None, smooth, track=7, raw=raw),
             FaceResult([50.0, 2.0, 80.0, 40.0], None, None, smooth, track=8)]
    return ImageResult(frame=12, time=0.4, wall_time=1700000000.5, source="front", width=64, height=48, faces=faces)


def test_video_output_schema():
    lines = _frame().face_lines()
    assert [list(d)[:7] for d in lines][0] == ["type", "source", "frame", "time", "wall_time", "track", "box"]
    assert lines[0]["type"] == "face" and lines[0]["age"] == 31.0 and lines[0]["raw"]["age"] == 28.0
    assert lines[0]["raw"]["gender_probabilities"] == {"male": 0.2, "female": 0.8}
    assert "raw" not in lines[1] and lines[1]["score"] is None  # tracked, not analysed, on this frame
    out = io.StringIO()
    sink = JsonLinesSink(out, faces=True)
    sink.write(_frame())
    track = TrackResult(7, 3, 40, 38, _answers(31.0, 0.9), 0.1, 1.3, 0.93, "front")
    sink.write_track(track)
    got = [__import__("json").loads(x) for x in out.getvalue().splitlines()]
    assert [d["type"] for d in got] == ["face", "face", "track"]
    assert got[2] == {"type": "track", "source": "front", "track": 7, "first_frame": 3, "last_frame": 40, "frames": 38,
                      "first_time": 0.1, "last_time": 1.3, "age": 31.0, "age_interval": [26.0, 36.0],
                      "gender": "female", "gender_probability": 0.9, "gender_probabilities": {"male": 0.1, "female": 0.9},
                      "confidence": 0.93}
    csv_out = io.StringIO()
    VideoCsvSink(TASKS, csv_out, source=True).write(_frame())
    rows = csv_out.getvalue().splitlines()
    assert rows[0].split(",") == video_csv_columns(TASKS, source=True)
    assert rows[0].startswith("source,frame,time,wall_time,track,x1,y1,x2,y2,score,age,age_interval,gender,")
    assert "raw_age" in rows[0] and "raw_gender_p_female" in rows[0]
    assert rows[1].startswith("front,12,0.4,1700000000.5,7,1.0,2.0,30.0,40.0,0.9,31.0,26.0-36.0,female,")
    assert len(rows) == 3
    table = io.StringIO()
    TableSink(table, frames=False).write(_frame())
    TableSink(table, frames=False).write_track(track)
    assert table.getvalue() == ("front: track 7: frames 3-40 (0.1-1.3 s): age 31 (26.0-36.0), gender female 90% "
                                "(confidence 0.93)\n")


def test_scoring_counts_switches_where_people_do_not_overlap():
    """Two people meet: while their true boxes overlap, which one a box belongs to is a guess, so
    ``id_switches`` counts the ids trading places there; the *clear* counts look only at frames
    where a person overlaps no one: the ids given back after the meeting count nothing, and a
    track that ends up following the other person (a takeover) counts once."""
    from facemtl.video.scoring import score

    def box(x: float) -> list[float]:
        return [x, 0, x + 10, 10]

    xs = {1: [0, 10, 16, 20, 24, 30, 40], 2: [40, 30, 24, 20, 16, 10, 0]}  # overlapping on frames 2-4
    truth = {"people": [{"person": 1, "file": "a"}, {"person": 2, "file": "b"}], "boxes": [
        [f, p, *box(x[f]), 1.0] for p, x in xs.items() for f in range(7)]}

    def faces(ids: dict[int, list[int]]) -> list[dict]:
        return [{"frame": f, "track": ids[p][f], "box": box(xs[p][f])} for p in xs for f in range(7)]

    apart = score(truth, faces({1: [1, 1, 2, 1, 1, 1, 1], 2: [2, 2, 1, 2, 2, 2, 2]}), [])
    assert apart["id_switches"] == 4 and apart["id_switches_clear"] == 0 and apart["track_switches_clear"] == 0
    taken = score(truth, faces({1: [1, 1, 1, 2, 2, 2, 2], 2: [2, 2, 2, 1, 1, 1, 1]}), [])
    assert taken["id_switches_clear"] == 2 and taken["track_switches_clear"] == 2  # each track took the other


def test_crossing_plan_has_people_meet_and_the_default_one_does_not():
    from facemtl.video.synthetic import FaceSpec, VideoPlan, plan_people

    faces = [FaceSpec(f"{i}.jpg", {}) for i in range(40)]

    def meetings(plan: VideoPlan) -> int:
        people = plan_people(faces, plan)
        n = 0
        for i, a in enumerate(people):
            for b in people[i + 1:]:
                if a.lane == b.lane and a.direction != b.direction:
                    lo, hi = max(a.start, b.start), min(a.start + a.frames, b.start + b.frames)
                    n += any(abs(a.box(f, plan.width, 0)[0] - b.box(f, plan.width, 0)[0]) < 100 for f in range(lo, hi))
        return n

    assert meetings(VideoPlan(seconds=15, seed=0)) == 0
    assert meetings(VideoPlan(seconds=15, seed=0, crossing=True)) > 3
