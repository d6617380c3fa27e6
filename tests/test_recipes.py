"""Issue 21, recipes that hold at long budgets: AdamW, Nesterov on/off, warm-up, the linear
and one-cycle schedules, EMA weights, CutMix, pad-and-crop and shift TTA. Each is a
TrainConfig field off by default; tiny data, ResNet v1-8, one or two epochs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import keras
import numpy as np
import pytest

from ferhpo.config import ResNetConfig, TrainConfig
from ferhpo.data import CLASSES
from ferhpo.errors import ConfigError
from ferhpo.models import build_model
from ferhpo.rates import recipe_lr
from ferhpo.training import (
    EMAWeights,
    RecipeRates,
    Resume,
    TrainFeed,
    fit,
    make_optimizer,
    predict_proba,
    schedule_callbacks,
    training_model,
    tta_views,
)
from ferhpo.training.feeds import shifted

RESNET8 = ResNetConfig(version=1, depth=8, base_filters=16, head="gap")
TINY = TrainConfig(batch_size=16, epochs=2, seed=3)
NEW_DEFAULTS = {"nesterov": None, "warmup_epochs": 0, "crop": 0, "cutmix": 0.0, "ema": 0.0, "tta_shift": 0.0}
# TrainConfig() before issue 21, field by field
REFERENCE = {
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "batch_size": 32,
    "epochs": 200,
    "schedule": "reference-step",
    "plateau": True,
    "plateau_factor": math.sqrt(0.1),
    "plateau_patience": 5,
    "plateau_min_lr": 0.5e-6,
    "augmentation": True,
    "shift": 0.1,
    "hflip": True,
    "weight_decay": 0.0,
    "label_smoothing": 0.0,
    "seed": 0,
    "rotation": 0.0,
    "zoom": 0.0,
    "erasing": 0.0,
    "mixup": 0.0,
    "tta_hflip": False,
    "precision": "float32",
}


pytestmark = pytest.mark.usefixtures("fresh_keras")


def _numpy(variables) -> list[np.ndarray]:
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


# --------------------------------------------------------------------------
# Defaults, validation, the record


def test_the_defaults_are_the_reference_recipe_and_the_run_key_is_unchanged():
    from ferhpo import runs
    from ferhpo.config import Budget, model_config_to_dict

    recipe = dataclasses.asdict(TrainConfig())
    assert {k: v for k, v in recipe.items() if k not in NEW_DEFAULTS} == REFERENCE
    assert {k: recipe[k] for k in NEW_DEFAULTS} == NEW_DEFAULTS
    # A run at the new fields' defaults keeps the key it had before they existed.
    budget = Budget("smoke", epochs=1)
    old = dict(REFERENCE)
    for field in ("rotation", "zoom", "erasing", "mixup", "tta_hflip", "precision"):
        del old[field]  # left out at their defaults since they were added (runs._ADDED_AT_DEFAULT)
    payload = {
        "name": "r",
        "model": model_config_to_dict(RESNET8),
        "train": old,
        "budget": dataclasses.asdict(budget),
        "protocol": "holdout",
        "data": "fp",
    }
    expected = hashlib.sha256(json.dumps(payload, sort_keys=True, default=list).encode()).hexdigest()[:16]
    assert runs.run_key("r", RESNET8, TrainConfig(), budget, "holdout", "fp") == expected
    assert runs.run_key("r", RESNET8, TrainConfig(ema=0.99), budget, "holdout", "fp") != expected


def test_the_defaults_build_the_reference_optimizer_and_callbacks():
    adam = make_optimizer(TrainConfig())
    assert type(adam) is keras.optimizers.Adam and not adam.use_ema and adam.weight_decay is None
    sgd = make_optimizer(TrainConfig(optimizer="sgd"))
    assert sgd.nesterov is True and sgd.momentum == pytest.approx(0.9)  # as before nesterov was a field
    scheduler, plateau = schedule_callbacks(TrainConfig())
    assert isinstance(scheduler, keras.callbacks.LearningRateScheduler)
    assert isinstance(plateau, keras.callbacks.ReduceLROnPlateau)
    layers = [layer.name for layer in training_model(build_model(RESNET8), TrainConfig()).layers]
    assert [n for n in layers if n.startswith("augment_")] == ["augment_shift", "augment_flip"]


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"optimizer": "adamw"}, r"optimizer='adamw' needs weight_decay > 0 .*, but got weight_decay=0.0"),
        ({"optimizer": "lamb"}, r"optimizer must be one of 'rmsprop', 'adam', 'sgd', 'adamw', but got optimizer='lamb'"),
        ({"nesterov": True}, r"nesterov applies to optimizer='sgd' only .*, but got nesterov=True with optimizer='adam'"),
        ({"optimizer": "sgd", "nesterov": 1}, r"nesterov must be true or false, but got nesterov=1"),
        ({"warmup_epochs": 200}, r"warmup_epochs must be less than epochs .*, but got warmup_epochs=200 with epochs=200"),
        ({"warmup_epochs": -1}, r"warmup_epochs must be an integer >= 0, but got warmup_epochs=-1"),
        ({"warmup_epochs": 1.0}, r"warmup_epochs must be an integer >= 0, but got warmup_epochs=1.0"),
        ({"schedule": "cyclic"}, r"schedule must be one of .*'linear', 'one-cycle', but got schedule='cyclic'"),
        ({"ema": 1.0}, r"ema must be in \[0, 1\), but got ema=1.0"),
        ({"ema": -0.5}, r"ema must be in \[0, 1\), but got ema=-0.5"),
        ({"cutmix": -1}, r"cutmix must be >= 0, but got cutmix=-1"),
        ({"cutmix": "1"}, r"cutmix must be a finite number, but got cutmix='1'"),
        ({"crop": 24}, r"crop must be in \[0, 24\) pixels .*, but got crop=24"),
        ({"crop": 2.5}, r"crop must be an integer >= 0, but got crop=2.5"),
        ({"tta_shift": 0.5}, r"tta_shift must be in \[0, 0.5\), but got tta_shift=0.5"),
        ({"tta_shift": float("nan")}, r"tta_shift must be a finite number, but got tta_shift=nan"),
    ],
)
def test_bad_values_are_one_config_error_naming_the_field(changes, message):
    with pytest.raises(ConfigError, match=r"^TrainConfig " + message):
        TrainConfig(**changes)


def test_good_values_are_kept_and_saved_with_the_recipe():
    train = TrainConfig(
        optimizer="sgd", nesterov=False, epochs=5, warmup_epochs=4, schedule="one-cycle", ema=0.9, cutmix=1, crop=4, tta_shift=0.1
    )
    assert train.cutmix == 1.0 and isinstance(train.cutmix, float)
    saved = dataclasses.asdict(train)
    assert {k: saved[k] for k in NEW_DEFAULTS} == {
        "nesterov": False,
        "warmup_epochs": 4,
        "crop": 4,
        "cutmix": 1.0,
        "ema": 0.9,
        "tta_shift": 0.1,
    }
    assert TrainConfig(**saved) == train  # a record rebuilds the recipe
    assert TrainConfig(optimizer="adamw", weight_decay=0.05).weight_decay == 0.05


def test_a_shorter_budget_shortens_the_warm_up():
    from ferhpo.config import Budget
    from ferhpo.runs import budgeted

    train = TrainConfig(warmup_epochs=5)
    assert train.with_epochs(3).warmup_epochs == 2 and train.with_epochs(3).epochs == 3
    assert train.with_epochs(1).warmup_epochs == 0
    assert train.with_epochs(10) == dataclasses.replace(train, epochs=10)
    assert budgeted(train, Budget("smoke", epochs=1)).warmup_epochs == 0
    assert budgeted(TrainConfig(), Budget("cpu", epochs=3)) == dataclasses.replace(TrainConfig(), epochs=3)


def test_a_search_trial_of_few_epochs_shortens_the_warm_up():
    from ferhpo.engines import SearchSettings

    settings = SearchSettings(
        study="s", storage="sqlite://", space_path="x.toml", space={}, engine="optuna", sampler="random",
        pruner="none", objectives=("val_accuracy",), trials=1, timeout=None, budget={}, max_epochs=1,
        protocol="holdout", seed=7, workers=1, data={}, data_fingerprint="f",
    )  # fmt: skip
    trial = settings.recipe(TrainConfig(warmup_epochs=2, schedule="one-cycle"), epochs=1)
    assert (trial.epochs, trial.warmup_epochs, trial.seed, trial.schedule) == (1, 0, 7, "one-cycle")


# --------------------------------------------------------------------------
# Optimizers


def test_adamw_nesterov_and_ema_are_keras_optimizer_settings():
    adamw = make_optimizer(TrainConfig(optimizer="adamw", weight_decay=0.05, learning_rate=0.01))
    assert type(adamw) is keras.optimizers.AdamW and adamw.weight_decay == pytest.approx(0.05)
    plain = make_optimizer(TrainConfig(optimizer="sgd", nesterov=False))
    assert type(plain) is keras.optimizers.SGD and plain.nesterov is False
    assert make_optimizer(TrainConfig(optimizer="sgd", nesterov=True)).nesterov is True
    ema = make_optimizer(TrainConfig(optimizer="rmsprop", ema=0.99))
    assert ema.use_ema and ema.ema_momentum == pytest.approx(0.99)


def test_adamw_decays_the_weights_as_keras_adam_with_weight_decay():
    """Keras 3 applies `weight_decay` decoupled for every optimizer: AdamW is Adam with it,
    which is why "adam" with weight_decay keeps its meaning and "adamw" demands a decay."""
    after = []
    for optimizer in (
        make_optimizer(TrainConfig(optimizer="adamw", weight_decay=0.5, learning_rate=0.1)),
        make_optimizer(TrainConfig(optimizer="adam", weight_decay=0.5, learning_rate=0.1)),
    ):
        variable = keras.Variable(np.ones(3, dtype="float32"))
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(np.array([1.0, 0.0, -1.0], dtype="float32")), variable)])
        after.append(_numpy([variable])[0])
    np.testing.assert_allclose(after[0], after[1])
    assert after[0][1] == pytest.approx(1.0 - 0.1 * 0.5)  # no gradient: the decay alone


# --------------------------------------------------------------------------
# Schedules: warm-up, linear, one-cycle, over the run's own epochs


def test_warm_up_rises_linearly_from_zero_in_front_of_the_schedule():
    rate = [recipe_lr("constant", k, steps_per_epoch=2, epochs=4, base_lr=0.1, warmup_epochs=2) for k in range(9)]
    assert rate == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1, 0.1, 0.1, 0.1, 0.1])
    # the step schedule keeps its absolute thresholds after the warm-up
    step = [
        recipe_lr("reference-step", e * 10, steps_per_epoch=10, epochs=200, base_lr=0.1, warmup_epochs=2) for e in (0, 1, 2, 81)
    ]
    assert step == pytest.approx([0.0, 0.05, 0.1, 0.01])
    assert recipe_lr("reference-step", 5, steps_per_epoch=10, epochs=200, base_lr=0.1, warmup_epochs=2) == pytest.approx(0.025)
    # the cosine runs over the epochs after the warm-up: epochs 1..4 of 5 are its 0..3 of 4
    cosine = [recipe_lr("cosine", e * 3, steps_per_epoch=3, epochs=5, base_lr=0.1, warmup_epochs=1) for e in range(5)]
    assert cosine == pytest.approx([0.0, 0.1, 0.05 * (1 + math.cos(math.pi / 4)), 0.05, 0.05 * (1 + math.cos(3 * math.pi / 4))])


def test_linear_decays_to_zero_at_the_end_of_the_run():
    # 4 epochs of 2 steps: 0.1 * (1 - k / 8); the last step trains at 0.0125, the end is 0
    epochs = [recipe_lr("linear", 2 * e, steps_per_epoch=2, epochs=4, base_lr=0.1) for e in range(4)]
    assert epochs == pytest.approx([0.1, 0.075, 0.05, 0.025])
    assert recipe_lr("linear", 7, steps_per_epoch=2, epochs=4, base_lr=0.1) == pytest.approx(0.0125)
    assert recipe_lr("linear", 8, steps_per_epoch=2, epochs=4, base_lr=0.1) == 0.0
    # with 2 epochs of warm-up the decay takes the last 2: steps 4..7 of 8
    warm = [recipe_lr("linear", 2 * e, steps_per_epoch=2, epochs=4, base_lr=0.1, warmup_epochs=2) for e in range(5)]
    assert warm == pytest.approx([0.0, 0.05, 0.1, 0.05, 0.0])


def test_one_cycle_rises_over_30_percent_then_anneals_to_zero_at_the_end():
    # 4 epochs of 2 steps: rise over int(0.3 * 8) = 2 steps, then cosine over the other 6
    epochs = [recipe_lr("one-cycle", 2 * e, steps_per_epoch=2, epochs=4, base_lr=0.1) for e in range(5)]
    assert epochs == pytest.approx([0.0, 0.1, 0.075, 0.025, 0.0])
    # 10 epochs of 1 step: rise over 3, then epochs 3..9 are the cosine's 0..6 of 7
    rise = [recipe_lr("one-cycle", e, steps_per_epoch=1, epochs=10, base_lr=0.3) for e in range(4)]
    assert rise == pytest.approx([0.0, 0.1, 0.2, 0.3])
    # warmup_epochs sets the rise instead
    assert recipe_lr("one-cycle", 1, steps_per_epoch=1, epochs=10, base_lr=0.3, warmup_epochs=1) == pytest.approx(0.3)


@pytest.mark.parametrize("warmup", [0, 1, 3])
def test_the_schedules_are_keras_polynomial_and_cosine_decay(warmup):
    """linear = Keras' PolynomialDecay (power 1) after the warm-up; one-cycle and
    cosine-steps with a warm-up = Keras' CosineDecay with warmup_target."""
    steps, epochs, base = 3, 5, 0.2
    total = steps * epochs
    warm = warmup * steps if warmup else {"one-cycle": int(0.3 * total), "cosine-steps": 0}
    for schedule in ("one-cycle", "cosine-steps"):
        w = warm if isinstance(warm, int) else warm[schedule]
        keras_rate = keras.optimizers.schedules.CosineDecay(0.0, total - w, warmup_target=base, warmup_steps=w)
        if w == 0:
            keras_rate = keras.optimizers.schedules.CosineDecay(base, total)
        ours = [
            recipe_lr(schedule, k, steps_per_epoch=steps, epochs=epochs, base_lr=base, warmup_epochs=warmup) for k in range(total)
        ]
        np.testing.assert_allclose(ours, [float(keras_rate(k)) for k in range(total)], rtol=1e-5, atol=1e-7)
    w = warmup * steps
    decay = keras.optimizers.schedules.PolynomialDecay(base, total - w, end_learning_rate=0.0, power=1.0)
    ours = [
        recipe_lr("linear", w + k, steps_per_epoch=steps, epochs=epochs, base_lr=base, warmup_epochs=warmup)
        for k in range(total - w)
    ]
    np.testing.assert_allclose(ours, [float(decay(k)) for k in range(total - w)], rtol=1e-5, atol=1e-7)


