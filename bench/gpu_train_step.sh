#!/usr/bin/env bash
# GPU training-step throughput, fp32 and amp: a prebuilt foldtrain train_step binary vs PyTorch eager,
# in the same call on the same libtorch, at 224 px. Prints img/s of both and the ratio per mode.
#
#   bench/gpu_train_step.sh BIN [STEPS]
#   (env: DEVICE=cuda|cpu, SIZE=224, BATCH=32, WARMUP=20, TORCH_VENV=/opt/torch/.venv)
# BIN is target/release/examples/train_step (cargo build --release -p foldtrain-worker --example train_step).
# DEVICE=cpu SIZE=64 BATCH=4 WARMUP=1 bench/gpu_train_step.sh BIN 2   checks the script without a GPU.
set -euo pipefail
BIN=${1:?usage: gpu_train_step.sh BIN [STEPS]}
STEPS=${2:-300}
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-224}
BATCH=${BATCH:-32}
WARMUP=${WARMUP:-20}
TORCH_VENV=${TORCH_VENV:-/opt/torch/.venv}
PY=$TORCH_VENV/bin/python
HERE=$(cd "$(dirname "$0")" && pwd)
[ -x "$BIN" ] || { echo "gpu_train_step.sh: $BIN is not an executable" >&2; exit 2; }
[ -x "$PY" ] || { echo "gpu_train_step.sh: no python at $PY (set TORCH_VENV)" >&2; exit 2; }
export LD_LIBRARY_PATH="$TORCH_VENV/lib/python3.11/site-packages/torch/lib:${LD_LIBRARY_PATH:-}"
ARGS=(--device "$DEVICE" --size "$SIZE" --batch "$BATCH" --warmup "$WARMUP" --steps "$STEPS")
rate() { sed -E 's/.*img_per_s=([0-9.]+).*/\1/' <<<"$1"; }
for mode in fp32 amp; do
  extra=()
  [ "$mode" = amp ] && extra=(--amp)
  r=$("$BIN" "${ARGS[@]}" "${extra[@]}")
  echo "$mode: $r"
  t=$("$PY" "$HERE/train_step.py" "${ARGS[@]}" "${extra[@]}")
  echo "$mode: $t"
  "$PY" -c "import sys; r, t = map(float, sys.argv[1:]); print(f'$mode img/s: rust {r:.1f}  pytorch {t:.1f}  ratio {r / t:.3f}')" "$(rate "$r")" "$(rate "$t")"
done
