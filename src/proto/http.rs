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
    /// The methods the target resource takes, for the `Allow` field of a
    /// 405 (RFC 9110 §15.5.6: "The origin server MUST generate an Allow
    /// header field in a 405 response containing a list of the target
    /// resource's currently supported methods"), e.g. `"GET, HEAD, POST"`.
    pub allow: Option<&'static str>,
}

impl HttpError {
    pub const fn new(status: u16, reason: &'static str) -> Self {
        HttpError {
            status,
            reason,
            allow: None,
        }
    }
    pub(crate) const fn bad(reason: &'static str) -> Self {
        HttpError::new(400, reason)
    }
    /// The same error carrying an `Allow` list (see [`HttpError::allow`]).
    pub const fn with_allow(self, allow: &'static str) -> Self {
        HttpError {
            allow: Some(allow),
            ..self
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, status_text(self.status), self.reason)
    }
}

impl std::error::Error for HttpError {}

/// The reason phrase for the statuses this crate sends.
pub fn status_text(status: u16) -> &'static str {
    match status {
        100 => "Continue",
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
        414 => "URI Too Long",
        417 => "Expectation Failed",
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

pub(crate) const TOO_LARGE: HttpError = HttpError::new(431, "request header block too large");
const TOO_MANY: HttpError = HttpError::new(431, "too many header fields");
const BARE_CR: HttpError = HttpError::bad("bare CR in the message head");
const BARE_LF: HttpError = HttpError::bad("line not ended by CRLF");
const CONTROL: HttpError = HttpError::bad("control character in the message head");

/// Splits a byte stream into the lines of a message head.
///
/// Every byte of the head is checked as it arrives:
/// - RFC 9112 §2.2: lines end in CRLF. The same section lets a recipient
///   also take a bare LF as a line end; we do not, because a proxy in front
///   of us may split the same bytes into other lines (request smuggling), so
///   a bare LF is a 400. "A sender MUST NOT generate a bare CR [...] A
///   recipient of such a bare CR MUST consider that element to be invalid
///   or replace each bare CR with SP": we reject it.
/// - RFC 9110 §5.5: a field value is VCHAR, obs-text, SP and HTAB; "Field
///   values containing CR, LF, or NUL characters are invalid and dangerous
///   [...] a recipient MUST either reject the message or replace each of
///   those characters with SP"; other CTLs are "also invalid". The start
///   line admits no CTL either (RFC 9112 §3: method is a token, the target
///   is URI characters, and §4: a reason phrase is HTAB / SP / VCHAR /
///   obs-text). So any CTL but HTAB (0x00–0x1F, 0x7F) is a 400.
#[derive(Debug, Default)]
pub struct HeadReader {
    /// The unfinished last line (never contains `\n`).
    carry: Vec<u8>,
    size: usize,
    lines: usize,
    /// The last byte seen was a CR, so the next one must be LF.
    cr: bool,
}

impl HeadReader {
    pub fn new() -> Self {
        HeadReader::default()
    }

    /// Feeds `input`, calling `on_line` with each complete line (the start
    /// line first, then each field line; line terminators removed). Bytes
    /// after the head are not looked at.
    ///
    /// Bytes are checked one by one only where the rules above can say
    /// something: runs of plain bytes (anything but a CTL) are skipped
    /// eight at a time (see [`plain_run`]), and each CTL (CR, LF, HTAB or
    /// another) and each byte after a CR is then checked as before.
    pub fn feed<F>(&mut self, limits: &HeadLimits, input: &[u8], mut on_line: F) -> Result<Progress, HttpError>
    where
        F: FnMut(&[u8]) -> Result<(), HttpError>,
    {
        // Every rule is checked at the byte that breaks it, so the verdict
        // does not depend on how the input was split: bytes before `limit`
        // are read by the rules below, and the byte at `limit`, if any, is
        // the first past the head's size limit.
        let limit = input.len().min(limits.max_size.saturating_sub(self.size));
        // `at`: the start of the current line in `input`; `i`: the next byte.
        let (mut at, mut i) = (0, 0);
        while i < limit {
            if !self.cr {
                // Plain bytes after anything but a CR break no rule.
                i += plain_run(&input[i..limit]);
                if i == limit {
                    break;
                }
            }
            let b = input[i];
            i += 1;
            match b {
                b'\n' if self.cr => {}
                b'\n' => return Err(BARE_LF),
                _ if self.cr => return Err(BARE_CR),
                b'\r' => {
                    self.cr = true;
                    continue;
                }
                b'\t' | b' '..=b'~' | 0x80..=0xff => continue,
                _ => return Err(CONTROL),
            }
            self.cr = false;
            self.size += i - at;
            let line = &input[at..i - 1];
            at = i;
            if self.end_line(limits, line, &mut on_line)? {
                return Ok(Progress::Complete(at));
            }
        }
        if limit < input.len() {
            return Err(TOO_LARGE);
        }
        self.size += input.len() - at;
        self.carry.extend_from_slice(&input[at..]);
        Ok(Progress::Partial)
    }

    /// Handles a line that ended (with its LF) in the last input: `tail` is
    /// its part in that input, after whatever the carry holds; the CR before
    /// the LF (checked) is the last byte of the two. Returns whether the
    /// line is the empty one that ends the head.
    fn end_line<F>(&mut self, limits: &HeadLimits, tail: &[u8], on_line: &mut F) -> Result<bool, HttpError>
    where
        F: FnMut(&[u8]) -> Result<(), HttpError>,
    {
        let line = if self.carry.is_empty() {
            tail.strip_suffix(b"\r").unwrap_or(tail)
        } else {
            // Rare: the line began in an earlier input. Join it in a copy, so
            // that the carry's allocation is kept for the next such line.
            let mut carried = std::mem::take(&mut self.carry);
            carried.extend_from_slice(tail);
            let line = carried.strip_suffix(b"\r").unwrap_or(&carried);
            let r = self.whole_line(limits, line, on_line);
            carried.clear();
            self.carry = carried;
            return r;
        };
        self.whole_line(limits, line, on_line)
    }

    /// [`HeadReader::end_line`] for the whole line, terminator removed.
    fn whole_line<F>(&mut self, limits: &HeadLimits, line: &[u8], on_line: &mut F) -> Result<bool, HttpError>
    where
        F: FnMut(&[u8]) -> Result<(), HttpError>,
    {
        if line.is_empty() {
            // §2.2: a server "SHOULD ignore at least one empty line (CRLF)
            // received prior to the request-line" (all such lines count
            // toward the size limit).
            return Ok(self.lines > 0);
        }
        self.lines += 1;
        if self.lines > limits.max_fields + 1 {
            return Err(TOO_MANY);
        }
        on_line(line)?;
        Ok(false)
    }

    /// Whether any start-line byte has been seen.
    pub fn started(&self) -> bool {
        self.size > 0
    }
}

/// The length of the run of plain bytes (anything but a CTL: 0x00–0x1F,
/// 0x7F) that `s` starts with.
///
/// Eight bytes at a time: [`ctl_flags`] of a little-endian word flags the
/// first CTL in it exactly (the lowest flag; flags above it may be false),
/// so the first flag's byte is where the run ends. The last few bytes are
/// tested one by one.
fn plain_run(s: &[u8]) -> usize {
    let mut rest = s;
    while let Some((word, tail)) = rest.split_first_chunk::<8>() {
        let flags = ctl_flags(u64::from_le_bytes(*word));
        if flags != 0 {
            return s.len() - rest.len() + (flags.trailing_zeros() / 8) as usize;
        }
        rest = tail;
    }
    let done = s.len() - rest.len();
    done + rest.iter().position(|&b| b < 0x20 || b == 0x7f).unwrap_or(rest.len())
}

/// The high bit of each byte of `x` that is a CTL (below 0x20, or 0x7F),
/// and possibly of bytes above (in significance) the lowest such byte, never
/// below it: a byte's subtraction borrows only from the bytes above it
/// ("hasless" and "haszero" of Sean Anderson's Bit Twiddling Hacks).
const fn ctl_flags(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = ONES * 0x80;
    // A byte below 0x20 (and so below 0x80) borrows and keeps its high bit
    // clear: its flag is set. A byte from 0x20 up, with no borrow coming in,
    // yields no flag (from 0xA0 up the difference has the high bit, but the
    // byte has it too).
    let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
    // 0x7F: a zero byte of x ^ 0x7F7F...; the same argument with 0x01.
    let y = x ^ (ONES * 0x7f);
    let del = y.wrapping_sub(ONES) & !y & HIGH;
    below_space | del
}

/// Splits a field line into a name and a value with surrounding whitespace
/// removed (RFC 9110 §5.1, RFC 9112 §5). The line is one that
/// [`HeadReader`] handed over, so it holds no CTL but HTAB (RFC 9110 §5.5).
pub fn split_field(line: &[u8]) -> Result<(&[u8], &[u8]), HttpError> {
    // The common case in one pass: a token, then the colon. Anything else
    // (no name, a byte outside tchar before any colon) takes the checks
    // below, which give the reason; this takes only lines they accept as
    // they would (a colon is no tchar, so it is the first colon, and the
    // name, all tchar, neither starts nor ends with white space).
    let colon = token_len(line);
    if colon > 0 && line.get(colon) == Some(&b':') {
        return Ok((&line[..colon], trim(&line[colon + 1..])));
    }
    split_field_slowly(line)
}

/// The length of the run of tchar that `s` starts with.
fn token_len(s: &[u8]) -> usize {
    run_len(s, &TCHAR)
}

/// The length of the run of bytes in `set` that `s` starts with: a word's
/// eight table lookups make a bit mask, with no branch between them, and
/// the run ends at the mask's first clear bit; the last few bytes one by
/// one.
pub(crate) fn run_len(s: &[u8], set: &[bool; 256]) -> usize {
    let mut rest = s;
    while let Some((word, tail)) = rest.split_first_chunk::<8>() {
        let mask = word
            .iter()
            .enumerate()
            .fold(0u32, |m, (i, &b)| m | u32::from(set[usize::from(b)]) << i);
        if mask != 0xff {
            return s.len() - rest.len() + mask.trailing_ones() as usize;
        }
        rest = tail;
    }
    let done = s.len() - rest.len();
    done + rest.iter().position(|&b| !set[usize::from(b)]).unwrap_or(rest.len())
}

/// [`split_field`] checking each rule in turn.
#[cold]
fn split_field_slowly(line: &[u8]) -> Result<(&[u8], &[u8]), HttpError> {
    // RFC 9112 §5.2: a line that starts with white space is obsolete line
    // folding, which a server may reject with 400; §2.2: "A recipient that
    // receives whitespace between the start-line and the first header field
    // MUST either reject the message as invalid or [...]".
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(HttpError::bad("obsolete line folding"));
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(HttpError::bad("header line without a colon"))?;
    let name = &line[..colon];
    // RFC 9112 §5.1: "A server MUST reject, with a response status code of
    // 400 (Bad Request), any received request message that contains
    // whitespace between a header field name and colon."
    if matches!(name.last(), Some(b' ' | b'\t')) {
        return Err(HttpError::bad("whitespace between a header name and its colon"));
    }
    // RFC 9110 §5.1: field-name = token.
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(HttpError::bad("invalid header name"));
    }
    Ok((name, trim(&line[colon + 1..])))
}

