//! `confab rpc`: JSON-RPC 2.0 over a line-oriented byte stream (stdin/stdout in the binary).
//!
//! One JSON object per line in each direction. Requests are served concurrently (answers carry
//! the request's `id`); node events are sent as notifications. The contract — methods, objects,
//! notifications and error codes — is `docs/rpc.md`; this module is its only implementation.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio::task::JoinSet;

use crate::address::Conversation;
use crate::client::{
    Client, DeliveryState, Friends, Group, Message, PeerInfo, Profile, Settings, WhoAmI,
};
use crate::error::{
    AvatarError, DeleteAccountError, DialError, FriendError, GroupError, LoginError, LogoutError,
    ProfileGetError, ProfileSetError, QueryError, RecallError, RegisterError, SearchError,
    SendError, SettingsError,
};
use crate::event::Event;
use confab_protocol::MessageId;
use confab_protocol::group::Role;

/// Stable error codes of the interface (see `docs/rpc.md`).
pub mod codes {
    /// The line is not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// The JSON is not a JSON-RPC 2.0 request.
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method (or not available in this version).
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Missing or ill-typed parameters.
    pub const INVALID_PARAMS: i64 = -32602;
    /// A failure inside the node that is not the caller's fault.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// A conversation address or multiaddr that does not parse.
    pub const BAD_ADDRESS: i64 = -32010;
    /// A peer or address could not be reached.
    pub const UNREACHABLE: i64 = -32011;
    /// The message breaks a rule (empty, too long, to oneself).
    pub const INVALID_MESSAGE: i64 = -32012;
    /// The operation needs a bootstrap account and this device is not logged in.
    pub const NOT_LOGGED_IN: i64 = -32020;
    /// Wrong username or password (one code for both, so nobody learns which accounts exist).
    pub const BAD_CREDENTIALS: i64 = -32021;
    /// The username is taken (usernames ignore case).
    pub const USER_EXISTS: i64 = -32022;
    /// The password is too weak.
    pub const WEAK_PASSWORD: i64 = -32023;
    /// A file given as a parameter cannot be read (or is not what it must be, e.g. an image).
    pub const FILE_NOT_FOUND: i64 = -32027;
    /// Too much is queued already; retry later.
    pub const BUSY: i64 = -32030;
    /// The local store failed (disk full, I/O error).
    pub const STORAGE: i64 = -32040;
    /// The node is shutting down.
    pub const NODE_STOPPED: i64 = -32050;
    /// No bootstrap is reachable (none configured or found, or none connected in time).
    pub const NO_BOOTSTRAP: i64 = -32060;
    /// Too many attempts; `data.retry_after_ms` says when to try again.
    pub const THROTTLED: i64 = -32061;
    /// The username breaks the naming rules.
    pub const INVALID_USERNAME: i64 = -32062;
    /// No such user.
    pub const UNKNOWN_USER: i64 = -32063;
    /// End-to-end encryption failed or was refused (a fixed suite, not joined yet, not logged
    /// in); nothing was sent.
    pub const ENCRYPTION: i64 = -32070;
    /// No such thing (an avatar, a friend request).
    pub const NOT_FOUND: i64 = -32064;
    /// Something is over a size limit (an avatar, a nickname).
    pub const TOO_LARGE: i64 = -32065;
    /// Not allowed (befriending oneself, a full friends list).
    pub const NOT_ALLOWED: i64 = -32066;
    /// The bootstrap failed, or the request to it was lost; retry later.
    pub const BOOTSTRAP_FAILED: i64 = -32067;
}

/// The longest request line accepted; a longer one is answered with an error and skipped.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;
/// Requests served at the same time; further lines wait.
pub const MAX_CONCURRENT_REQUESTS: usize = 64;
/// Lines buffered towards the output.
const OUTPUT_QUEUE: usize = 1024;
/// The default page of `history`.
const DEFAULT_HISTORY_LIMIT: usize = 1000;

/// Methods of the contract that later versions implement; until then they answer
/// [`codes::METHOD_NOT_FOUND`] with a message that says so.
const NOT_YET: &[&str] = &[];

/// An error answer.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// One of [`codes`].
    pub code: i64,
    /// For people.
    pub message: String,
    /// Details for programs (e.g. `{"retry_after_ms": 1500}` with [`codes::THROTTLED`]).
    pub data: Option<Value>,
}

impl RpcError {
    fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    fn throttled(message: String, retry_after_ms: u64) -> Self {
        Self {
            code: codes::THROTTLED,
            message,
            data: Some(json!({ "retry_after_ms": retry_after_ms })),
        }
    }
}

