"""Test videos with ground truth: real UTKFace faces moving over a moving background.

The faces come from the test split of the model under test (:func:`faces_from_test_split`: the
model's own seeded random split, so it never trained on them). Each person crosses the
screen in one of three horizontal lanes, entering at one edge and leaving at the other,
slowly growing or shrinking (between ``min_side`` and ``max_side`` pixels), while the
background pans. At most ``max_people`` are on screen; people enter and leave all the time.
Frames vary as video does: the light flickers, some frames of a face are motion-blurred,
there is sensor noise, and H.264 compresses it all, so single frames disagree and a
track's aggregate has something to gain.

The ground truth (``<video>.truth.json``) holds per person the face file and its labels
(class names, as the model's tasks call them) and per frame every person's box
(``x1, y1, x2, y2``: the pasted face crop, partly off screen while entering or leaving)
with the share of it inside the frame. With ``crossing``, people in a lane walk either way, so
they meet and pass through each other: the later entrant is drawn over the earlier one, whose
``visible`` share then also leaves out what the face over it covers. :mod:`facemtl.video.scoring` scores a stream's
JSON lines against it. ``scripts/make_test_video.py`` is the command line.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

import numpy as np


@dataclass
class FaceSpec:
    """One person's face: an aligned crop file and its labels (``{"age": 31, "gender": "female", ...}``)."""

    path: str
    labels: dict[str, Any]


@dataclass
class VideoPlan:
    """What to generate. Sides are the pasted crop's, in pixels; ``stay`` the seconds a person
    takes to cross the screen (drawn per lane); ``blur_share`` the share of a face's frames
    that are motion-blurred. Three lanes of a 480-pixel frame hold faces up to 140 px
    (with their sway) without overlapping or leaving the frame at the top or bottom.
    ``crossing``: each person walks their lane in either direction (drawn per person), so people
    in a lane meet and pass through each other, the later entrant hiding the earlier one."""

    seconds: float = 10.0
    fps: int = 30
    width: int = 640
    height: int = 480
    max_people: int = 6
    min_side: int = 90
    max_side: int = 140
    stay: tuple[float, float] = (4.0, 8.0)
    blur_share: float = 0.15
    noise: float = 3.0
    crf: int = 20
    seed: int = 0
    crossing: bool = False


def faces_from_test_split(model: str | Path | None = None, data_root: str | Path | None = None) -> list[FaceSpec]:
    """The test-split faces of ``model`` (default: the shipped one): its data config and seed,
    so the model never trained on them. Needs the training extra (the data readers)."""
    from ..data.dataset import label_columns, split_as_trained
    from ..inference.predictor import DEFAULT_CHECKPOINT, default_model_path
    from ..model import load_model

    _, tasks, cfg, state = load_model(model or default_model_path(DEFAULT_CHECKPOINT))
    if data_root is not None:
        cfg.data.root = str(data_root)
    # split as the model's training split it (a grid variant of fewer tasks was split on them all)
    test = split_as_trained(cfg.data, tasks, cfg.train.seed, state.get("split_tasks"), load_images=False).test
    labels = test.labels.numpy()
    cols = label_columns(tasks)  # a vector label (a teacher's) spans several columns
    out = []
    for i, path in enumerate(test.paths):
        d: dict[str, Any] = {}
        for t, c in zip(tasks, cols):
            if not t.inference:
                continue
            v = labels[i, c]
            if np.isnan(v):
                continue
            names = t.class_names()
            d[t.name] = names[int(v)] if names is not None else float(v)
        out.append(FaceSpec(str(path), d))
    return out


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth, muted, face-free texture ``(h, w, 3) uint8`` to pan over: luminance blobs at
    three scales with a faint tint, and rectangles for hard edges (shelves, doors, posters)."""
    import cv2

    lum = np.zeros((h, w), np.float32)
    for sigma, weight in ((50, 40.0), (15, 20.0), (3, 6.0)):
        noise = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), sigma)
        lum += weight * noise / (noise.std() + 1e-6)
    tint = cv2.GaussianBlur(rng.normal(0, 1, (h, w, 3)).astype(np.float32), (0, 0), 80)
    bg = lum[..., None] + 12 * tint / (tint.std() + 1e-6) + np.array([120, 125, 115], np.float32)
    for _ in range(40):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        cv2.rectangle(bg, (x, y), (x + int(rng.integers(20, 160)), y + int(rng.integers(10, 120))),
                      tuple(float(c) for c in rng.uniform(60, 200, 3)), int(rng.choice([-1, 2, 4])))
    return np.clip(bg, 0, 255).astype(np.uint8)


def _feather(side: int, edge: int = 4) -> np.ndarray:
    """``(side, side, 1) float32`` alpha: 1 inside, falling to 0 over ``edge`` pixels at the border."""
    r = np.arange(side, dtype=np.float32)
    d = np.minimum(r, r[::-1])
    return np.clip(np.minimum(d[:, None], d[None, :]) / edge, 0, 1)[..., None]


@dataclass
class _Person:
    person: int
    face: FaceSpec
    lane: int
    start: int  # first frame
    frames: int  # frames from entering at one edge to leaving at the other
    side0: float
    side1: float
    direction: int  # +1: left to right
    wobble: float  # vertical sway amplitude, px
    phase: float

    def box(self, f: int, width: int, lane_y: float) -> tuple[float, float, float, float]:
        """The face's square at frame ``f``: it enters fully outside one edge and leaves past the other."""
        u = (f - self.start) / max(self.frames - 1, 1)
        side = self.side0 + (self.side1 - self.side0) * u
        x = -side + u * (width + side) if self.direction > 0 else width - u * (width + side)
        y = lane_y - side / 2 + self.wobble * np.sin(self.phase + 2 * np.pi * u)
        return (x, y, x + side, y + side)


