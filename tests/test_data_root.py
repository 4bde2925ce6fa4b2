"""Issue 12, item 10 and the report part of 11: a relative data folder resolves against the
file that names it (the recipe; for ``evaluate``, the model file), one typed on the
command line against the current folder; a missing one is named; reports write it as
configured, not as resolved on the machine that trained."""

import json
import os
from pathlib import Path

import pytest

from facemtl.checkpoint import load_checkpoint, save_checkpoint
from facemtl.cli import main
from facemtl.config import load_config

TINY = ("tasks: [{{name: gender, type: nominal, num_classes: 2, classes: [male, female]}}]\n"
        "data: {{root: {root}, image_size: 32, limit: 120, workers: 0}}\n"
        "model: {{backbone: tiny_mbconv, pretrained: false, shared_stages: 2}}\n"
        "train: {{epochs: 1, batch_size: 32}}\n")


@pytest.fixture
def layout(utkface_root, tmp_path, monkeypatch):
    """project/recipes/r.yaml names data/utkface (a link to the real data) relative to itself;
    the current folder is work/a/b, where the same relative path leads to an empty decoy
    folder (the old rule, current folder first, silently read the decoy)."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "utkface").symlink_to(utkface_root, target_is_directory=True)
    recipes = tmp_path / "project" / "recipes"
    recipes.mkdir(parents=True)
    rel = "../../data/utkface"
    (recipes / "r.yaml").write_text(TINY.format(root=rel))
    work = tmp_path / "work" / "a" / "b"
    work.mkdir(parents=True)
    (tmp_path / "work" / "data" / "utkface").mkdir(parents=True)  # the decoy
    monkeypatch.chdir(work)
    return recipes / "r.yaml", rel, utkface_root


def test_a_recipe_works_from_any_folder(layout, tmp_path):
    recipe, rel, root = layout
    assert Path(load_config(recipe).data.root) == Path(root).resolve()
    assert main(["train", "--config", str(recipe), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["data_root"] == rel and info["data_root_from"] == str(recipe)


def test_command_line_paths_resolve_against_the_current_folder(layout, tmp_path, capsys):
    recipe, rel, root = layout
    here = os.path.relpath(root, Path.cwd())
    assert Path(load_config(recipe, [f"data.root={here}"]).data.root) == Path(root).resolve()
    assert main(["train", "--config", str(recipe), "--out", str(tmp_path / "run"), "--data-root", here,
                 "--no-progress"]) == 0
    # a missing folder is named, with the place its relative path came from
    bad = recipe.with_name("bad.yaml")
    bad.write_text(TINY.format(root="../nowhere/faces"))
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "run2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    expected = (recipe.parent / "../nowhere/faces").resolve()
    assert f"data folder {expected} does not exist" in err and "'../nowhere/faces' in" in err and "--data-root" in err


def test_evaluate_resolves_a_relative_root_against_the_model_file(layout, tmp_path, capsys):
    recipe, rel, root = layout
    run = tmp_path / "run"
    assert main(["train", "--config", str(recipe), "--out", str(run), "--no-progress"]) == 0
    state = load_checkpoint(run / "best.pt")
    state["config"]["data"]["root"] = os.path.relpath(root, run)  # as a model file moved with its data holds it
    save_checkpoint({k: v for k, v in state.items() if k != "format"}, run / "moved.pt")
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run / "moved.pt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["gender"]["n"] > 0
    # every command reading a checkpoint resolves it so (export, fusion and gradcam read it
    # through load_model and the info written from it), whatever the current folder
    from facemtl.inference.runtimes.pytorch import TorchRuntime
    from facemtl.model import load_model

    assert Path(load_model(run / "moved.pt")[2].data.root) == Path(root).resolve()
    assert Path(TorchRuntime(run / "moved.pt", device="cpu").info.extra["data"]["root"]) == Path(root).resolve()
    # the data folder's other spelling, as export and benchmark name it
    assert main(["evaluate", "--checkpoint", str(run / "best.pt"), "--data", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["gender"]["n"] > 0
    # the faces scored carry an id: the same faces as the run's own test, told in the text too
    from facemtl.data.dataset import faces_id

    saved = json.loads((run / "test_metrics.json").read_text())["_info"]["faces_id"]
    assert main(["evaluate", "--checkpoint", str(run / "best.pt")]) == 0
    assert f"id {saved}" in capsys.readouterr().out
    assert faces_id(["a/x.jpg", "b/y.jpg"]) == faces_id(["y.jpg", "c/x.jpg"]) != faces_id(["x.jpg"])
    state["config"]["data"]["root"] = "../elsewhere/faces"
    save_checkpoint({k: v for k, v in state.items() if k != "format"}, run / "lost.pt")
    assert main(["evaluate", "--checkpoint", str(run / "lost.pt")]) == 2
    err = capsys.readouterr().err
    assert str((run / "../elsewhere/faces").resolve()) in err and "model file's folder" in err and "--data-root" in err


def test_a_report_writes_the_data_folder_as_configured(layout, tmp_path):
    pytest.importorskip("matplotlib")
    from facemtl.report import write_report

    recipe, rel, root = layout
    run = tmp_path / "run"
    assert main(["train", "--config", str(recipe), "--out", str(run), "--no-progress"]) == 0
    html = write_report(run, tmp_path / "report", gradcam=False)
    md = (html.parent / "report.md").read_text()
    assert f"`{rel}` (relative to r.yaml)" in md and str(Path(root).resolve()) not in md
    assert json.loads((html.parent / "report.json").read_text())["data_root"] == rel


def test_csv_data_mistakes_end_in_one_sentence(tmp_path, capsys):
    """The user test's csv recipes: a folder for the manifest, class lists in another order, a
    task none of whose labels can be read, an index past a task's classes: exit 2, one line."""
    faces = tmp_path / "faces"
    faces.mkdir()
    manifest = faces / "faces.csv"
    manifest.write_text("path,sex\n" + "".join(f"f{i}.jpg,{['male', 'female'][i % 2]}\n" for i in range(40)))
    numeric = faces / "numeric.csv"
    numeric.write_text("path,sex\n" + "".join(f"f{i}.jpg,{7 if i == 3 else i % 2}\n" for i in range(40)))
    recipe = tmp_path / "r.yaml"

    def train(task: str, root, columns: str = "") -> str:
        recipe.write_text(f"tasks: [{task}]\ndata: {{dataset: csv, root: {root}, image_size: 32, workers: 0{columns}}}\n"
                          "model: {backbone: tiny_mbconv, pretrained: false}\ntrain: {epochs: 1, batch_size: 8}\n")
        capsys.readouterr()
        assert main(["train", "--config", str(recipe), "--out", str(tmp_path / "run"), "--no-progress",
                     "--overwrite"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("facemtl: error: "), err
        return err[0][len("facemtl: error: "):]

    gender = "{name: gender, type: nominal, label: sex, classes: [male, female]}"
    assert train(gender, faces).startswith(f"{faces} is a folder, but the csv reader reads a manifest: give the CSV "
                                           "file itself")
    assert train(gender, manifest, ", columns: {sex: [female, male]}").startswith(
        "task 'gender' names the classes of column 'sex' [male, female], but data.columns.sex names them [female, male]")
    assert train("{name: gender, type: nominal, label: sex}", manifest).startswith(
        "task 'gender' has no labelled face in the training split")
    assert "but 1 row(s) hold 7" in train(gender, numeric)


def test_an_ensemble_check_compares_faces_whichever_way_each_file_records_its_folder(utkface_root, monkeypatch):
    """A user test: the shipped model records '../shared/data/utkface' and a run records the
    folder absolute, so their face paths never met and an ensemble of the two was scored on
    136 of 200 faces the shipped model trained on, without a word."""
    import copy

    from facemtl.data.model_data import check_held_out, model_data
    from facemtl.inference import default_model_path, load_predictor

    shipped = load_predictor(default_model_path()).info
    monkeypatch.chdir(utkface_root.parent)
    relative = copy.deepcopy(shipped)
    relative.extra["data"] = {**shipped.extra["data"], "root": os.path.join("..", utkface_root.parent.name,
                                                                            utkface_root.name), "limit": 2000}
    absolute = copy.deepcopy(relative)
    absolute.extra["data"] = {**relative.extra["data"], "root": str(utkface_root), "split_seed": 7}
    scored = model_data(absolute).test.paths  # another split of the same faces: most were trained on by the other
    with pytest.raises(ValueError, match=r"b was trained on another split than a: \d+ of the test faces scored are "
                                         r"among its train faces"):
        check_held_out(scored, "test", [("a", absolute), ("b", relative)])
    check_held_out(model_data(relative).test.paths, "test", [("b", relative), ("b again", relative)])


def test_ensemble_members_are_named_by_as_many_folders_as_tell_them_apart():
    """A user test: two grid runs' `seed0/best.pt` were both named `seed0/best.pt` in the error."""
    from facemtl.inference.predictor import member_labels

    assert member_labels(["a.onnx", "b/b.onnx"]) == ["a.onnx", "b.onnx"]
    assert member_labels(["E/runs/proposed/seed0/best.pt", "E/runs/equal/seed0/best.pt"]) == [
        "proposed/seed0/best.pt", "equal/seed0/best.pt"]
    assert member_labels(["run/best.pt", "run/best.pt"]) == ["run/best.pt", "run/best.pt"]  # one file twice


def test_a_relative_teacher_cache_resolves_as_the_data_folder_does(layout, tmp_path):
    """A user test: a recipe's ``data.cache_dir: tcache`` followed the current folder, so evaluate run
    from another folder computed every teacher descriptor again, into a second stray cache."""
    recipe, rel, root = layout
    recipe.write_text(recipe.read_text().replace("workers: 0}", "workers: 0, cache_dir: tcache}"))
    assert load_config(recipe).data.cache_dir == str(recipe.parent / "tcache")
    typed = load_config(recipe, ["data.cache_dir=here"]).data.cache_dir  # typed: the current folder
    assert typed == str(Path.cwd() / "here")
    assert load_config(recipe, ["data.cache_dir=~/c"]).data.cache_dir == "~/c"  # under home: as written
    # a model file recording a relative cache (written by hand, or before): against its own folder
    from facemtl.model.load import _anchor_data_paths
    cfg = load_config(recipe)
    cfg.data.cache_dir = "cache"
    _anchor_data_paths(cfg, tmp_path / "run" / "best.pt")
    assert cfg.data.cache_dir == str(tmp_path / "run" / "cache")
