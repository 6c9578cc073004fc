//! The rules of the bootstrap: accounts, devices, profiles, friends, mailboxes, groups
//! ([`groups`]: who is in them, who may change them, and their messages). Each request
//! becomes an [`Outcome`]: the response, plus [`Effect`]s (notifications, presence changes) that
//! the event loop carries out. Services never touch the network; they take the store and the
//! presence map.
//!
//! A mailbox holds an account's direct messages (both directions, for all its devices) and the
//! receipts about them, as [`MailboxItem`]s:
//! - a deposit stores the message in the receiver's mailbox and the author's own;
//! - the first time a device of the receiver fetches incoming messages (sync), a
//!   [`ReceiptState::Delivered`] receipt goes into each author's mailbox, once per message however
//!   many devices fetch it (a per-owner mark in the store remembers how far that was done);
//! - a `Receipt` request (read receipts) stores the receipt in the authors' mailbox and, marked
//!   outgoing, in the reader's own, so the reader's other devices learn it too.
//!
//! Recalling a message for everyone (its body dropped from every mailbox holding it, a tombstone
//! appended) and deleting one from an account's own history are in [`recall`].
//!
//! `Devices` lists a user's connected devices with their listen addresses, to the user and their
//! friends only, so that a sender can deliver directly and use the mailbox as the fallback.
//!
//! The broadcasts the server keeps (who may broadcast, the rate, the window, `Broadcasts` pages)
//! are in [`broadcasts`].
//!
//! Account settings (do-not-disturb, muted conversations, blocked users and groups) are in
//! [`settings`], with the list of what blocking refuses where: here, deposits, receipts, friend
//! requests and device listings; in [`groups`], creations, invitations and posts.
//!
//! End-to-end encryption is in [`mls`]: the bootstrap is the MLS delivery service (key packages,
//! ordered commits, Welcomes, GroupInfo), and refuses plaintext deposits and group posts into a
//! conversation once it is encrypted.

pub mod broadcasts;
pub mod files;
pub mod groups;
pub mod mls;
pub mod password;
pub mod recall;
pub mod settings;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use confab_protocol::ContentHash;
use confab_protocol::bootstrap::{
    Avatar, BootstrapRequest, BootstrapResponse, DeviceCert, DeviceInfo, ErrorCode, Friend,
    MailboxEntry, MailboxItem, Notification, OfflineSummary, Profile, ReceiptState, UserSummary,
    normalize_username,
};
use confab_protocol::limits::{
    MAX_FRIENDS, MAX_NAME_BYTES, MAX_RECEIPT_IDS, MAX_SEARCH_RESULTS, MAX_SIGNATURE_BYTES,
};
use confab_protocol::limits::{MAX_SUMMARY_SENDERS, MAX_SYNC_PAGE, SYNC_PAGE_BYTES};
use confab_protocol::{ChatMessage, MessageId};
use libp2p::{PeerId, identity::Keypair};

use crate::config::limits::MAX_MAILBOX_ENTRIES;
use crate::presence::Presence;
use crate::store::{Relation, Store, StoreError, Tx, UserRecord};
use password::{Checked, Hasher, Throttle, ThrottleKey};

/// Something the event loop must do after a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Push to every online device of `user`.
    Notify {
        /// The receiver.
        user: String,
        /// What.
        note: Notification,
    },
    /// Push to every online device of `user` but `except` (the device whose request it follows).
    NotifyOthers {
        /// The receiver.
        user: String,
        /// The device left out.
        except: PeerId,
        /// What.
        note: Notification,
    },
    /// Push to one device.
    NotifyDevice {
        /// The device.
        device: PeerId,
        /// What.
        note: Notification,
    },
    /// `device` is now bound to `user` (it logged in).
    DeviceBound {
        /// The device.
        device: PeerId,
        /// The account.
        user: String,
    },
    /// `device` is no longer bound (logout, account deleted).
    DeviceUnbound {
        /// The device.
        device: PeerId,
    },
    /// Pull file `root` (`size` bytes) into the blob store from the online devices of `from`
    /// (a hold was recorded; see [`files`]).
    PullFile {
        /// The file.
        root: ContentHash,
        /// Its declared size.
        size: u64,
        /// The account whose devices have it.
        from: String,
    },
    /// A hold ended: delete file `root` from the blob store (and stop pulling it).
    DropFile {
        /// The file.
        root: ContentHash,
    },
}

/// A response and what follows from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The answer to the requester.
    pub response: BootstrapResponse,
    /// What the event loop does next.
    pub effects: Vec<Effect>,
}

/// A refusal, as a service error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    code: ErrorCode,
    message: String,
    retry_after_ms: Option<u64>,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:?})", self.message, self.code)
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        tracing::error!("store: {e}");
        Refusal::new(
            ErrorCode::Internal,
            "the server's storage failed; try again later",
        )
    }
}

impl From<password::Busy> for Refusal {
    fn from(_: password::Busy) -> Self {
        Refusal {
            code: ErrorCode::Throttled,
            message: "the server is busy checking passwords; try again shortly".into(),
            retry_after_ms: Some(1000),
        }
    }
}

fn bad_credentials() -> Refusal {
    Refusal::new(ErrorCode::BadCredentials, "wrong username or password")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The bootstrap's rules, with what they need. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    store: Store,
    keypair: Arc<Keypair>,
    hasher: Arc<Hasher>,
    throttle: Arc<Mutex<Throttle>>,
    presence: Arc<Presence>,
    /// A hash of a random password: unknown users are checked against it, so that "no such user"
    /// takes as long as "wrong password".
    decoy_phc: Arc<String>,
    /// Entries one mailbox holds at most.
    mailbox_max_entries: u64,
    /// Which kept broadcasts stay.
    broadcast_window: broadcasts::BroadcastWindow,
    /// What is kept for offline receivers.
    file_limits: files::FileLimits,
}

impl Service {
    /// A service over `store`, signing certificates with `keypair`.
    pub async fn new(
        store: Store,
        keypair: Keypair,
        presence: Arc<Presence>,
    ) -> Result<Self, password::Busy> {
        let hasher = Arc::new(Hasher::default());
        let decoy: [u8; 16] = rand_bytes();
        let decoy_phc = hasher.hash(hex_string(&decoy)).await?;
        Ok(Self {
            store,
            keypair: Arc::new(keypair),
            hasher,
            throttle: Arc::new(Mutex::new(Throttle::default())),
            presence,
            decoy_phc: Arc::new(decoy_phc),
            mailbox_max_entries: MAX_MAILBOX_ENTRIES,
            broadcast_window: broadcasts::BroadcastWindow::default(),
            file_limits: files::FileLimits::default(),
        })
    }

