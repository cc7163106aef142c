#!/usr/bin/env bash
# The main job on the embedded default: generate a synthetic capsule data set, validate it,
# then train a 5-fold DenseNet121 ensemble on it with `foldtrain run` (an in-process
# coordinator and local worker processes on loopback) and print the CV summary, scored
# against the majority class and, on the labelled test set, fold by fold against the ensemble.
# Usage: scripts/demo.sh [DATA_DIR] [OUT_DIR]   (after `cargo build --release`)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${1:-$ROOT/demo-data}"
OUT="${2:-$ROOT/demo-out}"
BIN="${FOLDTRAIN_BIN_DIR:-$ROOT/target/release}"
DATASET=(--train-csv "$DATA/Training_set.csv" --train-dir "$DATA/train"
         --test-csv "$DATA/Testing_set.csv" --test-dir "$DATA/test"
         --test-truth "$DATA/test_truth.csv")

"$BIN/foldtrain" synth --out "$DATA" --train "${DEMO_TRAIN:-600}" --test "${DEMO_TEST:-150}" \
    --image-size 32 --seed 7 --force
"$BIN/foldtrain" check-data "${DATASET[@]}"
# The notebook's recipe but for the size: the real DenseNet121 at 32 px, batch 32, 5 folds,
# Adam 1e-3, the L1L2 head. 12 epochs of 480 images are 180 optimizer steps per fold: enough
# for the L1L2 penalty on the 2048-unit head (about 460 at the start) to shrink and the model
# to learn visibly. One change: the notebook fine-tuned ImageNet weights, whose BatchNorm
# statistics Keras' slow momentum (0.99) only has to adjust; trained from scratch (no weights
# can be downloaded here), those statistics start at 0 and 1 and would need thousands of steps
# at that momentum, so evaluation would see the majority class only. The backbone uses
# torchvision's momentum (0.1) instead. About 5 minutes on two CPU cores, seconds on a GPU.
FOLDTRAIN_WORKER_BIN="$BIN/foldtrain-worker" "$BIN/foldtrain" run "${DATASET[@]}" \
    --arch densenet121 --image-size 32 --epochs "${DEMO_EPOCHS:-12}" --folds 5 \
    --backbone-bn torchvision --out "$OUT"
echo "predictions: $OUT/predictions.csv  metrics: $OUT/metrics.json  report: $OUT/report.html"
