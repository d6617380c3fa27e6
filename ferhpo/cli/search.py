"""`ferhpo search`: search DenseNet/ResNet architectures and training recipes."""

from __future__ import annotations

import argparse
import sys
import time

from ferhpo.cli.common import (
    PROG,
    Command,
    UsageError,
    add_data_options,
    add_storage_argument,
    estimate_lines,
    import_keras,
    load_data,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    quiet_optuna,
)
from ferhpo.redact import redact


def _search_arguments(p: argparse.ArgumentParser) -> None:
    from ferhpo.config import BUDGETS, PRECISIONS
    from ferhpo.engines import ENGINES, PRUNERS, SAMPLERS

    add_data_options(p)
    p.add_argument(
        "--space",
        required=True,
        metavar="densenet|resnet|FILE",
        help="a shipped search space (search_spaces/<name>.toml) or your own TOML file",
    )
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default="optuna",
        help="optuna (default; several workers, any storage) or keras-tuner (one worker)",
    )
    p.add_argument(
        "--sampler",
        choices=SAMPLERS,
        help="Optuna sampler (default tpe; nsga2 for two objectives); with keras-tuner: random "
        "(RandomSearch, the default) or gp (BayesianOptimization)",
    )
    p.add_argument(
        "--pruner",
        choices=PRUNERS,
        help="per-epoch pruner (default hyperband; none for two objectives); with keras-tuner, "
        "hyperband selects the Hyperband tuner",
    )
    p.add_argument(
        "--objective",
        default="val_accuracy",
        metavar="val_accuracy|macro_f1[,params]",
        help="validation objective to maximise (never test data); add ',params' to search the "
        "accuracy / model-size trade-off with NSGA-II (default: val_accuracy)",
    )
    p.add_argument(
        "--trials",
        type=positive_int,
        default=20,
        help="trials the study should reach (default 20); a rerun continues up to this number",
    )
    p.add_argument("--timeout", type=positive_int, metavar="SECONDS", help="stop starting new trials after this long")
    p.add_argument("--study", help="study name (default: <space>-<engine>-<budget>); rerunning the same command resumes it")
    add_storage_argument(p, example="e.g. postgresql://user@host/db for several machines")
    p.add_argument(
        "--budget",
        choices=list(BUDGETS),
        default="full",
        help="epochs and images per trial: "
        + "; ".join(f"{b.name}: {b.describe()}" for b in BUDGETS.values())
        + " (default: full; its 200 epochs are Hyperband's maximum resource)",
    )
    p.add_argument("--max-epochs", type=positive_int, metavar="N", help="override the budget's epochs per trial")
    p.add_argument(
        "--rungs",
        metavar="E1,E2,...",
        help="promote across budgets (asynchronous successive halving): every configuration trains E1 epochs, the "
        "best 1/--reduction of each rung by validation are trained again for the next rung's epochs, each with "
        "its schedule over its own epochs; --trials counts the new configurations (e.g. 3,9,27; default: none)",
    )
    p.add_argument(
        "--reduction",
        type=positive_int,
        default=3,
        metavar="ETA",
        help="with --rungs: the best 1/ETA of a rung's runs are promoted (default 3)",
    )
    p.add_argument(
        "--test-from-rung",
        type=non_negative_int,
        metavar="K",
        help="with --rungs: evaluate test accuracy only for runs of rung K and above (counted from 0), saving the "
        "lower rungs' test pass; test accuracy never promotes, so this changes no choice (default 0: every run)",
    )
    p.add_argument(
        "--workers", type=positive_int, default=1, help="worker processes on this machine sharing the study (default 1)"
    )
    p.add_argument(
        "--protocol",
        choices=["holdout", "canonical"],
        default="holdout",
        help="split protocol: validation from Training (holdout, default) or PublicTest (canonical)",
    )
    p.add_argument(
        "--seed", type=non_negative_int, default=0, help="seed of the splits, the initialisation and the sampler (default 0)"
    )
    p.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        help="compute precision of every trial (default: the space's, float32 unless it fixes one); "
        "mixed_bfloat16 is faster on GPUs and on CPUs with bfloat16 units (see 'ferhpo bench')",
    )
    p.add_argument(
        "--trial-memory",
        type=positive_float,
        metavar="GB",
        help="cap each trial process's memory (address space) on CPU machines: a model that does not fit fails "
        "as its trial, out of memory, and the study goes on (default: no cap; not for GPU backends)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=positive_int,
        metavar="N",
        help="save a resume checkpoint every N epochs: a trial stopped by SIGTERM (preemption) or a killed "
        "worker resumes from its last checkpoint when it is retried (default: no checkpoints; retries start over)",
    )
    p.add_argument(
        "--fail-fast",
        type=non_negative_int,
        default=3,
        metavar="N",
        help="stop the search (exit 1) when its first N trials all fail for the same reason before any completes: "
        "every next one would too (default 3; 0: run on regardless)",
    )
    p.add_argument(
        "--storage-retry",
        type=non_negative_float,
        default=600.0,
        metavar="SECONDS",
        help="how long workers ride out a database outage, retrying with backoff, before they stop with exit "
        "code 1 (default 600; the study keeps everything, a rerun continues)",
    )
    p.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="write each run's curves for TensorBoard into DIR/<run and key hyperparameters>/ (then: tensorboard --logdir DIR)",
    )


