//! The topics protocol of `ws://HOST/pubsub`: one connection subscribed to
//! many topics. The reference is docs/pubsub.md; this module is its
//! sans-IO codec: requests in (one whole WebSocket message), responses and
//! deliveries out (appended to the caller's buffer).
//!
//! - Text messages are JSON objects: `subscribe`, `unsubscribe`, `publish`
//!   from the client; `ack`, `error`, `message` from the server.
//! - Binary messages carry the same operations in a compact form so that
//!   binary payloads need no base64:
//!
//! ```text
//! +--------+----------------+---------+-----------------+-------------------+
//! | op (1) | id (4, BE u32) | len (1) | topic (len)     | payload (rest)    |
//! |        | if op & 0x40   | 1..=128 | UTF-8           | publish/message   |
//! +--------+----------------+---------+-----------------+-------------------+
//! op: 0x01 publish, 0x02 subscribe, 0x03 unsubscribe (client; | 0x40 = id follows)
//!     0x81 message (server)
//! ```
//!
//! Interop with plain rooms (a room is a topic) is symmetric, so that a bare
//! text message that goes through a `/pubsub` client and back is unchanged:
//! [`classify_text`] turns a bare message into a [`Payload`], [`bare`] turns
//! a payload back into a bare message.
//!
//! Deliveries are encoded once per topic and shared by every recipient:
//! [`write_message_frame`] appends the WebSocket frame header and the
//! envelope straight into the caller's buffer ([`envelope_len`] gives the
//! length first, so nothing is copied or patched afterwards).

use super::frame;
use super::MessageKind;
use serde::de::{self, Deserializer as _, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// Longest topic (and room) name, in bytes of UTF-8.
pub const MAX_TOPIC_LEN: usize = 128;
/// Deepest nesting of arrays and objects in `data` (and in bare text taken
/// as JSON). Below serde_json's own limit (128) with room for the envelope,
/// so that every delivery parses with recursive parsers too.
pub const MAX_DEPTH: usize = 100;
/// Longest string `id`, in bytes of its JSON text between the quotes.
pub const MAX_ID_LEN: usize = 64;
/// Most topics in one batch (`"topics":[...]`) request.
pub const MAX_BATCH: usize = 256;
/// Suggested default for the server's per-connection subscription limit.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 256;

/// Binary form, first byte: publish (client).
pub const OP_PUBLISH: u8 = 0x01;
/// Binary form, first byte: subscribe (client).
pub const OP_SUBSCRIBE: u8 = 0x02;
/// Binary form, first byte: unsubscribe (client).
pub const OP_UNSUBSCRIBE: u8 = 0x03;
/// Binary form, first byte: a delivery (server).
pub const OP_MESSAGE: u8 = 0x81;
/// Binary form: set in a client op when a 4-byte big-endian id follows it.
pub const FLAG_ID: u8 = 0x40;

// ---- topic names -----------------------------------------------------------

/// Why a name is not a valid topic (or room) name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicError {
    Empty,
    TooLong,
    NotUtf8,
    /// Contains a C0 control, DEL or a C1 control (Unicode category Cc).
    Control,
}

impl TopicError {
    /// A human-readable reason, usable for topics and rooms alike.
    pub fn reason(self) -> &'static str {
        match self {
            TopicError::Empty => "name is empty",
            TopicError::TooLong => "name is longer than 128 bytes",
            TopicError::NotUtf8 => "name is not UTF-8",
            TopicError::Control => "name contains a control character",
        }
    }
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// The naming rule shared by topics and rooms: 1 to [`MAX_TOPIC_LEN`] bytes
/// of UTF-8 with no control character (C0 U+0000–U+001F, DEL U+007F, C1
/// U+0080–U+009F).
pub fn validate_topic(name: &str) -> Result<(), TopicError> {
    if name.is_empty() {
        Err(TopicError::Empty)
    } else if name.len() > MAX_TOPIC_LEN {
        Err(TopicError::TooLong)
    } else if name.chars().any(char::is_control) {
        Err(TopicError::Control)
    } else {
        Ok(())
    }
}

/// [`validate_topic`] for raw bytes (the binary form, decoded room paths).
pub fn topic_from_bytes(name: &[u8]) -> Result<&str, TopicError> {
    let name = std::str::from_utf8(name).map_err(|_| TopicError::NotUtf8)?;
    validate_topic(name).map(|()| name)
}

// ---- requests --------------------------------------------------------------

/// A request id, echoed in the ack or error. Either an integer
/// 0..=2^64−1 or a string of at most [`MAX_ID_LEN`] bytes; a string is kept
/// as its JSON text (quotes and escapes included) and echoed byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Id<'a>(IdRepr<'a>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdRepr<'a> {
    Num(u64),
    /// Valid JSON string text, quotes included.
    Str(&'a str),
}

impl<'a> Id<'a> {
    /// A numeric id (the binary form's ids are numbers).
    pub fn num(n: u64) -> Id<'static> {
        Id(IdRepr::Num(n))
    }

    /// The number, for a numeric id.
    pub fn as_u64(self) -> Option<u64> {
        match self.0 {
            IdRepr::Num(n) => Some(n),
            IdRepr::Str(_) => None,
        }
    }

    /// Parses the JSON text of an `id` value.
    fn from_json(raw: &'a str) -> Option<Id<'a>> {
        match raw.as_bytes().first()? {
            b'"' if raw.len() <= MAX_ID_LEN + 2 => Some(Id(IdRepr::Str(raw))),
            // Fails on fractions, exponents and values above u64::MAX.
            b'0'..=b'9' => raw.parse().ok().map(|n| Id(IdRepr::Num(n))),
            _ => None,
        }
    }

    /// Appends the id as a JSON value.
    fn write(self, out: &mut Vec<u8>) {
        match self.0 {
            IdRepr::Num(n) => write_u64(out, n),
            IdRepr::Str(s) => out.extend_from_slice(s.as_bytes()),
        }
    }
}

/// JSON text already validated by this module (a whole value, within
/// [`MAX_DEPTH`]); only this module makes one, so an envelope built from it
/// is always valid JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Json<'a>(&'a str);

impl<'a> Json<'a> {
    pub fn as_str(self) -> &'a str {
        self.0
    }

    /// Whether the value is a JSON string (it may have leading whitespace
    /// when it came from bare text).
    fn is_string(self) -> bool {
        self.0.trim_start_matches(is_json_ws).starts_with('"')
    }
}

/// A message payload on its way between publishers and subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload<'a> {
    /// JSON: the `data` of a publish, or bare text that is JSON (and not a
    /// string). Delivered to subscribers verbatim as `data`.
    Json(Json<'a>),
    /// Bare text that is not JSON, or is a JSON string: delivered to
    /// subscribers as a JSON string holding the text.
    Text(&'a str),
    /// Delivered to subscribers in the binary form.
    Binary(&'a [u8]),
}

/// The topic(s) of a subscribe or unsubscribe: `"topic"` or a batch
/// `"topics":[...]`. Every name has passed [`validate_topic`]; a name with
/// JSON escapes is unescaped into an owned string, others are borrowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topics<'a> {
    One(Cow<'a, str>),
    Many(Vec<Cow<'a, str>>),
}

impl Topics<'_> {
    /// The names, in request order (duplicates kept).
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let (one, many) = match self {
            Topics::One(t) => (Some(&**t), &[][..]),
            Topics::Many(v) => (None, &v[..]),
        };
        one.into_iter().chain(many.iter().map(|t| &**t))
    }

    pub fn len(&self) -> usize {
        match self {
            Topics::One(_) => 1,
            Topics::Many(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A valid client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    Subscribe {
        topics: Topics<'a>,
        id: Option<Id<'a>>,
    },
    Unsubscribe {
        topics: Topics<'a>,
        id: Option<Id<'a>>,
    },
    /// `payload` is `Json` from a text request, `Binary` from a binary one.
    Publish {
        topic: Cow<'a, str>,
        payload: Payload<'a>,
        id: Option<Id<'a>>,
    },
}

impl<'a> Request<'a> {
    pub fn id(&self) -> Option<Id<'a>> {
        match self {
            Request::Subscribe { id, .. } | Request::Unsubscribe { id, .. } | Request::Publish { id, .. } => *id,
        }
    }
}

/// The stable, machine-readable error codes (docs/pubsub.md lists when each
/// is sent). The parser produces the first seven; the server the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A text message that is not JSON (syntax, trailing data).
    MalformedJson,
    /// A binary message shorter than its own header says.
    MalformedBinary,
    /// JSON that is not a valid request: not an object, `type` missing or
    /// not a string, bad `id`, duplicate key, `data` missing, ...
    BadRequest,
    UnknownType,
    BadTopic,
    /// `data` nested deeper than [`MAX_DEPTH`].
    TooDeep,
    MessageTooLarge,
    TooManySubscriptions,
    PublishNotAllowed,
    NotSubscribed,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::MalformedJson,
        ErrorCode::MalformedBinary,
        ErrorCode::BadRequest,
        ErrorCode::UnknownType,
        ErrorCode::BadTopic,
        ErrorCode::TooDeep,
        ErrorCode::MessageTooLarge,
        ErrorCode::TooManySubscriptions,
        ErrorCode::PublishNotAllowed,
        ErrorCode::NotSubscribed,
    ];

    /// The `code` string on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::MalformedBinary => "malformed_binary",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::BadTopic => "bad_topic",
            ErrorCode::TooDeep => "too_deep",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::PublishNotAllowed => "publish_not_allowed",
            ErrorCode::NotSubscribed => "not_subscribed",
        }
    }
}

