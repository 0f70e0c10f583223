#!/usr/bin/env python3
"""Store-size tool for bench/run.sh's "scale" phase (stdlib only, Python >= 3.7).

  scale.py fill --base URL --blobs B --repos R [--workers W] [--tag TAG] [--upload MODE]
          [--share-pairs] [--manifests FILE]
      fills the registry at URL with B small distinct blobs in R repositories named
      scale/r00000... (B // R per repository, the remainder spread over the first ones), then
      one OCI manifest per repository (config = the repository's first blob, a small JSON
      document; layers = the others) tagged TAG. W worker threads, each with its own
      keep-alive HTTP/1.1 connection, take whole repositories from a shared queue.
      --share-pairs: each odd repository also pushes the first layer of the even one before
      it and lists it as its last layer (a layer shared by two images; still B distinct
      blobs). --manifests FILE: one JSON line per repository, {"repo", "tag", "manifest"
      (digest), "blobs" [digests, config first], "shared" [those also in another
      repository], "bytes" {digest: size}} (bench/gc.py reads it). MODE:
        post     one request per blob: POST /v2/R/blobs/uploads/?digest=D with the body
                 (201 expected)
        postput  POST /v2/R/blobs/uploads/ (202 + Location), then PUT Location?digest=D with
                 the body (two requests per blob; what Distribution 2.8 needs: it ignores
                 ?digest= and a body on the POST)
        auto     (default) try `post` on the first blob; if the registry answers 202, use
                 `postput` for every blob (the first one included)
  scale.py tags --base URL --repo REPO --tag TAG --count T [--mode query|each] [--batch N]
          [--workers W]
      gives REPO's manifest (the one tagged TAG) T more tags t00000...: `query` sends
      `PUT /v2/REPO/manifests/DIGEST?tag=t00000&tag=t00001...` with N tags per request (pier's
      multi-tag PUT); `each` sends one `PUT /v2/REPO/manifests/tNNNNN` per tag, W in parallel.
  scale.py pages --base URL --repos R [--tags-repo REPO --tags T] [--repeat K]
      times GET /v2/_catalog?n=100 for the first page, a middle page (last=the repository in
      the middle) and the last page (last=the 101st name from the end), and
      GET /v2/REPO/tags/list?n=100 likewise for REPO if given (T = how many t* tags it has;
      0: only its first page) and for scale/r00001 (one tag), each K times on one keep-alive connection; every answer must be
      200, and a catalog page must hold the expected names (a tags page that does not is
      reported as `tags_*_paged 0`: Distribution 2.8 ignores n/last on tags/list).
  scale.py get --base URL --path PATH
      one GET (status must be 200); prints the time in ms.

fill/tags/pages print `key<TAB>value` lines on stdout (run.sh stores them as
REGISTRY.scale.KEY); times are in ms (medians of K for pages), rates per second.
"""
import argparse
import hashlib
import http.client
import json
import queue
import statistics
import sys
import threading
import time
from urllib.parse import quote, urlsplit

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
PAGE = 100


class Fail(Exception):
    pass


def repo_name(i):
    return "scale/r%05d" % i


def tag_name(i):
    return "t%05d" % i


class Client:
    """One keep-alive HTTP/1.1 connection to BASE, reopened if the server closes it."""

    def __init__(self, base, timeout=60):
        u = urlsplit(base)
        if u.scheme != "http" or not u.hostname or not u.port:
            raise Fail("BASE must look like http://HOST:PORT (got %r)" % base)
        self.host, self.port, self.timeout = u.hostname, u.port, timeout
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                r = self.conn.getresponse()
                data = r.read()
                if r.getheader("connection", "").lower() == "close":
                    self.close()
                return r.status, {k.lower(): v for k, v in r.getheaders()}, data
            except (http.client.HTTPException, OSError):
                self.close()
                if attempt:
                    raise
        raise Fail("unreachable")

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def location_path(loc):
    u = urlsplit(loc)
    return u.path + ("?" + u.query if u.query else "")


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def repo_blobs(i, count, salt):
    """The blobs of repository i: a JSON config first, then small distinct 'layers'."""
    name = repo_name(i)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []},
                         "bench": "%s %s" % (salt, name)}, separators=(",", ":")).encode()
    blobs = [config]
    for j in range(1, count):
        blobs.append(("scale layer %s %s %d\n" % (salt, name, j)).encode() * 4)
    return blobs


def repo_image(i, counts, salt, share_pairs):
    """(blobs, shared): what repository i pushes and lists in its manifest, in order; `shared`
    holds the blobs that another repository's image lists too (--share-pairs)."""
    blobs = repo_blobs(i, counts[i], salt)
    if not share_pairs or i % 2 == 0 and i + 1 >= len(counts):
        return blobs, []
    if i % 2 == 1:
        mine = repo_blobs(i - 1, counts[i - 1], salt)[1]
        return blobs + [mine], [mine]
    return blobs, [blobs[1]]


def manifest_for(blobs):
    return json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": sha(blobs[0]), "size": len(blobs[0])},
        "layers": [{"mediaType": LAYER_TYPE, "digest": sha(b), "size": len(b)} for b in blobs[1:]],
    }, separators=(",", ":")).encode()


