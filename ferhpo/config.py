"""Frozen configurations for models and training, budgets, and the record of a preset.

Everything here is plain data: the model builders turn a model config into a
``keras.Model`` and the trainer turns a ``TrainConfig`` into a recipe. The
module imports the standard library only (and `ferhpo.rates`, the learning-rate
curves, likewise), so search code and the CLI can validate and print
configurations without importing Keras. Reading the preset
table and overriding fields is `ferhpo.presets`; search spaces are `ferhpo.spaces`.

Each config checks itself in ``__post_init__``: an invalid one cannot be
constructed, and the ``ConfigError`` says which rule failed and what value was
received.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ferhpo.errors import ConfigError

# The learning-rate curves live in ferhpo.rates (stdlib only); these names stay importable from here.
from ferhpo.rates import SCHEDULES, cosine_lr, cosine_step_lr, reference_lr

__all__ = [
    "HEADS",
    "OPTIMIZERS",
    "SCHEDULES",
    "DenseNetConfig",
    "ResNetConfig",
    "TrainConfig",
    "Preset",
    "ModelConfig",
    "reference_lr",
    "cosine_lr",
    "cosine_step_lr",
    "Budget",
    "BUDGETS",
    "get_budget",
    "model_config_to_dict",
    "model_config_from_dict",
    "check_keys",
]

#: Classifier heads: "avg4" is the reference 4x4 average pooling + flatten,
#: "gap" is global average pooling.
HEADS = ("avg4", "gap")
#: "adamw" is keras.optimizers.AdamW: Adam with decoupled weight decay (needs weight_decay > 0).
OPTIMIZERS = ("rmsprop", "adam", "sgd", "adamw")
# Keras dtype policies: float32, or compute in bfloat16 / float16 with float32 variables.
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


# --------------------------------------------------------------------------
# Field checks shared by the configs. Each returns the (normalised) value or
# raises ConfigError stating the rule and the value received.


def _int(owner: str, name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        rule = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{owner} {name} must be {rule}, but got {name}={value!r}")
    return value


def _float(owner: str, name: str, value: Any) -> float:
    # TOML and users write `1` for `1.0`; accept ints, reject bools and NaN/inf.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{owner} {name} must be a finite number, but got {name}={value!r}")
    return float(value)


def _bool(owner: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{owner} {name} must be true or false, but got {name}={value!r}")
    return value


def _choice(owner: str, name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        known = ", ".join(repr(c) for c in choices)
        raise ConfigError(f"{owner} {name} must be one of {known}, but got {name}={value!r}")
    return value


def _input_shape(owner: str, value: Any) -> tuple[int, int, int]:
    # Lists come from TOML; store a tuple so the config stays hashable.
    if isinstance(value, list):
        value = tuple(value)
    if (
        not isinstance(value, tuple)
        or len(value) != 3
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)
    ):
        raise ConfigError(
            f"{owner} input_shape must be (height, width, channels) of positive integers "
            f"(channels last), but got input_shape={value!r}"
        )
    return value


def _set(obj: Any, name: str, value: Any) -> None:
    # Frozen dataclasses forbid assignment; normalising in __post_init__ is the
    # documented exception.
    object.__setattr__(obj, name, value)


# --------------------------------------------------------------------------
# Model configurations


@dataclass(frozen=True, kw_only=True)
class DenseNetConfig:
    """A DenseNet(-BC) for small images, in the style of the classic Keras DenseNet.

    Stem BN-ReLU-Conv3x3 (``stem_width`` filters) concatenated with the input
    image, ``num_blocks`` dense blocks of ``layers_per_block`` layers adding
    ``growth_rate`` channels each, transitions (BN-Conv1x1 to
    ``transition_filters``, 2x2 average pooling) between blocks, then the head.
    ``dropout`` (off by default; the reference uses 0.2 only when augmentation
    is off) follows each convolution inside the dense layers.
    """

    family: ClassVar[str] = "densenet"

    growth_rate: int = 12
    compression: float = 0.5
    num_blocks: int = 4
    layers_per_block: int = 12
    bottleneck: bool = True
    dropout: float = 0.0
    stem_filters: int | None = None
    head: str = "avg4"
    input_shape: tuple[int, int, int] = (48, 48, 1)
    num_classes: int = 7

    def __post_init__(self) -> None:
        owner = "DenseNet"
        _int(owner, "growth_rate", self.growth_rate)
        _int(owner, "num_blocks", self.num_blocks)
        _int(owner, "layers_per_block", self.layers_per_block)
        _bool(owner, "bottleneck", self.bottleneck)
        if self.stem_filters is not None:
            _int(owner, "stem_filters", self.stem_filters)
        _choice(owner, "head", self.head, HEADS)
        _int(owner, "num_classes", self.num_classes, minimum=2)
        _set(self, "input_shape", _input_shape(owner, self.input_shape))

        compression = _float(owner, "compression", self.compression)
        if not 0.0 < compression <= 1.0:
            raise ConfigError(f"DenseNet compression must be in (0, 1], but got compression={self.compression!r}")
        _set(self, "compression", compression)

        dropout = _float(owner, "dropout", self.dropout)
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"DenseNet dropout must be in [0, 1), but got dropout={self.dropout!r}")
        _set(self, "dropout", dropout)

        # Each transition halves the map with a floor (2x2 valid pooling); the
        # avg4 head then needs at least a 4x4 map, gap at least 1x1.
        halvings = self.num_blocks - 1
        base = 4 if self.head == "avg4" else 1
        # base * 2**halvings, written out only while small: num_blocks may be any integer
        need = base * 2**halvings if halvings < 64 else f"{base} * 2**{halvings}"
        height, width = self.input_shape[:2]
        if min(height, width) >> halvings < base:  # min < base * 2**halvings
            raise ConfigError(
                f"DenseNet with num_blocks={self.num_blocks} and head={self.head!r} needs input "
                f"height and width of at least {need} ({halvings} transitions halve the map, and "
                f"the head needs a {'4x4' if self.head == 'avg4' else '1x1'} map), but got "
                f"input_shape={self.input_shape!r}"
            )

        widths = self._transition_widths()
        if widths and min(widths) < 1:
            raise ConfigError(
                f"DenseNet compression leaves a transition with no filters "
                f"(int((filters + layers_per_block * growth_rate) * compression) must be >= 1), "
                f"but got compression={self.compression!r}, transition widths {widths}"
            )

    @property
    def stem_width(self) -> int:
        """Filters of the stem convolution (``stem_filters``, default 2 x growth)."""
        return 2 * self.growth_rate if self.stem_filters is None else self.stem_filters

    @property
    def transition_filters(self) -> tuple[int, ...]:
        """Output width of each transition: int((filters + L * k) * compression).

        ``filters`` starts at the stem width and is then the previous
        transition's width; the channel concatenated from the input image is not
        counted (the reference convention the parameter counts depend on).
        """
        return self._transition_widths()

    def _transition_widths(self) -> tuple[int, ...]:
        widths = []
        filters = self.stem_width
        for _ in range(self.num_blocks - 1):
            filters = int((filters + self.layers_per_block * self.growth_rate) * self.compression)
            widths.append(filters)
        return tuple(widths)

    @property
    def depth(self) -> int:
        """Nominal depth: convolutions inside dense blocks + 4.

        This is the DenseNet paper's count for 3 blocks (stem conv, two
        transitions, classifier) applied unchanged to any number of blocks,
        which is how the study names its 4 x 12 bottleneck model "depth 100".
        """
        per_layer = 2 if self.bottleneck else 1
        return self.num_blocks * self.layers_per_block * per_layer + 4

    @classmethod
    def from_depth(cls, depth: int, **fields: Any) -> DenseNetConfig:
        """Build a config whose ``layers_per_block`` is derived from a nominal ``depth``."""
        if "layers_per_block" in fields:
            raise ConfigError(
                "DenseNetConfig.from_depth derives layers_per_block from depth; "
                f"pass one or the other, but got layers_per_block={fields['layers_per_block']!r}"
            )
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        num_blocks = _int("DenseNet", "num_blocks", fields.get("num_blocks", defaults["num_blocks"]))
        bottleneck = _bool("DenseNet", "bottleneck", fields.get("bottleneck", defaults["bottleneck"]))
        step = num_blocks * (2 if bottleneck else 1)
        _int("DenseNet", "depth", depth)
        if depth < step + 4 or (depth - 4) % step:
            examples = ", ".join(str(step * n + 4) for n in (1, 2, 3))
            kind = "2L" if bottleneck else "L"
            raise ConfigError(
                f"DenseNet depth must be num_blocks * {kind} + 4 with L >= 1 layers per block "
                f"(for num_blocks={num_blocks}, bottleneck={bottleneck}: {examples}, ...), "
                f"but got depth={depth!r}"
            )
        return cls(layers_per_block=(depth - 4) // step, **fields)


@dataclass(frozen=True, kw_only=True)
class ResNetConfig:
    """A CIFAR-style ResNet (Keras example ``cifar10_resnet``) for small images.

    Version 1 stacks basic blocks (depth 6n+2), version 2 pre-activation
    bottleneck blocks (depth 9n+2); both have three stages of n blocks, the
    last two starting with stride 2. ``l2`` regularises the convolution kernels.
    """

    family: ClassVar[str] = "resnet"

    version: int = 1
    depth: int = 20
    base_filters: int = 16
    l2: float = 1e-4
    head: str = "avg4"
    input_shape: tuple[int, int, int] = (48, 48, 1)
    num_classes: int = 7

    def __post_init__(self) -> None:
        owner = "ResNet"
        if self.version not in (1, 2) or isinstance(self.version, bool):
            raise ConfigError(f"ResNet version must be 1 or 2, but got version={self.version!r}")
        _int(owner, "depth", self.depth)
        _int(owner, "base_filters", self.base_filters)
        _choice(owner, "head", self.head, HEADS)
        _int(owner, "num_classes", self.num_classes, minimum=2)
        _set(self, "input_shape", _input_shape(owner, self.input_shape))

        # v1: two 3x3 convs per block; v2: three convs per bottleneck block;
        # plus stem conv and classifier.
        per_block = 6 if self.version == 1 else 9
        if self.depth < per_block + 2 or (self.depth - 2) % per_block:
            examples = ", ".join(str(per_block * n + 2) for n in (1, 2, 3))
            raise ConfigError(
                f"ResNet v{self.version} depth must be {per_block}n+2 ({examples}, ...), but got depth={self.depth!r}"
            )

        l2 = _float(owner, "l2", self.l2)
        if l2 < 0:
            raise ConfigError(f"ResNet l2 must be >= 0, but got l2={self.l2!r}")
        _set(self, "l2", l2)

        # Two stride-2 stages with "same" padding leave ceil(h / 4).
        height, width = self.input_shape[:2]
        if self.head == "avg4" and min(height, width) < 13:
            raise ConfigError(
                "ResNet with head='avg4' needs input height and width of at least 13 "
                "(two stride-2 stages leave ceil(h / 4), and the 4x4 pooling needs a 4x4 map), "
                f"but got input_shape={self.input_shape!r}"
            )

    @property
    def blocks_per_stage(self) -> int:
        """n: residual blocks in each of the three stages."""
        return (self.depth - 2) // (6 if self.version == 1 else 9)


ModelConfig = DenseNetConfig | ResNetConfig
_MODEL_CLASSES: dict[str, type[DenseNetConfig] | type[ResNetConfig]] = {
    DenseNetConfig.family: DenseNetConfig,
    ResNetConfig.family: ResNetConfig,
}


# --------------------------------------------------------------------------
# Training recipe


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The training recipe: optimizer, schedule, augmentation and regularisation.

    Defaults are the reference recipe: 200 epochs, the step schedule of
    `reference_lr`, ReduceLROnPlateau (factor sqrt(0.1), patience 5, min_lr
    0.5e-6), and augmentation by random shifts of 10% and horizontal flips.

    ``schedule="cosine"`` decays the rate per epoch by `cosine_lr` over ``epochs``;
    ``"cosine-steps"`` decays it at every training step by `cosine_step_lr`, reaching 0
    at the run's last step (a plateau cut then lasts one step, so it has no effect).
    With ``augmentation`` on, these random layers run (training only), in this
    order: ``shift`` (fraction of height and width), ``rotation`` (at most that
    many degrees either way), ``zoom`` (in or out by at most that fraction),
    ``hflip`` (horizontal mirror), ``erasing`` (probability per image of random
    erasing, Zhong et al. 2017: a random rectangle of 2-33% of the image filled
    with noise). Options at 0 add no layer. ``mixup`` is the alpha of
    Beta(alpha, alpha) for mixup (Zhang et al. 2018) of images and one-hot labels
    within each batch; 0 turns it off (it is not gated by ``augmentation``).
    ``tta_hflip`` averages the softmax of each image and its mirror in the final
    validation and test evaluation (per-epoch validation stays plain).
    ``precision`` is the Keras dtype policy the layers compute in: the reference's
    float32, or mixed bfloat16 / float16 (variables and the softmax stay float32),
    faster where the hardware has units for it (`ferhpo bench` measures it).

    For long budgets (issue 21; every one off by default): ``optimizer="adamw"``
    (keras.optimizers.AdamW, decay ``weight_decay`` > 0); ``nesterov`` (SGD only; None
    keeps SGD's Nesterov momentum); ``warmup_epochs`` (a linear rise from 0 per step,
    before any schedule); ``ema`` (momentum of an exponential moving average of the
    weights, which validation, the best-weights checkpoint and evaluation use); ``crop``
    (random shifts by up to that many whole pixels, zero-filled: pad-and-crop); ``cutmix``
    (the alpha of Beta(alpha, alpha) for CutMix, Yun et al. 2019; with ``mixup`` too,
    each batch takes one of the two at even odds); ``tta_shift`` (the final evaluation
    also averages the image shifted by that fraction of its size up, down, left and
    right, and their mirrors with ``tta_hflip``).
    """

    optimizer: str = "adam"
    nesterov: bool | None = None
    learning_rate: float = 1e-3
    batch_size: int = 32
    epochs: int = 200
    schedule: str = "reference-step"
    warmup_epochs: int = 0
    plateau: bool = True
    plateau_factor: float = math.sqrt(0.1)
    plateau_patience: int = 5
    plateau_min_lr: float = 0.5e-6
    augmentation: bool = True
    shift: float = 0.1
    crop: int = 0
    hflip: bool = True
    cutmix: float = 0.0
    ema: float = 0.0
    tta_shift: float = 0.0
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    seed: int = 0
    rotation: float = 0.0
    zoom: float = 0.0
    erasing: float = 0.0
    mixup: float = 0.0
    tta_hflip: bool = False
    precision: str = "float32"

    def __post_init__(self) -> None:
        owner = "TrainConfig"
        _choice(owner, "optimizer", self.optimizer, OPTIMIZERS)
        _choice(owner, "precision", self.precision, PRECISIONS)
        _choice(owner, "schedule", self.schedule, SCHEDULES)
        _int(owner, "batch_size", self.batch_size)
        _int(owner, "epochs", self.epochs)
        _int(owner, "plateau_patience", self.plateau_patience, minimum=0)
        _int(owner, "seed", self.seed, minimum=0)
        for name in ("plateau", "augmentation", "hflip", "tta_hflip"):
            _bool(owner, name, getattr(self, name))
        if self.nesterov is not None and self.optimizer != "sgd":
            raise ConfigError(
                f"{owner} nesterov applies to optimizer='sgd' only (leave it unset otherwise), "
                f"but got nesterov={self.nesterov!r} with optimizer={self.optimizer!r}"
            )
        if self.nesterov is not None:
            _bool(owner, "nesterov", self.nesterov)
        if _int(owner, "warmup_epochs", self.warmup_epochs, minimum=0) >= self.epochs:
            raise ConfigError(
                f"{owner} warmup_epochs must be less than epochs (the warm-up ends before the run does), "
                f"but got warmup_epochs={self.warmup_epochs!r} with epochs={self.epochs!r}"
            )
        if _int(owner, "crop", self.crop, minimum=0) >= 24:
            raise ConfigError(f"{owner} crop must be in [0, 24) pixels (under half of 48 pixels), but got crop={self.crop!r}")

        # (name, lower bound, lower inclusive, upper bound, upper inclusive)
        ranges = (
            ("learning_rate", 0.0, False, math.inf, False),
            ("plateau_factor", 0.0, False, 1.0, False),
            ("plateau_min_lr", 0.0, True, math.inf, False),
            ("shift", 0.0, True, 1.0, False),
            ("weight_decay", 0.0, True, math.inf, False),
            ("label_smoothing", 0.0, True, 1.0, False),
            ("rotation", 0.0, True, 180.0, True),
            ("zoom", 0.0, True, 1.0, False),
            ("erasing", 0.0, True, 1.0, True),
            ("mixup", 0.0, True, math.inf, False),
            ("cutmix", 0.0, True, math.inf, False),
            ("ema", 0.0, True, 1.0, False),
            ("tta_shift", 0.0, True, 0.5, False),
        )
        for name, low, low_in, high, high_in in ranges:
            raw = getattr(self, name)
            value = _float(owner, name, raw)
            if not ((value >= low) if low_in else (value > low)) or not ((value <= high) if high_in else (value < high)):
                if high == math.inf:
                    rule = f"{'>=' if low_in else '>'} {low:g}"
                else:
                    rule = f"in {'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"
                raise ConfigError(f"{owner} {name} must be {rule}, but got {name}={raw!r}")
            _set(self, name, value)
        if self.optimizer == "adamw" and self.weight_decay == 0:
            raise ConfigError(
                f"{owner} optimizer='adamw' needs weight_decay > 0 (AdamW is Adam with decoupled weight decay), "
                f"but got weight_decay={self.weight_decay!r}"
            )

    def with_epochs(self, epochs: int) -> TrainConfig:
        """The recipe over ``epochs`` epochs (a budget's, a rung's): a warm-up as long as the
        run or longer is shortened to end one epoch before it (none in a run of one epoch)."""
        return dataclasses.replace(self, epochs=epochs, warmup_epochs=max(0, min(self.warmup_epochs, epochs - 1)))


