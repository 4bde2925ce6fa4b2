"""Experiment grids and reports: ablation pieces by hand, then a tiny grid on real UTKFace faces end to end."""

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from facemtl.config import ConfigError
from facemtl.tasks import build_task

REPO = Path(__file__).resolve().parents[1]


# -- the pieces the variants need ---------------------------------------------------


def test_softmax_ordinal_is_plain_cross_entropy_over_ranks():
    t = build_task({"name": "age", "type": "ordinal", "min_value": 10, "max_value": 13, "method": "softmax"})
    assert t.category == "nominal"  # joins the nominal branch, like any softmax task
    head = t.make_head(5)
    assert head.out_features == 4  # K = 4 ranks: 10, 11, 12, 13
    out = torch.tensor([[0.0, 2.0, 0.0, 0.0], [3.0, 0.0, 0.0, 1.0]])
    y = torch.tensor([11.0, 13.0])
    # ranks 1 and 3; CE by hand: -log softmax
    lse0, lse1 = math.log(3 + math.exp(2)), math.log(math.exp(3) + 2 + math.e)
    expected = ((lse0 - 2.0) + (lse1 - 1.0)) / 2
    assert float(t.loss(out, y)) == pytest.approx(expected, rel=1e-5)
    raw = out.numpy()
    assert t.predict(raw).tolist() == [11.0, 10.0]  # argmax rank + min_value
    p = t.probabilities(raw)
    assert np.allclose(p, out.softmax(1).numpy(), atol=1e-6)
    # P(value > 10 + k) = 1 - cumulative softmax
    gt = t.threshold_probabilities(raw)
    assert np.allclose(gt, 1 - p.cumsum(1)[:, :3], atol=1e-6)
    # expected-rank decoding: min_value + sum_k P(value > r_k) = E[value]
    t2 = build_task({"name": "age", "type": "ordinal", "min_value": 10, "max_value": 13, "method": "softmax",
                     "decoding": "expected"})
    e = (p * np.array([10.0, 11, 12, 13])).sum(1)
    assert np.allclose(t2.predict(raw), e, atol=1e-5)
    assert torch.allclose(F.cross_entropy(out, torch.tensor([1, 3])), t.loss(out, y))


def test_freeze_backbone_freezes_exactly_the_backbone():
    from facemtl.model import MultiTaskNet

    tasks = [build_task({"name": "age", "type": "ordinal", "min_value": 0, "max_value": 9}),
             build_task({"name": "g", "type": "nominal", "num_classes": 2})]
    net = MultiTaskNet(tasks, backbone="tiny_mbconv", pretrained=False, shared_stages=2, shared_fc=[8])
    net.freeze_backbone()
    backbone = {id(p) for m in [net.trunk, *net.branches.values()] for p in m.parameters()}
    for name, p in net.named_parameters():
        assert p.requires_grad == (id(p) not in backbone), name
    net.train()
    assert not net.trunk.training and all(not b.training for b in net.branches.values())
    assert all(t.training for t in net.towers.values())
    x = torch.rand(4, 3, 32, 32)
    out = net(x)
    sum(o.sum() for o in out.values()).backward()
    assert all(p.grad is None for p in net.trunk.parameters())
    assert all(p.grad is not None for p in net.towers.parameters())


def test_standard_grid_covers_the_sources_tables(tmp_path):
    from facemtl.experiments import load_experiment

    (tmp_path / "base.yaml").write_text((REPO / "configs" / "cpu.yaml").read_text())
    (tmp_path / "exp.yaml").write_text("base: base.yaml\nseeds: 3\noverrides: [train.epochs=2]\n")
    exp = load_experiment(tmp_path / "exp.yaml")
    names = [v.name for v in exp.variants]
    assert names == ["single_age", "single_gender", "single_race", "equal", "fixed", "nominal_age",
                     "regression_age", "proposed", "learned", "dwa", "gradnorm", "early_freeze", "frozen_backbone"]
    assert exp.seeds == [0, 1, 2]
    single = exp.config(exp.variant("single_gender"), 1)
    assert [t["name"] for t in single.tasks] == ["gender"] and single.train.seed == 1 and single.train.epochs == 2
    fixed = exp.config(exp.variant("fixed"), 0)
    # hand-set: each of the 115 age thresholds weighs like one binary task
    assert fixed.weighting.name == "fixed"
    assert fixed.weighting.params["weights"] == {"age": round(1 / 115, 6), "gender": 1.0, "race": 1.0}
    nominal = exp.config(exp.variant("nominal_age"), 0)
    assert nominal.tasks[0]["method"] == "softmax"
    reg = exp.config(exp.variant("regression_age"), 0)
    assert reg.tasks[0]["type"] == "regression" and "method" not in reg.tasks[0]
    assert exp.config(exp.variant("early_freeze"), 0).train.early_freeze == 1
    assert exp.config(exp.variant("frozen_backbone"), 0).model.freeze_backbone is True
    # every variant shares the data settings
    assert len({json.dumps(exp.config(v, 0).to_dict()["data"], sort_keys=True) for v in exp.variants}) == 1
    (tmp_path / "bad.yaml").write_text("base: base.yaml\nextra: [{name: x, tasks: [height]}]\n")
    with pytest.raises(ConfigError, match="height"):
        load_experiment(tmp_path / "bad.yaml")


