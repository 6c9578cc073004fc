//! The chat message: what every transport (direct stream, gossip, later the bootstrap's mailbox)
//! carries. Who sent it is never a field here: the receiver takes it from the authenticated
//! connection or the gossipsub signature.

use serde::{Deserialize, Serialize};

use crate::bootstrap::DeviceCert;
use crate::e2e::{MAX_SEALED_BYTES, Sealed};
use crate::ids::{ContentHash, MessageId};
use crate::limits::{
    MAX_FILE_NAME_BYTES, MAX_MIME_BYTES, MAX_NAME_BYTES, MAX_TEXT_BYTES, MAX_THUMBNAIL_BYTES,
};

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
    /// A file (image, audio, video or any file) whose content moves separately, over
    /// `/confab/file/1`, named by its hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<Box<Attachment>>,
    /// In an end-to-end encrypted conversation: the whole content (name, text, attachment and
    /// its key) as MLS ciphertext; `sender_name` is then empty and `text` and `attachment`
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<Box<Sealed>>,
}

/// What an attachment is, decided from its content (never from its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AttachmentKind {
    /// A picture (PNG, JPEG, GIF, WebP, ...).
    Image,
    /// Sound.
    Audio,
    /// A film.
    Video,
    /// Anything else.
    File,
    /// A kind this version does not know (shown as a file).
    #[serde(other)]
    Unknown,
}

/// A file attached to a message: its description; the bytes are fetched by `hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The file name as the sender had it (receivers sanitise it before writing anything).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its MIME type, from its content.
    pub mime: String,
    /// Its root hash (see [`crate::file`]): the name of its content everywhere.
    pub hash: ContentHash,
    /// What it is.
    pub kind: AttachmentKind,
    /// An image's width in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// An image's height in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Audio or video length, where cheap to read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// A small JPEG of an image (at most [`MAX_THUMBNAIL_BYTES`]), shown before the download.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub thumbnail: Option<Vec<u8>>,
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
    /// An attachment's description breaks a limit.
    #[error("bad attachment: {0}")]
    Attachment(&'static str),
    /// An encrypted message breaks a rule.
    #[error("bad encrypted message: {0}")]
    Sealed(&'static str),
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
            attachment: None,
            sealed: None,
        }
    }

    /// Checks the limits that the encoding alone cannot express.
    pub fn validate(&self) -> Result<(), InvalidMessage> {
        if let Some(sealed) = &self.sealed {
            if self.text.is_some() || self.attachment.is_some() || !self.sender_name.is_empty() {
                return Err(InvalidMessage::Sealed(
                    "a sealed message carries no plaintext",
                ));
            }
            if sealed.ciphertext.len() > MAX_SEALED_BYTES {
                return Err(InvalidMessage::Sealed("the ciphertext is too large"));
            }
            if crate::e2e::Suite::from_code(sealed.suite).is_none() {
                return Err(InvalidMessage::Sealed("not an allowed cipher suite"));
            }
            return Ok(());
        }
        if self.sender_name.len() > MAX_NAME_BYTES {
            return Err(InvalidMessage::NameTooLong(self.sender_name.len()));
        }
        if let Some(a) = &self.attachment {
            if a.name.len() > MAX_FILE_NAME_BYTES {
                return Err(InvalidMessage::Attachment("the file name is too long"));
            }
            if a.mime.len() > MAX_MIME_BYTES {
                return Err(InvalidMessage::Attachment("the MIME type is too long"));
            }
            if a.thumbnail
                .as_ref()
                .is_some_and(|t| t.len() > MAX_THUMBNAIL_BYTES)
            {
                return Err(InvalidMessage::Attachment("the thumbnail is too large"));
            }
        }
        match &self.text {
            Some(text) if text.len() > MAX_TEXT_BYTES => {
                Err(InvalidMessage::TextTooLong(text.len()))
            }
            // A caption may be empty when there is a file.
            Some(text) if text.trim().is_empty() && self.attachment.is_none() => {
                Err(InvalidMessage::Empty)
            }
            Some(_) => Ok(()),
            None if self.attachment.is_some() => Ok(()),
            None => Err(InvalidMessage::Empty),
        }
    }
}
