"""A small ByteTrack-style face tracker: Kalman-predicted boxes, two-stage IoU association.

Why our own: the tracker libraries were tried here. Roboflow's ``trackers`` (Apache-2.0:
ByteTrack, OC-SORT, BoT-SORT) works but requires the GUI ``opencv-python``, which clashes
with our headless OpenCV in the one ``cv2`` namespace; ``supervision`` dropped its
ByteTrack in 0.31; ``boxmot`` is AGPL and pulls CUDA torch; ``norfair`` forces
numpy < 2. ByteTrack's method is small, so it is written out here on SciPy's
``linear_sum_assignment`` (the Hungarian method).

The method (Zhang et al., "ByteTrack: Multi-Object Tracking by Associating Every
Detection Box", ECCV 2022), per frame with detections:

1. every track's box is predicted by a constant-velocity Kalman filter on
   ``(cx, cy, a, h)`` (centre, aspect ratio w/h, height; as in SORT and DeepSORT);
2. *sure* detections (score >= ``high_score``) are matched to the confirmed tracks,
   tracked or recently lost, by IoU with the predicted boxes (Hungarian, pairs under
   ``match_iou`` refused);
3. *weak* detections (``low_score`` <= score < ``high_score``) are matched to the confirmed
   tracks still unmatched (IoU >= ``low_match_iou``): an occluded or blurred face keeps
   its track instead of starting a new one. Unlike ByteTrack (tracked tracks only), a lost
   track may take a weak detection lying right on its prediction: with the detector on
   every N-th frame, a face it missed once would otherwise stay unshown until it scored
   sure again (MTCNN scores many real faces 0.95-0.99, under its sure 0.99);
4. tentative tracks (seen once, or twice if a weak detection started them) are matched to the
   detections left, sure or weak (IoU >= ``low_match_iou``); those unmatched are dropped;
5. a detection left with score >= ``new_score`` (default: every one, weak ones too) starts a
   tentative track, shown from its next match (or at once on the first frame of a stream)
   if a sure detection started it, from its second match if a weak one did (and a weak one
   lying on a track's box starts none, :meth:`Tracker._on_a_track`); a track unmatched is lost, and
   ends when lost for more than ``max_lost_time`` seconds of video time (when the caller
   gives frame times, as the stream does) or else ``max_lost`` detection rounds. A frame
   more than ``max_lost_time`` after the last one given (a camera back after an outage) is a
   scene cut: every track ends there, as when a looped file starts again (:meth:`Tracker.cut`).

Steps 4 and 5 differ from ByteTrack, where only sure detections start or confirm tracks:
MTCNN scores some real faces 0.95-0.99 on nearly every frame, under its sure 0.99, and which
do depends on the pyramid's scales (``--min-face``). On the 6 s test video of the stream tests
one person was never tracked at ``--min-face 40`` (recall 0.83 against 0.99 at 60); now 0.98
and 0.99. On all eight test videos (6-20 s, three with people crossing;
``docs/results/tracker_weak_births_study.json``, variant ``final``) the lowest recall is 0.97
at ``--min-face 40`` (0.83 before) and 0.97 at 60 (0.94), with 9 and 2 false detections
against 9 and 3 and as many id switches where nobody overlaps (2 and 0); with dlib 149 of the
166 people were tracked against 143 (2 such id switches against 1). A weak false hit is shown
only if it stands still for three detections; a weak-born track asks for no early detection
(the stream's speed side by side: 0.98x idle, 1.04x beside a busy process, within noise;
``docs/results/tracker_weak_births_speed.json``). A
first version, which showed a weak-born track at its second detection and detected again on
the next frame for it, tracked a little more (dlib: 155) but split more tracks (12 such id
switches with dlib), showed a weak false hit standing still, and had the stream detect on
every frame for one moving about (a review).

A track's first two detections give its velocity directly (the displacement over the frames
between them): the filter starts with none, and from its prior alone it would learn a face
moving 20 px a frame only over many detections. A track seen once has no velocity yet, so
it is shown on its own detection frames only.

Between detections (``facemtl stream --detect-every N``) :meth:`Tracker.predict` only moves
the boxes along their Kalman prediction; there is no per-frame image tracking. Only tracks
matched at the last detection are shown there: a lost track (the detector did not find it
at the last detection) is never shown at its predicted box, and stays unshown until a
detection matches it again. The stream then detects again on the very next frame, for a
lost track as for a new one a sure detection started (one a weak detection started waits for
the usual detections). Lost tracks age in video time or detection rounds, never in
frames, so how long a lost track may take a detection again does not depend on the frame
rate or on ``--detect-every``. State per track is a fixed-size vector: nothing
grows with the length of a stream, and ended tracks are handed back and forgotten (unlike
ByteTrack's reference code, which keeps a list of every removed track).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

TENTATIVE, TRACKED, LOST = "tentative", "tracked", "lost"
#: Most source frames one call moves the boxes ahead (a gap longer than this ends the tracks
#: by ``max_lost_time`` anyway; a reconnection after minutes must not cost minutes of steps).
MAX_STEPS = 120


def intersection_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection areas of boxes ``a (N, 4)`` and ``b (M, 4)`` (``x1, y1, x2, y2``) -> ``(N, M)``."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    return np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)


def box_area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes ``a (N, 4)`` and ``b (M, 4)`` (``x1, y1, x2, y2``) -> ``(N, M)``."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    inter = intersection_matrix(a, b)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def box_to_xyah(box: Sequence[float]) -> np.ndarray:
    """``(x1, y1, x2, y2)`` -> ``(cx, cy, w / h, h)``."""
    x1, y1, x2, y2 = (float(v) for v in box)
    h = max(y2 - y1, 1e-6)
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / h, h])


def xyah_to_box(xyah: np.ndarray) -> np.ndarray:
    """``(cx, cy, w / h, h)`` -> ``(x1, y1, x2, y2)``."""
    cx, cy, a, h = xyah[:4]
    w = a * h
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


class KalmanBoxFilter:
    """Constant-velocity Kalman filter of one box: state ``(cx, cy, a, h, vcx, vcy, va, vh)``,
    velocities in pixels (or aspect units) per frame.

    The noise follows DeepSORT/ByteTrack: standard deviations proportional to the box
    height, ``h / 20`` for positions and ``h / 160`` for velocities per frame; the aspect
    ratio is nearly fixed. ``mean (8,)`` and ``covariance (8, 8)`` are the state.
    """

    POS, VEL = 1 / 20, 1 / 160
    F = np.eye(8) + np.eye(8, k=4)  # x_{t+1} = x_t + v_t (one frame)
    H = np.eye(4, 8)

    def __init__(self, box: Sequence[float]) -> None:
        m = box_to_xyah(box)
        self.mean = np.r_[m, np.zeros(4)]
        h = m[3]
        std = np.array([2 * self.POS * h, 2 * self.POS * h, 1e-2, 2 * self.POS * h,
                        10 * self.VEL * h, 10 * self.VEL * h, 1e-5, 10 * self.VEL * h])
        self.covariance = np.diag(std**2)

    @property
    def box(self) -> np.ndarray:
        """The current estimate as ``(x1, y1, x2, y2)``."""
        return xyah_to_box(self.mean)

    def process_noise(self) -> np.ndarray:
        h = self.mean[3]
        std = np.array([self.POS * h, self.POS * h, 1e-2, self.POS * h, self.VEL * h, self.VEL * h, 1e-5, self.VEL * h])
        return np.diag(std**2)

    def predict(self) -> None:
        """One frame ahead: ``x = F x``, ``P = F P F' + Q``."""
        q = self.process_noise()
        self.mean = self.F @ self.mean
        self.covariance = self.F @ self.covariance @ self.F.T + q

    def update(self, box: Sequence[float]) -> None:
        """Correct with a measured box: ``K = P H' (H P H' + R)^-1``, ``x += K (z - H x)``, ``P -= K S K'``."""
        h = self.mean[3]
        r = np.diag(np.array([self.POS * h, self.POS * h, 1e-1, self.POS * h]) ** 2)
        s = self.H @ self.covariance @ self.H.T + r
        gain = np.linalg.solve(s, self.H @ self.covariance).T  # P H' S^-1 (S and P symmetric)
        self.mean = self.mean + gain @ (box_to_xyah(box) - self.H @ self.mean)
        self.covariance = self.covariance - gain @ s @ gain.T


