"""Search engines: Optuna and KerasTuner drive spaces -> configs -> training -> store.

Both engines train every trial in its own process (`ferhpo.engines.trial`) and record
it in the same Optuna storage with the same `RunRecord` schema as baseline runs, so the
report treats them alike. `SearchSettings` is everything a search command decided; it is
saved on the study at creation, and a rerun must match it to continue the study.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferhpo.config import Budget
from ferhpo.errors import ConfigError

ENGINES = ("optuna", "keras-tuner")
SAMPLERS = ("tpe", "random", "grid", "cmaes", "gp", "nsga2")
PRUNERS = ("hyperband", "asha", "median", "none")
OBJECTIVES = ("val_accuracy", "macro_f1")
#: Settings that decide what a trial's number means; a rerun must not change them.
_BINDING = (
    "engine",
    "objectives",
    "budget",
    "protocol",
    "seed",
    "space",
    "data_fingerprint",
    "max_epochs",
    "precision",
    "rungs",
    "reduction",
)


@dataclass(frozen=True)
class SearchSettings:
    """One search command, resolved: every default filled in, every option checked."""

    study: str
    storage: str  # an Optuna storage URL
    space_path: str  # absolute path of the space TOML
    space: dict[str, Any]  # the space as data (Space.to_dict), saved with the study
    engine: str
    sampler: str  # for keras-tuner: "random" (RandomSearch), "gp" (BayesianOptimization), "hyperband"
    pruner: str
    objectives: tuple[str, ...]  # ("val_accuracy",), ("macro_f1",) or (X, "params")
    trials: int
    timeout: float | None
    budget: dict[str, Any]
    max_epochs: int
    protocol: str
    seed: int
    workers: int
    data: dict[str, Any]  # path, cache_dir, skip_bad
    data_fingerprint: str
    study_dir: str = "studies"
    trial_memory_gb: float | None = None  # address-space cap of each trial process (CPU)
    precision: str | None = None  # overrides the space's TrainConfig.precision when set
    tensorboard: str | None = None  # a folder for each trial's TensorBoard curves (absolute)
    storage_retry: float = 600.0  # seconds a worker rides out a storage outage (ferhpo.outage)
    checkpoint_every: int | None = None  # epochs between a trial's resume checkpoints
    fail_fast: int = 3  # stop when the first this many trials all fail alike (0: never)
    rungs: tuple[int, ...] | None = None  # epochs per rung of a promoting search (`ferhpo.engines.rungs`)
    reduction: int = 3  # the top 1/reduction of a rung is promoted
    test_from_rung: int = 0  # runs below this rung skip the test evaluation (never used to promote anyway)
    extra: dict[str, Any] = field(default_factory=dict)

    def recipe(self, train, *, epochs: int):
        """A trial's recipe: the space's, with this search's epochs (`TrainConfig.with_epochs`:
        a warm-up as long as the run is shortened), seed and precision."""
        changes: dict[str, Any] = {"seed": self.seed}
        if self.precision is not None:
            changes["precision"] = self.precision
        return dataclasses.replace(train.with_epochs(epochs), **changes)

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def directions(self) -> list[str]:
        return ["minimize" if o == "params" else "maximize" for o in self.objectives]

    @property
    def expected_runs(self) -> int:
        """The runs a finished search holds: `trials`, or with rungs, every rung's runs
        (`trials` new configurations and their promotions)."""
        if not self.rungs:
            return self.trials
        from ferhpo.engines.rungs import runs_per_rung

        return sum(runs_per_rung(self.trials, self.rungs, self.reduction))

    def budget_obj(self) -> Budget:
        return Budget(**self.budget)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SearchSettings:
        raw = json.loads(text)
        raw["objectives"] = tuple(raw["objectives"])
        if raw.get("rungs") is not None:
            raw["rungs"] = tuple(raw["rungs"])
        return cls(**raw)

    def binding(self) -> dict[str, Any]:
        """What a rerun must repeat. The space counts by its content: where its file lies
        and how it is described may change."""
        out = {k: getattr(self, k) for k in _BINDING}
        out["objectives"] = list(self.objectives)
        out["rungs"] = list(self.rungs) if self.rungs else None
        out["reduction"] = self.reduction if self.rungs else None
        out["space"] = {k: v for k, v in self.space.items() if k not in ("path", "description")}
        return out


def parse_objectives(text: str) -> tuple[str, ...]:
    """`val_accuracy`, `macro_f1`, or one of them with `params` for the size trade-off."""
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    valid = (len(parts) == 1 and parts[0] in OBJECTIVES) or (len(parts) == 2 and parts[0] in OBJECTIVES and parts[1] == "params")
    if not valid:
        raise ConfigError(
            f"--objective must be val_accuracy, macro_f1, or one of them followed by ',params' "
            f"(accuracy against model size), but got {text!r}"
        )
    return parts


def check_resume(settings: SearchSettings, saved: dict[str, Any] | None) -> None:
    """A study continues only with the settings it started with (ConfigError otherwise)."""
    if saved is None:
        return
    mine = json.loads(json.dumps(settings.binding()))
    for key in _BINDING:
        if key in saved and saved[key] != mine[key]:
            if key == "space":
                what = "a different search space"
            elif key == "data_fingerprint":
                what = "different data"
            else:
                what = f"{key}={json.dumps(saved[key])}"
            raise ConfigError(
                f"study {settings.study!r} was started with {what}, but this run has "
                f"{key if key in ('space', 'data_fingerprint') else key + '=' + json.dumps(mine[key])}; "
                f"rerun with the study's settings to continue it, or choose a new --study"
            )


def study_dir(settings: SearchSettings) -> Path:
    return Path(settings.study_dir) / settings.study
