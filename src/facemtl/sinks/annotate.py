"""Annotated copies: boxes, landmarks and every task's answer drawn on the decoded image.

Drawing uses the pixels the pipeline already decoded (``ImageResult.image``), so video
frames and in-memory images are drawn as readily as files, and no file is read twice.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..inference.results import ERROR, FaceResult, ImageResult
from ..system import REFUSED_BY_THE_MACHINE, probe_writable
from .base import Sink

#: Suffixes written as they came; anything else is written as PNG (lossless).
KEEP_SUFFIXES = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled scalable font
    except TypeError:  # pragma: no cover - Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def draw_faces(image: np.ndarray, faces: Sequence[FaceResult], labels: Sequence[str] | None = None) -> np.ndarray:
    """A copy of ``image`` ``(H, W, 3) uint8`` with each face's box, landmarks and label drawn.

    Line width and text size grow with the image (about 1/400 and 1/45 of its long
    side), so labels stay readable on large photos. ``labels``: one text per face
    (default: :meth:`FaceResult.describe`). A label goes above its box, or where that has no
    room or would lie on another face's box or label, inside the top of its own box, then
    inside its bottom, then below it (see :func:`_place_label`).
    """
    from PIL import Image, ImageDraw

    img = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(img)
    side = max(img.size)
    width = max(2, round(side / 400))
    font = _font(max(11, round(side / 45)))
    boxes = [f.box or [0, 0, img.size[0], img.size[1]] for f in faces]
    # every box before any label: a later face's box line would otherwise cross an earlier label
    for f, box in zip(faces, boxes):
        draw.rectangle(box, outline=(0, 255, 0), width=width)
        for x, y in f.landmarks or []:
            draw.ellipse([x - width, y - width, x + width, y + width], fill=(255, 0, 0))
    placed: list[tuple[float, float, float, float]] = []
    for k, (f, box) in enumerate(zip(faces, boxes)):
        label = _wrap(draw, labels[k] if labels is not None else f.describe(), font, img.size[0] - 4)
        x0, y0, x1, y1 = draw.multiline_textbbox((0, 0), label, font=font)
        th, tw = y1 - y0 + 4, x1 - x0 + 4
        others = boxes[:k] + boxes[k + 1:]
        tx, ty = _place_label(box, tw, th, img.size, others, placed)
        placed.append((tx, ty, tx + tw, ty + th))
        draw.rectangle([tx, ty, tx + tw, ty + th], fill=(0, 0, 0))
        draw.multiline_text((tx + 2, ty + 2 - y0), label, fill=(255, 255, 255), font=font)
    return np.asarray(img)


def _place_label(box, tw: float, th: float, size: tuple[int, int], others: Sequence, placed: Sequence) -> tuple:
    """Where a ``tw`` x ``th`` label of ``box`` goes, its top left corner, always inside the image:
    above the box (where there is room), inside its top, inside its bottom or below it, each from
    the box's left edge, then ending at its right edge; the first that lies on no other face's box
    (``others``) and no label drawn before (``placed``).

    A face at the top edge had its label drawn below its box, onto the box of a baby under it,
    right under the baby's own label, where a reader took it for the baby's (a user test); inside
    its own box's top, a label covers only its own face. Where every place lies on something (a
    crowd, a label wider than its box), the one covering least of other faces' boxes wins, then
    least of other labels, then the first: a label is never put on another face's box while a
    place off them exists."""
    w, h = size
    tops = ([box[1] - th] if box[1] >= th else []) + [box[1], box[3] - th, box[3]]
    lefts = [box[0]] + ([box[2] - tw] if box[2] - tw < box[0] else [])  # a label wider than its box
    best = None
    for top in tops:
        for left in lefts:
            tx, ty = min(max(0, left), max(0, w - tw)), min(max(0, top), max(0, h - th))
            rect = (tx, ty, tx + tw, ty + th)
            key = (sum(_overlap(rect, b) for b in others), sum(_overlap(rect, r) for r in placed))
            if best is None or key < best[0]:  # (ties: the earlier place)
                best = (key, tx, ty)
    return best[1], best[2]


def _overlap(a, b) -> float:
    """The area rectangles ``(x0, y0, x1, y1)`` share (0 where they share an edge at most)."""
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def _wrap(draw, label: str, font, width: int) -> str:
    """``label`` (answers joined by ", ") broken into lines at its commas where it would run
    past ``width`` pixels: six tasks' answers on a 200 px crop were cut off after two."""
    lines: list[str] = []
    for part in label.split(", "):
        if lines and draw.textlength(f"{lines[-1]}, {part}", font=font) <= width:
            lines[-1] = f"{lines[-1]}, {part}"
        else:
            lines.append(part)
    return ",\n".join(lines)