/// RFC 9110 §5.6.2 token characters: tchar = "!" / "#" / "$" / "%" / "&"
/// / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|" / "~" / DIGIT /
/// ALPHA.
pub fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// [`is_tchar`] as a table: one load per byte.
const TCHAR: [bool; 256] = alnum_and(&[b"!#$%&'*+-.^_`|~"]);

/// RFC 3986 §2.3: unreserved = ALPHA / DIGIT / "-" / "." / "_" / "~".
const UNRESERVED_MARKS: &[u8] = b"-._~";
/// RFC 3986 §2.2: sub-delims = "!" / "$" / "&" / "'" / "(" / ")" / "*" /
/// "+" / "," / ";" / "=".
const SUB_DELIMS: &[u8] = b"!$&'()*+,;=";

/// RFC 3986 §3.2.2 reg-name characters but pct-encoded: unreserved and
/// sub-delims.
const REG_NAME: [bool; 256] = alnum_and(&[UNRESERVED_MARKS, SUB_DELIMS]);

/// A membership table of the ASCII letters and digits and the bytes of
/// each of `extra`.
pub(crate) const fn alnum_and(extra: &[&[u8]]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut set = 0;
    while set < extra.len() {
        let mut i = 0;
        while i < extra[set].len() {
            table[extra[set][i] as usize] = true;
            i += 1;
        }
        set += 1;
    }
    table
}

