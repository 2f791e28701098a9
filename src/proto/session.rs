//! The WebSocket connection after the handshake: frames in, events out.
//!
//! [`Session`] is a deterministic state machine. The caller owns every
//! buffer: it hands in whatever bytes arrived (`handle_input`), gets [`Event`]s
//! back one at a time, and collects the bytes to send in an output `Vec`.
//! Nothing here reads a socket or a clock, so every rule below is tested by
//! feeding bytes, split at every offset, in `tests`.
//!
//! Input is unmasked in place in the caller's buffer. A message that lies
//! whole in one input buffer is delivered as a slice of it, with no copy;
//! only a message that spans reads or frames is gathered in a buffer of the
//! session's own, which is freed once the message is delivered.
//!
//! Failing the connection (§7.1.7) queues a Close frame with the status code
//! that says why, returns [`ProtocolError`], and makes every later `handle_input`
//! return `Ok(None)` without looking at its input.

use super::close::{self, code};
use super::frame::{self, Decoded, Opcode, MAX_HEADER_LEN};
use super::mask;
use super::utf8::Utf8Validator;

/// Which end of the connection this session is (§5.1: clients mask, servers
/// don't).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

/// Size limits, checked against the lengths that frame headers declare,
/// before any payload byte is buffered (§10.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_frame: u64,
    pub max_message: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: 16 << 20,
            max_message: 16 << 20,
        }
    }
}

/// The type of a data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Text,
    Binary,
}

impl MessageKind {
    pub fn opcode(self) -> Opcode {
        match self {
            MessageKind::Text => Opcode::Text,
            MessageKind::Binary => Opcode::Binary,
        }
    }
}

/// What the peer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete data message (text is valid UTF-8).
    Message(MessageKind, &'a [u8]),
    /// A complete data message compressed by permessage-deflate (RFC 7692
    /// §6: RSV1 on its first frame), as it came: the caller inflates it and
    /// checks text for UTF-8 after (only with [`Session::allow_compression`]).
    Compressed(MessageKind, &'a [u8]),
    /// A Ping; the Pong has already been queued.
    Ping(&'a [u8]),
    /// A Pong (solicited or not, §5.5.3).
    Pong(&'a [u8]),
    /// The peer's Close. If we had not sent one, ours has been queued
    /// echoing its code (§5.5.1). The closing handshake is complete: the
    /// server should now close the TCP connection (§7.1.1).
    Closed { code: Option<u16>, reason: &'a str },
}

/// Where the payload of a [`Received`] item lies: in the caller's input,
/// or in one of the session's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// `input[start..end]` of the input it arrived in.
    Input(usize, usize),
    /// The buffer of a message gathered across inputs or frames.
    Gathered,
    /// The buffer of a control frame split across inputs.
    Control,
}

/// An [`Event`] whose payload is given by location: what
/// [`Session::receive`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    Message(MessageKind, Payload),
    /// A compressed message (see [`Event::Compressed`]).
    Compressed(MessageKind, Payload),
    Ping(Payload),
    Pong(Payload),
    /// The peer's Close, with its code and its whole body.
    Closed(Option<u16>, Payload),
}

/// A whole single-frame data message, found by [`Session::receive_whole`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Whole {
    pub kind: MessageKind,
    /// Where its payload lies: always [`Payload::Input`].
    pub at: Payload,
    /// RSV1 under permessage-deflate (RFC 7692 §6): the caller inflates it
    /// (and checks text for UTF-8 after).
    pub compressed: bool,
}

/// Why we failed the connection; a Close with `code` has been queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolError {
    pub code: u16,
    pub reason: &'static str,
}

impl core::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} ({})", self.reason, self.code)
    }
}

impl std::error::Error for ProtocolError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Data flows both ways.
    Open,
    /// We sent Close and wait for the peer's (§5.5.1: we send nothing more).
    CloseSent,
    /// Closing handshake done, or connection failed: input is ignored.
    Closed,
}

