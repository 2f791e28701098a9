#!/usr/bin/env python3
"""wsloop against other WebSocket servers, on one machine, in one run.

    python3 benches/compare.py                 # everything, 3 repetitions
    python3 benches/compare.py --quick         # 1 repetition of 2 s each
    python3 benches/compare.py --cases echo --servers wsloop,rawtcp

For each case and server: start the server pinned to CPU 0 (`taskset -c 0`)
on a free loopback port, drive it with `wsflood` pinned to CPU 1, and record
the rate wsflood reports, the server's CPU seconds over the run (utime +
stime from /proc/PID/stat, before and after), and messages per server
CPU-second. Repetitions are interleaved (rep 1 of every case and server,
then rep 2, ...) so that slow drift in the machine's load spreads over all
servers alike. Every run is bounded (--duration, and a hard timeout).

Writes the tables into BENCHMARKS.md between the compare markers, a chart
to benches/results.svg, and the raw records to target/compare/results.json
(`--report-only FILE` redraws the tables and chart from such a file). The
logs of every server and wsflood run are in target/compare/ too.
Python 3 standard library only; Linux only (taskset, /proc).
"""

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "benches" / "peers"
WORK = ROOT / "target" / "compare"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
BEGIN = "<!-- compare:begin (written by benches/compare.py; edits between the markers are lost) -->"
END = "<!-- compare:end -->"

# Older glibc (Debian 12's 2.36) on AMD Zen 3 copies large blocks with
# `rep movsb` even where it is 20-50x slow (destination 0..32 bytes ahead of
# the source modulo 4 KiB, glibc bug 30994); this moves the threshold out of
# reach so that the vector loop is used instead. See BENCHMARKS.md.
NO_REP_MOVSB = {"GLIBC_TUNABLES": "glibc.cpu.x86_rep_movsb_threshold=4294967295"}


# --------------------------------------------------------------------------
# Servers


@dataclass
class Server:
    name: str
    # argv given the listen address and the case's extra server arguments.
    argv: object
    env: dict = field(default_factory=dict)
    # Modes it can serve: echo and churn need an echo server; broadcast needs
    # rooms at /broadcast/ROOM; idle works with anything.
    modes: tuple = ("echo", "churn", "idle")
    # Only run the echo cases whose name contains one of these (None: all).
    only: tuple = None
    note: str = ""


SERVERS = [
    Server(
        "wsloop",
        lambda addr, extra: [str(ROOT / "target/release/wsloop"), "--listen", addr, *extra],
        env={"RUST_LOG": "warn"},
        modes=("echo", "churn", "idle", "broadcast"),
    ),
    Server(
        "wsloop (no rep movsb)",
        lambda addr, extra: [str(ROOT / "target/release/wsloop"), "--listen", addr, *extra],
        env={"RUST_LOG": "warn", **NO_REP_MOVSB},
        modes=("echo",),
        only=("16 KiB",),
        note="wsloop with GLIBC_TUNABLES raising the rep-movsb threshold (see BENCHMARKS.md)",
    ),
    Server(
        "rawtcp",
        lambda addr, extra: [str(PEERS / "target/release/rawtcp-echo"), "--listen", addr],
        note="minimum work per frame on wsloop's loop design: the ceiling",
    ),
    Server(
        "fastwebsockets",
        lambda addr, extra: [str(PEERS / "target/release/fastwebsockets-echo"), "--listen", addr],
    ),
    Server(
        "tokio-tungstenite",
        lambda addr, extra: [str(PEERS / "target/release/tokio-tungstenite-echo"), "--listen", addr],
    ),
    Server(
        "node ws",
        lambda addr, extra: ["node", str(PEERS / "node/echo.js"), "--listen", addr],
    ),
]


# --------------------------------------------------------------------------
# Cases


@dataclass
class Case:
    name: str
    mode: str  # echo | broadcast | churn | idle
    connections: int
    size: int = 20
    inflight: int = 1
    publishers: int = 0
    all_to_all: bool = False
    expect_self: bool = False
    server_args: tuple = ()
    unit: str = "msgs/s"
    group: str = ""
    # Seconds at least, whatever --duration says (ramp-up of many
    # connections counts against wsflood's duration).
    min_duration: float = 0.0


