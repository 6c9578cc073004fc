//! The bootstrap's storage: one redb file (`bootstrap.redb`) in the data dir. Only this module and
//! its children know redb; services see [`Store`], [`Tx`] and plain records.
//!
//! Every write is one durable transaction ([`Store::write`]): a closure that reads and writes
//! through [`Tx`], so a service's check-then-act (e.g. "not friends yet, so add a request") is
//! atomic. Reads that need no consistency with a write use [`Store::read`].
//!
//! A mailbox (`mailbox_*` on [`Tx`]) is one account's sequence of [`MailboxEntry`]s: the direct
//! messages it sent and received (deduplicated by author and message id) and the delivery and
//! read receipts about them (never deduplicated), numbered by a per-owner sequence that only
//! grows. A per-owner mark records up to where the incoming messages were reported delivered.
//!
//! A group ([`GroupRecord`]; [`Tx::group`], [`Tx::put_group`], [`Tx::remove_group`],
//! [`Tx::user_groups`]) is stored whole under its id, with an index of each account's groups that
//! the writes keep in step with the members.
//!
//! A recall or deletion rewrites an entry in place ([`Tx::mailbox_replace_item`]): the entry keeps
//! its number and envelope and holds a tombstone instead of the message; [`Tx::mailbox_copy`]
//! finds a message's entry by author and id, [`Tx::mailbox_authors_of`] by id alone.
//!
//! The kept broadcasts (`broadcast_*` on [`Tx`]) are one log for the whole server, numbered by a
//! sequence that only grows, bounded by count and age, indexed by message id and device for
//! deduplication and recalls.
//!
//! An encrypted conversation (`mls_*` on [`Tx`]) is one [`MlsRecord`] under its name, the commits
//! that left each of its epochs, the Welcomes waiting for devices, and each account's encrypted
//! direct conversations; the key packages devices published are stored per device and suite.
//!
//! An account's settings ([`Tx::settings`], [`Tx::put_settings`], [`Tx::remove_settings`]) are
//! one record under its name; [`Tx::blocks`] answers "did this account block that address?" with
//! one lookup, for the requests that enforce blocking.

pub mod backup;
pub(crate) mod tables;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use confab_protocol::bootstrap::{MailboxEntry, MailboxItem};
use confab_protocol::{ChatMessage, ContentHash, MessageId};
use redb::{
    Database, DatabaseError, Durability, ReadTransaction, ReadableDatabase, ReadableTable,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};

use tables::*;

/// The file name of the database inside the data dir.
pub const STORE_FILE: &str = "bootstrap.redb";

/// The store failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process has the database open.
    #[error("{0} is in use by another confab-bootstrap")]
    Locked(PathBuf),
    /// There is no database where one was expected ([`Store::open_existing`]).
    #[error("no database at {0}")]
    Missing(PathBuf),
    /// The database or the disk failed.
    #[error("database: {0}")]
    Database(String),
    /// A record could not be read back.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

impl<E: Into<redb::Error>> From<E> for StoreError {
    fn from(e: E) -> Self {
        StoreError::Database(e.into().to_string())
    }
}

/// An account as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// The username (normalised).
    pub user: String,
    /// The argon2id hash of the password as a PHC string (parameters included, so they can rise).
    pub password_phc: String,
    /// When the account was created (unix ms).
    pub created_at: u64,
    /// Display name.
    pub nickname: String,
    /// Status line.
    pub signature: String,
    /// The avatar's hash, if any.
    pub avatar: Option<ContentHash>,
}

/// How two users relate. Stored on both sides: `Outgoing` at the asker is `Incoming` at the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// Nothing.
    None,
    /// Friends.
    Friends,
    /// This user asked the other.
    Outgoing,
    /// The other asked this user.
    Incoming,
}

impl Relation {
    fn to_u8(self) -> u8 {
        match self {
            Relation::None => 0,
            Relation::Friends => 1,
            Relation::Outgoing => 2,
            Relation::Incoming => 3,
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => Relation::Friends,
            2 => Relation::Outgoing,
            3 => Relation::Incoming,
            _ => Relation::None,
        }
    }

