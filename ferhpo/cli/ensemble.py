"""`ferhpo ensemble`: average a study's top-K models (optionally with flip averaging), or
the ones greedy selection picks among them on the validation images, and measure the
ensemble on the validation and test images, for the report."""

from __future__ import annotations

import argparse
import json

from ferhpo.cli.common import (
    Command,
    add_data_options,
    add_storage_argument,
    import_keras,
    load_data,
    positive_int,
    quiet_optuna,
)


def _ensemble_arguments(p: argparse.ArgumentParser) -> None:
    add_data_options(p)
    p.add_argument("--study", required=True, help="study whose finished runs to average (a search or a confirm study)")
    add_storage_argument(p)
    p.add_argument(
        "--top", type=positive_int, default=3, metavar="K", help="members: the K runs of best validation accuracy (default 3)"
    )
    p.add_argument(
        "--select",
        choices=("top", "greedy"),
        default="top",
        help="top: all K, equally (default); greedy: those forward selection with replacement picks among the K on the "
        "validation images, weighted by how often (Caruana et al. 2004; it needs the runs of one split)",
    )
    p.add_argument("--tta", action="store_true", help="also average each image's probabilities with its mirror image's")
    p.add_argument("--json", action="store_true", help="print the ensemble's summary as JSON")


def _ensemble_run(args: argparse.Namespace) -> int:
    from ferhpo import store
    from ferhpo.report.load import open_storage

    quiet_optuna()
    storage = open_storage(args.storage)
    study = store.open_study(args.study, args.storage, create=False, storage=storage)
    import_keras()
    from ferhpo.deploy import ensemble, rebuild
    from ferhpo.report.compare import members_text

    records = rebuild.select_records(study, top=args.top)
    data = load_data(args)
    result = ensemble.evaluate(records, data, tta_hflip=args.tta, select=args.select)
    recorded = ensemble.record(study, result)
    if args.json:
        print(json.dumps(recorded, indent=2))
        return 0
    evaluation = recorded["evaluation"]
    val = f"val {evaluation['val']['accuracy']:.4f}, " if "val" in evaluation else ""
    halves = ""
    if "test_public" in evaluation and "test_private" in evaluation:
        halves = f" (public {evaluation['test_public']['accuracy']:.4f}, private {evaluation['test_private']['accuracy']:.4f})"
    print(
        f"{recorded['name']} of {members_text(recorded)}{' with flip averaging' if args.tta else ''}: "
        f"{val}test {evaluation['test']['accuracy']:.4f} on {evaluation['test']['n']:,} images{halves}"
    )
    weight = dict(zip(recorded["members"], recorded["weights"]))
    for r in records:
        picked = "" if args.select == "top" else f", weight {weight.get(r.run, 0)}"
        # a lower rung's run may be untested (`search --test-from-rung`)
        test = "–" if r.test_accuracy is None else f"{r.test_accuracy:.4f}"
        print(f"  {r.run}: val {r.best_val_accuracy:.4f}, test {test}{picked}")
    print(f"recorded in study {args.study!r}; `ferhpo report --study {args.study}` sets it beside the single models")
    return 0


COMMAND = Command("ensemble", "average a study's top runs into one predictor and measure it", _ensemble_arguments, _ensemble_run)
