"""UTKFace reader (real files), splits and augmentation."""

import hashlib
import os
from collections import Counter

import numpy as np
import pytest
import torch

from facemtl.data.augment import AugmentConfig, augment
from facemtl.data.splits import stratified_split
from facemtl.data.utkface import parse_name, read_utkface


def test_parse_name_handles_real_defects():
    assert parse_name("26_1_0_20170116171048641.jpg.chip.jpg") == (26.0, 1.0, 0.0)
    age, gender, race = parse_name("39_1_20170116174525125.jpg.chip.jpg")  # no race field
    assert (age, gender) == (39.0, 1.0) and np.isnan(race)
    assert parse_name("24_0_1_20170116220224657 .jpg.chip.jpg") == (24.0, 0.0, 1.0)  # stray space
    assert parse_name("55_0_0_20170116232725357jpg.chip.jpg") == (55.0, 0.0, 0.0)  # missing dot
    assert parse_name("holiday.jpg") is None


def test_utkface_reader_reports_and_deduplicates(utkface_root):
    t = read_utkface(utkface_root)
    r = t.report
    assert r["files"] == 21704
    assert r["malformed_names"] == 5 and r["missing_race"] == 3
    assert r["duplicate_groups"] > 300 and r["duplicate_groups_conflicting_labels"] > 0
    assert r["images"] == r["files"] - r["dropped_as_duplicates"] == len(t)
    assert int(np.isnan(t.labels["race"]).sum()) == 3
    # no two kept images are byte-identical, so no copy can straddle train and test
    digests = Counter(hashlib.md5(open(p, "rb").read()).hexdigest() for p in t.paths)
    assert max(digests.values()) == 1


def test_coral_protocol_keeps_test_list_and_no_train_copy_of_test(utkface_root):
    t = read_utkface(utkface_root, "coral")
    assert (t.split == "test").sum() == 3287
    assert t.report["coral_listed"] == {"train": 11861, "test": 3287}
    assert t.labels["age"].min() == 21 and t.labels["age"].max() == 60
    test = {hashlib.md5(open(p, "rb").read()).hexdigest() for p, s in zip(t.paths, t.split) if s == "test"}
    train = {hashlib.md5(open(p, "rb").read()).hexdigest() for p, s in zip(t.paths, t.split) if s == "train"}
    assert not test & train


def test_a_limit_on_the_coral_protocol_says_it_thins_the_published_test_list(utkface_root, capsys):
    from facemtl.config import DataConfig
    from facemtl.data.dataset import read_table

    t = read_table(DataConfig(root=str(utkface_root), split="coral", limit=600))
    kept = int((t.split == "test").sum())
    assert kept < 3287 and t.report["coral_test_kept"] == kept
    assert f"data.limit=600 keeps {kept:,} of the CORAL protocol's 3,287 test images" in capsys.readouterr().err


def test_stratified_split_fractions_and_groups():
    strata = np.array(["a"] * 500 + ["b"] * 300 + ["c"] * 200, dtype=object)
    s = stratified_split(strata, 0.1, 0.2, seed=0)
    assert (s == "test").sum() == 200 and (s == "val").sum() == 100
    for k, n in (("a", 500), ("b", 300), ("c", 200)):
        assert (s[strata == k] == "test").sum() == n // 5
    assert np.array_equal(s, stratified_split(strata, 0.1, 0.2, seed=0))
    assert not np.array_equal(s, stratified_split(strata, 0.1, 0.2, seed=1))
    groups = np.repeat(np.arange(100), 10)
    s = stratified_split(np.zeros(1000, dtype=object), 0.1, 0.2, seed=0, groups=groups)
    for g in range(100):
        assert len(set(s[groups == g])) == 1


def test_split_seed_keeps_the_test_faces_while_the_run_seed_changes(utkface_root):
    from facemtl.config import DataConfig
    from facemtl.data.dataset import read_split
    from facemtl.tasks import build_task

    tasks = [build_task({"name": "gender", "type": "nominal", "classes": ["male", "female"]})]
    cfg = DataConfig(root=str(utkface_root), limit=400)
    test = {s: read_split(cfg, tasks, s)[1] for s in (0, 1)}
    assert not np.array_equal(test[0], test[1])  # by default the run's seed draws the split
    cfg.split_seed = 0
    assert np.array_equal(read_split(cfg, tasks, 1)[1], test[0])  # the split's own seed: the same faces


