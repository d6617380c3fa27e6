"""From a study's records to the report's content: ranked rows beside the references.

`build_content` puts together what the other modules compute: the comparisons
(`compare`), the compute used (`compute`) and the prose (`summary`); the rows of the
table, one per run and per reported reference, are made here. `ferhpo.report.render`
turns the content into Markdown, HTML, CSV and JSON, and `ferhpo.report.figure_specs`
into figures.

Ranking uses the study's own objective (validation), never test accuracy: test numbers
are reported, not selected on. Complete runs come first (best objective first), then
pruned ones (best objective reached before pruning), then failed ones.
"""

from __future__ import annotations

import math
from typing import Any

from ferhpo import store
from ferhpo.report import stats
from ferhpo.report.compare import (
    best_reference,
    choose_best_baseline,
    ensemble_rows,
    family_reference,
    points_difference,
    seed_groups,
    top_comparisons,
    why_incomparable,
)
from ferhpo.report.compute import compute_used
from ferhpo.report.content import (
    PARETO_MARK,
    SELECTION_MARK,
    Reference,
    ReportContent,
    describe_model,
    key_hyperparameters,
    space_defaults,
    split_metric,
)
from ferhpo.report.fidelity import fidelity
from ferhpo.report.load import Failure, Run, StudyData
from ferhpo.report.summary import footnotes, summary

#: Test subsets that model selection saw under each reference protocol (the reported
#: rows have no record to say so; ferhpo.splits.make_splits is the source of truth).
PROTOCOL_SEES = {"seed-densenet": ("test", "test_public", "test_private"), "canonical": ("test", "test_public")}

#: Every column of the machine-readable rows (CSV, JSON), in order.
COLUMNS = (
    "rank",
    "kind",
    "run",
    "trial_number",
    "study",
    "engine",
    "sampler",
    "pruner",
    "family",
    "key_hyperparameters",
    "hyperparameters",
    "status",
    "epochs",
    "max_epochs",
    "budget",
    "protocol",
    "objective",
    "objective_value",
    "best_val_accuracy",
    "test_accuracy",
    "test_images",
    "test_private_accuracy",
    "test_public_accuracy",
    "macro_f1",
    "params",
    "train_seconds",
    "wall_seconds",
    "images_per_second",
    "best_reference",
    "diff_best_reference_pts",
    "family_reference",
    "diff_family_reference_pts",
    "baseline_run",
    "diff_baseline_pts",
    "verdict",
    "ci_low_pts",
    "ci_high_pts",
    "mcnemar_b",
    "mcnemar_c",
    "p_value",
    "test_method",
    "images_compared",
    "comparison_note",
    "seed_runs",
    "seed_mean_test_accuracy",
    "seed_std_test_accuracy",
    "selection_used_test",
    "pareto",
    "note",
)

_STATUS_ORDER = {"complete": 0, "pruned": 1, "failed": 2}


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


def rank_runs(data: StudyData) -> list[tuple[int, Run | Failure]]:
    """The study's runs in report order with their rank (1 = best)."""
    ranked: list[Run] = store.best_first(
        data.ranked,
        lambda run: run.objective,
        maximize=not (data.directions and data.directions[0] == "minimize"),
        # a longer rung's validation value is not comparable to a shorter one's: highest rung first
        group=lambda run: (_STATUS_ORDER.get(run.status, 3), store.higher_rung_first(run.record)),
        tiebreak=lambda run: (run.number if run.number is not None else math.inf, run.name),
    )
    ordered: list[Run | Failure] = [*ranked, *sorted(data.failures, key=lambda f: f.number)]
    return list(enumerate(ordered, 1))


def _empty_row() -> dict[str, Any]:
    return {c: None for c in COLUMNS}


