#!/usr/bin/env python3
"""Before/after: two wsloop binaries on the same cases, interleaved.

    python3 benches/ab.py --before /path/to/old/wsloop [--after target/release/wsloop] [--reps 7]
    python3 benches/ab.py --before OLD --cases "echo 100x20,all-to-all 100"
    python3 benches/ab.py --before target/release/wsloop --before-flags="--send-lowat 0"   # one flag's cost

Build the old binary from a worktree of the old revision
(`git worktree add /tmp/old REV && cargo build --release --bin wsloop` there).
For every repetition, every case runs once with each binary (a fresh server
on CPU 0, wsflood on CPU 1, every message verified by wsflood; which binary
goes first alternates between repetitions); the figure
is messages (echoes, deliveries; churn: connect-upgrade-echo-close cycles) per second of server CPU time, and the
ratio after / before is taken within each repetition, so that the machine's
drift between minutes cancels. Prints the median and min-max of the ratios.

Needs target/release/wsflood (cargo build --release). Python 3 standard
library only; Linux only (taskset).
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name: (server flags, wsflood arguments, path, seconds)
CASES = {
    "echo 100x20": ([], ["echo", "-c", "100", "-s", "20"], "/echo", 4),
    "echo 100x1k": ([], ["echo", "-c", "100", "-s", "1024"], "/echo", 4),
    "echo 100x4k": ([], ["echo", "-c", "100", "-s", "4096"], "/echo", 4),
    "echo 10x16k": ([], ["echo", "-c", "10", "-s", "16384"], "/echo", 4),
    "echo 10x64k": ([], ["echo", "-c", "10", "-s", "65536"], "/echo", 4),
    "echo 500x16k": ([], ["echo", "-c", "500", "-s", "16384"], "/echo", 4),
    "echo 1000x20": ([], ["echo", "-c", "1000", "-s", "20"], "/echo", 4),
    "echo 100x20 k8": ([], ["echo", "-c", "100", "-s", "20", "-k", "8"], "/echo", 4),
    "all-to-all 100": (
        ["--broadcast-to-sender"],
        ["broadcast", "-c", "100", "--all-to-all", "--expect-self", "-s", "20"],
        "/broadcast/b",
        4,
    ),
    "all-to-all 500": (
        ["--broadcast-to-sender"],
        ["broadcast", "-c", "500", "--all-to-all", "--expect-self", "-s", "20"],
        "/broadcast/b",
        4,
    ),
    "all-to-all 1000": (
        ["--broadcast-to-sender"],
        ["broadcast", "-c", "1000", "--all-to-all", "--expect-self", "-s", "20"],
        "/broadcast/b",
        4,
    ),
    "fanout 1->1000": (
        ["--broadcast-to-sender"],
        ["broadcast", "-c", "1000", "-p", "1", "-k", "16", "--expect-self", "-s", "64"],
        "/broadcast/b",
        4,
    ),
    "churn 100": ([], ["churn", "-c", "100"], "/echo", 4),
    "fanout 1->10000": (
        ["--broadcast-to-sender"],
        ["broadcast", "-c", "10000", "-p", "1", "-k", "16", "--expect-self", "-s", "64"],
        "/broadcast/b",
        6,
    ),
}


def run(binary, server_args, flood_args, path, secs, wsflood):
    """One server, one wsflood run: (messages per server CPU-second, verified)."""
    srv = subprocess.Popen(
        ["taskset", "-c", "0", binary, "--listen", "127.0.0.1:0", "--max-connections", "20000", *server_args],
        stderr=subprocess.PIPE,
        text=True,
    )
    addr = None
    try:
        for line in srv.stderr:
            m = re.search(r"listening on (\S+) ", line)
            if m:
                addr = m.group(1)
                break
        if addr is None:
            raise RuntimeError(f"{binary} did not say where it listens")
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            cmd = ["taskset", "-c", "1", wsflood, *flood_args, "--url", f"ws://{addr}{path}", "-d", str(secs)]
            cmd += ["--server-pid", str(srv.pid), "--json", out.name, "-q"]
            subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 120)
            d = json.load(open(out.name))
    finally:
        srv.terminate()
        srv.wait(timeout=30)
    # Churn: connect, upgrade, one echo, close cycles; else messages.
    done = d["churn"]["cycles"] if flood_args[0] == "churn" else d["messages"]["received"]
    return done / d["cpu"]["server_s"], d["verification"]["ok"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", default=str(ROOT / "target/release/wsloop"))
    ap.add_argument("--before-flags", default="", help="extra server flags for the before binary")
    ap.add_argument("--after-flags", default="", help="extra server flags for the after binary")
    ap.add_argument("--wsflood", default=str(ROOT / "target/release/wsflood"))
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    a = ap.parse_args()
    cases = [c.strip() for c in a.cases.split(",")]
    bins = {"before": a.before, "after": a.after}
    flags = {"before": a.before_flags.split(), "after": a.after_flags.split()}
    res = {c: {b: [] for b in bins} for c in cases}
    for rep in range(a.reps):
        for c in cases:
            sa, fa, path, secs = CASES[c]
            # Alternate which binary goes first: a pair's second run can
            # differ from its first for reasons of the machine's (caches,
            # clocks), and a fixed order would book that on one side.
            order = list(bins.items()) if rep % 2 == 0 else list(reversed(bins.items()))
            for b, binary in order:
                rate, ok = run(binary, sa + flags[b], fa, path, secs, a.wsflood)
                if not ok:
                    sys.exit(f"{c} {b}: wsflood's verification failed")
                res[c][b].append(rate)
            print(f"rep {rep + 1} {c:16s} before {res[c]['before'][-1]:>12.0f} after {res[c]['after'][-1]:>12.0f}"
                  f" ratio {res[c]['after'][-1] / res[c]['before'][-1]:.3f}", flush=True)
    print("\n| case | before (msgs per server CPU-s) | after | after / before: median (min-max) |")
    print("| --- | ---: | ---: | ---: |")
    mid = a.reps // 2
    for c in cases:
        ratios = sorted(t / b for b, t in zip(res[c]["before"], res[c]["after"]))
        before, after = sorted(res[c]["before"])[mid], sorted(res[c]["after"])[mid]
        print(f"| {c} | {before:,.0f} | {after:,.0f} | {ratios[mid]:.3f} ({ratios[0]:.3f}-{ratios[-1]:.3f}) |")


if __name__ == "__main__":
    main()