def test_augment_identity_and_flip():
    x = torch.rand(4, 3, 32, 32)
    none = AugmentConfig(flip=False, rotate=0, scale=0, translate=0, brightness=0, contrast=0, saturation=0)
    assert torch.equal(augment(x, none), x)
    y = augment(x, AugmentConfig(), torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    flip_only = AugmentConfig(flip=True, rotate=0, scale=0, translate=0, brightness=0, contrast=0, saturation=0)
    y = augment(x, flip_only, torch.Generator().manual_seed(0))
    for i in range(4):
        assert torch.equal(y[i], x[i]) or torch.equal(y[i], x[i].flip(2))
    with pytest.raises(ValueError):
        AugmentConfig(rotate=-1)


# --------------------------------------------------------------------------- labels of a csv manifest vs the tasks
# The data path never opens an image here (read_split, build_data without images): the paths are made up.

GENDER = {"name": "gender", "type": "nominal", "label": "sex", "classes": ["male", "female"]}
GLASSES = {"name": "glasses", "type": "binary", "classes": ["no", "yes"]}
AGE = {"name": "age", "type": "ordinal", "min_value": 1, "max_value": 116}


def _manifest(tmp_path, rows: list[dict], name: str = "faces.csv"):
    """A manifest of ``rows`` (dicts of cells), each given an image path f{i}.jpg."""
    import csv

    keys = ["path"] + [k for k in rows[0] if k != "path"]
    path = tmp_path / name
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows({"path": f"f{i}.jpg", **r} for i, r in enumerate(rows))
    return path


def _faces(n: int = 40, **columns) -> list[dict]:
    """``n`` rows: sex alternating male / female, glasses every third yes, age 20 + i; ``columns``:
    a function of the row index per extra or replaced column."""
    rows = [{"sex": ["male", "female"][i % 2], "glasses": "yes" if i % 3 == 0 else "no", "age": str(20 + i)}
            for i in range(n)]
    for k, f in columns.items():
        for i, r in enumerate(rows):
            r[k] = f(i)
    return rows


def _split(path, specs, **data):
    from facemtl.config import DataConfig
    from facemtl.data.dataset import read_split
    from facemtl.tasks import build_task

    return read_split(DataConfig(dataset="csv", root=str(path), **data), [build_task(s) for s in specs], 0)


def test_an_image_listed_twice_stays_in_one_split(tmp_path, capsys):
    """A user test: an image on two rows (labels 12 and 200) had one row in the test split and
    the other in training, without a word. Its rows are now one unit of the split."""
    import csv

    path = tmp_path / "dups.csv"
    rows = [{"path": f"f{i}.jpg", "sex": ["male", "female"][i % 2]} for i in range(60)]
    rows += [{"path": f"f{i}.jpg", "sex": ["female", "male"][i % 2]} for i in range(0, 60, 3)]  # 20 again
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "sex"])
        w.writeheader()
        w.writerows(rows)
    table, split, _ = _split(path, [GENDER])
    err = capsys.readouterr().err
    assert table.report["duplicate_rows"] == 20 and "lists 20 image(s) again on later rows (the same path); 20 of " \
        "them with other labels (e.g. " in err
    where: dict[str, set] = {}
    for p, part in zip(table.paths, split):
        where.setdefault(p, set()).add(part)
    assert len(where) == 60 and all(len(parts) == 1 for parts in where.values())
    assert {"train", "test"} <= {part for parts in where.values() for part in parts}
    with path.open("a") as fh:  # ./f1.jpg is f1.jpg
        fh.write("./f1.jpg,male\n")
    table, split, _ = _split(path, [GENDER])
    assert table.report["duplicate_rows"] == 21 and len({s for p, s in zip(table.paths, split) if "f1.jpg" in p}) == 1
    capsys.readouterr()
    fixed = tmp_path / "fixed.csv"  # a predefined split that puts an image in two splits is said so
    fixed.write_text("path,sex,split\n" + "".join(f"f{i}.jpg,male,{['train', 'test'][i % 2]}\n" for i in range(20))
                     + "f2.jpg,female,test\n")
    _split(fixed, [GENDER], split="predefined")
    assert "puts 1 image(s) in more than one split (e.g." in capsys.readouterr().err
    single = _manifest(tmp_path, _faces(), "single.csv")  # no image twice: the split drawn as before, by rows
    t1, s1, _ = _split(single, [GENDER])
    assert t1.report["duplicate_rows"] == 0 and t1.groups is None


