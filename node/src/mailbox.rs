//! This device's side of its account's mailbox on the bootstrap, sans-IO: which messages to
//! deposit and when, and how to catch up with the mailbox without ever running two syncs at once.
//!
//! The event loop reports the session, answers and the time; [`Mailbox::poll`] says which
//! requests to send now. Nothing here touches the network or the disk.
//!
//! - **Deposits.** A message to a user waits in a queue per (author account, receiver), oldest
//!   first, with one deposit per queue on the wire at a time: the bootstrap numbers a mailbox in
//!   the order deposits arrive, so this keeps every conversation in the order it was written.
//!   Only the queues of the account logged in now are sent (a message is deposited as its author,
//!   never as whoever logs in later). A failed deposit is retried after a back-off
//!   ([`MAILBOX_RETRY_MIN`] doubling to [`MAILBOX_RETRY_MAX`]); a new session retries at once.
//!   Read receipts for the receiver's messages wait in the same queue, behind the messages
//!   written before them.
//! - **Sync.** When the session is (re)established: first `Summary` (who wrote while this device
//!   was away), then `Sync` pages from the cursor until the mailbox's `last_seq`. A `Mailbox`
//!   push asks for a sync too; pushes during a sync only mark it to run again, so one sync runs at
//!   a time. The cursor moves only once a page is stored (the event loop stores the page and the
//!   cursor in one transaction). Every session change starts a new epoch: answers to requests of
//!   an earlier epoch are ignored. A page with a hole in its numbering is cut at the hole and the
//!   rest asked for again, so a device never skips an entry the mailbox still has.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use confab_protocol::bootstrap::MailboxEntry;
use confab_protocol::limits::MAX_RECEIPT_IDS;
use confab_protocol::{ChatMessage, MessageId};

use crate::config::limits::{
    MAILBOX_PAGE, MAILBOX_RETRY_MAX, MAILBOX_RETRY_MIN, MAX_DEPOSITS_IN_FLIGHT,
};

/// A request the event loop should send to the bootstrap now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// `Summary { after }`; answer with [`Mailbox::summary_done`] or [`Mailbox::sync_failed`].
    Summary { epoch: u64, after: u64 },
    /// `Sync { after, limit }`; answer with [`Mailbox::page_received`] or
    /// [`Mailbox::sync_failed`].
    Sync { epoch: u64, after: u64, limit: u32 },
    /// `Deposit { to, message }` as `author`; answer with [`Mailbox::deposit_done`] or
    /// [`Mailbox::deposit_failed`].
    Deposit {
        author: String,
        to: String,
        message: Box<ChatMessage>,
    },
    /// `Receipt { to, state: Read, ids }` as `author`; answer with [`Mailbox::deposit_done`] or
    /// [`Mailbox::deposit_failed`] with `key`.
    Receipt {
        author: String,
        to: String,
        key: MessageId,
        ids: Vec<MessageId>,
    },
}

/// What waits in a queue: a message, or read receipts for messages of the receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Message(ChatMessage),
    /// Never empty, at most [`MAX_RECEIPT_IDS`].
    Read(Vec<MessageId>),
}

impl Item {
    /// What answers name it by: the message's id, or the first id of the receipt.
    fn key(&self) -> MessageId {
        match self {
            Item::Message(m) => m.id,
            Item::Read(ids) => ids[0],
        }
    }
}

/// What one author has for one receiver, oldest first.
#[derive(Debug)]
struct Queue {
    messages: VecDeque<Item>,
    /// The head is on the wire.
    in_flight: bool,
    next_attempt: Instant,
    backoff: Duration,
}

impl Queue {
    fn new(now: Instant) -> Self {
        Self {
            messages: VecDeque::new(),
            in_flight: false,
            next_attempt: now,
            backoff: MAILBOX_RETRY_MIN,
        }
    }
}

