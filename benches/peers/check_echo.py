#!/usr/bin/env python3
"""Checks that a server echoes WebSocket messages, with the standard library
only: `check_echo.py 127.0.0.1:PORT [PATH]`.

Handshake (checks the 101 and Sec-WebSocket-Accept), then masked text and
binary messages in all three length forms, a fragmented message, a Ping
(expects the Pong), and the closing handshake. Exits non-zero on the first
mismatch. Loopback only.
"""
import base64
import hashlib
import ipaddress
import os
import socket
import struct
import sys

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(opcode, payload, fin=True):
    key = os.urandom(4)
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    masked = bytes(b ^ key[i & 3] for i, b in enumerate(payload))
    return head + key + masked


class Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise SystemExit(f"connection closed with {len(self.buf)} of {n} bytes")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def head(self):
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise SystemExit("connection closed during the handshake")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        return head.decode("latin-1")

    def frame(self):
        b0, b1 = self.need(2)
        if b1 & 0x80:
            raise SystemExit("server frame is masked")
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack(">H", self.need(2))
        elif n == 127:
            (n,) = struct.unpack(">Q", self.need(8))
        return b0 & 0x80 != 0, b0 & 0x0F, self.need(n)

    def message(self):
        fin, opcode, data = self.frame()
        while not fin:
            fin, op, more = self.frame()
            if op != 0:
                raise SystemExit(f"expected a continuation, got opcode {op}")
            data += more
        return opcode, data


def main():
    addr = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9001"
    path = sys.argv[2] if len(sys.argv) > 2 else "/echo"
    host, port = addr.rsplit(":", 1)
    if not ipaddress.ip_address(host.strip("[]")).is_loopback:
        raise SystemExit("loopback addresses only")
    sock = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
    rd = Reader(sock)
    key = base64.b64encode(os.urandom(16))
    sock.sendall(
        b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " + addr.encode() + b"\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = rd.head()
    status = head.split("\r\n", 1)[0]
    if " 101 " not in status + " ":
        raise SystemExit(f"handshake refused: {status}")
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
    fields = {
        k.strip().lower(): v.strip()
        for k, v in (l.split(":", 1) for l in head.split("\r\n")[1:] if ":" in l)
    }
    if fields.get("sec-websocket-accept") != accept:
        raise SystemExit(f"bad Sec-WebSocket-Accept {fields.get('sec-websocket-accept')!r}")

    checks = 0
    text = "héllo wörld 日本 🎉 "
    for opcode, payload in [
        (1, b"hello"),
        (1, (text * 20).encode()[:20 * len(text.encode())]),  # 16-bit length
        (2, os.urandom(20)),
        (2, os.urandom(16 << 10)),
        (2, os.urandom(70000)),  # 64-bit length
    ]:
        sock.sendall(frame(opcode, payload))
        got = rd.message()
        if got != (opcode, payload):
            raise SystemExit(f"echo mismatch for opcode {opcode}, {len(payload)} bytes: got {got[0]}, {len(got[1])} bytes")
        checks += 1
    # Many small messages in one write, as a load generator sends them.
    batch = [os.urandom(20) for _ in range(100)]
    sock.sendall(b"".join(frame(2, p) for p in batch))
    for p in batch:
        if rd.message() != (2, p):
            raise SystemExit("echo mismatch in a batch of 100")
    checks += 1
    # A fragmented text message comes back as the same message.
    sock.sendall(frame(1, b"frag", fin=False) + frame(0, b"men", fin=False) + frame(0, b"ted"))
    if rd.message() != (1, b"fragmented"):
        raise SystemExit("fragmented message not echoed whole")
    checks += 1
    sock.sendall(frame(9, b"ping!"))
    if rd.frame() != (True, 0xA, b"ping!"):
        raise SystemExit("no Pong for a Ping")
    checks += 1
    sock.sendall(frame(8, struct.pack(">H", 1000) + b"bye"))
    fin, opcode, body = rd.frame()
    if opcode != 8 or body[:2] != struct.pack(">H", 1000):
        raise SystemExit(f"bad close reply: opcode {opcode}, body {body!r}")
    checks += 1
    sock.settimeout(5)
    try:
        rest = sock.recv(1)
    except ConnectionResetError:
        rest = b"(reset)"
    sock.close()
    print(f"{addr}: {checks} checks passed" + ("" if rest == b"" else f" (after Close the server sent {rest!r})"))


if __name__ == "__main__":
    main()
