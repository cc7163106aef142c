#!/usr/bin/env bash
# Installs what tests/tests/netns.rs captures a job's traffic with: Debian's tshark (from
# apt), plus iproute2 for `ip netns`. Idempotent: apt runs only when a tool is missing.
# The debconf question whether non-root users may capture is answered no: the test runs
# as root, and the install must not stop to ask.
set -euo pipefail

start=$SECONDS
missing=()
command -v tshark >/dev/null || missing+=(tshark)
command -v ip >/dev/null || missing+=(iproute2)
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "netns-tools: tshark and ip already installed"
else
    echo "netns-tools: installing ${missing[*]} with apt-get"
    sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        sudo=(sudo)
    fi
    echo "wireshark-common wireshark-common/install-setuid boolean false" |
        "${sudo[@]}" debconf-set-selections
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
    command -v tshark >/dev/null
fi
echo "netns-tools: ready in $((SECONDS - start)) s ($(tshark --version 2>/dev/null | head -n 1))"
