//! The opening handshake over real sockets: acceptance, and every refusal
//! as a complete HTTP response followed by the server closing.

mod common;
use common::{Daemon, Raw, REQUEST};

/// Sends `request` and expects `status`, `Connection: close`, and EOF.
fn refused(d: &Daemon, request: &str, status: u16) -> String {
    let mut c = Raw::connect(d.addr);
    c.send(request.as_bytes());
    let (got, head, body) = c.read_response();
    assert_eq!(got, status, "{request}\n--\n{head}");
    assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
    assert!(!body.is_empty(), "an error says why");
    c.expect_eof();
    head
}

fn replace(from: &str, to: &str) -> String {
    assert!(REQUEST.contains(from));
    REQUEST.replacen(from, to, 1)
}

#[test]
fn accepts_the_rfc_example_with_any_case_tokens() {
    let d = Daemon::start(&[]);
    Raw::open(d.addr);
    let mut c = Raw::connect(d.addr);
    c.send(
        replace(
            "Upgrade: websocket\r\nConnection: Upgrade",
            "upgrade: WebSocket\r\nconnection: keep-alive, UPGRADE",
        )
        .as_bytes(),
    );
    assert_eq!(c.read_response().0, 101);
    // `/` echoes too.
    let mut c = Raw::connect(d.addr);
    c.send(replace("GET /echo", "GET /").as_bytes());
    assert_eq!(c.read_response().0, 101);
}

#[test]
fn refusals() {
    let d = Daemon::start(&["--max-header-size", "1024"]);
    refused(&d, &replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""), 400);
    refused(&d, &replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="), 400);
    refused(&d, &replace("Upgrade: websocket\r\n", ""), 400);
    refused(&d, &replace("Connection: Upgrade", "Connection: keep-alive"), 400);
    refused(&d, &replace("Host: localhost\r\n", ""), 400);
    refused(&d, &replace("HTTP/1.1", "HTTP/1.0"), 400);
    refused(&d, "NONSENSE\r\n\r\n", 400);
    let head = refused(&d, &replace("Version: 13", "Version: 8"), 426);
    assert!(head.contains("\r\nSec-WebSocket-Version: 13\r\n"), "{head}");
    let head = refused(&d, &replace("GET /echo", "POST /echo"), 405);
    assert!(head.contains("\r\nAllow: GET\r\n"), "{head}");
    refused(&d, &replace("GET /echo", "GET /nowhere"), 404);
    refused(
        &d,
        &replace("Host:", &format!("X-Big: {}\r\nHost:", "a".repeat(1100))),
        431,
    );
    let many: String = (0..101).map(|i| format!("X-{i}: y\r\n")).collect();
    refused(&d, &replace("Host:", &format!("{many}Host:")), 431);
}

#[test]
fn offered_subprotocols_and_extensions_are_not_echoed() {
    let d = Daemon::start(&[]);
    let mut c = Raw::connect(d.addr);
    c.send(
        replace(
            "\r\n\r\n",
            "\r\nSec-WebSocket-Protocol: chat\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
        )
        .as_bytes(),
    );
    let (status, head, _) = c.read_response();
    assert_eq!(status, 101);
    assert!(!head.to_ascii_lowercase().contains("sec-websocket-protocol"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("sec-websocket-extensions"),
        "{head}"
    );
}

#[test]
fn request_trickled_one_byte_at_a_time() {
    let d = Daemon::start(&[]);
    let mut c = Raw::connect(d.addr);
    for b in REQUEST.as_bytes() {
        c.send(std::slice::from_ref(b));
    }
    assert_eq!(c.read_response().0, 101);
    c.send_frame(true, 1, b"still works");
    assert_eq!(c.read_frame().payload, b"still works");
}

#[test]
fn handshake_and_first_frame_in_one_segment() {
    let d = Daemon::start(&[]);
    let mut c = Raw::connect(d.addr);
    let mut bytes = REQUEST.as_bytes().to_vec();
    bytes.extend_from_slice(&common::masked_frame(true, 1, b"early"));
    bytes.extend_from_slice(&common::masked_frame(true, 2, b"bird"));
    c.send(&bytes);
    assert_eq!(c.read_response().0, 101);
    let f = c.read_frame();
    assert_eq!((f.opcode, f.payload.as_slice()), (1, &b"early"[..]));
    let f = c.read_frame();
    assert_eq!((f.opcode, f.payload.as_slice()), (2, &b"bird"[..]));
}

#[test]
fn bodies_on_anything_but_publish_and_missing_host_are_400() {
    let d = Daemon::start(&[]);
    // A body that would otherwise be read as a second request.
    let smuggle =
        "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 35\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    refused(&d, smuggle, 400);
    refused(
        &d,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    );
    refused(&d, "GET /healthz HTTP/1.1\r\n\r\n", 400);
    refused(&d, &replace("\r\n\r\n", "\r\nContent-Length: 5\r\n\r\n"), 400);
}
