//! The node's local store: one redb file (`confab.redb`) owned by one actor thread.
//!
//! Writes are group-committed: the actor takes every request waiting in its queue (up to
//! [`STORE_BATCH`]), applies them in one write transaction and commits once, so throughput under
//! load is not one fsync per message. A batch is committed durably when any request in it needs
//! durability (a message: nothing is acknowledged before it is on disk); bookkeeping such as
//! delivery states and peer addresses rides along or is committed without fsync and made durable by
//! the next durable commit or the flush at shutdown.
//!
//! Tables (the version is part of each name, so a format change is a new table):
//! - `meta_v1`: `&str -> bytes` — the node's key, display name, next sequence number, the
//!   bootstrap session (`session`: CBOR of the user, its device certificate and the bootstrap's
//!   peer id), so a device stays logged in across restarts until it logs out, and how far this
//!   device has synced its account's mailbox (`mailbox_cursor`: CBOR of the user and the last
//!   mailbox sequence number stored here; written in the transaction that stores the page, and
//!   forgotten with the session), and the account's settings (`settings`: CBOR of
//!   `AccountSettings`, forgotten with the session), and how far this device has the broadcasts
//!   a bootstrap kept (`broadcast_cursor`: CBOR of the bootstrap's peer id and a sequence
//!   number, written with each page).
//! - `messages_v1`: `author/message id -> record` (CBOR): deduplication and lookup. The author is
//!   part of the key, so a peer that replays someone else's id cannot shadow their message.
//! - `history_v1`: `(conversation, seq) -> message key`: each conversation in local order.
//! - `outbox_v1`: `message key -> peer id`: direct messages not yet acknowledged.
//! - `mailbox_outbox_v1`: `message key -> username` or `group:<id>`: messages to users and
//!   groups not yet stored by the bootstrap (written in the transaction that stores the message).
//! - `peers_v1`: `peer id -> record` (CBOR): peers seen, their names and addresses.
//! - `message_ids_v1`: `(conversation, message id) -> message key`: finds the message a receipt
//!   names (receipts carry ids, not authors' devices). Per conversation, so an id replayed in
//!   another conversation cannot attract a receipt.
//! - `groups_v1`: `group id -> roster` (CBOR): the signed membership of each group of the
//!   account logged in (forgotten with the session), so group messages can be checked while the
//!   bootstrap is unreachable.
//! - `message_conversations_v1`: `message id -> conversation`: where an id lives, for `recall`
//!   and `delete` by id (the first conversation that used the id).
//! - `tombstones_v1`: `(conversation, message id) -> tombstone` (CBOR): messages recalled or
//!   deleted, kept for good, so a copy that arrives later (a mailbox page, a retry, a tombstone
//!   that came first) never brings the content back.
//! - `receipt_outbox_v1`: `(author account, receiver, message id) -> local seq`: read receipts
//!   not yet stored by the bootstrap (written in the transaction that marks the messages read).

use std::path::{Path, PathBuf};
use std::thread;

use confab_protocol::MessageId;
use confab_protocol::bootstrap::{AccountSettings, DeviceCert};
use confab_protocol::group::Roster;
use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::client::{DeliveryState, PeerSource};
use crate::config::limits::{MAX_MARK_READ, STORE_BATCH, STORE_QUEUE};
use crate::error::StoreError;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta_v1");
const MESSAGES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("messages_v1");
const HISTORY: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("history_v1");
const OUTBOX: TableDefinition<&[u8], &str> = TableDefinition::new("outbox_v1");
const MAILBOX_OUTBOX: TableDefinition<&[u8], &str> = TableDefinition::new("mailbox_outbox_v1");
const PEERS: TableDefinition<&str, &[u8]> = TableDefinition::new("peers_v1");
const MESSAGE_IDS: TableDefinition<(&str, &[u8]), &[u8]> = TableDefinition::new("message_ids_v1");
const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("groups_v1");
const MESSAGE_CONVERSATIONS: TableDefinition<&[u8], &str> =
    TableDefinition::new("message_conversations_v1");
const TOMBSTONES: TableDefinition<(&str, &[u8]), &[u8]> = TableDefinition::new("tombstones_v1");
const RECEIPT_OUTBOX: TableDefinition<(&str, &str, &[u8]), u64> =
    TableDefinition::new("receipt_outbox_v1");

const KEY_IDENTITY: &str = "identity";
const KEY_NAME: &str = "name";
const KEY_NEXT_SEQ: &str = "next_seq";
const KEY_SESSION: &str = "session";
const KEY_MAILBOX_CURSOR: &str = "mailbox_cursor";
const KEY_SETTINGS: &str = "settings";
const KEY_BROADCAST_CURSOR: &str = "broadcast_cursor";

/// The file name of the store inside the data dir.
pub(crate) const STORE_FILE: &str = "confab.redb";

/// The key of a message: its author's peer id and its id.
pub(crate) fn message_key(author: &str, id: &MessageId) -> Vec<u8> {
    format!("{author}/{id}").into_bytes()
}

/// A message as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredMessage {
    pub id: MessageId,
    /// The conversation address as seen by this node.
    pub conversation: String,
    pub from_peer: String,
    /// The author's account, when its certificate verified (or this node's, when logged in).
    #[serde(default)]
    pub from_user: Option<String>,
    pub from_name: String,
    pub sent_at: u64,
    pub text: Option<String>,
    pub outgoing: bool,
    pub delivery: DeliveryState,
    /// Local order, assigned at insertion.
    #[serde(default)]
    pub seq: u64,
    /// Recalled by its author (or a group admin): the content is gone.
    #[serde(default)]
    pub recalled: bool,
    /// The attached file's description, if any (its bytes live in the blob store).
    #[serde(default)]
    pub attachment: Option<Box<confab_protocol::Attachment>>,
    /// Sent or received end-to-end encrypted. With neither text nor attachment: a message this
    /// device could not decrypt (sent before it joined the conversation).
    #[serde(default)]
    pub encrypted: bool,
    /// The key of an encrypted conversation's attachment (the file's bytes are ciphertext).
    #[serde(default, with = "serde_bytes", skip_serializing_if = "Option::is_none")]
    pub file_key: Option<Vec<u8>>,
}

/// What happened to a message for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Tombstone {
    /// Recalled. `by`: who must have written the message for the recall to apply to it (an
    /// account, or a peer id for a `peer:` conversation); `None` when the bootstrap checked.
    Recalled { by: Option<String> },
    /// Deleted from this account's history.
    Deleted,
}

/// What a tombstone did to the message it names.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Buried {
    /// The message is here and now recalled (or deleted).
    Applied,
    /// The message was recalled already.
    Already,
    /// Not here (yet): the tombstone waits for it.
    Waiting,
    /// The message is here but its author is not who the tombstone says: ignored.
    Refused,
}

/// A peer as remembered across restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct KnownPeer {
    pub peer_id: String,
    pub name: Option<String>,
    pub addrs: Vec<String>,
    pub source: PeerSource,
    /// The account its last verified certificate named.
    #[serde(default)]
    pub user: Option<String>,
}

/// The account this device is logged into, as remembered across restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredSession {
    pub user: String,
    pub cert: DeviceCert,
    /// The peer id (base58) of the bootstrap that issued it.
    pub bootstrap: String,
}

/// How far this device has synced an account's mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MailboxCursor {
    /// The account (a cursor of another account means nothing to this one).
    pub user: String,
    /// The highest mailbox sequence number whose page is stored here.
    pub seq: u64,
}

/// How far this device has a bootstrap's kept broadcasts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BroadcastCursor {
    /// The bootstrap (base58 peer id): another bootstrap's numbers mean nothing.
    pub bootstrap: String,
    /// The highest broadcast sequence number stored here.
    pub seq: u64,
}

