"""The KerasTuner engine: RandomSearch, BayesianOptimization or Hyperband over a space.

KerasTuner's oracle chooses hyperparameters and keeps its own state under
`studies/<study>/keras-tuner/` (so a rerun resumes it, re-running a trial that was in
progress); each trial trains in its own process exactly like an Optuna trial, and is
recorded in the same Optuna storage with the same record schema, so the report treats
both engines alike. Hyperband trials train for the epochs the oracle assigns (from
scratch: weights are not carried between rounds). One worker only: KerasTuner's own
distribution (a gRPC chief) is not used.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import keras_tuner
import optuna

from ferhpo import store
from ferhpo.atomic import write_json
from ferhpo.engines import SearchSettings, study_dir
from ferhpo.engines.runner import Progress, SearchOutcome, fail_fast_reason, search_failed
from ferhpo.engines.trial import SPEC, TrialFailed, objective_value, run_process, trial_env, trial_preexec, trial_spec
from ferhpo.errors import ConfigError
from ferhpo.spaces import Space, declare_keras_tuner, load_space
from ferhpo.store import counts

TUNERS = {"random": "RandomSearch", "gp": "BayesianOptimization", "hyperband": "Hyperband"}


class _Doomed(keras_tuner.errors.FatalError):
    """The first trials all failed alike (`runner.fail_fast_reason`): the search stops."""


def _oracle(settings: SearchSettings, objective: keras_tuner.Objective):
    kind = settings.sampler
    if kind == "random":
        return keras_tuner.oracles.RandomSearchOracle(objective=objective, max_trials=settings.trials, seed=settings.seed)
    if kind == "gp":
        return keras_tuner.oracles.BayesianOptimizationOracle(objective=objective, max_trials=settings.trials, seed=settings.seed)
    if kind == "hyperband":
        oracle = keras_tuner.oracles.HyperbandOracle(
            objective=objective, max_epochs=settings.max_epochs, factor=3, seed=settings.seed
        )
        oracle.max_trials = settings.trials  # Hyperband has no max_trials argument; the base oracle honours it
        return oracle
    raise ConfigError(f"the keras-tuner engine runs random, gp or hyperband, but got {kind!r}")


class ProcessTuner(keras_tuner.Tuner):
    """A KerasTuner tuner whose trials train in their own processes and land in the store."""

    def __init__(self, settings: SearchSettings, space: Space, study, on_trial: Callable[[], None]):
        self.settings = settings
        self.space = space
        self.study = study
        self.on_trial = on_trial
        self.deadline = None if settings.timeout is None else time.time() + settings.timeout
        objective = keras_tuner.Objective(settings.objectives[0], direction="max")
        super().__init__(
            oracle=_oracle(settings, objective),
            hypermodel=None,
            directory=str(study_dir(settings)),
            project_name="keras-tuner",
            overwrite=False,
        )

    def _populate_initial_space(self):
        # The space is data: declare it once instead of building models to discover it.
        hp = self.oracle.get_space()
        declare_keras_tuner(self.space, hp)
        self.oracle.update_space(hp)

    def run_trial(self, trial, *args, **kwargs):
        s = self.settings
        name = f"kt-{trial.trial_id}"
        # A trial KerasTuner re-runs after a crash may already be in the store: reuse it.
        for record in store.records(self.study, states=("complete",)):
            if record.run == name:
                return objective_value(record.to_dict(), s.objectives[0])
        hp = trial.hyperparameters.copy()
        values = declare_keras_tuner(self.space, hp)
        epochs = int(hp.values.get("tuner/epochs", s.max_epochs))
        try:
            model, train = self.space.configs(values)
            train = s.recipe(train, epochs=epochs)
        except ConfigError as exc:
            self._fail(name, values, f"configuration rejected: {exc}")
        folder = store.run_dir(s.study, f"{name}-{uuid.uuid4().hex[:8]}", Path(s.study_dir))
        spec = trial_spec(s, name=name, folder=folder, model=model, train=train, values=values)
        spec["search"]["tuner"] = TUNERS[s.sampler]
        spec["search"]["keras_tuner_trial"] = trial.trial_id
        write_json(folder / SPEC, spec)
        try:
            outcome = run_process(folder, env=trial_env(s.workers), preexec_fn=trial_preexec(s.trial_memory_gb))
        except KeyboardInterrupt:
            shutil.rmtree(folder, ignore_errors=True)  # a partial run is not kept; the oracle retries it
            raise
        if outcome.error is not None:
            self._fail(name, values, outcome.error)
        record = store.RunRecord.from_dict(outcome.record)
        value = objective_value(outcome.record, s.objectives[0])
        store.add_record(self.study, record, value=value)
        self.on_trial()
        return value

    def _fail(self, name: str, values: dict, reason: str):
        trial = optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL,
            user_attrs={store.ERROR_ATTR: reason, "run": name, "kind": "trial", "ferhpo.hyperparameters": values},
        )
        self.study.add_trial(trial)
        self.on_trial()
        doomed = fail_fast_reason(self.study.get_trials(deepcopy=False), self.settings.fail_fast)
        if doomed is not None:
            raise _Doomed(doomed)  # a FatalError: KerasTuner stops the search
        raise TrialFailed(reason)

    def on_epoch_end(self, *args, **kwargs):  # no in-process model, nothing to checkpoint
        pass

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        if self.deadline is not None and time.time() >= self.deadline:
            # --timeout: the oracle creates no more trials once it holds this many.
            self.oracle.max_trials = len(self.oracle.trials)


def run_keras_tuner(settings: SearchSettings, study, on_progress: Callable[[Progress], None]) -> SearchOutcome:
    """Run the KerasTuner search in this process (its trials in child processes)."""
    space = load_space(settings.space_path)
    start = time.time()

    def report():
        on_progress(Progress(counts(study), settings.trials, _best(study), time.time() - start))

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tuner = ProcessTuner(settings, space, study, report)
    report()
    interrupted = False
    try:
        tuner.search(verbose=0)
    except KeyboardInterrupt:
        interrupted = True
    except _Doomed as exc:
        report()
        raise search_failed(settings, str(exc)) from None
    report()
    return SearchOutcome(interrupted, counts(study), time.time() - start)


def _best(study) -> float | None:
    values = [t.value for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    return max(values) if values else None
