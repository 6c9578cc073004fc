//! The handle front-ends hold: [`Client`]. Cheap to clone; every method sends one command to the
//! event loop and awaits its answer.
//!
//! Account methods (`register`, `login`, profiles, friends, ...) are requests to the node's
//! bootstrap; with none connected they fail with a `NoBootstrap` error ("no bootstrap
//! reachable") after waiting up to [`crate::config::limits::BOOTSTRAP_CONNECT_WAIT`] for one.

use std::fmt;
use std::path::PathBuf;

use confab_protocol::bootstrap::{BootstrapRequest, BootstrapResponse, normalize_username};
use confab_protocol::group::{Role, Roster};
use confab_protocol::limits::{
    MAX_AVATAR_BYTES, MAX_NAME_BYTES, MAX_QUERY_BYTES, MAX_SIGNATURE_BYTES,
};
use confab_protocol::{ContentHash, MessageId};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::sync::{broadcast, mpsc, oneshot};

pub use confab_protocol::bootstrap::{Avatar, Friend, Profile, UserSummary};

use crate::address::Conversation;
use crate::config::limits::MAX_HISTORY_PAGE;
use crate::error::{
    AvatarError, CallError, DeleteAccountError, DialError, FetchError, FriendError, GroupError,
    LoginError, LogoutError, ProfileGetError, ProfileSetError, QueryError, RecallError,
    RegisterError, SearchError, SendError, SettingsError,
};
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
    /// Will never be delivered: the bootstrap refused it for good (unknown receiver, full
    /// mailbox). Final: no other state follows. Ordered last so no later state replaces it.
    Failed,
}

impl DeliveryState {
    /// The name used on the RPC interface.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Sent => "sent",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Read => "read",
            DeliveryState::Failed => "failed",
        }
    }

    /// Whether the message got at least as far as the sender's side can tell (`Sent` or later,
    /// but not `Failed`).
    pub fn is_sent(self) -> bool {
        matches!(
            self,
            DeliveryState::Sent | DeliveryState::Delivered | DeliveryState::Read
        )
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
    /// The text (none for a recalled message, or a file without a caption).
    pub text: Option<String>,
    /// The attached file's description (its content is fetched by its hash).
    pub attachment: Option<Box<confab_protocol::Attachment>>,
    /// End-to-end encrypted (a later feature; always false for now).
    pub encrypted: bool,
    /// Recalled by its author (or a group's admin): the content is gone.
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

/// Friends and pending friend requests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Friends {
    /// Accepted friends, with their online state.
    pub friends: Vec<Friend>,
    /// Users who asked this user and wait for an answer.
    pub incoming: Vec<String>,
    /// Users this user asked, not answered yet.
    pub outgoing: Vec<String>,
}

/// A group this account is a member of, as this device last heard from the bootstrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Its id (the `group:` address is `group:<id>`).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Grows with every change of members, roles or name.
    pub version: u64,
    /// Every member, in the order they joined.
    pub members: Vec<GroupMember>,
}

/// The account's settings, the same on every device of it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settings {
    /// Do-not-disturb: no message alerts (`notify` is false).
    pub dnd: bool,
    /// Conversations that do not alert.
    pub muted: Vec<Conversation>,
    /// Blocked users (`user:`) and groups (`group:`).
    pub blocked: Vec<Conversation>,
}

impl Settings {
    /// The front-end form of the bootstrap's record (addresses that do not parse are left out).
    pub(crate) fn from_account(settings: &confab_protocol::bootstrap::AccountSettings) -> Self {
        let parse = |list: &[String]| list.iter().filter_map(|a| a.parse().ok()).collect();
        Self {
            dnd: settings.dnd,
            muted: parse(&settings.muted),
            blocked: parse(&settings.blocked),
        }
    }
}

/// One member of a [`Group`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// The account.
    pub user: String,
    /// What it may do.
    pub role: Role,
}

impl Group {
    /// The front-end form of a roster.
    pub(crate) fn from_roster(roster: &Roster) -> Self {
        Self {
            id: roster.group.clone(),
            name: roster.name.clone(),
            version: roster.version,
            members: roster
                .members
                .iter()
                .map(|m| GroupMember {
                    user: m.user.clone(),
                    role: m.role,
                })
                .collect(),
        }
    }

