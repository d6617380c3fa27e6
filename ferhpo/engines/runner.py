"""Start a search: prepare (or resume) the study, run its workers, watch progress.

The command's own process never trains: it checks the settings against the study,
starts `workers` worker processes (`ferhpo.engines.optuna_engine`), or runs the
KerasTuner engine, and polls the storage for the live progress line.
"""

from __future__ import annotations

import dataclasses
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from ferhpo import faults, store
from ferhpo.atomic import check_writable, write_json
from ferhpo.engines import SearchSettings, check_resume, study_dir
from ferhpo.engines.trial import die_with_parent
from ferhpo.errors import FerhpoError, StoreError, Terminated, WorkerError, as_terminated
from ferhpo.outage import unreachable
from ferhpo.progress import WANTED_ATTR
from ferhpo.redact import child_env, redact
from ferhpo.status import StudyStatus, snapshot


@dataclass(frozen=True)
class Progress:
    """A snapshot of the study for the live line; `status` (running trials' progress and
    the time left) where the trials run in the storage's view (the Optuna engine)."""

    counts: dict[str, int]
    wanted: int
    best: float | None
    elapsed: float
    status: StudyStatus | None = None
    storage_down_since: float | None = None  # the storage did not answer (an outage) since then


class SearchFailed(FerhpoError):
    """The search's first trials all failed for the same reason: every next one would
    too (exit 1). Its running trials were stopped and re-queued, as on Ctrl-C."""

    exit_code = 1


def _gist(reason: str) -> str:
    """A failure's reason without what differs from trial to trial (paths, numbers)."""
    return re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "N", re.sub(r"\S*/\S*", "PATH", reason))


def fail_fast_reason(trials, first: int) -> str | None:
    """The reason for which the first `first` failed trials all failed, when no trial has
    completed or been pruned; None otherwise (or when `first` is 0). Only a trial's own
    failures count: not a killed worker's, an interrupted or a surplus trial."""
    import optuna

    if first <= 0 or any(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials):
        return None
    failed = sorted((t for t in trials if store.counted(t) and t.state == optuna.trial.TrialState.FAIL), key=lambda t: t.number)
    if len(failed) < first:
        return None
    reasons = [str(t.user_attrs.get(store.ERROR_ATTR)) for t in failed[:first]]
    return reasons[0] if len({_gist(r) for r in reasons}) == 1 else None


def search_failed(settings: SearchSettings, reason: str) -> SearchFailed:
    logs = study_dir(settings) / "trial-*" / "trial.log"
    return SearchFailed(
        f"the first {settings.fail_fast} trials all failed for the same reason, so the search stopped: {reason}; "
        f"trial logs: {logs}; fix the cause and rerun the same command (--fail-fast 0 goes on regardless)"
    )


@dataclass(frozen=True)
class SearchOutcome:
    interrupted: bool
    counts: dict[str, int]
    elapsed: float
    terminated: bool = False  # by SIGTERM (this command, or one of its workers): exit 143


def prepare_study(settings: SearchSettings):
    """Create the study, or check that an existing one was started with these settings.

    A storage that cannot be reached now fails at once, with one line: never reached, it
    is more likely a wrong URL than an outage (the workers ride out those)."""
    study = store.open_study(settings.study, settings.storage, directions=settings.directions)
    saved = study.user_attrs.get(store.SETTINGS_ATTR)
    if saved is None and study.get_trials(deepcopy=False):
        raise FerhpoError(
            f"study {settings.study!r} already holds runs that are not from a search (a baseline study?); "
            f"expected a new --study name for the search"
        )
    check_resume(settings, saved)
    folder = study_dir(settings)
    try:
        check_writable(folder)  # every trial writes there: a search that cannot, stops before it starts
    except OSError as exc:
        raise StoreError(
            f"cannot write the study's folder {folder} ({exc.strerror or exc}); expected a writable folder"
        ) from None
    if saved is None:
        study.set_user_attr(store.SETTINGS_ATTR, settings.binding())
        study.set_user_attr("ferhpo.search_command", {"sampler": settings.sampler, "pruner": settings.pruner})
    if study.user_attrs.get(WANTED_ATTR) != settings.expected_runs:  # for `ferhpo status` and its estimate
        study.set_user_attr(WANTED_ATTR, settings.expected_runs)
    return study


def watch(study, settings: SearchSettings, start: float) -> Progress:
    """The study now: counts, best, and each running trial's progress from the storage
    (one read of its trials: the live line asks every second)."""
    now = snapshot(study, wanted=settings.expected_runs)
    return Progress(now.counts, settings.expected_runs, now.best, time.time() - start, now)


