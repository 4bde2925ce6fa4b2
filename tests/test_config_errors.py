"""Issue 12, items 6 and 7: a recipe or a model file that is wrong says so in one sentence,
naming what is wrong, never with a traceback or a Python message."""

from pathlib import Path

import pytest
import torch
import yaml

from facemtl.checkpoint import save_checkpoint
from facemtl.cli import main
from facemtl.config import ConfigError, config_from_dict, load_config

TASKS = "tasks: [{name: age, type: ordinal, min_value: 1, max_value: 116}, {name: race, type: nominal, num_classes: 5}]\n"


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("facemtl: error: ")
    return err


@pytest.mark.parametrize("section, key, value, shown, expected", [
    ("train", "batch_size", "32.5", "32.5", "a whole number"),
    ("optim", "lr", "fast", "'fast'", "a number"),
    ("data", "image_size", '"sixty-four"', "'sixty-four'", "a whole number"),
    ("model", "pretrained", "maybe", "'maybe'", "true or false"),
    ("model", "task_fc", "256", "256", "a list of whole numbers"),
    ("data", "age_range", "[21, old]", "age_range[1]' is 'old'", "a number"),  # the entry that is wrong
])
def test_config_type_errors_name_key_value_and_expectation(tmp_path, capsys, section, key, value, shown, expected):
    """Item 6: the key, the value and what was expected, in one sentence (before: a traceback or
    a Python message such as "'<=' not supported between instances of 'str' and 'int'")."""
    recipe = tmp_path / "r.yaml"
    data = yaml.safe_load(TASKS) | {"data": {"root": str(tmp_path / "no-data")}}  # never trains on old code
    data.setdefault(section, {})[key] = yaml.safe_load(value)
    recipe.write_text(yaml.safe_dump(data))
    assert main(["train", "--config", str(recipe), "--out", str(tmp_path / "run")]) == 2
    err = one_line_error(capsys)
    assert f"'{section}.{key}" in err and shown in err and expected in err, err