def build_content(data: StudyData, references: list[Reference], *, top: int = 10, seed: int = 0) -> ReportContent:
    """Rows, comparisons, seeds, compute and summary of study `data`."""
    best_ref = best_reference(references)
    defaults = space_defaults(data.space)
    ranked = rank_runs(data)
    best = next((item for _, item in ranked if isinstance(item, Run) and item.status == "complete"), None)
    best_baseline, no_baseline = choose_best_baseline(data, best)
    pareto = set(data.pareto or [])
    objective = data.objective_name

    # ----- statistical comparisons: the top-K complete runs against the best baseline
    complete = [item for _, item in ranked if isinstance(item, Run) and item.status == "complete"]
    comparisons = top_comparisons(complete[:top], best_baseline, no_baseline, seed=seed)

    everyone = {r.record.run_id: r for r in [*data.runs, *data.baselines]}
    groups, member = seed_groups(list(everyone.values()), best_baseline, seed=seed)

    # ----- rows
    rows: list[dict[str, Any]] = []
    ranked_ids = set()
    for rank, item in ranked:
        if isinstance(item, Failure):
            row = _empty_row()
            row.update(
                rank=rank,
                kind="trial",
                run=item.run,
                trial_number=item.number,
                study=data.name,
                status="failed",
                key_hyperparameters=key_hyperparameters(item.hyperparameters, defaults),
                hyperparameters=dict(item.hyperparameters),
                note=f"failed: {item.error}",
                engine=(data.settings or {}).get("engine"),
                objective=objective,
                verdict="n/a",
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
    content = ReportContent(
        data=data,
        references=references,
        rows=rows,
        comparisons=[
            {
                "run": r.name,
                "rank": next(k for k, it in ranked if it is r),
                "test_accuracy": r.record.test_accuracy,
                **comparisons[r.record.run_id].to_dict(),
            }
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
        fidelity=fidelity(data.ranked, (data.settings or {}).get("rungs"), seed=seed) if data.is_search else None,
    )
    content.summary = summary(content)
    content.footnotes = footnotes(content)
    return content


def _run_row(run: Run, rank, references, best_ref, best_baseline, defaults, objective, pareto, member) -> dict[str, Any]:
    r = run.record
    family_ref = family_reference(references, r.family)
    test = r.test_accuracy
    like = best_baseline is not None and why_incomparable(r, best_baseline.record) is None
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
        test_private_accuracy=split_metric(r, "test_private"),
        test_public_accuracy=split_metric(r, "test_public"),
        macro_f1=split_metric(r, "test", "macro_f1"),
        params=r.params,
        train_seconds=r.train_seconds,
        wall_seconds=r.wall_seconds,
        images_per_second=r.images_per_second,
        best_reference=best_ref.name if best_ref else None,
        diff_best_reference_pts=points_difference(test, best_ref.accuracy if best_ref else None),
        family_reference=family_ref.name if family_ref else None,
        diff_family_reference_pts=points_difference(test, family_ref.accuracy if family_ref else None),
        baseline_run=best_baseline.name if like else None,
        diff_baseline_pts=points_difference(test, best_baseline.record.test_accuracy) if like else None,
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


def _reference_row(
    ref: Reference, refs: list[Reference], best_ref: Reference | None, best_baseline: Run | None
) -> dict[str, Any]:
    row = _empty_row()
    family_ref = family_reference(refs, ref.family)
    # A reported number is a full-budget run of the full dataset under its protocol.
    baseline = (
        best_baseline
        if (
            best_baseline is not None
            and best_baseline.record.protocol == ref.protocol
            and best_baseline.record.budget.get("name") == "full"
            and not best_baseline.record.budget.get("train_limit")
        )
        else None
    )
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
        diff_best_reference_pts=points_difference(ref.accuracy, best_ref.accuracy if best_ref else None),
        family_reference=family_ref.name if family_ref else None,
        diff_family_reference_pts=points_difference(ref.accuracy, family_ref.accuracy if family_ref else None),
        baseline_run=baseline.name if baseline is not None else None,
        diff_baseline_pts=points_difference(ref.accuracy, baseline.record.test_accuracy) if baseline is not None else None,
        selection_used_test=bool(sees),
        note="; ".join(notes),
    )
    return row
