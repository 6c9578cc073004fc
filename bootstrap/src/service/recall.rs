//! Recalling a message for everyone, and deleting one from an account's own history, in the
//! mailboxes the bootstrap keeps (`Recall` and `Delete` requests; `user:` and `group:`
//! conversations only: `peer:` and `broadcast` messages never pass through a mailbox). The
//! identity is always the authenticated connection's.
//!
//! **Recall** (`Recall { conversation, id, author }`):
//! - who: in `user:<other>`, only the author (`NotAllowed` for anyone else); in `group:<id>`, a
//!   current member (anyone else: `NotFound`, as for every group request) who is the author, or
//!   the group's owner or an admin (`NotAllowed` for a plain member recalling another's post);
//! - which copies: in `user:<other>`, the requester's own and `other`'s; in a group, those of the
//!   current members and of the author (a member no longer). Former members other than the
//!   author keep theirs: finding them would mean scanning every mailbox. A copy counts only while
//!   its entry is stored (not expired) and in the conversation named; a direct recall needs the
//!   requester's own copy, a group recall at least one (else `NotFound`, "no such message");
//! - what happens, in one transaction: each copy that still holds the message is replaced in
//!   place by [`MailboxItem::Recall`] (same sequence number and envelope, the body dropped from
//!   the database), and a `Recall` tombstone is appended to that mailbox (conversation as its
//!   owner sees it, `from_user` the requester, `outgoing` for the requester's own), so devices
//!   that synced past the original learn it too. The requester's own mailbox always gets the
//!   tombstone (an admin may have no copy); every owner whose mailbox grew is told, and the
//!   answer is `Deposited` with the tombstone's number in the requester's mailbox;
//! - **full mailboxes**: a recall that drops a body is never refused for a full mailbox, and its
//!   tombstones are appended above the entry limit — the exception to the limit. A tombstone
//!   stands in for content it removed, and a body is dropped once, so each message adds at most
//!   one entry beyond the limit to each mailbox;
//! - **repeats**: a recall that finds no body left (every copy already recalled) writes nothing
//!   and answers with the number of the requester's own copy, which shows the recall since the
//!   first time; a requester with no recalled copy of its own (an admin who never had it, or an
//!   author who deleted its copy) gets a fresh tombstone in its own mailbox only, within the
//!   limit (`MailboxFull` otherwise). So repeating cannot grow anyone else's mailbox;
//! - blocking does not stop a recall: it only takes away what was stored.
//!
//! **Delete** (`Delete { conversation, id }`): only the requester's own mailbox changes. Its copy
//! of message `id` in that conversation, by whichever author, is replaced in place by
//! [`MailboxItem::Delete`] (found by its author in `user:<other>`, by a scan of the account's
//! deduplication index, off the write lock, in a group), and a `Delete` tombstone (outgoing) is
//! appended for its other devices. A delete is accepted even where no copy is found (the
//! devices may keep messages whose entries expired); such a tombstone must fit the limit. A
//! repeat (the copy shows the deletion already) writes nothing and answers the copy's number.
//! Group membership is not needed: it is one's own history.
//!
//! The replaced entries keep their envelope (notably `outgoing`), so a replaced incoming entry
//! holds a `Delete` with `outgoing: false`; nodes apply only the appended, outgoing tombstone
//! of a deletion. The database file may keep a dropped body's bytes in free pages until redb
//! reuses them, and backups made before the recall keep it.

use confab_protocol::MessageId;
use confab_protocol::bootstrap::{ErrorCode, MailboxEntry, MailboxItem, normalize_username};
use confab_protocol::group::Role;
use libp2p::PeerId;

use super::groups::membership;
use super::settings::Address;
use super::{Effect, Outcome, Refusal, Service, check_room, deposited, now_ms};
use crate::store::Tx;

/// A conversation whose messages are in mailboxes.
enum Conversation {
    /// `user:<the other party>` (normalised).
    User(String),
    /// `group:<id>`.
    Group(String),
}

