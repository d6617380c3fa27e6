"""The reference preset table (``search_spaces/baseline.toml``) and overrides of its configurations.

`load_presets` reads the table into `Preset` records, `get_preset` picks one with
fields overridden, and `override` / `override_name` apply ``--set``-style changes
to any model config and recipe and name the result. The module also owns where the
shipped ``search_spaces`` folder is: the preset table and the search spaces live in
it side by side, so `ferhpo.spaces` finds its files through `spaces_dir` and knows
the table (`PRESET_FILE`) is not a space.

Like `ferhpo.config`, it imports the standard library only, so the CLI and the
report read the table without loading Keras.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from ferhpo.config import (
    DenseNetConfig,
    ModelConfig,
    Preset,
    ResNetConfig,
    TrainConfig,
    check_keys,
    model_config_from_dict,
)
from ferhpo.errors import ConfigError

__all__ = [
    "PRESET_FILE",
    "SAME_CONFIGURATION",
    "spaces_dir",
    "default_presets_path",
    "read_toml",
    "load_presets",
    "get_preset",
    "override_preset",
    "override",
    "override_name",
]

PRESET_FILE = "baseline.toml"
_PRESET_KEYS = ("description", "protocol", "reported_test_accuracy", "reported_params", "model", "train")


def spaces_dir() -> Path:
    """The ``search_spaces`` folder, home of the preset table and the shipped spaces:
    inside the package when packaging copied it there (``ferhpo/search_spaces``),
    else the repository's ``search_spaces``."""
    package_dir = Path(__file__).resolve().parent
    candidates = (package_dir / "search_spaces", package_dir.parent / "search_spaces")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise ConfigError(f"the search_spaces folder was not found; looked in: {tried}")


def default_presets_path() -> Path:
    """Where the preset table lives: `PRESET_FILE` in `spaces_dir`."""
    return spaces_dir() / PRESET_FILE


def read_toml(path: Path, *, not_found: str) -> dict[str, Any]:
    """A TOML file as a dict; ConfigError with `not_found`, or naming the file and the syntax error."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(not_found) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start}); expected a TOML file") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid TOML: arrays or tables nested too deeply; expected a TOML file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; expected a TOML file") from None


def _table(what: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be a table, but got {value!r}")
    return value


def _parse_preset(path: Path, name: str, raw: Any) -> Preset:
    where = f"{path}: preset {name!r}"
    try:
        raw = _table("the preset", raw)
        check_keys("the preset", raw, _PRESET_KEYS)
        required = [key for key in _PRESET_KEYS if key != "description"]
        missing = [key for key in required if key not in raw]
        if missing:
            raise ConfigError(f"missing key {missing[0]!r}; a preset needs {', '.join(required)}")
        model = model_config_from_dict(_table("model", raw["model"]))
        train_raw = _table("train", raw["train"])
        check_keys("train", train_raw, tuple(f.name for f in dataclasses.fields(TrainConfig)))
        return Preset(
            name=name,
            model=model,
            train=TrainConfig(**train_raw),
            protocol=raw["protocol"],
            reported_test_accuracy=raw["reported_test_accuracy"],
            reported_params=raw["reported_params"],
            description=raw.get("description", ""),
        )
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


def load_presets(path: str | Path | None = None) -> dict[str, Preset]:
    """Read the preset table (default: `default_presets_path`) into ``{name: Preset}``.

    The file holds one ``[presets."<name>"]`` table per preset with inline
    ``model`` and ``train`` tables; unknown keys are errors, not ignored, so a
    typo cannot silently fall back to a default.
    """
    path = Path(path) if path is not None else default_presets_path()
    document = read_toml(path, not_found=f"preset table not found: {path}")

    try:
        check_keys("the top level", document, ("presets",))
        presets = _table("presets", document.get("presets", {}))
        if not presets:
            raise ConfigError('no presets defined; expected [presets."<name>"] tables')
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    return {name: _parse_preset(path, name, raw) for name, raw in presets.items()}


def get_preset(name: str, *, path: str | Path | None = None, **overrides: Any) -> Preset:
    """Return preset ``name``, with ``overrides`` applied by `dataclasses.replace`.

    An override may name a field of the preset's model config, of its
    ``TrainConfig``, or of the ``Preset`` itself (the three sets do not
    overlap), e.g. ``get_preset("densenet-c0.5", compression=0.6, batch_size=16)``.
    The result is validated like any other config.
    """
    presets = load_presets(path)
    if name not in presets:
        known = ", ".join(n if n.isprintable() else repr(n) for n in presets)  # a name may hold a line break
        raise ConfigError(f"unknown preset {name!r}; known presets: {known}")
    return override_preset(presets[name], overrides)


def override_preset(preset: Preset, changes: Mapping[str, Any]) -> Preset:
    """`preset` with ``changes`` applied as `get_preset` applies its overrides. It takes
    them as a mapping, so that any name a user gives (``--set path=...``) is an
    unknown override, never a clash with a Python parameter."""
    # Whole-object overrides (model=..., train=...) apply first, field overrides on top.
    preset_fields = {f.name for f in dataclasses.fields(Preset)} - {"name"}
    preset = dataclasses.replace(preset, **{k: v for k, v in changes.items() if k in preset_fields})
    if not isinstance(preset.model, (DenseNetConfig, ResNetConfig)):
        return preset  # unreachable: Preset validation has rejected the bad model above
    fields = {k: v for k, v in changes.items() if k not in preset_fields}
    owner = f"preset {preset.name!r}"
    model, train = override(preset.model, preset.train, fields, owner=owner, also=preset_fields)
    return dataclasses.replace(preset, model=model, train=train)


def override(
    model: ModelConfig, train: TrainConfig, changes: Mapping[str, Any], *, owner: str, also: Collection[str] = frozenset()
) -> tuple[ModelConfig, TrainConfig]:
    """`model` and `train` with ``changes`` merged by `dataclasses.replace`, each field
    going to the config that has it; an unknown name is an error listing the known
    ones (and ``also``, names the caller accepts besides)."""
    model_fields = {f.name for f in dataclasses.fields(model)}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = [key for key in changes if key not in model_fields | train_fields]
    if unknown:
        known = ", ".join(sorted(model_fields | train_fields | set(also)))
        raise ConfigError(f"unknown override {unknown[0]!r} for {owner}; known fields: {known}")
    model_changes = {k: v for k, v in changes.items() if k in model_fields}
    train_changes = {k: v for k, v in changes.items() if k in train_fields}
    return (
        dataclasses.replace(model, **model_changes) if model_changes else model,
        dataclasses.replace(train, **train_changes) if train_changes else train,
    )


#: Overrides that keep a configuration what it is: another seed is a repetition, another
#: precision the same model computed faster. Any other override makes a new configuration.
SAME_CONFIGURATION = ("seed", "precision")


def override_name(name: str, changes: Mapping[str, Any]) -> str:
    """The name of configuration `name` with ``changes`` applied: ``name+field=value...``
    (sorted by field), so that a modified preset never passes for the preset itself.
    Fields of `SAME_CONFIGURATION` leave the name alone."""
    shown = sorted((k, v) for k, v in changes.items() if k not in SAME_CONFIGURATION)

    def text(value: Any) -> str:
        return f"{value:g}" if isinstance(value, float) else str(value).lower() if isinstance(value, bool) else str(value)

    return name + "".join(f"+{key}={text(value)}" for key, value in shown)
