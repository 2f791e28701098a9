#!/usr/bin/env python3
"""wss:// against ws://, and against the setups users would otherwise pick,
on one machine, in one run.

    python3 benches/tls.py                      # 3 repetitions of 5 s
    python3 benches/tls.py --quick              # 1 repetition of 2 s
    python3 benches/tls.py --baseline /path/to/older/wsloop   # plain before/after

Servers (all pinned to CPU 0; wsflood, the client, to CPU 1):
  wsloop ws://             plaintext, for reference
  wsloop wss://            TLS in the loop (rustls, ring)
  nginx wss:// > wsloop    nginx (1 worker) terminating TLS in front of plaintext
                           wsloop; the server CPU is nginx's and wsloop's together
  node ws wss://           Node's `ws` over Node's https (OpenSSL)
  wsloop (baseline) ws://  with --baseline: another wsloop binary, plaintext

Cases: echo 100 x 20 B, echo 10 x 16 KiB (messages per second and per server
CPU-second), and churn: connect, TLS and WebSocket handshakes, one echo, close,
100 at a time, every TLS handshake a full one (wsflood offers no session
resumption) -- handshakes per server CPU-second.

The certificate is made for the run (examples/gencert.rs: ECDSA P-256,
self-signed); wsflood takes it with --insecure. Repetitions are interleaved.
Prints a Markdown table (medians, min-max) and writes target/tls-bench/
results.json. Needs target/release/{wsloop,wsflood} (cargo build --release),
nginx (apt-get install nginx-light; skipped if absent) and the Node peer's
modules (npm ci in benches/peers/node; skipped if absent). Python 3 standard
library only; Linux only.
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
import compare  # noqa: E402  (the shared process helpers and wsflood's summary)

ROOT = compare.ROOT
WORK = ROOT / "target" / "tls-bench"
NODE = ROOT / "benches" / "peers" / "node"

CASES = [
    # name, wsflood mode, connections, payload, unit
    ("echo 100×20 B", "echo", 100, 20, "msgs/s"),
    ("echo 10×16 KiB", "echo", 10, 16 << 10, "msgs/s"),
    ("handshakes (churn, 100 at a time)", "churn", 100, 20, "handshakes/s"),
]

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {work}/nginx-{port}.pid;
error_log {work}/nginx-{port}.error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {work}/nginx-tmp;
  proxy_temp_path {work}/nginx-tmp;
  fastcgi_temp_path {work}/nginx-tmp;
  uwsgi_temp_path {work}/nginx-tmp;
  scgi_temp_path {work}/nginx-tmp;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {{
      proxy_pass http://127.0.0.1:{upstream};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_set_header Host $host;
      proxy_buffering off;
      proxy_read_timeout 3600s;
    }}
  }}
}}
"""


def servers(args, tls):
    """name -> (scheme, function(port) -> [(argv, env)] of processes to start,
    the one listening on `port` first... in start order)."""
    wsloop = str(ROOT / "target/release/wsloop")
    quiet = {"RUST_LOG": "warn"}
    out = {
        "wsloop ws://": ("ws", lambda port: [([wsloop, "--listen", f"127.0.0.1:{port}"], quiet)]),
        "wsloop wss://": (
            "wss",
            lambda port: [
                ([wsloop, "--listen", f"127.0.0.1:{port}", "--tls-cert", tls["cert"], "--tls-key", tls["key"]], quiet)
            ],
        ),
    }
    if args.baseline:
        out["wsloop (baseline) ws://"] = (
            "ws",
            lambda port: [([args.baseline, "--listen", f"127.0.0.1:{port}"], quiet)],
        )
    if shutil.which("nginx"):

        def nginx(port):
            upstream = compare.free_port()
            conf = WORK / f"nginx-{port}.conf"
            (WORK / "nginx-tmp").mkdir(parents=True, exist_ok=True)
            conf.write_text(NGINX_CONF.format(work=WORK, port=port, upstream=upstream, **tls))
            return [
                ([wsloop, "--listen", f"127.0.0.1:{upstream}"], quiet),
                (["nginx", "-p", str(WORK), "-e", str(WORK / f"nginx-{port}.error.log"), "-c", str(conf)], {}),
            ]

        out["nginx wss:// > wsloop"] = ("wss", nginx)
    else:
        print("note: nginx not installed (apt-get install nginx-light): skipped", file=sys.stderr)
    if (NODE / "node_modules" / "ws").is_dir() and shutil.which("node"):
        out["node ws wss://"] = (
            "wss",
            lambda port: [
                (
                    ["node", str(NODE / "echo.js"), "--listen", f"127.0.0.1:{port}"]
                    + ["--tls-cert", tls["cert"], "--tls-key", tls["key"]],
                    {},
                )
            ],
        )
    else:
        print("note: the Node peer's modules are missing (npm ci in benches/peers/node): skipped", file=sys.stderr)
    return out


def tree(pid):
    """`pid` and its descendants (nginx: master and worker)."""
    pids = [pid]
    for p in pids:
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                pids += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return pids


def cpu_of(pids):
    total = 0.0
    for p in pids:
        try:
            total += compare.cpu_seconds(p)
        except OSError:
            pass
    return total


