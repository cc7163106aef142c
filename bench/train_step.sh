#!/usr/bin/env bash
# CPU training-step throughput: foldtrain's DenseNet121 (Rust, tch) vs the PyTorch eager reference,
# same libtorch (the project venv's), same threads, batch 32 at 64 px, run interleaved A B A B.
#
#   bench/train_step.sh [ROUNDS] [STEPS]     (env: THREADS, SIZE, BATCH, PROFILE=release|dev)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-2}
STEPS=${2:-10}
THREADS=${THREADS:-$(nproc)}
SIZE=${SIZE:-64}
BATCH=${BATCH:-32}
PROFILE=${PROFILE:-release}
PY=${FOLDTRAIN_PYTHON:-$PWD/.venv/bin/python}
export LIBTORCH_USE_PYTORCH=1 PATH="$(dirname "$PY"):$PATH"
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
if [ "$PROFILE" = release ]; then
  cargo build --release -p foldtrain-worker --example train_step
  BIN=$TARGET/release/examples/train_step
else
  cargo build -p foldtrain-worker --example train_step
  BIN=$TARGET/debug/examples/train_step
fi
TORCH_LIB=$("$PY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$TORCH_LIB:${LD_LIBRARY_PATH:-}"
ARGS=(--device cpu --size "$SIZE" --batch "$BATCH" --warmup 2 --steps "$STEPS" --threads "$THREADS")
rust=() torch=()
for r in $(seq "$ROUNDS"); do
  line=$("$BIN" "${ARGS[@]}"); echo "round $r: $line"; rust+=("$(sed -E 's/.*img_per_s=([0-9.]+).*/\1/' <<<"$line")")
  line=$("$PY" bench/train_step.py "${ARGS[@]}"); echo "round $r: $line"; torch+=("$(sed -E 's/.*img_per_s=([0-9.]+).*/\1/' <<<"$line")")
done
"$PY" - "${#rust[@]}" "${rust[@]}" "${torch[@]}" <<'PY'
import statistics, sys
n = int(sys.argv[1]); r = [float(x) for x in sys.argv[2:2 + n]]; t = [float(x) for x in sys.argv[2 + n:]]
mr, mt = statistics.median(r), statistics.median(t)
print(f"median img/s: rust {mr:.2f}  pytorch {mt:.2f}  ratio rust/pytorch {mr / mt:.3f}")
PY
