"""Extending facemtl from a package of one's own (README "Extending"): plugins found without a
wrapper script, a model of a plugin's task type named as such where the plugin is missing, a
detector with its own landmark scheme, the backbone contract, names checked before the data is
read, and a registration run twice (a notebook cell) accepted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from facemtl.cli import main
from facemtl.registry import Registry

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "examples" / "astronaut.jpg"

PLUGIN = textwrap.dedent('''
    """A plugin as a user writes it: a task type, and a detector with its own landmark scheme."""
    import numpy as np

    from facemtl.faces import DETECTORS, Detector, Face, register_template
    from facemtl.tasks import TASK_TYPES
    from facemtl.tasks.regression import RegressionTask

    @TASK_TYPES.register("plugin_score")
    class PluginScore(RegressionTask):
        kind = "plugin_score"

    # three points (the eyes and the mouth's centre) where this detector finds them on the
    # 200 x 200 training crops: its own scheme
    register_template("eyes_mouth3", [[70.0, 92.0], [130.0, 92.0], [100.0, 150.0]])

    @DETECTORS.register("whole")
    class Whole(Detector):
        """The whole image is one face (a fixed camera looking at a cropped face)."""
        scheme = "eyes_mouth3"

        def detect(self, rgb, min_face=None):
            h, w = rgb.shape[:2]
            pts = np.array([[0.35 * w, 0.46 * h], [0.65 * w, 0.46 * h], [0.5 * w, 0.75 * h]])
            return [Face(np.array([0.0, 0.0, w, h]), 1.0, pts, self.scheme)]
''')


def _run(tmp_path, code_or_args, env_extra=None, cli=False):
    env = {k: v for k, v in os.environ.items() if k != "FACEMTL_PLUGINS"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    env.update(env_extra or {})
    cmd = [sys.executable, "-m", "facemtl.cli", *code_or_args] if cli else [sys.executable, "-c", code_or_args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


READ_INFO = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    from facemtl.inference.model_files import parse_info
    info = parse_info(json.dumps({"name": "m", "version": "1", "image_size": 64,
                                  "tasks": [{"type": "plugin_score", "name": "bmi"}]}), Path("m.onnx"))
    print(info.build_tasks()[0].kind)
''')


def test_a_plugin_named_in_the_environment_or_an_entry_point_is_found_by_any_command(tmp_path):
    (tmp_path / "myplug.py").write_text(PLUGIN)
    # without the plugin: the model file's task type is named, and the file is not called damaged
    bare = _run(tmp_path, READ_INFO)
    assert bare.returncode == 1
    last = bare.stderr.strip().splitlines()[-1]
    assert "uses the task type 'plugin_score', which no loaded package registers" in last
    assert "FACEMTL_PLUGINS" in last and "damaged" not in last

    by_env = _run(tmp_path, READ_INFO, {"FACEMTL_PLUGINS": "myplug"})
    assert by_env.returncode == 0 and by_env.stdout.strip() == "plugin_score", by_env.stderr

    # an installed package's entry point (a dist-info on the path, as pip leaves it)
    dist = tmp_path / "myplug-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myplug\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[facemtl.plugins]\nmyplug = myplug\n")
    by_entry_point = _run(tmp_path, READ_INFO)
    assert by_entry_point.returncode == 0 and by_entry_point.stdout.strip() == "plugin_score", by_entry_point.stderr

    # the command line: --detector takes the plugin's detector, aligned on its own template
    r = _run(tmp_path, ["analyze", str(PHOTO), "--detector", "whole", "--json"], cli=True)
    assert r.returncode == 0, r.stderr
    face = json.loads(r.stdout)["faces"][0]
    assert face["box"] == [0.0, 0.0, 512.0, 512.0] and len(face["landmarks"]) == 3
    assert face["gender"] in ("male", "female") and 1 <= face["age"] <= 116


def test_a_plugin_that_fails_to_import_is_named_in_one_sentence_every_time(tmp_path):
    (tmp_path / "broken.py").write_text("raise RuntimeError('needs a licence key')\n")
    (tmp_path / "myplug.py").write_text(PLUGIN)
    r = _run(tmp_path, ["analyze", str(PHOTO), "--detector", "nosuch"], {"FACEMTL_PLUGINS": "broken"}, cli=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "plugin 'broken' (from FACEMTL_PLUGINS) could not be loaded: RuntimeError: needs a licence key" in r.stderr
    # said once: the error below the warning refers to it (it repeated the whole sentence; a note's "left" item)
    assert r.stderr.count("needs a licence key") == 1 and "could not be loaded (said above)" in r.stderr, r.stderr
    # the plugins after it still load; a model of a missing type names the failed plugin, every time, not "damaged"
    code = READ_INFO.replace("print(info.build_tasks()[0].kind)", "print(info.build_tasks()[0].kind)\n"
                             "from facemtl.model import BACKBONES\n"
                             "for _ in range(2):\n"
                             "    try:\n"
                             "        BACKBONES.get('mine')\n"
                             "    except ValueError as exc:\n"
                             "        print(exc)")
    r = _run(tmp_path, code, {"FACEMTL_PLUGINS": "broken,myplug"})
    out = r.stdout.splitlines()
    assert r.returncode == 0 and out[0] == "plugin_score", r.stderr
    assert len(out) == 3 and all(line.startswith("plugin 'broken' (from FACEMTL_PLUGINS) could not be loaded")
                                 and "no backbone 'mine' is registered" in line for line in out[1:])
    r = _run(tmp_path, READ_INFO, {"FACEMTL_PLUGINS": "broken"})
    last = r.stderr.strip().splitlines()[-1]
    assert "m.onnx: plugin 'broken'" in last and "damaged" not in last
    r = _run(tmp_path, ["analyze", str(PHOTO), "--detector", "nosuch"], cli=True)
    assert r.returncode == 2 and "unknown face detector 'nosuch'; choose one of: dlib, mtcnn" in r.stderr
    # a plugin that fails after registering a part: that part works, and the failure is said all the same
    (tmp_path / "half.py").write_text(PLUGIN + "\nraise RuntimeError('the second half is broken')\n")
    r = _run(tmp_path, ["analyze", str(PHOTO), "--detector", "whole", "--json"], {"FACEMTL_PLUGINS": "half"}, cli=True)
    assert r.returncode == 0 and json.loads(r.stdout)["faces"], r.stderr
    assert r.stderr.splitlines() == ["facemtl: warning: plugin 'half' (from FACEMTL_PLUGINS) could not be loaded: "
                                     "RuntimeError: the second half is broken"]
    # a failed plugin and a name no one registers: the names that are registered are said too
    r = _run(tmp_path, ["analyze", str(PHOTO), "--detector", "nosuch"], {"FACEMTL_PLUGINS": "half"}, cli=True)
    assert r.returncode == 2 and "(no face detector 'nosuch' is registered: it may be that plugin's; registered: " \
        "dlib, mtcnn, whole)" in r.stderr


def test_an_entry_point_per_registration_imports_only_the_name_asked_for(tmp_path):
    """A contributor's test: a plugin was imported whole, so its training module (a backbone that
    needs torch, absent from the plain install) failed the process that only read a model of its
    task type. Each registry now has its own entry-point group, and only the name asked for loads."""
    (tmp_path / "mytasks.py").write_text(textwrap.dedent('''
        from facemtl.tasks.regression import RegressionTask

        class PluginScore(RegressionTask):  # not decorated: the entry point registers it
            pass
    '''))
    (tmp_path / "mytrain.py").write_text("raise ImportError('No module named torch')\n")
    (tmp_path / "myrt.py").write_text(textwrap.dedent('''
        from facemtl.inference.runtimes import RuntimeSpec

        SPEC = RuntimeSpec("my_ort", (".myonnx",), "facemtl.inference.runtimes.onnxrt:OnnxRuntime", "",
                           ("onnxruntime",), "ONNX Runtime, by a plugin")
    '''))
    dist = tmp_path / "myplug-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myplug\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[facemtl.task_types]\nplugin_score = mytasks:PluginScore\n\n"
        "[facemtl.backbones]\nmy_net = mytrain:my_net\n\n"
        "[facemtl.runtimes]\nmy_ort = myrt:SPEC\n\n"
        "[facemtl.sinks]\nnothing = mytasks\ncount = mysinks:Lines\ntally = mysinks:Lines\n")
    (tmp_path / "mysinks.py").write_text(LINES_SINK)
    code = READ_INFO + textwrap.dedent('''
        print(sorted(m for m in ("mytasks", "mytrain", "myrt") if m in sys.modules))
        from facemtl.model import BACKBONES
        try:
            BACKBONES.get("my_net")
        except ValueError as exc:
            print(exc)
    ''')
    r = _run(tmp_path, code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "plugin_score", "['mytasks']",
        "backbone 'my_net' could not be loaded (the facemtl.backbones entry point my_net = 'mytrain:my_net'): "
        "ImportError: No module named torch"]

    # a runtime: by name, and by a suffix no built-in runtime reads
    model = tmp_path / "m.myonnx"
    model.write_bytes((REPO / "src" / "facemtl" / "weights" / "utkface_lite0.onnx").read_bytes())
    for extra in (["--runtime", "my_ort"], []):
        r = _run(tmp_path, ["analyze", str(PHOTO), "--model", str(model), "--json", *extra], cli=True)
        assert r.returncode == 0 and json.loads(r.stdout)["faces"][0]["gender"] in ("male", "female"), r.stderr
    # one object under two entry points' names (a review: the second was refused)
    r = _run(tmp_path, ["analyze", str(PHOTO), "--output", f"count:{tmp_path / 'a.txt'}", "--output",
                        f"tally:{tmp_path / 'b.txt'}"], cli=True)
    assert r.returncode == 0 and (tmp_path / "a.txt").read_text() == (tmp_path / "b.txt").read_text() == "1\n", \
        r.stderr
    # an entry point naming a module that registers nothing, and a misspelt name offered the declared ones
    r = _run(tmp_path, ["analyze", str(PHOTO), "--output", "nothing:x.txt"], cli=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "the facemtl.sinks entry point nothing = 'mytasks' names a module, which registered no sink 'nothing'" \
        in r.stderr
    r = _run(tmp_path, "from facemtl.model import BACKBONES\nBACKBONES.get('my_nett')")
    assert "unknown backbone 'my_nett' (did you mean 'my_net'?)" in r.stderr

    # a second package: a name both declare, a class its module registers under another name (models of
    # it named a type no process could find), a function where a task type belongs
    (tmp_path / "othertasks.py").write_text(textwrap.dedent('''
        from facemtl.tasks import TASK_TYPES
        from facemtl.tasks.regression import RegressionTask

        @TASK_TYPES.register("other_band")
        class Dup(RegressionTask):
            pass

        def helper(**settings):
            return "a string"
    '''))
    other = tmp_path / "otherplug-1.0.dist-info"
    other.mkdir()
    (other / "METADATA").write_text("Metadata-Version: 2.1\nName: otherplug\nVersion: 1.0\n")
    (other / "entry_points.txt").write_text("[facemtl.task_types]\ndup_band = othertasks:Dup\n"
                                            "functask = othertasks:helper\nbinary = othertasks:Dup\n\n"
                                            "[facemtl.backbones]\nmy_net = othertasks:helper\n")
    r = _run(tmp_path, textwrap.dedent('''
        from facemtl.model import BACKBONES
        from facemtl.tasks import build_task
        for spec in ({"name": "s", "type": "dup_band"}, {"name": "s", "type": "functask"}):
            try:
                build_task(spec)
            except ValueError as exc:
                print(exc)
        try:
            BACKBONES.get("my_net")
        except ValueError as exc:
            print(exc)
    '''))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "the facemtl.task_types entry point dup_band = 'othertasks:Dup': Dup is registered as 'other_band' by its "
        "module: name the entry point 'other_band', or leave the registration out of the module",
        "task 's': the task type 'functask' (othertasks.helper) built a str, not a facemtl Task: register a Task "
        "subclass",
        "backbone 'my_net' is declared by several installed packages (myplug: 'mytrain:my_net'; otherplug: "
        "'othertasks:helper') in facemtl.backbones: uninstall one, or rename its entry point"], r.stdout

    # facemtl plugins: every registry, each declared entry point loaded and said ok or why not; exit 1
    r = _run(tmp_path, ["plugins", "--json"], {"FACEMTL_PLUGINS": "nosuchmodule"}, cli=True)
    assert r.returncode == 1, r.stderr
    report = json.loads(r.stdout)
    state = {(kind, d["name"]): d["ok"] for kind, reg in report["registries"].items() for d in reg["declared"]}
    assert state == {("task type", "plugin_score"): True, ("task type", "dup_band"): False,
                     ("task type", "functask"): True,  # (it registers; building it is what fails)
                     ("task type", "binary"): False,  # (the built-in one is taken: it never loads)
                     ("backbone", "my_net"): False, ("runtime", "my_ort"): True,  # (my_net: two packages)
                     ("sink", "nothing"): False, ("sink", "count"): True, ("sink", "tally"): True}
    assert "regression" in report["registries"]["task type"]["built_in"]
    assert "rtsp" in report["registries"]["video source"]["built_in"]
    assert [(m["module"], m["ok"]) for m in report["modules"]] == [("nosuchmodule", False)]
    r = _run(tmp_path, ["plugins"], cli=True)
    assert "  plugin_score = 'mytasks:PluginScore' (myplug): ok" in r.stdout
    assert "  nothing = 'mytasks' (myplug): FAILS: the facemtl.sinks entry point nothing = 'mytasks' names a module" \
        in r.stdout


def test_an_output_never_writes_the_file_of_another_output(tmp_path):
    """A user test: --output jsonl:same.mp4 beside --annotate same.mp4, a file in the --annotate
    folder, or the file standard output was redirected to: both outputs wrote one file, exit 0."""
    video = tmp_path / "v.mp4"
    (tmp_path / "ann").mkdir()  # (an earlier run's)
    for args, said in ((["analyze", str(PHOTO), "--annotate", str(tmp_path / "ann"), "--output",
                         f"jsonl:{tmp_path / 'ann' / 'astronaut.jpg'}"], "is inside --annotate's output"),
                       (["stream", str(PHOTO), "--annotate", str(video), "--output", f"jsonl:{video}"],
                        "is --annotate's output")):
        r = _run(tmp_path, args, cli=True)
        assert r.returncode == 2 and said in r.stderr and "which it would overwrite" in r.stderr, r.stderr
    # the results beside the annotated copies: nothing of theirs is named so (a review: it was refused)
    r = _run(tmp_path, ["analyze", str(PHOTO), "--annotate", str(tmp_path / "ann"), "--output",
                        f"jsonl:{tmp_path / 'ann' / 'results.jsonl'}"], cli=True)
    assert r.returncode == 0 and (tmp_path / "ann" / "astronaut.jpg").is_file(), r.stderr
    assert json.loads((tmp_path / "ann" / "results.jsonl").read_text())["faces"]
    same = tmp_path / "same.csv"
    env = {k: v for k, v in os.environ.items() if k != "FACEMTL_PLUGINS"}
    with same.open("w") as out:  # facemtl analyze ... --csv --output jsonl:same.csv > same.csv
        r = subprocess.run([sys.executable, "-m", "facemtl.cli", "analyze", str(PHOTO), "--csv", "--output",
                            f"jsonl:{same}"], stdout=out, stderr=subprocess.PIPE, text=True, env=env, timeout=300)
    assert r.returncode == 2 and f"{same} is the file standard output is written to" in r.stderr, r.stderr


def test_an_output_given_as_a_file_alone_or_onto_a_photo_is_refused_in_one_sentence(tmp_path):
    """A user test: --output x.jsonl read "unknown sink 'x.jsonl' (did you mean 'jsonl'?)", and
    --output jsonl:other.jpg replaced a photo (not one being read) with JSON without a word."""
    from facemtl.sinks.base import check_outputs

    with pytest.raises(ValueError, match=r"^--output takes NAME:TARGET, a sink's name before the file, not a file "
                                         r"alone \(did you mean --output jsonl:x\.jsonl\?\)$"):
        check_outputs(["x.jsonl"])
    with pytest.raises(ValueError, match=r"not a file alone$"):
        check_outputs(["out/results"])
    photo = tmp_path / "other.JPG"
    photo.write_bytes(PHOTO.read_bytes())
    with pytest.raises(ValueError, match=rf"^--output 'csv:{photo}': {photo} is a photo or video, which the csv "
                                         r"output would replace with text; name a \.csv file$"):
        check_outputs([f"csv:{photo}"])
    check_outputs([f"csv:{tmp_path / 'new.jpg'}"])  # (a new file of that name harms nothing)
    assert photo.read_bytes() == PHOTO.read_bytes()


def test_a_plugins_source_for_a_builtin_scheme_is_asked_first(tmp_path):
    """A user test: a plugin's http:// source was never used from the command line (a name found
    among the built-in schemes never loaded the plugins), though the README says it is asked first."""
    plugin = SINK_AND_SOURCE.replace('@SOURCES.register("still")', '@SOURCES.register("http")')
    (tmp_path / "myhttp.py").write_text(plugin.replace('spec[len("still://"):]', 'spec[len("http://"):]'))
    r = _run(tmp_path, ["stream", f"http://{PHOTO}?frames=2", "--json", "--no-progress"], {"FACEMTL_PLUGINS": "myhttp"},
             cli=True)
    faces = [json.loads(x) for x in r.stdout.splitlines() if json.loads(x)["type"] == "face"]
    assert r.returncode == 0 and [f["frame"] for f in faces] == [0, 1], r.stderr
    # a broken plugin and a scheme no one reads: the unknown scheme said, with the plugin's failure
    (tmp_path / "broken.py").write_text("raise RuntimeError('needs a licence key')\n")
    r = _run(tmp_path, ["stream", "foo://x"], {"FACEMTL_PLUGINS": "broken"}, cli=True)
    assert r.returncode == 2 and "foo://x: unknown kind of URL" in r.stderr and "refused it" not in r.stderr
    assert "plugin 'broken' (from FACEMTL_PLUGINS) could not be loaded: RuntimeError: needs a licence key" in r.stderr
    assert r.stderr.count("needs a licence key") == 1 and "could not be loaded (said above)" in r.stderr, r.stderr


def test_every_registry_has_its_entry_point_group():
    """plugins.GROUPS is keyed by each registry's kind: a registry renamed would lose its group without it."""
    from facemtl.faces import DETECTORS
    from facemtl.model import BACKBONES
    from facemtl.plugins import GROUPS
    from facemtl.sinks import SINKS
    from facemtl.tasks import TASK_TYPES
    from facemtl.video import SOURCES
    from facemtl.weighting import WEIGHTINGS

    kinds = [r.kind for r in (TASK_TYPES, BACKBONES, WEIGHTINGS, DETECTORS, SINKS, SOURCES)]
    assert sorted(GROUPS) == sorted([*kinds, "runtime"])
    assert all(g.startswith("facemtl.") for g in GROUPS.values()) and len(set(GROUPS.values())) == len(GROUPS)


