"""From a study's records to the report's content: ranked rows, comparisons, seeds, compute.

Everything here is plain data (numbers, strings, dicts); `ferhpo.report.render` turns it
into Markdown, HTML, CSV and JSON, and `ferhpo.report.figures` into PNGs.

Ranking uses the study's own objective (validation), never test accuracy: test numbers
are reported, not selected on. Complete runs come first (best objective first), then
pruned ones (best objective reached before pruning), then failed ones.
"""

from __future__ import annotations

import json
import math
import statistics
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ferhpo.phases import DESCRIPTIONS as PHASE_DESCRIPTIONS
from ferhpo.phases import PHASES
from ferhpo.report import stats
from ferhpo.report.load import Failure, Run, StudyData

#: Test subsets that model selection saw under each reference protocol (the reported
#: rows have no record to say so; ferhpo.data.make_splits is the source of truth).
PROTOCOL_SEES = {"seed-densenet": ("test", "test_public", "test_private"), "canonical": ("test", "test_public")}

SELECTION_MARK = "†"
PARETO_MARK = "◇"

#: Every column of the machine-readable rows (CSV, JSON), in order.
COLUMNS = (
    "rank", "kind", "run", "trial_number", "study", "engine", "sampler", "pruner", "family",
    "key_hyperparameters", "hyperparameters", "status", "epochs", "max_epochs", "budget", "protocol",
    "objective", "objective_value", "best_val_accuracy",
    "test_accuracy", "test_images", "test_private_accuracy", "test_public_accuracy", "macro_f1",
    "params", "train_seconds", "wall_seconds", "images_per_second",
    "best_reference", "diff_best_reference_pts", "family_reference", "diff_family_reference_pts",
    "baseline_run", "diff_baseline_pts",
    "verdict", "ci_low_pts", "ci_high_pts", "mcnemar_b", "mcnemar_c", "p_value", "test_method",
    "images_compared", "comparison_note",
    "seed_runs", "seed_mean_test_accuracy", "seed_std_test_accuracy",
    "selection_used_test", "pareto", "note",
)

_STATUS_ORDER = {"complete": 0, "pruned": 1, "failed": 2}


@dataclass(frozen=True)
class Reference:
    """A reported reference configuration (a preset and the study's number)."""

    name: str
    family: str
    protocol: str
    accuracy: float
    params: int
    model: dict[str, Any]
    train: dict[str, Any]


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


@dataclass
class Content:
    data: StudyData
    references: list[Reference]
    rows: list[dict[str, Any]]
    comparisons: list[dict[str, Any]]  # the top-K trials against the best baseline
    best: Run | None
    best_baseline: Run | None
    no_baseline: str  # why best_baseline is None ("" when there is one)
    best_comparison: stats.Comparison | None
    seed_groups: list[dict[str, Any]]
    compute: dict[str, Any]
    summary: list[str]
    footnotes: list[str]
    figures: list[FigureSpec] = field(default_factory=list)
    ensembles: list[dict[str, Any]] = field(default_factory=list)  # each beside the best single model
    notes: list[str] = field(default_factory=list)
    top: int = 10


# --------------------------------------------------------------------------- helpers


def references_from_presets(presets: dict) -> list[Reference]:
    """The reported rows, from `ferhpo.presets.load_presets()`."""
    import dataclasses

    from ferhpo.config import model_config_to_dict

    return [
        Reference(
            name=name,
            family=p.model.family,
            protocol=p.protocol,
            accuracy=float(p.reported_test_accuracy),
            params=int(p.reported_params),
            model=model_config_to_dict(p.model),
            train=dataclasses.asdict(p.train),
        )
        for name, p in presets.items()
    ]


def best_reference(refs: list[Reference]) -> Reference | None:
    return max(refs, key=lambda r: r.accuracy) if refs else None


def family_reference(refs: list[Reference], family: str) -> Reference | None:
    same = [r for r in refs if r.family == family]
    return max(same, key=lambda r: r.accuracy) if same else None


def points(a: float | None, b: float | None) -> float | None:
    """Difference in percentage points, 100 * (a - b)."""
    return None if a is None or b is None else 100.0 * (a - b)


def objective_label(name: str) -> str:
    """"val_accuracy" -> "validation accuracy", "macro_f1" -> "validation macro-F1"."""
    return "validation " + {"val_accuracy": "accuracy", "macro_f1": "macro-F1"}.get(name, name)


def short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def space_defaults(space: dict | None) -> dict[str, Any]:
    if not space:
        return {}
    return {p["name"]: p.get("default") for p in space.get("params", []) if isinstance(p, dict) and "name" in p}


def key_hyperparameters(hyper: dict[str, Any], defaults: dict[str, Any]) -> str:
    """The drawn values that differ from the space's defaults (all of them without a space)."""
    if not hyper:
        return ""
    changed = {k: v for k, v in hyper.items() if not defaults or k not in defaults or defaults[k] != v}
    if not changed:
        return "(all at the reference defaults)"
    return ", ".join(f"{k}={short(v)}" for k, v in changed.items())


def describe_model(family: str, model: dict[str, Any], train: dict[str, Any]) -> str:
    """A short description of a configuration that was not drawn from a space."""
    if family == "densenet":
        arch = (
            f"DenseNet{'-BC' if model.get('bottleneck', True) else ''} k={model.get('growth_rate')}, "
            f"{model.get('num_blocks')}x{model.get('layers_per_block')}, compression={short(model.get('compression'))}"
        )
    elif family == "resnet":
        arch = f"ResNet v{model.get('version')} depth {model.get('depth')}"
    else:
        arch = family
    recipe = f"{train.get('optimizer')} lr={short(train.get('learning_rate'))} batch {train.get('batch_size')}"
    return f"{arch}; {recipe}"


def _metric(record, split: str, key: str = "accuracy") -> float | None:
    value = (record.evaluation.get(split) or {}).get(key)
    return None if value is None else float(value)


def seed_key(record) -> str:
    """What makes two runs the same configuration apart from the seed."""
    train = {k: v for k, v in record.train.items() if k != "seed"}
    return json.dumps(
        {
            "family": record.family,
            "model": record.model,
            "train": train,
            "budget": record.budget,
            "protocol": record.protocol,
            "data": record.data_fingerprint,
        },
        sort_keys=True,
        default=str,
    )


