#!/usr/bin/env python3
"""Format bench/run.sh results as a markdown table (stdlib only).

  report.py RESULTS_TSV OUT_MD

RESULTS_TSV holds `key<TAB>value` lines: `meta.*` (header facts), `note` (free text,
repeatable), `pier.*` / `distribution.*` / `nginx.*` (numbers; the hostile phase's are
`REGISTRY.hostile.ATTACK.KEY`, KEY as printed by bench/hostile.py; the scale phase's are
`REGISTRY.scale.KEY`, KEY as printed by bench/scale.py or set by bench/scale.sh). Prints the markdown
and writes it to OUT_MD.
"""
import sys

MiB = 1024.0

# Target from the auth issue: with htpasswd auth, pier keeps at least this fraction of its
# no-auth manifest GET rate.
AUTH_TARGET = 0.5

# key, label, unit, scale (value / scale is shown), better ("high"/"low"), decimals
METRICS = [
    ("start_ms", "cold start: exec -> first 200 on GET /v2/ (median)", "ms", 1, "low", 1),
    ("idle_rss_kb", "idle RSS ~1 s after start", "MiB", MiB, "low", 1),
    ("push_small_mbs", "skopeo push {small} MiB image", "MiB/s", 1, "high", 1),
    ("push_small_peak_kb", "peak RSS during push {small} MiB image", "MiB", MiB, "low", 1),
    ("push_large_mbs", "skopeo push {large} MiB image", "MiB/s", 1, "high", 1),
    ("push_large_peak_kb", "peak RSS during push {large} MiB image", "MiB", MiB, "low", 1),
    ("put_mbs", "curl monolithic PUT {large} MiB blob", "MiB/s", 1, "high", 1),
    ("put_cpu_s_per_gib", "server CPU during PUT (utime+stime)", "s/GiB", 1, "low", 3),
    ("put_user_s_per_gib", "  of which user time (hashing, HTTP)", "s/GiB", 1, "low", 3),
    ("put_sys_s_per_gib", "  of which system time (socket, page cache, disk)", "s/GiB", 1, "low", 3),
    ("put_faults_per_gib", "server minor page faults during PUT", "1/GiB", 1, "low", 0),
    ("put_peak_kb", "peak RSS during PUT", "MiB", MiB, "low", 1),
    ("get_mbs", "GET {large} MiB blob, curl -o /dev/null (best of {getn})", "MiB/s", 1, "high", 1),
    ("get_py_mbs", "GET {large} MiB blob, 4 MiB-buffer client get.py (best of {getn})",
     "MiB/s", 1, "high", 1),
    ("get_peak_kb", "peak RSS during GET", "MiB", MiB, "low", 1),
    ("wrk_rps", "manifest GET by tag, wrk {wrk}", "req/s", 1, "high", 0),
    ("wrk_p99_ms", "manifest GET by tag, p99 latency", "ms", 1, "low", 2),
    ("wrk_peak_kb", "peak RSS during wrk", "MiB", MiB, "low", 1),
    ("wrk_auth_rps", "manifest GET by tag with htpasswd auth (bcrypt cost {cost}), wrk {wrk}",
     "req/s", 1, "high", 0),
    ("wrk_auth_p99_ms", "manifest GET by tag with htpasswd auth, p99 latency", "ms", 1, "low", 2),
    ("wrk_auth_peak_kb", "peak RSS during wrk with htpasswd auth", "MiB", MiB, "low", 1),
    ("wrk_auth_ratio", "auth/no-auth rate ratio (manifest GET req/s with auth / without)",
     "ratio", 1, "high", 2),
    ("binary_kb", "binary size", "MiB", MiB, "low", 1),
]


def load(path):
    vals, notes = {}, []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            k, _, v = line.partition("\t")
            if k == "note":
                notes.append(v)
            else:
                vals[k] = v
    return vals, notes


def num(vals, key):
    try:
        return float(vals[key])
    except (KeyError, ValueError):
        return None


def fmt(v, scale, dec):
    return "—" if v is None else "{:,.{d}f}".format(v / scale, d=dec)


# Counts that are near zero for a healthy server: a ratio of two tiny numbers means nothing.
NO_RATIO = {"put_faults_per_gib"}


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "—"
    return "{:.2f}".format(a / b)