def test_a_template_needs_points_and_a_builtin_one_stays():
    import numpy as np

    from facemtl.faces import register_template, template

    with pytest.raises(ValueError, match=r"\(K, 2\) finite pixel positions"):
        register_template("bad", [1.0, 2.0])
    with pytest.raises(ValueError, match="'mtcnn5' already has a template"):
        register_template("mtcnn5", np.zeros((5, 2)))
    register_template("mtcnn5", template("mtcnn5"))  # the same points again: accepted
    with pytest.raises(KeyError, match="known: dlib5, mtcnn5.*register_template"):
        template("nosuch")


def test_registering_the_same_definition_again_replaces_it_and_another_is_refused():
    reg: Registry = Registry("widget")
    code = "def make():\n    return 1\n"
    first: dict = {"__name__": "cell"}
    exec(code, first)  # a notebook cell run twice: the same module and name, a new function object
    again: dict = {"__name__": "cell"}
    exec(code, again)
    reg.register("w")(first["make"])
    reg.register("w")(again["make"])
    assert reg.build("w") == 1 and reg.get("w") is again["make"]
    with pytest.raises(ValueError, match="widget 'w' is already registered \\(by cell\\)"):
        reg.register("w")(lambda: 2)
    reg.register("l")(lambda: 1)
    with pytest.raises(ValueError, match="already registered"):  # two lambdas are never "the same definition"
        reg.register("l")(lambda: 2)


