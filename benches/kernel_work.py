#!/usr/bin/env python3
"""What the kernel does per echo, server by server, under uWebSockets' load_test.

    python3 benches/kernel_work.py --uws-dir DIR --case 10:16384 --reps 15 --windows 2 \\
        "wsloop=target/release/wsloop --listen 127.0.0.1:{port}" \\
        "rawtcp=benches/peers/target/release/rawtcp-echo --listen 127.0.0.1:{port}" \\
        "uws=DIR/uws-echo {port}"

Each argument is NAME=COMMAND, `{port}` standing for a free port. For every
repetition every server runs once (a fresh process on CPU 0, `load_test C
127.0.0.1 PORT 0 0 SIZE` on CPU 1; the order reverses every other
repetition), and over whole 4-second windows of the client, after its first
(ramp) line, this records:

- echoes per second of server CPU time (utime + stime), and the ratio to the
  last server named, taken within the repetition;
- echoes per voluntary context switch of the server and of the client (how
  often each slept in epoll_wait): a sleep and a wake are work the other
  side's send pays for on loopback;
- the kernel's SNMP counters (`nstat -asz`) per echo: segments, octets,
  delayed and pure ACKs. They are system-wide, so nothing else should use
  loopback TCP during the run.

Python 3 standard library and compare.py's helpers (next to this file),
`nstat` (iproute2), `taskset` and `stdbuf`; Linux only. BENCHMARKS.md
("Reading the results") gives what it found.
"""

import argparse
import os
import statistics
import subprocess

from compare import cpu_seconds, free_port, wait_listening

WINDOW_S = 4.0


def sleeps(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("voluntary_ctxt_switches"):
            return int(line.split()[1])
    return 0


def snmp():
    out = subprocess.run(["nstat", "-asz"], capture_output=True, text=True, check=True).stdout
    counters = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            counters[parts[0]] = int(parts[1])
    return counters


def run_one(command, load_test, conns, size, windows):
    port = free_port()
    server = subprocess.Popen(
        ["taskset", "-c", "0", *command.format(port=port).split()],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "RUST_LOG": "warn"},
    )
    client = None
    try:
        if not wait_listening(port, server):
            raise SystemExit(f"{command}: not listening on {port}")
        client = subprocess.Popen(
            ["stdbuf", "-oL", "taskset", "-c", "1", load_test, str(conns), "127.0.0.1", str(port), "0", "0", str(size)],
            stdout=subprocess.PIPE,
            text=True,
        )
        lines, echoes, start = 0, 0.0, None
        for line in client.stdout:
            if not line.startswith("Msg/sec"):
                continue
            lines += 1
            now = (cpu_seconds(server.pid), sleeps(server.pid), sleeps(client.pid), snmp())
            if lines == 1:
                start = now
                continue
            echoes += float(line.split(":", 1)[1]) * WINDOW_S
            if lines == windows + 1:
                break
        else:
            raise SystemExit(f"{command}: load_test ended early")
        if echoes == 0:
            raise SystemExit(f"{command}: no echoes")
        per = {k: (v - start[3].get(k, 0)) / echoes for k, v in now[3].items() if v != start[3].get(k, 0)}
        return {
            "per_cpu": echoes / (now[0] - start[0]),
            "server_sleep": echoes / max(1, now[1] - start[1]),
            "client_sleep": echoes / max(1, now[2] - start[2]),
            "snmp": per,
        }
    finally:
        for p in (client, server):
            if p is not None:
                p.kill()
                p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uws-dir", default=os.environ.get("WSLOOP_UWS_DIR"), help="where load_test is")
    ap.add_argument("--case", default="10:16384", help="CONNECTIONS:SIZE")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--windows", type=int, default=1, help="4-second windows per run")
    ap.add_argument("servers", nargs="+", help="NAME=COMMAND with {port}")
    args = ap.parse_args()
    if not args.uws_dir:
        raise SystemExit("--uws-dir (or WSLOOP_UWS_DIR): the directory holding load_test")
    load_test = os.path.join(args.uws_dir, "load_test")
    conns, size = map(int, args.case.split(":"))
    commands = dict(s.split("=", 1) for s in args.servers)
    names = list(commands)
    runs = {n: [] for n in names}
    for rep in range(args.reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            runs[name].append(run_one(commands[name], load_test, conns, size, args.windows))
        print(f"rep {rep + 1}: " + "  ".join(f"{n} {runs[n][-1]['per_cpu'] / 1e3:.0f}k/cpu-s" for n in names), flush=True)

    base = names[-1]
    print(f"\n{conns} x {size} B, {args.reps} repetitions of {args.windows} window(s); median (min-max)")
    for n in names:
        ratios = [a["per_cpu"] / b["per_cpu"] for a, b in zip(runs[n], runs[base])]
        print(
            f"{n:12s} {statistics.median(r['per_cpu'] for r in runs[n]) / 1e3:6.0f}k echoes/cpu-s"
            f"  ÷ {base} {statistics.median(ratios):.3f} ({min(ratios):.2f}-{max(ratios):.2f})"
            f"  echoes per sleep: server {statistics.median(r['server_sleep'] for r in runs[n]):.1f},"
            f" client {statistics.median(r['client_sleep'] for r in runs[n]):.1f}"
        )
    keys = sorted({k for n in names for r in runs[n] for k in r["snmp"]})
    print("\nper echo (median), system-wide counters:", "  ".join(f"{n:>10s}" for n in names))
    for k in keys:
        row = [statistics.median(r["snmp"].get(k, 0.0) for r in runs[n]) for n in names]
        if max(row) >= 0.01:
            print(f"{k:40s}", "  ".join(f"{x:10.3f}" for x in row))


if __name__ == "__main__":
    main()
