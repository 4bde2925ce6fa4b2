"""The in-memory training cache: every image decoded once, resized square, as one uint8 tensor.

21k UTKFace faces at 112 px take 0.8 GB; augmentation then runs on whole batches (see
:mod:`facemtl.data.augment`), so a 2-core machine spends its cores on the network, not
on JPEG decoding. Decoding itself is :func:`facemtl.images.load_rgb`.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from ..images import load_rgb


def read_image(path: str, size: int | None = None):
    """``(H, W, 3) uint8`` of a training image: a file, or a face in WebDataset shards
    (``shards:<DIR>#<index>``, :mod:`facemtl.data.shards`)."""
    from .shards import is_shard, read_bytes

    if is_shard(path):
        import io

        return load_rgb(io.BytesIO(read_bytes(path)), size)
    return load_rgb(path, size)


class _Decode(Dataset):
    def __init__(self, paths: list[str], size: int) -> None:
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        """``(image (3, size, size) uint8, "")``, or a black image and why the file cannot be read
        (the caller decides: here, in a worker process, a raised error would reach the user as
        a traceback of the worker)."""
        try:
            return decoded(self.paths[i], self.size), ""
        except (OSError, ValueError) as exc:
            return torch.zeros((3, self.size, self.size), dtype=torch.uint8), str(exc) or type(exc).__name__


def decoded(path: str, size: int) -> torch.Tensor:
    """``(3, size, size) uint8`` of a training image (see :func:`read_image`)."""
    return torch.from_numpy(read_image(path, size)).permute(2, 0, 1)


def decode_all(paths: list[str], size: int, workers: int = 2, progress: bool = False,
               unreadable: list[tuple[int, str]] | None = None) -> torch.Tensor:
    """Decode every image into one ``(N, 3, size, size) uint8`` tensor, using ``workers`` processes.

    A file that cannot be read is a ``RuntimeError`` naming it, unless ``unreadable`` is given:
    then its row stays black and ``(row, why)`` is appended there for the caller to mask."""
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    if not paths:
        return out
    loader = DataLoader(_Decode(paths, size), batch_size=256, num_workers=workers if len(paths) > 512 else 0)
    it = loader
    if progress:
        from tqdm import tqdm

        it = tqdm(loader, desc=f"decoding {len(paths)} images", unit="batch", leave=False)
    i = 0
    for batch, why in it:
        out[i : i + len(batch)] = batch
        for k, w in enumerate(why):
            if w and unreadable is None:
                raise RuntimeError(f"cannot read image {paths[i + k]}: {w}")
            if w:
                unreadable.append((i + k, w))
        i += len(batch)
    return out
