#!/usr/bin/env python3
"""Python `websockets` (asyncio) for benches/deflate.py: an echo server, and
broadcast rooms at /broadcast/ROOM (every member gets every message, its
sender included, like wsloop --broadcast-to-sender), one thread.

    python3 websockets_server.py --listen 127.0.0.1:PORT [--no-compression]

permessage-deflate is on by default, with the library's own settings
(server_max_window_bits=12, client_max_window_bits=12, memLevel 5, zlib's
default level 6, context takeover, every message compressed).
"""

import argparse
import asyncio
import sys

from websockets.asyncio.server import broadcast, serve

ROOMS = {}


async def handler(ws):
    path = ws.request.path.split("?")[0]
    if not path.startswith("/broadcast"):
        async for message in ws:
            await ws.send(message)
        return
    name = path[len("/broadcast"):].lstrip("/") or "default"
    room = ROOMS.setdefault(name, set())
    room.add(ws)
    try:
        async for message in ws:
            broadcast(room, message)
    finally:
        room.discard(ws)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", default="127.0.0.1:9001")
    ap.add_argument("--no-compression", action="store_true")
    args = ap.parse_args()
    host, _, port = args.listen.rpartition(":")
    if not (host.startswith("127.") or host in ("localhost", "::1")):
        sys.exit(f"refusing to listen on {args.listen}: benchmark peers are loopback only")
    compression = None if args.no_compression else "deflate"
    async with serve(handler, host, int(port), max_size=16 << 20, compression=compression,
                     ping_interval=None, max_queue=None) as server:
        addr = server.sockets[0].getsockname()
        print(f"listening on {addr[0]}:{addr[1]}", file=sys.stderr, flush=True)
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    asyncio.run(main())
