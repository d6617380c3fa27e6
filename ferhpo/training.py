"""The one fit function, used by `ferhpo baseline` and by every search trial.

`fit` turns (model config, train config, data, splits) into a trained model and a
`FitResult`: per-epoch curves, the best-validation-accuracy epoch (whose weights are
restored), evaluation on validation and test (whole set and its halves), wall time
and throughput. Images stay uint8 in memory; scaling and augmentation are Keras
layers inside the model, so they run on any backend and on the accelerator.

Engines hand in extra callbacks (pruning, progress); this module never imports a tuner.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from ferhpo.atomic import atomic_path
from ferhpo.config import ModelConfig, TrainConfig, reference_lr
from ferhpo.data import CLASSES, FER2013, Splits
from ferhpo.models import build_model


@dataclass(frozen=True)
class FitResult:
    """What one training run measured. Plain data (lists, dicts, floats) except predictions."""

    history: dict[str, list[float]]  # per epoch: loss, accuracy, val_loss, val_accuracy, lr, seconds
    best_epoch: int  # 1-based epoch whose weights were restored; 0 when no epoch ran
    best_val_accuracy: float
    epochs_run: int
    stopped_early: bool  # a callback set stop_training (a pruner, Ctrl-C handling, ...)
    params: int
    train_images: int
    wall_seconds: float
    train_seconds: float  # training steps only: no validation, no first step (graph tracing)
    images_per_second: float  # training images per second of train_seconds (0.0: one step only)
    evaluation: dict[str, dict] = field(default_factory=dict)  # split name -> classification_metrics
    test_predictions: np.ndarray | None = None  # predicted class per image of splits.test


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Accuracy, per-class recall, macro-F1 and the confusion matrix (rows: true class)."""
    k = len(CLASSES)
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    confusion = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    hits = np.diag(confusion)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, hits / np.maximum(support, 1), 0.0)
        precision = np.where(predicted > 0, hits / np.maximum(predicted, 1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = support > 0  # classes absent from a (limited) split do not drag macro-F1 down
    return {
        "n": int(len(y_true)),
        "accuracy": float(hits.sum() / max(len(y_true), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class_recall": {name: float(r) for name, r in zip(CLASSES, recall)},
        "confusion": confusion.tolist(),
    }


def training_model(core: keras.Model, train: TrainConfig) -> keras.Model:
    """Wrap a builder's model: uint8 image in, scaled to [0, 1], augmented while training."""
    inputs = keras.Input(shape=core.input_shape[1:], dtype="uint8", name="image")
    x = keras.layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    if train.augmentation:
        if train.shift > 0:
            # ImageDataGenerator(width/height_shift_range=shift, fill_mode="nearest")
            x = keras.layers.RandomTranslation(
                train.shift, train.shift, fill_mode="nearest", seed=train.seed, name="augment_shift"
            )(x)
        if train.hflip:
            x = keras.layers.RandomFlip("horizontal", seed=train.seed + 1, name="augment_flip")(x)
    return keras.Model(inputs, core(x), name=core.name)


def make_optimizer(train: TrainConfig) -> keras.optimizers.Optimizer:
    kwargs = {"learning_rate": train.learning_rate}
    if train.weight_decay > 0:
        kwargs["weight_decay"] = train.weight_decay
    if train.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(**kwargs)
    if train.optimizer == "adam":
        return keras.optimizers.Adam(**kwargs)
    assert train.optimizer == "sgd", train.optimizer  # TrainConfig validated it
    return keras.optimizers.SGD(momentum=0.9, nesterov=True, **kwargs)


def schedule_callbacks(train: TrainConfig) -> list[keras.callbacks.Callback]:
    """The reference recipe's learning-rate callbacks, in the reference's order.

    As in the Keras cifar10_resnet example the study followed, the step schedule sets
    the rate at every epoch start, so a ReduceLROnPlateau cut lasts until the next
    epoch begins; `history["lr"]` records the rate each epoch actually trained with.
    """
    callbacks: list[keras.callbacks.Callback] = []
    if train.schedule == "reference-step":
        callbacks.append(keras.callbacks.LearningRateScheduler(lambda epoch: reference_lr(epoch, train.learning_rate)))
    if train.plateau:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss",
                factor=train.plateau_factor,
                patience=train.plateau_patience,
                min_lr=train.plateau_min_lr,
            )
        )
    return callbacks


class _Recorder(keras.callbacks.Callback):
    """Per-epoch metrics, learning rate and training-step time; keeps the best weights.

    The best-validation-accuracy weights stay in memory (and, given a path, on disk,
    written atomically) and are restored when training ends.
    """

    def __init__(self, checkpoint: Path | None):
        super().__init__()
        self.history: dict[str, list[float]] = {}
        self.best = -1.0
        self.best_epoch = 0
        self.best_weights = None
        self.train_seconds = 0.0
        self.checkpoint = checkpoint
        self._start = 0.0  # of the current stretch of timed training steps
        self._epoch_start = 0.0
        self._lr = 0.0
        self._training = False
        self._first_step = True

    def on_epoch_begin(self, epoch, logs=None):
        self._lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self._start = self._epoch_start = time.perf_counter()
        self._training = True

    def on_train_batch_end(self, batch, logs=None):
        if self._first_step:
            # The run's first step traces and compiles the graph: keep it out of throughput.
            self._first_step = False
            self._start = time.perf_counter()

    def _stop_clock(self):
        if self._training:
            self.train_seconds += time.perf_counter() - self._start
            self._training = False

    def on_test_begin(self, logs=None):  # validation inside fit
        self._stop_clock()

    def on_epoch_end(self, epoch, logs=None):
        self._stop_clock()
        logs = dict(logs or {})
        logs["lr"] = self._lr
        logs["seconds"] = time.perf_counter() - self._epoch_start  # the whole epoch, validation included
        for key, value in logs.items():
            if key == "learning_rate":
                continue
            self.history.setdefault(key, []).append(float(value))
        val = float(logs.get("val_accuracy", float("nan")))
        if val > self.best:
            self.best, self.best_epoch = val, epoch + 1
            self.best_weights = self.model.get_weights()
            if self.checkpoint is not None:
                with atomic_path(self.checkpoint, suffix=".weights.h5") as tmp:
                    self.model.save_weights(tmp)


def _one_hot(labels: np.ndarray) -> np.ndarray:
    return np.eye(len(CLASSES), dtype="float32")[labels.astype(np.int64)]


def fit(
    model_config: ModelConfig,
    train: TrainConfig,
    data: FER2013,
    splits: Splits,
    *,
    callbacks: list[keras.callbacks.Callback] = (),
    checkpoint: str | Path | None = None,
    evaluate_test: bool = True,
    verbose: int | str = 0,
) -> FitResult:
    """Train `model_config` with the recipe `train` on `splits`, then evaluate.

    Test images are never used for training or for choosing the best epoch unless the
    protocol's validation split is (part of) the test set, as `splits.selection_sees`
    says. Test predictions are made once, after training, with the best weights.
    A seed repeats a run exactly on JAX and PyTorch CPUs and for small TensorFlow
    models; TensorFlow's multi-threaded oneDNN kernels make full-size runs differ in
    round-off, which training then amplifies (README, "Repeatability").
    """
    start = time.perf_counter()
    keras.backend.clear_session()
    keras.utils.set_random_seed(train.seed)
    core = build_model(model_config)
    model = training_model(core, train)
    model.compile(
        optimizer=make_optimizer(train),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=train.label_smoothing),
        metrics=["accuracy"],
    )
    x = data.images[..., None]
    recorder = _Recorder(Path(checkpoint) if checkpoint else None)
    model.fit(
        x[splits.train],
        _one_hot(data.labels[splits.train]),
        batch_size=train.batch_size,
        epochs=train.epochs,
        validation_data=(x[splits.val], _one_hot(data.labels[splits.val])),
        shuffle=True,
        callbacks=[*schedule_callbacks(train), recorder, *callbacks],
        verbose=verbose,
    )
    if recorder.best_weights is not None:
        model.set_weights(recorder.best_weights)
    epochs_run = len(recorder.history.get("loss", []))

    evaluation: dict[str, dict] = {}
    predictions = None
    if epochs_run:
        # One predict call for validation and test: one traced graph, not two.
        test_idx = splits.test if evaluate_test else splits.test[:0]
        both = np.concatenate([splits.val, test_idx])
        predicted = np.argmax(model.predict(x[both], batch_size=max(256, train.batch_size), verbose=0), axis=-1)
        val_pred, predictions = predicted[: len(splits.val)], predicted[len(splits.val) :]
        evaluation["val"] = classification_metrics(data.labels[splits.val], val_pred)
        if evaluate_test:
            evaluation["test"] = classification_metrics(data.labels[test_idx], predictions)
            position = {int(i): k for k, i in enumerate(test_idx)}
            for name in ("test_public", "test_private"):
                idx = getattr(splits, name)
                if len(idx):
                    half = predictions[[position[int(i)] for i in idx]]
                    evaluation[name] = classification_metrics(data.labels[idx], half)
        else:
            predictions = None

    n_train = len(splits.train)
    timed_images = n_train * epochs_run - min(train.batch_size, n_train)
    return FitResult(
        history=recorder.history,
        best_epoch=recorder.best_epoch,
        best_val_accuracy=max(recorder.best, 0.0),
        epochs_run=epochs_run,
        stopped_early=epochs_run < train.epochs,
        params=int(core.count_params()),
        train_images=n_train,
        wall_seconds=time.perf_counter() - start,
        train_seconds=recorder.train_seconds,
        images_per_second=timed_images / recorder.train_seconds if timed_images > 0 and recorder.train_seconds else 0.0,
        evaluation=evaluation,
        test_predictions=predictions,
    )
