"""Sources in the results database: the ``fps`` a stream's source reports, and a source
name that belongs to one kind of writer (stream, analyze run, uploads) and no other."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import time
from types import SimpleNamespace

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("alembic")

import sqlalchemy as sa  # noqa: E402
from fakes import model_info, photos, store_photos, stream  # noqa: E402

from facemtl.inference.results import TrackResult  # noqa: E402
from facemtl.sinks.db import DbSink  # noqa: E402
from facemtl.store import SessionWriter, SourceKindError, Store, StoreError  # noqa: E402
from facemtl.store.models import Session  # noqa: E402
from facemtl.store.writer import FPS_WINDOW  # noqa: E402

INFO = model_info()


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def frames(n: int, source: str | None = None, people: int = 3, seed: int = 0) -> list:
    """``n`` stream frames of ``people`` faces each (the track ends left out)."""
    return [r for r in stream(INFO, n, seed=seed, source=source, people=people, track_len=10 ** 6)
            if not isinstance(r, TrackResult)][:n]


def fps_of(store: Store, name: str, now: float) -> float | None:
    return {s["name"]: s for s in store.sources(now=now)}[name]["fps"]


def feed_in_bursts(writer: SessionWriter, store: Store, clock: Clock, results: list, rate: float,
                   sizes: tuple[int, ...], latency: float = 0.1, start: float | None = None,
                   name: str = "cam") -> list[tuple[float, float, int]]:
    """``results`` at ``rate`` frames per second from ``start``, handed to the writer in batches
    of ``sizes`` (in turn), each ``latency`` s after its last frame, flushed when due as
    :class:`DbSink` does (64 faces, a 1 s old result or a heartbeat owed); the clock is moved
    in 0.05 s steps between batches (heartbeats). Returns ``(seconds since start, stored fps,
    frames handed over)`` after every flush."""
    start = clock.t if start is None else start
    readings, i, k = [], 0, 0
    while i < len(results):
        batch = results[i:i + sizes[k % len(sizes)]]
        arrive = start + (i + len(batch) - 1) / rate + latency
        while clock.t + 0.05 < arrive:  # waiting for the batch: heartbeats only
            clock.t += 0.05
            if writer.due(64, 1.0):
                writer.flush()
                readings.append((clock.t - start, fps_of(store, name, clock.t), i))
        clock.t = max(clock.t, arrive)
        for j, r in enumerate(batch, 1):
            writer.add(r)
            if writer.due(64, 1.0):  # mid-batch, as a DbSink flushes after 64 faces
                writer.flush()
                readings.append((clock.t - start, fps_of(store, name, clock.t), i + j))
        i, k = i + len(batch), k + 1
    return readings


def counts(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        sessions = conn.execute(sa.select(sa.func.count()).select_from(Session)).scalar_one()
    return {**store.counts(), "sessions": int(sessions)}


# -- 1: fps is the frame rate, not a burst over the time since the last flush ---------------------------------


def test_stream_fps_is_its_frame_rate_whatever_the_batches(db_url):
    """25 FPS handed over in batches of 3 to 8 frames, 3 faces a frame, so the writer flushes
    in the middle of batches (64 faces) and between them (heartbeats). The old figure (frames
    since the last flush over the seconds since it) read from 0 to several hundred."""
    clock = Clock()
    with Store(db_url) as store:
        writer = SessionWriter(store.write_engine, "stream", "cam", INFO, clock=clock)
        assert fps_of(store, "cam", clock.t) == 0.0  # announced, no frame yet
        readings = feed_in_bursts(writer, store, clock, frames(750), 25.0, (3, 7, 5, 8, 4, 6))  # 30 s
        assert len(readings) > 30
        steady = [f for t, f, _ in readings if t >= FPS_WINDOW]
        early = [f for t, f, _ in readings if 2.0 <= t < FPS_WINDOW]
        assert steady and early
        # over a full window a batch moves the figure by at most 8 / 250 frames
        assert all(abs(f - 25.0) <= 0.04 * 25.0 for f in steady), steady
        assert all(abs(f - 25.0) <= 0.15 * 25.0 for f in early), early
        assert all(f <= 1.2 * 25.0 for _, f, _ in readings)  # never a spike, not even at the start
        writer.close()
        (cam,) = store.sources(now=clock.t)
        assert cam["state"] == "stopped" and cam["fps"] is None


def test_fps_counts_frames_not_faces_and_each_source_its_own(db_url):
    """Two cameras in one stream, 20 and 5 FPS, with 4 faces and no face a frame: each stored
    figure is its frames per second; one camera's frames never count for the other."""
    clock = Clock()
    with Store(db_url) as store:
        writer = SessionWriter(store.write_engine, "stream", "stream@test", INFO, announce=False,
                               sources=["door", "hall"], clock=clock)
        door = frames(20 * 20, "door", people=4, seed=1)
        hall = frames(5 * 20, "hall", people=0, seed=2)
        start = clock.t
        events = sorted([(start + i / 20.0, r) for i, r in enumerate(door)]
                        + [(start + i / 5.0, r) for i, r in enumerate(hall)], key=lambda e: e[0])
        for t, r in events:
            clock.t = t
            writer.add(r)
            if writer.due(64, 1.0):
                writer.flush()
        clock.t += 0.01
        writer.flush()
        assert fps_of(store, "door", clock.t) == pytest.approx(20.0, rel=0.02)
        assert fps_of(store, "hall", clock.t) == pytest.approx(5.0, rel=0.03)
        assert "stream@test" not in {s["name"] for s in store.sources()}  # no source of its own: none announced
        writer.close()


