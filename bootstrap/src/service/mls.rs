//! End-to-end encryption: the bootstrap as the MLS (RFC 9420) delivery service. It orders each
//! encrypted conversation's commits, hands out key packages and Welcomes, and keeps the latest
//! GroupInfo for external joins; it stores opaque bytes and never holds a key. The only MLS it
//! parses is a published key package, to refuse one that is not this device's.
//!
//! An encrypted conversation is named as elsewhere: `group:<id>` (its accounts are the group's
//! members, and its owner and admins manage it) or `dm:<a>:<b>` (the two accounts, which must
//! exist). Who asks is always the authenticated device and the account it is logged in to; a
//! request about a conversation that account is not in is refused (`NotAllowed`).
//!
//! - **Key packages** (`MlsPublish`): a device publishes packages for a suite; each must decode,
//!   pass openmls' validation (signatures, lifetime, keys), be for that suite, and carry a basic
//!   credential naming this device of this account ([`e2e::credential_identity`]). Any bad one
//!   refuses the lot. At most [`MAX_KEY_PACKAGES_PER_DEVICE`] are kept per device and suite.
//! - **Claims** (`MlsClaim`): the account itself, its friends and the members of a group it is in
//!   take one package of each device logged in to it (the asking device aside); each package is
//!   handed out once, and devices without one are listed as missing.
//! - **Commits** (`MlsCommit`): one [`MlsRecord`] per conversation (suite, epoch, member devices).
//!   A commit is stored only at the conversation's current epoch, so exactly one commit wins each
//!   epoch (`Conflict` for the others); the first, at epoch 0, starts the encryption and fixes the
//!   suite, which never changes. The bootstrap checks the devices a commit declares added and
//!   removed ([`apply_commit`]) and keeps the member list; a Welcome is released to the added
//!   devices in the same transaction. Every other online device of the conversation's accounts
//!   is told ([`Notification::Mls`]).
//! - **No downgrade**: once a conversation is encrypted, a deposit or group post into it must be
//!   sealed ([`refuse_plaintext`]).
//! - A device that logs out (or whose account goes) loses its key packages and Welcomes
//!   ([`forget_device`]); conversations' records stay (its membership ends by a commit).

use std::collections::BTreeSet;

use confab_protocol::ChatMessage;
use confab_protocol::bootstrap::{BootstrapResponse, ErrorCode, Notification, normalize_username};
use confab_protocol::e2e::{
    self, ClaimedKeyPackage, MAX_COMMITS_PAGE, MAX_KEY_PACKAGE_BYTES, MAX_KEY_PACKAGES_PER_DEVICE,
    MlsConversation, MlsDevice, Suite,
};
use confab_protocol::group::{Role, is_group_id};
use libp2p::PeerId;
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::{BasicCredential, KeyPackageIn, KeyPackageVerifyError, ProtocolVersion};
use openmls_rust_crypto::RustCrypto;

use super::{Effect, Outcome, Refusal, Service, now_ms, unknown_user};
use crate::store::{GroupRecord, MlsRecord, Relation, StoreError, Tx};

/// Bytes of commits, Welcomes or key packages one answer carries at most, so that it fits in a
/// response ([`confab_protocol::limits::MAX_BOOTSTRAP_RESPONSE`]) with room for its framing. A
/// single item always goes (each is at most [`e2e::MAX_MLS_BLOB_BYTES`]).
pub const MLS_PAGE_BYTES: usize = 384 * 1024;
/// Encrypted conversations listed in one `MlsConversations` answer at most (each entry is at most
/// a few hundred bytes, so the list fits in a response).
pub const MAX_MLS_CONVERSATIONS_LISTED: usize = 1024;

/// A published key package is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyPackageError {
    /// It is not a TLS-encoded `KeyPackage`.
    #[error("it is not a key package ({0})")]
    Decode(String),
    /// openmls refused it (a bad signature, an expired lifetime, ...).
    #[error("it is not valid: {0}")]
    Invalid(#[from] KeyPackageVerifyError),
    /// It is for another cipher suite than the one published.
    #[error("it is for cipher suite 0x{found:04x}, not {expected}")]
    WrongSuite {
        /// The suite it was published for.
        expected: Suite,
        /// Its own suite's code point.
        found: u16,
    },
    /// Its credential is not a basic credential.
    #[error("its credential is not a basic credential")]
    NotBasic,
    /// Its credential names another account or device.
    #[error("its credential does not name this device of this account")]
    WrongIdentity,
}

/// Checks one published key package: it decodes, passes openmls' validation, is for `suite`, and
/// its leaf's basic credential is `identity`.
pub fn check_key_package(
    crypto: &RustCrypto,
    package: &[u8],
    suite: Suite,
    identity: &[u8],
) -> Result<(), KeyPackageError> {
    let package = KeyPackageIn::tls_deserialize_exact(package)
        .map_err(|e| KeyPackageError::Decode(e.to_string()))?
        .validate(crypto, ProtocolVersion::Mls10)?;
    let found = u16::from(package.ciphersuite());
    if found != suite.code() {
        return Err(KeyPackageError::WrongSuite {
            expected: suite,
            found,
        });
    }
    let credential = BasicCredential::try_from(package.leaf_node().credential().clone())
        .map_err(|_| KeyPackageError::NotBasic)?;
    if credential.identity() != identity {
        return Err(KeyPackageError::WrongIdentity);
    }
    Ok(())
}

/// A commit as asked for (`MlsCommit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// `group:<id>` or `dm:<a>:<b>`.
    pub conversation: String,
    /// The epoch it was made at.
    pub epoch: u64,
    /// Its suite's code point.
    pub suite: u16,
    /// The TLS-encoded commit.
    pub commit: Vec<u8>,
    /// The new epoch's GroupInfo.
    pub group_info: Vec<u8>,
    /// The Welcome for the added devices.
    pub welcome: Option<Vec<u8>>,
    /// Devices it adds.
    pub added: Vec<MlsDevice>,
    /// Devices it removes.
    pub removed: Vec<MlsDevice>,
    /// Whether the committing device joins by it.
    pub external: bool,
}

/// The answer to `MlsPublish`: how many packages the device has for the suite.
fn stock(count: usize) -> Outcome {
    Outcome {
        response: BootstrapResponse::MlsStock {
            count: u32::try_from(count).unwrap_or(u32::MAX),
        },
        effects: Vec::new(),
    }
}

/// The allowed suite with code point `code`, else `Invalid`.
fn suite_of(code: u16) -> Result<Suite, Refusal> {
    Suite::from_code(code).ok_or_else(|| {
        Refusal::new(
            ErrorCode::Invalid,
            format!("cipher suite 0x{code:04x} is not one this server allows"),
        )
    })
}

/// The name of the suite with code point `code` (one stored, so normally an allowed one).
fn suite_name(code: u16) -> String {
    Suite::from_code(code).map_or_else(|| format!("cipher suite 0x{code:04x}"), |s| s.to_string())
}

fn not_allowed(message: impl Into<String>) -> Refusal {
    Refusal::new(ErrorCode::NotAllowed, message)
}

fn invalid(message: impl Into<String>) -> Refusal {
    Refusal::new(ErrorCode::Invalid, message)
}

fn not_encrypted() -> Refusal {
    Refusal::new(
        ErrorCode::NotFound,
        "this conversation is not encrypted (no commit started it)",
    )
}

/// A device's peer id as the store keys it (base58), from its bytes; `Invalid` if they are not a
/// peer id.
fn device_key(device: &MlsDevice) -> Result<String, Refusal> {
    PeerId::from_bytes(&device.device)
        .map(|p| p.to_base58())
        .map_err(|_| invalid(format!("a device of {} is not a peer id", device.user)))
}

/// The accounts of a conversation, as the bootstrap knows them now.
struct Users {
    /// A group's members, or the two accounts of a dm.
    users: Vec<String>,
    /// The group, for a group conversation (its roles decide who manages it).
    group: Option<GroupRecord>,
}

impl Users {
    fn includes(&self, user: &str) -> bool {
        self.users.iter().any(|u| u == user)
    }

