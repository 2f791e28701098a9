#!/usr/bin/env python3
"""One publisher, 10,000 subscribers of one topic: on one node, and spread
over several wsloop processes joined by Redis.

    python3 benches/cluster.py [--reps 3] [--subscribers 10000] [--seconds 5]

Configurations, run interleaved (every configuration once per repetition,
in a rotating order, so that the machine's drift falls on all of them):

- `one`: one wsloop process, no Redis (the baseline).
- `one+redis`: one process with `--redis` (the bus's cost when no other
  node listens: each message is also published once to Redis).
- `two`: two processes on two ports with `--redis`; wsflood spreads the
  subscribers over both (`--url a,b`), the publisher on the first.
- `four-reuseport`: four processes on one port (`--reuse-port`) with
  `--redis`: the kernel spreads the connections.

Loads, each measured by `wsflood pubsub` (every delivery verified):

- `ticker`: 5 messages/s (50,000 deliveries/s; `--ticker-rate`):
  publish-to-delivery latency p50/p99 and server CPU per delivery. One
  message to 10,000 sockets is 10,000 write calls, a few microseconds of
  kernel time each on loopback: the last subscriber's latency is the time
  to walk them all, which splitting the subscribers over processes on
  more cores divides.
- `burst`: unpaced, 100 publishes in flight: deliveries/s and deliveries
  per server CPU-second (summed over the processes), Redis's CPU.

This machine has 2 cores shared by wsflood, the servers and Redis: the
multi-process configurations cannot add cores here; what they show is what
the bus costs per delivery and that delivery stays exact. Loopback only;
every run bounded (wsflood --duration, a timeout on each process).
"""

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def wait_port(port: int):
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def start_redis():
    port = free_port()
    d = tempfile.mkdtemp(prefix="wsloop-cluster-bench-")
    p = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", d],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    return p, port


def start_wsloop(server: str, port: int, extra):
    p = subprocess.Popen(
        [server, "--listen", f"127.0.0.1:{port}", "--max-connections", "20000", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return p


def configuration(name: str, server: str):
    """Starts a configuration: (processes, urls, redis process or None)."""
    redis, rport = (None, None)
    if name != "one":
        redis, rport = start_redis()
    bus = ["--redis", f"redis://127.0.0.1:{rport}"] if redis else []
    procs, urls = [], []
    if name in ("one", "one+redis"):
        port = free_port()
        procs.append(start_wsloop(server, port, bus))
        urls.append(f"ws://127.0.0.1:{port}/pubsub")
        wait_port(port)
    elif name == "two":
        for _ in range(2):
            port = free_port()
            procs.append(start_wsloop(server, port, bus))
            urls.append(f"ws://127.0.0.1:{port}/pubsub")
            wait_port(port)
    elif name == "four-reuseport":
        port = free_port()
        for _ in range(4):
            procs.append(start_wsloop(server, port, bus + ["--reuse-port"]))
        urls.append(f"ws://127.0.0.1:{port}/pubsub")
        wait_port(port)
        time.sleep(0.3)  # all four bound (a connection to one proves one)
    return procs, urls, redis


def run_one(flood: str, name: str, load: str, server: str, subscribers: int, seconds: float,
            ticker_rate: float) -> dict:
    procs, urls, redis = configuration(name, server)
    try:
        args = [flood, "pubsub", "--url", ",".join(urls), "-c", str(subscribers), "--topics", "1",
                "--subscriptions", "1", "-p", "1", "-d", str(seconds), "-q",
                "--server-pid", ",".join(str(p.pid) for p in procs)]
        args += ["--rate", str(ticker_rate)] if load == "ticker" else ["--rate", "0", "--inflight", "100"]
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            args += ["--json", out.name]
            redis_cpu0 = cpu_ticks(redis.pid) if redis else 0
            done = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                  timeout=seconds + 120)
            redis_cpu = (cpu_ticks(redis.pid) - redis_cpu0) / CLK_TCK if redis else 0.0
            if done.returncode != 0:
                sys.exit(f"wsflood failed ({name}, {load}): {done.stderr[-2000:]}")
            d = json.load(open(out.name))
        w = d["pubsub"]["window"]
        lat = d["latency_us"]
        return {
            "config": name,
            "load": load,
            "deliveries_per_s": d["messages"]["per_s"],
            "published_per_s": d["pubsub"]["published_per_s"],
            "deliveries_per_server_cpu_s": w["deliveries_per_server_cpu_s"],
            "server_cpu_s": w["server_cpu_s"],
            "client_cpu_s": w["client_cpu_s"],
            "window_s": w["seconds"],
            "p50_ms": lat["p50"] / 1e3,
            "p99_ms": lat["p99"] / 1e3,
            "verified": d["verification"]["ok"],
            "redis_cpu_s": redis_cpu,
        }
    finally:
        for p in procs:
            p.kill()
            p.wait()
        if redis:
            redis.kill()
            redis.wait()


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", default="target/release/wsloop")
    ap.add_argument("--flood", default="target/release/wsflood")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--subscribers", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--ticker-rate", type=float, default=5)
    ap.add_argument("--configs", default="one,one+redis,two,four-reuseport")
    ap.add_argument("--loads", default="ticker,burst")
    ap.add_argument("--json", help="write every run here")
    args = ap.parse_args()
    configs = args.configs.split(",")
    runs = []
    for rep in range(args.reps):
        order = configs[rep % len(configs):] + configs[:rep % len(configs)]
        for load in args.loads.split(","):
            for name in order:
                r = run_one(args.flood, name, load, args.server, args.subscribers, args.seconds, args.ticker_rate)
                r["rep"] = rep
                runs.append(r)
                print(f"rep {rep} {load:6} {name:15} {r['deliveries_per_s']:>11,.0f} deliveries/s "
                      f"{r['deliveries_per_server_cpu_s']:>11,.0f} per server CPU-s  "
                      f"p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  redis {r['redis_cpu_s']:.2f} s "
                      f"{'ok' if r['verified'] else 'NOT VERIFIED'}", flush=True)
    print()
    print("medians (ratio to `one` within each repetition, then the median of the ratios)")
    for load in args.loads.split(","):
        print(f"\n{load}:")
        print(f"{'config':15} {'deliveries/s':>13} {'per srv CPU-s':>14} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'Redis CPU s':>11}")
        for name in configs:
            rs = [r for r in runs if r["config"] == name and r["load"] == load]
            ratios = []
            for r in rs:
                base = [b for b in runs if b["config"] == "one" and b["load"] == load and b["rep"] == r["rep"]]
                if base:
                    ratios.append(r["deliveries_per_server_cpu_s"] / base[0]["deliveries_per_server_cpu_s"])
            redis_s = median([r["redis_cpu_s"] for r in rs])
            print(f"{name:15} {median([r['deliveries_per_s'] for r in rs]):>13,.0f} "
                  f"{median([r['deliveries_per_server_cpu_s'] for r in rs]):>14,.0f} "
                  f"{median(ratios) if ratios else float('nan'):>6.2f} "
                  f"{median([r['p50_ms'] for r in rs]):>7.1f} {median([r['p99_ms'] for r in rs]):>7.1f} "
                  f"{redis_s:>11.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=1)


if __name__ == "__main__":
    main()
