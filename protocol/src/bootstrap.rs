//! `/confab/bootstrap/1` (node → bootstrap requests) and `/confab/notify/1` (bootstrap → node
//! pushes). The bootstrap authorises every request by the peer id of the authenticated connection:
//! no token travels in a payload.

use serde::{Deserialize, Serialize};

use crate::codec::Wire;
use crate::e2e::{
    MAX_COMMIT_DEVICES, MAX_KEY_PACKAGE_BYTES, MAX_KEY_PACKAGES_PER_DEVICE, MAX_MLS_BLOB_BYTES,
};
use crate::group::{GroupVersion, Role, Roster};
use crate::ids::{ContentHash, MessageId};
use crate::limits::*;
use crate::message::ChatMessage;

/// The libp2p protocol name of requests to a bootstrap.
pub const BOOTSTRAP_PROTOCOL: &str = "/confab/bootstrap/1";
/// The libp2p protocol name of pushes from a bootstrap to a node.
pub const NOTIFY_PROTOCOL: &str = "/confab/notify/1";

/// An image a user shows as their avatar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Avatar {
    /// `image/png`, `image/jpeg`, ...
    pub mime: String,
    /// The image file.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// What a node asks of its bootstrap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum BootstrapRequest {
    /// Creates an account and logs this device in.
    Register {
        /// The username (normalised by the server: see [`normalize_username`]).
        user: String,
        /// The password, in clear over the encrypted connection; hashed at once by the server.
        password: String,
    },
    /// Logs this device into an existing account.
    Login {
        /// The username.
        user: String,
        /// The password.
        password: String,
    },
    /// Which account this device is logged into, with a fresh certificate.
    Session,
    /// Unbinds this device from its account.
    Logout,
    /// Deletes the account and everything of it; every device is logged out.
    DeleteAccount {
        /// The password again, to be sure.
        password: String,
    },
    /// Changes the profile; absent fields stay as they are.
    ProfileSet {
        /// Display name.
        nickname: Option<String>,
        /// Status line.
        signature: Option<String>,
        /// Avatar image.
        avatar: Option<Avatar>,
    },
    /// Another user's (or one's own) profile.
    ProfileGet {
        /// Whose.
        user: String,
    },
    /// An avatar image by its hash.
    AvatarGet {
        /// The BLAKE3 hash from a profile.
        hash: ContentHash,
    },
    /// Users whose username or nickname contains `query`.
    SearchUsers {
        /// A substring (case-insensitive).
        query: String,
    },
    /// Asks `user` to become friends (or accepts, if they asked first).
    FriendAdd {
        /// Whom.
        user: String,
    },
    /// Accepts a pending friend request from `user`.
    FriendAccept {
        /// Whose.
        user: String,
    },
    /// Ends a friendship, or withdraws or declines a request.
    FriendRemove {
        /// Whom.
        user: String,
    },
    /// Friends with their online state, and pending requests.
    Friends,
    /// Stores a direct message for `to` (in `to`'s mailbox and in the author's own, for the
    /// author's other devices). The author is the account of the requesting device. Answered only
    /// after the commit; the same message id from the same author is stored once, and a retry gets
    /// the same answer.
    Deposit {
        /// The receiver's username.
        to: String,
        /// The message (its `id` is the deduplication key).
        message: ChatMessage,
    },
    /// This account's mailbox after sequence number `after`, oldest first, one page.
    Sync {
        /// The last sequence number this device has.
        after: u64,
        /// At most this many entries (the server may return fewer: pages are also bounded in bytes).
        limit: u32,
    },
    /// Who sent how many to this account after sequence number `after`.
    Summary {
        /// The last sequence number this device has.
        after: u64,
    },
    /// This device's user read (or got) messages that `to` sent: a receipt goes into `to`'s
    /// mailbox (so every device of the author sees the new state) and into the requester's own
    /// (so the requester's other devices mark them too). Answered after the commit.
    Receipt {
        /// The other party (the authors of the messages).
        to: String,
        /// How far the messages got.
        state: ReceiptState,
        /// The messages, at most [`MAX_RECEIPT_IDS`].
        ids: Vec<MessageId>,
    },
    /// The devices of `user` connected now, with the addresses they listen on, for delivering
    /// directly. Only a user's friends (and the user) get an answer with devices in it.
    Devices {
        /// Whose.
        user: String,
    },
    /// Creates a group with this account as its owner and `members` as members. Answered with
    /// [`BootstrapResponse::Group`].
    GroupCreate {
        /// Its name.
        name: String,
        /// The other members (usernames; at most [`MAX_GROUP_MEMBERS`] - 1).
        members: Vec<String>,
    },
    /// Adds `user` to `group` (owners and admins only). Answered with the new roster.
    GroupInvite {
        /// The group.
        group: String,
        /// Whom.
        user: String,
    },
    /// Removes `user` from `group` (owners remove anyone but themselves, admins remove members).
    /// Answered with the new roster.
    GroupRemove {
        /// The group.
        group: String,
        /// Whom.
        user: String,
    },
    /// This account leaves `group` (an owner leaving hands the group to its oldest admin, else
    /// its oldest member; the last member leaving ends it). Answered with `Done`.
    GroupLeave {
        /// The group.
        group: String,
    },
    /// The owner makes `user` an admin or a plain member. Answered with the new roster.
    GroupSetRole {
        /// The group.
        group: String,
        /// Whom.
        user: String,
        /// [`Role::Admin`] or [`Role::Member`].
        role: Role,
    },
    /// Renames `group` (owners and admins). Answered with the new roster.
    GroupRename {
        /// The group.
        group: String,
        /// The new name.
        name: String,
    },
    /// The groups this account is a member of, with their versions.
    Groups,
    /// A group's roster now (members only).
    GroupInfo {
        /// The group.
        group: String,
    },
    /// Stores a message to `group` in the mailbox of every member (the author's own included,
    /// for its other devices). Members only; answered with `Deposited` after the commit; the same
    /// id from the same author is stored once.
    GroupPost {
        /// The group.
        group: String,
        /// The message.
        message: ChatMessage,
    },
    /// Recalls message `id` of `conversation` (`user:x` or `group:y`, as the requester sees it)
    /// for everyone: only its author, or in a group also an owner or admin. The bootstrap drops
    /// the stored body everywhere and puts a tombstone into the mailbox of everyone involved.
    /// Answered with `Deposited` after the commit.
    Recall {
        /// The conversation.
        conversation: String,
        /// The message.
        id: MessageId,
        /// The message's author (its account).
        author: String,
    },
    /// Deletes message `id` of `conversation` from this account's history on all its devices
    /// (nobody else's). Answered with `Deposited` after the commit.
    Delete {
        /// The conversation.
        conversation: String,
        /// The message.
        id: MessageId,
    },
    /// The author asks the bootstrap to keep the attachment of its message `id` in
    /// `conversation` (`user:x` or `group:y`) for receivers who are offline now. If every
    /// receiver has a device online the answer is [`HoldState::NotNeeded`]; otherwise the
    /// bootstrap records the hold (within the author's quota and its size limit: `TooLarge`,
    /// `QuotaExceeded`) and pulls the file over `/confab/file/1` from the author's devices,
    /// verifying every chunk; [`Notification::FileHeld`] says when it has all of it. It serves
    /// the file to the receivers until each has reported [`BootstrapRequest::FileReceived`], the
    /// message is recalled, or the retention time ends. Asking again is harmless.
    FileHold {
        /// The conversation, as the author sees it.
        conversation: String,
        /// The message that carries the file.
        id: MessageId,
        /// The file's root (from the attachment).
        root: ContentHash,
        /// Its size in bytes (checked against the hash list when pulled).
        size: u64,
    },
    /// A device of this account has the file `root` complete: the bootstrap no longer keeps it
    /// for this account. Answered with `Done`.
    FileReceived {
        /// The file.
        root: ContentHash,
    },
    /// Recent broadcasts the bootstrap kept, after its sequence number `after`, oldest first,
    /// one page (so a device that was away, or is new, has them in its history).
    Broadcasts {
        /// The last broadcast sequence number this device has from this bootstrap.
        after: u64,
        /// At most this many (the server may send fewer).
        limit: u32,
    },
    /// This account's settings.
    Settings,
    /// Turns do-not-disturb on or off for the account (every device). Answered with `Settings`.
    SetDnd {
        /// On?
        enabled: bool,
    },
    /// Mutes or unmutes a conversation for the account. Answered with `Settings`.
    SetMuted {
        /// `user:x`, `group:y`, `peer:z` or `broadcast`.
        conversation: String,
        /// Muted?
        muted: bool,
    },
    /// Blocks or unblocks a user (`user:x`) or a group (`group:y`) for the account: the bootstrap
    /// refuses a blocked user's messages, friend requests and invites to this account, and
    /// stores nothing of a blocked group for it. Answered with `Settings`.
    SetBlocked {
        /// `user:x` or `group:y`.
        target: String,
        /// Blocked?
        blocked: bool,
    },
    /// Publishes this device's MLS key packages for `suite` (each TLS-encoded, its credential
    /// naming this device and account; see [`crate::e2e::credential_identity`]). Each is handed
    /// out once. Answered with `MlsStock`; an empty list only asks how many are left.
    MlsPublish {
        /// The suite's code point.
        suite: u16,
        /// At most [`MAX_KEY_PACKAGES_PER_DEVICE`] packages.
        key_packages: Vec<serde_bytes::ByteBuf>,
    },
    /// Takes one key package of every device of `user` for `suite` (each is then gone from the
    /// bootstrap), to add those devices to an encrypted conversation. Only for `user` itself, its
    /// friends and the members of a group it is in. Answered with `MlsClaimed`.
    MlsClaim {
        /// Whose devices.
        user: String,
        /// The suite's code point.
        suite: u16,
    },
    /// The encrypted conversations of this account (`MlsConversations`).
    MlsConversations,
    /// The latest GroupInfo of an encrypted conversation this account is in, to join it by an
    /// external commit (`MlsGroupInfo`).
    MlsGroupInfo {
        /// `group:<id>` or `dm:<a>:<b>`.
        conversation: String,
    },
    /// A commit to an encrypted conversation at `epoch`. The bootstrap stores it only if `epoch`
    /// is the conversation's epoch now (else `Conflict`: fetch the commits in between and try
    /// again), so exactly one commit wins each epoch; a commit at epoch 0 of a conversation that
    /// is not encrypted yet starts its encryption with `suite`. The declared `added` and
    /// `removed` devices are checked: added devices belong to users of the conversation; a
    /// device is removed by its own account, by an owner or admin of the group, or after its
    /// account left the conversation. A Welcome is released to the added devices in the same
    /// transaction. Answered with `MlsCommitted`.
    MlsCommit {
        /// `group:<id>` or `dm:<a>:<b>`.
        conversation: String,
        /// The epoch the commit was made at.
        epoch: u64,
        /// The suite's code point (must be the conversation's).
        suite: u16,
        /// The TLS-encoded `MLSMessage` holding the commit.
        #[serde(with = "serde_bytes")]
        commit: Vec<u8>,
        /// The new epoch's GroupInfo (with the ratchet tree), for external joins.
        #[serde(with = "serde_bytes")]
        group_info: Vec<u8>,
        /// The Welcome for the added devices, if any.
        #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
        welcome: Option<Vec<u8>>,
        /// Devices the commit adds.
        added: Vec<crate::e2e::MlsDevice>,
        /// Devices the commit removes.
        removed: Vec<crate::e2e::MlsDevice>,
        /// An external commit: this device joins by itself (`added` is this device only).
        #[serde(default)]
        external: bool,
    },
    /// The commits of an encrypted conversation from epoch `from` on, in order, one page
    /// (`MlsCommits`).
    MlsCommits {
        /// `group:<id>` or `dm:<a>:<b>`.
        conversation: String,
        /// The first epoch wanted (the commit that leaves it).
        from: u64,
    },
    /// The Welcomes waiting for this device (`MlsWelcomes`).
    MlsWelcomes,
    /// This device has processed its Welcome to `conversation`: the bootstrap drops it.
    MlsWelcomeDone {
        /// The conversation.
        conversation: String,
    },
    /// A request kind this version does not know.
    #[serde(other)]
    Unknown,
}

