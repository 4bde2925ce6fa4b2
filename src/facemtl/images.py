"""Image decoding shared by training and inference: any file, PIL image or array -> RGB uint8.

No torch here: the inference install reads images with Pillow and NumPy only.
"""

from __future__ import annotations

import errno
import io
import os
import threading
import warnings
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps

# Images larger than this many pixels are refused rather than decoded (450 MB as RGB);
# Pillow itself refuses twice its MAX_IMAGE_PIXELS (about 179 M) as a decompression bomb.
MAX_PIXELS = 150_000_000

#: ``warnings.catch_warnings()`` swaps the process-wide filter list and puts back the one it saw on
#: entry: two threads inside it at once let Pillow's warning through, or left the "ignore" in place
#: for good (serve decodes uploads in several threads; a review saw both in 12 and 13 of 30 runs).
_WARNINGS_LOCK = threading.Lock()

#: The formats decoded, by Pillow's names; a file in any other format Pillow knows (EPS, which
#: runs Ghostscript; PSD, FITS, ...) is refused as not an image, whatever its name says. HEIF
#: when a plugin registers it (``pillow_heif.register_heif_opener()``); facemtl does not.
PHOTO_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "PPM", "AVIF", "JPEG2000", "QOI", "TGA", "HEIF")


#: Modes Pillow gives images of more than 8 bits per sample (16-bit PNG and TIFF, 32-bit
#: integer and float TIFF); :func:`to_rgb` scales them to 8 bits instead of clipping.
DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """Pixel values of any dtype as ``uint8``, scaled by what the dtype means, never clipped.

    ``uint8``: as is. ``bool``: 0 / 255. Other integers (``uint16`` included): 8-bit when
    they all lie in 0..255 (8-bit data in a wider type; a 16-bit image that dark would be
    black), else 16-bit when in 0..65535, ``round(v / 257)`` (65535 -> 255).
    Floats: 0..1 when they all lie in 0..2 (scaled by 255; values past 1, which resampling
    such as Lanczos leaves near edges, are clipped to white), else 0..255 (past 255, up to
    320, clipped the same way). Anything else (a negative value, NaN, a value past 65535 or
    a float past 320) is a ``ValueError``: there is no way to tell how such values would look.
    """
    arr = np.asarray(arr)
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if arr.dtype.kind not in "uif":
        raise ValueError(f"an image array must hold numbers, not {arr.dtype}")
    if arr.size == 0:
        return arr.astype(np.uint8)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError("image values must be finite numbers; this array holds NaN (not a number) or infinity")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0:
        raise ValueError(f"image values must not be negative (this array's lowest is {lo:g})")
    if arr.dtype.kind == "f":
        if hi > 320:
            raise ValueError(f"float image values must lie in 0..1 or 0..255 (this array's highest is {hi:g})")
        return np.rint(np.minimum(arr * 255 if hi <= 2.0 else arr, 255)).astype(np.uint8)
    if hi > 255:
        if hi > 65535:
            raise ValueError(f"integer image values must lie in 0..255 (8-bit) or 0..65535 (16-bit); this array's "
                             f"highest is {hi:g}")
        return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return arr.astype(np.uint8)


def _oriented(im: Image.Image) -> Image.Image:
    """EXIF orientation applied (without the full copy Pillow makes when there is none)."""
    if im.getexif().get(0x0112, 1) in (None, 1):
        return im
    return ImageOps.exif_transpose(im)


def to_rgb(im: Image.Image) -> Image.Image:
    """EXIF orientation applied; grayscale, palette, CMYK, alpha and 16-bit / 32-bit images
    turned into 8-bit RGB (deep ones scaled by :func:`to_uint8`, never clipped).

    Transparent pixels are composited onto white.
    """
    im = _oriented(im)
    if im.mode == "RGB":
        return im
    if im.mode in DEEP_MODES:
        gray = to_uint8(np.asarray(im))
        return Image.fromarray(np.repeat(gray[:, :, None], 3, 2), "RGB")
    if im.mode in ("RGBA", "LA", "PA", "P"):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return im.convert("RGB")


def _upright_size(im: Image.Image) -> tuple[int, int]:
    """``(width, height)`` of ``im`` as shown, after EXIF orientation (without decoding it)."""
    w, h = im.size
    return (h, w) if im.getexif().get(0x0112, 1) in (5, 6, 7, 8) else (w, h)  # stored rotated by 90 degrees