    /// Whether `user` is an owner or admin of the conversation's group.
    fn manages(&self, user: &str) -> bool {
        self.group
            .as_ref()
            .and_then(|g| g.role_of(user))
            .is_some_and(Role::manages)
    }

    fn is_dm(&self) -> bool {
        self.group.is_none()
    }
}

/// The accounts of `conversation`, which `me` must be one of (`NotAllowed`; a group that does
/// not exist has none). `Invalid` for a name that is not a conversation's; `UnknownUser` for a dm
/// with an account that does not exist.
fn users_of(tx: &Tx, conversation: &str, me: &str) -> Result<Users, Refusal> {
    let not_in = || not_allowed("you are not in this conversation");
    if let Some(id) = conversation.strip_prefix("group:") {
        if !is_group_id(id) {
            return Err(invalid("not a conversation name: a bad group id"));
        }
        let group = tx.group(id)?;
        let users: Vec<String> = group
            .iter()
            .flat_map(|g| &g.members)
            .map(|m| m.user.clone())
            .collect();
        if !users.iter().any(|u| u == me) {
            return Err(not_in());
        }
        return Ok(Users { users, group });
    }
    let (a, b) = e2e::dm_users(conversation)
        .ok_or_else(|| invalid("not a conversation name: group:<id> or dm:<a>:<b> (a before b)"))?;
    for user in [a, b] {
        if normalize_username(user).ok().as_deref() != Some(user) {
            return Err(invalid(
                "not a conversation name: a dm names two normalised usernames",
            ));
        }
    }
    if me != a && me != b {
        return Err(not_in());
    }
    for user in [a, b] {
        if tx.user(user)?.is_none() {
            return Err(unknown_user(user));
        }
    }
    Ok(Users {
        users: vec![a.to_owned(), b.to_owned()],
        group: None,
    })
}

/// Whether `me` may take key packages of `user`: itself, a friend, or someone in a group with it.
fn may_claim(tx: &Tx, me: &str, user: &str) -> Result<bool, StoreError> {
    if me == user || tx.relation(me, user)? == Relation::Friends {
        return Ok(true);
    }
    let mine: BTreeSet<String> = tx.user_groups(me)?.into_iter().map(|(g, _)| g).collect();
    Ok(tx
        .user_groups(user)?
        .iter()
        .any(|(group, _)| mine.contains(group)))
}

/// What a device leaves of MLS when it logs out or its account goes: its key packages (for every
/// suite) and the Welcomes waiting for it. Called inside that transaction; `device` is the peer id
/// in base58.
pub(super) fn forget_device(tx: &mut Tx, user: &str, device: &str) -> Result<(), StoreError> {
    tx.remove_mls_key_packages(user, device)?;
    tx.remove_mls_welcomes(device)?;
    Ok(())
}

/// The devices among `members` no longer logged in to their account.
fn retired(tx: &Tx, members: &[MlsDevice]) -> Result<Vec<MlsDevice>, StoreError> {
    let mut out = Vec::new();
    for m in members {
        let Ok(peer) = PeerId::from_bytes(&m.device) else {
            out.push(m.clone());
            continue;
        };
        if !tx.user_devices(&m.user)?.contains(&peer.to_base58()) {
            out.push(m.clone());
        }
    }
    Ok(out)
}

/// What to tell when devices of `user` go (logout, account deletion): every account of each
/// encrypted conversation one of them is a member of, so that a member device removes them.
/// Called inside that transaction, before the devices are unbound.
pub(super) fn departure_effects(
    tx: &Tx,
    user: &str,
    devices: &[String],
) -> Result<Vec<Effect>, Refusal> {
    let gone: Vec<MlsDevice> = devices
        .iter()
        .filter_map(|d| d.parse::<PeerId>().ok())
        .map(|p| MlsDevice {
            user: user.to_owned(),
            device: p.to_bytes(),
        })
        .collect();
    let mut names: Vec<String> = tx
        .user_groups(user)?
        .into_iter()
        .map(|(group, _)| format!("group:{group}"))
        .collect();
    names.extend(tx.mls_dms(user)?);
    let mut effects = Vec::new();
    for conversation in names {
        let Some(record) = tx.mls_conversation(&conversation)? else {
            continue;
        };
        if !record.members.iter().any(|m| gone.contains(m)) {
            continue;
        }
        let Ok(users) = users_of(tx, &conversation, user) else {
            continue;
        };
        for other in users.users {
            effects.push(Effect::Notify {
                user: other,
                note: Notification::Mls {
                    conversation: conversation.clone(),
                    epoch: record.epoch,
                },
            });
        }
    }
    Ok(effects)
}

/// Refuses a plaintext message into an encrypted conversation (a downgrade): once a conversation
/// has an MLS record, its messages must be sealed; and a sealed one into a conversation without
/// one.
pub(super) fn refuse_plaintext(
    tx: &Tx,
    conversation: &str,
    message: &ChatMessage,
) -> Result<(), Refusal> {
    let encrypted = tx.is_mls_conversation(conversation)?;
    if message.sealed.is_none() && encrypted {
        return Err(invalid(
            "this conversation is end-to-end encrypted; plaintext is refused",
        ));
    }
    // Nobody could read it: junk that would only make receivers wait for a catch-up.
    if message.sealed.is_some() && !encrypted {
        return Err(invalid(
            "this conversation is not end-to-end encrypted; an encrypted message is refused",
        ));
    }
    Ok(())
}

