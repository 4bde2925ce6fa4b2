"""A smaller copy of UTKFace for a machine that can receive little data (the lent GPU
machine takes 64 MiB a call): every image re-encoded as WebP under its own name.

Training and validation images keep ``--size`` px at ``--quality``; test-split images
(the split of ``--config``) shrink to ``--test-size`` px, since that copy's test figures
are not used: the test split is evaluated on the original JPEGs. Copies of one image are
encoded alike (test encoding if any copy is a test face), so the reader finds the same
labels, defects and byte-identical copies, hence the same split. With ``--cache-to``,
a teacher cache keyed by the new files' MD5s gets the original files' descriptors
(NaN where there was none), so the copy needs no dlib to train a recipe with a teacher.
With ``--vectors-to``, the training and validation faces' descriptors go to an ``.npz``
instead (float16, keyed by file name: a third of the SQLite cache's bytes), which
``scripts/unpack_teacher_vectors.py`` turns into the copy's cache on the other machine.

    python scripts/reencode_utkface.py --config configs/cpu_distill_soft.yaml \\
        --out /tmp/utk160 --cache-to /tmp/utk160_cache

Used for the 112 px against 160 px runs on the lent H200 (docs/face_knowledge.md): WebP quality 90 at 160 px is 3.4 KB an image against 7.6 KB for the JPEGs.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import cv2
import numpy as np

from facemtl.config import load_config
from facemtl.data.dataset import read_split
from facemtl.data.teacher import DEFAULT_CACHE_DIR, FeatureCache, file_digest
from facemtl.data.utkface import image_folder
from facemtl.faces.descriptor import DIM
from facemtl.tasks import build_task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="the recipe whose split decides the test faces")
    ap.add_argument("--out", required=True, help="the new data folder (images go to OUT/UTKFace)")
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--test-size", type=int, default=64)
    ap.add_argument("--cache-from", default=DEFAULT_CACHE_DIR, help="teacher cache of the original images")
    ap.add_argument("--cache-to", help="write a teacher cache for the new files here")
    ap.add_argument("--vectors-to", help="write the train/val faces' teacher vectors (float16 .npz) here")
    ap.add_argument("--test-quality", type=int, default=60)
    args = ap.parse_args()

    cfg = load_config(args.config)
    seed = cfg.data.split_seed if cfg.data.split_seed is not None else cfg.train.seed
    table, split, _ = read_split(cfg.data, [build_task(t) for t in cfg.tasks], seed)
    test = {file_digest(p) for p, s in zip(table.paths, split) if s == "test"}
    src = image_folder(cfg.data.root)
    out = Path(args.out) / "UTKFace"
    out.mkdir(parents=True, exist_ok=True)
    renamed: dict[str, str] = {}  # original file digest -> the copy's
    kept: dict[str, str] = {}  # file name -> original digest, for the training and validation faces
    total = 0
    for path in sorted(src.glob("*.jpg")):
        raw = path.read_bytes()
        digest = hashlib.md5(raw).hexdigest()
        size, quality = (args.test_size, args.test_quality) if digest in test else (args.size, args.quality)
        image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
        ok, buf = cv2.imencode(".webp", cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA),
                               [cv2.IMWRITE_WEBP_QUALITY, quality])
        if not ok:
            raise SystemExit(f"{path}: could not be encoded as WebP")
        data = buf.tobytes()
        (out / path.name).write_bytes(data)
        total += len(data)
        renamed[digest] = hashlib.md5(data).hexdigest()
        if digest not in test:
            kept[path.name] = digest
    teacher = cfg.data.teacher
    if teacher and (args.cache_to or args.vectors_to):
        old = FeatureCache(args.cache_from, teacher, DIM)
        known = old.get(renamed)
        old.close()
        if args.cache_to:
            missing = np.full(DIM, np.nan, np.float32)
            new = FeatureCache(args.cache_to, teacher, DIM)
            new.put({copy: known.get(orig, missing) for orig, copy in renamed.items()})
            new.close()
        if args.vectors_to:
            names = sorted(n for n, d in kept.items() if d in known)
            np.savez_compressed(args.vectors_to, names=np.array(names),
                                vectors=np.stack([known[kept[n]] for n in names]).astype(np.float16))
            print(f"{args.vectors_to}: {len(names)} of {len(kept)} training and validation faces have a descriptor")
    print(f"{out}: {total / 2**20:.1f} MiB; test faces at {args.test_size} px")


if __name__ == "__main__":
    main()
