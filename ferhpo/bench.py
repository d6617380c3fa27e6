"""Throughput benchmark: ferhpo's training path against the straightforward pipeline.

For each model `bench_model` times, in one process and alternating block by block,

* ferhpo's path: the model `training.build_training_model` makes for every run (uint8
  images in memory, scaling and augmentation as layers inside the step, the chosen
  precision), fed the way `training.fit` feeds it (arrays to ``model.fit``, which
  prefetches);
* with ``reference=True``, the straightforward pipeline: the same architecture in
  float32, fed by a Python generator that scales and augments every batch on the
  host (random shift of 10% with nearest fill, horizontal flip; what Keras'
  ``ImageDataGenerator`` did) and trained by ``model.fit`` with default settings.

The first steps of every block are warm-up and are not timed; figures are medians
over repeats. Inference is one ``predict`` call over at least 512 images per block.
`ferhpo bench` runs every model in a fresh process, so its peak memory is its own.
Forward FLOPs are counted from the layer shapes (multiply-adds x 2 of
convolution and dense layers); a training step is counted as three forward passes
(forward, and backward for inputs and weights). The ceiling is this machine's
measured matrix-multiply rate in the compute dtype.
"""

from __future__ import annotations

import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import keras
import numpy as np

from ferhpo.config import ModelConfig, TrainConfig
from ferhpo.models import build_model
from ferhpo.threads import usable_cores
from ferhpo.training import compiled_model, dtype_policy, make_optimizer

#: FER2013's training images: the epoch `epoch_seconds` estimates.
EPOCH_IMAGES = 28_709

#: Every field a model's result carries (the JSON of `ferhpo bench` and its test).
RESULT_FIELDS = (
    "name", "params", "forward_gflops_per_image", "batch", "precision",
    "train_images_per_second", "inference_images_per_second", "train_gflops_per_second",
    "peak_rss_mb", "peak_device_mb", "repeats", "reference", "ratio", "inference_ratio",
)  # fmt: skip
PATH_FIELDS = (
    "train_images_per_second", "epoch_seconds", "inference_images_per_second", "train_gflops_per_second",
    "peak_rss_mb", "peak_device_mb", "train_repeats", "inference_repeats",
)  # fmt: skip


# --------------------------------------------------------------------------- counting


def forward_flops(model: keras.Model) -> int:
    """Forward FLOPs per image: 2 x multiply-adds of every convolution and dense layer.

    Counted from the built layers' shapes (nested models included). Normalisation,
    activations, pooling and concatenation are memory-bound and not counted, as is usual.
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += forward_flops(layer)
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            out = layer.output.shape
            kh, kw = layer.kernel_size
            total += 2 * int(np.prod(out[1:])) * kh * kw
        elif isinstance(layer, keras.layers.Conv2D):
            out = layer.output.shape
            kh, kw = layer.kernel_size
            cin = layer.input.shape[-1]
            total += 2 * int(np.prod(out[1:])) * kh * kw * cin // layer.groups
        elif isinstance(layer, keras.layers.Dense):
            inputs = layer.input.shape
            total += 2 * int(np.prod(inputs[1:-1] or [1])) * inputs[-1] * layer.units
    return total


def matmul_gflops(dtype: str = "float32", *, size: int | None = None, repeats: int = 5) -> float:
    """This machine's measured matrix-multiply rate (GFLOP/s, median) on the Keras backend."""
    n = size or (8192 if accelerator() else 2048)
    a = keras.random.normal((n, n), seed=1, dtype=dtype)
    b = keras.random.normal((n, n), seed=2, dtype=dtype)

    def once() -> float:
        start = time.perf_counter()
        c = keras.ops.matmul(a, b)
        keras.ops.convert_to_numpy(keras.ops.cast(c[0, 0], "float32"))  # waits for asynchronous backends
        return time.perf_counter() - start

    once()  # warm-up: kernel selection, compilation
    seconds = statistics.median(once() for _ in range(repeats))
    return 2 * n**3 / seconds / 1e9


# --------------------------------------------------------------------------- machine


def accelerator() -> str | None:
    """The name of the accelerator the Keras backend computes on, or None for the CPU."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return None if device.platform == "cpu" else f"{device.platform}: {device.device_kind}"
    if backend == "torch":
        import torch

        return f"cuda: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else None
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    details = tf.config.experimental.get_device_details(gpus[0])
    return f"gpu: {details.get('device_name', gpus[0].name)}"


def _cpuinfo(key: str) -> str | None:
    """The first value of ``key`` in /proc/cpuinfo (Linux), or None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _cpu_flags() -> set[str]:
    return set((_cpuinfo("flags") or "").split())


def _cpu_name() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_has_bf16() -> bool:
    """Whether the CPU has native bfloat16 matrix instructions (AVX512-BF16 or AMX)."""
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


