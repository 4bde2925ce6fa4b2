"""Expand the user's PATH arguments (files, folders, globs) into a list of files.

Nothing is skipped without notice: an argument that matches nothing is returned as
missing (``analyze`` gives it a record), and a folder that cannot be searched (no
permission, a symlink loop, a second link to a folder already searched) is reported
through ``on_skip``. Symlinked folders are followed, each real folder searched once.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Callable

#: Suffixes picked up when a folder is given (files named explicitly are always tried).
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


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
        found += [os.path.join(folder, n) for n in names if Path(n).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(found)
