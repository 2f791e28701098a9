//! An incremental reader of HTTP/1.1 message heads (RFC 9112 §2–§5), just
//! enough of HTTP for the opening handshake (RFC 6455 §4) and the few plain
//! endpoints a WebSocket daemon serves.
//!
//! Contract (after `httparse`): [`HeadReader::feed`] takes whatever bytes
//! arrived and returns [`Progress::Partial`] (give me more) or
//! [`Progress::Complete`] with the number of bytes the head used; anything
//! after that belongs to the next layer (a request body, or WebSocket
//! frames sent right behind the handshake). Each byte is scanned once:
//! complete lines are handed to the caller and forgotten, and only an
//! unfinished last line is carried over, so a client trickling its request
//! one byte at a time costs linear, not quadratic, work.

use std::fmt;

/// A request the server refuses, as the HTTP status it answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpError {
    pub status: u16,
    /// One line for the response body and the log.
    pub reason: &'static str,
}

impl HttpError {
    pub const fn new(status: u16, reason: &'static str) -> Self {
        HttpError { status, reason }
    }
    pub(crate) const fn bad(reason: &'static str) -> Self {
        HttpError { status: 400, reason }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, status_text(self.status), self.reason)
    }
}

/// The reason phrase for the statuses this crate sends.
pub fn status_text(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Limits on a message head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Bytes from the first byte of the start line to the end of the empty
    /// line that ends the head.
    pub max_size: usize,
    /// Header field lines (the start line not counted).
    pub max_fields: usize,
}

/// Result of feeding bytes to a [`HeadReader`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The head is not complete; every byte given was consumed.
    Partial,
    /// The head ended after this many bytes of the last input.
    Complete(usize),
}

const TOO_LARGE: HttpError = HttpError::new(431, "request header block too large");
const TOO_MANY: HttpError = HttpError::new(431, "too many header fields");

/// Splits a byte stream into the lines of a message head.
#[derive(Debug, Default)]
pub struct HeadReader {
    /// The unfinished last line (never contains `\n`).
    carry: Vec<u8>,
    size: usize,
    lines: usize,
}

impl HeadReader {
    pub fn new() -> Self {
        HeadReader::default()
    }

    /// Feeds `input`, calling `on_line` with each complete line (the start
    /// line first, then each field line; line terminators removed).
    pub fn feed<F>(&mut self, limits: &HeadLimits, input: &[u8], mut on_line: F) -> Result<Progress, HttpError>
    where
        F: FnMut(&[u8]) -> Result<(), HttpError>,
    {
        let mut at = 0;
        while let Some(i) = input[at..].iter().position(|&b| b == b'\n') {
            let end = at + i + 1;
            self.size += end - at;
            if self.size > limits.max_size {
                return Err(TOO_LARGE);
            }
            let mut carried = std::mem::take(&mut self.carry);
            let line: &[u8] = if carried.is_empty() {
                &input[at..at + i]
            } else {
                carried.extend_from_slice(&input[at..at + i]);
                &carried
            };
            // RFC 9112 §2.2: lines end in CRLF; "a recipient MAY recognize a
            // single LF as a line terminator and ignore any preceding CR".
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            at = end;
            if line.is_empty() {
                if self.lines == 0 {
                    // §2.2: a server "SHOULD ignore at least one empty line
                    // (CRLF) received prior to the request-line".
                    continue;
                }
                return Ok(Progress::Complete(at));
            }
            if line.contains(&b'\r') {
                return Err(HttpError::bad("bare CR in the request head"));
            }
            self.lines += 1;
            if self.lines > limits.max_fields + 1 {
                return Err(TOO_MANY);
            }
            on_line(line)?;
            // Keep the allocation, if any, for the next carried line.
            carried.clear();
            self.carry = carried;
        }
        self.size += input.len() - at;
        if self.size > limits.max_size {
            return Err(TOO_LARGE);
        }
        self.carry.extend_from_slice(&input[at..]);
        Ok(Progress::Partial)
    }

    /// Whether any start-line byte has been seen.
    pub fn started(&self) -> bool {
        self.size > 0
    }
}

/// Splits a field line into a name and a value with surrounding whitespace
/// removed (RFC 9110 §5.1, RFC 9112 §5). A line that starts with white space
/// is obsolete line folding, which §5.2 lets a server reject with 400.
pub fn split_field(line: &[u8]) -> Result<(&[u8], &[u8]), HttpError> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(HttpError::bad("obsolete line folding"));
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(HttpError::bad("header line without a colon"))?;
    let name = &line[..colon];
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(HttpError::bad("invalid header name"));
    }
    Ok((name, trim(&line[colon + 1..])))
}

