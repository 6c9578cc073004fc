//! One error enum per operation. A node that has stopped answers [`QueryError::NodeStopped`] (and
//! its siblings) instead of panicking.

use std::path::PathBuf;

use confab_protocol::bootstrap::ErrorCode;

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
    /// The destination kind is not available in this version (e.g. `group:` before groups).
    #[error("sending to {0} is not available in this version")]
    Unsupported(String),
    /// The file to send cannot be read.
    #[error("cannot send the file: {0}")]
    File(String),
    /// This account is not a member of the group (or this device has not heard of it yet).
    #[error("not a member of {0}")]
    NotMember(String),
    /// Too many broadcasts are waiting for a first peer.
    #[error("{0} broadcasts are already waiting for a peer; try again later")]
    QueueFull(usize),
    /// Too many messages to users are waiting for the bootstrap.
    #[error("{0} messages are already waiting for the bootstrap; try again later")]
    OutboxFull(usize),
    /// The conversation is end-to-end encrypted and this device cannot encrypt for it (not
    /// joined yet, or starting encryption failed); nothing was sent.
    #[error("{0}")]
    Encryption(String),
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

/// Why a request to a bootstrap did not get the answer it wanted; each account operation turns it
/// into its own error type.
#[derive(Debug, Clone)]
pub(crate) enum CallError {
    /// No bootstrap is connected (none known, or none came up within the wait).
    NoBootstrap,
    /// The operation needs a session and this device has none (or the bootstrap says so).
    NotLoggedIn,
    /// The bootstrap refused.
    Refused {
        code: ErrorCode,
        message: String,
        retry_after_ms: Option<u64>,
    },
    /// The request breaks a rule and was not sent.
    Invalid(String),
    /// The request was lost (connection closed, timeout) or got an answer that makes no sense.
    Failed(String),
    /// The node has stopped.
    NodeStopped,
}

/// The arms every account operation shares; `$arms` come first and take precedence.
macro_rules! from_call_error {
    ($ty:ident, not_logged_in: $not_logged_in:expr, { $($arms:tt)* }) => {
        impl From<CallError> for $ty {
            fn from(e: CallError) -> Self {
                #[allow(unreachable_patterns)]
                match e {
                    $($arms)*
                    CallError::NoBootstrap => Self::NoBootstrap,
                    CallError::NodeStopped => Self::NodeStopped,
                    CallError::NotLoggedIn => $not_logged_in,
                    CallError::Refused {
                        code: ErrorCode::Throttled,
                        retry_after_ms,
                        ..
                    } => Self::Throttled {
                        retry_after_ms: retry_after_ms.unwrap_or(DEFAULT_RETRY_AFTER_MS),
                    },
                    CallError::Refused { message, .. }
                    | CallError::Invalid(message)
                    | CallError::Failed(message) => Self::Bootstrap(message),
                }
            }
        }
    };
}

/// The wait reported for a throttled request whose answer said none.
const DEFAULT_RETRY_AFTER_MS: u64 = 1000;

/// [`crate::Client::register`] failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The username breaks the naming rules.
    #[error("{0}")]
    InvalidUsername(String),
    /// The password is too weak (the message says why).
    #[error("weak password: {0}")]
    WeakPassword(String),
    /// The username is taken (usernames ignore case).
    #[error("that username is taken")]
    UserExists,
    /// Too many attempts; retry after the time given.
    #[error("too many attempts; retry in {retry_after_ms} ms")]
    Throttled {
        /// How long to wait, in milliseconds.
        retry_after_ms: u64,
    },
    /// The request breaks a rule (e.g. a password over the size limit).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// No bootstrap is reachable.
    #[error("no bootstrap reachable")]
    NoBootstrap,
    /// The bootstrap failed, or the request was lost on the way; retry later.
    #[error("the bootstrap could not serve the request: {0}")]
    Bootstrap(String),
    /// The node has stopped.
    #[error("the node has stopped")]
    NodeStopped,
}

from_call_error!(RegisterError, not_logged_in: Self::Bootstrap("not logged in".into()), {
    CallError::Refused { code: ErrorCode::InvalidUsername, message, .. } => {
        Self::InvalidUsername(message)
    }
    CallError::Refused { code: ErrorCode::WeakPassword, message, .. } => {
        Self::WeakPassword(message)
    }
    CallError::Refused { code: ErrorCode::UserExists, .. } => Self::UserExists,
    CallError::Refused { code: ErrorCode::Invalid, message, .. } | CallError::Invalid(message) => {
        Self::Invalid(message)
    }
});

