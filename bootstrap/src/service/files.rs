//! Store-and-forward of files: the bootstrap keeps a message's attachment for receivers who are
//! offline when it is sent, so they can fetch it later even if the author's devices are gone.
//!
//! - The author asks (`FileHold { conversation, id, root, size }`) before depositing the message.
//!   If every receiver has a device online the file goes peer to peer and nothing is held
//!   ([`HoldState::NotNeeded`]). Otherwise a hold is recorded for the file's root, charged to
//!   the author's quota ([`FileLimits::quota`], refused with `QuotaExceeded`; a file over
//!   [`FileLimits::max_size`] with `TooLarge`), and the event loop pulls the file over
//!   `/confab/file/1` from the author's online devices, verifying every chunk
//!   ([`Effect::PullFile`]); when it has all of it ([`Service::file_pulled`]) the author's devices
//!   get [`Notification::FileHeld`]. A pull that stops (the author left) resumes when a device
//!   of the author logs in again.
//! - The same file in several messages (or conversations) is one hold with one reference per
//!   message, charged once, to the first author.
//! - Who may fetch a held file: its owner, the authors of messages carrying it, and the
//!   receivers still waiting for it ([`HoldRecord::allows`]); only complete holds are served.
//! - A hold ends, and its bytes are deleted ([`Effect::DropFile`]), when every receiver of every
//!   message carrying it reported having it (`FileReceived`), when those messages are recalled,
//!   or when its retention ([`FileLimits::retention`]) ends, whoever still waits.

use std::time::Duration;

use confab_protocol::bootstrap::{
    BootstrapResponse, ErrorCode, HoldState, Notification, normalize_username,
};
use confab_protocol::{ContentHash, MessageId};
use libp2p::PeerId;

use super::groups::membership;
use super::settings::user_address;
use super::{Effect, Outcome, Refusal, Service, not_accepted, now_ms, unknown_user};
use crate::store::{HoldRecord, HoldRef, Tx};

/// Messages one held file may be referenced by at most (the record stays small).
pub const MAX_HOLD_REFS: usize = 256;
/// Holds scanned at most when resuming pulls or expiring (per pass).
pub const MAX_HOLD_SCAN: usize = 100_000;

/// What the bootstrap keeps for offline receivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimits {
    /// The largest file held, in bytes.
    pub max_size: u64,
    /// Bytes of held files one account may be charged for at once.
    pub quota: u64,
    /// How long a file is held at most.
    pub retention: Duration,
}