/// Whether `v` is a non-empty RFC 9110 §5.6.2 token.
pub fn is_token(v: &[u8]) -> bool {
    !v.is_empty() && v.iter().all(|&b| is_tchar(b))
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

/// The elements of a comma-separated list field value (RFC 9110 §5.6.1),
/// trimmed; empty elements are skipped ("a recipient MUST parse and ignore
/// a reasonable number of empty list elements").
pub fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim).filter(|e| !e.is_empty())
}

/// Whether a comma-separated field value lists `token` (ASCII
/// case-insensitive), a token we look for: lowercase letters and `-` (see
/// [`eq_lowercase`]; `value` is a [`HeadReader`] line's).
pub fn has_token(value: &[u8], token: &str) -> bool {
    let mut found = false;
    has_tokens(value, &mut [(token, &mut found)]);
    found
}

/// [`has_token`] for several tokens in one pass over `value`: sets each
/// flag whose token the value lists (and leaves the others as they were).
pub(crate) fn has_tokens(value: &[u8], tokens: &mut [(&str, &mut bool)]) {
    // The elements of `list_elements`, without its iterator's machinery
    // (the common value is one element, e.g. `Upgrade: websocket`).
    let mut rest = value;
    loop {
        let (element, next) = match rest.iter().position(|&b| b == b',') {
            Some(comma) => (&rest[..comma], Some(&rest[comma + 1..])),
            None => (rest, None),
        };
        // Empty elements are skipped, as by `list_elements`.
        let element = trim(element);
        if !element.is_empty() {
            for (token, found) in tokens.iter_mut() {
                **found |= eq_lowercase(element, token);
            }
        }
        match next {
            Some(next) => rest = next,
            None => return,
        }
    }
}

/// Whether `s` is `lower` but for ASCII case, where `lower` is lowercase
/// letters and `-` (a header name or token we look for) and `s` holds no
/// CR (anything a [`HeadReader`] line holds). Then a byte matches a letter
/// exactly when it equals it with bit 0x20 set (the uppercase letter is the
/// only other byte that does) and `-` (0x2D) exactly when it is `-` (the
/// other such byte is CR), so the comparison is an OR and an equality,
/// eight bytes at a time.
pub fn eq_lowercase(s: &[u8], lower: &str) -> bool {
    let lower = lower.as_bytes();
    debug_assert!(lower.iter().all(|&b| b.is_ascii_lowercase() || b == b'-'), "{lower:?}");
    if s.len() != lower.len() {
        return false;
    }
    let (mut a, mut b) = (s, lower);
    while let (Some((x, a_rest)), Some((y, b_rest))) = (a.split_first_chunk::<8>(), b.split_first_chunk::<8>()) {
        if u64::from_le_bytes(*x) | 0x2020_2020_2020_2020 != u64::from_le_bytes(*y) {
            return false;
        }
        (a, b) = (a_rest, b_rest);
    }
    a.iter().zip(b).all(|(&x, &y)| x | 0x20 == y)
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

// ------------------------------------------------------ request target --

/// A request target reduced to what an origin server uses (RFC 9112 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTarget<'a> {
    /// The authority of an absolute-form target (validated as by
    /// [`valid_authority`], never empty).
    pub authority: Option<&'a [u8]>,
    /// The origin-form part: absolute path and optional `?query`, or, for
    /// an absolute-form target with an empty path, empty or `?query` (the
    /// path is then "/", RFC 9110 §4.2.3).
    pub path_and_query: &'a [u8],
}

