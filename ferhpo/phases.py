"""Where a run's wall time goes: seconds per phase, from process start to results written.

A `PhaseClock` is started when a run's process starts (a search trial: when its worker
spawns it) and handed down to data loading, `training.fit` and `runs.train_run`, each of
which times its own part. `summary()` adds ``other`` (whatever no phase claimed: the
search's per-epoch storage calls, callbacks) so that the phases add up to ``wall``.
The report sums the phases of a study to say what share of its time trained.

Standard library only: the trial process starts the clock before Keras loads.
"""

from __future__ import annotations

import contextlib
import os
import time

#: The phases in the order a run goes through them.
PHASES = ("startup", "data", "build", "compile", "train", "validation", "storage", "test", "write")

#: What each phase covers, for the README and the report.
DESCRIPTIONS = {
    "startup": "process start and imports (Python, Keras and its backend)",
    "data": "loading the dataset (from the cache), making the splits and the model's input pipeline",
    "build": "building and compiling the model",
    "compile": "graph tracing / compilation: the first training, validation and prediction step",
    "train": "training steps",
    "validation": "per-epoch validation",
    "storage": "a search trial's calls to the study's storage: each epoch's value, the pruner's decision, progress",
    "test": "final evaluation: validation and test predictions with the best weights",
    "write": "checkpoints, predictions, learning curve and record",
    "other": "not claimed by a phase: Keras' and the callbacks' own work between epochs",
}

#: Environment variable through which a worker hands its trial process the spawn time.
SPAWNED_AT = "FERHPO_SPAWNED_AT"


class PhaseClock:
    """Accumulates wall seconds per phase of one run; ``start`` is a `time.time()` stamp."""

    def __init__(self, start: float | None = None):
        self.start = time.time() if start is None else float(start)
        self.seconds = dict.fromkeys(PHASES, 0.0)

    @classmethod
    def for_child(cls) -> PhaseClock:
        """A clock started when this process's parent spawned it (now, when not told)."""
        raw = os.environ.get(SPAWNED_AT)
        try:
            start = float(raw) if raw else None
        except ValueError:
            start = None
        return cls(start if start is not None and start <= time.time() else None)

    def add(self, name: str, seconds: float) -> None:
        assert name in self.seconds, name
        self.seconds[name] += max(0.0, float(seconds))

    @contextlib.contextmanager
    def phase(self, name: str):
        begin = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - begin)

    def booked(self) -> float:
        """Seconds booked to all phases so far (to leave them out of an enclosing stretch)."""
        return sum(self.seconds.values())

    def mark_startup(self) -> None:
        """Everything from the start until now that no phase has claimed is start-up."""
        self.add("startup", time.time() - self.start - sum(self.seconds.values()))

    def summary(self) -> dict[str, float]:
        """Seconds per phase, ``other``, ``wall`` (since the start) and ``started_at``."""
        wall = time.time() - self.start
        out = {name: round(value, 3) for name, value in self.seconds.items()}
        out["other"] = round(wall - sum(self.seconds.values()), 3)
        out["wall"] = round(wall, 3)
        out["started_at"] = round(self.start, 3)
        return out


def training_share(phases: list[dict[str, float]]) -> float | None:
    """Share of the runs' summed wall time that their training steps took (None: no data)."""
    wall = sum(p.get("wall", 0.0) for p in phases)
    return sum(p.get("train", 0.0) for p in phases) / wall if wall > 0 else None
