#!/usr/bin/env bash
# Inference throughput end to end: a k-fold ensemble over new images, two ways, side by side:
#   A. `foldtrain predict --model` (release binaries; in-process coordinator + local CPU workers,
#      its own layout; decode, hashing, upload and worker start included)
#   B. bench/predict_pytorch.py (torchvision DenseNet121 + the same head, PIL + torchvision
#      preprocessing, PyTorch eager, every core)
# Both read the same results folder (trained first by `foldtrain run`: DenseNet121 at 64 px,
# FOLDS folds, 1 epoch) and the same COUNT synthetic frames. Prints images/s for each, the
# ratio foldtrain/pytorch (the goal: >= 1.0) and the largest probability difference between
# the two outputs, which checks that both computed the same thing.
#
#   bench/predict_vs_pytorch.sh [--rounds N]      (A B A B ..., the median ratio when N > 1)
#   env: COUNT (frames, default 1000) FOLDS (5) IMAGE_SIZE (64) THREADS (default: the cores)
set -euo pipefail
cd "$(dirname "$0")/.."
export LIBTORCH_USE_PYTORCH=1 PATH="$PWD/.venv/bin:$PATH"
PY=${FOLDTRAIN_PYTHON:-$PWD/.venv/bin/python}

ROUNDS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift ;;
    *) echo "usage: $0 [--rounds N]" >&2; exit 2 ;;
  esac
  shift
done
COUNT=${COUNT:-1000} FOLDS=${FOLDS:-5} IMAGE_SIZE=${IMAGE_SIZE:-64} THREADS=${THREADS:-$(nproc)}

# shellcheck source=bench/release.sh
source bench/release.sh

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$BIN/foldtrain" synth --out "$work/data" --train 100 --test "$COUNT" --image-size "$IMAGE_SIZE" \
  --seed 7 --folds "$FOLDS"
d=$work/data
echo "== training the ensemble: densenet121 at $IMAGE_SIZE px, $FOLDS folds, 1 epoch"
"$BIN/foldtrain" run --quiet --cpu --train-csv "$d/Training_set.csv" --train-dir "$d/train" \
  --test-csv "$d/Testing_set.csv" --test-dir "$d/test" --arch densenet121 \
  --image-size "$IMAGE_SIZE" --folds "$FOLDS" --epochs 1 --out "$work/model" >/dev/null

ours=("$BIN/foldtrain" predict --quiet --cpu --model "$work/model"
      --images-csv "$d/Testing_set.csv" --images-dir "$d/test")
peer=("$PY" bench/predict_pytorch.py --model "$work/model" --images-csv "$d/Testing_set.csv"
      --images-dir "$d/test" --threads "$THREADS")

timed() {
  local name=$1; shift
  local start=$EPOCHREALTIME
  "$@" >/dev/null
  awk -v a="$start" -v b="$EPOCHREALTIME" -v n="$name" 'BEGIN { printf "%s %.3f\n", n, b - a }' \
    | tee -a "$work/times"
}

echo "== load before: $(uptime)"
if awk -v n="$THREADS" '{ exit !($1 >= 0.5 * n) }' /proc/loadavg; then
  echo "== warning: the machine is busy (load $(cut -d' ' -f1 /proc/loadavg)); both times will be distorted"
fi
echo "== $COUNT frames, $FOLDS folds, $THREADS threads"
for r in $(seq "$ROUNDS"); do
  timed foldtrain "${ours[@]}" --out "$work/ours$r"
  timed pytorch "${peer[@]}" --out "$work/peer$r"
done
echo "== load after: $(uptime)"

"$PY" - "$work" "$COUNT" "$ROUNDS" <<'PY'
import csv, statistics, sys
from pathlib import Path
work, count, rounds = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rows = [line.split() for line in (work / "times").read_text().splitlines()]
ours = [float(s) for n, s in rows if n == "foldtrain"]
peer = [float(s) for n, s in rows if n == "pytorch"]
for r, (o, p) in enumerate(zip(ours, peer), 1):
    print(f"round {r}: foldtrain {count / o:.1f} images/s ({o:.1f} s)  pytorch {count / p:.1f} images/s ({p:.1f} s)  ratio {p / o:.3f}")
if rounds > 1:
    mo, mp = statistics.median(ours), statistics.median(peer)
    print(f"median: foldtrain {count / mo:.1f} images/s  pytorch {count / mp:.1f} images/s  ratio foldtrain/pytorch {mp / mo:.3f}")
def probs(path):
    with open(path, newline="") as f:
        return {r[0]: [float(x) for x in r[1:]] for r in list(csv.reader(f))[1:]}
a, b = probs(work / f"ours{rounds}" / "probabilities.csv"), probs(work / f"peer{rounds}" / "probabilities.csv")
assert a.keys() == b.keys(), "the two runs predicted different images"
diff = max(abs(x - y) for k in a for x, y in zip(a[k], b[k]))
print(f"largest probability difference foldtrain vs pytorch: {diff:.2e} over {len(a)} images")
PY
