//! End-to-end encryption (MLS) as stored: the bootstrap is the delivery service, it keeps opaque
//! bytes and never a key.
//!
//! - `mls_key_packages_v1`: the key packages each device published, keyed by account, device,
//!   suite and the package's hash (so publishing one twice stores it once); each is taken
//!   ([`Tx::take_mls_key_package`]) when it is handed out.
//! - `mls_conversations_v1`: one [`MlsRecord`] per encrypted conversation, and its latest GroupInfo
//!   apart in `mls_group_infos_v1` (listing and checking records does not read it).
//! - `mls_commits_v1`: the commit that left each epoch of a conversation.
//! - `mls_welcomes_v1`: the Welcome waiting for each (device, conversation).
//! - `mls_user_dms_v1`: each account's encrypted direct conversations.
//!
//! The rules (who may publish, claim, commit, what a commit may change) are `service::mls`'; this
//! file only reads and writes.

use confab_protocol::e2e::{MlsDevice, MlsWelcome};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::tables::{
    MLS_COMMITS, MLS_CONVERSATIONS, MLS_GROUP_INFOS, MLS_KEY_PACKAGES, MLS_USER_DMS, MLS_WELCOMES,
};
use super::{StoreError, Tx, Txn, from_cbor, to_cbor};

/// What the bootstrap keeps of an encrypted conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MlsRecord {
    /// Its suite's code point, fixed by the first commit.
    pub suite: u16,
    /// The epoch after the last stored commit (the epoch the next commit must be made at).
    pub epoch: u64,
    /// The member devices now, sorted, each once.
    pub members: Vec<MlsDevice>,
}

/// A Welcome as stored under (device, conversation).
#[derive(Serialize, Deserialize)]
struct StoredWelcome {
    epoch: u64,
    #[serde(with = "serde_bytes")]
    welcome: Vec<u8>,
}

/// The key of a key package: its content hash.
fn package_hash(package: &[u8]) -> [u8; 32] {
    *blake3::hash(package).as_bytes()
}

impl Tx {
    /// How many key packages `device` of `user` has stored for `suite`.
    pub fn mls_key_package_count(
        &self,
        user: &str,
        device: &str,
        suite: u16,
    ) -> Result<usize, StoreError> {
        with_table!(self, MLS_KEY_PACKAGES, |t| {
            let mut n = 0;
            for entry in t.range((user, device, suite, [].as_slice())..)? {
                let (key, _) = entry?;
                let (u, d, s, _) = key.value();
                if (u, d, s) != (user, device, suite) {
                    break;
                }
                n += 1;
            }
            Ok(n)
        })
    }

    /// Whether this very package is stored for `device` of `user` and `suite`.
    pub fn has_mls_key_package(
        &self,
        user: &str,
        device: &str,
        suite: u16,
        package: &[u8],
    ) -> Result<bool, StoreError> {
        let hash = package_hash(package);
        with_table!(self, MLS_KEY_PACKAGES, |t| Ok(t
            .get((user, device, suite, hash.as_slice()))?
            .is_some()))
    }

    /// Stores a key package of `device` of `user` for `suite` (once: the same bytes again change
    /// nothing).
    pub fn put_mls_key_package(
        &mut self,
        user: &str,
        device: &str,
        suite: u16,
        package: &[u8],
    ) -> Result<(), StoreError> {
        let hash = package_hash(package);
        self.w()?
            .open_table(MLS_KEY_PACKAGES)?
            .insert((user, device, suite, hash.as_slice()), package)?;
        Ok(())
    }

    /// Takes (deletes and returns) one key package of `device` of `user` for `suite`, if it has
    /// one.
    pub fn take_mls_key_package(
        &mut self,
        user: &str,
        device: &str,
        suite: u16,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let mut table = self.w()?.open_table(MLS_KEY_PACKAGES)?;
        let found = match table.range((user, device, suite, [].as_slice())..)?.next() {
            Some(entry) => {
                let (key, value) = entry?;
                let (u, d, s, hash) = key.value();
                ((u, d, s) == (user, device, suite))
                    .then(|| (hash.to_vec(), value.value().to_vec()))
            }
            None => None,
        };
        let Some((hash, package)) = found else {
            return Ok(None);
        };
        table.remove((user, device, suite, hash.as_slice()))?;
        Ok(Some(package))
    }

