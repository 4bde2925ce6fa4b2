"""From aligned face crops to the network's input: one definition for training, export and runtimes.

The network's input is a batch of crops as ``uint8 (N, 3, S, S)``, RGB, channels first.
:func:`to_input` scales it to [0, 1] floats for a PyTorch :class:`~facemtl.model.MultiTaskNet`
(training and the ``.pt`` runtime), which normalises with its backbone's mean and standard
deviation inside itself (:meth:`~facemtl.model.MultiTaskNet.features`); an exported network
takes the ``uint8`` batch and does both inside itself (``ExportNet``). So no runtime
normalises on its own, and the numbers never drift apart between PyTorch, ONNX Runtime and
OpenVINO.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def to_batch(crops: Sequence[np.ndarray] | np.ndarray, size: int | None = None) -> np.ndarray:
    """Aligned crops ``(S, S, 3) uint8`` (a list or an ``(N, S, S, 3)`` array) -> ``uint8 (N, 3, S, S)``.

    ``size``: the side the model expects; a crop of another size is a ``ValueError``.
    """
    if not isinstance(crops, np.ndarray):
        shapes = [np.shape(c) for c in crops]
        odd = next((i for i, sh in enumerate(shapes) if sh != shapes[0]), None)
        if odd is not None:  # NumPy's own words were "setting an array element with a sequence"
            want = f"{size}x{size}x3" if size is not None else "one shape"
            raise ValueError(f"crops must all be {want}: crop {odd} is {'x'.join(map(str, shapes[odd]))}, "
                             f"crop 0 {'x'.join(map(str, shapes[0]))}")
    batch = np.asarray(crops) if not isinstance(crops, np.ndarray) else crops
    if batch.ndim != 4 or batch.shape[3] != 3:
        raise ValueError(f"crops must be (N, S, S, 3) RGB, not {tuple(batch.shape)}")
    if size is not None and batch.shape[1:3] != (size, size):
        raise ValueError(f"crops must be {size}x{size} pixels, not {batch.shape[2]}x{batch.shape[1]}")
    if batch.dtype != np.uint8:
        raise ValueError(f"crops must be uint8, not {batch.dtype}")
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def to_input(images, device=None, channels_last: bool = False):
    """``uint8 (N, 3, H, W)`` tensor -> float in [0, 1] on ``device`` (channels-last when asked).

    The PyTorch side of the same definition: training, evaluation, the PyTorch runtime and
    export all call this. On a GPU the batch goes through pinned memory, so the copy
    does not stall the host.
    """
    import torch

    from .device import to_device

    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    x = to_device(images, torch.device(device or "cpu")).float().div_(255)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