def is_open_file(image: Any) -> bool:
    """Whether ``image`` is an open binary file (what Pillow reads: ``read``, ``seek``, ``tell``)."""
    return all(hasattr(image, m) for m in ("read", "seek", "tell"))


def _open(path: str | Path | IO[bytes]) -> Image.Image:
    """``Image.open`` (of a path or a binary file object) with the size limit and the empty-file
    case said in one sentence."""
    at = 0
    if isinstance(path, (str, Path)):
        empty = os.path.getsize(path) == 0
    else:  # an open file, read from where it stands
        at = path.tell()
        empty = path.seek(0, os.SEEK_END) == at
        path.seek(at)
    if empty:
        raise ValueError("empty file")
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            Image.init()  # (plugins register on first use: the formats below must be known)
            im = Image.open(path, formats=[f for f in PHOTO_FORMATS if f in Image.OPEN])
        except Image.UnidentifiedImageError:
            if not isinstance(path, (str, Path)):
                path.seek(at)  # (Pillow's failed tries left it elsewhere: an upload's bytes, say)
            other = _other_format(path)
            if other is None:
                raise
            raise ValueError(f"the file is in the {other} format: facemtl decodes photo formats only "
                             f"({', '.join(PHOTO_FORMATS[:6])}, ...); convert it to one of them") from None
        except Image.DecompressionBombError:  # Pillow's own words: "... could be decompression bomb DOS attack"
            raise ValueError(f"image too large: over the {MAX_PIXELS:,}-pixel limit") from None
    if im.size[0] * im.size[1] > MAX_PIXELS:
        im.close()
        raise ValueError(f"image of {im.size[0]}x{im.size[1]} pixels is over the {MAX_PIXELS:,}-pixel limit")
    return im


def _other_format(path: str | Path | IO[bytes]) -> str | None:
    """The format Pillow would read ``path`` in when it is not one of :data:`PHOTO_FORMATS`, as
    Pillow's plugins recognise it from its first bytes (none is loaded: EPS's Ghostscript runs
    only on load); ``None`` when no plugin recognises it."""
    if isinstance(path, (str, Path)):
        with open(path, "rb") as f:
            head = f.read(64)
    else:
        at = path.tell()
        head = path.read(64)
        path.seek(at)
    for fmt, (_, accept) in Image.OPEN.items():
        if fmt not in PHOTO_FORMATS and accept is not None:
            try:
                if accept(head):
                    return fmt
            except Exception:  # a plugin's own check on too few bytes
                continue
    return None


def load_rgb(path: str | Path | IO[bytes], size: int | None = None) -> np.ndarray:
    """Decode ``path`` (EXIF orientation applied, any mode -> RGB), optionally resized square.

    Returns ``(H, W, 3) uint8``. Raises ``OSError`` / ``ValueError`` on unreadable files
    and ``ValueError`` for images over :data:`MAX_PIXELS`.
    """
    if size is not None:
        return read_square(path, size)[0]
    with _open(path) as im:
        return np.asarray(to_rgb(im), dtype=np.uint8).copy()


def read_square(path: str | Path | IO[bytes], size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """``(rgb, (width, height))``: ``path`` decoded and resized to ``(size, size, 3) uint8``, and
    the image's own size (after EXIF orientation).

    The one way a face crop becomes network input from a file, in training (the decoded-image
    cache, the streamed reader) and in ``analyze --aligned``, so both see the same pixels:
    JPEGs decode at a reduced scale when libjpeg can stay at or above ``size`` (draft mode),
    then Pillow's bilinear filter (with ``reducing_gap=2``) resizes. Resizing in Pillow
    before the array is made also copies a quarter of the pixels a full-size array would
    (``analyze --aligned`` on 200 px crops: 0.41 ms a crop instead of 0.52).
    """
    with _open(path) as im:
        w, h = _upright_size(im)
        if im.format == "JPEG":
            im.draft("RGB", (size, size))  # let libjpeg decode at a reduced scale when it can
        im = to_rgb(im)
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR, reducing_gap=2.0)
        return np.asarray(im, dtype=np.uint8).copy(), (w, h)