/// What opening the store found.
#[derive(Debug)]
pub(crate) struct Opened {
    /// The node's keypair (libp2p protobuf encoding).
    pub identity: Vec<u8>,
    pub name: Option<String>,
    pub peers: Vec<KnownPeer>,
    pub session: Option<StoredSession>,
    pub mailbox_cursor: Option<MailboxCursor>,
    /// The rosters of the logged-in account's groups.
    pub rosters: Vec<Roster>,
    /// The logged-in account's settings, as last heard.
    pub settings: Option<AccountSettings>,
    /// How far this device has a bootstrap's kept broadcasts.
    pub broadcast_cursor: Option<BroadcastCursor>,
}

/// Where a message this node sends waits until it is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outbox {
    /// Until the peer (base58 peer id) acknowledges it.
    Peer(String),
    /// Until the bootstrap stores it in this user's mailbox.
    Mailbox(String),
    /// Until the bootstrap stores it for the members of this group.
    Group(String),
}

/// One entry of a mailbox page, as the store takes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PageItem {
    /// A message.
    Message(StoredMessage),
    /// A receipt: the messages `ids` of `conversation` reached `state`. `mine`: reported by
    /// this account (its other device read them: about incoming messages); otherwise by the
    /// other party (about messages this account sent).
    Receipt {
        conversation: String,
        mine: bool,
        state: DeliveryState,
        ids: Vec<MessageId>,
    },
    /// A recall or a deletion of message `id` of `conversation` (checked by the bootstrap).
    Tombstone {
        conversation: String,
        id: MessageId,
        tombstone: Tombstone,
    },
}

/// What storing one [`PageItem`] did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PageOutcome {
    /// A message, new or already here.
    Message(Inserted, StoredMessage),
    /// The messages a receipt raised, with their new state.
    Raised(Vec<(MessageId, DeliveryState)>),
    /// What a tombstone did.
    Buried {
        conversation: String,
        id: MessageId,
        tombstone: Tombstone,
        outcome: Buried,
    },
}

/// The result of inserting a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inserted {
    New,
    Duplicate,
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Request {
    InsertMessage {
        record: Box<StoredMessage>,
        outbox: Option<Outbox>,
        reply: Reply<Inserted>,
    },
    StoreMailboxPage {
        cursor: MailboxCursor,
        items: Vec<PageItem>,
        reply: Reply<Vec<PageOutcome>>,
    },
    FinishDeposit {
        author: String,
        id: MessageId,
        state: DeliveryState,
        reply: Reply<bool>,
    },
    MarkRead {
        conversation: String,
        receipt: Option<(String, String)>,
        reply: Reply<Vec<MessageId>>,
    },
    FinishReceipt {
        author: String,
        to: String,
        ids: Vec<MessageId>,
        reply: Reply<()>,
    },
    SetDelivery {
        author: String,
        id: MessageId,
        state: DeliveryState,
        reply: Reply<Option<DeliveryState>>,
    },
    PutPeer {
        peer: KnownPeer,
        reply: Reply<()>,
    },
    PutRoster {
        roster: Box<Roster>,
        reply: Reply<()>,
    },
    DropRoster {
        group: String,
        reply: Reply<()>,
    },
    PutSettings {
        settings: AccountSettings,
        reply: Reply<()>,
    },
    StoreBroadcastPage {
        cursor: BroadcastCursor,
        records: Vec<StoredMessage>,
        reply: Reply<Vec<(Inserted, StoredMessage)>>,
    },
    SetName {
        name: String,
        reply: Reply<()>,
    },
    SetSession {
        session: Option<Box<StoredSession>>,
        reply: Reply<()>,
    },
    History {
        conversation: String,
        limit: usize,
        reply: Reply<Vec<StoredMessage>>,
    },
    Outbox {
        reply: Reply<Vec<(String, StoredMessage)>>,
    },
    MailboxOutbox {
        reply: Reply<Vec<(String, StoredMessage)>>,
    },
    ReceiptOutbox {
        reply: Reply<Vec<(String, String, MessageId)>>,
    },
    Bury {
        conversation: String,
        id: MessageId,
        tombstone: Tombstone,
        reply: Reply<Buried>,
    },
    ConversationOf {
        id: MessageId,
        reply: Reply<Option<StoredMessage>>,
    },
    Close {
        reply: Reply<()>,
    },
}

