"""TensorBoard curves: `--tensorboard DIR` gives each run (trial or baseline) a folder.

A run's folder under DIR is named by the run and its key hyperparameters
(`trial-3_learning_rate=0.0012_optimizer=adam`), so `tensorboard --logdir DIR` lists
a study's trials side by side. The callback is Keras' own `TensorBoard`, handed to the
one fit function like any other callback. The folder is checked before any work
(`check_folder`), without writing anything.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ferhpo.errors import ConfigError

#: Longest run folder name; hyperparameters past it are left out of the name.
NAME_LIMIT = 120


def check_folder(path: str) -> str:
    """The absolute path of a usable TensorBoard folder; ConfigError when it is a file, lies
    under a file, or cannot be written. Creates nothing (training does, when it starts)."""
    target = Path(path).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise ConfigError(f"--tensorboard {path}: it is a file; expected a folder (new or existing) for the logs")
    existing = target
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"--tensorboard {path}: {existing} is a file; expected a folder (new or existing) for the logs")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--tensorboard {path}: {existing} is not writable; expected a folder you can write to")
    return str(target)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def run_name(name: str, hyperparameters: dict[str, Any] | None = None) -> str:
    """`name` and its hyperparameters as one safe folder name of at most NAME_LIMIT characters."""
    parts = [name]
    for key, value in (hyperparameters or {}).items():  # the space's order: its first are the key ones
        part = f"{key}={_short(value)}"
        if len("_".join([*parts, part])) > NAME_LIMIT:
            break
        parts.append(part)
    return re.sub(r"[^A-Za-z0-9_.=,+-]", "-", "_".join(parts))


def callback(root: str, name: str, hyperparameters: dict[str, Any] | None = None):
    """Keras' TensorBoard callback writing run `name`'s curves into root/run_name(...)."""
    import keras

    return keras.callbacks.TensorBoard(log_dir=str(Path(root) / run_name(name, hyperparameters)), write_graph=False)
