"""The network as exported: ``uint8 (N, 3, S, S)`` crops in, one raw output per inference task out."""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

from ..inference.model_info import ModelInfo


class ExportNet(nn.Module):
    """Wraps a :class:`~facemtl.model.MultiTaskNet` for export.

    Input ``images``: ``uint8 (N, 3, S, S)`` RGB, the crops as
    :func:`facemtl.preprocess.to_batch` lays them out; scaled by 1/255 here (as
    :func:`facemtl.preprocess.to_input` does) and normalised inside the network. Outputs:
    one ``float32 (N, D_task)`` tensor per task that answers at inference, in task order,
    named after the task; training-only tasks (``task.inference == False``) are left out.
    """

    def __init__(self, model: nn.Module, tasks: list) -> None:
        super().__init__()
        self.model = model
        self.names = [t.name for t in tasks if t.inference]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(images.to(torch.float32) / 255)
        return tuple(out[n].float() for n in self.names)


def exported_info(info: ModelInfo, fmt: Any, **extra: Any) -> ModelInfo:
    """The source's ModelInfo with what the export adds (format, precision, options), inference tasks only."""
    from .. import __version__
    from ..inference.model_files import DIGEST_KEY
    from ..tasks import build_task

    tasks = [t for t in info.tasks if build_task(t).inference]
    kept = {k: v for k, v in info.extra.items() if k != DIGEST_KEY}  # each exporter records its own file's
    # the facemtl that wrote it: a reader that cannot parse the metadata can then say "newer facemtl"
    return ModelInfo(info.name, info.version, tasks, info.image_size, info.mean, info.std,
                     {**kept, "format": fmt.name, "precision": fmt.precision, "facemtl_version": __version__,
                      **extra})


def info_json(info: ModelInfo) -> str:
    return json.dumps(info.to_dict(), default=str)


def with_extra(text: str, **extra: Any) -> str:
    """ModelInfo JSON ``text`` with ``extra`` set in its ``extra`` (the metadata of a written
    file edited in place: the weights' digest, a failed check)."""
    d = json.loads(text)
    d.setdefault("extra", {}).update(extra)
    return json.dumps(d, default=str)


def with_check_failed(text: str, failed: dict[str, Any]) -> str:
    """ModelInfo JSON ``text`` with ``extra.check_failed`` set: an export kept with ``--force``
    although it failed its check says so, and why, in its own metadata."""
    return with_extra(text, check_failed=failed)


#: The opset from which torch's default exporter (``torch.export``-based) writes the graph; below
#: it, the TorchScript exporter does (the default one wrote opset 18 whatever was asked, its
#: conversion down failing inside, and the file was labelled with the opset asked for).
DYNAMO_MIN_OPSET = 18


def to_onnx(source: Any, out: str, opset: int) -> None:
    """Write the source runtime's network as one ONNX file (no external data) with a dynamic batch
    axis, at ``opset`` (:data:`DYNAMO_MIN_OPSET` and up with torch's default exporter, below it
    with its TorchScript exporter, which an older runtime such as TensorRT 8 may need);
    ``ValueError`` in one sentence if the file holds another opset."""
    import contextlib
    import io
    import logging
    import warnings

    # "torchvision is not installed. Skipping torchvision::nms": true and irrelevant here
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)

    net = ExportNet(source.model, source.tasks).cpu().eval()
    s = source.info.image_size
    example = torch.zeros((2, 3, s, s), dtype=torch.uint8)
    # the exporter prints its progress on stdout, which is where --json answers go
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if opset < DYNAMO_MIN_OPSET:
            torch.onnx.export(net, (example,), out, input_names=["images"], output_names=net.names,
                              dynamic_axes={n: {0: "batch"} for n in ["images", *net.names]},
                              opset_version=opset, dynamo=False, verbose=False)
        else:
            torch.onnx.export(net, (example,), out, input_names=["images"], output_names=net.names,
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
                              opset_version=opset, external_data=False, verbose=False)
    written = onnx_opset(out)
    if written != opset:
        raise ValueError(f"torch's ONNX exporter wrote opset {written}, not the {opset} asked for (it could not "
                         f"convert the graph); choose --opset {written}")


def onnx_opset(path: str) -> int | None:
    """The default-domain opset an ONNX file declares (``None`` if it declares none)."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