def test_a_backbone_without_the_contract_says_what_it_lacks():
    from torch import nn

    from facemtl.model import BACKBONES, MultiTaskNet
    from facemtl.tasks import build_task

    @BACKBONES.register("test_plain_sequential")
    def plain(**kwargs):
        return nn.Sequential(nn.Conv2d(3, 8, 3))

    task = build_task({"name": "age", "type": "regression"})
    with pytest.raises(ValueError, match="backbone 'test_plain_sequential' has no stages, num_features, mean, std: "
                                         "a backbone is a module with 'stages'"):
        MultiTaskNet([task], "test_plain_sequential", pretrained=False)


def test_a_misspelt_backbone_or_weighting_fails_before_any_image_is_read(tmp_path, capsys, monkeypatch):
    import facemtl.data.dataset as dataset

    def no_data(*args, **kwargs):
        raise AssertionError("the images were read before the names were checked")

    monkeypatch.setattr(dataset, "build_data", no_data)  # (what the trainer's split_as_trained calls)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("tasks: [{name: age, type: regression}]\ndata: {root: %s}\n" % (REPO.parent / "shared"))
    for override, said in (("model.backbone=resnett", "unknown backbone 'resnett'"),
                           ("weighting.name=uncertainity", "unknown loss weighting 'uncertainity'")):
        assert main(["train", "--config", str(recipe), "--out", str(tmp_path / "run"), override]) == 2
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err


