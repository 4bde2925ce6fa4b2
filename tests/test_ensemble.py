"""Ensembles: several networks run as one, the mean of their raw outputs (the accurate variant)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from facemtl.inference import Predictor, default_model_path, load_predictor
from facemtl.inference.runtimes.ensemble import EnsembleRuntime, resize_batch
from fakes import TASK_SPECS, model_info


class Constant:
    """A runtime answering fixed raw outputs per face, recording the batches it was given."""

    name, precision = "fake", "fp32"

    def __init__(self, size: int, value: float, specs=None, version: str = "v1") -> None:
        self.info = model_info(specs, version=version)
        self.info.image_size = size
        self.value, self.seen = value, []

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.seen.append(batch.shape)
        return {t.name: np.full((len(batch), t.output_size), self.value, np.float32) for t in self.info.build_tasks()}


def test_the_mean_of_the_members_raw_outputs_each_at_its_own_side():
    small, large = Constant(112, 1.0), Constant(160, -3.0, version="v2")
    ens = EnsembleRuntime([small, large], ["a.onnx", "b.onnx"])
    assert ens.info.image_size == 160 and ens.precision == "fp32"
    assert [m["file"] for m in ens.info.extra["ensemble"]] == ["a.onnx", "b.onnx"]
    out = ens.run(np.zeros((3, 3, 160, 160), np.uint8))
    assert small.seen == [(3, 3, 112, 112)] and large.seen == [(3, 3, 160, 160)]
    for t in ens.info.build_tasks():
        assert out[t.name].shape == (3, t.output_size) and out[t.name].dtype == np.float32
        np.testing.assert_allclose(out[t.name], -1.0)  # (1 + -3) / 2
    # the version names the members: another member, another version
    assert EnsembleRuntime([small, Constant(160, 0.0, version="v3")]).info.version != ens.info.version
    # a Predictor over it decodes the mean like one network's outputs
    p = Predictor(ens)
    age = next(t for t in p.tasks if t.name == "age")
    assert p.predict([np.zeros((160, 160, 3), np.uint8)])[0]["age"].value == age.predict(np.full((1, 115), -1.0))[0]


def test_members_must_answer_the_same_tasks():
    other = [dict(s) for s in TASK_SPECS]
    other[2] = {**other[2], "classes": ["a", "b", "c", "d", "e"]}
    with pytest.raises(ValueError, match="b.onnx cannot join .*task 'race' differs"):
        EnsembleRuntime([Constant(112, 0), Constant(112, 0, other)], ["a.onnx", "b.onnx"])
    with pytest.raises(ValueError, match="network 2 cannot join the ensemble of network 1: it has no task 'race'"):
        EnsembleRuntime([Constant(112, 0), Constant(112, 0, TASK_SPECS[:2])])  # (a user test: it said "differs")
    with pytest.raises(ValueError, match="it answers a task 'race' network 1 has not"):
        EnsembleRuntime([Constant(112, 0, TASK_SPECS[:2]), Constant(112, 0)])
    with pytest.raises(ValueError, match="at least two"):
        EnsembleRuntime([Constant(112, 0)])
    # settings of training or the report alone do not keep a network out (a review: a CORAL-range model made
    # before its bias bands changed could not join one made after)
    banded = [{**TASK_SPECS[0], "bias_edges": [20, 40], "importance": "counts"}, *TASK_SPECS[1:]]
    EnsembleRuntime([Constant(112, 0), Constant(112, 0, banded)])
    # the same tasks listed in another order join: outputs are averaged by task name
    ens = EnsembleRuntime([Constant(112, 1.0), Constant(112, 3.0, TASK_SPECS[::-1])])
    np.testing.assert_allclose(ens.run(np.zeros((1, 3, 112, 112), np.uint8))["race"], 2.0)


def test_outputs_no_member_answers_for_are_not_averaged():
    """A training checkpoint also returns its training-only heads: only the answering tasks
    are averaged (a head only some members have would be divided by the wrong count)."""

    class WithExtra(Constant):
        def run(self, batch):
            return {**super().run(batch), "face_code": np.ones((len(batch), 128), np.float32)}

    out = EnsembleRuntime([WithExtra(112, 0.0), Constant(112, 2.0)]).run(np.zeros((2, 3, 112, 112), np.uint8))
    assert set(out) == {"age", "gender", "race"}


def test_the_ensembles_info_keeps_the_split_and_names_its_members():
    a, b = Constant(112, 0.0), Constant(160, 0.0, version="v2")
    a.info.extra = {"data": {"dataset": "utkface"}, "seed": 3, "split_tasks": [], "epoch": 7, "format": "onnx-int8",
                    "opset": 18, "source": "best.pt", "precision": "int8"}
    a.precision = "int8"
    info = EnsembleRuntime([a, b], ["a.onnx", "b.onnx"]).info
    # the split, which model_data rebuilds, its faces decoded at the ensemble's side
    assert info.extra["data"] == {"dataset": "utkface", "image_size": 160} and info.extra["seed"] == 3
    assert info.extra["format"] == "ensemble" and info.extra["precision"] == "int8+fp32"
    assert not {"epoch", "opset", "source"} & set(info.extra)  # one file's facts are in that file
    assert [(m["file"], m["image_size"], m["precision"]) for m in info.extra["ensemble"]] == \
        [("a.onnx", 112, "int8"), ("b.onnx", 160, "fp32")]


def test_resize_batch_is_pillows_bilinear_filter():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (160, 160, 3), np.uint8)
    want = np.asarray(Image.fromarray(rgb).resize((112, 112), Image.BILINEAR, reducing_gap=2.0))
    got = resize_batch(rgb.transpose(2, 0, 1)[None], 112)
    assert got.shape == (1, 3, 112, 112) and got.dtype == np.uint8
    np.testing.assert_array_equal(got[0].transpose(1, 2, 0), want)
    same = np.zeros((2, 3, 112, 112), np.uint8)
    assert resize_batch(same, 112) is same


def test_load_predictor_builds_an_ensemble_from_a_list_of_shipped_files():
    """Parity with the members run alone: the ensemble of the 160 px and the 112 px shipped
    networks answers exactly the mean of their raw outputs on the same crops."""
    from facemtl.inference.predictor import default_model_path as shipped

    rng = np.random.default_rng(1)
    crops = rng.integers(0, 256, (4, 160, 160, 3), np.uint8)
    big, small = shipped("utkface_lite0_160.onnx"), default_model_path()
    ens = load_predictor([big, small])
    assert ens.size == 160 and ens.runtime.name == "ensemble"
    a = load_predictor(big).raw(crops)
    b = load_predictor(small).raw_images(resize_batch(crops.transpose(0, 3, 1, 2), 112))
    got = ens.raw(crops)
    for t in ens.tasks:
        np.testing.assert_allclose(got[t.name], (a[t.name] + b[t.name]) / 2, rtol=1e-5, atol=1e-5)
    # one file in a list is that file; two files of one name are named by their folders too
    assert load_predictor([small]).runtime.name == "onnxruntime"
    assert [m["file"] for m in load_predictor([small, small]).info.extra["ensemble"]] == \
        ["weights/utkface_lite0.onnx"] * 2
    with pytest.raises(FileNotFoundError, match="missing.onnx does not exist"):
        load_predictor([small, "missing.onnx"])


def test_fusion_files_name_one_network_or_several(tmp_path):
    from facemtl.inference.fusion import FusionHead, default_fusion_path

    spec = json.loads(default_fusion_path().read_text())
    shipped = FusionHead.load(default_fusion_path())
    assert [p.rsplit("/", 1)[-1] for p in shipped.networks] == \
        ["utkface_lite0_160.onnx", "utkface_lite0.onnx", "utkface_lite0_seed1.onnx"] + \
        [f"utkface_lite0_160_seed{s}.onnx" for s in (1, 2, 3, 4)]
    # one network is written under "network", as files written before ensembles, which read alike
    old = {k: v for k, v in spec.items() if k != "networks"} | {"network": "model.onnx"}
    (tmp_path / "old.json").write_text(json.dumps(old))
    one = FusionHead.load(tmp_path / "old.json")
    assert one.networks == [str(tmp_path / "model.onnx")]
    one.networks = ["model.onnx"]
    assert one.to_dict()["network"] == "model.onnx" and "networks" not in one.to_dict()
    (tmp_path / "bad.json").write_text(json.dumps(old | {"networks": "model.onnx"}))
    with pytest.raises(ValueError, match="not a facemtl fusion file .*list of model files"):
        FusionHead.load(tmp_path / "bad.json")


def test_analyze_runs_an_ensemble_from_repeated_checkpoints(utkface_root, capsys):
    from facemtl.cli import main
    from facemtl.data.utkface import read_utkface
    from facemtl.inference.predictor import default_model_path as shipped

    crops = read_utkface(utkface_root, limit=20).paths[:3]
    files = [str(shipped("utkface_lite0_160.onnx")), str(default_model_path())]
    assert main(["analyze", *crops, "--aligned", "--json", "--no-progress",
                 "--checkpoint", files[0], "--checkpoint", files[1]]) == 0
    ages = [json.loads(line)["faces"][0]["age"] for line in capsys.readouterr().out.splitlines()]
    ens = load_predictor(files)
    from facemtl.images import read_square

    want = [a["age"].value for a in ens.predict([read_square(c, 160)[0] for c in crops])]
    assert ages == pytest.approx(want, abs=0.051)  # JSON rounds to 0.1 years


def test_a_fusion_file_fitted_for_other_classes_is_refused():
    """A review: only task names were compared, so a model whose classes come in another order
    mixed the descriptor's probabilities into the wrong classes, silently."""
    pytest.importorskip("dlib")
    from facemtl.inference import load_predictor
    from facemtl.inference.fusion import FusedPredictor, FusionHead, default_fusion_path

    predictor = load_predictor(device="cpu")
    head = FusionHead.load(default_fusion_path())
    FusedPredictor(predictor, head)  # the shipped pair agrees
    head.tasks["gender"] = {**head.tasks["gender"], "classes": list(reversed(head.tasks["gender"]["classes"]))}
    with pytest.raises(ValueError, match=r"fitted for task 'gender' with the classes \['female', 'male'\]"):
        FusedPredictor(predictor, head)


@pytest.mark.parametrize("edit, said", [
    (lambda d: d.update(mean=d["mean"][:64]), r"'mean' and 'std' must be lists of 128 numbers, one per descriptor "
                                              r"value, not 64 and 128"),
    (lambda d: d["tasks"]["race"].update(b=d["tasks"]["race"]["b"][:4]), r"task 'race' needs 'W' of shape \(5, 128\) "
                                                                         r"and 'b' of shape \(5,\), finite numbers"),
    (lambda d: d["std"].__setitem__(3, 0.0), r"'mean' and 'std' must be finite numbers, 'std' above 0"),
])
def test_a_fusion_file_of_the_wrong_shapes_is_refused_on_loading(tmp_path, edit, said):
    """A user test: a hand-edited fusion file whose mean held 64 values said NumPy's "operands
    could not be broadcast together with shapes (1,128) (64,)" at the first face."""
    import json

    from facemtl.inference.fusion import FusionHead, default_fusion_path

    d = json.loads(default_fusion_path().read_text())
    d.pop("networks", None), d.pop("network", None)
    edit(d)
    (tmp_path / "f.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"^.*f\.json is not a facemtl fusion file \(ValueError: " + said):
        FusionHead.load(tmp_path / "f.json")