def _claim_runs(tmp_path):
    """A fake grid of 20 test faces (true age 5, gender class 0) whose runs save per-face
    predictions: ``run(variant, seed, age_errors, gender_right)`` writes a run whose headline
    metrics (``test_metrics.json``) are the means of those, as a trainer's are."""
    from facemtl.report.load import RunLog

    paths = np.asarray([f"f{i}.jpg" for i in range(20)])

    def run(name, seed, age_err, g_right, predictions=True):
        d = tmp_path / name / f"seed{seed}"
        d.mkdir(parents=True)
        age_err, g_right = np.asarray(age_err, float), np.asarray(g_right, bool)
        (d / "test_metrics.json").write_text(json.dumps({"age": {"mae": float(age_err.mean()), "cs": {"5": 0.5}},
                                                         "g": {"accuracy": float(g_right.mean())}}))
        (d / "config.yaml").write_text(yaml.safe_dump({"tasks": [{"name": "age", "type": "ordinal", "max_value": 9},
                                                                  {"name": "g", "type": "nominal"}]}))
        if predictions:
            np.savez(d / "test_predictions.npz", paths=paths, **{
                "pred/age": (5 + age_err).astype(np.float32), "true/age": np.full(20, 5, np.float32),
                "pred/g": np.where(g_right, 0, 1).astype(np.float32), "true/g": np.zeros(20, np.float32)})
        return RunLog(d, seed)

    return run


