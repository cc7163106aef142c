#!/usr/bin/env bash
# The main job on the embedded default, as far as it is built: generate a synthetic capsule
# data set, validate it, and make the stratified 5-fold split a scikit-learn user would get.
# (Training the folds through a local coordinator and workers is not wired up yet.)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${1:-$ROOT/demo-data}"
OUT="${2:-$ROOT/demo-out}"
BIN="$ROOT/target/release"

"$BIN/foldtrain" synth --out "$DATA" --train 300 --test 60 --image-size 64 --seed 7 --force
"$BIN/foldtrain" check-data --train-csv "$DATA/Training_set.csv" --train-dir "$DATA/train" \
    --test-csv "$DATA/Testing_set.csv" --test-dir "$DATA/test"
mkdir -p "$OUT"
"$BIN/foldtrain" split --train-csv "$DATA/Training_set.csv" --train-dir "$DATA/train" \
    --folds 5 --seed 42 --out "$OUT/folds.csv"
echo "folds written to $OUT/folds.csv"
