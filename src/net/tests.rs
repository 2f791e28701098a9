//! The loop without sockets: the [`Hub`] driven over in-memory pipes on a
//! virtual clock, in the manner of quinn-proto's test `Pair`. Readiness is
//! edge-triggered as with `epoll`: the hub hears of a connection only when
//! new bytes (or the peer's FIN) arrive, or when a full pipe gets room. So
//! a behaviour that waits for an edge that never comes hangs here too.
//!
//! Nothing sleeps: time moves when a test says so ([`World::advance`]).

use super::hub::Hub;
use super::io::Transport;
use crate::config::{Config, SlowConsumer};
use crate::proto::frame::{self, Decoded, Opcode};
use crate::proto::mask;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::rc::Rc;

/// One direction of a connection.
#[derive(Debug)]
struct Pipe {
    bytes: VecDeque<u8>,
    /// Most bytes in flight (the socket buffers of both ends).
    cap: usize,
    /// The writer shut down its side (FIN), or the server dropped the
    /// connection.
    shut: bool,
    /// The server dropped the connection (its socket is closed).
    closed: bool,
    /// The reader has not been told of bytes that arrived (or of the FIN).
    readable_edge: bool,
    /// The writer has not been told of room that appeared.
    writable_edge: bool,
    /// Write calls the server made into this pipe.
    writes: usize,
    /// How many slices the last write call gave (1 for a plain write).
    last_slices: usize,
    /// The address of the first byte the last write call gave.
    last_from: usize,
    /// The peer reset the connection: the server's writes into this pipe
    /// fail with `ConnectionReset`.
    reset: bool,
}

impl Pipe {
    fn new(cap: usize) -> Rc<RefCell<Pipe>> {
        Rc::new(RefCell::new(Pipe {
            bytes: VecDeque::new(),
            cap,
            shut: false,
            closed: false,
            readable_edge: false,
            writable_edge: true,
            writes: 0,
            last_slices: 0,
            last_from: 0,
            reset: false,
        }))
    }
}

/// The server's end.
struct MemStream {
    rx: Rc<RefCell<Pipe>>,
    tx: Rc<RefCell<Pipe>>,
}

impl Read for MemStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut p = self.rx.borrow_mut();
        if p.bytes.is_empty() {
            return if p.shut {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = buf.len().min(p.bytes.len());
        for (b, v) in buf.iter_mut().zip(p.bytes.drain(..n)) {
            *b = v;
        }
        p.writable_edge = true;
        Ok(n)
    }
}

impl Write for MemStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    /// Like `writev(2)`: as much of the slices as fits, in one call.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let mut p = self.tx.borrow_mut();
        assert!(!p.shut, "write after shutdown");
        p.writes += 1;
        p.last_slices = bufs.len();
        p.last_from = bufs.iter().find(|b| !b.is_empty()).map_or(0, |b| b.as_ptr() as usize);
        if p.reset {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        let wanted: usize = bufs.iter().map(|b| b.len()).sum();
        let mut room = p.cap - p.bytes.len();
        if room == 0 && wanted > 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut n = 0;
        for b in bufs {
            let take = b.len().min(room);
            p.bytes.extend(&b[..take]);
            (n, room) = (n + take, room - take);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for MemStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.tx.borrow_mut().shut = true;
        Ok(())
    }
}

impl Drop for MemStream {
    fn drop(&mut self) {
        let mut tx = self.tx.borrow_mut();
        tx.shut = true;
        tx.closed = true;
        self.rx.borrow_mut().closed = true;
    }
}

/// A frame as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Frame {
    opcode: u8,
    payload: Vec<u8>,
}

impl Frame {
    fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, 8, "not a Close: {self:?}");
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// The client's end.
struct Client {
    tx: Rc<RefCell<Pipe>>,
    rx: Rc<RefCell<Pipe>>,
    inbox: Vec<u8>,
    /// The responses being read answer HEAD requests (heads only).
    head_only: bool,
}

const UPGRADE: &str = "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

impl Client {
    fn send(&self, bytes: &[u8]) {
        let mut p = self.tx.borrow_mut();
        assert!(!p.closed, "the server closed the connection");
        p.bytes.extend(bytes);
        p.readable_edge = true;
    }

    /// Sends a masked frame.
    fn frame(&self, opcode: Opcode, payload: &[u8]) {
        let key = [1, 2, 3, 4];
        let mut v = frame::encode(true, opcode, payload.len() as u64, Some(key))
            .as_slice()
            .to_vec();
        let at = v.len();
        v.extend_from_slice(payload);
        mask::apply(&mut v[at..], key, 0);
        self.send(&v);
    }

    /// Our FIN.
    fn shut(&self) {
        let mut p = self.tx.borrow_mut();
        p.shut = true;
        p.readable_edge = true;
    }

    /// Moves what arrived into the inbox (making room in the pipe).
    fn pull(&mut self) {
        let mut p = self.rx.borrow_mut();
        if !p.bytes.is_empty() {
            self.inbox.extend(p.bytes.drain(..));
            p.writable_edge = true;
        }
    }

    /// The next HTTP response, if whole: (status, head, body).
    fn response(&mut self) -> Option<(u16, String, Vec<u8>)> {
        self.pull();
        let end = self.inbox.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8(self.inbox[..end].to_vec()).unwrap();
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map_or(0, |v| v.parse().unwrap());
        let len = if head.starts_with("HTTP/1.1 101") || self.head_only {
            0
        } else {
            len
        };
        if self.inbox.len() < end + len {
            return None;
        }
        let body = self.inbox[end..end + len].to_vec();
        self.inbox.drain(..end + len);
        Some((head[9..12].parse().unwrap(), head, body))
    }

    /// The next frame, if whole.
    fn next_frame(&mut self) -> Option<Frame> {
        self.pull();
        let Ok(Decoded::Complete(h, n)) = frame::decode(&self.inbox) else {
            return None;
        };
        assert!(h.mask.is_none(), "server frames are not masked");
        let len = h.len as usize;
        if self.inbox.len() < n + len {
            return None;
        }
        let payload = self.inbox[n..n + len].to_vec();
        self.inbox.drain(..n + len);
        Some(Frame {
            opcode: h.opcode,
            payload,
        })
    }

    /// Whether the server shut down its side (all it sent has been pulled).
    fn eof(&mut self) -> bool {
        self.pull();
        self.rx.borrow().shut && self.inbox.is_empty()
    }

    /// Whether the server closed the socket.
    fn closed(&self) -> bool {
        self.rx.borrow().closed
    }

