#!/usr/bin/env bash
# pier vs Distribution (Debian's docker-registry) benchmark, one run, same generated data.
# Usage: bash bench/run.sh        (see bench/README.md for the BENCH_* knobs)
set -euo pipefail

BENCH_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_SRC/.." && pwd)

# ---------------------------------------------------------------- knobs
BENCH_DIR=${BENCH_DIR:-$BENCH_SRC/out}
QUICK=${BENCH_QUICK:-0}
if [[ $QUICK == 1 ]]; then
    SMALL_MB=${BENCH_SMALL_MB:-64}
    LARGE_MB=${BENCH_LARGE_MB:-256}
    MIN_FREE_GB=${BENCH_MIN_FREE_GB:-0}
else
    SMALL_MB=${BENCH_SMALL_MB:-1024}
    LARGE_MB=${BENCH_LARGE_MB:-4096}
    MIN_FREE_GB=${BENCH_MIN_FREE_GB:-20}
fi
ONLY=${BENCH_ONLY:-}                     # "", pier or distribution
WRK_THREADS=${BENCH_WRK_THREADS:-2}
WRK_CONNS=${BENCH_WRK_CONNS:-32}
WRK_DURATION=${BENCH_WRK_DURATION:-10s}
GET_REPEAT=${BENCH_GET_REPEAT:-3}
START_REPEAT=${BENCH_START_REPEAT:-5}
BCRYPT_COST=${BENCH_BCRYPT_COST:-10}     # htpasswd -B -C cost for the auth phase (4..17)
VERIFY=${BENCH_VERIFY:-1}
KEEP=${BENCH_KEEP:-0}
RSS_SAMPLE=${BENCH_RSS_SAMPLE:-0}        # 1: force the VmRSS sampler instead of clear_refs
DISTRIBUTION_BIN=${DISTRIBUTION_BIN:-/usr/bin/docker-registry}
PIER_BIN=${PIER_BIN:-}                   # set to skip `cargo build --release`
PIER_BIN_GIVEN=${PIER_BIN:+1}
PHASES=${BENCH_PHASES:-core,hostile}     # comma-separated: core (push/PUT/GET/wrk/auth/nginx), hostile; not default: tags (bench/tags.sh), scale (bench/scale.sh), gc (bench/gc.sh)
# hostile phase (bench/hostile.py): attack sizes, how long each attack holds, the victim client
if [[ $QUICK == 1 ]]; then H_DURATION=${BENCH_HOSTILE_DURATION:-10}; else H_DURATION=${BENCH_HOSTILE_DURATION:-20}; fi
H_AFTER=${BENCH_HOSTILE_AFTER:-5}                    # RSS is read this long after the attackers left
H_ATTACKS=${BENCH_HOSTILE_ATTACKS:-readers,writers,h2}
H_READERS=${BENCH_HOSTILE_READERS:-600}
H_RCVBUF=${BENCH_HOSTILE_RCVBUF:-4096}
H_WRITERS=${BENCH_HOSTILE_WRITERS:-530}
H_ANNOUNCE=${BENCH_HOSTILE_ANNOUNCE:-10000000}
H_SEND=${BENCH_HOSTILE_SEND:-100}
H_H2_CONNS=${BENCH_HOSTILE_H2_CONNS:-3}
H_H2_STREAMS=${BENCH_HOSTILE_H2_STREAMS:-200}
H_H2_TRANSPORT=${BENCH_HOSTILE_H2_TRANSPORT:-tls}     # tls (both registries) or h2c (pier only)
H_BLOB_MB=${BENCH_HOSTILE_BLOB_MB:-32}
H_TIMEOUT=${BENCH_HOSTILE_TIMEOUT:-10}               # victim request timeout, seconds
H_VICTIM_ADDR=${BENCH_HOSTILE_VICTIM_ADDR:-127.0.0.2}
H_VICTIM_INTERVAL_MS=${BENCH_HOSTILE_VICTIM_INTERVAL_MS:-10}
H_VICTIM_KEEPALIVE=${BENCH_HOSTILE_VICTIM_KEEPALIVE:-0}
H_SOURCES=${BENCH_HOSTILE_SOURCES:-1}                # attackers' source addresses (1: one client)
H_PYTHON=${BENCH_PYTHON_H2:-}                        # a python3 that can `import h2`

case $ONLY in
    "") REGISTRIES=(pier distribution) ;;
    pier | distribution) REGISTRIES=("$ONLY") ;;
    *) echo "BENCH_ONLY must be empty, 'pier' or 'distribution' (got '$ONLY')" >&2; exit 2 ;;
esac
for v in SMALL_MB LARGE_MB WRK_THREADS WRK_CONNS GET_REPEAT START_REPEAT MIN_FREE_GB; do
    [[ ${!v} =~ ^[1-9][0-9]*$ || ( $v == MIN_FREE_GB && ${!v} == 0 ) ]] \
        || { echo "$v must be a positive integer (got '${!v}')" >&2; exit 2; }
done
[[ $BCRYPT_COST =~ ^[0-9]+$ ]] && ((BCRYPT_COST >= 4 && BCRYPT_COST <= 17)) \
    || { echo "BENCH_BCRYPT_COST must be an integer from 4 to 17 (got '$BCRYPT_COST')" >&2; exit 2; }
RUN_CORE=0
RUN_HOSTILE=0
RUN_TAGS=0
RUN_SCALE=0
RUN_GC=0
IFS=, read -ra _phases <<<"$PHASES"
for _p in "${_phases[@]}"; do
    case $_p in
        core) RUN_CORE=1 ;;
        hostile) RUN_HOSTILE=1 ;;
        tags) RUN_TAGS=1 ;;
        scale) RUN_SCALE=1 ;;
        gc) RUN_GC=1 ;;
        *) echo "BENCH_PHASES must be a comma-separated list of 'core', 'hostile', 'tags', 'scale' and 'gc' (got '$PHASES')" >&2; exit 2 ;;
    esac
done
((RUN_CORE || RUN_HOSTILE || RUN_TAGS || RUN_SCALE || RUN_GC)) || { echo "BENCH_PHASES selects no phase (got '$PHASES')" >&2; exit 2; }
IFS=, read -ra H_ATTACK_LIST <<<"$H_ATTACKS"
for _a in "${H_ATTACK_LIST[@]}"; do
    [[ $_a == readers || $_a == writers || $_a == h2 ]] \
        || { echo "BENCH_HOSTILE_ATTACKS must be a comma-separated list of readers, writers, h2 (got '$H_ATTACKS')" >&2; exit 2; }
