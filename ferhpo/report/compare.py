"""Who is compared with whom: the references, the best baseline, like with like, seeds, ensembles.

A run is tested only against a run of the same budget, split protocol and data
(`why_incomparable`); the bar is the best reproduced baseline of that kind (the
highest test accuracy: the hardest bar). `ferhpo confirm` picks its reference with
the same rule.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from ferhpo.report import stats
from ferhpo.report.content import Reference
from ferhpo.report.load import Run, StudyData


def best_reference(refs: list[Reference]) -> Reference | None:
    return max(refs, key=lambda r: r.accuracy) if refs else None


def family_reference(refs: list[Reference], family: str) -> Reference | None:
    same = [r for r in refs if r.family == family]
    return max(same, key=lambda r: r.accuracy) if same else None


def points_difference(a: float | None, b: float | None) -> float | None:
    """Difference in percentage points, 100 * (a - b)."""
    return None if a is None or b is None else 100.0 * (a - b)


def budget_text(budget: dict[str, Any]) -> str:
    limits = [f"{k.split('_')[0]} <= {budget[k]:,}" for k in ("train_limit", "val_limit", "test_limit") if budget.get(k)]
    epochs = f"{budget['epochs']} epochs" if budget.get("epochs") else "the recipe's epochs"
    return f"{budget.get('name')} ({', '.join([epochs, *limits])})"


def why_incomparable(a, b) -> str | None:
    """Why records `a` and `b` may not be tested against each other, or None when they are
    like with like: the same budget (epochs and images), split protocol and data."""
    if a.budget != b.budget:
        return f"budgets differ: {budget_text(a.budget)} against {budget_text(b.budget)}"
    if a.protocol != b.protocol:
        return f"protocols differ: {a.protocol} against {b.protocol}"
    if a.data_fingerprint != b.data_fingerprint:
        return "they were trained on different data (fingerprints differ)"
    return None


def hardest_bar(best, candidates: list) -> Any | None:
    """The baseline record to test record `best` against: one of its budget, protocol
    and data (any, when `best` is None) with a test accuracy, the highest when several
    (the hardest bar); None when there is none. The report and `ferhpo confirm` both
    choose with it."""
    matching = [r for r in candidates if r.test_accuracy is not None and (best is None or why_incomparable(best, r) is None)]
    return max(matching, key=lambda r: (r.test_accuracy, r.created), default=None)


def held_text(records: list) -> str:
    """The budgets and protocols `records` were trained at, for a message saying none matched."""
    return "; ".join(sorted({f"{budget_text(r.budget)} / {r.protocol}" for r in records})) or "none"


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
    bar = hardest_bar(best.record if best is not None else None, [r.record for r in candidates])
    if bar is None:
        assert best is not None  # every candidate has a test accuracy
        return None, (
            f"the baseline runs of {data.baseline_study} were trained at other budgets or protocols "
            f"({held_text([r.record for r in candidates])}) than the best run ({budget_text(best.record.budget)} / "
            f"{best.record.protocol}), so there is no paired test against them; train one at the same budget and "
            f"protocol (e.g. `ferhpo baseline --space SPACE --budget {best.record.budget.get('name')} "
            f"--protocol {best.record.protocol}`)"
        )
    return next(r for r in candidates if r.record is bar), ""


def top_comparisons(
    complete: list[Run], best_baseline: Run | None, no_baseline: str, *, seed: int = 0
) -> dict[str, stats.Comparison]:
    """Each of the `complete` runs (the top K) tested against the best baseline on the same
    test images, by run_id; a comparison that cannot be made says why."""
    baseline_predictions = None
    if best_baseline is not None:
        path = best_baseline.artifact("test_predictions")
        baseline_predictions = None if path is None else stats.load_predictions(path)
    comparisons: dict[str, stats.Comparison] = {}
    for run in complete:
        if best_baseline is None:
            comparisons[run.record.run_id] = stats.not_available(no_baseline)
            continue
        if run.record.run_id == best_baseline.record.run_id:
            comparisons[run.record.run_id] = stats.not_available("this is the best baseline run itself")
            continue
        why = why_incomparable(run.record, best_baseline.record)
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
    return comparisons


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
    matrix_b = stats.correct_matrix([stats.load_predictions(p) if (p := r.artifact("test_predictions")) else None for r in bar])
    out, member = [], {}
    for members in groups.values():
        if len(members) < 2:
            continue
        members = sorted(members, key=lambda m: (m.record.train.get("seed", 0), m.record.created))
        # every member has a test accuracy (the grouping above keeps only those)
        accs = [a for a in (m.record.test_accuracy for m in members) if a is not None]
        vals = [m.record.best_val_accuracy for m in members]
        is_reference = bool(bar) and seed_key(members[0].record) == seed_key(bar[0].record)
        group: dict[str, Any] = {
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
            "reference": None,
            "reference_seeds": None,
            "images_compared": None,
            "diff_points": None,
            "ci_low": None,
            "ci_high": None,
            "verdict": "n/a",
            "reason": "" if bar else "no reproduced baseline to compare with",
        }
        if bar and not is_reference:
            why = why_incomparable(members[0].record, bar[0].record)
            matrix_a = stats.correct_matrix(
                [stats.load_predictions(p) if (p := m.artifact("test_predictions")) else None for m in members]
            )
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
                        reference=bar[0].name,
                        reference_seeds=len(bar),
                        images_compared=int(common.size),
                        diff_points=diff,
                        ci_low=low,
                        ci_high=high,
                        verdict=stats.verdict_from_interval(low, high),
                    )
        out.append(group)
        for m in members:
            member[m.record.run_id] = group
    out.sort(key=lambda g: (g["role"] != "reference", -g["mean_test_accuracy"]))
    return out, member


def members_text(ensemble: dict[str, Any]) -> str:
    """An ensemble's members, each with its weight when greedy selection picked it more than once."""
    weights = ensemble.get("weights") or [1] * len(ensemble["members"])
    return ", ".join(m if w == 1 else f"{m} (x{w})" for m, w in zip(ensemble["members"], weights))


def ensemble_rows(data: StudyData, best: Run | None, baseline: Run | None, *, seed: int = 0) -> list[dict[str, Any]]:
    """The study's ensembles, each tested (paired bootstrap, McNemar) against the best
    single model by validation and against the best reproduced baseline."""
    root = data.runs[0].root if data.runs else Path("studies")
    rows = []
    for e in data.ensembles:
        ev = e.get("evaluation") or {}
        acc = lambda split, ev=ev: (ev.get(split) or {}).get("accuracy")  # noqa: E731
        rel = (e.get("artifacts") or {}).get("test_predictions")
        mine = stats.load_predictions(root / data.name / rel) if rel else None
        row = {
            "name": e.get("name"),
            "members": list(e.get("members") or []),
            "weights": list(e.get("weights") or [1] * len(e.get("members") or [])),
            "selection": e.get("selection") or "top",
            "candidates": list(e.get("candidates") or e.get("members") or []),
            "tta_hflip": bool(e.get("tta_hflip")),
            "val_accuracy": acc("val"),
            "test_accuracy": acc("test"),
            "test_public_accuracy": acc("test_public"),
            "test_private_accuracy": acc("test_private"),
            "macro_f1": (ev.get("test") or {}).get("macro_f1"),
            "test_images": (ev.get("test") or {}).get("n"),
            "note": e.get("validation_note") or "",
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
