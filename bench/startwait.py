#!/usr/bin/env python3
"""Readiness poller for bench/run.sh (stdlib only).

  startwait.py PORT READY_FILE PID_FILE TIMEOUT_S [ACCEPT]

Starts polling `GET /v2/` on 127.0.0.1:PORT (every ~1 ms), touches READY_FILE once it is
polling, and when the server answers with an accepted status prints the wall-clock time
(time.time()) and exits 0. ACCEPT is a comma-separated list of statuses, default `200`
(the auth phase passes `401`: with htpasswd auth on, `GET /v2/` without credentials is
challenged). run.sh starts this first, then records $EPOCHREALTIME and execs the server, so the
difference is exec -> first 200 without python's own start-up time in it. Once PID_FILE
exists it holds the server's pid; if that process dies, exit 1 at once. Exit 1 on timeout.
"""
import os
import socket
import sys
import time


def alive(pid_file):
    try:
        with open(pid_file) as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return True  # not written yet
    if pid <= 0:
        return True
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def probe(port):
    """Return the HTTP status of GET /v2/, or None if nothing is listening yet."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
    except OSError:
        return None
    try:
        s.sendall(b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n" % port)
        buf = b""
        while b"\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        parts = buf.split(b"\r\n", 1)[0].split()
        return int(parts[1]) if len(parts) >= 2 else -1
    except (OSError, ValueError):
        return None
    finally:
        s.close()


def main():
    port, ready_file, pid_file, timeout = (
        int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4]))
    accept_arg = sys.argv[5] if len(sys.argv) > 5 else "200"
    accept = {int(x) for x in accept_arg.split(",") if x.strip()}
    open(ready_file, "w").close()
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        st = probe(port)
        if st in accept:
            print("%.6f" % time.time())
            return 0
        if st is not None:
            last = st
        if not alive(pid_file):
            sys.stderr.write("server process exited before answering GET /v2/\n")
            return 1
        time.sleep(0.001)
    sys.stderr.write("timeout after %ss waiting for %s on GET /v2/ (last status: %s)\n"
                     % (timeout, accept_arg, last))
    return 1


if __name__ == "__main__":
    sys.exit(main())
