"""What a study spent: runs, epochs, time per phase, and what pruning saved against a grid.

A confirm study counts only the runs it trained itself; the seed-0 runs it copied
from the source studies were paid for, and are reported, there.
"""

from __future__ import annotations

from typing import Any

from ferhpo.phases import PHASES
from ferhpo.report.load import Run, StudyData


def grid_points(space: dict | None, max_values: int = 5) -> int | None:
    """About how many points a grid search over `space` has (as ferhpo.spaces grids it:
    every choice, at most `max_values` values per numeric range)."""
    if not space or not space.get("params"):
        return None
    total = 1
    for p in space["params"]:
        kind = p.get("type")
        if kind == "categorical":
            count = len(p.get("choices") or [])
        elif kind == "bool":
            count = 2
        elif kind in ("int", "float"):
            low, high, step = p.get("low"), p.get("high"), p.get("step")
            if low == high:
                count = 1
            elif kind == "int" and not p.get("log"):
                count = min(max_values, (high - low) // (step or 1) + 1)
            elif kind == "float" and step:
                count = min(max_values, round((high - low) / step) + 1)
            else:
                count = max_values
        else:
            return None
        total *= max(count, 1)
    return total


def time_breakdown(runs: list[Run]) -> dict[str, Any] | None:
    """Where the runs' time went: seconds per phase (ferhpo.phases) summed over the runs,
    and the share of the study's wall time spent in training steps.

    The study's wall time is its span, from the first run's process start to the last
    run's end, times the most runs that were ever going at once (the workers): a worker
    idle at the end of a search counts against the share, as it should. None when no
    record carries phases (older records).
    """
    timed = [r for r in runs if r.record.phases and r.record.phases.get("wall")]
    if not timed:
        return None
    names = (*PHASES, "other")
    totals = {name: sum(float(r.record.phases.get(name, 0.0)) for r in timed) for name in names}
    run_wall = sum(float(r.record.phases["wall"]) for r in timed)
    intervals = [(float(r.record.phases.get("started_at", 0.0)), float(r.record.phases["wall"])) for r in timed]
    begin = min(start for start, _ in intervals)
    span = max(start + wall for start, wall in intervals) - begin
    # the most runs going at once: +1 at each start, -1 at each end (ends first on ties)
    events = sorted(
        [(start, 1) for start, _ in intervals] + [(start + wall, -1) for start, wall in intervals], key=lambda e: (e[0], e[1])
    )
    going = workers = 0
    for _, step in events:
        going += step
        workers = max(workers, going)
    capacity = span * max(workers, 1)
    return {
        "runs": len(timed),
        "phases": totals,
        "run_wall_seconds": run_wall,
        "span_seconds": span,
        "workers": workers,
        "idle_seconds": max(0.0, capacity - run_wall),
        "train_share": totals["train"] / capacity if capacity > 0 else None,
        "train_share_of_runs": totals["train"] / run_wall if run_wall > 0 else None,
        "per_run": [(r.name, {n: float(r.record.phases.get(n, 0.0)) for n in names}) for r in timed],
    }


def compute_used(data: StudyData) -> dict[str, Any]:
    """Time and epochs the study's runs used, and what pruning saved.

    A confirm study counts the runs it trained (candidates and reference), not those
    copied from the source studies: their time was spent, and is reported, there."""
    runs = data.ranked
    copied = 0
    if data.confirm is not None:
        copied = sum(1 for r in data.runs if r.record.search.get("copied_from"))
        runs = [r for r in data.runs if not r.record.search.get("copied_from")]
    epochs = sum(r.record.epochs_run for r in runs)
    without = sum(r.max_epochs for r in runs)
    pruned = [r for r in runs if r.status == "pruned"]
    max_epochs = (data.settings or {}).get("max_epochs") or (max((r.max_epochs for r in runs), default=None))
    grid = grid_points(data.space)
    return {
        "runs": len(runs),
        "complete": sum(r.status == "complete" for r in runs),
        "pruned": len(pruned),
        "failed": sum(r.status == "failed" for r in runs) + len(data.failures),
        "running": data.running,
        "wall_seconds": sum(r.record.wall_seconds for r in runs),
        "train_seconds": sum(r.record.train_seconds for r in runs),
        "epochs_used": epochs,
        "epochs_without_pruning": without,
        "epochs_saved_by_pruning": without - epochs,
        "max_epochs": max_epochs,
        "grid_points": grid,
        "grid_epochs": grid * max_epochs if grid and max_epochs else None,
        "time": time_breakdown(runs),
        "copied": copied,
    }