/// The RPC form of the errors every account operation shares. Each `From` impl below lists the
/// variants particular to its operation, then defers to this.
macro_rules! account_error_to_rpc {
    ($ty:ident { $($arms:tt)* }) => {
        impl From<$ty> for RpcError {
            fn from(e: $ty) -> Self {
                let message = e.to_string();
                #[allow(unreachable_patterns)]
                let code = match e {
                    $($arms)*
                    $ty::Throttled { retry_after_ms } => {
                        return RpcError::throttled(message, retry_after_ms);
                    }
                    $ty::NoBootstrap => codes::NO_BOOTSTRAP,
                    $ty::Bootstrap(_) => codes::BOOTSTRAP_FAILED,
                    _ => codes::NODE_STOPPED,
                };
                RpcError::new(code, message)
            }
        }
    };
}

account_error_to_rpc!(RegisterError {
    RegisterError::InvalidUsername(_) => codes::INVALID_USERNAME,
    RegisterError::WeakPassword(_) => codes::WEAK_PASSWORD,
    RegisterError::UserExists => codes::USER_EXISTS,
    RegisterError::Invalid(_) => codes::INVALID_PARAMS,
});
account_error_to_rpc!(LoginError {
    LoginError::BadCredentials => codes::BAD_CREDENTIALS,
    LoginError::Invalid(_) => codes::INVALID_PARAMS,
});
account_error_to_rpc!(LogoutError {
    LogoutError::NotLoggedIn => codes::NOT_LOGGED_IN,
});
account_error_to_rpc!(DeleteAccountError {
    DeleteAccountError::NotLoggedIn => codes::NOT_LOGGED_IN,
    DeleteAccountError::BadCredentials => codes::BAD_CREDENTIALS,
});
account_error_to_rpc!(ProfileSetError {
    ProfileSetError::NotLoggedIn => codes::NOT_LOGGED_IN,
    ProfileSetError::Avatar { .. } => codes::FILE_NOT_FOUND,
    ProfileSetError::TooLarge(_) => codes::TOO_LARGE,
    ProfileSetError::Invalid(_) => codes::INVALID_PARAMS,
});
account_error_to_rpc!(ProfileGetError {
    ProfileGetError::NotLoggedIn => codes::NOT_LOGGED_IN,
    ProfileGetError::UnknownUser(_) => codes::UNKNOWN_USER,
});
account_error_to_rpc!(AvatarError {
    AvatarError::NotLoggedIn => codes::NOT_LOGGED_IN,
    AvatarError::NotFound => codes::NOT_FOUND,
});
account_error_to_rpc!(SearchError {
    SearchError::NotLoggedIn => codes::NOT_LOGGED_IN,
    SearchError::Invalid(_) => codes::INVALID_PARAMS,
});
account_error_to_rpc!(FriendError {
    FriendError::NotLoggedIn => codes::NOT_LOGGED_IN,
    FriendError::UnknownUser(_) => codes::UNKNOWN_USER,
    FriendError::NotFound(_) => codes::NOT_FOUND,
    FriendError::NotAllowed(_) => codes::NOT_ALLOWED,
});

account_error_to_rpc!(GroupError {
    GroupError::NotLoggedIn => codes::NOT_LOGGED_IN,
    GroupError::UnknownUser(_) => codes::UNKNOWN_USER,
    GroupError::NotFound(_) => codes::NOT_FOUND,
    GroupError::NotAllowed(_) => codes::NOT_ALLOWED,
    GroupError::Invalid(_) => codes::INVALID_PARAMS,
});

account_error_to_rpc!(RecallError {
    RecallError::NotFound(_) => codes::NOT_FOUND,
    RecallError::NotAllowed(_) => codes::NOT_ALLOWED,
    RecallError::NotLoggedIn => codes::NOT_LOGGED_IN,
    RecallError::Unreachable(_) => codes::UNREACHABLE,
    RecallError::Store(_) => codes::STORAGE,
});
account_error_to_rpc!(SettingsError {
    SettingsError::NotLoggedIn => codes::NOT_LOGGED_IN,
    SettingsError::Invalid(_) => codes::INVALID_PARAMS,
});

impl From<QueryError> for RpcError {
    fn from(e: QueryError) -> Self {
        let code = match e {
            QueryError::Store(_) => codes::STORAGE,
            _ => codes::NODE_STOPPED,
        };
        RpcError::new(code, e.to_string())
    }
}

impl From<SendError> for RpcError {
    fn from(e: SendError) -> Self {
        let code = match &e {
            SendError::BadAddress(_) => codes::BAD_ADDRESS,
            SendError::NotLoggedIn(_) => codes::NOT_LOGGED_IN,
            SendError::Unsupported(_) => codes::METHOD_NOT_FOUND,
            SendError::Invalid(_) => codes::INVALID_MESSAGE,
            SendError::File(_) => codes::FILE_NOT_FOUND,
            SendError::NotMember(_) => codes::NOT_FOUND,
            SendError::QueueFull(_) | SendError::OutboxFull(_) => codes::BUSY,
            SendError::Store(_) => codes::STORAGE,
            SendError::Encryption(_) => codes::ENCRYPTION,
            _ => codes::NODE_STOPPED,
        };
        RpcError::new(code, e.to_string())
    }
}

