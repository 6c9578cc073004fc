//! The kept broadcasts as stored: the store side of `service::broadcasts`. One log for the whole
//! server in `broadcasts_v1` (`seq -> BroadcastEntry`), numbered by a sequence that only grows
//! (`broadcast_seq_v1`; a number is never reused, even after its entry went), and an index
//! `broadcast_ids_v1` (`(message id, device) -> seq`) kept in step with it: every write that adds
//! or removes an entry adds or removes its row in the same transaction.
//!
//! The log is a window: [`Tx::broadcast_expire`] drops the oldest entries beyond a count and those
//! older than a cutoff. Entries leave only from the oldest end, except for recalls
//! ([`Tx::broadcast_remove`]), which leave holes that paging simply skips. Which broadcasts are
//! kept and who may recall what are the service's rules; this file only reads and writes.

use confab_protocol::MessageId;
use confab_protocol::bootstrap::BroadcastEntry;
use redb::{ReadableTable, ReadableTableMetadata};

use super::tables::{BROADCAST_IDS, BROADCAST_SEQ, BROADCASTS};
use super::{StoreError, Tx, Txn, from_cbor, to_cbor};

/// The key of the one row of `broadcast_seq_v1`.
const LAST_SEQ: &str = "last";

/// What [`Tx::broadcast_append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored with this new sequence number.
    New(u64),
    /// The same device's message with the same id is kept already, at this number; nothing was
    /// written.
    Already(u64),
}

impl Tx {
    /// The last broadcast sequence number assigned (0 before the first). It only grows.
    pub fn broadcast_last_seq(&self) -> Result<u64, StoreError> {
        with_table!(self, BROADCAST_SEQ, |t| Ok(t
            .get(LAST_SEQ)?
            .map_or(0, |v| v.value())))
    }

    /// How many broadcasts are kept.
    pub fn broadcast_len(&self) -> Result<u64, StoreError> {
        with_table!(self, BROADCASTS, |t| Ok(t.len()?))
    }

    /// The sequence number of the kept broadcast `id` from `device` (peer id bytes), if it is
    /// still kept.
    pub fn broadcast_seq_of(
        &self,
        id: &MessageId,
        device: &[u8],
    ) -> Result<Option<u64>, StoreError> {
        with_table!(self, BROADCAST_IDS, |t| Ok(t
            .get((id.as_bytes().as_slice(), device))?
            .map(|v| v.value())))
    }

    /// Keeps `entry` with the next sequence number (its `seq` is overwritten), unless the same
    /// device's message with the same id is kept already.
    pub fn broadcast_append(&mut self, mut entry: BroadcastEntry) -> Result<Appended, StoreError> {
        if let Some(seq) = self.broadcast_seq_of(&entry.message.id, &entry.from_device)? {
            return Ok(Appended::Already(seq));
        }
        let seq = self.broadcast_last_seq()? + 1;
        entry.seq = seq;
        self.w()?.open_table(BROADCAST_SEQ)?.insert(LAST_SEQ, seq)?;
        self.w()?
            .open_table(BROADCASTS)?
            .insert(seq, to_cbor(&entry)?.as_slice())?;
        self.w()?.open_table(BROADCAST_IDS)?.insert(
            (
                entry.message.id.as_bytes().as_slice(),
                entry.from_device.as_slice(),
            ),
            seq,
        )?;
        Ok(Appended::New(seq))
    }

