#!/usr/bin/env bash
# Installs the OTLP tracing backend the span tests read traces back from (Arize Phoenix,
# from PyPI) into its own venv, apart from the libtorch one. Idempotent: a venv that
# already holds the pinned version is left as it is. uv resolves and downloads in
# parallel: about a minute here, against about eight with pip.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FOLDTRAIN_OTEL_VENV:-$ROOT/.venv-otel}"
PYTHON="${PYTHON:-python3}"

PHOENIX_VERSION="20.26.1"
UV_VERSION="0.13.9"

want_stamp="arize-phoenix=$PHOENIX_VERSION uv=$UV_VERSION"
stamp="$VENV/.foldtrain-otel-backend"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want_stamp" && -x "$VENV/bin/phoenix" ]]; then
    echo "otel-backend: $VENV already has arize-phoenix $PHOENIX_VERSION"
    exit 0
fi

start=$SECONDS
if [[ ! -x "$VENV/bin/python" ]]; then
    echo "otel-backend: creating venv at $VENV"
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
echo "otel-backend: installing arize-phoenix==$PHOENIX_VERSION (about 700 MB)"
# Bytecode is compiled now, once, rather than on the first (test-timed) start.
"$VENV/bin/uv" pip install --quiet --compile-bytecode --python "$VENV/bin/python" \
    "arize-phoenix==$PHOENIX_VERSION"
test -x "$VENV/bin/phoenix"
echo "$want_stamp" > "$stamp"
echo "otel-backend: ready in $((SECONDS - start)) s ($VENV/bin/phoenix)"
