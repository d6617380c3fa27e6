"""`ferhpo.report`: ranked reports built from constructed studies (no training, no keras).

Studies are written the way the real code writes them: complete runs through
`store.add_record`, pruned and failed trials through `optuna.trial.create_trial` with
the record (or the error) in their user attributes, and each run's
`test_predictions.npz` under studies/<study>/<run_id>/. The test predictions are built
so that the statistical verdicts are known: an obvious win, a tie and a loss.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from ferhpo import store
from ferhpo.errors import ConfigError, FerhpoError, StoreError
from ferhpo.report import FORMATS, build_report, stats
from ferhpo.report.figures import pareto_front

CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
N_TEST = 400
REPORTED = {
    "densenet-c0.3": 0.6828,
    "densenet-c0.5": 0.6909,
    "densenet-c0.7": 0.6934,
    "resnet-v1-104": 0.6652,
    "resnet-v2-155": 0.6627,
}
FIGURES = (
    "optimization_history",
    "intermediate_values",
    "param_importance",
    "parallel_coordinates",
    "learning_curves",
    "accuracy_vs_params",
    "time_phases",
    "confusion_matrix",
)

FILES = np.array([f"test/{CLASSES[i % 7]}/{'PrivateTest' if i % 2 else 'PublicTest'}_{i}.png" for i in range(N_TEST)])
LABELS = np.random.default_rng(1).integers(0, 7, N_TEST)
BASELINE_RIGHT = np.arange(N_TEST) < 240  # the best baseline: 60% right

SPACE = {
    "name": "tiny",
    "family": "densenet",
    "description": "",
    "path": "tiny.toml",
    "fixed": {},
    "params": [
        {
            "name": "growth_rate",
            "type": "int",
            "field": "growth_rate",
            "low": 8,
            "high": 32,
            "step": 4,
            "log": False,
            "default": 12,
        },
        {
            "name": "learning_rate",
            "type": "float",
            "field": "learning_rate",
            "low": 1e-4,
            "high": 1e-2,
            "step": None,
            "log": True,
            "default": 1e-3,
        },
        {
            "name": "optimizer",
            "type": "categorical",
            "field": "optimizer",
            "choices": ["rmsprop", "adam", "sgd"],
            "default": "rmsprop",
        },
    ],
}
SETTINGS = {
    "engine": "optuna",
    "objectives": ["val_accuracy"],
    "budget": {"name": "quick", "epochs": 3},
    "protocol": "holdout",
    "seed": 0,
    "space": SPACE,
    "data_fingerprint": "abc",
    "max_epochs": 3,
}


# --------------------------------------------------------------------------- builders


def _evaluation(right: np.ndarray, files=FILES, labels=LABELS) -> tuple[dict, np.ndarray]:
    predictions = np.where(right, labels, (labels + 1) % 7)
    k = 7
    confusion = np.bincount(labels * k + predictions, minlength=k * k).reshape(k, k)
    recall = {c: float(confusion[i, i] / max(confusion[i].sum(), 1)) for i, c in enumerate(CLASSES)}

    def metrics(mask):
        return {
            "n": int(mask.sum()),
            "accuracy": float(right[mask].mean()),
            "macro_f1": float(right[mask].mean()) * 0.9,
            "per_class_recall": recall,
            "confusion": confusion.tolist(),
        }

    private = np.char.find(files.astype(str), "PrivateTest") >= 0
    ev = {
        "val": metrics(np.ones_like(right, bool)),
        "test": metrics(np.ones_like(right, bool)),
        "test_private": metrics(private),
        "test_public": metrics(~private),
    }
    return ev, predictions


def make_record(
    root: Path,
    study: str,
    run: str,
    *,
    kind="trial",
    status="complete",
    family="densenet",
    right: np.ndarray | None = None,
    val=0.5,
    hyper=None,
    seed=0,
    epochs=3,
    model=None,
    protocol="holdout",
    sees=(),
    files=FILES,
    labels=LABELS,
    budget="quick",
    reported=None,
    pruned_at=None,
    params=500_000,
    started_at=1_000.0,
) -> store.RunRecord:
    run_id = f"{run}-{budget}-{abs(hash((study, run, seed))) % 10**8:08d}"
    folder = root / study / run_id
    folder.mkdir(parents=True, exist_ok=True)
    artifacts = {"dir": run_id}
    evaluation = {}
    if right is not None:
        evaluation, predictions = _evaluation(right, files, labels)
        np.savez(folder / "test_predictions.npz", files=files, labels=labels, predictions=predictions.astype(np.int8))
        artifacts["test_predictions"] = f"{run_id}/test_predictions.npz"
    curve = [val * (i + 1) / epochs for i in range(epochs)]
    hyper = dict(hyper or {})
    train = {
        "optimizer": hyper.get("optimizer", "rmsprop"),
        "learning_rate": hyper.get("learning_rate", 1e-3),
        "batch_size": 32,
        "epochs": 3 if kind == "trial" else epochs,
        "seed": seed,
    }
    model = model or {
        "family": family,
        "growth_rate": hyper.get("growth_rate", 12),
        "num_blocks": 4,
        "layers_per_block": 12,
        "compression": 0.5,
    }
    search = {}
    if kind == "trial":
        search = {
            "engine": "optuna",
            "sampler": "tpe",
            "pruner": "median",
            "objective": "val_accuracy",
            "objective_curve": curve,
            "pruned_at_epoch": pruned_at,
            "max_epochs": 3,
        }
    return store.RunRecord(
        study=study,
        run=run,
        run_key=run_id,
        run_id=run_id,
        kind=kind,
        status=status,
        family=family,
        model=model,
        train=train,
        budget={"name": budget, "epochs": epochs},
        protocol=protocol,
        split_seed=seed,
        selection_sees=list(sees),
        data_fingerprint="abc",
        history={
            "loss": [2.0 - 0.1 * i for i in range(len(curve))],
            "accuracy": [c * 0.9 for c in curve],
            "val_loss": [2.1 - 0.1 * i for i in range(len(curve))],
            "val_accuracy": curve,
            "lr": [1e-3] * len(curve),
        },
        epochs_run=len(curve),
        best_epoch=len(curve),
        best_val_accuracy=max(curve),
        evaluation=evaluation,
        params=params,
        train_images=1000,
        wall_seconds=12.5 * len(curve),
        train_seconds=10.0 * len(curve),
        images_per_second=250.0,
        environment={"python": "3"},
        artifacts=artifacts,
        reported_test_accuracy=reported,
        hyperparameters=hyper,
        search=search,
        phases=make_phases(len(curve), started_at),
    )


def make_phases(epochs: int, started_at: float) -> dict:
    """A run's phase times as `ferhpo.phases.PhaseClock.summary` gives them: 100 s of training
    per epoch and 20 s of everything else."""
    phases = {
        "startup": 4.0,
        "data": 1.0,
        "build": 1.0,
        "compile": 5.0,
        "train": 100.0 * epochs,
        "validation": 2.0,
        "test": 3.0,
        "write": 1.0,
        "other": 3.0,
    }
    return {**phases, "wall": sum(phases.values()), "started_at": started_at}


def add_pruned(study, record: store.RunRecord) -> None:
    curve = record.search["objective_curve"]
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.PRUNED,
            intermediate_values={i + 1: v for i, v in enumerate(curve)},
            user_attrs={store.RECORD_ATTR: record.to_dict(), "run": record.run, "kind": record.kind},
        )
    )


def add_failed(study, error: str, params: dict) -> None:
    dists = {
        "growth_rate": optuna.distributions.IntDistribution(8, 32, step=4),
        "learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
    }
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL,
            params=params,
            distributions={k: dists[k] for k in params},
            user_attrs={store.ERROR_ATTR: error},
        )
    )


def right_with(extra_right: int = 0, extra_wrong: int = 0) -> np.ndarray:
    """The baseline's pattern with `extra_right` of its misses fixed and `extra_wrong` of its hits lost."""
    right = BASELINE_RIGHT.copy()
    right[240 : 240 + extra_right] = True
    right[:extra_wrong] = False
    return right