/// A cipher suite by its name or code point.
fn parse_suite(name: &str) -> Result<confab_protocol::e2e::Suite, RpcError> {
    confab_protocol::e2e::Suite::parse(name).ok_or_else(|| {
        let allowed: Vec<&str> = confab_protocol::e2e::Suite::ALL
            .iter()
            .map(|s| s.name())
            .collect();
        RpcError::new(
            codes::INVALID_PARAMS,
            format!(
                "{name} is not an allowed cipher suite ({})",
                allowed.join(", ")
            ),
        )
    })
}

fn e2e_error(e: crate::E2eError) -> RpcError {
    let code = match &e {
        crate::E2eError::NotLoggedIn => codes::NOT_LOGGED_IN,
        crate::E2eError::Unsupported(_) => codes::BAD_ADDRESS,
        crate::E2eError::NodeStopped => codes::NODE_STOPPED,
        crate::E2eError::Call(_) => codes::NO_BOOTSTRAP,
        _ => codes::ENCRYPTION,
    };
    RpcError::new(code, e.to_string())
}

impl From<DialError> for RpcError {
    fn from(e: DialError) -> Self {
        let code = match &e {
            DialError::BadAddress { .. } => codes::BAD_ADDRESS,
            DialError::Unreachable { .. } | DialError::SelfDial => codes::UNREACHABLE,
            _ => codes::NODE_STOPPED,
        };
        RpcError::new(code, e.to_string())
    }
}

/// The JSON form of a message (the contract's message object).
pub fn message_json(m: &Message) -> Value {
    json!({
        "id": m.id.to_string(),
        "conversation": m.conversation.to_string(),
        "from": {"peer_id": m.from.peer_id, "user": m.from.user, "name": m.from.name},
        "sent_at": m.sent_at,
        "text": m.text,
        "attachment": m.attachment.as_deref().map(attachment_json),
        "encrypted": m.encrypted,
        "recalled": m.recalled,
        "notify": m.notify,
    })
}

/// An attachment as the RPC shows it (`hash`: 64 hex digits; `thumbnail`: base64 of a JPEG).
fn attachment_json(a: &confab_protocol::Attachment) -> Value {
    use base64ct::Encoding;
    let kind = match a.kind {
        confab_protocol::AttachmentKind::Image => "image",
        confab_protocol::AttachmentKind::Audio => "audio",
        confab_protocol::AttachmentKind::Video => "video",
        _ => "file",
    };
    json!({
        "name": a.name,
        "size": a.size,
        "mime": a.mime,
        "hash": hex::encode(a.hash.0),
        "kind": kind,
        "width": a.width,
        "height": a.height,
        "duration_ms": a.duration_ms,
        "thumbnail": a.thumbnail.as_deref().map(base64ct::Base64::encode_string),
    })
}

fn peer_json(p: &PeerInfo) -> Value {
    json!({
        "peer_id": p.peer_id,
        "name": p.name,
        "user": p.user,
        "addrs": p.addrs,
        "source": p.source.as_str(),
        "connected": p.connected,
    })
}

fn whoami_json(w: &WhoAmI) -> Value {
    json!({"peer_id": w.peer_id, "name": w.name, "user": w.user, "listen_addrs": w.listen_addrs})
}

fn profile_json(p: &Profile) -> Value {
    json!({
        "user": p.user,
        "nickname": p.nickname,
        "signature": p.signature,
        "avatar_hash": p.avatar_hash.map(|h| h.to_string()),
        "online": p.online,
    })
}

fn friends_json(f: &Friends) -> Value {
    Value::Array(
        f.friends
            .iter()
            .map(|f| {
                json!({
                    "user": f.user,
                    "nickname": f.nickname,
                    "signature": f.signature,
                    "online": f.online,
                })
            })
            .collect(),
    )
}

/// The account's settings as the RPC shows them.
fn settings_json(settings: &Settings) -> Value {
    let list = |l: &[Conversation]| l.iter().map(ToString::to_string).collect::<Vec<_>>();
    json!({
        "dnd": settings.dnd,
        "muted": list(&settings.muted),
        "blocked": list(&settings.blocked),
    })
}

/// A boolean parameter.
fn param_bool(params: &Value, name: &str) -> Result<bool, RpcError> {
    params.get(name).and_then(Value::as_bool).ok_or_else(|| {
        RpcError::new(
            codes::INVALID_PARAMS,
            format!("`{name}` must be true or false"),
        )
    })
}

/// A group as the RPC shows it.
fn group_json(group: &Group) -> Value {
    json!({
        "group": group.id,
        "name": group.name,
        "version": group.version,
        "members": group
            .members
            .iter()
            .map(|m| json!({"user": m.user, "role": m.role.as_str()}))
            .collect::<Vec<_>>(),
    })
}

