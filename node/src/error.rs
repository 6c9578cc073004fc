//! One error enum per operation. A node that has stopped answers [`QueryError::NodeStopped`] (and
//! its siblings) instead of panicking.

use std::path::PathBuf;

use crate::address::AddressError;

/// The local store failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process has the data dir's database open.
    #[error("the store {0} is in use by another Confab process")]
    Locked(PathBuf),
    /// The database or the disk under it failed.
    #[error("store failure: {0}")]
    Database(String),
    /// A stored record could not be read back.
    #[error("corrupt record in the store: {0}")]
    Corrupt(String),
    /// The store actor is gone (the node is shutting down).
    #[error("the store is closed")]
    Closed,
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::from(redb::Error::from(e))
            }
        }
    )*};
}
redb_errors!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// A node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data dir could not be created or opened.
    #[error("cannot use data dir {path}: {reason}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A configured address is not a valid multiaddr.
    #[error("invalid address {addr:?}: {reason}")]
    BadAddress {
        /// The address as given.
        addr: String,
        /// Why.
        reason: String,
    },
    /// Listening on an address failed.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The libp2p swarm could not be built.
    #[error("network setup failed: {0}")]
    Network(String),
    /// mDNS could not be started.
    #[error("mDNS discovery failed to start: {0}")]
    Discovery(String),
}

/// A message could not be sent.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The destination is not a valid conversation address.
    #[error(transparent)]
    BadAddress(#[from] AddressError),
    /// `user:` and `group:` destinations need a bootstrap account.
    #[error("{0} needs an account on a bootstrap: log in first")]
    NotLoggedIn(String),
    /// The message breaks a protocol rule (empty, too long).
    #[error("invalid message: {0}")]
    Invalid(String),
    /// Too many broadcasts are waiting for a first peer.
    #[error("{0} broadcasts are already waiting for a peer; try again later")]
    QueueFull(usize),
    /// The message could not be stored locally, so it was not sent.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The node has stopped.
    #[error("the node has stopped")]
    NodeStopped,
}

/// A dial failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// Not a multiaddr.
    #[error("invalid address {addr:?}: {reason}")]
    BadAddress {
        /// The address as given.
        addr: String,
        /// Why.
        reason: String,
    },
    /// No connection could be made.
    #[error("cannot reach {addr}: {reason}")]
    Unreachable {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The address is this node itself.
    #[error("that address is this node")]
    SelfDial,
    /// The node has stopped.
    #[error("the node has stopped")]
    NodeStopped,
}

/// A query (whoami, peers, history, shutdown) failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The node has stopped.
    #[error("the node has stopped")]
    NodeStopped,
}