/// A broadcast as the bootstrap kept it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastEntry {
    /// Its place in the bootstrap's broadcast log (assigned when stored, never reused).
    pub seq: u64,
    /// The device that published it (peer id bytes, the gossipsub source).
    #[serde(with = "serde_bytes")]
    pub from_device: Vec<u8>,
    /// When the bootstrap stored it (unix ms).
    pub stored_at: u64,
    /// The message as published (with its author's certificate, if any).
    pub message: ChatMessage,
}

/// An account's settings: the same on every device of the account, kept by the bootstrap.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AccountSettings {
    /// Grows with every change.
    pub version: u64,
    /// Do-not-disturb: no alerts for any message.
    pub dnd: bool,
    /// Conversations without alerts (at most [`MAX_MUTED`]).
    pub muted: Vec<String>,
    /// Blocked users (`user:x`) and groups (`group:y`), at most [`MAX_BLOCKED`].
    pub blocked: Vec<String>,
}

/// A bootstrap's signature that a device (peer id) belongs to a user. Any peer can check it with
/// the bootstrap's public key, which its peer id contains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCert {
    /// The account.
    pub user: String,
    /// The device's peer id (its multihash bytes).
    #[serde(with = "serde_bytes")]
    pub device: Vec<u8>,
    /// When it was issued (unix ms, the bootstrap's clock).
    pub issued_at: u64,
    /// The issuing bootstrap's peer id (multihash bytes).
    #[serde(with = "serde_bytes")]
    pub issuer: Vec<u8>,
    /// The issuer's signature over [`DeviceCert::signed_bytes`].
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl DeviceCert {
    /// The exact bytes the issuer signs: a domain tag and every field but the signature.
    pub fn signed_bytes(user: &str, device: &[u8], issued_at: u64, issuer: &[u8]) -> Vec<u8> {
        let fields = (
            "confab-device-cert/1",
            user,
            serde_bytes::Bytes::new(device),
            issued_at,
            serde_bytes::Bytes::new(issuer),
        );
        // Encoding a tuple of strings, bytes and integers into a Vec cannot fail.
        cbor4ii::serde::to_vec(Vec::new(), &fields).unwrap_or_default()
    }

    /// The bytes this certificate's signature must cover.
    pub fn to_be_signed(&self) -> Vec<u8> {
        Self::signed_bytes(&self.user, &self.device, self.issued_at, &self.issuer)
    }
}