@dataclass
class TrackerSettings:
    """ByteTrack's thresholds. Scores are the detector's own; ``None`` takes the detector's
    :attr:`~facemtl.faces.base.Detector.sure_score` (``high_score``) and its lowest reported
    score (``low_score`` = 0: every detection it returns)."""

    #: Detections at or above this score are *sure*: matched first, and a track they start is shown sooner.
    high_score: float | None = None
    #: Weaker detections down to this score are matched in a second round only.
    low_score: float = 0.0
    #: A detection needs this score to start a (tentative) track; default: ``low_score``, so
    #: weak detections start tracks too (shown after three detections, :attr:`Track.weak`);
    #: at ``high_score``, sure ones alone start tracks, as in ByteTrack (weak ones still confirm them).
    new_score: float | None = None
    #: Smallest IoU between a predicted box and a sure detection to match them (and from which a
    #: weak detection on a track's box starts no track, :meth:`Tracker._on_a_track`).
    match_iou: float = 0.2
    #: Smallest IoU for a weak detection (second round) and for a tentative track.
    low_match_iou: float = 0.5
    #: Detection rounds (frames with detections, :meth:`Tracker.update`) a track may stay lost
    #: before it ends, where no frame times are given; ByteTrack's buffer of 30.
    max_lost: int = 30
    #: Seconds of video time a track may stay lost (since its last match) before it ends, where
    #: frame times are given (the stream gives them): ByteTrack's 30 frames at 30 fps, whatever
    #: the frame rate and however often the detector runs. ``None``: count rounds only.
    max_lost_time: float | None = 1.0

    def __post_init__(self) -> None:
        if self.max_lost < 0:
            raise ValueError(f"max_lost must be 0 or more detection rounds, not {self.max_lost}")
        if self.max_lost_time is not None and self.max_lost_time < 0:
            raise ValueError(f"max_lost_time must be 0 or more seconds, not {self.max_lost_time}")
        for name in ("match_iou", "low_match_iou"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], not {getattr(self, name)}")


