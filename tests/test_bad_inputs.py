"""The bad-input matrix: every kind of bad input, through the real `ferhpo` command.

One table, one test. Each case builds its inputs in a fresh `tmp_path` (which is also
the working folder, so the default `studies/` and `reports/` would land there) and
returns the command line; every invocation holds exactly one bad input, the rest is
valid and tiny (7-class data with a few images per class, the tiny test space or
preset table, `--budget smoke --trials 1`), so a case that were wrongly accepted
would fail its pattern within seconds instead of training for long.

Every case must: exit 2; print exactly one stderr line, `ferhpo: error: ...`, naming
the problem and what was expected (the case's pattern); print no traceback and
nothing on stdout; and leave no output: no file or folder appears under `tmp_path`
beyond what the setup created, except what a case lists in `allow`, with the reason
beside it: the (empty) cache folder, or a whole data cache of valid data, never a
temporary or half-written file.
"""

from __future__ import annotations

import os
import re
import resource
import signal
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_SPACE, run_cli, write_folder
from test_baseline import TINY_PRESETS
from test_cli import _assert_one_line_error, _corrupt, _csv, _empty_class, _no_test, _pixels, _set_line, _unknown_class


@dataclass(frozen=True)
class Case:
    name: str
    setup: Callable[[Path], list[str] | dict]  # tmp_path -> args, or {"args", "env", "preexec_fn"}
    pattern: str  # regex the one stderr line must match (after "ferhpo: error: ")
    allow: tuple[str, ...] = ()  # fnmatch patterns of paths that may appear (relative; folders end in "/")


# --------------------------------------------------------------------------- building blocks

CACHE = "cache"


def _cache(tmp: Path) -> list[str]:
    return ["--cache-dir", str(tmp / CACHE)]


def _summary(data: Path, tmp: Path) -> list[str]:
    return ["data", "summary", "--data", str(data), *_cache(tmp)]


def _search(tmp: Path, *args: str, data: Path | None = None, space: str = TINY_SPACE) -> list[str]:
    """`ferhpo search` on the tiny space and tiny data, one smoke trial, plus `args`."""
    if data is None:
        data = write_folder(tmp / "fer")
    path = tmp / "space.toml"
    path.write_text(space)
    return ["search", "--space", str(path), "--data", str(data), *_cache(tmp), "--budget", "smoke", "--trials", "1", *args]


def _baseline(tmp: Path, *args: str, data: Path | None = None) -> list[str]:
    """`ferhpo baseline` on the tiny preset table and tiny data at the smoke budget, plus `args`."""
    if data is None:
        data = write_folder(tmp / "fer")
    presets = tmp / "presets.toml"
    presets.write_text(TINY_PRESETS.replace("EPOCHS", "1"))
    return ["baseline", "--presets", str(presets), "--data", str(data), *_cache(tmp), "--budget", "smoke", *args]


def _space(old: str, new: str) -> str:
    """TINY_SPACE with one edit (the edit must apply: a no-op would test a valid space)."""
    assert old in TINY_SPACE, old
    return TINY_SPACE.replace(old, new, 1)


def _add_param(text: str) -> str:
    return TINY_SPACE + "\n" + text


def _a_file(tmp: Path) -> Path:
    """A regular file, to stand where a folder is needed (root ignores chmod; not this)."""
    blocker = tmp / "a-file"
    blocker.write_text("not a folder\n")
    return blocker


def _zero_byte_png(tmp: Path) -> Path:
    root = write_folder(tmp / "fer")
    (root / "train" / "happy" / "Training_empty.png").write_bytes(b"")
    return root


def _wrong_layout(tmp: Path) -> Path:
    root = tmp / "fer"
    write_folder(root / "images")  # the dataset one level too deep
    return root


def _zip_file(tmp: Path) -> Path:
    path = tmp / "fer.zip"
    path.write_bytes(b"PK\x03\x04")
    return path


def _non_utf8_csv(tmp: Path) -> Path:
    path = tmp / "fer2013.csv"
    path.write_bytes(b"emotion,pixels,Usage\n0,\xff\xfe,Training\n")
    return path


