"""The one place a training model is made and compiled: for `fit`, the HyperModels and
`ferhpo bench`, so the benchmark times exactly what a run trains."""

from __future__ import annotations

import contextlib
from typing import Any

import keras

from ferhpo.config import ModelConfig, TrainConfig
from ferhpo.models import build_model
from ferhpo.training.augment import training_model


def make_optimizer(train: TrainConfig) -> keras.optimizers.Optimizer:
    """The recipe's Keras optimizer.

    ``weight_decay`` is Keras 3's decoupled decay for every optimizer (each step shrinks
    the weights by learning_rate * weight_decay); "adamw" is keras.optimizers.AdamW, which
    is that same Adam with the decay it must have. SGD has momentum 0.9, Nesterov's unless
    ``nesterov`` is False. With ``ema``, the optimizer keeps an exponential moving average
    of the weights (``use_ema``, ``ema_momentum``); `fit` validates and keeps those.
    """
    kwargs: dict[str, Any] = {"learning_rate": train.learning_rate}
    if train.weight_decay > 0:
        kwargs["weight_decay"] = train.weight_decay
    if train.ema > 0:
        kwargs.update(use_ema=True, ema_momentum=train.ema)
    if train.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(**kwargs)
    if train.optimizer == "adam":
        return keras.optimizers.Adam(**kwargs)
    if train.optimizer == "adamw":
        return keras.optimizers.AdamW(**kwargs)  # weight_decay > 0: TrainConfig checked it
    assert train.optimizer == "sgd", train.optimizer  # TrainConfig validated it
    return keras.optimizers.SGD(momentum=0.9, nesterov=train.nesterov is not False, **kwargs)


@contextlib.contextmanager
def dtype_policy(name: str):
    """Keras' global dtype policy set to ``name`` for the models built inside; restored after."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def has_accelerator() -> bool | None:
    """Whether Keras' backend trains on a GPU or TPU (None when it cannot say): run-time
    estimates warn about a day-long run only on a machine without one."""
    try:
        return any(not d.lower().startswith("cpu") for d in keras.distribution.list_devices())
    except Exception:
        return None


def build_training_model(model_config: ModelConfig, train: TrainConfig) -> tuple[keras.Model, keras.Model]:
    """(core, training model): built and compiled with the recipe, in its precision.

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