def test_claims_are_judged_on_paired_seeds(tmp_path):
    """A user test: a verdict was given when every seed's difference had one sign, which with
    one seed is always and with two is half the time for no difference at all (`age: MAE 0.01
    higher (per seed: -0.01) → contradicted`). The verdict rests on the 95 % interval of the
    per-face paired difference now, and a claim says which seeds it paired and which run is missing."""
    from facemtl.report.load import ReportInput, VariantRuns
    from facemtl.report.stats import Claim, describe_diff, judge, variant_metrics

    run = _claim_runs(tmp_path)
    ones, half = np.ones(20), np.arange(20) < 10
    one_off = np.r_[2.0, np.ones(19)]  # face 0 one year further off
    a = VariantRuns("a", "a", "", [run("a", 0, ones, ones), run("a", 1, ones, ones)])
    b = VariantRuns("b", "b", "", [run("b", 0, one_off, half), run("b", 1, ones, half)])
    c = VariantRuns("c", "c", "", [run("c", 0, np.r_[0.0, np.ones(19)], ones)])  # seed 1 did not finish
    d = VariantRuns("d", "d", "", [run("d", s, 2 * ones, half, predictions=False) for s in (0, 1)])
    data = ReportInput(tmp_path, "experiment", "x", {"a": a, "b": b, "c": c, "d": d}, "a", [0, 1])
    m = variant_metrics(b)
    assert m["age"]["mae"]["mean"] == pytest.approx(1.025)
    assert m["age"]["mae"]["std"] == pytest.approx(math.sqrt(0.05 ** 2 / 2))  # sample std of (1.05, 1.0)

    res = judge(Claim("s", "a beats b", "a", "b"), data)
    assert res["seeds"] == [0, 1] and res["missing"] == []
    # gender: a right on every face, b on half, both seeds: +1 on 10 faces, 0 on 10
    g = res["tasks"]["g"]
    sd = math.sqrt(20 * 0.25 / 19)
    assert g["diffs"] == pytest.approx([0.5, 0.5]) and g["faces"] == 20
    assert g["interval"] == pytest.approx([0.5 - 1.96 * sd / math.sqrt(20), 0.5 + 1.96 * sd / math.sqrt(20)], abs=1e-4)
    assert g["verdict"] == "supported"
    # age: one face one year better on one seed: +0.05 and 0 per seed; per face +0.5 (face 0) and 0
    age = res["tasks"]["age"]
    assert age["diffs"] == pytest.approx([0.05, 0.0])
    sd = math.sqrt(((0.5 - 0.025) ** 2 + 19 * 0.025 ** 2) / 19)
    assert age["interval"] == pytest.approx([0.025 - 1.96 * sd / math.sqrt(20), 0.025 + 1.96 * sd / math.sqrt(20)],
                                            abs=1e-4)
    assert age["interval"][0] < 0 < age["interval"][1] and age["verdict"] == "within noise"
    assert res["verdict"] == "mixed"
    assert describe_diff("age", age) == ("age: MAE 0.03 lower (95% interval -0.02 to +0.07 over 20 faces; "
                                         "per seed: +0.05, +0.00) → within noise")
    assert judge(Claim("s", "b beats a", "b", "a", ["g"]), data)["verdict"] == "contradicted"
    # one seed: the faces alone measure the interval, and the verdict says so (a user test)
    assert judge(Claim("s", "a beats c", "a", "c", ["g"]), data)["verdict"] == "no difference"
    one = judge(Claim("s", "a beats b", "a", "b", ["g"]), ReportInput(
        tmp_path, "experiment", "x", {"a": VariantRuns("a", "a", "", a.runs[:1]), "b": VariantRuns("b", "b", "", b.runs[:1])},
        "a", [0]))
    assert one["tasks"]["g"]["verdict"] == one["verdict"] == "supported (one seed)"
    assert judge(Claim("s", "a equals a", "a", "a"), data)["verdict"] == "no difference"

    # one seed, a tiny difference (0.05 years, one face of 20): within noise, not "contradicted";
    # and the seed that did not finish is named
    res = judge(Claim("s", "a beats c", "a", "c", ["age"]), data)
    assert res["seeds"] == [0] and res["missing"] == ["c seed 1"]
    age = res["tasks"]["age"]
    assert age["diffs"] == pytest.approx([-0.05]) and age["faces"] == 20
    sd = math.sqrt(0.95 / 19)  # per face: -1 once, 0 nineteen times
    assert age["interval"] == pytest.approx([-0.05 - 1.96 * sd / math.sqrt(20), -0.05 + 1.96 * sd / math.sqrt(20)],
                                            abs=1e-4)
    assert age["verdict"] == "within noise"

    # runs saved without per-face predictions fall back to the seeds, and say so
    res = judge(Claim("s", "a beats d", "a", "d"), data)
    assert res["tasks"]["age"]["interval"] is None and res["verdict"] == "supported (seeds only)"
    assert res["tasks"]["age"]["no_interval"] == "d seed 0 has no per-face test predictions"
    assert "no per-face test: d seed 0 has no per-face test predictions" in describe_diff("age", res["tasks"]["age"])
    assert judge(Claim("s", "missing", "a", "c2"), data) is None


