"""The real `ferhpo` command: help, exit codes, `data summary`, and every bad input."""

from __future__ import annotations

import json
import resource
import shutil
import signal
from pathlib import Path

import pytest
from PIL import Image

from conftest import REPO, run_cli, write_csv, write_folder
from ferhpo.cli import COMMANDS, build_parser
from ferhpo.data import CLASSES

# --------------------------------------------------------------------------- help and codes


def _subparsers(parser):
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            yield from action.choices.items()


def _all_parsers():
    root = build_parser()
    yield [], root
    for name, sub in _subparsers(root):
        yield [name], sub
        for action, leaf in _subparsers(sub):
            yield [name, action], leaf


@pytest.mark.parametrize("path,parser", list(_all_parsers()), ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_help_describes_every_option(path, parser):
    result = run_cli(*path, "--help")
    assert result.returncode == 0, result.stderr
    for action in parser._actions:
        for option in action.option_strings:
            assert option in result.stdout
        if action.option_strings and action.help not in (None, "==SUPPRESS=="):
            assert action.help.split()[0] in result.stdout


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("ferhpo ")


def test_every_command_is_in_the_table_with_a_module_of_its_own():
    names = ["data", "baseline", "search", "report", "status", "confirm", "ensemble", "export", "predict", "bench"]
    assert [c.name for c in COMMANDS] == names
    assert [c.run.__module__ for c in COMMANDS] == [f"ferhpo.cli.{name}" for name in names]


# --------------------------------------------------------------------------- data summary


def test_data_summary_text_and_json(tmp_path):
    root = write_folder(tmp_path / "fer")
    cache = tmp_path / "cache"
    text = run_cli("data", "summary", "--data", str(root), "--cache-dir", str(cache), "--protocol", "holdout")
    assert text.returncode == 0, text.stderr
    assert "image folders" in text.stdout and "miss, written" in text.stdout
    assert "protocol holdout (seed 0)" in text.stdout
    out = run_cli("data", "summary", "--data", str(root), "--cache-dir", str(cache), "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["format"] == "folder" and len(info["fingerprint"]) == 64
    assert info["counts"]["train"] == {c: 3 for c in CLASSES}
    assert info["counts"]["test"] == {c: 2 for c in CLASSES}
    assert info["cache"]["hit"] is True and Path(info["cache"]["path"]).parent == cache


def test_data_summary_does_not_import_keras(tmp_path):
    root = write_folder(tmp_path / "fer")
    code = (
        "import sys; from ferhpo.cli import main; "
        f"rc = main(['data', 'summary', '--data', {str(root)!r}, '--cache-dir', {str(tmp_path / 'c')!r}, '--json']); "
        "assert rc == 0; bad = [m for m in ('keras', 'tensorflow', 'optuna') if m in sys.modules]; "
        "assert not bad, bad"
    )
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_skip_bad_on_the_command_line(tmp_path):
    root = write_folder(tmp_path / "fer")
    (root / "test" / "sad" / "PublicTest_x.jpg").write_bytes(b"\xff\xd8 truncated")
    out = run_cli("data", "summary", "--data", str(root), "--cache-dir", str(tmp_path / "c"), "--skip-bad", "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["skipped"] == 1 and info["skipped_files"] == ["test/sad/PublicTest_x.jpg"]


# --------------------------------------------------------------------------- bad inputs

# Each case: a function that breaks a fresh dataset at `root` (a folder with a valid
# tiny dataset, and a valid fer2013.csv beside it) and returns the CLI arguments; the
# text the one-line error must contain.


def _folder(root: Path) -> Path:
    return write_folder(root / "fer")


def _csv(root: Path, mutate=None) -> Path:
    path = write_csv(root / "k" / "fer2013.csv")
    if mutate:
        lines = path.read_text().splitlines()
        mutate(lines)
        path.write_text("\n".join(lines) + "\n")
    return path


def _corrupt(root):
    r = _folder(root)
    (r / "train" / "angry" / "Training_bad.jpg").write_bytes(b"garbage")
    return r


def _non_image(root):
    r = _folder(root)
    (r / "test" / "fear" / "notes.txt").write_text("hello")
    return r


def _unknown_class(root):
    r = _folder(root)
    (r / "train" / "contempt").mkdir()
    return r


def _missing_class(root):
    r = _folder(root)
    shutil.rmtree(r / "test" / "disgust")
    return r


def _empty_class(root):
    r = _folder(root)
    for f in (r / "train" / "surprise").iterdir():
        f.unlink()
    return r


def _no_test(root):
    r = _folder(root)
    shutil.rmtree(r / "test")
    return r


def _stray_file(root):
    r = _folder(root)
    (r / "train" / "labels.txt").write_text("x")
    return r


def _wrong_origin(root):
    r = _folder(root)
    Image.new("L", (48, 48)).save(r / "test" / "happy" / "Training_99.png")
    return r


def _not_csv(root):
    p = root / "fer.zip"
    p.write_bytes(b"PK")
    return p


def _empty_csv(root):
    (root / "fer2013.csv").write_text("")
    return root / "fer2013.csv"


def _set_line(n, text):
    def mutate(lines):
        lines[n] = text

    return mutate


def _pixels(values):
    return " ".join(values)


BAD_INPUTS = {
    "missing path": (lambda root: root / "nope", "no FER2013 data at"),
    "no train/test folders": (lambda root: (root / "empty").mkdir() or root / "empty", "has no train/ or test/ folder"),
    "no test folder": (_no_test, "has no test/ folder"),
    "unknown class folder": (_unknown_class, "unknown class folder train/contempt"),
    "missing class folder": (_missing_class, "has no folder for class 'disgust'"),
    "empty class": (_empty_class, "empty class folder train/surprise"),
    "stray file beside class folders": (_stray_file, "unexpected file train/labels.txt"),
    "corrupt image": (_corrupt, "cannot read image .*train/angry/Training_bad.jpg"),
    "non-image file": (_non_image, "cannot read image .*test/fear/notes.txt"),
    "origin contradicts folder": (_wrong_origin, "test/happy/Training_99.png is named as a Training image"),
    "data file that is not csv": (_not_csv, "is a file but not a .csv"),
    "csv missing column": (
        lambda root: _csv(root, _set_line(0, "emotion,pixels")),
        "missing column\\(s\\) Usage; expected a header with columns emotion,pixels,Usage",
    ),
    "csv wrong pixel count": (
        lambda root: _csv(root, _set_line(3, "3," + _pixels(["1"] * 2303) + ",Training")),
        "line 4: expected 2304 pixel values \\(48x48\\), got 2303",
    ),
    "csv non-numeric pixels": (
        lambda root: _csv(root, _set_line(5, "3," + _pixels(["1"] * 2303 + ["x1"]) + ",Training")),
        "line 6: pixels must be integers 0..255, got 'x1'",
    ),
    "csv pixel out of range": (
        lambda root: _csv(root, _set_line(2, "3," + _pixels(["1"] * 2303 + ["256"]) + ",Training")),
        "line 3: pixels must be integers 0..255, got 256",
    ),
    "csv unknown emotion": (
        lambda root: _csv(root, _set_line(2, "7," + _pixels(["1"] * 2304) + ",Training")),
        "line 3: emotion must be an integer 0..6, got '7'",
    ),
    "csv unknown usage": (
        lambda root: _csv(root, _set_line(2, "1," + _pixels(["1"] * 2304) + ",Validation")),
        "line 3: Usage must be one of Training, PublicTest, PrivateTest, got 'Validation'",
    ),
    "csv empty": (_empty_csv, "missing column.*got an empty file"),
    "csv missing a class": (
        lambda root: _csv(root, lambda lines: lines.__setitem__(slice(None), [x for x in lines if not x.startswith("1,")])),
        "class disgust has no train images",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line(case, tmp_path):
    make, message = BAD_INPUTS[case]
    data = make(tmp_path)
    cache = tmp_path / "cache"
    result = run_cli("data", "summary", "--data", str(data), "--cache-dir", str(cache))
    _assert_one_line_error(result, message)
    assert not cache.exists() or not any(cache.iterdir()), list(cache.iterdir())


def _assert_one_line_error(result, pattern):
    import re

    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("ferhpo: error: ")
    assert re.search(pattern, lines[0]), lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args,pattern",
    [
        (["data", "summary", "--seed", "-1"], "argument --seed: expected an integer >= 0, got -1"),
        (["data", "summary", "--protocol", "random"], "argument --protocol: invalid choice: 'random'"),
        (["data", "summary", "--bogus"], "unrecognized arguments: --bogus"),
        (["data"], "required: ACTION"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "required: COMMAND"),
        (["search"], "required: --space"),
        (["search", "--space", "densenet", "--engine", "sklearn"], "argument --engine: invalid choice: 'sklearn'"),
        (["search", "--space", "densenet", "--trials", "0"], "argument --trials: expected a positive integer, got 0"),
        (["search", "--space", "nosuch"], "unknown search space 'nosuch'.*densenet, densenet-cpu, resnet, resnet-cpu"),
        (["search", "--space", "densenet", "--objective", "loss"], "--objective must be val_accuracy, macro_f1"),
        (["search", "--space", "densenet", "--engine", "keras-tuner", "--workers", "2"], "--workers > 1 needs --engine optuna"),
        (["search", "--space", "densenet", "--engine", "keras-tuner", "--sampler", "tpe"], "--sampler tpe needs --engine optuna"),
        (
            ["search", "--space", "densenet", "--engine", "keras-tuner", "--pruner", "median"],
            "--pruner median needs --engine optuna",
        ),
        (
            ["search", "--space", "densenet", "--objective", "val_accuracy,params", "--pruner", "median"],
            "cannot prune a two-objective search",
        ),
    ],
)
def test_bad_usage_exits_2_with_one_line(args, pattern):
    _assert_one_line_error(run_cli(*args), pattern)


def test_no_data_anywhere_says_how_to_get_it(tmp_path):
    result = run_cli("data", "summary", cwd=tmp_path, env={"FERHPO_DATA": ""})
    _assert_one_line_error(result, r"no FER2013 data at data/fer2013 .*download FER2013 .*--data / FERHPO_DATA")


def test_unwritable_cache_dir(tmp_path):
    root = write_folder(tmp_path / "fer")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = run_cli("data", "summary", "--data", str(root), "--cache-dir", str(blocker / "cache"))
    _assert_one_line_error(result, "cache directory .*a-file/cache is not writable")


def test_cache_inside_data_folder_is_refused(tmp_path):
    root = write_folder(tmp_path / "fer")
    result = run_cli("data", "summary", "--data", str(root), "--cache-dir", str(root / ".cache"))
    _assert_one_line_error(result, "lies inside the data folder")
    assert not (root / ".cache").exists() or not any((root / ".cache").iterdir())


def test_full_disk_leaves_no_partial_cache(tmp_path):
    """A file-size limit makes the cache write fail half-way, like a full disk."""
    root = write_folder(tmp_path / "fer")
    cache = tmp_path / "cache"

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    result = run_cli("data", "summary", "--data", str(root), "--cache-dir", str(cache), preexec_fn=limit)
    _assert_one_line_error(result, "cannot write the data cache .*File too large")
    assert list(cache.iterdir()) == []


def test_readme_documents_every_command():
    readme = (REPO / "README.md").read_text()
    for cmd in COMMANDS:
        assert f"ferhpo {cmd.name}" in readme


def test_ci_runs_exactly_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    blocks = readme.split("## Quick start", 1)[1].split("```bash\n")[1:3]
    install_and_run, install_and_test = (b.split("```", 1)[0].strip() for b in blocks)
    assert "pytest" in install_and_test and "ferhpo " in install_and_run
    ci_lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert install_and_test in ci_lines


def test_unknown_keras_backend_is_a_one_line_error(tmp_path):
    result = run_cli("baseline", "--list", env={"KERAS_BACKEND": "bogus"}, cwd=tmp_path)
    _assert_one_line_error(
        result, "cannot load Keras with backend 'bogus'.*expected KERAS_BACKEND to be tensorflow, jax or torch"
    )
