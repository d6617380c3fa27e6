"""Resume checkpoints: what a preempted run needs to go on from its last one.

`Resume` is `fit`'s one argument about them: how often to write them, where, and
which one to continue from.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from ferhpo.atomic import atomic_dir
from ferhpo.errors import TrainingError
from ferhpo.training.callbacks import Recorder


@dataclass(frozen=True)
class Resume:
    """Resume checkpoints of one run.

    ``every``: epochs between checkpoints (None or 0: none is written); ``folder``:
    where they are written (none without it); ``start_from``: a checkpoint folder to
    continue training from, after its epoch; ``on_resume``: called with that epoch and
    the logs of the epochs it covers, before training goes on.
    """

    every: int | None = None
    folder: str | Path | None = None
    start_from: str | Path | None = None
    on_resume: Callable[[int, list[dict]], None] | None = None

    def __post_init__(self):
        for name in ("folder", "start_from"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))


class ResumeCheckpoint(keras.callbacks.Callback):
    """Every `every` epochs, what a preempted run needs to go on from that epoch.

    The folder `path` (written whole, atomically, at the end of the epoch: last in the
    callback list, it sees every callback's logs) holds the model's and the optimizer's
    variables (`save_weights` keeps both), the best weights so far, and `state.json`
    with the epoch, the recorder's history and best, and each epoch's full logs.
    """

    def __init__(self, path: Path, every: int, epochs: int, recorder: Recorder, logs: list[dict] | None = None):
        super().__init__()
        self.path, self.every, self.epochs, self.recorder = path, every, epochs, recorder
        self.logs: list[dict] = list(logs or [])

    def on_epoch_end(self, epoch, logs=None):
        self.logs.append({k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float, np.floating))})
        done = epoch + 1
        if done % self.every or done >= self.epochs:
            return
        r = self.recorder
        with r.phases.phase("write"), atomic_dir(self.path) as tmp:
            self.model.save_weights(tmp / "model.weights.h5")
            if r.best_weights is not None:
                np.savez(tmp / "best.npz", *r.best_weights)
            state = {"epoch": done, "history": r.history, "best": r.best, "best_epoch": r.best_epoch, "logs": self.logs}
            (tmp / "state.json").write_text(json.dumps(state))


def load_resume(path: Path) -> dict:
    """The state of a resume checkpoint (`ResumeCheckpoint`); TrainingError if unreadable."""
    try:
        state = json.loads((path / "state.json").read_text())
    except (OSError, ValueError) as exc:
        raise TrainingError(f"cannot read the resume checkpoint {path} ({exc}); expected the folder a trial wrote") from None
    best = path / "best.npz"
    if best.is_file():
        with np.load(best) as arrays:
            state["best_weights"] = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
    return state


def restore(model: keras.Model, recorder: Recorder, path: Path) -> tuple[int, list[dict]]:
    """Load the checkpoint `path` into the compiled `model` (weights and optimizer state)
    and `recorder` (curves, best so far); its epoch and per-epoch logs."""
    with recorder.phases.phase("data"):
        state = load_resume(path)
        model.optimizer.build(model.trainable_variables)  # so that its saved variables load
        model.load_weights(path / "model.weights.h5")
    recorder.history = {k: list(v) for k, v in state["history"].items()}
    recorder.best, recorder.best_epoch = float(state["best"]), int(state["best_epoch"])
    recorder.best_weights = state.get("best_weights")
    return int(state["epoch"]), state["logs"]
