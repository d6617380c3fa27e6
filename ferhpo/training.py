"""The one fit function, used by `ferhpo baseline` and by every search trial.

`fit` turns (model config, train config, data, splits) into a trained model and a
`FitResult`: per-epoch curves, the best-validation-accuracy epoch (whose weights are
restored), evaluation on validation and test (whole set and its halves), wall time
and throughput. Images stay uint8 in memory; scaling and augmentation are Keras
layers inside the model, so they run on any backend and on the accelerator. Mixup,
which mixes labels too, is the one exception: `MixupFeed` mixes batches on the host.

Engines hand in extra callbacks (pruning, progress); this module never imports a tuner.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from ferhpo.atomic import atomic_dir, atomic_path
from ferhpo.config import ModelConfig, TrainConfig, cosine_lr, cosine_step_lr, reference_lr
from ferhpo.data import CLASSES, FER2013, Splits
from ferhpo.errors import TrainingError
from ferhpo.models import build_model
from ferhpo.phases import PhaseClock


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
    """Wrap a builder's model: uint8 image in, scaled to [0, 1], augmented while training.

    The augmentation layers (only with ``train.augmentation``, each only when its
    option is on) run in the order shift, rotation, zoom, flip, erasing, each with
    its own seed, and pass images through unchanged at inference.
    """
    inputs = keras.Input(shape=core.input_shape[1:], dtype="uint8", name="image")
    x = keras.layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    if train.augmentation:
        if train.shift > 0:
            # ImageDataGenerator(width/height_shift_range=shift, fill_mode="nearest")
            x = keras.layers.RandomTranslation(
                train.shift, train.shift, fill_mode="nearest", seed=train.seed, name="augment_shift"
            )(x)
        if train.rotation > 0:
            # factor is a fraction of a full turn: +-rotation degrees.
            x = keras.layers.RandomRotation(
                train.rotation / 360, fill_mode="nearest", seed=train.seed + 2, name="augment_rotation"
            )(x)
        if train.zoom > 0:
            # Zoom in or out by up to `zoom` (width follows height: aspect ratio kept).
            x = keras.layers.RandomZoom(
                (-train.zoom, train.zoom), fill_mode="nearest", seed=train.seed + 3, name="augment_zoom"
            )(x)
        if train.hflip:
            x = keras.layers.RandomFlip("horizontal", seed=train.seed + 1, name="augment_flip")(x)
        if train.erasing > 0:
            # A single float `factor=p` draws each image's probability from U(0, p), so
            # only p/2 of the images would be erased (and 1.0 erases half, not all);
            # the pair (p, p) makes it exactly p. The patch covers 2-33% of the image
            # and is filled with noise (a normal sample clipped to [0, 1]).
            x = keras.layers.RandomErasing(
                factor=(train.erasing, train.erasing),
                value_range=(0, 1),
                seed=train.seed + 4,
                name="augment_erasing",
            )(x)
    return keras.Model(inputs, core(x), name=core.name)


#: Threads that read a run's input batches. With more than one, Keras feeds a PyDataset
#: through its own ordered queue and turns tf.data's autotuning off for it. With
#: autotuning on, freeing an input iterator (at the end of ``fit``, of every validation
#: and of ``predict``) waited for the autotuning thread: up to 40 s at a time, 10% of a
#: CPU-budget run (benchmarks/README.md, "Iterator stalls").
FEED_WORKERS = 2


class ArrayFeed(keras.utils.PyDataset):
    """`images` (and `labels`) in their order, ``batch_size`` at a time: the input of
    validation and prediction, fed like `TrainFeed` (see `FEED_WORKERS`)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray | None = None, *, batch_size: int):
        super().__init__(workers=FEED_WORKERS)
        if not len(images) or (labels is not None and len(labels) != len(images)):
            raise ValueError(f"ArrayFeed needs at least one image and as many labels, got {len(images)} and {None if labels is None else len(labels)}")
        self.images, self.labels, self.batch_size = images, labels, batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"ArrayFeed has {len(self)} batches, got index {index}")
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.images[rows] if self.labels is None else (self.images[rows], self.labels[rows])