/// A user's public profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// The username.
    pub user: String,
    /// Display name (the username when never set).
    pub nickname: String,
    /// Status line.
    pub signature: String,
    /// The avatar's hash, if any.
    pub avatar_hash: Option<ContentHash>,
    /// Whether any device of the user is connected now.
    pub online: bool,
}

/// One search hit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSummary {
    /// The username.
    pub user: String,
    /// Display name.
    pub nickname: String,
    /// Whether any device of the user is connected now.
    pub online: bool,
}

/// One friend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Friend {
    /// The username.
    pub user: String,
    /// Display name.
    pub nickname: String,
    /// Status line.
    pub signature: String,
    /// Whether any device of the friend is connected now.
    pub online: bool,
}

/// Why a bootstrap refused a request. Stable: front-ends map these to messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The username is taken.
    UserExists,
    /// The password is too weak (too short, too common, contains the username).
    WeakPassword,
    /// Wrong username or password (which one is never said).
    BadCredentials,
    /// The username breaks the naming rules.
    InvalidUsername,
    /// This device is not logged in.
    NotLoggedIn,
    /// No such user.
    UnknownUser,
    /// No such thing (avatar, request).
    NotFound,
    /// Too many attempts; retry after the time given.
    Throttled,
    /// Something is over a size limit.
    TooLarge,
    /// The request is malformed or breaks a rule.
    Invalid,
    /// Not allowed (e.g. befriending oneself, a full friends list).
    NotAllowed,
    /// The receiver's mailbox is full; nothing was stored.
    MailboxFull,
    /// The server failed; retry later.
    Internal,
    /// The account's storage quota on the bootstrap (held files) would be exceeded.
    QuotaExceeded,
    /// The state moved on (an MLS commit at an old epoch): fetch what changed and retry.
    Conflict,
    /// A code this version does not know.
    #[serde(other)]
    Unknown,
}

