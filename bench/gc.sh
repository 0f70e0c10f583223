# shellcheck shell=bash
# The "gc" phase of bench/run.sh (sourced by it, after bench/scale.sh; uses run.sh's helpers:
# log, note, die, R, start_server, stop_server, status_kb, write_config, free_port, peak_*, ...).
#
# Per registry, on one fresh data dir: fill GC_BLOBS small blobs in GC_REPOS repositories with
# one manifest each (bench/scale.py fill --share-pairs: every odd repository's image also lists
# the first layer of the even one before it), delete the odd repositories' manifests by digest
# (half the images; their other blobs become garbage, the shared layers must stay), check that
# the garbage still pulls, run the push/pull loop (bench/gc.py load) alone as the baseline, then
#   pier:         `pier gc --grace GC_GRACE --json` against the running daemon while the same loop
#                 runs: GC wall time, the daemon's peak RSS, its report, push/pull latency during it;
#   Distribution: stop, `/usr/bin/time -v docker-registry garbage-collect CONFIG`, start: GC time,
#                 its peak RSS, the downtime (stop -> first 200 after the restart);
# then du of the data dir before/after and bench/gc.py verify (kept images pull byte-identical,
# the deleted images' own blobs are gone over HTTP and on disk, the shared ones are not).
# Results: R[REGISTRY.gc.KEY]; report.py prints them in its "Garbage collection" section.

if [[ $QUICK == 1 ]]; then
    GC_BLOBS=${BENCH_GC_BLOBS:-10000}
    GC_REPOS=${BENCH_GC_REPOS:-1000}
    GC_BASELINE_S=${BENCH_GC_BASELINE_S:-10}
else
    GC_BLOBS=${BENCH_GC_BLOBS:-100000}
    GC_REPOS=${BENCH_GC_REPOS:-10000}
    GC_BASELINE_S=${BENCH_GC_BASELINE_S:-20}
fi
GC_GRACE=${BENCH_GC_GRACE:-0s}                        # pier gc --grace
GC_INTERVAL_MS=${BENCH_GC_LOAD_INTERVAL_MS:-10}       # push/pull loop: one image per client at most every N ms
GC_VERIFY_SAMPLE=${BENCH_GC_VERIFY_SAMPLE:-300}       # kept and deleted images checked after the GC
GC_WORKERS=${BENCH_SCALE_WORKERS:-8}                  # fill and delete connections (the scale phase's knob)

