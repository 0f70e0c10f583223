#!/usr/bin/env python3
"""Fallback peak-RSS sampler for bench/run.sh when /proc/PID/clear_refs is not writable.

  rss_sampler.py PID OUT_FILE

Reads VmRSS of PID every 50 ms and keeps the maximum (kB) in OUT_FILE. Runs until PID
exits or it gets SIGTERM (it writes the file after every new maximum, so killing it is fine).
"""
import os
import signal
import sys
import time


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    pid, out = int(sys.argv[1]), sys.argv[2]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    peak = -1
    while True:
        try:
            v = rss_kb(pid)
        except OSError:
            return 0
        if v > peak:
            peak = v
            with open(out + ".tmp", "w") as f:
                f.write("%d\n" % peak)
            os.replace(out + ".tmp", out)
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
