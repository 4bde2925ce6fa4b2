"""Issue 12, items 1, 4, 5, 9 and the analyze parts of 11: every input gets a record or a
warning naming it, images of any depth read as they look, the CSV keeps every attribute,
an annotation folder that cannot be written is caught up front, large photos are decoded
reduced."""

import csv
import io
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facemtl.cli import main
from facemtl.images import open_image

pytest.importorskip("dlib")
REPO = Path(__file__).resolve().parents[1]
ASTRONAUT = REPO / "examples" / "astronaut.jpg"


@pytest.fixture(scope="module")
def face(utkface_root, tmp_path_factory):
    """A real face pasted with margin into a 600 x 450 photo, as RGB uint8."""
    from facemtl.data.utkface import read_utkface

    t = read_utkface(utkface_root, limit=50)
    i = next(k for k, a in enumerate(t.labels["age"]) if 25 <= a <= 50)
    canvas = Image.new("RGB", (600, 450), (90, 120, 140))
    canvas.paste(Image.open(t.paths[i]).convert("RGB").resize((240, 240)), (180, 100))
    return np.asarray(canvas)


def records(capsys) -> dict[str, dict]:
    return {os.path.basename(r["file"]): r for r in map(json.loads, capsys.readouterr().out.splitlines())}


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


# -- item 1 ----------------------------------------------------------------------------


