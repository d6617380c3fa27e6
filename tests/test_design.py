"""The package's import rules, checked on the source so a violation fails CI.

Each module or folder under ferhpo/ may import the standard library and, beyond it,
only the third-party and ferhpo modules its row in ALLOWED names; a new module needs a
row (the command line, ferhpo/cli, alone may import anything). The rows keep the layers
apart:

- a model is built from its configuration alone: models never import the data,
  training or a tuner (Optuna, KerasTuner);
- data, the report and the status of a study never import keras: reading a dataset
  or a study needs no deep-learning backend;
- training never imports a tuner: a run trains the same whichever command started it;
- a search space is data: spaces import no tuner, their adapters take an Optuna trial
  or a KerasTuner `hp` as they come;
- the configuration imports nothing beyond ferhpo's errors and its learning-rate curves
  (ferhpo/rates.py, which imports only the errors), so every layer can read it;
- a storage URL is shown without its password by one function, ferhpo/redact.py, which
  imports nothing, so every layer that shows or writes a URL can use it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ferhpo"
STDLIB = set(sys.stdlib_module_names) | {"__future__"}

# file or folder under ferhpo/ -> third-party or ferhpo modules it may import
ALLOWED = {
    "errors.py": set(),
    "atomic.py": {"ferhpo.faults"},
    "faults.py": set(),
    "phases.py": set(),
    # how numbers and names are written for people: the report and the CLI share it
    "formatting.py": set(),
    # the one redaction of storage passwords: every layer that shows a URL uses it
    "redact.py": set(),
    "progress.py": set(),
    "tensorboard_logs.py": {"keras", "ferhpo.errors", "ferhpo.formatting", "ferhpo.atomic"},
    # status reads the storage only, like the report: never keras, nor the engines that write it
    "status.py": {"optuna", "sqlalchemy", "ferhpo.store", "ferhpo.errors", "ferhpo.progress", "ferhpo.redact"},
    "config.py": {"ferhpo.errors", "ferhpo.rates"},
    # the learning-rate curves as plain functions: config re-exports them, training applies them
    "rates.py": {"ferhpo.errors"},
    # the preset table and the search_spaces folder it shares with the spaces
    "presets.py": {"ferhpo.config", "ferhpo.errors"},
    "threads.py": {"ferhpo.errors"},
    "data.py": {"numpy", "PIL", "platformdirs", "ferhpo.errors", "ferhpo.atomic"},
    # the split protocols: built from the loaded images' origins, numpy only like data
    "splits.py": {"numpy", "ferhpo.data", "ferhpo.errors"},
    "models": {"keras", "ferhpo.config", "ferhpo.errors", "ferhpo.models"},
    "training": {
        "keras",
        "numpy",
        "ferhpo.config",
        "ferhpo.rates",
        "ferhpo.data",
        "ferhpo.splits",
        "ferhpo.models",
        "ferhpo.atomic",
        "ferhpo.errors",
        "ferhpo.phases",
        "ferhpo.training",
    },
    # store opens a retrying storage for the search's workers (ferhpo.outage: tenacity)
    "store.py": {"optuna", "sqlalchemy", "ferhpo.errors", "ferhpo.outage", "ferhpo.redact"},
    "outage.py": {"optuna", "sqlalchemy", "tenacity", "ferhpo.errors", "ferhpo.redact"},
    # presets are stdlib-only (the reported references); optuna rebuilds trials for importance (store uses it anyway);
    # scipy.stats: the rank correlation between rungs and its bootstrap (report/fidelity.py)
    "report": {
        "numpy",
        "scipy",
        "pandas",
        "matplotlib",
        "optuna",
        "ferhpo.store",
        "ferhpo.atomic",
        "ferhpo.errors",
        "ferhpo.formatting",
        "ferhpo.config",
        "ferhpo.presets",
        "ferhpo.report",
        "ferhpo.phases",
        "ferhpo.redact",
    },
    "runs.py": {
        "numpy",
        "ferhpo.store",
        "ferhpo.atomic",
        "ferhpo.config",
        "ferhpo.data",
        "ferhpo.splits",
        "ferhpo.report",
        "ferhpo.training",
        "ferhpo.phases",
    },
    # spaces are data: no tuner import; the adapters take an Optuna trial / KerasTuner hp duck-typed
    "spaces": {"ferhpo.config", "ferhpo.presets", "ferhpo.errors", "ferhpo.spaces"},
    # the HyperModels compile with training's recipe (optimizer, augmentation layers), not a copy of it
    "hypermodels.py": {
        "keras",
        "keras_tuner",
        "numpy",
        "ferhpo.spaces",
        "ferhpo.models",
        "ferhpo.training",
        "ferhpo.config",
        "ferhpo.data",
        "ferhpo.splits",
    },
    # bench times training's own compiled model; it asks the backend Keras runs on for its
    # device and memory; scipy shifts images in the reference pipeline's host augmentation;
    # data for the load timing; store for the environment record
    "bench.py": {
        "keras",
        "numpy",
        "scipy",
        "tensorflow",
        "jax",
        "torch",
        "ferhpo.config",
        "ferhpo.models",
        "ferhpo.training",
        "ferhpo.data",
        "ferhpo.splits",
        "ferhpo.store",
        "ferhpo.threads",
    },
    # from a study to a model: rebuild runs (training's own layers), export with Keras' writers, load with
    # tensorflow / onnxruntime; OpenCV finds faces in photos
    "deploy": {
        "keras",
        "numpy",
        "optuna",
        "cv2",
        "PIL",
        "tensorflow",
        "onnx",
        "tf2onnx",
        "onnxruntime",
        "ferhpo.training",
        "ferhpo.models",
        "ferhpo.config",
        "ferhpo.store",
        "ferhpo.errors",
        "ferhpo.atomic",
        "ferhpo.data",
        "ferhpo.splits",
        "ferhpo.deploy",
        "ferhpo.redact",
    },
    "engines": {
        "optuna",
        "keras_tuner",
        "numpy",
        "keras",
        "ferhpo.spaces",
        "ferhpo.training",
        "ferhpo.store",
        "ferhpo.runs",
        "ferhpo.config",
        "ferhpo.data",
        "ferhpo.splits",
        "ferhpo.errors",
        "ferhpo.atomic",
        "ferhpo.engines",
        "ferhpo.faults",
        "ferhpo.report",
        "ferhpo.phases",
        "ferhpo.progress",
        "ferhpo.status",
        "ferhpo.tensorboard_logs",
        "ferhpo.outage",
        "ferhpo.threads",
        "ferhpo.redact",
    },
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "ferhpo":  # `from ferhpo import data` imports ferhpo.data
                names.update(f"ferhpo.{alias.name}" for alias in node.names)
            else:
                names.add(node.module)
    return names


def _violations(target: str, allowed: set[str], package: Path = PACKAGE) -> list[str]:
    path = package / target
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    found = []
    for f in files:
        for name in sorted(_imports(f)):
            ok = name.split(".")[0] in STDLIB or any(name == a or name.startswith(a + ".") for a in allowed)
            if not ok:
                found.append(f"{f.relative_to(package.parent)} imports {name}")
    return found


@pytest.mark.parametrize("target", list(ALLOWED))
def test_import_rules(target):
    assert (PACKAGE / target).exists(), f"ALLOWED has a row for ferhpo/{target}, which does not exist"
    allowed = ", ".join(sorted(ALLOWED[target])) or "nothing else"
    assert _violations(target, ALLOWED[target]) == [], f"ferhpo/{target} may import the standard library and {allowed}"


def test_every_module_has_a_rule():
    """A new module must take a row in ALLOWED, saying what it may import (the cli package
    alone may import anything)."""
    covered = set(ALLOWED) | {"cli", "__init__.py", "__main__.py"}
    top = {p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists())}
    assert top <= covered, f"without a row in ALLOWED: {sorted(top - covered)}"


def test_rule_checker_catches_a_violation(tmp_path):
    """The checker itself can fail: a fake models/ importing optuna and data is flagged."""
    fake = tmp_path / "ferhpo" / "models"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("import optuna\nfrom ferhpo import data\nimport keras\nimport os\n")
    found = _violations("models", ALLOWED["models"], tmp_path / "ferhpo")
    assert found == ["ferhpo/models/bad.py imports ferhpo.data", "ferhpo/models/bad.py imports optuna"]
