//! Backups and restore.
//!
//! A backup is a consistent snapshot taken while the server keeps serving: one redb *read*
//! transaction on the live database (writers are never blocked) is copied, table by table and
//! with each table's own types, into a new redb file `<dest>.tmp` next to the destination. The
//! copy is committed durably, closed, reopened with redb's integrity check, read back in full
//! (the entry count of every table must match what was copied), fsynced, and only then renamed
//! over `dest`: a reader of `dest` sees either the previous file or a complete, checked one.
//!
//! The tables copied are exactly those of [`super::tables::visit_all`], so a new table cannot be
//! forgotten silently (a unit test compares that list with the tables of a fresh database).
//!
//! [`Periodic`] takes one every interval into a directory, keeping the newest
//! [`BACKUP_GENERATIONS`]; its failures are logged, never fatal. [`restore`] (offline only) puts a
//! backup in place of a data dir's database, keeping the previous one as
//! [`BEFORE_RESTORE_FILE`].

use std::fs::{self, File};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{
    Database, DatabaseError, Durability, Key, ReadTransaction, ReadableDatabase, ReadableTable,
    StorageError, TableDefinition, TableError, TableHandle, Value, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::tables::{self, KEY_IDENTITY, META, TableVisitor};
use super::{STORE_FILE, Store, StoreError};
use crate::config::limits::{BACKUP_GENERATIONS, MIN_BACKUP_INTERVAL};

/// Periodic backups are named `bootstrap-<UTC timestamp>.redb`: this prefix...
pub const BACKUP_PREFIX: &str = "bootstrap-";
/// ...and this suffix.
pub const BACKUP_SUFFIX: &str = ".redb";
/// [`restore`] keeps the database it replaces under this name in the data dir.
pub const BEFORE_RESTORE_FILE: &str = "bootstrap.redb.before-restore";

/// What a backup file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupInfo {
    /// The file.
    pub path: PathBuf,
    /// Tables in it.
    pub tables: usize,
    /// Entries in all tables.
    pub entries: u64,
    /// Its size.
    pub bytes: u64,
}

/// A backup file is not usable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Another process has the file open.
    #[error("{} is in use by another process", path.display())]
    InUse {
        /// The file.
        path: PathBuf,
    },
    /// The file is missing, unreadable or not a redb database.
    #[error("{} cannot be opened as a database: {reason}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// redb's integrity check failed, or the file could not be read back in full.
    #[error("{} failed the integrity check: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A sound redb file, but not a confab-bootstrap database.
    #[error("{} is not a confab-bootstrap database: {reason}", path.display())]
    NotABootstrapDatabase {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// A backup could not be made. Nothing is left at the destination in that case (a previous file
/// there stays as it was).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The live database could not be read.
    #[error("reading the live database: {0}")]
    Store(#[from] StoreError),
    /// The file system failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The copy could not be written.
    #[error("writing {}: {reason}", path.display())]
    Write {
        /// The temporary file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The copy did not pass its check.
    #[error("the copy is not sound: {0}")]
    Verify(#[from] VerifyError),
    /// The destination is the live database itself.
    #[error("{} is the live database; back up to another file", path.display())]
    WouldReplaceDatabase {
        /// The destination.
        path: PathBuf,
    },
}

/// A restore was refused or failed. The data dir's database is unchanged in every case but the
/// last rename, which is atomic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// A server has the data dir's database open.
    #[error("the server in {} is running; stop it before restoring", data_dir.display())]
    InUse {
        /// The data dir.
        data_dir: PathBuf,
    },
    /// The backup does not open or does not pass the integrity check.
    #[error("not a usable backup: {0}")]
    Invalid(#[from] VerifyError),
    /// The backup is the data dir's own database.
    #[error("{} is the database being restored; restore from a copy", path.display())]
    SameFile {
        /// The file.
        path: PathBuf,
    },
    /// The file system failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// What [`restore`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreInfo {
    /// The database now in place.
    pub database: PathBuf,
    /// Where the database it replaced was kept, if there was one.
    pub previous: Option<PathBuf>,
    /// What the restored database holds.
    pub contents: BackupInfo,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        source,
    }
}

fn restore_io(path: &Path) -> impl FnOnce(io::Error) -> RestoreError + '_ {
    move |source| RestoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `<path>.tmp`.
fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn sync_file(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Creates an empty file only its owner can read: a backup holds the server's private key and
/// every password hash.
fn create_private(path: &Path) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop)
}

/// Restricts an existing file to its owner.
fn make_private(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Entries per table, in the order of [`tables::visit_all`]; `None` for a table that is absent.
type Counts = Vec<(String, Option<u64>)>;

/// Copies each visited table from a read transaction into a write transaction.
struct Copier<'a> {
    src: &'a ReadTransaction,
    dst: &'a WriteTransaction,
    counts: Counts,
}

impl TableVisitor for Copier<'_> {
    type Error = StoreError;

    fn visit<K: Key + 'static, V: Value + 'static>(
        &mut self,
        table: TableDefinition<'static, K, V>,
    ) -> Result<(), StoreError> {
        // Created in the copy even when empty or absent, so a backup always has every table.
        let mut to = self.dst.open_table(table)?;
        let from = match self.src.open_table(table) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => {
                self.counts.push((table.name().to_owned(), Some(0)));
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let mut n = 0u64;
        for entry in from.iter()? {
            let (k, v) = entry?;
            to.insert(k.value(), v.value())?;
            n += 1;
        }
        self.counts.push((table.name().to_owned(), Some(n)));
        Ok(())
    }
}

/// Reads every entry of each visited table.
struct Counter<'a> {
    txn: &'a ReadTransaction,
    counts: Counts,
}

