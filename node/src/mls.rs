//! End-to-end encryption: this device's side of MLS (RFC 9420, with `openmls`).
//!
//! [`Mls`] holds every MLS group of this device — one per encrypted conversation — and does the
//! cryptography: key packages, commits (made here, ordered by the bootstrap, merged only once the
//! bootstrap stored them), Welcomes, external joins, and the encryption and decryption of
//! messages. It does no I/O but to its redb file: the orchestration with the bootstrap is
//! [`crate::e2e`].
//!
//! Its state lives in openmls' key-value storage model, kept in memory and written through to a
//! redb table after every operation, in one transaction and before any of its output leaves this
//! device: an encryption's ratchet step is durable before its ciphertext is sent (so a restart
//! never reuses a key), and a commit's pending state before the commit goes to the bootstrap.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use confab_protocol::e2e::{
    MlsDevice, Suite, credential_identity, mls_group_id, parse_credential_identity,
};
use libp2p::PeerId;
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::RustCrypto;
use openmls_traits::OpenMlsProvider;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

/// openmls' storage, key by key (keys and values are openmls' own encodings).
const STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("mls_state_v1");

/// Our own entries in the key space (openmls' keys start with a label, never with this).
const OWN: &[u8] = b"confab/";
const IDENTITY_KEY: &[u8] = b"confab/identity";
const SIGNER_KEY: &[u8] = b"confab/signer/";
const PENDING_KEY: &[u8] = b"confab/pending/";
const ENCRYPTED_KEY: &[u8] = b"confab/encrypted/";
/// Conversations joined by an external commit the bootstrap has not stored yet: such a group
/// stands only through that commit (openmls keeps it outside `pending_commit`).
const JOINING_KEY: &[u8] = b"confab/joining/";

/// Earlier epochs whose keys are kept, for messages that were sent just before a commit.
const MAX_PAST_EPOCHS: usize = 16;
/// How far out of order messages of one sender may arrive (mailbox and direct copies race).
const OUT_OF_ORDER_TOLERANCE: u32 = 256;
/// How many messages of one sender may be skipped.
const MAX_FORWARD_DISTANCE: u32 = 10_000;

/// Why an MLS operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MlsError {
    /// The state file could not be read or written (nothing was sent).
    #[error("MLS state storage: {0}")]
    Storage(String),
    /// This device has no MLS group for the conversation.
    #[error("this device is not in the encrypted conversation {0}")]
    NotMember(String),
    /// The message or commit is from an epoch this device has not reached: fetch the commits.
    #[error("the message is from epoch {message}, this device is at {local}: fetch the commits")]
    Behind {
        /// The message's epoch.
        message: u64,
        /// This device's epoch.
        local: u64,
    },
    /// The bytes are not a well-formed MLS message of the expected kind.
    #[error("malformed MLS data: {0}")]
    Malformed(String),
    /// A message that cannot be decrypted on this device (sent before it joined, too old, or
    /// already read).
    #[error("cannot decrypt: {0}")]
    Undecryptable(String),
    /// A commit or key package breaks Confab's rules (a stranger added, a wrong identity).
    #[error("refused: {0}")]
    Refused(String),
    /// The suite is not one of the allowed ones.
    #[error("cipher suite {0:#06x} is not allowed")]
    Suite(u16),
    /// openmls failed.
    #[error("MLS: {0}")]
    Mls(String),
}

fn mls_err(e: impl std::fmt::Debug) -> MlsError {
    MlsError::Mls(format!("{e:?}"))
}

fn storage_err(e: impl std::fmt::Display) -> MlsError {
    MlsError::Storage(e.to_string())
}

/// The openmls provider: RustCrypto for the cryptography and randomness, openmls' key-value
/// storage (persisted by [`Mls`]).
#[derive(Default)]
struct Provider {
    crypto: RustCrypto,
    storage: openmls_memory_storage::MemoryStorage,
}

impl OpenMlsProvider for Provider {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = openmls_memory_storage::MemoryStorage;

    fn storage(&self) -> &Self::StorageProvider {
        &self.storage
    }

    fn crypto(&self) -> &Self::CryptoProvider {
        &self.crypto
    }

    fn rand(&self) -> &Self::RandProvider {
        &self.crypto
    }
}

/// The openmls cipher suite of an allowed suite.
pub fn ciphersuite(suite: Suite) -> Ciphersuite {
    match suite {
        Suite::X25519Aes128Gcm => Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519,
        Suite::X25519ChaCha20Poly1305 => {
            Ciphersuite::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519
        }
        Suite::P256Aes128Gcm => Ciphersuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256,
    }
}

fn suite_of(cs: Ciphersuite) -> Option<Suite> {
    Suite::ALL.into_iter().find(|s| ciphersuite(*s) == cs)
}

fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .sender_ratchet_configuration(SenderRatchetConfiguration::new(
            OUT_OF_ORDER_TOLERANCE,
            MAX_FORWARD_DISTANCE,
        ))
        // Application messages and our commits are always ciphertext; external joins arrive
        // as public messages.
        .wire_format_policy(MIXED_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .build()
}

fn create_config(suite: Suite) -> MlsGroupCreateConfig {
    MlsGroupCreateConfig::builder()
        .ciphersuite(ciphersuite(suite))
        .use_ratchet_tree_extension(true)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .sender_ratchet_configuration(SenderRatchetConfiguration::new(
            OUT_OF_ORDER_TOLERANCE,
            MAX_FORWARD_DISTANCE,
        ))
        .wire_format_policy(MIXED_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .build()
}

/// A commit made here, to send to the bootstrap. Its group stays at `epoch` until
/// [`Mls::confirm`] (the bootstrap stored it) or [`Mls::discard`] (it lost to another commit).
#[derive(Debug, Clone)]
pub struct Commit {
    /// The epoch it was made at.
    pub epoch: u64,
    /// The suite's code point.
    pub suite: u16,
    /// The TLS-encoded `MLSMessage`.
    pub commit: Vec<u8>,
    /// The Welcome for added devices.
    pub welcome: Option<Vec<u8>>,
    /// The new epoch's GroupInfo with the ratchet tree.
    pub group_info: Vec<u8>,
    /// The devices it adds.
    pub added: Vec<MlsDevice>,
    /// The devices it removes.
    pub removed: Vec<MlsDevice>,
}

/// What a commit from elsewhere did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The epoch now.
    pub epoch: u64,
    /// This device was removed: the group is gone from this device.
    pub removed_self: bool,
}

