"""Train one configuration and record it: the step baseline runs and search trials share.

`train_and_record` calls the one fit function, writes the run's artifacts under
`studies/<study>/<run_id>/` (weights, test predictions, learning curve, record JSON,
each atomically), then adds the record to the study in one transaction. An
interrupted or failed run leaves neither a record nor an artifact folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import uuid
from pathlib import Path

import numpy as np

from ferhpo import store
from ferhpo.atomic import atomic_open, write_json
from ferhpo.config import Budget, ModelConfig, TrainConfig, model_config_to_dict
from ferhpo.data import FER2013
from ferhpo.phases import PhaseClock
from ferhpo.report.figures import learning_curve
from ferhpo.splits import Splits, limit_splits, make_splits


def budgeted(train: TrainConfig, budget: Budget) -> TrainConfig:
    """The recipe with the budget's epochs (`TrainConfig.with_epochs`: a warm-up as long
    as the run is shortened)."""
    return train.with_epochs(budget.epochs) if budget.epochs else train


def budget_splits(data: FER2013, protocol: str, budget: Budget, seed: int) -> Splits:
    splits = make_splits(data, protocol, seed)
    return limit_splits(splits, train=budget.train_limit, val=budget.val_limit, test=budget.test_limit, seed=seed)


# TrainConfig fields added after runs were first recorded: left out of the key while at
# their default, so a recipe that does not use them keeps the key it had, and finished
# baseline runs are still found instead of being retrained.
_ADDED_AT_DEFAULT = {
    "rotation": 0.0,
    "zoom": 0.0,
    "erasing": 0.0,
    "mixup": 0.0,
    "tta_hflip": False,
    "precision": "float32",
    # issue 21: recipes that hold at long budgets
    "nesterov": None,
    "warmup_epochs": 0,
    "crop": 0,
    "cutmix": 0.0,
    "ema": 0.0,
    "tta_shift": 0.0,
}


def run_key(name: str, model: ModelConfig, train: TrainConfig, budget: Budget, protocol: str, fingerprint: str) -> str:
    """Identifies a result: equal keys mean the same configuration trained the same way."""
    recipe = dataclasses.asdict(train)
    for field, default in _ADDED_AT_DEFAULT.items():
        if recipe.get(field) == default:
            del recipe[field]
    payload = {
        "name": name,
        "model": model_config_to_dict(model),
        "train": recipe,
        "budget": dataclasses.asdict(budget),
        "protocol": protocol,
        "data": fingerprint,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=list).encode()).hexdigest()[:16]


def find_finished(study, key: str) -> store.RunRecord | None:
    """The latest complete record with this key, if any."""
    done = [r for r in store.records(study, states=("complete",)) if r.run_key == key]
    return done[-1] if done else None


#: The files `train_run` writes into a run's folder.
ARTIFACTS = ("best.weights.h5", "test_predictions.npz", "learning_curve.png", "record.json")


def _write_artifacts(folder: Path, *, name: str, budget: Budget, protocol: str, data: FER2013, splits: Splits, result) -> dict:
    """Test predictions and the learning curve of a finished fit, written atomically into
    `folder`; the artifact paths (relative to the study folder) for its record."""
    run_id = folder.name
    artifacts = {"dir": run_id, "weights": f"{run_id}/best.weights.h5"}
    if result.test_predictions is not None:
        with atomic_open(folder / "test_predictions.npz") as f:
            np.savez(
                f,
                files=data.files[splits.test],
                labels=data.labels[splits.test],
                predictions=result.test_predictions.astype(np.int8),
            )
        artifacts["test_predictions"] = f"{run_id}/test_predictions.npz"
    if result.epochs_run:
        learning_curve(
            result.history,
            folder / "learning_curve.png",
            title=f"{name} ({budget.name} budget, {protocol} protocol)",
            best_epoch=result.best_epoch,
        )
        artifacts["learning_curve"] = f"{run_id}/learning_curve.png"
    return artifacts


def train_run(
    *,
    study_name: str,
    name: str,
    kind: str,
    model: ModelConfig,
    train: TrainConfig,
    data: FER2013,
    protocol: str,
    budget: Budget,
    folder: Path,
    callbacks=(),
    evaluate_test=True,
    status=lambda: "complete",
    verbose: int | str = 0,
    reported_test_accuracy: float | None = None,
    hyperparameters: dict | None = None,
    search=None,
    phases: PhaseClock | None = None,
    checkpoint_every: int | None = None,
    resume: Path | None = None,
    on_resume=None,
) -> store.RunRecord:
    """Train `model` with `train` (already `budgeted`) on `budget`'s splits; write its artifacts.

    The artifacts (weights, test predictions, learning curve, and last `record.json`)
    land in `folder`, each atomically; the record is returned, not stored, so a search
    engine can decide how it enters the study. `evaluate_test` and `status` are asked
    once training ends (a pruned trial passes ``lambda: False`` and ``lambda: "pruned"``),
    and so is `search` when it is callable (what an engine learnt during training).
    On any exception the artifacts written so far are removed (other files in the
    folder, such as a trial's spec and log, stay): a failed run leaves no results.
    `phases` times the run from its start (a fresh clock: from now); the record keeps
    its summary, taken just before `record.json` is written. `checkpoint_every`
    (epochs between resume checkpoints, written to `folder`/resume), `resume` (a
    checkpoint folder to continue from) and `on_resume` go to `training.fit` as one
    `training.Resume`.
    """
    from ferhpo import training  # keras loads here, not when the CLI starts

    phases = PhaseClock() if phases is None else phases
    with phases.phase("data"):
        splits = budget_splits(data, protocol, budget, train.seed)
    key = run_key(name, model, train, budget, protocol, data.info.fingerprint)
    run_id = folder.name
    try:
        result = training.fit(
            model,
            train,
            data,
            splits,
            callbacks=list(callbacks),
            checkpoint=folder / "best.weights.h5",
            evaluate_test=evaluate_test,
            verbose=verbose,
            phases=phases,
            resume=training.Resume(
                every=checkpoint_every, folder=folder / store.RESUME_DIR, start_from=resume, on_resume=on_resume
            ),
        )
        with phases.phase("write"):
            artifacts = _write_artifacts(
                folder, name=name, budget=budget, protocol=protocol, data=data, splits=splits, result=result
            )
        artifacts["record"] = f"{run_id}/record.json"
        record = store.RunRecord(
            study=study_name,
            run=name,
            run_key=key,
            run_id=run_id,
            kind=kind,
            status=status(),
            family=model.family,
            model=model_config_to_dict(model),
            train=dataclasses.asdict(train),
            budget=dataclasses.asdict(budget),
            protocol=protocol,
            split_seed=train.seed,
            selection_sees=list(splits.selection_sees),
            data_fingerprint=data.info.fingerprint,
            history=result.history,
            epochs_run=result.epochs_run,
            best_epoch=result.best_epoch,
            best_val_accuracy=result.best_val_accuracy,
            evaluation=result.evaluation,
            params=result.params,
            train_images=result.train_images,
            wall_seconds=result.wall_seconds,
            train_seconds=result.train_seconds,
            images_per_second=result.images_per_second,
            environment=store.environment(),
            artifacts=artifacts,
            reported_test_accuracy=reported_test_accuracy,
            hyperparameters=dict(hyperparameters or {}),
            search=dict((search() if callable(search) else search) or {}),
            phases=phases.summary(),
        )
        write_json(folder / "record.json", record.to_dict())
        shutil.rmtree(folder / store.RESUME_DIR, ignore_errors=True)  # finished: nothing left to resume
    except BaseException:
        for artifact in ARTIFACTS:
            (folder / artifact).unlink(missing_ok=True)
        raise
    return record


def new_run_dir(study_name: str, name: str, budget: Budget, root: Path = store.STUDIES_DIR) -> Path:
    """A fresh artifact folder name for one attempt (attempts never share a folder)."""
    return store.run_dir(study_name, f"{name}-{budget.name}-{uuid.uuid4().hex[:8]}", root)


def train_and_record(
    study,
    *,
    name: str,
    kind: str,
    model: ModelConfig,
    train: TrainConfig,
    data: FER2013,
    protocol: str,
    budget: Budget,
    callbacks=(),
    verbose: int | str = 0,
    reported_test_accuracy: float | None = None,
    root: Path = store.STUDIES_DIR,
    phases: PhaseClock | None = None,
    hyperparameters: dict | None = None,
    search: dict | None = None,
) -> store.RunRecord:
    """`train_run`, then add the record to `study` in one transaction (baseline and confirm runs)."""
    folder = new_run_dir(study.study_name, name, budget, root)
    try:
        record = train_run(
            study_name=study.study_name,
            name=name,
            kind=kind,
            model=model,
            train=train,
            data=data,
            protocol=protocol,
            budget=budget,
            folder=folder,
            callbacks=callbacks,
            verbose=verbose,
            reported_test_accuracy=reported_test_accuracy,
            phases=phases,
            hyperparameters=hyperparameters,
            search=search,
        )
        store.add_record(study, record)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return record
