"""FairFace reader: age bin, gender and race from the published label CSVs.

Format: ``fairface_label_train.csv`` and ``fairface_label_val.csv`` in
``root``, header ``file,age,gender,race,service_test`` (older releases lack
``service_test``, which is not used). ``file`` is relative to ``root``
(``train/1.jpg``); ``age`` is one of the 9 bins ``AGE_BINS``; ``gender`` is
``Male`` / ``Female``; ``race`` one of the 7 ``RACES``.

Labels: ``age`` = bin index 0..8 (ordinal), ``gender`` 0 male / 1 female,
``race`` 0..6 in the order of ``RACES``, and ``race5``, the UTKFace 5-way
scheme (white, black, asian, indian, others): White -> 0, Black -> 1, East and
Southeast Asian -> 2, Indian -> 3, Latino_Hispanic and Middle Eastern -> 4.

Split: ``"train"`` for the train CSV and ``"test"`` for the val CSV — FairFace
publishes no test labels, so its validation set serves as the test set here;
carve a validation set out of train if one is needed.

Quirks handled and counted in ``report``: values are matched ignoring case,
surrounding spaces and ``_`` versus space (``latino hispanic``); unknown values
become NaN (``unknown_values`` per column); rows without a file name are
skipped; a repeated file name keeps its first row; short rows read their
missing cells as missing labels. A missing CSV is reported and skipped (at
least one must exist); a CSV lacking a required column raises ``ValueError``.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np

from .table import LabelTable
from .utkface import RACES as RACES5

AGE_BINS = ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70"]
GENDERS = ["male", "female"]  # matched ignoring case: the CSVs write Male / Female
RACES = ["White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern"]
#: ``race`` index -> ``race5`` index (UTKFace scheme).
RACE_TO_RACE5 = [0, 1, 4, 2, 2, 3, 4]
FILES = {"train": "fairface_label_train.csv", "test": "fairface_label_val.csv"}
REQUIRED = ("file", "age", "gender", "race")


def _norm(text: str) -> str:
    return " ".join(text.replace("_", " ").lower().split())


def _lookup(names: list[str]) -> dict[str, float]:
    return {_norm(n): float(i) for i, n in enumerate(names)}


_TABLES = {"age": _lookup(AGE_BINS), "gender": _lookup(GENDERS), "race": _lookup(RACES)}


def parse_value(column: str, text: str | None) -> float:
    """Class index of ``text`` in ``column`` (``age``, ``gender`` or ``race``); NaN if unknown."""
    if text is None:
        return float("nan")
    return _TABLES[column].get(_norm(text), float("nan"))


def race5_of(race: float) -> float:
    """UTKFace 5-way race index of a FairFace 7-way race index (NaN stays NaN)."""
    return float("nan") if np.isnan(race) else float(RACE_TO_RACE5[int(race)])


def _read_csv(path: Path, counts: Counter) -> list[tuple[str, float, float, float]]:
    """``(file, age, gender, race)`` rows of one label CSV."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise ValueError(
                f"{path} lacks the FairFace column(s) {', '.join(missing)}; columns found: {', '.join(header)}"
            )
        reader.fieldnames = header
        rows = []
        for rec in reader:
            counts["rows"] += 1
            if any(rec.get(c) is None for c in REQUIRED):
                counts["short_rows"] += 1
            name = (rec.get("file") or "").strip()
            if not name:
                counts["rows_without_file_skipped"] += 1
                continue
            labels = []
            for col in ("age", "gender", "race"):
                value = parse_value(col, rec.get(col))
                if np.isnan(value):
                    counts[f"unknown_{col}"] += 1
                labels.append(value)
            rows.append((name, *labels))
    return rows


def read_fairface(root: str | Path) -> LabelTable:
    """Read FairFace's train and val label CSVs under ``root`` (val becomes ``"test"``)."""
    root = Path(root)
    counts: Counter = Counter()
    rows: list[tuple[str, float, float, float]] = []
    split: list[str] = []
    absent = []
    for part, fname in FILES.items():
        path = root / fname
        if not path.is_file():
            absent.append(fname)
            continue
        part_rows = _read_csv(path, counts)
        rows += part_rows
        split += [part] * len(part_rows)
    if len(absent) == len(FILES):
        raise FileNotFoundError(f"no FairFace label CSVs ({', '.join(FILES.values())}) in {root}")
    keep, first = [], {}
    conflicting, across = 0, 0
    for i, (name, *labels) in enumerate(rows):
        if name not in first:
            first[name] = i
            keep.append(i)
            continue
        j = first[name]  # a repeated file: its first row stands (said below when it differs)
        conflicting += not np.array_equal(np.asarray(labels, float), np.asarray(rows[j][1:], float), equal_nan=True)
        across += split[i] != split[j]
    unknown = {c: int(sum(np.isnan(rows[i][k + 1]) for i in keep)) for k, c in enumerate(("age", "gender", "race"))}
    if conflicting or across:  # (a user test: a file in both label files, or twice with other labels, went unsaid)
        from .label_checks import warn

        warn(f"{root}: {len(rows) - len(keep)} repeated row(s) of a file already listed are skipped (its first row "
             f"stands): {conflicting} with other labels, {across} listed in both the train and the val file")
    split = [split[i] for i in keep]
    rows = [rows[i] for i in keep]
    arr = np.array([r[1:] for r in rows], dtype=np.float64).reshape(-1, 3)
    report = {
        "dataset": "fairface",
        "files_absent": absent,
        "rows": counts["rows"],
        "images": len(rows),
        "short_rows": counts["short_rows"],
        "rows_without_file_skipped": counts["rows_without_file_skipped"],
        "duplicate_rows_skipped": counts["rows"] - counts["rows_without_file_skipped"] - len(rows),
        "unknown_values": unknown,  # (of the rows kept: it counted the skipped repeats' too)
        "duplicate_rows_conflicting": int(conflicting),
        "duplicate_rows_across_files": int(across),
        "split_note": "val CSV used as test: FairFace publishes no test labels",
    }
    return LabelTable(
        paths=[str(root / r[0]) for r in rows],
        labels={
            "age": arr[:, 0],
            "gender": arr[:, 1],
            "race": arr[:, 2],
            "race5": np.array([race5_of(r) for r in arr[:, 2]], dtype=np.float64),
        },
        split=np.array(split, dtype=object),
        groups=None,
        report=report,
        classes={"age": list(AGE_BINS), "gender": list(GENDERS), "race": list(RACES), "race5": list(RACES5)},
    )