    /// The role of `user`, if a member.
    pub fn role_of(&self, user: &str) -> Option<Role> {
        self.members.iter().find(|m| m.user == user).map(|m| m.role)
    }
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
    FetchFile {
        id: MessageId,
        dest: PathBuf,
        reply: Reply<Result<PathBuf, FetchError>>,
    },
    SendFile {
        to: Conversation,
        path: PathBuf,
        caption: Option<String>,
        reply: Reply<Result<MessageId, SendError>>,
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
    /// The groups this device knows its account is in.
    Groups(Reply<Vec<Group>>),
    /// Recalls (for everyone) or deletes (from this account's history) a message.
    Bury {
        id: MessageId,
        recall: bool,
        reply: Reply<Result<(), RecallError>>,
    },
    /// The account's settings as this device knows them.
    Settings(Reply<Settings>),
    /// Marks a conversation's unread messages read.
    MarkRead {
        conversation: Conversation,
        reply: Reply<Result<usize, QueryError>>,
    },
    /// A request for the bootstrap; the loop picks the bootstrap and keeps the session.
    Bootstrap {
        request: BootstrapRequest,
        reply: Reply<Result<BootstrapResponse, CallError>>,
    },
    /// Starts (or confirms) end-to-end encryption of a conversation.
    Encrypt {
        to: Conversation,
        suite: confab_protocol::e2e::Suite,
        reply: Reply<Result<confab_protocol::e2e::Suite, crate::e2e::E2eError>>,
    },
    /// The end-to-end encryption driver finished a catch-up of a conversation (its bootstrap
    /// name) that started at the instant given.
    E2eSynced(String, std::time::Instant),
    /// Answered once the end-to-end encryption work queued so far is done (after a login:
    /// key packages published, encrypted conversations joined).
    E2eReady(Reply<()>),
    /// Whether a conversation is end-to-end encrypted, as this device knows.
    Encryption {
        to: Conversation,
        reply: Reply<Option<Encryption>>,
    },
    Shutdown(Reply<Result<(), QueryError>>),
}

/// How long a login waits for the end-to-end encryption set-up before it returns anyway.
const E2E_READY_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// How a conversation is end-to-end encrypted ([`Client::encryption`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encryption {
    /// Its cipher suite, fixed for good when encryption started.
    pub suite: confab_protocol::e2e::Suite,
    /// The MLS epoch this device is at, if it is in the conversation's group yet.
    pub epoch: Option<u64>,
    /// The member devices (account and peer id), as this device's group has them.
    pub devices: Vec<(String, String)>,
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
    ///
    /// To a user (`user:bob`, needs a session: [`SendError::NotLoggedIn`] otherwise) the message
    /// goes to the bootstrap, which keeps it in bob's mailbox (and in this user's own, for their
    /// other devices); it waits in a durable outbox until the bootstrap has stored it (`Sent`),
    /// across restarts, retried with back-off. A refusal for good (unknown user, full mailbox)
    /// makes it `Failed`.
    pub async fn send(&self, to: &Conversation, text: &str) -> Result<MessageId, SendError> {
        let (to, text) = (to.clone(), text.to_owned());
        self.ask(|reply| Command::Send { to, text, reply })
            .await
            .unwrap_or(Err(SendError::NodeStopped))
    }

    /// Sends the file at `path` (any size) to `to`, with an optional caption: the file is copied
    /// into this node's blob store, described in the message (name, size, type and kind from its
    /// content, an image's dimensions and thumbnail) and served over `/confab/file/1` to whoever
    /// fetches it by its hash. Answers once the message is stored, like [`Client::send`].
    pub async fn send_file(
        &self,
        to: &Conversation,
        path: &std::path::Path,
        caption: Option<&str>,
    ) -> Result<MessageId, SendError> {
        let (to, path, caption) = (to.clone(), path.to_owned(), caption.map(str::to_owned));
        self.ask(|reply| Command::SendFile {
            to,
            path,
            caption,
            reply,
        })
        .await
        .unwrap_or(Err(SendError::NodeStopped))
    }

