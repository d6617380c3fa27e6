"""`ferhpo export`: a study's best run (or a trial, or an ensemble of the top runs) as
a model people can use: `.keras`, a TensorFlow SavedModel or ONNX, with a model card."""

from __future__ import annotations

import argparse
import json

from ferhpo.cli.common import Command, add_storage_argument, import_keras, non_negative_int, positive_int, quiet_optuna

FORMATS = ("keras", "saved_model", "onnx")


def _export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--study", required=True, help="study whose finished runs to export")
    add_storage_argument(p)
    members = p.add_mutually_exclusive_group()
    members.add_argument("--trial", type=non_negative_int, metavar="N", help="export trial N of a search (run 'trial-N')")
    members.add_argument("--run", metavar="NAME", help="export the run of this name (e.g. a baseline preset)")
    members.add_argument(
        "--top",
        type=positive_int,
        metavar="K",
        help="average the K runs of best validation accuracy (default: the best run alone)",
    )
    p.add_argument(
        "--tta",
        action="store_true",
        help="average each image's probabilities with its mirror image's (inside the exported model)",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="keras",
        help="keras (model.keras), saved_model (TensorFlow SavedModel) or onnx (model.onnx; needs "
        "pip install 'ferhpo[onnx]'); default keras",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="new or empty folder to write the model and its card into")
    p.add_argument("--json", action="store_true", help="print the model card as JSON")


def _accuracy_text(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _export_run(args: argparse.Namespace) -> int:
    from ferhpo import store

    quiet_optuna()
    study = store.open_study(args.study, args.storage, create=False)
    import_keras()
    from ferhpo.deploy import export, rebuild

    records = rebuild.select_records(study, trial=args.trial, run=args.run, top=args.top)
    measured_evaluation = next(
        (
            e.get("evaluation")
            for e in (study.user_attrs.get(store.ENSEMBLES_ATTR) or {}).values()
            if e.get("member_run_ids") == [r.run_id for r in records]
            and bool(e.get("tta_hflip")) == args.tta
            and len(set(e.get("weights") or [1])) == 1  # an export averages its members equally
        ),
        None,
    )
    card = export.export(
        records,
        fmt=args.format,
        out=args.out,
        tta_hflip=args.tta,
        study_name=args.study,
        storage=store.storage_url(args.storage),
        evaluation=measured_evaluation,
    )
    if args.json:
        print(json.dumps({"path": str(args.out), **card}, indent=2))
        return 0
    flip = ", flip averaging" if args.tta else ""
    print(f"wrote {args.format} model to {args.out}/ ({card['file']}, model_card.json, model_card.md)")
    print(
        f"{len(records)} member(s) from study {args.study}{flip}; input uint8 (N, 48, 48, 1), output "
        f"probabilities of {', '.join(card['classes'])}"
    )
    for member in card["members"]:
        print(
            f"  {member['run']} ({member['run_id']}): val {_accuracy_text(member['validation_accuracy'])}, "
            f"test {_accuracy_text(member['test_accuracy'])}"
        )
    verified = card.get("verified")
    if verified:
        print(f"checked: reloaded, max difference {verified['max_abs_diff']:.2g} on {verified['images']} images")
    else:
        print("not checked: onnxruntime is not installed here")
    return 0


COMMAND = Command(
    "export",
    "write a study's best run or an ensemble as a model to use (keras, saved_model, onnx)",
    _export_arguments,
    _export_run,
)
