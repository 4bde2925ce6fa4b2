"""``facemtl export``: a checkpoint to a deployable file, checked against PyTorch on real faces.

    from facemtl.export import export_model
    report = export_model("runs/cpu/best.pt", "onnx-int8", "model.onnx")

The formats live in one table (:data:`~facemtl.export.formats.FORMATS`). Needs
``facemtl[train,export]`` (torch to read the checkpoint; onnx, openvino, nncf to write).
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..system import REFUSED_BY_THE_MACHINE, check_writable_folder, nearest_existing
from .formats import FORMATS, OPTIONS, ExportFormat, check_options, get_format, markdown_table, missing_packages

__all__ = ["FORMATS", "OPTIONS", "ExportFormat", "ExportFaces", "export_model", "get_format", "markdown_table"]


@dataclass
class ExportFaces:
    """Real faces for an export: ``calibration`` (training split, for INT8) and ``check``
    (validation split, or the sample photo's face) as ``uint8 (N, 3, S, S)``, the check
    faces' ``labels`` ``(N, T)`` when they come from data, and where they came from."""

    calibration: np.ndarray | None
    check: np.ndarray
    labels: np.ndarray | None
    source: str


def load_faces(info: Any, data_root: str | None, calibration: int | None, check: int, need_data: bool) -> ExportFaces:
    """Faces from ``data_root`` or the data folder the model records; when the recorded folder
    is gone, INT8 (``need_data``) refuses in one sentence and FP32 checks on the sample photo's
    face. (A ``data_root`` that is not there was refused before: :func:`check_data_folder`.)"""
    from ..data.model_data import model_data, recorded_data, sample

    cfg, _ = recorded_data(info, data_root)
    if not Path(cfg.root).exists():
        if need_data:
            raise ValueError(f"INT8 calibration needs real faces, and the data folder {cfg.root} that the model "
                             "records does not exist: pass --data DIR")
        return ExportFaces(None, sample_photo_faces(info.image_size), None,
                           f"the sample photo's face (the data folder {cfg.root} the model records does not exist: "
                           f"pass --data DIR to check on {check} validation faces)")
    data = model_data(info, data_root)
    val = sample(data.val if len(data.val) else data.test, check)
    cal = sample(data.train, calibration).images.numpy() if calibration else None
    return ExportFaces(cal, val.images.numpy(), val.labels.numpy(),
                       f"{len(val)} validation faces of {cfg.root}")


def sample_photo_faces(size: int) -> np.ndarray:
    """The sample photo's face, aligned, with its mirror image and a lighter and a darker copy."""
    from ..faces import align_face, build_detector
    from ..images import load_rgb
    from ..samples import sample_photo

    rgb = load_rgb(str(sample_photo()))
    face = build_detector("mtcnn").detect(rgb)[0]
    crop = align_face(rgb, face.landmarks, face.scheme, size)
    light = np.clip(crop.astype(np.int16) + 25, 0, 255).astype(np.uint8)
    dark = np.clip(crop.astype(np.int16) - 25, 0, 255).astype(np.uint8)
    return np.stack([crop, crop[:, ::-1], light, dark]).transpose(0, 3, 1, 2).copy()


class CheckFailed(ValueError):
    """An export refused by its check (not kept); ``report``: the check's report, ``ok`` false,
    which ``export --json`` still prints (a script reads why)."""

    def __init__(self, sentence: str, report: dict[str, Any]) -> None:
        super().__init__(sentence)
        self.report = report


def export_model(checkpoint: str | Path, format: str, out: str | Path, data: str | None = None, force: bool = False,
                 log: Callable[[str], None] = lambda s: None, **options: Any) -> dict[str, Any]:
    """Export ``checkpoint`` to ``out`` in ``format`` and check the result; returns the check's report.

    ``data``: the data folder (default: the one the model records). ``options``: the
    format's options (:data:`~facemtl.export.formats.OPTIONS`; ``None`` = default).
    ``force``: keep an export that fails its check (FP32 outputs off by more than
    :data:`~facemtl.export.checks.FP32_TOLERANCE`, INT8 past the accuracy limits); its
    metadata then records ``check_failed`` (the problems, and the faces they were found on).

    The export is written under temporary names beside ``out`` and checked there; only an
    export that passes (or ``force``) replaces ``out`` (:func:`commit`). A failed check, an
    error or an interruption (SIGINT, SIGTERM) removes the temporary files and leaves what was
    at ``out`` as it was. ``out`` (a folder, an unwritable place) and ``data`` (given but
    missing) are checked before any work.
    """
    from ..inference.runtimes import open_runtime
    from ..system import abort_on_signals
    from .checks import FP32_TOLERANCE, accuracy_loss, compare_outputs, describe_loss, run_all

    fmt = get_format(format)
    opts = check_options(fmt, options)
    missing = missing_packages(fmt)
    if missing:
        raise RuntimeError(missing)
    if fmt.name == "tensorrt":
        from .tensorrt import tensorrt_unavailable

        why = tensorrt_unavailable()
        if why:
            raise RuntimeError(why)
    out = Path(out)
    if out.is_dir():  # (said as a folder, not as a name without the suffix)
        check_destination(out, fmt)
    if out.suffix.lower() != fmt.suffix:
        raise ValueError(f"the {fmt.name} format writes a {fmt.suffix} file; name --out accordingly, not {out.name}")
    if fmt.suffix == ".xml" and out.suffix != ".xml":  # OpenVINO refuses another case, after the work
        raise ValueError(f"OpenVINO writes its model files only as .xml and .bin in lower case: name --out "
                         f"{out.with_suffix('.xml').name}, not {out.name}")
    check_destination(out, fmt)
    check_data_folder(data, fmt)
    from ..inference.runtimes.pytorch import TorchRuntime

    source = TorchRuntime(checkpoint, device="cpu")
    faces = load_faces(source.info, data, opts.get("calibration"), opts["check_faces"], fmt.int8)
    log(f"exporting {checkpoint} to {fmt.name} ({fmt.precision}); checks on {faces.source}")
    module, fn = fmt.exporter.split(":")
    exporter = importlib.import_module(module)
    made = make_folders(out.parent)
    tmp = temporary_name(out)
    kept = False
    try:
        # SIGTERM, like Ctrl-C, unwinds through the ``finally`` below: no temporary file stays
        with abort_on_signals():
            try:
                getattr(exporter, fn)(source, tmp, faces, fmt, **opts)
            except OSError as exc:  # disk full, a folder gone read-only: one sentence, nothing at out touched
                raise write_failed(fmt, out, exc) from None
            except RuntimeError as exc:  # OpenVINO says only "basic_ios::clear: iostream error" on a full disk
                if disk_full(out.parent):  # (its temporary files are still there, filling it)
                    raise write_failed(fmt, out, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))) from None
                raise RuntimeError(f"writing the {fmt.name} export beside {out} failed ({exc}), "
                                   f"so {left_as_it_was(out)}") from None

            exported = open_runtime(tmp, fmt.runtime)
            tasks = source.info.build_tasks()
            ref, new = run_all(source, faces.check), run_all(exported, faces.check)
            del exported  # (OpenVINO may map the .bin; let it go before the files move)
            report: dict[str, Any] = {"format": fmt.name, "file": str(out), "precision": fmt.precision,
                                      "runtime": fmt.runtime, "size_bytes": written_size(tmp),
                                      "checked_on": faces.source, "parity": compare_outputs(tasks, ref, new)}
            problems = []
            if fmt.precision == "fp32":
                worst = max(r["max_abs_diff"] for r in report["parity"].values())
                if worst > FP32_TOLERANCE:
                    problems.append(f"its outputs differ from PyTorch's by up to {worst:.2g} "
                                    f"(tolerance {FP32_TOLERANCE:g})")
            if fmt.reduced and faces.labels is not None:
                report["accuracy"] = accuracy_loss(tasks, ref, new, faces.labels)
                problems += [f"{t}: {describe_loss(r)}" for t, r in report["accuracy"].items() if not r["ok"]]
            report["ok"] = not problems
            if problems and not force:
                raise CheckFailed(f"the {fmt.name} export failed its check, so {left_as_it_was(out)} "
                                  f"({'; '.join(problems)}); pass --force to keep it anyway", {**report, "kept": False})
            try:
                if problems:  # kept with --force: the file itself says so (and analyze warns when it loads it)
                    log(f"keeping the {fmt.name} export although it failed its check (--force): {'; '.join(problems)}")
                    exporter.mark_check_failed(tmp, {"problems": problems, "checked_on": faces.source,
                                                     "kept_with": "--force"})
                    report["size_bytes"] = written_size(tmp)
                commit(tmp, out)
            except OSError as exc:
                raise write_failed(fmt, out, exc) from None
            kept = True
    finally:
        if not kept:
            for f in [*written_files(tmp), Path(str(tmp) + ".data")]:  # (+ external data an exporter left)
                f.unlink(missing_ok=True)
            for d in reversed(made):  # folders made for this export, when it left nothing in them
                with contextlib.suppress(OSError):
                    d.rmdir()
    return report


