"""The report's prose: the summary, one function per paragraph, and the table's footnotes.

Every number here comes from the content `ferhpo.report.analysis` built; nothing is
computed anew, so the prose and the table cannot disagree.
"""

from __future__ import annotations

from ferhpo.formatting import format_brief, format_seconds, format_signed, objective_label
from ferhpo.report import stats
from ferhpo.report.compare import best_reference, family_reference, members_text, points_difference
from ferhpo.report.content import PARETO_MARK, SELECTION_MARK, Reference, ReportContent, describe_model, split_metric


def summary(c: ReportContent) -> list[str]:
    """The summary's sentences, in reading order."""
    return [
        study_paragraph(c),
        *best_run_paragraph(c, best_reference(c.references)),
        compute_paragraph(c),
        *time_paragraph(c),
        *fidelity_paragraph(c),
        *selection_paragraph(c),
        *seeds_paragraph(c),
        *ensembles_paragraph(c),
        *budget_paragraph(c),
    ]


def _budget_name(c: ReportContent) -> str | None:
    """The study's budget: from its search settings, else from its first run."""
    settings = c.data.settings or {}
    first = c.data.ranked[0].record if c.data.ranked else None
    budget = settings.get("budget", {}).get("name") if isinstance(settings.get("budget"), dict) else None
    return budget or (first.budget.get("name") if first else None)


def study_paragraph(c: ReportContent) -> str:
    """What the study is (engine, sampler, pruner, objective, budget, protocol) and how its runs ended."""
    d = c.data
    k = c.compute
    settings = d.settings or {}
    first = d.ranked[0].record if d.ranked else None
    engine = settings.get("engine") or (first.search.get("engine") if first else None)
    budget = _budget_name(c)
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
        return (
            f"Study {d.name} (a confirmation of study {cf.get('source')}: its top {len(cf.get('top') or [])} "
            f"({', '.join(cf.get('top') or [])}) and the reference {cf.get('reference')} of {cf.get('baseline_study')}, "
            f"{cf.get('seeds')} seeds each; {', '.join(parts)}): {len(d.runs)} run(s), {k['copied']} copied from the "
            f"source studies (their seed-0 runs), {k['runs']} trained here ({k['complete']} complete, {k['failed']} failed)."
        )
    what = "a search" if d.is_search else "a baseline study"
    return (
        f"Study {d.name} ({what}; {', '.join(parts)}): {k['runs'] + len(d.failures)} run(s), "
        f"{k['complete']} complete, {k['pruned']} pruned, {k['failed']} failed"
        + (f"; {d.running} still running, so this report is a snapshot" if d.running else "")
        + "."
    )


def best_run_paragraph(c: ReportContent, best_ref: Reference | None) -> list[str]:
    """The best run by validation: its configuration, its test accuracy against the
    references, and its paired test against the best reproduced baseline."""
    best = c.best
    if best is None:
        return ["No run has completed yet, so there is no best trial to compare."]
    lines = []
    r = best.record
    config = (
        ", ".join(f"{key}={format_brief(v)}" for key, v in r.hyperparameters.items())
        if r.hyperparameters
        else describe_model(r.family, r.model, r.train)
    )
    test = r.test_accuracy
    halves = ""
    if split_metric(r, "test_private") is not None and split_metric(r, "test_public") is not None:
        halves = f" (PrivateTest {split_metric(r, 'test_private'):.4f}, PublicTest {split_metric(r, 'test_public'):.4f})"
    n = (r.evaluation.get("test") or {}).get("n")
    value = f"{best.objective:.4f}" if best.objective is not None else "–"
    lines.append(
        f"Best {('trial' if r.kind == 'trial' else 'run')}: {r.run}, {objective_label(c.data.objective_name)} {value}; "
        f"configuration: {config}."
    )
    if test is not None:
        family_ref = family_reference(c.references, r.family)
        refs = []
        if best_ref:
            refs.append(
                f"{format_signed(points_difference(test, best_ref.accuracy))} points against the best reference "
                f"{best_ref.name} ({best_ref.accuracy:.4f})"
            )
        if family_ref and family_ref is not best_ref:
            refs.append(
                f"{format_signed(points_difference(test, family_ref.accuracy))} against the {r.family} reference "
                f"{family_ref.name} ({family_ref.accuracy:.4f})"
            )
        lines.append(f"Its test accuracy is {test:.4f} on {n:,} images{halves}: " + "; ".join(refs) + ".")
    if c.best_baseline is None:
        lines.append(f"No paired test against a reproduced baseline: {c.no_baseline}.")
    elif c.best_baseline.record.run_id == best.record.run_id:
        lines.append("The best run is itself the best reproduced baseline, the one the others are tested against.")
    elif c.best_comparison is not None:
        b = c.best_baseline.record
        cmp = c.best_comparison
        if cmp.verdict == "n/a":
            lines.append(
                f"Against the best reproduced baseline {b.run} ({b.budget.get('name')} budget, test {b.test_accuracy:.4f}): "
                f"no verdict, {cmp.reason}."
            )
        else:
            lines.append(
                f"Against the best reproduced baseline {b.run} ({b.budget.get('name')} budget, test {b.test_accuracy:.4f}) "
                f"on {cmp.n:,} paired test images: {format_signed(cmp.diff_points)} points, 95% bootstrap interval "
                f"[{format_signed(cmp.ci_low)}, {format_signed(cmp.ci_high)}], McNemar p = {cmp.p_value:.3g} "
                f"(b = {cmp.b}, c = {cmp.c}); verdict: {cmp.verdict}" + (f" ({cmp.reason})" if cmp.reason else "") + "."
            )
    return lines