/// The state of this device's mailbox work.
#[derive(Debug)]
pub(crate) struct Mailbox {
    /// The account logged in now.
    user: Option<String>,
    /// The session is established on a connected bootstrap: requests may go out.
    online: bool,
    /// The highest mailbox sequence number stored here.
    synced: u64,
    /// Bumped by every session change; answers carry the epoch of their request.
    epoch: u64,
    /// A summary or sync request (or the storing of its page) is under way.
    busy: bool,
    summary_due: bool,
    sync_due: bool,
    /// The highest `last_seq` the bootstrap announced.
    announced: u64,
    sync_retry_at: Option<Instant>,
    sync_backoff: Duration,
    /// By (author, receiver).
    queues: BTreeMap<(String, String), Queue>,
    /// Items (messages and receipts) in all queues.
    pending: usize,
}

impl Mailbox {
    /// The state at start: logged in as `user` (if any), with the stored cursor (which counts
    /// only if it is `user`'s).
    pub(crate) fn new(user: Option<String>, cursor: Option<(String, u64)>) -> Self {
        let synced = match (&user, cursor) {
            (Some(user), Some((owner, seq))) if *user == owner => seq,
            _ => 0,
        };
        Self {
            user,
            online: false,
            synced,
            epoch: 0,
            busy: false,
            summary_due: false,
            sync_due: false,
            announced: 0,
            sync_retry_at: None,
            sync_backoff: MAILBOX_RETRY_MIN,
            queues: BTreeMap::new(),
            pending: 0,
        }
    }

    /// The account whose mailbox is synced now.
    pub(crate) fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Messages waiting to be deposited (or on the wire).
    /// The sequence number this device has the mailbox up to.
    pub(crate) fn synced(&self) -> u64 {
        self.synced
    }

    pub(crate) fn pending(&self) -> usize {
        self.pending
    }

    /// A message of `author`'s for `to` waits to be deposited (after every earlier one to `to`).
    pub(crate) fn add_deposit(
        &mut self,
        author: String,
        to: String,
        message: ChatMessage,
        now: Instant,
    ) {
        let queue = self
            .queues
            .entry((author, to))
            .or_insert_with(|| Queue::new(now));
        if queue
            .messages
            .iter()
            .any(|m| matches!(m, Item::Message(m) if m.id == message.id))
        {
            return;
        }
        queue.messages.push_back(Item::Message(message));
        self.pending += 1;
    }

    /// `author` read messages that `to` sent: a receipt waits to be deposited, in order with
    /// `author`'s messages to `to`. Receipts waiting together are merged (up to
    /// [`MAX_RECEIPT_IDS`] ids each).
    pub(crate) fn add_read(
        &mut self,
        author: String,
        to: String,
        ids: Vec<MessageId>,
        now: Instant,
    ) {
        if ids.is_empty() {
            return;
        }
        let queue = self
            .queues
            .entry((author, to))
            .or_insert_with(|| Queue::new(now));
        let mut ids = ids.into_iter().peekable();
        while ids.peek().is_some() {
            // The head on the wire is never changed: its answer names it.
            let open = queue.messages.len() > usize::from(queue.in_flight);
            match queue.messages.back_mut() {
                Some(Item::Read(batch)) if open && batch.len() < MAX_RECEIPT_IDS => {
                    while batch.len() < MAX_RECEIPT_IDS {
                        let Some(id) = ids.next() else { break };
                        if !batch.contains(&id) {
                            batch.push(id);
                        }
                    }
                }
                _ => {
                    let batch: Vec<MessageId> = ids.by_ref().take(MAX_RECEIPT_IDS).collect();
                    queue.messages.push_back(Item::Read(batch));
                    self.pending += 1;
                }
            }
        }
    }

    /// The bootstrap confirmed a session for `user` (a login, or the refresh on a new
    /// connection): catch up (summary first), and retry the deposits now.
    pub(crate) fn session_started(&mut self, user: &str, now: Instant) {
        if self.user.as_deref() != Some(user) {
            self.user = Some(user.to_owned());
            self.synced = 0;
            self.announced = 0;
        }
        self.epoch += 1;
        self.online = true;
        self.busy = false;
        self.summary_due = true;
        self.sync_due = true;
        self.sync_retry_at = None;
        self.sync_backoff = MAILBOX_RETRY_MIN;
        for ((author, _), queue) in &mut self.queues {
            if author == user {
                queue.next_attempt = now;
                queue.backoff = MAILBOX_RETRY_MIN;
            }
        }
    }

