"""Search spaces as data: TOML files read into a frozen `Space`, and its two adapters.

A space names a model family, holds some config fields constant (``[fixed]``) and
declares the parameters to search (``[params.<name>]``), each with an explicit
default (the reference value, as in KerasTuner's applications). The format is
documented at the top of ``search_spaces/densenet.toml``; in short::

    [space]
    family = "densenet"                 # or "resnet"
    description = "..."
    [fixed]                             # optional: config fields held constant
    head = "avg4"
    [params.growth_rate]                # declaration order = suggestion order
    type = "int"                        # int | float | categorical | bool
    low = 8                             # int/float: low, high, optional step and log
    high = 32
    step = 4
    default = 12                        # required for every parameter
    [params.depth_v1]
    field = "depth"                     # the config field it sets (default: its name)
    type = "int"
    low = 20
    high = 110
    step = 6
    default = 104
    when = { version = [1] }            # exists only while `version` is 1

A parameter sets a field of the family's model config (`DenseNetConfig` or
`ResNetConfig`) or of `TrainConfig`. Everything is checked when the file is read,
including that every candidate value builds valid configs, so a search never
starts a trial the builder rejects. Errors are `ConfigError`s that begin with the
file's path and the parameter's name.

The adapters take an Optuna trial or a KerasTuner ``HyperParameters`` duck-typed;
this module imports neither library. `sample` is their one loop:
`suggest_optuna` asks only the active parameters (Optuna's define-by-run
conditionals), `declare_keras_tuner` declares all of them, the conditional ones
with ``parent_name``/``parent_values``, so the KerasTuner oracle sees the whole
space. Both return the active parameters' values, ready for `Space.configs`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ferhpo.config import DenseNetConfig, ModelConfig, ResNetConfig, TrainConfig, read_toml
from ferhpo.errors import ConfigError

__all__ = [
    "PARAM_TYPES",
    "Param",
    "Space",
    "spaces_dir",
    "known_spaces",
    "load_space",
    "parse_space",
    "sample",
    "suggest_optuna",
    "declare_keras_tuner",
]

PARAM_TYPES = ("int", "float", "categorical", "bool")
_FAMILIES: dict[str, type[DenseNetConfig] | type[ResNetConfig]] = {
    DenseNetConfig.family: DenseNetConfig,
    ResNetConfig.family: ResNetConfig,
}
_PRESET_FILE = "baseline.toml"  # the preset table sits beside the spaces but is not one
_TOP_KEYS = ("space", "fixed", "params")
_SPACE_KEYS = ("family", "description")
_PARAM_KEYS = ("type", "field", "low", "high", "step", "log", "choices", "default", "when")
_TYPE_KEYS = {
    "int": {"low", "high", "step", "log"},
    "float": {"low", "high", "step", "log"},
    "categorical": {"choices"},
    "bool": set(),
}
_COMMON_KEYS = {"type", "field", "default", "when"}
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
    if isinstance(value, str):
        return f'"{value}"'
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
    def candidates(self) -> tuple:
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
            data["choices"] = list(self.choices)
        data["default"] = self.default
        if self.when is not None:
            data["when"] = {self.when[0]: list(self.when[1])}
        return data

    def float_grid(self) -> list[float]:
        """The values of a float parameter with a step: low, low + step, ..., high
        (rounded to 12 significant digits, so 0.1 * 3 is 0.3)."""
        n = round((self.high - self.low) / self.step) + 1
        values = [float(f"{self.low + k * self.step:.12g}") for k in range(n)]
        values[-1] = self.high
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
        for choice in self.choices:
            if _same(value, choice) or (not isinstance(choice, bool) and choice == value):
                return choice
        raise ConfigError(
            f"parameter {self.name!r}: value must be one of the choices {_show(self.choices)}, "
            f"but got {self.name}={value!r}"
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
            raise ConfigError(
                f"{self.path}: unknown parameter {unknown[0]!r} in the values; parameters: {known}"
            )
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
                "grid max_values must be an integer >= 3 (low, default and high), "
                f"but got max_values={max_values!r}"
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
    return range(p.low, p.high + 1, p.step or 1)  # a range: never materialised whole


def _spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)``, both ends included."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


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
        return list(p.candidates)
    if p.type == "int" and not p.log:
        grid = _int_grid(p)
        points = [grid[i] for i in _spread(len(grid), max_values)]
        return _with_default(points, p.default, max_values)
    if p.type == "int":  # log: geometric points, rounded to distinct integers
        ratios = [i / (max_values - 1) for i in range(max_values)]
        points = sorted({round(p.low * (p.high / p.low) ** r) for r in ratios} | {p.low, p.high})
        return _with_default(points, p.default, max_values, log=True)
    if p.low == p.high:
        return [p.low]
    if p.step is not None:
        grid = p.float_grid()
        points = [grid[i] for i in _spread(len(grid), max_values)]
    elif p.log:
        points = [
            _round_in(p.low * (p.high / p.low) ** (i / (max_values - 1)), p.low, p.high)
            for i in range(max_values)
        ]
    else:
        points = [
            _round_in(p.low + (p.high - p.low) * i / (max_values - 1), p.low, p.high)
            for i in range(max_values)
        ]
    points[0], points[-1] = p.low, p.high
    return _with_default(sorted(set(points)), p.default, max_values, log=p.log)


def _check_values(p: Param) -> list:
    """Every value the builder check tries for ``p`` (see the module docstring)."""
    if p.type in ("categorical", "bool"):
        return list(p.candidates)
    if p.type == "float":
        return sorted({p.low, p.high, p.default})
    grid = _int_grid(p)
    if len(grid) <= _MAX_CHECKED:
        return list(grid)
    picked = {grid[i] for i in _spread(len(grid), _MAX_CHECKED - 3)}
    return sorted(picked | {p.low, p.high, p.default})


# --------------------------------------------------------------------------
# Reading and validating


def spaces_dir() -> Path:
    """Where the shipped spaces live: ``ferhpo/search_spaces`` when packaging copied
    them into the package, else the repository's ``search_spaces`` (like
    `ferhpo.config.default_presets_path`)."""
    package_dir = Path(__file__).resolve().parent
    candidates = (package_dir / "search_spaces", package_dir.parent / "search_spaces")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise ConfigError(f"the search_spaces folder was not found; looked in: {tried}")


def known_spaces() -> list[str]:
    """Names of the shipped spaces (``*.toml`` in `spaces_dir`, except the preset table)."""
    return sorted(p.stem for p in spaces_dir().glob("*.toml") if p.name != _PRESET_FILE)


def load_space(name_or_path: str | Path | Space, *, family: str | None = None) -> Space:
    """A shipped space by name (``"densenet"``, ``"resnet"``) or a ``.toml`` file by path.

    A `Space` passes through. With ``family``, a space of another family is an error.
    """
    if isinstance(name_or_path, Space):
        space = name_or_path
    else:
        text = str(name_or_path)
        looks_like_path = (
            isinstance(name_or_path, Path) or text.endswith(".toml") or "/" in text or "\\" in text
        )
        known = known_spaces()
        hint = f"known spaces: {', '.join(known) or '(none)'} (or give the path of a .toml file)"
        if looks_like_path:
            path = Path(name_or_path)
            if not path.is_file():
                raise ConfigError(f"{path}: search space file not found; {hint}")
        elif text in known:
            path = spaces_dir() / f"{text}.toml"
        else:
            raise ConfigError(f"unknown search space {text!r}; {hint}")
        space = parse_space(path)
    if family is not None and space.family != family:
        raise ConfigError(
            f"{space.path}: a {family!r} space is needed here, but got family={space.family!r}"
        )
    return space


def parse_space(path: str | Path) -> Space:
    """Read and validate the space file at ``path`` (see the module docstring)."""
    path = Path(path)
    return _Reader(path).read(read_toml(path, not_found=f"{path}: search space file not found"))


class _Reader:
    """Turns a parsed TOML document into a `Space`, or raises the first problem."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, message: str, param: str | None = None) -> ConfigError:
        where = f"{self.path}: parameter {param!r}: " if param is not None else f"{self.path}: "
        return ConfigError(where + message)

    def read(self, doc: dict[str, Any]) -> Space:
        unknown = [k for k in doc if k not in _TOP_KEYS]
        if unknown:
            raise self.fail(f"unknown key {unknown[0]!r} at the top level; known keys: {', '.join(_TOP_KEYS)}")
        head = doc.get("space")
        if not isinstance(head, dict):
            raise self.fail('missing [space] table; it needs family = "densenet" or "resnet"')
        unknown = [k for k in head if k not in _SPACE_KEYS]
        if unknown:
            raise self.fail(f"unknown key {unknown[0]!r} in [space]; known keys: {', '.join(_SPACE_KEYS)}")
        if "family" not in head:
            raise self.fail('missing key \'family\' in [space]; it must be "densenet" or "resnet"')
        family = head["family"]
        if not isinstance(family, str) or family not in _FAMILIES:
            known = ", ".join(repr(f) for f in _FAMILIES)
            raise self.fail(f"[space] family must be one of {known}, but got family={family!r}")
        description = head.get("description", "")
        if not isinstance(description, str):
            raise self.fail(f"[space] description must be a string, but got description={description!r}")

        model_cls = _FAMILIES[family]
        self.model_fields = _field_names(model_cls)
        self.train_fields = _field_names(TrainConfig)
        self.model_name = model_cls.__name__

        fixed = doc.get("fixed", {})
        if not isinstance(fixed, dict):
            raise self.fail(f"[fixed] must be a table of config fields, but got fixed={fixed!r}")
        for key in fixed:
            if key not in self.model_fields and key not in self.train_fields:
                raise self.fail(
                    f"[fixed] {key!r} is not a field of {self.model_name} or TrainConfig; {self.known_fields()}"
                )

        raw_params = doc.get("params", {})
        if not isinstance(raw_params, dict):
            raise self.fail(f"[params] must hold [params.<name>] tables, but got params={raw_params!r}")
        params: list[Param] = []
        for name, raw in raw_params.items():
            params.append(self.param(name, raw, params, fixed))

        space = Space(
            name=self.path.stem,
            family=family,
            description=description,
            path=str(self.path),
            params=tuple(params),
            fixed=dict(fixed),
        )
        self.check_builds(space)
        return space

    def known_fields(self) -> str:
        return (
            f"known fields: {self.model_name}: {', '.join(self.model_fields)}; "
            f"TrainConfig: {', '.join(self.train_fields)}"
        )

    # -- one parameter ------------------------------------------------------

    def param(self, name: str, raw: Any, earlier: list[Param], fixed: Mapping[str, Any]) -> Param:
        if not name.isidentifier():
            raise self.fail("a parameter name must be an identifier (letters, digits, underscores)", name)
        if not isinstance(raw, dict):
            raise self.fail(f"must be a table [params.{name}] with type and default, but got {raw!r}", name)
        unknown = [k for k in raw if k not in _PARAM_KEYS]
        if unknown:
            raise self.fail(f"unknown key {unknown[0]!r}; known keys: {', '.join(_PARAM_KEYS)}", name)
        if "type" not in raw:
            raise self.fail(f"missing key 'type'; it must be one of {', '.join(map(repr, PARAM_TYPES))}", name)
        kind = raw["type"]
        if kind not in PARAM_TYPES:
            raise self.fail(f"type must be one of {', '.join(map(repr, PARAM_TYPES))}, but got type={kind!r}", name)
        misplaced = [k for k in raw if k not in _COMMON_KEYS | _TYPE_KEYS[kind]]
        if misplaced:
            takes = ", ".join(sorted(_TYPE_KEYS[kind] | _COMMON_KEYS))
            raise self.fail(f"key {misplaced[0]!r} does not apply to type {kind!r} (it takes {takes})", name)

        target = raw.get("field", name)
        if not isinstance(target, str) or (target not in self.model_fields and target not in self.train_fields):
            raise self.fail(
                f"unknown parameter: field {target!r} is not a field of {self.model_name} or TrainConfig "
                f"(set field = \"...\" to target one); {self.known_fields()}",
                name,
            )
        if target in fixed:
            raise self.fail(f"field {target!r} is also set in [fixed]; a field is either fixed or searched", name)
        if "default" not in raw:
            raise self.fail("missing key 'default'; every parameter needs a default (the reference value)", name)

        if kind in ("int", "float"):
            p = self.numeric(name, kind, target, raw)
        elif kind == "categorical":
            p = self.categorical(name, target, raw)
        else:
            default = raw["default"]
            if not isinstance(default, bool):
                raise self.fail(f"default must be true or false for type 'bool', but got default={default!r}", name)
            p = Param(name=name, type="bool", field=target, default=default)

        if "when" in raw:
            p = dataclasses.replace(p, when=self.when(name, raw["when"], earlier))
        self.check_field_unique(p, earlier)
        return p

    def numeric(self, name: str, kind: str, target: str, raw: dict) -> Param:
        for key in ("low", "high"):
            if key not in raw:
                raise self.fail(f"missing key {key!r}; type {kind!r} needs low and high", name)

        def number(key: str) -> Any:
            value = raw[key]
            if kind == "int":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise self.fail(f"{key} must be an integer for type 'int', but got {key}={value!r}", name)
                return value
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise self.fail(f"{key} must be a finite number for type 'float', but got {key}={value!r}", name)
            return float(value)

        low, high, default = number("low"), number("high"), number("default")
        if low > high:
            raise self.fail(f"low <= high must hold, but got low={low!r}, high={high!r}", name)
        log = raw.get("log", False)
        if not isinstance(log, bool):
            raise self.fail(f"log must be true or false, but got log={log!r}", name)
        step = None
        if "step" in raw:
            step = number("step")
            if step <= 0:
                raise self.fail(f"step must be > 0, but got step={step!r}", name)
            if log:
                raise self.fail(
                    "log = true cannot be combined with step (Optuna forbids it; KerasTuner would read "
                    f"the step as a multiplier), but got log=true, step={step!r}",
                    name,
                )
            span = (high - low) / step
            off_grid = abs(span - round(span)) > 1e-9 * max(1.0, span)
            if (kind == "int" and (high - low) % step) or (kind == "float" and off_grid):
                raise self.fail(
                    f"high - low must be a multiple of step, but got low={low!r}, high={high!r}, step={step!r}", name
                )
        if log and low <= 0:
            raise self.fail(f"log = true needs low > 0, but got low={low!r}", name)
        if not low <= default <= high:
            raise self.fail(
                f"default must lie in [low, high], but got default={default!r}, low={low!r}, high={high!r}", name
            )
        if step is not None:
            k = (default - low) / step
            if abs(k - round(k)) > 1e-9 * max(1.0, k):
                raise self.fail(
                    f"default must be on the step grid low + k * step, but got default={default!r}, "
                    f"low={low!r}, step={step!r}",
                    name,
                )
        if kind == "int" and step is None and not log:
            step = 1  # what both Optuna and KerasTuner use for a linear int
        param = Param(name=name, type=kind, field=target, default=default, low=low, high=high, step=step, log=log)
        if kind == "float" and step is not None:  # the default as the grid writes it
            param = dataclasses.replace(param, default=param.coerce(default))
        return param

    def categorical(self, name: str, target: str, raw: dict) -> Param:
        if "choices" not in raw:
            raise self.fail("missing key 'choices'; type 'categorical' needs a non-empty choices list", name)
        choices = raw["choices"]
        if not isinstance(choices, list) or not choices:
            raise self.fail(f"choices must be a non-empty list, but got choices={choices!r}", name)
        for value in choices:
            if isinstance(value, bool):
                raise self.fail(
                    f"choices must be integers, floats or strings (write true/false choices as "
                    f"type = \"bool\"), but got choices={_show(choices)}",
                    name,
                )
            if not isinstance(value, (int, float, str)) or (isinstance(value, float) and not math.isfinite(value)):
                raise self.fail(
                    f"choices must be integers, floats or strings, but got choices={choices!r}", name
                )
        if len({type(v) for v in choices}) > 1:
            raise self.fail(
                f"choices must all have one type (write 0.0, not 0, among floats), but got choices={_show(choices)}",
                name,
            )
        repeated = [v for i, v in enumerate(choices) if v in choices[:i]]
        if repeated:
            raise self.fail(
                f"choices must be distinct, but got choices={_show(choices)} ({_toml(repeated[0])} repeated)", name
            )
        default = raw["default"]
        if not _member(default, tuple(choices)) or type(default) is not type(choices[0]):
            raise self.fail(
                f"default must be one of the choices, but got default={_toml(default)}, choices={_show(choices)}", name
            )
        return Param(name=name, type="categorical", field=target, default=default, choices=tuple(choices))

    def when(self, name: str, raw: Any, earlier: list[Param]) -> tuple[str, tuple]:
        example = "like when = { version = [1] }"
        if not isinstance(raw, dict) or not raw:
            raise self.fail(f"when must be a table naming one parent, {example}, but got when={raw!r}", name)
        if len(raw) > 1:
            raise self.fail(
                f"when must name exactly one parent (conditions on several parameters are not supported), "
                f"but got when={{{', '.join(raw)}}}",
                name,
            )
        ((parent_name, values),) = raw.items()
        before = {p.name: p for p in earlier}
        if parent_name not in before:
            if parent_name == name:
                raise self.fail(f"when cannot name the parameter itself, but got when={{{parent_name} = ...}}", name)
            declared = ", ".join(before) or "(none)"
            raise self.fail(
                f"when must name a parameter declared before this one, but got {parent_name!r}; "
                f"declared before: {declared}",
                name,
            )
        parent = before[parent_name]
        if parent.when is not None:
            raise self.fail(
                f"when's parent {parent_name!r} is itself conditional; nested conditions are not "
                "supported (a KerasTuner parameter has one parent)",
                name,
            )
        if parent.type not in ("categorical", "bool"):
            raise self.fail(
                f"when's parent {parent_name!r} must be of type 'categorical' or 'bool', "
                f"but got type={parent.type!r}",
                name,
            )
        values = values if isinstance(values, list) else [values]
        if not values:
            raise self.fail(
                f"when needs at least one value of {parent_name!r}, but got when={{{parent_name} = []}}", name
            )
        bad = [v for v in values if not _member(v, parent.candidates)]
        if bad:
            raise self.fail(
                f"when values must be among the choices of {parent_name!r} {_show(parent.candidates)}, "
                f"but got {parent_name}={_toml(bad[0])}",
                name,
            )
        return parent_name, tuple(dict.fromkeys(values))  # in order, without repeats

    def check_field_unique(self, p: Param, earlier: list[Param]) -> None:
        for other in earlier:
            if other.field != p.field:
                continue
            exclusive = (
                p.when is not None
                and other.when is not None
                and p.when[0] == other.when[0]
                and not any(_member(v, other.when[1]) for v in p.when[1])
            )
            if not exclusive:
                raise self.fail(
                    f"field {p.field!r} is also set by parameter {other.name!r}; two parameters may set one "
                    "field only when their `when` conditions are mutually exclusive on the same parent",
                    p.name,
                )

    # -- every candidate builds -----------------------------------------------

    def check_builds(self, space: Space) -> None:
        try:
            space.configs({})
        except ConfigError as error:
            raise self.blame_defaults(space, error) from None
        for p in space.params:
            base: dict[str, Any] = {}
            if p.when is not None:
                base[p.when[0]] = p.when[1][0]  # a parent value that activates p
            for value in _check_values(p):
                try:
                    space.configs({**base, p.name: value})
                except ConfigError as error:
                    raise self.fail(f"value {_toml(value)} is rejected by the builder: {error}", p.name) from None

    def blame_defaults(self, space: Space, error: ConfigError) -> ConfigError:
        """Who makes the all-defaults point fail: [fixed] alone, or the first
        parameter whose default, added in declaration order, breaks it."""
        try:
            dataclasses.replace(space, params=()).configs({})
        except ConfigError as fixed_error:
            return self.fail(f"[fixed] values are rejected by the builder: {fixed_error}")
        for i, p in enumerate(space.params):
            try:
                dataclasses.replace(space, params=space.params[: i + 1]).configs({})
            except ConfigError as param_error:
                return self.fail(f"default {_toml(p.default)} is rejected by the builder: {param_error}", p.name)
        return self.fail(f"the defaults are rejected by the builder: {error}")  # pragma: no cover


# --------------------------------------------------------------------------
# Adapters


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
                raise ConfigError(
                    f"{space.path}: parameter {p.name!r}: the tuner gave no value for an active parameter"
                )
            values[p.name] = p.coerce(value)
    return values


def suggest_optuna(space: Space, trial: Any) -> dict[str, Any]:
    """Suggest the active parameters with an Optuna ``trial`` (define-by-run)."""

    def source(p: Param, active: bool) -> Any:
        if p.type == "int":
            return trial.suggest_int(p.name, p.low, p.high, step=p.step or 1, log=p.log)
        if p.type == "float":
            return trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log)
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
        return hp.Choice(p.name, list(p.choices), default=p.default, **cond)

    return sample(space, source, declare_inactive=True)
