//! The handle front-ends hold: [`Client`]. Cheap to clone; every method sends one command to the
//! event loop and awaits its answer.

use std::fmt;

use confab_protocol::MessageId;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::address::Conversation;
use crate::config::limits::MAX_HISTORY_PAGE;
use crate::error::{DialError, QueryError, SendError};
use crate::event::Event;

/// Who wrote a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    /// The author's peer id (from the authenticated connection or the gossipsub signature).
    pub peer_id: String,
    /// The author's account, when known (needs a bootstrap).
    pub user: Option<String>,
    /// The author's display name at sending.
    pub name: String,
}

/// Where an outgoing message is on its way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Stored locally, not yet accepted by anyone.
    Pending,
    /// Acknowledged by the peer (or stored by the bootstrap).
    Sent,
    /// Reached a device of the receiver.
    Delivered,
    /// Read by the receiver.
    Read,
}

impl DeliveryState {
    /// The name used on the RPC interface.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Sent => "sent",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Read => "read",
        }
    }
}

/// A message as front-ends see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Chosen by the author.
    pub id: MessageId,
    /// The conversation as seen by this node (a DM from alice shows alice's address).
    pub conversation: Conversation,
    /// The author.
    pub from: Sender,
    /// The author's clock at sending (unix ms); for display only.
    pub sent_at: u64,
    /// The text.
    pub text: Option<String>,
    /// End-to-end encrypted (a later feature; always false for now).
    pub encrypted: bool,
    /// Recalled by its author (a later feature; always false for now).
    pub recalled: bool,
    /// Whether a front-end should alert: false for this node's own messages.
    pub notify: bool,
    /// Whether this node sent it.
    pub outgoing: bool,
    /// For outgoing messages, how far it got; incoming ones are `Delivered`.
    pub delivery: DeliveryState,
}

/// How a peer was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerSource {
    /// Multicast DNS on the local network.
    Mdns,
    /// A direct connection (dialled by address, or the peer dialled us).
    Dial,
    /// Introduced by a bootstrap.
    Bootstrap,
}

impl PeerSource {
    /// The name used on the RPC interface.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerSource::Mdns => "mdns",
            PeerSource::Dial => "dial",
            PeerSource::Bootstrap => "bootstrap",
        }
    }
}

impl fmt::Display for PeerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A peer this node knows of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its peer id.
    pub peer_id: String,
    /// Its display name, once learned.
    pub name: Option<String>,
    /// Its account, when known.
    pub user: Option<String>,
    /// Addresses it can be reached at.
    pub addrs: Vec<String>,
    /// How it was found.
    pub source: PeerSource,
    /// Whether a connection is open now.
    pub connected: bool,
}

/// This node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhoAmI {
    /// Its peer id (stable across restarts of the same data dir).
    pub peer_id: String,
    /// Its display name.
    pub name: String,
    /// Its account, when logged in.
    pub user: Option<String>,
    /// Where it listens, each with `/p2p/<peer id>` so it can be dialled as is.
    pub listen_addrs: Vec<String>,
}

pub(crate) type Reply<T> = oneshot::Sender<T>;

/// What a client asks of the event loop.
#[derive(Debug)]
pub(crate) enum Command {
    WhoAmI(Reply<WhoAmI>),
    Peers(Reply<Vec<PeerInfo>>),
    Dial {
        addr: String,
        reply: Reply<Result<String, DialError>>,
    },
    Send {
        to: Conversation,
        text: String,
        reply: Reply<Result<MessageId, SendError>>,
    },
    History {
        with: Conversation,
        limit: usize,
        reply: Reply<Result<Vec<Message>, QueryError>>,
    },
    Shutdown(Reply<Result<(), QueryError>>),
}

/// The handle to a running node.
#[derive(Debug, Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<Event>,
    peer_id: String,
}

impl Client {
    pub(crate) fn new(
        commands: mpsc::Sender<Command>,
        events: broadcast::Sender<Event>,
        peer_id: String,
    ) -> Self {
        Self {
            commands,
            events,
            peer_id,
        }
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    /// Events from now on. A subscriber that falls more than
    /// [`crate::config::limits::EVENT_BUFFER`] events behind misses the oldest (and is told so
    /// by the receiver's `Lagged` error); messages are in [`Client::history`] regardless.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    /// This node's identity and addresses.
    pub async fn whoami(&self) -> Result<WhoAmI, QueryError> {
        self.ask(Command::WhoAmI)
            .await
            .ok_or(QueryError::NodeStopped)
    }

    /// Every peer known, connected or not.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, QueryError> {
        self.ask(Command::Peers)
            .await
            .ok_or(QueryError::NodeStopped)
    }

    /// Connects to a multiaddr and returns the peer id found there.
    pub async fn dial(&self, addr: &str) -> Result<String, DialError> {
        let addr = addr.to_owned();
        self.ask(|reply| Command::Dial { addr, reply })
            .await
            .unwrap_or(Err(DialError::NodeStopped))
    }

    /// Sends a text message. Returns once the message is durably stored locally; delivery is
    /// reported by [`Event::Delivery`]. A peer that cannot be reached now gets it when it can.
    pub async fn send(&self, to: &Conversation, text: &str) -> Result<MessageId, SendError> {
        let (to, text) = (to.clone(), text.to_owned());
        self.ask(|reply| Command::Send { to, text, reply })
            .await
            .unwrap_or(Err(SendError::NodeStopped))
    }

    /// The last `limit` messages of a conversation, oldest first, in the order this node stored
    /// them (never by clock).
    pub async fn history(
        &self,
        with: &Conversation,
        limit: usize,
    ) -> Result<Vec<Message>, QueryError> {
        let with = with.clone();
        let limit = limit.min(MAX_HISTORY_PAGE);
        self.ask(|reply| Command::History { with, limit, reply })
            .await
            .unwrap_or(Err(QueryError::NodeStopped))
    }

    /// Stops the node: closes connections, stops discovery and flushes the store. Returns when
    /// everything is on disk.
    pub async fn shutdown(&self) -> Result<(), QueryError> {
        self.ask(Command::Shutdown)
            .await
            .unwrap_or(Err(QueryError::NodeStopped))
    }
}
