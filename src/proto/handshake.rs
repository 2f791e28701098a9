//! The opening handshake, RFC 6455 §4.
//!
//! Server side: [`RequestParser`] reads a request head incrementally into a
//! [`Request`]; [`Request::websocket_key`] checks it against §4.2.1 and
//! yields the key, or the HTTP error to answer with; [`write_accept`] and
//! [`write_error`] produce the response bytes.
//!
//! Client side (for `wsflood` and tests): [`write_client_request`] and
//! [`ResponseParser`], which checks the server's answer per §4.1.

use super::http::{self, has_token, split_field, HeadLimits, HeadReader, HttpError, Progress};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

/// §1.3: the GUID concatenated with the client's key before hashing.
pub const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A `Sec-WebSocket-Key` as sent: base64 of 16 bytes, so 24 characters.
pub type Key = [u8; 24];
/// A `Sec-WebSocket-Accept` value: base64 of a SHA-1 digest, 28 characters.
pub type AcceptKey = [u8; 28];

/// §4.2.2 step 5.4: "the base64-encoded SHA-1 of the concatenation of the
/// |Sec-WebSocket-Key| (as a string, not base64-decoded) with the string
/// '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'".
pub fn accept_key(key: &[u8]) -> AcceptKey {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key);
    sha.update(GUID);
    let mut out = [0u8; 28];
    let n = BASE64
        .encode_slice(sha.digest().bytes(), &mut out)
        .expect("28 bytes hold the base64 of 20");
    debug_assert_eq!(n, 28);
    out
}

/// The request method, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Other,
}

/// What the server keeps of a request head: the start line and the fields
/// that matter to it. Everything else is checked for syntax and dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The request target as sent (origin-form: path and query).
    pub target: String,
    /// x in HTTP/1.x.
    pub minor_version: u8,
    pub host: bool,
    pub upgrade_websocket: bool,
    pub connection_upgrade: bool,
    /// `Connection: close`: no further request on this connection.
    pub connection_close: bool,
    pub key: Option<Key>,
    /// Raw `Sec-WebSocket-Version`, if sent.
    pub version: Option<String>,
    pub origin: Option<String>,
    pub content_length: Option<u64>,
    pub transfer_encoding: bool,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    /// Raw `Sec-WebSocket-Protocol` offers (none are selected unless a
    /// service asks for one).
    pub protocols: Option<String>,
    /// A field was malformed in a way that matters only if this turns out to
    /// be an upgrade (e.g. a bad `Sec-WebSocket-Key`); kept so that routing
    /// can first answer 404/405.
    pub defect: Option<HttpError>,
}

impl Request {
    fn new() -> Self {
        Request {
            method: Method::Other,
            target: String::new(),
            minor_version: 1,
            host: false,
            upgrade_websocket: false,
            connection_upgrade: false,
            connection_close: false,
            key: None,
            version: None,
            origin: None,
            content_length: None,
            transfer_encoding: false,
            authorization: None,
            content_type: None,
            protocols: None,
            defect: None,
        }
    }