@dataclass
class Track:
    """One tracked face: its id, filter, state and the detection it was matched to last."""

    id: int
    kf: KalmanBoxFilter
    state: str = TENTATIVE
    score: float = 0.0
    #: Detection rounds since the track was last matched to a detection (0 while tracked).
    lost_for: int = 0
    hits: int = 1
    #: Started by a weak detection: shown after two more detections (three in all) instead of
    #: one, and its birth asks for no early detection (a review: a weak false hit standing still
    #: was shown, and one moving about had the stream detect on every frame).
    weak: bool = False
    #: Video time (seconds) of its last match, where the caller gives frame times.
    seen_time: float | None = None
    #: The tracker's frame count at its last match, and the box it was matched to.
    seen_frame: int = 0
    seen_box: np.ndarray | None = None

    @property
    def box(self) -> np.ndarray:
        return self.kf.box

    def _matched(self, box: np.ndarray, score: float, frame: int, time: float | None) -> None:
        """Matched to detection ``box`` on tracker frame ``frame``: correct the filter; on the
        second detection set the velocity from the displacement (the filter alone starts at 0)."""
        velocity = None
        if self.hits == 1 and self.seen_box is not None and frame > self.seen_frame:
            velocity = (box_to_xyah(box) - box_to_xyah(self.seen_box)) / (frame - self.seen_frame)
        self.kf.update(box)
        if velocity is not None:
            self.kf.mean[4:6] = velocity[:2]  # centre; size and aspect keep the filter's (near 0)
        self.score, self.lost_for, self.hits = score, 0, self.hits + 1
        self.state = TRACKED if self.hits >= self.shown_after else TENTATIVE
        self.seen_time, self.seen_frame, self.seen_box = time, frame, np.asarray(box, np.float64).copy()

    @property
    def shown_after(self) -> int:
        """Detections it needs before it is shown: 2 (its first and one more), 3 if :attr:`weak`."""
        return 3 if self.weak else 2


@dataclass
class TrackerStep:
    """What one frame did: ``tracked`` the confirmed tracks on screen, each with the index of
    its detection in this frame (``None`` on a frame without detections, where the box is the
    prediction of a track matched at the last detection); ``started`` tentative tracks
    new this frame with their detection; ``unshown`` tentative tracks matched again but not
    shown yet (a weak-born track's second match), with their detection; ``ended`` confirmed
    tracks that ended (lost too long, or closed); ``dropped`` tentative tracks forgotten
    (never confirmed)."""

    tracked: list[tuple[Track, int | None]] = field(default_factory=list)
    started: list[tuple[Track, int]] = field(default_factory=list)
    unshown: list[tuple[Track, int]] = field(default_factory=list)
    ended: list[Track] = field(default_factory=list)
    dropped: list[Track] = field(default_factory=list)