class TrainFeed(keras.utils.PyDataset):
    """Training batches for every epoch of a run, optionally with mixup (Zhang et al. 2018).

    One feed for the whole run: Keras then keeps one input iterator. Given numpy arrays
    it makes a new one every epoch, and on TensorFlow freeing the last one can hold up
    the next epoch's start for tens of seconds (tf.data's autotune thread; measured up
    to 35 s of a 50 s epoch). Each epoch visits the images in a new order (seeded by
    ``seed`` and the epoch). With ``alpha > 0`` each batch is mixed with a permutation
    of itself by one ``lam ~ Beta(alpha, alpha)``: images ``lam * a + (1 - lam) * b``
    rounded back to uint8 (the model's input), labels mixed likewise (label smoothing
    is still the loss's). Batch ``step`` of ``epoch`` is item ``(epoch - first_epoch) *
    steps_per_epoch + step`` and depends only on its index, so prefetching and Keras'
    spec probing cannot change what a run sees, and a run resumed at ``first_epoch``
    sees the batches the whole run would have. Pass ``steps_per_epoch`` to
    ``model.fit`` with it. Read by `FEED_WORKERS` threads, in order.
    """

    def __init__(
        self, images: np.ndarray, labels: np.ndarray, *, batch_size: int, alpha: float, epochs: int, seed: int, first_epoch: int = 0
    ):
        super().__init__(workers=FEED_WORKERS)
        if len(images) != len(labels) or not len(images):
            raise ValueError(f"TrainFeed needs as many labels as images (at least one), got {len(images)} and {len(labels)}")
        self.images = np.asarray(images)  # plain rows: positions here are not the dataset's indices
        self.labels = labels.astype("float32", copy=False)
        self.batch_size = batch_size
        self.alpha = float(alpha)
        self.epochs = epochs
        self.first_epoch = first_epoch
        self.seed = seed
        self.steps_per_epoch = math.ceil(len(images) / batch_size)
        self._order = (-1, None)  # (epoch, permutation), replaced as one tuple

    def __len__(self) -> int:
        return self.steps_per_epoch * (self.epochs - self.first_epoch)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        cached_epoch, order = self._order
        if cached_epoch != epoch:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.images))
            self._order = (epoch, order)
        return order

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"TrainFeed has {len(self)} batches, got index {index}")
        epoch, step = divmod(int(index), self.steps_per_epoch)
        epoch += self.first_epoch
        idx = self._epoch_order(epoch)[step * self.batch_size : (step + 1) * self.batch_size]
        if self.alpha <= 0:  # no mixup: the plain shuffled batch
            return self.images[idx], self.labels[idx]
        rng = np.random.default_rng([self.seed, epoch, step, 1])
        lam = rng.beta(self.alpha, self.alpha)
        partner = rng.permutation(len(idx))
        images = self.images[idx].astype("float32")
        labels = self.labels[idx]
        mixed = np.rint(lam * images + (1.0 - lam) * images[partner])
        return np.clip(mixed, 0, 255).astype(self.images.dtype), (lam * labels + (1.0 - lam) * labels[partner]).astype("float32")


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


class _CosineSteps(keras.callbacks.Callback):
    """Sets the rate before every training step: `cosine_step_lr` over all the run's steps."""

    def __init__(self, base_lr: float):
        super().__init__()
        self.base_lr = base_lr
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._set(epoch * self.params["steps"])

    def on_train_batch_begin(self, batch, logs=None):
        self._set(self._epoch * self.params["steps"] + batch)

    def _set(self, step: int) -> None:
        total = self.params["steps"] * self.params["epochs"]
        self.model.optimizer.learning_rate = cosine_step_lr(min(step, total), total, self.base_lr)


def schedule_callbacks(train: TrainConfig) -> list[keras.callbacks.Callback]:
    """The reference recipe's learning-rate callbacks, in the reference's order.

    As in the Keras cifar10_resnet example the study followed, the step schedule sets
    the rate at every epoch start, so a ReduceLROnPlateau cut lasts until the next
    epoch begins; `history["lr"]` records the rate each epoch actually trained with.
    """
    callbacks: list[keras.callbacks.Callback] = []
    if train.schedule == "reference-step":
        callbacks.append(keras.callbacks.LearningRateScheduler(lambda epoch: reference_lr(epoch, train.learning_rate)))
    elif train.schedule == "cosine":
        callbacks.append(
            keras.callbacks.LearningRateScheduler(lambda epoch: cosine_lr(epoch, train.epochs, train.learning_rate))
        )
    elif train.schedule == "cosine-steps":
        callbacks.append(_CosineSteps(train.learning_rate))
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