CASES = [
    Case("echo 100×20 B", "echo", 100, 20, group="echo"),
    Case("echo 10×16 KiB", "echo", 10, 16 << 10, group="echo"),
    Case("echo 1000×20 B", "echo", 1000, 20, group="echo"),
    Case("echo 500×16 KiB", "echo", 500, 16 << 10, group="echo"),
    # Every member publishes one 64-byte message per round and waits for the
    # whole round (uWebSockets' broadcast_test): deliveries/s.
    *[
        Case(
            f"broadcast all-to-all N={n}",
            "broadcast",
            n,
            64,
            all_to_all=True,
            expect_self=True,
            server_args=("--broadcast-to-sender",),
            unit="deliveries/s",
            group="broadcast",
        )
        for n in (100, 500, 1000)
    ],
    # One publisher, self-clocked: it keeps 16 messages not yet delivered
    # back to itself, so no subscriber queue grows without bound.
    *[
        Case(
            f"broadcast 1→{n}",
            "broadcast",
            n + 1,
            64,
            inflight=16,
            publishers=1,
            expect_self=True,
            server_args=("--broadcast-to-sender",),
            unit="deliveries/s",
            group="broadcast",
            min_duration=5.0 if n < 10000 else 8.0,
        )
        for n in (1000, 10000)
    ],
    # Connect, handshake, one 20-byte echo, close; 100 at a time.
    Case("churn (100 at a time)", "churn", 100, 20, unit="handshakes/s", group="churn"),
    Case("idle 10000", "idle", 10000, unit="bytes RSS/conn", group="idle", min_duration=6.0),
]


# --------------------------------------------------------------------------
# wsflood's JSON summary: the only code that knows its field names.


def _flatten(obj, prefix=""):
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = obj
    return out


def _pick(flat, *names):
    """The first of the dotted `names` that holds a number."""
    for name in names:
        v = flat.get(name)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return v
    return None


def extract(mode, summary):
    """Returns {rate, count, errors, verified, wsflood_rss_per_conn} from
    wsflood's summary (tools/wsflood/src/report.rs, `Report::json`).

    rate: echoes (echo), deliveries (broadcast) or connect-handshake-echo-
    close cycles (churn) per second, over wsflood's load window. count: the
    same over the whole run (what the server's CPU time is divided by).
    Adapt the names here if wsflood's summary changes.
    """
    flat = _flatten(summary)
    if mode == "churn":
        rate = _pick(flat, "churn.per_s", "connects.handshakes_per_s")
        count = _pick(flat, "churn.cycles", "connects.established")
    else:
        rate = _pick(flat, "messages.per_s")
        count = _pick(flat, "messages.received")
    if rate is None and count is not None:
        elapsed = _pick(flat, "elapsed_s")
        if elapsed:
            rate = count / elapsed
    verified = flat.get("verification.ok")
    return {
        "rate": rate,
        "count": count,
        "errors": _pick(flat, "errors.total"),
        "verified": verified,
        "wsflood_rss_per_conn": _pick(flat, "server_rss.bytes_per_connection"),
        "wsflood_server_cpu_s": _pick(flat, "cpu.server_s"),
    }