def test_csv_keeps_every_attribute_when_the_first_file_has_no_face(face, tmp_path, capsys):
    """Item 1 at the command line: the first file in sorted order has no face, the second is
    not an image; before the redesign the header came from the first row and every
    attribute column was dropped."""
    d = tmp_path / "photos"
    d.mkdir()
    Image.new("RGB", (320, 240), (128, 128, 128)).save(d / "0_wall.png")
    (d / "1_notes.jpg").write_text("not an image")
    Image.fromarray(face).save(d / "2_person.jpg", quality=92)
    assert main(["analyze", str(d), "--csv", "--no-progress"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [os.path.basename(r["file"]) for r in rows] == ["0_wall.png", "1_notes.jpg", "2_person.jpg"]
    assert [r["status"] for r in rows] == ["no_face", "error", "ok"]
    person = rows[2]
    assert float(person["age"]) > 0 and person["gender"] in ("male", "female") and person["race"]
    assert {"age_interval", "gender_probability", "race_p_white"} <= set(person)


# -- item 4 ----------------------------------------------------------------------------


def test_a_16_bit_copy_reads_like_the_8_bit_one(face, tmp_path, capsys):
    """Item 4: a 16-bit grayscale PNG was clipped to white; the same face saved 8- and
    16-bit (grayscale and RGB) must give the same record."""
    import cv2

    gray = np.asarray(Image.fromarray(face).convert("L"))
    d = tmp_path / "depths"
    d.mkdir()
    Image.fromarray(gray).save(d / "gray8.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(d / "gray16.png")
    assert Image.open(d / "gray16.png").mode == "I;16"
    Image.fromarray(face).save(d / "rgb8.png")
    cv2.imwrite(str(d / "rgb16.png"), face[:, :, ::-1].astype(np.uint16) * 257)
    assert main(["analyze", str(d), "--json", "--no-progress"]) == 0
    recs = records(capsys)
    for a, b in (("gray8.png", "gray16.png"), ("rgb8.png", "rgb16.png")):
        assert recs[a]["status"] == "ok" and len(recs[a]["faces"]) == 1
        fa, fb = recs[a]["faces"][0], recs[b]["faces"][0]
        assert fa == fb, (a, b)


def test_arrays_of_any_depth_are_scaled_not_clipped(face):
    rgb = face[:60, :80]
    assert np.array_equal(open_image(rgb.astype(np.uint16) * 257), rgb)
    assert np.array_equal(open_image(rgb.astype(np.float32) / 255), rgb)
    assert np.array_equal(open_image(rgb.astype(np.float64)), rgb)  # floats over 1: 0..255
    assert np.array_equal(open_image(rgb.astype(np.int64)), rgb)
    assert np.array_equal(open_image(rgb.astype(np.int32) * 257), rgb)  # ints over 255: 16-bit
    assert np.array_equal(open_image(Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257)), np.repeat(rgb[:, :, :1], 3, 2))
    assert open_image(np.ones((4, 4), bool)).max() == 255
    # resampling overshoot (Lanczos leaves 1.12 near edges) is clipped, not read as 0..255 (black)
    assert np.array_equal(open_image(np.minimum(rgb.astype(np.float32) / 255 * 1.05, 1.12)),
                          np.rint(np.minimum(rgb * 1.05, 255)).astype(np.uint8))
    assert np.array_equal(open_image(rgb.astype(np.uint16)), rgb)  # 8-bit data in a uint16 array
    for bad, why in ((np.full((4, 4, 3), 400.0), "0..255"), (np.full((4, 4, 3), -1), "negative"),
                     (np.full((4, 4, 3), np.nan), "not a number"), (np.full((4, 4, 3), 70000), "65535")):
        with pytest.raises(ValueError, match=why):
            open_image(bad)


# -- item 5 ----------------------------------------------------------------------------


def test_an_annotation_folder_that_cannot_be_written_is_caught_up_front(tmp_path, capsys):
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    assert main(["analyze", str(ASTRONAUT), "--annotate", str(a_file), "--no-progress"]) == 2
    assert "is a file, not a folder" in one_line_error(capsys)
    assert main(["analyze", str(ASTRONAUT), "--annotate", str(a_file / "sub"), "--no-progress"]) == 2
    assert "cannot write into the --annotate folder" in one_line_error(capsys)


def test_a_copy_that_cannot_be_written_is_that_files_status(face, tmp_path, capsys):
    """Item 5: a per-file write failure stopped the whole run with a traceback; now it is that
    file's status, with its faces kept."""
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(face).save(d / "a.jpg", quality=92)
    Image.fromarray(face).save(d / "b.jpg", quality=92)
    ann = tmp_path / "ann"
    (ann / "a.jpg").mkdir(parents=True)  # something in the way of a.jpg's copy
    assert main(["analyze", str(d), "--json", "--annotate", str(ann), "--no-progress"]) == 0
    recs = records(capsys)
    assert recs["a.jpg"]["status"] == "error" and "annotated copy not written" in recs["a.jpg"]["error"]
    assert len(recs["a.jpg"]["faces"]) == 1 and recs["a.jpg"]["faces"][0]["age"] > 0
    assert recs["b.jpg"]["status"] == "ok" and (ann / "b.jpg").is_file()


# -- item 9 ----------------------------------------------------------------------------


def test_every_input_gets_a_record_or_a_warning(face, tmp_path, capsys, monkeypatch):
    """Item 9: symlinked folders were skipped, unreadable subfolders and missing paths left
    no trace in --json."""
    top = tmp_path / "top"
    (top / "sub").mkdir(parents=True)
    (top / "locked").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Image.fromarray(face).save(top / "sub" / "in_sub.jpg", quality=92)
    Image.fromarray(face).save(elsewhere / "via_link.jpg", quality=92)
    Image.fromarray(face).save(top / "locked" / "hidden.jpg", quality=92)
    (top / "linked").symlink_to(elsewhere, target_is_directory=True)
    (top / "sub" / "loop").symlink_to(top, target_is_directory=True)
    real_scandir = os.scandir

    def scandir(path="."):  # the test runs as root, for whom chmod 000 hides nothing
        if os.path.basename(os.fspath(path)) == "locked":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    missing = str(tmp_path / "no-such.jpg")
    assert main(["analyze", str(top), missing, str(tmp_path / "none-*.png"), "--json", "--no-progress"]) == 0
    captured = capsys.readouterr()
    recs = {r["file"]: r for r in map(json.loads, captured.out.splitlines())}
    names = {os.path.basename(f) for f in recs}
    assert {"in_sub.jpg", "via_link.jpg", "no-such.jpg", "none-*.png"} <= names
    assert recs[missing]["status"] == "error" and recs[missing]["error"] == "no such file"
    assert recs[str(tmp_path / "none-*.png")]["error"] == "no file matches this pattern"
    assert len([f for f in recs if f.endswith("via_link.jpg")]) == 1
    err = captured.err
    assert "locked" in err and "Permission denied" in err
    assert "loop" in err and "searched already" in err
    assert "no-such.jpg" in err


# -- item 11 ---------------------------------------------------------------------------


def test_an_empty_file_is_reported_as_empty(tmp_path, capsys):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    assert main(["analyze", str(tmp_path), "--json", "--no-progress"]) == 1
    recs = records(capsys)
    assert recs["empty.jpg"]["error"] == "empty file"
    assert "not an image" in recs["text.jpg"]["error"]


def test_large_photos_are_decoded_reduced_with_boxes_in_their_own_pixels(face, tmp_path, capsys):
    """Item 11: a 12,000 x 12,000 PNG took 2.3 GB. Large JPEGs are decoded at a reduced
    scale (draft mode), other formats shrunk right after decoding; boxes and sizes still
    refer to the photo's own pixels."""
    from facemtl.images import read_image

    big = Image.fromarray(face).resize((6000, 4500), Image.BICUBIC)
    big.save(tmp_path / "big.jpg", quality=90)
    big.save(tmp_path / "big.png", compress_level=1)
    shapes = {}
    for name in ("big.jpg", "big.png"):
        rgb, size = read_image(tmp_path / name, keep_side=2048)
        assert size == (6000, 4500) and 2048 <= max(rgb.shape[:2]) < 6000, name
        shapes[name] = rgb.shape
    assert main(["analyze", str(tmp_path / "big.jpg"), str(tmp_path / "big.png"), "--json", "--no-progress",
                 "--annotate", str(tmp_path / "ann")]) == 0
    recs = records(capsys)
    for name in ("big.jpg", "big.png"):
        r = recs[name]
        assert (r["width"], r["height"]) == (6000, 4500) and len(r["faces"]) == 1, name
        x1, y1, x2, y2 = r["faces"][0]["box"]
        # the face was pasted at (180..420, 100..340) in the 600 x 450 photo: x10 here
        assert 1500 < (x1 + x2) / 2 < 3500 and 800 < (y1 + y2) / 2 < 2600 and x2 - x1 > 1200, name
    h, w = shapes["big.png"][:2]
    assert Image.open(tmp_path / "ann" / "big.png").size == (w, h)  # drawn on the reduced pixels


def test_annotated_copies_keep_png_overwrite_on_rerun_and_scale_their_labels(tmp_path, capsys):
    from facemtl.inference.results import FaceResult, TaskAnswer
    from facemtl.sinks import draw_faces

    src = tmp_path / "in"
    src.mkdir()
    Image.open(ASTRONAUT).save(src / "photo.png")
    Image.open(ASTRONAUT).save(src / "photo.jpg")
    for _ in range(2):
        assert main(["analyze", str(src), "--annotate", str(tmp_path / "ann"), "--no-progress"]) == 0
    assert sorted(p.name for p in (tmp_path / "ann").iterdir()) == ["photo.jpg", "photo.png"]
    assert Image.open(tmp_path / "ann" / "photo.png").format == "PNG"

    def label_height(side: int) -> int:
        img = np.full((side, side, 3), 255, np.uint8)
        f = FaceResult([side * 0.3, side * 0.3, side * 0.6, side * 0.6], 1.0, None, {"age": TaskAnswer(30.0)})
        out = draw_faces(img, [f])
        rows = np.flatnonzero((out == 0).all(2).any(1))  # the black label background
        return int(rows.max() - rows.min() + 1)

    assert label_height(4000) > 5 * label_height(400)


def _ctrl_c(written):
    raise KeyboardInterrupt


def _sigterm_twice(written):
    import os
    import signal

    os.kill(os.getpid(), signal.SIGTERM)  # finish what was read...
    os.kill(os.getpid(), signal.SIGTERM)  # ...no: abort now


@pytest.mark.parametrize("interrupt, status", [(_ctrl_c, 130), (_sigterm_twice, 143)])
def test_an_interrupted_analyze_stops_cleanly_without_a_resume_hint(face, tmp_path, capsys, monkeypatch,
                                                                     interrupt, status):
    """Item 11: Ctrl-C suggested a --resume analyze does not have; the detection threads must
    be shut down, not left to print a traceback at exit. A second SIGTERM (the first asks to
    finish what was read) aborts with SIGTERM's status, 143, not Ctrl-C's 130."""
    from facemtl.sinks import JsonLinesSink

    d = tmp_path / "many"
    d.mkdir()
    for i in range(12):
        Image.fromarray(face).save(d / f"p{i:02d}.jpg", quality=90)
    written = []

    def write(self, result):
        written.append(result.file)
        if len(written) == 3:
            interrupt(written)

    monkeypatch.setattr(JsonLinesSink, "write", write)
    assert main(["analyze", str(d), "--json", "--workers", "2", "--no-progress"]) == status
    err = capsys.readouterr().err.strip()
    assert err.startswith("facemtl: interrupted") and "--resume" not in err and "Traceback" not in err
    assert len(written) == 3
    assert not [t for t in threading.enumerate() if t.name.startswith("facemtl-detect")]


def test_detection_scores_are_documented_per_detector():
    """Item 11: one 'score' field, two scales; the schema, the README and --help say which."""
    from facemtl.inference import results

    readme = (REPO / "README.md").read_text()
    for text in (results.__doc__, readme):
        assert "SVM margin" in text and "O-Net" in text


def test_a_pil_image_is_turned_by_its_exif_tag_as_its_file_is(face, tmp_path):
    """Open, converted or not, the image is turned as its file is; turned with exif_transpose
    (which clears the tag) it is not turned again; turned with rotate (which keeps the tag) it
    would be, as the docstring and README say."""
    from PIL import ImageOps

    stored = np.ascontiguousarray(np.rot90(face))  # stored on its side, EXIF orientation 6 (turn 90 clockwise)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "side.jpg", quality=95, exif=exif.tobytes())
    opened = Image.open(tmp_path / "side.jpg")
    upright = open_image(tmp_path / "side.jpg")
    assert upright.shape[:2] == face.shape[:2]
    assert np.array_equal(open_image(opened), upright) and np.array_equal(open_image(opened.convert("RGB")), upright)
    assert np.array_equal(open_image(ImageOps.exif_transpose(opened)), upright)
    assert opened.rotate(-90, expand=True).getexif().get(0x0112) == 6  # the documented trap


def test_a_read_only_disk_under_annotate_or_db_is_the_machines_refusal(tmp_path, capsys, monkeypatch):
    """README: a write the machine refuses exits 1 with the reason and the place; a read-only
    --annotate folder or --db file exited 2, as if the command were wrong. (The disk is made
    read-only by refusing the probe file each check writes: os.access says yes to root.)"""
    import errno
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    assert main(["analyze", str(ASTRONAUT), "--annotate", str(tmp_path / "ann"), "--no-progress"]) == 1
    err = one_line_error(capsys)
    assert "could not go on: cannot write into the --annotate folder (Read-only file system)" in err
    assert err.endswith(str(tmp_path / "ann"))
    assert main(["analyze", str(ASTRONAUT), "--db", str(tmp_path / "r.db"), "--no-progress"]) == 1
    err = one_line_error(capsys)
    assert "cannot create the database file r.db there (Read-only file system)" in err and not (tmp_path / "r.db").exists()


def test_closed_stdout_and_nothing_readable_are_said_on_stderr(tmp_path, capsys):
    import subprocess
    import sys

    # started with standard output closed (>&-): a traceback from the JSON writer before
    r = subprocess.run(["bash", "-c", f'"{sys.executable}" -m facemtl.cli analyze "{ASTRONAUT}" --json >&-'],
                       capture_output=False, stderr=subprocess.PIPE, text=True, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip() == "facemtl: error: facemtl analyze could not go on: standard output is closed: <stdout>"
    # every input unreadable: exit 1, and stderr says so (the reasons were only in the JSON on stdout)
    (tmp_path / "text.jpg").write_text("not a photo")
    assert main(["analyze", str(tmp_path / "text.jpg"), str(tmp_path / "none.jpg"), "--json", "--no-progress"]) == 1
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2
    assert err.strip().splitlines()[-1] == ("facemtl: error: none of the 2 inputs could be read as an image "
                                            "(each record says why)")


def test_only_photo_formats_are_decoded(tmp_path):
    """A security review: any format Pillow opens was decoded, EPS among them, for which Pillow runs
    Ghostscript on the file (whatever its name says). Photo formats only now."""
    from PIL import UnidentifiedImageError

    from facemtl.images import PHOTO_FORMATS, load_rgb

    eps = tmp_path / "photo.jpg"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    with pytest.raises(ValueError, match=r"^the file is in the EPS format: facemtl decodes photo formats only"):
        load_rgb(eps)
    Image.new("RGB", (16, 16)).save(tmp_path / "x.pcx")  # one Pillow reads, named as such (a review)
    with pytest.raises(ValueError, match="the PCX format"):
        load_rgb(tmp_path / "x.pcx")
    (tmp_path / "notes.jpg").write_text("not an image at all")
    with pytest.raises(UnidentifiedImageError):
        load_rgb(tmp_path / "notes.jpg")
    for fmt, suffix in (("PNG", ".png"), ("BMP", ".bmp"), ("TIFF", ".tif"), ("WEBP", ".webp"), ("GIF", ".gif")):
        assert fmt in PHOTO_FORMATS
        f = tmp_path / f"ok{suffix}"
        Image.new("RGB", (20, 10), (200, 10, 10)).save(f, fmt)
        assert load_rgb(f).shape == (10, 20, 3), fmt


def test_decoding_in_threads_keeps_the_warning_filters(monkeypatch):
    """A review: ``warnings.catch_warnings()`` in ``images._open`` swaps the process-wide filter
    list, so uploads decoded in several threads at once let Pillow's DecompressionBombWarning
    through, or left its "ignore" in place for good. A PNG whose header says 100 M pixels (over
    Pillow's warning line, under facemtl's limit) opened in 8 threads at once, header only."""
    import struct
    import sys
    import warnings
    import zlib

    from facemtl import images

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    big = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 10000, 10000, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))
    escaped: list[str] = []
    monkeypatch.setattr(warnings, "showwarning", lambda message, *a, **k: escaped.append(str(message)))
    interval = sys.getswitchinterval()
    with warnings.catch_warnings():
        warnings.simplefilter("always", Image.DecompressionBombWarning)  # every escape shown
        before = list(warnings.filters)
        start = threading.Barrier(8)

        def opens() -> None:
            start.wait()
            for _ in range(150):
                images._open(io.BytesIO(big)).close()

        sys.setswitchinterval(1e-6)  # threads swap often: the race shows in one run
        try:
            threads = [threading.Thread(target=opens) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            sys.setswitchinterval(interval)
        assert escaped == [] and warnings.filters == before