    /// Bytes waiting for the client (not pulled yet).
    fn pending(&self) -> usize {
        self.rx.borrow().bytes.len()
    }
}

type Link = (usize, Rc<RefCell<Pipe>>, Rc<RefCell<Pipe>>);

/// The hub and its clients on a virtual clock.
struct World {
    hub: Hub<MemStream>,
    now: u64,
    /// Each connection's key and pipes (client to server, server to client).
    conns: Vec<Link>,
}

impl World {
    fn new(config: Config) -> World {
        World {
            hub: Hub::new(config),
            now: 0,
            conns: Vec::new(),
        }
    }

    fn connect(&mut self) -> Client {
        self.connect_with(1 << 20)
    }

    /// A client whose receiving side holds at most `cap` bytes.
    fn connect_with(&mut self, cap: usize) -> Client {
        let c2s = Pipe::new(1 << 20);
        let s2c = Pipe::new(cap);
        let key = self.hub.insert(
            MemStream {
                rx: c2s.clone(),
                tx: s2c.clone(),
            },
            self.now,
        );
        self.conns.push((key, c2s.clone(), s2c.clone()));
        Client {
            tx: c2s,
            rx: s2c,
            inbox: Vec::new(),
            head_only: false,
        }
    }

    /// A client that completed the handshake on `path`.
    fn open(&mut self, path: &str) -> Client {
        let mut c = self.connect();
        c.send(UPGRADE.replacen("/echo", path, 1).as_bytes());
        self.settle();
        let (status, head, _) = c.response().expect("a response");
        assert_eq!(status, 101, "{head}");
        c
    }

    /// One loop iteration: every pending edge, then the end of the
    /// iteration (deliveries, due deadlines).
    fn step(&mut self) {
        self.conns.retain(|(_, c2s, _)| !c2s.borrow().closed);
        for (key, c2s, s2c) in self.conns.clone() {
            if std::mem::take(&mut s2c.borrow_mut().writable_edge) {
                self.hub.writable(key, self.now);
            }
            let (edge, hup) = {
                let mut p = c2s.borrow_mut();
                (std::mem::take(&mut p.readable_edge), p.shut)
            };
            if edge {
                self.hub.readable(key, self.now, hup);
            }
        }
        self.hub.end_iteration(self.now);
    }

    fn pending_edges(&self) -> bool {
        self.hub.has_more_input()
            || self
                .conns
                .iter()
                .any(|(_, c2s, s2c)| !c2s.borrow().closed && (c2s.borrow().readable_edge || s2c.borrow().writable_edge))
    }

    /// Steps until nothing is pending (bounded).
    fn settle(&mut self) {
        for _ in 0..1000 {
            self.step();
            if !self.pending_edges() {
                return;
            }
        }
        panic!("the loop never settled");
    }

    /// Moves the clock to `ms` and lets the loop run.
    fn advance_to(&mut self, ms: u64) {
        assert!(ms >= self.now);
        self.now = ms;
        self.settle();
    }

    fn metric(&self, name: &str) -> u64 {
        let text = String::from_utf8(crate::service::metrics::render(&self.hub.snapshot())).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("{name} missing"))
            .parse()
            .unwrap()
    }
}

fn config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    }
}

fn health(extra: &str) -> String {
    format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{extra}\r\n")
}