def test_an_unknown_name_reads_as_its_sentence_from_python():
    """A library user: str() of the KeyError wrapped the sentence in quotes."""
    from facemtl.model import BACKBONES

    with pytest.raises(KeyError) as err:
        BACKBONES.get("resnet9")
    assert str(err.value).startswith("unknown backbone 'resnet9'; choose one of: ")


def test_every_command_with_a_detector_takes_a_registered_one():
    """A user test: `serve --detector` offered only mtcnn and dlib (fixed choices), while analyze
    and stream took a plugin's detector."""
    from facemtl.cli import build_parser
    from facemtl.faces import DETECTORS
    from facemtl.faces.base import Detector

    @DETECTORS.register("test_every_command")
    class Mine(Detector):
        scheme = "mtcnn5"

    try:
        parser = build_parser()
        for argv in (["analyze", "x.jpg"], ["stream", "v.mp4"], ["serve"]):
            assert parser.parse_args(argv + ["--detector", "test_every_command"]).detector == "test_every_command"
    finally:
        DETECTORS._items.pop("test_every_command")


def test_a_plugins_runtime_is_taken_by_the_command_line(tmp_path):
    """A user test: --runtime had fixed choices, so a runtime a plugin adds to RUNTIMES was refused."""
    (tmp_path / "myrt.py").write_text(textwrap.dedent('''
        from facemtl.inference.runtimes import RUNTIMES, RuntimeSpec

        # ONNX Runtime under another name: a row after the built-in ones reads .onnx only when named
        RUNTIMES["my_ort"] = RuntimeSpec("my_ort", (".onnx",), "facemtl.inference.runtimes.onnxrt:OnnxRuntime", "",
                                         ("onnxruntime",), "ONNX Runtime, by a plugin")
    '''))
    model = REPO / "src" / "facemtl" / "weights" / "utkface_lite0.onnx"
    args = ["analyze", str(PHOTO), "--model", str(model), "--runtime", "my_ort", "--json"]
    r = _run(tmp_path, args, {"FACEMTL_PLUGINS": "myrt"}, cli=True)
    assert r.returncode == 0 and json.loads(r.stdout)["faces"][0]["gender"] in ("male", "female"), r.stderr
    r = _run(tmp_path, args, cli=True)  # without the plugin: one sentence naming the choices
    assert r.returncode == 2
    assert "argument --runtime: unknown runtime 'my_ort'; choose one of: onnxruntime, openvino, torch, tensorrt" \
        in r.stderr