def test_fps_of_a_camera_that_took_long_to_connect_and_then_stopped(db_url):
    """A live camera's first frame 4 s after the writer started: its figure counts from that
    frame (its wall time), not from the writer's start, as the stream's summary does (frames
    finished over the seconds since the first frame was read; low by the frames still in the
    pipeline in its first seconds). When it stops delivering, the figure falls to 0 within the
    window while the heartbeat keeps it running."""
    clock = Clock()
    with Store(db_url) as store:
        writer = SessionWriter(store.write_engine, "stream", "gate", INFO, clock=clock)
        first = clock.t + 4.0
        results = frames(30 * 6, people=1)  # 6 s at 30 FPS
        for j, r in enumerate(results):
            r.wall_time = first + j / 30.0  # when the camera's frame was read
        readings = feed_in_bursts(writer, store, clock, results, 30.0, (8,), start=first, name="gate")
        assert [f for t, f, _ in readings if t < 1.0] == [0.0, 0.0]  # connecting (heartbeats) and its first second
        summary = [(f, n / t) for t, f, n in readings if t >= 1.0]  # the summary's FPS: frames over seconds since
        assert len(summary) >= 4 and all(f == pytest.approx(want, abs=0.01) for f, want in summary), summary
        assert all(27.0 <= f <= 30.0 for t, f, _ in readings if t >= 3.0), readings
        stopped_at, seen = clock.t, []
        while clock.t < stopped_at + FPS_WINDOW + 2.0:  # no frame: heartbeats only
            clock.t += 0.5
            if writer.due(64, 1.0):
                writer.flush()
                seen.append(fps_of(store, "gate", clock.t))
        assert seen == sorted(seen, reverse=True) and seen[0] > 10.0 and seen[-1] == 0.0
        (gate,) = store.sources(now=clock.t)
        assert gate["state"] == "running"
        writer.close()


# -- 2: a source belongs to one kind of writer ------------------------------------------------------------------


def make_source(url: str, kind: str, name: str) -> None:
    """A source ``name`` of ``kind`` with a few faces (an upload writer left running, as the server's is)."""
    if kind == "upload":
        with Store(url) as store:
            w = store.writer("upload", f"upload@{socket.gethostname()}", INFO, announce=False)
            for r in photos(INFO, 3):
                r.source = name
                w.add(r)
            w.flush()  # the server's upload session stays open: the source reads running
        return
    sink = DbSink(url, source=name, kind=kind, model_info=INFO)
    for r in (frames(5, name) if kind == "stream" else list(photos(INFO, 3))):
        sink.write(r)
    sink.close()


