#!/usr/bin/env bash
# From the CPU example study (benchmarks/cpu_example.sh) to models people use:
#   1. ferhpo confirm: its top 3 configurations and its reference, 3 seeds each (seed 0 is
#      the search's own run, copied; seeds 1 and 2 are trained: 8 runs);
#   2. ferhpo ensemble: the search's top 3 (one split, so with a clean validation number)
#      and the confirm study's top 3 by validation, each with flip averaging;
#   3. the reports of both studies (reports/cpu-example-confirm/, reports/cpu-example/).
# About 70 minutes on two CPU cores. Usage: bash benchmarks/cpu_confirm.sh [DATA]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/fer2013}
STORAGE=sqlite:///studies/cpu-example.db
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT

source benchmarks/step.sh

begin=$(date +%s)
echo "== started $(date -u +%FT%TZ) on $(nproc) cores; ferhpo $(python -c 'import ferhpo; print(ferhpo.__version__)')" | tee -a "$LOG"
step confirm ferhpo confirm --study cpu-example --baseline-study cpu-example-reference --top 3 --seeds 3 \
    --storage "$STORAGE" --data "$DATA"
step ensemble ferhpo ensemble --study cpu-example --top 3 --tta --storage "$STORAGE" --data "$DATA"
step ensemble-confirm ferhpo ensemble --study cpu-example-confirm --top 3 --tta --storage "$STORAGE" --data "$DATA"
step report-confirm ferhpo report --study cpu-example-confirm --storage "$STORAGE" --out reports/cpu-example-confirm
step report ferhpo report --study cpu-example --baseline-study cpu-example-reference \
    --storage "$STORAGE" --out reports/cpu-example
echo "== the whole confirmation took $(( $(date +%s) - begin )) s" | tee -a "$LOG"
cp "$LOG" benchmarks/cpu_confirm.log