#: A sink of one line per image, its number of faces (not a Sink subclass: write and close are enough).
LINES_SINK = textwrap.dedent('''
    class Lines:
        def __init__(self, target, tasks):
            self.out = open(target, "w")

        def write(self, result):
            self.out.write(f"{len(result.faces)}\\n")

        def close(self):
            self.out.close()
''')

SINK_AND_SOURCE = textwrap.dedent('''
    import json
    import threading
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from facemtl.sinks import SINKS, Sink
    from facemtl.video import SOURCES, Frame, Source


    @SINKS.register("ages")
    class Ages(Sink):
        """One line per face: its file (or frame) and its age, in TARGET."""

        def __init__(self, target, tasks):
            if "age" not in {t.name for t in tasks}:
                raise ValueError("this model answers no age")
            self.out = open(target, "w")

        def write(self, result):
            for f in result.faces:
                self.out.write(f"{result.file or result.frame} {f.answers['age'].value:.1f}\\n")

        def close(self):
            self.out.close()


    @SINKS.register("breaks")
    class Breaks(Sink):
        def __init__(self, target, tasks):
            pass

        def write(self, result):
            raise KeyError("a column it expected")


    @SINKS.register("not_a_sink")
    def not_a_sink(target, tasks):
        return "a string"


    @SINKS.register("mixed")
    def mixed_photo_and_hand():  # wrong signature: refused as the sink's trouble, named
        return None


    @SINKS.register("raises")
    def raises(target, tasks):
        return None.write


    @SINKS.register("lines")
    <LINES>


    @SOURCES.register("brokensrc")
    def brokensrc(spec, name, settings):
        return {}["missing"]


    @SOURCES.register("still")
    class Still(Source):
        """still://PHOTO?frames=N: one photo N times, as a camera that shows it."""

        def __init__(self, spec, name, settings):
            path, _, query = spec[len("still://"):].partition("?")
            if not Path(path).is_file():
                raise ValueError(f"no photo {path}")
            super().__init__(spec, name or f"still {Path(path).name}")
            self.rgb = np.asarray(Image.open(path).convert("RGB"))
            self.n = int(query.partition("=")[2] or 3)

        def frames(self, stop, log):
            for i in range(self.n):
                if stop.is_set():
                    return
                yield Frame(i, i / 10, self.rgb)
''').replace("<LINES>\n", LINES_SINK.lstrip("\n"))


