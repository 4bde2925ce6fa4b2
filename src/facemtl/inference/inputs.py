"""Expand the user's PATH arguments (files, folders, globs) into a list of files.

Nothing is skipped without notice: an argument that matches nothing is returned as
missing (``analyze`` gives it a record), and a folder that cannot be searched (no
permission, a symlink loop, a second link to a folder already searched) is reported
through ``on_skip``, and so are the files a folder search leaves out for their suffix (counted).
Symlinked folders are followed, each real folder searched once.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Callable

from .. import images

#: Photo formats whose files a folder search picks up, by Pillow's format name (files named
#: explicitly are always tried, and decoded only in these formats: :data:`facemtl.images.PHOTO_FORMATS`).
#: Pillow registers more (video stubs, vector and scientific formats); these are the ones a
#: photo comes in. HEIF counts once a plugin registers it with Pillow
#: (``pillow_heif.register_heif_opener()``); facemtl does not.
PHOTO_FORMATS = set(images.PHOTO_FORMATS)


#: Files operating systems leave in photo folders, left out without a word (as hidden files are).
OS_FILES = {"thumbs.db", "desktop.ini", "icon\r"}


def image_suffixes() -> set[str]:
    """Suffixes (lower case, with the dot) of :data:`PHOTO_FORMATS` that this Pillow can open:
    ``.jpg .jpeg .jpe .jfif .png .apng .bmp .dib .gif .tif .tiff .webp .ppm .pgm .pbm .pnm``,
    ``.avif``, ``.jp2``, ... as Pillow registers them."""
    from PIL import Image

    Image.init()
    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in PHOTO_FORMATS and fmt in Image.OPEN}


def expand_inputs(args: list[str], on_skip: Callable[[str, str], None] | None = None) -> tuple[list[str], list[str]]:
    """``(files, missing)``: folders are walked recursively for image suffixes (sorted, symlinked
    folders followed), globs expanded, plain files kept whatever their suffix; ``missing``
    lists arguments that matched nothing. ``on_skip(path, reason)`` hears of every folder
    that could not be searched (default: ignored)."""
    skip = on_skip or (lambda path, reason: None)
    files: list[str] = []
    missing: list[str] = []
    for a in args:
        p = Path(a)
        if p.is_dir():
            files += walk_images(p, skip)
        elif p.exists():
            files.append(str(p))
        elif any(ch in a for ch in "*?["):
            hits = sorted(h for h in glob.glob(a, recursive=True) if Path(h).is_file())
            files += hits
            if not hits:
                missing.append(a)
        else:
            missing.append(a)
    return list(dict.fromkeys(files)), missing


def walk_images(top: Path, on_skip: Callable[[str, str], None]) -> list[str]:
    """Image files under ``top``, sorted; symlinked folders followed, each real folder once."""
    found: list[str] = []
    seen: dict[str, str] = {}
    suffixes = image_suffixes()
    other, examples = 0, []  # files left out for their suffix: a count and the first names

    def error(exc: OSError) -> None:
        on_skip(str(exc.filename), f"folder not searched: {exc.strerror or exc}")

    for folder, dirs, names in os.walk(top, onerror=error, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a symlink loop, or a second link to a folder searched already
            on_skip(folder, f"folder not searched again: it is {seen[real]}, searched already")
            dirs[:] = []
            continue
        seen[real] = folder
        dirs.sort()
        for n in names:
            if Path(n).suffix.lower() in suffixes:
                found.append(os.path.join(folder, n))
            elif not n.startswith(".") and n.lower() not in OS_FILES:
                other += 1
                examples = sorted(examples + [n])[:3]
    if other:
        names = ", ".join(examples) + (", ..." if other > 3 else "")
        on_skip(str(top), f"{other} file{'s' if other != 1 else ''} left out: not a photo format by "
                          f"{'their' if other != 1 else 'its'} suffix ({names}); name a file to try it anyway")
    return sorted(found)
