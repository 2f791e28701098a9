//! Table tests of the session: every vector is fed whole, split at every
//! offset into two inputs, and one byte at a time, and must give the same
//! events and the same output bytes each way.

use super::*;
use crate::proto::frame::{encode, write};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Msg(MessageKind, Vec<u8>),
    Zipped(MessageKind, Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Closed(Option<u16>, String),
    Fail(u16),
}
use Ev::*;

fn text(s: &str) -> Ev {
    Msg(MessageKind::Text, s.as_bytes().to_vec())
}

/// A masked client frame.
fn cf(fin: bool, op: Opcode, payload: &[u8]) -> Vec<u8> {
    let mut v = encode(fin, op, payload.len() as u64, Some(KEY)).as_slice().to_vec();
    let at = v.len();
    v.extend_from_slice(payload);
    mask::apply(&mut v[at..], KEY, 0);
    v
}

/// A raw frame with arbitrary first byte (reserved bits / opcodes).
fn raw(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = cf(true, Opcode::Binary, payload);
    v[0] = b0;
    v
}

/// An unmasked server frame, as the session should write it.
fn sf(op: Opcode, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    write(&mut v, op, payload, None);
    v
}

fn close_body(code: u16, reason: &str) -> Vec<u8> {
    let mut b = code.to_be_bytes().to_vec();
    b.extend_from_slice(reason.as_bytes());
    b
}

fn drive(mut s: Session, limits: &Limits, chunks: &[&[u8]]) -> (Vec<Ev>, Vec<u8>) {
    let mut events = Vec::new();
    let mut out = Vec::new();
    for c in chunks {
        let mut buf = c.to_vec();
        let mut pos = 0;
        loop {
            match s.handle_input(limits, &mut buf, &mut pos, &mut out) {
                Ok(Some(ev)) => events.push(match ev {
                    Event::Message(k, p) => Msg(k, p.to_vec()),
                    Event::Compressed(k, p) => Zipped(k, p.to_vec()),
                    Event::Ping(p) => Ping(p.to_vec()),
                    Event::Pong(p) => Pong(p.to_vec()),
                    Event::Closed { code, reason } => Closed(code, reason.to_string()),
                }),
                Ok(None) => {
                    assert_eq!(pos, buf.len(), "Ok(None) must consume the input");
                    break;
                }
                Err(e) => events.push(Fail(e.code)),
            }
        }
    }
    (events, out)
}

/// Feeds `input` every way and checks events and output.
fn check_with(role: Role, limits: Limits, input: &[u8], events: &[Ev], out: &[u8]) {
    check_sessions(role, false, limits, input, events, out)
}