/// The answer to a [`BootstrapRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum BootstrapResponse {
    /// This device is logged in as `user`.
    Session {
        /// The account.
        user: String,
        /// A certificate for this device.
        cert: DeviceCert,
    },
    /// Done, nothing to return.
    Done,
    /// Where a [`BootstrapRequest::FileHold`] stands.
    FileHold {
        /// Where it stands.
        state: HoldState,
    },
    /// A profile.
    Profile(Profile),
    /// An avatar image.
    Avatar(Avatar),
    /// Search results.
    Users {
        /// At most [`MAX_SEARCH_RESULTS`].
        users: Vec<UserSummary>,
    },
    /// Friends and pending requests.
    Friends {
        /// Accepted friends.
        friends: Vec<Friend>,
        /// Users who asked this user and wait for an answer.
        incoming: Vec<String>,
        /// Users this user asked, not answered yet.
        outgoing: Vec<String>,
    },
    /// A deposit is stored.
    Deposited {
        /// Its sequence number in the author's own mailbox.
        seq: u64,
    },
    /// A page of the mailbox.
    Mailbox {
        /// Entries, in sequence order.
        entries: Vec<MailboxEntry>,
        /// The highest sequence number in the mailbox now (a device that has it is up to date).
        last_seq: u64,
    },
    /// Who sent how many.
    Summary(OfflineSummary),
    /// A group's roster.
    Group(Roster),
    /// This account's settings.
    Settings(AccountSettings),
    /// A page of the kept broadcasts.
    Broadcasts {
        /// Oldest first.
        entries: Vec<BroadcastEntry>,
        /// The highest broadcast sequence number now.
        last_seq: u64,
    },
    /// This account's groups.
    GroupList {
        /// At most [`MAX_GROUPS_PER_USER`].
        groups: Vec<GroupVersion>,
    },
    /// The devices of `user` connected now.
    Devices {
        /// Whose.
        user: String,
        /// At most [`MAX_DEVICES`].
        devices: Vec<DeviceInfo>,
    },
    /// How many key packages this device has left at the bootstrap for a suite.
    MlsStock {
        /// Key packages left.
        count: u32,
    },
    /// Key packages handed out by `MlsClaim`.
    MlsClaimed {
        /// One per device that had one.
        packages: Vec<crate::e2e::ClaimedKeyPackage>,
        /// Devices of the user (peer id bytes) that had none for the suite.
        missing: Vec<serde_bytes::ByteBuf>,
    },
    /// This account's encrypted conversations.
    MlsConversations {
        /// Each with its suite, epoch and whether the asking device is a member.
        conversations: Vec<crate::e2e::MlsConversation>,
    },
    /// An encrypted conversation's latest GroupInfo.
    MlsGroupInfo {
        /// The suite's code point.
        suite: u16,
        /// The epoch now.
        epoch: u64,
        /// The TLS-encoded `MLSMessage` holding the GroupInfo.
        #[serde(with = "serde_bytes")]
        group_info: Vec<u8>,
        /// The member devices now.
        members: Vec<crate::e2e::MlsDevice>,
        /// Those of them no longer logged in to their account (logged out, or the account
        /// deleted): any member removes them.
        #[serde(default)]
        retired: Vec<crate::e2e::MlsDevice>,
    },
    /// A commit is stored: the conversation is at `epoch` now.
    MlsCommitted {
        /// The new epoch.
        epoch: u64,
    },
    /// Commits, in order: the first leaves epoch `from` of the request.
    MlsCommits {
        /// TLS-encoded `MLSMessage`s, at most [`crate::e2e::MAX_COMMITS_PAGE`].
        commits: Vec<serde_bytes::ByteBuf>,
        /// The conversation's epoch now.
        epoch: u64,
    },
    /// The Welcomes waiting for this device.
    MlsWelcomes {
        /// At most one per conversation.
        welcomes: Vec<crate::e2e::MlsWelcome>,
    },
    /// Refused.
    Error {
        /// Why (stable).
        code: ErrorCode,
        /// For people.
        message: String,
        /// For [`ErrorCode::Throttled`]: when to try again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// A response kind this version does not know.
    #[serde(other)]
    Unknown,
}

