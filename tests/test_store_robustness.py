"""The results database and the server against awkward input: text a database refuses, a
batch with one bad image, stream URLs with passwords, uploads naming another writer's
source, huge cursors, a database that went away, a newer schema, a read-only file."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("alembic")

import sqlalchemy as sa  # noqa: E402

from fakes import model_info, photos, stream  # noqa: E402
from facemtl.inference.results import ImageResult, TrackResult  # noqa: E402
from facemtl.sinks.db import DbSink  # noqa: E402
from facemtl.store import Query, Store  # noqa: E402
from facemtl.store import writer as writer_module  # noqa: E402
from facemtl.store.models import Face, Source  # noqa: E402

INFO = model_info()
FILE_LEN = Face.__table__.c.file.type.length
NAME_LEN = Source.__table__.c.name.type.length


def stored_files(url: str) -> list[str]:
    with Store(url) as store:
        return sorted(f["file"] for f in store.records("faces", Query()))


def batch_with(bad_files: list[str]) -> list[ImageResult]:
    """Ten photos (8 with two faces each), the first len(bad_files) given the awkward names."""
    items = list(photos(INFO, 10))
    for r, name in zip(items, bad_files):
        r.file = name
    return items


AWKWARD = ["b\udcff.jpg", "a\x00b.jpg", "x" * (FILE_LEN + 50) + ".jpg"]


# -- 1: a row the database refuses never costs the rest ---------------------------------------------------


def test_awkward_file_and_source_names_are_stored_cleaned(db_url):
    long_source = "rtsp://cam/" + "s" * (NAME_LEN + 20)
    sink = DbSink(db_url, source=long_source, kind="stream", model_info=INFO, batch_faces=1000, max_wait=1e9)
    for r in batch_with(AWKWARD):
        sink.write(r)
    sink.close()  # one batch: written whole
    files = stored_files(db_url)
    assert len(files) == 16  # 8 photos with 2 faces each: nothing lost
    assert files.count("b\ufffd.jpg") == 2 and files.count("ab.jpg") == 2
    assert files.count("x" * FILE_LEN) == 2
    with Store(db_url) as store:
        (src,) = store.sources()
        assert src["name"] == long_source[:NAME_LEN] and src["state"] == "stopped"
        with store.engine.connect() as c:
            assert c.execute(sa.text("SELECT count(*) FROM sessions WHERE ended IS NULL")).scalar() == 0


def test_a_batch_the_database_refuses_is_retried_image_by_image(db_url, monkeypatch, caplog):
    """Without the cleaning (as if some other value were refused), the database rejects the
    awkward images; the others of the same batch are stored, the bad ones dropped and logged."""
    monkeypatch.setattr(writer_module, "clean_text", lambda value, length: value)
    bad = ["a\x00b.jpg"] if "postgresql" in db_url else ["b\udcff.jpg"]
    sink = DbSink(db_url, model_info=INFO, batch_faces=1000, max_wait=1e9)
    with caplog.at_level(logging.WARNING, logger="facemtl.store"):
        for r in batch_with(bad):
            sink.write(r)
        sink.close()
    files = stored_files(db_url)
    assert len(files) == 14 and sorted(files) == sorted(f"photos/p{i:05d}.jpg" for i in range(1, 10) if i % 5 != 4
                                                        for _ in range(2))
    assert sink.writer.dropped == 1 and sink.writer.closed
    (warning,) = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert "1 of 10 images" in warning and "the rest of the batch is stored" in warning
    with Store(db_url) as store:
        assert all(s["state"] == "stopped" for s in store.sources())
    # a writer that has dropped an image goes on: its next batch is stored whole
    sink = DbSink(db_url, model_info=INFO, batch_faces=1000, max_wait=1e9)
    for r in batch_with(bad):
        sink.write(r)
    sink.flush()  # the batch with the refused image: written image by image
    for r in batch_with([]):
        r.file = "later/" + r.file
        sink.write(r)
    sink.close()
    assert len([f for f in stored_files(db_url) if f.startswith("later/")]) == 16


def test_a_lost_connection_still_keeps_the_whole_batch(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    sink = DbSink(url, model_info=INFO, batch_faces=1000, max_wait=1e9)
    for r in batch_with(["b\udcff.jpg"]):
        sink.write(r)
    good = sink.writer.engine
    sink.writer.engine = sa.create_engine(f"sqlite:///{tmp_path / 'no-such-folder' / 'x.db'}")
    with pytest.raises(sa.exc.OperationalError):
        sink.flush()
    assert sink.writer.pending.faces == 16 and sink.writer.dropped == 0
    sink.writer.engine = good
    sink.close()
    assert len(stored_files(url)) == 16


def test_a_long_outage_keeps_memory_bounded_and_the_backlog_is_caught_up_in_slices(tmp_path, monkeypatch, capsys):
    """While the database was away a stream kept every face in memory (0.4 MB/s at 30 fps, no
    limit), and caught the backlog up in one transaction that stalled the stream for 10 s."""
    import facemtl.sinks.db as db_module

    url = f"sqlite:///{tmp_path / 'r.db'}"
    sink = DbSink(url, source="cam", kind="stream", model_info=INFO, batch_faces=8, max_wait=0.0, max_backlog=60)
    results = [r for r in stream(INFO, 80, source="cam", people=3, track_len=10 ** 6) if not isinstance(r, TrackResult)]
    good = sink.writer.engine
    sink.writer.engine = sa.create_engine(f"sqlite:///{tmp_path / 'no-such-folder' / 'x.db'}")  # away
    monkeypatch.setattr(db_module.time, "monotonic", lambda: 1e12)  # no back-off wait between tries
    for r in results[:60]:
        sink.write(r)
    assert sink.writer.pending.faces <= 60 + 3 and sink.writer.lost == 180 - sink.writer.pending.faces
    assert capsys.readouterr().err.count("the oldest kept faces are dropped from now on") == 1  # said once
    kept = [img.frame for img in sink.writer.pending.images]
    assert kept == sorted(kept) and kept[-1] == results[59].frame  # the newest kept, the oldest dropped

    sink.writer.engine = good  # back: the backlog goes in slices, one per result written
    monkeypatch.setattr(db_module, "CATCH_UP_FACES", 12)
    before = sink.writer.pending.faces
    sink.write(results[60])
    assert 0 < before + 3 - sink.writer.pending.faces <= 12  # a slice written, not the whole backlog
    for r in results[61:]:
        sink.write(r)
    sink.close()
    assert "faces were not stored: the results database was away past a backlog of 60 faces" in capsys.readouterr().err
    with Store(url) as store:
        assert store.counts()["faces"] == 240 - sink.writer.lost


def test_a_slice_interrupted_by_an_outage_loses_nothing_and_empty_frames_count_toward_the_limit(tmp_path,
                                                                                               monkeypatch):
    """A sliced flush whose slice met refused data, then an outage during the image-by-image
    retry, dropped the rest of the backlog without a count; frames without faces (an empty
    scene during an outage) were never limited."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    sink = DbSink(url, model_info=INFO, batch_faces=1000, max_wait=1e9)
    for r in batch_with([]):
        sink.writer.add(r)
    total = sink.writer.pending.faces
    real, calls = writer_module.SessionWriter._write, {"n": 0}

    def flaky(self, pending, now):
        calls["n"] += 1
        if calls["n"] == 1:
            raise sa.exc.IntegrityError("INSERT", {}, Exception("refused"))
        if calls["n"] == 3:
            raise sa.exc.OperationalError("INSERT", {}, Exception("server closed the connection"))
        return real(self, pending, now)

    monkeypatch.setattr(writer_module.SessionWriter, "_write", flaky)
    with pytest.raises(sa.exc.OperationalError):
        sink.writer.flush(max_faces=4)
    monkeypatch.setattr(writer_module.SessionWriter, "_write", real)
    sink.close()
    assert len(stored_files(url)) == total and sink.writer.dropped == 0 and sink.writer.lost == 0

    empty = DbSink(f"sqlite:///{tmp_path / 'e.db'}", source="cam", kind="stream", model_info=INFO)
    for i in range(50):
        empty.writer.add(ImageResult(frame=i, time=i / 30, source="cam"))
    assert empty.writer.limit_backlog(20) == 0 and len(empty.writer.pending.images) == 20  # no face lost, memory kept
    assert [im.frame for im in empty.writer.pending.images] == list(range(30, 50))
    empty.close()