def build_studies(root: Path, url: str) -> None:
    """A baseline study (two reproduced presets) and a search study with known outcomes."""
    base = store.open_study("baseline", url)
    store.add_record(
        base,
        make_record(
            root,
            "baseline",
            "densenet-c0.7",
            kind="baseline",
            right=BASELINE_RIGHT,
            val=0.62,
            protocol="seed-densenet",
            sees=("test", "test_public", "test_private"),
            epochs=3,
            budget="quick",
            reported=0.6934,
            params=918_121,
            model={"family": "densenet", "growth_rate": 12, "num_blocks": 4, "layers_per_block": 12, "compression": 0.7},
        ),
    )
    store.add_record(
        base,
        make_record(
            root,
            "baseline",
            "resnet-v1-104",
            kind="baseline",
            family="resnet",
            right=right_with(extra_wrong=40),
            val=0.55,
            protocol="seed-resnet",
            epochs=3,
            reported=0.6652,
            params=1_647_975,
            model={"family": "resnet", "version": 1, "depth": 104},
        ),
    )
    # the reference recipe at the search's own budget and protocol: the one trials are tested against
    store.add_record(
        base,
        make_record(
            root,
            "baseline",
            "tiny-reference",
            kind="baseline",
            right=BASELINE_RIGHT,
            val=0.58,
            epochs=3,
            budget="quick",
            params=200_000,
            model={"family": "densenet", "growth_rate": 10, "num_blocks": 3, "layers_per_block": 4, "compression": 0.5},
        ),
    )

    search = store.open_study("search", url)
    search.set_user_attr("ferhpo.search", SETTINGS)
    win = {"growth_rate": 24, "learning_rate": 3e-3, "optimizer": "adam"}
    # two workers: trials 0 and 1 side by side (320 s each), then 2 (320 s) beside 3 (pruned, 120 s),
    # then 5 alone: a span of 960 s, 2 x 960 s of capacity
    store.add_record(
        search, make_record(root, "search", "trial-0", right=right_with(extra_right=60), val=0.70, hyper=win, started_at=0.0)
    )
    store.add_record(
        search,
        make_record(
            root,
            "search",
            "trial-1",
            right=right_with(5, 5),
            val=0.65,
            hyper={"growth_rate": 12, "learning_rate": 1e-3, "optimizer": "rmsprop"},
            started_at=0.0,
        ),
    )
    store.add_record(
        search,
        make_record(
            root,
            "search",
            "trial-2",
            right=right_with(extra_wrong=60),
            val=0.60,
            hyper={"growth_rate": 8, "learning_rate": 1e-4, "optimizer": "sgd"},
            started_at=320.0,
        ),
    )
    add_pruned(
        search,
        make_record(
            root,
            "search",
            "trial-3",
            status="pruned",
            val=0.3,
            epochs=1,
            pruned_at=1,
            hyper={"growth_rate": 32, "learning_rate": 1e-2, "optimizer": "sgd"},
            started_at=320.0,
        ),
    )
    add_failed(search, "the loss diverged to NaN at epoch 1", {"growth_rate": 16, "learning_rate": 0.009})
    # the winner again with another seed: a seed group of two
    store.add_record(
        search,
        make_record(root, "search", "trial-5", right=right_with(extra_right=50), val=0.68, hyper=win, seed=1, started_at=640.0),
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The constructed studies and one full report of the search study."""
    base = tmp_path_factory.mktemp("report")
    root, url = base / "studies", f"sqlite:///{base}/studies/ferhpo.db"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    build_studies(root, url)
    result = build_report("search", storage=url, out=base / "reports" / "search", root=root)
    return {"base": base, "root": root, "url": url, "result": result, "out": base / "reports" / "search"}


def rows_of(built) -> list[dict]:
    return json.loads((built["out"] / "trials.json").read_text())["rows"]


def row(rows, run, kind=None) -> dict:
    return next(r for r in rows if r["run"] == run and (kind is None or r["kind"] == kind))


# --------------------------------------------------------------------------- statistics


def test_mcnemar_exact_and_chi_square():
    p, method = stats.mcnemar(0, 10)
    assert method == "exact binomial" and p == pytest.approx(2 / 2**10)
    p, _ = stats.mcnemar(5, 5)
    assert p == pytest.approx(1.0)
    p, method = stats.mcnemar(30, 10)  # (|30 - 10| - 1)^2 / 40 = 9.025
    assert method.startswith("chi-square") and p == pytest.approx(math.erfc(math.sqrt(9.025 / 2)))
    assert stats.mcnemar(0, 0) == (1.0, "exact binomial")
    scipy_stats = pytest.importorskip("scipy.stats")
    assert stats.mcnemar(3, 12)[0] == pytest.approx(scipy_stats.binomtest(3, 15, 0.5).pvalue)
    assert stats.mcnemar(40, 20)[0] == pytest.approx(scipy_stats.chi2.sf((20 - 1) ** 2 / 60, 1))


def test_bootstrap_interval_is_paired_seeded_and_decides_the_verdict():
    base = BASELINE_RIGHT
    win = stats.compare_correct(right_with(extra_right=60), base, seed=0)
    tie = stats.compare_correct(right_with(5, 5), base, seed=0)
    loss = stats.compare_correct(right_with(extra_wrong=60), base, seed=0)
    assert (win.verdict, tie.verdict, loss.verdict) == ("beats", "ties", "loses")
    assert win.diff_points == pytest.approx(15.0) and 0 < win.ci_low < 15 < win.ci_high
    assert (win.b, win.c) == (60, 0) and win.p_value < 1e-10
    assert tie.diff_points == 0 and tie.ci_low < 0 < tie.ci_high and tie.p_value == pytest.approx(1.0)
    assert loss.ci_high < 0
    same = stats.compare_correct(base, base)
    assert (same.ci_low, same.ci_high, same.verdict) == (0.0, 0.0, "ties")
    assert stats.compare_correct(right_with(5, 5), base, seed=3) == stats.compare_correct(right_with(5, 5), base, seed=3)
    # a +1.5 point estimate whose interval still covers zero is a tie, not a win
    small = stats.compare_correct(right_with(extra_right=10, extra_wrong=4), base)
    assert small.diff_points == pytest.approx(1.5) and small.ci_low < 0 and small.verdict == "ties"
    assert small.p_value == pytest.approx(2 * sum(math.comb(14, k) for k in range(5)) / 2**14)


def test_bootstrap_matches_index_resampling():
    rng = np.random.default_rng(0)
    a, b = rng.random(300) < 0.7, rng.random(300) < 0.6
    _, low, high = stats.bootstrap_difference(a, b, resamples=20_000, seed=1)
    idx = rng.integers(0, 300, (20_000, 300))
    diffs = 100 * (a[idx].mean(1) - b[idx].mean(1))
    ref_low, ref_high = np.percentile(diffs, [2.5, 97.5])
    assert low == pytest.approx(ref_low, abs=0.7) and high == pytest.approx(ref_high, abs=0.7)


def test_seed_bootstrap_reduces_to_the_paired_one_and_widens_with_seed_spread():
    rng = np.random.default_rng(0)
    a, b = rng.random((1, 2000)) < 0.62, rng.random((1, 2000)) < 0.58
    one = stats.bootstrap_seeds(a, b, resamples=20_000, seed=1)
    paired = stats.bootstrap_difference(a[0], b[0], resamples=20_000, seed=1)
    assert one[0] == pytest.approx(paired[0]) and one[1] == pytest.approx(paired[1], abs=0.3)
    assert one[2] == pytest.approx(paired[2], abs=0.3)
    # three seeds of a that agree on the images vs three that differ by +-10 points:
    # the same mean, but seed-to-seed spread must widen the interval
    same = np.vstack([a[0]] * 3)
    spread = np.vstack([rng.random(2000) < p for p in (0.52, 0.62, 0.72)])
    narrow = stats.bootstrap_seeds(same, np.vstack([b[0]] * 3), seed=2)
    wide = stats.bootstrap_seeds(spread, np.vstack([b[0]] * 3), seed=2)
    assert wide[2] - wide[1] > 2 * (narrow[2] - narrow[1])
    with pytest.raises(ValueError, match="same images"):
        stats.bootstrap_seeds(a, b[:, :10])


def test_correct_matrix_pairs_runs_by_file_name():
    files = np.array([f"f{i}" for i in range(40)])
    labels = np.arange(40) % 7
    run = lambda order, right: stats.Predictions(files[order], labels[order], np.where(right, labels, (labels + 1) % 7)[order])  # noqa: E731
    right = np.arange(40) % 2 == 0
    matrix, common = stats.correct_matrix([run(np.arange(40), right), run(np.arange(40)[::-1][:30], ~right)])
    assert matrix.shape == (2, 30) and set(common) == set(files[10:])
    assert (matrix[0] == ~matrix[1]).all()
    assert stats.correct_matrix([run(np.arange(40), right), None]) is None


def test_predictions_are_paired_by_file_name_and_too_few_is_no_verdict():
    ev_b = stats.Predictions(FILES, LABELS, np.where(BASELINE_RIGHT, LABELS, (LABELS + 1) % 7))
    order = np.random.default_rng(2).permutation(N_TEST)[:300]  # another order, a subset
    right = right_with(extra_right=60)
    ev_a = stats.Predictions(FILES[order], LABELS[order], np.where(right, LABELS, (LABELS + 1) % 7)[order])
    c = stats.compare(ev_a, ev_b)
    assert c.n == 300 and "300" in c.reason
    assert c.b == int((right[order] & ~BASELINE_RIGHT[order]).sum()) and c.c == 0
    few = stats.compare(stats.Predictions(FILES[:20], LABELS[:20], LABELS[:20]), ev_b)
    assert few.verdict == "n/a" and "20" in few.reason
    assert stats.compare(None, ev_b).verdict == "n/a"


def test_pareto_front():
    assert pareto_front([(10, 0.5), (5, 0.4), (20, 0.45), (30, 0.6), (5, 0.3)]) == [(5, 0.4), (10, 0.5), (30, 0.6)]


# --------------------------------------------------------------------------- the report


def test_writes_every_file_and_figure(built):
    out, result = built["out"], built["result"]
    for name in FORMATS.values():
        assert (out / name).is_file(), name
    for name in FIGURES:
        png = out / f"{name}.png"
        assert png.is_file(), name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.figures_skipped == {}
    assert set(result.files) == {out / n for n in FORMATS.values()} | {out / f"{n}.png" for n in FIGURES}
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    md = (out / "report.md").read_text()
    for name in FIGURES:
        assert f"]({name}.png)" in md


def test_ranking_follows_the_validation_objective(built):
    rows = rows_of(built)
    ranked = [r for r in rows if r["rank"] is not None]
    assert [r["run"] for r in ranked] == ["trial-0", "trial-5", "trial-1", "trial-2", "trial-3", "trial-4"]
    assert [r["rank"] for r in ranked] == [1, 2, 3, 4, 5, 6]
    assert [r["status"] for r in ranked] == ["complete"] * 4 + ["pruned", "failed"]
    assert ranked[4]["epochs"] == 1 and ranked[4]["max_epochs"] == 3 and ranked[4]["test_accuracy"] is None
    assert "NaN" in ranked[5]["note"]
    assert ranked[0]["key_hyperparameters"] == "growth_rate=24, learning_rate=0.003, optimizer=adam"
    assert ranked[2]["key_hyperparameters"] == "(all at the reference defaults)"


def test_differences_against_references_and_baseline(built):
    rows = rows_of(built)
    top = row(rows, "trial-0")
    assert top["test_accuracy"] == pytest.approx(0.75)
    assert top["diff_best_reference_pts"] == pytest.approx(100 * (0.75 - 0.6934))
    assert top["best_reference"] == "densenet-c0.7" and top["family_reference"] == "densenet-c0.7"
    # tested against the reference run of its own budget and protocol, not the better-scoring
    # densenet-c0.7 of another protocol
    assert top["diff_baseline_pts"] == pytest.approx(15.0) and top["baseline_run"] == "tiny-reference"
    reported = [r for r in rows if r["kind"] == "reported"]
    assert {r["run"]: r["test_accuracy"] for r in reported} == REPORTED
    assert all(r["diff_baseline_pts"] is None for r in reported)  # full budget, not the quick one
    resnet = row(rows, "resnet-v1-104", "reported")
    assert resnet["diff_family_reference_pts"] == 0.0
    assert resnet["diff_best_reference_pts"] == pytest.approx(100 * (0.6652 - 0.6934))
    reproduced = row(rows, "resnet-v1-104", "baseline")
    assert reproduced["test_accuracy"] == pytest.approx(0.5)
    assert reproduced["diff_family_reference_pts"] == pytest.approx(100 * (0.5 - 0.6652))
    # each reported row is followed by its reproduced run
    order = [(r["run"], r["kind"]) for r in rows if r["rank"] is None]
    assert order.index(("densenet-c0.7", "baseline")) == order.index(("densenet-c0.7", "reported")) + 1


def test_verdicts_on_constructed_win_tie_and_loss(built):
    rows = rows_of(built)
    assert [row(rows, f"trial-{i}")["verdict"] for i in (0, 1, 2)] == ["beats", "ties", "loses"]
    win = row(rows, "trial-0")
    assert win["ci_low_pts"] > 0 and win["mcnemar_b"] == 60 and win["mcnemar_c"] == 0 and win["images_compared"] == N_TEST
    assert row(rows, "trial-3")["verdict"] == "n/a" and "pruned" in row(rows, "trial-3")["comparison_note"]
    verdicts = {v["run"]: v["verdict"] for v in built["result"].verdicts}
    assert verdicts == {"trial-0": "beats", "trial-5": "beats", "trial-1": "ties", "trial-2": "loses"}


def test_seed_groups_and_selection_notes(built):
    rows = rows_of(built)
    for run in ("trial-0", "trial-5"):
        r = row(rows, run)
        assert r["seed_runs"] == 2
        assert r["seed_mean_test_accuracy"] == pytest.approx((0.75 + 0.725) / 2)
        assert r["seed_std_test_accuracy"] == pytest.approx(np.std([0.75, 0.725], ddof=1))
    assert row(rows, "trial-1")["seed_runs"] is None
    dense = row(rows, "densenet-c0.7", "baseline")
    assert dense["selection_used_test"] is True and "†" in dense["note"]
    assert row(rows, "densenet-c0.3", "reported")["selection_used_test"] is True
    assert row(rows, "resnet-v1-104", "reported")["selection_used_test"] is False
    assert row(rows, "trial-0")["selection_used_test"] is False
    md = (built["out"] / "report.md").read_text()
    assert "0.6000 †" in md  # the reproduced DenseNet's test accuracy carries the mark


def test_summary_names_the_best_trial_interval_and_pruning_savings(built):
    summary = " ".join(built["result"].summary)
    assert "Best trial: trial-0" in summary and "verdict: beats" in summary and "95% bootstrap interval" in summary
    # trials used 3+3+3+1+3 epochs of 5 x 3; the grid has 5 x 5 x 3 points of 3 epochs
    assert "13 epoch(s) trained" in summary and "15 epochs, so pruning saved 2" in summary
    assert "about 75 points x 3 epochs" in summary and "225 epochs" in summary
    js = json.loads((built["out"] / "trials.json").read_text())
    assert js["compute"]["epochs_used"] == 13 and js["compute"]["failed"] == 1


def test_csv_has_one_row_per_trial_and_reference(built):
    frame = pd.read_csv(built["out"] / "trials.csv")
    assert len(frame) == 6 + 5 + 3
    assert set(frame["kind"]) == {"trial", "baseline", "reported"}
    assert {
        "rank",
        "test_private_accuracy",
        "test_public_accuracy",
        "macro_f1",
        "params",
        "train_seconds",
        "images_per_second",
        "diff_best_reference_pts",
        "diff_family_reference_pts",
        "diff_baseline_pts",
        "verdict",
        "ci_low_pts",
        "p_value",
        "seed_mean_test_accuracy",
    } <= set(frame.columns)
    assert json.loads(frame.loc[frame["run"] == "trial-0", "hyperparameters"].iloc[0])["optimizer"] == "adam"


def test_html_is_self_contained(built):
    text = (built["out"] / "report.html").read_text()
    images = re.findall(r"<img [^>]*src=\"([^\"]+)\"", text)
    assert len(images) == len(FIGURES) and all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r"(src|href)=\"(?!data:)", text)
    assert "<script" not in text and "@import" not in text and "url(" not in text
    for accuracy in ("0.6828", "0.6909", "0.6934", "0.6652", "0.6627"):
        assert accuracy in text
    assert text.count("<figcaption>") == len(FIGURES)


def test_a_later_report_replaces_the_earlier_one(built, tmp_path):
    out = tmp_path / "r"
    build_report("search", storage=built["url"], out=out, root=built["root"], formats=["json"])
    assert sorted(p.name for p in out.iterdir()) == [".ferhpo-report", "trials.json"]
    result = build_report("search", storage=built["url"], out=out, root=built["root"], formats="csv,md", top=1)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(
        ["trials.csv", "report.md"] + [f"{n}.png" for n in FIGURES]
    )
    assert [v["run"] for v in result.verdicts] == ["trial-0"]
    assert [p.name for p in tmp_path.iterdir()] == ["r"]
    rows = pd.read_csv(out / "trials.csv")
    assert "beyond the top 1" in rows.loc[rows["run"] == "trial-1", "comparison_note"].iloc[0]


def test_a_baseline_only_study(built, tmp_path):
    result = build_report("baseline", storage=built["url"], out=tmp_path / "b", root=built["root"])
    rows = json.loads((tmp_path / "b" / "trials.json").read_text())["rows"]
    ranked = [r for r in rows if r["rank"] is not None]
    assert [r["run"] for r in ranked] == ["densenet-c0.7", "tiny-reference", "resnet-v1-104"]  # by validation
    assert ranked[0]["verdict"] == "n/a" and "itself" in ranked[0]["comparison_note"]
    # like with like: the other runs used other protocols than the best one, so no test against it
    for other, protocol in ((ranked[1], "holdout"), (ranked[2], "seed-resnet")):
        assert other["verdict"] == "n/a" and other["diff_baseline_pts"] is None
        assert f"protocols differ: {protocol} against seed-densenet" in other["comparison_note"]
    assert len([r for r in rows if r["kind"] == "reported"]) == 5
    assert len([r for r in rows if r["kind"] == "baseline"]) == 3  # not repeated in the reference block
    assert set(result.figures_skipped) == {"param_importance", "parallel_coordinates"}
    assert "Not drawn: needs at least 2 complete trials" in (tmp_path / "b" / "report.md").read_text()


def test_without_a_baseline_study_there_is_no_verdict(tmp_path):
    root, url = tmp_path / "studies", f"sqlite:///{tmp_path}/s.db"
    study = store.open_study("alone", url)
    store.add_record(
        study, make_record(root, "alone", "trial-0", right=right_with(extra_right=60), val=0.7, hyper={"growth_rate": 24})
    )
    store.add_record(
        study,
        make_record(
            root, "alone", "trial-1", right=right_with(), val=0.6, hyper={"growth_rate": 16}, family="resnet", params=2_000_000
        ),
    )
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING))
    # a KerasTuner failure: no Optuna parameters, its values in a user attribute
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL,
            user_attrs={
                store.ERROR_ATTR: "out of memory",
                "run": "kt-7",
                "kind": "trial",
                "ferhpo.hyperparameters": {"growth_rate": 32},
            },
        )
    )
    result = build_report("alone", storage=url, out=tmp_path / "out", root=root)
    assert result.snapshot and "still running" in result.summary[0]
    rows = json.loads((tmp_path / "out" / "trials.json").read_text())["rows"]
    assert row(rows, "trial-0")["verdict"] == "n/a" and row(rows, "trial-0")["diff_baseline_pts"] is None
    resnet = row(rows, "trial-1")
    assert resnet["family_reference"] == "resnet-v1-104"
    assert resnet["diff_family_reference_pts"] == pytest.approx(100 * (0.6 - 0.6652))
    assert "no reproduced baseline run was found" in " ".join(result.summary)
    failed = row(rows, "kt-7")
    assert failed["status"] == "failed" and failed["key_hyperparameters"] == "growth_rate=32" and failed["rank"] == 3


def test_a_multi_objective_study_marks_its_pareto_front(tmp_path):
    root, url = tmp_path / "studies", f"sqlite:///{tmp_path}/s.db"
    study = store.open_study("mo", url, directions=["maximize", "minimize"])
    for i, (acc, params) in enumerate([(0.7, 900_000), (0.6, 100_000), (0.55, 500_000)]):
        record = make_record(
            root,
            "mo",
            f"trial-{i}",
            right=np.arange(N_TEST) < int(acc * N_TEST),
            val=acc,
            hyper={"growth_rate": 8 + 4 * i},
            params=params,
        )
        study.add_trial(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState.COMPLETE,
                values=[acc, float(params)],
                user_attrs={store.RECORD_ATTR: record.to_dict()},
            )
        )
    study.set_user_attr("ferhpo.pareto", ["trial-1", "trial-0"])
    build_report("mo", storage=url, out=tmp_path / "out", root=root)
    rows = json.loads((tmp_path / "out" / "trials.json").read_text())["rows"]
    assert [r["run"] for r in rows if r["rank"]] == ["trial-0", "trial-1", "trial-2"]
    assert [r["pareto"] for r in rows if r["rank"]] == [True, True, False]
    assert (tmp_path / "out" / "accuracy_vs_params.png").is_file()


# --------------------------------------------------------------------------- errors write nothing


def _nothing_written(tmp_path: Path, before: set[Path]) -> bool:
    return set(tmp_path.rglob("*")) == before


def test_a_missing_study_is_an_error_and_writes_nothing(built, tmp_path):
    before = set(tmp_path.rglob("*"))
    with pytest.raises(StoreError, match=r"no study 'nope'.*studies there: baseline, search"):
        build_report("nope", storage=built["url"], out=tmp_path / "reports" / "nope", root=built["root"])
    assert _nothing_written(tmp_path, before)
    with pytest.raises(StoreError, match="no study 'gone'"):
        build_report("search", storage=built["url"], out=tmp_path / "x", root=built["root"], baseline_study="gone")
    assert _nothing_written(tmp_path, before)


def test_an_empty_study_is_an_error_and_writes_nothing(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    store.open_study("empty", url)
    before = set(tmp_path.rglob("*"))
    with pytest.raises(StoreError, match="holds no finished runs"):
        build_report("empty", storage=url, out=tmp_path / "reports" / "empty", root=tmp_path)
    assert _nothing_written(tmp_path, before)


@pytest.mark.parametrize("url", ["sqlite:///{tmp}/missing/ferhpo.db", "sqlite:///{tmp}", "not-a-url", "nosuchdb://x/y"])
def test_a_storage_that_cannot_be_opened_is_an_error_and_writes_nothing(tmp_path, url):
    url = url.format(tmp=tmp_path)
    before = set(tmp_path.rglob("*"))
    with pytest.raises(StoreError, match="storage"):
        build_report("search", storage=url, out=tmp_path / "reports" / "search", root=tmp_path)
    assert _nothing_written(tmp_path, before)  # the SQLite file is not created either


def test_bad_arguments(built, tmp_path):
    with pytest.raises(ConfigError, match="unknown report format 'pdf'.*md, html, csv, json"):
        build_report("search", storage=built["url"], out=tmp_path / "o", formats="md,pdf")
    with pytest.raises(ConfigError, match="--top"):
        build_report("search", storage=built["url"], out=tmp_path / "o", top=0)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FerhpoError, match="not an earlier report"):
        build_report("search", storage=built["url"], out=tmp_path / "mine", root=built["root"])
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    assert not (tmp_path / "o").exists()


def test_the_report_never_loads_keras(built, tmp_path):
    code = (
        "import sys; from pathlib import Path; from ferhpo.report import build_report; "
        f"build_report('search', storage={built['url']!r}, out={str(tmp_path / 'k')!r}, root=Path({str(built['root'])!r})); "
        "bad = sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules); "
        "assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- a real browser


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_html_renders_offline_in_headless_chromium(built, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium binary found (install it: apt-get install -y chromium)")
    page = (built["out"] / "report.html").resolve()
    flags = [
        browser,
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-extensions",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    sources = re.findall(r"<img [^>]*src=\"([^\"]+)\"", dom.stdout)
    assert len(sources) == len(FIGURES)
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    assert "Report: study" in dom.stdout and "0.6934" in dom.stdout
    shot = tmp_path / "report-screenshot.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1400,2400", page.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    print(f"screenshot of the report: {shot}")


def test_trials_are_tested_only_against_a_baseline_of_their_budget_and_protocol(tmp_path):
    """A study at one budget whose baseline study holds only other budgets or protocols gets
    no paired test, and the report says why, instead of a verdict against the wrong bar."""
    root, url = tmp_path / "studies", f"sqlite:///{tmp_path}/s.db"
    base = store.open_study("baseline", url)
    store.add_record(
        base,
        make_record(root, "baseline", "resnet-cpu-reference", kind="baseline", right=BASELINE_RIGHT, budget="smoke", epochs=3),
    )
    store.add_record(
        base,
        make_record(
            root,
            "baseline",
            "resnet-cpu-reference",
            kind="baseline",
            right=BASELINE_RIGHT,
            budget="cpu",
            epochs=3,
            protocol="seed-resnet",
            seed=1,
        ),
    )
    study = store.open_study("cpu-search", url)
    store.add_record(
        study,
        make_record(
            root, "cpu-search", "trial-0", right=right_with(extra_right=60), val=0.7, budget="cpu", hyper={"growth_rate": 24}
        ),
    )
    result = build_report("cpu-search", storage=url, out=tmp_path / "out", root=root)
    rows = json.loads((tmp_path / "out" / "trials.json").read_text())["rows"]
    trial = row(rows, "trial-0")
    assert trial["verdict"] == "n/a" and trial["diff_baseline_pts"] is None and trial["baseline_run"] is None
    summary = " ".join(result.summary)
    assert "No paired test against a reproduced baseline" in summary
    assert "smoke (3 epochs) / holdout" in summary and "cpu (3 epochs) / seed-resnet" in summary
    assert "--budget cpu --protocol holdout" in summary

    # with a reference run at the same budget and protocol, that one is the bar
    store.add_record(
        base,
        make_record(
            root, "baseline", "resnet-cpu-reference", kind="baseline", right=BASELINE_RIGHT, budget="cpu", epochs=3, seed=2
        ),
    )
    result = build_report("cpu-search", storage=url, out=tmp_path / "out2", root=root)
    trial = row(json.loads((tmp_path / "out2" / "trials.json").read_text())["rows"], "trial-0")
    assert trial["verdict"] == "beats" and trial["diff_baseline_pts"] == pytest.approx(15.0)


def test_time_breakdown_share_of_the_study_wall_time(built):
    """Training share = training seconds / (span x workers): idle workers count against it."""
    t = json.loads((built["out"] / "trials.json").read_text())["compute"]["time"]
    # trials 0, 1, 2, 5: 3 epochs (300 s training, 320 s wall); trial 3 pruned after 1 (100 s, 120 s)
    assert t["runs"] == 5 and t["workers"] == 2
    assert t["span_seconds"] == pytest.approx(960.0) and t["run_wall_seconds"] == pytest.approx(1400.0)
    assert t["phases"]["train"] == pytest.approx(1300.0) and t["idle_seconds"] == pytest.approx(520.0)
    assert t["train_share"] == pytest.approx(1300.0 / 1920.0)
    assert t["train_share_of_runs"] == pytest.approx(1300.0 / 1400.0)
    summary = " ".join(built["result"].summary)
    assert "training steps took 67.7% of the study's wall time" in summary and "workers idle 27.1%" in summary


def test_a_modified_preset_is_not_shown_as_the_reported_model(tmp_path):
    """A baseline run made with --set carries its changes in its name and no reported
    accuracy: the report lists it apart, not beside the preset's reported number."""
    root, url = tmp_path / "studies", f"sqlite:///{tmp_path}/s.db"
    base = store.open_study("baseline", url)
    store.add_record(
        base,
        make_record(
            root,
            "baseline",
            "resnet-v1-104",
            kind="baseline",
            family="resnet",
            right=BASELINE_RIGHT,
            reported=0.6652,
            model={"family": "resnet", "depth": 104},
        ),
    )
    store.add_record(
        base,
        make_record(
            root,
            "baseline",
            "resnet-v1-104+depth=20",
            kind="baseline",
            family="resnet",
            right=right_with(extra_wrong=10),
            model={"family": "resnet", "depth": 20},
        ),
    )
    build_report("baseline", storage=url, out=tmp_path / "out", root=root)
    rows = json.loads((tmp_path / "out" / "trials.json").read_text())["rows"]
    block = [(r["run"], r["kind"]) for r in rows if r["rank"] is None]
    reported_at = block.index(("resnet-v1-104", "reported"))
    assert block[reported_at + 1] != ("resnet-v1-104+depth=20", "baseline")
    modified = row(rows, "resnet-v1-104+depth=20")
    assert "reproduced" not in (modified["note"] or "")
    assert "reproduced resnet-v1-104" in row(rows, "resnet-v1-104", "baseline")["note"]
    md = (tmp_path / "out" / "report.md").read_text()
    assert "resnet-v1-104+depth=20" in md