def test_the_csv_output_writes_what_csv_writes_in_a_file(tmp_path):
    """A user test: the README listed CSV among the outputs, and ``--output csv:FILE`` was "unknown
    sink 'csv'". It writes what ``--csv`` writes (photos); a stream's rows name their source."""
    import csv

    (tmp_path / "myio.py").write_text(SINK_AND_SOURCE)
    env = {"FACEMTL_PLUGINS": "myio"}
    table = tmp_path / "faces.csv"
    r = _run(tmp_path, ["analyze", str(PHOTO), "nothere.jpg", "--csv", "--output", f"csv:{table}"], env, cli=True)
    assert r.returncode == 0 and table.read_text() == r.stdout, r.stderr  # (both read with universal newlines)
    rows = list(csv.DictReader(table.open(newline="")))
    found = {row["file"]: row for row in rows}  # (missing paths are recorded first)
    assert set(found) == {str(PHOTO), "nothere.jpg"} and found[str(PHOTO)]["gender"] == "female"
    r = _run(tmp_path, ["stream", f"still://{PHOTO}?frames=3", "--csv", "--no-progress", "--output",
                        f"csv:{table}"], env, cli=True)
    assert r.returncode == 0, r.stderr
    rows, shown = list(csv.DictReader(table.open(newline=""))), list(csv.DictReader(r.stdout.splitlines()))
    assert len(rows) == 3 and rows == shown and "source" not in rows[0]  # one source: no column, as --csv
    assert "CSV output has no column" not in r.stderr, r.stderr  # (said for every row before: a review)
    r = _run(tmp_path, ["stream", f"a=still://{PHOTO}?frames=2", f"b=still://{PHOTO}?frames=1", "--no-progress",
                        "--output", f"csv:{table}"], env, cli=True)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(table.open(newline="")))
    assert sorted((row["source"], row["frame"]) for row in rows) == [("a", "0"), ("a", "1"), ("b", "0")]
    for spec, said in (("csv:", "--output 'csv:': the csv sink writes a file: --output csv:FILE"),
                       (f"csv:{tmp_path}", f"{tmp_path} is a folder; the csv sink writes a file")):
        r = _run(tmp_path, ["analyze", str(PHOTO), "--output", spec], env, cli=True)
        assert r.returncode == 2 and said in r.stderr, r.stderr


