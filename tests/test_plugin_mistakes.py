"""A plugin's mistakes are said in one sentence that names the plugin's part (user tests of
plugins: a task type without ``kind``, a detector answering one Face, a weighting answering a
float, a loss giving NaN each failed later, elsewhere, or not at all)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_recipe
from torch import nn

from facemtl.cli import main
from facemtl.faces import DETECTORS, Detector, Face
from facemtl.model import BACKBONES, MultiTaskNet
from facemtl.tasks import TASK_TYPES, build_task
from facemtl.tasks.regression import RegressionTask
from facemtl.weighting import WEIGHTINGS, Weighting

PHOTO = Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg"


@pytest.fixture
def register():
    """``register(REGISTRY, name)``: a registration decorator whose entry is removed after the test
    (registered at import, these broken pieces reached other modules' tests, which list every
    registered name)."""
    done = []

    def reg(registry, name):
        done.append((registry, name))
        return registry.register(name)

    yield reg
    for registry, name in done:
        registry._items.pop(name, None)


# -- task types ------------------------------------------------------------------------------
def test_a_task_type_takes_the_name_it_is_registered_under_as_its_kind(register):
    @register(TASK_TYPES, "mistake_inherits_kind")
    @dataclass
    class Inherits(RegressionTask):  # no kind of its own: it read "regression", its parent's
        pass

    assert Inherits.kind == "mistake_inherits_kind" and RegressionTask.kind == "regression"
    task = Inherits(name="score")
    again = build_task(task.to_dict())  # what a model file stores and reads back
    assert type(again) is Inherits  # (was: a RegressionTask, decoded by the parent's rules)

    class Other(RegressionTask):
        kind = "mistake_other"

    with pytest.raises(ValueError, match="says kind = 'mistake_other' but is registered as 'mistake_misnamed'"):
        register(TASK_TYPES, "mistake_misnamed")(Other)
    assert "mistake_misnamed" not in TASK_TYPES

    class StoredAsRegression(RegressionTask):  # on purpose: its models read back as a stock regression
        kind = "regression"

    register(TASK_TYPES, "mistake_stored_as_regression")(StoredAsRegression)
    assert StoredAsRegression.kind == "regression"


def test_a_missing_method_is_named_with_its_class(tmp_path, capsys, utkface_root, register):
    """A weighting that leaves weights() out: the command line said "facemtl: error: " and nothing
    more (a bare NotImplementedError)."""

    @register(WEIGHTINGS, "mistake_no_weights")
    class NoWeights(Weighting):
        def forward(self, losses, model=None):
            return torch.stack(list(losses.values())).sum()

    recipe = tiny_recipe(tmp_path, utkface_root, limit=40, epochs=1, batch_size=16)
    assert main(["train", "--config", str(recipe), "--out", str(tmp_path / "run"), "--no-progress",
                 "weighting.name=mistake_no_weights", "train.max_batches=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"facemtl: error: {__name__}.test_a_missing_method_is_named_with_its_class.<locals>.NoWeights "
                   "does not implement weights(), which facemtl train needs (a class of your own: define weights in "
                   "it; its base class's docstring says what it returns)")


# -- training ----------------------------------------------------------------------------------
class FloatTotal(Weighting):
    def forward(self, losses, model=None):
        return float(sum(float(v) for v in losses.values()))

    def weights(self):
        return {t: 1.0 for t in self.task_names}


class NanTotal(FloatTotal):
    def forward(self, losses, model=None):
        return torch.stack(list(losses.values())).sum() * float("nan")


def not_a_module(tasks):
    return object()


WEIGHTING_MISTAKES = {"mistake_float_total": FloatTotal, "mistake_nan_total": NanTotal,
                      "mistake_not_a_module": not_a_module}


@pytest.mark.parametrize("name, said", [
    ("mistake_float_total", "the loss weighting 'mistake_float_total' gave a float; it must give the total loss as "
                            "a 0-dim tensor"),
    ("mistake_not_a_module", "loss weighting 'mistake_not_a_module' was built as an object of type object; a "
                             "weighting is a torch nn.Module"),
    ("mistake_nan_total", "training stopped in epoch 1: the total of the loss weighting 'mistake_nan_total' is nan "
                          "while every task's loss is finite"),
])
def test_a_broken_weighting_stops_training_naming_it(tmp_path, capsys, utkface_root, name, said, register):
    register(WEIGHTINGS, name)(WEIGHTING_MISTAKES[name])
    recipe = tiny_recipe(tmp_path, utkface_root, limit=40, epochs=2, batch_size=16)
    assert main(["train", "--config", str(recipe), "--out", str(tmp_path / "run"), "--no-progress",
                 f"weighting.name={name}", "train.max_batches=1"]) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err
    if name == "mistake_nan_total":  # (was: both epochs trained and saved NaN weights without a word)
        assert err.strip().endswith("; nothing was trained to keep")
        assert not (tmp_path / "run" / "best.pt").exists()


def test_a_task_whose_loss_turns_nan_stops_training_keeping_the_epochs_before(tmp_path, capsys, utkface_root,
                                                                              register):
    @register(TASK_TYPES, "mistake_nan_later")
    @dataclass
    class NanLater(RegressionTask):
        """A regression whose loss is NaN from its second epoch (its 2nd step, one step an epoch)."""

        def _loss(self, out, y):
            NanLater.calls = getattr(NanLater, "calls", 0) + 1
            loss = super()._loss(out, y)
            return loss * float("nan") if NanLater.calls > 1 else loss

    recipe = tiny_recipe(tmp_path, utkface_root, limit=40, epochs=3, batch_size=16)
    text = recipe.read_text().replace("type: ordinal", "type: mistake_nan_later")
    recipe.write_text(text)
    run = tmp_path / "run"
    assert main(["train", "--config", str(recipe), "--out", str(run), "--no-progress", "train.max_batches=1"]) == 2
    err = capsys.readouterr().err
    assert (f"facemtl: error: training stopped in epoch 2: the training loss of task 'age' is nan (a learning rate "
            f"too high, or a task type, loss or weighting of your own that gives NaN); the 1 epoch(s) before it are "
            f"kept in {run} (last.pt to resume from, best.pt)") in err
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1] and (run / "last.pt").is_file()


def test_a_loss_that_fails_names_its_task(tmp_path, capsys, utkface_root, register):
    @register(TASK_TYPES, "mistake_wrong_width")
    @dataclass
    class WrongWidth(RegressionTask):
        def _loss(self, out, y):
            return ((out.view(-1) - y.repeat(2)) ** 2).mean()  # N outputs against 2N targets

    recipe = tiny_recipe(tmp_path, utkface_root, limit=40, epochs=1, batch_size=16)
    recipe.write_text(recipe.read_text().replace("type: ordinal", "type: mistake_wrong_width"))
    assert main(["train", "--config", str(recipe), "--out", str(tmp_path / "run"), "--no-progress",
                 "train.max_batches=1"]) == 2
    err = capsys.readouterr().err
    assert "facemtl: error: the loss of task 'age' (" in err and "WrongWidth) failed: RuntimeError: The size of " \
        "tensor a (16) must match the size of tensor b (32)" in err


# -- networks ----------------------------------------------------------------------------------
class _Stages(nn.Module):
    def __init__(self, stages, num_features, mean=(0.5, 0.5, 0.5)):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.num_features, self.mean, self.std = num_features, list(mean), [0.5, 0.5, 0.5]


def flattens(**kw):  # its last stage pools and flattens: the network pools by itself
    return _Stages([nn.Conv2d(3, 8, 3), nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())], 8)


def says_16(**kw):
    return _Stages([nn.Conv2d(3, 8, 3)], 16)


def no_keywords():
    return _Stages([nn.Conv2d(3, 8, 3)], 8)


def grey_mean(**kw):
    return _Stages([nn.Conv2d(3, 8, 3)], 8, mean=(0.5,))


def fine(**kw):
    return _Stages([nn.Conv2d(3, 8, 3)], 8)


BACKBONE_MISTAKES = {"mistake_flattens": flattens, "mistake_says_16": says_16, "mistake_no_keywords": no_keywords,
                     "mistake_grey_mean": grey_mean}


@pytest.mark.parametrize("backbone, said", [
    ("mistake_flattens", "backbone 'mistake_flattens''s last stage gives shape (2, 8) for a batch of (2, 3, 32, 32); "
                         "it must give (N, num_features, H, W) = (2, 8, H, W)"),
    ("mistake_says_16", "backbone 'mistake_says_16''s last stage gives shape (2, 8, 30, 30) for a batch of "
                        "(2, 3, 32, 32); it must give (N, num_features, H, W) = (2, 16, H, W)"),
    ("mistake_no_keywords", "backbone 'mistake_no_keywords' could not be built: no_keywords() got an unexpected "
                            "keyword argument 'pretrained'; facemtl calls a backbone's factory as "
                            "factory(pretrained=bool, drop_path=float)"),
    ("mistake_grey_mean", "backbone 'mistake_grey_mean' has mean [0.5] and std [0.5, 0.5, 0.5]; each is three "
                          "numbers"),
])
def test_a_backbone_that_breaks_the_rules_is_named_before_training(backbone, said, register):
    register(BACKBONES, backbone)(BACKBONE_MISTAKES[backbone])
    task = build_task({"name": "age", "type": "regression"})
    with pytest.raises(ValueError) as err:
        MultiTaskNet([task], backbone, pretrained=False).check_shapes(32)
    assert said in str(err.value)


def test_a_head_of_the_wrong_width_is_named_before_training(register):
    register(BACKBONES, "mistake_fine")(fine)

    @register(TASK_TYPES, "mistake_head_width")
    @dataclass
    class HeadWidth(RegressionTask):
        def make_head(self, in_features):
            return nn.Linear(in_features, 3)  # output_size says 1

    net = MultiTaskNet([HeadWidth(name="score")], "mistake_fine", pretrained=False)
    with pytest.raises(ValueError, match=r"the head of task 'score' \(.*HeadWidth.make_head\) gives shape \(2, 3\) "
                                         r"for 2 faces, where its output_size says \(2, 1\)"):
        net.check_shapes(32)
    net = MultiTaskNet([build_task({"name": "age", "type": "regression"})], "mistake_fine", pretrained=False)
    net.train()
    net.check_shapes(32)  # a network that keeps the rules passes, and is left in the mode it was in
    assert net.training


# -- decoding ----------------------------------------------------------------------------------
def test_answers_and_predictions_of_the_wrong_size_name_their_task(register):
    from facemtl.tasks import answers_of, predictions_of

    @register(TASK_TYPES, "mistake_column")
    @dataclass
    class Column(RegressionTask):
        def predict(self, raw):
            return super().predict(raw)[:, None]  # (N, 1): compared with (N,) labels by broadcasting

    @register(TASK_TYPES, "mistake_one_answer")
    @dataclass
    class OneAnswer(RegressionTask):
        def answers(self, raw, interval=0.8):
            return super().answers(raw, interval)[:1]

    raw = np.zeros((4, 1), np.float32)
    with pytest.raises(ValueError, match=r"task 'score' \(.*Column.predict\) gave predictions of shape \(4, 1\) "
                                         r"for 4 faces; it must give shape \(4,\)"):
        predictions_of(Column(name="score"), raw)
    with pytest.raises(ValueError, match=r"OneAnswer.answers\) gave 1 answers for 4 faces"):
        answers_of(OneAnswer(name="score"), raw)
    good = build_task({"name": "age", "type": "regression"})
    assert predictions_of(good, raw).shape == (4,) and len(answers_of(good, raw)) == 4


# -- detectors ---------------------------------------------------------------------------------
def _face(w, h, k=5, nan=False):
    pts = np.array([[w * 0.35, h * 0.4], [w * 0.65, h * 0.4], [w * 0.5, h * 0.55], [w * 0.38, h * 0.7],
                    [w * 0.62, h * 0.7]])[:k]
    if nan:
        pts[0, 0] = np.nan
    return Face(np.array([0.0, 0.0, w, h]), 1.0, pts, "mtcnn5")


class _OneFace(Detector):
    scheme = "mtcnn5"

    def detect(self, rgb, min_face=None):
        return _face(rgb.shape[1], rgb.shape[0])


class _Raises(Detector):
    def detect(self, rgb, min_face=None):
        raise ValueError("operands could not be broadcast together with shapes (3,) (5,)")


class _ThreePoints(Detector):
    def detect(self, rgb, min_face=None):
        return [_face(rgb.shape[1], rgb.shape[0], k=3)]


class _NanPoints(Detector):
    def detect(self, rgb, min_face=None):
        return [_face(rgb.shape[1], rgb.shape[0], nan=True)]


class _NoDetect(Detector):
    pass


DETECTOR_MISTAKES = {"mistake_one_face": _OneFace, "mistake_raises": _Raises, "mistake_three_points": _ThreePoints,
                     "mistake_nan_points": _NanPoints, "mistake_no_detect": _NoDetect,
                     "mistake_not_a_detector": lambda: object()}


@pytest.mark.parametrize("name, said", [
    ("mistake_one_face", "answered a Face, not a list of facemtl.faces.Face records"),
    ("mistake_raises", "failed on the first image it searched: ValueError: operands could not be broadcast together "
                       "with shapes (3,) (5,) (a detector that fails before it has searched one image is broken"),
    ("mistake_three_points", "answered 3 landmarks in scheme 'mtcnn5', whose alignment template has 5"),
    ("mistake_nan_points", "answered a face with a box, landmarks or score that are not finite numbers"),
    ("mistake_no_detect", "failed on the first image it searched: _NoDetect.detect is not implemented"),
    ("mistake_not_a_detector", "was built as an object of type object, which has no detect(rgb, min_face) method"),
])
def test_a_broken_detector_stops_the_run_naming_it(name, said, capsys, register):
    """(was: every photo "face detection failed: ..." in its record, then "none of the 2 inputs
    could be read as an image", which they could; NumPy's words for the wrong landmarks)"""
    register(DETECTORS, name)(DETECTOR_MISTAKES[name])
    assert main(["analyze", str(PHOTO), str(PHOTO), "--detector", name, "--json", "--no-progress",
                 "--workers", "1"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [err.splitlines()[0]] and err.startswith(f"facemtl: error: the face detector {name!r} ")
    assert said in err


def test_a_detector_that_fails_after_searching_marks_only_that_image(capsys, tmp_path, register):
    """A detector that has searched an image once is trusted: a later failure is that image's."""
    class Once(_OneFace):
        calls = 0

        def detect(self, rgb, min_face=None):
            Once.calls += 1
            if Once.calls > 1:
                raise ValueError("this photo upset it")
            return [_face(rgb.shape[1], rgb.shape[0])]

    register(DETECTORS, "mistake_once")(Once)
    photos = [tmp_path / "a.jpg", tmp_path / "b.jpg"]
    for p in photos:
        p.write_bytes(PHOTO.read_bytes())
    assert main(["analyze", *map(str, photos), "--detector", "mistake_once", "--json", "--no-progress",
                 "--workers", "1"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["status"] for r in records] == ["ok", "error"]
    assert records[1]["error"] == "face detection failed: this photo upset it"


def test_which_failure_is_the_detectors_is_judged_in_input_order(capsys, tmp_path, register):
    """A review: whether a failure stopped the run was decided in the worker threads, so a photo
    whose search failed before the first photo's had finished stopped the whole run, blamed on the
    detector. Judged in input order, the first photo was searched: the second's failure is its own."""
    import time

    from PIL import Image

    class SlowFirst(_OneFace):
        def detect(self, rgb, min_face=None):
            if rgb.shape[:2] == (50, 70):
                raise ValueError("this photo upset it")
            time.sleep(0.5)  # the second photo's failure comes first
            return [_face(rgb.shape[1], rgb.shape[0])]

    register(DETECTORS, "mistake_slow_first")(SlowFirst)
    first, second = tmp_path / "a.jpg", tmp_path / "b.png"
    first.write_bytes(PHOTO.read_bytes())
    Image.new("RGB", (70, 50), (90, 90, 90)).save(second)
    assert main(["analyze", str(first), str(second), "--detector", "mistake_slow_first", "--json", "--no-progress",
                 "--workers", "2"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["status"] for r in records] == ["ok", "error"]
    assert records[1]["error"] == "face detection failed: this photo upset it"


def test_a_cell_of_a_grid_whose_loss_is_nan_leaves_the_others_to_finish(tmp_path, utkface_root, register, capsys):
    """A review: the stop for a NaN loss ended the whole grid at that cell (a learning-rate sweep
    with one rate too high could never finish). The cell is named and has no result; the others
    finish, and the report names it as not finished."""
    import yaml

    from facemtl.report.load import load

    register(WEIGHTINGS, "mistake_nan_total")(NanTotal)
    base = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml").read_text())
    base["data"]["root"] = str(utkface_root)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump({
        "name": "sweep", "base": "tiny.yaml", "seeds": [0], "reference": "a",
        "overrides": ["data.limit=120", "data.image_size=32", "train.epochs=1"],
        "variants": [{"name": "a", "overrides": ["weighting.name=equal"]},
                     {"name": "b", "overrides": ["weighting.name=mistake_nan_total"]}]}))
    out = tmp_path / "out"
    assert main(["experiment", "--config", str(tmp_path / "exp.yaml"), "--out", str(out)]) == 0
    summary = json.loads((out / "experiment.json").read_text())
    assert summary["diverged"] == ["b seed 0"] and summary["variants"]["a"]["seeds"] == [0]
    err = capsys.readouterr().err
    assert "b seed 0: training stopped in epoch 1: the training loss of task 'age' is nan" in err  # (its NaN
    assert "the grid goes on without it" in err  # weights after the first step gave NaN losses)
    assert load(out).not_finished == ["b seed 0"]


def test_a_not_implemented_error_with_its_own_words_keeps_them(monkeypatch, capsys):
    """A review: every NotImplementedError was blamed on "a class of your own", PyTorch's too
    ("... not implemented for 'Int'"); only a bare one (a base class's) is."""
    import facemtl.cli_train as cli_train

    def unsupported(*args):
        raise NotImplementedError('"upsample_bilinear2d_channels_last" not implemented for \'Int\'')

    monkeypatch.setattr(cli_train, "report", unsupported)
    assert main(["report", "some_run"]) == 2
    assert capsys.readouterr().err == ("facemtl: error: \"upsample_bilinear2d_channels_last\" not implemented for "
                                       "'Int'\n")


# -- sinks, names, subgroup metrics (a contributor's test) -------------------------------------------------
def test_a_sink_passed_from_python_is_checked_and_its_failure_named(tmp_path, capsys):
    """A string passed as a sink said "'str' object has no attribute 'write'" mid-run; a sink that
    left write() out, a bare NotImplementedError; a sink that raised anything but OSError ended the
    run with a traceback and the other outputs' results."""
    from facemtl.cli_analyze import analyze
    from facemtl.sinks import Sink

    with pytest.raises(ValueError, match=r"^a sink passed in is an object of type str, which has no write\(result\) "
                                         r"and close\(\)"):
        analyze([str(PHOTO)], as_json=True, progress=False, sinks=["results.jsonl"])

    class Lazy(Sink):
        pass

    class Counts(Sink):
        n = 0

        def write(self, result):
            Counts.n += 1

    assert analyze([str(PHOTO)], as_json=True, progress=False, sinks=[Lazy(), Counts()]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["status"] == "ok" and Counts.n == 1
    assert "facemtl: error: cannot write output 'Lazy': " \
           "test_a_sink_passed_from_python_is_checked_and_its_failure_named.<locals>.Lazy does not implement " \
           "write(); that output stops, the others go on" in err


def test_a_misspelt_registered_name_is_suggested_and_an_unknown_subgroup_metric_refused(register):
    from facemtl.registry import UnknownName

    with pytest.raises(UnknownName, match=r"^unknown loss weighting 'uncertanty' \(did you mean 'uncertainty'\?\); "):
        WEIGHTINGS.get("uncertanty")
    with pytest.raises(ValueError, match=r"says subgroup_metric = 'rmse'; the bias tables score a cell by "
                                         r"'accuracy' .* or 'mae'"):
        @register(TASK_TYPES, "mistake_rmse")
        @dataclass
        class Rmse(RegressionTask):
            subgroup_metric = "rmse"


def test_a_task_type_without_dataclass_says_so(register):
    """A contributor's test: a subclass that declared a setting but left @dataclass out read "has no
    setting 'threshold'; it takes: ...", which hid the cause."""
    @register(TASK_TYPES, "mistake_not_a_dataclass")
    class NoDataclass(RegressionTask):
        threshold: float = 18.0

    with pytest.raises(ValueError, match=r"NoDataclass declares the setting 'threshold' but is not a @dataclass "
                                         r"itself, .*put @dataclass on the class"):
        build_task({"name": "adult", "type": "mistake_not_a_dataclass", "threshold": 21.0})


def test_a_task_that_makes_its_labels_says_what_it_left_out(register, utkface_root):
    """A contributor's test: leaving out ``derives_label = True``, or returning another column from
    derive_labels(), read "no label column 'is_adult'; this data has: age, gender, race"."""
    from facemtl.config import config_from_dict
    from facemtl.data.dataset import read_split
    from facemtl.tasks.classification import BinaryTask

    def derive(self, labels, train, seed, report):
        return {"adult_col": (labels["age"] >= 18).astype(float)}

    @register(TASK_TYPES, "mistake_no_derives_flag")
    @dataclass
    class NoFlag(BinaryTask):
        derive_labels = derive

    @register(TASK_TYPES, "mistake_wrong_column")
    @dataclass
    class WrongColumn(BinaryTask):
        derives_label = True
        derive_labels = derive

    for kind, said in (("mistake_no_derives_flag", r"task 'adult': the data has no column 'adult', and .*NoFlag makes "
                                                   r"its labels in derive_labels\(\) but does not say derives_label"),
                       ("mistake_wrong_column", r"task 'adult': .*WrongColumn.derive_labels\(\) gave the columns "
                                                r"'adult_col', not its label column 'adult'")):
        specs = [{"name": "age", "type": "regression"}, {"name": "adult", "type": kind}]
        cfg = config_from_dict({"tasks": specs, "data": {"root": str(utkface_root), "limit": 60}})
        with pytest.raises(ValueError, match=said):
            read_split(cfg.data, [build_task(t) for t in specs], 0)