/// A request the parser refused: answer it with [`write_error`]. `id` is the
/// request's id when it could be read (so the client can match the error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError<'a> {
    pub code: ErrorCode,
    pub reason: Cow<'static, str>,
    pub id: Option<Id<'a>>,
}

impl<'a> RequestError<'a> {
    fn new(code: ErrorCode, reason: impl Into<Cow<'static, str>>, id: Option<Id<'a>>) -> Self {
        RequestError {
            code,
            reason: reason.into(),
            id,
        }
    }
}

/// Parses one client message of either kind.
pub fn parse(kind: MessageKind, payload: &[u8]) -> Result<Request<'_>, RequestError<'_>> {
    match kind {
        MessageKind::Text => parse_text(payload),
        MessageKind::Binary => parse_binary(payload),
    }
}

/// The top-level keys of a text request, each as raw JSON text.
#[derive(Default)]
struct Fields<'a> {
    ty: Option<&'a RawValue>,
    topic: Option<&'a RawValue>,
    topics: Option<&'a RawValue>,
    id: Option<&'a RawValue>,
    data: Option<&'a RawValue>,
    /// A known key appeared twice (RFC 8259 §4 leaves the meaning open, so
    /// it is refused rather than guessed).
    duplicate: Option<&'static str>,
}

/// Reads the top-level object without allocating: known keys are borrowed
/// as raw JSON, others skipped. serde_json skips and captures values
/// iteratively, so no nesting depth can overflow the stack here.
struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
        let mut f = Fields::default();
        while let Some(Key(key)) = map.next_key::<Key>()? {
            let slot = match key {
                "type" => &mut f.ty,
                "topic" => &mut f.topic,
                "topics" => &mut f.topics,
                "id" => &mut f.id,
                "data" => &mut f.data,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            let value = map.next_value::<&'de RawValue>()?;
            if slot.is_some() {
                f.duplicate.get_or_insert(key);
            } else {
                *slot = Some(value);
            }
        }
        Ok(f)
    }
}

/// An object key, mapped to one of the known names ("" for the others), so
/// that escaped keys (`"typ\u0065"`) work without allocating.
struct Key(&'static str);

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        d.deserialize_identifier(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        let known = ["type", "topic", "topics", "id", "data"];
        Ok(Key(known.into_iter().find(|k| *k == v).unwrap_or("")))
    }
}

/// Parses a text request (`text` is a whole text message, UTF-8 validated
/// by the WebSocket layer; it is checked again, cheaply, rather than
/// trusted). Allocates nothing unless a topic has JSON escapes or the
/// request is a batch.
pub fn parse_text(text: &[u8]) -> Result<Request<'_>, RequestError<'_>> {
    let malformed = |reason: String| RequestError::new(ErrorCode::MalformedJson, reason, None);
    let text = std::str::from_utf8(text).map_err(|_| malformed("not UTF-8".into()))?;
    if !text.trim_start_matches(is_json_ws).starts_with('{') {
        return Err(match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => RequestError::new(ErrorCode::BadRequest, "a request is a JSON object", None),
            Err(e) => malformed(format!("not JSON: {e}")),
        });
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let fields = (&mut de)
        .deserialize_map(FieldsVisitor)
        .and_then(|f| de.end().map(|()| f))
        .map_err(|e| malformed(format!("not JSON: {e}")))?;
    request_from_fields(fields)
}

/// The semantic checks, once the text is known to be a JSON object.
fn request_from_fields(f: Fields<'_>) -> Result<Request<'_>, RequestError<'_>> {
    let bad = |reason: &'static str, id| Err(RequestError::new(ErrorCode::BadRequest, reason, id));
    let id = match f.id {
        None => None,
        Some(raw) => match Id::from_json(raw.get()) {
            Some(id) => Some(id),
            None => {
                return bad(
                    "\"id\" must be an integer 0..2^64-1 or a string of at most 64 bytes",
                    None,
                )
            }
        },
    };
    if let Some(key) = f.duplicate {
        let reason = format!("duplicate key \"{key}\"");
        return Err(RequestError::new(ErrorCode::BadRequest, reason, id));
    }
    let Some(ty) = f.ty else {
        return bad("missing \"type\"", id);
    };
    let Some(ty) = json_string(ty) else {
        return bad("\"type\" must be a string", id);
    };
    match &*ty {
        "subscribe" => topics(f.topic, f.topics, id).map(|topics| Request::Subscribe { topics, id }),
        "unsubscribe" => topics(f.topic, f.topics, id).map(|topics| Request::Unsubscribe { topics, id }),
        "publish" => {
            if f.topics.is_some() {
                return bad("publish takes one \"topic\", not \"topics\"", id);
            }
            let topic = one_topic(f.topic, id)?;
            let Some(data) = f.data else {
                return bad("publish needs \"data\"", id);
            };
            if !within_depth(data.get().as_bytes(), MAX_DEPTH) {
                let reason = "\"data\" is nested deeper than 100 arrays/objects";
                return Err(RequestError::new(ErrorCode::TooDeep, reason, id));
            }
            let payload = Payload::Json(Json(data.get()));
            Ok(Request::Publish { topic, payload, id })
        }
        _ => Err(RequestError::new(
            ErrorCode::UnknownType,
            "\"type\" must be \"subscribe\", \"unsubscribe\" or \"publish\"",
            id,
        )),
    }
}

/// The `topic` xor `topics` of a subscribe or unsubscribe.
fn topics<'a>(
    topic: Option<&'a RawValue>,
    topics: Option<&'a RawValue>,
    id: Option<Id<'a>>,
) -> Result<Topics<'a>, RequestError<'a>> {
    let bad_topic = |reason: &'static str| Err(RequestError::new(ErrorCode::BadTopic, reason, id));
    let Some(many) = topics else {
        return one_topic(topic, id).map(Topics::One);
    };
    if topic.is_some() {
        return Err(RequestError::new(
            ErrorCode::BadRequest,
            "give \"topic\" or \"topics\", not both",
            id,
        ));
    }
    let Ok(list) = serde_json::from_str::<Vec<&RawValue>>(many.get()) else {
        return bad_topic("\"topics\" must be an array of strings");
    };
    if list.is_empty() {
        return bad_topic("\"topics\" is empty");
    }
    if list.len() > MAX_BATCH {
        let reason = "more than 256 topics in one request";
        return Err(RequestError::new(ErrorCode::BadRequest, reason, id));
    }
    list.into_iter()
        .map(|raw| topic_name(raw, id))
        .collect::<Result<_, _>>()
        .map(Topics::Many)
}