def rank_runs(data: StudyData) -> list[tuple[int, Run | Failure]]:
    """The study's runs in report order with their rank (1 = best)."""
    sign = -1.0 if data.directions and data.directions[0] == "minimize" else 1.0

    def key(run: Run):
        value = run.objective
        return (
            _STATUS_ORDER.get(run.status, 3),
            -sign * value if value is not None else math.inf,
            run.number if run.number is not None else math.inf,
            run.name,
        )

    ordered: list[Run | Failure] = sorted(data.ranked, key=key)
    ordered += sorted(data.failures, key=lambda f: f.number)
    return list(enumerate(ordered, 1))


def budget_text(budget: dict[str, Any]) -> str:
    limits = [f"{k.split('_')[0]} <= {budget[k]:,}" for k in ("train_limit", "val_limit", "test_limit") if budget.get(k)]
    epochs = f"{budget['epochs']} epochs" if budget.get("epochs") else "the recipe's epochs"
    return f"{budget.get('name')} ({', '.join([epochs, *limits])})"


def incomparable(a, b) -> str | None:
    """Why records `a` and `b` may not be tested against each other, or None when they are
    like with like: the same budget (epochs and images), split protocol and data."""
    if a.budget != b.budget:
        return f"budgets differ: {budget_text(a.budget)} against {budget_text(b.budget)}"
    if a.protocol != b.protocol:
        return f"protocols differ: {a.protocol} against {b.protocol}"
    if a.data_fingerprint != b.data_fingerprint:
        return "they were trained on different data (fingerprints differ)"
    return None


def choose_best_baseline(data: StudyData, best: Run | None) -> tuple[Run | None, str]:
    """The reproduced baseline run to test against, or None and why there is none.

    Only like is compared with like: a baseline run of the best run's budget, protocol
    and data (the one with the highest test accuracy, the hardest bar, when there are
    several). A study's best trial at the cpu budget is never tested against smoke or
    full-budget baselines: the report says that the baseline study holds none that match.
    """
    candidates = [r for r in data.baselines if r.record.test_accuracy is not None]
    if not candidates:
        return None, "no reproduced baseline run was found (run `ferhpo baseline`, or name one with --baseline-study)"
    if best is not None:
        matching = [r for r in candidates if incomparable(best.record, r.record) is None]
        if not matching:
            held = sorted({f"{budget_text(r.record.budget)} / {r.record.protocol}" for r in candidates})
            return None, (
                f"the baseline runs of {data.baseline_study} were trained at other budgets or protocols "
                f"({'; '.join(held)}) than the best run ({budget_text(best.record.budget)} / {best.record.protocol}), "
                f"so there is no paired test against them; train one at the same budget and protocol "
                f"(e.g. `ferhpo baseline --space SPACE --budget {best.record.budget.get('name')} --protocol {best.record.protocol}`)"
            )
        candidates = matching
    return max(candidates, key=lambda r: (r.record.test_accuracy, r.record.created)), ""