/// A connected device of a user, as its bootstrap sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Its peer id (multihash bytes).
    #[serde(with = "serde_bytes")]
    pub peer: Vec<u8>,
    /// Addresses it listens on (multiaddr bytes), at most [`MAX_DEVICE_ADDRS`].
    pub addrs: Vec<serde_bytes::ByteBuf>,
}

/// How far a message got, as a device of its receiver reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReceiptState {
    /// It reached a device of the receiver.
    Delivered,
    /// The receiver read it.
    Read,
    /// A state this version does not know.
    #[serde(other)]
    Unknown,
}

/// What a mailbox entry holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum MailboxItem {
    /// A message, as its author wrote it.
    Message(ChatMessage),
    /// `from_user` reports that messages of the conversation reached `state`. In the mailbox of
    /// the messages' author (`outgoing: false`) it is about messages the owner sent; in the
    /// reporter's own mailbox (`outgoing: true`) about messages the owner received.
    Receipt {
        /// How far they got.
        state: ReceiptState,
        /// Which (at most [`MAX_RECEIPT_IDS`]).
        ids: Vec<MessageId>,
    },
    /// `from_user` recalled its message `id` in the conversation (its author, or an owner or
    /// admin of the group): every copy shows it as recalled, without its content. The bootstrap
    /// has dropped the stored body.
    Recall {
        /// The message.
        id: MessageId,
        /// Its author (account): the recall applies to that author's message only.
        author: String,
    },
    /// The owner deleted message `id` of the conversation from its history, on every device of
    /// its own (only ever in the owner's own mailbox).
    Delete {
        /// The message.
        id: MessageId,
    },
    /// An item this version does not know (skipped).
    #[serde(other)]
    Unknown,
}

