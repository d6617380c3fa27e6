"""The results store: one record schema for baseline runs and search trials.

Records live in an Optuna storage (a SQLite file under `studies/` by default, any
Optuna URL such as PostgreSQL for several machines): one Optuna trial per run, its
value the validation objective, the whole `RunRecord` as the user attribute
"ferhpo.record". Per-run artifacts (record JSON, weights, test predictions, learning
curve) lie under `studies/<study>/<run>/`. A finished run enters the storage in one
transaction (`add_record`), so a crash never leaves half a record.

This module imports optuna but never keras: reports read it anywhere, in seconds.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from ferhpo.errors import StoreError
from ferhpo.redact import redact

SCHEMA = 1
RECORD_ATTR = "ferhpo.record"
STUDIES_DIR = Path("studies")
DEFAULT_STORAGE = f"sqlite:///{STUDIES_DIR.as_posix()}/ferhpo.db"

T = TypeVar("T")


@dataclass(frozen=True)
class RunRecord:
    """Everything one run measured, and enough configuration to rebuild and retrain it.

    `evaluation` maps "val", "test", "test_public", "test_private" to the metrics of
    `ferhpo.training.classification_metrics`. `selection_sees` names the test subsets
    the validation split overlapped: their numbers are not clean test numbers.
    """

    study: str
    run: str  # preset name for baselines, "trial-<n>" for search trials
    run_key: str  # hash of everything that decides the result (config, budget, data, seed)
    run_id: str  # this attempt's artifact folder under studies/<study>/
    kind: str  # "baseline" or "trial"
    status: str  # "complete", "pruned" or "failed"
    family: str
    model: dict[str, Any]
    train: dict[str, Any]
    budget: dict[str, Any]  # name, epochs, train_limit, val_limit, test_limit
    protocol: str
    split_seed: int
    selection_sees: list[str]
    data_fingerprint: str
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int
    best_val_accuracy: float
    evaluation: dict[str, dict]
    params: int
    train_images: int
    wall_seconds: float
    train_seconds: float
    images_per_second: float
    environment: dict[str, str]
    artifacts: dict[str, str] = field(default_factory=dict)  # paths relative to the study folder
    reported_test_accuracy: float | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Any] = field(default_factory=dict)  # engine, sampler, pruner, ...
    error: str = ""
    # wall seconds per phase (ferhpo.phases), their sum and the start; empty in older records
    phases: dict[str, float] = field(default_factory=dict)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    schema: int = SCHEMA

    @property
    def test_accuracy(self) -> float | None:
        test = self.evaluation.get("test")
        return None if test is None else test["accuracy"]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunRecord:
        if raw.get("schema") != SCHEMA:
            raise StoreError(f"record schema {raw.get('schema')!r} is not supported; expected {SCHEMA}")
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(n for n in names if n not in raw and _required(n))
        if missing:
            raise StoreError(f"record {raw.get('run', '?')!r} lacks field(s) {', '.join(missing)}")
        return cls(**{k: v for k, v in raw.items() if k in names})


def _required(name: str) -> bool:
    f = next(f for f in dataclasses.fields(RunRecord) if f.name == name)
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


# --------------------------------------------------------------------------- storage


def storage_url(url: str | None = None) -> str:
    """The given URL, else $FERHPO_STORAGE, else the SQLite file under studies/."""
    return url or os.environ.get("FERHPO_STORAGE") or DEFAULT_STORAGE


#: Seconds between a running trial's heartbeats; a trial silent for GRACE_FACTOR times
#: as long is taken for dead (its worker was killed), marked failed and retried.
HEARTBEAT_SECONDS = 10
GRACE_FACTOR = 3
SURPLUS_ATTR = "ferhpo.surplus"  # a trial started by a race past --trials; never counted
ERROR_ATTR = "ferhpo.error"  # why a trial failed (its own failure, not a killed worker)
INTERRUPTED_ATTR = "ferhpo.interrupted"  # stopped by Ctrl-C, SIGTERM or a full disk; retried
DISK_FULL_ATTR = "ferhpo.disk_full"  # why a trial could not write its results (its retry is queued)
CONFIRM_ATTR = "ferhpo.confirm"  # study attribute of `ferhpo confirm`: source, top, reference, seeds
ENSEMBLES_ATTR = "ferhpo.ensembles"  # study attribute: {name: summary} of `ferhpo ensemble` results
SETTINGS_ATTR = "ferhpo.search"  # study attribute: the binding settings of its search (`engines.SearchSettings`)


def heartbeat_seconds() -> int:
    """The heartbeat interval: $FERHPO_HEARTBEAT (seconds) or HEARTBEAT_SECONDS."""
    raw = os.environ.get("FERHPO_HEARTBEAT")
    if raw is None:
        return HEARTBEAT_SECONDS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise StoreError(f"FERHPO_HEARTBEAT must be a positive number of seconds, but got {raw!r}")
    return value


def silent_after() -> float:
    """Seconds after its start at which a running trial that never sent a heartbeat is
    taken for dead: three grace periods (90 s by default). A worker beats right after
    the sampler has drawn (Optuna's `ask`), so this leaves the sampler time, and the
    machines' clocks some disagreement (the trial's start is its worker's clock)."""
    return 3.0 * GRACE_FACTOR * heartbeat_seconds()


def open_storage(url: str | None = None, *, heartbeat: bool = False, retry: float | None = None):
    """An Optuna RDB storage; StoreError (one line) when it cannot be opened.

    With `heartbeat`, running trials send heartbeats, and a trial whose worker died
    (no heartbeat for a grace period) is marked failed and re-queued with the same
    parameters (Optuna's RetryFailedTrialCallback) the next time any worker asks.
    With `retry` (seconds), a database server's calls ride out an outage that long
    (`ferhpo.outage`); commands that only read (report, status) fail at once instead.
    Connections to a server are checked before use (pool_pre_ping), so one that the
    server dropped while idle is replaced instead of failing the next call.
    """
    import optuna
    import sqlalchemy.exc

    url = storage_url(url)
    engine_kwargs: dict[str, Any] | None = None
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the folder of storage {redact(url)} ({exc.strerror}); expected a writable path"
            ) from None
        if path.is_dir():
            raise StoreError(f"storage {redact(url)} names a folder; expected a SQLite file path")
        # Workers, trial processes and heartbeats share one file: wait for the lock
        # rather than fail after SQLite's default 5 s.
        engine_kwargs = {"connect_args": {"timeout": 60}}
    elif "://" not in url:
        raise StoreError(
            f"storage {redact(url)!r} is not a URL; expected e.g. sqlite:///studies/ferhpo.db or postgresql://user@host/db"
        )
    else:
        engine_kwargs = {"pool_pre_ping": True}
        if url.startswith("postgres"):
            engine_kwargs["connect_args"] = {"connect_timeout": 10}  # a server that hangs counts as away
    beat: dict[str, Any] = {}
    if heartbeat:
        interval = heartbeat_seconds()
        beat = {"heartbeat_interval": interval, "grace_period": GRACE_FACTOR * interval}
        if not hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):  # Optuna < 5
            beat["failed_trial_callback"] = optuna.storages.RetryFailedTrialCallback(max_retry=None)
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9; ferhpo relies on them
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if heartbeat and hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
                beat["heartbeat_stale_trial_callback"] = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None)
            if retry is not None and not url.startswith("sqlite"):
                from ferhpo.outage import RetryingRDBStorage

                return RetryingRDBStorage(url, retry_window=retry, engine_kwargs=engine_kwargs, **beat)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **beat)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError, OSError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        if "import DB access module" in reason or isinstance(exc, ImportError):
            scheme = url.split("://", 1)[0]
            hint = (
                "pip install 'ferhpo[postgres]' (psycopg)"
                if scheme.startswith("postgres")
                else f"the SQLAlchemy driver for {scheme} installed"
            )
            raise StoreError(
                f"cannot open storage {redact(url)}: no database driver for {scheme}:// is installed; expected {hint}"
            ) from None
        raise StoreError(
            f"cannot open storage {redact(url)}: {redact(reason)}; expected a reachable, writable Optuna storage"
        ) from None


