"""Export formats: ONE table. The CLI's ``--format`` choices, the option check (an option a
format does not list is refused), the close-match suggestion for a misspelt name and the
README's formats table all come from :data:`FORMATS` (as ultralytics keeps its
``export_formats()``). To add a format: a row here and its exporter function.
"""

from __future__ import annotations

import difflib
import importlib.util
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Option:
    """An export option: its flag (``--name``), type, default and what it does."""

    name: str
    type: type
    default: Any
    help: str


#: Every option any format takes; each format lists the ones it accepts.
OPTIONS: dict[str, Option] = {o.name: o for o in (
    Option("opset", int, 18, "ONNX opset of the exported graph"),
    Option("calibration", int, 300, "training faces INT8 calibration reads"),
    # 1,000: at 500, one face is 0.2 points of INT8's 0.5-point limit, and the shipped checkpoint's
    # INT8 export failed on race there (-1.2 points; -0.3 on 1,000)
    Option("check_faces", int, 1000, "validation faces the parity and accuracy checks read"),
    Option("max_batch", int, 64, "largest batch the TensorRT engine accepts"),
)}


@dataclass(frozen=True)
class ExportFormat:
    name: str
    #: Suffix of the file it writes (OpenVINO also writes a ``.bin`` beside the ``.xml``;
    #: TensorRT a ``.json`` with the metadata beside the engine).
    suffix: str
    cpu: bool
    gpu: bool
    #: Arithmetic of the exported network: ``fp32``, ``int8`` or ``fp16``; ``fp16-weights``:
    #: FP32 arithmetic on weights rounded to FP16.
    precision: str
    #: The runtime (:data:`facemtl.inference.runtimes.RUNTIMES`) that reads it.
    runtime: str
    #: Names of :data:`OPTIONS` this format accepts.
    options: tuple[str, ...]
    #: ``module:function`` writing the file: ``fn(source, out, faces, fmt, **options)``, where
    #: ``source`` is the PyTorch network with its ``info`` (:class:`ModelInfo`), ``out`` the
    #: path to write (a temporary name beside ``--out``: :func:`facemtl.export.export_model`
    #: renames it once its check passes), ``faces`` the calibration and check faces, ``fmt``
    #: this row and ``options`` the accepted :data:`OPTIONS`. The file carries
    #: :func:`facemtl.export.network.exported_info` as its metadata (where a runtime reads
    #: it). The module also has ``mark_check_failed(path, failed)``, which records in that
    #: metadata a failed check kept with ``--force``.
    exporter: str
    #: Python packages it needs (all in ``facemtl[export]`` except TensorRT's).
    needs: tuple[str, ...]
    about: str

    @property
    def int8(self) -> bool:
        return self.precision == "int8"

    @property
    def reduced(self) -> bool:
        """Anything but FP32 throughout: checked on labelled faces for what it loses."""
        return self.precision != "fp32"


FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("onnx", ".onnx", True, True, "fp32", "onnxruntime", ("opset", "check_faces"),
                 "facemtl.export.onnx:export_onnx", ("onnx", "onnxscript"),
                 "ONNX, dynamic batch axis; runs in the plain install (ONNX Runtime) and in OpenVINO"),
    ExportFormat("onnx-fp16w", ".onnx", True, True, "fp16-weights", "onnxruntime", ("opset", "check_faces"),
                 "facemtl.export.onnx:export_onnx_fp16w", ("onnx", "onnxscript"),
                 "ONNX with the weights stored in FP16: half the file, as fast as `onnx` (ONNX Runtime turns "
                 "them back to FP32 when it loads the file)"),
    ExportFormat("onnx-int8", ".onnx", True, False, "int8", "onnxruntime", ("opset", "calibration", "check_faces"),
                 "facemtl.export.onnx:export_onnx_int8", ("onnx", "onnxscript", "onnxruntime"),
                 "ONNX with static INT8 quantization (QDQ, per-channel weights) calibrated on training faces, "
                 "each convolution's bias corrected for its INT8 weights' mean shift"),
    ExportFormat("openvino", ".xml", True, False, "fp32", "openvino", ("opset", "check_faces"),
                 "facemtl.export.openvino:export_openvino", ("onnx", "onnxscript", "openvino"),
                 "OpenVINO IR (.xml + .bin) for Intel CPUs"),
    ExportFormat("openvino-int8", ".xml", True, False, "int8", "openvino", ("opset", "calibration", "check_faces"),
                 "facemtl.export.openvino:export_openvino_int8", ("onnx", "onnxscript", "openvino", "nncf"),
                 "OpenVINO IR quantized to INT8 by NNCF, calibrated on training faces"),
    ExportFormat("tensorrt", ".engine", False, True, "fp16", "tensorrt", ("opset", "max_batch", "check_faces"),
                 "facemtl.export.tensorrt:export_tensorrt", ("onnx", "onnxscript", "tensorrt"),
                 "TensorRT FP16 engine for the CUDA GPU it is built on (built only where CUDA and TensorRT exist)"),
)}

