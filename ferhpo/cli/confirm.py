"""`ferhpo confirm`: retrain a study's top configurations and its reference over several seeds."""

from __future__ import annotations

import argparse
import json
import sys

from ferhpo.cli.common import (
    PROG,
    Command,
    add_data_options,
    add_storage_argument,
    import_keras,
    load_data,
    positive_int,
    quiet_optuna,
)


def _confirm_arguments(p: argparse.ArgumentParser) -> None:
    from ferhpo.config import BUDGETS

    add_data_options(p)
    p.add_argument("--study", required=True, help="the search whose top configurations to confirm")
    add_storage_argument(p)
    p.add_argument(
        "--top", type=positive_int, default=3, metavar="K", help="configurations to confirm, best by validation (default 3)"
    )
    p.add_argument(
        "--seeds",
        type=positive_int,
        default=3,
        metavar="N",
        help="seeds per configuration, the run's own seed first (default 3); the study's own run of that "
        "seed is reused, not retrained",
    )
    p.add_argument("--budget", choices=list(BUDGETS), help="budget of the runs (default: the study's trials' budget)")
    p.add_argument(
        "--baseline-study",
        metavar="NAME",
        help="study holding the reference run to confirm against (default: 'baseline'); its best run at "
        "the study's budget and protocol is retrained with the same seeds",
    )
    p.add_argument("--confirm-study", metavar="NAME", help="study the runs go into (default: <study>-confirm)")
    p.add_argument(
        "--refit",
        action="store_true",
        help="then train each configuration once more on every training image (no validation) for its best "
        "epoch count, as '<run>-refit' (protocol refit): the model to use after selecting on holdout",
    )
    p.add_argument("--force", action="store_true", help="retrain (and recopy) runs already in the confirm study")
    p.add_argument("--json", action="store_true", help="print JSON on stdout (progress still goes to stderr)")


def _confirm_run(args: argparse.Namespace) -> int:
    from ferhpo import store
    from ferhpo.cli.baseline import TrainingProgress, run_summary, summary_line
    from ferhpo.config import get_budget
    from ferhpo.engines import confirm
    from ferhpo.report.load import open_storage

    quiet_optuna()
    storage = open_storage(args.storage)  # never creates a SQLite file that is not there
    source_study = store.open_study(args.study, args.storage, create=False, storage=storage)
    search_settings = source_study.user_attrs.get("ferhpo.search") or {}
    objective = (search_settings.get("objectives") or ["val_accuracy"])[0]
    top_runs = confirm.top_trials(source_study, args.top, objective)
    baseline_name = args.baseline_study or "baseline"
    baseline_study = store.open_study(baseline_name, args.storage, create=False, storage=storage)
    baseline_runs = [r for r in store.records(baseline_study, states=("complete",)) if r.kind == "baseline"]
    reference = confirm.reference_run(baseline_runs, top_runs[0])
    budget = get_budget(args.budget) if args.budget else None
    data = load_data(args)
    plan = confirm.plan(top_runs, reference, seeds=args.seeds, budget=budget, fingerprint=data.info.fingerprint, refit=args.refit)
    confirm_name = args.confirm_study or f"{args.study}-confirm"
    import_keras()
    study = store.open_study(confirm_name, args.storage, storage=storage)
    study.set_user_attr(
        confirm.CONFIRM_ATTR,
        {
            "source": args.study,
            "baseline_study": baseline_name,
            "top": [r.run for r in top_runs],
            "reference": reference.run,
            "seeds": args.seeds,
        },
    )
    out = sys.stderr if args.json else sys.stdout
    print(
        f"confirming {', '.join(r.run for r in top_runs)} of {args.study} and {reference.run} of {baseline_name} with "
        f"{args.seeds} seed(s) each into study {confirm_name!r}: {len(plan)} run(s)",
        file=out,
    )
    finished_keys = {r.run_key for r in store.records(study, states=("complete",))}  # one read, not one per run
    to_train = [item for item in plan if item.reuse is None and (args.force or item.key not in finished_keys)]
    progress = TrainingProgress(total_epochs=sum(item.train.epochs for item in to_train), runs=len(to_train), out=out)
    results = []

    def on_done(item, record, how):
        if how == "finished":
            progress.write(f"{item.name}: already in {confirm_name} ({record.run_id}); skipped (--force retrains)")
        elif how == "copied":
            progress.write(f"{item.name}: the source's own run, copied from {item.source.study}/{item.source.run}")
        else:
            progress.write(summary_line(record))
        results.append({**run_summary(record, skipped=how != "trained"), "how": how, "seed": item.seed, "role": item.role})

    try:
        confirm.run(
            study,
            plan,
            data=data,
            force=args.force,
            on_done=on_done,
            callbacks=lambda item: [progress.callback(item.name, item.train.epochs)],
        )
    except KeyboardInterrupt:
        progress.close()
        kept = ", ".join(r["name"] for r in results) or "none"
        print(
            f"{PROG}: interrupted; the partial run was discarded; kept in study '{confirm_name}': {kept}; rerun the same "
            f"command to continue",
            file=sys.stderr,
        )
        return 130
    progress.close()
    print(
        f"done: {len(results)} run(s) in study {confirm_name!r}; `{PROG} report --study {confirm_name}` gives mean ± sd "
        "per configuration",
        file=out,
    )
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


COMMAND = Command(
    "confirm", "retrain a study's top configurations and its reference with several seeds", _confirm_arguments, _confirm_run
)
