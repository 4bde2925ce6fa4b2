"""CelebA reader: the 40 binary attributes and the official partition.

Format (as published):

* ``list_attr_celeba.txt`` (in ``root`` or ``root/Anno``): line 1 the number
  of images, line 2 the 40 attribute names separated by spaces, then one line
  per image, ``000001.jpg  -1  1  1 -1 ...``: the file name then one value per
  attribute, separated by one or more spaces;
* ``list_eval_partition.txt`` (in ``root`` or ``root/Eval``): ``000001.jpg 0``
  with 0 = train, 1 = val, 2 = test;
* images in ``root/img_align_celeba/``.

Labels: one column per attribute, named as in the header (``1`` -> 1.0,
``-1`` -> 0.0, ``0`` or anything else -> NaN, counted), plus two convenience
columns: ``gender`` (0 male, 1 female, i.e. ``1 - Male``) and ``young`` (a copy
of ``Young``).

Quirks handled and counted in ``report``:

* rows with the wrong number of values are skipped (``malformed_rows_skipped``);
* a repeated file name keeps its first row (``duplicate_rows_skipped``);
* a first line that is not a count is taken as the header (``count_line_missing``),
  and a count that disagrees with the rows found is reported (``declared_images``);
* with a partition file, images absent from it are left out of the table
  (``absent_from_partition_skipped``); unreadable partition lines and partition
  entries without attributes are counted. Without a partition file ``split`` is None.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .table import LabelTable

ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IMAGE_FOLDER = "img_align_celeba"
PARTITIONS = {"0": "train", "1": "val", "2": "test"}
GENDERS = ["male", "female"]
_VALUES = {"1": 1.0, "-1": 0.0}


def find_file(root: Path, name: str, subfolder: str) -> Path | None:
    """``root/name`` or ``root/subfolder/name``, whichever exists first; None if neither."""
    for cand in (root / name, root / subfolder / name):
        if cand.is_file():
            return cand
    return None


def _lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]


def parse_value(text: str) -> float:
    """1 -> 1.0, -1 -> 0.0, anything else -> NaN."""
    return _VALUES.get(text.strip(), float("nan"))


def read_attributes(path: Path) -> tuple[list[str], list[tuple[str, list[float]]], dict]:
    """Attribute names, ``(file name, values)`` rows and the counts of what was wrong."""
    lines = _lines(path)
    report: dict = {"count_line_missing": 0}
    if lines and lines[0].strip().isdigit():
        report["declared_images"] = int(lines[0].strip())
        lines = lines[1:]
    else:
        report["count_line_missing"] = 1
    if not lines:
        raise ValueError(f"{path} has no attribute-name line")
    names = lines[0].split()
    rows: list[tuple[str, list[float]]] = []
    seen: set[str] = set()
    malformed, duplicates = [], 0
    for line in lines[1:]:
        fields = line.split()
        if len(fields) != len(names) + 1:
            malformed.append(line[:80])
            continue
        if fields[0] in seen:
            duplicates += 1
            continue
        seen.add(fields[0])
        rows.append((fields[0], [parse_value(v) for v in fields[1:]]))
    report.update(
        attribute_rows=len(lines) - 1,
        malformed_rows_skipped=len(malformed),
        malformed_examples=malformed[:10],
        duplicate_rows_skipped=duplicates,
    )
    return names, rows, report


def read_partition(path: Path) -> tuple[dict[str, str], int]:
    """``{file name: split}`` and the number of unreadable lines."""
    out: dict[str, str] = {}
    bad = 0
    for line in _lines(path):
        fields = line.split()
        if len(fields) != 2 or fields[1] not in PARTITIONS:
            bad += 1
            continue
        out.setdefault(fields[0], PARTITIONS[fields[1]])
    return out, bad


def read_celeba(root: str | Path) -> LabelTable:
    """Read CelebA's attribute list (and partition, when present) under ``root``."""
    root = Path(root)
    attr_path = find_file(root, ATTR_FILE, "Anno")
    if attr_path is None:
        raise FileNotFoundError(f"{ATTR_FILE} not found in {root} or {root / 'Anno'}")
    names, rows, report = read_attributes(attr_path)
    part_path = find_file(root, PARTITION_FILE, "Eval")
    split: np.ndarray | None = None
    report["partition_file"] = "present" if part_path is not None else "absent"
    if part_path is not None:
        partition, bad = read_partition(part_path)
        have = {name for name, _ in rows}
        report["partition_lines_unreadable"] = bad
        report["partition_without_attributes"] = sum(n not in have for n in partition)
        report["absent_from_partition_skipped"] = sum(n not in partition for n, _ in rows)
        rows = [r for r in rows if r[0] in partition]
        split = np.array([partition[n] for n, _ in rows], dtype=object)
    values = np.array([v for _, v in rows], dtype=np.float64).reshape(-1, len(names))
    labels = {name: values[:, j] for j, name in enumerate(names)}
    missing = np.isnan(values).sum(axis=0)
    report["values_missing"] = int(missing.sum())
    report["values_missing_by_attribute"] = {n: int(m) for n, m in zip(names, missing) if m}
    report["images"] = len(rows)
    classes: dict[str, list[str]] = {}
    if "Male" in labels:
        labels["gender"] = 1.0 - labels["Male"]
        classes["gender"] = list(GENDERS)
    if "Young" in labels:
        labels["young"] = labels["Young"].copy()
        classes["young"] = ["not young", "young"]
    # the other attributes' answers read "smiling" / "not smiling", not 1 / 0 (a readers' test:
    # a binary task of Smiling answered "smiling 1"); offered, so a recipe's own names stand
    offered = {n: [f"not {attribute_words(n)}", attribute_words(n)] for n in names if n not in classes}
    return LabelTable(
        paths=[str(root / IMAGE_FOLDER / n) for n, _ in rows],
        labels=labels,
        split=split,
        groups=None,
        report={"dataset": "celeba", "attributes": len(names), **report},
        classes=classes,
        offered_classes=offered,
    )


def attribute_words(name: str) -> str:
    """An attribute's name as words: ``Wearing_Hat`` -> ``wearing hat``, ``5_o_Clock_Shadow`` ->
    ``5 o clock shadow``."""
    return " ".join(name.replace("_", " ").split()).lower()
