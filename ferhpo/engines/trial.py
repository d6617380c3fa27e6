"""One search trial, trained in its own process, and the contract between it and the engines.

The engine writes a spec (`spec.json`: configs, budget, data, where to report) into the
trial's folder and starts ``python -m ferhpo.engines.trial SPEC``. The process trains
with the one fit function; after every epoch it reports the validation objective to
the trial in the Optuna storage and asks the study's pruner whether to stop. It ends
with `record.json` (complete or pruned) or `failure.json` (why it failed) in the
folder, both written atomically, and exit code 0 or 1.

A process per trial is what keeps a long search's memory flat: whatever Keras, the
backend or the allocator keep after a model is returned to the system when the process
exits.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferhpo import faults
from ferhpo.atomic import WRITING, write_json
from ferhpo.config import TrainConfig, model_config_to_dict
from ferhpo.engines import SearchSettings
from ferhpo.errors import FerhpoError, Terminated, as_terminated, chain, dump_stacks_on_sigusr1
from ferhpo.phases import SPAWNED_AT, PhaseClock
from ferhpo.redact import real_url, redact
from ferhpo.threads import thread_env, usable_cores

SPEC = "spec.json"
RECORD = "record.json"
FAILURE = "failure.json"
LOG = "trial.log"


@dataclass(frozen=True)
class Outcome:
    """What a trial process left: its record (complete or pruned), or why it failed."""

    record: dict[str, Any] | None
    error: str | None
    seconds: float
    disk_full: bool = False  # the error is a full disk (or quota), not the configuration's


def _tail(path: Path, lines: int = 1) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


# Several workers' trials share one GPU: each backend takes memory as it needs it instead
# of reserving most of the device at start (JAX: 75%, TensorFlow: nearly all). A user's
# own setting wins.
SHARE_GPU = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "TF_FORCE_GPU_ALLOW_GROWTH": "true"}


def trial_env(workers: int) -> dict[str, str]:
    """The environment of a trial process: the GPU shared, and with several workers on a
    CPU, the cores divided among them (what the user set in the environment wins)."""
    env = {**SHARE_GPU}
    if workers > 1:
        env.update(thread_env(max(1, usable_cores() // workers)))
    return {**env, **os.environ}


def run_process(folder: Path, *, env: dict[str, str] | None = None, preexec_fn=None) -> Outcome:
    """Run the trial whose spec lies in `folder` in a fresh Python process; wait for it.

    KeyboardInterrupt propagates after the child has exited (Ctrl-C reaches the whole
    process group, so the child stops too; SIGTERM, `Terminated`, is passed on to it).
    """
    start = time.perf_counter()
    with open(folder / LOG, "wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "ferhpo.engines.trial", str(folder / SPEC)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**(trial_env(1) if env is None else env), faults.ROLE: "trial", SPAWNED_AT: repr(time.time())},
            preexec_fn=preexec_fn,
        )
        try:
            code = child.wait()
            if code in (Terminated.exit_code, -signal.SIGTERM):
                # SIGTERM reached the trial first (Slurm signals every process of a job):
                # the same stop as when it reaches this process.
                raise as_terminated()
        except BaseException as exc:
            # Ctrl-C or the worker being stopped: never leave an orphan training.
            if isinstance(exc, Terminated):
                child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            raise
    seconds = time.perf_counter() - start
    record_path, failure_path = folder / RECORD, folder / FAILURE
    if code == 0 and record_path.is_file():
        return Outcome(json.loads(record_path.read_text()), None, seconds)
    if failure_path.is_file():
        failure = json.loads(failure_path.read_text())
        return Outcome(None, failure["error"], seconds, bool(failure.get("disk_full")))
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (the system's out-of-memory killer?)" if name == "SIGKILL" else ""
        reason = f"the trial process was killed by {name}{hint}"
    else:
        reason = f"the trial process exited with code {code}"
    last = _tail(folder / LOG)
    return Outcome(None, f"{reason}; last log line: {last}" if last else reason, seconds)


# --------------------------------------------------------------------------- the contract


class TrialFailed(Exception):
    """A trial failed by itself (its reason in the trial's `store.ERROR_ATTR`); the study
    goes on. Both engines raise it and tell their tuner to record a failure."""


def trial_spec(
    s: SearchSettings, *, name: str, folder: Path, model, train: TrainConfig, values: dict, trial=None, resume: Path | None = None
) -> dict:
    """Everything a trial process needs, as plain data (written to its spec.json)."""
    return {
        "checkpoint_every": s.checkpoint_every,
        "resume_from": str(resume) if resume is not None else None,
        "study": s.study,
        "storage": redact(s.storage) if trial is not None else None,  # the real URL: in the environment
        "trial_id": trial._trial_id if trial is not None else None,
        "trial_number": trial.number if trial is not None else None,
        "name": name,
        "folder": str(folder),
        "model": model_config_to_dict(model),
        "train": dataclasses.asdict(train),
        "budget": s.budget,
        "protocol": s.protocol,
        "objective": s.objectives[0],
        "multi_objective": s.multi_objective,
        "hyperparameters": values,
        "data": s.data,
        "tensorboard": s.tensorboard,
        "search": {
            "engine": s.engine,
            "sampler": s.sampler,
            "pruner": s.pruner,
            "objectives": list(s.objectives),
            "space": s.space.get("name"),
            "max_epochs": s.max_epochs,
            "trial_number": trial.number if trial is not None else None,
        },
    }


def objective_value(record: dict, objective: str) -> float:
    """The trial's value: the best per-epoch validation objective (what the pruner saw)."""
    curve = record["search"].get("objective_curve") or []
    finite = [v for v in curve if v == v]
    if finite:
        return max(finite)
    return float(record["best_val_accuracy"]) if objective == "val_accuracy" else float(record["evaluation"]["val"][objective])


def trial_preexec(memory_gb: float | None):
    """What a trial process does before it starts: die with its worker, and keep under
    `memory_gb` of address space (so a model too large for the machine fails as that
    trial, out of memory, instead of the system's OOM killer picking a victim)."""

    def preexec() -> None:
        die_with_parent()
        if memory_gb:
            import resource

            limit = int(memory_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return preexec


def die_with_parent() -> None:
    """In a child, before exec: receive SIGKILL when the parent dies (Linux).

    A killed worker must not leave its trial training on as an orphan."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


# --------------------------------------------------------------------------- in the child


def _objective_callback(spec: dict[str, Any], study, trial_id: int | None, x_val, y_val, phases: PhaseClock | None = None):
    """A Keras callback: report the objective after each epoch; stop when the pruner says so.

    It also keeps the trial's progress (`ferhpo.progress.PROGRESS_ATTR`: epochs, batches,
    measured epoch times) on the running trial, once per epoch and within a long epoch
    at most every UPDATE_SECONDS, for the live line and `ferhpo status`. The time of
    these storage calls is booked to the `storage` phase of `phases`.
    """
    import keras
    import numpy as np

    from ferhpo.outage import StorageUnavailable
    from ferhpo.progress import PROGRESS_ATTR, UPDATE_SECONDS, RunProgress
    from ferhpo.training import classification_metrics, predict
    from ferhpo.training.build import has_accelerator

    objective = spec["objective"]
    epochs = spec["train"]["epochs"]
    report = study is not None and trial_id is not None and not spec.get("multi_objective", False)
    trial = None
    if study is not None and trial_id is not None:
        import optuna

        try:
            trial = optuna.trial.Trial(study, trial_id)
        except StorageUnavailable:
            report = False  # train on without the storage; the worker enters the curve
    progress = RunProgress(epochs=epochs, accelerator=has_accelerator())
    phases = PhaseClock() if phases is None else phases

    def reach(call):
        """`call()` against the storage; None when it is away (training goes on: no
        pruning decision then, and the worker reports the missed values afterwards)."""
        with phases.phase("storage"):
            try:
                return call()
            except StorageUnavailable:
                return None

    def publish() -> None:
        if trial is not None:
            progress.updated = time.time()
            reach(lambda: trial.set_user_attr(PROGRESS_ATTR, progress.to_dict()))

    class Objective(keras.callbacks.Callback):
        """Keeps the per-epoch objective in the logs (and so in the history)."""

        pruned = False
        pruned_at = 0
        resumed_at = 0
        values: list[float] = []

        def restore(self, epoch: int, logs: list[dict]) -> None:
            """Resumed after `epoch` epochs: their objective values, from their logs."""
            key = objective if objective.startswith("val_") else f"val_{objective}"  # val_accuracy, val_macro_f1
            self.resumed_at = epoch
            self.values = [float(entry.get(key, float("nan"))) for entry in logs[:epoch]]
            for value in self.values:
                progress.end_epoch(value if value == value else None)

        def on_epoch_begin(self, epoch, logs=None):
            progress.begin_epoch()
            if epoch == 0:  # training has begun (start-up, data and tracing are behind)
                publish()
                faults.busy()

        def on_train_batch_end(self, batch, logs=None):
            progress.end_batch(batch + 1, self.params.get("steps"))
            if trial is not None and time.time() - (progress.updated or 0.0) >= UPDATE_SECONDS:
                publish()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs if logs is not None else {}
            if objective == "macro_f1":
                predicted = np.argmax(predict(self.model, x_val, batch_size=256), axis=-1)
                value = classification_metrics(y_val, predicted)["macro_f1"]
                logs["val_macro_f1"] = value
            else:
                value = float(logs.get("val_accuracy", float("nan")))
            self.values = [*self.values, value]
            progress.end_epoch(value if value == value else None)
            publish()
            if not report:
                return

            def report_and_ask():
                trial.report(value, epoch + 1)
                faults.point("trial-reported")
                if spec["search"].get("rung"):
                    faults.point("promotion-reported")
                # After the last epoch there is nothing left to save: the trial completes.
                return epoch + 1 < epochs and trial.should_prune()

            if reach(report_and_ask):
                self.pruned, self.pruned_at = True, epoch + 1
                self.model.stop_training = True

    return Objective()


def run_trial(spec: dict[str, Any], data=None, phases: PhaseClock | None = None) -> dict[str, Any]:
    """Train the trial of `spec`; write its record into spec["folder"] and return it.

    `data` may be handed in (tests do, to watch which images are read); otherwise the
    dataset is loaded through the cache like every command does. `phases` is the
    clock of the trial process (from its spawn); a fresh one when not given.
    """
    from ferhpo import runs
    from ferhpo.config import Budget, TrainConfig, model_config_from_dict
    from ferhpo.data import load_fer2013

    phases = PhaseClock() if phases is None else phases
    if data is None:
        source = spec["data"]
        with phases.phase("data"):
            data = load_fer2013(source["path"], source.get("cache_dir"), skip_bad=source.get("skip_bad", False))
    model = model_config_from_dict(spec["model"])
    train = TrainConfig(**spec["train"])
    budget = Budget(**spec["budget"])

    study, trial_id = None, spec.get("trial_id")
    if trial_id is not None:
        import optuna

        from ferhpo import store
        from ferhpo.engines.samplers import make_pruner
        from ferhpo.outage import StorageUnavailable

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with phases.phase("storage"):
            try:  # the trial trains on if the storage is away: its worker waits for it
                study = optuna.load_study(
                    study_name=spec["study"],
                    storage=store.open_storage(real_url(spec["storage"]), retry=0),
                    pruner=make_pruner(spec["search"]["pruner"], train.epochs),
                )
            except StorageUnavailable:
                study = None

    with phases.phase("data"):
        splits = runs.budget_splits(data, spec["protocol"], budget, train.seed)
        x_val = data.images[splits.val][..., None]
    callback = _objective_callback(spec, study, trial_id, x_val, data.labels[splits.val], phases)
    extra = []
    if spec.get("tensorboard"):
        from ferhpo.tensorboard_logs import callback as tensorboard

        extra.append(tensorboard(spec["tensorboard"], spec["name"], spec["hyperparameters"]))
    resume = None
    if spec.get("resume_from"):
        from ferhpo.store import RESUME_DIR

        candidate = Path(spec["resume_from"]) / RESUME_DIR
        resume = candidate if candidate.is_dir() else None
    record = runs.train_run(
        study_name=spec["study"],
        name=spec["name"],
        kind="trial",
        model=model,
        train=train,
        data=data,
        protocol=spec["protocol"],
        budget=budget,
        folder=Path(spec["folder"]),
        callbacks=[callback, *extra],  # the objective first: TensorBoard sees val_macro_f1 too
        evaluate_test=lambda: not callback.pruned and spec.get("evaluate_test", True),
        status=lambda: "pruned" if callback.pruned else "complete",
        hyperparameters=spec["hyperparameters"],
        search=lambda: {
            **spec["search"],
            "objective": spec["objective"],
            "objective_curve": callback.values,
            "pruned_at_epoch": callback.pruned_at or None,
            **({"resumed_at_epoch": callback.resumed_at} if callback.resumed_at else {}),
        },
        phases=phases,
        checkpoint_every=spec.get("checkpoint_every"),
        resume=resume,
        on_resume=callback.restore,
    )
    return record.to_dict()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    phases = PhaseClock.for_child()
    spec_path = Path(argv[0])
    spec = json.loads(spec_path.read_text())
    folder = Path(spec["folder"])
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    end_at_once_on_sigterm()  # first: threads started later inherit its signal mask
    dump_stacks_on_sigusr1()
    # Writing past a file-size limit should fail the write (EFBIG), not kill the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    faults.limit_file_size()
    try:
        import logging

        import keras  # noqa: F401  (the backend loads before the clock of the first epoch)

        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        phases.mark_startup()
        run_trial(spec, phases=phases)
        return 0
    except KeyboardInterrupt:
        return 130
    except FerhpoError as exc:
        return _failed(folder, str(exc))
    except MemoryError:
        return _failed(folder, "out of memory (MemoryError) while training")
    except Exception as exc:  # the study goes on; the reason is kept with the trial
        import traceback

        try:
            print(redact(traceback.format_exc()), end="", file=sys.stderr)
        except OSError:  # the log's disk is full too: the failure file says why
            pass
        text = str(exc).strip().splitlines()
        kind = type(exc).__name__
        if "OOM" in kind or "ResourceExhausted" in kind or "out of memory" in str(exc).lower():
            return _failed(folder, f"out of memory: {text[0] if text else kind}")
        if _disk_full(exc):
            # Written while the failed file's writer is still referenced: HDF5 can crash
            # when it lets go of a file it could not write, so leave before that.
            _failed(folder, f"disk full while writing the trial's results: {(text[0] if text else kind)[:160]}", True)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
        return _failed(folder, f"{kind}: {text[0] if text else ''}".rstrip(": "))


def end_at_once_on_sigterm() -> None:
    """From now on, SIGTERM ends this process within moments, whatever it is doing.

    A Python signal handler runs only when the main thread returns to Python, which a
    training step, a graph's compilation or the backend's start-up may not do for tens
    of seconds; a scheduler's grace period is often 30 s. A stopped trial's partial work
    is discarded anyway: its worker re-queues it, to resume from its last checkpoint.
    So a thread of its own waits for the signal (blocked in every other thread: threads
    started later inherit the mask), lets a write in progress finish (`atomic.WRITING`,
    a checkpoint included), and ends the process with 143.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    def wait() -> None:
        signal.sigwait({signal.SIGTERM})
        with WRITING:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            os._exit(Terminated.exit_code)

    # A small stack: under a trial's address-space cap (--trial-memory) every mapping counts.
    default = threading.stack_size(256 * 1024)
    try:
        threading.Thread(target=wait, name="sigterm", daemon=True).start()
    finally:
        threading.stack_size(default)


def _failed(folder: Path, error: str, disk_full: bool = False) -> int:
    """Leave why the trial failed (`failure.json`) for its worker; the exit code."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / FAILURE, {"error": redact(error), "disk_full": disk_full})
    return 1


_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
_FULL_WORDS = ("no space left", "file too large", "disk quota", "errno = 27", "errno = 28", "errno = 122")


def _disk_full(exc: BaseException) -> bool:
    """Whether `exc` (or its cause) is a write that failed for want of space: ENOSPC, a
    quota, or a file-size limit (h5py words these in its own message)."""
    return any(
        (isinstance(e, OSError) and e.errno in _FULL) or any(word in str(e).lower() for word in _FULL_WORDS) for e in chain(exc)
    )


if __name__ == "__main__":
    sys.exit(main())
