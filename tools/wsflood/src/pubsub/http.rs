//! HTTP publishers: a thread of their own, with a mio loop over one
//! keep-alive connection per publisher. Each publishes with `POST
//! /broadcast/{topic}` (one message per request) or `POST /pubsub` (a JSON
//! array of `--batch` publish requests), paced at its share of `--rate`,
//! or at `--rate 0` with `--inflight` requests outstanding (pipelined; the
//! server answers them in order).
//!
//! Like the workers, it allocates nothing per message once warmed up: the
//! requests go into each connection's output buffer, answers are read into
//! its input buffer, and both keep their capacity.

use super::{pace, publisher_rng, wire, PublishVia, Rng, Shared as PubSub, MAX_BURST};
use crate::alloc;
use crate::shared::{self, HARD_CAP};
use crate::stats::Stats;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{self, Read};
use std::sync::atomic::Ordering::{Relaxed, Release};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;
use wsloop::net::write_some;
use wsloop::proto::http::{has_token, split_field};

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;
/// After the load: how long answers may take to arrive.
const DRAIN: u64 = 5 * SEC;
/// Warm-up before the allocation count of the steady state starts.
const WARM_UP: u64 = SEC;
/// Longest answer head, and longest answer body, we read.
const MAX_HEAD: usize = 16 << 10;
const MAX_BODY: usize = 1 << 20;

/// Starts the HTTP publishers' thread if the run has any; it signals `done`
/// when it ends and returns its counts.
pub fn spawn(
    sh: &Arc<shared::Shared>,
    ps: Option<&Arc<PubSub>>,
    done: mpsc::Sender<()>,
) -> io::Result<Option<JoinHandle<Stats>>> {
    let Some(ps) = ps.cloned() else {
        return Ok(None);
    };
    if ps.opts.http_publishers() == 0 {
        return Ok(None);
    }
    let publishers = Publishers::new(sh.clone(), ps)?;
    let handle = std::thread::Builder::new().name("wsflood-http".into()).spawn(move || {
        let stats = publishers.run();
        let _ = done.send(());
        stats
    })?;
    Ok(Some(handle))
}

/// One HTTP answer, as far as a publisher cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// `recipients` from a 202 body (0 if none).
    pub recipients: u64,
    /// The server closes the connection after this answer.
    pub close: bool,
    /// Bytes of the input the answer took, head and body.
    pub used: usize,
}

/// Reads the first answer in `buf`: `Ok(None)` until all of it is there.
/// The head must be HTTP/1.1 with lines ended by CRLF, and the body sized
/// by Content-Length (a publish answer always is).
pub fn parse_answer(buf: &[u8]) -> Result<Option<Answer>, &'static str> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Err("answer head too large")
        } else {
            Ok(None)
        };
    };
    let mut lines = head_lines(&buf[..end]);
    let status_line = lines.next().unwrap_or(Err("empty answer"))?;
    let status = match status_line {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', b'1', b' ', a, b, c, rest @ ..]
            if [a, b, c].iter().all(|d| d.is_ascii_digit()) && (rest.is_empty() || rest[0] == b' ') =>
        {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => return Err("malformed status line"),
    };
    let (mut length, mut close) = (None, false);
    for line in lines {
        let line = line?;
        let (name, value) = split_field(line).map_err(|e| e.reason)?;
        if name.eq_ignore_ascii_case(b"content-length") {
            if length.is_some() || value.is_empty() || value.len() > 9 || !value.iter().all(u8::is_ascii_digit) {
                return Err("bad Content-Length");
            }
            length = Some(value.iter().fold(0usize, |v, &d| v * 10 + usize::from(d - b'0')));
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err("chunked answers are not supported");
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= has_token(value, "close");
        }
    }
    let length = length.ok_or("answer without Content-Length")?;
    if length > MAX_BODY {
        return Err("answer body too large");
    }
    let used = end + 4 + length;
    if buf.len() < used {
        return Ok(None);
    }
    Ok(Some(Answer {
        status,
        recipients: recipients(&buf[end + 4..used]),
        close,
        used,
    }))
}

/// The lines of a head without its final CRLF CRLF: every line but the
/// last ends in CRLF (RFC 9112 §2.2), and no other CR is allowed.
fn head_lines(head: &[u8]) -> impl Iterator<Item = Result<&[u8], &'static str>> {
    let mut pieces = head.split(|&b| b == b'\n').peekable();
    std::iter::from_fn(move || {
        let piece = pieces.next()?;
        let line = if pieces.peek().is_some() {
            piece.strip_suffix(b"\r")
        } else {
            Some(piece)
        };
        Some(line.filter(|l| !l.contains(&b'\r')).ok_or("line not ended by CRLF"))
    })
}

