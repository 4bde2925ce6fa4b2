"""facemtl analyze when the machine gives out (a user test on a small box): memory that runs
out, a detector library that does not load, a disk that fills, a CPU quota, and what each
keeps of the work done."""

import errno
import json
from pathlib import Path

import numpy as np
import pytest

from facemtl.cli import main
from facemtl.images import describe_error
from facemtl.system import cpu_quota

pytest.importorskip("dlib")


@pytest.fixture()
def crops(utkface_root, tmp_path):
    """70 aligned UTKFace crops: two network batches of 64 and 6."""
    folder = tmp_path / "crops"
    folder.mkdir()
    for k, p in enumerate(sorted((Path(utkface_root) / "UTKFace").glob("*.jpg"))[:70]):
        (folder / f"c{k:03d}.jpg").write_bytes(p.read_bytes())
    return folder


def test_memory_that_runs_out_in_the_network_keeps_the_batches_written(crops, monkeypatch, capsys):
    from facemtl.inference.predictor import Predictor

    calls, predict = [], Predictor.predict

    def once_then_out_of_memory(self, *args, **kw):  # as NumPy says it under `prlimit --as`
        calls.append(1)
        if len(calls) > 1:
            raise MemoryError("Unable to allocate 2.30 MiB for an array with shape (6, 3, 224, 224)")
        return predict(self, *args, **kw)

    monkeypatch.setattr(Predictor, "predict", once_then_out_of_memory)
    assert main(["analyze", str(crops), "--aligned", "--json", "--no-progress"]) == 1
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines()]  # was: a traceback, and 0 lines
    assert len(records) == 64 and all(r["status"] == "ok" for r in records)
    assert err.splitlines() == ["facemtl: error: out of memory (Unable to allocate 2.30 MiB for an array with shape "
                                "(6, 3, 224, 224)): 64 of 70 images answered and written before it stopped, the rest "
                                "not read (fewer --workers and --threads need less)"]


