"""Preemption and full disks: SIGTERM to a search or to one of its workers, resuming a
trial from its checkpoint, and a disk that fills during a trial.

Every test runs the real `ferhpo search` on the tiny space (tests/spaces/tiny.toml, as
the `workdir` fixture copies it) at the smoke budget with many short epochs, so a
trial is caught mid-training. SIGTERM is sent to one process only, as Kubernetes does
(to the container's first process); Slurm signals every process of the job, which the
handlers take as one stop.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path

import optuna

from conftest import finish, run_cli, start_cli, wait_for
from ferhpo import store
from ferhpo.engines.optuna_engine import RESUME_ATTR

EPOCHS = "30"  # smoke epochs of ~0.3 s: time to catch a trial between checkpoints


def search_args(data: Path, study: str, *extra: str) -> list[str]:
    return ["search", "--space", "tiny.toml", "--data", str(data), "--budget", "smoke", "--max-epochs", EPOCHS,
            "--pruner", "none", "--study", study, *extra]  # fmt: skip


def load(workdir: Path, name: str):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{workdir}/studies/ferhpo.db")


def children(pid: int, marker: str) -> list[int]:
    """Processes whose parent is `pid` and whose command line contains `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and marker in cmdline:
            found.append(int(entry.name))
    return found


def training_trials(workdir: Path, study: str, epochs: int) -> list:
    return [t for t in load(workdir, study).get_trials()
            if t.state == optuna.trial.TrialState.RUNNING and len(t.intermediate_values) >= epochs]  # fmt: skip


def test_sigterm_requeues_the_trial_and_the_rerun_resumes_it_from_its_checkpoint(small_data, workdir):
    args = search_args(small_data, "p", "--trials", "1", "--checkpoint-every", "2")
    proc = start_cli(*args, cwd=workdir)

    def checkpointed_twice() -> bool:  # a file check: polling the SQLite storage competes with the trial for it
        states = list((workdir / "studies" / "p").glob(f"trial-*/{store.RESUME_DIR}/state.json"))
        return bool(states) and json.loads(states[0].read_text())["epoch"] >= 4

    try:
        wait_for(checkpointed_twice)
    except AssertionError:
        out, err = finish(proc, timeout=1)
        raise AssertionError(f"no trial checkpointed twice:\n{out}\n{err}") from None
    proc.send_signal(signal.SIGTERM)  # to the command only, as Kubernetes does
    out, err = finish(proc)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert "stopped by SIGTERM; study 'p' keeps 0 finished trial(s)" in err
    assert "retried from its last checkpoint" in err

    trials = load(workdir, "p").get_trials()
    stopped = [t for t in trials if t.user_attrs.get(store.INTERRUPTED_ATTR)]
    assert len(stopped) == 1 and not store.counted(stopped[0])
    queued = [t for t in trials if t.state == optuna.trial.TrialState.WAITING]
    assert len(queued) == 1 and queued[0].system_attrs["fixed_params"] == stopped[0].params
    old = Path(queued[0].user_attrs[RESUME_ATTR])
    checkpointed = json.loads((old / store.RESUME_DIR / "state.json").read_text())["epoch"]
    assert checkpointed >= 4 and checkpointed % 2 == 0
    assert not (old / "record.json").exists() and not (old / "best.weights.h5").exists()

    again = run_cli(*args, cwd=workdir)
    assert again.returncode == 0, again.stderr
    study = load(workdir, "p")
    done = [t for t in study.get_trials() if store.counted(t)]
    assert len(done) == 1 and done[0].params == stopped[0].params
    record = store.records(study)[0]
    assert record.search["resumed_at_epoch"] == checkpointed
    assert record.epochs_run == int(EPOCHS) and len(record.history["loss"]) == int(EPOCHS)
    assert sorted(done[0].intermediate_values) == list(range(1, int(EPOCHS) + 1))  # the whole curve
    assert not old.exists()  # the spent attempt is gone
    folder = workdir / "studies" / "p" / record.run_id
    assert not (folder / store.RESUME_DIR).exists()


def test_sigterm_to_one_worker_requeues_its_trial_for_the_others(small_data, workdir):
    # 100 epochs (about 30 s a trial, the last --max-epochs wins): with 30, one worker's
    # trial could end before the other's started under a loaded CI, and the two never overlapped
    proc = start_cli(*search_args(small_data, "w", "--trials", "2", "--workers", "2", "--max-epochs", "100"), cwd=workdir)
    wait_for(lambda: training_trials(workdir, "w", 2) and len(children(proc.pid, "optuna_engine")) == 2)
    victim = children(proc.pid, "optuna_engine")[0]
    os.kill(victim, signal.SIGTERM)
    out, err = finish(proc)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "stopped by SIGTERM" in err
    logs = "".join(p.read_text() for p in (workdir / "studies" / "w").glob("worker-*.log"))
    assert "Traceback" not in logs

    study = load(workdir, "w")
    trials = study.get_trials()
    stopped = [t for t in trials if t.user_attrs.get(store.INTERRUPTED_ATTR)]
    assert len(stopped) == 1
    done = [t for t in trials if store.counted(t)]
    assert len(done) == 2, [(t.number, t.state.name) for t in trials]
    # retried once, with the same parameters, by the worker that was left
    assert [t.params for t in done].count(stopped[0].params) == 1
    assert [t for t in trials if t.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)] == []


def _files(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_a_full_disk_fails_the_trial_with_its_reason_and_touches_nothing_else(small_data, workdir):
    args = ["search", "--space", "tiny.toml", "--data", str(small_data), "--budget", "smoke", "--study", "d"]
    first = run_cli(*args, "--trials", "1", cwd=workdir)
    assert first.returncode == 0, first.stderr
    before = _files(workdir / "studies" / "d")

    # Files may not grow past 400 kB in the trial processes: the model's weights (760 kB)
    # cannot be written, as on a full disk; the storage (SQLite, written by the trial
    # too) and the small files still fit.
    full = run_cli(*args, "--trials", "2", cwd=workdir, env={"FERHPO_FAULT_FSIZE": "400000"})
    assert full.returncode == 1, full.stderr
    lines = full.stderr.strip().splitlines()
    assert "Traceback" not in full.stderr
    assert lines[-1].startswith("ferhpo: error: trial 1 failed: disk full while writing the trial's results")
    assert "re-queued with the same parameters" in lines[-1]

    after = _files(workdir / "studies" / "d")
    earlier = {k: v for k, v in before.items() if k.startswith("trial-")}  # the first trial's files
    assert earlier and {k: after.get(k) for k in earlier} == earlier
    new = [k for k in after if k not in before]
    assert all(k.split("/")[-1] in ("spec.json", "trial.log", "failure.json") for k in new), new
    study = load(workdir, "d")
    failed = [t for t in study.get_trials() if t.user_attrs.get(store.DISK_FULL_ATTR)]
    assert len(failed) == 1 and "disk full" in failed[0].user_attrs[store.DISK_FULL_ATTR]
    assert len([t for t in study.get_trials() if store.counted(t)]) == 1

    freed = run_cli(*args, "--trials", "2", cwd=workdir)
    assert freed.returncode == 0, freed.stderr
    done = [t for t in load(workdir, "d").get_trials() if store.counted(t)]
    assert len(done) == 2 and done[1].params == failed[0].params
