#!/usr/bin/python3
"""A hostile registry for the remote client's tests: it answers what a broken or malicious
upstream could, on two origins (two ports of 127.0.0.1).

Usage: hostile_registry.py USER PASSWORD BLOB_FILE LOG PORT_FILE

The registry origin requires Basic USER:PASSWORD on every /v2/ request (401 with a Basic
challenge otherwise). Routes (BLOB is the sha256 digest of BLOB_FILE's bytes):
- /v2/                                  200
- /v2/redirected/blobs/BLOB             307 to the storage origin (a pre-signed-URL style query)
- /v2/short/blobs/BLOB                  Content-Length of the whole blob, half of it, then close
                                        (a range request gets the same: no resumption)
- /v2/flaky/blobs/BLOB                  the same, but a range request gets its 206
- /v2/looping/blobs/BLOB                302 to itself, forever
- /v2/lying/manifests/v1                a manifest whose Docker-Content-Digest is another one
- /v2/huge/manifests/v1                 Content-Length 5 MiB (more than a manifest may have)
- /v2/elsewhere/tags/list               one tag and a Link to another host's next page
- /v2/circular/tags/list                one tag and a Link to the same page
The storage origin serves GET /storage/BLOB with the blob. Every request to either origin is
logged to LOG as a JSON line: origin, path, whether an Authorization header came (never its
value). Writes "REGISTRY_PORT STORAGE_PORT" to PORT_FILE once both listen.
"""
import base64
import hashlib
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

user, password, blob_file, log_path, port_file = sys.argv[1:6]
BLOB = open(blob_file, "rb").read()
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
EXPECTED_AUTH = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
LOCK = threading.Lock()
PORTS = {}
MANIFEST = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": DIGEST, "size": len(BLOB)},
    "layers": [],
}).encode()


def log(origin, path, headers):
    with LOCK:
        with open(log_path, "a") as f:
            f.write(json.dumps({"origin": origin, "path": path, "authorization": "Authorization" in headers}) + "\n")


class Base(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if not any(k.lower() == "content-length" for k, _ in headers):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Registry(Base):
    def do_GET(self):
        log("registry", self.path, self.headers)
        if self.headers.get("Authorization") != EXPECTED_AUTH:
            return self.send(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}',
                             [("WWW-Authenticate", 'Basic realm="hostile"'), ("Content-Type", "application/json")])
        me = f"http://127.0.0.1:{PORTS['registry']}"
        p = self.path
        if p == "/v2/":
            return self.send(200, b"{}")
        if p == f"/v2/redirected/blobs/{DIGEST}":
            return self.send(307, headers=[("Location", f"http://127.0.0.1:{PORTS['storage']}/storage/{DIGEST}?sig=x")])
        if p == f"/v2/flaky/blobs/{DIGEST}" and self.headers.get("Range", "").startswith("bytes="):
            start = int(self.headers["Range"][len("bytes="):].rstrip("-"))
            return self.send(206, BLOB[start:], [("Content-Range", f"bytes {start}-{len(BLOB) - 1}/{len(BLOB)}")])
        if p in (f"/v2/short/blobs/{DIGEST}", f"/v2/flaky/blobs/{DIGEST}"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(BLOB)))
            self.end_headers()
            self.wfile.write(BLOB[: len(BLOB) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if p == f"/v2/looping/blobs/{DIGEST}":
            return self.send(302, headers=[("Location", f"{me}{p}")])
        if p == "/v2/lying/manifests/v1":
            other = "sha256:" + hashlib.sha256(b"something else").hexdigest()
            return self.send(200, MANIFEST, [("Content-Type", "application/vnd.oci.image.manifest.v1+json"),
                                             ("Docker-Content-Digest", other)])
        if p == "/v2/huge/manifests/v1":
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            self.send_header("Content-Length", str(5 * 1024 * 1024))
            self.end_headers()
            self.close_connection = True
            return
        if p.startswith("/v2/elsewhere/tags/list"):
            return self.send(200, b'{"name":"elsewhere","tags":["a"]}',
                             [("Link", '<http://other.invalid/v2/elsewhere/tags/list?n=1&last=a>; rel="next"')])
        if p.startswith("/v2/circular/tags/list"):
            return self.send(200, b'{"name":"circular","tags":["a"]}', [("Link", f'<{p}>; rel="next"')])
        return self.send(404, b'{"errors":[{"code":"NOT_FOUND","message":"no such route"}]}')


class Storage(Base):
    def do_GET(self):
        log("storage", self.path, self.headers)
        if self.path.split("?")[0] == f"/storage/{DIGEST}":
            return self.send(200, BLOB, [("Content-Type", "application/octet-stream")])
        return self.send(404)


servers = {"registry": ThreadingHTTPServer(("127.0.0.1", 0), Registry),
           "storage": ThreadingHTTPServer(("127.0.0.1", 0), Storage)}
for name, server in servers.items():
    PORTS[name] = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
with open(port_file + ".tmp", "w") as f:
    f.write(f"{PORTS['registry']} {PORTS['storage']}")
os.rename(port_file + ".tmp", port_file)
threading.Event().wait()
