//! Confab's wire protocol: the types that cross the network and their CBOR encoding.
//!
//! This crate does no I/O. Every frame kind is a [`Wire`] type with its own version number and
//! size limit; [`encode`] and [`decode`] are the only way bytes become values and back, so that
//! limits and validation are applied in exactly one place.
//!
//! Layout:
//! - [`ids`]: identifiers chosen by the sender ([`MessageId`]).
//! - [`message`]: the chat message carried by every transport ([`ChatMessage`]).
//! - [`direct`]: the request-response protocol for 1:1 messages (`/confab/direct/1`).
//! - [`file`]: fetching files chunk by chunk, verified as they stream (`/confab/file/1`).
//! - [`gossip`]: frames published on gossipsub topics (broadcast, groups).
//! - [`group`]: groups' signed membership ([`group::Roster`]) and their topics.
//! - [`bootstrap`]: requests to a bootstrap (`/confab/bootstrap/1`) and its pushes (`/confab/notify/1`).
//! - [`codec`]: [`encode`], [`decode`], [`DecodeError`], [`EncodeError`].
//! - [`limits`]: every `MAX_*` size constant, in one place.
//!
//! Frames are CBOR arrays `[version, body]`; bodies are CBOR maps with named fields, so a newer
//! sender may add optional fields that older receivers ignore. Enumerations carry a `type` tag and
//! decode an unknown tag to an `Unknown` variant instead of failing the whole frame.
#![deny(missing_docs)]

pub mod bootstrap;
pub mod codec;
pub mod direct;
pub mod e2e;
pub mod file;
pub mod gossip;
pub mod group;
pub mod ids;
pub mod limits;
pub mod message;

pub use codec::{DecodeError, EncodeError, Wire, decode, encode};
pub use direct::{DirectRequest, DirectResponse, RejectReason};
pub use gossip::GossipFrame;
pub use ids::{ContentHash, MessageId, ParseIdError};
pub use message::{Attachment, AttachmentKind, ChatMessage, InvalidMessage};