def core_targets(vals):
    """(name, measured, target, met) for each target of the registry core that this run measured."""
    out = []
    p = lambda k: num(vals, "pier." + k)
    cpu = p("put_cpu_s_per_gib")
    if cpu is not None:
        out.append(("server CPU per GiB pushed", "{:.3f} s".format(cpu), "<= 1.5 s", cpu <= 1.5))
    get, nginx = p("get_mbs"), num(vals, "nginx.get_mbs")
    if get is not None and nginx:
        out.append(("curl pull vs nginx", "{:.0f} %".format(100 * get / nginx), ">= 90 %", get >= 0.9 * nginx))
    rps, drps = p("wrk_rps"), num(vals, "distribution.wrk_rps")
    if rps is not None and drps:
        out.append(("manifest GET vs Distribution", "{:.1f}x".format(rps / drps), ">= 5x", rps >= 5 * drps))
    peaks = [v for v in (p("push_large_peak_kb"), p("put_peak_kb"), p("get_peak_kb")) if v is not None]
    if peaks:
        out.append(("peak RSS during the large push, PUT and pull", "{:.1f} MiB".format(max(peaks) / MiB),
                    "<= 32 MiB", max(peaks) <= 32 * MiB))
    idle = p("idle_rss_kb")
    if idle is not None:
        out.append(("idle RSS", "{:.1f} MiB".format(idle / MiB), "<= 8 MiB", idle <= 8 * MiB))
    return out


HOSTILE_ATTACKS = [
    ("readers", "stalled readers", "{readers} HTTP/1.1 connections GET the {blob} MiB blob with "
     "SO_RCVBUF={rcvbuf} and never read"),
    ("writers", "stalled writers", "{writers} connections POST an upload, then PATCH it announcing "
     "Content-Length {announce}, send {send} bytes and stall"),
    ("h2", "h2 window 0", "{h2conns} HTTP/2 connections ({h2transport}) with "
     "SETTINGS_INITIAL_WINDOW_SIZE=0, {h2streams} streams each GET the {blob} MiB blob"),
]

# column label, key (None: composed cell), scale, decimals, pier/dist ratio shown
HOSTILE_COLUMNS = [
    ("RSS idle MiB", "rss_idle_kb", MiB, 1, False),
    ("RSS peak MiB", "rss_peak_kb", MiB, 1, True),
    ("RSS {after} s after MiB", "rss_after_kb", MiB, 1, True),
    ("threads peak / end of hold / peak after close", None, None, None, False),
    ("victim p99 before ms", "before_victim_p99_ms", 1, 1, False),
    ("victim p50 ms", "victim_p50_ms", 1, 1, True),
    ("victim p99 ms", "victim_p99_ms", 1, 1, True),
    ("victim max ms", "victim_max_ms", 1, 1, True),
    ("victim errors / requests", None, None, None, False),
    ("victim p99 after ms", "after_victim_p99_ms", 1, 1, True),
    ("attackers accepted / refused / other", None, None, None, False),
]


def hostile_cell(vals, reg, kind, col):
    g = lambda k: vals.get("{}.hostile.{}.{}".format(reg, kind, k))
    label, key, scale, dec, _ = col
    if key is not None:
        return fmt(num(vals, "{}.hostile.{}.{}".format(reg, kind, key)), scale, dec)
    if label.startswith("threads"):
        return "{} / {} / {}".format(g("threads_peak_during") or "—", g("threads_end") or "—",
                                     g("threads_peak_after") or "—")
    if label.startswith("victim errors"):
        return "{} / {}".format(g("victim_err") or "—", g("victim_n") or "—")
    return "{} / {} / {}".format(g("att_accepted") or "—", g("att_refused") or "—", g("att_other") or "—")