def push_blob(c, repo, blob, mode):
    """Push one blob; returns the mode that worked ('post' or 'postput')."""
    digest = sha(blob)
    octet = {"Content-Type": "application/octet-stream"}
    if mode in ("post", "auto"):
        st, h, body = c.request("POST", "/v2/%s/blobs/uploads/?digest=%s" % (repo, digest),
                                body=blob, headers=octet)
        if st == 201:
            return "post"
        if not (mode == "auto" and st == 202):
            raise Fail("POST /v2/%s/blobs/uploads/?digest= answered %d: %r" % (repo, st, body[:300]))
        # the registry opened a session and ignored the body: finish it with a PUT
        loc = h.get("location")
    else:
        st, h, body = c.request("POST", "/v2/%s/blobs/uploads/" % repo, headers={"Content-Length": "0"})
        if st != 202:
            raise Fail("POST /v2/%s/blobs/uploads/ answered %d: %r" % (repo, st, body[:300]))
        loc = h.get("location")
    if not loc:
        raise Fail("POST /v2/%s/blobs/uploads/ answered 202 without a Location" % repo)
    path = location_path(loc)
    path += ("&" if "?" in path else "?") + "digest=" + digest
    st, _, body = c.request("PUT", path, body=blob, headers=octet)
    if st != 201:
        raise Fail("PUT %s answered %d: %r" % (path, st, body[:300]))
    return "postput"


def run_workers(n, items, work):
    """Run work(client, item) for every item on n threads; re-raise the first failure."""
    q = queue.Queue()
    for it in items:
        q.put(it)
    errors = []

    def worker():
        c = Client(ARGS.base)
        try:
            while not errors:
                try:
                    it = q.get_nowait()
                except queue.Empty:
                    return
                work(c, it)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            c.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise Fail("worker failed: %s" % errors[0])


def cmd_fill(a):
    if a.repos < 1 or a.blobs < 2 * a.repos:
        raise Fail("need at least one repository and two blobs per repository")
    salt = "%x" % time.time_ns()
    per, extra = divmod(a.blobs, a.repos)
    counts = [per + (1 if i < extra else 0) for i in range(a.repos)]
    mode = a.upload
    if mode == "auto":
        c = Client(a.base)
        first = repo_blobs(0, counts[0], salt)[0]
        mode = push_blob(c, repo_name(0), first, "auto")
        c.close()
    image = lambda i: repo_image(i, counts, salt, a.share_pairs)
    t0 = time.monotonic()
    run_workers(a.workers, range(a.repos),
                lambda c, i: [push_blob(c, repo_name(i), b, mode) for b in image(i)[0]])
    t1 = time.monotonic()

    def put_manifest(c, i):
        m = manifest_for(image(i)[0])
        st, _, body = c.request("PUT", "/v2/%s/manifests/%s" % (repo_name(i), a.tag), body=m,
                                headers={"Content-Type": MANIFEST_TYPE})
        if st != 201:
            raise Fail("PUT manifest of %s answered %d: %r" % (repo_name(i), st, body[:300]))

    run_workers(a.workers, range(a.repos), put_manifest)
    t2 = time.monotonic()
    if a.manifests:
        with open(a.manifests, "w") as f:
            for i in range(a.repos):
                blobs, shared = image(i)
                f.write(json.dumps({"repo": repo_name(i), "tag": a.tag, "manifest": sha(manifest_for(blobs)),
                                    "blobs": [sha(b) for b in blobs], "shared": [sha(b) for b in shared],
                                    "bytes": {sha(b): len(b) for b in blobs}}) + "\n")
    out = {"fill_blobs": a.blobs, "fill_repos": a.repos, "fill_workers": a.workers,
           "fill_upload": mode, "fill_blobs_s": "%.3f" % (t1 - t0),
           "fill_blobs_per_s": "%.1f" % (a.blobs / (t1 - t0)),
           "fill_manifests_s": "%.3f" % (t2 - t1),
           "fill_manifests_per_s": "%.1f" % (a.repos / (t2 - t1))}
    for k, v in out.items():
        print("%s\t%s" % (k, v))


def cmd_tags(a):
    c = Client(a.base)
    st, h, m = c.request("GET", "/v2/%s/manifests/%s" % (a.repo, a.tag), headers={"Accept": MANIFEST_TYPE})
    if st != 200:
        raise Fail("GET manifest %s:%s answered %d" % (a.repo, a.tag, st))
    digest = sha(m)
    ctype = {"Content-Type": MANIFEST_TYPE}
    t0 = time.monotonic()
    if a.mode == "query":
        for start in range(0, a.count, a.batch):
            q = "&".join("tag=" + tag_name(i) for i in range(start, min(a.count, start + a.batch)))
            st, _, body = c.request("PUT", "/v2/%s/manifests/%s?%s" % (a.repo, digest, q), body=m, headers=ctype)
            if st != 201:
                raise Fail("PUT manifest with ?tag= x%d answered %d: %r" % (a.batch, st, body[:300]))
    else:
        def put(cl, i):
            st, _, body = cl.request("PUT", "/v2/%s/manifests/%s" % (a.repo, tag_name(i)), body=m, headers=ctype)
            if st != 201:
                raise Fail("PUT manifest %s answered %d: %r" % (tag_name(i), st, body[:300]))
        run_workers(a.workers, range(a.count), put)
    t1 = time.monotonic()
    c.close()
    print("tags_count\t%d" % a.count)
    print("tags_mode\t%s" % a.mode)
    print("tags_fill_s\t%.3f" % (t1 - t0))


