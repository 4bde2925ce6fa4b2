"""Dataset readers: Adience on the real fold files, CelebA / FairFace / manifest on tiny files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from facemtl.data.adience import ADIENCE_GROUPS, adience_fold_split, age_group_of, parse_age, read_adience
from facemtl.data.celeba import read_celeba
from facemtl.data.fairface import read_fairface
from facemtl.data.manifest import read_manifest

NAN = float("nan")
ADIENCE_DIR = Path(__file__).resolve().parents[2] / "shared/data/adience_labels"


def same(a, b) -> bool:
    """Element-wise equality with NaN == NaN."""
    return np.array_equal(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), equal_nan=True)


# --------------------------------------------------------------------------- Adience


@pytest.fixture(scope="module")
def adience():
    if not (ADIENCE_DIR / "fold_0_data.txt").is_file():
        pytest.skip(f"real Adience fold files not found at {ADIENCE_DIR}")
    return read_adience(ADIENCE_DIR)


def _row(table, user: str, face: str, image: str) -> int:
    want = str(ADIENCE_DIR / "faces" / user / f"coarse_tilt_aligned_face.{face}.{image}")
    return table.paths.index(want)


def _data_lines() -> int:
    total = 0
    for n in range(5):
        lines = (ADIENCE_DIR / f"fold_{n}_data.txt").read_text(encoding="utf-8").splitlines()
        total += sum(1 for ln in lines[1:] if ln.strip())
    return total


def test_adience_row_count(adience):
    # 13,923 data lines in this (shortened) copy; the last line of fold_4 is cut to
    # "33627988@N04\t9509" (no labels) and skipped; the cut last lines of folds 2 and 3
    # still hold complete labels and are kept.
    assert _data_lines() == 13923
    assert adience.report["data_lines"] == 13923
    assert len(adience) == 13922
    assert adience.report["truncated_rows_skipped"] == 1
    assert adience.report["truncated_rows_kept"] == 2
    assert len(adience.groups) == len(adience) and adience.split is None
    counts = np.bincount(adience.column("fold").astype(int))
    assert counts.tolist() == [4484, 3730, 2573, 1050, 2085]


def test_adience_report_counts(adience):
    r = adience.report
    assert r["age_official_group"] == 12978
    assert r["age_odd_group"] == 39
    assert r["age_odd_group_values"] == {"(27, 32)": 1, "(38, 42)": 31, "(38, 48)": 6, "(8, 23)": 1}
    assert r["age_exact_in_gap"] == 799
    assert r["age_exact_in_group"] == 4  # "2" x3 and "42" x1
    assert r["age_exact_values"]["35"] == 201 and r["age_exact_values"]["13"] == 167
    assert r["age_missing"] == 102
    assert r["age_unreadable"] == 0
    assert r["gender_u"] == 736 and r["gender_empty"] == 108 and r["gender_other"] == 0
    assert r["users"] == 91
    json.dumps(r)  # plain, serialisable report
    age, gender = adience.column("age"), adience.column("gender")
    assert int(np.isnan(age).sum()) == 102
    assert int(np.isnan(gender).sum()) == 736 + 108
    assert set(np.unique(age[~np.isnan(age)]).tolist()) == set(range(8))


@pytest.mark.parametrize(
    "user, face, image, age, gender, fold",
    [
        ("30601258@N03", "1", "10399646885_67c7d20df9_o.jpg", 4, 1, 0),  # first row: (25, 32), f
        ("10406201@N05", "280", "11161469723_d69f0f2d0b_o.jpg", 5, 1, 0),  # 35: tie 25-32 / 38-43 -> older
        ("113705978@N06", "372", "11837573643_a63da774d6_o.jpg", 3, 1, 0),  # 22 -> 15-20
        ("114841417@N06", "485", "12059875396_f5c3a70550_o.jpg", 2, 1, 1),  # 13 -> 8-12
        ("113804525@N05", "321", "11846455104_455a9c2c76_o.jpg", 1, 0, 0),  # 3: tie 0-2 / 4-6 -> older
        ("37303189@N08", "92", "10295123316_9e9f19b7ce_o.jpg", NAN, NAN, 0),  # None, empty gender
        ("29671106@N00", "186", "10211585463_7258e6f135_o.jpg", 0, NAN, 0),  # (0, 2), gender u
        ("9017386@N06", "206", "11793675354_e1761c4c06_o.jpg", 5, 0, 0),  # (38, 48): midpoint 43
        ("35953373@N04", "905", "9494119869_174fb904e7_o.jpg", 3, 0, 1),  # (8, 23): midpoint 15.5
        ("104937236@N08", "908", "11852401355_e54eba57b6_o.jpg", 4, 1, 1),  # (27, 32): midpoint 29.5
        ("10328235@N07", "1160", "9818872304_d28110ba52_o.jpg", 7, 1, 2),  # truncated last row, kept
        ("7890646@N03", "1388", "10699882964_e2989a4148_o.jpg", 1, 1, 3),  # truncated last row, kept
    ],
)
def test_adience_rows(adience, user, face, image, age, gender, fold):
    i = _row(adience, user, face, image)
    assert same(adience.labels["age"][i], age)
    assert same(adience.labels["gender"][i], gender)
    assert adience.labels["fold"][i] == fold
    assert adience.groups[i] == user


def test_adience_first_row_and_classes(adience):
    assert adience.paths[0] == str(
        ADIENCE_DIR / "faces/30601258@N03/coarse_tilt_aligned_face.1.10399646885_67c7d20df9_o.jpg"
    )
    assert adience.classes["age"] == ADIENCE_GROUPS
    assert ADIENCE_GROUPS == ["0-2", "4-6", "8-12", "15-20", "25-32", "38-43", "48-53", "60-100"]
    assert not any("33627988@N04/coarse_tilt_aligned_face.9509" in p for p in adience.paths)


@pytest.mark.parametrize(
    "age, group",
    [(0, 0), (2, 0), (3, 1), (7, 2), (13, 2), (14, 3), (22, 3), (23, 4), (34, 4), (35, 5), (36, 5),
     (45, 5), (46, 6), (55, 6), (56, 6), (57, 7), (58, 7), (120, 7)],
)
def test_adience_gap_rule(age, group):
    assert age_group_of(age) == group


def test_adience_parse_age_kinds():
    assert parse_age("(25, 32)") == (4.0, "official")
    assert parse_age("(38, 42)") == (5.0, "odd_group")
    assert parse_age("42") == (5.0, "exact")
    assert parse_age("35") == (5.0, "exact_in_gap")
    for text, kind in (("None", "missing"), ("", "missing"), ("old", "unreadable"), ("-3", "unreadable")):
        value, got = parse_age(text)
        assert math.isnan(value) and got == kind


def test_adience_fold_split(adience):
    split = adience_fold_split(adience, test_fold=0, val_fold=1)
    assert (split == "test").sum() == 4484 and (split == "val").sum() == 3730 and (split == "train").sum() == 5708
    users = {s: set(adience.groups[split == s]) for s in ("train", "val", "test")}
    assert not users["train"] & users["test"] and not users["val"] & users["test"]
    assert set(adience_fold_split(adience, test_fold=4)) == {"train", "test"}
    with pytest.raises(ValueError, match="differ"):
        adience_fold_split(adience, 2, 2)
    with pytest.raises(ValueError, match=r"data.fold \(the test fold\)=7 is not in this table; folds present"):
        adience_fold_split(adience, 7)


def test_adience_aligned_folder_and_folds(tmp_path):
    header = "user_id\toriginal_image\tface_id\tage\tgender\tx\ty\tdx\tdy\ttilt_ang\tfiducial_yaw_angle\tfiducial_score"
    rows = ["u1\ta.jpg\t3\t(48, 53)\tm\t1\t2\t3\t4\t5\t6\t7", "u2\tb.jpg\t4\tkid\tx\t1\t2\t3\t4\t5\t6\t7"]
    (tmp_path / "fold_3_data.txt").write_text("\r\n".join([header, *rows]) + "\r\n")
    (tmp_path / "aligned").mkdir()
    t = read_adience(tmp_path, folds=[3])
    # the release names the files of aligned/ landmark_aligned_face.* (every image read missing before)
    assert t.paths == [str(tmp_path / "aligned/u1/landmark_aligned_face.3.a.jpg"),
                       str(tmp_path / "aligned/u2/landmark_aligned_face.4.b.jpg")]
    assert t.report["image_prefix"] == "landmark_aligned_face"
    (tmp_path / "aligned" / "u1").mkdir()  # a copy whose aligned/ holds coarse_tilt names: those
    (tmp_path / "aligned" / "u1" / "coarse_tilt_aligned_face.3.a.jpg").write_bytes(b"x")
    assert read_adience(tmp_path, folds=[3]).paths[0] == str(tmp_path / "aligned/u1/coarse_tilt_aligned_face.3.a.jpg")
    assert same(t.labels["age"], [6, NAN]) and same(t.labels["gender"], [0, NAN])
    assert same(t.labels["fold"], [3, 3])
    assert t.report["age_unreadable"] == 1 and t.report["gender_other"] == 1
    with pytest.raises(FileNotFoundError):
        read_adience(tmp_path, folds=[0])


# --------------------------------------------------------------------------- CelebA

CELEBA_ATTRS = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()


def _celeba_line(name: str, **set_to: str) -> str:
    values = [set_to.get(a, "-1") for a in CELEBA_ATTRS]
    return name + " " + " ".join(f"{v:>2}" for v in values)  # " 1" / "-1": one or two spaces


def test_celeba(tmp_path):
    (tmp_path / "Anno").mkdir()
    (tmp_path / "Eval").mkdir()
    lines = [
        "6",
        " ".join(CELEBA_ATTRS) + " ",
        _celeba_line("000001.jpg", Young="1", Smiling="1"),
        _celeba_line("000002.jpg", Male="1", Smiling="0"),
        _celeba_line("000003.jpg").rsplit(" ", 1)[0],  # 39 values: malformed
        _celeba_line("000004.jpg", Male="1", Young="1", Bald="2"),
        _celeba_line("000005.jpg", Male="1"),  # not in the partition file
        _celeba_line("000001.jpg", Male="1"),  # repeated name
    ]
    (tmp_path / "Anno/list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    partition = ["000001.jpg 0", "000002.jpg 1", "000003.jpg 2", "000004.jpg 2", "000006.jpg x", "000009.jpg 0"]
    (tmp_path / "Eval/list_eval_partition.txt").write_text("\n".join(partition) + "\n")

    t = read_celeba(tmp_path)
    assert t.paths == [str(tmp_path / "img_align_celeba" / n) for n in ("000001.jpg", "000002.jpg", "000004.jpg")]
    assert t.split.tolist() == ["train", "val", "test"]
    assert same(t.labels["Male"], [0, 1, 1])
    assert same(t.labels["gender"], [1, 0, 0])
    assert same(t.labels["young"], [1, 0, 1]) and same(t.labels["Young"], [1, 0, 1])
    assert same(t.labels["Smiling"], [1, NAN, 0])
    assert same(t.labels["Bald"], [0, 0, NAN])
    assert len(t.labels) == 42
    assert t.classes["gender"] == ["male", "female"]
    # the other attributes' names are offered to tasks naming none (a binary Smiling answered 1 / 0)
    assert t.offered_classes["Smiling"] == ["not smiling", "smiling"]
    assert t.offered_classes["5_o_Clock_Shadow"] == ["not 5 o clock shadow", "5 o clock shadow"]
    assert len(t.offered_classes) == 40 and not set(t.offered_classes) & set(t.classes)
    assert t.subset([0]).offered_classes == t.offered_classes
    r = t.report
    assert r["declared_images"] == 6 and r["attribute_rows"] == 6 and r["images"] == 3
    assert r["malformed_rows_skipped"] == 1 and r["duplicate_rows_skipped"] == 1
    assert r["absent_from_partition_skipped"] == 1
    assert r["partition_lines_unreadable"] == 1
    assert r["partition_without_attributes"] == 2  # 000003 (malformed) and 000009
    assert r["values_missing"] == 2 and r["values_missing_by_attribute"] == {"Bald": 1, "Smiling": 1}
    json.dumps(r)


def test_celeba_without_partition_or_count_line(tmp_path):
    lines = [" ".join(CELEBA_ATTRS), _celeba_line("000010.jpg", Male="1"), _celeba_line("000011.jpg")]
    (tmp_path / "list_attr_celeba.txt").write_text("\r\n".join(lines))
    t = read_celeba(tmp_path)
    assert t.split is None and len(t) == 2
    assert same(t.labels["gender"], [0, 1]) and same(t.labels["young"], [0, 0])
    assert t.report["count_line_missing"] == 1 and t.report["partition_file"] == "absent"
    with pytest.raises(FileNotFoundError):
        read_celeba(tmp_path / "nowhere")


# --------------------------------------------------------------------------- FairFace


def test_fairface(tmp_path, capsys):
    (tmp_path / "fairface_label_train.csv").write_text(
        "file,age,gender,race,service_test\n"
        "train/1.jpg,50-59,Male,East Asian,True\n"
        "train/2.jpg,more than 70,Female,Latino_Hispanic,False\n"
        "train/3.jpg,30-39,Unknown,Middle Eastern,True\n"
        "train/4.jpg,100+,Female,Martian,False\n"
        ",20-29,Male,White,True\n"
    )
    (tmp_path / "fairface_label_val.csv").write_text(  # older release: no service_test
        "file,age,gender,race\n"
        "val/1.jpg,0-2,Female,Southeast Asian\n"
        "val/2.jpg,3-9,male,Indian\n"
        "val/3.jpg,10-19,Female,Black\n"
        "val/4.jpg,20-29\n"
        "train/1.jpg,20-29,Female,White\n"
    )
    t = read_fairface(tmp_path)
    names = [f"train/{i}.jpg" for i in range(1, 5)] + [f"val/{i}.jpg" for i in range(1, 5)]
    assert t.paths == [str(tmp_path / n) for n in names]
    assert t.split.tolist() == ["train"] * 4 + ["test"] * 4
    assert same(t.labels["age"], [6, 8, 4, NAN, 0, 1, 2, 3])
    assert same(t.labels["gender"], [0, 1, NAN, 1, 1, 0, 1, NAN])
    assert same(t.labels["race"], [3, 2, 6, NAN, 4, 5, 1, NAN])
    assert same(t.labels["race5"], [2, 4, 4, NAN, 2, 3, 1, NAN])
    assert t.classes["age"][-1] == "more than 70" and len(t.classes["age"]) == 9
    assert t.classes["race"][2] == "Latino_Hispanic" and len(t.classes["race"]) == 7
    assert t.classes["race5"] == ["white", "black", "asian", "indian", "others"]
    assert t.classes["gender"] == ["male", "female"]
    r = t.report
    assert r["rows"] == 10 and r["images"] == 8
    assert r["unknown_values"] == {"age": 1, "gender": 2, "race": 2}
    assert r["short_rows"] == 1 and r["rows_without_file_skipped"] == 1 and r["duplicate_rows_skipped"] == 1
    # train/1.jpg again in the val file with other labels: skipped, and said (it went unsaid)
    assert r["duplicate_rows_conflicting"] == 1 and r["duplicate_rows_across_files"] == 1
    assert "1 repeated row(s) of a file already listed are skipped (its first row stands): 1 with other labels, 1 " \
           "listed in both the train and the val file" in capsys.readouterr().err
    json.dumps(r)


def test_fairface_missing_files_and_columns(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_fairface(tmp_path)
    (tmp_path / "fairface_label_val.csv").write_text("file,age,sex,race\nval/1.jpg,0-2,Male,White\n")
    with pytest.raises(ValueError, match="gender"):
        read_fairface(tmp_path)


# --------------------------------------------------------------------------- manifest


def test_manifest(tmp_path, monkeypatch):
    folder = tmp_path / "m"
    folder.mkdir()
    csv_path = folder / "labels.csv"
    csv_path.write_text(
        "\ufeffpath, age ,gender,split,group,score\n"
        "a.jpg,23,female,train,p1,0.5\n"
        "/abs/b.jpg,NA,male,VAL,p1,?\n"
        "c.jpg,abc,1,test,,1e400\n"
        ",30,male,train,p2,1\n"
        "d.jpg,40,male,holdout,p3,2\n"
        "e.jpg,,None,test,p4,3\n"
        "f.jpg,7,robot,train,p5,nan\n"
        "g.jpg,8,2,validation,p6\n"
    )
    t = read_manifest(csv_path, columns={"age": None, "gender": ["male", "female"], "score": None})
    assert t.paths == [str(folder / "a.jpg"), "/abs/b.jpg", str(folder / "c.jpg"), str(folder / "e.jpg"),
                       str(folder / "f.jpg"), str(folder / "g.jpg")]
    assert same(t.labels["age"], [23, NAN, NAN, NAN, 7, 8])
    assert same(t.labels["gender"], [1, 0, 1, NAN, NAN, NAN])
    assert same(t.labels["score"], [0.5, NAN, NAN, 3, NAN, NAN])
    assert t.split.tolist() == ["train", "val", "test", "test", "train", "val"]
    assert t.groups.tolist() == ["p1", "p1", str(folder / "c.jpg"), "p4", "p5", "p6"]
    assert t.classes == {"gender": ["male", "female"]}
    r = t.report
    assert r["rows"] == 8 and r["images"] == 6
    assert r["rows_without_path_skipped"] == 1 and r["rows_without_valid_split_skipped"] == 1
    assert r["short_rows"] == 1 and r["empty_groups"] == 1
    assert r["odd_rows_first_line"] == {"rows_without_path_skipped": 5, "short_rows": 9}  # (file lines)
    from facemtl.data.dataset import _warn_odd_rows

    said = []
    import facemtl.data.dataset as dataset_module

    monkeypatch.setattr(dataset_module, "warn", said.append)
    _warn_odd_rows(r, csv_path)  # (the data report alone counted them: a user test)
    assert said == [f"{csv_path}: 1 row(s) hold fewer cells than the header; their missing cells are missing labels "
                    "(the first on line 9)",
                    f"{csv_path}: 1 row(s) have an empty path cell and are left out (the first on line 5)"]
    assert r["missing"] == {"age": 2, "gender": 1, "score": 3}
    assert r["unparsable"] == {"age": 1, "gender": 0, "score": 1}
    assert r["unknown_class"] == {"age": 0, "gender": 2, "score": 0}
    json.dumps(r)


def test_manifest_all_numeric_with_root(tmp_path):
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("file,x,y\nimg/1.png,1,2.5\nimg/2.png,-3,oops\n")
    t = read_manifest(csv_path, path_column="file", root="/data")
    assert t.paths == ["/data/img/1.png", "/data/img/2.png"]
    assert sorted(t.labels) == ["x", "y"]
    assert same(t.labels["x"], [1, -3]) and same(t.labels["y"], [2.5, NAN])
    assert t.split is None and t.groups is None
    assert t.report["unparsable"] == {"x": 0, "y": 1}


def test_manifest_missing_columns(tmp_path):
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("image,age\na.jpg,3\n")
    with pytest.raises(ValueError, match="'path'.*columns found: image, age"):
        read_manifest(csv_path)
    with pytest.raises(ValueError, match="'gender'"):
        read_manifest(csv_path, path_column="image", columns={"age": None, "gender": ["m", "f"]})


def test_manifest_reads_the_tasks_columns_by_their_class_names(tmp_path):
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("path,age,sex,mood\n"
                        "a.jpg,20,male,happy\n"
                        "b.jpg,21,1,sad\n"
                        "c.jpg,22,7,happy\n"
                        "d.jpg,23,robot,?\n"
                        "e.jpg,24,Robot,sad\n")
    # no data.columns: the tasks' names read text, a number stays the number it is (7: the task refuses it)
    t = read_manifest(csv_path, classes={"sex": ["male", "female"], "age": None})
    assert same(t.labels["sex"], [0, 1, 7, NAN, NAN]) and t.classes == {"sex": ["male", "female"]}
    assert same(t.labels["mood"], [NAN] * 5) and t.report["unparsable"]["mood"] == 4
    assert t.report["unknown_class"]["sex"] == 2 and t.report["classes_from_tasks"] == ["sex"]
    assert t.report["unknown_class_examples"] == {"sex": ["robot", "Robot"]}
    assert t.report["unparsable_examples"] == {"mood": ["happy", "sad"]}
    # data.columns leaving a task's column out: read too; names it gives win over the task's
    t = read_manifest(csv_path, columns={"mood": ["sad", "happy"]}, classes={"sex": ["male", "female"]})
    assert sorted(t.labels) == ["mood", "sex"] and t.classes["mood"] == ["sad", "happy"]
    assert same(t.labels["mood"], [1, 0, 1, NAN, 0])
    t = read_manifest(csv_path, columns={"sex": ["female", "male"]}, classes={"sex": ["male", "female"]})
    assert t.classes == {"sex": ["female", "male"]} and same(t.labels["sex"], [1, 1, NAN, NAN, NAN])
    assert "classes_from_tasks" not in t.report  # the user's names: 7 is no class, a missing label


def test_class_names_are_matched_before_numbers_and_case_aside(tmp_path):
    """Classes named "1".."5" read "1" as the class "1" (index 0), whether the task or data.columns
    names them; ``Male`` is ``male``."""
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("path,stars,sex\na.jpg,1,Male\nb.jpg,5,FEMALE\nc.jpg,3,male\n")
    stars = [str(k) for k in range(1, 6)]
    for kw in ({"classes": {"stars": stars, "sex": ["male", "female"]}},
               {"columns": {"stars": stars, "sex": ["male", "female"]}}):
        t = read_manifest(csv_path, **kw)
        assert same(t.labels["stars"], [0, 4, 2]) and same(t.labels["sex"], [0, 1, 0]), kw


def test_manifest_wants_a_csv_file(tmp_path):
    (tmp_path / "b.csv").write_text("path\n")
    (tmp_path / "a.csv").write_text("path\n")
    with pytest.raises(ValueError, match=rf"^{tmp_path} is a folder, but the csv reader reads a manifest: give the CSV "
                                         r"file itself \(data.root=path/to/labels.csv\); this folder holds a.csv, b.csv$"):
        read_manifest(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty is a folder, .*labels.csv\)$"):
        read_manifest(tmp_path / "empty")
    (tmp_path / "face.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00")
    with pytest.raises(ValueError, match=r"face.jpg is not a CSV file of UTF-8 text: line 1 holds b'\\xff', no UTF-8 "
                                         r"\(a manifest is a CSV file saved as UTF-8\)"):
        read_manifest(tmp_path / "face.jpg")


def test_a_readers_own_split_unused_is_said_and_age_groups_take_no_age_range(tmp_path, capsys):
    """A user test: under the default random split, FairFace's val file (and Adience's data.fold,
    CelebA's partition) went unused without a word; data.age_range filtered FairFace's and Adience's
    group numbers as if they were years, and a filter that left nothing ended in a NumPy error."""
    from facemtl.config import DataConfig
    from facemtl.data.dataset import read_split, read_table
    from facemtl.tasks import build_task

    (tmp_path / "fairface_label_train.csv").write_text("file,age,gender,race\ntrain/1.jpg,50-59,Male,White\n")
    (tmp_path / "fairface_label_val.csv").write_text("file,age,gender,race\nval/1.jpg,0-2,Female,Black\n")
    read_table(DataConfig(dataset="fairface", root=str(tmp_path)))
    assert "the fairface reader gives a split of its own (its train and val label files), which is not used: " \
           "data.split is random" in capsys.readouterr().err
    read_table(DataConfig(dataset="fairface", root=str(tmp_path), split="predefined"))
    assert "not used" not in capsys.readouterr().err
    gender = [build_task({"name": "gender", "type": "nominal", "classes": ["male", "female"]})]
    with pytest.raises(ValueError, match=r"data.age_range filters ages in years, but the fairface reader gives age "
                                         r"groups \(0-2, 3-9, "):
        read_split(DataConfig(dataset="fairface", root=str(tmp_path), age_range=[20, 39]), gender)


def test_coral_split_files_by_either_name_and_by_their_file_column(tmp_path):
    """A user test: the coral-cnn repository's utk_{train,test}.csv were "not found", a file written
    without the index column (file,age) matched no image, and a missing train list was a bare errno."""
    from facemtl.data.utkface import coral_files, coral_names

    (tmp_path / "utk_train.csv").write_text(",file,age\n0,1_0_0_x.jpg,0\n")
    with pytest.raises(FileNotFoundError, match=r"the CORAL protocol's test list is not in .*: it reads "
                                                r"coral_test.csv \(or utk_test.csv"):
        coral_files(tmp_path)
    (tmp_path / "coral_test.csv").write_text("file,age\n30_1_2_y.jpg,9\n\n")
    files = coral_files(tmp_path)
    assert files == {"train": tmp_path / "utk_train.csv", "test": tmp_path / "coral_test.csv"}
    assert coral_names(files["train"]) == ["1_0_0_x.jpg"] and coral_names(files["test"]) == ["30_1_2_y.jpg"]


def test_manifest_reads_n_a_and_null_as_missing(tmp_path):
    """A user test: N/A and null were counted and warned of as unknown classes or unparsable numbers."""
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("path,age,gender\na.jpg,N/A,n/a\nb.jpg,null,NULL\nc.jpg,30,female\n")
    t = read_manifest(csv_path, columns={"age": None, "gender": ["male", "female"]})
    assert same(t.labels["age"], [NAN, NAN, 30]) and same(t.labels["gender"], [NAN, NAN, 1])
    assert t.report["missing"] == {"age": 2, "gender": 2}
    assert t.report["unparsable"] == {"age": 0, "gender": 0} and t.report["unknown_class"] == {"age": 0, "gender": 0}


def test_a_manifest_in_another_encoding_or_separator_is_named_plainly(tmp_path):
    """A user test: a Latin-1 name gave a byte position in a read buffer; a ';' file, columns only."""
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"path,age\n" + b"".join(b"a%d.jpg,3\n" % i for i in range(5000)) + b"\xe9t\xe9.jpg,4\n")
    with pytest.raises(ValueError, match=r"not a CSV file of UTF-8 text: line 5002 holds b'\\xe9', no UTF-8"):
        read_manifest(latin)
    semi = tmp_path / "semi.csv"
    semi.write_text("path;age\na.jpg;3\n")
    with pytest.raises(ValueError, match=r"its header is one column holding semicolons \(';'\); facemtl reads "
                                         r"comma-separated files"):
        read_manifest(semi)


def test_the_line_of_a_foreign_byte_counts_past_a_bom(tmp_path):
    """A review: after Excel's UTF-8 byte-order mark the line was read 3 bytes short."""
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbfpath,age\na.jpg,3\n\xe9.jpg,4\n")
    with pytest.raises(ValueError, match=r"line 3 holds b'\\xe9'"):
        read_manifest(bom)


def test_shards_keep_the_names_a_reader_offers(tmp_path):
    """CelebA's offered names ("not smiling", "smiling") travel through shards as its own names do."""
    pytest.importorskip("webdataset")
    from PIL import Image

    from facemtl.data.shards import read_shards, write_shards
    from facemtl.data.table import LabelTable

    paths = []
    for i in range(2):
        paths.append(str(tmp_path / f"{i}.jpg"))
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(paths[-1])
    table = LabelTable(paths=paths, labels={"young": [0.0, 1.0], "Smiling": [1.0, 0.0]},
                       classes={"young": ["not young", "young"]},
                       offered_classes={"Smiling": ["not smiling", "smiling"]})
    index = write_shards(table, np.array(["train", "test"], dtype=object), tmp_path / "shards", log=lambda _: None)
    back = read_shards(index.parent)
    assert back.classes == table.classes and back.offered_classes == table.offered_classes
