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

# A ResNet's whole fit with its evaluation, then its seeded repeat: on XLA's CPU backend
# every model and batch shape compiles anew (5-25 s each), and all the builder options
# and both families' fits took 3.5 min there (measured), for the same layers.
SELECTION = [
    "tests/test_training.py::test_fit_records_curves_restores_best_and_evaluates[resnet]",
    "tests/test_training.py::test_fit_is_repeatable_with_a_seed[resnet]",
]


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_backend_builds_and_trains(backend, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (pip install -e '.[{backend}]')")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", *SELECTION],
        cwd=REPO,
        env={**os.environ, "KERAS_BACKEND": backend},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout.splitlines()[-1]