/// The notification for an event, if it has one.
pub fn event_notification(event: &Event) -> Option<Value> {
    let (method, params) = match event {
        Event::Message(m) => ("message", message_json(m)),
        Event::PeerDiscovered {
            peer_id,
            name,
            source,
        } => (
            "peer_discovered",
            json!({"peer_id": peer_id, "name": name, "source": source.as_str()}),
        ),
        Event::PeerLost { peer_id } => ("peer_lost", json!({ "peer_id": peer_id })),
        Event::Delivery { id, state } if *state != DeliveryState::Pending => (
            "delivery",
            json!({"id": id.to_string(), "state": state.as_str()}),
        ),
        Event::Presence { user, online } => ("presence", json!({"user": user, "online": online})),
        Event::FriendRequest { from } => ("friend_request", json!({ "from": from })),
        Event::FriendAdded { user } => ("friend_added", json!({ "user": user })),
        Event::FriendRemoved { user } => ("friend_removed", json!({ "user": user })),
        Event::LoggedOut => ("logged_out", json!({})),
        Event::Settings(settings) => ("settings", settings_json(settings)),
        Event::TransferProgress { id, done, total } => (
            "transfer_progress",
            json!({"id": id.to_string(), "done": done, "total": total}),
        ),
        Event::TransferComplete { id, path } => (
            "transfer_complete",
            json!({"id": id.to_string(), "path": path.display().to_string()}),
        ),
        Event::TransferFailed { id, error } => (
            "transfer_failed",
            json!({"id": id.to_string(), "error": error}),
        ),
        Event::FileHold { id, state, error } => (
            "file_hold",
            json!({"id": id.to_string(), "state": state.as_str(), "error": error}),
        ),
        Event::Recalled { id, conversation } => (
            "recalled",
            json!({"id": id.to_string(), "conversation": conversation.to_string()}),
        ),
        Event::Deleted { id, conversation } => (
            "deleted",
            json!({"id": id.to_string(), "conversation": conversation.to_string()}),
        ),
        Event::GroupInvited { group, name } => {
            ("group_invited", json!({"group": group, "name": name}))
        }
        Event::GroupMemberAdded { group, user } => {
            ("group_member_added", json!({"group": group, "user": user}))
        }
        Event::GroupMemberRemoved { group, user } => (
            "group_member_removed",
            json!({"group": group, "user": user}),
        ),
        Event::GroupUpdated { group, name } => {
            ("group_updated", json!({"group": group, "name": name}))
        }
        Event::Encryption {
            conversation,
            suite,
            epoch,
        } => (
            "encryption",
            json!({"conversation": conversation.to_string(), "suite": suite, "epoch": epoch}),
        ),
        Event::OfflineSummary { senders, total } => {
            // An object keyed by conversation (the contract's form); a conversation listed twice
            // adds up.
            let mut by_conversation = serde_json::Map::new();
            for (conversation, n) in senders {
                let entry = by_conversation
                    .entry(conversation.to_string())
                    .or_insert(json!(0));
                *entry = json!(entry.as_u64().unwrap_or(0) + u64::from(*n));
            }
            (
                "offline_summary",
                json!({"senders": by_conversation, "total": total}),
            )
        }
        _ => return None,
    };
    Some(json!({"jsonrpc": "2.0", "method": method, "params": params}))
}

fn param_str<'a>(params: &'a Value, name: &str) -> Result<&'a str, RpcError> {
    params.get(name).and_then(Value::as_str).ok_or_else(|| {
        RpcError::new(
            codes::INVALID_PARAMS,
            format!("`{name}` (a string) is required"),
        )
    })
}

/// An optional string parameter: absent or null is `None`; anything but a string is an error.
fn param_opt_str<'a>(params: &'a Value, name: &str) -> Result<Option<&'a str>, RpcError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(RpcError::new(
            codes::INVALID_PARAMS,
            format!("`{name}` must be a string"),
        )),
    }
}

fn parse_conversation(text: &str) -> Result<Conversation, RpcError> {
    text.parse()
        .map_err(|e: crate::address::AddressError| RpcError::new(codes::BAD_ADDRESS, e.to_string()))
}