def hostile_table(vals, m):
    """The hostile phase's lines: rows = attack x registry (+ a pier/dist ratio row); [] if not run."""
    regs = [r for r in ("pier", "distribution") if any(k.startswith(r + ".hostile.") for k in vals)]
    if not regs:
        return []
    ctx = {"readers": m("hostile_readers"), "rcvbuf": m("hostile_rcvbuf"), "blob": m("hostile_blob_mb"),
           "writers": m("hostile_writers"), "announce": m("hostile_announce"), "send": m("hostile_send"),
           "h2conns": m("hostile_h2_conns"), "h2streams": m("hostile_h2_streams"),
           "h2transport": "TLS, ALPN h2" if m("hostile_h2_transport") == "tls" else "h2c, prior knowledge",
           "after": m("hostile_after_s")}
    lines = ["", "## Hostile clients", "",
             "Each attack runs {} s against a fresh server process; a victim client meanwhile does "
             "sequential manifest GETs by tag ({}, timeout {} s; a failed request counts as the "
             "timeout in the percentiles).".format(m("hostile_duration_s"), m("hostile_victim"),
                                                   m("hostile_timeout_s")), ""]
    for kind, name, desc in HOSTILE_ATTACKS:
        if any(k.startswith("{}.hostile.{}.".format(r, kind)) for r in regs for k in vals):
            lines.append("- {}: {}".format(name, desc.format(**ctx)))
    sources = m("hostile_sources", "1")
    lines.append("- attackers' source: {}".format(
        "one address, 127.0.0.1 (one client)" if sources == "1" else
        "{} addresses 127.1.x.y, round-robin (many clients)".format(sources)))
    lines.append("")
    cols = [c[0].format(**ctx) for c in HOSTILE_COLUMNS]
    lines.append("| attack | registry | " + " | ".join(cols) + " |")
    lines.append("| --- | --- | " + " | ".join("---:" for _ in cols) + " |")
    for kind, name, _ in HOSTILE_ATTACKS:
        seen = [r for r in regs if any(k.startswith("{}.hostile.{}.".format(r, kind)) for k in vals)]
        for reg in seen:
            g = lambda k: vals.get("{}.hostile.{}.{}".format(reg, kind, k))
            if g("na"):
                cells = ["n/a ({})".format(g("na"))] + [""] * (len(cols) - 1)
            else:
                cells = [hostile_cell(vals, reg, kind, c) for c in HOSTILE_COLUMNS]
                if g("died") == "1":
                    cells[1] += " (server DIED)"
                if g("failed") == "1":
                    cells[0] += " (attack tool failed)"
            lines.append("| {} | {} | {} |".format(name, reg, " | ".join(cells)))
        if len(seen) == 2 and not any(vals.get("{}.hostile.{}.na".format(r, kind)) for r in seen):
            cells = []
            for _, key, _, _, show in HOSTILE_COLUMNS:
                p = num(vals, "pier.hostile.{}.{}".format(kind, key)) if show else None
                d = num(vals, "distribution.hostile.{}.{}".format(kind, key)) if show else None
                cells.append(ratio(p, d) if show else "")
            lines.append("| {} | pier/dist | {} |".format(name, " | ".join(cells)))
    lines.append("")
    lines.append("Attacker outcomes (count per outcome; accepted = 2xx, or for writers the PATCH body "
                 "still being waited for; refused = 429/503, or h2 RST_STREAM REFUSED_STREAM / "
                 "ENHANCE_YOUR_CALM; other = anything else):")
    for kind, name, _ in HOSTILE_ATTACKS:
        for reg in regs:
            st = vals.get("{}.hostile.{}.att_status".format(reg, kind))
            if st is None:
                continue
            extra = ""
            ms = vals.get("{}.hostile.{}.h2_max_streams".format(reg, kind))
            if ms is not None:
                extra = " (server's SETTINGS_MAX_CONCURRENT_STREAMS: {})".format(ms)
            verr = vals.get("{}.hostile.{}.victim_errors".format(reg, kind))
            verr = "" if verr in (None, "-") else "; victim errors: " + verr
            lines.append("- {}, {}: {}{}{}".format(name, reg, st, extra, verr))
    pr = num(vals, "pier.hostile.readers.rss_peak_kb")
    pp = num(vals, "pier.hostile.readers.victim_p99_ms")
    if pr is not None and pp is not None:
        lines.append("")
        met = pp <= 50 and pr <= 64 * MiB
        lines.append("Issue 9 target (with 600 stalled readers a manifest GET answers with p99 <= 50 ms "
                     "and server RSS stays <= 64 MiB): {} stalled readers, p99 {:.1f} ms, RSS peak "
                     "{:.1f} MiB -> {}{}".format(
                         ctx["readers"], pp, pr / MiB, "met" if met else "NOT met",
                         "" if ctx["readers"] == "600" else " (only meaningful at 600 readers)"))
    return lines


