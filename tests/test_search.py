"""`ferhpo search`: both engines on real data, pruning, resume, Ctrl-C, several workers,
failure isolation, and the rule that selection never reads test images. Kills are
tests/test_crash.py's, distributed studies tests/test_distributed.py's.

Searches run the real command on the tiny space of tests/spaces/tiny.toml (ResNet v1
depth 8) at the smoke budget, so a trial takes seconds; the shipped spaces are
exercised by tests/test_spaces.py.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
from pathlib import Path

import numpy as np
import optuna
import pytest

from conftest import default_sigint, ferhpo_command, run_cli, smoke_search, space_text, wait_for
from ferhpo import store


@pytest.fixture
def space(workdir) -> Path:
    """The tiny space, tests/spaces/tiny.toml, as `workdir` holds it."""
    return workdir / "tiny.toml"


def search(space: Path, data: Path, *args: str, cwd: Path, env: dict | None = None):
    return run_cli(*smoke_search(space, data, *args), cwd=cwd, env=env)


def load(cwd: Path, name: str):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{cwd}/studies/ferhpo.db")


def counted(study) -> list:
    return [t for t in study.get_trials() if store.counted(t)]


def check_record(record: store.RunRecord, *, engine: str) -> None:
    assert record.kind == "trial" and record.status == "complete"
    assert record.search["engine"] == engine
    assert set(record.hyperparameters) >= {"optimizer", "learning_rate", "schedule"}
    assert record.epochs_run == 1 and record.history["val_accuracy"]
    assert {"val", "test", "test_public", "test_private"} <= set(record.evaluation)
    assert record.selection_sees == []  # holdout: validation comes from Training only
    assert record.model["depth"] == 8 and record.train["batch_size"] == 32
    # the trial process's phases, from its spawn by the worker, add up to its wall time
    from ferhpo.phases import PHASES

    phases = record.phases
    assert sum(phases[n] for n in (*PHASES, "other")) == pytest.approx(phases["wall"], abs=0.05)
    assert phases["startup"] > 0 and phases["data"] > 0 and phases["train"] > 0 and phases["compile"] > 0
    if engine == "optuna":  # the epoch's value reported to the study (KerasTuner keeps its own)
        assert phases["storage"] > 0


# --------------------------------------------------------------------------- both engines, real data


def test_optuna_smoke_search_on_real_data(real_data, space, workdir):
    result = search(space, real_data, "--trials", "2", "--study", "s", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "top 2 by validation val_accuracy" in result.stdout
    assert "trials 2/2 (complete" in result.stdout
    study = load(workdir, "s")
    assert len(counted(study)) == 2
    records = store.records(study)
    assert len(records) == 2
    for record in records:
        assert record.search["sampler"] == "tpe" and record.search["pruner"] == "hyperband"
        check_record(record, engine="optuna")
        assert record.evaluation["test"]["n"] == 256  # the smoke budget's test subsample
        assert (workdir / "studies" / "s" / record.artifacts["record"]).is_file()
    # The trial's value is the validation objective, never a test number.
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        record = trial.user_attrs[store.RECORD_ATTR]
        assert trial.value == pytest.approx(record["best_val_accuracy"])
        assert trial.intermediate_values == {1: pytest.approx(record["history"]["val_accuracy"][0])}


def test_keras_tuner_smoke_search_on_real_data(real_data, space, workdir):
    result = search(space, real_data, "--engine", "keras-tuner", "--trials", "2", "--study", "kt", cwd=workdir)
    assert result.returncode == 0, result.stderr
    study = load(workdir, "kt")
    records = store.records(study)
    assert [r.run for r in records] == ["kt-0", "kt-1"]
    for record in records:
        check_record(record, engine="keras-tuner")
        assert record.search["tuner"] == "RandomSearch"
    assert (workdir / "studies" / "kt" / "keras-tuner" / "oracle.json").is_file()
    # A rerun continues KerasTuner's own state: nothing is retrained or duplicated.
    again = search(space, real_data, "--engine", "keras-tuner", "--trials", "2", "--study", "kt", cwd=workdir)
    assert again.returncode == 0, again.stderr
    assert [r.run_id for r in store.records(load(workdir, "kt"))] == [r.run_id for r in records]


# --------------------------------------------------------------------------- resume, workers, kills


def test_rerun_continues_the_study_and_keeps_finished_trials(small_data, space, workdir):
    first = search(space, small_data, "--trials", "2", "--study", "r", "--tensorboard", "tb", cwd=workdir)
    assert first.returncode == 0, first.stderr
    before = {r.run: r.run_id for r in store.records(load(workdir, "r"))}
    assert len(before) == 2
    # the live line showed the running trial; TensorBoard got one run per trial, named by it
    assert re.search(r"^  trial 0: (starting|epoch)", first.stdout, re.M), first.stdout
    runs = sorted(p.name for p in (workdir / "tb").iterdir())
    assert [r.split("_")[0] for r in runs] == ["trial-0", "trial-1"] and all("optimizer=" in r for r in runs)
    assert all(list((workdir / "tb" / r).rglob("events.out.tfevents.*")) for r in runs)
    second = search(space, small_data, "--trials", "3", "--study", "r", cwd=workdir)
    assert second.returncode == 0, second.stderr
    after = {r.run: r.run_id for r in store.records(load(workdir, "r"))}
    assert len(counted(load(workdir, "r"))) == 3
    assert {k: after[k] for k in before} == before
    # The study continues only with the settings it started with.
    other = search(space, small_data, "--trials", "3", "--study", "r", "--protocol", "canonical", cwd=workdir)
    assert other.returncode == 2 and "Traceback" not in other.stderr
    assert "study 'r' was started with protocol=\"holdout\"" in other.stderr.strip().splitlines()[-1]


def test_ctrl_c_stops_cleanly_and_queues_the_interrupted_trial(small_data, space, workdir):
    args = ferhpo_command(*smoke_search(space, small_data, "--max-epochs", "3", "--trials", "2", "--study", "c"))
    proc = subprocess.Popen(
        args,
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=default_sigint,
    )

    def training():
        try:
            return any(t.intermediate_values for t in load(workdir, "c").get_trials())
        except Exception:
            return False

    try:
        wait_for(training, timeout=240, step=0.5)  # AssertionError if no trial starts training
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted; study 'c' keeps" in err and "rerun the same command" in err
    trials = load(workdir, "c").get_trials()
    stopped = [t for t in trials if t.user_attrs.get(store.INTERRUPTED_ATTR)]
    assert len(stopped) == 1 and not store.counted(stopped[0])
    queued = [t for t in trials if t.state == optuna.trial.TrialState.WAITING]
    assert len(queued) == 1 and queued[0].system_attrs["fixed_params"] == stopped[0].params
    folders = [p.name for p in (workdir / "studies" / "c").iterdir() if p.name.startswith(f"trial-{stopped[0].number}-")]
    assert folders == []  # the partial run was discarded


# --------------------------------------------------------------------------- failures and objectives


def test_a_diverging_trial_is_recorded_as_failed_and_the_study_goes_on_but_exits_1(small_data, workdir):
    path = workdir / "diverging.toml"
    path.write_text(space_text("diverging"))
    result = search(path, small_data, "--trials", "2", "--study", "nan", "--max-epochs", "3", cwd=workdir)
    study = load(workdir, "nan")
    failures = store.failures(study)
    assert len(failures) == 2 and len(counted(study)) == 2
    assert all("diverged" in f["error"] for f in failures), failures
    assert "no trial completed yet" in result.stdout
    # It did not do its job: exit 1, said on one line.
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("ferhpo: error: no trial completed and 2 failed")


def test_two_objectives_store_a_pareto_front(small_data, space, workdir):
    result = search(
        space,
        small_data,
        "--trials",
        "2",
        "--study",
        "mo",
        "--objective",
        "val_accuracy,params",
        "--sampler",
        "random",
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    assert "Pareto front" in result.stdout
    study = load(workdir, "mo")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    front = study.user_attrs["ferhpo.pareto"]
    assert front and set(front) <= {r.run for r in store.records(study)}


# --------------------------------------------------------------------------- in-process: pruning and test data


class WatchedImages(np.ndarray):
    """Images that log every read touching the test rows, and when it happened."""

    def __array_finalize__(self, obj):
        self.log = getattr(obj, "log", None)
        self.test_rows = getattr(obj, "test_rows", None)

    def __getitem__(self, index):
        out = super().__getitem__(index)
        if isinstance(index, np.ndarray) and index.dtype.kind in "iu" and self.test_rows is not None:
            if np.isin(index, self.test_rows).any():
                self.log.append("test-read")
        return out


def _watched(data):
    from ferhpo.splits import make_splits

    images = data.images.view(WatchedImages)
    images.log = []
    images.test_rows = make_splits(data, "holdout", 0).test
    return dataclasses.replace(data, images=images), images.log


def _spec(tmp_path, study_name: str, storage: str, trial, pruner: str, learning_rate: float, epochs: int = 3):
    from ferhpo.config import BUDGETS, ResNetConfig, TrainConfig, model_config_to_dict

    budget = dataclasses.replace(BUDGETS["smoke"], epochs=epochs)
    return {
        "study": study_name,
        "storage": storage,
        "trial_id": trial._trial_id,
        "name": f"trial-{trial.number}",
        "folder": str(tmp_path / "studies" / study_name / f"trial-{trial.number}"),
        "model": model_config_to_dict(ResNetConfig(depth=8)),
        "train": dataclasses.asdict(TrainConfig(epochs=epochs, batch_size=16, learning_rate=learning_rate)),
        "budget": dataclasses.asdict(budget),
        "protocol": "holdout",
        "objective": "val_accuracy",
        "hyperparameters": {"learning_rate": learning_rate},
        "search": {"engine": "optuna", "sampler": "tpe", "pruner": pruner},
    }


@pytest.fixture
def watched_study(tmp_path, small_data):
    from ferhpo.data import load_fer2013

    storage = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="p", storage=storage, direction="maximize")
    # Three earlier trials that reached 0.99 at every epoch: anything real is hopeless next to them.
    for _ in range(3):
        study.add_trial(optuna.trial.create_trial(value=0.99, intermediate_values={1: 0.99, 2: 0.99, 3: 0.99}))
    data, log = _watched(load_fer2013(small_data, tmp_path / "cache"))
    return study, storage, data, log


def test_the_pruner_stops_a_hopeless_trial_and_test_images_stay_unread(tmp_path, watched_study):
    from ferhpo.engines.trial import run_trial

    study, storage, data, log = watched_study
    trial = study.ask()
    record = run_trial(_spec(tmp_path, "p", storage, trial, "median", learning_rate=1e-9), data=data)
    assert record["status"] == "pruned"
    assert record["search"]["pruned_at_epoch"] == 1 and record["epochs_run"] == 1
    assert "test" not in record["evaluation"] and "test_predictions" not in record["artifacts"]
    assert log == []  # a pruned trial never reads a test image
    assert study.get_trials()[-1].intermediate_values.keys() == {1}


def test_test_images_are_read_only_after_training_ends(tmp_path, watched_study, monkeypatch):
    from ferhpo.engines import trial as trial_module

    study, storage, data, log = watched_study
    original = trial_module._objective_callback

    def instrumented(*args, **kwargs):
        callback = original(*args, **kwargs)
        epoch_end = callback.on_epoch_end

        def on_epoch_end(epoch, logs=None):
            log.append(f"epoch-{epoch + 1}")
            epoch_end(epoch, logs)

        callback.on_epoch_end = on_epoch_end
        callback.on_train_end = lambda logs=None: log.append("train-end")
        return callback

    monkeypatch.setattr(trial_module, "_objective_callback", instrumented)
    trial = study.ask()
    record = trial_module.run_trial(_spec(tmp_path, "p", storage, trial, "none", learning_rate=1e-3, epochs=2), data=data)
    assert record["status"] == "complete" and "test" in record["evaluation"]
    assert log == ["epoch-1", "epoch-2", "train-end", "test-read"]


def test_timeout_stops_starting_trials_with_keras_tuner(small_data, space, workdir):
    result = search(space, small_data, "--engine", "keras-tuner", "--trials", "5", "--timeout", "1", "--study", "t", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert len(store.records(load(workdir, "t"))) == 1  # the first trial ran past the deadline: no second


def test_the_random_sampler_gives_trial_k_the_same_configuration_whatever_the_order():
    """Two workers taking trials in turns, or one taking them all, draw the same
    configuration for each trial number: a study with --sampler random repeats."""
    from ferhpo.engines.samplers import make_sampler
    from ferhpo.spaces import load_space, suggest_optuna

    space = load_space("resnet-cpu")

    def drawn(workers: int, seed: int = 0, n: int = 6) -> dict[int, dict]:
        storage = optuna.storages.InMemoryStorage()
        optuna.create_study(study_name="s", storage=storage)
        # each worker has its own sampler object, seeded as a worker would be
        studies = [
            optuna.load_study(study_name="s", storage=storage, sampler=make_sampler("random", space, 1000 + i, study_seed=seed))
            for i in range(workers)
        ]
        out = {}
        for k in range(n):
            trial = studies[(k * 7 + 3) % workers].ask()
            out[trial.number] = suggest_optuna(space, trial)
        return out

    one, two = drawn(1), drawn(2)
    assert one == two and len({str(v) for v in one.values()}) == 6
    assert drawn(1, seed=1) != one
