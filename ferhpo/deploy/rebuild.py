"""Rebuild finished runs of a study as one inference model.

A record is enough to rebuild its model (`ferhpo.config` dicts) and its saved weights
are those of the training model (`training.training_model`: scaling, augmentation,
core). `member_model` rebuilds that wrapper, loads the weights and keeps the core
only; `inference_model` puts one or more cores behind a uint8 input with the
training's scaling and, optionally, horizontal-flip averaging, using built-in Keras
layers only: the saved `.keras` file loads in safe mode without ferhpo.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np

from ferhpo import store, training
from ferhpo.config import DenseNetConfig, TrainConfig, model_config_from_dict
from ferhpo.data import CLASSES
from ferhpo.deploy import DeployError, as_batch
from ferhpo.errors import ConfigError, FerhpoError
from ferhpo.models import build_model

__all__ = ["select_records", "weights_path", "member_model", "inference_model", "predict"]

#: Name of the exported model's input and output.
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"


def select_records(
    study,
    *,
    trial: int | None = None,
    top: int | None = None,
    run: str | None = None,
    objective_direction: str = "maximize",
    root: Path = store.STUDIES_DIR,
) -> list[store.RunRecord]:
    """Finished runs of `study` to deploy: trial `trial`, run `run`, or the `top` best.

    Only complete runs count (pruned and failed ones have no final model). Runs are
    ranked by validation accuracy, a search's higher rung first (`--rungs`), (never by test: that would choose on the test set),
    in `objective_direction`, ties going to the run recorded first; with neither
    `trial` nor `run` nor `top`, the best one. `run` names a baseline run (its latest
    complete attempt). Every chosen run's weights must lie under `root`/<study>/.
    """
    if objective_direction not in ("maximize", "minimize"):
        raise ConfigError(f"objective_direction must be 'maximize' or 'minimize', but got {objective_direction!r}")
    chosen = [name for name, value in (("trial", trial), ("run", run), ("top", top)) if value is not None]
    if len(chosen) > 1:
        raise ConfigError(f"choose runs by one of trial, run or top, but got {' and '.join(chosen)}")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
        raise ConfigError(f"top must be a positive integer, but got top={top!r}")
    name = study.study_name
    finished = store.records(study, states=("complete",))
    if trial is not None or run is not None:
        wanted = f"trial-{trial}" if trial is not None else run
        what = f"trial {trial}" if trial is not None else f"run {run!r}"
        matches = [r for r in finished if r.run == wanted]
        if not matches:
            others = [r for r in store.records(study) if r.run == wanted]
            if others:
                raise DeployError(
                    f"{what} of study {name!r} is {others[-1].status}, not complete; expected a finished run "
                    f"(its own weights and evaluation)"
                )
            known = ", ".join(sorted({r.run for r in finished}, key=_run_order)[:10]) or "none"
            raise DeployError(f"study {name!r} has no {what}; its finished runs: {known}")
        selected = [matches[-1]]
    else:
        if not finished:
            raise DeployError(f"study {name!r} has no finished run; expected a study with at least one complete run")
        top = 1 if top is None else top
        if top > len(finished):
            raise DeployError(
                f"--top {top} asks for {top} runs, but study {name!r} has {len(finished)} finished; "
                f"expected --top {len(finished)} or less"
            )
        ranked = store.best_first(
            finished,
            lambda r: r.best_val_accuracy,
            maximize=objective_direction == "maximize",
            group=store.higher_rung_first,
            tiebreak=lambda r: r.created,
        )
        selected = ranked[:top]
    for record in selected:
        weights_path(record, root)
    return selected


def _run_order(run: str):
    """trial-2 before trial-10; baselines by name after the trials."""
    prefix, _, number = run.rpartition("-")
    return (0, int(number), "") if prefix == "trial" and number.isdigit() else (1, 0, run)


def weights_path(record: store.RunRecord, root: Path = store.STUDIES_DIR) -> Path:
    """The run's saved weights, `root`/<study>/<artifacts['weights']>; DeployError if missing."""
    relative = record.artifacts.get("weights")
    if not relative:
        raise DeployError(
            f"run {record.run!r} of study {record.study!r} records no weights file; expected a run trained by "
            f"ferhpo baseline or search (artifacts['weights'])"
        )
    path = Path(root) / record.study / relative
    if not path.is_file():
        raise DeployError(
            f"weights of run {record.run!r} of study {record.study!r} are missing: {path} does not exist; expected "
            f"the study's artifact folder (run from the folder holding studies/, or pass its root)"
        )
    return path


