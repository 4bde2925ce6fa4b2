"""Score a stream's JSON lines against a test video's ground truth (:mod:`facemtl.video.synthetic`).

Per frame, the stream's faces are matched one to one to the true faces (Hungarian method)
by *coverage*: the share of the stream's box that lies inside the true box (the pasted
crop holds the face with hair and background around it, so a detector's box is smaller
and inside it); a pair needs at least ``min_cover``. A true face counts when it is wholly
on screen (``visible`` 1); one partly off screen, entering or leaving, may be found or not
(it is neither a miss nor a false detection). Reported:

* ``recall``: true faces on screen found / true faces on screen;
* ``false_detections``: stream faces matching no true face (and per frame);
* ``id_switches``: times a person's matched track id changes from one matched frame to
  the next (CLEAR-MOT's IDSW); ``ids_per_person``; ``shared_ids``: track ids that are the
  main track (the most frequent) of more than one person;
* where people pass each other (``VideoPlan.crossing``), which of two overlapping true faces a
  stream box belongs to is a guess, so these count over *clear* frames only, where the person
  overlaps no other true face: ``id_switches_clear``, times a person's track id changes, and
  ``track_switches_clear``, times a track's person changes (a track taken over by another
  person, e.g. one entering where the track's person leaves);
* per person, from the *track lines*: each attribute of the person's main track against
  the truth (``track``: MAE for numbers, share right for classes, over people with a track);
* per analysed frame, from the face lines' ``raw`` answers (``frame``), and from their
  smoothed answers (``smoothed``, the track's running answer on each frame).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable

import numpy as np


def read_lines(lines: Iterable[str] | str | Path) -> tuple[list[dict], list[dict]]:
    """Face lines and track lines of ``stream --json`` output (a file or its lines)."""
    if isinstance(lines, (str, Path)) and Path(lines).is_file():
        lines = Path(lines).read_text().splitlines()
    faces, tracks = [], []
    for line in lines:
        if not line.strip():
            continue
        d = json.loads(line)
        (tracks if d.get("type") == "track" else faces).append(d)
    return faces, tracks


def coverage(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``(P, T)``: share of each predicted box ``(P, 4)`` inside each true box ``(T, 4)``."""
    from .tracker import box_area, intersection_matrix

    return intersection_matrix(pred, truth) / np.maximum(box_area(pred), 1e-9)[:, None]


def _attribute_scores(pairs: list[tuple[Any, Any]]) -> float | None:
    """MAE for numbers, share right for class names; ``None`` with no pairs."""
    if not pairs:
        return None
    if isinstance(pairs[0][0], str):
        return float(np.mean([str(p) == str(t) for p, t in pairs]))
    return float(np.mean([abs(float(p) - float(t)) for p, t in pairs]))


def score(truth: dict[str, Any] | str | Path, faces: list[dict], tracks: list[dict], min_cover: float = 0.5,
          min_visible: float = 1.0) -> dict[str, Any]:
    """The figures above, as a JSON-ready dict (see the module's description)."""
    from scipy.optimize import linear_sum_assignment

    from .tracker import intersection_matrix

    if not isinstance(truth, dict):
        truth = json.loads(Path(truth).read_text())
    people = {p["person"]: p for p in truth["people"]}
    attrs = sorted({k for p in truth["people"] for k in p if k not in ("person", "file")})
    by_frame: dict[int, list] = defaultdict(list)
    for f, person, x1, y1, x2, y2, visible in truth["boxes"]:
        by_frame[f].append((person, (x1, y1, x2, y2), visible))
    pred_by_frame: dict[int, list[dict]] = defaultdict(list)
    for d in faces:
        pred_by_frame[d["frame"]].append(d)

    must = found = false = 0
    seq: dict[int, list[tuple[int, int, bool]]] = defaultdict(list)  # person -> [(frame, track, clear)]
    followed: dict[int, list[tuple[int, int]]] = defaultdict(list)  # track -> [(frame, person)], clear frames
    frame_pairs: dict[str, list] = defaultdict(list)
    smooth_pairs: dict[str, list] = defaultdict(list)
    frames = sorted(set(by_frame) | set(pred_by_frame))
    for f in frames:
        tr = by_frame.get(f, [])
        pr = pred_by_frame.get(f, [])
        must += sum(v >= min_visible for _, _, v in tr)
        matched_p, matched_t = set(), set()
        if tr:
            tb = np.array([b for _, b, _ in tr], float)
            overlap = intersection_matrix(tb, tb) > 0
            np.fill_diagonal(overlap, False)
            clear = ~overlap.any(1)
        if tr and pr:
            cov = coverage(np.array([d["box"] for d in pr], float), np.array([b for _, b, _ in tr], float))
            rows, cols = linear_sum_assignment(-cov)
            for r, c in zip(rows, cols):
                if cov[r, c] < min_cover:
                    continue
                matched_p.add(r)
                matched_t.add(c)
                person, _, visible = tr[c]
                d = pr[r]
                found += visible >= min_visible
                if d.get("track") is not None:
                    seq[person].append((f, d["track"], bool(clear[c])))
                    if clear[c]:
                        followed[d["track"]].append((f, person))
                truth_p = people.get(person, {})
                for a in attrs:
                    if a in truth_p and a in d:
                        smooth_pairs[a].append((d[a], truth_p[a]))
                    if a in truth_p and a in (d.get("raw") or {}):
                        frame_pairs[a].append((d["raw"][a], truth_p[a]))
        false += len(pr) - len(matched_p)

    track_lines = {t["track"]: t for t in tracks}
    switches = clear_switches = 0
    ids_per_person, main = [], {}
    for person, s in seq.items():
        s.sort()
        ids = [tid for _, tid, _ in s]
        switches += sum(a != b for a, b in zip(ids, ids[1:]))
        clear_ids = [tid for _, tid, clear in s if clear]
        clear_switches += sum(a != b for a, b in zip(clear_ids, clear_ids[1:]))
        ids_per_person.append(len(set(ids)))
        main[person] = Counter(ids).most_common(1)[0][0]
    shared = sum(n > 1 for n in Counter(main.values()).values())
    track_switches = sum(a != b for s in followed.values() for (_, a), (_, b) in zip(s, s[1:]))
    track_pairs: dict[str, list] = defaultdict(list)
    for person, tid in main.items():
        line = track_lines.get(tid)
        if line is None:
            continue
        for a in attrs:
            if a in people[person] and a in line:
                track_pairs[a].append((line[a], people[person][a]))
    n_frames = len(by_frame) or 1

    def table(pairs: dict[str, list]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for a in attrs:
            v = _attribute_scores(pairs.get(a, []))
            key = f"{a}_accuracy" if pairs.get(a) and isinstance(pairs[a][0][0], str) else f"{a}_mae"
            out[key] = None if v is None else round(v, 4)
            out[f"{a}_n"] = len(pairs.get(a, []))
        return out

    return {
        "frames": len(by_frame),
        "faces_on_screen": int(must),
        "recall": round(found / must, 4) if must else None,
        "false_detections": int(false),
        "false_per_frame": round(false / n_frames, 4),
        "people": len(people),
        "people_tracked": len(main),
        "tracks": len(track_lines),
        "id_switches": int(switches),
        "id_switches_clear": int(clear_switches),
        "track_switches_clear": int(track_switches),
        "ids_per_person": round(float(np.mean(ids_per_person)), 3) if ids_per_person else None,
        "shared_ids": int(shared),
        "track": table(track_pairs),
        "frame": table(frame_pairs),
        "smoothed": table(smooth_pairs),
    }