OWNERS = {"stream": "a stream run", "analyze": "an analyze run", "upload": "the server's uploads"}
RENAME = {"stream": "give the stream another name (NAME=SOURCE in a sources file)",
          "analyze": "analyze files its results under this name: store them in another database",
          "upload": "give uploads a name of their own (?source=...)"}


@pytest.mark.parametrize("owner,writer_kind", [("upload", "stream"), ("analyze", "stream"), ("stream", "analyze"),
                                               ("upload", "analyze"), ("stream", "upload"), ("analyze", "upload")])
def test_a_source_of_another_kind_is_refused_before_anything_is_written(db_url, owner, writer_kind):
    make_source(db_url, owner, "conc")
    with Store(db_url) as store:
        before, sources_before = counts(store), store.sources(now=1.0)
        with pytest.raises(SourceKindError) as err:
            if writer_kind == "upload":
                store.writer("upload", "conc", INFO)
            else:
                DbSink(store=store, source="conc", kind=writer_kind, model_info=INFO)
        assert str(err.value) == (f"the source 'conc' belongs to {OWNERS[owner]} (kind {owner}), not to "
                                  f"{OWNERS[writer_kind]}; {RENAME[writer_kind]}")
        assert isinstance(err.value, StoreError) and isinstance(err.value, RuntimeError)  # the CLI's exit 2
        assert counts(store) == before  # not even a session
        assert store.sources(now=1.0) == sources_before  # kind, state and session of 'conc' as they were


def test_a_stream_of_several_sources_is_refused_for_any_of_them(db_url):
    make_source(db_url, "upload", "conc")
    with Store(db_url) as store:
        before = counts(store)
        with pytest.raises(SourceKindError, match="^the source 'conc' belongs to the server's uploads"):
            DbSink(store=store, kind="stream", model_info=INFO, sources=["door", "conc"])
        assert counts(store) == before and {s["name"] for s in store.sources()} == {"conc"}


def test_a_source_another_live_stream_writes_is_refused_and_taken_over_once_it_stopped(db_url):
    """Two streams under one name took the source from each other without a word, and a purge then
    deleted the first one's open tracks under it (a user test): the second is refused while the
    first beats, before anything is written, and takes the source over once the first stopped."""
    import sqlalchemy as sa

    from facemtl.store import SourceBusyError
    from facemtl.store.engine import create_db_engine
    from facemtl.store.models import Session

    first = DbSink(db_url, source="cam9", kind="stream", model_info=INFO)
    for r in frames(4, "cam9"):
        first.write(r)
    first.flush()
    eng = create_db_engine(db_url)
    from facemtl.system import process_start

    with eng.begin() as conn:  # (another process of this machine, alive: the one that started pytest; with its
        # own start, or the session reads as an earlier life of its number; where pytest's parent is outside this
        # process's namespace, getppid() is 0, which os.kill finds alive)
        conn.execute(sa.update(Session).where(Session.id == first.session_id).values(
            pid=os.getppid(), process_start=process_start(os.getppid())))
    with Store(db_url) as store:
        before = counts(store)
        with pytest.raises(SourceBusyError, match=r"^the source 'cam9' is being written by another stream now "
                                                  rf"\(session {first.session_id}, process {os.getppid()} on "):
            DbSink(store=store, kind="stream", model_info=INFO, sources=["door", "cam9"])
        assert counts(store) == before  # not even a session
        assert [(s["name"], s["session"]) for s in store.sources()] == [("cam9", first.session_id)]
    # this very process's number on this machine: an earlier life of it (a container restarted after a kill
    # is process 1 again; a review), not another writer
    with eng.begin() as conn:
        conn.execute(sa.update(Session).where(Session.id == first.session_id).values(pid=os.getpid()))
    eng.dispose()
    again = DbSink(db_url, source="cam9", kind="stream", model_info=INFO)
    again.close()
    first.close()
    second = DbSink(db_url, source="cam9", kind="stream", model_info=INFO)
    assert len({first.session_id, again.session_id, second.session_id}) == 3
    second.close()