def compute_paragraph(c: ReportContent) -> str:
    """Run time and epochs trained, what pruning saved, and what a full grid would have cost."""
    k = c.compute
    text = (
        f"Compute: {format_seconds(k['wall_seconds'])} of run time ({format_seconds(k['train_seconds'])} training), "
        f"{k['epochs_used']:,} epoch(s) trained"
    )
    if k["pruned"]:
        saved = k["epochs_saved_by_pruning"]
        share = saved / k["epochs_without_pruning"] if k["epochs_without_pruning"] else 0.0
        text += (
            f"; without pruning the same runs would have trained {k['epochs_without_pruning']:,} epochs, "
            f"so pruning saved {saved:,} ({100 * share:.0f}%)"
        )
    elif c.data.is_search:
        text += f" (no trial was pruned; {k['epochs_without_pruning']:,} at full length)"
    if k["grid_epochs"]:
        text += (
            f"; a full grid over the space (about {k['grid_points']:,} points x {k['max_epochs']} epochs) "
            f"would have trained about {k['grid_epochs']:,} epochs"
        )
    return text + "."


def time_paragraph(c: ReportContent) -> list[str]:
    """The share of the study's wall time spent in training steps, and the largest other phases."""
    t = c.compute.get("time")
    if t is None:
        return []
    rest = sorted(((n, v) for n, v in t["phases"].items() if n != "train" and v > 0), key=lambda x: -x[1])
    capacity = t["span_seconds"] * max(t["workers"], 1)
    parts = [f"{n} {100 * v / capacity:.1f}%" for n, v in rest[:5]]
    if t["idle_seconds"] > 0.005 * capacity:
        parts.append(f"workers idle {100 * t['idle_seconds'] / capacity:.1f}%")
    return [
        f"Time: training steps took {100 * t['train_share']:.1f}% of the study's wall time "
        f"({format_seconds(t['phases']['train'])} of {format_seconds(t['span_seconds'])} x {t['workers']} "
        f"worker(s); {100 * t['train_share_of_runs']:.1f}% of the {t['runs']} runs' own time); "
        f"the rest: {', '.join(parts)}."
    ]


def selection_paragraph(c: ReportContent) -> list[str]:
    """How many measured rows had their model selected on test images."""
    seen = sum(1 for row in c.rows if row["selection_used_test"] and row["kind"] != "reported")
    if not seen:
        return []
    return [
        f"{seen} measured row(s) are marked {SELECTION_MARK}: their model selection used the test set "
        f"(the reference DenseNet protocol), so their test accuracy is not a clean held-out number."
    ]


