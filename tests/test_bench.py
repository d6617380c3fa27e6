"""`ferhpo bench`: correctness of what it compares and of what it reports, never its speed."""

from __future__ import annotations

import dataclasses
import json

import keras
import numpy as np
import pytest

from conftest import run_cli, write_folder
from ferhpo.bench import PATH_FIELDS, RESULT_FIELDS, forward_flops, reference_batches, reference_model
from ferhpo.config import DenseNetConfig, ResNetConfig, TrainConfig
from ferhpo.errors import ConfigError
from ferhpo.models import build_model
from ferhpo.presets import get_preset, load_presets
from ferhpo.training import compiled_model
from test_baseline import TINY_PRESETS

TINY = {
    "densenet": DenseNetConfig(growth_rate=4, num_blocks=2, layers_per_block=2, head="gap"),
    "resnet-v1": ResNetConfig(version=1, depth=8, base_filters=16, head="gap"),
    "resnet-v2": ResNetConfig(version=2, depth=11, base_filters=8, head="gap"),
}
TRAIN = TrainConfig(optimizer="rmsprop", batch_size=8, seed=5)


pytestmark = pytest.mark.usefixtures("fresh_keras")


def _batch(n: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 48, 48, 1), dtype=np.uint8)
    labels = np.eye(7, dtype="float32")[rng.integers(0, 7, n)]
    return images, labels


# --------------------------------------------------------------------------- the two paths agree


