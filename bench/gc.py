#!/usr/bin/env python3
"""Garbage-collection tool for bench/run.sh's "gc" phase (stdlib only, Python >= 3.7).

Works on the store bench/scale.py fill made with --share-pairs --manifests FILE (one JSON line
per repository: repo, tag, manifest digest, blobs, shared blobs, sizes). The *deleted* images
are those of the odd repositories (scale/r00001, r00003, ...), the *kept* ones the even
repositories'; an odd repository's last layer is the first layer of the even one before it, so
the GC must keep that blob.

  gc.py delete --base URL --manifests FILE [--workers W]
      DELETE /v2/REPO/manifests/DIGEST of every odd repository (202 expected).
  gc.py expect --manifests FILE
      what a GC should free: the blobs only deleted images list (count, bytes), the deleted
      manifests, the shared blobs it must keep.
  gc.py load --base URL --manifests FILE --upload MODE (--duration S | --stop-file F)
          [--interval-ms MS] [--timeout S]
      two threads, each with its own keep-alive connection: a *pusher* pushes small new images
      (a unique config and a unique layer, then the manifest, tagged lNNNNNN) into kept
      repositories, a *puller* pulls kept images (manifest by tag, then every blob, each
      checked against its digest); each starts one image at most every MS ms, until S seconds
      passed or the file F exists. Prints p50/p99/max of the whole image push and pull, counts
      and errors (an error counts as its time in the percentiles).
  gc.py verify --base URL --manifests FILE --root DIR --layout pier|distribution
          [--sample K] [--expect-gone 0|1]
      pulls K random kept images (manifest by tag and by digest, every blob; byte-identical:
      each body's sha256 is its digest, the manifest's the pushed manifest's) and checks K random
      deleted ones: manifest by digest answers 404; with --expect-gone 1 each blob only deleted
      images listed answers 404 in its repository and its file is gone from DIR (pier:
      blobs/sha256/HEX and repositories/REPO/blobs/sha256/HEX; Distribution:
      docker/registry/v2/blobs/sha256/XX/HEX/data), while the shared blob still pulls from the
      kept repository and its file is there; with --expect-gone 0 (before the GC) those blobs
      must still be there (the GC is what removes them).

Every command prints `key<TAB>value` lines on stdout (run.sh stores them as
REGISTRY.gc.KEY); times in ms.
"""
import argparse
import hashlib
import json
import math
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scale  # noqa: E402  (the fill's client and image helpers)
from scale import CONFIG_TYPE, LAYER_TYPE, MANIFEST_TYPE, Client, Fail, push_blob, sha  # noqa: E402


def load_images(path):
    with open(path) as f:
        images = [json.loads(line) for line in f if line.strip()]
    if len(images) < 2:
        raise Fail("%s: need at least two repositories" % path)
    for i, im in enumerate(images):
        im["deleted"] = i % 2 == 1
    return images


def garbage(images):
    """(unique, shared): blobs only deleted images list; blobs deleted and kept images share."""
    kept = {b for im in images if not im["deleted"] for b in im["blobs"]}
    gone = {b for im in images if im["deleted"] for b in im["blobs"]}
    sizes = {}
    for im in images:
        sizes.update(im["bytes"])
    return {b: sizes[b] for b in gone - kept}, gone & kept


def cmd_delete(a):
    images = [im for im in load_images(a.manifests) if im["deleted"]]
    scale.ARGS = a

    def delete(c, im):
        st, _, body = c.request("DELETE", "/v2/%s/manifests/%s" % (im["repo"], im["manifest"]))
        if st != 202:
            raise Fail("DELETE %s@%s answered %d: %r" % (im["repo"], im["manifest"], st, body[:300]))

    t0 = time.monotonic()
    scale.run_workers(a.workers, images, delete)
    secs = time.monotonic() - t0
    print("deleted_manifests\t%d" % len(images))
    print("delete_per_s\t%.1f" % (len(images) / secs))


def cmd_expect(a):
    images = load_images(a.manifests)
    unique, shared = garbage(images)
    print("expect_manifests_deleted\t%d" % sum(im["deleted"] for im in images))
    print("expect_blobs_freed\t%d" % len(unique))
    print("expect_bytes_freed\t%d" % sum(unique.values()))
    print("expect_shared_kept\t%d" % len(shared))
    print("blobs_total\t%d" % len({b for im in images for b in im["blobs"]}))


def pct(values, p):
    if not values:
        return None
    v = sorted(values)  # nearest rank
    return v[max(0, math.ceil(p / 100.0 * len(v)) - 1)]


