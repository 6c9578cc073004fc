//! Events a node pushes to its front-ends.

use confab_protocol::MessageId;

use crate::address::Conversation;
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
    /// A friend came online or went offline (pushed by the bootstrap).
    Presence {
        /// The friend's username.
        user: String,
        /// Whether any device of theirs is connected now.
        online: bool,
    },
    /// Someone asks to be friends; answer with [`crate::Client::friend_accept`] or
    /// [`crate::Client::friend_remove`].
    FriendRequest {
        /// Who asks.
        from: String,
    },
    /// `user` and this user are now friends.
    FriendAdded {
        /// The new friend.
        user: String,
    },
    /// `user` ended the friendship, or withdrew or declined a request.
    FriendRemoved {
        /// Who.
        user: String,
    },
    /// This device is no longer logged in, and not by its own [`crate::Client::logout`]: the
    /// account was logged out from another device or deleted, or the bootstrap no longer knows
    /// the session. The local session is already forgotten.
    LoggedOut,
    /// This account is now a member of a group (someone added it, or it was added while this
    /// device was away).
    GroupInvited {
        /// The group.
        group: String,
        /// Its name.
        name: String,
    },
    /// `user` joined a group of this account's.
    GroupMemberAdded {
        /// The group.
        group: String,
        /// Who.
        user: String,
    },
    /// `user` left or was removed from a group of this account's. When `user` is this account,
    /// the group is gone from this device: nothing more arrives from it.
    GroupMemberRemoved {
        /// The group.
        group: String,
        /// Who.
        user: String,
    },
    /// A group's name or roles changed.
    GroupUpdated {
        /// The group.
        group: String,
        /// Its name now.
        name: String,
    },
    /// A message was recalled by its author (or a group admin): it stays in history as
    /// recalled, without its content.
    Recalled {
        /// The message.
        id: MessageId,
        /// Its conversation.
        conversation: Conversation,
    },
    /// A message was deleted from this account's history (here or on another of its devices).
    Deleted {
        /// The message.
        id: MessageId,
        /// Its conversation.
        conversation: Conversation,
    },
    /// A download (`fetch_file`) moved on.
    TransferProgress {
        /// The message whose file it is.
        id: MessageId,
        /// Bytes verified and written so far.
        done: u64,
        /// The file's size.
        total: u64,
    },
    /// A download is complete: the file is at `path`.
    TransferComplete {
        /// The message whose file it is.
        id: MessageId,
        /// Where it is.
        path: std::path::PathBuf,
    },
    /// A download stopped (fetching again resumes it).
    TransferFailed {
        /// The message whose file it is.
        id: MessageId,
        /// Why.
        error: String,
    },
    /// Where a file this device sent stands with the bootstrap, which keeps it for receivers who
    /// are offline: `not_needed` (every receiver was online), `pulling` (the bootstrap is
    /// fetching it from this device: stay online until `held`), `held` (the receivers can get it
    /// without this device), or `refused` with `error` (too large, over the account's quota).
    FileHold {
        /// The message whose file it is.
        id: MessageId,
        /// Where it stands.
        state: FileHoldState,
        /// Why it was refused (`refused` only).
        error: Option<String>,
    },
    /// The account's settings changed (here or on another device of the account).
    Settings(crate::client::Settings),
    /// A conversation is end-to-end encrypted, and this device is in it at `epoch` (after it
    /// started, joined, or its membership changed).
    Encryption {
        /// The conversation.
        conversation: Conversation,
        /// Its cipher suite's name, e.g. `MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519`.
        suite: String,
        /// The MLS epoch this device is at (it grows with every membership change).
        epoch: u64,
    },
    /// Who wrote to this user while this device was away, sent once its bootstrap session is
    /// (re)established and before those messages arrive (as [`Event::Message`]s, oldest first).
    /// Only when there is something: `total > 0`.
    OfflineSummary {
        /// `(conversation, count)`, most recent conversation first.
        senders: Vec<(Conversation, u32)>,
        /// Messages in all.
        total: u32,
    },
}

/// Where a sent file stands with the bootstrap ([`Event::FileHold`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileHoldState {
    /// Every receiver was online: nothing is held.
    NotNeeded,
    /// The bootstrap is fetching it from this device.
    Pulling,
    /// The bootstrap has all of it.
    Held,
    /// The bootstrap does not keep it (see the error).
    Refused,
}

impl FileHoldState {
    /// The name used on the RPC interface.
    pub fn as_str(self) -> &'static str {
        match self {
            FileHoldState::NotNeeded => "not_needed",
            FileHoldState::Pulling => "pulling",
            FileHoldState::Held => "held",
            FileHoldState::Refused => "refused",
        }
    }
}
