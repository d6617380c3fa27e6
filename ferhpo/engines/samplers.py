"""Samplers and pruners: how a search draws its trials and stops the weak ones early.

Kept apart from the worker loop (as Optuna keeps `samplers/` and `pruners/`): a trial
process needs the study's pruner to answer `should_prune`, and must not import the
worker that starts it.
"""

from __future__ import annotations

import warnings
import zlib

import optuna

from ferhpo.errors import ConfigError, FerhpoError
from ferhpo.spaces import Space


def make_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    """The per-epoch pruner; the budget's epochs are Hyperband's maximum resource."""
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs, reduction_factor=3)
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"unknown pruner {name!r}; expected hyperband, asha, median or none")


class TrialSeededRandomSampler(optuna.samplers.BaseSampler):
    """Random search whose draws depend on the seed and the trial number only.

    Optuna's RandomSampler draws from one stream per sampler object, so with several
    workers (or after a resume) which configuration trial k gets depends on who asked
    first. Here trial k of a study with seed s always gets the same configuration, however
    many workers run and in whatever order they finish: a study can be repeated.
    """

    def __init__(self, seed: int):
        self._seed = int(seed)

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        draw_seed = zlib.crc32(f"{self._seed}/{trial.number}/{param_name}".encode())
        return optuna.samplers.RandomSampler(seed=draw_seed).sample_independent(study, trial, param_name, param_distribution)


def make_sampler(name: str, space: Space, seed: int, *, study_seed: int = 0) -> optuna.samplers.BaseSampler:
    """Optuna's sampler `name`, seeded with this worker's `seed` (the random sampler: with
    the search's `study_seed`, the same in every worker)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            # constant_liar: parallel workers do not all draw next to the same optimum.
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)
        if name == "random":
            return TrialSeededRandomSampler(study_seed)
        if name == "grid":
            return optuna.samplers.GridSampler(grid_of(space), seed=seed)
        if name == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
        if name == "gp":
            import importlib.util

            if not all(importlib.util.find_spec(m) for m in ("torch", "scipy")):
                raise FerhpoError(
                    "the gp sampler needs PyTorch and SciPy; expected them installed (pip install torch scipy), "
                    "or choose --sampler tpe"
                )
            return optuna.samplers.GPSampler(seed=seed)
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed)
    raise ConfigError(f"unknown sampler {name!r}; expected tpe, random, grid, cmaes, gp or nsga2")


#: GridSampler lists every combination up front; beyond this it is not a grid search.
MAX_GRID_POINTS = 100_000


def grid_of(space: Space) -> dict[str, list]:
    """The space's grid for --sampler grid; ConfigError when it is too large to walk."""
    import math

    grid = space.grid()
    points = math.prod(len(v) for v in grid.values())
    if points > MAX_GRID_POINTS:
        raise ConfigError(
            f"--sampler grid needs a small space, at most {MAX_GRID_POINTS:,} points, but space "
            f"{space.name!r} has {points:,} ({len(grid)} parameters); write a space file with fewer "
            f"parameters or choices, or use --sampler tpe"
        )
    return grid