def timed_page(c, path, key, repeat, expect_first, expect_last):
    """GET path `repeat` times -> (median ms, number of names, whether the names are the
    expected page: first/last name as given)."""
    times = []
    names = []
    for _ in range(repeat):
        t0 = time.monotonic()
        st, _, body = c.request("GET", path)
        times.append((time.monotonic() - t0) * 1000)
        if st != 200:
            raise Fail("GET %s answered %d: %r" % (path, st, body[:300]))
        try:
            names = json.loads(body)[key]
        except (ValueError, KeyError, TypeError) as e:
            raise Fail("GET %s: no %r list in the answer (%s)" % (path, key, e))
    ok = bool(names) and len(names) <= PAGE and not (expect_first and names[0] != expect_first) \
        and not (expect_last and names[-1] != expect_last)
    return statistics.median(times), len(names), ok


def cmd_pages(a):
    c = Client(a.base)
    out = {}
    r = a.repos
    mid = r // 2
    pages = [("catalog_first", "/v2/_catalog?n=%d" % PAGE, "repositories", repo_name(0), None),
             ("catalog_middle", "/v2/_catalog?n=%d&last=%s" % (PAGE, quote(repo_name(mid - 1), safe="")),
              "repositories", repo_name(mid), None),
             ("catalog_last", "/v2/_catalog?n=%d&last=%s" % (PAGE, quote(repo_name(max(0, r - PAGE - 1)), safe="")),
              "repositories", None, repo_name(r - 1))]
    if r > 1:
        # a repository with only the fill's tag
        pages.append(("tags_single", "/v2/%s/tags/list?n=%d" % (repo_name(1), PAGE), "tags", None, None))
    if a.tags_repo:
        base = "/v2/%s/tags/list?n=%d" % (a.tags_repo, PAGE)
        pages.append(("tags_first", base, "tags", None, None))
        if a.tags > 2 * PAGE:
            # the t* tags sort after the fill's own tag ("bench" < "t00000")
            pages.append(("tags_middle", base + "&last=" + tag_name(a.tags // 2 - 1), "tags",
                          tag_name(a.tags // 2), None))
            pages.append(("tags_last", base + "&last=" + tag_name(a.tags - PAGE - 1), "tags",
                          None, tag_name(a.tags - 1)))
    for key, path, field, first, last in pages:
        ms, n, ok = timed_page(c, path, field, a.repeat, first, last)
        if not ok and field == "repositories":
            raise Fail("GET %s: not the expected page of %d names (got %d)" % (path, PAGE, n))
        out[key + "_ms"] = "%.3f" % ms
        out[key + "_n"] = n
        out[key + "_paged"] = int(ok)
    c.close()
    for k, v in out.items():
        print("%s\t%s" % (k, v))


def cmd_get(a):
    c = Client(a.base)
    t0 = time.monotonic()
    st, _, body = c.request("GET", a.path)
    ms = (time.monotonic() - t0) * 1000
    c.close()
    if st != 200:
        raise Fail("GET %s answered %d: %r" % (a.path, st, body[:300]))
    print("%.3f" % ms)


def main():
    global ARGS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fill")
    f.add_argument("--base", required=True)
    f.add_argument("--blobs", type=int, required=True)
    f.add_argument("--repos", type=int, required=True)
    f.add_argument("--workers", type=int, default=8)
    f.add_argument("--tag", default="bench")
    f.add_argument("--upload", choices=("auto", "post", "postput"), default="auto")
    f.add_argument("--share-pairs", action="store_true")
    f.add_argument("--manifests", default="")
    t = sub.add_parser("tags")
    t.add_argument("--base", required=True)
    t.add_argument("--repo", required=True)
    t.add_argument("--tag", default="bench")
    t.add_argument("--count", type=int, required=True)
    t.add_argument("--mode", choices=("query", "each"), default="query")
    t.add_argument("--batch", type=int, default=2000)
    t.add_argument("--workers", type=int, default=8)
    g = sub.add_parser("pages")
    g.add_argument("--base", required=True)
    g.add_argument("--repos", type=int, required=True)
    g.add_argument("--tags-repo", default="")
    g.add_argument("--tags", type=int, default=0)
    g.add_argument("--repeat", type=int, default=5)
    o = sub.add_parser("get")
    o.add_argument("--base", required=True)
    o.add_argument("--path", required=True)
    ARGS = p.parse_args()
    try:
        {"fill": cmd_fill, "tags": cmd_tags, "pages": cmd_pages, "get": cmd_get}[ARGS.cmd](ARGS)
    except Fail as e:
        sys.stderr.write("scale.py %s: %s\n" % (ARGS.cmd, e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
