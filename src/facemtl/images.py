"""Image decoding shared by training and inference: any file, PIL image or array -> RGB uint8.

No torch here: the inference install reads images with Pillow and NumPy only.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps


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


def open_image(image: Any) -> np.ndarray:
    """A path, a PIL image or an array -> ``(H, W, 3) uint8`` RGB.

    Arrays are taken as RGB (or grayscale ``(H, W)``, or RGBA); float arrays in [0, 1]
    are scaled to 0..255.
    """
    if isinstance(image, (str, Path)):
        return load_rgb(str(image))
    if isinstance(image, Image.Image):
        return np.asarray(to_rgb(image), dtype=np.uint8)
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = np.clip(arr * 255 if arr.max() <= 1.0 else arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, 2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4), not {arr.shape}")
    if arr.shape[2] == 4:
        return np.asarray(to_rgb(Image.fromarray(arr, "RGBA")))
    return np.ascontiguousarray(arr)


def describe_error(exc: BaseException) -> str:
    """One line saying why an image could not be used."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "cannot identify image file" in text:
        return "not an image (or a format Pillow cannot read)"
    return text
