"""A search that can only fail stops early: its first trials all failed for the same
reason (`--fail-fast N`, default 3) before any completed, so every next one would too."""

from __future__ import annotations

import optuna
import pytest

from conftest import run_cli, space_text
from ferhpo import store
from ferhpo.engines.runner import fail_fast_reason

FAIL = optuna.trial.TrialState.FAIL


def trial(number: int, state=FAIL, error: str | None = None):
    attrs = {store.ERROR_ATTR: error} if error else {}
    value = 0.5 if state == optuna.trial.TrialState.COMPLETE else None
    made = optuna.trial.create_trial(state=state, user_attrs=attrs, value=value)
    made.number = number
    return made


def nan(epoch: int, folder: str) -> str:
    return f"TrainingError: training diverged: loss became nan at epoch {epoch} (batch 3); see {folder}/trial.log"


def test_the_same_reason_in_other_words_of_numbers_and_paths_stops_the_search():
    trials = [
        trial(0, error=nan(1, "/s/trial-0-ab12")),
        trial(1, error=nan(2, "/s/trial-1-cd34")),
        trial(2, error=nan(1, "/s/t-2")),
    ]
    assert fail_fast_reason(trials, 3) == trials[0].user_attrs[store.ERROR_ATTR]
    assert fail_fast_reason(trials, 2) is not None


@pytest.mark.parametrize(
    "trials, first",
    [
        ([trial(0, error="A"), trial(1, error="A")], 3),  # not yet three
        ([trial(0, error="A"), trial(1, error="B"), trial(2, error="A")], 3),  # different reasons
        ([trial(0, error="A"), trial(1, error="A"), trial(2, error="A"), trial(3, optuna.trial.TrialState.COMPLETE)], 3),
        ([trial(0, error="A"), trial(1, error="A"), trial(2, error="A"), trial(3, optuna.trial.TrialState.PRUNED)], 3),
        ([trial(0, error="A"), trial(1, error="A"), trial(2, error="A")], 0),  # --fail-fast 0
        ([trial(0), trial(1), trial(2), trial(3, error="A")], 3),  # killed workers' trials are not failures
    ],
)
def test_no_stop_without_three_alike_failures_and_nothing_else(trials, first):
    assert fail_fast_reason(trials, first) is None


def test_a_search_whose_trials_all_diverge_stops_after_three_with_exit_1(small_data, workdir):
    (workdir / "diverging.toml").write_text(space_text("diverging"))
    result = run_cli("search", "--space", "diverging.toml", "--data", str(small_data), "--budget", "smoke",
                     "--max-epochs", "2", "--trials", "8", "--study", "doomed", cwd=workdir)  # fmt: skip
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ferhpo: error: the first 3 trials all failed for the same reason, so the search stopped: ")
    assert "diverged" in last and "trial.log" in last and "Traceback" not in result.stderr
    study = optuna.load_study(study_name="doomed", storage=f"sqlite:///{workdir}/studies/ferhpo.db")
    assert len(store.failures(study)) >= 3
    assert not [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    assert len([t for t in study.get_trials() if store.counted(t)]) < 8  # it did not run on to the end
    assert not [t for t in study.get_trials() if t.state == optuna.trial.TrialState.RUNNING]  # none left running