/// [`check_with`], for a session with permessage-deflate negotiated or not.
fn check_sessions(role: Role, deflate: bool, limits: Limits, input: &[u8], events: &[Ev], out: &[u8]) {
    let new = || {
        let mut s = match role {
            Role::Server => Session::server(),
            Role::Client => Session::client(1),
        };
        if deflate {
            s.allow_compression();
        }
        s
    };
    let whole = drive(new(), &limits, &[input]);
    assert_eq!(whole.0, events, "events for {input:x?}");
    match role {
        Role::Server => assert_eq!(whole.1, out, "output for {input:x?}"),
        // A client masks what it sends (§5.3), with keys of its own: the
        // same frames once unmasked, each masked.
        Role::Client => assert_eq!(unmask_all(&whole.1), out, "output for {input:x?}"),
    }
    for cut in 0..=input.len() {
        let split = drive(new(), &limits, &[&input[..cut], &input[cut..]]);
        assert_eq!(split, whole, "split at {cut} of {input:x?}");
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(drive(new(), &limits, &bytes), whole, "byte at a time: {input:x?}");
}

/// Client output in server form: each frame checked to be masked, then
/// unmasked and written without a mask.
fn unmask_all(mut bytes: &[u8]) -> Vec<u8> {
    let mut plain = Vec::new();
    while !bytes.is_empty() {
        let Ok(frame::Decoded::Complete(h, n)) = frame::decode(bytes) else {
            panic!("a whole frame: {bytes:x?}")
        };
        let key = h.mask.expect("client frames are masked (§5.1)");
        let mut payload = bytes[n..n + h.len as usize].to_vec();
        mask::apply(&mut payload, key, 0);
        let op = Opcode::from_u8(h.opcode).unwrap();
        let mut f = encode(h.fin, op, payload.len() as u64, None).as_slice().to_vec();
        f.extend_from_slice(&payload);
        plain.extend_from_slice(&f);
        bytes = &bytes[n + h.len as usize..];
    }
    plain
}

fn check(input: &[u8], events: &[Ev], out: &[u8]) {
    check_with(Role::Server, Limits::default(), input, events, out);
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn rfc_5_7_single_frame_masked_text() {
    check(
        &[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58],
        &[text("Hello")],
        &[],
    );
}

#[test]
fn rfc_5_7_fragmented_text() {
    let input = cat(&[cf(false, Opcode::Text, b"Hel"), cf(true, Opcode::Continuation, b"lo")]);
    check(&input, &[text("Hello")], &[]);
}

#[test]
fn rfc_5_7_ping_gets_the_unmasked_pong() {
    // §5.7: "Unmasked Pong response": 0x8a 0x05 0x48 0x65 0x6c 0x6c 0x6f
    check(
        &cf(true, Opcode::Ping, b"Hello"),
        &[Ping(b"Hello".to_vec())],
        &[0x8a, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f],
    );
}

#[test]
fn length_forms_and_binary() {
    for len in [0usize, 1, 125, 126, 127, 256, 65535, 65536, 70000] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let input = cf(true, Opcode::Binary, &payload);
        // Splitting a 70 KB frame at every offset is slow; the big ones are
        // split at a sample of offsets instead.
        if len <= 256 {
            check(&input, &[Msg(MessageKind::Binary, payload)], &[]);
        } else {
            let whole = drive(Session::server(), &Limits::default(), &[&input]);
            assert_eq!(whole.0, [Msg(MessageKind::Binary, payload.clone())]);
            for cut in [1, 2, 3, 4, 5, 9, 13, 14, 15, 1000, input.len() - 1] {
                let split = drive(Session::server(), &Limits::default(), &[&input[..cut], &input[cut..]]);
                assert_eq!(split, whole, "len {len} cut {cut}");
            }
        }
    }
}

#[test]
fn empty_messages_and_empty_fragments() {
    check(&cf(true, Opcode::Text, b""), &[text("")], &[]);
    let input = cat(&[
        cf(false, Opcode::Text, b""),
        cf(false, Opcode::Continuation, b"ab"),
        cf(false, Opcode::Continuation, b""),
        cf(true, Opcode::Continuation, b"c"),
    ]);
    check(&input, &[text("abc")], &[]);
}

#[test]
fn control_frames_inside_a_fragmented_message() {
    let input = cat(&[
        cf(false, Opcode::Text, b"fragment1"),
        cf(true, Opcode::Ping, b"p"),
        cf(false, Opcode::Continuation, b"fragment2"),
        cf(true, Opcode::Pong, b"q"),
        cf(true, Opcode::Continuation, b"fragment3"),
        cf(true, Opcode::Binary, b"\x00\xff"),
    ]);
    check(
        &input,
        &[
            Ping(b"p".to_vec()),
            Pong(b"q".to_vec()),
            text("fragment1fragment2fragment3"),
            Msg(MessageKind::Binary, vec![0, 255]),
        ],
        &sf(Opcode::Pong, b"p"),
    );
}

#[test]
fn several_messages_in_one_input() {
    let input = cat(&[
        cf(true, Opcode::Text, b"a"),
        cf(true, Opcode::Text, b"bc"),
        cf(true, Opcode::Binary, b"d"),
    ]);
    check(
        &input,
        &[text("a"), text("bc"), Msg(MessageKind::Binary, b"d".to_vec())],
        &[],
    );
}

fn fail_out(code: u16, reason: &str) -> Vec<u8> {
    sf(Opcode::Close, &close_body(code, reason))
}

#[test]
fn protocol_errors_table() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (sf(Opcode::Text, b"unmasked"), "client frame not masked"),
        (raw(0x80 | 0x40 | 0x1, b"x"), "reserved bits set"),
        (raw(0x80 | 0x20 | 0x1, b"x"), "reserved bits set"),
        (raw(0x80 | 0x10 | 0x1, b"x"), "reserved bits set"),
        (raw(0x83, b""), "reserved opcode"),
        (raw(0x87, b""), "reserved opcode"),
        (raw(0x8B, b""), "reserved opcode"),
        (raw(0x8F, b""), "reserved opcode"),
        (
            cf(true, Opcode::Ping, &[b'x'; 126]),
            "control frame longer than 125 bytes",
        ),
        (cf(false, Opcode::Ping, b"x"), "fragmented control frame"),
        (
            cf(true, Opcode::Continuation, b"x"),
            "continuation frame without a message",
        ),
        (
            cat(&[cf(false, Opcode::Text, b"a"), cf(true, Opcode::Text, b"b")]),
            "new message inside a fragmented message",
        ),
        (
            vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4],
            "64-bit length with the top bit set",
        ),
        (cf(true, Opcode::Close, b"\x03"), "close frame body of one byte"),
        (cf(true, Opcode::Close, &close_body(1005, "")), "invalid close code"),
        (cf(true, Opcode::Close, &close_body(999, "")), "invalid close code"),
        (cf(true, Opcode::Close, &close_body(5000, "")), "invalid close code"),
        (cf(true, Opcode::Close, b"\x03\xe8\xff"), "close reason is not UTF-8"),
    ];
    for (input, reason) in cases {
        // Whatever follows the bad frame is never looked at (§7.1.7).
        let input = cat(&[input, cf(true, Opcode::Text, b"after"), b"\xff\xff garbage".to_vec()]);
        check(&input, &[Fail(1002)], &fail_out(1002, reason));
    }
}

