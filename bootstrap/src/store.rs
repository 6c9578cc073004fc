//! The bootstrap's database (`bootstrap.redb` in the data dir). Only this module knows redb.
//!
//! Tables: `meta_v1` (`&str -> bytes`): the server's key.

use std::path::Path;

use redb::{Database, DatabaseError, ReadableTable, TableDefinition};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta_v1");
const KEY_IDENTITY: &str = "identity";

/// The file name inside the data dir.
pub const STORE_FILE: &str = "bootstrap.redb";

/// The store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process has the database open.
    #[error("{0} is in use by another confab-bootstrap")]
    Locked(String),
    /// The database or the disk failed.
    #[error("{0}")]
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

/// Opens the database and returns the server's key, storing `fresh` if there is none yet.
pub fn open_identity(data_dir: &Path, fresh: Vec<u8>) -> Result<Vec<u8>, StoreError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| StoreError::Database(format!("{}: {e}", data_dir.display())))?;
    let path = data_dir.join(STORE_FILE);
    let db = Database::create(&path).map_err(|e| match e {
        DatabaseError::DatabaseAlreadyOpen => StoreError::Locked(path.display().to_string()),
        other => StoreError::Database(format!("{}: {other}", path.display())),
    })?;
    let txn = db.begin_write()?;
    let key = {
        let mut meta = txn.open_table(META)?;
        let stored = meta.get(KEY_IDENTITY)?.map(|v| v.value().to_vec());
        match stored {
            Some(k) => k,
            None => {
                meta.insert(KEY_IDENTITY, fresh.as_slice())?;
                fresh
            }
        }
    };
    txn.commit()?;
    Ok(key)
}
