//! Every table of the bootstrap's database, in one place. The version is part of each name: a
//! format change is a new table and a migration, never a silent reinterpretation.

use redb::{Key, TableDefinition, Value};

/// `key -> bytes`: the server's identity and other singletons.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta_v1");
/// `username -> UserRecord` (CBOR).
pub(crate) const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users_v1");
/// `device peer id -> username`.
pub(crate) const DEVICE_USER: TableDefinition<&str, &str> = TableDefinition::new("device_user_v1");
/// `(username, device peer id) -> bound at (unix ms)`.
pub(crate) const USER_DEVICES: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("user_devices_v1");
/// `(username, other username) -> relation` (see `Relation`); kept symmetric.
pub(crate) const RELATIONS: TableDefinition<(&str, &str), u8> =
    TableDefinition::new("relations_v1");
/// `avatar hash -> (mime, bytes)` (CBOR).
pub(crate) const AVATARS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("avatars_v1");
/// `avatar hash -> number of users showing it`.
pub(crate) const AVATAR_REFS: TableDefinition<&[u8], u64> = TableDefinition::new("avatar_refs_v1");
/// `(owner, seq) -> MailboxEntry` (CBOR): every direct message of an account, both directions,
/// and the delivery and read receipts about them, in the order the bootstrap stored them.
pub(crate) const MAILBOX: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("mailbox_v1");
/// `(owner, author, message id) -> seq`: deduplication of messages (receipts have none),
/// permanent (kept after the entry expires).
pub(crate) const MAILBOX_IDS: TableDefinition<(&str, &str, &[u8]), u64> =
    TableDefinition::new("mailbox_ids_v1");
/// `owner -> the last sequence number assigned`: numbers are never reused, even after the
/// entries that had them expired.
pub(crate) const MAILBOX_SEQ: TableDefinition<&str, u64> = TableDefinition::new("mailbox_seq_v1");
/// `owner -> seq`: the highest sequence number of the owner's mailbox up to which the incoming
/// messages have been reported delivered to their authors (a device of the owner fetched them).
/// Each message is reported once, however many of the owner's devices fetch it.
pub(crate) const MAILBOX_DELIVERED: TableDefinition<&str, u64> =
    TableDefinition::new("mailbox_delivered_v1");
/// `group id -> GroupRecord` (CBOR): a group's name, version and members in join order.
pub(crate) const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("groups_v1");
/// `(username, group id) -> joined at (unix ms)`: the groups of each account, kept in step with
/// the members of [`GROUPS`] by `Tx::put_group` and `Tx::remove_group`.
pub(crate) const USER_GROUPS: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("user_groups_v1");
/// `username -> AccountSettings` (CBOR): do-not-disturb, muted conversations, blocked users and
/// groups; absent until the account first changes one.
pub(crate) const SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("settings_v1");
/// `seq -> BroadcastEntry` (CBOR): the kept broadcasts, oldest first; a window bounded by count
/// and age (see `store::broadcasts`).
pub(crate) const BROADCASTS: TableDefinition<u64, &[u8]> = TableDefinition::new("broadcasts_v1");
/// `(message id, device peer id bytes) -> seq`: the kept broadcasts by id, for deduplication and
/// recalls; kept in step with [`BROADCASTS`] (an entry and its row go together).
pub(crate) const BROADCAST_IDS: TableDefinition<(&[u8], &[u8]), u64> =
    TableDefinition::new("broadcast_ids_v1");
/// `"last" -> the last broadcast sequence number assigned`: never reused, even after the entries
/// that had them were deleted.
pub(crate) const BROADCAST_SEQ: TableDefinition<&str, u64> =
    TableDefinition::new("broadcast_seq_v1");
/// `file root -> HoldRecord` (CBOR): files kept for receivers who were offline (see
/// `store::holds`); the bytes are in the server's blob store.
pub(crate) const HOLDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("file_holds_v1");
/// `(author, message id) -> file root`: which hold a message's attachment is in (for recalls);
/// kept in step with the references in [`HOLDS`].
pub(crate) const HOLD_REFS: TableDefinition<(&str, &[u8]), &[u8]> =
    TableDefinition::new("file_hold_refs_v1");