/// Splits a request target. Origin-form (§3.2.1) and absolute-form with
/// an `http` or `https` scheme (§3.2.2: "A server MUST accept the
/// absolute-form in requests") are taken; authority-form (§3.2.3, for
/// CONNECT) and asterisk-form (§3.2.4, for server-wide OPTIONS) are not
/// served here (400), nor are other schemes.
pub fn parse_target(target: &[u8]) -> Result<RequestTarget<'_>, HttpError> {
    const BAD: HttpError = HttpError::bad("malformed request target");
    // URI characters only (RFC 3986 §2): no SP (it ends the target), no
    // CTL (rejected by the head reader), nothing outside ASCII, and no
    // fragment (RFC 9112 §3.2: the forms have none; RFC 9110 §7.1: a
    // fragment is not sent).
    if !target.iter().all(|&b| b.is_ascii_graphic() && b != b'#') {
        return Err(BAD);
    }
    match target.first() {
        Some(b'/') => {
            return Ok(RequestTarget {
                authority: None,
                path_and_query: target,
            })
        }
        Some(b'*') => return Err(HttpError::bad("asterisk-form request target is not served")),
        _ => {}
    }
    // absolute-URI = scheme ":" hier-part [ "?" query ] (RFC 3986 §4.3);
    // scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) (§3.1).
    let colon = target.iter().position(|&b| b == b':').ok_or(BAD)?;
    let (scheme, rest) = (&target[..colon], &target[colon + 1..]);
    let scheme_ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme.iter().all(|&b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    let Some(rest) = rest.strip_prefix(b"//").filter(|_| scheme_ok) else {
        return Err(HttpError::bad("authority-form request target is not served"));
    };
    // RFC 3986 §3.1: "schemes are case-insensitive".
    if !scheme.eq_ignore_ascii_case(b"http") && !scheme.eq_ignore_ascii_case(b"https") {
        return Err(HttpError::bad("request target scheme is not http or https"));
    }
    let end = rest.iter().position(|&b| b == b'/' || b == b'?').unwrap_or(rest.len());
    let authority = &rest[..end];
    // RFC 9110 §4.2.4: "Before making use of an "http" or "https" URI
    // reference received from an untrusted source, a recipient SHOULD parse
    // for userinfo and treat its presence as an error".
    if authority.contains(&b'@') {
        return Err(HttpError::bad("userinfo in the request target"));
    }
    // RFC 9110 §4.2.1: "A recipient that processes such a URI reference
    // [with an empty host identifier] MUST reject it as invalid."
    if !valid_authority(authority) {
        return Err(HttpError::bad("invalid authority in the request target"));
    }
    Ok(RequestTarget {
        authority: Some(authority),
        path_and_query: &rest[end..],
    })
}

/// Whether `v` is `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986
/// §3.2.2–3.2.3) with a non-empty host (RFC 9110 §4.2.1: an http URI with
/// an empty host is invalid): a reg-name (which covers IPv4address), or an
/// IP-literal in brackets; the port is digits, possibly none (RFC 3986
/// §3.2.3), and at most 65535, the largest TCP port.
pub fn valid_authority(v: &[u8]) -> bool {
    // The common case: a reg-name (an IPv4 address is one too) with no
    // percent-encoding, then the port if any. A colon is no reg-name byte,
    // so the run ends at the first one; anything else takes the general
    // path below, which accepts what this does.
    let run = run_len(v, &REG_NAME);
    match v.get(run) {
        None if run > 0 => return true,
        Some(b':') if run > 0 => return valid_port(&v[run + 1..]),
        _ => {}
    }
    valid_authority_slowly(v)
}

/// RFC 3986 §3.2.3: port = *DIGIT; here also at most 65535.
fn valid_port(p: &[u8]) -> bool {
    p.iter().all(u8::is_ascii_digit)
        && p.iter()
            .try_fold(0u32, |n, &d| Some(n * 10 + u32::from(d - b'0')).filter(|&n| n <= 65535))
            .is_some()
}

/// [`valid_authority`] for any authority.
fn valid_authority_slowly(v: &[u8]) -> bool {
    let (host, port) = if v.first() == Some(&b'[') {
        let Some(close) = v.iter().position(|&b| b == b']') else {
            return false;
        };
        if !valid_ip_literal(&v[1..close]) {
            return false;
        }
        match &v[close + 1..] {
            [] => (&v[..close + 1], None),
            [b':', port @ ..] => (&v[..close + 1], Some(port)),
            _ => return false,
        }
    } else {
        match v.iter().position(|&b| b == b':') {
            Some(c) => (&v[..c], Some(&v[c + 1..])),
            None => (v, None),
        }
    };
    let port_ok = port.is_none_or(valid_port);
    !host.is_empty() && port_ok && (host[0] == b'[' || valid_reg_name(host))
}

/// RFC 3986 §3.2.2: reg-name = *( unreserved / pct-encoded / sub-delims ).
fn valid_reg_name(v: &[u8]) -> bool {
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'%' => {
                if !(v.get(i + 1).is_some_and(u8::is_ascii_hexdigit) && v.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
                {
                    return false;
                }
                i += 3;
            }
            b if REG_NAME[usize::from(b)] => i += 1,
            _ => return false,
        }
    }
    true
}

/// RFC 3986 §3.2.2: IP-literal = "[" ( IPv6address / IPvFuture ) "]" (the
/// part between the brackets); IPvFuture = "v" 1*HEXDIG "." 1*( unreserved
/// / sub-delims / ":" ).
fn valid_ip_literal(v: &[u8]) -> bool {
    if let Some(rest) = v.strip_prefix(b"v").or_else(|| v.strip_prefix(b"V")) {
        let Some(dot) = rest.iter().position(|&b| b == b'.') else {
            return false;
        };
        let (ver, tail) = (&rest[..dot], &rest[dot + 1..]);
        return !ver.is_empty()
            && ver.iter().all(u8::is_ascii_hexdigit)
            && !tail.is_empty()
            && tail.iter().all(|&b| REG_NAME[usize::from(b)] || b == b':');
    }
    std::str::from_utf8(v).is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok())
}

// ------------------------------------------------------- authorization --

/// The token of `Authorization: Bearer <token>` (RFC 6750 §2.1), or None
/// for another scheme or a malformed value. RFC 9110 §11.4: credentials =
/// auth-scheme [ 1*SP ( token68 / #auth-param ) ], and §11.1: the scheme
/// "uses a case-insensitive token"; RFC 9110 §11.2: token68 = 1*( ALPHA /
/// DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=". Compare the result
/// with [`token_matches`].
pub fn bearer_token(value: &str) -> Option<&str> {
    let value = value.trim_matches([' ', '\t']);
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim_start_matches(' ');
    let body = token.trim_end_matches('=');
    let token68 = !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    token68.then_some(token)
}

