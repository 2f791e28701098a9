//! The opening handshake, RFC 6455 §4.
//!
//! Server side: [`RequestParser`] reads a request head incrementally into a
//! [`Request`], enforcing the request rules of HTTP/1.1 (RFC 9110, RFC
//! 9112) that matter to a server; [`Request::websocket_key`] checks it
//! against §4.2.1 and yields the key, or the HTTP error to answer with;
//! [`select_subprotocol`] picks a subprotocol; [`write_accept_with`],
//! [`write_error_response`] and [`write_continue`] produce the response
//! bytes.
//!
//! Client side (for `wsflood` and tests): [`write_client_request_with`] and
//! [`ResponseParser`], which checks the server's answer per §4.1; with
//! permessage-deflate (RFC 7692), a [`DeflateOffer`] given to
//! [`write_client_request_with_extensions`] and
//! [`ResponseParser::with_extensions`], which accepts only an answer that is
//! valid for what was offered (§7.1) and yields the agreed [`Params`].

use super::deflate::{Params, EXTENSION, MAX_WINDOW_BITS, MIN_WINDOW_BITS};
use super::http::{self, has_token, is_tchar, split_field, HeadLimits, HeadReader, HttpError, Progress};
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

/// Bytes reserved after a request's target for its authority: a Host such
/// as `chat.example.com:8443` fits, so the two take one allocation.
const AUTHORITY_ROOM: usize = 32;

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
    /// The [target](Self::target), then the [authority](Self::authority)
    /// if any: one allocation for both.
    text: String,
    /// Where the target ends and the authority, if any, starts in `text`
    /// (an authority is never empty: none is kept for an empty Host).
    target_len: usize,
    /// x in HTTP/1.x.
    pub minor_version: u8,
    /// Whether a `Host` field was sent (RFC 9112 §3.2: required in every
    /// HTTP/1.1 request, absolute-form too; [`RequestParser`] enforces it).
    pub host: bool,
    pub upgrade_websocket: bool,
    pub connection_upgrade: bool,
    /// `Connection: close`: no further request on this connection.
    pub connection_close: bool,
    /// `Expect: 100-continue` in an HTTP/1.1 request (RFC 9110 §10.1.1):
    /// the client may wait for a `100 Continue` (see [`write_continue`])
    /// before it sends the body. Other expectations fail the parse with 417.
    pub expect_continue: bool,
    pub key: Option<Key>,
    /// `Sec-WebSocket-Version`, if sent and well-formed (§11.3.5: a number
    /// from 0 to 255 without leading zeros); a malformed one is a `defect`.
    pub version: Option<u8>,
    pub origin: Option<String>,
    pub content_length: Option<u64>,
    pub transfer_encoding: bool,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    /// The offered subprotocols (§4.1), each a checked token, in the
    /// client's order over all its `Sec-WebSocket-Protocol` lines, joined
    /// by `", "`. None are selected unless a service asks: see
    /// [`Request::offered_protocols`] and [`select_subprotocol`].
    pub protocols: Option<String>,
    /// Raw `Sec-WebSocket-Extensions` values, one per field line, joined by
    /// `"\n"` (which no field value holds): see [`Request::extension_lines`].
    pub extensions: Option<String>,
    /// A field was malformed in a way that matters only if this turns out to
    /// be an upgrade (e.g. a bad `Sec-WebSocket-Key`); kept so that routing
    /// can first answer 404/405. The first such defect is kept.
    pub defect: Option<HttpError>,
}

impl Request {
    fn new() -> Self {
        Request {
            method: Method::Other,
            text: String::new(),
            target_len: 0,
            minor_version: 1,
            host: false,
            upgrade_websocket: false,
            connection_upgrade: false,
            connection_close: false,
            expect_continue: false,
            key: None,
            version: None,
            origin: None,
            content_length: None,
            transfer_encoding: false,
            authorization: None,
            content_type: None,
            protocols: None,
            extensions: None,
            defect: None,
        }
    }

    /// The request target in origin-form (path and query): as sent, or the
    /// path (`/` if empty) and query of an absolute-form target.
    pub fn target(&self) -> &str {
        &self.text[..self.target_len]
    }

    /// The authority the request is for, `uri-host [":" port]` as sent:
    /// that of an absolute-form target (whose `Host` field is then ignored,
    /// RFC 9112 §3.2.2), else the `Host` field's value. None without a
    /// `Host` field or with an empty one.
    pub fn authority(&self) -> Option<&str> {
        (self.text.len() > self.target_len).then(|| &self.text[self.target_len..])
    }

    /// The path part of the target (before any `?`).
    pub fn path(&self) -> &str {
        let t = self.target();
        t.bytes().position(|b| b == b'?').map_or(t, |q| &t[..q])
    }

    /// The query part of the target (after the first `?`), if any.
    pub fn query(&self) -> Option<&str> {
        let t = self.target();
        t.bytes().position(|b| b == b'?').map(|q| &t[q + 1..])
    }

    /// Whether the connection may carry another request after this one
    /// (RFC 9112 §9.3: HTTP/1.1 persists unless either side says close).
    pub fn keep_alive(&self) -> bool {
        self.minor_version >= 1 && !self.connection_close
    }

    /// Whether the client asked for an upgrade at all (so that a plain GET
    /// can be told apart from a broken handshake): `Upgrade: websocket`, or
    /// any `Sec-WebSocket-Key`/`-Version` field, or a malformed WebSocket
    /// field.
    pub fn wants_upgrade(&self) -> bool {
        self.upgrade_websocket || self.key.is_some() || self.version.is_some() || self.defect.is_some()
    }

    /// The subprotocols the client offered (§4.1), in its order of
    /// preference.
    pub fn offered_protocols(&self) -> impl Iterator<Item = &str> {
        self.protocols
            .as_deref()
            .unwrap_or("")
            .split(", ")
            .filter(|p| !p.is_empty())
    }

