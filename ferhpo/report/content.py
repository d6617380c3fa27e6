"""What a report holds, and how a run is put in words.

`ReportContent` is plain data (numbers, strings, dicts) that `ferhpo.report.analysis`
builds, `ferhpo.report.summary` writes prose from, and `ferhpo.report.render` and
`ferhpo.report.figure_specs` turn into files. The helpers below describe a run the
same way in the table and in the prose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ferhpo.formatting import format_brief
from ferhpo.report import stats
from ferhpo.report.load import Run, StudyData

#: Marks a row whose model selection saw test images.
SELECTION_MARK = "†"
#: Marks a row on the study's Pareto front.
PARETO_MARK = "◇"


@dataclass(frozen=True)
class Reference:
    """A reported reference configuration (a preset and the study's number)."""

    name: str
    family: str
    protocol: str
    accuracy: float
    params: int
    model: dict[str, Any]
    train: dict[str, Any]


@dataclass
class ReportContent:
    """Everything a report says about one study, before it is rendered."""

    data: StudyData
    references: list[Reference]
    rows: list[dict[str, Any]]
    comparisons: list[dict[str, Any]]  # the top-K trials against the best baseline
    best: Run | None
    best_baseline: Run | None
    no_baseline: str  # why best_baseline is None ("" when there is one)
    best_comparison: stats.Comparison | None
    seed_groups: list[dict[str, Any]]
    compute: dict[str, Any]
    summary: list[str]
    footnotes: list[str]
    ensembles: list[dict[str, Any]] = field(default_factory=list)  # each beside the best single model
    notes: list[str] = field(default_factory=list)
    top: int = 10
    fidelity: dict[str, Any] | None = None  # a search across rungs (`ferhpo.report.fidelity`)


def space_defaults(space: dict | None) -> dict[str, Any]:
    if not space:
        return {}
    return {p["name"]: p.get("default") for p in space.get("params", []) if isinstance(p, dict) and "name" in p}


def key_hyperparameters(hyper: dict[str, Any], defaults: dict[str, Any]) -> str:
    """The drawn values that differ from the space's defaults (all of them without a space)."""
    if not hyper:
        return ""
    changed = {k: v for k, v in hyper.items() if not defaults or k not in defaults or defaults[k] != v}
    if not changed:
        return "(all at the reference defaults)"
    return ", ".join(f"{k}={format_brief(v)}" for k, v in changed.items())


def describe_model(family: str, model: dict[str, Any], train: dict[str, Any]) -> str:
    """A short description of a configuration that was not drawn from a space."""
    if family == "densenet":
        arch = (
            f"DenseNet{'-BC' if model.get('bottleneck', True) else ''} k={model.get('growth_rate')}, "
            f"{model.get('num_blocks')}x{model.get('layers_per_block')}, compression={format_brief(model.get('compression'))}"
        )
    elif family == "resnet":
        arch = f"ResNet v{model.get('version')} depth {model.get('depth')}"
    else:
        arch = family
    recipe = f"{train.get('optimizer')} lr={format_brief(train.get('learning_rate'))} batch {train.get('batch_size')}"
    return f"{arch}; {recipe}"


def split_metric(record, split: str, key: str = "accuracy") -> float | None:
    """A record's `key` on one evaluated split (None when that split was not evaluated)."""
    value = (record.evaluation.get(split) or {}).get(key)
    return None if value is None else float(value)
