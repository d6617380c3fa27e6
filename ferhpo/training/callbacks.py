"""The callbacks `fit` always adds: the divergence guard and the recorder of curves,
best weights and phase times; with the recipe's ``ema``, `EMAWeights`. Engines hand in
their own (pruning, progress)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras

from ferhpo.atomic import atomic_path
from ferhpo.errors import TrainingError
from ferhpo.phases import PhaseClock


class DivergenceGuard(keras.callbacks.Callback):
    """Raises TrainingError as soon as the training loss is NaN or infinite.

    Like ``keras.callbacks.TerminateOnNaN(raise_error=True)``, but the message names
    the epoch. Raising at once skips that epoch's validation, checkpoint and the
    other callbacks' epoch end: no callback sees the diverged weights.
    """

    def __init__(self):
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        loss = float(keras.ops.convert_to_numpy(loss))
        if not math.isfinite(loss):
            raise TrainingError(
                f"training diverged: loss became {loss} at epoch {self._epoch + 1} (batch {batch + 1}); "
                "expected a finite loss (try a lower learning rate)"
            )


class EMAWeights(keras.callbacks.SwapEMAWeights):
    """Keras' SwapEMAWeights with ``swap_on_epoch=True``, for an optimizer with ``use_ema``.

    Validation runs on the moving average of the weights, and so does every callback
    after this one at an epoch's end: placed before the `Recorder`, the best-weights
    checkpoint keeps the weights that were validated (and a resume checkpoint holds the
    average in the model's variables, the raw weights in the optimizer's). Training goes
    on from the raw weights at the next epoch's start. ``resumed``: the run continues
    from such a resume checkpoint, so the average is in the model when training begins.
    """

    def __init__(self, resumed: bool = False):
        super().__init__(swap_on_epoch=True)
        # SwapEMAWeights' own record of where the average is (swapped back at epoch start)
        self._ema_weights_in_model = resumed


class Recorder(keras.callbacks.Callback):
    """Per-epoch metrics, learning rate and the phases' time; keeps the best weights.

    The best-validation-accuracy weights stay in memory (and, given a path, on disk,
    written atomically) and are restored when training ends. The first step of
    training, of validation and of prediction traces a graph: it counts as
    ``compile``, not as training, validation or test time (`ferhpo.phases`).
    Also handed to the final ``predict``, where it times the test phase.
    """

    def __init__(self, checkpoint: Path | None, phases: PhaseClock):
        super().__init__()
        self.history: dict[str, list[float]] = {}
        self.best = -1.0
        self.best_epoch = 0
        self.best_weights = None
        self.train_seconds = 0.0
        self.checkpoint = checkpoint
        self.phases = phases
        self._start = 0.0  # of the current stretch of timed training steps
        self._epoch_start = 0.0
        self._other_start = 0.0  # of the current validation or prediction
        self._booked = 0.0  # phase seconds booked when the current training stretch began
        self.fit_called: float | None = None  # when fit was called: its set-up is data time
        self._lr = 0.0
        self._training = False
        self._first_step = {"train": True, "test": True, "predict": True}

    def _traced(self, kind: str, since: float) -> float:
        """After a step of `kind`: on the run's first one, book its time as compile; the
        time from which the phase of `kind` runs on."""
        now = time.perf_counter()
        if self._first_step[kind]:
            self._first_step[kind] = False
            self.phases.add("compile", now - since)
            return now
        return since

    def on_epoch_begin(self, epoch, logs=None):
        if self.fit_called is not None:  # Keras built the input pipeline since fit was called
            self.phases.add("data", time.perf_counter() - self.fit_called)
            self.fit_called = None
        self._lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self._start = self._epoch_start = time.perf_counter()
        self._booked = self.phases.booked()
        self._training = True

    def on_train_batch_end(self, batch, logs=None):
        # The run's first step traces and compiles the graph: kept out of throughput.
        start = self._traced("train", self._start)
        if start != self._start:
            self._start, self._booked = start, self.phases.booked()

    def _stop_clock(self):
        if self._training:
            # what other callbacks booked meanwhile (a search's progress writes) is theirs
            seconds = time.perf_counter() - self._start - (self.phases.booked() - self._booked)
            self.train_seconds += seconds
            self.phases.add("train", seconds)
            self._training = False

    def on_test_begin(self, logs=None):  # validation inside fit
        self._stop_clock()
        self._other_start = time.perf_counter()

    def on_test_batch_end(self, batch, logs=None):
        self._other_start = self._traced("test", self._other_start)

    def on_test_end(self, logs=None):
        self.phases.add("validation", time.perf_counter() - self._other_start)

    def on_predict_begin(self, logs=None):
        self._other_start = time.perf_counter()

    def on_predict_batch_end(self, batch, logs=None):
        self._other_start = self._traced("predict", self._other_start)

    def on_predict_end(self, logs=None):
        self.phases.add("test", time.perf_counter() - self._other_start)

    def on_epoch_end(self, epoch, logs=None):
        self._stop_clock()
        logs = dict(logs or {})
        logs["lr"] = self._lr
        logs["seconds"] = time.perf_counter() - self._epoch_start  # the whole epoch, validation included
        for key, value in logs.items():
            if key == "learning_rate":
                continue
            self.history.setdefault(key, []).append(float(value))
        if "val_accuracy" not in logs:  # trained without validation: every epoch replaces the last
            self.best_epoch = epoch + 1
            self.best_weights = self.model.get_weights()
            if self.checkpoint is not None:
                with self.phases.phase("write"), atomic_path(self.checkpoint, suffix=".weights.h5") as tmp:
                    self.model.save_weights(tmp)
            return
        val = float(logs.get("val_accuracy", float("nan")))
        if val > self.best:
            self.best, self.best_epoch = val, epoch + 1
            self.best_weights = self.model.get_weights()
            if self.checkpoint is not None:
                with self.phases.phase("write"), atomic_path(self.checkpoint, suffix=".weights.h5") as tmp:
                    self.model.save_weights(tmp)
