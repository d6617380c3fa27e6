"""Several workers sharing one study: in PostgreSQL (the README's "Running on several
machines") and in the default SQLite file.

Each test runs the real `ferhpo search --workers N` on the tiny space
(tests/spaces/tiny.toml, as the `workdir` fixture copies it) at the smoke budget, then
reads the study back from its storage: exactly the requested trials are counted,
trial numbers never repeat, every completed trial carries its full record and
artifacts, nothing is left running, and `ferhpo report` reads the study.

The PostgreSQL test needs a server: FERHPO_TEST_POSTGRES=postgresql://USER@HOST:PORT/DB
(.ci/run starts a throw-away one on 127.0.0.1 through .ci/postgres.sh); without it, the
test is skipped.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import optuna
import pytest

from conftest import run_cli
from ferhpo import store

POSTGRES_ENV = "FERHPO_TEST_POSTGRES"


@pytest.fixture
def postgres_url() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"no PostgreSQL server: set {POSTGRES_ENV}=postgresql://USER@HOST:PORT/DB (.ci/run starts one)")
    return url


def search_and_check(workdir: Path, data: Path, *, workers: int, trials: int, storage: str | None) -> None:
    """Run a search with `workers` workers on one study, then check the study and its report."""
    study_name = f"dist-{uuid.uuid4().hex[:12]}"
    storage_args = ["--storage", storage] if storage else []
    result = run_cli(
        "search", "--space", "tiny.toml", "--data", str(data), "--budget", "smoke",
        "--trials", str(trials), "--workers", str(workers), "--study", study_name, *storage_args,
        cwd=workdir,
    )  # fmt: skip
    folder = workdir / "studies" / study_name
    logs = {p.name: p.read_text(errors="replace") for p in sorted(folder.glob("worker-*.log"))}
    assert result.returncode == 0, f"{result.stderr}\n{logs}"
    assert len(logs) == workers
    for name, text in logs.items():
        assert "Traceback" not in text, f"{name}:\n{text}"

    url = storage or f"sqlite:///{workdir}/studies/ferhpo.db"
    study = optuna.load_study(study_name=study_name, storage=url)
    all_trials = study.get_trials()
    counted = [t for t in all_trials if store.counted(t)]
    assert len(counted) == trials, [(t.number, t.state.name, t.user_attrs) for t in all_trials]
    numbers = [t.number for t in all_trials]
    assert len(numbers) == len(set(numbers)), numbers
    unfinished = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
    left = [(t.number, t.state.name) for t in all_trials if t.state in unfinished]
    assert left == []
    # Tiny data, one epoch: every trial completes (a smoke budget leaves nothing to prune).
    assert store.failures(study) == []
    assert {t.state for t in counted} == {optuna.trial.TrialState.COMPLETE}

    records = {r.run: r for r in store.records(study)}
    assert len(records) == trials
    for trial in counted:
        record = records[f"trial-{trial.number}"]
        assert record.study == study_name and record.kind == "trial" and record.status == "complete"
        assert {"val", "test", "test_public", "test_private"} <= set(record.evaluation)
        assert record.evaluation["test"]["n"] > 0
        assert record.history["val_accuracy"] and record.epochs_run == 1
        assert record.hyperparameters == trial.params
        assert record.search["engine"] == "optuna"
        assert record.search["sampler"] == "tpe" and record.search["pruner"] == "hyperband"
        assert record.search["trial_number"] == trial.number
        assert record.params > 0
        assert trial.value == pytest.approx(record.best_val_accuracy)
        assert (folder / record.artifacts["record"]).is_file()
    run_ids = [r.run_id for r in records.values()]
    assert len(run_ids) == len(set(run_ids))

    report = run_cli("report", "--study", study_name, *storage_args, cwd=workdir)
    assert report.returncode == 0, report.stderr
    out = workdir / "reports" / study_name
    assert (out / "report.html").is_file()
    rows = json.loads((out / "trials.json").read_text())
    rows = rows["rows"] if isinstance(rows, dict) else rows
    assert len([r for r in rows if r["kind"] == "trial"]) == trials


@pytest.mark.postgres
def test_three_workers_on_postgresql(postgres_url, small_data, workdir):
    search_and_check(workdir, small_data, workers=3, trials=3, storage=postgres_url)


def test_two_workers_on_sqlite(small_data, workdir):
    search_and_check(workdir, small_data, workers=2, trials=4, storage=None)