def test_a_claims_interval_covers_the_seeds_where_they_disagree(tmp_path):
    """The interval covered the faces alone: three seeds whose differences were +0.3, -0.1 and
    +0.1 years on every face (a seed-to-seed shift, and a small pattern over the faces that every
    seed shares) read "supported" (0.055 to 0.145). A crossed seed x face design counts the seeds."""
    from facemtl.report.load import ReportInput, VariantRuns
    from facemtl.report.stats import Claim, describe_diff, judge, paired_interval

    run = _claim_runs(tmp_path)
    shift, pattern = np.array([0.3, -0.1, 0.1]), np.where(np.arange(20) % 2 == 0, 0.1, -0.1)
    ones = np.ones(20)
    a = VariantRuns("a", "a", "", [run("a", k, ones, ones) for k in range(3)])
    b = VariantRuns("b", "b", "", [run("b", k, 1 + shift[k] + pattern, ones) for k in range(3)])
    data = ReportInput(tmp_path, "experiment", "x", {"a": a, "b": b}, "a", [0, 1, 2])
    age = judge(Claim("s", "a beats b", "a", "b", ["age"]), data)["tasks"]["age"]
    # by hand: MS_seed = 20 var(shift) = 20 * 0.04 = 0.8, MS_face = 3 var(pattern) = 3 * 0.2 / 19,
    # MS_resid = 0; Var = (0.8 + 0.6 / 19) / 60; df = (0.8 + 0.6 / 19)^2 / (0.8^2 / 2 + (0.6 / 19)^2 / 19)
    # = 2.16 -> 2, t = 4.303: 0.1 -+ 0.5066
    ms_face = 0.6 / 19
    half = 4.303 * math.sqrt((0.8 + ms_face) / 60)
    assert half == pytest.approx(0.5066, abs=1e-4)
    assert age["interval"] == pytest.approx([0.1 - half, 0.1 + half], abs=1e-4)
    assert age["interval_over"] == "faces and seeds" and age["verdict"] == "within noise"
    assert "over 20 faces and 3 seeds;" in describe_diff("age", age)
    # the faces alone would have read "supported"
    faces_half = 1.96 * math.sqrt(ms_face / 3) / math.sqrt(20)
    assert 0.1 - faces_half > 0
    # seeds that agree on every face: the faces' interval, as before
    d = np.tile(pattern + 0.1, (3, 1))
    assert paired_interval(d) == (pytest.approx([0.1 - faces_half, 0.1 + faces_half], abs=1e-4), "faces")
    # one seed: the faces alone
    assert paired_interval(d[:1])[1] == "faces"


def test_a_claim_names_its_paired_seeds_and_missing_runs(tmp_path):
    """The report said "With 2 seeds" of a claim that rested on one (a run not finished), and "1 seeds"."""
    from facemtl.report.document import to_markdown
    from facemtl.report.load import ReportInput, VariantRuns
    from facemtl.report.writer import _claims, _json

    run = _claim_runs(tmp_path)
    ones, half = np.ones(20), np.arange(20) < 10
    proposed = VariantRuns("proposed", "proposed", "", [run("proposed", s, ones, ones) for s in (0, 1)])
    equal = VariantRuns("equal", "equal", "", [run("equal", 0, 2 * ones, half)])
    data = ReportInput(tmp_path, "experiment", "x", {"proposed": proposed, "equal": equal}, "proposed", [0, 1])
    facts: dict = {}
    md = to_markdown("r", [_claims(data, facts)])
    assert "1 seed (0); equal seed 1 missing" in md and "1 seeds" not in md
    assert "**supported**" in md and "over 20 faces" in md
    assert facts["claims"][0]["missing"] == ["equal seed 1"]
    assert json.loads(json.dumps(facts, default=_json))["claims"][0]["claim"]["worse"] == "equal"
    data.left_out = ["equal seed 1 (train.epochs: 2 → 3)"]  # finished, with other settings
    assert "1 seed (0); equal seed 1 left out" in to_markdown("r", [_claims(data, {})])


def test_unfinished_runs_are_named_and_no_difference_sides_with_the_other_verdict(tmp_path):
    """A user test of a grid stopped early: its report said "over 3 seed(s)" above rows of one run each
    and named no missing run; and a claim read "mixed" where age was within noise and gender showed no
    difference at all."""
    from facemtl.report.document import to_markdown
    from facemtl.report.load import ReportInput, VariantRuns
    from facemtl.report.stats import Claim, judge
    from facemtl.report.writer import _metrics, _setup

    run = _claim_runs(tmp_path)
    ones = np.ones(20)
    a = VariantRuns("a", "a", "", [run("a", 0, ones, ones)])
    b = VariantRuns("b", "b", "", [run("b", 0, np.r_[0.0, np.ones(19)], ones)])  # gender: the same faces right
    data = ReportInput(tmp_path, "experiment", "x", {"a": a, "b": b}, "a", [0, 1, 2],
                       not_finished=["a seed 1", "a seed 2", "b seed 1", "b seed 2"])
    res = judge(Claim("s", "a beats b", "a", "b"), data)
    assert {t: x["verdict"] for t, x in res["tasks"].items()} == {"age": "within noise", "g": "no difference"}
    assert res["verdict"] == "within noise"  # (was: "mixed")
    facts: dict = {}
    md = to_markdown("r", [_setup(data, facts), _metrics(data, facts)])
    assert facts["not_finished"] == ["a seed 1", "a seed 2", "b seed 1", "b seed 2"]
    assert "| not finished | 4 run(s) of the grid have no result (not trained, --only, or stopped before the end), " \
        "so every table leaves them out: a seed 1, a seed 2, b seed 1, b seed 2;" in md
    assert "over the finished runs of each variant (the 'seeds' column; 3 seed(s) in the grid)" in md
    assert "over 3 seed(s)" not in md