    /// The same relation seen from the other side.
    pub fn mirrored(self) -> Self {
        match self {
            Relation::Outgoing => Relation::Incoming,
            Relation::Incoming => Relation::Outgoing,
            other => other,
        }
    }
}

/// Counts for `stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Accounts.
    pub users: u64,
    /// Devices bound to accounts.
    pub devices: u64,
}

#[derive(Serialize, Deserialize)]
struct AvatarRecord {
    mime: String,
    #[serde(with = "serde_bytes")]
    bytes: Vec<u8>,
}

/// Sets Unix permission bits (no-op elsewhere).
fn restrict(path: &Path, mode: u32) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| StoreError::Database(format!("{}: {e}", path.display())))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

fn to_cbor<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    cbor4ii::serde::to_vec(Vec::new(), v).map_err(|e| StoreError::Database(format!("{e:?}")))
}

fn from_cbor<T: for<'a> Deserialize<'a>>(b: &[u8]) -> Result<T, StoreError> {
    cbor4ii::serde::from_slice(b).map_err(|e| StoreError::Corrupt(format!("{e:?}")))
}

/// A mailbox entry as stored before entries could hold receipts: a `message` field where there is
/// an `item` now. Such records are read as [`MailboxItem::Message`], so a database written by an
/// older server keeps syncing and expiring.
#[derive(Deserialize)]
struct LegacyMailboxEntry {
    seq: u64,
    conversation: String,
    from_user: String,
    #[serde(with = "serde_bytes")]
    from_device: Vec<u8>,
    outgoing: bool,
    stored_at: u64,
    message: ChatMessage,
}

/// Decodes a stored mailbox entry, in the current form or the one before receipts.
fn decode_entry(raw: &[u8]) -> Result<MailboxEntry, StoreError> {
    from_cbor::<MailboxEntry>(raw).or_else(|error| match from_cbor::<LegacyMailboxEntry>(raw) {
        Ok(old) => Ok(MailboxEntry {
            seq: old.seq,
            conversation: old.conversation,
            from_user: old.from_user,
            from_device: old.from_device,
            outgoing: old.outgoing,
            stored_at: old.stored_at,
            item: MailboxItem::Message(old.message),
        }),
        Err(_) => Err(error),
    })
}

/// The handle to the database. Cheap to clone; its methods block (call them off the event loop),
/// except [`Store::write_batched`], which is async.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    path: PathBuf,
    committer: std::sync::mpsc::SyncSender<Job>,
}

/// What a batched write job leaves for after the commit: the answer to send, given the commit's
/// outcome.
type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A batched write: runs inside the shared transaction.
type Job = Box<dyn FnOnce(&mut Tx) -> Finish + Send>;

