"""``facemtl experiment ... section.key=value``: command-line overrides reach every run of the
grid, are recorded in the experiment folder, take part in reusing finished runs, and a bad
one fails in one sentence (exit 2) before any run starts."""

import json
from pathlib import Path

import pytest
import yaml

from facemtl.config import ConfigError
from facemtl.epochlog import read_epochs

REPO = Path(__file__).resolve().parents[1]

VARIANTS = [{"name": "a", "overrides": ["weighting.name=equal"]},
            {"name": "b", "overrides": ["weighting.name=uncertainty"]}]


def _write(folder: Path, data_root: str, overrides: list[str], variants: list[dict] = VARIANTS) -> Path:
    """The tiny recipe (its data folder ``data_root``) and a two-variant, one-seed experiment on it."""
    base = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    base["data"]["root"] = data_root
    (folder / "tiny.yaml").write_text(yaml.safe_dump(base))
    (folder / "exp.yaml").write_text(yaml.safe_dump({"name": "ov", "base": "tiny.yaml", "seeds": [0],
                                                     "overrides": overrides, "variants": variants}))
    return folder / "exp.yaml"


# -- without training: precedence and refusals -------------------------------------------


def test_command_line_wins_over_the_file_and_is_recorded(tmp_path):
    from facemtl.experiments import load_experiment
    from facemtl.experiments.grid import experiment_from_dict

    exp_file = _write(tmp_path, "/nowhere/utkface", ["train.epochs=3", "data.image_size=32"])
    exp = load_experiment(exp_file, ["train.epochs=2", "optim.lr=0.01", "weighting={lr: 0.5}"])
    for v, weighting in (("a", "equal"), ("b", "uncertainty")):
        cfg = exp.run_config(exp.variant(v), 0)
        assert (cfg.train.epochs, cfg.optim.lr, cfg.data.image_size) == (2, 0.01, 32)
        assert (cfg.weighting.name, cfg.weighting.lr) == (weighting, 0.5)  # the variant's own setting is its own
    assert exp.overrides == ["train.epochs=3", "data.image_size=32", "train.epochs=2", "optim.lr=0.01",
                             "weighting={lr: 0.5}"]
    assert exp.command_line == ["train.epochs=2", "optim.lr=0.01", "weighting={lr: 0.5}"]
    again = experiment_from_dict(yaml.safe_load(yaml.safe_dump(exp.to_dict())))  # as report reads experiment.yaml
    assert again.command_line == exp.command_line and again.run_config(again.variant("a"), 0).train.epochs == 2


def test_a_relative_data_root_typed_is_to_the_current_folder(tmp_path, monkeypatch):
    from facemtl.experiments import load_experiment

    exp_file = _write(tmp_path, "/nowhere/utkface", [])
    (tmp_path / "here" / "faces").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "here")
    exp = load_experiment(exp_file, ["data.root=faces"])
    want = str((tmp_path / "here" / "faces").resolve())
    assert exp.command_line == [f"data.root={want}"]
    assert exp.run_config(exp.variant("a"), 0).data.root == want
    assert exp.origin["data_root"] == "faces" and exp.origin["data_root_from"] == "the command line"
    # the teacher's cache too: typed, to the current folder; written in the base recipe, to its folder
    exp = load_experiment(exp_file, ["data.cache_dir=tc"])
    assert exp.run_config(exp.variant("a"), 0).data.cache_dir == str(tmp_path / "here" / "tc")
    base = yaml.safe_load((tmp_path / "tiny.yaml").read_text())
    base["data"]["cache_dir"] = "cache"
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(base))
    assert load_experiment(exp_file).run_config(exp.variant("a"), 0).data.cache_dir == str(tmp_path / "cache")


