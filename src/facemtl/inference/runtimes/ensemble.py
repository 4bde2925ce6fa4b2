"""Several networks run as one: the mean of their raw outputs (an ensemble).

Networks trained apart (another seed, another input size) err apart, so the mean of their
outputs errs less: on the shipped model's 2,105 validation faces, the 160 px network, the
shipped 112 px INT8 network and a second 112 px seed read age MAE 4.87 together against
5.07 to 5.28 alone (``docs/results/ensemble_choice_val.json``). The accurate variant
(``analyze --accurate``) runs such an ensemble; a
:class:`~facemtl.inference.predictor.Predictor` over an :class:`EnsembleRuntime` is used
like any other.

Not a row of :data:`~facemtl.inference.runtimes.RUNTIMES`, which picks a runtime by a file's
suffix: an ensemble is a list of model files, each opened by its own runtime
(:func:`~facemtl.inference.predictor.load_predictor` given a list builds one).

The mean is taken over raw outputs ``{task: (N, D)}``, as test-time flipping
(:meth:`Predictor.raw_images`) does, so every task decodes the mean the way it decodes one
network's outputs (an ordinal task's threshold logits, a nominal task's class logits).
"""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

import numpy as np

from ..model_info import ModelInfo


def resize_batch(batch: np.ndarray, size: int) -> np.ndarray:
    """``uint8 (N, 3, S, S)`` -> ``uint8 (N, 3, size, size)``: Pillow's bilinear filter (with
    ``reducing_gap=2``), the filter that makes every crop network input
    (:func:`facemtl.images.read_square`, the pipeline's resize of an aligned crop)."""
    from PIL import Image

    if batch.shape[2:] == (size, size):
        return batch
    out = np.empty((len(batch), 3, size, size), np.uint8)
    for i, chw in enumerate(batch):
        im = Image.fromarray(np.ascontiguousarray(chw.transpose(1, 2, 0)))
        out[i] = np.asarray(im.resize((size, size), Image.BILINEAR, reducing_gap=2.0)).transpose(2, 0, 1)
    return out


#: Task settings that shape training or the report's groups, not what a network's outputs mean:
#: networks that differ in them answer alike (a model of the CORAL range trained before its
#: bias bands changed joins one trained after).
NOT_ANSWERING = ("group_edges", "bias_edges", "importance", "mean_variance", "reduction", "loss_fn")


def _answering(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k not in NOT_ANSWERING}


class EnsembleRuntime:
    """The mean of ``runtimes``' raw outputs on batches of ``uint8 (N, 3, S, S)`` crops.

    ``S`` is the largest member's input side: a member that reads smaller crops gets the
    batch resized to its side (:func:`resize_batch`; the pipeline aligns faces at ``S``).
    Members must answer the same tasks with the same specs (classes, ranks, decoding); a
    ``ValueError`` says which differ. ``info``: the first member's tasks, data settings and
    seed (so its split: :func:`facemtl.data.model_data.model_data` rebuilds it), the
    ensemble's side, a version made of the members'; ``extra["ensemble"]`` lists the
    members, ``extra["format"]`` is ``"ensemble"``. Facts of one file (its epoch, opset,
    source) are left out: they are in each member's own file.
    """

    name = "ensemble"

    def __init__(self, runtimes: Sequence[Any], labels: Sequence[str] | None = None) -> None:
        if len(runtimes) < 2:
            raise ValueError("an ensemble needs at least two networks")
        labels = list(labels or [f"network {i + 1}" for i in range(len(runtimes))])
        first = runtimes[0].info
        specs = {t.name: _answering(t.to_dict()) for t in first.build_tasks()}
        for label, rt in zip(labels[1:], runtimes[1:]):
            other = {t.name: _answering(t.to_dict()) for t in rt.info.build_tasks()}  # by name: order does not matter
            lacks, extra = sorted(set(specs) - set(other)), sorted(set(other) - set(specs))
            diff = sorted(k for k in specs if k in other and specs[k] != other[k])
            why = (f"it has no task {lacks[0]!r}" if lacks else f"it answers a task {extra[0]!r} {labels[0]} has not"
                   if extra else f"task {diff[0]!r} differs" if diff else "")
            if why:
                raise ValueError(f"{label} cannot join the ensemble of {labels[0]}: {why} (every network must "
                                 "answer the same tasks, with the same classes and ranks)")
        self.runtimes = list(runtimes)
        self.outputs = list(specs)  # the answering tasks: a checkpoint also returns its training-only heads'
        self.precision = "+".join(dict.fromkeys(rt.precision for rt in runtimes))
        size = max(rt.info.image_size for rt in runtimes)
        members = [{"file": label, "name": rt.info.name, "version": rt.info.version,
                    "image_size": rt.info.image_size, "runtime": rt.name, "precision": rt.precision}
                   for label, rt in zip(labels, runtimes)]
        version = hashlib.sha256("+".join(m["version"] for m in members).encode()).hexdigest()[:12]
        split = {k: first.extra[k] for k in ("data", "data_root", "seed", "split_tasks") if k in first.extra}
        if isinstance(split.get("data"), dict):  # its faces decoded at the ensemble's side (the split is the same)
            split["data"] = {**split["data"], "image_size": size}
        name = " + ".join(rt.info.name for rt in runtimes)
        if len(name) > 120:  # it names results in the database (200 characters at most there)
            name = f"ensemble of {len(runtimes)}: {first.name} + ..."
        self.info = ModelInfo(name, version, first.tasks, size,
                              first.mean, first.std,
                              {**split, "format": "ensemble", "precision": self.precision, "ensemble": members})
        self.device = getattr(runtimes[0], "device", "cpu")

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``uint8 (N, 3, S, S)`` -> ``{task: float32 (N, D)}``, the members' mean."""
        total: dict[str, np.ndarray] = {}
        for rt in self.runtimes:
            out = rt.run(resize_batch(batch, rt.info.image_size))
            for k in self.outputs:
                total[k] = total[k] + out[k] if k in total else np.asarray(out[k], np.float32).copy()
        return {k: (v / len(self.runtimes)).astype(np.float32) for k, v in total.items()}

