"""The predictor: aligned face crops in, every task's decoded answer out.

The only code that calls a network at inference. It owns a runtime (PyTorch, ONNX
Runtime, ...: see :mod:`facemtl.inference.runtimes`) and the model's tasks, which decode
the runtime's raw outputs on NumPy, the same way for every runtime.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..preprocess import to_batch
from ..tasks.base import answers_of
from .results import TaskAnswer
from .runtimes import open_runtime

#: The model that ships inside the package (see MODEL_CARD.md), and the same network as a
#: training checkpoint (its data config and seed: what ``facemtl export`` and the synthetic
#: test videos read).
DEFAULT_MODEL = "utkface_lite0.onnx"
DEFAULT_CHECKPOINT = "utkface_lite0.pt"


def default_model_path(name: str = DEFAULT_MODEL) -> Path:
    """The shipped model file ``name`` inside the installed package."""
    path = Path(str(resources.files("facemtl") / "weights" / name))
    if not path.is_file():
        raise FileNotFoundError(f"the default model {path} is missing from this installation")
    return path


class Predictor:
    """Batches of aligned ``(S, S, 3) uint8`` crops -> per crop ``{task: TaskAnswer}``.

    ``batch_size``: crops per network call. ``interval``: central probability mass of the
    interval numeric tasks report (0.8: from the 10th to the 90th percentile). One predictor
    serves many threads at once (answers as sequential ones); it cannot be pickled (its
    runtime's session), so a process pool loads one per process (:func:`load_predictor` in the
    pool's initializer).
    """

    def __init__(self, runtime: Any, batch_size: int = 64, interval: float = 0.8) -> None:
        if not 0 < interval < 1:
            raise ValueError(f"interval must be between 0 and 1, not {interval}")
        self.runtime = runtime
        self.info = runtime.info
        self.tasks = self.info.build_tasks()
        self.size = self.info.image_size
        self.batch_size = batch_size
        self.interval = interval

    def raw(self, crops: Sequence[np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
        """The runtime's raw outputs ``{task: (N, D)}`` for ``(S, S, 3)`` crops, in batches."""
        crops = _crop_list(crops)
        return self.raw_images(to_batch(crops, self.size) if len(crops) else np.zeros((0, 3, self.size, self.size), np.uint8))

    def raw_images(self, images: np.ndarray, tta: str = "none") -> dict[str, np.ndarray]:
        """Raw outputs ``{task: (N, D)}`` for network input ``uint8 (N, 3, S, S)``, in batches.

        ``tta="flip"``: the mean of each face's outputs and its mirror image's (as
        ``facemtl evaluate --tta flip`` does with a checkpoint).
        """
        if tta not in ("none", "flip"):
            raise ValueError(f"unknown test-time augmentation {tta!r}; choose none or flip")
        parts: dict[str, list[np.ndarray]] = {t.name: [] for t in self.tasks}
        for i in range(0, len(images), self.batch_size):
            batch = np.ascontiguousarray(images[i : i + self.batch_size])
            out = self.runtime.run(batch)
            if tta == "flip":
                mirrored = self.runtime.run(np.ascontiguousarray(batch[:, :, :, ::-1]))
                out = {k: (out[k] + mirrored[k]) / 2 for k in out}
            for t in self.tasks:
                parts[t.name].append(out[t.name])
        # (no crop: (0, D) all the same, so batches concatenate; it was (0, 0))
        return {t.name: np.concatenate(parts[t.name]) if parts[t.name] else np.zeros((0, t.output_size), np.float32)
                for t in self.tasks}

    def predict(self, crops: Sequence[np.ndarray] | np.ndarray) -> list[dict[str, TaskAnswer]]:
        """Every task's answer for each crop (an ``(S, S, 3) uint8`` array or an RGB PIL image), in order."""
        crops = _crop_list(crops)
        if len(crops) == 0:
            return []
        raw = self.raw(crops)
        per_task = {t.name: answers_of(t, raw[t.name], self.interval) for t in self.tasks}
        return [{name: answers[j] for name, answers in per_task.items()} for j in range(len(crops))]


def _crop_list(crops: Any) -> Any:
    """``crops`` as arrays: an ``(N, S, S, 3)`` array as it is, a list's PIL images as arrays; one
    image alone is a ``ValueError`` saying to wrap it (its rows would be read as crops)."""
    if isinstance(crops, np.ndarray):
        return crops
    if hasattr(crops, "getbands"):  # a PIL image, not a list of them
        raise ValueError("predict takes a list of aligned crops: wrap one image in a list, predict([image])")
    return [np.asarray(c) for c in crops]


def load_predictor(model: str | Path | Sequence[str | Path] | None = None, runtime: str | None = None,
                   device: str = "auto", batch_size: int = 64, interval: float = 0.8,
                   threads: int | None = None) -> Predictor:
    """A :class:`Predictor` for the model file ``model`` (default: the shipped model).

    ``model`` may be a list of model files: an ensemble, the mean of their networks' raw
    outputs (:class:`~facemtl.inference.runtimes.ensemble.EnsembleRuntime`; one file is that
    file). ``runtime``: a name from :data:`~facemtl.inference.runtimes.RUNTIMES`; default:
    chosen by each file's suffix. ``threads``: the runtime's intra-op threads.
    """
    import numbers

    def whole(n: Any) -> bool:
        return isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 1

    if threads is not None and not whole(threads):
        raise ValueError(f"threads must be a whole number of at least 1 (or None: one per core), not {threads!r}")
    if not whole(batch_size):
        raise ValueError(f"batch_size must be a whole number of at least 1, not {batch_size!r}")
    threads, batch_size = (None if threads is None else int(threads)), int(batch_size)
    models = [model] if model is None or isinstance(model, (str, Path)) else list(model)
    paths = [Path(m) if m is not None else default_model_path() for m in models]
    if not paths:
        raise ValueError("no model file was given")
    for path in paths:
        if path.is_dir():
            raise ValueError(f"{path} is a folder; give the model file in it (a .pt, .onnx or .xml; a run folder "
                             "holds best.pt)")
        if not path.is_file():
            raise FileNotFoundError(f"model file {path} does not exist")
    runtimes = [open_runtime(p, runtime, device=device, threads=threads) for p in paths]
    if len(runtimes) == 1:
        return Predictor(runtimes[0], batch_size, interval)
    from .runtimes.ensemble import EnsembleRuntime

    return Predictor(EnsembleRuntime(runtimes, member_labels(paths)), batch_size, interval)


def member_labels(paths: Sequence[str | Path]) -> list[str]:
    """How an ensemble's members are named: their file names, or, when two share one (runs'
    ``best.pt`` files), as many of their last folders as tell them apart for every member
    (``proposed/seed0/best.pt`` beside ``equal/seed0/best.pt``: ``seed0/best.pt`` twice named
    neither, a user test); the same file given twice is named with its folder."""
    paths = [Path(p) for p in paths]
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    deepest = max(len(p.parts) for p in paths)
    for k in range(2, deepest + 1):
        labels = [str(Path(*p.parts[-k:])) for p in paths]
        if len(set(labels)) == len(set(str(p) for p in paths)):
            return labels
    return [str(p) for p in paths]