/// A decrypted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The sending device's account, from its MLS credential.
    pub user: String,
    /// The sending device.
    pub peer: PeerId,
    /// The plaintext.
    pub plaintext: Vec<u8>,
    /// The epoch it was sent in.
    pub epoch: u64,
}

/// This device's MLS state for one account (see the module docs).
pub struct Mls {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Mls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mls").finish_non_exhaustive()
    }
}

struct Inner {
    provider: Provider,
    db: Database,
    /// What the table holds, to write only what changed.
    persisted: HashMap<Vec<u8>, Vec<u8>>,
    user: String,
    peer: PeerId,
    groups: HashMap<Vec<u8>, MlsGroup>,
}

impl Mls {
    /// Opens (or creates) the state file at `path` for `user` on device `peer`. A state of
    /// another account is wiped: MLS membership belongs to the account this device is in.
    pub fn open(path: &Path, user: &str, peer: PeerId) -> Result<Self, MlsError> {
        let db = Database::create(path).map_err(storage_err)?;
        let mut values = HashMap::new();
        {
            let txn = db.begin_write().map_err(storage_err)?;
            txn.open_table(STATE).map_err(storage_err)?;
            txn.commit().map_err(storage_err)?;
            let txn = db.begin_read().map_err(storage_err)?;
            let table = txn.open_table(STATE).map_err(storage_err)?;
            for row in table.iter().map_err(storage_err)? {
                let (k, v) = row.map_err(storage_err)?;
                values.insert(k.value().to_vec(), v.value().to_vec());
            }
        }
        let identity = credential_identity(user, &peer.to_base58());
        // The table as it is: what changes is written at the first persist.
        let persisted = values.clone();
        if values.get(IDENTITY_KEY) != Some(&identity) {
            if !values.is_empty() {
                tracing::info!("MLS state of another account wiped");
            }
            values.clear();
            values.insert(IDENTITY_KEY.to_vec(), identity);
        }
        let provider = Provider::default();
        *provider.storage.values.write().map_err(storage_err)? = values;
        let mut inner = Inner {
            provider,
            db,
            persisted,
            user: user.to_owned(),
            peer,
            groups: HashMap::new(),
        };
        inner.persist()?;
        Ok(Self {
            inner: Mutex::new(inner),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves openmls' state as it was written last.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The account this state belongs to.
    pub fn user(&self) -> String {
        self.lock().user.clone()
    }

    /// `count` fresh key packages for `suite`, TLS-encoded, to publish.
    pub fn key_packages(&self, suite: Suite, count: usize) -> Result<Vec<Vec<u8>>, MlsError> {
        let mut inner = self.lock();
        let result = inner.key_packages(suite, count);
        inner.finish(result)
    }

    /// Starts encryption of `conversation` here: a new group at epoch 0 with this device alone,
    /// then a commit adding the devices whose key packages are given (`(device, package)`).
    pub fn start(
        &self,
        conversation: &str,
        suite: Suite,
        packages: &[(MlsDevice, Vec<u8>)],
    ) -> Result<Commit, MlsError> {
        let mut inner = self.lock();
        let result = inner.start(conversation, suite, packages);
        inner.finish(result)
    }

    /// A commit adding the devices whose key packages are given and removing `removed`.
    pub fn commit(
        &self,
        conversation: &str,
        packages: &[(MlsDevice, Vec<u8>)],
        removed: &[MlsDevice],
    ) -> Result<Commit, MlsError> {
        let mut inner = self.lock();
        let result = inner.commit(conversation, packages, removed);
        inner.finish(result)
    }

    /// Joins `conversation` by an external commit from its latest GroupInfo; `was_member`: the
    /// bootstrap still lists this device (its old leaf is replaced).
    pub fn join_external(
        &self,
        conversation: &str,
        group_info: &[u8],
        was_member: bool,
    ) -> Result<Commit, MlsError> {
        let mut inner = self.lock();
        let result = inner.join_external(conversation, group_info, was_member);
        inner.finish(result)
    }

    /// The bootstrap stored this device's commit to `conversation`: move to the new epoch.
    pub fn confirm(&self, conversation: &str) -> Result<u64, MlsError> {
        let mut inner = self.lock();
        let result = inner.confirm(conversation);
        inner.finish(result)
    }

    /// This device's commit to `conversation` lost (another was stored first): forget it. A
    /// group that existed only for it (a start or an external join) is dropped.
    pub fn discard(&self, conversation: &str) -> Result<(), MlsError> {
        let mut inner = self.lock();
        let result = inner.discard(conversation);
        inner.finish(result)
    }

    /// Drops this device's group of `conversation` (its state no longer matches the
    /// bootstrap's: it joins again by an external commit, which replaces its old leaf).
    pub fn forget(&self, conversation: &str) -> Result<(), MlsError> {
        let mut inner = self.lock();
        let result = inner.forget(conversation);
        inner.finish(result)
    }

    /// Joins a conversation from a Welcome; returns the epoch joined at.
    pub fn join_welcome(
        &self,
        conversation: &str,
        welcome: &[u8],
        allowed: &dyn Fn(&str) -> bool,
    ) -> Result<u64, MlsError> {
        let mut inner = self.lock();
        let result = inner.join_welcome(conversation, welcome, allowed);
        inner.finish(result)
    }

    /// Applies a commit the bootstrap ordered. `allowed` says which accounts may be in the
    /// conversation: a commit by or adding anyone else is refused (and not merged).
    pub fn apply_commit(
        &self,
        conversation: &str,
        commit: &[u8],
        allowed: &dyn Fn(&str) -> bool,
    ) -> Result<Applied, MlsError> {
        self.apply_commit_checked(conversation, commit, allowed, &|_, _| true)
    }

    /// [`Mls::apply_commit`], where `may_remove(committer, removed)` also says whether the
    /// committing device may remove each device the commit removes (a device may always remove
    /// its own account's devices and its own old leaf).
    pub fn apply_commit_checked(
        &self,
        conversation: &str,
        commit: &[u8],
        allowed: &dyn Fn(&str) -> bool,
        may_remove: &dyn Fn(&MlsDevice, &MlsDevice) -> bool,
    ) -> Result<Applied, MlsError> {
        let mut inner = self.lock();
        let result = inner.apply_commit(conversation, commit, allowed, may_remove);
        inner.finish(result)
    }

    /// Encrypts `plaintext` for every member device of `conversation`.
    pub fn encrypt(&self, conversation: &str, plaintext: &[u8]) -> Result<Vec<u8>, MlsError> {
        let mut inner = self.lock();
        let result = inner.encrypt(conversation, plaintext);
        inner.finish(result)
    }

    /// Decrypts a message of `conversation`.
    pub fn decrypt(&self, conversation: &str, ciphertext: &[u8]) -> Result<Opened, MlsError> {
        let mut inner = self.lock();
        let result = inner.decrypt(conversation, ciphertext);
        inner.finish(result)
    }

    /// The epoch of this device's group for `conversation`, if it has one.
    pub fn epoch(&self, conversation: &str) -> Option<u64> {
        let mut inner = self.lock();
        inner.group(conversation).ok().map(|g| g.epoch().as_u64())
    }

    /// The suite of `conversation` if it is encrypted (as far as this device knows: it is a
    /// member, or learned it from the bootstrap).
    pub fn suite(&self, conversation: &str) -> Option<Suite> {
        let mut inner = self.lock();
        if let Ok(g) = inner.group(conversation) {
            return suite_of(g.ciphersuite());
        }
        inner.marked(conversation)
    }

    /// Whether this device is an active member of `conversation`'s group.
    pub fn is_member(&self, conversation: &str) -> bool {
        let mut inner = self.lock();
        inner.group(conversation).is_ok_and(|g| g.is_active())
    }

    /// Records that `conversation` is encrypted with `suite` (from the bootstrap), so that this
    /// device never sends it plaintext, member yet or not.
    pub fn mark_encrypted(&self, conversation: &str, suite: Suite) -> Result<(), MlsError> {
        let mut inner = self.lock();
        let mut key = ENCRYPTED_KEY.to_vec();
        key.extend_from_slice(conversation.as_bytes());
        inner.set_own(key, suite.code().to_be_bytes().to_vec())?;
        inner.persist()
    }

    /// The member devices of `conversation`.
    pub fn members(&self, conversation: &str) -> Result<Vec<MlsDevice>, MlsError> {
        let mut inner = self.lock();
        Ok(inner
            .group(conversation)?
            .members()
            .filter_map(|m| device_of(&m.credential))
            .collect())
    }
}

/// The group of `conversation`, loaded from storage the first time.
fn group_in<'a>(
    groups: &'a mut HashMap<Vec<u8>, MlsGroup>,
    provider: &Provider,
    conversation: &str,
) -> Result<&'a mut MlsGroup, MlsError> {
    let id = mls_group_id(conversation);
    if !groups.contains_key(&id) {
        let group = MlsGroup::load(&provider.storage, &GroupId::from_slice(&id))
            .map_err(mls_err)?
            .ok_or_else(|| MlsError::NotMember(conversation.to_owned()))?;
        groups.insert(id.clone(), group);
    }
    groups
        .get_mut(&id)
        .ok_or_else(|| MlsError::NotMember(conversation.to_owned()))
}

fn device_of(credential: &Credential) -> Option<MlsDevice> {
    let basic = BasicCredential::try_from(credential.clone()).ok()?;
    let (user, peer) = parse_credential_identity(basic.identity())?;
    let peer: PeerId = peer.parse().ok()?;
    Some(MlsDevice {
        user: user.to_owned(),
        device: peer.to_bytes(),
    })
}

fn encode(message: &MlsMessageOut) -> Result<Vec<u8>, MlsError> {
    message.tls_serialize_detached().map_err(mls_err)
}

fn parse(bytes: &[u8]) -> Result<MlsMessageIn, MlsError> {
    MlsMessageIn::tls_deserialize_exact(bytes).map_err(|e| MlsError::Malformed(e.to_string()))
}

impl Inner {
    /// Writes what changed (or reverts memory to the table if the write fails), then passes
    /// `result` on.
    fn finish<T>(&mut self, result: Result<T, MlsError>) -> Result<T, MlsError> {
        match self.persist() {
            Ok(()) => result,
            Err(e) => {
                self.revert();
                Err(e)
            }
        }
    }