def run_one(args, name, scheme, procs_of, case, rep):
    cname, mode, conns, size, _unit = case
    port = compare.free_port()
    rec = {"server": name, "case": cname, "rep": rep}
    tag = f"{name}-{cname}-{rep}".replace(" ", "_").replace("/", "_").replace(">", "to")
    started = []
    try:
        for argv, env in procs_of(port):
            log = open(WORK / f"{tag}.{len(started)}.log", "wb")
            started.append(
                subprocess.Popen(
                    ["taskset", "-c", args.server_cpu, *argv],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env={**os.environ, **env},
                    preexec_fn=compare.raise_nofile,
                    cwd=ROOT,
                )
            )
            time.sleep(0.1)
        if not compare.wait_listening(port, started[-1]):
            rec["error"] = "server did not start"
            return rec
        time.sleep(0.3)
        pids = [q for p in started for q in tree(p.pid)]
        json_path = WORK / f"{tag}.json"
        json_path.unlink(missing_ok=True)
        argv = [args.wsflood, mode, "--url", f"{scheme}://127.0.0.1:{port}/echo", "-c", str(conns)]
        argv += ["-d", str(args.duration), "-s", str(size), "--json", str(json_path), "-q"]
        if scheme == "wss":
            argv.append("--insecure")
        cpu0 = cpu_of(pids)
        with open(WORK / f"{tag}.client.log", "wb") as log:
            rc = subprocess.run(
                ["taskset", "-c", args.client_cpu, *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=args.duration + 60,
                preexec_fn=compare.raise_nofile,
            ).returncode
        cpu = cpu_of(pids) - cpu0
        if not json_path.exists():
            rec["error"] = f"wsflood exit {rc}, no summary"
            return rec
        got = compare.extract(mode, json.loads(json_path.read_text()))
        rec.update(rate=got["rate"], count=got["count"], cpu_s=round(cpu, 3), errors=got["errors"])
        if got["count"] and cpu > 0:
            rec["per_cpu_s"] = got["count"] / cpu
        if rc != 0 or got["verified"] is False:
            rec["error"] = f"wsflood exit {rc}, verified {got['verified']}"
        return rec
    finally:
        for p in reversed(started):
            compare.stop(p)


def med(values):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    m = statistics.median(values)
    if len(values) == 1:
        return f"{m:,.0f}"
    return f"{m:,.0f} ({min(values):,.0f}–{max(values):,.0f})"


def table(records, names):
    lines = [
        "| case | server | per second | per server CPU-second | server CPU % | errors |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for case in CASES:
        for name in names:
            rs = [r for r in records if r["server"] == name and r["case"] == case[0]]
            if not rs:
                continue
            errs = sorted({r["error"] for r in rs if "error" in r})
            ok = [r for r in rs if "error" not in r]
            busy = [100 * r["cpu_s"] / r["count"] * r["rate"] for r in ok if r.get("count") and r.get("rate")]
            lines.append(
                f"| {case[0]} ({case[4]}) | {name} | {med([r.get('rate') for r in ok])} "
                f"| {med([r.get('per_cpu_s') for r in ok])} | {med(busy)} | {'; '.join(errs) or 'none'} |"
            )
    return "\n".join(lines)


def ratio_table(records, names, base):
    """Messages per server CPU-second as a ratio to `base`, within each
    repetition."""
    lines = [f"| case | server | ÷ {base} (median, min–max) |", "| --- | --- | ---: |"]
    for case in CASES:
        for name in names:
            if name == base:
                continue
            ratios = []
            for r in records:
                if r["server"] != name or r["case"] != case[0] or "per_cpu_s" not in r:
                    continue
                b = [
                    x
                    for x in records
                    if x["server"] == base and x["case"] == case[0] and x["rep"] == r["rep"] and "per_cpu_s" in x
                ]
                if b:
                    ratios.append(r["per_cpu_s"] / b[0]["per_cpu_s"])
            if ratios:
                m = statistics.median(ratios)
                lines.append(f"| {case[0]} | {name} | {m:.2f} ({min(ratios):.2f}–{max(ratios):.2f}) |")
    return "\n".join(lines)


def certificate():
    """A fresh self-signed pair for the run (no key is ever committed)."""
    d = WORK / "cert"
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["cargo", "run", "--quiet", "--release", "--example", "gencert", "--", str(d)],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return {"cert": str(d / "cert.pem"), "key": str(d / "key.pem")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 repetition of 2 s")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--servers", help="comma-separated server names (default: all)")
    ap.add_argument("--baseline", help="another wsloop binary, run plaintext beside this one")
    ap.add_argument("--wsflood", default=str(ROOT / "target/release/wsflood"))
    ap.add_argument("--server-cpu", default="0")
    ap.add_argument("--client-cpu", default="1")
    args = ap.parse_args()
    if args.quick:
        args.reps, args.duration = 1, 2.0
    WORK.mkdir(parents=True, exist_ok=True)
    tls = certificate()
    all_servers = servers(args, tls)
    names = list(all_servers)
    if args.servers:
        names = [n for n in names if n in args.servers.split(",")]
    records = []
    for rep in range(args.reps):
        for case in CASES:
            for name in names:
                scheme, procs_of = all_servers[name]
                rec = run_one(args, name, scheme, procs_of, case, rep)
                print(json.dumps(rec), file=sys.stderr)
                records.append(rec)
    (WORK / "results.json").write_text(json.dumps(records, indent=1))
    print(f"{args.reps} repetition(s) of {args.duration:g} s; server on CPU {args.server_cpu}, wsflood on CPU {args.client_cpu}\n")
    print(table(records, names))
    print()
    print(ratio_table(records, names, "wsloop ws://"))


if __name__ == "__main__":
    main()