# The scale phase (bench/scale.sh): key (REGISTRY.scale.KEY), label, unit, scale, better, decimals
SCALE_METRICS = [
    ("fill_blobs_per_s", "fill: blob uploads ({upload})", "blobs/s", 1, "high", 0),
    ("fill_manifests_per_s", "fill: manifest PUTs (one per repository)", "PUT/s", 1, "high", 0),
    ("data_mb", "data dir after the fill", "MiB", 1, "low", 0),
    ("data_files", "files in the data dir after the fill", "files", 1, "low", 0),
    ("start_cold_empty_ms", "start-up, empty store, cold page cache (median of {starts})", "ms", 1, "low", 1),
    ("start_warm_empty_ms", "start-up, empty store, warm page cache (median of {starts})", "ms", 1, "low", 1),
    ("start_cold_ms", "start-up, {blobs} blobs / {repos} repos, cold page cache (median of {starts})",
     "ms", 1, "low", 1),
    ("start_warm_ms", "start-up, {blobs} blobs / {repos} repos, warm page cache (median of {starts})",
     "ms", 1, "low", 1),
    ("rss_start_kb", "RSS ~1 s after start (full store)", "MiB", MiB, "low", 1),
    ("hwm_start_kb", "peak RSS from exec to ~1 s after start", "MiB", MiB, "low", 1),
    ("catalog_first_after_start_ms", "first GET /v2/_catalog?n=100 after start", "ms", 1, "low", 2),
    ("rss_catalog_kb", "RSS after that first catalog page", "MiB", MiB, "low", 1),
    ("catalog_first_ms", "GET /v2/_catalog?n=100, first page (median of {pages})", "ms", 1, "low", 2),
    ("catalog_middle_ms", "GET /v2/_catalog?n=100&last=, middle page", "ms", 1, "low", 2),
    ("catalog_last_ms", "GET /v2/_catalog?n=100&last=, last page", "ms", 1, "low", 2),
    ("tags_single_ms", "GET tags/list?n=100, repository with 1 tag", "ms", 1, "low", 2),
    ("tags_first_ms", "GET tags/list?n=100, repository with {tags} tags, first page", "ms", 1, "low", 2),
    ("tags_middle_ms", "GET tags/list?n=100&last=, {tags} tags, middle page", "ms", 1, "low", 2),
    ("tags_last_ms", "GET tags/list?n=100&last=, {tags} tags, last page", "ms", 1, "low", 2),
    ("tags_fill_s", "time to add the {tags} tags (not comparable: see below)", "s", 1, "low", 3),
]
SCALE_NO_RATIO = {"tags_fill_s"}


def scale_ratio(a, b):
    """ratio() with enough digits for the 100x differences of the paging rows."""
    if a is not None and b and 0 < a / b < 0.1:
        return "{:.4f}".format(a / b)
    return ratio(a, b)


def scale_table(vals, m):
    """The scale phase's lines: rows = metric, columns = registry and ratio; [] if not run."""
    if not any(".scale." in k for k in vals):
        return []
    g = lambda r, k: vals.get("{}.scale.{}".format(r, k))
    uploads = sorted({"{}: {}".format(r, g(r, "fill_upload")) for r in ("pier", "distribution")
                      if g(r, "fill_upload")})
    ctx = {"blobs": "{:,}".format(int(m("scale_blobs", "0"))), "repos": "{:,}".format(int(m("scale_repos", "0"))),
           "tags": "{:,}".format(int(m("scale_tags", "0"))), "starts": m("scale_start_repeat"),
           "pages": m("scale_page_repeat"), "upload": ", ".join(uploads)}
    lines = ["", "## Scale", "",
             "{blobs} small distinct blobs in {repos} repositories (plus one manifest and tag per "
             "repository; {tags} extra tags on scale/r00000), pushed by {w} keep-alive connections; "
             "start-up = exec -> first 200 on GET /v2/; cold = after `sync; echo 3 > "
             "/proc/sys/vm/drop_caches` (the binary is evicted too: compare with the empty-store "
             "row){drop}.".format(w=m("scale_workers"), drop="" if m("scale_drop_caches") == "1"
                                  else " (drop_caches not writable: no cold rows)", **ctx), "",
             "| metric | unit | better | pier | distribution | ratio (pier/dist) |",
             "| --- | --- | --- | ---: | ---: | ---: |"]
    for key, label, unit, scale, better, dec in SCALE_METRICS:
        p, d = num(vals, "pier.scale." + key), num(vals, "distribution.scale." + key)
        if p is None and d is None:
            continue
        lines.append("| {} | {} | {} | {} | {} | {} |".format(
            label.format(**ctx), unit, "higher" if better == "high" else "lower",
            fmt(p, scale, dec), fmt(d, scale, dec), "—" if key in SCALE_NO_RATIO else scale_ratio(p, d)))
    if g("pier", "tags_fill_s") or g("distribution", "tags_fill_s"):
        lines.append("")
        lines.append("Tags were added with {} (pier: many `?tag=` per manifest PUT; Distribution 2.8 "
                     "has no multi-tag PUT: one PUT per tag).".format(", ".join(
                         "{}: {}".format(r, g(r, "tags_mode")) for r in ("pier", "distribution")
                         if g(r, "tags_mode"))))
    return lines


