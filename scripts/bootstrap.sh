#!/usr/bin/env bash
# Installs libtorch (from the PyPI torch wheel) and the Python test tools into a
# project-local venv. Idempotent: when the venv already holds the pinned versions,
# it does nothing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FOLDTRAIN_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

TORCH_VERSION="2.11.0"
TORCHVISION_VERSION="0.26.0"
# Packages the Python-side tests and benchmarks use (torchvision reference model,
# safetensors round trip, PIL pipeline peer). scikit-learn is only needed to
# regenerate split fixtures, which are committed.
PY_TEST_DEPS=("numpy" "safetensors==0.7.0" "pillow")

want_stamp="torch=$TORCH_VERSION torchvision=$TORCHVISION_VERSION deps=${PY_TEST_DEPS[*]}"
stamp="$VENV/.foldtrain-bootstrap"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want_stamp" ]] \
    && "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null; then
    echo "bootstrap: $VENV already has torch $TORCH_VERSION"
    exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "bootstrap: creating venv at $VENV"
    "$PYTHON" -m venv "$VENV"
fi

echo "bootstrap: installing torch==$TORCH_VERSION (about 4.6 GB, one minute on a fast link)"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "torch==$TORCH_VERSION"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "torchvision==$TORCHVISION_VERSION"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PY_TEST_DEPS[@]}"

"$VENV/bin/python" -c "import torch; print('bootstrap: torch', torch.__version__, 'at', torch.__file__)"
echo "$want_stamp" > "$stamp"
