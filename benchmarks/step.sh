# Sourced by the example scripts of benchmarks/: `step NAME COMMAND...` runs COMMAND,
# appends its output and its wall time to $LOG (and shows them).
step() {
    local name=$1 start end
    shift
    echo "== $name: $*" | tee -a "$LOG"
    start=$(date +%s)
    "$@" 2>&1 | tee -a "$LOG"
    end=$(date +%s)
    echo "== $name took $((end - start)) s" | tee -a "$LOG"
}
