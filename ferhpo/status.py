"""Where a study stands, read from its storage alone: `ferhpo status` and the live line.

For every study in a storage: its kind and counts. For one study: the counts, each
running trial's epoch, latest validation value, elapsed time, last heartbeat (stale
past the grace period after which the engine retries the trial) and the time it has
left by its own epoch times (`ferhpo.progress`), the best so far, and the time the
study has left. Nothing is written, and Keras is never imported, so it answers in
a second on any machine that reaches the storage.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from ferhpo import store
from ferhpo.errors import StoreError
from ferhpo.progress import PROGRESS_ATTR, WANTED_ATTR, RunProgress, clock, study_seconds_left
from ferhpo.redact import redact


@dataclass
class RunningTrial:
    """A running trial as the storage shows it."""

    number: int
    epoch: int | None  # finished epochs (None: no progress stored yet: starting up)
    epochs: int | None
    batch: int | None
    batches: int | None
    value: float | None
    elapsed: float | None  # seconds since the trial started
    heartbeat_age: float | None  # seconds since its worker's last heartbeat (None: none recorded)
    stale: bool  # no heartbeat for the grace period: its worker is gone; the trial will be retried
    seconds_left: float | None
    seconds_per_epoch: float | None = None
    accelerator: bool | None = None


@dataclass
class StudyStatus:
    """One study: counts, running trials, the best so far and the estimated time left."""

    study: str
    kind: str  # "search", "baseline" or "other"
    objective: str
    counts: dict[str, int]
    wanted: int | None  # the latest search command's --trials (None: not a search)
    best: float | None
    best_run: str | None
    running: list[RunningTrial] = field(default_factory=list)
    seconds_left: float | None = None
    trial_seconds: float | None = None  # the measured (or projected) length of one trial
    stale_after: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def open_existing_storage(url: str | None):
    """The storage at `url`, opened for reading: a SQLite file that does not exist is an
    error, not a new empty storage (status writes nothing)."""
    resolved = store.storage_url(url)
    if resolved.startswith("sqlite:///"):
        path = Path(resolved[len("sqlite:///") :])
        if not path.is_file():
            raise StoreError(
                f"no storage at {redact(resolved)} (no such file); expected an existing study database "
                f"(--storage URL or $FERHPO_STORAGE)"
            )
    return store.open_storage(resolved)


def stale_after() -> float:
    """Seconds without a heartbeat after which the engine takes a trial's worker for dead."""
    return float(store.GRACE_FACTOR * store.heartbeat_seconds())


def heartbeat_ages(storage, trial_ids: list[int]) -> dict[int, float]:
    """Seconds since each trial's last heartbeat, by the database's own clock (so the
    machines' clocks need not agree). Reads Optuna's heartbeat table; {} when the
    storage has none (not an RDB storage)."""
    if not trial_ids:
        return {}
    import sqlalchemy
    from optuna.storages._rdb import models  # the table Optuna's own stale check reads

    backend = getattr(storage, "_backend", storage)
    engine = getattr(backend, "engine", None)
    if engine is None:
        return {}
    beat = models.TrialHeartbeatModel
    with engine.connect() as connection:
        now = connection.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar()
        rows = connection.execute(sqlalchemy.select(beat.trial_id, beat.heartbeat).where(beat.trial_id.in_(trial_ids))).all()
    if isinstance(now, str):  # SQLite without type information
        now = _dt.datetime.fromisoformat(now)
    now = now.replace(tzinfo=None)
    return {trial_id: max(0.0, (now - at.replace(tzinfo=None)).total_seconds()) for trial_id, at in rows}


def _duration(trial) -> float | None:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return None
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def snapshot(study, *, wanted: int | None = None, now: float | None = None) -> StudyStatus:
    """The status of `study` (an Optuna study on an RDB storage) at `now`.

    `wanted` overrides the trial count the study stored. The time left: the running
    trials' own estimates, plus the trials still to start at the mean length of the
    finished ones (before any finished: the projected length of the running ones),
    shared among the live workers.
    """
    now = time.time() if now is None else now
    trials = study.get_trials(deepcopy=False)
    attrs = study.user_attrs
    search = attrs.get(store.SETTINGS_ATTR)
    counts = store.count_trials(trials)
    if search is not None:
        kind = "search"
    elif any(t.user_attrs.get("kind") == "baseline" for t in trials):
        kind = "baseline"
    else:
        kind = "other"
    objectives = (search or {}).get("objectives") or ["val_accuracy"]
    wanted = wanted if wanted is not None else attrs.get(WANTED_ATTR)

    best = best_run = None
    if len(study.directions) == 1:
        for t in trials:
            if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None and store.counted(t):
                if best is None or t.value > best:
                    best, best_run = t.value, t.user_attrs.get("run") or f"trial-{t.number}"

    running_trials = [
        t for t in trials if t.state == optuna.trial.TrialState.RUNNING and not t.user_attrs.get(store.SURPLUS_ATTR)
    ]
    ages = heartbeat_ages(study._storage, [t._trial_id for t in running_trials])
    grace = stale_after()
    running = []
    for t in running_trials:
        raw = t.user_attrs.get(PROGRESS_ATTR)
        p = RunProgress.from_dict(raw) if raw else None
        age = ages.get(t._trial_id)
        start = t.datetime_start.timestamp() if t.datetime_start is not None else None
        # Without ferhpo's progress (a trial of an older ferhpo), the epochs it reported
        # to the pruner still say how far it is.
        reported = max(t.intermediate_values) if t.intermediate_values else None
        running.append(
            RunningTrial(
                number=t.number,
                epoch=p.epoch if p else reported,
                epochs=p.epochs if p else ((search or {}).get("max_epochs") if reported else None),
                batch=p.batch if p else None,
                batches=p.batches if p else None,
                value=p.value if p else (t.intermediate_values[reported] if reported else None),
                elapsed=max(0.0, now - start) if start is not None else None,
                heartbeat_age=age,
                stale=age is not None and age > grace,
                seconds_left=p.seconds_left(now) if p else None,
                seconds_per_epoch=p.seconds_per_epoch(now) if p else None,
                accelerator=p.accelerator if p else None,
            )
        )

    finished = [d for t in trials if store.counted(t) and t.state != optuna.trial.TrialState.FAIL for d in [_duration(t)] if d]
    per_trial = statistics.fmean(finished) if finished else None
    if per_trial is None:
        projected = [(r.elapsed or 0.0) + r.seconds_left for r in running if not r.stale and r.seconds_left is not None]
        per_trial = statistics.fmean(projected) if projected else None
    live = [r for r in running if not r.stale]
    left = None
    if wanted is not None:
        pending = max(0, wanted - counts["done"] - len(live))
        lefts = [r.seconds_left if r.seconds_left is not None else per_trial for r in live]
        known = [v for v in lefts if v is not None]
        if len(known) == len(lefts):
            left = study_seconds_left(known, pending, per_trial, len(live))
    return StudyStatus(
        study=study.study_name,
        kind=kind,
        objective=",".join(objectives),
        counts=counts,
        wanted=wanted,
        best=best,
        best_run=best_run,
        running=running,
        seconds_left=left,
        trial_seconds=per_trial,
        stale_after=grace,
    )