/// [`crate::Client::login`] failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// Wrong username or password (which one is never said).
    #[error("wrong username or password")]
    BadCredentials,
    /// Too many attempts; retry after the time given.
    #[error("too many attempts; retry in {retry_after_ms} ms")]
    Throttled {
        /// How long to wait, in milliseconds.
        retry_after_ms: u64,
    },
    /// The request breaks a rule (e.g. a password over the size limit).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// No bootstrap is reachable.
    #[error("no bootstrap reachable")]
    NoBootstrap,
    /// The bootstrap failed, or the request was lost on the way; retry later.
    #[error("the bootstrap could not serve the request: {0}")]
    Bootstrap(String),
    /// The node has stopped.
    #[error("the node has stopped")]
    NodeStopped,
}

from_call_error!(LoginError, not_logged_in: Self::Bootstrap("not logged in".into()), {
    CallError::Refused { code: ErrorCode::BadCredentials | ErrorCode::UnknownUser | ErrorCode::InvalidUsername, .. } => {
        Self::BadCredentials
    }
    CallError::Refused { code: ErrorCode::Invalid, message, .. } | CallError::Invalid(message) => {
        Self::Invalid(message)
    }
});

/// [`crate::Client::logout`] failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LogoutError {
    /// This device is not logged in.
    #[error("not logged in")]
    NotLoggedIn,
    /// Too many requests; retry after the time given.
    #[error("too many requests; retry in {retry_after_ms} ms")]
    Throttled {
        /// How long to wait, in milliseconds.
        retry_after_ms: u64,
    },
    /// No bootstrap is reachable (the device stays logged in).
    #[error("no bootstrap reachable")]
    NoBootstrap,
    /// The bootstrap failed, or the request was lost on the way; retry later.
    #[error("the bootstrap could not serve the request: {0}")]
    Bootstrap(String),
    /// The node has stopped.
    #[error("the node has stopped")]
    NodeStopped,
}

from_call_error!(LogoutError, not_logged_in: Self::NotLoggedIn, {});

/// [`crate::Client::delete_account`] failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DeleteAccountError {
    /// This device is not logged in.
    #[error("not logged in")]
    NotLoggedIn,
    /// The password is wrong.
    #[error("wrong username or password")]
    BadCredentials,
    /// Too many attempts; retry after the time given.
    #[error("too many attempts; retry in {retry_after_ms} ms")]
    Throttled {
        /// How long to wait, in milliseconds.
        retry_after_ms: u64,
    },
    /// No bootstrap is reachable.
    #[error("no bootstrap reachable")]
    NoBootstrap,
    /// The bootstrap failed, or the request was lost on the way; retry later.
    #[error("the bootstrap could not serve the request: {0}")]
    Bootstrap(String),
    /// The node has stopped.
    #[error("the node has stopped")]
    NodeStopped,
}

from_call_error!(DeleteAccountError, not_logged_in: Self::NotLoggedIn, {
    CallError::Refused { code: ErrorCode::BadCredentials, .. } => Self::BadCredentials,
});

/// [`crate::Client::profile_set`] failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileSetError {
    /// This device is not logged in.
    #[error("not logged in")]
    NotLoggedIn,
    /// The avatar file cannot be read, or is not an image.
    #[error("avatar {path}: {reason}")]
    Avatar {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Something is over a size limit (the avatar, the nickname, the status line).
    #[error("too large: {0}")]
    TooLarge(String),
    /// The request breaks a rule (e.g. an empty nickname).
    #[error("invalid profile: {0}")]
    Invalid(String),
    /// Too many requests; retry after the time given.
    #[error("too many requests; retry in {retry_after_ms} ms")]
    Throttled {
        /// How long to wait, in milliseconds.
        retry_after_ms: u64,
    },
    /// No bootstrap is reachable.
    #[error("no bootstrap reachable")]
    NoBootstrap,
    /// The bootstrap failed, or the request was lost on the way; retry later.
    #[error("the bootstrap could not serve the request: {0}")]
    Bootstrap(String),
    /// The node has stopped.
    #[error("the node has stopped")]
    NodeStopped,
}

from_call_error!(ProfileSetError, not_logged_in: Self::NotLoggedIn, {
    CallError::Refused { code: ErrorCode::TooLarge, message, .. } => Self::TooLarge(message),
    CallError::Refused { code: ErrorCode::Invalid, message, .. } | CallError::Invalid(message) => {
        Self::Invalid(message)
    }
});