    /// The session ended (logout, or the bootstrap no longer knows it): the cursor is forgotten.
    /// Deposits stay queued until their author logs in again.
    pub(crate) fn session_ended(&mut self) {
        self.user = None;
        self.online = false;
        self.synced = 0;
        self.announced = 0;
        self.epoch += 1;
        self.busy = false;
        self.summary_due = false;
        self.sync_due = false;
        self.sync_retry_at = None;
    }

    /// No bootstrap is connected any more: nothing is sent until the next session start.
    pub(crate) fn offline(&mut self) {
        self.online = false;
    }

    /// The bootstrap says the mailbox goes up to `last_seq`.
    pub(crate) fn notified(&mut self, last_seq: u64) {
        if self.user.is_none() {
            return;
        }
        self.announced = self.announced.max(last_seq);
        if last_seq > self.synced {
            self.sync_due = true;
        }
    }

    /// The requests to send now.
    pub(crate) fn poll(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some(user) = self.user.clone() else {
            return actions;
        };
        if !self.online {
            return actions;
        }
        let may_sync = !self.busy && self.sync_retry_at.is_none_or(|t| t <= now);
        if may_sync && self.summary_due {
            self.busy = true;
            actions.push(Action::Summary {
                epoch: self.epoch,
                after: self.synced,
            });
        } else if may_sync && self.sync_due {
            self.busy = true;
            self.sync_due = false;
            actions.push(Action::Sync {
                epoch: self.epoch,
                after: self.synced,
                limit: MAILBOX_PAGE,
            });
        }
        let mut in_flight = self.queues.values().filter(|q| q.in_flight).count();
        for ((author, to), queue) in &mut self.queues {
            if in_flight >= MAX_DEPOSITS_IN_FLIGHT {
                break;
            }
            if *author != user || queue.in_flight || queue.next_attempt > now {
                continue;
            }
            let Some(head) = queue.messages.front() else {
                continue;
            };
            queue.in_flight = true;
            in_flight += 1;
            actions.push(match head {
                Item::Message(message) => Action::Deposit {
                    author: author.clone(),
                    to: to.clone(),
                    message: Box::new(message.clone()),
                },
                Item::Read(ids) => Action::Receipt {
                    author: author.clone(),
                    to: to.clone(),
                    key: head.key(),
                    ids: ids.clone(),
                },
            });
        }
        actions
    }

    /// The summary of epoch `epoch` arrived. Returns whether it is current (to be shown).
    pub(crate) fn summary_done(&mut self, epoch: u64) -> bool {
        if epoch != self.epoch || !self.busy {
            return false;
        }
        self.busy = false;
        self.summary_due = false;
        self.sync_due = true;
        true
    }

    /// A page of epoch `epoch` arrived. Returns the cursor to store it with (the highest sequence
    /// number it covers), or `None` if it is stale or holds nothing usable. The sync stays busy until
    /// [`Mailbox::page_stored`].
    ///
    /// Gaps are filled, not skipped: entries at or below the cursor, or out of order, are dropped,
    /// and the page is cut at the first hole inside it (`5, 6, 8` keeps `5, 6`), so the next sync
    /// asks again from there. A hole at the start of a page is accepted: entries leave a mailbox
    /// only from its oldest end (retention), so the numbers before the first one are gone.
    pub(crate) fn page_received(
        &mut self,
        epoch: u64,
        entries: &mut Vec<MailboxEntry>,
        last_seq: u64,
        now: Instant,
    ) -> Option<u64> {
        if epoch != self.epoch || !self.busy {
            return None;
        }
        let received = entries.len();
        // Already here: dropped.
        entries.retain(|e| e.seq > self.synced);
        let mut previous = self.synced;
        let mut keep = 0;
        for entry in entries.iter() {
            if keep > 0 && entry.seq != previous + 1 {
                break;
            }
            previous = entry.seq;
            keep += 1;
        }
        if keep < received {
            tracing::debug!(
                "mailbox page after {} has old entries or a gap: {keep} of {received} kept",
                self.synced,
            );
            entries.truncate(keep);
            if keep == 0 {
                // Nothing usable (a confused server): ask again after a back-off.
                self.sync_failed(epoch, now);
                return None;
            }
            // The rest is asked for at once.
            self.announced = self.announced.max(previous + 1);
        }
        self.announced = self.announced.max(last_seq);
        let cursor = match entries.iter().map(|e| e.seq).max() {
            Some(seq) => seq.max(self.synced),
            // Nothing after the cursor although the mailbox goes further: those entries are gone
            // (retention); skip to the end rather than ask forever.
            None => last_seq.max(self.synced),
        };
        Some(cursor)
    }