impl TableVisitor for Counter<'_> {
    type Error = StoreError;

    fn visit<K: Key + 'static, V: Value + 'static>(
        &mut self,
        table: TableDefinition<'static, K, V>,
    ) -> Result<(), StoreError> {
        let name = table.name().to_owned();
        let opened = match self.txn.open_table(table) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => {
                self.counts.push((name, None));
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let mut n = 0u64;
        for entry in opened.iter()? {
            let (k, v) = entry?;
            // Decode both, so every leaf is really read.
            std::hint::black_box((k.value(), v.value()));
            n += 1;
        }
        self.counts.push((name, Some(n)));
        Ok(())
    }
}

fn totals(counts: &Counts) -> (usize, u64) {
    let present = counts.iter().filter(|(_, n)| n.is_some()).count();
    let entries = counts.iter().filter_map(|(_, n)| *n).sum();
    (present, entries)
}

/// Takes a consistent backup of `store` into `dest` (see the module docs). Blocking: call it off
/// the async runtime. The server keeps serving meanwhile; writers are not blocked.
pub fn backup(store: &Store, dest: &Path) -> Result<BackupInfo, BackupError> {
    if let (Ok(a), Ok(b)) = (fs::canonicalize(dest), fs::canonicalize(store.path()))
        && a == b
    {
        return Err(BackupError::WouldReplaceDatabase {
            path: dest.to_owned(),
        });
    }
    let tmp = tmp_path(dest);
    remove_if_exists(&tmp).map_err(io_error(&tmp))?;
    create_private(&tmp).map_err(io_error(&tmp))?;
    let snapshot = store.db.begin_read().map_err(StoreError::from)?;
    let copied = write_copy(&snapshot, &tmp);
    drop(snapshot);
    let checked = copied.and_then(|copied| {
        let found = read_back(&tmp)?;
        if found.0 != copied {
            return Err(BackupError::Verify(VerifyError::Corrupt {
                path: tmp.clone(),
                reason: format!("copied {copied:?} but read back {:?}", found.0),
            }));
        }
        sync_file(&tmp).map_err(io_error(&tmp))?;
        Ok(found)
    });
    let (counts, _) = match checked {
        Ok(c) => c,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    fs::rename(&tmp, dest).map_err(io_error(dest))?;
    sync_dir(parent_dir(dest)).map_err(io_error(parent_dir(dest)))?;
    let bytes = fs::metadata(dest).map_err(io_error(dest))?.len();
    let (tables, entries) = totals(&counts);
    Ok(BackupInfo {
        path: dest.to_owned(),
        tables,
        entries,
        bytes,
    })
}

/// Copies the snapshot into a new database at `tmp` (an empty file), committed durably and
/// closed.
fn write_copy(snapshot: &ReadTransaction, tmp: &Path) -> Result<Counts, BackupError> {
    let failed = |e: StoreError| BackupError::Write {
        path: tmp.to_owned(),
        reason: e.to_string(),
    };
    let db = Database::create(tmp).map_err(|e| failed(e.into()))?;
    let mut txn = db.begin_write().map_err(|e| failed(e.into()))?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| failed(e.into()))?;
    let mut copier = Copier {
        src: snapshot,
        dst: &txn,
        counts: Vec::new(),
    };
    tables::visit_all(&mut copier).map_err(failed)?;
    let counts = copier.counts;
    txn.commit().map_err(|e| failed(e.into()))?;
    db.close().map_err(|e| failed(e.into()))?;
    Ok(counts)
}