#: Largest loss of accuracy an INT8 export may show on the validation check faces before it
#: is refused (unless ``--force``): 0.5 points of an accuracy, or 2 % of an error such as
#: the age MAE (0.1 years at an MAE of 5).
MAX_ACCURACY_DROP = 0.005
MAX_ERROR_RISE = 0.02


def get_format(name: str) -> ExportFormat:
    """The format called ``name``; an unknown name is a one-sentence error with the closest match."""
    fmt = FORMATS.get(name)
    if fmt is None:
        close = difflib.get_close_matches(name, list(FORMATS), n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown export format {name!r}{hint}; choose one of: {', '.join(FORMATS)}")
    return fmt


def check_options(fmt: ExportFormat, options: dict[str, Any]) -> dict[str, Any]:
    """The options a format gets: the given ones (``None`` = not given) over its defaults.

    An option the format does not list is refused in one sentence, as is a misspelt one.
    """
    given = {k: v for k, v in options.items() if v is not None}
    for k in given:
        if k not in OPTIONS:
            close = difflib.get_close_matches(k, list(OPTIONS), n=1)
            hint = f" (did you mean --{close[0].replace('_', '-')}?)" if close else ""
            raise ValueError(f"unknown export option --{k.replace('_', '-')}{hint}")
        if k not in fmt.options:
            takes = ", ".join("--" + o.replace("_", "-") for o in fmt.options) or "none"
            raise ValueError(f"the {fmt.name} format takes no --{k.replace('_', '-')} option (it takes: {takes})")
        if OPTIONS[k].type is int and (not isinstance(v := given[k], int) or v < 1):
            raise ValueError(f"--{k.replace('_', '-')} must be a positive whole number, not {given[k]!r}")
        top = _newest_opset() if k == "opset" else 0
        if k == "opset" and not MIN_OPSET <= given[k] <= top:
            raise ValueError(f"--opset takes {MIN_OPSET} to {top} (the onnx package here knows up to {top}; "
                             f"INT8's per-channel weights need {MIN_OPSET}), not {given[k]}")
    return {k: given.get(k, OPTIONS[k].default) for k in fmt.options}


#: The oldest opset an export is written at: INT8's per-channel quantisation needs it, and
#: runtimes of years back (TensorRT 8, ONNX Runtime 1.8) read it.
MIN_OPSET = 13


def _newest_opset() -> int:
    """The newest opset the installed onnx package knows (28 for onnx 1.23; a generous 30 without it)."""
    try:
        import onnx
    except ImportError:
        return 30
    return int(onnx.defs.onnx_opset_version())


def missing_packages(fmt: ExportFormat) -> str | None:
    """The one sentence saying what to install for ``fmt``, or ``None`` when all is there."""
    missing = [p for p in (*fmt.needs, "torch") if importlib.util.find_spec(p) is None]
    if not missing:
        return None
    if missing == ["tensorrt"]:
        return "the tensorrt format needs NVIDIA's tensorrt package and a CUDA GPU: pip install tensorrt"
    return f"facemtl export --format {fmt.name} needs {', '.join(missing)}: pip install 'facemtl[export]'"


def markdown_table() -> str:
    """The README's formats table, from :data:`FORMATS`."""
    rows = ["| format | file | CPU | GPU | precision | runtime | options | what it is |",
            "|---|---|:-:|:-:|---|---|---|---|"]
    for f in FORMATS.values():
        opts = " ".join(f"`--{o.replace('_', '-')}`" for o in f.options)
        rows.append(f"| `{f.name}` | `{f.suffix}` | {'yes' if f.cpu else '-'} | {'yes' if f.gpu else '-'} | "
                    f"{f.precision} | `{f.runtime}` | {opts} | {f.about} |")
    return "\n".join(rows)