def test_a_detector_that_cannot_load_stops_the_run_instead_of_blaming_every_photo(crops, monkeypatch, capsys):
    from facemtl.inference.pipeline import Pipeline

    def no_library(self, result, rgb, aligned):
        raise ImportError("libGL.so.1: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(Pipeline, "_find", no_library)
    assert main(["analyze", str(crops), "--json", "--workers", "1", "--no-progress"]) == 1  # the machine's refusal
    out, err = capsys.readouterr()
    assert out == ""  # (was: 70 records, each "face detection failed", and "none of the inputs could be read")
    said = err.splitlines()
    assert len(said) == 1 and said[0].startswith("facemtl: error: the face detector 'mtcnn' could not run: libGL.so.1: cannot open "
                              "shared object file") and "nothing was searched" in said[0]


def test_a_full_disk_leaves_whole_records_and_names_the_output(tmp_path, monkeypatch):
    import os

    from facemtl.inference.results import ImageResult
    from facemtl.sinks import CsvSink, JsonLinesSink
    from facemtl.sinks import text as text_sinks
    from facemtl.tasks import build_task

    real_write = os.write

    def disk_fills_after(limit):
        written = [0]

        def write(fd, data):
            room = limit - written[0]
            if room <= 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            n = real_write(fd, bytes(data[:room]))
            written[0] += n
            return n
        return write

    result = ImageResult(file="a.jpg", width=10, height=10, status="no_face")
    line = json.dumps(result.to_dict()) + "\n"
    path = tmp_path / "out.jsonl"
    with open(path, "w") as f:
        monkeypatch.setattr(text_sinks.os, "write", disk_fills_after(len(line) + 7))  # room for 1 record and a bit
        sink = JsonLinesSink(f)
        sink.write(result)
        with pytest.raises(OSError) as e:
            sink.write(result)
        assert e.value.errno == errno.ENOSPC
        f.close()  # nothing of the refused record is written at close either
    assert path.read_text() == line  # (was: the first record and the second's first 7 bytes)
    tasks = [build_task({"name": "gender", "type": "nominal", "classes": ["f", "m"]})]
    with open(tmp_path / "out.csv", "w", newline="") as f:
        monkeypatch.setattr(text_sinks.os, "write", disk_fills_after(10**6))
        sink = CsvSink(tasks, f)
        header = (tmp_path / "out.csv").read_text()
        monkeypatch.setattr(text_sinks.os, "write", disk_fills_after(5))
        with pytest.raises(OSError):
            sink.write(result)
    assert (tmp_path / "out.csv").read_text() == header and header.count("\n") == 1


def test_a_refused_output_is_named_with_what_was_written(crops, monkeypatch, capsys):
    from facemtl.sinks import JsonLinesSink

    calls, write = [], JsonLinesSink.write

    def fills(self, result):
        calls.append(1)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        write(self, result)

    monkeypatch.setattr(JsonLinesSink, "write", fills)
    assert main(["analyze", str(crops), "--aligned", "--json", "--no-progress"]) == 1
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 3
    assert err.splitlines() == ["facemtl: 3 of 70 images answered and written before it stopped, the rest not read",
                                "facemtl: error: facemtl analyze could not go on: no space left on device: "
                                "standard output"]


def test_reasons_for_unreadable_files_are_plain_sentences(tmp_path):
    assert describe_error(PermissionError(13, "Permission denied", "/x/a.jpg")) == \
        "permission denied: this user may not read /x/a.jpg"
    assert describe_error(MemoryError()).startswith("not enough memory to decode or search this image")
    # a link in a folder that leads nowhere read "no such file" (a user test)
    link = tmp_path / "x.jpg"
    link.symlink_to(tmp_path / "gone.jpg")
    assert describe_error(FileNotFoundError(2, "No such file or directory", str(link))) == \
        f"a symbolic link that leads nowhere (to {tmp_path / 'gone.jpg'})"
    assert describe_error(FileNotFoundError(2, "No such file or directory", str(tmp_path / "y.jpg"))) == "no such file"


def test_the_table_escapes_a_newline_in_a_file_name():
    """A user test: a file name with a newline split its record over two lines of the table."""
    import io

    from facemtl.inference.results import ImageResult
    from facemtl.sinks import TableSink

    out = io.StringIO()
    TableSink(out).write(ImageResult(file="a\nb.jpg", width=10, height=10, status="no_face"))
    assert out.getvalue() == "a\\nb.jpg: no face found\n"


@pytest.mark.parametrize("v2", [True, False])
def test_the_cpu_quota_of_a_control_group_is_read(tmp_path, v2):
    root = tmp_path / "cgroup"
    if v2:
        (root / "kubepods" / "pod1").mkdir(parents=True)
        (root / "kubepods" / "cpu.max").write_text("max 100000\n")
        (root / "kubepods" / "pod1" / "cpu.max").write_text("150000 100000\n")
        (tmp_path / "self").write_text("0::/kubepods/pod1\n")
    else:
        (root / "cpu,cpuacct" / "docker" / "abc").mkdir(parents=True)
        (root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us").write_text("100000\n")
        (root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_period_us").write_text("100000\n")
        (root / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("-1\n")
        (root / "cpu,cpuacct" / "cpu.cfs_period_us").write_text("100000\n")
        (tmp_path / "self").write_text("4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n")
    assert cpu_quota(str(tmp_path / "self"), str(root)) == (1.5 if v2 else 1.0)
    # a container sees its own group at the mount's root, while /proc/self/cgroup names the host's path
    (tmp_path / "self").write_text("0::/elsewhere/pod9\n" if v2 else "2:cpu,cpuacct:/elsewhere/pod9\n")
    (root / "cpu.max").write_text("50000 100000\n") if v2 else None
    assert cpu_quota(str(tmp_path / "self"), str(root)) == (0.5 if v2 else None)
    assert cpu_quota(str(tmp_path / "missing"), str(root)) is None


def test_a_full_disk_while_the_database_is_made_ready_is_the_machines_refusal(tmp_path, monkeypatch):
    import sqlite3

    import sqlalchemy as sa
    from alembic import command

    from facemtl.store.engine import StoreError
    from facemtl.store.migrate import upgrade

    def full(*args, **kw):
        raise sa.exc.OperationalError("CREATE TABLE faces ...", {}, sqlite3.OperationalError("database or disk is full"))

    monkeypatch.setattr(command, "upgrade", full)
    with pytest.raises(StoreError) as e:
        upgrade(f"sqlite:///{tmp_path / 'a.db'}")
    # (was: "stopped answering while it was migrated ... run 'facemtl db upgrade' again", exit status 2)
    assert e.value.exit_status == 1 and str(e.value).startswith("the machine refused a write to the database")
    assert str(e.value).endswith("database or disk is full")


def test_skip_stored_goes_on_after_a_stopped_run_without_storing_faces_twice(crops, tmp_path, capsys):
    import sqlalchemy as sa

    pytest.importorskip("sqlalchemy")
    db = tmp_path / "r.db"
    first = sorted(crops.iterdir())[:30]
    assert main(["analyze", *map(str, first), "--aligned", "--json", "--db", str(db), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["analyze", str(crops), "--aligned", "--json", "--db", str(db), "--skip-stored", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "--skip-stored: 30 of 70 files were analysed by an earlier run (faces stored, or none found); analysing the other 40" in err
    assert sorted(json.loads(line)["file"] for line in out.splitlines()) == sorted(map(str, sorted(crops.iterdir())[30:]))
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        files = conn.execute(sa.text("SELECT file FROM faces")).scalars().all()
    engine.dispose()
    assert len(files) == 70 == len(set(files))  # each face once (was: the first 30 twice)
    # everything stored already: nothing to do is no error
    assert main(["analyze", str(crops), "--aligned", "--db", str(db), "--skip-stored", "--no-progress"]) == 0
    assert "70 of 70 files were analysed" in capsys.readouterr().err
    assert main(["analyze", str(crops), "--aligned", "--skip-stored", "--no-progress"]) == 2
    assert "--skip-stored leaves out the files whose faces a results database holds: add --db URL" in \
        capsys.readouterr().err


def test_skip_stored_adds_to_the_output_files_of_the_stopped_run(crops, tmp_path, capsys):
    """A user test: going on after a stopped run as its last line says (the same command with
    --skip-stored) replaced the --output files, and the first run's results were only in the
    database. They are added to now: every file once in each, one CSV header; a CSV of other
    columns is not continued (that output stops, the others go on)."""
    import csv

    db, jl, cs = tmp_path / "r.db", tmp_path / "r.jsonl", tmp_path / "r.csv"
    first = sorted(crops.iterdir())[:30]
    broken, missing = crops / "zz_broken.jpg", str(tmp_path / "missing.jpg")
    broken.write_bytes(first[0].read_bytes()[:300])
    outs = ["--output", f"jsonl:{jl}", "--output", f"csv:{cs}", "--db", str(db), "--no-progress", "--aligned"]
    assert main(["analyze", *map(str, first), str(broken), missing, *outs]) == 0
    with cs.open("a") as f:
        f.write("c999.jpg,1,2")  # (a row cut off by a kill: ended before the next run's first row)
    for rc in (0, 1):  # (the second: nothing left but the unreadable file and the missing path: none readable)
        assert main(["analyze", str(crops), missing, *outs, "--skip-stored"]) == rc
    files = [json.loads(line)["file"] for line in jl.read_text().splitlines()]
    assert sorted(files) == sorted([*map(str, crops.iterdir()), missing])  # 70 crops, the broken and missing once
    rows = list(csv.DictReader(cs.open(newline="")))
    assert [r["file"] for r in rows if r["file"] != "c999.jpg"] == files and len(rows) == 73
    assert cs.read_bytes().count(b"c999.jpg,1,2\r\n") == 1  # (the cut row ended with the file's own line end)
    capsys.readouterr()
    cs.write_bytes(b"file,something,else\r\nx.jpg,1,2")
    jl.write_text("")
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "new.jpg").write_bytes(first[0].read_bytes())
    assert main(["analyze", str(tmp_path / "more"), *outs, "--skip-stored"]) == 1
    assert "holds rows under other columns than this run's" in capsys.readouterr().err
    # refused before it was opened: not a byte added (a review: a line end was)
    assert cs.read_bytes() == b"file,something,else\r\nx.jpg,1,2" and len(jl.read_text().splitlines()) == 1


def test_a_stop_before_the_first_result_leaves_earlier_output_files_as_they_were(crops, tmp_path, monkeypatch,
                                                                                  capsys):
    """A user test: SIGTERM before the first image was answered emptied the --output files of an
    earlier run ("0 of 250 images answered"); a run that ends with no result still writes them."""
    import os
    import signal

    from facemtl.inference.analyzer import FaceAnalyzer

    jl, cs = tmp_path / "keep.jsonl", tmp_path / "keep.csv"
    jl.write_text('{"file": "earlier.jpg"}\n')
    cs.write_text("file\r\nearlier.jpg\r\n")

    def stopped(self, files, **kw):
        os.kill(os.getpid(), signal.SIGTERM)  # (stop_on_signals takes it: the loop reads no file)
        return iter(())

    monkeypatch.setattr(FaceAnalyzer, "analyze_files", stopped)
    outs = ["--output", f"jsonl:{jl}", "--output", f"csv:{cs}", "--no-progress", "--aligned"]
    # (a missing path too: its record opened the files before the stop; a review)
    assert main(["analyze", str(crops), str(tmp_path / "missing.jpg"), *outs]) == 143
    assert "stopped by SIGTERM: 0 of 70 images answered" in capsys.readouterr().err
    assert jl.read_text() == '{"file": "earlier.jpg"}\n' and cs.read_bytes() == b"file\r\nearlier.jpg\r\n"
    monkeypatch.setattr(FaceAnalyzer, "analyze_files", lambda self, files, **kw: iter(()))
    assert main(["analyze", str(crops), *outs]) == 1  # (ended, having read nothing: the files are this run's)
    assert jl.read_text() == "" and cs.read_text() == ""


def test_an_output_file_takes_names_that_are_not_utf8(crops, tmp_path):
    """A user test: a file name with an undecodable byte stopped --output csv:FILE (strict UTF-8)
    and every later file's row was lost; it is written as --csv writes it, \\udcff."""
    import csv
    import os

    odd = tmp_path / "odd"
    odd.mkdir()
    crop = next(crops.iterdir()).read_bytes()
    for name in (b"a.jpg", b"b\xff.jpg", b"c.jpg"):
        (odd / os.fsdecode(name)).write_bytes(crop)
    cs, jl = tmp_path / "o.csv", tmp_path / "o.jsonl"
    assert main(["analyze", str(odd), "--aligned", "--no-progress", "--output", f"csv:{cs}", "--output",
                 f"jsonl:{jl}"]) == 0
    names = [os.path.basename(r["file"]) for r in csv.DictReader(cs.open(newline="", encoding="utf-8"))]
    assert names == ["a.jpg", "b\\udcff.jpg", "c.jpg"]
    assert len(jl.read_text().splitlines()) == 3


def test_a_stop_signal_drops_the_images_queued_and_answers_every_one_begun(utkface_root, tmp_path, monkeypatch,
                                                                           capsys):
    """A user test: a SIGTERM 10 s into 250 photos went on for 82 more images and 13 s (past
    docker stop's 10 s grace): the 64 images queued for the workers were all read first. Now
    those no worker has begun are dropped; each one begun is answered and written to every
    output, and --skip-stored goes on from there. Here the workers are held on the queued
    images until the stop, and an image begun after it waits until the pipeline has seen the
    stop (at most 0.5 s): it may begin about one more per worker, never the queue."""
    import os
    import signal
    import threading

    import sqlalchemy as sa

    from facemtl.inference.pipeline import Pipeline
    from facemtl.inference.predictor import Predictor

    photos = tmp_path / "crops"
    photos.mkdir()
    for k, p in enumerate(sorted((Path(utkface_root) / "UTKFace").glob("*.jpg"))[:150]):
        (photos / f"c{k:03d}.jpg").write_bytes(p.read_bytes())
    workers, db, jsonl = 2, tmp_path / "r.db", tmp_path / "more.jsonl"
    begun: list[str] = []
    late: list[str] = []  # begun after the signal
    at_signal: list[int] = []
    signalled, seen = threading.Event(), threading.Event()  # the signal sent; the pipeline has seen it
    prepare, predict, run = Pipeline.prepare, Predictor.predict, Pipeline.run

    def held_prepare(self, result, image, aligned):
        if signalled.is_set():
            late.append(result.file)
            seen.wait(0.5)
        begun.append(result.file)
        if len(begun) > 64:  # the first network batch is read; the rest wait for the stop
            signalled.wait(60)
        return prepare(self, result, image, aligned)

    def first_answers_then_sigterm(self, *args, **kw):
        answers = predict(self, *args, **kw)
        if not at_signal:  # after the first batch's answers: a stop, as `docker stop` sends it
            at_signal.append(len(begun))
            os.kill(os.getpid(), signal.SIGTERM)
            signalled.set()
        return answers

    def watched_run(self, jobs, aligned=False, stop=None):
        def watched():
            if stop():
                seen.set()
                return True
            return False

        return run(self, jobs, aligned, watched) if stop is not None else run(self, jobs, aligned)

    monkeypatch.setattr(Pipeline, "prepare", held_prepare)
    monkeypatch.setattr(Predictor, "predict", first_answers_then_sigterm)
    monkeypatch.setattr(Pipeline, "run", watched_run)
    assert main(["analyze", str(photos), "--aligned", "--json", "--output", f"jsonl:{jsonl}", "--db", str(db),
                 "--workers", str(workers), "--no-progress"]) == 143
    out, err = capsys.readouterr()
    monkeypatch.undo()
    answered = [json.loads(line)["file"] for line in out.splitlines()]
    n = len(answered)
    assert f"stopped by SIGTERM: {n} of 150 images answered and written, the rest not read (to go on later " \
           "without storing faces twice: the same command with --skip-stored, which adds to its --output files)" in err
    # the queue dropped: only what had begun at the signal (the first batch, and one image on each
    # worker), and at most about one more per worker (was: every image of the look-ahead, 127 here)
    assert 64 < at_signal[0] <= 64 + workers and len(late) <= workers + 2 and n < 127
    # every image begun is answered (nothing computed is lost), none dropped is: the first n, in order
    assert answered == sorted(begun) == [str(photos / f"c{k:03d}.jpg") for k in range(n)]
    assert [json.loads(line)["file"] for line in jsonl.read_text().splitlines()] == answered
    assert all(json.loads(line)["status"] == "ok" for line in out.splitlines())
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        assert sorted(conn.execute(sa.text("SELECT file FROM faces")).scalars().all()) == answered
    engine.dispose()
    # the way on that was said: the rest, each face stored once
    assert main(["analyze", str(photos), "--aligned", "--json", "--db", str(db), "--skip-stored",
                 "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert f"--skip-stored: {n} of 150 files were analysed by an earlier run" in err
    assert len(out.splitlines()) == 150 - n
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        files = conn.execute(sa.text("SELECT file FROM faces")).scalars().all()
    engine.dispose()
    assert len(files) == 150 == len(set(files))


def test_a_full_disk_never_cuts_what_a_file_opened_for_appending_held(tmp_path, monkeypatch):
    """A review: `analyze --json >> results.jsonl` (O_APPEND: offset 0 before the first write) with
    the disk filling in the first record cut the file back to 0 bytes, every earlier result gone."""
    import os

    from facemtl.inference.results import ImageResult
    from facemtl.sinks import JsonLinesSink
    from facemtl.sinks import text as text_sinks

    path = tmp_path / "results.jsonl"
    path.write_text('{"old": 1}\n{"old": 2}\n')
    result = ImageResult(file="a.jpg", width=10, height=10, status="no_face")
    real_write, calls = os.write, []

    def part_then_full(fd, data):
        calls.append(1)
        if len(calls) == 1:
            return real_write(fd, bytes(data[:7]))
        raise OSError(errno.ENOSPC, "No space left on device")

    for first in (True, False):  # nothing of it written, or a part
        calls.clear()
        if not first:
            monkeypatch.setattr(text_sinks.os, "write", part_then_full)
        else:
            monkeypatch.setattr(text_sinks.os, "write", lambda fd, data: (_ for _ in ()).throw(
                OSError(errno.ENOSPC, "No space left on device")))
        with open(path, "a") as f:
            with pytest.raises(OSError):
                JsonLinesSink(f).write(result)
        assert path.read_text() == '{"old": 1}\n{"old": 2}\n'


def test_skip_stored_finds_files_named_oddly(crops, tmp_path, capsys):
    """A review: a folder with a file name that is not UTF-8 made --skip-stored refuse to run, and
    a path typed with `..` was stored as typed but looked for normalised (stored twice)."""
    import os

    import sqlalchemy as sa

    odd = tmp_path / "odd"
    odd.mkdir()
    crop = next(crops.iterdir()).read_bytes()
    (odd / os.fsdecode(b"caf\xe9.jpg")).write_bytes(crop)
    (odd / "plain.jpg").write_bytes(crop)
    db = tmp_path / "r.db"
    typed = str(tmp_path / "odd" / ".." / "odd")
    assert main(["analyze", typed, "--aligned", "--json", "--db", str(db), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["analyze", typed, "--aligned", "--json", "--db", str(db), "--skip-stored", "--no-progress"]) == 0
    assert "2 of 2 files were analysed by an earlier run (faces stored, or none found); analysing the other 0" in capsys.readouterr().err
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT file FROM faces")).scalars().all()
    engine.dispose()
    assert sorted(stored) == sorted([str(odd / "caf\ufffd.jpg"), str(odd / "plain.jpg")])


def test_records_in_an_encoding_with_a_byte_order_mark_carry_it_once(tmp_path):
    """A review: PYTHONIOENCODING=utf-8-sig (CSV for Excel) put a byte-order mark before every record."""
    from facemtl.inference.results import ImageResult
    from facemtl.sinks import JsonLinesSink

    path = tmp_path / "out.jsonl"
    with open(path, "w", encoding="utf-8-sig") as f:
        sink = JsonLinesSink(f)
        for _ in range(3):
            sink.write(ImageResult(file="a.jpg", width=10, height=10, status="no_face"))
    data = path.read_bytes()
    assert data.count(b"\xef\xbb\xbf") == 1 and data.startswith(b"\xef\xbb\xbf")
    assert len(path.read_text(encoding="utf-8-sig").splitlines()) == 3


def test_skip_stored_leaves_out_the_photos_without_a_face_too(tmp_path, capsys):
    """The Left list: photos without a face stored nothing, so ``--skip-stored`` read them again
    (a folder of empty frames, a detector pass each). Schema 0004 records them; an unreadable
    file is still tried again; retention deletes the records, then their session."""
    import shutil

    import sqlalchemy as sa
    from PIL import Image

    from facemtl.store import Store

    pytest.importorskip("sqlalchemy")
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg", photos / "a.jpg")
    Image.new("RGB", (320, 240), (120, 130, 140)).save(photos / "empty.png")
    (photos / "broken.jpg").write_bytes(b"not a photo")
    db = tmp_path / "r.db"
    assert main(["analyze", str(photos), "--db", str(db), "--json", "--no-progress"]) == 0
    statuses = {Path(r["file"]).name: r["status"] for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert statuses == {"a.jpg": "ok", "empty.png": "no_face", "broken.jpg": "error"}
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT file FROM no_face_files")).scalars().all() == [str(photos / "empty.png")]
    # (exit 1: of what was left, nothing could be read)
    assert main(["analyze", str(photos), "--db", str(db), "--json", "--skip-stored", "--no-progress"]) == 1
    out, err = capsys.readouterr()
    assert "2 of 3 files were analysed by an earlier run (faces stored, or none found); analysing the other 1" in err
    assert [Path(json.loads(line)["file"]).name for line in out.splitlines()] == ["broken.jpg"]
    with Store(f"sqlite:///{db}") as store:
        gone = store.purge(0)
    assert gone["no_face_files"] == 1 and gone["sessions"] == 2 and gone["faces"] == 1
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM sessions")).scalar_one() == 0
    engine.dispose()


def test_a_large_photos_thumbnail_is_its_face(tmp_path):
    """A review: a photo of 4096 px or more is decoded reduced, and `analyze --db --thumbnails`
    cropped its faces' boxes (in the photo's own pixels) from the reduced image: the stored
    thumbnail showed the rocket beside the astronaut. The same face, large or small, now gives
    the same thumbnail."""
    import io

    import sqlalchemy as sa
    from PIL import Image

    pytest.importorskip("sqlalchemy")
    photo = Image.open(Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg").convert("RGB")
    photo.save(tmp_path / "small.png")
    photo.resize((4608, 4608 * photo.height // photo.width), Image.BICUBIC).save(tmp_path / "big.jpg", quality=95)
    db = tmp_path / "t.db"
    assert main(["analyze", str(tmp_path / "small.png"), str(tmp_path / "big.jpg"), "--db", str(db),
                 "--thumbnails", "--no-progress", "--json"]) == 0
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT f.file, t.jpeg FROM faces f JOIN thumbnails t ON t.face_id = f.id")).all()
    engine.dispose()
    thumbs = {Path(f).name: np.asarray(Image.open(io.BytesIO(j)).convert("L").resize((64, 64)), float) for f, j in rows}
    assert set(thumbs) == {"small.png", "big.jpg"}
    a, b = (x - x.mean() for x in (thumbs["small.png"], thumbs["big.jpg"]))
    assert float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum())) > 0.9  # the same face


def test_a_stop_cuts_the_jobs_at_the_first_not_begun_and_none_begins_after_it():
    """A review: cancelling the queued futures from the last assumed the workers begin jobs in
    order; a worker pre-empted between taking job 0 and beginning it, while another began job 1,
    left job 0 dropped and jobs 1-3 answered: a gap. The cut is at the first job not begun, every
    later one dropped (begun or not), and a job checking in after the cut does not run."""
    from collections import deque
    from concurrent.futures import Future

    from facemtl.inference.pipeline import _Cutoff

    ran: list[int] = []
    for begun, kept in (({1, 2}, []), ({0, 1}, [0, 1]), ({0, 1, 2, 3}, [0, 1, 2, 3])):
        cutoff = _Cutoff()
        cutoff.begun = set(begun)
        window = deque((seq, Future()) for seq in range(4))
        cutoff.cut(window)
        assert [seq for seq, _ in window] == kept
        cutoff.cut(window)  # (again, every job left begun: the cut stays; a review found it lifted)
        assert [seq for seq, _ in window] == kept
        for seq in range(4):
            if seq not in begun:  # (a worker checking in late)
                assert cutoff.run(seq, lambda s: ran.append(s) or s, seq) is None
    assert ran == []
    assert _Cutoff().run(5, lambda s: s * 2, 5) == 10  # (no cut: every job runs)
