"""The one fit function and its metrics, on tiny models and tiny data."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from ferhpo.config import DenseNetConfig, ResNetConfig, TrainConfig, reference_lr
from ferhpo.data import CLASSES, load_fer2013, make_splits
from ferhpo.training import classification_metrics, fit, schedule_callbacks

TINY_DENSENET = DenseNetConfig(growth_rate=4, num_blocks=2, layers_per_block=2, head="gap")
TINY_RESNET = ResNetConfig(version=1, depth=8, base_filters=16, head="gap")
TINY_TRAIN = TrainConfig(optimizer="adam", batch_size=16, epochs=2, seed=3)


@pytest.fixture(autouse=True)
def _fresh_keras():
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session(free_memory=False)


@pytest.fixture
def tiny(tiny_folder, tmp_path):
    data = load_fer2013(tiny_folder, tmp_path / "cache")
    return data, make_splits(data, "canonical", seed=0)


def test_metrics_on_a_constructed_case():
    y_true = np.array([0, 0, 1, 1, 2, 2, 2, 3])
    y_pred = np.array([0, 1, 1, 1, 2, 2, 0, 3])
    m = classification_metrics(y_true, y_pred)
    assert m["n"] == 8 and m["accuracy"] == pytest.approx(6 / 8)
    assert m["per_class_recall"]["angry"] == pytest.approx(0.5)
    assert m["per_class_recall"]["fear"] == pytest.approx(2 / 3)
    assert m["per_class_recall"]["disgust"] == 1.0
    assert m["confusion"][2][0] == 1 and np.sum(m["confusion"]) == 8
    # F1 per present class: angry 0.5, disgust 0.8, fear 0.8, happy 1.0
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.8 + 1.0) / 4)
    assert set(m["per_class_recall"]) == set(CLASSES)


@pytest.mark.parametrize("epoch,lr", [(0, 1e-3), (80, 1e-3), (81, 1e-4), (121, 1e-5), (161, 1e-6), (181, 5e-7), (199, 5e-7)])
def test_reference_schedule_callback(epoch, lr):
    scheduler, plateau = schedule_callbacks(TrainConfig(optimizer="rmsprop"))
    assert scheduler.schedule(epoch) == pytest.approx(lr) == pytest.approx(reference_lr(epoch))
    assert plateau.factor == pytest.approx(np.sqrt(0.1)) and plateau.patience == 5
    assert plateau.min_lr == pytest.approx(0.5e-6) and plateau.monitor == "val_loss"


def test_no_schedule_callbacks_when_off():
    assert schedule_callbacks(TrainConfig(schedule="constant", plateau=False)) == []


@pytest.mark.parametrize("model", [TINY_DENSENET, TINY_RESNET], ids=["densenet", "resnet"])
def test_fit_records_curves_restores_best_and_evaluates(model, tiny, tmp_path):
    data, splits = tiny
    checkpoint = tmp_path / "run" / "best.weights.h5"
    result = fit(model, TINY_TRAIN, data, splits, checkpoint=checkpoint)
    assert result.epochs_run == 2 and not result.stopped_early
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"):
        assert len(result.history[key]) == 2, key
    assert result.history["lr"] == pytest.approx([1e-3, 1e-3])
    best = int(np.argmax(result.history["val_accuracy"]))
    assert result.best_epoch == best + 1
    assert result.best_val_accuracy == pytest.approx(result.history["val_accuracy"][best])
    # The restored weights are the best epoch's: re-predicting validation gives its accuracy.
    assert result.evaluation["val"]["accuracy"] == pytest.approx(result.best_val_accuracy, abs=1e-6)
    assert result.evaluation["test"]["n"] == len(splits.test) == len(result.test_predictions)
    assert result.evaluation["test_public"]["n"] + result.evaluation["test_private"]["n"] == len(splits.test)
    assert checkpoint.is_file() and not list(checkpoint.parent.glob(".tmp-*"))
    assert result.params > 0 and result.train_images == len(splits.train)
    assert result.train_seconds > 0 and result.images_per_second > 0
    assert result.train_seconds <= sum(result.history["seconds"]) <= result.wall_seconds


@pytest.mark.parametrize("model", [TINY_DENSENET, TINY_RESNET], ids=["densenet", "resnet"])
def test_fit_is_repeatable_with_a_seed(model, tiny):
    data, splits = tiny
    first = fit(model, TINY_TRAIN, data, splits, evaluate_test=False)
    second = fit(model, TINY_TRAIN, data, splits, evaluate_test=False)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert first.history[key] == second.history[key], key
    other = fit(model, dataclasses.replace(TINY_TRAIN, seed=4), data, splits, evaluate_test=False)
    assert other.history["loss"] != first.history["loss"]


def test_a_stopping_callback_ends_early(tiny):
    data, splits = tiny

    class StopAfterOne(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    result = fit(TINY_DENSENET, dataclasses.replace(TINY_TRAIN, epochs=3), data, splits, callbacks=[StopAfterOne()])
    assert result.epochs_run == 1 and result.stopped_early
