"""The report's bias study: its grouping columns (``facemtl report --groups``, ``write_report(groups=...)``),
the default, and which faces it leaves out. On a synthetic run folder whose cells are known by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

pytest.importorskip("matplotlib")

N = 200
TASKS = [
    {"name": "age", "type": "ordinal", "min_value": 1, "max_value": 116},
    {"name": "gender", "type": "nominal", "classes": ["male", "female"]},
    {"name": "race", "type": "nominal", "classes": ["white", "black", "asian", "indian", "others"]},
    {"name": "glasses", "type": "binary", "classes": ["no", "yes"]},
    {"name": "smile", "type": "binary", "classes": ["no", "yes"]},
    {"name": "identity", "type": "nominal", "num_classes": 12},  # too many classes to group by
]


def _labels() -> dict[str, np.ndarray]:
    i = np.arange(N)
    glasses = ((i // 2) % 2).astype(float)
    glasses[190:] = np.nan  # 10 faces without a glasses label
    smile = (i % 3 == 0).astype(float)
    smile[:10] = np.nan  # 10 others without a smile label
    return {"age": np.array([10.0, 30.0, 50.0, 70.0])[(i // 4) % 4], "gender": (i % 2).astype(float),
            "race": (i % 5).astype(float), "glasses": glasses, "smile": smile, "identity": (i % 12).astype(float)}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder as training leaves it, reduced to what a report reads: ``config.yaml``,
    ``metrics.jsonl`` and ``test_predictions.npz`` (every label column as ``attr/<column>``)."""
    folder = tmp_path_factory.mktemp("bias") / "run"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump({"name": "bias", "tasks": TASKS}))
    (folder / "metrics.jsonl").write_text("")
    labels = _labels()
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {"paths": np.array([f"face{j}.jpg" for j in range(N)])}
    for name, true in labels.items():
        pred = np.nan_to_num(true).copy()
        flip = rng.random(N) < 0.3
        pred[flip] = 0 if name != "age" else pred[flip] + 7
        if name == "age":
            pred = pred + rng.integers(-3, 4, N)
        arrays[f"pred/{name}"] = pred.astype(np.float32)
        arrays[f"true/{name}"] = true.astype(np.float32)
        arrays[f"attr/{name}"] = true.astype(np.float32)
    np.savez_compressed(folder / "test_predictions.npz", **arrays)
    return folder


def _report(run, out, **kw) -> tuple[dict, str]:
    from facemtl.report import write_report

    html = write_report(run, out, gradcam=False, **kw)
    return json.loads((html.parent / "report.json").read_text())["bias"], (html.parent / "report.md").read_text()


def test_chosen_columns_make_the_known_cells_and_leave_out_only_faces_without_them(run, tmp_path):
    bias, md = _report(run, tmp_path / "rep", groups="gender,glasses")
    assert bias["groups"] == ["gender", "glasses"] and bias["columns"] == ["gender", "glasses"]
    assert bias["chosen"] == "given" and (bias["faces"], bias["left_out"]) == (N, 10)
    # faces 0..189 carry glasses; i mod 4 gives (male, no), (female, no), (male, yes), (female, yes):
    # 47 whole rounds and 2 faces more
    cells = {(c["gender"], c["glasses"]): c["n"] for c in bias["cells"]}
    assert cells == {("male", "no"): 48, ("female", "no"): 48, ("male", "yes"): 47, ("female", "yes"): 47}
    assert {"race", "age group", "smile"}.isdisjoint(bias["cells"][0])
    assert "Grouped by gender x glasses, as asked" in md and "10 of 200 test faces left out" in md


def test_a_face_missing_another_tasks_label_stays_and_scores_only_where_labelled(run, tmp_path):
    bias, _ = _report(run, tmp_path / "rep", groups=["gender", "glasses"])
    # faces 0..9 have no smile label but are in the cells; smile is scored on the other 180
    assert sum(c["n"] for c in bias["cells"]) == 190
    assert sum(c["smile_accuracy_n"] for c in bias["cells"]) == 180
    assert all(c["gender_accuracy_n"] == c["n"] for c in bias["cells"])
    pr = np.load(run / "test_predictions.npz")
    c = next(c for c in bias["cells"] if (c["gender"], c["glasses"]) == ("male", "no"))
    mask = (pr["attr/gender"] == 0) & (pr["attr/glasses"] == 0) & ~np.isnan(pr["attr/smile"])
    assert c["smile_accuracy_n"] == int(mask.sum())
    assert c["smile_accuracy"] == pytest.approx(float(np.mean(pr["pred/smile"][mask] == pr["true/smile"][mask])))