    /// Deletes every key package of `device` of `user` (all suites); returns how many went.
    pub fn remove_mls_key_packages(
        &mut self,
        user: &str,
        device: &str,
    ) -> Result<usize, StoreError> {
        let keys: Vec<(u16, Vec<u8>)> = with_table!(self, MLS_KEY_PACKAGES, |t| {
            let mut keys = Vec::new();
            for entry in t.range((user, device, 0u16, [].as_slice())..)? {
                let (key, _) = entry?;
                let (u, d, suite, hash) = key.value();
                if (u, d) != (user, device) {
                    break;
                }
                keys.push((suite, hash.to_vec()));
            }
            Ok::<_, StoreError>(keys)
        })?;
        let mut table = self.w()?.open_table(MLS_KEY_PACKAGES)?;
        for (suite, hash) in &keys {
            table.remove((user, device, *suite, hash.as_slice()))?;
        }
        Ok(keys.len())
    }

    /// The record of an encrypted conversation, if it is one.
    pub fn mls_conversation(&self, conversation: &str) -> Result<Option<MlsRecord>, StoreError> {
        let raw: Option<Vec<u8>> = with_table!(self, MLS_CONVERSATIONS, |t| t
            .get(conversation)?
            .map(|v| v.value().to_vec()));
        raw.map(|r| from_cbor(&r)).transpose()
    }

    /// Whether `conversation` is encrypted (has a record), without reading the record.
    pub fn is_mls_conversation(&self, conversation: &str) -> Result<bool, StoreError> {
        with_table!(self, MLS_CONVERSATIONS, |t| Ok(t
            .get(conversation)?
            .is_some()))
    }

    /// Creates or replaces the record of an encrypted conversation and its GroupInfo.
    pub fn put_mls_conversation(
        &mut self,
        conversation: &str,
        record: &MlsRecord,
        group_info: &[u8],
    ) -> Result<(), StoreError> {
        self.w()?
            .open_table(MLS_CONVERSATIONS)?
            .insert(conversation, to_cbor(record)?.as_slice())?;
        self.w()?
            .open_table(MLS_GROUP_INFOS)?
            .insert(conversation, group_info)?;
        Ok(())
    }

    /// The latest GroupInfo of an encrypted conversation.
    pub fn mls_group_info(&self, conversation: &str) -> Result<Option<Vec<u8>>, StoreError> {
        with_table!(self, MLS_GROUP_INFOS, |t| Ok(t
            .get(conversation)?
            .map(|v| v.value().to_vec())))
    }

    /// Stores the commit that left `epoch` of `conversation`.
    pub fn put_mls_commit(
        &mut self,
        conversation: &str,
        epoch: u64,
        commit: &[u8],
    ) -> Result<(), StoreError> {
        self.w()?
            .open_table(MLS_COMMITS)?
            .insert((conversation, epoch), commit)?;
        Ok(())
    }

    /// The commits of `conversation` from epoch `from` on, in order: at most `limit`, and no
    /// more than `max_bytes` of them (always at least one, if there is one).
    pub fn mls_commits(
        &self,
        conversation: &str,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        with_table!(self, MLS_COMMITS, |t| {
            let mut out: Vec<Vec<u8>> = Vec::new();
            let mut bytes = 0;
            for entry in t.range((conversation, from)..=(conversation, u64::MAX))? {
                let (_, value) = entry?;
                let commit = value.value();
                if out.len() >= limit || (!out.is_empty() && bytes + commit.len() > max_bytes) {
                    break;
                }
                bytes += commit.len();
                out.push(commit.to_vec());
            }
            Ok(out)
        })
    }

    /// Stores the Welcome to `conversation` for `device`, replacing one waiting there.
    pub fn put_mls_welcome(
        &mut self,
        device: &str,
        conversation: &str,
        epoch: u64,
        welcome: &[u8],
    ) -> Result<(), StoreError> {
        let stored = StoredWelcome {
            epoch,
            welcome: welcome.to_vec(),
        };
        self.w()?
            .open_table(MLS_WELCOMES)?
            .insert((device, conversation), to_cbor(&stored)?.as_slice())?;
        Ok(())
    }