def _resolve_engine_options(args: argparse.Namespace, objectives: tuple[str, ...]) -> tuple[str, str]:
    """Fill in the sampler and pruner defaults; reject combinations that cannot run."""
    multi = len(objectives) > 1
    if args.engine == "keras-tuner":
        if args.workers > 1:
            raise UsageError("--workers > 1 needs --engine optuna (the keras-tuner engine runs one worker)")
        if args.rungs:
            raise UsageError("--rungs needs --engine optuna (keras-tuner promotes across budgets with --pruner hyperband)")
        if multi:
            raise UsageError("two objectives (--objective ...,params) need --engine optuna")
        if args.pruner not in (None, "none", "hyperband"):
            raise UsageError(f"--pruner {args.pruner} needs --engine optuna; keras-tuner prunes with --pruner hyperband only")
        if args.pruner == "hyperband":
            if args.sampler is not None:
                raise UsageError(
                    "with --engine keras-tuner, --pruner hyperband (the Hyperband tuner) and --sampler exclude each other"
                )
            return "hyperband", "hyperband"
        if args.sampler not in (None, "random", "gp"):
            raise UsageError(f"--sampler {args.sampler} needs --engine optuna; keras-tuner runs --sampler random or gp")
        return args.sampler or "random", "none"
    sampler = args.sampler or ("nsga2" if multi else "tpe")
    pruner = args.pruner or ("none" if multi or args.rungs else "hyperband")
    if args.rungs and multi:
        raise UsageError("--rungs promotes by one objective; drop ',params' from --objective or drop --rungs")
    if args.rungs and pruner != "none":
        raise UsageError(
            f"--rungs promotes across budgets itself and cannot be combined with --pruner {pruner}; use --pruner none"
        )
    if multi and pruner != "none":
        raise UsageError(
            f"--pruner {pruner} cannot prune a two-objective search (Optuna prunes single objectives only); use --pruner none"
        )
    if multi and sampler == "cmaes":
        raise UsageError("--sampler cmaes handles one objective; use nsga2, tpe or random with ',params'")
    return sampler, pruner


