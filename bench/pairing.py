#!/usr/bin/env python3
"""Throughput against CPU placement, while redis-benchmark runs through a proxy.

On a 2-vCPU machine a proxied benchmark runs three busy single-threaded processes
(redis-benchmark, the proxy, Redis), so two of them share a vCPU, and the kernel changes
which two every few seconds. This runs redis-benchmark GET against PORT and prints, for
each of its progress reports (about 4 per second), the rps it reported and how often in
that interval each pair of processes sat on the same CPU (sampled every 5 ms from
/proc/PID/stat), so the throughput of each pairing can be read off.

Usage: bench/pairing.py PORT PROXY_PID REDIS_PID [PIPELINE] [REPORTS]
  e.g. bench/pairing.py 6380 "$(pgrep -x strata)" "$(pgrep -x redis-server)" 16 80
"""

import re
import subprocess
import sys
import threading
import time

SAMPLE_EVERY = 0.005
# Requests for the run; it is stopped after REPORTS progress lines anyway.
REQUESTS = "100000000"


def cpu_of(pid):
    """The CPU the process last ran on (field 39 of /proc/PID/stat), or -1 if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[36])
    except (OSError, ValueError, IndexError):
        return -1


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    port, proxy, redis = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    for name, pid in (("proxy", proxy), ("redis", redis)):
        if cpu_of(pid) < 0:
            sys.exit(f"no process {pid} ({name} PID)")
    pipeline = sys.argv[4] if len(sys.argv) > 4 else "16"
    reports = int(sys.argv[5]) if len(sys.argv) > 5 else 80
    bench = subprocess.Popen(
        ["redis-benchmark", "-p", port, "-t", "get", "-c", "50", "-P", pipeline, "-n", REQUESTS],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    samples, done = [], threading.Event()

    def sample():
        while not done.is_set():
            samples.append((time.time(), cpu_of(proxy), cpu_of(redis), cpu_of(bench.pid)))
            time.sleep(SAMPLE_EVERY)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    progress = []
    try:
        progress = read_progress(bench.stdout, reports)
    finally:
        bench.kill()
        bench.wait()
        done.set()
        sampler.join()
    # The first report only opens the first interval, so REPORTS - 1 rows follow.
    print(f"{'rps':>9}  {'proxy+redis':>11}  {'proxy+bench':>11}  {'redis+bench':>11}   (share of samples on one CPU)")
    last = progress[0][0] if progress else 0
    for at, rps in progress[1:]:
        window = [s for s in samples if last <= s[0] < at]
        last = at
        pairs = [shared(window, a, b) for a, b in ((1, 2), (1, 3), (2, 3))]
        print(f"{rps:>9.0f}  " + "  ".join(f"{p:>11.2f}" for p in pairs))


def read_progress(out, reports):
    """(time, rps) of each progress report redis-benchmark writes, up to `reports`."""
    progress, line = [], b""
    while len(progress) < reports:
        byte = out.read(1)
        if not byte:
            break
        if byte in b"\r\n":
            found = re.search(rb"rps=([0-9.]+)", line)
            if found:
                progress.append((time.time(), float(found.group(1))))
            line = b""
        else:
            line += byte
    return progress


def shared(window, a, b):
    """Share of the samples in which processes a and b (both seen) ran on one CPU."""
    seen = [s for s in window if s[a] >= 0 and s[b] >= 0]
    return sum(s[a] == s[b] for s in seen) / len(seen) if seen else float("nan")


if __name__ == "__main__":
    main()