/// The group-committing writer: takes every job waiting (up to `limits::MAX_COMMIT_BATCH`), runs
/// them in one write transaction and commits once, so N messages cost one fsync, not N. It holds
/// the database weakly: when the last `Store` goes, the database closes at once.
fn run_committer(db: std::sync::Weak<Database>, jobs: std::sync::mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < crate::config::limits::MAX_COMMIT_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let Some(db) = db.upgrade() else {
            for job in batch {
                drop(job);
            }
            return;
        };
        let outcome = (|| {
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            let mut tx = Tx {
                txn: Txn::Write(Box::new(txn)),
            };
            let finishes: Vec<Finish> = batch.into_iter().map(|job| job(&mut tx)).collect();
            let committed = match tx.txn {
                Txn::Write(txn) => txn.commit().map_err(StoreError::from),
                Txn::Read(_) => Ok(()),
            };
            Ok::<_, StoreError>((finishes, committed))
        })();
        match outcome {
            Ok((finishes, committed)) => {
                for finish in finishes {
                    finish(committed.clone());
                }
            }
            Err(e) => tracing::error!("batched write failed before running: {e}"),
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or creates) the database in `data_dir`, creating every table. Returns the store and
    /// the server's key, storing `fresh_identity` if there is none yet.
    pub fn open(data_dir: &Path, fresh_identity: Vec<u8>) -> Result<(Store, Vec<u8>), StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::Database(format!("{}: {e}", data_dir.display())))?;
        let path = data_dir.join(STORE_FILE);
        let db = Database::create(&path).map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => StoreError::Locked(path.clone()),
            other => StoreError::Database(format!("{}: {other}", path.display())),
        })?;
        // The file holds the server's private key and every password hash: owner only.
        restrict(data_dir, 0o700)?;
        restrict(&path, 0o600)?;
        let store = Store::wrap(db, path);
        let identity = store.write(|tx| {
            tx.create_tables()?;
            let mut meta = tx.w()?.open_table(META)?;
            let stored = meta.get(KEY_IDENTITY)?.map(|v| v.value().to_vec());
            Ok::<_, StoreError>(match stored {
                Some(k) => k,
                None => {
                    meta.insert(KEY_IDENTITY, fresh_identity.as_slice())?;
                    fresh_identity
                }
            })
        })?;
        Ok((store, identity))
    }

    /// Opens the database of an existing data dir, never creating one and never storing an
    /// identity: for offline administration (`confab-bootstrap user list` with the server
    /// stopped). [`StoreError::Locked`] while a server has it open.
    pub fn open_existing(data_dir: &Path) -> Result<Store, StoreError> {
        let path = data_dir.join(STORE_FILE);
        if !path.is_file() {
            return Err(StoreError::Missing(path));
        }
        let db = Database::open(&path).map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => StoreError::Locked(path.clone()),
            other => StoreError::Database(format!("{}: {other}", path.display())),
        })?;
        Ok(Store::wrap(db, path))
    }

    fn wrap(db: Database, path: PathBuf) -> Store {
        let db = Arc::new(db);
        let (committer, jobs) = std::sync::mpsc::sync_channel(crate::config::limits::COMMIT_QUEUE);
        let weak = Arc::downgrade(&db);
        let spawned = std::thread::Builder::new()
            .name("bootstrap-commit".into())
            .spawn(move || run_committer(weak, jobs));
        if let Err(e) = spawned {
            tracing::error!("cannot start the commit thread: {e}");
        }
        Store {
            db,
            path,
            committer,
        }
    }

    /// Runs `f` inside a write transaction shared with other concurrent callers, committed
    /// durably once for all of them (group commit); returns `f`'s answer after that commit.
    /// `f` must decide before it writes: an `Err` from it must leave nothing written, since the
    /// transaction goes on for the others.
    pub async fn write_batched<T, E>(
        &self,
        f: impl FnOnce(&mut Tx) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel::<Result<T, E>>();
        let job: Job = Box::new(move |tx| {
            let result = f(tx);
            Box::new(move |committed: Result<(), StoreError>| {
                let _ = reply.send(committed.map_err(E::from).and(result));
            })
        });
        let committer = self.committer.clone();
        tokio::task::spawn_blocking(move || committer.send(job))
            .await
            .map_err(|e| E::from(StoreError::Database(e.to_string())))?
            .map_err(|_| E::from(StoreError::Database("the commit thread is gone".into())))?;
        answer
            .await
            .map_err(|_| E::from(StoreError::Database("a batched write was dropped".into())))?
    }

    /// Where the database file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in one durable write transaction; commits if it returns `Ok`.
    pub fn write<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut txn = self.db.begin_write().map_err(StoreError::from)?;
        txn.set_durability(Durability::Immediate)
            .map_err(StoreError::from)?;
        let mut tx = Tx {
            txn: Txn::Write(Box::new(txn)),
        };
        let out = f(&mut tx)?;
        if let Txn::Write(txn) = tx.txn {
            txn.commit().map_err(StoreError::from)?;
        }
        Ok(out)
    }

    /// Runs `f` on a consistent snapshot (a read transaction: it never waits for writers, and
    /// the write operations of [`Tx`] refuse in it).
    pub fn read<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        let txn = self.db.begin_read().map_err(StoreError::from)?;
        let mut tx = Tx {
            txn: Txn::Read(txn),
        };
        f(&mut tx)
    }

    /// The username a device is bound to. Uses a read transaction: never waits for writers.
    pub fn device_user(&self, device: &str) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DEVICE_USER)?;
        Ok(table.get(device)?.map(|v| v.value().to_owned()))
    }

    /// Accounts and devices.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        use redb::ReadableTableMetadata;
        let txn = self.db.begin_read()?;
        Ok(StoreStats {
            users: txn.open_table(USERS)?.len()?,
            devices: txn.open_table(DEVICE_USER)?.len()?,
        })
    }
}

