//! Helpers for running wsflood against a live wsloop daemon (or a test
//! server of our own) on ephemeral ports.

#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a daemon may take to say where it listens.
const STARTUP: Duration = Duration::from_secs(20);

/// The wsloop daemon binary of the same build profile as wsflood: cargo
/// puts every binary of the workspace in one directory, and `cargo test
/// --workspace` builds them all. Built here if missing (e.g. under `cargo
/// test -p wsflood`).
pub fn daemon_binary() -> PathBuf {
    let flood = Path::new(env!("CARGO_BIN_EXE_wsflood"));
    let dir = flood.parent().expect("the binary has a directory");
    let exe = dir.join(format!("wsloop{}", std::env::consts::EXE_SUFFIX));
    // Built (or found up to date) once per test process, so that
    // `cargo test -p wsflood` after a change to the server never runs a
    // stale daemon.
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--quiet", "-p", "wsloop", "--bin", "wsloop"])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build for the wsloop daemon");
        assert!(status.success(), "building the wsloop daemon failed");
    });
    assert!(exe.exists(), "no wsloop daemon at {}", exe.display());
    exe
}

/// A wsloop daemon on an ephemeral port, killed on drop.
pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Daemon {
    pub fn start(args: &[&str]) -> Daemon {
        Daemon::start_logging(args, "info")
    }

    /// Starts a daemon whose log (at `level`) is kept, for [`Daemon::stop`].
    pub fn start_logging(args: &[&str], level: &str) -> Daemon {
        let mut child = Command::new(daemon_binary())
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", level)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the wsloop daemon");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let keep = (level != "info").then(|| log.clone());
        // Reads the log to its end so that the daemon never blocks on a
        // full pipe; the first "listening on" line gives the address.
        let reader = std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                if let Some(keep) = &keep {
                    keep.lock().unwrap().push(line);
                }
            }
        });
        let addr = match rx.recv_timeout(STARTUP) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("the daemon did not report its address");
            }
        };
        Daemon {
            child,
            addr: addr.parse().expect("a socket address"),
            log,
            reader: Some(reader),
        }
    }

    /// Stops the daemon and returns its whole log (kept only when started
    /// with [`Daemon::start_logging`]).
    pub fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The pipe is closed now: the reader reaches its end.
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a wsflood run gave: exit code, stdout, stderr, and the JSON summary
/// (Null if none was written).
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub json: Value,
}

impl Run {
    /// A number from the JSON summary by path, e.g. "messages.received".
    pub fn num(&self, path: &str) -> u64 {
        let mut v = &self.json;
        for key in path.split('.') {
            v = &v[key];
        }
        v.as_u64()
            .unwrap_or_else(|| panic!("{path} is not a count in {:#}\n{}", self.json, self.stdout))
    }

    pub fn value(&self, path: &str) -> &Value {
        let mut v = &self.json;
        for key in path.split('.') {
            v = &v[key];
        }
        v
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n{}\n{}", self.code, self.stdout, self.stderr)
    }
}

static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Runs wsflood with `args` (quiet, with a JSON summary). wsflood bounds
/// its own run time (--duration plus at most 12 s).
pub fn wsflood(args: &[&str]) -> Run {
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let json_path = std::env::temp_dir().join(format!("wsflood-test-{}-{n}.json", std::process::id()));
    let _ = std::fs::remove_file(&json_path);
    let Output { status, stdout, stderr } = Command::new(env!("CARGO_BIN_EXE_wsflood"))
        .args(args)
        .arg("--quiet")
        .arg("--json")
        .arg(&json_path)
        .stdin(Stdio::null())
        .output()
        .expect("run wsflood");
    let json = std::fs::read_to_string(&json_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let _ = std::fs::remove_file(&json_path);
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        json,
    }
}