    /// Whether the client offered subprotocol `name` (compared exactly, as
    /// the client will compare the server's choice, §4.1).
    pub fn offers_protocol(&self, name: &str) -> bool {
        self.offered_protocols().any(|p| p == name)
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
        if self.authority().is_none() {
            return Err(HttpError::bad("empty Host header"));
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
        match self.version {
            Some(13) => {}
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
        // RFC 9110 §9.1: method = token, case-sensitive.
        if !http::is_token(method) {
            return Err(HttpError::bad("malformed method"));
        }
        self.method = match method {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            _ => Method::Other,
        };
        let t = http::parse_target(target)?;
        // RFC 9110 §4.2.3: an empty path is "/". The target is ASCII
        // (checked by parse_target), so the pushes below copy it exactly.
        let slash = !t.path_and_query.starts_with(b"/");
        // Room for the authority too, which comes with the target or in the
        // Host field (a longer one grows the string).
        let mut text = String::with_capacity(t.path_and_query.len() + usize::from(slash) + AUTHORITY_ROOM);
        if slash {
            text.push('/');
        }
        push_ascii(&mut text, t.path_and_query);
        self.target_len = text.len();
        if let Some(a) = t.authority {
            push_ascii(&mut text, a);
        }
        self.text = text;
        self.minor_version = http::parse_version(version)?;
        Ok(())
    }

    fn field(&mut self, line: &[u8]) -> Result<(), HttpError> {
        let (name, value) = split_field(line)?;
        let is = |n: &str| http::eq_lowercase(name, n);
        if is("host") {
            self.host_field(value)
        } else if is("upgrade") {
            self.upgrade_websocket |= has_token(value, "websocket");
            Ok(())
        } else if is("connection") {
            http::has_tokens(
                value,
                &mut [
                    ("upgrade", &mut self.connection_upgrade),
                    ("close", &mut self.connection_close),
                ],
            );
            Ok(())
        } else if is("expect") {
            self.expect_field(value)
        } else if is("content-length") || is("transfer-encoding") {
            self.framing_field(is("content-length"), value)
        } else if is("origin") {
            // RFC 6454 §7.3: "User agents MUST NOT include more than one
            // Origin header field in any HTTP request."
            set_once(&mut self.origin, value, "more than one Origin header")
        } else if is("authorization") {
            // RFC 9110 §5.3: a field that is not a list ("credentials") may
            // not be sent twice; which one would we check?
            set_once(&mut self.authorization, value, "more than one Authorization header")
        } else if is("content-type") {
            // RFC 9110 §8.3: Content-Type = media-type, a single value.
            set_once(&mut self.content_type, value, "more than one Content-Type header")
        } else if is("sec-websocket-key") {
            self.key_field(value);
            Ok(())
        } else if is("sec-websocket-version") {
            self.version_field(value);
            Ok(())
        } else if is("sec-websocket-protocol") {
            self.protocol_field(value);
            Ok(())
        } else if is("sec-websocket-extensions") {
            // §9.1: offers may come in several lines; each is parsed on its
            // own by the extension's negotiation (`proto::deflate`).
            let all = self.extensions.get_or_insert_with(String::new);
            if !all.is_empty() {
                all.push('\n');
            }
            all.push_str(&String::from_utf8_lossy(value));
            Ok(())
        } else {
            Ok(())
        }
    }

    /// The `Sec-WebSocket-Extensions` field lines, in order.
    pub fn extension_lines(&self) -> impl Iterator<Item = &[u8]> {
        self.extensions
            .as_deref()
            .into_iter()
            .flat_map(|e| e.split('\n'))
            .map(str::as_bytes)
    }

    /// RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status
    /// code to any HTTP/1.1 request message that lacks a Host header field
    /// and to any request message that contains more than one Host header
    /// field line or a Host header field with an invalid field value."
    fn host_field(&mut self, value: &[u8]) -> Result<(), HttpError> {
        if self.host {
            return Err(HttpError::bad("more than one Host header"));
        }
        self.host = true;
        // Only the start line has been read: an authority is the target's.
        let absolute = self.authority().is_some();
        if value.is_empty() {
            // §3.2: "If the authority component is missing or undefined for
            // the target URI, then a client MUST send a Host header field
            // with an empty field value"; it is not missing if the target
            // has one.
            return if absolute {
                Err(HttpError::bad("empty Host header with an absolute-form target"))
            } else {
                Ok(())
            };
        }
        // RFC 9110 §7.2: Host = uri-host [ ":" port ].
        if !http::valid_authority(value) {
            return Err(HttpError::bad("invalid Host header"));
        }
        // §3.2.2: "When an origin server receives a request with an
        // absolute-form of request-target, the origin server MUST ignore the
        // received Host header field (if any) and instead use the host
        // information of the request-target."
        if !absolute {
            // The Host field comes once (checked above) and after the start
            // line: the authority is the end of the text.
            push_ascii(&mut self.text, value);
        }
        Ok(())
    }

    /// RFC 9110 §10.1.1: Expect = #expectation, "case-insensitive"; "A
    /// server that receives an Expect field value containing a member other
    /// than 100-continue MAY respond with a 417 (Expectation Failed)" (we
    /// do), and one "that receives a 100-continue expectation in an HTTP/1.0
    /// request MUST ignore that expectation".
    fn expect_field(&mut self, value: &[u8]) -> Result<(), HttpError> {
        for e in http::list_elements(value) {
            if !e.eq_ignore_ascii_case(b"100-continue") {
                return Err(HttpError::new(417, "the only expectation met is 100-continue"));
            }
            self.expect_continue |= self.minor_version >= 1;
        }
        Ok(())
    }

    /// `Content-Length` (`is_length`) or `Transfer-Encoding`.
    fn framing_field(&mut self, is_length: bool, value: &[u8]) -> Result<(), HttpError> {
        if is_length {
            // RFC 9110 §8.6: Content-Length = 1*DIGIT (no sign, no list;
            // one that does not fit 64 bits is invalid too). RFC 9112 §6.3
            // 5: an invalid length is "an unrecoverable error" (400).
            // Repeats of the same value are taken as one (RFC 9110 §8.6
            // lets a recipient do so: they frame the body the same way for
            // every reader); different ones are a 400.
            let n = std::str::from_utf8(value)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(HttpError::bad("invalid Content-Length"))?;
            if self.content_length.is_some_and(|m| m != n) {
                return Err(HttpError::bad("conflicting Content-Length"));
            }
            self.content_length = Some(n);
        } else {
            // RFC 9112 §6.1: "A server or client that receives an HTTP/1.0
            // message containing a Transfer-Encoding header field MUST treat
            // the message as if the framing is faulty".
            if self.minor_version == 0 {
                return Err(HttpError::bad("Transfer-Encoding in an HTTP/1.0 request"));
            }
            self.transfer_encoding = true;
        }
        // §6.1: "A server MAY reject a request that contains both
        // Content-Length and Transfer-Encoding" (a sign of smuggling).
        if self.transfer_encoding && self.content_length.is_some() {
            return Err(HttpError::bad("both Content-Length and Transfer-Encoding"));
        }
        Ok(())
    }

    /// §11.3.1: "The |Sec-WebSocket-Key| header field MUST NOT appear more
    /// than once in an HTTP request"; §4.2.1 5: base64 of 16 bytes.
    fn key_field(&mut self, value: &[u8]) {
        if self.key.is_some() {
            self.defect(HttpError::bad("more than one Sec-WebSocket-Key"));
        } else if is_key_of_16_bytes(value) {
            let mut key = [0u8; 24];
            key.copy_from_slice(value);
            self.key = Some(key);
        } else {
            self.defect(HttpError::bad("Sec-WebSocket-Key is not base64 of 16 bytes"));
        }
    }

    /// §11.3.5: "The |Sec-WebSocket-Version| header field MUST NOT appear
    /// more than once in an HTTP request"; version = DIGIT | (NZDIGIT
    /// DIGIT) | ("1" DIGIT DIGIT) | ("2" DIGIT-0-4 DIGIT) | ("2" "5"
    /// DIGIT-0-5), i.e. 0–255 without leading zeros.
    fn version_field(&mut self, value: &[u8]) {
        let parsed = match value {
            [b'0'] => Some(0),
            [b'1'..=b'9', ..] if value.len() <= 3 && value.iter().all(u8::is_ascii_digit) => {
                let n = value.iter().fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
                u8::try_from(n).ok()
            }
            _ => None,
        };
        if self.version.is_some() {
            self.defect(HttpError::bad("more than one Sec-WebSocket-Version"));
        }
        match parsed {
            Some(v) => self.version = Some(v),
            None => self.defect(HttpError::bad("malformed Sec-WebSocket-Version")),
        }
    }

    /// §4.1: the offered subprotocols are "non-empty strings with characters
    /// in the range U+0021 to U+007E not including separator characters",
    /// i.e. tokens (§11.3.4: Sec-WebSocket-Protocol-Client = 1#token), and
    /// the field "MAY appear multiple times in an HTTP request" (the lists
    /// add up, RFC 9110 §5.3). A malformed offer fails the upgrade.
    fn protocol_field(&mut self, value: &[u8]) {
        for offer in http::list_elements(value) {
            if !http::is_token(offer) {
                return self.defect(HttpError::bad("malformed Sec-WebSocket-Protocol"));
            }
            let all = self.protocols.get_or_insert_with(String::new);
            if !all.is_empty() {
                all.push_str(", ");
            }
            all.extend(offer.iter().map(|&b| char::from(b)));
        }
    }

    /// Keeps the first defect (see [`Request::defect`]).
    fn defect(&mut self, e: HttpError) {
        self.defect.get_or_insert(e);
    }
}

/// Stores a field that may appear once; a second one is a 400.
fn set_once(slot: &mut Option<String>, value: &[u8], twice: &'static str) -> Result<(), HttpError> {
    if slot.is_some() {
        return Err(HttpError::bad(twice));
    }
    *slot = Some(String::from_utf8_lossy(value).into_owned());
    Ok(())
}

/// Appends bytes the parser has checked are ASCII to `text`: UTF-8 as
/// they stand, so copied whole once `from_utf8` agrees.
fn push_ascii(text: &mut String, v: &[u8]) {
    debug_assert!(v.is_ascii(), "{v:?}");
    match std::str::from_utf8(v) {
        Ok(s) => text.push_str(s),
        // Not reached: read as Latin-1.
        Err(_) => text.extend(v.iter().map(|&b| char::from(b))),
    }
}

/// §4.2.2 step 5.5: the server picks "a single value representing the
/// subprotocol the server is ready to use" from the client's offers, or
/// none. This picks the first of `server_prefs` (the server's order of
/// preference) that the client offered.
pub fn select_subprotocol<'a>(req: &Request, server_prefs: &'a [String]) -> Option<&'a str> {
    server_prefs.iter().map(String::as_str).find(|p| req.offers_protocol(p))
}

/// §4.2.1 5: whether a key is "a base64-encoded value that, when decoded,
/// is 16 bytes in length". In canonical base64 (RFC 4648 §4: with its
/// padding, and §3.5: the bits past the data zero, as the `base64` crate's
/// standard engine requires), 16 bytes are 21 characters of the alphabet,
/// one that carries the last 2 bits and 4 zero bits (A, Q, g or w), and
/// `==`: a check of shape, not a decoding.
fn is_key_of_16_bytes(value: &[u8]) -> bool {
    const ALPHABET: [bool; 256] = http::alnum_and(&[b"+/"]);
    matches!(value, [head @ .., b'A' | b'Q' | b'g' | b'w', b'=', b'='] if head.len() == 21 && http::run_len(head, &ALPHABET) == 21)
}

