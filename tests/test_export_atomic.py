"""Export never harms what is at ``--out``: the export is written under temporary names beside it,
checked there, and only then moved onto ``--out``; a failed check, an error or an interruption
removes the temporary files and nothing else. Bad ``--out`` / ``--data`` are refused before any work."""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

import pytest

from facemtl.cli import main
from facemtl.export import FORMATS, check_destination, export_model

REPO = Path(__file__).resolve().parents[1]
LEGACY = REPO / "tests" / "data" / "legacy_0.1.0" / "run" / "best.pt"
GOOD = b"a good model exported earlier"

pytest.importorskip("onnxscript")


def fast(utkface_root) -> list[str]:
    return ["--data", str(utkface_root), "--check-faces", "2"]


def fail_every_check(monkeypatch) -> None:
    import facemtl.export.checks as checks

    monkeypatch.setattr(checks, "FP32_TOLERANCE", -1.0)  # every FP32 export now "differs from PyTorch"


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("facemtl: error:")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0]


def test_failed_check_leaves_the_file_at_out_untouched(utkface_root, tmp_path, monkeypatch, capsys):
    fail_every_check(monkeypatch)
    out = tmp_path / "good.onnx"
    out.write_bytes(GOOD)
    assert main(["export", str(LEGACY), "--format", "onnx", "--out", str(out), *fast(utkface_root)]) == 2
    line = one_error_line(capsys)
    assert "failed its check" in line and f"{out} was left as it was" in line and "--force" in line
    assert out.read_bytes() == GOOD
    assert sorted(os.listdir(tmp_path)) == ["good.onnx"]  # no temporary file stays


def test_exporter_that_fails_midway_leaves_the_file_at_out_untouched(utkface_root, tmp_path, monkeypatch, capsys):
    """A full disk (the half-written file is the temporary one), Ctrl-C and SIGTERM while the
    exporter writes, and Ctrl-C while the written file is being checked."""
    import facemtl.export.checks as checks
    import facemtl.export.onnx as onnx_export

    out = tmp_path / "good.onnx"
    out.write_bytes(GOOD)
    seen: list[Path] = []

    def half_written(exc):
        def exporter(source, path, *args, **kwargs):
            seen.append(Path(path))
            Path(path).write_bytes(b"half a mod")
            if exc == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)  # the export turns it into an interruption
            raise exc
        return exporter

    monkeypatch.setattr(onnx_export, "export_onnx", half_written(OSError(errno.ENOSPC, "No space left on device")))
    # the machine refused the write: exit 1, as every command's (it was 2, a mistake in the command)
    assert main(["export", str(LEGACY), "--format", "onnx", "--out", str(out), *fast(utkface_root)]) == 1
    line = one_error_line(capsys)
    assert line == f"facemtl: error: writing the onnx export beside {out} failed (No space left on device), " \
                   f"so {out} was left as it was"
    # it wrote beside --out, under a hidden name with the format's suffix
    assert seen[0].parent == tmp_path and seen[0].name.startswith(".good.") and seen[0].suffix == ".onnx"

    for exc in (KeyboardInterrupt(), "sigterm"):
        monkeypatch.setattr(onnx_export, "export_onnx", half_written(exc))
        with pytest.raises(KeyboardInterrupt):
            export_model(LEGACY, "onnx", out, str(utkface_root), check_faces=2)
        assert out.read_bytes() == GOOD and sorted(os.listdir(tmp_path)) == ["good.onnx"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler it set while writing is gone

    monkeypatch.undo()  # the real exporter, interrupted while its file is checked
    calls = []

    def run_all(runtime, images, batch_size=64):
        calls.append(runtime)
        if len(calls) == 2:  # PyTorch's outputs first, then the exported file's
            raise KeyboardInterrupt
        return real_run_all(runtime, images, batch_size)

    real_run_all = checks.run_all
    monkeypatch.setattr(checks, "run_all", run_all)
    with pytest.raises(KeyboardInterrupt):
        export_model(LEGACY, "onnx", out, str(utkface_root), check_faces=2)
    assert len(calls) == 2 and out.read_bytes() == GOOD and sorted(os.listdir(tmp_path)) == ["good.onnx"]


def test_openvino_on_a_full_disk_says_so_and_exits_1(utkface_root, tmp_path, monkeypatch, capsys):
    """OpenVINO's writer says only "basic_ios::clear: iostream error" when the disk fills (a user
    test, exit 2): the free space of the folder tells, and the sentence is the full disk's."""
    import shutil
    from collections import namedtuple

    import facemtl.export.openvino as openvino_export

    def filling(source, path, *args, **kwargs):
        Path(path).write_bytes(b"<?xml")
        raise RuntimeError("basic_ios::clear: iostream error")

    monkeypatch.setattr(openvino_export, "export_openvino", filling)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage(2**30, 2**30 - 4096, 4096))
    out = tmp_path / "m.xml"
    assert main(["export", str(LEGACY), "--format", "openvino", "--out", str(out), *fast(utkface_root)]) == 1
    assert one_error_line(capsys) == f"facemtl: error: writing the openvino export beside {out} failed (No space " \
                                     "left on device), so nothing was kept"
    assert sorted(os.listdir(tmp_path)) == []
    # with room on the disk, OpenVINO's own words (exit 2, as before)
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage(2**30, 2**29, 2**29))
    assert main(["export", str(LEGACY), "--format", "openvino", "--out", str(out), *fast(utkface_root)]) == 2
    assert one_error_line(capsys) == f"facemtl: error: writing the openvino export beside {out} failed " \
                                     "(basic_ios::clear: iostream error), so nothing was kept"