    /// The kept broadcasts after `after`, oldest first: at most `limit`, and no more than
    /// `max_bytes` of encoded entries (always at least one, if there is one).
    pub fn broadcast_page(
        &self,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<BroadcastEntry>, StoreError> {
        with_table!(self, BROADCASTS, |t| {
            let mut out = Vec::new();
            let mut bytes = 0;
            for entry in t.range(after.saturating_add(1)..)? {
                let (_, value) = entry?;
                let raw = value.value();
                if out.len() >= limit || (!out.is_empty() && bytes + raw.len() > max_bytes) {
                    break;
                }
                bytes += raw.len();
                out.push(from_cbor(raw)?);
            }
            Ok(out)
        })
    }

    /// Deletes the oldest kept broadcasts beyond the newest `max_kept`, and those stored before
    /// `before_ms` (unix ms), at most `max` of them; returns how many went. Reads only the entries
    /// it deletes and the first one it keeps, so it is cheap to run after every append.
    pub fn broadcast_expire(
        &mut self,
        before_ms: u64,
        max_kept: u64,
        max: usize,
    ) -> Result<usize, StoreError> {
        let expired: Vec<BroadcastEntry> = with_table!(self, BROADCASTS, |t| {
            let mut over = t.len()?.saturating_sub(max_kept);
            let mut out = Vec::new();
            for entry in t.iter()? {
                if out.len() >= max {
                    break;
                }
                let entry: BroadcastEntry = from_cbor(entry?.1.value())?;
                if over > 0 {
                    over -= 1;
                } else if entry.stored_at >= before_ms {
                    // The rest are newer (stored in order).
                    break;
                }
                out.push(entry);
            }
            Ok::<_, StoreError>(out)
        })?;
        for entry in &expired {
            self.broadcast_delete(entry)?;
        }
        Ok(expired.len())
    }

    /// Deletes the kept broadcasts with id `id` for which `author_match` holds (a recall: the
    /// service decides whose they are); returns their sequence numbers. Reads only the entries
    /// with that id (one per device that used it), found through the index: no scan of the log.
    pub fn broadcast_remove(
        &mut self,
        id: &MessageId,
        author_match: impl Fn(&BroadcastEntry) -> bool,
    ) -> Result<Vec<u64>, StoreError> {
        let id = id.as_bytes();
        let seqs: Vec<u64> = with_table!(self, BROADCAST_IDS, |t| {
            let mut seqs = Vec::new();
            for row in t.range((id.as_slice(), [].as_slice())..)? {
                let (key, value) = row?;
                if key.value().0 != id.as_slice() {
                    break;
                }
                seqs.push(value.value());
            }
            Ok::<_, StoreError>(seqs)
        })?;
        let mut removed = Vec::new();
        for seq in seqs {
            let raw: Option<Vec<u8>> = with_table!(self, BROADCASTS, |t| t
                .get(seq)?
                .map(|v| v.value().to_vec()));
            let Some(raw) = raw else {
                continue;
            };
            let entry: BroadcastEntry = from_cbor(&raw)?;
            if author_match(&entry) {
                self.broadcast_delete(&entry)?;
                removed.push(seq);
            }
        }
        Ok(removed)
    }

    /// Deletes one kept entry and its index row.
    fn broadcast_delete(&mut self, entry: &BroadcastEntry) -> Result<(), StoreError> {
        self.w()?.open_table(BROADCASTS)?.remove(entry.seq)?;
        self.w()?.open_table(BROADCAST_IDS)?.remove((
            entry.message.id.as_bytes().as_slice(),
            entry.from_device.as_slice(),
        ))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use confab_protocol::ChatMessage;

    fn entry(device: u8, stored_at: u64, message: &ChatMessage) -> BroadcastEntry {
        BroadcastEntry {
            seq: 0,
            from_device: vec![device],
            stored_at,
            message: message.clone(),
        }
    }

    fn text(t: &str) -> ChatMessage {
        ChatMessage::text("x", t, 1)
    }

    fn open() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), vec![1]).unwrap();
        (store, dir)
    }

    fn texts(page: &[BroadcastEntry]) -> Vec<(u64, String)> {
        page.iter()
            .map(|e| (e.seq, e.message.text.clone().unwrap()))
            .collect()
    }

    /// Numbers grow from 1, pages honour `after`, `limit` and bytes, the same device's id is
    /// kept once (another device's same id is another broadcast).
    #[test]
    fn appends_are_numbered_paged_and_deduplicated() {
        let (store, _dir) = open();
        assert_eq!(store.read(|tx| tx.broadcast_last_seq()).unwrap(), 0);
        let messages: Vec<ChatMessage> = (0..5).map(|i| text(&format!("m{i}"))).collect();
        for (i, m) in messages.iter().enumerate() {
            let appended = store
                .write(|tx| tx.broadcast_append(entry(1, 10, m)))
                .unwrap();
            assert_eq!(appended, Appended::New(i as u64 + 1));
        }
        let again = store
            .write(|tx| tx.broadcast_append(entry(1, 99, &messages[2])))
            .unwrap();
        assert_eq!(again, Appended::Already(3));
        let other_device = store
            .write(|tx| tx.broadcast_append(entry(2, 99, &messages[2])))
            .unwrap();
        assert_eq!(other_device, Appended::New(6));

        let page = |after, limit, bytes| {
            store
                .read(|tx| tx.broadcast_page(after, limit, bytes))
                .unwrap()
        };
        assert_eq!(
            texts(&page(0, 2, usize::MAX)),
            [(1, "m0".into()), (2, "m1".into())]
        );
        assert_eq!(
            texts(&page(4, 10, usize::MAX)),
            [(5, "m4".into()), (6, "m2".into())]
        );
        assert!(page(6, 10, usize::MAX).is_empty());
        assert_eq!(page(0, 10, 1).len(), 1, "at least one, whatever the bytes");
        assert_eq!(page(u64::MAX, 10, usize::MAX), []);
        assert_eq!(store.read(|tx| tx.broadcast_last_seq()).unwrap(), 6);
        assert_eq!(store.read(|tx| tx.broadcast_len()).unwrap(), 6);
    }

    /// The window: the oldest beyond the count go, then those older than the cutoff; numbers are
    /// never reused and the index goes with its entry.
    #[test]
    fn the_window_is_bounded_by_count_and_age() {
        let (store, _dir) = open();
        let messages: Vec<ChatMessage> = (0..6).map(|i| text(&format!("m{i}"))).collect();
        for (i, m) in messages.iter().enumerate() {
            store
                .write(|tx| tx.broadcast_append(entry(1, 100 + i as u64, m)))
                .unwrap();
        }
        // By count: 6 kept, at most 4.
        assert_eq!(store.write(|tx| tx.broadcast_expire(0, 4, 100)).unwrap(), 2);
        let all = store
            .read(|tx| tx.broadcast_page(0, 100, usize::MAX))
            .unwrap();
        assert_eq!(all.first().map(|e| e.seq), Some(3));
        assert_eq!(
            store
                .read(|tx| tx.broadcast_seq_of(&messages[0].id, &[1]))
                .unwrap(),
            None
        );
        // By age: stored before 104 (seq 3 and 4).
        assert_eq!(
            store
                .write(|tx| tx.broadcast_expire(104, 100, 100))
                .unwrap(),
            2
        );
        // The batch bound: at most one per call.
        assert_eq!(
            store.write(|tx| tx.broadcast_expire(200, 100, 1)).unwrap(),
            1
        );
        assert_eq!(
            texts(
                &store
                    .read(|tx| tx.broadcast_page(0, 100, usize::MAX))
                    .unwrap()
            ),
            [(6, "m5".into())]
        );
        // Nothing to do: nothing goes.
        assert_eq!(store.write(|tx| tx.broadcast_expire(0, 1, 100)).unwrap(), 0);
        // A message whose entry expired may be kept again, with a new number.
        assert_eq!(
            store
                .write(|tx| tx.broadcast_append(entry(1, 300, &messages[0])))
                .unwrap(),
            Appended::New(7)
        );
    }

    /// A removal takes only the entries with that id that match, with their index rows.
    #[test]
    fn removal_takes_only_matching_entries() {
        let (store, _dir) = open();
        let (shared, other) = (text("same id"), text("other"));
        store
            .write(|tx| {
                tx.broadcast_append(entry(1, 1, &shared))?;
                tx.broadcast_append(entry(2, 1, &shared))?;
                tx.broadcast_append(entry(1, 1, &other))
            })
            .unwrap();
        let removed = store
            .write(|tx| tx.broadcast_remove(&shared.id, |e| e.from_device == [2]))
            .unwrap();
        assert_eq!(removed, [2]);
        let left: Vec<u64> = store
            .read(|tx| tx.broadcast_page(0, 10, usize::MAX))
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(left, [1, 3]);
        assert_eq!(
            store
                .read(|tx| tx.broadcast_seq_of(&shared.id, &[2]))
                .unwrap(),
            None
        );
        let none = store
            .write(|tx| tx.broadcast_remove(&MessageId::random(), |_| true))
            .unwrap();
        assert!(none.is_empty());
        assert_eq!(store.read(|tx| tx.broadcast_last_seq()).unwrap(), 3);
    }
}
