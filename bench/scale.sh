# shellcheck shell=bash
# The "scale" phase of bench/run.sh (sourced by it; uses its helpers: log, note, die, R,
# start_server, stop_server, status_kb, write_config, free_port, median, ...).
#
# Per registry, on one fresh data dir: cold start on the empty store (baseline), fill with
# SCALE_BLOBS small blobs in SCALE_REPOS repositories plus one manifest+tag each
# (bench/scale.py fill), then start-up time with a cold page cache (sync; drop_caches) and a
# warm one, RSS after start and after the first catalog page, catalog and tags/list
# pagination cost (bench/scale.py pages), with SCALE_TAGS extra tags on one repository.
# Results: R[REGISTRY.scale.KEY]; report.py prints them in its "Scale" section.

if [[ $QUICK == 1 ]]; then
    SCALE_BLOBS=${BENCH_SCALE_BLOBS:-10000}
    SCALE_REPOS=${BENCH_SCALE_REPOS:-1000}
    SCALE_TAGS=${BENCH_SCALE_TAGS:-1000}
else
    SCALE_BLOBS=${BENCH_SCALE_BLOBS:-100000}
    SCALE_REPOS=${BENCH_SCALE_REPOS:-10000}
    SCALE_TAGS=${BENCH_SCALE_TAGS:-10000}
fi
SCALE_WORKERS=${BENCH_SCALE_WORKERS:-8}            # parallel keep-alive connections for the fill
SCALE_START_REPEAT=${BENCH_SCALE_START_REPEAT:-3}  # starts per cache state (median reported)
SCALE_PAGE_REPEAT=${BENCH_SCALE_PAGE_REPEAT:-5}    # GETs per page (median reported)
SCALE_UPLOAD=${BENCH_SCALE_UPLOAD:-auto}           # auto, post or postput (see bench/scale.py)
SCALE_REPO=scale/r00000                            # the repository that gets SCALE_TAGS tags
SCALE_DROP=0                                       # 1 if drop_caches works (scale_setup)