fn one_topic<'a>(raw: Option<&'a RawValue>, id: Option<Id<'a>>) -> Result<Cow<'a, str>, RequestError<'a>> {
    match raw {
        Some(raw) => topic_name(raw, id),
        None => Err(RequestError::new(ErrorCode::BadTopic, "missing \"topic\"", id)),
    }
}

/// A topic name from its JSON text: a string that passes [`validate_topic`].
fn topic_name<'a>(raw: &'a RawValue, id: Option<Id<'a>>) -> Result<Cow<'a, str>, RequestError<'a>> {
    let Some(name) = json_string(raw) else {
        return Err(RequestError::new(ErrorCode::BadTopic, "a topic must be a string", id));
    };
    match validate_topic(&name) {
        Ok(()) => Ok(name),
        Err(e) => Err(RequestError::new(ErrorCode::BadTopic, topic_reason(e), id)),
    }
}

fn topic_reason(e: TopicError) -> &'static str {
    match e {
        TopicError::Empty => "topic is empty",
        TopicError::TooLong => "topic is longer than 128 bytes",
        TopicError::NotUtf8 => "topic is not UTF-8",
        TopicError::Control => "topic contains a control character",
    }
}

/// The value of a JSON string given its (valid) JSON text, or `None` if the
/// value is not a string. Borrowed unless it has escapes.
fn json_string(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get().trim_matches(is_json_ws);
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        serde_json::from_str::<String>(text).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

/// Parses a binary request (layout in the module docs).
pub fn parse_binary(msg: &[u8]) -> Result<Request<'_>, RequestError<'_>> {
    let err = |code, reason: &'static str, id| Err(RequestError::new(code, reason, id));
    let Some((&op, rest)) = msg.split_first() else {
        return err(ErrorCode::MalformedBinary, "empty binary message", None);
    };
    let base = op & !FLAG_ID;
    if !matches!(base, OP_PUBLISH | OP_SUBSCRIBE | OP_UNSUBSCRIBE) {
        return err(ErrorCode::UnknownType, "unknown binary op", None);
    }
    let (id, rest) = if op & FLAG_ID == 0 {
        (None, rest)
    } else {
        let Some((id, rest)) = rest.split_first_chunk::<4>() else {
            return err(ErrorCode::MalformedBinary, "binary message ends inside the id", None);
        };
        (Some(Id::num(u64::from(u32::from_be_bytes(*id)))), rest)
    };
    let Some((&len, rest)) = rest.split_first() else {
        return err(
            ErrorCode::MalformedBinary,
            "binary message ends before the topic length",
            id,
        );
    };
    let len = usize::from(len);
    if len == 0 || len > MAX_TOPIC_LEN {
        let reason = if len == 0 {
            "topic is empty"
        } else {
            "topic is longer than 128 bytes"
        };
        return err(ErrorCode::BadTopic, reason, id);
    }
    let Some((topic, payload)) = rest.split_at_checked(len) else {
        return err(ErrorCode::MalformedBinary, "binary message ends inside the topic", id);
    };
    let topic = match topic_from_bytes(topic) {
        Ok(t) => Cow::Borrowed(t),
        Err(e) => return err(ErrorCode::BadTopic, topic_reason(e), id),
    };
    if base == OP_PUBLISH {
        let payload = Payload::Binary(payload);
        return Ok(Request::Publish { topic, payload, id });
    }
    if !payload.is_empty() {
        return err(
            ErrorCode::MalformedBinary,
            "bytes after the topic of a subscribe/unsubscribe",
            id,
        );
    }
    let topics = Topics::One(topic);
    Ok(if base == OP_SUBSCRIBE {
        Request::Subscribe { topics, id }
    } else {
        Request::Unsubscribe { topics, id }
    })
}

// ---- responses ---------------------------------------------------------------

/// Appends the JSON text `{"type":"ack","id":ID}` (the payload of a text
/// message; the caller frames it).
pub fn write_ack(out: &mut Vec<u8>, id: Id<'_>) {
    out.extend_from_slice(br#"{"type":"ack","id":"#);
    id.write(out);
    out.push(b'}');
}

/// Appends the JSON text `{"type":"error","id":ID,"code":"CODE","reason":"..."}`
/// (no `id` key when `id` is `None`); `reason` is escaped.
pub fn write_error(out: &mut Vec<u8>, id: Option<Id<'_>>, code: ErrorCode, reason: &str) {
    out.extend_from_slice(br#"{"type":"error","#);
    if let Some(id) = id {
        out.extend_from_slice(br#""id":"#);
        id.write(out);
        out.push(b',');
    }
    out.extend_from_slice(br#""code":""#);
    out.extend_from_slice(code.as_str().as_bytes());
    out.extend_from_slice(br#"","reason":"#);
    write_json_string(out, reason);
    out.push(b'}');
}

// ---- deliveries --------------------------------------------------------------

const ENVELOPE_HEAD: &[u8] = br#"{"type":"message","topic":"#;
const ENVELOPE_DATA: &[u8] = br#","data":"#;

impl Payload<'_> {
    /// The kind of message a delivery of this payload is sent as.
    pub fn kind(self) -> MessageKind {
        match self {
            Payload::Json(_) | Payload::Text(_) => MessageKind::Text,
            Payload::Binary(_) => MessageKind::Binary,
        }
    }
}

/// The exact number of bytes [`write_envelope`] appends.
pub fn envelope_len(topic: &str, payload: Payload<'_>) -> usize {
    let text = ENVELOPE_HEAD.len() + json_string_len(topic) + ENVELOPE_DATA.len() + 1;
    match payload {
        Payload::Json(j) => text + j.0.len(),
        Payload::Text(t) => text + json_string_len(t),
        Payload::Binary(b) => 2 + binary_topic(topic).len() + b.len(),
    }
}

/// Appends a delivery of `payload` on `topic` (the WebSocket message's
/// payload, unframed): `{"type":"message","topic":"...","data":...}` for
/// JSON and text, the binary form (op 0x81) for binary.
///
/// `topic` must pass [`validate_topic`]; in the binary form a longer name
/// is cut to 255 bytes (at a character boundary) rather than corrupt the
/// length byte.
pub fn write_envelope(out: &mut Vec<u8>, topic: &str, payload: Payload<'_>) {
    debug_assert!(validate_topic(topic).is_ok(), "invalid topic {topic:?}");
    match payload {
        Payload::Binary(b) => write_binary(out, OP_MESSAGE, None, binary_topic(topic), b),
        Payload::Json(_) | Payload::Text(_) => {
            out.extend_from_slice(ENVELOPE_HEAD);
            write_json_string(out, topic);
            out.extend_from_slice(ENVELOPE_DATA);
            match payload {
                Payload::Json(j) => out.extend_from_slice(j.0.as_bytes()),
                Payload::Text(t) => write_json_string(out, t),
                Payload::Binary(_) => {}
            }
            out.push(b'}');
        }
    }
}

/// Appends a whole unmasked server frame (header, then envelope, written
/// once, in place) delivering `payload` on `topic`; returns the frame's
/// length. This is what a server puts in a topic's shared batch.
pub fn write_message_frame(out: &mut Vec<u8>, topic: &str, payload: Payload<'_>) -> usize {
    let len = envelope_len(topic, payload);
    let header = frame::encode(true, payload.kind().opcode(), len as u64, None);
    out.reserve(header.as_slice().len() + len);
    let start = out.len();
    out.extend_from_slice(header.as_slice());
    write_envelope(out, topic, payload);
    debug_assert_eq!(out.len() - start, header.as_slice().len() + len);
    out.len() - start
}

/// Appends a binary-form message: `op`, the id if any (and then `op` gets
/// [`FLAG_ID`]), the topic length and bytes, the payload. Used for
/// deliveries (`OP_MESSAGE`) and by clients and tests for requests. `topic`
/// must be at most 255 bytes (128 to be valid); longer names are cut.
pub fn write_binary(out: &mut Vec<u8>, op: u8, id: Option<u32>, topic: &str, payload: &[u8]) {
    let topic = binary_topic(topic);
    out.reserve(6 + topic.len() + payload.len());
    match id {
        Some(id) => {
            out.push(op | FLAG_ID);
            out.extend_from_slice(&id.to_be_bytes());
        }
        None => out.push(op),
    }
    out.push(topic.len() as u8);
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(payload);
}

/// `topic` cut to at most 255 bytes at a character boundary (a no-op for
/// every valid topic).
fn binary_topic(topic: &str) -> &str {
    let mut end = topic.len().min(255);
    while !topic.is_char_boundary(end) {
        end -= 1;
    }
    &topic[..end]
}

// ---- interop with plain rooms ----------------------------------------------

/// The payload of a bare text message (from a `/broadcast` member) for
/// `/pubsub` subscribers: the text itself as `data` if it is exactly one
/// JSON value, not a string, with no whitespace around it and within
/// [`MAX_DEPTH`]; otherwise (plain text, a JSON string, JSON with
/// whitespace around it, JSON too deep) the text as a JSON string. Either
/// way [`bare`] gives back exactly the same text, which is why strings and
/// surrounding whitespace (lost by a JSON parser) take the string form.
pub fn classify_text(text: &str) -> Payload<'_> {
    let exact = match (text.bytes().next(), text.bytes().next_back()) {
        (Some(first), Some(last)) => first != b'"' && !is_json_ws(char::from(first)) && !is_json_ws(char::from(last)),
        _ => false,
    };
    if exact && serde_json::from_str::<IgnoredAny>(text).is_ok() && within_depth(text.as_bytes(), MAX_DEPTH) {
        Payload::Json(Json(text))
    } else {
        Payload::Text(text)
    }
}

/// The `data` of a publish as it crossed between nodes (the bus): a whole
/// JSON value within [`MAX_DEPTH`], checked again, or `None`.
pub fn json_payload(text: &str) -> Option<Payload<'_>> {
    let ok = serde_json::from_str::<IgnoredAny>(text).is_ok() && within_depth(text.as_bytes(), MAX_DEPTH);
    ok.then_some(Payload::Json(Json(text)))
}

/// What plain room members receive for `payload`: a JSON string's value
/// (unescaped, without quotes), other JSON as its text verbatim, text as
/// is, binary as is. The inverse of [`classify_text`] on bare text.
pub fn bare(payload: Payload<'_>) -> (MessageKind, Cow<'_, [u8]>) {
    match payload {
        Payload::Json(j) if j.is_string() => {
            let text = j.0.trim_matches(is_json_ws);
            let inner = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text);
            if !inner.contains('\\') {
                return (MessageKind::Text, Cow::Borrowed(inner.as_bytes()));
            }
            // Valid JSON by construction; the fallback is unreachable.
            let value = serde_json::from_str::<String>(text).unwrap_or_else(|_| inner.to_string());
            (MessageKind::Text, Cow::Owned(value.into_bytes()))
        }
        Payload::Json(j) => (MessageKind::Text, Cow::Borrowed(j.0.as_bytes())),
        Payload::Text(t) => (MessageKind::Text, Cow::Borrowed(t.as_bytes())),
        Payload::Binary(b) => (MessageKind::Binary, Cow::Borrowed(b)),
    }
}

// ---- JSON helpers --------------------------------------------------------------

/// RFC 8259 §2: `ws = *( %x20 / %x09 / %x0A / %x0D )`.
fn is_json_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// Whether valid JSON `json` nests arrays and objects at most `max` deep.
/// Linear, no recursion; skips strings (brackets in them do not count) and
/// scans at all only when there are more than `max` opening brackets.
fn within_depth(json: &[u8], max: usize) -> bool {
    if openers(json) <= max {
        return true;
    }
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = json.get(i) {
        i += 1;
        match b {
            b'"' => {
                // To the closing quote; an escape's second byte is never one.
                while let Some(&c) = json.get(i) {
                    i += if c == b'\\' { 2 } else { 1 };
                    if c == b'"' {
                        break;
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// How many `[` and `{` bytes `json` has (`[` is `{` but for bit 5): counted
/// in u8 lanes, 255 bytes at a time, which the compiler vectorises.
fn openers(json: &[u8]) -> usize {
    json.chunks(255)
        .map(|chunk| usize::from(chunk.iter().fold(0u8, |n, &b| n + u8::from(b | 0x20 == b'{'))))
        .sum()
}

/// How many bytes of escape sequence stand for byte `b` in a JSON string
/// (1: the byte itself). The escapes are serde_json's: `\"`, `\\`, `\b`,
/// `\t`, `\n`, `\f`, `\r`, and `\u00XX` for the other C0 controls.
fn escaped_len(b: u8) -> usize {
    match b {
        b'"' | b'\\' | 0x08 | 0x09 | 0x0A | 0x0C | 0x0D => 2,
        0x00..=0x1F => 6,
        _ => 1,
    }
}

fn needs_escape(b: u8) -> bool {
    (b < 0x20) | (b == b'"') | (b == b'\\')
}

/// Whether any byte of `bytes` needs an escape: branch-free, so that the
/// compiler vectorises it.
fn any_escape(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |any, &b| any | u8::from(needs_escape(b))) != 0
}

/// The length of `s` written by [`write_json_string`].
fn json_string_len(s: &str) -> usize {
    let bytes = s.as_bytes();
    if !any_escape(bytes) {
        return bytes.len() + 2;
    }
    bytes.iter().map(|&b| escaped_len(b)).sum::<usize>() + 2
}

/// Appends `s` as a JSON string, quotes included. Clean 32-byte blocks are
/// copied whole (escapes are all ASCII, so cutting a character between two
/// blocks is harmless).
fn write_json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for block in s.as_bytes().chunks(32) {
        if any_escape(block) {
            write_escaped(out, block);
        } else {
            out.extend_from_slice(block);
        }
    }
    out.push(b'"');
}

/// Appends `bytes` with JSON escapes.
fn write_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !needs_escape(b) {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        start = i + 1;
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x09 => b't',
            0x0A => b'n',
            0x0C => b'f',
            0x0D => b'r',
            _ => {
                out.extend_from_slice(b"\\u00");
                out.extend_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xF)]]);
                continue;
            }
        };
        out.extend_from_slice(&[b'\\', short]);
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Appends `n` in decimal.
fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use std::collections::HashMap;

    // ---- helpers --------------------------------------------------------------

    fn num(n: u64) -> Option<Id<'static>> {
        Some(Id::num(n))
    }

    fn str_id(raw: &str) -> Option<Id<'_>> {
        Some(Id(IdRepr::Str(raw)))
    }

    fn one(t: &str) -> Topics<'_> {
        Topics::One(Cow::Borrowed(t))
    }

    fn json_payload(raw: &str) -> Payload<'_> {
        Payload::Json(Json(raw))
    }

    fn sub<'a>(topics: Topics<'a>, id: Option<Id<'a>>) -> Request<'a> {
        Request::Subscribe { topics, id }
    }

    fn publish<'a>(topic: &'a str, payload: Payload<'a>, id: Option<Id<'a>>) -> Request<'a> {
        Request::Publish {
            topic: Cow::Borrowed(topic),
            payload,
            id,
        }
    }

    /// The error code (and id) of a refused request.
    fn refused(r: Result<Request<'_>, RequestError<'_>>) -> (ErrorCode, Option<u64>) {
        match r {
            Err(e) => {
                assert!(!e.reason.is_empty());
                (e.code, e.id.and_then(Id::as_u64))
            }
            Ok(req) => panic!("accepted: {req:?}"),
        }
    }

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    // ---- text requests --------------------------------------------------------

    #[test]
    fn text_requests() {
        let t128 = "é".repeat(64);
        let long_topic = format!(r#"{{"type":"subscribe","topic":"{t128}"}}"#);
        let id64 = format!(r#""{}""#, "x".repeat(64));
        let long_id = format!(r#"{{"type":"subscribe","topic":"a","id":{id64}}}"#);
        let cases: Vec<(&str, Request<'_>)> = vec![
            (
                r#"{"type":"subscribe","topic":"prices.AAPL","id":1}"#,
                sub(one("prices.AAPL"), num(1)),
            ),
            (r#"{"type":"subscribe","topic":"a"}"#, sub(one("a"), None)),
            (
                r#"{"type":"unsubscribe","topic":"prices.AAPL","id":2}"#,
                Request::Unsubscribe {
                    topics: one("prices.AAPL"),
                    id: num(2),
                },
            ),
            (
                r#"{"type":"publish","topic":"t","data":{"bid":1.5,"x":[1,"]"]},"id":3}"#,
                publish("t", json_payload(r#"{"bid":1.5,"x":[1,"]"]}"#), num(3)),
            ),
            (
                r#"{"type":"publish","topic":"t","data":null}"#,
                publish("t", json_payload("null"), None),
            ),
            (
                r#"{"type":"publish","topic":"t","data":"hi"}"#,
                publish("t", json_payload(r#""hi""#), None),
            ),
            // Whitespace anywhere; `data` is its text without the surrounding whitespace.
            (
                " \t\r\n{ \"data\" : [1, 2] ,\n\"topic\":\"t\" , \"type\" : \"publish\" }\n ",
                publish("t", json_payload("[1, 2]"), None),
            ),
            // Ids: 0, u64::MAX, strings echoed as written.
            (r#"{"type":"subscribe","topic":"a","id":0}"#, sub(one("a"), num(0))),
            (
                " { \"id\" : 7 ,\"type\":\"subscribe\",\"topic\":\"a\"}",
                sub(one("a"), num(7)),
            ),
            (
                "{\"id\":\t\"s\"\n,\"type\":\"subscribe\",\"topic\":\"a\"}",
                sub(one("a"), str_id("\"s\"")),
            ),
            (
                r#"{"id":18446744073709551615,"type":"subscribe","topic":"a"}"#,
                sub(one("a"), num(u64::MAX)),
            ),
            (
                r#"{"type":"subscribe","topic":"a","id":"r-1"}"#,
                sub(one("a"), str_id(r#""r-1""#)),
            ),
            (
                r#"{"type":"subscribe","topic":"a","id":"\"q\""}"#,
                sub(one("a"), str_id(r#""\"q\"""#)),
            ),
            (
                r#"{"type":"subscribe","topic":"a","id":""}"#,
                sub(one("a"), str_id(r#""""#)),
            ),
            (&long_id, sub(one("a"), str_id(&id64))),
            // Unicode, and the longest topic (128 bytes of two-byte characters).
            (
                r#"{"type":"subscribe","topic":"café ✓ 価格 🎉"}"#,
                sub(one("café ✓ 価格 🎉"), None),
            ),
            (&long_topic, sub(one(&t128), None)),
            // DEL and C1 are refused, but U+00A0 and U+2028 are not controls.
            (
                r#"{"type":"subscribe","topic":"a\u00a0b\u2028"}"#,
                sub(Topics::One(Cow::Owned("a\u{a0}b\u{2028}".into())), None),
            ),
            // Escapes in topic, type and keys.
            (
                r#"{"type":"subscribe","topic":"prices.\u0041APL/\"x\"\\"}"#,
                sub(Topics::One(Cow::Owned(r#"prices.AAPL/"x"\"#.into())), None),
            ),
            (r#"{"typ\u0065":"subscrib\u0065","topic":"a"}"#, sub(one("a"), None)),
            // Unknown keys are ignored, whatever they hold; so is `data` outside publish.
            (
                r#"{"type":"subscribe","topic":"a","x":{"y":[1,{"z":null}]},"data":5,"typ":1}"#,
                sub(one("a"), None),
            ),
            // Batches.
            (
                r#"{"type":"subscribe","topics":["a","b\u0063","a"],"id":9}"#,
                sub(
                    Topics::Many(vec![Cow::Borrowed("a"), Cow::Owned("bc".into()), Cow::Borrowed("a")]),
                    num(9),
                ),
            ),
            (
                r#"{"type":"unsubscribe","topics":["a"]}"#,
                Request::Unsubscribe {
                    topics: Topics::Many(vec![Cow::Borrowed("a")]),
                    id: None,
                },
            ),
        ];
        for (text, want) in cases {
            let got = parse_text(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e:?}"));
            assert_eq!(got, want, "{text}");
            assert_eq!(parse(MessageKind::Text, text.as_bytes()).as_ref(), Ok(&want));
            // Borrowed when the JSON has no escapes: no allocation.
            if let Request::Subscribe {
                topics: Topics::One(t), ..
            } = &got
            {
                let literal = text.contains(&format!(r#""topic":"{t}""#));
                assert_eq!(matches!(t, Cow::Borrowed(_)), literal, "{text}");
            }
        }
    }

    #[test]
    fn every_proper_prefix_of_a_request_is_malformed() {
        let requests = [
            r#"{"type":"subscribe","topic":"prices.AAPL","id":1}"#,
            r#"{"type":"publish","topic":"t\u00e9","data":{"a":[1,2.5e3,"x\"y",true,null]},"id":"k"}"#,
            r#"{"type":"unsubscribe","topics":["a","b"]}"#,
        ];
        for text in requests {
            assert!(parse_text(text.as_bytes()).is_ok(), "{text}");
            for cut in 0..text.len() {
                let (code, _) = refused(parse_text(&text.as_bytes()[..cut]));
                assert_eq!(code, ErrorCode::MalformedJson, "{text} cut at {cut}");
            }
        }
    }

    #[test]
    fn refused_text_requests() {
        use ErrorCode::*;
        let topic129 = format!(r#"{{"type":"subscribe","topic":"{}","id":4}}"#, "a".repeat(129));
        let id65 = format!(r#"{{"type":"subscribe","topic":"a","id":"{}"}}"#, "x".repeat(65));
        let batch257 = format!(r#"{{"type":"subscribe","topics":[{}"a"]}}"#, r#""a","#.repeat(256));
        let cases: Vec<(&[u8], ErrorCode, Option<u64>)> = vec![
            // Not JSON.
            (b"", MalformedJson, None),
            (b"  \n", MalformedJson, None),
            (b"hello", MalformedJson, None),
            (b"{", MalformedJson, None),
            (b"[1,", MalformedJson, None),
            (b"{'type':'subscribe'}", MalformedJson, None),
            (br#"{"type":"subscribe","topic":"a",}"#, MalformedJson, None),
            (br#"{"type":"subscribe","topic":"a"} x"#, MalformedJson, None),
            (br#"{"type":"subscribe","topic":"a"}{}"#, MalformedJson, None),
            (b"{\"type\":\"subscribe\",\"topic\":\"a\nb\"}", MalformedJson, None),
            (b"{\"type\":\"subscribe\",\"topic\":\"\xff\"}", MalformedJson, None),
            (br#"{"type":"publish","topic":"a","data":[1,2}"#, MalformedJson, None),
            (br#"{"type":"publish","topic":"a","data":NaN}"#, MalformedJson, None),
            // JSON, but not an object.
            (b"[1,2]", BadRequest, None),
            (br#""subscribe""#, BadRequest, None),
            (b" 42 ", BadRequest, None),
            (b"null", BadRequest, None),
            // Type.
            (b"{}", BadRequest, None),
            (br#"{"topic":"a","id":5}"#, BadRequest, Some(5)),
            (br#"{"type":1,"topic":"a","id":5}"#, BadRequest, Some(5)),
            (br#"{"type":null,"topic":"a"}"#, BadRequest, None),
            (br#"{"type":"frobnicate","topic":"a","id":7}"#, UnknownType, Some(7)),
            (br#"{"type":"Subscribe","topic":"a"}"#, UnknownType, None),
            (br#"{"type":"ack","id":1}"#, UnknownType, Some(1)),
            (br#"{"type":"message","topic":"a","data":1}"#, UnknownType, None),
            // Topic.
            (br#"{"type":"subscribe","id":3}"#, BadTopic, Some(3)),
            (br#"{"type":"publish","data":1,"id":3}"#, BadTopic, Some(3)),
            (br#"{"type":"subscribe","topic":"","id":3}"#, BadTopic, Some(3)),
            (topic129.as_bytes(), BadTopic, Some(4)),
            (br#"{"type":"subscribe","topic":"a\u0000"}"#, BadTopic, None),
            (br#"{"type":"subscribe","topic":"a\tb"}"#, BadTopic, None),
            (br#"{"type":"subscribe","topic":"a\u001f"}"#, BadTopic, None),
            (b"{\"type\":\"subscribe\",\"topic\":\"a\x7f\"}", BadTopic, None),
            (br#"{"type":"subscribe","topic":"\u007f"}"#, BadTopic, None),
            (b"{\"type\":\"subscribe\",\"topic\":\"\xc2\x85\"}", BadTopic, None),
            (br#"{"type":"subscribe","topic":"\u009f"}"#, BadTopic, None),
            (br#"{"type":"subscribe","topic":5}"#, BadTopic, None),
            (br#"{"type":"subscribe","topic":null}"#, BadTopic, None),
            (br#"{"type":"subscribe","topic":["a"]}"#, BadTopic, None),
            (br#"{"type":"publish","topic":{"a":1},"data":1}"#, BadTopic, None),
            (br#"{"type":"subscribe","topic":"\ud800"}"#, BadTopic, None),
            // Batches.
            (br#"{"type":"subscribe","topics":[],"id":1}"#, BadTopic, Some(1)),
            (br#"{"type":"subscribe","topics":"a"}"#, BadTopic, None),
            (br#"{"type":"subscribe","topics":[1]}"#, BadTopic, None),
            (br#"{"type":"unsubscribe","topics":["a",""],"id":2}"#, BadTopic, Some(2)),
            (
                br#"{"type":"subscribe","topics":["a"],"topic":"a","id":2}"#,
                BadRequest,
                Some(2),
            ),
            (br#"{"type":"publish","topics":["a"],"data":1}"#, BadRequest, None),
            (batch257.as_bytes(), BadRequest, None),
            // Publish.
            (br#"{"type":"publish","topic":"a","id":8}"#, BadRequest, Some(8)),
            // Ids: refused ones cannot be echoed.
            (br#"{"type":"subscribe","topic":"a","id":-1}"#, BadRequest, None),
            (br#"{"type":"subscribe","topic":"a","id":1.5}"#, BadRequest, None),
            (br#"{"type":"subscribe","topic":"a","id":1.0}"#, BadRequest, None),
            (br#"{"type":"subscribe","topic":"a","id":1e3}"#, BadRequest, None),
            (
                br#"{"type":"subscribe","topic":"a","id":18446744073709551616}"#,
                BadRequest,
                None,
            ),
            (br#"{"type":"subscribe","topic":"a","id":true}"#, BadRequest, None),
            (br#"{"type":"subscribe","topic":"a","id":null}"#, BadRequest, None),
            (br#"{"type":"subscribe","topic":"a","id":[1]}"#, BadRequest, None),
            (id65.as_bytes(), BadRequest, None),
            // Duplicate keys.
            (
                br#"{"type":"subscribe","type":"publish","topic":"a","id":1}"#,
                BadRequest,
                Some(1),
            ),
            (br#"{"type":"subscribe","topic":"a","topic":"b"}"#, BadRequest, None),
            (
                br#"{"type":"subscribe","topic":"a","id":1,"id":2}"#,
                BadRequest,
                Some(1),
            ),
            (br#"{"type":"publish","topic":"a","data":1,"data":2}"#, BadRequest, None),
        ];
        for (text, code, id) in cases {
            let got = refused(parse_text(text));
            assert_eq!(got, (code, id), "{}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn string_ids_in_errors_are_echoed_verbatim() {
        let e = parse_text(br#"{"type":"nope","id":"a\u0062"}"#).unwrap_err();
        assert_eq!(e.id, str_id(r#""a\u0062""#));
        let mut out = Vec::new();
        write_error(&mut out, e.id, e.code, &e.reason);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(r#""id":"a\u0062""#), "{text}");
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["id"], "ab");
    }

    #[test]
    fn nesting_depth() {
        let publish_with = |data: &str| format!(r#"{{"type":"publish","topic":"t","data":{data},"id":1}}"#);
        // At the limit: accepted; one more: too_deep (the id is kept).
        let ok = publish_with(&nested(MAX_DEPTH));
        assert!(parse_text(ok.as_bytes()).is_ok());
        let deep = publish_with(&nested(MAX_DEPTH + 1));
        assert_eq!(refused(parse_text(deep.as_bytes())), (ErrorCode::TooDeep, Some(1)));
        // Brackets inside strings do not count.
        let fake = publish_with(&format!(r#"["{}\"{}"]"#, "[".repeat(500), "{".repeat(500)));
        assert!(parse_text(fake.as_bytes()).is_ok());
        let objects = publish_with(&format!("{}1{}", r#"{"a":"#.repeat(101), "}".repeat(101)));
        assert_eq!(refused(parse_text(objects.as_bytes())).0, ErrorCode::TooDeep);

        // 100 000 deep: no stack overflow anywhere, whatever the shape.
        let huge = nested(100_000);
        assert_eq!(
            refused(parse_text(publish_with(&huge).as_bytes())).0,
            ErrorCode::TooDeep
        );
        let open = "[".repeat(100_000);
        assert_eq!(
            refused(parse_text(publish_with(&open).as_bytes())).0,
            ErrorCode::MalformedJson
        );
        assert_eq!(refused(parse_text(huge.as_bytes())).0, ErrorCode::BadRequest);
        assert_eq!(refused(parse_text(open.as_bytes())).0, ErrorCode::MalformedJson);
        let ignored = format!(r#"{{"type":"subscribe","topic":"a","x":{huge}}}"#);
        assert!(parse_text(ignored.as_bytes()).is_ok());
        let ignored_open = format!(r#"{{"type":"subscribe","topic":"a","x":{open}}}"#);
        assert_eq!(refused(parse_text(ignored_open.as_bytes())).0, ErrorCode::MalformedJson);
        let topics = format!(r#"{{"type":"subscribe","topics":{huge}}}"#);
        assert_eq!(refused(parse_text(topics.as_bytes())).0, ErrorCode::BadTopic);
        // Bare text that deep is delivered as a string.
        assert_eq!(classify_text(&huge), Payload::Text(&huge));
        assert_eq!(classify_text(&nested(MAX_DEPTH)), json_payload(&nested(MAX_DEPTH)));
    }

    // ---- binary requests ------------------------------------------------------

    fn binary(op: u8, id: Option<u32>, topic: &str, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_binary(&mut out, op, id, topic, payload);
        out
    }

    #[test]
    fn binary_layout() {
        assert_eq!(binary(OP_PUBLISH, None, "ab", b"\x00\xff"), b"\x01\x02ab\x00\xff");
        assert_eq!(
            binary(OP_PUBLISH, Some(0x0102_0304), "ab", b"x"),
            b"\x41\x01\x02\x03\x04\x02abx"
        );
        assert_eq!(
            binary(OP_SUBSCRIBE, Some(7), "é", b""),
            b"\x42\x00\x00\x00\x07\x02\xc3\xa9"
        );
        assert_eq!(binary(OP_UNSUBSCRIBE, None, "a", b""), b"\x03\x01a");
        assert_eq!(binary(OP_MESSAGE, None, "a", b"z"), b"\x81\x01az");
    }

    #[test]
    fn binary_requests_and_every_truncation() {
        let t128 = "x".repeat(128);
        let cases: Vec<(Vec<u8>, Request<'_>)> = vec![
            (
                binary(OP_PUBLISH, None, "t", b"\x00\x01\xff"),
                publish("t", Payload::Binary(b"\x00\x01\xff"), None),
            ),
            (
                binary(OP_PUBLISH, Some(u32::MAX), "t", b""),
                publish("t", Payload::Binary(b""), num(u64::from(u32::MAX))),
            ),
            (
                binary(OP_PUBLISH, Some(0), &t128, b"p"),
                publish(&t128, Payload::Binary(b"p"), num(0)),
            ),
            (binary(OP_SUBSCRIBE, Some(5), "café", b""), sub(one("café"), num(5))),
            (binary(OP_SUBSCRIBE, None, "a", b""), sub(one("a"), None)),
            (
                binary(OP_UNSUBSCRIBE, Some(6), "a", b""),
                Request::Unsubscribe {
                    topics: one("a"),
                    id: num(6),
                },
            ),
        ];
        for (msg, want) in &cases {
            assert_eq!(parse_binary(msg).as_ref(), Ok(want), "{msg:x?}");
            assert_eq!(parse(MessageKind::Binary, msg).as_ref(), Ok(want));
            // Cut short at every point: an error up to the end of the topic;
            // after that only a publish's payload is shorter.
            let head = msg.len()
                - if let Request::Publish {
                    payload: Payload::Binary(p),
                    ..
                } = want
                {
                    p.len()
                } else {
                    0
                };
            for cut in 0..msg.len() {
                let got = parse_binary(&msg[..cut]);
                if cut < head {
                    let (code, id) = refused(got);
                    assert_eq!(code, ErrorCode::MalformedBinary, "{msg:x?} cut at {cut}");
                    let id_complete = msg[0] & FLAG_ID != 0 && cut >= 5;
                    assert_eq!(id.is_some(), id_complete, "{msg:x?} cut at {cut}");
                } else {
                    let Ok(Request::Publish {
                        payload: Payload::Binary(p),
                        ..
                    }) = got
                    else {
                        panic!("{msg:x?} cut at {cut}: {got:?}");
                    };
                    assert_eq!(p, &msg[head..cut]);
                }
            }
        }
    }

    #[test]
    fn refused_binary_requests() {
        use ErrorCode::*;
        let mut long = vec![OP_SUBSCRIBE, 129];
        long.extend_from_slice(&[b'a'; 129]);
        let cases: Vec<(Vec<u8>, ErrorCode, Option<u64>)> = vec![
            (vec![], MalformedBinary, None),
            (vec![0x00, 1, b'a'], UnknownType, None),
            (vec![0x04, 1, b'a'], UnknownType, None),
            (vec![0x3f, 1, b'a'], UnknownType, None),
            (vec![0x40, 0, 0, 0, 1, 1, b'a'], UnknownType, None),
            (binary(OP_MESSAGE, None, "a", b"x"), UnknownType, None),
            (vec![0xc1, 1, b'a'], UnknownType, None),
            (vec![0x11, 1, b'a'], UnknownType, None),
            (vec![OP_PUBLISH, 0, b'x'], BadTopic, None),
            (vec![OP_PUBLISH | FLAG_ID, 0, 0, 0, 9, 0], BadTopic, Some(9)),
            (long, BadTopic, None),
            (vec![OP_SUBSCRIBE, 200, b'a'], BadTopic, None),
            (
                vec![OP_SUBSCRIBE | FLAG_ID, 0, 0, 1, 0, 2, 0xc3, 0x28],
                BadTopic,
                Some(256),
            ),
            (vec![OP_SUBSCRIBE, 1, 0xff], BadTopic, None),
            (vec![OP_SUBSCRIBE, 1, 0x00], BadTopic, None),
            (vec![OP_SUBSCRIBE, 2, b'a', b'\n'], BadTopic, None),
            (vec![OP_PUBLISH, 1, 0x7f, b'p'], BadTopic, None),
            (vec![OP_PUBLISH, 2, 0xc2, 0x80, b'p'], BadTopic, None),
            (vec![OP_SUBSCRIBE, 1, b'a', b'x'], MalformedBinary, None),
            (
                vec![OP_UNSUBSCRIBE | FLAG_ID, 0, 0, 0, 3, 1, b'a', 0],
                MalformedBinary,
                Some(3),
            ),
        ];
        for (msg, code, id) in cases {
            assert_eq!(refused(parse_binary(&msg)), (code, id), "{msg:x?}");
        }
    }

    // ---- topic names -----------------------------------------------------------

    #[test]
    fn topic_names() {
        let ok = [
            "a",
            "prices.AAPL",
            "café au lait",
            "🎉",
            "a b/c:d#e?f",
            "\u{a0}",
            "\u{2028}",
            "\u{fffd}",
        ];
        for name in ok {
            assert_eq!(validate_topic(name), Ok(()), "{name:?}");
            assert_eq!(topic_from_bytes(name.as_bytes()), Ok(name));
        }
        assert_eq!(validate_topic(&"a".repeat(128)), Ok(()));
        assert_eq!(validate_topic(&"€".repeat(42)), Ok(())); // 126 bytes
        assert_eq!(validate_topic(&"€".repeat(43)), Err(TopicError::TooLong)); // 129 bytes
        assert_eq!(validate_topic(&"a".repeat(129)), Err(TopicError::TooLong));
        assert_eq!(validate_topic(""), Err(TopicError::Empty));
        for c in ('\0'..='\u{1f}').chain('\u{7f}'..='\u{9f}') {
            assert_eq!(validate_topic(&format!("a{c}b")), Err(TopicError::Control), "{c:?}");
        }
        assert_eq!(topic_from_bytes(b"a\xff"), Err(TopicError::NotUtf8));
        assert_eq!(topic_from_bytes(b"\xc3"), Err(TopicError::NotUtf8));
        assert_eq!(topic_from_bytes(b""), Err(TopicError::Empty));
        assert_eq!(TopicError::TooLong.to_string(), "name is longer than 128 bytes");
    }

    // ---- responses --------------------------------------------------------------

    #[test]
    fn acks_and_errors() {
        let mut out = Vec::new();
        write_ack(&mut out, Id::num(1));
        assert_eq!(out, br#"{"type":"ack","id":1}"#);
        out.clear();
        write_ack(&mut out, Id::num(u64::MAX));
        assert_eq!(out, br#"{"type":"ack","id":18446744073709551615}"#);
        out.clear();
        let req = parse_text(br#"{"type":"subscribe","topic":"a","id":"x\"y"}"#).unwrap();
        write_ack(&mut out, req.id().unwrap());
        assert_eq!(out, br#"{"type":"ack","id":"x\"y"}"#);

        out.clear();
        write_error(&mut out, Some(Id::num(1)), ErrorCode::BadTopic, "topic is empty");
        assert_eq!(
            out,
            br#"{"type":"error","id":1,"code":"bad_topic","reason":"topic is empty"}"#
        );
        out.clear();
        write_error(&mut out, None, ErrorCode::MalformedJson, "bad \"quote\" \\ \n");
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"type":"error","code":"malformed_json","reason":"bad \"quote\" \\ \n"})
        );
    }

    #[test]
    fn error_codes_are_distinct_snake_case() {
        let names: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        assert!(names
            .iter()
            .all(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
    }

    #[test]
    fn decimal_ids() {
        for n in [0, 1, 9, 10, 99, 100, 4_294_967_295, 9_007_199_254_740_993, u64::MAX] {
            let mut out = Vec::new();
            write_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    // ---- deliveries ---------------------------------------------------------------

    #[test]
    fn json_strings_match_serde_json() {
        let mut all: String = (0u8..0x80).map(char::from).collect();
        all.push_str("é€🎉\u{2028}\u{7f}\u{85}");
        // Escapes on both sides of the 32-byte blocks, characters cut by them.
        let blocks = format!("{}\"{}\n{}", "x".repeat(31), "é".repeat(20), "\u{1}".repeat(40));
        let samples = [
            &blocks,
            "",
            "plain",
            "\"",
            "\\",
            "a\"b\\c\nd\re\tf\u{8}g\u{c}h\u{0}i\u{1f}",
            &all,
        ];
        for s in samples {
            let mut out = Vec::new();
            write_json_string(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap().as_bytes(), "{s:?}");
            assert_eq!(json_string_len(s), out.len(), "{s:?}");
        }
    }

    /// Topics and payloads for the envelope tests.
    fn deliveries() -> Vec<(&'static str, Payload<'static>)> {
        vec![
            ("prices.AAPL", json_payload(r#"{"bid":189.5,"ask":189.6}"#)),
            ("t", json_payload("null")),
            ("t", json_payload(r#""already a \"string\"""#)),
            ("t", json_payload("  [1, 2]\n")),
            ("a \"quoted\" \\ topic", json_payload("1")),
            ("café ✓ 価格 🎉", Payload::Text("plain text")),
            ("t", Payload::Text("")),
            ("t", Payload::Text("\"hello\"")),
            ("t", Payload::Text("tab\tnl\ncr\rnul\u{0}bs\\q\"é🎉\u{2028}")),
            ("t", Payload::Binary(b"\x00\x01\xfe\xff")),
            ("café", Payload::Binary(b"")),
        ]
    }

    #[test]
    fn envelopes_parse_back() {
        for (topic, payload) in deliveries() {
            let mut out = b"previous".to_vec();
            write_envelope(&mut out, topic, payload);
            let env = &out[8..];
            assert_eq!(env.len(), envelope_len(topic, payload), "{topic:?} {payload:?}");
            match payload {
                Payload::Binary(b) => {
                    assert_eq!(env[0], OP_MESSAGE);
                    assert_eq!(usize::from(env[1]), topic.len());
                    assert_eq!(&env[2..2 + topic.len()], topic.as_bytes());
                    assert_eq!(&env[2 + topic.len()..], b);
                }
                Payload::Json(_) | Payload::Text(_) => {
                    let v: Value = serde_json::from_slice(env).unwrap();
                    let data = match payload {
                        Payload::Json(j) => serde_json::from_str::<Value>(j.as_str()).unwrap(),
                        _ => Value::String(std::str::from_utf8(bare(payload).1.as_ref()).unwrap().into()),
                    };
                    assert_eq!(v, json!({"type":"message","topic":topic,"data":data}));
                    assert!(env.starts_with(br#"{"type":"message","topic":""#));
                }
            }
        }
    }

    #[test]
    fn message_frames_are_header_then_envelope() {
        let big = "x".repeat(70_000);
        let mut cases = deliveries();
        cases.push(("big", Payload::Text(&big)));
        cases.push(("big", Payload::Binary(big.as_bytes())));
        for (topic, payload) in cases {
            let mut out = vec![0xAA];
            let n = write_message_frame(&mut out, topic, payload);
            assert_eq!(n, out.len() - 1);
            let frame::Decoded::Complete(h, used) = frame::decode(&out[1..]).unwrap() else {
                panic!("partial header");
            };
            assert!(h.fin && h.mask.is_none() && h.rsv == 0);
            assert_eq!(h.opcode, payload.kind().opcode() as u8);
            assert_eq!(h.len as usize, envelope_len(topic, payload));
            assert_eq!(used + h.len as usize, n);
            let mut env = Vec::new();
            write_envelope(&mut env, topic, payload);
            assert_eq!(&out[1 + used..], &env[..]);
        }
    }

    #[test]
    fn binary_envelope_topic_is_never_longer_than_its_length_byte() {
        // An invalid (too long) topic is cut, never wraps the length byte.
        let topic = "é".repeat(200);
        let mut out = Vec::new();
        write_binary(&mut out, OP_MESSAGE, None, &topic, b"p");
        assert_eq!(out[1], 254);
        assert_eq!(out.len(), 2 + 254 + 1);
    }

    // ---- interop with plain rooms ---------------------------------------------------

    #[test]
    fn classify_bare_text() {
        let json = [
            "{}",
            r#"{"a":1}"#,
            "[1,2]",
            "42",
            "-1.5e3",
            "true",
            "null",
            "{\"a\" : [1,\n2]}",
        ];
        for t in json {
            assert_eq!(classify_text(t), json_payload(t), "{t:?}");
        }
        let text = [
            "",
            " ",
            "hello",
            "\"hello\"",
            " \"x\" ",
            "{",
            "[1,]",
            "NaN",
            "1 2",
            "'a'",
            "{\"a\":1}x",
            " {}",
            "{}\n",
            "\t1",
            "1\r",
        ];
        for t in text {
            assert_eq!(classify_text(t), Payload::Text(t), "{t:?}");
        }
    }

    #[test]
    fn bare_payloads() {
        let cases: Vec<(Payload<'_>, MessageKind, &[u8])> = vec![
            (json_payload(r#""hello""#), MessageKind::Text, b"hello"),
            (
                json_payload(r#""a\"b\\c\u00e9\n""#),
                MessageKind::Text,
                "a\"b\\cé\n".as_bytes(),
            ),
            (json_payload(r#""\ud83c\udf89""#), MessageKind::Text, "🎉".as_bytes()),
            (json_payload(r#""""#), MessageKind::Text, b""),
            (json_payload(r#"{"a":"b"}"#), MessageKind::Text, br#"{"a":"b"}"#),
            (json_payload("12"), MessageKind::Text, b"12"),
            (Payload::Text("\"x\""), MessageKind::Text, b"\"x\""),
            (Payload::Binary(b"\x00\xff"), MessageKind::Binary, b"\x00\xff"),
        ];
        for (payload, kind, want) in cases {
            let (k, got) = bare(payload);
            assert_eq!((k, &*got), (kind, want), "{payload:?}");
        }
        // No escapes: borrowed from the request.
        assert!(matches!(bare(json_payload(r#""hello""#)).1, Cow::Borrowed(_)));
    }

    /// bare → pubsub → bare is the identity: a bare message delivered to a
    /// subscriber, whose `data` that subscriber publishes back as is, reaches
    /// plain members unchanged.
    #[test]
    fn bare_to_pubsub_to_bare_is_the_identity() {
        let texts = [
            "hello",
            "",
            " ",
            "\"hello\"",
            " \"x\" ",
            "\"",
            "{\"a\":1}",
            " [1, 2]\n",
            "42",
            "null",
            "{",
            "tab\there \\ \"q\" \u{0} é🎉 \u{2028}",
            "\"{\\\"a\\\":1}\"",
        ];
        let deep = nested(MAX_DEPTH + 1);
        for text in texts.iter().copied().chain([deep.as_str()]) {
            let mut env = Vec::new();
            write_envelope(&mut env, "room", classify_text(text));
            // The subscriber sees `data`; it publishes that same JSON text back.
            let fields: HashMap<String, Box<RawValue>> = serde_json::from_slice(&env).unwrap();
            let data = fields["data"].get();
            let publish = format!(r#"{{"type":"publish","topic":"room","data":{data}}}"#);
            let Ok(Request::Publish { payload, .. }) = parse_text(publish.as_bytes()) else {
                panic!("{publish}");
            };
            let (kind, back) = bare(payload);
            assert_eq!((kind, &*back), (MessageKind::Text, text.as_bytes()), "{text:?}");
        }
        // Binary too.
        let mut env = Vec::new();
        write_envelope(&mut env, "room", Payload::Binary(b"\x00bin"));
        let republish = binary(OP_PUBLISH, None, "room", &env[2 + 4..]);
        let Ok(Request::Publish { payload, .. }) = parse_binary(&republish) else {
            panic!("binary");
        };
        assert_eq!(bare(payload), (MessageKind::Binary, Cow::Borrowed(&b"\x00bin"[..])));
    }

    /// pubsub → bare → pubsub keeps every `data` except a string whose text
    /// is itself JSON (plain members cannot tell the two apart).
    #[test]
    fn pubsub_to_bare_to_pubsub() {
        let same = [
            r#"{"a":1}"#,
            "[1, 2]",
            "7",
            "null",
            r#""hello""#,
            r#""\"hello\"""#,
            r#""é \n""#,
        ];
        for data in same {
            let (_, text) = bare(json_payload(data));
            let back = classify_text(std::str::from_utf8(&text).unwrap());
            let mut a = Vec::new();
            let mut b = Vec::new();
            write_envelope(&mut a, "t", json_payload(data));
            write_envelope(&mut b, "t", back);
            let a: Value = serde_json::from_slice(&a).unwrap();
            let b: Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(a, b, "{data}");
        }
        let (_, text) = bare(json_payload(r#""{\"a\":1}""#));
        assert_eq!(
            classify_text(std::str::from_utf8(&text).unwrap()),
            json_payload(r#"{"a":1}"#)
        );
    }
}
