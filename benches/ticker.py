#!/usr/bin/env python3
"""The ticker load of the topics issue: T topics, C connections subscribed
to S random topics each, publishers at a total rate.

    python3 benches/ticker.py [--rates 5000,10000,20000] [-c 10000] [--topics 1000] [--subscriptions 10]

For each rate, a fresh wsloop (CPU 0) and `wsflood pubsub` (CPU 1, every
delivery verified: no loss, duplication or reordering per publisher and
topic, nothing for a topic not subscribed) for --seconds. Prints, per rate:
deliveries/s, deliveries per server CPU-second, write calls per delivery
(the server's /metrics, read by wsflood), publish-to-delivery latency p50 and
p99, and the server's RSS. A rate the server cannot keep up with shows as
slow-consumer closes (wsflood errors) and is marked.

Needs target/release/{wsloop,wsflood}. Loopback only; each run bounded by
--seconds plus wsflood's teardown. Python standard library only.
"""

import argparse
import json
import re
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(a, rate):
    srv = subprocess.Popen(
        ["taskset", "-c", "0", a.server, "--listen", "127.0.0.1:0", "--max-connections", str(a.connections + 100)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        addr = None
        for line in srv.stderr:
            m = re.search(r"listening on (\S+) ", line)
            if m:
                addr = m.group(1)
                break
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            cmd = [
                "taskset", "-c", "1", a.wsflood, "pubsub", "--url", f"ws://{addr}/pubsub",
                "-c", str(a.connections), "--topics", str(a.topics), "--subscriptions", str(a.subscriptions),
                "-p", str(a.publishers), "--rate", str(rate), "-d", str(a.seconds),
                "--server-pid", str(srv.pid), "--json", out.name, "-q",
            ]
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.seconds + 120)
            d = json.load(open(out.name))
        return d, p.stdout
    finally:
        srv.terminate()
        srv.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="5000,10000,20000", help="messages per second, all publishers together")
    ap.add_argument("-c", "--connections", type=int, default=10000)
    ap.add_argument("--topics", type=int, default=1000)
    ap.add_argument("--subscriptions", type=int, default=10)
    ap.add_argument("-p", "--publishers", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--server", default=str(ROOT / "target/release/wsloop"))
    ap.add_argument("--wsflood", default=str(ROOT / "target/release/wsflood"))
    a = ap.parse_args()
    print(f"{a.connections} connections x {a.subscriptions} of {a.topics} topics, {a.publishers} publishers, "
          f"{a.seconds:g} s per rate")
    print("| published/s | deliveries/s | per server CPU-s | writes / delivery | p50 | p99 | server RSS | verified |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for rate in [int(r) for r in a.rates.split(",")]:
        d, text = run(a, rate)
        m = re.search(r"write calls (\d+) \(([\d.]+) per delivery\)", text)
        writes = m.group(2) if m else "?"
        lat = d["latency_us"]
        rss = d["server_rss"].get("after_kib") or d["server_rss"].get("open_kib")
        received = d["messages"]["received"]
        per_cpu = received / d["cpu"]["server_s"] if d["cpu"]["server_s"] else 0
        ok = d["verification"]["ok"] and d["errors"]["total"] == 0
        print(f"| {rate:,} | {received / d['elapsed_s']:,.0f} | {per_cpu:,.0f} | {writes} | "
              f"{lat['p50'] / 1000:.1f} ms | {lat['p99'] / 1000:.1f} ms | {rss / 1024:.0f} MiB | "
              f"{'yes' if ok else 'NO: ' + json.dumps(d['errors'])} |", flush=True)


if __name__ == "__main__":
    main()