/// Where the receiver is within the current frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rx {
    /// Reading a header; `hdr[..hdr_len]` holds the bytes so far when it is
    /// split across inputs.
    Header,
    /// Reading the payload of the frame described by the `frame_*` fields.
    Payload,
}

/// Buffers needed only while a message or control frame is split across
/// inputs. Boxed so that an idle session carries one pointer for them.
#[derive(Debug, Default)]
struct Partial {
    message: Vec<u8>,
    control: Vec<u8>,
    /// The length of `message` when [`Session::note_progress`] last saw it
    /// grow, and when that was (the caller's clock).
    seen_len: usize,
    seen_at: u64,
}

/// One WebSocket connection's protocol state: 64 bytes (a test holds it
/// to that), plus buffers only while a message or control frame is split.
#[derive(Debug)]
pub struct Session {
    role: Role,
    state: State,
    rx: Rx,
    hdr_len: u8,
    hdr: [u8; MAX_HEADER_LEN],
    /// Current frame.
    frame_opcode: Opcode,
    frame_fin: bool,
    frame_mask: Option<[u8; 4]>,
    mask_offset: u8,
    remaining: u64,
    /// Current message: its type if one is in progress (between a first
    /// frame with FIN clear and the final continuation).
    message: Option<MessageKind>,
    message_len: u64,
    utf8: Utf8Validator,
    /// The partial buffers were handed out in the last event: empty them on
    /// the next call.
    delivered: bool,
    /// Client role: state of the generator for outgoing masking keys.
    mask_seed: u32,
    partial: Option<Box<Partial>>,
    /// permessage-deflate was negotiated: RSV1 may mark a message as
    /// compressed (RFC 7692 §6).
    deflate: bool,
    /// The current message is compressed.
    compressed: bool,
}

impl Session {
    /// A session for the server side of a connection.
    pub fn server() -> Self {
        Session::new(Role::Server, 0)
    }

    /// A session for the client side. `mask_seed` seeds the masking keys of
    /// outgoing frames (§5.3 wants them unpredictable to the network path,
    /// to defeat cache poisoning by proxies; a caller talking to servers
    /// it does not control should seed from a strong random source).
    pub fn client(mask_seed: u32) -> Self {
        Session::new(Role::Client, mask_seed | 1)
    }

    fn new(role: Role, mask_seed: u32) -> Self {
        Session {
            role,
            state: State::Open,
            rx: Rx::Header,
            hdr_len: 0,
            hdr: [0; MAX_HEADER_LEN],
            frame_opcode: Opcode::Continuation,
            frame_fin: false,
            frame_mask: None,
            mask_offset: 0,
            remaining: 0,
            message: None,
            message_len: 0,
            utf8: Utf8Validator::new(),
            delivered: false,
            mask_seed,
            partial: None,
            deflate: false,
            compressed: false,
        }
    }

    /// permessage-deflate was negotiated (RFC 7692): from now on a data
    /// message whose first frame has RSV1 set is compressed, and is handed
    /// out as [`Event::Compressed`] for the caller to inflate.
    pub fn allow_compression(&mut self) {
        self.deflate = true;
    }

    /// Whether data may still be sent (no Close sent or received).
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Whether the closing handshake is over or the connection has failed:
    /// nothing more will be read or written.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Bytes this session holds in buffers of its own (beyond `size_of`).
    pub fn buffered(&self) -> usize {
        self.partial
            .as_ref()
            .map_or(0, |p| p.message.capacity() + p.control.capacity())
    }

