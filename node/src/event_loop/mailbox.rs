//! The mailbox in the event loop: performs what [`crate::mailbox::Mailbox`] decides.
//!
//! - A message to `user:bob` is stored with an entry in the mailbox outbox (one transaction, see
//!   `handle_send`), then deposited on the bootstrap as its author; `Deposited` makes it `Sent`
//!   and takes it out of the outbox; a refusal for good (unknown user, full mailbox, invalid)
//!   makes it `Failed`; anything else is retried.
//! - Catch-up: the summary becomes [`Event::OfflineSummary`]; each page of the mailbox is stored
//!   with the new cursor in one transaction (deduplicated like every message: one this device
//!   sent itself, or got directly from its author, is already here), and only the newly stored
//!   messages become [`Event::Message`]s. Receipts in the page raise the messages they name
//!   (`delivered`, `read`), each change an [`Event::Delivery`].
//! - Read: `mark_read` marks a conversation's unread messages read and, in a `user:`
//!   conversation, queues a read receipt (durably, in the same transaction) that is deposited
//!   like a message: into the authors' mailboxes and this account's own.

use super::e2e::NotReady;
use confab_protocol::ContentHash;
use confab_protocol::bootstrap::{
    ErrorCode, HoldState, MailboxEntry, MailboxItem, OfflineSummary, ReceiptState,
    normalize_username,
};

use super::accounts::Caller;
use super::*;
use crate::event::FileHoldState;
use crate::mailbox::Action;
use crate::store::{MailboxCursor, Outbox, PageItem};

/// A mailbox request on the wire: what its answer is for.
#[derive(Debug)]
pub(super) enum MailboxCall {
    Summary {
        epoch: u64,
    },
    Sync {
        epoch: u64,
    },
    Deposit {
        author: String,
        to: String,
        id: MessageId,
    },
    /// The bootstrap was asked to hold the message's file; the deposit follows the answer.
    Hold {
        author: String,
        to: String,
        message: Box<ChatMessage>,
    },
    Receipt {
        author: String,
        to: String,
        key: MessageId,
        ids: Vec<MessageId>,
    },
}

/// The deposit of `message` (a queue's receiver is a username, or `group:<id>`: no username has
/// ':').
fn deposit_request(
    author: String,
    to: String,
    message: ChatMessage,
) -> (BootstrapRequest, MailboxCall) {
    tracing::debug!("depositing {} for {to}", message.id);
    let id = message.id;
    let request = match to.strip_prefix("group:") {
        Some(group) => BootstrapRequest::GroupPost {
            group: group.to_owned(),
            message,
        },
        None => BootstrapRequest::Deposit {
            to: to.clone(),
            message,
        },
    };
    (request, MailboxCall::Deposit { author, to, id })
}

/// How a mailbox entry is stored here, or `None` (with a log line) if it is unusable: the
/// bootstrap is the authority for who wrote it (`from_user`, and the device it came from).
fn page_item(entry: MailboxEntry, encrypted: bool, file_key: Option<Vec<u8>>) -> Option<PageItem> {
    let Ok(device) = PeerId::from_bytes(&entry.from_device) else {
        tracing::warn!("skipping mailbox entry {}: bad device id", entry.seq);
        return None;
    };
    let conversation = match entry.conversation.parse::<Conversation>() {
        Ok(c) => c.to_string(),
        Err(e) => {
            tracing::warn!("skipping mailbox entry {}: {e}", entry.seq);
            return None;
        }
    };
    let message = match entry.item {
        MailboxItem::Message(message) => message,
        // Applied only to the named author's message: ids are the authors' choice, so another
        // author's message with the same id is not touched.
        MailboxItem::Recall { id, author } => {
            return Some(PageItem::Tombstone {
                conversation,
                id,
                tombstone: crate::store::Tombstone::Recalled { by: Some(author) },
            });
        }
        // Only ever the account's own doing (the bootstrap puts it in the owner's mailbox only).
        MailboxItem::Delete { id } if entry.outgoing => {
            return Some(PageItem::Tombstone {
                conversation,
                id,
                tombstone: crate::store::Tombstone::Deleted,
            });
        }
        MailboxItem::Receipt { state, ids } => {
            let state = match state {
                ReceiptState::Delivered => DeliveryState::Delivered,
                ReceiptState::Read => DeliveryState::Read,
                _ => {
                    tracing::debug!("skipping mailbox entry {}: unknown receipt", entry.seq);
                    return None;
                }
            };
            return Some(PageItem::Receipt {
                conversation,
                mine: entry.outgoing,
                state,
                ids,
            });
        }
        _ => {
            tracing::debug!("skipping mailbox entry {}: unknown kind", entry.seq);
            return None;
        }
    };
    // A decrypted message was checked when it was opened; an undecryptable one has no content.
    if !encrypted && let Err(e) = message.validate() {
        tracing::warn!("skipping mailbox entry {}: {e}", entry.seq);
        return None;
    }
    Some(PageItem::Message(StoredMessage {
        id: message.id,
        conversation,
        from_peer: device.to_base58(),
        from_user: Some(entry.from_user),
        from_name: message.sender_name,
        sent_at: message.sent_at,
        text: message.text,
        attachment: message.attachment,
        outgoing: entry.outgoing,
        // Its being in the mailbox means the bootstrap stored it: sent; an incoming one reached
        // this device.
        delivery: if entry.outgoing {
            DeliveryState::Sent
        } else {
            DeliveryState::Delivered
        },
        seq: 0,
        recalled: false,
        encrypted,
        file_key,
    }))
}