/// `"recipients":N` in a publish answer's JSON body.
fn recipients(body: &[u8]) -> u64 {
    const KEY: &[u8] = br#""recipients":"#;
    let Some(at) = body.windows(KEY.len()).position(|w| w == KEY) else {
        return 0;
    };
    body[at + KEY.len()..]
        .iter()
        .take_while(|d| d.is_ascii_digit())
        .take(19)
        .fold(0, |v, &d| v * 10 + u64::from(d - b'0'))
}

/// One publisher's connection.
struct Conn {
    stream: Option<TcpStream>,
    connected: bool,
    /// Requests not written yet, from `out_at`.
    out: Vec<u8>,
    out_at: usize,
    /// Answer bytes not read yet.
    input: Vec<u8>,
    /// Requests sent and not answered.
    outstanding: usize,
    /// Paced: when the next request is due (0: not set yet).
    next_send: u64,
    rng: Rng,
}

struct Publishers {
    sh: Arc<shared::Shared>,
    ps: Arc<PubSub>,
    poll: Poll,
    conns: Vec<Conn>,
    stats: Stats,
    /// The filler, with headers stamped over its start.
    body: Vec<u8>,
    /// The JSON array of a batch.
    json: Vec<u8>,
    rbuf: Box<[u8]>,
    /// Messages per request, and ns between one publisher's requests.
    per_request: usize,
    period: u64,
}

impl Publishers {
    fn new(sh: Arc<shared::Shared>, ps: Arc<PubSub>) -> io::Result<Publishers> {
        let per_request = if ps.opts.via == PublishVia::HttpBatch {
            ps.opts.batch
        } else {
            1
        };
        let conns = (0..ps.opts.publishers)
            .map(|p| Conn {
                stream: None,
                connected: false,
                out: Vec::new(),
                out_at: 0,
                input: Vec::new(),
                outstanding: 0,
                next_send: 0,
                rng: publisher_rng(ps.opts.seed, p),
            })
            .collect();
        Ok(Publishers {
            poll: Poll::new()?,
            conns,
            stats: Stats::default(),
            body: ps.filler.to_vec(),
            json: Vec::new(),
            rbuf: vec![0; 64 << 10].into_boxed_slice(),
            per_request,
            period: ps.opts.period(per_request),
            sh,
            ps,
        })
    }

    fn run(mut self) -> Stats {
        let sh = self.sh.clone();
        let stop = sh.plan.duration_ns;
        let hard = stop + HARD_CAP;
        for i in 0..self.conns.len() {
            self.connect(i);
        }
        let mut drain_until = None;
        let mut steady_from: Option<(u64, u64)> = None;
        let mut started_at = None;
        let mut events = Events::with_capacity(256);
        loop {
            let now = sh.now();
            if now >= hard {
                break;
            }
            match drain_until {
                None if now >= stop => {
                    if let Some((allocs, msgs)) = steady_from {
                        self.stats.steady = Some((alloc::thread_allocations() - allocs, self.stats.sent - msgs));
                    }
                    self.ps.http_done.store(true, Release);
                    drain_until = Some(now + DRAIN);
                }
                Some(until) if now >= until || self.quiet() => break,
                _ => {}
            }
            let sending = drain_until.is_none() && self.ps.started();
            if sending {
                let t0 = *started_at.get_or_insert(now);
                if steady_from.is_none() && now >= t0 + WARM_UP.min(stop / 4) {
                    steady_from = Some((alloc::thread_allocations(), self.stats.sent));
                }
                for i in 0..self.conns.len() {
                    self.fill(i, now);
                    self.flush(i);
                }
            }
            let mut until = hard.min(drain_until.unwrap_or(stop)).min(now + SEC);
            if drain_until.is_none() && !sending {
                until = until.min(now + MS);
            }
            if drain_until.is_some() {
                until = until.min(now + 5 * MS);
            }
            if sending && self.period > 0 {
                for c in self.conns.iter().filter(|c| c.stream.is_some() && c.next_send > 0) {
                    until = until.min(c.next_send);
                }
            }
            if let Err(e) = self
                .poll
                .poll(&mut events, Some(Duration::from_nanos(until.saturating_sub(now))))
            {
                if e.kind() != io::ErrorKind::Interrupted {
                    eprintln!("wsflood: http publishers: poll failed: {e}");
                    break;
                }
            }
            for ev in events.iter() {
                let i = ev.token().0;
                if ev.is_writable() {
                    self.on_writable(i);
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    self.on_readable(i);
                }
            }
        }
        self.ps.http_done.store(true, Release);
        for i in 0..self.conns.len() {
            self.close(i);
        }
        self.stats
    }

