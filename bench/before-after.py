#!/usr/bin/env python3
"""Two strata builds against direct Redis in one run: compare.sh's cases (GET/SET, P=1/16,
2 and 1024 bytes, 50 clients, one key), rounds interleaved and the order of the three
targets rotated per round, so drift on a shared box hits all of them alike. Prints each
build's median ratio to direct per case, the geometric means per pipeline depth, and
after/before: the figure "within 0.97x of before" is judged on.

Usage: bench/before-after.py BEFORE_BIN AFTER_BIN   (ROUNDS=5 REQUESTS=200000 env knobs)
       CONFIG=FILE bench/before-after.py …   both builds run with this config, e.g. a tier
       whose prefix is `key:` (redis-benchmark's keys) to measure the tiered path
"""
import math, os, socket, statistics, subprocess, sys, tempfile, time

ROUNDS = int(os.environ.get("ROUNDS", "5"))
REQUESTS = int(os.environ.get("REQUESTS", "200000"))
CASES = [(t, p, d) for p in (1, 16) for d in (2, 1024) for t in ("GET", "SET")]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ping(port):
    for _ in range(100):
        r = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True)
        if r.stdout.strip() == "PONG":
            return
        time.sleep(0.1)
    sys.exit(f"nothing answers PING on {port}")


def bench(port, test, pipeline, size):
    n = REQUESTS * (10 if pipeline > 1 else 1)
    out = subprocess.run(
        ["redis-benchmark", "-p", str(port), "-t", test.lower(), "-c", "50", "-n", str(n),
         "-P", str(pipeline), "-d", str(size), "--csv", "-q"],
        capture_output=True, text=True, timeout=300, check=True).stdout
    row = next(line for line in out.splitlines() if line.startswith(f'"{test}"'))
    return float(row.split(",")[1].strip('"'))


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    work = tempfile.mkdtemp(prefix="strata-before-after.")
    redis_port = free_port()
    procs = [subprocess.Popen(["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no",
                               "--dir", work], stdout=subprocess.DEVNULL)]
    try:
        wait_ping(redis_port)
        ports = {"direct": redis_port}
        for name, binary in (("before", sys.argv[1]), ("after", sys.argv[2])):
            ports[name] = free_port()
            log = open(os.path.join(work, f"{name}.log"), "w")
            config = ["--config", os.environ["CONFIG"]] if os.environ.get("CONFIG") else []
            procs.append(subprocess.Popen([binary, *config, "--listen", f"127.0.0.1:{ports[name]}", "--upstream",
                                           f"redis://127.0.0.1:{redis_port}"], stdout=log, stderr=log))
            wait_ping(ports[name])
        ratios = {(name, case): [] for name in ("before", "after") for case in CASES}
        targets = ["direct", "before", "after"]
        for rnd in range(ROUNDS):
            order = targets[rnd % 3:] + targets[:rnd % 3]
            for case in CASES:
                test, pipeline, size = case
                if test == "GET":
                    subprocess.run(["redis-cli", "-p", str(redis_port), "-x", "set", "key:__rand_int__"],
                                   input="x" * size, capture_output=True, text=True, check=True)
                rps = {t: bench(ports[t], *case) for t in order}
                for name in ("before", "after"):
                    ratios[(name, case)].append(rps[name] / rps["direct"])
                print(f"round {rnd + 1}: {test} P={pipeline} d={size} " +
                      " ".join(f"{t} {rps[t]:.0f}" for t in targets), file=sys.stderr)
        print(f"medians over {ROUNDS} rounds of rps / direct rps in the same round")
        for case in CASES:
            b, a = (statistics.median(ratios[(n, case)]) for n in ("before", "after"))
            print(f"  {case[0]} P={case[1]:<2} d={case[2]:<5} before {b:.2f}x  after {a:.2f}x")
        for pipeline in (1, 16):
            geo = {n: math.exp(statistics.mean(math.log(statistics.median(ratios[(n, c)]))
                                              for c in CASES if c[1] == pipeline)) for n in ("before", "after")}
            print(f"P={pipeline:<2} geomean: before {geo['before']:.3f}x  after {geo['after']:.3f}x  "
                  f"after/before {geo['after'] / geo['before']:.3f}")
    finally:
        for p in procs:
            p.terminate()
            p.wait()


if __name__ == "__main__":
    main()