# The gc phase (bench/gc.sh): key (REGISTRY.gc.KEY), label, unit, scale, better, decimals
GC_METRICS = [
    ("fill_blobs_per_s", "fill: blob uploads ({upload})", "blobs/s", 1, "high", 0),
    ("delete_per_s", "manifest DELETEs by digest ({deleted} images)", "DELETE/s", 1, "high", 0),
    ("before_kb", "data dir after the deletes, before the GC (du)", "MiB", MiB, "low", 1),
    ("before_files", "files in it", "files", 1, "low", 0),
    ("gc_ms", "GC wall time (pier: online, `pier gc`; Distribution: offline `garbage-collect`)",
     "ms", 1, "low", 0),
    ("gc2_ms", "the next GC right after (pier: visits only what changed since)", "ms", 1, "low", 0),
    ("gc2_repositories", "  repositories it visited", "repos", 1, "low", 0),
    ("downtime_ms", "downtime: no push or pull possible (Distribution: stop + GC + start)", "ms", 1, "low", 0),
    ("gc_peak_kb", "peak RSS of the process doing the GC (pier: the daemon, serving too)", "MiB", MiB, "low", 1),
    ("gc_cpu_s", "CPU time (user+sys) of that process during the GC (pier: serving the loop too)", "s", 1,
     "low", 2),
    ("blobs_freed", "blob files removed, as the registry counts them", "blobs", 1, "high", 0),
    ("after_kb", "data dir after the GC (du)", "MiB", MiB, "low", 1),
    ("after_files", "files in it", "files", 1, "low", 0),
    ("du_freed_kb", "disk freed (du before - after)", "MiB", MiB, "high", 1),
    ("base_push_p50_ms", "push of a small image, no GC running: p50", "ms", 1, "low", 1),
    ("base_push_p99_ms", "  p99", "ms", 1, "low", 1),
    ("during_push_p50_ms", "push of a small image during the GC: p50", "ms", 1, "low", 1),
    ("during_push_p99_ms", "  p99", "ms", 1, "low", 1),
    ("during_push_max_ms", "  max", "ms", 1, "low", 1),
    ("base_pull_p50_ms", "pull of a kept image, no GC running: p50", "ms", 1, "low", 1),
    ("base_pull_p99_ms", "  p99", "ms", 1, "low", 1),
    ("during_pull_p50_ms", "pull of a kept image during the GC: p50", "ms", 1, "low", 1),
    ("during_pull_p99_ms", "  p99", "ms", 1, "low", 1),
    ("during_pull_max_ms", "  max", "ms", 1, "low", 1),
]
GC_NO_RATIO = {"blobs_freed", "before_files", "after_files", "downtime_ms", "gc2_ms", "gc2_repositories"}


