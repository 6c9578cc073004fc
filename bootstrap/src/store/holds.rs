//! Files held for offline receivers, as stored: one CBOR [`HoldRecord`] per file root in
//! `file_holds_v1`, an index from each message that references a hold to its root
//! (`file_hold_refs_v1`, for recalls), and each account's quota use (`file_hold_usage_v1`).
//! The rules (who may hold what, limits, when a hold ends) are `service::files`'; this file only
//! reads and writes, keeping the three tables in step.

use confab_protocol::{ContentHash, MessageId};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::tables::{HOLD_REFS, HOLD_USAGE, HOLDS};
use super::{StoreError, Tx, Txn, from_cbor, to_cbor};

/// A file the bootstrap keeps (or is pulling) for receivers who were offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRecord {
    /// Its size in bytes (as the author declared it; the pull checks it against the hash list).
    pub size: u64,
    /// The account charged for it (the first author who asked).
    pub owner: String,
    /// Whether all of it is in the blob store.
    pub complete: bool,
    /// When it was first asked for (unix ms).
    pub created_at: u64,
    /// When it is deleted whoever still waits (unix ms).
    pub expires_at: u64,
    /// The messages that carry it, each with the receivers still waiting for it.
    pub refs: Vec<HoldRef>,
}

/// One message carrying a held file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRef {
    /// The message's author.
    pub author: String,
    /// The message.
    pub id: MessageId,
    /// The receivers (accounts) that have not reported having the file.
    pub waiting: Vec<String>,
}

impl HoldRecord {
    /// Whether `user` may fetch it: its owner, an author of a message carrying it, or a
    /// receiver still waiting for it.
    pub fn allows(&self, user: &str) -> bool {
        self.owner == user
            || self
                .refs
                .iter()
                .any(|r| r.author == user || r.waiting.iter().any(|w| w == user))
    }
}

impl Tx {
    /// The hold of `root`, if any.
    pub fn hold(&self, root: &ContentHash) -> Result<Option<HoldRecord>, StoreError> {
        let raw: Option<Vec<u8>> = with_table!(self, HOLDS, |t| t
            .get(root.0.as_slice())?
            .map(|v| v.value().to_vec()));
        raw.map(|r| from_cbor(&r)).transpose()
    }

    /// Stores the hold of `root` as it is, with the message index in step (`before` is the
    /// record as it was, `None` for a new one).
    pub fn put_hold(
        &mut self,
        root: &ContentHash,
        before: Option<&HoldRecord>,
        hold: &HoldRecord,
    ) -> Result<(), StoreError> {
        let mut refs = self.w()?.open_table(HOLD_REFS)?;
        for r in before.map_or(&[][..], |b| &b.refs) {
            refs.remove((r.author.as_str(), r.id.as_bytes().as_slice()))?;
        }
        for r in &hold.refs {
            refs.insert(
                (r.author.as_str(), r.id.as_bytes().as_slice()),
                root.0.as_slice(),
            )?;
        }
        self.w()?
            .open_table(HOLDS)?
            .insert(root.0.as_slice(), to_cbor(hold)?.as_slice())?;
        Ok(())
    }

    /// Deletes the hold of `root` and its message index; returns what it was.
    pub fn remove_hold(&mut self, root: &ContentHash) -> Result<Option<HoldRecord>, StoreError> {
        let Some(hold) = self.hold(root)? else {
            return Ok(None);
        };
        let mut refs = self.w()?.open_table(HOLD_REFS)?;
        for r in &hold.refs {
            refs.remove((r.author.as_str(), r.id.as_bytes().as_slice()))?;
        }
        self.w()?.open_table(HOLDS)?.remove(root.0.as_slice())?;
        Ok(Some(hold))
    }

