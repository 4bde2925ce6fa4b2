"""The results database: round trips on SQLite and PostgreSQL, filters, migrations, retention,
export, several writers at once and a writer killed mid-stream."""

from __future__ import annotations

import contextlib
import io
import json
import math
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("alembic")

import sqlalchemy as sa  # noqa: E402
from fakes import TASK_SPECS, model_info, photos, stream  # noqa: E402

from facemtl.inference.results import TrackResult  # noqa: E402
from facemtl.sinks.db import DbSink  # noqa: E402
from facemtl.store import AnswerFilter, Query, SchemaError, Store, upgrade  # noqa: E402
from facemtl.store.engine import create_db_engine, database_url  # noqa: E402
from facemtl.store.models import Base  # noqa: E402

HERE = Path(__file__).resolve().parent
INFO = model_info()


def feed(sink: DbSink, items) -> None:
    """Each ImageResult of ``items`` to ``sink.write``, each TrackResult to ``sink.write_track``."""
    for it in items:
        (sink.write_track if isinstance(it, TrackResult) else sink.write)(it)


def write(url: str, items, **kw) -> int:
    """Feed ``items`` (ImageResults and TrackResults) to a DbSink; returns its session id."""
    sink = DbSink(url, model_info=INFO, **kw)
    feed(sink, items)
    sink.close()
    return sink.session_id


def open_track_faces(store: Store, source: str) -> int:
    """Faces of ``source``'s tracks still open."""
    return sum(t["faces"] for t in store.records("tracks", Query(source=source)) if not t["closed"])


def all_faces(store: Store, **kw) -> list[dict]:
    return list(store.records("faces", Query(**kw)))


def consistency(url: str) -> dict[str, int]:
    """Counts of everything that would be inconsistent (all must be 0), plus the totals."""
    eng = create_db_engine(url)
    q = {
        "faces_without_track": "SELECT count(*) FROM faces f LEFT JOIN tracks t ON t.id = f.track_id "
                               "WHERE f.track_id IS NOT NULL AND t.id IS NULL",
        "tracks_miscounted": "SELECT count(*) FROM tracks t WHERE t.faces <> (SELECT count(*) FROM faces f "
                             "WHERE f.track_id = t.id)",
        "faces_missing_answers": "SELECT count(*) FROM faces f WHERE (SELECT count(*) FROM answers a "
                                 "WHERE a.face_id = f.id AND NOT a.raw) <> 3",
        "tracked_faces_missing_raw": "SELECT count(*) FROM faces f WHERE f.track_id IS NOT NULL AND (SELECT count(*) "
                                     "FROM answers a WHERE a.face_id = f.id AND a.raw) <> 3",
        "answers_without_face": "SELECT count(*) FROM answers a LEFT JOIN faces f ON f.id = a.face_id WHERE f.id IS NULL",
        "closed_tracks_missing_answers": "SELECT count(*) FROM tracks t WHERE t.closed AND (SELECT count(*) FROM "
                                         "track_answers a WHERE a.track_id = t.id) <> 3",
        "faces": "SELECT count(*) FROM faces",
        "tracks": "SELECT count(*) FROM tracks",
    }
    with eng.connect() as c:
        out = {k: int(c.exec_driver_sql(v).scalar()) for k, v in q.items()}
    eng.dispose()
    return out


def assert_consistent(url: str) -> dict[str, int]:
    c = consistency(url)
    bad = {k: v for k, v in c.items() if k not in ("faces", "tracks") and v}
    assert not bad, bad
    return c


# -- round trips -------------------------------------------------------------------------------------


def test_photos_and_stream_round_trip(db_url):
    shots = list(photos(INFO, 12))
    session_a = write(db_url, shots, kind="analyze")
    items = list(stream(INFO, 30, people=2, track_len=8, source="cam1"))
    session_s = write(db_url, items, kind="stream", source="cam1", thumbnails=False)
    with Store(db_url) as store:
        faces = all_faces(store)
        frames = [r for r in items if not isinstance(r, TrackResult)]
        assert len(faces) == sum(len(r.faces) for r in shots) + sum(len(r.faces) for r in frames)
        # photos: every face's fields are exactly what `analyze --json` prints for it
        stored = {(f["file"], tuple(f["box"])): f for f in faces if f["session"] == session_a}
        for r in shots:
            for face in r.faces:
                rec = stored[(r.file, tuple(face.box))]
                want = face.to_dict()
                assert {k: rec[k] for k in want} == want
                assert "raw" not in rec and rec["track"] is None and rec["model_name"] == "fake"
        # stream: smoothed answers, the frame's own under raw, the track, the frame and its times
        by_frame = {(f["frame"], f["track"]): f for f in faces if f["session"] == session_s}
        for r in frames:
            for face in r.faces:
                rec = by_frame[(r.frame, face.track)]
                assert {k: rec[k] for k in face.to_dict()} == face.to_dict()
                assert rec["time"] == pytest.approx(r.wall_time) and rec["media_time"] == pytest.approx(r.time)
                assert rec["source"] == "cam1"
        # tracks: ended ones carry the TrackResult's aggregate; the open ones their latest face's answers
        tracks = list(store.records("tracks", Query(session=session_s)))
        ends = {t.track: t for t in items if isinstance(t, TrackResult)}
        assert len(tracks) == len({f.track for r in frames for f in r.faces})
        for t in tracks:
            if t["track"] in ends:
                end = ends[t["track"]]
                assert t["closed"] and t["frames"] == end.frames and t["first_frame"] == end.first_frame
                assert {k: t[k] for k in end.to_dict() if k in ("gender", "age", "race_probabilities")} == \
                    {k: v for k, v in end.to_dict().items() if k in ("gender", "age", "race_probabilities")}
            else:
                assert not t["closed"]
                last = max((f for f in faces if f["track"] == t["track"] and f["session"] == session_s),
                           key=lambda f: f["frame"])
                assert t["gender"] == last["gender"] and t["age"] == last["age"]
                assert t["faces"] == t["frames"] == sum(1 for f in faces if f["track_id"] == t["id"])
        assert {s["name"]: s["state"] for s in store.sources()}["cam1"] == "stopped"
        assert {t.name for t in store.tasks()} == {"age", "gender", "race"}
    assert_consistent(db_url)


