#!/usr/bin/env bash
# Bundle export throughput: `pier export` of one large image against `skopeo copy` of the same
# image to an `oci-archive:` (from pier over HTTP, and from the repository's OCI layout on disk,
# which is the fairest comparison of writing an archive), in one run, on one machine.
#
#   bash bench/bundle.sh                       # 4 GiB layer (the issue's size)
#   BENCH_BUNDLE_MB=1024 PIER_BIN=target/release/pier bash bench/bundle.sh
#
# Each result: wall time, MB/s (decimal MB of the output file per second), the client's peak RSS
# (/usr/bin/time). The page cache is warm (the image was just pushed): this measures the
# export's own cost, not the disk's read speed. The layer is incompressible (AES-CTR of zeros).
# Needs: skopeo, python3, openssl, /usr/bin/time; about 4x the layer size free in BENCH_DIR.
set -euo pipefail

cd "$(dirname "$0")/.."
MB=${BENCH_BUNDLE_MB:-4096}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
PIER_BIN=${PIER_BIN:-}
if [[ -z $PIER_BIN ]]; then
    cargo build --release --bin pier
    PIER_BIN=target/release/pier
fi
PIER_BIN=$(realpath "$PIER_BIN")
for tool in skopeo python3 openssl /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "bench/bundle.sh needs $tool" >&2; exit 1; }
done

WORK=$(mktemp -d "$BENCH_DIR/pier-bundle-bench.XXXXXX")
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
"$PIER_BIN" serve --config "$WORK/config.yml" 2>"$WORK/pier.log" &
PID=$!
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$PORT/v2/" >/dev/null 2>&1 && break
    sleep 0.1
done

echo "== generating a $MB MB layer and pushing it (skopeo --preserve-digests)"
# (openssl ends with SIGPIPE when head has enough: not a failure)
{ openssl enc -aes-128-ctr -pass pass:pier -nosalt -pbkdf2 </dev/zero 2>/dev/null || true; } |
    head -c "$((MB * 1000 * 1000))" >"$WORK/layer"
python3 bench/mkoci.py layout "$WORK/oci" "$WORK/layer" big >/dev/null
skopeo --insecure-policy copy --quiet --preserve-digests --dest-tls-verify=false \
    "oci:$WORK/oci:big" "docker://127.0.0.1:$PORT/bench/big:v1"
rm -rf "$WORK/oci"

# run NAME OUTPUT COMMAND...: times COMMAND, prints one result line, removes OUTPUT.
printf '\n%-44s %10s %10s %14s\n' "export of bench/big:v1 ($MB MB layer)" "seconds" "MB/s" "peak RSS KiB"
run() {
    local name=$1 out=$2
    shift 2
    sync
    local t0 t1 size rss
    t0=$(date +%s.%N)
    /usr/bin/time -f '%M' -o "$WORK/rss" "$@" >/dev/null 2>"$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
    t1=$(date +%s.%N)
    size=$(stat -c %s "$out")
    rss=$(tail -1 "$WORK/rss")
    python3 -c "import sys; t=$t1-$t0; print('%-44s %10.2f %10.0f %14s' % (sys.argv[1], t, $size/1e6/t, sys.argv[2]))" "$name" "$rss"
    rm -f "$out"
}

run "pier export (daemon, tar)" "$WORK/pier.tar" \
    "$PIER_BIN" export bench/big:v1 -o "$WORK/pier.tar" --config "$WORK/config.yml"
run "pier export (daemon, --zstd)" "$WORK/pier.tar.zst" \
    "$PIER_BIN" export bench/big:v1 -o "$WORK/pier.tar.zst" --config "$WORK/config.yml"
run "skopeo copy docker:// -> oci-archive:" "$WORK/skopeo.tar" \
    skopeo --insecure-policy copy --quiet --src-tls-verify=false \
    "docker://127.0.0.1:$PORT/bench/big:v1" "oci-archive:$WORK/skopeo.tar:bench/big:v1"
run "skopeo copy oci: (pier's layout) -> oci-archive:" "$WORK/skopeo-local.tar" \
    skopeo --insecure-policy copy --quiet \
    "oci:$WORK/data/repositories/bench/big:v1" "oci-archive:$WORK/skopeo-local.tar:bench/big:v1"
kill "$PID"
wait "$PID" 2>/dev/null || true
PID=
run "pier export (no daemon: the store opened)" "$WORK/store.tar" \
    "$PIER_BIN" export bench/big:v1 -o "$WORK/store.tar" --config "$WORK/config.yml"
