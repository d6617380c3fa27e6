"""Confirm a study's winners: its top configurations and the reference, over several seeds.

A search picks its best trial on one seed's validation accuracy, so part of its lead
may be luck. `plan` lists, for each of the top-K complete trials and for the best
reproduced reference run of the same budget and protocol, N seeds (the run's own seed
first, then the next ones); `run` trains what is missing into a confirm study
(default ``<study>-confirm``), one record per configuration and seed. A run whose
configuration and seed the source study already trained at the same budget is not
trained again: its record and artifacts are copied, so seed 0 of ``--seeds 3`` is the
search's own run (selected on validation: its validation accuracy is biased upward,
its test accuracy is not). Rerunning skips what is finished, like `baseline`.
The report then gives mean and spread per configuration and a verdict over all seeds.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ferhpo import runs, store
from ferhpo.atomic import write_json
from ferhpo.config import Budget, ModelConfig, TrainConfig, model_config_from_dict
from ferhpo.errors import ConfigError, StoreError

CONFIRM_ATTR = store.CONFIRM_ATTR


@dataclass(frozen=True)
class Planned:
    """One configuration and seed to have in the confirm study."""

    name: str  # e.g. trial-0-seed1, resnet-cpu-reference-seed0
    source: store.RunRecord  # the run whose configuration this repeats
    role: str  # "candidate" (a top trial) or "reference"
    seed: int
    model: ModelConfig
    train: TrainConfig
    budget: Budget
    key: str
    reuse: store.RunRecord | None  # the source run itself, when it is this very run
    protocol: str = "holdout"

    @property
    def kind(self) -> str:
        return "baseline" if self.role == "reference" else "trial"


def top_trials(study, k: int, objective: str = "val_accuracy") -> list[store.RunRecord]:
    """The study's best complete trials by its validation objective, best first (a higher
    rung's first, with `--rungs`)."""
    from ferhpo.engines.trial import objective_value

    done = [r for r in store.records(study, states=("complete",)) if r.kind == "trial"]
    if not done:
        raise StoreError(f"study {study.study_name!r} has no complete trial; expected a search with finished trials")
    if k > len(done):
        raise ConfigError(
            f"--top {k} asks for {k} configurations, but study {study.study_name!r} has {len(done)} complete trial(s)"
        )
    return store.best_first(done, lambda r: objective_value(r.to_dict(), objective), group=store.higher_rung_first)[:k]


def reference_run(candidates: list[store.RunRecord], best: store.RunRecord) -> store.RunRecord:
    """The reference to confirm against: a complete baseline run of `best`'s budget,
    protocol and data (the highest test accuracy when several: the hardest bar)."""
    from ferhpo.report.compare import budget_text, hardest_bar, held_text

    bar = hardest_bar(best, candidates)
    if bar is None:
        raise StoreError(
            f"no complete baseline run at the study's budget and protocol ({budget_text(best.budget)} / {best.protocol}); "
            f"the baseline study holds: {held_text(candidates)}; expected one made with e.g. `ferhpo baseline --space SPACE "
            f"--budget {best.budget.get('name')} --protocol {best.protocol}` (or name it with --baseline-study)"
        )
    return bar


