//! `rawtcp`: the "minimum work per frame" ceiling for wsloop's loop design.
//!
//! Same shape as wsloop's loop (mio, edge-triggered, one 64 KiB read buffer
//! and one write buffer shared by all connections, one `write` per read,
//! TCP_NODELAY) but with as little WebSocket as a client will accept:
//!
//! - the upgrade: wait for the end of the request head, find
//!   `Sec-WebSocket-Key`, answer a fixed 101 with its accept value; no
//!   validation of anything else;
//! - then per complete client frame: compute the header length, XOR-unmask
//!   the payload into the write buffer behind an unmasked header with the
//!   same FIN/opcode (Ping answered as Pong, Pong dropped, Close echoed and
//!   the connection closed once written). No UTF-8 check, no limits, no
//!   reassembly (fragments are echoed as fragments, which still make the
//!   same message), no close-code check.
//!
//! Not a WebSocket server anyone should run: a measuring stick. What wsloop
//! costs above it is the price of its protocol rules.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::io::{self, Read, Write};

const LISTENER: Token = Token(usize::MAX);
const READ_BUFFER: usize = 64 << 10;
/// Stop reading a connection whose unsent output passes this.
const MAX_QUEUED: usize = 1 << 20;

struct Conn {
    stream: TcpStream,
    upgraded: bool,
    /// Unconsumed input: a partial request head or frame. Usually empty.
    carry: Vec<u8>,
    /// Output the socket did not take. Usually empty.
    queued: Vec<u8>,
    /// A Close was echoed (or a 400 sent): shut down our side once
    /// `queued` is written, then discard input until the peer's FIN.
    closing: bool,
    shut: bool,
    /// Reading stopped at `MAX_QUEUED`: resume when the queue drains.
    paused: bool,
}

fn main() -> io::Result<()> {
    let addr = wsloop_peers::listen_addr();
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(addr)?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    wsloop_peers::announce(listener.local_addr()?);

    let mut conns: Slab<Conn> = Slab::new();
    let mut wbuf: Vec<u8> = Vec::with_capacity(READ_BUFFER);
    // The same placement as wsloop's loop (`place_apart` in
    // src/net/server.rs): the read buffer half a page from the write buffer
    // modulo 4 KiB, clear of glibc's slow `rep movsb` aliasing case.
    let mut rstore = vec![0u8; READ_BUFFER + 4096];
    let off = ((wbuf.as_ptr() as usize + 2048) % 4096 + 4096 - rstore.as_ptr() as usize % 4096) % 4096;
    let rbuf = &mut rstore[off..off + READ_BUFFER];
    let mut events = Events::with_capacity(1024);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            let entry = conns.vacant_entry();
                            let token = Token(entry.key());
                            poll.registry()
                                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
                            entry.insert(Conn {
                                stream,
                                upgraded: false,
                                carry: Vec::new(),
                                queued: Vec::new(),
                                closing: false,
                                shut: false,
                                paused: false,
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        // Out of descriptors and the like: try again on the
                        // next event (good enough for a measuring stick).
                        Err(_) => break,
                    }
                }
                continue;
            }
            let key = ev.token().0;
            let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
            let keep = match conns.get_mut(key) {
                Some(conn) => serve(conn, readable, rbuf, &mut wbuf),
                None => continue,
            };
            if !keep {
                conns.remove(key);
            }
        }
    }
}