/// Checks a commit from `me_device` (peer id `me_key`) of `me` against the conversation's record
/// and stores it: the commit at its epoch, the record one epoch on with the members changed, the
/// new GroupInfo, and the Welcome for each added device. Decides everything before it writes.
/// Returns the new epoch and the accounts of the conversation (to tell).
///
/// The rules:
/// - a conversation without a record is started by a commit at epoch 0, not external, with the
///   committing device as its first member;
/// - the suite is the record's (`Invalid`) and the epoch its current one (`Conflict`);
/// - an external commit adds the committing device and only it, which must not be a member (once
///   the devices it removes are gone), and removes only devices of its own account; any other
///   commit comes from a member device;
/// - an added device belongs to an account of the conversation and is logged in to it now, and is
///   not a member (once the removed ones are gone);
/// - a removed device is a member; it is removed by its own account, or after its account left
///   the conversation or it logged out, or by an owner or admin of the group.
pub(super) fn apply_commit(
    tx: &mut Tx,
    me: &str,
    me_device: &MlsDevice,
    me_key: &str,
    commit: Commit,
) -> Result<(u64, Vec<String>), Refusal> {
    let suite = suite_of(commit.suite)?;
    let conversation = commit.conversation.as_str();
    let users = users_of(tx, conversation, me)?;
    if tx.device_user(me_key)?.as_deref() != Some(me) {
        return Err(Refusal::new(ErrorCode::NotLoggedIn, "log in first"));
    }
    let (record, created) = match tx.mls_conversation(conversation)? {
        Some(record) => {
            if record.suite != suite.code() {
                return Err(invalid(format!(
                    "this conversation is encrypted with {}; its cipher suite cannot be changed",
                    suite_name(record.suite)
                )));
            }
            if commit.epoch != record.epoch {
                return Err(Refusal::new(
                    ErrorCode::Conflict,
                    format!(
                        "the conversation is at epoch {}; fetch the commits and retry",
                        record.epoch
                    ),
                ));
            }
            (record, false)
        }
        None if commit.epoch == 0 && !commit.external => (
            MlsRecord {
                suite: suite.code(),
                epoch: 0,
                members: vec![me_device.clone()],
            },
            true,
        ),
        None => return Err(not_encrypted()),
    };
    let new_epoch = commit
        .epoch
        .checked_add(1)
        .ok_or_else(|| invalid("the conversation has run out of epochs"))?;
    let mut members: BTreeSet<MlsDevice> = record.members.into_iter().collect();

    if commit.external {
        if commit.added.as_slice() != std::slice::from_ref(me_device) {
            return Err(invalid(
                "an external commit adds the committing device, and only it",
            ));
        }
    } else if !members.contains(me_device) {
        return Err(not_allowed(
            "this device is not a member; join by external commit",
        ));
    }

    let mut removed: Vec<(String, &MlsDevice)> = Vec::new();
    for device in &commit.removed {
        let key = device_key(device)?;
        if removed.iter().any(|(_, d)| *d == device) {
            return Err(invalid(format!(
                "device {key} of {} is removed twice",
                device.user
            )));
        }
        if !members.contains(device) {
            return Err(invalid(format!(
                "device {key} of {} is not a member",
                device.user
            )));
        }
        let allowed = if commit.external {
            device.user == me
        } else {
            device.user == me
                || !users.includes(&device.user)
                || tx.device_user(&key)?.as_deref() != Some(device.user.as_str())
                || users.manages(me)
        };
        if !allowed {
            return Err(not_allowed(if commit.external {
                "an external commit removes only devices of your own account"
            } else if users.is_dm() {
                "only its own account removes a device of another member that is still logged in"
            } else {
                "only an owner or admin removes another member's device"
            }));
        }
        removed.push((key, device));
    }
    for (_, device) in &removed {
        members.remove(*device);
    }

    let mut added: Vec<(String, &MlsDevice)> = Vec::new();
    for device in &commit.added {
        let key = device_key(device)?;
        if !users.includes(&device.user) {
            return Err(not_allowed(format!(
                "{} is not in this conversation",
                device.user
            )));
        }
        if tx.device_user(&key)?.as_deref() != Some(device.user.as_str()) {
            return Err(invalid(format!(
                "device {key} is not logged in to {}",
                device.user
            )));
        }
        if members.contains(device) || added.iter().any(|(_, d)| *d == device) {
            return Err(invalid(format!(
                "device {key} of {} is a member already",
                device.user
            )));
        }
        added.push((key, device));
    }

    // Decided: write.
    tx.put_mls_commit(conversation, commit.epoch, &commit.commit)?;
    members.extend(added.iter().map(|(_, d)| (*d).clone()));
    let record = MlsRecord {
        suite: suite.code(),
        epoch: new_epoch,
        members: members.into_iter().collect(),
    };
    tx.put_mls_conversation(conversation, &record, &commit.group_info)?;
    if created && users.is_dm() {
        let now = now_ms();
        for user in &users.users {
            tx.add_mls_dm(user, conversation, now)?;
        }
    }
    for (key, _) in &removed {
        tx.remove_mls_welcome(key, conversation)?;
    }
    if let Some(welcome) = commit.welcome.as_deref().filter(|_| !commit.external) {
        for (key, _) in &added {
            tx.put_mls_welcome(key, conversation, new_epoch, welcome)?;
        }
    }
    Ok((new_epoch, users.users))
}

impl Service {
    /// `MlsPublish`: see the module docs.
    pub(super) async fn mls_publish(
        &self,
        device: PeerId,
        suite: u16,
        key_packages: Vec<serde_bytes::ByteBuf>,
    ) -> Result<Outcome, Refusal> {
        let me = self.logged_in(device).await?;
        let suite = suite_of(suite)?;
        let key = device.to_base58();
        let packages: Vec<Vec<u8>> = key_packages
            .into_iter()
            .map(serde_bytes::ByteBuf::into_vec)
            .collect();
        if packages.len() > MAX_KEY_PACKAGES_PER_DEVICE
            || packages.iter().any(|p| p.len() > MAX_KEY_PACKAGE_BYTES)
        {
            return Err(Refusal::new(
                ErrorCode::TooLarge,
                format!(
                    "at most {MAX_KEY_PACKAGES_PER_DEVICE} key packages of at most \
                     {MAX_KEY_PACKAGE_BYTES} bytes each"
                ),
            ));
        }
        if packages.is_empty() {
            let code = suite.code();
            let count = self
                .blocking(move |s| {
                    s.read(|tx| Ok::<_, Refusal>(tx.mls_key_package_count(&me, &key, code)?))
                })
                .await?;
            return Ok(stock(count));
        }
        // Signature checks: off the async threads.
        let identity = e2e::credential_identity(&me, &key);
        let packages = tokio::task::spawn_blocking(move || {
            let crypto = RustCrypto::default();
            for (i, package) in packages.iter().enumerate() {
                check_key_package(&crypto, package, suite, &identity).map_err(|e| {
                    invalid(format!("key package {} of {}: {e}", i + 1, packages.len()))
                })?;
            }
            Ok::<_, Refusal>(packages)
        })
        .await
        .map_err(|e| Refusal::new(ErrorCode::Internal, format!("internal error: {e}")))??;
        let count = self
            .store
            .write_batched(move |tx| {
                if tx.device_user(&key)?.as_deref() != Some(me.as_str()) {
                    return Err(Refusal::new(ErrorCode::NotLoggedIn, "log in first"));
                }
                let code = suite.code();
                let have = tx.mls_key_package_count(&me, &key, code)?;
                let mut fresh: BTreeSet<&[u8]> = BTreeSet::new();
                for package in &packages {
                    if !tx.has_mls_key_package(&me, &key, code, package)? {
                        fresh.insert(package);
                    }
                }
                if have + fresh.len() > MAX_KEY_PACKAGES_PER_DEVICE {
                    return Err(Refusal::new(
                        ErrorCode::TooLarge,
                        format!(
                            "this device has {have} key packages for {suite} here and may keep \
                             {MAX_KEY_PACKAGES_PER_DEVICE}; {} more do not fit",
                            fresh.len()
                        ),
                    ));
                }
                for package in &fresh {
                    tx.put_mls_key_package(&me, &key, code, package)?;
                }
                Ok(have + fresh.len())
            })
            .await?;
        Ok(stock(count))
    }

    /// `MlsClaim`: see the module docs. Packages go out up to [`MLS_PAGE_BYTES`]; a device past
    /// that keeps its package and is listed as missing.
    pub(super) async fn mls_claim(
        &self,
        device: PeerId,
        user: String,
        suite: u16,
    ) -> Result<Outcome, Refusal> {
        let me = self.logged_in(device).await?;
        let user = normalize_username(&user).map_err(|_| unknown_user(&user))?;
        let code = suite_of(suite)?.code();
        let asker = device.to_base58();
        let (packages, missing) = self
            .store
            .write_batched(move |tx| {
                if tx.user(&user)?.is_none() {
                    return Err(unknown_user(&user));
                }
                if !may_claim(tx, &me, &user)? {
                    return Err(not_allowed(
                        "key packages are handed to the account itself, its friends and the \
                         members of its groups",
                    ));
                }
                let (mut packages, mut missing) = (Vec::new(), Vec::new());
                let mut bytes = 0;
                for key in tx.user_devices(&user)? {
                    if key == asker {
                        continue;
                    }
                    let Ok(peer) = key.parse::<PeerId>() else {
                        tracing::warn!("a device of {user} is bound under a bad peer id {key:?}");
                        continue;
                    };
                    let taken = if bytes + MAX_KEY_PACKAGE_BYTES <= MLS_PAGE_BYTES {
                        tx.take_mls_key_package(&user, &key, code)?
                    } else {
                        None
                    };
                    match taken {
                        Some(key_package) => {
                            bytes += key_package.len();
                            packages.push(ClaimedKeyPackage {
                                device: peer.to_bytes(),
                                key_package,
                            });
                        }
                        None => missing.push(serde_bytes::ByteBuf::from(peer.to_bytes())),
                    }
                }
                Ok::<_, Refusal>((packages, missing))
            })
            .await?;
        Ok(Outcome {
            response: BootstrapResponse::MlsClaimed { packages, missing },
            effects: Vec::new(),
        })
    }