def seeds_paragraph(c: ReportContent) -> list[str]:
    """The best configuration over seeds (chosen on mean validation accuracy) against the reference's seeds."""
    tested = [g for g in c.seed_groups if g["diff_points"] is not None]
    if not tested:
        return []
    bar = next((g for g in c.seed_groups if g["role"] == "reference"), None)
    top = max(tested, key=lambda g: g["mean_val_accuracy"])  # chosen on validation, as always
    against = (
        f"the reference {bar['runs'][0].rsplit('-seed', 1)[0]} ({bar['n']} seeds: {bar['mean_test_accuracy']:.4f} "
        f"± {bar['std_test_accuracy']:.4f})"
        if bar
        else f"the reference run {top['reference']}"
    )
    return [
        f"Over seeds: the best configuration by mean validation accuracy, {top['runs'][0].rsplit('-seed', 1)[0]}, "
        f"has test accuracy {top['mean_test_accuracy']:.4f} ± {top['std_test_accuracy']:.4f} ({top['n']} seeds) "
        f"against {against}: {top['diff_points']:+.2f} points, 95% interval over seeds and images "
        f"[{top['ci_low']:+.2f}, {top['ci_high']:+.2f}]; verdict: {top['verdict']}."
    ]


def fidelity_paragraph(c: ReportContent) -> list[str]:
    """With rungs: how many runs each rung holds, how well each rung ranked the next one's
    configurations, and the regret of choosing at the lowest rung."""
    f = c.fidelity
    if not f:
        return []
    held = ", ".join(f"{len(rows)} at rung {level}" for level, rows in f["rungs"].items())
    epochs = f" of {', '.join(map(str, f['rung_epochs']))} epochs" if f["rung_epochs"] else ""
    parts = []
    for p in f["pairs"]:
        if p["spearman"] is None:
            parts.append(f"rung {p['lower']} to {p['upper']}: {p['n']} configuration(s) at both, too few to correlate")
            continue
        names = ("spearman_interval", "kendall_interval")
        ci = {name: f" [{p[name][0]:+.2f}, {p[name][1]:+.2f}]" if p[name] else "" for name in names}
        parts.append(
            f"rung {p['lower']} to {p['upper']} ({p['n']} configurations): Spearman {p['spearman']:+.2f}"
            f"{ci['spearman_interval']}, Kendall {p['kendall']:+.2f}{ci['kendall_interval']}"
        )
    lines = [f"Rungs{epochs}: complete runs {held}; validation rank correlation, " + "; ".join(parts) + "."]
    r = f["regret_lowest"]
    if r is not None:
        moved = (
            ""
            if r["lower_overall_pick_reached_top"]
            else f" The lowest rung's own best, {r['lower_overall_pick_config']}, did not reach the top rung."
        )
        lines.append(
            f"Regret of choosing at the lowest rung: {r['regret_points']:+.2f} test points ({r['lower_pick']}, the "
            f"lowest rung's pick among the {r['n']} configuration(s) of the top rung, against {r['top_pick']}, the "
            f"top rung's pick).{moved}"
        )
    return lines


def ensembles_paragraph(c: ReportContent) -> list[str]:
    """Each evaluated ensemble's test accuracy, against the best single model."""
    lines = []
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
            f"Ensemble {e['name']} ({members_text(e)}{', flip TTA' if e['tta_hflip'] else ''}): test accuracy "
            f"{e['test_accuracy']:.4f}{against}."
        )
    return lines


def budget_paragraph(c: ReportContent) -> list[str]:
    """A reduced budget's caveat: its numbers are not comparable with the reported full-budget ones."""
    budget = _budget_name(c)
    if not budget or budget == "full":
        return []
    return [
        f"Runs trained at the {budget} budget: their test accuracies are not comparable with the reported "
        f"full-budget numbers; the differences to the references show the gap, not a result."
    ]


def footnotes(c: ReportContent) -> list[str]:
    """What the table's differences, verdicts and marks mean."""
    best_ref = best_reference(c.references)
    # each family's best: never None, the family comes from one of the references
    family_refs = {r.family: family_reference(c.references, r.family) for r in c.references}
    notes = [
        f"Differences are in percentage points of test accuracy: 100 x (row - reference). Best reference: "
        f"{best_ref.name} ({best_ref.accuracy:.4f})."
        if best_ref
        else "No reported references.",
        "Family reference: the best reported configuration of the row's family ("
        + ", ".join(f"{f}: {r.name} {r.accuracy:.4f}" for f, r in sorted(family_refs.items()) if r is not None)
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
