"""Issue 12, item 11 (the command line): --version, help for bare ``facemtl``, help text and
defaults on every option, choices from the registries, numbers checked by argparse, a bad
device in one sentence, no progress bars in a redirected stderr."""

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facemtl import __version__
from facemtl.cli import COMMANDS, build_parser, main


def test_version_and_bare_facemtl(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"facemtl {__version__}"
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: facemtl") and all(name in out for name in COMMANDS)
    bare = subprocess.run([sys.executable, "-m", "facemtl.cli"], capture_output=True, text=True)
    assert bare.returncode == 0 and "usage: facemtl" in bare.stdout and bare.stderr == ""


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_option_has_help_and_shows_its_default():
    from facemtl.cli import _HelpFormatter

    for name, p in _subparsers(build_parser()).items():
        assert isinstance(p.formatter_class, type) and issubclass(p.formatter_class, _HelpFormatter), name
        text = p.format_help()
        for a in p._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            assert a.help, f"{name} {a.option_strings or a.dest} has no help text"
            if a.option_strings and a.default not in (None, False, []):
                assert f"(default: {a.default})" in " ".join(text.split()), f"{name} {a.option_strings}"


def test_detector_choices_come_from_the_registry(capsys):
    from facemtl.faces import DETECTORS

    p = _subparsers(build_parser())["analyze"]
    det = next(a for a in p._actions if "--detector" in a.option_strings)
    assert det.metavar == "{" + ",".join(DETECTORS.names()) + ",...}"  # (a plugin's detector is taken too)
    with pytest.raises(SystemExit) as e:
        main(["analyze", "x.jpg", "--detector", "haar"])
    assert e.value.code == 2 and "unknown face detector 'haar'; choose one of: dlib, mtcnn" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_workers_below_one_are_refused_by_the_parser(value, capsys):
    with pytest.raises(SystemExit) as e:
        main(["analyze", "x.jpg", "--workers", value])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--workers" in err and "Traceback" not in err


def test_a_bad_device_is_one_sentence(capsys, tmp_path):
    assert main(["analyze", "examples/astronaut.jpg", "--device", "banana", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "facemtl: error: unknown device 'banana'; use auto, cpu, cuda or cuda:N"
    assert main(["evaluate", "--checkpoint", "src/facemtl/weights/utkface_lite0.pt", "--device", "banana"]) == 2
    assert capsys.readouterr().err.strip() == err


def test_no_progress_bar_in_a_redirected_stderr(utkface_root, tmp_path, capsys):
    """Item 11: training wrote tqdm bars into a redirected stderr (a log file)."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "tasks: [{name: gender, type: nominal, num_classes: 2}]\n"
        f"data: {{root: {utkface_root}, image_size: 32, limit: 120, workers: 0}}\n"
        "model: {backbone: tiny_mbconv, pretrained: false, shared_stages: 2}\n"
        "train: {epochs: 1, batch_size: 32}\n")
    assert main(["train", "--config", str(recipe), "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "epoch 1:" in err and "\r" not in err and "batch/s" not in err and "it/s" not in err


@pytest.mark.parametrize("sig, status", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_second_signal_aborts_with_that_signals_status(sig, status):
    """The first signal asks for a clean stop; a second aborts, and the exit status still says
    which signal it was (143 for SIGTERM, not Ctrl-C's 130)."""
    import os
    import signal

    from facemtl.system import SignalAbort, stop_on_signals

    signum = getattr(signal, sig)
    before = signal.getsignal(signum)
    asked = []
    with pytest.raises(SignalAbort) as caught:
        with stop_on_signals(asked.append) as received:
            os.kill(os.getpid(), signum)  # a signal to itself: its handler runs before the next line
            assert received == [signum] and asked == [signum]
            os.kill(os.getpid(), signum)
    assert isinstance(caught.value, KeyboardInterrupt) and caught.value.status == status
    assert signal.getsignal(signum) is before  # the previous handler is back


@pytest.mark.parametrize("sig, status", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_stop_that_a_library_turned_into_its_own_error_is_still_a_stop(sig, status):
    """A user test: Ctrl-C or SIGTERM landing inside torch.export's imports came out as "Failed to
    export the model with torch.export" (its own error around ours), and export exited 2, a
    mistake in the command. Under abort_on_signals, an error after a stop signal is the stop."""
    import os
    import signal

    from facemtl.system import SignalAbort, abort_on_signals

    def library():  # catches everything and raises its own error, as torch.export does
        try:
            os.kill(os.getpid(), getattr(signal, sig))
        except BaseException as exc:
            raise RuntimeError("Failed to export the model with torch.export") from exc

    with pytest.raises(SignalAbort) as caught:
        with abort_on_signals():
            library()
    assert caught.value.status == status
    with pytest.raises(RuntimeError, match="Failed to export"):  # no signal: the library's error as it is
        with abort_on_signals():
            raise RuntimeError("Failed to export the model with torch.export")


def test_a_missing_fusion_file_or_a_foreign_model_file_is_named_plainly(tmp_path, capsys):
    (tmp_path / "g.pt").write_text("hello\n")
    assert main(["analyze", "examples/astronaut.jpg", "--checkpoint", str(tmp_path / "g.pt"), "--no-progress"]) == 2
    assert "is not a readable facemtl checkpoint: not a PyTorch file, or a damaged one" in capsys.readouterr().err
    # random bytes: not "Python objects other than weights"; a damaged archive: the reader's words, not
    # its exception's name ("(RuntimeError)", a user test)
    (tmp_path / "r.pt").write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    assert main(["analyze", "examples/astronaut.jpg", "--checkpoint", str(tmp_path / "r.pt"), "--no-progress"]) == 2
    assert capsys.readouterr().err.endswith("r.pt is not a facemtl model file (not a PyTorch file)\n")
    (tmp_path / "z.pt").write_bytes(b"PK\x03\x04junk")
    assert main(["analyze", "examples/astronaut.jpg", "--checkpoint", str(tmp_path / "z.pt"), "--no-progress"]) == 2
    assert "a damaged one (PytorchStreamReader failed reading zip archive" in capsys.readouterr().err
    missing = tmp_path / "nosuch.json"
    assert main(["analyze", "examples/astronaut.jpg", "--fusion", str(missing), "--no-progress"]) == 2
    assert capsys.readouterr().err.strip() == f"facemtl: error: fusion file {missing} does not exist"
    # folders, named as folders (a user test: "does not exist"), and fusion's --out before any work
    assert main(["analyze", "examples/astronaut.jpg", "--fusion", str(tmp_path), "--no-progress"]) == 2
    assert f"{tmp_path} is a folder; give the fusion file (JSON)" in capsys.readouterr().err
    assert main(["fusion", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "f.json")]) == 2
    assert f"{tmp_path} is a folder; give the checkpoint in it" in capsys.readouterr().err
    assert main(["fusion", "--checkpoint", str(tmp_path / "g.pt"), "--out", str(tmp_path)]) == 2
    assert f"--out {tmp_path} is a folder; give a file name" in capsys.readouterr().err


def test_an_exported_file_where_a_checkpoint_is_needed_says_so(tmp_path, capsys):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"\x08\x07")
    assert main(["export", str(onnx), "--format", "onnx", "--out", str(tmp_path / "y.onnx")]) == 2
    assert "is an exported model file; this needs the .pt checkpoint it was exported from" in capsys.readouterr().err


def test_json_written_by_commands_has_no_bare_nan():
    """A metric with no labelled face to be computed on reads null, not NaN (invalid JSON)."""
    import json

    import numpy as np

    from facemtl.jsonutil import finite

    got = finite({"mae": float("nan"), "cs": [1.0, np.float64("inf")], "cm": np.array([[np.nan, 2.0]]), "n": np.int64(0)})
    assert json.dumps(got, allow_nan=False) == '{"mae": null, "cs": [1.0, null], "cm": [[null, 2.0]], "n": 0}'


def test_a_last_sentence_is_one_write(monkeypatch):
    """Under torchrun every process says its error at once on one stderr: text and newline in
    separate writes (print, unbuffered) interleaved two sentences into one garbled line."""
    import io
    import sys

    from facemtl.cli import main

    writes: list[str] = []

    class Unbuffered(io.StringIO):
        def write(self, text):
            writes.append(text)
            return len(text)

    monkeypatch.setattr(sys, "stderr", Unbuffered())
    assert main(["train", "--out", "/nonexistent/run"]) == 2
    assert len(writes) == 1 and writes[0].startswith("facemtl: error: ") and writes[0].endswith("\n")


def test_facemtls_own_log_is_said_as_the_other_lines_are(monkeypatch, capsys):
    # a user test: the database's refusals (logged) came without the ``facemtl: warning:`` prefix
    import dataclasses
    import logging

    from facemtl.clilog import log_to_stderr

    def run(args):
        logging.getLogger("facemtl.store").warning("the results database refused %d of %d images", 3, 40)
        logging.getLogger("facemtl.store").info("not said at the default level")
        with log_to_stderr("info"):  # serve's --log-level: the level changes, no second handler
            logging.getLogger("facemtl.server").info("retention purged %d faces", 10)
        return 0

    monkeypatch.setitem(COMMANDS, "db", dataclasses.replace(COMMANDS["db"], run=run))
    assert main(["db", "upgrade"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "facemtl: warning: the results database refused 3 of 40 images", "facemtl: info: retention purged 10 faces"]
    assert not any(h for h in logging.getLogger("facemtl").handlers)  # none left behind
    # a program that configured logging itself prints our records already: not twice
    root = logging.getLogger()
    theirs = logging.StreamHandler(sys.stderr)
    root.addHandler(theirs)
    try:
        assert main(["db", "upgrade"]) == 0
    finally:
        root.removeHandler(theirs)
    assert capsys.readouterr().err.splitlines() == ["the results database refused 3 of 40 images",
                                                    "retention purged 10 faces"]
    # ... on the facemtl logger itself, too; and its level is the program's (INFO here), not ours
    facemtl_log = logging.getLogger("facemtl")
    facemtl_log.addHandler(theirs)
    facemtl_log.setLevel(logging.INFO)
    try:
        assert main(["db", "upgrade"]) == 0
    finally:
        facemtl_log.removeHandler(theirs)
        facemtl_log.setLevel(logging.NOTSET)
    assert capsys.readouterr().err.splitlines() == ["the results database refused 3 of 40 images",
                                                    "not said at the default level", "retention purged 10 faces"]


def test_overrides_are_taken_wherever_they_stand(capsys):
    """argparse took a command's overrides in one run only: one after a flag was refused."""
    from facemtl.cli import _parse

    parser = build_parser()
    args = _parse(parser, ["train", "--config", "c.yaml", "--out", "o", "data.limit=9", "--no-progress", "weighting.name=x",
                           "train.epochs=2"])
    assert args.overrides == ["data.limit=9", "weighting.name=x", "train.epochs=2"]
    assert args.no_progress is True
    with pytest.raises(SystemExit) as stop:  # an unknown flag is still refused, with its value
        _parse(parser, ["train", "--out", "o", "data.limit=9", "--bogus", "3"])
    assert stop.value.code == 2
    err = capsys.readouterr().err  # said with the command's usage, not facemtl's (a user test)
    assert "facemtl train: error: unrecognized arguments: --bogus 3" in err and err.startswith("usage: facemtl train ")
    with pytest.raises(SystemExit):  # a command without overrides takes none
        _parse(parser, ["db", "upgrade", "--db", "x.db", "a=b"])


def test_every_command_that_takes_a_model_file_takes_it_as_model_or_checkpoint():
    """A user test: `analyze --model m.onnx` was refused ('unrecognized arguments'), as `serve
    --checkpoint` was; stream took both. Each of them now takes either name."""
    from facemtl.cli import build_parser

    parser = build_parser()
    for flag in ("--model", "--checkpoint"):
        assert parser.parse_args(["analyze", "x.jpg", flag, "m.onnx"]).checkpoint == ["m.onnx"]
        assert parser.parse_args(["evaluate", flag, "m.pt"]).checkpoint == ["m.pt"]
        assert parser.parse_args(["stream", "v.mp4", flag, "m.onnx"]).checkpoint == "m.onnx"
        assert parser.parse_args(["serve", flag, "m.onnx"]).model == "m.onnx"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_an_output_in_a_folder_that_takes_no_file_is_refused_before_any_work():
    """A user test, as root: ``os.access`` passes /proc, so `stream --annotate /proc/a.mp4` was refused
    only after the whole stream, and `export --out /proc/x.onnx` after its work. Each check now makes
    a file there first."""
    from facemtl.cli_export import _check_out_file
    from facemtl.cli_serve import _check_export_file
    from facemtl.cli_train import report
    from facemtl.export import check_destination
    from facemtl.export.formats import get_format
    from facemtl.video.writer import check_output

    no_file = r" cannot be written: no file can be made in /proc \(No such file or directory\)$"
    with pytest.raises(ValueError, match="^--annotate /proc/a.mp4" + no_file):
        check_output("/proc/a.mp4")
    with pytest.raises(ValueError, match="^--out /proc/x.onnx" + no_file):
        check_destination(Path("/proc/x.onnx"), get_format("onnx"))
    for check in (_check_out_file, lambda out: _check_export_file(out, None)):
        with pytest.raises(ValueError, match="^--out /proc/f.csv" + no_file):
            check("/proc/f.csv")
        check("/dev/stdout")  # a file that exists (a pipe, a terminal) is opened as it is, whatever its folder
        check(str(Path.cwd() / "new.csv"))  # a folder that takes files
    with pytest.raises(ValueError, match="^the report in /proc" + no_file):  # (a read-only --out failed at the
        report("no_run_here", "/proc/report")                                  # first figure: a user test)


def test_report_threads_sets_pytorchs_threads(monkeypatch, capsys):
    """A user test: on a machine busy with other work, `report`'s Grad-CAM stalled for minutes in
    eager PyTorch's thread pool (16 s with one thread); it had no way to set the threads."""
    import torch

    import facemtl.cli_train as cli_train

    monkeypatch.setattr(cli_train, "report", lambda *args: "report written")
    before = torch.get_num_threads()
    try:
        assert main(["report", "some_run", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1 and capsys.readouterr().out == "report written\n"
    finally:
        torch.set_num_threads(before)


def test_export_takes_the_checkpoint_as_a_flag_too(capsys, tmp_path):
    """A contributor's test: export alone took its checkpoint only as a positional argument."""
    out = str(tmp_path / "m.onnx")
    assert main(["export", "--checkpoint", str(tmp_path / "nosuch.pt"), "--format", "onnx", "--out", out]) == 2
    assert f"checkpoint {tmp_path / 'nosuch.pt'} does not exist" in capsys.readouterr().err
    for args in ([], ["a.pt", "--checkpoint", "b.pt"]):
        assert main(["export", *args, "--format", "onnx", "--out", out]) == 2
        assert "facemtl export takes one checkpoint: CHECKPOINT or --checkpoint CHECKPOINT" in capsys.readouterr().err


def test_a_key_error_with_a_sentence_is_said_and_a_bare_key_is_a_defects_traceback(monkeypatch, capsys):
    """A user test: a resume's KeyError from deep in torch reached the user as "facemtl: error:
    momentum", with nothing to report it by. The sentences facemtl raises as KeyError (NameNotFound:
    an unknown label column, template, variant or registered name) are still one line, exit 2."""
    import dataclasses

    def run_with(exc):
        def run(args):
            raise exc
        monkeypatch.setitem(COMMANDS, "db", dataclasses.replace(COMMANDS["db"], run=run))

    from facemtl.registry import NameNotFound

    run_with(NameNotFound("no label column 'sx'; this data has: age"))
    assert main(["db", "upgrade"]) == 2
    assert capsys.readouterr().err == "facemtl: error: no label column 'sx'; this data has: age\n"
    for bare in ("momentum", "age group"):  # (a key with a space is no sentence either: a review)
        run_with(KeyError(bare))
        with pytest.raises(KeyError, match=bare):
            main(["db", "upgrade"])
