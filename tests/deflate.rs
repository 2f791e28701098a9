//! permessage-deflate (RFC 7692) over real sockets with independent
//! clients: Python `websockets` (it offers the extension by default and
//! compresses every message, fragments included) and a raw client on
//! Python's zlib (tests/deflate/client.py) for crafted frames and the RSV1
//! bit of what the server sends; tungstenite, which has no deflate, as the
//! plain member of a room.
//!
//! Fails, saying how to install it, when `python3` or its `websockets`
//! package is missing (`pip install websockets`); `.ci/run` installs it.

mod common;
use base64::Engine as _;
use common::Daemon;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::Message;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/deflate/client.py");
const SHARED: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
/// The longest any script run may take.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// Whether the Python side can run: it must (`.ci/run` installs
/// `websockets`); a missing package fails the test with how to install it
/// rather than passing it silently.
fn python_ready() -> bool {
    let probe = Command::new("python3")
        .args([SCRIPT, "probe"])
        .stdin(Stdio::null())
        .output();
    match probe {
        Ok(out) if out.status.success() => true,
        Ok(out) => panic!(
            "python3 cannot import `websockets` (pip install websockets; .ci/run does): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!("no python3 ({e})"),
    }
}

/// Runs the script with `args`; its JSON result, or a panic with its
/// stderr. Killed past [`SCRIPT_TIMEOUT`].
fn script(args: &[&str]) -> Value {
    assert!(Path::new(SCRIPT).exists());
    let mut child = Command::new("python3")
        .arg(SCRIPT)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let start = Instant::now();
    while child.try_wait().expect("wait for python3").is_none() {
        if start.elapsed() > SCRIPT_TIMEOUT {
            let _ = child.kill();
            panic!("client.py {args:?} took longer than {SCRIPT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("python3 output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client.py {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("client.py {args:?}: {e}: {stdout}"))
}

/// `VmRSS` and `VmHWM` (peak) of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[test]
fn websockets_echo_text_and_binary_0_to_16_mib_and_fragmented() {
    if !python_ready() {
        return;
    }
    // Default threshold (1024): short echoes plain, longer ones compressed;
    // 0: all compressed.
    for (args, expected) in [
        (&["--deflate", "shared"][..], SHARED),
        (&["--deflate", "shared", "--deflate-threshold", "0"], SHARED),
        (&["--deflate", "dedicated"], "permessage-deflate"),
        (
            &["--deflate", "dedicated", "--deflate-window-bits", "10"],
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=10",
        ),
        (&["--deflate", "off"], ""),
    ] {
        let d = Daemon::start(args);
        let r = script(&["echo", &d.url("/echo"), expected]);
        assert_eq!(r["extensions"], expected, "{args:?}");
        assert_eq!(r["echoes"], 20, "{args:?}");
    }
}

/// RFC 7692 §7.1.2.1: a server accepts an offered `server_max_window_bits`
/// "by including" it "with the same or smaller value as the offer", and
/// Python `websockets` fails the connection when it is missing, so an
/// offered 15 is answered with 15, and a larger one than the server's
/// limit with the limit.
#[test]
fn an_offered_server_max_window_bits_is_answered_even_at_15() {
    if !python_ready() {
        return;
    }
    for (args, bits, expected) in [
        (
            &["--deflate", "shared"][..],
            "15",
            format!("{SHARED}; server_max_window_bits=15"),
        ),
        (
            &["--deflate", "shared"],
            "11",
            format!("{SHARED}; server_max_window_bits=11"),
        ),
        (
            &["--deflate", "dedicated"],
            "15",
            "permessage-deflate; server_max_window_bits=15".into(),
        ),
        (
            &["--deflate", "dedicated", "--deflate-window-bits", "10"],
            "15",
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=10".into(),
        ),
    ] {
        let d = Daemon::start(args);
        let r = script(&["echo", &d.url("/echo"), &expected, bits]);
        assert_eq!(r["extensions"], expected.as_str(), "{args:?} {bits}");
        assert_eq!(r["echoes"], 20, "{args:?} {bits}");
    }
}

#[test]
fn echoes_over_the_threshold_come_back_with_rsv1() {
    if !python_ready() {
        return;
    }
    for mode in ["shared", "dedicated"] {
        let d = Daemon::start(&["--deflate", mode]);
        let r = script(&["raw-echo", &d.url("/echo"), "5000"]);
        assert_eq!(r["echo_rsv1"], true, "{mode}: {r}");
        assert!(r["sent_compressed"].as_u64().unwrap() < 1000, "{r}");
    }
}

/// Uncompressed messages on a connection that agreed to permessage-deflate:
/// with the default threshold the server compresses its echoes of 1 KiB and
/// more; with a high one it sends them as they came. Pipelined, so that several
/// share a read.
#[test]
fn uncompressed_large_echoes_with_deflate_agreed_are_exact() {
    if !python_ready() {
        return;
    }
    let sizes = ["20", "1023", "1024", "16384", "3000", "70000", "16384", "5"];
    let big = sizes.iter().map(|s| s.parse::<usize>().unwrap() >= 1024);
    for (args, compressed) in [
        (&["--deflate", "shared"][..], big.clone().collect::<Vec<_>>()),
        (&["--deflate", "dedicated"], big.collect()),
        (
            &["--deflate", "shared", "--deflate-threshold", "1000000"],
            vec![false; sizes.len()],
        ),
    ] {
        let d = Daemon::start(args);
        let url = d.url("/echo");
        let r = script(&[&["plain-echo", url.as_str()][..], &sizes].concat());
        assert_eq!(r["rsv1"], serde_json::json!(compressed), "{args:?}: {r}");
    }
}

/// A message of 16 MiB + 1 (and of 256 MiB) zero bytes compressed into a
/// few KB: the server closes with 1009 as soon as inflating passes its
/// 16 MiB limit, and its memory grows by the limit at most, not by what
/// the input would inflate to.
#[test]
fn decompression_bomb_is_1009_and_memory_stays_bounded() {
    if !python_ready() {
        return;
    }
    for mode in ["shared", "dedicated"] {
        for size in [(16 << 20) + 1, 256 << 20] {
            let d = Daemon::start(&["--deflate", mode]);
            std::thread::sleep(Duration::from_millis(100));
            let (rss0, peak0) = memory_kib(d.pid());
            let size_arg = size.to_string();
            let r = script(&["bomb", &d.url("/echo"), &size_arg]);
            let (rss1, peak1) = memory_kib(d.pid());
            let compressed = r["compressed_bytes"].as_u64().unwrap();
            eprintln!(
                "{mode}: {size} B of zeros in {compressed} B: close {}, RSS {rss0} -> {rss1} KiB, peak {peak0} -> {peak1} KiB",
                r["close_code"]
            );
            assert_eq!(r["close_code"], 1009, "{mode} {size}: {r}");
            assert!(compressed < 300 << 10, "{r}");
            // The inflated buffer reaches the limit (16 MiB) and one step
            // more before the check fails it; 24 MiB leaves room for the
            // rest of the loop's buffers, whatever the bomb's size.
            assert!(
                peak1 - peak0 < 24 << 10,
                "{mode} {size}: peak RSS grew {} KiB",
                peak1 - peak0
            );
        }
    }
}

/// A room with a member that compresses (raw, on zlib; it tells which
/// deliveries had RSV1) and one that does not (tungstenite): a websockets
/// member's messages reach both intact; the compressing member gets them
/// compressed when its parameters allow the loop's shared compressed form.
#[test]
fn broadcast_reaches_compressing_and_plain_members() {
    if !python_ready() {
        return;
    }
    for (args, offer, compressed) in [
        (
            &["--deflate", "shared", "--deflate-threshold", "0"][..],
            "permessage-deflate",
            true,
        ),
        (
            &["--deflate", "dedicated", "--deflate-threshold", "0"],
            "permessage-deflate; server_no_context_takeover",
            true,
        ),
        // Context takeover from the server: broadcasts go plain (the loop
        // compresses a broadcast once, without context).
        (
            &["--deflate", "dedicated", "--deflate-threshold", "0"],
            "permessage-deflate",
            false,
        ),
        (&["--deflate", "off"], "permessage-deflate", false),
    ] {
        let d = Daemon::start(args);
        let url = d.url("/broadcast/mixed");
        let (mut plain, resp) = tungstenite::client::connect(&url).expect("tungstenite joins");
        assert!(resp.headers().get("sec-websocket-extensions").is_none());
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = plain.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        }
        let r = script(&["broadcast", &url, offer, "6"]);
        let rsv1: Vec<bool> = r["rsv1"].as_array().unwrap().iter().map(|v| v == true).collect();
        assert_eq!(rsv1, vec![compressed; 6], "{args:?} {offer}: {r}");
        for (i, sent) in r["sent"].as_array().unwrap().iter().enumerate() {
            let sent = base64::engine::general_purpose::STANDARD
                .decode(sent.as_str().unwrap())
                .unwrap();
            let got = plain.read().expect("tungstenite reads the broadcast");
            match got {
                Message::Text(t) => assert_eq!((i % 2, t.as_bytes()), (0, &sent[..])),
                Message::Binary(b) => assert_eq!((i % 2, &b[..]), (1, &sent[..])),
                other => panic!("{other:?}"),
            }
        }
        let _ = plain.close(None);
    }
}