# -- a tiny grid on real faces, then its report ------------------------------------------------


@pytest.fixture(scope="module")
def tiny_grid(utkface_root, tmp_path_factory):
    from facemtl.experiments import load_experiment, run_experiment

    tmp = tmp_path_factory.mktemp("grid")
    base = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    base["data"]["root"] = str(utkface_root)
    (tmp / "tiny.yaml").write_text(yaml.safe_dump(base))
    (tmp / "exp.yaml").write_text(yaml.safe_dump({
        "name": "tiny", "base": "tiny.yaml", "seeds": [0, 1],
        "overrides": ["data.limit=300", "data.image_size=32", "train.epochs=2"],
        "variants": "standard", "skip": ["dwa"]}))
    exp = load_experiment(tmp / "exp.yaml")
    lines: list[str] = []
    summary = run_experiment(exp, tmp / "out", log=lines.append)
    return exp, tmp / "out", summary, lines


def test_tiny_grid_runs_every_variant_and_seed(tiny_grid):
    exp, out, summary, lines = tiny_grid
    assert len(exp.variants) == 12
    for v in exp.variants:
        for s in (0, 1):
            r = json.loads((out / "runs" / v.name / f"seed{s}" / "result.json").read_text())
            assert r["variant"] == v.name and r["seed"] == s and r["epochs_run"] >= 1
    assert set(summary["variants"]["proposed"]["metrics"]) == {"age", "gender", "race"}
    assert set(summary["variants"]["single_race"]["metrics"]) == {"race"}
    mae = summary["variants"]["proposed"]["metrics"]["age"]["mae"]
    assert mae["mean"] == pytest.approx(np.mean(mae["values"])) and len(mae["values"]) == 2
    # every variant and seed was tested on the same images, and a checkpoint says which split
    paths = {tuple(np.load(out / "runs" / v.name / f"seed{s}" / "test_predictions.npz")["paths"])
             for v in exp.variants for s in (0, 1)}
    assert len(paths) == 1
    from facemtl.checkpoint import load_checkpoint

    state = load_checkpoint(out / "runs" / "proposed" / "seed1" / "best.pt")
    assert state["config"]["train"]["seed"] == 1 and state["config"]["data"]["split_seed"] == 0
    # the frozen backbone's trunk did not move from its initial weights; the fine-tuned one's did
    from facemtl.model import load_model
    from facemtl.training import Trainer

    fresh = Trainer(exp.config(exp.variant("frozen_backbone"), 0), out.parent / "fresh", progress=False, log=lambda s: None)
    frozen, *_ = load_model(out / "runs" / "frozen_backbone" / "seed0" / "best.pt")
    tuned, *_ = load_model(out / "runs" / "proposed" / "seed0" / "best.pt")
    for a, b, c in zip(fresh.model.trunk.parameters(), frozen.trunk.parameters(), tuned.trunk.parameters()):
        assert torch.equal(a.detach(), b.detach())
    assert any(not torch.equal(b, c) for b, c in zip(frozen.trunk.parameters(), tuned.trunk.parameters()))


def test_grid_rerun_reuses_and_resumes(tiny_grid):
    from facemtl.experiments import run_experiment

    exp, out, summary, _ = tiny_grid
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed*/best.pt")}
    lines: list[str] = []
    again = run_experiment(exp, out, log=lines.append)
    assert sum("reused" in x for x in lines) == 24 and not any("training" in x for x in lines)
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed*/best.pt")} == stamp
    assert again["variants"] == summary["variants"]
    # an interrupted run (no result.json, a last.pt) resumes
    victim = out / "runs" / "equal" / "seed1"
    (victim / "result.json").unlink()
    lines.clear()
    run_experiment(exp, out, only=["equal"], log=lines.append)
    assert any("equal seed 1: resuming" in x for x in lines)
    assert (victim / "result.json").is_file()


