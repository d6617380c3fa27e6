"""The wheel carries every subpackage and the search spaces."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile

from conftest import REPO


def test_every_subpackage_is_listed():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "ferhpo").rglob("__init__.py")}
    assert found | {"ferhpo.search_spaces"} == listed


def test_wheel_ships_the_presets(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("ferhpo-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "ferhpo/search_spaces/baseline.toml" in names
    assert "ferhpo/models/densenet.py" in names
