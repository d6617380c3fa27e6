"""KerasTuner HyperModels over ferhpo's search spaces, for your own tuner scripts.

Like KerasTuner's ``HyperResNet``, they plug into any tuner::

    import keras_tuner
    from ferhpo.hypermodels import DenseNetHyperModel

    tuner = keras_tuner.RandomSearch(
        DenseNetHyperModel(), objective="val_accuracy", max_trials=20,
        directory="kt", project_name="densenet",
    )
    tuner.search(x, y, validation_data=(x_val, y_val), epochs=30)
    best = tuner.get_best_models(1)[0]

``x`` holds uint8 images (N, 48, 48, 1) or (N, 48, 48); ``y`` integer class labels
(N,) or one-hot (N, 7). The model scales and augments its input itself (the layers
of `ferhpo.training.training_model`), so pass raw images.

Every parameter of the space is declared on the tuner's ``HyperParameters``
(conditional ones with ``parent_name``/``parent_values``) by
`ferhpo.spaces.declare_keras_tuner`; the values become configs by `Space.configs`,
the model is built and compiled by `ferhpo.training.build_training_model` (the
recipe's optimizer, label smoothing and precision), as every run's is. ``fit`` adds
the recipe's batch size and learning-rate schedule (`ferhpo.training.schedule_callbacks`).

``mixup`` and ``cutmix`` use `ferhpo.training.TrainFeed`, as `ferhpo.training.fit` does,
when ``x`` and ``y`` are arrays (a trial with either on and a dataset ``x`` fails with a
clear message); with ``ema``, Keras validates the moving average of the weights
(`ferhpo.training.EMAWeights`). Not applied here: ``tta_hflip`` and ``tta_shift``,
which belong to `ferhpo.training.fit`'s final evaluation, while a tuner scores a HyperModel by Keras' own validation
metrics; parameters setting it are left out of the HyperModel's space and the
recipe keeps it off. ``ferhpo search --engine keras-tuner`` runs the whole recipe.

On the TensorFlow backend KerasTuner 1.4.8's ``Tuner.run_trial`` imports
``tensorboard`` in every trial, which TensorFlow >= 2.20 no longer installs; ferhpo
depends on it for that reason.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import keras_tuner
import numpy as np

from ferhpo.spaces import Space, declare_keras_tuner, load_space
from ferhpo.training import EMAWeights, TrainFeed, build_training_model, schedule_callbacks

__all__ = ["NOT_APPLIED", "SpaceHyperModel", "DenseNetHyperModel", "ResNetHyperModel"]

#: TrainConfig fields a HyperModel does not apply (see the module docstring).
NOT_APPLIED = ("tta_hflip", "tta_shift")


def _applicable(space: Space) -> Space:
    """``space`` without the parameters a HyperModel cannot apply (nor their children)."""
    dropped: set[str] = set()
    kept = []
    for p in space.params:
        if p.field in NOT_APPLIED or (p.when is not None and p.when[0] in dropped):
            dropped.add(p.name)
        else:
            kept.append(p)
    fixed = {k: v for k, v in space.fixed.items() if k not in NOT_APPLIED}
    return dataclasses.replace(space, params=tuple(kept), fixed=fixed)


def _images(x: Any, rank: int) -> Any:
    """Arrays of (N, H, W) gain the channel axis the model expects; anything else as is."""
    if isinstance(x, np.ndarray) and x.ndim == rank - 1:
        return x[..., None]
    return x


def _targets(y: Any, num_classes: int) -> Any:
    """Integer labels (N,) or (N, 1) become one-hot rows (label smoothing needs them)."""
    if y is None or not hasattr(y, "shape"):
        return y
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 1:
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"1-D labels must be integer class indices, but got dtype={y.dtype}")
        return np.eye(num_classes, dtype="float32")[y.astype(np.int64)]
    return y


class SpaceHyperModel(keras_tuner.HyperModel):
    """A KerasTuner HyperModel over a ferhpo search space.

    Args:
        space: a `Space`, the name of a shipped space ("densenet", "resnet") or the
            path of a space file (see ``search_spaces/densenet.toml`` for the format).
        name: the HyperModel's name (default: the space's name).
        tunable: KerasTuner's flag: False builds with the defaults unless the
            tuner's space already holds these parameters.
    """

    def __init__(self, space: Space | str, *, name: str | None = None, tunable: bool = True):
        space = load_space(space)
        super().__init__(name=name or space.name, tunable=tunable)
        #: The space as given; `tuned_space` is what this HyperModel declares.
        self.space = space
        self.tuned_space = _applicable(space)

    def configs(self, hp: keras_tuner.HyperParameters):
        """The (model config, train config) of ``hp``'s current values."""
        return self.tuned_space.configs(declare_keras_tuner(self.tuned_space, hp))

    def declare_hyperparameters(self, hp: keras_tuner.HyperParameters) -> None:
        declare_keras_tuner(self.tuned_space, hp)

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        model_config, train = self.configs(hp)
        return build_training_model(model_config, train)[1]

    def fit(self, hp, model, x, y=None, validation_data=None, **kwargs):
        """``model.fit`` with the trial's batch size (unless given), the recipe's
        learning-rate schedule, one-hot targets, and mixup when the recipe has it."""
        model_config, train = self.configs(hp)
        # The schedule (and the mixup feed) span this fit's epochs.
        train = train.with_epochs(kwargs.get("epochs", 1))
        rank = len(model.input_shape)
        x = _images(x, rank)
        y = _targets(y, model_config.num_classes)
        if validation_data is not None and isinstance(validation_data, (tuple, list)):
            xv, yv, *rest = validation_data
            validation_data = (_images(xv, rank), _targets(yv, model_config.num_classes), *rest)
        ema = [EMAWeights()] if train.ema > 0 else []  # before the tuner's callbacks: they see the average
        kwargs["callbacks"] = [*schedule_callbacks(train), *ema, *(kwargs.get("callbacks") or [])]
        arrays = hasattr(x, "shape") and hasattr(x, "dtype") and hasattr(y, "shape")
        if train.mixup > 0 or train.cutmix > 0:
            if not arrays:
                name, value = ("mixup", train.mixup) if train.mixup > 0 else ("cutmix", train.cutmix)
                raise ValueError(
                    f"{name} ({name}={value}) needs arrays x and y, but got x of type "
                    f"{type(x).__name__}; pass arrays, or a space without {name}"
                )
            feed = TrainFeed(
                np.asarray(x),
                np.asarray(y),
                batch_size=kwargs.pop("batch_size", train.batch_size),
                alpha=train.mixup,
                cutmix=train.cutmix,
                epochs=train.epochs,
                seed=train.seed,
            )
            kwargs.pop("shuffle", None)  # the feed shuffles, seeded
            return model.fit(feed, steps_per_epoch=feed.steps_per_epoch, validation_data=validation_data, **kwargs)
        if arrays:  # datasets batch themselves
            kwargs.setdefault("batch_size", train.batch_size)
        return model.fit(x, y, validation_data=validation_data, **kwargs)


class _FamilyHyperModel(SpaceHyperModel):
    family = ""

    def __init__(self, space: Space | str | None = None, *, name: str | None = None, tunable: bool = True):
        space = load_space(self.family if space is None else space, family=self.family)
        super().__init__(space, name=name, tunable=tunable)


class DenseNetHyperModel(_FamilyHyperModel):
    """DenseNet(-BC) over ``search_spaces/densenet.toml`` (or ``space=``): growth,
    compression, blocks, layers per block, bottleneck, dropout and the recipe.
    The defaults build the study's densenet-c0.5 model (723,891 parameters)."""

    family = "densenet"


class ResNetHyperModel(_FamilyHyperModel):
    """ResNet v1/v2 over ``search_spaces/resnet.toml`` (or ``space=``): version,
    depth per version, width, L2 and the recipe. The defaults build the study's
    resnet-v1-104 model."""

    family = "resnet"