def test_a_grid_variant_of_one_task_is_evaluated_and_resumed_on_its_split(tiny_grid, tmp_path, capsys):
    """A user test: the grid splits once, stratified on the whole recipe, but a run recorded only
    its own tasks, so `evaluate` and `train --resume` of `single_gender` drew another split and
    refused it as "the data changed since training" (the advice given would have scored faces it
    trained on). A checkpoint records the tasks its split was stratified on now."""
    import shutil

    from facemtl.cli import evaluate, main

    exp, out, _, _ = tiny_grid
    run = tmp_path / "single_gender"
    shutil.copytree(out / "runs" / "single_gender" / "seed0", run)
    m = evaluate(str(run / "best.pt"), "test")
    saved = np.load(run / "test_predictions.npz")
    assert m["_info"]["images"] == len(saved["paths"]) and set(m) >= {"gender", "score"}
    pred = saved["pred/gender"]  # (the saved test predictions: the same faces, the same answers)
    assert m["gender"]["accuracy"] == pytest.approx(float(np.mean(
        (pred.argmax(1) if pred.ndim == 2 else pred) == saved["true/gender"])), abs=1e-6)
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "train.epochs=3", "--no-progress"]) == 0
    assert "resumed from" in capsys.readouterr().err


def test_report_holds_every_section(tiny_grid, tmp_path):
    from facemtl.report import write_report

    exp, out, summary, _ = tiny_grid
    logs = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed*/*") if p.is_file()}
    html = write_report(out, tmp_path / "rep", samples=1)
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed*/*") if p.is_file()} == logs  # nothing retrained
    md = (tmp_path / "rep" / "report.md").read_text()
    for heading in ("Set-up", "Metrics of every variant", "The sources' claims, tested", "Task weights and loss curves",
                    "Cumulative score CS(k)", "Confusion matrices", "Intersectional bias study", "Grad-CAM per task head"):
        assert f"## {heading}" in md, heading
    for png in ("weights.png", "losses.png", "cs_age.png", "confusion.png", "bias.png",
                "gradcam_age.png", "gradcam_gender.png", "gradcam_race.png"):
        assert (tmp_path / "rep" / png).stat().st_size > 1000, png
        assert f"({png})" in md
    assert "CORAL protocol" in md and "different protocol" in md  # sources marked with their protocol
    text = html.read_text()
    assert "http://" not in text and "https://" not in text  # self-contained
    assert text.count("data:image/png;base64,") == 8
    facts = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert {c["claim"]["better"] for c in facts["claims"]} >= {"proposed", "learned", "early_freeze"}
    # CS(k) and the bias table, checked against the saved predictions by hand
    pr = np.load(out / "runs" / "proposed" / "seed0" / "test_predictions.npz")
    err = np.abs(pr["pred/age"] - pr["true/age"])
    cs = json.loads((out / "runs" / "proposed" / "seed0" / "test_metrics.json").read_text())["age"]["cs"]
    assert cs["3"] == pytest.approx(float(np.mean(err <= 3)))
    cells = facts["bias"]["cells"]
    assert sum(c["n"] for c in cells) == len(pr["paths"])
    c = max(cells, key=lambda r: r["n"])
    mask = ((pr["attr/gender"] == ["male", "female"].index(c["gender"]))
            & (pr["attr/race"] == ["white", "black", "asian", "indian", "others"].index(c["race"])))
    lo_age, hi_age = {"0-19": (0, 20), "20-39": (20, 40), "40-59": (40, 60), "60+": (60, 999)}[c["age group"]]
    mask &= (pr["attr/age"] >= lo_age) & (pr["attr/age"] < hi_age)
    n = int(mask.sum())
    k = int((pr["pred/gender"][mask] == pr["true/gender"][mask]).sum())
    assert c["n"] == n and c["gender_accuracy"] == pytest.approx(k / n)
    z = 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert c["gender_accuracy_lo"] == pytest.approx(max(0, centre - half))
    assert c["gender_accuracy_hi"] == pytest.approx(min(1, centre + half))
    assert c["age_mae"] == pytest.approx(float(np.mean(np.abs(pr["pred/age"][mask] - pr["true/age"][mask]))))


def test_report_opens_in_headless_chromium(tiny_grid, tmp_path):
    from facemtl.report import write_report

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    _, out, _, _ = tiny_grid
    html = write_report(out, tmp_path / "rep", gradcam=False)
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                          "--virtual-time-budget=5000", html.resolve().as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert 'data-report-status="ok"' in dom, dom[:500]
    assert 'data-report-images="5"' in dom


