#!/usr/bin/env python3
"""Tag-scale client for bench/tags.sh (stdlib only).

  tags.py PORT MODE SIZES PUTS PAUSE_MS OUT_JSON [INDEX_JSON]

Against the registry on 127.0.0.1:PORT (no auth): pushes one tiny image (config + layer) to
`tags/big`, then for each size in SIZES (comma-separated, ascending) grows that repository to
SIZE tags of the one manifest, and measures PUTS manifest PUTs there (each a new manifest, a
distinct annotation, with one new tag) one after the other with PAUSE_MS between them (so that
the phase lasts a few seconds and covers whatever a registry does after answering, such as
pier's background index.json writes), while a second thread commits
small blobs (1 KiB: POST, then PUT ?digest=, the PUT timed) into another repository,
`tags/other`, with a 5 ms pause between commits. Before the first size it also measures blob
commits alone (no manifest traffic), as a baseline.

MODE says how tags are created:
  multi   one manifest PUT carries up to BATCH tags (`?tag=a&tag=b...`, OCI 1.1, pier)
  single  one manifest PUT per tag, from THREADS threads (Distribution 2.8 has no `?tag=`)

With INDEX_JSON (pier's `repositories/tags/big/index.json`), it also measures, after the last
manifest PUT of each size, how long until that file names the PUT's tag ("index lag").

Writes a JSON object: {size: {"put_p50_ms", "put_p99_ms", "blob_p50_ms", "blob_p99_ms",
"fill_s", ...}, "baseline": {...}} to OUT_JSON; progress to stderr.
"""
import hashlib
import http.client
import json
import os
import sys
import threading
import time

BATCH = 2000
THREADS = 8
REPO = "tags/big"
OTHER = "tags/other"
MT = "application/vnd.oci.image.manifest.v1+json"


def log(msg):
    print("[tags %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


class Client:
    def __init__(self, port):
        self.port = port
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                r = self.conn.getresponse()
                data = r.read()
                return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise RuntimeError("unreachable")


def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def push_blob(c, repo, data):
    """POST, then PUT ?digest= with the bytes; returns the PUT's latency in seconds."""
    st, h, body = c.request("POST", "/v2/%s/blobs/uploads/" % repo, b"", {"Content-Length": "0"})
    if st != 202:
        raise SystemExit("POST upload to %s: %d %r" % (repo, st, body[:300]))
    loc = h["location"]
    if loc.startswith("http"):
        loc = "/" + loc.split("/", 3)[3]
    sep = "&" if "?" in loc else "?"
    t0 = time.perf_counter()
    st, _, body = c.request("PUT", "%s%sdigest=%s" % (loc, sep, digest(data)), data,
                            {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))})
    dt = time.perf_counter() - t0
    if st != 201:
        raise SystemExit("PUT blob to %s: %d %r" % (repo, st, body[:300]))
    return dt


def manifest(config, layer, note):
    m = {
        "schemaVersion": 2,
        "mediaType": MT,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(layer),
                    "size": len(layer)}],
    }
    if note is not None:
        m["annotations"] = {"bench.note": note}
    return json.dumps(m, separators=(",", ":")).encode()


def put_manifest(c, ref, body, extra_tags=()):
    q = "&".join("tag=" + t for t in extra_tags)
    path = "/v2/%s/manifests/%s%s" % (REPO, ref, "?" + q if q else "")
    t0 = time.perf_counter()
    st, _, resp = c.request("PUT", path, body, {"Content-Type": MT, "Content-Length": str(len(body))})
    dt = time.perf_counter() - t0
    if st != 201:
        raise SystemExit("PUT manifest %s: %d %r" % (ref, st, resp[:300]))
    return dt


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return None
    k = min(len(xs) - 1, max(0, int(round(p / 100.0 * (len(xs) - 1)))))
    return round(xs[k] * 1000, 2)


class BlobCommitter(threading.Thread):
    def __init__(self, port):
        super().__init__(daemon=True)
        self.c = Client(port)
        self.stop = threading.Event()
        self.lat = []
        self.error = None

    def run(self):
        try:
            while not self.stop.is_set():
                self.lat.append(push_blob(self.c, OTHER, os.urandom(1024)))
                time.sleep(0.005)
        except BaseException as e:  # reported by the main thread
            self.error = e


