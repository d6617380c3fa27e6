"""A search rides out its database going away, against the throw-away
PostgreSQL server of .ci/run, which these tests stop and start again.

FERHPO_TEST_POSTGRES is the server's URL and FERHPO_TEST_POSTGRES_CTL a script that
stops and starts it (.ci/postgres.sh writes both); without them the tests are skipped.
Each test runs the real `ferhpo search` on the tiny space (tests/spaces/tiny.toml, as the
`workdir` fixture copies it) at the smoke budget, with a few epochs per trial so that
trials are training when the server goes; heartbeats every 2 s (grace 6 s) keep the
waits short.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import optuna
import pytest

from conftest import finish, run_cli, start_cli, wait_for
from ferhpo import store

ENV = {"FERHPO_HEARTBEAT": "2"}
pytestmark = pytest.mark.postgres


@pytest.fixture
def server() -> tuple[str, str]:
    url, ctl = os.environ.get("FERHPO_TEST_POSTGRES"), os.environ.get("FERHPO_TEST_POSTGRES_CTL")
    if not url or not ctl:
        pytest.skip(
            "no PostgreSQL server to stop and start: set FERHPO_TEST_POSTGRES and FERHPO_TEST_POSTGRES_CTL (.ci/run does)"
        )
    yield url, ctl
    subprocess.run([ctl, "start"], capture_output=True, cwd="/")  # whatever happened, the server is back for the next test


def args(data: Path, url: str, study: str, *extra: str) -> list[str]:
    return ["search", "--space", "tiny.toml", "--data", str(data), "--budget", "smoke", "--max-epochs", "8",
            "--pruner", "none", "--storage", url, "--study", study, *extra]  # fmt: skip


def training(url: str, study: str) -> bool:
    try:
        trials = optuna.load_study(study_name=study, storage=url).get_trials()
    except Exception:
        return False
    return any(t.state == optuna.trial.TrialState.RUNNING and len(t.intermediate_values) >= 2 for t in trials)


def check_study(url: str, study_name: str, trials: int, workdir: Path) -> None:
    """Exactly `trials` counted, none duplicated or lost, nothing left running."""
    study = optuna.load_study(study_name=study_name, storage=url)
    all_trials = study.get_trials()
    counted = [t for t in all_trials if store.counted(t)]
    assert len(counted) == trials, [(t.number, t.state.name, sorted(t.user_attrs)) for t in all_trials]
    assert {t.state for t in counted} == {optuna.trial.TrialState.COMPLETE}
    left = [t.number for t in all_trials if t.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)]
    assert left == []
    records = store.records(study)
    assert sorted(r.run for r in records) == sorted(f"trial-{t.number}" for t in counted)
    for t in counted:  # each trial's whole curve reached the study, even epochs trained during the outage
        assert sorted(t.intermediate_values) == list(range(1, 9))
    for log in (workdir / "studies" / study_name).glob("worker-*.log"):
        assert "Traceback" not in log.read_text(errors="replace"), log


@pytest.mark.parametrize("outage", [20, 60])
def test_a_two_worker_search_rides_out_a_database_restart(outage, server, small_data, workdir):
    url, ctl = server
    name = f"outage-{uuid.uuid4().hex[:8]}"
    proc = start_cli(*args(small_data, url, name, "--trials", "4", "--workers", "2"), cwd=workdir, env=ENV)
    try:
        wait_for(lambda: training(url, name))
        subprocess.run([ctl, "stop"], check=True, cwd="/")
        time.sleep(outage)
        subprocess.run([ctl, "start"], check=True, cwd="/")
    finally:
        out, err = finish(proc)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and err.strip() == "", err
    assert "STORAGE UNREACHABLE since" in out  # the live line said so
    check_study(url, name, 4, workdir)


def test_a_database_gone_for_good_stops_the_search_with_one_line_and_a_rerun_finishes(server, small_data, workdir):
    url, ctl = server
    name = f"gone-{uuid.uuid4().hex[:8]}"
    argv = args(small_data, url, name, "--trials", "3", "--storage-retry", "8")
    proc = start_cli(*argv, cwd=workdir, env=ENV)
    try:
        wait_for(lambda: training(url, name))
        subprocess.run([ctl, "stop"], check=True, cwd="/")
        stopped = time.time()
        out, err = finish(proc, timeout=120)
        waited = time.time() - stopped
    finally:
        subprocess.run([ctl, "start"], check=True, cwd="/")
    assert proc.returncode == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"ferhpo: error: storage {url} unreachable since "), lines[0]
    assert "gave up after the 8 s retry window" in lines[0] and "rerun the same command" in lines[0]
    assert waited < 8 + 60  # the window, plus the rest of the trial that was training
    # The trial that was training finished during the outage (its few epochs take less
    # than the window): its record waited on disk, and the rerun enters it.
    kept = re.search(r"trial (\d+) finished and its record is kept in (\S+)/record.json", lines[0])
    assert kept, lines[0]

    again = run_cli(*argv, cwd=workdir, env=ENV)
    assert again.returncode == 0, again.stderr
    assert f"search: entered 1 trial(s) that finished while the storage was away: trial {kept[1]}" in again.stdout
    assert (workdir / kept[2] / "record.json").is_file()
    check_study(url, name, 3, workdir)


# --------------------------------------------------------------------------- the retry itself, no server


@pytest.fixture
def fresh_outage(monkeypatch):
    from ferhpo import outage

    monkeypatch.setattr(outage, "OUTAGE", outage.Outage())
    return outage


def _refused():
    import sqlalchemy.exc

    raise optuna.exceptions.StorageInternalError("commit failed") from sqlalchemy.exc.OperationalError(
        "SELECT 1", {}, ConnectionRefusedError("connection refused")
    )


def test_a_call_is_retried_until_the_storage_answers(fresh_outage):
    attempts = []

    def flaky():
        attempts.append(time.time())
        if len(attempts) < 3:
            _refused()
        return "answer"

    assert fresh_outage.call(flaky, "postgresql://u@h/db", 60) == "answer"
    assert len(attempts) == 3
    assert fresh_outage.OUTAGE.since is None and fresh_outage.OUTAGE.recently_recovered(5)


def test_past_the_window_a_call_gives_up_with_one_line_naming_the_storage(fresh_outage):
    attempts = []

    def down():
        attempts.append(time.time())
        _refused()

    with pytest.raises(fresh_outage.StorageUnavailable, match=r"^storage postgresql://u:\*\*\*@h/db unreachable since "
                       r"\d\d:\d\d:\d\d \(connection refused\); gave up after the 1 s retry window$"):  # fmt: skip
        fresh_outage.call(down, "postgresql://u:secret@h/db", 1)
    assert len(attempts) >= 2 and attempts[-1] - attempts[0] >= 1
    assert fresh_outage.StorageUnavailable.exit_code == 1


def test_errors_that_are_not_outages_are_not_retried(fresh_outage):
    import sqlalchemy.exc

    attempts = []

    def bad():
        attempts.append(1)
        raise sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate key"))

    with pytest.raises(sqlalchemy.exc.IntegrityError):
        fresh_outage.call(bad, "postgresql://u@h/db", 60)
    assert attempts == [1] and fresh_outage.OUTAGE.since is None


@pytest.mark.filterwarnings("ignore")  # Optuna: heartbeats are experimental, and meant for optimize()
def test_no_trial_is_taken_for_dead_right_after_an_outage(fresh_outage, tmp_path, monkeypatch):
    from ferhpo import store
    from ferhpo.engines.optuna_engine import fail_silent_trials

    monkeypatch.setattr(store, "silent_after", lambda: 1.0)
    storage = fresh_outage.RetryingRDBStorage(f"sqlite:///{tmp_path}/s.db", retry_window=5, heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    silent = study.ask()  # its first heartbeat may have been held up by the outage
    time.sleep(2.5)  # the heartbeat is stale now, and the silent trial old enough
    fresh_outage.OUTAGE.failed("refused")
    fresh_outage.OUTAGE.answered()  # ... but the storage was away just now
    assert storage._get_stale_trial_ids(study._study_id) == []
    assert fail_silent_trials(study) == []
    fresh_outage.OUTAGE.recovered_at -= 60
    assert storage._get_stale_trial_ids(study._study_id) == [trial._trial_id]
    assert fail_silent_trials(study) == [silent.number]
