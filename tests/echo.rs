//! Echo over real sockets: an independent client (tungstenite) for the
//! well-formed cases, the raw client for the malformed ones.

mod common;
use common::{close_payload, Daemon, Raw};
use std::net::TcpStream;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

fn client(d: &Daemon, path: &str) -> WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>> {
    let config = tungstenite::protocol::WebSocketConfig {
        max_message_size: Some(64 << 20),
        max_frame_size: Some(64 << 20),
        ..Default::default()
    };
    let (ws, resp) = tungstenite::client::connect_with_config(d.url(path), Some(config), 3).expect("connect");
    assert_eq!(resp.status(), 101);
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(common::DEADLINE)).unwrap();
    }
    ws
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

#[test]
fn text_and_binary_at_boundary_sizes() {
    let d = Daemon::start(&[]);
    for path in ["/echo", "/"] {
        let mut ws = client(&d, path);
        for len in [0, 1, 125, 126, 127, 65535, 65536, 1 << 20] {
            let bin = pattern(len);
            ws.send(Message::binary(bin.clone())).unwrap();
            assert_eq!(ws.read().unwrap(), Message::binary(bin), "binary {len}");
            let text: String = "aé€𐍈".chars().cycle().take(len / 2).collect();
            ws.send(Message::text(text.clone())).unwrap();
            assert_eq!(ws.read().unwrap(), Message::text(text), "text {len}");
        }
        ws.close(None).unwrap();
    }
}

#[test]
fn fragmented_input_comes_back_as_one_frame() {
    let d = Daemon::start(&[]);
    let mut c = Raw::open(d.addr);
    c.send_frame(false, 1, b"frag");
    c.send_frame(true, 9, b"ping in the middle");
    c.send_frame(false, 0, "ment€".as_bytes());
    c.send_frame(true, 0, b"ed");
    let pong = c.read_frame();
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (0xA, &b"ping in the middle"[..])
    );
    let f = c.read_frame();
    assert_eq!(
        (f.fin, f.opcode, f.payload.as_slice()),
        (true, 1, "fragment€ed".as_bytes())
    );
}

#[test]
fn ping_pong_with_tungstenite() {
    let d = Daemon::start(&[]);
    let mut ws = client(&d, "/echo");
    ws.send(Message::Ping(b"are you there".to_vec())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::Pong(b"are you there".to_vec()));
}

#[test]
fn close_handshake_echoes_the_code_then_server_closes_tcp() {
    let d = Daemon::start(&[]);
    let mut c = Raw::open(d.addr);
    c.send_frame(true, 8, &close_payload(4000, "done"));
    let f = c.read_frame();
    assert_eq!(f.close_code(), Some(4000));
    c.expect_eof();

    // The same with tungstenite, which checks the handshake itself.
    let mut ws = client(&d, "/echo");
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .unwrap();
    loop {
        match ws.read() {
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("unclean close: {e}"),
        }
    }
}

/// The server's last word (a Close, a closing response) must end with a FIN
/// even when input it will never use is still arriving: it shuts its
/// sending side and reads until our FIN (lingering). Closing the socket
/// with unread input would send a reset instead, which `expect_eof`
/// rejects and which can destroy the last word before we read it.
#[test]
fn the_last_word_ends_with_a_fin_while_unread_input_keeps_coming() {
    let d = Daemon::start(&[]);
    // More than one read of the server's (64 KiB), sent with the Close.
    let junk = common::masked_frame(true, 2, &[0u8; 200 << 10]);
    let mut c = Raw::open(d.addr);
    let mut bytes = common::masked_frame(true, 8, &close_payload(4000, "done"));
    bytes.extend_from_slice(&junk);
    c.send(&bytes);
    assert_eq!(c.read_frame().close_code(), Some(4000));
    c.expect_eof();
    // The same after a response that closes the connection.
    let mut c = Raw::connect(d.addr);
    let mut bytes = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec();
    bytes.extend_from_slice(&junk);
    c.send(&bytes);
    let (status, head, _) = c.read_response();
    assert_eq!(status, 200);
    assert!(head.contains("Connection: close"), "{head}");
    c.expect_eof();
}

#[test]
fn close_frame_table() {
    let d = Daemon::start(&[]);
    let mut bad_utf8 = close_payload(1000, "");
    bad_utf8.push(0xff);
    let cases: Vec<(Vec<u8>, Option<u16>)> = vec![
        (vec![], None),
        (close_payload(1000, "\u{0}ok"), Some(1000)),
        (close_payload(3000, ""), Some(3000)),
        (vec![3u8], Some(1002)),
        (close_payload(1005, ""), Some(1002)),
        (close_payload(1015, ""), Some(1002)),
        (close_payload(2999, ""), Some(1002)),
        (close_payload(5000, ""), Some(1002)),
        (bad_utf8, Some(1002)),
    ];
    for (body, expect) in cases {
        let mut c = Raw::open(d.addr);
        c.send_frame(true, 8, &body);
        let f = c.read_frame();
        assert_eq!(f.close_code(), expect, "{body:x?}");
        c.expect_eof();
    }
}

