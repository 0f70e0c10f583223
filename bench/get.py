#!/usr/bin/env python3
"""Large-buffer HTTP GET client for bench/run.sh (stdlib only).

  get.py URL      prints "STATUS BYTES SECONDS" (body bytes received, wall time from
                  connect to the last byte), discarding the body

curl receives into a 16 KiB buffer and on this machine tops out around 1.3 GB/s on
loopback, spending most of a core in the kernel, so a curl download measures curl as
much as the server. This client reads with 4 MiB recv_into calls (about half curl's CPU
per byte), so the server's send path is closer to being the limit. HTTP/1.1, no redirects,
Content-Length bodies only (what registries and nginx send for blobs).
"""
import socket
import sys
import time
from urllib.parse import urlsplit

BUF = 4 << 20


def main():
    u = urlsplit(sys.argv[1])
    path = u.path + ("?" + u.query if u.query else "")
    t0 = time.time()
    s = socket.create_connection((u.hostname, u.port or 80))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUF)
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nAccept: */*\r\nConnection: close\r\n\r\n"
               % (path, u.netloc)).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(65536)
        if not chunk:
            break
        head += chunk
    head, _, body = head.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split()
    status = int(parts[1]) if len(parts) >= 2 else 0
    length = None
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    n = len(body)
    buf = bytearray(BUF)
    view = memoryview(buf)
    while length is None or n < length:
        k = s.recv_into(view)
        if not k:
            break
        n += k
    t1 = time.time()
    s.close()
    print("%d %d %.6f" % (status, n, t1 - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
