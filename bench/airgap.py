#!/usr/bin/env python3
"""Helpers for bench/airgap.sh (stdlib only).

  airgap.py layer SIZE OUT        write OUT, an uncompressed layer tar holding one file
                                  (data.bin, SIZE bytes read from stdin): a layer the docker
                                  engine can unpack, incompressible when stdin is
  airgap.py sample OUT PID DIR... until SIGTERM, every 200 ms: the bytes allocated under
                                  DIRs (st_blocks, each inode once) and the summed VmRSS of
                                  PID's descendants started after the first sample (PID
                                  itself not; "-": none); writes
                                  "BASE PEAK LAST CHILDREN_PEAK_KIB" to OUT after the first
                                  sample (OUT.ready marks that) and at the end
  airgap.py report TSV            print the results (rows written by airgap.sh) as markdown
"""
import os
import signal
import sys
import tarfile
import time


def layer(size, out):
    info = tarfile.TarInfo("data.bin")
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    with open(out, "wb") as f:
        with tarfile.open(fileobj=f, mode="w|", format=tarfile.GNU_FORMAT) as tar:
            # tarfile copies exactly SIZE bytes and fails if stdin ends early
            tar.addfile(info, sys.stdin.buffer)


def allocated(dirs):
    """Bytes allocated under DIRS, each file once (pier's blobs are hard links)."""
    total = 0
    seen = set()
    for top in dirs:
        for root, subdirs, files in os.walk(top):
            for name in subdirs + files:
                try:
                    st = os.lstat(os.path.join(root, name))
                except OSError:
                    continue  # removed while walking (a temporary file)
                if st.st_nlink > 1:
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def descendants_rss_kib(pid, skip=frozenset()):
    """Summed VmRSS of PID's descendants but those in SKIP, and the descendants' pids."""
    parent = {}
    rss = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
            with open("/proc/%s/status" % entry) as f:
                kib = 0
                for line in f:
                    if line.startswith("VmRSS:"):
                        kib = int(line.split()[1])
                        break
        except OSError:
            continue  # exited meanwhile
        # the fields after the command (which may hold spaces) start after its last ')'
        parent[int(entry)] = int(stat[stat.rindex(")") + 2 :].split()[1])
        rss[int(entry)] = kib
    total = 0
    found = set()
    for p in parent:
        q = parent[p]
        while q > 1 and q != pid:
            q = parent.get(q, 0)
        if q == pid:
            found.add(p)
            if p not in skip:
                total += rss[p]
    return total, found


def sample(out, pid, dirs):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    base = peak = last = allocated(dirs)
    children = 0
    # the daemon's long-lived children (the engine's containerd) are not the step's
    running = frozenset() if pid is None else frozenset(descendants_rss_kib(pid)[1])

    def write():
        with open(out + ".tmp", "w") as f:
            f.write("%d %d %d %d\n" % (base, peak, last, children))
        os.replace(out + ".tmp", out)

    write()
    open(out + ".ready", "w").close()
    while True:
        if pid is not None:
            children = max(children, descendants_rss_kib(pid, running)[0])
        if stop:
            break
        time.sleep(0.2)
        last = allocated(dirs)
        peak = max(peak, last)
    write()


def report(tsv):
    # columns written by airgap.sh's step(): see there
    rows = []
    with open(tsv) as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            rows.append(
                {
                    "dir": p[0],
                    "name": p[1],
                    "bytes": int(p[2]),
                    "secs": float(p[3]),
                    "sync": float(p[4]),
                    "cpu_client": float(p[5]),
                    "cpu_daemon": float(p[6]) if p[6] != "-" else None,
                    "rss_client": int(p[7]),
                    "rss_daemon": int(p[8]) if p[8] != "-" else None,
                    "disk_peak": int(p[9]),
                    "disk_end": int(p[10]),
                    "rss_daemon_idle": int(p[11]) if p[11] != "-" else None,
                    "rss_children": int(p[12]),
                }
            )
    order = {"export": 0, "import": 1}
    rows.sort(key=lambda r: order.get(r["dir"], 2))  # stable: each direction in run order
    base = {}
    for r in rows:
        if r["name"].startswith("pier ") and r["dir"] not in base:
            base[r["dir"]] = r  # the first pier row of each direction is the reference
    print(
        "| %s | s | MiB/s | time / pier's | s incl. sync | CPU s (client + daemon) "
        "| peak RSS MiB (client + daemon) | RSS / pier's | disk GiB (peak / end) |" % "step"
    )
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    title = {"export": "**export**", "import": "**import**", "other": "**other**"}
    shown = set()
    for r in rows:
        if r["dir"] not in shown:
            shown.add(r["dir"])
            print("| %s | | | | | | | | |" % title.get(r["dir"], r["dir"]))
        mib = r["bytes"] / 2**20
        rss = r["rss_client"] + (r["rss_daemon"] or 0) + r["rss_children"]
        ref = base.get(r["dir"])
        if ref is not None and r["dir"] != "other":
            ref_rss = ref["rss_client"] + (ref["rss_daemon"] or 0) + ref["rss_children"]
            t_ratio = "%.2f" % (r["secs"] / ref["secs"])
            m_ratio = "%.1f" % (rss / ref_rss)
        else:
            t_ratio = m_ratio = ""
        cpu = "%.1f + %s" % (
            r["cpu_client"],
            "-" if r["cpu_daemon"] is None else "%.1f" % r["cpu_daemon"],
        )
        mem = "%.0f + %s" % (
            r["rss_client"] / 1024,
            "-"
            if r["rss_daemon"] is None
            else "%.0f (%.0f before)" % (r["rss_daemon"] / 1024, r["rss_daemon_idle"] / 1024),
        )
        if r["rss_children"]:
            mem += " + %.0f children" % (r["rss_children"] / 1024)
        print(
            "| %s | %.1f | %.0f | %s | %.1f | %s | %s | %s | %.2f / %.2f |"
            % (
                r["name"],
                r["secs"],
                mib / r["secs"],
                t_ratio,
                r["secs"] + r["sync"],
                cpu,
                mem,
                m_ratio,
                r["disk_peak"] / 2**30,
                r["disk_end"] / 2**30,
            )
        )


def main(argv):
    if len(argv) == 4 and argv[1] == "layer":
        layer(int(argv[2]), argv[3])
    elif len(argv) >= 5 and argv[1] == "sample":
        sample(argv[2], None if argv[3] == "-" else int(argv[3]), argv[4:])
    elif len(argv) == 3 and argv[1] == "report":
        report(argv[2])
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
