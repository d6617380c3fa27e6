"""Model builders, configs and the preset table.

Parametrised over the preset registry (timm ``tests/test_models.py`` style):
the full-size presets are only built and counted; every builder option is
trained for one step on a tiny model so the file stays fast on a small CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from ferhpo.config import (
    DenseNetConfig,
    Preset,
    ResNetConfig,
    TrainConfig,
    model_config_from_dict,
    model_config_to_dict,
    reference_lr,
)
from ferhpo.errors import ConfigError
from ferhpo.models import build_densenet, build_model, build_resnet
from ferhpo.presets import get_preset, load_presets

PRESETS = load_presets()

# The study's reported parameter counts (trainable + non-trainable). Kept here
# as well as in baseline.toml so an edit to the table cannot silently move
# the target the builders are checked against.
STUDY_PARAMS = {
    "densenet-c0.3": 582_025,
    "densenet-c0.5": 723_891,
    "densenet-c0.7": 918_121,
    "resnet-v1-104": 1_647_975,
    "resnet-v2-155": 4_711_047,
}

TINY_DENSENET = dict(growth_rate=4, num_blocks=4, layers_per_block=1)
TINY_CONFIGS = {
    "densenet-tiny": DenseNetConfig(**TINY_DENSENET),
    "densenet-no-bottleneck": DenseNetConfig(**TINY_DENSENET, bottleneck=False),
    "densenet-dropout": DenseNetConfig(**TINY_DENSENET, dropout=0.2),
    "densenet-gap": DenseNetConfig(**TINY_DENSENET, head="gap"),
    "densenet-3-blocks": DenseNetConfig(**{**TINY_DENSENET, "num_blocks": 3}),
    "densenet-stem-filters": DenseNetConfig(**TINY_DENSENET, stem_filters=6, compression=1.0),
    # Every stride-2 1x1 convolution gets >= 16 input channels (v1: base_filters,
    # v2: 4 * base_filters). Below that, TensorFlow's oneDNN CPU kernel for the
    # weight gradient corrupts memory on AVX-512 (uxlfoundation/oneDNN#6035),
    # which crashes the test process; the reference models are not affected.
    "resnet-v1-8": ResNetConfig(version=1, depth=8),
    "resnet-v2-11": ResNetConfig(version=2, depth=11, base_filters=4),
    "resnet-v1-base-filters": ResNetConfig(version=1, depth=8, base_filters=24),
    "resnet-v2-gap-no-l2": ResNetConfig(version=2, depth=11, base_filters=4, head="gap", l2=0.0),
}

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _seeded_fresh_session():
    keras.utils.set_random_seed(0)
    yield
    # Resets layer-name counters and graph state; the full gc.collect() of
    # free_memory=True costs ~0.2 s per test for no benefit at these sizes.
    keras.backend.clear_session(free_memory=False)


# ---------------------------------------------------------------- presets


def test_registry_is_the_study_table():
    assert sorted(PRESETS) == sorted(STUDY_PARAMS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_param_count_is_exact(name):
    preset = PRESETS[name]
    model = build_model(preset.model)
    assert model.count_params() == STUDY_PARAMS[name]
    assert model.count_params() == preset.reported_params
    assert model.input_shape == (None, 48, 48, 1)
    assert model.output_shape == (None, 7)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_recipe(name):
    preset = PRESETS[name]
    family = preset.model.family
    assert preset.train.epochs == 200
    assert preset.train.learning_rate == pytest.approx(1e-3)
    assert preset.train.optimizer == ("rmsprop" if family == "densenet" else "adam")
    assert preset.train.batch_size == (32 if family == "densenet" else 64)
    assert preset.protocol == f"seed-{family}"
    assert 0.6 < preset.reported_test_accuracy < 0.7
    assert preset.description


def test_reference_densenet_depth_and_transitions():
    model = PRESETS["densenet-c0.5"].model
    assert model.depth == 100
    assert model.stem_width == 24
    # int((24 + 144) * 0.5) = 84, int((84 + 144) * 0.5) = 114, ...
    assert model.transition_filters == (84, 114, 129)
    assert DenseNetConfig.from_depth(100, num_blocks=4).layers_per_block == 12
    assert DenseNetConfig.from_depth(100, num_blocks=3).layers_per_block == 16


def test_reference_resnet_blocks_per_stage():
    assert PRESETS["resnet-v1-104"].model.blocks_per_stage == 17
    assert PRESETS["resnet-v2-155"].model.blocks_per_stage == 17


def test_get_preset_overrides_model_and_train_fields():
    preset = get_preset("densenet-c0.5", compression=0.6, batch_size=16, seed=3)
    assert preset.model.compression == 0.6
    assert preset.train.batch_size == 16
    assert preset.train.seed == 3
    assert preset.train.optimizer == "rmsprop"  # untouched fields keep the preset's values
    assert PRESETS["densenet-c0.5"].model.compression == 0.5


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_model_config_round_trips_through_json(name):
    config = PRESETS[name].model
    data = json.loads(json.dumps(model_config_to_dict(config)))
    assert model_config_from_dict(data) == config


def test_model_config_from_dict_rejects_unknown_family_and_keys():
    with pytest.raises(ConfigError, match=r"family must be one of 'densenet', 'resnet', but got family='vgg'"):
        model_config_from_dict({"family": "vgg"})
    with pytest.raises(ConfigError, match=r"unknown key 'growth_rate' in model"):
        model_config_from_dict({"family": "resnet", "growth_rate": 12})


def test_get_preset_rejects_unknown_override():
    with pytest.raises(ConfigError, match=r"unknown override 'colour' for preset 'resnet-v1-104'"):
        get_preset("resnet-v1-104", colour="red")


def test_get_preset_validates_overrides():
    with pytest.raises(ConfigError, match=r"6n\+2 .*but got depth=105"):
        get_preset("resnet-v1-104", depth=105)


# ---------------------------------------------------------------- builders


def _train_one_step(model: keras.Model, run_eagerly: bool = True) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.random((4, 48, 48, 1), dtype=np.float32)
    y = rng.integers(0, 7, size=(4,))
    # Eager by default: tracing the train step costs ~5 s on a small CPU, far
    # more than one step of a tiny model; one test below covers the traced path.
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=run_eagerly)
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    return np.asarray(model.predict_on_batch(x))


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_builder_option_trains_one_step(name):
    model = build_model(TINY_CONFIGS[name])
    probs = _train_one_step(model)
    assert probs.shape == (4, 7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_traced_train_step():
    probs = _train_one_step(build_model(TINY_CONFIGS["densenet-dropout"]), run_eagerly=False)
    assert probs.shape == (4, 7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_layer_names_are_deterministic(name):
    # No clear_session in between: a layer left to Keras' auto-naming would
    # come back as "conv2d_1" the second time.
    config = TINY_CONFIGS[name]
    first = [layer.name for layer in build_model(config).layers]
    second = [layer.name for layer in build_model(config).layers]
    assert first == second
    assert len(set(first)) == len(first)
    assert first[-1] == "predictions"


def test_builder_options_change_the_graph():
    def names(config):
        return {layer.name for layer in build_model(config).layers}

    base = names(TINY_CONFIGS["densenet-tiny"])
    assert "dense1_block1_0_conv" in base and not any("drop" in n for n in base)
    assert "dense1_block1_0_conv" not in names(TINY_CONFIGS["densenet-no-bottleneck"])
    dropout = names(TINY_CONFIGS["densenet-dropout"])
    assert {"dense1_block1_0_drop", "dense1_block1_1_drop"} <= dropout
    assert "head_gap" in names(TINY_CONFIGS["densenet-gap"])
    assert "transition3_conv" not in names(TINY_CONFIGS["densenet-3-blocks"])
    assert "stage1_block1_shortcut_conv" in names(TINY_CONFIGS["resnet-v2-11"])
    assert "stage1_block1_shortcut_conv" not in names(TINY_CONFIGS["resnet-v1-8"])


def test_l2_applies_to_convolutions_only():
    model = build_resnet(ResNetConfig(version=1, depth=8, l2=1e-4))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs and all(layer.kernel_regularizer is not None for layer in convs)
    assert model.get_layer("predictions").kernel_regularizer is None
    unregularised = build_resnet(ResNetConfig(version=1, depth=8, l2=0.0))
    assert all(getattr(layer, "kernel_regularizer", None) is None for layer in unregularised.layers)


def test_predictions_stay_float32_under_mixed_precision():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = build_densenet(TINY_CONFIGS["densenet-tiny"])
    finally:
        keras.config.set_dtype_policy(previous)
    assert model.get_layer("dense1_block1_1_conv").compute_dtype == "float16"
    assert model.get_layer("predictions").compute_dtype == "float32"
    assert model.get_layer("predictions").activation is keras.activations.softmax


def test_builders_reject_the_wrong_config_type():
    with pytest.raises(TypeError, match="DenseNetConfig"):
        build_densenet(ResNetConfig())
    with pytest.raises(TypeError, match="ResNetConfig"):
        build_resnet(DenseNetConfig())
    with pytest.raises(TypeError, match="DenseNetConfig or ResNetConfig"):
        build_model(TrainConfig())


# ---------------------------------------------------------------- validation


# (factory, keyword arguments, message regex): each message states the rule
# and echoes the value received.
INVALID = [
    (ResNetConfig, dict(version=1, depth=103), r"ResNet v1 depth must be 6n\+2 \(8, 14, 20, \.\.\.\), but got depth=103"),
    (ResNetConfig, dict(version=2, depth=154), r"ResNet v2 depth must be 9n\+2 \(11, 20, 29, \.\.\.\), but got depth=154"),
    (ResNetConfig, dict(version=3), r"version must be 1 or 2, but got version=3"),
    (ResNetConfig, dict(l2=-1e-4), r"l2 must be >= 0, but got l2=-0.0001"),
    (ResNetConfig, dict(input_shape=(12, 12, 1)), r"at least 13 .*input_shape=\(12, 12, 1\)"),
    (DenseNetConfig, dict(compression=0), r"compression must be in \(0, 1\], but got compression=0$"),
    (DenseNetConfig, dict(compression=1.5), r"compression must be in \(0, 1\], but got compression=1.5"),
    (DenseNetConfig, dict(compression=0.001), r"transition with no filters"),
    (DenseNetConfig, dict(dropout=1.0), r"dropout must be in \[0, 1\), but got dropout=1.0"),
    (DenseNetConfig, dict(growth_rate=0), r"growth_rate must be a positive integer, but got growth_rate=0"),
    (DenseNetConfig, dict(layers_per_block=2.0), r"layers_per_block must be a positive integer"),
    (DenseNetConfig, dict(bottleneck=1), r"bottleneck must be true or false, but got bottleneck=1"),
    (DenseNetConfig, dict(head="max"), r"head must be one of 'avg4', 'gap', but got head='max'"),
    (DenseNetConfig, dict(input_shape=(16, 16, 1)), r"at least 32 .*input_shape=\(16, 16, 1\)"),
    (DenseNetConfig, dict(input_shape=(48, 48)), r"input_shape must be \(height, width, channels\)"),
    (DenseNetConfig, dict(num_classes=1), r"num_classes must be an integer >= 2, but got num_classes=1"),
    (DenseNetConfig.from_depth, dict(depth=101), r"num_blocks \* 2L \+ 4 .*but got depth=101"),
    (
        TrainConfig,
        dict(optimizer="adagrad"),
        r"optimizer must be one of 'rmsprop', 'adam', 'sgd', 'adamw', but got optimizer='adagrad'",
    ),
    (TrainConfig, dict(batch_size=0), r"batch_size must be a positive integer, but got batch_size=0"),
    (TrainConfig, dict(epochs=0), r"epochs must be a positive integer, but got epochs=0"),
    (TrainConfig, dict(learning_rate=0.0), r"learning_rate must be > 0, but got learning_rate=0.0"),
    (TrainConfig, dict(learning_rate=float("nan")), r"learning_rate must be a finite number"),
    (TrainConfig, dict(schedule="exponential"), r"schedule must be one of .*but got schedule='exponential'"),
    (TrainConfig, dict(label_smoothing=1.0), r"label_smoothing must be in \[0, 1\)"),
    (TrainConfig, dict(shift=-0.1), r"shift must be in \[0, 1\), but got shift=-0.1"),
    (TrainConfig, dict(plateau_factor=1.0), r"plateau_factor must be in \(0, 1\)"),
    (TrainConfig, dict(seed=-1), r"seed must be an integer >= 0, but got seed=-1"),
    (reference_lr, dict(epoch=-1), r"epoch must be an integer >= 0, but got epoch=-1"),
]


@pytest.mark.parametrize(
    ("factory", "kwargs", "match"),
    INVALID,
    ids=[f"{f.__qualname__}({','.join(f'{k}={v!r}' for k, v in kw.items())})" for f, kw, _ in INVALID],
)
def test_invalid_config_is_rejected(factory, kwargs, match):
    with pytest.raises(ConfigError, match=match) as info:
        factory(**kwargs)
    assert isinstance(info.value, ValueError)


def test_configs_are_frozen():
    config = DenseNetConfig()
    with pytest.raises(AttributeError):
        config.compression = 0.7  # type: ignore[misc]


def test_unknown_preset_lists_known_names():
    known = ", ".join(PRESETS)
    with pytest.raises(ConfigError, match=rf"unknown preset 'nope'; known presets: {known}$"):
        get_preset("nope")


PRESET_TOML = """
[presets.tiny]
protocol = "seed-resnet"
reported_test_accuracy = 0.5
reported_params = 1
model = {{ family = "resnet", version = 1, depth = 8{model_extra} }}
train = {{ optimizer = "adam", batch_size = 4{train_extra} }}
{preset_extra}
"""


def _write_presets(tmp_path, model_extra="", train_extra="", preset_extra=""):
    path = tmp_path / "presets.toml"
    text = PRESET_TOML.format(model_extra=model_extra, train_extra=train_extra, preset_extra=preset_extra)
    path.write_text(text)
    return path


def test_load_presets_from_a_file(tmp_path):
    presets = load_presets(_write_presets(tmp_path, model_extra=", input_shape = [32, 32, 3]"))
    tiny = presets["tiny"]
    assert isinstance(tiny, Preset)
    assert tiny.model == ResNetConfig(version=1, depth=8, input_shape=(32, 32, 3))
    assert tiny.train == TrainConfig(optimizer="adam", batch_size=4)


@pytest.mark.parametrize(
    ("extra", "section", "key"),
    [
        ({"model_extra": ", widht = 3"}, "model", "widht"),
        ({"train_extra": ", epoch = 3"}, "train", "epoch"),
        ({"preset_extra": "accuracy = 0.7"}, "the preset", "accuracy"),
    ],
)
def test_unknown_toml_key_names_file_preset_and_key(tmp_path, extra, section, key):
    path = _write_presets(tmp_path, **extra)
    with pytest.raises(ConfigError, match=rf"presets\.toml: preset 'tiny': unknown key '{key}' in {section}"):
        load_presets(path)


def test_invalid_toml_value_names_file_and_preset(tmp_path):
    path = _write_presets(tmp_path)
    path.write_text(path.read_text().replace("depth = 8", "depth = 9"))
    with pytest.raises(ConfigError, match=r"presets\.toml: preset 'tiny': ResNet v1 depth must be 6n\+2"):
        load_presets(path)


def test_missing_preset_file(tmp_path):
    with pytest.raises(ConfigError, match=r"preset table not found: .*missing\.toml"):
        load_presets(tmp_path / "missing.toml")


# ---------------------------------------------------------------- schedule


@pytest.mark.parametrize(
    ("epoch", "lr"),
    [(0, 1e-3), (80, 1e-3), (81, 1e-4), (120, 1e-4), (121, 1e-5), (161, 1e-6), (180, 1e-6), (181, 5e-7), (199, 5e-7)],
)
def test_reference_lr(epoch, lr):
    assert reference_lr(epoch, base_lr=1e-3) == pytest.approx(lr)
