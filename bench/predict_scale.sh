#!/usr/bin/env bash
# Prediction at scale: many small synthetic frames (32 px, densenet-tiny) through
# `foldtrain predict --model` with two local CPU workers, at several frame counts. For each
# count: wall time, images/s, and the peak RSS of the coordinator (the `foldtrain predict`
# process, which holds the in-process coordinator) and of the largest worker. The
# coordinator's peak should not grow with the count: shards go to disk as they finish and
# the CSVs are merged by streaming.
#
#   bench/predict_scale.sh [COUNT ...]          (default: 50000 200000)
#   env: FOLDS (5) SHARD_SIZE (the default) KEEP=1 keeps the work folder
set -euo pipefail
cd "$(dirname "$0")/.."
export LIBTORCH_USE_PYTORCH=1 PATH="$PWD/.venv/bin:$PATH"
PY=${FOLDTRAIN_PYTHON:-$PWD/.venv/bin/python}
COUNTS=("$@")
[ ${#COUNTS[@]} -gt 0 ] || COUNTS=(50000 200000)
FOLDS=${FOLDS:-5}

# shellcheck source=bench/release.sh
source bench/release.sh

work="$(mktemp -d)"
if [ "${KEEP:-0}" = 1 ]; then
  echo "== work folder: $work"
else
  trap 'rm -rf "$work"' EXIT
fi

echo "== training the ensemble: densenet-tiny at 32 px, $FOLDS folds, 1 epoch"
"$BIN/foldtrain" synth --out "$work/train" --train 200 --test 20 --image-size 32 --seed 5 \
  --folds "$FOLDS" >/dev/null
t=$work/train
"$BIN/foldtrain" run --quiet --cpu --train-csv "$t/Training_set.csv" --train-dir "$t/train" \
  --test-csv "$t/Testing_set.csv" --test-dir "$t/test" --arch densenet-tiny --head-units 64 \
  --image-size 32 --folds "$FOLDS" --epochs 1 --out "$work/model" >/dev/null

# hwm PID: the process's peak resident set so far, in KiB (0 once it is gone).
hwm() { awk '/^VmHWM:/ { print $2; found = 1 } END { if (!found) print 0 }' "/proc/$1/status" 2>/dev/null || echo 0; }

for count in "${COUNTS[@]}"; do
  frames=$work/frames-$count
  echo "== $count frames: generating"
  "$BIN/foldtrain" synth --out "$frames" --train 43 --test "$count" --image-size 32 --seed 9 \
    --folds 2 >/dev/null
  echo "== $count frames: predicting ($(uptime | sed 's/.*load/load/'))"
  start=$EPOCHREALTIME
  "$BIN/foldtrain" predict --quiet --cpu --workers 2 --model "$work/model" \
    --images-csv "$frames/Testing_set.csv" --images-dir "$frames/test" \
    ${SHARD_SIZE:+--shard-size "$SHARD_SIZE"} --out "$work/out-$count" >"$work/predict-$count.log" &
  pid=$!
  coordinator=0 worker=0
  # VmHWM only grows, so the last reading before a process exits is its peak.
  while kill -0 "$pid" 2>/dev/null; do
    c=$(hwm "$pid"); [ "$c" -gt "$coordinator" ] && coordinator=$c
    for child in $(pgrep -P "$pid" || true); do
      w=$(hwm "$child"); [ "$w" -gt "$worker" ] && worker=$w
    done
    sleep 0.2
  done
  wait "$pid"
  wall=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
  rows=$(($(wc -l <"$work/out-$count/probabilities.csv") - 1))
  echo "== $count frames: $rows rows in $wall s, $(awk -v n="$rows" -v s="$wall" 'BEGIN { printf "%.0f", n / s }') images/s end to end; peak RSS coordinator $((coordinator / 1024)) MiB, largest worker $((worker / 1024)) MiB"
  tail -n 1 "$work/predict-$count.log"
  rm -rf "$frames" "$work/out-$count"
done
