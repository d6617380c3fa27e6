#!/usr/bin/env bash
# Prepare, on a machine with network, what benchmarks/gpu_check.sh installs on a GPU
# machine without one: a wheel of ferhpo and of each package it needs that a
# JAX/PyTorch GPU image usually lacks, all for that machine's Python.
#
#   bash benchmarks/gpu_bundle.sh [DIR] [PYTHON_VERSION]     (defaults: .whl 3.12)
#
# Versions are the ones installed here, so the GPU runs the code this machine tested.
# Packages the GPU image already has (numpy, scipy, pillow, pandas, matplotlib,
# h5py, rich, ml-dtypes, tqdm, ...) are not carried: two versions of one break pip.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.whl}
PY=${2:-3.12}
mkdir -p "$DIR"
rm -f "$DIR"/ferhpo-*.whl
python3 -m pip wheel --quiet --no-deps --wheel-dir "$DIR" .
NEEDED="keras namex optree optuna sqlalchemy alembic mako colorlog platformdirs greenlet"
PINS=$(python3 - $NEEDED <<'PY'
import sys
from importlib import metadata
for name in sys.argv[1:]:
    try:
        print(f"{name}=={metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(name)
PY
)
# shellcheck disable=SC2086
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --dest "$DIR" $PINS
ls -1 "$DIR"
du -sh "$DIR"
