//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`) through the
//! same target bodies that `cargo fuzz` runs (`wsloop::fuzzing`), on stable,
//! as an ordinary test; checks that every target is wired up everywhere;
//! and holds the fuzzers' findings as named regression tests.
//!
//! The hand-written seeds come from `write_seed_corpus` below (ignored; run
//! it with `cargo test --test fuzz_corpus -- --ignored write_seed_corpus`
//! after changing it); the other corpus files are a minimised pick of what
//! the fuzzers grew (see fuzz/README.md).

use std::fs;
use std::path::{Path, PathBuf};
use wsloop::fuzzing::{self, TARGETS};
use wsloop::proto::frame::{self, Opcode};
use wsloop::proto::{Event, Limits, Session};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Files of a directory, sorted, so that a failure names the same file
/// every time.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn corpus_replays_cleanly() {
    let mut total = 0;
    for (name, body) in TARGETS {
        let files = files_in(&fuzz_dir().join("corpus").join(name));
        assert!(!files.is_empty(), "no corpus for {name}");
        for f in files {
            let data = fs::read(&f).expect("corpus file");
            let run = std::panic::catch_unwind(|| body(&data));
            assert!(run.is_ok(), "{name} fails on {} ({data:x?})", f.display());
            total += 1;
        }
    }
    assert!(total >= TARGETS.len());
}