impl Default for FileLimits {
    fn default() -> Self {
        use crate::config::limits::{FILE_MAX_SIZE, FILE_QUOTA, FILE_RETENTION};
        Self {
            max_size: FILE_MAX_SIZE,
            quota: FILE_QUOTA,
            retention: FILE_RETENTION,
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The state a hold answers with.
fn state_of(hold: &HoldRecord) -> HoldState {
    if hold.complete {
        HoldState::Held
    } else {
        HoldState::Pulling
    }
}

/// Takes `user` off every reference's waiting list of `hold` (and the references nobody waits for
/// any more out); true if the hold still has a reference.
fn release(hold: &mut HoldRecord, user: &str) -> bool {
    for r in &mut hold.refs {
        r.waiting.retain(|w| w != user);
    }
    hold.refs.retain(|r| !r.waiting.is_empty());
    !hold.refs.is_empty()
}

/// Stores `hold` as changed from `before`, or deletes it (and gives its owner's quota back) when
/// no reference is left; returns the root to drop from the blob store if it was deleted.
fn store_or_end(
    tx: &mut Tx,
    root: &ContentHash,
    before: &HoldRecord,
    hold: &HoldRecord,
) -> Result<Option<ContentHash>, Refusal> {
    if hold.refs.is_empty() {
        tx.remove_hold(root)?;
        tx.add_hold_usage(&hold.owner, -i128::from(hold.size))?;
        Ok(Some(*root))
    } else {
        tx.put_hold(root, Some(before), hold)?;
        Ok(None)
    }
}

/// A recalled message no longer keeps its file: its reference goes, and with the last one the
/// hold. Returns the root to drop from the blob store, if the hold ended. Called inside the
/// recall's transaction.
pub(super) fn release_message(
    tx: &mut Tx,
    author: &str,
    id: &MessageId,
) -> Result<Option<ContentHash>, Refusal> {
    let Some(root) = tx.hold_of_message(author, id)? else {
        return Ok(None);
    };
    let Some(before) = tx.hold(&root)? else {
        return Ok(None);
    };
    let mut hold = before.clone();
    hold.refs.retain(|r| !(r.author == author && r.id == *id));
    store_or_end(tx, &root, &before, &hold)
}

impl Service {
    /// The same service with other limits on held files.
    pub fn with_file_limits(mut self, limits: FileLimits) -> Self {
        self.file_limits = limits;
        self
    }

    /// `FileHold`: see the module docs.
    pub(super) async fn file_hold(
        &self,
        device: PeerId,
        conversation: String,
        id: MessageId,
        root: ContentHash,
        size: u64,
    ) -> Result<Outcome, Refusal> {
        let me = self.logged_in(device).await?;
        let limits = self.file_limits;
        let presence = self.presence.clone();
        let author = me.clone();
        let (state, pull) = self
            .store
            .write_batched(move |tx| {
                if let Some(held) = tx.hold_of_message(&author, &id)? {
                    if held != root {
                        return Err(Refusal::new(
                            ErrorCode::Invalid,
                            "this message holds another file",
                        ));
                    }
                    let hold = tx.hold(&root)?.ok_or_else(|| {
                        Refusal::new(ErrorCode::Internal, "a hold index without its hold")
                    })?;
                    return Ok((state_of(&hold), !hold.complete));
                }
                let receivers = receivers_of(tx, &author, &conversation)?;
                if receivers.iter().all(|r| presence.is_online(r)) {
                    return Ok::<_, Refusal>((HoldState::NotNeeded, false));
                }
                if size > limits.max_size {
                    return Err(Refusal::new(
                        ErrorCode::TooLarge,
                        format!(
                            "this server keeps files up to {} for offline receivers; this one is {}",
                            mib(limits.max_size),
                            mib(size)
                        ),
                    ));
                }
                let new_ref = HoldRef {
                    author: author.clone(),
                    id,
                    waiting: receivers,
                };
                let now = now_ms();
                match tx.hold(&root)? {
                    Some(before) => {
                        if before.size != size {
                            return Err(Refusal::new(
                                ErrorCode::Invalid,
                                "the size does not match the file's",
                            ));
                        }
                        if before.refs.len() >= MAX_HOLD_REFS {
                            return Err(Refusal::new(
                                ErrorCode::TooLarge,
                                format!("this file is held for {MAX_HOLD_REFS} messages already"),
                            ));
                        }
                        let mut hold = before.clone();
                        hold.refs.push(new_ref);
                        tx.put_hold(&root, Some(&before), &hold)?;
                        Ok((state_of(&hold), !hold.complete))
                    }
                    None => {
                        let used = tx.hold_usage(&author)?;
                        if used.saturating_add(size) > limits.quota {
                            return Err(Refusal::new(
                                ErrorCode::QuotaExceeded,
                                format!(
                                    "your files on this server take {} of your {} quota; this \
                                     one needs {} more",
                                    mib(used),
                                    mib(limits.quota),
                                    mib(size)
                                ),
                            ));
                        }
                        let retention = u64::try_from(limits.retention.as_millis()).unwrap_or(u64::MAX);
                        let hold = HoldRecord {
                            size,
                            owner: author.clone(),
                            complete: false,
                            created_at: now,
                            expires_at: now.saturating_add(retention),
                            refs: vec![new_ref],
                        };
                        tx.put_hold(&root, None, &hold)?;
                        tx.add_hold_usage(&author, i128::from(size))?;
                        Ok((HoldState::Pulling, true))
                    }
                }
            })
            .await?;
        let effects = if pull {
            vec![Effect::PullFile {
                root,
                size,
                from: me,
            }]
        } else {
            Vec::new()
        };
        Ok(Outcome {
            response: BootstrapResponse::FileHold { state },
            effects,
        })
    }

    /// `FileReceived`: `device`'s account has `root`; it no longer waits for it.
    pub(super) async fn file_received(
        &self,
        device: PeerId,
        root: ContentHash,
    ) -> Result<Outcome, Refusal> {
        let me = self.logged_in(device).await?;
        let dropped = self
            .store
            .write_batched(move |tx| {
                let Some(before) = tx.hold(&root)? else {
                    return Ok::<_, Refusal>(None);
                };
                let mut hold = before.clone();
                release(&mut hold, &me);
                if hold == before {
                    return Ok(None);
                }
                store_or_end(tx, &root, &before, &hold)
            })
            .await?;
        Ok(Outcome {
            response: BootstrapResponse::Done,
            effects: dropped
                .map(|root| Effect::DropFile { root })
                .into_iter()
                .collect(),
        })
    }

    /// The event loop has all of `root` in the blob store: the hold is complete, and its owner's
    /// devices are told. If the hold ended meanwhile, the bytes are to be dropped.
    pub async fn file_pulled(&self, root: ContentHash) -> Result<Vec<Effect>, Refusal> {
        self.store
            .write_batched(move |tx| {
                let Some(before) = tx.hold(&root)? else {
                    return Ok::<_, Refusal>(vec![Effect::DropFile { root }]);
                };
                let mut hold = before.clone();
                hold.complete = true;
                tx.put_hold(&root, Some(&before), &hold)?;
                let mut authors: Vec<String> = hold.refs.iter().map(|r| r.author.clone()).collect();
                authors.push(hold.owner.clone());
                authors.sort();
                authors.dedup();
                Ok(authors
                    .into_iter()
                    .map(|user| Effect::Notify {
                        user,
                        note: Notification::FileHeld { root },
                    })
                    .collect())
            })
            .await
    }

    /// The holds still being pulled whose owner is `user` (to resume when one of its devices is
    /// back): `(root, size)` each.
    pub async fn pulls_of(&self, user: String) -> Result<Vec<(ContentHash, u64)>, Refusal> {
        self.blocking(move |s| {
            s.read(|tx| tx.holds(MAX_HOLD_SCAN))
                .map_err(Refusal::from)
                .map(|holds| {
                    holds
                        .into_iter()
                        .filter(|(_, h)| !h.complete && h.owner == user)
                        .map(|(root, h)| (root, h.size))
                        .collect()
                })
        })
        .await
    }

    /// Every hold still being pulled: `(root, size, accounts whose devices may have it)` (the
    /// owner first, then the other authors), for the periodic retry.
    pub async fn pending_pulls(&self) -> Result<Vec<(ContentHash, u64, Vec<String>)>, Refusal> {
        self.blocking(move |s| {
            s.read(|tx| tx.holds(MAX_HOLD_SCAN))
                .map_err(Refusal::from)
                .map(|holds| {
                    holds
                        .into_iter()
                        .filter(|(_, h)| !h.complete)
                        .map(|(root, h)| {
                            let mut from = vec![h.owner.clone()];
                            for r in &h.refs {
                                if !from.contains(&r.author) {
                                    from.push(r.author.clone());
                                }
                            }
                            (root, h.size, from)
                        })
                        .collect()
                })
        })
        .await
    }

    /// Whether `device`'s account may fetch `root` from this server now (a complete hold that
    /// allows it). Blocking: call it off the event loop.
    pub fn may_fetch_blocking(&self, device: &PeerId, root: &ContentHash) -> bool {
        let Some(user) = self.presence.user_of(device) else {
            return false;
        };
        match self.store.read(|tx| tx.hold(root)) {
            Ok(Some(hold)) => hold.complete && hold.allows(&user),
            Ok(None) => false,
            Err(e) => {
                tracing::error!("hold lookup: {e}");
                false
            }
        }
    }

    /// Deletes the holds whose retention ended before `now` (unix ms); returns their roots, for
    /// the blob store. Blocking.
    pub fn expire_holds_blocking(&self, now: u64) -> Result<Vec<ContentHash>, Refusal> {
        self.store.write(|tx| {
            let mut dropped = Vec::new();
            for (root, hold) in tx.holds(MAX_HOLD_SCAN)? {
                if hold.expires_at <= now {
                    tx.remove_hold(&root)?;
                    tx.add_hold_usage(&hold.owner, -i128::from(hold.size))?;
                    dropped.push(root);
                }
            }
            Ok(dropped)
        })
    }
}

/// The accounts a message to `conversation` from `author` is for: `user:x` → x (who must exist
/// and not block the author), `group:g` → the other members (the author must be one).
fn receivers_of(tx: &Tx, author: &str, conversation: &str) -> Result<Vec<String>, Refusal> {
    if let Some(user) = conversation.strip_prefix("user:") {
        let user = normalize_username(user).map_err(|_| unknown_user(user))?;
        if tx.user(&user)?.is_none() {
            return Err(unknown_user(&user));
        }
        if user != author && tx.blocks(&user, &user_address(author))? {
            return Err(not_accepted(&user, "messages"));
        }
        return Ok(if user == author {
            Vec::new()
        } else {
            vec![user]
        });
    }
    if let Some(group) = conversation.strip_prefix("group:") {
        let (record, _) = membership(tx, group, author)?;
        return Ok(record
            .members
            .iter()
            .filter(|m| m.user != author)
            .map(|m| m.user.clone())
            .collect());
    }
    Err(Refusal::new(
        ErrorCode::Invalid,
        "files are held for user: and group: conversations only",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::tests::{PW, code, reg, service};
    use confab_protocol::ChatMessage;
    use confab_protocol::bootstrap::{BootstrapRequest as R, ErrorCode as E};

    fn hold(conversation: &str, id: MessageId, root: ContentHash, size: u64) -> R {
        R::FileHold {
            conversation: conversation.into(),
            id,
            root,
            size,
        }
    }

    fn answer(out: &Outcome) -> HoldState {
        match out.response {
            BootstrapResponse::FileHold { state } => state,
            ref other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn files_are_held_for_offline_receivers_within_limits_until_received() {
        let (s, _dir, _key) = service().await;
        let s = s.with_file_limits(FileLimits {
            max_size: 1000,
            quota: 1500,
            retention: Duration::from_secs(3600),
        });
        let (ann, ben, cal) = (PeerId::random(), PeerId::random(), PeerId::random());
        for (device, user) in [(ann, "ann"), (ben, "ben"), (cal, "cal")] {
            s.handle(device, None, reg(user, PW)).await;
        }
        s.presence.device_online(ben, "ben");
        let usage = |user: &str| s.store.read(|tx| tx.hold_usage(user)).unwrap();
        let r1 = ContentHash([1; 32]);

        // Ben is online: nothing is held for him.
        let out = s
            .handle(ann, None, hold("user:ben", MessageId::random(), r1, 600))
            .await;
        assert_eq!((answer(&out), out.effects.len()), (HoldState::NotNeeded, 0));

        // Cal is offline: held, charged to ann, pulled from her devices; asking again is the
        // same answer and no second charge.
        let m1 = MessageId::random();
        let out = s.handle(ann, None, hold("user:Cal", m1, r1, 600)).await;
        assert_eq!(answer(&out), HoldState::Pulling);
        let pull = Effect::PullFile {
            root: r1,
            size: 600,
            from: "ann".into(),
        };
        assert_eq!(out.effects, std::slice::from_ref(&pull));
        let again = s.handle(ann, None, hold("user:cal", m1, r1, 600)).await;
        assert_eq!(
            (answer(&again), again.effects),
            (HoldState::Pulling, vec![pull])
        );
        assert_eq!(usage("ann"), 600);
        // The same file in another message is the same hold, charged once.
        let m2 = MessageId::random();
        let out = s.handle(ann, None, hold("user:cal", m2, r1, 600)).await;
        assert_eq!(answer(&out), HoldState::Pulling);
        assert_eq!(usage("ann"), 600);

        // Limits, clearly refused: the size limit, then the quota.
        let r2 = ContentHash([2; 32]);
        let out = s
            .handle(ann, None, hold("user:cal", MessageId::random(), r2, 1001))
            .await;
        assert_eq!(code(&out), Some(E::TooLarge), "{out:?}");
        let out = s
            .handle(ann, None, hold("user:cal", MessageId::random(), r2, 1000))
            .await;
        assert_eq!(code(&out), Some(E::QuotaExceeded), "{out:?}");
        assert!(format!("{:?}", out.response).contains("quota"));
        // Bad requests: a stranger, an unknown user, a group ann is not in, another kind of
        // conversation, another file for the same message, a wrong size for a known file.
        for (device, request, want) in [
            (
                PeerId::random(),
                hold("user:cal", MessageId::random(), r2, 1),
                E::NotLoggedIn,
            ),
            (
                ann,
                hold("user:nobody", MessageId::random(), r2, 1),
                E::UnknownUser,
            ),
            (
                ann,
                hold("group:nope", MessageId::random(), r2, 1),
                E::NotFound,
            ),
            (
                ann,
                hold("broadcast", MessageId::random(), r2, 1),
                E::Invalid,
            ),
            (ann, hold("user:cal", m1, r2, 1), E::Invalid),
            (
                ann,
                hold("user:cal", MessageId::random(), r1, 5),
                E::Invalid,
            ),
        ] {
            let out = s.handle(device, None, request).await;
            assert_eq!(code(&out), Some(want), "{out:?}");
        }

        // Pending, to be retried from ann's devices; done once pulled (checked below).
        let pending = s.pending_pulls().await.unwrap();
        assert_eq!(pending, [(r1, 600, vec!["ann".to_owned()])]);
        // Not served before it is complete; then to its receiver and author only.
        s.presence.device_online(cal, "cal");
        s.presence.device_online(ann, "ann");
        assert!(!s.may_fetch_blocking(&cal, &r1));
        let effects = s.file_pulled(r1).await.unwrap();
        assert_eq!(
            effects,
            [Effect::Notify {
                user: "ann".into(),
                note: Notification::FileHeld { root: r1 },
            }]
        );
        assert!(s.may_fetch_blocking(&cal, &r1) && s.may_fetch_blocking(&ann, &r1));
        assert!(s.pending_pulls().await.unwrap().is_empty());
        assert!(
            !s.may_fetch_blocking(&ben, &r1),
            "ben was online: not a receiver"
        );
        let again = s.handle(ann, None, hold("user:cal", m1, r1, 600)).await;
        assert_eq!((answer(&again), again.effects.len()), (HoldState::Held, 0));

        // A report from someone not waiting changes nothing; cal's ends both messages' waits,
        // so the hold ends: its bytes go and ann's quota comes back.
        let out = s.handle(ben, None, R::FileReceived { root: r1 }).await;
        assert_eq!(
            (out.response, out.effects.len()),
            (BootstrapResponse::Done, 0)
        );
        let out = s.handle(cal, None, R::FileReceived { root: r1 }).await;
        assert_eq!(out.effects, [Effect::DropFile { root: r1 }]);
        assert_eq!(usage("ann"), 0);
        assert!(!s.may_fetch_blocking(&cal, &r1));
        assert_eq!(
            s.store.read(|tx| tx.hold_of_message("ann", &m2)).unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn recalls_and_retention_end_holds() {
        let (s, _dir, _key) = service().await;
        let (ann, cal) = (PeerId::random(), PeerId::random());
        for (device, user) in [(ann, "ann"), (cal, "cal")] {
            s.handle(device, None, reg(user, PW)).await;
        }
        let usage = |user: &str| s.store.read(|tx| tx.hold_usage(user)).unwrap();
        // A group: cal (offline) is a member, so a file posted there is held for cal.
        let out = s
            .handle(
                ann,
                None,
                R::GroupCreate {
                    name: "g".into(),
                    members: vec!["cal".into()],
                },
            )
            .await;
        let BootstrapResponse::Group(roster) = out.response else {
            panic!("{out:?}")
        };
        let group = format!("group:{}", roster.group);
        let (r1, r2) = (ContentHash([1; 32]), ContentHash([2; 32]));
        let mut message = ChatMessage::text("ann", "a file", 1);
        let out = s.handle(ann, None, hold(&group, message.id, r1, 10)).await;
        assert_eq!(answer(&out), HoldState::Pulling);
        let post = R::GroupPost {
            group: roster.group.to_string(),
            message: message.clone(),
        };
        assert!(matches!(
            s.handle(ann, None, post).await.response,
            BootstrapResponse::Deposited { .. }
        ));
        // Recalled: the hold ends at once.
        let out = s
            .handle(
                ann,
                None,
                R::Recall {
                    conversation: group.clone(),
                    id: message.id,
                    author: "ann".into(),
                },
            )
            .await;
        assert!(
            out.effects.contains(&Effect::DropFile { root: r1 }),
            "{out:?}"
        );
        assert_eq!(usage("ann"), 0);

        // Retention: a hold past its time is deleted whoever still waits.
        message.id = MessageId::random();
        let out = s
            .handle(ann, None, hold("user:cal", message.id, r2, 20))
            .await;
        assert_eq!(answer(&out), HoldState::Pulling);
        assert_eq!(usage("ann"), 20);
        assert_eq!(s.expire_holds_blocking(now_ms()).unwrap(), []);
        let later = now_ms() + 15 * 24 * 3600 * 1000;
        assert_eq!(s.expire_holds_blocking(later).unwrap(), [r2]);
        assert_eq!(usage("ann"), 0);
        assert_eq!(s.store.read(|tx| tx.hold(&r2)).unwrap(), None);
    }
}
