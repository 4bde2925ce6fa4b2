"""Metrics against values worked by hand (paper eq. 17 for CS(k))."""

import numpy as np
import pytest

from facemtl.metrics import (
    accuracy,
    confusion_matrix,
    cumulative_score,
    group_accuracy,
    group_names,
    mae,
    mse,
    to_groups,
)


def test_mae_mse_accuracy():
    p, t = np.array([10, 20, 30, 44]), np.array([12, 20, 25, 40])
    assert mae(p, t) == pytest.approx((2 + 0 + 5 + 4) / 4)
    assert mse(p, t) == pytest.approx((4 + 0 + 25 + 16) / 4)
    assert accuracy(np.array([1, 0, 2]), np.array([1, 1, 2])) == pytest.approx(2 / 3)


def test_cumulative_score_by_hand():
    # errors 0, 1, 2.5, 5, 11
    p = np.array([30, 31, 32.5, 35, 41])
    cs = cumulative_score(p, np.full(5, 30.0))
    assert cs[0] == pytest.approx(1 / 5)
    assert cs[1] == pytest.approx(2 / 5)
    assert cs[2] == pytest.approx(2 / 5)
    assert cs[3] == pytest.approx(3 / 5)
    assert cs[5] == pytest.approx(4 / 5)
    assert cs[10] == pytest.approx(4 / 5)
    assert list(cs) == list(range(11))


def test_groups():
    edges = [0, 3, 10, 20]
    assert to_groups(np.array([0, 2, 3, 9.5, 10, 19, 20, 90]), edges).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert group_names(edges) == ["0-2", "3-9", "10-19", "20+"]
    # 2.6 rounds to 3 -> same group as 5; 19.4 rounds to 19 -> group 10-19 as 21? no: 21 is 20+.
    assert group_accuracy(np.array([2.6, 19.4]), np.array([5, 21]), edges) == pytest.approx(0.5)


def test_confusion():
    m = confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3)
    assert m.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_wilson_and_mean_intervals_by_hand():
    from facemtl.subgroups import mean_interval, wilson_interval

    lo, hi = wilson_interval(8, 10)
    # p = 0.8, n = 10, z = 1.96: centre 0.7164, half-width 0.2262 (worked by hand)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    assert wilson_interval(0, 0)[0] != wilson_interval(0, 0)[0]  # NaN
    lo, hi = mean_interval(np.array([1.0, 2.0, 3.0, 4.0]))
    # mean 2.5, s = 1.2910, s / sqrt(4) = 0.6455, x t(0.975, 3) = 3.182: 2.0540
    assert lo == pytest.approx(0.4460, abs=1e-3) and hi == pytest.approx(4.5540, abs=1e-3)
    # absolute errors 0, 0, 0, 10: mean 2.5, s = 5, x 3.182 / 2 = 7.955; a mean error is never negative
    lo, hi = mean_interval(np.array([0.0, 0.0, 0.0, 10.0]))
    assert lo == 0.0 and hi == pytest.approx(10.455, abs=1e-3)
    lo, _ = mean_interval(np.array([-1.0, 0.0, 0.0, 10.0]))  # values that can be negative: not cut
    assert lo == pytest.approx(2.25 - 3.182 * np.std([-1, 0, 0, 10], ddof=1) / 2, abs=1e-3)


def test_students_t_quantiles():
    """The table and its expansion against published values (t at 0.975); large samples tend to 1.96."""
    from facemtl.subgroups import Z95, t975

    assert (t975(1), t975(2), t975(10), t975(30)) == (12.706, 4.303, 2.228, 2.042)
    for df, t in ((40, 2.021), (60, 2.000), (120, 1.980), (1000, 1.962)):
        assert t975(df) == pytest.approx(t, abs=1e-3)
    assert abs(t975(10**6) - Z95) < 1e-5 and t975(0) != t975(0)


