#!/usr/bin/env python3
"""wsloop against other WebSocket servers, on one machine, in one run.

    python3 benches/compare.py                 # everything, 7 repetitions
    python3 benches/compare.py --quick         # 1 repetition of 2 s each
    python3 benches/compare.py --cases echo --servers wsloop,rawtcp
    python3 benches/compare.py --uws-dir DIR   # with uWebSockets (see below)

For each case, client and server: start the server pinned to CPU 0
(`taskset -c 0`) on a free loopback port, drive it with the client pinned to
CPU 1, and record the rate, the server's CPU seconds over the measured window
(utime + stime from /proc/PID/stat, before and after), and messages per
server CPU-second. Repetitions are interleaved (rep 1 of every case, client
and server, then rep 2, ...) so that slow drift in the machine's load spreads
over all servers alike, and within a case the servers take turns at going
first (rep 2 starts with the second server, ...). Every run is bounded
(--duration, and a hard timeout).

Clients: `wsflood` (this repository) for every case; uWebSockets' own
`load_test` for the echo cases and `broadcast_test` for the all-to-all
broadcast cases, when their binaries are given. uWebSockets (its servers and
clients) is never built here nor committed: build it yourself from its public
sources (BENCHMARKS.md says how) and pass the binaries with --uws-dir or the
--uws-* options (or the WSLOOP_UWS_* variables). Without them the uWebSockets
server and clients are skipped with a note. With uWebSockets in the run, a
table gives every server's messages per server CPU-second as a ratio to
uWebSockets', taken within each repetition (median, min-max).

Writes the tables into BENCHMARKS.md between the compare markers, a chart
to benches/results.svg, and the raw records to target/compare/results.json
(`--report-only FILE` redraws the tables and chart from such a file). The
logs of every server and client run are in target/compare/ too.
Python 3 standard library only; Linux only (taskset, /proc).
"""

import argparse
import datetime
import json
import os
import platform
import resource
import select
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
# uWebSockets: binaries built outside this repository (see BENCHMARKS.md).
# Filled in by main() from --uws-dir / --uws-* / WSLOOP_UWS_*; None: absent.

UWS_REF = "uWebSockets"
UWS_FILES = {
    # key: (file name in --uws-dir, what it is)
    "server": ("uws-echo", "echo server: upstream examples/EchoServer.cpp on 127.0.0.1:PORT"),
    "topic_server": ("uws-topic", "topic server: the same, every socket subscribed to one topic, App::publish"),
    "topic_deferred_server": ("uws-topic-deferred", "the topic server publishing from a Loop::defer callback"),
    "load_test": ("load_test", "upstream benchmarks/load_test.c"),
    "broadcast_test": ("broadcast_test", "upstream benchmarks/broadcast_test.c, request path /broadcast/bench"),
}
UWS = {key: None for key in UWS_FILES}
# load_test and broadcast_test print their rate every LIBUS_TIMEOUT_GRANULARITY
# (4) seconds: the count in a line is the value printed times this.
UWS_WINDOW_S = 4.0


def find_uws(args):
    """Fills UWS from the options, the environment and --uws-dir, keeping
    only files that exist and are executable; returns notes on what is
    missing."""
    notes = []
    base = args.uws_dir or os.environ.get("WSLOOP_UWS_DIR")
    for key, (fname, what) in UWS_FILES.items():
        path = getattr(args, f"uws_{key}") or os.environ.get(f"WSLOOP_UWS_{key.upper()}")
        if not path and base:
            path = str(Path(base) / fname)
        if path and os.access(path, os.X_OK):
            UWS[key] = str(Path(path).resolve())
        else:
            notes.append(f"uWebSockets {fname} ({what}): {'not at ' + path if path else 'not given'}")
    return notes


# --------------------------------------------------------------------------
# Servers


@dataclass
class Server:
    name: str
    # argv given the listen address, the case's extra server arguments and
    # the case's mode.
    argv: object
    env: dict = field(default_factory=dict)
    # Modes it can serve: echo and churn need an echo server; broadcast needs
    # rooms at /broadcast/ROOM; idle works with anything.
    modes: tuple = ("echo", "churn", "idle")
    # Only run the echo cases whose name contains one of these (None: all).
    only: tuple = None
    note: str = ""

    def available(self, mode):
        """False when its program for `mode` is missing (uWebSockets not given)."""
        return self.argv("127.0.0.1:0", [], mode)[0] is not None