/// The front-end form of an offline summary (entries whose conversation does not parse are left
/// out).
fn summary_event(summary: OfflineSummary) -> Event {
    Event::OfflineSummary {
        senders: summary
            .senders
            .into_iter()
            .filter_map(|(conversation, n)| Some((conversation.parse().ok()?, n)))
            .collect(),
        total: summary.total,
    }
}

impl EventLoop {
    /// The outbox target of a message to `user:` (checked and canonical), or why not.
    pub(super) fn mailbox_target(&self, to: &Conversation) -> Result<Outbox, SendError> {
        let Some(session) = &self.session else {
            return Err(SendError::NotLoggedIn(to.to_string()));
        };
        let Conversation::User(user) = to else {
            return Err(SendError::Unsupported(to.to_string()));
        };
        // Parsing made it canonical already; a `Conversation` built by hand may not be.
        let user = normalize_username(user).map_err(|_| {
            SendError::BadAddress(crate::address::AddressError {
                input: to.to_string(),
                reason: "not a valid username",
            })
        })?;
        if user == session.user {
            return Err(SendError::Invalid(
                "that is this device's own account".into(),
            ));
        }
        if self.mailbox.pending() >= MAX_PENDING_DEPOSITS {
            return Err(SendError::OutboxFull(self.mailbox.pending()));
        }
        Ok(Outbox::Mailbox(user))
    }

    /// Sends the mailbox requests that are due, if the session's bootstrap is connected.
    pub(super) fn drive_mailbox(&mut self) {
        let Some(session) = &self.session else {
            return;
        };
        let Some(peer) = self.bootstraps.target(Some(&session.bootstrap)) else {
            return;
        };
        let cert = session.cert.clone();
        for action in self.mailbox.poll(Instant::now()) {
            let (request, call) = match action {
                Action::Summary { epoch, after } => (
                    BootstrapRequest::Summary { after },
                    MailboxCall::Summary { epoch },
                ),
                Action::Sync {
                    epoch,
                    after,
                    limit,
                } => (
                    BootstrapRequest::Sync { after, limit },
                    MailboxCall::Sync { epoch },
                ),
                Action::Deposit {
                    author,
                    to,
                    mut message,
                } => {
                    message.author_cert = Some(cert.clone());
                    // A sealed message's file is known to this device only.
                    let file = message
                        .attachment
                        .as_deref()
                        .map(|a| (a.hash, a.size))
                        .or_else(|| self.sealed_files.get(&message.id).copied());
                    match file {
                        // A file goes with it: first ask the bootstrap to hold it for receivers
                        // who are offline (asked again after a restart: harmless).
                        Some((root, size)) if !self.holds_asked.contains(&message.id) => {
                            let conversation = match to.starts_with("group:") {
                                true => to.clone(),
                                false => format!("user:{to}"),
                            };
                            let request = BootstrapRequest::FileHold {
                                conversation,
                                id: message.id,
                                root,
                                size,
                            };
                            (
                                request,
                                MailboxCall::Hold {
                                    author,
                                    to,
                                    message,
                                },
                            )
                        }
                        _ => deposit_request(author, to, *message),
                    }
                }
                Action::Receipt {
                    author,
                    to,
                    key,
                    ids,
                } => (
                    BootstrapRequest::Receipt {
                        to: to.clone(),
                        state: ReceiptState::Read,
                        ids: ids.clone(),
                    },
                    MailboxCall::Receipt {
                        author,
                        to,
                        key,
                        ids,
                    },
                ),
            };
            self.send_call(peer, request, Caller::Mailbox(call));
        }
    }