    /// Processes input from `input[*pos..]`, advancing `*pos`, until it has
    /// an event or needs more bytes (`Ok(None)`, with `*pos == input.len()`).
    /// Payload bytes are unmasked in place. Replies the protocol requires
    /// (Pong, Close) are appended to `out`.
    pub fn handle_input<'b>(
        &'b mut self,
        limits: &Limits,
        input: &'b mut [u8],
        pos: &mut usize,
        out: &mut Vec<u8>,
    ) -> Result<Option<Event<'b>>, ProtocolError> {
        let received = self.receive(limits, input, pos, out)?;
        Ok(received.map(|r| self.event(r, input)))
    }

    /// [`handle_input`](Self::handle_input) with the payload given by where
    /// it lies rather than borrowed, so that a caller can loop over items
    /// and keep only the one it hands on (see [`Session::event`]).
    pub fn receive(
        &mut self,
        limits: &Limits,
        input: &mut [u8],
        pos: &mut usize,
        out: &mut Vec<u8>,
    ) -> Result<Option<Received>, ProtocolError> {
        if let Some(r) = self.receive_whole(limits, input, pos, out) {
            return r.map(|w| {
                Some(if w.compressed {
                    Received::Compressed(w.kind, w.at)
                } else {
                    Received::Message(w.kind, w.at)
                })
            });
        }
        loop {
            if self.state == State::Closed {
                // §7.1.7: after failing or closing, nothing more is processed.
                *pos = input.len();
                return Ok(None);
            }
            match self.rx {
                Rx::Header => {
                    if !self.read_header(limits, input, pos, out)? {
                        return Ok(None);
                    }
                }
                Rx::Payload => {
                    let limit = usize::try_from(limits.max_message).unwrap_or(usize::MAX);
                    match self.read_payload(input, pos, out, limit) {
                        Ok(Some(r @ Received::Closed(..))) => {
                            // The closing handshake is over: a message in
                            // progress will never complete.
                            self.message = None;
                            if let Some(p) = &mut self.partial {
                                p.message = Vec::new();
                            }
                            return Ok(Some(r));
                        }
                        Ok(Some(r)) => return Ok(Some(r)),
                        Ok(None) => {}
                        Err(e) => {
                            // Failed (a bad Close body, bad UTF-8): nothing
                            // gathered will be delivered.
                            self.partial = None;
                            return Err(e);
                        }
                    }
                    if self.rx == Rx::Payload {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Empties the partial buffers handed out in the last item: what
    /// [`receive`](Self::receive) does first, and all it does once the
    /// input is used up (the caller may call this instead then).
    #[inline]
    pub fn release_delivered(&mut self) {
        if self.delivered {
            self.delivered = false;
            if let Some(p) = &mut self.partial {
                p.control.clear();
                if self.message.is_none() {
                    // The gathered message went out: release its memory so
                    // an idle connection holds none.
                    self.partial = None;
                }
            }
        }
    }

    /// The fast path of [`receive`](Self::receive), which it tries first (a
    /// caller may too, and call `receive` only when this returns `None`): a
    /// whole data message in one frame at `input[*pos..]`, in the form
    /// clients send (§5.1: masked; FIN set; 7- or 16-bit length; no reserved
    /// bit but permessage-deflate's RSV1, RFC 7692 §6; within the limits),
    /// while nothing else is in progress (no header, frame or fragmented
    /// message; open; server role). Its payload is unmasked in place and
    /// located in the input ([`Payload::Input`]). Anything else returns `None` having changed
    /// nothing but released what was handed out, and the general path, which
    /// applies every rule of §5 itself, takes it. Such a frame passes every
    /// header rule there too, so the only failure left here is its text not
    /// being UTF-8 (§8.1), with the general path's reasons.
    #[inline(always)]
    pub fn receive_whole(
        &mut self,
        limits: &Limits,
        input: &mut [u8],
        pos: &mut usize,
        out: &mut Vec<u8>,
    ) -> Option<Result<Whole, ProtocolError>> {
        self.release_delivered();
        if self.rx != Rx::Header || self.hdr_len != 0 || self.message.is_some() {
            return None;
        }
        if self.state != State::Open || self.role != Role::Server {
            return None;
        }
        let avail = &input[*pos..];
        let (&b0, &b1) = (avail.first()?, avail.get(1)?);
        // FIN, RSV1 (compressed) or nothing, and Text or Binary.
        let compressed = match b0 {
            0x81 | 0x82 => false,
            0xC1 | 0xC2 if self.deflate => true,
            _ => return None,
        };
        let (len, header) = match b1 {
            0x80..=0xFD => (usize::from(b1 & 0x7F), 6),
            0xFE => (usize::from(u16::from_be_bytes([*avail.get(2)?, *avail.get(3)?])), 8),
            _ => return None,
        };
        if avail.len() < header + len || len as u64 > limits.max_frame || len as u64 > limits.max_message {
            return None;
        }
        let key = [
            avail[header - 4],
            avail[header - 3],
            avail[header - 2],
            avail[header - 1],
        ];
        let (start, end) = (*pos + header, *pos + header + len);
        *pos = end;
        let payload = &mut input[start..end];
        mask::apply(payload, key, 0);
        let kind = if b0 & 0x0F == 1 {
            MessageKind::Text
        } else {
            MessageKind::Binary
        };
        let whole = Whole {
            kind,
            at: Payload::Input(start, end),
            compressed,
        };
        if kind == MessageKind::Text && !compressed {
            if let Err(e) = core::str::from_utf8(payload) {
                let reason = match e.error_len() {
                    Some(_) => "invalid UTF-8 in text message",
                    None => "text message ends inside a code point",
                };
                return Some(Err(self.fail(code::INVALID_PAYLOAD, reason, out)));
            }
        }
        Some(Ok(whole))
    }

    /// Reads what the input holds of the current frame's payload; returns
    /// an item if the frame completed one.
    /// `max_message`: the message limit, which the gathering buffer's
    /// capacity never passes.
    fn read_payload(
        &mut self,
        input: &mut [u8],
        pos: &mut usize,
        out: &mut Vec<u8>,
        max_message: usize,
    ) -> Result<Option<Received>, ProtocolError> {
        let avail = (input.len() - *pos).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let (start, end) = (*pos, *pos + avail);
        *pos = end;
        if let Some(key) = self.frame_mask {
            self.mask_offset = mask::apply(&mut input[start..end], key, self.mask_offset as usize) as u8;
        }
        self.remaining -= avail as u64;
        let done = self.remaining == 0;
        if done {
            self.rx = Rx::Header;
        }
        if self.frame_opcode.is_control() {
            return self.read_control(&input[start..end], start, done, out);
        }
        // A data frame's payload.
        let kind = self.message.expect("a data frame always belongs to a message");
        if self.state == State::CloseSent {
            // §7.1.2: after our Close, input is read only to find the
            // peer's; data is neither delivered nor kept.
            if done && self.frame_fin {
                self.end_message();
                self.utf8 = Utf8Validator::new();
            }
            return Ok(None);
        }
        // UTF-8 is a property of the message, not of its compressed form:
        // a compressed text message is checked once inflated.
        let text = kind == MessageKind::Text && !self.compressed;
        if text && self.utf8.feed(&input[start..end]).is_err() {
            // §8.1, failing fast: the first invalid byte ends it, even
            // mid-frame or mid-message.
            return Err(self.fail(code::INVALID_PAYLOAD, "invalid UTF-8 in text message", out));
        }
        let last = done && self.frame_fin;
        if last && text && self.utf8.finish().is_err() {
            return Err(self.fail(code::INVALID_PAYLOAD, "text message ends inside a code point", out));
        }
        let deliver = |at| {
            if self.compressed {
                Received::Compressed(kind, at)
            } else {
                Received::Message(kind, at)
            }
        };
        let gathered = self.partial.as_ref().is_some_and(|p| !p.message.is_empty());
        if last && !gathered {
            // The whole message is in this input: no copy.
            let r = deliver(Payload::Input(start, end));
            self.end_message();
            return Ok(Some(r));
        }
        if avail > 0 {
            let frame_rest = usize::try_from(self.remaining).unwrap_or(usize::MAX);
            let p = self.partial.get_or_insert_with(Box::default);
            reserve_within(&mut p.message, avail, frame_rest, max_message);
            p.message.extend_from_slice(&input[start..end]);
        }
        if !last {
            return Ok(None);
        }
        let r = deliver(Payload::Gathered);
        self.end_message();
        self.delivered = true;
        Ok(Some(r))
    }

    /// A control frame's payload bytes, at `start` in the input: gathered
    /// while the frame is split across inputs (§5.5: at most 125 bytes),
    /// answered once `done`.
    fn read_control(
        &mut self,
        bytes: &[u8],
        start: usize,
        done: bool,
        out: &mut Vec<u8>,
    ) -> Result<Option<Received>, ProtocolError> {
        let split = !done || self.partial.as_ref().is_some_and(|p| !p.control.is_empty());
        if split {
            let p = self.partial.get_or_insert_with(Box::default);
            p.control.extend_from_slice(bytes);
            if !done {
                return Ok(None);
            }
        }
        self.delivered = true;
        let (at, payload): (Payload, &[u8]) = match &self.partial {
            Some(p) if split => (Payload::Control, &p.control),
            _ => (Payload::Input(start, start + bytes.len()), bytes),
        };
        on_control(
            self.role,
            &mut self.state,
            &mut self.mask_seed,
            self.frame_opcode,
            payload,
            at,
            out,
        )
    }

    /// The current message is complete (or abandoned).
    fn end_message(&mut self) {
        self.message = None;
        self.message_len = 0;
        self.compressed = false;
    }

    /// The bytes of a payload that [`receive`](Self::receive) located, given
    /// the input it was called with.
    pub fn payload<'b>(&'b self, at: Payload, input: &'b [u8]) -> &'b [u8] {
        match (at, &self.partial) {
            (Payload::Input(s, e), _) => &input[s..e],
            (Payload::Gathered, Some(p)) => &p.message,
            (Payload::Control, Some(p)) => &p.control,
            (_, None) => &[],
        }
    }

    /// The [`Event`] for an item that [`receive`](Self::receive) returned.
    pub fn event<'b>(&'b self, r: Received, input: &'b [u8]) -> Event<'b> {
        match r {
            Received::Message(kind, at) => Event::Message(kind, self.payload(at, input)),
            Received::Compressed(kind, at) => Event::Compressed(kind, self.payload(at, input)),
            Received::Ping(at) => Event::Ping(self.payload(at, input)),
            Received::Pong(at) => Event::Pong(self.payload(at, input)),
            Received::Closed(code, at) => {
                // The body was checked by `close::parse_body`: the reason is
                // valid UTF-8 after the two code bytes.
                let body = self.payload(at, input);
                let reason = body.get(2..).and_then(|r| core::str::from_utf8(r).ok()).unwrap_or("");
                Event::Closed { code, reason }
            }
        }
    }

    /// Reads (the rest of) a frame header and checks it. Returns false when
    /// more input is needed.
    fn read_header(
        &mut self,
        limits: &Limits,
        input: &[u8],
        pos: &mut usize,
        out: &mut Vec<u8>,
    ) -> Result<bool, ProtocolError> {
        let avail = &input[*pos..];
        let header = if self.hdr_len == 0 {
            // Fast path: the header is whole in the input, parse it there.
            match frame::decode(avail) {
                Ok(Decoded::Complete(h, n)) => {
                    *pos += n;
                    h
                }
                Ok(Decoded::Partial(_)) => {
                    self.hdr[..avail.len()].copy_from_slice(avail);
                    self.hdr_len = avail.len() as u8;
                    *pos = input.len();
                    return Ok(false);
                }
                Err(frame::HeaderError::LengthHighBit) => {
                    return Err(self.fail(code::PROTOCOL_ERROR, "64-bit length with the top bit set", out))
                }
            }
        } else {
            // Slow path: gather exactly the header's bytes, never more.
            loop {
                let have = self.hdr_len as usize;
                let need = if have < 2 { 2 } else { frame::header_len(self.hdr[1]) };
                if have == need {
                    break;
                }
                let take = (need - have).min(input.len() - *pos);
                if take == 0 {
                    return Ok(false);
                }
                self.hdr[have..have + take].copy_from_slice(&input[*pos..*pos + take]);
                self.hdr_len += take as u8;
                *pos += take;
            }
            self.hdr_len = 0;
            match frame::decode(&self.hdr) {
                Ok(Decoded::Complete(h, _)) => h,
                Ok(Decoded::Partial(_)) => unreachable!("all header bytes are present"),
                Err(frame::HeaderError::LengthHighBit) => {
                    return Err(self.fail(code::PROTOCOL_ERROR, "64-bit length with the top bit set", out))
                }
            }
        };
        self.accept_header(limits, header, out)?;
        Ok(true)
    }

    /// Applies the rules of §5 to a decoded header and prepares to read its
    /// payload.
    fn accept_header(&mut self, limits: &Limits, h: frame::Header, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        // §5.2: "RSV1, RSV2, RSV3: 1 bit each. MUST be 0 unless an extension
        // is negotiated that defines meanings for non-zero values."
        // RFC 7692 §6: with permessage-deflate, RSV1 on the first frame of a
        // data message marks it compressed; "An endpoint MUST NOT set the
        // "Per-Message Compressed" bit of control frames and non-first
        // fragments of a data message."
        const RSV1: u8 = 0b100;
        let first_data = matches!(h.opcode, 0x1 | 0x2);
        if h.rsv != 0 && !(h.rsv == RSV1 && self.deflate && first_data) {
            return Err(self.fail(code::PROTOCOL_ERROR, "reserved bits set", out));
        }
        // §5.2: "If an unknown opcode is received, the receiving endpoint
        // MUST _Fail the WebSocket Connection_."
        let Some(opcode) = Opcode::from_u8(h.opcode) else {
            return Err(self.fail(code::PROTOCOL_ERROR, "reserved opcode", out));
        };
        // §5.1: "The server MUST close the connection upon receiving a frame
        // that is not masked. [...] A client MUST close a connection if it
        // detects a masked frame."
        match (self.role, h.mask.is_some()) {
            (Role::Server, false) => return Err(self.fail(code::PROTOCOL_ERROR, "client frame not masked", out)),
            (Role::Client, true) => return Err(self.fail(code::PROTOCOL_ERROR, "server frame masked", out)),
            _ => {}
        }
        if opcode.is_control() {
            // §5.5: "All control frames MUST have a payload length of 125
            // bytes or less and MUST NOT be fragmented."
            if h.len > 125 {
                return Err(self.fail(code::PROTOCOL_ERROR, "control frame longer than 125 bytes", out));
            }
            if !h.fin {
                return Err(self.fail(code::PROTOCOL_ERROR, "fragmented control frame", out));
            }
        } else {
            // §5.4: fragments of one message are not interleaved with
            // another; a continuation continues something.
            match (opcode, self.message) {
                (Opcode::Continuation, None) => {
                    return Err(self.fail(code::PROTOCOL_ERROR, "continuation frame without a message", out))
                }
                (Opcode::Continuation, Some(_)) => {}
                (_, Some(_)) => {
                    return Err(self.fail(code::PROTOCOL_ERROR, "new message inside a fragmented message", out))
                }
                (Opcode::Text, None) => self.message = Some(MessageKind::Text),
                (_, None) => self.message = Some(MessageKind::Binary),
            }
            if opcode != Opcode::Continuation {
                self.compressed = h.rsv == RSV1;
            }
            // §10.4: limits on frame and message size, checked on the
            // declared length so nothing of an oversized message is kept.
            // §7.4.1: 1009 "a message that is too big for it to process".
            if h.len > limits.max_frame {
                return Err(self.fail(code::MESSAGE_TOO_BIG, "frame exceeds the size limit", out));
            }
            self.message_len = self.message_len.saturating_add(h.len);
            if self.message_len > limits.max_message {
                return Err(self.fail(code::MESSAGE_TOO_BIG, "message exceeds the size limit", out));
            }
        }
        self.frame_opcode = opcode;
        self.frame_fin = h.fin;
        self.frame_mask = h.mask;
        self.mask_offset = 0;
        self.remaining = h.len;
        self.rx = Rx::Payload;
        Ok(())
    }

    /// Fails the connection from above (§7.1.7), for what only the caller
    /// can judge: a compressed message that does not inflate (1007) or
    /// inflates past the limit (1009), inflated text that is not UTF-8.
    pub fn fail_with(&mut self, code: u16, reason: &'static str, out: &mut Vec<u8>) -> ProtocolError {
        self.fail(code, reason, out)
    }

    /// _Fail the WebSocket Connection_ (§7.1.7): send a Close with `code`
    /// unless one was already sent, and stop processing input.
    fn fail(&mut self, code: u16, reason: &'static str, out: &mut Vec<u8>) -> ProtocolError {
        if self.state == State::Open {
            write_close(self.role, &mut self.mask_seed, Some(code), reason, out);
        }
        self.state = State::Closed;
        self.partial = None;
        ProtocolError { code, reason }
    }

    /// Appends a data message as one frame. Returns false (and writes
    /// nothing) once a Close has been sent or received: §5.5.1 "the
    /// endpoint MUST NOT send any more data frames".
    pub fn send(&mut self, kind: MessageKind, payload: &[u8], out: &mut Vec<u8>) -> bool {
        if self.state != State::Open {
            return false;
        }
        let mask = next_mask(self.role, &mut self.mask_seed);
        frame::write(out, kind.opcode(), payload, mask);
        true
    }

    /// Appends a data message whose payload the caller has compressed with
    /// permessage-deflate (RFC 7692 §7.2.1) as one frame with RSV1 set (§6:
    /// "the "Per-Message Compressed" bit [...] of the first frame"), masked
    /// after compression in the client role (§6.1: the extension transforms
    /// the payload, framing and masking come after). Returns false (and
    /// writes nothing) once a Close has been sent or received, or if
    /// [`allow_compression`](Self::allow_compression) was not called: RSV1
    /// means nothing unless the extension was negotiated (RFC 6455 §5.2).
    pub fn send_compressed(&mut self, kind: MessageKind, compressed: &[u8], out: &mut Vec<u8>) -> bool {
        if self.state != State::Open || !self.deflate {
            return false;
        }
        let at = out.len();
        let mask = next_mask(self.role, &mut self.mask_seed);
        frame::write(out, kind.opcode(), compressed, mask);
        out[at] |= 0x40;
        true
    }

    /// Appends a Ping (at most 125 bytes of payload are sent).
    pub fn ping(&mut self, payload: &[u8], out: &mut Vec<u8>) -> bool {
        if self.state != State::Open {
            return false;
        }
        let mask = next_mask(self.role, &mut self.mask_seed);
        frame::write(out, Opcode::Ping, &payload[..payload.len().min(125)], mask);
        true
    }

    /// Starts the closing handshake (§7.1.2) with `code` and a short reason
    /// (cut to fit the 125-byte control frame limit). Input is still read
    /// until the peer's Close arrives; data in it is still delivered.
    pub fn close(&mut self, code: u16, reason: &str, out: &mut Vec<u8>) {
        if self.state == State::Open {
            write_close(self.role, &mut self.mask_seed, Some(code), reason, out);
            self.state = State::CloseSent;
            // What is gathered of a message will not be delivered: let its
            // memory go now.
            if let Some(p) = &mut self.partial {
                p.message = Vec::new();
            }
        }
    }

    /// For a message gathered across inputs: records `now` if it grew since
    /// the last call, and returns when it last grew. `None` when no message
    /// is being gathered. (The caller's clock; the session reads none.)
    pub fn note_progress(&mut self, now: u64) -> Option<u64> {
        let p = self.partial.as_mut().filter(|p| !p.message.is_empty())?;
        if p.message.len() != p.seen_len {
            p.seen_len = p.message.len();
            p.seen_at = now;
        }
        Some(p.seen_at)
    }

    /// When a message being gathered last grew, as recorded by
    /// [`note_progress`](Self::note_progress).
    pub fn last_progress(&self) -> Option<u64> {
        self.partial
            .as_ref()
            .filter(|p| !p.message.is_empty() && p.seen_len > 0)
            .map(|p| p.seen_at)
    }
}

/// Makes room in a gathering buffer for `more` bytes now: at once for the
/// rest of the frame (`frame_rest` more after these), doubling as a `Vec`
/// would, but never past `max_message` (§10.4): the limit bounds what a
/// connection holds, not only what it may be sent.
fn reserve_within(buf: &mut Vec<u8>, more: usize, frame_rest: usize, max_message: usize) {
    let need = buf.len() + more;
    if need <= buf.capacity() {
        return;
    }
    let frame_end = need.saturating_add(frame_rest).min(max_message);
    let doubled = buf.capacity().saturating_mul(2).min(max_message);
    let target = need.max(frame_end).max(doubled);
    buf.reserve_exact(target - buf.len());
}

/// The control frame handler (§5.5), on fields split off from the session
/// so that the payload may borrow the session's control buffer.
fn on_control(
    role: Role,
    state: &mut State,
    mask_seed: &mut u32,
    opcode: Opcode,
    payload: &[u8],
    at: Payload,
    out: &mut Vec<u8>,
) -> Result<Option<Received>, ProtocolError> {
    match opcode {
        Opcode::Ping => {
            // §5.5.2: "Upon receipt of a Ping frame, an endpoint MUST send a
            // Pong frame in response, unless it already received a Close
            // frame." After *sending* Close we send nothing at all (§5.5.1).
            if *state == State::Open {
                let mask = next_mask(role, mask_seed);
                frame::write(out, Opcode::Pong, payload, mask);
            }
            Ok(Some(Received::Ping(at)))
        }
        Opcode::Pong => Ok(Some(Received::Pong(at))),
        Opcode::Close => match close::parse_body(payload) {
            Ok((code, _)) => {
                // §5.5.1: "If an endpoint receives a Close frame and did not
                // previously send a Close frame, the endpoint MUST send a
                // Close frame in response. [...] typically echos the status
                // code it received."
                if *state == State::Open {
                    write_close(role, mask_seed, code, "", out);
                }
                *state = State::Closed;
                Ok(Some(Received::Closed(code, at)))
            }
            Err(bad) => {
                if *state == State::Open {
                    write_close(role, mask_seed, Some(code::PROTOCOL_ERROR), bad.as_str(), out);
                }
                *state = State::Closed;
                Err(ProtocolError {
                    code: code::PROTOCOL_ERROR,
                    reason: bad.as_str(),
                })
            }
        },
        _ => unreachable!("only control opcodes reach on_control"),
    }
}

/// Appends a Close frame: the code (if any) and as much of `reason` as fits
/// in 123 bytes, cut at a character boundary.
fn write_close(role: Role, mask_seed: &mut u32, code: Option<u16>, reason: &str, out: &mut Vec<u8>) {
    let mut body = [0u8; 125];
    let len = match code {
        None => 0,
        Some(c) => {
            body[..2].copy_from_slice(&c.to_be_bytes());
            let mut cut = reason.len().min(123);
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            body[2..2 + cut].copy_from_slice(&reason.as_bytes()[..cut]);
            2 + cut
        }
    };
    let mask = next_mask(role, mask_seed);
    frame::write(out, Opcode::Close, &body[..len], mask);
}

/// The masking key for the next outgoing frame: none for a server; for a
/// client, the next value of a xorshift generator.
fn next_mask(role: Role, seed: &mut u32) -> Option<[u8; 4]> {
    match role {
        Role::Server => None,
        Role::Client => {
            let mut x = *seed;
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *seed = x;
            Some(x.to_ne_bytes())
        }
    }
}

#[cfg(test)]
mod tests;
