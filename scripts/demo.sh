#!/usr/bin/env bash
# The main job on the embedded default: generate a synthetic capsule data set, validate it,
# then train a 5-fold DenseNet121 ensemble on it with `foldtrain run` (an in-process
# coordinator and local worker processes on loopback) and print the CV summary.
# Usage: scripts/demo.sh [DATA_DIR] [OUT_DIR]   (after `cargo build --release`)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${1:-$ROOT/demo-data}"
OUT="${2:-$ROOT/demo-out}"
BIN="${FOLDTRAIN_BIN_DIR:-$ROOT/target/release}"
DATASET=(--train-csv "$DATA/Training_set.csv" --train-dir "$DATA/train"
         --test-csv "$DATA/Testing_set.csv" --test-dir "$DATA/test")

"$BIN/foldtrain" synth --out "$DATA" --train 300 --test 60 --image-size 64 --seed 7 --force
"$BIN/foldtrain" check-data "${DATASET[@]}"
# The real DenseNet121 at 64 px: a few minutes on two CPU cores, seconds on a GPU.
FOLDTRAIN_WORKER_BIN="$BIN/foldtrain-worker" "$BIN/foldtrain" run "${DATASET[@]}" \
    --arch densenet121 --image-size 64 --epochs 3 --folds 5 --out "$OUT"
echo "predictions: $OUT/predictions.csv  metrics: $OUT/metrics.json  report: $OUT/report.html"
