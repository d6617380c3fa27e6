"""Promotion across budgets: asynchronous successive halving (ASHA) over rungs of epochs.

With ``--rungs 3,9,27`` a search trains each new configuration for 3 epochs (rung 0).
Whenever a worker is free it first looks for a promotion, top rung down: among the
runs that finished rung k, the best 1/`eta` by validation (floor of the count over
`eta`) move up to rung k + 1 unless they already did; only when none is due does it
draw a new configuration. So no worker waits for a rung to fill (Li et al., "A system
for massively parallel hyperparameter tuning", MLSys 2020), and with N configurations
a finished search has run N, N // eta, N // eta**2, ... of them at each rung.

A rung's run is an Optuna trial of its own: the configuration's parameters (fixed,
enqueued), the rung in `RUNG_ATTR`, the configuration's identity in `CONFIG_ATTR`
(the trial number of its rung-0 run), trained from scratch for its rung's epochs with
its schedule laid over those epochs. Two workers may promote the same run at the same
moment; the storage numbers trials in order, so the lower-numbered claim runs and the
other is marked surplus (`duplicate_of`). Test accuracy plays no part in any of this.

Pure functions of the study's trials, so tests check them against hand-built trials.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ferhpo import store
from ferhpo.errors import ConfigError

RUNG_ATTR = "ferhpo.rung"  # the rung a trial runs at (0: a new configuration)
CONFIG_ATTR = "ferhpo.config"  # the trial number of the configuration's rung-0 run
DEFAULT_REDUCTION = 3


def parse_rungs(text: str) -> tuple[int, ...]:
    """`--rungs 3,9,27`: at least two epoch counts, each larger than the one before."""
    parts = [p.strip() for p in text.split(",")]
    try:
        rungs = tuple(int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--rungs must be epoch counts separated by commas, e.g. 3,9,27, but got {text!r}") from None
    if len(rungs) < 2 or any(r < 1 for r in rungs) or any(a >= b for a, b in zip(rungs, rungs[1:])):
        raise ConfigError(
            f"--rungs must be at least two positive epoch counts, each larger than the one before (e.g. 3,9,27), but got {text!r}"
        )
    return rungs


def check_reduction(eta: int) -> int:
    if eta < 2:
        raise ConfigError(f"--reduction must be >= 2 (the top 1/eta of a rung is promoted), but got {eta}")
    return eta


def rung_of(trial) -> int:
    return int(trial.user_attrs.get(RUNG_ATTR) or 0)


def config_of(trial) -> int:
    """The configuration's identity: its rung-0 trial's number (a rung-0 trial's own)."""
    value = trial.user_attrs.get(CONFIG_ATTR)
    return trial.number if value is None else int(value)


def runs_per_rung(configurations: int, rungs: Sequence[int], eta: int) -> list[int]:
    """How many runs each rung holds once a search of `configurations` has finished."""
    out = [configurations]
    for _ in rungs[1:]:
        out.append(out[-1] // eta)
    return out


def _complete(trial) -> bool:
    import optuna

    return trial.state == optuna.trial.TrialState.COMPLETE and store.counted(trial) and bool(trial.values)


def promotable(trials, rung: int, eta: int) -> list:
    """The runs of `rung` that earn a place one rung up: the best floor(n / eta) of its n
    complete runs by validation (ties: the earlier run), best first."""
    done = [t for t in trials if rung_of(t) == rung and _complete(t)]
    return store.best_first(done, lambda t: t.values[0], tiebreak=lambda t: t.number)[: len(done) // eta]


def next_promotion(trials, rungs: Sequence[int], eta: int) -> tuple[Any, int] | None:
    """The run to promote now and the rung it goes to, or None: the highest rung first
    (the nearest to a finished model), the best run first."""
    claimed = {(rung_of(t), config_of(t)) for t in trials if store.holds_place(t)}
    for rung in range(len(rungs) - 2, -1, -1):
        for t in promotable(trials, rung, eta):
            if (rung + 1, config_of(t)) not in claimed:
                return t, rung + 1
    return None


def duplicate_of(trials, trial) -> int | None:
    """The number of an earlier trial that holds `trial`'s rung and configuration (then
    `trial` is a race's second promotion and must not run), or None."""
    mine = (rung_of(trial), config_of(trial))
    earlier = [
        t.number for t in trials if t.number < trial.number and (rung_of(t), config_of(t)) == mine and store.holds_place(t)
    ]
    return min(earlier) if earlier else None


def new_configurations(trials) -> int:
    """Rung-0 runs that hold their place (counted, running or waiting)."""
    return sum(1 for t in trials if rung_of(t) == 0 and store.holds_place(t))


def decide(trials, *, configurations: int, rungs: Sequence[int], eta: int) -> tuple[str, Any]:
    """What a free worker does next: ("promote", (trial, rung)), ("waiting", None) when a
    queued trial waits, ("new", None), ("wait", None) while running trials may still
    earn a promotion, or ("done", None)."""
    import optuna

    if any(t.state == optuna.trial.TrialState.WAITING for t in trials):
        return "waiting", None
    promotion = next_promotion(trials, rungs, eta)
    if promotion is not None:
        return "promote", promotion
    if new_configurations(trials) < configurations:
        return "new", None
    if any(t.state == optuna.trial.TrialState.RUNNING for t in trials):
        return "wait", None
    return "done", None
