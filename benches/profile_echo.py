#!/usr/bin/env python3
"""Instructions and system calls per echo, deterministically, for wsloop and
its peers (rawtcp-echo, uWebSockets' EchoServer).

    python3 benches/profile_echo.py                       # every server, 100×20 B and 10×16 KiB
    python3 benches/profile_echo.py --servers wsloop --cases 100x20 --tool callgrind
    python3 benches/profile_echo.py --uws-dir /work/peers-src/bin --top 25

The client speaks exactly what uWebSockets' `benchmarks/load_test.c`
speaks: the same upgrade request (path `/`), binary frames of 'T' masked
with 01 02 03 04, each connection keeping `inflight` messages outstanding
(load_test: 1) and sending the next one when an echo is whole. Unlike
load_test it stops after a fixed number of echoes per connection.

Each figure is a difference of two runs that differ only in the number of
echoes (WARMUP, then WARMUP + MEASURED per connection): start-up, the
handshakes and the warm-up cancel out, leaving the cost of MEASURED echoes
per connection. Tools:

- `callgrind`: user-space instructions per echo (valgrind --tool=callgrind),
  in all and per function (self cost, from callgrind_annotate); extra
  valgrind options from the environment's CALLGRIND_ARGS (e.g.
  `--dump-instr=yes` for per-instruction costs, with `--keep`);
- `strace`: system calls per echo (`strace -c -f`), per call.

Per-iteration costs (one epoll_wait serving many connections) depend on how
many connections are ready at once, hence on timing: the figures are nearly,
not exactly, repeatable. `--batch B` (callgrind only) makes them exact and
the same for every server: the echoes go in rounds of B connections, each
round sent while the server is stopped (SIGSTOP once it sleeps in
epoll_wait, then SIGCONT once all B frames are in its sockets), so that
the loop finds exactly B connections ready at once. Being stopped makes
epoll_wait return EINTR (signal(7)), so the shorter run has as many rounds
with nothing sent: the difference is then exactly one loop iteration and B
echoes per round. B = 1 is the worst case for a loop with a per-iteration
cost; under load_test, 100 × 20 B, wsloop sees 3.6 echoes per iteration.
Python 3 standard library only; Linux only.
"""

