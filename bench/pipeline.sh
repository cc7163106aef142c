#!/usr/bin/env bash
# Input pipeline throughput, first-epoch cost (no cache): 336x336 JPEGs (quality 90) to
# 229x229 float batches (unit scaling, batch 32), foldtrain against PIL + torchvision, per
# core, for both resize methods (nearest, the default, and bilinear). Runs A B A B so that
# load from other processes shows up in both, and prints ours/theirs from the best rounds.
# Usage: bash bench/pipeline.sh [image count]
set -euo pipefail
cd "$(dirname "$0")/.."
export LIBTORCH_USE_PYTORCH=1 PATH="$PWD/.venv/bin:$PATH"
count="${1:-200}"
images="$(mktemp -d)"
trap 'rm -rf "$images"' EXIT

python bench/pipeline_images.py "$images" "$count"
cargo build --release -p foldtrain-worker --examples
bench="${CARGO_TARGET_DIR:-target}/release/examples/pipeline_bench"

best() { grep -o 'best: [0-9.]*' | awk '{print $2}' | sort -g | tail -1; }
for resize in nearest bilinear; do
    ours=() theirs=()
    for round in 1 2; do
        echo "== $resize, round $round"
        ours+=("$("$bench" "$images" 1 229 32 3 "$resize" | tee /dev/stderr | best)")
        theirs+=("$(python bench/pipeline_torchvision.py "$images" 229 32 3 "$resize" | tee /dev/stderr | best)")
    done
    o="$(printf '%s\n' "${ours[@]}" | sort -g | tail -1)"
    t="$(printf '%s\n' "${theirs[@]}" | sort -g | tail -1)"
    echo "== $resize: foldtrain $o img/s/core, PIL+torchvision $t img/s/core, ratio $(awk -v o="$o" -v t="$t" 'BEGIN { printf "%.2f", o / t }')x"
done
echo "== foldtrain with 2 loader threads (nearest)"
"$bench" "$images" 2 229 32 3 nearest