def fill(port, mode, body, have, want):
    """Creates tags t{have}..t{want-1} of the one manifest."""
    names = ["t%06d" % i for i in range(have, want)]
    if mode == "multi":
        c = Client(port)
        for i in range(0, len(names), BATCH):
            chunk = names[i:i + BATCH]
            put_manifest(c, chunk[0], body, chunk[1:])
        return
    errors = []

    def worker(part):
        c = Client(port)
        try:
            for n in part:
                put_manifest(c, n, body)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(names[k::THREADS],)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def main():
    port, mode, sizes, puts = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    pause, out = int(sys.argv[5]) / 1000.0, sys.argv[6]
    index_json = sys.argv[7] if len(sys.argv) > 7 else None
    if mode not in ("multi", "single"):
        raise SystemExit("MODE must be multi or single")
    sizes = [int(s) for s in sizes.split(",")]
    c = Client(port)
    config, layer = b'{"architecture":"amd64","os":"linux"}', os.urandom(512)
    push_blob(c, REPO, config)
    push_blob(c, REPO, layer)
    base = manifest(config, layer, None)
    results = {}

    # Baseline: blob commits with no manifest traffic.
    committer = BlobCommitter(port)
    committer.start()
    time.sleep(3)
    committer.stop.set()
    committer.join()
    if committer.error:
        raise committer.error
    results["baseline"] = {"blob_p50_ms": pct(committer.lat, 50), "blob_p99_ms": pct(committer.lat, 99),
                           "blob_n": len(committer.lat)}
    log("baseline blob commit: p50 %s ms, p99 %s ms (%d)" % (
        results["baseline"]["blob_p50_ms"], results["baseline"]["blob_p99_ms"], len(committer.lat)))

    have = 0
    for size in sizes:
        t0 = time.perf_counter()
        fill(port, mode, base, have, size)
        fill_s = time.perf_counter() - t0
        have = size
        log("%d tags in %s (filled in %.1f s); %d manifest PUTs" % (size, REPO, fill_s, puts))
        committer = BlobCommitter(port)
        committer.start()
        lat = []
        for i in range(puts):
            body = manifest(config, layer, "%d-%d" % (size, i))
            lat.append(put_manifest(c, "p%d-%d" % (size, i), body))
            time.sleep(pause)
        done = time.perf_counter()
        lag = None
        if index_json:
            needle = ('"p%d-%d"' % (size, puts - 1)).encode()
            seen = None
            while True:
                # Read the (13 MB at 50,000 tags) file only when it was replaced.
                try:
                    st = os.stat(index_json)
                    if (st.st_ino, st.st_size, st.st_mtime_ns) != seen:
                        seen = (st.st_ino, st.st_size, st.st_mtime_ns)
                        with open(index_json, "rb") as f:
                            if needle in f.read():
                                break
                except OSError:
                    pass
                if time.perf_counter() - done > 10:
                    raise SystemExit("%s does not name the last tag 10 s after its PUT" % index_json)
                time.sleep(0.005)
            lag = round((time.perf_counter() - done) * 1000, 1)
        committer.stop.set()
        committer.join()
        if committer.error:
            raise committer.error
        r = {"index_lag_ms": lag, "put_p50_ms": pct(lat, 50), "put_p99_ms": pct(lat, 99), "put_n": len(lat),
             "blob_p50_ms": pct(committer.lat, 50), "blob_p99_ms": pct(committer.lat, 99),
             "blob_n": len(committer.lat), "fill_s": round(fill_s, 1)}
        results[str(size)] = r
        log("%d tags: manifest PUT p50 %s ms p99 %s ms; blob commit p50 %s ms p99 %s ms (%d); index lag %s ms" % (
            size, r["put_p50_ms"], r["put_p99_ms"], r["blob_p50_ms"], r["blob_p99_ms"], r["blob_n"], lag))
    with open(out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