def test_tasks_or_name_overrides_are_refused_where_variants_choose_tasks(tmp_path):
    """A typed ``tasks=`` replaced the task lists the variants had chosen (every variant then
    trained the same task under its own name); ``name=`` would name every run alike."""
    from facemtl.experiments import load_experiment

    tasks = "tasks=[{name: gender, type: binary, label: gender, classes: [male, female]}]"
    variants = [*VARIANTS, {"name": "only_age", "tasks": ["age"]}]
    with pytest.raises(ConfigError, match="replaces the tasks that variant 'only_age' chooses or changes"):
        load_experiment(_write(tmp_path, "/nowhere/utkface", [], variants), [tasks])
    with pytest.raises(ConfigError, match="each run is named after its variant"):
        load_experiment(_write(tmp_path, "/nowhere/utkface", []), ["name=other"])
    exp = load_experiment(_write(tmp_path, "/nowhere/utkface", []), [tasks])  # no variant chooses tasks: fine
    assert [t["name"] for t in exp.config(exp.variants[0], 0).to_dict()["tasks"]] == ["gender"]


@pytest.mark.parametrize("override, says", [
    ("weighting.params.lam=0.2", "override 'weighting.params.lam=0.2' changes a setting that variant 'f' sets itself"),
    ("weighting={params: {lam: 0.2}}", "variant 'f' sets itself"),
])
def test_a_setting_inside_a_variants_section_is_refused(tmp_path, override, says):
    from facemtl.experiments import load_experiment

    variants = [*VARIANTS, {"name": "f", "overrides": ["weighting.params={weights: {age: 1.0}}"]}]
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace("{", r"\{")):
        load_experiment(_write(tmp_path, "/nowhere/utkface", [], variants), [override])