def test_copies_of_an_image_under_other_names_stay_in_one_split(tmp_path, capsys):
    """A user test: byte-identical copies under other names (UTKFace has them) were split apart,
    20 of 60 pairs with one copy scored in the test split and its twin trained on, without a word
    (UTKFace's own reader collapses them; the CSV reader grouped rows by path only)."""
    for i in range(60):  # pairs: f{i}.jpg and copy{i}.jpg hold the same bytes
        (tmp_path / f"f{i}.jpg").write_bytes(b"face %d" % i)
        (tmp_path / f"copy{i}.jpg").write_bytes(b"face %d" % i)
    for i in range(60, 160):
        (tmp_path / f"f{i}.jpg").write_bytes(b"face %d" % i)
    rows = [{"path": f"f{i}.jpg", "sex": ["male", "female"][i % 2]} for i in range(160)]
    rows += [{"path": f"copy{i}.jpg", "sex": ["male", "female"][(i + (i == 7)) % 2]} for i in range(60)]  # 7: relabelled
    path = tmp_path / "copies.csv"
    path.write_text("path,sex\n" + "".join(f"{r['path']},{r['sex']}\n" for r in rows))
    table, split, _ = _split(path, [GENDER])
    r = table.report
    assert r["copies_by_content"] == 60 and r["copies_by_content_conflicting"] == 1 and r["duplicate_rows"] == 0
    part = dict(zip((os.path.basename(p) for p in table.paths), split))
    assert all(part[f"f{i}.jpg"] == part[f"copy{i}.jpg"] for i in range(60))
    assert {"train", "test"} <= {part[f"f{i}.jpg"] for i in range(60)}
    err = capsys.readouterr().err
    assert "60 image(s) are byte-identical copies of others under other names (e.g. copy0.jpg = f0.jpg); the " \
           "copies are kept together in one split; 1 set(s) of copies carry different labels" in err
    # with a split column the file's split stands, and copies it puts in two splits are said so
    fixed = tmp_path / "fixed.csv"
    fixed.write_text("path,sex,split\nf0.jpg,male,train\ncopy0.jpg,male,test\nf1.jpg,female,train\n"
                     "f2.jpg,male,test\nf3.jpg,female,val\nf4.jpg,male,holdout\n")
    t, s2, _ = _split(fixed, [GENDER], split="predefined")
    assert t.report["copies_by_content_across_splits"] == 1 and s2.tolist()[:2] == ["train", "test"]
    err = capsys.readouterr().err
    assert "puts 1 set(s) of copies in more than one split: the model would be scored on faces it trained on" in err
    assert "1 row(s) whose split cell is empty or not train / val / test are left out" in err
    # no copies: no groups, the split drawn as before
    assert _split(_manifest(tmp_path, _faces(), "plain.csv"), [GENDER])[0].groups is None


def test_named_levels_are_ranks_from_zero_for_a_numeric_task(tmp_path):
    """A user test: data.columns named an ordinal column's levels [child, teen, adult, senior]
    (read as 0..3) for a task running 1..4: every label shifted by one, child and teen both 1,
    with only a warning that some labels 'lie outside (0)'."""
    levels = ["child", "teen", "adult", "senior"]
    path = _manifest(tmp_path, _faces(band=lambda i: levels[i % 4]))
    spec = {"name": "band", "type": "ordinal", "min_value": 1, "max_value": 4}
    with pytest.raises(ValueError, match=r"^the data names the values of column 'band' \[child, teen, adult, senior\], "
                                         r"read as the ranks 0..3 in that order, but task 'band' runs from min_value 1 "
                                         r"to max_value 4: set min_value: 0 and max_value: 3"):
        _split(path, [spec], columns={"band": levels})
    table, _, _ = _split(path, [{**spec, "min_value": 0, "max_value": 3}], columns={"band": levels})
    assert table.labels["band"][:4].tolist() == [0, 1, 2, 3]
    # a wider top (max_value left out: 100) trained 101 ranks for four levels and answered no names (a user
    # test): refused for a new run (the trainer's check); data read for a model made before reads as it did
    from facemtl.tasks import build_task, check_named_ranges

    wide = [{"name": "band", "type": "ordinal"}]
    table, _, report = _split(path, wide, columns={"band": levels})
    assert table.labels["band"][:4].tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match=r"runs from min_value 0 to max_value 100: set min_value: 0 and max_value: 3 "):
        check_named_ranges([build_task(s) for s in wide], report)
    check_named_ranges([build_task({**wide[0], "max_value": 3})], report)
    # a level named like a missing cell ("none") is a label (a review: every rank-0 face was dropped)
    none = _manifest(tmp_path, _faces(band=lambda i: ["none", "mild", "moderate", "severe", ""][i % 5]), "none.csv")
    table, _, _ = _split(none, [{"name": "band", "type": "ordinal", "levels": ["none", "mild", "moderate", "severe"]}])
    assert np.array_equal(table.labels["band"][:5], [0, 1, 2, 3, np.nan], equal_nan=True)


