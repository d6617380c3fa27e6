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


def _arguments(p: argparse.ArgumentParser) -> None:
    from ferhpo.config import BUDGETS

    add_data_options(p)
    p.add_argument("--study", required=True, help="the search whose top configurations to confirm")
    add_storage_argument(p)
    p.add_argument("--top", type=positive_int, default=3, metavar="K", help="configurations to confirm, best by validation (default 3)")
    p.add_argument("--seeds", type=positive_int, default=3, metavar="N",
                   help="seeds per configuration, the run's own seed first (default 3); the study's own run of that "
                   "seed is reused, not retrained")
    p.add_argument("--budget", choices=list(BUDGETS), help="budget of the runs (default: the study's trials' budget)")
    p.add_argument("--baseline-study", metavar="NAME",
                   help="study holding the reference run to confirm against (default: 'baseline'); its best run at "
                   "the study's budget and protocol is retrained with the same seeds")
    p.add_argument("--confirm-study", metavar="NAME", help="study the runs go into (default: <study>-confirm)")
    p.add_argument("--refit", action="store_true",
                   help="then train each configuration once more on every training image (no validation) for its best "
                   "epoch count, as '<run>-refit' (protocol refit): the model to use after selecting on holdout")
    p.add_argument("--force", action="store_true", help="retrain (and recopy) runs already in the confirm study")
    p.add_argument("--json", action="store_true", help="print JSON on stdout (progress still goes to stderr)")


def _run(args: argparse.Namespace) -> int:
    from ferhpo import store
    from ferhpo.cli.baseline import _Progress, _run_summary, _summary_line
    from ferhpo.config import get_budget
    from ferhpo.engines import confirm
    from ferhpo.report.load import open_storage

    quiet_optuna()
    storage = open_storage(args.storage)  # never creates a SQLite file that is not there
    source = store.open_study(args.study, args.storage, create=False, storage=storage)
    settings = source.user_attrs.get("ferhpo.search") or {}
    objective = (settings.get("objectives") or ["val_accuracy"])[0]
    top = confirm.top_trials(source, args.top, objective)
    baseline_name = args.baseline_study or "baseline"
    baselines_study = store.open_study(baseline_name, args.storage, create=False, storage=storage)
    baselines = [r for r in store.records(baselines_study, states=("complete",)) if r.kind == "baseline"]
    reference = confirm.reference_run(baselines, top[0])
    budget = get_budget(args.budget) if args.budget else None
    data = load_data(args)
    items = confirm.plan(top, reference, seeds=args.seeds, budget=budget, fingerprint=data.info.fingerprint,
                         refit=args.refit)
    name = args.confirm_study or f"{args.study}-confirm"
    import_keras()
    study = store.open_study(name, args.storage, storage=storage)
    study.set_user_attr(
        confirm.CONFIRM_ATTR,
        {"source": args.study, "baseline_study": baseline_name, "top": [r.run for r in top],
         "reference": reference.run, "seeds": args.seeds},
    )
    out = sys.stderr if args.json else sys.stdout
    print(
        f"confirming {', '.join(r.run for r in top)} of {args.study} and {reference.run} of {baseline_name} with "
        f"{args.seeds} seed(s) each into study {name!r}: {len(items)} run(s)",
        file=out,
    )
    finished = {r.run_key for r in store.records(study, states=("complete",))}  # one read, not one per run
    todo = [i for i in items if i.reuse is None and (args.force or i.key not in finished)]
    progress = _Progress(total_epochs=sum(i.train.epochs for i in todo), runs=len(todo), out=out)
    results = []

    def on_done(item, record, how):
        if how == "finished":
            progress.write(f"{item.name}: already in {name} ({record.run_id}); skipped (--force retrains)")
        elif how == "copied":
            progress.write(f"{item.name}: the source's own run, copied from {item.source.study}/{item.source.run}")
        else:
            progress.write(_summary_line(record))
        results.append({**_run_summary(record, skipped=how != "trained"), "how": how, "seed": item.seed, "role": item.role})

    try:
        confirm.run(
            study, items, data=data, force=args.force, on_done=on_done,
            callbacks=lambda item: [progress.callback(item.name, item.train.epochs)],
        )
    except KeyboardInterrupt:
        progress.close()
        kept = ", ".join(r["name"] for r in results) or "none"
        print(
            f"{PROG}: interrupted; the partial run was discarded; kept in study '{name}': {kept}; rerun the same "
            f"command to continue",
            file=sys.stderr,
        )
        return 130
    progress.close()
    print(f"done: {len(results)} run(s) in study {name!r}; `{PROG} report --study {name}` gives mean ± sd per configuration",
          file=out)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


COMMAND = Command("confirm", "retrain a study's top configurations and its reference with several seeds", _arguments, _run)