impl Conversation {
    /// Parses a `user:` or `group:` address; `Invalid` with `refusal` for anything else.
    fn parse(text: &str, refusal: &str) -> Result<Conversation, Refusal> {
        match Address::parse(text) {
            Ok(Address::User(user)) => Ok(Conversation::User(user)),
            Ok(Address::Group(group)) => Ok(Conversation::Group(group)),
            _ => Err(Refusal::new(ErrorCode::Invalid, refusal)),
        }
    }

    /// The canonical address.
    fn address(&self) -> String {
        match self {
            Conversation::User(user) => format!("user:{user}"),
            Conversation::Group(group) => format!("group:{group}"),
        }
    }
}

fn no_such_message() -> Refusal {
    Refusal::new(ErrorCode::NotFound, "no such message")
}

/// One mailbox a recall concerns.
struct Holder {
    /// Whose.
    owner: String,
    /// The conversation as the owner sees it.
    conversation: String,
    /// Its copy of the message: stored, and in that conversation.
    copy: Option<MailboxEntry>,
}

/// The live copy in `owner`'s mailbox of `author`'s message `id`, if it is in `conversation`.
fn copy_in(
    tx: &Tx,
    owner: &str,
    author: &str,
    id: &MessageId,
    conversation: &str,
) -> Result<Option<MailboxEntry>, Refusal> {
    Ok(tx
        .mailbox_copy(owner, author, id)?
        .filter(|e| e.conversation == conversation))
}

/// What a write leaves: the answer's sequence number, and the mailboxes that grew (owner, last
/// sequence number).
type Written = (u64, Vec<(String, u64)>);

/// Everything a tombstone entry shares.
struct Stamp {
    /// The requester's account.
    by: String,
    /// The requesting device (peer id bytes).
    device: Vec<u8>,
    /// Now (unix ms).
    at: u64,
}

impl Stamp {
    fn entry(&self, owner: &str, conversation: &str, item: MailboxItem) -> MailboxEntry {
        MailboxEntry {
            seq: 0,
            conversation: conversation.to_owned(),
            from_user: self.by.clone(),
            from_device: self.device.clone(),
            outgoing: owner == self.by,
            stored_at: self.at,
            item,
        }
    }
}

/// Recalls message `id` in `holders` (the requester's among them) by the rules of the module
/// docs. Decides everything before it writes.
fn apply_recall(
    tx: &mut Tx,
    holders: Vec<Holder>,
    id: MessageId,
    author: &str,
    stamp: &Stamp,
    max_entries: u64,
) -> Result<Written, Refusal> {
    let me = holders
        .iter()
        .position(|h| h.owner == stamp.by)
        .ok_or_else(no_such_message)?;
    let holds_body = |h: &Holder| {
        h.copy
            .as_ref()
            .is_some_and(|c| matches!(c.item, MailboxItem::Message(_)))
    };
    let tombstone = MailboxItem::Recall {
        id,
        author: author.to_owned(),
    };
    if !holders.iter().any(holds_body) {
        // A repeat: every body is gone already.
        let mine = &holders[me];
        if let Some(copy) = mine.copy.as_ref().filter(|c| c.item == tombstone) {
            return Ok((copy.seq, Vec::new()));
        }
        check_room(tx, &mine.owner, max_entries)?;
        let entry = stamp.entry(&mine.owner, &mine.conversation, tombstone);
        let seq = tx.mailbox_append(&mine.owner, entry)?;
        return Ok((seq, vec![(mine.owner.clone(), seq)]));
    }
    let mut grown = Vec::new();
    let mut answer = 0;
    // The requester's own mailbox last, as for a deposit.
    let order = (0..holders.len())
        .filter(|&i| i != me)
        .chain(std::iter::once(me));
    for i in order {
        let holder = &holders[i];
        let body = holds_body(holder);
        if let Some(copy) = holder.copy.as_ref().filter(|_| body) {
            tx.mailbox_replace_item(&holder.owner, copy.seq, tombstone.clone())?;
        }
        if body || i == me {
            // Above the limit if need be: see the module docs.
            let entry = stamp.entry(&holder.owner, &holder.conversation, tombstone.clone());
            let seq = tx.mailbox_append(&holder.owner, entry)?;
            grown.push((holder.owner.clone(), seq));
            if i == me {
                answer = seq;
            }
        }
    }
    Ok((answer, grown))
}