def test_a_stream_source_that_never_sent_a_frame_is_not_left_behind(db_url):
    """A user test: a camera that refused, or a run stopped while its model loaded, left its source
    on the operator's page for good, stopped and empty. It goes at the close; a source that sent
    frames without a face stays, and so does one taken over from an earlier run."""
    import dataclasses

    DbSink(db_url, source="door", kind="stream", model_info=INFO).close()
    empty = DbSink(db_url, source="corridor", kind="stream", model_info=INFO)
    for r in frames(3, "corridor"):
        empty.write(dataclasses.replace(r, faces=[]))
    empty.close()
    first = DbSink(db_url, source="cam", kind="stream", model_info=INFO)
    for r in frames(2, "cam"):
        first.write(r)
    first.close()
    DbSink(db_url, source="cam", kind="stream", model_info=INFO).close()  # (taken over; sent nothing this time)
    with Store(db_url) as store:
        assert sorted(s["name"] for s in store.sources()) == ["cam", "corridor"]


def test_the_same_kind_takes_its_source_over(db_url):
    """A later stream run of the same camera is a new session of that source: its faces and tracks
    go under it beside the first run's, the source's session, state and fps become the new run's.
    Every analyze run files under ``analyze@host``."""
    first = DbSink(db_url, source="cam", kind="stream", model_info=INFO)
    for r in frames(10, "cam", people=2):
        first.write(r)
    first.close()
    second = DbSink(db_url, source="cam", kind="stream", model_info=INFO)
    for r in frames(4, "cam", people=2, seed=5):
        second.write(r)
    second.flush()
    with Store(db_url) as store:
        (cam,) = store.sources()
        assert cam["kind"] == "stream" and cam["state"] == "running" and cam["session"] == second.session_id
        second.close()
        assert store.counts() == {"faces": 28, "tracks": 4, "sources": 1}
        faces = list(store.records("faces"))
        assert {f["session"] for f in faces} == {first.session_id, second.session_id}
        assert {f["source"] for f in faces} == {"cam"}
    for seed in (1, 2):
        store_photos(db_url, INFO, 5, seed=seed)
    with Store(db_url) as store:
        names = {s["name"]: s["kind"] for s in store.sources()}
        assert names == {"cam": "stream", f"analyze@{socket.gethostname()}": "analyze"}


def test_a_sink_that_lost_refused_results_says_how_many_at_its_close(db_url, capsys):
    sink = DbSink(db_url, kind="stream", model_info=INFO)
    make_source(db_url, "upload", "hall")  # taken by the uploads before the camera's first frame
    for a, b in zip(frames(4, "door", people=1), frames(4, "hall", people=1, seed=3)):
        sink.write(a)
        sink.write(b)
    sink.close()
    assert sink.incomplete
    assert ("facemtl: warning: the results of 4 frames or photos were refused by the results database and are not "
            "stored" in capsys.readouterr().err)


