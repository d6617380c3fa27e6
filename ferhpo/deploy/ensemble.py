"""Ensembles of a study's runs: the top-K models averaged, optionally with flip averaging,
or chosen from them by validation (greedy selection with replacement, Caruana et al. 2004).

`evaluate` rebuilds each member as an inference model (`rebuild.inference_model`),
predicts the validation and test images of the members' split, averages the members'
probabilities (weighted by how often greedy selection chose each) and measures the
average like a run; `record` writes its test predictions and summary under
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


#: How the members are chosen among the candidates: all of them, or greedily by validation.
SELECTIONS = ("top", "greedy")


def ensemble_name(records: list[store.RunRecord], tta_hflip: bool, select: str = "top") -> str:
    return f"ensemble-{select}{len(records)}" + ("-tta" if tta_hflip else "")


def greedy_weights(probabilities: np.ndarray, labels: np.ndarray, rounds: int) -> np.ndarray:
    """How often each candidate enters the ensemble: forward selection with replacement
    (Caruana et al., ICML 2004) on validation images. Each round adds the candidate whose
    addition gives the average of highest accuracy (the earlier candidate on a tie: they
    come best first by their own validation), and selection stops when no addition
    raises the accuracy or after `rounds` rounds. The first round picks the most
    accurate single candidate.

    `probabilities` is (candidates, images, classes), `labels` (images,)."""
    assert probabilities.ndim == 3 and len(labels) == probabilities.shape[1] and rounds >= 1
    counts = np.zeros(len(probabilities), dtype=np.int64)
    total = np.zeros(probabilities.shape[1:], dtype=np.float64)
    best = -1.0
    for _ in range(rounds):
        accuracy = [float(np.mean(np.argmax(total + p, axis=-1) == labels)) for p in probabilities]
        pick = max(range(len(accuracy)), key=lambda i: (accuracy[i], -i))
        if accuracy[pick] <= best:
            break
        counts[pick] += 1
        total += probabilities[pick]
        best = accuracy[pick]
    return counts


def evaluate(
    records: list[store.RunRecord],
    data: FER2013,
    *,
    tta_hflip: bool = False,
    select: str = "top",
    root: Path = store.STUDIES_DIR,
) -> dict:
    """The ensemble's metrics on the validation and test images of its members' split.

    Members must share the data, protocol and the images of their budget (not its
    epochs: the runs of a search's rungs are evaluated on the same images). When their split seeds differ,
    each member trained on images the others validate on, so no validation accuracy
    is given (test accuracy stays clean: no member saw a test image).

    `select="greedy"` keeps of `records` (the candidates) those `greedy_weights` picks
    on the validation images, weighted by how often it picked each; it needs one split.
    Its validation accuracy is then the one it was chosen for, so it is optimistic."""
    if select not in SELECTIONS:
        raise DeployError(f"select must be one of {', '.join(SELECTIONS)}, but got select={select!r}")
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
    if select == "greedy" and not (one_split and len(splits.val)):
        why = "have no validation images" if one_split else f"trained on different splits (seeds {seeds})"
        raise DeployError(
            f"greedy selection chooses on validation images, but the candidates {why}; expected the runs of one "
            f"split with a validation set (a search's, not a confirm study's seeds)"
        )
    val = splits.val if one_split else splits.val[:0]
    both = np.concatenate([val, splits.test])
    probabilities = np.stack(
        [predict(inference_model([r], tta_hflip=tta_hflip, root=root), data.images[both][..., None]) for r in records]
    )
    weights = (
        greedy_weights(probabilities[:, : len(val)], data.labels[val], rounds=2 * len(records))
        if select == "greedy"
        else np.ones(len(records), dtype=np.int64)
    )
    chosen = [i for i in range(len(records)) if weights[i] > 0]
    average = np.tensordot(weights[chosen].astype(np.float64), probabilities[chosen], axes=1) / weights.sum()
    predicted = np.argmax(average, axis=-1)
    val_pred, test_pred = predicted[: len(val)], predicted[len(val) :]
    evaluation = {"test": classification_metrics(data.labels[splits.test], test_pred)}
    if one_split:
        evaluation["val"] = classification_metrics(data.labels[val], val_pred)
    position = {int(i): k for k, i in enumerate(splits.test)}
    for half in ("test_public", "test_private"):
        idx = getattr(splits, half)
        if len(idx):
            evaluation[half] = classification_metrics(data.labels[idx], test_pred[[position[int(i)] for i in idx]])
    notes = []
    if not one_split:
        notes.append("members trained on different splits: no clean validation images")
    if select == "greedy":
        notes.append("members chosen on these validation images: the validation accuracy is optimistic")
    return {
        "name": ensemble_name(records, tta_hflip, select),
        "members": [records[i].run for i in chosen],
        "member_run_ids": [records[i].run_id for i in chosen],
        "weights": [int(weights[i]) for i in chosen],
        "selection": select,
        "candidates": [r.run for r in records],
        "tta_hflip": tta_hflip,
        "protocol": first.protocol,
        "budget": first.budget,
        "split_seeds": seeds,
        "validation_note": "; ".join(notes),
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
