"""The stream benchmark: end-to-end FPS of ``facemtl stream --json`` on a test video, beside
the same video's plain decode rate, with the accuracy it keeps and where the time goes.

:func:`stream_figures` measures whole processes, one after another in one call, so their
ratio holds under the machine's load at the time (reported with it):

* ``decode``: a process that only decodes every frame to RGB (PyAV, as the stream does);
* ``stream``: ``facemtl stream VIDEO --json --stats`` (every frame analysed or tracked),
  its output scored against the video's ground truth (:mod:`facemtl.video.scoring`);
* ``annotate``: the same with ``--annotate OUT.mp4`` (H.264) as well.

For each: frames, wall seconds of the whole process (model loading included), the FPS of
the stream itself (first frame to last, as the stream reports it) and the CPU seconds the
process used (user + system, all threads); for the stream, its seconds per stage summed
over threads (decode, detect, track, network, finish, output): the profile.
``scripts/benchmark_stream.py`` is the command line; ``facemtl benchmark`` can call this.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

DECODE = r"""
import sys, av
n = 0
for frame in av.open(sys.argv[1]).decode(video=0):
    frame.to_ndarray(format="rgb24")
    n += 1
print(n)
"""


def _timed(cmd: Sequence[str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """Wall and CPU seconds (user + system of the child and its threads) of one process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(list(cmd), capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return wall, cpu, proc


def _stats(stderr: str) -> dict[str, Any]:
    m = re.search(r"^facemtl: stats (\{.*\})$", stderr, re.M)
    if m is None:
        raise RuntimeError("the stream printed no stats line")
    return json.loads(m.group(1))


def stream_figures(video: str | Path | None = None, seconds: float = 60.0, detector: str = "mtcnn",
                   min_face: float | None = 60, detect_every: int = 5, annotate: bool = True,
                   model: str | Path | None = None, runtime: str | None = None, data_root: str | Path | None = None,
                   work_dir: str | Path | None = None, extra: Sequence[str] = ()) -> dict[str, Any]:
    """Measure the stream on ``video`` (made when ``None``: ``seconds`` long, 640x480 at 30 fps,
    up to six faces from ``model``'s test split, seed 0) and return the figures as a JSON-ready dict.

    ``detector``, ``min_face``, ``detect_every``, ``model``, ``runtime`` and ``extra`` (more
    flags) are passed to ``facemtl stream``. ``data_root``: UTKFace, to make the video.
    """
    from ..system import hardware
    from .scoring import read_lines, score
    from .synthetic import VideoPlan, faces_from_test_split, make_video, truth_path

    work = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="facemtl-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if video is None:
        video = work / f"street_{int(seconds)}s.mp4"
        if not video.is_file() or not truth_path(video).is_file():
            make_video(video, faces_from_test_split(model, data_root), VideoPlan(seconds=seconds))
    video = Path(video)
    truth = json.loads(truth_path(video).read_text())

    load_before = os.getloadavg()
    out: dict[str, Any] = {"video": {"file": str(video), "frames": truth["frames"], "fps": truth["fps"],
                                     "size": f"{truth['width']}x{truth['height']}", "people": len(truth["people"]),
                                     "max_people": truth["plan"]["max_people"]}}
    wall, cpu, proc = _timed([sys.executable, "-c", DECODE, str(video)])
    frames = int(proc.stdout.strip())
    out["decode"] = {"frames": frames, "wall_seconds": round(wall, 2), "fps": round(frames / wall, 1),
                     "cpu_seconds": round(cpu, 2)}

    flags = ["--json", "--stats", "--no-progress", "--detector", detector, "--detect-every", str(detect_every)]
    flags += ["--min-face", str(min_face)] if min_face is not None else []
    flags += ["--model", str(model)] if model is not None else []
    flags += ["--runtime", runtime] if runtime is not None else []
    flags += list(extra)
    base = [sys.executable, "-m", "facemtl.cli", "stream", str(video)]
    runs = {"stream": base + flags}
    if annotate:
        runs["annotate"] = base + flags + ["--annotate", str(work / "annotated.mp4")]
    for name, cmd in runs.items():
        wall, cpu, proc = _timed(cmd)
        st = _stats(proc.stderr)
        row = {"command": "facemtl stream VIDEO " + " ".join(cmd[len(base):]).replace(str(work) + "/", ""),
               "frames": st["frames"], "wall_seconds": round(wall, 2),
               "fps_end_to_end": round(st["frames"] / wall, 1), "fps_stream": st["fps"],
               "cpu_seconds": round(cpu, 2), "cpu_ms_per_frame": round(1000 * cpu / max(st["frames"], 1), 1),
               "faces": st["faces"], "analysed_faces": st["analysed_faces"], "tracks": st["tracks"],
               "stage_seconds": st["stage_seconds"], "stage_cpu_seconds": st["stage_cpu_seconds"],
               "stage_cpu_ms_per_frame": {k: round(1000 * v / max(st["frames"], 1), 1)
                                          for k, v in st["stage_cpu_seconds"].items()}}
        row["vs_decode"] = round(row["fps_stream"] / out["decode"]["fps"], 3)
        if name == "stream":
            faces, tracks = read_lines(proc.stdout.splitlines())
            row["score"] = score(truth, faces, tracks)
        out[name] = row
    s = out["stream"]["score"]
    out["targets"] = {"fps_30": out["stream"]["fps_stream"] >= 30, "recall_0.95": (s["recall"] or 0) >= 0.95,
                      "gender_85_of_people": (s["track"].get("gender_accuracy") or 0) >= 0.85}
    out["machine"] = hardware()
    out["load_average"] = {"before": [round(x, 2) for x in load_before],
                           "after": [round(x, 2) for x in os.getloadavg()]}
    return out