#[test]
fn close_handshake_echoes_the_code() {
    for code in [1000u16, 1001, 1003, 1007, 1011, 3000, 4999] {
        let input = cat(&[
            cf(true, Opcode::Close, &close_body(code, "bye")),
            cf(true, Opcode::Text, b"ignored"),
        ]);
        check(
            &input,
            &[Closed(Some(code), "bye".into())],
            &sf(Opcode::Close, &code.to_be_bytes()),
        );
    }
    check(
        &cf(true, Opcode::Close, b""),
        &[Closed(None, String::new())],
        &sf(Opcode::Close, b""),
    );
}

#[test]
fn invalid_utf8_fails_fast() {
    // A single text frame declaring 1000 bytes whose 5th byte is invalid:
    // the failure comes with the first 5 payload bytes, not the last.
    let mut payload = b"abcd\xff".to_vec();
    payload.resize(1000, b'a');
    let frame = cf(true, Opcode::Text, &payload);
    let head = &frame[..8 + 5]; // 2 + 2 length + 4 mask, then 5 bytes
    check(head, &[Fail(1007)], &fail_out(1007, "invalid UTF-8 in text message"));

    // Mid-fragment: first fragment valid, second invalid, final never sent.
    let input = cat(&[
        cf(false, Opcode::Text, b"hello"),
        cf(false, Opcode::Continuation, b"\xce\xba\xed\xa0\x80"),
    ]);
    check(&input, &[Fail(1007)], &fail_out(1007, "invalid UTF-8 in text message"));

    // Truncated code point at the end of the message.
    check(
        &cf(true, Opcode::Text, b"a\xe2\x82"),
        &[Fail(1007)],
        &fail_out(1007, "text message ends inside a code point"),
    );

    // Binary messages are not validated.
    check(
        &cf(true, Opcode::Binary, b"\xff"),
        &[Msg(MessageKind::Binary, vec![0xff])],
        &[],
    );
}

#[test]
fn code_point_split_across_fragments_passes() {
    let euro = "€".as_bytes(); // e2 82 ac
    let input = cat(&[
        cf(false, Opcode::Text, &euro[..1]),
        cf(false, Opcode::Continuation, &euro[1..2]),
        cf(true, Opcode::Continuation, &euro[2..]),
    ]);
    check(&input, &[text("€")], &[]);
}