def test_a_source_taken_by_another_kind_after_the_start_drops_its_results(db_url, caplog):
    """Names not known at the start (or taken meanwhile) are checked when first written: the
    results of the source that another kind of writer took are dropped with one warning, the
    other sources' are stored, and nothing of the stream is filed under the upload source."""
    with Store(db_url) as store:
        writer = store.writer("stream", "stream@test", INFO, announce=False)
        make_source(db_url, "upload", "hall")  # an upload names itself 'hall' before the camera's first frame
        door, hall = frames(6, "door", people=1), frames(6, "hall", people=1, seed=3)
        with caplog.at_level(logging.WARNING, logger="facemtl.store"):
            for a, b in zip(door[:3], hall[:3]):
                writer.add(a)
                writer.add(b)
            writer.flush()
            assert len(caplog.records) == 1
            msg = caplog.records[0].getMessage()
            assert "refused 3 of 6 images" in msg and "the source 'hall' belongs to the server's uploads" in msg
            for a, b in zip(door[3:], hall[3:]):
                writer.add(a)
                writer.add(b)
            writer.flush()
            assert len(caplog.records) == 1  # said once
        writer.close()
        assert writer.dropped == 6
        by_source = {}
        for f in store.records("faces"):
            by_source.setdefault(f["source"], set()).add(f["session"])
        assert by_source["door"] == {writer.session_id} and len(by_source["hall"]) == 1
        assert writer.session_id not in by_source["hall"]  # the upload session's faces only
        kinds = {s["name"]: (s["kind"], s["state"]) for s in store.sources()}
        assert kinds == {"door": ("stream", "stopped"), "hall": ("upload", "running")}


# -- the commands: one sentence, exit 2, before any frame or file is read ----------------------------------------


class _NoWork:
    """A stand-in for the analyzers: a model that must never be asked to read anything."""

    def __init__(self, *args, **kw) -> None:
        self.tasks = INFO.build_tasks()
        self.predictor = SimpleNamespace(info=INFO)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def stream(self, *args, **kw):
        raise AssertionError("a frame was read")

    def analyze_files(self, *args, **kw):
        raise AssertionError("a file was read")


def _run(argv: list[str]) -> tuple[int, str]:
    """``facemtl ARGV``: its exit status and stderr; its stdout must stay empty (a refused source
    name leaves no other output begun, such as a CSV header)."""
    from facemtl.cli import main

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = main(argv)
    assert out.getvalue() == ""
    return rc, err.getvalue()


def test_stream_db_into_an_upload_source_is_refused_by_the_command(tmp_path, monkeypatch):
    pytest.importorskip("av")
    pytest.importorskip("scipy")
    from PIL import Image

    from facemtl.video import command

    monkeypatch.setattr(command, "VideoAnalyzer", _NoWork)
    (tmp_path / "frames").mkdir()
    Image.new("RGB", (64, 48)).save(tmp_path / "frames" / "f1.png")
    (tmp_path / "cams.txt").write_text(f"conc={tmp_path / 'frames'}\n")
    db = str(tmp_path / "r1.db")
    make_source(db, "upload", "conc")
    with Store(db) as store:
        before = counts(store)
    rc, err = _run(["stream", str(tmp_path / "cams.txt"), "--db", db, "--no-progress", "--csv"])
    assert rc == 2 and err == ("facemtl: error: the source 'conc' belongs to the server's uploads (kind upload), not "
                               "to a stream run; give the stream another name (NAME=SOURCE in a sources file)\n")
    (tmp_path / "cams.txt").write_text(f"door={tmp_path / 'frames'}\nconc={tmp_path / 'frames'}\n")
    rc, err = _run(["stream", str(tmp_path / "cams.txt"), "--db", db, "--no-progress"])
    assert rc == 2 and err.startswith("facemtl: error: the source 'conc' belongs to the server's uploads")
    with Store(db) as store:
        assert counts(store) == before
        assert [(s["name"], s["kind"], s["state"]) for s in store.sources()] == [("conc", "upload", "running")]


def test_analyze_db_into_a_source_of_another_kind_is_refused_by_the_command(tmp_path, monkeypatch):
    import facemtl.inference

    monkeypatch.setattr(facemtl.inference, "FaceAnalyzer", _NoWork)
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"not read")
    db = str(tmp_path / "r.db")
    name = f"analyze@{socket.gethostname()}"
    make_source(db, "upload", name)
    with Store(db) as store:
        before = counts(store)
    rc, err = _run(["analyze", str(photo), "--db", db, "--csv"])
    assert rc == 2 and err == (f"facemtl: error: the source {name!r} belongs to the server's uploads (kind upload), "
                               "not to an analyze run; analyze files its results under this name: store them in "
                               "another database\n")
    with Store(db) as store:
        assert counts(store) == before


