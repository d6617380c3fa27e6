"""Fault injection for the crash tests: die by SIGKILL at a named point.

``FERHPO_FAULT=NAME[:N]`` makes the N-th (default first) arrival at point NAME in a
worker or trial process kill that trial's worker, as the kernel's OOM killer or a
`kill -9` would: a trial process kills its worker (its parent) and then itself, a
worker kills itself. The points sit where a crash hurts most: between writing a
temporary file and renaming it (`atomic-write`), right after a trial wrote to the
storage (`trial-reported`), and between storing a trial's record and ending the
trial (`worker-before-tell`). Unset, `point` costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "FERHPO_FAULT"
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
    if role == "trial":
        os.kill(os.getppid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


FSIZE_ENV = "FERHPO_FAULT_FSIZE"


def limit_file_size() -> None:
    """``FERHPO_FAULT_FSIZE=BYTES``: in a trial process, no file may grow past BYTES, so
    writing the results fails (EFBIG) as on a full disk, without filling one."""
    raw = os.environ.get(FSIZE_ENV)
    if not raw or os.environ.get(ROLE) != "trial":
        return
    import resource

    resource.setrlimit(resource.RLIMIT_FSIZE, (int(raw), resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
