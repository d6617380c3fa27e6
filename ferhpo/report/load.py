"""Reading a study (and its baselines) from the store, without writing anything.

`load_study` opens the storage read-only in spirit: a SQLite file that does not exist
is an error here (the store would create it), as are a missing study and an empty one.
Everything the report needs is gathered into a `StudyData`: the study's own runs with
their Optuna trial number and objective value, its failed trials, trials still running
(a snapshot), the search settings saved on the study, and the reproduced baseline runs
(of this study or of a baseline study in the same storage).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferhpo import store
from ferhpo.errors import StoreError
from ferhpo.redact import redact

#: The Pareto front (run names) a multi-objective search saves on its study.
PARETO_ATTR = "ferhpo.pareto"
#: The study `ferhpo baseline` writes by default.
DEFAULT_BASELINE_STUDY = "baseline"


@dataclass(frozen=True)
class Run:
    """One recorded run (baseline or trial) and where it sits in its study."""

    record: store.RunRecord
    number: int | None  # the Optuna trial number in its study
    objective: float | None  # the (first) objective: what the study ranked by
    root: Path  # the studies folder its artifacts lie under

    @property
    def name(self) -> str:
        return self.record.run

    @property
    def status(self) -> str:
        return self.record.status

    def artifact(self, key: str) -> Path | None:
        """The path of an artifact named in the record (None when it was not written)."""
        rel = self.record.artifacts.get(key)
        if not rel:
            return None
        path = self.root / self.record.study / rel
        return path if path.exists() else None

    @property
    def max_epochs(self) -> int:
        """The epochs the run was to train: its rung's with `--rungs`, else the search's."""
        s = self.record.search
        return int(s.get("rung_epochs") or s.get("max_epochs") or self.record.train.get("epochs") or self.record.epochs_run)


@dataclass(frozen=True)
class Failure:
    """A trial that failed by itself (no record): why, and what it had drawn."""

    number: int
    run: str
    error: str
    hyperparameters: dict[str, Any]


@dataclass
class StudyData:
    name: str
    url: str
    runs: list[Run]  # the study's own runs, oldest first
    failures: list[Failure]
    running: int  # trials still running: the report is a snapshot
    settings: dict[str, Any] | None  # the search's binding settings, None for a baseline study
    directions: list[str]
    pareto: list[str] | None
    baseline_study: str | None  # where reproduced baselines came from (may be this study)
    baselines: list[Run] = field(default_factory=list)  # complete baseline runs, any study
    ensembles: list[dict[str, Any]] = field(default_factory=list)  # `ferhpo ensemble` summaries, oldest first
    confirm: dict[str, Any] | None = None  # what a `ferhpo confirm` study confirms (source, top, reference, seeds)
    notes: list[str] = field(default_factory=list)

    @property
    def is_search(self) -> bool:
        return any(r.record.kind == "trial" for r in self.runs) or self.settings is not None

    @property
    def ranked(self) -> list[Run]:
        """The runs the report ranks: the trials of a search, or a baseline study's runs."""
        trials = [r for r in self.runs if r.record.kind == "trial"]
        return trials if trials else list(self.runs)

    @property
    def multi_objective(self) -> bool:
        return len(self.directions) > 1

    @property
    def objective_name(self) -> str:
        if self.settings and self.settings.get("objectives"):
            return str(self.settings["objectives"][0])
        for run in self.runs:
            if run.record.search.get("objective"):
                return str(run.record.search["objective"])
        return "val_accuracy"

    @property
    def space(self) -> dict[str, Any] | None:
        space = (self.settings or {}).get("space")
        return space if isinstance(space, dict) else None


def _sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite:///"):
        rest = url[len("sqlite:///") :]
        return None if rest in ("", ":memory:") else Path(rest)
    return None


def open_storage(url: str | None):
    """The study storage, never created: a SQLite file must already exist."""
    resolved = store.storage_url(url)
    path = _sqlite_path(resolved)
    if path is not None and not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise StoreError(
            f"cannot open storage {redact(resolved)}: {path} {what}; expected the storage a baseline or search "
            f"wrote (--storage URL or $FERHPO_STORAGE)"
        )
    try:
        return store.open_storage(url)
    except StoreError:
        raise
    except Exception as exc:  # e.g. an Optuna schema newer or older than this Optuna
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreError(
            f"cannot open storage {redact(resolved)}: {redact(reason)}; expected an Optuna storage this Optuna can read"
        ) from None