impl Service {
    /// Recalls message `id` of `conversation` for everyone; see the module docs.
    pub(super) async fn recall(
        &self,
        device: PeerId,
        conversation: String,
        id: MessageId,
        author: String,
    ) -> Result<Outcome, Refusal> {
        let me = self.logged_in(device).await?;
        let conversation = Conversation::parse(
            &conversation,
            "recall through the bootstrap is for user: and group: conversations",
        )?;
        let author = normalize_username(&author).ok();
        let stamp = Stamp {
            by: me,
            device: device.to_bytes(),
            at: now_ms(),
        };
        let max_entries = self.mailbox_max_entries;
        let written = self
            .store
            .write_batched(move |tx| {
                // Everything is decided before anything is written (the transaction is shared).
                let me = stamp.by.as_str();
                let holders = match &conversation {
                    Conversation::User(other) => {
                        if author.as_deref() != Some(me) {
                            return Err(Refusal::new(
                                ErrorCode::NotAllowed,
                                "only its author can recall a message",
                            ));
                        }
                        let mine = copy_in(tx, me, me, &id, &conversation.address())?
                            .ok_or_else(no_such_message)?;
                        let mut holders = vec![Holder {
                            owner: me.to_owned(),
                            conversation: conversation.address(),
                            copy: Some(mine),
                        }];
                        if other != me {
                            let theirs = format!("user:{me}");
                            holders.push(Holder {
                                owner: other.clone(),
                                copy: copy_in(tx, other, me, &id, &theirs)?,
                                conversation: theirs,
                            });
                        }
                        holders
                    }
                    Conversation::Group(group) => {
                        let (record, role) = membership(tx, group, me)?;
                        if author.as_deref() != Some(me)
                            && !matches!(role, Role::Owner | Role::Admin)
                        {
                            return Err(Refusal::new(
                                ErrorCode::NotAllowed,
                                "only its author or the group's owner and admins can recall a \
                                 message",
                            ));
                        }
                        let author = author.as_deref().ok_or_else(no_such_message)?;
                        let address = conversation.address();
                        let mut owners: Vec<&str> =
                            record.members.iter().map(|m| m.user.as_str()).collect();
                        if !owners.contains(&author) {
                            owners.push(author);
                        }
                        let mut holders = Vec::with_capacity(owners.len());
                        for owner in owners {
                            holders.push(Holder {
                                owner: owner.to_owned(),
                                copy: copy_in(tx, owner, author, &id, &address)?,
                                conversation: address.clone(),
                            });
                        }
                        if holders.iter().all(|h| h.copy.is_none()) {
                            return Err(no_such_message());
                        }
                        holders
                    }
                };
                // The user: branch refused any author but the requester.
                let author = author.unwrap_or_else(|| stamp.by.clone());
                let written = apply_recall(tx, holders, id, &author, &stamp, max_entries)?;
                // A recalled message no longer keeps its file for anyone.
                let dropped = super::files::release_message(tx, &author, &id)?;
                Ok((written, dropped))
            })
            .await?;
        let ((seq, grown), dropped) = written;
        let mut outcome = deposited(seq, grown);
        outcome
            .effects
            .extend(dropped.map(|root| Effect::DropFile { root }));
        Ok(outcome)
    }

