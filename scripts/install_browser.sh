#!/usr/bin/env bash
# Installs what tests/tests/report_browser.rs drives report.html with: Debian's headless
# Chromium (/usr/bin/chromium, from apt) and playwright-core, pinned by
# tests/browser/package-lock.json. Idempotent: apt runs only when Chromium is missing, npm
# only when node_modules does not hold the locked version. Playwright never downloads a
# browser of its own (playwright-core has no install hook, and the env var below makes sure).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$ROOT/tests/browser"
CHROMIUM="${FOLDTRAIN_CHROMIUM:-/usr/bin/chromium}"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

start=$SECONDS
if [[ -x "$CHROMIUM" ]]; then
    echo "browser: $CHROMIUM already installed"
else
    echo "browser: installing chromium with apt-get"
    sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        sudo=(sudo)
    fi
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        chromium >/dev/null
    test -x "$CHROMIUM"
fi

for tool in node npm; do
    command -v "$tool" >/dev/null || {
        echo "browser: $tool is missing: install Node.js 20 or newer" >&2
        exit 1
    }
done

# npm ci rewrites node_modules each time; skip it while the installed tree matches the lock.
lock="$DIR/package-lock.json"
stamp="$DIR/node_modules/.foldtrain-lock"
if [[ -f "$stamp" ]] && cmp -s "$lock" "$stamp"; then
    echo "browser: $DIR/node_modules matches package-lock.json"
else
    echo "browser: npm ci in $DIR"
    (cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$lock" "$stamp"
fi
echo "browser: ready in $((SECONDS - start)) s ($("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM"))"