class _DivergenceGuard(keras.callbacks.Callback):
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


class _Recorder(keras.callbacks.Callback):
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


class _ResumeCheckpoint(keras.callbacks.Callback):
    """Every `every` epochs, what a preempted run needs to go on from that epoch.

    The folder `path` (written whole, atomically, at the end of the epoch: last in the
    callback list, it sees every callback's logs) holds the model's and the optimizer's
    variables (`save_weights` keeps both), the best weights so far, and `state.json`
    with the epoch, the recorder's history and best, and each epoch's full logs.
    """

    def __init__(self, path: Path, every: int, epochs: int, recorder: _Recorder, logs: list[dict] | None = None):
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
    """The state of a resume checkpoint (`_ResumeCheckpoint`); TrainingError if unreadable."""
    try:
        state = json.loads((path / "state.json").read_text())
    except (OSError, ValueError) as exc:
        raise TrainingError(f"cannot read the resume checkpoint {path} ({exc}); expected the folder a trial wrote") from None
    best = path / "best.npz"
    if best.is_file():
        with np.load(best) as arrays:
            state["best_weights"] = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
    return state


def predict(model: keras.Model, images: np.ndarray, *, batch_size: int, callbacks=None) -> np.ndarray:
    """`model`'s outputs for NHWC `images` at inference, through an `ArrayFeed`."""
    if not len(images):
        return np.zeros((0, *model.output_shape[1:]), dtype="float32")
    return model.predict(ArrayFeed(images, batch_size=batch_size), verbose=0, callbacks=callbacks)


def predict_proba(
    model: keras.Model, images: np.ndarray, *, batch_size: int, hflip: bool = False, callbacks=None
) -> np.ndarray:
    """Class probabilities of NHWC `images` at inference; with `hflip`, the mean of each
    image's and its horizontal mirror's (test-time augmentation), in one predict call."""
    if not hflip:
        return predict(model, images, batch_size=batch_size, callbacks=callbacks)
    both = predict(model, np.concatenate([images, images[:, :, ::-1]]), batch_size=batch_size, callbacks=callbacks)
    return (both[: len(images)] + both[len(images) :]) / 2


