"""A stop inside a scheduler's grace period: from SIGTERM to exit 143 within 10 s,
whatever the trial is doing, and a file being written is finished first.

Kubernetes' default grace period and Slurm's KillWait are 30 s. A trial whose main
thread does not return to Python (a training step, a graph's compilation) is stood in
for by `faults.busy`, which holds SIGTERM off the main thread for a minute.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna

from conftest import finish, start_cli, wait_for
from ferhpo import store

LIMIT = 10.0  # seconds from SIGTERM to exit


def test_sigterm_stops_a_search_within_ten_seconds_while_its_trial_does_not_answer(small_data, workdir):
    tmp_path = workdir
    proc = start_cli(
        "search", "--space", "tiny.toml", "--data", str(small_data), "--budget", "smoke", "--max-epochs", "3",
        "--pruner", "none", "--trials", "1", "--study", "stop",
        cwd=tmp_path, env={"FERHPO_FAULT_BUSY": "60"},
    )  # fmt: skip

    def busy() -> bool:
        return any("fault: busy" in log.read_text() for log in (tmp_path / "studies" / "stop").glob("trial-*/trial.log"))

    wait_for(lambda: busy() or proc.poll() is not None, timeout=240)
    if proc.poll() is not None or not busy():
        out, err = finish(proc, timeout=1)
        raise AssertionError(f"the trial never got busy:\n{out}\n{err}")
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)  # to the command only, as Kubernetes does
    out, err = finish(proc, timeout=120)
    took = time.monotonic() - sent
    assert proc.returncode == 143, err
    assert took < LIMIT, f"exit {took:.1f} s after SIGTERM; expected under {LIMIT:g} s\n{err}"
    assert "Traceback" not in err and "stopped by SIGTERM" in err

    study = optuna.load_study(study_name="stop", storage=f"sqlite:///{tmp_path}/studies/ferhpo.db")
    trials = study.get_trials()
    assert [t for t in trials if t.user_attrs.get(store.INTERRUPTED_ATTR)], "the stopped trial is marked"
    assert [t.state for t in trials].count(optuna.trial.TrialState.WAITING) == 1, "and re-queued"


def test_a_trial_process_ends_at_sigterm_after_the_write_in_progress(tmp_path):
    """`end_at_once_on_sigterm` waits for `atomic.WRITING`: a SIGTERM in the middle of
    an atomic write ends the process only once the file is complete and in place."""
    target = tmp_path / "checkpoint.bin"
    script = textwrap.dedent(
        f"""
        import os, sys, time
        from ferhpo.atomic import atomic_open
        from ferhpo.engines.trial import end_at_once_on_sigterm
        end_at_once_on_sigterm()
        with atomic_open({str(target)!r}) as f:
            f.write(b"a" * 1000)
            print("writing", flush=True)
            time.sleep(2)  # SIGTERM arrives here
            f.write(b"b" * 1000)
        time.sleep(60)  # ended by the signal, not by this
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "writing"
    start = time.monotonic()
    child.send_signal(signal.SIGTERM)
    code = child.wait(timeout=30)
    assert code == 143
    assert time.monotonic() - start < LIMIT
    assert target.read_bytes() == b"a" * 1000 + b"b" * 1000  # finished, then renamed into place
    assert not list(Path(tmp_path).glob(".tmp-*"))
