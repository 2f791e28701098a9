//! Close frames and status codes, RFC 6455 §5.5.1 and §7.4.

/// A status code carried in a Close frame (§7.4.1).
pub mod code {
    /// "indicates a normal closure"
    pub const NORMAL: u16 = 1000;
    /// "an endpoint is 'going away', such as a server going down"
    pub const GOING_AWAY: u16 = 1001;
    /// "terminating the connection due to a protocol error"
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// "received a type of data it cannot accept"
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// "received data within a message that was not consistent with the
    /// type of the message (e.g., non-UTF-8 data within a text message)"
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// "received a message that violates its policy"
    pub const POLICY_VIOLATION: u16 = 1008;
    /// "received a message that is too big for it to process"
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// "encountered an unexpected condition that prevented it from
    /// fulfilling the request"
    pub const INTERNAL_ERROR: u16 = 1011;
    /// IANA's WebSocket Close Code Number Registry (registered after RFC
    /// 6455): "Try Again Later", the server is overloaded.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// Whether `code` may appear in a Close frame on the wire.
///
/// §7.4.1 defines 1000–1003 and 1007–1011; 1004 is reserved, 1005 and 1006
/// "MUST NOT be set as a status code in a Close control frame by an
/// endpoint", 1015 likewise (TLS failure). IANA has since registered
/// 1012–1014 (service restart, try again later, bad gateway). §7.4.2:
/// 0–999 are "not used", 1000–2999 are reserved for the protocol and its
/// extensions, 3000–3999 for libraries and frameworks, 4000–4999 for
/// private use. Anything else is a protocol error.
pub fn is_valid_on_wire(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Why a received Close frame body is malformed. Both are answered with
/// 1002 (protocol error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadClose {
    /// A body of one byte: §5.5.1 says a body "MUST" start with a two-byte
    /// status code.
    Truncated,
    /// A code that must not be sent (see [`is_valid_on_wire`]).
    InvalidCode(u16),
    /// §5.5.1: the reason "is not guaranteed to be human readable" but is
    /// "UTF-8-encoded data".
    ReasonNotUtf8,
}

impl BadClose {
    pub fn as_str(self) -> &'static str {
        match self {
            BadClose::Truncated => "close frame body of one byte",
            BadClose::InvalidCode(_) => "invalid close code",
            BadClose::ReasonNotUtf8 => "close reason is not UTF-8",
        }
    }
}

impl core::fmt::Display for BadClose {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for BadClose {}

/// Parses the body of a received Close frame into (code, reason). An empty
/// body is allowed and has no code (§7.1.5: the status code is then
/// "considered to be 1005").
pub fn parse_body(body: &[u8]) -> Result<(Option<u16>, &str), BadClose> {
    match body.len() {
        0 => Ok((None, "")),
        1 => Err(BadClose::Truncated),
        _ => {
            let code = u16::from_be_bytes([body[0], body[1]]);
            if !is_valid_on_wire(code) {
                return Err(BadClose::InvalidCode(code));
            }
            let reason = core::str::from_utf8(&body[2..]).map_err(|_| BadClose::ReasonNotUtf8)?;
            Ok((Some(code), reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_validity_table() {
        let invalid = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535];
        let valid = [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999,
        ];
        for c in invalid {
            assert!(!is_valid_on_wire(c), "{c} must be rejected");
        }
        for c in valid {
            assert!(is_valid_on_wire(c), "{c} must be accepted");
        }
    }

    #[test]
    fn body_table() {
        assert_eq!(parse_body(b""), Ok((None, "")));
        assert_eq!(parse_body(b"\x03"), Err(BadClose::Truncated));
        assert_eq!(parse_body(b"\x03\xe8"), Ok((Some(1000), "")));
        assert_eq!(parse_body(b"\x03\xe8bye"), Ok((Some(1000), "bye")));
        assert_eq!(parse_body(b"\x03\xed"), Err(BadClose::InvalidCode(1005)));
        assert_eq!(parse_body(b"\x03\xe8\xce\xba\xe1\xbd"), Err(BadClose::ReasonNotUtf8));
    }
}