    fn persist(&mut self) -> Result<(), MlsError> {
        let values = self.provider.storage.values.read().map_err(storage_err)?;
        let changed: Vec<(&Vec<u8>, &Vec<u8>)> = values
            .iter()
            .filter(|(k, v)| self.persisted.get(*k) != Some(*v))
            .collect();
        let gone: Vec<Vec<u8>> = self
            .persisted
            .keys()
            .filter(|k| !values.contains_key(*k))
            .cloned()
            .collect();
        if changed.is_empty() && gone.is_empty() {
            return Ok(());
        }
        let mut txn = self.db.begin_write().map_err(storage_err)?;
        txn.set_durability(Durability::Immediate)
            .map_err(storage_err)?;
        {
            let mut table = txn.open_table(STATE).map_err(storage_err)?;
            for (k, v) in &changed {
                table
                    .insert(k.as_slice(), v.as_slice())
                    .map_err(storage_err)?;
            }
            for k in &gone {
                table.remove(k.as_slice()).map_err(storage_err)?;
            }
        }
        txn.commit().map_err(storage_err)?;
        let changed: Vec<(Vec<u8>, Vec<u8>)> = changed
            .into_iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        drop(values);
        for (k, v) in changed {
            self.persisted.insert(k, v);
        }
        for k in gone {
            self.persisted.remove(&k);
        }
        Ok(())
    }

    /// Back to what the table holds (a write failed: nothing of the failed operation left).
    fn revert(&mut self) {
        if let Ok(mut values) = self.provider.storage.values.write() {
            *values = self.persisted.clone();
        }
        self.groups.clear();
    }

    fn set_own(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), MlsError> {
        debug_assert!(key.starts_with(OWN));
        self.provider
            .storage
            .values
            .write()
            .map_err(storage_err)?
            .insert(key, value);
        Ok(())
    }

    fn get_own(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.provider.storage.values.read().ok()?.get(key).cloned()
    }

    fn remove_own(&mut self, key: &[u8]) -> Result<(), MlsError> {
        self.provider
            .storage
            .values
            .write()
            .map_err(storage_err)?
            .remove(key);
        Ok(())
    }

    fn marked(&self, conversation: &str) -> Option<Suite> {
        let mut key = ENCRYPTED_KEY.to_vec();
        key.extend_from_slice(conversation.as_bytes());
        let v = self.get_own(&key)?;
        Suite::from_code(u16::from_be_bytes(v.try_into().ok()?))
    }

    fn credential(&self) -> Credential {
        BasicCredential::new(credential_identity(&self.user, &self.peer.to_base58())).into()
    }