def test_counts_by_group_over_time(db_url):
    items = list(stream(INFO, 40, people=3, t0=1.7e9, fps=10))
    write(db_url, items, kind="stream", source="cam1")
    frames = [r for r in items if not isinstance(r, TrackResult)]
    tasks = {t.name: t for t in INFO.build_tasks()}
    with Store(db_url) as store:
        s = store.stats(1.7e9, 1.7e9 + 4, 1.0)
        for name, task in tasks.items():
            want: dict[tuple[float, str], int] = {}
            for r in frames:
                for f in r.faces:
                    a = f.answers[name]
                    v = task.class_names().index(a.value) if isinstance(a.value, str) else a.value
                    key = (float(int(r.wall_time)), str(task.subgroups([v])[0]))
                    want[key] = want.get(key, 0) + 1
            got = {(b["start"], g): n for b in s["tasks"][name]["buckets"] for g, n in b["counts"].items()}
            assert got == want
        assert s["tasks"]["age"]["groups"][0] == "0-19"  # numeric order
        ended = [t for t in items if isinstance(t, TrackResult)]
        st = store.stats(1.7e9, 1.7e9 + 10, 10.0, of="tracks", tasks=["gender"])
        assert list(st["tasks"]) == ["gender"]
        assert sum(st["tasks"]["gender"]["buckets"][0]["counts"].values()) == len(ended)
        with pytest.raises(ValueError, match="buckets"):
            store.stats(0, 1e9, 1.0)


def test_filters_paging_and_thumbnails(db_url):
    items = list(stream(INFO, 60, people=3, image=True, source="cam2"))
    write(db_url, items, kind="stream", source="cam2", thumbnails=True)
    with Store(db_url) as store:
        everything = all_faces(store)
        assert len({f["id"] for f in everything}) == len(everything) == 180
        times = [(f["time"], f["id"]) for f in everything]
        assert times == sorted(times, reverse=True)

        def brute(pred):
            return {f["id"] for f in everything if pred(f)}

        cases = [
            ([AnswerFilter("gender", ["female"])], lambda f: f["gender"] == "female"),
            ([AnswerFilter("race", ["asian", "others"])], lambda f: f["race"] in ("asian", "others")),
            ([AnswerFilter("age", lo=60)], lambda f: f["age"] >= 60),
            ([AnswerFilter("age", lo=20, hi=30), AnswerFilter("gender", ["male"])],
             lambda f: 20 <= f["age"] <= 30 and f["gender"] == "male"),
            ([AnswerFilter("age", lo=200)], lambda f: False),
            ([AnswerFilter("race", ["indian"]), AnswerFilter("age", hi=15), AnswerFilter("gender", ["female"])],
             lambda f: f["race"] == "indian" and f["age"] <= 15 and f["gender"] == "female"),
        ]
        for filters, pred in cases:
            got = [f["id"] for f in store.records("faces", Query(answers=filters))]
            assert len(got) == len(set(got)) and set(got) == brute(pred), filters
        t_mid = everything[90]["time"]
        assert {f["id"] for f in all_faces(store, since=t_mid)} == brute(lambda f: f["time"] >= t_mid)
        assert {f["id"] for f in all_faces(store, until=t_mid)} == brute(lambda f: f["time"] <= t_mid)
        assert all_faces(store, source="no such source") == []
        # paging by cursor visits every face once
        seen, cursor = [], None
        while True:
            page, cursor = store.faces(Query(limit=7, cursor=cursor))
            seen += [f["id"] for f in page]
            if cursor is None:
                break
        assert seen == [f["id"] for f in everything]
        # thumbnails were switched on: a JPEG per face
        assert all(f["thumbnail"] for f in everything)
        assert store.thumbnail(everything[0]["id"])[:2] == b"\xff\xd8"
        snap = store.snapshot(next(s["id"] for s in store.sources() if s["name"] == "cam2"))
        assert snap is not None and snap[1][:2] == b"\xff\xd8"
        with pytest.raises(ValueError):
            Query(cursor="1; DROP TABLE faces").position()


def test_sqlite_plans_rare_and_common_filters_alike(tmp_path, monkeypatch):
    """On SQLite a rare filter drives the query and a common one is checked newest first: both
    must give the same faces as the other plan."""
    from facemtl.store import queries

    url = f"sqlite:///{tmp_path / 'r.db'}"
    write(url, list(stream(INFO, 150, people=2)), kind="stream", source="c")
    filters = [[AnswerFilter("age", lo=90)], [AnswerFilter("gender", ["male"])],
               [AnswerFilter("gender", ["male"]), AnswerFilter("race", ["black"])]]
    with Store(url) as store:
        for f in filters:
            default = [r["id"] for r in store.records("faces", Query(answers=f))]
            monkeypatch.setattr(queries, "COUNT_CAP", 10**9)  # always drive from the rarest filter
            driven = [r["id"] for r in store.records("faces", Query(answers=f))]
            monkeypatch.setattr(queries, "COUNT_CAP", 0)  # never
            scanned = [r["id"] for r in store.records("faces", Query(answers=f))]
            monkeypatch.undo()
            assert default == driven == scanned and default


# -- migrations ------------------------------------------------------------------------------------


def test_migrations_build_the_models_schema(db_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    assert upgrade(db_url) == "0005"
    eng = create_db_engine(db_url)
    with eng.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c, opts={"compare_type": True}), Base.metadata)
    eng.dispose()
    assert diff == []