def plan(
    top: list[store.RunRecord],
    reference: store.RunRecord,
    *,
    seeds: int,
    budget: Budget | None,
    fingerprint: str,
    refit: bool = False,
) -> list[Planned]:
    """Every (configuration, seed) of the confirmation, seed by seed: an interrupted
    confirm has all configurations at its first seeds rather than one at all seeds.

    With `refit`, each configuration then gets one more run, ``<run>-refit``, with the
    source's seed under the "refit" protocol: every training image, no validation, for
    the source's best epoch count (scaled when `budget` has other epochs), the last
    weights kept: the usual last step before a model selected on holdout is used."""
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, but got {seeds}")
    items = []
    for i in range(seeds):
        for role, source in [*(("candidate", r) for r in top), ("reference", reference)]:
            chosen = budget or Budget(**source.budget)
            base = TrainConfig(**source.train)
            seed = base.seed + i
            train = runs.budgeted(dataclasses.replace(base, seed=seed), chosen)
            model = model_config_from_dict(source.model)
            name = f"{source.run}-seed{seed}"
            key = runs.run_key(name, model, train, chosen, source.protocol, fingerprint)
            same_run = (
                i == 0
                and dataclasses.asdict(chosen) == source.budget
                and train == TrainConfig(**source.train)  # a record older than a field has it at its default
                and source.data_fingerprint == fingerprint
            )
            items.append(
                Planned(name, source, role, seed, model, train, chosen, key, source if same_run else None, source.protocol)
            )
    if refit:
        for role, source in [*(("candidate", r) for r in top), ("reference", reference)]:
            if source.protocol not in ("holdout", "seed-resnet"):
                raise ConfigError(
                    f"--refit retrains a configuration selected on a holdout split, but {source.run} used protocol "
                    f"{source.protocol!r}; expected holdout (its validation images are then trained on)"
                )
            chosen = budget or Budget(**source.budget)
            ran = max(int(source.epochs_run), 1)
            epochs = max(1, round(source.best_epoch * (chosen.epochs or ran) / ran))
            train = TrainConfig(**source.train).with_epochs(epochs)
            refit_budget = dataclasses.replace(chosen, epochs=epochs)
            model = model_config_from_dict(source.model)
            name = f"{source.run}-refit"
            key = runs.run_key(name, model, train, refit_budget, "refit", fingerprint)
            items.append(Planned(name, source, role, train.seed, model, train, refit_budget, key, None, "refit"))
    return items


def copy_run(study, item: Planned, root: Path = store.STUDIES_DIR) -> store.RunRecord:
    """Enter the source's own run (this configuration and seed) into the confirm study:
    its artifacts copied into the confirm study's folder, its record renamed."""
    src = item.reuse
    assert src is not None
    source_dir = store.run_dir(src.study, src.run_id, root)
    if not source_dir.is_dir():
        raise StoreError(f"the artifacts of {src.study}/{src.run} are missing ({source_dir}); expected its run folder")
    target = store.run_dir(study.study_name, src.run_id, root)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source_dir, partial)
    record = dataclasses.replace(
        src,
        study=study.study_name,
        run=item.name,
        run_key=item.key,
        kind=item.kind,
        search={
            **src.search,
            "confirm_of": f"{src.study}/{src.run}",
            "role": item.role,
            "copied_from": f"{src.study}/{src.run_id}",
        },
    )
    try:
        write_json(partial / "record.json", record.to_dict())
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
        store.add_record(study, record)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)
        raise
    return record


def run(
    study,
    items: list[Planned],
    *,
    data,
    callbacks: Callable[[Planned], list] = lambda item: [],
    on_done: Callable[[Planned, store.RunRecord, str], None] = lambda item, record, how: None,
    root: Path = store.STUDIES_DIR,
    force: bool = False,
) -> list[store.RunRecord]:
    """Train (or copy) each item not yet finished in `study`; return all their records.

    `on_done(item, record, how)` is told each item's outcome: "finished" (already
    there), "copied" or "trained". KeyboardInterrupt propagates after the running
    run's partial folder is removed (train_and_record does that)."""
    out = []
    for item in items:
        done = None if force else runs.find_finished(study, item.key)
        if done is not None:
            out.append(done)
            on_done(item, done, "finished")
            continue
        if item.reuse is not None and not force:
            record = copy_run(study, item, root)
            how = "copied"
        else:
            record = runs.train_and_record(
                study,
                name=item.name,
                kind=item.kind,
                model=item.model,
                train=item.train,
                data=data,
                protocol=item.protocol,
                budget=item.budget,
                callbacks=callbacks(item),
                root=root,
                hyperparameters=item.source.hyperparameters,
                search={"confirm_of": f"{item.source.study}/{item.source.run}", "role": item.role},
            )
            how = "trained"
        out.append(record)
        on_done(item, record, how)
    return out