    /// The bootstrap answered a `FileHold`: report it, then deposit the message.
    fn handle_hold_answer(
        &mut self,
        author: String,
        to: String,
        message: ChatMessage,
        result: Result<BootstrapResponse, CallError>,
    ) {
        let id = message.id;
        let root = message
            .attachment
            .as_ref()
            .map(|a| a.hash)
            .or_else(|| self.sealed_files.get(&id).map(|(root, _)| *root));
        let (state, error) = match result {
            Ok(BootstrapResponse::FileHold { state }) => match state {
                HoldState::NotNeeded => (FileHoldState::NotNeeded, None),
                HoldState::Held => (FileHoldState::Held, None),
                _ => (FileHoldState::Pulling, None),
            },
            Err(CallError::Refused {
                code:
                    code @ (ErrorCode::TooLarge
                    | ErrorCode::QuotaExceeded
                    | ErrorCode::Invalid
                    | ErrorCode::NotFound
                    | ErrorCode::UnknownUser
                    | ErrorCode::NotAllowed),
                message: text,
                ..
            }) => {
                tracing::warn!("the bootstrap does not hold the file of {id} ({code:?}: {text})");
                (FileHoldState::Refused, Some(text))
            }
            other => {
                tracing::debug!(
                    "file hold for {id} failed ({}); will retry",
                    describe(&other)
                );
                self.mailbox
                    .deposit_failed(&author, &to, id, Instant::now());
                return;
            }
        };
        self.holds_asked.insert(id);
        self.sealed_files.remove(&id);
        if let (FileHoldState::Pulling, Some(root)) = (state, root)
            && (self.holding.len() < MAX_HOLDS_WATCHED || self.holding.contains_key(&root))
        {
            self.holding.entry(root).or_default().push(id);
        }
        self.emit(Event::FileHold { id, state, error });
        let target = self
            .session
            .as_ref()
            .and_then(|s| self.bootstraps.target(Some(&s.bootstrap)));
        match target {
            Some(peer) => {
                let (request, call) = deposit_request(author, to, message);
                self.send_call(peer, request, Caller::Mailbox(call));
            }
            None => self
                .mailbox
                .deposit_failed(&author, &to, id, Instant::now()),
        }
    }

    /// The bootstrap has all of a file this account asked it to hold.
    pub(super) fn file_held(&mut self, root: ContentHash) {
        for id in self.holding.remove(&root).unwrap_or_default() {
            self.emit(Event::FileHold {
                id,
                state: FileHoldState::Held,
                error: None,
            });
        }
    }