/// Runs one method. `shutdown` is handled by [`serve`] itself.
pub async fn call(client: &Client, method: &str, params: &Value) -> Result<Value, RpcError> {
    if !(params.is_object() || params.is_null()) {
        return Err(RpcError::new(
            codes::INVALID_PARAMS,
            "params must be an object (by name)",
        ));
    }
    match method {
        "whoami" => Ok(whoami_json(&client.whoami().await?)),
        "peers" => Ok(Value::Array(
            client.peers().await?.iter().map(peer_json).collect(),
        )),
        "dial" => {
            let addr = param_str(params, "addr")?;
            Ok(json!({ "peer_id": client.dial(addr).await? }))
        }
        "send" => {
            let to = parse_conversation(param_str(params, "to")?)?;
            // `encrypt`: true (the conversation's suite, or the default one to start it) or a
            // suite's name; the conversation is encrypted first if it is not yet.
            let suite = match params.get("encrypt") {
                None | Some(Value::Null) | Some(Value::Bool(false)) => None,
                Some(Value::Bool(true)) => Some(None),
                Some(Value::String(name)) => Some(Some(parse_suite(name)?)),
                Some(_) => {
                    return Err(RpcError::new(
                        codes::INVALID_PARAMS,
                        "`encrypt` is true, false or a cipher suite's name",
                    ));
                }
            };
            if let Some(suite) = suite {
                let current = client.encryption(&to).await?.map(|e| e.suite);
                match (current, suite) {
                    (Some(_), None) => {}
                    (Some(c), Some(s)) if c == s => {}
                    (_, wanted) => {
                        client.encrypt(&to, wanted).await.map_err(e2e_error)?;
                    }
                }
            }
            let id = match param_opt_str(params, "file")? {
                Some(path) => {
                    let caption = param_opt_str(params, "text")?;
                    client
                        .send_file(&to, std::path::Path::new(path), caption)
                        .await?
                }
                None => client.send(&to, param_str(params, "text")?).await?,
            };
            Ok(json!({ "id": id.to_string() }))
        }
        "encrypt" => {
            let to = parse_conversation(param_str(params, "conversation")?)?;
            let suite = param_opt_str(params, "suite")?
                .map(parse_suite)
                .transpose()?;
            let suite = client.encrypt(&to, suite).await.map_err(e2e_error)?;
            Ok(json!({ "suite": suite.name() }))
        }
        "encryption" => {
            let to = parse_conversation(param_str(params, "conversation")?)?;
            Ok(match client.encryption(&to).await? {
                None => Value::Null,
                Some(e) => json!({
                    "suite": e.suite.name(),
                    "epoch": e.epoch,
                    "devices": e.devices.iter().map(|(user, peer_id)| json!({
                        "user": user, "peer_id": peer_id,
                    })).collect::<Vec<_>>(),
                }),
            })
        }
        "history" => {
            let with = parse_conversation(param_str(params, "with")?)?;
            let limit = match params.get("limit") {
                None | Some(Value::Null) => DEFAULT_HISTORY_LIMIT,
                Some(v) => v.as_u64().ok_or_else(|| {
                    RpcError::new(
                        codes::INVALID_PARAMS,
                        "`limit` must be a non-negative integer",
                    )
                })? as usize,
            };
            let messages = client.history(&with, limit).await?;
            Ok(Value::Array(messages.iter().map(message_json).collect()))
        }
        "mark_read" => {
            let conversation = parse_conversation(param_str(params, "conversation")?)?;
            Ok(json!({ "marked": client.mark_read(&conversation).await? }))
        }
        "register" => {
            let (user, password) = (param_str(params, "user")?, param_str(params, "password")?);
            Ok(json!({ "user": client.register(user, password).await? }))
        }
        "login" => {
            let (user, password) = (param_str(params, "user")?, param_str(params, "password")?);
            Ok(json!({ "user": client.login(user, password).await? }))
        }
        "logout" => {
            client.logout().await?;
            Ok(json!({}))
        }
        "delete_account" => {
            client
                .delete_account(param_str(params, "password")?)
                .await?;
            Ok(json!({}))
        }
        "profile_set" => {
            let nickname = param_opt_str(params, "nickname")?.map(str::to_owned);
            let signature = param_opt_str(params, "signature")?.map(str::to_owned);
            let avatar = param_opt_str(params, "avatar")?.map(PathBuf::from);
            client.profile_set(nickname, signature, avatar).await?;
            Ok(json!({}))
        }
        "profile_get" => {
            let profile = client.profile_get(param_str(params, "user")?).await?;
            Ok(profile_json(&profile))
        }
        "search_users" => {
            let users = client.search_users(param_str(params, "query")?).await?;
            Ok(Value::Array(
                users
                    .iter()
                    .map(|u| json!({"user": u.user, "nickname": u.nickname, "online": u.online}))
                    .collect(),
            ))
        }
        "friend_add" => {
            client.friend_add(param_str(params, "user")?).await?;
            Ok(json!({}))
        }
        "friend_accept" => {
            client.friend_accept(param_str(params, "user")?).await?;
            Ok(json!({}))
        }
        "friend_remove" => {
            client.friend_remove(param_str(params, "user")?).await?;
            Ok(json!({}))
        }
        "friends" => Ok(friends_json(&client.friends().await?)),
        "friend_requests" => {
            let friends = client.friends().await?;
            Ok(json!({"incoming": friends.incoming, "outgoing": friends.outgoing}))
        }
        "fetch_file" => {
            let text = param_str(params, "id")?;
            let id: MessageId = text
                .parse()
                .map_err(|_| RpcError::new(codes::INVALID_PARAMS, "`id` must be 32 hex digits"))?;
            let dest = param_str(params, "dest")?;
            let path = client
                .fetch_file(id, std::path::Path::new(dest))
                .await
                .map_err(|e| {
                    let code = match &e {
                        crate::error::FetchError::NotFound(_) => codes::NOT_FOUND,
                        crate::error::FetchError::NodeStopped => codes::NODE_STOPPED,
                        _ => codes::STORAGE,
                    };
                    RpcError::new(code, e.to_string())
                })?;
            Ok(json!({ "path": path.display().to_string() }))
        }
        "recall" | "delete" => {
            let text = param_str(params, "id")?;
            let id: MessageId = text
                .parse()
                .map_err(|_| RpcError::new(codes::INVALID_PARAMS, "`id` must be 32 hex digits"))?;
            if method == "recall" {
                client.recall(id).await?;
            } else {
                client.delete(id).await?;
            }
            Ok(json!({}))
        }
        "dnd" => {
            let enabled = param_bool(params, "enabled")?;
            Ok(settings_json(&client.set_dnd(enabled).await?))
        }
        "mute" => {
            let conversation = parse_conversation(param_str(params, "conversation")?)?;
            let muted = param_bool(params, "muted")?;
            Ok(settings_json(
                &client.set_muted(&conversation, muted).await?,
            ))
        }
        "block" | "unblock" => {
            let target = parse_conversation(param_str(params, "target")?)?;
            let settings = client.set_blocked(&target, method == "block").await?;
            Ok(settings_json(&settings))
        }
        "blocked" => Ok(settings_json(&client.settings().await?)["blocked"].clone()),
        "settings" => Ok(settings_json(&client.settings().await?)),
        "group_create" => {
            let name = param_str(params, "name")?;
            let members = match params.get("members") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| {
                        v.as_str().ok_or_else(|| {
                            RpcError::new(codes::INVALID_PARAMS, "`members` must be usernames")
                        })
                    })
                    .collect::<Result<Vec<&str>, RpcError>>()?,
                Some(_) => {
                    return Err(RpcError::new(
                        codes::INVALID_PARAMS,
                        "`members` must be an array of usernames",
                    ));
                }
            };
            let group = client.group_create(name, &members).await?;
            Ok(json!({ "group": group.id, "roster": group_json(&group) }))
        }
        "group_invite" => {
            let (group, user) = (param_str(params, "group")?, param_str(params, "user")?);
            Ok(group_json(&client.group_invite(group, user).await?))
        }
        "group_remove" => {
            let (group, user) = (param_str(params, "group")?, param_str(params, "user")?);
            Ok(group_json(&client.group_remove(group, user).await?))
        }
        "group_set_role" => {
            let (group, user) = (param_str(params, "group")?, param_str(params, "user")?);
            let role = match param_str(params, "role")? {
                "admin" => Role::Admin,
                "member" => Role::Member,
                _ => {
                    return Err(RpcError::new(
                        codes::INVALID_PARAMS,
                        "`role` must be \"admin\" or \"member\"",
                    ));
                }
            };
            Ok(group_json(&client.group_set_role(group, user, role).await?))
        }
        "group_rename" => {
            let (group, name) = (param_str(params, "group")?, param_str(params, "name")?);
            Ok(group_json(&client.group_rename(group, name).await?))
        }
        "group_leave" => {
            client.group_leave(param_str(params, "group")?).await?;
            Ok(json!({}))
        }
        "groups" => {
            let me = client.whoami().await?.user;
            let groups = client.groups().await?;
            Ok(Value::Array(
                groups
                    .iter()
                    .map(|g| {
                        let role = me.as_deref().and_then(|u| g.role_of(u));
                        json!({
                            "group": g.id,
                            "name": g.name,
                            "role": role.map(Role::as_str),
                            "members": g.members.len(),
                        })
                    })
                    .collect(),
            ))
        }
        "group_members" => {
            let group = param_str(params, "group")?;
            let groups = client.groups().await?;
            let found = groups.iter().find(|g| g.id == group).ok_or_else(|| {
                RpcError::new(codes::NOT_FOUND, format!("not a member of group {group}"))
            })?;
            Ok(group_json(found)["members"].clone())
        }
        m if NOT_YET.contains(&m) => Err(RpcError::new(
            codes::METHOD_NOT_FOUND,
            format!("method `{m}` is not available in this version"),
        )),
        m => Err(RpcError::new(
            codes::METHOD_NOT_FOUND,
            format!("no method `{}`", m.chars().take(64).collect::<String>()),
        )),
    }
}

