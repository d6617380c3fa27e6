"""Ensembles of a study's runs: the top-K models averaged, optionally with flip averaging.

`evaluate` rebuilds the members as one inference model (`rebuild.inference_model`),
predicts the validation and test images of the members' split, and measures it like
a run; `record` writes its test predictions and summary under
`studies/<study>/<name>/` (atomically) and lists it in the study's "ferhpo.ensembles"
attribute, where the report finds it and sets it beside the single models.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np

from ferhpo import store
from ferhpo.atomic import atomic_open, write_json
from ferhpo.config import Budget
from ferhpo.data import FER2013
from ferhpo.deploy import DeployError
from ferhpo.deploy.rebuild import inference_model, predict
from ferhpo.splits import limit_splits, make_splits
from ferhpo.training import classification_metrics

ENSEMBLES_ATTR = store.ENSEMBLES_ATTR


def _images(budget: dict) -> dict:
    """What of a budget decides the images a run is evaluated on: all but its epochs."""
    return {k: v for k, v in budget.items() if k != "epochs"}


def ensemble_name(records: list[store.RunRecord], tta_hflip: bool) -> str:
    return f"ensemble-top{len(records)}" + ("-tta" if tta_hflip else "")


def evaluate(records: list[store.RunRecord], data: FER2013, *, tta_hflip: bool = False, root: Path = store.STUDIES_DIR) -> dict:
    """The ensemble's metrics on the validation and test images of its members' split.

    Members must share the data, protocol and the images of their budget (not its
    epochs: the runs of a search's rungs are evaluated on the same images). When their split seeds differ,
    each member trained on images the others validate on, so no validation accuracy
    is given (test accuracy stays clean: no member saw a test image)."""
    first = records[0]
    for r in records:
        if r.data_fingerprint != data.info.fingerprint:
            raise DeployError(
                f"run {r.run} was trained on data {r.data_fingerprint}, but the data given is {data.info.fingerprint}; "
                f"expected the dataset the study used (--data)"
            )
        if r.protocol != first.protocol or _images(r.budget) != _images(first.budget):
            raise DeployError(
                f"runs {first.run} and {r.run} differ in protocol or in the images of their budget; expected the members "
                f"of one ensemble to share them (their epochs may differ: a search's rungs)"
            )
    budget = Budget(**first.budget)
    seeds = sorted({int(r.split_seed) for r in records})
    splits = make_splits(data, first.protocol, seeds[0])
    splits = limit_splits(splits, train=budget.train_limit, val=budget.val_limit, test=budget.test_limit, seed=seeds[0])
    one_split = len(seeds) == 1
    val = splits.val if one_split else splits.val[:0]
    both = np.concatenate([val, splits.test])
    model = inference_model(records, tta_hflip=tta_hflip, root=root)
    predicted = np.argmax(predict(model, data.images[both][..., None]), axis=-1)
    val_pred, test_pred = predicted[: len(val)], predicted[len(val) :]
    evaluation = {"test": classification_metrics(data.labels[splits.test], test_pred)}
    if one_split:
        evaluation["val"] = classification_metrics(data.labels[val], val_pred)
    position = {int(i): k for k, i in enumerate(splits.test)}
    for half in ("test_public", "test_private"):
        idx = getattr(splits, half)
        if len(idx):
            evaluation[half] = classification_metrics(data.labels[idx], test_pred[[position[int(i)] for i in idx]])
    return {
        "name": ensemble_name(records, tta_hflip),
        "members": [r.run for r in records],
        "member_run_ids": [r.run_id for r in records],
        "tta_hflip": tta_hflip,
        "protocol": first.protocol,
        "budget": first.budget,
        "split_seeds": seeds,
        "validation_note": "" if one_split else "members trained on different splits: no clean validation images",
        "evaluation": evaluation,
        "files": data.files[splits.test],
        "labels": data.labels[splits.test],
        "predictions": test_pred,
        "data_fingerprint": data.info.fingerprint,
    }


def record(study, result: dict, root: Path = store.STUDIES_DIR) -> dict:
    """Write the ensemble's test predictions and summary; list it in the study."""
    name = result["name"]
    folder = Path(root) / study.study_name / name
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_open(folder / "test_predictions.npz") as f:
        np.savez(f, files=result["files"], labels=result["labels"], predictions=result["predictions"].astype(np.int8))
    summary = {k: v for k, v in result.items() if k not in ("files", "labels", "predictions")}
    summary["artifacts"] = {"test_predictions": f"{name}/test_predictions.npz", "summary": f"{name}/ensemble.json"}
    summary["created"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    write_json(folder / "ensemble.json", summary)
    known = dict(study.user_attrs.get(ENSEMBLES_ATTR) or {})
    known[name] = summary
    study.set_user_attr(ENSEMBLES_ATTR, known)
    return summary