/// Opens `path` with redb's integrity check, checks again, reads every table in full and finds
/// the server identity. Returns the entry counts and whether an identity is there.
fn read_back(path: &Path) -> Result<(Counts, bool), VerifyError> {
    let corrupt = |reason: String| VerifyError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let mut db = Database::builder()
        .set_check_integrity_on_open(true)
        .open(path)
        .map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => VerifyError::InUse {
                path: path.to_owned(),
            },
            DatabaseError::Storage(StorageError::Corrupted(reason)) => corrupt(reason),
            other => VerifyError::Open {
                path: path.to_owned(),
                reason: other.to_string(),
            },
        })?;
    match db.check_integrity() {
        Ok(true) => {}
        Ok(false) => return Err(corrupt("it needed a repair".into())),
        Err(e) => return Err(corrupt(e.to_string())),
    }
    let store_error = |e: StoreError| corrupt(e.to_string());
    let txn = db
        .begin_read()
        .map_err(|e| store_error(StoreError::from(e)))?;
    let mut counter = Counter {
        txn: &txn,
        counts: Vec::new(),
    };
    tables::visit_all(&mut counter).map_err(store_error)?;
    let counts = counter.counts;
    let identity = match txn.open_table(META) {
        Ok(meta) => meta
            .get(KEY_IDENTITY)
            .map_err(|e| store_error(e.into()))?
            .is_some_and(|v| !v.value().is_empty()),
        Err(_) => false,
    };
    drop(txn);
    db.close().map_err(|e| store_error(e.into()))?;
    Ok((counts, identity))
}

/// Checks that `path` is a sound confab-bootstrap database: it opens, passes redb's integrity
/// check, every table reads back in full, and it holds a server identity.
///
/// The file is opened for writing (redb's check may repair it and commits), so run this on a
/// copy when the original must stay byte-for-byte untouched; [`restore`] does.
pub fn verify(path: &Path) -> Result<BackupInfo, VerifyError> {
    let (counts, identity) = read_back(path)?;
    if !identity {
        return Err(VerifyError::NotABootstrapDatabase {
            path: path.to_owned(),
            reason: "it has no server identity".into(),
        });
    }
    let (tables, entries) = totals(&counts);
    let bytes = fs::metadata(path)
        .map_err(|e| VerifyError::Open {
            path: path.to_owned(),
            reason: e.to_string(),
        })?
        .len();
    Ok(BackupInfo {
        path: path.to_owned(),
        tables,
        entries,
        bytes,
    })
}