fn response(id: Value, result: Result<Value, RpcError>) -> Value {
    match result {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(e) => {
            let mut error = json!({"code": e.code, "message": e.message});
            if let Some(data) = e.data {
                error["data"] = data;
            }
            json!({"jsonrpc": "2.0", "id": id, "error": error})
        }
    }
}

/// A parsed request line.
enum Parsed {
    Call {
        id: Option<Value>,
        method: String,
        params: Value,
    },
    Bad(Value),
}

fn parse_line(line: &[u8]) -> Parsed {
    let value: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => {
            return Parsed::Bad(response(
                Value::Null,
                Err(RpcError::new(
                    codes::PARSE_ERROR,
                    format!("parse error: {e}"),
                )),
            ));
        }
    };
    let id = value.get("id").cloned();
    let valid_id = matches!(
        id,
        None | Some(Value::Null | Value::Number(_) | Value::String(_))
    );
    let method = value.get("method").and_then(Value::as_str);
    match (
        value.get("jsonrpc").and_then(Value::as_str),
        method,
        valid_id,
    ) {
        (Some("2.0"), Some(method), true) => Parsed::Call {
            id,
            method: method.to_owned(),
            params: value.get("params").cloned().unwrap_or(Value::Null),
        },
        _ => Parsed::Bad(response(
            if valid_id {
                id.unwrap_or(Value::Null)
            } else {
                Value::Null
            },
            Err(RpcError::new(
                codes::INVALID_REQUEST,
                "not a JSON-RPC 2.0 request (needs \"jsonrpc\": \"2.0\" and a string \"method\")",
            )),
        )),
    }
}

