#!/usr/bin/env python3
"""User-space instructions per churn cycle (connect, upgrade, one echo,
close), for wsloop and the raw-TCP ceiling (rawtcp-echo).

    python3 benches/profile_churn.py                     # both, 5 s each
    python3 benches/profile_churn.py --servers wsloop --keep /tmp/churn

Each server runs under `valgrind --tool=callgrind` while `wsflood churn -c
16` drives it for DURATION seconds; the figure is the server's total
instructions divided by the cycles wsflood completed. Start-up and
shutdown are counted too (a few million instructions, well under 1 % of
a run of 40,000 cycles or more). Extra valgrind options come from the
environment's CALLGRIND_ARGS (e.g. `--dump-instr=yes` with --keep).
Builds are not made here: `cargo build --release` and `cargo build
--release --manifest-path benches/peers/Cargo.toml` first. Linux only.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_echo import free_port, wait_listening  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SERVERS = {
    "wsloop": lambda port: [str(ROOT / "target/release/wsloop"), "--listen", f"127.0.0.1:{port}"],
    "rawtcp": lambda port: [str(ROOT / "benches/peers/target/release/rawtcp-echo"), "--listen", f"127.0.0.1:{port}"],
}


def total_instructions(path):
    for line in open(path):
        m = re.match(r"(?:summary|totals): (\d+)", line)
        if m:
            return int(m.group(1))
    sys.exit(f"no totals in {path}")


def profile(name, duration, keep):
    port = free_port()
    out = Path(keep or tempfile.mkdtemp()) / f"{name}.churn.callgrind.out"
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *os.environ.get("CALLGRIND_ARGS", "").split()]
    server = subprocess.Popen([*cmd, *SERVERS[name](port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, server)
        flood = subprocess.run(
            [str(ROOT / "target/release/wsflood"), "churn", "--url", f"ws://127.0.0.1:{port}/", "-c", "16",
             "--duration", str(duration)],
            capture_output=True, text=True, timeout=duration + 120,
        )
        m = re.search(r"^cycles\s+(\d+)", flood.stdout, re.M)
        if not m:
            sys.exit(f"wsflood gave no cycle count:\n{flood.stdout}{flood.stderr}")
        cycles = int(m.group(1))
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    total = total_instructions(out)
    print(f"{name}: {cycles} cycles, {total:,} instructions, {total / cycles:,.0f} per cycle", flush=True)
    return total / cycles


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", default="wsloop,rawtcp")
    ap.add_argument("--duration", type=int, default=5, help="seconds of churn per server")
    ap.add_argument("--keep", help="directory to keep the callgrind outputs in")
    a = ap.parse_args()
    if a.keep:
        os.makedirs(a.keep, exist_ok=True)
    per = {s: profile(s, a.duration, a.keep) for s in a.servers.split(",")}
    if "wsloop" in per and "rawtcp" in per:
        print(f"wsloop / rawtcp: {per['wsloop'] / per['rawtcp']:.2f}")


if __name__ == "__main__":
    main()