def plan_people(faces: Sequence[FaceSpec], plan: VideoPlan) -> list[_Person]:
    """Who crosses when: three lanes, each with its own speed and direction (with ``crossing``,
    a direction per person), people entering when there is room behind the last one to enter
    their lane from the same edge and fewer than ``max_people`` are on screen."""
    rng = np.random.default_rng(plan.seed)
    n_frames = int(round(plan.seconds * plan.fps))
    lanes = [{"frames": int(rng.uniform(*plan.stay) * plan.fps), "dir": int(rng.choice([-1, 1]))} for _ in range(3)]
    order = rng.permutation(len(faces))
    people: list[_Person] = []
    lane_last: dict[tuple[int, int], _Person] = {}  # (lane, direction) -> the last to enter there
    k = 0
    for f in range(n_frames):
        on = [p for p in people if p.start <= f < p.start + p.frames]
        if len(on) >= plan.max_people:
            continue
        for lane in rng.permutation(3):
            if len(on) >= plan.max_people or k >= len(order):
                break
            L = lanes[lane]
            side0 = float(rng.uniform(plan.min_side, plan.max_side))
            direction = int(rng.choice([-1, 1])) if plan.crossing else L["dir"]
            last = lane_last.get((int(lane), direction))
            if last is not None:
                # room: the last entrant's trailing edge is this far in, in pixels of travel
                done = (f - last.start) / max(last.frames - 1, 1) * (plan.width + last.side0)
                gap = float(rng.uniform(40, 200))
                if done < max(last.side0, last.side1) + max(side0, plan.max_side) + gap:
                    continue
                if f == 0:
                    continue
            side1 = float(np.clip(side0 * rng.uniform(0.8, 1.25), plan.min_side, plan.max_side))
            p = _Person(len(people) + 1, faces[order[k]], int(lane), f, L["frames"], side0, side1, direction,
                        float(rng.uniform(0, 8)), float(rng.uniform(0, 2 * np.pi)))
            if f == 0:  # the video starts mid-scene: the first people are already inside
                p.start = -int(rng.uniform(0.2, 0.7) * L["frames"])
            people.append(p)
            lane_last[int(lane), direction] = p
            on.append(p)
            k += 1
    return people


def _motion_blur(img: np.ndarray, length: int) -> np.ndarray:
    import cv2

    kernel = np.zeros((1, length), np.float32)
    kernel[0, :] = 1.0 / length
    return cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REPLICATE)


def _covered(rect: tuple[int, int, int, int], above: Sequence[tuple[int, int, int, int]]) -> int:
    """Pixels of ``rect`` (``x, y, w, h``) that the rectangles ``above`` (drawn over it) cover."""
    x, y, w, h = rect
    if not any(ax < x + w and x < ax + aw and ay < y + h and y < ay + ah for ax, ay, aw, ah in above):
        return 0
    hidden = np.zeros((h, w), bool)
    for ax, ay, aw, ah in above:
        hidden[max(ay - y, 0) : max(ay + ah - y, 0), max(ax - x, 0) : max(ax + aw - x, 0)] = True
    return int(hidden.sum())