#[test]
fn protocol_errors_close_with_1002() {
    let d = Daemon::start(&[]);
    // Unmasked client frame.
    let mut c = Raw::open(d.addr);
    c.send(&[0x81, 0x02, b'h', b'i']);
    assert_eq!(c.read_frame().close_code(), Some(1002));
    c.expect_eof();
    // Reserved bit, reserved opcode, continuation out of nowhere, long ping.
    for (first, opcode, len) in [(0xC1u8, 1u8, 1usize), (0x83, 3, 0), (0x80, 0, 1), (0x89, 9, 126)] {
        let mut c = Raw::open(d.addr);
        let mut frame = common::masked_frame(true, opcode, &vec![b'x'; len]);
        frame[0] = first;
        c.send(&frame);
        assert_eq!(c.read_frame().close_code(), Some(1002), "{first:x}");
        c.expect_eof();
    }
}

#[test]
fn oversize_message_gets_1009_before_it_arrives() {
    let d = Daemon::start(&["--max-message-size", "1000", "--max-frame-size", "800"]);
    // Frame over the frame limit: only its header is sent.
    let mut c = Raw::open(d.addr);
    c.send(&common::masked_frame(true, 2, &[0; 801])[..8]);
    assert_eq!(c.read_frame().close_code(), Some(1009));
    c.expect_eof();
    // Fragments over the message limit.
    let mut c = Raw::open(d.addr);
    c.send_frame(false, 2, &[0; 600]);
    c.send(&common::masked_frame(true, 0, &[0; 401])[..8]);
    assert_eq!(c.read_frame().close_code(), Some(1009));
    c.expect_eof();
    // Exactly at the limit is fine.
    let mut c = Raw::open(d.addr);
    c.send_frame(false, 2, &[1; 600]);
    c.send_frame(true, 0, &[2; 400]);
    assert_eq!(c.read_frame().payload.len(), 1000);
}

#[test]
fn invalid_utf8_mid_fragment_gets_1007_at_once() {
    let d = Daemon::start(&[]);
    let mut c = Raw::open(d.addr);
    c.send_frame(false, 1, b"valid start ");
    // The message never finishes: the verdict must not wait for it.
    c.send_frame(false, 0, b"\xce\xba\xed\xa0\x80");
    assert_eq!(c.read_frame().close_code(), Some(1007));
    c.expect_eof();
    // And in the middle of a single frame that is still arriving.
    let mut c = Raw::open(d.addr);
    let mut payload = b"abc\xff".to_vec();
    payload.resize(5000, b'a');
    let frame = common::masked_frame(true, 1, &payload);
    c.send(&frame[..8 + 10]);
    assert_eq!(c.read_frame().close_code(), Some(1007));
    c.expect_eof();
}

#[test]
fn a_thousand_connections_at_once() {
    let d = Daemon::start(&[]);
    let mut conns: Vec<Raw> = (0..1000).map(|_| Raw::open(d.addr)).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.send_frame(true, 1, format!("hello from {i}").as_bytes());
    }
    for (i, c) in conns.iter_mut().enumerate() {
        assert_eq!(c.read_frame().payload, format!("hello from {i}").as_bytes());
    }
    // All still open: a second round trip on each.
    for c in conns.iter_mut() {
        c.send_frame(true, 2, &[0xAB; 300]);
        assert_eq!(c.read_frame().payload, vec![0xAB; 300]);
    }
}

#[test]
fn a_client_that_resets_mid_frame_harms_nobody() {
    let d = Daemon::start(&[]);
    let mut bystander = Raw::open(d.addr);
    for _ in 0..20 {
        let mut c = Raw::open(d.addr);
        // A ping and half a frame in one segment; once the pong is back the
        // server has read the half frame too.
        let mut bytes = common::masked_frame(true, 9, b"sync");
        bytes.extend_from_slice(&common::masked_frame(true, 2, &[9; 1000])[..300]);
        c.send(&bytes);
        assert_eq!(c.read_frame().opcode, 0xA);
        // SO_LINGER 0: closing sends a reset, not a FIN.
        socket2::SockRef::from(&c.stream)
            .set_linger(Some(std::time::Duration::ZERO))
            .unwrap();
        drop(c);
    }
    bystander.send_frame(true, 1, b"unharmed");
    assert_eq!(bystander.read_frame().payload, b"unharmed");
    // And new connections still work.
    let mut c = Raw::open(d.addr);
    c.send_frame(true, 1, b"fresh");
    assert_eq!(c.read_frame().payload, b"fresh");
}
