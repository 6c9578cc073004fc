//! The chat message: what every transport (direct stream, gossip, later the bootstrap's mailbox)
//! carries. Who sent it is never a field here: the receiver takes it from the authenticated
//! connection or the gossipsub signature.

use serde::{Deserialize, Serialize};

use crate::bootstrap::DeviceCert;
use crate::ids::MessageId;
use crate::limits::{MAX_NAME_BYTES, MAX_TEXT_BYTES};

/// One chat message as its author wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Chosen by the author; stable across retries; the deduplication key everywhere.
    pub id: MessageId,
    /// The author's clock at sending, in unix milliseconds. Shown to people, never used to order.
    pub sent_at: u64,
    /// The author's display name at sending (a label, not an identity).
    pub sender_name: String,
    /// The text, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// When the author is logged in: its bootstrap's certificate that the sending device belongs to
    /// the author's account. Receivers check it against the authenticated sender before showing
    /// `user:`; without a valid one the message is from a bare peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author_cert: Option<DeviceCert>,
}

/// A message that decoded but breaks a rule of the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidMessage {
    /// The display name is longer than [`MAX_NAME_BYTES`].
    #[error("display name is {0} bytes, the limit is {MAX_NAME_BYTES}")]
    NameTooLong(usize),
    /// The text is longer than [`MAX_TEXT_BYTES`].
    #[error("text is {0} bytes, the limit is {MAX_TEXT_BYTES}")]
    TextTooLong(usize),
    /// The message has no content at all.
    #[error("the message has no content")]
    Empty,
}

impl ChatMessage {
    /// A text message with a fresh id, stamped now.
    pub fn text(sender_name: impl Into<String>, text: impl Into<String>, sent_at: u64) -> Self {
        Self {
            id: MessageId::random(),
            sent_at,
            sender_name: sender_name.into(),
            text: Some(text.into()),
            author_cert: None,
        }
    }

    /// Checks the limits that the encoding alone cannot express.
    pub fn validate(&self) -> Result<(), InvalidMessage> {
        if self.sender_name.len() > MAX_NAME_BYTES {
            return Err(InvalidMessage::NameTooLong(self.sender_name.len()));
        }
        match &self.text {
            Some(text) if text.len() > MAX_TEXT_BYTES => {
                Err(InvalidMessage::TextTooLong(text.len()))
            }
            Some(text) if text.trim().is_empty() => Err(InvalidMessage::Empty),
            Some(_) => Ok(()),
            None => Err(InvalidMessage::Empty),
        }
    }
}