def test_the_new_schedules_and_a_warm_up_use_the_recipe_rates_callback():
    for train in (TrainConfig(schedule="linear"), TrainConfig(schedule="one-cycle"), TrainConfig(warmup_epochs=3)):
        first, plateau = schedule_callbacks(train)
        assert isinstance(first, RecipeRates) and isinstance(plateau, keras.callbacks.ReduceLROnPlateau)
    assert isinstance(schedule_callbacks(TrainConfig(schedule="constant", warmup_epochs=1, plateau=False))[0], RecipeRates)


class _Rates(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen: list[float] = []

    def on_train_batch_begin(self, batch, logs=None):
        self.seen.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


@pytest.mark.parametrize("schedule", ["linear", "one-cycle"])
def test_fit_follows_the_schedule_step_by_step_and_ends_it_at_its_last_epoch(schedule, tiny):
    data, splits = tiny
    rates = _Rates()
    train = TrainConfig(optimizer="sgd", nesterov=False, learning_rate=0.01, batch_size=4, epochs=2, schedule=schedule, seed=3)
    train = dataclasses.replace(train, warmup_epochs=1 if schedule == "linear" else 0)
    result = fit(RESNET8, train, data, splits, callbacks=[rates], evaluate_test=False)
    per_epoch = -(-len(splits.train) // 4)
    total = 2 * per_epoch
    assert len(rates.seen) == total
    if schedule == "linear":  # epoch 1 warms up from 0, epoch 2 decays from 0.01 towards 0
        expected = [0.01 * k / per_epoch for k in range(per_epoch)] + [0.01 * (1 - k / per_epoch) for k in range(per_epoch)]
        assert result.history["lr"] == pytest.approx([0.0, 0.01])
    else:  # a rise over int(0.3 * total) steps, then the cosine to 0
        w = int(0.3 * total)
        expected = [0.01 * k / w for k in range(w)] + [
            0.005 * (1 + math.cos(math.pi * k / (total - w))) for k in range(total - w)
        ]
        assert result.history["lr"][0] == 0.0
    assert rates.seen == pytest.approx(expected, abs=1e-9)
    assert rates.seen[-1] == pytest.approx(expected[-1]) and 0 < rates.seen[-1] < 0.01 / per_epoch + 1e-9  # last step: near 0


# --------------------------------------------------------------------------
# EMA


class _Weights(keras.callbacks.Callback):
    """The trainable weights validated each epoch, and the raw ones after the epoch's last step."""

    def __init__(self):
        super().__init__()
        self.validated: list[list[np.ndarray]] = []
        self.raw: list[list[np.ndarray]] = []

    def on_train_batch_end(self, batch, logs=None):
        self._last = _numpy(self.model.trainable_weights)

    def on_test_begin(self, logs=None):
        self.raw.append(self._last)
        self.validated.append(_numpy(self.model.trainable_weights))


def test_ema_weights_are_validated_checkpointed_and_kept(tiny, tmp_path):
    data, splits = tiny
    watch = _Weights()
    train = dataclasses.replace(TINY, ema=0.9, augmentation=False)
    checkpoint = tmp_path / "best.weights.h5"
    result = fit(
        RESNET8, train, data, splits, callbacks=[watch], checkpoint=checkpoint, resume=Resume(every=1, folder=tmp_path / "resume")
    )
    assert len(watch.validated) == len(watch.raw) == 2
    for validated, raw in zip(watch.validated, watch.raw):
        assert any(not np.allclose(v, r) for v, r in zip(validated, raw))  # the average, not the raw weights
    best = watch.validated[result.best_epoch - 1]
    kept = _numpy(watch.model.trainable_weights)  # fit restored the best weights into the model
    for k, b in zip(kept, best):
        np.testing.assert_array_equal(k, b)
    assert result.evaluation["val"]["accuracy"] == pytest.approx(result.best_val_accuracy, abs=1e-6)
    # the checkpoint holds them too
    keras.backend.clear_session()  # the layer names fit gave them
    model = training_model(build_model(RESNET8), train)
    model.load_weights(checkpoint)
    for k, b in zip(_numpy(model.trainable_weights), best):
        np.testing.assert_array_equal(k, b)
    # a resumed run goes on from the raw weights and the average, as the whole run did
    keras.backend.clear_session()
    resumed = fit(RESNET8, train, data, splits, resume=Resume(start_from=tmp_path / "resume"), evaluate_test=False)
    assert resumed.history["loss"] == pytest.approx(result.history["loss"], rel=1e-4)
    assert resumed.history["val_loss"] == pytest.approx(result.history["val_loss"], rel=1e-4)


def test_ema_weights_callback_is_keras_swap_ema_weights():
    callback = EMAWeights()
    assert isinstance(callback, keras.callbacks.SwapEMAWeights) and callback.swap_on_epoch


# --------------------------------------------------------------------------
# CutMix


def _constant_images(n=37, seed=0):
    """Image i is filled with the value i + 1, so every pixel says where it came from."""
    images = np.repeat(np.arange(1, n + 1, dtype=np.uint8), 48 * 48).reshape(n, 48, 48, 1)
    labels = np.eye(len(CLASSES), dtype="float32")[np.random.default_rng(seed).integers(0, len(CLASSES), n)]
    return images, labels


def test_cutmix_pastes_a_box_from_a_partner_and_mixes_the_labels_by_its_area():
    images, labels = _constant_images()
    feed = TrainFeed(images, labels, batch_size=8, alpha=0.0, cutmix=1.0, epochs=2, seed=5)
    pasted = []
    for i in range(len(feed)):
        x, y = feed[i]
        epoch, step = divmod(i, feed.steps_per_epoch)
        idx = feed._epoch_order(epoch)[step * 8 : (step + 1) * 8]
        assert x.dtype == np.uint8 and x.shape == (len(idx), 48, 48, 1) and y.dtype == np.float32
        boxes = x != (idx + 1)[:, None, None, None]  # pixels from another image
        for row, own in enumerate(idx):
            values = np.unique(x[row])
            assert len(values) <= 2 and (own + 1) in values or boxes[row].all()
            share = boxes[row].mean()
            partner = int(values[values != own + 1][0]) - 1 if share else own
            np.testing.assert_allclose(y[row], (1 - share) * labels[own] + share * labels[partner], atol=1e-6)
        pasted.append(boxes.mean())
    assert max(pasted) > 0.05  # boxes of some size were pasted
    again = TrainFeed(images, labels, batch_size=8, alpha=0.0, cutmix=1.0, epochs=2, seed=5)
    np.testing.assert_array_equal(again[3][0], feed[3][0])  # a batch depends only on its index


def test_with_mixup_and_cutmix_each_batch_takes_one_of_them():
    images, labels = _constant_images()
    both = TrainFeed(images, labels, batch_size=8, alpha=0.4, cutmix=1.0, epochs=8, seed=5)
    kinds = set()
    for i in range(len(both)):
        x, _ = both[i]
        boxed = any(len(np.unique(image)) == 2 for image in x)  # mixup blends constant images into constant ones
        kinds.add("cutmix" if boxed else "mixup")
    assert kinds == {"mixup", "cutmix"}
    # mixup alone draws what it always drew
    alone, before = TrainFeed(images, labels, batch_size=8, alpha=0.4, epochs=2, seed=5), []
    rng = np.random.default_rng([5, 0, 0, 1])
    lam, partner = rng.beta(0.4, 0.4), rng.permutation(8)
    idx = alone._epoch_order(0)[:8]
    before = np.clip(np.rint(lam * images[idx].astype("float32") + (1 - lam) * images[idx][partner].astype("float32")), 0, 255)
    np.testing.assert_array_equal(alone[0][0], before.astype(np.uint8))


# --------------------------------------------------------------------------
# Pad-and-crop


def test_crop_moves_each_image_by_whole_pixels_with_zeros_and_only_in_training():
    model = training_model(build_model(RESNET8), TrainConfig(crop=4, seed=1))
    layers = [layer.name for layer in model.layers if layer.name.startswith("augment_")]
    assert layers == ["augment_shift", "augment_crop", "augment_flip"]
    crop = model.get_layer("augment_crop")
    assert isinstance(crop, keras.layers.RandomTranslation) and crop.fill_mode == "constant" and crop.interpolation == "nearest"
    images = np.random.default_rng(0).uniform(0.1, 1.0, (16, 48, 48, 1)).astype("float32")
    out = keras.ops.convert_to_numpy(crop(images, training=True))
    offsets = set()
    for image, moved in zip(images, out):
        padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
        found = [
            (dy, dx)
            for dy in range(-4, 5)
            for dx in range(-4, 5)
            if np.array_equal(padded[4 - dy : 52 - dy, 4 - dx : 52 - dx], moved)
        ]
        assert len(found) == 1, "not a whole-pixel zero-filled shift of at most 4"
        offsets.add(found[0])
    assert len(offsets) > 1  # per image, not one window per batch
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(crop(images, training=False)), images)


def test_crop_needs_an_image_more_than_twice_its_size():
    small = ResNetConfig(version=1, depth=8, head="gap", input_shape=(16, 16, 1))
    with pytest.raises(ConfigError, match=r"crop must be under half the image's height and width \(16x16\), but got crop=8"):
        training_model(build_model(small), TrainConfig(crop=8))


# --------------------------------------------------------------------------
# Shift TTA


def test_tta_views_count_and_shift_with_the_edge_repeated():
    images = np.arange(2 * 48 * 48, dtype=np.float32).reshape(2, 48, 48, 1)
    counts = {(h, s): len(tta_views(images, hflip=h, shift=s)) for h in (False, True) for s in (0.0, 0.1)}
    assert counts == {(False, 0.0): 1, (True, 0.0): 2, (False, 0.1): 5, (True, 0.1): 10}
    assert all(v.shape == images.shape for v in tta_views(images, hflip=True, shift=0.1))
    down = shifted(images, 2, 0)  # content moves 2 rows down, row 0 repeated into rows 0-1
    np.testing.assert_array_equal(down[:, 2:], images[:, :-2])
    np.testing.assert_array_equal(down[:, 0], images[:, 0])
    np.testing.assert_array_equal(down[:, 1], images[:, 0])
    left = shifted(images, 0, -3)
    np.testing.assert_array_equal(left[:, :, :-3], images[:, :, 3:])
    np.testing.assert_array_equal(left[:, :, -1], images[:, :, -1])


def test_shift_tta_averages_the_shifted_views(monkeypatch):
    from ferhpo.training import feeds

    # a linear model on raw pixels: every view changes the output
    model = keras.Sequential([keras.Input((48, 48, 1)), keras.layers.Flatten(), keras.layers.Dense(7)])
    images = np.random.default_rng(1).random((5, 48, 48, 1)).astype("float32")
    sizes = []
    real = feeds.predict

    def counting(model, x, **kwargs):
        sizes.append(len(x))
        return real(model, x, **kwargs)

    monkeypatch.setattr(feeds, "predict", counting)
    averaged = predict_proba(model, images, batch_size=4, hflip=True, shift=0.1)
    assert averaged.shape == (5, 7) and sizes == [50]  # 10 views, one predict call

    def view(dy, dx, flip):  # out[y, x] = in[clip(y - dy), clip(x - dx)], then mirrored
        rows = np.clip(np.arange(48) - dy, 0, 47)
        cols = np.clip(np.arange(48) - dx, 0, 47)
        moved = images[:, rows][:, :, cols]
        return moved[:, :, ::-1] if flip else moved

    d = round(0.1 * 48)
    offsets = [(0, 0), (-d, 0), (d, 0), (0, -d), (0, d)]
    expected = np.mean([model.predict(view(dy, dx, f), verbose=0) for dy, dx in offsets for f in (False, True)], axis=0)
    np.testing.assert_allclose(averaged, expected, rtol=1e-5, atol=1e-5)
    assert predict_proba(model, images, batch_size=4, shift=0.1).shape == (5, 7) and sizes[-1] == 25


# --------------------------------------------------------------------------
# All of it in one tiny run


def test_fit_with_every_long_budget_option(tiny):
    data, splits = tiny
    train = TrainConfig(
        optimizer="adamw",
        weight_decay=0.05,
        batch_size=8,
        epochs=2,
        seed=3,
        schedule="one-cycle",
        warmup_epochs=1,
        ema=0.9,
        cutmix=1.0,
        mixup=0.2,
        crop=2,
        tta_hflip=True,
        tta_shift=0.05,
    )
    result = fit(RESNET8, train, data, splits)
    assert result.epochs_run == 2 and np.isfinite(result.history["loss"]).all()
    assert result.history["lr"] == pytest.approx([0.0, 1e-3])  # the warm-up's start, then the cosine's
    assert set(result.evaluation) == {"val", "test", "test_public", "test_private"}
    assert result.evaluation["test"]["n"] == len(splits.test) == len(result.test_predictions)


# --------------------------------------------------------------------------
# The KerasTuner HyperModel over resnet-cpu-long


def test_the_resnet_hypermodel_applies_cutmix_ema_and_warm_up_and_leaves_shift_tta_out(monkeypatch):
    import keras_tuner

    from ferhpo import hypermodels

    made = {"feeds": [], "ema": []}

    class SpyFeed(hypermodels.TrainFeed):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made["feeds"].append(self)

    class SpyEMA(hypermodels.EMAWeights):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made["ema"].append(self)

    monkeypatch.setattr(hypermodels, "TrainFeed", SpyFeed)
    monkeypatch.setattr(hypermodels, "EMAWeights", SpyEMA)
    hypermodel = hypermodels.ResNetHyperModel("resnet-cpu-long")
    names = {p.name for p in hypermodel.tuned_space.params}
    assert {"cutmix", "ema", "crop", "warmup_epochs", "nesterov", "weight_decay", "base_filters"} <= names
    assert not names & {"tta_hflip", "tta_shift"}
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    hp.values.update(depth=8, cutmix=1.0, ema=0.99, warmup_epochs=2, crop=2, schedule="linear")
    model = hypermodel.build(hp)
    assert model.optimizer.use_ema and model.get_layer("augment_crop") is not None
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (12, 48, 48), dtype=np.uint8), rng.integers(0, 7, 12)
    # one epoch: the warm-up of 2 is shortened to none (TrainConfig.with_epochs)
    history = hypermodel.fit(hp, model, x, y, validation_data=(x[:4], y[:4]), epochs=1, batch_size=4, verbose=0)
    assert len(history.history["val_loss"]) == 1
    (feed,) = made["feeds"]
    assert feed.cutmix == 1.0 and feed.alpha == 0.0
    assert len(made["ema"]) == 1