def _objective(trial, record: store.RunRecord) -> float | None:
    values = getattr(trial, "values", None)
    if values:
        value = values[0]
        if value is not None and math.isfinite(value):
            return float(value)
    curve = [v for v in record.search.get("objective_curve") or [] if v is not None and math.isfinite(v)]
    if curve:
        return float(max(curve))
    if (
        record.status != "failed"
        and math.isfinite(record.best_val_accuracy)
        and ("val" in record.evaluation or not record.evaluation)
    ):
        return float(record.best_val_accuracy)
    return None  # no validation (the refit protocol): nothing to rank it by


def _runs(study, root: Path) -> list[Run]:
    """The study's records (store.records decides which count) with their trials."""
    import optuna

    state = {
        optuna.trial.TrialState.COMPLETE: "complete",
        optuna.trial.TrialState.PRUNED: "pruned",
        optuna.trial.TrialState.FAIL: "failed",
    }
    by_id: dict[Any, Any] = {}  # keyed by the stored run_id, whatever a record holds
    for trial in study.get_trials(deepcopy=False):
        raw = trial.user_attrs.get(store.RECORD_ATTR)
        if isinstance(raw, dict) and raw.get("status") == state.get(trial.state):
            by_id.setdefault(raw.get("run_id"), trial)
    out = []
    for record in store.records(study):
        trial = by_id.get(record.run_id)
        out.append(Run(record, None if trial is None else trial.number, _objective(trial, record), root))
    return out


def _failures(study) -> list[Failure]:
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    out = []
    for item in store.failures(study):
        trial = trials.get(item["number"])
        attrs = trial.user_attrs if trial is not None else {}
        if attrs.get(store.RECORD_ATTR):  # a failed run with a record is listed as a run
            continue
        hyper = dict(item.get("params") or attrs.get("ferhpo.hyperparameters") or {})
        run = attrs.get("run") or f"trial-{item['number']}"
        out.append(Failure(item["number"], str(run), str(item["error"]), hyper))
    return out


def _running(study) -> int:
    import optuna

    return sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
        and not t.user_attrs.get(store.SURPLUS_ATTR)
    )


def load_study(
    name: str,
    *,
    url: str | None = None,
    baseline_study: str | None = None,
    root: Path = store.STUDIES_DIR,
) -> StudyData:
    """Everything the report needs about study `name`; StoreError when it cannot be read."""
    storage = open_storage(url)
    resolved = redact(store.storage_url(url))  # shown in the report, never the password
    assert resolved is not None  # redact keeps a string a string
    study = store.open_study(name, url, create=False, storage=storage)
    runs = _runs(study, root)
    failures = _failures(study)
    running = _running(study)
    if not runs and not failures:
        more = f" ({running} trial(s) still running: try again when one has finished)" if running else ""
        raise StoreError(
            f"study {name!r} in {resolved} holds no finished runs{more}; expected at least one complete, pruned or failed run"
        )
    settings = study.user_attrs.get(store.SETTINGS_ATTR)
    pareto = study.user_attrs.get(PARETO_ATTR)
    data = StudyData(
        name=name,
        url=resolved,
        runs=runs,
        failures=failures,
        running=running,
        settings=settings if isinstance(settings, dict) else None,
        directions=[d.name.lower() for d in study.directions],
        pareto=list(pareto) if isinstance(pareto, list) else None,
        baseline_study=None,
        confirm=study.user_attrs.get(store.CONFIRM_ATTR) if isinstance(study.user_attrs.get(store.CONFIRM_ATTR), dict) else None,
        ensembles=sorted(
            (e for e in (study.user_attrs.get(store.ENSEMBLES_ATTR) or {}).values() if isinstance(e, dict)),
            key=lambda e: str(e.get("created", "")),
        ),
    )

    own = [r for r in runs if r.record.kind == "baseline" and r.status == "complete"]
    other: list[Run] = []
    source = baseline_study
    if source is None:
        known = {s.study_name for s in storage.get_all_studies()}
        source = DEFAULT_BASELINE_STUDY if DEFAULT_BASELINE_STUDY in known and name != DEFAULT_BASELINE_STUDY else None
    if source is not None and source != name:
        bstudy = store.open_study(source, url, create=False, storage=storage)
        other = [r for r in _runs(bstudy, root) if r.record.kind == "baseline" and r.status == "complete"]
        if not other and baseline_study is not None:
            raise StoreError(
                f"study {source!r} holds no complete baseline runs; expected the study `ferhpo baseline` wrote "
                f"(--baseline-study NAME)"
            )
        if not other:
            data.notes.append(f"study {source!r} holds no complete baseline runs; no reproduced baseline to compare with")
    if own and other:
        data.baseline_study = f"{name} and {source}"
    elif own:
        data.baseline_study = name
    elif other:
        data.baseline_study = source
    data.baselines = own + other
    return data