def test_a_model_or_run_from_before_copies_were_grouped_keeps_its_split(tmp_path):
    """A review: grouping copies draws another split for a CSV that has them, so a model trained
    before would be refused by evaluate and --resume ("the data changed"). Settings that lack
    data.group_copies were made before it: rebuilt without grouping, as they were split."""
    from dataclasses import asdict
    from types import SimpleNamespace

    import yaml

    from facemtl.config import DataConfig
    from facemtl.data.model_data import recorded_data
    from facemtl.training.runfolder import resume_config

    for i in range(40):
        (tmp_path / f"f{i}.jpg").write_bytes(b"face %d" % (i % 20))  # f{i} and f{i+20} are copies
    path = tmp_path / "copies.csv"
    path.write_text("path,sex\n" + "".join(f"f{i}.jpg,{['male', 'female'][i % 2]}\n" for i in range(40)))
    now = asdict(DataConfig(dataset="csv", root=str(path)))
    before = {k: v for k, v in now.items() if k != "group_copies"}
    assert now["group_copies"] is True
    assert recorded_data(SimpleNamespace(name="m", extra={"data": before}))[0].group_copies is False
    assert recorded_data(SimpleNamespace(name="m", extra={"data": now}))[0].group_copies is True
    grouped, _, _ = _split(path, [GENDER])
    apart, _, _ = _split(path, [GENDER], group_copies=False)
    assert grouped.groups is not None and apart.groups is None and apart.report["copies_by_content"] == 0
    run = tmp_path / "run"
    run.mkdir()
    recipe = {"data": before, "tasks": [GENDER]}  # a saved config.yaml of an earlier version
    (run / "config.yaml").write_text(yaml.safe_dump(recipe))
    assert resume_config(run, None, []).data.group_copies is False
    (run / "config.yaml").write_text(yaml.safe_dump({**recipe, "data": now}))
    assert resume_config(run, None, []).data.group_copies is True


def test_a_class_no_training_face_has_is_said(tmp_path, capsys):
    """A user test: a class 'pacific' no face had passed without a word; the model still gives it a probability."""
    path = _manifest(tmp_path, _faces())
    _split(path, [{"name": "sex", "type": "nominal", "classes": ["male", "female", "other"]}])
    assert ("task 'sex': no training face has the class(es) other; the model cannot learn them"
            in capsys.readouterr().err)
    _split(path, [GENDER])
    assert "no training face has" not in capsys.readouterr().err


def test_a_misspelt_column_names_the_files_columns(tmp_path):
    """A user test: a task reading 'ethnicty' got "this data has: age_band", the one column
    data.columns listed, not the six the CSV holds."""
    path = _manifest(tmp_path, _faces())
    with pytest.raises(KeyError, match=r"no label column 'sx'; this data has: age \(the file's columns: path, sex, "
                                       r"glasses, age; data.columns reads only those it lists"):
        _split(path, [{"name": "sex", "label": "sx", "type": "nominal", "classes": ["male", "female"]}],
               columns={"age": None})