def run_optuna(settings: SearchSettings, study, on_progress: Callable[[Progress], None]) -> SearchOutcome:
    """Run `settings.workers` worker processes until `study` (from `prepare_study`) has its trials."""
    folder = study_dir(settings)
    settings_path = folder / "search-settings.json"
    # The file is the workers' settings, without the password: they get the URL from
    # their environment (`ferhpo.redact`).
    write_json(settings_path, {**dataclasses.asdict(settings), "storage": redact(settings.storage)})
    # The live line reads through a storage of its own that never waits: during an outage
    # it says so, while the workers wait.
    watched = store.open_study(settings.study, settings.storage, create=False)
    start = time.time()
    deadline = "none" if settings.timeout is None else repr(start + settings.timeout)
    env = {**child_env(settings.storage), faults.ROLE: "worker"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    workers, logs = [], []
    for index in range(settings.workers):
        log_path = folder / f"worker-{index}.log"
        logs.append(log_path)
        with open(log_path, "ab") as log:
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "ferhpo.engines.optuna_engine", str(settings_path), str(index), deadline],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    preexec_fn=die_with_parent,
                )
            )
    interrupted = terminated = False
    doomed = None  # the reason every trial fails for, once the first ones all did
    last = None
    try:
        while any(w.poll() is None for w in workers):
            last = _watch(watched, settings, start, last)
            on_progress(last)  # the live line decides what to show
            if settings.fail_fast and last.counts["failed"] >= settings.fail_fast and not last.counts["complete"]:
                doomed = fail_fast_reason(watched.get_trials(deepcopy=False), settings.fail_fast)
                if doomed is not None:
                    raise as_terminated()  # stop the workers the quickest way; they re-queue their trials
            time.sleep(1.0)
    except KeyboardInterrupt as exc:
        interrupted = True
        if isinstance(exc, Terminated):
            # SIGTERM reached this process only (Kubernetes signals the container's first
            # process): pass it on; each worker re-queues its trial and exits with 143.
            terminated = doomed is None
            for w in workers:
                if w.poll() is None:
                    w.send_signal(signal.SIGTERM)
        # Ctrl-C reached the workers too; give them time to end their trials cleanly.
        for w in workers:
            try:
                w.wait(timeout=90)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()
    codes = [w.wait() for w in workers]
    last = _watch(watched, settings, start, last)
    on_progress(last)
    if doomed is not None:
        raise search_failed(settings, doomed)
    failures = []
    for index, (code, log_path) in enumerate(zip(codes, logs)):
        if code in (130, 143):
            interrupted = True
            terminated = terminated or code == 143
        elif code != 0 and not interrupted:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] if log_path.exists() else []
            line = tail[0] if tail else ""
            if line.startswith("ferhpo: error: "):
                error = FerhpoError(line[len("ferhpo: error: ") :])
                error.exit_code = code  # a storage outage or a full disk: 1; the user's input: 2
                failures.append(error)
                continue
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
            failures.append(
                WorkerError(
                    f"search worker {index} {how}; the study keeps its finished trials and retries the one that "
                    f"worker was running: rerun the same command (worker log: {log_path})"
                )
            )
    if failures and not interrupted:
        raise failures[0]
    return SearchOutcome(interrupted, last.counts, time.time() - start, terminated)


def _watch(study, settings: SearchSettings, start: float, last: Progress | None) -> Progress:
    """`watch`, or during an outage the last snapshot, marked with the outage's start."""
    import optuna

    # When the server goes away mid-read, Optuna takes the error for a query too large,
    # warns ("Caught an error from sqlalchemy ... Falling back") and tries again; the
    # live line says what happened, on one line.
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        return watch(study, settings, start)
    except Exception as exc:
        if not unreachable(exc):
            raise
        since = (last.storage_down_since if last is not None else None) or time.time()
        if last is None:
            zero = dict.fromkeys(("complete", "pruned", "failed", "running", "waiting", "done"), 0)
            return Progress(zero, settings.expected_runs, None, time.time() - start, storage_down_since=since)
        return dataclasses.replace(last, elapsed=time.time() - start, storage_down_since=since)
    finally:
        optuna.logging.set_verbosity(level)


def top_records(study, settings: SearchSettings, k: int = 5) -> list[store.RunRecord]:
    """The best complete trials by the (first) objective, best first; with rungs, the
    highest rung's runs first (a longer run's value is not comparable to a shorter one's)."""
    from ferhpo.engines.trial import objective_value

    done = [r for r in store.records(study, states=("complete",)) if r.kind == "trial"]
    return store.best_first(done, lambda r: objective_value(r.to_dict(), settings.objectives[0]), group=store.higher_rung_first)[
        :k
    ]


def pareto_records(study) -> list[store.RunRecord]:
    """The Pareto front of a multi-objective study (objective against parameter count)."""
    numbers = {t.number for t in study.best_trials}
    out = []
    for trial in study.get_trials(deepcopy=False):
        raw = trial.user_attrs.get(store.RECORD_ATTR)
        if trial.number in numbers and raw is not None:
            out.append(store.RunRecord.from_dict(raw))
    return out
