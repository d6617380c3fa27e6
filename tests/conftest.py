"""Shared helpers: tiny FER2013 sources built in tmp dirs, the real dataset when present,
the tiny search spaces of tests/spaces/, the working folder of a test that runs the real
command, and the helpers that start, wait for and finish such a command."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ferhpo.data import CLASSES, CSV_EMOTIONS

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("FERHPO_TEST_DATA", REPO.parent / "shared" / "fer2013"))
SPACES = Path(__file__).resolve().parent / "spaces"


def space_path(name: str = "tiny") -> Path:
    """tests/spaces/<name>.toml, one of the tiny search spaces tests run on (each file
    says what it is for)."""
    path = SPACES / f"{name}.toml"
    if not path.is_file():
        raise FileNotFoundError(f"no test space {name!r}: {path}")
    return path


def space_text(name: str = "tiny") -> str:
    """The text of tests/spaces/<name>.toml, for a test that writes it (or an edit of it)
    into its own folder: a space is named after its file, so the copy's name is the test's."""
    return space_path(name).read_text()


# The search tests' space: ResNet v1 of depth 8, a trial at the smoke budget takes seconds.
TINY_SPACE = space_text("tiny")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist's `--dist loadgroup` (addopts): a module's tests run in one
    test process, so a module-scoped fixture that trains (a search, a confirm) is built
    once; and every test marked `postgres` runs in one process, one at a time, because
    tests/test_outage.py stops and restarts CI's PostgreSQL server under the others.
    Whole modules, not only those with such fixtures: spreading the other modules' tests
    over both processes was slower (73% done after 27 minutes, against the whole suite in
    28); likely because tests of one module that train in process reuse what TensorFlow built."""
    for item in items:
        group = "postgres" if item.get_closest_marker("postgres") else item.module.__name__
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test reads the user's FERHPO_* settings or writes to the user cache."""
    monkeypatch.delenv("FERHPO_DATA", raising=False)
    monkeypatch.setenv("FERHPO_CACHE", str(tmp_path / "default-cache"))


def face(seed: int) -> np.ndarray:
    """A deterministic 48x48 uint8 'image'."""
    return np.random.default_rng(seed).integers(0, 256, (48, 48), dtype=np.uint8)


# (split, class, origin, seed) for a tiny but complete dataset: every class in both
# splits, both test halves present.
def tiny_items(per_class: int = 3) -> list[tuple[str, str, str, int]]:
    items = []
    seed = 0
    for cls in CLASSES:
        for _ in range(per_class):
            items.append(("train", cls, "Training", seed))
            seed += 1
        for origin in ("PublicTest", "PrivateTest"):
            items.append(("test", cls, origin, seed))
            seed += 1
    return items


def write_folder(root: Path, items=None, ext: str = "png") -> Path:
    from PIL import Image

    for split, cls, origin, seed in items or tiny_items():
        folder = root / split / cls
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(face(seed), mode="L").save(folder / f"{origin}_{seed}.{ext}")
    return root


def write_csv(path: Path, items=None) -> Path:
    rows = ["emotion,pixels,Usage"]
    for _split, cls, origin, seed in items or tiny_items():
        pixels = " ".join(str(v) for v in face(seed).ravel())
        rows.append(f"{CSV_EMOTIONS.index(cls)},{pixels},{origin}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture
def tiny_folder(tmp_path) -> Path:
    return write_folder(tmp_path / "fer")


@pytest.fixture
def tiny(tiny_folder, tmp_path):
    """The tiny folder dataset, loaded, and its canonical split."""
    from ferhpo.data import load_fer2013
    from ferhpo.splits import make_splits

    data = load_fer2013(tiny_folder, tmp_path / "cache")
    return data, make_splits(data, "canonical", seed=0)


@pytest.fixture
def fresh_keras():
    """Keras seeded before a test and its session cleared after (modules that train in
    process use it for every test: `pytestmark = pytest.mark.usefixtures("fresh_keras")`)."""
    import keras

    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session(free_memory=False)


@pytest.fixture
def tiny_csv(tmp_path) -> Path:
    return write_csv(tmp_path / "kaggle" / "fer2013.csv")


def default_sigint() -> None:
    """preexec_fn for a child that a test interrupts: SIGINT back to its default. A shell
    starts background jobs with SIGINT ignored, children inherit that, and Python then
    installs no KeyboardInterrupt handler: a test run from `cmd &` would never see Ctrl-C."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def ferhpo_command(*args: str) -> list[str]:
    """The argv of the real `ferhpo` command in a fresh interpreter."""
    return [sys.executable, "-m", "ferhpo", *args]


def smoke_search(space: str | Path, data: str | Path, *extra: str) -> list[str]:
    """`ferhpo search` arguments for `space` on `data` at the smoke budget, then `extra`."""
    return ["search", "--space", str(space), "--data", str(data), "--budget", "smoke", *extra]


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, preexec_fn=None):
    """Run the real `ferhpo` command in a fresh interpreter."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        ferhpo_command(*args),
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        preexec_fn=preexec_fn,
        timeout=300,
    )


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not (REAL_DATA / "train").is_dir():
        pytest.skip(f"the full FER2013 is not at {REAL_DATA} (set FERHPO_TEST_DATA to its folder)")
    return REAL_DATA


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """`tmp_path` as the working folder of a test that runs the real command: the current
    folder (the default studies/ and reports/ land there), no FERHPO_STORAGE from the
    caller's environment (the default storage is the SQLite file under it), and the tiny
    search space copied in as tiny.toml."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FERHPO_STORAGE", raising=False)
    (tmp_path / "tiny.toml").write_text(TINY_SPACE)
    return tmp_path


@pytest.fixture(scope="module")
def small_data(request, tmp_path_factory) -> Path:
    """A tiny dataset in folders, shared by a module's tests: 10 training images a class
    (70) and 14 test images, enough for a holdout split with every class. A module sets
    SMALL_DATA_PER_CLASS for another number of training images a class."""
    per_class = getattr(request.module, "SMALL_DATA_PER_CLASS", 10)
    return write_folder(tmp_path_factory.mktemp("fer") / "fer", tiny_items(per_class=per_class))


def wait_for(condition, timeout: float = 180.0, step: float = 0.3) -> None:
    """Poll `condition` until it holds (an exception counts as not yet); AssertionError after `timeout`."""
    import time

    end = time.time() + timeout
    while time.time() < end:
        try:
            if condition():
                return
        except Exception:
            pass
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {getattr(condition, '__name__', 'a condition')}")


def start_cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.Popen:
    """Start the real `ferhpo` command in a session of its own: only what a test signals gets a signal."""
    return subprocess.Popen(
        ferhpo_command(*args), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})}, start_new_session=True,
    )  # fmt: skip


def finish(proc: subprocess.Popen, timeout: float = 300, *, logs: Path | None = None) -> tuple[str, str]:
    """Its output once it exits. If it has not within `timeout`, its whole session is
    killed, first asked (SIGUSR1, `errors.dump_stacks_on_sigusr1`) where each process
    waits: stderr then ends with a line saying so and the tails of the newest logs
    under `logs` (where workers and trials write their stacks), for the caller's
    assertion on the exit code to show. `proc` leads a session of its own (as
    `start_cli` starts it)."""
    import signal
    import time

    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGUSR1)
        time.sleep(3)
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        newest = sorted(logs.rglob("*.log"), key=lambda p: p.stat().st_mtime)[-4:] if logs is not None else []
        tails = "".join(f"\n--- {p}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-60:]) for p in newest)
        return out, f"{err}\n[did not end within {timeout:g} s; killed]{tails}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
