//! Echo: every text and binary message goes back unchanged, as one frame.

use super::Command;
use crate::proto::MessageKind;

pub fn on_message(kind: MessageKind, payload: &[u8]) -> Command<'_> {
    Command::Send(kind, payload)
}
