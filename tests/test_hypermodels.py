"""KerasTuner HyperModels: a real (tiny) search, and the shipped defaults' model."""

from __future__ import annotations

import keras
import keras_tuner
import numpy as np
import pytest

from conftest import space_text
from ferhpo.errors import ConfigError
from ferhpo.hypermodels import DenseNetHyperModel, ResNetHyperModel, SpaceHyperModel
from ferhpo.presets import get_preset


@pytest.fixture
def tiny_space(tmp_path):
    """tests/spaces/hypermodel.toml (ResNet-8, a learning rate per optimizer), as tiny.toml."""
    path = tmp_path / "tiny.toml"
    path.write_text(space_text("hypermodel"))
    return path


def _data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 48, 48), dtype=np.uint8), rng.integers(0, 7, n)


class _Steps(keras.callbacks.Callback):
    """Records the steps per epoch of each fit (in a list shared by the deep copies
    KerasTuner makes of every callback)."""

    def __init__(self, steps: list):
        super().__init__()
        self.steps = steps

    def __deepcopy__(self, memo):
        return _Steps(self.steps)

    def on_train_begin(self, logs=None):
        self.steps.append(self.params.get("steps"))


def test_random_search_runs_and_returns_a_best_model(tmp_path, tiny_space):
    keras.utils.set_random_seed(0)
    hypermodel = ResNetHyperModel(space=str(tiny_space))
    tuner = keras_tuner.RandomSearch(
        hypermodel,
        objective="val_accuracy",
        max_trials=2,
        seed=0,
        directory=str(tmp_path / "kt"),
        project_name="tiny",
        overwrite=True,
    )
    names = {h.name for h in tuner.oracle.get_space().space}
    assert names == {"optimizer", "learning_rate", "learning_rate_sgd", "schedule", "label_smoothing", "mixup"}
    x, y = _data(32, 0)  # (N, 48, 48) uint8 and integer labels, as ferhpo.data gives them
    xv, yv = _data(16, 1)
    steps = _Steps([])
    tuner.search(x, y, validation_data=(xv, yv), epochs=1, verbose=0, callbacks=[steps])

    assert len(tuner.oracle.trials) == 2
    assert steps.steps == [4, 4]  # the space's batch size 8 (with or without mixup), not Keras' 32
    best = tuner.get_best_models(1)[0]
    assert isinstance(best, keras.Model)
    assert best.predict(xv[..., None], verbose=0).shape == (16, 7)
    values = tuner.get_best_hyperparameters(1)[0].values
    lr_name = "learning_rate" if values["optimizer"] == "adam" else "learning_rate_sgd"
    assert lr_name in values


def test_fit_takes_one_hot_labels_an_explicit_batch_size_and_mixup(tiny_space, monkeypatch):
    from ferhpo import hypermodels

    feeds = []

    class SpyFeed(hypermodels.TrainFeed):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            feeds.append(self)

    monkeypatch.setattr(hypermodels, "TrainFeed", SpyFeed)
    hypermodel = SpaceHyperModel(tiny_space)
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    hp.values["mixup"] = 0.2
    x, y = _data(12, 2)
    steps = _Steps([])
    history = hypermodel.fit(hp, model, x[..., None], np.eye(7)[y], epochs=1, batch_size=4, verbose=0, callbacks=[steps])
    assert steps.steps == [3] and len(history.history["loss"]) == 1
    (feed,) = feeds  # mixup went through training's feed, with the caller's batch size
    assert feed.alpha == 0.2 and feed.batch_size == 4 and feed.labels.shape == (12, 7)
    # The recipe's optimizer is what was compiled.
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match=r"mixup \(mixup=0.2\) needs arrays x and y"):
        hypermodel.fit(hp, model, [x], y, epochs=1)


def test_conditionals_pick_the_optimizers_learning_rate(tiny_space):
    hypermodel = SpaceHyperModel(tiny_space)
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    hp.values.update(optimizer="sgd", learning_rate_sgd=0.05)
    _, train = hypermodel.configs(hp)
    assert train.optimizer == "sgd" and train.learning_rate == 0.05
    assert train.tta_hflip is False  # left out of a HyperModel's space


def test_densenet_defaults_build_the_reference_model():
    """The shipped densenet defaults are the densenet-c0.5 preset (a build, no training)."""
    model = DenseNetHyperModel().build(keras_tuner.HyperParameters())
    assert model.count_params() == get_preset("densenet-c0.5").reported_params == 723_891
    assert model.input.dtype == "uint8"
    assert "tta_hflip" not in {p.name for p in DenseNetHyperModel().tuned_space.params}


def test_family_hypermodels_check_the_family(tiny_space):
    with pytest.raises(ConfigError, match=r"a 'densenet' space is needed here, but got family='resnet'"):
        DenseNetHyperModel(space=tiny_space)
    assert ResNetHyperModel().space.name == "resnet"
    assert ResNetHyperModel(name="mine").name == "mine"