SERVERS = [
    Server(
        "wsloop",
        lambda addr, extra, mode: [str(ROOT / "target/release/wsloop"), "--listen", addr, *extra],
        env={"RUST_LOG": "warn"},
        modes=("echo", "churn", "idle", "broadcast"),
    ),
    Server(
        "wsloop (no rep movsb)",
        lambda addr, extra, mode: [str(ROOT / "target/release/wsloop"), "--listen", addr, *extra],
        env={"RUST_LOG": "warn", **NO_REP_MOVSB},
        modes=("echo",),
        only=("16 KiB",),
        note="wsloop with GLIBC_TUNABLES raising the rep-movsb threshold (see BENCHMARKS.md)",
    ),
    Server(
        "rawtcp",
        lambda addr, extra, mode: [str(PEERS / "target/release/rawtcp-echo"), "--listen", addr],
        note="minimum work per frame on wsloop's loop design: the ceiling",
    ),
    Server(
        "fastwebsockets",
        lambda addr, extra, mode: [str(PEERS / "target/release/fastwebsockets-echo"), "--listen", addr],
    ),
    Server(
        "tokio-tungstenite",
        lambda addr, extra, mode: [str(PEERS / "target/release/tokio-tungstenite-echo"), "--listen", addr],
    ),
    Server(
        "node ws",
        lambda addr, extra, mode: ["node", str(PEERS / "node/echo.js"), "--listen", addr],
    ),
    Server(
        UWS_REF,
        lambda addr, extra, mode: [UWS["topic_server" if mode == "broadcast" else "server"], addr.rsplit(":", 1)[1]],
        modes=("echo", "churn", "idle", "broadcast"),
        note="upstream EchoServer.cpp (broadcast: one topic, App::publish); built outside the repo",
    ),
    Server(
        "uWebSockets (deferred publish)",
        lambda addr, extra, mode: [UWS["topic_deferred_server"], addr.rsplit(":", 1)[1]],
        modes=("broadcast",),
        note="the topic server, publishing from Loop::defer rather than from the message handler",
    ),
]


# --------------------------------------------------------------------------
# Clients


@dataclass
class Client:
    name: str
    # The UWS key of its binary (None: wsflood, always there).
    uws_key: str = None
    note: str = ""

    def available(self):
        return self.uws_key is None or UWS[self.uws_key] is not None


