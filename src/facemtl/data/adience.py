"""Adience reader: labels from the five benchmark fold files.

Format: ``fold_N_data.txt`` (N = 0..4) in ``root``, tab-separated, one face per
row, with the header ``user_id original_image face_id age gender x y dx dy
tilt_ang fiducial_yaw_angle fiducial_score`` (CRLF line ends in the release).
Images of the aligned release are at
``{root}/faces/{user_id}/coarse_tilt_aligned_face.{face_id}.{original_image}``; an
``aligned/`` folder is used instead of ``faces/`` when only it exists, its files named
``landmark_aligned_face.{face_id}.{original_image}`` as the release names them there (or
``coarse_tilt_aligned_face.`` where those are what it holds: :func:`image_prefix`).

Labels:

* ``age``: index 0..7 of the eight official groups ``ADIENCE_GROUPS``;
* ``gender``: 0 = male (``m``), 1 = female (``f``); ``u``, empty or anything
  else is a missing label (NaN);
* ``fold``: the fold number (float) of the file the row came from.

``groups`` is the Flickr ``user_id``, so one person's photos never straddle
splits; ``split`` is None (use :func:`adience_fold_split` for the usual
five-fold protocol).

Quirks of the published files, all counted in ``report``:

* odd age intervals such as ``(38, 48)``, ``(38, 42)``, ``(27, 32)``,
  ``(8, 23)``: mapped to the official group containing the interval midpoint
  (43 -> 38-43, 40 -> 38-43, 29.5 -> 25-32, 15.5 -> 15-20); a midpoint that
  falls in a gap is treated like an exact age (next rule);
* stray exact ages such as ``35``, ``13`` or ``22``: mapped to the official
  group containing the age, or, for an age in a gap between groups, to the
  nearest group by distance to the group's range (13 -> 8-12, 22 -> 15-20,
  23 -> 25-32, 3 -> 4-6); ties go to the older group (35 -> 38-43);
* ``None`` or an empty age: missing age (NaN); anything else unreadable or a
  negative age: missing too, counted separately;
* truncated rows (fewer fields than the header, as at the end of a cut file):
  kept when the fields through ``gender`` are complete (followed by a tab),
  otherwise skipped; rows with no user, image or face id are skipped;
* header lines repeated inside a file are skipped.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np

from .table import LabelTable

#: The eight official Adience age groups, as ``(low, high)`` in years, inclusive.
ADIENCE_RANGES: list[tuple[int, int]] = [
    (0, 2), (4, 6), (8, 12), (15, 20), (25, 32), (38, 43), (48, 53), (60, 100),
]
ADIENCE_GROUPS: list[str] = [f"{lo}-{hi}" for lo, hi in ADIENCE_RANGES]
GENDERS = ["male", "female"]
FOLDS = range(5)

_NEEDED = ("user_id", "original_image", "face_id", "age", "gender")
_INTERVAL = re.compile(r"^\(\s*(\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)\s*\)$")
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")
_MISSING_AGE = {"", "none"}
_GENDER = {"m": 0.0, "f": 1.0}


def age_group_of(age: float) -> int:
    """Index of the official group containing ``age``, else the nearest one (ties -> older)."""
    best, best_dist = 0, float("inf")
    for i, (lo, hi) in enumerate(ADIENCE_RANGES):
        dist = max(lo - age, age - hi, 0.0)
        if dist <= best_dist:  # ``<=``: on a tie the later (older) group wins
            best, best_dist = i, dist
    return best


def _in_a_group(age: float) -> bool:
    return any(lo <= age <= hi for lo, hi in ADIENCE_RANGES)


def parse_age(text: str) -> tuple[float, str]:
    """``(group index or NaN, kind)`` for one age field.

    ``kind`` is one of ``official``, ``odd_group``, ``exact``, ``exact_in_gap``,
    ``missing`` or ``unreadable`` (see the module docstring for the rules).
    """
    s = text.strip()
    if s.lower() in _MISSING_AGE:
        return float("nan"), "missing"
    m = _INTERVAL.match(s)
    if m:
        lo, hi = float(m.group(1)), float(m.group(2))
        if (lo, hi) in ADIENCE_RANGES:
            return float(ADIENCE_RANGES.index((int(lo), int(hi)))), "official"
        return float(age_group_of((lo + hi) / 2)), "odd_group"
    if _NUMBER.match(s):
        age = float(s)
        if age < 0:
            return float("nan"), "unreadable"
        return float(age_group_of(age)), "exact" if _in_a_group(age) else "exact_in_gap"
    return float("nan"), "unreadable"


def parse_gender(text: str) -> tuple[float, str]:
    """``(0 male / 1 female / NaN, kind)``; kind is ``ok``, ``u``, ``empty`` or ``other``."""
    s = text.strip().lower()
    if s in _GENDER:
        return _GENDER[s], "ok"
    if s == "u":
        return float("nan"), "u"
    return float("nan"), "empty" if s == "" else "other"


def image_folder(root: str | Path) -> str:
    """``faces`` or ``aligned``: whichever exists under ``root`` (``faces`` by default)."""
    root = Path(root)
    for name in ("faces", "aligned"):
        if (root / name).is_dir():
            return name
    return "faces"


#: The file name prefixes of the release's two image folders (``faces/``, ``aligned/``).
PREFIXES = ("coarse_tilt_aligned_face", "landmark_aligned_face")


def image_prefix(folder: str | Path) -> str:
    """The prefix of the image names in ``folder`` (``faces/`` or ``aligned/``): the first of
    :data:`PREFIXES` that a file of its first user folder with one starts with; by default the
    one the folder is released with (``aligned/``: ``landmark_aligned_face``, which this reader
    did not read: a user test found every image of that release missing)."""
    folder = Path(folder)
    try:
        for user in sorted(p for p in folder.iterdir() if p.is_dir()):
            names = [p.name for p in user.iterdir()]
            for prefix in PREFIXES:
                if any(n.startswith(prefix + ".") for n in names):
                    return prefix
    except OSError:
        pass
    return PREFIXES[1] if folder.name == "aligned" else PREFIXES[0]


def fold_files(root: str | Path, folds: list[int] | None = None) -> list[tuple[int, Path]]:
    """The fold files to read; all that exist when ``folds`` is None."""
    root = Path(root)
    if folds is None:
        found = [(n, root / f"fold_{n}_data.txt") for n in FOLDS]
        found = [(n, p) for n, p in found if p.is_file()]
        if not found:
            raise FileNotFoundError(f"no Adience fold files (fold_N_data.txt) in {root}")
        return found
    out = []
    for n in folds:
        p = root / f"fold_{int(n)}_data.txt"
        if not p.is_file():
            raise FileNotFoundError(f"Adience fold file {p} not found")
        out.append((int(n), p))
    return out


def _header_index(header: list[str], path: Path) -> dict[str, int]:
    names = [h.strip() for h in header]
    missing = [c for c in _NEEDED if c not in names]
    if missing:
        raise ValueError(
            f"{path} is not an Adience fold file: header lacks {', '.join(missing)} "
            f"(found: {', '.join(names)})"
        )
    return {c: names.index(c) for c in _NEEDED}


def _read_fold(path: Path, counts: Counter) -> list[list[str]]:
    """Rows (as ``user_id, original_image, face_id, age, gender``) of one fold file."""
    lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    if not lines:
        counts["empty_files"] += 1
        return []
    header = lines[0].lstrip("\ufeff").split("\t")
    idx = _header_index(header, path)
    last = max(idx.values())
    rows = []
    for line in lines[1:]:
        fields = line.split("\t")
        counts["data_lines"] += 1
        if fields[0].strip() == "user_id":
            counts["repeated_headers_skipped"] += 1
            continue
        if len(fields) < len(header):
            if len(fields) <= last + 1:  # a needed field is missing or may be cut short
                counts["truncated_rows_skipped"] += 1
                continue
            counts["truncated_rows_kept"] += 1
        elif len(fields) > len(header):
            counts["long_rows_kept"] += 1
        row = [fields[idx[c]].strip() for c in _NEEDED]
        if not (row[0] and row[1] and row[2]):
            counts["rows_without_image_skipped"] += 1
            continue
        rows.append(row)
    return rows


def read_adience(root: str | Path, folds: list[int] | None = None) -> LabelTable:
    """Read the Adience fold files in ``root`` (all five when ``folds`` is None)."""
    root = Path(root)
    folder = image_folder(root)
    prefix = image_prefix(Path(root) / folder)
    counts: Counter = Counter()
    age_kinds: Counter = Counter()
    gender_kinds: Counter = Counter()
    odd_groups: Counter = Counter()
    exact_ages: Counter = Counter()
    paths: list[str] = []
    users: list[str] = []
    labels: list[tuple[float, float, float]] = []
    files = fold_files(root, folds)
    for n, path in files:
        for user, image, face, age_text, gender_text in _read_fold(path, counts):
            age, age_kind = parse_age(age_text)
            gender, gender_kind = parse_gender(gender_text)
            age_kinds[age_kind] += 1
            gender_kinds[gender_kind] += 1
            if age_kind == "odd_group":
                odd_groups[age_text] += 1
            elif age_kind in ("exact", "exact_in_gap"):
                exact_ages[age_text] += 1
            paths.append(str(root / folder / user / f"{prefix}.{face}.{image}"))
            users.append(user)
            labels.append((age, gender, float(n)))
    arr = np.array(labels, dtype=np.float64).reshape(-1, 3)
    report = {
        "dataset": "adience",
        "folds": [n for n, _ in files],
        "image_folder": folder,
        "image_prefix": prefix,
        "data_lines": counts["data_lines"],
        "images": len(paths),
        "repeated_headers_skipped": counts["repeated_headers_skipped"],
        "truncated_rows_kept": counts["truncated_rows_kept"],
        "truncated_rows_skipped": counts["truncated_rows_skipped"],
        "long_rows_kept": counts["long_rows_kept"],
        "rows_without_image_skipped": counts["rows_without_image_skipped"],
        "age_official_group": age_kinds["official"],
        "age_odd_group": age_kinds["odd_group"],
        "age_exact_in_group": age_kinds["exact"],
        "age_exact_in_gap": age_kinds["exact_in_gap"],
        "age_missing": age_kinds["missing"],
        "age_unreadable": age_kinds["unreadable"],
        "age_odd_group_values": dict(sorted(odd_groups.items())),
        "age_exact_values": dict(sorted(exact_ages.items(), key=lambda kv: float(kv[0]))),
        "gender_u": gender_kinds["u"],
        "gender_empty": gender_kinds["empty"],
        "gender_other": gender_kinds["other"],
        "users": len(set(users)),
    }
    return LabelTable(
        paths=paths,
        labels={"age": arr[:, 0], "gender": arr[:, 1], "fold": arr[:, 2]},
        split=None,
        groups=np.array(users, dtype=object),
        report=report,
        classes={"age": list(ADIENCE_GROUPS), "gender": list(GENDERS)},
    )


def adience_fold_split(table: LabelTable, test_fold: int, val_fold: int | None = None) -> np.ndarray:
    """``"train"`` / ``"val"`` / ``"test"`` per row from the ``fold`` column.

    Rows of ``test_fold`` are test, rows of ``val_fold`` (if given) are val, the
    rest train. Because a user's photos sit in one fold, splits stay disjoint by user.
    """
    fold = table.column("fold")
    present = sorted({int(f) for f in fold[~np.isnan(fold)]})
    for name, f in (("data.fold (the test fold)", test_fold), ("val_fold", val_fold)):
        if f is not None and int(f) not in present:
            raise ValueError(f"{name}={f} is not in this table; folds present: {present}")
    if val_fold is not None and int(val_fold) == int(test_fold):
        raise ValueError(f"val_fold and test_fold are both {test_fold}; they must differ")
    split = np.full(len(fold), "train", dtype=object)
    if val_fold is not None:
        split[fold == int(val_fold)] = "val"
    split[fold == int(test_fold)] = "test"
    return split
