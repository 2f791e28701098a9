#!/usr/bin/env python3
"""permessage-deflate: wsloop --deflate off|shared|dedicated against Node's
`ws` and Python's `websockets` with compression, on realistic JSON.

    python3 benches/deflate.py                 # 3 repetitions of 5 s
    python3 benches/deflate.py --quick         # 1 repetition of 2 s
    python3 benches/deflate.py --cases "echo ticker" --servers "wsloop shared,node ws"

Servers (pinned to CPU 0; wsflood, the client, to CPU 1):
  wsloop off          permessage-deflate declined: the uncompressed baseline
  wsloop shared       no context takeover either way; one codec per loop
  wsloop dedicated    context takeover where the client allows (here: both ways)
  node ws             `ws` with perMessageDeflate, no context takeover (as
                      wsloop shared), level 1 (benches/peers/node/deflate.js)
  node ws takeover    the same with context takeover (as wsloop dedicated)
  python websockets   `websockets` (asyncio) with its default compression:
                      context takeover, 12-bit windows, level 6
                      (benches/peers/python/websockets_server.py)

Every server compresses messages of at least --threshold bytes (default 0:
all, so that every message is compressed both ways; wsloop's and ws's own
default is 1024, under which a ticker would go plain). `websockets` has no
threshold. wsflood offers "permessage-deflate; client_max_window_bits",
compresses everything it sends at level 1 (with context takeover where the
answer allows) and checks every message byte for byte once inflated.

Cases (wsflood --payload json: ticker ticks, chat messages, documents):
  echo ticker      100 connections, 120-byte ticks, one outstanding each
  echo chat        100 connections, 600-byte chat messages
  echo document    10 connections, 16 KiB documents
  broadcast ticker one publisher (16 outstanding) to 1,000 members, 120 B
  broadcast doc    one publisher (4 outstanding) to 100 members, 16 KiB

Currency: messages (echoes, deliveries) per server CPU-second, the server's
utime + stime over the whole wsflood run. Beside it: messages per second,
and the bytes on the wire per message (from wsflood's socket counters,
both directions, handshakes included) against the payload's size.
Repetitions are interleaved (rep 1 of every case and server, then rep 2,
...) so that drift in the machine's load spreads over all. Prints Markdown
tables (medians, min-max) and writes target/deflate-bench/results.json.

Needs target/release/{wsloop,wsflood} (cargo build --release), node with
the peer's modules (npm ci in benches/peers/node) and python3 with
`websockets` (pip install websockets); a missing peer is skipped with a
note. Python 3 standard library only; Linux only (taskset, /proc).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402  (process helpers and wsflood's summary)

ROOT = compare.ROOT
WORK = ROOT / "target" / "deflate-bench"
NODE = ROOT / "benches" / "peers" / "node"
PYTHON_PEER = ROOT / "benches" / "peers" / "python" / "websockets_server.py"

# name, mode, connections, payload bytes, outstanding per connection (echo)
# or per publisher (broadcast)
CASES = [
    ("echo ticker", "echo", 100, 120, 1),
    ("echo chat", "echo", 100, 600, 1),
    ("echo document", "echo", 10, 16 << 10, 1),
    ("broadcast ticker", "broadcast", 1001, 120, 16),
    ("broadcast doc", "broadcast", 101, 16 << 10, 4),
]


def servers(args):
    """name -> function(port) -> argv."""
    wsloop = str(ROOT / "target/release/wsloop")
    t = str(args.threshold)

    def ws_loop(mode):
        return lambda port: [
            wsloop,
            "--listen",
            f"127.0.0.1:{port}",
            "--broadcast-to-sender",
            "--deflate",
            mode,
            "--deflate-threshold",
            t,
        ]

    out = {
        "wsloop off": ws_loop("off"),
        "wsloop shared": ws_loop("shared"),
        "wsloop dedicated": ws_loop("dedicated"),
    }
    if (NODE / "node_modules" / "ws").is_dir() and shutil.which("node"):
        node = ["node", str(NODE / "deflate.js"), "--threshold", t]
        out["node ws"] = lambda port: [*node, "--listen", f"127.0.0.1:{port}"]
        out["node ws takeover"] = lambda port: [*node, "--takeover", "--listen", f"127.0.0.1:{port}"]
    else:
        print("note: the Node peer's modules are missing (npm ci in benches/peers/node): skipped", file=sys.stderr)
    probe = subprocess.run(["python3", "-c", "import websockets"], capture_output=True)
    if probe.returncode == 0:
        out["python websockets"] = lambda port: ["python3", str(PYTHON_PEER), "--listen", f"127.0.0.1:{port}"]
    else:
        print("note: python3 cannot import websockets (pip install websockets): skipped", file=sys.stderr)
    return out


def wsflood_argv(args, case, port, json_path, pid):
    name, mode, conns, size, inflight = case
    path = "/broadcast/bench" if mode == "broadcast" else "/echo"
    argv = [args.wsflood, mode, "--url", f"ws://127.0.0.1:{port}{path}", "-c", str(conns)]
    argv += ["-d", str(args.duration), "--payload", "json", "-s", str(size), "-k", str(inflight)]
    argv += ["--deflate", "--server-pid", str(pid), "--json", str(json_path), "-q"]
    if mode == "broadcast":
        argv += ["--publishers", "1", "--expect-self"]
    return argv


def run_one(args, name, argv_of, case, rep):
    port = compare.free_port()
    rec = {"server": name, "case": case[0], "rep": rep}
    tag = f"{name}-{case[0]}-{rep}".replace(" ", "_")
    with open(WORK / f"{tag}.server.log", "wb") as log:
        srv = subprocess.Popen(
            ["taskset", "-c", args.server_cpu, *argv_of(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env={**os.environ, "RUST_LOG": "warn"},
            preexec_fn=compare.raise_nofile,
            cwd=ROOT,
        )
    try:
        if not compare.wait_listening(port, srv):
            rec["error"] = "server did not start"
            return rec
        time.sleep(0.3)
        json_path = WORK / f"{tag}.json"
        json_path.unlink(missing_ok=True)
        argv = wsflood_argv(args, case, port, json_path, srv.pid)
        cpu0 = compare.cpu_seconds(srv.pid)
        with open(WORK / f"{tag}.client.log", "wb") as log:
            try:
                rc = subprocess.run(
                    ["taskset", "-c", args.client_cpu, *argv],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=args.duration + 60,
                    preexec_fn=compare.raise_nofile,
                ).returncode
            except subprocess.TimeoutExpired:
                rec["error"] = "wsflood timed out"
                return rec
        if srv.poll() is not None:
            rec["error"] = f"server exited with {srv.returncode}"
            return rec
        cpu = compare.cpu_seconds(srv.pid) - cpu0
        if not json_path.exists():
            rec["error"] = f"wsflood exit {rc}, no summary"
            return rec
        summary = json.loads(json_path.read_text())
        got = compare.extract(case[1], summary)
        m = summary["messages"]
        d = summary.get("deflate") or {}
        received = max(m["received"], 1)
        sent = max(m["sent"], 1)
        rec.update(
            rate=got["rate"],
            count=got["count"],
            cpu_s=round(cpu, 3),
            errors=got["errors"],
            client_percent=(summary.get("cpu") or {}).get("client_percent"),
            # Per message, both directions: what the server sent per
            # delivery, and what wsflood sent per message.
            wire_in_per_msg=m["wire_bytes_received"] / received,
            wire_out_per_msg=m["wire_bytes_sent"] / sent,
            payload=case[3],
            agreed=d.get("agreed"),
            answers=[a["response"] for a in d.get("answers", [])],
            compressed_in=m.get("compressed_received"),
            argv=argv,
        )
        if got["count"] and cpu > 0:
            rec["per_cpu_s"] = got["count"] / cpu
        if rc != 0 or got["verified"] is False:
            rec["error"] = f"wsflood exit {rc}, verified {got['verified']}"
        return rec
    finally:
        compare.stop(srv)


def med(values, fmt="{:,.0f}"):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    m = statistics.median(values)
    if len(values) == 1:
        return fmt.format(m)
    return f"{fmt.format(m)} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def table(records, names, cases):
    lines = [
        "| case | server | msgs/s | msgs per server CPU-s | wire B/msg in | wire B/msg out | answer | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for case in cases:
        for name in names:
            rs = [r for r in records if r["server"] == name and r["case"] == case[0]]
            if not rs:
                continue
            errs = sorted({r["error"] for r in rs if "error" in r})
            ok = [r for r in rs if "error" not in r]
            answers = sorted({a for r in ok for a in r.get("answers", [])}) or ["(declined)"]
            lines.append(
                f"| {case[0]} ({case[3]} B) | {name} | {med([r.get('rate') for r in ok])} "
                f"| {med([r.get('per_cpu_s') for r in ok])} "
                f"| {med([r.get('wire_in_per_msg') for r in ok], '{:,.1f}')} "
                f"| {med([r.get('wire_out_per_msg') for r in ok], '{:,.1f}')} "
                f"| {'; '.join(a.replace('permessage-deflate', 'pmd') for a in answers)} | {'; '.join(errs) or 'none'} |"
            )
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 repetition of 2 s")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--threshold", type=int, default=0, help="servers' compression threshold, bytes")
    ap.add_argument("--cases", help="comma-separated case names (default: all)")
    ap.add_argument("--servers", help="comma-separated server names (default: all)")
    ap.add_argument("--wsflood", default=str(ROOT / "target/release/wsflood"))
    ap.add_argument("--server-cpu", default="0")
    ap.add_argument("--client-cpu", default="1")
    args = ap.parse_args()
    if args.quick:
        args.reps, args.duration = 1, 2.0
    WORK.mkdir(parents=True, exist_ok=True)
    all_servers = servers(args)
    names = [n for n in all_servers if not args.servers or n in args.servers.split(",")]
    cases = [c for c in CASES if not args.cases or c[0] in args.cases.split(",")]
    records = []
    for rep in range(args.reps):
        for case in cases:
            for name in names:
                rec = run_one(args, name, all_servers[name], case, rep)
                print(json.dumps({k: v for k, v in rec.items() if k != "argv"}), file=sys.stderr)
                records.append(rec)
    (WORK / "results.json").write_text(json.dumps(records, indent=1))
    print(
        f"{args.reps} repetition(s) of {args.duration:g} s; threshold {args.threshold} B; "
        f"server on CPU {args.server_cpu}, wsflood on CPU {args.client_cpu}\n"
    )
    print(table(records, names, cases))


if __name__ == "__main__":
    main()
