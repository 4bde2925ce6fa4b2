"""Teacher features for training images, computed once and cached by file content.

``teacher_features(paths, cache_dir)`` returns one vector per image (dlib's 128-D face
descriptor, :mod:`facemtl.faces.descriptor`), NaN where it could not be computed (a
missing label for the task that learns from it). Vectors are kept in one SQLite file per
teacher in ``cache_dir`` (the data folder may be read-only), keyed by the MD5 of the
image's bytes: a file that changes gets a new key and is computed again; the same image
under another name or in another dataset is computed once.

Why SQLite: a key-value store with atomic commits from the standard library; a killed
run keeps every batch it committed, and tens of thousands of 128-D vectors fit in a few
megabytes.
"""

from __future__ import annotations

import functools
import hashlib
import sqlite3
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

#: Where caches go unless ``data.cache_dir`` says otherwise.
DEFAULT_CACHE_DIR = "~/.cache/facemtl"


def file_digest(path: str | Path) -> str:
    """MD5 of a file's bytes, as hex (a content key, not a security measure)."""
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


class CacheUnusable(RuntimeError):
    """The teacher cache cannot be made, read or written here: one sentence naming the file and
    the setting to change (``data.cache_dir``); exit status 1, the machine's refusal."""

    exit_status = 1


class FeatureCache:
    """``{file digest: float32 vector}`` for one teacher, in ``folder/<teacher>.sqlite``.
    :class:`CacheUnusable` where the folder or file cannot be made or read; a cache that can be
    read but not written serves what it holds (:meth:`check_writable` before computing more)."""

    def __init__(self, folder: str | Path, teacher: str, dim: int) -> None:
        self.folder = Path(folder).expanduser()
        self.path = self.folder / f"{teacher}.sqlite"
        self.dim = dim
        self.db: sqlite3.Connection | None = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=60)
            self.db.execute("CREATE TABLE IF NOT EXISTS features (digest TEXT PRIMARY KEY, vector BLOB NOT NULL)")
            self.db.commit()
        except (OSError, sqlite3.Error) as exc:
            if self.db is not None:
                self.db.close()
            if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):  # damaged
                raise self._damaged(exc) from None
            raise self._refusal(exc, "made or opened") from None

    def _damaged(self, exc: Exception) -> CacheUnusable:
        return CacheUnusable(f"the teacher's cache {self.path} cannot be read ({exc}): remove it (its descriptors "
                             "are computed again) or set data.cache_dir to another folder")

    def _refusal(self, exc: Exception, what: str) -> CacheUnusable:
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return CacheUnusable(f"the teacher's cache {self.path} cannot be {what} ({why[:1].lower() + why[1:]}): set "
                             "data.cache_dir to a folder you can write, e.g. data.cache_dir=/tmp/facemtl-cache on the "
                             "command line (the data folder itself may stay read-only)")

    def check_writable(self) -> None:
        """:class:`CacheUnusable` unless a row can be written (then taken back): asked before any
        descriptor is computed, so that none is computed and then lost (a user test: minutes of
        descriptors computed, then ``sqlite3.OperationalError: attempt to write a readonly database``)."""
        try:
            self.db.execute("INSERT OR REPLACE INTO features VALUES ('', x'')")
        except sqlite3.Error as exc:
            raise self._refusal(exc, "written") from None
        finally:
            self.db.rollback()

    def get(self, digests: Iterable[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        keys = list(dict.fromkeys(digests))
        try:
            for i in range(0, len(keys), 500):
                part = keys[i : i + 500]
                rows = self.db.execute(f"SELECT digest, vector FROM features WHERE digest IN "
                                       f"({','.join('?' * len(part))})", part)
                out.update({d: np.frombuffer(v, dtype=np.float32).copy() for d, v in rows})
        except sqlite3.DatabaseError as exc:  # not a database (damaged, or another file of that name)
            raise self._damaged(exc) from None
        return out

    def put(self, items: dict[str, np.ndarray]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO features VALUES (?, ?)",
                            [(d, np.asarray(v, np.float32).tobytes()) for d, v in items.items()])
        self.db.commit()

    def close(self) -> None:
        self.db.close()


_worker = None


def _init_worker() -> None:
    global _worker
    from ..faces.descriptor import DlibDescriptor

    _worker = DlibDescriptor()


def _describe(path: str) -> np.ndarray | tuple[str, bool]:
    """The descriptor of the image at ``path``, or why there is none (a sentence) and whether the
    same bytes would fail again (an undecodable image: cached as such), or not (memory, a read
    the system refused: tried again next run)."""
    from ..images import describe_error, load_rgb

    try:
        return _worker.describe(load_rgb(path))
    except MemoryError:
        return "out of memory", False
    except OSError as exc:  # errno set: the system refused (too many open files, an I/O error); none: PIL's decoding
        return describe_error(exc), exc.errno is None
    except Exception as exc:  # an undecodable image, a failed descriptor: a missing label
        return f"{type(exc).__name__}: {exc}", True


def teacher_features(paths: Sequence[str], cache_dir: str | Path = DEFAULT_CACHE_DIR, teacher: str = "dlib_resnet_v1",
                     workers: int = 2, progress: bool = True, log: Callable[[str], None] | None = None,
                     batch: int = 256) -> np.ndarray:
    """``(N, 128) float32`` teacher vectors for ``paths`` (NaN rows where none could be made).

    ``log``: where the one-line cache summary goes (default: standard error, so that a
    command's ``--json`` output stays JSON)."""
    if log is None:
        log = functools.partial(print, file=sys.stderr)
    from ..faces import descriptor

    if teacher != descriptor.NAME:
        raise ValueError(f"unknown teacher {teacher!r}; facemtl has: {descriptor.NAME}")
    digests: list[str | None] = []
    failed: list[str] = []  # a file that cannot be read is a missing label, as one dlib cannot describe
    for p in paths:
        try:
            digests.append(file_digest(p))
        except OSError as exc:
            digests.append(None)
            failed.append(f"{p}: {exc.strerror or exc}")
    cache = FeatureCache(cache_dir, teacher, descriptor.DIM)
    try:
        known = cache.get([d for d in digests if d is not None])
        first: dict[str, str] = {}  # one path per digest not cached yet (copies are computed once)
        for d, p in zip(digests, paths):
            if d is not None and d not in known:
                first.setdefault(d, p)
        todo = list(first.items())
        cached = sum(d in known for d in digests)
        log(f"teacher {teacher}: {cached} of {len(paths)} images cached in {cache.path}; computing {len(todo)} "
            f"(byte-identical copies computed once)")
        failed_before = [p for d, p in zip(digests, paths) if d is not None and d in known and np.isnan(known[d]).any()]
        if todo:
            cache.check_writable()
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=len(todo), unit="face", desc=f"teacher {teacher}")
            with ProcessPoolExecutor(max(1, workers), initializer=_init_worker) as pool:
                for i in range(0, len(todo), batch):
                    part = todo[i : i + batch]
                    vecs = list(pool.map(_describe, [p for _, p in part], chunksize=16))
                    done = {}
                    for (d, p), v in zip(part, vecs):
                        if isinstance(v, tuple):
                            failed.append(f"{p}: {v[0]}")
                            if not v[1]:  # a passing failure: not cached, tried again next run
                                continue
                            v = np.full(descriptor.DIM, np.nan, np.float32)  # the same bytes fail alike next run
                        done[d] = v
                    cache.put(done)  # committed per batch: a killed run keeps what it computed
                    known.update(done)
                    if bar is not None:
                        bar.update(len(part))
            if bar is not None:
                bar.close()
        if failed:
            log(f"teacher {teacher}: no descriptor for {len(failed)} images (a missing label for them; undecodable ones "
                f"kept as such in the cache): {'; '.join(failed[:3])}" + (" ..." if len(failed) > 3 else ""))
        if failed_before:  # (a later run said nothing of them: a user test)
            log(f"teacher {teacher}: no descriptor for {len(failed_before)} images whose failure is cached (a missing "
                f"label for them): {'; '.join(failed_before[:3])}" + (" ..." if len(failed_before) > 3 else ""))
    finally:
        cache.close()
    out = np.full((len(paths), descriptor.DIM), np.nan, dtype=np.float32)
    for i, d in enumerate(digests):
        if d is not None and d in known:
            out[i] = known[d]
    return out