def test_upgrade_from_the_first_schema_keeps_and_fills_data(db_url):
    assert upgrade(db_url, "0001") == "0001"
    eng = create_db_engine(db_url)
    with eng.begin() as c:  # rows as facemtl's first schema stored them
        session = c.execute(sa.text("INSERT INTO sessions (kind, started, model_name, model_version, tasks) VALUES "
                                    "('analyze', 1.7e9, 'old', 'v0', :tasks) RETURNING id"),
                            {"tasks": json.dumps(TASK_SPECS)}).scalar()
        source = c.execute(sa.text("INSERT INTO sources (name, kind, created) VALUES ('old-folder', 'analyze', 1.7e9) "
                                   "RETURNING id")).scalar()
        face = c.execute(sa.text("INSERT INTO faces (session_id, source_id, time, file, x1, y1, x2, y2, score, "
                                 "model_name, model_version) VALUES (:s, :src, 1700000123.5, 'a.jpg', 1, 2, 3, 4, 0.9, "
                                 "'old', 'v0') RETURNING id"), {"s": session, "src": source}).scalar()
        for task, text, num, grp in (("age", None, 33.0, "20-39"), ("gender", "female", 1.0, "female"),
                                     ("race", "asian", 2.0, "asian")):
            c.execute(sa.text("INSERT INTO answers (face_id, task, raw, value_text, value_num, grp) VALUES "
                              "(:f, :t, :raw, :x, :n, :g)"), {"f": face, "t": task, "raw": False, "x": text, "n": num,
                                                               "g": grp})
    with pytest.raises(SchemaError, match="facemtl db upgrade"):
        Store(db_url)
    from facemtl.cli import main

    assert main(["db", "upgrade", "--db", db_url]) == 0
    with eng.connect() as c:
        assert c.exec_driver_sql("SELECT time FROM answers").scalars().all() == [1700000123.5] * 3
        assert c.exec_driver_sql("SELECT state FROM sources").scalar() == "stopped"
    eng.dispose()
    with Store(db_url) as store:
        (face,) = all_faces(store)
        assert (face["file"], face["gender"], face["age"], face["model_name"]) == ("a.jpg", "female", 33.0, "old")
        assert store.stats(1.7e9, 1.7e9 + 3600, 3600.0)["tasks"]["race"]["buckets"][0]["counts"] == {"asian": 1}
        write(db_url, list(photos(INFO, 2)), kind="analyze", store=store)  # and it takes new rows
    assert_consistent(db_url)