    /// `MlsCommit`: stored by [`apply_commit`] in one transaction, committed before the answer;
    /// then every other online device of the conversation's accounts is told.
    pub(super) async fn mls_commit(
        &self,
        device: PeerId,
        commit: Commit,
    ) -> Result<Outcome, Refusal> {
        let me = self.logged_in(device).await?;
        let me_device = MlsDevice {
            user: me.clone(),
            device: device.to_bytes(),
        };
        let conversation = commit.conversation.clone();
        let key = device.to_base58();
        let (epoch, users) = self
            .store
            .write_batched(move |tx| apply_commit(tx, &me, &me_device, &key, commit))
            .await?;
        let note = Notification::Mls {
            conversation,
            epoch,
        };
        Ok(Outcome {
            response: BootstrapResponse::MlsCommitted { epoch },
            effects: users
                .into_iter()
                .map(|user| Effect::NotifyOthers {
                    user,
                    except: device,
                    note: note.clone(),
                })
                .collect(),
        })
    }

    /// `MlsCommits`: the commits from epoch `from` on, at most [`MAX_COMMITS_PAGE`] and
    /// [`MLS_PAGE_BYTES`] of them.
    pub(super) async fn mls_commits(
        &self,
        device: PeerId,
        conversation: String,
        from: u64,
    ) -> Result<Outcome, Refusal> {
        let me = self.logged_in(device).await?;
        let (commits, epoch) = self
            .blocking(move |s| {
                s.read(|tx| {
                    users_of(tx, &conversation, &me)?;
                    let record = tx
                        .mls_conversation(&conversation)?
                        .ok_or_else(not_encrypted)?;
                    if from > record.epoch {
                        return Err(invalid(format!(
                            "the conversation is at epoch {}; there is no epoch {from} yet",
                            record.epoch
                        )));
                    }
                    let commits =
                        tx.mls_commits(&conversation, from, MAX_COMMITS_PAGE, MLS_PAGE_BYTES)?;
                    Ok((commits, record.epoch))
                })
            })
            .await?;
        Ok(Outcome {
            response: BootstrapResponse::MlsCommits {
                commits: commits
                    .into_iter()
                    .map(serde_bytes::ByteBuf::from)
                    .collect(),
                epoch,
            },
            effects: Vec::new(),
        })
    }

    /// `MlsGroupInfo`: the conversation's latest GroupInfo, epoch and members.
    pub(super) async fn mls_group_info(
        &self,
        device: PeerId,
        conversation: String,
    ) -> Result<Outcome, Refusal> {
        let me = self.logged_in(device).await?;
        let (record, group_info, retired) = self
            .blocking(move |s| {
                s.read(|tx| {
                    users_of(tx, &conversation, &me)?;
                    let record = tx
                        .mls_conversation(&conversation)?
                        .ok_or_else(not_encrypted)?;
                    let group_info = tx.mls_group_info(&conversation)?.unwrap_or_default();
                    let retired = retired(tx, &record.members)?;
                    Ok::<_, Refusal>((record, group_info, retired))
                })
            })
            .await?;
        Ok(Outcome {
            response: BootstrapResponse::MlsGroupInfo {
                suite: record.suite,
                epoch: record.epoch,
                group_info,
                members: record.members,
                retired,
            },
            effects: Vec::new(),
        })
    }

    /// `MlsConversations`: the account's encrypted conversations (its groups' and its dms'), at
    /// most [`MAX_MLS_CONVERSATIONS_LISTED`], each saying whether the asking device is a member.
    pub(super) async fn mls_conversations(&self, device: PeerId) -> Result<Outcome, Refusal> {
        let me = self.logged_in(device).await?;
        let me_device = MlsDevice {
            user: me.clone(),
            device: device.to_bytes(),
        };
        let conversations = self
            .blocking(move |s| {
                s.read(|tx| {
                    let mut names: Vec<String> = tx
                        .user_groups(&me)?
                        .into_iter()
                        .map(|(group, _)| format!("group:{group}"))
                        .collect();
                    names.extend(tx.mls_dms(&me)?);
                    let mut out = Vec::new();
                    for conversation in names {
                        if out.len() >= MAX_MLS_CONVERSATIONS_LISTED {
                            break;
                        }
                        if let Some(record) = tx.mls_conversation(&conversation)? {
                            out.push(MlsConversation {
                                conversation,
                                suite: record.suite,
                                epoch: record.epoch,
                                member: record.members.contains(&me_device),
                            });
                        }
                    }
                    Ok::<_, Refusal>(out)
                })
            })
            .await?;
        Ok(Outcome {
            response: BootstrapResponse::MlsConversations { conversations },
            effects: Vec::new(),
        })
    }

    /// `MlsWelcomes`: the Welcomes waiting for this device, up to [`MLS_PAGE_BYTES`] (the rest
    /// after some are done).
    pub(super) async fn mls_welcomes(&self, device: PeerId) -> Result<Outcome, Refusal> {
        self.logged_in(device).await?;
        let key = device.to_base58();
        let welcomes = self
            .blocking(move |s| {
                s.read(|tx| Ok::<_, Refusal>(tx.mls_welcomes(&key, MLS_PAGE_BYTES)?))
            })
            .await?;
        Ok(Outcome {
            response: BootstrapResponse::MlsWelcomes { welcomes },
            effects: Vec::new(),
        })
    }