/// `username -> bytes`: the size of the held files each account is charged for (its quota use).
pub(crate) const HOLD_USAGE: TableDefinition<&str, u64> =
    TableDefinition::new("file_hold_usage_v1");
/// `(username, device peer id, suite code, blake3 of the package) -> TLS-encoded KeyPackage`: the
/// MLS key packages each device published, per suite, each handed out once (see `store::mls`).
pub(crate) const MLS_KEY_PACKAGES: TableDefinition<(&str, &str, u16, &[u8]), &[u8]> =
    TableDefinition::new("mls_key_packages_v1");
/// `conversation -> MlsRecord` (CBOR): an encrypted conversation's suite, epoch and member devices.
pub(crate) const MLS_CONVERSATIONS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("mls_conversations_v1");
/// `conversation -> TLS-encoded MLSMessage`: the latest GroupInfo of each conversation in
/// [`MLS_CONVERSATIONS`] (apart, so that listing and checking records does not read it).
pub(crate) const MLS_GROUP_INFOS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("mls_group_infos_v1");
/// `(conversation, epoch) -> TLS-encoded MLSMessage`: the commit that left each epoch, in order.
pub(crate) const MLS_COMMITS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("mls_commits_v1");
/// `(device peer id, conversation) -> StoredWelcome` (CBOR): the Welcome waiting for a device
/// added to a conversation, until it says it processed it.
pub(crate) const MLS_WELCOMES: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("mls_welcomes_v1");
/// `(username, dm conversation) -> started at (unix ms)`: each account's encrypted direct
/// conversations (a group's are found through [`USER_GROUPS`]), written with the conversation's
/// record in [`MLS_CONVERSATIONS`].
pub(crate) const MLS_USER_DMS: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("mls_user_dms_v1");

/// Key in [`META`]: the server's keypair (libp2p protobuf encoding).
pub(crate) const KEY_IDENTITY: &str = "identity";

/// Something done to every table in turn (copy it, count it, name it): see [`visit_all`]. One
/// generic method, so each table is visited with its own key and value types.
pub(crate) trait TableVisitor {
    /// Why a visit failed.
    type Error;
    /// Called once per table.
    fn visit<K: Key + 'static, V: Value + 'static>(
        &mut self,
        table: TableDefinition<'static, K, V>,
    ) -> Result<(), Self::Error>;
}

/// Visits every table of the database, each named exactly once here. Backups copy exactly these
/// tables, so a table must be listed here to be backed up; `backup`'s tests fail when a table
/// defined in this file or created by `Store::open` is missing from this list.
pub(crate) fn visit_all<T: TableVisitor>(visitor: &mut T) -> Result<(), T::Error> {
    visitor.visit(META)?;
    visitor.visit(USERS)?;
    visitor.visit(DEVICE_USER)?;
    visitor.visit(USER_DEVICES)?;
    visitor.visit(RELATIONS)?;
    visitor.visit(AVATARS)?;
    visitor.visit(AVATAR_REFS)?;
    visitor.visit(MAILBOX)?;
    visitor.visit(MAILBOX_IDS)?;
    visitor.visit(MAILBOX_SEQ)?;
    visitor.visit(MAILBOX_DELIVERED)?;
    visitor.visit(GROUPS)?;
    visitor.visit(USER_GROUPS)?;
    visitor.visit(SETTINGS)?;
    visitor.visit(BROADCASTS)?;
    visitor.visit(BROADCAST_IDS)?;
    visitor.visit(BROADCAST_SEQ)?;
    visitor.visit(HOLDS)?;
    visitor.visit(HOLD_REFS)?;
    visitor.visit(HOLD_USAGE)?;
    visitor.visit(MLS_KEY_PACKAGES)?;
    visitor.visit(MLS_CONVERSATIONS)?;
    visitor.visit(MLS_GROUP_INFOS)?;
    visitor.visit(MLS_COMMITS)?;
    visitor.visit(MLS_WELCOMES)?;
    visitor.visit(MLS_USER_DMS)?;
    Ok(())
}