def read_image(image: Any, keep_side: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """``(rgb, (width, height))``: the pixels to search, and the size of the whole image
    (after EXIF orientation), in whose pixels results are given.

    ``keep_side``: for files (paths, open binary files, the bytes of a file), decode large
    images reduced, keeping at least this many pixels on the long side: JPEGs at 1/2, 1/4 or
    1/8 scale straight from the file
    (libjpeg's draft mode: the full image is never held), other formats decoded whole and
    shrunk by a whole factor at once (:meth:`PIL.Image.Image.reduce`). ``rgb`` is then
    smaller than ``(width, height)`` by a factor the caller reads off the two.
    Images in memory (arrays, PIL images) are taken whole.
    """
    if isinstance(image, (bytes, bytearray, memoryview)):  # the bytes of a file: read as that file is
        image = io.BytesIO(image)
    if not (isinstance(image, (str, Path)) or is_open_file(image)) or keep_side is None:
        rgb = open_image(image)
        return rgb, (int(rgb.shape[1]), int(rgb.shape[0]))
    with _open(image) as im:
        w, h = _upright_size(im)
        long_side = max(w, h)
        if long_side >= 2 * keep_side and im.format == "JPEG":
            im.draft("RGB", (max(1, im.size[0] * keep_side // long_side), max(1, im.size[1] * keep_side // long_side)))
        elif long_side >= 2 * keep_side:
            im.load()
            try:
                im = im.reduce(long_side // keep_side)
            except ValueError:  # a mode reduce() does not take (palette, 16-bit): convert first
                im = to_rgb(im).reduce(long_side // keep_side)
        rgb = np.asarray(to_rgb(im), dtype=np.uint8)
    return rgb, (w, h)


def open_image(image: Any) -> np.ndarray:
    """A path, the bytes of an image file, an open binary file, a PIL image or an array ->
    ``(H, W, 3) uint8`` RGB.

    Arrays are taken as RGB (or grayscale ``(H, W)``, or RGBA), of any numeric dtype,
    scaled to 8 bits by :func:`to_uint8` (16-bit integers, floats in 0..1 or 0..255). OpenCV
    arrays are BGR: pass ``cv2.cvtColor(a, cv2.COLOR_BGR2RGB)`` (or ``a[:, :, ::-1]``); BGR
    taken as RGB gives other answers (the sample photo's age 33 reads 18).

    A PIL image is turned upright by its EXIF orientation tag, as its file would be (also
    after ``.convert("RGB")``, which keeps the tag). Pillow's ``rotate`` and ``transpose``
    keep the tag too, so an image turned by hand would be turned again: turn it with
    ``ImageOps.exif_transpose`` (which clears the tag), or pass ``np.asarray(image)``.
    """
    if isinstance(image, (str, Path)):
        return load_rgb(str(image))
    if isinstance(image, (bytes, bytearray, memoryview)):
        return load_rgb(io.BytesIO(image))
    if is_open_file(image):
        return load_rgb(image)
    if isinstance(image, Image.Image):
        return np.asarray(to_rgb(image), dtype=np.uint8)
    arr = np.asarray(image)
    if arr.dtype.kind not in "biuf" or arr.ndim == 0:  # (a lone number is no image either)
        raise TypeError("an image is a file path, the bytes of an image file, an open binary file, a PIL image "
                        f"or a numeric array, not {type(image).__name__}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4), not {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"an image array of shape {arr.shape} has no pixels")
    arr = to_uint8(arr)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, 2)
    if arr.shape[2] == 4:
        return np.asarray(to_rgb(Image.fromarray(arr, "RGBA")))
    return np.ascontiguousarray(arr)


def describe_error(exc: BaseException) -> str:
    """One line saying why an image could not be used."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, FileNotFoundError):  # a link in a folder that leads nowhere read "no such file" (a user test)
        link = exc.filename if isinstance(exc.filename, str) and os.path.islink(exc.filename) else None
        return f"a symbolic link that leads nowhere (to {os.readlink(link)})" if link else "no such file"
    if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
        return "a symbolic link that loops"
    if isinstance(exc, PermissionError) and exc.filename:  # (was "[Errno 13] Permission denied: '/the/path.jpg'")
        return f"permission denied: this user may not read {exc.filename}"
    if isinstance(exc, MemoryError):  # (was the bare word "MemoryError")
        return "not enough memory to decode or search this image (a very large photo, or a memory limit)"
    if "cannot identify image file" in text:
        return "not an image (or a format Pillow cannot read)"
    return text
