"""The same builders and fit function on every installed Keras backend.

The default backend (TensorFlow) runs the whole suite; here each other installed
backend runs the builder-option and fit tests in a fresh interpreter (the backend
is chosen once per process). Backends that are not installed are skipped.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from conftest import REPO

SELECTION = [
    "tests/test_models.py::test_builder_option_trains_one_step",
    "tests/test_models.py::test_traced_train_step",
    "tests/test_training.py::test_fit_records_curves_restores_best_and_evaluates",
    "tests/test_training.py::test_fit_is_repeatable_with_a_seed",
]


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_backend_builds_and_trains(backend, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (pip install -e '.[{backend}]')")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SELECTION],
        cwd=REPO,
        env={**os.environ, "KERAS_BACKEND": backend},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout.splitlines()[-1]