impl Request {
    /// Answers this request with `e` (its batch failed before reaching it, or with it).
    fn fail(self, e: StoreError) {
        match self {
            Request::InsertMessage { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Request::StoreMailboxPage { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Request::FinishDeposit { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Request::MarkRead { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Request::FinishReceipt { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Request::SetDelivery { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Request::PutPeer { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Request::PutRoster { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Request::DropRoster { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Request::PutSettings { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Request::StoreBroadcastPage { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Request::SetName { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Request::SetSession { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Request::History { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Request::Outbox { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Request::MailboxOutbox { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Request::ReceiptOutbox { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Request::Bury { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Request::ConversationOf { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Request::Close { reply, .. } => {
                let _ = reply.send(Err(e));
            }
        }
    }

    fn is_write(&self) -> bool {
        matches!(
            self,
            Request::InsertMessage { .. }
                | Request::StoreMailboxPage { .. }
                | Request::FinishDeposit { .. }
                | Request::MarkRead { .. }
                | Request::FinishReceipt { .. }
                | Request::SetDelivery { .. }
                | Request::PutPeer { .. }
                | Request::PutRoster { .. }
                | Request::DropRoster { .. }
                | Request::PutSettings { .. }
                | Request::StoreBroadcastPage { .. }
                | Request::Bury { .. }
                | Request::SetName { .. }
                | Request::SetSession { .. }
        )
    }

    fn needs_durability(&self) -> bool {
        matches!(
            self,
            Request::InsertMessage { .. }
                | Request::StoreMailboxPage { .. }
                | Request::MarkRead { .. }
                | Request::StoreBroadcastPage { .. }
                | Request::Bury { .. }
                | Request::SetName { .. }
                | Request::SetSession { .. }
        )
    }
}

/// The handle to the store actor. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    requests: mpsc::Sender<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Request::InsertMessage { .. } => "InsertMessage",
            Request::StoreMailboxPage { .. } => "StoreMailboxPage",
            Request::FinishDeposit { .. } => "FinishDeposit",
            Request::MarkRead { .. } => "MarkRead",
            Request::FinishReceipt { .. } => "FinishReceipt",
            Request::ReceiptOutbox { .. } => "ReceiptOutbox",
            Request::SetDelivery { .. } => "SetDelivery",
            Request::PutPeer { .. } => "PutPeer",
            Request::PutRoster { .. } => "PutRoster",
            Request::DropRoster { .. } => "DropRoster",
            Request::PutSettings { .. } => "PutSettings",
            Request::StoreBroadcastPage { .. } => "StoreBroadcastPage",
            Request::Bury { .. } => "Bury",
            Request::ConversationOf { .. } => "ConversationOf",
            Request::SetName { .. } => "SetName",
            Request::SetSession { .. } => "SetSession",
            Request::History { .. } => "History",
            Request::Outbox { .. } => "Outbox",
            Request::MailboxOutbox { .. } => "MailboxOutbox",
            Request::Close { .. } => "Close",
        })
    }
}

impl Store {
    /// Opens (or creates) the store in `data_dir` on its own thread. `fresh_identity` is kept as the
    /// node's key if none is stored yet.
    pub(crate) async fn open(
        data_dir: &Path,
        fresh_identity: Vec<u8>,
    ) -> Result<(Store, Opened), StoreError> {
        let path = data_dir.join(STORE_FILE);
        let (tx, rx) = mpsc::channel(STORE_QUEUE);
        let (opened_tx, opened_rx) = oneshot::channel();
        thread::Builder::new()
            .name("confab-store".into())
            .spawn(move || match open_db(&path, fresh_identity) {
                Ok((db, opened)) => {
                    let _ = opened_tx.send(Ok(opened));
                    Actor { db }.run(rx);
                }
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                }
            })
            .map_err(|e| StoreError::Database(format!("cannot start the store thread: {e}")))?;
        let opened = opened_rx.await.map_err(|_| StoreError::Closed)??;
        Ok((Store { requests: tx }, opened))
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(make(tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Stores a message durably, unless one with its id is already stored. With `outbox`, the
    /// message is also queued (in the same transaction) until the peer or the bootstrap accepts
    /// it.
    pub(crate) async fn insert_message(
        &self,
        record: StoredMessage,
        outbox: Option<Outbox>,
    ) -> Result<Inserted, StoreError> {
        self.call(|reply| Request::InsertMessage {
            record: Box::new(record),
            outbox,
            reply,
        })
        .await
    }

    /// Stores a page of the account's mailbox and moves its cursor, durably and in one
    /// transaction. Each message goes through the usual deduplication, each receipt raises the
    /// messages it names; the answer says what each item did, in the page's order.
    pub(crate) async fn store_mailbox_page(
        &self,
        cursor: MailboxCursor,
        items: Vec<PageItem>,
    ) -> Result<Vec<PageOutcome>, StoreError> {
        self.call(|reply| Request::StoreMailboxPage {
            cursor,
            items,
            reply,
        })
        .await
    }

    /// Marks the unread incoming messages of `conversation` read; returns their ids, oldest
    /// first. With `receipt: Some((author, to))` a read receipt for them is queued durably (in
    /// the same transaction) until the bootstrap stores it.
    pub(crate) async fn mark_read(
        &self,
        conversation: String,
        receipt: Option<(String, String)>,
    ) -> Result<Vec<MessageId>, StoreError> {
        self.call(|reply| Request::MarkRead {
            conversation,
            receipt,
            reply,
        })
        .await
    }

    /// Read receipts leave the receipt outbox (the bootstrap stored them, or refused for good).
    pub(crate) async fn finish_receipt(
        &self,
        author: String,
        to: String,
        ids: Vec<MessageId>,
    ) -> Result<(), StoreError> {
        self.call(|reply| Request::FinishReceipt {
            author,
            to,
            ids,
            reply,
        })
        .await
    }

    /// Every read receipt not yet stored by the bootstrap: `(author, to, id)`, oldest first.
    pub(crate) async fn receipt_outbox(
        &self,
    ) -> Result<Vec<(String, String, MessageId)>, StoreError> {
        self.call(|reply| Request::ReceiptOutbox { reply }).await
    }

    /// A message to a user leaves the mailbox outbox: the bootstrap stored it (`Sent`) or
    /// refused it for good (`Failed`). The delivery state never moves backwards; the answer says
    /// whether it moved.
    pub(crate) async fn finish_deposit(
        &self,
        author: String,
        id: MessageId,
        state: DeliveryState,
    ) -> Result<bool, StoreError> {
        self.call(|reply| Request::FinishDeposit {
            author,
            id,
            state,
            reply,
        })
        .await
    }

    /// Records a delivery state (never moving backwards) and leaves the outbox once sent.
    /// Returns the state it had when it moved (`None`: it did not move).
    pub(crate) async fn set_delivery(
        &self,
        author: String,
        id: MessageId,
        state: DeliveryState,
    ) -> Result<Option<DeliveryState>, StoreError> {
        self.call(|reply| Request::SetDelivery {
            author,
            id,
            state,
            reply,
        })
        .await
    }

    /// Remembers a peer.
    pub(crate) async fn put_peer(&self, peer: KnownPeer) -> Result<(), StoreError> {
        self.call(|reply| Request::PutPeer { peer, reply }).await
    }

    /// Remembers a group's roster (replacing an older one).
    pub(crate) async fn put_roster(&self, roster: Roster) -> Result<(), StoreError> {
        self.call(|reply| Request::PutRoster {
            roster: Box::new(roster),
            reply,
        })
        .await
    }

    /// Forgets a group (this account left it or was removed).
    pub(crate) async fn drop_roster(&self, group: String) -> Result<(), StoreError> {
        self.call(|reply| Request::DropRoster { group, reply })
            .await
    }

    /// Recalls or deletes message `id` of `conversation` for good (a tombstone that outlives
    /// the message, and applies to it if it arrives later).
    pub(crate) async fn bury(
        &self,
        conversation: String,
        id: MessageId,
        tombstone: Tombstone,
    ) -> Result<Buried, StoreError> {
        self.call(|reply| Request::Bury {
            conversation,
            id,
            tombstone,
            reply,
        })
        .await
    }

    /// The message with this id (in the first conversation that used the id), if it is here.
    pub(crate) async fn find(&self, id: MessageId) -> Result<Option<StoredMessage>, StoreError> {
        self.call(|reply| Request::ConversationOf { id, reply })
            .await
    }

    /// Stores a page of a bootstrap's kept broadcasts (deduplicated like every message) and
    /// moves the broadcast cursor, in one transaction; says which were new.
    pub(crate) async fn store_broadcast_page(
        &self,
        cursor: BroadcastCursor,
        records: Vec<StoredMessage>,
    ) -> Result<Vec<(Inserted, StoredMessage)>, StoreError> {
        self.call(|reply| Request::StoreBroadcastPage {
            cursor,
            records,
            reply,
        })
        .await
    }

    /// Remembers the account's settings.
    pub(crate) async fn put_settings(&self, settings: AccountSettings) -> Result<(), StoreError> {
        self.call(|reply| Request::PutSettings { settings, reply })
            .await
    }

    /// Remembers the display name.
    pub(crate) async fn set_name(&self, name: String) -> Result<(), StoreError> {
        self.call(|reply| Request::SetName { name, reply }).await
    }

    /// Remembers (durably) the account this device is logged into, or forgets it with `None`
    /// (and with it the mailbox cursor and the groups: the next login syncs the whole mailbox
    /// again).
    pub(crate) async fn set_session(
        &self,
        session: Option<StoredSession>,
    ) -> Result<(), StoreError> {
        self.call(|reply| Request::SetSession {
            session: session.map(Box::new),
            reply,
        })
        .await
    }

    /// The last `limit` messages of a conversation, oldest first.
    pub(crate) async fn history(
        &self,
        conversation: String,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.call(|reply| Request::History {
            conversation,
            limit,
            reply,
        })
        .await
    }

    /// Every direct message not yet acknowledged, with its peer, oldest first.
    pub(crate) async fn outbox(&self) -> Result<Vec<(String, StoredMessage)>, StoreError> {
        self.call(|reply| Request::Outbox { reply }).await
    }

    /// Every message to a user not yet stored by the bootstrap, with its receiver, oldest first.
    pub(crate) async fn mailbox_outbox(&self) -> Result<Vec<(String, StoredMessage)>, StoreError> {
        self.call(|reply| Request::MailboxOutbox { reply }).await
    }

    /// Makes everything durable and stops the actor.
    pub(crate) async fn close(&self) -> Result<(), StoreError> {
        self.call(|reply| Request::Close { reply }).await
    }
}

fn open_db(path: &PathBuf, fresh_identity: Vec<u8>) -> Result<(Database, Opened), StoreError> {
    let db = Database::create(path).map_err(|e| match e {
        DatabaseError::DatabaseAlreadyOpen => StoreError::Locked(path.clone()),
        other => StoreError::Database(format!("{}: {other}", path.display())),
    })?;
    let txn = db.begin_write()?;
    let opened = {
        let mut meta = txn.open_table(META)?;
        txn.open_table(MESSAGES)?;
        txn.open_table(HISTORY)?;
        txn.open_table(OUTBOX)?;
        txn.open_table(MAILBOX_OUTBOX)?;
        txn.open_table(MESSAGE_IDS)?;
        txn.open_table(RECEIPT_OUTBOX)?;
        txn.open_table(MESSAGE_CONVERSATIONS)?;
        txn.open_table(TOMBSTONES)?;
        let groups_table = txn.open_table(GROUPS)?;
        let mut rosters = Vec::new();
        for entry in groups_table.iter()? {
            let (_, v) = entry?;
            match cbor4ii::serde::from_slice::<Roster>(v.value()) {
                Ok(r) => rosters.push(r),
                // Harmless: fetched again from the bootstrap at the next session.
                Err(e) => tracing::warn!("skipping an unreadable group roster: {e:?}"),
            }
        }
        let peers_table = txn.open_table(PEERS)?;
        let stored = meta.get(KEY_IDENTITY)?.map(|v| v.value().to_vec());
        let identity = match stored {
            Some(v) => v,
            None => {
                meta.insert(KEY_IDENTITY, fresh_identity.as_slice())?;
                fresh_identity
            }
        };
        let name = meta
            .get(KEY_NAME)?
            .map(|v| String::from_utf8_lossy(v.value()).into_owned());
        let session = match meta.get(KEY_SESSION)? {
            Some(v) => match cbor4ii::serde::from_slice::<StoredSession>(v.value()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!("forgetting an unreadable session record: {e:?}");
                    None
                }
            },
            None => None,
        };
        let mailbox_cursor = match meta.get(KEY_MAILBOX_CURSOR)? {
            Some(v) => match cbor4ii::serde::from_slice::<MailboxCursor>(v.value()) {
                Ok(c) => Some(c),
                Err(e) => {
                    // Harmless: the mailbox is synced again from the start, deduplicated.
                    tracing::warn!("forgetting an unreadable mailbox cursor: {e:?}");
                    None
                }
            },
            None => None,
        };
        let broadcast_cursor = match meta.get(KEY_BROADCAST_CURSOR)? {
            Some(v) => cbor4ii::serde::from_slice::<BroadcastCursor>(v.value()).ok(),
            None => None,
        };
        let settings = match meta.get(KEY_SETTINGS)? {
            Some(v) => cbor4ii::serde::from_slice::<AccountSettings>(v.value()).ok(),
            None => None,
        };
        let mut peers = Vec::new();
        for entry in peers_table.iter()? {
            let (_, v) = entry?;
            match cbor4ii::serde::from_slice::<KnownPeer>(v.value()) {
                Ok(p) => peers.push(p),
                Err(e) => tracing::warn!("skipping unreadable peer record: {e:?}"),
            }
        }
        Opened {
            identity,
            name,
            peers,
            session,
            mailbox_cursor,
            rosters,
            settings,
            broadcast_cursor,
        }
    };
    txn.commit()?;
    Ok((db, opened))
}

fn to_cbor<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    cbor4ii::serde::to_vec(Vec::new(), value).map_err(|e| StoreError::Database(format!("{e:?}")))
}

fn from_cbor<T: for<'a> Deserialize<'a>>(bytes: &[u8]) -> Result<T, StoreError> {
    cbor4ii::serde::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{e:?}")))
}

struct Actor {
    db: Database,
}

/// The answer to one write inside a batch, given once the batch's commit returned: its value, or
/// the commit's error.
type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// The answer `value` for `reply`, to be given after the commit.
fn done<T: Send + 'static>(reply: Reply<T>, value: T) -> Done {
    Box::new(move |committed| {
        let _ = reply.send(committed.map(|()| value));
    })
}

/// Runs one write of a batch: its answer waits for the commit; an error fails it at once (and
/// with it the batch).
fn apply<T: Send + 'static>(
    done_list: &mut Vec<Done>,
    reply: Reply<T>,
    result: Result<T, StoreError>,
) -> Result<(), StoreError> {
    match result {
        Ok(value) => {
            done_list.push(done(reply, value));
            Ok(())
        }
        Err(e) => {
            let _ = reply.send(Err(e.clone()));
            Err(e)
        }
    }
}

impl Actor {
    fn run(self, mut rx: mpsc::Receiver<Request>) {
        let mut close_reply = None;
        'serve: while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < STORE_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let (writes, others): (Vec<_>, Vec<_>) = batch.into_iter().partition(Request::is_write);
            if !writes.is_empty() {
                self.commit_batch(writes);
            }
            for request in others {
                if let Request::Close { reply } = request {
                    close_reply = Some(reply);
                    break 'serve;
                }
                self.answer(request);
            }
        }
        let flushed = self.flush();
        if let Err(e) = &flushed {
            tracing::error!("final store flush failed: {e}");
        }
        // Close the database before saying so: the caller may reopen it at once.
        drop(self);
        if let Some(reply) = close_reply {
            let _ = reply.send(flushed);
        }
    }

    fn commit_batch(&self, writes: Vec<Request>) {
        let durable = writes.iter().any(Request::needs_durability);
        let mut done = Vec::with_capacity(writes.len());
        let mut writes = writes.into_iter();
        let result = (|| -> Result<(), StoreError> {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(if durable {
                Durability::Immediate
            } else {
                Durability::None
            })?;
            for request in writes.by_ref() {
                match request {
                    Request::InsertMessage {
                        record,
                        outbox,
                        reply,
                    } => apply(&mut done, reply, insert_message(&txn, *record, outbox))?,
                    Request::StoreMailboxPage {
                        cursor,
                        items,
                        reply,
                    } => apply(&mut done, reply, store_mailbox_page(&txn, &cursor, items))?,
                    Request::FinishDeposit {
                        author,
                        id,
                        state,
                        reply,
                    } => {
                        let key = message_key(&author, &id);
                        let raised = raise_delivery(&txn, &key, state);
                        let removed = raised.and_then(|raised| {
                            txn.open_table(MAILBOX_OUTBOX)?.remove(key.as_slice())?;
                            Ok(raised)
                        });
                        apply(&mut done, reply, removed)?
                    }
                    Request::MarkRead {
                        conversation,
                        receipt,
                        reply,
                    } => apply(&mut done, reply, mark_read(&txn, &conversation, receipt))?,
                    Request::FinishReceipt {
                        author,
                        to,
                        ids,
                        reply,
                    } => {
                        let removed = (|| {
                            let mut table = txn.open_table(RECEIPT_OUTBOX)?;
                            for id in &ids {
                                table.remove((
                                    author.as_str(),
                                    to.as_str(),
                                    id.as_bytes().as_slice(),
                                ))?;
                            }
                            Ok(())
                        })();
                        apply(&mut done, reply, removed)?
                    }
                    Request::SetDelivery {
                        author,
                        id,
                        state,
                        reply,
                    } => apply(
                        &mut done,
                        reply,
                        set_delivery(&txn, &message_key(&author, &id), state),
                    )?,
                    Request::PutPeer { peer, reply } => {
                        let put = (|| {
                            txn.open_table(PEERS)?
                                .insert(peer.peer_id.as_str(), to_cbor(&peer)?.as_slice())?;
                            Ok(())
                        })();
                        apply(&mut done, reply, put)?
                    }
                    Request::PutRoster { roster, reply } => {
                        let put = (|| {
                            txn.open_table(GROUPS)?
                                .insert(roster.group.as_str(), to_cbor(&roster)?.as_slice())?;
                            Ok(())
                        })();
                        apply(&mut done, reply, put)?
                    }
                    Request::DropRoster { group, reply } => {
                        let dropped = (|| {
                            txn.open_table(GROUPS)?.remove(group.as_str())?;
                            Ok(())
                        })();
                        apply(&mut done, reply, dropped)?
                    }
                    Request::Bury {
                        conversation,
                        id,
                        tombstone,
                        reply,
                    } => apply(&mut done, reply, bury(&txn, &conversation, &id, tombstone))?,
                    Request::StoreBroadcastPage {
                        cursor,
                        records,
                        reply,
                    } => {
                        let stored = (|| {
                            let mut out = Vec::with_capacity(records.len());
                            for record in records {
                                out.push((insert_message(&txn, record.clone(), None)?, record));
                            }
                            txn.open_table(META)?
                                .insert(KEY_BROADCAST_CURSOR, to_cbor(&cursor)?.as_slice())?;
                            Ok(out)
                        })();
                        apply(&mut done, reply, stored)?
                    }
                    Request::PutSettings { settings, reply } => {
                        let put = (|| {
                            txn.open_table(META)?
                                .insert(KEY_SETTINGS, to_cbor(&settings)?.as_slice())?;
                            Ok(())
                        })();
                        apply(&mut done, reply, put)?
                    }
                    Request::SetName { name, reply } => {
                        let set = (|| {
                            txn.open_table(META)?.insert(KEY_NAME, name.as_bytes())?;
                            Ok(())
                        })();
                        apply(&mut done, reply, set)?
                    }
                    Request::SetSession { session, reply } => {
                        let set = (|| {
                            let mut meta = txn.open_table(META)?;
                            match session {
                                Some(session) => {
                                    // Another account: the previous one's settings and groups
                                    // go with it.
                                    let previous = match meta.get(KEY_SESSION)? {
                                        Some(v) => from_cbor::<StoredSession>(v.value()).ok(),
                                        None => None,
                                    };
                                    if previous.is_some_and(|p| p.user != session.user) {
                                        meta.remove(KEY_SETTINGS)?;
                                        txn.open_table(GROUPS)?.retain(|_, _| false)?;
                                    }
                                    meta.insert(KEY_SESSION, to_cbor(&session)?.as_slice())?;
                                }
                                None => {
                                    meta.remove(KEY_SESSION)?;
                                    meta.remove(KEY_MAILBOX_CURSOR)?;
                                    meta.remove(KEY_SETTINGS)?;
                                    txn.open_table(GROUPS)?.retain(|_, _| false)?;
                                }
                            }
                            Ok(())
                        })();
                        apply(&mut done, reply, set)?
                    }
                    // `run` partitions the batch: only writes reach this point.
                    Request::History { .. }
                    | Request::Outbox { .. }
                    | Request::MailboxOutbox { .. }
                    | Request::ReceiptOutbox { .. }
                    | Request::ConversationOf { .. }
                    | Request::Close { .. } => {}
                }
            }
            txn.commit()?;
            Ok(())
        })();
        if let Err(e) = &result {
            tracing::error!("store commit failed: {e}");
            // The requests the batch did not reach are answered too (nothing was committed).
            for request in writes {
                request.fail(e.clone());
            }
        }
        for d in done {
            d(result.clone());
        }
    }

    fn answer(&self, request: Request) {
        match request {
            Request::History {
                conversation,
                limit,
                reply,
            } => {
                let _ = reply.send(self.history(&conversation, limit));
            }
            Request::Outbox { reply } => {
                let _ = reply.send(self.outbox(OUTBOX));
            }
            Request::MailboxOutbox { reply } => {
                let _ = reply.send(self.outbox(MAILBOX_OUTBOX));
            }
            Request::ReceiptOutbox { reply } => {
                let _ = reply.send(self.receipt_outbox());
            }
            Request::ConversationOf { id, reply } => {
                let _ = reply.send(self.conversation_of(&id));
            }
            other => tracing::error!("store request {other:?} routed as a read"),
        }
    }

    fn history(&self, conversation: &str, limit: usize) -> Result<Vec<StoredMessage>, StoreError> {
        let txn = self.db.begin_read()?;
        let history = txn.open_table(HISTORY)?;
        let messages = txn.open_table(MESSAGES)?;
        let mut out = Vec::new();
        for entry in history
            .range((conversation, 0)..=(conversation, u64::MAX))?
            .rev()
            .take(limit)
        {
            let (_, id) = entry?;
            if let Some(record) = messages.get(id.value())? {
                out.push(from_cbor::<StoredMessage>(record.value())?);
            }
        }
        out.reverse();
        Ok(out)
    }

    /// The messages in an outbox table with where each goes (a peer id or a username), oldest
    /// first.
    fn outbox(
        &self,
        table: TableDefinition<&[u8], &str>,
    ) -> Result<Vec<(String, StoredMessage)>, StoreError> {
        let txn = self.db.begin_read()?;
        let outbox = txn.open_table(table)?;
        let messages = txn.open_table(MESSAGES)?;
        let mut out = Vec::new();
        for entry in outbox.iter()? {
            let (id, peer) = entry?;
            if let Some(record) = messages.get(id.value())? {
                out.push((peer.value().to_owned(), from_cbor(record.value())?));
            }
        }
        out.sort_by_key(|(_, m): &(String, StoredMessage)| m.seq);
        Ok(out)
    }

    fn conversation_of(&self, id: &MessageId) -> Result<Option<StoredMessage>, StoreError> {
        let txn = self.db.begin_read()?;
        let Some(conversation) = txn
            .open_table(MESSAGE_CONVERSATIONS)?
            .get(id.as_bytes().as_slice())?
            .map(|v| v.value().to_owned())
        else {
            return Ok(None);
        };
        let Some(key) = txn
            .open_table(MESSAGE_IDS)?
            .get((conversation.as_str(), id.as_bytes().as_slice()))?
            .map(|v| v.value().to_vec())
        else {
            return Ok(None);
        };
        match txn.open_table(MESSAGES)?.get(key.as_slice())? {
            Some(v) => Ok(Some(from_cbor(v.value())?)),
            None => Ok(None),
        }
    }

    fn receipt_outbox(&self) -> Result<Vec<(String, String, MessageId)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RECEIPT_OUTBOX)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (key, seq) = entry?;
            let (author, to, id) = key.value();
            let Ok(id) = <[u8; 16]>::try_from(id) else {
                tracing::warn!("skipping a receipt outbox entry with a bad id");
                continue;
            };
            out.push((
                seq.value(),
                author.to_owned(),
                to.to_owned(),
                MessageId::from_bytes(id),
            ));
        }
        out.sort_by_key(|e| e.0);
        Ok(out.into_iter().map(|(_, a, t, id)| (a, t, id)).collect())
    }

    /// A durable commit, which also makes every earlier non-durable commit durable.
    fn flush(&self) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.open_table(META)?;
        txn.commit()?;
        Ok(())
    }
}

fn insert_message(
    txn: &WriteTransaction,
    mut record: StoredMessage,
    outbox: Option<Outbox>,
) -> Result<Inserted, StoreError> {
    let mut messages = txn.open_table(MESSAGES)?;
    let key = message_key(&record.from_peer, &record.id);
    if messages.get(key.as_slice())?.is_some() {
        return Ok(Inserted::Duplicate);
    }
    let conversation = record.conversation.clone();
    let by_id = (conversation.as_str(), record.id.as_bytes().as_slice());
    let tombstone = match txn.open_table(TOMBSTONES)?.get(by_id)? {
        Some(v) => Some(from_cbor::<Tombstone>(v.value())?),
        None => None,
    };
    match tombstone {
        // Deleted here for good: a later copy does not bring it back.
        Some(Tombstone::Deleted) => return Ok(Inserted::Duplicate),
        // Recalled before it arrived: kept as recalled, without its content, and not shown as
        // news (its callers would show what arrived).
        Some(Tombstone::Recalled { by }) if by_matches(by.as_deref(), &record) => {
            record.text = None;
            record.attachment = None;
            record.recalled = true;
        }
        _ => {}
    }
    let buried = record.recalled;
    let mut meta = txn.open_table(META)?;
    let seq = match meta.get(KEY_NEXT_SEQ)? {
        Some(v) => {
            let bytes: [u8; 8] = v
                .value()
                .try_into()
                .map_err(|_| StoreError::Corrupt("next_seq is not 8 bytes".into()))?;
            u64::from_be_bytes(bytes)
        }
        None => 1,
    };
    meta.insert(KEY_NEXT_SEQ, (seq + 1).to_be_bytes().as_slice())?;
    record.seq = seq;
    messages.insert(key.as_slice(), to_cbor(&record)?.as_slice())?;
    txn.open_table(HISTORY)?
        .insert((record.conversation.as_str(), seq), key.as_slice())?;
    let mut ids = txn.open_table(MESSAGE_IDS)?;
    if ids.get(by_id)?.is_none() {
        ids.insert(by_id, key.as_slice())?;
    }
    let mut conversations = txn.open_table(MESSAGE_CONVERSATIONS)?;
    if conversations
        .get(record.id.as_bytes().as_slice())?
        .is_none()
    {
        conversations.insert(
            record.id.as_bytes().as_slice(),
            record.conversation.as_str(),
        )?;
    }
    if buried {
        return Ok(Inserted::Duplicate);
    }
    match outbox {
        Some(Outbox::Peer(peer)) => {
            txn.open_table(OUTBOX)?
                .insert(key.as_slice(), peer.as_str())?;
        }
        Some(Outbox::Mailbox(user)) => {
            txn.open_table(MAILBOX_OUTBOX)?
                .insert(key.as_slice(), user.as_str())?;
        }
        // A username never contains ':', so the two kinds cannot be confused when loaded.
        Some(Outbox::Group(group)) => {
            txn.open_table(MAILBOX_OUTBOX)?
                .insert(key.as_slice(), format!("group:{group}").as_str())?;
        }
        None => {}
    }
    Ok(Inserted::New)
}

/// Inserts a mailbox page's records and moves the cursor. The cursor never moves backwards for
/// the same user (a page stored late must not undo a later one).
fn store_mailbox_page(
    txn: &WriteTransaction,
    cursor: &MailboxCursor,
    items: Vec<PageItem>,
) -> Result<Vec<PageOutcome>, StoreError> {
    let mut stored = Vec::with_capacity(items.len());
    for item in items {
        stored.push(match item {
            PageItem::Message(record) => {
                let outcome = insert_message(txn, record.clone(), None)?;
                PageOutcome::Message(outcome, record)
            }
            PageItem::Receipt {
                conversation,
                mine,
                state,
                ids,
            } => PageOutcome::Raised(apply_receipt(txn, &conversation, mine, state, &ids)?),
            PageItem::Tombstone {
                conversation,
                id,
                tombstone,
            } => {
                let outcome = bury(txn, &conversation, &id, tombstone.clone())?;
                PageOutcome::Buried {
                    conversation,
                    id,
                    tombstone,
                    outcome,
                }
            }
        });
    }
    let mut meta = txn.open_table(META)?;
    let current = match meta.get(KEY_MAILBOX_CURSOR)? {
        Some(v) => from_cbor::<MailboxCursor>(v.value()).ok(),
        None => None,
    };
    let behind = current.is_none_or(|c| c.user != cursor.user || c.seq < cursor.seq);
    if behind {
        meta.insert(KEY_MAILBOX_CURSOR, to_cbor(cursor)?.as_slice())?;
    }
    Ok(stored)
}

/// Whether a recall by `by` (an account or a peer id; `None`: checked by the bootstrap) applies
/// to `record`.
fn by_matches(by: Option<&str>, record: &StoredMessage) -> bool {
    match by {
        None => true,
        Some(by) => record.from_user.as_deref() == Some(by) || record.from_peer == by,
    }
}

/// Applies a tombstone to message `id` of `conversation` (if it is here) and keeps it for copies
/// that arrive later.
fn bury(
    txn: &WriteTransaction,
    conversation: &str,
    id: &MessageId,
    tombstone: Tombstone,
) -> Result<Buried, StoreError> {
    let by_id = (conversation, id.as_bytes().as_slice());
    let key = txn
        .open_table(MESSAGE_IDS)?
        .get(by_id)?
        .map(|v| v.value().to_vec());
    let mut messages = txn.open_table(MESSAGES)?;
    let record = match &key {
        Some(key) => match messages.get(key.as_slice())? {
            Some(v) => Some(from_cbor::<StoredMessage>(v.value())?),
            None => None,
        },
        None => None,
    };
    let outcome = match (&record, &tombstone) {
        (None, _) => Buried::Waiting,
        (Some(r), Tombstone::Recalled { by }) if !by_matches(by.as_deref(), r) => {
            return Ok(Buried::Refused);
        }
        (Some(r), Tombstone::Recalled { .. }) if r.recalled => Buried::Already,
        (Some(_), _) => Buried::Applied,
    };
    if let (Some(key), Some(record)) = (key, record) {
        match tombstone {
            Tombstone::Recalled { .. } => {
                let recalled = StoredMessage {
                    text: None,
                    recalled: true,
                    attachment: None,
                    file_key: None,
                    ..record
                };
                messages.insert(key.as_slice(), to_cbor(&recalled)?.as_slice())?;
            }
            Tombstone::Deleted => {
                messages.remove(key.as_slice())?;
                txn.open_table(HISTORY)?
                    .remove((record.conversation.as_str(), record.seq))?;
                txn.open_table(OUTBOX)?.remove(key.as_slice())?;
                txn.open_table(MAILBOX_OUTBOX)?.remove(key.as_slice())?;
            }
        }
    }
    // A tombstone for a message not here is kept only when its author is known (from the
    // bootstrap, which checked it; or a deletion of this account's own): a peer's recall of
    // something this device never had is not kept, so peers cannot fill the store.
    let from_peer = matches!(&tombstone, Tombstone::Recalled { by: Some(_) })
        && (conversation.starts_with("peer:") || conversation == "broadcast");
    if outcome == Buried::Waiting && from_peer {
        return Ok(outcome);
    }
    // A deletion outranks a recall; a recall never replaces a deletion, nor another recall
    // (the first one names the author; a later claim cannot change whose message it is).
    let mut tombstones = txn.open_table(TOMBSTONES)?;
    let keep = tombstones.get(by_id)?.is_none() || tombstone == Tombstone::Deleted;
    if keep {
        tombstones.insert(by_id, to_cbor(&tombstone)?.as_slice())?;
    }
    Ok(outcome)
}

/// Raises the messages of `conversation` named by a receipt; returns those that moved. `mine`:
/// the receipt is this account's own (about incoming messages), else the other party's (about
/// outgoing ones); a receipt never touches messages of the other direction.
fn apply_receipt(
    txn: &WriteTransaction,
    conversation: &str,
    mine: bool,
    state: DeliveryState,
    ids: &[MessageId],
) -> Result<Vec<(MessageId, DeliveryState)>, StoreError> {
    let index = txn.open_table(MESSAGE_IDS)?;
    let mut raised = Vec::new();
    for id in ids {
        let Some(key) = index.get((conversation, id.as_bytes().as_slice()))? else {
            continue;
        };
        let key = key.value().to_vec();
        let outgoing = {
            let messages = txn.open_table(MESSAGES)?;
            match messages.get(key.as_slice())? {
                Some(v) => from_cbor::<StoredMessage>(v.value())?.outgoing,
                None => continue,
            }
        };
        if outgoing == mine {
            continue;
        }
        if raise_delivery(txn, &key, state)? {
            raised.push((*id, state));
        }
    }
    Ok(raised)
}

/// Marks the unread incoming messages of `conversation` read, newest first until one that is
/// read already (everything before it was read with it) or [`MAX_MARK_READ`] were looked at;
/// returns their ids oldest first. With `receipt: Some((author, to))` each is queued in the
/// receipt outbox.
fn mark_read(
    txn: &WriteTransaction,
    conversation: &str,
    receipt: Option<(String, String)>,
) -> Result<Vec<MessageId>, StoreError> {
    let mut unread = Vec::new();
    {
        let history = txn.open_table(HISTORY)?;
        let messages = txn.open_table(MESSAGES)?;
        for entry in history
            .range((conversation, 0)..=(conversation, u64::MAX))?
            .rev()
            .take(MAX_MARK_READ)
        {
            let (_, key) = entry?;
            let key = key.value().to_vec();
            let Some(value) = messages.get(key.as_slice())? else {
                continue;
            };
            let record: StoredMessage = from_cbor(value.value())?;
            if record.outgoing {
                continue;
            }
            if record.delivery >= DeliveryState::Read {
                break;
            }
            unread.push((key, record.id, record.seq));
        }
    }
    unread.reverse();
    for (key, _, _) in &unread {
        raise_delivery(txn, key, DeliveryState::Read)?;
    }
    if let Some((author, to)) = receipt {
        let mut outbox = txn.open_table(RECEIPT_OUTBOX)?;
        for (_, id, seq) in &unread {
            outbox.insert(
                (author.as_str(), to.as_str(), id.as_bytes().as_slice()),
                *seq,
            )?;
        }
    }
    Ok(unread.into_iter().map(|(_, id, _)| id).collect())
}

/// Raises a message's delivery state (never moving it backwards); says whether it moved.
fn raise_delivery(
    txn: &WriteTransaction,
    key: &[u8],
    state: DeliveryState,
) -> Result<bool, StoreError> {
    let mut messages = txn.open_table(MESSAGES)?;
    let record = match messages.get(key)? {
        Some(v) => from_cbor::<StoredMessage>(v.value())?,
        None => return Ok(false),
    };
    // `Failed` is final, and it is no failure once a device of the receiver has the message.
    let reached = record.delivery >= DeliveryState::Delivered;
    if state > record.delivery && !(state == DeliveryState::Failed && reached) {
        let updated = StoredMessage {
            delivery: state,
            ..record
        };
        messages.insert(key, to_cbor(&updated)?.as_slice())?;
        return Ok(true);
    }
    Ok(false)
}

fn set_delivery(
    txn: &WriteTransaction,
    key: &[u8],
    state: DeliveryState,
) -> Result<Option<DeliveryState>, StoreError> {
    let before = match txn.open_table(MESSAGES)?.get(key)? {
        Some(v) => from_cbor::<StoredMessage>(v.value())?.delivery,
        None => return Ok(None),
    };
    let moved = raise_delivery(txn, key, state)?;
    if state >= DeliveryState::Sent {
        txn.open_table(OUTBOX)?.remove(key)?;
    }
    Ok(moved.then_some(before))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(conversation: &str, text: &str) -> StoredMessage {
        StoredMessage {
            id: MessageId::random(),
            conversation: conversation.into(),
            from_peer: "p".into(),
            from_user: None,
            from_name: "n".into(),
            sent_at: 1,
            text: Some(text.into()),
            outgoing: false,
            delivery: DeliveryState::Delivered,
            seq: 0,
            recalled: false,
            attachment: None,
            encrypted: false,
            file_key: None,
        }
    }

    #[tokio::test]
    async fn messages_are_deduplicated_ordered_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (store, opened) = Store::open(dir.path(), vec![1, 2, 3]).await.unwrap();
        assert_eq!(opened.identity, vec![1, 2, 3]);
        let first = record("peer:a", "one");
        assert_eq!(
            store.insert_message(first.clone(), None).await.unwrap(),
            Inserted::New
        );
        assert_eq!(
            store.insert_message(first.clone(), None).await.unwrap(),
            Inserted::Duplicate
        );
        // Another author's message with the same id does not shadow it.
        let mut other = first.clone();
        other.from_peer = "q".into();
        other.conversation = "peer:q".into();
        assert_eq!(
            store.insert_message(other, None).await.unwrap(),
            Inserted::New
        );
        // Many concurrent inserts land in few commits and keep their order per conversation.
        let mut tasks = Vec::new();
        for i in 0..200 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .insert_message(record("peer:b", &i.to_string()), None)
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), Inserted::New);
        }
        let mut out = record("peer:a", "two");
        out.outgoing = true;
        out.delivery = DeliveryState::Pending;
        store
            .insert_message(out.clone(), Some(Outbox::Peer("a".into())))
            .await
            .unwrap();
        assert_eq!(store.outbox().await.unwrap().len(), 1);
        store
            .set_delivery("p".into(), out.id, DeliveryState::Sent)
            .await
            .unwrap();
        assert!(store.outbox().await.unwrap().is_empty());
        store.close().await.unwrap();
        drop(store);

        let (store, opened) = Store::open(dir.path(), vec![9]).await.unwrap();
        assert_eq!(opened.identity, vec![1, 2, 3], "the first key is kept");
        let a = store.history("peer:a".into(), 100).await.unwrap();
        assert_eq!(
            a.iter()
                .map(|m| m.text.as_deref().unwrap())
                .collect::<Vec<_>>(),
            ["one", "two"]
        );
        assert_eq!(a[1].delivery, DeliveryState::Sent);
        let b = store.history("peer:b".into(), 1000).await.unwrap();
        assert_eq!(b.len(), 200);
        assert!(b.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(store.history("peer:b".into(), 5).await.unwrap().len(), 5);
    }

    #[tokio::test]
    async fn the_session_survives_a_reopen_until_it_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let (store, opened) = Store::open(dir.path(), vec![1]).await.unwrap();
        assert_eq!(opened.session, None);
        let session = StoredSession {
            user: "alice".into(),
            cert: DeviceCert {
                user: "alice".into(),
                device: vec![0, 1, 2],
                issued_at: 42,
                issuer: vec![3, 4],
                signature: vec![5; 64],
            },
            bootstrap: "12D3KooWboot".into(),
        };
        store.set_session(Some(session.clone())).await.unwrap();
        store.close().await.unwrap();
        drop(store);

        let (store, opened) = Store::open(dir.path(), vec![1]).await.unwrap();
        assert_eq!(opened.session, Some(session));
        store.set_session(None).await.unwrap();
        store.close().await.unwrap();
        drop(store);

        let (_store, opened) = Store::open(dir.path(), vec![1]).await.unwrap();
        assert_eq!(opened.session, None, "logged out for good");
    }

    #[tokio::test]
    async fn the_mailbox_outbox_survives_a_reopen_until_the_deposit_is_settled() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), vec![1]).await.unwrap();
        let mut records = Vec::new();
        for text in ["one", "two", "three"] {
            let mut out = record("user:bob", text);
            out.from_peer = "me".into();
            out.from_user = Some("alice".into());
            out.outgoing = true;
            out.delivery = DeliveryState::Pending;
            let to = Outbox::Mailbox("bob".into());
            store.insert_message(out.clone(), Some(to)).await.unwrap();
            records.push(out);
        }
        // A direct message's outbox is another table.
        assert!(store.outbox().await.unwrap().is_empty());
        store.close().await.unwrap();
        drop(store);

        let (store, _) = Store::open(dir.path(), vec![1]).await.unwrap();
        let waiting = store.mailbox_outbox().await.unwrap();
        assert_eq!(
            waiting
                .iter()
                .map(|(to, m)| (to.as_str(), m.text.as_deref().unwrap()))
                .collect::<Vec<_>>(),
            [("bob", "one"), ("bob", "two"), ("bob", "three")],
            "in the order sent"
        );
        assert_eq!(waiting[0].1.from_user.as_deref(), Some("alice"));
        store
            .finish_deposit("me".into(), records[0].id, DeliveryState::Sent)
            .await
            .unwrap();
        store
            .finish_deposit("me".into(), records[1].id, DeliveryState::Failed)
            .await
            .unwrap();
        // A late `Sent` never replaces `Failed`.
        store
            .finish_deposit("me".into(), records[1].id, DeliveryState::Sent)
            .await
            .unwrap();
        let waiting = store.mailbox_outbox().await.unwrap();
        assert_eq!(waiting.len(), 1);
        assert_eq!(waiting[0].1.id, records[2].id);
        let history = store.history("user:bob".into(), 10).await.unwrap();
        assert_eq!(
            history.iter().map(|m| m.delivery).collect::<Vec<_>>(),
            [
                DeliveryState::Sent,
                DeliveryState::Failed,
                DeliveryState::Pending
            ]
        );
    }

    #[tokio::test]
    async fn tombstones_apply_before_or_after_their_message_and_only_for_its_author() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), vec![1]).await.unwrap();
        let by = |who: &str| Tombstone::Recalled {
            by: Some(who.into()),
        };
        // Recalled after it arrived: the text goes, the entry stays.
        let mut early = record("peer:p", "early");
        early.from_peer = "p".into();
        store.insert_message(early.clone(), None).await.unwrap();
        // Someone else's recall does nothing.
        assert_eq!(
            store
                .bury("peer:p".into(), early.id, by("q"))
                .await
                .unwrap(),
            Buried::Refused
        );
        assert_eq!(
            store
                .bury("peer:p".into(), early.id, by("p"))
                .await
                .unwrap(),
            Buried::Applied
        );
        assert_eq!(
            store
                .bury("peer:p".into(), early.id, by("p"))
                .await
                .unwrap(),
            Buried::Already
        );
        // A recall that arrives first applies when the message does.
        let late = record("user:bob", "late");
        assert_eq!(
            store
                .bury("user:bob".into(), late.id, Tombstone::Recalled { by: None })
                .await
                .unwrap(),
            Buried::Waiting
        );
        store.insert_message(late.clone(), None).await.unwrap();
        // A deletion removes it, and a later copy does not bring it back.
        let gone = record("user:bob", "gone");
        store.insert_message(gone.clone(), None).await.unwrap();
        assert_eq!(
            store
                .bury("user:bob".into(), gone.id, Tombstone::Deleted)
                .await
                .unwrap(),
            Buried::Applied
        );
        assert_eq!(
            store.insert_message(gone.clone(), None).await.unwrap(),
            Inserted::Duplicate
        );
        let history = store.history("user:bob".into(), 10).await.unwrap();
        assert_eq!(history.len(), 1);
        assert!(
            history[0].recalled && history[0].text.is_none(),
            "{history:?}"
        );
        let early_now = store.find(early.id).await.unwrap().unwrap();
        assert!(early_now.recalled && early_now.text.is_none());
        assert!(store.find(gone.id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn receipts_raise_only_their_direction_and_reads_are_queued_durably() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), vec![1]).await.unwrap();
        let mut mine = record("user:bob", "mine");
        mine.from_peer = "my-other-device".into();
        mine.outgoing = true;
        mine.delivery = DeliveryState::Sent;
        let theirs: Vec<StoredMessage> = (0..3)
            .map(|i| {
                let mut r = record("user:bob", &format!("theirs {i}"));
                r.from_peer = "bobs-phone".into();
                r
            })
            .collect();
        let cursor = MailboxCursor {
            user: "alice".into(),
            seq: 4,
        };
        let mut page = vec![PageItem::Message(mine.clone())];
        page.extend(theirs.iter().cloned().map(PageItem::Message));
        store
            .store_mailbox_page(cursor.clone(), page)
            .await
            .unwrap();

        // bob got and read my message (sent from my other device: found by conversation and id);
        // his receipt naming his own message, or one of another conversation, changes nothing.
        let receipt = |mine, state, ids: Vec<MessageId>| PageItem::Receipt {
            conversation: "user:bob".into(),
            mine,
            state,
            ids,
        };
        let outcome = store
            .store_mailbox_page(
                cursor.clone(),
                vec![
                    receipt(false, DeliveryState::Delivered, vec![mine.id, theirs[0].id]),
                    receipt(false, DeliveryState::Read, vec![mine.id]),
                    receipt(false, DeliveryState::Delivered, vec![mine.id]),
                    PageItem::Receipt {
                        conversation: "user:carol".into(),
                        mine: false,
                        state: DeliveryState::Read,
                        ids: vec![mine.id],
                    },
                ],
            )
            .await
            .unwrap();
        assert_eq!(
            outcome,
            [
                PageOutcome::Raised(vec![(mine.id, DeliveryState::Delivered)]),
                PageOutcome::Raised(vec![(mine.id, DeliveryState::Read)]),
                PageOutcome::Raised(vec![]),
                PageOutcome::Raised(vec![]),
            ]
        );

        // My other device read bob's first message.
        let outcome = store
            .store_mailbox_page(
                cursor,
                vec![receipt(true, DeliveryState::Read, vec![theirs[0].id])],
            )
            .await
            .unwrap();
        assert_eq!(
            outcome,
            [PageOutcome::Raised(vec![(
                theirs[0].id,
                DeliveryState::Read
            )])]
        );
        // Reading here marks the rest (newest first until a read one), with a queued receipt.
        let read = store
            .mark_read("user:bob".into(), Some(("alice".into(), "bob".into())))
            .await
            .unwrap();
        assert_eq!(read, [theirs[1].id, theirs[2].id]);
        assert!(
            store
                .mark_read("user:bob".into(), Some(("alice".into(), "bob".into())))
                .await
                .unwrap()
                .is_empty()
        );
        store.close().await.unwrap();
        drop(store);

        let (store, _) = Store::open(dir.path(), vec![1]).await.unwrap();
        let waiting = store.receipt_outbox().await.unwrap();
        assert_eq!(
            waiting,
            [
                ("alice".into(), "bob".into(), theirs[1].id),
                ("alice".into(), "bob".into(), theirs[2].id)
            ]
        );
        let history = store.history("user:bob".into(), 10).await.unwrap();
        assert_eq!(
            history.iter().map(|m| m.delivery).collect::<Vec<_>>(),
            [DeliveryState::Read; 4]
        );
        store
            .finish_receipt(
                "alice".into(),
                "bob".into(),
                vec![theirs[1].id, theirs[2].id],
            )
            .await
            .unwrap();
        assert!(store.receipt_outbox().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn mailbox_pages_are_deduplicated_and_move_the_cursor_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let (store, opened) = Store::open(dir.path(), vec![1]).await.unwrap();
        assert_eq!(opened.mailbox_cursor, None);
        // Sent from this device: in the store and in the outbox (its ack was lost).
        let mut own = record("user:bob", "mine");
        own.from_peer = "me".into();
        own.outgoing = true;
        own.delivery = DeliveryState::Pending;
        store
            .insert_message(own.clone(), Some(Outbox::Mailbox("bob".into())))
            .await
            .unwrap();
        // The mailbox has it (the deposit was stored, and retried), and bob's answer.
        let mut mirrored = own.clone();
        mirrored.delivery = DeliveryState::Sent;
        let mut answer = record("user:bob", "theirs");
        answer.from_peer = "bobs-phone".into();
        let cursor = |seq| MailboxCursor {
            user: "alice".into(),
            seq,
        };
        let page = vec![
            PageItem::Message(mirrored.clone()),
            PageItem::Message(answer.clone()),
        ];
        let inserted = |stored: Vec<PageOutcome>| -> Vec<Inserted> {
            stored
                .into_iter()
                .map(|o| match o {
                    PageOutcome::Message(i, _) => i,
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        let stored = store
            .store_mailbox_page(cursor(2), page.clone())
            .await
            .unwrap();
        assert_eq!(inserted(stored), [Inserted::Duplicate, Inserted::New]);
        // The same page again (a sync repeated after a crash): nothing new, shown once.
        let stored = store.store_mailbox_page(cursor(2), page).await.unwrap();
        assert_eq!(inserted(stored), [Inserted::Duplicate, Inserted::Duplicate]);
        // A late page never moves the cursor back.
        store.store_mailbox_page(cursor(1), vec![]).await.unwrap();
        assert_eq!(
            store
                .history("user:bob".into(), 10)
                .await
                .unwrap()
                .iter()
                .map(|m| m.text.as_deref().unwrap())
                .collect::<Vec<_>>(),
            ["mine", "theirs"]
        );
        store.close().await.unwrap();
        drop(store);

        let (store, opened) = Store::open(dir.path(), vec![1]).await.unwrap();
        assert_eq!(opened.mailbox_cursor, Some(cursor(2)));
        // Another account's page replaces the cursor (it belongs to whoever is logged in).
        let carol = MailboxCursor {
            user: "carol".into(),
            seq: 1,
        };
        store
            .store_mailbox_page(carol.clone(), vec![])
            .await
            .unwrap();
        store.close().await.unwrap();
        drop(store);
        let (store, opened) = Store::open(dir.path(), vec![1]).await.unwrap();
        assert_eq!(opened.mailbox_cursor, Some(carol));
        // Logging out forgets it.
        store.set_session(None).await.unwrap();
        store.close().await.unwrap();
        drop(store);
        let (_store, opened) = Store::open(dir.path(), vec![1]).await.unwrap();
        assert_eq!(opened.mailbox_cursor, None);
    }

    #[tokio::test]
    async fn a_second_process_gets_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, _) = Store::open(dir.path(), vec![1]).await.unwrap();
        let err = Store::open(dir.path(), vec![1]).await.unwrap_err();
        assert!(matches!(err, StoreError::Locked(_)), "{err:?}");
    }
}
