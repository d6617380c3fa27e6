"""The import rules of shared/DESIGN.md, checked on the source so a violation fails CI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ferhpo"

# module (file or folder under ferhpo/) -> top-level names it must never import
FORBIDDEN = {
    "models": {"ferhpo.data", "ferhpo.training", "ferhpo.engines", "ferhpo.store", "optuna", "keras_tuner"},
    "data.py": {"keras", "tensorflow", "jax", "torch", "optuna", "keras_tuner", "ferhpo.models", "ferhpo.training"},
    "config.py": {"keras", "tensorflow", "optuna", "keras_tuner", "ferhpo.data"},
    "errors.py": {"ferhpo", "keras", "numpy", "optuna"},
    "training.py": {"optuna", "keras_tuner", "ferhpo.engines", "ferhpo.store"},
    "report": {"keras", "tensorflow", "jax", "torch", "ferhpo.training", "ferhpo.models"},
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _violations(target: str, banned: set[str], package: Path = PACKAGE) -> list[str]:
    path = package / target
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.exists() else []
    found = []
    for f in files:
        for name in sorted(_imports(f)):
            if any(name == b or name.startswith(b + ".") for b in banned):
                found.append(f"{f.relative_to(package.parent)} imports {name}")
    return found


@pytest.mark.parametrize("target", list(FORBIDDEN))
def test_import_rules(target):
    assert _violations(target, FORBIDDEN[target]) == []


def test_rule_checker_catches_a_violation(tmp_path):
    """The checker itself can fail: a fake models/ importing optuna is flagged."""
    fake = tmp_path / "ferhpo" / "models"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("import optuna\nfrom ferhpo import data\nimport keras\n")
    found = _violations("models", FORBIDDEN["models"], tmp_path / "ferhpo")
    assert found == ["ferhpo/models/bad.py imports ferhpo.data", "ferhpo/models/bad.py imports optuna"]