    /// This device's signing key for a suite's signature scheme (made once, kept).
    fn signer(&mut self, suite: Suite) -> Result<SignatureKeyPair, MlsError> {
        let scheme = ciphersuite(suite).signature_algorithm();
        let mut key = SIGNER_KEY.to_vec();
        key.extend_from_slice(&(scheme as u16).to_be_bytes());
        if let Some(bytes) = self.get_own(&key) {
            return serde_json::from_slice(&bytes).map_err(|e| MlsError::Storage(e.to_string()));
        }
        let signer = SignatureKeyPair::new(scheme).map_err(mls_err)?;
        let bytes = serde_json::to_vec(&signer).map_err(|e| MlsError::Storage(e.to_string()))?;
        self.set_own(key, bytes)?;
        Ok(signer)
    }

    fn credential_with_key(
        &mut self,
        suite: Suite,
    ) -> Result<(CredentialWithKey, SignatureKeyPair), MlsError> {
        let signer = self.signer(suite)?;
        Ok((
            CredentialWithKey {
                credential: self.credential(),
                signature_key: signer.to_public_vec().into(),
            },
            signer,
        ))
    }

    fn key_packages(&mut self, suite: Suite, count: usize) -> Result<Vec<Vec<u8>>, MlsError> {
        let (cwk, signer) = self.credential_with_key(suite)?;
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let bundle = KeyPackage::builder()
                .build(ciphersuite(suite), &self.provider, &signer, cwk.clone())
                .map_err(mls_err)?;
            out.push(
                bundle
                    .key_package()
                    .tls_serialize_detached()
                    .map_err(mls_err)?,
            );
        }
        Ok(out)
    }

    fn group(&mut self, conversation: &str) -> Result<&mut MlsGroup, MlsError> {
        group_in(&mut self.groups, &self.provider, conversation)
    }

    fn signer_of_group(&mut self, conversation: &str) -> Result<SignatureKeyPair, MlsError> {
        let cs = self.group(conversation)?.ciphersuite();
        let suite = suite_of(cs).ok_or(MlsError::Suite(cs as u16))?;
        self.signer(suite)
    }

    /// Validated key packages of the named devices, for `suite`.
    fn packages(
        &self,
        suite: Suite,
        packages: &[(MlsDevice, Vec<u8>)],
    ) -> Result<Vec<KeyPackage>, MlsError> {
        packages
            .iter()
            .map(|(device, bytes)| {
                let kp = KeyPackageIn::tls_deserialize_exact(bytes.as_slice())
                    .map_err(|e| MlsError::Malformed(e.to_string()))?
                    .validate(&self.provider.crypto, ProtocolVersion::Mls10)
                    .map_err(|e| MlsError::Refused(format!("a key package: {e}")))?;
                if kp.ciphersuite() != ciphersuite(suite) {
                    return Err(MlsError::Refused(format!(
                        "a key package of {} is not for {suite}",
                        device.user
                    )));
                }
                if device_of(kp.leaf_node().credential()).as_ref() != Some(device) {
                    return Err(MlsError::Refused(format!(
                        "a key package handed out for a device of {} names another device",
                        device.user
                    )));
                }
                Ok(kp)
            })
            .collect()
    }

    fn start(
        &mut self,
        conversation: &str,
        suite: Suite,
        packages: &[(MlsDevice, Vec<u8>)],
    ) -> Result<Commit, MlsError> {
        let id = mls_group_id(conversation);
        // A start that lost earlier leaves nothing behind.
        if let Ok(group) = self.group(conversation) {
            if group.epoch().as_u64() > 0 {
                return Err(MlsError::Refused(format!(
                    "{conversation} is already encrypted on this device"
                )));
            }
            let mut group = self.groups.remove(&id).expect("loaded above");
            group.delete(&self.provider.storage).map_err(mls_err)?;
        }
        let (cwk, signer) = self.credential_with_key(suite)?;
        let group = MlsGroup::new_with_group_id(
            &self.provider,
            &signer,
            &create_config(suite),
            GroupId::from_slice(&id),
            cwk,
        )
        .map_err(mls_err)?;
        self.groups.insert(id, group);
        self.commit(conversation, packages, &[])
    }

    fn commit(
        &mut self,
        conversation: &str,
        packages: &[(MlsDevice, Vec<u8>)],
        removed: &[MlsDevice],
    ) -> Result<Commit, MlsError> {
        let signer = self.signer_of_group(conversation)?;
        let suite = {
            let cs = self.group(conversation)?.ciphersuite();
            suite_of(cs).ok_or(MlsError::Suite(cs as u16))?
        };
        let key_packages = self.packages(suite, packages)?;
        let group = group_in(&mut self.groups, &self.provider, conversation)?;
        if group.pending_commit().is_some() {
            group
                .clear_pending_commit(&self.provider.storage)
                .map_err(mls_err)?;
        }
        let leaves: Vec<LeafNodeIndex> = group
            .members()
            .filter(|m| device_of(&m.credential).is_some_and(|d| removed.contains(&d)))
            .map(|m| m.index)
            .collect();
        let epoch = group.epoch().as_u64();
        let bundle = group
            .commit_builder()
            .propose_adds(key_packages)
            .propose_removals(leaves)
            .force_self_update(true)
            .load_psks(&self.provider.storage)
            .map_err(mls_err)?
            .create_group_info(true)
            .build(
                self.provider.rand(),
                self.provider.crypto(),
                &signer,
                |_| true,
            )
            .map_err(mls_err)?
            .stage_commit(&self.provider)
            .map_err(mls_err)?;
        let (commit, welcome, group_info) = bundle.into_messages();
        let added = packages.iter().map(|(d, _)| d.clone()).collect();
        self.pending(
            conversation,
            suite,
            epoch,
            (commit, welcome, group_info),
            added,
            removed.to_vec(),
        )
    }

    /// A commit made here, kept as this device's pending one for `conversation` (to recognise
    /// it if the bootstrap stored it but its answer was lost), in the form sent.
    fn pending(
        &mut self,
        conversation: &str,
        suite: Suite,
        epoch: u64,
        (commit, welcome, group_info): (
            MlsMessageOut,
            Option<MlsMessageOut>,
            Option<MlsMessageOut>,
        ),
        added: Vec<MlsDevice>,
        removed: Vec<MlsDevice>,
    ) -> Result<Commit, MlsError> {
        let commit = encode(&commit)?;
        let mut key = PENDING_KEY.to_vec();
        key.extend_from_slice(conversation.as_bytes());
        self.set_own(key, commit.clone())?;
        Ok(Commit {
            epoch,
            suite: suite.code(),
            commit,
            welcome: welcome.as_ref().map(encode).transpose()?,
            group_info: encode(
                &group_info.ok_or_else(|| MlsError::Mls("no group info made".into()))?,
            )?,
            added,
            removed,
        })
    }