    /// The same service with another mailbox size limit.
    pub fn with_mailbox_limit(mut self, max_entries: u64) -> Self {
        self.mailbox_max_entries = max_entries;
        self
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, Refusal> + Send + 'static,
    ) -> Result<T, Refusal> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| Refusal::new(ErrorCode::Internal, format!("internal error: {e}")))?
    }

    fn certificate(&self, user: &str, device: &PeerId) -> DeviceCert {
        let issuer = self.keypair.public().to_peer_id().to_bytes();
        let device = device.to_bytes();
        let issued_at = now_ms();
        let signed = DeviceCert::signed_bytes(user, &device, issued_at, &issuer);
        // Signing with an ed25519 key cannot fail.
        let signature = self.keypair.sign(&signed).unwrap_or_default();
        DeviceCert {
            user: user.to_owned(),
            device,
            issued_at,
            issuer,
            signature,
        }
    }

    fn session(&self, user: String, device: PeerId) -> Outcome {
        Outcome {
            response: BootstrapResponse::Session {
                cert: self.certificate(&user, &device),
                user: user.clone(),
            },
            effects: vec![Effect::DeviceBound { device, user }],
        }
    }

    async fn logged_in(&self, device: PeerId) -> Result<String, Refusal> {
        let key = device.to_base58();
        self.blocking(move |s| s.device_user(&key).map_err(Refusal::from))
            .await?
            .ok_or_else(|| Refusal::new(ErrorCode::NotLoggedIn, "log in first"))
    }

    /// Answers one request from `device` (the authenticated peer), connected from `source`.
    pub async fn handle(
        &self,
        device: PeerId,
        source: Option<IpAddr>,
        request: BootstrapRequest,
    ) -> Outcome {
        let result = match request {
            BootstrapRequest::Register { user, password } => {
                self.register(device, user, password).await
            }
            BootstrapRequest::Login { user, password } => {
                self.login(device, source, user, password).await
            }
            BootstrapRequest::Session => match self.logged_in(device).await {
                Ok(user) => Ok(self.session(user, device)),
                Err(e) => Err(e),
            },
            BootstrapRequest::Logout => self.logout(device).await,
            BootstrapRequest::DeleteAccount { password } => {
                self.delete_account(device, source, password).await
            }
            BootstrapRequest::ProfileSet {
                nickname,
                signature,
                avatar,
            } => self.profile_set(device, nickname, signature, avatar).await,
            BootstrapRequest::ProfileGet { user } => self.profile_get(device, user).await,
            BootstrapRequest::AvatarGet { hash } => self.avatar_get(device, hash).await,
            BootstrapRequest::SearchUsers { query } => self.search(device, query).await,
            BootstrapRequest::FriendAdd { user } => self.friend_add(device, user).await,
            BootstrapRequest::FriendAccept { user } => self.friend_accept(device, user).await,
            BootstrapRequest::FriendRemove { user } => self.friend_remove(device, user).await,
            BootstrapRequest::Friends => self.friends(device).await,
            BootstrapRequest::Deposit { to, message } => self.deposit(device, to, message).await,
            BootstrapRequest::Sync { after, limit } => self.sync(device, after, limit).await,
            BootstrapRequest::Summary { after } => self.summary(device, after).await,
            BootstrapRequest::Receipt { to, state, ids } => {
                self.receipt(device, to, state, ids).await
            }
            BootstrapRequest::Devices { user } => self.devices(device, user).await,
            BootstrapRequest::GroupCreate { name, members } => {
                self.group_create(device, name, members).await
            }
            BootstrapRequest::GroupInvite { group, user } => {
                self.group_invite(device, group, user).await
            }
            BootstrapRequest::GroupRemove { group, user } => {
                self.group_remove(device, group, user).await
            }
            BootstrapRequest::GroupLeave { group } => self.group_leave(device, group).await,
            BootstrapRequest::GroupSetRole { group, user, role } => {
                self.group_set_role(device, group, user, role).await
            }
            BootstrapRequest::GroupRename { group, name } => {
                self.group_rename(device, group, name).await
            }
            BootstrapRequest::Groups => self.groups(device).await,
            BootstrapRequest::GroupInfo { group } => self.group_info(device, group).await,
            BootstrapRequest::GroupPost { group, message } => {
                self.group_post(device, group, message).await
            }
            BootstrapRequest::Recall {
                conversation,
                id,
                author,
            } => self.recall(device, conversation, id, author).await,
            BootstrapRequest::Delete { conversation, id } => {
                self.delete_message(device, conversation, id).await
            }
            BootstrapRequest::Broadcasts { after, limit } => {
                self.broadcasts(device, after, limit).await
            }
            BootstrapRequest::FileHold {
                conversation,
                id,
                root,
                size,
            } => self.file_hold(device, conversation, id, root, size).await,
            BootstrapRequest::FileReceived { root } => self.file_received(device, root).await,
            BootstrapRequest::Settings => self.settings_get(device).await,
            BootstrapRequest::SetDnd { enabled } => self.set_dnd(device, enabled).await,
            BootstrapRequest::SetMuted {
                conversation,
                muted,
            } => self.set_muted(device, conversation, muted).await,
            BootstrapRequest::SetBlocked { target, blocked } => {
                self.set_blocked(device, target, blocked).await
            }
            BootstrapRequest::MlsPublish {
                suite,
                key_packages,
            } => self.mls_publish(device, suite, key_packages).await,
            BootstrapRequest::MlsClaim { user, suite } => self.mls_claim(device, user, suite).await,
            BootstrapRequest::MlsConversations => self.mls_conversations(device).await,
            BootstrapRequest::MlsGroupInfo { conversation } => {
                self.mls_group_info(device, conversation).await
            }
            BootstrapRequest::MlsCommit {
                conversation,
                epoch,
                suite,
                commit,
                group_info,
                welcome,
                added,
                removed,
                external,
            } => {
                let commit = mls::Commit {
                    conversation,
                    epoch,
                    suite,
                    commit,
                    group_info,
                    welcome,
                    added,
                    removed,
                    external,
                };
                self.mls_commit(device, commit).await
            }
            BootstrapRequest::MlsCommits { conversation, from } => {
                self.mls_commits(device, conversation, from).await
            }
            BootstrapRequest::MlsWelcomes => self.mls_welcomes(device).await,
            BootstrapRequest::MlsWelcomeDone { conversation } => {
                self.mls_welcome_done(device, conversation).await
            }
            _ => Err(Refusal::new(
                ErrorCode::Invalid,
                "this server does not know that request",
            )),
        };
        result.unwrap_or_else(|r| Outcome {
            response: BootstrapResponse::Error {
                code: r.code,
                message: r.message,
                retry_after_ms: r.retry_after_ms,
            },
            effects: Vec::new(),
        })
    }

    fn done(effects: Vec<Effect>) -> Result<Outcome, Refusal> {
        Ok(Outcome {
            response: BootstrapResponse::Done,
            effects,
        })
    }

    // ---- accounts --------------------------------------------------------------------------

    async fn register(
        &self,
        device: PeerId,
        user: String,
        password: String,
    ) -> Result<Outcome, Refusal> {
        let user = normalize_username(&user)
            .map_err(|e| Refusal::new(ErrorCode::InvalidUsername, e.to_string()))?;
        password::check_strength(&user, &password)
            .map_err(|e| Refusal::new(ErrorCode::WeakPassword, e.to_string()))?;
        let exists = {
            let user = user.clone();
            self.blocking(move |s| s.read(|tx| Ok::<_, Refusal>(tx.user(&user)?.is_some())))
                .await?
        };
        if exists {
            return Err(Refusal::new(
                ErrorCode::UserExists,
                format!("the username {user} is taken"),
            ));
        }
        let phc = self.hasher.hash(password).await?;
        let record = UserRecord {
            user: user.clone(),
            password_phc: phc,
            created_at: now_ms(),
            nickname: user.clone(),
            signature: String::new(),
            avatar: None,
        };
        let device_key = device.to_base58();
        self.blocking(move |s| {
            s.write(|tx| {
                // Checked again inside the transaction: two registrations may race.
                if tx.user(&record.user)?.is_some() {
                    return Err(Refusal::new(
                        ErrorCode::UserExists,
                        format!("the username {} is taken", record.user),
                    ));
                }
                tx.put_user(&record)?;
                bind(tx, &device_key, &record.user)?;
                Ok(())
            })
        })
        .await?;
        tracing::info!("registered {user} from {device}");
        Ok(self.session(user, device))
    }

    /// Checks a password against the throttle and the stored hash. The same error, after the same
    /// work, whether the user does not exist or the password is wrong.
    async fn check_password(
        &self,
        user: &str,
        source: Option<IpAddr>,
        password: String,
    ) -> Result<(), Refusal> {
        let keys: Vec<ThrottleKey> = std::iter::once(ThrottleKey::Account(user.to_owned()))
            .chain(source.map(ThrottleKey::Source))
            .collect();
        let started = self
            .throttle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_begin(&keys, Instant::now());
        if let Err(wait) = started {
            return Err(Refusal {
                code: ErrorCode::Throttled,
                message: format!("too many attempts; try again in {} s", wait.as_secs() + 1),
                retry_after_ms: Some(wait.as_millis() as u64 + 1),
            });
        }
        let verdict = self.verify_password(user, password).await;
        let checked = match &verdict {
            Ok(true) => Checked::Right,
            Ok(false) => Checked::Wrong,
            Err(_) => Checked::Unchecked,
        };
        self.throttle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .finish(&keys, checked, Instant::now());
        match verdict? {
            true => Ok(()),
            false => Err(bad_credentials()),
        }
    }

    /// Whether `password` is `user`'s; an unknown user costs the same hash and is never right.
    async fn verify_password(&self, user: &str, password: String) -> Result<bool, Refusal> {
        let stored = {
            let user = user.to_owned();
            self.blocking(move |s| s.read(|tx| Ok::<_, Refusal>(tx.user(&user)?)))
                .await?
        };
        let phc = stored.as_ref().map_or_else(
            || self.decoy_phc.as_str().to_owned(),
            |r| r.password_phc.clone(),
        );
        let matches = self.hasher.verify(password, phc).await?;
        Ok(matches && stored.is_some())
    }

    async fn login(
        &self,
        device: PeerId,
        source: Option<IpAddr>,
        user: String,
        password: String,
    ) -> Result<Outcome, Refusal> {
        // An invalid name cannot have an account; that says nothing about any real account.
        let user = normalize_username(&user).map_err(|_| bad_credentials())?;
        self.check_password(&user, source, password).await?;
        let (key, name) = (device.to_base58(), user.clone());
        self.blocking(move |s| s.write(|tx| Ok::<_, Refusal>(bind(tx, &key, &name)?)))
            .await?;
        tracing::info!("{user} logged in from {device}");
        Ok(self.session(user, device))
    }

    async fn logout(&self, device: PeerId) -> Result<Outcome, Refusal> {
        let key = device.to_base58();
        let (was, mut effects) = self
            .blocking(move |s| {
                s.write(|tx| {
                    // The members of its encrypted conversations are told, to remove it.
                    let effects = match tx.device_user(&key)? {
                        Some(user) => {
                            mls::departure_effects(tx, &user, std::slice::from_ref(&key))?
                        }
                        None => Vec::new(),
                    };
                    let was = tx.unbind_device(&key)?;
                    if let Some(user) = &was {
                        mls::forget_device(tx, user, &key)?;
                    }
                    Ok::<_, Refusal>((was, effects))
                })
            })
            .await?;
        match was {
            Some(_) => {
                effects.push(Effect::DeviceUnbound { device });
                Self::done(effects)
            }
            None => Err(Refusal::new(
                ErrorCode::NotLoggedIn,
                "this device is not logged in",
            )),
        }
    }

    async fn delete_account(
        &self,
        device: PeerId,
        source: Option<IpAddr>,
        password: String,
    ) -> Result<Outcome, Refusal> {
        let user = self.logged_in(device).await?;
        self.check_password(&user, source, password).await?;
        let name = user.clone();
        let deleted = self
            .blocking(move |s| s.write(|tx| delete_user(tx, &name)))
            .await?;
        tracing::info!("deleted account {user}");
        let mut effects = Vec::new();
        for d in deleted
            .devices
            .iter()
            .filter_map(|d| d.parse::<PeerId>().ok())
        {
            if d != device {
                effects.push(Effect::NotifyDevice {
                    device: d,
                    note: Notification::LoggedOut,
                });
            }
            effects.push(Effect::DeviceUnbound { device: d });
        }
        for other in deleted.related {
            effects.push(Effect::Notify {
                user: other,
                note: Notification::FriendRemoved { user: user.clone() },
            });
        }
        for change in &deleted.groups {
            effects.extend(change.effects());
        }
        Self::done(effects)
    }

    // ---- profiles ---------------------------------------------------------------------------

    async fn profile_set(
        &self,
        device: PeerId,
        nickname: Option<String>,
        signature: Option<String>,
        avatar: Option<Avatar>,
    ) -> Result<Outcome, Refusal> {
        let user = self.logged_in(device).await?;
        let nickname = nickname.map(|n| n.trim().to_owned());
        if nickname.as_ref().is_some_and(|n| n.len() > MAX_NAME_BYTES) {
            return Err(Refusal::new(
                ErrorCode::TooLarge,
                format!("a nickname is at most {MAX_NAME_BYTES} bytes"),
            ));
        }
        if signature
            .as_ref()
            .is_some_and(|s| s.len() > MAX_SIGNATURE_BYTES)
        {
            return Err(Refusal::new(
                ErrorCode::TooLarge,
                format!("a status line is at most {MAX_SIGNATURE_BYTES} bytes"),
            ));
        }
        let avatar = match avatar {
            Some(a) => {
                let mime = image_mime(&a.bytes).ok_or_else(|| {
                    Refusal::new(
                        ErrorCode::Invalid,
                        "an avatar must be a PNG, JPEG, GIF or WebP image",
                    )
                })?;
                Some((
                    ContentHash(*blake3::hash(&a.bytes).as_bytes()),
                    mime,
                    a.bytes,
                ))
            }
            None => None,
        };
        self.blocking(move |s| {
            s.write(|tx| {
                let mut record = tx
                    .user(&user)?
                    .ok_or_else(|| Refusal::new(ErrorCode::NotLoggedIn, "the account is gone"))?;
                if let Some(n) = nickname {
                    record.nickname = if n.is_empty() { record.user.clone() } else { n };
                }
                if let Some(sig) = signature {
                    record.signature = sig;
                }
                if let Some((hash, mime, bytes)) = avatar
                    && record.avatar != Some(hash)
                {
                    tx.add_avatar(hash, mime, &bytes)?;
                    if let Some(old) = record.avatar {
                        tx.release_avatar(old)?;
                    }
                    record.avatar = Some(hash);
                }
                tx.put_user(&record)?;
                Ok(())
            })
        })
        .await?;
        Self::done(Vec::new())
    }

    async fn profile_get(&self, device: PeerId, user: String) -> Result<Outcome, Refusal> {
        self.logged_in(device).await?;
        let user = normalize_username(&user).map_err(|_| unknown_user(&user))?;
        let name = user.clone();
        let record = self
            .blocking(move |s| s.read(|tx| Ok::<_, Refusal>(tx.user(&name)?)))
            .await?
            .ok_or_else(|| unknown_user(&user))?;
        Ok(Outcome {
            response: BootstrapResponse::Profile(Profile {
                online: self.presence.is_online(&record.user),
                user: record.user,
                nickname: record.nickname,
                signature: record.signature,
                avatar_hash: record.avatar,
            }),
            effects: Vec::new(),
        })
    }

    async fn avatar_get(&self, device: PeerId, hash: ContentHash) -> Result<Outcome, Refusal> {
        self.logged_in(device).await?;
        let found = self
            .blocking(move |s| s.read(|tx| Ok::<_, Refusal>(tx.avatar(hash)?)))
            .await?;
        match found {
            Some((mime, bytes)) => Ok(Outcome {
                response: BootstrapResponse::Avatar(Avatar { mime, bytes }),
                effects: Vec::new(),
            }),
            None => Err(Refusal::new(
                ErrorCode::NotFound,
                format!("no avatar {hash}"),
            )),
        }
    }

    async fn search(&self, device: PeerId, query: String) -> Result<Outcome, Refusal> {
        self.logged_in(device).await?;
        let query = query.trim().to_lowercase();
        if query.is_empty() {
            return Err(Refusal::new(
                ErrorCode::Invalid,
                "search for at least one character",
            ));
        }
        let found = self
            .blocking(move |s| {
                s.read(|tx| {
                    Ok::<_, Refusal>(tx.find_users(MAX_SEARCH_RESULTS, |r| {
                        r.user.contains(&query) || r.nickname.to_lowercase().contains(&query)
                    })?)
                })
            })
            .await?;
        let users = found
            .into_iter()
            .map(|r| UserSummary {
                online: self.presence.is_online(&r.user),
                user: r.user,
                nickname: r.nickname,
            })
            .collect();
        Ok(Outcome {
            response: BootstrapResponse::Users { users },
            effects: Vec::new(),
        })
    }

    // ---- friends ----------------------------------------------------------------------------

    async fn friend_add(&self, device: PeerId, other: String) -> Result<Outcome, Refusal> {
        let me = self.logged_in(device).await?;
        let other = normalize_username(&other).map_err(|_| unknown_user(&other))?;
        if other == me {
            return Err(Refusal::new(
                ErrorCode::NotAllowed,
                "you cannot befriend yourself",
            ));
        }
        let (a, b) = (me.clone(), other.clone());
        let before = self
            .blocking(move |s| {
                s.write(|tx| {
                    if tx.user(&b)?.is_none() {
                        return Err(unknown_user(&b));
                    }
                    if tx.blocks(&b, &settings::user_address(&a))? {
                        return Err(not_accepted(&b, "friend requests"));
                    }
                    let before = tx.relation(&a, &b)?;
                    match before {
                        Relation::None => {
                            if tx.relations(&a)?.len() >= MAX_FRIENDS
                                || tx.relations(&b)?.len() >= MAX_FRIENDS
                            {
                                return Err(Refusal::new(
                                    ErrorCode::NotAllowed,
                                    "too many friends and requests",
                                ));
                            }
                            tx.set_relation(&a, &b, Relation::Outgoing)?
                        }
                        // They asked first: adding them accepts.
                        Relation::Incoming => tx.set_relation(&a, &b, Relation::Friends)?,
                        Relation::Outgoing | Relation::Friends => {}
                    }
                    Ok(before)
                })
            })
            .await?;
        let effects = match before {
            Relation::None | Relation::Outgoing => vec![Effect::Notify {
                user: other,
                note: Notification::FriendRequest { from: me },
            }],
            Relation::Incoming => friends_now(&me, &other),
            Relation::Friends => Vec::new(),
        };
        Self::done(effects)
    }

    async fn friend_accept(&self, device: PeerId, other: String) -> Result<Outcome, Refusal> {
        let me = self.logged_in(device).await?;
        let other = normalize_username(&other).map_err(|_| unknown_user(&other))?;
        let (a, b) = (me.clone(), other.clone());
        self.blocking(move |s| {
            s.write(|tx| match tx.relation(&a, &b)? {
                Relation::Incoming => Ok(tx.set_relation(&a, &b, Relation::Friends)?),
                Relation::Friends => Ok(()),
                _ => Err(Refusal::new(
                    ErrorCode::NotFound,
                    format!("no friend request from {b}"),
                )),
            })
        })
        .await?;
        Self::done(friends_now(&me, &other))
    }

    async fn friend_remove(&self, device: PeerId, other: String) -> Result<Outcome, Refusal> {
        let me = self.logged_in(device).await?;
        let other = normalize_username(&other).map_err(|_| unknown_user(&other))?;
        let (a, b) = (me.clone(), other.clone());
        let before = self
            .blocking(move |s| {
                s.write(|tx| {
                    let before = tx.relation(&a, &b)?;
                    tx.set_relation(&a, &b, Relation::None)?;
                    Ok::<_, Refusal>(before)
                })
            })
            .await?;
        let effects = if before == Relation::None {
            Vec::new()
        } else {
            vec![
                Effect::Notify {
                    user: other.clone(),
                    note: Notification::FriendRemoved { user: me.clone() },
                },
                Effect::Notify {
                    user: me,
                    note: Notification::FriendRemoved { user: other },
                },
            ]
        };
        Self::done(effects)
    }

    async fn friends(&self, device: PeerId) -> Result<Outcome, Refusal> {
        let me = self.logged_in(device).await?;
        let (friends, incoming, outgoing) = self
            .blocking(move |s| {
                s.read(|tx| {
                    let mut friends = Vec::new();
                    let (mut incoming, mut outgoing) = (Vec::new(), Vec::new());
                    for (other, relation) in tx.relations(&me)? {
                        match relation {
                            Relation::Friends => {
                                if let Some(r) = tx.user(&other)? {
                                    friends.push(r);
                                }
                            }
                            Relation::Incoming => incoming.push(other),
                            Relation::Outgoing => outgoing.push(other),
                            Relation::None => {}
                        }
                    }
                    Ok::<_, Refusal>((friends, incoming, outgoing))
                })
            })
            .await?;
        let friends = friends
            .into_iter()
            .map(|r| Friend {
                online: self.presence.is_online(&r.user),
                user: r.user,
                nickname: r.nickname,
                signature: r.signature,
            })
            .collect();
        Ok(Outcome {
            response: BootstrapResponse::Friends {
                friends,
                incoming,
                outgoing,
            },
            effects: Vec::new(),
        })
    }

    // ---- mailboxes --------------------------------------------------------------------------

    async fn deposit(
        &self,
        device: PeerId,
        to: String,
        message: ChatMessage,
    ) -> Result<Outcome, Refusal> {
        let me = self.logged_in(device).await?;
        let to = normalize_username(&to).map_err(|_| unknown_user(&to))?;
        let (author, receiver) = (me.clone(), to.clone());
        let from_device = device.to_bytes();
        let stored_at = now_ms();
        let max_entries = self.mailbox_max_entries;
        let (seq, notify) = self
            .store
            .write_batched(move |tx| {
                // Everything is decided before anything is written (the transaction is shared).
                if let Some(seq) = tx.mailbox_seq_of(&author, &author, &message.id)? {
                    return Ok::<_, Refusal>((seq, Vec::new()));
                }
                if tx.user(&receiver)?.is_none() {
                    return Err(unknown_user(&receiver));
                }
                if receiver != author && tx.blocks(&receiver, &settings::user_address(&author))? {
                    return Err(not_accepted(&receiver, "messages"));
                }
                mls::refuse_plaintext(
                    tx,
                    &confab_protocol::e2e::dm_conversation(&author, &receiver),
                    &message,
                )?;
                for owner in [&receiver, &author] {
                    check_room(tx, owner, max_entries)?;
                }
                let entry = |conversation: &str, outgoing: bool| MailboxEntry {
                    seq: 0,
                    conversation: format!("user:{conversation}"),
                    from_user: author.clone(),
                    from_device: from_device.clone(),
                    outgoing,
                    stored_at,
                    item: MailboxItem::Message(message.clone()),
                };
                let mut notify = Vec::new();
                if receiver != author {
                    let seq = tx.mailbox_append(&receiver, entry(&author, false))?;
                    notify.push((receiver.clone(), seq));
                }
                let seq = tx.mailbox_append(&author, entry(&receiver, true))?;
                notify.push((author.clone(), seq));
                Ok((seq, notify))
            })
            .await?;
        Ok(deposited(seq, notify))
    }

    /// A page of the mailbox. Incoming messages on it that no device of the owner fetched before
    /// are reported delivered to their authors (durably, before the answer).
    async fn sync(&self, device: PeerId, after: u64, limit: u32) -> Result<Outcome, Refusal> {
        let me = self.logged_in(device).await?;
        let limit = limit.clamp(1, MAX_SYNC_PAGE) as usize;
        let owner = me.clone();
        let (entries, last_seq, reported) = self
            .blocking(move |s| {
                s.read(|tx| {
                    Ok::<_, Refusal>((
                        tx.mailbox_page(&owner, after, limit, SYNC_PAGE_BYTES)?,
                        tx.mailbox_last_seq(&owner)?,
                        tx.mailbox_delivered(&owner)?,
                    ))
                })
            })
            .await?;
        let news = entries
            .iter()
            .any(|e| e.seq > reported && incoming_message(e).is_some());
        let effects = if news {
            self.report_delivered(me, device, &entries).await
        } else {
            Vec::new()
        };
        Ok(Outcome {
            response: BootstrapResponse::Mailbox { entries, last_seq },
            effects,
        })
    }

    /// Appends a [`ReceiptState::Delivered`] receipt to the mailbox of each author of the incoming
    /// messages of `page` (one of `owner`'s, just fetched by `device`) above the owner's delivered
    /// mark, and raises the mark to the end of the page, in one transaction; returns the
    /// notifications for the authors whose mailbox grew. Never fails the sync: an author whose
    /// mailbox is full gets no receipt, and a failed write is logged (the receipts then go out at
    /// the next sync of these entries).
    async fn report_delivered(
        &self,
        owner: String,
        device: PeerId,
        page: &[MailboxEntry],
    ) -> Vec<Effect> {
        let page_end = page.last().map_or(0, |e| e.seq);
        let incoming: Vec<(u64, String, MessageId)> = page
            .iter()
            .filter_map(|e| incoming_message(e).map(|m| (e.seq, e.from_user.clone(), m.id)))
            .collect();
        let from_device = device.to_bytes();
        let stored_at = now_ms();
        let max_entries = self.mailbox_max_entries;
        let written = self
            .store
            .write_batched(move |tx| {
                // The account may have gone meanwhile; its mark must not outlive it.
                if tx.user(&owner)?.is_none() {
                    return Ok::<_, StoreError>(Vec::new());
                }
                // Read again here: another device of the owner may have fetched the same page
                // since the page was read.
                let reported = tx.mailbox_delivered(&owner)?;
                let mut by_author: std::collections::BTreeMap<String, Vec<MessageId>> =
                    Default::default();
                for (seq, author, id) in incoming {
                    if seq > reported {
                        by_author.entry(author).or_default().push(id);
                    }
                }
                let mut grown = Vec::new();
                for (author, ids) in by_author {
                    if author == owner || tx.user(&author)?.is_none() {
                        continue;
                    }
                    let mut last = None;
                    for chunk in ids.chunks(MAX_RECEIPT_IDS) {
                        if tx.mailbox_len(&author)? >= max_entries {
                            tracing::debug!(
                                "the mailbox of {author} is full: no delivered receipt from {owner}"
                            );
                            break;
                        }
                        let receipt = MailboxEntry {
                            seq: 0,
                            conversation: format!("user:{owner}"),
                            from_user: owner.clone(),
                            from_device: from_device.clone(),
                            outgoing: false,
                            stored_at,
                            item: MailboxItem::Receipt {
                                state: ReceiptState::Delivered,
                                ids: chunk.to_vec(),
                            },
                        };
                        last = Some(tx.mailbox_append(&author, receipt)?);
                    }
                    if let Some(seq) = last {
                        grown.push((author, seq));
                    }
                }
                tx.set_mailbox_delivered(&owner, page_end)?;
                Ok(grown)
            })
            .await;
        match written {
            Ok(grown) => mailbox_notes(grown),
            Err(e) => {
                tracing::error!("delivered receipts: {e}");
                Vec::new()
            }
        }
    }

    /// Stores a receipt from the requester's account about messages `to` sent: in `to`'s mailbox
    /// and, outgoing, in the requester's own. Both or neither; answered after the commit with the
    /// sequence number in the requester's mailbox.
    async fn receipt(
        &self,
        device: PeerId,
        to: String,
        state: ReceiptState,
        ids: Vec<MessageId>,
    ) -> Result<Outcome, Refusal> {
        let me = self.logged_in(device).await?;
        let to = normalize_username(&to).map_err(|_| unknown_user(&to))?;
        if to == me {
            return Err(Refusal::new(
                ErrorCode::Invalid,
                "a receipt goes to the messages' author, not to oneself",
            ));
        }
        match state {
            ReceiptState::Delivered | ReceiptState::Read => {}
            _ => {
                return Err(Refusal::new(
                    ErrorCode::Invalid,
                    "this server does not know that receipt state",
                ));
            }
        }
        if ids.is_empty() || ids.len() > MAX_RECEIPT_IDS {
            return Err(Refusal::new(
                ErrorCode::Invalid,
                format!("a receipt names 1 to {MAX_RECEIPT_IDS} messages"),
            ));
        }
        let (reader, author) = (me.clone(), to.clone());
        let from_device = device.to_bytes();
        let stored_at = now_ms();
        let max_entries = self.mailbox_max_entries;
        let (mine, theirs) = self
            .store
            .write_batched(move |tx| {
                // Everything is decided before anything is written (the transaction is shared).
                if tx.user(&author)?.is_none() {
                    return Err(unknown_user(&author));
                }
                if tx.blocks(&author, &settings::user_address(&reader))? {
                    return Err(not_accepted(&author, "messages"));
                }
                for owner in [&author, &reader] {
                    check_room(tx, owner, max_entries)?;
                }
                let entry = |conversation: &str, outgoing: bool| MailboxEntry {
                    seq: 0,
                    conversation: format!("user:{conversation}"),
                    from_user: reader.clone(),
                    from_device: from_device.clone(),
                    outgoing,
                    stored_at,
                    item: MailboxItem::Receipt {
                        state,
                        ids: ids.clone(),
                    },
                };
                let theirs = tx.mailbox_append(&author, entry(&reader, false))?;
                let mine = tx.mailbox_append(&reader, entry(&author, true))?;
                Ok((mine, theirs))
            })
            .await?;
        Ok(deposited(mine, vec![(to, theirs), (me, mine)]))
    }

    /// The connected devices of `user` (but the requester's own) with their listen addresses,
    /// for the user and their friends; an empty list for anyone else, and for a friend `user`
    /// blocked.
    async fn devices(&self, device: PeerId, user: String) -> Result<Outcome, Refusal> {
        let me = self.logged_in(device).await?;
        let user = normalize_username(&user).map_err(|_| unknown_user(&user))?;
        let name = user.clone();
        let allowed = self
            .blocking(move |s| {
                s.read(|tx| {
                    if tx.user(&name)?.is_none() {
                        return Err(unknown_user(&name));
                    }
                    // Someone who blocked the requester is, to it, as a stranger.
                    Ok(me == name
                        || (tx.relation(&me, &name)? == Relation::Friends
                            && !tx.blocks(&name, &settings::user_address(&me))?))
                })
            })
            .await?;
        let devices = if allowed {
            self.presence
                .devices_except(&user, &device)
                .into_iter()
                .map(|(peer, addrs)| DeviceInfo {
                    peer: peer.to_bytes(),
                    addrs: addrs
                        .into_iter()
                        .map(|a| serde_bytes::ByteBuf::from(a.to_vec()))
                        .collect(),
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(Outcome {
            response: BootstrapResponse::Devices { user, devices },
            effects: Vec::new(),
        })
    }

    async fn summary(&self, device: PeerId, after: u64) -> Result<Outcome, Refusal> {
        let me = self.logged_in(device).await?;
        let mut counts = self
            .blocking(move |s| {
                s.read(|tx| Ok::<_, Refusal>(tx.mailbox_incoming_counts(&me, after)?))
            })
            .await?;
        // Most recent conversation first.
        counts.sort_by_key(|c| std::cmp::Reverse(c.2));
        let total = counts.iter().map(|c| c.1).fold(0u32, u32::saturating_add);
        counts.truncate(MAX_SUMMARY_SENDERS);
        Ok(Outcome {
            response: BootstrapResponse::Summary(OfflineSummary {
                senders: counts.into_iter().map(|(c, n, _)| (c, n)).collect(),
                total,
            }),
            effects: Vec::new(),
        })
    }

    /// The users `user` relates to as `relation`, read off the event loop.
    async fn related(&self, user: String, relation: Relation) -> Result<Vec<String>, StoreError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            store.read(|tx| {
                Ok::<_, StoreError>(
                    tx.relations(&user)?
                        .into_iter()
                        .filter(|(_, r)| *r == relation)
                        .map(|(u, _)| u)
                        .collect(),
                )
            })
        })
        .await
        .map_err(|e| StoreError::Database(e.to_string()))?
    }

    /// The friends of `user` (for presence fan-out).
    pub async fn friends_of(&self, user: String) -> Result<Vec<String>, StoreError> {
        self.related(user, Relation::Friends).await
    }

    /// What a device that just came online should be told: pending friend requests.
    pub async fn pending_for(&self, user: String) -> Result<Vec<Notification>, StoreError> {
        let askers = self.related(user, Relation::Incoming).await?;
        Ok(askers
            .into_iter()
            .map(|from| Notification::FriendRequest { from })
            .collect())
    }
}

