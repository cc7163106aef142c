#!/usr/bin/env bash
# How long `foldtrain submit` takes to hash and upload a Kvasir-sized data set to a
# coordinator on loopback: the first submit hashes and uploads everything, the second
# hashes everything and uploads nothing (so upload time ≈ first − second).
# Usage: bash bench/submit_scale.sh [train images] [test images] [image px]
# (defaults: 47000 + 238 at 384 px, synthetic JPEGs of about 30 KB each).
set -euo pipefail
cd "$(dirname "$0")/.."
export LIBTORCH_USE_PYTORCH=1 PATH="$PWD/.venv/bin:$PATH"
train="${1:-47000}"; test="${2:-238}"; px="${3:-384}"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

cargo build --release -p foldtrain-coordinator --bin foldtrain
bin="${CARGO_TARGET_DIR:-target}/release/foldtrain"
echo "== generating $train + $test images at $px px"
/usr/bin/time -f "synth: %e s" "$bin" synth --out "$work/data" --train "$train" --test "$test" \
    --image-size "$px" --seed 1 --force > /dev/null
du -sh "$work/data/train" | awk '{print "train images on disk: " $1}'
find "$work/data/train" -type f -printf '%s\n' | \
    awk '{s+=$1} END {printf "%d images, mean size %.1f KB\n", NR, s/NR/1000}'

"$bin" serve --listen 127.0.0.1:0 --data-dir "$work/coord" > "$work/serve.log" 2>&1 &
for _ in $(seq 100); do grep -q "listening on" "$work/serve.log" && break; sleep 0.1; done
url="$(grep -o 'http://[0-9.:]*' "$work/serve.log" | head -1)"
flags=(--train-csv "$work/data/Training_set.csv" --train-dir "$work/data/train"
       --test-csv "$work/data/Testing_set.csv" --test-dir "$work/data/test"
       --coordinator "$url" --quiet --epochs 1)
# Submitted jobs would wait for workers that never come; only the submission is timed.
echo "== first submit (hash + upload everything)"
/usr/bin/time -f "first submit: %e s wall, %U s user, %S s sys" "$bin" submit "${flags[@]}"
echo "== second submit (hash everything, upload nothing)"
/usr/bin/time -f "second submit: %e s wall, %U s user, %S s sys" "$bin" submit "${flags[@]}"
du -sh "$work/coord/blobs" | awk '{print "coordinator blob store: " $1}'