_Direction = Literal["minimize", "maximize"]


def open_study(
    name: str,
    url: str | None = None,
    *,
    create: bool = True,
    direction: str = "maximize",
    directions: list[str] | None = None,
    storage=None,
    sampler=None,
    pruner=None,
):
    """Load study `name`; create it when `create`, else StoreError if it does not exist."""
    import optuna

    storage = storage if storage is not None else open_storage(url)
    if create:
        try:
            return optuna.create_study(
                study_name=name,
                storage=storage,
                # plain strings from the settings; Optuna checks them itself
                direction=cast(_Direction | None, None if directions else direction),
                directions=cast(list[_Direction] | None, directions),
                sampler=sampler,
                pruner=pruner,
                load_if_exists=True,
            )
        except ValueError as exc:  # an existing study with other directions
            raise StoreError(f"study {name!r} exists with other objectives ({exc}); expected a new --study name") from None
    try:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        known = [s.study_name for s in storage.get_all_studies()]
        listed = ", ".join(known) if known else "none"
        raise StoreError(f"no study {name!r} in {redact(storage_url(url))}; studies there: {listed}") from None


def add_record(study, record: RunRecord, value: float | None = None) -> None:
    """Insert a finished run as one Optuna trial (one transaction).

    The trial's value is `value` (default: best validation accuracy) and its
    intermediate values are the per-epoch validation accuracies, so Optuna's own
    tools (optuna-dashboard, pruners' statistics) see the curves.
    """
    import optuna

    state = {
        "complete": optuna.trial.TrialState.COMPLETE,
        "pruned": optuna.trial.TrialState.PRUNED,
        "failed": optuna.trial.TrialState.FAIL,
    }[record.status]
    curve = record.history.get("val_accuracy", [])
    trial = optuna.trial.create_trial(
        state=state,
        value=(record.best_val_accuracy if value is None else value) if state == optuna.trial.TrialState.COMPLETE else None,
        params={},
        distributions={},
        user_attrs={RECORD_ATTR: record.to_dict(), "run": record.run, "kind": record.kind},
        intermediate_values={i + 1: v for i, v in enumerate(curve) if v == v},  # drop NaN
    )
    study.add_trial(trial)