def member_model(record: store.RunRecord, root: Path = store.STUDIES_DIR, *, precision: str | None = "float32") -> keras.Model:
    """The trained core classifier of `record`: float image in [0, 1] in, probabilities out.

    The training model (scaling, augmentation layers, core) is rebuilt exactly as it
    was trained, given the saved weights, and only its core is kept: no augmentation
    layer, no dropout, and frozen, so it computes the same whatever `training` says.
    `precision` is the dtype policy to compute in: "float32" (the default; the weights
    are float32 in every recipe, and ONNX needs it) or None for the recipe's own.
    """
    path = weights_path(record, root)
    try:
        model_config = model_config_from_dict(record.model)
        train = TrainConfig(**record.train)
    except (TypeError, FerhpoError) as exc:
        raise DeployError(f"run {record.run!r} of study {record.study!r} cannot be rebuilt from its record: {exc}") from None
    if precision is not None:
        train = dataclasses.replace(train, precision=precision)
    with training.dtype_policy(train.precision):
        trained = build_model(model_config)
        # Not compiled: the file's optimizer state is for resuming training, not for inference.
        wrapped = training.training_model(trained, train)
        # Dropout is the identity at inference and holds no weights: the same model without it
        # (DenseNet is the family with dropout).
        if isinstance(model_config, DenseNetConfig) and model_config.dropout:
            core = build_model(dataclasses.replace(model_config, dropout=0.0))
        else:
            core = trained
    try:
        wrapped.load_weights(path)
    except (ValueError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DeployError(
            f"weights {path} do not fit run {record.run!r}'s model ({reason}); expected the file its run saved"
        ) from None
    if core is not trained:
        core.set_weights(trained.get_weights())
    # Frozen: Keras' BatchNormalization then uses its moving statistics even when a
    # caller passes training=True (a nested call's training=False would be overridden).
    core.trainable = False
    return core


def _mirror(x, shape: tuple[int, int, int], name: str):
    """Horizontal mirror with built-in layers: width to the last axis, times the
    anti-identity (a frozen bias-free Dense: exact in float32), and back."""
    height, width, channels = shape
    flip = keras.layers.Dense(width, use_bias=False, trainable=False, dtype="float32", name=f"{name}_reverse")
    y = keras.layers.Permute((1, 3, 2), dtype="float32", name=f"{name}_width_last")(x)
    y = flip(y)
    flip.set_weights([np.eye(width, dtype="float32")[::-1]])
    return keras.layers.Permute((1, 3, 2), dtype="float32", name=f"{name}_width_back")(y)


def inference_model(
    records: list[store.RunRecord],
    *,
    tta_hflip: bool = False,
    root: Path = store.STUDIES_DIR,
    precision: str | None = "float32",
) -> keras.Model:
    """One model for `records`: uint8 images (None, 48, 48, 1) named "image" in,
    (None, 7) float32 probabilities in `ferhpo.data.CLASSES` order out.

    Scaled by 1/255 as in training; every member runs in inference mode whatever the
    caller asks; with `tta_hflip` each member's softmax is averaged with its mirror
    image's; several members' probabilities are averaged. Built-in layers only (no
    Lambda, no ferhpo class): it saves and loads as plain Keras, in safe mode.
    """
    if not records:
        raise ConfigError("inference_model needs at least one run record, but got none")
    shapes = {tuple(r.model.get("input_shape", (48, 48, 1))) for r in records}
    classes = {int(r.model.get("num_classes", len(CLASSES))) for r in records}
    if len(shapes) > 1 or len(classes) > 1:
        raise DeployError(
            f"runs {', '.join(r.run for r in records)} take different inputs or classes ({sorted(shapes)}, {sorted(classes)}); "
            f"expected members of one ensemble to share input shape and classes"
        )
    shape = shapes.pop()
    if classes.pop() != len(CLASSES):
        raise DeployError(f"runs classify into {len(CLASSES)} classes in FER2013; expected num_classes={len(CLASSES)}")
    inputs = keras.Input(shape=shape, dtype="uint8", name=INPUT_NAME)
    x = keras.layers.Rescaling(1.0 / 255, dtype="float32", name="rescale")(inputs)
    mirrored = _mirror(x, shape, "hflip") if tta_hflip else None
    outputs = []
    for i, record in enumerate(records):
        core = member_model(record, root, precision=precision)
        # A fresh name per member: several cores of one family would otherwise clash.
        member = keras.Model(core.inputs[0], core.outputs[0], name=f"member_{i}")
        p = member(x, training=False)
        if tta_hflip:
            p = keras.layers.Average(dtype="float32", name=f"member_{i}_tta")([p, member(mirrored, training=False)])
        outputs.append(p)
    p = outputs[0] if len(outputs) == 1 else keras.layers.Average(dtype="float32", name="ensemble")(outputs)
    p = keras.layers.Identity(dtype="float32", name=OUTPUT_NAME)(p)
    return keras.Model(inputs, p, name="ferhpo_fer2013")


def predict(model: keras.Model, images, batch_size: int = 256) -> np.ndarray:
    """Class probabilities (N, 7) of uint8 grayscale `images` (N, 48, 48[, 1]) by `model`."""
    x = as_batch(images, tuple(model.input_shape[1:]))
    return np.asarray(training.predict(model, x, batch_size=batch_size), dtype="float32")