def test_uploads_under_a_name_another_kind_owns_are_refused_once_not_kept_forever(tmp_path, caplog):
    """The server's upload source name taken by a stream: every upload was answered ``kept`` and
    retried as if the database were away, then dropped; now ``refused``, said once in the log."""
    from types import SimpleNamespace

    from facemtl.server.service import Service

    db = str(tmp_path / "r.db")
    make_source(db, "stream", f"upload@{socket.gethostname()}")
    with Store(db) as store:
        before = counts(store)
        svc = Service(store, None)
        svc.predictor = SimpleNamespace(info=INFO)  # what the upload writer reads of the model
        with caplog.at_level("ERROR", logger="facemtl.server"):
            said = [svc._store(r, None, r.faces, None) for r in photos(INFO, 3)]  # (photos with faces)
        assert said == ["refused"] * 3 and not svc._unstored
        assert [r.getMessage()[:40] for r in caplog.records] == ["uploads are not stored: the source 'uplo"]
        assert counts(store) == before


def test_a_restarted_server_takes_up_its_uploads_source_at_once(tmp_path):
    """A user test: after a server restart the Sources tab said the uploads' source was 'stopped'
    until the first upload. Its first heartbeat takes the source up again; a database without one
    gets none until an upload comes, and a server that only reads takes none up."""
    from facemtl.server.service import Service

    db = str(tmp_path / "r.db")
    name = f"upload@{socket.gethostname()}"
    with Store(db) as store:
        fresh = Service(store, None)
        fresh.predictor = SimpleNamespace(info=INFO)
        fresh.beat()
        assert store.source_kind(name) is None  # nothing to take up: none made
        fresh.close()
    with Store(db) as store:  # the earlier run's uploads, its session ended when it stopped
        w = store.writer("upload", name, INFO, announce=False)
        for r in photos(INFO, 3):
            w.add(r)
        w.close()
    with Store(db) as store:
        assert {s["name"]: s["state"] for s in store.sources()}[name] == "stopped"
        Service(store, None).beat()  # (no model: it analyses nothing)
        assert {s["name"]: s["state"] for s in store.sources()}[name] == "stopped"
        svc = Service(store, None)
        svc.predictor = SimpleNamespace(info=INFO)
        real = store.writer
        store.writer = lambda *a, **k: (_ for _ in ()).throw(OSError("the database went away"))
        svc.beat()  # the database fails between the look and the write: looked for again at the next beat
        store.writer = real
        assert {s["name"]: s["state"] for s in store.sources()}[name] == "stopped"
        svc.beat()
        assert {s["name"]: s["state"] for s in store.sources()}[name] == "running"
        svc.close()
        assert {s["name"]: s["state"] for s in store.sources()}[name] == "stopped"


# -- a writer killed before it closed ----------------------------------------------------------------


