#!/usr/bin/env bash
# Tag scale: manifest PUT latency in a repository with 100, 4,000 and 50,000 tags, and blob
# commit latency in another repository meanwhile, for pier and Debian's Distribution.
# Usage: bash bench/tags.sh   (knobs: see bench/README.md, "Tag scale"; run.sh calls it for
# BENCH_PHASES=...,tags)
set -euo pipefail

BENCH_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_SRC/.." && pwd)
BENCH_DIR=${BENCH_DIR:-$BENCH_SRC/out}
SIZES=${BENCH_TAG_SIZES:-100,4000,50000}
PUTS=${BENCH_TAG_PUTS:-200}
PAUSE_MS=${BENCH_TAG_PAUSE_MS:-20}
ONLY=${BENCH_ONLY:-}
DISTRIBUTION_BIN=${DISTRIBUTION_BIN:-/usr/bin/docker-registry}
PIER_BIN=${PIER_BIN:-}

case $ONLY in
    "") REGISTRIES=(pier distribution) ;;
    pier | distribution) REGISTRIES=("$ONLY") ;;
    *) echo "BENCH_ONLY must be empty, 'pier' or 'distribution' (got '$ONLY')" >&2; exit 2 ;;
esac
[[ $SIZES =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "BENCH_TAG_SIZES must be a comma-separated list (got '$SIZES')" >&2; exit 2; }
[[ $PUTS =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_TAG_PUTS must be a positive integer (got '$PUTS')" >&2; exit 2; }
[[ $PAUSE_MS =~ ^[0-9]+$ ]] || { echo "BENCH_TAG_PAUSE_MS must be an integer (got '$PAUSE_MS')" >&2; exit 2; }

mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
RUN=$BENCH_DIR/tags-run
LOGS=$BENCH_DIR/logs
mkdir -p "$LOGS"
rm -rf "$RUN"
mkdir -p "$RUN"

log() { printf '[tags %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { printf '[tags %s] ERROR: %s\n' "$(date +%T)" "$*" >&2; exit 1; }

SERVER_PID=""
cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if [[ -n $SERVER_PID ]]; then
        kill -TERM "$SERVER_PID" 2>/dev/null
        wait "$SERVER_PID" 2>/dev/null
    fi
    rm -rf "$RUN"
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

if [[ " ${REGISTRIES[*]} " == *" pier "* && -z $PIER_BIN ]]; then
    command -v cargo >/dev/null 2>&1 || PATH=$HOME/.cargo/bin:$PATH
    log "building pier: cargo build --release (log: $LOGS/tags-cargo-build.log)"
    (cd "$ROOT" && cargo build --release) >"$LOGS/tags-cargo-build.log" 2>&1 \
        || die "cargo build --release failed (log: $LOGS/tags-cargo-build.log)"
    PIER_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/pier
fi
for reg in "${REGISTRIES[@]}"; do
    case $reg in
        pier) [[ -x $PIER_BIN ]] || die "pier binary $PIER_BIN not found" ;;
        distribution) [[ -x $DISTRIBUTION_BIN ]] || die "$DISTRIBUTION_BIN not found (apt-get install docker-registry)" ;;
    esac
done

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

run_registry() { # name
    local name=$1 data=$RUN/data-$1 cfg=$RUN/$1.yml port i mode
    port=$(free_port)
    mkdir -p "$data"
    # The same config as run.sh's (warn level, no access log, delete on).
    cat >"$cfg" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
    : >"$LOGS/tags-$name.log"
    case $name in
        pier) "$PIER_BIN" serve --config "$cfg" >>"$LOGS/tags-$name.log" 2>&1 & mode=multi ;;
        distribution) "$DISTRIBUTION_BIN" serve "$cfg" >>"$LOGS/tags-$name.log" 2>&1 & mode=single ;;
    esac
    SERVER_PID=$!
    for ((i = 0; i < 300; i++)); do
        curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/v2/" && break
        kill -0 "$SERVER_PID" 2>/dev/null || die "$name exited at start (log: $LOGS/tags-$name.log)"
        sleep 0.05
    done
    log "=== $name on 127.0.0.1:$port: sizes $SIZES, $PUTS manifest PUTs each, $PAUSE_MS ms apart (tags: $mode)"
    local index=()
    [[ $name == pier ]] && index=("$data/repositories/tags/big/index.json")
    python3 "$BENCH_SRC/tags.py" "$port" "$mode" "$SIZES" "$PUTS" "$PAUSE_MS" "$BENCH_DIR/tags-$name.json" "${index[@]}" \
        || die "$name: tags.py failed (server log: $LOGS/tags-$name.log)"
    kill -0 "$SERVER_PID" 2>/dev/null || die "$name died (log: $LOGS/tags-$name.log)"
    if [[ $name == pier ]]; then
        local idx=$data/repositories/tags/big/index.json t0
        t0=$EPOCHREALTIME
        kill -TERM "$SERVER_PID"
        wait "$SERVER_PID" || true
        log "pier: stopped in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }') s; index.json has $(grep -c '"org.opencontainers.image.ref.name"' "$idx" || true) tags, $(stat -c %s "$idx") bytes"
    else
        kill -TERM "$SERVER_PID"
        wait "$SERVER_PID" || true
    fi
    SERVER_PID=""
    rm -rf "$data"
}

for reg in "${REGISTRIES[@]}"; do
    run_registry "$reg"
done

python3 - "$BENCH_DIR" "$SIZES" "${REGISTRIES[@]}" <<'EOF' | tee "$BENCH_DIR/tags.md"
import json, sys
out, sizes, regs = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
res = {r: json.load(open("%s/tags-%s.json" % (out, r))) for r in regs}
def cell(v):
    return "-" if v is None else ("%.1f" % v)
print("| tags | " + " | ".join("%s PUT p50 / p99 ms | %s blob commit p50 / p99 ms" % (r, r) for r in regs) + " |")
print("|---:|" + "---:|---:|" * len(regs))
rows = [("no manifest traffic", "baseline")] + [(s, s) for s in sizes]
for label, key in rows:
    cells = []
    for r in regs:
        x = res[r].get(key, {})
        put = "-" if key == "baseline" else "%s / %s" % (cell(x.get("put_p50_ms")), cell(x.get("put_p99_ms")))
        cells += [put, "%s / %s" % (cell(x.get("blob_p50_ms")), cell(x.get("blob_p99_ms")))]
    print("| %s | %s |" % (label, " | ".join(cells)))
lags = [(s, res["pier"][s].get("index_lag_ms")) for s in sizes if "pier" in res and s in res["pier"]]
if lags:
    print("\npier index.json lag after the last PUT (ms): " + ", ".join("%s tags: %s" % (s, l) for s, l in lags))
for r in regs:
    p = [res[r][s]["put_p50_ms"] for s in sizes if s in res[r]]
    if len(p) >= 2 and p[0]:
        print("\n%s: p50 at %s tags / p50 at %s tags = %.2f" % (r, sizes[-1], sizes[0], p[-1] / p[0]))
EOF
