"""Start a search: prepare (or resume) the study, run its workers, watch progress.

The command's own process never trains: it checks the settings against the study,
starts `workers` worker processes (`ferhpo.engines.optuna_engine`), or runs the
KerasTuner engine, and polls the storage for the live progress line.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable


from ferhpo import faults, store
from ferhpo.atomic import write_json
from ferhpo.engines import SETTINGS_ATTR, SearchSettings, check_resume, study_dir
from ferhpo.engines.optuna_engine import _die_with_parent
from ferhpo.errors import FerhpoError, WorkerError
from ferhpo.progress import WANTED_ATTR
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


@dataclass(frozen=True)
class SearchOutcome:
    interrupted: bool
    counts: dict[str, int]
    elapsed: float


def prepare_study(settings: SearchSettings):
    """Create the study, or check that an existing one was started with these settings."""
    study = store.open_study(settings.study, settings.storage, directions=settings.directions)
    saved = study.user_attrs.get(SETTINGS_ATTR)
    if saved is None and study.get_trials(deepcopy=False):
        raise FerhpoError(
            f"study {settings.study!r} already holds runs that are not from a search (a baseline study?); "
            f"expected a new --study name for the search"
        )
    check_resume(settings, saved)
    if saved is None:
        study.set_user_attr(SETTINGS_ATTR, settings.binding())
        study.set_user_attr("ferhpo.search_command", {"sampler": settings.sampler, "pruner": settings.pruner})
    if study.user_attrs.get(WANTED_ATTR) != settings.trials:  # for `ferhpo status` and its estimate
        study.set_user_attr(WANTED_ATTR, settings.trials)
    return study


def watch(study, settings: SearchSettings, start: float) -> Progress:
    """The study now: counts, best, and each running trial's progress from the storage
    (one read of its trials: the live line asks every second)."""
    now = snapshot(study, wanted=settings.trials)
    return Progress(now.counts, settings.trials, now.best, time.time() - start, now)


def run_optuna(settings: SearchSettings, study, on_progress: Callable[[Progress], None]) -> SearchOutcome:
    """Run `settings.workers` worker processes until `study` (from `prepare_study`) has its trials."""
    folder = study_dir(settings)
    settings_path = folder / "search-settings.json"
    write_json(settings_path, dataclasses.asdict(settings))
    start = time.time()
    deadline = "none" if settings.timeout is None else repr(start + settings.timeout)
    env = {**os.environ, faults.ROLE: "worker"}
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
                    preexec_fn=_die_with_parent,
                )
            )
    interrupted = False
    try:
        while any(w.poll() is None for w in workers):
            on_progress(watch(study, settings, start))  # the live line decides what to show
            time.sleep(1.0)
    except KeyboardInterrupt:
        interrupted = True
        # Ctrl-C reached the workers too; give them time to end their trials cleanly.
        for w in workers:
            try:
                w.wait(timeout=60)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()
    codes = [w.wait() for w in workers]
    last = watch(study, settings, start)
    on_progress(last)
    if not interrupted:
        for index, (code, log_path) in enumerate(zip(codes, logs)):
            if code == 130:
                interrupted = True
            elif code != 0:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] if log_path.exists() else []
                line = tail[0] if tail else ""
                if line.startswith("ferhpo: error: "):
                    raise FerhpoError(line[len("ferhpo: error: ") :])
                how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
                raise WorkerError(
                    f"search worker {index} {how}; the study keeps its finished trials and retries the one that "
                    f"worker was running: rerun the same command (worker log: {log_path})"
                )
    return SearchOutcome(interrupted, last.counts, time.time() - start)


def top_records(study, settings: SearchSettings, k: int = 5) -> list[store.RunRecord]:
    """The best complete trials by the (first) objective, best first."""
    from ferhpo.engines.optuna_engine import objective_value

    done = [r for r in store.records(study, states=("complete",)) if r.kind == "trial"]
    done.sort(key=lambda r: objective_value(r.to_dict(), settings.objectives[0]), reverse=True)
    return done[:k]


def pareto_records(study) -> list[store.RunRecord]:
    """The Pareto front of a multi-objective study (objective against parameter count)."""
    numbers = {t.number for t in study.best_trials}
    out = []
    for trial in study.get_trials(deepcopy=False):
        raw = trial.user_attrs.get(store.RECORD_ATTR)
        if trial.number in numbers and raw is not None:
            out.append(store.RunRecord.from_dict(raw))
    return out
