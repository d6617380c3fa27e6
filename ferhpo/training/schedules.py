"""The recipe's learning-rate schedules as Keras callbacks."""

from __future__ import annotations

import keras

from ferhpo.config import TrainConfig, cosine_lr, cosine_step_lr, reference_lr


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
        callbacks.append(keras.callbacks.LearningRateScheduler(lambda epoch: cosine_lr(epoch, train.epochs, train.learning_rate)))
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