def _existing_storage(tmp: Path) -> str:
    """A SQLite storage holding one study, 'other'; returns its URL."""
    import optuna

    url = f"sqlite:///{tmp / 'studies' / 'ferhpo.db'}"
    (tmp / "studies").mkdir()
    optuna.create_study(study_name="other", storage=url)
    return url


def _file_size_limit(limit: int = 20_000):
    """preexec_fn: a full disk, simulated: writes past `limit` bytes fail with EFBIG."""

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


# Data errors found while decoding come after the cache folder was created and
# probed (to fail early when it is unwritable): that folder may remain, empty.
CACHE_PROBED = (f"{CACHE}/",)
# The storage is opened after the (valid) data was loaded: its cache may remain; the
# test checks that it is complete (a whole .npz), so a rerun reuses it.
CACHE_WRITTEN = (f"{CACHE}/", f"{CACHE}/fer2013-*.npz")


def _postgres_down(url: str) -> str:
    """The connection failure, or (driver not installed) the failed driver import."""
    return (
        rf"cannot open storage {re.escape(url)}: (.*Connection refused|.*Failed to import DB access module|"
        rf".*No module named)[^;]*; expected a reachable, writable Optuna storage"
    )


CASES = [
    # ----------------------------------------------------------------- data
    Case(
        "data: missing path",
        lambda t: _summary(t / "nope", t),
        r"no FER2013 data at .*/nope \(from --data\); download FER2013 .* point --data / FERHPO_DATA at it",
    ),
    Case(
        "data: wrong layout (no train/ and test/ folders)",
        lambda t: _search(t, data=_wrong_layout(t)),
        r"/fer has no train/ or test/ folder and no fer2013\.csv; expected <root>/train/<class>/\*\.jpg",
    ),
    Case(
        "data: no test/ folder",
        lambda t: _baseline(t, data=_no_test(t)),
        r"/fer has no test/ folder and no fer2013\.csv; expected <root>/train/<class>/\*\.jpg and <root>/test/",
    ),
    Case(
        "data: unknown class folder",
        lambda t: _summary(_unknown_class(t), t),
        r"unknown class folder train/contempt in .*; expected the 7 classes angry, disgust, fear",
    ),
    Case(
        "data: empty class folder",
        lambda t: _search(t, data=_empty_class(t)),
        r"empty class folder train/surprise in .*; every class needs at least one image",
    ),
    Case(
        "data: corrupt image",
        lambda t: _baseline(t, data=_corrupt(t)),
        r"cannot read image .*/train/angry/Training_bad\.jpg: .*; expected a 48x48 grayscale image file "
        r"\(fix or remove it, or pass --skip-bad",
        CACHE_PROBED,
    ),
    # Images of another size are converted (README), so a wrong-size image is only bad
    # when it cannot be decoded at any size: a zero-byte file with a .png name.
    Case(
        "data: image of no size (zero-byte .png)",
        lambda t: _search(t, data=_zero_byte_png(t)),
        r"cannot read image .*/train/happy/Training_empty\.png: .*; expected a 48x48 grayscale image file",
        CACHE_PROBED,
    ),
    Case(
        "data: a file that is not a csv",
        lambda t: _summary(_zip_file(t), t),
        r"fer\.zip is a file but not a \.csv; expected a folder with train/ and test/ or fer2013\.csv",
    ),
    Case(
        "csv: missing column",
        lambda t: _summary(_csv(t, _set_line(0, "emotion,pixels")), t),
        r"fer2013\.csv is missing column\(s\) Usage; expected a header with columns emotion,pixels,Usage, got emotion,pixels",
        CACHE_PROBED,
    ),
    Case(
        "csv: non-numeric pixels",
        lambda t: _baseline(t, data=_csv(t, _set_line(5, "3," + _pixels(["1"] * 2303 + ["x1"]) + ",Training"))),
        r"fer2013\.csv line 6: pixels must be integers 0\.\.255, got 'x1' \(pass --skip-bad to skip bad rows\)",
        CACHE_PROBED,
    ),
    # The csv is where the image size is checked: a row of 47x48 pixels.
    Case(
        "csv: wrong image size (47x48 pixels)",
        lambda t: _search(t, data=_csv(t, _set_line(3, "3," + _pixels(["1"] * (47 * 48)) + ",Training"))),
        r"fer2013\.csv line 4: expected 2304 pixel values \(48x48\), got 2256",
        CACHE_PROBED,
    ),
    Case(
        "csv: unknown emotion code",
        lambda t: _summary(_csv(t, _set_line(2, "7," + _pixels(["1"] * 2304) + ",Training")), t),
        r"fer2013\.csv line 3: emotion must be an integer 0\.\.6, got '7'",
        CACHE_PROBED,
    ),
    Case(
        "csv: not text (invalid UTF-8)",
        lambda t: _summary(_non_utf8_csv(t), t),
        r"fer2013\.csv is not a text csv \(invalid start byte at byte \d+\); expected the Kaggle fer2013\.csv",
        CACHE_PROBED,
    ),
    # ----------------------------------------------------------------- search spaces
    Case(
        "space: unknown parameter",
        lambda t: _search(t, space=_add_param('[params.width]\ntype = "int"\nlow = 1\nhigh = 4\ndefault = 2\n')),
        r"space\.toml: parameter 'width': unknown parameter: field 'width' is not a field of ResNetConfig or "
        r"TrainConfig.*known fields",
    ),
    Case(
        "space: empty range",
        lambda t: _search(t, space=_space("low = 1e-4\nhigh = 1e-2", "low = 1e-2\nhigh = 1e-4")),
        r"space\.toml: parameter 'learning_rate': low <= high must hold, but got low=0\.01, high=0\.0001",
    ),
    Case(
        "space: bad type",
        lambda t: _search(t, space=_space('type = "float"\nlow = 1e-4', 'type = "double"\nlow = 1e-4')),
        r"space\.toml: parameter 'learning_rate': type must be one of 'int', 'float', 'categorical', 'bool', "
        r"but got type='double'",
    ),
    Case(
        "space: condition on an unknown parent",
        lambda t: _search(t, space=_space('when = { schedule = ["cosine"] }', 'when = { scheduler = ["cosine"] }')),
        r"space\.toml: parameter 'shift': when must name a parameter declared before this one, but got 'scheduler'; "
        r"declared before: optimizer, learning_rate, schedule",
    ),
    Case(
        "space: condition on a float parent",
        lambda t: _search(t, space=_space('when = { schedule = ["cosine"] }', "when = { learning_rate = [1e-3] }")),
        r"space\.toml: parameter 'shift': when's parent 'learning_rate' must be of type 'categorical' or 'bool', "
        r"but got type='float'",
    ),
    Case(
        "space: condition on a value that is not a choice",
        lambda t: _search(t, space=_space('when = { schedule = ["cosine"] }', 'when = { schedule = ["linear"] }')),
        r"space\.toml: parameter 'shift': when values must be among the choices of 'schedule' "
        r"\[\"reference-step\", \"cosine\"\], but got schedule=\"linear\"",
    ),
    Case(
        "space: missing default",
        lambda t: _search(t, space=_space('choices = ["adam", "sgd"]\ndefault = "adam"\n', 'choices = ["adam", "sgd"]\n')),
        r"space\.toml: parameter 'optimizer': missing key 'default'; every parameter needs a default",
    ),
    Case(
        "space: default out of range",
        lambda t: _search(t, space=_space("high = 0.2\ndefault = 0.1", "high = 0.2\ndefault = 0.5")),
        r"space\.toml: parameter 'shift': default must lie in \[low, high\], but got default=0\.5, low=0\.0, high=0\.2",
    ),
    Case(
        "space: invalid TOML",
        lambda t: _search(t, space=_space("[params.schedule]", "[params.schedule")),
        r"space\.toml: invalid TOML: .*\(at line \d+, column \d+\)",
    ),
    # ----------------------------------------------------------------- command-line flags
    Case(
        "flag: unknown preset",
        lambda t: _baseline(t, "--only", "nosuch"),
        r"unknown preset 'nosuch'; known presets: tiny-densenet, tiny-resnet",
    ),
    Case(
        "bench: unknown model",
        lambda t: ["bench", "--models", "densenet-c0.9"],
        r"unknown preset 'densenet-c0\.9'; known presets: "
        r"densenet-c0\.3, densenet-c0\.5, densenet-c0\.7, resnet-v1-104, resnet-v2-155",
    ),
    Case(
        "bench: zero steps",
        lambda t: ["bench", "--steps", "0"],
        r"argument --steps: expected a positive integer, got 0 \(see 'ferhpo bench --help'\)",
    ),
    Case(
        "bench: unknown precision",
        lambda t: ["bench", "--precision", "float8"],
        r"argument --precision: invalid choice: 'float8' \(choose from .*\)",
    ),
    Case(
        "bench: missing data",
        lambda t: ["bench", "--models", "resnet-v1-104", "--data", str(t / "nowhere"), *_cache(t)],
        r"no FER2013 data at .*/nowhere \(from --data\)",
    ),
    Case(
        "flag: --precision of baseline",
        lambda t: _baseline(t, "--precision", "half"),
        r"argument --precision: invalid choice: 'half' \(choose from .*\)",
    ),
    Case(
        "flag: negative epochs",
        lambda t: _baseline(t, "--epochs", "-1"),
        r"argument --epochs: expected a positive integer, got -1 \(see 'ferhpo baseline --help'\)",
    ),
    Case(
        "flag: --set of an unknown field",
        lambda t: _baseline(t, "--only", "tiny-resnet", "--set", "colour=3"),
        r"unknown override 'colour' for preset 'tiny-resnet'; known fields: ",
    ),
    Case(
        "flag: --set of an invalid value",
        lambda t: _baseline(t, "--only", "tiny-resnet", "--set", "depth=12"),
        r"ResNet v2 depth must be 9n\+2.*but got depth=12",
    ),
    Case(
        "flag: unknown engine",
        lambda t: _search(t, "--engine", "sklearn"),
        r"argument --engine: invalid choice: 'sklearn' \(choose from '?optuna'?, '?keras-tuner'?\)",
    ),
    Case(
        "flag: unknown sampler",
        lambda t: _search(t, "--sampler", "annealing"),
        r"argument --sampler: invalid choice: 'annealing' \(choose from '?tpe'?, ",
    ),
    Case(
        "flag: keras-tuner with several workers",
        lambda t: _search(t, "--engine", "keras-tuner", "--workers", "2"),
        r"--workers > 1 needs --engine optuna \(the keras-tuner engine runs one worker\)",
    ),
    Case(
        "flag: keras-tuner with an Optuna sampler",
        lambda t: _search(t, "--engine", "keras-tuner", "--sampler", "tpe"),
        r"--sampler tpe needs --engine optuna; keras-tuner runs --sampler random or gp",
    ),
    Case(
        "flag: two objectives with a pruner",
        lambda t: _search(t, "--objective", "val_accuracy,params", "--pruner", "median"),
        r"--pruner median cannot prune a two-objective search .*; use --pruner none",
    ),
    Case(
        "flag: zero trials",
        lambda t: _search(t, "--trials", "0"),
        r"argument --trials: expected a positive integer, got 0",
    ),
    Case(
        "flag: unknown objective",
        lambda t: _search(t, "--objective", "loss"),
        r"--objective must be val_accuracy, macro_f1, or one of them followed by ',params' .*but got 'loss'",
    ),
    # ----------------------------------------------------------------- storage
    # The driver is an optional extra: without it the message names the failed import.
    Case(
        "storage: unreachable PostgreSQL",
        lambda t: _baseline(t, "--storage", "postgresql://nobody@127.0.0.1:1/x"),
        _postgres_down("postgresql://nobody@127.0.0.1:1/x"),
        CACHE_WRITTEN,
    ),
    Case(
        "storage: unreachable PostgreSQL through psycopg2",
        lambda t: _baseline(t, "--storage", "postgresql+psycopg2://nobody@127.0.0.1:1/x"),
        _postgres_down("postgresql+psycopg2://nobody@127.0.0.1:1/x"),
        CACHE_WRITTEN,
    ),
    Case(
        "storage: unreachable PostgreSQL (search)",
        lambda t: _search(t, "--storage", "postgresql+psycopg2://nobody@127.0.0.1:1/x"),
        _postgres_down("postgresql+psycopg2://nobody@127.0.0.1:1/x"),
        CACHE_WRITTEN,
    ),
    Case(
        "storage: SQLite path under a regular file",
        lambda t: _baseline(t, "--storage", f"sqlite:///{_a_file(t)}/studies/x.db"),
        r"cannot create the folder of storage sqlite:///.*/a-file/studies/x\.db \(Not a directory\); "
        r"expected a writable path",
        CACHE_WRITTEN,
    ),
    Case(
        "storage: SQLite path under a regular file (search)",
        lambda t: _search(t, "--storage", f"sqlite:///{_a_file(t)}/studies/x.db"),
        r"cannot create the folder of storage sqlite:///.*/a-file/studies/x\.db \(Not a directory\); "
        r"expected a writable path",
        CACHE_WRITTEN,
    ),
    Case(
        "storage: report on a study that does not exist",
        lambda t: ["report", "--study", "nosuch", "--storage", _existing_storage(t)],
        r"no study 'nosuch' in sqlite:///.*/studies/ferhpo\.db; studies there: other",
    ),
    Case(
        "storage: report on a storage that does not exist",
        lambda t: {"args": ["report", "--study", "baseline"], "env": {"FERHPO_STORAGE": ""}},
        r"cannot open storage sqlite:///studies/ferhpo\.db: studies/ferhpo\.db does not exist; expected the storage "
        r"a baseline or search wrote",
    ),
    Case(
        "storage: report on a storage that is not a URL",
        lambda t: ["report", "--study", "baseline", "--storage", "studies/ferhpo.db"],
        r"storage 'studies/ferhpo\.db' is not a URL; expected e\.g\. sqlite:///studies/ferhpo\.db or postgresql://",
    ),
    # ----------------------------------------------------------------- environment
    Case(
        "env: cache folder under a regular file",
        lambda t: ["data", "summary", "--data", str(write_folder(t / "fer")), "--cache-dir", str(_a_file(t) / "cache")],
        r"cache directory .*/a-file/cache is not writable \(Not a directory\); expected a writable folder "
        r"\(pass --cache-dir DIR or set FERHPO_CACHE\)",
    ),
    Case(
        "env: full disk while writing the cache (file-size limit)",
        lambda t: {"args": _summary(write_folder(t / "fer"), t), "preexec_fn": _file_size_limit()},
        r"cannot write the data cache .*/cache/fer2013-\w+-\w+\.npz \(File too large\); expected a writable folder "
        r"with room for about \d+ MiB",
        CACHE_PROBED,
    ),
    Case(
        "env: full disk while a search writes the cache (file-size limit)",
        lambda t: {"args": _search(t), "preexec_fn": _file_size_limit()},
        r"cannot write the data cache .*\(File too large\); expected a writable folder with room for about \d+ MiB",
        CACHE_PROBED,
    ),
]