def test_report_of_a_single_run(tiny_grid, tmp_path):
    from facemtl.cli import main

    _, out, _, _ = tiny_grid
    assert main(["report", str(out / "runs" / "proposed" / "seed0"), "--out", str(tmp_path / "r"), "--no-gradcam"]) == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert "## Metrics of every variant" in md and "## Intersectional bias study" in md
    assert "claims, tested" not in md  # no pairs to compare in one run
    assert main(["report", str(tmp_path / "nothing-here")]) != 0
    # a user test: a rerun into the same folder left an earlier run's images unreferenced; a file
    # as --out ended in "[Errno 17] File exists"
    (tmp_path / "r" / "gradcam_age.png").write_bytes(b"an earlier report's")
    assert main(["report", str(out / "runs" / "proposed" / "seed0"), "--out", str(tmp_path / "r"), "--no-gradcam"]) == 0
    assert not (tmp_path / "r" / "gradcam_age.png").exists()
    md = (tmp_path / "r" / "report.md").read_text()
    assert all(f"({p.name})" in md or p.name in md for p in (tmp_path / "r").glob("*.png"))
    (tmp_path / "f.yaml").write_text("x")
    assert main(["report", str(out / "runs" / "proposed" / "seed0"), "--out", str(tmp_path / "f.yaml")]) == 2
    assert (tmp_path / "f.yaml").read_text() == "x"


def test_a_setting_added_later_keeps_finished_runs_digest():
    from facemtl.config import config_from_dict
    from facemtl.experiments.grid import config_hash

    cfg = config_from_dict({"tasks": [{"name": "gender", "type": "nominal", "classes": ["male", "female"]}],
                            "data": {"root": "/data/utkface"}})
    # the digest facemtl gave this config before data.split_seed existed (commit 649df48)
    assert config_hash(cfg) == "210e1a5355940a45"
    cfg.data.split_seed = 0
    assert config_hash(cfg) != "210e1a5355940a45"


def test_runs_of_another_budget_are_left_out_of_summary_and_report(utkface_root, tmp_path):
    """``--only a`` after the budget changed once left ``b``'s older runs in the report, which
    then said one budget held for every variant and compared them as alike."""
    from facemtl.cli import main
    from facemtl.report import write_report
    from facemtl.report.load import load

    base = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    base["data"]["root"] = str(utkface_root)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(base))

    def write(epochs):
        (tmp_path / "exp.yaml").write_text(yaml.safe_dump({
            "name": "budget", "base": "tiny.yaml", "seeds": [0],
            "overrides": ["data.limit=200", "data.image_size=32", f"train.epochs={epochs}"],
            "variants": [{"name": "a", "overrides": ["weighting.name=equal"]},
                         {"name": "b", "overrides": ["weighting.name=uncertainty"]}]}))

    out = tmp_path / "out"
    write(1)
    assert main(["experiment", "--config", str(tmp_path / "exp.yaml"), "--out", str(out)]) == 0
    assert set(load(out).variants) == {"a", "b"} and load(out).left_out == []  # the current settings' runs count
    write(2)
    assert main(["experiment", "--config", str(tmp_path / "exp.yaml"), "--out", str(out), "--only", "a"]) == 2
    assert main(["experiment", "--config", str(tmp_path / "exp.yaml"), "--out", str(out), "--only", "a",
                 "--overwrite"]) == 0
    summary = json.loads((out / "experiment.json").read_text())
    stale = "b seed 0 (train.epochs 1, now 2)"
    assert summary["left_out"] == [stale] and summary["variants"]["b"]["seeds"] == []
    assert summary["variants"]["a"]["seeds"] == [0]
    data = load(out)
    assert set(data.variants) == {"a"} and data.left_out == [stale] and data.not_finished == []  # (it finished)
    write_report(out, tmp_path / "rep", gradcam=False)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "left out" in md and "b seed 0" in md and "train.epochs=2" in md
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["left_out"] == [stale]


def one_variant_grid(folder: Path, utkface_root: Path, name: str, epochs: int) -> Path:
    """``folder/exp.yaml``: one seed, one variant (equal weighting) of ``configs/tiny.yaml`` on 200
    real faces at 32 px for ``epochs``."""
    base = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    base["data"]["root"] = str(utkface_root)
    (folder / "tiny.yaml").write_text(yaml.safe_dump(base))
    (folder / "exp.yaml").write_text(yaml.safe_dump({
        "name": name, "base": "tiny.yaml", "seeds": [0],
        "overrides": ["data.limit=200", "data.image_size=32", f"train.epochs={epochs}"],
        "variants": [{"name": "a", "overrides": ["weighting.name=equal"]}]}))
    return folder / "exp.yaml"