@pytest.mark.parametrize("override, says", [
    ("train.epoch=2", "unknown setting 'train.epoch' (did you mean 'epochs'?)"),
    ("train.epochs=two", "setting 'train.epochs' is 'two', but it must be a whole number"),
    ("train.epochs=0", "train.epochs and train.batch_size must be at least 1"),
    ("epochs", "override 'epochs' must look like section.key=value"),
    ("train.seed=3", "override 'train.seed=3': each run's train.seed comes from the experiment's seeds"),
    ("data.limit=0", "data.limit must be at least 1 (or null: every face), not 0"),  # a user test: "no labelled image"
    ("weighting.name=dwa", "override 'weighting.name=dwa' changes a setting that variant 'a' (and 1 other variant) "
                           "sets itself (weighting.name=equal)"),
])
def test_a_bad_override_fails_in_one_sentence_before_any_run(tmp_path, capsys, override, says):
    from facemtl.cli import main

    out = tmp_path / "out"
    exp_file = _write(tmp_path, "/nowhere/utkface", ["train.epochs=1"])
    assert main(["experiment", "--config", str(exp_file), "--out", str(out), "train.epochs=1", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"facemtl: error: {says}") and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()  # no run started, the folder untouched


# -- tiny real runs on the small UTKFace slice ---------------------------------------------------


def _epochs(out: Path, variant: str) -> int:
    run = out / "runs" / variant / "seed0"
    logged = [r["epoch"] for r in read_epochs(run / "metrics.jsonl")]
    assert logged == list(range(1, len(logged) + 1))
    assert json.loads((run / "result.json").read_text())["epochs_run"] == len(logged)
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == len(logged)
    return len(logged)


def test_overrides_train_every_run_reuse_and_retrain(utkface_root, tmp_path, capsys, monkeypatch):
    from facemtl.cli import main
    from facemtl.report.load import load

    # the recipe's data folder does not exist: the typed (relative) data.root is what the runs read
    exp_file = _write(tmp_path, "/nowhere/utkface", ["data.limit=200", "data.image_size=32", "train.epochs=3"])
    out = tmp_path / "out"
    monkeypatch.chdir(utkface_root.parent)

    def experiment(*args: str) -> str:
        capsys.readouterr()
        assert main(["experiment", "--config", str(exp_file), "--out", str(out), *args]) == 0
        return capsys.readouterr().err

    # 1. the overrides reach every run: 2 epochs logged, not the file's 3
    err = experiment("train.epochs=2", f"data.root={utkface_root.name}")
    assert err.count("training in") == 2 and "reused" not in err
    assert _epochs(out, "a") == 2 and _epochs(out, "b") == 2
    typed = ["train.epochs=2", f"data.root={utkface_root.resolve()}"]
    spec = yaml.safe_load((out / "experiment.yaml").read_text())
    assert spec["command_line_overrides"] == typed and spec["overrides"][-2:] == typed
    summary = json.loads((out / "experiment.json").read_text())
    assert summary["command_line_overrides"] == typed and summary["left_out"] == []
    assert summary["variants"]["a"]["seeds"] == [0] and summary["variants"]["b"]["seeds"] == [0]
    report = load(out)
    assert report.overrides[-2:] == typed and set(report.variants) == {"a", "b"} and report.left_out == []

    # 2. the same overrides again (the data folder now typed absolute: the same folder) reuse both runs
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed0/best.pt")}
    err = experiment(f"data.root={utkface_root.resolve()}", "train.epochs=2")
    assert err.count("finished before, reused") == 2 and "training" not in err
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed0/best.pt")} == stamp

    # 3. another override: refused, nothing touched, naming what changed; --overwrite trains it again
    capsys.readouterr()
    assert main(["experiment", "--config", str(exp_file), "--out", str(out), "--only", "a", "train.epochs=1",
                 f"data.root={utkface_root}"]) == 2
    err = capsys.readouterr().err
    assert "holds runs trained with other settings (a seed 0 (train.epochs 2, now 1)); add --overwrite" in err
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed0/best.pt")} == stamp
    assert sorted(json.loads((out / "experiment.json").read_text())["command_line_overrides"]) == sorted(typed)
    err = experiment("--only", "a", "--overwrite", "train.epochs=1", f"data.root={utkface_root}")
    assert "a seed 0 (train.epochs 2, now 1): trained with other settings, to be trained again" in err
    assert "reused" not in err and _epochs(out, "a") == 1
    stale = "b seed 0 (train.epochs 2, now 1)"
    summary = json.loads((out / "experiment.json").read_text())
    assert summary["left_out"] == [stale] and summary["variants"]["b"]["seeds"] == []
    assert summary["variants"]["a"]["seeds"] == [0] and summary["command_line_overrides"][0] == "train.epochs=1"
    report = load(out)
    assert set(report.variants) == {"a"} and report.left_out == [stale]

    # 4. without train.epochs: the file's budget (3 epochs) is another setting again, for both runs
    err = experiment("--only", "b", "--overwrite", f"data.root={utkface_root}")
    assert "b seed 0 (train.epochs 2, now 3): trained with other settings" in err and _epochs(out, "b") == 3
    summary = json.loads((out / "experiment.json").read_text())
    assert summary["command_line_overrides"] == [f"data.root={utkface_root.resolve()}"]  # recorded absolute
    assert summary["left_out"] == ["a seed 0 (train.epochs 1, now 3)"]


def test_seeds_named_twice_and_a_variant_changing_data_are_refused_when_the_grid_loads(tmp_path):
    """A user test: `seeds: [0, 0]` reported one run as two seeds ("16.84 ± 0.00"); a variant with
    its own `data.image_size` was refused only when its turn came, after the others had trained."""
    from facemtl.experiments import load_experiment

    (tmp_path / "base.yaml").write_text((Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml").read_text())
    for spec, why in (({"seeds": [0, 0]}, "seeds name 0 twice"),
                      ({"seeds": ["a"]}, "seeds must be whole numbers"),
                      ({"variants": [{"name": "small", "overrides": ["weighting.name=equal"]},
                                     {"name": "big", "overrides": ["data.image_size=80"]}]},
                       "variant 'big' changes data settings")):
        (tmp_path / "exp.yaml").write_text(yaml.safe_dump({"base": "base.yaml", **spec}))
        with pytest.raises(ConfigError, match=why):
            load_experiment(tmp_path / "exp.yaml")
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump({"base": "base.yaml", "seeds": [2, 0]}))
    assert load_experiment(tmp_path / "exp.yaml").seeds == [2, 0]