def study_status(name: str, url: str | None = None, *, now: float | None = None) -> StudyStatus:
    """`snapshot` of study `name` in the storage at `url`; StoreError when either is missing."""
    storage = open_existing_storage(url)
    return snapshot(store.open_study(name, url, create=False, storage=storage), now=now)


def all_studies(url: str | None = None) -> list[StudyStatus]:
    """Every study in the storage at `url`, by name (running trials without heartbeats read)."""
    storage = open_existing_storage(url)
    out = []
    for summary in sorted(storage.get_all_studies(), key=lambda s: s.study_name):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        out.append(snapshot(study))
    return out


# --------------------------------------------------------------------------- text


def _trial_line(r: RunningTrial) -> str:
    if r.epoch is None:
        where = "starting"
    else:
        where = f"epoch {r.epoch}/{r.epochs}"
        if r.batches and r.batch:
            where += f" (batch {r.batch}/{r.batches} of epoch {r.epoch + 1})"
    value = f"{r.value:.4f}" if r.value is not None else "-"
    if r.heartbeat_age is None:
        beat = "no heartbeat"
    elif r.stale:
        beat = f"heartbeat {clock(r.heartbeat_age)} ago: STALE (its worker is gone; the trial will be retried)"
    else:
        beat = f"heartbeat {r.heartbeat_age:.0f} s ago"
    return (
        f"trial {r.number}: {where}, last value {value}, elapsed {clock(r.elapsed)}, "
        f"left {'~' + clock(r.seconds_left) if r.seconds_left is not None else '-'}, {beat}"
    )


def render(s: StudyStatus) -> list[str]:
    """`ferhpo status --study NAME` as lines of text."""
    c = s.counts
    wanted = f"/{s.wanted}" if s.wanted is not None else ""
    lines = [
        f"study {s.study} ({s.kind}, objective {s.objective})",
        f"trials {c['done']}{wanted}: complete {c['complete']}, pruned {c['pruned']}, failed {c['failed']}; "
        f"running {c['running']}, waiting {c['waiting']}",
        f"best {s.objective} {s.best:.4f} ({s.best_run})" if s.best is not None else f"best {s.objective} -",
    ]
    if s.running:
        lines.append(f"running (a heartbeat older than {s.stale_after:.0f} s is stale):")
        lines += [f"  {_trial_line(r)}" for r in s.running]
    if s.wanted is not None:
        left = c["done"] >= s.wanted and not s.running
        lines.append(
            "time left: none, the study has its trials"
            if left
            else f"time left: {'~' + clock(s.seconds_left) if s.seconds_left is not None else '-'}"
            + (f" (one trial takes ~{clock(s.trial_seconds)})" if s.trial_seconds is not None else " (not measured yet)")
        )
    return lines


def render_all(studies: list[StudyStatus], url: str) -> list[str]:
    """`ferhpo status` (every study) as lines of text."""
    if not studies:
        return [f"no studies in {redact(url)}"]
    width = max(5, *(len(s.study) for s in studies)) + 2
    lines = [f"{'study':<{width}}{'kind':<10}{'trials':>8}{'complete':>10}{'pruned':>8}{'failed':>8}{'running':>9}  best"]
    for s in studies:
        c = s.counts
        trials = f"{c['done']}/{s.wanted}" if s.wanted is not None else str(c["done"])
        best = f"{s.best:.4f} {s.objective}" if s.best is not None else "-"
        lines.append(
            f"{s.study:<{width}}{s.kind:<10}{trials:>8}{c['complete']:>10}{c['pruned']:>8}{c['failed']:>8}"
            f"{c['running']:>9}  {best}"
        )
    return lines
