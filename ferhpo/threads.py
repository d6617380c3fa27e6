"""How many CPU threads a process may compute with, and the environment that caps them.

Separate from the configs because it describes the machine, not a run: the trial
launcher sizes each worker's share of the cores with it, `ferhpo bench` pins its
threads and records the core count. Standard library only, so it can run before
any backend loads.
"""

from __future__ import annotations

import os

from ferhpo.errors import ConfigError

__all__ = ["usable_cores", "thread_env"]


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity on Linux, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def thread_env(threads: int) -> dict[str, str]:
    """Environment that limits a new process's compute threads on the CPU, for every backend.

    Must be in place before the backend loads. On a small CPU, trials that each use
    ``cores / workers`` threads side by side train more images per second in total than
    one trial using every core (benchmarks/README.md measures it).
    """
    if threads < 1:
        raise ConfigError(f"threads must be >= 1, but got threads={threads}")
    env = {
        "TF_NUM_INTRAOP_THREADS": str(threads),
        "TF_NUM_INTEROP_THREADS": "1",
        "OMP_NUM_THREADS": str(threads),  # PyTorch's and oneDNN's OpenMP pools
    }
    if threads == 1:  # XLA's CPU client (JAX) takes no thread count, only on or off
        env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    return env
