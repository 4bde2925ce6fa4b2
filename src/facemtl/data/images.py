"""Image decoding for training and evaluation, and the in-memory cache.

Training images are decoded once, resized to ``size x size`` and kept as one
``uint8`` tensor ``(N, 3, size, size)`` (21k UTKFace faces at 112 px take 0.8 GB);
augmentation then runs on whole batches (see :mod:`facemtl.data.augment`), so a
2-core machine spends its cores on the network, not on JPEG decoding.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset


# Images larger than this many pixels are refused rather than decoded (450 MB as RGB);
# Pillow itself refuses twice its MAX_IMAGE_PIXELS (about 179 M) as a decompression bomb.
MAX_PIXELS = 150_000_000


def to_rgb(im: Image.Image) -> Image.Image:
    """EXIF orientation applied; grayscale, palette, CMYK and alpha images turned into RGB.

    Transparent pixels are composited onto white.
    """
    im = ImageOps.exif_transpose(im)
    if im.mode == "RGB":
        return im
    if im.mode in ("RGBA", "LA", "PA", "P"):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return im.convert("RGB")


def load_rgb(path: str, size: int | None = None) -> np.ndarray:
    """Decode ``path`` (EXIF orientation applied, any mode -> RGB), optionally resized square.

    Returns ``(H, W, 3) uint8``. Raises ``OSError`` / ``ValueError`` on unreadable files
    and ``ValueError`` for images over :data:`MAX_PIXELS`.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
        except Image.DecompressionBombError as exc:
            raise ValueError(str(exc)) from None
    with im:
        if im.size[0] * im.size[1] > MAX_PIXELS:
            raise ValueError(f"image of {im.size[0]}x{im.size[1]} pixels is over the {MAX_PIXELS:,}-pixel limit")
        if size is not None and im.format == "JPEG":
            im.draft("RGB", (size, size))  # let libjpeg decode at a reduced scale when it can
        im = to_rgb(im)
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR, reducing_gap=2.0)
        return np.asarray(im, dtype=np.uint8).copy()


class _Decode(Dataset):
    def __init__(self, paths: list[str], size: int) -> None:
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        try:
            arr = load_rgb(self.paths[i], self.size)
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"cannot read image {self.paths[i]}: {exc}") from None
        return torch.from_numpy(arr).permute(2, 0, 1)


def decode_all(paths: list[str], size: int, workers: int = 2, progress: bool = False) -> torch.Tensor:
    """Decode every image into one ``(N, 3, size, size) uint8`` tensor, using ``workers`` processes."""
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    if not paths:
        return out
    loader = DataLoader(_Decode(paths, size), batch_size=256, num_workers=workers if len(paths) > 512 else 0)
    it = loader
    if progress:
        from tqdm import tqdm

        it = tqdm(loader, desc=f"decoding {len(paths)} images", unit="batch", leave=False)
    i = 0
    for batch in it:
        out[i : i + len(batch)] = batch
        i += len(batch)
    return out