class AnnotateSink(Sink):
    """Writes an annotated copy of every readable image into ``out_dir``.

    A file keeps its name and, for JPEG and PNG, its format (others become PNG); a rerun
    overwrites its earlier copies. ``root``: the folder the inputs' paths are mirrored from,
    so ``root/cam1/001.jpg`` and ``root/cam2/001.jpg`` are copied to ``out_dir/cam1/001.jpg``
    and ``out_dir/cam2/001.jpg`` (the CLI passes the inputs' common folder; without it, or for
    a file outside it, copies go flat into ``out_dir``). Two inputs that would still share a
    name in one run get ``name_1``, ``name_2`` ...: given the run's files first (:meth:`plan`),
    the same ones whatever the order they are read in (otherwise in the order written).
    In-memory images become ``image_000012.png``. Each copy written is recorded in its result
    (:attr:`ImageResult.annotated`, its path). The results must carry their pixels
    (``keep_images`` in the pipeline); a large photo decoded reduced is drawn at its decoded
    size. Call :meth:`check_folder` before the first image so that a folder that cannot be
    written is found before any work is done.
    """

    def __init__(self, out_dir: str | Path, root: str | Path | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.root = Path(os.path.abspath(root)) if root is not None else None
        self._used: set[str] = set()  # (names casefolded)
        self._planned: dict[str, str] = {}  # an input's absolute path: its copy's name in out_dir

    def check_folder(self) -> None:
        """Create the folder if needed and make sure files can be written into it, before any
        image is analysed; ``FileNotFoundError`` / ``RuntimeError`` in one sentence otherwise."""
        d = self.out_dir
        if d.exists() and not d.is_dir():
            raise FileNotFoundError(f"the --annotate folder {d} is a file, not a folder")
        try:
            d.mkdir(parents=True, exist_ok=True)
            probe_writable(d)
        except OSError as exc:
            if exc.errno in REFUSED_BY_THE_MACHINE:  # exit 1, as any write the machine refuses
                raise OSError(exc.errno, f"Cannot write into the --annotate folder ({exc.strerror})", str(d)) from None
            raise RuntimeError(f"cannot write into the --annotate folder {d}: {exc.strerror or exc}") from None

    def _natural(self, file: str) -> tuple[str, str]:
        """``(stem, suffix)`` of the copy of ``file`` where no other input takes its name: ``stem``
        with the folders below the root (``cam1/001``)."""
        src = Path(file)
        # the suffix as written (a.JPG stays a.JPG: a user test found a.jpg and a.JPG copied to
        # a.jpg and a_1.jpg, in whichever order they were read)
        suffix = src.suffix if src.suffix.lower() in KEEP_SUFFIXES else ".png"
        # a format written as PNG keeps its own suffix in the name (y.gif -> y.gif.png), so the
        # copy never takes, or loses to, the name of a y.png beside it
        stem = src.stem if suffix == src.suffix else src.name
        if self.root is not None:
            try:
                stem = str(Path(os.path.abspath(src)).relative_to(self.root).parent / stem)
            except ValueError:  # outside the root: flat
                pass
        return stem, suffix

    def plan(self, files: Sequence[str]) -> None:
        """Name the copies of ``files`` (the run's inputs, all of them) before any is written, so
        that each copy's name follows from the inputs alone, never from the order they are read.

        A user test: with ``x.bmp`` and ``x.bmp.png`` in one folder, the copies were ``x.bmp.png``
        and ``x.bmp_1.png`` in whichever order the files were read, and ``x.bmp``, read first
        (sorted), took ``x.bmp.png``, the name of the other photo. Where copies would share a name
        (casefolded: such names share a file on macOS and Windows), it goes to the input whose
        copy then has its own file name (``x.bmp.png``: the name a user looks for), before one
        whose name was made up (``x.bmp`` written as PNG); among those alike, to the first path
        in code-point order (the order folders are walked: ``a.JPG`` before ``a.jpg``). The others
        get ``_1``, ``_2`` ... in that same order, never a name another input's copy has as its
        own (an ``a_1.jpg`` read beside ``a.jpg`` and ``A.jpg`` keeps its name). Planning the
        whole list, not the files left to read, also keeps the names of a run going on after a
        stopped one (``--skip-stored``) those of the first run."""
        wanted: dict[str, tuple[str, str]] = {}
        made_up: dict[str, bool] = {}  # whether the copy's file name is not the input's own
        for f in files:
            key = os.path.abspath(f)
            if key not in self._planned:
                wanted[key] = stem, suffix = self._natural(f)
                made_up[key] = Path(stem + suffix).name != Path(f).name
        later = []
        for key in sorted(wanted, key=lambda k: (made_up[k], k)):  # first each name to the input it belongs to
            stem, suffix = wanted[key]
            if (stem + suffix).casefold() in self._used:
                later.append(key)
            else:
                self._take(key, stem + suffix)
        for key in later:  # then the numbered names, past every name taken above
            self._take(key, self._free_name(*wanted[key]))

    def _take(self, key: str, name: str) -> None:
        self._planned[key] = name
        self._used.add(name.casefold())

    def _free_name(self, stem: str, suffix: str) -> str:
        """``stem + suffix`` if no copy of this run has that name (casefolded), else the first of
        ``stem_1 + suffix``, ``stem_2 + suffix`` ... that none has."""
        name, k = stem + suffix, 0
        while name.casefold() in self._used:
            k += 1
            name = f"{stem}_{k}{suffix}"
        return name

    def target(self, result: ImageResult) -> Path:
        """Where ``result``'s copy goes: its name from :meth:`plan`, or, for an input not planned,
        its own name unless an earlier copy of this run has it (then ``_1``, ``_2`` ...)."""
        planned = self._planned.get(os.path.abspath(result.file)) if result.file is not None else None
        if planned is not None:
            name = planned
        else:
            if result.file is not None:
                stem, suffix = self._natural(result.file)
            else:
                stem = f"frame_{result.frame:06d}" if result.frame is not None else f"image_{result.index:06d}"
                suffix = ".png"
            name = self._free_name(stem, suffix)
            self._used.add(name.casefold())
        path = self.out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write(self, result: ImageResult) -> None:
        """Raises ``OSError`` when the copy cannot be written (the caller records it)."""
        from PIL import Image

        if result.status == ERROR or result.image is None:
            return
        path = self.target(result)
        fmt = KEEP_SUFFIXES.get(path.suffix.lower(), "PNG")
        faces = result.faces_on_image()  # (a large photo decoded reduced: boxes in the photo's own pixels)
        Image.fromarray(draw_faces(result.image, faces)).save(path, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        result.annotated = str(path)  # (written whole: a copy that failed is named in the error instead)
        result.image = None  # drawn and written: let the pixels go