def seed_groups(
    runs: list[Run], reference: Run | None = None, *, seed: int = 0
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Complete runs of one configuration with several seeds: mean and spread of their
    validation and test accuracy, and (what `ferhpo confirm` is for) each group against
    the reference's group over all seeds and test images (`stats.bootstrap_seeds`).

    `reference` is the best baseline run: its group (or it alone) is the bar. Returns the
    groups and, per run_id, the group it belongs to.
    """
    groups: dict[str, list[Run]] = {}
    for run in runs:
        if run.status == "complete" and run.record.test_accuracy is not None:
            groups.setdefault(seed_key(run.record), []).append(run)
    bar: list[Run] = []
    if reference is not None:
        bar = groups.get(seed_key(reference.record), [reference])
    matrix_b = stats.correct_matrix([stats.load_predictions(p) if (p := r.artifact("test_predictions")) else None
                                     for r in bar])
    out, member = [], {}
    for members in groups.values():
        if len(members) < 2:
            continue
        members = sorted(members, key=lambda m: (m.record.train.get("seed", 0), m.record.created))
        accs = [m.record.test_accuracy for m in members]
        vals = [m.record.best_val_accuracy for m in members]
        is_reference = bool(bar) and seed_key(members[0].record) == seed_key(bar[0].record)
        group = {
            "runs": [m.name for m in members],
            "seeds": [m.record.train.get("seed") for m in members],
            "n": len(members),
            "role": "reference" if is_reference else ("baseline" if members[0].record.kind == "baseline" else "candidate"),
            "mean_val_accuracy": statistics.fmean(vals),
            "std_val_accuracy": statistics.stdev(vals),
            "mean_test_accuracy": statistics.fmean(accs),
            "std_test_accuracy": statistics.stdev(accs),
            "min_test_accuracy": min(accs),
            "max_test_accuracy": max(accs),
            "budget": members[0].record.budget.get("name"),
            "reference": None, "reference_seeds": None, "images_compared": None,
            "diff_points": None, "ci_low": None, "ci_high": None, "verdict": "n/a",
            "reason": "" if bar else "no reproduced baseline to compare with",
        }
        if bar and not is_reference:
            why = incomparable(members[0].record, bar[0].record)
            matrix_a = stats.correct_matrix([stats.load_predictions(p) if (p := m.artifact("test_predictions")) else None
                                             for m in members])
            if why is not None:
                group["reason"] = f"not tested against {bar[0].name}: {why}"
            elif matrix_a is None or matrix_b is None:
                group["reason"] = "test predictions are missing for a run of this group or of the reference"
            else:
                common, ia, ib = np.intersect1d(matrix_a[1], matrix_b[1], assume_unique=True, return_indices=True)
                if common.size < stats.MIN_COMMON_IMAGES:
                    group["reason"] = f"only {common.size} test image(s) in common"
                else:
                    diff, low, high = stats.bootstrap_seeds(matrix_a[0][:, ia], matrix_b[0][:, ib], seed=seed)
                    group.update(
                        reference=bar[0].name, reference_seeds=len(bar), images_compared=int(common.size),
                        diff_points=diff, ci_low=low, ci_high=high, verdict=stats.verdict_from_interval(low, high),
                    )
        out.append(group)
        for m in members:
            member[m.record.run_id] = group
    out.sort(key=lambda g: (g["role"] != "reference", -g["mean_test_accuracy"]))
    return out, member


def ensemble_rows(data: StudyData, best: Run | None, baseline: Run | None, *, seed: int = 0) -> list[dict[str, Any]]:
    """The study's ensembles, each tested (paired bootstrap, McNemar) against the best
    single model by validation and against the best reproduced baseline."""
    root = data.runs[0].root if data.runs else Path("studies")
    rows = []
    for e in data.ensembles:
        ev = e.get("evaluation") or {}
        acc = lambda split: (ev.get(split) or {}).get("accuracy")  # noqa: E731
        rel = (e.get("artifacts") or {}).get("test_predictions")
        mine = stats.load_predictions(root / data.name / rel) if rel else None
        row = {
            "name": e.get("name"), "members": list(e.get("members") or []), "tta_hflip": bool(e.get("tta_hflip")),
            "val_accuracy": acc("val"), "test_accuracy": acc("test"), "test_public_accuracy": acc("test_public"),
            "test_private_accuracy": acc("test_private"), "macro_f1": (ev.get("test") or {}).get("macro_f1"),
            "test_images": (ev.get("test") or {}).get("n"), "note": e.get("validation_note") or "",
        }
        for label, other in (("best_single", best), ("baseline", baseline)):
            if other is None:
                comparison = stats.not_available(f"no {label.replace('_', ' ')} run")
            else:
                path = other.artifact("test_predictions")
                comparison = stats.compare(mine, stats.load_predictions(path) if path else None, seed=seed)
            row[label] = None if other is None else other.name
            row[f"{label}_accuracy"] = None if other is None else other.record.test_accuracy
            row[f"{label}_diff_points"] = comparison.diff_points
            row[f"{label}_ci_low"], row[f"{label}_ci_high"] = comparison.ci_low, comparison.ci_high
            row[f"{label}_verdict"] = comparison.verdict
        rows.append(row)
    return rows


def grid_points(space: dict | None, max_values: int = 5) -> int | None:
    """About how many points a grid search over `space` has (as ferhpo.spaces grids it:
    every choice, at most `max_values` values per numeric range)."""
    if not space or not space.get("params"):
        return None
    total = 1
    for p in space["params"]:
        kind = p.get("type")
        if kind == "categorical":
            count = len(p.get("choices") or [])
        elif kind == "bool":
            count = 2
        elif kind in ("int", "float"):
            low, high, step = p.get("low"), p.get("high"), p.get("step")
            if low == high:
                count = 1
            elif kind == "int" and not p.get("log"):
                count = min(max_values, (high - low) // (step or 1) + 1)
            elif kind == "float" and step:
                count = min(max_values, round((high - low) / step) + 1)
            else:
                count = max_values
        else:
            return None
        total *= max(count, 1)
    return total


def time_breakdown(runs: list[Run]) -> dict[str, Any] | None:
    """Where the runs' time went: seconds per phase (ferhpo.phases) summed over the runs,
    and the share of the study's wall time spent in training steps.

    The study's wall time is its span, from the first run's process start to the last
    run's end, times the most runs that were ever going at once (the workers): a worker
    idle at the end of a search counts against the share, as it should. None when no
    record carries phases (older records).
    """
    timed = [r for r in runs if r.record.phases and r.record.phases.get("wall")]
    if not timed:
        return None
    names = (*PHASES, "other")
    totals = {name: sum(float(r.record.phases.get(name, 0.0)) for r in timed) for name in names}
    run_wall = sum(float(r.record.phases["wall"]) for r in timed)
    intervals = [(float(r.record.phases.get("started_at", 0.0)), float(r.record.phases["wall"])) for r in timed]
    begin = min(start for start, _ in intervals)
    span = max(start + wall for start, wall in intervals) - begin
    # the most runs going at once: +1 at each start, -1 at each end (ends first on ties)
    events = sorted([(start, 1) for start, _ in intervals] + [(start + wall, -1) for start, wall in intervals],
                    key=lambda e: (e[0], e[1]))
    going = workers = 0
    for _, step in events:
        going += step
        workers = max(workers, going)
    capacity = span * max(workers, 1)
    return {
        "runs": len(timed),
        "phases": totals,
        "run_wall_seconds": run_wall,
        "span_seconds": span,
        "workers": workers,
        "idle_seconds": max(0.0, capacity - run_wall),
        "train_share": totals["train"] / capacity if capacity > 0 else None,
        "train_share_of_runs": totals["train"] / run_wall if run_wall > 0 else None,
        "per_run": [(r.name, {n: float(r.record.phases.get(n, 0.0)) for n in names}) for r in timed],
    }


def compute_used(data: StudyData) -> dict[str, Any]:
    """Time and epochs the study's runs used, and what pruning saved.

    A confirm study counts the runs it trained (candidates and reference), not those
    copied from the source studies: their time was spent, and is reported, there."""
    runs = data.ranked
    copied = 0
    if data.confirm is not None:
        copied = sum(1 for r in data.runs if r.record.search.get("copied_from"))
        runs = [r for r in data.runs if not r.record.search.get("copied_from")]
    epochs = sum(r.record.epochs_run for r in runs)
    without = sum(r.max_epochs for r in runs)
    pruned = [r for r in runs if r.status == "pruned"]
    max_epochs = (data.settings or {}).get("max_epochs") or (max((r.max_epochs for r in runs), default=None))
    grid = grid_points(data.space)
    return {
        "runs": len(runs),
        "complete": sum(r.status == "complete" for r in runs),
        "pruned": len(pruned),
        "failed": sum(r.status == "failed" for r in runs) + len(data.failures),
        "running": data.running,
        "wall_seconds": sum(r.record.wall_seconds for r in runs),
        "train_seconds": sum(r.record.train_seconds for r in runs),
        "epochs_used": epochs,
        "epochs_without_pruning": without,
        "epochs_saved_by_pruning": without - epochs,
        "max_epochs": max_epochs,
        "grid_points": grid,
        "grid_epochs": grid * max_epochs if grid and max_epochs else None,
        "time": time_breakdown(runs),
        "copied": copied,
    }


def importance(data: StudyData, runs: list[Run]) -> tuple[dict[str, float] | None, str]:
    """Hyperparameter importance of the complete trials (Optuna's PED-ANOVA evaluator),
    or None and the reason it cannot be computed.

    The trials are rebuilt in an in-memory study from their records (a KerasTuner trial
    has no Optuna parameters), with the space's distributions, or the observed ranges
    when the space is not saved on the study.
    """
    done = [r for r in runs if r.status == "complete" and r.objective is not None and r.record.hyperparameters]
    if len(done) < 2:
        return None, f"needs at least 2 complete trials with searched hyperparameters; the study has {len(done)}"
    names: list[str] = []
    for r in done:
        names += [k for k in r.record.hyperparameters if k not in names]
    varying = [n for n in names if len({json.dumps(r.record.hyperparameters.get(n), default=str) for r in done}) > 1]
    if not varying:
        return None, "every complete trial drew the same hyperparameters"

    import optuna

    specs = {p["name"]: p for p in (data.space or {}).get("params", []) if isinstance(p, dict) and "name" in p}

    def from_space(name: str):
        p = specs.get(name)
        if p is None:
            return None
        if p.get("type") == "int":
            log = bool(p.get("log"))
            return optuna.distributions.IntDistribution(p["low"], p["high"], log=log, step=1 if log else (p.get("step") or 1))
        if p.get("type") == "float":
            if p["low"] == p["high"]:
                return None
            return optuna.distributions.FloatDistribution(p["low"], p["high"], log=bool(p.get("log")), step=p.get("step"))
        if p.get("type") == "categorical":
            return optuna.distributions.CategoricalDistribution(list(p["choices"]))
        if p.get("type") == "bool":
            return optuna.distributions.CategoricalDistribution([False, True])
        return None

    def observed(name: str):
        values = [r.record.hyperparameters[name] for r in done if name in r.record.hyperparameters]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return optuna.distributions.IntDistribution(min(values), max(values))
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            lo, hi = float(min(values)), float(max(values))
            return optuna.distributions.FloatDistribution(lo, hi, log=lo > 0 and hi / lo >= 100)
        choices = []
        for v in values:
            v = v if isinstance(v, (bool, int, float, str)) or v is None else str(v)
            if v not in choices:
                choices.append(v)
        return optuna.distributions.CategoricalDistribution(choices)

    def trials(distribution_of):
        out = []
        for r in done:
            params, dists = {}, {}
            for n in varying:
                if n not in r.record.hyperparameters:
                    continue
                v = r.record.hyperparameters[n]
                d = distribution_of(n)
                if isinstance(d, optuna.distributions.CategoricalDistribution) and not isinstance(v, (bool, int, float, str)):
                    v = str(v)
                params[n], dists[n] = v, d
            out.append(optuna.trial.create_trial(params=params, distributions=dists, value=r.objective))
        return out

    direction = data.directions[0] if data.directions else "maximize"
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                built = trials(lambda n: from_space(n) or observed(n))
            except (ValueError, TypeError):  # a value outside the saved space: use what was drawn
                built = trials(observed)
            study = optuna.create_study(direction=direction)
            study.add_trials(built)
            try:
                result = optuna.importance.get_param_importances(
                    study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()
                )
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                return None, f"Optuna could not evaluate importance ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    finally:
        optuna.logging.set_verbosity(level)
    result = {k: float(v) for k, v in result.items() if math.isfinite(v)}
    if not result or sum(result.values()) <= 0:
        return None, "the complete trials' objective does not vary with their hyperparameters"
    return result, "PED-ANOVA"


# --------------------------------------------------------------------------- content


def _empty_row() -> dict[str, Any]:
    return {c: None for c in COLUMNS}


def build_content(data: StudyData, references: list[Reference], *, top: int = 10, seed: int = 0) -> Content:
    """Rows, comparisons, seeds, compute and summary of study `data`."""
    best_ref = best_reference(references)
    defaults = space_defaults(data.space)
    ranked = rank_runs(data)
    best = next((item for _, item in ranked if isinstance(item, Run) and item.status == "complete"), None)
    best_baseline, no_baseline = choose_best_baseline(data, best)
    pareto = set(data.pareto or [])
    objective = data.objective_name

    # ----- statistical comparisons: the top-K complete runs against the best baseline
    baseline_predictions = None
    if best_baseline is not None:
        path = best_baseline.artifact("test_predictions")
        baseline_predictions = None if path is None else stats.load_predictions(path)
    comparisons: dict[str, stats.Comparison] = {}
    complete = [item for _, item in ranked if isinstance(item, Run) and item.status == "complete"]
    for run in complete[:top]:
        if best_baseline is None:
            comparisons[run.record.run_id] = stats.not_available(no_baseline)
            continue
        if run.record.run_id == best_baseline.record.run_id:
            comparisons[run.record.run_id] = stats.not_available("this is the best baseline run itself")
            continue
        why = incomparable(run.record, best_baseline.record)
        if why is not None:
            comparisons[run.record.run_id] = stats.not_available(f"not tested against {best_baseline.name}: {why}")
            continue
        path = run.artifact("test_predictions")
        mine = None if path is None else stats.load_predictions(path)
        if baseline_predictions is None:
            comparison = stats.not_available(f"no test predictions for the baseline run {best_baseline.name}")
        else:
            comparison = stats.compare(mine, baseline_predictions, seed=seed)
        comparisons[run.record.run_id] = comparison

    everyone = {r.record.run_id: r for r in [*data.runs, *data.baselines]}
    groups, member = seed_groups(list(everyone.values()), best_baseline, seed=seed)

    # ----- rows
    rows: list[dict[str, Any]] = []
    ranked_ids = set()
    for rank, item in ranked:
        if isinstance(item, Failure):
            row = _empty_row()
            row.update(
                rank=rank, kind="trial", run=item.run, trial_number=item.number, study=data.name, status="failed",
                key_hyperparameters=key_hyperparameters(item.hyperparameters, defaults),
                hyperparameters=dict(item.hyperparameters), note=f"failed: {item.error}",
                engine=(data.settings or {}).get("engine"), objective=objective, verdict="n/a",
            )
            rows.append(row)
            continue
        ranked_ids.add(item.record.run_id)
        row = _run_row(item, rank, references, best_ref, best_baseline, defaults, objective, pareto, member)
        comparison = comparisons.get(item.record.run_id)
        _fill_comparison(row, comparison, item, top)
        rows.append(row)

    # ----- reference block: each reported configuration beside its reproduced runs
    for ref in references:
        rows.append(_reference_row(ref, references, best_ref, best_baseline))
        for run in data.baselines:
            if run.name == ref.name and run.record.run_id not in ranked_ids:
                row = _run_row(run, None, references, best_ref, best_baseline, defaults, objective, pareto, member)
                row["verdict"] = None
                rows.append(row)
    for run in data.baselines:  # reproduced runs of presets not in the table (custom preset files)
        if run.record.run_id not in ranked_ids and run.name not in {r.name for r in references}:
            rows.append(_run_row(run, None, references, best_ref, best_baseline, defaults, objective, pareto, member))

    best_comparison = comparisons.get(best.record.run_id) if best is not None else None
    compute = compute_used(data)
    ensembles = ensemble_rows(data, best, best_baseline, seed=seed)
    content = Content(
        data=data,
        references=references,
        rows=rows,
        comparisons=[
            {"run": r.name, "rank": next(k for k, it in ranked if it is r), "test_accuracy": r.record.test_accuracy,
             **comparisons[r.record.run_id].to_dict()}
            for r in complete[:top]
        ],
        best=best,
        best_baseline=best_baseline,
        no_baseline=no_baseline,
        best_comparison=best_comparison,
        seed_groups=groups,
        ensembles=ensembles,
        compute=compute,
        summary=[],
        footnotes=[],
        notes=list(data.notes),
        top=top,
    )
    content.summary = _summary(content, best_ref, defaults)
    content.footnotes = _footnotes(content, best_ref)
    return content


def _run_row(run: Run, rank, references, best_ref, best_baseline, defaults, objective, pareto, member) -> dict[str, Any]:
    r = run.record
    family_ref = family_reference(references, r.family)
    test = r.test_accuracy
    like = best_baseline is not None and incomparable(r, best_baseline.record) is None
    row = _empty_row()
    group = member.get(r.run_id)
    sees = list(r.selection_sees)
    notes = []
    if sees:
        notes.append(f"{SELECTION_MARK} selection saw {', '.join(sees)} ({r.protocol} protocol)")
    if r.status == "failed" and r.error:
        notes.append(f"failed: {r.error}")
    if r.kind == "baseline" and r.reported_test_accuracy is not None:
        notes.append(f"reproduced {r.run} (reported {r.reported_test_accuracy:.4f})")
    validated = "val" in r.evaluation or not r.evaluation
    if not validated:
        notes.append(f"trained on every training image for {r.epochs_run} epoch(s), no validation ({r.protocol} protocol)")
    row.update(
        rank=rank,
        kind=r.kind,
        run=r.run,
        trial_number=run.number,
        study=r.study,
        engine=r.search.get("engine") or ("baseline" if r.kind == "baseline" else None),
        sampler=r.search.get("sampler") or r.search.get("tuner"),
        pruner=r.search.get("pruner"),
        family=r.family,
        key_hyperparameters=(
            key_hyperparameters(r.hyperparameters, defaults) if r.hyperparameters else describe_model(r.family, r.model, r.train)
        ),
        hyperparameters=dict(r.hyperparameters) if r.hyperparameters else {"model": r.model, "train": r.train},
        status=r.status,
        epochs=r.epochs_run,
        max_epochs=run.max_epochs,
        budget=r.budget.get("name"),
        protocol=r.protocol,
        objective=r.search.get("objective") or objective,
        objective_value=run.objective,
        best_val_accuracy=r.best_val_accuracy if math.isfinite(r.best_val_accuracy) and validated else None,
        test_accuracy=test,
        test_images=(r.evaluation.get("test") or {}).get("n"),
        test_private_accuracy=_metric(r, "test_private"),
        test_public_accuracy=_metric(r, "test_public"),
        macro_f1=_metric(r, "test", "macro_f1"),
        params=r.params,
        train_seconds=r.train_seconds,
        wall_seconds=r.wall_seconds,
        images_per_second=r.images_per_second,
        best_reference=best_ref.name if best_ref else None,
        diff_best_reference_pts=points(test, best_ref.accuracy if best_ref else None),
        family_reference=family_ref.name if family_ref else None,
        diff_family_reference_pts=points(test, family_ref.accuracy if family_ref else None),
        baseline_run=best_baseline.name if like else None,
        diff_baseline_pts=points(test, best_baseline.record.test_accuracy) if like else None,
        seed_runs=group["n"] if group else None,
        seed_mean_test_accuracy=group["mean_test_accuracy"] if group else None,
        seed_std_test_accuracy=group["std_test_accuracy"] if group else None,
        selection_used_test=bool(sees),
        pareto=r.run in pareto if pareto else None,
        note="; ".join(notes) or None,
    )
    if row["pareto"]:
        row["note"] = "; ".join(x for x in (f"{PARETO_MARK} on the study's Pareto front", row["note"]) if x)
    return row


def _fill_comparison(row: dict[str, Any], comparison: stats.Comparison | None, run: Run, top: int) -> None:
    if comparison is None:
        row["verdict"] = "n/a"
        if run.status == "pruned":
            row["comparison_note"] = "pruned: not evaluated on the test set"
        else:
            row["comparison_note"] = f"not tested: beyond the top {top}"
        return
    row.update(
        verdict=comparison.verdict,
        ci_low_pts=comparison.ci_low,
        ci_high_pts=comparison.ci_high,
        mcnemar_b=comparison.b if comparison.verdict != "n/a" else None,
        mcnemar_c=comparison.c if comparison.verdict != "n/a" else None,
        p_value=comparison.p_value,
        test_method=comparison.test or None,
        images_compared=comparison.n or None,
        comparison_note=comparison.reason or None,
    )


def _reference_row(ref: Reference, refs: list[Reference], best_ref: Reference | None, best_baseline: Run | None) -> dict[str, Any]:
    row = _empty_row()
    family_ref = family_reference(refs, ref.family)
    # A reported number is a full-budget run of the full dataset under its protocol.
    like = (best_baseline is not None and best_baseline.record.protocol == ref.protocol
            and best_baseline.record.budget.get("name") == "full" and not best_baseline.record.budget.get("train_limit"))
    sees = PROTOCOL_SEES.get(ref.protocol, ())
    notes = ["reported by the reference study"]
    if sees:
        notes.insert(0, f"{SELECTION_MARK} selection saw {', '.join(sees)} ({ref.protocol} protocol)")
    row.update(
        kind="reported",
        run=ref.name,
        engine="reference",
        family=ref.family,
        key_hyperparameters=describe_model(ref.family, ref.model, ref.train),
        hyperparameters={"model": ref.model, "train": ref.train},
        status="reported",
        epochs=ref.train.get("epochs"),
        max_epochs=ref.train.get("epochs"),
        budget="full",
        protocol=ref.protocol,
        test_accuracy=ref.accuracy,
        test_images=None,
        params=ref.params,
        best_reference=best_ref.name if best_ref else None,
        diff_best_reference_pts=points(ref.accuracy, best_ref.accuracy if best_ref else None),
        family_reference=family_ref.name if family_ref else None,
        diff_family_reference_pts=points(ref.accuracy, family_ref.accuracy if family_ref else None),
        baseline_run=best_baseline.name if like else None,
        diff_baseline_pts=points(ref.accuracy, best_baseline.record.test_accuracy) if like else None,
        selection_used_test=bool(sees),
        note="; ".join(notes),
    )
    return row


def fmt_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def signed(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:+.{digits}f}"


def _summary(c: Content, best_ref: Reference | None, defaults: dict[str, Any]) -> list[str]:
    d = c.data
    k = c.compute
    lines = []
    settings = d.settings or {}
    runs = d.ranked
    what = "a search" if d.is_search else "a baseline study"
    first = runs[0].record if runs else None
    engine = settings.get("engine") or (first.search.get("engine") if first else None)
    budget = settings.get("budget", {}).get("name") if isinstance(settings.get("budget"), dict) else None
    budget = budget or (first.budget.get("name") if first else None)
    parts = [f"engine {engine}"] if engine else []
    if first and first.search.get("sampler"):
        parts.append(f"sampler {first.search['sampler']}")
    if first and first.search.get("pruner"):
        parts.append(f"pruner {first.search['pruner']}")
    if d.is_search:
        parts.append(f"objective {d.objective_name}" + (" and parameter count" if d.multi_objective else ""))
    if budget:
        parts.append(f"budget {budget}")
    if first:
        parts.append(f"protocol {first.protocol}")
    if d.confirm is not None:
        cf = d.confirm
        parts = [p for p in parts if p.startswith(("budget", "protocol"))]
        lines.append(
            f"Study {d.name} (a confirmation of study {cf.get('source')}: its top {len(cf.get('top') or [])} "
            f"({', '.join(cf.get('top') or [])}) and the reference {cf.get('reference')} of {cf.get('baseline_study')}, "
            f"{cf.get('seeds')} seeds each; {', '.join(parts)}): {len(d.runs)} run(s), {k['copied']} copied from the "
            f"source studies (their seed-0 runs), {k['runs']} trained here ({k['complete']} complete, {k['failed']} failed)."
        )
    else:
        lines.append(
            f"Study {d.name} ({what}; {', '.join(parts)}): {k['runs'] + len(d.failures)} run(s), "
            f"{k['complete']} complete, {k['pruned']} pruned, {k['failed']} failed"
            + (f"; {d.running} still running, so this report is a snapshot" if d.running else "")
            + "."
        )
    best = c.best
    if best is None:
        lines.append("No run has completed yet, so there is no best trial to compare.")
    else:
        r = best.record
        config = (
            ", ".join(f"{key}={short(v)}" for key, v in r.hyperparameters.items())
            if r.hyperparameters else describe_model(r.family, r.model, r.train)
        )
        test = r.test_accuracy
        halves = ""
        if _metric(r, "test_private") is not None and _metric(r, "test_public") is not None:
            halves = f" (PrivateTest {_metric(r, 'test_private'):.4f}, PublicTest {_metric(r, 'test_public'):.4f})"
        n = (r.evaluation.get("test") or {}).get("n")
        value = f"{best.objective:.4f}" if best.objective is not None else "–"
        line = f"Best {('trial' if r.kind == 'trial' else 'run')}: {r.run}, {objective_label(d.objective_name)} {value}; configuration: {config}."
        lines.append(line)
        if test is not None:
            family_ref = family_reference(c.references, r.family)
            refs = []
            if best_ref:
                refs.append(f"{signed(points(test, best_ref.accuracy))} points against the best reference {best_ref.name} ({best_ref.accuracy:.4f})")
            if family_ref and family_ref is not best_ref:
                refs.append(f"{signed(points(test, family_ref.accuracy))} against the {r.family} reference {family_ref.name} ({family_ref.accuracy:.4f})")
            lines.append(f"Its test accuracy is {test:.4f} on {n:,} images{halves}: " + "; ".join(refs) + ".")
        if c.best_baseline is None:
            lines.append(f"No paired test against a reproduced baseline: {c.no_baseline}.")
        elif c.best_baseline.record.run_id == best.record.run_id:
            lines.append("The best run is itself the best reproduced baseline, the one the others are tested against.")
        elif c.best_comparison is not None:
            b = c.best_baseline.record
            cmp = c.best_comparison
            if cmp.verdict == "n/a":
                lines.append(f"Against the best reproduced baseline {b.run} ({b.budget.get('name')} budget, test {b.test_accuracy:.4f}): no verdict, {cmp.reason}.")
            else:
                lines.append(
                    f"Against the best reproduced baseline {b.run} ({b.budget.get('name')} budget, test {b.test_accuracy:.4f}) "
                    f"on {cmp.n:,} paired test images: {signed(cmp.diff_points)} points, 95% bootstrap interval "
                    f"[{signed(cmp.ci_low)}, {signed(cmp.ci_high)}], McNemar p = {cmp.p_value:.3g} (b = {cmp.b}, c = {cmp.c}); "
                    f"verdict: {cmp.verdict}" + (f" ({cmp.reason})" if cmp.reason else "") + "."
                )
    compute = (
        f"Compute: {fmt_seconds(k['wall_seconds'])} of run time ({fmt_seconds(k['train_seconds'])} training), "
        f"{k['epochs_used']:,} epoch(s) trained"
    )
    if k["pruned"]:
        saved = k["epochs_saved_by_pruning"]
        share = saved / k["epochs_without_pruning"] if k["epochs_without_pruning"] else 0.0
        compute += (
            f"; without pruning the same runs would have trained {k['epochs_without_pruning']:,} epochs, "
            f"so pruning saved {saved:,} ({100 * share:.0f}%)"
        )
    elif d.is_search:
        compute += f" (no trial was pruned; {k['epochs_without_pruning']:,} at full length)"
    if k["grid_epochs"]:
        compute += (
            f"; a full grid over the space (about {k['grid_points']:,} points x {k['max_epochs']} epochs) "
            f"would have trained about {k['grid_epochs']:,} epochs"
        )
    lines.append(compute + ".")
    t = k.get("time")
    if t is not None:
        rest = sorted(((n, v) for n, v in t["phases"].items() if n != "train" and v > 0), key=lambda x: -x[1])
        capacity = t["span_seconds"] * max(t["workers"], 1)
        parts = [f"{n} {100 * v / capacity:.1f}%" for n, v in rest[:5]]
        if t["idle_seconds"] > 0.005 * capacity:
            parts.append(f"workers idle {100 * t['idle_seconds'] / capacity:.1f}%")
        lines.append(
            f"Time: training steps took {100 * t['train_share']:.1f}% of the study's wall time "
            f"({fmt_seconds(t['phases']['train'])} of {fmt_seconds(t['span_seconds'])} x {t['workers']} "
            f"worker(s); {100 * t['train_share_of_runs']:.1f}% of the {t['runs']} runs' own time); "
            f"the rest: {', '.join(parts)}."
        )
    seen = sum(1 for row in c.rows if row["selection_used_test"] and row["kind"] != "reported")
    if seen:
        lines.append(
            f"{seen} measured row(s) are marked {SELECTION_MARK}: their model selection used the test set "
            f"(the reference DenseNet protocol), so their test accuracy is not a clean held-out number."
        )
    tested = [g for g in c.seed_groups if g["diff_points"] is not None]
    bar = next((g for g in c.seed_groups if g["role"] == "reference"), None)
    if tested:
        top = max(tested, key=lambda g: g["mean_val_accuracy"])  # chosen on validation, as always
        against = (
            f"the reference {bar['runs'][0].rsplit('-seed', 1)[0]} ({bar['n']} seeds: {bar['mean_test_accuracy']:.4f} "
            f"± {bar['std_test_accuracy']:.4f})" if bar else f"the reference run {top['reference']}"
        )
        lines.append(
            f"Over seeds: the best configuration by mean validation accuracy, {top['runs'][0].rsplit('-seed', 1)[0]}, "
            f"has test accuracy {top['mean_test_accuracy']:.4f} ± {top['std_test_accuracy']:.4f} ({top['n']} seeds) "
            f"against {against}: {top['diff_points']:+.2f} points, 95% interval over seeds and images "
            f"[{top['ci_low']:+.2f}, {top['ci_high']:+.2f}]; verdict: {top['verdict']}."
        )
    for e in c.ensembles:
        if e["test_accuracy"] is None:
            continue
        against = ""
        if e["best_single_diff_points"] is not None:
            against = (
                f"; against the best single model {e['best_single']} ({e['best_single_accuracy']:.4f}): "
                f"{e['best_single_diff_points']:+.2f} points [{e['best_single_ci_low']:+.2f}, {e['best_single_ci_high']:+.2f}], "
                f"{e['best_single_verdict']}"
            )
        lines.append(
            f"Ensemble {e['name']} ({', '.join(e['members'])}{', flip TTA' if e['tta_hflip'] else ''}): test accuracy "
            f"{e['test_accuracy']:.4f}{against}."
        )
    if budget and budget != "full":
        lines.append(
            f"Runs trained at the {budget} budget: their test accuracies are not comparable with the reported "
            f"full-budget numbers; the differences to the references show the gap, not a result."
        )
    return lines


def _footnotes(c: Content, best_ref: Reference | None) -> list[str]:
    notes = [
        f"Differences are in percentage points of test accuracy: 100 x (row - reference). Best reference: "
        f"{best_ref.name} ({best_ref.accuracy:.4f})." if best_ref else "No reported references.",
        "Family reference: the best reported configuration of the row's family ("
        + ", ".join(f"{f}: {r.name} {r.accuracy:.4f}" for f, r in sorted({r.family: family_reference(c.references, r.family) for r in c.references}.items()))
        + ").",
    ]
    if c.best_baseline is not None:
        b = c.best_baseline.record
        notes.append(
            f"Baseline: the reproduced run {b.run} ({b.run_id}, {b.budget.get('name')} budget, study {b.study}) "
            f"with test accuracy {b.test_accuracy:.4f}, the best reproduced baseline."
        )
    notes.append(
        f"Verdict (top {c.top} complete runs): from the paired bootstrap 95% interval of the accuracy difference "
        f"against that baseline on the same test images ({stats.RESAMPLES:,} resamples): beats if the interval "
        f"lies above 0, loses if below, ties otherwise. McNemar's test (exact binomial below "
        f"{stats.EXACT_BELOW} discordant pairs, else chi-square with continuity correction) is given beside it."
    )
    notes.append(
        f"{SELECTION_MARK} Model selection (best-epoch checkpoint) used a validation split that overlaps the test "
        f"set (the reference DenseNet protocol, seed-densenet): the test accuracy of such a row is not a clean number."
    )
    if c.data.pareto:
        notes.append(f"{PARETO_MARK} On the study's Pareto front (validation objective against parameter count).")
    notes.append("Ranking is by the study's validation objective; test accuracy is never used to rank.")
    return notes


# --------------------------------------------------------------------------- figures


def figure_specs(c: Content) -> list[FigureSpec]:
    """The report's figures, each with its caption, or the reason it is not drawn."""
    from ferhpo.report import figures as fg

    d = c.data
    objective = d.objective_name
    runs = d.ranked
    specs: list[FigureSpec] = []
    label = "trial" if d.is_search else "run"

    # optimization history
    pts = [(r.number if r.number is not None else i, r.objective, r.status)
           for i, r in enumerate(runs) if r.objective is not None and r.status in ("complete", "pruned")]
    spec = FigureSpec(
        "optimization_history", "Optimization history",
        f"{objective_label(objective).capitalize()} of each {label} in the order the study ran them (crosses: pruned {label}s at the "
        f"best epoch they reached), with the best value found so far.",
    )
    if pts:
        baseline = None
        bb, best = c.best_baseline, c.best
        if (bb is not None and best is not None and objective == "val_accuracy"
                and bb.record.protocol == best.record.protocol and bb.record.budget == best.record.budget):
            baseline = (f"best baseline {bb.name} (validation)", bb.record.best_val_accuracy)
        spec.draw = lambda path, pts=pts, baseline=baseline: fg.optimization_history(pts, path, objective=objective, baseline=baseline)
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
        "intermediate_values", "Validation curves",
        f"{objective_label(objective).capitalize()} after each epoch of every {label}: complete {label}s solid, pruned ones dashed "
        f"and ending in a cross at the epoch where the pruner stopped them.",
    )
    if curves:
        spec.draw = lambda path, curves=curves: fg.intermediate_curves(curves, path, objective=objective)
    else:
        spec.reason = "no run recorded per-epoch validation values"
    specs.append(spec)

    # importance
    values, why = importance(d, runs)
    spec = FigureSpec(
        "param_importance", "Hyperparameter importance",
        f"Share of the variation in {objective_label(objective)} across complete trials attributed to each "
        f"hyperparameter (Optuna's PED-ANOVA evaluator; few trials make it a rough guide).",
    )
    if values:
        spec.draw = lambda path, values=values, why=why: fg.param_importance(values, path, method=why)
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
        "parallel_coordinates", "Parallel coordinates of the top trials",
        f"Hyperparameters of the top {len(top)} complete trials, one line each, coloured by {objective_label(objective)}; "
        f"each axis spans the values drawn (categories evenly spaced).{capped}",
    )
    if len(top) >= 2 and axes:
        trials = [(r.name, r.record.hyperparameters, r.objective) for r in top]
        spec.draw = lambda path, trials=trials, axes=axes: fg.parallel_coordinates(trials, axes, path, objective=objective)
    else:
        spec.reason = (
            f"needs at least 2 complete trials with searched hyperparameters; the study has {len(top)}"
            if len(top) < 2 else "every top trial drew the same hyperparameters"
        )
    specs.append(spec)

    # learning curves: best trial against the best baseline
    spec = FigureSpec(
        "learning_curves", "Learning curves",
        "Accuracy and loss per epoch of the best trial"
        + (f" ({c.best.name})" if c.best else "")
        + (f" against the best reproduced baseline ({c.best_baseline.name})" if c.best_baseline and c.best
           and c.best_baseline.record.run_id != c.best.record.run_id else "")
        + ": validation solid, training dashed.",
    )
    histories = []
    if c.best is not None and c.best.record.history.get("loss"):
        histories.append((c.best.name, c.best.record.history))
        bb = c.best_baseline
        if bb is not None and bb.record.run_id != c.best.record.run_id and bb.record.history.get("loss"):
            histories.append((f"{bb.name} (baseline)", bb.record.history))
    if histories:
        spec.draw = lambda path, histories=histories: fg.learning_curves_compared(histories, path)
    else:
        spec.reason = "no complete run with a training history"
    specs.append(spec)

    # accuracy against parameters
    measured_trials = [(r.name, r.record.params, r.record.test_accuracy) for r in runs
                       if r.status == "complete" and r.record.test_accuracy is not None and r.record.kind == "trial"]
    ranked_ids = {r.record.run_id for r in runs}
    baseline_runs = [r for r in runs if r.record.kind == "baseline"] + [r for r in d.baselines if r.record.run_id not in ranked_ids]
    measured_base = [(f"{r.name} ({r.record.budget.get('name')})", r.record.params, r.record.test_accuracy)
                     for r in baseline_runs if r.status == "complete" and r.record.test_accuracy is not None]
    reported = [(ref.name, ref.params, ref.accuracy) for ref in c.references]
    measured = [(p, a) for _, p, a in measured_trials + measured_base]
    front = fg.pareto_front(measured)
    highlight = [(r.record.params, r.record.test_accuracy) for r in runs
                 if d.pareto and r.name in d.pareto and r.record.test_accuracy is not None]
    groups = [("trials", "trial", measured_trials), ("reproduced baselines", "baseline", measured_base),
              ("reported references", "reported", reported)]
    spec = FigureSpec(
        "accuracy_vs_params", "Accuracy against parameter count",
        "Test accuracy against parameter count (log scale) of the complete trials, the reproduced baselines and "
        "the reported references, with the Pareto front of the measured runs (fewer parameters and higher accuracy).",
    )
    if measured or reported:
        spec.draw = lambda path, groups=groups, front=front, highlight=highlight: fg.accuracy_vs_params(
            groups, path, front=front, highlight=highlight)
    else:
        spec.reason = "no run has a test accuracy"
    specs.append(spec)

    # where the time went
    t = c.compute.get("time")
    spec = FigureSpec(
        "time_phases", "Where the time went",
        "Wall time of each run by phase (process start-up and imports, data, model build, graph tracing, "
        "training steps, validation, test evaluation, writing results, the rest), and the study's wall time "
        "(its span times its workers) split the same way, idle workers included.",
    )
    if t is not None:
        spec.draw = lambda path, t=t: fg.time_phases(t["per_run"], path, idle=t["idle_seconds"])
    else:
        spec.reason = "the records carry no phase times (made before ferhpo recorded them)"
    specs.append(spec)

    # confusion matrix of the best trial
    spec = FigureSpec(
        "confusion_matrix", "Confusion matrix of the best trial",
        f"Test-set confusion matrix of the best {label}"
        + (f" ({c.best.name})" if c.best else "")
        + ": rows are the true classes, columns the predicted ones; each cell gives the count and the share of its row.",
    )
    test = (c.best.record.evaluation.get("test") or {}) if c.best is not None else {}
    if test.get("confusion"):
        classes = list((test.get("per_class_recall") or {}).keys()) or [str(i) for i in range(len(test["confusion"]))]
        title = f"{c.best.name}: test accuracy {100 * test['accuracy']:.1f}% on {test.get('n', 0):,} images"
        spec.draw = lambda path, conf=test["confusion"], classes=classes, title=title: fg.confusion_matrix(conf, classes, path, title=title)
    else:
        spec.reason = "the best run has no test confusion matrix (no complete run yet)"
    specs.append(spec)
    return specs


#: More axes than this make parallel coordinates unreadable.
MAX_PARALLEL_AXES = 8


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
