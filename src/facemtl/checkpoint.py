"""The checkpoint file: a plain dict of tensors, numbers, strings, lists and dicts.

``last.pt`` holds everything ``--resume`` needs, ``best.pt`` what inference needs;
both carry the resolved config and the task specs, so a checkpoint alone rebuilds its
model (:func:`facemtl.model.load_model`) without the YAML file that trained it.

Files are read with ``torch.load(weights_only=True)``: PyTorch's restricted unpickler
accepts tensors and plain containers only, so a model file from anywhere cannot run
code on this machine; a file that is not a facemtl checkpoint is refused in one sentence.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

#: The ``format`` key every facemtl checkpoint carries.
FORMAT = "facemtl-1"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` (plain values and tensors only) to ``path`` atomically.

    A run killed mid-save leaves the previous file intact: the new one is written
    beside it, flushed to the disk (``fsync``: a power cut after the rename must not leave a
    file whose blocks were never written) and renamed over it. A write the machine refuses is an
    :class:`OSError` naming ``path`` (PyTorch reports a full disk as ``RuntimeError: ...
    unexpected pos``); the partial file is removed then, and on any other interruption (Ctrl-C).
    """
    import torch

    path = Path(path)
    tmp = path.with_suffix(".tmp")
    if isinstance(state.get("model"), dict):  # the weights' digest: load_checkpoint checks it
        state = {**state, DIGEST_KEY: weights_digest(state["model"])}
    try:
        torch.save({"format": FORMAT, **state}, tmp)
        _flush_to_disk(tmp)
    except RuntimeError as exc:  # PyTorch's zip writer: a short write surfaces as "unexpected pos"
        tmp.unlink(missing_ok=True)
        kept = f" (the earlier {path.name} is kept)" if path.exists() else ""
        if shutil.disk_usage(path.parent).free < 64 << 20:
            raise OSError(errno.ENOSPC, f"No space left on device{kept}", str(path)) from exc
        raise OSError(errno.EIO, f"The write failed, {exc}{kept}", str(path)) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


#: Suffixes of the files ``facemtl export`` writes (ONNX, OpenVINO IR, TensorRT engine): not checkpoints.
EXPORTED_SUFFIXES = (".onnx", ".xml", ".bin", ".engine")


def _numpy_float_scalars() -> list[Any]:
    """What unpickling a NumPy float scalar calls: its reconstructor and its dtype (data, no code)."""
    import numpy as np

    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    return [multiarray.scalar, np.dtype, type(np.dtype(np.float64))]


def _flush_to_disk(path: Path) -> None:
    """``fsync`` the file (its pages, whichever descriptor asks; opened for writing, which some
    systems require); a file system that cannot (``EINVAL``, ``ENOTSUP``: some network and FUSE
    mounts) is left to its own flushing."""
    with open(path, "r+b") as fh:
        try:
            os.fsync(fh.fileno())
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, getattr(errno, "ENOTSUP", errno.EINVAL), errno.EOPNOTSUPP):
                raise


#: The key under which a checkpoint records :func:`weights_digest` of its ``model`` weights.
DIGEST_KEY = "model_sha256"


def weights_digest(weights: dict[str, Any]) -> str:
    """SHA-256 of a state dict's tensors: each name, dtype, shape and bytes, in name order.

    PyTorch's reader checks a file's structure, not its bytes (a bit flipped in a weight loads
    as another weight: tested), so facemtl records this when it saves and checks it when it
    loads. 24 ms for the shipped Lite0's 13.4 MB of weights on the 2-core AMD development CPU
    (measured 2026-11-27 with weights_digest on utkface_lite0.pt's state)."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for name in sorted(weights):
        t = weights[name]
        if not hasattr(t, "detach"):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _looks_like_torch(path: Path) -> bool:
    """Whether ``path`` starts as ``torch.save`` files do: a zip archive (PyTorch 1.6 on), or a
    pickle (the legacy format, protocol 2 and up: ``0x80`` then the protocol number)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint without running any code from it (see the module docstring)."""
    import pickle

    import torch

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give the checkpoint in it (a run folder holds best.pt and last.pt)")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix.lower() in EXPORTED_SUFFIXES:
        raise ValueError(f"{path} is an exported model file; this needs the .pt checkpoint it was exported from "
                         "(facemtl train writes best.pt and last.pt)")
    try:
        # NumPy float scalars are data: last.pt files of cosine runs written before 2026-11-27
        # hold np.float64 learning rates (the schedule's factor), which weights_only refuses
        with torch.serialization.safe_globals(_numpy_float_scalars()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" not in str(exc).lower() or not _looks_like_torch(path):
            # not a PyTorch file at all (text, an image, random bytes: a user test's junk file read
            # "it holds Python objects other than weights")
            raise ValueError(f"{path} is not a facemtl model file (not a PyTorch file)") from None
        raise ValueError(f"{path} is not a facemtl model file: it holds Python objects other than weights, "
                         "which facemtl refuses to load") from None
    except Exception as exc:  # a truncated or foreign file: the reader's own words, not its exception's name
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0][:160]
        raise ValueError(f"{path} is not a readable facemtl checkpoint: not a PyTorch file, or a damaged one "
                         f"({why})") from None
    fmt = state.get("format") if isinstance(state, dict) else None
    if isinstance(fmt, str) and fmt.startswith("facemtl-") and fmt != FORMAT:
        raise ValueError(f"{path} is a {fmt} checkpoint, and this facemtl reads {FORMAT}: it was written by another "
                         "facemtl version (upgrade facemtl to read a newer one)")
    if fmt != FORMAT:
        raise ValueError(f"{path} is not a facemtl checkpoint")
    recorded = state.get(DIGEST_KEY)  # (checkpoints written before 2026-11-27 record none)
    if recorded and isinstance(state.get("model"), dict) and weights_digest(state["model"]) != recorded:
        raise ValueError(f"{path} is damaged: its weights are not those it recorded when saved (bits changed on the "
                         "disk or in a copy); use another copy")
    return state