import argparse
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUEST = (
    b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\nHost: server.example.com\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
CASES = {
    "100x20": (100, 20, 1),
    "10x16k": (10, 16 << 10, 1),
    "1000x20": (1000, 20, 1),
    "500x16k": (500, 16 << 10, 1),
    "100x20k8": (100, 20, 8),
}


def servers(uws_dir, wsloop):
    s = {
        "wsloop": lambda port: [wsloop, "--listen", f"127.0.0.1:{port}"],
        "rawtcp": lambda port: [
            str(ROOT / "benches/peers/target/release/rawtcp-echo"),
            "--listen",
            f"127.0.0.1:{port}",
        ],
    }
    if uws_dir:
        s["uws"] = lambda port: [str(Path(uws_dir) / "uws-echo"), str(port)]
    return s


def frame(size):
    """One masked binary frame of `size` 'T's, as load_test builds it, and
    the length of its (unmasked) echo."""
    if size <= 125:
        head = bytes([130, 128 | size])
    elif size <= 65535:
        head = bytes([130, 128 | 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([130, 128 | 127]) + size.to_bytes(8, "big")
    key = b"\x01\x02\x03\x04"
    payload = bytes(b ^ key[i % 4] for i, b in enumerate(b"T" * size))
    return head + key + payload, len(head) + size


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, timeout=60):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not listen")


def drive(port, conns, size, inflight, echoes, timeout=600, batch=None):
    """Opens `conns` connections, upgrades them, and has each get `echoes`
    echoes back with `inflight` outstanding; returns when all are in. With
    `batch` = (B, server pid, empty rounds): in rounds of B, see `rounds`."""
    data, echo_len = frame(size)
    socks = []
    for _ in range(conns):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(REQUEST)
        socks.append(s)
    for s in socks:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                raise RuntimeError("closed during the upgrade")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"upgrade refused: {head[:60]!r}")
        if len(head) != head.index(b"\r\n\r\n") + 4:
            raise RuntimeError("bytes after the 101")
        s.setblocking(False)
    if batch:
        rounds(socks, data, echo_len, echoes, *batch, timeout)
        for s in socks:
            s.close()
        return
    sel = selectors.DefaultSelector()
    state = {}
    for s in socks:
        first = min(inflight, echoes)
        s.sendall(data * first) if first else None
        state[s] = [first, 0, 0]  # sent, echoes received, bytes of the current echo
        if echoes:
            sel.register(s, selectors.EVENT_READ)
    left = conns if echoes else 0
    end = time.monotonic() + timeout
    while left:
        if time.monotonic() > end:
            raise RuntimeError("timed out")
        for key, _ in sel.select(1):
            s = key.fileobj
            st = state[s]
            try:
                got = s.recv(1 << 20)
            except BlockingIOError:
                continue
            if not got:
                raise RuntimeError("server closed")
            total = st[2] + len(got)
            done, st[2] = divmod(total, echo_len)
            st[1] += done
            more = min(done, echoes - st[0])
            if more > 0:
                s.setblocking(True)
                s.sendall(data * more)
                s.setblocking(False)
                st[0] += more
            if st[1] >= echoes:
                sel.unregister(s)
                left -= 1
    for s in socks:
        s.close()


def threads_are(pid, states, syscalls=None):
    """Whether every thread of process `pid` is in one of `states` (as in
    /proc/PID/stat) and, with `syscalls`, blocked in one of them."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        if stat[stat.rindex(")") + 2] not in states:
            return False
        if syscalls and (task / "syscall").read_text().split()[0] not in syscalls:
            return False
    return True


# epoll_wait, epoll_pwait, epoll_pwait2 on x86-64.
EPOLL_WAITS = ("232", "281", "441")


def rounds(socks, data, echo_len, echoes, batch, pid, empty, timeout):
    """Each connection gets `echoes` echoes, in rounds of `batch`
    connections: once the server sleeps in epoll_wait it is stopped, one
    frame is sent on each of the round's connections, the server continues
    and finds them all ready at once; the round ends when all their echoes
    are in. Then `empty` rounds that stop and continue the server and send
    nothing."""
    conns = len(socks)
    if not 1 <= batch <= conns or conns * echoes % batch:
        raise RuntimeError(f"batch {batch} must divide {conns} × {echoes} and be at most {conns}")
    end = time.monotonic() + timeout
    for s in socks:
        s.setblocking(True)
        s.settimeout(timeout)
    full = conns * echoes // batch
    for r in range(full + empty):
        chosen = [socks[(r * batch + j) % conns] for j in range(batch)] if r < full else []
        while not threads_are(pid, "S", EPOLL_WAITS):
            if time.monotonic() > end:
                raise RuntimeError("timed out")
        os.kill(pid, signal.SIGSTOP)
        while not threads_are(pid, "Tt"):
            if time.monotonic() > end:
                raise RuntimeError("timed out")
        for s in chosen:
            s.sendall(data)
        os.kill(pid, signal.SIGCONT)
        for s in chosen:
            got = 0
            while got < echo_len:
                chunk = s.recv(echo_len - got)
                if not chunk:
                    raise RuntimeError("server closed")
                got += len(chunk)


def run(argv, tool, out, port, case, echoes, env, batch=None):
    """Runs the server under `tool` with `echoes` per connection; `batch`:
    (B, empty rounds) for `rounds`."""
    if tool == "callgrind":
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *os.environ.get("CALLGRIND_ARGS", "").split(), *argv]
    elif tool == "strace":
        cmd = ["strace", "-c", "-f", "-o", str(out), *argv]
    else:
        cmd = argv
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        wait_listening(port, proc)
        conns, size, inflight = case
        drive(port, conns, size, inflight, echoes, batch=batch and (batch[0], proc.pid, batch[1]))
        time.sleep(0.5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# Functions whose inclusive cost is shown too.
INCLUSIVE = (
    "wsloop::net::hub::Hub<S>::readable",
    "wsloop::net::hub::Hub<S>::writable",
    "wsloop::net::hub::Hub<S>::end_iteration",
    "wsloop::net::server::Server::run",
)
READ_PATH = INCLUSIVE[0]
# Echoes per loop iteration that wsloop saw under load_test (100 × 20 B,
# server and client on a CPU each): /metrics messages_in / loop_iterations.
REAL_BATCH = 3.6
ANNOT = re.compile(r"^\s*([\d,]+)\s+(?:\([\d.]+%\)\s+)?(.*?)\s*$")


def callgrind_functions(path, inclusive=False):
    """{function: self (or inclusive) instructions} and the program total."""
    text = subprocess.run(
        ["callgrind_annotate", f"--inclusive={'yes' if inclusive else 'no'}", "--threshold=100", "--auto=no", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    funcs, total = {}, None
    for line in text.splitlines():
        m = ANNOT.match(line)
        if not m:
            continue
        n, name = int(m.group(1).replace(",", "")), m.group(2)
        if name.startswith("PROGRAM TOTALS"):
            total = n
            continue
        # "file:function [object]", the file being where the code was
        # inlined from. Self cost: summed per function.
        # Inclusive: the entry of the function's own file holds the whole,
        # the others parts of it again: the largest.
        name = re.sub(r"\s*\[[^\]]*\]$", "", name).split(":", 1)[-1]
        funcs[name] = max(funcs.get(name, 0), n) if inclusive else funcs.get(name, 0) + n
    return funcs, total


def callgrind_calls(path, callee):
    """How many times `callee` was called, from the callgrind output file
    (its `cfn=` / `calls=` lines; names may be compressed to `(id)`)."""
    names, current, count = {}, None, 0
    for line in Path(path).read_text(errors="replace").splitlines():
        m = re.match(r"^c?fn=\((\d+)\)(?: (.*))?$", line)
        if m:
            if m.group(2):
                names[m.group(1)] = m.group(2)
            current = names.get(m.group(1)) if line.startswith("cfn=") else None
        elif line.startswith("calls=") and current == callee:
            count += int(line[6:].split()[0])
    return count


def strace_calls(path):
    """{syscall: calls} from `strace -c` output."""
    calls = {}
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0].replace(".", "").isdigit() and parts[-1] != "total":
            # % time, seconds, usecs/call, calls, [errors], syscall
            name = parts[-1]
            calls[name] = int(parts[3])
    return calls


def diff(a, b):
    keys = set(a) | set(b)
    return {k: b.get(k, 0) - a.get(k, 0) for k in keys}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", default="wsloop,rawtcp,uws")
    ap.add_argument("--cases", default="100x20,10x16k", help=f"of {', '.join(CASES)}")
    ap.add_argument("--tool", default="callgrind,strace", help="callgrind, strace or both")
    ap.add_argument(
        "--uws-dir",
        default=os.environ.get("WSLOOP_UWS_DIR"),
        help="directory with uws-echo (valgrind 3.19 does not know AVX-512: for callgrind build it "
        "with -march=x86-64-v3 rather than upstream's -march=native)",
    )
    ap.add_argument("--warmup", type=int, default=20, help="echoes per connection before the measured ones")
    ap.add_argument("--echoes", type=int, default=0, help="measured echoes per connection (default: 20000/conns)")
    ap.add_argument("--top", type=int, default=20, help="functions to list")
    ap.add_argument("--keep", help="directory to keep the tool outputs in")
    ap.add_argument(
        "--wsloop", default=str(ROOT / "target/release/wsloop"), help="the wsloop binary (another build, to compare)"
    )
    ap.add_argument(
        "--batch",
        type=int,
        help="callgrind: echoes in rounds of BATCH connections, all ready at once (exactly BATCH echoes "
        "per loop iteration; one in flight per connection)",
    )
    args = ap.parse_args()
    table = servers(args.uws_dir, args.wsloop)
    env = {**os.environ, "RUST_LOG": "warn"}
    work = Path(args.keep or tempfile.mkdtemp(prefix="profile_echo."))
    work.mkdir(parents=True, exist_ok=True)
    for case_name in args.cases.split(","):
        case = CASES[case_name]
        conns = case[0]
        measured = args.echoes or max(20, 20000 // conns)
        n = conns * measured
        for server in args.servers.split(","):
            if server not in table:
                print(f"{server}: not available (uws needs --uws-dir)")
                continue
            for tool in args.tool.split(","):
                outs = []
                for echoes in (args.warmup, args.warmup + measured):
                    port = free_port()
                    out = work / f"{server}.{case_name}.{tool}.{echoes}.out"
                    # In rounds: the shorter run makes up for its missing
                    # rounds with empty ones.
                    batch = None
                    if args.batch and tool == "callgrind":
                        batch = (args.batch, (args.warmup + measured - echoes) * conns // args.batch)
                    run(table[server](port), tool, out, port, case, echoes, env, batch)
                    outs.append(out)
                rounds_of = f", in rounds of {args.batch}" if args.batch and tool == "callgrind" else ""
                print(f"\n== {server} {case_name} ({conns} conns × {case[1]} B, {case[2]} in flight{rounds_of}): "
                      f"{tool}, {n} echoes measured")
                if tool == "callgrind":
                    (fa, ta), (fb, tb) = callgrind_functions(outs[0]), callgrind_functions(outs[1])
                    print(f"user-space instructions per echo: {(tb - ta) / n:,.0f}")
                    d = sorted(diff(fa, fb).items(), key=lambda kv: -abs(kv[1]))
                    for name, v in d[: args.top]:
                        print(f"  {v / n:10,.1f}  {name[:150]}")
                    # The per-read path alone, without what the loop does
                    # per iteration (whose share per echo depends on how many
                    # connections each iteration finds ready).
                    ia, ib = callgrind_functions(outs[0], True)[0], callgrind_functions(outs[1], True)[0]
                    for name in INCLUSIVE:
                        if name in ib:
                            print(f"  inclusive {(ib[name] - ia.get(name, 0)) / n:10,.1f}  {name}")
                    # Loop iterations (one epoll_wait each): what the loop
                    # costs beyond the per-read path, per iteration.
                    iters = callgrind_calls(outs[1], "epoll_wait") - callgrind_calls(outs[0], "epoll_wait")
                    per_read = (ib.get(READ_PATH, 0) - ia.get(READ_PATH, 0)) / n
                    if iters > 0:
                        rest = (tb - ta) / n - per_read
                        print(f"  {iters} iterations, {n / iters:.1f} echoes each; outside the per-read path: "
                              f"{rest * n / iters:,.0f} instructions per iteration")
                        if per_read:
                            print(f"  per echo at {REAL_BATCH} echoes per iteration (as under load_test): "
                                  f"{per_read + rest * n / iters / REAL_BATCH:,.0f}")
                else:
                    d = diff(strace_calls(outs[0]), strace_calls(outs[1]))
                    total = sum(d.values())
                    print(f"system calls per echo: {total / n:.3f}")
                    for name, v in sorted(d.items(), key=lambda kv: -kv[1]):
                        if v:
                            print(f"  {v / n:8.3f}  {name}")


if __name__ == "__main__":
    sys.exit(main())