/// The message of an entry that came to the owner from someone else.
fn incoming_message(entry: &MailboxEntry) -> Option<&ChatMessage> {
    entry.message().filter(|_| !entry.outgoing)
}

/// Refuses if `owner`'s mailbox is at its limit.
fn check_room(tx: &Tx, owner: &str, max_entries: u64) -> Result<(), Refusal> {
    if tx.mailbox_len(owner)? >= max_entries {
        return Err(Refusal::new(
            ErrorCode::MailboxFull,
            format!("the mailbox of {owner} is full"),
        ));
    }
    Ok(())
}

/// The pushes for the mailboxes that grew: `(owner, its last sequence number)` each.
fn mailbox_notes(grown: Vec<(String, u64)>) -> Vec<Effect> {
    grown
        .into_iter()
        .map(|(user, last_seq)| Effect::Notify {
            user,
            note: Notification::Mailbox { last_seq },
        })
        .collect()
}

/// The answer to a write into mailboxes: `Deposited { seq }` (in the requester's own), and the
/// pushes for the mailboxes that grew.
fn deposited(seq: u64, grown: Vec<(String, u64)>) -> Outcome {
    Outcome {
        response: BootstrapResponse::Deposited { seq },
        effects: mailbox_notes(grown),
    }
}

fn unknown_user(user: &str) -> Refusal {
    Refusal::new(
        ErrorCode::UnknownUser,
        format!("no user {}", user.chars().take(40).collect::<String>()),
    )
}