/// Puts the backup `from` in place of `<data_dir>/bootstrap.redb` (offline only).
///
/// Refused while a server has that database open ([`RestoreError::InUse`]; its lock is held
/// throughout, so no server can start midway). `from` is copied to a temporary file in the data
/// dir, which must pass [`verify`]; the current database is kept as [`BEFORE_RESTORE_FILE`]
/// (replacing an older one of that name), and the copy is renamed into place atomically.
/// The restored server has the identity (peer id) of the server the backup came from.
pub fn restore(from: &Path, data_dir: &Path) -> Result<RestoreInfo, RestoreError> {
    fs::create_dir_all(data_dir).map_err(restore_io(data_dir))?;
    let live = data_dir.join(STORE_FILE);
    if let (Ok(a), Ok(b)) = (fs::canonicalize(from), fs::canonicalize(&live))
        && a == b
    {
        return Err(RestoreError::SameFile { path: live });
    }
    // Taking the database's lock both tells whether a server runs and keeps one from starting.
    let lock = if live.exists() {
        match Database::builder()
            .set_check_integrity_on_open(true)
            .open(&live)
        {
            Ok(db) => Some(db),
            Err(DatabaseError::DatabaseAlreadyOpen) => {
                return Err(RestoreError::InUse {
                    data_dir: data_dir.to_owned(),
                });
            }
            Err(e) => {
                // A damaged database is a reason to restore; it is kept all the same.
                tracing::warn!("the current database does not open ({e}); replacing it");
                None
            }
        }
    } else {
        None
    };
    let tmp = tmp_path(&live);
    remove_if_exists(&tmp).map_err(restore_io(&tmp))?;
    fs::copy(from, &tmp).map_err(restore_io(from))?;
    make_private(&tmp).map_err(restore_io(&tmp))?;
    let contents = match verify(&tmp).and_then(|info| {
        sync_file(&tmp).map_err(|e| VerifyError::Open {
            path: tmp.clone(),
            reason: e.to_string(),
        })?;
        Ok(info)
    }) {
        Ok(info) => info,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(match e {
                // The temporary copy is named in the check; name the file the user gave.
                VerifyError::Corrupt { reason, .. } => VerifyError::Corrupt {
                    path: from.to_owned(),
                    reason,
                },
                VerifyError::NotABootstrapDatabase { reason, .. } => {
                    VerifyError::NotABootstrapDatabase {
                        path: from.to_owned(),
                        reason,
                    }
                }
                VerifyError::Open { reason, .. } => VerifyError::Open {
                    path: from.to_owned(),
                    reason,
                },
                other => other,
            }
            .into());
        }
    };
    let previous = if live.exists() {
        let before = data_dir.join(BEFORE_RESTORE_FILE);
        remove_if_exists(&before).map_err(restore_io(&before))?;
        // A hard link keeps the old file without copying it; the copy is the fallback.
        if fs::hard_link(&live, &before).is_err() {
            fs::copy(&live, &before).map_err(restore_io(&before))?;
            make_private(&before).map_err(restore_io(&before))?;
            sync_file(&before).map_err(restore_io(&before))?;
        }
        Some(before)
    } else {
        None
    };
    fs::rename(&tmp, &live).map_err(restore_io(&live))?;
    sync_dir(data_dir).map_err(restore_io(data_dir))?;
    drop(lock);
    Ok(RestoreInfo {
        contents: BackupInfo {
            path: live.clone(),
            ..contents
        },
        database: live,
        previous,
    })
}

/// The file name of a periodic backup taken at `at`: `bootstrap-YYYYMMDDTHHMMSS.mmmZ.redb` (UTC),
/// so names sort in time order.
pub fn backup_file_name(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{BACKUP_PREFIX}{y:04}{mo:02}{d:02}T{:02}{:02}{:02}.{:03}Z{BACKUP_SUFFIX}",
        s / 3600,
        s % 3600 / 60,
        s % 60,
        since.subsec_millis()
    )
}

/// Year, month, day of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Whether `name` is a periodic backup's name (and not some other file in the directory).
fn is_backup_name(name: &str) -> bool {
    let Some(stamp) = name
        .strip_prefix(BACKUP_PREFIX)
        .and_then(|r| r.strip_suffix(BACKUP_SUFFIX))
    else {
        return false;
    };
    // YYYYMMDDTHHMMSS.mmmZ
    let b = stamp.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            8 => *c == b'T',
            15 => *c == b'.',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// Deletes all but the newest `keep` periodic backups in `dir` (never `protect`, the one just
/// written, even if the clock went back), and temporary files that interrupted backups left.
/// Other files are left alone. Returns what was deleted.
pub fn prune(dir: &Path, keep: usize, protect: &Path) -> io::Result<Vec<PathBuf>> {
    let mut backups = Vec::new();
    let mut leftovers = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_backup_name(name) {
            backups.push(name.to_owned());
        } else if let Some(base) = name.strip_suffix(".tmp")
            && is_backup_name(base)
        {
            leftovers.push(entry.path());
        }
    }
    backups.sort();
    let excess = backups.len().saturating_sub(keep.max(1));
    let mut deleted = Vec::new();
    for path in backups
        .iter()
        .take(excess)
        .map(|n| dir.join(n))
        .chain(leftovers)
    {
        if path == protect {
            continue;
        }
        remove_if_exists(&path)?;
        deleted.push(path);
    }
    Ok(deleted)
}

