//! `/confab/direct/1`: one request, one response, one stream. The receiver answers only after the
//! message is durably stored, so an [`DirectResponse::Ack`] means "it is on the receiver's disk".

use serde::{Deserialize, Serialize};

use crate::codec::Wire;
use crate::ids::MessageId;
use crate::limits::{MAX_DIRECT_REQUEST, MAX_DIRECT_RESPONSE, MAX_REASON_BYTES};
use crate::message::{ChatMessage, InvalidMessage};

/// The libp2p protocol name of direct messages.
pub const DIRECT_PROTOCOL: &str = "/confab/direct/1";

/// What a peer asks of another over `/confab/direct/1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum DirectRequest {
    /// A chat message for the receiver.
    Chat(ChatMessage),
    /// A message of the author's account to the receiver's account `to` (the conversation
    /// `user:<author>` on the receiving side). The author's account is taken from the message's
    /// certificate, checked against the connection; a receiver logged into another account
    /// refuses it.
    UserChat {
        /// The receiving account.
        to: String,
        /// The message (with its author's certificate).
        message: ChatMessage,
    },
    /// The author recalls its message `id`, sent earlier over this protocol to the receiver:
    /// the receiver keeps it only as recalled (the sender is the connection's peer, so only the
    /// device that wrote it can recall it this way).
    Recall {
        /// The message.
        id: MessageId,
    },
    /// A request kind this version does not know (sent by a newer peer).
    #[serde(other)]
    Unknown,
}

/// The answer to a [`DirectRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum DirectResponse {
    /// The message is durably stored by the receiver (or was already: duplicates are acked too).
    Ack {
        /// The acknowledged message.
        id: MessageId,
    },
    /// The receiver refused the request.
    Rejected {
        /// The message concerned, if the request carried one.
        id: Option<MessageId>,
        /// Why.
        reason: RejectReason,
    },
    /// A response kind this version does not know.
    #[serde(other)]
    Unknown,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RejectReason {
    /// The message breaks a protocol rule (too long, empty, ...).
    Invalid {
        /// A short human explanation.
        detail: String,
    },
    /// The receiver does not understand this request kind.
    Unsupported,
    /// The receiver could not store the message; the sender should retry later.
    StorageFailed,
    /// A reason this version does not know.
    #[serde(other)]
    Unknown,
}

impl RejectReason {
    /// An [`RejectReason::Invalid`] from a validation error, its text cut to the limit.
    pub fn invalid(err: &InvalidMessage) -> Self {
        let mut detail = err.to_string();
        if detail.len() > MAX_REASON_BYTES {
            let mut cut = MAX_REASON_BYTES;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
        }
        RejectReason::Invalid { detail }
    }
}

impl Wire for DirectRequest {
    const KIND: &'static str = "direct request";
    const VERSION: u16 = 1;
    const MAX_SIZE: usize = MAX_DIRECT_REQUEST;

    fn validate(&self) -> Result<(), String> {
        match self {
            DirectRequest::Chat(msg) => msg.validate().map_err(|e| e.to_string()),
            DirectRequest::UserChat { to, message } => {
                if to.len() > crate::limits::MAX_USERNAME_CHARS * 4 {
                    return Err(format!("username is {} bytes", to.len()));
                }
                message.validate().map_err(|e| e.to_string())
            }
            DirectRequest::Recall { .. } | DirectRequest::Unknown => Ok(()),
        }
    }
}

impl Wire for DirectResponse {
    const KIND: &'static str = "direct response";
    const VERSION: u16 = 1;
    const MAX_SIZE: usize = MAX_DIRECT_RESPONSE;
}
