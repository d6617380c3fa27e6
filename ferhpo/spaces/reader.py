"""Reading and validating space files: a TOML document in, a `Space` out, or the first problem.

The file format is described in `ferhpo.spaces`. Every rule is checked here, and
every candidate value is built once (`_Reader.check_builds`), so that errors name
the file and the parameter before any search starts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ferhpo.config import TrainConfig
from ferhpo.errors import ConfigError
from ferhpo.presets import PRESET_FILE, read_toml, spaces_dir
from ferhpo.spaces.space import (
    _FAMILIES,
    PARAM_TYPES,
    Param,
    Space,
    _check_values,
    _field_names,
    _member,
    _show,
    _toml,
)

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
#: The most values a float parameter's step grid may hold: the grid is listed whole
#: (snapping samples to it, KerasTuner's Choice), and a finer one is a continuous range.
_MAX_FLOAT_GRID = 100_000


def known_spaces() -> list[str]:
    """Names of the shipped spaces (``*.toml`` in `spaces_dir`, except the preset table)."""
    return sorted(p.stem for p in spaces_dir().glob("*.toml") if p.name != PRESET_FILE)


def load_space(name_or_path: str | Path | Space, *, family: str | None = None) -> Space:
    """A shipped space by name (``"densenet"``, ``"resnet"``) or a ``.toml`` file by path.

    A `Space` passes through. With ``family``, a space of another family is an error.
    """
    if isinstance(name_or_path, Space):
        space = name_or_path
    else:
        text = str(name_or_path)
        looks_like_path = isinstance(name_or_path, Path) or text.endswith(".toml") or "/" in text or "\\" in text
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
        raise ConfigError(f"{space.path}: a {family!r} space is needed here, but got family={space.family!r}")
    return space


def parse_space(path: str | Path) -> Space:
    """Read and validate the space file at ``path`` (the format: `ferhpo.spaces`)."""
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
                raise self.fail(f"[fixed] {key!r} is not a field of {self.model_name} or TrainConfig; {self.known_fields()}")

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
        return f"known fields: {self.model_name}: {', '.join(self.model_fields)}; TrainConfig: {', '.join(self.train_fields)}"

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
                f'(set field = "..." to target one); {self.known_fields()}',
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
            if kind == "float" and not span < _MAX_FLOAT_GRID:  # also an infinite span
                raise self.fail(
                    f"a float step grid may hold at most {_MAX_FLOAT_GRID:,} values ((high - low) / step + 1; "
                    f"drop step for a continuous range), but got low={low!r}, high={high!r}, step={step!r}",
                    name,
                )
            off_grid = abs(span - round(span)) > 1e-9 * max(1.0, span)
            if (kind == "int" and (high - low) % step) or (kind == "float" and off_grid):
                raise self.fail(f"high - low must be a multiple of step, but got low={low!r}, high={high!r}, step={step!r}", name)
        if log and low <= 0:
            raise self.fail(f"log = true needs low > 0, but got low={low!r}", name)
        if not low <= default <= high:
            raise self.fail(f"default must lie in [low, high], but got default={default!r}, low={low!r}, high={high!r}", name)
        if step is not None:
            k = (default - low) / step
            if abs(k - round(k)) > 1e-9 * max(1.0, k):
                raise self.fail(
                    f"default must be on the step grid low + k * step, but got default={default!r}, low={low!r}, step={step!r}",
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
                    f'type = "bool"), but got choices={_show(choices)}',
                    name,
                )
            if not isinstance(value, (int, float, str)) or (isinstance(value, float) and not math.isfinite(value)):
                raise self.fail(f"choices must be integers, floats or strings, but got choices={choices!r}", name)
        if len({type(v) for v in choices}) > 1:
            raise self.fail(
                f"choices must all have one type (write 0.0, not 0, among floats), but got choices={_show(choices)}",
                name,
            )
        repeated = [v for i, v in enumerate(choices) if v in choices[:i]]
        if repeated:
            raise self.fail(f"choices must be distinct, but got choices={_show(choices)} ({_toml(repeated[0])} repeated)", name)
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
                f"but got when={{{', '.join(k if k.isprintable() else repr(k) for k in raw)}}}",
                name,
            )
        ((parent_name, values),) = raw.items()
        before = {p.name: p for p in earlier}
        if parent_name not in before:
            if parent_name == name:
                raise self.fail(f"when cannot name the parameter itself, but got when={{{parent_name} = ...}}", name)
            declared = ", ".join(before) or "(none)"
            raise self.fail(
                f"when must name a parameter declared before this one, but got {parent_name!r}; declared before: {declared}",
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
                f"when's parent {parent_name!r} must be of type 'categorical' or 'bool', but got type={parent.type!r}",
                name,
            )
        values = values if isinstance(values, list) else [values]
        if not values:
            raise self.fail(f"when needs at least one value of {parent_name!r}, but got when={{{parent_name} = []}}", name)
        assert parent.candidates is not None  # a categorical or bool parent (checked above)
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
