#!/usr/bin/env python3
"""Independent permessage-deflate clients for tests/deflate.rs.

Python `websockets` (which offers permessage-deflate by default and
compresses every message it sends), and a raw-socket client on Python's
zlib for what no library does on request: crafted frames (a decompression
bomb) and a look at the RSV1 bit of what the server sends.

    client.py probe                          exit 0 if `websockets` imports
    client.py echo URL EXPECTED_EXTENSIONS   ("" for none)
    client.py raw-echo URL SIZE              one compressed message; the echo must carry RSV1
    client.py plain-echo URL SIZE...         uncompressed messages, pipelined; echoes compared
    client.py bomb URL SIZE                  RSV1 + deflate(SIZE zero bytes); prints the close code
    client.py broadcast URL OFFER COUNT      a raw member (offering OFFER, "" for none) and a
                                             websockets member that sends COUNT messages

Every command prints one JSON object on stdout and exits 0 when its checks
pass, 1 when one fails (the reason on stderr). Everything is bounded by
socket timeouts.
"""

import base64
import hashlib
import json
import os
import socket
import struct
import sys
import zlib
from urllib.parse import urlparse

TIMEOUT = 30.0
TAIL = b"\x00\x00\xff\xff"


def fail(why):
    print(why, file=sys.stderr)
    sys.exit(1)


# --------------------------------------------------------------- messages --


def text_message(size, seed):
    """Compressible JSON-like text of exactly `size` bytes (ASCII)."""
    line = '{"type":"ticker","seq":%d,"product_id":"BTC-USD","price":"67321.45","side":"buy"}\n'
    out = []
    n = 0
    i = seed
    while n < size:
        s = line % i
        out.append(s)
        n += len(s)
        i += 1
    return "".join(out)[:size]