/// `user` blocked the requester: it does not accept `what` (messages, friend requests, ...)
/// from it.
fn not_accepted(user: &str, what: &str) -> Refusal {
    Refusal::new(
        ErrorCode::NotAllowed,
        format!("{user} does not accept your {what}"),
    )
}

fn friends_now(a: &str, b: &str) -> Vec<Effect> {
    vec![
        Effect::Notify {
            user: a.to_owned(),
            note: Notification::FriendAdded { user: b.to_owned() },
        },
        Effect::Notify {
            user: b.to_owned(),
            note: Notification::FriendAdded { user: a.to_owned() },
        },
    ]
}

/// What deleting an account took with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedUser {
    /// The devices that were bound to it (peer ids, base58).
    pub devices: Vec<String>,
    /// The users it related to (friends and requests), whose side was removed too.
    pub related: Vec<String>,
    /// The groups it left (by the rules of leaving), each with the members left to tell.
    pub groups: Vec<groups::GroupChange>,
}

/// Binds `device` (base58) to `user`. A device that moves from another account leaves that
/// account's MLS state behind (see [`mls::forget_device`]).
fn bind(tx: &mut Tx, device: &str, user: &str) -> Result<(), StoreError> {
    if let Some(previous) = tx.device_user(device)?
        && previous != user
    {
        mls::forget_device(tx, &previous, device)?;
    }
    tx.bind_device(device, user, now_ms())
}