def machine() -> dict:
    """What the figures were measured on."""
    from ferhpo.store import environment

    flags = _cpu_flags()
    return {
        "cpu": _cpu_name(),
        "cores": usable_cores(),
        "cpu_bf16": sorted(flags & {"avx512_bf16", "amx_bf16", "amx_tile"}),
        "accelerator": accelerator(),
        **environment(),
    }


# --------------------------------------------------------------------------- memory


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    """Peak resident memory since the last reset (Linux), else since the process began."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def _reset_device_peak() -> None:
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
    elif backend == "tensorflow":
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            tf.config.experimental.reset_memory_stats("GPU:0")


def _device_peak_mb() -> float | None:
    """Peak accelerator memory in use (since the last reset where the backend has one)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        stats = jax.devices()[0].memory_stats()  # None on the CPU
        return stats["peak_bytes_in_use"] / 2**20 if stats and "peak_bytes_in_use" in stats else None
    if backend == "torch":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        return None
    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20


# --------------------------------------------------------------------------- the two paths


def reference_batches(
    images: np.ndarray, labels: np.ndarray, *, batch_size: int, shift: float = 0.1, seed: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The straightforward host pipeline: endless shuffled batches, augmented in Python.

    Each image is scaled to [0, 1] in float32, shifted by up to ``shift`` of its height
    and width with bilinear interpolation and nearest fill (``scipy.ndimage.shift``, as
    ``ImageDataGenerator(width_shift_range, height_shift_range)`` did), and mirrored
    with probability 1/2, one image at a time.
    """
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    height, width = images.shape[1:3]
    while True:
        order = rng.permutation(len(images))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            out = np.empty((len(idx), height, width, 1), dtype="float32")
            for k, i in enumerate(idx):
                image = images[i, ..., 0].astype("float32") / 255.0
                dy, dx = rng.uniform(-shift, shift, size=2) * (height, width)
                image = ndimage.shift(image, (dy, dx), order=1, mode="nearest")
                if rng.random() < 0.5:
                    image = image[:, ::-1]
                out[k, ..., 0] = image
            yield out, labels[idx]


def reference_model(model_config: ModelConfig, train: TrainConfig) -> keras.Model:
    """The same architecture in float32, compiled as a plain script would: defaults only."""
    keras.utils.set_random_seed(train.seed)
    with dtype_policy("float32"):
        model = build_model(model_config)
    model.compile(
        optimizer=make_optimizer(train),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=train.label_smoothing),
        metrics=["accuracy"],
    )
    return model


class _StepClock(keras.callbacks.Callback):
    """The time at which each training step finished (waiting for asynchronous backends)."""

    def __init__(self) -> None:
        super().__init__()
        self.ends: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        if logs and "loss" in logs:
            keras.ops.convert_to_numpy(logs["loss"])
        self.ends.append(time.perf_counter())


def _steady_rate(clock: _StepClock, batch: int, warmup: int) -> float:
    """Images per second over the steps after the warm-up ones."""
    ends = clock.ends
    assert len(ends) > warmup, (len(ends), warmup)
    timed = len(ends) - warmup
    return batch * timed / (ends[-1] - ends[warmup - 1])


@dataclass
class _Path:
    """One pipeline's timing loop and what it measured."""

    train_block: Callable[[], float]
    inference_block: Callable[[], float]
    train: list[float] = field(default_factory=list)
    inference: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    device: list[float] = field(default_factory=list)

    def measure(self, block: Callable[[], float], into: list[float]) -> None:
        reset = _reset_peak_rss()
        _reset_device_peak()
        into.append(block())
        if reset or not self.rss:
            self.rss.append(_peak_rss_mb())
        device = _device_peak_mb()
        if device is not None:
            self.device.append(device)

    def summary(self, flops: int) -> dict:
        train = statistics.median(self.train)
        return {
            "train_images_per_second": train,
            "epoch_seconds": EPOCH_IMAGES / train,
            "inference_images_per_second": statistics.median(self.inference),
            "train_gflops_per_second": 3 * flops * train / 1e9,
            "peak_rss_mb": max(self.rss),
            "peak_device_mb": max(self.device) if self.device else None,
            "train_repeats": self.train,
            "inference_repeats": self.inference,
        }


def _ferhpo_path(model, images, labels, batch: int, steps: int, warmup: int) -> _Path:
    n = batch * (warmup + steps)

    def train_block() -> float:
        clock = _StepClock()
        # As training.fit feeds it: uint8 arrays, shuffled and prefetched by Keras.
        model.fit(images[:n], labels[:n], batch_size=batch, epochs=1, shuffle=True, callbacks=[clock], verbose=0)
        return _steady_rate(clock, batch, warmup)

    def inference_block() -> float:
        start = time.perf_counter()
        model.predict(inference_images, batch_size=batch, verbose=0)
        return len(inference_images) / (time.perf_counter() - start)

    inference_images = _inference_images(images, batch)
    return _Path(train_block, inference_block)


def _inference_images(images: np.ndarray, batch: int) -> np.ndarray:
    """At least 512 images (whole batches), so that one predict call is long enough to time."""
    n = max(len(images), batch * -(-512 // batch))
    return np.resize(images, (n, *images.shape[1:]))


def _reference_path(model, images, labels, train: TrainConfig, batch: int, steps: int, warmup: int) -> _Path:
    feed = reference_batches(images, labels, batch_size=batch, shift=train.shift, seed=train.seed)

    def train_block() -> float:
        clock = _StepClock()
        # shuffle=False only silences Keras' note that a generator is not shuffled by fit.
        model.fit(feed, steps_per_epoch=warmup + steps, epochs=1, shuffle=False, callbacks=[clock], verbose=0)
        return _steady_rate(clock, batch, warmup)

    def inference_block() -> float:
        start = time.perf_counter()
        model.predict(inference_images.astype("float32") / 255.0, batch_size=batch, verbose=0)
        return len(inference_images) / (time.perf_counter() - start)

    inference_images = _inference_images(images, batch)
    return _Path(train_block, inference_block)


# --------------------------------------------------------------------------- the benchmark


def bench_model(
    name: str,
    model_config: ModelConfig,
    train: TrainConfig,
    *,
    batch: int | None = None,
    steps: int = 20,
    warmup: int = 2,
    repeats: int = 3,
    precision: str = "float32",
    reference: bool = False,
    images: np.ndarray | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> dict:
    """Time one model's training and inference (and the reference pipeline's); see module doc.

    ``images`` (N, H, W) uint8 are the images to train on (random ones when None;
    speed does not depend on pixel values). Returns a dict with `RESULT_FIELDS`.
    """
    if steps < 1 or warmup < 1 or repeats < 1:
        raise ValueError(f"steps, warmup and repeats must be >= 1, but got {steps}, {warmup}, {repeats}")
    batch = batch or train.batch_size
    train = replace(train, batch_size=batch, precision=precision)
    n = batch * (warmup + steps)
    rng = np.random.default_rng(train.seed)
    if images is None:
        images = rng.integers(0, 256, size=(n, *model_config.input_shape[:2]), dtype=np.uint8)
    images = np.resize(images, (n, *images.shape[1:]))[..., None]  # repeats a small set to fill the blocks
    labels = np.eye(7, dtype="float32")[rng.integers(0, 7, size=n)]

    core, model = compiled_model(model_config, train)
    flops = forward_flops(core)
    paths = {"ferhpo": _ferhpo_path(model, images, labels, batch, steps, warmup)}
    if reference:
        paths["reference"] = _reference_path(reference_model(model_config, train), images, labels, train, batch, steps, warmup)

    for label, path in paths.items():  # compile and warm every path once, untimed
        progress(f"{name}: warming up the {label} path (graph building)")
        path.train_block()
        path.inference_block()
    for r in range(repeats):  # alternate, so drifts of the machine hit both paths alike
        for label, path in paths.items():
            progress(f"{name}: repeat {r + 1}/{repeats}, {label}")
            path.measure(path.train_block, path.train)
            path.measure(path.inference_block, path.inference)

    result = {
        "name": name,
        "params": int(core.count_params()),
        "forward_gflops_per_image": flops / 1e9,
        "batch": batch,
        "precision": precision,
        "repeats": repeats,
        "steps": steps,
        "warmup_steps": warmup,
        **paths["ferhpo"].summary(flops),
        "reference": None,
        "ratio": None,
        "inference_ratio": None,
    }
    if reference:
        ref = paths["reference"].summary(flops)
        result["reference"] = ref
        result["ratio"] = result["train_images_per_second"] / ref["train_images_per_second"]
        result["inference_ratio"] = result["inference_images_per_second"] / ref["inference_images_per_second"]
    keras.backend.clear_session()
    return result


def ceilings(precision: str) -> dict[str, float]:
    """Measured matrix-multiply GFLOP/s in float32 and, for mixed precision, its compute dtype."""
    out = {"float32": matmul_gflops("float32")}
    if precision != "float32":
        compute = keras.mixed_precision.Policy(precision).compute_dtype
        out[compute] = matmul_gflops(compute)
    return out


def gpu_capability() -> tuple[int, ...] | None:
    """The CUDA compute capability of the backend's GPU, or None (no GPU, or not known)."""
    try:
        backend = keras.backend.backend()
        if backend == "torch":
            import torch

            return tuple(torch.cuda.get_device_capability(0)) if torch.cuda.is_available() else None
        if backend == "jax":
            import jax

            text = getattr(jax.devices()[0], "compute_capability", None)
            return tuple(int(v) for v in str(text).split(".")[:2]) if text else None
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability") if gpus else None
        return tuple(capability) if capability else None
    except (RuntimeError, ValueError, IndexError):
        return None


def auto_precision() -> str:
    """The fastest precision with hardware behind it: mixed_bfloat16 on a CPU with bfloat16
    matrix units and on accelerators that have them (NVIDIA from compute capability 8.0,
    TPUs), mixed_float16 on older NVIDIA tensor-core GPUs (7.x), float32 otherwise."""
    if accelerator() is None:
        return "mixed_bfloat16" if cpu_has_bf16() else "float32"
    capability = gpu_capability()
    if capability is None or capability >= (8, 0):
        return "mixed_bfloat16"
    return "mixed_float16" if capability >= (7, 0) else "float32"


def time_loading(path, cache_dir=None, *, repeats: int = 3) -> dict:
    """Seconds to load the full dataset cold (decode every file, no cache) and warm (from
    the cache, which this leaves in place; median of ``repeats``)."""
    from ferhpo.data import load_fer2013

    start = time.perf_counter()
    cold = load_fer2013(path, cache_dir, use_cache=False)
    cold_seconds = time.perf_counter() - start
    load_fer2013(path, cache_dir)  # makes sure the cache exists
    warm = []
    for _ in range(repeats):
        start = time.perf_counter()
        data = load_fer2013(path, cache_dir)
        warm.append(time.perf_counter() - start)
    warm_seconds = statistics.median(warm)
    loading = {
        "images": int(len(cold.labels)),
        "cold_seconds": cold_seconds,
        "warm_seconds": warm_seconds,
        "warm_repeats": warm,
        "speedup": cold_seconds / warm_seconds,
        "cache": data.info.cache_path,
    }
    return loading


def table(report: dict) -> list[str]:
    """The human-readable form of a `ferhpo bench` report."""
    m = report["machine"]
    lines = [
        f"machine    {m['cpu']}, {m['cores']} cores"
        + (f" ({m['threads']} compute threads)" if m.get("threads") else "")
        + (f", bf16: {'/'.join(m['cpu_bf16'])}" if m["cpu_bf16"] else "")
        + (f"; {m['accelerator']}" if m["accelerator"] else ""),
        f"software   Keras {m.get('keras')}, backend {m.get('backend')} {m.get(m.get('backend'), '')}".rstrip()
        + f", Python {m['python']}",
        "ceiling    matmul " + ", ".join(f"{dtype} {g:,.0f} GFLOP/s" for dtype, g in report["matmul_gflops"].items()),
    ]
    loading = report.get("data_loading")
    if loading:
        lines.append(
            f"data       {loading['images']:,} images: cold decode {loading['cold_seconds']:.2f} s, "
            f"warm cache {loading['warm_seconds']:.3f} s ({loading['speedup']:.1f}x)"
        )
    lines.append("")
    header = (
        f"{'model':<16}{'params':>11}{'GFLOP/img':>10}{'batch':>6}  {'path':<10}{'precision':<15}"
        f"{'train img/s':>12}{'epoch s':>9}{'infer img/s':>12}{'GFLOP/s':>9}{'peak RSS MB':>12}{'device MB':>10}"
    )
    lines.append(header)
    for r in report["models"]:
        rows = [("ferhpo", r["precision"], r)]
        if r["reference"]:
            rows.append(("reference", "float32", r["reference"]))
        for k, (path, precision, p) in enumerate(rows):
            head = (
                f"{r['name']:<16}{r['params']:>11,}{r['forward_gflops_per_image']:>10.3f}{r['batch']:>6}" if k == 0 else " " * 43
            )
            device = f"{p['peak_device_mb']:,.0f}" if p["peak_device_mb"] is not None else "-"
            lines.append(
                f"{head}  {path:<10}{precision:<15}{p['train_images_per_second']:>12.1f}{p['epoch_seconds']:>9,.0f}"
                f"{p['inference_images_per_second']:>12.1f}{p['train_gflops_per_second']:>9.1f}"
                f"{p['peak_rss_mb']:>12,.0f}{device:>10}"
            )
        if r["ratio"] is not None:
            lines.append(" " * 45 + f"ratio ferhpo/reference: training {r['ratio']:.2f}x, inference {r['inference_ratio']:.2f}x")
    lines.append("")
    lines.append(
        f"medians over repeats, warm-up steps excluded; epoch s: {EPOCH_IMAGES:,} training images at that rate; "
        "GFLOP/s: a training step counted as 3 forward passes of convolution and dense multiply-adds x 2"
    )
    return lines
