"""Atomic file writes: a temporary file in the target's folder, fsync, then a rename.

A reader (or a rerun after a crash or SIGKILL) sees the old file or the new one,
never a truncated one; a failed write leaves no temporary file behind. A write holds
`WRITING` from start to rename, so a process that ends itself at once (a trial on
SIGTERM) can let the write in progress finish first.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from ferhpo import faults

# mkstemp creates files readable by the owner only; results should get the usual mode.
_UMASK = os.umask(0)
os.umask(_UMASK)

#: Held by every write of this module while it runs (re-entrant: a folder's files are
#: written inside the folder's write).
WRITING = threading.RLock()


def check_writable(folder: str | os.PathLike) -> Path:
    """Create `folder` (and its parents) and write a file in it, which is then removed:
    the one sure test that a command will be able to write there (permissions, a
    read-only mount, /proc, a quota all show). OSError when it cannot; the folder."""
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target, prefix=".ferhpo-probe-") as probe:
        probe.write(b"ferhpo")
        probe.flush()
    return target


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write; it replaces `path` when the block succeeds.

    For writers that want a file name (Keras' `save_weights`, matplotlib's `savefig`).
    `suffix` keeps the extension such writers look at.
    """
    with WRITING:
        yield from _atomic_path(Path(path), suffix)


def _atomic_path(target: Path, suffix: str) -> Iterator[Path]:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".tmp-{target.name}-", suffix=suffix)
    os.fchmod(fd, 0o666 & ~_UMASK)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        faults.point("atomic-write")  # a crash here must leave the old file, or none
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file for writing; it replaces `path` when the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f
        f.flush()


def write_json(path: str | os.PathLike, obj) -> None:
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def swap_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished folder `tmp` to `out`, replacing an earlier folder there
    (which comes back if the swap fails)."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(dir=out.absolute().parent, prefix=f".{out.name}.old-"))
    os.rmdir(old)  # a fresh free name for the old folder
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)  # put the earlier folder back
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder to fill; it replaces the folder `path` when the block
    succeeds, and is removed when it fails."""
    with WRITING:
        yield from _atomic_dir(Path(path))


def _atomic_dir(target: Path) -> Iterator[Path]:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".tmp-{target.name}-"))
    os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp's folder is the owner's only
    try:
        yield tmp
        swap_into_place(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
