#!/usr/bin/env bash
# Input pipeline throughput, first-epoch cost (no cache): 336x336 JPEGs (quality 90) to
# 229x229 float batches (bilinear, unit scaling, batch 32), foldtrain against PIL +
# torchvision, per core. Runs A B A B so that load from other processes shows up in both.
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

for round in 1 2; do
    echo "== round $round"
    "$bench" "$images" 1 229 32 3
    python bench/pipeline_torchvision.py "$images" 229 32 3
done
echo "== foldtrain with 2 loader threads"
"$bench" "$images" 2 229 32 3
