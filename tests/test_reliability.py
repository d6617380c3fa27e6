"""Long searches stay healthy: flat worker memory, and failures that stay inside their trial."""

from __future__ import annotations

import subprocess

import optuna

from conftest import TINY_SPACE, ferhpo_command, smoke_search
from ferhpo import store
from ferhpo.engines.optuna_engine import WORKER_RSS_ATTR
from test_search import counted, load, search

SMALL_DATA_PER_CLASS = 4  # small_data with 4 training images a class: short trials


def test_one_worker_keeps_its_memory_flat_over_8_trials(small_data, workdir):
    space = workdir / "tiny.toml"  # the tiny space, as workdir holds it
    # About 10 s a trial on two cores (mostly a fresh process importing its backend): past run_cli's limit.
    result = subprocess.run(
        ferhpo_command(
            *smoke_search(space, small_data, "--trials", "8", "--study", "mem", "--sampler", "random", "--pruner", "none")
        ),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr
    trials = sorted(counted(load(workdir, "mem")), key=lambda t: t.datetime_complete)
    assert len(trials) == 8 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    rss = [t.user_attrs[WORKER_RSS_ATTR] for t in trials]
    growth = (rss[7] - rss[2]) / rss[2]
    print(f"worker RSS after trial 3: {rss[2]} kB, after trial 8: {rss[7]} kB ({100 * growth:+.1f}%)")
    assert growth < 0.10, rss


def test_a_model_too_large_for_memory_fails_as_its_trial(small_data, workdir):
    space = workdir / "huge.toml"
    # 1024 base filters: a 4096-wide 3x3 convolution alone wants 600 MB, then Adam's copies.
    space.write_text(TINY_SPACE.replace("base_filters = 16", "base_filters = 1024"))
    result = search(space, small_data, "--trials", "2", "--study", "oom", "--trial-memory", "3", cwd=workdir)
    study = load(workdir, "oom")
    failures = store.failures(study)
    assert len(failures) == 2 and len(counted(study)) == 2  # the study went on after the first
    assert all(f["error"].startswith("out of memory") for f in failures), failures
    # nothing completed: the command says so and exits 1, without a traceback
    assert result.returncode == 1, result.stderr
    assert "no trial completed and 2 failed" in result.stderr and "Traceback" not in result.stderr
