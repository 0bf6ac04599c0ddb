#!/usr/bin/env python3
"""A fleet reconnecting at once: 5,000 connects from one client as fast as it can, then a
PING on each, straight to Redis and through strata, rounds interleaved. A connect that
waits longer than 0.5 s waited for a SYN retry (the listen queue overflowed: the server
accepted too slowly). Prints each round, the medians and strata/Redis; the target is
strata's median within 1.5x of Redis'.

Usage: bench/connect-burst.py STRATA_BIN   (ROUNDS=7 CONNECTS=5000 env knobs)
"""
import os, resource, socket, statistics, subprocess, sys, tempfile, time

ROUNDS = int(os.environ.get("ROUNDS", "7"))
CONNECTS = int(os.environ.get("CONNECTS", "5000"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ping(port):
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16) == b"+PONG\r\n":
                    return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"nothing answers PING on {port}")


def burst(port):
    started, socks, retried = time.monotonic(), [], 0
    for _ in range(CONNECTS):
        t = time.monotonic()
        s = socket.socket()
        s.connect(("127.0.0.1", port))
        socks.append(s)
        retried += time.monotonic() - t > 0.5
    for s in socks:
        s.sendall(b"PING\r\n")
    for s in socks:
        assert s.recv(16) == b"+PONG\r\n"
    took = time.monotonic() - started
    for s in socks:
        s.close()
    return took, retried


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 2 * CONNECTS + 100)), hard))
    work = tempfile.mkdtemp(prefix="strata-burst.")
    redis_port, strata_port = free_port(), free_port()
    config = os.path.join(work, "strata.toml")
    with open(config, "w") as f:
        f.write(f'[server]\nlisten = "127.0.0.1:{strata_port}"\nmax_clients = {2 * CONNECTS}\n'
                f'[upstream]\nurl = "redis://127.0.0.1:{redis_port}"\n')
    procs = [subprocess.Popen(["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no",
                               "--maxclients", str(2 * CONNECTS), "--dir", work], stdout=subprocess.DEVNULL)]
    try:
        wait_ping(redis_port)
        log = open(os.path.join(work, "strata.log"), "w")
        procs.append(subprocess.Popen([sys.argv[1], "--config", config], stdout=log, stderr=log))
        wait_ping(strata_port)
        took = {"redis": [], "strata": []}
        for rnd in range(ROUNDS):
            for name, port in (("redis", redis_port), ("strata", strata_port))[:: 1 if rnd % 2 == 0 else -1]:
                seconds, retried = burst(port)
                took[name].append(seconds)
                print(f"round {rnd + 1} {name:6} {seconds:.3f} s, {retried} connects waited for a SYN retry")
                time.sleep(1)  # let the closed sockets leave TIME_WAIT bookkeeping behind
        redis, strata = statistics.median(took["redis"]), statistics.median(took["strata"])
        print(f"median: redis {redis:.3f} s, strata {strata:.3f} s, strata/redis {strata / redis:.2f} (target <= 1.5)")
    finally:
        for p in procs:
            p.terminate()
            p.wait()


if __name__ == "__main__":
    main()
