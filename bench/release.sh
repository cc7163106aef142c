# Sourced by the end-to-end benchmarks: builds the release binaries and sets BIN (their
# folder), LD_LIBRARY_PATH (the venv's libtorch) and FOLDTRAIN_WORKER_BIN. Needs PY set.
# shellcheck shell=bash
cargo build --release --workspace --bins
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
TORCH_LIB=$("$PY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$TORCH_LIB:${LD_LIBRARY_PATH:-}" FOLDTRAIN_WORKER_BIN="$BIN/foldtrain-worker"
