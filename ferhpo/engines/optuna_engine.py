"""The Optuna engine: the worker loop that runs a search's trials.

A worker asks the study for a trial, draws its hyperparameters through the space's
adapter, writes the trial's spec and trains it in a child process
(`ferhpo.engines.trial`), which reports the validation objective after every epoch
straight to the storage, so the study's pruner sees it. The worker then stores the
trial's record and ends the trial.

Several workers (processes here, or machines sharing a PostgreSQL URL) cooperate only
through the storage. Exactly `trials` trials are counted (`store.counted`): a worker
starts one only while completed + running ones are fewer. Heartbeats mark the trial of
a killed worker failed after a grace period, and Optuna re-queues it with the same
parameters; a trial started by a race past the count is marked surplus and ignored.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
import sys
import time
import uuid
import warnings
from pathlib import Path

import optuna

from ferhpo import faults, store
from ferhpo.atomic import write_json
from ferhpo.engines import SearchSettings, rungs
from ferhpo.engines.samplers import make_pruner, make_sampler
from ferhpo.engines.trial import RECORD, SPEC, TrialFailed, objective_value, run_process, trial_env, trial_preexec, trial_spec
from ferhpo.errors import (
    ConfigError,
    FerhpoError,
    StoreError,
    Terminated,
    chain,
    dump_stacks_on_sigusr1,
    raise_terminated_on_sigterm,
)
from ferhpo.outage import RetryingRDBStorage, StorageUnavailable, call
from ferhpo.progress import PROGRESS_ATTR
from ferhpo.redact import real_url, redact
from ferhpo.spaces import load_space, suggest_optuna
from ferhpo.store import counts

POLL_SECONDS = 2.0
#: The worker's resident memory (kB) when a trial ended: it must stay flat over a long
#: search, since every trial trains in a process of its own.
WORKER_RSS_ATTR = "ferhpo.worker_rss_kb"
#: The folder of a trial's attempt, so that a retry finds the resume checkpoint it left.
FOLDER_ATTR = "ferhpo.folder"
#: Set on a trial re-queued after SIGTERM: the folder whose checkpoint it resumes from.
RESUME_ATTR = "ferhpo.resume_from"


def _rss_kb() -> int | None:
    """This process's resident set size in kB (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class DiskFull(StoreError):
    """A trial could not write its results: the disk (or the quota) is full. The worker
    stops (exit 1) rather than fail every next trial the same way."""

    exit_code = 1


class TrialLostError(Exception):
    """This worker's trial was ended by another worker meanwhile (taken for dead)."""


class SurplusTrial(Exception):
    """A trial that a race between workers started past the requested count."""


