//! Events a node pushes to its front-ends.

use confab_protocol::MessageId;

use crate::client::{DeliveryState, Message, PeerSource};

/// Something happened. Subscribe with [`crate::Client::subscribe`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A message was stored: one that arrived, or one this node sent (`notify` false).
    Message(Message),
    /// A Confab peer became reachable.
    PeerDiscovered {
        /// Its peer id.
        peer_id: String,
        /// Its display name.
        name: String,
        /// How it was found.
        source: PeerSource,
    },
    /// A peer is no longer reachable (mDNS expiry, or its last connection closed).
    PeerLost {
        /// Its peer id.
        peer_id: String,
    },
    /// An outgoing message moved to a new delivery state.
    Delivery {
        /// The message.
        id: MessageId,
        /// Its new state.
        state: DeliveryState,
    },
}
