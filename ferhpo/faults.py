"""Fault injection for the crash tests: die by SIGKILL at a named point.

``FERHPO_FAULT=NAME[:N]`` makes the N-th (default first) arrival at point NAME in a
worker or trial process kill that trial's worker, as the kernel's OOM killer or a
`kill -9` would: a trial process kills its worker (its parent) and then itself, a
worker kills itself. The points sit where a crash hurts most: between writing a
temporary file and renaming it (`atomic-write`), right after a trial wrote to the
storage (`trial-reported`; `promotion-reported` in a promoted run only), and between storing a trial's record and ending the
trial (`worker-before-tell`). Unset, `point` costs one dictionary lookup. `busy` and
`limit_file_size` stand in for a trial that does not answer signals and a full disk.
"""

from __future__ import annotations

import os
import signal

ENV = "FERHPO_FAULT"
#: With several processes at the same point, ``FERHPO_FAULT_ONCE=PATH`` lets only the
#: first one that creates the file PATH die.
ONCE_ENV = "FERHPO_FAULT_ONCE"
ROLE = "FERHPO_ROLE"  # set by the engine: "worker" or "trial"
_hits: dict[str, int] = {}


def point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, _, nth = spec.partition(":")
    role = os.environ.get(ROLE)
    if target != name or role not in ("worker", "trial"):
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] != int(nth or 1):
        return
    once = os.environ.get(ONCE_ENV)
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    if role == "trial":
        os.kill(os.getppid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


BUSY_ENV = "FERHPO_FAULT_BUSY"


def busy() -> None:
    """``FERHPO_FAULT_BUSY=SECONDS``: in a trial process, the main thread holds off
    SIGTERM for SECONDS, as a training step or a graph's compilation does that does not
    return to Python meanwhile (its signal handler would wait that long). Says so on
    stdout (the trial's log) first."""
    raw = os.environ.get(BUSY_ENV)
    if not raw or os.environ.get(ROLE) != "trial":
        return
    import time

    print(f"fault: busy for {raw} s", flush=True)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        time.sleep(float(raw))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


FSIZE_ENV = "FERHPO_FAULT_FSIZE"


def limit_file_size() -> None:
    """``FERHPO_FAULT_FSIZE=BYTES``: in a trial process, no file may grow past BYTES, so
    writing the results fails (EFBIG) as on a full disk, without filling one."""
    raw = os.environ.get(FSIZE_ENV)
    if not raw or os.environ.get(ROLE) != "trial":
        return
    import resource

    resource.setrlimit(resource.RLIMIT_FSIZE, (int(raw), resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