def test_class_names_of_the_data_and_the_task_must_be_the_same_list(tmp_path):
    path = _manifest(tmp_path, _faces())
    with pytest.raises(ValueError, match=r"^task 'gender' names the classes of column 'sex' \[male, female\], but "
                                         r"data.columns.sex names them \[female, male\]; they must be the same list "
                                         r"in the same order"):
        _split(path, [GENDER], columns={"sex": ["female", "male"]})
    with pytest.raises(ValueError, match=r"task 'glasses' names .* \[yes, no\], but data.columns.glasses names them "
                                         r"\[no, yes\]"):
        _split(path, [{**GLASSES, "classes": ["yes", "no"]}], columns={"glasses": ["no", "yes"]})
    # two tasks reading one column with their classes in another order: the second is refused
    with pytest.raises(ValueError, match=r"task 'sex2' .* but task 'gender', which reads that column too, names them"):
        _split(path, [GENDER, {"name": "sex2", "type": "nominal", "label": "sex", "classes": ["female", "male"]}])
    # the same names (case and spaces aside): labels are the data's indices
    capital = _manifest(tmp_path, _faces(sex=lambda i: ["Male", "Female"][i % 2]), "capital.csv")
    table, _, _ = _split(capital, [GENDER], columns={"sex": ["Male", "Female"]})
    assert table.labels["sex"][:4].tolist() == [0, 1, 0, 1]
    # only the data names them: its indices are the task's
    table, _, _ = _split(path, [{"name": "gender", "type": "nominal", "label": "sex"}],
                         columns={"sex": ["female", "male"], "age": None})
    assert table.labels["sex"][:4].tolist() == [1, 0, 1, 0]
    # another reader's own names are compared too, and named as its
    from types import SimpleNamespace

    from facemtl.data.dataset import check_labels
    from facemtl.data.table import LabelTable
    from facemtl.tasks import build_task

    t = LabelTable(paths=["a", "b"], labels={"gender": np.array([0.0, 1.0])}, classes={"gender": ["female", "male"]})
    with pytest.raises(ValueError, match=r"but the fairface reader names them \[female, male\]"):
        check_labels(t, [build_task({**GENDER, "label": "gender"})], SimpleNamespace(dataset="fairface", columns=None))


def test_text_labels_are_read_by_the_tasks_classes_where_the_recipe_names_none(tmp_path):
    path = _manifest(tmp_path, _faces())
    table, split, report = _split(path, [GENDER, GLASSES, AGE])  # no data.columns at all
    assert table.labels["sex"][:4].tolist() == [0, 1, 0, 1]
    assert table.labels["glasses"][:4].tolist() == [1, 0, 0, 1]
    assert table.labels["age"][:3].tolist() == [20, 21, 22]
    assert report["classes_from_tasks"] == ["glasses", "sex"] and report["unparsable"]["sex"] == 0
    # data.columns that leaves a task's column out: read all the same (by the task's names)
    table, _, _ = _split(path, [GENDER, AGE], columns={"age": None})
    assert table.labels["sex"][:2].tolist() == [0, 1]


def test_a_task_with_no_usable_label_is_refused_saying_why(tmp_path, capsys):
    path = _manifest(tmp_path, _faces())
    unnamed = {"name": "gender", "type": "nominal", "label": "sex"}
    with pytest.raises(ValueError, match=r"^task 'gender' has no labelled face in the training split \(28 faces\), "
                                         r"which training learns from and evaluate's baseline is fitted on: its column"
                                         r" 'sex' has no label on any of the 40 faces: 40 of the values read are "
                                         r"not numbers \(e.g. 'male', 'female'\); name its classes in the task"):
        _split(path, [unnamed, AGE])
    with pytest.raises(ValueError, match=r"40 of the values read are not among its classes \[a, b\] \(e.g. 'male', "
                                         r"'female'\)$"):
        _split(path, [unnamed], columns={"sex": ["a", "b"]})
    # labels only outside the training split; then none in a validation split that exists
    only_test = _manifest(tmp_path, _faces(split=lambda i: "test" if i < 10 else "train",
                                           sex=lambda i: "male" if i < 10 else ""), "test_only.csv")
    with pytest.raises(ValueError, match=r"training split \(27 faces\), which .*: its column 'sex' has labels on 10 of "
                                         r"the 40 faces, none of them in that split$"):
        _split(only_test, [GENDER], split="predefined")
    no_val = _manifest(tmp_path, _faces(split=lambda i: ["train", "val", "test"][i % 3],
                                        glasses=lambda i: "" if i % 3 == 1 else "no"), "no_val.csv")
    with pytest.raises(ValueError, match=r"^task 'glasses' has no labelled face in the validation split \(13 faces\)"):
        _split(no_val, [GENDER, GLASSES], split="predefined")
    _split(no_val, [GENDER], split="predefined")  # the other task is labelled everywhere
    # some labels lost (not all): one warning line with how many and which
    capsys.readouterr()
    some = _manifest(tmp_path, _faces(sex=lambda i: "robot" if i < 3 else ["male", "female"][i % 2]), "some.csv")
    _split(some, [GENDER])
    assert capsys.readouterr().err.splitlines() == [
        "facemtl: warning: 3 value(s) of column 'sex' are not among its classes [male, female] (e.g. 'robot'), so task "
        "'gender' has no label on those faces"]