    /// The answer to a mailbox request (or why there is none).
    pub(super) fn handle_mailbox_answer(
        &mut self,
        call: MailboxCall,
        result: Result<BootstrapResponse, CallError>,
    ) {
        let now = Instant::now();
        match call {
            MailboxCall::Summary { epoch } => match result {
                Ok(BootstrapResponse::Summary(summary)) => {
                    if self.mailbox.summary_done(epoch) && summary.total > 0 {
                        self.emit(summary_event(summary));
                    }
                }
                other => {
                    tracing::debug!("mailbox summary failed: {}", describe(&other));
                    self.mailbox.sync_failed(epoch, now);
                }
            },
            MailboxCall::Sync { epoch } => match result {
                Ok(BootstrapResponse::Mailbox { entries, last_seq }) => {
                    self.store_mailbox_page(epoch, entries, last_seq)
                }
                other => {
                    tracing::debug!("mailbox sync failed: {}", describe(&other));
                    self.mailbox.sync_failed(epoch, now);
                }
            },
            MailboxCall::Hold {
                author,
                to,
                message,
            } => self.handle_hold_answer(author, to, *message, result),
            MailboxCall::Deposit { author, to, id } => match result {
                Ok(BootstrapResponse::Deposited { seq }) => {
                    tracing::debug!("{id} for {to} is in the mailbox (seq {seq} of {author})");
                    self.mailbox.deposit_done(&author, &to, id, now);
                    self.finish_deposit(id, DeliveryState::Sent);
                }
                Err(CallError::Refused {
                    code:
                        code @ (ErrorCode::MailboxFull
                        | ErrorCode::NotFound
                        | ErrorCode::UnknownUser
                        | ErrorCode::Invalid
                        | ErrorCode::TooLarge
                        | ErrorCode::NotAllowed),
                    message,
                    ..
                }) => {
                    tracing::warn!(
                        "the bootstrap refused {id} for {to} for good ({code:?}: {message})"
                    );
                    self.mailbox.deposit_done(&author, &to, id, now);
                    self.finish_deposit(id, DeliveryState::Failed);
                }
                other => {
                    tracing::debug!("deposit of {id} failed ({}); will retry", describe(&other));
                    self.mailbox.deposit_failed(&author, &to, id, now);
                }
            },
            MailboxCall::Receipt {
                author,
                to,
                key,
                ids,
            } => match result {
                Ok(BootstrapResponse::Deposited { .. })
                | Err(CallError::Refused {
                    code:
                        ErrorCode::MailboxFull
                        | ErrorCode::UnknownUser
                        | ErrorCode::Invalid
                        | ErrorCode::TooLarge
                        | ErrorCode::NotAllowed,
                    ..
                }) => {
                    if let Err(e) = &result {
                        // Refused for good (unknown user, full mailbox, blocked): not worth
                        // holding the queue for. Anything else is retried.
                        tracing::warn!("the bootstrap refused a read receipt for {to}: {e:?}");
                    }
                    self.mailbox.deposit_done(&author, &to, key, now);
                    let store = self.store.clone();
                    self.run_store_op(async move {
                        if let Err(e) = store.finish_receipt(author, to, ids).await {
                            tracing::warn!("cannot record a stored read receipt: {e}");
                        }
                        StoreDone::Nothing
                    });
                }
                other => {
                    tracing::debug!("read receipt failed ({}); will retry", describe(&other));
                    self.mailbox.deposit_failed(&author, &to, key, now);
                }
            },
        }
    }

    /// Marks a conversation read here and, for a `user:` conversation, tells the authors (and
    /// this account's other devices) with a read receipt.
    pub(super) fn handle_mark_read(
        &mut self,
        conversation: Conversation,
        reply: Reply<Result<usize, QueryError>>,
    ) {
        let receipt = match (&conversation, &self.session) {
            (Conversation::User(user), Some(session)) => Some((session.user.clone(), user.clone())),
            _ => None,
        };
        let store = self.store.clone();
        self.run_store_op(async move {
            let result = store
                .mark_read(conversation.to_string(), receipt.clone())
                .await;
            StoreDone::MarkedRead {
                receipt,
                result,
                reply,
            }
        });
    }

    /// Messages are marked read: say so, and queue the receipt.
    pub(super) fn handle_marked_read(
        &mut self,
        receipt: Option<(String, String)>,
        result: Result<Vec<MessageId>, StoreError>,
        reply: Reply<Result<usize, QueryError>>,
    ) {
        let ids = match result {
            Ok(ids) => ids,
            Err(e) => {
                let _ = reply.send(Err(QueryError::Store(e)));
                return;
            }
        };
        let _ = reply.send(Ok(ids.len()));
        for id in &ids {
            self.emit(Event::Delivery {
                id: *id,
                state: DeliveryState::Read,
            });
        }
        if let Some((author, to)) = receipt {
            self.mailbox.add_read(author, to, ids, Instant::now());
            self.drive_mailbox();
        }
    }

    /// Whether the account blocked what a mailbox entry comes from: a blocked group, or a
    /// blocked user's message (the bootstrap refuses those; entries stored before the block are
    /// dropped here).
    fn blocks_entry(&self, entry: &MailboxEntry) -> bool {
        let Ok(conversation) = entry.conversation.parse::<Conversation>() else {
            return false;
        };
        let author = (!entry.outgoing).then_some(entry.from_user.as_str());
        self.blocks(&conversation, author)
    }

