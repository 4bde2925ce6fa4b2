"""``facemtl export``: a checkpoint to a deployable file, checked against PyTorch on real faces.

    from facemtl.export import export_model
    report = export_model("runs/cpu/best.pt", "onnx-int8", "model.onnx")

The formats live in one table (:data:`~facemtl.export.formats.FORMATS`). Needs
``facemtl[train,export]`` (torch to read the checkpoint; onnx, openvino, nncf to write).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

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
    """Faces from ``data_root`` or the data folder the model records; without data, INT8
    (``need_data``) refuses in one sentence and FP32 checks on the sample photo's face."""
    from ..data.model_data import model_data, recorded_data, sample

    cfg, _ = recorded_data(info, data_root)
    if not Path(cfg.root).exists():
        if need_data and data_root:  # typed by the person: do not ask for what was just passed
            raise ValueError(f"INT8 calibration needs real faces, and the data folder {data_root} given with "
                             "--data does not exist")
        if need_data:
            raise ValueError(f"INT8 calibration needs real faces, and the data folder {cfg.root} that the model "
                             "records does not exist: pass --data DIR")
        return ExportFaces(None, sample_photo_faces(info.image_size), None, "the sample photo's face (no data folder)")
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


def export_model(checkpoint: str | Path, format: str, out: str | Path, data: str | None = None, force: bool = False,
                 log: Callable[[str], None] = lambda s: None, **options: Any) -> dict[str, Any]:
    """Export ``checkpoint`` to ``out`` in ``format`` and check the result; returns the check's report.

    ``data``: the data folder (default: the one the model records). ``options``: the
    format's options (:data:`~facemtl.export.formats.OPTIONS`; ``None`` = default).
    ``force``: keep an export that fails its check (FP32 outputs off by more than
    :data:`~facemtl.export.checks.FP32_TOLERANCE`, INT8 past the accuracy limits).
    """
    from ..inference.runtimes import open_runtime
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
    if out.suffix.lower() != fmt.suffix:
        raise ValueError(f"the {fmt.name} format writes a {fmt.suffix} file; name --out accordingly, not {out.name}")
    from ..inference.runtimes.pytorch import TorchRuntime

    source = TorchRuntime(checkpoint, device="cpu")
    faces = load_faces(source.info, data, opts.get("calibration"), opts["check_faces"], fmt.int8)
    log(f"exporting {checkpoint} to {fmt.name} ({fmt.precision}); checks on {faces.source}")
    out.parent.mkdir(parents=True, exist_ok=True)
    module, fn = fmt.exporter.split(":")
    getattr(importlib.import_module(module), fn)(source, out, faces, fmt, **opts)

    exported = open_runtime(out, fmt.runtime)
    tasks = source.info.build_tasks()
    ref, new = run_all(source, faces.check), run_all(exported, faces.check)
    report: dict[str, Any] = {"format": fmt.name, "file": str(out), "precision": fmt.precision,
                              "runtime": fmt.runtime, "size_bytes": written_size(out),
                              "checked_on": faces.source, "parity": compare_outputs(tasks, ref, new)}
    problems = []
    if fmt.precision == "fp32":
        worst = max(r["max_abs_diff"] for r in report["parity"].values())
        if worst > FP32_TOLERANCE:
            problems.append(f"its outputs differ from PyTorch's by up to {worst:.2g} (tolerance {FP32_TOLERANCE:g})")
    if fmt.reduced and faces.labels is not None:
        report["accuracy"] = accuracy_loss(tasks, ref, new, faces.labels)
        problems += [f"{t}: {describe_loss(r)}" for t, r in report["accuracy"].items() if not r["ok"]]
    report["ok"] = not problems
    if problems and not force:
        for f in written_files(out):
            f.unlink(missing_ok=True)
        raise ValueError(f"the {fmt.name} export failed its check, so nothing was kept ({'; '.join(problems)}); "
                         "pass --force to keep it anyway")
    return report


def written_files(out: Path) -> list[Path]:
    """The files an export writes: the model file and its companions (IR weights, engine metadata)."""
    return [out, out.with_suffix(".bin") if out.suffix == ".xml" else Path(str(out) + ".json")]


def written_size(out: Path) -> int:
    return sum(f.stat().st_size for f in written_files(out) if f.is_file())