def binary_message(size, seed):
    """Half random, half repeated bytes: compresses to about half."""
    rnd = hashlib.sha256(str(seed).encode()).digest()
    block = bytearray()
    while len(block) < min(size, 4096):
        rnd = hashlib.sha256(rnd).digest()
        block += rnd + bytes(32)
    out = (bytes(block) * (size // max(len(block), 1) + 1))[:size]
    return out


# --------------------------------------------------------------- websockets --


def ws_echo(url, expected, server_max_window_bits=None):
    from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
    from websockets.sync.client import connect

    # websockets' own offer, or one with server_max_window_bits, which a
    # server accepts only "by including" it (RFC 7692 §7.1.2.1): websockets
    # fails the connection otherwise.
    extensions = None
    if server_max_window_bits is not None:
        extensions = [ClientPerMessageDeflateFactory(
            server_max_window_bits=server_max_window_bits, client_max_window_bits=True)]
    sizes = [0, 1, 125, 126, 1000, 65535, 65536, 1 << 20, 16 << 20]
    with connect(url, max_size=None, open_timeout=TIMEOUT, close_timeout=TIMEOUT,
                 extensions=extensions) as ws:
        got_ext = ws.response.headers.get("Sec-WebSocket-Extensions") or ""
        if got_ext != expected:
            fail(f"Sec-WebSocket-Extensions: {got_ext!r}, expected {expected!r}")
        count = 0
        for size in sizes:
            for msg in (text_message(size, size), binary_message(size, size)):
                ws.send(msg)
                back = ws.recv(timeout=TIMEOUT)
                if back != msg:
                    fail(f"echo of a {type(msg).__name__} of {size} bytes differs")
                count += 1
        # Fragmented messages: websockets compresses each fragment with a
        # sync flush, RSV1 on the first frame only (RFC 7692 §6.1).
        for parts in ([text_message(30000, 1), text_message(1, 2), "", text_message(70000, 3)],
                      [binary_message(100000, 4), b"", binary_message(5000, 5)]):
            ws.send(iter(parts))
            back = ws.recv(timeout=TIMEOUT)
            whole = "".join(parts) if isinstance(parts[0], str) else b"".join(parts)
            if back != whole:
                fail("echo of a fragmented message differs")
            count += 1
        print(json.dumps({"extensions": got_ext, "echoes": count}))


# --------------------------------------------------------------- raw client --


class Raw:
    """A minimal client: handshake with an extension offer, masked frames,
    and frames read back with their RSV1 bit."""

    def __init__(self, url, offer):
        u = urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        key = base64.b64encode(os.urandom(16)).decode()
        req = (
            f"GET {u.path or '/'} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        )
        if offer:
            req += f"Sec-WebSocket-Extensions: {offer}\r\n"
        self.sock.sendall((req + "\r\n").encode())
        while b"\r\n\r\n" not in self.buf:
            self.more()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if not lines[0].startswith("HTTP/1.1 101"):
            fail(f"handshake refused: {lines[0]}")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        if headers.get("sec-websocket-accept") != accept.decode():
            fail("wrong Sec-WebSocket-Accept")
        self.extensions = headers.get("sec-websocket-extensions", "")
        params = [p.strip() for p in self.extensions.split(";")]
        self.deflate = params[0] == "permessage-deflate"
        self.server_reset = "server_no_context_takeover" in params
        self.inflater = zlib.decompressobj(-15)

    def more(self):
        data = self.sock.recv(1 << 20)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def take(self, n):
        while len(self.buf) < n:
            self.more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send_frame(self, first_byte, payload):
        key = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", first_byte, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", first_byte, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", first_byte, 0x80 | 127, n)
        mask = (key * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big") if n else b""
        self.sock.sendall(head + key + masked)

    def read_frame(self):
        """(fin, rsv1, opcode, payload) of the next frame."""
        b0, b1 = self.take(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self.take(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self.take(8))
        if b1 & 0x80:
            fail("a server frame is masked")
        return bool(b0 & 0x80), bool(b0 & 0x40), b0 & 0x0F, self.take(n)

    def read_message(self):
        """(opcode, rsv1, payload inflated), or (8, False, close body)."""
        fin, rsv1, opcode, payload = self.read_frame()
        if opcode >= 8:
            if opcode == 9:
                self.send_frame(0x8A, payload)
                return self.read_message()
            return opcode, False, payload
        parts = [payload]
        while not fin:
            fin, more_rsv1, op, payload = self.read_frame()
            if op != 0 or more_rsv1:
                fail("bad continuation frame")
            parts.append(payload)
        data = b"".join(parts)
        if rsv1:
            if not self.deflate:
                fail("RSV1 without permessage-deflate")
            if self.server_reset:
                self.inflater = zlib.decompressobj(-15)
            data = self.inflater.decompress(data + TAIL)
        return opcode, rsv1, data

    def close_code(self):
        """Reads until the server's Close; its code."""
        while True:
            opcode, _, payload = self.read_message()
            if opcode == 8:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005


def deflate(data, level=6):
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    if not out.endswith(TAIL):
        fail("zlib did not end with a sync flush")
    return out[:-4]


def raw_echo(url, size):
    r = Raw(url, "permessage-deflate; client_no_context_takeover; server_no_context_takeover")
    if not r.deflate:
        fail(f"not agreed: {r.extensions!r}")
    msg = text_message(size, 7).encode()
    z = deflate(msg)
    r.send_frame(0xC1, z)  # FIN | RSV1 | text
    opcode, rsv1, back = r.read_message()
    if (opcode, back) != (1, msg):
        fail("the echo differs")
    print(json.dumps({"extensions": r.extensions, "sent_compressed": len(z), "echo_rsv1": rsv1}))


def plain_echo(url, sizes):
    """Uncompressed binary frames (RSV1 clear, allowed with the extension
    agreed) of `sizes` bytes, all sent before any is read: each echo must
    equal its message, compressed (RSV1) or not."""
    r = Raw(url, "permessage-deflate; client_no_context_takeover; server_no_context_takeover")
    if not r.deflate:
        fail(f"not agreed: {r.extensions!r}")
    msgs = [binary_message(n, i) for i, n in enumerate(sizes)]
    for m in msgs:
        r.send_frame(0x82, m)
    rsv1s = []
    for i, m in enumerate(msgs):
        opcode, rsv1, back = r.read_message()
        if (opcode, back) != (2, m):
            fail(f"echo {i} of {len(m)} bytes differs")
        rsv1s.append(rsv1)
    print(json.dumps({"extensions": r.extensions, "rsv1": rsv1s}))


def bomb(url, size):
    """RSV1 + deflate of `size` zero bytes in one frame, compressed in
    steps (no `size`-byte buffer here)."""
    r = Raw(url, "permessage-deflate; client_max_window_bits")
    if not r.deflate:
        fail(f"not agreed: {r.extensions!r}")
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 20)
    parts = []
    left = size
    while left > 0:
        parts.append(c.compress(chunk[: min(left, len(chunk))]))
        left -= min(left, len(chunk))
    parts.append(c.flush(zlib.Z_SYNC_FLUSH))
    z = b"".join(parts)[:-4]
    r.send_frame(0xC2, z)  # FIN | RSV1 | binary
    code = r.close_code()
    print(json.dumps({"inflated_size": size, "compressed_bytes": len(z), "close_code": code}))


def broadcast(url, offer, count):
    """A raw member (offering `offer`) and a websockets member join the
    room; the websockets member sends `count` messages; the raw member must
    get them all, and tells which came with RSV1."""
    from websockets.sync.client import connect

    raw = Raw(url, offer)
    sent = []
    with connect(url, max_size=None, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
        for i in range(count):
            msg = text_message(4000, i) if i % 2 == 0 else binary_message(3000, i)
            ws.send(msg)
            sent.append(msg.encode() if isinstance(msg, str) else msg)
        rsv1 = []
        for i, msg in enumerate(sent):
            opcode, zipped, data = raw.read_message()
            if opcode != (1 if i % 2 == 0 else 2) or data != msg:
                fail(f"broadcast message {i} differs")
            rsv1.append(zipped)
    print(json.dumps({
        "extensions": raw.extensions,
        "rsv1": rsv1,
        "sent": [base64.b64encode(m).decode() for m in sent],
    }))


def main():
    if len(sys.argv) < 2:
        fail(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "probe":
        import websockets

        print(json.dumps({"websockets": websockets.__version__}))
    elif cmd == "echo":
        ws_echo(args[0], args[1], int(args[2]) if len(args) > 2 else None)
    elif cmd == "raw-echo":
        raw_echo(args[0], int(args[1]))
    elif cmd == "plain-echo":
        plain_echo(args[0], [int(a) for a in args[1:]])
    elif cmd == "bomb":
        bomb(args[0], int(args[1]))
    elif cmd == "broadcast":
        broadcast(args[0], args[1], int(args[2]))
    else:
        fail(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
