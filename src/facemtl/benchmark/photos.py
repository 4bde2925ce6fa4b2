"""Composed test photos: one to five real faces (test-split crops) pasted into a 640x480 or
1280x960 photo, with the true face boxes, so detectors can be timed and their recall counted.

The faces come from the shipped model's test split, which it never trained on. Built by
``scripts/compose_photos.py`` or by ``facemtl benchmark`` into a folder outside the
repository: ``photo_WxH_NNNN.jpg`` files and ``labels.json`` (per file, the pasted crops'
boxes ``[x1, y1, x2, y2]``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

#: Side in pixels of a pasted UTKFace crop, as a share of the photo's shorter side. The face
#: inside a crop is about half its side, so at 640x480 faces span about 45 to 125 pixels.
CROP_SHARE = (0.19, 0.52)


def compose_photos(crops: Sequence[str], out: str | Path, size: tuple[int, int], n: int, seed: int = 0) -> Path:
    """Write ``n`` photos of ``size`` (width, height) into ``out`` with their ``labels.json``; returns ``out``.

    Each photo: a smooth random colour field with a little noise, then one to five crops, each scaled to a random side in
    :data:`CROP_SHARE` and placed where it overlaps no other.
    """
    rng = np.random.default_rng(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    w, h = size
    labels: dict[str, list[list[int]]] = {}
    for k in range(n):
        grid = rng.integers(40, 220, (4, 5, 3), dtype=np.uint8)  # a smooth random colour field, no face in it
        photo = Image.fromarray(grid).resize((w, h), Image.BICUBIC)
        noise = rng.normal(0, 6, (h, w, 3))
        photo = Image.fromarray(np.clip(np.asarray(photo) + noise, 0, 255).astype(np.uint8))
        boxes: list[list[int]] = []
        for _ in range(int(rng.integers(1, 6))):
            side = int(min(w, h) * rng.uniform(*CROP_SHARE))
            for _try in range(30):
                x, y = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
                box = [x, y, x + side, y + side]
                if all(box[2] <= b[0] or box[0] >= b[2] or box[3] <= b[1] or box[1] >= b[3] for b in boxes):
                    break
            else:
                continue
            face = Image.open(crops[rng.integers(len(crops))]).convert("RGB").resize((side, side), Image.BILINEAR)
            photo.paste(face, (x, y))
            boxes.append(box)
        name = f"photo_{w}x{h}_{k:04d}.jpg"
        photo.save(out / name, quality=90)
        labels[name] = boxes
    (out / "labels.json").write_text(json.dumps(labels))
    return out


def recall(found: dict[str, list[list[float]]], labels: dict[str, list[list[int]]]) -> dict[str, float | int]:
    """Share of true faces found, and detections that match none (false positives).

    A detection finds a pasted crop when its box centre lies inside the crop and its side is
    between 0.2 and 1.2 of the crop's (the face fills about half of a UTKFace crop).
    """
    hit = total = extra = 0
    for name, truth in labels.items():
        dets = found.get(name, [])
        used = set()
        for t in truth:
            total += 1
            side = t[2] - t[0]
            for i, d in enumerate(dets):
                cx, cy, ds = (d[0] + d[2]) / 2, (d[1] + d[3]) / 2, max(d[2] - d[0], d[3] - d[1])
                if i not in used and t[0] <= cx <= t[2] and t[1] <= cy <= t[3] and 0.2 * side <= ds <= 1.2 * side:
                    used.add(i)
                    hit += 1
                    break
        extra += len(dets) - len(used)
    return {"faces": total, "found": hit, "recall": hit / total if total else float("nan"), "false_positives": extra}