# --------------------------------------------------------------------------
# Processes


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def cpu_seconds(pid):
    """utime + stime of the process (all threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def rss_kib(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE_KIB


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wsflood_argv(args, case, port, json_path, server_pid):
    path = "/broadcast/bench" if case.mode == "broadcast" else "/echo"
    argv = [
        args.wsflood,
        case.mode,
        "--url",
        f"ws://127.0.0.1:{port}{path}",
        "--connections",
        str(case.connections),
        "--duration",
        str(max(args.duration, case.min_duration)),
        "--json",
        str(json_path),
        "--quiet",
    ]
    if case.mode in ("echo", "broadcast", "churn"):
        argv += ["--payload-size", str(case.size)]
    if case.mode in ("echo", "broadcast"):
        argv += ["--inflight", str(case.inflight)]
    if case.mode == "broadcast":
        if case.all_to_all:
            argv += ["--all-to-all"]
        else:
            argv += ["--publishers", str(case.publishers)]
        if case.expect_self:
            argv += ["--expect-self"]
    # wsflood reads the server's CPU time (and, idle, RSS) too: a cross-check.
    argv += ["--server-pid", str(server_pid)]
    return argv


def run_one(args, server, case, rep):
    """One server process, one wsflood run. Returns a record."""
    port = free_port()
    addr = f"127.0.0.1:{port}"
    WORK.mkdir(parents=True, exist_ok=True)
    tag = f"{server.name}-{case.name}-{rep}".replace(" ", "_").replace("/", "_")
    json_path = WORK / f"{tag}.json"
    json_path.unlink(missing_ok=True)
    rec = {"case": case.name, "server": server.name, "rep": rep, "mode": case.mode}
    env = {**os.environ, **server.env}
    with open(WORK / f"{tag}.server.log", "wb") as log:
        srv = subprocess.Popen(
            ["taskset", "-c", args.server_cpu, *server.argv(addr, list(case.server_args))],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            preexec_fn=raise_nofile,
            cwd=ROOT,
        )
    try:
        if not wait_listening(port, srv):
            rec["error"] = "server did not start"
            return rec
        time.sleep(0.2)
        cpu0, rss0, t0 = cpu_seconds(srv.pid), rss_kib(srv.pid), time.monotonic()
        rss_peak = rss0
        argv = wsflood_argv(args, case, port, json_path, srv.pid)
        with open(WORK / f"{tag}.wsflood.log", "wb") as log:
            cli = subprocess.Popen(
                ["taskset", "-c", args.client_cpu, *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=raise_nofile,
                cwd=ROOT,
            )
            deadline = time.monotonic() + max(args.duration, case.min_duration) + 60
            while cli.poll() is None:
                if time.monotonic() > deadline:
                    cli.kill()
                    cli.wait()
                    rec["error"] = "wsflood timed out"
                    break
                try:
                    rss_peak = max(rss_peak, rss_kib(srv.pid))
                except OSError:
                    pass
                time.sleep(0.1)
        wall = time.monotonic() - t0
        if srv.poll() is not None:
            rec["error"] = f"server exited with {srv.returncode}"
            return rec
        cpu = cpu_seconds(srv.pid) - cpu0
        rec.update(
            wall_s=round(wall, 3),
            cpu_s=round(cpu, 3),
            rss_before_kib=rss0,
            rss_peak_kib=rss_peak,
            wsflood_exit=cli.returncode,
            argv=argv,
        )
        if not json_path.exists():
            rec.setdefault("error", f"wsflood wrote no JSON (exit {cli.returncode})")
            return rec
        summary = json.loads(json_path.read_text())
        rec["summary"] = summary
        rec.update(extract(case.mode, summary))
        if case.mode == "idle":
            rec["rss_per_conn_bytes"] = (rss_peak - rss0) * 1024 / case.connections
        elif rec.get("count") and cpu > 0:
            rec["per_cpu_s"] = rec["count"] / cpu
        if cli.returncode not in (0, None) and "error" not in rec:
            rec["error"] = f"wsflood exit {cli.returncode}"
        if rec.get("verified") is False and "error" not in rec:
            rec["error"] = "wsflood verification failed"
        return rec
    finally:
        stop(srv)


# --------------------------------------------------------------------------
# Report


def revision():
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True)
        return rev.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
    except OSError:
        return "?"


def machine():
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs, {model}, Linux {platform.release()}"


def summarize(records, case, server, key):
    vals = [r[key] for r in records if r["case"] == case and r["server"] == server and r.get(key) is not None]
    errs = [r for r in records if r["case"] == case and r["server"] == server and r.get("error")]
    if not vals:
        return None, errs
    med = statistics.median(vals)
    return (med, min(vals), max(vals), len(vals)), errs


def fmt_num(v):
    if v is None:
        return "–"
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e4:
        return f"{v / 1e3:.0f}k"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}"


def fmt_cell(stat, errs):
    if stat is None:
        return "fail" if errs else "n/a"
    med, lo, hi, n = stat
    spread = (hi - lo) / med * 100 if med else 0
    cell = fmt_num(med) + (f" ±{spread / 2:.0f}%" if n > 1 else "")
    if errs:
        cell += f" ({len(errs)} err)"
    return cell


def table(records, cases, servers, key, title):
    lines = [f"**{title}**", "", "| case | " + " | ".join(s.name for s in servers) + " |"]
    lines.append("| --- |" + " ---: |" * len(servers))
    for c in cases:
        row = [f"{c.name} ({c.unit})" if key == "rate" else c.name]
        for s in servers:
            stat, errs = summarize(records, c.name, s.name, key)
            row.append(fmt_cell(stat, errs))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def best_table(records, cases, servers):
    """The least disturbed repetition of each case and server (highest rate),
    with the CPU share the server and wsflood got during it."""
    lines = [
        "**Best repetition** (highest rate of the repetitions; server / wsflood CPU % of one core during it)",
        "",
        "| case | " + " | ".join(s.name for s in servers) + " |",
        "| --- |" + " ---: |" * len(servers),
    ]
    for c in cases:
        row = [c.name]
        for s in servers:
            recs = [r for r in records if r["case"] == c.name and r["server"] == s.name and r.get("rate")]
            if not recs:
                row.append("n/a")
                continue
            r = max(recs, key=lambda r: r["rate"])
            srv = 100 * r["cpu_s"] / r["wall_s"] if r.get("wall_s") else 0
            cli = (r.get("summary") or {}).get("cpu", {}).get("client_percent") or 0
            row.append(f"{fmt_num(r['rate'])} ({srv:.0f}/{cli:.0f}%)")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def report(records, cases, servers, meta):
    used = [s for s in servers if any(r["server"] == s.name for r in records)]
    rate_cases = [c for c in cases if c.mode != "idle" and any(r["case"] == c.name for r in records)]
    idle_cases = [c for c in cases if c.mode == "idle" and any(r["case"] == c.name for r in records)]
    out = [
        BEGIN,
        "",
        f"Run {meta['started']} UTC at wsloop {meta['revision']} on {meta['machine']}: `{meta['cmdline']}`; "
        f"{meta['reps']} repetition(s) of {meta['duration']:g} s per case and server, server on CPU "
        f"{meta['server_cpu']}, wsflood on CPU {meta['client_cpu']}. Cells: median, ± half the min–max spread "
        "as % of the median; `n/a`: not run for that server; `fail`: no usable result (see "
        "target/compare/*.log).",
        "",
    ]
    if rate_cases:
        out += table(records, rate_cases, used, "rate", "Throughput (rate reported by wsflood)")
        out.append("")
        out += table(
            records,
            rate_cases,
            used,
            "per_cpu_s",
            "Efficiency: messages (churn: cycles) per second of server CPU time",
        )
        out.append("")
        out += best_table(records, rate_cases, used)
        out.append("")
    if idle_cases:
        out += table(records, idle_cases, used, "rss_per_conn_bytes", "Idle: server RSS growth per connection (bytes)")
        out.append("")
    failed = [r for r in records if r.get("error")]
    if failed:
        out.append("Errors: " + "; ".join(f"{r['server']} / {r['case']} rep {r['rep']}: {r['error']}" for r in failed))
        out.append("")
    out.append("![chart](benches/results.svg)")
    out += ["", END]
    return "\n".join(out)


def write_markdown(path, block):
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if BEGIN.split(" (")[0] in text and END in text:
        head = text[: text.index(BEGIN.split(" (")[0])]
        tail = text[text.index(END) + len(END) :]
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


COLORS = ["#1f77b4", "#9467bd", "#7f7f7f", "#2ca02c", "#ff7f0e", "#d62728", "#8c564b"]


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def svg_chart(records, cases, servers, path, meta):
    """Two panels (rate, rate per server CPU-second): a group of bars per
    case, one bar per server that ran it, each scaled to the largest value
    in its group, with the median written beside it."""
    used = [s for s in servers if any(r["server"] == s.name for r in records)]
    rows = [c for c in cases if c.mode != "idle" and any(r["case"] == c.name for r in records)]
    ran = {c.name: [s for s in used if any(r["case"] == c.name and r["server"] == s.name for r in records)] for c in rows}
    bar_h, gap, label_w, bar_w, top = 13, 12, 200, 330, 58
    heights = [bar_h * max(1, len(ran[c.name])) + gap for c in rows]
    panel_w = label_w + bar_w + 70
    height = top + sum(heights) + 30
    width = panel_w * 2 + 20
    color = {s.name: COLORS[i % len(COLORS)] for i, s in enumerate(used)}
    el = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    x = 10
    for s in used:
        el.append(f'<rect x="{x}" y="8" width="10" height="10" fill="{color[s.name]}"/>')
        el.append(f'<text x="{x + 14}" y="17">{esc(s.name)}</text>')
        x += 24 + 6.5 * len(s.name)
    # The best repetition rather than the median: on a shared machine it is
    # the one where the server and the client had their cores.
    panels = [
        ("best", "rate in the best repetition (msgs, deliveries or cycles/s)"),
        ("per_cpu_s", "per server CPU-second (median; line: min–max)"),
    ]
    for p, (key, title) in enumerate(panels):
        x0 = p * (panel_w + 20)
        el.append(f'<text x="{x0 + 10}" y="42" font-weight="bold">{esc(title)}</text>')
        y0 = top
        for c, h in zip(rows, heights):
            el.append(f'<text x="{x0 + 10}" y="{y0 + (h - gap) / 2 + 4}">{esc(c.name)}</text>')
            if key == "best":
                stats = []
                for s in ran[c.name]:
                    st = summarize(records, c.name, s.name, "rate")[0]
                    stats.append(st and (st[2], st[2], st[2], 1))
            else:
                stats = [summarize(records, c.name, s.name, key)[0] for s in ran[c.name]]
            best = max([max(st[0], st[2]) for st in stats if st] or [1]) or 1
            for si, (s, st) in enumerate(zip(ran[c.name], stats)):
                y = y0 + si * bar_h
                if not st:
                    el.append(f'<text x="{x0 + label_w}" y="{y + bar_h - 3}" fill="#888">fail</text>')
                    continue
                med, lo, hi, _ = st
                w = bar_w * med / best
                el.append(
                    f'<rect x="{x0 + label_w}" y="{y}" width="{w:.1f}" height="{bar_h - 2}" fill="{color[s.name]}">'
                    f"<title>{esc(s.name)}: {fmt_num(med)} ({fmt_num(lo)}–{fmt_num(hi)})</title></rect>"
                )
                if hi > lo:
                    xl, xh = x0 + label_w + bar_w * lo / best, x0 + label_w + bar_w * hi / best
                    ym = y + (bar_h - 2) / 2
                    el.append(f'<line x1="{xl:.1f}" y1="{ym}" x2="{xh:.1f}" y2="{ym}" stroke="black"/>')
                right = bar_w * max(med, hi) / best
                el.append(f'<text x="{x0 + label_w + right + 4:.1f}" y="{y + bar_h - 3}">{fmt_num(med)}</text>')
            y0 += h
    el.append(
        f'<text x="10" y="{height - 10}" fill="#555">Bars are scaled to the largest value in each group. '
        f"{esc(meta['machine'])}, wsloop {esc(meta['revision'])}, {esc(meta['started'])} UTC</text>"
    )
    el.append("</svg>")
    path.write_text("\n".join(el) + "\n")


# --------------------------------------------------------------------------
# Main


def build(args):
    steps = [
        (["cargo", "build", "--release", "-p", "wsloop", "--bin", "wsloop"], ROOT),
        (["cargo", "build", "--release", "-p", "wsflood"], ROOT),
        (["cargo", "build", "--release"], PEERS),
    ]
    if not (PEERS / "node/node_modules/ws").exists():
        steps.append((["npm", "ci", "--no-audit", "--no-fund"], PEERS / "node"))
    for argv, cwd in steps:  # one at a time: the machine has two cores
        print("+", " ".join(argv), f"(in {cwd.relative_to(ROOT) if cwd != ROOT else '.'})", flush=True)
        subprocess.run(argv, cwd=cwd, check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", help="comma-separated server names (default: all)")
    ap.add_argument("--cases", help="comma-separated case names or groups: echo, broadcast, churn, idle (--list)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per wsflood run")
    ap.add_argument("--quick", action="store_true", help="1 repetition of 2 s")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--wsflood", default=str(ROOT / "target/release/wsflood"))
    ap.add_argument("--server-cpu", default="0")
    ap.add_argument("--client-cpu", default="1")
    ap.add_argument("--markdown", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--svg", default=str(ROOT / "benches/results.svg"))
    ap.add_argument("--list", action="store_true", help="list servers and cases")
    ap.add_argument(
        "--report-only",
        metavar="RESULTS_JSON",
        help="rewrite the tables and chart from a saved target/compare/results.json, running nothing",
    )
    args = ap.parse_args()
    args.cmdline = ["python3", "benches/compare.py", *sys.argv[1:]]
    if args.quick:
        args.reps, args.duration = 1, 2.0
    if args.list:
        for s in SERVERS:
            print(f"server {s.name!r}: {', '.join(s.modes)} {s.note}")
        for c in CASES:
            print(f"case {c.name!r} ({c.group})")
        return
    servers = SERVERS
    if args.servers:
        want = [w.strip() for w in args.servers.split(",")]
        servers = [s for s in SERVERS if s.name in want]
        if len(servers) != len(want):
            sys.exit(f"unknown server in {want}; --list shows them")
    cases = CASES
    if args.cases:
        want = [w.strip() for w in args.cases.split(",")]
        cases = [c for c in CASES if c.group in want or c.name in want]
        if not cases:
            sys.exit(f"no case matches {want}; --list shows them")
    if args.report_only:
        saved = json.loads(Path(args.report_only).read_text())
        records, meta = saved["records"], saved["meta"]
        write_outputs(records, cases, servers, meta, args)
        return
    if not args.no_build:
        build(args)
    if not Path(args.wsflood).exists():
        sys.exit(f"no wsflood at {args.wsflood}")

    plan = [
        (s, c)
        for c in cases
        for s in servers
        if c.mode in s.modes and (c.mode != "echo" or s.only is None or any(o in c.name for o in s.only))
    ]
    per_run = args.duration + 3
    reps_of = lambda c: 1 if c.mode == "idle" else args.reps  # noqa: E731
    total = sum(reps_of(c) for _, c in plan)
    print(f"{total} runs, about {total * per_run / 60:.0f} min", flush=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    records = []
    done = 0
    for rep in range(1, args.reps + 1):
        for s, c in plan:
            if rep > reps_of(c):
                continue
            rec = run_one(args, s, c, rep)
            records.append(rec)
            done += 1
            what = rec.get("error") or (
                f"{fmt_num(rec.get('rate'))} {c.unit}, cpu {rec.get('cpu_s')} s"
                if c.mode != "idle"
                else f"{rec.get('rss_per_conn_bytes', 0):.0f} B/conn"
            )
            print(f"[{done}/{total}] rep {rep} {c.name} / {s.name}: {what}", flush=True)
    meta = {
        "started": f"{started:%Y-%m-%d %H:%M}",
        "revision": revision(),
        "machine": machine(),
        "cmdline": shlex.join(args.cmdline),
        "reps": args.reps,
        "duration": args.duration,
        "server_cpu": args.server_cpu,
        "client_cpu": args.client_cpu,
    }
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "results.json").write_text(json.dumps({"meta": meta, "records": records}, indent=1, default=str))
    write_outputs(records, cases, servers, meta, args)
    print(f"raw records: {WORK / 'results.json'}")


def write_outputs(records, cases, servers, meta, args):
    block = report(records, cases, servers, meta)
    write_markdown(Path(args.markdown), block)
    svg_chart(records, cases, servers, Path(args.svg), meta)
    print(block)
    print(f"wrote {args.markdown}, {args.svg}")


if __name__ == "__main__":
    main()
