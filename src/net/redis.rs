//! The Redis links of the bus: non-blocking sockets in the same poll loop,
//! no thread of their own. The bus (`crate::bus`, sans-IO) says which
//! links to open or close and what to write; this file does the I/O and
//! hands back what was read.

use crate::bus::{Bus, Request};
use log::{debug, info, warn};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};

/// Tokens of the Redis links are this plus their index.
pub(crate) const REDIS_BASE: usize = usize::MAX / 4;

/// One link's socket and whether its connect has completed.
#[derive(Debug)]
struct Socket {
    stream: TcpStream,
    connected: bool,
}

/// The sockets of the bus's links, by link index.
#[derive(Debug, Default)]
pub(crate) struct RedisSockets {
    sockets: Vec<Option<Socket>>,
    /// A read's worth of input.
    buf: Vec<u8>,
    /// Per link: the fault last logged at `warn` (logged again only when it
    /// changes, or after the link was up: retries every second do not fill
    /// the log).
    warned: Vec<Option<String>>,
}

impl RedisSockets {
    /// Carries out what the bus asks: connects and closes.
    pub fn poll(&mut self, bus: &mut Bus, registry: &Registry, now: u64) {
        let mut requests = Vec::new();
        bus.poll(now, |r| requests.push(r));
        for r in requests {
            match r {
                Request::Connect { index, addr } => {
                    if let Err(e) = self.connect(index, &addr, registry) {
                        self.fault(index, format!("cannot connect to Redis at {addr}: {e}"));
                        self.close(index, bus, now);
                    }
                }
                Request::Close { index } => {
                    self.fault(index, format!("Redis link {index}: no answer within 2 s"));
                    self.close(index, bus, now);
                }
            }
        }
    }

    fn connect(&mut self, index: usize, addr: &str, registry: &Registry) -> io::Result<()> {
        // Addresses are IPs (the configured ones were resolved at start;
        // cluster nodes announce IPs), so this does not wait on DNS.
        let addr: SocketAddr = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?;
        let mut stream = TcpStream::connect(addr)?;
        let _ = stream.set_nodelay(true);
        registry.register(
            &mut stream,
            Token(REDIS_BASE + index),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        if self.sockets.len() <= index {
            self.sockets.resize_with(index + 1, || None);
        }
        self.sockets[index] = Some(Socket {
            stream,
            connected: false,
        });
        Ok(())
    }

    /// Logs a link's fault: at `warn` the first time (and when it changes),
    /// at `debug` while it repeats.
    fn fault(&mut self, index: usize, what: String) {
        if self.warned.len() <= index {
            self.warned.resize(index + 1, None);
        }
        if self.warned[index].as_deref() == Some(what.as_str()) {
            debug!("bus: {what}");
        } else {
            warn!("bus: {what}; retrying with back-off");
            self.warned[index] = Some(what);
        }
    }

    /// Closes link `index` (if open) and tells the bus.
    fn close(&mut self, index: usize, bus: &mut Bus, now: u64) {
        if let Some(s) = self.sockets.get_mut(index).and_then(Option::take) {
            if s.connected {
                warn!("bus: lost the Redis link {index}; reconnecting");
            }
        }
        bus.closed(index, now);
    }

    /// Link `index`'s socket is ready: completes its connect, reads what
    /// came (each message of another node goes to `deliver`), writes what
    /// the bus has for it.
    pub fn ready(
        &mut self,
        index: usize,
        bus: &mut Bus,
        now: u64,
        deliver: &mut dyn FnMut(&str, &crate::bus::wire::Envelope<'_>),
    ) {
        let Some(Some(s)) = self.sockets.get_mut(index) else {
            return;
        };
        if !s.connected {
            match s.stream.take_error() {
                Ok(None) if s.stream.peer_addr().is_ok() => {
                    s.connected = true;
                    debug!("bus: connected to Redis (link {index})");
                    bus.connected(index, now);
                }
                Ok(None) => return, // still connecting
                Ok(Some(e)) | Err(e) => {
                    let addr = s.stream.peer_addr().map_or_else(|_| "?".into(), |a| a.to_string());
                    self.fault(index, format!("cannot connect to Redis (link {index}, {addr}): {e}"));
                    return self.close(index, bus, now);
                }
            }
        }
        let was_up = bus.link_up(index);
        if let Err(e) = self.read(index, bus, now, deliver) {
            let what = match bus.refusal.take() {
                Some(said) => format!("Redis link {index}: {e}: {said}"),
                None => format!("Redis link {index}: {e}"),
            };
            self.fault(index, what);
            return self.close(index, bus, now);
        }
        if !was_up && bus.link_up(index) {
            info!("bus: Redis link {index} up");
            if let Some(w) = self.warned.get_mut(index) {
                *w = None;
            }
        }
        self.flush(index, bus, now);
    }

    fn read(
        &mut self,
        index: usize,
        bus: &mut Bus,
        now: u64,
        deliver: &mut dyn FnMut(&str, &crate::bus::wire::Envelope<'_>),
    ) -> io::Result<()> {
        self.buf.resize(64 << 10, 0);
        loop {
            let Some(Some(s)) = self.sockets.get_mut(index) else {
                return Ok(());
            };
            match s.stream.read(&mut self.buf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => bus
                    .input(index, &self.buf[..n], now, &mut *deliver)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes what the bus has for link `index`, as far as the socket takes
    /// it (the rest waits for its next writable event).
    pub fn flush(&mut self, index: usize, bus: &mut Bus, now: u64) {
        let Some(Some(s)) = self.sockets.get_mut(index) else {
            return;
        };
        if !s.connected {
            return;
        }
        while !bus.output(index).is_empty() {
            match s.stream.write(bus.output(index)) {
                Ok(0) => return self.close(index, bus, now),
                Ok(n) => bus.written(index, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("bus: link {index}: {e}");
                    return self.close(index, bus, now);
                }
            }
        }
    }

    /// Writes every link's output (the end of a loop iteration: what was
    /// published during it goes out in one write per link).
    pub fn flush_all(&mut self, bus: &mut Bus, now: u64) {
        for index in 0..bus.links() {
            self.flush(index, bus, now);
        }
    }
}
