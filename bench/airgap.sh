#!/usr/bin/env bash
# Air-gap throughput in one run (issue 13): export and import of one large image with pier,
# with `skopeo copy` to/from an `oci-archive:`, and with the docker engine's `docker save` /
# `docker load`, side by side on the same image, machine and moment.
#
#   bash bench/airgap.sh                                  # 4 GiB layer (the issue's size)
#   BENCH_AIRGAP_MB=256 PIER_BIN=target/release/pier bash bench/airgap.sh
#
# The image: one uncompressed layer tar holding one file of BENCH_AIRGAP_MB MiB of incompressible
# bytes (AES-CTR of zeros; a real tar so that the engine can unpack it), plus a small config.
#
# export  pier export (daemon, tar)      `pier export REF -o FILE` through the running daemon
#         pier export (daemon, --zstd)   the same, compressed
#         skopeo copy docker:// -> oci-archive:   from the same pier over HTTP, digests kept
#                                        (--preserve-digests: the layer is copied as it is)
#         docker save                    from a private engine that pulled the image from pier
# import  pier import (daemon, tar)      pier's bundle into an empty store through its daemon
#         pier import (daemon, zstd)     the compressed bundle, likewise
#         skopeo copy oci-archive: -> docker://   skopeo's archive into another empty pier
#         docker load                    docker save's archive into the engine after `docker rmi`
#         docker load (of pier's bundle) pier's bundle, likewise (the engine reads it too)
# other   docker pull from pier          (how the engine got the image; not compared)
#
# Each step: wall time of the command, MiB/s of the image's bytes (layer + config + manifest,
# the same number for every row), the time including the `sync` that follows (until the data
# is on disk: pier fsyncs what it commits before it answers; what else was left in the page
# cache shows here), CPU seconds of the client (/usr/bin/time) and of the daemon (utime+stime;
# for the engine also its reaped children: it unpacks in re-executed child processes), peak
# RSS of the client (/usr/bin/time) and of the daemon (VmHWM after `echo 5 >
# /proc/PID/clear_refs`, with its VmRSS before the step) and of the daemon's child processes
# started during the step (the engine's unpacking children: their summed VmRSS, sampled), and
# the disk space the step took under the work directory at its peak and at its end (sampled:
# temporary copies show as peak > end); bench/airgap.py samples every 200 ms. Ratios: a row's
# time and RSS (client + daemon + children) divided by those of the first pier row of its
# direction.
#
# The page cache is warm for every step (its input was just written). Needs: skopeo, dockerd
# and docker (Debian docker.io), python3, openssl, flock, /usr/bin/time, curl; about 6x the
# layer size free in BENCH_DIR. The private engine runs while this script holds the lock the
# tests hold (/tmp/pier-tests-dockerd.lock), so it never runs beside the tests' engines.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MB=${BENCH_AIRGAP_MB:-4096}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
LOCK=/tmp/pier-tests-dockerd.lock
DOCKERD=/usr/sbin/dockerd
DOCKER=/usr/bin/docker
PIER_BIN=${PIER_BIN:-}
if [[ -z $PIER_BIN ]]; then
    (cd "$ROOT" && cargo build --release --bin pier)
    PIER_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/pier
fi
PIER_BIN=$(realpath "$PIER_BIN")
for tool in skopeo python3 openssl flock curl /usr/bin/time "$DOCKERD" "$DOCKER"; do
    command -v "$tool" >/dev/null || { echo "bench/airgap.sh needs $tool" >&2; exit 1; }
done
HELPER="python3 $ROOT/bench/airgap.py"

# Peak disk use, 5x the layer: e.g. skopeo's export (the source store, both of pier's
# bundles, skopeo's temporary layout and its archive) and docker save (the source store, pier's
# bundle, the engine's layer, its temporary copy, docker's archive). Asked: 6x, a margin.
need_kib=$((MB * 1024 * 6))
free_kib=$(df -Pk "$BENCH_DIR" | awk 'NR == 2 {print $4}')
if ((free_kib < need_kib)); then
    echo "bench/airgap.sh: $BENCH_DIR has $((free_kib / 1024)) MiB free; a $MB MiB layer needs" \
        "about $((need_kib / 1024)) MiB (6x). Set BENCH_DIR or a smaller BENCH_AIRGAP_MB." >&2
    exit 1
fi