    /// The path part of the target (before any `?`).
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The query part of the target (after the first `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// Whether the connection may carry another request after this one
    /// (RFC 9112 §9.3: HTTP/1.1 persists unless either side says close).
    pub fn keep_alive(&self) -> bool {
        self.minor_version >= 1 && !self.connection_close
    }

    /// Whether the client asked for an upgrade at all (so that a plain GET
    /// can be told apart from a broken handshake).
    pub fn wants_upgrade(&self) -> bool {
        self.upgrade_websocket || self.key.is_some() || self.version.is_some()
    }

    /// Checks the request as a WebSocket opening handshake (§4.2.1) and
    /// returns the client's key. Method and path are the router's business
    /// and are checked before this.
    pub fn websocket_key(&self) -> Result<Key, HttpError> {
        // §4.2.1 1: "An HTTP/1.1 or higher GET request".
        if self.minor_version < 1 {
            return Err(HttpError::bad("WebSocket needs HTTP/1.1 or later"));
        }
        // 2: "A |Host| header field containing the server's authority."
        if !self.host {
            return Err(HttpError::bad("missing Host header"));
        }
        // 3: "An |Upgrade| header field containing the value "websocket",
        // treated as an ASCII case-insensitive value."
        if !self.upgrade_websocket {
            return Err(HttpError::bad("missing Upgrade: websocket"));
        }
        // 4: "A |Connection| header field that includes the token "Upgrade",
        // treated as an ASCII case-insensitive value."
        if !self.connection_upgrade {
            return Err(HttpError::bad("Connection header lacks the upgrade token"));
        }
        if let Some(defect) = self.defect {
            return Err(defect);
        }
        // 6: "A |Sec-WebSocket-Version| header field, with a value of 13."
        // §4.2.2 4: otherwise answer e.g. 426 with the versions we speak.
        match self.version.as_deref() {
            Some("13") => {}
            Some(_) => {
                return Err(HttpError::new(
                    426,
                    "unsupported Sec-WebSocket-Version; this server speaks 13",
                ))
            }
            None => return Err(HttpError::bad("missing Sec-WebSocket-Version")),
        }
        // 5: "A |Sec-WebSocket-Key| header field with a base64-encoded value
        // that, when decoded, is 16 bytes in length."
        self.key.ok_or(HttpError::bad("missing Sec-WebSocket-Key"))
    }

    fn start_line(&mut self, line: &[u8]) -> Result<(), HttpError> {
        // RFC 9112 §3: request-line = method SP request-target SP HTTP-version
        let mut parts = line.split(|&b| b == b' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(HttpError::bad("malformed request line"));
        };
        if method.is_empty() || !method.iter().all(|&b| http::is_tchar(b)) {
            return Err(HttpError::bad("malformed method"));
        }
        self.method = match method {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            _ => Method::Other,
        };
        // Origin-form only (§3.2.1); we are not a proxy.
        if target.first() != Some(&b'/') || !target.iter().all(|&b| b.is_ascii_graphic()) {
            return Err(HttpError::bad("malformed request target"));
        }
        self.target = String::from_utf8(target.to_vec()).map_err(|_| HttpError::bad("malformed request target"))?;
        self.minor_version = http::parse_version(version)?;
        Ok(())
    }

    fn field(&mut self, line: &[u8]) -> Result<(), HttpError> {
        let (name, value) = split_field(line)?;
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
        if is("host") {
            // RFC 9112 §3.2: more than one Host field → 400.
            if self.host {
                return Err(HttpError::bad("more than one Host header"));
            }
            self.host = true;
        } else if is("upgrade") {
            self.upgrade_websocket |= has_token(value, "websocket");
        } else if is("connection") {
            self.connection_upgrade |= has_token(value, "upgrade");
            self.connection_close |= has_token(value, "close");
        } else if is("sec-websocket-key") {
            // §11.3.1: "MUST NOT appear more than once in an HTTP request."
            if self.key.is_some() || self.defect.is_some() {
                self.defect = Some(HttpError::bad("more than one Sec-WebSocket-Key"));
            } else {
                match decoded_len(value) {
                    Some(16) => {
                        let mut key = [0u8; 24];
                        key.copy_from_slice(value);
                        self.key = Some(key);
                    }
                    _ => self.defect = Some(HttpError::bad("Sec-WebSocket-Key is not base64 of 16 bytes")),
                }
            }
        } else if is("sec-websocket-version") {
            if self.version.is_some() {
                self.defect = Some(HttpError::bad("more than one Sec-WebSocket-Version"));
            }
            self.version = Some(text(value));
        } else if is("origin") {
            self.origin = Some(text(value));
        } else if is("content-length") {
            // RFC 9112 §6.3: an invalid or conflicting length is unrecoverable.
            let n = std::str::from_utf8(value)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(HttpError::bad("invalid Content-Length"))?;
            if self.content_length.is_some_and(|m| m != n) {
                return Err(HttpError::bad("conflicting Content-Length"));
            }
            self.content_length = Some(n);
        } else if is("transfer-encoding") {
            self.transfer_encoding = true;
        } else if is("authorization") {
            self.authorization = Some(text(value));
        } else if is("content-type") {
            self.content_type = Some(text(value));
        } else if is("sec-websocket-protocol") {
            let all = self.protocols.take().map(|p| p + ", ").unwrap_or_default();
            self.protocols = Some(all + &text(value));
        }
        Ok(())
    }
}

/// Decoded length of a base64 value, if it is valid base64.
fn decoded_len(value: &[u8]) -> Option<usize> {
    let mut buf = [0u8; 18];
    if value.len() > 24 {
        return None;
    }
    BASE64.decode_slice(value, &mut buf).ok()
}

/// Reads a request head incrementally (see [`http::HeadReader`]).
#[derive(Debug)]
pub struct RequestParser {
    reader: HeadReader,
    request: Request,
    seen_start: bool,
}

impl Default for RequestParser {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestParser {
    pub fn new() -> Self {
        RequestParser {
            reader: HeadReader::new(),
            request: Request::new(),
            seen_start: false,
        }
    }

    /// Feeds bytes; `Complete(n)` means the head ended after `n` bytes of
    /// `input`, and [`RequestParser::request`] holds it.
    pub fn feed(&mut self, limits: &HeadLimits, input: &[u8]) -> Result<Progress, HttpError> {
        let req = &mut self.request;
        let seen_start = &mut self.seen_start;
        self.reader.feed(limits, input, |line| {
            if *seen_start {
                req.field(line)
            } else {
                *seen_start = true;
                req.start_line(line)
            }
        })
    }

    pub fn request(&self) -> &Request {
        &self.request
    }

    pub fn into_request(self) -> Request {
        self.request
    }

    /// Whether any byte of a request has arrived.
    pub fn started(&self) -> bool {
        self.reader.started()
    }
}

/// Appends the 101 response of §4.2.2 step 5 to `out`. No subprotocol and
/// no extension is selected: §4.2.2 lets the server leave offers
/// unanswered, and echoing one we do not implement would be a lie.
pub fn write_accept(out: &mut Vec<u8>, key: &[u8]) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(&accept_key(key));
    out.extend_from_slice(b"\r\n\r\n");
}

/// Appends the head of an HTTP response announcing a body of `len` bytes
/// (alone, it answers a HEAD request: RFC 9110 §9.3.2). `extra_headers`
/// are full lines, each ending in CRLF.
pub fn write_head(out: &mut Vec<u8>, status: u16, extra_headers: &str, content_type: &str, len: usize, close: bool) {
    use std::io::Write as _;
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n{}{extra_headers}\r\n",
        http::status_text(status),
        if close { "Connection: close\r\n" } else { "" },
    );
}

/// Appends a complete HTTP response to `out`.
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    extra_headers: &str,
    content_type: &str,
    body: &[u8],
    close: bool,
) {
    write_head(out, status, extra_headers, content_type, body.len(), close);
    out.extend_from_slice(body);
}

/// Appends the error response for `err`: a complete response with
/// `Connection: close`, after which the server closes the connection.
/// 426 carries `Sec-WebSocket-Version: 13` (§4.2.2 step 4); 405 carries
/// `Allow`.
pub fn write_error(out: &mut Vec<u8>, err: &HttpError) {
    let extra = match err.status {
        426 => "Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n",
        405 => "Allow: GET\r\n",
        _ => "",
    };
    let mut body = [0u8; 256];
    let n = {
        let msg = err.reason.as_bytes();
        let n = msg.len().min(255);
        body[..n].copy_from_slice(&msg[..n]);
        body[n] = b'\n';
        n + 1
    };
    write_response(out, err.status, extra, "text/plain; charset=utf-8", &body[..n], true);
}

// ---------------------------------------------------------------- client --

/// Appends a client opening handshake (§4.1) for `host` and `path` with the
/// given key (base64 of 16 random bytes, chosen by the caller).
pub fn write_client_request(out: &mut Vec<u8>, host: &str, path: &str, key: &Key) {
    use std::io::Write as _;
    let _ = write!(
        out,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "
    );
    out.extend_from_slice(key);
    out.extend_from_slice(b"\r\n\r\n");
}

/// Encodes 16 key bytes as a `Sec-WebSocket-Key`.
pub fn encode_key(nonce: [u8; 16]) -> Key {
    let mut key = [0u8; 24];
    BASE64
        .encode_slice(nonce, &mut key)
        .expect("24 bytes hold the base64 of 16");
    key
}

/// Why a server's handshake response was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseError {
    /// The server answered with another status (e.g. 404, 503).
    Status(u16),
    /// Malformed response or a failed §4.1 check.
    Invalid(&'static str),
}

/// Reads and checks a server's handshake response (§4.1, "the client MUST
/// validate the server's response").
#[derive(Debug)]
pub struct ResponseParser {
    reader: HeadReader,
    expect: AcceptKey,
    status: u16,
    upgrade: bool,
    connection: bool,
    accept_ok: bool,
}

impl ResponseParser {
    pub fn new(key: &Key) -> Self {
        ResponseParser {
            reader: HeadReader::new(),
            expect: accept_key(key),
            status: 0,
            upgrade: false,
            connection: false,
            accept_ok: false,
        }
    }

    /// `Ok(Complete(n))`: the handshake succeeded and the head used `n`
    /// bytes of `input`; frames may follow.
    pub fn feed(&mut self, limits: &HeadLimits, input: &[u8]) -> Result<Progress, ResponseError> {
        let mut failure = None;
        let progress = self.reader.feed(limits, input, |line| {
            if self.status == 0 {
                // status-line = HTTP-version SP status-code SP [ reason-phrase ]
                let mut parts = line.splitn(3, |&b| b == b' ');
                let (Some(_version), Some(code)) = (parts.next(), parts.next()) else {
                    return Err(HttpError::bad("malformed status line"));
                };
                self.status = std::str::from_utf8(code)
                    .ok()
                    .and_then(|c| c.parse().ok())
                    .filter(|&c| (100..1000).contains(&c))
                    .ok_or(HttpError::bad("malformed status code"))?;
                return Ok(());
            }
            let (name, value) = split_field(line)?;
            if name.eq_ignore_ascii_case(b"upgrade") {
                self.upgrade |= has_token(value, "websocket");
            } else if name.eq_ignore_ascii_case(b"connection") {
                self.connection |= has_token(value, "upgrade");
            } else if name.eq_ignore_ascii_case(b"sec-websocket-accept") {
                self.accept_ok = value == self.expect;
            } else if name.eq_ignore_ascii_case(b"sec-websocket-extensions") {
                // §4.1: extensions we did not ask for fail the connection.
                failure = Some("server selected an extension");
            }
            Ok(())
        });
        let progress = progress.map_err(|e| ResponseError::Invalid(e.reason))?;
        if let Progress::Complete(_) = progress {
            if self.status != 101 {
                return Err(ResponseError::Status(self.status));
            }
            if let Some(f) = failure {
                return Err(ResponseError::Invalid(f));
            }
            if !self.upgrade || !self.connection {
                return Err(ResponseError::Invalid("response lacks Upgrade/Connection"));
            }
            if !self.accept_ok {
                return Err(ResponseError::Invalid("wrong Sec-WebSocket-Accept"));
            }
        }
        Ok(progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_size: 8192,
        max_fields: 100,
    };

    const RFC_REQUEST: &[u8] = b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\n\
Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn rfc_sample_key() {
        // §1.3 / §4.2.2.
        assert_eq!(
            &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    /// Parses `bytes` split at every offset (and one byte at a time) and
    /// checks that every way gives the same outcome.
    fn parse_all_ways(bytes: &[u8]) -> Result<(Request, usize), HttpError> {
        let whole = parse_chunks(&[bytes]);
        for cut in 0..=bytes.len() {
            assert_eq!(parse_chunks(&[&bytes[..cut], &bytes[cut..]]), whole, "cut {cut}");
        }
        let ones: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(parse_chunks(&ones), whole, "byte at a time");
        whole
    }

    /// Returns the request and the total bytes consumed by the head.
    fn parse_chunks(chunks: &[&[u8]]) -> Result<(Request, usize), HttpError> {
        let mut p = RequestParser::new();
        let mut total = 0;
        for c in chunks {
            match p.feed(&LIMITS, c)? {
                Progress::Partial => total += c.len(),
                Progress::Complete(n) => return Ok((p.into_request(), total + n)),
            }
        }
        Err(HttpError::new(0, "incomplete"))
    }

    #[test]
    fn rfc_request_parses_and_is_accepted() {
        let (req, used) = parse_all_ways(RFC_REQUEST).unwrap();
        assert_eq!(used, RFC_REQUEST.len());
        assert_eq!(req.method, Method::Get);
        assert_eq!(req.path(), "/chat");
        assert_eq!(req.origin.as_deref(), Some("http://example.com"));
        assert_eq!(req.protocols.as_deref(), Some("chat, superchat"));
        assert_eq!(&req.websocket_key().unwrap(), b"dGhlIHNhbXBsZSBub25jZQ==");
        let mut out = Vec::new();
        write_accept(&mut out, &req.key.unwrap());
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        // Offered subprotocols are not echoed.
        assert!(!text.to_ascii_lowercase().contains("protocol:"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn trailing_bytes_are_left_for_the_frame_layer() {
        let mut bytes = RFC_REQUEST.to_vec();
        bytes.extend_from_slice(&[0x81, 0x80, 1, 2, 3, 4]);
        let (_, used) = parse_all_ways(&bytes).unwrap();
        assert_eq!(used, RFC_REQUEST.len());
    }

    fn with(replace: &str, by: &str) -> Vec<u8> {
        let s = std::str::from_utf8(RFC_REQUEST).unwrap();
        assert!(s.contains(replace), "{replace}");
        s.replacen(replace, by, 1).into_bytes()
    }

    /// Every rejection, with its status. Each is parsed at every split.
    #[test]
    fn rejection_table() {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (with("GET /chat HTTP/1.1", "GET /chat HTTP/1.0"), 400),
            (with("GET /chat HTTP/1.1", "GET /chat HTTP/2.0"), 505),
            (with("GET /chat HTTP/1.1", "GET  /chat HTTP/1.1"), 400),
            (with("GET /chat HTTP/1.1", "GET chat HTTP/1.1"), 400),
            (with("GET /chat HTTP/1.1", "G(T /chat HTTP/1.1"), 400),
            (with("Host: server.example.com\r\n", ""), 400),
            (with("Host: server.example.com\r\n", "Host: a\r\nHost: b\r\n"), 400),
            (with("Upgrade: websocket", "Upgrade: h2c"), 400),
            (with("Connection: Upgrade", "Connection: keep-alive"), 400),
            (with("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ"), 400),
            (with("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="), 400),
            (with("dGhlIHNhbXBsZSBub25jZQ==", "!!!!!!!!!!!!!!!!!!!!!!=="), 400),
            (with("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""), 400),
            (
                with(
                    "Sec-WebSocket-Key",
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key",
                ),
                400,
            ),
            (with("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"), 426),
            (with("Sec-WebSocket-Version: 13\r\n", ""), 400),
            (with("Origin", " Origin"), 400),
            (with("Origin: http", "Origin http"), 400),
            (with("Host:", "Ho st:"), 400),
            (with("\r\nHost", "\rx\r\nHost"), 400),
        ];
        for (bytes, status) in cases {
            let got = parse_all_ways(&bytes).and_then(|(r, _)| r.websocket_key());
            assert_eq!(
                got.map_err(|e| e.status),
                Err(status),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }

    #[test]
    fn case_insensitive_tokens() {
        let bytes = with(
            "Upgrade: websocket\r\nConnection: Upgrade",
            "upgrade: WebSocket\r\nconnection: keep-alive, UPGRADE",
        );
        let (req, _) = parse_all_ways(&bytes).unwrap();
        assert!(req.websocket_key().is_ok());
    }

    #[test]
    fn oversized_head_is_431() {
        let pad = format!("X-Pad: {}\r\n\r\n", "a".repeat(8200));
        let bytes = with("\r\n\r\n", &format!("\r\n{pad}"));
        assert_eq!(parse_chunks(&[&bytes]).unwrap_err().status, 431);
    }

    #[test]
    fn error_response_is_complete() {
        let mut out = Vec::new();
        write_error(&mut out, &HttpError::new(426, "unsupported"));
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(text.contains("Sec-WebSocket-Version: 13\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\nunsupported\n"));
        assert!(text.contains("Content-Length: 12\r\n"));
    }

    #[test]
    fn client_round_trip() {
        let key = encode_key([7; 16]);
        let mut req = Vec::new();
        write_client_request(&mut req, "127.0.0.1:9001", "/echo", &key);
        let (parsed, _) = parse_all_ways(&req).unwrap();
        assert_eq!(parsed.websocket_key().unwrap(), key);
        let mut resp = Vec::new();
        write_accept(&mut resp, &key);
        resp.extend_from_slice(b"\x81\x00");
        for cut in 0..resp.len() - 2 {
            let mut p = ResponseParser::new(&key);
            assert_eq!(p.feed(&LIMITS, &resp[..cut]), Ok(Progress::Partial));
            assert_eq!(
                p.feed(&LIMITS, &resp[cut..]),
                Ok(Progress::Complete(resp.len() - cut - 2))
            );
        }
        let mut p = ResponseParser::new(&encode_key([8; 16]));
        assert_eq!(
            p.feed(&LIMITS, &resp),
            Err(ResponseError::Invalid("wrong Sec-WebSocket-Accept"))
        );
        let mut err = Vec::new();
        write_error(&mut err, &HttpError::new(503, "full"));
        let mut p = ResponseParser::new(&key);
        assert_eq!(p.feed(&LIMITS, &err), Err(ResponseError::Status(503)));
    }
}