def _tree(root: Path) -> set[str]:
    """Every file and folder under `root`, relative, folders with a trailing slash."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        out.update(f"{(rel / d).as_posix()}/" for d in dirnames)
        out.update((rel / f).as_posix() for f in filenames)
    return out


def _case(entry) -> Case:
    return entry.values[0] if hasattr(entry, "values") else entry


def test_the_table_is_large_and_its_names_unique():
    names = [_case(c).name for c in CASES]
    assert len(names) >= 30
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("case", CASES, ids=[_case(c).name for c in CASES])
def test_bad_input_exits_2_with_one_line_and_leaves_nothing(case, tmp_path):
    made = case.setup(tmp_path)
    call = made if isinstance(made, dict) else {"args": made}
    before = _tree(tmp_path)
    result = run_cli(*call["args"], cwd=tmp_path, env=call.get("env"), preexec_fn=call.get("preexec_fn"))
    _assert_one_line_error(result, case.pattern)  # exit 2, one "ferhpo: error:" line, no traceback, no stdout
    appeared = _tree(tmp_path) - before
    unexpected = sorted(p for p in appeared if not any(fnmatch(p, pattern) for pattern in case.allow))
    assert not unexpected, f"left behind: {unexpected}"
    for path in appeared:  # an allowed cache file is a whole one, never half-written
        if not path.endswith("/"):
            with np.load(tmp_path / path, allow_pickle=False) as z:
                assert z["images"].shape[1:] == (48, 48) and len(z["labels"]) == len(z["images"]), path
