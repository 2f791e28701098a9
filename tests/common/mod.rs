//! Test helpers: the daemon as a child process on an ephemeral port, and a
//! raw client for input no well-behaved library would send.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long any single read in a test may wait.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The `wsloop` binary, running until dropped.
pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    /// Every line the daemon logged so far.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Daemon {
    pub fn start(args: &[&str]) -> Daemon {
        Daemon::spawn(Command::new(env!("CARGO_BIN_EXE_wsloop")), args)
    }

    /// The daemon with extra environment variables.
    pub fn start_with_env(env: &[(&str, &str)], args: &[&str]) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wsloop"));
        cmd.envs(env.iter().copied());
        Daemon::spawn(cmd, args)
    }

    /// The daemon listening on `listen` (rather than a free port).
    pub fn start_on(listen: &str, args: &[&str]) -> Daemon {
        Daemon::spawn_on(Command::new(env!("CARGO_BIN_EXE_wsloop")), listen, args)
    }

    /// The daemon with at most `nofile` open file descriptors.
    pub fn start_with_nofile(nofile: u32, args: &[&str]) -> Daemon {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            &format!("ulimit -n {nofile} && exec \"$0\" \"$@\""),
            env!("CARGO_BIN_EXE_wsloop"),
        ]);
        Daemon::spawn(cmd, args)
    }

    fn spawn(cmd: Command, args: &[&str]) -> Daemon {
        Daemon::spawn_on(cmd, "127.0.0.1:0", args)
    }

    fn spawn_on(mut cmd: Command, listen: &str, args: &[&str]) -> Daemon {
        let mut child = cmd
            .args(["--listen", listen])
            .args(args)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wsloop");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line.clone());
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap().to_string();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                // Keep draining so the daemon never blocks on a full pipe.
            }
        });
        let addr = rx
            .recv_timeout(DEADLINE)
            .expect("daemon logs its address")
            .parse()
            .unwrap();
        Daemon { child, addr, log }
    }

    /// Waits (bounded) for a log line containing `needle`; returns it.
    pub fn wait_log(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            if let Some(line) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            assert!(start.elapsed() < DEADLINE, "no log line with {needle:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// How many log lines contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log.lock().unwrap().iter().filter(|l| l.contains(needle)).count()
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends a signal (by name, e.g. "TERM") to the daemon.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits (bounded) for the daemon to exit; returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(start.elapsed() < within, "daemon still running after {within:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// CPU time (user + system) the daemon has used, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the parenthesised command name; utime and stime are
        // the 14th and 15th fields of the whole line.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A frame as read off the wire by [`Raw`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, 8, "not a close frame: {self:?}");
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// A hand-rolled client that writes exactly the bytes a test wants. Its
/// framing is written out here, independently of the crate's codec.
pub struct Raw {
    pub stream: TcpStream,
    /// Bytes read; those before `start` are consumed.
    buf: Vec<u8>,
    start: usize,
}

pub const REQUEST: &str = "GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream.set_nodelay(true).unwrap();
        Raw {
            stream,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// Connects and completes the handshake on /echo.
    pub fn open(addr: SocketAddr) -> Raw {
        Raw::open_path(addr, "/echo")
    }

    /// Connects and completes the handshake on `path`.
    pub fn open_path(addr: SocketAddr, path: &str) -> Raw {
        let mut c = Raw::connect(addr);
        c.send(REQUEST.replacen("/echo", path, 1).as_bytes());
        let (status, head, _) = c.read_response();
        assert_eq!(status, 101, "{head}");
        assert!(
            head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
            "{head}"
        );
        c
    }

    /// Connects with a small receive buffer (set before connecting, so the
    /// advertised window stays small): a client that reads slowly.
    pub fn open_small_rcvbuf(addr: SocketAddr, path: &str, rcvbuf: usize) -> Raw {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(rcvbuf).unwrap();
        socket.connect(&addr.into()).unwrap();
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut c = Raw {
            stream,
            buf: Vec::new(),
            start: 0,
        };
        c.send(REQUEST.replacen("/echo", path, 1).as_bytes());
        assert_eq!(c.read_response().0, 101);
        c
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    fn fill(&mut self) -> usize {
        let mut tmp = [0u8; 65536];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return n;
                }
                // A signal, not the server: read again (std::io::Read's rule).
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A reset is not an end: the server promises to close with a
                // FIN after its last word (RFC 6455 §7.1.1), and a reset can
                // destroy that word before we read it.
                Err(e) => panic!("read failed (deadline {DEADLINE:?}): {e}"),
            }
        }
    }

    /// Connects with a small receive buffer, for plain HTTP.
    pub fn open_small_rcvbuf_http(addr: SocketAddr, rcvbuf: usize) -> Raw {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(rcvbuf).unwrap();
        socket.connect(&addr.into()).unwrap();
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        Raw {
            stream,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// Reads and discards until the server closes (within the deadline).
    pub fn drain_to_eof(&mut self) {
        let start = Instant::now();
        while self.fill() > 0 {
            assert!(start.elapsed() < DEADLINE, "no EOF");
            self.buf.clear();
        }
    }

    /// Reads an HTTP response head only (for HEAD requests).
    pub fn read_response_head(&mut self) -> (u16, String, Vec<u8>) {
        self.read_response_with(false)
    }

    /// Reads an HTTP response head and, if it has a Content-Length, the
    /// body. Returns (status, head, body).
    pub fn read_response(&mut self) -> (u16, String, Vec<u8>) {
        self.read_response_with(true)
    }

    fn read_response_with(&mut self, with_body: bool) -> (u16, String, Vec<u8>) {
        self.buf.drain(..self.start);
        self.start = 0;
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(
                self.fill() > 0,
                "EOF inside a response head: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let head = String::from_utf8(self.buf[..end].to_vec()).unwrap();
        self.buf.drain(..end);
        let status = head[9..12].parse().unwrap();
        let len = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap())
            })
            .unwrap_or(0);
        let len = if with_body { len } else { 0 };
        while self.buf.len() < len {
            assert!(self.fill() > 0, "EOF inside a response body");
        }
        let body = self.buf.drain(..len).collect();
        (status, head, body)
    }

    /// Sends one masked frame.
    pub fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let bytes = masked_frame(fin, opcode, payload);
        self.send(&bytes);
    }

    /// Reads one frame (server frames are unmasked).
    pub fn read_frame(&mut self) -> Frame {
        loop {
            if let Some((frame, used)) = parse_frame(&self.buf[self.start..]) {
                self.start += used;
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                return frame;
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            assert!(self.fill() > 0, "EOF while waiting for a frame");
        }
    }

    /// Asserts that the server closes the TCP connection with a FIN (not a
    /// reset: `fill` fails on one), within the deadline, without sending
    /// anything more.
    pub fn expect_eof(&mut self) {
        self.buf.drain(..self.start);
        self.start = 0;
        let start = Instant::now();
        while self.fill() > 0 {
            assert!(start.elapsed() < DEADLINE);
        }
        assert!(
            self.buf.is_empty(),
            "unexpected bytes before EOF: {:x?}",
            &self.buf[..self.buf.len().min(64)]
        );
    }

    /// After sending our Close: the server echoes it, then closes TCP.
    pub fn expect_close_echo(&mut self) {
        assert_eq!(self.read_frame().opcode, 8);
        self.expect_eof();
    }

    /// The close handshake from the client side after a server Close:
    /// answer it, then expect the server to close TCP.
    pub fn expect_close(&mut self, code: u16) {
        let f = self.read_frame();
        assert_eq!(f.close_code(), Some(code), "{f:?}");
        self.send_frame(true, 8, &f.payload[..2]);
        self.expect_eof();
    }
}

pub fn masked_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x11, 0x22, 0x33, 0x44];
    let mut v = vec![(u8::from(fin) << 7) | opcode];
    let len = payload.len();
    if len < 126 {
        v.push(0x80 | len as u8);
    } else if len < 65536 {
        v.push(0x80 | 126);
        v.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        v.push(0x80 | 127);
        v.extend_from_slice(&(len as u64).to_be_bytes());
    }
    v.extend_from_slice(&key);
    v.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    v
}

