//! Account settings as stored: one CBOR [`AccountSettings`] per account in `settings_v1`, absent
//! until the account first changes one (an absent row reads as the defaults, version 0). The
//! rules (which addresses are valid, the limits, versioning) are the settings service's; this
//! file only reads and writes, plus [`Tx::blocks`], the check every enforcing request makes.

use std::borrow::Cow;

use confab_protocol::bootstrap::AccountSettings;
use redb::ReadableTable;
use serde::Deserialize;

use super::tables::SETTINGS;
use super::{StoreError, Tx, Txn, from_cbor, to_cbor};

/// The `blocked` field of a stored [`AccountSettings`] alone: [`Tx::blocks`] decodes only this,
/// borrowing the strings from the stored bytes, and skips the muted list (up to
/// `MAX_MUTED` addresses) that it does not need.
#[derive(Deserialize)]
struct BlockedOnly<'a> {
    #[serde(borrow, default)]
    blocked: Vec<Cow<'a, str>>,
}

impl Tx {
    /// `user`'s settings; the defaults (version 0) when they never changed any.
    pub fn settings(&self, user: &str) -> Result<AccountSettings, StoreError> {
        with_table!(self, SETTINGS, |t| match t.get(user)? {
            Some(value) => from_cbor(value.value()),
            None => Ok(AccountSettings::default()),
        })
    }

    /// Stores `user`'s settings as they are (the caller raised the version).
    pub fn put_settings(
        &mut self,
        user: &str,
        settings: &AccountSettings,
    ) -> Result<(), StoreError> {
        self.w()?
            .open_table(SETTINGS)?
            .insert(user, to_cbor(settings)?.as_slice())?;
        Ok(())
    }

    /// Deletes `user`'s settings (account deletion); nothing happens if there are none.
    pub fn remove_settings(&mut self, user: &str) -> Result<(), StoreError> {
        self.w()?.open_table(SETTINGS)?.remove(user)?;
        Ok(())
    }

    /// Whether `owner` blocked `target`, a canonical address (`user:<name>` or `group:<id>`).
    /// One lookup, and only the blocked list is decoded.
    pub fn blocks(&self, owner: &str, target: &str) -> Result<bool, StoreError> {
        with_table!(self, SETTINGS, |t| match t.get(owner)? {
            Some(value) => {
                let raw = value.value();
                let stored: BlockedOnly<'_> = cbor4ii::serde::from_slice(raw)
                    .map_err(|e| StoreError::Corrupt(format!("{e:?}")))?;
                Ok(stored.blocked.iter().any(|b| b == target))
            }
            None => Ok(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn settings_default_round_trip_and_answer_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), vec![1]).unwrap();
        assert_eq!(
            store.read(|tx| tx.settings("ann")).unwrap(),
            AccountSettings::default()
        );
        assert!(!store.read(|tx| tx.blocks("ann", "user:ben")).unwrap());
        let settings = AccountSettings {
            version: 3,
            dnd: true,
            muted: vec!["broadcast".into(), "user:cal".into()],
            blocked: vec!["user:ben".into(), format!("group:{}", "a".repeat(32))],
        };
        store.write(|tx| tx.put_settings("ann", &settings)).unwrap();
        assert_eq!(store.read(|tx| tx.settings("ann")).unwrap(), settings);
        let blocks = |owner: &str, target: &str| store.read(|tx| tx.blocks(owner, target)).unwrap();
        assert!(blocks("ann", "user:ben"));
        assert!(blocks("ann", &format!("group:{}", "a".repeat(32))));
        assert!(!blocks("ann", "user:cal"), "muted is not blocked");
        assert!(!blocks("ben", "user:ann"), "blocking is one way");
        store.write(|tx| tx.remove_settings("ann")).unwrap();
        assert!(!blocks("ann", "user:ben"));
        assert_eq!(
            store.read(|tx| tx.settings("ann")).unwrap(),
            AccountSettings::default()
        );
    }
}
