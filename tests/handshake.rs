//! The opening handshake over real sockets: acceptance, and every refusal
//! as a complete HTTP response followed by the server closing.

mod common;
use common::{Daemon, Raw, REQUEST};

/// Sends `request` and expects `status`, `Connection: close`, and EOF.
fn refused(d: &Daemon, request: &str, status: u16) -> String {
    let mut c = Raw::connect(d.addr);
    c.send(request.as_bytes());
    let (got, head, body) = c.read_response();
    assert_eq!(got, status, "{request:?}\n--\n{head}");
    // A 426 also names the upgrade option (RFC 9110 §7.8).
    let connection = if status == 426 { "Upgrade, close" } else { "close" };
    assert!(head.contains(&format!("\r\nConnection: {connection}\r\n")), "{head}");
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
    assert!(head.contains("\r\nUpgrade: websocket\r\n"), "{head}");
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
    // RFC 9112 §3: a request line past the limit.
    refused(
        &d,
        &replace("GET /echo", &format!("GET /echo?{}", "a".repeat(1100))),
        414,
    );
}

/// The request-side HTTP rules (RFC 9110 / RFC 9112) through the daemon:
/// each refusal is a complete response and a close.
#[test]
fn malformed_http_is_refused() {
    let d = Daemon::start(&[]);
    // CTLs (RFC 9110 §5.5) in a field value and in the target.
    refused(&d, &replace("Host: localhost", "Host: local\0host"), 400);
    refused(&d, &replace("Upgrade: websocket", "Upgrade: web\x01socket"), 400);
    refused(&d, &replace("GET /echo", "GET /ec\x7fho"), 400);
    // Bare LF (RFC 9112 §2.2).
    refused(&d, &REQUEST.replace("\r\n", "\n"), 400);
    refused(&d, &replace("\r\n\r\n", "\r\n\n"), 400);
    // Whitespace before the colon (RFC 9112 §5.1).
    refused(&d, &replace("Host:", "Host :"), 400);
    // Host syntax (RFC 9110 §7.2).
    refused(&d, &replace("Host: localhost", "Host: evil.example@@:x:y"), 400);
    // Duplicates of single fields.
    refused(
        &d,
        &replace("Host:", "Origin: http://a\r\nOrigin: http://b\r\nHost:"),
        400,
    );
    refused(
        &d,
        &replace("Host: localhost", "Host: localhost\r\nHost: localhost"),
        400,
    );
    // Target forms (RFC 9112 §3.2).
    refused(&d, &replace("GET /echo", "GET ws://localhost/echo"), 400);
    refused(&d, &replace("GET /echo", "OPTIONS *"), 400);
    // Expect (RFC 9110 §10.1.1).
    refused(&d, &replace("Host:", "Expect: the-unexpected\r\nHost:"), 417);
    // Framing (RFC 9112 §6).
    refused(
        &d,
        "POST /broadcast/r HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\nx",
        400,
    );
    refused(
        &d,
        "POST /broadcast/r HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    );
}

/// RFC 9112 §3.2.2: "A server MUST accept the absolute-form in requests."
#[test]
fn absolute_form_targets_are_accepted() {
    let d = Daemon::start(&[]);
    let mut c = Raw::connect(d.addr);
    c.send(replace("GET /echo", "GET HTTP://localhost:1/echo").as_bytes());
    assert_eq!(c.read_response().0, 101);
    c.send_frame(true, 1, b"absolute");
    assert_eq!(c.read_frame().payload, b"absolute");
    let mut c = Raw::connect(d.addr);
    c.send(b"GET http://x/healthz?probe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let (status, _, body) = c.read_response();
    assert_eq!((status, body.as_slice()), (200, &b"ok\n"[..]));
}

#[test]
fn offers_answered_only_for_what_the_server_does() {
    let offer = "\r\nSec-WebSocket-Protocol: chat\r\nSec-WebSocket-Extensions: x-unknown, permessage-deflate; client_max_window_bits\r\n\r\n";
    let head = |args: &[&str]| {
        let d = Daemon::start(args);
        let mut c = Raw::connect(d.addr);
        c.send(replace("\r\n\r\n", offer).as_bytes());
        let (status, head, _) = c.read_response();
        assert_eq!(status, 101);
        head.to_ascii_lowercase()
    };
    // By default permessage-deflate in shared mode: no context takeover
    // either way (RFC 7692 §7.1.1); no subprotocol is configured.
    let shared = head(&[]);
    assert!(!shared.contains("sec-websocket-protocol"), "{shared}");
    assert!(
        shared.contains("\r\nsec-websocket-extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"),
        "{shared}"
    );
    // Dedicated: takeover kept where the client allows it.
    let dedicated = head(&["--deflate", "dedicated"]);
    assert!(
        dedicated.contains("\r\nsec-websocket-extensions: permessage-deflate"),
        "{dedicated}"
    );
    assert!(!dedicated.contains("no_context_takeover"), "{dedicated}");
    // Off: every offer declined.
    let off = head(&["--deflate", "off"]);
    assert!(!off.contains("sec-websocket-extensions"), "{off}");
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

#[test]
fn subprotocols_in_server_preference_order_with_tungstenite() {
    use tungstenite::client::IntoClientRequest;
    let d = Daemon::start(&["--subprotocol", "graphql-ws", "--subprotocol", "chat"]);
    let connect = |offer: &str| {
        let mut req = d.url("/echo").into_client_request().unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", offer.parse().unwrap());
        tungstenite::connect(req).map_err(|e| e.to_string())
    };
    // The client prefers chat; the server's order wins. (No space after
    // the commas: tungstenite 0.24 does not trim the offers it compares.)
    let (mut ws, resp) = connect("chat,graphql-ws").expect("handshake");
    assert_eq!(resp.headers()["sec-websocket-protocol"], "graphql-ws");
    ws.send(tungstenite::Message::text("hi")).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("hi"));
    let (_, resp) = connect("mqtt,chat").expect("handshake");
    assert_eq!(resp.headers()["sec-websocket-protocol"], "chat");
    // None matches: the server selects none, and tungstenite (like every
    // browser) fails the connection because it asked for one.
    assert!(connect("mqtt").is_err());
    let mut c = Raw::connect(d.addr);
    c.send(replace("\r\n\r\n", "\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n").as_bytes());
    let (status, head, _) = c.read_response();
    assert_eq!(status, 101);
    assert!(!head.to_ascii_lowercase().contains("sec-websocket-protocol"), "{head}");
}

#[test]
fn http_semantics_head_allow_expect_bearer_and_origin_on_publish() {
    let d = Daemon::start(&["--publish-token", "t0k", "--allow-origin", "https://good.example"]);
    // HEAD of an error: the head only, with the GET's Content-Length.
    let mut c = Raw::connect(d.addr);
    c.send(b"HEAD /nowhere HTTP/1.1\r\nHost: x\r\n\r\n");
    let (status, head, _) = c.read_response_head();
    assert_eq!(status, 404);
    assert!(head.contains("Content-Length: "), "{head}");
    c.expect_eof(); // no body bytes before the end
                    // 405 lists every method the path takes.
    let head = refused(&d, &replace("GET /echo", "PUT /broadcast/r"), 405);
    assert!(head.contains("\r\nAllow: GET, POST\r\n"), "{head}");
    let head = refused(&d, "DELETE /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 405);
    assert!(head.contains("\r\nAllow: GET, HEAD\r\n"), "{head}");
    // Expect: 100-continue gets its 100 before the body is sent, and the
    // scheme of Authorization is case-insensitive.
    let mut member = Raw::open_path(d.addr, "/broadcast/r");
    let mut c = Raw::connect(d.addr);
    c.send(b"POST /broadcast/r HTTP/1.1\r\nHost: x\r\nauthorization: bEaReR t0k\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let (status, _, _) = c.read_response_head();
    assert_eq!(status, 100);
    c.send(b"hello");
    assert_eq!(c.read_response().0, 202);
    assert_eq!(member.read_frame().payload, b"hello");
    // Another expectation: 417.
    refused(
        &d,
        "POST /broadcast/r HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\nContent-Length: 1\r\n\r\n",
        417,
    );
    // A browser page from another origin may not publish (CSRF).
    let publish = |origin: &str| {
        let mut c = Raw::connect(d.addr);
        c.send(format!("POST /broadcast/r HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0k\r\nOrigin: {origin}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx").as_bytes());
        c.read_response().0
    };
    assert_eq!(publish("https://evil.example"), 403);
    assert_eq!(publish("https://good.example"), 202);
    // ...nor join a room.
    refused(
        &d,
        &replace("GET /echo", "GET /broadcast/r").replacen("\r\n\r\n", "\r\nOrigin: https://evil.example\r\n\r\n", 1),
        403,
    );
}
