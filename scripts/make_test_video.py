"""Make a test video with ground truth from test-split UTKFace faces, or score a stream on one.

    python scripts/make_test_video.py make out/street.mp4 --seconds 60            # + out/street.truth.json
    facemtl stream out/street.mp4 --json > out/street.jsonl
    python scripts/make_test_video.py score out/street.mp4 out/street.jsonl       # recall, id switches, accuracy

The faces are the test split of the model (default: the shipped one), which it never
trained on; see :mod:`facemtl.video.synthetic` for what the video holds and
:mod:`facemtl.video.scoring` for the figures.
"""

from __future__ import annotations

import argparse
import json
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    mk = sub.add_parser("make", help="write VIDEO and VIDEO's .truth.json")
    mk.add_argument("video")
    mk.add_argument("--seconds", type=float, default=60.0)
    mk.add_argument("--fps", type=int, default=30)
    mk.add_argument("--size", default="640x480", help="WIDTHxHEIGHT")
    mk.add_argument("--max-people", type=int, default=6)
    mk.add_argument("--seed", type=int, default=0)
    mk.add_argument("--crossing", action="store_true",
                    help="people in a lane walk either way, meeting and passing through each other")
    mk.add_argument("--model", help="whose test split to take the faces from (default: the shipped model)")
    mk.add_argument("--data-root", default="../shared/data/utkface")
    sc = sub.add_parser("score", help="score stream --json output against VIDEO's ground truth")
    sc.add_argument("video")
    sc.add_argument("lines", help="the JSON lines of facemtl stream --json")
    a = ap.parse_args()

    if a.what == "make":
        from facemtl.video.synthetic import VideoPlan, faces_from_test_split, make_video

        w, h = (int(v) for v in a.size.lower().split("x"))
        faces = faces_from_test_split(a.model, a.data_root)
        truth = make_video(a.video, faces, VideoPlan(seconds=a.seconds, fps=a.fps, width=w, height=h,
                                                     max_people=a.max_people, seed=a.seed,
                                                     crossing=a.crossing))
        print(json.dumps({"video": a.video, "frames": truth["frames"], "people": len(truth["people"])}))
    else:
        from facemtl.video.scoring import read_lines, score
        from facemtl.video.synthetic import truth_path

        faces, tracks = read_lines(a.lines)
        print(json.dumps(score(truth_path(a.video), faces, tracks), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