CLIENTS = [
    Client("wsflood", note="this repository's load tool: every case, every message verified"),
    Client("load_test", "load_test", "uWebSockets' own: echo cases; counts bytes, does not check them"),
    Client("broadcast_test", "broadcast_test", "uWebSockets' own: all-to-all broadcast, 20-byte messages"),
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
    # The clients that can drive it (each client is a separate row).
    clients: tuple = ("wsflood",)


ECHO_CLIENTS = ("wsflood", "load_test")
CASES = [
    Case("echo 100×20 B", "echo", 100, 20, group="echo", clients=ECHO_CLIENTS),
    Case("echo 10×16 KiB", "echo", 10, 16 << 10, group="echo", clients=ECHO_CLIENTS),
    Case("echo 1000×20 B", "echo", 1000, 20, group="echo", clients=ECHO_CLIENTS),
    Case("echo 500×16 KiB", "echo", 500, 16 << 10, group="echo", clients=ECHO_CLIENTS),
    # Pipelined: 8 messages outstanding per connection (load_test keeps one),
    # so the server reads several frames per system call.
    Case("echo 100×20 B, 8 in flight", "echo", 100, 20, inflight=8, group="echo"),
    # Every member publishes one 20-byte message per round and waits for the
    # whole round, its own message included: uWebSockets' broadcast_test,
    # whose message size is fixed at 20 bytes; wsflood does the same.
    # Deliveries/s.
    *[
        Case(
            f"broadcast all-to-all N={n}",
            "broadcast",
            n,
            20,
            all_to_all=True,
            expect_self=True,
            server_args=("--broadcast-to-sender",),
            unit="deliveries/s",
            group="broadcast",
            clients=("wsflood", "broadcast_test"),
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


def run_one(args, server, case, client, rep):
    """One server process, one client run. Returns a record."""
    port = free_port()
    addr = f"127.0.0.1:{port}"
    WORK.mkdir(parents=True, exist_ok=True)
    tag = f"{server.name}-{case.name}-{client.name}-{rep}".replace(" ", "_").replace("/", "_")
    rec = {"case": case.name, "server": server.name, "client": client.name, "rep": rep, "mode": case.mode}
    env = {**os.environ, **server.env}
    with open(WORK / f"{tag}.server.log", "wb") as log:
        srv = subprocess.Popen(
            ["taskset", "-c", args.server_cpu, *server.argv(addr, list(case.server_args), case.mode)],
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
        if client.name == "wsflood":
            drive_wsflood(args, case, port, srv, tag, rec)
        else:
            drive_uws_client(args, client, case, port, srv, tag, rec)
        if srv.poll() is not None:
            rec["error"] = f"server exited with {srv.returncode}"
        return rec
    finally:
        stop(srv)


def drive_wsflood(args, case, port, srv, tag, rec):
    """Runs wsflood against the server and fills `rec` from its summary and
    the server's CPU time over the whole run."""
    json_path = WORK / f"{tag}.json"
    json_path.unlink(missing_ok=True)
    cpu0, rss0, t0 = cpu_seconds(srv.pid), rss_kib(srv.pid), time.monotonic()
    rss_peak = rss0
    argv = wsflood_argv(args, case, port, json_path, srv.pid)
    with open(WORK / f"{tag}.client.log", "wb") as log:
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
        return
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
        return
    summary = json.loads(json_path.read_text())
    rec["summary"] = summary
    rec.update(extract(case.mode, summary))
    rec["client_percent"] = (summary.get("cpu") or {}).get("client_percent")
    if case.mode == "idle":
        rec["rss_per_conn_bytes"] = (rss_peak - rss0) * 1024 / case.connections
    elif rec.get("count") and cpu > 0:
        rec["per_cpu_s"] = rec["count"] / cpu
    if cli.returncode not in (0, None) and "error" not in rec:
        rec["error"] = f"wsflood exit {cli.returncode}"
    if rec.get("verified") is False and "error" not in rec:
        rec["error"] = "wsflood verification failed"


# --------------------------------------------------------------------------
# uWebSockets' clients: the only code that knows their arguments and output.


def uws_client_argv(client, case, port):
    """load_test: `connections host port ssl deflate [payload_size_bytes]`;
    broadcast_test: `connections host port ssl` (its payload is 20 bytes)."""
    if client.name == "load_test":
        return [UWS["load_test"], str(case.connections), "127.0.0.1", str(port), "0", "0", str(case.size)]
    return [UWS["broadcast_test"], str(case.connections), "127.0.0.1", str(port), "0"]


def parse_uws_line(line):
    """(what, value) from one line of load_test or broadcast_test output:
    ("rate", messages in the window) for `Msg/sec: X` and ("rate",
    deliveries in the window) for `Iterations/second (N clients): X`, where
    X is the count over the last window divided by 4; ("start", None) for
    `Running benchmark now...`; ("error", line) for a closed connection or
    a byte-count error; (None, None) for anything else (load_test prints
    every 101 response it gets)."""
    if line.startswith("Msg/sec:"):
        return "rate", float(line.split(":", 1)[1]) * UWS_WINDOW_S
    if line.startswith("Iterations/second ("):
        n = int(line.split("(", 1)[1].split()[0])
        return "rate", float(line.rsplit(":", 1)[1]) * UWS_WINDOW_S * n * n
    if line.startswith("Running benchmark now"):
        return "start", None
    if line.startswith(("Closed!", "Client was disconnected", "ERROR")):
        return "error", line
    return None, None


def read_lines(proc, log, timeout):
    """Yields (monotonic time, line) from proc's stdout as lines arrive,
    copying everything to `log`; stops at EOF or after `timeout` seconds
    without a line (yields (None, None) then)."""
    buf = b""
    while True:
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        if not ready:
            yield None, None
            return
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            return
        log.write(chunk)
        now = time.monotonic()
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            yield now, line.decode("utf-8", "replace").strip()


def drive_uws_client(args, client, case, port, srv, tag, rec):
    """Runs load_test or broadcast_test against the server until it has
    printed `windows` rates after the first (which covers the connection
    ramp and a part of a window, and is dropped), sampling the server's CPU
    time as each line arrives, and fills `rec` over those windows only."""
    windows = max(1, round(max(args.duration, case.min_duration) / UWS_WINDOW_S))
    argv = uws_client_argv(client, case, port)
    rec["argv"] = argv
    rss0 = rss_kib(srv.pid)
    samples = []  # (time, count in the window, server cpu, client cpu)
    with open(WORK / f"{tag}.client.log", "wb") as log:
        # stdbuf: line-buffered stdout through the pipe, so that every line
        # arrives (and the server's CPU is read) when it is printed.
        cli = subprocess.Popen(
            ["taskset", "-c", args.client_cpu, "stdbuf", "-oL", *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=raise_nofile,
            cwd=ROOT,
        )
        try:
            # 60 s without a line: the ramp of 1000 connections to a slow
            # server takes a few seconds; a stuck round never ends.
            for now, line in read_lines(cli, log, 60.0):
                if now is None:
                    rec["error"] = f"{client.name}: no output for 60 s"
                    break
                what, value = parse_uws_line(line)
                if what == "error":
                    rec["error"] = f"{client.name}: {value}"
                    break
                if what == "rate":
                    samples.append((now, value, cpu_seconds(srv.pid), cpu_seconds(cli.pid)))
                    if len(samples) > windows:
                        break
            else:
                rec.setdefault("error", f"{client.name} exited with {cli.poll()}")
            rec["rss_peak_kib"] = rss_kib(srv.pid) if srv.poll() is None else None
        finally:
            stop(cli)
    uws_record(rec, samples, windows, client, rss0)


def uws_record(rec, samples, windows, client, rss0):
    """Fills `rec` from the samples of the windows after the first."""
    rec["windows"] = [round(s[1]) for s in samples]
    if len(samples) < windows + 1:
        rec.setdefault("error", f"{client.name}: {len(samples)} of {windows + 1} rate lines")
        return
    (t0, _, cpu0, ccpu0), (t1, _, cpu1, ccpu1) = samples[0], samples[-1]
    count = round(sum(s[1] for s in samples[1:]))
    wall, cpu = t1 - t0, cpu1 - cpu0
    rec.update(
        count=count,
        rate=count / wall if wall > 0 else None,
        wall_s=round(wall, 3),
        cpu_s=round(cpu, 3),
        rss_before_kib=rss0,
        client_percent=round(100 * (ccpu1 - ccpu0) / wall, 1) if wall > 0 else None,
        verified=None,
    )
    if cpu > 0 and count:
        rec["per_cpu_s"] = count / cpu
    # broadcast_test counts whole rounds (N² deliveries each): a slow server
    # can finish none in a window; no round in any window is a failure.
    if not count:
        rec.setdefault("error", f"{client.name}: nothing completed in {windows} window(s) of {UWS_WINDOW_S:g} s")
    elif not all(s[1] > 0 for s in samples[1:]):
        rec.setdefault("notes", []).append("a window with nothing completed: the rate is coarse")
    # The windows are the client's sweep timer's; ours should agree.
    if abs(wall - windows * UWS_WINDOW_S) > 0.25 * windows * UWS_WINDOW_S:
        rec.setdefault("notes", []).append(
            f"windows took {wall:.1f} s by our clock, {windows * UWS_WINDOW_S:g} s by the client's"
        )


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


def match(r, case, client, server):
    return r["case"] == case and r.get("client", "wsflood") == client and r["server"] == server


def summarize(records, case, client, server, key):
    vals = [r[key] for r in records if match(r, case, client, server) and r.get(key) is not None]
    errs = [r for r in records if match(r, case, client, server) and r.get("error")]
    if not vals:
        return None, errs
    med = statistics.median(vals)
    return (med, min(vals), max(vals), len(vals)), errs


def rows_of(records, cases, idle=False):
    """The (case, client name) pairs that have records: one table row each,
    in case order, then client order."""
    out = []
    for c in cases:
        if (c.mode == "idle") != idle:
            continue
        for cl in CLIENTS:
            if any(r["case"] == c.name and r.get("client", "wsflood") == cl.name for r in records):
                out.append((c, cl.name))
    return out


def row_label(case, client, unit=False):
    return f"{case.name}{f' ({case.unit})' if unit else ''} · {client}"


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


def header(servers, first="case · client"):
    return [f"| {first} | " + " | ".join(s.name for s in servers) + " |", "| --- |" + " ---: |" * len(servers)]


def table(records, rows, servers, key, title):
    lines = [f"**{title}**", "", *header(servers)]
    for c, cl in rows:
        row = [row_label(c, cl, unit=key == "rate")]
        for s in servers:
            stat, errs = summarize(records, c.name, cl, s.name, key)
            row.append(fmt_cell(stat, errs))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def best_table(records, rows, servers):
    """The least disturbed repetition of each case, client and server
    (highest rate), with the CPU share the server and the client got in it."""
    lines = [
        "**Best repetition** (highest rate of the repetitions; server / client CPU % of one core during it)",
        "",
        *header(servers),
    ]
    for c, cl in rows:
        row = [row_label(c, cl)]
        for s in servers:
            recs = [r for r in records if match(r, c.name, cl, s.name) and r.get("rate")]
            if not recs:
                row.append("n/a")
                continue
            r = max(recs, key=lambda r: r["rate"])
            srv = 100 * r["cpu_s"] / r["wall_s"] if r.get("wall_s") else 0
            cli = r.get("client_percent") or (r.get("summary") or {}).get("cpu", {}).get("client_percent") or 0
            row.append(f"{fmt_num(r['rate'])} ({srv:.0f}/{cli:.0f}%)")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def ratios(records, case, client, server, ref_name, key="per_cpu_s"):
    """`key` of `server` over `ref_name`'s in the same repetition, one per
    repetition in which both have it."""
    ref = {r["rep"]: r[key] for r in records if match(r, case, client, ref_name) and r.get(key)}
    return [
        r[key] / ref[r["rep"]]
        for r in records
        if match(r, case, client, server) and r.get(key) is not None and r["rep"] in ref
    ]


def ratio_table(records, rows, servers, ref_name):
    others = [s for s in servers if s.name != ref_name]
    lines = [
        f"**Relative to {ref_name}**: messages (churn: cycles) per server CPU-second divided by those of "
        f"{ref_name} in the same repetition, with the same client; median (min–max) over the repetitions. "
        "Above 1: ahead.",
        "",
        *header(others),
    ]
    for c, cl in rows:
        row = [row_label(c, cl)]
        for s in others:
            v = ratios(records, c.name, cl, s.name, ref_name)
            if not v:
                row.append("n/a")
                continue
            row.append(f"{statistics.median(v):.2f}" + (f" ({min(v):.2f}–{max(v):.2f})" if len(v) > 1 else ""))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def report(records, cases, servers, meta, ref_name=UWS_REF):
    used = [s for s in servers if any(r["server"] == s.name for r in records)]
    rate_rows = rows_of(records, cases)
    idle_rows = rows_of(records, cases, idle=True)
    out = [
        BEGIN,
        "",
        f"Run {meta['started']} UTC at wsloop {meta['revision']} on {meta['machine']}: `{meta['cmdline']}`; "
        f"{meta['reps']} repetition(s) of {meta['duration']:g} s per case, client and server, server on CPU "
        f"{meta['server_cpu']}, client on CPU {meta['client_cpu']}. Cells: median, ± half the min–max spread "
        "as % of the median; `n/a`: not run for that server; `fail`: no usable result (see "
        "target/compare/*.log).",
        "",
    ]
    if meta.get("uws"):
        out += [f"uWebSockets: {meta['uws']}.", ""]
    if rate_rows:
        if any(r["server"] == ref_name and r.get("per_cpu_s") for r in records):
            out += ratio_table(records, rate_rows, used, ref_name)
            out.append("")
        out += table(records, rate_rows, used, "rate", "Throughput (rate reported by the client)")
        out.append("")
        out += table(
            records,
            rate_rows,
            used,
            "per_cpu_s",
            "Efficiency: messages (churn: cycles) per second of server CPU time",
        )
        out.append("")
        out += best_table(records, rate_rows, used)
        out.append("")
    if idle_rows:
        out += table(records, idle_rows, used, "rss_per_conn_bytes", "Idle: server RSS growth per connection (bytes)")
        out.append("")
    failed = [r for r in records if r.get("error")]
    if failed:
        out.append(
            "Errors: "
            + "; ".join(
                f"{r['server']} / {r['case']} / {r.get('client', 'wsflood')} rep {r['rep']}: {r['error']}"
                for r in failed
            )
        )
        out.append("")
    noted = [r for r in records if r.get("notes")]
    if noted:
        out.append(
            "Notes: "
            + "; ".join(
                f"{r['server']} / {r['case']} / {r.get('client', 'wsflood')} rep {r['rep']}: {', '.join(r['notes'])}"
                for r in noted
            )
        )
        out.append("")
    if meta.get("skipped"):
        out += ["Skipped: " + "; ".join(meta["skipped"]) + ".", ""]
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


COLORS = ["#1f77b4", "#9467bd", "#7f7f7f", "#2ca02c", "#ff7f0e", "#d62728", "#8c564b", "#e377c2"]


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def svg_chart(records, cases, servers, path, meta):
    """Two panels (rate, rate per server CPU-second): a group of bars per
    case and client, one bar per server that ran it, each scaled to the
    largest value in its group, with the median written beside it."""
    used = [s for s in servers if any(r["server"] == s.name for r in records)]
    rows = rows_of(records, cases)
    ran = {(c.name, cl): [s for s in used if any(match(r, c.name, cl, s.name) for r in records)] for c, cl in rows}
    bar_h, gap, label_w, bar_w, top = 13, 12, 290, 330, 58
    heights = [bar_h * max(1, len(ran[(c.name, cl)])) + gap for c, cl in rows]
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
        for (c, cl), h in zip(rows, heights):
            el.append(f'<text x="{x0 + 10}" y="{y0 + (h - gap) / 2 + 4}">{esc(row_label(c, cl))}</text>')
            servers_here = ran[(c.name, cl)]
            if key == "best":
                stats = []
                for s in servers_here:
                    st = summarize(records, c.name, cl, s.name, "rate")[0]
                    stats.append(st and (st[2], st[2], st[2], 1))
            else:
                stats = [summarize(records, c.name, cl, s.name, key)[0] for s in servers_here]
            el += svg_bars(stats, servers_here, color, x0 + label_w, y0, bar_h, bar_w)
            y0 += h
    el.append(
        f'<text x="10" y="{height - 10}" fill="#555">Bars are scaled to the largest value in each group. '
        f"{esc(meta['machine'])}, wsloop {esc(meta['revision'])}, {esc(meta['started'])} UTC</text>"
    )
    el.append("</svg>")
    path.write_text("\n".join(el) + "\n")


def svg_bars(stats, servers, color, x, y0, bar_h, bar_w):
    """One group of bars (median, min–max line, label), scaled to its largest value."""
    el = []
    best = max([max(st[0], st[2]) for st in stats if st] or [1]) or 1
    for si, (s, st) in enumerate(zip(servers, stats)):
        y = y0 + si * bar_h
        if not st:
            el.append(f'<text x="{x}" y="{y + bar_h - 3}" fill="#888">fail</text>')
            continue
        med, lo, hi, _ = st
        w = bar_w * med / best
        el.append(
            f'<rect x="{x}" y="{y}" width="{w:.1f}" height="{bar_h - 2}" fill="{color[s.name]}">'
            f"<title>{esc(s.name)}: {fmt_num(med)} ({fmt_num(lo)}–{fmt_num(hi)})</title></rect>"
        )
        if hi > lo:
            xl, xh = x + bar_w * lo / best, x + bar_w * hi / best
            ym = y + (bar_h - 2) / 2
            el.append(f'<line x1="{xl:.1f}" y1="{ym}" x2="{xh:.1f}" y2="{ym}" stroke="black"/>')
        right = bar_w * max(med, hi) / best
        el.append(f'<text x="{x + right + 4:.1f}" y="{y + bar_h - 3}">{fmt_num(med)}</text>')
    return el


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


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", help="comma-separated server names (default: all)")
    ap.add_argument("--cases", help="comma-separated case names or groups: echo, broadcast, churn, idle (--list)")
    ap.add_argument("--clients", help="comma-separated clients: wsflood, load_test, broadcast_test (default: all)")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument(
        "--duration",
        type=float,
        default=5.0,
        help="seconds per wsflood run; load_test and broadcast_test: round(this / 4) windows of 4 s (at least 1) "
        "after the first",
    )
    ap.add_argument("--quick", action="store_true", help="1 repetition of 2 s")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--wsflood", default=str(ROOT / "target/release/wsflood"))
    ap.add_argument("--server-cpu", default="0")
    ap.add_argument("--client-cpu", default="1")
    ap.add_argument("--markdown", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--svg", default=str(ROOT / "benches/results.svg"))
    ap.add_argument("--list", action="store_true", help="list servers, clients and cases")
    ap.add_argument(
        "--ratio-to",
        default=UWS_REF,
        metavar="SERVER",
        help=f"the server the ratio table divides by (default: {UWS_REF}; no table if it did not run)",
    )
    ap.add_argument(
        "--uws-dir",
        metavar="DIR",
        help="directory with the uWebSockets binaries built outside this repository: "
        + ", ".join(f for f, _ in UWS_FILES.values())
        + " (default: $WSLOOP_UWS_DIR)",
    )
    for key, (fname, what) in UWS_FILES.items():
        ap.add_argument(
            f"--uws-{key.replace('_', '-')}",
            metavar="PATH",
            help=f"{what} (default: DIR/{fname}, or $WSLOOP_UWS_{key.upper()})",
        )
    ap.add_argument(
        "--report-only",
        metavar="RESULTS_JSON",
        help="rewrite the tables and chart from a saved target/compare/results.json, running nothing",
    )
    args = ap.parse_args()
    args.cmdline = ["python3", "benches/compare.py", *sys.argv[1:]]
    if args.quick:
        args.reps, args.duration = 1, 2.0
    return args


def pick(items, spec, what, key=lambda x: (x.name,)):
    """The items named (or grouped) in the comma-separated `spec`; all if None."""
    if not spec:
        return items
    # A name with a comma in it ("echo 100×20 B, 8 in flight") is taken
    # whole before the rest is split at commas.
    rest, want = spec, []
    for x in items:
        for k in key(x):
            if "," in k and k in rest:
                rest = rest.replace(k, "")
                want.append(k)
    want += [w.strip() for w in rest.split(",") if w.strip()]
    out = [x for x in items if any(k in want for k in key(x))]
    if not out or (what != "case" and len(out) != len(want)):
        sys.exit(f"unknown {what} in {want}; --list shows them")
    return out


def plan_runs(args, cases, clients, servers):
    """The (case, client, server) runs of one repetition, and notes on what
    is skipped because a program is missing."""
    plan, notes = [], set()
    for c in cases:
        for cl in clients:
            if cl.name not in c.clients:
                continue
            if not cl.available():
                notes.add(f"client {cl.name}, its binary not given (--uws-dir, --uws-*)")
                continue
            for s in servers:
                if c.mode not in s.modes or (c.mode == "echo" and s.only and not any(o in c.name for o in s.only)):
                    continue
                if not s.available(c.mode):
                    notes.add(f"server {s.name} for {c.mode}, its binary not given (--uws-dir, --uws-*)")
                    continue
                plan.append((c, cl, s))
    return plan, sorted(notes)


def rotated(plan, by):
    """The plan with the servers of each (case, client) rotated `by` places:
    repetition r starts with the r-th server. Which server runs first in a
    pair measurably matters on this machine (`benches/ab.py` found 0.935 in
    a fixed order where alternating gave 1.012 for the same two binaries),
    so every server takes every place in turn."""
    out, group = [], []
    for run in plan + [None]:
        if group and (run is None or run[:2] != group[0][:2]):
            k = by % len(group)
            out += group[k:] + group[:k]
            group = []
        if run is not None:
            group.append(run)
    return out


def run_all(args, plan):
    """Every run of the plan, repetitions interleaved. Returns the records."""
    reps_of = lambda c: 1 if c.mode == "idle" else args.reps  # noqa: E731

    def seconds(c, cl):
        d = max(args.duration, c.min_duration)
        return d + 3 if cl.name == "wsflood" else UWS_WINDOW_S * (max(1, round(d / UWS_WINDOW_S)) + 1) + 2

    total = sum(reps_of(c) for c, _, _ in plan)
    est = sum(reps_of(c) * seconds(c, cl) for c, cl, _ in plan)
    print(f"{total} runs, about {est / 60:.1f} min", flush=True)
    records = []
    for rep in range(1, args.reps + 1):
        for c, cl, s in rotated(plan, rep - 1):
            if rep > reps_of(c):
                continue
            rec = run_one(args, s, c, cl, rep)
            records.append(rec)
            what = rec.get("error") or (
                f"{fmt_num(rec.get('rate'))} {c.unit}, {fmt_num(rec.get('per_cpu_s'))}/cpu-s (cpu {rec.get('cpu_s')} s)"
                if c.mode != "idle"
                else f"{rec.get('rss_per_conn_bytes', 0):.0f} B/conn"
            )
            what += "".join(f" (note: {n})" for n in rec.get("notes", []))
            print(f"[{len(records)}/{total}] rep {rep} {c.name} · {cl.name} / {s.name}: {what}", flush=True)
    return records


def uws_meta():
    """What the uWebSockets binaries are: their paths, and the VERSION file
    next to them if the build left one."""
    given = {k: v for k, v in UWS.items() if v}
    if not given:
        return None
    version = Path(next(iter(given.values()))).parent / "VERSION"
    text = ", ".join(version.read_text().splitlines()[:3]) if version.exists() else "version not recorded"
    return f"{text} ({', '.join(Path(v).name for v in given.values())} in {Path(next(iter(given.values()))).parent})"


def main():
    args = parse_args()
    notes = find_uws(args)
    if args.list:
        for s in SERVERS:
            print(f"server {s.name!r}: {', '.join(s.modes)} {s.note}")
        for cl in CLIENTS:
            print(f"client {cl.name!r}: {cl.note}{'' if cl.available() else ' (not given)'}")
        for c in CASES:
            print(f"case {c.name!r} ({c.group}; clients: {', '.join(c.clients)})")
        for n in notes:
            print("note:", n)
        return
    servers = pick(SERVERS, args.servers, "server")
    cases = pick(CASES, args.cases, "case", key=lambda c: (c.group, c.name))
    clients = pick(CLIENTS, args.clients, "client")
    if args.report_only:
        saved = json.loads(Path(args.report_only).read_text())
        records, meta = saved["records"], saved["meta"]
        write_outputs(records, cases, servers, meta, args)
        return
    if not args.no_build:
        build(args)
    if not Path(args.wsflood).exists():
        sys.exit(f"no wsflood at {args.wsflood}")
    plan, skipped = plan_runs(args, cases, clients, servers)
    for n in [n for n in notes if ": not at " in n] + [f"skipped: {n}" for n in skipped]:
        print("note:", n, flush=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    records = run_all(args, plan)
    meta = {
        "started": f"{started:%Y-%m-%d %H:%M}",
        "revision": revision(),
        "machine": machine(),
        "cmdline": shlex.join(args.cmdline),
        "reps": args.reps,
        "duration": args.duration,
        "server_cpu": args.server_cpu,
        "client_cpu": args.client_cpu,
        "uws": uws_meta(),
        "skipped": skipped,
    }
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "results.json").write_text(json.dumps({"meta": meta, "records": records}, indent=1, default=str))
    write_outputs(records, cases, servers, meta, args)
    print(f"raw records: {WORK / 'results.json'}")


def write_outputs(records, cases, servers, meta, args):
    block = report(records, cases, servers, meta, args.ratio_to)
    write_markdown(Path(args.markdown), block)
    svg_chart(records, cases, servers, Path(args.svg), meta)
    print(block)
    print(f"wrote {args.markdown}, {args.svg}")


if __name__ == "__main__":
    main()
