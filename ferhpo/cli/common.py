"""What the command modules share: the Command record, argument types, the data and
storage options, quiet imports of Keras and Optuna, and the time estimate printed by
`baseline` and `search`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ferhpo.errors import FerhpoError

PROG = "ferhpo"


class UsageError(FerhpoError):
    """Bad command-line usage (argparse's complaints, made one line)."""


class Parser(argparse.ArgumentParser):
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


def add_data_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data",
        metavar="PATH",
        help="FER2013 as image folders (train/<class>/, test/<class>/) or the Kaggle fer2013.csv; "
        "default: $FERHPO_DATA, else ./data/fer2013",
    )
    group.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="where decoded arrays are cached (outside the data folder); default: $FERHPO_CACHE, else the user cache dir",
    )
    group.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip corrupt or non-image files (and bad csv rows) and report how many, instead of failing",
    )


def add_storage_argument(parser: argparse._ActionsContainer, *, example: str | None = None) -> None:
    """--storage URL, for every command that reads or writes a study. `parser` may be an
    argument group; `example` is a command's own hint, shown before the default.

    The default is resolved where the storage is opened (`store.storage_url`, whose
    `DEFAULT_STORAGE` the text names): importing the store here would load Optuna and
    slow every `--help`."""
    hint = f", {example}" if example else ""
    parser.add_argument(
        "--storage",
        metavar="URL",
        help=f"Optuna storage URL{hint} (default: $FERHPO_STORAGE, else sqlite:///studies/ferhpo.db)",
    )


# --------------------------------------------------------------------------- argument types


def _number(convert: Callable[[str], Any], valid: Callable[[Any], bool], expected: str, bad_value: str | None = None):
    """An argparse type: `convert(text)`, refused unless `valid`; the messages say what
    was expected and what came (the text as typed when it is not a number at all)."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not valid(value):
            raise argparse.ArgumentTypeError(f"expected {bad_value or expected}, got {value if convert is int else text}")
        return value

    return parse


INF = float("inf")
positive_int = _number(int, lambda v: v >= 1, "a positive integer")
non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
# NaN fails every comparison, so "not > 0" and "not >= 0" refuse it too.
positive_float = _number(float, lambda v: v > 0 and v != INF, "a positive number")
non_negative_float = _number(float, lambda v: v >= 0 and v != INF, "a number >= 0", "a finite number >= 0")


# --------------------------------------------------------------------------- quiet imports, estimates


def import_keras() -> None:
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


def quiet_optuna() -> None:
    """Optuna logs every study creation at INFO; ferhpo prints its own summaries."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def load_data(args: argparse.Namespace):
    from ferhpo.data import load_fer2013

    return load_fer2013(args.data, args.cache_dir, skip_bad=args.skip_bad)


def estimate_lines(
    name: str, per_epoch: float, epochs: int, runs: int, workers: int, accelerator, *, what: str, total_epochs: int | None = None
) -> list[str]:
    """The up-front estimate, from measured time: one run of `epochs` epochs, and `runs`
    runs (`total_epochs` in all, default runs x epochs) shared by `workers`; past a day
    without an accelerator, it says so and names the budget that fits."""
    from ferhpo.progress import DAY, clock

    one_run = per_epoch * epochs
    all_runs = per_epoch * (total_epochs if total_epochs is not None else epochs * runs) / max(1, workers)
    lines = [
        f"estimate (measured on {name}): ~{clock(per_epoch)} an epoch, ~{clock(one_run)} for its {epochs} epoch(s); "
        f"{runs} {what}{f' on {workers} workers' if workers > 1 else ''}: up to ~{clock(all_runs)}"
        + (" (pruned trials end sooner)" if what == "trial(s)" else "")
    ]
    if all_runs > DAY and accelerator is False:
        lines.append(
            "note: that is more than a day, and Keras found no GPU or TPU here; on a CPU, --budget cpu with the "
            "*-cpu spaces (search_spaces/resnet-cpu.toml, densenet-cpu.toml) fits (minutes an epoch); "
            "going on as asked"
        )
    return lines
