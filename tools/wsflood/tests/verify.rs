//! wsflood must notice a server that gets things wrong, and refuse runs it
//! cannot do.

mod common;
use common::wsflood;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wsloop::proto::handshake::accept_key;
use wsloop::proto::pubsub::{self, Payload, Request};
use wsloop::proto::MessageKind;

/// Reads one client frame: (opcode, unmasked payload).
fn read_frame(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h)?;
    let len = match h[1] & 0x7F {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b)?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b)?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let mut key = [0u8; 4];
    if h[1] & 0x80 != 0 {
        s.read_exact(&mut key)?;
    }
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload)?;
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
    Ok((h[0] & 0x0F, payload))
}

fn write_frame(s: &mut TcpStream, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= 0xFFFF => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    s.write_all(&f)
}

/// Reads a request head and completes the WebSocket handshake; false if
/// the request is not an upgrade (e.g. wsflood's GET /metrics) or the
/// client went away. Sets a 10 s read timeout.
fn handshake(s: &mut TcpStream) -> bool {
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = s.set_nodelay(true);
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        if s.read_exact(&mut byte).is_err() {
            return false;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let Some(key) = text
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .map(str::trim)
    else {
        return false;
    };
    let accept = accept_key(key.as_bytes());
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        String::from_utf8_lossy(&accept)
    );
    s.write_all(resp.as_bytes()).is_ok()
}

