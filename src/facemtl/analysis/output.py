"""Write analysis records as a readable table, JSON lines or CSV, and draw annotated images."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any, TextIO

CSV_FIELDS = ["file", "status", "error", "face", "x1", "y1", "x2", "y2", "score"]


def _attr_fields(face: dict[str, Any]) -> list[str]:
    skip = {"box", "score", "landmarks"}
    return [k for k in face if k not in skip and not k.endswith("_probabilities")]


def _short(face: dict[str, Any]) -> str:
    parts = []
    for k in _attr_fields(face):
        v = face[k]
        if k.endswith("_interval") or k.endswith("_probability"):
            continue
        if isinstance(v, float):
            iv = face.get(f"{k}_interval")
            parts.append(f"{k} {v:.0f}" + (f" ({iv[0]}-{iv[1]})" if iv else ""))
        else:
            p = face.get(f"{k}_probability")
            parts.append(f"{k} {v}" + (f" {p:.0%}" if p is not None else ""))
    return ", ".join(parts)


def write_table(rec: dict[str, Any], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    name = rec["file"]
    if rec["status"] == "error":
        out.write(f"{name}: error: {rec['error']}\n")
        return
    if rec["status"] == "no_face":
        out.write(f"{name}: no face found\n")
        return
    out.write(f"{name}: {len(rec['faces'])} face{'s' if len(rec['faces']) != 1 else ''}\n")
    for i, f in enumerate(rec["faces"]):
        box = f["box"]
        where = f"[{box[0]:.0f}, {box[1]:.0f}, {box[2]:.0f}, {box[3]:.0f}]" if box else "whole image"
        score = f" score {f['score']:.2f}" if f.get("score") is not None else ""
        out.write(f"  #{i + 1} {where}{score}: {_short(f)}\n")


def write_json(rec: dict[str, Any], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    out.write(json.dumps(rec) + "\n")


class CsvWriter:
    """One row per face (or one row per file without faces)."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.writer: csv.DictWriter | None = None

    def write(self, rec: dict[str, Any]) -> None:
        faces = rec.get("faces") or [None]
        for i, f in enumerate(faces):
            row: dict[str, Any] = {"file": rec["file"], "status": rec["status"], "error": rec.get("error", "")}
            if f is not None:
                row["face"] = i + 1
                if f.get("box"):
                    row.update(zip(("x1", "y1", "x2", "y2"), f["box"]))
                row["score"] = f.get("score")
                for k in _attr_fields(f):
                    v = f[k]
                    row[k] = "-".join(str(x) for x in v) if isinstance(v, list) else v
                for k, v in f.items():
                    if k.endswith("_probabilities"):
                        for c, p in v.items():
                            row[f"{k[: -len('_probabilities')]}_p_{c}"] = p
            if self.writer is None:
                fields = CSV_FIELDS + [k for k in row if k not in CSV_FIELDS]
                self.writer = csv.DictWriter(self.out, fieldnames=fields, extrasaction="ignore")
                self.writer.writeheader()
            self.writer.writerow(row)


def annotate(rec: dict[str, Any], out_dir: Path) -> Path | None:
    """Draw boxes, landmarks and labels onto a copy of the image in ``out_dir``."""
    from PIL import Image, ImageDraw

    from ..data.images import load_rgb

    if rec["status"] == "error":
        return None
    img = Image.fromarray(load_rgb(rec["file"]))
    draw = ImageDraw.Draw(img)
    width = max(2, round(max(img.size) / 400))
    for f in rec.get("faces", []):
        box = f.get("box") or [0, 0, img.size[0], img.size[1]]
        draw.rectangle(box, outline=(0, 255, 0), width=width)
        for x, y in f.get("landmarks") or []:
            draw.ellipse([x - width, y - width, x + width, y + width], fill=(255, 0, 0))
        label = _short(f)
        tw = draw.textlength(label)
        ty = max(0, box[1] - 14)
        draw.rectangle([box[0], ty, box[0] + tw + 4, ty + 13], fill=(0, 0, 0))
        draw.text((box[0] + 2, ty), label, fill=(255, 255, 255))
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(rec["file"]).stem
    target = out_dir / f"{stem}.jpg"
    k = 1
    while target.exists():
        target = out_dir / f"{stem}_{k}.jpg"
        k += 1
    img.save(target, quality=90)
    return target