/// Decoded length of a base64 value, if it is valid base64.
#[cfg(test)]
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
    /// The method is known as soon as the request line is complete, also
    /// when the parse fails later ([`RequestParser::request`]), so that an
    /// error can be answered without a body to a HEAD request.
    pub fn feed(&mut self, limits: &HeadLimits, input: &[u8]) -> Result<Progress, HttpError> {
        let req = &mut self.request;
        let seen_start = &mut self.seen_start;
        let progress = self.reader.feed(limits, input, |line| {
            if *seen_start {
                req.field(line)
            } else {
                *seen_start = true;
                req.start_line(line)
            }
        });
        match progress {
            // RFC 9112 §3: "A server that receives a request-target longer
            // than any URI it wishes to parse MUST respond with a 414 (URI
            // Too Long) status code": the request line alone passed the
            // head size limit (the target is its only long part).
            Err(e) if e == http::TOO_LARGE && !self.seen_start => {
                Err(HttpError::new(414, "request line longer than the header size limit"))
            }
            // §3.2: "A server MUST respond with a 400 (Bad Request) status
            // code to any HTTP/1.1 request message that lacks a Host header
            // field".
            Ok(Progress::Complete(_)) if self.request.minor_version >= 1 && !self.request.host => {
                Err(HttpError::bad("missing Host header"))
            }
            other => other,
        }
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

/// Appends the 101 response of §4.2.2 step 5 to `out`, selecting no
/// subprotocol and no extension (§4.2.2 lets the server leave offers
/// unanswered). Same as `write_accept_with(out, key, None, None)`.
pub fn write_accept(out: &mut Vec<u8>, key: &[u8]) {
    // Cannot fail: there is nothing to check.
    let _ = write_accept_with(out, key, None, None);
}

/// Appends the 101 response of §4.2.2 step 5 to `out`, with
/// `Sec-WebSocket-Protocol: protocol` (step 5.5: "If the server does not
/// wish to agree to one of the suggested subprotocols, it MUST NOT send back
/// a |Sec-WebSocket-Protocol| header field") and
/// `Sec-WebSocket-Extensions: extensions` (step 5.6) when given. Allocates
/// nothing beyond the growth of `out`.
///
/// `protocol` must be a token (as [`select_subprotocol`] returns) and
/// `extensions` a non-empty field value without CR, LF or other CTL; else
/// nothing is written and the error (500: the server's own mistake) is
/// returned.
pub fn write_accept_with(
    out: &mut Vec<u8>,
    key: &[u8],
    protocol: Option<&str>,
    extensions: Option<&str>,
) -> Result<(), HttpError> {
    if protocol.is_some_and(|p| !http::is_token(p.as_bytes())) {
        return Err(HttpError::new(500, "selected subprotocol is not a token"));
    }
    let field_value = |v: &str| !v.is_empty() && v.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
    if extensions.is_some_and(|e| !field_value(e)) {
        return Err(HttpError::new(500, "invalid Sec-WebSocket-Extensions value"));
    }
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(&accept_key(key));
    if let Some(p) = protocol {
        out.extend_from_slice(b"\r\nSec-WebSocket-Protocol: ");
        out.extend_from_slice(p.as_bytes());
    }
    if let Some(e) = extensions {
        out.extend_from_slice(b"\r\nSec-WebSocket-Extensions: ");
        out.extend_from_slice(e.as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
    Ok(())
}

/// Appends `HTTP/1.1 100 Continue` (RFC 9110 §15.2.1), the interim
/// response a client that sent `Expect: 100-continue` may wait for before
/// it sends the body (§10.1.1: a server that will read the body "ought to"
/// send it; it "MAY omit sending a 100 (Continue) response if it has
/// already received some or all of the content").
pub fn write_continue(out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
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

/// Appends the error response for `err`, body included: same as
/// `write_error_response(out, err, false)`.
pub fn write_error(out: &mut Vec<u8>, err: &HttpError) {
    write_error_response(out, err, false);
}

/// Appends the error response for `err` with `Connection: close`, after
/// which the server closes the connection. The body is the reason, one
/// line; with `head_only` (the request was HEAD) only the head is written,
/// with the Content-Length the body would have had (RFC 9110 §9.3.2: "The
/// server SHOULD send the same header fields in response to a HEAD request
/// as it would have sent if the request method had been GET").
///
/// `err.allow` becomes an `Allow` field; a 405 without one says `GET`
/// (RFC 9110 §15.5.6: a 405 MUST carry `Allow`). A 426 carries
/// `Sec-WebSocket-Version: 13` (RFC 6455 §4.2.2 step 4) and `Upgrade:
/// websocket` (RFC 9110 §15.5.22: "The server MUST send an Upgrade header
/// field in a 426 response"), hence `upgrade` among the connection options
/// (RFC 9110 §7.8: "A sender of Upgrade MUST also send an "upgrade"
/// connection option in the Connection header field").
pub fn write_error_response(out: &mut Vec<u8>, err: &HttpError, head_only: bool) {
    use std::io::Write as _;
    let msg = &err.reason.as_bytes()[..err.reason.len().min(255)];
    let upgrade = err.status == 426;
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: {}\r\n",
        err.status,
        http::status_text(err.status),
        msg.len() + 1,
        if upgrade { "Upgrade, close" } else { "close" },
    );
    if upgrade {
        out.extend_from_slice(b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
    }
    if let Some(allow) = err.allow.or((err.status == 405).then_some("GET")) {
        let _ = write!(out, "Allow: {allow}\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(msg);
        out.push(b'\n');
    }
}

// ---------------------------------------------------------------- client --

/// Appends a client opening handshake (§4.1) for `host` and `path` with the
/// given key (base64 of 16 random bytes, chosen by the caller). Same as
/// `write_client_request_with(out, host, path, key, &[] as &[&str])`.
pub fn write_client_request(out: &mut Vec<u8>, host: &str, path: &str, key: &Key) {
    write_client_request_with::<&str>(out, host, path, key, &[]);
}

/// [`write_client_request`] offering `protocols` in this order of
/// preference (§4.1 item 10: `Sec-WebSocket-Protocol`, sent only if the
/// list is not empty). Each should be a token (§4.1), else the server
/// refuses the handshake; check the answer with
/// [`ResponseParser::with_protocols`] and the same list.
pub fn write_client_request_with<S: AsRef<str>>(out: &mut Vec<u8>, host: &str, path: &str, key: &Key, protocols: &[S]) {
    write_client_request_with_extensions(out, host, path, key, protocols, None);
}

/// [`write_client_request_with`] also offering permessage-deflate (§4.1
/// item 11: `Sec-WebSocket-Extensions`, RFC 7692 §5) when `deflate` is
/// given: its value goes out as written. Check the answer with
/// [`ResponseParser::with_extensions`] and the same offer.
pub fn write_client_request_with_extensions<S: AsRef<str>>(
    out: &mut Vec<u8>,
    host: &str,
    path: &str,
    key: &Key,
    protocols: &[S],
    deflate: Option<&DeflateOffer>,
) {
    use std::io::Write as _;
    let _ = write!(
        out,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "
    );
    out.extend_from_slice(key);
    for (i, p) in protocols.iter().enumerate() {
        out.extend_from_slice(if i == 0 { b"\r\nSec-WebSocket-Protocol: " } else { b", " });
        out.extend_from_slice(p.as_ref().as_bytes());
    }
    if let Some(offer) = deflate {
        // A `DeflateOffer` holds only a checked extension list: no CR, LF
        // or other CTL can reach the request.
        out.extend_from_slice(b"\r\nSec-WebSocket-Extensions: ");
        out.extend_from_slice(offer.value().as_bytes());
    }
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

impl std::fmt::Display for ResponseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResponseError::Status(status) => write!(f, "the server answered {status} {}", http::status_text(*status)),
            ResponseError::Invalid(why) => write!(f, "invalid handshake response: {why}"),
        }
    }
}

impl std::error::Error for ResponseError {}

/// Reads and checks a server's handshake response (§4.1, "the client MUST
/// validate the server's response").
#[derive(Debug)]
pub struct ResponseParser {
    reader: HeadReader,
    expect: AcceptKey,
    /// The subprotocols offered, joined by `", "`.
    offered: String,
    /// The permessage-deflate offers made (empty: none).
    deflate_offers: Vec<PmdParams>,
    status: u16,
    upgrade: bool,
    connection: bool,
    /// `Sec-WebSocket-Accept` lines seen, and whether the last was right.
    accepts: u8,
    accept_ok: bool,
    /// The subprotocol the server selected.
    protocol: Option<String>,
    /// Every `Sec-WebSocket-Extensions` line's value, joined by `", "`
    /// (RFC 9110 §5.3: lines of a list field combine so).
    extensions: Option<Vec<u8>>,
    /// What was agreed, once the handshake succeeded.
    deflate: Option<Params>,
    failure: Option<&'static str>,
}

impl ResponseParser {
    /// For a request that offered no subprotocol.
    pub fn new(key: &Key) -> Self {
        ResponseParser::with_protocols::<&str>(key, &[])
    }

    /// For a request that offered `protocols` (as given to
    /// [`write_client_request_with`]).
    pub fn with_protocols<S: AsRef<str>>(key: &Key, protocols: &[S]) -> Self {
        ResponseParser::with_extensions(key, protocols, None)
    }

    /// For a request that offered `protocols` and, if given, `deflate` (as
    /// given to [`write_client_request_with_extensions`]). The server may
    /// decline (no `Sec-WebSocket-Extensions`: [`ResponseParser::deflate`]
    /// is `None`); an answer that is not valid for any of the offers fails
    /// the handshake (RFC 7692 §7.1).
    pub fn with_extensions<S: AsRef<str>>(key: &Key, protocols: &[S], deflate: Option<&DeflateOffer>) -> Self {
        let mut offered = String::new();
        for p in protocols {
            if !offered.is_empty() {
                offered.push_str(", ");
            }
            offered.push_str(p.as_ref());
        }
        ResponseParser {
            reader: HeadReader::new(),
            expect: accept_key(key),
            offered,
            deflate_offers: deflate.map_or_else(Vec::new, |d| d.offers.clone()),
            status: 0,
            upgrade: false,
            connection: false,
            accepts: 0,
            accept_ok: false,
            protocol: None,
            extensions: None,
            deflate: None,
            failure: None,
        }
    }

    /// The subprotocol the server selected, once the handshake succeeded.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The permessage-deflate parameters agreed, once the handshake
    /// succeeded; `None` if none was offered or the server declined. They
    /// are to be read from the client's side: it compresses with
    /// `client_max_window_bits` (9..=15), resetting after each message if
    /// `client_no_context_takeover`, and inflates the server's messages,
    /// resetting after each if `server_no_context_takeover`.
    pub fn deflate(&self) -> Option<Params> {
        self.deflate
    }

    /// `Ok(Complete(n))`: the handshake succeeded and the head used `n`
    /// bytes of `input`; frames may follow.
    pub fn feed(&mut self, limits: &HeadLimits, input: &[u8]) -> Result<Progress, ResponseError> {
        let mut reader = std::mem::take(&mut self.reader);
        let progress = reader.feed(limits, input, |line| {
            if self.status == 0 {
                self.status_line(line)
            } else {
                self.field(line)
            }
        });
        self.reader = reader;
        let progress = progress.map_err(|e| ResponseError::Invalid(e.reason))?;
        if let Progress::Complete(_) = progress {
            if self.status != 101 {
                return Err(ResponseError::Status(self.status));
            }
            if let Some(f) = self.failure {
                return Err(ResponseError::Invalid(f));
            }
            if !self.upgrade || !self.connection {
                return Err(ResponseError::Invalid("response lacks Upgrade/Connection"));
            }
            if !self.accept_ok {
                return Err(ResponseError::Invalid("wrong Sec-WebSocket-Accept"));
            }
            if let Some(value) = &self.extensions {
                self.deflate = accept_deflate(&self.deflate_offers, value).map_err(ResponseError::Invalid)?;
            }
        }
        Ok(progress)
    }

    /// RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ].
    fn status_line(&mut self, line: &[u8]) -> Result<(), HttpError> {
        let mut parts = line.splitn(3, |&b| b == b' ');
        let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
            return Err(HttpError::bad("malformed status line"));
        };
        http::parse_version(version)?;
        // status-code = 3DIGIT; RFC 9110 §15: "Values outside the range
        // 100..599 are invalid".
        self.status = match code {
            [a @ b'1'..=b'5', b, c] if b.is_ascii_digit() && c.is_ascii_digit() => {
                u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
            }
            _ => return Err(HttpError::bad("malformed status code")),
        };
        Ok(())
    }

    fn field(&mut self, line: &[u8]) -> Result<(), HttpError> {
        let (name, value) = split_field(line)?;
        let is = |n: &str| http::eq_lowercase(name, n);
        if is("upgrade") {
            self.upgrade |= has_token(value, "websocket");
        } else if is("connection") {
            self.connection |= has_token(value, "upgrade");
        } else if is("sec-websocket-accept") {
            // §11.3.3: "The |Sec-WebSocket-Accept| header MUST NOT appear
            // more than once in an HTTP response."
            self.accepts = self.accepts.saturating_add(1);
            self.accept_ok = self.accepts == 1 && value == self.expect;
        } else if is("sec-websocket-extensions") {
            if self.deflate_offers.is_empty() {
                // §4.1: extensions we did not ask for fail the connection.
                self.fail("server selected an extension");
            } else {
                // Checked against the offers once the head is complete.
                let all = self.extensions.get_or_insert_with(Vec::new);
                if !all.is_empty() {
                    all.extend_from_slice(b", ");
                }
                all.extend_from_slice(value);
            }
        } else if is("sec-websocket-protocol") {
            // §11.3.4: Sec-WebSocket-Protocol-Server = token, and the field
            // "MUST NOT appear more than once in an HTTP response". §4.1: "If
            // the response includes a |Sec-WebSocket-Protocol| header field
            // and this header field indicates the use of a subprotocol that
            // was not present in the client's handshake [...], the client
            // MUST _Fail the WebSocket Connection_."
            let offered = self.offered.split(", ").any(|p| p.as_bytes() == value);
            if self.protocol.is_some() {
                self.fail("more than one Sec-WebSocket-Protocol");
            } else if !http::is_token(value) || !offered {
                self.fail("server selected a subprotocol that was not offered");
            } else {
                self.protocol = Some(String::from_utf8_lossy(value).into_owned());
            }
        }
        Ok(())
    }

    /// Keeps the first reason to fail the connection, reported once the
    /// status is known (a non-101 status is reported as such).
    fn fail(&mut self, why: &'static str) {
        self.failure.get_or_insert(why);
    }
}

// ------------------------------------------- client: permessage-deflate --

/// The permessage-deflate offer(s) a client sends (RFC 7692 §5: "a client
/// may offer multiple extension negotiation offers", in its order of
/// preference), checked when made so that the request carries only a
/// well-formed list and the server's answer can be held against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeflateOffer {
    value: String,
    offers: Vec<PmdParams>,
}

impl DeflateOffer {
    /// What browsers offer: the server picks the window we compress with
    /// (§7.1.2.2), everything else is the server's choice.
    pub const DEFAULT: &'static str = "permessage-deflate; client_max_window_bits";

    /// Checks a raw `Sec-WebSocket-Extensions` value: a list (RFC 6455
    /// §9.1) of `permessage-deflate` offers only (no other extension is
    /// spoken here), each with valid parameters (§7: known, not repeated,
    /// valid values). `client_max_window_bits=8` is refused: zlib cannot
    /// compress with a 256-byte window (see `deflate`'s module doc).
    pub fn parse(value: &str) -> Result<DeflateOffer, &'static str> {
        let mut offers = Vec::new();
        parse_deflate_list(value.as_bytes(), "only permessage-deflate can be offered", |p| {
            if p.client_max_window_bits == Some(Some(8)) {
                return Err("client_max_window_bits=8 cannot be honoured (zlib needs a window of 9 bits or more)");
            }
            offers.push(p);
            Ok(())
        })?;
        if offers.is_empty() {
            return Err("the extension offer is empty");
        }
        Ok(DeflateOffer {
            value: value.to_owned(),
            offers,
        })
    }

    /// [`DeflateOffer::DEFAULT`].
    pub fn default_offer() -> DeflateOffer {
        DeflateOffer::parse(DeflateOffer::DEFAULT).unwrap_or_else(|_| DeflateOffer {
            value: DeflateOffer::DEFAULT.to_owned(),
            offers: vec![PmdParams {
                client_max_window_bits: Some(None),
                ..PmdParams::default()
            }],
        })
    }

    /// The header value, as it goes out.
    pub fn value(&self) -> &str {
        &self.value
    }
}