    /// The page that moves the cursor to `cursor` is stored (`ok`) or could not be.
    pub(crate) fn page_stored(&mut self, epoch: u64, cursor: u64, ok: bool, now: Instant) {
        if epoch != self.epoch {
            return;
        }
        if !ok {
            return self.sync_failed(epoch, now);
        }
        self.busy = false;
        self.synced = self.synced.max(cursor);
        self.sync_backoff = MAILBOX_RETRY_MIN;
        self.sync_retry_at = None;
        if self.announced > self.synced {
            self.sync_due = true;
        }
    }

    /// A summary or sync request of epoch `epoch` failed: it is asked again after a back-off.
    pub(crate) fn sync_failed(&mut self, epoch: u64, now: Instant) {
        if epoch != self.epoch {
            return;
        }
        self.busy = false;
        self.sync_due = true;
        self.sync_retry_at = Some(now + self.sync_backoff);
        self.sync_backoff = (self.sync_backoff * 2).min(MAILBOX_RETRY_MAX);
    }

    /// The deposit of `id` (a message's id or a receipt's key) is settled for good: stored by
    /// the bootstrap, or refused in a way no retry can change. The next item of its queue may go.
    pub(crate) fn deposit_done(&mut self, author: &str, to: &str, id: MessageId, now: Instant) {
        let key = (author.to_owned(), to.to_owned());
        let Some(queue) = self.queues.get_mut(&key) else {
            return;
        };
        if queue.messages.front().is_some_and(|m| m.key() == id) {
            queue.messages.pop_front();
            self.pending = self.pending.saturating_sub(1);
            queue.in_flight = false;
            queue.next_attempt = now;
            queue.backoff = MAILBOX_RETRY_MIN;
        }
        if queue.messages.is_empty() && !queue.in_flight {
            self.queues.remove(&key);
        }
    }