gc_setup() {
    local v avail_mb
    for v in GC_BLOBS GC_REPOS GC_BASELINE_S GC_INTERVAL_MS GC_VERIFY_SAMPLE GC_WORKERS; do
        [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "BENCH_${v} must be a positive integer (got '${!v}')"
    done
    ((GC_REPOS >= 2)) || die "BENCH_GC_REPOS must be at least 2 (one kept and one deleted image)"
    ((GC_BLOBS >= 2 * GC_REPOS)) || die "BENCH_GC_BLOBS must be at least 2 x BENCH_GC_REPOS (a config and a layer each)"
    [[ $GC_GRACE =~ ^[0-9]+(ms|s|m|h)$ ]] || die "BENCH_GC_GRACE must be a duration such as 0s, 30s, 1h (got '$GC_GRACE')"
    [[ -x /usr/bin/time ]] || die "the gc phase needs /usr/bin/time (apt-get install time) for the offline GC's peak RSS"
    avail_mb=$(($(df -Pk "$BENCH_DIR" | awk 'NR == 2 { print $4 }') / 1024))
    ((avail_mb > GC_BLOBS / 40 + 512)) \
        || die "not enough free disk in $BENCH_DIR for the gc phase: ${avail_mb} MiB free, need ~$((GC_BLOBS / 40 + 512)) MiB"
}

gc_read() { # name file: key<TAB>value lines -> R[name.gc.key]
    local k v
    while IFS=$'\t' read -r k v; do
        [[ -n $k ]] && R[$1.gc.$k]=$v
    done <"$2"
}

gc_py() { # name label args...: python3 bench/gc.py args > logs/name.gc-label.tsv -> R[name.gc.*]
    local name=$1 label=$2 out
    shift 2
    out=$LOGS/$name.gc-$label.tsv
    python3 "$BENCH_SRC/gc.py" "$@" >"$out" 2>"$LOGS/$name.gc-$label.err" \
        || die "$name: gc.py $1 ($label) failed: $(tail -n 5 "$LOGS/$name.gc-$label.err")"
    gc_read "$name" "$out"
}

gc_load_read() { # name file prefix: gc.py load output -> R[name.gc.PREFIX_key]
    local k v
    while IFS=$'\t' read -r k v; do
        [[ -n $k ]] && R[$1.gc.$3_$k]=$v
    done <"$2"
}

gc_du() { # data key: du and file count -> R[name.gc.KEY_kb / KEY_files]
    R[$GC_NAME.gc.$2_kb]=$(du -sk "$1" | cut -f1)
    R[$GC_NAME.gc.$2_files]=$(find "$1" -type f | wc -l)
}

gc_verify() { # name base data layout expect_gone label
    local name=$1 base=$2 data=$3 layout=$4 gone=$5 label=$6 sample=$GC_VERIFY_SAMPLE
    ((gone)) || sample=50
    gc_py "$name" "verify-$label" verify --base "$base" --manifests "$GC_MANIFESTS" --root "$data" \
        --layout "$layout" --sample "$sample" --expect-gone "$gone"
    local f=${R[$name.gc.verify_failures]}
    R[$name.gc.verify_${label}_failures]=$f
    if ((f > 0)); then
        note "$name: gc: verification '$label' FAILED for $f checks: $(head -n 3 "$LOGS/$name.gc-verify-$label.err" | tr '\n' ' ')"
    fi
    log "$name: gc: verify $label: ${R[$name.gc.verify_kept_images]} kept images (${R[$name.gc.verify_kept_blobs]} blobs) pulled byte-identical, ${R[$name.gc.verify_garbage_blobs]} garbage and ${R[$name.gc.verify_shared_blobs]} shared blobs of ${R[$name.gc.verify_deleted_images]} deleted images checked: $f failures"
}

bench_gc() { # name
    local name=$1 data cfg port base out t0 t1 stop load_pid upload rc
    GC_NAME=$name
    data=$RUN/gc-$name
    cfg=$RUN/$name-gc.yml
    port=$(free_port)
    base=http://127.0.0.1:$port
    GC_MANIFESTS=$RUN/gc-$name.images
    rm -rf "$data"
    mkdir -p "$data"
    write_config "$cfg" "$data" "$port"
    cp "$cfg" "$LOGS/$name-gc.yml"
    log "=== $name: gc phase on $base, data $data: $GC_BLOBS blobs in $GC_REPOS repositories, half the images deleted"
    start_server "$name" "$cfg" "$port"
    choose_peak_mode

    out=$LOGS/$name.gc-fill.tsv
    python3 "$BENCH_SRC/scale.py" fill --base "$base" --blobs "$GC_BLOBS" --repos "$GC_REPOS" \
        --workers "$GC_WORKERS" --tag "$TAG" --upload auto --share-pairs --manifests "$GC_MANIFESTS" \
        >"$out" 2>"$RUN/gc.err" || die "$name: gc fill failed: $(cat "$RUN/gc.err")"
    gc_read "$name" "$out"
    upload=${R[$name.gc.fill_upload]}
    log "$name: gc: filled $GC_BLOBS blobs at ${R[$name.gc.fill_blobs_per_s]}/s ($upload), $GC_REPOS manifests at ${R[$name.gc.fill_manifests_per_s]}/s"
    gc_py "$name" expect expect --manifests "$GC_MANIFESTS"
    gc_py "$name" delete delete --base "$base" --manifests "$GC_MANIFESTS" --workers "$GC_WORKERS"
    log "$name: gc: deleted ${R[$name.gc.deleted_manifests]} manifests by digest (${R[$name.gc.delete_per_s]}/s); garbage: ${R[$name.gc.expect_blobs_freed]} blobs, ${R[$name.gc.expect_bytes_freed]} bytes; ${R[$name.gc.expect_shared_kept]} shared blobs must stay"
    gc_verify "$name" "$base" "$data" "$name" 0 before
    gc_du "$data" before

    log "$name: gc: push/pull loop alone for ${GC_BASELINE_S}s (baseline)"
    out=$LOGS/$name.gc-load-baseline.tsv
    python3 "$BENCH_SRC/gc.py" load --base "$base" --manifests "$GC_MANIFESTS" --upload "$upload" \
        --duration "$GC_BASELINE_S" --interval-ms "$GC_INTERVAL_MS" >"$out" 2>"$RUN/gc.err" \
        || die "$name: gc baseline loop failed: $(cat "$RUN/gc.err")"
    gc_load_read "$name" "$out" base
    require_alive "gc baseline loop"
    log "$name: gc: baseline push p50/p99 ${R[$name.gc.base_push_p50_ms]}/${R[$name.gc.base_push_p99_ms]} ms (${R[$name.gc.base_push_n]}), pull ${R[$name.gc.base_pull_p50_ms]}/${R[$name.gc.base_pull_p99_ms]} ms (${R[$name.gc.base_pull_n]})"

    if [[ $name == pier ]]; then
        stop=$RUN/gc-load.stop
        rm -f "$stop"
        out=$LOGS/$name.gc-load-during.tsv
        python3 "$BENCH_SRC/gc.py" load --base "$base" --manifests "$GC_MANIFESTS" --upload "$upload" \
            --stop-file "$stop" --interval-ms "$GC_INTERVAL_MS" >"$out" 2>"$RUN/gc-load.err" &
        load_pid=$!
        CHILDREN+=("$load_pid")
        sleep 1 # the loop is running before the GC starts
        R[$name.gc.rss_before_kb]=$(status_kb "$SERVER_PID" VmRSS)
        local c0 c1 u0 u1 s0 s1
        read -r c0 u0 s0 <<<"$(cpu_ticks "$SERVER_PID")"
        peak_begin
        log "$name: gc: $PIER_BIN gc --config $cfg --grace $GC_GRACE --json (daemon serving the loop)"
        t0=$(now)
        rc=0
        "$PIER_BIN" gc --config "$cfg" --grace "$GC_GRACE" --json >"$LOGS/$name.gc-report.json" \
            2>"$LOGS/$name.gc-cli.err" || rc=$?
        t1=$(now)
        read -r c1 u1 s1 <<<"$(cpu_ticks "$SERVER_PID")"
        peak_end
        R[$name.gc.gc_cpu_s]=$(calc "($u1 - $u0 + $s1 - $s0) / $(getconf CLK_TCK)")
        sleep 1 # and still running a moment after
        touch "$stop"
        wait "$load_pid" || die "$name: gc loop during the GC failed: $(cat "$RUN/gc-load.err")"
        ((rc == 0)) || die "$name: pier gc failed (exit $rc): $(cat "$LOGS/$name.gc-cli.err")"
        require_alive "gc"
        gc_load_read "$name" "$out" during
        R[$name.gc.gc_ms]=$(calc "($t1 - $t0) * 1000")
        R[$name.gc.gc_peak_kb]=$PEAK_KB
        R[$name.gc.downtime_ms]=0
        python3 -c 'import json, sys
r = json.load(open(sys.argv[1]))
for k in ("repositories", "manifests", "links", "in_grace", "blobs_freed", "bytes_freed", "elapsed_ms"):
    print("report_%s\t%s" % (k, r[k]))' "$LOGS/$name.gc-report.json" >"$LOGS/$name.gc-report.tsv" \
            || die "$name: pier gc --json printed no report: $(head -c 300 "$LOGS/$name.gc-report.json")"
        gc_read "$name" "$LOGS/$name.gc-report.tsv"
        R[$name.gc.blobs_freed]=${R[$name.gc.report_blobs_freed]}
        log "$name: gc: online GC ${R[$name.gc.gc_ms]} ms wall (report: ${R[$name.gc.report_elapsed_ms]} ms, ${R[$name.gc.report_links]} links, ${R[$name.gc.report_blobs_freed]} blobs, ${R[$name.gc.report_bytes_freed]} bytes freed, ${R[$name.gc.report_in_grace]} in grace), daemon peak RSS ${PEAK_KB} kB, daemon CPU ${R[$name.gc.gc_cpu_s]} s; loop during it: push p99 ${R[$name.gc.during_push_p99_ms]:-?} ms (${R[$name.gc.during_push_n]} pushes, ${R[$name.gc.during_push_err]} errors), pull p99 ${R[$name.gc.during_pull_p99_ms]:-?} ms (${R[$name.gc.during_pull_n]}, ${R[$name.gc.during_pull_err]} errors)"
        # The next collection visits only what changed since (the loop's pushes): its cost
        # follows the change, not the store (GC_DUE).
        t0=$(now)
        "$PIER_BIN" gc --config "$cfg" --grace "$GC_GRACE" --json >"$LOGS/$name.gc-report2.json" \
            2>"$LOGS/$name.gc-cli2.err" || die "$name: second pier gc failed: $(cat "$LOGS/$name.gc-cli2.err")"
        t1=$(now)
        R[$name.gc.gc2_ms]=$(calc "($t1 - $t0) * 1000")
        R[$name.gc.gc2_repositories]=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["repositories"])' \
            "$LOGS/$name.gc-report2.json")
        log "$name: gc: second online GC (changes since the first only) ${R[$name.gc.gc2_ms]} ms wall, ${R[$name.gc.gc2_repositories]} repositories visited"
        [[ ${R[$name.gc.report_blobs_freed]} == "${R[$name.gc.expect_blobs_freed]}" ]] \
            || note "$name: gc freed ${R[$name.gc.report_blobs_freed]} blob files, the deleted images had ${R[$name.gc.expect_blobs_freed]} blobs of their own (more: blobs of the loop's pushes in progress, unprotected with --grace $GC_GRACE, whose manifest PUT then failed; see the loop's push errors)"
    else
        # offline: the registry must be stopped; downtime = stop -> first 200 after the restart
        local time_out=$LOGS/$name.gc-time.txt gc_log=$LOGS/$name.gc-collect.log
        log "$name: gc: stop, /usr/bin/time -v $DISTRIBUTION_BIN garbage-collect $cfg, start"
        t0=$(now)
        stop_server
        local g0 g1
        g0=$(now)
        /usr/bin/time -v -o "$time_out" "$DISTRIBUTION_BIN" garbage-collect "$cfg" >"$gc_log" 2>&1 \
            || die "$name: garbage-collect failed: $(tail -n 5 "$gc_log")"
        g1=$(now)
        start_server "$name" "$cfg" "$port"
        t1=$(now)
        R[$name.gc.gc_ms]=$(calc "($g1 - $g0) * 1000")
        R[$name.gc.downtime_ms]=$(calc "($t1 - $t0) * 1000")
        R[$name.gc.gc_peak_kb]=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$time_out")
        R[$name.gc.gc_cpu_s]=$(awk -F': ' '/User time \(seconds\)|System time \(seconds\)/ { t += $2 } END { printf "%.2f", t }' "$time_out")
        # "N blobs marked, M blobs and K manifests eligible for deletion"
        local marked freed eligible
        read -r marked freed eligible < <(
            sed -n 's/^\([0-9]*\) blobs marked, \([0-9]*\) blobs and \([0-9]*\) manifests eligible for deletion.*/\1 \2 \3/p' "$gc_log" | tail -n 1) || true
        R[$name.gc.marked]=${marked:-}
        R[$name.gc.blobs_freed]=${freed:-}
        R[$name.gc.manifests_eligible]=${eligible:-}
        [[ -n ${R[$name.gc.blobs_freed]} ]] || note "$name: could not read the blob count from garbage-collect's output ($gc_log)"
        log "$name: gc: offline GC ${R[$name.gc.gc_ms]} ms, peak RSS ${R[$name.gc.gc_peak_kb]} kB, CPU ${R[$name.gc.gc_cpu_s]} s, downtime ${R[$name.gc.downtime_ms]} ms (start ${START_MS} ms); ${R[$name.gc.marked]:-?} blobs marked, ${R[$name.gc.blobs_freed]:-?} blobs and ${R[$name.gc.manifests_eligible]:-?} manifests eligible"
    fi
    gc_verify "$name" "$base" "$data" "$name" 1 after
    stop_server
    gc_du "$data" after
    R[$name.gc.du_freed_kb]=$((R[$name.gc.before_kb] - R[$name.gc.after_kb]))
    log "$name: gc: data dir ${R[$name.gc.before_kb]} kB / ${R[$name.gc.before_files]} files before, ${R[$name.gc.after_kb]} kB / ${R[$name.gc.after_files]} files after"
    if [[ $KEEP == 1 ]]; then
        log "$name: BENCH_KEEP=1: keeping $data"
    else
        rm -rf "$data"
    fi
}

gc_meta() { # meta lines for results.tsv
    printf 'meta.gc_blobs\t%s\n' "$GC_BLOBS"
    printf 'meta.gc_repos\t%s\n' "$GC_REPOS"
    printf 'meta.gc_grace\t%s\n' "$GC_GRACE"
    printf 'meta.gc_baseline_s\t%s\n' "$GC_BASELINE_S"
    printf 'meta.gc_interval_ms\t%s\n' "$GC_INTERVAL_MS"
    printf 'meta.gc_verify_sample\t%s\n' "$GC_VERIFY_SAMPLE"
}
