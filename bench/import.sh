#!/usr/bin/env bash
# Import throughput: `pier import` of one large image (an OCI archive: the image's OCI layout as
# one tar, what `skopeo copy … oci-archive:` writes and `pier import` reads), through the daemon,
# on the stopped store, zstd-compressed, and again when the store has every blob; against
# `skopeo copy oci-archive: docker://pier` (loading the same archive into the registry over HTTP)
# and `skopeo copy oci-archive: oci:` (unpacking it to a layout), in one run, on one machine.
#
#   bash bench/import.sh                       # 4 GiB layer (the issue's size)
#   BENCH_IMPORT_MB=1024 PIER_BIN=target/release/pier bash bench/import.sh
#
# Each result: wall time, MB/s (decimal MB of the input file per second), the client's peak RSS
# (/usr/bin/time), and for the daemon runs the daemon's peak RSS (VmHWM) after the run. The page
# cache is warm (the archive was just written): this measures the import's own cost (hashing,
# writing, fsync), not the disk's read speed. The layer is incompressible (AES-CTR of zeros).
# Needs: skopeo, python3, openssl, zstd, /usr/bin/time; about 4x the layer size free in BENCH_DIR.
set -euo pipefail

cd "$(dirname "$0")/.."
MB=${BENCH_IMPORT_MB:-4096}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
PIER_BIN=${PIER_BIN:-}
if [[ -z $PIER_BIN ]]; then
    cargo build --release --bin pier
    PIER_BIN=target/release/pier
fi
PIER_BIN=$(realpath "$PIER_BIN")
for tool in skopeo python3 openssl zstd /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "bench/import.sh needs $tool" >&2; exit 1; }
done

WORK=$(mktemp -d "$BENCH_DIR/pier-import-bench.XXXXXX")
PID=
cleanup() {
    [[ -n $PID ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$WORK/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $WORK/data
http:
  addr: 127.0.0.1:$PORT
EOF
start() {
    "$PIER_BIN" serve --config "$WORK/config.yml" 2>>"$WORK/pier.log" &
    PID=$!
    for _ in $(seq 100); do
        curl -fsS "http://127.0.0.1:$PORT/v2/" >/dev/null 2>&1 && return
        sleep 0.1
    done
    echo "pier did not start" >&2
    exit 1
}
stop() {
    kill "$PID"
    wait "$PID" 2>/dev/null || true
    PID=
}
fresh() {
    rm -rf "$WORK/data"
}

echo "== generating a $MB MB layer and its OCI archive"
{ openssl enc -aes-128-ctr -pass pass:pier -nosalt -pbkdf2 </dev/zero 2>/dev/null || true; } |
    head -c "$((MB * 1000 * 1000))" >"$WORK/layer"
python3 bench/mkoci.py layout "$WORK/oci" "$WORK/layer" bench/big:v1 >/dev/null
tar -C "$WORK/oci" -cf "$WORK/big.tar" .
rm -rf "$WORK/oci"
zstd -q -1 -T0 "$WORK/big.tar" -o "$WORK/big.tar.zst"

# run NAME INPUT COMMAND...: times COMMAND, prints one result line.
printf '\n%-48s %10s %10s %14s %14s\n' "import of bench/big:v1 ($MB MB layer)" "seconds" "MB/s" "peak RSS KiB" "daemon KiB"
run() {
    local name=$1 input=$2
    shift 2
    sync
    local t0 t1 size rss daemon=-
    t0=$(date +%s.%N)
    /usr/bin/time -f '%M' -o "$WORK/rss" "$@" >/dev/null 2>"$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
    t1=$(date +%s.%N)
    size=$(stat -c %s "$input")
    rss=$(tail -1 "$WORK/rss")
    [[ -n $PID ]] && daemon=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
    python3 -c "import sys; t=$t1-$t0; print('%-48s %10.2f %10.0f %14s %14s' % (sys.argv[1], t, $size/1e6/t, sys.argv[2], sys.argv[3]))" "$name" "$rss" "$daemon"
}

fresh
start
run "pier import (daemon, tar)" "$WORK/big.tar" \
    "$PIER_BIN" import "$WORK/big.tar" --config "$WORK/config.yml"
run "pier import again (daemon, every blob present)" "$WORK/big.tar" \
    "$PIER_BIN" import "$WORK/big.tar" --config "$WORK/config.yml"
stop
fresh
start
run "pier import (daemon, zstd)" "$WORK/big.tar.zst" \
    "$PIER_BIN" import "$WORK/big.tar.zst" --config "$WORK/config.yml"
stop
fresh
start
run "skopeo copy oci-archive: -> docker://pier" "$WORK/big.tar" \
    skopeo --insecure-policy copy --quiet --preserve-digests --dest-tls-verify=false \
    "oci-archive:$WORK/big.tar:bench/big:v1" "docker://127.0.0.1:$PORT/bench/big:v1"
stop
fresh
run "pier import (no daemon: the store opened)" "$WORK/big.tar" \
    "$PIER_BIN" import "$WORK/big.tar" --config "$WORK/config.yml"
fresh
run "skopeo copy oci-archive: -> oci: (unpack)" "$WORK/big.tar" \
    skopeo --insecure-policy copy --quiet --preserve-digests \
    "oci-archive:$WORK/big.tar:bench/big:v1" "oci:$WORK/unpacked:bench/big:v1"