/// Removes an account and everything of it: devices (with their MLS key packages and Welcomes),
/// relations, avatar, mailbox, settings, its index of encrypted direct conversations, and its
/// place in every group (as if it left each: an owner hands over, a group left empty ends).
/// Other accounts' settings that name it (`user:<it>` muted or blocked) stay as they are, and so
/// do the records of encrypted conversations.
pub fn delete_user(tx: &mut Tx, user: &str) -> Result<DeletedUser, Refusal> {
    let record = tx.user(user)?;
    let devices = tx.user_devices(user)?;
    for d in &devices {
        tx.unbind_device(d)?;
        mls::forget_device(tx, user, d)?;
    }
    tx.remove_mls_dms(user)?;
    let others: Vec<String> = tx.relations(user)?.into_iter().map(|(u, _)| u).collect();
    for other in &others {
        tx.set_relation(user, other, Relation::None)?;
    }
    if let Some(hash) = record.and_then(|r| r.avatar) {
        tx.release_avatar(hash)?;
    }
    let mut changed = Vec::new();
    for (group, _) in tx.user_groups(user)? {
        if let Some(record) = tx.group(&group)? {
            changed.push(groups::leave_group(tx, &group, record, user)?);
        }
    }
    tx.mailbox_clear(user)?;
    tx.remove_settings(user)?;
    tx.remove_user(user)?;
    Ok(DeletedUser {
        devices,
        related: others,
        groups: changed,
    })
}