scale_check_knobs() {
    local v
    for v in SCALE_BLOBS SCALE_REPOS SCALE_WORKERS SCALE_START_REPEAT SCALE_PAGE_REPEAT; do
        [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "BENCH_${v} must be a positive integer (got '${!v}')"
    done
    [[ $SCALE_TAGS =~ ^[0-9]+$ ]] || die "BENCH_SCALE_TAGS must be a non-negative integer (got '$SCALE_TAGS')"
    ((SCALE_REPOS >= 202)) || die "BENCH_SCALE_REPOS must be at least 202 (two catalog pages of 100 and a middle)"
    ((SCALE_BLOBS >= 2 * SCALE_REPOS)) || die "BENCH_SCALE_BLOBS must be at least 2 x BENCH_SCALE_REPOS (a config and a layer each)"
    [[ $SCALE_UPLOAD == auto || $SCALE_UPLOAD == post || $SCALE_UPLOAD == postput ]] \
        || die "BENCH_SCALE_UPLOAD must be auto, post or postput (got '$SCALE_UPLOAD')"
}

scale_setup() { # -> SCALE_DROP: can we empty the page cache?
    scale_check_knobs
    if sync && { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
        SCALE_DROP=1
        log "scale: drop_caches works: cold starts run on an emptied page cache"
    else
        SCALE_DROP=0
        note "scale: cannot write /proc/sys/vm/drop_caches (not root, or /proc/sys read-only): the 'cold' start-up rows are not measured"
    fi
    local avail_mb
    avail_mb=$(($(df -Pk "$BENCH_DIR" | awk 'NR == 2 { print $4 }') / 1024))
    # Distribution needs ~20 KiB per blob (data file, directories, a link per repository)
    ((avail_mb > SCALE_BLOBS / 40 + 512)) \
        || die "not enough free disk in $BENCH_DIR for the scale phase: ${avail_mb} MiB free, need ~$((SCALE_BLOBS / 40 + 512)) MiB"
}

scale_starts() { # name cfg port cold|warm label: SCALE_START_REPEAT starts -> R[name.scale.start_LABEL_ms]; leaves the last one running
    local name=$1 cfg=$2 port=$3 cache=$4 label=$5 i starts=()
    for ((i = 1; i <= SCALE_START_REPEAT; i++)); do
        stop_server
        if [[ $cache == cold ]]; then
            sync
            echo 3 >/proc/sys/vm/drop_caches
        fi
        start_server "$name" "$cfg" "$port"
        starts+=("$START_MS")
    done
    R[$name.scale.start_${label}_ms]=$(median "${starts[@]}")
    log "$name: scale: start-up, $label (ms): ${starts[*]} -> median ${R[$name.scale.start_${label}_ms]}"
}

scale_read() { # name file: key<TAB>value lines -> R[name.scale.key]
    local k v
    while IFS=$'\t' read -r k v; do
        [[ -n $k ]] && R[$1.scale.$k]=$v
    done <"$2"
}

bench_scale() { # name
    local name=$1 data cfg port base out ms mode
    data=$RUN/scale-$name
    cfg=$RUN/$name-scale.yml
    port=$(free_port)
    base=http://127.0.0.1:$port
    rm -rf "$data"
    mkdir -p "$data"
    write_config "$cfg" "$data" "$port"
    cp "$cfg" "$LOGS/$name-scale.yml"
    log "=== $name: scale phase on $base, data $data: $SCALE_BLOBS blobs in $SCALE_REPOS repositories"

    if ((SCALE_DROP)); then scale_starts "$name" "$cfg" "$port" cold cold_empty; fi
    scale_starts "$name" "$cfg" "$port" warm warm_empty

    out=$LOGS/$name.scale-fill.tsv
    python3 "$BENCH_SRC/scale.py" fill --base "$base" --blobs "$SCALE_BLOBS" --repos "$SCALE_REPOS" \
        --workers "$SCALE_WORKERS" --tag "$TAG" --upload "$SCALE_UPLOAD" >"$out" 2>"$RUN/scale.err" \
        || die "$name: scale fill failed: $(cat "$RUN/scale.err")"
    scale_read "$name" "$out"
    log "$name: scale: filled $SCALE_BLOBS blobs at ${R[$name.scale.fill_blobs_per_s]}/s (${R[$name.scale.fill_upload]}), $SCALE_REPOS manifests at ${R[$name.scale.fill_manifests_per_s]}/s"
    stop_server
    R[$name.scale.data_mb]=$(du -sm "$data" | cut -f1)
    R[$name.scale.data_files]=$(find "$data" -type f | wc -l)
    log "$name: scale: data dir $(du -sh "$data" | cut -f1), ${R[$name.scale.data_files]} files"

    if ((SCALE_DROP)); then scale_starts "$name" "$cfg" "$port" cold cold; fi
    scale_starts "$name" "$cfg" "$port" warm warm
    sleep 1
    require_alive "scale idle"
    R[$name.scale.rss_start_kb]=$(status_kb "$SERVER_PID" VmRSS)
    R[$name.scale.hwm_start_kb]=$(status_kb "$SERVER_PID" VmHWM)
    ms=$(python3 "$BENCH_SRC/scale.py" get --base "$base" --path "/v2/_catalog?n=100" 2>"$RUN/scale.err") \
        || die "$name: first catalog page failed: $(cat "$RUN/scale.err")"
    R[$name.scale.catalog_first_after_start_ms]=$ms
    R[$name.scale.rss_catalog_kb]=$(status_kb "$SERVER_PID" VmRSS)
    log "$name: scale: RSS ${R[$name.scale.rss_start_kb]} kB ~1 s after start (peak ${R[$name.scale.hwm_start_kb]} kB), ${R[$name.scale.rss_catalog_kb]} kB after the first catalog page (${ms} ms)"

    if ((SCALE_TAGS > 0)); then
        # pier takes many ?tag= per PUT; Distribution 2.8 one tag per PUT (in parallel)
        [[ $name == pier ]] && mode=query || mode=each
        out=$LOGS/$name.scale-tags.tsv
        python3 "$BENCH_SRC/scale.py" tags --base "$base" --repo "$SCALE_REPO" --tag "$TAG" \
            --count "$SCALE_TAGS" --mode "$mode" --workers "$SCALE_WORKERS" >"$out" 2>"$RUN/scale.err" \
            || die "$name: giving $SCALE_REPO $SCALE_TAGS tags failed: $(cat "$RUN/scale.err")"
        scale_read "$name" "$out"
        log "$name: scale: $SCALE_TAGS tags on $SCALE_REPO in ${R[$name.scale.tags_fill_s]} s ($mode)"
    fi
    out=$LOGS/$name.scale-pages.tsv
    python3 "$BENCH_SRC/scale.py" pages --base "$base" --repos "$SCALE_REPOS" --tags-repo "$SCALE_REPO" \
        --tags "$SCALE_TAGS" --repeat "$SCALE_PAGE_REPEAT" >"$out" 2>"$RUN/scale.err" \
        || die "$name: timing catalog/tags pages failed: $(cat "$RUN/scale.err")"
    scale_read "$name" "$out"
    local k unpaged=()
    for k in tags_first tags_middle tags_last; do
        [[ ${R[$name.scale.${k}_paged]:-1} == 0 ]] && unpaged+=("$k: ${R[$name.scale.${k}_n]} names")
    done
    if ((${#unpaged[@]})); then
        note "$name: scale: tags/list?n=100 did not answer the expected page of 100 (${unpaged[*]}): it ignores n/last there, so those rows time the whole list"
    fi
    log "$name: scale: catalog page ms first/middle/last ${R[$name.scale.catalog_first_ms]}/${R[$name.scale.catalog_middle_ms]}/${R[$name.scale.catalog_last_ms]}, tags ${R[$name.scale.tags_first_ms]}/${R[$name.scale.tags_middle_ms]:-}/${R[$name.scale.tags_last_ms]:-}"
    stop_server
    if [[ $KEEP == 1 ]]; then
        log "$name: BENCH_KEEP=1: keeping $data"
    else
        rm -rf "$data"
    fi
}

scale_meta() { # meta lines for results.tsv
    printf 'meta.scale_blobs\t%s\n' "$SCALE_BLOBS"
    printf 'meta.scale_repos\t%s\n' "$SCALE_REPOS"
    printf 'meta.scale_tags\t%s\n' "$SCALE_TAGS"
    printf 'meta.scale_workers\t%s\n' "$SCALE_WORKERS"
    printf 'meta.scale_start_repeat\t%s\n' "$SCALE_START_REPEAT"
    printf 'meta.scale_page_repeat\t%s\n' "$SCALE_PAGE_REPEAT"
    printf 'meta.scale_drop_caches\t%s\n' "$SCALE_DROP"
}
