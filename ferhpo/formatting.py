"""Numbers and names as people read them, the same in reports, run folders and the CLI.

Standard library only: the report (which never loads keras) and the TensorBoard run
names (which load before keras) both use it.
"""

from __future__ import annotations

from typing import Any


def format_brief(value: Any) -> str:
    """A hyperparameter value in few characters: floats to 3 significant digits."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def format_signed(value: float | None, digits: int = 2) -> str:
    """`value` with its sign (+1.25, -0.40), or a dash when there is none."""
    return "–" if value is None else f"{value:+.{digits}f}"


def format_seconds(seconds: float) -> str:
    """A duration in the unit that reads best: seconds, minutes or hours."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def objective_label(name: str) -> str:
    """ "val_accuracy" -> "validation accuracy", "macro_f1" -> "validation macro-F1"."""
    return "validation " + {"val_accuracy": "accuracy", "macro_f1": "macro-F1"}.get(name, name)
