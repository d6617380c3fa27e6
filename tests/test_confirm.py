"""`ferhpo confirm`: a search's top configurations and its reference, retrained over seeds.

A tiny search and reference at the smoke budget, then the real command: the seed-0
runs are the source's own (copied, not retrained), the others are trained; a rerun
trains nothing; the report gives mean ± sd per configuration and a verdict over seeds.
"""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest

from conftest import TINY_SPACE, run_cli, write_folder
from ferhpo import store
from ferhpo.data import CLASSES


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A 3-trial smoke search and its reference, in one working folder."""
    work = tmp_path_factory.mktemp("confirm")
    items, seed = [], 0
    for cls in CLASSES:  # 10 training and 6 test images a class: 42 test images, enough for a verdict
        for split, origin, count in (("train", "Training", 10), ("test", "PublicTest", 3), ("test", "PrivateTest", 3)):
            for _ in range(count):
                items.append((split, cls, origin, seed))
                seed += 1
    data = write_folder(work / "fer", items)
    (work / "tiny.toml").write_text(TINY_SPACE)
    common = ("--data", str(data), "--budget", "smoke")
    ref = run_cli("baseline", "--space", "tiny.toml", "--study", "ref", *common, cwd=work)
    assert ref.returncode == 0, ref.stderr
    found = run_cli(
        "search",
        "--space",
        "tiny.toml",
        "--sampler",
        "random",
        "--pruner",
        "none",
        "--trials",
        "3",
        "--study",
        "s",
        *common,
        cwd=work,
    )
    assert found.returncode == 0, found.stderr
    return work, data


def _records(work, name):
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{work}/studies/ferhpo.db")
    return store.records(study, states=("complete",))


def test_confirm_copies_seed0_trains_the_others_and_resumes(finished):
    work, data = finished
    args = ("confirm", "--study", "s", "--baseline-study", "ref", "--top", "2", "--seeds", "2", "--data", str(data), "--json")
    result = run_cli(*args, cwd=work)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == 6  # (2 configurations + the reference) x 2 seeds
    assert sorted(r["how"] for r in rows) == ["copied"] * 3 + ["trained"] * 3
    assert {r["seed"] for r in rows if r["how"] == "copied"} == {0}
    records = _records(work, "s-confirm")
    assert sorted(r.run for r in records) == sorted(r["name"] for r in rows)
    source = {r.run: r for r in _records(work, "s")}
    for record in records:
        assert record.train["seed"] == int(record.run.rsplit("seed", 1)[1])
        origin = source.get(record.run.rsplit("-seed", 1)[0])
        if origin is not None:  # a trial: same configuration as its source, only the seed differs
            unseeded = {k: v for k, v in origin.train.items() if k != "seed"}
            assert {k: v for k, v in record.train.items() if k != "seed"} == unseeded
            assert record.model == origin.model and record.kind == "trial"
        else:
            assert record.kind == "baseline" and record.run.startswith("tiny-reference-seed")
        assert (work / "studies" / "s-confirm" / record.artifacts["weights"]).is_file()
    again = run_cli(*args, cwd=work)
    assert again.returncode == 0, again.stderr
    assert {r["how"] for r in json.loads(again.stdout)} == {"finished"}
    assert len(_records(work, "s-confirm")) == 6

    report = run_cli("report", "--study", "s-confirm", "--out", "rep", cwd=work)
    assert report.returncode == 0, report.stderr
    content = json.loads((work / "rep" / "trials.json").read_text())
    groups = content["seed_groups"]
    assert len(groups) == 3 and all(g["n"] == 2 for g in groups)
    reference = [g for g in groups if g.get("role") == "reference"]
    assert len(reference) == 1
    for g in groups:
        assert g["std_test_accuracy"] >= 0
        if g.get("role") != "reference":
            assert g["verdict"] in ("beats", "ties", "loses")
            assert g["ci_low"] <= g["diff_points"] <= g["ci_high"]
    md = (work / "rep" / "report.md").read_text()
    assert "test acc: mean ± sd" in md and "Over seeds: the best configuration" in md


def test_confirm_bad_input(finished):
    work, data = finished
    too_many = run_cli("confirm", "--study", "s", "--baseline-study", "ref", "--top", "9", "--data", str(data), cwd=work)
    assert too_many.returncode == 2
    assert "--top 9 asks for 9 configurations, but study 's' has 3 complete trial(s)" in too_many.stderr
    assert len(too_many.stderr.strip().splitlines()) == 1
    no_ref = run_cli("confirm", "--study", "s", "--baseline-study", "s", "--data", str(data), cwd=work)
    assert no_ref.returncode == 2 and "no complete baseline run" in no_ref.stderr
    unknown = run_cli("confirm", "--study", "nope", "--data", str(data), cwd=work)
    assert unknown.returncode == 2 and "nope" in unknown.stderr


def test_ensemble_of_the_top_runs_is_measured_and_reported(finished):
    work, data = finished
    result = run_cli("ensemble", "--study", "s", "--top", "2", "--tta", "--data", str(data), "--json", cwd=work)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["name"] == "ensemble-top2-tta" and len(summary["members"]) == 2 and summary["tta_hflip"]
    test = summary["evaluation"]["test"]
    assert test["n"] == 42 and 0.0 <= test["accuracy"] <= 1.0
    assert "val" in summary["evaluation"]  # the members share one split (seed 0)
    assert (work / "studies" / "s" / "ensemble-top2-tta" / "test_predictions.npz").is_file()
    # the members are the two best by validation, never chosen by test
    best = sorted(_records(work, "s"), key=lambda r: (-r.best_val_accuracy, r.created))[:2]
    assert summary["members"] == [r.run for r in best]

    report = run_cli("report", "--study", "s", "--baseline-study", "ref", "--out", "rep-ens", cwd=work)
    assert report.returncode == 0, report.stderr
    content = json.loads((work / "rep-ens" / "trials.json").read_text())
    (row,) = content["ensembles"]
    assert row["test_accuracy"] == pytest.approx(test["accuracy"])
    assert row["best_single"] == best[0].run
    assert row["best_single_verdict"] in ("beats", "ties", "loses")
    assert "## Ensembles" in (work / "rep-ens" / "report.md").read_text()
    assert any(line.startswith("Ensemble ensemble-top2-tta") for line in content["summary"])

    # an export of exactly these members with flip averaging carries the ensemble's own numbers
    exported = run_cli("export", "--study", "s", "--top", "2", "--tta", "--out", "exp", "--json", cwd=work)
    assert exported.returncode == 0, exported.stderr
    card = json.loads((work / "exp" / "model_card.json").read_text())
    assert card["evaluation"]["test"]["accuracy"] == pytest.approx(test["accuracy"])
    assert "measured by `ferhpo ensemble`" in (work / "exp" / "model_card.md").read_text()


def test_a_greedy_ensemble_is_chosen_on_validation_and_reported_with_its_weights(finished):
    work, data = finished
    result = run_cli("ensemble", "--study", "s", "--top", "3", "--select", "greedy", "--data", str(data), "--json", cwd=work)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    candidates = [r.run for r in sorted(_records(work, "s"), key=lambda r: (-r.best_val_accuracy, r.created))[:3]]
    assert summary["name"] == "ensemble-greedy3" and summary["selection"] == "greedy" and summary["candidates"] == candidates
    assert summary["members"] and set(summary["members"]) <= set(candidates)
    assert len(summary["weights"]) == len(summary["members"]) and all(w >= 1 for w in summary["weights"])
    assert sum(summary["weights"]) <= 6 and "optimistic" in summary["validation_note"]
    report = run_cli("report", "--study", "s", "--baseline-study", "ref", "--out", "rep-greedy", cwd=work)
    assert report.returncode == 0, report.stderr
    rows = {row["name"]: row for row in json.loads((work / "rep-greedy" / "trials.json").read_text())["ensembles"]}
    assert rows["ensemble-greedy3"]["weights"] == summary["weights"] and rows["ensemble-greedy3"]["selection"] == "greedy"
    assert rows["ensemble-top2-tta"]["weights"] == [1, 1] and rows["ensemble-top2-tta"]["selection"] == "top"


def test_greedy_selection_adds_what_raises_validation_accuracy_and_stops():
    from ferhpo.deploy.ensemble import greedy_weights

    labels = np.array([0, 0, 1, 1])

    def candidate(p_true):  # probability of each image's true class; the rest on the other class
        p = np.zeros((4, len(CLASSES)))
        p[np.arange(4), labels], p[np.arange(4), 1 - labels] = p_true, 1 - np.asarray(p_true)
        return p

    a = candidate([0.9, 0.6, 0.6, 0.45])  # right on 3 of 4
    b = candidate([0.4, 0.55, 0.55, 0.8])  # right on 3 of 4; the mean of a and b is right on all 4
    c = candidate([0.2, 0.2, 0.2, 0.2])  # wrong everywhere
    assert list(greedy_weights(np.stack([a, b, c]), labels, rounds=6)) == [1, 1, 0]
    assert list(greedy_weights(np.stack([c, b, a]), labels, rounds=6)) == [0, 1, 1]  # a tie goes to the earlier
    assert list(greedy_weights(np.stack([a, c]), labels, rounds=4)) == [1, 0]  # nothing raises it: a alone
    assert list(greedy_weights(np.stack([a, b, c]), labels, rounds=1)) == [1, 0, 0]


def test_ensemble_bad_input(finished):
    work, data = finished
    result = run_cli("ensemble", "--study", "s", "--top", "7", "--data", str(data), cwd=work)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "--top 7 asks for 7 runs, but study 's' has 3 finished" in result.stderr


def test_refit_trains_on_every_training_image_for_the_best_epoch_count(finished):
    work, data = finished
    result = run_cli(
        "confirm",
        "--study",
        "s",
        "--baseline-study",
        "ref",
        "--top",
        "1",
        "--seeds",
        "1",
        "--refit",
        "--confirm-study",
        "r",
        "--data",
        str(data),
        "--json",
        cwd=work,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert sorted(r["how"] for r in rows) == ["copied", "copied", "trained", "trained"]
    refits = [r for r in _records(work, "r") if r.run.endswith("-refit")]
    assert len(refits) == 2 and {r.kind for r in refits} == {"trial", "baseline"}
    source = {r.run: r for r in [*_records(work, "s"), *_records(work, "ref")]}
    for record in refits:
        origin = source[record.run[: -len("-refit")]]
        assert record.protocol == "refit" and "val" not in record.evaluation
        assert record.train_images == 70  # every training image: 10 a class, none held out
        assert record.epochs_run == record.train["epochs"] == origin.best_epoch
        assert record.test_accuracy is not None
    report = run_cli("report", "--study", "r", "--out", "rep-refit", cwd=work)
    assert report.returncode == 0, report.stderr