/// The parameters of one `permessage-deflate` list element, offer or
/// response, as written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct PmdParams {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: present without a value.
    client_max_window_bits: Option<Option<u8>>,
}

impl PmdParams {
    /// Records one parameter. `value`: `None` if the parameter has none,
    /// `Some(None)` if it has one that is not a window size.
    fn apply(&mut self, name: &[u8], value: Option<Option<u8>>) -> Result<(), &'static str> {
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        let repeated = if is("server_no_context_takeover") || is("client_no_context_takeover") {
            // §7.1.1.1-2: "This extension parameter has no value."
            if value.is_some() {
                return Err("a no_context_takeover parameter with a value");
            }
            let flag = if is("server_no_context_takeover") {
                &mut self.server_no_context_takeover
            } else {
                &mut self.client_no_context_takeover
            };
            std::mem::replace(flag, true)
        } else if is("server_max_window_bits") {
            // §7.1.2.1: a value is required, in offers and responses.
            let bits = value.flatten().ok_or("invalid server_max_window_bits")?;
            self.server_max_window_bits.replace(bits).is_some()
        } else if is("client_max_window_bits") {
            // §7.1.2.2: "no value or a decimal integer value" (a response
            // needs the value: see `accept_deflate`).
            if value == Some(None) {
                return Err("invalid client_max_window_bits");
            }
            self.client_max_window_bits.replace(value.flatten()).is_some()
        } else {
            return Err("unknown permessage-deflate parameter");
        };
        if repeated {
            return Err("repeated permessage-deflate parameter");
        }
        Ok(())
    }
}

/// Checks the server's `Sec-WebSocket-Extensions` (all lines, joined)
/// against the offers (RFC 7692 §7.1): `Ok(None)` for an empty list.
fn accept_deflate(offers: &[PmdParams], value: &[u8]) -> Result<Option<Params>, &'static str> {
    let mut answer = None;
    parse_deflate_list(value, "server selected an extension that was not offered", |p| {
        // §7: "the server [...] MUST NOT accept more than one" offer of
        // this extension.
        if answer.replace(p).is_some() {
            return Err("more than one permessage-deflate in the response");
        }
        Ok(())
    })?;
    let Some(answer) = answer else {
        return Ok(None);
    };
    // §7.1.2.2: a server that accepts the parameter sends it "with a value".
    if answer.client_max_window_bits == Some(None) {
        return Err("client_max_window_bits without a value in the response");
    }
    // The answer must accept one of the offers; the first reason otherwise.
    let mut first_reason = None;
    for offer in offers {
        match answer_to(offer, &answer) {
            Ok(params) => return Ok(Some(params)),
            Err(reason) => {
                first_reason.get_or_insert(reason);
            }
        }
    }
    Err(first_reason.unwrap_or("permessage-deflate in the response but not offered"))
}

/// The agreed parameters if `answer` is a valid response to `offer` (the
/// client's side of RFC 7692 §7.1; the same table as Python `websockets`').
fn answer_to(offer: &PmdParams, answer: &PmdParams) -> Result<Params, &'static str> {
    // §7.1.1.1: a server accepts an offer of server_no_context_takeover
    // only by "including the "server_no_context_takeover" extension
    // parameter in the extension negotiation response". Unoffered, it MAY
    // be added.
    if offer.server_no_context_takeover && !answer.server_no_context_takeover {
        return Err("the response drops the server_no_context_takeover offered");
    }
    // §7.1.2.1: accepted "by including the "server_max_window_bits"
    // extension parameter [...] with the same or smaller value as the
    // offer"; unoffered, the server MAY include it.
    let server_bits = match (offer.server_max_window_bits, answer.server_max_window_bits) {
        (Some(_), None) => return Err("the response drops the server_max_window_bits offered"),
        (Some(offered), Some(bits)) if bits > offered => {
            return Err("server_max_window_bits in the response is larger than offered")
        }
        (_, bits) => bits.unwrap_or(MAX_WINDOW_BITS),
    };
    // §7.1.2.2: "If a received extension negotiation offer doesn't have
    // the "client_max_window_bits" extension parameter, the corresponding
    // extension negotiation response to the offer MUST NOT include" it; an
    // offered value is a promise ("the client is going to use an LZ77
    // sliding window whose size is not bigger").
    let client_bits = match (offer.client_max_window_bits, answer.client_max_window_bits) {
        (None, Some(_)) => return Err("client_max_window_bits in the response was not offered"),
        (Some(Some(offered)), Some(Some(bits))) if bits > offered => {
            return Err("client_max_window_bits in the response is larger than offered")
        }
        (_, Some(Some(bits))) => bits,
        (Some(Some(offered)), None) => offered,
        _ => MAX_WINDOW_BITS,
    };
    // §7.1: the client fails the connection if it "does not support the
    // configuration that the response represents".
    if client_bits < MIN_WINDOW_BITS {
        return Err("client_max_window_bits=8 is not supported (zlib needs 9 or more)");
    }
    Ok(Params {
        server_no_context_takeover: answer.server_no_context_takeover,
        // §7.1.1.2: offering it is a promise to reset, whatever the answer.
        client_no_context_takeover: answer.client_no_context_takeover || offer.client_no_context_takeover,
        server_max_window_bits: server_bits,
        client_max_window_bits: client_bits,
        server_max_window_bits_answered: answer.server_max_window_bits.is_some(),
    })
}