def test_a_killed_writers_session_is_ended_by_the_next_writer_and_a_live_one_is_not(db_url, caplog):
    """kill -9 left the session without 'ended', its tracks open for good (/v1/tracks?closed=false)
    and its source 'running'. The next writer on the machine ends it; a session whose process
    this machine cannot see (a container sharing the host name) but whose source still beats is
    left alone, and retention never deletes a session that has not ended."""
    import subprocess
    import sys

    from facemtl.store.models import Answer, Face, Source, Track, TrackAnswer
    from facemtl.store.retention import purge

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a process number that no longer runs
    clock = Clock()

    def open_tracks(conn, sid):
        return conn.execute(sa.select(sa.func.count()).select_from(Track).where(
            Track.session_id == sid, Track.closed.is_(False))).scalar_one()

    with Store(db_url) as store:
        killed = SessionWriter(store.write_engine, "stream", "cam", INFO, clock=clock)
        elsewhere = SessionWriter(store.write_engine, "stream", "door", INFO, clock=clock)
        for r in frames(30):
            killed.add(r)
        killed.flush()  # ... and then its process is killed: no close()
        for r in frames(30, source="door"):
            elsewhere.add(r)
        elsewhere.flush()
        with store.write_engine.begin() as conn:  # both record a process this machine does not run
            conn.execute(sa.update(Session).where(Session.id.in_([killed.session_id, elsewhere.session_id]))
                         .values(pid=dead.pid))
            assert open_tracks(conn, killed.session_id) > 0
        clock.t += 1.0  # 'door' beat a second ago: alive, on a machine that shares this one's name
        with caplog.at_level(logging.WARNING, logger="facemtl.store"):
            again = SessionWriter(store.write_engine, "stream", "cam", INFO, clock=clock)  # takes over 'cam'
        assert f"session {killed.session_id} (process {dead.pid} on this machine) ended without closing" in caplog.text
        assert f"session {elsewhere.session_id} " not in caplog.text
        with store.engine.connect() as conn:
            ended = dict(conn.execute(sa.select(Session.id, Session.ended)).all())
            last_face = conn.execute(sa.select(sa.func.max(Face.time)).where(Face.session_id == killed.session_id)).scalar()
            assert ended[killed.session_id] == last_face and open_tracks(conn, killed.session_id) == 0
            assert ended[elsewhere.session_id] is None and open_tracks(conn, elsewhere.session_id) > 0
            # a track closed so answers what its last face answered (it had no answers at all)
            for tid in conn.execute(sa.select(Track.id).where(Track.session_id == killed.session_id)).scalars():
                fid = conn.execute(sa.select(sa.func.max(Face.id)).where(Face.track_id == tid)).scalar_one()
                face = {(r.task, r.value_text, r.value_num, r.lo, r.hi) for r in conn.execute(
                    sa.select(Answer).where(Answer.face_id == fid, Answer.raw.is_(False)))}
                track = {(r.task, r.value_text, r.value_num, r.lo, r.hi) for r in conn.execute(
                    sa.select(TrackAnswer).where(TrackAnswer.track_id == tid))}
                assert face and track == face
            states = dict(conn.execute(sa.select(Source.name, Source.state)).all())
        assert states == {"cam": "running", "door": "running"}  # cam: the new run's
        again.close()
        gone = purge(store.write_engine, 1, now=2_000_000_000.0)  # days after every face and heartbeat
        assert gone["sessions"] == 2 and gone["sources"] == 1, gone  # killed and closed ones, cam; door still runs
        with store.engine.connect() as conn:
            assert conn.execute(sa.select(Session.ended).where(Session.id == elsewhere.session_id)).scalar_one() is None