done
for v in H_DURATION H_AFTER H_READERS H_RCVBUF H_WRITERS H_ANNOUNCE H_SEND H_H2_CONNS H_H2_STREAMS \
    H_BLOB_MB H_TIMEOUT H_VICTIM_INTERVAL_MS H_SOURCES; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "BENCH_HOSTILE_${v#H_} must be a non-negative integer (got '${!v}')" >&2; exit 2; }
done
((H_SEND < H_ANNOUNCE)) || { echo "BENCH_HOSTILE_SEND must be below BENCH_HOSTILE_ANNOUNCE" >&2; exit 2; }
[[ $H_H2_TRANSPORT == tls || $H_H2_TRANSPORT == h2c ]] \
    || { echo "BENCH_HOSTILE_H2_TRANSPORT must be 'tls' or 'h2c' (got '$H_H2_TRANSPORT')" >&2; exit 2; }
[[ $H_VICTIM_KEEPALIVE == 0 || $H_VICTIM_KEEPALIVE == 1 ]] \
    || { echo "BENCH_HOSTILE_VICTIM_KEEPALIVE must be 0 or 1 (got '$H_VICTIM_KEEPALIVE')" >&2; exit 2; }

RUN=$BENCH_DIR/run          # big, removed at the end
LOGS=$BENCH_DIR/logs        # small, kept
RESULTS=$BENCH_DIR/results.tsv
REPO_SMALL=bench/small
REPO_LARGE=bench/large
REPO_RAW=bench/raw
TAG=bench
MANIFEST_ACCEPT='application/vnd.oci.image.manifest.v1+json'
AUTH_USER=bench
AUTH_REALM=bench

# ---------------------------------------------------------------- helpers
log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { printf '[bench %s] ERROR: %s\n' "$(date +%T)" "$*" >&2; exit 1; }

declare -A R=()          # results: key -> value
NOTES=()
note() { NOTES+=("$*"); log "NOTE: $*"; }

CHILDREN=()              # pids to kill on exit
SERVER_PID=""
SERVER_NAME=""
NGINX_PID=""
SAMPLER_PID=""