def gc_table(vals, m):
    """The gc phase's lines: rows = metric, columns = registry and ratio; [] if not run."""
    if not any(".gc." in k for k in vals):
        return []
    g = lambda r, k: vals.get("{}.gc.{}".format(r, k))
    regs = [r for r in ("pier", "distribution") if any(k.startswith(r + ".gc.") for k in vals)]
    uploads = sorted({"{}: {}".format(r, g(r, "fill_upload")) for r in regs if g(r, "fill_upload")})
    ref = regs[0]
    ctx = {"upload": ", ".join(uploads), "deleted": "{:,}".format(int(g(ref, "deleted_manifests") or 0))}
    lines = ["", "## Garbage collection", "",
             "{blobs} small distinct blobs in {repos} repositories, one image (manifest tagged `bench`) "
             "each; every odd repository's image also lists the first layer of the even one before it. "
             "Then the odd images are deleted by digest: {garbage} blobs ({gbytes} bytes) only they "
             "listed become garbage, {shared} shared layers must stay. pier collects online (`pier gc "
             "--grace {grace} --json`, run by the daemon) while a push/pull loop runs (a pusher and a "
             "puller, one image each at most every {iv} ms: a push = config + layer + manifest into a "
             "kept repository, a pull = manifest by tag + every blob, checked against its digest); "
             "Distribution 2.8 collects offline: stopped, `docker-registry garbage-collect CONFIG`, "
             "started again (the loop's baseline is measured with the registry running, {base} s, no "
             "GC). Latencies are whole-image push/pull times.".format(
                 blobs="{:,}".format(int(m("gc_blobs", "0"))), repos="{:,}".format(int(m("gc_repos", "0"))),
                 garbage="{:,}".format(int(g(ref, "expect_blobs_freed") or 0)),
                 gbytes="{:,}".format(int(g(ref, "expect_bytes_freed") or 0)),
                 shared="{:,}".format(int(g(ref, "expect_shared_kept") or 0)), grace=m("gc_grace"),
                 iv=m("gc_interval_ms"), base=m("gc_baseline_s")), "",
             "| metric | unit | better | pier | distribution | ratio (pier/dist) |",
             "| --- | --- | --- | ---: | ---: | ---: |"]
    for key, label, unit, scale, better, dec in GC_METRICS:
        p, d = num(vals, "pier.gc." + key), num(vals, "distribution.gc." + key)
        if p is None and d is None:
            continue
        dcell = fmt(d, scale, dec)
        if d is None and key.startswith("during_") and "distribution" in regs:
            dcell = "down"
        lines.append("| {} | {} | {} | {} | {} | {} |".format(
            label.format(**ctx), unit, "higher" if better == "high" else "lower",
            fmt(p, scale, dec), dcell, "—" if key in GC_NO_RATIO else scale_ratio(p, d)))
    lines.append("")
    for r in regs:
        errs = []
        for phase in ("base", "during"):
            for k in ("push", "pull"):
                n, e = g(r, "{}_{}_n".format(phase, k)), g(r, "{}_{}_err".format(phase, k))
                if n is None:
                    continue
                errs.append("{} {}: {} of {} failed{}".format(
                    "baseline" if phase == "base" else "during the GC", k, e, n,
                    "" if e in ("0", None) else " ({})".format(g(r, "{}_{}_errors".format(phase, k)))))
        if errs:
            lines.append("- {} loop: {}".format(r, "; ".join(errs)))
        if g(r, "verify_after_failures") is not None:
            lines.append("- {} after the GC: {} kept images ({} blobs) pulled byte-identical by tag and "
                         "by digest, {} garbage blobs of {} deleted images checked gone (HTTP 404 and "
                         "no file), {} shared blobs still pulled: {} -> {}".format(
                             r, g(r, "verify_kept_images"), g(r, "verify_kept_blobs"), g(r, "verify_garbage_blobs"),
                             g(r, "verify_deleted_images"), g(r, "verify_shared_blobs"),
                             "{} failures".format(g(r, "verify_after_failures")),
                             "ok" if g(r, "verify_after_failures") == "0" else "FAILED"))
        if g(r, "verify_before_failures") not in (None, "0"):
            lines.append("- {} before the GC: {} checks failed (garbage not pullable before the GC?)".format(
                r, g(r, "verify_before_failures")))
    if g("pier", "report_links"):
        lines.append("- pier's report: {} repositories, {} blob links and {} manifests removed, {} blob "
                     "files ({} bytes) freed, {} links kept for the grace period, {} ms in the daemon".format(
                         *(g("pier", "report_" + k) for k in ("repositories", "links", "manifests", "blobs_freed",
                                                                "bytes_freed", "in_grace", "elapsed_ms"))))
    if g("distribution", "marked"):
        lines.append("- Distribution's garbage-collect: {} blobs marked, {} blobs and {} manifests eligible "
                     "for deletion (its blob count includes the deleted manifests' own blobs: a DELETE "
                     "leaves their files for the GC)".format(
                         g("distribution", "marked"), g("distribution", "blobs_freed"),
                         g("distribution", "manifests_eligible")))
    return lines