def test_a_classification_label_outside_its_classes_is_refused(tmp_path):
    sex = lambda i: {5: "2", 9: "7", 11: "7"}.get(i, str(i % 2))  # noqa: E731
    path = _manifest(tmp_path, _faces(sex=sex))
    for columns in (None, {"sex": None}):  # read by the task's names, or as numbers
        with pytest.raises(ValueError, match=r"^task 'gender' has 2 classes \(male, female\), so the labels of its "
                                             r"column 'sex' must be class indices 0..1, but 3 row\(s\) hold 2, 7 "):
            _split(path, [GENDER], columns=columns)
    path = _manifest(tmp_path, _faces(glasses=lambda i: "3" if i == 4 else "0.5" if i == 6 else str(i % 2)), "g.csv")
    with pytest.raises(ValueError, match=r"task 'glasses' has 2 classes \(no, yes\), .* but 2 row\(s\) hold 0.5, 3 "):
        _split(path, [GLASSES])


def test_numeric_labels_outside_a_tasks_range_are_counted_and_said(tmp_path, capsys):
    ages = {1: "150", 2: "-3", 4: "0"}
    path = _manifest(tmp_path, _faces(age=lambda i: ages.get(i, str(20 + i))))
    _, _, report = _split(path, [AGE])
    err = capsys.readouterr().err.splitlines()
    assert err == ["facemtl: warning: task 'age' takes values 1..116, but 3 label(s) of its column 'age' lie outside "
                   "(-3, 0, 150); the loss learns each as the nearest end of the range (its rank is clamped) (widen "
                   "min_value / max_value, or drop those rows; if a negative value stands for unknown, leave those "
                   "cells empty or write NA: they are read as missing)"]
    assert report["invalid_labels"] == {"age": {"column": "age", "rows": 3, "warning": err[0][len("facemtl: warning: "):]}}
    # ages 20..59 for a task of 1..50: nine over; a regression task says its predictions are clipped
    _, _, report = _split(_manifest(tmp_path, _faces(), "plain.csv"),
                          [{"name": "age", "type": "regression", "min_value": 1, "max_value": 50}])
    assert report["invalid_labels"]["age"]["rows"] == 9 and "clipped" in capsys.readouterr().err
    _, _, report = _split(_manifest(tmp_path, _faces(), "plain.csv"), [AGE])
    assert "invalid_labels" not in report and capsys.readouterr().err == ""


def test_a_split_column_not_used_is_said(tmp_path, capsys):
    path = _manifest(tmp_path, _faces(split=lambda i: ["train", "val", "test", "train"][i % 4]))
    _split(path, [GENDER])
    said = (f"facemtl: warning: {path} has a 'split' column, which is not used: data.split is random, so the split "
            "is drawn anew (set data.split=predefined to train on the column's split)")
    assert capsys.readouterr().err.splitlines() == [said]
    _, split, _ = _split(path, [GENDER], split="predefined")
    assert capsys.readouterr().err == "" and (split == "val").sum() == 10
    # rows without a valid split are skipped as before (so a random split already drawn stays the same), and said
    path = _manifest(tmp_path, _faces(split=lambda i: "?" if i < 2 else "train"), "two.csv")
    table, _, _ = _split(path, [GENDER])
    assert len(table) == 38 and capsys.readouterr().err.splitlines() == [
        said.replace(str(tmp_path / "faces.csv"), str(path)) + "; its 2 row(s) with no valid split are skipped all "
        "the same"]


def test_data_root_of_the_wrong_kind_is_one_sentence(tmp_path):
    from facemtl.config import DataConfig
    from facemtl.data.dataset import read_table

    path = _manifest(tmp_path, _faces())
    with pytest.raises(ValueError, match=rf"^{tmp_path} is a folder, but the csv reader reads a manifest: give the "
                                         r"CSV file itself \(data.root=path/to/labels.csv\); this folder holds "
                                         r"faces.csv$"):
        read_table(DataConfig(dataset="csv", root=str(tmp_path)))
    for reader in ("utkface", "adience", "celeba", "fairface", "shards"):
        with pytest.raises(ValueError, match=rf"^data.root {path} is a file, but the {reader} reader wants a folder: "
                                             r".*\(a CSV of image paths and labels is read by data.dataset=csv\)$"):
            read_table(DataConfig(dataset=reader, root=str(path)))
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'; choose utkface, .* csv"):
        read_table(DataConfig(dataset="imagenet", root=str(path)))


