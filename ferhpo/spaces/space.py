"""`Param` and `Space`, the validated form of a space file, and the values they try.

A `Space` builds the model config and recipe for a set of parameter values
(`Space.configs`) and spreads each parameter's range into a few points for a grid
search (`Space.grid`); `_check_values` picks the values the reader builds once
each so that a search never samples a configuration the builder rejects.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ferhpo.config import DenseNetConfig, ModelConfig, ResNetConfig, TrainConfig
from ferhpo.errors import ConfigError

PARAM_TYPES = ("int", "float", "categorical", "bool")
_FAMILIES: dict[str, type[DenseNetConfig] | type[ResNetConfig]] = {
    DenseNetConfig.family: DenseNetConfig,
    ResNetConfig.family: ResNetConfig,
}
#: Integer ranges with more grid values than this are checked at their ends, their
#: default and this many evenly spaced values in between (minus three).
_MAX_CHECKED = 256


def _same(a: Any, b: Any) -> bool:
    """Equality that keeps bools apart from ints (True == 1 in Python)."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _member(value: Any, values: tuple) -> bool:
    return any(_same(value, v) for v in values)


def _show(values: tuple | list) -> str:
    return "[" + ", ".join(_toml(v) for v in values) + "]"


def _toml(value: Any) -> str:
    """A value as it is written in the TOML file (true, not True; "s", not 's')."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):  # a basic string, escaped as TOML escapes it: one line, always
        text = value.replace("\\", "\\\\").replace('"', '\\"')
        escaped = (c if c.isprintable() else f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}" for c in text)
        return '"' + "".join(escaped) + '"'
    return repr(value)


# --------------------------------------------------------------------------
# The data


@dataclass(frozen=True)
class Param:
    """One searched parameter: its type, range or choices, default, target field
    and optional condition ``when = (parent_name, parent_values)``."""

    name: str
    type: str
    field: str
    default: Any
    low: int | float | None = None
    high: int | float | None = None
    step: int | float | None = None
    log: bool = False
    choices: tuple | None = None
    when: tuple[str, tuple] | None = None

    def active(self, values: Mapping[str, Any]) -> bool:
        """Whether the parameter exists given the other parameters' ``values``
        (unconditional ones always do; a conditional one when its parent is
        present and has one of the ``when`` values)."""
        if self.when is None:
            return True
        parent, allowed = self.when
        return parent in values and _member(values[parent], allowed)

    @property
    def candidates(self) -> tuple | None:
        """The values a categorical or bool parameter can take (None otherwise)."""
        if self.type == "bool":
            return (False, True)
        return self.choices

    def to_dict(self) -> dict[str, Any]:
        """The parameter as plain data, in the TOML file's terms."""
        data: dict[str, Any] = {"name": self.name, "type": self.type, "field": self.field}
        if self.type in ("int", "float"):
            data.update(low=self.low, high=self.high, step=self.step, log=self.log)
        elif self.type == "categorical":
            assert self.choices is not None  # the reader gives every categorical parameter its choices
            data["choices"] = list(self.choices)
        data["default"] = self.default
        if self.when is not None:
            data["when"] = {self.when[0]: list(self.when[1])}
        return data

    def float_grid(self) -> list[float]:
        """The values of a float parameter with a step: low, low + step, ..., high
        (rounded to 12 significant digits, so 0.1 * 3 is 0.3)."""
        low, high, step = self.low, self.high, self.step
        assert low is not None and high is not None and step is not None  # a float parameter with a step
        n = round((high - low) / step) + 1
        values = [float(f"{low + k * step:.12g}") for k in range(n)]
        values[-1] = high
        return values

    def coerce(self, value: Any) -> Any:
        """A sampled value in the parameter's own type (tuners may hand back a
        numpy number or a float for an int); choices come back as the choice."""
        if self.type == "int":
            return int(value)
        if self.type == "float":
            if self.step is None:
                return float(value)
            # Snap to the grid: tuners compute low + k * step in floating point.
            return min(self.float_grid(), key=lambda v: abs(v - float(value)))
        if self.type == "bool":
            return bool(value)
        assert self.choices is not None  # the reader gives every categorical parameter its choices
        for choice in self.choices:
            if _same(value, choice) or (not isinstance(choice, bool) and choice == value):
                return choice
        raise ConfigError(
            f"parameter {self.name!r}: value must be one of the choices {_show(self.choices)}, but got {self.name}={value!r}"
        )


