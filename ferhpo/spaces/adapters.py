"""The two tuner adapters over one loop: a `Space` asked through an Optuna trial or
declared on a KerasTuner ``HyperParameters``.

Both libraries are duck-typed, not imported: `suggest_optuna` asks only the active
parameters (Optuna's define-by-run conditionals), `declare_keras_tuner` declares all
of them, the conditional ones with ``parent_name``/``parent_values``, so the
KerasTuner oracle sees the whole space. Both return the active parameters' values,
ready for `Space.configs`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ferhpo.errors import ConfigError
from ferhpo.spaces.space import Param, Space


def sample(
    space: Space,
    source: Callable[[Param, bool], Any],
    *,
    declare_inactive: bool = False,
) -> dict[str, Any]:
    """The one loop behind both adapters.

    Walks ``space.params`` in declaration order (parents before children) and calls
    ``source(param, active)`` for each active parameter, and for inactive ones too
    when ``declare_inactive`` (KerasTuner must see the whole space). Returns the
    active parameters' values, coerced to their types.
    """
    values: dict[str, Any] = {}
    for p in space.params:
        active = p.active(values)
        if not active and not declare_inactive:
            continue
        value = source(p, active)
        if active:
            if value is None:
                raise ConfigError(f"{space.path}: parameter {p.name!r}: the tuner gave no value for an active parameter")
            values[p.name] = p.coerce(value)
    return values


def suggest_optuna(space: Space, trial: Any) -> dict[str, Any]:
    """Suggest the active parameters with an Optuna ``trial`` (define-by-run)."""

    def source(p: Param, active: bool) -> Any:
        if p.type == "int":
            return trial.suggest_int(p.name, p.low, p.high, step=p.step or 1, log=p.log)
        if p.type == "float":
            return trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log)
        assert p.candidates is not None  # categorical and bool parameters have candidates
        return trial.suggest_categorical(p.name, list(p.candidates))

    return sample(space, source)


def declare_keras_tuner(space: Space, hp: Any) -> dict[str, Any]:
    """Declare every parameter on a KerasTuner ``HyperParameters`` and return the
    active ones' values. Conditional parameters are declared with
    ``parent_name``/``parent_values``; KerasTuner returns None for them while inactive.
    A log-sampled parameter gets no step (KerasTuner would read it as a multiplier);
    a float parameter with a step becomes an ordered ``hp.Choice`` of its grid values
    (KerasTuner's float step arithmetic can drop the top value)."""

    def source(p: Param, active: bool) -> Any:
        cond = {}
        if p.when is not None:
            cond = {"parent_name": p.when[0], "parent_values": list(p.when[1])}
        if p.type == "float" and p.step is not None:
            # KerasTuner counts a float grid with floor division (0.3 // 0.1 == 2.0)
            # and can drop its top value; an ordered Choice holds exactly the grid.
            return hp.Choice(p.name, p.float_grid(), ordered=True, default=p.default, **cond)
        if p.type in ("int", "float"):
            declare = hp.Int if p.type == "int" else hp.Float
            return declare(
                p.name,
                min_value=p.low,
                max_value=p.high,
                step=None if p.log else p.step,
                sampling="log" if p.log else "linear",
                default=p.default,
                **cond,
            )
        if p.type == "bool":
            return hp.Boolean(p.name, default=p.default, **cond)
        assert p.choices is not None  # the reader gives every categorical parameter its choices
        return hp.Choice(p.name, list(p.choices), default=p.default, **cond)

    return sample(space, source, declare_inactive=True)
