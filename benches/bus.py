#!/usr/bin/env python3
"""What the Redis bus costs Redis: messages and bytes per publish, against
the number of subscribers and of nodes.

    python3 benches/bus.py [--server target/release/wsloop] [--messages 200]

For N nodes (wsloop processes sharing one redis-server, all on loopback)
and S subscribers of one room spread evenly over them, one member on node 0
publishes M messages of 64 bytes. The script reads every subscriber dry
(all S x M deliveries must arrive), then reads Redis's own counters
(`INFO commandstats`, `INFO stats`, reset before each run) and its CPU
time. The claim under test: Redis sees one PUBLISH per message and sends
one copy per subscribed node, never one per subscriber, so its work is
O(nodes x topics) per publish and flat in S.

Bounded: at most 10,000 subscribers (file descriptors), each run at most
120 s. Python standard library only. Prints a table and a JSON summary.
"""

import argparse
import json
import os
import re
import selectors
import socket
import subprocess
import sys
import tempfile
import time

UPGRADE = (
    "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAYLOAD = b"x" * 64
FRAME_OUT = 2 + len(PAYLOAD)  # server frames are unmasked, 64 < 126


def push_len() -> int:
    """Bytes of one RESP3 message push of the bench's channel and payload (a
    bus message: 18 bytes of header, then the payload)."""
    ch, body = "wsloop:bench", 18 + len(PAYLOAD)
    return len(f">3\r\n$7\r\nmessage\r\n${len(ch)}\r\n{ch}\r\n${body}\r\n") + body + 2


def masked(payload: bytes) -> bytes:
    return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def redis_cmd(port: int, *args: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        req = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
        s.sendall(req.encode())
        out = b""
        s.settimeout(0.3)
        try:
            while True:
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                out += chunk
                s.settimeout(0.05)
        except socket.timeout:
            pass
        return out.decode(errors="replace")


def info_value(text: str, key: str) -> int:
    m = re.search(rf"^{key}:(\d+)", text, re.M)
    return int(m.group(1)) if m else 0


def start_wsloop(server: str, redis_port: int):
    p = subprocess.Popen(
        [server, "--listen", "127.0.0.1:0", "--redis", f"redis://127.0.0.1:{redis_port}",
         "--max-connections", "12000"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "RUST_LOG": "info"},
    )
    deadline = time.time() + 10
    while time.time() < deadline:
        line = p.stderr.readline()
        m = re.search(r"listening on ([0-9.:]+)", line)
        if m:
            host, port = m.group(1).rsplit(":", 1)
            # Keep draining its log so it never blocks on a full pipe.
            import threading
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            return p, (host, int(port))
    p.kill()
    sys.exit("wsloop did not start")


def metrics(addr) -> str:
    with socket.create_connection(addr, timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        out = b""
        while chunk := s.recv(1 << 16):
            out += chunk
    return out.decode()


def metric(text: str, name: str) -> int:
    m = re.search(rf"^{name} (\d+)", text, re.M)
    return int(m.group(1)) if m else 0


def member(addr, path: str) -> socket.socket:
    s = socket.create_connection(addr, timeout=10)
    s.sendall(UPGRADE.format(path=path).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            sys.exit("upgrade refused")
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head[:80]
    assert head.endswith(b"\r\n\r\n"), "nothing may follow the 101 yet"
    return s


def wait_numsub(port: int, channel: str, n: int):
    deadline = time.time() + 20
    while not redis_cmd(port, "PUBSUB", "NUMSUB", channel).endswith(f":{n}\r\n"):
        if time.time() > deadline:
            sys.exit(f"{channel} never had {n} subscribed nodes")
        time.sleep(0.02)


def run(server: str, nodes: int, subscribers: int, messages: int) -> dict:
    redis_port = free_port()
    tmp = tempfile.mkdtemp(prefix="wsloop-bus-bench-")
    redis = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", tmp],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    procs = []
    socks = []
    try:
        deadline = time.time() + 10
        while True:
            try:
                if redis_cmd(redis_port, "PING").startswith("+PONG"):
                    break
            except OSError:
                pass
            if time.time() > deadline:
                sys.exit("redis-server did not start")
            time.sleep(0.05)
        servers = [start_wsloop(server, redis_port) for _ in range(nodes)]
        procs = [p for p, _ in servers]
        addrs = [a for _, a in servers]
        for i in range(subscribers):
            socks.append(member(addrs[i % nodes], "/broadcast/bench"))
        publisher = member(addrs[0], "/broadcast/bench")
        wait_numsub(redis_port, "wsloop:bench", nodes)
        sel = selectors.DefaultSelector()
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        redis_cmd(redis_port, "CONFIG", "RESETSTAT")
        redis_cpu0 = cpu_ticks(redis.pid)
        node_cpu0 = [cpu_ticks(p.pid) for p in procs]
        t0 = time.time()
        want = subscribers * messages * FRAME_OUT
        got = 0
        batch = b"".join(masked(PAYLOAD) for _ in range(50))
        sent = 0
        deadline = time.time() + 120
        # At most 1,000 messages in flight per subscriber: past it the
        # server stops reading the publisher (backpressure), and a blocked
        # send here would stop the draining too.
        window = 1_000 * subscribers * FRAME_OUT
        while got < want:
            if sent < messages and sent * subscribers * FRAME_OUT - got < window:
                n = min(50, messages - sent)
                publisher.sendall(batch[: n * (6 + len(PAYLOAD))])
                sent += n
            for key, _ in sel.select(timeout=0.2 if sent >= messages else 0.001):
                try:
                    while chunk := key.fileobj.recv(1 << 16):
                        got += len(chunk)
                except BlockingIOError:
                    pass
            if time.time() > deadline:
                sys.exit(f"only {got} of {want} bytes delivered in 120 s")
        elapsed = time.time() - t0
        redis_cpu = (cpu_ticks(redis.pid) - redis_cpu0) / CLK_TCK
        node_cpu = sum(cpu_ticks(p.pid) - c for p, c in zip(procs, node_cpu0)) / CLK_TCK
        stats = redis_cmd(redis_port, "INFO", "stats")
        commands = redis_cmd(redis_port, "INFO", "commandstats")
        m = re.search(r"cmdstat_publish:calls=(\d+)", commands)
        publishes = int(m.group(1)) if m else 0
        out_bytes = info_value(stats, "total_net_output_bytes")
        in_bytes = info_value(stats, "total_net_input_bytes")
        per_node = [metrics(a) for a in addrs]
        received = sum(metric(t, "wsloop_bus_received_total") for t in per_node)
        lost = sum(metric(t, "wsloop_bus_lost_total") for t in per_node)
        dropped = sum(metric(t, "wsloop_bus_dropped_total") for t in per_node)
        publisher.close()
        return {
            "nodes": nodes,
            "subscribers": subscribers,
            "messages": messages,
            "redis_publish_calls": publishes,
            "redis_bytes_in_per_publish": round(in_bytes / messages, 1),
            "redis_bytes_out_per_publish": round(out_bytes / messages, 1),
            # What Redis pushed per publish, in copies of the message: the
            # output less the PUBLISH replies (":N\r\n"), over one push's size.
            "copies_out_per_publish": round((out_bytes - 4 * publishes) / messages / push_len(), 2),
            "bus_received_by_other_nodes": received,
            "bus_lost": lost,
            "bus_dropped": dropped,
            "deliveries": subscribers * messages,
            "seconds": round(elapsed, 3),
            "redis_cpu_s": redis_cpu,
            "redis_cpu_us_per_publish": round(redis_cpu / messages * 1e6, 1),
            "nodes_cpu_s": node_cpu,
        }
    finally:
        for s in socks:
            s.close()
        for p in procs:
            p.kill()
            p.wait()
        redis.kill()
        redis.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", default="target/release/wsloop")
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--subscribers", default="10,1000,10000")
    ap.add_argument("--nodes", default="2,4")
    args = ap.parse_args()
    results = []
    print(f"{'nodes':>5} {'subs':>6} {'PUBLISH':>8} {'Redis B in/pub':>14} {'Redis B out/pub':>15} "
          f"{'copies/pub':>10} {'received by nodes':>17} {'lost':>4} {'Redis µs CPU/pub':>16}")
    for nodes in [int(n) for n in args.nodes.split(",")]:
        for subs in [int(s) for s in args.subscribers.split(",")]:
            r = run(args.server, nodes, min(subs, 10_000), args.messages)
            results.append(r)
            print(f"{r['nodes']:>5} {r['subscribers']:>6} {r['redis_publish_calls']:>8} "
                  f"{r['redis_bytes_in_per_publish']:>14} {r['redis_bytes_out_per_publish']:>15} "
                  f"{r['copies_out_per_publish']:>10} {r['bus_received_by_other_nodes']:>17} {r['bus_lost']:>4} "
                  f"{r['redis_cpu_us_per_publish']:>16}", flush=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
