"""Reading exported model files safely: ONNX files and OpenVINO IR, checked before any runtime sees them.

Neither format holds code the way a pickle does, but both runtimes can be told to run
code that a file asks for: ONNX Runtime runs operators of a custom domain when a custom-op
library is registered for it, and OpenVINO runs layers of an extension opset when an
extension library is added. facemtl never registers either, and refuses, before loading,
any file that names an operator outside the standard sets, so a file from anywhere can
neither run code nor fail deep inside a runtime:

* ONNX: every node (also inside subgraphs and local functions) must be in the ONNX
  domain, ONNX Runtime's own built-in ``com.microsoft`` kernels, or a function the file
  itself defines from those; tensors stored outside the file (``external_data``, which
  names other files on disk) are refused, so a model can never make the runtime read a
  file beside it.
* OpenVINO IR: every layer must come from a standard ``opsetN``; the weights file must be
  the ``.bin`` beside the ``.xml``.

A file that passes these checks but carries no facemtl metadata is "not a facemtl model",
in one sentence. Files exported since 2026-11-27 also record the SHA-256 of their weights
(:data:`DIGEST_KEY` in the metadata's ``extra``: an ONNX file's tensors, an IR's ``.bin``, a
TensorRT engine), and a file whose weights no longer match it (bits flipped on a disk or in
a copy) is refused as damaged rather than run; the check costs a few milliseconds at load.
The metadata (:class:`~facemtl.inference.model_info.ModelInfo` as JSON) sits in the ONNX
``metadata_props`` and in the IR's ``rt_info``, under :data:`INFO_KEY`.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

from ..plugins import PluginError
from ..registry import UnknownName
from .model_info import ModelInfo

#: Key of the ModelInfo JSON in an ONNX file's metadata and an OpenVINO IR's rt_info.
INFO_KEY = "facemtl_model_info"
#: ONNX operator domains whose kernels are built into ONNX Runtime (the ONNX standard and
#: ONNX Runtime's contrib kernels, which its quantizer emits): nothing loaded from elsewhere.
ONNX_DOMAINS = frozenset({"", "ai.onnx", "com.microsoft"})
_OPSET = re.compile(r"^opset\d+$")
#: Key in :attr:`ModelInfo.extra` of the SHA-256 (hex) of the weights a file was exported with.
DIGEST_KEY = "weights_sha256"


def onnx_weights_digest(model: Any) -> str:
    """SHA-256 (hex) of an ONNX model's main-graph tensors (initializers and ``Constant`` nodes'),
    name and stored bytes, in file order; the metadata is left out, so it can record it.

    Graph structure is not hashed: protobuf does not promise byte-identical serialisation
    across versions, and the tensors' bytes are nearly all of the file."""
    h = hashlib.sha256()
    for t in _graph_tensors(model.graph):
        h.update(t.name.encode() + b"\0")
        h.update(t.raw_data if t.HasField("raw_data") else t.SerializeToString())
    return h.hexdigest()


def check_digest(info: ModelInfo, digest: Any, path: Path, model: Path | None = None) -> None:
    """Refuse a file whose weights differ from those its metadata recorded at export.

    ``digest``: a callable giving the SHA-256 hex of the weights now (called only when the
    metadata has one: files exported before 2026-11-27 record none and are not checked).
    ``model``: the file whose metadata records it, when the weights are a file of their own
    beside it (an IR's ``.bin``), which may as well be another export's: the sentence says so,
    as the size check's does."""
    recorded = info.extra.get(DIGEST_KEY)
    if not recorded or digest() == recorded:
        return
    if model is not None:
        raise ValueError(f"{path} is damaged or belongs to another export: its weights are not the ones {model.name} "
                         "was exported with (their SHA-256 differs from the one it records); export the model again")
    raise ValueError(f"{path} is damaged: its weights are not the ones it was exported with (their SHA-256 "
                     "differs from the one it records); copy it again or export the model again")


