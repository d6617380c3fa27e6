#!/usr/bin/env bash
# ferhpo on one NVIDIA GPU, offline, in under 10 minutes: install from carried wheels,
# bench the five presets against the straightforward pipeline, train one real epoch
# when FER2013 is at hand, and print one table.
#
#   bash benchmarks/gpu_check.sh
#
# Settings (environment): WHEELS (default .whl, made by benchmarks/gpu_bundle.sh),
# BACKEND (jax or torch; default: the first of them that sees a GPU), STEPS (timed steps
# per repeat, default 50), DATA (a FER2013 folder for the real epoch; default
# ../shared/fer2013 when present), OUT_DIR (where the JSON and logs go; default a temp dir).
# Needs no TensorFlow: the GPU image may have only the JAX and PyTorch backends.
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-.whl}
STEPS=${STEPS:-50}
OUT_DIR=${OUT_DIR:-$(mktemp -d)}
DATA=${DATA:-../shared/fer2013}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3

if ! python3 -c "import ferhpo, keras, optuna, scipy" 2>/dev/null; then
    ls "$WHEELS"/*.whl >/dev/null 2>&1 || { echo "gpu_check: no wheels in $WHEELS (make them with benchmarks/gpu_bundle.sh)"; exit 2; }
    SITE=${SITE:-/tmp/ferhpo-site}
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl \
        || { echo "gpu_check: installing the wheels in $WHEELS failed"; exit 2; }
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi

if [ -z "${BACKEND:-}" ]; then
    if python3 -c "import jax, sys; sys.exit(jax.devices()[0].platform != 'gpu')" 2>/dev/null; then BACKEND=jax
    elif python3 -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then BACKEND=torch
    else echo "gpu_check: neither JAX nor PyTorch sees a GPU here"; exit 2
    fi
fi
export KERAS_BACKEND=$BACKEND
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/gpu        /'
echo "backend    $BACKEND; results in $OUT_DIR"

# 1. The five presets: ferhpo's path (bf16 on the GPU) against the float32 reference.
timeout 420 python3 -m ferhpo bench --backend "$BACKEND" --precision auto --reference --steps "$STEPS" --repeats 3 \
    --json >"$OUT_DIR/bench.json" 2>"$OUT_DIR/bench.log"
status=$?
if [ $status -ne 0 ]; then
    echo "gpu_check: ferhpo bench failed (exit $status); the end of its log:"; tail -20 "$OUT_DIR/bench.log"; exit 1
fi
python3 -c "import json, sys; from ferhpo.bench import table; print('\n'.join(table(json.load(open(sys.argv[1])))))" "$OUT_DIR/bench.json"

# 2. A short real training: one full epoch of DenseNet-BC-100 (c0.5, batch 32) on FER2013.
if [ -d "$DATA/train" ]; then
    timeout 150 python3 -m ferhpo baseline --only densenet-c0.5 --epochs 1 --set precision=mixed_bfloat16 \
        --data "$DATA" --cache-dir "$OUT_DIR/cache" --study gpu-check --storage "sqlite:///$OUT_DIR/gpu-check.db" \
        --force --json >"$OUT_DIR/epoch.json" 2>"$OUT_DIR/epoch.log" \
        && python3 -c "import json, sys; r = json.load(open(sys.argv[1]))[0]; print(f\"real epoch densenet-c0.5 bf16: {r['epoch_seconds'][0]:.1f} s for {r['train_images']:,} images (val accuracy {r['best_val_accuracy']:.3f})\")" "$OUT_DIR/epoch.json" \
        || { echo "gpu_check: the real epoch failed; the end of its log:"; tail -20 "$OUT_DIR/epoch.log"; exit 1; }
else
    echo "real epoch skipped: no FER2013 folder at $DATA (set DATA)"
fi