def make_video(out: str | Path, faces: Sequence[FaceSpec], plan: VideoPlan | None = None) -> dict[str, Any]:
    """Write the video ``out`` (H.264 MP4) and ``out``'s ``.truth.json``; returns the truth."""
    import av
    import cv2

    plan = plan or VideoPlan()
    if not faces:
        raise ValueError("make_video needs at least one face")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(plan.seed + 1)
    W, H = plan.width, plan.height
    bg = _background(rng, H + 80, W * 2)
    people = plan_people(faces, plan)
    lane_y = [H * (k + 0.5) / 3 for k in range(3)]
    crops: dict[int, np.ndarray] = {}
    masks: dict[int, np.ndarray] = {}
    n_frames = int(round(plan.seconds * plan.fps))
    boxes: list[list] = []
    used: set[int] = set()

    container = av.open(str(out), "w", options={"movflags": "+faststart"})
    stream = container.add_stream("libx264", rate=plan.fps)
    stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
    stream.options = {"crf": str(plan.crf), "preset": "veryfast"}
    noise = [rng.normal(0, plan.noise, (H, W, 3)).astype(np.int16) for _ in range(7)]  # sensor noise, cycled
    try:
        for f in range(n_frames):
            t = f / plan.fps
            ox = int((W / 2) * (1 + np.sin(2 * np.pi * t / 23.0)))  # the camera pans slowly
            oy = int(40 + 30 * np.sin(2 * np.pi * t / 9.0))
            frame = bg[oy : oy + H, ox : ox + W].copy()
            drawn: list[tuple[int, int, int, int, int, int]] = []  # person, box, its part in the frame
            for p in people:
                if not p.start <= f < p.start + p.frames:
                    continue
                x1, y1, x2, y2 = p.box(f, W, lane_y[p.lane])
                side = int(round(x2 - x1))
                xi, yi = int(round(x1)), int(round(y1))
                x0, y0 = max(0, xi), max(0, yi)
                vis_w, vis_h = min(W, xi + side) - x0, min(H, yi + side) - y0
                if vis_w <= 0 or vis_h <= 0:
                    continue
                if p.person not in crops:
                    crops[p.person] = cv2.cvtColor(cv2.imread(p.face.path), cv2.COLOR_BGR2RGB)
                face = cv2.resize(crops[p.person], (side, side), interpolation=cv2.INTER_AREA)
                if rng.random() < plan.blur_share:
                    face = _motion_blur(face, int(rng.integers(7, 16)))
                if side not in masks:
                    masks[side] = _feather(side)
                sl = (slice(y0 - yi, y0 - yi + vis_h), slice(x0 - xi, x0 - xi + vis_w))
                a = masks[side][sl]
                region = frame[y0 : y0 + vis_h, x0 : x0 + vis_w]
                region[:] = (a * face[sl] + (1 - a) * region).astype(np.uint8)
                drawn.append((p.person, xi, yi, side, x0, y0, vis_w, vis_h))
                used.add(p.person)
            for i, (person, xi, yi, side, x0, y0, vis_w, vis_h) in enumerate(drawn):
                shown = vis_w * vis_h - _covered((x0, y0, vis_w, vis_h), [d[4:] for d in drawn[i + 1 :]])
                boxes.append([f, person, xi, yi, xi + side, yi + side, round(shown / float(side * side), 3)])
            light = 1 + 0.12 * np.sin(2 * np.pi * t / 3.7) + rng.normal(0, 0.03)
            frame = cv2.convertScaleAbs(frame, alpha=light).astype(np.int16) + noise[f % len(noise)]
            vf = av.VideoFrame.from_ndarray(np.clip(frame, 0, 255).astype(np.uint8), format="rgb24")
            vf.pts, vf.time_base = f, Fraction(1, plan.fps)
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    truth = {
        "video": out.name, "fps": plan.fps, "width": W, "height": H, "frames": n_frames, "plan": asdict(plan),
        "people": [{"person": p.person, "file": Path(p.face.path).name, **p.face.labels}
                   for p in people if p.person in used],
        "boxes_columns": ["frame", "person", "x1", "y1", "x2", "y2", "visible"],
        "boxes": boxes,
    }
    truth_path(out).write_text(json.dumps(truth) + "\n")
    return truth


def truth_path(video: str | Path) -> Path:
    """Where the ground truth of ``video`` lives: ``name.truth.json`` beside it."""
    video = Path(video)
    return video.with_name(video.stem + ".truth.json")
