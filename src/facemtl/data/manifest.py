"""Generic manifest reader: a CSV of image paths plus label columns.

Format: a CSV file with a header row (read with the ``csv`` module; a UTF-8
byte-order mark is ignored, header names are stripped of spaces), one image
per row. ``path_column`` (default ``path``) holds the image path; a relative
path resolves against ``root`` when given, else the CSV's own folder.

Label columns: ``columns`` maps each column to read to its list of class names
(categorical: a value is mapped to its index in the list; a value that is
already an integer index below ``len(classes)``, like ``1`` or ``1.0``, is
accepted as is) or to None (numeric). With ``columns=None`` every column other
than the path, ``split`` and ``group`` columns is read as numeric. ``classes``
maps the columns the tasks read to the tasks' class names (or None): such a
column of the file is read even where ``columns`` leaves it out, and where
``columns`` gives it no class names it is read by the task's (so that ``male`` /
``female`` need not be repeated in the recipe): a class name becomes its index
and a number stays the number it is (the task judges whether it is one of its
class indices; an index past the classes must not vanish as a missing label).

Optional columns: ``split`` (``train`` / ``val`` / ``test``, case ignored,
``valid`` and ``validation`` read as ``val``) becomes ``split``; ``group``
becomes ``groups`` (rows with the same group stay in one split).

Quirks handled and counted in ``report``:

* empty cells and ``NA``, ``N/A``, ``nan``, ``None``, ``null``, ``?`` (any case) are missing
  labels (NaN), counted per column in ``missing`` (``N/A`` and ``null`` were read as unknown
  class names or texts that are no number, and warned of as such: a user test);
* unknown class names, unparsable or non-finite numbers become NaN, counted
  per column in ``unknown_class`` / ``unparsable``, with a few of the texts found
  in ``unknown_class_examples`` / ``unparsable_examples`` (for the sentence that
  refuses a task none of whose labels could be read);
* rows with no image path are skipped; with a ``split`` column, rows whose
  split is empty or unknown are skipped too (they cannot be placed);
* an empty group cell gets the row's own path as its group;
* an image listed on several rows: without a ``group`` column, each row's path becomes its
  group, so the rows stay in one split (one of them in training and another in the test
  split would score the model on a face it trained on); with one, the groups of its rows are
  joined, to the same end; counted in ``duplicate_rows``;
* byte-identical images under other names (the same photo copied, as UTKFace has): their
  groups are joined, so the copies stay in one split too; counted in ``copies_by_content``
  (images that are a copy of another under another name: a set of three counts two),
  ``copies_by_content_conflicting``
  (sets of copies labelled differently) and, with a ``split`` column, the sets it puts in
  more than one split (``copies_by_content_across_splits``); each file is read once for its
  MD5 (one that cannot be read is no one's copy);
* rows shorter or longer than the header are counted; missing cells are missing labels.

A folder in place of the file, a file that is not UTF-8 CSV text, a missing path
column or a missing declared column raises ``ValueError``.
"""

from __future__ import annotations

import codecs
import csv
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np

from .table import LabelTable

MISSING = {"", "na", "n/a", "nan", "none", "null", "?"}
SPLITS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
SPLIT_COLUMN = "split"
GROUP_COLUMN = "group"
#: How many distinct unreadable texts per column the report keeps as examples.
EXAMPLES = 3


def is_missing(text: str | None) -> bool:
    return text is None or text.strip().lower() in MISSING


def parse_numeric(text: str) -> float | None:
    """The number in ``text``; None when it is not a finite number."""
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def folded(names: list[str]) -> list[str]:
    """Class names as they are compared: case and outer spaces aside (``Male`` is ``male``)."""
    return [str(n).strip().casefold() for n in names]


def parse_class(text: str, classes: list[str]) -> float | None:
    """Index of ``text`` in ``classes`` (case aside: ``Male`` is ``male``), or ``text`` itself if
    a valid integer index; None if unknown. Names are tried first, so classes named "1".."5"
    read "1" as class "1" (index 0), not as index 1."""
    s = text.strip()
    names = folded(classes)
    if s.casefold() in names:
        return float(names.index(s.casefold()))
    value = parse_numeric(s)
    if value is not None and value.is_integer() and 0 <= value < len(classes):
        return value
    return None


def _check_columns(path: Path, header: list[str], needed: list[str]) -> None:
    for col in needed:
        if col not in header:
            sep = next((f"{name} ({c!r})" for c, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "bars"))
                        if len(header) == 1 and c in header[0]), None)
            hint = f": its header is one column holding {sep}; facemtl reads comma-separated files" if sep else ""
            raise ValueError(f"manifest {path} has no column {col!r}; columns found: {', '.join(header)}{hint}")