def test_force_keeps_a_failed_export_and_its_metadata_says_so(utkface_root, tmp_path, monkeypatch, capsys):
    """Over an existing OpenVINO pair: the new .xml + .bin replace it, and the file records the
    failed check; loading it warns once."""
    from facemtl.inference import load_predictor

    fail_every_check(monkeypatch)
    out = tmp_path / "m.xml"
    out.write_bytes(GOOD)
    out.with_suffix(".bin").write_bytes(GOOD)
    r = export_model(LEGACY, "openvino", out, str(utkface_root), force=True, check_faces=2)
    assert r["ok"] is False and r["file"] == str(out)
    assert sorted(os.listdir(tmp_path)) == ["m.bin", "m.xml"]
    assert r["size_bytes"] == out.stat().st_size + out.with_suffix(".bin").stat().st_size
    capsys.readouterr()
    p = load_predictor(out)
    failed = p.info.extra["check_failed"]
    assert "differ from PyTorch" in failed["problems"][0] and "validation faces" in failed["checked_on"]
    assert p.info.extra["format"] == "openvino" and [t.name for t in p.tasks] == ["age", "gender", "race"]
    load_predictor(out)
    err = capsys.readouterr().err
    assert err.count("failed its check") == 1 and str(out) in err  # once, however often it is loaded


def test_bad_out_and_missing_data_are_refused_before_any_work(tmp_path, monkeypatch, capsys):
    import facemtl.inference.runtimes.pytorch as pytorch

    def no_work(*args, **kwargs):
        raise AssertionError("the checkpoint was read before the request was checked")

    monkeypatch.setattr(pytorch, "TorchRuntime", no_work)
    folder = tmp_path / "X.onnx"
    folder.mkdir()
    assert main(["export", str(LEGACY), "--format", "onnx", "--out", str(folder)]) == 2
    assert f"--out {folder} is a folder" in one_error_line(capsys)
    cdir = tmp_path / "cdir.xml"
    cdir.mkdir()
    assert main(["export", str(LEGACY), "--format", "openvino", "--out", str(cdir)]) == 2
    assert "is a folder" in one_error_line(capsys)
    (tmp_path / "w.bin").mkdir()  # the IR's weights file would land on a folder
    assert main(["export", str(LEGACY), "--format", "openvino", "--out", str(tmp_path / "w.xml")]) == 2
    assert "writes w.bin beside w.xml" in one_error_line(capsys)
    (tmp_path / "own.bin").write_bytes(b"someone's data")  # not an earlier export's weights: kept
    assert main(["export", str(LEGACY), "--format", "openvino", "--out", str(tmp_path / "own.xml")]) == 2
    assert "own.bin already exists with no own.xml beside it" in one_error_line(capsys)
    assert (tmp_path / "own.bin").read_bytes() == b"someone's data"
    (tmp_path / "own.bin").unlink()
    for fmt, name in (("onnx", "m.onnx"), ("openvino", "m.xml"), ("onnx-int8", "q.onnx")):
        out = tmp_path / "new" / name
        assert main(["export", str(LEGACY), "--format", fmt, "--out", str(out), "--data",
                     str(tmp_path / "no-data")]) == 2
        line = one_error_line(capsys)
        assert f"{tmp_path / 'no-data'} given with --data does not exist" in line or \
            f"{tmp_path / 'no-data'} does not exist" in line
    assert sorted(os.listdir(tmp_path)) == ["X.onnx", "cdir.xml", "w.bin"]  # nothing written, no folder made
    assert not os.listdir(folder) and not os.listdir(cdir)

    # a file where a folder should be, and a folder this user cannot write in
    (tmp_path / "plain").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        check_destination(tmp_path / "plain" / "sub" / "m.onnx", FORMATS["onnx"])
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    with pytest.raises(ValueError, match="is not writable"):
        check_destination(tmp_path / "m.onnx", FORMATS["onnx"])


def test_missing_out_folders_are_made_and_removed_again_on_failure(utkface_root, tmp_path, monkeypatch, capsys):
    fail_every_check(monkeypatch)
    out = tmp_path / "a" / "b" / "m.onnx"
    assert main(["export", str(LEGACY), "--format", "onnx", "--out", str(out), *fast(utkface_root)]) == 2
    assert "so nothing was kept" in one_error_line(capsys)
    assert not os.listdir(tmp_path)