class Loop(threading.Thread):
    """One client (pusher or puller) starting one image at most every `interval` s."""

    def __init__(self, a, kind, kept, stop):
        super().__init__(daemon=True)
        self.a, self.kind, self.kept, self.stop = a, kind, kept, stop
        self.times, self.errors = [], {}
        self.rng = random.Random(kind)

    def run(self):
        c = Client(self.a.base, timeout=self.a.timeout)
        n = 0
        salt = "%x" % time.time_ns()
        while not self.stop():
            start = time.monotonic()
            try:
                if self.kind == "push":
                    self.push(c, n, salt)
                else:
                    self.pull(c)
            except Exception as e:  # noqa: BLE001 - counted, the loop goes on
                kind = str(e)[:80] if isinstance(e, Fail) else type(e).__name__
                self.errors[kind] = self.errors.get(kind, 0) + 1
                c.close()
            self.times.append((time.monotonic() - start) * 1000)
            n += 1
            rest = self.a.interval_ms / 1000.0 - (time.monotonic() - start)
            if rest > 0:
                time.sleep(rest)
        c.close()

    def push(self, c, n, salt):
        im = self.kept[self.rng.randrange(len(self.kept))]
        repo = im["repo"]
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
                             "load": "%s %d" % (salt, n)}).encode()
        layer = ("gc load layer %s %d\n" % (salt, n)).encode() * 8
        for b in (config, layer):
            push_blob(c, repo, b, self.a.upload)
        m = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                        "config": {"mediaType": CONFIG_TYPE, "digest": sha(config), "size": len(config)},
                        "layers": [{"mediaType": LAYER_TYPE, "digest": sha(layer), "size": len(layer)}]}).encode()
        st, _, body = c.request("PUT", "/v2/%s/manifests/l%06d" % (repo, n), body=m,
                                headers={"Content-Type": MANIFEST_TYPE})
        if st != 201:
            raise Fail("manifest PUT %d %s" % (st, error_code(body)))

    def pull(self, c):
        pull_image(c, self.kept[self.rng.randrange(len(self.kept))], by_digest=False)


def error_code(body):
    """The first OCI error code of an error body, else its first bytes."""
    try:
        return json.loads(body)["errors"][0]["code"]
    except (ValueError, KeyError, IndexError, TypeError):
        return repr(body[:60])


def pull_image(c, im, by_digest):
    """GET the image's manifest (by tag or digest) and every blob; each must hash to its digest."""
    ref = im["manifest"] if by_digest else im["tag"]
    st, _, m = c.request("GET", "/v2/%s/manifests/%s" % (im["repo"], ref), headers={"Accept": MANIFEST_TYPE})
    if st != 200:
        raise Fail("manifest GET %d %s" % (st, error_code(m)))
    if sha(m) != im["manifest"]:
        raise Fail("manifest bytes differ")
    for b in im["blobs"]:
        st, _, body = c.request("GET", "/v2/%s/blobs/%s" % (im["repo"], b))
        if st != 200:
            raise Fail("blob GET %d %s" % (st, error_code(body)))
        if sha(body) != b:
            raise Fail("blob bytes differ")


def cmd_load(a):
    kept = [im for im in load_images(a.manifests) if not im["deleted"]]
    deadline = time.monotonic() + a.duration if a.duration else None

    def stop():
        if deadline is not None:
            return time.monotonic() >= deadline
        return os.path.exists(a.stop_file)

    loops = [Loop(a, "push", kept, stop), Loop(a, "pull", kept, stop)]
    t0 = time.monotonic()
    for lp in loops:
        lp.start()
    for lp in loops:
        lp.join()
    print("load_s\t%.3f" % (time.monotonic() - t0))
    for lp in loops:
        k = lp.kind
        print("%s_n\t%d" % (k, len(lp.times)))
        print("%s_err\t%d" % (k, sum(lp.errors.values())))
        print("%s_errors\t%s" % (k, ", ".join("%s x%d" % e for e in sorted(lp.errors.items())) or "-"))
        for name, v in (("p50", pct(lp.times, 50)), ("p99", pct(lp.times, 99)),
                        ("max", max(lp.times) if lp.times else None)):
            if v is not None:
                print("%s_%s_ms\t%.3f" % (k, name, v))


