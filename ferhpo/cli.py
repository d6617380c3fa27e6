"""The `ferhpo` command line: a table of subcommands, one handler each.

This is the only module that prints for the user and picks exit codes:
0 success, 2 bad usage or bad input (one line on stderr), 1 internal error,
130 interrupted. Heavy imports (keras, optuna) happen inside handlers, so
`ferhpo --help` and `ferhpo data summary` stay instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Callable

from ferhpo import __version__
from ferhpo.errors import FerhpoError

PROG = "ferhpo"


class UsageError(FerhpoError):
    """Bad command-line usage (argparse's complaints, made one line)."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing the usage block and exiting."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise UsageError(f"{message} (see '{self.prog} --help')")


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# --------------------------------------------------------------------------- shared options


def _add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        metavar="PATH",
        help="FER2013 as image folders (train/<class>/, test/<class>/) or the Kaggle fer2013.csv; "
        "default: $FERHPO_DATA, else ./data/fer2013",
    )
    g.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="where decoded arrays are cached (outside the data folder); default: $FERHPO_CACHE, "
        "else the user cache dir",
    )
    g.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip corrupt or non-image files (and bad csv rows) and report how many, instead of failing",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _import_keras() -> None:
    """Import keras with the backend's C++ start-up log (CUDA probing, oneDNN notes) hidden.

    TensorFlow 2.20+ writes those lines before its logging can be configured, so they
    are caught on file descriptor 2 and shown only if the import fails.
    """
    if "keras" in sys.modules:
        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    show_log = True  # only when the import fails unexpectedly: the log may say why
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras  # noqa: F401

            show_log = False
        except (ImportError, ValueError) as exc:  # an unknown or uninstalled KERAS_BACKEND
            show_log = False
            backend = os.environ.get("KERAS_BACKEND", "tensorflow")
            raise FerhpoError(
                f"cannot load Keras with backend {backend!r} ({str(exc).strip().splitlines()[-1]}); expected "
                f"KERAS_BACKEND to be tensorflow, jax or torch, installed (pip install -e '.[jax]' or '.[torch]')"
            ) from None
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if show_log:
                captured.seek(0)
                sys.stderr.write(captured.read().decode(errors="replace"))
    # tf.function retracing notes (a new input shape per model and split) are not for users.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def _quiet_optuna() -> None:
    """Optuna logs every study creation at INFO; ferhpo prints its own summaries."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _load(args: argparse.Namespace):
    from ferhpo.data import load_fer2013

    return load_fer2013(args.data, args.cache_dir, skip_bad=args.skip_bad)


# --------------------------------------------------------------------------- data


def _data_arguments(p: argparse.ArgumentParser) -> None:
    from ferhpo.data import PROTOCOLS

    sub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser, required=True)
    s = sub.add_parser(
        "summary",
        help="load FER2013 (through the cache) and print its format, counts, fingerprint and cache",
        description="Load FER2013 through the cache and describe it: source format, images per split "
        "and class, converted and skipped images, the content fingerprint and the cache file.",
    )
    _add_data_options(s)
    s.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    s.add_argument(
        "--protocol",
        choices=list(PROTOCOLS),
        help="also show the split sizes of this protocol: "
        + "; ".join(f"{k}: {v}" for k, v in PROTOCOLS.items()).replace("%", "%%"),
    )
    s.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the protocol's split (default 0)")


def _data_run(args: argparse.Namespace) -> int:
    from ferhpo.data import CLASSES, make_splits, summary

    data = _load(args)
    info = summary(data)
    if args.protocol:
        splits = make_splits(data, args.protocol, args.seed)
        info["protocol"] = {
            "name": splits.protocol,
            "seed": splits.seed,
            "sizes": splits.sizes(),
            "selection_sees": list(splits.selection_sees),
        }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    fmt = {"folder": "image folders", "csv": "Kaggle csv"}[info["format"]]
    cache = info["cache"]
    lines = [
        f"source       {info['path']} ({fmt})",
        f"fingerprint  {info['fingerprint']}",
        f"cache        {cache['path'] or '(disabled)'} "
        f"({'hit' if cache['hit'] else 'miss, written'}; loaded in {cache['load_seconds']:.2f} s)",
        f"converted    {info['converted']} images (not 48x48 grayscale)",
        f"skipped      {info['skipped']} bad files or rows",
        "",
    ]
    counts = info["counts"]
    columns = [c for c in ("train", "test", "public_test", "private_test") if c in counts]
    lines.append(f"{'class':<10}" + "".join(f"{c:>14}" for c in columns))
    for name in CLASSES:
        lines.append(f"{name:<10}" + "".join(f"{counts[c][name]:>14,}" for c in columns))
    lines.append(f"{'total':<10}" + "".join(f"{info['totals'][c]:>14,}" for c in columns))
    if args.protocol:
        p = info["protocol"]
        sizes = ", ".join(f"{k} {v:,}" for k, v in p["sizes"].items())
        lines += ["", f"protocol {p['name']} (seed {p['seed']}): {sizes}"]
        if p["selection_sees"]:
            lines.append(f"  note: validation overlaps {', '.join(p['selection_sees'])}; those are not clean test numbers")
    print("\n".join(lines))
    return 0


# --------------------------------------------------------------------------- baseline


def _baseline_arguments(p: argparse.ArgumentParser) -> None:
    from ferhpo.config import BUDGETS
    from ferhpo.data import PROTOCOLS

    _add_data_options(p)
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these presets (default: all five)")
    p.add_argument(
        "--space",
        metavar="SPACE",
        help="instead of the presets, train a search space's defaults (the reference recipe on the space's "
        "default model), named '<space>-reference': the bar that space's trials are measured against at the "
        "same budget and protocol (default protocol: holdout, as for search)",
    )
    p.add_argument(
        "--budget",
        choices=list(BUDGETS),
        default="full",
        help="how much of the recipe to spend: "
        + "; ".join(f"{b.name}: {b.describe()}" for b in BUDGETS.values())
        + " (default: full, the reference 200-epoch recipe)",
    )
    p.add_argument("--epochs", type=_positive_int, help="override the budget's number of epochs")
    p.add_argument("--train-limit", type=_positive_int, metavar="N", help="train on a seeded subsample of at most N images")
    p.add_argument("--protocol", choices=list(PROTOCOLS), help="override each preset's split protocol")
    p.add_argument("--seed", type=_non_negative_int, help="override the presets' seed (initialisation, augmentation, split)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a field of the selected presets' model or training config, e.g. --set depth=56 "
        "--set batch_size=16 (values in TOML syntax; repeatable)",
    )
    p.add_argument(
        "--precision",
        choices=["float32", "mixed_bfloat16", "mixed_float16"],
        help="compute precision (default: the presets', float32 as in the study); mixed_bfloat16 is faster "
        "on GPUs and on CPUs with bfloat16 units (see 'ferhpo bench'); the same as --set precision=...",
    )
    p.add_argument("--presets", metavar="FILE", help="preset table to read (default: search_spaces/baseline.toml)")
    p.add_argument("--study", default="baseline", help="study name (default: baseline)")
    p.add_argument("--storage", metavar="URL", help="Optuna storage URL (default: $FERHPO_STORAGE, else sqlite:///studies/ferhpo.db)")
    p.add_argument("--force", action="store_true", help="retrain configs already finished at the same budget")
    p.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="write each run's curves for TensorBoard into DIR/<run and key hyperparameters>/ "
        "(then: tensorboard --logdir DIR)",
    )
    p.add_argument("--list", action="store_true", help="list the presets (with parameter counts of the built models) and exit")
    p.add_argument("--json", action="store_true", help="print JSON on stdout (progress still goes to stderr)")


def _parse_overrides(items: list[str]) -> dict:
    import tomllib

    overrides = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects FIELD=VALUE, got {item!r}")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text  # a bare word such as adam or reference-step
        overrides[key.strip()] = value
    return overrides


@dataclass(frozen=True)
class _Planned:
    """A configuration `ferhpo baseline` trains, under the name its results carry."""

    name: str
    model: object
    train: object
    protocol: str
    reported_test_accuracy: float | None  # the study's number, for an unmodified preset only


def _select_runs(args: argparse.Namespace) -> list[_Planned]:
    """The presets (or the space's defaults) with --set/--seed/--precision applied. A
    configuration changed by --set is named after its changes and never carries the
    preset's reported accuracy: it is not the model the study reported."""
    from ferhpo.config import get_preset, load_presets, override, override_name

    changes = _parse_overrides(args.set)
    overrides = dict(changes)
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.precision is not None:
        overrides["precision"] = args.precision
    if args.space is not None:
        from ferhpo.spaces import load_space

        if args.only:
            raise UsageError("--space and --only exclude each other: train a space's defaults or named presets")
        space = load_space(args.space)
        name = f"{space.name}-reference"
        model, train = override(*space.configs(space.defaults()), overrides, owner=f"space {space.name!r}")
        return [_Planned(override_name(name, changes), model, train, args.protocol or "holdout", None)]
    names = args.only or list(load_presets(args.presets))
    planned = []
    for name in dict.fromkeys(names):
        preset = get_preset(name, path=args.presets, **overrides)
        renamed = override_name(preset.name, changes)
        reported = preset.reported_test_accuracy if renamed == preset.name else None
        planned.append(_Planned(renamed, preset.model, preset.train, args.protocol or preset.protocol, reported))
    return planned


def _baseline_list(args: argparse.Namespace) -> int:
    _import_keras()
    import keras

    from ferhpo.config import load_presets
    from ferhpo.models import build_model

    rows = []
    for preset in load_presets(args.presets).values():
        keras.backend.clear_session(free_memory=False)
        rows.append(
            {
                "name": preset.name,
                "family": preset.model.family,
                "depth": preset.model.depth,
                "params": int(build_model(preset.model).count_params()),
                "batch_size": preset.train.batch_size,
                "optimizer": preset.train.optimizer,
                "learning_rate": preset.train.learning_rate,
                "epochs": preset.train.epochs,
                "protocol": preset.protocol,
                "reported_test_accuracy": preset.reported_test_accuracy,
                "reported_params": preset.reported_params,
                "description": preset.description,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<15}{'depth':>6}{'params':>12}{'batch':>7}  {'optimizer':<10}{'protocol':<15}{'reported':>9}")
    for r in rows:
        print(
            f"{r['name']:<15}{r['depth']:>6}{r['params']:>12,}{r['batch_size']:>7}  {r['optimizer']:<10}"
            f"{r['protocol']:<15}{r['reported_test_accuracy']:>9.4f}"
        )
    return 0


def _baseline_run(args: argparse.Namespace) -> int:
    if args.list:
        return _baseline_list(args)
    from ferhpo import runs, store
    from ferhpo.config import get_budget
    from ferhpo.phases import PhaseClock

    # The first run's clock includes the command's start-up and data load, which the
    # later runs of the same command share.
    phases = PhaseClock()
    presets = _select_runs(args)
    tensorboard = None
    if args.tensorboard is not None:
        from ferhpo.tensorboard_logs import check_folder

        tensorboard = check_folder(args.tensorboard)  # before any work
    budget = get_budget(args.budget, epochs=args.epochs, train_limit=args.train_limit)
    with phases.phase("data"):
        data = _load(args)
    _import_keras()
    _quiet_optuna()
    study = store.open_study(args.study, args.storage)
    out = sys.stderr if args.json else sys.stdout

    plan = []
    for preset in presets:
        train = runs.budgeted(preset.train, budget)
        key = runs.run_key(preset.name, preset.model, train, budget, preset.protocol, data.info.fingerprint)
        done = None if args.force else runs.find_finished(study, key)
        plan.append((preset, train, preset.protocol, done))

    results, finished = [], []
    todo = [p for p in plan if p[3] is None]
    progress = _Progress(total_epochs=sum(p[1].epochs for p in todo), runs=len(todo), out=out)
    phases.mark_startup()
    for preset, train, protocol, done in plan:
        if done is not None:
            print(f"{preset.name}: already finished at budget {budget.name} ({done.run_id}); skipped (--force retrains)", file=out)
            results.append(_run_summary(done, skipped=True))
            continue
        phases = phases if not finished else PhaseClock(time.time())
        try:
            record = runs.train_and_record(
                study,
                name=preset.name,
                kind="baseline",
                model=preset.model,
                train=train,
                data=data,
                protocol=protocol,
                budget=budget,
                callbacks=[progress.callback(preset.name, train.epochs), *_tensorboard(tensorboard, preset.name, budget)],
                reported_test_accuracy=preset.reported_test_accuracy,
                phases=phases,
            )
        except KeyboardInterrupt:
            progress.close()
            kept = ", ".join(finished) or "none"
            print(
                f"{PROG}: interrupted during {preset.name}; its partial run was discarded; finished and kept in "
                f"study '{study.study_name}': {kept}; rerun the same command to continue",
                file=sys.stderr,
            )
            return 130
        finished.append(preset.name)
        results.append(_run_summary(record, skipped=False))
        progress.write(_summary_line(record))
    progress.close()
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


def _tensorboard(folder: str | None, name: str, budget) -> list:
    """A baseline run's TensorBoard callback (none without --tensorboard)."""
    if folder is None:
        return []
    from ferhpo.tensorboard_logs import callback

    return [callback(folder, f"{name}-{budget.name}")]


def _run_summary(record, *, skipped: bool) -> dict:
    from ferhpo.store import STUDIES_DIR

    ev = record.evaluation
    return {
        "name": record.run,
        "run_id": record.run_id,
        "skipped": skipped,
        "status": record.status,
        "budget": record.budget["name"],
        "epochs": record.epochs_run,
        "protocol": record.protocol,
        "best_val_accuracy": record.best_val_accuracy,
        "test_accuracy": ev.get("test", {}).get("accuracy"),
        "test_public_accuracy": ev.get("test_public", {}).get("accuracy"),
        "test_private_accuracy": ev.get("test_private", {}).get("accuracy"),
        "test_images": ev.get("test", {}).get("n"),
        "macro_f1": ev.get("test", {}).get("macro_f1"),
        "reported_test_accuracy": record.reported_test_accuracy,
        "params": record.params,
        "wall_seconds": record.wall_seconds,
        "epoch_seconds": record.history.get("seconds", []),
        "train_images": record.train_images,
        "images_per_second": record.images_per_second,
        "record": str(STUDIES_DIR / record.study / record.artifacts.get("record", "")),
    }


def _summary_line(record) -> str:
    s = _run_summary(record, skipped=False)
    halves = ""
    if s["test_public_accuracy"] is not None and s["test_private_accuracy"] is not None:
        halves = f" (public {s['test_public_accuracy']:.4f}, private {s['test_private_accuracy']:.4f})"
    reported = f"  reported {s['reported_test_accuracy']:.4f}" if s["reported_test_accuracy"] is not None else ""
    return (
        f"{s['name']}: {s['budget']} budget, {s['epochs']} epoch(s), best val {s['best_val_accuracy']:.4f}, "
        f"test {s['test_accuracy']:.4f} on {s['test_images']:,} images{halves}{reported}, "
        f"{s['params']:,} params, {s['wall_seconds']:.1f} s, {s['images_per_second']:.1f} img/s"
    )


class _Progress:
    """Progress of `ferhpo baseline` on stderr: all epochs of the command, and this epoch.

    On a terminal, two bars (tqdm); otherwise one line per epoch with its measured time,
    the run's and the command's time left, and within a long epoch a line at most every
    `progress.UPDATE_SECONDS`. Once the first run has timed some batches, one line
    estimates the run and the command on this machine.
    """

    #: Batches after the first (which traces the graphs) timed before the estimate is given.
    ESTIMATE_BATCHES = 10

    def __init__(self, total_epochs: int, runs: int, out=sys.stdout, err=None):
        from tqdm import tqdm

        self.out = out  # where summary lines go: stdout, or stderr when stdout carries JSON
        self.err = err if err is not None else sys.stderr
        self.interactive = self.err.isatty()
        self.runs, self.index = runs, 0
        self.total_epochs, self.done_epochs = total_epochs, 0
        self.estimated = False
        self.overall = tqdm(total=total_epochs, desc="all runs", unit="epoch", position=0, disable=not self.interactive)

    def write(self, line: str) -> None:
        if self.interactive:
            self.overall.write(line, file=self.out)
        else:
            print(line, file=self.out, flush=True)

    def note(self, line: str) -> None:
        if self.interactive:
            self.overall.write(line, file=self.err)
        else:
            print(line, file=self.err, flush=True)

    def close(self) -> None:
        self.overall.close()

    def left(self, run) -> tuple[float | None, float | None]:
        """Seconds left in this run and in the whole command (the other runs at this run's rate)."""
        per_epoch = run.seconds_per_epoch()
        if per_epoch is None:
            return None, None
        inside = run.batch_fraction() or 0.0
        return run.seconds_left(), max(0.0, self.total_epochs - self.done_epochs - inside) * per_epoch

    def callback(self, name: str, epochs: int):
        import keras
        from tqdm import tqdm

        from ferhpo.engines.trial import _has_accelerator
        from ferhpo.progress import UPDATE_SECONDS, RunProgress, clock

        self.index += 1
        owner, label = self, f"[{self.index}/{self.runs}] {name}"
        run = RunProgress(epochs=epochs)

        class Callback(keras.callbacks.Callback):
            bar = None
            printed = 0.0

            def on_epoch_begin(self, epoch, logs=None):
                run.begin_epoch()
                self.printed = time.time()
                if owner.interactive:
                    self.bar = tqdm(
                        total=self.params.get("steps"), desc=f"{label} epoch {epoch + 1}/{epochs}",
                        unit="batch", position=1, leave=False,
                    )

            def on_train_batch_end(self, batch, logs=None):
                run.end_batch(batch + 1, self.params.get("steps"))
                if self.bar is not None:
                    self.bar.update(1)
                if run.epoch == 0 and batch >= owner.ESTIMATE_BATCHES:
                    self.estimate()
                if not owner.interactive and time.time() - self.printed >= UPDATE_SECONDS:
                    self.printed = time.time()
                    this, everything = owner.left(run)
                    print(
                        f"{label} epoch {run.epoch + 1}/{epochs}: batch {run.batch}/{run.batches}, "
                        f"left ~{clock(this)} (all runs ~{clock(everything)})",
                        file=owner.err, flush=True,
                    )

            def estimate(self):
                if not owner.estimated and run.seconds_per_epoch() is not None:
                    owner.estimated = True
                    for line in _estimate_lines(
                        name, run.seconds_per_epoch(), epochs, owner.runs, 1, _has_accelerator(), what="run(s)",
                        total_epochs=owner.total_epochs,
                    ):
                        owner.note(line)

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                run.end_epoch(logs.get("val_accuracy"))
                self.estimate()  # epochs of fewer batches than ESTIMATE_BATCHES: from the whole epoch
                owner.done_epochs += 1
                if self.bar is not None:
                    self.bar.close()
                    self.bar = None
                owner.overall.update(1)
                if not owner.interactive:
                    metrics = "  ".join(
                        f"{k} {logs[k]:.4f}" for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in logs
                    )
                    this, everything = owner.left(run)
                    print(
                        f"{label} epoch {epoch + 1}/{epochs}  {metrics}  {run.epoch_seconds[-1]:.1f} s, "
                        f"left ~{clock(this)} (all runs ~{clock(everything)})",
                        file=owner.err, flush=True,
                    )

        return Callback()


def _search_arguments(p: argparse.ArgumentParser) -> None:
    from ferhpo.config import BUDGETS

    _add_data_options(p)
    p.add_argument(
        "--space",
        required=True,
        metavar="densenet|resnet|FILE",
        help="a shipped search space (search_spaces/<name>.toml) or your own TOML file",
    )
    p.add_argument(
        "--engine",
        choices=["optuna", "keras-tuner"],
        default="optuna",
        help="optuna (default; several workers, any storage) or keras-tuner (one worker)",
    )
    p.add_argument(
        "--sampler",
        choices=["tpe", "random", "grid", "cmaes", "gp", "nsga2"],
        help="Optuna sampler (default tpe; nsga2 for two objectives); with keras-tuner: random "
        "(RandomSearch, the default) or gp (BayesianOptimization)",
    )
    p.add_argument(
        "--pruner",
        choices=["hyperband", "asha", "median", "none"],
        help="per-epoch pruner (default hyperband; none for two objectives); with keras-tuner, "
        "hyperband selects the Hyperband tuner",
    )
    p.add_argument(
        "--objective",
        default="val_accuracy",
        metavar="val_accuracy|macro_f1[,params]",
        help="validation objective to maximise (never test data); add ',params' to search the "
        "accuracy / model-size trade-off with NSGA-II (default: val_accuracy)",
    )
    p.add_argument("--trials", type=_positive_int, default=20, help="trials the study should reach (default 20); "
                   "a rerun continues up to this number")
    p.add_argument("--timeout", type=_positive_int, metavar="SECONDS", help="stop starting new trials after this long")
    p.add_argument("--study", help="study name (default: <space>-<engine>-<budget>); rerunning the same command resumes it")
    p.add_argument("--storage", metavar="URL", help="Optuna storage URL, e.g. postgresql://user@host/db for several "
                   "machines (default: $FERHPO_STORAGE, else sqlite:///studies/ferhpo.db)")
    p.add_argument(
        "--budget",
        choices=list(BUDGETS),
        default="full",
        help="epochs and images per trial: " + "; ".join(f"{b.name}: {b.describe()}" for b in BUDGETS.values())
        + " (default: full; its 200 epochs are Hyperband's maximum resource)",
    )
    p.add_argument("--max-epochs", type=_positive_int, metavar="N", help="override the budget's epochs per trial")
    p.add_argument("--workers", type=_positive_int, default=1, help="worker processes on this machine sharing the study (default 1)")
    p.add_argument("--protocol", choices=["holdout", "canonical"], default="holdout",
                   help="split protocol: validation from Training (holdout, default) or PublicTest (canonical)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the splits, the initialisation and the sampler (default 0)")
    p.add_argument(
        "--precision",
        choices=["float32", "mixed_bfloat16", "mixed_float16"],
        help="compute precision of every trial (default: the space's, float32 unless it fixes one); "
        "mixed_bfloat16 is faster on GPUs and on CPUs with bfloat16 units (see 'ferhpo bench')",
    )
    p.add_argument(
        "--trial-memory",
        type=_positive_float,
        metavar="GB",
        help="cap each trial process's memory (address space) on CPU machines: a model that does not fit fails "
        "as its trial, out of memory, and the study goes on (default: no cap; not for GPU backends)",
    )
    p.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="write each run's curves for TensorBoard into DIR/<run and key hyperparameters>/ "
        "(then: tensorboard --logdir DIR)",
    )


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _resolve_engine_options(args: argparse.Namespace, objectives: tuple[str, ...]) -> tuple[str, str]:
    """Fill in the sampler and pruner defaults; reject combinations that cannot run."""
    multi = len(objectives) > 1
    if args.engine == "keras-tuner":
        if args.workers > 1:
            raise UsageError("--workers > 1 needs --engine optuna (the keras-tuner engine runs one worker)")
        if multi:
            raise UsageError("two objectives (--objective ...,params) need --engine optuna")
        if args.pruner not in (None, "none", "hyperband"):
            raise UsageError(f"--pruner {args.pruner} needs --engine optuna; keras-tuner prunes with --pruner hyperband only")
        if args.pruner == "hyperband":
            if args.sampler is not None:
                raise UsageError("with --engine keras-tuner, --pruner hyperband (the Hyperband tuner) and --sampler exclude each other")
            return "hyperband", "hyperband"
        if args.sampler not in (None, "random", "gp"):
            raise UsageError(f"--sampler {args.sampler} needs --engine optuna; keras-tuner runs --sampler random or gp")
        return args.sampler or "random", "none"
    sampler = args.sampler or ("nsga2" if multi else "tpe")
    pruner = args.pruner or ("none" if multi else "hyperband")
    if multi and pruner != "none":
        raise UsageError(f"--pruner {pruner} cannot prune a two-objective search (Optuna prunes single objectives only); use --pruner none")
    if multi and sampler == "cmaes":
        raise UsageError("--sampler cmaes handles one objective; use nsga2, tpe or random with ',params'")
    return sampler, pruner


def _search_run(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from ferhpo import store
    from ferhpo.config import get_budget
    from ferhpo.engines import SearchSettings, parse_objectives
    from ferhpo.spaces import load_space

    objectives = parse_objectives(args.objective)
    sampler, pruner = _resolve_engine_options(args, objectives)
    tensorboard = None
    if args.tensorboard is not None:
        from ferhpo.tensorboard_logs import check_folder

        tensorboard = check_folder(args.tensorboard)  # before any work
    space = load_space(args.space)
    if sampler == "grid":
        from ferhpo.engines.optuna_engine import grid_of

        grid_of(space)  # too large a grid is refused before any work
    budget = get_budget(args.budget)
    _, default_train = space.configs(space.defaults())
    max_epochs = args.max_epochs or budget.epochs or default_train.epochs
    budget = dataclasses.replace(budget, epochs=max_epochs)
    storage = store.storage_url(args.storage)
    store.heartbeat_seconds()  # a bad $FERHPO_HEARTBEAT fails here, not in a worker
    data = _load(args)
    study_name = args.study or f"{space.name}-{args.engine}-{budget.name}"
    settings = SearchSettings(
        study=study_name,
        storage=storage,
        space_path=str(Path(space.path).resolve()),
        space=space.to_dict(),
        engine=args.engine,
        sampler=sampler,
        pruner=pruner,
        objectives=objectives,
        trials=args.trials,
        timeout=args.timeout,
        budget=dataclasses.asdict(budget),
        max_epochs=max_epochs,
        protocol=args.protocol,
        seed=args.seed,
        workers=args.workers,
        data={
            "path": data.info.path,
            "cache_dir": str(Path(args.cache_dir).resolve()) if args.cache_dir else None,
            "skip_bad": args.skip_bad,
        },
        data_fingerprint=data.info.fingerprint,
        study_dir=str(store.STUDIES_DIR),
        trial_memory_gb=args.trial_memory,
        precision=args.precision,
        tensorboard=tensorboard,
    )
    _quiet_optuna()
    from ferhpo.engines.runner import prepare_study

    study = prepare_study(settings)  # a bad storage or a clashing study fails here, before any output
    live = _LiveLine(objectives[0], args.workers)
    what = "Hyperband tuner" if sampler == "hyperband" and args.engine == "keras-tuner" else f"sampler {sampler}, pruner {pruner}"
    print(
        f"search: study '{study_name}' in {storage}; space {space.name} ({len(space.params)} parameters); "
        f"engine {args.engine} ({what}); objective {','.join(objectives)} on the {args.protocol} validation split; "
        f"{args.trials} trials, {budget.describe()}; {args.workers} worker(s)",
        flush=True,
    )
    if args.engine == "optuna":
        from ferhpo.engines.runner import run_optuna

        outcome = run_optuna(settings, study, live.update)
    else:
        _import_keras()  # KerasTuner loads Keras: keep the backend's start-up log quiet
        from ferhpo.engines.kt_engine import run_keras_tuner

        outcome = run_keras_tuner(settings, study, live.update)
    live.close()
    c = outcome.counts
    kept = f"complete {c['complete']}, pruned {c['pruned']}, failed {c['failed']}"
    if outcome.interrupted:
        print(
            f"{PROG}: interrupted; study '{study_name}' keeps {c['done']} finished trial(s) ({kept}); a trial "
            f"that was running is retried when you rerun the same command",
            file=sys.stderr,
        )
        return 130
    _print_top(study, settings)
    from ferhpo.progress import clock

    print(f"study '{study_name}': {c['done']} trial(s) ({kept}) in {clock(outcome.elapsed)}; "
          f"ferhpo report --study {study_name} ranks them against the baselines")
    return 0


class _LiveLine:
    """The live progress: the study's line, then one line per running trial (its epoch,
    batch, latest value, elapsed time and time left from its own epoch times).

    On a terminal the block is redrawn in place every second; otherwise it is printed
    when a trial starts, ends or finishes an epoch, and within a long epoch at most every
    `progress.UPDATE_SECONDS`. Once the first trial has timed some batches, one line
    estimates a trial and the whole search on this machine (`_estimate_lines`).
    """

    def __init__(self, objective: str, workers: int = 1, out=None, interactive: bool | None = None):
        self.objective = objective
        self.workers = workers
        self.out = out if out is not None else sys.stdout
        self.interactive = self.out.isatty() if interactive is None else interactive
        self.drawn = 0  # lines of the block on screen (terminal)
        self.last_key = None
        self.last_print = 0.0
        self.estimated = False

    def lines(self, p) -> list[str]:
        from ferhpo.progress import bar, clock

        c = p.counts
        best = f"{p.best:.4f}" if p.best is not None else "-"
        line = (
            f"trials {c['done']}/{p.wanted} (complete {c['complete']}, pruned {c['pruned']}, failed {c['failed']}), "
            f"running {c['running']}, best {self.objective} {best}, elapsed {clock(p.elapsed)}"
        )
        status = p.status
        if status is None:
            return [line]
        if status.seconds_left is not None and c["done"] < p.wanted:
            line += f", left ~{clock(status.seconds_left)}"
        out = [line]
        for r in status.running:
            if r.epoch is None:
                where = "starting (process, data, model)"
            else:
                where = f"epoch {r.epoch}/{r.epochs}"
                if r.batches and r.batch:
                    inside = f"{bar(r.batch / r.batches)} " if self.interactive else ""
                    where += f", epoch {r.epoch + 1}: {inside}batch {r.batch}/{r.batches}"
            value = f"{r.value:.4f}" if r.value is not None else "-"
            left = f", left ~{clock(r.seconds_left)}" if r.seconds_left is not None else ""
            stale = ", STALE: no heartbeat, its worker is gone" if r.stale else ""
            out.append(f"  trial {r.number}: {where}, {self.objective} {value}, elapsed {clock(r.elapsed)}{left}{stale}")
        return out

    def update(self, p) -> None:

        notes = self._estimate(p)
        block = self.lines(p)
        running = () if p.status is None else tuple((r.number, r.epoch, r.stale) for r in p.status.running)
        key = (tuple(sorted(p.counts.items())), running)
        now = time.monotonic()
        if self.interactive:
            import shutil

            width = shutil.get_terminal_size((120, 24)).columns - 1
            erase = f"\x1b[{self.drawn}F\x1b[J" if self.drawn else ""
            text = "\n".join([*notes, *(line[:width] for line in block)])
            print(erase + text, file=self.out, flush=True)
            self.drawn = len(block)
            return
        from ferhpo.progress import UPDATE_SECONDS

        if notes or key != self.last_key or (running and now - self.last_print >= UPDATE_SECONDS):
            print("\n".join([*notes, *block]), file=self.out, flush=True)
            self.last_key, self.last_print = key, now

    def _estimate(self, p) -> list[str]:
        """Once: how long a trial and the search take here, from the first timed batches."""
        if self.estimated or p.status is None:
            return []
        timed = [r for r in p.status.running if r.seconds_per_epoch is not None and r.epochs]
        if not timed:
            return []
        self.estimated = True
        r = timed[0]
        return _estimate_lines(
            f"trial {r.number}", r.seconds_per_epoch, r.epochs, p.wanted, self.workers, r.accelerator, what="trial(s)"
        )

    def close(self) -> None:
        self.drawn = 0


def _estimate_lines(name: str, per_epoch: float, epochs: int, runs: int, workers: int, accelerator, *, what: str,
                    total_epochs: int | None = None) -> list[str]:
    """The up-front estimate, from measured time: one run of `epochs` epochs, and `runs`
    runs (`total_epochs` in all, default runs x epochs) shared by `workers`; past a day
    without an accelerator, it says so and names the budget that fits."""
    from ferhpo.progress import DAY, clock

    one = per_epoch * epochs
    total = per_epoch * (total_epochs if total_epochs is not None else epochs * runs) / max(1, workers)
    lines = [
        f"estimate (measured on {name}): ~{clock(per_epoch)} an epoch, ~{clock(one)} for its {epochs} epoch(s); "
        f"{runs} {what}{f' on {workers} workers' if workers > 1 else ''}: up to ~{clock(total)}"
        + (" (pruned trials end sooner)" if what == "trial(s)" else "")
    ]
    if total > DAY and accelerator is False:
        lines.append(
            f"note: that is more than a day, and Keras found no GPU or TPU here; on a CPU, --budget cpu with the "
            f"*-cpu spaces (search_spaces/resnet-cpu.toml, densenet-cpu.toml) fits (minutes an epoch); "
            f"going on as asked"
        )
    return lines


def _print_top(study, settings) -> None:
    from ferhpo.engines.optuna_engine import objective_value
    from ferhpo.engines.runner import pareto_records, top_records

    if settings.multi_objective:
        rows = sorted(pareto_records(study), key=lambda r: r.params)
        study.set_user_attr("ferhpo.pareto", [r.run for r in rows])
        title = f"Pareto front ({settings.objectives[0]} against parameters), smallest first"
    else:
        rows = top_records(study, settings, 5)
        title = f"top {len(rows)} by validation {settings.objectives[0]}"
    if not rows:
        print("no trial completed yet")
        return
    from ferhpo.spaces import load_space

    defaults = load_space(settings.space_path).defaults()
    print(title)
    print(f"{'rank':>4}  {'trial':<10}{settings.objectives[0]:>14}{'test acc':>10}{'params':>12}{'epochs':>8}  "
          "hyperparameters (those not at the space's default)")
    for rank, r in enumerate(rows, 1):
        test = r.test_accuracy
        changed = {k: v for k, v in r.hyperparameters.items() if defaults.get(k, object()) != v}
        hp = ", ".join(f"{k}={_short(v)}" for k, v in changed.items()) or "(all defaults)"
        print(
            f"{rank:>4}  {r.run:<10}{objective_value(r.to_dict(), settings.objectives[0]):>14.4f}"
            f"{(f'{test:.4f}' if test is not None else '-'):>10}{r.params:>12,}{r.epochs_run:>8}  {hp}"
        )


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--study", required=True, help="study to report on (a search, a baseline study, or one still running)")
    p.add_argument("--storage", metavar="URL", help="Optuna storage URL (default: $FERHPO_STORAGE, else sqlite:///studies/ferhpo.db)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: reports/<study>/); an earlier report there is replaced")
    p.add_argument("--format", default="md,html,csv,json", help="comma-separated formats: md, html, csv, json (default: all four)")
    p.add_argument("--top", type=_positive_int, default=10, metavar="K",
                   help="trials tested against the best baseline (bootstrap interval, McNemar; default 10)")
    p.add_argument("--baseline-study", metavar="NAME",
                   help="study holding reproduced baseline runs (default: 'baseline' when it exists)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the bootstrap resampling (default 0)")


def _report_run(args: argparse.Namespace) -> int:
    from ferhpo.report import build_report

    _quiet_optuna()
    result = build_report(
        args.study,
        storage=args.storage,
        out=args.out,
        formats=args.format,
        top=args.top,
        baseline_study=args.baseline_study,
        seed=args.seed,
    )
    for line in result.summary:
        print(line)
    if result.verdicts:
        print(f"{'rank':>4}  {'run':<14}{'test acc':>10}{'diff (pts)':>12}  {'95% interval (pts)':<20}{'McNemar p':>10}  verdict")
        for v in result.verdicts:
            acc = v.get("test_accuracy")
            diff = v.get("diff_points")
            low, high = v.get("ci_low"), v.get("ci_high")
            interval = f"[{low:+.2f}, {high:+.2f}]" if low is not None and high is not None else "-"
            p_value = v.get("p_value")
            print(
                f"{v.get('rank', ''):>4}  {str(v.get('run')):<14}{(f'{acc:.4f}' if acc is not None else '-'):>10}"
                f"{(f'{diff:+.2f}' if diff is not None else '-'):>12}  {interval:<20}"
                f"{(f'{p_value:.3g}' if p_value is not None else '-'):>10}  {v.get('verdict')}"
                + (f" ({v['reason']})" if v.get("verdict") == "n/a" and v.get("reason") else "")
            )
    for figure, why in result.figures_skipped.items():
        print(f"figure {figure} not drawn: {why}")
    note = " (a snapshot: trials are still running)" if result.snapshot else ""
    print(f"report written to {result.out}/ ({len(result.files)} files){note}")
    return 0


def _status_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--study", help="one study: counts, running trials (epoch, last value, heartbeat), best, time left "
                   "(default: every study in the storage)")
    p.add_argument("--storage", metavar="URL", help="Optuna storage URL (default: $FERHPO_STORAGE, else sqlite:///studies/ferhpo.db)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def _status_run(args: argparse.Namespace) -> int:
    from ferhpo import status, store

    _quiet_optuna()
    if args.study:
        result = status.study_status(args.study, args.storage)
        print(json.dumps(result.to_dict(), indent=2) if args.json else "\n".join(status.render(result)))
        return 0
    studies = status.all_studies(args.storage)
    if args.json:
        print(json.dumps([s.to_dict() for s in studies], indent=2))
    else:
        print("\n".join(status.render_all(studies, store.storage_url(args.storage))))
    return 0


def _bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", metavar="NAME", help="presets to time (default: all five)")
    p.add_argument("--presets", metavar="FILE", help="preset table to read (default: search_spaces/baseline.toml)")
    p.add_argument("--batch", type=_positive_int, help="batch size (default: each preset's)")
    p.add_argument("--steps", type=_positive_int, default=20, help="timed training steps per repeat (default: 20)")
    p.add_argument("--warmup", type=_positive_int, default=2, help="untimed steps at the start of every repeat (default: 2)")
    p.add_argument("--repeats", type=_positive_int, default=3, help="repeats per path; medians are reported (default: 3)")
    p.add_argument(
        "--backend",
        choices=["tensorflow", "jax", "torch"],
        help="Keras backend (default: $KERAS_BACKEND, else tensorflow); set before Keras loads",
    )
    p.add_argument(
        "--precision",
        choices=["auto", "float32", "mixed_bfloat16", "mixed_float16"],
        default="auto",
        help="ferhpo's compute precision (default: auto, mixed_bfloat16 on accelerators and on CPUs with "
        "bfloat16 matrix units, AVX512-BF16 or AMX, else float32); the reference pipeline is always float32",
    )
    p.add_argument(
        "--threads",
        type=_positive_int,
        metavar="N",
        help="compute threads on the CPU (default: the backend's, every core); e.g. run two "
        "'--threads 1' benches side by side to see what two search workers get",
    )
    p.add_argument("--reference", action="store_true", help="also time the straightforward pipeline, alternating, and print the ratio")
    p.add_argument("--data", metavar="PATH", help="also time loading this FER2013 (cold decode and warm cache) and train on its images")
    p.add_argument("--cache-dir", metavar="DIR", help="cache folder for --data (default: $FERHPO_CACHE, else the user cache dir)")
    p.add_argument("--json", action="store_true", help="print JSON on stdout (progress still goes to stderr)")


def _bench_run(args: argparse.Namespace) -> int:
    from ferhpo.config import get_preset, load_presets

    names = list(dict.fromkeys(args.models or load_presets(args.presets)))
    presets = [get_preset(name, path=args.presets) for name in names]  # unknown names fail before Keras loads
    if args.data:
        from ferhpo.data import detect_format, resolve_data_path

        detect_format(resolve_data_path(args.data))  # a missing dataset fails before Keras loads too
    if args.backend:
        loaded = sys.modules.get("keras")
        if loaded is not None and loaded.backend.backend() != args.backend:
            raise UsageError(f"--backend {args.backend}: Keras is already loaded with {loaded.backend.backend()!r} in this process")
        os.environ["KERAS_BACKEND"] = args.backend
    if args.threads:
        from ferhpo.config import thread_env

        if "keras" in sys.modules:
            raise UsageError("--threads must be set before Keras loads; it is already loaded in this process")
        os.environ.update(thread_env(args.threads))
    _import_keras()
    from ferhpo import bench

    if os.environ.get(_BENCH_CHILD):
        return _bench_one(args, presets[0])
    loading = None
    if args.data:
        print("timing the data load (cold decode, then warm cache)", file=sys.stderr, flush=True)
        loading = bench.time_loading(args.data, args.cache_dir)
    precision = bench.auto_precision() if args.precision == "auto" else args.precision
    info = {**bench.machine(), "threads": args.threads}
    ceilings = bench.ceilings(precision)
    results = []
    for preset in presets:
        # Each model in a fresh process: its memory figure is its own, not what the
        # models before it left allocated, and no state carries over between models.
        command = [sys.executable, "-m", "ferhpo", "bench", "--models", preset.name, "--precision", precision, "--json"]
        for option in ("presets", "batch", "steps", "warmup", "repeats", "backend", "threads", "data", "cache_dir"):
            value = getattr(args, option)
            if value is not None:
                command += [f"--{option.replace('_', '-')}", str(value)]
        if args.reference:
            command.append("--reference")
        child = subprocess.run(command, stdout=subprocess.PIPE, env={**os.environ, _BENCH_CHILD: "1"}, text=True)
        if child.returncode != 0:  # the child printed its error on the shared stderr
            return child.returncode
        results.append(json.loads(child.stdout))
    report = {"machine": info, "precision": precision, "matmul_gflops": ceilings, "data_loading": loading, "models": results}
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


COMMANDS = (
    Command("data", "inspect the FER2013 data: format, counts, fingerprint, cache, splits", _data_arguments, _data_run),
    Command("baseline", "reproduce the five reference configurations", _baseline_arguments, _baseline_run),
    Command("search", "search DenseNet/ResNet architectures and training recipes", _search_arguments, _search_run),
    Command("report", "rank a study's trials against the baselines", _report_arguments, _report_run),
    Command("status", "show studies in a storage: counts, running trials, best, time left", _status_arguments, _status_run),
    Command("bench", "measure training and inference throughput", _bench_arguments, _bench_run),
)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Reproduce a FER2013 DenseNet/ResNet study, then beat it with architecture and "
        "hyperparameter search.",
        epilog="Exit codes: 0 success, 2 bad usage or input, 1 internal error, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser, required=True)
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help[0].upper() + cmd.help[1:] + ".")
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code (never raises for user errors)."""
    # TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notices) is not for users.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        args = build_parser().parse_args(argv)
        return args._run(args)
    except FerhpoError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `ferhpo data summary | head`: the reader left; not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # a bug: keep the traceback for the report
        traceback.print_exc()
        print(f"{PROG}: internal error: {type(exc).__name__}: {exc} (please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