/// Parses a whole extension list (RFC 6455 §9.1:
/// `1#( extension-token *( ";" extension-param ) )`, OWS around the
/// separators, `extension-param = token [ "=" (token | quoted-string) ]`)
/// in which every element must be `permessage-deflate` (else
/// `not_ours`) with valid parameters; hands each element to `each`. Empty
/// elements are skipped (RFC 9110 §5.6.1).
fn parse_deflate_list(
    value: &[u8],
    not_ours: &'static str,
    mut each: impl FnMut(PmdParams) -> Result<(), &'static str>,
) -> Result<(), &'static str> {
    const MALFORMED: &str = "malformed Sec-WebSocket-Extensions";
    let mut lx = ExtLexer { s: value, at: 0 };
    loop {
        lx.ows();
        while lx.eat(b',') {
            lx.ows();
        }
        if lx.peek().is_none() {
            return Ok(());
        }
        let name = lx.token();
        if name.is_empty() {
            return Err(MALFORMED);
        }
        if !name.eq_ignore_ascii_case(EXTENSION.as_bytes()) {
            return Err(not_ours);
        }
        let mut params = PmdParams::default();
        loop {
            lx.ows();
            match lx.peek() {
                None | Some(b',') => break,
                Some(b';') => lx.at += 1,
                Some(_) => return Err(MALFORMED),
            }
            lx.ows();
            let param = lx.token();
            if param.is_empty() {
                return Err(MALFORMED);
            }
            lx.ows();
            let value = if lx.eat(b'=') {
                lx.ows();
                Some(lx.window_bits().ok_or(MALFORMED)?)
            } else {
                None
            };
            params.apply(param, value)?;
        }
        each(params)?;
    }
}

/// A cursor over an extension list.
struct ExtLexer<'a> {
    s: &'a [u8],
    at: usize,
}