/// One periodic backup: a new file in `dir`, then pruning.
fn backup_into(store: &Store, dir: &Path) -> Result<BackupInfo, BackupError> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let dest = dir.join(backup_file_name(SystemTime::now()));
    let info = backup(store, &dest)?;
    match prune(dir, BACKUP_GENERATIONS, &dest) {
        Ok(deleted) => {
            for d in deleted {
                tracing::debug!("deleted old backup {}", d.display());
            }
        }
        Err(e) => tracing::warn!("pruning backups in {}: {e}", dir.display()),
    }
    Ok(info)
}

/// How long until the first periodic backup: `interval` after the newest one already in `dir`
/// (now if there is none, or it is that old), so that a server restarted more often than
/// `interval` still takes backups, and one restarted in a loop does not take one per start.
fn first_delay(dir: &Path, interval: Duration) -> Duration {
    let newest = fs::read_dir(dir).ok().and_then(|entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_str().is_some_and(is_backup_name))
            .filter_map(|e| e.metadata().and_then(|m| m.modified()).ok())
            .max()
    });
    match newest {
        Some(at) => interval.saturating_sub(at.elapsed().unwrap_or_default()),
        None => Duration::ZERO,
    }
}

/// Takes a backup into `backup_dir` every `interval` (at least [`MIN_BACKUP_INTERVAL`]; the
/// first one `interval` after the newest backup already there, or at once if there is none)
/// until `shutdown` completes, keeping the newest [`BACKUP_GENERATIONS`]. Failures are logged
/// and the next backup is tried on time. A backup in progress is finished before this returns.
pub async fn run_periodic(
    store: Store,
    backup_dir: PathBuf,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let interval = interval.max(MIN_BACKUP_INTERVAL);
    let first = first_delay(&backup_dir, interval);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + first, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = ticks.tick() => {}
        }
        let (s, dir) = (store.clone(), backup_dir.clone());
        match tokio::task::spawn_blocking(move || backup_into(&s, &dir)).await {
            Ok(Ok(info)) => tracing::info!(
                "backup {} ({} entries, {} bytes)",
                info.path.display(),
                info.entries,
                info.bytes
            ),
            Ok(Err(e)) => tracing::error!("periodic backup into {}: {e}", backup_dir.display()),
            Err(e) => tracing::error!("periodic backup task: {e}"),
        }
    }
}

/// [`run_periodic`] running in a task. [`Periodic::stop`] ends it after the backup in progress;
/// dropping it aborts the task.
#[derive(Debug)]
pub struct Periodic {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Periodic {
    /// Starts periodic backups of `store` into `backup_dir` on the current tokio runtime.
    pub fn spawn(store: Store, backup_dir: PathBuf, interval: Duration) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let shutdown = async move {
            // Also resolves when the sender is gone.
            let _ = stopped.wait_for(|s| *s).await;
        };
        let task = tokio::spawn(run_periodic(store, backup_dir, interval, shutdown));
        Self {
            stop,
            task: Some(task),
        }
    }

    /// Stops taking backups; returns once the one in progress, if any, is finished.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::error!("periodic backups: {e}");
        }
    }
}

