"""Promotion across budgets (`ferhpo search --rungs`, `ferhpo.engines.rungs`).

The rules against hand-built trials first; then the real command on the tiny space at
the smoke budget: rung membership and promotion counts, each rung's schedule over its
own epochs, a resume in the middle of a rung, and two workers one of which is killed
while it trains a promotion.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
from pathlib import Path

import optuna
import pytest

from conftest import TINY_SPACE, default_sigint, ferhpo_command, finish, run_cli, smoke_search, start_cli, wait_for
from ferhpo import store
from ferhpo.engines import rungs
from ferhpo.errors import ConfigError

COMPLETE, FAIL, RUNNING, WAITING = (optuna.trial.TrialState[s] for s in ("COMPLETE", "FAIL", "RUNNING", "WAITING"))

# The tiny space with the cosine schedule only: each run's rate curve shows its epochs.
COSINE_SPACE = TINY_SPACE.replace('choices = ["reference-step", "cosine"]', 'choices = ["cosine"]').replace(
    'default = "reference-step"', 'default = "cosine"'
)


def frozen(number, value=None, *, rung=0, config=None, state=COMPLETE, error=False, surplus=False, params=None):
    attrs = {rungs.RUNG_ATTR: rung} if rung else {}
    if config is not None:
        attrs[rungs.CONFIG_ATTR] = config
    if error:
        attrs[store.ERROR_ATTR] = "diverged"
    if surplus:
        attrs[store.SURPLUS_ATTR] = True
    return optuna.trial.FrozenTrial(
        number=number, trial_id=number, state=state, value=value, datetime_start=None, datetime_complete=None,
        params=params or {}, distributions={}, user_attrs=attrs, system_attrs={}, intermediate_values={},
    )  # fmt: skip


# --------------------------------------------------------------------------- the rules


@pytest.mark.parametrize("text", ["3", "9,3", "3,3", "0,3", "3,x", "", "3,,9"])
def test_bad_rungs_are_refused_with_the_expected_form(text):
    with pytest.raises(ConfigError, match=r"--rungs must be .*e\.g\. 3,9,27.*but got"):
        rungs.parse_rungs(text)


def test_rungs_parse_and_the_runs_per_rung_follow_the_reduction():
    assert rungs.parse_rungs(" 3, 9,27") == (3, 9, 27)
    assert rungs.runs_per_rung(9, (3, 9, 27), 3) == [9, 3, 1]
    assert rungs.runs_per_rung(10, (3, 9, 27), 3) == [10, 3, 1]
    assert rungs.runs_per_rung(8, (1, 2, 4, 8), 2) == [8, 4, 2, 1]
    with pytest.raises(ConfigError, match="--reduction must be >= 2"):
        rungs.check_reduction(1)


def test_the_best_third_of_a_rung_is_promoted_the_highest_rung_first():
    # rung 0: six runs; the best two (by validation) earn rung 1
    trials = [frozen(n, v) for n, v in enumerate([0.30, 0.50, 0.20, 0.50, 0.40, 0.10])]
    assert [t.number for t in rungs.promotable(trials, 0, 3)] == [1, 3]  # a tie: the earlier run first
    t, rung = rungs.next_promotion(trials, (1, 3, 9), 3)
    assert (t.number, rung) == (1, 1)
    # trial-1 promoted (now running): trial-3 is next
    trials.append(frozen(6, rung=1, config=1, state=RUNNING))
    t, rung = rungs.next_promotion(trials, (1, 3, 9), 3)
    assert (t.number, rung) == (3, 1)
    trials.append(frozen(7, 0.60, rung=1, config=3))
    trials[6] = frozen(6, 0.55, rung=1, config=1)
    assert rungs.next_promotion(trials, (1, 3, 9), 3) is None  # 2 runs at rung 1: 2 // 3 = 0 promoted
    # a third rung-1 run: its best (trial 7, configuration 3) goes to rung 2 before any rung-0 promotion
    trials += [frozen(8, 0.35), frozen(9, 0.45), frozen(10, 0.50, rung=1, config=4)]
    t, rung = rungs.next_promotion(trials, (1, 3, 9), 3)
    assert (t.number, rungs.config_of(t), rung) == (7, 3, 2)
    # failed and running runs are no candidates, and do not count in n
    others = [frozen(0, 0.9), frozen(1, state=RUNNING), frozen(2, error=True, state=FAIL)]
    assert rungs.promotable(others, 0, 3) == []


def test_a_second_claim_on_a_run_is_a_duplicate_unless_the_first_is_gone():
    first = frozen(5, rung=1, config=2, state=RUNNING)
    second = frozen(6, rung=1, config=2, state=WAITING)
    assert rungs.duplicate_of([first, second], second) == 5
    assert rungs.duplicate_of([first, second], first) is None
    # the first was a killed worker's attempt (failed, not by itself): its retry runs
    killed = frozen(5, rung=1, config=2, state=FAIL)
    assert rungs.duplicate_of([killed, second], second) is None
    # a run that failed by itself holds its place: it is not promoted again
    failed = frozen(5, rung=1, config=2, state=FAIL, error=True)
    assert rungs.duplicate_of([failed, second], second) == 5
    assert rungs.next_promotion([frozen(2, 0.9), frozen(3, 0.1), frozen(4, 0.2), failed], (1, 3), 3) is None


def test_a_free_worker_promotes_then_draws_then_waits_then_stops():
    def decide(trials):
        return rungs.decide(trials, configurations=3, rungs=(1, 3), eta=3)[0]

    assert decide([]) == "new"
    assert decide([frozen(0, 0.2), frozen(1, state=RUNNING)]) == "new"
    assert decide([frozen(0, 0.2), frozen(1, state=RUNNING), frozen(2, state=RUNNING)]) == "wait"
    assert decide([frozen(0, 0.2), frozen(1, 0.3), frozen(2, 0.1)]) == "promote"
    assert decide([frozen(0, 0.2), frozen(1, 0.3), frozen(2, 0.1), frozen(3, rung=1, config=1, state=WAITING)]) == "waiting"
    assert decide([frozen(0, 0.2), frozen(1, 0.3), frozen(2, 0.1), frozen(3, 0.4, rung=1, config=1)]) == "done"
    # surplus trials hold no place
    assert decide([frozen(0, 0.2), frozen(1, 0.3), frozen(2, surplus=True, state=FAIL)]) == "new"


# --------------------------------------------------------------------------- the real command


def _study(cwd: Path, name: str, storage: str | None = None):
    return optuna.load_study(study_name=name, storage=storage or f"sqlite:///{cwd}/studies/ferhpo.db")


def _by_rung(study) -> dict[int, list]:
    out: dict[int, list] = {}
    for t in study.get_trials():
        if store.counted(t):
            out.setdefault(rungs.rung_of(t), []).append(t)
    return out


def _no_run_twice(study) -> None:
    claims = [(rungs.rung_of(t), rungs.config_of(t)) for t in study.get_trials() if store.counted(t)]
    assert len(claims) == len(set(claims)), claims


@pytest.fixture(scope="module")
def promoted(tmp_path_factory, small_data):
    """One search: 4 configurations, rungs of 1, 2 and 3 epochs, reduction 2; test
    accuracy from rung 1 up."""
    cwd = tmp_path_factory.mktemp("asha")
    (cwd / "cosine.toml").write_text(COSINE_SPACE)
    env = {k: v for k, v in os.environ.items() if k != "FERHPO_STORAGE"}
    result = subprocess.run(
        ferhpo_command(*smoke_search("cosine.toml", small_data, "--rungs", "1,2,3", "--reduction", "2", "--trials", "4",
                                     "--study", "asha", "--sampler", "random", "--test-from-rung", "1")),
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return cwd, result


def test_rungs_hold_the_configurations_the_reduction_promotes(promoted):
    cwd, result = promoted
    assert (
        "4 configurations promoted across rungs (reduction 2: 4 x 1 epochs, 2 x 2 epochs, 1 x 3 epochs); "
        "test accuracy from rung 1 up" in result.stdout
    )
    study = _study(cwd, "asha")
    by_rung = _by_rung(study)
    assert {k: len(v) for k, v in by_rung.items()} == {0: 4, 1: 2, 2: 1}
    assert all(t.state == COMPLETE for v in by_rung.values() for t in v)
    _no_run_twice(study)
    # Each promoted configuration was among the best of the rung below by validation,
    # and runs with that configuration's parameters.
    for rung in (1, 2):
        below = {rungs.config_of(t): t for t in by_rung[rung - 1]}
        up = {rungs.config_of(t) for t in by_rung[rung]}
        assert up <= set(below)
        worst_in = min(below[c].value for c in up)
        assert all(t.value <= worst_in for c, t in below.items() if c not in up)
        for t in by_rung[rung]:
            assert t.params == below[rungs.config_of(t)].params
    # each run is recorded with its rung, its configuration and its own budget; tested
    # once from rung 1 up (--test-from-rung 1), the lowest rung's runs not at all
    for record in store.records(study):
        rung = record.search["rung"]
        epochs = (1, 2, 3)[rung]
        assert record.budget["epochs"] == epochs and record.train["epochs"] == epochs and record.epochs_run == epochs
        assert record.search["config"].startswith("trial-") and record.search["rungs"] == [1, 2, 3]
        assert (record.test_accuracy is not None) == (rung >= 1), (record.run, record.test_accuracy)
        assert ("test" in record.evaluation) == (rung >= 1), record.run
    assert "the highest rung first" in result.stdout


def test_each_rung_lays_its_schedule_over_its_own_epochs(promoted):
    from ferhpo.rates import cosine_lr

    cwd, _ = promoted
    records = store.records(_study(cwd, "asha"))
    assert {r.train["schedule"] for r in records} == {"cosine"}
    for record in records:
        epochs, base = record.train["epochs"], record.train["learning_rate"]
        expected = [cosine_lr(e, epochs, base) for e in range(epochs)]
        assert record.history["lr"] == pytest.approx(expected, rel=1e-4), record.run


def test_the_report_of_a_search_across_rungs_has_its_fidelity(promoted):
    import json

    cwd, _ = promoted
    result = run_cli("report", "--study", "asha", "--out", "rep", cwd=cwd)
    assert result.returncode == 0, result.stderr
    doc = json.loads((cwd / "rep" / "trials.json").read_text())
    f = doc["fidelity"]
    assert f["rung_epochs"] == [1, 2, 3] and [len(f["rungs"][k]) for k in ("0", "1", "2")] == [4, 2, 1]
    assert [(p["lower"], p["upper"], p["n"]) for p in f["pairs"]] == [(0, 1, 2), (1, 2, 1)]
    assert doc["best"]["run"] == f["rungs"]["2"][0]["run"]  # the best run is the top rung's
    # rung 0 was not tested (--test-from-rung 1): its rows say so, and the regret of
    # choosing there needs only the upper rungs' test accuracy
    assert [r["test"] for r in f["rungs"]["0"]] == [None] * 4
    assert all(r["test"] is not None for r in f["rungs"]["1"] + f["rungs"]["2"])
    assert f["regret_lowest"] is not None and f["pairs"][0]["regret"] is not None
    # every run trained its rung's epochs in full: nothing counts as cut short
    assert doc["compute"]["epochs_used"] == doc["compute"]["epochs_without_pruning"] == 4 * 1 + 2 * 2 + 3
    assert (cwd / "rep" / "time_to_accuracy.png").is_file()
    text = (cwd / "rep" / "report.md").read_text()
    assert "## Fidelity across rungs" in text and "Regret of choosing at the lowest rung" in text


def test_an_ensemble_across_rungs_may_hold_an_untested_lower_rung_run(promoted, small_data):
    cwd, _ = promoted
    # top 4 by validation, highest rung first: the 3-, both 2- and one 1-epoch run (untested)
    result = run_cli("ensemble", "--study", "asha", "--top", "4", "--select", "greedy", "--data", str(small_data), cwd=cwd)
    assert result.returncode == 0, result.stderr
    members = [line for line in result.stdout.splitlines() if line.startswith("  trial-")]
    assert len(members) == 4 and members[-1].split(", ")[1] == "test –", result.stdout
    assert all("test 0." in line for line in members[:3]), result.stdout


def test_rungs_are_checked_before_any_work(small_data, workdir):
    for args, message in [
        (("--rungs", "3,1"), "--rungs must be at least two positive epoch counts"),
        (("--rungs", "1,3", "--pruner", "median"), "cannot be combined with --pruner median"),
        (("--rungs", "1,3", "--engine", "keras-tuner"), "--rungs needs --engine optuna"),
        (("--rungs", "1,3", "--objective", "val_accuracy,params"), "--rungs promotes by one objective"),
        (("--rungs", "1,3", "--max-epochs", "5"), "--max-epochs 5 and --rungs 1,3 disagree"),
        (("--rungs", "1,3", "--reduction", "1"), "--reduction must be >= 2"),
        (("--rungs", "1,3", "--test-from-rung", "2"), "--test-from-rung must name one of the 2 rungs"),
        (("--test-from-rung", "1"), "--test-from-rung needs --rungs"),
    ]:
        result = run_cli(*smoke_search("tiny.toml", small_data, *args), cwd=workdir)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, result.stderr)
    assert not (workdir / "studies").exists()


def test_a_resume_in_the_middle_of_a_rung_finishes_that_run(small_data, workdir):
    args = smoke_search("tiny.toml", small_data, "--rungs", "1,30", "--trials", "2", "--reduction", "2",
                        "--study", "mid", "--checkpoint-every", "1")  # fmt: skip
    proc = subprocess.Popen(
        ferhpo_command(*args), cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=default_sigint,
    )  # fmt: skip

    def promotion_trained_two_epochs():
        if proc.poll() is not None:
            return True  # it ended: the assertion below says how
        if not (workdir / "studies" / "ferhpo.db").is_file():
            return False  # opening the storage first would create it, racing the command's own creation
        running = [t for t in _study(workdir, "mid").get_trials() if t.state == RUNNING and rungs.rung_of(t) == 1]
        return running and len(running[0].intermediate_values) >= 2

    try:
        wait_for(promotion_trained_two_epochs, timeout=480, step=1.0)
        assert proc.poll() is None, proc.communicate()
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    queued = [t for t in _study(workdir, "mid").get_trials() if t.state == WAITING]
    assert len(queued) == 1 and rungs.rung_of(queued[0]) == 1
    assert rungs.config_of(queued[0]) in {t.number for t in _by_rung(_study(workdir, "mid"))[0]}

    again = run_cli(*args, cwd=workdir)
    assert again.returncode == 0, again.stderr
    study = _study(workdir, "mid")
    by_rung = _by_rung(study)
    assert {k: len(v) for k, v in by_rung.items()} == {0: 2, 1: 1}
    _no_run_twice(study)
    (top,) = [r for r in store.records(study) if r.search["rung"] == 1]
    assert top.search["config"] == f"trial-{rungs.config_of(queued[0])}"
    assert top.search.get("resumed_at_epoch", 0) >= 1 and top.epochs_run == 30


@pytest.mark.postgres
def test_two_workers_and_one_killed_during_a_promotion_promote_nothing_twice(small_data, workdir):
    """On CI's PostgreSQL server when there is one (FERHPO_TEST_POSTGRES, as several
    machines would share a study), else on SQLite."""
    import uuid

    storage = os.environ.get("FERHPO_TEST_POSTGRES") or f"sqlite:///{workdir}/studies/ferhpo.db"
    name = f"two-{uuid.uuid4().hex[:8]}"
    args = smoke_search("tiny.toml", small_data, "--rungs", "1,2,3", "--trials", "4", "--reduction", "2",
                        "--study", name, "--workers", "2", "--storage", storage)  # fmt: skip
    once = workdir / "killed-once"
    env = {"FERHPO_HEARTBEAT": "1", "FERHPO_FAULT": "promotion-reported", "FERHPO_FAULT_ONCE": str(once)}
    proc = start_cli(*args, cwd=workdir, env=env)
    out, err = finish(proc, timeout=480, logs=workdir / "studies")
    assert once.exists(), "no worker was killed during a promotion"
    # The command reports its killed worker (exit 1); the other worker retried its trial.
    assert proc.returncode in (0, 1), out + err
    study = _study(workdir, name, storage)
    killed = [
        t for t in study.get_trials() if t.state == FAIL and not store.counted(t) and not t.user_attrs.get(store.SURPLUS_ATTR)
    ]
    assert killed and all(rungs.rung_of(t) >= 1 for t in killed)
    again = run_cli(*args, cwd=workdir, env={"FERHPO_HEARTBEAT": "1"})
    assert again.returncode == 0, again.stderr
    study = _study(workdir, name, storage)
    by_rung = _by_rung(study)
    assert {k: len(v) for k, v in by_rung.items()} == {0: 4, 1: 2, 2: 1}
    _no_run_twice(study)
    for t in killed:  # the killed promotion was run again, as the same rung of the same configuration
        claim = (rungs.rung_of(t), rungs.config_of(t))
        assert any((rungs.rung_of(u), rungs.config_of(u)) == claim for u in by_rung[claim[0]])
    assert not [t for t in study.get_trials() if t.state in (RUNNING, WAITING)]
    assert math.isfinite(max(t.value for t in by_rung[2]))


# --------------------------------------------------------------------------- the report's fidelity


def _run(name, number, val, *, rung=0, config=None, test=None, start=0.0, wall=3600.0, status="complete"):
    from types import SimpleNamespace

    search = {"rung": rung, "config": config or name}
    record = SimpleNamespace(
        run=name, search=search, test_accuracy=test, best_val_accuracy=val, epochs_run=3 * 3**rung,
        phases={"started_at": start, "wall": wall},
    )  # fmt: skip
    return SimpleNamespace(record=record, number=number, objective=val, name=name, status=status)


def _study_runs():
    """Five configurations at rung 0; four of them again at rung 1 (by hand: ranks of
    validation 4,3,2,1 against 3,4,2,1, so Spearman 1 - 6 * 2 / (4 * 15) = 0.8 and
    Kendall (5 - 1) / 6 = 2/3; the rung-1 pick is trial-1's configuration (test 0.58),
    rung 0's pick among them is trial-0's (test 0.55 at rung 1): regret 3 points)."""
    rung0 = [_run(f"trial-{i}", i, v, start=i * 3600.0) for i, v in enumerate([0.50, 0.40, 0.30, 0.20, 0.10])]
    rung1 = [
        _run(f"trial-{5 + i}", 5 + i, v, rung=1, config=f"trial-{i}", test=t, start=(5 + i) * 3600.0)
        for i, (v, t) in enumerate([(0.60, 0.55), (0.70, 0.58), (0.50, 0.50), (0.40, 0.45)])
    ]
    return rung0, rung1


def test_rank_correlation_and_regret_match_the_hand_computed_values():
    from ferhpo.report.fidelity import fidelity

    rung0, rung1 = _study_runs()
    f = fidelity([*rung0, *rung1], [3, 9], seed=0)
    (pair,) = f["pairs"]
    assert (pair["lower"], pair["upper"], pair["n"]) == (0, 1, 4)
    assert pair["spearman"] == pytest.approx(0.8)
    assert pair["kendall"] == pytest.approx(2 / 3)
    for name in ("spearman", "kendall"):
        low, high = pair[f"{name}_interval"]
        assert -1.0 <= low <= pair[name] <= high <= 1.0
    r = f["regret_lowest"]
    assert (r["top_pick"], r["lower_pick"], r["lower_pick_config"]) == ("trial-6", "trial-5", "trial-0")
    assert r["regret_points"] == pytest.approx(3.0)
    assert r["lower_overall_pick_reached_top"] is True
    assert [row["run"] for row in f["rungs"][1]] == ["trial-6", "trial-5", "trial-7", "trial-8"]


def test_the_best_run_over_time_is_the_highest_rung_reached_yet():
    from ferhpo.report.fidelity import best_over_time

    rung0, rung1 = _study_runs()
    points = best_over_time([*rung0, *rung1])
    assert [p["hours"] for p in points] == [float(h) for h in range(1, 10)]
    assert [p["run"] for p in points[:5]] == ["trial-0"] * 5  # rung 0 only: its best
    assert [p["run"] for p in points[5:]] == ["trial-5", "trial-6", "trial-6", "trial-6"]
    assert points[-1]["test"] == 0.58


def test_a_study_without_rungs_has_no_fidelity_section():
    from ferhpo.report.fidelity import fidelity

    rung0, _ = _study_runs()
    assert fidelity(rung0, None) is None