/// [`crate::Client::profile_get`] failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileGetError {
    /// This device is not logged in.
    #[error("not logged in")]
    NotLoggedIn,
    /// No such user.
    #[error("no user {0:?}")]
    UnknownUser(String),
    /// Too many requests; retry after the time given.
    #[error("too many requests; retry in {retry_after_ms} ms")]
    Throttled {
        /// How long to wait, in milliseconds.
        retry_after_ms: u64,
    },
    /// No bootstrap is reachable.
    #[error("no bootstrap reachable")]
    NoBootstrap,
    /// The bootstrap failed, or the request was lost on the way; retry later.
    #[error("the bootstrap could not serve the request: {0}")]
    Bootstrap(String),
    /// The node has stopped.
    #[error("the node has stopped")]
    NodeStopped,
}

from_call_error!(ProfileGetError, not_logged_in: Self::NotLoggedIn, {
    CallError::Refused { code: ErrorCode::UnknownUser | ErrorCode::NotFound | ErrorCode::InvalidUsername, message, .. } => {
        Self::UnknownUser(message)
    }
});

/// [`crate::Client::avatar`] failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AvatarError {
    /// This device is not logged in.
    #[error("not logged in")]
    NotLoggedIn,
    /// No avatar with that hash.
    #[error("no such avatar")]
    NotFound,
    /// Too many requests; retry after the time given.
    #[error("too many requests; retry in {retry_after_ms} ms")]
    Throttled {
        /// How long to wait, in milliseconds.
        retry_after_ms: u64,
    },
    /// No bootstrap is reachable.
    #[error("no bootstrap reachable")]
    NoBootstrap,
    /// The bootstrap failed, or the request was lost on the way; retry later.
    #[error("the bootstrap could not serve the request: {0}")]
    Bootstrap(String),
    /// The node has stopped.
    #[error("the node has stopped")]
    NodeStopped,
}

from_call_error!(AvatarError, not_logged_in: Self::NotLoggedIn, {
    CallError::Refused { code: ErrorCode::NotFound, .. } => Self::NotFound,
});

/// [`crate::Client::search_users`] failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SearchError {
    /// This device is not logged in.
    #[error("not logged in")]
    NotLoggedIn,
    /// The query breaks a rule (e.g. over the size limit).
    #[error("invalid query: {0}")]
    Invalid(String),
    /// Too many requests; retry after the time given.
    #[error("too many requests; retry in {retry_after_ms} ms")]
    Throttled {
        /// How long to wait, in milliseconds.
        retry_after_ms: u64,
    },
    /// No bootstrap is reachable.
    #[error("no bootstrap reachable")]
    NoBootstrap,
    /// The bootstrap failed, or the request was lost on the way; retry later.
    #[error("the bootstrap could not serve the request: {0}")]
    Bootstrap(String),
    /// The node has stopped.
    #[error("the node has stopped")]
    NodeStopped,
}

from_call_error!(SearchError, not_logged_in: Self::NotLoggedIn, {
    CallError::Refused { code: ErrorCode::Invalid | ErrorCode::TooLarge, message, .. }
    | CallError::Invalid(message) => Self::Invalid(message),
});

/// A group operation ([`crate::Client::group_create`] and the other `group_*`) failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// This device is not logged in.
    #[error("not logged in")]
    NotLoggedIn,
    /// No such user.
    #[error("no such user: {0}")]
    UnknownUser(String),
    /// No such group, or this account is not a member of it.
    #[error("no such group: {0}")]
    NotFound(String),
    /// This account's role does not allow it (e.g. a member removing someone).
    #[error("not allowed: {0}")]
    NotAllowed(String),
    /// The request breaks a rule (an empty name, a bad role).
    #[error("invalid: {0}")]
    Invalid(String),
    /// Too many requests; retry after the time given.
    #[error("too many requests; retry in {retry_after_ms} ms")]
    Throttled {
        /// How long to wait, in milliseconds.
        retry_after_ms: u64,
    },
    /// No bootstrap is reachable.
    #[error("no bootstrap reachable")]
    NoBootstrap,
    /// The bootstrap failed, or the request was lost on the way; retry later.
    #[error("the bootstrap could not serve the request: {0}")]
    Bootstrap(String),
    /// The node has stopped.
    #[error("the node has stopped")]
    NodeStopped,
}

from_call_error!(GroupError, not_logged_in: Self::NotLoggedIn, {
    CallError::Refused { code: ErrorCode::UnknownUser | ErrorCode::InvalidUsername, message, .. } => {
        Self::UnknownUser(message)
    }
    CallError::Refused { code: ErrorCode::NotFound, message, .. } => Self::NotFound(message),
    CallError::Refused { code: ErrorCode::NotAllowed, message, .. } => Self::NotAllowed(message),
    CallError::Refused { code: ErrorCode::Invalid | ErrorCode::TooLarge, message, .. } => {
        Self::Invalid(message)
    }
});