def main():
    src, out = sys.argv[1], sys.argv[2]
    vals, notes = load(src)
    m = lambda k, d="?": vals.get("meta." + k, d)
    ctx = {"small": m("small_mb"), "large": m("large_mb"), "getn": m("get_repeat"),
           "wrk": m("wrk_args"), "cost": m("bcrypt_cost")}
    lines = []
    lines.append("# pier vs Distribution benchmark")
    lines.append("")
    lines.append("- machine: {} | nproc {} | {} | kernel {}".format(
        m("cpu"), m("nproc"), m("date"), m("kernel")))
    lines.append("- pier {} | Distribution {} | skopeo {} | nginx {} | curl {}".format(
        m("pier_version"), m("distribution_version"), m("skopeo_version"),
        m("nginx_version"), m("curl_version")))
    core = "core" in m("phases", "core").split(",")
    if core:
        lines.append("- data: {} MiB and {} MiB single-layer images, {} MiB raw blob "
                     "(incompressible); MiB/s = 2^20 bytes/s; same machine, one run, "
                     "registries run one after the other".format(
                         m("small_mb"), m("large_mb"), m("large_mb")))
        lines.append("")
        lines.append("| metric | unit | better | pier | distribution | ratio (pier/dist) |")
        lines.append("| --- | --- | --- | ---: | ---: | ---: |")
    for key, label, unit, scale, better, dec in METRICS if core else []:
        p, d = num(vals, "pier." + key), num(vals, "distribution." + key)
        if p is None and d is None:
            continue
        lines.append("| {} | {} | {} | {} | {} | {} |".format(
            label.format(**ctx), unit, "higher" if better == "high" else "lower",
            fmt(p, scale, dec), fmt(d, scale, dec), "—" if key in NO_RATIO else ratio(p, d)))
    pa = num(vals, "pier.wrk_auth_ratio")
    if pa is not None:
        lines.append("")
        lines.append("Auth target (pier keeps >= {:.0f} % of its no-auth manifest GET rate with "
                     "htpasswd auth): pier keeps {:.0f} % -> {}".format(
                         AUTH_TARGET * 100, pa * 100, "met" if pa >= AUTH_TARGET else "NOT met"))
    ng, ngp = num(vals, "nginx.get_mbs"), num(vals, "nginx.get_py_mbs")
    if ng is not None or ngp is not None:
        lines.append("")
        lines.append("| GET {} MiB blob vs nginx sendfile (ceiling) | curl MiB/s | ratio to nginx "
                     "| get.py MiB/s | ratio to nginx |".format(m("large_mb")))
        lines.append("| --- | ---: | ---: | ---: | ---: |")
        for who in ("nginx", "pier", "distribution"):
            g, gp = num(vals, who + ".get_mbs"), num(vals, who + ".get_py_mbs")
            if g is None and gp is None:
                continue
            lines.append("| {} | {} | {} | {} | {} |".format(
                who, fmt(g, 1, 1), ratio(g, ng), fmt(gp, 1, 1), ratio(gp, ngp)))
    lines.extend(hostile_table(vals, m))
    lines.extend(scale_table(vals, m))
    lines.extend(gc_table(vals, m))
    targets = core_targets(vals)
    if targets:
        lines.append("")
        lines.append("Targets of the registry core (issue 2), this run:")
        for name, value, limit, met in targets:
            lines.append("- {}: {} (target {}) -> {}".format(name, value, limit, "met" if met else "NOT met"))
    if notes:
        lines.append("")
        lines.append("Notes:")
        for n in notes:
            lines.append("- " + n)
    text = "\n".join(lines) + "\n"
    with open(out, "w") as f:
        f.write(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
