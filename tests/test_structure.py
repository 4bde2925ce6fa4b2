"""The shape of the house: inference apart from training, model files that cannot run code,
older run folders still readable, and the pipeline's latency bound."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
LEGACY = REPO / "tests" / "data" / "legacy_0.1.0"


def test_loading_a_model_for_inference_imports_no_training():
    code = (
        "import sys\n"
        "from facemtl.inference import FaceAnalyzer\n"
        "a = FaceAnalyzer(workers=1)\n"
        "import numpy as np\n"
        "a.predict_crops([np.zeros((a.size, a.size, 3), np.uint8)])\n"
        "print('\\n'.join(sorted(m for m in sys.modules if m.startswith('facemtl'))))\n"
    )
    mods = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "facemtl.inference.runtimes.pytorch" in mods
    leaked = [m for m in mods if m.split(".")[1:2] in (["training"], ["weighting"], ["data"], ["experiments"],
                                                        ["report"], ["losses"])]
    assert leaked == []


class _Boom:
    def __reduce__(self):
        return (Path("/tmp/facemtl-pwned").write_text, ("ran",))


def test_a_crafted_pickle_is_refused_without_running(tmp_path, capsys):
    from facemtl.checkpoint import load_checkpoint
    from facemtl.cli import main

    marker = Path("/tmp/facemtl-pwned")
    marker.unlink(missing_ok=True)
    bad = tmp_path / "model.pt"
    torch.save({"format": "facemtl-1", "model": _Boom()}, bad)
    with pytest.raises(ValueError, match="refuses to load"):
        load_checkpoint(bad)
    assert main(["analyze", str(REPO / "examples" / "astronaut.jpg"), "--checkpoint", str(bad)]) == 2
    assert main(["evaluate", "--checkpoint", str(bad)]) == 2
    assert "refuses to load" in capsys.readouterr().err
    assert not marker.exists()
    (tmp_path / "plain.pt").write_bytes(pickle.dumps({"format": "facemtl-1"}) + b"junk")
    with pytest.raises(ValueError):
        load_checkpoint(tmp_path / "plain.pt")


def test_an_old_run_folder_loads_evaluates_resumes_and_reports(utkface_root, tmp_path):
    from facemtl.cli import evaluate, train
    from facemtl.model import load_model
    from facemtl.report import write_report

    run = tmp_path / "run"
    shutil.copytree(LEGACY / "run", run)
    model, tasks, cfg, state = load_model(run / "best.pt")
    assert [t.name for t in tasks] == ["age", "gender", "race"] and state["epoch"] == 2
    m = evaluate(str(run / "best.pt"), data_root=str(utkface_root))
    assert m["_info"]["images"] == 60 and 0 <= m["gender"]["accuracy"] <= 1
    html = write_report(run, tmp_path / "report", gradcam=False)
    facts = json.loads((html.parent / "report.json").read_text())
    assert facts["bias"]["cells"] and "age_mae" in facts["bias"]["cells"][0]
    # resume the old last.pt for one more epoch
    cfg_file = run / "config.yaml"
    cfg_file.write_text(cfg_file.read_text().replace(cfg.data.root, str(utkface_root)))
    summary = train(str(cfg_file), str(run), ["train.epochs=3"], resume=True, progress=False)
    assert summary["epochs_run"] == 3


def test_an_old_experiment_folder_reports(tmp_path):
    from facemtl.report import write_report

    exp = tmp_path / "exp"
    shutil.copytree(LEGACY / "experiment", exp)
    html = write_report(exp, tmp_path / "report", gradcam=False)
    facts = json.loads((html.parent / "report.json").read_text())
    assert set(facts["variants"]) == {"proposed", "equal"}
    assert facts["variants"]["proposed"]["metrics"]["age"]["mae"]["values"]


def test_latency_bound_flushes_partial_batches():
    from facemtl.inference import FaceAnalyzer

    crops = [np.full((112, 112, 3), v, np.uint8) for v in (40, 90, 140)]
    calls = []

    def gen():
        for c in crops:
            yield c
            time.sleep(0.05)

    for latency, expected in ((None, [3]), (0.0, [1, 1, 1])):
        with FaceAnalyzer(workers=1, batch_size=64, max_latency=latency) as a:
            inner = a.predictor.predict
            a.predictor.predict = lambda cs, inner=inner: (calls.append(len(cs)), inner(cs))[1]
            calls.clear()
            out = list(a.analyze_images(gen(), aligned=True))
        assert calls == expected and [r.status for r in out] == ["ok"] * 3