fn parse_frame(b: &[u8]) -> Option<(Frame, usize)> {
    if b.len() < 2 {
        return None;
    }
    assert_eq!(b[1] & 0x80, 0, "server frames must not be masked");
    let (len, at) = match b[1] & 0x7F {
        126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
        127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize, 10),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if b.len() < at + len {
        return None;
    }
    Some((
        Frame {
            fin: b[0] & 0x80 != 0,
            opcode: b[0] & 0x0F,
            payload: b[at..at + len].to_vec(),
        },
        at + len,
    ))
}

pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut v = code.to_be_bytes().to_vec();
    v.extend_from_slice(reason.as_bytes());
    v
}

/// Resident set size of process `pid`, in bytes.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kb * 1024
}

/// A metric's value from the daemon's `/metrics` at `addr` (the line
/// `NAME VALUE`); panics if it is missing or the answer is not 200.
pub fn metric_at(addr: SocketAddr, name: &str) -> u64 {
    let (status, _, body) = http(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200, "GET /metrics");
    String::from_utf8(body)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} missing"))
        .parse()
        .unwrap()
}

/// Sends an HTTP request and returns (status, head, body).
pub fn http(addr: SocketAddr, request: &[u8]) -> (u16, String, Vec<u8>) {
    let mut c = Raw::connect(addr);
    c.send(request);
    c.read_response()
}
