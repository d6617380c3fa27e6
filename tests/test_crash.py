"""Crash survival: SIGKILL a search again and again, rerun it, and check nothing was lost.

Ten kills per run, seeded (`FERHPO_KILL_SEED`, default 0) so a failure reproduces: each
of the worst moments at least once through `ferhpo.faults` (between writing a file and
renaming it, right after a storage write, between storing a record and ending the
trial), the rest at random times, of the worker alone or of the whole command. After
each kill: every file parses, no finished trial is lost or duplicated. At the end one
more run finishes the study: exactly the requested trials, each killed trial retried.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import optuna
import pytest

from conftest import TINY_SPACE, ferhpo_command, smoke_search
from ferhpo import store
from test_search import load

KILLS = 10
TRIALS = 6
SEED = int(os.environ.get("FERHPO_KILL_SEED", "0"))
FAULTS = ("atomic-write:1", "atomic-write:3", "trial-reported:1", "worker-before-tell:1")


def _plan(rng: np.random.Generator) -> list[tuple]:
    plan = [("fault", name) for name in FAULTS]
    while len(plan) < KILLS:
        plan.append(("timer", float(rng.uniform(2.0, 14.0)), str(rng.choice(["worker", "command"]))))
    order = rng.permutation(len(plan))
    return [plan[i] for i in order]


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _check_files(folder: Path) -> None:
    """Every result file is whole: what a killed write leaves is a hidden temporary file."""
    for path in folder.rglob("*"):
        if not path.is_file() or path.name.startswith(".tmp-") or path.suffix in (".log", ".db"):
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".npz":
            with np.load(path) as arrays:
                assert set(arrays.files) == {"files", "labels", "predictions"}
        elif path.suffix == ".h5":
            with h5py.File(path, "r"):
                pass
        elif path.suffix == ".png":
            from PIL import Image

            with Image.open(path) as image:
                image.verify()


def _complete(study) -> dict[str, str]:
    """Finished trials: run name -> run id, checking no name appears twice."""
    done = store.records(study, states=("complete", "pruned"))
    names = [r.run for r in done]
    assert len(names) == len(set(names)), names
    return {r.run: r.run_id for r in done}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kills and /proc are Linux-specific")
def test_a_search_survives_ten_kills(tmp_path):
    from conftest import finish, start_cli, tiny_items, write_folder

    data = write_folder(tmp_path / "fer", tiny_items(per_class=10))
    (tmp_path / "tiny.toml").write_text(TINY_SPACE)
    args = ferhpo_command(
        *smoke_search("tiny.toml", data, "--max-epochs", "2", "--trials", str(TRIALS), "--study", "crash", "--seed", "1")
    )
    rng = np.random.default_rng(SEED)
    kills, finished = 0, {}
    for step, action in enumerate(_plan(rng)):
        env = {**os.environ, "FERHPO_HEARTBEAT": "1"}
        if action[0] == "fault":
            env["FERHPO_FAULT"] = action[1]
        log = open(tmp_path / f"run-{step}.log", "w")
        proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            if action[0] == "fault":
                code = proc.wait(timeout=240)
                killed = code == 1  # the command saw its worker die
            else:
                deadline = time.time() + action[1]
                while time.time() < deadline and proc.poll() is None:
                    time.sleep(0.1)
                killed = proc.poll() is None
                if killed and action[2] == "worker":
                    for worker in _children(proc.pid):
                        os.kill(worker, signal.SIGKILL)
                    proc.wait(timeout=60)
                elif killed:
                    os.killpg(proc.pid, signal.SIGKILL)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # nothing of this run lives on
            except ProcessLookupError:
                pass
            proc.wait()
            log.close()
        kills += killed
        if not (tmp_path / "studies" / "ferhpo.db").exists():
            continue
        _check_files(tmp_path / "studies")
        now = _complete(load(tmp_path, "crash"))
        assert {k: now[k] for k in finished} == finished, f"after kill {step} ({action}) a finished trial changed"
        finished = now
    assert kills >= KILLS - 2, f"only {kills} of {KILLS} runs were killed mid-way (seed {SEED})"

    proc = start_cli(*args[3:], cwd=tmp_path, env={"FERHPO_HEARTBEAT": "1"})
    out, err = finish(proc, timeout=420, logs=tmp_path / "studies")
    assert proc.returncode == 0, out + err
    _check_files(tmp_path / "studies")
    study = load(tmp_path, "crash")
    assert len([t for t in study.get_trials() if store.counted(t)]) == TRIALS
    final = _complete(study)
    assert {k: final[k] for k in finished} == finished
    trials = study.get_trials()
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in trials)
    died = [
        t
        for t in trials
        if t.state == optuna.trial.TrialState.FAIL
        and not store.counted(t)
        and not t.user_attrs.get(store.SURPLUS_ATTR)
        and not t.user_attrs.get(store.INTERRUPTED_ATTR)
    ]
    assert died, "no trial was killed while running"
    retries = [t for t in trials if "failed_trial" in t.system_attrs]
    assert len(retries) == len(died)  # each killed trial ran again, once
    for t in died:  # with the same parameters (Optuna names the first trial of a chain)
        root = t.system_attrs.get("failed_trial", t.number)
        again = [r for r in retries if r.system_attrs["failed_trial"] == root and r.number > t.number]
        assert again and again[0].params == t.params, t.number


def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_retried(tmp_path, monkeypatch):
    """A worker killed between creating its trial and the first heartbeat (the sampler
    draws in between) leaves a running trial that Optuna's stale check never sees; the
    next run must fail and retry it instead of waiting for it forever."""
    from conftest import finish, start_cli, tiny_items, write_folder

    data = write_folder(tmp_path / "fer", tiny_items(per_class=4))
    (tmp_path / "tiny.toml").write_text(TINY_SPACE)
    monkeypatch.setenv("FERHPO_HEARTBEAT", "1")

    def search(trials: int) -> None:
        proc = start_cli("search", "--space", "tiny.toml", "--data", str(data), "--budget", "smoke", "--max-epochs", "1",
                         "--trials", str(trials), "--study", "silent", "--seed", "3", cwd=tmp_path)  # fmt: skip
        out, err = finish(proc, logs=tmp_path / "studies")
        assert proc.returncode == 0, out + err

    search(1)
    study = load(tmp_path, "silent")
    silent = study.ask()  # RUNNING, with no heartbeat ever: what such a killed worker leaves
    search(2)

    trials = load(tmp_path, "silent").get_trials()
    assert trials[silent.number].state == optuna.trial.TrialState.FAIL
    assert [t.system_attrs.get("failed_trial") for t in trials if t.number > silent.number] == [silent.number]
    assert len([t for t in trials if store.counted(t)]) == 2
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in trials)
    started, ended = trials[silent.number].datetime_start, trials[silent.number].datetime_complete
    assert (ended - started).total_seconds() >= store.silent_after()  # not a moment earlier