def check_destination(out: Path, fmt: ExportFormat) -> None:
    """Refuse, in one sentence and before any work, an ``out`` that cannot take the export:
    a folder (``out`` or a file written beside it), a file the export would write beside
    ``out`` that is there while ``out`` is not (not an earlier export's), or a place under a file or in a folder
    this process cannot write in (read-only). Missing folders are made when the export is
    written."""
    for f in written_files(out):
        if f.is_dir():
            if f == out:
                raise ValueError(f"--out {out} is a folder; name the {fmt.suffix} file to write, such as "
                                 f"{out / ('model' + fmt.suffix)}")
            raise ValueError(f"the {fmt.name} export writes {f.name} beside {out.name}, and {f} is a folder")
        if f != out and f.exists() and not out.exists():
            # a companion without its model file is not an earlier export of this name: someone's
            # own file, which the export would replace (a user test: an unrelated foo.bin)
            raise ValueError(f"the {fmt.name} export writes {f.name} beside {out.name}, and {f} already exists "
                             f"with no {out.name} beside it, so it is not an earlier export: move it or name "
                             "another --out")
    parent = nearest_existing(out.parent)
    if not parent.is_dir():
        raise ValueError(f"--out {out} cannot be written: {os.path.abspath(parent)} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out} cannot be written: the folder {os.path.abspath(parent)} is not writable by "
                         "this user (read-only, or someone else's)")
    check_writable_folder(parent, f"--out {out}")  # (written beside it first, then renamed: the folder, always)


