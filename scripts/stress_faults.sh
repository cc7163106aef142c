#!/usr/bin/env bash
# Runs the fault-injection tests (tests/tests/faults.rs) N times in a row (default 10)
# while a second process keeps every core busy, and prints each run's result. A fault
# test must kill on an event, never on elapsed time, so load must not change its outcome.
#   bash scripts/stress_faults.sh [N]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs=${1:-10}
export LIBTORCH_USE_PYTORCH=1 PATH="$PWD/.venv/bin:$PATH" FOLDTRAIN_PYTHON="$PWD/.venv/bin/python"
cargo build --workspace --bins --quiet
cargo test -p foldtrain-tests --test faults --no-run --quiet

python3 -c '
import multiprocessing as mp
def spin(_):
    while True:
        pass
mp.Pool(mp.cpu_count()).map(spin, range(mp.cpu_count()))
' &
load=$!
trap 'kill "$load" 2>/dev/null; pkill -P "$load" 2>/dev/null || true' EXIT

passed=0
start=$SECONDS
for i in $(seq 1 "$runs"); do
    log=$(mktemp)
    if RUST_BACKTRACE=0 cargo test -p foldtrain-tests --test faults --quiet >"$log" 2>&1; then
        passed=$((passed + 1))
    fi
    echo "run $i: $(grep -m1 'test result' "$log" || echo 'no result') ($((SECONDS - start)) s)"
    grep -E '^test .* FAILED|panicked' "$log" || true
    rm -f "$log"
done
echo "stress_faults: $passed of $runs runs passed under load, $((SECONDS - start)) s"
[[ $passed -eq $runs ]]