#[test]
fn size_limits_on_the_declared_length() {
    let limits = Limits {
        max_frame: 100,
        max_message: 150,
    };
    // Only the header of a too-long frame is needed to reject it.
    let big = cf(true, Opcode::Binary, &[0; 101]);
    check_with(
        Role::Server,
        limits,
        &big[..8],
        &[Fail(1009)],
        &fail_out(1009, "frame exceeds the size limit"),
    );
    // ...and one that is all there (a whole frame takes a fast path) too.
    check_with(
        Role::Server,
        limits,
        &big,
        &[Fail(1009)],
        &fail_out(1009, "frame exceeds the size limit"),
    );
    let small_messages = Limits {
        max_frame: 100,
        max_message: 10,
    };
    check_with(
        Role::Server,
        small_messages,
        &cf(true, Opcode::Binary, &[0; 11]),
        &[Fail(1009)],
        &fail_out(1009, "message exceeds the size limit"),
    );
    let input = cat(&[
        cf(false, Opcode::Binary, &[1; 100]),
        cf(true, Opcode::Continuation, &[2; 51]),
    ]);
    check_with(
        Role::Server,
        limits,
        &input[..input.len() - 51],
        &[Fail(1009)],
        &fail_out(1009, "message exceeds the size limit"),
    );
    let ok = cat(&[
        cf(false, Opcode::Binary, &[1; 100]),
        cf(true, Opcode::Continuation, &[2; 50]),
    ]);
    let mut expect = vec![1; 100];
    expect.extend_from_slice(&[2; 50]);
    check_with(Role::Server, limits, &ok, &[Msg(MessageKind::Binary, expect)], &[]);
}

#[test]
fn server_initiated_close() {
    let mut s = Session::server();
    let mut out = Vec::new();
    s.close(1001, "going away", &mut out);
    assert_eq!(out, fail_out(1001, "going away"));
    assert!(!s.is_open() && !s.is_closed());
    // No more data, no pongs once Close is sent.
    out.clear();
    assert!(!s.send(MessageKind::Text, b"x", &mut out));
    let mut input = cat(&[
        cf(true, Opcode::Ping, b"p"),
        cf(true, Opcode::Close, &close_body(1001, "")),
    ]);
    let mut pos = 0;
    let limits = Limits::default();
    assert_eq!(
        s.handle_input(&limits, &mut input, &mut pos, &mut out),
        Ok(Some(Event::Ping(b"p")))
    );
    assert_eq!(
        s.handle_input(&limits, &mut input, &mut pos, &mut out),
        Ok(Some(Event::Closed {
            code: Some(1001),
            reason: ""
        }))
    );
    assert!(out.is_empty(), "the peer's Close answers ours; nothing is sent back");
    assert!(s.is_closed());
}

#[test]
fn client_role_accepts_unmasked_and_rejects_masked() {
    let limits = Limits::default();
    check_with(Role::Client, limits, &sf(Opcode::Text, b"hi"), &[text("hi")], &[]);
    check_with(
        Role::Client,
        limits,
        &cf(true, Opcode::Text, b"hi"),
        &[Fail(1002)],
        &fail_out(1002, "server frame masked"),
    );
    // The client's answers are masked: a Pong to a Ping, a Close to a Close.
    check_with(
        Role::Client,
        limits,
        &sf(Opcode::Ping, b"ping?"),
        &[Ping(b"ping?".to_vec())],
        &sf(Opcode::Pong, b"ping?"),
    );
    check_with(
        Role::Client,
        limits,
        &sf(Opcode::Close, &close_body(1000, "bye")),
        &[Closed(Some(1000), "bye".into())],
        &sf(Opcode::Close, &1000u16.to_be_bytes()),
    );
    // What a client sends is masked, and a server session reads it back.
    let mut c = Session::client(42);
    let mut wire = Vec::new();
    assert!(c.send(MessageKind::Binary, b"payload", &mut wire));
    assert!(c.ping(b"p", &mut wire));
    let (ev, _) = drive(Session::server(), &limits, &[&wire]);
    assert_eq!(ev, [Msg(MessageKind::Binary, b"payload".to_vec()), Ping(b"p".to_vec())]);
}

#[test]
fn gathered_buffers_are_released_after_delivery() {
    let mut s = Session::server();
    let limits = Limits::default();
    let frame = cf(true, Opcode::Binary, &[7; 300]);
    let mut out = Vec::new();
    let (mut a, mut b) = (frame[..100].to_vec(), frame[100..].to_vec());
    let mut pos = 0;
    assert_eq!(s.handle_input(&limits, &mut a, &mut pos, &mut out), Ok(None));
    assert!(s.buffered() > 0);
    pos = 0;
    assert!(matches!(
        s.handle_input(&limits, &mut b, &mut pos, &mut out),
        Ok(Some(Event::Message(..)))
    ));
    assert_eq!(s.handle_input(&limits, &mut b, &mut pos, &mut out), Ok(None));
    assert_eq!(s.buffered(), 0);
}

