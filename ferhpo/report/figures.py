"""Figures drawn from records (plain data), written atomically as PNG.

Uses matplotlib's object API (no pyplot), so nothing depends on a display or on
global figure state.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ferhpo.atomic import atomic_path


def learning_curve(history: dict[str, list[float]], path: str | Path, *, title: str, best_epoch: int = 0) -> Path:
    """Accuracy and loss per epoch (train and validation), the learning rate beneath."""
    epochs = list(range(1, len(history.get("loss", [])) + 1))
    fig = Figure(figsize=(10, 6.5), layout="constrained")
    acc_ax, loss_ax = fig.subplots(2, 2, height_ratios=[3, 1.2])[0]
    lr_ax = fig.axes[2]
    fig.axes[3].remove()
    marker = "o" if len(epochs) < 30 else None
    for ax, metric, label in ((acc_ax, "accuracy", "accuracy"), (loss_ax, "loss", "loss (cross-entropy)")):
        for key, name in ((metric, "train"), (f"val_{metric}", "validation")):
            if history.get(key):
                ax.plot(epochs, history[key], marker=marker, label=name)
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch ({best_epoch})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if history.get("lr"):
        lr_ax.plot(epochs, history["lr"], marker=marker, color="tab:green")
        lr_ax.set_yscale("log")
    lr_ax.set_xlabel("epoch")
    lr_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    lr_ax.set_ylabel("learning rate")
    lr_ax.grid(alpha=0.3)
    fig.suptitle(title)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return Path(path)
