#!/usr/bin/env python3
"""Soak: many connections with permessage-deflate, churning while messages
flow; the server's memory must level off.

    python3 benches/deflate_soak.py                          # shared, 10,000 connections, 10 minutes
    python3 benches/deflate_soak.py --mode dedicated         # capped to fit --server-gib
    python3 benches/deflate_soak.py --minutes 2 -c 2000      # a short one

wsloop (release build) runs with --deflate MODE; wsflood keeps
--connections echo connections open with compression agreed, each sending
--rate JSON messages per second (--payload json, sizes --sizes cycled),
every one checked once inflated, and each connection reconnecting after
about --lifetime seconds (so about connections/lifetime reconnect every
second: at the defaults, a tenth of them every 5 s). The server's RSS is
sampled every 10 s; the curve is printed with one sample per minute. Pass:
wsflood verified everything and the RSS after the last minute is within
--tolerance (10 %) of the RSS after the first minute in which (nearly)
every connection is open (minute 1 on a quiet machine; the ramp-up can
take longer on a loaded one, and must end within the first half).

In dedicated mode each connection may hold a compressor and a decompressor
(about 430 KiB with 15-bit windows) on each side; the connection count is
capped so that the server's share fits in --server-gib (default 6) and
both sides in the memory available now.

Bounded: the run ends after --minutes plus the ramp-up and 2 minutes of
slack, whatever happens. Linux only (/proc). Python 3 standard library only.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "target" / "deflate-soak"
# A dedicated connection with context takeover both ways: a 15-bit
# compressor and a decompressor (src/proto/deflate.rs), on each side.
DEDICATED_BYTES = 430 << 10


def meminfo_kib(field):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_now(client_log):
    """Connections open, from wsflood's last progress line ("[ 12.0s] open N ...")."""
    try:
        with open(client_log, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if "] open " in line:
            return int(line.split("] open ")[1].split()[0])
    return None


def cap_connections(args):
    if args.mode != "dedicated":
        return args.connections
    by_server = (args.server_gib << 30) // DEDICATED_BYTES
    # Both sides, and a quarter of what is available left free.
    by_machine = int(meminfo_kib("MemAvailable") * 1024 * 0.75) // (2 * DEDICATED_BYTES)
    n = min(args.connections, by_server, by_machine)
    if n < args.connections:
        print(
            f"dedicated: {args.connections} connections x {DEDICATED_BYTES >> 10} KiB do not fit "
            f"(server cap {args.server_gib} GiB: {by_server}; available memory: {by_machine}); using {n}",
            file=sys.stderr,
        )
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=["shared", "dedicated"], default="shared")
    ap.add_argument("-c", "--connections", type=int, default=10_000)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=0.5, help="messages per second per connection")
    ap.add_argument("--lifetime", type=float, default=50.0, help="seconds a connection lives")
    ap.add_argument("--sizes", default="120,600,16384", help="JSON payload sizes, cycled")
    ap.add_argument("--threshold", type=int, help="the server's --deflate-threshold (default: its own, 1024)")
    ap.add_argument("--threads", type=int, default=1, help="wsflood threads")
    ap.add_argument("--server-gib", type=int, default=6)
    ap.add_argument("--tolerance", type=float, default=0.10)
    ap.add_argument("--wsloop", default=str(ROOT / "target/release/wsloop"))
    ap.add_argument("--wsflood", default=str(ROOT / "target/release/wsflood"))
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    n = cap_connections(args)
    duration = args.minutes * 60
    server_log = open(WORK / f"{args.mode}.server.log", "wb")
    server_argv = [args.wsloop, "--listen", "127.0.0.1:0", "--deflate", args.mode, "--max-connections", str(n + n // 5 + 100)]
    if args.threshold is not None:
        server_argv += ["--deflate-threshold", str(args.threshold)]
    print(" ".join(server_argv), file=sys.stderr)
    server = subprocess.Popen(
        server_argv,
        stdin=subprocess.DEVNULL,
        stdout=server_log,
        stderr=subprocess.PIPE,
        env={**os.environ, "RUST_LOG": "warn,wsloop=info"},
    )
    client = None
    try:
        addr = None
        deadline = time.monotonic() + 20
        while addr is None and time.monotonic() < deadline:
            line = server.stderr.readline().decode(errors="replace")
            if not line:
                break
            server_log.write(line.encode())
            if "listening on " in line:
                addr = line.split("listening on ")[1].split()[0]
        if addr is None:
            sys.exit("wsloop did not start")
        # The rest of the server's log goes to its file.
        threading.Thread(target=shutil.copyfileobj, args=(server.stderr, server_log), daemon=True).start()
        json_path = WORK / f"{args.mode}.json"
        json_path.unlink(missing_ok=True)
        argv = [
            args.wsflood, "echo", "--url", f"ws://{addr}/echo", "-c", str(n), "-t", str(args.threads),
            "--rate", str(args.rate), "--lifetime", str(args.lifetime), "--deflate", "--payload", "json",
            "--payload-sizes", args.sizes, "-d", str(duration), "--server-pid", str(server.pid),
            "--json", str(json_path),
        ]
        print(" ".join(argv), file=sys.stderr)
        client_log = open(WORK / f"{args.mode}.client.log", "wb")
        client = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=client_log, stderr=subprocess.STDOUT)
        start = time.monotonic()
        samples = []  # (seconds, rss KiB)
        hard = start + duration + 120
        while client.poll() is None and time.monotonic() < hard:
            t = time.monotonic() - start
            if t <= duration + 1:
                samples.append((round(t, 1), rss_kib(server.pid), open_now(WORK / f"{args.mode}.client.log")))
            time.sleep(10 - (time.monotonic() - start) % 10)
        if client.poll() is None:
            client.kill()
            client.wait()
            print("wsflood did not finish in time", file=sys.stderr)
        summary = json.loads(json_path.read_text()) if json_path.exists() else {}
    finally:
        if client and client.poll() is None:
            client.kill()
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
    report(args, n, samples, summary, client.returncode if client else None)


def report(args, n, samples, summary, rc):
    """Prints the per-minute curve and the verdict; exits 1 on failure."""
    minutes = []
    for m in range(1, int(args.minutes) + 1):
        # The sample nearest the end of minute m.
        best = min(samples, key=lambda s: abs(s[0] - 60 * m), default=None)
        if best and abs(best[0] - 60 * m) <= 10:
            minutes.append((m, best[1], best[2]))
    threshold = "" if args.threshold is None else f" --deflate-threshold {args.threshold}"
    print(f"wsloop --deflate {args.mode}{threshold}: {n} connections, {args.rate}/s each, lifetime {args.lifetime} s, "
          f"payloads {args.sizes} (json)")
    # The baseline is the first minute with (nearly) every connection open:
    # on a loaded machine the ramp-up can take minutes, and RSS grows with it.
    base = next((i for i, (_, _, conns) in enumerate(minutes) if conns >= 0.98 * n), None)
    base_m = minutes[base][0] if base is not None else None
    first = minutes[base][1] if base is not None else None
    print(f"| minute | server RSS (MiB) | vs minute {base_m} | open connections | RSS per open connection (KiB) |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for m, kib, conns in minutes:
        per = f"{kib / conns:.1f}" if conns else "–"
        vs = f"{100 * (kib / first - 1):+.1f} %" if first else "–"
        print(f"| {m} | {kib / 1024:.1f} | {vs} | {conns} | {per} |")
    v = summary.get("verification", {})
    m = summary.get("messages", {})
    life = summary.get("lifetime", {})
    print(f"\nwsflood exit {rc}: verification {'ok' if v.get('ok') else 'FAILED'}; messages sent {m.get('sent')}, "
          f"received {m.get('received')} ({m.get('compressed_received')} compressed); reconnects "
          f"{life.get('reconnects')}; errors {summary.get('errors', {}).get('total')}")
    if m.get("bytes_received"):
        print(f"wire bytes received / payload bytes: {m['wire_bytes_received'] / m['bytes_received']:.3f}")
    (WORK / f"{args.mode}.samples.json").write_text(json.dumps({"samples": samples, "minutes": minutes}))
    # At least half the run must come after the ramp-up for the verdict.
    ok = rc == 0 and v.get("ok") and base is not None and base_m <= args.minutes / 2
    if ok:
        drift = minutes[-1][1] / first - 1
        ok = abs(drift) <= args.tolerance
        print(f"RSS after minute {minutes[-1][0]} vs minute {base_m} (the first with every connection open): "
              f"{100 * drift:+.1f} % (tolerance {100 * args.tolerance:.0f} %): {'PASS' if ok else 'FAIL'}")
    else:
        print("FAIL" if base is not None and base_m <= args.minutes / 2 else "FAIL: the ramp-up took over half the run")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
