"""Progress and `ferhpo status` on a constructed study (no training, no keras).

The study is written the way the engine writes a running search: a finished trial, a
running trial whose process stored its progress (`ferhpo.progress`) and sends
heartbeats, and a running trial whose worker died (its last heartbeat two minutes
old). The estimates are checked against the measured epoch times they come from.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time

import optuna
import pytest
import sqlalchemy

from ferhpo import store
from ferhpo.cli import main
from ferhpo.progress import PROGRESS_ATTR, WANTED_ATTR, RunProgress, clock, study_seconds_left
from ferhpo.status import render, snapshot, study_status
from ferhpo.store import SETTINGS_ATTR

T0 = 1_000_000.0


# --------------------------------------------------------------------------- the estimate itself


def test_two_of_five_epochs_at_a_minute_leave_three_minutes():
    p = RunProgress(epochs=5)
    for epoch in range(2):
        p.begin_epoch(now=T0 + 60 * epoch)
        p.end_epoch(0.3 + epoch / 10, now=T0 + 60 * (epoch + 1))
    assert p.epoch == 2 and p.epoch_seconds == [60.0, 60.0]
    assert p.seconds_left(now=T0 + 120) == pytest.approx(180.0)


def test_the_first_epoch_tracing_is_left_out_once_later_epochs_exist():
    p = RunProgress(epochs=4, epoch=2, epoch_seconds=[100.0, 40.0])
    assert p.seconds_per_epoch() == pytest.approx(40.0)
    assert p.seconds_left() == pytest.approx(80.0)
    # the kept times no longer hold the first epoch: every one of them counts
    p = RunProgress(epochs=30, epoch=20, epoch_seconds=[50.0] * 5 + [70.0] * 5)
    assert p.seconds_per_epoch() == pytest.approx(60.0)


def test_inside_the_first_epoch_the_rate_of_its_batches_estimates_it():
    p = RunProgress(epochs=5)
    p.begin_epoch(now=T0)
    p.end_batch(25, 100)
    assert p.seconds_per_epoch(now=T0 + 30) == pytest.approx(120.0)
    assert p.seconds_left(now=T0 + 30) == pytest.approx(4.75 * 120.0)
    # a first batch that traced the graphs for 20 s does not count towards the rate
    p = RunProgress(epochs=5)
    p.begin_epoch(now=T0)
    p.end_batch(1, 100, now=T0 + 20)
    p.end_batch(11, 100, now=T0 + 30)
    assert p.seconds_per_epoch(now=T0 + 30) == pytest.approx(100.0)
    assert RunProgress(epochs=5).seconds_left() is None  # nothing measured: no guess


def test_study_estimate_shares_the_work_among_workers():
    assert study_seconds_left([180.0], 2, 600.0, 1) == pytest.approx(1380.0)
    assert study_seconds_left([180.0, 60.0], 2, 600.0, 2) == pytest.approx(720.0)
    assert study_seconds_left([180.0], 1, None, 1) is None
    assert clock(3 * 86_400 + 4 * 3600 + 5 * 60 + 6) == "3d 4:05:06"


# --------------------------------------------------------------------------- a running study


def _frozen(number, state, *, start, end=None, value=None, attrs=None):
    return optuna.trial.FrozenTrial(
        number=number,
        state=state,
        value=value,
        datetime_start=start,
        datetime_complete=end,
        params={},
        distributions={},
        user_attrs=attrs or {},
        system_attrs={},
        intermediate_values={},
        trial_id=number,
    )


def make_running_study(url: str, name: str = "watched"):
    """wanted 4; trial 0 complete in 600 s; trial 1 at epoch 2/5 (60 s each, live heartbeat);
    trial 2 running with a heartbeat 120 s old (its worker died)."""
    storage = store.open_storage(url)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.set_user_attr(SETTINGS_ATTR, {"objectives": ["val_accuracy"]})
    study.set_user_attr(WANTED_ATTR, 4)
    now = dt.datetime.now()
    running = optuna.trial.TrialState.RUNNING
    study.add_trial(
        _frozen(
            0,
            optuna.trial.TrialState.COMPLETE,
            start=now - dt.timedelta(seconds=900),
            end=now - dt.timedelta(seconds=300),
            value=0.55,
            attrs={"run": "trial-0", "kind": "trial"},
        )
    )
    progress = RunProgress(epochs=5, epoch=2, value=0.4321, epoch_seconds=[60.0, 60.0], updated=time.time())
    study.add_trial(_frozen(1, running, start=now - dt.timedelta(seconds=130), attrs={PROGRESS_ATTR: progress.to_dict()}))
    study.add_trial(_frozen(2, running, start=now - dt.timedelta(seconds=400)))
    ids = {t.number: t._trial_id for t in study.get_trials()}
    storage.record_heartbeat(ids[1])
    storage.record_heartbeat(ids[2])
    with storage.engine.begin() as connection:
        connection.execute(
            sqlalchemy.text("UPDATE trial_heartbeats SET heartbeat = datetime('now', '-120 seconds') WHERE trial_id = :t"),
            {"t": ids[2]},
        )
    return study


@pytest.fixture
def running_study(tmp_path, monkeypatch):
    monkeypatch.delenv("FERHPO_HEARTBEAT", raising=False)
    monkeypatch.delenv("FERHPO_STORAGE", raising=False)
    url = f"sqlite:///{tmp_path}/studies.db"
    make_running_study(url)
    return url


def test_snapshot_of_a_running_study(running_study):
    s = study_status("watched", running_study)
    assert s.kind == "search" and s.wanted == 4
    assert s.counts["done"] == 1 and s.counts["running"] == 2
    assert s.best == pytest.approx(0.55) and s.best_run == "trial-0"
    live, dead = sorted(s.running, key=lambda r: r.number)
    assert (live.epoch, live.epochs, live.value) == (2, 5, pytest.approx(0.4321))
    assert live.seconds_left == pytest.approx(180.0)
    assert live.elapsed == pytest.approx(130.0, abs=30)
    assert not live.stale and live.heartbeat_age < 30
    assert dead.stale and dead.heartbeat_age == pytest.approx(120.0, abs=30)
    assert dead.epoch is None and dead.seconds_left is None
    # the live trial's 180 s, then 2 trials to start at the finished trial's 600 s, one live worker
    assert s.trial_seconds == pytest.approx(600.0, abs=1)
    assert s.seconds_left == pytest.approx(180.0 + 2 * 600.0, abs=2)


def test_render_shows_progress_and_the_stale_worker(running_study):
    lines = render(study_status("watched", running_study))
    text = "\n".join(lines)
    assert "trials 1/4: complete 1, pruned 0, failed 0; running 2" in text
    assert "best val_accuracy 0.5500 (trial-0)" in text
    trial1 = next(line for line in lines if "trial 1:" in line)
    assert "epoch 2/5" in trial1 and "0.4321" in trial1 and "left ~0:03:00" in trial1 and "STALE" not in trial1
    trial2 = next(line for line in lines if "trial 2:" in line)
    assert "STALE" in trial2 and "starting" in trial2
    assert "time left: ~0:23:00" in text


def test_status_command_lists_and_details_without_keras(running_study, tmp_path):
    extra = make_running_study(running_study, "second")
    extra.add_trial(_frozen(3, optuna.trial.TrialState.PRUNED, start=dt.datetime.now(), end=dt.datetime.now()))
    code = (
        "import sys, json; from ferhpo.cli import main; "
        f"a = main(['status', '--storage', {running_study!r}]); "
        f"b = main(['status', '--storage', {running_study!r}, '--study', 'watched', '--json']); "
        "print('KERAS' if 'keras' in sys.modules else 'NO-KERAS', a, b)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == "NO-KERAS 0 0"
    table = [line.split() for line in lines if line.startswith(("second", "watched"))]
    assert [row[:3] for row in table] == [["second", "search", "2/4"], ["watched", "search", "1/4"]]
    detail = json.loads("\n".join(lines[lines.index("{") : -1]))
    assert detail["study"] == "watched" and detail["seconds_left"] == pytest.approx(1380.0, abs=2)
    assert {r["number"]: r["stale"] for r in detail["running"]} == {1: False, 2: True}


def test_status_bad_inputs_one_line_exit_2_nothing_written(running_study, tmp_path, capsys):
    assert main(["status", "--storage", running_study, "--study", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no study 'nope'" in err[0] and "watched" in err[0]
    missing = tmp_path / "absent" / "none.db"
    assert main(["status", "--storage", f"sqlite:///{missing}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no storage at" in err[0]
    assert not missing.exists() and not missing.parent.exists()
    assert main(["status", "--storage", "not-a-url"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_snapshot_counts_a_worker_slot_per_live_trial(tmp_path):
    """Before any trial finished, a pending trial's length is the running trial's projection."""
    storage = store.open_storage(f"sqlite:///{tmp_path}/s.db")
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.set_user_attr(WANTED_ATTR, 2)
    now = time.time()
    p = RunProgress(epochs=5, epoch=2, epoch_seconds=[60.0, 60.0])
    study.add_trial(
        _frozen(
            0, optuna.trial.TrialState.RUNNING, start=dt.datetime.fromtimestamp(now - 120), attrs={PROGRESS_ATTR: p.to_dict()}
        )
    )
    s = snapshot(study, now=now)
    assert s.trial_seconds == pytest.approx(300.0, abs=1)  # 120 s elapsed + 180 s left
    assert s.seconds_left == pytest.approx(180.0 + 300.0, abs=1)


def test_a_running_trial_without_progress_shows_the_epochs_it_reported(tmp_path):
    """A running trial may carry no progress attribute; the values it reported to the
    pruner still say how far it is."""
    storage = store.open_storage(f"sqlite:///{tmp_path}/s.db")
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.set_user_attr(SETTINGS_ATTR, {"objectives": ["val_accuracy"], "max_epochs": 3})
    trial = optuna.trial.FrozenTrial(
        number=0,
        state=optuna.trial.TrialState.RUNNING,
        value=None,
        datetime_start=dt.datetime.now(),
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={},
        system_attrs={},
        intermediate_values={1: 0.31, 2: 0.42},
        trial_id=0,
    )
    study.add_trial(trial)
    (running,) = snapshot(study).running
    assert (running.epoch, running.epochs, running.value) == (2, 3, pytest.approx(0.42))