/// RFC 9110 §5.6.2 token characters.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Trims optional white space (SP / HTAB) from both ends.
pub fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// Whether a comma-separated field value lists `token` (ASCII case-insensitive).
pub fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| trim(t).eq_ignore_ascii_case(token.as_bytes()))
}

/// Parses `HTTP/1.x` into x; other majors are not spoken here.
pub fn parse_version(v: &[u8]) -> Result<u8, HttpError> {
    match v {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor] if minor.is_ascii_digit() => Ok(minor - b'0'),
        [b'H', b'T', b'T', b'P', b'/', major, b'.', _] if major.is_ascii_digit() => {
            Err(HttpError::new(505, "only HTTP/1.1 is supported"))
        }
        _ => Err(HttpError::bad("malformed HTTP version")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_size: 8192,
        max_fields: 100,
    };

    fn lines_of(chunks: &[&[u8]]) -> (Vec<String>, Result<Progress, HttpError>) {
        let mut r = HeadReader::new();
        let mut lines = Vec::new();
        let mut last = Ok(Progress::Partial);
        for c in chunks {
            last = r.feed(&LIMITS, c, |l| {
                lines.push(String::from_utf8_lossy(l).into_owned());
                Ok(())
            });
            if !matches!(last, Ok(Progress::Partial)) {
                break;
            }
        }
        (lines, last)
    }

    #[test]
    fn lines_at_every_split() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\nrest";
        let body_at = head.len() - 4;
        for cut in 0..=body_at {
            let (lines, p) = lines_of(&[&head[..cut], &head[cut..]]);
            assert_eq!(lines, ["GET / HTTP/1.1", "Host: a", "X: y"], "cut {cut}");
            // The head ends 4 bytes before the end of the input, in the
            // first chunk only if that chunk holds all of it.
            let expect = if cut == body_at { body_at } else { body_at - cut };
            assert_eq!(p, Ok(Progress::Complete(expect)), "cut {cut}");
        }
        // One byte at a time.
        let bytes: Vec<&[u8]> = head[..body_at].chunks(1).collect();
        let (lines, p) = lines_of(&bytes);
        assert_eq!(lines.len(), 3);
        assert_eq!(p, Ok(Progress::Complete(1)));
    }

    #[test]
    fn bare_lf_and_leading_empty_line() {
        let (lines, p) = lines_of(&[b"\r\nGET / HTTP/1.1\nHost: a\n\n"]);
        assert_eq!(lines, ["GET / HTTP/1.1", "Host: a"]);
        assert_eq!(p, Ok(Progress::Complete(26)));
    }

    #[test]
    fn size_and_count_limits() {
        let big = vec![b'a'; 9000];
        assert_eq!(lines_of(&[b"GET / HTTP/1.1\r\nX: ", &big]).1, Err(TOO_LARGE));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..101 {
            many.extend_from_slice(format!("X{i}: y\r\n").as_bytes());
        }
        assert_eq!(lines_of(&[&many]).1, Err(TOO_MANY));
        // Exactly 100 fields is fine.
        let mut hundred = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..100 {
            hundred.extend_from_slice(format!("X{i}: y\r\n").as_bytes());
        }
        hundred.extend_from_slice(b"\r\n");
        assert!(matches!(lines_of(&[&hundred]).1, Ok(Progress::Complete(_))));
    }

    #[test]
    fn field_splitting() {
        assert_eq!(
            split_field(b"Host:  example.com \t"),
            Ok((&b"Host"[..], &b"example.com"[..]))
        );
        assert_eq!(split_field(b"X:"), Ok((&b"X"[..], &b""[..])));
        assert_eq!(split_field(b" folded"), Err(HttpError::bad("obsolete line folding")));
        assert_eq!(
            split_field(b"no colon"),
            Err(HttpError::bad("header line without a colon"))
        );
        assert_eq!(split_field(b"Bad Name: x"), Err(HttpError::bad("invalid header name")));
        assert_eq!(split_field(b": x"), Err(HttpError::bad("invalid header name")));
    }

    #[test]
    fn tokens_and_versions() {
        assert!(has_token(b"keep-alive, Upgrade", "upgrade"));
        assert!(has_token(b"UPGRADE", "upgrade"));
        assert!(!has_token(b"keep-alive, upgraded", "upgrade"));
        assert_eq!(parse_version(b"HTTP/1.1"), Ok(1));
        assert_eq!(parse_version(b"HTTP/1.0"), Ok(0));
        assert_eq!(parse_version(b"HTTP/2.0").unwrap_err().status, 505);
        assert_eq!(parse_version(b"HTTX/1.1").unwrap_err().status, 400);
    }
}