/// Whether `given` equals `expected`, in time that depends only on the
/// length of `expected` (so neither the secret's bytes nor how many of
/// them a guess got right leak through timing). A wrong length compares
/// as unequal in the same time.
pub fn token_matches(given: &[u8], expected: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    let mut equal = (given.len() as u64).ct_eq(&(expected.len() as u64));
    for (i, e) in expected.iter().enumerate() {
        // Past the end of `given`, compare with 0: the length check above
        // already made the result false.
        let g = given.get(i).copied().unwrap_or(0);
        equal &= g.ct_eq(e);
    }
    equal.into()
}

/// Each of `seeds` with one byte replaced, by every value at every
/// position: the inputs on which the differential tests compare a fast
/// path with the general one.
#[cfg(test)]
pub(crate) fn one_byte_changes<'a>(seeds: &'a [&'a [u8]]) -> impl Iterator<Item = Vec<u8>> + 'a {
    seeds.iter().flat_map(|seed| {
        (0..seed.len()).flat_map(move |at| {
            (0..=255u8).map(move |b| {
                let mut v = seed.to_vec();
                v[at] = b;
                v
            })
        })
    })
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

    /// Feeds `head` whole, split at every offset, and one byte at a time;
    /// checks that all ways agree and returns the lines and the outcome
    /// (with `Complete(n)`, `n` counts from the start of `head`). A head
    /// that completes must end with its empty line.
    fn lines_all_ways(head: &[u8]) -> (Vec<String>, Result<Progress, HttpError>) {
        let whole = lines_of(&[head]);
        let total = |chunks: &[&[u8]]| {
            let (lines, p) = lines_of(chunks);
            // The chunks before the last one fed were used whole.
            let last = chunks.iter().rposition(|c| !c.is_empty()).unwrap_or(0);
            let before: usize = chunks[..last].iter().map(|c| c.len()).sum();
            (
                lines,
                p.map(|p| {
                    if let Progress::Complete(n) = p {
                        Progress::Complete(before + n)
                    } else {
                        p
                    }
                }),
            )
        };
        for cut in 0..=head.len() {
            assert_eq!(total(&[&head[..cut], &head[cut..]]), whole, "cut {cut}");
        }
        let ones: Vec<&[u8]> = head.chunks(1).collect();
        assert_eq!(total(&ones), whole, "byte at a time");
        whole
    }

    #[test]
    fn leading_empty_line_is_ignored() {
        let (lines, p) = lines_all_ways(b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(lines, ["GET / HTTP/1.1", "Host: a"]);
        assert_eq!(p, Ok(Progress::Complete(29)));
    }

    /// RFC 9112 §2.2: we take only CRLF as a line end; a bare LF or a bare
    /// CR anywhere in the head is a 400.
    #[test]
    fn bare_lf_and_bare_cr_are_400() {
        let cases: [(&[u8], HttpError); 8] = [
            (b"GET / HTTP/1.1\nHost: a\r\n\r\n", BARE_LF),
            (b"GET / HTTP/1.1\r\nHost: a\n\r\n", BARE_LF),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\n", BARE_LF),
            (b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", BARE_LF),
            (b"GET / HTTP/1.1\nHost: a\n\n", BARE_LF),
            (b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", BARE_CR),
            (b"GET / HTTP/1.1\r\r\nHost: a\r\n\r\n", BARE_CR),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n", BARE_CR),
        ];
        for (head, err) in cases {
            assert_eq!(lines_all_ways(head).1, Err(err), "{}", String::from_utf8_lossy(head));
        }
    }

    /// RFC 9110 §5.5: a CTL other than HTAB in a field value (or anywhere
    /// else in the head) is a 400; HTAB, SP, VCHAR and obs-text are fine.
    #[test]
    fn control_characters() {
        let ctls = (0u8..0x20).filter(|&b| !b"\t\r\n".contains(&b)).chain([0x7f]);
        for c in ctls {
            for at in ["GET /\u{1}x HTTP/1.1", "X-A: a\u{1}b", "X-A: \u{1}", "X\u{1}A: b"] {
                let head =
                    format!("GET / HTTP/1.1\r\n{at}\r\nHost: a\r\n\r\n").replace('\u{1}', &char::from(c).to_string());
                let head = head.replacen("GET / HTTP/1.1\r\nGET", "GET", 1);
                assert_eq!(lines_all_ways(head.as_bytes()).1, Err(CONTROL), "{c:#x} in {at}");
            }
        }
        let fine = b"GET / HTTP/1.1\r\nX-A: a\tb \x80\xff~\r\n\r\n";
        let (lines, p) = lines_all_ways(fine);
        assert_eq!(p, Ok(Progress::Complete(fine.len())));
        assert_eq!(lines[1].as_bytes(), "X-A: a\tb \u{fffd}\u{fffd}~".as_bytes());
        // Bytes after the head (a body, frames) are not looked at.
        let mut then_body = b"GET / HTTP/1.1\r\n\r\n".to_vec();
        then_body.extend_from_slice(b"\x00\x01\n\r");
        assert_eq!(lines_of(&[&then_body]).1, Ok(Progress::Complete(18)));
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

    /// The reader as it was before runs of plain bytes were skipped eight
    /// at a time: every byte through the rules in turn. The new one must
    /// agree with it on every input, however split.
    #[derive(Debug, Default)]
    struct Bytewise {
        carry: Vec<u8>,
        size: usize,
        lines: usize,
        cr: bool,
    }

    impl Bytewise {
        fn feed<F>(&mut self, limits: &HeadLimits, input: &[u8], mut on_line: F) -> Result<Progress, HttpError>
        where
            F: FnMut(&[u8]) -> Result<(), HttpError>,
        {
            let mut at = 0;
            let room = limits.max_size.saturating_sub(self.size);
            for (i, &b) in input.iter().enumerate() {
                if i >= room {
                    return Err(TOO_LARGE);
                }
                match b {
                    b'\n' if self.cr => {}
                    b'\n' => return Err(BARE_LF),
                    _ if self.cr => return Err(BARE_CR),
                    b'\r' => {
                        self.cr = true;
                        continue;
                    }
                    b'\t' | b' '..=b'~' | 0x80..=0xff => continue,
                    _ => return Err(CONTROL),
                }
                self.cr = false;
                let end = i + 1;
                self.size += end - at;
                let mut carried = std::mem::take(&mut self.carry);
                let line: &[u8] = if carried.is_empty() {
                    &input[at..i]
                } else {
                    carried.extend_from_slice(&input[at..i]);
                    &carried
                };
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                at = end;
                if line.is_empty() {
                    if self.lines == 0 {
                        continue;
                    }
                    return Ok(Progress::Complete(at));
                }
                self.lines += 1;
                if self.lines > limits.max_fields + 1 {
                    return Err(TOO_MANY);
                }
                on_line(line)?;
                carried.clear();
                self.carry = carried;
            }
            self.size += input.len() - at;
            self.carry.extend_from_slice(&input[at..]);
            Ok(Progress::Partial)
        }
    }

    /// What a feed of `chunks` did: each result until the first that is
    /// not `Partial`, the lines handed over, and the reader's state after
    /// each feed (as `Debug`: carry, size, line count, CR flag).
    type Trace = (Vec<Result<Progress, HttpError>>, Vec<Vec<u8>>, Vec<String>);

    /// A callback that refuses lines starting with `!` (as the fuzz target's).
    fn take_line(lines: &mut Vec<Vec<u8>>, l: &[u8]) -> Result<(), HttpError> {
        if l.starts_with(b"!") {
            return Err(HttpError::new(499, "refused by the callback"));
        }
        lines.push(l.to_vec());
        Ok(())
    }

    fn trace_new(limits: &HeadLimits, chunks: &[&[u8]]) -> Trace {
        let (mut r, mut results, mut lines, mut states) = (HeadReader::new(), vec![], vec![], vec![]);
        for c in chunks {
            let p = r.feed(limits, c, |l| take_line(&mut lines, l));
            results.push(p);
            states.push(format!("{r:?}"));
            if p != Ok(Progress::Partial) {
                break;
            }
        }
        (results, lines, states)
    }

    fn trace_old(limits: &HeadLimits, chunks: &[&[u8]]) -> Trace {
        let (mut r, mut results, mut lines, mut states) = (Bytewise::default(), vec![], vec![], vec![]);
        for c in chunks {
            let p = r.feed(limits, c, |l| take_line(&mut lines, l));
            results.push(p);
            states.push(format!("{r:?}").replacen("Bytewise", "HeadReader", 1));
            if p != Ok(Progress::Partial) {
                break;
            }
        }
        (results, lines, states)
    }

    /// Both readers on `head`: whole, split once at every offset, one byte
    /// at a time, and in pieces of `sizes` (cycled).
    fn same_as_bytewise(limits: &HeadLimits, head: &[u8], sizes: &[usize]) {
        let check = |chunks: &[&[u8]], how: &str| {
            assert_eq!(
                trace_new(limits, chunks),
                trace_old(limits, chunks),
                "{how}, {limits:?}: {:?}",
                String::from_utf8_lossy(head)
            );
        };
        check(&[head], "whole");
        for cut in 0..=head.len() {
            check(&[&head[..cut], &head[cut..]], &format!("cut at {cut}"));
        }
        check(&head.chunks(1).collect::<Vec<_>>(), "byte at a time");
        let (mut pieces, mut rest) = (Vec::new(), head);
        for &n in sizes.iter().cycle().take(head.len() + 1) {
            let (a, b) = rest.split_at(n.min(rest.len()));
            pieces.push(a);
            rest = b;
        }
        check(&pieces, &format!("pieces of {sizes:?}"));
    }

    /// Limits that bite at various points of short heads, and roomy ones.
    const DIFF_LIMITS: [HeadLimits; 4] = [
        LIMITS,
        HeadLimits {
            max_size: 37,
            max_fields: 1,
        },
        HeadLimits {
            max_size: 16,
            max_fields: 100,
        },
        HeadLimits {
            max_size: 0,
            max_fields: 0,
        },
    ];

    /// Every byte value at every position of a few heads, under several
    /// limits, fed every way: the same results, lines and states as the
    /// bytewise reader.
    #[test]
    fn every_byte_everywhere_as_bytewise() {
        let templates: [&[u8]; 4] = [
            b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\n\r\n",
            b"\r\nGET / HTTP/1.1\r\nX:\ta\tb\r\n!x: y\r\n\r\nbody",
            b"0123456789abcdef\r\r\n\n\x7f\t\x80\xff\r\n",
            b"",
        ];
        for t in templates {
            for limits in &DIFF_LIMITS {
                same_as_bytewise(limits, t, &[3, 8, 1, 17]);
                if limits.max_size == 0 {
                    continue;
                }
                for at in 0..t.len() {
                    for v in 0..=255u8 {
                        let mut head = t.to_vec();
                        head[at] = v;
                        same_as_bytewise(limits, &head, &[9, 2]);
                    }
                }
            }
        }
    }

    /// Random heads (xorshift64, fixed seed) drawn from the bytes that
    /// matter (CR, LF, HTAB, other CTLs, DEL, plain ASCII and obs-text, and
    /// `!` that the callback refuses), fed in random pieces.
    #[test]
    fn random_heads_as_bytewise() {
        const ALPHABET: &[u8] = b"\r\n\r\n\r\n\t\x00\x1f\x7f\x80\xff !:aaaaaaaaaaaaaa";
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..3000 {
            let len = (next() % 80) as usize;
            let mut head: Vec<u8> = (0..len)
                .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
                .collect();
            // Mostly well-formed line ends, so that heads get far.
            if round % 2 == 0 {
                head = String::from_utf8_lossy(&head).replace('\n', "\r\n").into_bytes();
                head.retain(|&b| b == b'\r' || b == b'\n' || b >= 0x20);
                let crlf = head.windows(2).filter(|w| w == b"\r\n").count();
                let bare_cr = head.iter().filter(|&&b| b == b'\r').count() - crlf;
                if bare_cr > 0 && round % 4 == 0 {
                    head.retain(|&b| b != b'\r');
                }
            }
            let sizes: Vec<usize> = (0..4).map(|_| (next() % 12) as usize).collect();
            let limits = HeadLimits {
                max_size: (next() % 100) as usize,
                max_fields: (next() % 6) as usize,
            };
            same_as_bytewise(&limits, &head, &sizes);
            same_as_bytewise(&LIMITS, &head, &sizes);
        }
    }

    /// The word test against its definition: each byte value at each place
    /// of runs up to 19 bytes long, with a second CTL (or none) further on.
    #[test]
    fn plain_run_finds_the_first_ctl() {
        let bytewise = |s: &[u8]| s.iter().position(|&b| b < 0x20 || b == 0x7f).unwrap_or(s.len());
        for len in 0..20 {
            for fill in [b'a', 0x80, 0xff, 0x20, 0x7e, 0xa0] {
                for at in 0..len {
                    for v in 0..=255u8 {
                        for second in [None, Some(0x00), Some(0x7f), Some(0x1f)] {
                            let mut s = vec![fill; len];
                            s[at] = v;
                            if let Some(c) = second.filter(|_| at + 1 < len) {
                                s[len - 1] = c;
                            }
                            assert_eq!(plain_run(&s), bytewise(&s), "{s:x?}");
                        }
                    }
                }
            }
        }
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
        // RFC 9112 §5.1: no whitespace between the name and the colon.
        for line in [&b"Host : x"[..], b"Host\t: x", b"Host  :x"] {
            assert_eq!(
                split_field(line),
                Err(HttpError::bad("whitespace between a header name and its colon"))
            );
        }
    }

    /// The OR comparison against `eq_ignore_ascii_case`: every byte but CR
    /// at every position of names and tokens we look for, of lengths either
    /// side of eight and sixteen.
    #[test]
    fn lowercase_comparison_agrees_with_ignoring_case() {
        for lower in [
            "host",
            "upgrade",
            "websocket",
            "sec-websocket-key",
            "sec-websocket-extensions",
            "a-b",
        ] {
            let bytes = lower.as_bytes();
            assert!(eq_lowercase(bytes, lower));
            assert!(eq_lowercase(lower.to_ascii_uppercase().as_bytes(), lower));
            assert!(!eq_lowercase(&bytes[1..], lower));
            for s in one_byte_changes(&[bytes]).filter(|s| !s.contains(&b'\r')) {
                assert_eq!(eq_lowercase(&s, lower), s.eq_ignore_ascii_case(bytes), "{s:?} {lower}");
            }
        }
    }

    /// The one-pass split against the rule-by-rule one: every byte value
    /// at every position of a few lines, the same verdict and parts.
    #[test]
    fn field_splitting_fast_path_agrees_with_the_rules() {
        let lines: &[&[u8]] = &[
            b"Host: a",
            b"X:",
            b"a-b:c d ",
            b":x",
            b"N :v",
            b"Sec-WebSocket-Key:  k==",
        ];
        for l in one_byte_changes(lines) {
            assert_eq!(
                split_field(&l),
                split_field_slowly(&l),
                "{:?}",
                String::from_utf8_lossy(&l)
            );
        }
    }

    /// The reg-name fast path against the general one: every byte value at
    /// every position of a few authorities.
    #[test]
    fn authority_fast_path_agrees_with_the_general_one() {
        let seeds: &[&[u8]] = &[
            b"127.0.0.1:48949",
            b"a.example",
            b"h:1",
            b"[::1]:80",
            b"%41b:65535",
            b"x:",
        ];
        for v in one_byte_changes(seeds) {
            assert_eq!(
                valid_authority(&v),
                valid_authority_slowly(&v),
                "{:?}",
                String::from_utf8_lossy(&v)
            );
        }
    }

    #[test]
    fn authorities() {
        let good: &[&[u8]] = &[
            b"example.com",
            b"example.com:8080",
            b"example.com:",
            b"127.0.0.1:9001",
            b"EXAMPLE.com",
            b"xn--bcher-kva.example",
            b"a-b_c~d.e",
            b"%41bc",
            b"!$&'()*+,;=",
            b"[::1]",
            b"[::1]:443",
            b"[2001:db8::7]:",
            b"[::ffff:192.0.2.1]",
            b"[v1.fe80::a+en1]",
            b"h:65535",
            b"h:0080",
        ];
        for v in good {
            assert!(valid_authority(v), "{}", String::from_utf8_lossy(v));
        }
        let bad: &[&[u8]] = &[
            b"",
            b":80",
            b"evil.example@@:x:y",
            b"user@host",
            b"a:b:c",
            b"host:x",
            b"host:-1",
            b"host:+80",
            b"host:65536",
            b"host:99999999999999999999",
            b"host name",
            b"host/path",
            b"host?q",
            b"%4",
            b"%zz",
            b"h\xff",
            b"[::1",
            b"[::1]x",
            b"[::1]:x",
            b"[1.2.3.4]",
            b"[::g]",
            b"[]",
            b"[v1.]",
            b"[v.x]",
            b"[fe80::1%25eth0]",
            b"\"quoted\"",
        ];
        for v in bad {
            assert!(!valid_authority(v), "{}", String::from_utf8_lossy(v));
        }
    }

    #[test]
    fn request_targets() {
        let ok = |t: &[u8], auth: Option<&[u8]>, rest: &[u8]| {
            assert_eq!(
                parse_target(t),
                Ok(RequestTarget {
                    authority: auth,
                    path_and_query: rest
                }),
                "{}",
                String::from_utf8_lossy(t)
            );
        };
        ok(b"/", None, b"/");
        ok(b"/a/b?c=d&e", None, b"/a/b?c=d&e");
        ok(b"//x", None, b"//x");
        ok(b"http://h:1/healthz?x", Some(b"h:1"), b"/healthz?x");
        ok(b"HTTPS://h", Some(b"h"), b"");
        ok(b"Http://h?q", Some(b"h"), b"?q");
        ok(b"http://[::1]:8080/", Some(b"[::1]:8080"), b"/");
        let bad: &[(&[u8], &str)] = &[
            (b"*", "asterisk-form request target is not served"),
            (b"example.com:443", "authority-form request target is not served"),
            (b"h:443", "authority-form request target is not served"),
            (b"chat", "malformed request target"),
            (b"", "malformed request target"),
            (b"/a#frag", "malformed request target"),
            (b"/caf\xc3\xa9", "malformed request target"),
            (b"ws://h/", "request target scheme is not http or https"),
            (b"wss://h/", "request target scheme is not http or https"),
            (b"ftp://h/", "request target scheme is not http or https"),
            (b"http:/h/", "authority-form request target is not served"),
            (b"1http://h/", "authority-form request target is not served"),
            (b"http://u@h/", "userinfo in the request target"),
            (b"http:///x", "invalid authority in the request target"),
            (b"http://:80/x", "invalid authority in the request target"),
            (b"http://h:x/", "invalid authority in the request target"),
            (b"http://h%/", "invalid authority in the request target"),
        ];
        for (t, why) in bad {
            assert_eq!(
                parse_target(t),
                Err(HttpError::bad(why)),
                "{}",
                String::from_utf8_lossy(t)
            );
        }
    }

    #[test]
    fn bearer_tokens() {
        let cases: &[(&str, Option<&str>)] = &[
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER   a-b.c_d~e+f/g==", Some("a-b.c_d~e+f/g==")),
            ("  Bearer abc  ", Some("abc")),
            ("Bearer", None),
            ("Bearer ", None),
            ("Bearer ==", None),
            ("Bearer a=b", None),
            ("Bearer a b", None),
            ("Bearer a,b", None),
            ("Bearer\tabc", None),
            ("Basic YWxhZGRpbjpvcGVuc2VzYW1l", None),
            ("Bearerabc", None),
            ("Bearer abc\u{e9}", None),
        ];
        for (value, want) in cases {
            assert_eq!(bearer_token(value), *want, "{value:?}");
        }
    }

    #[test]
    fn token_comparison() {
        assert!(token_matches(b"secret", b"secret"));
        assert!(token_matches(b"", b""));
        for given in [&b"secreT"[..], b"secre", b"secret\0", b"", b"Secret", b"secretsecret"] {
            assert!(!token_matches(given, b"secret"), "{given:?}");
        }
        // A guess that is a prefix padded with NULs is not a match either.
        assert!(!token_matches(b"ab", b"ab\0"));
        assert!(!token_matches(b"ab\0", b"ab"));
    }

    /// The tables against the definitions they replace, on every byte.
    #[test]
    fn character_tables() {
        for b in 0..=255u8 {
            let tchar = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is_tchar(b), tchar, "{b:#x}");
            let reg_name = b.is_ascii_alphanumeric() || b"-._~".contains(&b) || b"!$&'()*+,;=".contains(&b);
            assert_eq!(REG_NAME[usize::from(b)], reg_name, "{b:#x}");
        }
        assert_eq!((0..=255u8).filter(|&b| is_tchar(b)).count(), 62 + 15);
        assert_eq!((0..=255u8).filter(|&b| REG_NAME[usize::from(b)]).count(), 62 + 4 + 11);
    }

    /// `has_token` and `has_tokens` against the list definition, on values
    /// made of the pieces that matter (separators, white space, case,
    /// near misses).
    #[test]
    fn token_lists_as_defined() {
        let by_definition = |v: &[u8], t: &str| list_elements(v).any(|e| e.eq_ignore_ascii_case(t.as_bytes()));
        let pieces: [&[u8]; 9] = [
            b"upgrade", b"UpGrade", b"close", b",", b" ", b"\t", b"x", b"upgrad", b"e",
        ];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let value: Vec<u8> = (0..x % 6)
                .flat_map(|k| pieces[((x >> (8 + 4 * k)) % 9) as usize].iter().copied())
                .collect();
            for token in ["upgrade", "close", "", "e", "keep-alive"] {
                assert_eq!(
                    has_token(&value, token),
                    by_definition(&value, token),
                    "{value:?} {token}"
                );
            }
            let (mut up, mut close) = (false, x % 7 == 0);
            let close_before = close;
            has_tokens(&value, &mut [("upgrade", &mut up), ("close", &mut close)]);
            assert_eq!(up, by_definition(&value, "upgrade"));
            assert_eq!(close, close_before || by_definition(&value, "close"));
        }
    }

    /// The one-loop token search against one over `list_elements`.
    #[test]
    fn token_search_agrees_with_the_list_elements() {
        let values: &[&[u8]] = &[b"Upgrade", b" keep-alive ,upgrade\t", b",,close,", b"websocket, x", b""];
        for v in one_byte_changes(values).filter(|v| !v.contains(&b'\r')) {
            for token in ["upgrade", "close", "websocket"] {
                let listed = list_elements(&v).any(|e| e.eq_ignore_ascii_case(token.as_bytes()));
                assert_eq!(
                    has_token(&v, token),
                    listed,
                    "{:?} {token}",
                    String::from_utf8_lossy(&v)
                );
            }
        }
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