@dataclass(frozen=True)
class Budget:
    """How much of a recipe a run spends: epochs and images per split (None: all).

    "full" is the reference recipe; "cpu" trains the small models of the ``*-cpu``
    spaces on all images for a few epochs; "quick" and "smoke" are reductions for
    machines without an accelerator. Limits take seeded subsamples (`ferhpo.splits.limit_splits`),
    and every record says which budget produced it.
    """

    name: str
    epochs: int | None = None
    train_limit: int | None = None
    val_limit: int | None = None
    test_limit: int | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "train_limit", "val_limit", "test_limit"):
            if getattr(self, name) is not None:
                _int("Budget", name, getattr(self, name))

    def describe(self) -> str:
        parts = [f"{self.epochs} epochs" if self.epochs else "the recipe's epochs"]
        for split in ("train", "val", "test"):
            limit = getattr(self, f"{split}_limit")
            parts.append(f"{split} {'all' if limit is None else f'<= {limit:,}'}")
        return ", ".join(parts)


BUDGETS = {
    "smoke": Budget("smoke", epochs=1, train_limit=128, val_limit=128, test_limit=256),
    "quick": Budget("quick", epochs=10, train_limit=4096, val_limit=1024),
    # Every image of the protocol, a few epochs: a search on a CPU whose numbers mean
    # something, meant for the small models of the *-cpu spaces (search_spaces/).
    "cpu": Budget("cpu", epochs=3),
    "full": Budget("full"),
}