W=$(mktemp -d "$BENCH_DIR/pier-airgap.XXXXXX")
# The engine's socket path must fit sun_path (108 bytes): its run directory is short.
E=$(mktemp -d /tmp/pier-airgap-engine.XXXXXX)
declare -A PIERS=() # name -> pid
DPID=
LOCKED=0

stop_pier() {
    local pid=${PIERS[$1]:-}
    [[ -n $pid ]] || return 0
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "PIERS[$1]"
}
stop_engine() {
    [[ -n $DPID ]] || return 0
    kill "$DPID" 2>/dev/null || true
    local i
    for i in $(seq 300); do
        kill -0 "$DPID" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$DPID" 2>/dev/null || true
    wait "$DPID" 2>/dev/null || true
    DPID=
    # nothing of the engine may stay mounted under its directories before they are removed
    local m
    for m in $(awk -v w="$W" -v e="$E" 'index($2, w) == 1 || index($2, e) == 1 {print $2}' /proc/mounts | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
    if ((LOCKED)); then
        flock -u 9
        exec 9>&-
        LOCKED=0
    fi
}
cleanup() {
    local rc=$?
    set +e
    [[ -n ${SAMPLER:-} ]] && kill "$SAMPLER" 2>/dev/null
    local name
    for name in "${!PIERS[@]}"; do stop_pier "$name"; done
    if [[ -n $DPID && $rc != 0 ]]; then
        echo "--- dockerd log (tail) ---" >&2
        tail -20 "$E/dockerd.log" >&2
    fi
    stop_engine
    rm -rf "$W" "$E"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
# start_pier NAME: a pier daemon on a fresh data directory $W/NAME; sets PORT_NAME.
start_pier() {
    local name=$1 port
    port=$(free_port)
    rm -rf "${W:?}/$name"
    cat >"$W/$name.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $W/$name
http:
  addr: 127.0.0.1:$port
EOF
    "$PIER_BIN" serve --config "$W/$name.yml" 2>>"$W/$name.log" &
    PIERS[$name]=$!
    printf -v "PORT_$name" %s "$port"
    local i
    for i in $(seq 100); do
        curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && return
        sleep 0.1
    done
    echo "pier $name did not start:" >&2
    cat "$W/$name.log" >&2
    exit 1
}
# manifest_digest PORT: the digest pier serves for bench/big:v1 (empty when none).
manifest_digest() {
    curl -fsSI "http://127.0.0.1:$1/v2/bench/big/manifests/v1" \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json' 2>/dev/null |
        awk 'tolower($1) == "docker-content-digest:" {print $2}' | tr -d '\r'
}
check_pier_has_image() {
    local got
    got=$(manifest_digest "$1")
    [[ $got == "$MANIFEST" ]] || { echo "$2: pier serves bench/big:v1 as '$got', expected $MANIFEST" >&2; exit 1; }
}

# the engine's client, as a command (step runs it under /usr/bin/time)
DOCKER_CMD=(env "DOCKER_HOST=unix://$E/docker.sock" "DOCKER_CONFIG=$E/client" "$DOCKER")
docker_() { "${DOCKER_CMD[@]}" "$@"; }
start_engine() {
    exec 9>>"$LOCK"
    if ! flock -n 9; then
        echo "== waiting for $LOCK (another engine runs: the tests')"
        flock -w 3600 9 || { echo "no engine lock after an hour" >&2; exit 1; }
    fi
    LOCKED=1
    echo '{}' >"$E/daemon.json"
    # 9>&- : the engine does not hold the lock itself (this script does, until it stopped it)
    "$DOCKERD" --config-file "$E/daemon.json" --data-root "$W/engine" --exec-root "$E/exec" \
        -H "unix://$E/docker.sock" --pidfile "$E/dockerd.pid" --storage-driver=vfs \
        --bridge=none --iptables=false >"$E/dockerd.log" 2>&1 9>&- &
    DPID=$!
    local i
    for i in $(seq 600); do
        docker_ version --format '{{.Server.Version}}' >/dev/null 2>&1 && return
        kill -0 "$DPID" 2>/dev/null || break
        sleep 0.1
    done
    echo "dockerd did not answer:" >&2
    tail -20 "$E/dockerd.log" >&2
    exit 1
}

# cpu_ticks PID: utime+stime+cutime+cstime of PID.
cpu_ticks() { awk '{print $14 + $15 + $16 + $17}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

RESULTS=$W/results.tsv
: >"$RESULTS"
# step DIRECTION NAME DAEMON_PID|- COMMAND...: runs and measures COMMAND (see the header).
step() {
    local dir=$1 name=$2 dpid=$3
    shift 3
    sync
    local cpu0=0 drss0=-
    if [[ $dpid != - ]]; then
        echo 5 >"/proc/$dpid/clear_refs"
        drss0=$(awk '/^VmRSS/ {print $2}' "/proc/$dpid/status")
        cpu0=$(cpu_ticks "$dpid")
    fi
    rm -f "$W/disk" "$W/disk.ready"
    $HELPER sample "$W/disk" "$dpid" "$W" &
    SAMPLER=$!
    while [[ ! -e $W/disk.ready ]]; do sleep 0.05; done
    local t0 t1 t2
    t0=$(date +%s.%N)
    /usr/bin/time -f '%U %S %M' -o "$W/time" "$@" >"$W/step.out" 2>"$W/step.err" || {
        echo "$name failed:" >&2
        cat "$W/step.out" "$W/step.err" >&2
        exit 1
    }
    t1=$(date +%s.%N)
    sync
    t2=$(date +%s.%N)
    kill "$SAMPLER"
    wait "$SAMPLER" || true
    SAMPLER=
    local cu cs crss base peak last children dcpu=- drss=-
    read -r cu cs crss <"$W/time"
    read -r base peak last children <"$W/disk"
    if [[ $dpid != - ]]; then
        dcpu=$(python3 -c "print(($(cpu_ticks "$dpid") - $cpu0) / $TICK)")
        drss=$(awk '/^VmHWM/ {print $2}' "/proc/$dpid/status")
    fi
    local secs sync_secs ccpu
    secs=$(python3 -c "print($t1 - $t0)")
    sync_secs=$(python3 -c "print($t2 - $t1)")
    ccpu=$(python3 -c "print($cu + $cs)")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$dir" "$name" "$IMAGE_BYTES" \
        "$secs" "$sync_secs" "$ccpu" "$dcpu" "$crss" "$drss" "$((peak - base))" "$((last - base))" \
        "$drss0" "$children" >>"$RESULTS"
    printf '   %-44s %7.1f s %7.0f MiB/s\n' "$name" "$secs" "$(python3 -c "print($IMAGE_BYTES / 2**20 / $secs)")"
}

echo "== bench/airgap.sh: $MB MiB layer, work dir $W"
echo "   pier: $PIER_BIN ($(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo '?'))"
echo "   $(skopeo --version); $("$DOCKERD" --version); $(uname -sr); $(nproc) CPUs; load $(cut -d' ' -f1-3 /proc/loadavg)"
df -h "$BENCH_DIR" | tail -1 | awk '{print "   " $6 ": " $4 " free of " $2}'

echo "== generating the image"
# skopeo's oci-archive: transport writes a whole temporary OCI layout first (export) or
# unpacks the archive into one (import), in /var/tmp unless --tmpdir: under $W it is counted
mkdir -p "$W/gen" "$W/out" "$W/tmp"
{ openssl enc -aes-128-ctr -pass pass:pier-airgap -nosalt -pbkdf2 </dev/zero 2>/dev/null || true; } |
    $HELPER layer "$((MB << 20))" "$W/gen/layer.tar"
MANIFEST=$(python3 "$ROOT/bench/mkoci.py" layout "$W/gen/oci" "$W/gen/layer.tar" bench/big:v1)
IMAGE_BYTES=$(find "$W/gen/oci/blobs" -type f -printf '%s\n' | awk '{s += $1} END {printf "%.0f\n", s}')
CONFIG=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["config"]["digest"])' \
    "$W/gen/oci/blobs/sha256/${MANIFEST#sha256:}")
LAYER=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["layers"][0]["digest"])' \
    "$W/gen/oci/blobs/sha256/${MANIFEST#sha256:}")
echo "   manifest $MANIFEST, $IMAGE_BYTES bytes of blobs"
start_pier src
"$PIER_BIN" import "$W/gen/oci" --config "$W/src.yml" >/dev/null
rm -rf "$W/gen"
check_pier_has_image "$PORT_src" "the source pier"
cat "$W"/src/blobs/*/*/* >/dev/null 2>&1 || true

echo "== export"
step export "pier export (daemon, tar)" "${PIERS[src]}" \
    "$PIER_BIN" export bench/big:v1 -o "$W/out/pier.tar" --config "$W/src.yml"
step export "pier export (daemon, --zstd)" "${PIERS[src]}" \
    "$PIER_BIN" export bench/big:v1 --zstd -o "$W/out/pier.tar.zst" --config "$W/src.yml"
# --preserve-digests: skopeo may not recompress the (uncompressed) layer, and does not;
# --dest-oci-accept-uncompressed-layers says the same to the OCI destination.
step export "skopeo copy docker:// -> oci-archive:" "${PIERS[src]}" \
    skopeo --tmpdir "$W/tmp" --insecure-policy copy --quiet --preserve-digests --dest-oci-accept-uncompressed-layers \
    --src-tls-verify=false "docker://127.0.0.1:$PORT_src/bench/big:v1" "oci-archive:$W/out/skopeo.tar:bench/big:v1"
# (the listing first: `tar | grep -q` fails under pipefail when grep stops reading early)
listing=$(tar -tf "$W/out/skopeo.tar")
grep -q "blobs/sha256/${LAYER#sha256:}" <<<"$listing" ||
    { echo "skopeo's archive does not hold the layer as it is (recompressed?)" >&2; exit 1; }

echo "== import"
start_pier dst
step import "pier import (daemon, tar)" "${PIERS[dst]}" \
    "$PIER_BIN" import "$W/out/pier.tar" --config "$W/dst.yml"
check_pier_has_image "$PORT_dst" "pier import"
stop_pier dst
start_pier dst
step import "pier import (daemon, zstd)" "${PIERS[dst]}" \
    "$PIER_BIN" import "$W/out/pier.tar.zst" --config "$W/dst.yml"
check_pier_has_image "$PORT_dst" "pier import (zstd)"
stop_pier dst
rm -rf "$W/dst" "$W/out/pier.tar.zst"
start_pier dst
step import "skopeo copy oci-archive: -> docker://pier" "${PIERS[dst]}" \
    skopeo --tmpdir "$W/tmp" --insecure-policy copy --quiet --preserve-digests --dest-tls-verify=false \
    "oci-archive:$W/out/skopeo.tar:bench/big:v1" "docker://127.0.0.1:$PORT_dst/bench/big:v1"
check_pier_has_image "$PORT_dst" "skopeo copy"
stop_pier dst
rm -rf "$W/dst" "$W/out/skopeo.tar"

echo "== docker engine (vfs)"
start_engine
REF=127.0.0.1:$PORT_src/bench/big:v1 # loopback registries are plain HTTP to the engine
step other "docker pull from pier (the engine's copy)" "$DPID" "${DOCKER_CMD[@]}" pull -q "$REF"
step export "docker save" "$DPID" "${DOCKER_CMD[@]}" save -o "$W/out/docker.tar" "$REF"
stop_pier src
rm -rf "$W/src"
# the engine must not have the image before each load
forget_image() {
    docker_ rmi -f "$1" >/dev/null
    if docker_ image inspect "$1" >/dev/null 2>&1 || [[ -n $(docker_ image ls -aq) ]]; then
        echo "the engine still has an image after docker rmi" >&2
        exit 1
    fi
}
check_engine_has_image() {
    local id
    id=$(docker_ image inspect --format '{{.Id}}' "$1")
    [[ $id == "$CONFIG" ]] || { echo "$2: the engine has $1 as $id, expected $CONFIG" >&2; exit 1; }
}
forget_image "$REF"
step import "docker load" "$DPID" "${DOCKER_CMD[@]}" load -q -i "$W/out/docker.tar"
check_engine_has_image "$REF" "docker load"
forget_image "$REF"
rm -f "$W/out/docker.tar"
step import "docker load (of pier's bundle)" "$DPID" "${DOCKER_CMD[@]}" load -q -i "$W/out/pier.tar"
check_engine_has_image bench/big:v1 "docker load of pier's bundle"
stop_engine
rm -rf "$W/engine"

echo
echo "## bench/airgap.sh: $MB MiB layer ($IMAGE_BYTES bytes of blobs), $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
$HELPER report "$RESULTS"
if [[ -n ${BENCH_AIRGAP_TSV:-} ]]; then
    cp "$RESULTS" "$BENCH_AIRGAP_TSV"
fi