/// One entry in a mailbox, as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxEntry {
    /// Its place in the owner's mailbox: assigned by the bootstrap in the storing transaction,
    /// strictly increasing, never reused. The order of history on every device.
    pub seq: u64,
    /// The conversation as the owner sees it (`user:<the other party>`).
    pub conversation: String,
    /// The author's account.
    pub from_user: String,
    /// The author's device (peer id bytes), from the connection that deposited it.
    #[serde(with = "serde_bytes")]
    pub from_device: Vec<u8>,
    /// Whether the owner wrote it (from this or another of their devices).
    pub outgoing: bool,
    /// When the bootstrap stored it (unix ms).
    pub stored_at: u64,
    /// What it holds.
    pub item: MailboxItem,
}

impl MailboxEntry {
    /// The message it holds, if it holds one.
    pub fn message(&self) -> Option<&ChatMessage> {
        match &self.item {
            MailboxItem::Message(m) => Some(m),
            _ => None,
        }
    }
}

/// Where a file the author asked the bootstrap to hold stands
/// ([`BootstrapRequest::FileHold`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HoldState {
    /// Every receiver has a device online: the file goes peer to peer, nothing is held.
    NotNeeded,
    /// The bootstrap is pulling the file from the author's devices.
    Pulling,
    /// The bootstrap has all of it.
    Held,
    /// A state this version does not know.
    #[serde(other)]
    Unknown,
}

/// Who sent how many messages while a device was away.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OfflineSummary {
    /// `(conversation, count)`, most recent conversation first.
    pub senders: Vec<(String, u32)>,
    /// All of them.
    pub total: u32,
}

/// What a bootstrap pushes to a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Notification {
    /// A friend came online or went offline.
    Presence {
        /// The friend.
        user: String,
        /// Now online?
        online: bool,
    },
    /// `from` asks to be friends.
    FriendRequest {
        /// Who asks.
        from: String,
    },
    /// `user` and this user are now friends.
    FriendAdded {
        /// The new friend.
        user: String,
    },
    /// `user` ended the friendship (or withdrew or declined a request).
    FriendRemoved {
        /// Who.
        user: String,
    },
    /// This device was logged out (from another device, or the account was deleted).
    LoggedOut,
    /// A group this account is in (or was just removed from) changed: its roster is now at
    /// `version` (ask for it with `GroupInfo`; a refusal means this account is no longer in it).
    GroupChanged {
        /// The group.
        group: String,
        /// The roster's version now.
        version: u64,
    },
    /// The account's settings changed (on another device): they are at `version` now.
    SettingsChanged {
        /// Their version now.
        version: u64,
    },
    /// The account's mailbox has new entries, up to `last_seq`: sync.
    Mailbox {
        /// The highest sequence number now.
        last_seq: u64,
    },
    /// The bootstrap has all of file `root`, which this account asked it to hold: its
    /// receivers can fetch it from the bootstrap even when the author's devices are gone.
    FileHeld {
        /// The file.
        root: ContentHash,
    },
    /// An encrypted conversation of this account has a new commit (it is at `epoch` now) or a
    /// Welcome for this device: fetch them.
    Mls {
        /// `group:<id>` or `dm:<a>:<b>`.
        conversation: String,
        /// Its epoch now.
        epoch: u64,
    },
    /// A notification this version does not know.
    #[serde(other)]
    Unknown,
}

/// The acknowledgement of a [`Notification`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyAck {}

/// Why a username is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a username is {MIN_USERNAME_CHARS} to {MAX_USERNAME_CHARS} letters, digits, '.', '_' or '-', starting with a letter or digit"
)]
pub struct InvalidUsername;

/// The canonical form of a username: trimmed, lowercase ASCII, checked against the rules.
/// `Alice` and `alice` are the same account.
pub fn normalize_username(user: &str) -> Result<String, InvalidUsername> {
    let user = user.trim().to_ascii_lowercase();
    let ok_len = (MIN_USERNAME_CHARS..=MAX_USERNAME_CHARS).contains(&user.len());
    let ok_chars = user
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    let ok_start = user
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric());
    if ok_len && ok_chars && ok_start {
        Ok(user)
    } else {
        Err(InvalidUsername)
    }
}