def _cell(rec: dict, col: str, kind: list[str] | None, counts: dict[str, Counter],
          examples: dict[str, dict[str, list[str]]], keep_numbers: bool = False) -> float:
    text = rec.get(col)
    # a name of the column's classes or levels first: "none" of [none, mild, moderate, severe] is a
    # label, not a missing cell (a review: every rank-0 face was dropped, counted as missing)
    named = parse_class(text, kind) if kind is not None and text is not None and text.strip() else None
    if named is None and is_missing(text):
        counts["missing"][col] += 1
        return float("nan")
    value = named if named is not None else parse_numeric(text) if kind is None else parse_class(text, kind)
    if value is None and kind is not None and keep_numbers:  # a number out of range: kept for the range check
        value = parse_numeric(text)
    if value is None:
        problem = "unparsable" if kind is None else "unknown_class"
        counts[problem][col] += 1
        seen = examples[problem].setdefault(col, [])
        if len(seen) < EXAMPLES and text.strip() not in seen:
            seen.append(text.strip())
        return float("nan")
    return value


def _open_check(path: Path) -> None:
    """``ValueError`` in one sentence when ``path`` is a folder: the reader wants the CSV itself."""
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.csv"))
        hint = f"; this folder holds {', '.join(found[:3])}{', ...' if len(found) > 3 else ''}" if found else ""
        raise ValueError(f"{path} is a folder, but the csv reader reads a manifest: give the CSV file itself "
                         f"(data.root=path/to/labels.csv){hint}")


def _size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def _copies(same: list[str], labels: np.ndarray, split: np.ndarray | None) -> dict:
    """Sets of rows (two images or more under other paths) whose files hold the same bytes.

    A manifest's rows are grouped by path already; a photo copied under another name is the
    same face too (UTKFace holds such copies), and one copy in training with another in the
    test split would score the model on a face it trained on."""
    from .teacher import file_digest  # (the teacher's cache keys images by the same MD5)

    # copies have one size: only files that share theirs are read (a stat each, not every file's
    # bytes); an empty file or one that cannot be read is no one's copy (said when its pixels are read)
    sizes = {p: _size(p) for p in dict.fromkeys(same)}
    shared = {n for n, k in Counter(v for v in sizes.values() if v).items() if k > 1}
    by_digest: dict[str, list[int]] = {}
    digests: dict[str, str | None] = {}
    for i, p in enumerate(same):
        if sizes[p] not in shared:
            continue
        if p not in digests:
            try:
                digests[p] = file_digest(p)
            except OSError:
                digests[p] = None
        if digests[p] is not None:
            by_digest.setdefault(digests[p], []).append(i)
    sets = [rows for rows in by_digest.values() if len({same[i] for i in rows}) > 1]
    conflicting = sum(len({tuple(np.nan_to_num(labels[i], nan=-1.0)) for i in rows}) > 1 for rows in sets)
    across = sum(len({split[i] for i in rows}) > 1 for rows in sets) if split is not None else 0
    names = sorted({same[i] for i in sets[0]})[:2] if sets else []
    return {"sets": sets, "rows": sum(len({same[i] for i in rows}) - 1 for rows in sets),
            "conflicting": int(conflicting), "across_splits": int(across),
            "example": " = ".join(Path(n).name for n in names)}


def _joined(keys: list[str], sets: list[list[int]]) -> list[str]:
    """``keys`` (a group per row) with the groups of each set of rows joined into one (the
    smallest key names it): a union-find over the group keys."""
    parent: dict[str, str] = {}

    def root(k: str) -> str:
        while parent.get(k, k) != k:
            parent[k] = parent.get(parent[k], parent[k])
            k = parent[k]
        return k

    for rows in sets:
        ks = sorted({root(keys[i]) for i in rows})
        for k in ks[1:]:
            parent[k] = ks[0]
    return [root(k) for k in keys]


def read_manifest(
    path: str | Path,
    path_column: str = "path",
    columns: dict[str, list[str] | None] | None = None,
    root: str | Path | None = None,
    classes: dict[str, list[str] | None] | None = None,
    group_copies: bool = True,
) -> LabelTable:
    """Read a manifest CSV (see the module docstring for the rules); ``group_copies``: look for
    byte-identical copies and keep them in one split, and join the groups of an image listed under
    two (``False``: as before 2026-11-27, so a model made then is split as it was)."""
    path = Path(path)
    _open_check(path)
    try:
        return _read(path, path_column, columns, Path(root) if root is not None else path.parent, classes or {},
                     group_copies)
    except UnicodeDecodeError:  # (a byte position in a read buffer alone: a user test)
        data = path.read_bytes()
        body = data[3:] if data.startswith(codecs.BOM_UTF8) else data  # (positions after a BOM were 3 short)
        try:
            body.decode("utf-8")
            where = ""
        except UnicodeDecodeError as exc:  # the first bad byte of the whole file
            line = body[: exc.start].count(b"\n") + 1
            where = f": line {line} holds {body[exc.start:exc.start + 1]!r}, no UTF-8"
        raise ValueError(f"manifest {path} is not a CSV file of UTF-8 text{where} (a manifest is a CSV file saved "
                         "as UTF-8)") from None
    except csv.Error as exc:
        raise ValueError(f"manifest {path} is not a CSV file of UTF-8 text ({exc})") from None