class Worker:
    """One worker process of a search: runs trials until the study has enough."""

    def __init__(self, settings: SearchSettings, index: int = 0, deadline: float | None = None):
        self.settings = settings
        self.index = index
        self.deadline = deadline
        self.space = load_space(settings.space_path)
        self.budget = settings.budget_obj()
        self.storage = store.open_storage(settings.storage, heartbeat=True, retry=settings.storage_retry)
        existing = len(optuna.load_study(study_name=settings.study, storage=self.storage).get_trials(deepcopy=False))
        # Different seeds per worker and per resumption: equal seeds would replay the
        # same random draws (TPE's start-up trials, the random sampler) as duplicates.
        seed = settings.seed * 1_000_003 + index * 7919 + existing
        self.study = optuna.load_study(
            study_name=settings.study,
            storage=self.storage,
            sampler=make_sampler(settings.sampler, self.space, seed, study_seed=settings.seed),
            pruner=make_pruner(settings.pruner, settings.max_epochs),
        )
        # a stopped trial's parameters, folder and what its retry keeps (its rung and configuration)
        self.interrupted: tuple[dict, Path, dict] | None = None
        self.finished: tuple[int, Path] | None = None  # a trial whose record awaits the storage
        self.lost: tuple[int, Path] | None = None  # a trial another worker failed as stale meanwhile

    # ----------------------------------------------------------------- the loop

    def run(self) -> int:
        try:
            while self._should_start():
                try:
                    self.study.optimize(self._objective, n_trials=1, catch=(TrialFailed, SurplusTrial), gc_after_trial=False)
                    self.finished = None  # told: in the study now
                except ValueError:  # Optuna: "Cannot tell a FAIL trial"
                    if self.lost is None:
                        raise
                    number, folder = self.lost
                    print(
                        f"trial {number} was taken for dead by another worker and retried there; "
                        f"this attempt's result is dropped",
                        flush=True,
                    )
                    shutil.rmtree(folder, ignore_errors=True)
                    self.lost = None
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated)
            if self.interrupted is not None:
                # The next run (or another worker) redoes the trial with the same parameters,
                # from its resume checkpoint when it left one.
                params, folder, attrs = self.interrupted
                if (folder / store.RESUME_DIR).is_dir():
                    attrs = {**attrs, RESUME_ATTR: str(folder)}
                self.study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=False)
            return 143 if isinstance(exc, Terminated) else 130
        except Exception as exc:
            # Optuna's own clean-up after a failed `tell` can raise on top of the outage
            # (UnboundLocalError in optuna.study._optimize): the outage is in the chain.
            gone = next((e for e in chain(exc) if isinstance(e, StorageUnavailable)), None)
            if gone is None:
                raise
            kept = ""
            if self.finished is not None:
                number, folder = self.finished
                kept = (
                    f"; trial {number} finished and its record is kept in {folder / RECORD}: it enters the study on the next run"
                )
            raise StorageUnavailable(
                f"{gone}{kept}; the study keeps its finished trials, rerun the same command once the storage is back"
            ) from None
        return 0

    def _should_start(self) -> bool:
        wanted = self.settings.trials
        while True:
            if self.deadline is not None and time.time() >= self.deadline:
                return False
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)
            fail_silent_trials(self.study)
            if self.settings.rungs:
                if (go := self._next_rung_run()) is not None:
                    return go
                time.sleep(POLL_SECONDS)
                continue
            c = counts(self.study)
            if c["done"] >= wanted:
                return False
            if c["waiting"] or c["done"] + c["running"] < wanted:
                return True
            # The remaining trials run elsewhere: wait for them to end, or to go stale
            # (then they are re-queued and this worker may take them).
            time.sleep(POLL_SECONDS)

    def _next_rung_run(self) -> bool | None:
        """With rungs: queue the promotion that is due and say to start (True), say to
        start a new configuration (True), to stop (False) or to wait (None)."""
        s = self.settings
        assert s.rungs is not None
        what, promotion = rungs.decide(
            self.study.get_trials(deepcopy=False), configurations=s.trials, rungs=s.rungs, eta=s.reduction
        )
        if what == "promote":
            source, rung = promotion
            self.study.enqueue_trial(
                dict(source.params),
                user_attrs={rungs.RUNG_ATTR: rung, rungs.CONFIG_ATTR: rungs.config_of(source)},
                skip_if_exists=False,
            )
            faults.point("worker-promoted")  # queued, not yet started
            return True
        if what in ("waiting", "new"):
            return True
        return False if what == "done" else None

    # ----------------------------------------------------------------- one trial

    def _objective(self, trial: optuna.trial.Trial):
        s = self.settings
        mine = trial.number
        # A retry inherits the user attributes of the trial it repeats (Optuna copies them):
        # what that attempt stored is not this attempt's, except where it left a checkpoint.
        resume = trial.user_attrs.get(RESUME_ATTR)
        for attr in (store.RECORD_ATTR, store.ERROR_ATTR, store.INTERRUPTED_ATTR, WORKER_RSS_ATTR, PROGRESS_ATTR,
                     RESUME_ATTR, FOLDER_ATTR, "run", "kind"):  # fmt: skip
            if trial.user_attrs.get(attr) is not None:
                trial.set_user_attr(attr, None)
        resume = resume or trial.user_attrs.get(FOLDER_ATTR)  # a killed worker's attempt
        trials = self.study.get_trials(deepcopy=False)
        rung, carried = 0, {}
        if s.rungs:
            me = next(t for t in trials if t.number == mine)
            rung = rungs.rung_of(me)
            carried = {rungs.RUNG_ATTR: rung, rungs.CONFIG_ATTR: rungs.config_of(me)}
            for attr, kept in carried.items():
                if trial.user_attrs.get(attr) != kept:
                    trial.set_user_attr(attr, kept)
            first = rungs.duplicate_of(trials, me)
            if first is not None:
                trial.set_user_attr(store.SURPLUS_ATTR, True)
                raise SurplusTrial(f"trial {mine} repeats trial {first}'s run at rung {rung}")
        before = [t for t in trials if t.number < mine and store.holds_place(t) and (not s.rungs or rungs.rung_of(t) == 0)]
        if rung == 0 and len(before) >= s.trials:
            trial.set_user_attr(store.SURPLUS_ATTR, True)
            raise SurplusTrial(f"trial {mine} is past the requested {s.trials} trials")

        epochs = s.rungs[rung] if s.rungs else s.max_epochs
        values = suggest_optuna(self.space, trial)
        try:
            model, train = self.space.configs(values)
            train = s.recipe(train, epochs=epochs)  # a rung's schedule ends at its own last epoch
        except ConfigError as exc:
            return self._fail(trial, f"configuration rejected: {exc}")

        name = f"trial-{mine}"
        folder = store.run_dir(s.study, f"{name}-{uuid.uuid4().hex[:8]}", Path(s.study_dir))
        previous = Path(resume) if resume and (Path(resume) / store.RESUME_DIR).is_dir() else None
        spec = trial_spec(s, name=name, folder=folder, model=model, train=train, values=values, trial=trial, resume=previous)
        if s.rungs:
            spec["budget"] = {**spec["budget"], "epochs": epochs}
            config = f"trial-{carried[rungs.CONFIG_ATTR]}"
            spec["search"].update(rung=rung, rung_epochs=epochs, rungs=list(s.rungs), reduction=s.reduction, config=config)
            spec["evaluate_test"] = rung >= s.test_from_rung
        write_json(folder / SPEC, spec)
        trial.set_user_attr(FOLDER_ATTR, str(folder))
        try:
            outcome = run_process(folder, env=trial_env(s.workers), preexec_fn=trial_preexec(s.trial_memory_gb))
        except KeyboardInterrupt:
            trial.set_user_attr(store.INTERRUPTED_ATTR, True)
            self.interrupted = (dict(trial.params), folder, carried)
            _drop_partial(folder)
            raise
        if previous is not None and outcome.record is not None:
            shutil.rmtree(previous, ignore_errors=True)  # resumed and finished: the old attempt is spent
        if outcome.disk_full:
            trial.set_user_attr(store.INTERRUPTED_ATTR, True)  # not the configuration's fault: retried
            trial.set_user_attr(store.DISK_FULL_ATTR, outcome.error)
            self.study.enqueue_trial(dict(trial.params), user_attrs=carried, skip_if_exists=False)
            raise DiskFull(
                f"trial {mine} failed: {outcome.error}; it is re-queued with the same parameters: free "
                f"space under {folder.parent} and rerun the same command"
            )
        if outcome.error is not None:
            return self._fail(trial, outcome.error)

        self.finished = (mine, folder)
        frozen = self.study._storage.get_trial(trial._trial_id)
        if frozen.state.is_finished():
            self.lost, self.finished = (mine, folder), None  # no heartbeat reached the storage for too long
            raise TrialLostError(f"trial {mine} was failed as stale while it ran")
        record = outcome.record
        assert record is not None  # no error: the trial process left its record
        _report_missing(trial, frozen, record)
        trial.set_user_attr(store.RECORD_ATTR, record)
        trial.set_user_attr("run", record["run"])
        trial.set_user_attr("kind", record["kind"])
        trial.set_user_attr(WORKER_RSS_ATTR, _rss_kb())
        faults.point("worker-before-tell")  # the record is stored, the trial not ended
        if record["status"] == "pruned":
            raise optuna.TrialPruned(f"pruned after epoch {record['search'].get('pruned_at_epoch')}")
        value = objective_value(record, s.objectives[0])
        if s.multi_objective:
            return value, float(record["params"])
        return value

    def _fail(self, trial: optuna.trial.Trial, reason: str):
        trial.set_user_attr(store.ERROR_ATTR, reason)
        raise TrialFailed(reason)