def test_only_tasks_that_answer_need_labelled_validation_faces():
    """A training-only task (soft targets written for the training faces only) may have no label
    in the validation split; a task that answers may not, and none may lack training labels."""
    from types import SimpleNamespace

    from facemtl.data.dataset import check_labelled
    from facemtl.data.table import LabelTable

    table = LabelTable(paths=list("abcd"), labels={"y": np.array([0.0, 1.0, np.nan, np.nan])}, classes={})
    split = np.array(["train", "train", "val", "val"])
    soft = SimpleNamespace(name="y_soft", label="y", inference=False, class_names=lambda: None,
                           unlearned=lambda labels: None)
    check_labelled(table, [soft], split)
    answers = SimpleNamespace(name="y", label="y", inference=True, class_names=lambda: ["a", "b"])
    with pytest.raises(ValueError, match=r"^task 'y' has no labelled face in the validation split \(2 faces\)"):
        check_labelled(table, [answers], split)
    with pytest.raises(ValueError, match=r"no labelled face in the training split"):
        check_labelled(table, [soft], np.array(["val", "val", "train", "train"]))


def test_a_folder_without_labelled_images_or_a_split_without_faces_is_said_plainly(tmp_path, utkface_root):
    """A user test: `export --data` on a folder of photos not named as UTKFace names its faces, or on
    five crops (an empty validation split), ended in a NumPy error ("cannot reshape array of size 0")."""
    import shutil
    from pathlib import Path

    from facemtl.config import DataConfig
    from facemtl.data.dataset import _as_matrix, read_split
    from facemtl.tasks import build_task

    assert _as_matrix([np.zeros(0), np.zeros((0, 3))], 0).shape == (0, 4)  # an empty split, a vector label too
    shutil.copy(next(Path(utkface_root).rglob("*.jpg")), tmp_path / "holiday.jpg")
    with pytest.raises(ValueError, match=r"^data.root .*: the utkface reader found no labelled image there \(1 file "
                                         r"name\(s\) hold no labels it can read\)"):
        read_split(DataConfig(dataset="utkface", root=str(tmp_path)), [build_task({**GENDER, "label": "gender"})], 0)


def test_an_age_range_that_leaves_no_face_is_one_sentence(utkface_root):
    """NumPy's "cannot reshape array of size 0 into shape (0,newaxis)" before (a user test)."""
    from facemtl.config import DataConfig
    from facemtl.data.dataset import read_split
    from facemtl.tasks import build_task

    with pytest.raises(ValueError, match=r"data.age_range \[200, 300\] leaves none of the 100 faces \(their ages run "
                                         r"from \d+ to \d+\)"):
        read_split(DataConfig(root=str(utkface_root), limit=100, age_range=[200, 300]),
                   [build_task({**GENDER, "label": "gender"})], 0)


def test_an_image_listed_under_two_groups_stays_in_one_split(tmp_path):
    """A user test: with a group column, an image's two rows under two groups went to train and
    test (the grouping by path applied only without a group column); their groups are joined."""
    import csv

    path = tmp_path / "grouped.csv"
    rows = [{"path": f"f{i}.jpg", "sex": ["male", "female"][i % 2], "group": f"person{i}"} for i in range(60)]
    rows += [{"path": f"f{i}.jpg", "sex": ["male", "female"][i % 2], "group": f"person{i + 30}"} for i in range(30)]
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "sex", "group"])
        w.writeheader()
        w.writerows(rows)
    for seed in range(4):
        from facemtl.config import DataConfig
        from facemtl.data.dataset import read_split
        from facemtl.tasks import build_task

        table, split, _ = read_split(DataConfig(dataset="csv", root=str(path)), [build_task(GENDER)], seed)
        where: dict[str, set] = {}
        for p, part in zip(table.paths, split):
            where.setdefault(p, set()).add(part)
        assert all(len(parts) == 1 for parts in where.values()), seed
        # f0's rows (person0, person30) and f30's (person30) are one unit: the same split
        assert split[table.paths.index(str(tmp_path / "f0.jpg"))] == split[table.paths.index(str(tmp_path / "f30.jpg"))]
