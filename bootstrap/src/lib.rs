//! `confab-bootstrap`: the always-on Confab server.
//!
//! It is the authority for accounts (username + argon2id password), the devices bound to them
//! (each login binds the authenticated peer id and gets a signed device certificate), profiles,
//! friends, presence and group membership (signed rosters). It relays for peers behind NAT
//! (libp2p relay v2, AutoNAT), relays the broadcast topic (deciding who may broadcast, at what
//! rate) and keeps the recent broadcasts for history, delivers for end-to-end encrypted
//! conversations (MLS key packages, commits in order, Welcomes; never a key), and keeps its state in
//! one redb file with periodic backups.
//!
//! Layout:
//! - [`config`]: [`Config`], the TOML file, every limit ([`config::limits`]).
//! - [`service`]: the rules (accounts, profiles, friends, mailboxes and receipts, device
//!   listings, groups in [`service::groups`], account settings and what blocking refuses in
//!   [`service::settings`], kept broadcasts and the broadcast policy and rate in
//!   [`service::broadcasts`], the MLS delivery service of end-to-end encryption in
//!   [`service::mls`]); requests in, responses and effects out.
//! - [`store`]: the redb database; the only code that knows redb ([`store::tables`]).
//! - [`presence`]: who is online now, and where their devices listen (in memory).
//! - [`mdns`]: the LAN advertisement (`role=bootstrap`).
//! - `event_loop`: owns the swarm and dispatches (private).
//! - [`start`] and [`Bootstrap`]: run a server in-process; the binary is a thin `main`.
#![deny(missing_docs)]

pub mod admin;
pub mod config;
mod event_loop;
pub mod mdns;
pub mod presence;
pub mod service;
pub mod store;

pub use config::{Config, FileConfig, limits};
pub use event_loop::{Bootstrap, StartError, Stats, start};