def test_store_refuses_a_missing_database_clearly(tmp_path):
    with pytest.raises(SchemaError, match="no facemtl tables"):
        Store(f"sqlite:///{tmp_path / 'x.db'}", create=False)
    with pytest.raises(FileNotFoundError):
        Store(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")
    with pytest.raises(ValueError, match="SQLite or PostgreSQL"):
        database_url("mysql://u@h/db")
    from facemtl.store import StoreError

    with pytest.raises(StoreError, match="cannot open the database"):
        Store("postgresql://nobody:secret@127.0.0.1:1/none")
    try:
        Store("postgresql://nobody:secret@127.0.0.1:1/none")
    except StoreError as exc:
        assert "secret" not in str(exc)  # the password is never printed
    assert database_url("results.db") == "sqlite:///results.db"
    assert database_url("postgresql://u@h/db").startswith("postgresql+psycopg://")
    assert database_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"  # libpq's other spelling (a user test)
    # a folder named as the database: said so (SQLite says only "unable to open database file"; a user test)
    with pytest.raises(StoreError, match=rf"{tmp_path} is a folder; name a database file, e\.g\. "):
        Store(str(tmp_path))


# -- retention and export -------------------------------------------------------------------------------


def test_purge_keeps_tracks_whole(db_url):
    old = list(stream(INFO, 20, t0=time.time() - 10 * 86400, source="cam"))
    new = list(stream(INFO, 20, t0=time.time() - 60, source="cam", seed=1))
    write(db_url, old, kind="stream", source="cam")
    write(db_url, new, kind="stream", source="cam")
    write(db_url, list(photos(INFO, 5)), kind="analyze")
    before = assert_consistent(db_url)
    with Store(db_url) as store:
        gone = store.purge(7)
        after = assert_consistent(db_url)
        assert gone["faces"] == before["faces"] - after["faces"] == sum(len(r.faces) for r in old if
                                                                         not isinstance(r, TrackResult))
        assert gone["tracks"] > 0 and gone["sessions"] == 0  # the old faces' session ended just now
        assert all(f["time"] > time.time() - 7 * 86400 for f in all_faces(store))
        everything = store.purge(0)
        assert everything["faces"] == after["faces"] and everything["sessions"] == 3 and everything["sources"] == 2
    assert consistency(db_url)["faces"] == 0


def _newest_ids(url: str) -> tuple[int, int, int]:
    eng = create_db_engine(url)
    with eng.connect() as c:
        ids = tuple(c.execute(sa.text(f"SELECT coalesce(max(id), 0) FROM {t}")).scalar() for t in
                    ("sessions", "tracks", "faces"))
    eng.dispose()
    return ids


@pytest.mark.parametrize("from_revision", ["head", "0002"])
def test_ids_are_never_given_out_twice_after_a_purge_of_everything(db_url, from_revision):
    """An API client follows faces by id (?after=): on SQLite, once retention had deleted every
    face, session and track, new rows took the old ids again and the client missed them. Also
    for a database written under schema 0002 and upgraded (sqlite_sequence filled from its rows)."""
    if from_revision != "head":  # rows as schema 0002 stored them
        upgrade(db_url, from_revision)
        eng = create_db_engine(db_url)
        with eng.begin() as c:
            ins = lambda sql, **kw: c.execute(sa.text(sql + " RETURNING id"), kw).scalar()  # noqa: E731
            for _ in range(3):
                session = ins("INSERT INTO sessions (kind, started, ended, tasks) VALUES ('stream', 1.7e9, 1.7e9, "
                              ":tasks)", tasks=json.dumps(TASK_SPECS))
                source = ins("INSERT INTO sources (name, kind, created, state) VALUES (:n, 'stream', 1.7e9, "
                             "'stopped')", n=f"cam{session}")
                track = ins("INSERT INTO tracks (session_id, source_id, track, frames, faces, started, ended, closed) "
                            "VALUES (:s, :src, 1, 2, 2, 1.7e9, 1.7e9, true)", s=session, src=source)
                for _ in range(2):
                    ins("INSERT INTO faces (session_id, source_id, track_id, time) VALUES (:s, :src, :t, 1.7e9)",
                        s=session, src=source, t=track)
        eng.dispose()
        before = _newest_ids(db_url)
        assert upgrade(db_url) == "0005" and _newest_ids(db_url) == before  # the rows kept their ids
    else:
        write(db_url, list(stream(INFO, 10, t0=time.time() - 10 * 86400, source="cam")), kind="stream", source="cam")
        before = _newest_ids(db_url)
    assert all(before)
    with Store(db_url) as store:
        assert store.purge(0)["sessions"] >= 1
    assert consistency(db_url)["faces"] == 0
    write(db_url, list(stream(INFO, 10, source="cam", seed=1)), kind="stream", source="cam")
    assert all(new > old for new, old in zip(_newest_ids(db_url), before))
    eng = create_db_engine(db_url)
    with eng.connect() as c:
        smallest = c.execute(sa.text("SELECT min(id) FROM faces")).scalar()
    eng.dispose()
    assert smallest > before[2]


def test_export_csv_and_jsonl(db_url, tmp_path, capsys):
    write(db_url, list(stream(INFO, 10, source="cam")), kind="stream", source="cam")
    write(db_url, list(photos(INFO, 5)), kind="analyze")
    with Store(db_url) as store:
        faces = all_faces(store)
        buf = io.StringIO()
        assert store.export("faces", buf, "jsonl") == len(faces)
        assert [json.loads(line) for line in buf.getvalue().splitlines()] == faces
    from facemtl.cli import main

    out = tmp_path / "faces.csv"
    assert main(["db", "export", "faces", "--format", "csv", "--out", str(out), "--db", db_url]) == 0
    import csv

    rows = list(csv.DictReader(out.open()))
    assert len(rows) == len(faces)
    assert {"age", "age_interval", "gender_p_female", "race_p_asian", "raw_gender", "x1"} <= set(rows[0])
    assert rows[0]["gender"] == faces[0]["gender"]
    assert main(["db", "export", "tracks", "--format", "csv", "--db", db_url, "--source", "cam"]) == 0
    printed = capsys.readouterr()
    assert printed.out.splitlines()[0].startswith("id,source,session,track") and '"exported"' in printed.err
    assert {r["closed"] for r in csv.DictReader(io.StringIO(printed.out))} <= {"true", "false"}  # as JSON says it
    assert "no source is named" not in printed.err
    # a misspelt source or session is refused, and an earlier --out file is left as it was (a user test: it was
    # replaced by an empty export, exit 0)
    kept = tmp_path / "kept.csv"
    kept.write_text("earlier\n")
    assert main(["db", "export", "tracks", "--db", db_url, "--source", "cma", "--out", str(kept)]) == 2
    assert "no source is named 'cma'; the sources are: " in (err := capsys.readouterr().err) and "'cam'" in err
    assert main(["db", "export", "faces", "--db", db_url, "--session", "999", "--out", str(kept)]) == 2
    assert "there is no session 999 (never stored, or deleted); the newest is " in capsys.readouterr().err
    assert kept.read_text() == "earlier\n"
    with open("/dev/full", "w") as full, contextlib.redirect_stdout(full):  # a full disk under standard output
        assert main(["db", "export", "faces", "--db", db_url]) == 1
    assert "could not go on: no space left on device: standard output" in capsys.readouterr().err
    # --since in ISO 8601 (UTC unless it says) as in seconds: the same faces
    t = sorted(f["time"] for f in faces)[len(faces) // 2]
    iso = datetime.fromtimestamp(math.floor(t), timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    capsys.readouterr()
    assert main(["db", "export", "faces", "--db", db_url, "--since", iso]) == 0
    by_iso = capsys.readouterr().out
    assert main(["db", "export", "faces", "--db", db_url, "--since", str(math.floor(t))]) == 0
    assert by_iso == capsys.readouterr().out and len(by_iso.splitlines()) >= len(faces) // 2
    if db_url.startswith("sqlite"):  # --out naming the database file itself: refused, the database intact
        db_file = Path(db_url.split(":///", 1)[1])
        size = db_file.stat().st_size
        assert main(["db", "export", "faces", "--db", db_url, "--out", str(db_file)]) == 2
        assert "is the database being exported" in capsys.readouterr().err and db_file.stat().st_size == size
    assert main(["db", "export", "faces", "--db", db_url, "--out", str(tmp_path)]) == 2
    assert f"--out {tmp_path} is a folder" in capsys.readouterr().err
    assert main(["db", "export", "faces", "--db", db_url, "--out", str(tmp_path / "no" / "x.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    # an export that fails after writing some rows (the database gone mid-way) keeps the earlier file
    before = out.read_text()

    def half_then_gone(self, kind, f, fmt, q=None):
        f.write("id,half a row\n")
        raise RuntimeError("the database went away")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Store, "export", half_then_gone)
        assert main(["db", "export", "faces", "--format", "csv", "--out", str(out), "--db", db_url]) == 2
    assert "the database went away" in capsys.readouterr().err
    assert out.read_text() == before and not Path(f"{out}.part").exists()
    with pytest.raises(SystemExit) as stopped:  # argparse's own refusal: usage and one sentence, exit 2
        main(["db", "export", "faces", "--db", db_url, "--since", "yesterday"])
    assert stopped.value.code == 2
    assert "expected a time in ISO 8601 or seconds since the epoch, not 'yesterday'" in capsys.readouterr().err
    assert main(["db", "purge", "--db", db_url]) == 2  # says how old
    assert "--older-than" in capsys.readouterr().err
    assert main(["db", "purge", "--older-than", "0", "--db", db_url]) == 0


# -- several writers, and a writer killed ------------------------------------------------------------


def _writer(url: str, source: str, frames: int, seed: int, batch: int, pause: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HERE / "db_writer.py"), url, source, str(frames), str(seed),
                             str(batch), str(pause)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_three_writer_processes_and_a_reader_lose_nothing(db_url):
    upgrade(db_url)
    frames, people = 80, 2
    procs = [_writer(db_url, f"cam{k}", frames, k, 8) for k in range(3)]
    reads = 0
    with Store(db_url) as store:
        while any(p.poll() is None for p in procs):  # the reader: pages and counts while they write
            page, _ = store.faces(Query(limit=20, answers=[AnswerFilter("gender", ["female"])]))
            assert all(f["gender"] == "female" for f in page)
            store.stats(1.7e9, 1.7e9 + 3000, 60.0)
            store.sources()
            reads += 1
            time.sleep(0.05)
        for p in procs:
            out, err = p.communicate()
            assert p.returncode == 0, err
        per_source = {s: len(all_faces(store, source=s)) for s in ("cam0", "cam1", "cam2")}
        assert per_source == {f"cam{k}": frames * people for k in range(3)}
        assert {s["name"]: s["state"] for s in store.sources()} == {"cam0": "stopped", "cam1": "stopped",
                                                                   "cam2": "stopped"}
    assert reads > 0
    assert assert_consistent(db_url)["faces"] == 3 * frames * people


def test_a_writer_killed_mid_stream_leaves_whole_batches(db_url):
    upgrade(db_url)
    batch, people = 10, 2
    p = _writer(db_url, "killed-cam", 100000, 7, batch, 0.002)
    assert p.stdout.readline().startswith("session")
    eng = create_db_engine(db_url)
    deadline = time.time() + 60
    with eng.connect() as c:
        while c.exec_driver_sql("SELECT count(*) FROM faces").scalar() < 5 * batch and time.time() < deadline:
            time.sleep(0.05)
            c.rollback()
    p.send_signal(signal.SIGKILL)
    p.wait()
    counts = assert_consistent(db_url)
    assert counts["faces"] >= 5 * batch and counts["faces"] % batch == 0  # whole batches only
    with eng.connect() as c:
        frames = c.exec_driver_sql("SELECT frame, count(*) FROM faces GROUP BY frame ORDER BY frame").all()
    eng.dispose()
    assert [f for f, _ in frames] == list(range(len(frames)))  # a prefix of the stream
    assert all(n == people for _, n in frames)  # no frame half written
    with Store(db_url) as store:
        (src,) = store.sources()
        assert src["state"] != "stopped"  # it never said goodbye (a reader calls it silent once its beats are late)


# -- the sink: a database that goes away, and analyze --db ----------------------------------------------------


def test_sink_keeps_results_while_the_database_is_away(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    sink = DbSink(url, source="cam", kind="stream", model_info=INFO, batch_faces=4, max_wait=1e9)
    frames = [r for r in stream(INFO, 30, source="cam") if not isinstance(r, TrackResult)]
    good = sink.writer.engine
    sink.writer.engine = sa.create_engine(f"sqlite:///{tmp_path / 'no-such-folder' / 'x.db'}")  # cannot open
    for r in frames[:10]:
        sink.write(r)
    assert "results are kept and retried" in capsys.readouterr().err
    assert sink.writer.pending.faces == 20
    sink.writer.engine = good
    sink._retry_at = 0.0  # the back-off would wait a second
    for r in frames[10:]:
        sink.write(r)
    sink.close()
    assert "answers again; the " in capsys.readouterr().err  # with the count kept for it
    counts = assert_consistent(url)
    assert counts["faces"] == 60


def test_analyze_db_flag_stores_what_it_prints(tmp_path, capsys):
    pytest.importorskip("dlib")
    from facemtl.cli import main

    photo = HERE.parent / "examples" / "astronaut.jpg"
    db = tmp_path / "results.db"
    assert main(["analyze", str(photo), "--json", "--db", str(db), "--thumbnails"]) == 0
    printed = json.loads(capsys.readouterr().out.splitlines()[0])
    with Store(str(db)) as store:
        (face,) = all_faces(store)
        want = printed["faces"][0]
        assert {k: face[k] for k in want} == want and face["file"] == str(photo) and face["thumbnail"]
        assert store.thumbnail(face["id"])[:2] == b"\xff\xd8"
        (session_source,) = store.sources()
        assert session_source["kind"] == "analyze" and session_source["state"] == "stopped"
    assert main(["analyze", str(photo), "--thumbnails"]) == 2
    assert "--db" in capsys.readouterr().err


def test_analyze_db_stores_a_relative_path_absolute(tmp_path, monkeypatch, capsys):
    """A user test: `analyze photos/ --db` stored `photos/a.jpg`, which says nothing once the
    database is read from another folder or machine; `--json` keeps the path as typed."""
    pytest.importorskip("dlib")
    from facemtl.cli import main

    monkeypatch.chdir(HERE.parent)
    db = tmp_path / "results.db"
    assert main(["analyze", "examples/astronaut.jpg", "--json", "--db", str(db), "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["file"] == "examples/astronaut.jpg"
    with Store(str(db)) as store:
        (face,) = all_faces(store)
        assert face["file"] == str(HERE.parent / "examples" / "astronaut.jpg")


def test_source_state_follows_the_heartbeat(tmp_path):
    url = f"sqlite:///{tmp_path / 'beat.db'}"
    sink = DbSink(url, source="door", kind="stream", model_info=INFO, heartbeat=0.2)
    with Store(url) as store:
        state = lambda: {s["name"]: s["state"] for s in store.sources()}["door"]  # noqa: E731
        assert state() == "running"  # announced before its first frame
        time.sleep(0.8)  # three heartbeats missed
        assert state() == "silent"
        sink.heartbeat()
        assert state() == "running"
        feed(sink, stream(INFO, 5, source="door", fps=1000))
        time.sleep(0.25)
        sink.heartbeat()
        (door,) = [s for s in store.sources() if s["name"] == "door"]
        assert door["state"] == "running" and door["fps"] > 0 and door["session"] == sink.session_id
        time.sleep(0.8)  # its writer killed, say: silent, and its last rate is not its rate now
        (door,) = [s for s in store.sources() if s["name"] == "door"]
        assert door["state"] == "silent" and door["fps"] is None
        sink.close()
        assert state() == "stopped"


def test_export_columns_keep_their_places_when_another_model_writes(tmp_path, capsys):
    """A user test: a second model writing to the database put its tasks' columns first in every
    CSV export, session 1's too, and every later column moved."""
    import csv

    from facemtl.cli import main

    url = f"sqlite:///{tmp_path / 'two.db'}"
    write(url, list(photos(INFO, 3)), kind="analyze")
    other = model_info([{"type": "binary", "name": "glasses", "classes": ["no", "yes"]}], name="other")
    sink = DbSink(url, model_info=other, kind="analyze")
    for r in photos(other, 3):
        sink.write(r)
    sink.close()

    def header(*args):
        capsys.readouterr()
        assert main(["db", "export", "faces", "--format", "csv", "--db", url, *args]) == 0
        return next(csv.reader([capsys.readouterr().out.splitlines()[0]]))

    first = header("--session", "1")
    assert "age" in first and not any(c.startswith("glasses") for c in first)  # one session: its model's columns
    both = header()  # the first model's columns keep their places, the newer model's come after
    assert both.index("glasses") > both.index("race") and [c for c in both if c in first] == first


def test_export_filters_on_answers_as_the_api_does(tmp_path, capsys):
    """A user test: the API filters on any task (glasses=yes, smile_min=0.5), db export could not."""
    from facemtl.cli import main

    url = f"sqlite:///{tmp_path / 'w.db'}"
    write(url, list(photos(INFO, 30)), kind="analyze")
    with Store(url) as store:
        faces = all_faces(store)
    women = [f for f in faces if f["gender"] == "female" and 20 <= f["age"] <= 40]
    assert 0 < len(women) < len(faces)
    capsys.readouterr()
    assert main(["db", "export", "faces", "--db", url, "--where", "gender=female", "--where", "age_min=20",
                 "--where", "age_max=40"]) == 0
    got = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(f["id"] for f in got) == sorted(f["id"] for f in women)
    for bad, words in ((["gender=robot"], "has the classes male, female"), (["hair=red"], "with a stored task"),
                       (["age=30"], "use age_min / age_max"), (["age_min=old"], "takes a number")):
        assert main(["db", "export", "faces", "--db", url, *sum((["--where", b] for b in bad), [])]) == 2
        assert words in capsys.readouterr().err


# -- erasure (db delete) ---------------------------------------------------------------------------------


def test_db_delete_erases_one_track_a_source_or_a_span_and_nothing_else(db_url, capsys):
    """A request to erase someone's data: `db purge` deleted only by age. `db delete` takes a track,
    a face (its whole track), a session, a source or a time span; the store stays consistent."""
    from facemtl.cli import main

    write(db_url, list(photos(INFO, 6)), kind="analyze")
    # one live frame, the first's (a second one, taken after a second of a slow machine's writing,
    # could fall in the deleted track's span: a CI run under load lost it)
    write(db_url, list(stream(INFO, 40, people=2, track_len=8, source="cam1", image=True)), kind="stream",
          source="cam1", thumbnails=True, snapshot_every=3600.0)
    write(db_url, list(stream(INFO, 40, people=2, track_len=8, source="cam2", seed=1, t0=1.8e9)), kind="stream",
          source="cam2")
    before = assert_consistent(db_url)
    with Store(db_url) as store:
        track = store.records("tracks", Query(source="cam1")).__next__()
        in_track = [f["id"] for f in all_faces(store, track=track["id"])]
    assert len(in_track) == track["faces"] > 1
    assert main(["db", "delete", "--db", db_url, "--track", str(track["id"]), "--dry-run"]) == 0
    said = json.loads(capsys.readouterr().out)
    assert said["would_delete"]["tracks"] == 1 and said["would_delete"]["faces"] == len(in_track)
    assert said["would_delete"]["thumbnails"] == len(in_track)  # each face's crop goes with it, and is counted
    assert assert_consistent(db_url) == before  # a dry run deletes nothing
    assert main(["db", "delete", "--db", db_url, "--face", str(in_track[-1])]) == 0  # one face: its whole track
    said = json.loads(capsys.readouterr().out)
    assert said["deleted"]["tracks"] == 1 and said["deleted"]["faces"] == len(in_track)
    after = assert_consistent(db_url)
    assert after["faces"] == before["faces"] - len(in_track) and after["tracks"] == before["tracks"] - 1
    with Store(db_url) as store:
        assert store.snapshot(next(s["id"] for s in store.sources() if s["name"] == "cam1")) is not None
        assert not all_faces(store, track=track["id"])
    # a source: every face and track of it, and its live frame (it shows them); the rest stays
    assert main(["db", "delete", "--db", db_url, "--source", "cam1"]) == 0
    said = json.loads(capsys.readouterr().out)["deleted"]
    assert said["snapshots"] == 1 and said["faces"] > 0
    with Store(db_url) as store:
        assert not all_faces(store, source="cam1") and all_faces(store, source="cam2")
        assert store.snapshot(next(s["id"] for s in store.sources() if s["name"] == "cam1")) is None
        cam2 = len(all_faces(store, source="cam2"))
        # a span: cam2's first 2 s (tracks with a face in it go whole)
        n = store.erase(since=1.8e9, until=1.8e9 + 2)
        assert 0 < n["faces"] < cam2 and n["running"] == 0
    assert_consistent(db_url)
    assert main(["db", "delete", "--db", db_url]) == 2
    assert "say what to delete" in capsys.readouterr().err
    # a span reversed matched nothing and read as done (a user test): refused, as db export and the API refuse it
    assert main(["db", "delete", "--db", db_url, "--source", "cam2", "--since", "2027-01-02", "--until",
                 "2027-01-01"]) == 2
    assert "--since is after --until" in capsys.readouterr().err
    assert main(["db", "delete", "--db", db_url, "--source", "nope"]) == 2
    assert "no source is named 'nope'; the sources are:" in capsys.readouterr().err


def _writer_killed(url: str, source: str) -> None:
    """As if the writer of ``source`` had died without a word (kill -9): its beat stopped a minute ago."""
    from facemtl.store.models import Source

    eng = create_db_engine(url)
    with eng.begin() as conn:
        conn.execute(sa.update(Source).where(Source.name == source).values(last_seen=time.time() - 60))
    eng.dispose()


def test_answer_filters_on_tracks_take_the_open_ones_by_what_they_show(db_url):
    """A user test: ``/v1/tracks?closed=false&gender=female`` (and ``db export tracks --where``) gave
    nothing while open tracks showed genders: a filter read only the answers a track gets when it
    ends. An open one is filtered on what it shows, its latest face's answers."""
    sink = DbSink(db_url, model_info=INFO, kind="stream", source="live")
    feed(sink, stream(INFO, 20, source="live", track_len=8))
    sink.flush()
    try:
        with Store(db_url) as store:
            tracks = list(store.records("tracks", Query(source="live")))
            assert any(not t["closed"] for t in tracks) and any(t["closed"] for t in tracks)
            open_found = 0
            for q in ([AnswerFilter("gender", classes=["female"])], [AnswerFilter("gender", classes=["male"])],
                      [AnswerFilter("age", lo=30, hi=60)], [AnswerFilter("age", lo=30), AnswerFilter("race",
                                                                                                  classes=["white"])]):
                shown = {t["id"] for t in store.records("tracks", Query(source="live", answers=q))}
                want = {t["id"] for t in tracks if all(
                    (t[f.task] in f.classes) if f.classes else (f.lo or -1e9) <= t[f.task] <= (f.hi or 1e9)
                    for f in q)}
                assert shown == want
                open_found += sum(1 for t in tracks if t["id"] in shown and not t["closed"])
            assert open_found >= 2  # (each open track answers one of the two genders)
    finally:
        sink.close()


def test_db_delete_leaves_the_open_tracks_of_a_running_stream_only(db_url, capsys):
    """Its writer would add faces to an open track deleted under it: left, with a warning; its closed
    tracks go. A review: a killed writer's session stays open for good, and the first version left
    its faces for ever ("stop their streams": there was none to stop)."""
    from facemtl.cli import main

    sink = DbSink(db_url, model_info=INFO, kind="stream", source="live")
    feed(sink, stream(INFO, 20, source="live", track_len=8))
    sink.flush()
    try:
        with Store(db_url) as store:
            open_faces = open_track_faces(store, "live")
        assert open_faces > 0
        assert main(["db", "delete", "--db", db_url, "--source", "live", "--dry-run"]) == 0  # a count: no failure
        assert json.loads(capsys.readouterr().out)["left_running"] == open_faces
        assert main(["db", "delete", "--db", db_url, "--source", "live"]) == 1  # not done: a script must see it
        said = capsys.readouterr()
        out = json.loads(said.out)
        assert out["left_running"] == open_faces and out["deleted"]["faces"] > 0
        assert "tracks a running stream still follows" in said.err
        with Store(db_url) as store:
            assert len(all_faces(store, source="live")) == open_faces
        assert_consistent(db_url)
        # the writer dies without a word (kill -9): its beat stops, its session stays open
        _writer_killed(db_url, "live")
        assert main(["db", "delete", "--db", db_url, "--source", "live"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["deleted"]["faces"] == open_faces and out["left_running"] == 0
    finally:
        sink.close()
    assert main(["db", "delete", "--db", db_url, "--track", "999999"]) == 2  # an erasure must not pass for done
    assert "there is no track 999999" in capsys.readouterr().err


def test_db_end_closes_the_session_of_a_writer_gone_for_good(db_url, capsys, caplog):
    """A session killed on a machine that never runs facemtl again stayed open for ever: its
    source read ``silent`` and its tracks open. ``db end`` ends it; a writer that may still run
    is refused, and one that comes back all the same goes on in a new session (a review: it
    wrote into the ended session, which then could never be ended)."""
    from facemtl.cli import main
    from facemtl.store.models import Session
    from facemtl.store.repository import GONE_AFTER

    events = list(stream(INFO, 40, source="live", track_len=8))
    cut = next(i for i, it in enumerate(events) if i >= 24 and not isinstance(it, TrackResult))  # tracks open
    sink = DbSink(db_url, model_info=INFO, kind="stream", source="live")
    feed(sink, events[:cut])
    sink.flush()
    try:
        assert main(["db", "end", "--db", db_url, "--source", "live"]) == 2  # this process, alive
        assert f"session {sink.session_id} is alive: its writer, process " in capsys.readouterr().err
        eng = create_db_engine(db_url)
        with eng.begin() as conn:  # as if it had run on a machine gone since
            conn.execute(sa.update(Session).where(Session.id == sink.session_id).values(host="gone-box"))
        eng.dispose()
        _writer_killed(db_url, "live")
        assert main(["db", "sessions", "--db", db_url, "--open"]) == 0
        [listed] = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        assert (listed["id"], listed["state"], listed["sources"], listed["host"]) == \
            (sink.session_id, "silent", ["live"], "gone-box") and listed["faces"] > 0
        with Store(db_url) as store:
            t = time.time()  # (the session's start is its latest sign of life: the fake faces are older)
            assert store.sessions(now=t + GONE_AFTER)[0]["state"] == "gone"
            assert [s["state"] for s in store.sources()] == ["silent"] and open_track_faces(store, "live") > 0
            with pytest.raises(ValueError, match="may be alive: its writer was last heard of 6[0-9] s ago"):
                store.end_session(source="live", now=t + 60)
            done = store.end_session(source="live", now=t + GONE_AFTER)
            assert done["session"] == sink.session_id and done["tracks_closed"] > 0 and done["sources_stopped"] == 1
            assert [s["state"] for s in store.sources()] == ["stopped"] and open_track_faces(store, "live") == 0
            assert all(t["closed"] and t["gender"] in ("male", "female") for t in store.records("tracks"))
        assert main(["db", "end", "--db", db_url, "--session", str(done["session"])]) == 0  # again: said, no change
        assert json.loads(capsys.readouterr().out)["already_ended"] > 0
        assert main(["db", "sessions", "--db", db_url, "--open"]) == 0 and capsys.readouterr().out == ""
        # the writer comes back: it goes on in a new session, its open tracks as new tracks there; a track
        # that ends with no face since goes to its row in the ended session (a user test: an empty new track)
        ended, rest = sink.session_id, events[cut:]
        before = events[:cut]
        open_then = {f.track for e in before if not isinstance(e, TrackResult) for f in e.faces} - \
            {e.track for e in before if isinstance(e, TrackResult)}
        assert open_then
        feed(sink, [e for e in rest if isinstance(e, TrackResult) and e.track in open_then])
        sink.flush()
        assert sink.session_id != ended and "was ended (facemtl db end) while its writer still ran" in caplog.text
        with Store(db_url) as store:
            tracks = list(store.records("tracks"))
            assert all(t["session"] == ended and t["faces"] > 0 for t in tracks)
            assert sum(t["confidence"] is not None for t in tracks if t["track"] in open_then) == len(open_then)
        feed(sink, [e for e in rest if not (isinstance(e, TrackResult) and e.track in open_then)])
        sink.flush()
        with Store(db_url) as store:
            later = [f for f in all_faces(store, source="live") if f["session"] == sink.session_id]
            assert later and [s["state"] for s in store.sources()] == ["running"]
            assert [(x["id"], x["state"], x["sources"]) for x in store.sessions()] == \
                [(sink.session_id, "running", ["live"]), (ended, "ended", ["live"])]  # (its source taken over)
            assert not any(t["session"] == ended and not t["closed"] for t in store.records("tracks"))
        assert_consistent(db_url)
    finally:
        sink.close()
    for args, said in ((["--session", "999"], "there is no session 999"),
                       (["--source", "nope"], "no source is named 'nope'"),
                       ([], "say which session to end: --session ID or --source NAME")):
        assert main(["db", "end", "--db", db_url, *args]) == 2
        assert said in capsys.readouterr().err


def test_a_purge_leaves_the_tracks_a_running_stream_follows(db_url):
    """A user test: `db purge --older-than 0` (or an hourly retention) during a stream deleted
    the tracks it still followed, and every later face of them was refused (509 of 1641 faces
    lost). Those tracks are left; the rest goes, and the writer goes on storing."""
    sink = DbSink(db_url, model_info=INFO, kind="stream", source="live")
    events = list(stream(INFO, 40, source="live", track_len=8))
    cut = next(i for i, it in enumerate(events) if i >= 24 and not isinstance(it, TrackResult))  # tracks open
    feed(sink, events[:cut])
    sink.flush()
    try:
        with Store(db_url) as store:
            open_faces = open_track_faces(store, "live")
            assert open_faces > 0
            gone = store.purge(0)
            assert gone["faces"] > 0 and len(all_faces(store, source="live")) == open_faces
        feed(sink, events[cut:])  # the stream goes on: its open tracks' faces are stored, none refused
        sink.flush()
        assert not sink.incomplete
        assert_consistent(db_url)
        # a killed writer's open tracks are no one's: they go
        _writer_killed(db_url, "live")
        with Store(db_url) as store:
            store.purge(0)
            assert all_faces(store, source="live") == []
    finally:
        sink.close()


def test_db_delete_of_one_face_takes_the_live_frame_its_track_is_in(db_url, capsys):
    """A review: the live frame's window came from the faces matched, not from the whole tracks
    deleted with them, so --face of a track's first face left a frame showing the person."""
    from facemtl.cli import main

    write(db_url, list(stream(INFO, 20, people=1, track_len=20, source="cam", image=True)), kind="stream",
          source="cam")
    from facemtl.store.models import Snapshot

    with Store(db_url) as store:
        faces = sorted(all_faces(store, source="cam"), key=lambda f: f["time"])
        first, last = faces[0], faces[-1]
        source = next(s["id"] for s in store.sources() if s["name"] == "cam")
    eng = create_db_engine(db_url)
    with eng.begin() as conn:  # the live frame taken at the track's end, after the face deleted by id
        conn.execute(sa.update(Snapshot).where(Snapshot.source_id == source).values(time=last["time"]))
    eng.dispose()
    assert last["time"] > first["time"] + 1.5  # past the second a frame is given either side
    assert main(["db", "delete", "--db", db_url, "--face", str(first["id"])]) == 0
    assert json.loads(capsys.readouterr().out)["deleted"]["snapshots"] == 1
    with Store(db_url) as store:
        assert store.snapshot(source) is None and not all_faces(store, source="cam")