    /// The Welcomes waiting for `device`, by conversation: no more than `max_bytes` of them
    /// (always at least one, if there is one).
    pub fn mls_welcomes(
        &self,
        device: &str,
        max_bytes: usize,
    ) -> Result<Vec<MlsWelcome>, StoreError> {
        let raw: Vec<(String, Vec<u8>)> = with_table!(self, MLS_WELCOMES, |t| {
            let mut out = Vec::new();
            let mut bytes = 0;
            for entry in t.range((device, "")..)? {
                let (key, value) = entry?;
                let (d, conversation) = key.value();
                if d != device {
                    break;
                }
                let raw = value.value();
                if !out.is_empty() && bytes + raw.len() > max_bytes {
                    break;
                }
                bytes += raw.len();
                out.push((conversation.to_owned(), raw.to_vec()));
            }
            Ok::<_, StoreError>(out)
        })?;
        raw.into_iter()
            .map(|(conversation, raw)| {
                let stored: StoredWelcome = from_cbor(&raw)?;
                Ok(MlsWelcome {
                    conversation,
                    epoch: stored.epoch,
                    welcome: stored.welcome,
                })
            })
            .collect()
    }

    /// Deletes the Welcome to `conversation` waiting for `device`; true if there was one.
    pub fn remove_mls_welcome(
        &mut self,
        device: &str,
        conversation: &str,
    ) -> Result<bool, StoreError> {
        Ok(self
            .w()?
            .open_table(MLS_WELCOMES)?
            .remove((device, conversation))?
            .is_some())
    }

    /// Deletes every Welcome waiting for `device`; returns how many went.
    pub fn remove_mls_welcomes(&mut self, device: &str) -> Result<usize, StoreError> {
        let conversations: Vec<String> = with_table!(self, MLS_WELCOMES, |t| {
            let mut out = Vec::new();
            for entry in t.range((device, "")..)? {
                let (key, _) = entry?;
                let (d, conversation) = key.value();
                if d != device {
                    break;
                }
                out.push(conversation.to_owned());
            }
            Ok::<_, StoreError>(out)
        })?;
        let mut table = self.w()?.open_table(MLS_WELCOMES)?;
        for conversation in &conversations {
            table.remove((device, conversation.as_str()))?;
        }
        Ok(conversations.len())
    }

    /// Records that `user` has the encrypted direct conversation `conversation` (since `now`).
    pub fn add_mls_dm(
        &mut self,
        user: &str,
        conversation: &str,
        now: u64,
    ) -> Result<(), StoreError> {
        self.w()?
            .open_table(MLS_USER_DMS)?
            .insert((user, conversation), now)?;
        Ok(())
    }

    /// The encrypted direct conversations of `user`, by name.
    pub fn mls_dms(&self, user: &str) -> Result<Vec<String>, StoreError> {
        with_table!(self, MLS_USER_DMS, |t| {
            let mut out = Vec::new();
            for entry in t.range((user, "")..)? {
                let (key, _) = entry?;
                let (u, conversation) = key.value();
                if u != user {
                    break;
                }
                out.push(conversation.to_owned());
            }
            Ok(out)
        })
    }