def check_data_folder(data: str | None, fmt: ExportFormat) -> None:
    """Refuse a ``--data`` that is not there, for every format, before any work (without
    ``--data``, :func:`load_faces` falls back to the folder the model records). A file is
    taken (a CSV manifest moved away from where the model records it: the CSV reader's
    whole data is the file); which kind of data it must be, the model's reader says."""
    if not data or Path(data).is_dir() or Path(data).is_file():
        return
    what = "does not exist"
    if fmt.int8:
        raise ValueError(f"INT8 calibration needs real faces, and the data folder {data} given with --data {what}")
    raise ValueError(f"the export's check reads real faces from --data, and the data folder {data} {what} "
                     "(leave --data out to check on the folder the model records, or the sample photo's face)")


def make_folders(folder: Path) -> list[Path]:
    """Make ``folder`` and any missing parents; returns those made, outermost first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.insert(0, folder)
        folder = folder.parent
    if missing:
        try:
            missing[-1].mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            error = ValueError(f"the folder {missing[0]} for --out cannot be made ({exc.strerror or exc})")
            if exc.errno in REFUSED_BY_THE_MACHINE:  # a full or read-only disk: exit 1, as write_failed's
                error.exit_status = 1  # type: ignore[attr-defined]
            raise error from None
    return missing


def temporary_name(out: Path) -> Path:
    """A hidden name beside ``out`` with its suffix (so its runtime reads it), that no file has:
    ``model.onnx`` -> ``.model.5f3a9c1e.tmp.onnx`` (and ``.tmp.bin`` beside ``.tmp.xml``)."""
    while True:
        tmp = out.with_name(f".{out.stem}.{secrets.token_hex(4)}.tmp{out.suffix}")
        if not any(f.exists() for f in written_files(tmp)):
            return tmp


def left_as_it_was(out: Path) -> str:
    return f"{out} was left as it was" if out.exists() else "nothing was kept"


def write_failed(fmt: ExportFormat, out: Path, exc: OSError) -> ValueError:
    """The sentence for a write that failed; one the machine refused (a full disk, a folder gone
    read-only: :data:`~facemtl.system.REFUSED_BY_THE_MACHINE`) ends the command with exit status 1,
    as every command's does, not 2 (a mistake in the command)."""
    error = ValueError(f"writing the {fmt.name} export beside {out} failed ({exc.strerror or exc}), "
                       f"so {left_as_it_was(out)}")
    if exc.errno in REFUSED_BY_THE_MACHINE:
        error.exit_status = 1  # type: ignore[attr-defined]
    return error


