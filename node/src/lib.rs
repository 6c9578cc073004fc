//! Confab's peer engine.
//!
//! A node is one event-loop task that owns the libp2p swarm, a store actor that owns the redb
//! database, and (unless disabled) an mDNS discovery task. Front-ends — the `confab` CLI, its
//! JSON-RPC mode, the desktop app — hold a cheap cloneable [`Client`] and a stream of [`Event`]s,
//! and speak only Confab's own types: they never see libp2p.
//!
//! Layout:
//! - [`config`]: [`Config`] and every bound and limit of the node ([`config::limits`]).
//! - [`address`]: conversation addresses (`peer:…`, `user:…`, `group:…`, `broadcast`).
//! - [`client`]: the [`Client`] handle and the values it returns.
//! - [`event`]: [`Event`]s pushed to front-ends.
//! - [`error`]: one error enum per operation.
//! - [`rpc`]: the JSON-RPC 2.0 interface (`confab rpc`), see `docs/rpc.md`.
//! - [`net`]: libp2p plumbing shared with `confab-bootstrap` (transport, codec, gossipsub config).
//! - `event_loop`, `discovery`, `store`: the node's tasks (private).
#![deny(missing_docs)]

pub mod address;
pub mod client;
pub mod config;
mod discovery;
pub mod error;
pub mod event;
mod event_loop;
pub mod net;
pub mod rpc;
mod store;

pub use address::Conversation;
pub use client::{Client, DeliveryState, Message, PeerInfo, PeerSource, Sender, WhoAmI};
pub use confab_protocol::MessageId;
pub use config::Config;
pub use error::{DialError, QueryError, SendError, StartError, StoreError};
pub use event::Event;

/// Starts a node: opens its store, listens, starts discovery, and returns its handle.
///
/// Must be called inside a tokio runtime; the node's tasks run on it until
/// [`Client::shutdown`] (or until every clone of the client is dropped).
pub async fn start(config: Config) -> Result<Client, StartError> {
    event_loop::start(config).await
}
