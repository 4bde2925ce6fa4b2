"""WebDataset tar shards: millions of faces in a few large files, read by random access.

``facemtl shards --config RECIPE --out DIR`` writes the recipe's data (any reader) as
WebDataset shards (``DIR/faces-000000.tar`` ...: per face ``<key>.jpg`` with the image's
own bytes, or re-encoded at ``--resize`` pixels, and ``<key>.json`` with its labels), plus
``DIR/index.json``: the shard list in the ``wids`` index format (``wids-shard-index-v1``)
and, per face, its labels, split and group, so reading the labels never touches the
images. ``data.dataset: shards`` with ``data.root: DIR`` trains from them: faces are
read by index through ``wids.ShardListDataset`` (memory-mapped tars), so the same
samplers, distributed shares and on-the-fly decoding serve files and shards alike, and
the recorded split is kept (``data.split: predefined``).

A face's path in a table read from shards is ``shards:<DIR>#<index>``.
"""

from __future__ import annotations

import io
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .table import LabelTable

PREFIX = "shards:"
INDEX = "index.json"


def shard_path(root: str | Path, i: int) -> str:
    return f"{PREFIX}{Path(root).resolve()}#{i}"


def _old_shards(out: Path) -> list[Path]:
    return sorted(out.glob("faces-*.tar")) + ([out / INDEX] if (out / INDEX).exists() else [])


def check_out(out: str | Path, overwrite: bool = False) -> None:
    """Refuse ``out`` when it is a file, or holds shards or an index and not ``overwrite``; with
    ``overwrite`` the old shards and index are deleted (nothing else in the folder is touched)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file, not a folder for shards")
    old = _old_shards(out) if out.is_dir() else []
    if old and not overwrite:
        raise FileExistsError(f"{out} already holds {len(old)} shard or index file(s); "
                              "choose another --out, or add --overwrite to replace them")
    for f in old:
        f.unlink()


def write_shards(table: LabelTable, split: np.ndarray, out: str | Path, shard_size: int = 5000,
                 resize: int | None = None, log: Callable[[str], None] = print, overwrite: bool = False) -> Path:
    """Write ``table`` (with one split per row) as shards in ``out``; returns the index file.

    A folder that already holds shards or an index is refused (``FileExistsError``) unless
    ``overwrite``, which deletes them first: the index lists every ``faces-*.tar`` in the
    folder, so a longer earlier set would otherwise leave stale shards in it.
    """
    import webdataset as wds

    from ..images import load_rgb

    out = Path(out)
    check_out(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    # Scalar columns only: a vector column (a teacher's descriptor, soft targets made from the
    # split) is computed again from the images and the split when a run reads the shards.
    cols = [c for c in table.labels if np.ndim(table.labels[c]) == 1]
    faces = []
    pattern = str(out / "faces-%06d.tar")
    with wds.ShardWriter(pattern, maxcount=shard_size, verbose=0) as sink:
        for i, path in enumerate(table.paths):
            if resize:
                from PIL import Image

                buf = io.BytesIO()
                Image.fromarray(load_rgb(path, resize)).save(buf, "JPEG", quality=95)
                data = buf.getvalue()
            else:
                data = Path(path).read_bytes()
            labels = {c: (None if np.isnan(v) else float(v)) for c in cols for v in [table.labels[c][i]]}
            record = {"labels": labels, "split": str(split[i]), "source": str(path)}
            if table.groups is not None:
                record["group"] = str(table.groups[i])
            sink.write({"__key__": f"{i:09d}", "jpg": data, "json": record})
            faces.append(record)
    shards = sorted(out.glob("faces-*.tar"))
    counts = [min(shard_size, len(faces) - k * shard_size) for k in range(len(shards))]
    index = {"__kind__": "wids-shard-index-v1", "wids_version": 1,
             "shardlist": [{"url": s.name, "nsamples": n} for s, n in zip(shards, counts)],
             "facemtl": {"columns": cols, "classes": table.classes,
                         "offered_classes": table.offered_classes, "report": table.report, "faces": faces}}
    (out / INDEX).write_text(json.dumps(index))
    log(f"wrote {len(faces)} faces in {len(shards)} shard(s) to {out}")
    return out / INDEX


def read_shards(root: str | Path) -> LabelTable:
    """The :class:`LabelTable` of a shard folder (labels from the index; images stay in the tars)."""
    root = Path(root)
    f = root / INDEX
    if not f.is_file():
        raise FileNotFoundError(f"{root} holds no shard index ({INDEX}); write one with 'facemtl shards'")
    meta = json.loads(f.read_text())["facemtl"]
    faces, cols = meta["faces"], meta["columns"]
    labels = {c: np.array([np.nan if r["labels"][c] is None else r["labels"][c] for r in faces], float) for c in cols}
    groups = np.array([r["group"] for r in faces], dtype=object) if faces and "group" in faces[0] else None
    return LabelTable(paths=[shard_path(root, i) for i in range(len(faces))], labels=labels,
                      split=np.array([r["split"] for r in faces], dtype=object), groups=groups,
                      report={**meta.get("report", {}), "shards": str(root)}, classes=meta.get("classes", {}),
                      offered_classes=meta.get("offered_classes", {}))


@lru_cache(maxsize=8)  # one reader per shard folder and process (loader workers each open their own)
def _dataset(root: str) -> Any:
    import contextlib
    import os

    import wids

    index = json.loads((Path(root) / INDEX).read_text())
    shards = [{"url": str(Path(root) / s["url"]), "nsamples": s["nsamples"]} for s in index["shardlist"]]
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # wids prints its set-up
        return wids.ShardListDataset(shards, transformations=[])


def read_bytes(path: str) -> bytes:
    """The image bytes behind a ``shards:<DIR>#<index>`` path."""
    root, _, i = path[len(PREFIX):].rpartition("#")
    sample = _dataset(root)[int(i)]
    data = sample[".jpg"]
    return data.read() if hasattr(data, "read") else bytes(data)


def is_shard(path: str) -> bool:
    return path.startswith(PREFIX)


def shard_exists(path: str) -> bool:
    """Whether the shards folder of a ``shards:<DIR>#<index>`` path holds its index."""
    root = path[len(PREFIX):].rpartition("#")[0]
    return (Path(root) / INDEX).is_file()
