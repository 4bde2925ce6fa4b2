"""UTKFace reader: labels from file names, defects reported and handled.

File names are ``{age}_{gender}_{race}_{datetime}.jpg.chip.jpg`` with gender
0 = male, 1 = female and race 0..4 = white, black, asian, indian, others.
The public release has defects (see ``shared/data/utkface/README.md``):

* a few malformed names: a missing race field (read as a *missing* race label,
  masked out of the race loss), a stray space or a missing dot (labels still read);
  names with no readable age and gender are skipped;
* byte-identical copies, some under different labels. Copies whose labels agree
  are collapsed to one image; copies whose labels disagree are all dropped
  (we cannot tell which label is right). Either way no image can appear in
  both train and test, because splitting happens after de-duplication.

Under the CORAL protocol (``splits/coral_*.csv``, ages 21-60) the test list is
kept complete as published; training images that duplicate a test image, or
each other, are dropped from training instead.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from .table import LabelTable, evenly_spaced

GENDERS = ["male", "female"]
RACES = ["white", "black", "asian", "indian", "others"]
_NAME = re.compile(r"^(\d{1,3})_([01])_(?:([0-4])_)?(\d+)\s*\.?\s*jpg\.chip\.jpg$")


def parse_name(name: str) -> tuple[float, float, float] | None:
    """``(age, gender, race)`` from a UTKFace file name; race is NaN when absent; None if unreadable."""
    m = _NAME.match(name)
    if not m:
        return None
    age, gender, race = m.group(1), m.group(2), m.group(3)
    return float(age), float(gender), (float(race) if race is not None else float("nan"))


def image_folder(root: str | Path) -> Path:
    root = Path(root)
    for cand in (root / "UTKFace", root):
        if cand.is_dir() and any(cand.glob("*.jpg")):
            return cand
    raise FileNotFoundError(f"no UTKFace images (*.jpg) under {root}")


def _digest(path: Path) -> str:
    """The file's MD5, or a key of its own when it cannot be read (a permission): such a file is
    no one's duplicate here, and is left out with a warning when its pixels are read."""
    try:
        return hashlib.md5(path.read_bytes()).hexdigest()
    except OSError:
        return f"unreadable:{path}"


def coral_files(folder: Path) -> dict[str, Path]:
    """``{"train": file, "test": file}``: the CORAL split files in ``folder``, named
    ``coral_{train,test}.csv`` or as the coral-cnn repository names them, ``utk_{train,test}.csv``;
    a ``FileNotFoundError`` naming what is looked for where one is missing."""
    out = {}
    for part in ("train", "test"):
        found = [folder / f"{stem}_{part}.csv" for stem in ("coral", "utk") if (folder / f"{stem}_{part}.csv").is_file()]
        if not found:
            raise FileNotFoundError(f"the CORAL protocol's {part} list is not in {folder}: it reads "
                                    f"coral_{part}.csv (or utk_{part}.csv, as the coral-cnn repository names it)")
        out[part] = found[0]
    return out


def coral_names(file: Path) -> list[str]:
    """The image names a CORAL split file lists: its ``file`` column where the header names one
    (a file written without the index column, ``file,age``, was read by position and matched no
    image), else the second column, as the published files (``,file,age``) hold them."""
    import csv

    with file.open(newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return []
    header = [c.strip() for c in rows[0]]
    col = header.index("file") if "file" in header else 1
    return [r[col].strip() for r in rows[1:] if len(r) > col and r[col].strip()]


def read_utkface(root: str | Path, protocol: str = "all", limit: int | None = None) -> LabelTable:
    """Read UTKFace under ``root`` (the folder holding ``UTKFace/`` and ``splits/``).

    ``protocol``: ``"all"`` (every readable image, no predefined split) or
    ``"coral"`` (the CORAL split files; ``split`` column set to train / test).
    ``limit`` keeps N readable files spread evenly over the sorted list (for quick runs).
    """
    folder = image_folder(root)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith("jpg"))
    report: dict = {"files": len(files)}
    rows: list[tuple[Path, tuple[float, float, float]]] = []
    malformed: list[str] = []
    unreadable: list[str] = []
    for p in files:
        lab = parse_name(p.name)
        if lab is None:
            unreadable.append(p.name)
            continue
        if not re.match(r"^\d+_[01]_[0-4]_\d+\.jpg\.chip\.jpg$", p.name):
            malformed.append(p.name)
        rows.append((p, lab))
    report["malformed_names"] = len(malformed)
    report["malformed_examples"] = malformed[:10]
    report["missing_race"] = int(sum(np.isnan(lab[2]) for _, lab in rows))
    report["unreadable_names_skipped"] = len(unreadable)

    split: np.ndarray | None = None
    if protocol == "coral":
        listed = {}
        for part, file in coral_files(Path(root) / "splits").items():
            listed.update((name, part) for name in coral_names(file))
        by_name = {p.name: (p, lab) for p, lab in rows}
        report["coral_listed"] = {s: sum(v == s for v in listed.values()) for s in ("train", "test")}
        report["coral_listed_but_absent"] = sum(name not in by_name for name in listed)
        rows = [by_name[n] for n in sorted(listed) if n in by_name]
        split = np.array([listed[p.name] for p, _ in rows], dtype=object)
    elif protocol != "all":
        raise ValueError(f"unknown UTKFace protocol {protocol!r}; choose 'all' or 'coral'")

    if limit is not None and limit < len(rows):
        pick = evenly_spaced(len(rows), limit)
        rows = [rows[i] for i in pick]
        split = None if split is None else split[pick]

    keep, dup_report = _deduplicate(rows, split)
    report.update(dup_report)
    rows = [rows[i] for i in keep]
    split = None if split is None else split[keep]
    report["images"] = len(rows)
    labels = np.array([lab for _, lab in rows], dtype=np.float64).reshape(-1, 3)
    return LabelTable(
        paths=[str(p) for p, _ in rows],
        labels={"age": labels[:, 0], "gender": labels[:, 1], "race": labels[:, 2]},
        split=split,
        report={"dataset": "utkface", "protocol": protocol, **report},
        classes={"gender": GENDERS, "race": RACES},
    )


def _deduplicate(rows: list, split: np.ndarray | None) -> tuple[np.ndarray, dict]:
    """Indices to keep after collapsing byte-identical images (see the module docstring)."""
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, (p, _) in enumerate(rows):
        by_hash[_digest(p)].append(i)
    drop: set[int] = set()
    groups = [g for g in by_hash.values() if len(g) > 1]
    conflicting = 0
    for g in groups:
        labs = {tuple(np.nan_to_num(rows[i][1], nan=-1)) for i in g}
        if split is not None and any(split[i] == "test" for i in g):
            # Keep the published test list whole; drop training copies of test images.
            drop.update(i for i in g if split[i] != "test")
            continue
        if len(labs) > 1:
            conflicting += 1
            drop.update(g)
        else:
            drop.update(g[1:])
    keep = np.array([i for i in range(len(rows)) if i not in drop], dtype=np.int64)
    return keep, {
        "duplicate_groups": len(groups),
        "duplicate_images": sum(len(g) for g in groups),
        "duplicate_groups_conflicting_labels": conflicting,
        "dropped_as_duplicates": len(drop),
    }
