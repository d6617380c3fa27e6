"""Riding out a storage outage: retry with backoff for a window, then stop with one line.

A search lasts days; in that time the database restarts. A search's workers open the
storage with `store.open_storage(..., retry=window)`, which returns a `RetryingRDBStorage`:
every call that fails because the server cannot be reached (a refused or dropped
connection) is retried with exponential backoff (tenacity) until the storage answers or
`window` seconds have passed since the outage began; then `StorageUnavailable` (exit
code 1). Trial processes use window 0 (`StorageUnavailable` at once): they train on
and leave the storage to their worker (`ferhpo.engines.trial`).

The process-wide `OUTAGE` says since when the storage has been unreachable (for the
live line) and when it came back: a worker does not fail "stale" trials right after an
outage, whose heartbeats could not reach the storage either (`recently_recovered`).

Standard library, tenacity and SQLAlchemy (through Optuna) only; never Keras.
"""

from __future__ import annotations

import functools
import re
import threading
import time

import optuna
import tenacity

from ferhpo.errors import StoreError, chain
from ferhpo.redact import redact

#: Longest wait between two attempts: a storage that is back is seen within this.
MAX_WAIT = 10.0


class StorageUnavailable(StoreError):
    """The storage stayed unreachable past the retry window; nothing was lost (exit 1)."""

    exit_code = 1


class Outage:
    """This process's view of the storage: unreachable since when, back since when."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.since: float | None = None
        self.recovered_at: float | None = None
        self.reason = ""

    def failed(self, reason: str) -> float:
        """A call found the storage unreachable; the outage's start (now if it is new)."""
        with self._lock:
            if self.since is None:
                self.since = time.time()
            self.reason = reason
            return self.since

    def answered(self) -> None:
        with self._lock:
            if self.since is not None:
                self.since = None
                self.recovered_at = time.time()

    def recently_recovered(self, seconds: float) -> bool:
        """Whether the storage came back less than `seconds` ago (or is still away)."""
        with self._lock:
            if self.since is not None:
                return True
            return self.recovered_at is not None and time.time() - self.recovered_at < seconds


OUTAGE = Outage()


def unreachable(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) says the database server could not be reached.

    Optuna wraps SQLAlchemy's errors in StorageInternalError; SQLAlchemy raises
    OperationalError or InterfaceError for refused, dropped and timed-out connections
    (and DBAPIError with ``connection_invalidated`` for a connection it had to drop).
    Integrity errors and bad data are not outages and are never retried.
    """
    import sqlalchemy.exc

    for link in chain(exc):
        if isinstance(link, StorageUnavailable):
            return False
        if isinstance(link, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.DisconnectionError)):
            return True
        if isinstance(link, sqlalchemy.exc.DBAPIError) and link.connection_invalidated:
            return True
        if isinstance(link, (ConnectionError, TimeoutError)):
            return True
    return False


def reason_of(exc: BaseException) -> str:
    """The server's own words for an outage, on one line, without SQLAlchemy's boilerplate."""
    cause = exc
    while cause.__cause__ is not None:
        cause = cause.__cause__
    text = str(getattr(cause, "orig", None) or cause).strip().splitlines()
    line = text[0] if text else type(cause).__name__
    return re.sub(r"\s+", " ", line)[:200]


def clock(stamp: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(stamp))


def call(fn, url: str, window: float):
    """`fn()`, retried while the storage at `url` is unreachable, for `window` seconds
    counted from the outage's start; StorageUnavailable after that."""

    def give_up(state: tenacity.RetryCallState) -> bool:
        outcome = state.outcome
        assert outcome is not None  # stop is asked after an attempt
        exc = outcome.exception()
        assert exc is not None  # ... that failed: the retry predicate asked for another
        since = OUTAGE.failed(reason_of(exc))
        return time.time() - since >= window

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(unreachable),
        stop=give_up,
        wait=tenacity.wait_exponential(multiplier=0.5, max=MAX_WAIT) + tenacity.wait_random(0, 1),
        reraise=True,
    )
    try:
        result = retrying(fn)
    except Exception as exc:
        if not unreachable(exc):
            raise
        since = OUTAGE.since or time.time()
        raise StorageUnavailable(
            f"storage {redact(url)} unreachable since {clock(since)} ({reason_of(exc)}); gave up after the "
            f"{window:g} s retry window"
        ) from None
    OUTAGE.answered()
    return result


#: The RDBStorage methods that reach the database (those `_CachedStorage`, the
#: heartbeat and ferhpo call); each is retried as a whole.
_RETRIED = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
    "get_study_id_from_name", "get_study_name_from_id", "get_study_directions",
    "get_study_user_attrs", "get_study_system_attrs", "get_all_studies",
    "create_new_trial", "_create_new_trial", "set_trial_param", "_set_trial_param", "get_trial_param",
    "set_trial_state_values", "set_trial_intermediate_value", "set_trial_user_attr",
    "set_trial_system_attr", "get_trial_user_attrs", "get_trial_system_attrs",
    "get_trial_id_from_study_id_trial_number", "get_trial", "get_all_trials", "_get_trials",
    "get_best_trial", "_get_best_trial_id", "record_heartbeat",
)  # fmt: skip


class RetryingRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage whose database calls ride out an outage (`call`).

    A retried write whose commit reached the server just before the connection dropped
    could apply twice; with a server that stops or restarts, the transaction in flight
    is rolled back instead, so in practice each call applies once.
    """

    def __init__(self, url: str, *, retry_window: float, **kwargs):
        self.retry_window = float(retry_window)
        call(functools.partial(super().__init__, url, **kwargs), url, self.retry_window)

    def just_recovered(self) -> bool:
        """Whether the storage is away or came back too recently to take any trial for
        dead: right after an outage, running trials' heartbeats have not reached the
        storage for a while either; their workers get time to beat again."""
        grace = self.grace_period or 2 * (self.heartbeat_interval or 0)
        return OUTAGE.recently_recovered(2 * grace + MAX_WAIT)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        if self.just_recovered():
            return []
        return _stale(self, study_id)


def _retried(name: str):
    method = getattr(optuna.storages.RDBStorage, name)

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        return call(functools.partial(method, self, *args, **kwargs), self.url, self.retry_window)

    return wrapper


for _name in _RETRIED:
    setattr(RetryingRDBStorage, _name, _retried(_name))


def _record_heartbeat(self, trial_id: int) -> None:
    # Optuna's heartbeat thread would die with a traceback; a beat that cannot be
    # recorded past the window is the outage the worker's own next call reports.
    try:
        _beat(self, trial_id)
    except StorageUnavailable:
        pass


_beat = RetryingRDBStorage.record_heartbeat
# a deliberate patch of the method (mypy forbids assigning to one)
RetryingRDBStorage.record_heartbeat = _record_heartbeat  # type: ignore[method-assign]
_stale = _retried("_get_stale_trial_ids")
