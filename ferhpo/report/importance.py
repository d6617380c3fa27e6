"""Which hyperparameters mattered: Optuna's PED-ANOVA over the study's complete trials.

Optuna is imported only when there is something to evaluate: two or more complete
trials that drew different hyperparameters.
"""

from __future__ import annotations

import json
import math
import warnings
from typing import Literal, cast

from ferhpo.report.load import Run, StudyData


def importance(data: StudyData, runs: list[Run]) -> tuple[dict[str, float] | None, str]:
    """Hyperparameter importance of the complete trials (Optuna's PED-ANOVA evaluator),
    or None and the reason it cannot be computed.

    The trials are rebuilt in an in-memory study from their records (a KerasTuner trial
    has no Optuna parameters), with the space's distributions, or the observed ranges
    when the space is not saved on the study.
    """
    done = [r for r in runs if r.status == "complete" and r.objective is not None and r.record.hyperparameters]
    if len(done) < 2:
        return None, f"needs at least 2 complete trials with searched hyperparameters; the study has {len(done)}"
    names: list[str] = []
    for r in done:
        names += [k for k in r.record.hyperparameters if k not in names]
    varying = [n for n in names if len({json.dumps(r.record.hyperparameters.get(n), default=str) for r in done}) > 1]
    if not varying:
        return None, "every complete trial drew the same hyperparameters"

    import optuna

    specs = {p["name"]: p for p in (data.space or {}).get("params", []) if isinstance(p, dict) and "name" in p}

    def from_space(name: str):
        p = specs.get(name)
        if p is None:
            return None
        if p.get("type") == "int":
            log = bool(p.get("log"))
            return optuna.distributions.IntDistribution(p["low"], p["high"], log=log, step=1 if log else (p.get("step") or 1))
        if p.get("type") == "float":
            if p["low"] == p["high"]:
                return None
            return optuna.distributions.FloatDistribution(p["low"], p["high"], log=bool(p.get("log")), step=p.get("step"))
        if p.get("type") == "categorical":
            return optuna.distributions.CategoricalDistribution(list(p["choices"]))
        if p.get("type") == "bool":
            return optuna.distributions.CategoricalDistribution([False, True])
        return None

    def observed(name: str):
        values = [r.record.hyperparameters[name] for r in done if name in r.record.hyperparameters]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return optuna.distributions.IntDistribution(min(values), max(values))
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            lo, hi = float(min(values)), float(max(values))
            return optuna.distributions.FloatDistribution(lo, hi, log=lo > 0 and hi / lo >= 100)
        choices = []
        for v in values:
            v = v if isinstance(v, (bool, int, float, str)) or v is None else str(v)
            if v not in choices:
                choices.append(v)
        return optuna.distributions.CategoricalDistribution(choices)

    def trials(distribution_of):
        out = []
        for r in done:
            params, dists = {}, {}
            for n in varying:
                if n not in r.record.hyperparameters:
                    continue
                v = r.record.hyperparameters[n]
                d = distribution_of(n)
                if isinstance(d, optuna.distributions.CategoricalDistribution) and not isinstance(v, (bool, int, float, str)):
                    v = str(v)
                params[n], dists[n] = v, d
            out.append(optuna.trial.create_trial(params=params, distributions=dists, value=r.objective))
        return out

    direction = data.directions[0] if data.directions else "maximize"
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                built = trials(lambda n: from_space(n) or observed(n))
            except (ValueError, TypeError):  # a value outside the saved space: use what was drawn
                built = trials(observed)
            # the study's own direction, as Optuna wrote it (lower-cased)
            study = optuna.create_study(direction=cast(Literal["minimize", "maximize"], direction))
            study.add_trials(built)
            try:
                result = optuna.importance.get_param_importances(study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                return None, f"Optuna could not evaluate importance ({reason})"
    finally:
        optuna.logging.set_verbosity(level)
    result = {k: float(v) for k, v in result.items() if math.isfinite(v)}
    if not result or sum(result.values()) <= 0:
        return None, "the complete trials' objective does not vary with their hyperparameters"
    return result, "PED-ANOVA"