    /// Forgets every encrypted direct conversation of `user` (account deletion); the
    /// conversations' records stay.
    pub fn remove_mls_dms(&mut self, user: &str) -> Result<(), StoreError> {
        let conversations = self.mls_dms(user)?;
        let mut table = self.w()?.open_table(MLS_USER_DMS)?;
        for conversation in &conversations {
            table.remove((user, conversation.as_str()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    /// Key packages are kept per account, device and suite, once each, and taken one at a time;
    /// commits page in order; welcomes and the dm index are per device and per account.
    #[test]
    fn mls_tables_read_back_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), vec![1]).unwrap();
        store
            .write(|tx| {
                for package in [b"p1".as_slice(), b"p2", b"p1"] {
                    tx.put_mls_key_package("ann", "d1", 1, package)?;
                }
                tx.put_mls_key_package("ann", "d1", 3, b"p3")?;
                tx.put_mls_key_package("ann", "d2", 1, b"p4")?;
                for epoch in 0..5 {
                    tx.put_mls_commit("dm:ann:ben", epoch, &[epoch as u8; 10])?;
                }
                tx.put_mls_commit("dm:ann:bea", 0, b"other")?;
                tx.put_mls_welcome("d1", "dm:ann:ben", 1, b"w1")?;
                tx.put_mls_welcome("d1", "group:x", 2, b"w2")?;
                tx.put_mls_welcome("d2", "group:x", 2, b"w3")?;
                tx.add_mls_dm("ann", "dm:ann:ben", 1)?;
                tx.add_mls_dm("ben", "dm:ann:ben", 1)?;
                Ok::<_, StoreError>(())
            })
            .unwrap();
        let count = |d: &str, s| {
            store
                .read(|tx| tx.mls_key_package_count("ann", d, s))
                .unwrap()
        };
        assert_eq!((count("d1", 1), count("d1", 3), count("d2", 1)), (2, 1, 1));
        assert!(
            store
                .read(|tx| tx.has_mls_key_package("ann", "d1", 1, b"p2"))
                .unwrap()
        );
        let mut taken = Vec::new();
        while let Some(p) = store
            .write(|tx| tx.take_mls_key_package("ann", "d1", 1))
            .unwrap()
        {
            taken.push(p);
        }
        taken.sort();
        assert_eq!(taken, [b"p1".to_vec(), b"p2".to_vec()]);
        assert_eq!(count("d1", 3), 1, "another suite is another stock");
        assert_eq!(
            store
                .write(|tx| tx.remove_mls_key_packages("ann", "d1"))
                .unwrap(),
            1
        );
        assert_eq!((count("d1", 3), count("d2", 1)), (0, 1));

        let commits = store
            .read(|tx| tx.mls_commits("dm:ann:ben", 1, 3, usize::MAX))
            .unwrap();
        assert_eq!(commits, [vec![1; 10], vec![2; 10], vec![3; 10]]);
        let commits = store
            .read(|tx| tx.mls_commits("dm:ann:ben", 3, 10, 15))
            .unwrap();
        assert_eq!(commits, [vec![3; 10]], "a byte budget, but at least one");

        let welcomes = store.read(|tx| tx.mls_welcomes("d1", usize::MAX)).unwrap();
        assert_eq!(
            welcomes
                .iter()
                .map(|w| (w.conversation.as_str(), w.epoch, w.welcome.as_slice()))
                .collect::<Vec<_>>(),
            [("dm:ann:ben", 1, b"w1".as_slice()), ("group:x", 2, b"w2")]
        );
        assert!(
            store
                .write(|tx| tx.remove_mls_welcome("d1", "group:x"))
                .unwrap()
        );
        assert!(
            !store
                .write(|tx| tx.remove_mls_welcome("d1", "group:x"))
                .unwrap()
        );
        assert_eq!(store.write(|tx| tx.remove_mls_welcomes("d1")).unwrap(), 1);
        assert!(
            store
                .read(|tx| tx.mls_welcomes("d1", usize::MAX))
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store
                .read(|tx| tx.mls_welcomes("d2", usize::MAX))
                .unwrap()
                .len(),
            1
        );

        assert_eq!(store.read(|tx| tx.mls_dms("ben")).unwrap(), ["dm:ann:ben"]);
        store.write(|tx| tx.remove_mls_dms("ann")).unwrap();
        assert!(store.read(|tx| tx.mls_dms("ann")).unwrap().is_empty());
        assert_eq!(store.read(|tx| tx.mls_dms("ben")).unwrap(), ["dm:ann:ben"]);

        let record = MlsRecord {
            suite: 1,
            epoch: 5,
            members: vec![MlsDevice {
                user: "ann".into(),
                device: vec![1, 2],
            }],
        };
        store
            .write(|tx| tx.put_mls_conversation("dm:ann:ben", &record, b"gi"))
            .unwrap();
        assert_eq!(
            store.read(|tx| tx.mls_conversation("dm:ann:ben")).unwrap(),
            Some(record)
        );
        assert_eq!(
            store.read(|tx| tx.mls_group_info("dm:ann:ben")).unwrap(),
            Some(b"gi".to_vec())
        );
        assert!(
            store
                .read(|tx| tx.is_mls_conversation("dm:ann:ben"))
                .unwrap()
        );
        assert!(!store.read(|tx| tx.is_mls_conversation("group:x")).unwrap());
        assert_eq!(
            store.read(|tx| tx.mls_conversation("group:x")).unwrap(),
            None
        );
    }
}
