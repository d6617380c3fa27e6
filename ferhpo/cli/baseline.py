"""`ferhpo baseline`: reproduce the five reference configurations."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ferhpo.cli.common import (
    PROG,
    Command,
    UsageError,
    add_data_options,
    add_storage_argument,
    estimate_lines,
    import_keras,
    load_data,
    non_negative_int,
    positive_int,
    quiet_optuna,
)

if TYPE_CHECKING:  # the command line loads ferhpo.config when a command runs, not at import
    from ferhpo.config import ModelConfig, TrainConfig


def _baseline_arguments(p: argparse.ArgumentParser) -> None:
    from ferhpo.config import BUDGETS, PRECISIONS
    from ferhpo.splits import PROTOCOLS

    add_data_options(p)
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
    p.add_argument("--epochs", type=positive_int, help="override the budget's number of epochs")
    p.add_argument("--train-limit", type=positive_int, metavar="N", help="train on a seeded subsample of at most N images")
    p.add_argument("--protocol", choices=list(PROTOCOLS), help="override each preset's split protocol")
    p.add_argument("--seed", type=non_negative_int, help="override the presets' seed (initialisation, augmentation, split)")
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
        choices=list(PRECISIONS),
        help="compute precision (default: the presets', float32 as in the study); mixed_bfloat16 is faster "
        "on GPUs and on CPUs with bfloat16 units (see 'ferhpo bench'); the same as --set precision=...",
    )
    p.add_argument("--presets", metavar="FILE", help="preset table to read (default: search_spaces/baseline.toml)")
    p.add_argument("--study", default="baseline", help="study name (default: baseline)")
    add_storage_argument(p)
    p.add_argument("--force", action="store_true", help="retrain configs already finished at the same budget")
    p.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="write each run's curves for TensorBoard into DIR/<run and key hyperparameters>/ (then: tensorboard --logdir DIR)",
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
        except (tomllib.TOMLDecodeError, RecursionError):  # RecursionError: [[[[... nested too deeply
            value = text  # a bare word such as adam or reference-step
        overrides[key.strip()] = value
    return overrides


@dataclass(frozen=True)
class _PlannedRun:
    """A configuration `ferhpo baseline` trains, under the name its results carry."""

    name: str
    model: ModelConfig
    train: TrainConfig
    protocol: str
    reported_test_accuracy: float | None  # the study's number, for an unmodified preset only


def _select_runs(args: argparse.Namespace) -> list[_PlannedRun]:
    """The presets (or the space's defaults) with --set/--seed/--precision applied. A
    configuration changed by --set is named after its changes and never carries the
    preset's reported accuracy: it is not the model the study reported."""
    from ferhpo.presets import get_preset, load_presets, override, override_name, override_preset

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
        return [_PlannedRun(override_name(name, changes), model, train, args.protocol or "holdout", None)]
    names = args.only or list(load_presets(args.presets))
    planned = []
    for name in dict.fromkeys(names):
        preset = override_preset(get_preset(name, path=args.presets), overrides)  # any key: no keyword clash
        renamed = override_name(preset.name, changes)
        reported = preset.reported_test_accuracy if renamed == preset.name else None
        planned.append(_PlannedRun(renamed, preset.model, preset.train, args.protocol or preset.protocol, reported))
    return planned


def _baseline_list(args: argparse.Namespace) -> int:
    import_keras()
    import keras

    from ferhpo.models import build_model
    from ferhpo.presets import load_presets

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
    planned_runs = _select_runs(args)
    tensorboard_dir = None
    if args.tensorboard is not None:
        from ferhpo.tensorboard_logs import check_folder

        tensorboard_dir = check_folder(args.tensorboard)  # before any work
    budget = get_budget(args.budget, epochs=args.epochs, train_limit=args.train_limit)
    with phases.phase("data"):
        data = load_data(args)
    import_keras()
    quiet_optuna()
    study = store.open_study(args.study, args.storage)
    out = sys.stderr if args.json else sys.stdout

    plan = []
    for planned in planned_runs:
        train = runs.budgeted(planned.train, budget)
        key = runs.run_key(planned.name, planned.model, train, budget, planned.protocol, data.info.fingerprint)
        finished_record = None if args.force else runs.find_finished(study, key)
        plan.append((planned, train, finished_record))

    results: list[dict] = []
    finished: list[str] = []
    to_train = [train for _, train, finished_record in plan if finished_record is None]
    progress = TrainingProgress(total_epochs=sum(train.epochs for train in to_train), runs=len(to_train), out=out)
    phases.mark_startup()
    for planned, train, finished_record in plan:
        if finished_record is not None:
            print(
                f"{planned.name}: already finished at budget {budget.name} ({finished_record.run_id}); "
                f"skipped (--force retrains)",
                file=out,
            )
            results.append(run_summary(finished_record, skipped=True))
            continue
        phases = phases if not finished else PhaseClock(time.time())
        try:
            record = runs.train_and_record(
                study,
                name=planned.name,
                kind="baseline",
                model=planned.model,
                train=train,
                data=data,
                protocol=planned.protocol,
                budget=budget,
                callbacks=[
                    progress.callback(planned.name, train.epochs),
                    *_tensorboard_callbacks(tensorboard_dir, planned.name, budget),
                ],
                reported_test_accuracy=planned.reported_test_accuracy,
                phases=phases,
            )
        except KeyboardInterrupt:
            progress.close()
            kept = ", ".join(finished) or "none"
            print(
                f"{PROG}: interrupted during {planned.name}; its partial run was discarded; finished and kept in "
                f"study '{study.study_name}': {kept}; rerun the same command to continue",
                file=sys.stderr,
            )
            return 130
        finished.append(planned.name)
        results.append(run_summary(record, skipped=False))
        progress.write(summary_line(record))
    progress.close()
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


def _tensorboard_callbacks(folder: str | None, name: str, budget) -> list:
    """A baseline run's TensorBoard callback (none without --tensorboard)."""
    if folder is None:
        return []
    from ferhpo.tensorboard_logs import callback

    return [callback(folder, f"{name}-{budget.name}")]


def run_summary(record, *, skipped: bool) -> dict:
    """A finished run as `baseline --json` and `confirm --json` print it."""
    from ferhpo.store import STUDIES_DIR

    evaluation = record.evaluation
    return {
        "name": record.run,
        "run_id": record.run_id,
        "skipped": skipped,
        "status": record.status,
        "budget": record.budget["name"],
        "epochs": record.epochs_run,
        "protocol": record.protocol,
        "best_val_accuracy": record.best_val_accuracy,
        "test_accuracy": evaluation.get("test", {}).get("accuracy"),
        "test_public_accuracy": evaluation.get("test_public", {}).get("accuracy"),
        "test_private_accuracy": evaluation.get("test_private", {}).get("accuracy"),
        "test_images": evaluation.get("test", {}).get("n"),
        "macro_f1": evaluation.get("test", {}).get("macro_f1"),
        "reported_test_accuracy": record.reported_test_accuracy,
        "params": record.params,
        "wall_seconds": record.wall_seconds,
        "epoch_seconds": record.history.get("seconds", []),
        "train_images": record.train_images,
        "images_per_second": record.images_per_second,
        "record": str(STUDIES_DIR / record.study / record.artifacts.get("record", "")),
    }


def summary_line(record) -> str:
    """A finished run in one line: its budget, accuracies, size and speed."""
    summary = run_summary(record, skipped=False)
    halves = ""
    if summary["test_public_accuracy"] is not None and summary["test_private_accuracy"] is not None:
        halves = f" (public {summary['test_public_accuracy']:.4f}, private {summary['test_private_accuracy']:.4f})"
    reported = summary["reported_test_accuracy"]
    reported_text = f"  reported {reported:.4f}" if reported is not None else ""
    return (
        f"{summary['name']}: {summary['budget']} budget, {summary['epochs']} epoch(s), "
        f"best val {summary['best_val_accuracy']:.4f}, "
        f"test {summary['test_accuracy']:.4f} on {summary['test_images']:,} images{halves}{reported_text}, "
        f"{summary['params']:,} params, {summary['wall_seconds']:.1f} s, {summary['images_per_second']:.1f} img/s"
    )


class TrainingProgress:
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

        from ferhpo.progress import UPDATE_SECONDS, RunProgress, clock
        from ferhpo.training.build import has_accelerator

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
                        total=self.params.get("steps"),
                        desc=f"{label} epoch {epoch + 1}/{epochs}",
                        unit="batch",
                        position=1,
                        leave=False,
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
                        file=owner.err,
                        flush=True,
                    )

            def estimate(self):
                if not owner.estimated and run.seconds_per_epoch() is not None:
                    owner.estimated = True
                    for line in estimate_lines(
                        name,
                        run.seconds_per_epoch(),
                        epochs,
                        owner.runs,
                        1,
                        has_accelerator(),
                        what="run(s)",
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
                        file=owner.err,
                        flush=True,
                    )

        return Callback()


COMMAND = Command("baseline", "reproduce the five reference configurations", _baseline_arguments, _baseline_run)