/// Reads one line of at most [`MAX_LINE_BYTES`]. `Ok(None)` at end of input; `Ok(Some(Err(())))`
/// for an oversized line, whose rest is skipped.
async fn read_line<R: AsyncBufRead + Unpin>(
    input: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Result<(), ()>>> {
    buf.clear();
    let n = (&mut *input)
        .take(MAX_LINE_BYTES as u64 + 1)
        .read_until(b'\n', buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') && buf.len() > MAX_LINE_BYTES {
        // Skip to the end of this line.
        let mut sink = Vec::new();
        loop {
            sink.clear();
            let m = (&mut *input)
                .take(64 * 1024)
                .read_until(b'\n', &mut sink)
                .await?;
            if m == 0 || sink.last() == Some(&b'\n') {
                break;
            }
        }
        return Ok(Some(Err(())));
    }
    Ok(Some(Ok(())))
}

/// Serves JSON-RPC on `input`/`output` until end of input or `shutdown`; then stops the node
/// (flushing its store) and returns.
pub async fn serve<R, W>(client: Client, mut input: R, output: W) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (out_tx, out_rx) = mpsc::channel::<Value>(OUTPUT_QUEUE);
    let writer = tokio::spawn(write_lines(output, out_rx));
    let mut events = client.subscribe();
    let forward_tx = out_tx.clone();
    let forwarder = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => {
                    if let Some(note) = event_notification(&event)
                        && forward_tx.send(note).await.is_err()
                    {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("rpc output fell behind; {n} events were dropped");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });

    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS));
    let mut calls = JoinSet::new();
    let mut line = Vec::new();
    let mut shutdown_id = None;
    loop {
        let read = read_line(&mut input, &mut line).await?;
        let parsed = match read {
            None => break,
            Some(Err(())) => Parsed::Bad(response(
                Value::Null,
                Err(RpcError::new(
                    codes::INVALID_REQUEST,
                    format!("request line longer than {MAX_LINE_BYTES} bytes"),
                )),
            )),
            Some(Ok(())) if line.iter().all(u8::is_ascii_whitespace) => continue,
            Some(Ok(())) => parse_line(&line),
        };
        // Reap finished calls so the set does not grow.
        while calls.try_join_next().is_some() {}
        match parsed {
            Parsed::Bad(answer) => {
                let _ = out_tx.send(answer).await;
            }
            Parsed::Call { id, method, .. } if method == "shutdown" => {
                shutdown_id = Some(id);
                break;
            }
            Parsed::Call { id, method, params } => {
                // The semaphore is never closed, so this only fails if that changes.
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let (client, out) = (client.clone(), out_tx.clone());
                calls.spawn(async move {
                    let result = call(&client, &method, &params).await;
                    if let Some(id) = id {
                        let _ = out.send(response(id, result)).await;
                    }
                    drop(permit);
                });
            }
        }
    }
    // Let calls in progress answer, then stop the node and say so.
    while calls.join_next().await.is_some() {}
    let stopped = client.shutdown().await.map_err(RpcError::from);
    if let Some(Some(id)) = shutdown_id {
        let _ = out_tx.send(response(id, stopped.map(|()| json!({})))).await;
    } else if let Err(e) = stopped {
        tracing::error!("shutdown: {}", e.message);
    }
    forwarder.abort();
    drop(out_tx);
    writer.await.map_err(std::io::Error::other)?
}