def test_a_restarted_containers_killed_session_is_ended_though_its_process_number_runs_again(db_url, caplog):
    """A container restarted after kill -9 runs as process 1 under the same host name again: the
    killed life's session was skipped as this process's own, so it stayed open for good (its
    tracks open, retention never taking it), and ``db end`` refused it as alive. A session now
    records when its process started; the number held by a process of another start is
    another process, ended once silent (not at once on a name taken over: a sibling container of
    the same host name and number writes on). This very process's live sessions are left alone."""
    from facemtl.system import process_start

    me = process_start(os.getpid())
    boot = open("/proc/sys/kernel/random/boot_id").read().strip()
    ticks = int(open(f"/proc/{os.getpid()}/stat").read().rsplit(")", 1)[1].split()[19])
    assert me == f"{boot}:{ticks}"  # no clock step changes it (psutil's create_time moved with one: a review)
    clock = Clock()

    def ended(store):
        with store.engine.connect() as conn:
            return dict(conn.execute(sa.select(Session.id, Session.ended)).all())

    with Store(db_url) as store:
        killed = SessionWriter(store.write_engine, "stream", "cam", INFO, clock=clock)
        silent = SessionWriter(store.write_engine, "stream", "hall", INFO, clock=clock)
        live = SessionWriter(store.write_engine, "stream", "door", INFO, clock=clock)
        for w, name in ((killed, "cam"), (silent, "hall"), (live, "door")):
            for r in frames(10, source=name):
                w.add(r)
            w.flush()
        with store.engine.connect() as conn:  # each records this process, as it started
            assert set(conn.execute(sa.select(Session.pid, Session.process_start)).all()) == {(os.getpid(), me)}
        with store.write_engine.begin() as conn:  # the first two: an earlier life of this number
            conn.execute(sa.update(Session).where(Session.id.in_([killed.session_id, silent.session_id]))
                         .values(process_start=f"{boot}:{ticks - 360000}"))
        clock.t += 1.0
        again = SessionWriter(store.write_engine, "stream", "cam", INFO, clock=clock)  # the restarted stream
        assert ended(store)[killed.session_id] is None  # beat a second ago: maybe a sibling's, left alone
        clock.t += 60.0  # silent since
        for w, name in ((live, "door"), (again, "cam")):
            for r in frames(2, source=name):
                w.add(r)
            w.flush()
        with caplog.at_level(logging.WARNING, logger="facemtl.store"):
            later = SessionWriter(store.write_engine, "stream", "yard", INFO, clock=clock)
        assert f"session {killed.session_id} (process {os.getpid()} on this machine) ended without closing" \
            in caplog.text
        now = ended(store)
        assert now[killed.session_id] is not None and now[silent.session_id] is not None  # silent: ended
        assert now[live.session_id] is None and now[again.session_id] is None  # this process's, alive
        with pytest.raises(ValueError, match=rf"session {live.session_id} is alive: its writer, process "
                                             f"{os.getpid()}, runs on this machine"):
            store.end_session(source="door", now=time.time() + 3600)
        for w in (again, live, later):
            w.close()


def test_db_end_takes_a_session_whose_process_number_runs_again_under_another_start(db_url):
    """``db end`` refused a killed session as alive while its process number ran again (a
    restarted container's process 1); a session of another start is judged by its silence."""
    with Store(db_url) as store:
        w = SessionWriter(store.write_engine, "stream", "hall", INFO)
        for r in frames(5, source="hall"):
            w.add(r)
        w.flush()
        with store.write_engine.begin() as conn:
            conn.execute(sa.update(Session).where(Session.id == w.session_id).values(process_start="another start"))
        done = store.end_session(source="hall", now=time.time() + 3600)
        assert done["session"] == w.session_id and done["sources_stopped"] == 1


def test_a_client_following_after_the_last_id_misses_no_face_of_late_batches(db_url):
    """Two cameras: the second's batch, captured earlier, is stored after the first's. A client
    following by capture time (since = the newest time seen) lost 17 % of the faces in a user
    test; following by id (after = the last id seen) sees every face once."""
    from facemtl.store import Query

    with Store(db_url) as store:
        a = SessionWriter(store.write_engine, "stream", "gate", INFO)
        b = SessionWriter(store.write_engine, "stream", "hall", INFO)
        for r in frames(20, source="gate", seed=1):  # captured at 1.7e9 + 0 .. 1.9 s
            a.add(r)
        a.flush()
        seen, last = [], 0
        page, _ = store.faces(Query(after=last, limit=500))
        seen += [f["id"] for f in page]
        last, newest = seen[-1], max(f["time"] for f in page)
        for r in frames(20, source="hall", seed=2):  # the same seconds, stored later
            b.add(r)
        b.flush()
        by_time, _ = store.faces(Query(since=newest + 1e-6, limit=500))
        page, nxt = store.faces(Query(after=last, limit=7))
        while page:
            assert nxt is None and [f["id"] for f in page] == sorted(f["id"] for f in page)
            seen += [f["id"] for f in page]
            page, nxt = store.faces(Query(after=seen[-1], limit=7))
        total = store.counts()["faces"]
        assert len(seen) == len(set(seen)) == total and total == 2 * 20 * 3
        assert len(by_time) == 0  # the capture-time walk would have missed all of hall's faces
        with pytest.raises(ValueError, match="after and cursor cannot be combined"):
            Query(after=1, cursor="1.0_1")
        a.close()
        b.close()