#[test]
fn session_is_small() {
    assert!(
        core::mem::size_of::<Session>() <= 64,
        "{}",
        core::mem::size_of::<Session>()
    );
}

/// A masked client frame with reserved bits `rsv` (RSV1 = 4).
fn rsv_frame(fin: bool, rsv: u8, op: Opcode, payload: &[u8]) -> Vec<u8> {
    let mut v = cf(fin, op, payload);
    v[0] |= rsv << 4;
    v
}

#[test]
fn permessage_deflate_rsv1_rules() {
    let limits = Limits::default();
    let check = |deflate, input: &[u8], events: &[Ev], out: &[u8]| {
        check_sessions(Role::Server, deflate, limits, input, events, out)
    };
    // RFC 7692 §6: RSV1 on a first data frame marks the message compressed;
    // it is handed out as it came (not UTF-8 checked: that is for the
    // inflated text), gathered across its fragments.
    let raw = b"\xff\x00 not text";
    check(
        true,
        &rsv_frame(true, 4, Opcode::Text, raw),
        &[Zipped(MessageKind::Text, raw.to_vec())],
        &[],
    );
    let frags = cat(&[
        rsv_frame(false, 4, Opcode::Binary, b"ab"),
        cf(true, Opcode::Continuation, b"cd"),
    ]);
    check(true, &frags, &[Zipped(MessageKind::Binary, b"abcd".to_vec())], &[]);
    // Uncompressed messages still come as messages.
    check(true, &cf(true, Opcode::Text, b"plain"), &[text("plain")], &[]);
    // "MUST NOT set the Per-Message Compressed bit of control frames and
    // non-first fragments", nor RSV2/RSV3; and RSV1 without the extension.
    let bad = fail_out(1002, "reserved bits set");
    let continued = cat(&[
        rsv_frame(false, 4, Opcode::Binary, b"ab"),
        rsv_frame(true, 4, Opcode::Continuation, b"cd"),
    ]);
    check(true, &continued, &[Fail(1002)], &bad);
    check(true, &rsv_frame(true, 4, Opcode::Ping, b"p"), &[Fail(1002)], &bad);
    check(true, &rsv_frame(true, 2, Opcode::Text, b"t"), &[Fail(1002)], &bad);
    check(true, &rsv_frame(true, 6, Opcode::Text, b"t"), &[Fail(1002)], &bad);
    check(false, &rsv_frame(true, 4, Opcode::Text, b"t"), &[Fail(1002)], &bad);
}

/// The sender's side of RFC 7692 §6: RSV1 on the one frame, masked like
/// any client frame, and read back as compressed by a session that
/// negotiated the extension.
#[test]
fn send_compressed_sets_rsv1_and_masks() {
    let payload = b"\xf2\x48\xcd\xc9\xc9\x07\x00"; // "Hello", deflated.
    for role in [Role::Client, Role::Server] {
        let mut s = match role {
            Role::Client => Session::client(7),
            Role::Server => Session::server(),
        };
        let mut out = Vec::new();
        assert!(
            !s.send_compressed(MessageKind::Text, payload, &mut out),
            "not negotiated"
        );
        assert!(out.is_empty());
        s.allow_compression();
        assert!(s.send_compressed(MessageKind::Text, payload, &mut out));
        let Ok(frame::Decoded::Complete(h, n)) = frame::decode(&out) else {
            panic!("one whole frame: {out:x?}")
        };
        assert_eq!((h.fin, h.rsv, h.opcode), (true, 0b100, 0x1));
        assert_eq!(h.mask.is_some(), role == Role::Client, "§5.1");
        assert_eq!(n + payload.len(), out.len());
        // The other end, with the extension, gets the payload as sent.
        let mut peer = match role {
            Role::Client => Session::server(),
            Role::Server => Session::client(1),
        };
        peer.allow_compression();
        let (events, _) = drive(peer, &Limits::default(), &[&out]);
        assert_eq!(events, [Zipped(MessageKind::Text, payload.to_vec())]);
        // Nothing once closing.
        s.close(1000, "", &mut out);
        let len = out.len();
        assert!(!s.send_compressed(MessageKind::Binary, payload, &mut out));
        assert_eq!(out.len(), len);
    }
}