/// A WebSocket "echo" server that flips one byte in every message it sends
/// back. Serves `connections` connections, each until the client closes
/// (or 10 s of silence).
fn corrupting_server(connections: usize) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for _ in 0..connections {
            let Ok((mut s, _)) = listener.accept() else { return };
            std::thread::spawn(move || {
                if !handshake(&mut s) {
                    return;
                }
                while let Ok((opcode, mut payload)) = read_frame(&mut s) {
                    if opcode == 8 {
                        let _ = write_frame(&mut s, 8, &payload);
                        let _ = s.shutdown(Shutdown::Write);
                        return;
                    }
                    let mid = payload.len() / 2;
                    if let Some(b) = payload.get_mut(mid) {
                        *b ^= 0x20;
                    }
                    if write_frame(&mut s, opcode, &payload).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn a_flipped_byte_is_a_verification_failure() {
    let addr = corrupting_server(5);
    let url = format!("ws://{addr}/echo");
    let r = wsflood(&["echo", "--url", &url, "-c", "5", "-d", "1", "--payload-size", "64"]);
    assert_eq!(r.code, 1, "{r:?}");
    let received = r.num("messages.received");
    assert!(received > 0, "{r:?}");
    assert_eq!(r.num("verification.mismatched"), received, "{r:?}");
    assert_eq!(r.num("errors.mismatch"), received, "{r:?}");
    assert_eq!(r.value("verification.ok"), false);
    assert!(r.stdout.contains("verification FAILED"), "{}", r.stdout);
    assert_eq!(r.num("verification.lost"), 0, "{r:?}");
}

#[test]
fn a_refused_port_counts_connect_refused() {
    // A port that was just free: bound, then closed.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("ws://127.0.0.1:{port}/");
    let r = wsflood(&["idle", "--url", &url, "-c", "10", "-d", "0.5"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert_eq!(r.num("errors.connect_refused"), 10, "{r:?}");
    assert_eq!(r.num("connects.established"), 0);
}

#[test]
fn refuses_more_connections_than_file_descriptors() {
    let r = wsflood(&["idle", "-c", "100000000", "-d", "1"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("RLIMIT_NOFILE"), "{}", r.stderr);
    assert!(r.json.is_null());
}

#[test]
fn refuses_targets_off_loopback_and_tls() {
    for url in ["ws://192.0.2.1:9001/", "wss://127.0.0.1:9001/", "ws://example.com/"] {
        let r = wsflood(&["--url", url, "-c", "1", "-d", "1"]);
        assert_eq!(r.code, 2, "{url}: {r:?}");
        assert!(r.json.is_null());
    }
}

/// What the faulty pubsub server gets wrong, once: at publish number
/// [`FAULT_AT`], for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// One subscriber does not get the message.
    Drop,
    /// One subscriber gets it twice.
    Duplicate,
    /// One subscriber gets it after the next one on the same topic.
    Reorder,
    /// A connection not subscribed to the topic gets it too.
    Foreign,
    /// One subscriber gets it with a byte of the body flipped.
    Corrupt,
}

const FAULT_AT: usize = 20;

/// A connection as the faulty server sees it.
struct Peer {
    out: Arc<Mutex<TcpStream>>,
    topics: HashSet<String>,
}

#[derive(Default)]
struct Hub {
    peers: Vec<Option<Peer>>,
    publishes: usize,
    /// Reorder: (peer, opcode, frame payload) to deliver after the next one.
    held: Option<(usize, u8, Vec<u8>)>,
}

/// A /pubsub server (wsloop's codec, a thread per connection) that gets
/// one delivery wrong as `fault` says. Serves at most 64 connections.
fn faulty_pubsub_server(fault: Fault) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hub = Arc::new(Mutex::new(Hub::default()));
    std::thread::spawn(move || {
        for _ in 0..64 {
            let Ok((s, _)) = listener.accept() else { return };
            let hub = hub.clone();
            std::thread::spawn(move || serve_pubsub(s, &hub, fault));
        }
    });
    addr
}

fn serve_pubsub(mut s: TcpStream, hub: &Mutex<Hub>, fault: Fault) {
    if !handshake(&mut s) {
        return;
    }
    let Ok(w) = s.try_clone() else { return };
    let out = Arc::new(Mutex::new(w));
    let me = {
        let mut h = hub.lock().unwrap();
        h.peers.push(Some(Peer {
            out: out.clone(),
            topics: HashSet::new(),
        }));
        h.peers.len() - 1
    };
    while let Ok((opcode, payload)) = read_frame(&mut s) {
        let kind = match opcode {
            1 => MessageKind::Text,
            2 => MessageKind::Binary,
            8 => {
                let _ = write_frame(&mut out.lock().unwrap(), 8, &payload);
                let _ = s.shutdown(Shutdown::Write);
                break;
            }
            _ => continue,
        };
        let mut reply = Vec::new();
        match pubsub::parse(kind, &payload) {
            Ok(Request::Subscribe { topics, id }) => {
                if let Some(Some(p)) = hub.lock().unwrap().peers.get_mut(me) {
                    p.topics.extend(topics.iter().map(String::from));
                }
                if let Some(id) = id {
                    pubsub::write_ack(&mut reply, id);
                }
            }
            Ok(Request::Publish { topic, payload, id }) => {
                publish(hub, &topic, payload, fault);
                if let Some(id) = id {
                    pubsub::write_ack(&mut reply, id);
                }
            }
            _ => {}
        }
        if !reply.is_empty() && write_frame(&mut out.lock().unwrap(), 1, &reply).is_err() {
            break;
        }
    }
    hub.lock().unwrap().peers[me] = None;
}

/// Delivers one message to every subscriber of `topic`, but for the fault.
fn publish(hub: &Mutex<Hub>, topic: &str, payload: Payload<'_>, fault: Fault) {
    let mut frame = Vec::new();
    pubsub::write_envelope(&mut frame, topic, payload);
    let opcode = if matches!(payload, Payload::Binary(_)) { 2 } else { 1 };
    let mut h = hub.lock().unwrap();
    h.publishes += 1;
    let mut fault = if h.publishes == FAULT_AT { fault } else { Fault::None };
    let held = h.held.take();
    let mut hold = None;
    for (i, peer) in h.peers.iter().enumerate() {
        let Some(p) = peer else { continue };
        let mut w = p.out.lock().unwrap();
        if !p.topics.contains(topic) {
            if fault == Fault::Foreign {
                let _ = write_frame(&mut w, opcode, &frame);
                fault = Fault::None;
            }
            continue;
        }
        match std::mem::replace(&mut fault, Fault::None) {
            Fault::Drop => continue,
            Fault::Duplicate => {
                let _ = write_frame(&mut w, opcode, &frame);
            }
            Fault::Reorder => {
                hold = Some((i, opcode, frame.clone()));
                continue;
            }
            Fault::Corrupt => {
                // A byte of the padding, near the end (text: before `"}`).
                let mut bad = frame.clone();
                let at = bad.len() - 3;
                bad[at] ^= 0x01;
                let _ = write_frame(&mut w, opcode, &bad);
                continue;
            }
            other => fault = other,
        }
        let _ = write_frame(&mut w, opcode, &frame);
        if let Some((_, op, f)) = held.as_ref().filter(|(peer, ..)| *peer == i) {
            let _ = write_frame(&mut w, *op, f);
        }
    }
    h.held = hold;
}

/// A short pubsub run against the faulty server: one topic, so that every
/// publish goes to every subscriber and the held message of `Reorder`
/// comes right after the next one.
fn pubsub_against(fault: Fault) -> common::Run {
    let addr = faulty_pubsub_server(fault);
    let url = format!("ws://{addr}/pubsub");
    wsflood(&[
        "pubsub",
        "--url",
        &url,
        "-c",
        "10",
        "--topics",
        "1",
        "--subscriptions",
        "1",
        "-p",
        "1",
        "--rate",
        "200",
        "-s",
        "64",
        "-d",
        "1.5",
    ])
}

/// Verification counts as (mismatched, lost, duplicated, out of order,
/// foreign).
fn verdict(r: &common::Run) -> [u64; 5] {
    ["mismatched", "lost", "duplicated", "out_of_order", "foreign"].map(|k| r.num(&format!("verification.{k}")))
}

#[test]
fn pubsub_faults_are_each_caught() {
    // The faulty server without its fault is a correct one.
    let r = pubsub_against(Fault::None);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(verdict(&r), [0; 5], "{r:?}");
    assert!(r.num("messages.sent") > FAULT_AT as u64, "{r:?}");
    assert_eq!(r.num("messages.received"), r.num("messages.sent") * 10, "{r:?}");
    for (fault, want) in [
        (Fault::Drop, [0, 1, 0, 0, 0]),
        (Fault::Duplicate, [0, 0, 1, 0, 0]),
        (Fault::Reorder, [0, 0, 0, 1, 0]),
        (Fault::Foreign, [0, 0, 0, 0, 1]),
        // A corrupt delivery is not the message: it is lost too.
        (Fault::Corrupt, [1, 1, 0, 0, 0]),
    ] {
        let r = pubsub_against(fault);
        assert_eq!(r.code, 1, "{fault:?}\n{r:?}");
        assert_eq!(verdict(&r), want, "{fault:?}\n{r:?}");
        assert_eq!(r.value("verification.ok"), false);
        assert!(r.stdout.contains("verification FAILED"), "{}", r.stdout);
    }
}
