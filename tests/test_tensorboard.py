"""`--tensorboard DIR`: run folder names, and a bad folder refused before any work.

That trials really write their curves is checked by the search tests
(tests/test_search.py, the rerun test) with a real smoke search.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ferhpo.cli import main
from ferhpo.errors import ConfigError
from ferhpo.tensorboard_logs import NAME_LIMIT, check_folder, run_name


def test_run_names_carry_the_trial_and_its_first_hyperparameters():
    assert run_name("trial-3", {"optimizer": "adam", "learning_rate": 0.0012345, "growth": 12}) == (
        "trial-3_optimizer=adam_learning_rate=0.00123_growth=12"
    )
    long = run_name("trial-0", {f"p{i}": "x" * 30 for i in range(10)})
    assert len(long) <= NAME_LIMIT and long.startswith("trial-0_p0=")
    assert "/" not in run_name("a/b", {"k": "c d"})


def test_check_folder_creates_the_folder_and_leaves_nothing_in_it(tmp_path):
    assert check_folder(str(tmp_path / "tb" / "deeper")) == str(tmp_path / "tb" / "deeper")
    assert (tmp_path / "tb" / "deeper").is_dir() and not list((tmp_path / "tb" / "deeper").iterdir())
    assert check_folder(str(tmp_path / "tb")) == str(tmp_path / "tb")  # an existing one
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    for bad in (blocker, blocker / "tb"):
        with pytest.raises(ConfigError, match="expected a folder"):
            check_folder(str(bad))


def test_check_folder_writes_where_permissions_say_nothing():
    """/proc looks writable to root by its mode bits; only writing there shows it is not."""
    if not Path("/proc/self").exists():
        pytest.skip("no /proc on this system")
    with pytest.raises(ConfigError, match="--tensorboard /proc/nope: cannot write there"):
        check_folder("/proc/nope")


@pytest.mark.parametrize("command", ["search", "baseline"])
def test_an_unusable_folder_fails_before_any_work(command, tmp_path, monkeypatch, capsys, tiny_folder):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FERHPO_STORAGE", raising=False)
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    before = sorted(p.name for p in tmp_path.iterdir())
    extra = ["--space", "densenet"] if command == "search" else []
    code = main([command, *extra, "--data", str(tiny_folder), "--budget", "smoke", "--tensorboard", str(blocker / "tb")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--tensorboard" in err[0] and "expected a folder" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no studies/, no logs, no cache