@contextlib.contextmanager
def dtype_policy(name: str):
    """Keras' global dtype policy set to ``name`` for the models built inside; restored after."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_training_model(model_config: ModelConfig, train: TrainConfig) -> tuple[keras.Model, keras.Model]:
    """(core, training model): built and compiled with the recipe, in its precision.

    This is the one place a training model is made, for `fit`, the HyperModels and
    `ferhpo bench`, so the benchmark times exactly what a run trains.
    ``train.precision`` is the Keras dtype policy of the layers (mixed: compute in
    bfloat16 or float16, variables and the softmax in float32; Keras adds loss
    scaling for float16). It is set for this model only; the global policy is
    restored afterwards.
    """
    with dtype_policy(train.precision):
        core = build_model(model_config)
        model = training_model(core, train)
        model.compile(
            optimizer=make_optimizer(train),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=train.label_smoothing),
            metrics=["accuracy"],
        )
    return core, model


def compiled_model(model_config: ModelConfig, train: TrainConfig) -> tuple[keras.Model, keras.Model]:
    """`build_training_model` in a fresh Keras session, seeded with ``train.seed``."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(train.seed)
    return build_training_model(model_config, train)


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
    evaluate_test: bool | Callable[[], bool] = True,
    verbose: int | str = 0,
    phases: PhaseClock | None = None,
    checkpoint_every: int | None = None,
    resume_dir: str | Path | None = None,
    resume: str | Path | None = None,
    on_resume: Callable[[int, list[dict]], None] | None = None,
) -> FitResult:
    """Train `model_config` with the recipe `train` on `splits`, then evaluate.

    Test images are never used for training or for choosing the best epoch unless the
    protocol's validation split is (part of) the test set, as `splits.selection_sees`
    says. Validation and test predictions are made once, after training, with the best
    weights, and only if `evaluate_test` is true; a callable is asked once, when training
    ends (a pruned search trial answers False: it never reads a test image, and keeps
    only its per-epoch validation, all its pruner saw). With
    ``train.tta_hflip`` the final evaluation averages each image's softmax with its
    mirror's. A NaN or infinite training loss raises TrainingError.
    A seed repeats a run exactly on JAX and PyTorch CPUs and for small TensorFlow
    models; TensorFlow's multi-threaded oneDNN kernels make full-size runs differ in
    round-off, which training then amplifies (README, "Repeatability").
    `phases` (a fresh clock when not given) receives the time of each phase.
    With `checkpoint_every` N, a resume checkpoint is written every N epochs to the
    folder `resume_dir` (`_ResumeCheckpoint`); `resume`, such a folder, continues
    training after its epoch (the optimizer's state, the curves and the order of the
    remaining epochs' batches as the whole run's; not the augmentation's random draws) and hands the
    epoch and its logs to `on_resume`.
    """
    start = time.perf_counter()
    phases = PhaseClock() if phases is None else phases
    with phases.phase("build"):
        core, model = compiled_model(model_config, train)
    with phases.phase("data"):
        x = data.images[..., None]
        x_train, y_train = x[splits.train], _one_hot(data.labels[splits.train])
        # No validation split (the refit protocol): the last epoch's weights are kept.
        x_val, y_val = (x[splits.val], _one_hot(data.labels[splits.val])) if len(splits.val) else (None, None)
    recorder = _Recorder(Path(checkpoint) if checkpoint else None, phases)
    initial_epoch, resumed_logs = 0, []
    if resume is not None:
        with phases.phase("data"):
            state = load_resume(Path(resume))
            model.optimizer.build(model.trainable_variables)  # so that its saved variables load
            model.load_weights(Path(resume) / "model.weights.h5")
        initial_epoch, resumed_logs = int(state["epoch"]), state["logs"]
        recorder.history = {k: list(v) for k, v in state["history"].items()}
        recorder.best, recorder.best_epoch = float(state["best"]), int(state["best_epoch"])
        recorder.best_weights = state.get("best_weights")
        if on_resume is not None:
            on_resume(initial_epoch, resumed_logs)
    resumable = []
    if checkpoint_every and resume_dir is not None:
        resumable = [_ResumeCheckpoint(Path(resume_dir), checkpoint_every, train.epochs, recorder, resumed_logs)]
    recorder.fit_called = time.perf_counter()
    all_callbacks = [_DivergenceGuard(), *schedule_callbacks(train), recorder, *callbacks, *resumable]
    # Validation runs in inference mode: a larger batch than training's costs no accuracy
    # and, on a CPU, a third of the time of batch 32.
    validation_batch = max(256, train.batch_size)
    validation_data = ArrayFeed(x_val, y_val, batch_size=validation_batch) if x_val is not None else None
    feed = TrainFeed(  # one feed for every epoch (not numpy arrays): see TrainFeed
        x_train,
        y_train,
        batch_size=train.batch_size,
        alpha=train.mixup,
        epochs=train.epochs,
        seed=train.seed,
        first_epoch=initial_epoch,
    )
    model.fit(
        feed,
        epochs=train.epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=feed.steps_per_epoch,
        validation_data=validation_data,
        shuffle=False,  # the feed shuffles, seeded
        callbacks=all_callbacks,
        verbose=verbose,
    )
    if recorder.best_weights is not None:
        model.set_weights(recorder.best_weights)
    epochs_run = len(recorder.history.get("loss", []))
    evaluate_test = bool(evaluate_test() if callable(evaluate_test) else evaluate_test)

    evaluation: dict[str, dict] = {}
    predictions = None
    if epochs_run and evaluate_test:
        # One predict call for validation and test: one traced graph, not two.
        both = np.concatenate([splits.val, splits.test])
        probabilities = predict_proba(
            model, x[both], batch_size=validation_batch, hflip=train.tta_hflip, callbacks=[recorder]
        )
        predicted = np.argmax(probabilities, axis=-1)
        val_pred, predictions = predicted[: len(splits.val)], predicted[len(splits.val) :]
        if len(splits.val):
            evaluation["val"] = classification_metrics(data.labels[splits.val], val_pred)
        evaluation["test"] = classification_metrics(data.labels[splits.test], predictions)
        position = {int(i): k for k, i in enumerate(splits.test)}
        for name in ("test_public", "test_private"):
            idx = getattr(splits, name)
            if len(idx):
                half = predictions[[position[int(i)] for i in idx]]
                evaluation[name] = classification_metrics(data.labels[idx], half)

    n_train = len(splits.train)
    timed_images = n_train * (epochs_run - initial_epoch) - min(train.batch_size, n_train)
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
