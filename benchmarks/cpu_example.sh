#!/usr/bin/env bash
# The CPU example study, end to end on the full FER2013 (README, "A real study on two CPU
# cores"): the reference recipe on the resnet-cpu space's default model (ResNet v1-20), a
# random search of that space with Hyperband pruning on two workers, and the report.
#
#   bash benchmarks/cpu_example.sh [DATA]      # DATA: the FER2013 folder (../shared/fer2013)
#
# Everything runs at the `cpu` budget (every image of the holdout protocol, 3 epochs) and
# lands in its own storage, studies/cpu-example.db; the report goes to
# reports/cpu-example/ (replaced whole), and this run's log with the time of each step
# to benchmarks/cpu_example.log. Rerunning continues where it stopped: finished runs
# are not trained again (delete studies/cpu-example* to start over).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/fer2013}
STORAGE=sqlite:///studies/cpu-example.db
TRIALS=${CPU_EXAMPLE_TRIALS:-12}
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT

source benchmarks/step.sh

begin=$(date +%s)
echo "== started $(date -u +%FT%TZ) on $(nproc) cores; ferhpo $(python -c 'import ferhpo; print(ferhpo.__version__)')" | tee -a "$LOG"
step reference ferhpo baseline --space resnet-cpu --budget cpu --protocol holdout \
    --study cpu-example-reference --storage "$STORAGE" --data "$DATA"
step search ferhpo search --space resnet-cpu --budget cpu --sampler random --pruner hyperband \
    --trials "$TRIALS" --workers 2 --timeout 4200 --study cpu-example --storage "$STORAGE" --data "$DATA"
step report ferhpo report --study cpu-example --baseline-study cpu-example-reference \
    --storage "$STORAGE" --out reports/cpu-example
echo "== the whole example took $(( $(date +%s) - begin )) s" | tee -a "$LOG"
cp "$LOG" benchmarks/cpu_example.log