def test_subgroup_table_cells():
    from facemtl.subgroups import largest_gap, subgroup_table, wilson_interval
    from facemtl.tasks import NominalTask, OrdinalTask

    g, age = NominalTask("g"), OrdinalTask("age")
    rows = subgroup_table(
        scores={"g": g.sample_scores(np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0])),
                "age": age.sample_scores(np.array([10, 20, 30, 40.0]), np.array([12, 20, 33, np.nan]))},
        kinds={"g": g.subgroup_metric, "age": age.subgroup_metric},
        groups={"sex": np.array(["f", "f", "m", "m"])},
    )
    f, m = rows
    assert (f["sex"], f["n"], f["g_accuracy"], f["age_mae"]) == ("f", 2, 1.0, 1.0)
    assert (m["sex"], m["n"], m["g_accuracy"], m["age_mae"]) == ("m", 2, 0.5, 3.0)
    assert f["g_accuracy_lo"] < 1.0 == f["g_accuracy_hi"]
    gap = largest_gap(rows, "g_accuracy", min_count=1)
    assert gap["gap"] == pytest.approx(0.5) and gap["min"]["sex"] == "m"
    # its interval: Newcombe's from the cells' Wilson intervals (2/2 and 1/2); the Wald form gave
    # the 2/2 cell no uncertainty (its standard error is 0)
    (fl, fh), (ml, mh) = wilson_interval(2, 2), wilson_interval(1, 2)
    assert (m["g_accuracy_se"], f["g_accuracy_se"]) == (pytest.approx(0.25 ** 0.5 / 2 ** 0.5), 0.0)
    assert gap["ci95"] == pytest.approx([0.5 - ((1 - fl) ** 2 + (mh - 0.5) ** 2) ** 0.5,
                                         0.5 + ((fh - 1) ** 2 + (0.5 - ml) ** 2) ** 0.5])
    one = largest_gap(rows[:1], "g_accuracy", min_count=1)  # a cell against itself: no interval, as group_gap
    assert one["gap"] == 0 and np.isnan(one["ci95"]).all()
    # errors 2, 0 and 3 (one unlabelled): sample variances 2 and 0 (one value: none)
    assert f["age_mae_se"] == pytest.approx(1.0) and np.isnan(m["age_mae_se"])


def test_an_equal_result_per_seed_reads_plus_zero():
    """A user test: two variants equal on a seed read "-0.00", which reads like a small loss."""
    from facemtl.report.stats import describe_diff

    d = {"percent": False, "lower_is_better": True, "header": "MAE", "metric": "mae", "mean": -0.1,
         "diffs": [-0.0, -0.001, -0.2], "verdict": "inconclusive"}
    assert "(per seed: +0.00, +0.00, -0.20)" in describe_diff("age", d)


def test_an_empty_grad_cam_map_is_said_not_tinted():
    """A user test: the age head's maps were often all zero and were drawn as an even blue tint
    under a caption saying red marks what raises the score."""
    pytest.importorskip("matplotlib")
    from unittest import mock

    from facemtl.report import figures

    img = np.zeros((8, 8, 3))
    cam = np.zeros((8, 8))
    with mock.patch.object(figures, "_png", lambda fig: fig):
        fig = figures.gradcam_grid([(img, cam, "age 30"), (img, np.eye(8), "age 40")])
    axes = fig.axes
    assert "empty map" in axes[0].get_title() and len(axes[0].images) == 1
    assert "empty map" not in axes[1].get_title() and len(axes[1].images) == 2


def test_report_cells_keep_two_significant_digits():
    """A user test: a 0..1 task's MSE of 0.0949 read "0.1" in the report."""
    from facemtl.report.stats import fmt
    from facemtl.tasks import MetricColumn

    mse, mae = MetricColumn("mse", "MSE", lower_is_better=True), MetricColumn("mae", "MAE", lower_is_better=True)
    assert fmt({"mean": 0.0949, "std": 0.004, "values": [1, 2]}, mse) == "0.095 ± 0.004"
    assert fmt({"mean": 122.94, "std": 6.3, "values": [1, 2]}, mse) == "122.9 ± 6.3"  # age's, as before
    assert fmt({"mean": 7.624, "std": 0.24, "values": [1, 2]}, mae) == "7.62 ± 0.24"


