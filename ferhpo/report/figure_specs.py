"""The report's figures: what each shows, its caption, and how to draw it or why it is not drawn.

The specs are built from the report's content; `ferhpo.report.figures` (matplotlib)
draws them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ferhpo.formatting import objective_label
from ferhpo.report.content import ReportContent
from ferhpo.report.importance import importance
from ferhpo.report.load import Run, StudyData

#: More axes than this make parallel coordinates unreadable.
MAX_PARALLEL_AXES = 8


@dataclass
class FigureSpec:
    """A figure of the report: drawn by `draw(path)`, or not, with the reason."""

    name: str  # file stem
    title: str
    caption: str
    draw: Callable[[Path], Path] | None = None
    reason: str = ""  # why it is not drawn

    @property
    def file(self) -> str:
        return f"{self.name}.png"


def figure_specs(c: ReportContent) -> list[FigureSpec]:
    """The report's figures, each with its caption, or the reason it is not drawn."""
    from ferhpo.report import figures

    d = c.data
    objective = d.objective_name
    runs = d.ranked
    specs: list[FigureSpec] = []
    label = "trial" if d.is_search else "run"

    # optimization history
    pts = [
        (r.number if r.number is not None else i, r.objective, r.status)
        for i, r in enumerate(runs)
        if r.objective is not None and r.status in ("complete", "pruned")
    ]
    spec = FigureSpec(
        "optimization_history",
        "Optimization history",
        f"{objective_label(objective).capitalize()} of each {label} in the order the study ran them "
        f"(crosses: pruned {label}s at the best epoch they reached), with the best value found so far.",
    )
    if pts:
        baseline = None
        bb, best = c.best_baseline, c.best
        if (
            bb is not None
            and best is not None
            and objective == "val_accuracy"
            and bb.record.protocol == best.record.protocol
            and bb.record.budget == best.record.budget
        ):
            baseline = (f"best baseline {bb.name} (validation)", bb.record.best_val_accuracy)
        spec.draw = lambda path, pts=pts, baseline=baseline: figures.optimization_history(
            pts, path, objective=objective, baseline=baseline
        )
    else:
        spec.reason = f"no complete or pruned {label} has a validation value yet"
    specs.append(spec)

    # intermediate values
    curves = []
    for r in runs:
        values = r.record.search.get("objective_curve") or r.record.history.get("val_accuracy") or []
        values = [v for v in values if v is not None and math.isfinite(v)]
        if values:
            curves.append((r.name, values, r.status))
    spec = FigureSpec(
        "intermediate_values",
        "Validation curves",
        f"{objective_label(objective).capitalize()} after each epoch of every {label}: complete {label}s solid, "
        f"pruned ones dashed and ending in a cross at the epoch where the pruner stopped them.",
    )
    if curves:
        spec.draw = lambda path, curves=curves: figures.intermediate_curves(curves, path, objective=objective)
    else:
        spec.reason = "no run recorded per-epoch validation values"
    specs.append(spec)

    # importance
    values, why = importance(d, runs)
    spec = FigureSpec(
        "param_importance",
        "Hyperparameter importance",
        f"Share of the variation in {objective_label(objective)} across complete trials attributed to each "
        f"hyperparameter (Optuna's PED-ANOVA evaluator; few trials make it a rough guide).",
    )
    if values:
        spec.draw = lambda path, values=values, why=why: figures.param_importance(values, path, method=why)
    else:
        spec.reason = why
    specs.append(spec)

    # parallel coordinates of the top trials
    # the top K (--top), and never fewer than 5 where the study has them: a figure of one line says nothing
    top = [r for r in runs if r.status == "complete" and r.objective is not None and r.record.hyperparameters][: max(c.top, 5)]
    axes = _parallel_axes(d, top)
    capped = ""
    if len(axes) > MAX_PARALLEL_AXES:
        order = list(values or {})  # most important first, when importance was computed
        axes.sort(key=lambda a: order.index(a[0]) if a[0] in order else len(order))
        axes = axes[:MAX_PARALLEL_AXES]
        capped = f" Only the {MAX_PARALLEL_AXES} {'most important ' if values else 'first '}varying hyperparameters are drawn."
    spec = FigureSpec(
        "parallel_coordinates",
        "Parallel coordinates of the top trials",
        f"Hyperparameters of the top {len(top)} complete trials, one line each, coloured by {objective_label(objective)}; "
        f"each axis spans the values drawn (categories evenly spaced).{capped}",
    )
    if len(top) >= 2 and axes:
        trials = [(r.name, r.record.hyperparameters, r.objective) for r in top]
        spec.draw = lambda path, trials=trials, axes=axes: figures.parallel_coordinates(trials, axes, path, objective=objective)
    else:
        spec.reason = (
            f"needs at least 2 complete trials with searched hyperparameters; the study has {len(top)}"
            if len(top) < 2
            else "every top trial drew the same hyperparameters"
        )
    specs.append(spec)

    # learning curves: best trial against the best baseline
    spec = FigureSpec(
        "learning_curves",
        "Learning curves",
        "Accuracy and loss per epoch of the best trial"
        + (f" ({c.best.name})" if c.best else "")
        + (
            f" against the best reproduced baseline ({c.best_baseline.name})"
            if c.best_baseline and c.best and c.best_baseline.record.run_id != c.best.record.run_id
            else ""
        )
        + ": validation solid, training dashed.",
    )
    histories = []
    if c.best is not None and c.best.record.history.get("loss"):
        histories.append((c.best.name, c.best.record.history))
        bb = c.best_baseline
        if bb is not None and bb.record.run_id != c.best.record.run_id and bb.record.history.get("loss"):
            histories.append((f"{bb.name} (baseline)", bb.record.history))
    if histories:
        spec.draw = lambda path, histories=histories: figures.learning_curves_compared(histories, path)
    else:
        spec.reason = "no complete run with a training history"
    specs.append(spec)

    # accuracy against parameters
    measured_trials = [
        (r.name, r.record.params, r.record.test_accuracy)
        for r in runs
        if r.status == "complete" and r.record.test_accuracy is not None and r.record.kind == "trial"
    ]
    ranked_ids = {r.record.run_id for r in runs}
    baseline_runs = [r for r in runs if r.record.kind == "baseline"] + [
        r for r in d.baselines if r.record.run_id not in ranked_ids
    ]
    measured_base = [
        (f"{r.name} ({r.record.budget.get('name')})", r.record.params, r.record.test_accuracy)
        for r in baseline_runs
        if r.status == "complete" and r.record.test_accuracy is not None
    ]
    reported = [(ref.name, ref.params, ref.accuracy) for ref in c.references]
    measured = [(p, a) for _, p, a in measured_trials + measured_base]
    front = figures.pareto_front(measured)
    highlight = [
        (r.record.params, r.record.test_accuracy)
        for r in runs
        if d.pareto and r.name in d.pareto and r.record.test_accuracy is not None
    ]
    groups = [
        ("trials", "trial", measured_trials),
        ("reproduced baselines", "baseline", measured_base),
        ("reported references", "reported", reported),
    ]
    spec = FigureSpec(
        "accuracy_vs_params",
        "Accuracy against parameter count",
        "Test accuracy against parameter count (log scale) of the complete trials, the reproduced baselines and "
        "the reported references, with the Pareto front of the measured runs (fewer parameters and higher accuracy).",
    )
    if measured or reported:
        spec.draw = lambda path, groups=groups, front=front, highlight=highlight: figures.accuracy_vs_params(
            groups, path, front=front, highlight=highlight
        )
    else:
        spec.reason = "no run has a test accuracy"
    specs.append(spec)

    # where the time went
    t = c.compute.get("time")
    spec = FigureSpec(
        "time_phases",
        "Where the time went",
        "Wall time of each run by phase (process start-up and imports, data, model build, graph tracing, "
        "training steps, validation, test evaluation, writing results, the rest), and the study's wall time "
        "(its span times its workers) split the same way, idle workers included.",
    )
    if t is not None:
        spec.draw = lambda path, t=t: figures.time_phases(t["per_run"], path, idle=t["idle_seconds"])
    else:
        spec.reason = "the records carry no phase times (made before ferhpo recorded them)"
    specs.append(spec)

    # confusion matrix of the best trial
    spec = FigureSpec(
        "confusion_matrix",
        "Confusion matrix of the best trial",
        f"Test-set confusion matrix of the best {label}"
        + (f" ({c.best.name})" if c.best else "")
        + ": rows are the true classes, columns the predicted ones; each cell gives the count and the share of its row.",
    )
    best = c.best
    test = (best.record.evaluation.get("test") or {}) if best is not None else {}
    if best is not None and test.get("confusion"):
        classes = list((test.get("per_class_recall") or {}).keys()) or [str(i) for i in range(len(test["confusion"]))]
        title = f"{best.name}: test accuracy {100 * test['accuracy']:.1f}% on {test.get('n', 0):,} images"
        spec.draw = lambda path, conf=test["confusion"], classes=classes, title=title: figures.confusion_matrix(
            conf, classes, path, title=title
        )
    else:
        spec.reason = "the best run has no test confusion matrix (no complete run yet)"
    specs.append(spec)

    if c.fidelity is not None:
        specs.append(_time_to_accuracy(c))
    return specs