# -- the server ------------------------------------------------------------------------------------------

PHOTO = Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg"


@pytest.fixture
def client_store(db_url, predictor):
    """An open app over a database with one stopped folder run and one camera: ``(client, store)``."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from facemtl.server import create_app

    sink = DbSink(db_url, source="folder", kind="analyze", model_info=INFO)
    for r in photos(INFO, 5):
        sink.write(r)
    sink.close()
    cam = DbSink(db_url, source="cam", kind="stream", model_info=INFO)
    for it in stream(INFO, 10, source="cam"):
        (cam.write_track if isinstance(it, TrackResult) else cam.write)(it)
    cam.flush()
    store = Store(db_url)
    with TestClient(create_app(store, predictor), raise_server_exceptions=False) as client:
        yield client, store
    cam.close()
    store.close()


def upload(client, name="a.jpg", data=None, **params):
    return client.post("/v1/analyze", params=params,
                       files={"file": (name, PHOTO.read_bytes() if data is None else data, "image/jpeg")})


def test_an_upload_named_with_nul_never_stops_later_uploads(client_store):
    client, _ = client_store
    service = client.app.state.service  # (the test client would send the NUL percent-encoded, curl sends it raw)
    out, stored = service.analyze(PHOTO.read_bytes(), "a\x00b.jpg")
    assert stored == "yes" and out["file"] == "a\x00b.jpg"
    for name in ("c" * 300 + ".jpg", "d.jpg"):
        r = upload(client, name)
        assert r.status_code == 200 and r.headers["x-facemtl-stored"] == "yes", (name, r.text)
    files = [f["file"] for f in client.get("/v1/faces", params={"limit": 3}).json()["items"]]
    assert files == ["d.jpg", "c" * 200, "ab.jpg"]  # the API's file name keeps 200 characters of a client's name


def test_an_upload_of_a_large_photo_answers_as_analyze(tmp_path, client_store, capsys):
    from PIL import Image

    from facemtl.cli import main

    big = tmp_path / "big.jpg"
    Image.open(PHOTO).resize((4400, 4400), Image.BILINEAR).save(big, quality=90)
    assert main(["analyze", str(big), "--json"]) == 0
    want = __import__("json").loads(capsys.readouterr().out.splitlines()[0])
    client, _ = client_store
    r = upload(client, "big.jpg", big.read_bytes(), annotate=True)
    got = r.json()
    annotated = got.pop("annotated")
    want["file"] = "big.jpg"
    assert got == want and (got["width"], got["height"]) == (4400, 4400) and len(got["faces"]) == 1
    assert annotated.startswith("data:image/jpeg;base64,")


def test_uploads_never_take_over_another_writers_source(client_store):
    client, store = client_store
    for name in ("folder", "cam"):
        r = upload(client, source=name)
        assert r.status_code == 409 and r.json()["detail"].startswith(f"the source '{name}' belongs to a")
    before = {s["name"]: s for s in store.sources()}
    assert before["folder"]["state"] == "stopped" and before["cam"]["state"] == "running"
    r = upload(client, source="kiosk")
    assert r.status_code == 200 and r.headers["x-facemtl-stored"] == "yes"
    client.app.state.service.beat()
    after = {s["name"]: s for s in store.sources()}
    assert after["kiosk"]["state"] == "running" and after["kiosk"]["kind"] == "upload"
    assert after["kiosk"]["heartbeat"] == 10.0
    assert {k: after[k]["state"] for k in ("folder", "cam")} == {"folder": "stopped", "cam": "running"}
    assert after["cam"]["session"] == before["cam"]["session"]
    client.app.state.service.close()  # what the server does at shutdown
    final = {s["name"]: s["state"] for s in store.sources()}
    assert final == {"folder": "stopped", "cam": "running", "kiosk": "stopped"}


# -- 3: a stream URL's password is never stored or shown ------------------------------------------------------


def test_a_stream_urls_password_is_not_its_name(tmp_path, capsys):
    pytest.importorskip("av")
    from facemtl.video.sources import open_source

    src = open_source("rtsp://admin:s3cret@cam.example:554/live?ch=1")
    assert src.name == "rtsp://cam.example:554/live?ch=1" and src.spec.startswith("rtsp://admin:s3cret@")
    assert open_source("rtsp://cam.example/live").name == "rtsp://cam.example/live"
    assert open_source("rtsp://admin:s3cret@cam.example/live", name="door").name == "door"
    url = f"sqlite:///{tmp_path / 'r.db'}"
    sink = DbSink(url, source=src.name, kind="stream", model_info=INFO)
    with Store(url) as store:  # (announced while it runs; one that never sent a frame goes at the close)
        assert [s["name"] for s in store.sources()] == ["rtsp://cam.example:554/live?ch=1"]
    sink.close()
    assert b"s3cret" not in (tmp_path / "r.db").read_bytes()


# -- 5: /v1/stats counts what /v1/faces and /v1/tracks select -----------------------------------------------


def all_pages(client, path, **params):
    out, cursor = [], None
    while True:
        page = client.get(path, params={**params, "limit": 500, **({"cursor": cursor} if cursor else {})}).json()
        out += page["items"]
        if not (cursor := page["next"]):
            return out


def test_stats_take_the_answer_filters(client_store):
    client, _ = client_store
    faces = all_pages(client, "/v1/faces")
    tracks = [t for t in all_pages(client, "/v1/tracks") if t["closed"]]
    span = {"since": 1.6e9, "until": 2e9, "bucket": 4e6}
    cases = [({"gender": "female"}, lambda r: r["gender"] == "female"),
             ({"race": ["asian", "indian"], "age_min": 20, "age_max": 39},
              lambda r: r["race"] in ("asian", "indian") and 20 <= r["age"] <= 39),
             ({"age_max": 30.5}, lambda r: r["age"] <= 30.5)]
    for of, rows in (("faces", faces), ("tracks", tracks)):
        for params, keep in cases:
            want = [r for r in rows if keep(r)]
            r = client.get("/v1/stats", params={**span, **params, "of": of})
            assert r.status_code == 200, r.text
            counted = r.json()["tasks"]
            for task in ("age", "gender", "race"):
                total = sum(n for b in counted.get(task, {"buckets": []})["buckets"] for n in b["counts"].values())
                assert total == len(want), (of, params, task)
            genders = {g: sum(b["counts"].get(g, 0) for b in counted["gender"]["buckets"])
                       for g in counted["gender"]["groups"]} if want else {}
            assert genders == {g: n for g in ("male", "female") if (n := sum(r["gender"] == g for r in want))}
    assert 0 < len([f for f in faces if f["gender"] == "female"]) < len(faces)
    r = client.get("/v1/stats", params={"foo": 1})
    assert r.status_code == 400 and "'foo'" in r.json()["detail"]
    r = client.get("/v1/stats", params={"age_min": 50, "age_max": 10})
    assert r.status_code == 400 and "above" in r.json()["detail"]


# -- 6: a cursor out of range is a 400, not a 500 ------------------------------------------------------------


def test_cursors_out_of_range_are_refused(client_store):
    client, _ = client_store
    for path in ("/v1/faces", "/v1/tracks"):
        for cursor in ("1_99999999999999999999999999999", "1_9223372036854775808", "1e999_5", "-1e400_3"):
            r = client.get(path, params={"cursor": cursor})
            assert r.status_code == 400 and r.json()["detail"].startswith("cursor is not one"), (path, cursor, r.text)
        r = client.get(path, params={"cursor": "1e300_9223372036854775807"})
        assert r.status_code == 200
        first = client.get(path, params={"limit": 1}).json()
        assert client.get(path, params={"cursor": first["next"]}).status_code == 200


# -- 7: a database that went away: reads answer 503, uploads are kept ---------------------------------------------


def test_reads_answer_503_while_the_database_is_away(client_store, tmp_path, monkeypatch):
    from facemtl.store.engine import create_db_engine

    client, store = client_store
    good = store.engine
    down = sa.create_engine(f"sqlite:///{tmp_path / 'no-such-folder' / 'x.db'}") if store.dialect == "sqlite" \
        else create_db_engine("postgresql://postgres@127.0.0.1:1/nothing")  # nothing listens on port 1
    monkeypatch.setattr(store, "engine", down)
    try:
        assert client.get("/v1/health").status_code == 503
        for path in ("/v1/faces", "/v1/tracks", "/v1/stats", "/v1/sources", "/v1/faces/1/thumbnail.jpg",
                     "/v1/sources/1/snapshot.jpg"):
            r = client.get(path)
            assert r.status_code == 503 and r.json()["detail"].startswith("the results database does not answer"), \
                (path, r.text)
    finally:
        monkeypatch.setattr(store, "engine", good)
    assert client.get("/v1/faces").status_code == 200


def test_a_read_the_database_does_not_answer_is_a_503_after_the_wait(client_store, monkeypatch):
    """A user test: with PostgreSQL stopped (SIGSTOP), requests that had a pooled connection
    waited until it went on (and /v1/health too). A read, and the health probe's ping, now answer
    503 after their wait. Here the wait is 0.5 s, and what holds the read is real on PostgreSQL
    (another connection locks the faces' tables, as a migration would), a read that blocks on
    SQLite; released after 5 s either way (without the wait, the requests answered 200 then)."""
    import threading

    client, store = client_store
    service = client.app.state.service
    monkeypatch.setattr(service, "read_wait", 0.5)
    monkeypatch.setattr(service, "health_wait", 0.5)
    gate = threading.Event()
    ping = store.ping
    monkeypatch.setattr(store, "ping", lambda: (gate.wait(), ping()))
    if store.dialect == "postgresql":
        holder = store.engine.connect()
        held = holder.begin()
        holder.execute(sa.text("LOCK TABLE faces, answers IN ACCESS EXCLUSIVE MODE"))

        def release():
            gate.set()
            held.rollback()
            holder.close()
    else:
        faces, stats = store.faces, store.stats
        monkeypatch.setattr(store, "faces", lambda q: (gate.wait(), faces(q))[1])
        monkeypatch.setattr(store, "stats", lambda *a, **kw: (gate.wait(), stats(*a, **kw))[1])
        release = gate.set
    timer = threading.Timer(5.0, release)
    timer.start()
    try:
        t0 = time.monotonic()
        r = client.get("/v1/health")
        assert r.status_code == 503 and r.json() == {"status": "error", "database": "not answering"}
        for path in ("/v1/faces", "/v1/stats"):
            r = client.get(path)
            assert r.status_code == 503 and r.json()["detail"].startswith(
                "the results database did not answer within 0.5 s"), (path, r.text)
        assert time.monotonic() - t0 < 4.0  # three waits of 0.5 s, not the 5 s until the release
    finally:
        timer.join()
    assert client.get("/v1/faces").status_code == 200 and client.get("/v1/health").status_code == 200
    # the look for tasks new in the database (before a request, every 5 s) waits no longer
    gate.clear()
    newest = store.newest_session
    monkeypatch.setattr(store, "newest_session", lambda: (gate.wait(), newest())[1])
    monkeypatch.setattr(service, "_newest_session", -1)
    timer = threading.Timer(5.0, gate.set)
    timer.start()
    t0 = time.monotonic()
    assert service.new_tasks() is None and time.monotonic() - t0 < 4.0
    timer.join()
    assert service.new_tasks() is None and service._newest_session == newest()  # it answers: looked at


def test_an_upload_while_the_database_is_away_is_kept_and_written_later(client_store, tmp_path):
    client, _ = client_store
    assert upload(client, "first.jpg").headers["x-facemtl-stored"] == "yes"
    writer = client.app.state.service._writer
    good = writer.engine
    writer.engine = sa.create_engine(f"sqlite:///{tmp_path / 'no-such-folder' / 'x.db'}")
    r = upload(client, "while-away.jpg")
    assert r.status_code == 200 and r.headers["x-facemtl-stored"] == "kept" and len(r.json()["faces"]) == 1
    writer.engine = good
    client.app.state.service.beat()  # the server's heartbeat, every 10 s
    files = [f["file"] for f in client.get("/v1/faces", params={"limit": 2}).json()["items"]]
    assert files == ["while-away.jpg", "first.jpg"]


class _NoStore:
    """What the upload service asks a store for at its start, over an empty database; a test's
    subclass says how its writer behaves."""

    read_only = False

    def newest_session(self):
        return 0

    def tasks(self, base):
        return list(base)

    def class_names(self):
        return {}

    def task_kinds(self):
        return {}


def test_uploads_while_the_database_is_away_do_not_each_wait_for_it():
    """A review: each upload with faces tried the database itself, under the service's lock, so
    while it was away uploads finished one connection timeout after the other (PostgreSQL behind
    a dropped route: about 2 minutes each). After the first try fails they are kept at once."""
    import threading

    from facemtl.inference.results import FaceResult, ImageResult
    from facemtl.server.service import Service

    tries = []

    class Away(_NoStore):
        def writer(self, *a, **k):
            tries.append(1)
            raise sa.exc.OperationalError("connect", {}, Exception("timeout expired"))

    service = Service(Away(), None)
    service.predictor = type("P", (), {"info": None})()
    said = []

    def one(i: int) -> None:
        r = ImageResult(file=f"u{i}.jpg")
        r.faces = [FaceResult([0, 0, 10, 10], 0.99, None, {})]
        said.append(service._store(r, None, r.faces, None))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert said == ["kept"] * 6 and len(tries) == 1 and len(service._unstored) == 6
    service.beat()  # the heartbeat keeps trying
    assert len(tries) == 2 and len(service._unstored) == 6


# -- 8: a database written by a newer facemtl -------------------------------------------------------------------


def test_a_database_from_a_newer_facemtl_is_named_as_such(db_url, capsys):
    from facemtl.cli import main
    from facemtl.store import SchemaError, head_revision

    Store(db_url).close()
    eng = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with eng.begin() as c:
        c.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    eng.dispose()
    want = f"was written by a newer facemtl (schema 9999; this one knows up to {head_revision()}): upgrade facemtl"
    with pytest.raises(SchemaError, match=__import__("re").escape(want)):
        Store(db_url)
    assert main(["db", "upgrade", "--db", db_url]) == 2
    err = capsys.readouterr().err
    assert want in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["db", "export", "faces", "--db", db_url]) == 2
    assert want in capsys.readouterr().err


def test_db_upgrade_of_what_is_no_database_says_so_in_one_sentence(tmp_path, capsys):
    """A photo given as --db, and a PostgreSQL URL with no server behind it: db upgrade says what
    every other command says (the same sentence as db export), exit 2, and leaves the file as it was."""
    import socket

    from facemtl.cli import main

    photo = tmp_path / "a.jpg"
    photo.write_bytes((Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg").read_bytes())
    before = photo.read_bytes()
    assert main(["db", "upgrade", "--db", str(photo)]) == 2
    err = capsys.readouterr().err
    assert err == f"facemtl: error: cannot open the database sqlite:///{photo}: file is not a database\n"
    assert photo.read_bytes() == before
    assert main(["db", "export", "faces", "--db", str(photo)]) == 2
    assert capsys.readouterr().err == err

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["db", "upgrade", "--db", f"postgresql://nobody:secret@127.0.0.1:{port}/x"]) == 1  # (no server: 1)
    err = capsys.readouterr().err
    assert err.startswith(f"facemtl: error: cannot open the database postgresql://nobody:***@127.0.0.1:{port}/x: "
                          "connection failed")
    assert len(err.splitlines()) == 1 and "secret" not in err and "Traceback" not in err


def test_db_upgrade_says_when_the_database_went_away_mid_migration(tmp_path, monkeypatch, capsys):
    """A database that stops answering during a migration is one sentence (rolled back, run it
    again); any other error of a migration is facemtl's fault and keeps its traceback."""
    from alembic import command

    from facemtl.cli import main
    from facemtl.store import upgrade

    def gone(*_a, **_k):
        raise sa.exc.OperationalError("ALTER TABLE faces ...", {}, Exception("server closed the connection"))

    db = tmp_path / "x.db"
    monkeypatch.setattr(command, "upgrade", gone)
    assert main(["db", "upgrade", "--db", str(db)]) == 2
    assert capsys.readouterr().err == (f"facemtl: error: the database sqlite:///{db} stopped answering while it was "
                                       "migrated (everything rolled back; run 'facemtl db upgrade' again): server "
                                       "closed the connection\n")

    def bug(*_a, **_k):
        raise sa.exc.ProgrammingError("SELEC 1", {}, Exception("syntax error"))

    monkeypatch.setattr(command, "upgrade", bug)
    with pytest.raises(sa.exc.ProgrammingError):
        upgrade(f"sqlite:///{db}")


# -- 9: a read-only SQLite file is served, and never written -------------------------------------------------------


def test_a_read_only_sqlite_file_is_served(tmp_path, predictor):
    import hashlib

    from fastapi.testclient import TestClient

    from facemtl.server import create_app

    db = tmp_path / "ro.db"
    sink = DbSink(str(db), kind="analyze", model_info=INFO)
    for r in photos(INFO, 5):
        sink.write(r)
    sink.close()
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    store = Store(f"sqlite:///file:{db}?mode=ro&uri=true")
    assert store.read_only
    with TestClient(create_app(store, predictor, retention_days=0), raise_server_exceptions=False) as client:
        assert client.get("/v1/version").json()["database"]["access"] == "read-only"
        assert len(client.get("/v1/faces").json()["items"]) == 8
        r = upload(client, "a.jpg")
        assert r.status_code == 200 and r.headers["x-facemtl-stored"] == "no" and len(r.json()["faces"]) == 1
        assert client.get("/v1/stats", params={"since": 0}).status_code == 200
    store.close()
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest
    with pytest.raises(Exception, match="read-only"):
        Store(f"sqlite:///file:{db}?mode=ro&uri=true").writer("analyze", "x")


# -- 10: since and until in seconds are taken exactly -------------------------------------------------------------


def test_since_and_until_in_seconds_are_exact(client_store):
    client, _ = client_store
    faces = all_pages(client, "/v1/faces")
    t = faces[0]["time"]  # a wall-clock time with more digits than microseconds hold
    at_t = [f["id"] for f in faces if f["time"] == t]
    for params in ({"since": repr(t)}, {"until": repr(t), "since": repr(t)}):
        got = [f["id"] for f in client.get("/v1/faces", params=params).json()["items"] if f["time"] == t]
        assert got == at_t, params
    assert client.get("/v1/faces", params={"since": repr(math.nextafter(t, math.inf))}).json()["items"] == []
    iso = client.get("/v1/faces", params={"since": "2020-01-01T00:00:00Z"}).json()["items"]
    assert len(iso) == len(faces) == 28
    for bad in ("nan", "1e999", "yesterday"):
        r = client.get("/v1/faces", params={"since": bad})
        assert r.status_code == 400 and r.json()["detail"].startswith("since must be"), r.text


# -- 11-13: export and purge on the command line, the page's routes --------------------------------------------------


def test_csv_export_neutralises_formulas(tmp_path, capsys):
    import csv
    import json

    from facemtl.cli import main

    db = tmp_path / "r.db"
    items = list(photos(INFO, 3))
    for r, name in zip(items, ("=HYPERLINK(1)", "+1.jpg", "@a.jpg")):
        r.file = name
    sink = DbSink(str(db), source="-cam", kind="analyze", model_info=INFO)
    for r in items:
        sink.write(r)
    sink.close()
    assert main(["db", "export", "faces", "--format", "csv", "--db", str(db)]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert sorted(r["file"] for r in rows) == ["'+1.jpg", "'+1.jpg", "'=HYPERLINK(1)",
                                              "'=HYPERLINK(1)", "'@a.jpg", "'@a.jpg"]
    assert {r["source"] for r in rows} == {"'-cam"} and all(float(r["x1"]) >= 0 for r in rows)
    assert main(["db", "export", "faces", "--db", str(db)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert {x["file"] for x in lines} == {"=HYPERLINK(1)", "+1.jpg", "@a.jpg"}  # JSON keeps the text


def test_export_and_purge_of_a_missing_file_create_nothing(tmp_path, capsys, monkeypatch):
    from facemtl.cli import main

    db = tmp_path / "nonexist.db"
    for argv in (["db", "export", "faces", "--db", str(db)], ["db", "purge", "--older-than", "1", "--db", str(db)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"the database file {db} does not exist" in err and "upgrade" not in err
        assert not db.exists()
    Store(str(db)).close()
    assert main(["db", "purge", "--older-than", "nan", "--db", str(db)]) == 2
    assert "--older-than must be a number of days" in capsys.readouterr().err
    monkeypatch.setenv("FACEMTL_RETENTION_DAYS", "abc")
    assert main(["db", "purge", "--db", str(db)]) == 2
    assert "FACEMTL_RETENTION_DAYS must be a number of days, not 'abc'" in capsys.readouterr().err
    assert main(["serve", "--no-model", "--db", str(db), "--retention-days", "nan"]) == 2
    assert "--retention-days must be a number of days" in capsys.readouterr().err


def test_the_page_answers_head_and_nothing_loads_from_a_cdn(tmp_path):
    from fastapi.testclient import TestClient

    from facemtl.server import create_app

    with Store(str(tmp_path / "r.db")) as store, TestClient(create_app(store)) as client:
        assert client.head("/").status_code == 200 and client.get("/").status_code == 200
        assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
        assert client.get("/openapi.json").json()["info"]["title"] == "facemtl"
        for path in ("/", "/static/app.js", "/static/style.css"):
            assert "cdn" not in client.get(path).text.lower()


def test_a_database_server_that_does_not_answer_exits_1_a_wrong_database_2(tmp_path, capsys):
    """README: 1 for an output that failed (a server down or still starting: a service manager's
    restart outlasts it), 2 for a mistake in the command (a file that is no database)."""
    pytest.importorskip("psycopg")
    from facemtl.cli import main
    from facemtl.store.engine import cannot_open

    assert main(["analyze", str(PHOTO), "--db", "postgresql://postgres@127.0.0.1:1/fm", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "cannot open the database" in err and "Connection refused" in err and "Traceback" not in err
    (tmp_path / "notes.db").write_text("not a database")
    assert main(["analyze", str(PHOTO), "--db", str(tmp_path / "notes.db"), "--no-progress"]) == 2
    assert "file is not a database" in capsys.readouterr().err
    wrong = cannot_open("postgresql+psycopg://u@h/db", Exception('password authentication failed for user "u"'))
    assert wrong.exit_status == 2


def test_the_api_follows_new_faces_by_id(client_store):
    client, store = client_store
    first = client.get("/v1/faces", params={"after": 0, "limit": 3}).json()
    ids = [f["id"] for f in first["items"]]
    assert ids == sorted(ids) and len(ids) == 3 and first["next"] is None
    more = client.get("/v1/faces", params={"after": ids[-1], "limit": 500}).json()["items"]
    assert [f["id"] for f in more][0] > ids[-1] and len(ids) + len(more) == store.counts()["faces"]
    bad = client.get("/v1/faces", params={"after": 1, "cursor": "1.0_1"})
    assert bad.status_code == 400 and "after and cursor cannot be combined" in bad.json()["detail"]
    past = client.get("/v1/faces", params={"after": 10**9})  # ids past the newest: purged, or another database
    assert past.status_code == 409 and "start again from after=0" in past.json()["detail"]


def test_api_details_an_integrator_tripped_on(client_store):
    """A misspelt upload parameter stored faces under the default source; HEAD on /v1/health was
    405 (load balancers' checks); milliseconds were read as seconds far in the future; a track's
    confidence had 16 digits where stream --json writes 4."""
    client, store = client_store
    r = client.post(
        "/v1/analyze", params={"sorce": "cam"}, files={"file": ("a.jpg", PHOTO.read_bytes(), "image/jpeg")})
    assert r.status_code == 400 and "unknown query parameter 'sorce'" in r.json()["detail"]
    assert client.head("/v1/health").status_code == 200
    ms = client.get("/v1/faces", params={"since": "1795788167732"})
    assert ms.status_code == 400 and "looks like milliseconds" in ms.json()["detail"]
    for t in client.get("/v1/tracks", params={"closed": "true"}).json()["items"]:
        assert t["confidence"] is None or t["confidence"] == round(t["confidence"], 4)
    blank = client.post("/v1/analyze", files={"file": ("b.png", _blank_png(), "image/png")})
    assert blank.status_code == 200 and blank.headers["X-Facemtl-Stored"] == "none"


def _blank_png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 200, 200)).save(buf, "PNG")
    return buf.getvalue()


def test_a_stop_while_the_database_restarts_waits_for_it(tmp_path, capsys, monkeypatch):
    """An operations test: a stream stopped during a database restart dropped what it had kept for
    the database at once (218 of 718 faces), and exited 143 as for a clean stop. Closing now waits
    a while for the database; the stream exits 1 when results were lost (test_stream)."""
    import threading

    import facemtl.store.engine as engine_module

    url = f"sqlite:///{tmp_path / 'r.db'}"
    sink = DbSink(url, source="cam", kind="stream", model_info=INFO, batch_faces=10 ** 6, max_wait=1e9)
    for r in stream(INFO, 20, source="cam"):
        (sink.write_track if isinstance(r, TrackResult) else sink.write)(r)
    # SQLite refusing (here: its folder gone) is said at once: only a database server is waited for
    sink_engine = sink.writer.engine
    sink.writer.engine = sa.create_engine(f"sqlite:///{tmp_path / 'no-such-folder' / 'x.db'}")
    t0 = time.monotonic()
    with pytest.raises(sa.exc.OperationalError):
        sink._close_waiting(5.0)
    assert time.monotonic() - t0 < 1 and "waiting up to" not in capsys.readouterr().err
    sink.writer.engine = sink_engine
    # a server restarting, as PostgreSQL's would be told (SQLSTATE 57P01)
    monkeypatch.setattr(engine_module, "server_gone", lambda url, exc: isinstance(exc, sa.exc.OperationalError))
    good = sink.writer.engine
    sink.writer.engine = sa.create_engine(f"sqlite:///{tmp_path / 'no-such-folder' / 'x.db'}")  # restarting
    threading.Timer(1.5, lambda: setattr(sink.writer, "engine", good)).start()
    sink.close(wait=8)
    assert "waiting up to 8 s for it to take the last" in capsys.readouterr().err
    with Store(url) as store:
        assert store.counts()["faces"] == 40 and all(s["state"] == "stopped" for s in store.sources())
    again = DbSink(url, source="cam2", kind="stream", model_info=INFO, batch_faces=10 ** 6, max_wait=1e9)
    for r in stream(INFO, 5, source="cam2"):
        (again.write_track if isinstance(r, TrackResult) else again.write)(r)
    again.writer.engine = sa.create_engine(f"sqlite:///{tmp_path / 'no-such-folder' / 'x.db'}")  # gone for good
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="did not take the last 10 faces"):
        again.close(wait=1.0)
    assert 0.9 < time.monotonic() - t0 < 5


def test_a_backlog_slice_that_fails_again_keeps_each_face_once(tmp_path, monkeypatch):
    """Found while making the writer thread-safe: a slice of a backlog that met the database
    still away put the rest of the backlog back twice, so each retry of an outage longer than
    CATCH_UP_FACES doubled the backlog (2, 4, ... 16, 24, 40, 72 ... 65,544 faces for 40)."""
    import itertools

    import facemtl.sinks.db as db_module

    url = f"sqlite:///{tmp_path / 'r.db'}"
    sink = DbSink(url, source="cam", kind="stream", model_info=INFO, batch_faces=8, max_wait=0.0)
    results = [r for r in stream(INFO, 30, source="cam", people=2, track_len=10 ** 6) if not isinstance(r, TrackResult)]
    good = sink.writer.engine
    sink.writer.engine = sa.create_engine(f"sqlite:///{tmp_path / 'no-such-folder' / 'x.db'}")  # away
    clock = itertools.count(0.0, 100.0)  # each try past the last one's back-off
    monkeypatch.setattr(db_module.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(db_module, "CATCH_UP_FACES", 12)
    for r in results[:20]:  # sliced flushes, each failing
        sink.write(r)
    assert sink.writer.pending.faces == 40 and sink.writer.unstored_faces == 40
    sink.writer.engine = good
    for r in results[20:]:
        sink.write(r)
    sink.close()
    with Store(url) as store:
        assert store.counts()["faces"] == 60


def test_a_locked_database_never_holds_up_a_streams_writes(tmp_path):
    """A user test: while another program held a SQLite file's lock, `stream --db` stopped analysing
    for 30 s (its batches were written on the stream's own thread, and SQLite waits for a lock);
    a frozen PostgreSQL held it up 45 s, and SIGTERM with it. A stream's sink writes on a thread of
    its own: results are taken at once, and stored, each once, when the lock goes."""
    import sqlite3

    db = tmp_path / "r.db"
    url = f"sqlite:///{db}"
    sink = DbSink(url, source="cam", kind="stream", model_info=INFO, batch_faces=4, max_wait=0.0, background=True)
    results = [r for r in stream(INFO, 40, source="cam", people=2) if not isinstance(r, TrackResult)]
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another program holds the file
    t0 = time.perf_counter()
    for r in results:
        sink.write(r)
        time.sleep(0.02)  # a camera's frames, one after another
    held_up = time.perf_counter() - t0 - 0.02 * len(results)
    assert held_up < 0.5  # (written on the stream's thread: 30 s, SQLite's busy timeout)
    other.execute("COMMIT")
    other.close()
    sink.close()
    with Store(url) as store:
        assert store.counts()["faces"] == 2 * len(results)


def test_closing_a_streams_sink_gives_up_on_a_database_that_never_answers(tmp_path):
    """A database that takes a connection and then says nothing (a frozen server, a network that
    drops every packet) is waited for at most close's ``wait``; then it says what was not stored."""
    import threading

    sink = DbSink(f"sqlite:///{tmp_path / 'r.db'}", source="cam", kind="stream", model_info=INFO, batch_faces=10 ** 6,
                  max_wait=1e9, heartbeat=1e9, background=True)
    released = threading.Event()

    class Frozen:
        def begin(self):
            released.wait(30)
            raise sa.exc.OperationalError("", {}, Exception("gone"))

    sink.writer.engine = Frozen()
    for r in [r for r in stream(INFO, 5, source="cam", people=2) if not isinstance(r, TrackResult)]:
        sink.write(r)
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"did not take the last 10 faces: it did not answer within 0.5 s"):
        sink.close(wait=0.5)
    assert time.perf_counter() - t0 < 2.0
    released.set()


def test_db_commands_on_a_damaged_file_say_so_in_one_sentence(tmp_path, capsys):
    """A user test: db export, purge and upgrade of a SQLite file damaged in its middle printed
    a traceback (serve answered 503 with the database's own sentence)."""
    from fakes import store_photos

    from facemtl.cli import main

    db = tmp_path / "r.db"
    store_photos(f"sqlite:///{db}", INFO, 300)
    data = bytearray(db.read_bytes())
    assert len(data) > 120_000
    data[len(data) // 2 : len(data) // 2 + 40_000] = b"\xa5" * 40_000
    db.write_bytes(bytes(data))
    for args in (["db", "export", "faces"], ["db", "purge", "--older-than", "0"]):
        status = main([*args, "--db", str(db)])
        err = capsys.readouterr().err
        assert status in (1, 2) and "Traceback" not in err and err.count("\n") == 1, err
        assert "malformed" in err or "not a database" in err


def test_a_results_file_in_a_folder_no_one_may_write_is_read_as_it_is(tmp_path, monkeypatch):
    """A user test: a read-only copy of a results file, in a read-only folder, could not be read at
    all ("attempt to write a readonly database", with mode=ro too): SQLite makes the -shm file its
    WAL readers need beside the file. It is opened immutable now, and nothing is made beside it;
    a writer is told why it may not write there. (The folder's refusal is simulated: the suite
    runs as root, whom no folder refuses; checked by hand as nobody.)"""
    from fakes import store_photos

    from facemtl.store import engine
    from facemtl.store.engine import StoreError

    db = tmp_path / "ro" / "r.db"
    db.parent.mkdir()
    store_photos(f"sqlite:///{db}", INFO, 5)
    before = sorted(p.name for p in db.parent.iterdir())
    assert before == ["r.db"]  # (closed cleanly: no -wal left)
    monkeypatch.setattr(engine, "folder_writable", lambda path: False)
    with Store(str(db), create=False) as store:  # a file someone may still write: never immutable (a review:
        assert "immutable" not in str(store.engine.url)  # a reader so opened missed a writer's later rows)
    db.chmod(0o444)  # no one may write it: read as it is
    for url in (str(db), f"sqlite:///file:{db}?mode=ro&uri=true"):
        assert engine.read_only(url)
        with Store(url, create=False) as store:
            assert "immutable=1" in str(store.engine.url)
            assert store.counts()["faces"] == len(all_faces := list(store.records("faces", Query())))
            assert all_faces
    assert sorted(p.name for p in db.parent.iterdir()) == before  # no -wal, no -shm made
    db.chmod(0o644)
    with Store(str(db)) as store, pytest.raises(StoreError, match=r"is read-only \(its folder .* cannot be written"):
        store.writer("stream", "cam")


def test_a_streams_writing_thread_outlives_its_own_failures_and_keeps_the_backlog_capped(tmp_path, monkeypatch,
                                                                                        capsys):
    """A review of the writing thread: an exception it did not expect ended it without a word
    (nothing more stored, sources left running, close() passed, exit 0); the back-off's 2 ** n
    overflowed after 1,024 failures in a row (some 8.5 hours away); and while it hung in a flush
    (a frozen server) the backlog's cap was never applied (1,797 faces kept past a cap of 60)."""
    import threading

    import facemtl.sinks.db as db_module

    url = f"sqlite:///{tmp_path / 'r.db'}"
    results = [r for r in stream(INFO, 40, source="cam", people=2) if not isinstance(r, TrackResult)]
    sink = DbSink(url, source="cam", kind="stream", model_info=INFO, batch_faces=4, max_wait=0.0, background=True)
    due, failed = sink.writer.due, []

    def due_once_failing(*args):
        if threading.current_thread().name == "facemtl-db-writer" and not failed:
            failed.append(1)
            raise ValueError("a bug")
        return due(*args)

    monkeypatch.setattr(sink.writer, "due", due_once_failing)
    sink._failures = 2000  # (the back-off after it: 2 ** 1999 overflowed)
    sink._retry_at = 0.0
    monkeypatch.setattr(db_module.time, "monotonic", lambda: 1e12)  # no back-off wait between tries
    for r in results:
        sink.write(r)
        time.sleep(0.01)  # a camera's frames, one after another
    sink.close()
    said = capsys.readouterr().err
    assert failed and "writing thread failed (ValueError: a bug); results are kept and retried" in said
    with Store(url) as store:
        assert store.counts()["faces"] == 80 and [s["state"] for s in store.sources()] == ["stopped"]
    monkeypatch.undo()

    released = threading.Event()

    class Frozen:
        def begin(self):
            released.wait(30)
            raise sa.exc.OperationalError("", {}, Exception("gone"))

    sink = DbSink(f"sqlite:///{tmp_path / 'f.db'}", source="cam", kind="stream", model_info=INFO, batch_faces=4,
                  max_wait=0.0, max_backlog=60, background=True)
    sink.writer.engine = Frozen()
    for r in [r for r in stream(INFO, 300, source="cam", people=2) if not isinstance(r, TrackResult)]:
        sink.write(r)
    assert sink.writer.pending.faces <= 62 and sink.writer.lost >= 600 - 62 - sink.writer.in_flight
    assert "the oldest kept faces are dropped from now on" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="it did not answer within 0.5 s"):
        sink.close(wait=0.5)
    released.set()


def test_reads_waiting_on_a_frozen_database_are_bounded(monkeypatch):
    """A review: every read of a frozen database (a live view polls each second) left one more
    thread waiting on it for as long as it stayed frozen. Past the bound a read is refused at
    once, with no thread of its own; when the database answers, the slots come back."""
    import threading

    from facemtl.server import service as svc

    def waiting() -> int:  # (by name: other tests' threads may end meanwhile)
        return sum(t.name == "facemtl-db-read" for t in threading.enumerate())

    monkeypatch.setattr(svc, "_waiting", threading.BoundedSemaphore(3))
    gate = threading.Event()
    before = waiting()
    for _ in range(3):
        with pytest.raises(svc.NoAnswer):
            svc.within(0.01, gate.wait)
    assert waiting() == before + 3
    t0 = time.monotonic()
    with pytest.raises(svc.NoAnswer):
        svc.within(5.0, gate.wait)  # refused at once: it does not wait its 5 s
    assert time.monotonic() - t0 < 1.0 and waiting() == before + 3
    gate.set()
    deadline = time.monotonic() + 5
    while waiting() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert svc.within(1.0, lambda: 42) == 42
    with pytest.raises(ZeroDivisionError):
        svc.within(1.0, lambda: 1 / 0)
    assert svc.within(1.0, lambda: 7) == 7  # a failed read gave its slot back too


def _service_on_a_locked_file(locked, written: list):
    """An upload service whose writer's flush and close wait (up to 10 s) while the database
    file is locked, until ``locked`` is set; ``written`` gets the file of each upload it takes."""
    from facemtl.server.service import Service

    class Writer:
        dropped = 0
        pending = type("Pending", (), {"faces": 0, "images": []})()

        def add(self, result, thumbs):
            written.append(result.file)

        def flush(self):
            locked.wait(10)  # (the file is locked until the event)

        def close(self):
            locked.wait(10)

    class Locked(_NoStore):
        def writer(self, *a, **k):
            return Writer()

    service = Service(Locked(), None)
    service.predictor = type("P", (), {"info": None})()
    return service


def test_an_upload_waits_a_bounded_time_for_a_locked_database_and_the_stop_too(monkeypatch, caplog):
    """A user test: with a SQLite file another program held locked, an upload waited the busy
    timeout (30 s), and a client's own timeout gave up on an upload stored all the same; the
    server's stop then took 91 s. An upload is answered "kept" after UPLOAD_WAIT (the write goes
    on, and stores it), and the stop gives up after CLOSE_WAIT, saying what was not stored."""
    import threading
    import time

    from facemtl.inference.results import FaceResult, ImageResult
    from facemtl.server import service as service_module

    monkeypatch.setattr(service_module, "UPLOAD_WAIT", 0.2)
    monkeypatch.setattr(service_module, "CLOSE_WAIT", 0.2)
    locked, written = threading.Event(), []
    service = _service_on_a_locked_file(locked, written)

    def one(name: str) -> str:
        r = ImageResult(file=name)
        r.faces = [FaceResult([0, 0, 10, 10], 0.99, None, {})]
        return service._store(r, None, r.faces, None)

    t0 = time.monotonic()
    assert one("a.jpg") == "kept" and one("b.jpg") == "kept"  # (the second waits its turn, as long at most)
    assert time.monotonic() - t0 < 2
    locked.set()  # the lock let go: the write that waited stores them
    deadline = time.monotonic() + 5
    while sorted(written) != ["a.jpg", "b.jpg"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sorted(written) == ["a.jpg", "b.jpg"]
    assert one("c.jpg") == "yes"
    locked.clear()
    one("d.jpg")
    t0 = time.monotonic()
    with caplog.at_level("WARNING", logger="facemtl.server"):
        service.close()
    assert time.monotonic() - t0 < 2 and one("e.jpg") == "no"
    assert any("did not answer within 0.2 s of the stop: " in m for m in caplog.messages), caplog.messages
    locked.set()


def test_uploads_waiting_on_a_locked_database_leave_the_reads_and_the_stop_their_turn(monkeypatch):
    """A review: each upload waiting on a locked database held one of the 64 slots of the reads'
    waits; 70 uploads took them all, and reads, /v1/health and the stop's last write failed at
    once (the stop lost every upload kept). Uploads have slots of their own, and the stop none."""
    import threading
    import time

    from facemtl.inference.results import FaceResult, ImageResult
    from facemtl.server import service as service_module
    from facemtl.server.service import MAX_WAITING_UPLOADS, within

    monkeypatch.setattr(service_module, "UPLOAD_WAIT", 0.05)
    locked, written = threading.Event(), []
    service = _service_on_a_locked_file(locked, written)
    for i in range(MAX_WAITING_UPLOADS + 62):
        r = ImageResult(file=f"u{i}.jpg")
        r.faces = [FaceResult([0, 0, 10, 10], 0.99, None, {})]
        assert service._store(r, None, r.faces, None) == "kept"
    assert within(1.0, lambda: "read") == "read"  # a read still gets its turn
    threading.Timer(0.5, locked.set).start()  # the lock let go half a second into the stop
    t0 = time.monotonic()
    service.close()
    assert time.monotonic() - t0 < 5 and len(set(written)) == MAX_WAITING_UPLOADS + 62  # every upload stored
