#!/usr/bin/env python3
"""A large fan-out that stalls: kernel memory and a bystander's latency.

    python3 benches/stall.py [--members 5000] [--seconds 10] [--size 16384]
                             [--server target/release/wsloop] [-- SERVER ARGS...]

The scenario of the adversarial review (issue 11, item 4): MEMBERS
connections join one room with a 4 KiB receive buffer and never read; a
publisher floods the room with SIZE-byte messages for SECONDS; meanwhile a
bystander on /echo sends 20 bytes every 10 ms and times each echo, and a
newcomer opens a fresh connection every 200 ms and times its handshake.
Every 250 ms the kernel's TCP memory (/proc/net/sockstat `mem`, pages) and
the server's RSS are sampled.

The server runs on CPU 0 and this script on CPU 1 (taskset). Loopback only;
everything is bounded by SECONDS (plus set-up and a few seconds of
tear-down). Python standard library only. Prints a JSON summary.
"""

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time

PAGE = os.sysconf("SC_PAGE_SIZE")
UPGRADE = (
    "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def frame(payload: bytes, opcode: int = 2) -> bytes:
    """A masked frame with a zero mask key (the payload goes as is)."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def read_head(s: socket.socket) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("EOF in the handshake")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head.decode(errors="replace"))
    return rest


def open_ws(addr, path, rcvbuf=None, timeout=10.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect(addr)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(UPGRADE.format(path=path).encode())
    rest = read_head(s)
    return s, rest


def tcp_mem_pages() -> int:
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                return int(re.search(r"mem (\d+)", line).group(1))
    return 0


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--size", type=int, default=16384)
    ap.add_argument("--server", default="target/release/wsloop")
    ap.add_argument("server_args", nargs="*")
    a = ap.parse_args()
    os.sched_setaffinity(0, {1})

    log = open("target/stall-server.log", "w")
    srv = subprocess.Popen(
        ["taskset", "-c", "0", a.server, "--listen", "127.0.0.1:0", "--max-connections", "20000", *a.server_args],
        stderr=subprocess.PIPE,
        text=True,
    )
    addr = None
    for line in srv.stderr:
        log.write(line)
        m = re.search(r"listening on ([0-9.]+):(\d+)", line)
        if m:
            addr = (m.group(1), int(m.group(2)))
            break
    threading.Thread(target=lambda: [log.write(l) for l in srv.stderr], daemon=True).start()
    try:
        run(a, srv, addr)
    finally:
        srv.terminate()
        try:
            srv.wait(10)
        except subprocess.TimeoutExpired:
            srv.kill()


def run(a, srv, addr):
    base_mem = tcp_mem_pages()
    members = []
    for _ in range(a.members):
        s, _ = open_ws(addr, "/broadcast/stall", rcvbuf=4096)
        members.append(s)
    publisher, _ = open_ws(addr, "/broadcast/stall")
    publisher.settimeout(None)
    bystander, _ = open_ws(addr, "/echo")
    stop = threading.Event()
    rtts, handshakes, samples = [], [], []
    published = [0]

    def publish():
        f = frame(b"p" * a.size)
        burst = f * max(1, 65536 // len(f))
        per = len(burst) // len(f)
        while not stop.is_set():
            publisher.sendall(burst)
            published[0] += per

    def echo():
        msg = frame(b"x" * 20)
        while not stop.is_set():
            t = time.monotonic()
            bystander.sendall(msg)
            got = b""
            while len(got) < 22:
                chunk = bystander.recv(64)
                if not chunk:
                    return
                got += chunk
            rtts.append((time.monotonic() - t) * 1000)
            time.sleep(0.01)

    def newcomers():
        while not stop.is_set():
            t = time.monotonic()
            s, _ = open_ws(addr, "/echo")
            handshakes.append((time.monotonic() - t) * 1000)
            s.close()
            time.sleep(0.2)

    threads = [threading.Thread(target=f, daemon=True) for f in (publish, echo, newcomers)]
    start = time.monotonic()
    for t in threads:
        t.start()
    while time.monotonic() - start < a.seconds:
        samples.append((time.monotonic() - start, tcp_mem_pages(), rss_kib(srv.pid)))
        time.sleep(0.25)
    stop.set()
    metrics = scrape(addr)
    peak_mem = max(m for _, m, _ in samples)
    summary = {
        "members": a.members,
        "message_bytes": a.size,
        "seconds": a.seconds,
        "server_args": a.server_args,
        "published": published[0],
        "tcp_mem_mib": {
            "baseline": round(base_mem * PAGE / 2**20, 1),
            "peak": round(peak_mem * PAGE / 2**20, 1),
            "last": round(samples[-1][1] * PAGE / 2**20, 1),
        },
        "server_rss_mib": {"peak": round(max(r for _, _, r in samples) / 1024, 1)},
        "bystander_echo_ms": {
            "count": len(rtts),
            "p50": round(pct(rtts, 0.5), 2) if rtts else None,
            "p99": round(pct(rtts, 0.99), 2) if rtts else None,
            "max": round(max(rtts), 2) if rtts else None,
        },
        "handshake_ms": {
            "count": len(handshakes),
            "p50": round(pct(handshakes, 0.5), 2) if handshakes else None,
            "max": round(max(handshakes), 2) if handshakes else None,
        },
        "server_metrics": {k: v for k, v in metrics.items() if k in WANTED},
    }
    print(json.dumps(summary, indent=2))
    for s in members:
        s.close()


WANTED = {
    "wsloop_slow_consumer_disconnects_total",
    "wsloop_slow_consumer_drops_total",
    "wsloop_broadcast_deliveries_total",
    "wsloop_memory_bytes",
    "wsloop_write_calls_total",
    "wsloop_loop_iterations_total",
}


def scrape(addr):
    s = socket.create_connection(addr, timeout=10)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    out = {}
    for line in data.decode(errors="replace").splitlines():
        if line and not line.startswith("#") and " " in line:
            k, v = line.rsplit(" ", 1)
            try:
                out[k] = int(v)
            except ValueError:
                pass
    return out


if __name__ == "__main__":
    sys.exit(main())