/// The image type from the content's magic bytes, if it is one we accept.
fn image_mime(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

fn rand_bytes() -> [u8; 16] {
    let mut out = [0u8; 16];
    use argon2::password_hash::rand_core::RngCore;
    argon2::password_hash::rand_core::OsRng.fill_bytes(&mut out);
    out
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::limits::THROTTLE_FREE_FAILURES;
    use confab_protocol::bootstrap::ErrorCode as E;

    pub(super) async fn service() -> (Service, tempfile::TempDir, Keypair) {
        let dir = tempfile::tempdir().unwrap();
        let key = Keypair::generate_ed25519();
        let (store, _) = Store::open(dir.path(), key.to_protobuf_encoding().unwrap()).unwrap();
        let service = Service::new(store, key.clone(), Arc::new(Presence::default()))
            .await
            .unwrap();
        (service, dir, key)
    }

    pub(super) fn code(o: &Outcome) -> Option<ErrorCode> {
        match &o.response {
            BootstrapResponse::Error { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub(super) fn reg(user: &str, pw: &str) -> BootstrapRequest {
        BootstrapRequest::Register {
            user: user.into(),
            password: pw.into(),
        }
    }

    pub(super) fn login(user: &str, pw: &str) -> BootstrapRequest {
        BootstrapRequest::Login {
            user: user.into(),
            password: pw.into(),
        }
    }

    pub(super) const PW: &str = "correct horse battery";

    #[tokio::test]
    async fn accounts_register_login_and_refuse_clearly() {
        let (s, dir, key) = service().await;
        let (d1, d2) = (PeerId::random(), PeerId::random());
        let out = s.handle(d1, None, reg("Alice", PW)).await;
        let BootstrapResponse::Session { user, cert } = &out.response else {
            panic!("{out:?}")
        };
        assert_eq!(user, "alice", "usernames are normalised");
        assert_eq!(cert.device, d1.to_bytes());
        assert_eq!(cert.issuer, key.public().to_peer_id().to_bytes());
        assert!(key.public().verify(&cert.to_be_signed(), &cert.signature));
        assert!(out.effects.contains(&Effect::DeviceBound {
            device: d1,
            user: "alice".into()
        }));

        assert_eq!(
            code(&s.handle(d2, None, reg("ALICE", PW)).await),
            Some(E::UserExists)
        );
        assert_eq!(
            code(&s.handle(d2, None, reg("bob", "short")).await),
            Some(E::WeakPassword)
        );
        assert_eq!(
            code(&s.handle(d2, None, reg("bob", "bobbobbob1")).await),
            Some(E::WeakPassword)
        );
        assert_eq!(
            code(&s.handle(d2, None, reg("b o b", PW)).await),
            Some(E::InvalidUsername)
        );

        // Before login, nothing but register/login works.
        for request in [
            BootstrapRequest::Friends,
            BootstrapRequest::Session,
            BootstrapRequest::SearchUsers { query: "a".into() },
            BootstrapRequest::ProfileGet {
                user: "alice".into(),
            },
            BootstrapRequest::FriendAdd {
                user: "alice".into(),
            },
            BootstrapRequest::Logout,
            BootstrapRequest::Devices {
                user: "alice".into(),
            },
            BootstrapRequest::Receipt {
                to: "alice".into(),
                state: ReceiptState::Read,
                ids: vec![MessageId::random()],
            },
        ] {
            assert_eq!(
                code(&s.handle(d2, None, request).await),
                Some(E::NotLoggedIn)
            );
        }

        // A second device logs in; a wrong password and an unknown user look the same.
        let wrong = s.handle(d2, None, login("alice", "not the password")).await;
        let unknown = s.handle(d2, None, login("nobody", PW)).await;
        assert_eq!(code(&wrong), Some(E::BadCredentials));
        assert_eq!(wrong.response, unknown.response);
        let out = s.handle(d2, None, login("alice", PW)).await;
        assert!(
            matches!(out.response, BootstrapResponse::Session { .. }),
            "{out:?}"
        );
        let mut devices = s.store().read(|tx| tx.user_devices("alice")).unwrap();
        devices.sort();
        let mut want = vec![d1.to_base58(), d2.to_base58()];
        want.sort();
        assert_eq!(devices, want);

        // Logout unbinds only that device.
        let out = s.handle(d2, None, BootstrapRequest::Logout).await;
        assert_eq!(out.effects, vec![Effect::DeviceUnbound { device: d2 }]);
        assert_eq!(
            code(&s.handle(d2, None, BootstrapRequest::Session).await),
            Some(E::NotLoggedIn)
        );
        assert!(matches!(
            s.handle(d1, None, BootstrapRequest::Session).await.response,
            BootstrapResponse::Session { .. }
        ));

        // The password is nowhere on disk.
        drop(s);
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(!bytes.windows(PW.len()).any(|w| w == PW.as_bytes()));
        }
    }

    #[tokio::test]
    async fn a_burst_of_wrong_passwords_is_throttled() {
        let (s, _dir, _) = service().await;
        let d = PeerId::random();
        s.handle(d, None, reg("carol", PW)).await;
        let source: IpAddr = "127.0.0.1".parse().unwrap();
        let mut throttled = 0;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..1000 {
            let s = s.clone();
            tasks.spawn(async move {
                s.handle(
                    PeerId::random(),
                    Some(source),
                    login("carol", &format!("guess {i}")),
                )
                .await
            });
        }
        while let Some(out) = tasks.join_next().await {
            match code(&out.unwrap()) {
                Some(E::Throttled) => throttled += 1,
                Some(E::BadCredentials) => {}
                other => panic!("{other:?}"),
            }
        }
        // Only the free attempts plus the one that started the back-off were ever hashed.
        assert!(
            throttled >= 1000 - THROTTLE_FREE_FAILURES as usize - 1,
            "only {throttled} of 1000 were throttled"
        );
        // The burst did not lock the owner out: only two guesses were checked.
        let out = s.handle(d, Some(source), login("carol", PW)).await;
        assert!(
            matches!(out.response, BootstrapResponse::Session { .. }),
            "{out:?}"
        );
        // Guesses one after another, though, meet the growing back-off.
        let mut locked = None;
        for i in 0..=THROTTLE_FREE_FAILURES {
            let out = s
                .handle(
                    PeerId::random(),
                    Some(source),
                    login("carol", &format!("seq {i}")),
                )
                .await;
            if let BootstrapResponse::Error {
                code: E::Throttled,
                retry_after_ms,
                ..
            } = out.response
            {
                locked = retry_after_ms;
            }
        }
        let out = s.handle(d, Some(source), login("carol", PW)).await;
        let BootstrapResponse::Error {
            code: E::Throttled,
            retry_after_ms: Some(ms),
            ..
        } = out.response
        else {
            panic!("{out:?} (locked: {locked:?})")
        };
        assert!(ms > 0 && ms <= 2_000, "{ms}");
    }

    #[tokio::test]
    async fn profiles_avatars_search_and_friends() {
        let (s, _dir, _) = service().await;
        let (a, b) = (PeerId::random(), PeerId::random());
        s.handle(a, None, reg("ann", PW)).await;
        s.handle(b, None, reg("ben", PW)).await;
        let png = b"\x89PNG\r\n\x1a\n0000-not-really-but-magic-ok".to_vec();
        let set = BootstrapRequest::ProfileSet {
            nickname: Some("Ann Lee".into()),
            signature: Some("at lunch".into()),
            avatar: Some(Avatar {
                mime: "image/png".into(),
                bytes: png.clone(),
            }),
        };
        assert_eq!(
            s.handle(a, None, set).await.response,
            BootstrapResponse::Done
        );
        let bad = BootstrapRequest::ProfileSet {
            nickname: None,
            signature: None,
            avatar: Some(Avatar {
                mime: "image/png".into(),
                bytes: b"MZ not an image".to_vec(),
            }),
        };
        assert_eq!(code(&s.handle(a, None, bad).await), Some(E::Invalid));
        let out = s
            .handle(b, None, BootstrapRequest::ProfileGet { user: "ANN".into() })
            .await;
        let BootstrapResponse::Profile(p) = out.response else {
            panic!("{out:?}")
        };
        assert_eq!(
            (p.nickname.as_str(), p.signature.as_str()),
            ("Ann Lee", "at lunch")
        );
        let hash = p.avatar_hash.expect("an avatar");
        let out = s
            .handle(b, None, BootstrapRequest::AvatarGet { hash })
            .await;
        assert_eq!(
            out.response,
            BootstrapResponse::Avatar(Avatar {
                mime: "image/png".into(),
                bytes: png
            })
        );
        let out = s
            .handle(
                b,
                None,
                BootstrapRequest::SearchUsers {
                    query: "lee".into(),
                },
            )
            .await;
        let BootstrapResponse::Users { users } = out.response else {
            panic!()
        };
        assert_eq!(
            users.iter().map(|u| u.user.as_str()).collect::<Vec<_>>(),
            ["ann"]
        );
        assert_eq!(
            code(
                &s.handle(b, None, BootstrapRequest::ProfileGet { user: "zed".into() })
                    .await
            ),
            Some(E::UnknownUser)
        );

        // Friends: request, accept, remove — with the notifications each side gets.
        let out = s
            .handle(a, None, BootstrapRequest::FriendAdd { user: "ben".into() })
            .await;
        assert_eq!(
            out.effects,
            vec![Effect::Notify {
                user: "ben".into(),
                note: Notification::FriendRequest { from: "ann".into() }
            }]
        );
        assert_eq!(
            code(
                &s.handle(a, None, BootstrapRequest::FriendAdd { user: "ann".into() })
                    .await
            ),
            Some(E::NotAllowed)
        );
        let out = s.handle(b, None, BootstrapRequest::Friends).await;
        let BootstrapResponse::Friends {
            friends, incoming, ..
        } = out.response
        else {
            panic!()
        };
        assert!(friends.is_empty());
        assert_eq!(incoming, ["ann"]);
        let out = s
            .handle(
                b,
                None,
                BootstrapRequest::FriendAccept { user: "ann".into() },
            )
            .await;
        assert_eq!(out.effects, friends_now("ben", "ann"));
        let out = s.handle(a, None, BootstrapRequest::Friends).await;
        let BootstrapResponse::Friends {
            friends,
            incoming,
            outgoing,
        } = out.response
        else {
            panic!()
        };
        assert_eq!(
            friends.iter().map(|f| f.user.as_str()).collect::<Vec<_>>(),
            ["ben"]
        );
        assert!(incoming.is_empty() && outgoing.is_empty());
        assert_eq!(s.friends_of("ann".into()).await.unwrap(), ["ben"]);
        let out = s
            .handle(
                b,
                None,
                BootstrapRequest::FriendRemove { user: "ann".into() },
            )
            .await;
        assert!(out.effects.contains(&Effect::Notify {
            user: "ann".into(),
            note: Notification::FriendRemoved { user: "ben".into() }
        }));
        assert!(s.friends_of("ann".into()).await.unwrap().is_empty());

        // Deleting an account takes everything with it.
        s.handle(a, None, BootstrapRequest::FriendAdd { user: "ben".into() })
            .await;
        let out = s
            .handle(
                a,
                None,
                BootstrapRequest::DeleteAccount {
                    password: PW.into(),
                },
            )
            .await;
        assert_eq!(out.response, BootstrapResponse::Done);
        assert!(out.effects.contains(&Effect::DeviceUnbound { device: a }));
        assert_eq!(
            code(
                &s.handle(b, None, BootstrapRequest::ProfileGet { user: "ann".into() })
                    .await
            ),
            Some(E::UnknownUser)
        );
        assert!(s.store().read(|tx| tx.relations("ben")).unwrap().is_empty());
        assert_eq!(s.store().read(|tx| tx.avatar(hash)).unwrap(), None);
        assert_eq!(
            code(&s.handle(a, None, BootstrapRequest::Session).await),
            Some(E::NotLoggedIn)
        );
    }

    #[tokio::test]
    async fn mailboxes_store_once_in_order_and_summarise() {
        let (s, _dir, _) = service().await;
        let (alice, carol, bob) = (PeerId::random(), PeerId::random(), PeerId::random());
        for (d, u) in [(alice, "alice"), (carol, "carol"), (bob, "bob")] {
            s.handle(d, None, reg(u, PW)).await;
        }
        let deposit = |to: &str, text: &str| BootstrapRequest::Deposit {
            to: to.into(),
            message: ChatMessage::text("n", text, 1),
        };
        // Bob is offline: alice sends 3, carol 1.
        let mut first = None;
        for text in ["a1", "a2", "a3"] {
            let request = deposit("bob", text);
            first.get_or_insert(request.clone());
            let out = s.handle(alice, None, request).await;
            assert!(
                matches!(out.response, BootstrapResponse::Deposited { .. }),
                "{out:?}"
            );
            assert!(out.effects.contains(&Effect::Notify {
                user: "bob".into(),
                note: Notification::Mailbox {
                    last_seq: match text {
                        "a1" => 1,
                        "a2" => 2,
                        _ => 3,
                    }
                },
            }));
        }
        s.handle(carol, None, deposit("bob", "c1")).await;
        // A retry of the same message (same id) is stored once and answered the same.
        let again = s.handle(alice, None, first.clone().unwrap()).await;
        assert_eq!(again.response, BootstrapResponse::Deposited { seq: 1 });
        assert!(again.effects.is_empty());
        // Unknown receivers and strangers are refused.
        assert_eq!(
            code(&s.handle(alice, None, deposit("nobody", "x")).await),
            Some(E::UnknownUser)
        );
        assert_eq!(
            code(&s.handle(PeerId::random(), None, deposit("bob", "x")).await),
            Some(E::NotLoggedIn)
        );

        let out = s
            .handle(bob, None, BootstrapRequest::Summary { after: 0 })
            .await;
        let BootstrapResponse::Summary(summary) = out.response else {
            panic!("{out:?}")
        };
        assert_eq!(summary.total, 4);
        assert_eq!(
            summary.senders,
            vec![("user:carol".to_owned(), 1), ("user:alice".to_owned(), 3)]
        );

        // Pages of two, in order, and a device that is up to date gets nothing. Each page tells
        // the authors of its messages that they were delivered (through their mailboxes).
        let mut after = 0;
        let mut texts = Vec::new();
        let mut ids = Vec::new();
        let mut effects = Vec::new();
        loop {
            let out = s
                .handle(bob, None, BootstrapRequest::Sync { after, limit: 2 })
                .await;
            effects.push(out.effects);
            let BootstrapResponse::Mailbox { entries, last_seq } = out.response else {
                panic!()
            };
            assert_eq!(last_seq, 4);
            if entries.is_empty() {
                break;
            }
            assert!(entries.len() <= 2);
            for e in entries {
                assert_eq!(e.seq, after + 1, "contiguous, in order");
                after = e.seq;
                assert!(!e.outgoing);
                let m = e.message().cloned().expect("only messages");
                ids.push(m.id);
                texts.push((e.conversation, e.from_user, m.text.unwrap()));
            }
        }
        let mailbox_note = |user: &str, last_seq| Effect::Notify {
            user: user.into(),
            note: Notification::Mailbox { last_seq },
        };
        assert_eq!(
            effects,
            [
                vec![mailbox_note("alice", 4)],
                vec![mailbox_note("alice", 5), mailbox_note("carol", 2)],
                vec![],
            ]
        );
        assert_eq!(
            texts,
            [
                ("user:alice".into(), "alice".into(), "a1".into()),
                ("user:alice".into(), "alice".into(), "a2".into()),
                ("user:alice".into(), "alice".into(), "a3".into()),
                ("user:carol".into(), "carol".into(), "c1".into()),
            ]
        );
        // The sender's own mailbox has its copies (for its other devices), marked outgoing.
        let out = s
            .handle(
                alice,
                None,
                BootstrapRequest::Sync {
                    after: 0,
                    limit: 100,
                },
            )
            .await;
        let BootstrapResponse::Mailbox { entries, .. } = out.response else {
            panic!()
        };
        assert!(
            out.effects.is_empty(),
            "receipts are not messages to report"
        );
        let (messages, receipts): (Vec<_>, Vec<_>) =
            entries.iter().partition(|e| e.message().is_some());
        assert_eq!(messages.len(), 3);
        assert!(
            messages
                .iter()
                .all(|e| e.outgoing && e.conversation == "user:bob")
        );
        // One delivered receipt per page of bob's that held alice's messages.
        assert_eq!(
            receipts
                .iter()
                .map(|e| (&e.item, e.outgoing, e.conversation.as_str()))
                .collect::<Vec<_>>(),
            [
                (
                    &MailboxItem::Receipt {
                        state: ReceiptState::Delivered,
                        ids: ids[..2].to_vec()
                    },
                    false,
                    "user:bob"
                ),
                (
                    &MailboxItem::Receipt {
                        state: ReceiptState::Delivered,
                        ids: ids[2..3].to_vec()
                    },
                    false,
                    "user:bob"
                ),
            ]
        );
        // The summary counts messages only: alice's receipts are none.
        assert_eq!(
            s.handle(alice, None, BootstrapRequest::Summary { after: 0 })
                .await
                .response,
            BootstrapResponse::Summary(OfflineSummary::default())
        );

        // Deleting bob's account takes his mailbox with it.
        s.handle(
            bob,
            None,
            BootstrapRequest::DeleteAccount {
                password: PW.into(),
            },
        )
        .await;
        assert_eq!(s.store().read(|tx| tx.mailbox_len("bob")).unwrap(), 0);
        assert_eq!(
            s.store().read(|tx| tx.mailbox_delivered("bob")).unwrap(),
            0,
            "a new account of that name starts afresh"
        );
    }

    /// `owner`'s whole mailbox, read from the store.
    pub(super) fn mailbox(s: &Service, owner: &str) -> Vec<MailboxEntry> {
        s.store()
            .read(|tx| tx.mailbox_page(owner, 0, usize::MAX, usize::MAX))
            .unwrap()
    }

    fn sync_all(after: u64) -> BootstrapRequest {
        BootstrapRequest::Sync {
            after,
            limit: MAX_SYNC_PAGE,
        }
    }

    pub(super) fn mailbox_note(user: &str, last_seq: u64) -> Effect {
        Effect::Notify {
            user: user.into(),
            note: Notification::Mailbox { last_seq },
        }
    }

    #[tokio::test]
    async fn delivered_receipts_are_durable_and_sent_once() {
        let (s, _dir, _) = service().await;
        let (alice, bob1, bob2) = (PeerId::random(), PeerId::random(), PeerId::random());
        s.handle(alice, None, reg("alice", PW)).await;
        s.handle(bob1, None, reg("bob", PW)).await;
        s.handle(bob2, None, login("bob", PW)).await;
        let mut sent = Vec::new();
        for text in ["m1", "m2"] {
            let message = ChatMessage::text("alice", text, 1);
            sent.push(message.id);
            let to = "bob".into();
            s.handle(alice, None, BootstrapRequest::Deposit { to, message })
                .await;
        }

        // Bob's first device fetches them: alice's mailbox gets one receipt for both, and her
        // devices are told; bob's own mailbox gets nothing.
        let out = s.handle(bob1, None, sync_all(0)).await;
        let BootstrapResponse::Mailbox { entries, .. } = &out.response else {
            panic!("{out:?}")
        };
        assert_eq!(entries.len(), 2);
        assert_eq!(out.effects, [mailbox_note("alice", 3)]);
        let receipt = mailbox(&s, "alice").pop().unwrap();
        assert_eq!(
            receipt,
            MailboxEntry {
                seq: 3,
                conversation: "user:bob".into(),
                from_user: "bob".into(),
                from_device: bob1.to_bytes(),
                outgoing: false,
                stored_at: receipt.stored_at,
                item: MailboxItem::Receipt {
                    state: ReceiptState::Delivered,
                    ids: sent.clone(),
                },
            }
        );
        assert_eq!(mailbox(&s, "bob").len(), 2);

        // His second device fetching the same page adds none.
        let out = s.handle(bob2, None, sync_all(0)).await;
        assert!(matches!(out.response, BootstrapResponse::Mailbox { .. }));
        assert!(out.effects.is_empty(), "{out:?}");
        assert_eq!(mailbox(&s, "alice").len(), 3);

        // A new message is reported by whichever device fetches it first, alone.
        let message = ChatMessage::text("alice", "m3", 1);
        let m3 = message.id;
        let to = "bob".into();
        s.handle(alice, None, BootstrapRequest::Deposit { to, message })
            .await;
        let out = s.handle(bob2, None, sync_all(2)).await;
        assert_eq!(out.effects, [mailbox_note("alice", 5)]);
        let receipt = mailbox(&s, "alice").pop().unwrap();
        assert_eq!(
            (receipt.item, receipt.from_device),
            (
                MailboxItem::Receipt {
                    state: ReceiptState::Delivered,
                    ids: vec![m3],
                },
                bob2.to_bytes()
            )
        );
        let out = s.handle(bob1, None, sync_all(0)).await;
        assert!(out.effects.is_empty(), "{out:?}");

        // Receipts in alice's mailbox are no messages to report back.
        let out = s.handle(alice, None, sync_all(0)).await;
        assert!(out.effects.is_empty(), "{out:?}");
        assert_eq!(mailbox(&s, "bob").len(), 3);
        assert_eq!(mailbox(&s, "alice").len(), 5);
    }

    #[tokio::test]
    async fn a_big_page_is_reported_in_receipts_of_at_most_max_receipt_ids() {
        let (s, _dir, _) = service().await;
        let (a, b) = (PeerId::random(), PeerId::random());
        s.handle(a, None, reg("ann", PW)).await;
        s.handle(b, None, reg("ben", PW)).await;
        let n = MAX_RECEIPT_IDS + 10;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            let s = s.clone();
            tasks.spawn(async move {
                let message = ChatMessage::text("ann", format!("m{i}"), 1);
                let to = "ben".into();
                s.handle(a, None, BootstrapRequest::Deposit { to, message })
                    .await
            });
        }
        while let Some(out) = tasks.join_next().await {
            let out = out.unwrap();
            assert!(matches!(out.response, BootstrapResponse::Deposited { .. }));
        }
        let out = s.handle(b, None, sync_all(0)).await;
        let BootstrapResponse::Mailbox { entries, .. } = &out.response else {
            panic!("{out:?}")
        };
        assert_eq!(entries.len(), n);
        let want: Vec<MessageId> = entries.iter().map(|e| e.message().unwrap().id).collect();
        assert_eq!(out.effects, [mailbox_note("ann", n as u64 + 2)]);
        let receipts: Vec<Vec<MessageId>> = mailbox(&s, "ann")
            .into_iter()
            .filter_map(|e| match e.item {
                MailboxItem::Receipt { ids, .. } => Some(ids),
                _ => None,
            })
            .collect();
        assert_eq!(
            receipts.iter().map(Vec::len).collect::<Vec<_>>(),
            [MAX_RECEIPT_IDS, 10]
        );
        assert_eq!(receipts.concat(), want);
    }

    #[tokio::test]
    async fn read_receipts_go_to_both_mailboxes() {
        let (s, _dir, _) = service().await;
        let (alice, bob1, bob2) = (PeerId::random(), PeerId::random(), PeerId::random());
        s.handle(alice, None, reg("alice", PW)).await;
        s.handle(bob1, None, reg("bob", PW)).await;
        s.handle(bob2, None, login("bob", PW)).await;
        let message = ChatMessage::text("alice", "hi", 1);
        let id = message.id;
        let to = "bob".into();
        s.handle(alice, None, BootstrapRequest::Deposit { to, message })
            .await;
        let read = |to: &str| BootstrapRequest::Receipt {
            to: to.into(),
            state: ReceiptState::Read,
            ids: vec![id],
        };

        let out = s.handle(bob1, None, read("Alice")).await;
        assert_eq!(out.response, BootstrapResponse::Deposited { seq: 2 });
        assert_eq!(
            out.effects,
            [mailbox_note("alice", 2), mailbox_note("bob", 2)]
        );
        let item = MailboxItem::Receipt {
            state: ReceiptState::Read,
            ids: vec![id],
        };
        let theirs = mailbox(&s, "alice").pop().unwrap();
        assert_eq!(
            theirs,
            MailboxEntry {
                seq: 2,
                conversation: "user:bob".into(),
                from_user: "bob".into(),
                from_device: bob1.to_bytes(),
                outgoing: false,
                stored_at: theirs.stored_at,
                item: item.clone(),
            }
        );
        // Bob's other device learns it from his own mailbox.
        let out = s.handle(bob2, None, sync_all(1)).await;
        let BootstrapResponse::Mailbox { entries, .. } = out.response else {
            panic!("{out:?}")
        };
        assert_eq!(
            entries,
            [MailboxEntry {
                seq: 2,
                conversation: "user:alice".into(),
                from_user: "bob".into(),
                from_device: bob1.to_bytes(),
                outgoing: true,
                stored_at: theirs.stored_at,
                item,
            }]
        );

        // Refused: to oneself, to nobody, an unknown state, no ids.
        assert_eq!(
            code(&s.handle(bob1, None, read("bob")).await),
            Some(E::Invalid)
        );
        assert_eq!(
            code(&s.handle(bob1, None, read("nobody")).await),
            Some(E::UnknownUser)
        );
        for (state, ids) in [
            (ReceiptState::Unknown, vec![id]),
            (ReceiptState::Read, Vec::new()),
        ] {
            let request = BootstrapRequest::Receipt {
                to: "alice".into(),
                state,
                ids,
            };
            assert_eq!(code(&s.handle(bob1, None, request).await), Some(E::Invalid));
        }

        // Receipts are not messages: no summary counts them.
        for (user, device, total) in [("alice", alice, 0), ("bob", bob1, 1)] {
            let out = s
                .handle(device, None, BootstrapRequest::Summary { after: 0 })
                .await;
            let BootstrapResponse::Summary(summary) = out.response else {
                panic!("{out:?}")
            };
            assert_eq!(summary.total, total, "{user}");
        }
    }

    #[tokio::test]
    async fn full_mailboxes_refuse_receipts_but_never_fail_a_sync() {
        let (s, _dir, _) = service().await;
        let s = s.with_mailbox_limit(2);
        let (ann, ben) = (PeerId::random(), PeerId::random());
        s.handle(ann, None, reg("ann", PW)).await;
        s.handle(ben, None, reg("ben", PW)).await;
        let message = ChatMessage::text("ann", "hi", 1);
        let id = message.id;
        let to = "ben".into();
        s.handle(ann, None, BootstrapRequest::Deposit { to, message })
            .await;
        let read = BootstrapRequest::Receipt {
            to: "ann".into(),
            state: ReceiptState::Read,
            ids: vec![id],
        };
        let out = s.handle(ben, None, read.clone()).await;
        assert!(matches!(out.response, BootstrapResponse::Deposited { .. }));
        // Both mailboxes are full now: the next receipt is refused, and nothing is written.
        let out = s.handle(ben, None, read).await;
        assert_eq!(code(&out), Some(E::MailboxFull));
        assert!(out.effects.is_empty());
        assert_eq!(mailbox(&s, "ann").len(), 2);
        assert_eq!(mailbox(&s, "ben").len(), 2);

        // Ann's mailbox has no room for a delivered receipt: ben's sync is answered all the same,
        // and the message counts as reported.
        let out = s.handle(ben, None, sync_all(0)).await;
        let BootstrapResponse::Mailbox { entries, last_seq } = out.response else {
            panic!("{out:?}")
        };
        assert_eq!((entries.len(), last_seq), (2, 2));
        assert!(out.effects.is_empty());
        assert_eq!(mailbox(&s, "ann").len(), 2);
        assert_eq!(s.store().read(|tx| tx.mailbox_delivered("ben")).unwrap(), 2);
    }

    #[tokio::test]
    async fn devices_are_listed_to_friends_only() {
        let (s, _dir, _) = service().await;
        let (ann1, ann2, ben, cal) = (
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
        );
        s.handle(ann1, None, reg("ann", PW)).await;
        s.handle(ann2, None, login("ann", PW)).await;
        s.handle(ben, None, reg("ben", PW)).await;
        s.handle(cal, None, reg("cal", PW)).await;
        s.handle(
            ben,
            None,
            BootstrapRequest::FriendAdd { user: "ann".into() },
        )
        .await;
        s.handle(
            ann1,
            None,
            BootstrapRequest::FriendAccept { user: "ben".into() },
        )
        .await;
        s.handle(
            cal,
            None,
            BootstrapRequest::FriendAdd { user: "ann".into() },
        )
        .await;
        // Both of ann's devices are connected; the first said where it listens.
        let addr: libp2p::Multiaddr = "/ip4/192.0.2.7/tcp/4001".parse().unwrap();
        s.presence.set_addrs(
            ann1,
            vec![addr.clone().with(libp2p::multiaddr::Protocol::P2p(ann1))],
        );
        s.presence.device_online(ann1, "ann");
        s.presence.device_online(ann2, "ann");
        let devices = |user: &str| BootstrapRequest::Devices { user: user.into() };
        let listed = |out: Outcome| match out.response {
            BootstrapResponse::Devices { user, devices } => {
                assert_eq!(user, "ann");
                devices
            }
            other => panic!("{other:?}"),
        };

        // A friend gets both, the one with an address first.
        let got = listed(s.handle(ben, None, devices("ANN")).await);
        assert_eq!(
            got,
            [
                DeviceInfo {
                    peer: ann1.to_bytes(),
                    addrs: vec![serde_bytes::ByteBuf::from(addr.to_vec())],
                },
                DeviceInfo {
                    peer: ann2.to_bytes(),
                    addrs: Vec::new(),
                },
            ]
        );
        // Ann's own device gets her other one.
        let got = listed(s.handle(ann2, None, devices("ann")).await);
        assert_eq!(
            got.iter().map(|d| d.peer.clone()).collect::<Vec<_>>(),
            [ann1.to_bytes()]
        );
        // Someone who only asked to be friends gets an empty list.
        assert!(listed(s.handle(cal, None, devices("ann")).await).is_empty());
        assert_eq!(
            code(&s.handle(cal, None, devices("nobody")).await),
            Some(E::UnknownUser)
        );
        assert_eq!(
            code(&s.handle(PeerId::random(), None, devices("ann")).await),
            Some(E::NotLoggedIn)
        );
    }

    #[tokio::test]
    async fn concurrent_deposits_get_distinct_contiguous_sequence_numbers() {
        let (s, _dir, _) = service().await;
        let (a, b) = (PeerId::random(), PeerId::random());
        s.handle(a, None, reg("ann", PW)).await;
        s.handle(b, None, reg("ben", PW)).await;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..300 {
            let s = s.clone();
            tasks.spawn(async move {
                let m = ChatMessage::text("ann", format!("m{i}"), 1);
                s.handle(
                    a,
                    None,
                    BootstrapRequest::Deposit {
                        to: "ben".into(),
                        message: m,
                    },
                )
                .await
            });
        }
        let mut seqs = Vec::new();
        while let Some(out) = tasks.join_next().await {
            let BootstrapResponse::Deposited { seq } = out.unwrap().response else {
                panic!()
            };
            seqs.push(seq);
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=300).collect::<Vec<u64>>());
        assert_eq!(s.store().read(|tx| tx.mailbox_len("ben")).unwrap(), 300);
    }

    #[tokio::test]
    async fn a_full_mailbox_refuses_clearly_and_old_entries_expire() {
        let (s, _dir, _) = service().await;
        let s = s.with_mailbox_limit(3);
        let (a, b) = (PeerId::random(), PeerId::random());
        s.handle(a, None, reg("ann", PW)).await;
        s.handle(b, None, reg("ben", PW)).await;
        let deposit = |text: &str| BootstrapRequest::Deposit {
            to: "ben".into(),
            message: ChatMessage::text("ann", text, 1),
        };
        for i in 0..3 {
            let out = s.handle(a, None, deposit(&format!("m{i}"))).await;
            assert!(
                matches!(out.response, BootstrapResponse::Deposited { .. }),
                "{out:?}"
            );
        }
        let out = s.handle(a, None, deposit("one too many")).await;
        assert_eq!(code(&out), Some(E::MailboxFull));
        assert!(out.effects.is_empty(), "nothing stored, nobody told");

        // Everything stored before "now + 1 ms" is expired; the mailbox has room again, and the
        // sequence goes on where it was.
        let cutoff = now_ms() + 1;
        let removed = s
            .store()
            .write(|tx| tx.mailbox_expire(cutoff, 100))
            .unwrap();
        assert_eq!(removed, 6, "three in ben's mailbox, three in ann's");
        let out = s.handle(a, None, deposit("after expiry")).await;
        assert_eq!(out.response, BootstrapResponse::Deposited { seq: 4 });
        let out = s
            .handle(
                b,
                None,
                BootstrapRequest::Sync {
                    after: 0,
                    limit: 10,
                },
            )
            .await;
        let BootstrapResponse::Mailbox { entries, last_seq } = out.response else {
            panic!()
        };
        assert_eq!(last_seq, 4);
        assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [4]);
    }
}
