# syntax=docker/dockerfile:1.7
#
# The coordinator image: the `foldtrain` binary (server and command line) and nothing of
# libtorch, which the coordinator never links. Build from the repository root (BuildKit):
#
#   docker build -f deploy/docker/coordinator.Dockerfile -t foldtrain-coordinator:local .
#
# It serves by default (`foldtrain serve` on 0.0.0.0:50051, data in /var/lib/foldtrain).
# Beyond loopback it refuses to start without a token and TLS (certificates from
# deploy/tls/make-certs.sh; the coordinator's should carry 127.0.0.1 for the health check):
#
#   docker run -v foldtrain-data:/var/lib/foldtrain -v "$PWD/secrets:/run/secrets:ro" \
#       -e FOLDTRAIN_TOKEN_FILE=/run/secrets/token \
#       -e FOLDTRAIN_WORKER_TOKEN_FILE=/run/secrets/worker-token \
#       -e FOLDTRAIN_TLS_CERT=/run/secrets/coordinator.pem \
#       -e FOLDTRAIN_TLS_KEY=/run/secrets/coordinator.key \
#       -e FOLDTRAIN_TLS_CA=/run/secrets/ca.pem -p 50051:50051 foldtrain-coordinator:local
#
# and is the command-line client too: `docker run ... foldtrain-coordinator:local submit ...`.

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
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

# Then the sources. Only the coordinator package is built: the worker's build script (which
# needs Python and torch) never runs. Compiled dependencies stay in a BuildKit cache mount.
COPY . .
RUN --mount=type=cache,target=/src/target,id=foldtrain-coordinator-target,sharing=locked \
    cargo build --release --frozen -p foldtrain-coordinator --bin foldtrain \
    && install -D -m 0755 target/release/foldtrain /usr/local/bin/foldtrain

FROM ${RUNTIME_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 foldtrain \
    && useradd --system --uid 10001 --gid foldtrain --home-dir /var/lib/foldtrain \
        --shell /usr/sbin/nologin foldtrain \
    && install -d -o foldtrain -g foldtrain -m 0750 /var/lib/foldtrain
COPY --from=build /usr/local/bin/foldtrain /usr/local/bin/foldtrain

# Every flag also reads a FOLDTRAIN_* variable. The listen address is not loopback, so
# `serve` needs a token and TLS (FOLDTRAIN_TOKEN_FILE, FOLDTRAIN_TLS_CERT, FOLDTRAIN_TLS_KEY,
# and FOLDTRAIN_TLS_CA for mutual TLS), or --insecure.
ENV FOLDTRAIN_LISTEN=0.0.0.0:50051 \
    FOLDTRAIN_DATA_DIR=/var/lib/foldtrain
USER 10001:10001
WORKDIR /var/lib/foldtrain
# 50051: gRPC (clients and workers); 9464: Prometheus metrics, with --metrics-listen 0.0.0.0:9464
EXPOSE 50051 9464

# Healthy when the coordinator answers a read-only RPC (the workers list) on its own port,
# taken from FOLDTRAIN_LISTEN. The check reads the token and the TLS files from the same
# FOLDTRAIN_* variables as the server, so give them through the variables rather than
# flags when relying on it. With TLS it dials https://127.0.0.1, verifies the server with
# FOLDTRAIN_TLS_CA and presents the coordinator's own certificate, which must therefore
# carry 127.0.0.1.
# OTEL_SDK_DISABLED keeps the probe's own client span out of the traces.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["/bin/sh", "-c", "scheme=http; [ -z \"$FOLDTRAIN_TLS_CERT\" ] || scheme=https; OTEL_SDK_DISABLED=true exec foldtrain workers --coordinator \"$scheme://127.0.0.1:${FOLDTRAIN_LISTEN##*:}\" >/dev/null"]

ENTRYPOINT ["foldtrain"]
CMD ["serve"]
