//! Frames published on gossipsub topics. The author is the gossipsub message's signed `source`.

use serde::{Deserialize, Serialize};

use crate::codec::Wire;
use crate::limits::MAX_GOSSIP_FRAME;
use crate::message::ChatMessage;

/// The gossipsub topic every node subscribes to for broadcast messages.
pub const BROADCAST_TOPIC: &str = "/confab/broadcast/1";

/// One gossipsub publication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum GossipFrame {
    /// A message to everyone on the topic.
    Chat(ChatMessage),
    /// A frame kind this version does not know.
    #[serde(other)]
    Unknown,
}

impl Wire for GossipFrame {
    const KIND: &'static str = "gossip frame";
    const VERSION: u16 = 1;
    const MAX_SIZE: usize = MAX_GOSSIP_FRAME;

    fn validate(&self) -> Result<(), String> {
        match self {
            GossipFrame::Chat(msg) => msg.validate().map_err(|e| e.to_string()),
            GossipFrame::Unknown => Ok(()),
        }
    }
}
