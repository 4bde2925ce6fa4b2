"""A teacher cache for a re-encoded data folder, from ``reencode_utkface.py --vectors-to``'s file.

    python scripts/unpack_teacher_vectors.py VECTORS.npz COPY/UTKFace CACHE_DIR

Every image of the folder gets a row keyed by its own MD5 (as ``facemtl.data.teacher`` looks
them up): its descriptor where the file's name is in the ``.npz``, NaN (a missing label,
masked) for every other file, so training finds every image cached and needs no dlib.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from facemtl.data.teacher import FeatureCache, file_digest
from facemtl.faces.descriptor import DIM, NAME


def main() -> None:
    if len(sys.argv) != 4:
        raise SystemExit(__doc__.split("\n\n")[1].strip())
    npz, folder, cache_dir = np.load(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    known = dict(zip(npz["names"].tolist(), npz["vectors"].astype(np.float32)))
    missing = np.full(DIM, np.nan, np.float32)
    files = sorted(folder.glob("*.jpg"))
    cache = FeatureCache(cache_dir, NAME, DIM)
    cache.put({file_digest(p): known.get(p.name, missing) for p in files})
    cache.close()
    print(f"{cache.path}: {len(files)} files, {sum(p.name in known for p in files)} with a descriptor")


if __name__ == "__main__":
    main()
