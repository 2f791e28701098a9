//! wsflood must notice a server that gets things wrong, and refuse runs it
//! cannot do.

mod common;
use common::wsflood;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Duration;
use wsloop::proto::handshake::accept_key;

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
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = s.set_nodelay(true);
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    if s.read_exact(&mut byte).is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let Some(key) = text
                    .lines()
                    .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                    .map(str::trim)
                else {
                    return;
                };
                let accept = accept_key(key.as_bytes());
                let resp = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Accept: {}\r\n\r\n",
                    String::from_utf8_lossy(&accept)
                );
                if s.write_all(resp.as_bytes()).is_err() {
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
