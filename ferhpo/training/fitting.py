"""`fit`: one training run, from configs and splits to a trained model and its `FitResult`."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from ferhpo.config import ModelConfig, TrainConfig
from ferhpo.data import FER2013
from ferhpo.phases import PhaseClock
from ferhpo.splits import Splits
from ferhpo.training.build import compiled_model
from ferhpo.training.callbacks import DivergenceGuard, EMAWeights, Recorder
from ferhpo.training.evaluate import evaluate_splits
from ferhpo.training.feeds import ArrayFeed, TrainFeed, one_hot
from ferhpo.training.resume import Resume, ResumeCheckpoint, restore
from ferhpo.training.schedules import schedule_callbacks


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


def fit(
    model_config: ModelConfig,
    train: TrainConfig,
    data: FER2013,
    splits: Splits,
    *,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    checkpoint: str | Path | None = None,
    evaluate_test: bool | Callable[[], bool] = True,
    verbose: int | str = 0,
    phases: PhaseClock | None = None,
    resume: Resume | None = None,
) -> FitResult:
    """Train `model_config` with the recipe `train` on `splits`, then evaluate.

    Test images are never used for training or for choosing the best epoch unless the
    protocol's validation split is (part of) the test set, as `splits.selection_sees`
    says. Validation and test predictions are made once, after training, with the best
    weights, and only if `evaluate_test` is true; a callable is asked once, when training
    ends (a pruned search trial answers False: it never reads a test image, and keeps
    only its per-epoch validation, all its pruner saw). With
    ``train.tta_hflip`` the final evaluation averages each image's softmax with its
    mirror's (and with ``train.tta_shift``, with its shifted copies'). With ``train.ema``
    the moving average of the weights is what is validated, kept as the best weights and
    evaluated (`EMAWeights`). A NaN or infinite training loss raises TrainingError.
    A seed repeats a run exactly on JAX and PyTorch CPUs and for small TensorFlow
    models; TensorFlow's multi-threaded oneDNN kernels make full-size runs differ in
    round-off, which training then amplifies (README, "Repeatability").
    `checkpoint`, a file, receives the best weights each time they improve.
    `phases` (a fresh clock when not given) receives the time of each phase.
    `resume` (a `Resume`) writes a resume checkpoint every ``resume.every`` epochs to
    ``resume.folder`` (`ResumeCheckpoint`); with ``resume.start_from``, such a folder,
    training continues after its epoch (the optimizer's state, the curves and the order
    of the remaining epochs' batches as the whole run's; not the augmentation's random
    draws) and ``resume.on_resume`` receives the epoch and its logs.
    """
    start = time.perf_counter()
    phases = PhaseClock() if phases is None else phases
    resume = Resume() if resume is None else resume
    with phases.phase("build"):
        core, model = compiled_model(model_config, train)
    with phases.phase("data"):
        x = data.images[..., None]
        x_train, y_train = x[splits.train], one_hot(data.labels[splits.train])
        # No validation split (the refit protocol): the last epoch's weights are kept.
        x_val, y_val = (x[splits.val], one_hot(data.labels[splits.val])) if len(splits.val) else (None, None)
    recorder = Recorder(Path(checkpoint) if checkpoint else None, phases)
    initial_epoch = 0
    resumed_logs: list[dict] = []
    if resume.start_from is not None:
        initial_epoch, resumed_logs = restore(model, recorder, Path(resume.start_from))  # a Path already (Resume)
        if resume.on_resume is not None:
            resume.on_resume(initial_epoch, resumed_logs)
    resumable = []
    if resume.every and resume.folder is not None:
        resumable = [ResumeCheckpoint(Path(resume.folder), resume.every, train.epochs, recorder, resumed_logs)]
    recorder.fit_called = time.perf_counter()
    # With ema, validation and the recorder's best weights use the average (EMAWeights first).
    ema = [EMAWeights(resumed=resume.start_from is not None)] if train.ema > 0 else []
    all_callbacks = [DivergenceGuard(), *schedule_callbacks(train), *ema, recorder, *callbacks, *resumable]
    # Validation runs in inference mode: a larger batch than training's costs no accuracy
    # and, on a CPU, a third of the time of batch 32.
    validation_batch = max(256, train.batch_size)
    validation_data = ArrayFeed(x_val, y_val, batch_size=validation_batch) if x_val is not None else None
    feed = TrainFeed(  # one feed for every epoch (not numpy arrays): see TrainFeed
        x_train,
        y_train,
        batch_size=train.batch_size,
        alpha=train.mixup,
        cutmix=train.cutmix,
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
        evaluation, predictions = evaluate_splits(
            model,
            data,
            splits,
            x,
            batch_size=validation_batch,
            hflip=train.tta_hflip,
            shift=train.tta_shift,
            callbacks=[recorder],
        )

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