impl Drop for Periodic {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MlsRecord, Relation, UserRecord};
    use std::collections::BTreeSet;

    fn record(user: &str) -> UserRecord {
        UserRecord {
            user: user.into(),
            password_phc: "$argon2id$v=19$m=19456,t=2,p=1$x$y".into(),
            created_at: 1,
            nickname: user.to_uppercase(),
            signature: String::new(),
            avatar: None,
        }
    }

    fn mls_record() -> MlsRecord {
        MlsRecord {
            suite: 1,
            epoch: 1,
            members: vec![confab_protocol::e2e::MlsDevice {
                user: "ann".into(),
                device: vec![1, 2, 3],
            }],
        }
    }

    fn fill(store: &Store) {
        store
            .write(|tx| {
                for u in ["ann", "bob", "cy"] {
                    tx.put_user(&record(u))?;
                }
                tx.bind_device("dev-ann", "ann", 5)?;
                tx.set_relation("ann", "bob", Relation::Friends)?;
                tx.add_avatar(confab_protocol::ContentHash([7; 32]), "image/png", b"png")?;
                tx.put_mls_key_package("ann", "dev-ann", 1, b"key package")?;
                tx.put_mls_conversation("dm:ann:bob", &mls_record(), b"group info")?;
                tx.put_mls_commit("dm:ann:bob", 0, b"commit")?;
                tx.put_mls_welcome("dev-bob", "dm:ann:bob", 1, b"welcome")?;
                tx.add_mls_dm("ann", "dm:ann:bob", 5)?;
                tx.add_mls_dm("bob", "dm:ann:bob", 5)?;
                Ok::<_, StoreError>(())
            })
            .unwrap();
    }

    struct Names(Vec<String>);

    impl TableVisitor for Names {
        type Error = std::convert::Infallible;
        fn visit<K: Key + 'static, V: Value + 'static>(
            &mut self,
            table: TableDefinition<'static, K, V>,
        ) -> Result<(), Self::Error> {
            self.0.push(table.name().to_owned());
            Ok(())
        }
    }

    /// A table added to `tables.rs` (or created by `Store::open`) but not to `visit_all` would be
    /// silently left out of every backup: this fails instead.
    #[test]
    fn every_table_is_backed_up() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), vec![1, 2, 3]).unwrap();
        let txn = store.db.begin_read().unwrap();
        let created: BTreeSet<String> = txn
            .list_tables()
            .unwrap()
            .map(|t| t.name().to_owned())
            .collect();
        assert_eq!(txn.list_multimap_tables().unwrap().count(), 0);
        let mut names = Names(Vec::new());
        let Ok(()) = tables::visit_all(&mut names);
        let visited: BTreeSet<String> = names.0.iter().cloned().collect();
        assert_eq!(visited.len(), names.0.len(), "a table is visited twice");
        assert_eq!(visited, created, "visit_all and Store::open disagree");
        let defined = include_str!("tables.rs")
            .matches("TableDefinition::new(")
            .count();
        assert_eq!(
            visited.len(),
            defined,
            "a table in tables.rs is not visited"
        );
    }

    #[test]
    fn a_backup_holds_everything_and_replaces_its_destination_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let (store, identity) = Store::open(&dir.path().join("data"), vec![9; 40]).unwrap();
        fill(&store);
        let dest = dir.path().join("b.redb");
        std::fs::write(&dest, b"an older backup").unwrap();
        let info = backup(&store, &dest).unwrap();
        assert_eq!(info.tables, 26);
        // identity + 3 users + 1 device both ways + 2 relation rows + avatar and its count
        // + MLS: a key package, a record and its group info, a commit, a welcome, 2 dm rows
        assert_eq!(info.entries, 1 + 3 + 2 + 2 + 2 + 7);
        assert!(!tmp_path(&dest).exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&dest).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "a backup holds the key: owner only");
        assert_eq!(verify(&dest).unwrap().entries, info.entries);

        let restored = dir.path().join("restored");
        let done = restore(&dest, &restored).unwrap();
        assert_eq!(done.previous, None);
        let mode = fs::metadata(&done.database).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (copy, id) = Store::open(&restored, vec![1]).unwrap();
        assert_eq!(id, identity, "the identity comes back");
        copy.read(|tx| {
            assert_eq!(tx.usernames()?, ["ann", "bob", "cy"]);
            assert_eq!(tx.user("bob")?, Some(record("bob")));
            assert_eq!(tx.device_user("dev-ann")?.as_deref(), Some("ann"));
            assert_eq!(tx.user_devices("ann")?, ["dev-ann"]);
            assert_eq!(tx.relation("bob", "ann")?, Relation::Friends);
            assert_eq!(
                tx.avatar(confab_protocol::ContentHash([7; 32]))?,
                Some(("image/png".into(), b"png".to_vec()))
            );
            assert_eq!(tx.mls_key_package_count("ann", "dev-ann", 1)?, 1);
            assert_eq!(tx.mls_conversation("dm:ann:bob")?, Some(mls_record()));
            assert_eq!(
                tx.mls_group_info("dm:ann:bob")?.as_deref(),
                Some(b"group info".as_slice())
            );
            assert_eq!(
                tx.mls_commits("dm:ann:bob", 0, 10, usize::MAX)?,
                [b"commit".to_vec()]
            );
            assert_eq!(tx.mls_welcomes("dev-bob", usize::MAX)?.len(), 1);
            assert_eq!(tx.mls_dms("bob")?, ["dm:ann:bob"]);
            Ok::<_, StoreError>(())
        })
        .unwrap();
    }

    #[test]
    fn restore_refuses_a_database_in_use_and_garbage_and_keeps_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&dir.path().join("a"), vec![1; 40]).unwrap();
        fill(&store);
        let good = dir.path().join("good.redb");
        backup(&store, &good).unwrap();

        let data = dir.path().join("b");
        let (running, _) = Store::open(&data, vec![2; 40]).unwrap();
        let err = restore(&good, &data).unwrap_err();
        assert!(matches!(err, RestoreError::InUse { .. }), "{err}");
        assert!(
            err.to_string().contains("stop it before restoring"),
            "{err}"
        );
        drop(running);

        let garbage = dir.path().join("garbage.redb");
        std::fs::write(&garbage, vec![0x55; 8192]).unwrap();
        let err = restore(&garbage, &data).unwrap_err();
        assert!(matches!(err, RestoreError::Invalid(_)), "{err}");
        let err = restore(&dir.path().join("missing"), &data).unwrap_err();
        assert!(matches!(err, RestoreError::Io { .. }), "{err}");
        // A sound redb file that is not a bootstrap database.
        let other = dir.path().join("other.redb");
        Database::create(&other).unwrap();
        let err = restore(&other, &data).unwrap_err();
        assert!(
            err.to_string().contains("not a confab-bootstrap database"),
            "{err}"
        );
        assert!(!data.join("bootstrap.redb.tmp").exists());

        let done = restore(&good, &data).unwrap();
        let previous = done.previous.unwrap();
        assert!(previous.ends_with(BEFORE_RESTORE_FILE));
        let now = Store::open_existing(&data).unwrap();
        assert_eq!(now.read(|tx| tx.usernames()).unwrap(), ["ann", "bob", "cy"]);
        drop(now);
        // The previous database is intact under its new name.
        let before = tempfile::tempdir().unwrap();
        std::fs::copy(&previous, before.path().join(STORE_FILE)).unwrap();
        let (_, id) = Store::open(before.path(), vec![0]).unwrap();
        assert_eq!(id, vec![2; 40]);
        let err = restore(&data.join(STORE_FILE), &data).unwrap_err();
        assert!(matches!(err, RestoreError::SameFile { .. }), "{err}");
    }

    #[test]
    fn names_are_utc_timestamps_and_pruning_keeps_the_newest() {
        assert_eq!(
            backup_file_name(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
            "bootstrap-20231114T221320.123Z.redb"
        );
        assert_eq!(
            backup_file_name(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "bootstrap-20000229T000000.000Z.redb"
        );
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert!(is_backup_name("bootstrap-20231114T221320.123Z.redb"));
        assert!(!is_backup_name("bootstrap-important.redb"));

        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..8)
            .map(|i| backup_file_name(UNIX_EPOCH + Duration::from_secs(1_700_000_000 + i)))
            .collect();
        for n in &names {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
        let leftover = dir.path().join(format!("{}.tmp", names[7]));
        std::fs::write(&leftover, b"x").unwrap();
        // The oldest is "the one just written" (as after a clock jump back): never deleted.
        let deleted = prune(dir.path(), 5, &dir.path().join(&names[0])).unwrap();
        assert_eq!(deleted.len(), 3);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        // A fresh backup was just written: the next one is due an interval later.
        let hour = Duration::from_secs(3600);
        assert!(first_delay(dir.path(), hour) > hour - Duration::from_secs(60));
        assert_eq!(first_delay(&dir.path().join("none"), hour), Duration::ZERO);
        let mut expected: Vec<String> = names[3..].to_vec();
        expected.insert(0, names[0].clone());
        expected.push("notes.txt".into());
        assert_eq!(left, expected);
    }

    #[tokio::test]
    async fn periodic_backups_appear_and_stop() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&dir.path().join("data"), vec![1; 40]).unwrap();
        fill(&store);
        let backups = dir.path().join("backups");
        let periodic = Periodic::spawn(store, backups.clone(), Duration::from_secs(1));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let found = std::fs::read_dir(&backups)
                .map(|d| d.filter_map(Result::ok).count())
                .unwrap_or(0);
            if found >= 1 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "no backup appeared");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        periodic.stop().await;
        let files: Vec<PathBuf> = std::fs::read_dir(&backups)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(
            files
                .iter()
                .all(|f| is_backup_name(f.file_name().and_then(|n| n.to_str()).unwrap()))
        );
        verify(&files[0]).unwrap();
    }
}
