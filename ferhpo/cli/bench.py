"""`ferhpo bench`: measure training and inference throughput."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from ferhpo.cli.common import (
    PROG,
    Command,
    UsageError,
    import_keras,
    positive_int,
)


def _bench_arguments(p: argparse.ArgumentParser) -> None:
    from ferhpo.config import PRECISIONS

    p.add_argument("--models", nargs="+", metavar="NAME", help="presets to time (default: all five)")
    p.add_argument("--presets", metavar="FILE", help="preset table to read (default: search_spaces/baseline.toml)")
    p.add_argument("--batch", type=positive_int, help="batch size (default: each preset's)")
    p.add_argument("--steps", type=positive_int, default=20, help="timed training steps per repeat (default: 20)")
    p.add_argument("--warmup", type=positive_int, default=2, help="untimed steps at the start of every repeat (default: 2)")
    p.add_argument("--repeats", type=positive_int, default=3, help="repeats per path; medians are reported (default: 3)")
    p.add_argument(
        "--backend",
        choices=["tensorflow", "jax", "torch"],
        help="Keras backend (default: $KERAS_BACKEND, else tensorflow); set before Keras loads",
    )
    p.add_argument(
        "--precision",
        choices=["auto", *PRECISIONS],
        default="auto",
        help="ferhpo's compute precision (default: auto, mixed_bfloat16 on accelerators and on CPUs with "
        "bfloat16 matrix units, AVX512-BF16 or AMX, else float32); the reference pipeline is always float32",
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        metavar="N",
        help="compute threads on the CPU (default: the backend's, every core); e.g. run two "
        "'--threads 1' benches side by side to see what two search workers get",
    )
    p.add_argument(
        "--reference", action="store_true", help="also time the straightforward pipeline, alternating, and print the ratio"
    )
    p.add_argument(
        "--data", metavar="PATH", help="also time loading this FER2013 (cold decode and warm cache) and train on its images"
    )
    p.add_argument("--cache-dir", metavar="DIR", help="cache folder for --data (default: $FERHPO_CACHE, else the user cache dir)")
    p.add_argument("--json", action="store_true", help="print JSON on stdout (progress still goes to stderr)")


def _bench_run(args: argparse.Namespace) -> int:
    from ferhpo.presets import get_preset, load_presets

    names = list(dict.fromkeys(args.models or load_presets(args.presets)))
    presets = [get_preset(name, path=args.presets) for name in names]  # unknown names fail before Keras loads
    if args.data:
        from ferhpo.data import detect_format, resolve_data_path

        detect_format(resolve_data_path(args.data))  # a missing dataset fails before Keras loads too
    if args.backend:
        loaded = sys.modules.get("keras")
        if loaded is not None and loaded.backend.backend() != args.backend:
            raise UsageError(
                f"--backend {args.backend}: Keras is already loaded with {loaded.backend.backend()!r} in this process"
            )
        os.environ["KERAS_BACKEND"] = args.backend
    if args.threads:
        from ferhpo.threads import thread_env

        if "keras" in sys.modules:
            raise UsageError("--threads must be set before Keras loads; it is already loaded in this process")
        os.environ.update(thread_env(args.threads))
    import_keras()
    from ferhpo import bench

    if os.environ.get(_BENCH_CHILD):
        return _bench_one(args, presets[0])
    load_timing = None
    if args.data:
        print("timing the data load (cold decode, then warm cache)", file=sys.stderr, flush=True)
        load_timing = bench.time_loading(args.data, args.cache_dir)
    precision = bench.auto_precision() if args.precision == "auto" else args.precision
    machine = {**bench.machine(), "threads": args.threads}
    matmul_gflops = bench.ceilings(precision)
    model_results = []
    for preset in presets:
        # Each model in a fresh process: its memory figure is its own, not what the
        # models before it left allocated, and no state carries over between models.
        child_command = [sys.executable, "-m", "ferhpo", "bench", "--models", preset.name, "--precision", precision, "--json"]
        for option in ("presets", "batch", "steps", "warmup", "repeats", "backend", "threads", "data", "cache_dir"):
            value = getattr(args, option)
            if value is not None:
                child_command += [f"--{option.replace('_', '-')}", str(value)]
        if args.reference:
            child_command.append("--reference")
        child = subprocess.run(child_command, stdout=subprocess.PIPE, env={**os.environ, _BENCH_CHILD: "1"}, text=True)
        if child.returncode != 0:  # the child printed its error on the shared stderr
            return child.returncode
        model_results.append(json.loads(child.stdout))
    report = {
        "machine": machine,
        "precision": precision,
        "matmul_gflops": matmul_gflops,
        "data_loading": load_timing,
        "models": model_results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(bench.table(report)))
    return 0


# Set for the process `ferhpo bench` starts per model: bench that one model, print its JSON.
_BENCH_CHILD = "FERHPO_BENCH_CHILD"


def _bench_one(args: argparse.Namespace, preset) -> int:
    from ferhpo import bench

    images = None
    if args.data:
        from ferhpo.data import load_fer2013

        data = load_fer2013(args.data, args.cache_dir)  # the parent made the cache: a fast load
        images = data.images[~data.is_test]
    try:
        result = bench.bench_model(
            preset.name,
            preset.model,
            preset.train,
            batch=args.batch,
            steps=args.steps,
            warmup=args.warmup,
            repeats=args.repeats,
            precision=args.precision,  # the parent resolved auto
            reference=args.reference,
            images=images,
            progress=lambda message: print(message, file=sys.stderr, flush=True),
        )
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted during {preset.name}", file=sys.stderr)
        return 130
    print(json.dumps(result))
    return 0


COMMAND = Command("bench", "measure training and inference throughput", _bench_arguments, _bench_run)