def _search_run(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from ferhpo import store
    from ferhpo.config import get_budget
    from ferhpo.engines import SearchSettings, parse_objectives
    from ferhpo.spaces import load_space

    objectives = parse_objectives(args.objective)
    rungs = None
    if args.rungs is not None:
        from ferhpo.engines.rungs import check_reduction, parse_rungs

        rungs = parse_rungs(args.rungs)
        check_reduction(args.reduction)
        if args.max_epochs is not None and args.max_epochs != rungs[-1]:
            raise UsageError(
                f"--max-epochs {args.max_epochs} and --rungs {args.rungs} disagree: the top rung's epochs are the "
                f"search's maximum; drop --max-epochs"
            )
        if args.test_from_rung is not None and args.test_from_rung >= len(rungs):
            raise UsageError(
                f"--test-from-rung must name one of the {len(rungs)} rungs of --rungs {args.rungs} (0 to "
                f"{len(rungs) - 1}: the top rung's runs are always tested), but got {args.test_from_rung}"
            )
    elif args.test_from_rung is not None:
        raise UsageError("--test-from-rung needs --rungs (without rungs, every finished trial is tested)")
    sampler, pruner = _resolve_engine_options(args, objectives)
    tensorboard = None
    if args.tensorboard is not None:
        from ferhpo.tensorboard_logs import check_folder

        tensorboard = check_folder(args.tensorboard)  # before any work
    space = load_space(args.space)
    if sampler == "grid":
        from ferhpo.engines.samplers import grid_of

        grid_of(space)  # too large a grid is refused before any work
    budget = get_budget(args.budget)
    _, default_train = space.configs(space.defaults())
    max_epochs = (rungs[-1] if rungs else None) or args.max_epochs or budget.epochs or default_train.epochs
    budget = dataclasses.replace(budget, epochs=max_epochs)
    storage = store.storage_url(args.storage)
    store.heartbeat_seconds()  # a bad $FERHPO_HEARTBEAT fails here, not in a worker
    data = load_data(args)
    study_name = args.study or f"{space.name}-{args.engine}-{budget.name}"
    settings = SearchSettings(
        study=study_name,
        storage=storage,
        space_path=str(Path(space.path).resolve()),
        space=space.to_dict(),
        engine=args.engine,
        sampler=sampler,
        pruner=pruner,
        objectives=objectives,
        trials=args.trials,
        timeout=args.timeout,
        budget=dataclasses.asdict(budget),
        max_epochs=max_epochs,
        protocol=args.protocol,
        seed=args.seed,
        workers=args.workers,
        data={
            "path": data.info.path,
            "cache_dir": str(Path(args.cache_dir).resolve()) if args.cache_dir else None,
            "skip_bad": args.skip_bad,
        },
        data_fingerprint=data.info.fingerprint,
        study_dir=str(store.STUDIES_DIR),
        trial_memory_gb=args.trial_memory,
        precision=args.precision,
        tensorboard=tensorboard,
        storage_retry=args.storage_retry,
        checkpoint_every=args.checkpoint_every,
        fail_fast=args.fail_fast,
        rungs=rungs,
        reduction=args.reduction,
        test_from_rung=args.test_from_rung or 0,
    )
    quiet_optuna()
    from ferhpo.engines.runner import prepare_study
    from ferhpo.errors import dump_stacks_on_sigusr1, raise_terminated_on_sigterm

    dump_stacks_on_sigusr1()
    raise_terminated_on_sigterm()  # a scheduler's preemption stops the search like Ctrl-C
    study = prepare_study(settings)  # a bad storage or a clashing study fails here, before any output
    live = _LiveLine(objectives[0], args.workers)
    what = "Hyperband tuner" if sampler == "hyperband" and args.engine == "keras-tuner" else f"sampler {sampler}, pruner {pruner}"
    print(
        f"search: study '{study_name}' in {redact(storage)}; space {space.name} ({len(space.params)} parameters); "
        f"engine {args.engine} ({what}); objective {','.join(objectives)} on the {args.protocol} validation split; "
        f"{_trials_text(settings)}, {budget.describe()}; {args.workers} worker(s)",
        flush=True,
    )
    if args.engine == "optuna":
        from ferhpo.engines.optuna_engine import adopt_finished
        from ferhpo.engines.runner import run_optuna

        adopted = adopt_finished(study, settings)
        if adopted:
            print(
                f"search: entered {len(adopted)} trial(s) that finished while the storage was away: "
                f"{', '.join(f'trial {n}' for n in adopted)}",
                flush=True,
            )
        outcome = run_optuna(settings, study, live.update)
    else:
        import_keras()  # KerasTuner loads Keras: keep the backend's start-up log quiet
        from ferhpo.engines.kt_engine import run_keras_tuner

        outcome = run_keras_tuner(settings, study, live.update)
    live.close()
    c = outcome.counts
    kept = f"complete {c['complete']}, pruned {c['pruned']}, failed {c['failed']}"
    if outcome.interrupted:
        how = "stopped by SIGTERM" if outcome.terminated else "interrupted"
        resume = " from its last checkpoint" if args.checkpoint_every else ""
        print(
            f"{PROG}: {how}; study '{study_name}' keeps {c['done']} finished trial(s) ({kept}); a trial "
            f"that was running is re-queued with the same parameters and retried{resume} when you rerun the "
            f"same command (or by another worker of the study)",
            file=sys.stderr,
        )
        return 143 if outcome.terminated else 130
    _print_top(study, settings)
    from ferhpo.progress import clock

    print(
        f"study '{study_name}': {c['done']} trial(s) ({kept}) in {clock(outcome.elapsed)}; "
        f"ferhpo report --study {study_name} ranks them against the baselines"
    )
    if c["failed"] and not c["complete"]:
        # Pruned trials are the pruner's work, not failures; but a search that completed
        # nothing and failed some did not do its job.
        logs = Path(settings.study_dir) / study_name / "trial-*" / "trial.log"
        print(
            f"{PROG}: error: no trial completed and {c['failed']} failed; the reasons are in the report "
            f"(ferhpo report --study {study_name}) and the trial logs ({logs})",
            file=sys.stderr,
        )
        return 1
    return 0


def _trials_text(settings) -> str:
    if not settings.rungs:
        return f"{settings.trials} trials"
    from ferhpo.engines.rungs import runs_per_rung

    counts = runs_per_rung(settings.trials, settings.rungs, settings.reduction)
    per = ", ".join(f"{n} x {e} epochs" for n, e in zip(counts, settings.rungs))
    tested = f"; test accuracy from rung {settings.test_from_rung} up" if settings.test_from_rung else ""
    return f"{settings.trials} configurations promoted across rungs (reduction {settings.reduction}: {per}){tested}"


class _LiveLine:
    """The live progress: the study's line, then one line per running trial (its epoch,
    batch, latest value, elapsed time and time left from its own epoch times).

    On a terminal the block is redrawn in place every second; otherwise it is printed
    when a trial starts, ends or finishes an epoch, and within a long epoch at most every
    `progress.UPDATE_SECONDS`. Once the first trial has timed some batches, one line
    estimates a trial and the whole search on this machine (`estimate_lines`).
    """

    def __init__(self, objective: str, workers: int = 1, out=None, interactive: bool | None = None):
        self.objective = objective
        self.workers = workers
        self.out = out if out is not None else sys.stdout
        self.interactive = self.out.isatty() if interactive is None else interactive
        self.drawn = 0  # lines of the block on screen (terminal)
        self.last_key: tuple | None = None  # what the last printed block showed
        self.last_print = 0.0
        self.estimated = False

    def lines(self, p) -> list[str]:
        from ferhpo.progress import bar, clock

        c = p.counts
        best = f"{p.best:.4f}" if p.best is not None else "-"
        line = (
            f"trials {c['done']}/{p.wanted} (complete {c['complete']}, pruned {c['pruned']}, failed {c['failed']}), "
            f"running {c['running']}, best {self.objective} {best}, elapsed {clock(p.elapsed)}"
        )
        if p.storage_down_since is not None:
            from ferhpo.outage import clock as at

            line += f", STORAGE UNREACHABLE since {at(p.storage_down_since)} (the workers wait for it)"
        status = p.status
        if status is None:
            return [line]
        if status.seconds_left is not None and c["done"] < p.wanted:
            line += f", left ~{clock(status.seconds_left)}"
        out = [line]
        for r in status.running:
            if r.epoch is None:
                where = "starting (process, data, model)"
            else:
                where = f"epoch {r.epoch}/{r.epochs}"
                if r.batches and r.batch:
                    inside = f"{bar(r.batch / r.batches)} " if self.interactive else ""
                    where += f", epoch {r.epoch + 1}: {inside}batch {r.batch}/{r.batches}"
            value = f"{r.value:.4f}" if r.value is not None else "-"
            left = f", left ~{clock(r.seconds_left)}" if r.seconds_left is not None else ""
            stale = ", STALE: no heartbeat, its worker is gone" if r.stale else ""
            out.append(f"  trial {r.number}: {where}, {self.objective} {value}, elapsed {clock(r.elapsed)}{left}{stale}")
        return out

    def update(self, p) -> None:

        notes = self._estimate(p)
        block = self.lines(p)
        running = () if p.status is None else tuple((r.number, r.epoch, r.stale) for r in p.status.running)
        key = (tuple(sorted(p.counts.items())), running, p.storage_down_since)
        now = time.monotonic()
        if self.interactive:
            import shutil

            width = shutil.get_terminal_size((120, 24)).columns - 1
            erase = f"\x1b[{self.drawn}F\x1b[J" if self.drawn else ""
            text = "\n".join([*notes, *(line[:width] for line in block)])
            print(erase + text, file=self.out, flush=True)
            self.drawn = len(block)
            return
        from ferhpo.progress import UPDATE_SECONDS

        if notes or key != self.last_key or (running and now - self.last_print >= UPDATE_SECONDS):
            print("\n".join([*notes, *block]), file=self.out, flush=True)
            self.last_key, self.last_print = key, now

    def _estimate(self, p) -> list[str]:
        """Once: how long a trial and the search take here, from the first timed batches."""
        if self.estimated or p.status is None:
            return []
        timed = [r for r in p.status.running if r.seconds_per_epoch is not None and r.epochs]
        if not timed:
            return []
        self.estimated = True
        r = timed[0]
        return estimate_lines(
            f"trial {r.number}", r.seconds_per_epoch, r.epochs, p.wanted, self.workers, r.accelerator, what="trial(s)"
        )

    def close(self) -> None:
        self.drawn = 0


def _print_top(study, settings) -> None:
    from ferhpo.engines.runner import pareto_records, top_records
    from ferhpo.engines.trial import objective_value

    if settings.multi_objective:
        rows = sorted(pareto_records(study), key=lambda r: r.params)
        study.set_user_attr("ferhpo.pareto", [r.run for r in rows])
        title = f"Pareto front ({settings.objectives[0]} against parameters), smallest first"
    else:
        rows = top_records(study, settings, 5)
        title = f"top {len(rows)} by validation {settings.objectives[0]}" + (", the highest rung first" if settings.rungs else "")
    if not rows:
        print("no trial completed yet")
        return
    from ferhpo.formatting import format_brief
    from ferhpo.spaces import load_space

    defaults = load_space(settings.space_path).defaults()
    print(title)
    print(
        f"{'rank':>4}  {'trial':<10}{settings.objectives[0]:>14}{'test acc':>10}{'params':>12}{'epochs':>8}  "
        "hyperparameters (those not at the space's default)"
    )
    for rank, r in enumerate(rows, 1):
        test = r.test_accuracy
        changed = {k: v for k, v in r.hyperparameters.items() if defaults.get(k, object()) != v}
        hp = ", ".join(f"{k}={format_brief(v)}" for k, v in changed.items()) or "(all defaults)"
        print(
            f"{rank:>4}  {r.run:<10}{objective_value(r.to_dict(), settings.objectives[0]):>14.4f}"
            f"{(f'{test:.4f}' if test is not None else '-'):>10}{r.params:>12,}{r.epochs_run:>8}  {hp}"
        )


COMMAND = Command("search", "search DenseNet/ResNet architectures and training recipes", _search_arguments, _search_run)
