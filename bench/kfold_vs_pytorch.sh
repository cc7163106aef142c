#!/usr/bin/env bash
# Wall time of one whole k-fold job, two ways on the same synthetic data set and thread count:
#   A. `foldtrain run` (release binaries; in-process coordinator + local worker, its own CPU layout)
#   B. bench/kfold_pytorch.py (the same recipe as a plain PyTorch + scikit-learn script)
# Defaults: DenseNet121 at 32 px, 5 folds, 5 epochs, 300 train / 60 test images, batch 32,
# everything else at the seed notebook's recipe. Prints both wall times (whole command, process
# start to exit), the ratio foldtrain/pytorch (the project's goal: <= 0.8), each one's OOF
# accuracy, and the peak RSS of each one's largest process when /usr/bin/time is installed.
#
#   bench/kfold_vs_pytorch.sh [--quick] [--rounds N]
#     --quick     2 folds, 1 epoch, 60 train / 12 test images: checks the script end to end
#     --rounds N  run A B N times (A B A B ...) and also print the median ratio (default 1)
#   env: FOLDS EPOCHS TRAIN TEST IMAGE_SIZE (train px) SYNTH_SIZE (px on disk, 64) SEED (42)
#        THREADS (default: the core count; when set, also passed to foldtrain as --torch-threads)
#        WORKERS (default unset: foldtrain picks its layout; when set, passed as --workers)
set -euo pipefail
cd "$(dirname "$0")/.."
export LIBTORCH_USE_PYTORCH=1 PATH="$PWD/.venv/bin:$PATH"
PY=${FOLDTRAIN_PYTHON:-$PWD/.venv/bin/python}

QUICK=0 ROUNDS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --rounds) ROUNDS=$2; shift ;;
    *) echo "usage: $0 [--quick] [--rounds N]" >&2; exit 2 ;;
  esac
  shift
done
if [ "$QUICK" = 1 ]; then
  FOLDS=${FOLDS:-2} EPOCHS=${EPOCHS:-1} TRAIN=${TRAIN:-60} TEST=${TEST:-12}
fi
FOLDS=${FOLDS:-5} EPOCHS=${EPOCHS:-5} TRAIN=${TRAIN:-300} TEST=${TEST:-60}
IMAGE_SIZE=${IMAGE_SIZE:-32} SYNTH_SIZE=${SYNTH_SIZE:-64} SEED=${SEED:-42}
THREADS_SET=${THREADS:+1}
THREADS=${THREADS:-$(nproc)}

# The peer's only dependency the project venv may lack; pinned as the split fixtures were made.
if ! "$PY" -c 'import sklearn' 2>/dev/null; then
  "$PY" -m pip install --quiet --disable-pip-version-check "scikit-learn==1.9.1"
fi

# shellcheck source=bench/release.sh
source bench/release.sh

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
data=$work/data
"$BIN/foldtrain" synth --out "$data" --train "$TRAIN" --test "$TEST" --image-size "$SYNTH_SIZE" \
  --seed "$SEED" --folds "$FOLDS"

ours=("$BIN/foldtrain" run --train-csv "$data/Training_set.csv" --train-dir "$data/train"
      --test-csv "$data/Testing_set.csv" --test-dir "$data/test"
      --arch densenet121 --image-size "$IMAGE_SIZE" --folds "$FOLDS" --epochs "$EPOCHS" --seed "$SEED")
[ -n "$THREADS_SET" ] && ours+=(--torch-threads "$THREADS")
[ -n "${WORKERS:-}" ] && ours+=(--workers "$WORKERS")
peer=("$PY" bench/kfold_pytorch.py --data "$data" --folds "$FOLDS" --epochs "$EPOCHS"
      --image-size "$IMAGE_SIZE" --seed "$SEED" --threads "$THREADS")

# timed NAME OUT CMD...: runs CMD, prints and records "NAME wall_s rss_kib" (rss "-" without
# GNU time). GNU time reports the largest single process of the tree, not the tree's sum.
timed() {
  local name=$1 out=$2; shift 2
  local rss=- start=$EPOCHREALTIME
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -f %M -o "$work/rss" "$@"
    rss=$(tail -n 1 "$work/rss")
  else
    "$@"
  fi
  local wall
  wall=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
  echo "$name $wall $rss" >>"$work/times"
  echo "== $name: $wall s wall, peak RSS $rss KiB ($out)"
}

echo "== load before: $(uptime)"
# Both sides run libtorch's OpenMP pool on every core; with another busy process beside them a
# step can get 10x slower, so times taken under load say little.
if awk -v n="$THREADS" '{ exit !($1 >= 0.5 * n) }' /proc/loadavg; then
  echo "== warning: the machine is busy (load $(cut -d' ' -f1 /proc/loadavg) on $(nproc) cores); both times will be distorted"
fi
echo "== $TRAIN train / $TEST test images, densenet121 at ${IMAGE_SIZE} px, $FOLDS folds, $EPOCHS epochs, $THREADS threads"
for r in $(seq "$ROUNDS"); do
  echo "== round $r: foldtrain run"
  timed foldtrain "$work/ours$r" "${ours[@]}" --out "$work/ours$r"
  echo "== round $r: pytorch"
  timed pytorch "$work/peer$r" "${peer[@]}" --out "$work/peer$r"
done
echo "== load after: $(uptime)"

"$PY" - "$work" "$ROUNDS" <<'PY'
import csv, json, statistics, sys
from pathlib import Path
work, rounds = Path(sys.argv[1]), int(sys.argv[2])
rows = [line.split() for line in (work / "times").read_text().splitlines()]
ours = [float(w) for n, w, _ in rows if n == "foldtrain"]
peer = [float(w) for n, w, _ in rows if n == "pytorch"]
rss = {n: r for n, _, r in rows}
def preds(path):
    with open(path, newline="") as f:
        return [r["label"] for r in csv.DictReader(f)]
for r in range(1, rounds + 1):
    o, p = ours[r - 1], peer[r - 1]
    print(f"round {r}: foldtrain {o:.1f} s  pytorch {p:.1f} s  ratio foldtrain/pytorch {o / p:.3f}")
if rounds > 1:
    mo, mp = statistics.median(ours), statistics.median(peer)
    print(f"median: foldtrain {mo:.1f} s  pytorch {mp:.1f} s  ratio foldtrain/pytorch {mo / mp:.3f}")
metrics = json.loads((work / f"ours{rounds}" / "metrics.json").read_text())
oof = metrics["oof"]
print(f"foldtrain oof_accuracy={oof['accuracy']:.4f} oof_macro_f1={oof['macro_f1']:.4f}  peak RSS {rss['foldtrain']} KiB")
a, b = preds(work / f"ours{rounds}" / "predictions.csv"), preds(work / f"peer{rounds}" / "predictions.csv")
agree = sum(x == y for x, y in zip(a, b)) / max(len(a), 1)
print(f"pytorch peak RSS {rss['pytorch']} KiB; test predictions agreeing: {agree:.3f} of {len(a)}")
PY