def _read(path: Path, path_column: str, columns: dict[str, list[str] | None] | None, base: Path,
          classes: dict[str, list[str] | None], group_copies: bool = True) -> LabelTable:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        _check_columns(path, header, [path_column])
        if columns is None:
            columns = {c: None for c in header if c not in (path_column, SPLIT_COLUMN, GROUP_COLUMN) and c}
        else:
            columns = dict(columns)
        wanted = [c for c in classes if c in header and c not in (path_column, SPLIT_COLUMN, GROUP_COLUMN)]
        lenient = {c for c in wanted if classes[c] is not None and columns.get(c) is None}
        for c in wanted:  # a column a task reads: read, by the task's class names where the recipe gives none
            columns[c] = [str(x) for x in classes[c]] if c in lenient else columns.get(c)
        _check_columns(path, header, list(columns))
        has_split, has_group = SPLIT_COLUMN in header, GROUP_COLUMN in header
        counts: dict[str, Counter] = {k: Counter() for k in ("missing", "unknown_class", "unparsable")}
        examples: dict[str, dict[str, list[str]]] = {"unknown_class": {}, "unparsable": {}}
        rows: Counter = Counter()
        paths: list[str] = []
        values: list[list[float]] = []
        split: list[str] = []
        groups: list[str] = []
        first_line: dict[str, int] = {}  # per kind of odd row, the file line of its first (said: dataset.py)

        def odd(kind: str) -> None:
            rows[kind] += 1
            first_line.setdefault(kind, reader.line_num)

        for rec in reader:
            rows["rows"] += 1
            if None in rec:
                odd("long_rows")
            if any(v is None for k, v in rec.items() if k is not None):
                odd("short_rows")
            image = (rec.get(path_column) or "").strip()
            if not image:
                odd("rows_without_path_skipped")
                continue
            if has_split:
                part = SPLITS.get((rec.get(SPLIT_COLUMN) or "").strip().lower())
                if part is None:
                    rows["rows_without_valid_split_skipped"] += 1
                    continue
                split.append(part)
            full = str(base / image)
            if has_group:
                group = (rec.get(GROUP_COLUMN) or "").strip()
                if not group:
                    rows["empty_groups"] += 1
                groups.append(group or full)
            paths.append(full)
            values.append([_cell(rec, c, kind, counts, examples, c in lenient) for c, kind in columns.items()])
    arr = np.array(values, dtype=np.float64).reshape(-1, len(columns))
    same = [os.path.normpath(p) for p in paths]  # (a.jpg and ./a.jpg are one image)
    duplicates = len(same) - len(set(same))
    if duplicates and not has_group:  # each path its own group: an image's rows stay in one random split
        groups, has_group = same, True
    elif duplicates and group_copies:  # an image's rows under two groups join them (a user test: train and test)
        rows_of: dict[str, list[int]] = {}
        for i, p in enumerate(same):
            rows_of.setdefault(p, []).append(i)
        groups = _joined(list(groups), [r for r in rows_of.values() if len(r) > 1])
    copies = _copies(same, arr, np.array(split, dtype=object) if has_split else None) if group_copies \
        else {"sets": [], "rows": 0, "conflicting": 0, "across_splits": 0, "example": ""}
    if copies["sets"]:  # join the groups of copies (a group left as it was where there are none: the same split)
        keys = list(groups) if has_group else list(same)
        groups, has_group = _joined(keys, copies["sets"]), True
    report = {
        "dataset": "manifest",
        "source": str(path),
        "columns": header,
        "rows": rows["rows"],
        "images": len(paths),
        "rows_without_path_skipped": rows["rows_without_path_skipped"],
        "rows_without_valid_split_skipped": rows["rows_without_valid_split_skipped"],
        "short_rows": rows["short_rows"],
        "long_rows": rows["long_rows"],
        "empty_groups": rows["empty_groups"],
        **({"odd_rows_first_line": first_line} if first_line else {}),
        "duplicate_rows": duplicates,
        "copies_by_content": copies["rows"],
        "copies_by_content_conflicting": copies["conflicting"],
        **({"copies_by_content_across_splits": copies["across_splits"]} if has_split else {}),
        **({"copies_by_content_example": copies["example"]} if copies["example"] else {}),
        **{k: {c: int(c_counts[c]) for c in columns} for k, c_counts in counts.items()},
        **{f"{k}_examples": v for k, v in examples.items() if v},
    }
    if lenient:
        report["classes_from_tasks"] = sorted(lenient)
    return LabelTable(
        paths=paths,
        labels={c: arr[:, j] for j, c in enumerate(columns)},
        split=np.array(split, dtype=object) if has_split else None,
        groups=np.array(groups, dtype=object) if has_group else None,
        report=report,
        classes={c: list(kind) for c, kind in columns.items() if kind is not None},
    )