    /// Deletes message `id` of `conversation` from the requester's history on all its devices;
    /// see the module docs.
    pub(super) async fn delete_message(
        &self,
        device: PeerId,
        conversation: String,
        id: MessageId,
    ) -> Result<Outcome, Refusal> {
        let me = self.logged_in(device).await?;
        let conversation = Conversation::parse(
            &conversation,
            "deletion through the bootstrap is for user: and group: conversations",
        )?;
        // Who may have written it: the two parties of a direct conversation; in a group, whoever
        // the index says (a scan, so in a snapshot, not under the write lock).
        let authors = match &conversation {
            Conversation::User(other) => vec![other.clone(), me.clone()],
            Conversation::Group(_) => {
                let owner = me.clone();
                self.blocking(move |s| {
                    s.read(|tx| Ok::<_, Refusal>(tx.mailbox_authors_of(&owner, &id)?))
                })
                .await?
                .into_iter()
                .map(|(author, _)| author)
                .collect()
            }
        };
        let stamp = Stamp {
            by: me,
            device: device.to_bytes(),
            at: now_ms(),
        };
        let max_entries = self.mailbox_max_entries;
        let written = self
            .store
            .write_batched(move |tx| {
                // Everything is decided before anything is written (the transaction is shared).
                let me = stamp.by.as_str();
                let address = conversation.address();
                let mut copy = None;
                for author in &authors {
                    copy = copy_in(tx, me, author, &id, &address)?;
                    if copy.is_some() {
                        break;
                    }
                }
                let tombstone = MailboxItem::Delete { id };
                match copy {
                    Some(copy) if copy.item == tombstone => return Ok((copy.seq, Vec::new())),
                    // Its content (a message, or a recall's tombstone) leaves the history.
                    Some(copy) => {
                        tx.mailbox_replace_item(me, copy.seq, tombstone.clone())?;
                    }
                    None => check_room(tx, me, max_entries)?,
                }
                let seq = tx.mailbox_append(me, stamp.entry(me, &address, tombstone))?;
                Ok::<_, Refusal>((seq, vec![(me.to_owned(), seq)]))
            })
            .await?;
        let (seq, grown) = written;
        Ok(deposited(seq, grown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::tests::{PW, code, mailbox, mailbox_note, reg, service};
    use crate::store::STORE_FILE;
    use confab_protocol::ChatMessage;
    use confab_protocol::bootstrap::BootstrapResponse;
    use confab_protocol::bootstrap::{BootstrapRequest as R, ErrorCode as E, OfflineSummary};
    use confab_protocol::limits::MAX_SYNC_PAGE;

    fn recall(conversation: &str, id: MessageId, author: &str) -> R {
        R::Recall {
            conversation: conversation.into(),
            id,
            author: author.into(),
        }
    }

    fn delete(conversation: &str, id: MessageId) -> R {
        R::Delete {
            conversation: conversation.into(),
            id,
        }
    }

    fn deposit(to: &str, message: &ChatMessage) -> R {
        R::Deposit {
            to: to.into(),
            message: message.clone(),
        }
    }

    fn post(group: &str, message: &ChatMessage) -> R {
        R::GroupPost {
            group: group.into(),
            message: message.clone(),
        }
    }

    fn sync(after: u64) -> R {
        R::Sync {
            after,
            limit: MAX_SYNC_PAGE,
        }
    }

    fn entries(out: &Outcome) -> Vec<MailboxEntry> {
        match &out.response {
            BootstrapResponse::Mailbox { entries, .. } => entries.clone(),
            other => panic!("{other:?}"),
        }
    }

    fn seq_of(out: &Outcome) -> u64 {
        match out.response {
            BootstrapResponse::Deposited { seq } => seq,
            ref other => panic!("{other:?}"),
        }
    }

    /// Whether `text` appears anywhere in `owner`'s mailbox.
    fn mentions(s: &Service, owner: &str, text: &str) -> bool {
        mailbox(s, owner)
            .iter()
            .any(|e| format!("{e:?}").contains(text))
    }

    #[tokio::test]
    async fn a_direct_recall_drops_the_body_in_both_mailboxes_and_leaves_tombstones() {
        let (s, _dir, _) = service().await;
        let (alice, bob) = (PeerId::random(), PeerId::random());
        s.handle(alice, None, reg("alice", PW)).await;
        s.handle(bob, None, reg("bob", PW)).await;
        let secret = "meet me at the old mill at nine";
        let message = ChatMessage::text("alice", secret, 1);
        let id = message.id;
        assert_eq!(
            seq_of(&s.handle(alice, None, deposit("bob", &message)).await),
            1
        );
        // Bob's device syncs past it (and alice's mailbox gets the delivered receipt, seq 2).
        let got = entries(&s.handle(bob, None, sync(0)).await);
        assert_eq!(got.len(), 1);
        let original = got[0].clone();
        assert!(mentions(&s, "bob", secret) && mentions(&s, "alice", secret));

        // Refused: bob recalling alice's message, nonsense authors, unknown ids, other kinds of
        // conversation, and strangers.
        for (request, want) in [
            (recall("user:alice", id, "alice"), E::NotAllowed),
            (recall("user:alice", id, "not a name"), E::NotAllowed),
            (recall("user:alice", id, "bob"), E::NotFound),
        ] {
            let out = s.handle(bob, None, request).await;
            assert_eq!(code(&out), Some(want), "{out:?}");
        }
        for (request, want) in [
            (
                recall("user:bob", MessageId::random(), "alice"),
                E::NotFound,
            ),
            (recall("user:carol", id, "alice"), E::NotFound),
            (recall(&format!("peer:{bob}"), id, "alice"), E::Invalid),
            (recall("broadcast", id, "alice"), E::Invalid),
            (recall("garbage", id, "alice"), E::Invalid),
            (recall("group:nope", id, "alice"), E::Invalid),
        ] {
            let out = s.handle(alice, None, request).await;
            assert_eq!(code(&out), Some(want), "{out:?}");
            assert!(out.effects.is_empty());
        }
        assert_eq!(
            code(
                &s.handle(PeerId::random(), None, recall("user:bob", id, "alice"))
                    .await
            ),
            Some(E::NotLoggedIn)
        );
        assert_eq!(
            (mailbox(&s, "alice").len(), mailbox(&s, "bob").len()),
            (2, 1)
        );

        // Alice recalls it (names are normalised).
        let out = s.handle(alice, None, recall("user:Bob", id, "ALICE")).await;
        assert_eq!(out.response, BootstrapResponse::Deposited { seq: 3 });
        assert_eq!(
            out.effects,
            [mailbox_note("bob", 2), mailbox_note("alice", 3)]
        );
        let bobs = mailbox(&s, "bob");
        let tombstone = MailboxEntry {
            seq: 2,
            conversation: "user:alice".into(),
            from_user: "alice".into(),
            from_device: alice.to_bytes(),
            outgoing: false,
            stored_at: bobs[1].stored_at,
            item: MailboxItem::Recall {
                id,
                author: "alice".into(),
            },
        };
        assert_eq!(
            bobs,
            [
                MailboxEntry {
                    item: MailboxItem::Recall {
                        id,
                        author: "alice".into()
                    },
                    ..original.clone()
                },
                tombstone.clone(),
            ]
        );
        let alices = mailbox(&s, "alice");
        assert_eq!(alices.len(), 3);
        assert_eq!(
            (alices[0].seq, alices[0].outgoing, &alices[0].item),
            (
                1,
                true,
                &MailboxItem::Recall {
                    id,
                    author: "alice".into()
                }
            )
        );
        assert!(matches!(alices[1].item, MailboxItem::Receipt { .. }));
        assert_eq!(
            alices[2],
            MailboxEntry {
                seq: 3,
                conversation: "user:bob".into(),
                outgoing: true,
                ..tombstone.clone()
            }
        );
        assert!(!mentions(&s, "bob", secret) && !mentions(&s, "alice", secret));

        // Bob's device, synced past the original, learns it from the tombstone.
        assert_eq!(entries(&s.handle(bob, None, sync(1)).await), [tombstone]);
        // Recalled messages are no news.
        assert_eq!(
            s.handle(bob, None, R::Summary { after: 0 }).await.response,
            BootstrapResponse::Summary(OfflineSummary::default())
        );

        // Again: nothing is written, and the answer is alice's copy, which shows the recall.
        let out = s.handle(alice, None, recall("user:bob", id, "alice")).await;
        assert_eq!(out.response, BootstrapResponse::Deposited { seq: 1 });
        assert!(out.effects.is_empty());
        // A retried deposit of it does not bring the body back.
        let out = s.handle(alice, None, deposit("bob", &message)).await;
        assert_eq!(out.response, BootstrapResponse::Deposited { seq: 1 });
        assert_eq!(
            (mailbox(&s, "alice").len(), mailbox(&s, "bob").len()),
            (3, 2)
        );
        assert!(!mentions(&s, "bob", secret) && !mentions(&s, "alice", secret));
    }

    /// The body leaves the database file too, not only the live data. redb is copy-on-write:
    /// the pages that held it are freed at the recall's commit, and reused by later commits; this
    /// checks the file once a few more commits have gone by.
    #[tokio::test]
    async fn a_recalled_body_leaves_the_database_file() {
        let (s, dir, _) = service().await;
        let (alice, bob) = (PeerId::random(), PeerId::random());
        s.handle(alice, None, reg("alice", PW)).await;
        s.handle(bob, None, reg("bob", PW)).await;
        let secret = "zq-the-launch-code-is-4471-zq";
        let message = ChatMessage::text("alice", secret, 1);
        s.handle(alice, None, deposit("bob", &message)).await;
        let in_file = || {
            let bytes = std::fs::read(dir.path().join(STORE_FILE)).unwrap();
            bytes.windows(secret.len()).any(|w| w == secret.as_bytes())
        };
        assert!(in_file(), "the test looks for the right thing");
        let out = s
            .handle(alice, None, recall("user:bob", message.id, "alice"))
            .await;
        assert_eq!(seq_of(&out), 2);
        for i in 0..4 {
            let filler = ChatMessage::text("alice", format!("filler {i}"), 1);
            s.handle(alice, None, deposit("bob", &filler)).await;
        }
        assert!(!in_file(), "the recalled text is still in {STORE_FILE}");
    }

    #[tokio::test]
    async fn a_recall_reaches_full_mailboxes_once() {
        let (s, _dir, _) = service().await;
        let s = s.with_mailbox_limit(2);
        let (alice, bob) = (PeerId::random(), PeerId::random());
        s.handle(alice, None, reg("alice", PW)).await;
        s.handle(bob, None, reg("bob", PW)).await;
        let (m1, m2) = (
            ChatMessage::text("alice", "one", 1),
            ChatMessage::text("alice", "two", 1),
        );
        s.handle(alice, None, deposit("bob", &m1)).await;
        s.handle(alice, None, deposit("bob", &m2)).await;
        let out = s
            .handle(
                alice,
                None,
                deposit("bob", &ChatMessage::text("alice", "x", 1)),
            )
            .await;
        assert_eq!(code(&out), Some(E::MailboxFull), "both are full");

        let out = s
            .handle(alice, None, recall("user:bob", m1.id, "alice"))
            .await;
        assert_eq!(out.response, BootstrapResponse::Deposited { seq: 3 });
        assert_eq!(
            out.effects,
            [mailbox_note("bob", 3), mailbox_note("alice", 3)]
        );
        assert_eq!(
            mailbox(&s, "bob")[2].item,
            MailboxItem::Recall {
                id: m1.id,
                author: "alice".into()
            }
        );
        // A repeat adds nothing; the other message is recalled above the limit too.
        let out = s
            .handle(alice, None, recall("user:bob", m1.id, "alice"))
            .await;
        assert_eq!(out.response, BootstrapResponse::Deposited { seq: 1 });
        let out = s
            .handle(alice, None, recall("user:bob", m2.id, "alice"))
            .await;
        assert_eq!(out.response, BootstrapResponse::Deposited { seq: 4 });
        assert_eq!(
            (mailbox(&s, "alice").len(), mailbox(&s, "bob").len()),
            (4, 4)
        );
        // A delete that drops nothing is held to the limit.
        let out = s
            .handle(bob, None, delete("user:alice", MessageId::random()))
            .await;
        assert_eq!(code(&out), Some(E::MailboxFull));
        assert!(out.effects.is_empty());
    }

    #[tokio::test]
    async fn group_posts_are_recalled_by_their_author_or_the_owner_and_admins() {
        let (s, _dir, _) = service().await;
        let [ann, ben, cal, dee] = [(); 4].map(|_| PeerId::random());
        for (device, user) in [(ann, "ann"), (ben, "ben"), (cal, "cal"), (dee, "dee")] {
            s.handle(device, None, reg(user, PW)).await;
        }
        let create = R::GroupCreate {
            name: "team".into(),
            members: vec!["ben".into(), "cal".into()],
        };
        let BootstrapResponse::Group(roster) = s.handle(ann, None, create).await.response else {
            panic!()
        };
        let g = roster.group;
        let conversation = format!("group:{g}");
        let promote = R::GroupSetRole {
            group: g.clone(),
            user: "ben".into(),
            role: Role::Admin,
        };
        s.handle(ann, None, promote).await;
        let secret = "ann's plan for the offsite";
        let message = ChatMessage::text("ann", secret, 1);
        let id = message.id;
        assert_eq!(seq_of(&s.handle(ann, None, post(&g, &message)).await), 1);
        let originals: Vec<MailboxEntry> = ["ann", "ben", "cal"]
            .iter()
            .map(|u| mailbox(&s, u).pop().unwrap())
            .collect();
        // Dee joins after the post: she has no copy.
        let invite = R::GroupInvite {
            group: g.clone(),
            user: "dee".into(),
        };
        s.handle(ann, None, invite).await;

        // Cal, a plain member, may not recall ann's post; an outsider finds no group; unknown ids
        // and authors are not found.
        let out = s.handle(cal, None, recall(&conversation, id, "ann")).await;
        assert_eq!(code(&out), Some(E::NotAllowed));
        let eve = PeerId::random();
        s.handle(eve, None, reg("eve", PW)).await;
        let out = s.handle(eve, None, recall(&conversation, id, "ann")).await;
        assert_eq!(code(&out), Some(E::NotFound));
        for (request, want) in [
            (
                recall(&conversation, MessageId::random(), "ann"),
                E::NotFound,
            ),
            (recall(&conversation, id, "cal"), E::NotFound),
            (recall(&conversation, id, "not a name"), E::NotFound),
            (
                recall(&format!("group:{}", "0".repeat(32)), id, "ann"),
                E::NotFound,
            ),
        ] {
            let out = s.handle(ben, None, request).await;
            assert_eq!(code(&out), Some(want), "{out:?}");
        }
        assert!(
            ["ann", "ben", "cal"]
                .iter()
                .all(|u| mentions(&s, u, secret))
        );

        // Ben, an admin, recalls it: every copy is a tombstone now, and every member who had one
        // gets a tombstone from ben (his own marked outgoing); dee gets nothing.
        let out = s.handle(ben, None, recall(&conversation, id, "ann")).await;
        assert_eq!(out.response, BootstrapResponse::Deposited { seq: 2 });
        assert_eq!(
            out.effects,
            [
                mailbox_note("ann", 2),
                mailbox_note("cal", 2),
                mailbox_note("ben", 2)
            ]
        );
        for (user, original) in ["ann", "ben", "cal"].iter().zip(originals) {
            let got = mailbox(&s, user);
            assert_eq!(
                got,
                [
                    MailboxEntry {
                        item: MailboxItem::Recall {
                            id,
                            author: "ann".into()
                        },
                        ..original
                    },
                    MailboxEntry {
                        seq: 2,
                        conversation: conversation.clone(),
                        from_user: "ben".into(),
                        from_device: ben.to_bytes(),
                        outgoing: *user == "ben",
                        stored_at: got[1].stored_at,
                        item: MailboxItem::Recall {
                            id,
                            author: "ann".into()
                        },
                    }
                ],
                "{user}"
            );
            assert!(!mentions(&s, user, secret));
        }
        assert!(mailbox(&s, "dee").is_empty());

        // Cal posts and is removed: no member now, he may not recall his post, but the owner may,
        // and cal's copy goes too, as the author's; dee, a member when cal posted, had one.
        let mine = ChatMessage::text("cal", "cal's post", 1);
        s.handle(cal, None, post(&g, &mine)).await;
        let remove = R::GroupRemove {
            group: g.clone(),
            user: "cal".into(),
        };
        s.handle(ann, None, remove).await;
        let out = s
            .handle(cal, None, recall(&conversation, mine.id, "cal"))
            .await;
        assert_eq!(code(&out), Some(E::NotFound));
        let out = s
            .handle(ann, None, recall(&conversation, mine.id, "cal"))
            .await;
        assert!(
            matches!(out.response, BootstrapResponse::Deposited { .. }),
            "{out:?}"
        );
        for user in ["ann", "ben", "cal", "dee"] {
            assert!(!mentions(&s, user, "cal's post"), "{user}");
            let recalled = mailbox(&s, user)
                .into_iter()
                .filter(|e| {
                    e.item
                        == MailboxItem::Recall {
                            id: mine.id,
                            author: "cal".into(),
                        }
                })
                .count();
            assert_eq!(recalled, 2, "{user}: the copy and the tombstone");
        }
        let cals = mailbox(&s, "cal");
        let last = cals.last().unwrap();
        assert_eq!((last.from_user.as_str(), last.outgoing), ("ann", false));
    }

    #[tokio::test]
    async fn a_delete_changes_only_the_requesters_mailbox() {
        let (s, _dir, _) = service().await;
        let (alice, bob) = (PeerId::random(), PeerId::random());
        s.handle(alice, None, reg("alice", PW)).await;
        s.handle(bob, None, reg("bob", PW)).await;
        let message = ChatMessage::text("alice", "delete me", 1);
        let id = message.id;
        s.handle(alice, None, deposit("bob", &message)).await;
        let original = mailbox(&s, "bob").pop().unwrap();
        let alices = mailbox(&s, "alice");

        for conversation in [&format!("peer:{alice}"), "broadcast", "nonsense"] {
            let out = s.handle(bob, None, delete(conversation, id)).await;
            assert_eq!(code(&out), Some(E::Invalid), "{conversation}");
        }
        let out = s.handle(bob, None, delete("user:ALICE", id)).await;
        assert_eq!(out.response, BootstrapResponse::Deposited { seq: 2 });
        assert_eq!(out.effects, [mailbox_note("bob", 2)]);
        let bobs = mailbox(&s, "bob");
        assert_eq!(
            bobs,
            [
                MailboxEntry {
                    item: MailboxItem::Delete { id },
                    ..original.clone()
                },
                MailboxEntry {
                    seq: 2,
                    conversation: "user:alice".into(),
                    from_user: "bob".into(),
                    from_device: bob.to_bytes(),
                    outgoing: true,
                    stored_at: bobs[1].stored_at,
                    item: MailboxItem::Delete { id },
                }
            ]
        );
        assert!(!mentions(&s, "bob", "delete me"));
        assert_eq!(mailbox(&s, "alice"), alices, "alice's copy is untouched");

        // Again: nothing new. Unknown ids are accepted (devices may keep what expired here).
        let out = s.handle(bob, None, delete("user:alice", id)).await;
        assert_eq!(out.response, BootstrapResponse::Deposited { seq: 1 });
        assert!(out.effects.is_empty());
        let out = s
            .handle(bob, None, delete("user:alice", MessageId::random()))
            .await;
        assert_eq!(out.response, BootstrapResponse::Deposited { seq: 3 });

        // Alice can still recall it; bob, who deleted his copy, needs no tombstone.
        let bobs = mailbox(&s, "bob");
        let out = s.handle(alice, None, recall("user:bob", id, "alice")).await;
        assert_eq!(out.response, BootstrapResponse::Deposited { seq: 2 });
        assert_eq!(out.effects, [mailbox_note("alice", 2)]);
        assert_eq!(mailbox(&s, "bob"), bobs);

        // In a group, the copy is found whoever wrote it; only the deleter's mailbox changes.
        let create = R::GroupCreate {
            name: "pair".into(),
            members: vec!["bob".into()],
        };
        let BootstrapResponse::Group(roster) = s.handle(alice, None, create).await.response else {
            panic!()
        };
        let post_message = ChatMessage::text("alice", "group words", 1);
        s.handle(alice, None, post(&roster.group, &post_message))
            .await;
        let alices = mailbox(&s, "alice");
        let conversation = format!("group:{}", roster.group);
        let out = s
            .handle(bob, None, delete(&conversation, post_message.id))
            .await;
        assert_eq!(out.effects, [mailbox_note("bob", 5)]);
        assert!(!mentions(&s, "bob", "group words"));
        assert_eq!(mailbox(&s, "alice"), alices);
    }
}