def test_cs_steps_follow_the_tasks_units():
    """The Left list: CS(k) counted errors in whole units whatever the task, so a 0..1 score read
    CS(1) = 100 % for any model. Its steps are hundredths of the range now; ages and ranks keep
    steps of 1 (paper eq. 17), and metrics saved before steps were recorded read as steps of 1."""
    from facemtl.tasks import build_task

    score = build_task({"type": "regression", "name": "quality", "min_value": 0, "max_value": 1})
    rating = build_task({"type": "regression", "name": "rating", "min_value": 0, "max_value": 10})
    age = build_task({"type": "ordinal", "name": "age", "min_value": 1, "max_value": 116})
    age_reg = build_task({"type": "regression", "name": "age", "min_value": 1, "max_value": 116})
    levels = build_task({"type": "ordinal", "name": "severity", "levels": ["none", "mild", "severe"]})
    assert (score.cs_step(), rating.cs_step(), age.cs_step(), age_reg.cs_step(), levels.cs_step()) == (
        0.01, 0.1, 1.0, 1.0, 1.0)
    true = np.array([0.50, 0.50, 0.50, 0.50])
    pred = np.array([0.50, 0.52, 0.55, 0.70])  # errors 0, 0.02, 0.05, 0.2
    m = score.metrics(pred, true)
    assert m["cs_step"] == 0.01 and m["cs"]["0"] == 0.25 and m["cs"]["2"] == 0.5 and m["cs"]["5"] == 0.75
    assert m["cs"]["10"] == 0.75  # 0.2 is past ten hundredths
    assert score.cs_label(5, m) == "CS(0.05)" and "CS(0.05) 0.750" in score.metrics_text({**m, "baseline": {"mae": 0}})
    curve = score.cumulative_curve(m)
    assert curve[0.05] == 0.75 and sorted(curve)[:3] == [0.0, 0.01, 0.02]
    assert [c.header for c in score.metric_columns() if c.key == "cs5"] == ["CS(0.05)"]
    a = age.metrics(np.array([30.0, 33.0, 40.0]), np.array([30.0, 30.0, 30.0]))
    assert a["cs_step"] == 1.0 and a["cs"]["3"] == pytest.approx(2 / 3) and age.cs_label(5, a) == "CS(5)"
    old = {k: v for k, v in m.items() if k != "cs_step"}  # a run saved before: steps of 1
    assert sorted(score.cumulative_curve(old))[:2] == [0, 1] and score.cs_label(5, old) == "CS(5)"


def test_task_metrics_carry_95_percent_intervals():
    """A user test: `evaluate` gave point figures only (gender 64.0 % on 200 faces, with nothing to
    tell it from 57 % or 70 %). Accuracy carries its Wilson interval, MAE its Student-t interval."""
    from facemtl.tasks import build_task

    gender = build_task({"type": "nominal", "name": "gender", "classes": ["m", "f"]})
    m = gender.metrics(np.array([0] * 128 + [1] * 72), np.zeros(200))
    assert m["accuracy"] == 0.64 and m["accuracy_interval"] == pytest.approx([0.5714, 0.7033], abs=1e-4)
    assert "95% interval 0.5714-0.7033" in gender.metrics_text({**m, "baseline": {"accuracy": 0.5}})
    age = build_task({"type": "ordinal", "name": "age", "min_value": 1, "max_value": 116})
    a = age.metrics(np.array([30.0, 40.0, 50.0, 20.0]), np.array([31.0, 44.0, 50.0, 23.0]))  # errors 1, 4, 0, 3
    half = 3.182 * np.std([1, 4, 0, 3], ddof=1) / 2  # Student's t, 3 degrees of freedom
    assert a["mae"] == 2.0 and a["mae_interval"] == pytest.approx([max(0.0, 2 - half), 2 + half])
    assert "MAE 2.000 (" in age.metrics_text({**a, "baseline": {"mae": 9.0}})
    assert "interval" not in gender.metrics_text({"accuracy": 0.5, "n": 2, "baseline": {"accuracy": 0.5}})  # saved before


def test_the_gap_between_two_proportions_is_newcombes_interval():
    """Newcombe (1998), Table II, method 10 (hybrid score), to four decimals; and a gap between 100 %
    and 0 % cells has an interval (the Wald form read [100, 100] points: a researcher's test)."""
    from facemtl.subgroups import gap_interval, group_gap, wilson_interval

    def newcombe(k1, n1, k2, n2):
        return gap_interval("accuracy", (k1 / n1, wilson_interval(k1, n1), 0.0), (k2 / n2, wilson_interval(k2, n2), 0.0))

    for (k1, n1, k2, n2), want in [((56, 70, 48, 80), (0.0524, 0.3339)), ((9, 10, 3, 10), (0.1705, 0.8090)),
                                   ((6, 7, 2, 7), (0.0582, 0.8062)), ((5, 56, 0, 29), (-0.0381, 0.1926)),
                                   ((10, 10, 0, 10), (0.6075, 1.0))]:
        assert newcombe(k1, n1, k2, n2) == pytest.approx(want, abs=5e-5)
    g = group_gap(np.r_[np.ones(30), np.zeros(30)], np.r_[np.zeros(30), np.ones(30)], ["a", "b"])
    assert g["gap"] == 1.0 and g["gap_ci95"][0] < 0.9 and g["gap_ci95"][1] == pytest.approx(1.0)


