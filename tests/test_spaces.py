"""Search spaces: the shipped files, every load-time rule, the two adapters, the grid."""

from __future__ import annotations

import re
import textwrap

import keras_tuner
import optuna
import pytest

from conftest import space_text
from ferhpo import spaces
from ferhpo.config import DenseNetConfig, ResNetConfig, TrainConfig
from ferhpo.errors import ConfigError
from ferhpo.presets import get_preset
from ferhpo.spaces import Param, Space, declare_keras_tuner, known_spaces, load_space, suggest_optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)


def write(tmp_path, body: str, name: str = "my.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


# A small space with every kind of parameter (tests/spaces/kinds.toml).
KINDS = space_text("kinds")


# ---------------------------------------------------------------------------
# The shipped spaces


def test_shipped_spaces_are_known():
    # baseline.toml is the preset table, not a space
    assert known_spaces() == ["densenet", "densenet-cpu", "resnet", "resnet-cpu", "resnet-cpu-long"]


@pytest.mark.parametrize(
    ("space", "preset", "values"),
    [
        ("densenet", "densenet-c0.5", {}),
        ("resnet", "resnet-v1-104", {}),
        ("resnet", "resnet-v2-155", {"version": 2}),
    ],
)
def test_shipped_defaults_are_the_reference(space, preset, values):
    """Every shipped default is the study's configuration (model and recipe)."""
    model, train = load_space(space).configs(values)
    reference = get_preset(preset)
    assert model == reference.model
    assert train == reference.train


@pytest.mark.parametrize("name", ["densenet", "resnet"])
def test_shipped_spaces_describe_themselves(name):
    space = load_space(name)
    assert space.name == name and space.family == name and space.description
    assert all(p.default is not None for p in space.params)
    text = (spaces.spaces_dir() / f"{name}.toml").read_text()
    for p in space.params:  # each parameter is explained in the comment header
        assert re.search(rf"^#\s+{p.name}\b", text, re.M), p.name
    recipe = {
        "optimizer",
        "learning_rate",
        "weight_decay",
        "batch_size",
        "schedule",
        "plateau",
        "label_smoothing",
        "shift",
        "rotation",
        "zoom",
        "erasing",
        "mixup",
        "tta_hflip",
    }
    assert recipe <= {p.name for p in space.params}
    assert space.param("schedule").choices == ("reference-step", "cosine", "constant")


# The CPU spaces: small models, the study's recipe of the family as the defaults.
CPU_SPACES = [
    ("resnet-cpu", "resnet-v1-104", 277_543),
    ("resnet-cpu-long", "resnet-v1-104", 277_543),
    ("densenet-cpu", "densenet-c0.5", None),
]


@pytest.mark.parametrize(("name", "preset", "params"), CPU_SPACES)
def test_cpu_space_defaults_are_the_reference_recipe_on_a_small_model(name, preset, params):
    """The defaults of a *-cpu space are the bar its trials are measured against: the
    family's reference recipe (optimizer, rate, schedule, augmentation, batch) unchanged."""
    import keras

    from ferhpo.models import build_model

    space = load_space(name)
    assert space.family == get_preset(preset).model.family and space.description
    model, train = space.configs({})
    assert train == get_preset(preset).train
    built = build_model(model)
    if params is not None:
        assert built.count_params() == params  # ResNet v1-20, as the file says
    assert built.count_params() < get_preset(preset).reported_params / 2
    keras.backend.clear_session()


MOST_PARAMS = [("resnet-cpu", 1_000_000), ("resnet-cpu-long", 1_200_000), ("densenet-cpu", 1_000_000)]


@pytest.mark.parametrize(("name", "most"), MOST_PARAMS)
def test_every_architecture_value_of_a_cpu_space_builds(name, most):
    """Each value of each architecture parameter (the others at their defaults) gives a
    model Keras builds, small enough for a CPU (the long space's widest, v1-20 at 32 base
    filters, has 1.09 million parameters: it trains for tens of epochs)."""
    import keras

    from ferhpo.models import build_model

    space = load_space(name)
    model_fields = {f for f in space.model_class.__dataclass_fields__}
    for p in space.params:
        if p.field not in model_fields:
            continue
        base = {p.when[0]: p.when[1][0]} if p.when is not None else {}
        if p.type in ("categorical", "bool"):
            values = p.candidates
        elif p.type == "int":
            values = range(p.low, p.high + 1, p.step or 1)
        else:
            values = p.float_grid()
        for value in values:
            model, _ = space.configs({**base, p.name: value})
            assert build_model(model).count_params() < most, (p.name, value)
            keras.backend.clear_session()


def test_the_cpu_budget_trains_every_image_for_a_few_epochs():
    from ferhpo.config import BUDGETS, get_budget

    cpu = get_budget("cpu")
    assert cpu.epochs == 3 and (cpu.train_limit, cpu.val_limit, cpu.test_limit) == (None, None, None)
    assert list(BUDGETS) == ["smoke", "quick", "cpu", "full"]


def test_resnet_base_filters_stay_at_16_or_more():
    assert load_space("resnet").param("base_filters").low >= 16  # oneDNN, see the file


def test_load_space_by_path_and_errors(tmp_path):
    path = write(tmp_path, KINDS, "kinds.toml")
    assert load_space(path).name == "kinds"
    assert load_space(str(path)).path == str(path)
    with pytest.raises(ConfigError, match=r"unknown search space 'nope'; known spaces: densenet, densenet-cpu, resnet"):
        load_space("nope")
    with pytest.raises(ConfigError, match=r"missing\.toml: search space file not found; known spaces: densenet"):
        load_space(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match=r"a 'resnet' space is needed here, but got family='densenet'"):
        load_space(path, family="resnet")


# ---------------------------------------------------------------------------
# Every rule, one bad file each

HEAD = '[space]\nfamily = "densenet"\n'
RES = '[space]\nfamily = "resnet"\n'
GROWTH = '[params.growth_rate]\ntype = "int"\nlow = 8\nhigh = 32\nstep = 4\ndefault = 12\n'
VERSION = '[params.version]\ntype = "categorical"\nchoices = [1, 2]\ndefault = 1\n'

BAD = [
    # (id, file text, expected message after "<path>: ")
    ("invalid-toml", "[space\n", r"invalid TOML"),
    ("top-key", HEAD + "[other]\nx = 1\n", r"unknown key 'other' at the top level; known keys: space, fixed, params"),
    ("space-key", HEAD + 'name = "x"\n', r"unknown key 'name' in \[space\]; known keys: family, description"),
    ("no-space", GROWTH, r"missing \[space\] table"),
    ("no-family", '[space]\ndescription = "x"\n', r"missing key 'family' in \[space\]"),
    ("family", '[space]\nfamily = "vgg"\n', r"\[space\] family must be one of 'densenet', 'resnet', but got family='vgg'"),
    (
        "unknown-param",
        HEAD + '[params.width]\ntype = "int"\nlow = 1\nhigh = 2\ndefault = 1\n',
        r"parameter 'width': unknown parameter: field 'width' is not a field of DenseNetConfig or TrainConfig.*"
        r"known fields: DenseNetConfig: growth_rate",
    ),
    (
        "unknown-field",
        HEAD + '[params.k]\nfield = "depth"\ntype = "int"\nlow = 1\nhigh = 2\ndefault = 1\n',
        r"parameter 'k': unknown parameter: field 'depth'",
    ),
    ("param-key", HEAD + GROWTH + "lo = 3\n", r"parameter 'growth_rate': unknown key 'lo'; known keys: type"),
    (
        "bad-type",
        HEAD + '[params.growth_rate]\ntype = "bad type"\ndefault = 12\n',
        r"parameter 'growth_rate': type must be one of 'int', 'float', 'categorical', 'bool', but got type='bad type'",
    ),
    ("no-type", HEAD + "[params.growth_rate]\ndefault = 12\n", r"parameter 'growth_rate': missing key 'type'"),
    ("misplaced-key", HEAD + GROWTH + "choices = [8]\n", r"parameter 'growth_rate': key 'choices' does not apply to type 'int'"),
    (
        "no-default",
        HEAD + '[params.growth_rate]\ntype = "int"\nlow = 8\nhigh = 32\n',
        r"parameter 'growth_rate': missing key 'default'; every parameter needs a default",
    ),
    (
        "no-high",
        HEAD + '[params.growth_rate]\ntype = "int"\nlow = 8\ndefault = 12\n',
        r"parameter 'growth_rate': missing key 'high'",
    ),
    (
        "int-low",
        HEAD + '[params.growth_rate]\ntype = "int"\nlow = 8.0\nhigh = 32\ndefault = 12\n',
        r"parameter 'growth_rate': low must be an integer for type 'int', but got low=8\.0",
    ),
    (
        "int-default",
        HEAD + '[params.growth_rate]\ntype = "int"\nlow = 8\nhigh = 32\ndefault = 12.5\n',
        r"parameter 'growth_rate': default must be an integer for type 'int', but got default=12\.5",
    ),
    (
        "empty-range",
        HEAD + '[params.growth_rate]\ntype = "int"\nlow = 32\nhigh = 8\ndefault = 12\n',
        r"parameter 'growth_rate': low <= high must hold, but got low=32, high=8",
    ),
    (
        "float-range",
        HEAD + '[params.dropout]\ntype = "float"\nlow = 0.3\nhigh = 0.1\ndefault = 0.2\n',
        r"parameter 'dropout': low <= high must hold, but got low=0\.3, high=0\.1",
    ),
    (
        "float-nan",
        HEAD + '[params.dropout]\ntype = "float"\nlow = nan\nhigh = 0.1\ndefault = 0.0\n',
        r"parameter 'dropout': low must be a finite number for type 'float', but got low=nan",
    ),
    (
        "step-zero",
        HEAD + '[params.growth_rate]\ntype = "int"\nlow = 8\nhigh = 32\nstep = 0\ndefault = 12\n',
        r"parameter 'growth_rate': step must be > 0, but got step=0",
    ),
    (
        "step-float-neg",
        HEAD + '[params.dropout]\ntype = "float"\nlow = 0.0\nhigh = 0.3\nstep = -0.1\ndefault = 0.0\n',
        r"parameter 'dropout': step must be > 0, but got step=-0\.1",
    ),
    (
        "step-multiple",
        HEAD + '[params.growth_rate]\ntype = "int"\nlow = 8\nhigh = 30\nstep = 4\ndefault = 12\n',
        r"parameter 'growth_rate': high - low must be a multiple of step, but got low=8, high=30, step=4",
    ),
    (
        "float-step-multiple",
        HEAD + '[params.dropout]\ntype = "float"\nlow = 0.0\nhigh = 0.25\nstep = 0.1\ndefault = 0.0\n',
        r"parameter 'dropout': high - low must be a multiple of step",
    ),
    (
        "log-low",
        HEAD + '[params.dropout]\ntype = "float"\nlow = 0.0\nhigh = 0.3\nlog = true\ndefault = 0.1\n',
        r"parameter 'dropout': log = true needs low > 0, but got low=0\.0",
    ),
    (
        "log-step",
        HEAD + '[params.growth_rate]\ntype = "int"\nlow = 8\nhigh = 32\nstep = 4\nlog = true\ndefault = 12\n',
        r"parameter 'growth_rate': log = true cannot be combined with step .* but got log=true, step=4",
    ),
    (
        "log-not-bool",
        HEAD + '[params.growth_rate]\ntype = "int"\nlow = 8\nhigh = 32\nlog = "yes"\ndefault = 12\n',
        r"parameter 'growth_rate': log must be true or false, but got log='yes'",
    ),
    (
        "default-range",
        HEAD + '[params.growth_rate]\ntype = "int"\nlow = 8\nhigh = 32\ndefault = 40\n',
        r"parameter 'growth_rate': default must lie in \[low, high\], but got default=40, low=8, high=32",
    ),
    (
        "default-grid",
        HEAD + '[params.growth_rate]\ntype = "int"\nlow = 8\nhigh = 32\nstep = 4\ndefault = 13\n',
        r"parameter 'growth_rate': default must be on the step grid low \+ k \* step, but got default=13",
    ),
    (
        "float-default-grid",
        HEAD + '[params.dropout]\ntype = "float"\nlow = 0.0\nhigh = 0.3\nstep = 0.1\ndefault = 0.15\n',
        r"parameter 'dropout': default must be on the step grid",
    ),
    (
        "no-choices",
        HEAD + '[params.optimizer]\ntype = "categorical"\ndefault = "adam"\n',
        r"parameter 'optimizer': missing key 'choices'",
    ),
    (
        "empty-choices",
        HEAD + '[params.optimizer]\ntype = "categorical"\nchoices = []\ndefault = "adam"\n',
        r"parameter 'optimizer': choices must be a non-empty list, but got choices=\[\]",
    ),
    (
        "duplicate-choices",
        HEAD + '[params.optimizer]\ntype = "categorical"\nchoices = ["adam", "sgd", "adam"]\ndefault = "adam"\n',
        r"parameter 'optimizer': choices must be distinct, but got choices=\[\"adam\", \"sgd\", \"adam\"\] \(\"adam\" repeated\)",
    ),
    (
        "mixed-choices",
        HEAD + '[params.weight_decay]\ntype = "categorical"\nchoices = [0, 1e-4]\ndefault = 0\n',
        r"parameter 'weight_decay': choices must all have one type .* but got choices=\[0, 0\.0001\]",
    ),
    (
        "bool-choices",
        HEAD + '[params.bottleneck]\ntype = "categorical"\nchoices = [true, false]\ndefault = true\n',
        r"parameter 'bottleneck': choices must be integers, floats or strings \(write true/false choices as "
        r"type = \"bool\"\)",
    ),
    (
        "table-choices",
        HEAD + '[params.head]\ntype = "categorical"\nchoices = [{ a = 1 }]\ndefault = "gap"\n',
        r"parameter 'head': choices must be integers, floats or strings",
    ),
    (
        "default-choice",
        HEAD + '[params.optimizer]\ntype = "categorical"\nchoices = ["adam", "sgd"]\ndefault = "rmsprop"\n',
        r"parameter 'optimizer': default must be one of the choices, but got default=\"rmsprop\", choices=\[\"adam\", \"sgd\"\]",
    ),
    (
        "default-choice-type",
        HEAD + '[params.batch_size]\ntype = "categorical"\nchoices = [32, 64]\ndefault = 32.0\n',
        r"parameter 'batch_size': default must be one of the choices, but got default=32\.0",
    ),
    (
        "bool-default",
        HEAD + '[params.bottleneck]\ntype = "bool"\ndefault = 1\n',
        r"parameter 'bottleneck': default must be true or false for type 'bool', but got default=1",
    ),
    (
        "name",
        HEAD + '[params."growth-rate"]\nfield = "growth_rate"\ntype = "int"\nlow = 8\nhigh = 32\ndefault = 12\n',
        r"parameter 'growth-rate': a parameter name must be an identifier",
    ),
    (
        "not-a-table",
        HEAD + "[params]\ngrowth_rate = 12\n",
        r"parameter 'growth_rate': must be a table \[params.growth_rate\] with type and default, but got 12",
    ),
    (
        "when-unknown",
        HEAD + GROWTH + "when = { flavour = [1] }\n",
        r"parameter 'growth_rate': when must name a parameter declared before this one, but got 'flavour'",
    ),
    (
        "when-later",
        HEAD + GROWTH + "when = { bottleneck = true }\n" + '[params.bottleneck]\ntype = "bool"\ndefault = true\n',
        r"parameter 'growth_rate': when must name a parameter declared before this one, but got 'bottleneck'; "
        r"declared before: \(none\)",
    ),
    (
        "when-self",
        HEAD + GROWTH + "when = { growth_rate = 12 }\n",
        r"parameter 'growth_rate': when cannot name the parameter itself",
    ),
    (
        "when-nested",
        HEAD + '[params.bottleneck]\ntype = "bool"\ndefault = true\n'
        '[params.head]\ntype = "categorical"\nchoices = ["avg4", "gap"]\ndefault = "avg4"\nwhen = { bottleneck = true }\n'
        + GROWTH
        + 'when = { head = "gap" }\n',
        r"parameter 'growth_rate': when's parent 'head' is itself conditional; nested conditions are not supported",
    ),
    (
        "when-parent-type",
        HEAD + '[params.num_blocks]\ntype = "int"\nlow = 2\nhigh = 4\ndefault = 4\n' + GROWTH + "when = { num_blocks = [3] }\n",
        r"parameter 'growth_rate': when's parent 'num_blocks' must be of type 'categorical' or 'bool', but got type='int'",
    ),
    (
        "when-two-parents",
        HEAD + '[params.bottleneck]\ntype = "bool"\ndefault = true\n'
        '[params.head]\ntype = "categorical"\nchoices = ["avg4", "gap"]\ndefault = "avg4"\n'
        + GROWTH
        + 'when = { bottleneck = true, head = "gap" }\n',
        r"parameter 'growth_rate': when must name exactly one parent .* but got when=\{bottleneck, head\}",
    ),
    (
        "when-value",
        RES + VERSION + '[params.depth]\ntype = "int"\nlow = 20\nhigh = 26\nstep = 6\ndefault = 20\nwhen = { version = [3] }\n',
        r"parameter 'depth': when values must be among the choices of 'version' \[1, 2\], but got version=3",
    ),
    (
        "when-value-type",
        RES + VERSION + '[params.depth]\ntype = "int"\nlow = 20\nhigh = 26\nstep = 6\ndefault = 20\nwhen = { version = ["1"] }\n',
        r"parameter 'depth': when values must be among the choices of 'version' \[1, 2\], but got version=\"1\"",
    ),
    (
        "when-not-table",
        HEAD + GROWTH + 'when = "bottleneck"\n',
        r"parameter 'growth_rate': when must be a table naming one parent, like when = \{ version = \[1\] \}",
    ),
    (
        "same-field",
        HEAD + GROWTH + '[params.growth_big]\nfield = "growth_rate"\ntype = "int"\nlow = 32\nhigh = 64\ndefault = 32\n',
        r"parameter 'growth_big': field 'growth_rate' is also set by parameter 'growth_rate'; two parameters may set "
        r"one field only when their `when` conditions are mutually exclusive",
    ),
    (
        "same-field-overlap",
        RES
        + VERSION
        + '[params.d1]\nfield = "depth"\ntype = "int"\nlow = 20\nhigh = 26\nstep = 6\ndefault = 20\nwhen = { version = [1] }\n'
        + '[params.d2]\nfield = "depth"\ntype = "int"\nlow = 29\nhigh = 38\nstep = 9\ndefault = 29\n'
        + "when = { version = [1, 2] }\n",
        r"parameter 'd2': field 'depth' is also set by parameter 'd1'",
    ),
    (
        "fixed-param",
        HEAD + "[fixed]\ngrowth_rate = 16\n" + GROWTH,
        r"parameter 'growth_rate': field 'growth_rate' is also set in \[fixed\]; a field is either fixed or searched",
    ),
    (
        "fixed-unknown",
        HEAD + "[fixed]\nwidth = 16\n",
        r"\[fixed\] 'width' is not a field of DenseNetConfig or TrainConfig; known fields",
    ),
    (
        "fixed-rejected",
        HEAD + "[fixed]\ncompression = 0.0\n",
        r"\[fixed\] values are rejected by the builder: DenseNet compression must be in \(0, 1\]",
    ),
    (
        "builder",
        HEAD + '[params.num_blocks]\ntype = "int"\nlow = 2\nhigh = 5\ndefault = 4\n',
        r"parameter 'num_blocks': value 5 is rejected by the builder: DenseNet with num_blocks=5 and head='avg4'",
    ),
    (
        "builder-float",
        HEAD + '[params.zoom]\ntype = "float"\nlow = 0.0\nhigh = 1.0\ndefault = 0.0\n',
        r"parameter 'zoom': value 1\.0 is rejected by the builder: TrainConfig zoom must be in \[0, 1\)",
    ),
    (
        "builder-type",
        HEAD + '[params.growth_rate]\ntype = "float"\nlow = 8\nhigh = 32\ndefault = 12\n',
        r"parameter 'growth_rate': default 12\.0 is rejected by the builder: DenseNet growth_rate must be a positive integer",
    ),
    (
        "builder-choice",
        HEAD + '[params.optimizer]\ntype = "categorical"\nchoices = ["adam", "lion"]\ndefault = "adam"\n',
        r"parameter 'optimizer': value \"lion\" is rejected by the builder: TrainConfig optimizer must be one of",
    ),
    (
        "builder-step",
        RES + '[params.depth_v1]\nfield = "depth"\ntype = "int"\nlow = 20\nhigh = 26\nstep = 3\ndefault = 20\n',
        r"parameter 'depth_v1': value 23 is rejected by the builder: ResNet v1 depth must be 6n\+2",
    ),
    # a child is checked with the parent value that activates it: 26 is a v1 depth, not a v2 one
    (
        "builder-conditional",
        RES + VERSION + '[params.depth_v2]\nfield = "depth"\ntype = "int"\nlow = 26\nhigh = 29\n'
        "step = 3\ndefault = 29\nwhen = { version = 2 }\n",
        r"parameter 'depth_v2': value 26 is rejected by the builder: ResNet v2 depth must be 9n\+2",
    ),
    # a parent value is checked with its children's defaults: v2 with the v1 default depth
    (
        "builder-parent",
        RES + VERSION + '[params.depth]\ntype = "int"\nlow = 26\nhigh = 32\nstep = 6\ndefault = 26\n',
        r"parameter 'version': value 2 is rejected by the builder: ResNet v2 depth must be 9n\+2",
    ),
]


@pytest.mark.parametrize(("text", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_space_names_file_parameter_and_rule(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match="^" + re.escape(str(path)) + ": " + message):
        load_space(path)


def test_bad_ids_are_unique():
    assert len({b[0] for b in BAD}) == len(BAD)


def test_a_good_space_with_every_feature_loads(tmp_path):
    space = load_space(write(tmp_path, KINDS))
    assert [p.type for p in space.params] == ["bool", "int", "int", "float", "float", "float", "categorical"]
    assert space.param("compression").when == ("bottleneck", (True,))
    assert space.param("layers_per_block").step == 3 and space.param("growth_rate").step is None
    assert space.fixed == {"num_blocks": 3}
    model, train = space.configs({"bottleneck": False, "compression": 0.9, "optimizer": "sgd"})
    assert isinstance(model, DenseNetConfig) and isinstance(train, TrainConfig)
    assert model.num_blocks == 3 and model.compression == 0.5  # inactive compression ignored
    assert train.optimizer == "sgd" and model.growth_rate == 12
    data = space.to_dict()
    assert data["params"][4] == {
        "name": "compression",
        "type": "float",
        "field": "compression",
        "low": 0.3,
        "high": 1.0,
        "step": None,
        "log": False,
        "default": 0.5,
        "when": {"bottleneck": [True]},
    }
    assert data["fixed"] == {"num_blocks": 3} and data["family"] == "densenet"


def test_configs_rejects_unknown_values_and_propagates_builder_errors():
    space = load_space("densenet")
    with pytest.raises(ConfigError, match=r"unknown parameter 'width' in the values; parameters: growth_rate"):
        space.configs({"width": 3})
    with pytest.raises(ConfigError, match=r"DenseNet compression must be in \(0, 1\]"):
        space.configs({"compression": 0.0})


def test_equal_fields_with_exclusive_conditions_are_fine(tmp_path):
    space = load_space("resnet")
    assert space.param("depth_v1").field == space.param("depth_v2").field == "depth"


# ---------------------------------------------------------------------------
# Conditionals


def test_resnet_only_the_matching_depth_is_active():
    space = load_space("resnet")
    v1 = space.defaults()
    assert v1["version"] == 1 and "depth_v1" in v1 and "depth_v2" not in v1
    depth_v1, depth_v2 = space.param("depth_v1"), space.param("depth_v2")
    assert depth_v1.active({"version": 1}) and not depth_v2.active({"version": 1})
    assert depth_v2.active({"version": 2}) and not depth_v1.active({"version": 2})
    assert not depth_v1.active({})  # no parent value: not active
    model, _ = space.configs({"version": 2, "depth_v1": 20, "depth_v2": 29})
    assert model == ResNetConfig(version=2, depth=29)  # depth_v1 is inactive, ignored
    model, _ = space.configs({"version": 1, "depth_v1": 20, "depth_v2": 29})
    assert model == ResNetConfig(version=1, depth=20)


def test_active_keeps_bools_apart_from_ints():
    p = Param(name="x", type="int", field="depth", default=20, low=20, high=20, step=1, when=("flag", (True,)))
    assert p.active({"flag": True}) and not p.active({"flag": 1})


# ---------------------------------------------------------------------------
# The adapters


def _optuna_kind(dist) -> tuple:
    if isinstance(dist, optuna.distributions.IntDistribution):
        return ("int", dist.low, dist.high, dist.step, dist.log)
    if isinstance(dist, optuna.distributions.FloatDistribution):
        if dist.step is not None:  # a float grid is its values (KerasTuner: an ordered Choice)
            n = round((dist.high - dist.low) / dist.step) + 1
            return ("grid", tuple(round(dist.low + k * dist.step, 12) for k in range(n)))
        return ("float", dist.low, dist.high, dist.log)
    assert isinstance(dist, optuna.distributions.CategoricalDistribution)
    return ("categorical", tuple(dist.choices))


def _keras_tuner_kind(hp, param: Param) -> tuple:
    name = type(hp).__name__
    if name == "Int":
        return ("int", hp.min_value, hp.max_value, hp.step or 1, hp.sampling == "log")
    if name == "Float":
        assert hp.step is None
        return ("float", hp.min_value, hp.max_value, hp.sampling == "log")
    if name == "Boolean":
        return ("categorical", (False, True))
    assert name == "Choice"
    if param.type == "float":  # a float grid, declared as an ordered Choice of its values
        assert param.step is not None and hp.ordered
        return ("grid", tuple(round(v, 12) for v in hp.values))
    return ("categorical", tuple(hp.values))


def _optuna_space(space: Space, enqueue: list[dict]) -> dict[str, tuple]:
    """Union of the distributions Optuna trials saw, one trial per enqueued parent value."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen: dict[str, tuple] = {}
    for fixed in enqueue:
        study.enqueue_trial(fixed)
        trial = study.ask()
        values = suggest_optuna(space, trial)
        assert list(values) == list(trial.params)  # only active ones, in declaration order
        for name, value in fixed.items():
            assert values[name] == value
        seen.update({name: _optuna_kind(d) for name, d in trial.distributions.items()})
    return seen


@pytest.mark.parametrize(
    ("name", "enqueue"),
    [
        ("densenet", [{}]),
        ("resnet", [{"version": 1}, {"version": 2}]),
        ("kinds", [{"bottleneck": True}, {"bottleneck": False}]),
    ],
)
def test_adapters_declare_the_same_space(tmp_path, name, enqueue):
    space = load_space(write(tmp_path, KINDS, "kinds.toml")) if name == "kinds" else load_space(name)
    hp = keras_tuner.HyperParameters()
    values = declare_keras_tuner(space, hp)
    assert values == space.defaults()  # a fresh hp holds the defaults, active ones only
    keras_tuner_space = {h.name: _keras_tuner_kind(h, space.param(h.name)) for h in hp.space}
    assert list(keras_tuner_space) == [p.name for p in space.params]  # all, conditionals included
    assert _optuna_space(space, enqueue) == keras_tuner_space
    for p in space.params:  # the same conditions
        (h,) = [h for h in hp.space if h.name == p.name]
        expected = [] if p.when is None else [(p.when[0], list(p.when[1]))]
        assert [(c.name, list(c.values)) for c in h.conditions] == expected


def test_keras_tuner_values_follow_the_parent():
    space = load_space("resnet")
    hp = keras_tuner.HyperParameters()
    declare_keras_tuner(space, hp)
    hp.values.update(version=2, depth_v2=38)
    values = declare_keras_tuner(space, hp)
    assert values["version"] == 2 and values["depth_v2"] == 38 and "depth_v1" not in values
    model, _ = space.configs(values)
    assert model.version == 2 and model.depth == 38


def test_keras_tuner_log_int_has_no_step(tmp_path):
    """KerasTuner reads a log step as a multiplier: a log parameter is declared without one."""
    space = load_space(write(tmp_path, KINDS))
    hp = keras_tuner.HyperParameters()
    declare_keras_tuner(space, hp)
    (growth,) = [h for h in hp.space if h.name == "growth_rate"]
    assert growth.sampling == "log" and growth.step is None


def test_sample_coerces_values_to_their_types(tmp_path):
    space = load_space(write(tmp_path, KINDS))
    given = {
        "bottleneck": 1,
        "growth_rate": 12.0,
        "layers_per_block": 5,
        "dropout": 0.30000000000000004,
        "compression": 1,
        "learning_rate": 1e-3,
        "optimizer": "sgd",
    }
    values = spaces.sample(space, lambda p, active: given[p.name])
    assert values["bottleneck"] is True and type(values["growth_rate"]) is int
    assert values["dropout"] == 0.3 and type(values["compression"]) is float
    calls = []
    spaces.sample(space, lambda p, active: calls.append((p.name, active)) or p.default, declare_inactive=True)
    assert len(calls) == len(space.params)


def test_random_samples_build(tmp_path):
    """Whatever Optuna or KerasTuner samples builds valid configs."""
    for space in (load_space("densenet"), load_space("resnet"), load_space(write(tmp_path, KINDS))):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
        for _ in range(20):
            space.configs(suggest_optuna(space, study.ask()))
        hp = keras_tuner.HyperParameters()
        declare_keras_tuner(space, hp)
        for seed in range(20):
            for h in hp.space:
                if hp.is_active(h):
                    hp.values[h.name] = h.random_sample(seed)
            space.configs(declare_keras_tuner(space, hp))


# ---------------------------------------------------------------------------
# The grid


@pytest.mark.parametrize("name", ["densenet", "resnet", "kinds"])
@pytest.mark.parametrize("max_values", [3, 5, 8])
def test_grid_values_lie_in_the_space(tmp_path, name, max_values):
    space = load_space(write(tmp_path, KINDS, "kinds.toml")) if name == "kinds" else load_space(name)
    grid = space.grid(max_values)
    assert list(grid) == [p.name for p in space.params]  # conditional ones included
    for p in space.params:
        values = grid[p.name]
        assert len(values) == len(set(values))
        assert any(spaces._same(v, p.default) for v in values), (p.name, values)
        if p.type in ("categorical", "bool"):
            assert values == list(p.candidates)
            continue
        assert len(values) <= max_values
        assert values == sorted(values) and values[0] == p.low and values[-1] == p.high
        for v in values:
            assert type(v) is (int if p.type == "int" else float)
            if p.type == "int":
                assert (v - p.low) % (p.step or 1) == 0
            elif p.step is not None:
                assert v in p.float_grid()
        for v in values:  # every grid point builds
            parent = {p.when[0]: p.when[1][0]} if p.when else {}
            space.configs({**parent, p.name: v})


def test_grid_examples(tmp_path):
    space = load_space(write(tmp_path, KINDS))
    grid = space.grid(5)
    assert grid["bottleneck"] == [False, True]
    assert grid["layers_per_block"] == [2, 5, 8, 11, 14]
    assert grid["dropout"] == [0.0, 0.1, 0.2, 0.3]
    assert grid["learning_rate"] == [1e-4, 1e-3, 3.162e-3, 1.778e-2, 1e-1]  # log spaced, default swapped in
    assert grid["compression"] == [0.3, 0.5, 0.65, 0.825, 1.0]
    assert space.grid(3)["growth_rate"] == [4, 12, 64]
    with pytest.raises(ConfigError, match=r"grid max_values must be an integer >= 3 .* but got max_values=2"):
        space.grid(2)


def test_grid_drives_optuna_grid_sampler(tmp_path):
    space = load_space(write(tmp_path, KINDS))
    grid = space.grid(3)
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(grid, seed=0))
    for _ in range(5):
        trial = study.ask()
        values = suggest_optuna(space, trial)
        for name, value in values.items():
            assert value in grid[name]
        space.configs(values)
        study.tell(trial, 0.0)


def test_large_int_ranges_check_quickly(tmp_path):
    """A huge integer range is checked at its ends, default and 253 points between."""
    text = HEAD + '[params.stem_filters]\ntype = "int"\nlow = 1\nhigh = 10000000\ndefault = 24\n'
    space = load_space(write(tmp_path, text))
    assert len(spaces._check_values(space.param("stem_filters"))) <= 256
    assert space.grid(5)["stem_filters"][:2] == [1, 24]
