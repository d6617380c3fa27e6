"""Figures drawn from records (plain data), written atomically as PNG.

Uses matplotlib's object API (no pyplot), so nothing depends on a display or on
global figure state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ferhpo.atomic import atomic_path
from ferhpo.formatting import objective_label


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


# --------------------------------------------------------------------------- report figures
#
# Each takes plain data (numbers, names, lists), draws one figure with labelled axes and
# units, and writes it atomically as PNG. Accuracies are fractions in the data and are
# drawn in percent.

_COMPLETE = "tab:blue"
_PRUNED = "tab:red"
_BASELINE = "tab:orange"
_REPORTED = "tab:grey"


def _save(fig: Figure, path: str | Path) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return Path(path)


def _pct(values):
    return [None if v is None else 100.0 * v for v in values]


def optimization_history(
    points: list[tuple[int, float, str]],
    path: str | Path,
    *,
    objective: str,
    baseline: tuple[str, float] | None = None,
) -> Path:
    """The objective of each trial in trial order; pruned ones at their best epoch; best so far.

    `points` are (trial number, objective value, status), status "complete" or "pruned".
    `baseline` is (label, value) drawn as a horizontal line when comparable.
    """
    fig = Figure(figsize=(9, 5), layout="constrained")
    ax = fig.subplots()
    points = sorted(points)
    done = [(n, v) for n, v, s in points if s == "complete"]
    pruned = [(n, v) for n, v, s in points if s == "pruned"]
    if done:
        ax.scatter([n for n, _ in done], _pct([v for _, v in done]), color=_COMPLETE, label="complete trial", zorder=3)
        best, xs, ys = float("-inf"), [], []
        for n, v in done:
            best = max(best, v)
            xs.append(n)
            ys.append(100.0 * best)
        ax.step(xs, ys, where="post", color=_COMPLETE, alpha=0.6, label="best so far")
    if pruned:
        ax.scatter(
            [n for n, _ in pruned],
            _pct([v for _, v in pruned]),
            color=_PRUNED,
            marker="x",
            label="pruned trial (best epoch before pruning)",
            zorder=3,
        )
    if baseline is not None:
        ax.axhline(100.0 * baseline[1], color=_BASELINE, linestyle=":", label=baseline[0])
    ax.set_xlabel("trial number")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"{objective_label(objective)} (%)")
    ax.set_title("Optimization history")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    return _save(fig, path)


def time_to_accuracy(
    points: list[dict], path: str | Path, *, reference: tuple[str, float, float | None, float] | None = None
) -> Path:
    """The study's best run so far (validation and test accuracy) against wall-clock hours.

    `points` are `ferhpo.report.fidelity.best_over_time`'s; `reference` is (label,
    validation accuracy, test accuracy, hours it trained), drawn as lines with a mark
    at the time it took."""
    fig = Figure(figsize=(9, 5), layout="constrained")
    ax = fig.subplots()
    hours = [p["hours"] for p in points]
    ax.step(hours, _pct([p["val"] for p in points]), where="post", color=_COMPLETE, label="best run so far: validation")
    tested = [(p["hours"], p["test"]) for p in points if p["test"] is not None]
    if tested:
        ax.step([h for h, _ in tested], _pct([t for _, t in tested]), where="post", color=_COMPLETE, linestyle="--",
                label="best run so far: test")  # fmt: skip
    for p, q in zip(points, points[1:]):
        if q["rung"] != p["rung"]:
            where = (q["hours"], 100.0 * q["val"])
            ax.annotate(f"rung {q['rung']}", where, textcoords="offset points", xytext=(4, 4), fontsize=8)
    if reference is not None:
        label, val, test, ref_hours = reference
        ax.axhline(100.0 * val, color=_BASELINE, linestyle=":", label=f"{label}: validation")
        if test is not None:
            ax.axhline(100.0 * test, color=_BASELINE, linestyle="-.", label=f"{label}: test")
        ax.axvline(ref_hours, color=_BASELINE, alpha=0.4, label=f"{label}: its own training time")
    ax.set_xlabel("wall-clock hours since the study's first run started")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Time to accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def intermediate_curves(
    curves: list[tuple[str, list[float], str]],
    path: str | Path,
    *,
    objective: str,
) -> Path:
    """Per-epoch validation objective of every trial; pruned trials dashed, ending in a cross.

    `curves` are (label, values per epoch, status).
    """
    fig = Figure(figsize=(9, 5.5), layout="constrained")
    ax = fig.subplots()
    seen = set()
    longest = 1
    for _label, values, status in curves:
        epochs = list(range(1, len(values) + 1))
        if not epochs:
            continue
        longest = max(longest, len(epochs))
        ys = _pct(values)
        if status == "pruned":
            legend = "pruned trial" if "pruned" not in seen else None
            ax.plot(epochs, ys, color=_PRUNED, linestyle="--", marker=".", alpha=0.7, label=legend)
            ax.scatter([epochs[-1]], [ys[-1]], color=_PRUNED, marker="x", s=60, zorder=3)
            seen.add("pruned")
        else:
            legend = f"{status} trial" if status not in seen else None
            ax.plot(epochs, ys, color=_COMPLETE if status == "complete" else "tab:purple", marker=".", alpha=0.7, label=legend)
            seen.add(status)
    ax.set_xlabel("epoch")
    ax.set_xlim(0.8, longest + 0.2)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"{objective_label(objective)} (%)")
    ax.set_title("Validation curves per trial (x: where the pruner stopped a trial)")
    ax.grid(alpha=0.3)
    if seen:
        ax.legend(loc="best")
    return _save(fig, path)


def param_importance(importances: dict[str, float], path: str | Path, *, method: str) -> Path:
    """Horizontal bars: each hyperparameter's share of the objective's variation."""
    names = list(importances)[::-1]
    values = [100.0 * importances[n] for n in names]
    fig = Figure(figsize=(8, max(2.5, 0.45 * len(names) + 1.5)), layout="constrained")
    ax = fig.subplots()
    bars = ax.barh(names, values, color=_COMPLETE)
    for bar, value in zip(bars, values):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:.1f}%", va="center")
    ax.set_xlabel(f"importance (% of total, {method})")
    ax.set_ylabel("hyperparameter")
    ax.set_xlim(0, max(values + [1.0]) * 1.2)
    ax.set_title("Hyperparameter importance")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def parallel_coordinates(
    trials: list[tuple[str, dict, float]],
    axes: list[tuple[str, str, list]],
    path: str | Path,
    *,
    objective: str,
) -> Path:
    """One line per trial across one vertical axis per hyperparameter and the objective.

    `trials` are (label, hyperparameters, objective value), best first; `axes` are
    (name, kind, values) with kind "log", "linear" or "categorical" (values: the
    categories, in axis order). Each axis is scaled to its own range; its ends are
    labelled with their values. A trial lacking a (conditional) parameter skips that axis.
    """

    def position(kind, values, value):
        if value is None:
            return None
        if kind == "categorical":
            index = next((i for i, v in enumerate(values) if v == value or str(v) == str(value)), None)
            return None if index is None else (0.5 if len(values) == 1 else index / (len(values) - 1))
        lo, hi = min(values), max(values)
        if kind == "log" and lo > 0:
            lo, hi, value = math.log10(lo), math.log10(hi), math.log10(value)
        return 0.5 if hi == lo else (value - lo) / (hi - lo)

    scores = [s for _, _, s in trials]
    norm = Normalize(vmin=100 * min(scores), vmax=100 * max(scores) if max(scores) > min(scores) else 100 * min(scores) + 1e-6)
    cmap = colormaps["viridis"]
    n_axes = len(axes) + 1
    fig = Figure(figsize=(max(7, 1.6 * n_axes + 2), 5.5), layout="constrained")
    ax = fig.subplots()
    for x in range(n_axes):
        ax.axvline(x, color="black", linewidth=0.8)
    for _label, hyper, score in reversed(trials):  # best drawn last, on top
        xs, ys = [], []
        for x, (name, kind, values) in enumerate(axes):
            y = position(kind, values, hyper.get(name))
            if y is not None:
                xs.append(x)
                ys.append(y)
        xs.append(n_axes - 1)
        ys.append(position("linear", scores, score))
        ax.plot(xs, ys, color=cmap(norm(100 * score)), marker="o", linewidth=1.8, alpha=0.85)

    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    for x, (_name, kind, values) in enumerate(axes):
        if kind == "categorical":
            for i, v in enumerate(values):
                y = 0.5 if len(values) == 1 else i / (len(values) - 1)
                ax.text(x + 0.04, y, fmt(v), fontsize=8, va="center")
        else:
            ax.text(x + 0.04, 0.0, fmt(min(values)), fontsize=8, va="center")
            ax.text(x + 0.04, 1.0, fmt(max(values)) + (" (log)" if kind == "log" else ""), fontsize=8, va="center")
    ax.text(n_axes - 1 + 0.04, 0.0, f"{100 * min(scores):.1f}%", fontsize=8, va="center")
    ax.text(n_axes - 1 + 0.04, 1.0, f"{100 * max(scores):.1f}%", fontsize=8, va="center")
    names = [name for name, _, _ in axes] + [objective_label(objective)]
    ax.set_xticks(range(n_axes), names, rotation=20, ha="right")
    ax.set_xlim(-0.2, n_axes - 1 + 0.6)
    ax.set_ylim(-0.08, 1.08)
    ax.set_yticks([0, 0.5, 1], ["low", "middle", "high"])
    ax.set_ylabel("position on each axis's own range")
    ax.set_xlabel("hyperparameter (and the objective, right)")
    ax.set_title(f"Parallel coordinates of the top {len(trials)} trials")
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=f"{objective_label(objective)} (%)")
    return _save(fig, path)


def learning_curves_compared(
    runs: list[tuple[str, dict[str, list[float]]]],
    path: str | Path,
) -> Path:
    """Accuracy and loss per epoch of several runs: validation solid, training dashed."""
    fig = Figure(figsize=(11, 4.8), layout="constrained")
    acc_ax, loss_ax = fig.subplots(1, 2)
    colors = [_COMPLETE, _BASELINE, "tab:green", "tab:purple"]
    for (label, history), color in zip(runs, colors):
        n = len(history.get("val_accuracy") or history.get("accuracy") or history.get("loss") or [])
        epochs = list(range(1, n + 1))
        marker = "o" if n < 30 else None
        for ax, metric, scale in ((acc_ax, "accuracy", 100.0), (loss_ax, "loss", 1.0)):
            for key, style, split in ((f"val_{metric}", "-", "validation"), (metric, "--", "training")):
                values = history.get(key) or []
                if values:
                    ax.plot(
                        epochs[: len(values)],
                        [scale * v for v in values],
                        linestyle=style,
                        marker=marker,
                        color=color,
                        label=f"{label}, {split}",
                    )
    acc_ax.set_ylabel("accuracy (%)")
    loss_ax.set_ylabel("loss (cross-entropy)")
    for ax in (acc_ax, loss_ax):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Learning curves: best trial against the best baseline")
    return _save(fig, path)


def pareto_front(points: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """The points no other point beats on both fewer parameters and higher accuracy,
    sorted by parameters."""
    front: list[tuple[int, float]] = []
    for params, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or acc > front[-1][1]:
            front.append((params, acc))
    return front


def accuracy_vs_params(
    groups: list[tuple[str, str, list[tuple[str, int, float]]]],
    path: str | Path,
    *,
    front: list[tuple[int, float]],
    highlight: Sequence[tuple[int, float]] = (),
) -> Path:
    """Test accuracy against parameter count (log scale) with the Pareto front.

    `groups` are (legend label, kind, [(name, params, accuracy)]) with kind "trial",
    "baseline" or "reported"; `highlight` rings the study's own Pareto-front trials.
    """
    styles: dict[str, dict[str, Any]] = {
        "trial": dict(color=_COMPLETE, marker="o"),
        "baseline": dict(color=_BASELINE, marker="s"),
        "reported": dict(facecolors="none", edgecolors=_REPORTED, marker="D"),
    }
    fig = Figure(figsize=(9, 5.5), layout="constrained")
    ax = fig.subplots()
    for label, kind, items in groups:
        if not items:
            continue
        ax.scatter([p for _, p, _ in items], [100 * a for _, _, a in items], label=label, s=45, zorder=3, **styles[kind])
        if kind != "trial" or len(items) <= 12:
            for name, p, a in items:
                ax.annotate(name, (p, 100 * a), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if front:
        xs = [p for p, _ in front]
        ys = [100 * a for _, a in front]
        ax.plot(
            xs,
            ys,
            drawstyle="steps-post",
            color="black",
            linewidth=1.2,
            marker="o",
            markersize=13,
            markerfacecolor="none",
            label="Pareto front (measured runs)",
            zorder=2,
        )
    if highlight:
        ax.scatter(
            [p for p, _ in highlight],
            [100 * a for _, a in highlight],
            s=160,
            facecolors="none",
            edgecolors="tab:green",
            linewidths=1.5,
            label="study's Pareto front (validation)",
            zorder=4,
        )
    ax.set_xscale("log")
    ax.set_xlabel("parameters (count, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy against model size")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def confusion_matrix(confusion: list[list[int]], classes: list[str], path: str | Path, *, title: str) -> Path:
    """Rows: true class; columns: predicted class; colour: share of the row; text: counts."""
    counts = np.asarray(confusion, dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    fig = Figure(figsize=(7.5, 6.5), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(100 * share, cmap="Blues", vmin=0, vmax=100)
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            ax.text(
                j,
                i,
                f"{int(counts[i, j])}\n{100 * share[i, j]:.0f}%",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if share[i, j] > 0.55 else "black",
            )
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="share of the true class (%)")
    return _save(fig, path)


def time_phases(per_run: list[tuple[str, dict[str, float]]], path: str | Path, *, idle: float = 0.0) -> Path:
    """Stacked bars of each run's wall seconds by phase, and one bar of the whole study's
    time in percent (the runs' phases summed, plus `idle` worker seconds)."""
    names = list(per_run[0][1]) if per_run else []
    # training steps in green, the overheads in other colours
    palette = [
        "tab:blue",
        "tab:orange",
        "tab:purple",
        "tab:red",
        "tab:green",
        "tab:cyan",
        "tab:pink",
        "tab:brown",
        "tab:olive",
        "tab:gray",
    ]
    fig = Figure(figsize=(10, 2.2 + 0.32 * len(per_run)), layout="constrained")
    runs_ax, total_ax = fig.subplots(2, 1, height_ratios=[max(len(per_run), 1), 1.6])
    labels = [name for name, _ in per_run]
    left = np.zeros(len(per_run))
    for i, phase in enumerate(names):
        widths = np.array([phases.get(phase, 0.0) for _, phases in per_run])
        runs_ax.barh(labels, widths, left=left, color=palette[i % len(palette)], label=phase)
        left += widths
    runs_ax.invert_yaxis()
    runs_ax.set_xlabel("wall time (s)")
    runs_ax.grid(axis="x", alpha=0.3)
    fig.legend(loc="outside right upper", fontsize="small", title="phase")
    runs_ax.set_title("Wall time of each run by phase")
    totals = {phase: sum(p.get(phase, 0.0) for _, p in per_run) for phase in names}
    whole = sum(totals.values()) + idle
    start = 0.0
    for i, phase in enumerate([*names, "idle"]):
        value = idle if phase == "idle" else totals[phase]
        share = 100.0 * value / whole if whole else 0.0
        colour = "lightgrey" if phase == "idle" else palette[i % len(palette)]
        total_ax.barh(["study"], [share], left=[start], color=colour)
        if share >= 4:
            total_ax.text(start + share / 2, 0, f"{phase}\n{share:.0f}%", ha="center", va="center", fontsize="small")
        start += share
    total_ax.set_xlim(0, 100)
    total_ax.set_xlabel("share of the study's wall time (%)")
    return _save(fig, path)
