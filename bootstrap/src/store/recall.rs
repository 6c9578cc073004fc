//! Mailbox entries changed in place, for recalls and deletions: the store side of
//! `service::recall`. An entry keeps its place (its key and sequence number) and its envelope;
//! only what it holds is rewritten ([`Tx::mailbox_replace_item`]), so a message's body leaves the
//! live database while devices that sync from before it see a tombstone where it was. Finding a
//! copy ([`Tx::mailbox_copy`]) goes through the deduplication index, which is kept after an entry
//! expires: a copy is found only while its entry is still stored. The rules (who may recall what,
//! which tombstones are appended where) are the service's; this file only reads and writes.

use confab_protocol::MessageId;
use confab_protocol::bootstrap::{MailboxEntry, MailboxItem};
use redb::ReadableTable;

use super::tables::{MAILBOX, MAILBOX_IDS};
use super::{StoreError, Tx, Txn, decode_entry, to_cbor};

impl Tx {
    /// The entry at `seq` of `owner`'s mailbox, if it is still stored.
    pub fn mailbox_entry(&self, owner: &str, seq: u64) -> Result<Option<MailboxEntry>, StoreError> {
        let raw: Option<Vec<u8>> = with_table!(self, MAILBOX, |t| t
            .get((owner, seq))?
            .map(|v| v.value().to_vec()));
        raw.map(|r| decode_entry(&r)).transpose()
    }

    /// The entry in `owner`'s mailbox that holds (or held, before a recall or deletion replaced
    /// it) `author`'s message `id`, if that entry is still stored (an expired one is gone, though
    /// the deduplication index still knows its number).
    pub fn mailbox_copy(
        &self,
        owner: &str,
        author: &str,
        id: &MessageId,
    ) -> Result<Option<MailboxEntry>, StoreError> {
        match self.mailbox_seq_of(owner, author, id)? {
            Some(seq) => self.mailbox_entry(owner, seq),
            None => Ok(None),
        }
    }

    /// The authors of messages with id `id` that `owner`'s mailbox ever stored (entries since
    /// expired included), with their sequence numbers. Scans the owner's whole deduplication
    /// index: for a read transaction (it holds no write lock), when the author is not known.
    pub fn mailbox_authors_of(
        &self,
        owner: &str,
        id: &MessageId,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let id = id.as_bytes();
        with_table!(self, MAILBOX_IDS, |t| {
            let mut out = Vec::new();
            for entry in t.range((owner, "", [].as_slice())..)? {
                let (key, value) = entry?;
                let (o, author, stored_id) = key.value();
                if o != owner {
                    break;
                }
                if stored_id == id.as_slice() {
                    out.push((author.to_owned(), value.value()));
                }
            }
            Ok(out)
        })
    }

    /// Replaces what the entry at `seq` of `owner`'s mailbox holds by `item`, keeping its
    /// sequence number and envelope (conversation, author, device, direction, time). The old
    /// item (a message's body) is no longer in the database's live data, though its bytes may
    /// stay in free pages of the file until they are reused. Returns whether there was such an
    /// entry (nothing is written if not). The deduplication index is left as it is, so a retried
    /// deposit of the message is still recognised and not stored again.
    pub fn mailbox_replace_item(
        &mut self,
        owner: &str,
        seq: u64,
        item: MailboxItem,
    ) -> Result<bool, StoreError> {
        let Some(mut entry) = self.mailbox_entry(owner, seq)? else {
            return Ok(false);
        };
        entry.item = item;
        self.w()?
            .open_table(MAILBOX)?
            .insert((owner, seq), to_cbor(&entry)?.as_slice())?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use confab_protocol::ChatMessage;

    fn entry(from_user: &str, message: &ChatMessage) -> MailboxEntry {
        MailboxEntry {
            seq: 0,
            conversation: format!("user:{from_user}"),
            from_user: from_user.into(),
            from_device: vec![1],
            outgoing: false,
            stored_at: 7,
            item: MailboxItem::Message(message.clone()),
        }
    }

    /// A replaced entry keeps its number and envelope; copies are found by author and id, or by
    /// id alone; an expired copy is known to the index but not found.
    #[test]
    fn entries_are_replaced_in_place_and_found_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), vec![1]).unwrap();
        let (m1, m2) = (
            ChatMessage::text("ann", "one", 1),
            ChatMessage::text("cal", "two", 1),
        );
        store
            .write(|tx| {
                tx.mailbox_append("ben", entry("ann", &m1))?;
                tx.mailbox_append("ben", entry("cal", &m2))?;
                tx.mailbox_append("dee", entry("ann", &m1))
            })
            .unwrap();
        let copy = |owner: &str, author: &str, id| {
            store
                .read(|tx| tx.mailbox_copy(owner, author, &id))
                .unwrap()
        };
        let before = copy("ben", "cal", m2.id).unwrap();
        assert_eq!(before.seq, 2);
        assert_eq!(copy("ben", "ann", m2.id), None, "by author and id");
        assert_eq!(
            store
                .read(|tx| tx.mailbox_authors_of("ben", &m1.id))
                .unwrap(),
            [("ann".to_owned(), 1)]
        );
        assert!(
            store
                .read(|tx| tx.mailbox_authors_of("cal", &m1.id))
                .unwrap()
                .is_empty()
        );

        let item = MailboxItem::Recall {
            id: m2.id,
            author: "cal".into(),
        };
        let replaced = store
            .write(|tx| tx.mailbox_replace_item("ben", 2, item.clone()))
            .unwrap();
        assert!(replaced);
        assert_eq!(
            copy("ben", "cal", m2.id),
            Some(MailboxEntry {
                item: item.clone(),
                ..before
            })
        );
        assert_eq!(store.read(|tx| tx.mailbox_last_seq("ben")).unwrap(), 2);
        assert!(
            !store
                .write(|tx| tx.mailbox_replace_item("ben", 9, item))
                .unwrap()
        );
        assert_eq!(store.read(|tx| tx.mailbox_entry("ben", 9)).unwrap(), None);

        store.write(|tx| tx.mailbox_expire(8, 10)).unwrap();
        assert_eq!(copy("ben", "ann", m1.id), None);
        assert_eq!(
            store
                .read(|tx| tx.mailbox_seq_of("ben", "ann", &m1.id))
                .unwrap(),
            Some(1),
            "the index outlives the entry"
        );
    }
}