/// A transaction with domain operations: a write transaction from [`Store::write`], or a
/// read-only snapshot from [`Store::read`].
pub struct Tx {
    txn: Txn,
}

enum Txn {
    Read(ReadTransaction),
    Write(Box<WriteTransaction>),
}

/// Opens `$def` from either kind of transaction and evaluates `$body` with it as `$t` (the two
/// table types differ, but both are `ReadableTable`).
macro_rules! with_table {
    ($tx:expr, $def:expr, |$t:ident| $body:expr) => {
        match &$tx.txn {
            Txn::Read(txn) => {
                let $t = txn.open_table($def)?;
                $body
            }
            Txn::Write(txn) => {
                let $t = txn.open_table($def)?;
                $body
            }
        }
    };
}

// Declared after `with_table!`, which its `Tx` methods use.
mod broadcasts;
mod groups;
mod holds;
mod mls;
mod recall;
mod settings;
pub use broadcasts::Appended;
pub use groups::{GroupMember, GroupRecord};
pub use holds::{HoldRecord, HoldRef};
pub use mls::MlsRecord;

impl Tx {
    /// The write transaction, or an error in a read-only snapshot.
    fn w(&self) -> Result<&WriteTransaction, StoreError> {
        match &self.txn {
            Txn::Write(txn) => Ok(txn),
            Txn::Read(_) => Err(StoreError::Database(
                "a write inside a read-only transaction".into(),
            )),
        }
    }

    fn create_tables(&mut self) -> Result<(), StoreError> {
        self.w()?.open_table(META)?;
        self.w()?.open_table(USERS)?;
        self.w()?.open_table(DEVICE_USER)?;
        self.w()?.open_table(USER_DEVICES)?;
        self.w()?.open_table(RELATIONS)?;
        self.w()?.open_table(AVATARS)?;
        self.w()?.open_table(AVATAR_REFS)?;
        self.w()?.open_table(MAILBOX)?;
        self.w()?.open_table(MAILBOX_IDS)?;
        self.w()?.open_table(MAILBOX_SEQ)?;
        self.w()?.open_table(MAILBOX_DELIVERED)?;
        self.w()?.open_table(GROUPS)?;
        self.w()?.open_table(USER_GROUPS)?;
        self.w()?.open_table(SETTINGS)?;
        self.w()?.open_table(BROADCASTS)?;
        self.w()?.open_table(BROADCAST_IDS)?;
        self.w()?.open_table(BROADCAST_SEQ)?;
        self.w()?.open_table(HOLDS)?;
        self.w()?.open_table(HOLD_REFS)?;
        self.w()?.open_table(HOLD_USAGE)?;
        self.w()?.open_table(MLS_KEY_PACKAGES)?;
        self.w()?.open_table(MLS_CONVERSATIONS)?;
        self.w()?.open_table(MLS_GROUP_INFOS)?;
        self.w()?.open_table(MLS_COMMITS)?;
        self.w()?.open_table(MLS_WELCOMES)?;
        self.w()?.open_table(MLS_USER_DMS)?;
        Ok(())
    }

