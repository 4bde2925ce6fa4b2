"""UTKFace reader (real files), splits and augmentation."""

import hashlib
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
