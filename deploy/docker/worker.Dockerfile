# syntax=docker/dockerfile:1.7
#
# The worker image: `foldtrain-worker` with libtorch 2.11.0 for CUDA 13, taken from the
# torch wheel on PyPI together with its nvidia-* libraries (cuDNN, cuBLAS, NCCL, ...).
# Nothing from the CUDA toolkit is needed on the host: only the NVIDIA driver (>= 580, the
# first with CUDA 13) and the NVIDIA Container Toolkit, which mounts libcuda.so.1 and the
# /dev/nvidia* devices into the container. Build from the repository root (BuildKit):
#
#   docker build -f deploy/docker/worker.Dockerfile -t foldtrain-worker:local .
#   docker run --rm --gpus all foldtrain-worker:local --list-devices
#
# Without a GPU (or with --cpu) the same image trains on the CPU.

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/*

# libtorch from the torch wheel, in a venv whose path the final image keeps: the binary's
# RUNPATH points at /opt/foldtrain-venv/lib/python3.11/site-packages/torch/lib.
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -m venv /opt/foldtrain-venv \
    && /opt/foldtrain-venv/bin/pip install --disable-pip-version-check torch==2.11.0
ENV LIBTORCH_USE_PYTORCH=1 \
    PATH=/opt/foldtrain-venv/bin:$PATH

# The runtime libraries, laid out under /runtime exactly as the final image has them: the
# paths listed in worker-runtime-paths.txt (deploy/check-image-libs.sh checks that list
# without Docker).
COPY deploy/docker/worker-runtime-paths.txt deploy/docker/stage-worker-runtime.sh /tmp/stage/
RUN bash /tmp/stage/stage-worker-runtime.sh \
        /opt/foldtrain-venv/lib/python3.11/site-packages \
        /runtime/opt/foldtrain-venv/lib/python3.11/site-packages \
        /tmp/stage/worker-runtime-paths.txt

WORKDIR /src
# Dependencies first: the manifests, the lock file and empty sources, so that this layer
# (all crates downloaded) is rebuilt only when a manifest or Cargo.lock changes.
COPY Cargo.toml Cargo.lock ./
COPY proto/Cargo.toml proto/
COPY coordinator/Cargo.toml coordinator/
COPY worker/Cargo.toml worker/
COPY tests/Cargo.toml tests/
RUN for f in proto/src/lib.rs proto/build.rs coordinator/src/lib.rs coordinator/src/main.rs \
        worker/src/lib.rs worker/src/main.rs worker/build.rs tests/src/lib.rs \
        bench/cluster_stream.rs bench/train_step.rs; do \
        mkdir -p "$(dirname "$f")" && touch "$f"; \
    done \
    && cargo fetch --locked

# Then the sources; only the worker package is built. Compiled dependencies stay in a
# BuildKit cache mount.
COPY . .
RUN --mount=type=cache,target=/src/target,id=foldtrain-worker-target,sharing=locked \
    cargo build --release --frozen -p foldtrain-worker --bin foldtrain-worker \
    && install -D -m 0755 target/release/foldtrain-worker /runtime/usr/local/bin/foldtrain-worker

FROM ${RUNTIME_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 foldtrain \
    && useradd --system --uid 10001 --gid foldtrain --create-home --home-dir /home/foldtrain \
        --shell /usr/sbin/nologin foldtrain \
    && install -d -o foldtrain -g foldtrain -m 0750 /var/cache/foldtrain
COPY --from=build /runtime/ /

# The library directories of worker-runtime-paths.txt (the binary's RUNPATH covers
# torch/lib only; deploy/check-image-libs.sh checks this line against the list).
ENV LD_LIBRARY_PATH=/opt/foldtrain-venv/lib/python3.11/site-packages/torch/lib:/opt/foldtrain-venv/lib/python3.11/site-packages/nvidia/cu13/lib:/opt/foldtrain-venv/lib/python3.11/site-packages/nvidia/cudnn/lib:/opt/foldtrain-venv/lib/python3.11/site-packages/nvidia/cusparselt/lib:/opt/foldtrain-venv/lib/python3.11/site-packages/nvidia/nccl/lib:/opt/foldtrain-venv/lib/python3.11/site-packages/nvidia/nvshmem/lib
# For the NVIDIA Container Toolkit: every GPU the runtime grants, with the compute libraries
# (libcuda) and utility ones (NVML, for the GPU memory metrics). GPU indices follow PCI bus
# order, as nvidia-smi and NVML number them.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    CUDA_DEVICE_ORDER=PCI_BUS_ID
# The listen address is not loopback, so the worker needs the workers' token and TLS
# (FOLDTRAIN_TOKEN_FILE, FOLDTRAIN_TLS_CERT, FOLDTRAIN_TLS_KEY, FOLDTRAIN_TLS_CA), or
# --insecure; with TLS, --advertise is an https:// URL whose host its certificate holds.
ENV FOLDTRAIN_WORKER_LISTEN=0.0.0.0:50052 \
    FOLDTRAIN_CACHE_DIR=/var/cache/foldtrain
USER 10001:10001
WORKDIR /var/cache/foldtrain
# 50052: the worker's gRPC service, which the coordinator dials (--advertise must name an
# address of this port the coordinator can reach); 9465: metrics, with --metrics-listen 0.0.0.0:9465
EXPOSE 50052 9465

# Healthy while the worker's gRPC port (taken from FOLDTRAIN_WORKER_LISTEN) accepts
# connections. Kubernetes uses the gRPC health service instead (see deploy/README.md).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/bin/bash", "-c", "exec 3<>\"/dev/tcp/127.0.0.1/${FOLDTRAIN_WORKER_LISTEN##*:}\""]

ENTRYPOINT ["foldtrain-worker"]
