"""How far a run is, and how long it has left, from its own measured epoch times.

A running search trial keeps its progress in the storage as the user attribute
`ferhpo.progress` (written by the trial process once per epoch, and within a long epoch
at most every `UPDATE_SECONDS`), so that the live line and `ferhpo status` on any
machine read the same numbers. `ferhpo baseline` measures its runs the same way in
process. Estimates follow from measured times only: nothing is guessed before a
first batch has been timed.

Standard library only: the trial process, the command's own process and `ferhpo
status` (which never loads Keras) all use it.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any

#: The user attribute of a running trial that holds its progress.
PROGRESS_ATTR = "ferhpo.progress"
#: The study attribute that holds the --trials of its latest search command.
WANTED_ATTR = "ferhpo.trials_wanted"
#: Within an epoch, progress is written (or printed, off a terminal) at most this often.
UPDATE_SECONDS = 30.0
#: Epoch times kept in the attribute (the estimate uses the latest ones).
KEPT_EPOCHS = 10
#: Above this many seconds (one day) an estimate on a machine without an accelerator is a warning.
DAY = 86_400.0


@dataclass
class RunProgress:
    """One run's progress: epochs and batches done and the seconds each epoch took.

    `epoch` counts finished epochs; `batch` / `batches` is the progress inside the
    epoch being trained (0 / None between epochs or when not known).
    """

    epochs: int
    epoch: int = 0
    batch: int = 0
    batches: int | None = None
    value: float | None = None  # the latest validation objective
    epoch_seconds: list[float] = field(default_factory=list)  # the latest KEPT_EPOCHS, oldest first
    epoch_started: float | None = None  # time.time() when the current epoch began
    first_batch_done: float | None = None  # time.time() when its first batch (graph tracing) ended
    started: float | None = None  # time.time() when training began
    updated: float | None = None
    accelerator: bool | None = None  # whether the backend found a GPU/TPU

    # ------------------------------------------------------------------ what the callback calls

    def begin_epoch(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.started = now if self.started is None else self.started
        self.epoch_started, self.batch = now, 0

    def end_batch(self, batch: int, batches: int | None, now: float | None = None) -> None:
        self.batch, self.batches = batch, batches
        if batch == 1:
            self.first_batch_done = time.time() if now is None else now

    def end_epoch(self, value: float | None, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if self.epoch_started is not None:
            self.epoch_seconds = [*self.epoch_seconds, now - self.epoch_started][-KEPT_EPOCHS:]
        self.epoch += 1
        self.value = value
        self.batch, self.epoch_started, self.first_batch_done = 0, None, None

    # ------------------------------------------------------------------ estimates

    def seconds_per_epoch(self, now: float | None = None) -> float | None:
        """An epoch's measured time: the mean of the latest epochs (the first one, which
        traces the graphs, left out once later ones exist); before any epoch ended, the
        current epoch's time so far scaled by its share of batches; else None."""
        times = self.epoch_seconds
        if len(times) > 1 and self.epoch == len(times):  # the first epoch is still among them
            times = times[1:]
        if times:
            return statistics.fmean(times)
        fraction = self.batch_fraction()
        if fraction and self.epoch_started is not None:
            now = time.time() if now is None else now
            if self.first_batch_done is not None and self.batch > 1 and self.batches:
                return max(0.0, now - self.first_batch_done) / (self.batch - 1) * self.batches
            return max(0.0, now - self.epoch_started) / fraction
        return None

    def seconds_left(self, now: float | None = None) -> float | None:
        """Seconds until the last epoch ends: the epochs to go times `seconds_per_epoch`,
        less the share of the current epoch already trained."""
        per_epoch = self.seconds_per_epoch(now)
        if per_epoch is None:
            return None
        to_go = self.epochs - self.epoch - (self.batch_fraction() or 0.0)
        return max(0.0, to_go * per_epoch)

    def batch_fraction(self) -> float | None:
        """The share of the current epoch's batches done (None between epochs or unknown)."""
        if self.batches and self.batch:
            return min(1.0, self.batch / self.batches)
        return None

    # ------------------------------------------------------------------ storage form

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "epochs": self.epochs,
            "batch": self.batch,
            "batches": self.batches,
            "value": self.value,
            "epoch_seconds": [round(s, 3) for s in self.epoch_seconds],
            "epoch_started": self.epoch_started,
            "first_batch_done": self.first_batch_done,
            "started": self.started,
            "updated": self.updated,
            "accelerator": self.accelerator,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunProgress:
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        known["epoch_seconds"] = [float(s) for s in known.get("epoch_seconds") or []]
        return cls(**known)


def study_seconds_left(run_left: list[float], pending: int, per_trial: float | None, slots: int) -> float | None:
    """Seconds until a study ends: the running trials' remaining seconds plus `pending`
    trials of `per_trial` seconds each, shared among `slots` workers. None when a
    running trial has no estimate yet, or trials are pending and no trial's length is known."""
    if pending and per_trial is None:
        return None
    work = sum(run_left) + pending * (per_trial or 0.0)
    return work / max(1, slots)


def clock(seconds: float | None) -> str:
    """`H:MM:SS`, with days in front past 24 hours (`3d 4:05:06`); '-' when unknown."""
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86_400)
    text = f"{rest // 3600}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}d {text}" if days else text


def bar(fraction: float, width: int = 10) -> str:
    """A text bar, e.g. `[####------]`."""
    filled = int(round(max(0.0, min(1.0, fraction)) * width))
    return "[" + "#" * filled + "-" * (width - filled) + "]"