def fail_silent_trials(study) -> list[int]:
    """Fail (and re-queue, like Optuna's stale trials) the running trials that never sent
    a heartbeat and started more than `store.silent_after()` ago; their numbers.

    A worker killed between creating its trial and the first heartbeat (the sampler runs
    in between) leaves a trial that Optuna's stale check never sees: it only looks at
    trials with a heartbeat. Counted as running, such a trial would keep the study
    waiting for it forever.
    """
    from datetime import datetime

    from ferhpo.status import heartbeat_ages

    storage = study._storage
    backend = getattr(storage, "_backend", storage)
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    if not running or not isinstance(backend, optuna.storages.RDBStorage):
        return []
    read = functools.partial(heartbeat_ages, storage, [t._trial_id for t in running])
    if isinstance(backend, RetryingRDBStorage):
        if backend.just_recovered():  # a first heartbeat may still be on its way
            return []
        beating = call(read, backend.url, backend.retry_window)  # a direct read: retried like the others
    else:
        beating = read()
    now, limit = datetime.now(), store.silent_after()
    failed = []
    for t in running:
        if t._trial_id in beating or t.datetime_start is None or (now - t.datetime_start).total_seconds() < limit:
            continue
        try:
            if storage.set_trial_state_values(t._trial_id, state=optuna.trial.TrialState.FAIL):
                failed.append(t)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # ended meanwhile (its worker was alive after all, or another worker failed it)
    getter = getattr(storage, "get_heartbeat_stale_trial_callback", None) or storage.get_failed_trial_callback  # Optuna < 5
    callback = getter()
    if callback is not None:
        for t in failed:
            callback(study, storage.get_trial(t._trial_id))
    return [t.number for t in failed]