/// [`crate::Client::fetch_file`] failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// No such message here, or it has no file.
    #[error("not found: {0}")]
    NotFound(String),
    /// The download stopped: no source has what is missing, or the file could not be written.
    /// What was verified is kept; fetching again resumes.
    #[error("the download failed: {0}")]
    Failed(String),
    /// The local store failed.
    #[error("the store failed: {0}")]
    Store(String),
    /// The node has stopped.
    #[error("the node has stopped")]
    NodeStopped,
}

/// [`crate::Client::recall`] or [`crate::Client::delete`] failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RecallError {
    /// No message with that id here.
    #[error("no message {0}")]
    NotFound(String),
    /// Only the author (or a group's owner or admins) may recall a message.
    #[error("not allowed: {0}")]
    NotAllowed(String),
    /// Recalling in a `user:` or `group:` conversation needs the account logged in.
    #[error("not logged in")]
    NotLoggedIn,
    /// The peer of a `peer:` conversation is not connected now.
    #[error("{0} is not reachable now; try again when it is")]
    Unreachable(String),
    /// Too many requests; retry after the time given.
    #[error("too many requests; retry in {retry_after_ms} ms")]
    Throttled {
        /// How long to wait, in milliseconds.
        retry_after_ms: u64,
    },
    /// No bootstrap is reachable.
    #[error("no bootstrap reachable")]
    NoBootstrap,
    /// The bootstrap failed, or the request was lost on the way; retry later.
    #[error("the bootstrap could not serve the request: {0}")]
    Bootstrap(String),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The node has stopped.
    #[error("the node has stopped")]
    NodeStopped,
}

from_call_error!(RecallError, not_logged_in: Self::NotLoggedIn, {
    CallError::Refused { code: ErrorCode::NotFound, message, .. } => Self::NotFound(message),
    CallError::Refused { code: ErrorCode::NotAllowed, message, .. } => Self::NotAllowed(message),
});

/// A settings change ([`crate::Client::set_dnd`], `set_muted`, `set_blocked`) failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// This device is not logged in.
    #[error("not logged in")]
    NotLoggedIn,
    /// The change breaks a rule (an address that cannot be muted or blocked, a full list).
    #[error("invalid: {0}")]
    Invalid(String),
    /// Too many requests; retry after the time given.
    #[error("too many requests; retry in {retry_after_ms} ms")]
    Throttled {
        /// How long to wait, in milliseconds.
        retry_after_ms: u64,
    },
    /// No bootstrap is reachable.
    #[error("no bootstrap reachable")]
    NoBootstrap,
    /// The bootstrap failed, or the request was lost on the way; retry later.
    #[error("the bootstrap could not serve the request: {0}")]
    Bootstrap(String),
    /// The node has stopped.
    #[error("the node has stopped")]
    NodeStopped,
}

from_call_error!(SettingsError, not_logged_in: Self::NotLoggedIn, {
    CallError::Refused {
        code: ErrorCode::Invalid | ErrorCode::TooLarge | ErrorCode::NotAllowed,
        message,
        ..
    } => Self::Invalid(message),
});

/// A friend operation ([`crate::Client::friend_add`], `friend_accept`, `friend_remove`,
/// `friends`) failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum FriendError {
    /// This device is not logged in.
    #[error("not logged in")]
    NotLoggedIn,
    /// No such user.
    #[error("no user {0:?}")]
    UnknownUser(String),
    /// Nothing to act on (e.g. accepting a request nobody made).
    #[error("not found: {0}")]
    NotFound(String),
    /// Not allowed (e.g. befriending oneself, a full friends list).
    #[error("not allowed: {0}")]
    NotAllowed(String),
    /// Too many requests; retry after the time given.
    #[error("too many requests; retry in {retry_after_ms} ms")]
    Throttled {
        /// How long to wait, in milliseconds.
        retry_after_ms: u64,
    },
    /// No bootstrap is reachable.
    #[error("no bootstrap reachable")]
    NoBootstrap,
    /// The bootstrap failed, or the request was lost on the way; retry later.
    #[error("the bootstrap could not serve the request: {0}")]
    Bootstrap(String),
    /// The node has stopped.
    #[error("the node has stopped")]
    NodeStopped,
}

from_call_error!(FriendError, not_logged_in: Self::NotLoggedIn, {
    CallError::Refused { code: ErrorCode::UnknownUser | ErrorCode::InvalidUsername, message, .. } => {
        Self::UnknownUser(message)
    }
    CallError::Refused { code: ErrorCode::NotFound, message, .. } => Self::NotFound(message),
    CallError::Refused { code: ErrorCode::NotAllowed, message, .. } => Self::NotAllowed(message),
});