    fn join_external(
        &mut self,
        conversation: &str,
        group_info: &[u8],
        was_member: bool,
    ) -> Result<Commit, MlsError> {
        let id = mls_group_id(conversation);
        let MlsMessageBodyIn::GroupInfo(info) = parse(group_info)?.extract() else {
            return Err(MlsError::Malformed("not a group info".into()));
        };
        let cs = info.ciphersuite();
        let suite = suite_of(cs).ok_or(MlsError::Suite(cs as u16))?;
        if info.group_id().as_slice() != id.as_slice() {
            return Err(MlsError::Refused(
                "the group info is of another conversation".into(),
            ));
        }
        // Whatever this device had of the group is stale.
        if self.group(conversation).is_ok() {
            let mut group = self.groups.remove(&id).expect("loaded above");
            group.delete(&self.provider.storage).map_err(mls_err)?;
        }
        let epoch = info.epoch().as_u64();
        let (cwk, signer) = self.credential_with_key(suite)?;
        let (group, bundle) = MlsGroup::external_commit_builder()
            .with_config(join_config())
            .build_group(&self.provider, info, cwk)
            .map_err(mls_err)?
            .load_psks(&self.provider.storage)
            .map_err(mls_err)?
            .create_group_info(true)
            .build(
                self.provider.rand(),
                self.provider.crypto(),
                &signer,
                |_| true,
            )
            .map_err(mls_err)?
            .finalize(&self.provider)
            .map_err(mls_err)?;
        let me = MlsDevice {
            user: self.user.clone(),
            device: self.peer.to_bytes(),
        };
        // An old leaf of this device (the bootstrap lists it as a member) is removed by the same
        // commit: openmls proposes that removal when the leaf has this device's signing key.
        let stale = was_member;
        let mut joining = JOINING_KEY.to_vec();
        joining.extend_from_slice(conversation.as_bytes());
        self.set_own(joining, Vec::new())?;
        self.groups.insert(id, group);
        let removed = if stale { vec![me.clone()] } else { Vec::new() };
        self.pending(
            conversation,
            suite,
            epoch,
            bundle.into_messages(),
            vec![me],
            removed,
        )
    }

    fn confirm(&mut self, conversation: &str) -> Result<u64, MlsError> {
        let mut joining = JOINING_KEY.to_vec();
        joining.extend_from_slice(conversation.as_bytes());
        self.remove_own(&joining)?;
        let group = group_in(&mut self.groups, &self.provider, conversation)?;
        group
            .merge_pending_commit(&self.provider)
            .map_err(mls_err)?;
        let epoch = group.epoch().as_u64();
        let suite = suite_of(group.ciphersuite());
        let mut key = PENDING_KEY.to_vec();
        key.extend_from_slice(conversation.as_bytes());
        self.remove_own(&key)?;
        if let Some(suite) = suite {
            let mut key = ENCRYPTED_KEY.to_vec();
            key.extend_from_slice(conversation.as_bytes());
            self.set_own(key, suite.code().to_be_bytes().to_vec())?;
        }
        Ok(epoch)
    }

    fn forget(&mut self, conversation: &str) -> Result<(), MlsError> {
        let mut key = PENDING_KEY.to_vec();
        key.extend_from_slice(conversation.as_bytes());
        self.remove_own(&key)?;
        let mut joining = JOINING_KEY.to_vec();
        joining.extend_from_slice(conversation.as_bytes());
        self.remove_own(&joining)?;
        if self.group(conversation).is_ok() {
            let mut group = self
                .groups
                .remove(&mls_group_id(conversation))
                .expect("loaded above");
            group.delete(&self.provider.storage).map_err(mls_err)?;
        }
        Ok(())
    }

    fn discard(&mut self, conversation: &str) -> Result<(), MlsError> {
        let id = mls_group_id(conversation);
        let mut key = PENDING_KEY.to_vec();
        key.extend_from_slice(conversation.as_bytes());
        self.remove_own(&key)?;
        let me = MlsDevice {
            user: self.user.clone(),
            device: self.peer.to_bytes(),
        };
        let mut joining = JOINING_KEY.to_vec();
        joining.extend_from_slice(conversation.as_bytes());
        let was_joining = self.get_own(&joining).is_some();
        let Ok(group) = group_in(&mut self.groups, &self.provider, conversation) else {
            return Ok(());
        };
        // A group that exists only through its pending commit (a start at epoch 0, an
        // external join) cannot stand without it.
        let own_only = was_joining
            || group.epoch().as_u64() == 0
            || !group.is_active()
            || !group
                .members()
                .any(|m| device_of(&m.credential).as_ref() == Some(&me));
        if own_only {
            self.remove_own(&joining)?;
            let mut group = self.groups.remove(&id).expect("loaded");
            group.delete(&self.provider.storage).map_err(mls_err)?;
        } else if group.pending_commit().is_some() {
            group
                .clear_pending_commit(&self.provider.storage)
                .map_err(mls_err)?;
        }
        Ok(())
    }

    fn join_welcome(
        &mut self,
        conversation: &str,
        welcome: &[u8],
        allowed: &dyn Fn(&str) -> bool,
    ) -> Result<u64, MlsError> {
        let id = mls_group_id(conversation);
        let welcome = match parse(welcome)?.extract() {
            MlsMessageBodyIn::Welcome(w) => w,
            _ => return Err(MlsError::Malformed("not a welcome".into())),
        };
        let staged = StagedWelcome::new_from_welcome(&self.provider, &join_config(), welcome, None)
            .map_err(mls_err)?;
        let cs = staged.group_context().ciphersuite();
        if suite_of(cs).is_none() {
            return Err(MlsError::Suite(cs as u16));
        }
        if staged.group_context().group_id().as_slice() != id.as_slice() {
            return Err(MlsError::Refused(
                "the welcome is to another conversation".into(),
            ));
        }
        if let Some(stranger) = staged
            .members()
            .filter_map(|m| device_of(&m.credential))
            .find(|d| !allowed(&d.user))
        {
            return Err(MlsError::Refused(format!(
                "the group has a device of {}, who is not in the conversation",
                stranger.user
            )));
        }
        // A group this device had before (left, or lost a race) is replaced.
        if self.group(conversation).is_ok() {
            let mut old = self.groups.remove(&id).expect("loaded above");
            old.delete(&self.provider.storage).map_err(mls_err)?;
        }
        let group = staged.into_group(&self.provider).map_err(mls_err)?;
        let epoch = group.epoch().as_u64();
        let suite = suite_of(group.ciphersuite());
        self.groups.insert(id, group);
        if let Some(suite) = suite {
            let mut key = ENCRYPTED_KEY.to_vec();
            key.extend_from_slice(conversation.as_bytes());
            self.set_own(key, suite.code().to_be_bytes().to_vec())?;
        }
        Ok(epoch)
    }