    /// Takes a settled deposit out of the outbox and says how it ended (unless it got further
    /// already: a message delivered directly stays `delivered`).
    fn finish_deposit(&mut self, id: MessageId, state: DeliveryState) {
        self.holds_asked.remove(&id);
        let store = self.store.clone();
        let author = self.local_peer.to_base58();
        let events = self.events.clone();
        self.run_store_op(async move {
            match store.finish_deposit(author, id, state).await {
                Ok(true) => {
                    let _ = events.send(Event::Delivery { id, state });
                }
                Ok(false) => {}
                // Still in the outbox: deposited again at the next start, deduplicated.
                Err(e) => tracing::warn!("cannot record the deposit of {id}: {e}"),
            }
            StoreDone::Nothing
        });
    }

    /// Stores a page of the mailbox with the cursor it moves to.
    fn store_mailbox_page(&mut self, epoch: u64, mut entries: Vec<MailboxEntry>, last_seq: u64) {
        let Some(seq) = self
            .mailbox
            .page_received(epoch, &mut entries, last_seq, Instant::now())
        else {
            // Stale, or nothing usable (retried after a back-off): ask again if due.
            self.drive_mailbox();
            return;
        };
        let Some(user) = self.mailbox.user().map(str::to_owned) else {
            return;
        };
        tracing::debug!(
            "storing {} mailbox entries up to {seq} (of {last_seq})",
            entries.len()
        );
        let mut items = Vec::with_capacity(entries.len());
        let mut seq = seq;
        let mut waiting = false;
        for entry in entries {
            if self.blocks_entry(&entry) {
                continue;
            }
            let at = entry.seq;
            match self.open_entry(entry) {
                Some(Ok((entry, encrypted, file_key))) => {
                    items.extend(page_item(entry, encrypted, file_key));
                }
                // Not readable before a catch-up: the page ends here, the rest comes again.
                Some(Err(())) => {
                    seq = at - 1;
                    waiting = true;
                    break;
                }
                None => {}
            }
        }
        // The first entry waits: nothing to store; asked again after a back-off.
        if waiting && seq <= self.mailbox.synced() {
            self.mailbox.sync_failed(epoch, Instant::now());
            self.drive_mailbox();
            return;
        }
        let store = self.store.clone();
        self.run_store_op(async move {
            let result = store
                .store_mailbox_page(MailboxCursor { user, seq }, items)
                .await;
            StoreDone::MailboxPage {
                epoch,
                cursor: seq,
                result,
            }
        });
    }

    /// A mailbox entry with its message opened (decrypted, or checked to be plaintext where
    /// plaintext is allowed): `Err` when it must wait for a catch-up, `None` when it is refused.
    #[allow(clippy::type_complexity)]
    fn open_entry(
        &mut self,
        mut entry: MailboxEntry,
    ) -> Option<Result<(MailboxEntry, bool, Option<Vec<u8>>), ()>> {
        let MailboxItem::Message(message) = &entry.item else {
            return Some(Ok((entry, false, None)));
        };
        let (Ok(conversation), Ok(device)) = (
            entry.conversation.parse::<Conversation>(),
            PeerId::from_bytes(&entry.from_device),
        ) else {
            // page_item says why.
            return Some(Ok((entry, false, None)));
        };
        let id = message.id;
        let sealed = message.clone();
        let ready = match self.open_incoming(&conversation, &device, Some(&entry.from_user), sealed)
        {
            Ok(ready) => ready,
            Err(NotReady::Later) if self.wait_for_sync(id, &conversation) => {
                return Some(Err(()));
            }
            // Waited for a catch-up: kept without its content if the conversation is encrypted,
            // refused if it is not (sealed junk).
            Err(NotReady::Later) if self.is_encrypted(&conversation) => {
                super::e2e::undecryptable(message)
            }
            Err(NotReady::Later) => {
                tracing::warn!(
                    "skipping mailbox entry {}: sealed, in a conversation that is not encrypted",
                    entry.seq
                );
                return None;
            }
            Err(NotReady::Refused(why)) => {
                tracing::warn!("skipping mailbox entry {}: {why}", entry.seq);
                return None;
            }
        };
        entry.item = MailboxItem::Message(ready.message);
        Some(Ok((entry, ready.encrypted, ready.file_key)))
    }