def disk_full(folder: Path) -> bool:
    """Whether the disk of ``folder`` has (nearly) no space left: OpenVINO's writer says only
    "basic_ios::clear: iostream error" when it fills one, with no ``errno``."""
    try:
        return shutil.disk_usage(folder).free < 2**20
    except OSError:
        return False


def commit(tmp: Path, out: Path) -> None:
    """Move a checked export from its temporary names onto ``out``, each file by ``os.replace``
    (atomic: a reader sees the old file or the new one, never a part).

    A format with a companion file (OpenVINO's ``.bin`` beside the ``.xml``, a TensorRT
    engine's ``.json``) cannot be swapped in one step, and a mix of the old pair and the new
    one (an old ``.xml`` laid over the new ``.bin``: the same layer offsets into other
    weights) would load and answer wrongly. The model file (``.xml``, ``.engine``) is what
    every reader opens first and refuses without, so it goes last: the old one is removed
    first, then the companion replaced, then the model file put in place. At every moment
    ``out`` is the old pair, no model at all (the new companion alone, which nothing loads),
    or the new pair. A first stop signal (Ctrl-C, SIGTERM) during these few system calls is
    let pass, so that they all run: the export is complete a moment later. ``kill -9`` between
    them leaves no model at ``out`` and the new ``.xml`` under its hidden temporary name.
    """
    from ..system import stop_on_signals

    companions = list(zip(written_files(tmp)[1:], written_files(out)[1:]))
    with stop_on_signals(lambda signum: None):  # (a second signal still aborts at once)
        if companions:
            out.unlink(missing_ok=True)
        for t, o in companions:
            os.replace(t, o)
        os.replace(tmp, out)


def written_files(out: Path) -> list[Path]:
    """The files an export writes, the model file first, then its companion: OpenVINO's weights
    (``.bin``), a TensorRT engine's metadata (``.engine.json``). An ONNX export is one file
    (:func:`~facemtl.export.network.to_onnx` stores no external ``.onnx.data``, which the
    runtimes refuse to read)."""
    if out.suffix == ".xml":
        return [out, out.with_suffix(".bin")]
    if out.suffix == ".engine":
        return [out, Path(str(out) + ".json")]
    return [out]


def written_size(out: Path) -> int:
    return sum(f.stat().st_size for f in written_files(out) if f.is_file())