proc_alive() { # pid -> 0 if running (not a zombie)
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    s=${s##*) }
    [[ ${s:0:1} != Z && ${s:0:1} != X ]]
}

stop_pid() { # pid [name]: TERM, wait up to 15 s, then KILL; reaps if it is our child
    local pid=$1 i
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        proc_alive "$pid" || break
        sleep 0.1
    done
    if proc_alive "$pid"; then
        log "${2:-pid $pid} did not exit on SIGTERM within 15 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    local pid
    for pid in "$SAMPLER_PID" "$SERVER_PID" "$NGINX_PID" "${CHILDREN[@]}"; do
        [[ -n $pid ]] && proc_alive "$pid" && stop_pid "$pid"
    done
    if [[ -d $RUN ]]; then
        if [[ $KEEP == 1 ]]; then
            log "BENCH_KEEP=1: leaving $RUN in place ($(du -sh "$RUN" 2>/dev/null | cut -f1))"
        else
            rm -rf "$RUN"
        fi
    fi
    if ((rc != 0)); then
        log "benchmark FAILED (exit $rc); logs are in $LOGS"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

now() { echo "$EPOCHREALTIME"; }
calc() { awk "BEGIN { printf \"%.6f\", $* }"; }

mbs() { # bytes seconds -> MiB/s
    awk -v b="$1" -v s="$2" 'BEGIN { if (s <= 0) s = 1e-9; printf "%.3f", b / 1048576 / s }'
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

status_kb() { # pid field -> kB value of a /proc/PID/status field (VmRSS, VmHWM)
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

cpu_ticks() { # pid -> "minflt utime stime" (minor page faults; clock ticks; all threads)
    local s f
    s=$(<"/proc/$1/stat")
    s=${s##*) }          # drop "pid (comm) "; field 3 (state) becomes f[0]
    read -ra f <<<"$s"
    echo "${f[7]} ${f[11]} ${f[12]}"
}

# Peak RSS of the running server for one phase: peak_begin; ...; peak_end -> $PEAK_KB.
PEAK_MODE=""
peak_begin() {
    if [[ $PEAK_MODE == hwm ]]; then
        echo 5 >"/proc/$SERVER_PID/clear_refs"
    else
        rm -f "$RUN/rss.peak"
        python3 "$BENCH_SRC/rss_sampler.py" "$SERVER_PID" "$RUN/rss.peak" &
        SAMPLER_PID=$!
        sleep 0.1
    fi
}
choose_peak_mode() { # once, with a server running: clear_refs + VmHWM if writable, else the sampler
    [[ -z $PEAK_MODE ]] || return 0
    if [[ $RSS_SAMPLE != 1 ]] && echo 5 >"/proc/$SERVER_PID/clear_refs" 2>/dev/null; then
        PEAK_MODE=hwm
    else
        PEAK_MODE=sample
        note "peak RSS sampled from VmRSS every 50 ms (clear_refs not used/writable): short spikes may be missed"
    fi
}
peak_end() {
    if [[ $PEAK_MODE == hwm ]]; then
        PEAK_KB=$(status_kb "$SERVER_PID" VmHWM)
    else
        stop_pid "$SAMPLER_PID"
        SAMPLER_PID=""
        PEAK_KB=$(cat "$RUN/rss.peak" 2>/dev/null || echo "")
    fi
}

# ---------------------------------------------------------------- prerequisites
ensure_packages() {
    local -A need=([docker-registry]=docker-registry [skopeo]=skopeo [nginx]=nginx [wrk]=wrk
        [curl]=curl [openssl]=openssl [python3]=python3 [awk]=gawk [htpasswd]=apache2-utils)
    local cmd pkgs=()
    for cmd in "${!need[@]}"; do
        command -v "$cmd" >/dev/null 2>&1 || [[ -x /usr/sbin/$cmd ]] || pkgs+=("${need[$cmd]}")
    done
    if ((${#pkgs[@]})); then
        ((EUID == 0)) || die "missing packages (${pkgs[*]}) and not root: apt-get install -y ${pkgs[*]}"
        log "installing ${pkgs[*]} (apt-get update first)"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$LOGS/apt.log" 2>&1 \
            || die "apt-get update failed; see $LOGS/apt.log"
        # nginx's/docker-registry's postinst may try to start the system service; that may fail
        # harmlessly in a container, so check the binaries rather than trusting the exit status.
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}" \
            >>"$LOGS/apt.log" 2>&1 || log "apt-get install returned non-zero; checking binaries"
    fi
    for cmd in skopeo wrk curl openssl python3 awk htpasswd base64; do
        command -v "$cmd" >/dev/null 2>&1 || die "'$cmd' not found even after apt-get install; see $LOGS/apt.log"
    done
    NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
    [[ -x $NGINX_BIN ]] || die "nginx not found; see $LOGS/apt.log"
    [[ -x $DISTRIBUTION_BIN ]] || die "Distribution binary $DISTRIBUTION_BIN not found (apt-get install docker-registry)"
    [[ $(getconf CLK_TCK) =~ ^[0-9]+$ ]] || die "getconf CLK_TCK failed"
}

build_pier() {
    if [[ -n $PIER_BIN ]]; then
        [[ -x $PIER_BIN ]] || die "PIER_BIN=$PIER_BIN is not executable"
        return
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        [[ -x $HOME/.cargo/bin/cargo ]] && PATH=$HOME/.cargo/bin:$PATH
    fi
    command -v cargo >/dev/null 2>&1 || die "cargo not found (needed to build pier)"
    log "building pier: cargo build --release (log: $LOGS/cargo-build.log)"
    if ! (cd "$ROOT" && cargo build --release) >"$LOGS/cargo-build.log" 2>&1; then
        tail -n 30 "$LOGS/cargo-build.log" >&2
        die "cargo build --release failed (full log: $LOGS/cargo-build.log)"
    fi
    PIER_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/pier
    [[ -x $PIER_BIN ]] || die "build succeeded but $PIER_BIN is missing"
}

check_disk() {
    local need_mb avail_kb avail_mb floor_mb
    # generated data (2 images + raw blob) + one registry's copy of it at a time + margin
    need_mb=$((2 * (SMALL_MB + 2 * LARGE_MB) + 1024))
    floor_mb=$((MIN_FREE_GB * 1024))
    ((need_mb > floor_mb)) || need_mb=$floor_mb
    avail_kb=$(df -Pk "$BENCH_DIR" | awk 'NR == 2 { print $4 }')
    avail_mb=$((avail_kb / 1024))
    if ((avail_mb < need_mb)); then
        die "not enough free disk in $BENCH_DIR: $((avail_mb / 1024)) GiB free, need $((need_mb / 1024)) GiB (set BENCH_DIR elsewhere, or BENCH_QUICK=1)"
    fi
    log "free disk in $BENCH_DIR: $((avail_mb / 1024)) GiB (need ~$((need_mb / 1024)) GiB)"
}

# ---------------------------------------------------------------- data
gen_random() { # file MiB: incompressible bytes (AES-CTR keystream with a random key)
    local key
    key=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
    # openssl dies of SIGPIPE when head has enough; that is expected
    (openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass "pass:$key" </dev/zero 2>/dev/null || true) \
        | head -c $(($2 * 1048576)) >"$1"
    [[ $(stat -c %s "$1") == $(($2 * 1048576)) ]] || die "generating $1 failed (short file)"
}

generate_data() {
    local gen=$RUN/gen t0
    mkdir -p "$gen/www" "$gen/small" "$gen/large"
    log "generating ${SMALL_MB} MiB + ${LARGE_MB} MiB layers and a ${LARGE_MB} MiB raw blob"
    t0=$(now)
    local p1 p2 p3
    gen_random "$gen/small.layer" "$SMALL_MB" & p1=$!
    gen_random "$gen/large.layer" "$LARGE_MB" & p2=$!
    gen_random "$gen/www/raw.bin" "$LARGE_MB" & p3=$!
    CHILDREN+=("$p1" "$p2" "$p3")
    wait "$p1" && wait "$p2" && wait "$p3" || die "data generation failed"
    log "generated in $(calc "$(now) - $t0")s; building OCI layouts and hashing"
    SMALL_OCI=$gen/small
    LARGE_OCI=$gen/large
    SMALL_MANIFEST=$(python3 "$BENCH_SRC/mkoci.py" layout "$SMALL_OCI" "$gen/small.layer" "$TAG") \
        || die "building the small OCI layout failed"
    LARGE_MANIFEST=$(python3 "$BENCH_SRC/mkoci.py" layout "$LARGE_OCI" "$gen/large.layer" "$TAG") \
        || die "building the large OCI layout failed"
    RAW_FILE=$gen/www/raw.bin
    RAW_HEX=$(python3 "$BENCH_SRC/mkoci.py" sha256 "$RAW_FILE") || die "hashing the raw blob failed"
    RAW_BYTES=$(stat -c %s "$RAW_FILE")
    SMALL_BYTES=$((SMALL_MB * 1048576))
    LARGE_BYTES=$((LARGE_MB * 1048576))
    log "data ready: small manifest $SMALL_MANIFEST, large manifest $LARGE_MANIFEST, raw sha256:$RAW_HEX"
}

make_htpasswd() { # -> HTPASSWD_FILE, AUTH_PASS, AUTH_B64: one bcrypt user for both registries
    HTPASSWD_FILE=$RUN/htpasswd
    AUTH_PASS=$(openssl rand -hex 16) || die "openssl rand failed"
    htpasswd -Bbn -C "$BCRYPT_COST" "$AUTH_USER" "$AUTH_PASS" 2>"$LOGS/htpasswd.log" >"$RUN/htpasswd.out" \
        || die "htpasswd failed; see $LOGS/htpasswd.log"
    sed '/^$/d' "$RUN/htpasswd.out" >"$HTPASSWD_FILE"
    local cost line
    printf -v cost '%02d' "$BCRYPT_COST"
    line=$(<"$HTPASSWD_FILE")
    [[ $line == "$AUTH_USER:\$2"[aby]"\$$cost\$"* && $line != *$'\n'* ]] \
        || die "htpasswd did not write one bcrypt cost-$BCRYPT_COST entry for '$AUTH_USER' ($HTPASSWD_FILE)"
    AUTH_B64=$(printf '%s:%s' "$AUTH_USER" "$AUTH_PASS" | base64 -w0)
    log "htpasswd: user '$AUTH_USER', bcrypt cost $BCRYPT_COST, in $HTPASSWD_FILE"
}

# ---------------------------------------------------------------- registries
launch_server() { # name config: starts the registry in the background -> SERVER_PID, SERVER_NAME
    case $1 in
        pier) "$PIER_BIN" serve --config "$2" >>"$LOGS/$1.log" 2>&1 & ;;
        distribution) "$DISTRIBUTION_BIN" serve "$2" >>"$LOGS/$1.log" 2>&1 & ;;
    esac
    SERVER_PID=$!
    SERVER_NAME=$1
}

write_config() { # file datadir port
    cat >"$1" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $2
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$3
EOF
}

write_auth_config() { # file datadir port: write_config plus htpasswd auth
    write_config "$@"
    cat >>"$1" <<EOF
auth:
  htpasswd:
    realm: $AUTH_REALM
    path: $HTPASSWD_FILE
EOF
}

start_server() { # name config port [accepted status(es) of GET /v2/, default 200] -> SERVER_PID, START_MS
    local name=$1 cfg=$2 port=$3 accept=${4:-200} ready=$RUN/poll.ready out=$RUN/poll.out pidf=$RUN/poll.pid
    local poller t0 t1
    rm -f "$ready" "$out" "$pidf"
    port_must_be_free "$port"
    python3 "$BENCH_SRC/startwait.py" "$port" "$ready" "$pidf" 60 "$accept" >"$out" 2>"$RUN/poll.err" &
    poller=$!
    CHILDREN+=("$poller")
    while [[ ! -e $ready ]]; do
        proc_alive "$poller" || die "readiness poller failed: $(cat "$RUN/poll.err")"
        sleep 0.01
    done
    sleep 0.05 # let the poller reach its loop
    echo "=== start $(date +%T) ===" >>"$LOGS/$name.log"
    t0=$EPOCHREALTIME
    launch_server "$name" "$cfg"
    echo "$SERVER_PID" >"$pidf"
    if ! wait "$poller"; then
        tail -n 20 "$LOGS/$name.log" >&2 || true
        die "$name did not answer $accept on GET http://127.0.0.1:$port/v2/: $(cat "$RUN/poll.err") (log: $LOGS/$name.log)"
    fi
    t1=$(<"$out")
    START_MS=$(calc "($t1 - $t0) * 1000")
}

port_must_be_free() { # port: fail if something already listens there
    if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$1/" 2>/dev/null; then
        die "port $1 is already in use"
    fi
}

stop_server() {
    [[ -n $SERVER_PID ]] || return 0
    stop_pid "$SERVER_PID" "$SERVER_NAME"
    SERVER_PID=""
}

require_alive() { # phase
    proc_alive "$SERVER_PID" || die "$SERVER_NAME died during '$1' (log: $LOGS/$SERVER_NAME.log)"
}

median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { m = int((NR + 1) / 2); if (NR % 2) print a[m]; else printf "%.3f\n", (a[m] + a[m + 1]) / 2 }'; }

wrk_to_ms() { # "1.23ms" / "850.00us" / "1.02s" / "2.00m" -> ms
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.4f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.4f", v }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.4f", v * 1000 }
        else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.4f", v * 60000 }
        else if (v ~ /h$/) { sub(/h$/, "", v); printf "%.4f", v * 3600000 }
        else print "" }'
}

skopeo_push() { # name oci_dir repo bytes key
    local name=$1 oci=$2 repo=$3 bytes=$4 key=$5 t0 t1 secs
    log "$name: skopeo push $repo:$TAG ($((bytes / 1048576)) MiB)"
    peak_begin
    t0=$(now)
    if ! skopeo copy --quiet --preserve-digests --dest-tls-verify=false \
        "oci:$oci:$TAG" "docker://127.0.0.1:$PORT/$repo:$TAG" >>"$LOGS/$name.skopeo.log" 2>&1; then
        tail -n 20 "$LOGS/$name.skopeo.log" >&2
        die "$name: skopeo push of $repo failed (log: $LOGS/$name.skopeo.log)"
    fi
    t1=$(now)
    peak_end
    require_alive "push $repo"
    secs=$(calc "$t1 - $t0")
    R[$name.${key}_mbs]=$(mbs "$bytes" "$secs")
    R[$name.${key}_peak_kb]=$PEAK_KB
    log "$name: pushed in ${secs}s = ${R[$name.${key}_mbs]} MiB/s, peak RSS ${PEAK_KB} kB"
}

per_gib() { # count divisor -> count / divisor per GiB of the raw blob
    awk -v t="$1" -v d="$2" -v b="$RAW_BYTES" 'BEGIN { printf "%.4f", t / d / (b / 1073741824) }'
}

raw_put() { # name
    local name=$1 base=http://127.0.0.1:$PORT hdr=$RUN/post.hdr code loc sep out ticks f0 u0 s0 f1 u1 s1
    log "$name: monolithic PUT of ${LARGE_MB} MiB blob with curl"
    code=$(curl -sS -o "$RUN/post.body" -D "$hdr" -w '%{http_code}' -X POST \
        "$base/v2/$REPO_RAW/blobs/uploads/") || die "$name: POST blobs/uploads/ failed (curl error)"
    [[ $code == 202 ]] || die "$name: POST /v2/$REPO_RAW/blobs/uploads/ returned $code, expected 202: $(head -c 500 "$RUN/post.body")"
    loc=$(grep -i '^location:' "$hdr" | head -n1 | cut -d: -f2- | tr -d '\r' | sed 's/^ *//')
    [[ -n $loc ]] || die "$name: POST blobs/uploads/ answered 202 without a Location header"
    [[ $loc == /* ]] && loc=$base$loc
    [[ $loc == *\?* ]] && sep='&' || sep='?'
    peak_begin
    read -r f0 u0 s0 <<<"$(cpu_ticks "$SERVER_PID")"
    # -T streams the file (--data-binary would load it into memory); 'Expect:' drops curl's
    # 100-continue handshake so neither server is charged for curl's 1 s expect timeout.
    local w
    w=$(curl -sS -o "$RUN/put.body" -X PUT -T "$RAW_FILE" -H 'Expect:' \
        -H 'Content-Type: application/octet-stream' -w '%{http_code} %{time_total} %{size_upload}' \
        "$loc${sep}digest=sha256:$RAW_HEX") || die "$name: PUT upload failed (curl error)"
    read -r f1 u1 s1 <<<"$(cpu_ticks "$SERVER_PID")"
    peak_end
    require_alive "PUT blob"
    read -r code secs up <<<"$w"
    [[ $code == 201 ]] || die "$name: monolithic PUT returned $code, expected 201: $(head -c 500 "$RUN/put.body")"
    [[ $up == "$RAW_BYTES" ]] || die "$name: curl uploaded $up bytes, expected $RAW_BYTES"
    ticks=$((u1 - u0 + s1 - s0))
    R[$name.put_mbs]=$(mbs "$RAW_BYTES" "$secs")
    R[$name.put_cpu_s_per_gib]=$(per_gib "$ticks" "$(getconf CLK_TCK)")
    R[$name.put_user_s_per_gib]=$(per_gib $((u1 - u0)) "$(getconf CLK_TCK)")
    R[$name.put_sys_s_per_gib]=$(per_gib $((s1 - s0)) "$(getconf CLK_TCK)")
    R[$name.put_faults_per_gib]=$(per_gib $((f1 - f0)) 1)
    R[$name.put_peak_kb]=$PEAK_KB
    log "$name: PUT ${secs}s = ${R[$name.put_mbs]} MiB/s, server CPU ${ticks} ticks (${R[$name.put_cpu_s_per_gib]} s/GiB), peak RSS ${PEAK_KB} kB"
}

get_best() { # client(curl|py) url -> GET_BEST_MBS (best of GET_REPEAT); checks 200 + size
    local client=$1 url=$2 i w code size secs best=0 v
    for ((i = 0; i < GET_REPEAT; i++)); do
        if [[ $client == curl ]]; then
            w=$(curl -sS -o /dev/null -w '%{http_code} %{size_download} %{time_total}' "$url") \
                || die "GET $url failed (curl error)"
        else
            w=$(python3 "$BENCH_SRC/get.py" "$url") || die "GET $url failed (get.py error)"
        fi
        read -r code size secs <<<"$w"
        [[ $code == 200 ]] || die "GET $url returned $code, expected 200"
        [[ $size == "$RAW_BYTES" ]] || die "GET $url returned $size bytes, expected $RAW_BYTES"
        v=$(mbs "$size" "$secs")
        log "  GET ($client) #$((i + 1)): ${secs}s = $v MiB/s"
        best=$(awk -v a="$best" -v b="$v" 'BEGIN { print (b > a ? b : a) }')
    done
    GET_BEST_MBS=$best
}

raw_get() { # name
    local name=$1 url=http://127.0.0.1:$PORT/v2/$REPO_RAW/blobs/sha256:$RAW_HEX got
    log "$name: GET ${LARGE_MB} MiB blob with curl and get.py (best of $GET_REPEAT each)"
    peak_begin
    get_best curl "$url"
    R[$name.get_mbs]=$GET_BEST_MBS
    get_best py "$url"
    R[$name.get_py_mbs]=$GET_BEST_MBS
    peak_end
    require_alive "GET blob"
    R[$name.get_peak_kb]=$PEAK_KB
    log "$name: GET best ${R[$name.get_mbs]} MiB/s (curl), ${R[$name.get_py_mbs]} MiB/s (get.py), peak RSS ${PEAK_KB} kB"
    if [[ $VERIFY == 1 ]]; then
        got=$(curl -sS "$url" | python3 "$BENCH_SRC/mkoci.py" sha256 -) || die "$name: verification GET failed"
        [[ $got == "$RAW_HEX" ]] || die "$name: GET of sha256:$RAW_HEX returned content with sha256:$got"
        log "$name: GET content verified (sha256 matches)"
    fi
}

manifest_wrk() { # name [auth]: wrk on manifest GET by tag, without or with Basic credentials
    local name=$1 auth=${2:-} url=http://127.0.0.1:$PORT/v2/$REPO_SMALL/manifests/$TAG code out
    local key=wrk what="manifest GET" creds=() hdrs=(-H "Accept: $MANIFEST_ACCEPT")
    out=$LOGS/$name.wrk.txt
    if [[ -n $auth ]]; then
        key=wrk_auth
        what="manifest GET with auth"
        out=$LOGS/$name.wrk-auth.txt
        creds=(-u "$AUTH_USER:$AUTH_PASS")
        hdrs+=(-H "Authorization: Basic $AUTH_B64")
        code=$(curl -sS -o "$RUN/manifest.body" -w '%{http_code}' -H "Accept: $MANIFEST_ACCEPT" "$url") \
            || die "$name: manifest GET without credentials failed (curl error)"
        [[ $code == 401 ]] || die "$name: with auth on, GET $url without credentials returned $code, expected 401: $(head -c 500 "$RUN/manifest.body")"
        code=$(curl -sS -o "$RUN/manifest.body" -w '%{http_code}' -u "$AUTH_USER:wrong-$AUTH_PASS" \
            -H "Accept: $MANIFEST_ACCEPT" "$url") || die "$name: manifest GET with a wrong password failed (curl error)"
        [[ $code == 401 ]] || die "$name: with auth on, GET $url with a wrong password returned $code, expected 401"
    fi
    code=$(curl -sS -o "$RUN/manifest.body" -w '%{http_code}' "${creds[@]}" -H "Accept: $MANIFEST_ACCEPT" "$url") \
        || die "$name: $what failed (curl error)"
    [[ $code == 200 ]] || die "$name: $what $url returned $code, expected 200: $(head -c 500 "$RUN/manifest.body")"
    local got
    got=sha256:$(python3 "$BENCH_SRC/mkoci.py" sha256 "$RUN/manifest.body")
    [[ $got == "$SMALL_MANIFEST" ]] || die "$name: $what by tag has digest $got, pushed $SMALL_MANIFEST"
    [[ -z $auth ]] || log "$name: auth checked: 401 without credentials and with a wrong password, 200 + right digest with"
    log "$name: wrk -t$WRK_THREADS -c$WRK_CONNS -d$WRK_DURATION on $what by tag"
    peak_begin
    wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$WRK_DURATION" --latency "${hdrs[@]}" \
        "$url" >"$out" 2>&1 || { cat "$out" >&2; die "$name: wrk failed"; }
    peak_end
    require_alive "wrk ($what)"
    local rps p99 non2xx sockerr
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    p99=$(awk '$1 == "99%" { print $2 }' "$out")
    [[ -n $rps && -n $p99 ]] || { cat "$out" >&2; die "$name: could not parse wrk output ($out)"; }
    R[$name.${key}_rps]=$rps
    R[$name.${key}_p99_ms]=$(wrk_to_ms "$p99")
    R[$name.${key}_peak_kb]=$PEAK_KB
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    [[ -z $non2xx ]] || note "$name: wrk saw $non2xx non-2xx/3xx responses on $what (see $out)"
    sockerr=$(grep 'Socket errors:' "$out" | sed 's/^ *//' || true)
    if [[ -n $sockerr ]]; then
        local msg="$name: wrk ($what) $sockerr"
        [[ $sockerr =~ timeout\ [1-9] ]] \
            && msg+=" (responses slower than wrk's 2 s timeout count in req/s but are left out of its latency distribution, so that p99 is a lower bound)"
        note "$msg"
    fi
    log "$name: $what: ${rps} req/s, p99 ${p99}, peak RSS ${PEAK_KB} kB"
}

bench_registry() { # name
    local name=$1 data cfg i bin
    data=$RUN/reg-$name
    cfg=$RUN/$name.yml
    PORT=$(free_port)
    rm -rf "$data"
    mkdir -p "$data"
    write_config "$cfg" "$data" "$PORT"
    cp "$cfg" "$LOGS/$name.yml"
    : >"$LOGS/$name.log"
    : >"$LOGS/$name.skopeo.log"
    [[ $name == pier ]] && bin=$PIER_BIN || bin=$DISTRIBUTION_BIN
    R[$name.binary_kb]=$(($(stat -L -c %s "$bin") / 1024))

    log "=== $name on 127.0.0.1:$PORT, data $data"
    local starts=()
    for ((i = 1; i <= START_REPEAT; i++)); do
        start_server "$name" "$cfg" "$PORT"
        starts+=("$START_MS")
        if ((i < START_REPEAT)); then stop_server; fi
    done
    R[$name.start_ms]=$(median "${starts[@]}")
    log "$name: start times (ms): ${starts[*]} -> median ${R[$name.start_ms]}"
    sleep 1
    require_alive "idle"
    R[$name.idle_rss_kb]=$(status_kb "$SERVER_PID" VmRSS)
    log "$name: idle RSS ${R[$name.idle_rss_kb]} kB"

    choose_peak_mode

    skopeo_push "$name" "$SMALL_OCI" "$REPO_SMALL" "$SMALL_BYTES" push_small
    skopeo_push "$name" "$LARGE_OCI" "$REPO_LARGE" "$LARGE_BYTES" push_large
    raw_put "$name"
    raw_get "$name"
    manifest_wrk "$name"

    # auth phase: same data dir and config plus htpasswd auth; GET /v2/ now answers 401
    stop_server
    local acfg=$RUN/$name-auth.yml
    write_auth_config "$acfg" "$data" "$PORT"
    cp "$acfg" "$LOGS/$name-auth.yml"
    start_server "$name" "$acfg" "$PORT" 401
    log "$name: restarted with htpasswd auth (first 401 on GET /v2/ after ${START_MS} ms)"
    manifest_wrk "$name" auth
    R[$name.wrk_auth_ratio]=$(awk -v a="${R[$name.wrk_auth_rps]}" -v n="${R[$name.wrk_rps]}" \
        'BEGIN { if (n > 0) printf "%.4f", a / n }')
    log "$name: auth/no-auth manifest GET rate ratio ${R[$name.wrk_auth_ratio]}"

    stop_server
    log "$name: data dir used $(du -sh "$data" | cut -f1); removing it"
    rm -rf "$data"
}

bench_nginx() {
    local dir=$RUN/nginx port conf
    port=$(free_port)
    mkdir -p "$dir/logs" "$dir/tmp"
    conf=$dir/nginx.conf
    cat >"$conf" <<EOF
worker_processes 1;
user root;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 64; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    server {
        listen 127.0.0.1:$port;
        root $(dirname "$RAW_FILE");
    }
}
EOF
    port_must_be_free "$port"
    log "=== nginx (sendfile) on 127.0.0.1:$port"
    "$NGINX_BIN" -e "$dir/logs/error.log" -p "$dir" -c "$conf" -g 'daemon off;' \
        >"$LOGS/nginx.log" 2>&1 &
    NGINX_PID=$!
    local i
    for ((i = 0; i < 200; i++)); do
        curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/" 2>/dev/null && break
        proc_alive "$NGINX_PID" || { cat "$LOGS/nginx.log" "$dir/logs/error.log" >&2; die "nginx failed to start"; }
        sleep 0.05
    done
    get_best curl "http://127.0.0.1:$port/$(basename "$RAW_FILE")"
    R[nginx.get_mbs]=$GET_BEST_MBS
    get_best py "http://127.0.0.1:$port/$(basename "$RAW_FILE")"
    R[nginx.get_py_mbs]=$GET_BEST_MBS
    log "nginx: GET best ${R[nginx.get_mbs]} MiB/s (curl), ${R[nginx.get_py_mbs]} MiB/s (get.py)"
    cp "$dir/logs/error.log" "$LOGS/nginx.error.log" 2>/dev/null || true
    stop_pid "$NGINX_PID" nginx
    NGINX_PID=""
}

# ---------------------------------------------------------------- hostile phase
# Stalled readers, stalled writers and h2 window-0 streams (bench/hostile.py) against each
# registry, one fresh server process per attack, on one seeded data dir per registry.

find_h2_python() { # -> H_PY: a python3 (>= 3.9) that can import h2 (only the h2 attack needs it)
    local py check='import sys, h2; sys.exit(0 if sys.version_info >= (3, 9) else 1)'
    if [[ ,$H_ATTACKS, != *,h2,* ]]; then
        H_PY=${H_PYTHON:-python3}
        return
    fi
    if [[ -n $H_PYTHON ]]; then
        "$H_PYTHON" -c "$check" 2>/dev/null \
            || die "BENCH_PYTHON_H2=$H_PYTHON cannot 'import h2' (or is older than 3.9): apt-get install python3-h2 / pip install h2"
        H_PY=$H_PYTHON
        return
    fi
    for py in python3 /usr/bin/python3; do
        if command -v "$py" >/dev/null 2>&1 && "$py" -c "$check" 2>/dev/null; then
            H_PY=$(command -v "$py")
            return
        fi
    done
    if ((EUID == 0)) && command -v apt-get >/dev/null 2>&1; then
        log "no python3 with the h2 package: installing python3-h2 (apt-get update first)"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >>"$LOGS/apt.log" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-h2 \
            >>"$LOGS/apt.log" 2>&1 || true
        if /usr/bin/python3 -c "$check" 2>/dev/null; then
            H_PY=/usr/bin/python3
            return
        fi
    fi
    die "the h2 attack needs a python3 >= 3.9 with the 'h2' package: apt-get install python3-h2 (Debian, for /usr/bin/python3) or pip install h2; or set BENCH_PYTHON_H2=/path/to/python3, or leave h2 out with BENCH_HOSTILE_ATTACKS=readers,writers"
}

hostile_setup() { # -> H_CERT, H_KEY (H_PY comes from find_h2_python, run at start)
    log "hostile: attack tool runs on $H_PY ($("$H_PY" -c 'import sys; print(sys.version.split()[0])'))"
    H_CERT=$RUN/hostile-cert.pem
    H_KEY=$RUN/hostile-key.pem
    if [[ ,$H_ATTACKS, == *,h2,* && $H_H2_TRANSPORT == tls ]]; then
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
            -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
            -keyout "$H_KEY" -out "$H_CERT" >"$LOGS/hostile-openssl.log" 2>&1 \
            || die "openssl could not make the self-signed certificate; see $LOGS/hostile-openssl.log"
    fi
    local soft
    soft=$(ulimit -n)
    if [[ $soft != unlimited ]] && ((soft < H_READERS + H_WRITERS + 256)); then
        ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    fi
    note "hostile: servers started with RLIMIT_NOFILE $(ulimit -n) (soft, inherited from this shell)"
}

write_hostile_config() { # file datadir port tls(0|1): write_config plus a short drain, optionally TLS
    write_config "$1" "$2" "$3"
    cat >>"$1" <<EOC
  draintimeout: 5s
EOC
    if [[ $4 == 1 ]]; then
        cat >>"$1" <<EOC
  tls:
    certificate: $H_CERT
    key: $H_KEY
EOC
    fi
}

hostile_start() { # name config base: start the server, wait until GET base/v2/ answers -> SERVER_PID
    local name=$1 cfg=$2 base=$3
    echo "=== start $(date +%T) (hostile, $(basename "$cfg")) ===" >>"$LOGS/$name.log"
    launch_server "$name" "$cfg"
    if ! "$H_PY" "$BENCH_SRC/hostile.py" ready "$base" 60 "$SERVER_PID" 2>"$RUN/ready.err"; then
        tail -n 20 "$LOGS/$name.log" >&2 || true
        die "$name did not come up on $base: $(cat "$RUN/ready.err") (log: $LOGS/$name.log)"
    fi
}

hostile_attack() { # name kind base victim_base: one attack on a fresh server; results -> R[name.hostile.kind.*]
    local name=$1 kind=$2 base=$3 vbase=$4 out err pid rc k v args=()
    out=$LOGS/$name.hostile-$kind.tsv
    err=$LOGS/$name.hostile-$kind.err
    case $kind in
        readers) args=(--count "$H_READERS" --rcvbuf "$H_RCVBUF") ;;
        writers) args=(--count "$H_WRITERS" --announce "$H_ANNOUNCE" --send "$H_SEND") ;;
        h2) args=(--count "$H_H2_CONNS" --streams "$H_H2_STREAMS") ;;
    esac
    ((H_VICTIM_KEEPALIVE)) && args+=(--victim-keepalive)
    sleep 1 # let the fresh server settle: the idle numbers are read when the attack starts
    log "$name: hostile '$kind' on $base for ${H_DURATION}s (+${H_AFTER}s after)"
    "$H_PY" "$BENCH_SRC/hostile.py" attack --kind "$kind" --base "$base" --victim-base "$vbase" \
        --pid "$SERVER_PID" --repo "$H_REPO" --tag "$TAG" --manifest "$H_MANIFEST" --blob "$H_BLOB" \
        --duration "$H_DURATION" --after "$H_AFTER" --timeout "$H_TIMEOUT" \
        --victim-addr "$H_VICTIM_ADDR" --victim-interval-ms "$H_VICTIM_INTERVAL_MS" \
        --sources "$H_SOURCES" "${args[@]}" \
        >"$out" 2>"$err" &
    pid=$!
    CHILDREN+=("$pid")
    rc=0
    wait "$pid" || rc=$?
    if ((rc != 0)); then
        note "$name: hostile '$kind' attack tool failed (exit $rc): $(tail -n 3 "$err" | tr '\n' ' ')"
        R[$name.hostile.$kind.failed]=1
    fi
    while IFS=$'\t' read -r k v; do
        [[ -n $k ]] && R[$name.hostile.$kind.$k]=$v
    done <"$out"
    if ! proc_alive "$SERVER_PID"; then
        R[$name.hostile.$kind.died]=1
        note "$name: the server process died during the hostile '$kind' attack (log: $LOGS/$name.log)"
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
    log "$name: $kind: RSS peak ${R[$name.hostile.$kind.rss_peak_kb]:-?} kB, after ${R[$name.hostile.$kind.rss_after_kb]:-?} kB, threads peak ${R[$name.hostile.$kind.threads_peak]:-?}, victim p99 ${R[$name.hostile.$kind.victim_p99_ms]:-?} ms (${R[$name.hostile.$kind.victim_err]:-?} errors of ${R[$name.hostile.$kind.victim_n]:-?}), attackers ${R[$name.hostile.$kind.att_status]:-?}"
    stop_server
}

bench_hostile() { # name
    local name=$1 data cfg tcfg port tport base tbase kind seeded
    data=$RUN/hostile-$name
    cfg=$RUN/$name-hostile.yml
    tcfg=$RUN/$name-hostile-tls.yml
    port=$(free_port)
    tport=$(free_port)
    base=http://127.0.0.1:$port
    tbase=https://127.0.0.1:$tport
    rm -rf "$data"
    mkdir -p "$data"
    write_hostile_config "$cfg" "$data" "$port" 0
    write_hostile_config "$tcfg" "$data" "$tport" 1
    cp "$cfg" "$LOGS/$name-hostile.yml"
    cp "$tcfg" "$LOGS/$name-hostile-tls.yml"
    touch "$LOGS/$name.log"
    log "=== $name: hostile phase on $base (TLS: $tbase), data $data"
    port_must_be_free "$port"
    hostile_start "$name" "$cfg" "$base"
    seeded=$("$H_PY" "$BENCH_SRC/hostile.py" seed "$base" "$H_REPO" "$TAG" "$H_BLOB_MB" 2>"$RUN/seed.err") \
        || die "$name: seeding the hostile phase failed: $(cat "$RUN/seed.err")"
    read -r H_BLOB H_MANIFEST <<<"$seeded"
    log "$name: seeded $H_REPO:$TAG (${H_BLOB_MB} MiB layer $H_BLOB, manifest $H_MANIFEST)"
    stop_server
    for kind in "${H_ATTACK_LIST[@]}"; do
        if [[ $kind == h2 && $H_H2_TRANSPORT == tls ]]; then
            port_must_be_free "$tport"
            hostile_start "$name" "$tcfg" "$tbase"
            hostile_attack "$name" h2 "$tbase" "$tbase"
        elif [[ $kind == h2 && $name == distribution ]]; then
            R[$name.hostile.h2.na]="no h2c"
            log "$name: h2 attack skipped: Distribution does not speak h2c on plain HTTP"
        else
            port_must_be_free "$port"
            hostile_start "$name" "$cfg" "$base"
            hostile_attack "$name" "$kind" "$base" "$base"
        fi
    done
    rm -rf "$data"
}

# ---------------------------------------------------------------- scale phase
# Start-up, RSS and catalog/tags paging with a big store: bench/scale.sh (bench_scale).
# shellcheck source=bench/scale.sh
source "$BENCH_SRC/scale.sh"

# ---------------------------------------------------------------- gc phase
# Garbage collection of half a big store: pier online vs Distribution offline (bench/gc.sh, bench_gc).
# shellcheck source=bench/gc.sh
source "$BENCH_SRC/gc.sh"

# ---------------------------------------------------------------- main
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
RUN=$BENCH_DIR/run
LOGS=$BENCH_DIR/logs
RESULTS=$BENCH_DIR/results.tsv
rm -rf "$RUN" "$LOGS"
rm -f "$RESULTS" "$BENCH_DIR/results.md"
mkdir -p "$RUN" "$LOGS"

log "pier benchmark: sizes ${SMALL_MB}/${LARGE_MB} MiB, registries: ${REGISTRIES[*]}, work dir $BENCH_DIR"
ensure_packages
# The hostile phase runs last: check its python before spending minutes on the core phase.
((RUN_HOSTILE)) && find_h2_python
((RUN_CORE)) && check_disk
((RUN_SCALE)) && scale_setup
((RUN_GC)) && gc_setup
if [[ " ${REGISTRIES[*]} " == *" pier "* ]]; then build_pier; fi
if ((RUN_CORE)); then
    generate_data
    make_htpasswd
    for reg in "${REGISTRIES[@]}"; do
        bench_registry "$reg"
    done
    bench_nginx
fi
if ((RUN_HOSTILE)); then
    H_REPO=hostile/img
    hostile_setup
    for reg in "${REGISTRIES[@]}"; do
        bench_hostile "$reg"
    done
fi
# Tag scale: bench/tags.sh, with its own table in $BENCH_DIR/tags.md (not in the default phases:
# Distribution takes minutes to make 50,000 tags).
if ((RUN_TAGS)); then
    BENCH_DIR=$BENCH_DIR PIER_BIN=$PIER_BIN BENCH_ONLY=$ONLY DISTRIBUTION_BIN=$DISTRIBUTION_BIN \
        bash "$BENCH_SRC/tags.sh" || die "tag-scale phase (bench/tags.sh) failed"
fi

if ((RUN_SCALE)); then
    for reg in "${REGISTRIES[@]}"; do
        bench_scale "$reg"
    done
fi
if ((RUN_GC)); then
    for reg in "${REGISTRIES[@]}"; do
        bench_gc "$reg"
    done
fi

# ---------------------------------------------------------------- report
CPU_MODEL=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
{
    printf 'meta.cpu\t%s\n' "${CPU_MODEL:-unknown}"
    printf 'meta.nproc\t%s\n' "$(nproc)"
    printf 'meta.date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    printf 'meta.kernel\t%s\n' "$(uname -r)"
    printf 'meta.small_mb\t%s\n' "$SMALL_MB"
    printf 'meta.large_mb\t%s\n' "$LARGE_MB"
    printf 'meta.get_repeat\t%s\n' "$GET_REPEAT"
    printf 'meta.wrk_args\t%s\n' "-t$WRK_THREADS -c$WRK_CONNS -d$WRK_DURATION"
    printf 'meta.bcrypt_cost\t%s\n' "$BCRYPT_COST"
    printf 'meta.phases\t%s\n' "$PHASES"
    if ((RUN_HOSTILE)); then
        printf 'meta.hostile_duration_s\t%s\n' "$H_DURATION"
        printf 'meta.hostile_after_s\t%s\n' "$H_AFTER"
        printf 'meta.hostile_readers\t%s\n' "$H_READERS"
        printf 'meta.hostile_rcvbuf\t%s\n' "$H_RCVBUF"
        printf 'meta.hostile_writers\t%s\n' "$H_WRITERS"
        printf 'meta.hostile_announce\t%s\n' "$H_ANNOUNCE"
        printf 'meta.hostile_send\t%s\n' "$H_SEND"
        printf 'meta.hostile_h2_conns\t%s\n' "$H_H2_CONNS"
        printf 'meta.hostile_h2_streams\t%s\n' "$H_H2_STREAMS"
        printf 'meta.hostile_h2_transport\t%s\n' "$H_H2_TRANSPORT"
        printf 'meta.hostile_blob_mb\t%s\n' "$H_BLOB_MB"
        printf 'meta.hostile_timeout_s\t%s\n' "$H_TIMEOUT"
        printf 'meta.hostile_victim\t%s\n' "$( ((H_VICTIM_KEEPALIVE)) && echo "one keep-alive connection" || echo "a new connection per request"), from $H_VICTIM_ADDR, at most one request per ${H_VICTIM_INTERVAL_MS} ms"
        printf 'meta.hostile_attacks\t%s\n' "$H_ATTACKS"
        printf 'meta.hostile_sources\t%s\n' "$H_SOURCES"
    fi
    if ((RUN_SCALE)); then scale_meta; fi
    if ((RUN_GC)); then gc_meta; fi
    if [[ -n $PIER_BIN_GIVEN ]]; then
        printf 'meta.pier_version\t%s\n' "PIER_BIN=$PIER_BIN ($("$PIER_BIN" --version 2>/dev/null || echo '?'))"
    elif [[ -n $PIER_BIN ]]; then
        printf 'meta.pier_version\t%s\n' "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no commit')$(git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null || echo ' (dirty tree)')"
    else
        printf 'meta.pier_version\t%s\n' "not run"
    fi
    printf 'meta.distribution_version\t%s\n' "$("$DISTRIBUTION_BIN" --version 2>/dev/null | awk '{ print $NF }')"
    printf 'meta.skopeo_version\t%s\n' "$(skopeo --version | awk '{ print $NF }')"
    printf 'meta.nginx_version\t%s\n' "$("$NGINX_BIN" -v 2>&1 | sed 's/.*nginx\///')"
    printf 'meta.curl_version\t%s\n' "$(curl --version | awk 'NR == 1 { print $2 }')"
    for k in "${!R[@]}"; do printf '%s\t%s\n' "$k" "${R[$k]}"; done | sort
    for n in "${NOTES[@]}"; do printf 'note\t%s\n' "$n"; done
} >"$RESULTS"

echo
echo "CPU: ${CPU_MODEL:-unknown} | nproc: $(nproc) | date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo
python3 "$BENCH_SRC/report.py" "$RESULTS" "$BENCH_DIR/results.md"
echo
log "results written to $BENCH_DIR/results.md (raw: $RESULTS, logs: $LOGS)"