    /// Downloads message `id`'s file into the directory `dest` (created if needed) and returns
    /// where it is: fetched chunk by chunk from the peers that have it, each chunk verified
    /// against the file's hash as it arrives, resumable after a restart. Progress comes as
    /// [`Event::TransferProgress`], the end as [`Event::TransferComplete`] or
    /// [`Event::TransferFailed`]. The file is named as the sender named it, made safe; an existing
    /// file is never overwritten (` (1)` is added).
    pub async fn fetch_file(
        &self,
        id: MessageId,
        dest: &std::path::Path,
    ) -> Result<PathBuf, FetchError> {
        let dest = dest.to_owned();
        self.ask(|reply| Command::FetchFile { id, dest, reply })
            .await
            .unwrap_or(Err(FetchError::NodeStopped))
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

    /// Creates a group named `name` with this account as its owner and `members` in it; every
    /// member gets [`Event::GroupInvited`]. Messages to it go to `group:<id>`.
    pub async fn group_create(&self, name: &str, members: &[&str]) -> Result<Group, GroupError> {
        let mut users = Vec::with_capacity(members.len());
        for m in members {
            users.push(normalize_username(m).map_err(|_| GroupError::UnknownUser((*m).into()))?);
        }
        self.group_call(BootstrapRequest::GroupCreate {
            name: name.to_owned(),
            members: users,
        })
        .await
    }

    /// Adds `user` to `group` (owners and admins only).
    pub async fn group_invite(&self, group: &str, user: &str) -> Result<Group, GroupError> {
        let user = normalize_username(user).map_err(|_| GroupError::UnknownUser(user.into()))?;
        self.group_call(BootstrapRequest::GroupInvite {
            group: group.to_owned(),
            user,
        })
        .await
    }

    /// Removes `user` from `group`: the owner removes anyone else, admins remove members.
    pub async fn group_remove(&self, group: &str, user: &str) -> Result<Group, GroupError> {
        let user = normalize_username(user).map_err(|_| GroupError::UnknownUser(user.into()))?;
        self.group_call(BootstrapRequest::GroupRemove {
            group: group.to_owned(),
            user,
        })
        .await
    }

    /// The owner makes `user` an admin ([`Role::Admin`]) or a plain member ([`Role::Member`]).
    pub async fn group_set_role(
        &self,
        group: &str,
        user: &str,
        role: Role,
    ) -> Result<Group, GroupError> {
        let user = normalize_username(user).map_err(|_| GroupError::UnknownUser(user.into()))?;
        self.group_call(BootstrapRequest::GroupSetRole {
            group: group.to_owned(),
            user,
            role,
        })
        .await
    }

    /// Renames `group` (owners and admins).
    pub async fn group_rename(&self, group: &str, name: &str) -> Result<Group, GroupError> {
        self.group_call(BootstrapRequest::GroupRename {
            group: group.to_owned(),
            name: name.to_owned(),
        })
        .await
    }

    /// This account leaves `group`; nothing more arrives from it here or on its other devices.
    pub async fn group_leave(&self, group: &str) -> Result<(), GroupError> {
        let request = BootstrapRequest::GroupLeave {
            group: group.to_owned(),
        };
        match self.call(request).await? {
            BootstrapResponse::Done => Ok(()),
            other => Err(GroupError::Bootstrap(unexpected(&other))),
        }
    }

    /// Recalls message `id` for everyone: only its author may (in a group, also its owner and
    /// admins). Every copy — the receivers' devices, online now or later, and the author's
    /// other devices — keeps it as recalled, without its content ([`Event::Recalled`]); the
    /// bootstrap drops the stored body. In a `peer:` conversation the peer must be connected.
    pub async fn recall(&self, id: MessageId) -> Result<(), RecallError> {
        self.ask(|reply| Command::Bury {
            id,
            recall: true,
            reply,
        })
        .await
        .unwrap_or(Err(RecallError::NodeStopped))
    }

    /// Deletes message `id` from this account's history, on this device and (in a `user:` or
    /// `group:` conversation) on its other devices ([`Event::Deleted`]); the other side keeps
    /// its copy.
    pub async fn delete(&self, id: MessageId) -> Result<(), RecallError> {
        self.ask(|reply| Command::Bury {
            id,
            recall: false,
            reply,
        })
        .await
        .unwrap_or(Err(RecallError::NodeStopped))
    }

    /// The account's settings as this device knows them (kept up to date by the bootstrap while
    /// connected, and kept across restarts; defaults when logged out).
    pub async fn settings(&self) -> Result<Settings, QueryError> {
        self.ask(Command::Settings)
            .await
            .ok_or(QueryError::NodeStopped)
    }

    /// Turns do-not-disturb on or off for the account (all its devices): no message alerts.
    pub async fn set_dnd(&self, enabled: bool) -> Result<Settings, SettingsError> {
        self.settings_call(BootstrapRequest::SetDnd { enabled })
            .await
    }

    /// Mutes or unmutes a conversation for the account (all its devices).
    pub async fn set_muted(
        &self,
        conversation: &Conversation,
        muted: bool,
    ) -> Result<Settings, SettingsError> {
        self.settings_call(BootstrapRequest::SetMuted {
            conversation: conversation.to_string(),
            muted,
        })
        .await
    }

    /// Blocks (`blocked: true`) or unblocks a user (`user:x`) or a group (`group:y`) for the
    /// account (all its devices). A blocked user's direct messages, friend requests and invites
    /// are refused; a blocked group's messages and invites are ignored.
    pub async fn set_blocked(
        &self,
        target: &Conversation,
        blocked: bool,
    ) -> Result<Settings, SettingsError> {
        if !matches!(target, Conversation::User(_) | Conversation::Group(_)) {
            return Err(SettingsError::Invalid(format!(
                "only users and groups can be blocked, not {target}"
            )));
        }
        self.settings_call(BootstrapRequest::SetBlocked {
            target: target.to_string(),
            blocked,
        })
        .await
    }

    async fn settings_call(&self, request: BootstrapRequest) -> Result<Settings, SettingsError> {
        match self.call(request).await? {
            BootstrapResponse::Settings(s) => Ok(Settings::from_account(&s)),
            other => Err(SettingsError::Bootstrap(unexpected(&other))),
        }
    }

    /// The groups this account is in, as this device knows them (kept up to date by the
    /// bootstrap while connected, and kept across restarts).
    pub async fn groups(&self) -> Result<Vec<Group>, QueryError> {
        self.ask(Command::Groups)
            .await
            .ok_or(QueryError::NodeStopped)
    }

    async fn group_call(&self, request: BootstrapRequest) -> Result<Group, GroupError> {
        match self.call(request).await? {
            BootstrapResponse::Group(roster) => Ok(Group::from_roster(&roster)),
            other => Err(GroupError::Bootstrap(unexpected(&other))),
        }
    }

    /// Marks every unread incoming message of `conversation` read; returns how many were.
    /// Each becomes a `delivery {id, state: read}` event here. In a `user:` conversation the
    /// authors' devices are told too (a read receipt through the bootstrap, kept until it is
    /// stored there), and so are this account's other devices; a `peer:` or `broadcast`
    /// conversation is marked on this device only.
    pub async fn mark_read(&self, conversation: &Conversation) -> Result<usize, QueryError> {
        let conversation = conversation.clone();
        self.ask(|reply| Command::MarkRead {
            conversation,
            reply,
        })
        .await
        .unwrap_or(Err(QueryError::NodeStopped))
    }

    async fn call(&self, request: BootstrapRequest) -> Result<BootstrapResponse, CallError> {
        self.ask(|reply| Command::Bootstrap { request, reply })
            .await
            .unwrap_or(Err(CallError::NodeStopped))
    }

    /// Makes `to` (`user:` or `group:`) end-to-end encrypted with `suite` (the default suite
    /// when `None`): every device of every user in it becomes a member of its MLS group, and
    /// from then on every message in it is encrypted, for good. If it is encrypted already, this
    /// device joins it; asking for another suite than the one it has is an error (its suite
    /// never changes). Returns the suite.
    pub async fn encrypt(
        &self,
        to: &Conversation,
        suite: Option<confab_protocol::e2e::Suite>,
    ) -> Result<confab_protocol::e2e::Suite, crate::e2e::E2eError> {
        let to = to.clone();
        let suite = suite.unwrap_or(confab_protocol::e2e::Suite::DEFAULT);
        self.ask(|reply| Command::Encrypt { to, suite, reply })
            .await
            .unwrap_or(Err(crate::e2e::E2eError::NodeStopped))
    }

    /// Waits (a while at most) for the end-to-end encryption work queued so far: after a login,
    /// this device's key packages are published (so it can be added to encrypted conversations
    /// while it is away) and the encrypted conversations of the account are joined.
    async fn e2e_ready(&self) {
        let waited = tokio::time::timeout(E2E_READY_WAIT, self.ask(Command::E2eReady)).await;
        if waited.is_err() {
            tracing::warn!("end-to-end encryption is still catching up after the login");
        }
    }

    /// How `to` is end-to-end encrypted, or `None` if it is not (as far as this device knows).
    pub async fn encryption(&self, to: &Conversation) -> Result<Option<Encryption>, QueryError> {
        let to = to.clone();
        self.ask(|reply| Command::Encryption { to, reply })
            .await
            .ok_or(QueryError::NodeStopped)
    }

    /// Creates an account on the bootstrap and logs this device into it; returns the username in
    /// its canonical form (usernames ignore case: `Alice` is `alice`). The session is kept in the
    /// data dir: the device stays logged in across restarts until [`Client::logout`].
    pub async fn register(&self, user: &str, password: &str) -> Result<String, RegisterError> {
        let user =
            normalize_username(user).map_err(|e| RegisterError::InvalidUsername(e.to_string()))?;
        let request = BootstrapRequest::Register {
            user,
            password: password.to_owned(),
        };
        match self.call(request).await? {
            BootstrapResponse::Session { user, .. } => {
                self.e2e_ready().await;
                Ok(user)
            }
            other => Err(RegisterError::Bootstrap(unexpected(&other))),
        }
    }

    /// Logs this device into an existing account; returns the username in canonical form. A
    /// wrong username and a wrong password are the same error.
    pub async fn login(&self, user: &str, password: &str) -> Result<String, LoginError> {
        let user = normalize_username(user).map_err(|_| LoginError::BadCredentials)?;
        let request = BootstrapRequest::Login {
            user,
            password: password.to_owned(),
        };
        match self.call(request).await? {
            BootstrapResponse::Session { user, .. } => {
                self.e2e_ready().await;
                Ok(user)
            }
            other => Err(LoginError::Bootstrap(unexpected(&other))),
        }
    }

    /// Logs this device out of its account (the bootstrap unbinds it; the local session is
    /// forgotten).
    pub async fn logout(&self) -> Result<(), LogoutError> {
        match self.call(BootstrapRequest::Logout).await? {
            BootstrapResponse::Done => Ok(()),
            other => Err(LogoutError::Bootstrap(unexpected(&other))),
        }
    }

    /// Deletes the account and everything of it; every device of it is logged out.
    pub async fn delete_account(&self, password: &str) -> Result<(), DeleteAccountError> {
        let request = BootstrapRequest::DeleteAccount {
            password: password.to_owned(),
        };
        match self.call(request).await? {
            BootstrapResponse::Done => Ok(()),
            other => Err(DeleteAccountError::Bootstrap(unexpected(&other))),
        }
    }

    /// Changes this user's profile; `None` leaves a field as it is. `avatar` is an image file
    /// (PNG, JPEG, GIF or WebP) of at most [`MAX_AVATAR_BYTES`].
    pub async fn profile_set(
        &self,
        nickname: Option<String>,
        signature: Option<String>,
        avatar: Option<PathBuf>,
    ) -> Result<(), ProfileSetError> {
        if let Some(n) = &nickname {
            if n.trim().is_empty() {
                return Err(ProfileSetError::Invalid("the nickname is empty".into()));
            }
            if n.len() > MAX_NAME_BYTES {
                return Err(ProfileSetError::TooLarge(format!(
                    "the nickname is {} bytes, the limit is {MAX_NAME_BYTES}",
                    n.len()
                )));
            }
        }
        if let Some(s) = &signature
            && s.len() > MAX_SIGNATURE_BYTES
        {
            return Err(ProfileSetError::TooLarge(format!(
                "the status line is {} bytes, the limit is {MAX_SIGNATURE_BYTES}",
                s.len()
            )));
        }
        let avatar = match avatar {
            Some(path) => Some(read_avatar(path).await?),
            None => None,
        };
        let request = BootstrapRequest::ProfileSet {
            nickname,
            signature,
            avatar,
        };
        match self.call(request).await? {
            BootstrapResponse::Done => Ok(()),
            other => Err(ProfileSetError::Bootstrap(unexpected(&other))),
        }
    }

    /// A user's public profile (also one's own), with their online state.
    pub async fn profile_get(&self, user: &str) -> Result<Profile, ProfileGetError> {
        let Ok(user) = normalize_username(user) else {
            return Err(ProfileGetError::UnknownUser(user.to_owned()));
        };
        let request = BootstrapRequest::ProfileGet { user: user.clone() };
        match self.call(request).await {
            Ok(BootstrapResponse::Profile(profile)) => Ok(profile),
            Ok(other) => Err(ProfileGetError::Bootstrap(unexpected(&other))),
            Err(e) => Err(match ProfileGetError::from(e) {
                ProfileGetError::UnknownUser(_) => ProfileGetError::UnknownUser(user),
                other => other,
            }),
        }
    }

    /// An avatar image by the hash in a [`Profile`].
    pub async fn avatar(&self, hash: &ContentHash) -> Result<Avatar, AvatarError> {
        match self
            .call(BootstrapRequest::AvatarGet { hash: *hash })
            .await?
        {
            BootstrapResponse::Avatar(avatar) => Ok(avatar),
            other => Err(AvatarError::Bootstrap(unexpected(&other))),
        }
    }

    /// Users whose username or nickname contains `query` (ignoring case); a bounded page.
    pub async fn search_users(&self, query: &str) -> Result<Vec<UserSummary>, SearchError> {
        let query = query.trim();
        if query.is_empty() {
            return Err(SearchError::Invalid("the query is empty".into()));
        }
        if query.len() > MAX_QUERY_BYTES {
            return Err(SearchError::Invalid(format!(
                "the query is {} bytes, the limit is {MAX_QUERY_BYTES}",
                query.len()
            )));
        }
        let request = BootstrapRequest::SearchUsers {
            query: query.to_owned(),
        };
        match self.call(request).await? {
            BootstrapResponse::Users { users } => Ok(users),
            other => Err(SearchError::Bootstrap(unexpected(&other))),
        }
    }

    /// Asks `user` to become friends (they get [`Event::FriendRequest`] now or at their next
    /// login); if they asked first, this accepts.
    pub async fn friend_add(&self, user: &str) -> Result<(), FriendError> {
        self.friend_op(user, |user| BootstrapRequest::FriendAdd { user })
            .await
    }

    /// Accepts `user`'s friend request; both sides get [`Event::FriendAdded`].
    pub async fn friend_accept(&self, user: &str) -> Result<(), FriendError> {
        self.friend_op(user, |user| BootstrapRequest::FriendAccept { user })
            .await
    }

    /// Ends a friendship with `user`, or withdraws or declines a request.
    pub async fn friend_remove(&self, user: &str) -> Result<(), FriendError> {
        self.friend_op(user, |user| BootstrapRequest::FriendRemove { user })
            .await
    }

    async fn friend_op(
        &self,
        user: &str,
        make: impl FnOnce(String) -> BootstrapRequest,
    ) -> Result<(), FriendError> {
        let Ok(user) = normalize_username(user) else {
            return Err(FriendError::UnknownUser(user.to_owned()));
        };
        match self.call(make(user.clone())).await {
            Ok(BootstrapResponse::Done) => Ok(()),
            Ok(other) => Err(FriendError::Bootstrap(unexpected(&other))),
            Err(e) => Err(match FriendError::from(e) {
                FriendError::UnknownUser(_) => FriendError::UnknownUser(user),
                other => other,
            }),
        }
    }

    /// Friends with their online state, and pending requests both ways.
    pub async fn friends(&self) -> Result<Friends, FriendError> {
        match self.call(BootstrapRequest::Friends).await? {
            BootstrapResponse::Friends {
                friends,
                incoming,
                outgoing,
            } => Ok(Friends {
                friends,
                incoming,
                outgoing,
            }),
            other => Err(FriendError::Bootstrap(unexpected(&other))),
        }
    }

    /// Stops the node: closes connections, stops discovery and flushes the store. Returns when
    /// everything is on disk.
    pub async fn shutdown(&self) -> Result<(), QueryError> {
        self.ask(Command::Shutdown)
            .await
            .unwrap_or(Err(QueryError::NodeStopped))
    }
}

/// Describes an answer of the wrong kind (a bootstrap bug or a newer protocol).
fn unexpected(response: &BootstrapResponse) -> String {
    format!("unexpected answer ({})", response_kind(response))
}

/// The kind of an answer, for messages and logs (never its content).
pub(crate) fn response_kind(response: &BootstrapResponse) -> &'static str {
    match response {
        BootstrapResponse::Session { .. } => "session",
        BootstrapResponse::Done => "done",
        BootstrapResponse::Profile(_) => "profile",
        BootstrapResponse::Avatar(_) => "avatar",
        BootstrapResponse::Users { .. } => "users",
        BootstrapResponse::Friends { .. } => "friends",
        BootstrapResponse::Deposited { .. } => "deposited",
        BootstrapResponse::Mailbox { .. } => "mailbox",
        BootstrapResponse::Summary(_) => "summary",
        BootstrapResponse::Error { .. } => "error",
        _ => "unknown",
    }
}

