//! A real `redis-server` for the tests, started on a free loopback port
//! with no persistence, in a temporary directory; killed when dropped. Also
//! a three-shard Redis Cluster.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nobody listens on (bound and released: a small race, as with any
/// server that cannot take port 0).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Whether `redis-server` can be run here.
pub fn available() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Redis {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("wsloop-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Redis {
            child: None,
            port,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        wait_for_ping(self.port);
    }

    /// Sends one command and returns the raw reply (authenticated first
    /// if it was started with `--requirepass`).
    pub fn cmd(&self, args: &[&str]) -> String {
        match self.extra.iter().position(|a| a == "--requirepass") {
            Some(i) => {
                let reply = cmd_after_auth(self.port, &self.extra[i + 1], args);
                reply.strip_prefix("+OK\r\n").unwrap_or(&reply).to_string()
            }
            None => cmd(self.port, args),
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits (bounded) until a Redis on `port` answers PING.
pub fn wait_for_ping(port: u16) {
    let start = Instant::now();
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            if s.write_all(b"PING\r\n").is_ok() {
                let mut buf = [0u8; 7];
                // PONG, or NOAUTH from one that wants a password: up.
                if s.read_exact(&mut buf).is_ok() && (&buf == b"+PONG\r\n" || &buf == b"-NOAUTH") {
                    return;
                }
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "redis on {port} never answered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One command as a RESP array; the raw reply (read until it looks whole).
pub fn cmd(port: u16, args: &[&str]) -> String {
    send_commands(port, &[args])
}

/// `AUTH password` then one command; both raw replies.
pub fn cmd_after_auth(port: u16, password: &str, args: &[&str]) -> String {
    send_commands(port, &[&["AUTH", password], args])
}

fn send_commands(port: u16, commands: &[&[&str]]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut req = String::new();
    for args in commands {
        req += &format!("*{}\r\n", args.len());
        for a in *args {
            req += &format!("${}\r\n{a}\r\n", a.len());
        }
    }
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    // Replies here are small and come at once; read what arrives within
    // the timeout.
    while let Ok(n @ 1..) = s.read(&mut buf) {
        out.extend_from_slice(&buf[..n]);
        if out.ends_with(b"\r\n") && n < buf.len() {
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A Redis Cluster of three primaries (no replicas), slots spread evenly.
pub struct Cluster {
    pub nodes: Vec<Redis>,
}

impl Cluster {
    pub fn start() -> Cluster {
        let nodes: Vec<Redis> = (0..3)
            .map(|_| Redis::start_with(&["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]))
            .collect();
        // Each node gets its third of the slots; then they meet.
        for (i, n) in nodes.iter().enumerate() {
            let (start, end) = (i * 16384 / 3, (i + 1) * 16384 / 3 - 1);
            let slots: Vec<String> = (start..=end).map(|s| s.to_string()).collect();
            let mut args = vec!["CLUSTER", "ADDSLOTS"];
            args.extend(slots.iter().map(String::as_str));
            let reply = n.cmd(&args);
            assert!(reply.starts_with("+OK"), "{reply}");
        }
        for n in &nodes[1..] {
            let reply = n.cmd(&["CLUSTER", "MEET", "127.0.0.1", &nodes[0].port.to_string()]);
            assert!(reply.starts_with("+OK"), "{reply}");
        }
        let start = Instant::now();
        while !nodes
            .iter()
            .all(|n| n.cmd(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        {
            assert!(start.elapsed() < Duration::from_secs(20), "the cluster never formed");
            std::thread::sleep(Duration::from_millis(100));
        }
        Cluster { nodes }
    }

    pub fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node (index) that owns the slot of `key`.
    pub fn owner(&self, key: &str) -> usize {
        let slot: u16 = self.nodes[0]
            .cmd(&["CLUSTER", "KEYSLOT", key])
            .trim_start_matches(':')
            .trim()
            .parse()
            .unwrap();
        self.nodes
            .iter()
            .position(|n| {
                let i = self.nodes.iter().position(|m| std::ptr::eq(m, n)).unwrap();
                let (start, end) = (i * 16384 / 3, (i + 1) * 16384 / 3 - 1);
                (start..=end).contains(&usize::from(slot))
            })
            .unwrap()
    }

    /// Moves the slot of `key` (with no keys in it) to node `to`.
    pub fn move_slot(&self, key: &str, to: usize) {
        let slot = self.nodes[0].cmd(&["CLUSTER", "KEYSLOT", key]);
        let slot = slot.trim_start_matches(':').trim().to_string();
        let id = self.nodes[to].cmd(&["CLUSTER", "MYID"]);
        let id = id.lines().nth(1).unwrap().to_string();
        for n in &self.nodes {
            let reply = n.cmd(&["CLUSTER", "SETSLOT", &slot, "NODE", &id]);
            assert!(reply.starts_with("+OK"), "{reply}");
        }
    }

    /// The id of node `i`.
    pub fn id(&self, i: usize) -> String {
        let id = self.nodes[i].cmd(&["CLUSTER", "MYID"]);
        id.lines().nth(1).unwrap().to_string()
    }

    /// Starts a fourth node as a replica of node `of`, in sync; returns its
    /// index.
    pub fn add_replica(&mut self, of: usize) -> usize {
        let r = Redis::start_with(&["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]);
        let reply = r.cmd(&["CLUSTER", "MEET", "127.0.0.1", &self.nodes[0].port.to_string()]);
        assert!(reply.starts_with("+OK"), "{reply}");
        let primary = self.id(of);
        let start = Instant::now();
        // It has to know the primary before it can replicate it.
        while !r.cmd(&["CLUSTER", "REPLICATE", &primary]).starts_with("+OK") {
            assert!(start.elapsed() < Duration::from_secs(20), "the replica never attached");
            std::thread::sleep(Duration::from_millis(100));
        }
        while !r.cmd(&["INFO", "replication"]).contains("master_link_status:up") {
            assert!(start.elapsed() < Duration::from_secs(20), "the replica never synced");
            std::thread::sleep(Duration::from_millis(100));
        }
        self.nodes.push(r);
        self.nodes.len() - 1
    }

    /// The primary of replica `i`'s shard crashes (killed); the replica
    /// takes over once the cluster notices (node timeout 2 s); returns when
    /// it has.
    pub fn crash_primary_of(&mut self, i: usize, primary: usize) {
        self.nodes[primary].kill();
        let start = Instant::now();
        while !self.nodes[i].cmd(&["ROLE"]).contains("master") {
            assert!(start.elapsed() < Duration::from_secs(30), "the failover never happened");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