@dataclass(frozen=True)
class Space:
    """A validated search space over one model family and the training recipe."""

    name: str
    family: str
    description: str
    path: str
    params: tuple[Param, ...]
    fixed: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def model_class(self) -> type[DenseNetConfig] | type[ResNetConfig]:
        return _FAMILIES[self.family]

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.params) or "(none)"
        raise ConfigError(f"{self.path}: unknown parameter {name!r}; parameters: {known}")

    def defaults(self) -> dict[str, Any]:
        """Every active parameter at its default, in declaration order."""
        values: dict[str, Any] = {}
        for p in self.params:
            if p.active(values):
                values[p.name] = p.default
        return values

    def _resolve(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` over the defaults, keeping the active parameters only."""
        names = {p.name for p in self.params}
        unknown = [key for key in values if key not in names]
        if unknown:
            known = ", ".join(p.name for p in self.params) or "(none)"
            raise ConfigError(f"{self.path}: unknown parameter {unknown[0]!r} in the values; parameters: {known}")
        resolved: dict[str, Any] = {}
        for p in self.params:
            if p.active(resolved):
                resolved[p.name] = values.get(p.name, p.default)
        return resolved

    def configs(self, values: Mapping[str, Any]) -> tuple[ModelConfig, TrainConfig]:
        """The model config and recipe for ``values`` (name -> value).

        Built from the config classes' defaults, then ``[fixed]``, then the active
        parameters (each written to its ``field``); parameters missing from
        ``values`` take their defaults, inactive ones are ignored, unknown names
        are errors. The configs validate themselves (`ConfigError`).
        """
        model_fields = _field_names(self.model_class)
        model_kwargs: dict[str, Any] = {}
        train_kwargs: dict[str, Any] = {}
        for key, value in self.fixed.items():
            (model_kwargs if key in model_fields else train_kwargs)[key] = value
        by_name = {p.name: p for p in self.params}
        for name, value in self._resolve(values).items():
            target = by_name[name].field
            (model_kwargs if target in model_fields else train_kwargs)[target] = value
        return self.model_class(**model_kwargs), TrainConfig(**train_kwargs)

    def grid(self, max_values: int = 5) -> dict[str, list]:
        """Values per parameter for Optuna's ``GridSampler`` (conditional ones included).

        Categorical and bool: every choice. Int and float: at most ``max_values``
        points spread evenly over [low, high] (geometrically when ``log``, on the
        step grid when there is one), always including low, high and the default.
        """
        if isinstance(max_values, bool) or not isinstance(max_values, int) or max_values < 3:
            raise ConfigError(
                f"grid max_values must be an integer >= 3 (low, default and high), but got max_values={max_values!r}"
            )
        return {p.name: _grid_values(p, max_values) for p in self.params}

    def to_dict(self) -> dict[str, Any]:
        """The space as plain data, to save beside results."""
        return {
            "name": self.name,
            "family": self.family,
            "description": self.description,
            "path": self.path,
            "fixed": dict(self.fixed),
            "params": [p.to_dict() for p in self.params],
        }


def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


# --------------------------------------------------------------------------
# Grid values


def _int_grid(p: Param) -> range:
    low, high, step = p.low, p.high, p.step or 1
    assert isinstance(low, int) and isinstance(high, int) and isinstance(step, int)  # an int parameter's bounds
    return range(low, high + 1, step)  # a range: never materialised whole


def _size(grid: range) -> int:
    """``len(grid)``, also past ``sys.maxsize`` (where len raises OverflowError): an
    int range between TOML's 64-bit bounds may hold up to 2**64 values."""
    return max(0, (grid.stop - grid.start + grid.step - 1) // grid.step)


def _spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)``, both ends included."""
    if n <= k:
        return list(range(n))
    # min: past 2**53 the float quotient may round up beyond the last index
    return sorted({min(n - 1, round(i * (n - 1) / (k - 1))) for i in range(k)})


def _with_default(points: list, default: Any, max_values: int, log: bool = False) -> list:
    """``points`` (sorted, ends first and last) with the default swapped in for the
    nearest interior point (on a log scale if ``log``) when it is missing, so the
    count stays <= max_values."""
    if any(_same(default, x) for x in points):
        return points
    if len(points) < max_values:
        return sorted(points + [default])
    scale = math.log if log else (lambda v: v)
    interior = range(1, len(points) - 1)
    nearest = min(interior, key=lambda i: abs(scale(points[i]) - scale(default)))
    points = points[:nearest] + points[nearest + 1 :]
    return sorted(points + [default])


def _round_in(value: float, low: float, high: float) -> float:
    """A readable value (4 significant digits) kept inside [low, high]."""
    if value == 0:
        return 0.0
    rounded = float(f"{value:.4g}")
    return min(max(rounded, low), high)


def _grid_values(p: Param, max_values: int) -> list:
    if p.type in ("categorical", "bool"):
        assert p.candidates is not None  # categorical and bool parameters have candidates
        return list(p.candidates)
    grid: Sequence[float]
    points: list[float]
    if p.type == "int" and not p.log:
        grid = _int_grid(p)
        points = [grid[i] for i in _spread(_size(grid), max_values)]
        return _with_default(points, p.default, max_values)
    low, high = p.low, p.high
    assert low is not None and high is not None  # numeric parameters have bounds
    if p.type == "int":  # log: geometric points, rounded to distinct integers
        ratios = [i / (max_values - 1) for i in range(max_values)]
        points = sorted({round(low * (high / low) ** r) for r in ratios} | {low, high})
        return _with_default(points, p.default, max_values, log=True)
    if low == high:
        return [low]
    if p.step is not None:
        grid = p.float_grid()
        points = [grid[i] for i in _spread(len(grid), max_values)]
    elif p.log:
        points = [_round_in(low * (high / low) ** (i / (max_values - 1)), low, high) for i in range(max_values)]
    else:
        points = [_round_in(low + (high - low) * i / (max_values - 1), low, high) for i in range(max_values)]
    points[0], points[-1] = low, high
    return _with_default(sorted(set(points)), p.default, max_values, log=p.log)


def _check_values(p: Param) -> list:
    """Every value the builder check tries for ``p`` (all of them up to `_MAX_CHECKED`)."""
    if p.type in ("categorical", "bool"):
        assert p.candidates is not None  # categorical and bool parameters have candidates
        return list(p.candidates)
    if p.type == "float":
        return sorted({p.low, p.high, p.default})
    grid = _int_grid(p)
    if _size(grid) <= _MAX_CHECKED:
        return list(grid)
    picked = {grid[i] for i in _spread(_size(grid), _MAX_CHECKED - 3)}
    return sorted(picked | {p.low, p.high, p.default})