def _time_to_accuracy(c: ReportContent) -> FigureSpec:
    from ferhpo.report import figures

    spec = FigureSpec(
        "time_to_accuracy",
        "Time to accuracy",
        "Validation and test accuracy of the study's best run so far (by validation, at the highest rung reached) "
        "against the study's wall-clock hours, beside the reference recipe trained at the final budget (the best "
        "comparable baseline; the vertical line marks the time it took on its own).",
    )
    points = c.fidelity["over_time"] if c.fidelity else []
    bb = c.best_baseline
    reference = None
    if bb is not None:
        reference = (bb.name, bb.record.best_val_accuracy, bb.record.test_accuracy, bb.record.wall_seconds / 3600)
    if points:
        spec.draw = lambda path, points=points, reference=reference: figures.time_to_accuracy(points, path, reference=reference)
    else:
        spec.reason = "no complete run records its start and wall time"
    return spec


def _parallel_axes(d: StudyData, top: list[Run]) -> list[tuple[str, str, list]]:
    specs = {p["name"]: p for p in (d.space or {}).get("params", []) if isinstance(p, dict) and "name" in p}
    names: list[str] = []
    for r in top:
        names += [k for k in r.record.hyperparameters if k not in names]
    axes = []
    for name in names:
        values = [r.record.hyperparameters[name] for r in top if name in r.record.hyperparameters]
        distinct = []
        for v in values:
            if v not in distinct:
                distinct.append(v)
        if len(distinct) < 2:
            continue
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in distinct)
        if numeric:
            log = bool(specs.get(name, {}).get("log")) and min(distinct) > 0
            axes.append((name, "log" if log else "linear", distinct))
        else:
            choices = specs.get(name, {}).get("choices")
            ordered = [v for v in choices if v in distinct] if choices else sorted(distinct, key=str)
            ordered += [v for v in distinct if v not in ordered]
            axes.append((name, "categorical", ordered))
    return axes