def test_override_type_errors_name_the_key(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(TASKS + f"data: {{root: {tmp_path / 'no-data'}}}\n")
    assert main(["train", "--config", str(recipe), "--out", str(tmp_path / "run"), "train.epochs=abc"]) == 2
    err = one_line_error(capsys)
    assert "'train.epochs'" in err and "'abc'" in err and "whole number" in err


def test_forgiving_numbers_are_read_as_meant():
    c = config_from_dict({"tasks": [{"name": "g", "type": "binary"}], "optim": {"lr": "1e-3", "momentum": 1},
                          "train": {"batch_size": 32.0}})
    assert c.optim.lr == 0.001 and c.optim.momentum == 1
    assert c.train.batch_size == 32 and isinstance(c.train.batch_size, int)


def test_misspelt_task_setting_names_it_and_the_valid_ones(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"tasks: [{{name: race, type: nominal, num_clases: 5}}]\ndata: {{root: {tmp_path / 'no-data'}}}\n")
    assert main(["train", "--config", str(recipe), "--out", str(tmp_path / "run")]) == 2
    err = one_line_error(capsys)
    assert "'num_clases'" in err and "did you mean 'num_classes'" in err and "classes" in err
    with pytest.raises(ConfigError, match=r"'tasks.race.num_classes' is 'five', but it must be a whole number"):
        config_from_dict({"tasks": [{"name": "race", "type": "nominal", "num_classes": "five"}]})
    with pytest.raises(ConfigError, match=r"needs the setting 'name'"):
        config_from_dict({"tasks": [{"type": "nominal"}]})
    with pytest.raises(ConfigError, match=r"did you mean 'epochs'"):
        config_from_dict({"tasks": [{"name": "g", "type": "binary"}], "train": {"epoch": 3}})
    with pytest.raises(ConfigError, match=r"'train' must be a mapping"):
        config_from_dict({"tasks": [{"name": "g", "type": "binary"}], "train": 3})


def _tiny_checkpoint(path, tasks):
    from facemtl.model import MultiTaskNet
    from facemtl.tasks import build_task

    cfg = config_from_dict({"tasks": tasks, "model": {"backbone": "tiny_mbconv", "pretrained": False, "shared_stages": 2},
                            "data": {"image_size": 32}})
    built = [build_task(t) for t in cfg.tasks]
    model = MultiTaskNet.from_config(cfg.model, built)
    return cfg, model


def test_a_model_file_that_does_not_match_its_config_says_which_parts(tmp_path, capsys):
    """Item 7: one sentence naming missing and unexpected weights and shape mismatches (before:
    PyTorch's several-kilobyte load_state_dict error)."""
    from facemtl.model import load_model

    tasks = [{"name": "age", "type": "ordinal", "min_value": 1, "max_value": 20},
             {"name": "race", "type": "nominal", "num_classes": 5}]
    cfg, model = _tiny_checkpoint(tmp_path, tasks)
    weights = model.state_dict()
    wrong = dict(tasks[1], num_classes=4)  # the config says 4 races; the weights have 5
    cfg_dict = cfg.to_dict()
    cfg_dict["tasks"] = [tasks[0], wrong]
    bogus = dict(weights)
    bogus["extra.weight"] = torch.zeros(3)
    missing = next(k for k in bogus if k.startswith("trunk"))
    del bogus[missing]
    path = tmp_path / "bad.pt"
    save_checkpoint({"config": cfg_dict, "tasks": cfg_dict["tasks"], "model": bogus, "epoch": 1}, path)
    with pytest.raises(ValueError) as info:
        load_model(path)
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 600, msg
    assert "does not match its config" in msg and missing in msg and "extra.weight" in msg
    assert "race" in msg and "(5," in msg and "(4," in msg
    assert main(["evaluate", "--checkpoint", str(path)]) == 2
    assert "does not match its config" in one_line_error(capsys)
    assert main(["analyze", "--checkpoint", str(path), "examples/astronaut.jpg"]) == 2
    assert "does not match its config" in one_line_error(capsys)


def test_a_model_file_without_weights_is_refused_in_one_sentence(tmp_path, capsys):
    path = tmp_path / "empty.pt"
    save_checkpoint({"epoch": 1}, path)
    assert main(["evaluate", "--checkpoint", str(path)]) == 2
    err = one_line_error(capsys)
    assert "lacks" in err and "config" in err


def test_the_shipped_recipes_still_load():
    recipes = sorted(p for p in Path("configs").glob("*.yaml") if not p.name.startswith("experiment_"))
    assert {"paper", "paper_coral", "thesis", "cpu", "cpu_coral", "cpu_distill_soft", "cpu_coral_distill_soft",
            "tiny"} <= {p.stem for p in recipes}
    for path in recipes:
        assert load_config(path).name == path.stem


def test_a_wrong_entry_deep_in_a_setting_is_named_with_yamls_yes_no_trap():
    """``glasses: [no, yes]`` in data.columns reads as [False, True] in YAML 1.1: the sentence names
    the entry, says what it must be, and why a user who typed text got true/false."""
    from facemtl.typecheck import describe

    with pytest.raises(ConfigError) as e:
        config_from_dict({"tasks": [{"name": "g", "type": "binary"}],
                          "data": {"columns": {"sex": ["male", "female"], "glasses": [False, True]}}})
    assert "setting 'data.columns.glasses[0]' is False, but it must be text (YAML reads unquoted yes/no" in str(e.value)
    with pytest.raises(ConfigError, match=r"'data.columns.sex' is 'male', but it must be a list of texts or null$"):
        config_from_dict({"tasks": [{"name": "g", "type": "binary"}], "data": {"columns": {"sex": "male"}}})
    assert describe(dict[str, list[str] | None] | None) == "a mapping to (lists of texts or null) or null"


@pytest.mark.parametrize("tasks, refused", [
    ([{"name": "box", "type": "nominal", "num_classes": 2}], "a task cannot be named 'box': outputs already have"),
    ([{"name": "score", "type": "regression"}], "a task cannot be named 'score'"),  # the epoch's mean skill
    ([{"name": "x1", "type": "regression"}], "a task cannot be named 'x1'"),  # a CSV column
    # a track line's clock (a review: the answer was written over it, and read back as the time)
    ([{"name": "last_wall_time", "type": "regression"}], "a task cannot be named 'last_wall_time'"),
    ([{"name": "raw_age", "type": "regression"}], "names starting raw_"),
    ([{"name": "_info", "type": "regression"}], "a name is a letter, then letters, digits or _"),  # the metrics' own
    ([{"name": "=HYPERLINK(1)", "type": "regression"}], "a name is a letter"),
    ([{"name": "hair colour", "type": "nominal", "classes": ["a", "b"]}], "a name is a letter"),
    ([{"name": "hair", "type": "nominal", "classes": ["black", "Black ", "red"]}], r"\['Black ', 'black'\] read alike"),
    ([{"name": "smiling", "type": "binary", "classes": ["", "yes"]}], "a class name is empty"),
    ([{"name": "quality", "type": "ordinal", "min_value": 0.5, "max_value": 4.5}], "ranks are whole numbers"),
    # a user test: a smile of 0.1 was counted in the group "0.3-0.7"
    ([{"name": "smile", "type": "regression", "min_value": 0, "max_value": 1, "group_edges": [0.3, 0.7]}],
     r"group_edges \[0.3, 0.7\] must rise and start at or below min_value \(0\)"),
    ([{"name": "stars", "type": "ordinal", "min_value": 1, "max_value": 5, "bias_edges": [1, 4, 2]}],
     "bias_edges .* must rise"),
    ([{"name": "age", "type": "ordinal", "min_value": 1, "max_value": 116},
      {"name": "age_interval", "type": "regression"}], "task 'age' writes a field of that name"),
    ([{"name": "gender", "type": "nominal", "num_classes": 2, "classes": ["m", "f"]},
      {"name": "gender_p_m", "type": "regression"}], "task 'gender' writes a field of that name"),
])
def test_a_task_named_like_an_output_field_is_refused(tasks, refused):
    """A task named ``box`` wrote its class over every face's box in the JSON, and one named
    ``score`` stopped training after an epoch with a traceback (the metrics' mean score)."""
    from facemtl.config import check_recipe

    cfg = config_from_dict({"tasks": tasks})  # (read as it is: a model file trained before the check still loads)
    with pytest.raises(ConfigError, match=refused):
        check_recipe(cfg)  # refused when a run starts
    check_recipe(config_from_dict({"tasks": [{"name": "face_code", "type": "regression"},  # near names are fine
                                             {"name": "boxes", "type": "regression"}]}))


def test_a_checkpoint_trained_before_the_recipe_checks_still_loads(tmp_path, capsys):
    """Task names, class names and ordinal bounds are checked when a run starts; a model file
    trained before (a task named 'skin-tone', classes that read alike) loads as it did."""
    from facemtl.model import load_model

    cfg, model = _tiny_checkpoint(tmp_path, [{"name": "skin-tone", "type": "nominal", "classes": ["A", "a", "B"]},
                                             {"name": "quality", "type": "ordinal", "min_value": 0.5, "max_value": 4.5}])
    save_checkpoint({"config": cfg.to_dict(), "tasks": [t.to_dict() for t in model.tasks], "model": model.state_dict(),
                     "epoch": 1, "best_epoch": 1, "best_score": 0.0, "epochs_from": 1}, tmp_path / "old.pt")
    _, tasks, _, _ = load_model(tmp_path / "old.pt")
    assert [t.name for t in tasks] == ["skin-tone", "quality"]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"tasks": cfg.tasks, "data": {"root": str(tmp_path / "no-data")}}))
    assert main(["train", "--config", str(recipe), "--out", str(tmp_path / "run")]) == 2
    assert "a task cannot be named 'skin-tone'" in one_line_error(capsys)  # a new run with it is refused
