#!/usr/bin/env bash
# `pier export --from URL` (pier's remote-registry client writing a bundle) against
# `skopeo copy docker://... oci-archive:` on the same upstream image, one run each, same machine.
# The upstream is a pier serving plain HTTP on loopback (its blob files in the page cache for
# both runs: what is measured is the client, not the upstream's disk).
# Usage: bash bench/remote_export.sh   (BENCH_REMOTE_MB=1024 layer size, BENCH_REMOTE_RUNS=2,
#                                        BENCH_REMOTE_TLS=1 for https (a throwaway CA; HTTP/2 by
#                                        ALPN for pier, skopeo as it negotiates),
#                                        PIER_BIN=target/release/pier, BENCH_DIR=/tmp)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MB=${BENCH_REMOTE_MB:-1024}
RUNS=${BENCH_REMOTE_RUNS:-2}
TLS=${BENCH_REMOTE_TLS:-0}
PIER_BIN=${PIER_BIN:-$ROOT/target/release/pier}
[[ -x $PIER_BIN ]] || { echo "no $PIER_BIN: cargo build --release first (or set PIER_BIN)" >&2; exit 2; }
W=$(mktemp -d "${BENCH_DIR:-/tmp}/pier-remote-bench.XXXXXX")
PID=
cleanup() { [[ -n $PID ]] && kill "$PID" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$W/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $W/data
http:
  addr: 127.0.0.1:$PORT
EOF
SCHEME=http
PIER_TLS=()
SKOPEO_SRC=(--src-tls-verify=false)
SKOPEO_DEST=(--dest-tls-verify=false)
if [[ $TLS == 1 ]]; then
    SCHEME=https
    mkdir -p "$W/certs"
    openssl req -x509 -nodes -days 1 -subj "/CN=pier bench CA" -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
        -keyout "$W/ca.key" -out "$W/certs/ca.crt" 2>/dev/null
    openssl req -new -nodes -subj "/CN=127.0.0.1" -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
        -keyout "$W/server.key" -out "$W/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$W/server.ext"
    openssl x509 -req -in "$W/server.csr" -CA "$W/certs/ca.crt" -CAkey "$W/ca.key" -set_serial 2 -days 1 \
        -extfile "$W/server.ext" -out "$W/server.crt" 2>/dev/null
    printf '  tls:\n    certificate: %s\n    key: %s\n' "$W/server.crt" "$W/server.key" >>"$W/config.yml"
    PIER_TLS=(--ca "$W/certs/ca.crt")
    SKOPEO_SRC=(--src-cert-dir "$W/certs")
    SKOPEO_DEST=(--dest-cert-dir "$W/certs")
fi
"$PIER_BIN" serve --config "$W/config.yml" 2>"$W/pier.log" &
PID=$!
for _ in $(seq 100); do curl -kfs "$SCHEME://127.0.0.1:$PORT/v2/" >/dev/null && break; sleep 0.1; done

echo "== image: one ${MB} MiB random layer, $SCHEME"
head -c $((MB << 20)) /dev/urandom >"$W/layer"
python3 "$ROOT/bench/mkoci.py" layout "$W/layout" "$W/layer" v1 >/dev/null
skopeo --insecure-policy copy --quiet "${SKOPEO_DEST[@]}" "oci:$W/layout:v1" "docker://127.0.0.1:$PORT/bench/big:v1"
rm -rf "$W/layout"
# Warm the upstream's page cache for both clients alike.
curl -kfs "$SCHEME://127.0.0.1:$PORT/v2/bench/big/manifests/v1" -H 'Accept: application/vnd.oci.image.manifest.v1+json' >/dev/null
cat "$W"/data/blobs/*/*/* >/dev/null 2>&1 || true

measure() { # NAME OUTPUT COMMAND...
    local name=$1 out=$2; shift 2
    local i
    for i in $(seq "$RUNS"); do
        rm -rf "$out"
        /usr/bin/time -f "%e %M" -o "$W/time" "$@" >/dev/null 2>"$W/err" || { cat "$W/err" >&2; exit 1; }
        read -r secs rss <"$W/time"
        local bytes
        bytes=$(stat -c %s "$out")
        printf '%-34s run %d: %6.2f s  %7.1f MiB/s  peak RSS %6.1f MiB  (%d bytes written)\n' \
            "$name" "$i" "$secs" "$(echo "$MB / $secs" | bc -l)" "$(echo "$rss / 1024" | bc -l)" "$bytes"
        sync "$out"
    done
}
measure "pier export --from $SCHEME://..." "$W/pier.tar" \
    "$PIER_BIN" export --from "$SCHEME://127.0.0.1:$PORT" "${PIER_TLS[@]}" bench/big:v1 -o "$W/pier.tar"
measure "skopeo copy docker:// oci-archive:" "$W/skopeo.tar" \
    skopeo --insecure-policy copy --quiet "${SKOPEO_SRC[@]}" "docker://127.0.0.1:$PORT/bench/big:v1" \
    "oci-archive:$W/skopeo.tar:bench/big:v1"
