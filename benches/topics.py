#!/usr/bin/env python3
"""Memory per subscription and per topic, and subscription churn.

    python3 benches/topics.py [--connections 10000] [--server target/release/wsloop]

Three measurements against one wsloop process (pinned to CPU 0; this
script on CPU 1), each bounded in count and time:

1. **Memory per subscription**: C idle `/pubsub` connections (server RSS),
   then each subscribes to 10 random topics of 1,000 (RSS again):
   (RSS with subscriptions - RSS idle) / (10 C).
2. **Memory per topic** (the "one topic per user" pattern): the same C
   connections each subscribe to 10 topics of their own (10 C topics of one
   subscriber each): (RSS - RSS before) / (10 C), for a topic and its one
   subscription; topic names are 12 bytes ("user-0000042").
3. **Subscription churn on a hot topic**: with C subscribers on one topic,
   one more connection subscribes and unsubscribes N times, pipelined in
   windows of 100 requests with ids; pairs per second and the server's CPU
   per pair. It must not depend on the topic's subscriber count: the same is
   measured with 10 subscribers.

Loopback only. Python standard library only. Prints a JSON summary.
"""

import argparse
import json
import os
import random
import re
import socket
import subprocess
import sys
import time

UPGRADE = (
    "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def frame(payload: bytes, opcode: int = 1) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


class Reader:
    """Reads server frames off a blocking socket."""

    def __init__(self, s):
        self.s, self.buf = s, b""

    def fill(self):
        chunk = self.s.recv(1 << 16)
        if not chunk:
            raise ConnectionError("EOF")
        self.buf += chunk

    def head(self):
        while b"\r\n\r\n" not in self.buf:
            self.fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def frame(self):
        while True:
            b = self.buf
            if len(b) >= 2:
                n, at = b[1] & 0x7F, 2
                if n == 126 and len(b) >= 4:
                    n, at = int.from_bytes(b[2:4], "big"), 4
                elif n == 127 and len(b) >= 10:
                    n, at = int.from_bytes(b[2:10], "big"), 10
                if n < 126 or at > 2:
                    if len(b) >= at + n:
                        self.buf = b[at + n :]
                        return b[at : at + n]
            self.fill()


def open_pubsub(addr):
    s = socket.create_connection(addr, timeout=30)
    s.sendall(UPGRADE.format(path="/pubsub").encode())
    r = Reader(s)
    r.head()
    return s, r


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def subscribe_all(conns, topics_of):
    """Each connection subscribes to its topics (one batch request, with an
    id), then every ack is awaited."""
    for i, (s, _) in enumerate(conns):
        req = json.dumps({"type": "subscribe", "topics": topics_of(i), "id": i}).encode()
        s.sendall(frame(req))
    for i, (_, r) in enumerate(conns):
        ack = json.loads(r.frame())
        assert ack == {"type": "ack", "id": i}, ack


def churn(addr, pid, pairs):
    s, r = open_pubsub(addr)
    start_cpu, start = cpu_s(pid), time.monotonic()
    window = 100
    sent = 0
    while sent < pairs:
        n = min(window, pairs - sent)
        out = b""
        for k in range(n):
            out += frame(b'{"type":"subscribe","topic":"hot","id":%d}' % (2 * k))
            out += frame(b'{"type":"unsubscribe","topic":"hot","id":%d}' % (2 * k + 1))
        s.sendall(out)
        for _ in range(2 * n):
            r.frame()
        sent += n
    elapsed, used = time.monotonic() - start, cpu_s(pid) - start_cpu
    s.close()
    return {"pairs": pairs, "pairs_per_s": round(pairs / elapsed), "server_us_per_pair": round(1e6 * used / pairs, 2)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=10000)
    ap.add_argument("--pairs", type=int, default=50000)
    ap.add_argument("--server", default="target/release/wsloop")
    a = ap.parse_args()
    os.sched_setaffinity(0, {1})
    srv = subprocess.Popen(
        ["taskset", "-c", "0", a.server, "--listen", "127.0.0.1:0", "--max-connections", "30000"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in srv.stderr:
            m = re.search(r"listening on ([0-9.]+):(\d+)", line)
            if m:
                addr = (m.group(1), int(m.group(2)))
                break
        print(json.dumps(run(a, srv.pid, addr), indent=2))
    finally:
        srv.terminate()
        srv.wait(10)


def settle(pid):
    """RSS after the server has been idle a moment (bounded)."""
    time.sleep(0.5)
    return rss_kib(pid)


def run(a, pid, addr):
    c = a.connections
    rng = random.Random(7)
    base = settle(pid)
    conns = [open_pubsub(addr) for _ in range(c)]
    idle = settle(pid)
    subscribe_all(conns, lambda i: [f"t{rng.randrange(1000):04d}" for _ in range(10)])
    shared = settle(pid)
    # Close them all (their subscriptions and the topics go), then one topic
    # per user.
    for s, _ in conns:
        s.close()
    wait_for(addr, "wsloop_subscriptions", 0)
    conns = [open_pubsub(addr) for _ in range(c)]
    before_own = settle(pid)
    subscribe_all(conns, lambda i: [f"user-{10 * i + k:07d}" for k in range(10)])
    own = settle(pid)
    hot_small = churn_with(addr, pid, conns[:10], a.pairs)
    hot_big = churn_with(addr, pid, conns, a.pairs)
    subs = 10 * c
    return {
        "connections": c,
        "rss_kib": {"base": base, "idle": idle, "with_subscriptions": shared, "before_own": before_own, "own_topics": own},
        "idle_bytes_per_connection": round(1024 * (idle - base) / c, 1),
        "bytes_per_subscription": round(1024 * (shared - idle) / subs, 1),
        "bytes_per_topic_with_its_subscription": round(1024 * (own - before_own) / subs, 1),
        "churn_hot_topic_10_subscribers": hot_small,
        f"churn_hot_topic_{c}_subscribers": hot_big,
    }


def metric(addr, name):
    s = socket.create_connection(addr, timeout=10)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    for line in data.decode().splitlines():
        if line.startswith(name + " "):
            return int(line.split()[1])
    raise KeyError(name)


def wait_for(addr, name, value, seconds=20):
    deadline = time.monotonic() + seconds
    while metric(addr, name) != value:
        assert time.monotonic() < deadline, f"{name} never reached {value}"
        time.sleep(0.1)


def churn_with(addr, pid, conns, pairs):
    """`conns` subscribe to "hot"; then the churn; then they leave it."""
    for i, (s, _) in enumerate(conns):
        s.sendall(frame(json.dumps({"type": "subscribe", "topic": "hot", "id": i}).encode()))
    for _, r in conns:
        r.frame()
    result = churn(addr, pid, pairs)
    for i, (s, _) in enumerate(conns):
        s.sendall(frame(json.dumps({"type": "unsubscribe", "topic": "hot", "id": i}).encode()))
    for _, r in conns:
        r.frame()
    return result


if __name__ == "__main__":
    sys.exit(main())