def test_a_plugins_sink_and_video_source_are_taken_by_the_command_line(tmp_path):
    """A contributor's test: sinks had no registry (only Python could pass one, to the stream alone),
    and video sources were a fixed list of forms. ``--output NAME:TARGET`` builds a registered
    sink, beside the standard output; ``stream SCHEME://...`` reads a registered source."""
    (tmp_path / "myio.py").write_text(SINK_AND_SOURCE)
    env = {"FACEMTL_PLUGINS": "myio"}
    ages, lines, jl = tmp_path / "ages.txt", tmp_path / "lines.txt", tmp_path / "all.jsonl"
    r = _run(tmp_path, ["analyze", str(PHOTO), "--json", "--output", f"ages:{ages}", "--output", f"lines:{lines}",
                        "--output", f"jsonl:{jl}"], env, cli=True)
    assert r.returncode == 0, r.stderr
    record = json.loads(r.stdout)
    assert ages.read_text() == f"{PHOTO} {record['faces'][0]['age']:.1f}\n" and lines.read_text() == "1\n"
    assert json.loads(jl.read_text()) == record  # the built-in jsonl sink: what --json writes
    r = _run(tmp_path, ["analyze", str(PHOTO), "nothere.jpg", "--json", "--output", f"jsonl:{jl}"], env, cli=True)
    assert r.returncode == 0 and jl.read_text() == r.stdout and '"nothere.jpg"' in r.stdout, r.stderr  # missing too
    # a sink that fails is said once and left out; the others and the standard output go on; exit 1
    (tmp_path / "copy.jpg").write_bytes(PHOTO.read_bytes())
    r = _run(tmp_path, ["analyze", str(PHOTO), str(tmp_path / "copy.jpg"), "--json", "--output", "breaks:", "--output",
                        f"ages:{ages}"], env, cli=True)
    assert r.returncode == 1 and len(r.stdout.splitlines()) == 2 and len(ages.read_text().splitlines()) == 2
    assert r.stderr.count("facemtl: error: cannot write output 'breaks:': KeyError: 'a column it expected'; that "
                          "output stops, the others go on") == 1, r.stderr
    for spec, said in (("not_a_sink:x", "the sink 'not_a_sink' was built as an object of type str, which has no "
                                        "write(result) and close()"),
                       ("nosuch:x", "unknown sink 'nosuch'; choose one of: ages, breaks, csv, jsonl, lines, mixed, "
                                    "not_a_sink, raises"),
                       (":x", "--output takes NAME:TARGET"),
                       ("jsonl:", "--output 'jsonl:': the jsonl sink writes a file: --output jsonl:FILE"),
                       ("mixed:x", "--output 'mixed:x': mixed_photo_and_hand() takes 0 positional arguments"),
                       ("raises:x", "--output 'raises:x': the sink 'raises' could not be built: AttributeError: "
                                    "'NoneType' object has no attribute 'write'"),
                       (f"jsonl:{tmp_path}", f"--output 'jsonl:{tmp_path}': {tmp_path} is a folder; the jsonl sink "
                                             "writes a file"),
                       (f"jsonl:{PHOTO}", f"--output 'jsonl:{PHOTO}': {PHOTO} is an input being read, which it "
                                          "would overwrite"),
                       (f"jsonl:{tmp_path}/no/x.jsonl", f"--output 'jsonl:{tmp_path}/no/x.jsonl': the folder "
                                                          f"{tmp_path}/no does not exist"),
                       ("jsonl:/proc/x.jsonl", "--output 'jsonl:/proc/x.jsonl': the jsonl output cannot be written: no "
                                               "file can be made in /proc")):
        r = _run(tmp_path, ["analyze", str(PHOTO), "--output", spec], env, cli=True)
        assert r.returncode == 2 and said in r.stderr and "Traceback" not in r.stderr, (spec, r.stderr)
    # a later --output that fails as it is built: an earlier one's file is left as it was, not emptied
    before = jl.read_text()
    for command in (["analyze", str(PHOTO)], ["stream", f"still://{PHOTO}?frames=2", "--no-progress"]):
        r = _run(tmp_path, [*command, "--output", f"jsonl:{jl}", "--output", "raises:x"], env, cli=True)
        assert r.returncode == 2 and "the sink 'raises' could not be built" in r.stderr, r.stderr
        assert jl.read_text() == before
    # the plugin's source, and its sink, in a stream
    r = _run(tmp_path, ["stream", f"still://{PHOTO}?frames=4", "--json", "--no-progress", "--output",
                        f"ages:{ages}"], env, cli=True)
    assert r.returncode == 0, r.stderr
    faces = [json.loads(x) for x in r.stdout.splitlines() if json.loads(x)["type"] == "face"]
    assert len(faces) == 4 and [f["frame"] for f in faces] == [0, 1, 2, 3]
    assert [x.split()[0] for x in ages.read_text().splitlines()] == ["0", "1", "2", "3"]  # frame numbers
    r = _run(tmp_path, ["stream", "still:///nonexistent.jpg"], env, cli=True)
    assert r.returncode == 2 and "still:///nonexistent.jpg: the video source registered for still:// refused it: " \
                                 "ValueError: no photo /nonexistent.jpg" in r.stderr, r.stderr
    r = _run(tmp_path, ["stream", "brokensrc://x"], env, cli=True)  # a factory's own mistake: named, no traceback
    assert r.returncode == 2 and "brokensrc://x: the video source registered for brokensrc:// refused it: " \
                                 "KeyError: 'missing'" in r.stderr and "Traceback" not in r.stderr, r.stderr
    # the same file twice, the database's file, a frame of the folder being read: refused before the model loads
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "f1.jpg").write_bytes(PHOTO.read_bytes())
    for args, said in (([str(PHOTO), "--output", f"ages:{ages}", "--output", f"jsonl:{ages}"],
                        f"--output 'jsonl:{ages}' writes the file of --output 'ages:{ages}': give each its own"),
                       ([str(PHOTO), "--db", str(tmp_path / "r.db"), "--output", f"jsonl:{tmp_path / 'r.db'}"],
                        "is the results database (--db), which it would overwrite")):
        (tmp_path / "r.db").write_bytes(b"")
        r = _run(tmp_path, ["analyze", *args], env, cli=True)
        assert r.returncode == 2 and said in r.stderr, (args, r.stderr)
    r = _run(tmp_path, ["stream", str(frames), "--output", f"jsonl:{frames / 'f1.jpg'}"], env, cli=True)
    assert r.returncode == 2 and "is inside an input being read, which it would overwrite" in r.stderr, r.stderr
    assert (frames / "f1.jpg").read_bytes() == PHOTO.read_bytes()
    r = _run(tmp_path, ["stream", "still://x"], cli=True)  # without the plugin
    assert r.returncode == 2 and "unknown kind of URL" in r.stderr and "register a video source" in r.stderr
