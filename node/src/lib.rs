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
//! - [`net`]: libp2p plumbing shared with `confab-bootstrap` (transports, codecs, gossipsub config).
//! - `event_loop`, `discovery`, `store`: the node's tasks (private); `event_loop/accounts.rs` is the
//!   bootstrap side (session, account requests, notifications), `event_loop/nat.rs` relay, DCUtR,
//!   AutoNAT and keep-alive.
//! - [`mls`]: end-to-end encryption, this device's MLS groups (one per encrypted conversation);
//!   `e2e` drives them with the bootstrap (key packages, ordered commits, joins; private).
//! - `bootstraps`: which bootstraps the node trusts and when to redial them (sans-IO, private).
//! - `cert`: verification of the device certificates on incoming messages (private).
//! - `keep_alive`: keeps idle connections to the bootstraps open (private).
//! - `mailbox`: the account's mailbox on the bootstrap — deposits of messages to users, offline
//!   catch-up, history from the account's other devices (sans-IO, private; performed by
//!   `event_loop/mailbox.rs`).
//!
//! Accounts live on a bootstrap: [`Client::register`] / [`Client::login`] bind this device to a
//! user and the session is kept in the data dir until [`Client::logout`]. Messages from a logged-in
//! device carry its certificate, so receivers show `from.user` without asking the bootstrap.
//! A message to a user (`user:bob`) is kept by the bootstrap in bob's mailbox and in the sender's
//! own; every device of an account syncs that mailbox, so each shows the whole conversation.
#![deny(missing_docs)]

pub mod address;
mod bootstraps;
mod cert;
pub mod client;
pub mod config;
mod discovery;
mod e2e;
pub mod error;
pub mod event;
mod event_loop;
pub mod files;
mod keep_alive;
mod mailbox;
pub mod mls;
pub mod net;
pub mod rpc;
mod store;

pub use address::Conversation;
pub use client::{
    Avatar, Client, DeliveryState, Encryption, Friend, Friends, Group, GroupMember, Message,
    PeerInfo, PeerSource, Profile, Sender, Settings, UserSummary, WhoAmI,
};
pub use confab_protocol::e2e::Suite;
pub use confab_protocol::group::Role;
pub use confab_protocol::{ContentHash, MessageId};
pub use config::Config;
pub use e2e::E2eError;
pub use error::{
    AvatarError, DeleteAccountError, DialError, FetchError, FriendError, GroupError, LoginError,
    LogoutError, ProfileGetError, ProfileSetError, QueryError, RecallError, RegisterError,
    SearchError, SendError, SettingsError, StartError, StoreError,
};
pub use event::{Event, FileHoldState};

/// Starts a node: opens its store, listens, starts discovery, and returns its handle.
///
/// Must be called inside a tokio runtime; the node's tasks run on it until
/// [`Client::shutdown`] (or until every clone of the client is dropped).
pub async fn start(config: Config) -> Result<Client, StartError> {
    event_loop::start(config).await
}
