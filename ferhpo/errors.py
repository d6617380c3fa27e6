"""User-facing errors.

Library code raises these with a message that names the problem and what was
expected; only the CLI prints them, as one line, and exits with code 2.
"""


class FerhpoError(Exception):
    """A problem with the user's input or environment (exit code 2)."""

    exit_code = 2


class DataError(FerhpoError):
    """The dataset is missing, malformed, or cannot be cached."""


class ConfigError(FerhpoError, ValueError):
    """An invalid configuration, preset, option value or search space.

    Also a ValueError, so builders called from Python raise the usual type.
    """


class StoreError(FerhpoError):
    """A study or its storage cannot be opened, read or written."""


class TrainingError(FerhpoError):
    """Training could not go on, e.g. the loss diverged to NaN or infinity.

    A property of the configuration being trained (a search records it as that
    trial's failure), not of the program.
    """


class WorkerError(FerhpoError):
    """A search worker process died (killed, out of memory). Not the user's input:
    exit code 1; the study itself is intact and a rerun continues it."""

    exit_code = 1


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (a scheduler preempting the job, `kill`): stop the way Ctrl-C
    does, keep what finished, and exit with 143 (128 + SIGTERM)."""

    exit_code = 143


def raise_terminated_on_sigterm() -> None:
    """From now on, SIGTERM raises `Terminated` in the main thread, once (a second
    SIGTERM while stopping is ignored: the first one is being handled)."""
    import signal

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)


def as_terminated() -> Terminated:
    """`Terminated`, for a stop this process learns of otherwise than by its own SIGTERM
    (its child was ended by one: the machine is being stopped). A SIGTERM still to come
    is ignored, as after the first one."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return Terminated()


def dump_stacks_on_sigusr1() -> None:
    """From now on, SIGUSR1 writes every thread's Python stack to stderr (the process's
    log) and the process goes on: ``kill -USR1 PID`` shows where a stuck search waits."""
    import faulthandler
    import signal

    if hasattr(signal, "SIGUSR1"):  # not on Windows
        faulthandler.register(signal.SIGUSR1, all_threads=True)


def chain(exc: BaseException | None):
    """`exc` and the exceptions it arose from (``__cause__``, else ``__context__``), each once."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__
