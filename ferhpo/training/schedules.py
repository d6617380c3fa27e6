"""The recipe's learning-rate schedules as Keras callbacks (the curves: `ferhpo.rates`)."""

from __future__ import annotations

import keras

from ferhpo.config import TrainConfig, cosine_lr, reference_lr
from ferhpo.rates import STEP_SCHEDULES, recipe_lr, warmup_steps


class RecipeRates(keras.callbacks.Callback):
    """Sets the optimizer's rate from `ferhpo.rates.recipe_lr` over the run's own epochs.

    Before every training step while warming up and for the per-step schedules
    (cosine-steps, linear, one-cycle); after the warm-up, the per-epoch schedules
    (reference-step, cosine) set it at each epoch start, as the reference's
    LearningRateScheduler does, and "constant" sets it once, when the warm-up ends, so
    that a ReduceLROnPlateau cut lasts as it does without a warm-up.

    The rates are the repository's own functions rather than a Keras
    ``LearningRateSchedule`` given to the optimizer: an optimizer built with one has a rate
    nobody may assign, so ReduceLROnPlateau (on in the reference recipe) could not cut it.
    `tests/test_recipes.py` checks them against Keras' PolynomialDecay and CosineDecay.
    """

    def __init__(self, train: TrainConfig):
        super().__init__()
        self.train = train
        self._epoch = 0

    def _steps(self) -> tuple[int, int]:
        return self.params["steps"], self.params["epochs"]

    def _warm(self) -> int:
        steps, epochs = self._steps()
        return warmup_steps(self.train.schedule, self.train.warmup_epochs, steps, epochs)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        steps, _ = self._steps()
        if self.train.schedule != "constant" or epoch * steps <= self._warm():
            self._set(epoch * steps)

    def on_train_batch_begin(self, batch, logs=None):
        steps, _ = self._steps()
        step = self._epoch * steps + batch
        if self.train.schedule in STEP_SCHEDULES or step < self._warm():
            self._set(step)

    def _set(self, step: int) -> None:
        steps, epochs = self._steps()
        self.model.optimizer.learning_rate = recipe_lr(
            self.train.schedule,
            step,
            steps_per_epoch=steps,
            epochs=epochs,
            base_lr=self.train.learning_rate,
            warmup_epochs=self.train.warmup_epochs,
        )


def schedule_callbacks(train: TrainConfig) -> list[keras.callbacks.Callback]:
    """The recipe's learning-rate callbacks, in the reference's order.

    As in the Keras cifar10_resnet example the study followed, the step schedule sets
    the rate at every epoch start, so a ReduceLROnPlateau cut lasts until the next
    epoch begins; `history["lr"]` records the rate each epoch actually trained with.
    Without a warm-up the reference-step and cosine schedules are Keras'
    LearningRateScheduler, as they always were; every other case is `RecipeRates`.
    """
    callbacks: list[keras.callbacks.Callback] = []
    if train.warmup_epochs == 0 and train.schedule == "reference-step":
        callbacks.append(keras.callbacks.LearningRateScheduler(lambda epoch: reference_lr(epoch, train.learning_rate)))
    elif train.warmup_epochs == 0 and train.schedule == "cosine":
        callbacks.append(keras.callbacks.LearningRateScheduler(lambda epoch: cosine_lr(epoch, train.epochs, train.learning_rate)))
    elif train.warmup_epochs > 0 or train.schedule != "constant":
        callbacks.append(RecipeRates(train))
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