async fn write_lines<W: AsyncWrite + Unpin>(
    mut output: W,
    mut lines: mpsc::Receiver<Value>,
) -> std::io::Result<()> {
    while let Some(value) = lines.recv().await {
        let mut bytes = serde_json::to_vec(&value).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        output.write_all(&bytes).await?;
        // Flush when nothing else is waiting, so bursts go out in one write.
        if lines.is_empty() {
            output.flush().await?;
        }
    }
    output.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_classified() {
        assert!(
            matches!(parse_line(b"{oops"), Parsed::Bad(v) if v["error"]["code"] == codes::PARSE_ERROR)
        );
        assert!(
            matches!(parse_line(b"[1,2]"), Parsed::Bad(v) if v["error"]["code"] == codes::INVALID_REQUEST)
        );
        assert!(matches!(
            parse_line(br#"{"jsonrpc":"2.0","id":{"x":1},"method":"peers"}"#),
            Parsed::Bad(v) if v["error"]["code"] == codes::INVALID_REQUEST && v["id"].is_null()
        ));
        assert!(matches!(
            parse_line(br#"{"jsonrpc":"2.0","id":7,"method":"peers"}"#),
            Parsed::Call { id: Some(Value::Number(_)), ref method, .. } if method == "peers"
        ));
    }

    #[test]
    fn optional_string_params_are_checked() {
        let params = json!({"nickname": "Al", "signature": null, "avatar": 3});
        assert_eq!(param_opt_str(&params, "nickname").unwrap(), Some("Al"));
        assert_eq!(param_opt_str(&params, "signature").unwrap(), None);
        assert_eq!(param_opt_str(&params, "missing").unwrap(), None);
        assert_eq!(
            param_opt_str(&params, "avatar").unwrap_err().code,
            codes::INVALID_PARAMS
        );
        assert_eq!(
            param_str(&json!({"user": 1}), "user").unwrap_err().code,
            codes::INVALID_PARAMS
        );
    }

    #[test]
    fn account_errors_have_stable_codes_and_throttling_says_when() {
        let e = RpcError::from(LoginError::Throttled {
            retry_after_ms: 1500,
        });
        assert_eq!(e.code, codes::THROTTLED);
        assert_eq!(e.data, Some(json!({"retry_after_ms": 1500})));
        let answer = response(json!(1), Err(e));
        assert_eq!(answer["error"]["data"]["retry_after_ms"], 1500);
        assert_eq!(
            RpcError::from(LoginError::BadCredentials).code,
            codes::BAD_CREDENTIALS
        );
        assert_eq!(
            RpcError::from(RegisterError::UserExists).code,
            codes::USER_EXISTS
        );
        assert_eq!(
            RpcError::from(RegisterError::WeakPassword("short".into())).code,
            codes::WEAK_PASSWORD
        );
        assert_eq!(
            RpcError::from(FriendError::NoBootstrap).code,
            codes::NO_BOOTSTRAP
        );
        assert_eq!(
            RpcError::from(FriendError::NoBootstrap).message,
            "no bootstrap reachable"
        );
        assert_eq!(
            RpcError::from(ProfileSetError::TooLarge("x".into())).code,
            codes::TOO_LARGE
        );
        assert_eq!(
            RpcError::from(SearchError::NotLoggedIn).code,
            codes::NOT_LOGGED_IN
        );
        assert!(
            response(json!(2), Err(RpcError::from(LogoutError::NotLoggedIn)))["error"]
                .get("data")
                .is_none()
        );
    }

    #[test]
    fn account_events_become_notifications() {
        let note = event_notification(&Event::Presence {
            user: "bob".into(),
            online: true,
        })
        .unwrap();
        assert_eq!(note["method"], "presence");
        assert_eq!(note["params"], json!({"user": "bob", "online": true}));
        let note = event_notification(&Event::FriendRequest { from: "al".into() }).unwrap();
        assert_eq!(note["params"], json!({"from": "al"}));
        assert_eq!(
            event_notification(&Event::LoggedOut).unwrap()["method"],
            "logged_out"
        );
    }

    #[test]
    fn mailbox_events_become_notifications() {
        let note = event_notification(&Event::OfflineSummary {
            senders: vec![
                (Conversation::User("alice".into()), 3),
                (Conversation::User("carol".into()), 1),
            ],
            total: 4,
        })
        .unwrap();
        assert_eq!(note["method"], "offline_summary");
        assert_eq!(
            note["params"],
            json!({"senders": {"user:alice": 3, "user:carol": 1}, "total": 4})
        );
        let id = confab_protocol::MessageId::random();
        let note = event_notification(&Event::Delivery {
            id,
            state: DeliveryState::Failed,
        })
        .unwrap();
        assert_eq!(
            note["params"],
            json!({"id": id.to_string(), "state": "failed"})
        );
        assert_eq!(RpcError::from(SendError::OutboxFull(10)).code, codes::BUSY);
        assert_eq!(
            RpcError::from(SendError::NotLoggedIn("user:bob".into())).code,
            codes::NOT_LOGGED_IN
        );
    }
}