    /// An account.
    pub fn user(&self, user: &str) -> Result<Option<UserRecord>, StoreError> {
        let value: Option<Vec<u8>> =
            with_table!(self, USERS, |t| t.get(user)?.map(|v| v.value().to_vec()));
        value.map(|v| from_cbor(&v)).transpose()
    }

    /// Creates or replaces an account record.
    pub fn put_user(&mut self, record: &UserRecord) -> Result<(), StoreError> {
        self.w()?
            .open_table(USERS)?
            .insert(record.user.as_str(), to_cbor(record)?.as_slice())?;
        Ok(())
    }

    /// Every username, sorted.
    pub fn usernames(&self) -> Result<Vec<String>, StoreError> {
        with_table!(self, USERS, |t| {
            let mut out = Vec::new();
            for entry in t.iter()? {
                out.push(entry?.0.value().to_owned());
            }
            Ok(out)
        })
    }

    /// Accounts matching `keep`, in username order, at most `limit`.
    pub fn find_users(
        &self,
        limit: usize,
        keep: impl Fn(&UserRecord) -> bool,
    ) -> Result<Vec<UserRecord>, StoreError> {
        with_table!(self, USERS, |t| {
            let mut out = Vec::new();
            for entry in t.iter()? {
                let record: UserRecord = from_cbor(entry?.1.value())?;
                if keep(&record) {
                    out.push(record);
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
    }

    /// Deletes an account record only (see the accounts service for the rest).
    pub fn remove_user(&mut self, user: &str) -> Result<(), StoreError> {
        self.w()?.open_table(USERS)?.remove(user)?;
        Ok(())
    }

    /// The username a device is bound to.
    pub fn device_user(&self, device: &str) -> Result<Option<String>, StoreError> {
        with_table!(self, DEVICE_USER, |t| Ok(t
            .get(device)?
            .map(|v| v.value().to_owned())))
    }

    /// Binds a device to a user (moving it from any previous user).
    pub fn bind_device(&mut self, device: &str, user: &str, now: u64) -> Result<(), StoreError> {
        self.unbind_device(device)?;
        self.w()?.open_table(DEVICE_USER)?.insert(device, user)?;
        self.w()?
            .open_table(USER_DEVICES)?
            .insert((user, device), now)?;
        Ok(())
    }

    /// Unbinds a device; returns the user it was bound to.
    pub fn unbind_device(&mut self, device: &str) -> Result<Option<String>, StoreError> {
        let previous = self
            .w()?
            .open_table(DEVICE_USER)?
            .remove(device)?
            .map(|v| v.value().to_owned());
        if let Some(user) = &previous {
            self.w()?
                .open_table(USER_DEVICES)?
                .remove((user.as_str(), device))?;
        }
        Ok(previous)
    }

    /// The devices bound to a user.
    pub fn user_devices(&self, user: &str) -> Result<Vec<String>, StoreError> {
        with_table!(self, USER_DEVICES, |t| {
            let mut out = Vec::new();
            for entry in t.range((user, "")..)? {
                let (key, _) = entry?;
                let (u, device) = key.value();
                if u != user {
                    break;
                }
                out.push(device.to_owned());
            }
            Ok(out)
        })
    }

    /// How `user` relates to `other`.
    pub fn relation(&self, user: &str, other: &str) -> Result<Relation, StoreError> {
        with_table!(self, RELATIONS, |t| Ok(t
            .get((user, other))?
            .map_or(Relation::None, |v| Relation::from_u8(v.value()))))
    }

    /// Sets how `user` relates to `other`, and the mirror image on the other side.
    pub fn set_relation(
        &mut self,
        user: &str,
        other: &str,
        relation: Relation,
    ) -> Result<(), StoreError> {
        let mut table = self.w()?.open_table(RELATIONS)?;
        if relation == Relation::None {
            table.remove((user, other))?;
            table.remove((other, user))?;
        } else {
            table.insert((user, other), relation.to_u8())?;
            table.insert((other, user), relation.mirrored().to_u8())?;
        }
        Ok(())
    }

    /// Everyone `user` relates to, with the relation.
    pub fn relations(&self, user: &str) -> Result<Vec<(String, Relation)>, StoreError> {
        with_table!(self, RELATIONS, |t| {
            let mut out = Vec::new();
            for entry in t.range((user, "")..)? {
                let (key, value) = entry?;
                let (u, other) = key.value();
                if u != user {
                    break;
                }
                out.push((other.to_owned(), Relation::from_u8(value.value())));
            }
            Ok(out)
        })
    }

    /// Stores an avatar image (once per content) and counts one more user showing it.
    pub fn add_avatar(
        &mut self,
        hash: ContentHash,
        mime: &str,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let mut refs = self.w()?.open_table(AVATAR_REFS)?;
        let count = refs.get(hash.0.as_slice())?.map_or(0, |v| v.value());
        refs.insert(hash.0.as_slice(), count + 1)?;
        if count == 0 {
            let record = AvatarRecord {
                mime: mime.to_owned(),
                bytes: bytes.to_vec(),
            };
            self.w()?
                .open_table(AVATARS)?
                .insert(hash.0.as_slice(), to_cbor(&record)?.as_slice())?;
        }
        Ok(())
    }

    /// One user fewer shows this avatar; the image goes when nobody does.
    pub fn release_avatar(&mut self, hash: ContentHash) -> Result<(), StoreError> {
        let mut refs = self.w()?.open_table(AVATAR_REFS)?;
        let count = refs.get(hash.0.as_slice())?.map_or(0, |v| v.value());
        if count <= 1 {
            refs.remove(hash.0.as_slice())?;
            self.w()?.open_table(AVATARS)?.remove(hash.0.as_slice())?;
        } else {
            refs.insert(hash.0.as_slice(), count - 1)?;
        }
        Ok(())
    }

    /// An avatar image: `(mime, bytes)`.
    pub fn avatar(&self, hash: ContentHash) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        let value: Option<Vec<u8>> = with_table!(self, AVATARS, |t| t
            .get(hash.0.as_slice())?
            .map(|v| v.value().to_vec()));
        match value {
            Some(v) => {
                let record: AvatarRecord = from_cbor(&v)?;
                Ok(Some((record.mime, record.bytes)))
            }
            None => Ok(None),
        }
    }

    /// The last sequence number assigned in `owner`'s mailbox (0 before the first entry). It
    /// only grows: entries that expired keep their numbers used.
    pub fn mailbox_last_seq(&self, owner: &str) -> Result<u64, StoreError> {
        with_table!(self, MAILBOX_SEQ, |t| Ok(t
            .get(owner)?
            .map_or(0, |v| v.value())))
    }

    /// How many entries `owner`'s mailbox holds (sequence numbers are contiguous: entries only
    /// ever leave from the oldest end, or all at once).
    pub fn mailbox_len(&self, owner: &str) -> Result<u64, StoreError> {
        with_table!(self, MAILBOX, |t| {
            let mut range = t.range((owner, 0)..=(owner, u64::MAX))?;
            let first = match range.next() {
                Some(entry) => entry?.0.value().1,
                None => return Ok(0),
            };
            let last = match range.next_back() {
                Some(entry) => entry?.0.value().1,
                None => first,
            };
            Ok(last - first + 1)
        })
    }

    /// The sequence number of a message already in `owner`'s mailbox, by author and id.
    pub fn mailbox_seq_of(
        &self,
        owner: &str,
        author: &str,
        id: &MessageId,
    ) -> Result<Option<u64>, StoreError> {
        with_table!(self, MAILBOX_IDS, |t| Ok(t
            .get((owner, author, id.as_bytes().as_slice()))?
            .map(|v| v.value())))
    }

    /// Appends an entry to `owner`'s mailbox with the next sequence number, which it returns. A
    /// message is recorded for deduplication ([`Tx::mailbox_seq_of`]); a receipt is not (its ids
    /// name other entries' messages).
    pub fn mailbox_append(
        &mut self,
        owner: &str,
        mut entry: MailboxEntry,
    ) -> Result<u64, StoreError> {
        let seq = self.mailbox_last_seq(owner)? + 1;
        self.w()?.open_table(MAILBOX_SEQ)?.insert(owner, seq)?;
        entry.seq = seq;
        self.w()?
            .open_table(MAILBOX)?
            .insert((owner, seq), to_cbor(&entry)?.as_slice())?;
        if let MailboxItem::Message(message) = &entry.item {
            self.w()?.open_table(MAILBOX_IDS)?.insert(
                (
                    owner,
                    entry.from_user.as_str(),
                    message.id.as_bytes().as_slice(),
                ),
                seq,
            )?;
        }
        Ok(seq)
    }

    /// The highest sequence number of `owner`'s mailbox up to which its incoming messages have
    /// been reported delivered to their authors (0: none yet).
    pub fn mailbox_delivered(&self, owner: &str) -> Result<u64, StoreError> {
        with_table!(self, MAILBOX_DELIVERED, |t| Ok(t
            .get(owner)?
            .map_or(0, |v| v.value())))
    }

    /// Raises the mark of [`Tx::mailbox_delivered`] to `seq`; a lower `seq` leaves it as it is.
    pub fn set_mailbox_delivered(&mut self, owner: &str, seq: u64) -> Result<(), StoreError> {
        let mut table = self.w()?.open_table(MAILBOX_DELIVERED)?;
        let current = table.get(owner)?.map_or(0, |v| v.value());
        if seq > current {
            table.insert(owner, seq)?;
        }
        Ok(())
    }

    /// `owner`'s entries after `after`, oldest first: at most `limit`, and no more than `max_bytes`
    /// of encoded entries (always at least one, if there is one).
    pub fn mailbox_page(
        &self,
        owner: &str,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<MailboxEntry>, StoreError> {
        with_table!(self, MAILBOX, |t| {
            let mut out = Vec::new();
            let mut bytes = 0;
            for entry in t.range((owner, after.saturating_add(1))..=(owner, u64::MAX))? {
                let (_, value) = entry?;
                let raw = value.value();
                if out.len() >= limit || (!out.is_empty() && bytes + raw.len() > max_bytes) {
                    break;
                }
                bytes += raw.len();
                out.push(decode_entry(raw)?);
            }
            Ok(out)
        })
    }

    /// Incoming messages of `owner` after `after`, counted per conversation:
    /// `(conversation, count, newest seq)`. Receipts are not counted: they are not messages.
    pub fn mailbox_incoming_counts(
        &self,
        owner: &str,
        after: u64,
    ) -> Result<Vec<(String, u32, u64)>, StoreError> {
        with_table!(self, MAILBOX, |t| {
            let mut counts: std::collections::HashMap<String, (u32, u64)> =
                std::collections::HashMap::new();
            for entry in t.range((owner, after.saturating_add(1))..=(owner, u64::MAX))? {
                let (key, value) = entry?;
                let e = decode_entry(value.value())?;
                if !e.outgoing && matches!(e.item, MailboxItem::Message(_)) {
                    let c = counts.entry(e.conversation).or_insert((0, 0));
                    c.0 = c.0.saturating_add(1);
                    c.1 = key.value().1;
                }
            }
            Ok(counts
                .into_iter()
                .map(|(k, (n, seq))| (k, n, seq))
                .collect())
        })
    }

    /// Deletes mailbox entries stored before `before_ms` (unix ms), at most `max` of them;
    /// returns how many went. Deduplication records stay, so an old message retried is still
    /// recognised. Entries leave from the oldest end of each mailbox.
    pub fn mailbox_expire(&mut self, before_ms: u64, max: usize) -> Result<usize, StoreError> {
        let expired: Vec<(String, u64)> = with_table!(self, MAILBOX, |t| {
            let mut out = Vec::new();
            let mut skip_owner: Option<String> = None;
            for entry in t.iter()? {
                let (key, value) = entry?;
                let (owner, seq) = key.value();
                if skip_owner.as_deref() == Some(owner) {
                    continue;
                }
                let e = decode_entry(value.value())?;
                if e.stored_at < before_ms {
                    out.push((owner.to_owned(), seq));
                    if out.len() >= max {
                        break;
                    }
                } else {
                    // The rest of this mailbox is newer.
                    skip_owner = Some(owner.to_owned());
                }
            }
            Ok::<_, StoreError>(out)
        })?;
        let mut table = self.w()?.open_table(MAILBOX)?;
        for (owner, seq) in &expired {
            table.remove((owner.as_str(), *seq))?;
        }
        Ok(expired.len())
    }

    /// Removes `owner`'s whole mailbox (account deletion); the deduplication records, the
    /// sequence counter and the delivered mark go too (a new account of that name starts afresh).
    pub fn mailbox_clear(&mut self, owner: &str) -> Result<(), StoreError> {
        let seqs: Vec<u64> = with_table!(self, MAILBOX, |t| {
            let mut seqs = Vec::new();
            for entry in t.range((owner, 0)..=(owner, u64::MAX))? {
                seqs.push(entry?.0.value().1);
            }
            Ok::<_, StoreError>(seqs)
        })?;
        let mut mailbox = self.w()?.open_table(MAILBOX)?;
        for seq in seqs {
            mailbox.remove((owner, seq))?;
        }
        drop(mailbox);
        let keys: Vec<(String, Vec<u8>)> = with_table!(self, MAILBOX_IDS, |t| {
            let mut keys = Vec::new();
            for entry in t.range((owner, "", [].as_slice())..)? {
                let (key, _) = entry?;
                let (o, author, id) = key.value();
                if o != owner {
                    break;
                }
                keys.push((author.to_owned(), id.to_vec()));
            }
            Ok::<_, StoreError>(keys)
        })?;
        let mut ids = self.w()?.open_table(MAILBOX_IDS)?;
        for (author, id) in keys {
            ids.remove((owner, author.as_str(), id.as_slice()))?;
        }
        drop(ids);
        self.w()?.open_table(MAILBOX_SEQ)?.remove(owner)?;
        self.w()?.open_table(MAILBOX_DELIVERED)?.remove(owner)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries written before receipts existed (`message`, not `item`) still sync, count and
    /// expire.
    #[test]
    fn entries_from_before_receipts_are_read_as_messages() {
        #[derive(Serialize)]
        struct Old<'a> {
            seq: u64,
            conversation: &'a str,
            from_user: &'a str,
            #[serde(with = "serde_bytes")]
            from_device: Vec<u8>,
            outgoing: bool,
            stored_at: u64,
            message: &'a ChatMessage,
        }
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), vec![1]).unwrap();
        let message = ChatMessage::text("ann", "old", 1);
        let old = Old {
            seq: 1,
            conversation: "user:ann",
            from_user: "ann",
            from_device: vec![7],
            outgoing: false,
            stored_at: 5,
            message: &message,
        };
        store
            .write(|tx| {
                tx.w()?
                    .open_table(MAILBOX)?
                    .insert(("ben", 1), to_cbor(&old)?.as_slice())?;
                tx.w()?.open_table(MAILBOX_SEQ)?.insert("ben", 1)?;
                Ok::<_, StoreError>(())
            })
            .unwrap();
        let page = store
            .read(|tx| tx.mailbox_page("ben", 0, 10, usize::MAX))
            .unwrap();
        assert_eq!(
            page,
            [MailboxEntry {
                seq: 1,
                conversation: "user:ann".into(),
                from_user: "ann".into(),
                from_device: vec![7],
                outgoing: false,
                stored_at: 5,
                item: MailboxItem::Message(message),
            }]
        );
        let counts = store
            .read(|tx| tx.mailbox_incoming_counts("ben", 0))
            .unwrap();
        assert_eq!(counts, [("user:ann".to_owned(), 1, 1)]);
        assert_eq!(store.write(|tx| tx.mailbox_expire(6, 10)).unwrap(), 1);
    }
}
