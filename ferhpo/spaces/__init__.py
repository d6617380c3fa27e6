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

The package has three parts: `ferhpo.spaces.space` (`Param`, `Space`, building
configs from values, grid points), `ferhpo.spaces.reader` (the file format's rules)
and `ferhpo.spaces.adapters` (Optuna's ``trial.suggest_*`` and KerasTuner's
``HyperParameters``, duck-typed: this package imports neither library).
"""

from __future__ import annotations

from ferhpo.presets import spaces_dir
from ferhpo.spaces.adapters import declare_keras_tuner, sample, suggest_optuna
from ferhpo.spaces.reader import known_spaces, load_space, parse_space

# _check_values and _same are not public; the tests reach them through the package.
from ferhpo.spaces.space import PARAM_TYPES, Param, Space, _check_values, _same  # noqa: F401

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
