"""Expand the user's PATH arguments (files, folders, globs) into a list of files."""

from __future__ import annotations

import glob
from pathlib import Path

#: Suffixes picked up when a folder is given (files named explicitly are always tried).
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def expand_inputs(args: list[str]) -> tuple[list[str], list[str]]:
    """``(files, missing)``: folders are walked recursively for image suffixes (sorted),
    globs expanded, plain files kept whatever their suffix; ``missing`` lists arguments
    that matched nothing."""
    files: list[str] = []
    missing: list[str] = []
    for a in args:
        p = Path(a)
        if p.is_dir():
            files += sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
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