    /// `MlsWelcomeDone`: the device processed its Welcome to `conversation`; it is dropped.
    pub(super) async fn mls_welcome_done(
        &self,
        device: PeerId,
        conversation: String,
    ) -> Result<Outcome, Refusal> {
        self.logged_in(device).await?;
        let key = device.to_base58();
        self.store
            .write_batched(move |tx| {
                tx.remove_mls_welcome(&key, &conversation)?;
                Ok::<_, Refusal>(())
            })
            .await?;
        Self::done(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::tests::{PW, code, login, reg, service};
    use confab_protocol::bootstrap::{BootstrapRequest as R, ErrorCode as E};
    use confab_protocol::e2e::{MlsWelcome, Sealed, dm_conversation};
    use openmls::prelude::tls_codec::Serialize as _;
    use openmls::prelude::{Ciphersuite, CredentialWithKey, KeyPackage};
    use openmls_basic_credential::SignatureKeyPair;
    use openmls_rust_crypto::OpenMlsRustCrypto;
    use serde_bytes::ByteBuf;

    /// A real key package for `suite` whose basic credential is `identity`.
    fn key_package_with(identity: Vec<u8>, suite: Suite) -> Vec<u8> {
        let ciphersuite = Ciphersuite::try_from(suite.code()).unwrap();
        let provider = OpenMlsRustCrypto::default();
        let signer = SignatureKeyPair::new(ciphersuite.signature_algorithm()).unwrap();
        let credential_with_key = CredentialWithKey {
            credential: BasicCredential::new(identity).into(),
            signature_key: signer.public().into(),
        };
        KeyPackage::builder()
            .build(ciphersuite, &provider, &signer, credential_with_key)
            .unwrap()
            .key_package()
            .tls_serialize_detached()
            .unwrap()
    }

    /// A real key package of `device` of `user` for `suite`.
    fn key_package(user: &str, device: &PeerId, suite: Suite) -> Vec<u8> {
        key_package_with(e2e::credential_identity(user, &device.to_base58()), suite)
    }

    fn publish(suite: u16, packages: &[Vec<u8>]) -> R {
        R::MlsPublish {
            suite,
            key_packages: packages.iter().cloned().map(ByteBuf::from).collect(),
        }
    }

    fn stock(out: &Outcome) -> u32 {
        match &out.response {
            BootstrapResponse::MlsStock { count } => *count,
            other => panic!("{other:?}"),
        }
    }

    fn error_message(out: &Outcome) -> &str {
        match &out.response {
            BootstrapResponse::Error { message, .. } => message,
            other => panic!("{other:?}"),
        }
    }

    fn dev(user: &str, peer: PeerId) -> MlsDevice {
        MlsDevice {
            user: user.into(),
            device: peer.to_bytes(),
        }
    }

    /// A commit at `epoch` with recognisable bytes (the bootstrap never parses them); a Welcome
    /// when it adds devices.
    fn commit_of(
        conversation: &str,
        epoch: u64,
        added: Vec<MlsDevice>,
        removed: Vec<MlsDevice>,
        external: bool,
    ) -> R {
        R::MlsCommit {
            conversation: conversation.into(),
            epoch,
            suite: Suite::DEFAULT.code(),
            commit: format!("commit {epoch}").into_bytes(),
            group_info: format!("group info {}", epoch + 1).into_bytes(),
            welcome: (!added.is_empty()).then(|| format!("welcome {epoch}").into_bytes()),
            added,
            removed,
            external,
        }
    }

    /// A commit at `epoch` by a member.
    fn commit<const N: usize, const M: usize>(
        conversation: &str,
        epoch: u64,
        added: [MlsDevice; N],
        removed: [MlsDevice; M],
    ) -> R {
        commit_of(conversation, epoch, added.to_vec(), removed.to_vec(), false)
    }

    /// An external commit at `epoch` (by a device joining).
    fn external<const N: usize, const M: usize>(
        conversation: &str,
        epoch: u64,
        added: [MlsDevice; N],
        removed: [MlsDevice; M],
    ) -> R {
        commit_of(conversation, epoch, added.to_vec(), removed.to_vec(), true)
    }

    fn committed(out: &Outcome) -> u64 {
        match &out.response {
            BootstrapResponse::MlsCommitted { epoch } => *epoch,
            other => panic!("{other:?}"),
        }
    }

    fn welcomes(out: &Outcome) -> Vec<MlsWelcome> {
        match &out.response {
            BootstrapResponse::MlsWelcomes { welcomes } => welcomes.clone(),
            other => panic!("{other:?}"),
        }
    }

    fn create_group(name: &str, members: &[&str]) -> R {
        R::GroupCreate {
            name: name.into(),
            members: members.iter().map(|m| (*m).into()).collect(),
        }
    }

    fn group_of(out: &Outcome) -> String {
        match &out.response {
            BootstrapResponse::Group(roster) => roster.group.clone(),
            other => panic!("{other:?}"),
        }
    }

    fn stored_packages(s: &Service, user: &str, device: PeerId, suite: Suite) -> usize {
        s.store()
            .read(|tx| tx.mls_key_package_count(user, &device.to_base58(), suite.code()))
            .unwrap()
    }

    fn sealed(author: &str) -> ChatMessage {
        ChatMessage {
            sender_name: String::new(),
            text: None,
            sealed: Some(Box::new(Sealed {
                suite: Suite::DEFAULT.code(),
                ciphertext: vec![7; 64],
            })),
            ..ChatMessage::text(author, "", 1)
        }
    }

    #[tokio::test]
    async fn publishing_checks_every_key_package_and_keeps_a_bounded_stock() {
        let (s, _dir, _) = service().await;
        let [a1, a2] = [(); 2].map(|_| PeerId::random());
        s.handle(a1, None, reg("ann", PW)).await;
        s.handle(a2, None, login("ann", PW)).await;
        let default = Suite::DEFAULT;
        let code_of = default.code();

        let three: Vec<Vec<u8>> = (0..3).map(|_| key_package("ann", &a1, default)).collect();
        assert_eq!(
            stock(&s.handle(a1, None, publish(code_of, &three)).await),
            3
        );
        // The same ones again are stored once; an empty list only asks.
        assert_eq!(
            stock(&s.handle(a1, None, publish(code_of, &three)).await),
            3
        );
        assert_eq!(stock(&s.handle(a1, None, publish(code_of, &[])).await), 3);
        // Another device of the same account has a stock of its own.
        assert_eq!(stock(&s.handle(a2, None, publish(code_of, &[])).await), 0);

        // Refused, and nothing of the lot stored: a package naming another device or account,
        // one of another suite, garbage, a suite that is not allowed.
        let good = key_package("ann", &a1, default);
        for (packages, why) in [
            (
                vec![good.clone(), key_package("ann", &a2, default)],
                "another device",
            ),
            (
                vec![good.clone(), key_package("ben", &a1, default)],
                "another account",
            ),
            (
                vec![good.clone(), key_package_with(b"ann".to_vec(), default)],
                "an identity without a device",
            ),
            (
                vec![
                    good.clone(),
                    key_package("ann", &a1, Suite::X25519ChaCha20Poly1305),
                ],
                "another suite",
            ),
            (vec![good.clone(), b"not a key package".to_vec()], "garbage"),
        ] {
            let out = s.handle(a1, None, publish(code_of, &packages)).await;
            assert_eq!(code(&out), Some(E::Invalid), "{why}: {out:?}");
            assert!(
                error_message(&out).starts_with("key package 2 of 2: "),
                "{out:?}"
            );
        }
        let out = s
            .handle(
                a1,
                None,
                publish(
                    Suite::X25519ChaCha20Poly1305.code(),
                    std::slice::from_ref(&good),
                ),
            )
            .await;
        assert_eq!(
            code(&out),
            Some(E::Invalid),
            "published under another suite"
        );
        let out = s.handle(a1, None, publish(0x0004, &[])).await;
        assert_eq!(code(&out), Some(E::Invalid), "not an allowed suite");
        assert_eq!(stored_packages(&s, "ann", a1, default), 3);

        // Another suite is another stock.
        let chacha = Suite::X25519ChaCha20Poly1305;
        let out = s
            .handle(
                a1,
                None,
                publish(chacha.code(), &[key_package("ann", &a1, chacha)]),
            )
            .await;
        assert_eq!(stock(&out), 1);

        // Up to the limit, and not one more.
        let fill: Vec<Vec<u8>> = (3..MAX_KEY_PACKAGES_PER_DEVICE)
            .map(|_| key_package("ann", &a1, default))
            .collect();
        let out = s.handle(a1, None, publish(code_of, &fill)).await;
        assert_eq!(stock(&out) as usize, MAX_KEY_PACKAGES_PER_DEVICE);
        let out = s.handle(a1, None, publish(code_of, &[good])).await;
        assert_eq!(code(&out), Some(E::TooLarge), "{out:?}");
        assert_eq!(
            stored_packages(&s, "ann", a1, default),
            MAX_KEY_PACKAGES_PER_DEVICE
        );

        // Logging out drops the device's packages, of every suite.
        s.handle(a1, None, R::Logout).await;
        assert_eq!(stored_packages(&s, "ann", a1, default), 0);
        assert_eq!(stored_packages(&s, "ann", a1, chacha), 0);
        assert_eq!(
            code(&s.handle(a1, None, publish(code_of, &[])).await),
            Some(E::NotLoggedIn)
        );
    }

    #[tokio::test]
    async fn a_claim_hands_each_package_out_once_and_names_the_devices_without_one() {
        let (s, _dir, _) = service().await;
        let [a1, b1, b2, b3, c1] = [(); 5].map(|_| PeerId::random());
        s.handle(a1, None, reg("ann", PW)).await;
        s.handle(b1, None, reg("ben", PW)).await;
        s.handle(b2, None, login("ben", PW)).await;
        s.handle(b3, None, login("ben", PW)).await;
        s.handle(c1, None, reg("cal", PW)).await;
        let suite = Suite::DEFAULT;
        let p1 = key_package("ben", &b1, suite);
        let p2: Vec<Vec<u8>> = (0..2).map(|_| key_package("ben", &b2, suite)).collect();
        s.handle(b1, None, publish(suite.code(), std::slice::from_ref(&p1)))
            .await;
        s.handle(b2, None, publish(suite.code(), &p2)).await;
        let claim = |user: &str| R::MlsClaim {
            user: user.into(),
            suite: suite.code(),
        };
        let claimed = |out: Outcome| match out.response {
            BootstrapResponse::MlsClaimed { packages, missing } => {
                let mut packages: Vec<(Vec<u8>, Vec<u8>)> = packages
                    .into_iter()
                    .map(|p| (p.device, p.key_package))
                    .collect();
                packages.sort();
                let mut missing: Vec<Vec<u8>> =
                    missing.into_iter().map(ByteBuf::into_vec).collect();
                missing.sort();
                (packages, missing)
            }
            other => panic!("{other:?}"),
        };
        let sorted = |mut v: Vec<Vec<u8>>| {
            v.sort();
            v
        };

        // A stranger gets nothing; nor does anyone for an unknown user or a suite not allowed.
        let out = s.handle(a1, None, claim("ben")).await;
        assert_eq!(code(&out), Some(E::NotAllowed), "{out:?}");
        assert_eq!(
            code(&s.handle(a1, None, claim("zed")).await),
            Some(E::UnknownUser)
        );
        let bad_suite = R::MlsClaim {
            user: "ben".into(),
            suite: 0x0004,
        };
        assert_eq!(code(&s.handle(b1, None, bad_suite).await), Some(E::Invalid));
        assert_eq!(stored_packages(&s, "ben", b2, suite), 2);

        // Friends claim: one package per device, each handed out once.
        s.handle(a1, None, R::FriendAdd { user: "ben".into() })
            .await;
        s.handle(b1, None, R::FriendAccept { user: "ann".into() })
            .await;
        let (packages, missing) = claimed(s.handle(a1, None, claim("BEN")).await);
        assert_eq!(packages.len(), 2);
        assert_eq!(
            packages.iter().find(|p| p.0 == b1.to_bytes()).unwrap().1,
            p1
        );
        assert!(p2.contains(&packages.iter().find(|p| p.0 == b2.to_bytes()).unwrap().1));
        assert_eq!(missing, [b3.to_bytes()]);
        let (packages, missing) = claimed(s.handle(a1, None, claim("ben")).await);
        assert_eq!(packages.len(), 1);
        assert_eq!(packages[0].0, b2.to_bytes());
        assert_eq!(missing, sorted(vec![b1.to_bytes(), b3.to_bytes()]));
        let (packages, missing) = claimed(s.handle(a1, None, claim("ben")).await);
        assert!(packages.is_empty());
        assert_eq!(
            missing,
            sorted(vec![b1.to_bytes(), b2.to_bytes(), b3.to_bytes()])
        );

        // An account claims its own other devices (not the asking one); a member of a group
        // with it claims too.
        s.handle(
            b1,
            None,
            publish(suite.code(), &[key_package("ben", &b1, suite)]),
        )
        .await;
        let (packages, missing) = claimed(s.handle(b2, None, claim("ben")).await);
        assert_eq!(packages.len(), 1);
        assert_eq!(packages[0].0, b1.to_bytes());
        assert_eq!(missing, [b3.to_bytes()]);
        assert_eq!(
            code(&s.handle(c1, None, claim("ben")).await),
            Some(E::NotAllowed)
        );
        s.handle(b1, None, create_group("team", &["cal"])).await;
        let (packages, missing) = claimed(s.handle(c1, None, claim("ben")).await);
        assert!(packages.is_empty());
        assert_eq!(missing.len(), 3);
    }

    #[tokio::test]
    async fn one_commit_wins_each_epoch_and_the_suite_never_changes() {
        let (s, _dir, _) = service().await;
        let [a1, a2, b1, c1] = [(); 4].map(|_| PeerId::random());
        s.handle(a1, None, reg("ann", PW)).await;
        s.handle(a2, None, login("ann", PW)).await;
        s.handle(b1, None, reg("ben", PW)).await;
        s.handle(c1, None, reg("cal", PW)).await;
        let dm = dm_conversation("ben", "ann");
        assert_eq!(dm, "dm:ann:ben");
        let (ann1, ann2, ben1) = (dev("ann", a1), dev("ann", a2), dev("ben", b1));

        // Not encrypted yet: nothing to read, no commit but one at epoch 0, no external join.
        let info = || R::MlsGroupInfo {
            conversation: dm.clone(),
        };
        let commits_from = |from| R::MlsCommits {
            conversation: dm.clone(),
            from,
        };
        assert_eq!(code(&s.handle(a1, None, info()).await), Some(E::NotFound));
        assert_eq!(
            code(&s.handle(a1, None, commits_from(0)).await),
            Some(E::NotFound)
        );
        assert_eq!(
            code(&s.handle(a1, None, commit(&dm, 1, [], [])).await),
            Some(E::NotFound)
        );
        assert_eq!(
            code(
                &s.handle(a2, None, external(&dm, 0, [ann2.clone()], []))
                    .await
            ),
            Some(E::NotFound)
        );
        // Names that are no conversation's, strangers, unknown accounts, suites not allowed.
        for name in ["dm:ben:ann", "nonsense", "group:not-an-id", "dm:ann:Ben"] {
            let out = s.handle(a1, None, commit(name, 0, [], [])).await;
            assert_eq!(code(&out), Some(E::Invalid), "{name}: {out:?}");
        }
        assert_eq!(
            code(&s.handle(c1, None, commit(&dm, 0, [], [])).await),
            Some(E::NotAllowed)
        );
        assert_eq!(code(&s.handle(c1, None, info()).await), Some(E::NotAllowed));
        assert_eq!(
            code(&s.handle(a1, None, commit("dm:ann:zed", 0, [], [])).await),
            Some(E::UnknownUser)
        );
        let mut bad_suite = commit(&dm, 0, [], []);
        if let R::MlsCommit { suite, .. } = &mut bad_suite {
            *suite = 0x0004;
        }
        assert_eq!(code(&s.handle(a1, None, bad_suite).await), Some(E::Invalid));
        assert!(
            s.store()
                .read(|tx| tx.mls_conversation(&dm))
                .unwrap()
                .is_none()
        );

        // Ann's first device starts it, adding ben's; every other device is told.
        let out = s.handle(a1, None, commit(&dm, 0, [ben1.clone()], [])).await;
        assert_eq!(committed(&out), 1);
        let note = Notification::Mls {
            conversation: dm.clone(),
            epoch: 1,
        };
        assert_eq!(
            out.effects,
            ["ann", "ben"].map(|user| Effect::NotifyOthers {
                user: user.into(),
                except: a1,
                note: note.clone(),
            })
        );

        // Both members commit at epoch 1 at once: exactly one wins.
        let race = |who: &str| {
            let mut request = commit(&dm, 1, [], []);
            if let R::MlsCommit { commit, .. } = &mut request {
                *commit = format!("{who}'s commit 1").into_bytes();
            }
            request
        };
        let (x, y) = tokio::join!(
            s.handle(a1, None, race("ann")),
            s.handle(b1, None, race("ben"))
        );
        let (winner, loser) = match (&x.response, &y.response) {
            (BootstrapResponse::MlsCommitted { epoch: 2 }, _) => ("ann", &y),
            (_, BootstrapResponse::MlsCommitted { epoch: 2 }) => ("ben", &x),
            _ => panic!("{x:?} {y:?}"),
        };
        assert_eq!(code(loser), Some(E::Conflict), "{loser:?}");
        assert_eq!(
            error_message(loser),
            "the conversation is at epoch 2; fetch the commits and retry"
        );
        // A stale retry conflicts as well.
        let out = s.handle(a1, None, commit(&dm, 0, [], [])).await;
        assert_eq!(code(&out), Some(E::Conflict));

        // The suite is fixed.
        let mut other_suite = commit(&dm, 2, [], []);
        if let R::MlsCommit { suite, .. } = &mut other_suite {
            *suite = Suite::X25519ChaCha20Poly1305.code();
        }
        let out = s.handle(a1, None, other_suite).await;
        assert_eq!(code(&out), Some(E::Invalid));
        assert_eq!(
            error_message(&out),
            format!(
                "this conversation is encrypted with {}; its cipher suite cannot be changed",
                Suite::DEFAULT.name()
            )
        );

        // The commits, in order, and the latest GroupInfo.
        let out = s.handle(b1, None, commits_from(0)).await;
        assert_eq!(
            out.response,
            BootstrapResponse::MlsCommits {
                commits: vec![
                    ByteBuf::from(b"commit 0".to_vec()),
                    ByteBuf::from(format!("{winner}'s commit 1").into_bytes()),
                ],
                epoch: 2,
            }
        );
        let out = s.handle(b1, None, commits_from(2)).await;
        assert_eq!(
            out.response,
            BootstrapResponse::MlsCommits {
                commits: Vec::new(),
                epoch: 2
            }
        );
        assert_eq!(
            code(&s.handle(b1, None, commits_from(3)).await),
            Some(E::Invalid)
        );
        let mut members = vec![ann1.clone(), ben1.clone()];
        members.sort();
        assert_eq!(
            s.handle(a2, None, info()).await.response,
            BootstrapResponse::MlsGroupInfo {
                suite: Suite::DEFAULT.code(),
                epoch: 2,
                group_info: b"group info 2".to_vec(),
                members: members.clone(),
                retired: Vec::new(),
            }
        );

        // Ann's second device is no member: it joins by an external commit, adding itself only
        // and removing nobody else's device.
        let out = s.handle(a2, None, commit(&dm, 2, [], [])).await;
        assert_eq!(code(&out), Some(E::NotAllowed));
        assert_eq!(
            error_message(&out),
            "this device is not a member; join by external commit"
        );
        for added in [
            vec![],
            vec![ann2.clone(), dev("cal", c1)],
            vec![ben1.clone()],
        ] {
            let out = s
                .handle(a2, None, commit_of(&dm, 2, added.clone(), vec![], true))
                .await;
            assert_eq!(code(&out), Some(E::Invalid), "{added:?}: {out:?}");
        }
        let out = s
            .handle(a2, None, external(&dm, 2, [ann2.clone()], [ben1.clone()]))
            .await;
        assert_eq!(code(&out), Some(E::NotAllowed), "{out:?}");
        // A device of another account that is still logged in is not removed by a plain
        // commit in a dm either.
        let out = s.handle(a1, None, commit(&dm, 2, [], [ben1.clone()])).await;
        assert_eq!(code(&out), Some(E::NotAllowed), "{out:?}");
        let out = s
            .handle(a2, None, external(&dm, 2, [ann2.clone()], []))
            .await;
        assert_eq!(committed(&out), 3);
        assert_eq!(out.effects.len(), 2);
        // A member joining again must drop its old leaf in the same commit (a resync).
        let out = s
            .handle(a2, None, external(&dm, 3, [ann2.clone()], []))
            .await;
        assert_eq!(code(&out), Some(E::Invalid), "{out:?}");
        let out = s
            .handle(a2, None, external(&dm, 3, [ann2.clone()], [ann2.clone()]))
            .await;
        assert_eq!(committed(&out), 4);

        // Each account lists it, with whether the asking device is a member.
        let listed = |device| {
            let s = s.clone();
            async move {
                match s.handle(device, None, R::MlsConversations).await.response {
                    BootstrapResponse::MlsConversations { conversations } => conversations,
                    other => panic!("{other:?}"),
                }
            }
        };
        let entry = |member| MlsConversation {
            conversation: dm.clone(),
            suite: Suite::DEFAULT.code(),
            epoch: 4,
            member,
        };
        assert_eq!(listed(a2).await, [entry(true)]);
        assert_eq!(listed(b1).await, [entry(true)]);
        assert!(listed(c1).await.is_empty());
        let b2 = PeerId::random();
        s.handle(b2, None, login("ben", PW)).await;
        assert_eq!(listed(b2).await, [entry(false)]);
    }

    #[tokio::test]
    async fn a_device_is_removed_by_its_account_an_admin_or_once_its_account_is_gone() {
        let (s, _dir, _) = service().await;
        let [a1, b1, b2, c1, d1, e1] = [(); 6].map(|_| PeerId::random());
        for (device, user) in [
            (a1, "ann"),
            (b1, "ben"),
            (c1, "cal"),
            (d1, "dee"),
            (e1, "eve"),
        ] {
            s.handle(device, None, reg(user, PW)).await;
        }
        let g = group_of(
            &s.handle(a1, None, create_group("team", &["ben", "cal", "dee"]))
                .await,
        );
        let conv = format!("group:{g}");
        let [ann1, ben1, ben2, cal1, dee1] = [
            dev("ann", a1),
            dev("ben", b1),
            dev("ben", b2),
            dev("cal", c1),
            dev("dee", d1),
        ];
        let out = s
            .handle(
                a1,
                None,
                commit(&conv, 0, [ben1.clone(), cal1.clone(), dee1.clone()], []),
            )
            .await;
        assert_eq!(committed(&out), 1);
        assert_eq!(out.effects.len(), 4, "every account of the group is told");
        let mut epoch = 1;

        // Added: only devices of the group's accounts, logged in to them, not members yet.
        let out = s
            .handle(a1, None, commit(&conv, epoch, [dev("eve", e1)], []))
            .await;
        assert_eq!(code(&out), Some(E::NotAllowed), "{out:?}");
        let out = s
            .handle(a1, None, commit(&conv, epoch, [ben2.clone()], []))
            .await;
        assert_eq!(code(&out), Some(E::Invalid), "not logged in: {out:?}");
        let out = s
            .handle(a1, None, commit(&conv, epoch, [ben1.clone()], []))
            .await;
        assert_eq!(code(&out), Some(E::Invalid), "a member already: {out:?}");
        let junk = MlsDevice {
            user: "ben".into(),
            device: vec![1, 2, 3],
        };
        let out = s.handle(a1, None, commit(&conv, epoch, [junk], [])).await;
        assert_eq!(code(&out), Some(E::Invalid), "not a peer id: {out:?}");
        // Eve, no member, sees nothing of it.
        assert_eq!(
            code(
                &s.handle(
                    e1,
                    None,
                    R::MlsGroupInfo {
                        conversation: conv.clone()
                    }
                )
                .await
            ),
            Some(E::NotAllowed)
        );

        // A plain member does not remove another account's device that is logged in.
        let out = s
            .handle(c1, None, commit(&conv, epoch, [], [ben1.clone()]))
            .await;
        assert_eq!(code(&out), Some(E::NotAllowed));
        assert_eq!(
            error_message(&out),
            "only an owner or admin removes another member's device"
        );

        // Ben's second device is added, logs out, and then anyone may remove it.
        s.handle(b2, None, login("ben", PW)).await;
        let out = s
            .handle(a1, None, commit(&conv, epoch, [ben2.clone()], []))
            .await;
        epoch = committed(&out);
        s.handle(b2, None, R::Logout).await;
        let out = s
            .handle(c1, None, commit(&conv, epoch, [], [ben2.clone()]))
            .await;
        epoch = committed(&out);
        let out = s
            .handle(c1, None, commit(&conv, epoch, [], [ben2.clone()]))
            .await;
        assert_eq!(code(&out), Some(E::Invalid), "no member any more: {out:?}");

        // The owner removes anyone's device; so does an admin.
        let out = s
            .handle(a1, None, commit(&conv, epoch, [], [dee1.clone()]))
            .await;
        epoch = committed(&out);
        let out = s
            .handle(a1, None, commit(&conv, epoch, [dee1.clone()], []))
            .await;
        epoch = committed(&out);
        let out = s
            .handle(b1, None, commit(&conv, epoch, [], [dee1.clone()]))
            .await;
        assert_eq!(code(&out), Some(E::NotAllowed));
        s.handle(
            a1,
            None,
            R::GroupSetRole {
                group: g.clone(),
                user: "ben".into(),
                role: Role::Admin,
            },
        )
        .await;
        let out = s
            .handle(b1, None, commit(&conv, epoch, [], [dee1.clone()]))
            .await;
        epoch = committed(&out);
        let out = s
            .handle(a1, None, commit(&conv, epoch, [dee1.clone()], []))
            .await;
        epoch = committed(&out);

        // Cal leaves the group: his device may go by anyone's commit, and he is out.
        s.handle(c1, None, R::GroupLeave { group: g.clone() }).await;
        let out = s
            .handle(d1, None, commit(&conv, epoch, [], [cal1.clone()]))
            .await;
        epoch = committed(&out);
        assert_eq!(
            out.effects.len(),
            3,
            "ann, ben and dee are told; cal is gone"
        );
        assert_eq!(
            code(&s.handle(c1, None, commit(&conv, epoch, [], [])).await),
            Some(E::NotAllowed)
        );
        let info = s
            .handle(
                d1,
                None,
                R::MlsGroupInfo {
                    conversation: conv.clone(),
                },
            )
            .await;
        let BootstrapResponse::MlsGroupInfo {
            members, epoch: at, ..
        } = info.response
        else {
            panic!("{info:?}")
        };
        assert_eq!(at, epoch);
        let mut want = vec![ann1, ben1, dee1];
        want.sort();
        assert_eq!(members, want);
    }

    #[tokio::test]
    async fn welcomes_reach_only_the_added_devices_until_they_are_done() {
        let (s, _dir, _) = service().await;
        let [a1, a2, b1, b2] = [(); 4].map(|_| PeerId::random());
        s.handle(a1, None, reg("ann", PW)).await;
        s.handle(a2, None, login("ann", PW)).await;
        s.handle(b1, None, reg("ben", PW)).await;
        s.handle(b2, None, login("ben", PW)).await;
        let dm = dm_conversation("ann", "ben");
        let waiting = |device| {
            let s = s.clone();
            async move { welcomes(&s.handle(device, None, R::MlsWelcomes).await) }
        };

        assert_eq!(
            committed(
                &s.handle(a1, None, commit(&dm, 0, [dev("ben", b1)], []))
                    .await
            ),
            1
        );
        let first = MlsWelcome {
            conversation: dm.clone(),
            epoch: 1,
            welcome: b"welcome 0".to_vec(),
        };
        assert_eq!(waiting(b1).await, std::slice::from_ref(&first));
        assert!(waiting(b2).await.is_empty() && waiting(a1).await.is_empty());

        assert_eq!(
            committed(
                &s.handle(a1, None, commit(&dm, 1, [dev("ben", b2)], []))
                    .await
            ),
            2
        );
        assert_eq!(
            waiting(b2).await,
            [MlsWelcome {
                conversation: dm.clone(),
                epoch: 2,
                welcome: b"welcome 1".to_vec(),
            }]
        );
        assert_eq!(waiting(b1).await, [first]);
        let done = R::MlsWelcomeDone {
            conversation: dm.clone(),
        };
        assert_eq!(
            s.handle(b1, None, done.clone()).await.response,
            BootstrapResponse::Done
        );
        assert!(waiting(b1).await.is_empty());
        assert_eq!(
            s.handle(b1, None, done).await.response,
            BootstrapResponse::Done
        );

        // An external joiner gets no Welcome, whatever the commit carried.
        let out = s
            .handle(a2, None, external(&dm, 2, [dev("ann", a2)], []))
            .await;
        assert_eq!(committed(&out), 3);
        assert!(waiting(a2).await.is_empty());

        // A removed device's Welcome goes; a device that logs out loses its Welcomes.
        let out = s
            .handle(b1, None, commit(&dm, 3, [], [dev("ben", b2)]))
            .await;
        assert_eq!(committed(&out), 4);
        assert!(
            s.store()
                .read(|tx| tx.mls_welcomes(&b2.to_base58(), usize::MAX))
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            committed(
                &s.handle(b1, None, commit(&dm, 4, [dev("ben", b2)], []))
                    .await
            ),
            5
        );
        assert_eq!(waiting(b2).await.len(), 1);
        s.handle(b2, None, R::Logout).await;
        assert!(
            s.store()
                .read(|tx| tx.mls_welcomes(&b2.to_base58(), usize::MAX))
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn an_encrypted_conversation_refuses_plaintext() {
        let (s, _dir, _) = service().await;
        let [a1, b1, c1] = [(); 3].map(|_| PeerId::random());
        s.handle(a1, None, reg("ann", PW)).await;
        s.handle(b1, None, reg("ben", PW)).await;
        s.handle(c1, None, reg("cal", PW)).await;
        let deposit = |to: &str, message: ChatMessage| R::Deposit {
            to: to.into(),
            message,
        };
        let plain = |author: &str| ChatMessage::text(author, "hi", 1);
        let deposited = |out: &Outcome| matches!(out.response, BootstrapResponse::Deposited { .. });

        assert!(deposited(
            &s.handle(a1, None, deposit("ben", plain("ann"))).await
        ));
        let dm = dm_conversation("ann", "ben");
        committed(
            &s.handle(a1, None, commit(&dm, 0, [dev("ben", b1)], []))
                .await,
        );
        for (device, to, author) in [(a1, "ben", "ann"), (b1, "ann", "ben")] {
            let out = s.handle(device, None, deposit(to, plain(author))).await;
            assert_eq!(code(&out), Some(E::Invalid), "{out:?}");
            assert_eq!(
                error_message(&out),
                "this conversation is end-to-end encrypted; plaintext is refused"
            );
            assert!(out.effects.is_empty());
            assert!(deposited(
                &s.handle(device, None, deposit(to, sealed(author))).await
            ));
        }
        // Other conversations are as they were, a note to oneself too.
        assert!(deposited(
            &s.handle(a1, None, deposit("cal", plain("ann"))).await
        ));
        assert!(deposited(
            &s.handle(a1, None, deposit("ann", plain("ann"))).await
        ));
        // And a sealed message where nothing is encrypted is junk nobody could read.
        let out = s.handle(a1, None, deposit("cal", sealed("ann"))).await;
        assert_eq!(code(&out), Some(E::Invalid), "{out:?}");

        let g = group_of(
            &s.handle(a1, None, create_group("team", &["ben", "cal"]))
                .await,
        );
        let post = |message: ChatMessage| R::GroupPost {
            group: g.clone(),
            message,
        };
        assert!(deposited(&s.handle(c1, None, post(plain("cal"))).await));
        let out = s.handle(c1, None, post(sealed("cal"))).await;
        assert_eq!(code(&out), Some(E::Invalid), "{out:?}");
        committed(
            &s.handle(
                a1,
                None,
                commit(
                    &format!("group:{g}"),
                    0,
                    [dev("ben", b1), dev("cal", c1)],
                    [],
                ),
            )
            .await,
        );
        let out = s.handle(c1, None, post(plain("cal"))).await;
        assert_eq!(code(&out), Some(E::Invalid), "{out:?}");
        assert!(deposited(&s.handle(c1, None, post(sealed("cal"))).await));
    }

    #[tokio::test]
    async fn a_deleted_account_or_a_device_that_moves_leaves_no_key_packages_or_welcomes() {
        let (s, _dir, _) = service().await;
        let [a1, b1, b2] = [(); 3].map(|_| PeerId::random());
        s.handle(a1, None, reg("ann", PW)).await;
        s.handle(b1, None, reg("ben", PW)).await;
        s.handle(b2, None, login("ben", PW)).await;
        let suite = Suite::DEFAULT;
        for (device, user) in [(a1, "ann"), (b1, "ben"), (b2, "ben")] {
            let out = s
                .handle(
                    device,
                    None,
                    publish(suite.code(), &[key_package(user, &device, suite)]),
                )
                .await;
            assert_eq!(stock(&out), 1);
        }
        let dm = dm_conversation("ann", "ben");
        committed(
            &s.handle(a1, None, commit(&dm, 0, [dev("ben", b1)], []))
                .await,
        );

        // Ben's second device logs in to ann: ben's packages of it go.
        s.handle(b2, None, login("ann", PW)).await;
        assert_eq!(stored_packages(&s, "ben", b2, suite), 0);

        s.handle(
            b1,
            None,
            R::DeleteAccount {
                password: PW.into(),
            },
        )
        .await;
        assert_eq!(stored_packages(&s, "ben", b1, suite), 0);
        s.store()
            .read(|tx| {
                assert!(tx.mls_welcomes(&b1.to_base58(), usize::MAX)?.is_empty());
                assert!(tx.mls_dms("ben")?.is_empty());
                assert_eq!(tx.mls_dms("ann")?, [dm.as_str()]);
                assert!(tx.mls_conversation(&dm)?.is_some(), "the record stays");
                Ok::<_, StoreError>(())
            })
            .unwrap();
        assert_eq!(stored_packages(&s, "ann", a1, suite), 1);
    }
}
