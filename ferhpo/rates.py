"""The recipe's learning-rate curves as plain functions of the epoch or the training step.

Standard library only, like `ferhpo.config` (which re-exports `reference_lr`, `cosine_lr`
and `cosine_step_lr`): `SCHEDULES` names them, `recipe_lr` gives a run's rate at any
training step, and `ferhpo.training.schedules` sets the optimizer's rate from them.

Every schedule but "reference-step" is laid over the run's own ``epochs``: a run of N
epochs ends its schedule at epoch N. "reference-step" keeps the absolute epoch
thresholds of the 200-epoch reference recipe (`reference_lr`).
"""

from __future__ import annotations

import math
from typing import Any

from ferhpo.errors import ConfigError

#: "reference-step" is `reference_lr`; "constant" keeps the base learning rate;
#: "cosine" is `cosine_lr` over the run's epochs; "cosine-steps" the same curve per
#: training step (`cosine_step_lr`), which a run of a few epochs needs to anneal at all;
#: "linear" decays per step from the base rate to 0 at the run's end (Keras'
#: PolynomialDecay with power 1); "one-cycle" rises linearly from 0 to the base rate,
#: then anneals by the cosine per step to 0 at the run's end (Keras' CosineDecay with
#: warmup_target). `recipe_lr` has the exact definitions, warm-up included.
SCHEDULES = ("reference-step", "constant", "cosine", "cosine-steps", "linear", "one-cycle")
#: Schedules that set the rate before every training step (the others: at each epoch start).
STEP_SCHEDULES = ("cosine-steps", "linear", "one-cycle")
#: One-cycle's rise when ``warmup_epochs`` is 0: the first 30% of the run's steps
#: (PyTorch OneCycleLR's default pct_start).
ONE_CYCLE_RISE = 0.3

# The reference step schedule (Keras cifar10_resnet `lr_schedule`): after each
# epoch threshold the base rate is multiplied by the factor, later rows winning.
_REFERENCE_STEPS = ((80, 1e-1), (120, 1e-2), (160, 1e-3), (180, 0.5e-3))


def _count(owner: str, name: str, value: Any, minimum: int = 1) -> int:
    # the message of ferhpo.config's field check, for the arguments of these functions
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        rule = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{owner} {name} must be {rule}, but got {name}={value!r}")
    return value


def reference_lr(epoch: int, base_lr: float = 1e-3) -> float:
    """Learning rate of the reference step schedule for a 0-based ``epoch``.

    The Keras cifar10_resnet convention: ``base_lr`` multiplied by 0.1 when
    epoch > 80, 0.01 when > 120, 0.001 when > 160 and 0.0005 when > 180.
    """
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ConfigError(f"reference_lr epoch must be an integer >= 0, but got epoch={epoch!r}")
    factor = 1.0
    for threshold, step_factor in _REFERENCE_STEPS:
        if epoch > threshold:
            factor = step_factor
    return base_lr * factor


def cosine_lr(epoch: int, epochs: int, base_lr: float = 1e-3) -> float:
    """Learning rate of the cosine schedule for a 0-based ``epoch`` of ``epochs``.

    ``base_lr * 0.5 * (1 + cos(pi * epoch / epochs))``: ``base_lr`` at epoch 0,
    half of it halfway, decaying towards 0 (reached at ``epoch == epochs``, one
    past the last epoch trained).
    """
    _count("cosine_lr", "epochs", epochs)
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= epochs:
        raise ConfigError(f"cosine_lr epoch must be an integer in [0, epochs={epochs}], but got epoch={epoch!r}")
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def cosine_step_lr(step: int, total_steps: int, base_lr: float = 1e-3) -> float:
    """Learning rate of the per-step cosine schedule at 0-based training ``step``.

    ``base_lr * 0.5 * (1 + cos(pi * step / total_steps))``: `cosine_lr` evaluated at
    every step instead of every epoch, so that a run of 3 epochs decays smoothly to 0
    instead of training a third of its steps at each of 1, 0.75 and 0.25 of the rate.
    """
    _count("cosine_step_lr", "total_steps", total_steps)
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= total_steps:
        raise ConfigError(f"cosine_step_lr step must be an integer in [0, total_steps={total_steps}], but got step={step!r}")
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))


def warmup_steps(schedule: str, warmup_epochs: int, steps_per_epoch: int, epochs: int) -> int:
    """Training steps of the linear warm-up: ``warmup_epochs`` whole epochs, or for
    "one-cycle" without them the first `ONE_CYCLE_RISE` of the run's steps."""
    if warmup_epochs:
        return warmup_epochs * steps_per_epoch
    return int(ONE_CYCLE_RISE * steps_per_epoch * epochs) if schedule == "one-cycle" else 0


def recipe_lr(
    schedule: str, step: int, *, steps_per_epoch: int, epochs: int, base_lr: float = 1e-3, warmup_epochs: int = 0
) -> float:
    """The rate a run trains its 0-based training ``step`` with (``epochs`` of ``steps_per_epoch``).

    Warm-up (W steps, `warmup_steps`): ``base_lr * step / W``, from 0 up to the base rate
    (Keras' CosineDecay warm-up). After it, with ``s = step - W`` of ``n = total - W``:
    "constant" ``base_lr``; "reference-step" `reference_lr` of the epoch (its absolute
    thresholds); "cosine" `cosine_lr` of the epochs after the warm-up (``epoch -
    warmup_epochs`` of ``epochs - warmup_epochs``); "cosine-steps" and "one-cycle"
    ``cosine_step_lr(s, n)``; "linear" ``base_lr * (1 - s / n)``. The decaying schedules
    reach 0 at ``step == total``, the end of the run's last epoch; a step past it is
    given the rate at the end.
    """
    if schedule not in SCHEDULES:
        raise ConfigError(f"recipe_lr schedule must be one of {', '.join(map(repr, SCHEDULES))}, but got schedule={schedule!r}")
    _count("recipe_lr", "steps_per_epoch", steps_per_epoch)
    _count("recipe_lr", "epochs", epochs)
    if _count("recipe_lr", "warmup_epochs", warmup_epochs, minimum=0) >= epochs:
        raise ConfigError(f"recipe_lr warmup_epochs must be less than epochs={epochs}, but got warmup_epochs={warmup_epochs!r}")
    _count("recipe_lr", "step", step, minimum=0)
    total = steps_per_epoch * epochs
    step = min(step, total)
    warm = warmup_steps(schedule, warmup_epochs, steps_per_epoch, epochs)
    if step < warm:
        return base_lr * step / warm
    epoch = min(step // steps_per_epoch, epochs - 1)
    if schedule == "constant":
        return base_lr
    if schedule == "reference-step":
        return reference_lr(epoch, base_lr)
    if schedule == "cosine":
        return cosine_lr(epoch - warmup_epochs, epochs - warmup_epochs, base_lr)
    if schedule == "linear":
        return base_lr * (1.0 - (step - warm) / (total - warm))
    return cosine_step_lr(step - warm, total - warm, base_lr)  # cosine-steps, one-cycle