def test_a_numeric_task_groups_by_its_bias_bands(run, tmp_path):
    bias, _ = _report(run, tmp_path / "rep", groups=["age"])
    assert bias["columns"] == ["age group"] and bias["left_out"] == 0
    # ages 10, 30, 50, 70 by (i // 4) % 4: 13, 13, 12, 12 blocks of 4 faces
    assert {c["age group"]: c["n"] for c in bias["cells"]} == {"0-19": 52, "20-39": 52, "40-59": 48, "60+": 48}
    same, _ = _report(run, tmp_path / "rep2", groups="age group")  # the column as the report names it
    assert same["cells"] == bias["cells"]


def test_the_default_is_age_group_gender_race_and_keeps_every_face(run, tmp_path):
    bias, md = _report(run, tmp_path / "rep")
    assert bias["chosen"] == "default" and bias["columns"] == ["age group", "gender", "race"]
    assert bias["left_out"] == 0 and sum(c["n"] for c in bias["cells"]) == N  # glasses / smile gaps drop no face
    assert len(bias["cells"]) == 4 * 2 * 5
    assert "the other tasks that group: glasses, smile)" in md and "--groups" in md


def test_default_columns_keep_recipe_order_within_three_columns_and_100_cells():
    from facemtl.subgroups import default_columns

    def col(k: int) -> np.ndarray:
        return np.array([str(j % k) for j in range(60)] + ["?"], dtype=object)

    assert default_columns({"a": col(2), "b": col(4), "c": col(5), "d": col(2)}) == ["a", "b", "c"]
    # one group contrasts nothing; 10 x 2 x 6 = 120 cells is too many, so c gives way to d
    assert default_columns({"one": col(1), "a": col(10), "b": col(2), "c": col(6), "d": col(2)}) == ["a", "b", "d"]
    assert default_columns({"one": col(1)}) == []


def test_an_unknown_column_is_one_sentence_naming_the_known_ones(run, tmp_path, capsys):
    from facemtl.cli import main

    out = tmp_path / "rep"
    assert main(["report", str(run), "--out", str(out), "--no-gradcam", "--groups", "gender,glases"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'glases'" in err
    assert err.endswith("the known grouping columns are: age, gender, race, glasses, smile")
    assert not out.exists()  # refused before anything was written
    assert main(["report", str(run), "--out", str(out), "--no-gradcam", "--groups", "identity"]) == 2
    assert "task 'identity' makes no groups" in capsys.readouterr().err
    assert main(["report", str(run), "--out", str(out), "--no-gradcam", "--groups", " , "]) == 2
    assert "names no column" in capsys.readouterr().err
    from facemtl.report import write_report

    with pytest.raises(ValueError, match="'sex' is no task of this run"):
        write_report(run, out, gradcam=False, groups=["sex"])


def test_the_cli_passes_the_groups_through(run, tmp_path, capsys):
    from facemtl.cli import main

    assert main(["report", str(run), "--out", str(tmp_path / "r"), "--no-gradcam", "--groups", "race,smile"]) == 0
    facts = json.loads((tmp_path / "r" / "report.json").read_text())["bias"]
    assert facts["groups"] == ["race", "smile"] and facts["left_out"] == 10  # the 10 faces without a smile label
    assert len(facts["cells"]) == 5 * 2


def test_age_bands_leave_out_groups_outside_the_range_or_of_its_top_age_alone():
    """The CORAL protocol's ages 21..60 were grouped 0-19 (empty), 20-39, 40-59 and 60+ (60-year-olds
    alone: a row of the bias table on a handful of faces). The shipped 1..116 keeps its four bands."""
    from facemtl.tasks import build_task

    def bands(lo, hi):
        return build_task({"name": "age", "type": "ordinal", "min_value": lo, "max_value": hi}).group_names()

    assert bands(21, 60) == ["20-39", "40+"] and bands(0, 30) == ["0-19", "20+"]
    assert bands(1, 116) == bands(16, 70) == ["0-19", "20-39", "40-59", "60+"]
    set_by_hand = build_task({"name": "age", "type": "ordinal", "min_value": 21, "max_value": 60,
                              "bias_edges": [0, 20, 40, 60]})
    assert set_by_hand.group_names() == ["0-19", "20-39", "40-59", "60+"]  # (a recipe's, or a saved model's, stand)