fn check_len(what: &str, len: usize, max: usize) -> Result<(), String> {
    if len > max {
        Err(format!("{what} is {len} bytes, the limit is {max}"))
    } else {
        Ok(())
    }
}

impl Wire for BootstrapRequest {
    const KIND: &'static str = "bootstrap request";
    const VERSION: u16 = 1;
    const MAX_SIZE: usize = MAX_BOOTSTRAP_REQUEST;

    fn validate(&self) -> Result<(), String> {
        use BootstrapRequest::*;
        match self {
            Register { user, password } | Login { user, password } => {
                check_len("username", user.len(), MAX_USERNAME_CHARS * 4)?;
                check_len("password", password.len(), MAX_PASSWORD_BYTES)
            }
            DeleteAccount { password } => check_len("password", password.len(), MAX_PASSWORD_BYTES),
            ProfileSet {
                nickname,
                signature,
                avatar,
            } => {
                check_len(
                    "nickname",
                    nickname.as_ref().map_or(0, String::len),
                    MAX_NAME_BYTES,
                )?;
                check_len(
                    "signature",
                    signature.as_ref().map_or(0, String::len),
                    MAX_SIGNATURE_BYTES,
                )?;
                if let Some(a) = avatar {
                    check_len("avatar", a.bytes.len(), MAX_AVATAR_BYTES)?;
                    check_len("avatar type", a.mime.len(), 64)?;
                }
                Ok(())
            }
            ProfileGet { user }
            | FriendAdd { user }
            | FriendAccept { user }
            | FriendRemove { user } => check_len("username", user.len(), MAX_USERNAME_CHARS * 4),
            SearchUsers { query } => check_len("query", query.len(), MAX_QUERY_BYTES),
            MlsPublish { key_packages, .. } => {
                if key_packages.len() > MAX_KEY_PACKAGES_PER_DEVICE {
                    return Err(format!(
                        "{} key packages, the limit is {MAX_KEY_PACKAGES_PER_DEVICE}",
                        key_packages.len()
                    ));
                }
                for kp in key_packages {
                    check_len("key package", kp.len(), MAX_KEY_PACKAGE_BYTES)?;
                }
                Ok(())
            }
            MlsClaim { user, .. } => check_len("username", user.len(), MAX_USERNAME_CHARS * 4),
            MlsGroupInfo { conversation }
            | MlsCommits { conversation, .. }
            | MlsWelcomeDone { conversation } => {
                check_len("conversation", conversation.len(), MAX_ADDRESS_BYTES)
            }
            MlsCommit {
                conversation,
                commit,
                group_info,
                welcome,
                added,
                removed,
                ..
            } => {
                check_len("conversation", conversation.len(), MAX_ADDRESS_BYTES)?;
                check_len("commit", commit.len(), MAX_MLS_BLOB_BYTES)?;
                check_len("group info", group_info.len(), MAX_MLS_BLOB_BYTES)?;
                check_len(
                    "welcome",
                    welcome.as_ref().map_or(0, Vec::len),
                    MAX_MLS_BLOB_BYTES,
                )?;
                if added.len() + removed.len() > MAX_COMMIT_DEVICES {
                    return Err(format!(
                        "a commit changes {} devices, the limit is {MAX_COMMIT_DEVICES}",
                        added.len() + removed.len()
                    ));
                }
                for d in added.iter().chain(removed) {
                    check_len("username", d.user.len(), MAX_USERNAME_CHARS * 4)?;
                    check_len("device", d.device.len(), 64)?;
                }
                Ok(())
            }
            Deposit { to, message } => {
                check_len("username", to.len(), MAX_USERNAME_CHARS * 4)?;
                message.validate().map_err(|e| e.to_string())
            }
            Receipt { to, ids, .. } => {
                check_len("username", to.len(), MAX_USERNAME_CHARS * 4)?;
                if ids.is_empty() || ids.len() > MAX_RECEIPT_IDS {
                    return Err(format!(
                        "a receipt names 1 to {MAX_RECEIPT_IDS} messages, not {}",
                        ids.len()
                    ));
                }
                Ok(())
            }
            Devices { user } => check_len("username", user.len(), MAX_USERNAME_CHARS * 4),
            GroupCreate { name, members } => {
                check_len("group name", name.len(), MAX_NAME_BYTES)?;
                if members.len() >= MAX_GROUP_MEMBERS {
                    return Err(format!(
                        "a group has at most {MAX_GROUP_MEMBERS} members, not {}",
                        members.len() + 1
                    ));
                }
                members
                    .iter()
                    .try_for_each(|m| check_len("username", m.len(), MAX_USERNAME_CHARS * 4))
            }
            GroupInvite { group, user }
            | GroupRemove { group, user }
            | GroupSetRole { group, user, .. } => {
                check_len("group id", group.len(), 64)?;
                check_len("username", user.len(), MAX_USERNAME_CHARS * 4)
            }
            GroupRename { group, name } => {
                check_len("group id", group.len(), 64)?;
                check_len("group name", name.len(), MAX_NAME_BYTES)
            }
            GroupLeave { group } | GroupInfo { group } => check_len("group id", group.len(), 64),
            GroupPost { group, message } => {
                check_len("group id", group.len(), 64)?;
                message.validate().map_err(|e| e.to_string())
            }
            Session
            | Logout
            | AvatarGet { .. }
            | Friends
            | Sync { .. }
            | Summary { .. }
            | Groups
            | Settings
            | Broadcasts { .. }
            | SetDnd { .. }
            | FileReceived { .. }
            | MlsConversations
            | MlsWelcomes
            | Unknown => Ok(()),
            Recall {
                conversation,
                author,
                ..
            } => {
                check_len("conversation", conversation.len(), MAX_ADDRESS_BYTES)?;
                check_len("username", author.len(), MAX_USERNAME_CHARS * 4)
            }
            Delete { conversation, .. } | FileHold { conversation, .. } => {
                check_len("conversation", conversation.len(), MAX_ADDRESS_BYTES)
            }
            SetMuted { conversation, .. } => {
                check_len("conversation", conversation.len(), MAX_ADDRESS_BYTES)
            }
            SetBlocked { target, .. } => check_len("target", target.len(), MAX_ADDRESS_BYTES),
        }
    }
}

