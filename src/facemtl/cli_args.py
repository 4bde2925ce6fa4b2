"""Argument types and flags several commands share (kept out of ``cli.py``, which holds the
command table): positive numbers, a registered detector, the runtime and database flags, and
standard output when a process starts without one."""

from __future__ import annotations

import argparse
import errno
import io
import sys
from pathlib import Path
from typing import Any, Callable


def positive(kind: type) -> Callable[[str], Any]:
    """An argparse ``type`` accepting numbers of ``kind`` above zero."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if not 0 < value < float("inf"):  # (NaN and inf too: --timeout nan waited for ever, a user test)
            raise argparse.ArgumentTypeError(f"must be at least 1, not {text}" if kind is int
                                             else f"must be a finite number above 0, not {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


class ClosedOutput(io.TextIOBase):
    """Standard output when the process was started without one: a write is ``EBADF``."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, "Standard output is closed", "<stdout>")


def detector_name(name: str) -> str:
    """``--detector``: a registered face detector, a plugin's included (:mod:`facemtl.plugins`)."""
    from .faces import DETECTORS

    try:
        DETECTORS.get(name)
    except KeyError as exc:
        raise argparse.ArgumentTypeError(exc.args[0]) from None
    except ValueError as exc:  # a plugin that could not be loaded
        raise argparse.ArgumentTypeError(str(exc)) from None
    return name


def detector_flag(p: argparse.ArgumentParser, help: str) -> None:
    """``--detector`` (default ``mtcnn``): a registered face detector, a plugin's included."""
    from .faces import DETECTORS

    p.add_argument("--detector", default="mtcnn", type=detector_name, help=help,
                   metavar="{" + ",".join(DETECTORS.names()) + ",...}")  # (a plugin's too: "...")


def runtime_name(name: str) -> str:
    """``--runtime``: a row of :data:`~facemtl.inference.runtimes.RUNTIMES`, a plugin's included (fixed
    choices refused a runtime a plugin adds)."""
    from .inference.runtimes import known_runtime

    try:
        return known_runtime(name)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def runtime_flag(p: argparse.ArgumentParser) -> None:
    from .inference.runtimes import RUNTIMES

    p.add_argument("--runtime", type=runtime_name, metavar="{" + ",".join(RUNTIMES) + ",...}",
                   help="what runs the model file (default: by its suffix: .onnx onnxruntime, .xml openvino, "
                        ".pt torch, .engine tensorrt; a plugin may add one to RUNTIMES)")


def accurate_flags(p: argparse.ArgumentParser, cost: str) -> None:
    """``--accurate`` and ``--fusion FUSION_FILE``: the accurate variant, as ``analyze``, ``stream``
    and ``serve`` take it (``cost``: what it costs there, said in the help)."""
    p.add_argument("--accurate", action="store_true",
                   help="the accurate variant: mix a classifier on dlib's face descriptor of each face into gender "
                        "and race (the shipped fusion file), and without a model named run the networks the fusion "
                        "file names (shipped: an ensemble of seven, five at 160 px); it costs " + cost)
    p.add_argument("--fusion", metavar="FUSION_FILE",
                   help="the accurate variant with this fusion file (from 'facemtl fusion') instead of the shipped one")


def output_flag(p: argparse.ArgumentParser) -> None:
    """``--output NAME:TARGET``, repeatable: a sink of :data:`facemtl.sinks.SINKS` beside the standard output."""
    from .sinks import SINKS

    p.add_argument("--output", action="append", default=[], metavar="NAME:TARGET",
                   help="also send the results to this output, e.g. jsonl:results.jsonl (what --json writes, in "
                        f"a file); repeat it for several; registered: {', '.join(SINKS.names())}, and a plugin's "
                        "(README, 'Extending')")


def db_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="URL", help="also store the results in a results database: a SQLite file or a URL "
                                               "(sqlite:///results.db, postgresql://host/db); needs facemtl[serve]")
    p.add_argument("--thumbnails", action="store_true",
                   help="with --db: store a small crop of each face (personal data: off by default)")


class Parser(argparse.ArgumentParser):
    """facemtl's argument parser: an option's error names a failed plugin once (its warning said
    why, a line above: :func:`facemtl.plugins.said_above`)."""

    def error(self, message: str):  # type: ignore[override]
        from .plugins import said_above

        super().error(said_above(message))


def stderr_line(line: str) -> None:
    """``line`` and its newline in one write: under torchrun every process says its last
    sentence at once on one stderr, and ``print``'s two writes (text, then newline) interleaved
    two of them into one garbled line."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def model_file(path: str | Path) -> str:
    """``path``, or the ``best.pt`` of the run folder it names (a folder is no model file, and a
    person naming a run means its best epoch); one sentence for a folder without ``best.pt``."""
    folder = Path(path)
    if not folder.is_dir():
        return str(path)
    if (folder / "best.pt").is_file():
        return str(folder / "best.pt")
    raise FileNotFoundError(f"{path} is a folder, not a model file, and holds no best.pt; pass a model file "
                            f"such as {folder / 'best.pt'} or one from 'facemtl export'")