/// Adding a target means: a function in `TARGETS`, a one-line file in
/// `fuzz/fuzz_targets/`, a `[[bin]]` in `fuzz/Cargo.toml` (`cargo fuzz
/// add` writes both) and a corpus directory. This test fails until all
/// four agree.
#[test]
fn every_target_is_wired_up() {
    let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    let mut files: Vec<String> = files_in(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .map(|p| p.file_stem().expect("file name").to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut names: Vec<String> = TARGETS.iter().map(|(n, _)| (*n).to_owned()).collect();
    names.sort();
    assert_eq!(files, names, "fuzz/fuzz_targets/*.rs against wsloop::fuzzing::TARGETS");
    for name in &names {
        let src = fs::read_to_string(fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"))).expect("target");
        assert!(
            src.contains(&format!("wsloop::fuzzing::{name}(data)")),
            "fuzz_targets/{name}.rs must call wsloop::fuzzing::{name}"
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"\npath = \"fuzz_targets/{name}.rs\"")),
            "fuzz/Cargo.toml lacks the [[bin]] of {name}"
        );
        assert!(fuzz_dir().join("corpus").join(name).is_dir(), "no fuzz/corpus/{name}/");
    }
}

// ------------------------------------------------------------- findings --

/// The two-fold overshoot of a gathered message's buffer: a 999-byte
/// first fragment and a 1-byte continuation in one read, under
/// `max_message = 1000`, make a buffer of 1998 bytes (`Vec` doubles its
/// capacity). The fuzz
/// targets allow this (`fuzzing::buffered_bound`); un-ignore this test if
/// the session is changed to size the buffer from the declared lengths.
#[test]
fn session_buffers_at_most_max_message() {
    let limits = Limits {
        max_frame: 1000,
        max_message: 1000,
    };
    let key = [1, 2, 3, 4];
    let mut input = Vec::new();
    input.extend_from_slice(frame::encode(false, Opcode::Binary, 999, Some(key)).as_slice());
    input.extend_from_slice(&[0; 999]);
    input.extend_from_slice(frame::encode(true, Opcode::Continuation, 1, Some(key)).as_slice());
    input.push(0);
    let mut s = Session::server();
    let (mut out, mut pos) = (Vec::new(), 0);
    let mut most = 0;
    while let Ok(Some(ev)) = s.handle_input(&limits, &mut input, &mut pos, &mut out) {
        assert!(matches!(ev, Event::Message(_, m) if m.len() == 1000));
        most = most.max(s.buffered());
    }
    assert!(
        most <= 1000 + 256,
        "the session held {most} bytes for a 1000-byte message"
    );
}

/// Found by `response_parser` (split invariance): `ResponseParser::feed`
/// keeps "the server selected an extension" in a local variable, so when
/// the `Sec-WebSocket-Extensions` line and the end of the head arrive in
/// different reads, the failure is forgotten and the handshake succeeds
/// (§4.1: "If the response includes a |Sec-WebSocket-Extensions| header
/// field and this header field indicates the use of an extension that was
/// not present in the client's handshake [...], the client MUST _Fail the
/// WebSocket Connection_"). Un-ignore once the failure is kept in the
/// parser's state.
#[test]
fn response_parser_remembers_an_extension_across_reads() {
    use wsloop::proto::handshake::{ResponseError, ResponseParser};
    use wsloop::proto::http::{HeadLimits, Progress};
    let limits = HeadLimits {
        max_size: 8192,
        max_fields: 100,
    };
    let first = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Extensions: x\r\n";
    let rest =
        b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    let whole = [&first[..], &rest[..]].concat();
    let refused = Err(ResponseError::Invalid("server selected an extension"));
    assert_eq!(
        ResponseParser::new(fuzzing::RESPONSE_KEY).feed(&limits, &whole),
        refused
    );
    let mut p = ResponseParser::new(fuzzing::RESPONSE_KEY);
    assert_eq!(p.feed(&limits, first), Ok(Progress::Partial));
    assert_eq!(p.feed(&limits, rest), refused);
    // The fuzzer's input, minimised: knobs "P/", then a head that is
    // refused for the extension whole, but for lacking Upgrade when split.
    fuzzing::response_parser(b"P/ 101\nSec-WebSocket-Extensions:\n\n");
}

/// Found by `session_server` (an assertion since relaxed): failing the
/// connection through `Session::fail` drops the partial buffers, but a
/// malformed Close body (1-byte body, a code that must not be sent, a
/// reason that is not UTF-8) fails it in `on_control` instead, which
/// leaves them, so a closed session still holds a half-gathered message
/// until it is dropped. Un-ignore once that path releases them too.
#[test]
fn failed_session_holds_no_buffers() {
    let limits = Limits::default();
    let bodies: [&[u8]; 3] = [b"\x03", b"\x03\xed", b"\x03\xe8\xce"];
    for body in bodies {
        let mut input = [masked(false, Opcode::Binary, b"ab"), masked(true, Opcode::Close, body)].concat();
        let mut s = Session::server();
        let (mut out, mut pos) = (Vec::new(), 0);
        assert!(s.handle_input(&limits, &mut input, &mut pos, &mut out).is_err());
        assert!(s.is_closed());
        assert_eq!(s.buffered(), 0, "after a Close body {body:x?}");
    }
}

// -------------------------------------------------------------- seeding --

/// A masked frame as a client sends it.
fn masked(fin: bool, op: Opcode, payload: &[u8]) -> Vec<u8> {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut v = frame::encode(fin, op, payload.len() as u64, Some(key))
        .as_slice()
        .to_vec();
    let at = v.len();
    v.extend_from_slice(payload);
    wsloop::proto::mask::apply(&mut v[at..], key, 0);
    v
}

/// An unmasked frame as a server sends it.
fn plain(fin: bool, op: Opcode, payload: &[u8]) -> Vec<u8> {
    let mut v = frame::encode(fin, op, payload.len() as u64, None).as_slice().to_vec();
    v.extend_from_slice(payload);
    v
}

/// Frame sequences worth starting from, built with `f` (masked for the
/// server role, plain for the client role).
fn session_streams(f: fn(bool, Opcode, &[u8]) -> Vec<u8>) -> Vec<(&'static str, Vec<u8>)> {
    use Opcode::*;
    let close = |code: u16, reason: &str| [&code.to_be_bytes()[..], reason.as_bytes()].concat();
    let mut raw = f(true, Binary, b"x");
    raw[0] = 0xF2; // reserved bits
    vec![
        ("text", f(true, Text, b"Hello")),
        ("binary-126", f(true, Binary, &[7; 300])),
        ("binary-64k", f(true, Binary, &[1; 70_000])[..40].to_vec()),
        (
            "fragmented",
            [f(false, Text, b"Hel"), f(true, Continuation, b"lo")].concat(),
        ),
        (
            "ping-inside-fragments",
            [
                f(false, Binary, b"ab"),
                f(true, Ping, b"p"),
                f(true, Continuation, b"cd"),
            ]
            .concat(),
        ),
        ("ping-pong", [f(true, Ping, b"hi"), f(true, Pong, b"ho")].concat()),
        ("close-code-reason", f(true, Close, &close(1000, "bye"))),
        ("close-empty", [f(true, Close, b""), f(true, Text, b"after")].concat()),
        ("close-one-byte", f(true, Close, b"\x03")),
        ("close-1005", f(true, Close, &close(1005, ""))),
        ("close-bad-utf8", f(true, Close, &close(1000, "\u{3ba}")[..3])),
        (
            "text-bad-utf8",
            f(true, Text, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xed\xa0\x80"),
        ),
        (
            "text-split-code-point",
            [f(false, Text, b"\xe2\x82"), f(true, Continuation, b"\xac")].concat(),
        ),
        ("continuation-alone", f(true, Continuation, b"x")),
        ("long-ping", f(true, Ping, &[0; 126])),
        ("fragmented-ping", f(false, Ping, b"x")),
        ("reserved-bits", raw),
        (
            "length-high-bit",
            vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4],
        ),
        (
            "several",
            [f(true, Text, b"a"), f(true, Binary, b""), f(true, Text, b"")].concat(),
        ),
    ]
}

/// HTTP heads worth starting from.
const REQUEST: &[u8] = b"GET /chat?room=1 HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\n\
Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n\x81\x80\x01\x02\x03\x04";

fn request_heads() -> Vec<(&'static str, Vec<u8>)> {
    let with = |from: &str, to: &str| {
        let s = String::from_utf8_lossy(REQUEST).into_owned();
        assert!(s.contains(from), "{from}");
        s.replacen(from, to, 1).into_bytes()
    };
    vec![
        ("rfc", REQUEST.to_vec()),
        ("bare-lf", REQUEST.iter().copied().filter(|&b| b != b'\r').collect()),
        ("leading-crlf", [&b"\r\n"[..], REQUEST].concat()),
        ("http10", with("HTTP/1.1", "HTTP/1.0")),
        ("http20", with("HTTP/1.1", "HTTP/2.0")),
        ("version-8", with("Version: 13", "Version: 8")),
        ("bad-key", with("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=")),
        (
            "two-keys",
            with("Origin", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin"),
        ),
        ("two-hosts", with("Origin", "Host: b\r\nOrigin")),
        ("obs-fold", with("Origin", " Origin")),
        ("bare-cr", with("\r\nHost", "\rx\r\nHost")),
        ("callback-reject", with("Origin", "!Origin")),
        (
            "post",
            b"POST /publish/room HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\
Authorization: Bearer t\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nhello"
                .to_vec(),
        ),
        (
            "bad-length",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n".to_vec(),
        ),
        (
            "head",
            b"HEAD / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
        ),
        ("not-origin-form", b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
    ]
}

/// Server answers to `fuzzing::RESPONSE_KEY` worth starting from.
fn responses() -> Vec<(&'static str, Vec<u8>)> {
    let ok = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    let with = |from: &str, to: &str| ok.replacen(from, to, 1).into_bytes();
    vec![
        ("ok", ok.as_bytes().to_vec()),
        ("ok-then-frame", [ok.as_bytes(), b"\x81\x02hi"].concat()),
        ("wrong-accept", with("s3pP", "s3pQ")),
        ("no-upgrade", with("Upgrade: websocket\r\n", "")),
        (
            "not-found",
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ),
        ("bad-status", b"HTTP/1.1 1x1 What\r\n\r\n".to_vec()),
    ]
}

/// UTF-8 streams worth starting from.
fn utf8_streams() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("mixed", "a€𐍈ü κόσμε".as_bytes().to_vec()),
        ("surrogate", b"ok\xed\xa0\x80".to_vec()),
        ("overlong", b"\xc0\xaf\xe0\x80\xaf".to_vec()),
        ("above-max", b"\xf4\x90\x80\x80".to_vec()),
        ("last-code-point", b"\xf4\x8f\xbf\xbf".to_vec()),
        ("truncated", b"ab\xe2\x82".to_vec()),
    ]
}

/// Writes `fuzz/corpus/<target>/seed-<name>` for every seed.
#[test]
#[ignore = "writes the seed corpus; run by hand after changing the seeds"]
fn write_seed_corpus() {
    let mut seeds: Vec<(&str, String, Vec<u8>)> = Vec::new();
    for (name, head) in request_heads() {
        // Knobs: [limits, split seed]; limits 0 = the daemon's, 0x0C = 16
        // bytes and at most one field.
        seeds.push(("head_reader", name.into(), [&[0, 3][..], &head].concat()));
        seeds.push(("request_parser", name.into(), [&[0, 5][..], &head].concat()));
    }
    seeds.push(("head_reader", "small-limits".into(), [&[0x0C, 1][..], REQUEST].concat()));
    // Limits knob 4: a 16-byte head fits, 17 bytes do not (ending in a
    // line or not).
    let boundaries: [(&str, &[u8]); 3] = [
        ("size-exact", b"GET / HTTP/1.1\n\n"),
        ("size-over-at-line-end", b"GET /a HTTP/1.1\n\n"),
        ("size-over-mid-line", b"GET / HTTP/1.1\r\nX"),
    ];
    for (name, head) in boundaries {
        seeds.push(("head_reader", name.into(), [&[4, 0][..], head].concat()));
        seeds.push(("request_parser", name.into(), [&[4, 0][..], head].concat()));
    }
    seeds.push((
        "request_parser",
        "small-limits".into(),
        [&[0x0F, 1][..], REQUEST].concat(),
    ));
    for (name, resp) in responses() {
        seeds.push(("response_parser", name.into(), [&[0, 9][..], &resp].concat()));
    }
    for (name, s) in utf8_streams() {
        seeds.push(("utf8", name.into(), [&[3][..], &s].concat()));
    }
    for (role, f) in [
        ("session_server", masked as fn(_, _, &[u8]) -> _),
        ("session_client", plain),
    ] {
        for (name, stream) in session_streams(f) {
            // Knobs: [limits, action, action offset, split seed].
            seeds.push((role, name.into(), [&[0, 0, 0, 7][..], &stream].concat()));
        }
        let two = [f(false, Opcode::Text, b"Hel"), f(true, Opcode::Continuation, b"lo")].concat();
        for (action, label) in [(1, "close"), (2, "ping"), (3, "send")] {
            let knobs = [0, action, 128, 11];
            seeds.push((role, format!("{label}-midway"), [&knobs[..], &two].concat()));
        }
        let big = f(true, Opcode::Binary, &[5; 200]);
        seeds.push((role, "small-limits".into(), [&[0x25, 0, 0, 2][..], &big].concat()));
        // Limits knob 0x20: messages of at most 126 bytes, in two frames.
        for (name, last) in [("message-limit-exact", 26), ("message-limit-over", 27)] {
            let two = [
                f(false, Opcode::Binary, &[1; 100]),
                f(true, Opcode::Continuation, &[2; 27][..last]),
            ];
            seeds.push((role, name.into(), [&[0x20, 0, 0, 5][..], &two.concat()].concat()));
        }
    }
    for (name, stream) in session_streams(masked) {
        seeds.push(("frame_decode", name.into(), stream[..stream.len().min(40)].to_vec()));
    }
    for (name, bytes) in [
        (
            "rfc-masked-hello",
            &[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58][..],
        ),
        ("rfc-64k", &[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]),
        ("non-minimal-126", &[0x82, 0x7E, 0, 5, 1, 2, 3, 4, 5]),
        ("high-bit", &[0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 1]),
        ("one-byte", &[0x81]),
    ] {
        seeds.push(("frame_decode", name.into(), bytes.to_vec()));
    }
    for (target, name, bytes) in seeds {
        let dir = fuzz_dir().join("corpus").join(target);
        fs::create_dir_all(&dir).expect("corpus directory");
        fs::write(dir.join(format!("seed-{name}")), &bytes).expect("seed file");
        // Every seed must pass before it is committed.
        let (_, body) = TARGETS.iter().find(|(n, _)| *n == target).expect("known target");
        body(&bytes);
    }
}