impl Wire for BootstrapResponse {
    const KIND: &'static str = "bootstrap response";
    const VERSION: u16 = 1;
    const MAX_SIZE: usize = MAX_BOOTSTRAP_RESPONSE;
}

impl Wire for Notification {
    const KIND: &'static str = "notification";
    const VERSION: u16 = 1;
    const MAX_SIZE: usize = MAX_NOTIFY_FRAME;
}

impl Wire for NotifyAck {
    const KIND: &'static str = "notification ack";
    const VERSION: u16 = 1;
    const MAX_SIZE: usize = 64;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_hold_frames_round_trip() {
        use crate::codec::{decode, encode};
        let root = ContentHash([4; 32]);
        for request in [
            BootstrapRequest::FileHold {
                conversation: "user:bob".into(),
                id: MessageId::random(),
                root,
                size: 7,
            },
            BootstrapRequest::FileReceived { root },
        ] {
            assert_eq!(
                decode::<BootstrapRequest>(&encode(&request).unwrap()).unwrap(),
                request
            );
        }
        for state in [HoldState::NotNeeded, HoldState::Pulling, HoldState::Held] {
            let response = BootstrapResponse::FileHold { state };
            assert_eq!(
                decode::<BootstrapResponse>(&encode(&response).unwrap()).unwrap(),
                response
            );
        }
        let note = Notification::FileHeld { root };
        assert_eq!(
            decode::<Notification>(&encode(&note).unwrap()).unwrap(),
            note
        );
    }

    #[test]
    fn usernames_are_normalised_and_checked() {
        assert_eq!(normalize_username("  Alice.B ").unwrap(), "alice.b");
        for bad in ["al", "-alice", "al ice", "ålice", &"a".repeat(33), ""] {
            assert!(normalize_username(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn certificates_sign_every_field() {
        let a = DeviceCert::signed_bytes("alice", b"dev", 1, b"boot");
        assert_ne!(a, DeviceCert::signed_bytes("alicf", b"dev", 1, b"boot"));
        assert_ne!(a, DeviceCert::signed_bytes("alice", b"deu", 1, b"boot"));
        assert_ne!(a, DeviceCert::signed_bytes("alice", b"dev", 2, b"boot"));
        assert_ne!(a, DeviceCert::signed_bytes("alice", b"dev", 1, b"boos"));
    }
}