    /// The root of the hold that `author`'s message `id` references, if any.
    pub fn hold_of_message(
        &self,
        author: &str,
        id: &MessageId,
    ) -> Result<Option<ContentHash>, StoreError> {
        with_table!(self, HOLD_REFS, |t| Ok(t
            .get((author, id.as_bytes().as_slice()))?
            .and_then(|v| <[u8; 32]>::try_from(v.value()).ok())
            .map(ContentHash)))
    }

    /// Every hold, in root order, up to `limit` (the expiry and the pulls to resume scan them).
    pub fn holds(&self, limit: usize) -> Result<Vec<(ContentHash, HoldRecord)>, StoreError> {
        let raw: Vec<(Vec<u8>, Vec<u8>)> = with_table!(self, HOLDS, |t| {
            let mut out = Vec::new();
            for entry in t.iter()?.take(limit) {
                let (k, v) = entry?;
                out.push((k.value().to_vec(), v.value().to_vec()));
            }
            Ok::<_, StoreError>(out)
        })?;
        raw.into_iter()
            .filter_map(|(k, v)| Some((<[u8; 32]>::try_from(k.as_slice()).ok()?, v)))
            .map(|(k, v)| Ok((ContentHash(k), from_cbor(&v)?)))
            .collect()
    }

    /// Bytes of held files `user` is charged for.
    pub fn hold_usage(&self, user: &str) -> Result<u64, StoreError> {
        with_table!(self, HOLD_USAGE, |t| Ok(t
            .get(user)?
            .map_or(0, |v| v.value())))
    }

    /// Adds `delta` bytes to (or, negative, takes them from) `user`'s quota use.
    pub fn add_hold_usage(&mut self, user: &str, delta: i128) -> Result<(), StoreError> {
        let now = i128::from(self.hold_usage(user)?);
        let new = u64::try_from((now + delta).max(0)).unwrap_or(u64::MAX);
        let mut t = self.w()?.open_table(HOLD_USAGE)?;
        if new == 0 {
            t.remove(user)?;
        } else {
            t.insert(user, new)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn holds_keep_their_message_index_and_usage_in_step() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), vec![1]).unwrap();
        let root = ContentHash([3; 32]);
        let (m1, m2) = (MessageId::random(), MessageId::random());
        let mut hold = HoldRecord {
            size: 10,
            owner: "ann".into(),
            complete: false,
            created_at: 1,
            expires_at: 2,
            refs: vec![HoldRef {
                author: "ann".into(),
                id: m1,
                waiting: vec!["ben".into()],
            }],
        };
        store
            .write(|tx| {
                tx.put_hold(&root, None, &hold)?;
                tx.add_hold_usage("ann", 10)
            })
            .unwrap();
        let before = hold.clone();
        hold.refs[0].waiting.clear();
        hold.refs.push(HoldRef {
            author: "cal".into(),
            id: m2,
            waiting: vec!["dan".into()],
        });
        store
            .write(|tx| tx.put_hold(&root, Some(&before), &hold))
            .unwrap();
        let read = |author: &str, id| store.read(|tx| tx.hold_of_message(author, &id)).unwrap();
        assert_eq!(read("ann", m1), Some(root));
        assert_eq!(read("cal", m2), Some(root));
        assert_eq!(read("cal", m1), None);
        let stored = store.read(|tx| tx.hold(&root)).unwrap().unwrap();
        assert!(stored.allows("dan") && stored.allows("ann") && !stored.allows("ben"));
        assert_eq!(store.read(|tx| tx.holds(10)).unwrap(), vec![(root, hold)]);
        assert_eq!(store.read(|tx| tx.hold_usage("ann")).unwrap(), 10);
        store
            .write(|tx| {
                tx.remove_hold(&root)?;
                tx.add_hold_usage("ann", -10)
            })
            .unwrap();
        assert_eq!(read("ann", m1), None);
        assert_eq!(store.read(|tx| tx.hold(&root)).unwrap(), None);
        assert_eq!(store.read(|tx| tx.hold_usage("ann")).unwrap(), 0);
    }
}