    /// Everything written and answered.
    fn quiet(&self) -> bool {
        self.conns
            .iter()
            .all(|c| c.stream.is_none() || (c.outstanding == 0 && c.out_at == c.out.len()))
    }

    fn connect(&mut self, i: usize) {
        let addr = self.sh.plan.target.addr;
        let registered = TcpStream::connect(addr).and_then(|mut s| {
            s.set_nodelay(true)?;
            self.poll
                .registry()
                .register(&mut s, Token(i), Interest::READABLE | Interest::WRITABLE)?;
            Ok(s)
        });
        match registered {
            Ok(s) => self.conns[i].stream = Some(s),
            Err(e) => self.stats.errors.io_error(&e),
        }
    }

    /// The connection failed or ended: what it had outstanding is lost (and
    /// counted so by the subscribers).
    fn close(&mut self, i: usize) {
        let c = &mut self.conns[i];
        c.stream = None;
        c.connected = false;
    }

    fn on_writable(&mut self, i: usize) {
        let c = &mut self.conns[i];
        let Some(stream) = c.stream.as_ref() else { return };
        if !c.connected {
            // A connect's outcome is in SO_ERROR; peer_addr tells a completed
            // connect from a spurious wakeup.
            let failure = match stream.take_error() {
                Ok(Some(e)) | Err(e) => Some(e),
                Ok(None) => match stream.peer_addr() {
                    Ok(_) => None,
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                    Err(e) => Some(e),
                },
            };
            if let Some(e) = failure {
                self.stats.errors.io_error(&e);
                return self.close(i);
            }
            c.connected = true;
            self.ps.http_open.fetch_add(1, Relaxed);
        }
        self.flush(i);
    }

    /// Queues the requests this publisher may send now.
    fn fill(&mut self, i: usize, now: u64) {
        let n = self.conns.len() as u64;
        let c = &mut self.conns[i];
        if !c.connected || c.out_at < c.out.len() {
            return;
        }
        if self.period > 0 && c.next_send == 0 {
            // Spread the publishers over the period.
            c.next_send = now + self.period * i as u64 / n;
        }
        for _ in 0..MAX_BURST {
            let c = &mut self.conns[i];
            let due = if self.period > 0 {
                c.next_send <= now
            } else {
                c.outstanding < self.sh.plan.inflight
            };
            if !due {
                break;
            }
            self.request(i, now);
            let c = &mut self.conns[i];
            c.outstanding += 1;
            if self.period > 0 {
                c.next_send = pace(c.next_send, self.period, now);
            }
        }
    }

    /// Appends one request (one message, or a batch) to the output.
    fn request(&mut self, i: usize, now: u64) {
        let Publishers {
            sh,
            ps,
            conns,
            stats,
            body,
            json,
            per_request,
            ..
        } = self;
        let c = &mut conns[i];
        let (p, host, sizes) = (i as u32, sh.plan.target.host.as_str(), &sh.plan.sizes[..]);
        if ps.opts.via == PublishVia::HttpBatch {
            json.clear();
            json.push(b'[');
            for k in 0..*per_request {
                let (t, seq, len) = ps.next_message(sizes, p, &mut c.rng, body, now);
                if k > 0 {
                    json.push(b',');
                }
                wire::publish_text(json, t, &body[..len], None);
                ps.commit(p, t, seq);
                stats.bytes_sent += len as u64;
            }
            json.push(b']');
            wire::http_batch(&mut c.out, host, json);
        } else {
            let (t, seq, len) = ps.next_message(sizes, p, &mut c.rng, body, now);
            wire::http_publish(&mut c.out, host, t, &body[..len], ps.opts.binary);
            ps.commit(p, t, seq);
            stats.bytes_sent += len as u64;
        }
        stats.sent += *per_request as u64;
        stats.first_send_ns.get_or_insert(now);
    }

    fn flush(&mut self, i: usize) {
        let c = &mut self.conns[i];
        let Some(stream) = c.stream.as_mut() else { return };
        if !c.connected || c.out_at == c.out.len() {
            return;
        }
        match write_some(stream, &c.out[c.out_at..]) {
            Ok(n) => {
                c.out_at += n;
                if c.out_at == c.out.len() {
                    c.out.clear();
                    c.out_at = 0;
                }
            }
            Err(e) => {
                self.stats.errors.io_error(&e);
                self.close(i);
            }
        }
    }