def test_a_grid_run_changed_by_train_resume_is_trained_again_and_locked_while_the_grid_trains(
        utkface_root, tmp_path, capfd, monkeypatch):
    """A user test: `train --out RUN --resume train.epochs=2` on a grid's run left it out of every
    summary while every rerun reused it ("finished before"), --overwrite too; and nothing locked
    a grid's run folder, so such a resume ran beside the grid in the same folder."""
    from facemtl.cli import main

    one_variant_grid(tmp_path, utkface_root, "touched", epochs=1)
    out, grid = tmp_path / "out", ["experiment", "--config", str(tmp_path / "exp.yaml")]
    assert main([*grid, "--out", str(out)]) == 0
    run = out / "runs" / "a" / "seed0"
    assert main(["train", "--out", str(run), "--resume", "train.epochs=2", "--no-progress"]) == 0
    capfd.readouterr()
    assert main([*grid, "--out", str(out)]) == 2  # not reused: trained otherwise, --overwrite trains it again
    assert "a seed 0 (train.epochs 2, now 1)" in capfd.readouterr().err
    assert main([*grid, "--out", str(out), "--overwrite"]) == 0
    err = capfd.readouterr().err
    assert "a seed 0: training" in err and "reused" not in err
    summary = json.loads((out / "experiment.json").read_text())
    assert summary["left_out"] == [] and summary["variants"]["a"]["seeds"] == [0]
    # the grid locks each run while it trains it: a `train --resume` of it then is refused
    from facemtl.training import Trainer

    fit, refused = Trainer.fit, []

    def fit_beside_a_resume(self):
        refused.append(main(["train", "--out", str(self.out), "--resume", "--no-progress"]))
        return fit(self)

    monkeypatch.setattr(Trainer, "fit", fit_beside_a_resume)
    (run / "result.json").unlink()  # as a grid stopped in that run leaves it: the grid resumes it
    assert main([*grid, "--out", str(out)]) == 0
    said = capfd.readouterr().err
    assert refused == [2] and "is in use by process" in said, said[:3000]


def test_sigterm_during_an_experiment_releases_its_lock_and_the_grid_finishes(utkface_root, tmp_path):
    import sys

    from fakes import sigterm_once

    from facemtl.training.runfolder import LOCK_NAME

    one_variant_grid(tmp_path, utkface_root, "term", epochs=60)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "facemtl.cli", "experiment", "--config", str(tmp_path / "exp.yaml"), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = out / "runs" / "a" / "seed0" / "last.pt"
    err = sigterm_once(proc, last)
    assert proc.returncode == 143, err
    assert "facemtl: interrupted; run the same command again to finish the grid" in err and "Traceback" not in err
    assert not (out / LOCK_NAME).exists()
    (tmp_path / "exp.yaml").write_text((tmp_path / "exp.yaml").read_text().replace("train.epochs=60", "train.epochs=2"))
    # the budget changed under an interrupted run: its epochs are refused, not silently deleted
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2 and "(a seed 0 (train.epochs 60, now 2)); add --overwrite" in refused.stderr
    assert last.is_file()
    done = subprocess.run([*cmd, "--overwrite"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (out / "runs" / "a" / "seed0" / "result.json").is_file()


def test_a_coral_run_on_a_subset_is_not_called_the_protocol():
    """A user test: cpu_coral.yaml with data.limit=400 (91 of the published test list's faces) was
    reported as "CORAL protocol (ages 21-60, published test list)", "same protocol" as the thesis."""
    from facemtl.report.sources import CORAL, protocol_of

    assert protocol_of({"data": {"split": "coral"}}) == CORAL
    subset = protocol_of({"data": {"split": "coral", "limit": 400}})
    assert subset.startswith("CORAL split, subset (data.limit 400;") and subset.split(" (")[0] != CORAL.split(" (")[0]


def test_a_report_says_why_a_run_has_no_test_predictions(tmp_path):
    """A user test: a run trained with data.test_fraction=0 was told to "run training to the end"."""
    from facemtl.report.load import RunLog

    (tmp_path / "data_report.json").write_text(json.dumps({"test_images": 0}))
    assert "its test split is empty" in RunLog(tmp_path).no_predictions_why
    (tmp_path / "data_report.json").write_text(json.dumps({"test_images": 40}))
    assert RunLog(tmp_path).no_predictions_why == "run training to the end"
