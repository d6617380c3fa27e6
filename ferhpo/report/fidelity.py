"""Fidelity across rungs: how well a cheap ranking predicts an expensive one.

A search with `--rungs` trains each configuration at the lowest rung and its best at
longer budgets (`ferhpo.engines.rungs`). From its complete runs this module gives,
per rung, the ranking by validation; between consecutive rungs, the rank correlation
of validation accuracy over the configurations trained at both (Spearman and Kendall,
with paired bootstrap intervals); the regret of choosing at a lower rung (test points
the lower rung's pick loses against the top rung's pick, both at the top rung's
budget); and the best run over the study's wall-clock time, for the time-to-accuracy
figure. Test accuracy is reported here and never chooses anything.

Only configurations promoted from a rung reach the next one, so each correlation is
measured over the best of the lower rung (a restricted range): it understates how well
the lower rung ranks all of its configurations.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ferhpo import store
from ferhpo.report.load import Run

#: Below this many configurations at both rungs, no interval is given (and under 3, no correlation).
MIN_FOR_INTERVAL = 4


def rung(run: Run) -> int:
    return int(run.record.search.get("rung") or 0)


def config(run: Run) -> str:
    return str(run.record.search.get("config") or run.name)


def _val(run: Run) -> float:
    return float(run.objective if run.objective is not None else run.record.best_val_accuracy)


def rankings(runs: list[Run]) -> dict[int, list[Run]]:
    """Complete runs per rung, best validation first (ties: the earlier run)."""
    out: dict[int, list[Run]] = {}
    for run in runs:
        if run.status == "complete":
            out.setdefault(rung(run), []).append(run)
    return {level: _best_first(out[level]) for level in sorted(out)}


def rank_correlation(x, y, *, seed: int = 0, resamples: int = 2000) -> dict[str, Any]:
    """Spearman's rho and Kendall's tau of paired values, each with a 95% paired
    bootstrap (percentile) interval when there are at least MIN_FOR_INTERVAL pairs."""
    from scipy import stats

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    out: dict[str, Any] = {"n": int(len(x))}
    for name, fn in (("spearman", stats.spearmanr), ("kendall", stats.kendalltau)):
        value = float(fn(x, y).statistic) if len(x) >= 3 else math.nan
        low = high = math.nan
        if len(x) >= MIN_FOR_INTERVAL and math.isfinite(value):
            with np.errstate(invalid="ignore", divide="ignore"):
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # resamples with ties only give NaN, left out below
                    result = stats.bootstrap(
                        (x, y),
                        lambda a, b, fn=fn: fn(a, b).statistic,
                        paired=True,
                        vectorized=False,
                        n_resamples=resamples,
                        method="percentile",
                        rng=np.random.default_rng(seed),
                    )
            # A resample that repeats one pair only has no ranking (NaN): the interval is
            # over the resamples that have one.
            low, high = (float(v) for v in np.nanpercentile(result.bootstrap_distribution, [2.5, 97.5]))
        out[name] = None if math.isnan(value) else value
        out[f"{name}_interval"] = None if math.isnan(low) or math.isnan(high) else [low, high]
    return out


def _best_first(runs: list[Run]) -> list[Run]:
    """By validation, best first; ties: the earlier run."""
    return store.best_first(runs, _val, tiebreak=lambda r: (r.number if r.number is not None else math.inf, r.name))


def _pick(runs: list[Run]) -> Run:
    return _best_first(runs)[0]


def regret(ranked: dict[int, list[Run]], lower: int, top: int) -> dict[str, Any] | None:
    """Test points lost by choosing at rung `lower`: among the configurations trained at
    rung `top`, the test accuracy (at `top`) of the one the top rung ranks best by
    validation minus that of the one rung `lower` ranks best. None without such runs."""
    at_top = {config(r): r for r in ranked.get(top, []) if r.record.test_accuracy is not None}
    below = [r for r in ranked.get(lower, []) if config(r) in at_top]
    if not at_top or not below:
        return None
    best_top = _pick(list(at_top.values()))
    low_pick = at_top[config(_pick(below))]
    overall = _pick(ranked[lower]) if ranked.get(lower) else None
    return {
        "lower": lower,
        "top": top,
        "n": len(at_top),
        "top_pick": best_top.name,
        "lower_pick": low_pick.name,
        "lower_pick_config": config(low_pick),
        "regret_points": 100 * (float(best_top.record.test_accuracy or 0.0) - float(low_pick.record.test_accuracy or 0.0)),
        "lower_overall_pick_config": config(overall) if overall is not None else None,
        "lower_overall_pick_reached_top": overall is not None and config(overall) in at_top,
    }


def best_over_time(runs: list[Run]) -> list[dict[str, Any]]:
    """After each complete run ends (hours since the study's first run started): the
    study's best run so far, the best validation value of the highest rung reached yet,
    with its validation and test accuracy."""
    timed = [r for r in runs if r.status == "complete" and r.record.phases.get("wall")]
    timed = [r for r in timed if r.record.phases.get("started_at") is not None]
    if not timed:
        return []
    begin = min(float(r.record.phases["started_at"]) for r in timed)
    ends = sorted(timed, key=lambda r: float(r.record.phases["started_at"]) + float(r.record.phases["wall"]))
    out, seen = [], []
    for run in ends:
        seen.append(run)
        highest = max(rung(r) for r in seen)
        best = _pick([r for r in seen if rung(r) == highest])
        hours = (float(run.record.phases["started_at"]) + float(run.record.phases["wall"]) - begin) / 3600
        out.append({"hours": hours, "run": best.name, "rung": highest, "val": _val(best), "test": best.record.test_accuracy})
    return out


def fidelity(runs: list[Run], rung_epochs: list[int] | None, *, seed: int = 0) -> dict[str, Any] | None:
    """Everything the report says about rungs; None for a study without them."""
    ranked = rankings(runs)
    if not rung_epochs and len(ranked) < 2:
        return None
    levels = sorted(ranked)
    pairs = []
    for lower, upper in zip(levels, levels[1:]):
        up = {config(r): r for r in ranked[upper]}
        both = [(r, up[config(r)]) for r in ranked[lower] if config(r) in up]
        corr = rank_correlation([_val(a) for a, _ in both], [_val(b) for _, b in both], seed=seed)
        pairs.append({"lower": lower, "upper": upper, **corr, "regret": regret(ranked, lower, upper)})
    top = levels[-1] if levels else 0
    return {
        "rung_epochs": list(rung_epochs or []),
        "rungs": {
            level: [
                {
                    "run": r.name,
                    "config": config(r),
                    "val": _val(r),
                    "test": r.record.test_accuracy,
                    "epochs": r.record.epochs_run,
                }  # fmt: skip
                for r in members
            ]
            for level, members in ranked.items()
        },
        "pairs": pairs,
        "regret_lowest": regret(ranked, levels[0], top) if len(levels) > 1 else None,
        "over_time": best_over_time(runs),
    }
