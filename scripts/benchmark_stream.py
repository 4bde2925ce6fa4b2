"""Benchmark ``facemtl stream``: end-to-end FPS beside the plain decode rate, accuracy kept, profile.

    python scripts/benchmark_stream.py --seconds 60 --out docs/results/stream_benchmark.json

Makes (once, in --work) a 640x480, 30 fps test video of test-split UTKFace faces, up to six
on screen, then measures one process that only decodes it, ``facemtl stream --json`` on it
and the same with ``--annotate``; see :func:`facemtl.video.benchmark.stream_figures`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", help="a test video with its .truth.json (default: make one)")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--detector", default="mtcnn")
    ap.add_argument("--min-face", type=float, default=60)
    ap.add_argument("--detect-every", type=int, default=5)
    ap.add_argument("--no-annotate", action="store_true")
    ap.add_argument("--model")
    ap.add_argument("--runtime")
    ap.add_argument("--data-root", default="../shared/data/utkface")
    ap.add_argument("--work", default="runs/stream_benchmark", help="where the video and annotated copy go")
    ap.add_argument("--out", help="also write the figures to this JSON file")
    a = ap.parse_args()

    from facemtl.video.benchmark import stream_figures

    figures = stream_figures(a.video, a.seconds, a.detector, a.min_face, a.detect_every, not a.no_annotate,
                             a.model, a.runtime, a.data_root, a.work)
    text = json.dumps(figures, indent=1)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