@pytest.mark.parametrize("family", list(TINY))
def test_fast_and_reference_paths_compute_the_same_loss_float32(family):
    config = TINY[family]
    images, labels = _batch()
    core, fast = compiled_model(config, TRAIN)
    ref = reference_model(config, TRAIN)
    # The same architecture, the same initial weights (same seed), the same count.
    assert core.count_params() == ref.count_params()
    for a, b in zip(core.get_weights(), ref.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # Inference mode: augmentation is the identity, so the losses must agree.
    fast_loss = fast.test_on_batch(images, labels, return_dict=True)["loss"]
    ref_loss = ref.test_on_batch(images.astype("float32") / 255.0, labels, return_dict=True)["loss"]
    assert fast_loss == pytest.approx(ref_loss, rel=1e-5)

    # Training mode (batch statistics, one optimizer step), augmentation off on both sides.
    plain = dataclasses.replace(TRAIN, augmentation=False)
    core, fast = compiled_model(config, plain)
    ref = reference_model(config, plain)
    fast_step = fast.train_on_batch(images, labels, return_dict=True)["loss"]
    ref_step = ref.train_on_batch(images.astype("float32") / 255.0, labels, return_dict=True)["loss"]
    assert fast_step == pytest.approx(ref_step, rel=1e-5)
    for a, b in zip(core.get_weights(), ref.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["densenet", "resnet-v1"])
def test_mixed_bfloat16_path_computes_the_same_loss_within_bfloat16_tolerance(family):
    config = TINY[family]
    images, labels = _batch(seed=1)
    core, fast = compiled_model(config, dataclasses.replace(TRAIN, precision="mixed_bfloat16"))
    ref = reference_model(config, TRAIN)
    assert keras.config.dtype_policy().name == "float32"  # the global policy was restored
    assert core.layers[-1].compute_dtype == "float32"  # the softmax stays float32
    assert any(layer.compute_dtype == "bfloat16" for layer in core.layers)
    for a, b in zip(core.get_weights(), ref.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # variables stay float32
    fast_loss = fast.test_on_batch(images, labels, return_dict=True)["loss"]
    ref_loss = ref.test_on_batch(images.astype("float32") / 255.0, labels, return_dict=True)["loss"]
    # bfloat16 keeps 8 bits of mantissa: about 2-3 significant digits survive the network.
    assert fast_loss == pytest.approx(ref_loss, rel=3e-2)


def test_an_unknown_precision_is_a_config_error():
    with pytest.raises(
        ConfigError, match="precision must be one of .float32., .mixed_bfloat16., .mixed_float16., but got precision=.float8."
    ):
        TrainConfig(precision="float8")


# --------------------------------------------------------------------------- the reference feed


def test_reference_batches_scale_shift_and_flip_on_the_host():
    images = np.random.default_rng(0).integers(0, 256, (10, 48, 48, 1), dtype=np.uint8)
    labels = np.arange(10)
    unshifted = reference_batches(images, labels, batch_size=4, shift=0.0, seed=1)
    seen_flip = seen_plain = False
    for _ in range(5):  # crosses an epoch boundary (two full batches per epoch)
        x, y = next(unshifted)
        assert x.shape == (4, 48, 48, 1) and x.dtype == np.float32
        for image, i in zip(x, y):
            plain = images[i].astype("float32") / 255.0
            if np.allclose(image, plain):
                seen_plain = True
            else:
                np.testing.assert_allclose(image, plain[:, ::-1], atol=1e-6)  # labels follow their images
                seen_flip = True
    assert seen_flip and seen_plain
    x, _ = next(reference_batches(images, labels, batch_size=4, shift=0.1, seed=1))
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert not any(np.allclose(img, images[i].astype("float32") / 255.0) for img in x for i in range(10))


def test_auto_precision_follows_the_hardware(monkeypatch):
    import ferhpo.bench as bench

    monkeypatch.setattr(bench, "accelerator", lambda: None)
    monkeypatch.setattr(bench, "_cpu_flags", lambda: {"avx2", "avx512f"})
    assert bench.auto_precision() == "float32"
    monkeypatch.setattr(bench, "_cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert bench.auto_precision() == "mixed_bfloat16"
    monkeypatch.setattr(bench, "_cpu_flags", lambda: set())
    monkeypatch.setattr(bench, "accelerator", lambda: "gpu: NVIDIA H200")
    monkeypatch.setattr(bench, "gpu_capability", lambda: (9, 0))
    assert bench.auto_precision() == "mixed_bfloat16"
    monkeypatch.setattr(bench, "gpu_capability", lambda: (7, 0))  # V100: float16 tensor cores only
    assert bench.auto_precision() == "mixed_float16"


# --------------------------------------------------------------------------- counting


def test_forward_flops_are_counted_from_layer_shapes():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 2 * 8*8*4 * 3*3*1 = 4,608
    x = keras.layers.Conv2D(6, 1, strides=2)(x)  # 2 * 4*4*6 * 1*1*4 = 768
    x = keras.layers.BatchNormalization()(x)  # not counted
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(7)(x)  # 2 * 96 * 7 = 1,344
    assert forward_flops(keras.Model(inputs, outputs)) == 4_608 + 768 + 1_344


@pytest.mark.parametrize("name", list(load_presets()))
def test_every_preset_has_a_plausible_flop_count(name):
    preset = get_preset(name)
    flops = forward_flops(build_model(preset.model))
    # From 0.78 GFLOP (DenseNet c0.3) to 2.4 GFLOP (ResNet v2-155) per 48x48 image.
    assert 0.5e9 < flops < 3e9


# --------------------------------------------------------------------------- the command


def test_bench_command_json_has_every_field(tmp_path):
    (tmp_path / "presets.toml").write_text(TINY_PRESETS.replace("EPOCHS", "1"))
    root = write_folder(tmp_path / "fer")
    result = run_cli(
        "bench", "--presets", str(tmp_path / "presets.toml"), "--models", "tiny-densenet", "tiny-resnet",
        "--steps", "2", "--warmup", "1", "--repeats", "2", "--reference", "--json", "--precision", "float32",
        "--data", str(root), "--cache-dir", str(tmp_path / "cache"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert set(report) == {"machine", "precision", "matmul_gflops", "data_loading", "models"}
    assert report["precision"] == "float32" and set(report["matmul_gflops"]) == {"float32"}
    assert report["matmul_gflops"]["float32"] > 0
    assert report["machine"]["cores"] >= 1 and report["machine"]["backend"] == keras.backend.backend()
    loading = report["data_loading"]
    assert loading["images"] == 35 and loading["cold_seconds"] > 0 and loading["warm_seconds"] > 0
    assert loading["speedup"] == pytest.approx(loading["cold_seconds"] / loading["warm_seconds"])
    assert [m["name"] for m in report["models"]] == ["tiny-densenet", "tiny-resnet"]
    presets_params = {}
    for name in ("tiny-densenet", "tiny-resnet"):
        keras.backend.clear_session(free_memory=False)
        presets_params[name] = build_model(get_preset(name, path=tmp_path / "presets.toml").model).count_params()
    for m in report["models"]:
        assert set(RESULT_FIELDS) <= set(m)
        assert m["params"] == presets_params[m["name"]]
        assert m["batch"] == 16 and m["repeats"] == 2 and m["precision"] == "float32"
        for path in (m, m["reference"]):
            assert set(PATH_FIELDS) <= set(path)
            assert len(path["train_repeats"]) == 2 and len(path["inference_repeats"]) == 2
            assert path["train_images_per_second"] == pytest.approx(float(np.median(path["train_repeats"])))
            assert path["train_gflops_per_second"] == pytest.approx(
                3 * m["forward_gflops_per_image"] * path["train_images_per_second"]
            )
            assert path["peak_rss_mb"] > 0 and path["peak_device_mb"] is None  # this machine has no accelerator
        assert m["ratio"] == pytest.approx(m["train_images_per_second"] / m["reference"]["train_images_per_second"])
        assert m["inference_ratio"] == pytest.approx(
            m["inference_images_per_second"] / m["reference"]["inference_images_per_second"]
        )


def test_bench_command_prints_a_table_with_the_ratio(tmp_path):
    (tmp_path / "presets.toml").write_text(TINY_PRESETS.replace("EPOCHS", "1"))
    result = run_cli(
        "bench", "--presets", str(tmp_path / "presets.toml"), "--models", "tiny-resnet", "--batch", "4",
        "--steps", "1", "--warmup", "1", "--repeats", "1", "--reference", "--precision", "mixed_bfloat16",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert any(line.startswith("ceiling    matmul float32") and "bfloat16" in line for line in lines)
    row = next(line for line in lines if line.startswith("tiny-resnet"))
    assert "ferhpo" in row and "mixed_bfloat16" in row and " 4 " in row
    assert any("reference" in line and "float32" in line for line in lines)
    assert any("ratio ferhpo/reference: training" in line for line in lines)


# --------------------------------------------------------------------------- threads and precision in runs


def test_thread_env_limits_every_backend():
    from ferhpo.threads import thread_env

    one = thread_env(1)
    assert one["TF_NUM_INTRAOP_THREADS"] == "1" and one["OMP_NUM_THREADS"] == "1"
    assert "intra_op_parallelism_threads=1" in one["XLA_FLAGS"]
    assert thread_env(4)["TF_NUM_INTRAOP_THREADS"] == "4" and "XLA_FLAGS" not in thread_env(4)
    with pytest.raises(ConfigError, match="threads must be >= 1, but got threads=0"):
        thread_env(0)


def test_trial_processes_divide_the_cores_among_workers(monkeypatch):
    from ferhpo.engines.trial import SHARE_GPU, trial_env

    for name in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS", "XLA_PYTHON_CLIENT_PREALLOCATE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert "TF_NUM_INTRAOP_THREADS" not in trial_env(1)  # one worker: the backend's default
    assert trial_env(2)["TF_NUM_INTRAOP_THREADS"] == "2"
    assert trial_env(8)["TF_NUM_INTRAOP_THREADS"] == "1"
    assert all(trial_env(1)[k] == v for k, v in SHARE_GPU.items())
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's setting wins
    assert trial_env(2)["OMP_NUM_THREADS"] == "3"


def test_search_precision_overrides_the_space_and_binds_a_resume():
    from ferhpo.engines import SearchSettings, check_resume

    common = dict(
        study="s", storage="sqlite://", space_path="x.toml", space={}, engine="optuna", sampler="tpe",
        pruner="none", objectives=("val_accuracy",), trials=1, timeout=None, budget={}, max_epochs=3,
        protocol="holdout", seed=7, workers=1, data={}, data_fingerprint="f",
    )  # fmt: skip
    plain = SearchSettings(**common)
    bf16 = SearchSettings(**common, precision="mixed_bfloat16")
    space_recipe = TrainConfig(precision="mixed_float16", epochs=200)
    assert plain.recipe(space_recipe, epochs=3) == dataclasses.replace(space_recipe, epochs=3, seed=7)
    assert bf16.recipe(space_recipe, epochs=3).precision == "mixed_bfloat16"
    saved = json.loads(json.dumps(plain.binding()))
    check_resume(plain, saved)
    with pytest.raises(ConfigError, match='started with precision=null, but this run has precision="mixed_bfloat16"'):
        check_resume(bf16, saved)