#[test]
fn an_unfinished_request_gets_408_and_a_silent_one_is_just_closed() {
    let mut w = World::new(Config {
        handshake_timeout: std::time::Duration::from_millis(300),
        ..config()
    });
    let mut partial = w.connect();
    partial.send(&UPGRADE.as_bytes()[..40]);
    let silent = w.connect();
    // A publish whose head came but not all of its body: the timeout bounds
    // the whole request, head and body.
    let mut body = w.connect();
    body.send(b"POST /broadcast/r HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
    w.advance_to(299);
    assert!(partial.response().is_none() && !silent.closed() && body.response().is_none());
    w.advance_to(300);
    for c in [&mut partial, &mut body] {
        assert_eq!(c.response().map(|r| r.0), Some(408));
        // Our last word is out: the server shut its side, but keeps the
        // socket until our FIN (a reset could destroy the 408).
        assert!(c.eof() && !c.closed());
        c.shut();
    }
    assert!(silent.closed(), "nothing came: closed without a word");
    assert_eq!(silent.pending(), 0);
    w.step();
    assert!(partial.closed() && body.closed(), "closed at once on our FIN");
    assert_eq!(w.metric("wsloop_timeouts_total{kind=\"handshake\"}"), 2);
    assert_eq!(w.hub.len(), 0);
}

#[test]
fn keepalive_pings_then_closes_1001_then_drops_after_the_close_timeout() {
    let ms = std::time::Duration::from_millis;
    let mut w = World::new(Config {
        ping_interval: ms(200),
        idle_timeout: ms(500),
        close_timeout: ms(300),
        ..config()
    });
    let mut silent = w.open("/echo");
    let mut lively = w.open("/echo");
    w.advance_to(199);
    assert_eq!(silent.next_frame(), None);
    w.advance_to(200);
    for c in [&mut silent, &mut lively] {
        assert_eq!(c.next_frame().map(|f| f.opcode), Some(0x9));
    }
    // `lively` answers; its silence starts again.
    lively.frame(Opcode::Pong, b"");
    w.advance_to(300);
    w.advance_to(499);
    assert_eq!(silent.next_frame(), None);
    w.advance_to(500);
    let close = silent.next_frame().unwrap();
    assert_eq!(close.close_code(), Some(1001));
    assert_eq!(&close.payload[2..], b"idle timeout");
    assert_eq!(
        lively.next_frame().map(|f| f.opcode),
        Some(0x9),
        "pinged again at 300 + 200"
    );
    lively.frame(Opcode::Pong, b"");
    // `silent` never answers the Close: dropped after the close timeout.
    w.advance_to(799);
    assert!(!silent.closed());
    w.advance_to(800);
    assert!(silent.closed());
    assert_eq!(w.metric("wsloop_timeouts_total{kind=\"idle\"}"), 1);
    assert_eq!(w.metric("wsloop_timeouts_total{kind=\"close\"}"), 1);
    assert!(!lively.closed());
}

/// Echoes on a quiet connection skip settling (no new deadline: activity
/// only moves the next ping later); a connection with a ping outstanding
/// is not quiet, and its first message brings the next ping forward from
/// the idle deadline.
#[test]
fn messages_move_the_next_ping_and_one_after_a_ping_brings_it_forward() {
    let ms = std::time::Duration::from_millis;
    let mut w = World::new(Config {
        ping_interval: ms(100),
        idle_timeout: ms(1000),
        ..config()
    });
    let mut c = w.open("/echo");
    w.advance_to(60);
    c.frame(Opcode::Text, b"a");
    w.advance_to(60);
    assert_eq!(c.next_frame().map(|f| f.payload), Some(b"a".to_vec()));
    w.advance_to(159);
    assert_eq!(c.next_frame(), None, "no ping before 60 + 100");
    w.advance_to(160);
    assert_eq!(c.next_frame().map(|f| f.opcode), Some(0x9));
    // Pinged; the idle deadline is 160 + 1000. A message instead of the
    // Pong is a sign of life: the next ping is due 100 after it.
    w.advance_to(200);
    c.frame(Opcode::Text, b"b");
    w.advance_to(200);
    assert_eq!(c.next_frame().map(|f| f.payload), Some(b"b".to_vec()));
    w.advance_to(299);
    assert_eq!(c.next_frame(), None);
    w.advance_to(300);
    assert_eq!(c.next_frame().map(|f| f.opcode), Some(0x9), "pinged again at 200 + 100");
    assert!(!c.closed());
}

#[test]
fn closing_handshake_shuts_our_side_then_waits_for_the_fin() {
    let mut w = World::new(config());
    let mut c = w.open("/echo");
    c.frame(Opcode::Close, &4000u16.to_be_bytes());
    w.settle();
    assert_eq!(c.next_frame().unwrap().close_code(), Some(4000));
    assert!(c.eof(), "the server shuts its side after its Close");
    assert!(!c.closed(), "...and keeps reading until our FIN");
    // Data after the Close is read and discarded.
    c.frame(Opcode::Text, b"too late");
    w.settle();
    assert!(!c.closed());
    c.shut();
    w.step();
    assert!(c.closed());
}

#[test]
fn a_request_sent_with_its_fin_is_answered_and_closed_in_one_iteration() {
    let mut w = World::new(config());
    // Data and FIN in one edge: no later edge will come.
    let mut c = w.connect();
    c.send(health("").as_bytes());
    c.shut();
    w.step();
    assert_eq!(c.response().map(|r| r.0), Some(200));
    assert!(c.closed(), "torn down in the same iteration");
    // Half a head, then FIN: nothing to answer.
    let c = w.connect();
    c.send(b"GET /healthz HT");
    c.shut();
    w.step();
    assert!(c.closed());
    assert_eq!(c.pending(), 0);
    // A WebSocket message and FIN: echoed, then closed.
    let mut c = w.open("/echo");
    c.frame(Opcode::Text, b"last words");
    c.shut();
    w.step();
    assert_eq!(c.next_frame().unwrap().payload, b"last words");
    assert!(c.closed());
    assert_eq!(w.hub.len(), 0);
}

#[test]
fn pipelined_requests_are_each_answered_in_order() {
    let mut w = World::new(config());
    let mut c = w.connect();
    let mut burst = String::new();
    for _ in 0..5 {
        burst += &health("");
    }
    burst += "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    burst += &health("Connection: close\r\n");
    burst += &health(""); // after the close: never answered
    c.send(burst.as_bytes());
    w.settle();
    for i in 0..7 {
        c.head_only = i == 5;
        let (status, head, body) = c.response().unwrap_or_else(|| panic!("response {i}"));
        assert_eq!(status, 200, "{i}");
        assert_eq!(head.contains("Connection: close"), i == 6, "{i}: {head}");
        assert!(head.contains("Content-Length: 3\r\n"));
        assert_eq!(body, if i == 5 { &b""[..] } else { b"ok\n" }, "{i}");
    }
    c.head_only = false;
    assert!(c.eof(), "nothing after the response that closed");
}

#[test]
fn pipelined_output_past_the_cap_closes_the_connection() {
    let mut w = World::new(Config {
        max_backpressure: 10_000,
        ..config()
    });
    let mut c = w.connect_with(64);
    c.send(health("").repeat(1000).as_bytes());
    w.settle();
    let mut answered = 0;
    // Bounded: without a closing response the loop would wait forever.
    let mut idle = 0;
    loop {
        w.settle();
        match c.response() {
            Some((200, head, _)) => {
                answered += 1;
                idle = 0;
                if head.contains("Connection: close") {
                    break;
                }
            }
            Some(other) => panic!("{other:?}"),
            None => {
                assert!(!c.eof(), "EOF before a closing response");
                idle += 1;
                assert!(idle < 100, "no closing response after {answered} answers");
            }
        }
    }
    assert!((100..1000).contains(&answered), "{answered} answered");
    assert!(c.eof());
}

#[test]
fn http_1_0_is_answered_then_closed() {
    let mut w = World::new(config());
    let mut c = w.connect();
    c.send(b"GET /healthz HTTP/1.0\r\n\r\n");
    w.settle();
    let (status, head, _) = c.response().unwrap();
    assert_eq!(status, 200);
    assert!(head.contains("Connection: close"));
    assert!(c.eof());
}

#[test]
fn reads_pause_past_the_cap_and_resume_at_half_of_it() {
    let mut w = World::new(Config {
        max_backpressure: 8_000,
        ..config()
    });
    // A client that sends 400 echoes of 1,000 bytes before reading any; its
    // receiving side holds 1,000 bytes.
    let mut c = w.open("/echo");
    c.rx.borrow_mut().cap = 1_000;
    for i in 0..400u32 {
        c.frame(Opcode::Binary, &[i as u8; 1_000]);
    }
    w.settle();
    let to_server = c.tx.clone();
    let unread = || to_server.borrow().bytes.len();
    assert!(
        unread() > 200_000,
        "the server stopped reading ({} bytes left)",
        unread()
    );
    // Reading a little is not enough: reads resume only once the queue is
    // down to half the cap.
    let (mut got, mut before, mut queued) = (0, unread(), w.metric("wsloop_queued_bytes"));
    while got < 400 {
        while let Some(f) = c.next_frame() {
            assert_eq!(f.payload, [got as u8; 1_000]);
            got += 1;
        }
        w.settle();
        if unread() < before {
            // Since the last look the server wrote at most the 1,000 bytes
            // the client made room for, and then resumed.
            assert!(queued <= 4_000 + 1_000, "read again with {queued} bytes queued");
        }
        (before, queued) = (unread(), w.metric("wsloop_queued_bytes"));
    }
    assert_eq!(unread(), 0, "every message was read in the end");
}

/// `n` bytes that differ from their neighbours.
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[test]
fn a_large_echo_goes_out_from_the_read_buffer_in_one_plain_write() {
    let mut w = World::new(config());
    let mut c = w.open("/echo");
    let writes = || c.rx.borrow().writes;
    let last = |c: &Client| (c.rx.borrow().last_slices, c.rx.borrow().last_from);
    let before = writes();
    c.frame(Opcode::Binary, &pattern(20_000, 0));
    w.settle();
    assert_eq!(writes(), before + 1, "one write");
    let (slices, from) = last(&c);
    assert_eq!(slices, 1, "header and payload together");
    assert!(w.hub.holds_in_read_buffer(from), "written from the read buffer");
    assert_eq!(c.next_frame().unwrap().payload, pattern(20_000, 0));
    // Gathered from two fragments: from the session's buffer, behind its
    // header in one vectored write.
    let six = pattern(6000, 5);
    let (a, b) = six.split_at(3000);
    let mut two = fragment(false, Opcode::Binary, a);
    two.extend(fragment(true, Opcode::Continuation, b));
    c.send(&two);
    w.settle();
    let (slices, from) = last(&c);
    assert_eq!(slices, 2, "header, then the payload where it is");
    assert!(!w.hub.holds_in_read_buffer(from));
    assert_eq!(c.next_frame().unwrap().payload, pattern(6000, 5));
    // Under 4 KiB, and behind other output in the same read: copied into
    // the write buffer.
    c.frame(Opcode::Binary, &pattern(4095, 1));
    w.settle();
    let (slices, from) = last(&c);
    assert_eq!(slices, 1);
    assert!(!w.hub.holds_in_read_buffer(from), "copied");
    c.frame(Opcode::Binary, b"first");
    c.frame(Opcode::Binary, &pattern(5000, 2));
    w.settle();
    let (slices, from) = last(&c);
    assert_eq!(slices, 1);
    assert!(!w.hub.holds_in_read_buffer(from), "copied");
    assert_eq!(c.next_frame().unwrap().payload, pattern(4095, 1));
    assert_eq!(c.next_frame().unwrap().payload, b"first");
    assert_eq!(c.next_frame().unwrap().payload, pattern(5000, 2));
}

#[test]
fn a_large_echo_is_whole_wherever_a_read_cuts_its_frame() {
    // An echo's header goes over the bytes in front of its payload in the
    // read buffer: this frame's own header (2 + 2 + 4 bytes here), all of
    // it or what of it came in the same read, or nothing (the payload at
    // the start of the read: a vectored write); or the frame is copied, or
    // gathered. Cut anywhere, alone or behind another frame, every echo is
    // whole and in order.
    let payload = pattern(10_000, 7);
    let whole = fragment(true, Opcode::Binary, &payload);
    let small = fragment(true, Opcode::Text, b"abc");
    for cut in (0..=12).chain([5000, whole.len() - 1, whole.len()]) {
        for behind_small in [false, true] {
            let mut w = World::new(config());
            let mut c = w.open("/echo");
            let mut first = if behind_small { small.clone() } else { Vec::new() };
            first.extend(&whole[..cut]);
            c.send(&first);
            w.settle();
            let mut rest = whole[cut..].to_vec();
            rest.extend(&small);
            c.send(&rest);
            w.settle();
            let mut expected = vec![
                (Opcode::Binary as u8, payload.clone()),
                (Opcode::Text as u8, b"abc".to_vec()),
            ];
            if behind_small {
                expected.insert(0, (Opcode::Text as u8, b"abc".to_vec()));
            }
            for (i, want) in expected.into_iter().enumerate() {
                let got = c.next_frame().map(|f| (f.opcode, f.payload));
                assert!(got == Some(want), "cut {cut}, behind_small {behind_small}: echo {i}");
            }
            assert_eq!(c.next_frame(), None);
        }
    }
}

#[test]
fn large_echoes_arrive_whole_and_in_order_wherever_a_short_write_cuts_them() {
    // A write the socket takes only part of queues the rest, whether the
    // cut falls in the header or the payload, and what follows waits
    // behind it.
    let messages = [
        (Opcode::Binary, b"small first".to_vec()),
        (Opcode::Binary, pattern(4096, 1)),
        (Opcode::Text, vec![b'x'; 5000]),
        (Opcode::Binary, b"small between".to_vec()),
        (Opcode::Binary, pattern(4095, 3)),
        // Over the read buffer: gathered by the session over several reads.
        (Opcode::Binary, pattern(70_000, 2)),
        (Opcode::Binary, pattern(66_000, 4)),
    ];
    // Reads until `n` frames are in (bounded).
    let echoes = |w: &mut World, c: &mut Client, n: usize| {
        let mut got = Vec::new();
        for _ in 0..200_000 {
            w.settle();
            while let Some(f) = c.next_frame() {
                got.push((f.opcode, f.payload));
            }
            if got.len() == n {
                break;
            }
        }
        got
    };
    for room in [1, 2, 3, 4, 5, 9, 10, 11, 1000, 4096, 4099, 4100, 8192, 100_000, 1 << 20] {
        // One at a time, so that each large echo meets an empty queue and
        // its first write is cut at `room`; then all at once, so that they
        // queue behind each other. The small rooms, byte by byte, on the
        // first few.
        let messages = if room < 1000 { &messages[..3] } else { &messages[..] };
        let mut w = World::new(config());
        let mut c = w.open("/echo");
        c.rx.borrow_mut().cap = room;
        let mut got = Vec::new();
        for (opcode, payload) in messages {
            c.frame(*opcode, payload);
            got.extend(echoes(&mut w, &mut c, 1));
        }
        for (opcode, payload) in messages {
            c.frame(*opcode, payload);
        }
        got.extend(echoes(&mut w, &mut c, messages.len()));
        assert_eq!(got.len(), 2 * messages.len(), "room {room}");
        for (i, ((opcode, payload), echoed)) in messages.iter().chain(messages).zip(&got).enumerate() {
            assert!(
                (*opcode as u8, payload) == (echoed.0, &echoed.1),
                "room {room}: message {i}"
            );
        }
        assert_eq!(w.metric("wsloop_queued_bytes"), 0, "room {room}");
    }
}

/// The loop's path for a quiet connection skips settling when the answer
/// went out whole; when it did not, what was queued must be charged to
/// the memory budget at once, not at the connection's next read.
#[test]
fn a_small_echo_whose_write_falls_short_is_charged_for_what_it_queued() {
    let mut w = World::new(config());
    let mut c = w.open("/echo");
    c.pull();
    // The client's socket takes 10 more bytes, and the client reads nothing.
    c.rx.borrow_mut().cap = 10;
    c.frame(Opcode::Binary, &[b'e'; 100]);
    w.settle();
    let queued = w.metric("wsloop_queued_bytes");
    assert_eq!(queued, 102 - 10, "the rest of the echo is queued");
    let charged = w.metric("wsloop_memory_bytes");
    assert!(charged >= queued, "{charged} bytes charged for {queued} queued");
    // Once the client reads, the queue goes out and its charge with it.
    c.rx.borrow_mut().cap = 1 << 20;
    c.pull();
    w.settle();
    c.pull();
    assert_eq!(c.next_frame().map(|f| f.payload), Some(vec![b'e'; 100]));
    assert_eq!(w.metric("wsloop_queued_bytes"), 0);
    assert_eq!(w.metric("wsloop_memory_bytes"), 0);
}

#[test]
fn a_large_echo_to_a_reset_peer_tears_the_connection_down() {
    let mut w = World::new(config());
    let c = w.open("/echo");
    c.rx.borrow_mut().reset = true;
    c.frame(Opcode::Binary, &pattern(10_000, 0));
    w.settle();
    assert!(c.closed(), "torn down on the failed write");
}

#[test]
fn a_connection_over_its_read_budget_comes_back_in_the_next_iteration() {
    let mut w = World::new(config());
    let mut c = w.open("/echo");
    let big = vec![7u8; 60_000];
    for _ in 0..10 {
        // 600 KB: more than the 4 reads of 64 KiB in a turn, and than the
        // second turn the connection gets at the end of the iteration.
        c.frame(Opcode::Binary, &big);
    }
    w.step();
    assert!(w.hub.has_more_input(), "input left after the budget");
    w.settle();
    for _ in 0..10 {
        assert_eq!(c.next_frame().unwrap().payload.len(), 60_000);
    }
}

#[test]
fn deadlines_go_with_their_connections() {
    let mut w = World::new(config());
    let keep = w.open("/echo");
    for _ in 0..500 {
        let c = w.open("/echo");
        c.frame(Opcode::Close, &1000u16.to_be_bytes());
        w.settle();
        c.shut();
        w.settle();
        assert!(c.closed());
    }
    assert_eq!(w.hub.len(), 1);
    assert_eq!(w.metric("wsloop_timer_entries"), 1, "one entry for the one connection");
    // Many at once (each in a slot of its own), then all gone: so are their
    // entries.
    let many: Vec<Client> = (0..100).map(|_| w.open("/echo")).collect();
    assert_eq!(w.metric("wsloop_timer_entries"), 101);
    for c in &many {
        c.shut();
    }
    w.settle();
    assert!(many.iter().all(|c| c.closed()));
    assert_eq!(w.hub.len(), 1);
    assert_eq!(
        w.metric("wsloop_timer_entries"),
        1,
        "the entries went with their connections"
    );
    drop(keep);
}

#[test]
fn slow_consumer_close_policy_sends_1008_and_others_get_everything() {
    let mut w = World::new(Config {
        max_backpressure: 4_000,
        ..config()
    });
    let mut slow = w.open("/broadcast/r");
    slow.rx.borrow_mut().cap = 500;
    let mut reader = w.open("/broadcast/r");
    let publisher = w.open("/broadcast/r");
    for seq in 0..200u32 {
        publisher.frame(Opcode::Binary, &seq.to_be_bytes().repeat(25));
        w.settle();
        let f = reader.next_frame().unwrap();
        assert_eq!(f.payload, seq.to_be_bytes().repeat(25));
    }
    let mut last = None;
    loop {
        w.settle();
        let f = slow.next_frame().expect("frames, then a Close");
        if f.opcode == 8 {
            assert_eq!(f.close_code(), Some(1008));
            assert_eq!(&f.payload[2..], b"slow consumer");
            break;
        }
        let seq = u32::from_be_bytes(f.payload[..4].try_into().unwrap());
        assert_eq!(seq, last.map_or(0, |l| l + 1), "no gap before the Close");
        last = Some(seq);
    }
    assert!(last.unwrap() < 199, "closed before the end");
    assert_eq!(w.metric("wsloop_slow_consumer_disconnects_total"), 1);
}

#[test]
fn slow_consumer_drop_policy_skips_messages_and_counts_them() {
    let mut w = World::new(Config {
        max_backpressure: 4_000,
        slow_consumer: SlowConsumer::Drop,
        ..config()
    });
    let mut slow = w.open("/broadcast/r");
    slow.rx.borrow_mut().cap = 500;
    let publisher = w.open("/broadcast/r");
    let mut seqs = Vec::new();
    let mut read = |w: &mut World| {
        for _ in 0..100 {
            w.settle();
            while let Some(f) = slow.next_frame() {
                assert_eq!(f.opcode, 2, "never closed under drop");
                seqs.push(u32::from_be_bytes(f.payload[..4].try_into().unwrap()));
            }
        }
    };
    for seq in 0..200u32 {
        publisher.frame(Opcode::Binary, &seq.to_be_bytes().repeat(25));
        w.settle();
    }
    let drops = w.metric("wsloop_slow_consumer_drops_total");
    assert!(drops > 0);
    // Caught up: the next messages arrive again.
    read(&mut w);
    for seq in 200..210u32 {
        publisher.frame(Opcode::Binary, &seq.to_be_bytes().repeat(25));
        w.settle();
    }
    read(&mut w);
    assert!(seqs.windows(2).all(|p| p[0] < p[1]), "in order");
    assert!(seqs.windows(2).any(|p| p[1] > p[0] + 1), "with a gap");
    assert_eq!(
        seqs.len() as u64 + drops,
        210,
        "every message delivered or counted as dropped"
    );
    assert_eq!(seqs.last(), Some(&209));
    assert!(!slow.closed());
}

#[test]
fn presence_leave_is_announced_when_a_member_vanishes() {
    let mut w = World::new(config());
    let mut ann = w.open("/broadcast/chat?presence=1&name=Ann");
    let bob = w.open("/broadcast/chat?presence=1&name=Bob");
    w.settle();
    let text = |c: &mut Client| String::from_utf8(c.next_frame().unwrap().payload).unwrap();
    assert!(text(&mut ann).contains("\"event\":\"join\",\"name\":\"Ann\""));
    assert!(text(&mut ann).contains("\"event\":\"join\",\"name\":\"Bob\""));
    // No Close: the socket just ends.
    bob.shut();
    w.settle();
    assert!(bob.closed());
    assert_eq!(
        text(&mut ann),
        r#"{"type":"presence","event":"leave","name":"Bob","members":1}"#
    );
}

/// A member whose socket fails while a room's batch is written to it is
/// torn down in the middle of the fan-out; its leave notice must still go
/// out in that iteration, not whenever the loop next wakes (the next
/// deadline, seconds later in a quiet room).
#[test]
fn presence_leave_of_a_member_lost_during_fan_out_goes_out_at_once() {
    let mut w = World::new(config());
    let mut ann = w.open("/broadcast/chat?presence=1&name=Ann");
    let mut bob = w.open("/broadcast/chat?presence=1&name=Bob");
    w.settle();
    let text = |c: &mut Client| c.next_frame().map(|f| String::from_utf8(f.payload).unwrap());
    assert!(text(&mut ann).unwrap().contains("\"event\":\"join\",\"name\":\"Ann\""));
    assert!(text(&mut ann).unwrap().contains("\"event\":\"join\",\"name\":\"Bob\""));
    assert!(text(&mut bob).unwrap().contains("\"event\":\"join\",\"name\":\"Bob\""));
    // Bob's side resets: the server's next write to him fails.
    bob.rx.borrow_mut().reset = true;
    ann.frame(Opcode::Text, b"anyone?");
    w.settle();
    assert!(bob.closed(), "torn down on the failed write");
    assert_eq!(
        text(&mut ann).as_deref(),
        Some(r#"{"type":"presence","event":"leave","name":"Bob","members":1}"#)
    );
}

#[test]
fn shutdown_delivers_what_was_broadcast_then_closes_1001() {
    let mut w = World::new(config());
    let mut a = w.open("/broadcast/r");
    let b = w.open("/broadcast/r");
    let mut idle = w.connect();
    idle.send(b"GET /heal");
    b.frame(Opcode::Text, b"before the signal");
    w.step(); // read, not yet delivered
    w.hub.begin_shutdown(w.now);
    w.settle();
    assert_eq!(a.next_frame().unwrap().payload, b"before the signal");
    let close = a.next_frame().unwrap();
    assert_eq!(close.close_code(), Some(1001));
    assert_eq!(&close.payload[2..], b"going away");
    assert!(
        idle.closed() && idle.response().is_none(),
        "a request in progress just ends"
    );
    a.frame(Opcode::Close, &1001u16.to_be_bytes());
    a.shut();
    w.settle();
    assert!(a.closed());
}

#[test]
fn each_kept_alive_request_gets_a_deadline_of_its_own() {
    let mut w = World::new(Config {
        handshake_timeout: std::time::Duration::from_millis(500),
        ..config()
    });
    let mut c = w.connect();
    // One request every 200 ms for over twice the timeout.
    for i in 0..6 {
        w.advance_to(i * 200);
        c.send(health("").as_bytes());
        w.settle();
        assert_eq!(c.response().map(|r| r.0), Some(200), "at {} ms", w.now);
    }
    // Then silence: the connection goes after one timeout, without a 408
    // (nothing of a next request came).
    w.advance_to(1000 + 499);
    assert!(!c.closed());
    w.advance_to(1000 + 500);
    assert!(c.closed() && c.response().is_none());
}

/// A masked frame with the FIN bit as given.
fn fragment(fin: bool, opcode: Opcode, payload: &[u8]) -> Vec<u8> {
    let key = [9, 8, 7, 6];
    let mut v = frame::encode(fin, opcode, payload.len() as u64, Some(key))
        .as_slice()
        .to_vec();
    let at = v.len();
    v.extend_from_slice(payload);
    mask::apply(&mut v[at..], key, 0);
    v
}

#[test]
fn a_member_is_charged_for_the_frames_it_keeps_not_for_whole_batches() {
    let cap = 65_536;
    let mut w = World::new(Config {
        max_backpressure: cap,
        slow_consumer: SlowConsumer::Drop,
        ..config()
    });
    // M never reads and its socket holds 4 KiB; A reads everything.
    let m = w.open("/broadcast/amp");
    m.rx.borrow_mut().cap = 4096;
    let mut a = w.open("/broadcast/amp");
    while w.metric("wsloop_queued_bytes") == 0 {
        a.frame(Opcode::Binary, &[b'a'; 4000]);
        w.settle();
        while a.next_frame().is_some() {}
    }
    // Then M sends large messages (which it does not get back) and A tiny
    // ones (which M gets), in the same iterations: M's queue holds only the
    // tiny frames, and is charged only for them.
    let big = vec![b'm'; 240 << 10];
    for _ in 0..200 {
        m.frame(Opcode::Binary, &big);
        a.frame(Opcode::Text, b"x");
        w.settle();
        while a.next_frame().is_some() {}
    }
    let held = w.metric("wsloop_memory_bytes");
    assert!(held < 2 * cap as u64, "{held} bytes held for a {cap}-byte cap");
}

#[test]
fn past_the_memory_budget_a_growing_message_gets_1013_and_a_body_503() {
    let mut w = World::new(Config {
        max_memory: 1 << 20,
        ..config()
    });
    let mut first = w.open("/echo");
    let mut second = w.open("/echo");
    // 700 KB of a message, then the rest later: held meanwhile.
    first.send(&fragment(false, Opcode::Binary, &vec![1; 700_000]));
    w.settle();
    assert!(w.metric("wsloop_memory_bytes") >= 700_000);
    // A second one that would pass 1 MiB is refused, and only it.
    second.send(&fragment(false, Opcode::Binary, &vec![2; 400_000]));
    w.settle();
    let close = second.next_frame().unwrap();
    assert_eq!(close.close_code(), Some(1013));
    assert_eq!(&close.payload[2..], b"try again later");
    assert!(w.metric("wsloop_memory_bytes") < (1 << 20), "its buffer went");
    // A publish body that does not fit is 503, before it is sent.
    let mut publisher = w.connect();
    publisher.send(b"POST /broadcast/r HTTP/1.1\r\nHost: x\r\nContent-Length: 500000\r\n\r\n");
    w.settle();
    assert_eq!(publisher.response().map(|r| r.0), Some(503));
    // The first message completes and is echoed; memory is free again.
    first.send(&fragment(true, Opcode::Continuation, b"end"));
    w.settle();
    let echo = first.next_frame().unwrap();
    assert_eq!(echo.payload.len(), 700_003);
    assert_eq!(w.metric("wsloop_memory_bytes"), 0);
    assert_eq!(w.metric("wsloop_memory_refusals_total{kind=\"message\"}"), 1);
    assert_eq!(w.metric("wsloop_memory_refusals_total{kind=\"body\"}"), 1);
}

#[test]
fn a_message_that_stops_growing_is_closed_1008_after_the_message_timeout() {
    let ms = std::time::Duration::from_millis;
    let mut w = World::new(Config {
        message_timeout: ms(1_000),
        ping_interval: ms(10_000),
        ..config()
    });
    let mut c = w.open("/echo");
    c.send(&fragment(false, Opcode::Text, b"start"));
    w.settle();
    // Progress at 800 moves the deadline; pings do not count as progress.
    w.advance_to(800);
    c.send(&fragment(false, Opcode::Continuation, b" more"));
    w.settle();
    w.advance_to(1_500);
    c.frame(Opcode::Ping, b"");
    w.settle();
    assert_eq!(c.next_frame().map(|f| f.opcode), Some(0xA));
    w.advance_to(1_799);
    assert_eq!(c.next_frame(), None);
    w.advance_to(1_800);
    let close = c.next_frame().unwrap();
    assert_eq!(close.close_code(), Some(1008));
    assert_eq!(&close.payload[2..], b"message not completed in time");
    assert_eq!(w.metric("wsloop_memory_bytes"), 0);
    assert_eq!(w.metric("wsloop_timeouts_total{kind=\"message\"}"), 1);
}

#[test]
fn past_the_memory_budget_a_member_with_a_backlog_is_a_slow_consumer() {
    let mut w = World::new(Config {
        max_memory: 200_000,
        max_backpressure: 1 << 20,
        ..config()
    });
    let mut slow = w.open("/broadcast/r");
    slow.rx.borrow_mut().cap = 1000;
    let mut reader = w.open("/broadcast/r");
    let publisher = w.open("/broadcast/r");
    // Well under its own cap, the slow member's backlog passes the budget.
    for _ in 0..100 {
        publisher.frame(Opcode::Binary, &[7; 3000]);
        w.settle();
        while reader.next_frame().is_some() {}
    }
    assert!(w.metric("wsloop_memory_bytes") <= 200_000 + 4_000);
    assert!(w.metric("wsloop_memory_refusals_total{kind=\"delivery\"}") > 0);
    let mut last = None;
    'reading: for _ in 0..1_000 {
        w.settle();
        while let Some(f) = slow.next_frame() {
            last = Some(f.opcode);
            if f.opcode == 8 {
                assert_eq!(f.close_code(), Some(1008));
                break 'reading;
            }
        }
    }
    assert_eq!(last, Some(8), "closed as a slow consumer");
}

// ------------------------------------------------------------- topics --

/// A `/pubsub` request as a text frame.
fn request(c: &Client, json: &str) {
    c.frame(Opcode::Text, json.as_bytes());
}

/// The next frame's payload as text.
fn text_of(c: &mut Client) -> String {
    String::from_utf8(c.next_frame().expect("a frame").payload).unwrap()
}

#[test]
fn pubsub_subscribe_publish_unsubscribe_round_trip() {
    let mut w = World::new(config());
    let mut sub = w.open("/pubsub");
    let publisher = w.open("/pubsub");
    request(&sub, r#"{"type":"subscribe","topic":"prices.AAPL","id":1}"#);
    w.settle();
    assert_eq!(text_of(&mut sub), r#"{"type":"ack","id":1}"#);
    request(
        &publisher,
        r#"{"type":"publish","topic":"prices.AAPL","data":{"bid":189.5}}"#,
    );
    request(&publisher, r#"{"type":"publish","topic":"prices.MSFT","data":1}"#);
    w.settle();
    assert_eq!(
        text_of(&mut sub),
        r#"{"type":"message","topic":"prices.AAPL","data":{"bid":189.5}}"#
    );
    assert_eq!(sub.next_frame(), None, "nothing from a topic not subscribed");
    request(&sub, r#"{"type":"unsubscribe","topic":"prices.AAPL","id":2}"#);
    // In the same read as the unsubscribe: no longer delivered.
    request(&publisher, r#"{"type":"publish","topic":"prices.AAPL","data":2}"#);
    w.settle();
    assert_eq!(text_of(&mut sub), r#"{"type":"ack","id":2}"#);
    assert_eq!(sub.next_frame(), None);
    assert_eq!(w.metric("wsloop_subscriptions"), 0);
    assert_eq!(w.metric("wsloop_topics"), 0);
}

#[test]
fn a_connection_on_many_topics_gets_one_write_per_iteration() {
    let mut w = World::new(config());
    let mut sub = w.open("/pubsub");
    let topics: Vec<String> = (0..50).map(|i| format!("t{i}")).collect();
    let names = serde_json::to_string(&topics).unwrap();
    request(&sub, &format!(r#"{{"type":"subscribe","topics":{names},"id":1}}"#));
    w.settle();
    assert_eq!(text_of(&mut sub), r#"{"type":"ack","id":1}"#);
    // A room member on one of them, and a publisher on others.
    let member = w.open("/broadcast/t7");
    let publisher = w.open("/pubsub");
    let writes_before = sub.rx.borrow().writes;
    for t in topics.iter().chain(["other".to_string()].iter()) {
        request(
            &publisher,
            &format!(r#"{{"type":"publish","topic":"{t}","data":"{t}"}}"#),
        );
    }
    member.frame(Opcode::Text, b"from the room");
    w.step(); // one iteration reads both and delivers
    assert_eq!(sub.rx.borrow().writes - writes_before, 1, "one write for 51 deliveries");
    let mut got = Vec::new();
    while let Some(f) = sub.next_frame() {
        let v: serde_json::Value = serde_json::from_slice(&f.payload).unwrap();
        got.push((
            v["topic"].as_str().unwrap().to_string(),
            v["data"].as_str().unwrap().to_string(),
        ));
    }
    let mut expect: Vec<(String, String)> = topics.iter().map(|t| (t.clone(), t.clone())).collect();
    expect.push(("t7".into(), "from the room".into()));
    got.sort();
    expect.sort();
    assert_eq!(got, expect, "each topic's messages once, nothing from `other`");
}

#[test]
fn rooms_and_pubsub_interoperate_both_ways() {
    let mut w = World::new(config());
    let mut member = w.open("/broadcast/chat");
    let mut sub = w.open("/pubsub");
    request(&sub, r#"{"type":"subscribe","topic":"chat","id":1}"#);
    w.settle();
    text_of(&mut sub);
    // Bare → pubsub: JSON passes as data, text as a string, binary in the
    // binary form.
    let other = w.open("/broadcast/chat");
    other.frame(Opcode::Text, br#"{"a":1}"#);
    other.frame(Opcode::Text, b"hello");
    other.frame(Opcode::Binary, b"\x00\xff");
    w.settle();
    assert_eq!(text_of(&mut sub), r#"{"type":"message","topic":"chat","data":{"a":1}}"#);
    assert_eq!(text_of(&mut sub), r#"{"type":"message","topic":"chat","data":"hello"}"#);
    let bin = sub.next_frame().unwrap();
    assert_eq!((bin.opcode, bin.payload), (2, b"\x81\x04chat\x00\xff".to_vec()));
    for expect in [&br#"{"a":1}"#[..], b"hello", b"\x00\xff"] {
        assert_eq!(member.next_frame().unwrap().payload, expect);
    }
    // Pubsub → bare: a string's value, other JSON verbatim.
    request(&sub, r#"{"type":"publish","topic":"chat","data":"hi there"}"#);
    request(&sub, r#"{"type":"publish","topic":"chat","data":[1, 2]}"#);
    w.settle();
    assert_eq!(text_of(&mut member), "hi there");
    assert_eq!(text_of(&mut member), "[1, 2]");
    assert_eq!(sub.next_frame(), None, "a publisher does not get its own message");
}

#[test]
fn with_client_publish_off_only_http_publishes() {
    let mut w = World::new(Config {
        client_publish: false,
        ..config()
    });
    let mut sub = w.open("/pubsub");
    request(&sub, r#"{"type":"subscribe","topic":"score","id":1}"#);
    request(&sub, r#"{"type":"publish","topic":"score","data":1,"id":2}"#);
    w.settle();
    assert_eq!(text_of(&mut sub), r#"{"type":"ack","id":1}"#);
    assert!(text_of(&mut sub).contains(r#""code":"publish_not_allowed""#));
    let mut member = w.open("/broadcast/score");
    member.frame(Opcode::Text, b"goal?");
    w.settle();
    let close = member.next_frame().unwrap();
    assert_eq!(close.close_code(), Some(1008));
    assert_eq!(&close.payload[2..], b"publishing is not allowed");
    // HTTP publish, one and a batch.
    let mut http = w.connect();
    let body = r#"[{"type":"publish","topic":"score","data":{"home":1}},{"type":"publish","topic":"none","data":0}]"#;
    http.send(
        format!(
            "POST /pubsub HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    http.send(b"POST /broadcast/score HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n\"2\"!");
    w.settle();
    let (status, _, reply) = http.response().unwrap();
    assert_eq!((status, reply), (202, b"{\"published\":2,\"recipients\":1}\n".to_vec()));
    assert_eq!(
        http.response().map(|r| (r.0, r.2)),
        Some((202, b"{\"recipients\":1}\n".to_vec()))
    );
    assert_eq!(
        text_of(&mut sub),
        r#"{"type":"message","topic":"score","data":{"home":1}}"#
    );
    assert_eq!(
        text_of(&mut sub),
        r#"{"type":"message","topic":"score","data":"\"2\"!"}"#
    );
}

#[test]
fn too_many_subscriptions_is_an_error_not_a_disconnect() {
    let mut w = World::new(Config {
        max_subscriptions: 3,
        ..config()
    });
    let mut sub = w.open("/pubsub");
    request(&sub, r#"{"type":"subscribe","topics":["a","b","c"],"id":1}"#);
    request(&sub, r#"{"type":"subscribe","topic":"d","id":2}"#);
    request(&sub, r#"{"type":"nonsense","id":3}"#);
    w.settle();
    assert_eq!(text_of(&mut sub), r#"{"type":"ack","id":1}"#);
    assert!(text_of(&mut sub).contains(r#""id":2,"code":"too_many_subscriptions""#));
    assert!(text_of(&mut sub).contains(r#""id":3,"code":"unknown_type""#));
    // Still subscribed to the three, and open.
    let publisher = w.open("/broadcast/c");
    publisher.frame(Opcode::Text, b"still here");
    w.settle();
    assert_eq!(
        text_of(&mut sub),
        r#"{"type":"message","topic":"c","data":"still here"}"#
    );
    assert_eq!(w.metric("wsloop_subscriptions"), 4);
    // Its subscriptions go with it.
    sub.shut();
    w.settle();
    assert_eq!(w.metric("wsloop_subscriptions"), 1);
}

/// The messages of [`echoes_are_whole_and_in_order_through_any_pipe`]: large
/// and small, text and binary, pings between them, one past the read
/// buffer (gathered over several reads), each with its own bytes.
fn mixed_messages() -> Vec<(Opcode, Vec<u8>)> {
    let sizes = [20, 1_024, 1_023, 3_000, 0, 16_384, 5, 2_048, 125, 126, 65_535, 1_500];
    let mut v = Vec::new();
    for i in 0..80usize {
        let len = if i == 41 { 70_000 } else { sizes[i % sizes.len()] };
        let payload: Vec<u8> = (0..len).map(|j| b'a' + ((j * 7 + i * 13) % 26) as u8).collect();
        let opcode = match i % 5 {
            3 => Opcode::Ping,
            4 => Opcode::Text,
            _ => Opcode::Binary,
        };
        v.push((
            opcode,
            if opcode == Opcode::Ping {
                payload[..len.min(125)].to_vec()
            } else {
                payload
            },
        ));
    }
    v
}

/// Large echoes pipelined with small ones and pings (whose pongs go into
/// the write buffer between them), to a client whose pipe takes everything,
/// or only a part of a write (the rest must be queued in order): every
/// frame comes back whole and in order.
#[test]
fn echoes_are_whole_and_in_order_through_any_pipe() {
    let messages = mixed_messages();
    for cap in [1 << 20, 40_000, 1_500, 3] {
        let mut w = World::new(config());
        let mut c = w.open("/echo");
        c.rx.borrow_mut().cap = cap;
        for (opcode, payload) in &messages {
            c.frame(*opcode, payload);
        }
        let mut got = 0;
        for _ in 0..2_000_000 {
            w.step();
            while let Some(f) = c.next_frame() {
                let (opcode, payload) = &messages[got];
                let want = if *opcode == Opcode::Ping { Opcode::Pong } else { *opcode };
                assert_eq!(
                    (f.opcode, f.payload.len()),
                    (want as u8, payload.len()),
                    "message {got}, cap {cap}"
                );
                assert!(f.payload == *payload, "message {got}, cap {cap}: other bytes");
                got += 1;
            }
            if got == messages.len() {
                break;
            }
        }
        assert_eq!(got, messages.len(), "cap {cap}");
        assert_eq!(c.pending(), 0);
    }
}