/// Reads an avatar file: at most [`MAX_AVATAR_BYTES`], and an image by its first bytes.
async fn read_avatar(path: PathBuf) -> Result<Avatar, ProfileSetError> {
    let fail = |reason: String| ProfileSetError::Avatar {
        path: path.clone(),
        reason,
    };
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let size = file
        .metadata()
        .await
        .map_err(|e| fail(e.to_string()))?
        .len();
    if size > MAX_AVATAR_BYTES as u64 {
        return Err(ProfileSetError::TooLarge(format!(
            "the avatar {} is {size} bytes, the limit is {MAX_AVATAR_BYTES}",
            path.display()
        )));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    // The file may grow while it is read: never read more than the limit allows.
    file.take(MAX_AVATAR_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| fail(e.to_string()))?;
    if bytes.len() > MAX_AVATAR_BYTES {
        return Err(ProfileSetError::TooLarge(format!(
            "the avatar {} is over {MAX_AVATAR_BYTES} bytes",
            path.display()
        )));
    }
    let mime =
        image_mime(&bytes).ok_or_else(|| fail("not a PNG, JPEG, GIF or WebP image".into()))?;
    Ok(Avatar {
        mime: mime.to_owned(),
        bytes,
    })
}

/// The MIME type of an image, from its signature bytes.
fn image_mime(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_recognised_by_their_first_bytes() {
        assert_eq!(image_mime(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
        assert_eq!(image_mime(&[0xFF, 0xD8, 0xFF, 0xE0]), Some("image/jpeg"));
        assert_eq!(image_mime(b"GIF89a..."), Some("image/gif"));
        assert_eq!(image_mime(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(image_mime(b"hello"), None);
        assert_eq!(image_mime(b""), None);
    }

    #[tokio::test]
    async fn avatar_files_are_checked_before_anything_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.png");
        assert!(matches!(
            read_avatar(missing).await,
            Err(ProfileSetError::Avatar { .. })
        ));
        let big = dir.path().join("big.png");
        let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
        bytes.resize(MAX_AVATAR_BYTES + 1, 0);
        std::fs::write(&big, &bytes).unwrap();
        assert!(matches!(
            read_avatar(big).await,
            Err(ProfileSetError::TooLarge(_))
        ));
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, b"not an image").unwrap();
        assert!(matches!(
            read_avatar(text).await,
            Err(ProfileSetError::Avatar { .. })
        ));
        let ok = dir.path().join("ok.png");
        bytes.truncate(100);
        std::fs::write(&ok, &bytes).unwrap();
        let avatar = read_avatar(ok).await.unwrap();
        assert_eq!(avatar.mime, "image/png");
        assert_eq!(avatar.bytes, bytes);
    }
}