/// Handles an event on a connection: drain the queue, then read and echo
/// until the socket is empty. Returns false when the connection is to be
/// dropped.
fn serve(conn: &mut Conn, readable: bool, rbuf: &mut [u8], wbuf: &mut Vec<u8>) -> bool {
    if !conn.queued.is_empty() {
        match write_some(&mut conn.stream, &conn.queued) {
            Ok(n) => drop(conn.queued.drain(..n)),
            Err(_) => return false,
        }
    }
    if conn.closing {
        return linger(conn, rbuf);
    }
    if !(readable || conn.paused && conn.queued.len() <= MAX_QUEUED / 2) {
        return true;
    }
    conn.paused = false;
    loop {
        if conn.queued.len() > MAX_QUEUED {
            conn.paused = true;
            return true;
        }
        let n = match conn.stream.read(rbuf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        wbuf.clear();
        let used = if conn.carry.is_empty() {
            let used = process(conn, &mut rbuf[..n], wbuf);
            if let Some(used) = used {
                conn.carry.extend_from_slice(&rbuf[used..n]);
            }
            used
        } else {
            let mut data = std::mem::take(&mut conn.carry);
            data.extend_from_slice(&rbuf[..n]);
            let used = process(conn, &mut data, wbuf);
            if let Some(used) = used {
                data.drain(..used);
                conn.carry = data;
            }
            used
        };
        if used.is_none() {
            return false;
        }
        if conn.queued.is_empty() {
            match write_some(&mut conn.stream, wbuf) {
                Ok(w) => conn.queued.extend_from_slice(&wbuf[w..]),
                Err(_) => return false,
            }
        } else {
            conn.queued.extend_from_slice(wbuf);
        }
        if conn.closing {
            conn.carry = Vec::new();
            return linger(conn, rbuf);
        }
        // A short read emptied the socket: the next arrival is a new edge.
        if n < rbuf.len() {
            return true;
        }
    }
}

/// After the last word: once it is written, shut down our sending side and
/// discard input until the peer closes (closing with unread input would
/// reset the connection and could destroy that last word).
fn linger(conn: &mut Conn, rbuf: &mut [u8]) -> bool {
    if !conn.queued.is_empty() {
        return true;
    }
    if !conn.shut {
        conn.shut = true;
        if conn.stream.shutdown(std::net::Shutdown::Write).is_err() {
            return false;
        }
    }
    loop {
        match conn.stream.read(rbuf) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Consumes what it can of `data`, appending answers to `out`. Returns the
/// bytes used, or `None` if the connection should be dropped.
fn process(conn: &mut Conn, data: &mut [u8], out: &mut Vec<u8>) -> Option<usize> {
    let mut at = 0;
    if !conn.upgraded {
        let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
            // Not the whole head yet: keep it (up to a sane size).
            return (data.len() <= 8192).then_some(0);
        };
        let end = end + 4;
        let key = data[..end]
            .split(|&b| b == b'\n')
            .find_map(|line| {
                let colon = line.iter().position(|&b| b == b':')?;
                line[..colon]
                    .eq_ignore_ascii_case(b"sec-websocket-key")
                    .then(|| line[colon + 1..].trim_ascii())
            })
            .filter(|k| !k.is_empty());
        let Some(key) = key else {
            out.extend_from_slice(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            conn.closing = true;
            return Some(data.len());
        };
        let mut sha = sha1_smol::Sha1::new();
        sha.update(key);
        sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
        out.extend_from_slice(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
        );
        out.extend_from_slice(BASE64.encode(sha.digest().bytes()).as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        conn.upgraded = true;
        at = end;
    }
    loop {
        let rest = &data[at..];
        if rest.len() < 2 {
            break;
        }
        let (b0, b1) = (rest[0], rest[1]);
        let (len, mut hl) = match b1 & 0x7f {
            126 if rest.len() >= 4 => (u64::from(u16::from_be_bytes([rest[2], rest[3]])), 4),
            127 if rest.len() >= 10 => (u64::from_be_bytes(rest[2..10].try_into().unwrap()), 10),
            126 | 127 => break,
            n => (u64::from(n), 2),
        };
        let key = if b1 & 0x80 != 0 {
            if rest.len() < hl + 4 {
                break;
            }
            hl += 4;
            Some([rest[hl - 4], rest[hl - 3], rest[hl - 2], rest[hl - 1]])
        } else {
            None
        };
        let len = usize::try_from(len).ok().filter(|&l| l <= 1 << 30)?;
        if rest.len() < hl + len {
            break;
        }
        let opcode = b0 & 0x0f;
        if opcode != 0xA {
            let b0 = if opcode == 0x9 { (b0 & 0xf0) | 0xA } else { b0 };
            out.push(b0);
            if len < 126 {
                out.push(len as u8);
            } else if len <= 0xffff {
                out.push(126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            } else {
                out.push(127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
            let start = out.len();
            out.extend_from_slice(&rest[hl..hl + len]);
            if let Some(key) = key {
                unmask(&mut out[start..], key);
            }
        }
        at += hl + len;
        if opcode == 0x8 {
            conn.closing = true;
            return Some(data.len());
        }
    }
    Some(at)
}

/// XOR with the key, eight bytes at a time.
fn unmask(buf: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let x = u64::from_ne_bytes(chunk.try_into().unwrap()) ^ wide;
        chunk.copy_from_slice(&x.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

fn write_some(stream: &mut TcpStream, buf: &[u8]) -> io::Result<usize> {
    let mut at = 0;
    while at < buf.len() {
        match stream.write(&buf[at..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}