def _drop_partial(folder: Path) -> None:
    """An interrupted attempt's folder: its resume checkpoint (and spec and log) stay for
    the retry; without one, the partial run is not kept."""
    if (folder / store.RESUME_DIR).is_dir():
        from ferhpo.runs import ARTIFACTS

        for artifact in ARTIFACTS:
            (folder / artifact).unlink(missing_ok=True)
    else:
        shutil.rmtree(folder, ignore_errors=True)


def _report_missing(trial, frozen, record: dict) -> None:
    """Report the epochs' values the trial process could not (the storage was away, or
    the epochs before a resume), so the pruner and the curves see the whole trial;
    `frozen` is the trial as the storage has it now."""
    if len(trial.study.directions) > 1:
        return  # Optuna keeps no curves for two objectives
    curve = record["search"].get("objective_curve") or []
    for step, value in enumerate(curve, 1):
        if step not in frozen.intermediate_values and value == value:
            trial.report(value, step)


def adopt_finished(study, settings: SearchSettings) -> list[int]:
    """Enter the trials whose process finished but whose worker could not tell the storage
    (it stopped during an outage): their records on disk complete their trials.

    Called before a search's workers start, so no worker of this machine is telling
    them; a trial that another machine ends meanwhile is left to it. Returns the
    trial numbers entered.
    """
    import json

    running = {t._trial_id: t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
    adopted = []
    for spec_path in sorted(store.run_dir(settings.study, "", Path(settings.study_dir)).glob(f"trial-*/{SPEC}")):
        folder = spec_path.parent
        try:
            spec = json.loads(spec_path.read_text())
            record = json.loads((folder / RECORD).read_text())
        except (OSError, ValueError):
            continue
        frozen = running.get(spec.get("trial_id"))
        if frozen is None or record.get("status") not in ("complete", "pruned"):
            continue
        trial = optuna.trial.Trial(study, frozen._trial_id)
        try:
            _report_missing(trial, frozen, record)
            for key, value in ((store.RECORD_ATTR, record), ("run", record["run"]), ("kind", record["kind"])):
                trial.set_user_attr(key, value)
            if record["status"] == "pruned":
                study.tell(frozen.number, state=optuna.trial.TrialState.PRUNED)
            else:
                value = objective_value(record, settings.objectives[0])
                study.tell(frozen.number, [value, float(record["params"])] if settings.multi_objective else value)
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError, ValueError):
            continue  # ended elsewhere meanwhile
        adopted.append(frozen.number)
    return adopted


def main(argv: list[str] | None = None) -> int:
    """Worker process entry: ``python -m ferhpo.engines.optuna_engine SETTINGS INDEX [DEADLINE]``."""
    argv = sys.argv[1:] if argv is None else argv
    settings = SearchSettings.from_json(Path(argv[0]).read_text())
    settings = dataclasses.replace(settings, storage=real_url(settings.storage))
    deadline = float(argv[2]) if len(argv) > 2 and argv[2] != "none" else None
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    dump_stacks_on_sigusr1()
    raise_terminated_on_sigterm()
    try:
        return Worker(settings, int(argv[1]), deadline).run()
    except Terminated:
        return 143
    except KeyboardInterrupt:
        return 130
    except FerhpoError as exc:
        print(f"ferhpo: error: {redact(str(exc))}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