def blob_files(layout, root, repo, digest):
    hexd = digest.split(":", 1)[1]
    if layout == "pier":
        return [os.path.join(root, "blobs", "sha256", hexd),
                os.path.join(root, "repositories", repo, "blobs", "sha256", hexd)]
    return [os.path.join(root, "docker", "registry", "v2", "blobs", "sha256", hexd[:2], hexd, "data")]


def cmd_verify(a):
    images = load_images(a.manifests)
    unique, shared = garbage(images)
    rng = random.Random(a.seed)
    kept = [im for im in images if not im["deleted"]]
    deleted = [im for im in images if im["deleted"]]
    kept = rng.sample(kept, min(a.sample, len(kept)))
    deleted = rng.sample(deleted, min(a.sample, len(deleted)))
    c = Client(a.base)
    failures = []
    blobs_checked = 0
    for im in kept:
        for by_digest in (False, True):
            try:
                pull_image(c, im, by_digest)
            except (Fail, OSError) as e:
                failures.append("kept %s (%s): %s" % (im["repo"], "digest" if by_digest else "tag", e))
        blobs_checked += len(im["blobs"])
    gone_checked = shared_checked = 0
    owner = {b: im for im in images if not im["deleted"] for b in im["blobs"]}
    for im in deleted:
        if a.expect_gone:
            st, _, _ = c.request("GET", "/v2/%s/manifests/%s" % (im["repo"], im["manifest"]),
                                 headers={"Accept": MANIFEST_TYPE})
            if st != 404:
                failures.append("deleted manifest %s@%s answered %d" % (im["repo"], im["manifest"], st))
        for b in im["blobs"]:
            if b in unique:
                gone_checked += 1
                st, _, _ = c.request("HEAD", "/v2/%s/blobs/%s" % (im["repo"], b))
                present = [p for p in blob_files(a.layout, a.root, im["repo"], b) if os.path.exists(p)]
                if a.expect_gone and (st != 404 or present):
                    failures.append("garbage blob %s in %s: HEAD %d, files %s" % (b, im["repo"], st, present))
                if not a.expect_gone and (st != 200 or not present):
                    failures.append("blob %s in %s before the GC: HEAD %d, files %s" % (b, im["repo"], st, present))
            elif b in shared:
                shared_checked += 1
                k = owner[b]
                st, _, body = c.request("GET", "/v2/%s/blobs/%s" % (k["repo"], b))
                present = [p for p in blob_files(a.layout, a.root, k["repo"], b) if os.path.exists(p)]
                if st != 200 or sha(body) != b or len(present) != len(blob_files(a.layout, a.root, k["repo"], b)):
                    failures.append("shared blob %s of %s: GET %d, files %s" % (b, k["repo"], st, present))
    c.close()
    print("verify_kept_images\t%d" % len(kept))
    print("verify_kept_blobs\t%d" % blobs_checked)
    print("verify_deleted_images\t%d" % len(deleted))
    print("verify_garbage_blobs\t%d" % gone_checked)
    print("verify_shared_blobs\t%d" % shared_checked)
    print("verify_failures\t%d" % len(failures))
    for f in failures[:10]:
        sys.stderr.write("gc.py verify: %s\n" % f)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("delete")
    d.add_argument("--base", required=True)
    d.add_argument("--manifests", required=True)
    d.add_argument("--workers", type=int, default=8)
    e = sub.add_parser("expect")
    e.add_argument("--manifests", required=True)
    lo = sub.add_parser("load")
    lo.add_argument("--base", required=True)
    lo.add_argument("--manifests", required=True)
    lo.add_argument("--upload", choices=("post", "postput"), required=True)
    lo.add_argument("--duration", type=float, default=0)
    lo.add_argument("--stop-file", default="")
    lo.add_argument("--interval-ms", type=float, default=10)
    lo.add_argument("--timeout", type=float, default=30)
    v = sub.add_parser("verify")
    v.add_argument("--base", required=True)
    v.add_argument("--manifests", required=True)
    v.add_argument("--root", required=True)
    v.add_argument("--layout", choices=("pier", "distribution"), required=True)
    v.add_argument("--sample", type=int, default=300)
    v.add_argument("--expect-gone", type=int, choices=(0, 1), default=1)
    v.add_argument("--seed", type=int, default=12)
    a = p.parse_args()
    if a.cmd == "load" and not (a.duration or a.stop_file):
        p.error("load needs --duration or --stop-file")
    try:
        {"delete": cmd_delete, "expect": cmd_expect, "load": cmd_load, "verify": cmd_verify}[a.cmd](a)
    except Fail as e:
        sys.stderr.write("gc.py %s: %s\n" % (a.cmd, e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