def _match(tracks: list[Track], boxes: np.ndarray, det_idx: list[int], min_iou: float):
    """Hungarian matching by IoU: -> (pairs (track, det), unmatched tracks, unmatched det indices)."""
    if not tracks or not det_idx:
        return [], list(tracks), list(det_idx)
    from scipy.optimize import linear_sum_assignment

    iou = iou_matrix(np.array([t.box for t in tracks]), boxes[det_idx])
    rows, cols = linear_sum_assignment(-iou)
    pairs, used_t, used_d = [], set(), set()
    for r, c in zip(rows, cols):
        if iou[r, c] >= min_iou:
            pairs.append((tracks[r], det_idx[c]))
            used_t.add(r)
            used_d.add(c)
    return (pairs, [t for i, t in enumerate(tracks) if i not in used_t],
            [d for j, d in enumerate(det_idx) if j not in used_d])


class Tracker:
    """ByteTrack-style tracker for one stream (see the module's description).

    ``update(boxes (M, 4), scores (M,), time)`` on a frame with detections, ``predict(time)`` on
    a frame without; both return a :class:`TrackerStep`. ``time``: the frame's time in seconds
    (optional; without it lost tracks age in detection rounds only). ``close()`` ends every
    open track. Track ids count from 1 in each tracker.
    """

    def __init__(self, settings: TrackerSettings | None = None, sure_score: float = 0.5) -> None:
        self.settings = settings or TrackerSettings()
        self.high = self.settings.high_score if self.settings.high_score is not None else sure_score
        self.new_score = self.settings.new_score if self.settings.new_score is not None else self.settings.low_score
        self.tracks: list[Track] = []
        self._next_id = 1
        self._frames = 0
        self._time: float | None = None  # the time of the last frame given, where one is

    def __len__(self) -> int:
        return len(self.tracks)

    def _advance(self, steps: int = 1) -> None:
        """Move every box ``steps`` frames of the source ahead (frames dropped or skipped since the
        last call count: a face keeps moving while its frames are not analysed)."""
        steps = int(min(max(steps, 1), MAX_STEPS))
        for t in self.tracks:
            for _ in range(steps):
                if t.state == LOST:
                    t.kf.mean[7] = 0.0  # a lost box keeps its size (ByteTrack)
                t.kf.predict()
        self._frames += steps

    def _expired(self, t: Track, time: float | None) -> bool:
        """Lost too long: in video time where it is known, else in detection rounds."""
        if t.state != LOST:
            return False
        limit = self.settings.max_lost_time
        if limit is not None and time is not None and t.seen_time is not None:
            return time - t.seen_time > limit + 1e-9
        return t.lost_for > self.settings.max_lost

    def _age_out(self, step: TrackerStep, time: float | None) -> None:
        keep = []
        for t in self.tracks:
            (step.ended if self._expired(t, time) else keep).append(t)
        self.tracks = keep

    def _step(self, time: float | None, steps: int) -> tuple[TrackerStep, int]:
        """A new frame's step, and the frames to move the boxes: a frame more than ``max_lost_time``
        seconds after the last one is a scene cut (:meth:`cut`; its ended tracks in the step, the
        boxes moved one frame). A source silent that long (a camera that reconnected) would have
        its people of before shown again at their old boxes, their tracks stretched over the
        outage (a user test: one ended 55 s after the person was last seen)."""
        gap = None if time is None or self._time is None else time - self._time
        self._time = time if time is not None else self._time
        limit = self.settings.max_lost_time
        if gap is not None and limit is not None and gap > limit + 1e-9:
            return self.cut(), 1
        return TrackerStep(), steps

    def predict(self, time: float | None = None, steps: int = 1) -> TrackerStep:
        """A frame without detections: every box moves along its prediction. Shown: the tracks
        matched at the last detection and seen at least twice (a track seen once has no velocity:
        its box would stand still while the face moves)."""
        step, steps = self._step(time, steps)
        self._advance(steps)
        step.tracked = [(t, None) for t in self.tracks if t.state == TRACKED and t.hits > 1]
        self._age_out(step, time)
        return step

    def update(self, boxes: np.ndarray | Sequence, scores: np.ndarray | Sequence,
               time: float | None = None, steps: int = 1) -> TrackerStep:
        """A frame with detections ``boxes (M, 4)`` (``x1, y1, x2, y2``) and ``scores (M,)``, at
        ``time`` seconds of video time (optional), ``steps`` frames of the source after the
        previous call (frames a live reader dropped, or the FPS cap skipped, count: the boxes
        move that far; at most :data:`MAX_STEPS`)."""
        s = self.settings
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        step, steps = self._step(time, steps)
        first = self._frames == 0
        self._advance(steps)
        sure = [i for i in range(len(scores)) if scores[i] >= self.high]
        weak = [i for i in range(len(scores)) if s.low_score <= scores[i] < self.high]
        confirmed = [t for t in self.tracks if t.state != TENTATIVE]
        tentative = [t for t in self.tracks if t.state == TENTATIVE]

        pairs, unmatched, sure_left = _match(confirmed, boxes, sure, s.match_iou)       # 1: sure detections
        more, left, weak_left = _match(unmatched, boxes, weak, s.low_match_iou)  # 2: weak, tracked or lost
        # 3: tentative, by any detection left (ByteTrack: sure ones only; see the module's description)
        confirm, unconfirmed, new = _match(tentative, boxes, sorted(sure_left + weak_left), s.low_match_iou)

        for t, d in pairs + more + confirm:
            t._matched(boxes[d], float(scores[d]), self._frames, time)
            if t.state == TRACKED:
                step.tracked.append((t, d))
            else:  # a weak-born track seen twice: still tentative, its crop analysed all the same
                step.unshown.append((t, d))
        for t in left:  # lost: not shown until a detection matches it again
            t.state = LOST
            t.lost_for += 1
        dropped = {id(t) for t in unconfirmed}
        step.dropped.extend(unconfirmed)
        self.tracks = [t for t in self.tracks if id(t) not in dropped]
        for d in sorted(new, key=lambda i: -scores[i]):  # surest first: a face's weak second box then finds
            weak = bool(scores[d] < self.high)            # the track its sure box started (a review)
            if scores[d] < self.new_score or (weak and self._on_a_track(boxes[d])):
                continue
            at_once = first and not weak  # a stream's first frame: sure faces are shown at once
            t = Track(self._next_id, KalmanBoxFilter(boxes[d]), TRACKED if at_once else TENTATIVE, float(scores[d]),
                      seen_time=time, seen_frame=self._frames, seen_box=boxes[d].copy(), weak=weak)
            self._next_id += 1
            self.tracks.append(t)
            if t.state == TRACKED:
                step.tracked.append((t, d))
            else:
                step.started.append((t, d))
        self._age_out(step, time)
        return step

    def _on_a_track(self, box: np.ndarray) -> bool:
        """Whether ``box`` lies on a track's box: IoU ``match_iou`` or more, or half of the smaller
        of the two inside the other. A weak second box on a tracked face (MTCNN's last suppression
        keeps boxes overlapping up to 0.7 of the smaller, so a small one on a face's corner has an
        IoU under 0.1) starts no track of its own. Lost and tentative tracks count too: a weak new
        face that close to one waits until that track ends (at most ``max_lost_time``) or until it
        scores sure, which is never blocked (ByteTrack started no track from a weak face at all)."""
        if not self.tracks:
            return False
        box = np.asarray(box, np.float64)[None]
        others = np.array([t.box for t in self.tracks])
        smaller = np.minimum(box_area(box)[:, None], box_area(others)[None, :])
        inside = intersection_matrix(box, others) / np.maximum(smaller, 1e-12)  # (a box of no area: none inside)
        return bool((iou_matrix(box, others) >= self.settings.match_iou).any() or (inside >= 0.5).any())

    def cut(self) -> TrackerStep:
        """A scene cut (a file played again from its start, or a gap in time longer than
        ``max_lost_time``, which :meth:`update` and :meth:`predict` cut at themselves): every
        track ends, as at :meth:`close`, and the next frame's faces start confirmed tracks, as
        a stream's first frame's do; ids go on."""
        step = self.close()
        self._frames = 0
        return step

    def close(self) -> TrackerStep:
        """End every open track (the stream ended): confirmed ones in ``ended``, tentative in ``dropped``."""
        step = TrackerStep()
        for t in self.tracks:
            if t.state == TENTATIVE:
                step.dropped.append(t)
            else:
                step.ended.append(t)
        self.tracks = []
        return step