def test_score_groups_by_known_counts():
    """evaluate --by's table from predictions of known counts: 40 of 40 right against 30 of 40
    (a 25-point gap, Newcombe's interval), 10 faces without a race label left out."""
    from facemtl.subgroups import gap_interval, wilson_interval
    from facemtl.tasks import NominalTask
    from facemtl.training.evaluation import score_groups

    gender = NominalTask("gender", classes=["m", "f"])
    race = NominalTask("race", classes=["a", "b", "c"])
    true_r = np.r_[np.zeros(40), np.ones(40), np.full(10, np.nan)]
    true_g = np.r_[np.zeros(90)]
    pred_g = np.r_[np.zeros(40), np.ones(10), np.zeros(30), np.zeros(10)]
    res = {"true": {"gender": true_g, "race": true_r}, "pred": {"gender": pred_g, "race": np.nan_to_num(true_r)}}
    g = score_groups(res, [gender, race], ["race"])["gender"]
    assert g["left_out"] == 10 and [(c["race"], c["n"], c["accuracy"]) for c in g["cells"]] == [("a", 40, 1.0),
                                                                                                ("b", 40, 0.75)]
    gap = g["largest_gap"]
    assert (gap["highest"], gap["lowest"], gap["gap"], gap["compared"]) == ("a", "b", 0.25, 2)
    want = gap_interval("accuracy", (1.0, wilson_interval(40, 40), 0.0), (0.75, wilson_interval(30, 40), 0.0))
    assert gap["ci95"] == pytest.approx(want) and 0.1 < want[0] < 0.25 < want[1] < 0.41
    assert score_groups(res, [gender, race], ["race"], min_gap=41)["gender"]["largest_gap"] == {}
    with pytest.raises(ValueError, match="--by shoe: group by a task of the model that makes groups: gender, race"):
        score_groups(res, [gender, race], ["shoe"])


def test_bias_heatmap_colours_span_the_cells_of_enough_faces():
    """A researcher's test: a one-face cell 56 years off set the age scale; the colours now span
    the cells of 30+ faces, and the small cell's number is still written."""
    pytest.importorskip("matplotlib")
    from unittest import mock

    from facemtl.report import figures

    rows = [{"age group": "0-19", "race": "a", "n": 40, "age_mae": 2.0},
            {"age group": "0-19", "race": "b", "n": 50, "age_mae": 6.0},
            {"age group": "60+", "race": "a", "n": 1, "age_mae": 56.0}]
    with mock.patch.object(figures, "_png", lambda fig: fig):
        fig = figures.bias_heatmaps(rows, [("age_mae", "age MAE")], "age group", ["race"])
    ax = fig.axes[0]
    assert ax.images[0].get_clim() == (2.0, 6.0)
    assert any(t.get_text().startswith("56.0") for t in ax.texts) and "30+ faces" in ax.get_title()
    with mock.patch.object(figures, "_png", lambda fig: fig):  # fewer than two big cells: every cell sets it
        fig = figures.bias_heatmaps(rows[1:], [("age_mae", "age MAE")], "age group", ["race"])
    assert fig.axes[0].images[0].get_clim() == (6.0, 56.0)
    # a cell of 40 faces, 2 of them with an age, is a small cell for age (a review: n counted all 40)
    rows = [*rows, {"age group": "60+", "race": "b", "n": 40, "age_mae": 90.0, "age_mae_n": 2}]
    with mock.patch.object(figures, "_png", lambda fig: fig):
        fig = figures.bias_heatmaps(rows, [("age_mae", "age MAE")], "age group", ["race"])
    assert fig.axes[0].images[0].get_clim() == (2.0, 6.0)
    assert any(t.get_text() == "90.0\nn=2" for t in fig.axes[0].texts)


def test_tied_extremes_are_two_groups_and_by_keeps_the_order_asked():
    """A review: two groups both 40 of 40 read "a against a" with no interval; --by race,gender
    printed gender x race."""
    from facemtl.subgroups import group_gap, wilson_interval
    from facemtl.tasks import NominalTask
    from facemtl.training.evaluation import score_groups

    g = group_gap(np.ones(80), np.r_[np.zeros(40), np.ones(40)], ["a", "b"])
    lo, hi = wilson_interval(40, 40)
    assert {g["lowest"], g["highest"]} == {"a", "b"} and g["gap"] == 0
    assert g["gap_ci95"] == pytest.approx([-(1 - lo), 1 - lo])
    gender, race = NominalTask("gender", classes=["m", "f"]), NominalTask("race", classes=["a", "b"])
    res = {"true": {"gender": np.r_[np.zeros(40), np.ones(40)], "race": np.tile([0.0, 1.0], 40)},
           "pred": {"gender": np.zeros(80), "race": np.zeros(80)}}
    out = score_groups(res, [gender, race], ["race", "gender"])["gender"]
    assert out["columns"] == ["race", "gender"] and list(out["cells"][0])[:2] == ["race", "gender"]