    /// A page is stored (or not): show what is new, move on.
    pub(super) fn handle_mailbox_page_stored(
        &mut self,
        epoch: u64,
        cursor: u64,
        result: Result<Vec<PageOutcome>, StoreError>,
    ) {
        let ok = match result {
            Ok(stored) => {
                for outcome in stored {
                    match outcome {
                        PageOutcome::Message(Inserted::New, record) => match to_message(record) {
                            Ok(message) => self.emit(Event::Message(message)),
                            Err(e) => tracing::warn!("a stored mailbox message: {e}"),
                        },
                        PageOutcome::Message(Inserted::Duplicate, _) => {}
                        PageOutcome::Buried {
                            conversation,
                            id,
                            tombstone,
                            outcome,
                        } => {
                            if let Ok(conversation) = conversation.parse() {
                                self.announce_buried(conversation, id, &tombstone, &outcome);
                            }
                        }
                        PageOutcome::Raised(raised) => {
                            for (id, state) in raised {
                                self.emit(Event::Delivery { id, state });
                            }
                        }
                    }
                }
                true
            }
            Err(e) => {
                tracing::error!("cannot store a page of the mailbox: {e}");
                false
            }
        };
        self.mailbox.page_stored(epoch, cursor, ok, Instant::now());
        self.drive_mailbox();
    }
}

/// A failed answer for a log line (never a whole page).
fn describe(result: &Result<BootstrapResponse, CallError>) -> String {
    match result {
        Ok(response) => format!(
            "unexpected answer {}",
            crate::client::response_kind(response)
        ),
        Err(e) => format!("{e:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(from_device: Vec<u8>, conversation: &str, outgoing: bool) -> MailboxEntry {
        MailboxEntry {
            seq: 7,
            conversation: conversation.into(),
            from_user: "alice".into(),
            from_device,
            outgoing,
            stored_at: 0,
            item: MailboxItem::Message(ChatMessage::text("alice's laptop", "hi", 5)),
        }
    }

    fn message_record(entry: MailboxEntry) -> Option<StoredMessage> {
        match page_item(entry, false, None)? {
            PageItem::Message(record) => Some(record),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mailbox_entries_become_messages_from_the_device_that_wrote_them() {
        let device = PeerId::random();
        let record = message_record(entry(device.to_bytes(), "user:alice", false)).unwrap();
        assert_eq!(record.conversation, "user:alice");
        assert_eq!(record.from_peer, device.to_base58());
        assert_eq!(record.from_user.as_deref(), Some("alice"));
        assert_eq!(record.from_name, "alice's laptop");
        assert!(!record.outgoing);
        assert_eq!(record.delivery, DeliveryState::Delivered);
        let own = message_record(entry(device.to_bytes(), "user:bob", true)).unwrap();
        assert!(own.outgoing);
        assert_eq!(own.delivery, DeliveryState::Sent);
        // Unusable entries are skipped, not fatal.
        assert!(page_item(entry(vec![1, 2, 3], "user:alice", false), false, None).is_none());
        assert!(page_item(entry(device.to_bytes(), "nonsense", false), false, None).is_none());
        let mut empty = entry(device.to_bytes(), "user:alice", false);
        empty.item = MailboxItem::Message(ChatMessage::text("alice", "  ", 5));
        assert!(page_item(empty, false, None).is_none());
        // Receipts: the other party's about this account's messages, or this account's own.
        let id = MessageId::random();
        let mut receipt = entry(device.to_bytes(), "user:alice", false);
        receipt.item = MailboxItem::Receipt {
            state: ReceiptState::Read,
            ids: vec![id],
        };
        assert_eq!(
            page_item(receipt.clone(), false, None),
            Some(PageItem::Receipt {
                conversation: "user:alice".into(),
                mine: false,
                state: DeliveryState::Read,
                ids: vec![id]
            })
        );
        receipt.item = MailboxItem::Receipt {
            state: ReceiptState::Unknown,
            ids: vec![id],
        };
        assert!(page_item(receipt.clone(), false, None).is_none());
        receipt.item = MailboxItem::Unknown;
        assert!(page_item(receipt, false, None).is_none());
    }

    #[test]
    fn summaries_keep_their_order_and_drop_what_does_not_parse() {
        let event = summary_event(OfflineSummary {
            senders: vec![
                ("user:carol".into(), 1),
                ("bogus".into(), 2),
                ("user:alice".into(), 3),
            ],
            total: 6,
        });
        assert_eq!(
            event,
            Event::OfflineSummary {
                senders: vec![
                    (Conversation::User("carol".into()), 1),
                    (Conversation::User("alice".into()), 3)
                ],
                total: 6
            }
        );
    }
}
