"""The one fit function and its metrics, on tiny models and tiny data."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from ferhpo.config import DenseNetConfig, ResNetConfig, TrainConfig, cosine_lr, reference_lr
from ferhpo.data import CLASSES
from ferhpo.errors import ConfigError, TrainingError
from ferhpo.models import build_model
from ferhpo.training import (
    TrainFeed,
    classification_metrics,
    fit,
    predict_proba,
    schedule_callbacks,
    training_model,
)

TINY_DENSENET = DenseNetConfig(growth_rate=4, num_blocks=2, layers_per_block=2, head="gap")
TINY_RESNET = ResNetConfig(version=1, depth=8, base_filters=16, head="gap")
TINY_TRAIN = TrainConfig(optimizer="adam", batch_size=16, epochs=2, seed=3)
SMALLEST = DenseNetConfig(growth_rate=4, num_blocks=2, layers_per_block=1, head="gap")
AUGMENT_LAYERS = ("augment_shift", "augment_rotation", "augment_zoom", "augment_flip", "augment_erasing")


pytestmark = pytest.mark.usefixtures("fresh_keras")


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


def test_fit_times_each_phase_and_they_add_up_to_its_wall_time(tiny, tmp_path):
    """Build, tracing, training steps, validation, test and checkpoints each get their time;
    with nothing else to claim it, `other` is what the fit's callbacks and Keras' own
    bookkeeping took, and the phases sum to the wall time."""
    from ferhpo.phases import PHASES, PhaseClock

    data, splits = tiny
    clock = PhaseClock()
    result = fit(TINY_RESNET, TINY_TRAIN, data, splits, checkpoint=tmp_path / "best.weights.h5", phases=clock)
    summary = clock.summary()
    for name in ("build", "compile", "train", "validation", "test", "write"):
        assert summary[name] > 0, name
    assert summary["startup"] == 0  # the caller's to book (a trial process does)
    assert summary["train"] == pytest.approx(result.train_seconds, abs=0.001)  # rounded to ms
    assert sum(summary[n] for n in (*PHASES, "other")) == pytest.approx(summary["wall"], abs=0.01)
    assert 0 <= summary["other"] < 0.5 * summary["wall"]
    assert summary["wall"] == pytest.approx(result.wall_seconds, rel=0.1, abs=0.5)


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


# --------------------------------------------------------------------------
# Recipe options beyond the reference: rotation, zoom, erasing, mixup, TTA, cosine.


def test_new_recipe_options_default_to_the_reference():
    train = TrainConfig()
    assert (train.rotation, train.zoom, train.erasing, train.mixup, train.tta_hflip) == (0.0, 0.0, 0.0, 0.0, False)
    assert train.precision == "float32"  # the study's arithmetic; bfloat16 is a choice
    keys = list(dataclasses.asdict(train))
    assert keys[: keys.index("seed") + 1][-3:] == ["weight_decay", "label_smoothing", "seed"]
    assert keys[-6:] == ["rotation", "zoom", "erasing", "mixup", "tta_hflip", "precision"]
    accepted = TrainConfig(rotation=180, zoom=0.5, erasing=1, mixup=2, tta_hflip=True, schedule="cosine")
    assert accepted.rotation == 180.0 and isinstance(accepted.erasing, float) and accepted.mixup == 2.0


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("rotation", -1, r"rotation must be in \[0, 180\], but got rotation=-1"),
        ("rotation", 181.0, r"rotation must be in \[0, 180\], but got rotation=181.0"),
        ("zoom", 1.0, r"zoom must be in \[0, 1\), but got zoom=1.0"),
        ("zoom", -0.1, r"zoom must be in \[0, 1\)"),
        ("erasing", 1.5, r"erasing must be in \[0, 1\], but got erasing=1.5"),
        ("erasing", "0.5", r"erasing must be a finite number"),
        ("mixup", -0.2, r"mixup must be >= 0, but got mixup=-0.2"),
        ("mixup", float("inf"), r"mixup must be a finite number"),
        ("tta_hflip", 1, r"tta_hflip must be true or false, but got tta_hflip=1"),
        ("schedule", "cosine-restarts", r"schedule must be one of .*'cosine'"),
    ],
)
def test_new_recipe_options_are_validated(field, value, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**{field: value})


def test_cosine_steps_anneals_every_step_to_zero(tiny):
    """cosine-steps sets the rate before each training step: the cosine over all steps of
    the run, from the base rate down towards 0 at the last one."""
    from ferhpo.config import cosine_step_lr

    assert cosine_step_lr(0, 10, 0.1) == pytest.approx(0.1) and cosine_step_lr(10, 10, 0.1) == pytest.approx(0.0)
    assert cosine_step_lr(5, 10, 0.1) == pytest.approx(0.05)
    with pytest.raises(ConfigError, match=r"cosine_step_lr step must be an integer in \[0, total_steps=10\]"):
        cosine_step_lr(11, 10)
    data, splits = tiny

    class Rates(keras.callbacks.Callback):
        seen: list[float] = []

        def on_train_batch_begin(self, batch, logs=None):
            self.seen = [*self.seen, float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))]

    rates = Rates()
    train = dataclasses.replace(TINY_TRAIN, schedule="cosine-steps", learning_rate=0.01, batch_size=4)
    result = fit(TINY_RESNET, train, data, splits, callbacks=[rates], evaluate_test=False)
    steps = len(rates.seen)
    assert steps == 2 * -(-len(splits.train) // 4)
    assert rates.seen == pytest.approx([cosine_step_lr(k, steps, 0.01) for k in range(steps)])
    assert result.history["lr"] == pytest.approx([0.01, cosine_step_lr(steps // 2, steps, 0.01)])


def test_cosine_lr():
    assert cosine_lr(0, 10, 0.1) == pytest.approx(0.1)
    assert cosine_lr(5, 10, 0.1) == pytest.approx(0.05)
    assert cosine_lr(1, 4, 0.1) == pytest.approx(0.05 * (1 + np.cos(np.pi / 4)))
    assert cosine_lr(10, 10, 0.1) == pytest.approx(0.0, abs=1e-12)
    assert cosine_lr(3, 4) == pytest.approx(0.5e-3 * (1 + np.cos(3 * np.pi / 4)))  # base 1e-3 by default
    for epoch in (-1, 11, 1.5, True):
        with pytest.raises(ConfigError, match=r"cosine_lr epoch must be an integer in \[0, epochs=10\]"):
            cosine_lr(epoch, 10)
    with pytest.raises(ConfigError, match="cosine_lr epochs must be a positive integer, but got epochs=0"):
        cosine_lr(0, 0)


def test_cosine_schedule_callback_comes_before_the_plateau():
    scheduler, plateau = schedule_callbacks(TrainConfig(schedule="cosine", epochs=10, learning_rate=0.1))
    assert [scheduler.schedule(e) for e in (0, 5, 9)] == pytest.approx([0.1, 0.05, cosine_lr(9, 10, 0.1)])
    assert isinstance(plateau, keras.callbacks.ReduceLROnPlateau)


def _augment_layers(model: keras.Model) -> list[str]:
    return [layer.name for layer in model.layers if layer.name.startswith("augment_")]


@pytest.mark.parametrize(
    "changes,expected",
    [
        ({}, ["augment_shift", "augment_flip"]),
        ({"rotation": 10.0}, ["augment_shift", "augment_rotation", "augment_flip"]),
        ({"zoom": 0.1}, ["augment_shift", "augment_zoom", "augment_flip"]),
        ({"erasing": 0.5}, ["augment_shift", "augment_flip", "augment_erasing"]),
        ({"rotation": 10.0, "zoom": 0.1, "erasing": 0.5}, list(AUGMENT_LAYERS)),
        ({"rotation": 10.0, "zoom": 0.1, "erasing": 0.5, "augmentation": False}, []),
        ({"shift": 0.0, "hflip": False, "rotation": 10.0}, ["augment_rotation"]),
    ],
)
def test_augmentation_layers_only_when_their_option_is_on(changes, expected):
    model = training_model(build_model(SMALLEST), TrainConfig(**changes))
    assert _augment_layers(model) == expected  # in this order: shift, rotation, zoom, flip, erasing
    seeds = [model.get_layer(name).seed for name in expected]
    assert len(set(seeds)) == len(seeds)


def test_augmentation_layers_are_settings_of_the_recipe():
    train = TrainConfig(rotation=30.0, zoom=0.2, erasing=0.25, seed=7)
    model = training_model(build_model(SMALLEST), train)
    rotation, zoom, erasing = (model.get_layer(f"augment_{n}") for n in ("rotation", "zoom", "erasing"))
    assert rotation.factor == pytest.approx((-30 / 360, 30 / 360)) and rotation.fill_mode == "nearest"
    assert zoom.height_factor == pytest.approx((-0.2, 0.2)) and zoom.fill_mode == "nearest"
    # (p, p): each image is erased with probability p (a single float p would mean U(0, p)).
    assert erasing.factor == pytest.approx((0.25, 0.25)) and tuple(erasing.value_range) == (0, 1)
    assert {layer.seed for layer in (rotation, zoom, erasing)} == {9, 10, 11}


def test_augmentation_is_inactive_at_inference():
    core = build_model(SMALLEST)
    plain = training_model(core, TrainConfig(augmentation=False))
    augmented = training_model(core, TrainConfig(rotation=40.0, zoom=0.3, erasing=1.0))  # same core weights
    images = np.random.default_rng(0).integers(0, 256, (6, 48, 48, 1), dtype=np.uint8)
    expected = keras.ops.convert_to_numpy(plain(images, training=False))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(augmented(images, training=False)), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(augmented.predict(images, verbose=0), expected, rtol=1e-5, atol=1e-6)


def test_erasing_probability_one_erases_every_image():
    model = training_model(build_model(SMALLEST), TrainConfig(shift=0.0, hflip=False, erasing=1.0))
    layer = model.get_layer("augment_erasing")
    images = np.full((32, 48, 48, 1), 0.5, dtype="float32")
    erased = keras.ops.convert_to_numpy(layer(images, training=True))
    changed = (erased != images).reshape(len(images), -1)
    assert changed.any(axis=1).all()  # the layer's single-float factor=1.0 would erase about half
    assert 0.02 <= changed.mean(axis=1).min() and changed.mean(axis=1).max() <= 0.34
    assert erased.min() >= 0.0 and erased.max() <= 1.0
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(images, training=False)), images)


def _feed_inputs(n=37, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 48, 48, 1), dtype=np.uint8)
    labels = np.eye(len(CLASSES), dtype="float32")[rng.integers(0, len(CLASSES), n)]
    return images, labels


def test_mixup_feed_mixes_images_and_labels():
    images, labels = _feed_inputs()
    feed = TrainFeed(images, labels, batch_size=8, alpha=0.4, epochs=2, seed=5)
    assert feed.steps_per_epoch == 5 and len(feed) == 10
    sizes = []
    for i in range(len(feed)):
        x, y = feed[i]
        assert x.dtype == np.uint8 and x.shape[1:] == (48, 48, 1) and y.dtype == np.float32
        assert len(x) == len(y)
        np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-6)
        assert y.min() >= 0.0 and (np.count_nonzero(y, axis=1) <= 2).all()  # two one-hot rows mixed
        sizes.append(len(x))
    assert sizes == [8, 8, 8, 8, 5] * 2
    # Mixed, not copied: some labels are fractional.
    assert any(((feed[i][1] > 0) & (feed[i][1] < 1)).any() for i in range(len(feed)))
    # Each epoch visits every image once, in an order seeded by (seed, epoch).
    first, second = feed._epoch_order(0), feed._epoch_order(1)
    assert sorted(first) == sorted(second) == list(range(len(images))) and list(first) != list(second)
    # A batch depends only on its index: another feed (or a prefetch) sees the same data.
    again = TrainFeed(images, labels, batch_size=8, alpha=0.4, epochs=2, seed=5)
    for i in (7, 0, 9):
        np.testing.assert_array_equal(again[i][0], feed[i][0])
        np.testing.assert_array_equal(again[i][1], feed[i][1])
    other = TrainFeed(images, labels, batch_size=8, alpha=0.4, epochs=2, seed=6)
    assert not np.array_equal(other[0][0], feed[0][0])
    with pytest.raises(IndexError):
        feed[len(feed)]


def test_without_mixup_the_feed_shuffles_whole_images_and_a_resumed_run_sees_the_same_batches():
    images, labels = _feed_inputs()
    feed = TrainFeed(images, labels, batch_size=8, alpha=0.0, epochs=3, seed=5)
    for epoch in range(3):
        batches = [feed[epoch * feed.steps_per_epoch + s] for s in range(feed.steps_per_epoch)]
        x = np.concatenate([b[0] for b in batches])
        order = feed._epoch_order(epoch)
        np.testing.assert_array_equal(x, images[order])  # every image once, unmixed
        np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), labels[order])
    resumed = TrainFeed(images, labels, batch_size=8, alpha=0.0, epochs=3, seed=5, first_epoch=1)
    assert len(resumed) == 2 * feed.steps_per_epoch
    for i in range(len(resumed)):
        np.testing.assert_array_equal(resumed[i][0], feed[feed.steps_per_epoch + i][0])


def test_mixup_with_an_image_mixed_with_itself_is_the_image():
    images, labels = _feed_inputs(n=1)
    x, y = TrainFeed(images, labels, batch_size=4, alpha=1.0, epochs=1, seed=0)[0]
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)


def test_fit_with_every_new_option(tiny):
    """Mixup feed, rotation/zoom/erasing layers, cosine schedule and flip TTA in one tiny run."""
    data, splits = tiny
    train = TrainConfig(
        batch_size=8, epochs=2, seed=3, schedule="cosine", rotation=15.0, zoom=0.1, erasing=0.5, mixup=0.4, tta_hflip=True
    )
    result = fit(SMALLEST, train, data, splits)
    assert result.epochs_run == 2 and np.isfinite(result.history["loss"]).all()
    assert result.history["lr"] == pytest.approx([1e-3, 0.5e-3])  # cosine over 2 epochs
    assert set(result.evaluation) == {"val", "test", "test_public", "test_private"}
    assert result.evaluation["val"]["n"] == len(splits.val)
    assert result.evaluation["test"]["n"] == len(splits.test) == len(result.test_predictions)
    assert result.train_images == len(splits.train) and result.images_per_second > 0


def test_flip_tta_averages_each_image_with_its_mirror():
    # A dense layer on raw pixels: left and right matter, so mirroring changes the output.
    model = keras.Sequential([keras.Input((48, 48, 1)), keras.layers.Flatten(), keras.layers.Dense(7, activation="softmax")])
    images = np.random.default_rng(1).random((5, 48, 48, 1)).astype("float32")
    mirrored = images[:, :, ::-1]
    plain = predict_proba(model, images, batch_size=4)
    np.testing.assert_allclose(plain, model.predict(images, verbose=0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(plain, model.predict(mirrored, verbose=0), atol=1e-3)
    averaged = predict_proba(model, images, batch_size=4, hflip=True)
    expected = (model.predict(images, verbose=0) + model.predict(mirrored, verbose=0)) / 2
    np.testing.assert_allclose(averaged, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(predict_proba(model, mirrored, batch_size=4, hflip=True), averaged, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(averaged.sum(axis=1), 1.0, rtol=1e-5)


def test_fit_with_flip_tta_evaluates_val_and_test(tiny):
    data, splits = tiny
    result = fit(SMALLEST, dataclasses.replace(TINY_TRAIN, epochs=1, tta_hflip=True), data, splits)
    assert result.evaluation["val"]["n"] == len(splits.val)
    assert result.evaluation["test"]["n"] == len(splits.test) == len(result.test_predictions)
    assert len(result.history["val_accuracy"]) == 1  # per-epoch validation stays plain


def test_evaluate_test_may_be_asked_after_training(tiny):
    data, splits = tiny
    events = []

    class Watch(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            events.append("trained")

    def ask():
        events.append("asked")
        return False

    result = fit(SMALLEST, dataclasses.replace(TINY_TRAIN, epochs=1), data, splits, callbacks=[Watch()], evaluate_test=ask)
    assert events == ["trained", "asked"]
    # nothing is predicted after training: no test image read, no validation repeated
    assert result.evaluation == {} and result.test_predictions is None
    assert len(result.history["val_accuracy"]) == 1


def test_a_diverging_loss_raises_training_error(tiny, tmp_path):
    data, splits = tiny
    train = TrainConfig(optimizer="sgd", learning_rate=1e30, batch_size=8, epochs=2, seed=3)
    checkpoint = tmp_path / "run" / "best.weights.h5"
    with pytest.raises(TrainingError, match=r"^training diverged: loss became (nan|inf) at epoch 1 .*lower learning rate\)$"):
        fit(SMALLEST, train, data, splits, checkpoint=checkpoint)
    assert not checkpoint.exists()  # no epoch of diverged weights reached the checkpoint
    assert TrainingError.exit_code == 2