def get_budget(name: str, *, epochs: int | None = None, train_limit: int | None = None) -> Budget:
    """A named budget, with the command line's --epochs / --train-limit on top."""
    if name not in BUDGETS:
        raise ConfigError(f"unknown budget {name!r}; known budgets: {', '.join(BUDGETS)}")
    budget = BUDGETS[name]
    changes: dict[str, Any] = {k: v for k, v in (("epochs", epochs), ("train_limit", train_limit)) if v is not None}
    return dataclasses.replace(budget, **changes) if changes else budget


# --------------------------------------------------------------------------
# Presets


@dataclass(frozen=True, kw_only=True)
class Preset:
    """A reference configuration of the study, with the numbers it reported.

    ``reported_*`` describe the unmodified reference; they are not updated when
    `ferhpo.presets.get_preset` overrides architecture fields.
    """

    name: str
    model: ModelConfig
    train: TrainConfig
    protocol: str
    reported_test_accuracy: float
    reported_params: int
    description: str = ""

    def __post_init__(self) -> None:
        owner = "Preset"
        for name in ("name", "protocol"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{owner} {name} must be a non-empty string, but got {name}={value!r}")
        if not isinstance(self.description, str):
            raise ConfigError(f"{owner} description must be a string, but got description={self.description!r}")
        if not isinstance(self.model, (DenseNetConfig, ResNetConfig)):
            raise ConfigError(f"{owner} model must be a DenseNetConfig or ResNetConfig, but got model={self.model!r}")
        if not isinstance(self.train, TrainConfig):
            raise ConfigError(f"{owner} train must be a TrainConfig, but got train={self.train!r}")
        accuracy = _float(owner, "reported_test_accuracy", self.reported_test_accuracy)
        if not 0.0 <= accuracy <= 1.0:
            raise ConfigError(
                f"{owner} reported_test_accuracy must be in [0, 1], "
                f"but got reported_test_accuracy={self.reported_test_accuracy!r}"
            )
        _set(self, "reported_test_accuracy", accuracy)
        _int(owner, "reported_params", self.reported_params)


# --------------------------------------------------------------------------
# Plain data


def check_keys(section: str, table: Mapping[str, Any], known: tuple[str, ...]) -> None:
    """ConfigError naming the first key of `table` not in `known`, so that a typo in
    a file is an error instead of a silent default."""
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in {section}; known keys: {', '.join(known)}")


def model_config_to_dict(config: ModelConfig) -> dict[str, Any]:
    """Plain data for a model config (its ``family`` plus every field), e.g. to save
    beside a run's results; `model_config_from_dict` rebuilds the same config."""
    if not isinstance(config, (DenseNetConfig, ResNetConfig)):
        raise ConfigError(f"expected a DenseNetConfig or ResNetConfig, but got {config!r}")
    return {"family": config.family, **dataclasses.asdict(config)}


def model_config_from_dict(data: Mapping[str, Any]) -> ModelConfig:
    """Rebuild a model config from ``{"family": ..., <fields>}``; unknown keys are errors."""
    fields = dict(data)
    family = fields.pop("family", None)
    if not isinstance(family, str) or family not in _MODEL_CLASSES:
        known = ", ".join(repr(f) for f in _MODEL_CLASSES)
        raise ConfigError(f"model family must be one of {known}, but got family={family!r}")
    model_cls = _MODEL_CLASSES[family]
    check_keys("model", fields, ("family",) + tuple(f.name for f in dataclasses.fields(model_cls)))
    return model_cls(**fields)
