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
    /// A message to a group, on the group's topic ([`crate::group::group_topic`]). Receivers
    /// accept it only from a device of a current member (by the message's certificate and the
    /// group's roster).
    Group {
        /// The group (must match the topic).
        group: String,
        /// The message, with its author's certificate.
        message: ChatMessage,
    },
    /// The author (or, in a group, an owner or admin) recalls message `id` of the topic's
    /// conversation. `group` is the group for a group topic, `None` on the broadcast topic.
    Recall {
        /// The group, if on a group's topic.
        group: Option<String>,
        /// The message.
        id: crate::ids::MessageId,
        /// The recalling device's certificate, when it is logged in (its account is the one
        /// recalling); without one, only the device that wrote the message can recall it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cert: Option<crate::bootstrap::DeviceCert>,
    },
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
            GossipFrame::Group { group, message } => {
                if !crate::group::is_group_id(group) {
                    return Err("not a group id".into());
                }
                message.validate().map_err(|e| e.to_string())
            }
            GossipFrame::Recall { group, .. } => {
                if group
                    .as_ref()
                    .is_some_and(|g| !crate::group::is_group_id(g))
                {
                    return Err("not a group id".into());
                }
                Ok(())
            }
            GossipFrame::Unknown => Ok(()),
        }
    }
}
