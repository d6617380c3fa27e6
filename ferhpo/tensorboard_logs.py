"""TensorBoard curves: `--tensorboard DIR` gives each run (trial or baseline) a folder.

A run's folder under DIR is named by the run and its key hyperparameters
(`trial-3_learning_rate=0.0012_optimizer=adam`), so `tensorboard --logdir DIR` lists
a study's trials side by side. The callback is Keras' own `TensorBoard`, handed to the
one fit function like any other callback. The folder is checked before any work
(`check_folder`) by creating it and writing a file in it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ferhpo.atomic import check_writable
from ferhpo.errors import ConfigError
from ferhpo.formatting import format_brief

#: Longest run folder name; hyperparameters past it are left out of the name.
NAME_LIMIT = 120


def check_folder(path: str) -> str:
    """The absolute path of a usable TensorBoard folder, created; ConfigError when it is a
    file, lies under a file, or cannot be written (tried by writing a file in it:
    reasoning about permissions misses read-only mounts, /proc and quotas)."""
    target = Path(path).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise ConfigError(f"--tensorboard {path}: it is a file; expected a folder (new or existing) for the logs")
    try:
        check_writable(target)
    except OSError as exc:
        raise ConfigError(
            f"--tensorboard {path}: cannot write there ({exc.strerror or exc}); expected a folder (new or existing) "
            f"you can write to"
        ) from None
    return str(target)


def run_name(name: str, hyperparameters: dict[str, Any] | None = None) -> str:
    """`name` and its hyperparameters as one safe folder name of at most NAME_LIMIT characters."""
    parts = [name]
    for key, value in (hyperparameters or {}).items():  # the space's order: its first are the key ones
        part = f"{key}={format_brief(value)}"
        if len("_".join([*parts, part])) > NAME_LIMIT:
            break
        parts.append(part)
    return re.sub(r"[^A-Za-z0-9_.=,+-]", "-", "_".join(parts))


def callback(root: str, name: str, hyperparameters: dict[str, Any] | None = None):
    """Keras' TensorBoard callback writing run `name`'s curves into root/run_name(...)."""
    import keras

    return keras.callbacks.TensorBoard(log_dir=str(Path(root) / run_name(name, hyperparameters)), write_graph=False)