def records(study, *, states: tuple[str, ...] = ("complete", "pruned", "failed")) -> list[RunRecord]:
    """Every run recorded in `study`, oldest first.

    The Optuna trial state is the truth: a record written by a trial process whose
    worker then died before finishing the trial (state FAIL, record not "failed") is
    left out, as are trials still running and surplus trials; the retried trial
    carries the result.
    """
    import optuna

    state_names = {
        optuna.trial.TrialState.COMPLETE: "complete",
        optuna.trial.TrialState.PRUNED: "pruned",
        optuna.trial.TrialState.FAIL: "failed",
    }
    out = []
    for trial in study.get_trials(deepcopy=False):
        raw = trial.user_attrs.get(RECORD_ATTR)
        status = state_names.get(trial.state)
        if raw is None or status is None or trial.user_attrs.get(SURPLUS_ATTR):
            continue
        if raw.get("status") != status:
            continue
        if status in states:
            out.append(RunRecord.from_dict(raw))
    return out


def higher_rung_first(record: RunRecord) -> int:
    """A `best_first` group: the runs of a search's higher rung (`--rungs`: more epochs)
    before those of a lower one, whose validation values are not comparable with theirs."""
    return -int(record.search.get("rung") or 0)


def best_first(
    items: Iterable[T],
    value: Callable[[T], float | None],
    *,
    maximize: bool = True,
    group: Callable[[T], Any] | None = None,
    tiebreak: Callable[[T], Any] | None = None,
) -> list[T]:
    """`items` (records, or anything that has an objective) best first.

    Ordered by `group(item)` when given (lower first: e.g. complete runs before pruned
    ones), then by `value(item)` (highest first when `maximize`, lowest otherwise; None
    last), then by `tiebreak(item)` when given; items still tied keep the order given
    (a record's order in the storage: the one recorded first wins).
    """

    def key(item: T):
        v = value(item)
        return (
            group(item) if group is not None else 0,
            math.inf if v is None else (-v if maximize else v),
            tiebreak(item) if tiebreak is not None else 0,
        )

    return sorted(items, key=key)


def counted(trial) -> bool:
    """Whether a finished trial counts towards a search's --trials.

    Complete and pruned trials count, and so do trials that failed by themselves
    (NaN loss, out of memory, a rejected configuration: ERROR_ATTR). Trials of killed
    workers, interrupted trials (both retried) and surplus trials do not.
    """
    import optuna

    state = trial.state
    if trial.user_attrs.get(SURPLUS_ATTR):
        return False
    if state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
        return True
    return state == optuna.trial.TrialState.FAIL and bool(trial.user_attrs.get(ERROR_ATTR))


def holds_place(trial) -> bool:
    """Whether a trial holds its place in a search: counted, running or waiting (a killed
    worker's, an interrupted or a surplus trial does not: it is retried or ignored)."""
    import optuna

    return counted(trial) or trial.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)


def counts(study) -> dict[str, int]:
    """Counted trials by outcome, and those running or waiting (re-queued)."""
    return count_trials(study.get_trials(deepcopy=False))


def count_trials(trials) -> dict[str, int]:
    """`counts` of trials already read (the caller's `study.get_trials`)."""
    import optuna

    out = {"complete": 0, "pruned": 0, "failed": 0, "running": 0, "waiting": 0}
    for t in trials:
        if counted(t):
            out[{"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}[t.state.name]] += 1
        elif t.state == optuna.trial.TrialState.RUNNING:
            out["running"] += 1
        elif t.state == optuna.trial.TrialState.WAITING:
            out["waiting"] += 1
    out["done"] = out["complete"] + out["pruned"] + out["failed"]
    return out


def failures(study) -> list[dict[str, Any]]:
    """Trials that failed by themselves: number, reason and hyperparameters."""
    out = []
    for trial in study.get_trials(deepcopy=False):
        if counted(trial) and trial.user_attrs.get(ERROR_ATTR):
            out.append({"number": trial.number, "error": trial.user_attrs[ERROR_ATTR], "params": dict(trial.params)})
    return out


#: A run's resume checkpoint (`ferhpo search --checkpoint-every`), in its folder until it finishes.
RESUME_DIR = "resume"


def run_dir(study_name: str, run: str, root: Path = STUDIES_DIR) -> Path:
    """The artifact folder of one run: studies/<study>/<run>/."""
    return root / study_name / run


def environment() -> dict[str, str]:
    """Backend and library versions, for the record (imports what is already loaded)."""
    import platform
    import sys
    from importlib import metadata

    env = {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine()}
    for package in ("ferhpo", "keras", "tensorflow", "jax", "torch", "numpy", "optuna", "keras-tuner"):
        try:
            env[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    keras = sys.modules.get("keras")
    if keras is not None:
        env["backend"] = keras.backend.backend()
    if "TF_ENABLE_ONEDNN_OPTS" in os.environ:
        env["TF_ENABLE_ONEDNN_OPTS"] = os.environ["TF_ENABLE_ONEDNN_OPTS"]
    return env
