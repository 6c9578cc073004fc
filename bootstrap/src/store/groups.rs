//! Groups as stored: one [`GroupRecord`] per group in `groups_v1`, and the index
//! `user_groups_v1` of each account's groups, which [`Tx::put_group`] and [`Tx::remove_group`]
//! keep in step with the records' members. The rules (who may change what) are the groups
//! service's; this file only reads and writes.

use confab_protocol::group::Role;
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::tables::{GROUPS, USER_GROUPS};
use super::{StoreError, Tx, Txn, from_cbor, to_cbor};

/// A group as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// Its name (trimmed, non-empty).
    pub name: String,
    /// Its roster's version: 1 at creation, one more with every change.
    pub version: u64,
    /// When it was created (unix ms).
    pub created_at: u64,
    /// Its members, in the order they joined (the oldest first), each once.
    pub members: Vec<GroupMember>,
}

/// One member of a stored group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    /// The account.
    pub user: String,
    /// What it may do.
    pub role: Role,
    /// When it joined (unix ms).
    pub joined_at: u64,
}

impl GroupRecord {
    /// The role of `user`, if a member.
    pub fn role_of(&self, user: &str) -> Option<Role> {
        self.members.iter().find(|m| m.user == user).map(|m| m.role)
    }
}

impl Tx {
    /// A group, if it exists.
    pub fn group(&self, group: &str) -> Result<Option<GroupRecord>, StoreError> {
        let value: Option<Vec<u8>> =
            with_table!(self, GROUPS, |t| t.get(group)?.map(|v| v.value().to_vec()));
        value.map(|v| from_cbor(&v)).transpose()
    }

    /// Creates or replaces a group, and updates the index of its members' groups: members who
    /// are no longer in `record` lose it, the others have it (with their `joined_at`).
    pub fn put_group(&mut self, group: &str, record: &GroupRecord) -> Result<(), StoreError> {
        let before = self.group(group)?;
        let mut index = self.w()?.open_table(USER_GROUPS)?;
        for gone in before
            .iter()
            .flat_map(|b| &b.members)
            .filter(|m| record.role_of(&m.user).is_none())
        {
            index.remove((gone.user.as_str(), group))?;
        }
        for member in &record.members {
            index.insert((member.user.as_str(), group), member.joined_at)?;
        }
        drop(index);
        self.w()?
            .open_table(GROUPS)?
            .insert(group, to_cbor(record)?.as_slice())?;
        Ok(())
    }

    /// Deletes a group and its members' index entries; nothing happens if there is none.
    pub fn remove_group(&mut self, group: &str) -> Result<(), StoreError> {
        let Some(record) = self.group(group)? else {
            return Ok(());
        };
        let mut index = self.w()?.open_table(USER_GROUPS)?;
        for member in &record.members {
            index.remove((member.user.as_str(), group))?;
        }
        drop(index);
        self.w()?.open_table(GROUPS)?.remove(group)?;
        Ok(())
    }

    /// The groups `user` is a member of, by id, with when it joined each.
    pub fn user_groups(&self, user: &str) -> Result<Vec<(String, u64)>, StoreError> {
        with_table!(self, USER_GROUPS, |t| {
            let mut out = Vec::new();
            for entry in t.range((user, "")..)? {
                let (key, value) = entry?;
                let (u, group) = key.value();
                if u != user {
                    break;
                }
                out.push((group.to_owned(), value.value()));
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn member(user: &str, role: Role, joined_at: u64) -> GroupMember {
        GroupMember {
            user: user.into(),
            role,
            joined_at,
        }
    }

    /// The index follows the records: members added, removed, and the group deleted.
    #[test]
    fn the_index_of_each_users_groups_follows_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), vec![1]).unwrap();
        let (g1, g2) = ("a".repeat(32), "b".repeat(32));
        let mut record = GroupRecord {
            name: "team".into(),
            version: 1,
            created_at: 5,
            members: vec![
                member("ann", Role::Owner, 5),
                member("ben", Role::Member, 5),
            ],
        };
        let other = GroupRecord {
            members: vec![member("ben", Role::Owner, 6)],
            ..record.clone()
        };
        store
            .write(|tx| {
                tx.put_group(&g1, &record)?;
                tx.put_group(&g2, &other)
            })
            .unwrap();
        let groups_of = |user: &str| store.read(|tx| tx.user_groups(user)).unwrap();
        assert_eq!(groups_of("ann"), [(g1.clone(), 5)]);
        assert_eq!(groups_of("ben"), [(g1.clone(), 5), (g2.clone(), 6)]);

        record.members.remove(1);
        record.members.push(member("cal", Role::Member, 7));
        record.version = 2;
        store.write(|tx| tx.put_group(&g1, &record)).unwrap();
        assert_eq!(store.read(|tx| tx.group(&g1)).unwrap(), Some(record));
        assert_eq!(groups_of("ben"), [(g2.clone(), 6)]);
        assert_eq!(groups_of("cal"), [(g1.clone(), 7)]);

        store.write(|tx| tx.remove_group(&g1)).unwrap();
        assert_eq!(store.read(|tx| tx.group(&g1)).unwrap(), None);
        assert!(groups_of("ann").is_empty() && groups_of("cal").is_empty());
        assert_eq!(groups_of("ben"), [(g2, 6)]);
        store.write(|tx| tx.remove_group(&g1)).unwrap();
    }
}