def weights_sha256(weights: bytes | Path) -> str:
    """SHA-256 (hex) of weights: bytes in memory, or a file (an IR's ``.bin``) read in chunks."""
    if isinstance(weights, bytes):
        return hashlib.sha256(weights).hexdigest()
    with open(weights, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def parse_info(text: str, path: Path) -> ModelInfo:
    """ModelInfo from its JSON; anything malformed is a one-sentence ``ValueError``."""
    try:
        d = json.loads(text)
        info = ModelInfo.from_dict(d)
        info.build_tasks()
    except Exception as exc:
        newer = _newer_writer(text)
        if newer:
            raise ValueError(f"{path} was written by facemtl {newer}, newer than this {_own_version()}, and its "
                             f"metadata uses what this one lacks ({exc}): upgrade facemtl") from None
        if isinstance(exc, PluginError):  # a plugin that failed to import: its own sentence
            raise ValueError(f"{path}: {exc}") from None
        if isinstance(exc, UnknownName):  # a plugin's task type, not a damaged file
            raise ValueError(f"{path} uses the {exc.kind} {exc.name!r}, which no loaded package registers: import "
                             "the package that defines it, or name its module in FACEMTL_PLUGINS") from None
        raise ValueError(f"{path} carries damaged facemtl metadata ({type(exc).__name__}: {exc})") from None
    warn_failed_check(info, path)
    return info


def _own_version() -> str:
    from .. import __version__

    return __version__


def _newer_writer(text: str) -> str | None:
    """The facemtl version recorded in metadata ``text`` (``extra.facemtl_version``, written since
    0.2.0) when it is newer than this one, else ``None``."""
    try:
        written = str(json.loads(text)["extra"]["facemtl_version"])
    except Exception:
        return None

    def key(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", v)[:3])

    return written if key(written) > key(_own_version()) else None


_warned: set[str] = set()


def warn_failed_check(info: ModelInfo, path: Path) -> None:
    """Say on standard error, once per file and process, that an export was kept with
    ``--force`` although it failed its check (``extra.check_failed``, written by ``facemtl export``)."""
    failed = info.extra.get("check_failed") if isinstance(info.extra, dict) else None
    key = str(Path(path).resolve())
    if not failed or key in _warned:
        return
    _warned.add(key)
    why = "; ".join(map(str, failed.get("problems", []))) if isinstance(failed, dict) else str(failed)
    print(f"facemtl: warning: {path}: this export failed its check against PyTorch and was kept with --force"
          + (f" ({why})" if why else ""), file=sys.stderr)


def read_onnx(path: str | Path) -> tuple[bytes, ModelInfo]:
    """``(file bytes, ModelInfo)`` of a checked facemtl ONNX file (see the module docstring).

    The runtimes load the returned bytes, never the path again, so what was checked is
    what runs.
    """
    path = Path(path)
    data, model = check_onnx_file(path)
    meta = {p.key: p.value for p in model.metadata_props}
    if INFO_KEY not in meta:
        raise ValueError(f"{path} is an ONNX model but not a facemtl one: it carries no facemtl metadata "
                         "(make one with 'facemtl export')")
    info = parse_info(meta[INFO_KEY], path)
    check_digest(info, lambda: onnx_weights_digest(model), path)
    return data, info


def check_onnx_file(path: str | Path) -> tuple[bytes, Any]:
    """``(bytes, ModelProto)`` of an ONNX file that passed :func:`check_onnx`; any other file
    is a one-sentence ``ValueError``."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    data = path.read_bytes()
    try:
        model = onnx.ModelProto.FromString(data)
    except (DecodeError, RuntimeWarning, ValueError):
        if _looks_like_onnx(path, data):  # a copy cut short (a user test: "not an ONNX model file" for it)
            raise ValueError(f"{path} is damaged or truncated: it begins as an ONNX model but does not read to its "
                             "end; copy it again, or export it again") from None
        raise ValueError(f"{path} is not an ONNX model file") from None
    if not model.graph.node:
        raise ValueError(f"{path} is not an ONNX model file (it holds no graph)")
    check_onnx(model, path)
    return data, model


def _looks_like_onnx(path: Path, data: bytes) -> bool:
    """Whether a file that does not parse is an ONNX model spoilt (cut short, bytes changed)
    rather than something else: an ``.onnx`` name, more than a few bytes, and the start every
    ONNX file has (field 1, ``ir_version``, a small number: bytes ``08 01`` to ``08 7f``)."""
    return path.suffix.lower() == ".onnx" and len(data) >= 1024 and data[0] == 0x08 and 0 < data[1] < 0x80


def check_onnx(model: Any, path: Path) -> None:
    """Refuse custom operator domains and external tensor data (see the module docstring)."""
    local = {(f.domain, f.name) for f in model.functions}
    bad: set[str] = set()

    def walk(nodes: Any) -> None:
        for n in nodes:
            if n.domain not in ONNX_DOMAINS and (n.domain, n.op_type) not in local:
                bad.add(f"{n.domain}.{n.op_type}")
            for a in n.attribute:
                for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    walk(g.node)
                    _no_external(_graph_tensors(g), path)

    walk(model.graph.node)
    for f in model.functions:
        walk(f.node)
    # (opset_import may declare domains no node uses, as ONNX Runtime's quantizer does: harmless)
    if bad:
        names = ", ".join(sorted(bad))
        raise ValueError(f"{path} uses operators outside the ONNX standard ({names}), which facemtl refuses to run")
    _no_external(_graph_tensors(model.graph), path)


def _graph_tensors(g: Any):
    """A graph's initializers, then the tensors its nodes hold as attributes (``Constant``)."""
    yield from g.initializer
    for n in g.node:
        for a in n.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors


def _no_external(tensors: Any, path: Path) -> None:
    for t in tensors:
        if t.data_location == 1 or t.external_data:  # TensorProto.EXTERNAL
            raise ValueError(f"{path} keeps tensors in other files (external data), which facemtl refuses to read; "
                             "export it as one file")


def read_openvino(path: str | Path) -> tuple[str, bytes, ModelInfo]:
    """``(xml text, weights bytes, ModelInfo)`` of a checked facemtl OpenVINO IR (see the
    module docstring): the runtime compiles these, never the files again, so what was checked
    is what runs."""
    import xml.etree.ElementTree as ET

    xml = Path(path)
    if not xml.is_file():
        raise FileNotFoundError(f"model file {xml} does not exist")
    weights = xml.with_suffix(".bin")
    if not weights.is_file():
        raise FileNotFoundError(f"{xml} needs its weights file {weights.name} beside it")
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as exc:
        with open(xml, "rb") as f:
            start = f.read(256).lstrip(b"\xef\xbb\xbf \t\r\n")
        if xml.stat().st_size >= 1024 and (start.startswith(b"<?xml") or start.startswith(b"<net")):
            raise ValueError(f"{xml} is damaged or truncated: it begins as an OpenVINO IR file but its XML does not "
                             f"read ({exc}); copy it again, or export it again") from None
        raise ValueError(f"{xml} is not an OpenVINO IR file (not XML)") from None
    if root.tag != "net" or root.find("layers") is None:
        raise ValueError(f"{xml} is not an OpenVINO IR file")
    bad = sorted({f"{layer.get('type')} ({layer.get('version')})" for layer in root.iter("layer")
                  if not _OPSET.match(layer.get("version") or "")})
    if bad:
        raise ValueError(f"{xml} uses layers outside OpenVINO's standard opsets ({', '.join(bad[:5])}), "
                         "which facemtl refuses to run")
    node = root.find(f"rt_info/{INFO_KEY}")
    if node is None or node.get("value") is None:
        raise ValueError(f"{xml} is an OpenVINO model but not a facemtl one: it carries no facemtl metadata "
                         "(make one with 'facemtl export')")
    info = parse_info(node.get("value"), xml)
    # OpenVINO's own answer to a short .bin is a three-line C++ check failure: measure it here
    needed = max((int(d.get("offset", 0)) + int(d.get("size", 0)) for d in root.iter("data")
                  if d.get("offset", "").isdigit() and d.get("size", "").isdigit()), default=0)
    data = weights.read_bytes()
    if len(data) < needed:
        raise ValueError(f"{weights} is damaged or belongs to another export: {xml.name} needs {needed:,} bytes of "
                         f"weights and it holds {len(data):,} (export the model again)")
    check_digest(info, lambda: weights_sha256(data), weights, model=xml)
    return xml.read_text(), data, info


def read_sidecar(path: str | Path) -> ModelInfo:
    """ModelInfo from ``<file>.json`` beside a model file that cannot hold metadata (a TensorRT engine)."""
    side = Path(str(path) + ".json")
    if not side.is_file():
        raise ValueError(f"{path} has no facemtl metadata file {side.name} beside it, so it is not a facemtl model")
    try:
        d = json.loads(side.read_text())
    except (OSError, ValueError):
        raise ValueError(f"{side} is not a facemtl metadata file") from None
    if not isinstance(d, dict) or INFO_KEY not in d:
        raise ValueError(f"{side} is not a facemtl metadata file")
    return parse_info(json.dumps(d[INFO_KEY]), side)