    fn apply_commit(
        &mut self,
        conversation: &str,
        bytes: &[u8],
        allowed: &dyn Fn(&str) -> bool,
        may_remove: &dyn Fn(&MlsDevice, &MlsDevice) -> bool,
    ) -> Result<Applied, MlsError> {
        let message = parse(bytes)?
            .try_into_protocol_message()
            .map_err(|e| MlsError::Malformed(e.to_string()))?;
        let mut pending_key = PENDING_KEY.to_vec();
        pending_key.extend_from_slice(conversation.as_bytes());
        let own_pending = self.get_own(&pending_key);
        let group = group_in(&mut self.groups, &self.provider, conversation)?;
        let local = group.epoch().as_u64();
        let epoch = message.epoch().as_u64();
        if epoch < local {
            return Ok(Applied {
                epoch: local,
                removed_self: false,
            });
        }
        if epoch > local {
            return Err(MlsError::Behind {
                message: epoch,
                local,
            });
        }
        let mut joining = JOINING_KEY.to_vec();
        joining.extend_from_slice(conversation.as_bytes());
        let joining_now = self.get_own(&joining).is_some();
        let group = group_in(&mut self.groups, &self.provider, conversation)?;
        if joining_now {
            if own_pending.as_deref() == Some(bytes) {
                // Our external join, stored though its answer never came.
                group
                    .merge_pending_commit(&self.provider)
                    .map_err(mls_err)?;
                let epoch = group.epoch().as_u64();
                self.remove_own(&pending_key)?;
                self.remove_own(&joining)?;
                return Ok(Applied {
                    epoch,
                    removed_self: false,
                });
            }
            // Another commit took that epoch: the join is void, and so is this group.
            self.forget(conversation)?;
            return Err(MlsError::NotMember(conversation.to_owned()));
        }
        // Our own commit, stored by the bootstrap though its answer never came.
        if group.pending_commit().is_some() && own_pending.as_deref() == Some(bytes) {
            group
                .merge_pending_commit(&self.provider)
                .map_err(mls_err)?;
            let epoch = group.epoch().as_u64();
            self.remove_own(&pending_key)?;
            return Ok(Applied {
                epoch,
                removed_self: false,
            });
        }
        if group.pending_commit().is_some() {
            group
                .clear_pending_commit(&self.provider.storage)
                .map_err(mls_err)?;
        }
        self.remove_own(&pending_key)?;
        let group = group_in(&mut self.groups, &self.provider, conversation)?;
        let processed = group
            .process_message(&self.provider, message)
            .map_err(mls_err)?;
        let sender = device_of(processed.credential());
        let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
            return Err(MlsError::Malformed("not a commit".into()));
        };
        match &sender {
            Some(d) if allowed(&d.user) => {}
            Some(d) => {
                return Err(MlsError::Refused(format!(
                    "a commit by {}, who is not in the conversation",
                    d.user
                )));
            }
            None => {
                return Err(MlsError::Refused(
                    "a commit by an unknown credential".into(),
                ));
            }
        }
        if let Some(committer) = &sender {
            for remove in staged.remove_proposals() {
                let removed = group
                    .member(remove.remove_proposal().removed())
                    .and_then(device_of);
                match removed {
                    Some(r) if r.user == committer.user || may_remove(committer, &r) => {}
                    Some(r) => {
                        return Err(MlsError::Refused(format!(
                            "{} may not remove a device of {}",
                            committer.user, r.user
                        )));
                    }
                    None => {
                        return Err(MlsError::Refused("a commit removes an unknown leaf".into()));
                    }
                }
            }
        }
        for add in staged.add_proposals() {
            match device_of(add.add_proposal().key_package().leaf_node().credential()) {
                Some(d) if allowed(&d.user) => {}
                Some(d) => {
                    return Err(MlsError::Refused(format!(
                        "a commit adds a device of {}, who is not in the conversation",
                        d.user
                    )));
                }
                None => {
                    return Err(MlsError::Refused(
                        "a commit adds an unknown credential".into(),
                    ));
                }
            }
        }
        let removed_self = staged.self_removed();
        group
            .merge_staged_commit(&self.provider, *staged)
            .map_err(mls_err)?;
        let epoch = group.epoch().as_u64();
        if removed_self {
            let id = mls_group_id(conversation);
            let mut group = self.groups.remove(&id).expect("loaded");
            group.delete(&self.provider.storage).map_err(mls_err)?;
        }
        Ok(Applied {
            epoch,
            removed_self,
        })
    }

    fn encrypt(&mut self, conversation: &str, plaintext: &[u8]) -> Result<Vec<u8>, MlsError> {
        let signer = self.signer_of_group(conversation)?;
        let group = group_in(&mut self.groups, &self.provider, conversation)?;
        if !group.is_active() {
            return Err(MlsError::NotMember(conversation.to_owned()));
        }
        let message = group
            .create_message(&self.provider, &signer, plaintext)
            .map_err(mls_err)?;
        encode(&message)
    }

    fn decrypt(&mut self, conversation: &str, bytes: &[u8]) -> Result<Opened, MlsError> {
        let message = parse(bytes)?
            .try_into_protocol_message()
            .map_err(|e| MlsError::Malformed(e.to_string()))?;
        if message.group_id().as_slice() != mls_group_id(conversation).as_slice() {
            return Err(MlsError::Refused(
                "a message of another conversation".into(),
            ));
        }
        let epoch = message.epoch().as_u64();
        let group = group_in(&mut self.groups, &self.provider, conversation)?;
        let local = group.epoch().as_u64();
        if epoch > local {
            return Err(MlsError::Behind {
                message: epoch,
                local,
            });
        }
        let processed = group
            .process_message(&self.provider, message)
            .map_err(|e| MlsError::Undecryptable(format!("{e}")))?;
        let sender = device_of(processed.credential())
            .ok_or_else(|| MlsError::Refused("a message from an unknown credential".into()))?;
        let ProcessedMessageContent::ApplicationMessage(app) = processed.into_content() else {
            return Err(MlsError::Malformed("not an application message".into()));
        };
        let peer =
            PeerId::from_bytes(&sender.device).map_err(|e| MlsError::Malformed(e.to_string()))?;
        Ok(Opened {
            user: sender.user,
            peer,
            plaintext: app.into_bytes(),
            epoch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One device: its state in a temp dir (kept for reopening).
    struct Device {
        mls: Mls,
        dir: tempfile::TempDir,
        user: String,
        peer: PeerId,
    }

    impl Device {
        fn new(user: &str) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let peer = PeerId::random();
            let mls = Mls::open(&dir.path().join("mls.redb"), user, peer).unwrap();
            Self {
                mls,
                dir,
                user: user.into(),
                peer,
            }
        }

        fn id(&self) -> MlsDevice {
            MlsDevice {
                user: self.user.clone(),
                device: self.peer.to_bytes(),
            }
        }

        fn package(&self, suite: Suite) -> (MlsDevice, Vec<u8>) {
            (
                self.id(),
                self.mls.key_packages(suite, 1).unwrap().remove(0),
            )
        }

        fn reopen(self) -> Self {
            let Device {
                mls,
                dir,
                user,
                peer,
            } = self;
            drop(mls);
            let mls = Mls::open(&dir.path().join("mls.redb"), &user, peer).unwrap();
            Self {
                mls,
                dir,
                user,
                peer,
            }
        }
    }

    const CONV: &str = "group:g1";

    fn anyone(_: &str) -> bool {
        true
    }

    /// `a` starts the conversation with the others; they join by the Welcome.
    fn started(suite: Suite, a: &Device, others: &[&Device]) {
        let packages: Vec<_> = others.iter().map(|d| d.package(suite)).collect();
        let commit = a.mls.start(CONV, suite, &packages).unwrap();
        assert_eq!(commit.epoch, 0);
        assert_eq!(a.mls.confirm(CONV).unwrap(), 1);
        for d in others {
            let epoch = d
                .mls
                .join_welcome(CONV, commit.welcome.as_ref().unwrap(), &anyone)
                .unwrap();
            assert_eq!(epoch, 1);
        }
    }

    fn roundtrip(from: &Device, to: &[&Device], text: &str) {
        let ct = from.mls.encrypt(CONV, text.as_bytes()).unwrap();
        assert!(!ct.windows(text.len()).any(|w| w == text.as_bytes()));
        for d in to {
            let opened = d.mls.decrypt(CONV, &ct).unwrap();
            assert_eq!(opened.plaintext, text.as_bytes());
            assert_eq!(opened.user, from.user);
            assert_eq!(opened.peer, from.peer);
        }
    }

    #[test]
    fn every_allowed_suite_encrypts_end_to_end_and_survives_a_restart() {
        for suite in Suite::ALL {
            let a = Device::new("alice");
            let b = Device::new("bob");
            started(suite, &a, &[&b]);
            assert_eq!(a.mls.suite(CONV), Some(suite));
            assert_eq!(b.mls.suite(CONV), Some(suite));
            roundtrip(&a, &[&b], "hello bob");
            roundtrip(&b, &[&a], "hello alice");
            let b = b.reopen();
            let a = a.reopen();
            roundtrip(&a, &[&b], "after a restart");
            roundtrip(&b, &[&a], "both ways");
            // A message is read once: its key is gone.
            let ct = a.mls.encrypt(CONV, b"once").unwrap();
            b.mls.decrypt(CONV, &ct).unwrap();
            assert!(matches!(
                b.mls.decrypt(CONV, &ct),
                Err(MlsError::Undecryptable(_))
            ));
        }
    }

    #[test]
    fn a_removed_device_cannot_read_what_follows() {
        let suite = Suite::DEFAULT;
        let a = Device::new("alice");
        let b = Device::new("bob");
        let c = Device::new("carol");
        started(suite, &a, &[&b, &c]);
        roundtrip(&a, &[&b, &c], "all three");
        // Carol's state as it was before the removal (a copy of her file).
        let stale_dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            c.dir.path().join("mls.redb"),
            stale_dir.path().join("mls.redb"),
        )
        .unwrap();

        let commit = a.mls.commit(CONV, &[], &[c.id()]).unwrap();
        a.mls.confirm(CONV).unwrap();
        assert_eq!(
            b.mls
                .apply_commit(CONV, &commit.commit, &anyone)
                .unwrap()
                .epoch,
            2
        );
        let applied = c.mls.apply_commit(CONV, &commit.commit, &anyone).unwrap();
        assert!(applied.removed_self);
        assert!(!c.mls.is_member(CONV));

        let ct = a.mls.encrypt(CONV, b"after carol left").unwrap();
        assert_eq!(
            b.mls.decrypt(CONV, &ct).unwrap().plaintext,
            b"after carol left"
        );
        assert!(matches!(
            c.mls.decrypt(CONV, &ct),
            Err(MlsError::NotMember(_))
        ));
        // Nor with her state from before the removal: the new epoch's keys were never hers,
        // and the commit that made it gives her none.
        let peer = c.peer;
        drop(c);
        let stale = Mls::open(&stale_dir.path().join("mls.redb"), "carol", peer).unwrap();
        assert_eq!(stale.epoch(CONV), Some(1));
        assert!(matches!(
            stale.decrypt(CONV, &ct),
            Err(MlsError::Behind {
                message: 2,
                local: 1
            })
        ));
        assert!(
            stale
                .apply_commit(CONV, &commit.commit, &anyone)
                .unwrap()
                .removed_self
        );
        assert!(matches!(
            stale.decrypt(CONV, &ct),
            Err(MlsError::NotMember(_))
        ));
    }

    #[test]
    fn two_commits_at_one_epoch_one_wins_the_other_retries() {
        let suite = Suite::X25519ChaCha20Poly1305;
        let a = Device::new("alice");
        let b = Device::new("bob");
        let c = Device::new("carol");
        let d = Device::new("dave");
        started(suite, &a, &[&b, &c]);
        // Both admins commit at epoch 1: Alice adds Dave, Bob removes Carol.
        let from_a = a.mls.commit(CONV, &[d.package(suite)], &[]).unwrap();
        let from_b = b.mls.commit(CONV, &[], &[c.id()]).unwrap();
        assert_eq!((from_a.epoch, from_b.epoch), (1, 1));
        // The bootstrap stores Alice's first: Bob's loses.
        a.mls.confirm(CONV).unwrap();
        b.mls.discard(CONV).unwrap();
        b.mls.apply_commit(CONV, &from_a.commit, &anyone).unwrap();
        c.mls.apply_commit(CONV, &from_a.commit, &anyone).unwrap();
        d.mls
            .join_welcome(CONV, from_a.welcome.as_ref().unwrap(), &anyone)
            .unwrap();
        // Bob retries at epoch 2 and wins.
        let retry = b.mls.commit(CONV, &[], &[c.id()]).unwrap();
        assert_eq!(retry.epoch, 2);
        b.mls.confirm(CONV).unwrap();
        for x in [&a, &d] {
            x.mls.apply_commit(CONV, &retry.commit, &anyone).unwrap();
        }
        assert!(
            c.mls
                .apply_commit(CONV, &retry.commit, &anyone)
                .unwrap()
                .removed_self
        );
        for x in [&a, &b, &d] {
            assert_eq!(x.mls.epoch(CONV), Some(3));
        }
        roundtrip(&a, &[&b, &d], "from alice");
        roundtrip(&b, &[&a, &d], "from bob");
        roundtrip(&d, &[&a, &b], "from dave");
        let members = a.mls.members(CONV).unwrap();
        assert_eq!(members.len(), 3);
        assert!(!members.contains(&c.id()));
    }

    #[test]
    fn a_second_device_joins_by_external_commit_and_strangers_are_refused() {
        let suite = Suite::DEFAULT;
        let a = Device::new("alice");
        let b = Device::new("bob");
        started(suite, &a, &[&b]);
        let commit = a.mls.commit(CONV, &[], &[]).unwrap();
        a.mls.confirm(CONV).unwrap();
        b.mls.apply_commit(CONV, &commit.commit, &anyone).unwrap();
        // Bob's second device joins from the latest group info.
        let b2 = Device::new("bob");
        let join = b2
            .mls
            .join_external(CONV, &commit.group_info, false)
            .unwrap();
        assert_eq!(join.epoch, 2);
        b2.mls.confirm(CONV).unwrap();
        a.mls.apply_commit(CONV, &join.commit, &anyone).unwrap();
        b.mls.apply_commit(CONV, &join.commit, &anyone).unwrap();
        roundtrip(&a, &[&b, &b2], "to both of bob's devices");
        roundtrip(&b2, &[&a, &b], "from the new device");

        // A commit adding someone who is not in the conversation is not merged.
        let eve = Device::new("eve");
        let bad = a.mls.commit(CONV, &[eve.package(suite)], &[]).unwrap();
        let only_members = |u: &str| u == "alice" || u == "bob";
        assert!(matches!(
            b.mls.apply_commit(CONV, &bad.commit, &only_members),
            Err(MlsError::Refused(_))
        ));
        assert_eq!(b.mls.epoch(CONV), Some(3));
        // A message from an epoch this device has not reached asks for the commits.
        a.mls.confirm(CONV).unwrap();
        let ahead = a.mls.encrypt(CONV, b"epoch 4").unwrap();
        assert!(matches!(
            b2.mls.decrypt(CONV, &ahead),
            Err(MlsError::Behind {
                message: 4,
                local: 3
            })
        ));
    }

    #[test]
    fn a_device_that_lost_its_group_joins_again_in_place_of_its_old_leaf() {
        let suite = Suite::DEFAULT;
        let a = Device::new("alice");
        let b = Device::new("bob");
        started(suite, &a, &[&b]);
        let commit = a.mls.commit(CONV, &[], &[]).unwrap();
        a.mls.confirm(CONV).unwrap();
        // Bob's device misses the commit and drops its group (its state no longer fits).
        b.mls.forget(CONV).unwrap();
        assert!(!b.mls.is_member(CONV));
        let rejoin = b.mls.join_external(CONV, &commit.group_info, true).unwrap();
        assert_eq!(rejoin.added, vec![b.id()]);
        assert_eq!(
            rejoin.removed,
            vec![b.id()],
            "the old leaf goes with the same commit"
        );
        b.mls.confirm(CONV).unwrap();
        a.mls.apply_commit(CONV, &rejoin.commit, &anyone).unwrap();
        assert_eq!(a.mls.members(CONV).unwrap().len(), 2);
        roundtrip(&a, &[&b], "in place again");
        roundtrip(&b, &[&a], "and back");
    }

    #[test]
    fn a_member_may_not_remove_another_members_device_unless_the_rules_say_so() {
        let suite = Suite::DEFAULT;
        let a = Device::new("alice");
        let b = Device::new("bob");
        let c = Device::new("carol");
        started(suite, &a, &[&b, &c]);
        // Bob (no admin) removes carol's device; carol is still in the conversation.
        let kick = b.mls.commit(CONV, &[], &[c.id()]).unwrap();
        let admins_only = |committer: &MlsDevice, _: &MlsDevice| committer.user == "alice";
        assert!(matches!(
            a.mls
                .apply_commit_checked(CONV, &kick.commit, &anyone, &admins_only),
            Err(MlsError::Refused(_))
        ));
        assert_eq!(a.mls.epoch(CONV), Some(1), "not merged");
        // The same from alice (an admin) goes through.
        b.mls.discard(CONV).unwrap();
        let removal = a.mls.commit(CONV, &[], &[c.id()]).unwrap();
        a.mls.confirm(CONV).unwrap();
        b.mls
            .apply_commit_checked(CONV, &removal.commit, &anyone, &admins_only)
            .unwrap();
        roundtrip(&a, &[&b], "without carol");
    }

    #[test]
    fn a_key_package_naming_another_device_is_refused() {
        let a = Device::new("alice");
        let b = Device::new("bob");
        let (_, package) = b.package(Suite::DEFAULT);
        let liar = MlsDevice {
            user: "bob".into(),
            device: PeerId::random().to_bytes(),
        };
        assert!(matches!(
            a.mls.start(CONV, Suite::DEFAULT, &[(liar, package)]),
            Err(MlsError::Refused(_))
        ));
        // The wrong suite is refused too.
        let (id, package) = b.package(Suite::X25519ChaCha20Poly1305);
        assert!(matches!(
            a.mls.start(CONV, Suite::DEFAULT, &[(id, package)]),
            Err(MlsError::Refused(_))
        ));
    }
}