    /// The deposit of `id` failed (lost, or the bootstrap could not store it now): it is tried
    /// again after a back-off, before anything else of its queue.
    pub(crate) fn deposit_failed(&mut self, author: &str, to: &str, id: MessageId, now: Instant) {
        let Some(queue) = self.queues.get_mut(&(author.to_owned(), to.to_owned())) else {
            return;
        };
        if queue.in_flight && queue.messages.front().is_some_and(|m| m.key() == id) {
            queue.in_flight = false;
            queue.next_attempt = now + queue.backoff;
            queue.backoff = (queue.backoff * 2).min(MAILBOX_RETRY_MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> ChatMessage {
        ChatMessage::text("alice", text, 1)
    }

    fn entry(seq: u64) -> MailboxEntry {
        MailboxEntry {
            seq,
            conversation: "user:bob".into(),
            from_user: "bob".into(),
            from_device: vec![1],
            outgoing: false,
            stored_at: 0,
            item: confab_protocol::bootstrap::MailboxItem::Message(message("x")),
        }
    }

    fn deposits(actions: &[Action]) -> Vec<(String, Option<String>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Deposit { to, message, .. } => Some((to.clone(), message.text.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn deposits_go_one_at_a_time_per_receiver_in_order_and_back_off() {
        let t0 = Instant::now();
        let mut mb = Mailbox::new(Some("alice".into()), None);
        let (m1, m2, m3) = (message("1"), message("2"), message("3"));
        mb.add_deposit("alice".into(), "bob".into(), m1.clone(), t0);
        mb.add_deposit("alice".into(), "bob".into(), m2.clone(), t0);
        mb.add_deposit("alice".into(), "bob".into(), m2.clone(), t0); // the same again: ignored
        mb.add_deposit("alice".into(), "carol".into(), m3.clone(), t0);
        // Another account's message waits for that account.
        mb.add_deposit("zed".into(), "bob".into(), message("z"), t0);
        assert_eq!(mb.pending(), 4);

        // Nothing goes out before the session is established.
        assert!(mb.poll(t0).is_empty());
        mb.session_started("alice", t0);
        let first = mb.poll(t0);
        assert_eq!(
            deposits(&first),
            [
                ("bob".into(), Some("1".into())),
                ("carol".into(), Some("3".into()))
            ]
        );
        assert!(
            deposits(&mb.poll(t0)).is_empty(),
            "one per receiver on the wire"
        );

        // m1 is lost: retried after 1 s, then 2 s; m2 waits behind it.
        mb.deposit_failed("alice", "bob", m1.id, t0);
        assert!(deposits(&mb.poll(t0)).is_empty());
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(deposits(&mb.poll(t1)), [("bob".into(), Some("1".into()))]);
        mb.deposit_failed("alice", "bob", m1.id, t1);
        assert!(deposits(&mb.poll(t1 + Duration::from_millis(1500))).is_empty());
        let t3 = t1 + Duration::from_secs(2);
        assert_eq!(deposits(&mb.poll(t3)), [("bob".into(), Some("1".into()))]);

        // Stored: the next one goes at once; a refused-for-good one is dropped the same way.
        mb.deposit_done("alice", "bob", m1.id, t3);
        assert_eq!(deposits(&mb.poll(t3)), [("bob".into(), Some("2".into()))]);
        mb.deposit_done("alice", "bob", m2.id, t3);
        mb.deposit_done("alice", "carol", m3.id, t3);
        assert_eq!(mb.pending(), 1, "zed's message waits");
        assert!(deposits(&mb.poll(t3)).is_empty());

        // A late answer for something already settled changes nothing.
        mb.deposit_done("alice", "bob", m1.id, t3);
        assert_eq!(mb.pending(), 1);

        // zed logs in: its message goes.
        mb.session_ended();
        mb.session_started("zed", t3);
        assert_eq!(deposits(&mb.poll(t3)), [("bob".into(), Some("z".into()))]);
    }

    #[test]
    fn read_receipts_queue_behind_messages_and_merge_until_they_go() {
        let t0 = Instant::now();
        let mut mb = Mailbox::new(Some("alice".into()), None);
        mb.session_started("alice", t0);
        let m = message("1");
        let (a, b, c) = (
            MessageId::random(),
            MessageId::random(),
            MessageId::random(),
        );
        mb.add_deposit("alice".into(), "bob".into(), m.clone(), t0);
        mb.add_read("alice".into(), "bob".into(), vec![a], t0);
        mb.add_read("alice".into(), "bob".into(), vec![b, a], t0); // merged, a once
        mb.add_read("alice".into(), "bob".into(), Vec::new(), t0); // nothing
        assert_eq!(mb.pending(), 2);
        let receipts = |actions: &[Action]| -> Vec<Vec<MessageId>> {
            actions
                .iter()
                .filter_map(|x| match x {
                    Action::Receipt { ids, .. } => Some(ids.clone()),
                    _ => None,
                })
                .collect()
        };
        // The message first; the receipt waits behind it.
        let first = mb.poll(t0);
        assert_eq!(deposits(&first).len(), 1);
        assert!(receipts(&first).is_empty());
        mb.deposit_done("alice", "bob", m.id, t0);
        let second = mb.poll(t0);
        assert_eq!(receipts(&second), [vec![a, b]]);
        // On the wire: a new read goes into a new receipt, not into the one in flight.
        mb.add_read("alice".into(), "bob".into(), vec![c], t0);
        assert!(receipts(&mb.poll(t0)).is_empty());
        mb.deposit_done("alice", "bob", a, t0);
        assert_eq!(receipts(&mb.poll(t0)), [vec![c]]);
        mb.deposit_done("alice", "bob", c, t0);
        assert_eq!(mb.pending(), 0);
        // More than fit in one receipt: split.
        let many: Vec<MessageId> = (0..MAX_RECEIPT_IDS + 3)
            .map(|_| MessageId::random())
            .collect();
        mb.add_read("alice".into(), "bob".into(), many.clone(), t0);
        assert_eq!(mb.pending(), 2);
        let split = receipts(&mb.poll(t0));
        assert_eq!(split, [many[..MAX_RECEIPT_IDS].to_vec()]);
    }

    #[test]
    fn a_new_session_retries_at_once_and_the_back_off_is_capped() {
        let t0 = Instant::now();
        let mut mb = Mailbox::new(Some("alice".into()), None);
        let m = message("1");
        mb.add_deposit("alice".into(), "bob".into(), m.clone(), t0);
        mb.session_started("alice", t0);
        let mut now = t0;
        for _ in 0..20 {
            assert_eq!(deposits(&mb.poll(now)).len(), 1);
            mb.deposit_failed("alice", "bob", m.id, now);
            now += MAILBOX_RETRY_MAX;
        }
        // Capped: the wait is now the maximum, not more.
        assert_eq!(deposits(&mb.poll(now)).len(), 1);
        mb.deposit_failed("alice", "bob", m.id, now);
        mb.deposit_failed("alice", "bob", m.id, now); // not in flight: ignored
        assert!(deposits(&mb.poll(now + MAILBOX_RETRY_MAX - Duration::from_secs(1))).is_empty());
        assert_eq!(deposits(&mb.poll(now + MAILBOX_RETRY_MAX)).len(), 1);
        mb.deposit_failed("alice", "bob", m.id, now + MAILBOX_RETRY_MAX);
        now += MAILBOX_RETRY_MAX;
        mb.offline();
        assert!(mb.poll(now + MAILBOX_RETRY_MAX).is_empty(), "offline");
        mb.session_started("alice", now);
        assert_eq!(
            deposits(&mb.poll(now)).len(),
            1,
            "reconnecting retries at once"
        );
    }

    #[test]
    fn catch_up_is_a_summary_then_pages_one_sync_at_a_time() {
        let t0 = Instant::now();
        let mut mb = Mailbox::new(Some("bob".into()), Some(("bob".into(), 3)));
        mb.session_started("bob", t0);
        let epoch = match mb.poll(t0).as_slice() {
            [Action::Summary { epoch, after: 3 }] => *epoch,
            other => panic!("{other:?}"),
        };
        assert!(mb.poll(t0).is_empty(), "one at a time");
        mb.notified(10); // a push while busy: remembered
        assert!(mb.summary_done(epoch));
        assert_eq!(
            mb.poll(t0),
            [Action::Sync {
                epoch,
                after: 3,
                limit: MAILBOX_PAGE
            }]
        );
        // A page up to 5 of a mailbox at 10: stored, then the next page from 5.
        let cursor = mb.page_received(epoch, &mut vec![entry(4), entry(5)], 10, t0);
        assert_eq!(cursor, Some(5));
        assert!(mb.poll(t0).is_empty(), "busy while the page is stored");
        mb.page_stored(epoch, 5, true, t0);
        assert_eq!(
            mb.poll(t0),
            [Action::Sync {
                epoch,
                after: 5,
                limit: MAILBOX_PAGE
            }]
        );
        // The rest; then up to date: nothing more.
        let cursor = mb
            .page_received(epoch, &mut vec![entry(6), entry(7)], 10, t0)
            .unwrap();
        mb.page_stored(epoch, cursor, true, t0);
        // A hole inside a page (9 is missing): the page is cut before it and the rest asked
        // again at once; entries at or below the cursor are dropped.
        assert!(matches!(
            mb.poll(t0).as_slice(),
            [Action::Sync { after: 7, .. }]
        ));
        let mut page = vec![entry(8), entry(10)];
        assert_eq!(mb.page_received(epoch, &mut page, 10, t0), Some(8));
        assert_eq!(page.len(), 1);
        mb.page_stored(epoch, 8, true, t0);
        assert!(matches!(
            mb.poll(t0).as_slice(),
            [Action::Sync { after: 8, .. }]
        ));
        // A page of nothing new (a confused server) is dropped and asked again after a back-off.
        let mut stale = vec![entry(7), entry(8)];
        assert_eq!(mb.page_received(epoch, &mut stale, 10, t0), None);
        assert!(mb.poll(t0).is_empty(), "a useless page backs off");
        assert!(matches!(
            mb.poll(t0 + MAILBOX_RETRY_MIN).as_slice(),
            [Action::Sync { after: 8, .. }]
        ));
        // Old entries before new ones are dropped, the new ones kept.
        let mut mixed = vec![entry(8), entry(9)];
        assert_eq!(mb.page_received(epoch, &mut mixed, 10, t0), Some(9));
        assert_eq!(mixed.len(), 1);
        mb.page_stored(epoch, 9, true, t0);
        assert!(matches!(
            mb.poll(t0).as_slice(),
            [Action::Sync { after: 9, .. }]
        ));
        let mut stale = vec![entry(8)];
        assert_eq!(mb.page_received(epoch, &mut stale, 10, t0), None);
        assert!(mb.poll(t0).is_empty(), "backs off again");
        assert!(matches!(
            mb.poll(t0 + MAILBOX_RETRY_MAX).as_slice(),
            [Action::Sync { after: 9, .. }]
        ));
        let cursor = mb
            .page_received(epoch, &mut vec![entry(10)], 10, t0)
            .unwrap();
        mb.page_stored(epoch, cursor, true, t0);
        assert!(mb.poll(t0).is_empty());
        // A push of what is already here changes nothing; a newer one syncs.
        mb.notified(10);
        assert!(mb.poll(t0).is_empty());
        mb.notified(11);
        assert!(matches!(
            mb.poll(t0).as_slice(),
            [Action::Sync { after: 10, .. }]
        ));
        // It fails: asked again after the back-off, not before.
        mb.sync_failed(epoch, t0);
        assert!(mb.poll(t0).is_empty());
        assert!(matches!(
            mb.poll(t0 + MAILBOX_RETRY_MIN).as_slice(),
            [Action::Sync { after: 10, .. }]
        ));
        // An empty page although the mailbox goes further (entries expired): skip to its end.
        assert_eq!(mb.page_received(epoch, &mut Vec::new(), 12, t0), Some(12));
        mb.page_stored(epoch, 12, true, t0);
        assert!(mb.poll(t0 + MAILBOX_RETRY_MAX).is_empty());
    }

    #[test]
    fn session_changes_reset_the_cursor_and_ignore_stale_answers() {
        let t0 = Instant::now();
        // The stored cursor is another account's: it counts for nothing.
        let mut mb = Mailbox::new(Some("bob".into()), Some(("alice".into(), 7)));
        mb.session_started("bob", t0);
        let old = match mb.poll(t0).as_slice() {
            [Action::Summary { epoch, after: 0 }] => *epoch,
            other => panic!("{other:?}"),
        };
        assert!(mb.summary_done(old));
        assert!(matches!(mb.poll(t0).as_slice(), [Action::Sync { .. }]));
        let cursor = mb.page_received(old, &mut vec![entry(1)], 1, t0).unwrap();

        // Logged out before the page is stored; another account logs in.
        mb.session_ended();
        assert!(mb.poll(t0).is_empty());
        mb.notified(5); // not logged in: ignored
        mb.session_started("carol", t0);
        mb.page_stored(old, cursor, true, t0); // stale
        assert!(!mb.summary_done(old));
        assert!(mb.page_received(old, &mut vec![entry(2)], 2, t0).is_none());
        match mb.poll(t0).as_slice() {
            [Action::Summary { epoch, after: 0 }] => assert_ne!(*epoch, old),
            other => panic!("{other:?}"),
        }
        assert_eq!(mb.user(), Some("carol"));
    }
}