impl<'a> ExtLexer<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        self.at += usize::from(hit);
        hit
    }

    fn ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    fn token(&mut self) -> &'a [u8] {
        let start = self.at;
        while self.peek().is_some_and(is_tchar) {
            self.at += 1;
        }
        &self.s[start..self.at]
    }

    /// A parameter value, token or quoted-string (RFC 9110 §5.6.4), read
    /// as window bits: `None` for a syntax error, `Some(None)` for a
    /// well-formed value that is not "a decimal integer value without
    /// leading zeroes between 8 to 15, inclusive" (RFC 7692 §7.1.2.1-2),
    /// after unescaping ("the value after quoted-string unescaping MUST
    /// conform to the 'token' ABNF", RFC 6455 §9.1).
    fn window_bits(&mut self) -> Option<Option<u8>> {
        let mut digits = [0u8; 3];
        let mut n = 0;
        let mut token = true;
        let mut push = |b: u8| {
            token &= is_tchar(b);
            if n < digits.len() {
                digits[n] = b;
            }
            n += 1;
        };
        if self.eat(b'"') {
            loop {
                match self.peek()? {
                    b'"' => break,
                    b'\\' => {
                        self.at += 1;
                        let b = self.peek()?;
                        if !(b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80) {
                            return None;
                        }
                        push(b);
                    }
                    b @ (b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..) => push(b),
                    _ => return None,
                }
                self.at += 1;
            }
            self.at += 1;
        } else {
            let t = self.token();
            if t.is_empty() {
                return None;
            }
            t.iter().for_each(|&b| push(b));
        }
        if !token || n == 0 {
            // Not a token once unescaped (e.g. `""`, `"1 0"`): invalid.
            return Some(None);
        }
        let bits = match digits[..n.min(3)] {
            [d] if d.is_ascii_digit() => d - b'0',
            [b'1', d] if d.is_ascii_digit() => 10 + d - b'0',
            _ => return Some(None),
        };
        Some((8..=15).contains(&bits).then_some(bits))
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
    fn ascii_copies() {
        let mut text = String::from("/");
        push_ascii(&mut text, b"a?b=c");
        assert_eq!(text, "/a?b=c");
    }

    /// The shape check against decoding with the `base64` crate: every byte
    /// value at every position of a few keys, and keys of every length.
    #[test]
    fn key_shape_agrees_with_decoding() {
        let keys: &[&[u8]] = &[
            b"dGhlIHNhbXBsZSBub25jZQ==",
            b"acbrw7FeQUSevJr5kLu4eg==",
            b"+/+/+/+/+/+/+/+/+/+/+w==",
        ];
        assert!(keys.iter().all(|k| is_key_of_16_bytes(k)));
        let of_every_length = (0..40).flat_map(|len| {
            [b'A', b'=', b'w'].map(|fill| {
                let mut k = vec![fill; len];
                if len >= 2 {
                    k[len - 2..].copy_from_slice(b"==");
                }
                k
            })
        });
        for k in http::one_byte_changes(keys).chain(of_every_length) {
            assert_eq!(
                is_key_of_16_bytes(&k),
                decoded_len(&k) == Some(16),
                "{:?}",
                String::from_utf8_lossy(&k)
            );
        }
    }

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
        parse_all_ways_within(&LIMITS, bytes)
    }

    fn parse_all_ways_within(limits: &HeadLimits, bytes: &[u8]) -> Result<(Request, usize), HttpError> {
        let whole = parse_chunks_within(limits, &[bytes]);
        for cut in 0..=bytes.len() {
            assert_eq!(
                parse_chunks_within(limits, &[&bytes[..cut], &bytes[cut..]]),
                whole,
                "cut {cut}"
            );
        }
        let ones: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(parse_chunks_within(limits, &ones), whole, "byte at a time");
        whole
    }

    fn parse_chunks(chunks: &[&[u8]]) -> Result<(Request, usize), HttpError> {
        parse_chunks_within(&LIMITS, chunks)
    }

    /// Returns the request and the total bytes consumed by the head.
    fn parse_chunks_within(limits: &HeadLimits, chunks: &[&[u8]]) -> Result<(Request, usize), HttpError> {
        let mut p = RequestParser::new();
        let mut total = 0;
        for c in chunks {
            match p.feed(limits, c)? {
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
        assert_eq!(req.authority(), Some("server.example.com"));
        assert_eq!(req.offered_protocols().collect::<Vec<_>>(), ["chat", "superchat"]);
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
            // Bare LF (RFC 9112 §2.2).
            (with("\r\nHost", "\nHost"), 400),
            (with("HTTP/1.1\r\n", "HTTP/1.1\n"), 400),
            (with("\r\n\r\n", "\r\n\n"), 400),
            // CTLs in a field value or the target (RFC 9110 §5.5).
            (with("Origin: http://example.com", "Origin: http://exa\0mple.com"), 400),
            (
                with("Origin: http://example.com", "Origin: http://example.com\x7f"),
                400,
            ),
            (with("Origin: http://example.com", "Origin: \x1b[31m"), 400),
            (with("GET /chat", "GET /ch\0at"), 400),
            (with("GET /chat", "GET /ch\x7fat"), 400),
            (with("GET /chat", "GET /ch\tat"), 400),
            // Whitespace before the colon (RFC 9112 §5.1).
            (with("Host:", "Host :"), 400),
            (with("Sec-WebSocket-Key:", "Sec-WebSocket-Key\t:"), 400),
            // Host syntax (RFC 9110 §7.2) and an empty one (no authority).
            (with("Host: server.example.com", "Host: evil.example@@:x:y"), 400),
            (with("Host: server.example.com", "Host: a b"), 400),
            (with("Host: server.example.com", "Host: server.example.com:99999"), 400),
            (with("Host: server.example.com", "Host: [::1"), 400),
            (with("Host: server.example.com", "Host:"), 400),
            // Request-target forms (RFC 9112 §3.2).
            (with("GET /chat", "GET *"), 400),
            (with("GET /chat", "GET server.example.com:80"), 400),
            (with("GET /chat", "GET ws://server.example.com/chat"), 400),
            (with("GET /chat", "GET http://u@server.example.com/chat"), 400),
            (with("GET /chat", "GET http:///chat"), 400),
            (with("GET /chat", "GET /chat#x"), 400),
            // Duplicates of single fields (RFC 9110 §5.3, RFC 6455 §11.3).
            (with("Host:", "Host: server.example.com\r\nHost:"), 400),
            (with("Origin:", "Origin: http://example.com\r\nOrigin:"), 400),
            (
                with(
                    "Origin:",
                    "Authorization: Bearer a\r\nauthorization: Bearer b\r\nOrigin:",
                ),
                400,
            ),
            (
                with("Origin:", "Content-Type: a/b\r\nContent-Type: a/b\r\nOrigin:"),
                400,
            ),
            (
                with("Origin:", "Content-Length: 0\r\nContent-Length: 1\r\nOrigin:"),
                400,
            ),
            (
                with(
                    "Sec-WebSocket-Version: 13",
                    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 13",
                ),
                400,
            ),
            (
                with(
                    "Sec-WebSocket-Version: 13",
                    "Sec-WebSocket-Version: 8\r\nSec-WebSocket-Version: 13",
                ),
                400,
            ),
            (
                with("Sec-WebSocket-Key: d", "Sec-WebSocket-Key: x\r\nSec-WebSocket-Key: d"),
                400,
            ),
            // Sec-WebSocket-Version syntax (§11.3.5).
            (with("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 013"), 400),
            (with("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 13, 8"), 400),
            (with("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 256"), 400),
            (with("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version:"), 400),
            (with("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 255"), 426),
            (with("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 0"), 426),
            // Subprotocol offers must be tokens (§4.1, §11.3.4).
            (with("chat, superchat", "chat, super chat"), 400),
            (with("chat, superchat", "chat, \"superchat\""), 400),
            (with("chat, superchat", "chat/1.0, x"), 400),
            (with("chat, superchat", "chat\r\nSec-WebSocket-Protocol: a@b"), 400),
            // Expect (RFC 9110 §10.1.1).
            (with("Origin:", "Expect: 100-continue, x\r\nOrigin:"), 417),
            (with("Origin:", "Expect: 101-continue\r\nOrigin:"), 417),
            (with("Origin:", "Expect: 100-continue=1\r\nOrigin:"), 417),
            // Framing (RFC 9112 §6).
            (with("Origin:", "Content-Length: +5\r\nOrigin:"), 400),
            (with("Origin:", "Content-Length: -0\r\nOrigin:"), 400),
            (with("Origin:", "Content-Length: 5, 5\r\nOrigin:"), 400),
            (with("Origin:", "Content-Length: 18446744073709551616\r\nOrigin:"), 400),
            (with("Origin:", "Content-Length:\r\nOrigin:"), 400),
            (
                with("Origin:", "Content-Length: 0\r\nTransfer-Encoding: chunked\r\nOrigin:"),
                400,
            ),
            (
                with("Origin:", "Transfer-Encoding: chunked\r\nContent-Length: 0\r\nOrigin:"),
                400,
            ),
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

    /// Requests that parse, and what is kept of them.
    #[test]
    fn accepted_variants() {
        // Absolute-form (RFC 9112 §3.2.2): path and query become the target,
        // the authority is the target's, the Host field is ignored.
        let bytes = with("GET /chat", "GET hTTp://Other.example:8080/chat?x=1");
        let (req, _) = parse_all_ways(&bytes).unwrap();
        assert_eq!(req.target(), "/chat?x=1");
        assert_eq!((req.path(), req.query()), ("/chat", Some("x=1")));
        assert_eq!(req.authority(), Some("Other.example:8080"));
        assert!(req.websocket_key().is_ok());
        for (target, path) in [("https://h", "/"), ("http://h?q", "/?q"), ("http://[::1]/", "/")] {
            let bytes = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
            let (req, _) = parse_all_ways(bytes.as_bytes()).unwrap();
            assert_eq!(req.target(), path, "{target}");
        }
        // Host forms (RFC 9110 §7.2).
        for host in ["[::1]:9001", "127.0.0.1", "h:", "a.b-c_d~e"] {
            let (req, _) = parse_all_ways(&with("server.example.com", host)).unwrap();
            assert_eq!(req.authority(), Some(host));
            assert!(req.websocket_key().is_ok(), "{host}");
        }
        // An empty Host with an origin-form target: accepted, no authority
        // (and so not a WebSocket handshake).
        let plain = b"GET /healthz HTTP/1.1\r\nHost:\r\n\r\n";
        let (req, _) = parse_all_ways(plain).unwrap();
        assert!(req.host && req.authority().is_none());
        // Not so with an absolute-form target, which has an authority.
        assert_eq!(
            parse_all_ways(b"GET http://h/ HTTP/1.1\r\nHost:\r\n\r\n").unwrap_err(),
            HttpError::bad("empty Host header with an absolute-form target")
        );
        // HTTP/1.0 needs no Host; HTTP/1.1 does.
        assert!(parse_all_ways(b"GET / HTTP/1.0\r\n\r\n").is_ok());
        assert_eq!(
            parse_all_ways(b"GET / HTTP/1.1\r\nX: y\r\n\r\n").unwrap_err(),
            HttpError::bad("missing Host header")
        );
        // Identical Content-Length repeats are one (RFC 9110 §8.6).
        let bytes = b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\ncontent-length: 7\r\n\r\n";
        assert_eq!(parse_all_ways(bytes).unwrap().0.content_length, Some(7));
        // Transfer-Encoding is refused in HTTP/1.0 only (RFC 9112 §6.1).
        let te = "POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(parse_all_ways(te.as_bytes()).unwrap().0.transfer_encoding);
        assert_eq!(
            parse_all_ways(te.replace("1.1", "1.0").as_bytes()).unwrap_err().status,
            400
        );
    }

    /// RFC 9110 §10.1.1.
    #[test]
    fn expectations() {
        let req = |expect: &str, version: &str| {
            let bytes = format!("POST /p HTTP/1.{version}\r\nHost: x\r\n{expect}Content-Length: 1\r\n\r\n");
            parse_all_ways(bytes.as_bytes()).map(|(r, _)| r.expect_continue)
        };
        assert_eq!(req("", "1"), Ok(false));
        assert_eq!(req("Expect: 100-continue\r\n", "1"), Ok(true));
        assert_eq!(req("expect: 100-Continue\r\n", "1"), Ok(true));
        assert_eq!(req("Expect: , 100-continue ,\r\n", "1"), Ok(true));
        assert_eq!(req("Expect:\r\n", "1"), Ok(false));
        // "MUST ignore" it in HTTP/1.0.
        assert_eq!(req("Expect: 100-continue\r\n", "0"), Ok(false));
        for other in ["Expect: gzip\r\n", "Expect: 100-continue\r\nExpect: x=y\r\n"] {
            assert_eq!(req(other, "1").unwrap_err().status, 417, "{other}");
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

    /// RFC 9112 §3: a request line that alone passes the head limit is 414;
    /// past the request line, the limit is 431.
    #[test]
    fn long_request_line_is_414() {
        let limits = HeadLimits {
            max_size: 64,
            max_fields: 4,
        };
        let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(60));
        assert_eq!(parse_all_ways_within(&limits, long.as_bytes()).unwrap_err().status, 414);
        let fields = format!("GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n", "a".repeat(40));
        assert_eq!(
            parse_all_ways_within(&limits, fields.as_bytes()).unwrap_err().status,
            431
        );
        let fits = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(parse_all_ways_within(&limits, fits.as_bytes()).is_ok());
    }

    #[test]
    fn error_response_is_complete() {
        let mut out = Vec::new();
        write_error(&mut out, &HttpError::new(426, "unsupported"));
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        // RFC 9110 §7.8: Upgrade goes with the upgrade connection option.
        assert!(text.contains("\r\nUpgrade: websocket\r\n"));
        assert!(text.contains("\r\nConnection: Upgrade, close\r\n"));
        assert!(text.ends_with("\r\n\r\nunsupported\n"));
        assert!(text.contains("Content-Length: 12\r\n"));
        let mut out = Vec::new();
        write_error(&mut out, &HttpError::new(404, "no"));
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("\r\nConnection: close\r\n"));
        assert!(!text.contains("Upgrade") && !text.contains("Allow"));
    }

    /// RFC 9110 §9.3.2 (HEAD: the head a GET would get) and §15.5.6 (405
    /// carries Allow).
    #[test]
    fn error_responses_for_head_and_405() {
        let err = HttpError::new(405, "takes GET or POST").with_allow("GET, HEAD, POST");
        let mut get = Vec::new();
        write_error_response(&mut get, &err, false);
        let mut head = Vec::new();
        write_error_response(&mut head, &err, true);
        let get = String::from_utf8(get).unwrap();
        let head = String::from_utf8(head).unwrap();
        assert!(get.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(get.contains("\r\nAllow: GET, HEAD, POST\r\n"), "{get}");
        assert!(get.ends_with("\r\n\r\ntakes GET or POST\n"));
        assert!(get.contains("\r\nContent-Length: 18\r\n"));
        // The same head, no body.
        assert_eq!(format!("{head}takes GET or POST\n"), get);
        // A 405 made without a list still has Allow; any error may carry one.
        let mut out = Vec::new();
        write_error_response(&mut out, &HttpError::new(405, "x"), true);
        assert!(String::from_utf8(out).unwrap().contains("\r\nAllow: GET\r\n"));
        let mut out = Vec::new();
        write_error(&mut out, &HttpError::new(501, "x").with_allow("GET"));
        assert!(String::from_utf8(out).unwrap().contains("\r\nAllow: GET\r\n"));
        // Interim response for Expect: 100-continue.
        let mut out = Vec::new();
        write_continue(&mut out);
        assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    /// §4.2.2 step 5.5: the server picks among the offers in its own order.
    #[test]
    fn subprotocol_selection() {
        let bytes = with(
            "Sec-WebSocket-Protocol: chat, superchat\r\n",
            "Sec-WebSocket-Protocol: chat, ,superchat\r\nX: y\r\nsec-websocket-protocol: v2.json\r\n",
        );
        let (req, _) = parse_all_ways(&bytes).unwrap();
        assert_eq!(
            req.offered_protocols().collect::<Vec<_>>(),
            ["chat", "superchat", "v2.json"]
        );
        assert!(req.offers_protocol("v2.json") && !req.offers_protocol("Chat") && !req.offers_protocol(""));
        let prefs = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            select_subprotocol(&req, &prefs(&["superchat", "chat"])),
            Some("superchat")
        );
        assert_eq!(
            select_subprotocol(&req, &prefs(&["mqtt", "v2.json", "chat"])),
            Some("v2.json")
        );
        assert_eq!(select_subprotocol(&req, &prefs(&["mqtt", "CHAT"])), None);
        assert_eq!(select_subprotocol(&req, &[]), None);
        let (none, _) = parse_all_ways(&with("Sec-WebSocket-Protocol: chat, superchat\r\n", "")).unwrap();
        assert_eq!(none.offered_protocols().count(), 0);
        assert_eq!(select_subprotocol(&none, &prefs(&["chat"])), None);
        // A malformed offer matters only to an upgrade (`defect`).
        let (bad, _) = parse_all_ways(&with("chat, superchat", "chat, {x}")).unwrap();
        assert_eq!(bad.defect, Some(HttpError::bad("malformed Sec-WebSocket-Protocol")));
    }

    #[test]
    fn accept_with_protocol_and_extensions() {
        let key = b"dGhlIHNhbXBsZSBub25jZQ==";
        let mut out = Vec::new();
        write_accept_with(
            &mut out,
            key,
            Some("chat"),
            Some("permessage-deflate; client_max_window_bits"),
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
        );
        let mut plain = Vec::new();
        write_accept(&mut plain, key);
        let mut none = Vec::new();
        write_accept_with(&mut none, key, None, None).unwrap();
        assert_eq!(plain, none);
        // Nothing that could split the response is written.
        for (p, e) in [
            (Some("a b"), None),
            (Some("x\r\nSet-Cookie: y"), None),
            (Some(""), None),
            (None, Some("a\r\nb")),
            (None, Some("")),
            (None, Some("a\0")),
        ] {
            let mut out = Vec::new();
            assert_eq!(write_accept_with(&mut out, key, p, e).unwrap_err().status, 500);
            assert!(out.is_empty());
        }
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

    /// Feeds a response at every split and one byte at a time.
    fn response_all_ways(p: impl Fn() -> ResponseParser, resp: &[u8]) -> (Result<(), ResponseError>, Option<String>) {
        let run = |chunks: &[&[u8]]| {
            let mut parser = p();
            for c in chunks {
                match parser.feed(&LIMITS, c) {
                    Ok(Progress::Partial) => {}
                    Ok(Progress::Complete(_)) => return (Ok(()), parser.protocol().map(String::from)),
                    Err(e) => return (Err(e), None),
                }
            }
            (Err(ResponseError::Invalid("incomplete")), None)
        };
        let whole = run(&[resp]);
        for cut in 0..=resp.len() {
            assert_eq!(run(&[&resp[..cut], &resp[cut..]]), whole, "cut {cut}");
        }
        let ones: Vec<&[u8]> = resp.chunks(1).collect();
        assert_eq!(run(&ones), whole, "byte at a time");
        whole
    }

    /// §4.1: the client accepts a subprotocol only if it offered it.
    #[test]
    fn client_subprotocols() {
        let key = encode_key([9; 16]);
        let offered = ["v2.chat", "chat"];
        let mut req = Vec::new();
        write_client_request_with(&mut req, "h", "/", &key, &offered);
        let (parsed, _) = parse_all_ways(&req).unwrap();
        assert_eq!(parsed.offered_protocols().collect::<Vec<_>>(), offered);
        let prefs = vec!["chat".to_string()];
        let chosen = select_subprotocol(&parsed, &prefs);
        let accept = |p: Option<&str>| {
            let mut out = Vec::new();
            write_accept_with(&mut out, &key, p, None).unwrap();
            out
        };
        let with_offers = || ResponseParser::with_protocols(&key, &offered);
        assert_eq!(
            response_all_ways(with_offers, &accept(chosen)),
            (Ok(()), Some("chat".into()))
        );
        assert_eq!(response_all_ways(with_offers, &accept(None)), (Ok(()), None));
        let not_offered = ResponseError::Invalid("server selected a subprotocol that was not offered");
        assert_eq!(
            response_all_ways(with_offers, &accept(Some("v2"))).0,
            Err(not_offered.clone())
        );
        assert_eq!(
            response_all_ways(with_offers, &accept(Some("Chat"))).0,
            Err(not_offered.clone())
        );
        // Offered none: any selection fails the connection.
        let bare = || ResponseParser::new(&key);
        assert_eq!(
            response_all_ways(bare, &accept(Some("chat"))).0,
            Err(not_offered.clone())
        );
        let empty = String::from_utf8(accept(None)).unwrap();
        let empty = empty.replace("\r\n\r\n", "\r\nSec-WebSocket-Protocol:\r\n\r\n");
        assert_eq!(response_all_ways(bare, empty.as_bytes()).0, Err(not_offered));
        // §11.3.4 / §11.3.3: not twice in a response.
        let twice = String::from_utf8(accept(Some("chat"))).unwrap();
        let twice = twice.replace("\r\n\r\n", "\r\nSec-WebSocket-Protocol: chat\r\n\r\n");
        assert_eq!(
            response_all_ways(with_offers, twice.as_bytes()).0,
            Err(ResponseError::Invalid("more than one Sec-WebSocket-Protocol"))
        );
        let good = String::from_utf8(accept(None)).unwrap();
        let accept_line = good.lines().find(|l| l.starts_with("Sec-WebSocket-Accept")).unwrap();
        let twice = good.replace("\r\n\r\n", &format!("\r\n{accept_line}\r\n\r\n"));
        assert_eq!(
            response_all_ways(bare, twice.as_bytes()).0,
            Err(ResponseError::Invalid("wrong Sec-WebSocket-Accept"))
        );
        // No list written, no field sent.
        let mut plain = Vec::new();
        write_client_request_with::<&str>(&mut plain, "h", "/", &key, &[]);
        let mut old = Vec::new();
        write_client_request(&mut old, "h", "/", &key);
        assert_eq!(plain, old);
        assert!(!String::from_utf8(old).unwrap().contains("Protocol"));
    }

    #[test]
    fn client_status_lines() {
        let key = encode_key([9; 16]);
        let bare = || ResponseParser::new(&key);
        let mut good = Vec::new();
        write_accept(&mut good, &key);
        let good = String::from_utf8(good).unwrap();
        for (line, want) in [
            ("HTTP/1.1 101 Switching Protocols", Ok(())),
            ("HTTP/1.1 101 ", Ok(())),
            ("HTTP/1.1 101", Ok(())),
            ("HTTP/1.1 404 Not Found", Err(ResponseError::Status(404))),
            ("HTTP/1.1 +101 X", Err(ResponseError::Invalid("malformed status code"))),
            ("HTTP/1.1 1010 X", Err(ResponseError::Invalid("malformed status code"))),
            ("HTTP/1.1 601 X", Err(ResponseError::Invalid("malformed status code"))),
            ("HTTP/1.1 10 X", Err(ResponseError::Invalid("malformed status code"))),
            ("HTTX/1.1 101 X", Err(ResponseError::Invalid("malformed HTTP version"))),
            (
                "HTTP/1.1 101 \x01",
                Err(ResponseError::Invalid("control character in the message head")),
            ),
        ] {
            let resp = good.replacen("HTTP/1.1 101 Switching Protocols", line, 1);
            assert_eq!(response_all_ways(bare, resp.as_bytes()).0, want, "{line}");
        }
    }

    // ------------------------------------------ client permessage-deflate --

    const PMD: &str = "permessage-deflate";

    #[test]
    fn client_deflate_offers() {
        let ok = [
            DeflateOffer::DEFAULT,
            PMD,
            "Permessage-Deflate",
            "permessage-deflate ; client_no_context_takeover;server_no_context_takeover ;\tserver_max_window_bits=10; client_max_window_bits=12",
            "permessage-deflate; server_max_window_bits=\"10\"; client_max_window_bits=\"1\\5\"",
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits=9, permessage-deflate, ",
            ", permessage-deflate",
        ];
        for v in ok {
            let offer = DeflateOffer::parse(v).unwrap_or_else(|e| panic!("{v:?}: {e}"));
            assert_eq!(offer.value(), v);
        }
        assert_eq!(
            DeflateOffer::parse("permessage-deflate; server_max_window_bits=9, permessage-deflate")
                .unwrap()
                .offers
                .len(),
            2
        );
        let bad = [
            ("", "the extension offer is empty"),
            (" , ", "the extension offer is empty"),
            ("x-webkit-deflate-frame", "only permessage-deflate can be offered"),
            ("permessage-deflate, foo", "only permessage-deflate can be offered"),
            ("permessage-deflate; foo", "unknown permessage-deflate parameter"),
            (
                "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
                "repeated permessage-deflate parameter",
            ),
            (
                "permessage-deflate; client_max_window_bits; client_max_window_bits=9",
                "repeated permessage-deflate parameter",
            ),
            (
                "permessage-deflate; server_max_window_bits",
                "invalid server_max_window_bits",
            ),
            (
                "permessage-deflate; server_max_window_bits=16",
                "invalid server_max_window_bits",
            ),
            (
                "permessage-deflate; server_max_window_bits=08",
                "invalid server_max_window_bits",
            ),
            (
                "permessage-deflate; server_max_window_bits=7",
                "invalid server_max_window_bits",
            ),
            (
                "permessage-deflate; server_max_window_bits=100",
                "invalid server_max_window_bits",
            ),
            (
                "permessage-deflate; server_max_window_bits=\"\"",
                "invalid server_max_window_bits",
            ),
            (
                "permessage-deflate; server_max_window_bits=\"1 0\"",
                "invalid server_max_window_bits",
            ),
            (
                "permessage-deflate; client_max_window_bits=x",
                "invalid client_max_window_bits",
            ),
            (
                "permessage-deflate; server_no_context_takeover=1",
                "a no_context_takeover parameter with a value",
            ),
            (
                "permessage-deflate; client_max_window_bits=8",
                "client_max_window_bits=8 cannot be honoured (zlib needs a window of 9 bits or more)",
            ),
            ("permessage-deflate;", "malformed Sec-WebSocket-Extensions"),
            (
                "permessage-deflate client_max_window_bits",
                "malformed Sec-WebSocket-Extensions",
            ),
            (
                "permessage-deflate; server_max_window_bits=",
                "malformed Sec-WebSocket-Extensions",
            ),
            (
                "permessage-deflate; server_max_window_bits=\"10",
                "malformed Sec-WebSocket-Extensions",
            ),
            (
                "permessage-deflate\r\nX-Injected: 1",
                "malformed Sec-WebSocket-Extensions",
            ),
            ("permessage-deflate; a\0", "unknown permessage-deflate parameter"),
            (";permessage-deflate", "malformed Sec-WebSocket-Extensions"),
        ];
        for (v, why) in bad {
            assert_eq!(DeflateOffer::parse(v), Err(why), "{v:?}");
        }
        let default = DeflateOffer::default_offer();
        assert_eq!(default.value(), DeflateOffer::DEFAULT);
        assert_eq!(Ok(default), DeflateOffer::parse(DeflateOffer::DEFAULT));
    }

    #[test]
    fn client_request_offers_deflate() {
        let key = encode_key([3; 16]);
        let offer = DeflateOffer::parse("permessage-deflate; client_max_window_bits, permessage-deflate").unwrap();
        let mut req = Vec::new();
        write_client_request_with_extensions(&mut req, "h", "/", &key, &["chat"], Some(&offer));
        let (parsed, _) = parse_all_ways(&req).unwrap();
        assert_eq!(parsed.extensions.as_deref(), Some(offer.value()));
        assert!(parsed.offers_protocol("chat"));
        let mut none = Vec::new();
        write_client_request_with_extensions(&mut none, "h", "/", &key, &["chat"], None);
        let mut old = Vec::new();
        write_client_request_with(&mut old, "h", "/", &key, &["chat"]);
        assert_eq!(none, old);
        assert!(!String::from_utf8(old).unwrap().contains("Extensions"));
    }

    /// A 101 for `key` with these `Sec-WebSocket-Extensions` lines.
    fn accept_with_extension_lines(key: &Key, lines: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        write_accept(&mut out, key);
        out.truncate(out.len() - 2);
        for l in lines {
            out.extend_from_slice(format!("Sec-WebSocket-Extensions: {l}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    /// The agreed parameters for a response, fed at every split and one
    /// byte at a time (every way must agree).
    fn deflate_all_ways(offer: Option<&DeflateOffer>, resp: &[u8]) -> Result<Option<Params>, ResponseError> {
        let key_line = String::from_utf8_lossy(resp);
        assert!(key_line.starts_with("HTTP/1.1 101"));
        let key = encode_key([5; 16]);
        let run = |chunks: &[&[u8]]| {
            let mut p = ResponseParser::with_extensions::<&str>(&key, &[], offer);
            for c in chunks {
                match p.feed(&LIMITS, c) {
                    Ok(Progress::Partial) => {}
                    Ok(Progress::Complete(_)) => return Ok(p.deflate()),
                    Err(e) => return Err(e),
                }
            }
            Err(ResponseError::Invalid("incomplete"))
        };
        let whole = run(&[resp]);
        for cut in 0..=resp.len() {
            assert_eq!(run(&[&resp[..cut], &resp[cut..]]), whole, "cut {cut}");
        }
        let ones: Vec<&[u8]> = resp.chunks(1).collect();
        assert_eq!(run(&ones), whole, "byte at a time");
        whole
    }

    fn params(snct: bool, cnct: bool, server_bits: u8, client_bits: u8) -> Params {
        Params {
            server_no_context_takeover: snct,
            client_no_context_takeover: cnct,
            server_max_window_bits: server_bits,
            client_max_window_bits: client_bits,
            // These cases' responses carry the parameter when it is below 15.
            server_max_window_bits_answered: server_bits < MAX_WINDOW_BITS,
        }
    }

    /// RFC 7692 §7.1 from the client's side: which answers are valid for
    /// which offers, and what they agree.
    #[test]
    fn client_deflate_answers() {
        let key = encode_key([5; 16]);
        let invalid = |why| Err(ResponseError::Invalid(why));
        let nct = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
        type Agreed = Result<Option<Params>, ResponseError>;
        let cases: Vec<(&str, Vec<&str>, Agreed)> = vec![
            // Declined, or accepted as wsloop answers (shared, dedicated).
            (DeflateOffer::DEFAULT, vec![], Ok(None)),
            (DeflateOffer::DEFAULT, vec![nct], Ok(Some(params(true, true, 15, 15)))),
            (DeflateOffer::DEFAULT, vec![PMD], Ok(Some(params(false, false, 15, 15)))),
            (
                DeflateOffer::DEFAULT,
                vec!["Permessage-Deflate;Server_No_Context_Takeover ; server_max_window_bits=\"9\""],
                Ok(Some(params(true, false, 9, 15))),
            ),
            (
                DeflateOffer::DEFAULT,
                vec!["permessage-deflate; client_max_window_bits=10"],
                Ok(Some(params(false, false, 15, 10))),
            ),
            // Not offered, the server may still add these.
            (PMD, vec![nct], Ok(Some(params(true, true, 15, 15)))),
            (
                PMD,
                vec!["permessage-deflate; server_max_window_bits=8"],
                Ok(Some(params(false, false, 8, 15))),
            ),
            // Offered: promised, or to be answered.
            (
                "permessage-deflate; client_no_context_takeover",
                vec![PMD],
                Ok(Some(params(false, true, 15, 15))),
            ),
            (
                "permessage-deflate; client_max_window_bits=12",
                vec![PMD],
                Ok(Some(params(false, false, 15, 12))),
            ),
            (
                "permessage-deflate; client_max_window_bits=12",
                vec!["permessage-deflate; client_max_window_bits=11"],
                Ok(Some(params(false, false, 15, 11))),
            ),
            (
                "permessage-deflate; client_max_window_bits=12",
                vec!["permessage-deflate; client_max_window_bits=13"],
                invalid("client_max_window_bits in the response is larger than offered"),
            ),
            (
                "permessage-deflate; server_max_window_bits=10",
                vec!["permessage-deflate; server_max_window_bits=9"],
                Ok(Some(params(false, false, 9, 15))),
            ),
            (
                "permessage-deflate; server_max_window_bits=10",
                vec!["permessage-deflate; server_max_window_bits=11"],
                invalid("server_max_window_bits in the response is larger than offered"),
            ),
            (
                "permessage-deflate; server_max_window_bits=15",
                vec![PMD],
                invalid("the response drops the server_max_window_bits offered"),
            ),
            (
                "permessage-deflate; server_no_context_takeover",
                vec![PMD],
                invalid("the response drops the server_no_context_takeover offered"),
            ),
            // Several offers: the answer may accept any one.
            (
                "permessage-deflate; server_max_window_bits=10, permessage-deflate",
                vec![PMD],
                Ok(Some(params(false, false, 15, 15))),
            ),
            (
                "permessage-deflate; server_no_context_takeover, permessage-deflate; server_max_window_bits=9",
                vec!["permessage-deflate; server_max_window_bits=10"],
                invalid("the response drops the server_no_context_takeover offered"),
            ),
            // Malformed or not an answer at all.
            (
                PMD,
                vec!["permessage-deflate; client_max_window_bits=10"],
                invalid("client_max_window_bits in the response was not offered"),
            ),
            (
                DeflateOffer::DEFAULT,
                vec!["permessage-deflate; client_max_window_bits"],
                invalid("client_max_window_bits without a value in the response"),
            ),
            (
                DeflateOffer::DEFAULT,
                vec!["permessage-deflate; client_max_window_bits=8"],
                invalid("client_max_window_bits=8 is not supported (zlib needs 9 or more)"),
            ),
            (
                DeflateOffer::DEFAULT,
                vec!["permessage-deflate, permessage-deflate"],
                invalid("more than one permessage-deflate in the response"),
            ),
            (
                DeflateOffer::DEFAULT,
                vec![PMD, PMD],
                invalid("more than one permessage-deflate in the response"),
            ),
            (
                DeflateOffer::DEFAULT,
                vec!["", PMD],
                Ok(Some(params(false, false, 15, 15))),
            ),
            (
                DeflateOffer::DEFAULT,
                vec!["x-webkit-deflate-frame"],
                invalid("server selected an extension that was not offered"),
            ),
            (
                DeflateOffer::DEFAULT,
                vec!["permessage-deflate; mux"],
                invalid("unknown permessage-deflate parameter"),
            ),
            (
                DeflateOffer::DEFAULT,
                vec!["permessage-deflate; server_max_window_bits=16"],
                invalid("invalid server_max_window_bits"),
            ),
            (
                DeflateOffer::DEFAULT,
                vec!["permessage-deflate; server_max_window_bits"],
                invalid("invalid server_max_window_bits"),
            ),
            (
                DeflateOffer::DEFAULT,
                vec!["permessage-deflate; server_no_context_takeover; server_no_context_takeover"],
                invalid("repeated permessage-deflate parameter"),
            ),
            (
                DeflateOffer::DEFAULT,
                vec!["permessage-deflate; server_max_window_bits=\"9"],
                invalid("malformed Sec-WebSocket-Extensions"),
            ),
        ];
        for (offer, lines, want) in cases {
            let offer = DeflateOffer::parse(offer).unwrap();
            let resp = accept_with_extension_lines(&key, &lines);
            assert_eq!(
                deflate_all_ways(Some(&offer), &resp),
                want,
                "{offer:?} answered {lines:?}"
            );
        }
        // Nothing offered: any extension fails the connection (§4.1).
        let resp = accept_with_extension_lines(&key, &[nct]);
        assert_eq!(deflate_all_ways(None, &resp), invalid("server selected an extension"));
        assert_eq!(
            deflate_all_ways(None, &accept_with_extension_lines(&key, &[])),
            Ok(None)
        );
    }

    /// What wsloop's server side answers (`deflate::negotiate`), the client
    /// side accepts, and both agree on what each end does.
    #[test]
    fn client_accepts_what_the_server_answers() {
        use super::super::deflate::{negotiate, DeflateConfig, Mode};
        let key = encode_key([5; 16]);
        let offers = [
            DeflateOffer::DEFAULT,
            PMD,
            "permessage-deflate; client_no_context_takeover",
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits",
            "permessage-deflate; client_max_window_bits=11",
            "permessage-deflate; server_max_window_bits=9; client_max_window_bits=9",
            "permessage-deflate; server_max_window_bits=8, permessage-deflate; client_max_window_bits",
            // Not `server_max_window_bits=15`: the server's answer omits it,
            // which RFC 7692 §7.1.2.1 does not allow (see `deflate_answers`).
        ];
        for mode in [Mode::Shared, Mode::Dedicated] {
            for max_window_bits in 9..=15 {
                let config = DeflateConfig {
                    mode,
                    max_window_bits,
                    threshold: 0,
                };
                for offer in offers {
                    let offer = DeflateOffer::parse(offer).unwrap();
                    let server = negotiate(&config, [offer.value().as_bytes()]).unwrap();
                    let answer = server.response();
                    let resp = accept_with_extension_lines(&key, &[answer.as_str()]);
                    let client = deflate_all_ways(Some(&offer), &resp)
                        .unwrap_or_else(|e| panic!("{config:?} {offer:?} -> {answer:?}: {e}"))
                        .unwrap();
                    let what = format!("{config:?} {offer:?} -> {answer:?}");
                    assert_eq!(
                        client.server_no_context_takeover, server.server_no_context_takeover,
                        "{what}"
                    );
                    assert_eq!(client.server_max_window_bits, server.server_max_window_bits, "{what}");
                    // The client resets whenever the server's inflater may.
                    assert!(
                        client.client_no_context_takeover >= server.client_no_context_takeover,
                        "{what}"
                    );
                    assert!(client.client_max_window_bits <= server.client_max_window_bits, "{what}");
                }
            }
        }
    }
}
