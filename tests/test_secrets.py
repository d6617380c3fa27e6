"""A storage password never leaves a process: not on the terminal, in logs, reports,
status, model cards, TensorBoard folders or any file under the study; child processes
get the real URL from their environment."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from conftest import run_cli
from ferhpo.redact import STORAGE_ENV, child_env, real_url, redact

PASSWORD = "Xq7-sEcReT-pa55"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("postgresql://ann:s3cret@db:5432/ferhpo", "postgresql://ann:***@db:5432/ferhpo"),
        ("postgresql+psycopg://ann:p%40ss@db/f", "postgresql+psycopg://ann:***@db/f"),
        ("postgresql://ann:p@ss/w@db/f", "postgresql://ann:***@db/f"),  # an unencoded @ and / inside
        ("cannot open storage 'mysql://u:pw@h/d': refused", "cannot open storage 'mysql://u:***@h/d': refused"),
        ("a postgresql://a:b@h/d and a postgresql://c:d@i/e", "a postgresql://a:***@h/d and a postgresql://c:***@i/e"),
        ("postgresql://ann@db/ferhpo", "postgresql://ann@db/ferhpo"),  # no password: as it was
        ("sqlite:///studies/ferhpo.db", "sqlite:///studies/ferhpo.db"),
        ("no url here: a:b@c", "no url here: a:b@c"),
    ],
)
def test_redact_masks_every_password_and_nothing_else(text, expected):
    assert redact(text) == expected


def test_a_child_gets_the_real_url_from_its_environment_only(monkeypatch):
    url = f"postgresql://ann:{PASSWORD}@db/ferhpo"
    env = child_env(url, {})
    assert env == {STORAGE_ENV: url}
    monkeypatch.setenv(STORAGE_ENV, url)
    assert real_url(redact(url)) == url  # what the parent wrote down, made whole again
    assert real_url("postgresql://bob:***@other/db") == "postgresql://bob:***@other/db"  # not this storage's


@pytest.mark.parametrize(
    "command", [["status"], ["report", "--study", "s"], ["search", "--space", "tiny.toml", "--budget", "smoke"]]
)
def test_an_unreachable_storage_is_named_without_its_password(command, workdir, small_data):
    url = f"postgresql://ann:{PASSWORD}@127.0.0.1:9/ferhpo"  # port 9 (discard): refused
    extra = ["--data", str(small_data)] if command[0] == "search" else []
    result = run_cli(*command, *extra, "--storage", url, cwd=workdir)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "ann:***@127.0.0.1:9" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr


def _leaks(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()] + [
        str(p) for p in folder.rglob(f"*{PASSWORD}*")
    ]


@pytest.mark.postgres
def test_a_postgresql_password_is_written_nowhere(workdir, small_data):
    server = os.environ.get("FERHPO_TEST_POSTGRES")
    if not server:
        pytest.skip("no PostgreSQL server: set FERHPO_TEST_POSTGRES (.ci/run does)")
    # The throw-away server trusts every connection, whatever the password.
    url = server.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@", 1)
    assert PASSWORD in url
    study = f"leak-{uuid.uuid4().hex[:8]}"
    runs = [
        run_cli("search", "--space", "tiny.toml", "--data", str(small_data), "--budget", "smoke", "--max-epochs", "1",
                "--trials", "1", "--study", study, "--storage", url, "--tensorboard", "tb", cwd=workdir),
        run_cli("status", "--storage", url, cwd=workdir),
        run_cli("status", "--study", study, "--storage", url, cwd=workdir),
        run_cli("report", "--study", study, "--storage", url, cwd=workdir),
        run_cli("export", "--study", study, "--storage", url, "--out", "model", cwd=workdir),
        run_cli("status", "--study", "no-such-study", "--storage", url, cwd=workdir),
    ]  # fmt: skip
    for result in runs[:-1]:
        assert result.returncode == 0, result.stderr
    assert runs[-1].returncode == 2  # an error names the storage too
    assert "postgres:***@" in runs[0].stdout and "postgres:***@" in runs[-1].stderr
    for result in runs:
        assert PASSWORD not in result.stdout + result.stderr
    assert (workdir / "reports" / study / "report.md").is_file() and (workdir / "model" / "model_card.json").is_file()
    assert list((workdir / "studies" / study).glob("trial-*/spec.json")) and list((workdir / "tb").iterdir())
    assert _leaks(workdir) == []
