#!/usr/bin/env bash
# Makes a private certificate authority and certificates for a foldtrain cluster, with
# openssl. Every certificate is good for both ends of a connection (serverAuth and
# clientAuth), because the coordinator and the workers each serve and dial.
#
#   deploy/tls/make-certs.sh [--days N] OUT NAME=HOST[,HOST...] [NAME=HOST...]
#
#   deploy/tls/make-certs.sh certs coordinator=coord.example.org,10.0.0.5 \
#       gpu1=gpu1.example.org gpu2=gpu2.example.org alice=alice
#
# writes certs/ca.pem (give it to every process as --tls-ca), certs/ca.key (keep it
# offline), and certs/NAME.pem with certs/NAME.key for each NAME (--tls-cert, --tls-key).
# Each HOST is a DNS name or an IP address the others use to reach NAME; it goes into the
# certificate's subjectAltName. A CA already in OUT is reused, so certificates can be
# added later. Keys are P-256, readable by their owner only.
set -euo pipefail

days=825
if [[ "${1:-}" == "--days" ]]; then
    days="$2"
    shift 2
fi
if [[ $# -lt 2 ]]; then
    sed -n '2,16s/^# \{0,1\}//p' "$0" >&2
    exit 2
fi
out="$1"
shift
command -v openssl >/dev/null || { echo "make-certs: openssl is not installed" >&2; exit 1; }
mkdir -p "$out"
umask 077

if [[ ! -f "$out/ca.pem" || ! -f "$out/ca.key" ]]; then
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$out/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$out/ca.key" -sha256 -days "$days" -subj "/CN=foldtrain CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out "$out/ca.pem"
    chmod 644 "$out/ca.pem"
    echo "make-certs: new CA in $out/ca.pem"
fi

for spec in "$@"; do
    name="${spec%%=*}"
    hosts="${spec#*=}"
    if [[ "$spec" != *=* || -z "$name" || -z "$hosts" || "$name" == */* ]]; then
        echo "make-certs: expected NAME=HOST[,HOST...], got '$spec'" >&2
        exit 2
    fi
    san=""
    IFS=',' read -ra list <<<"$hosts"
    for host in "${list[@]}"; do
        if [[ "$host" =~ ^[0-9.]+$ || "$host" == *:* ]]; then
            san+="${san:+,}IP:$host"
        else
            san+="${san:+,}DNS:$host"
        fi
    done
    ext="$(mktemp)"
    trap 'rm -f "$ext"' EXIT
    printf '%s\n' "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" \
        "extendedKeyUsage=serverAuth,clientAuth" \
        "subjectAltName=$san" >"$ext"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$out/$name.key" 2>/dev/null
    openssl req -new -key "$out/$name.key" -subj "/CN=$name" -out "$out/$name.csr"
    openssl x509 -req -in "$out/$name.csr" -CA "$out/ca.pem" -CAkey "$out/ca.key" \
        -CAcreateserial -sha256 -days "$days" -extfile "$ext" -out "$out/$name.pem" 2>/dev/null
    rm -f "$out/$name.csr" "$ext"
    chmod 644 "$out/$name.pem"
    echo "make-certs: $out/$name.pem ($san)"
done