    fn on_readable(&mut self, i: usize) {
        loop {
            let c = &mut self.conns[i];
            let Some(stream) = c.stream.as_mut() else { return };
            match stream.read(&mut self.rbuf) {
                Ok(0) => {
                    self.stats.errors.eof += 1;
                    return self.close(i);
                }
                Ok(n) => {
                    c.input.extend_from_slice(&self.rbuf[..n]);
                    if !self.answers(i) {
                        return self.close(i);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.stats.errors.io_error(&e);
                    return self.close(i);
                }
            }
        }
    }

    /// Takes the complete answers in the input; false if the connection is
    /// over (a malformed answer, or the server closes it).
    fn answers(&mut self, i: usize) -> bool {
        let c = &mut self.conns[i];
        let mut at = 0;
        let mut open = true;
        while open {
            match parse_answer(&c.input[at..]) {
                Ok(None) => break,
                Ok(Some(a)) => {
                    at += a.used;
                    open = !a.close;
                    if c.outstanding == 0 {
                        *self
                            .stats
                            .errors
                            .refused
                            .entry("http_unrequested_answer".into())
                            .or_default() += 1;
                    }
                    c.outstanding = c.outstanding.saturating_sub(1);
                    if a.status == 202 {
                        self.ps.accepted.fetch_add(1, Relaxed);
                        self.ps.recipients.fetch_add(a.recipients, Relaxed);
                    } else {
                        let key = format!("publish_status_{}", a.status);
                        *self.stats.errors.refused.entry(key).or_default() += 1;
                    }
                }
                Err(_) => {
                    *self
                        .stats
                        .errors
                        .refused
                        .entry("http_malformed_answer".into())
                        .or_default() += 1;
                    open = false;
                }
            }
        }
        c.input.drain(..at);
        open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &[u8] = b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n\
                            {\"recipients\":5}\n\
                            HTTP/1.1 202 Accepted\r\ncontent-length: 32\r\n\r\n{\"published\":3,\"recipients\":12}\n\
                            HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: keep-alive, close\r\n\r\nbusy";

    /// Feeds `chunks` as a connection would receive them; returns the
    /// answers and what is left over.
    fn feed(chunks: &[&[u8]]) -> Result<(Vec<Answer>, usize), &'static str> {
        let mut input = Vec::new();
        let mut got = Vec::new();
        for chunk in chunks {
            input.extend_from_slice(chunk);
            while let Some(a) = parse_answer(&input)? {
                input.drain(..a.used);
                got.push(a);
            }
        }
        Ok((got, input.len()))
    }

    fn answers_of(chunks: &[&[u8]]) -> Vec<(u16, u64, bool)> {
        let (got, left) = feed(chunks).unwrap();
        assert_eq!(left, 0);
        got.iter().map(|a| (a.status, a.recipients, a.close)).collect()
    }

    #[test]
    fn pipelined_answers_whole_split_and_bytewise() {
        let want = vec![(202, 5, false), (202, 12, false), (503, 0, true)];
        assert_eq!(answers_of(&[STREAM]), want);
        for cut in 0..=STREAM.len() {
            assert_eq!(answers_of(&[&STREAM[..cut], &STREAM[cut..]]), want, "split at {cut}");
        }
        let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(answers_of(&bytes), want);
    }

    #[test]
    fn malformed_answers_are_refused() {
        for bad in [
            &b"HTTP/1.0 202 Accepted\r\nContent-Length: 0\r\n\r\n"[..],
            b"HTTP/1.1 20 Accepted\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 202 Accepted\r\n\r\n",
            b"HTTP/1.1 202 Accepted\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 202 Accepted\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 202 Accepted\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 202 Accepted\r\nno colon\r\n\r\n",
            b"HTTP/1.1 202 Accepted\r\nContent-Length: 99999999\r\n\r\n",
        ] {
            assert!(parse_answer(bad).is_err(), "{}", String::from_utf8_lossy(bad));
            // The verdict is the same however the bytes arrive.
            let bytes: Vec<&[u8]> = bad.chunks(1).collect();
            assert!(feed(&bytes).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_answer(&[b'x'; 100]), Ok(None), "no end of head yet");
        assert!(parse_answer(&[b'x'; MAX_HEAD + 1]).is_err());
    }
}
