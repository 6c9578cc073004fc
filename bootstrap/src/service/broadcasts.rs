//! Broadcasts as part of history: the bootstrap keeps the recent broadcasts it relays, and hands
//! them to logged-in devices (`Broadcasts { after, limit }`) so that a device that was away, or is
//! new, has them too.
//!
//! - Who may broadcast, the rate per author and certificate checks are decided by
//!   [`BroadcastGate::judge`] ([`gate`], sans-IO, with the per-author token buckets of [`rate`]).
//! - What the gate lets through is written by [`Service::apply_broadcast_writes`], in arrival
//!   order, many at a time in one group-committed transaction: a broadcast is kept once per
//!   (device, message id) with the next number of the server's broadcast log; a recall deletes the
//!   kept broadcasts with its id whose author it is ([`recalls`]: the same account by certificate,
//!   or, for a recall without one, the same device, as a node applies a broadcast recall).
//! - The log is a window ([`BroadcastWindow`]): the newest `max_entries` of the last `retention`,
//!   trimmed after every batch of appends and by the hourly expiry.
//! - `Broadcasts` pages are as mailbox pages: after a number, oldest first, at most
//!   [`MAX_SYNC_PAGE`] entries and [`SYNC_PAGE_BYTES`], with the last number assigned (numbers
//!   are never reused; expired and recalled entries leave gaps).

pub mod gate;
pub mod rate;

use std::time::Duration;

use confab_protocol::bootstrap::{BootstrapResponse, BroadcastEntry};
use confab_protocol::limits::{MAX_SYNC_PAGE, SYNC_PAGE_BYTES};
use confab_protocol::{ChatMessage, MessageId};
use libp2p::PeerId;

use super::{Outcome, Refusal, Service, now_ms};
use crate::config::limits::{BROADCAST_EXPIRY_BATCH, BROADCAST_RETENTION, MAX_BROADCAST_ENTRIES};
use crate::store::{Appended, StoreError, Tx};
pub use gate::{Author, BroadcastGate, Verdict};

/// Which kept broadcasts stay: the newest `max_entries`, none older than `retention`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BroadcastWindow {
    /// Kept at most.
    pub max_entries: u64,
    /// Kept at most this long.
    pub retention: Duration,
}

impl Default for BroadcastWindow {
    fn default() -> Self {
        Self {
            max_entries: MAX_BROADCAST_ENTRIES,
            retention: BROADCAST_RETENTION,
        }
    }
}

impl BroadcastWindow {
    /// Deletes what fell out of the window at `now_ms` (unix ms), at most
    /// [`BROADCAST_EXPIRY_BATCH`] entries; returns how many went.
    pub fn expire(&self, tx: &mut Tx, now_ms: u64) -> Result<usize, StoreError> {
        let retention_ms = u64::try_from(self.retention.as_millis()).unwrap_or(u64::MAX);
        tx.broadcast_expire(
            now_ms.saturating_sub(retention_ms),
            self.max_entries,
            BROADCAST_EXPIRY_BATCH,
        )
    }
}

/// A write the gate let through, for [`Service::apply_broadcast_writes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BroadcastWrite {
    /// Keep `message`, published by `source`.
    Keep {
        /// The publishing device.
        source: PeerId,
        /// The broadcast.
        message: ChatMessage,
    },
    /// Delete the kept broadcasts `id` of `by`.
    Recall {
        /// Whose.
        by: Author,
        /// Which.
        id: MessageId,
    },
}

/// What one batch of writes did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Broadcasts newly kept, with their numbers.
    pub kept: Vec<u64>,
    /// Broadcasts that were kept already (the same device and id).
    pub duplicates: usize,
    /// Kept broadcasts deleted by recalls.
    pub recalled: usize,
    /// Kept broadcasts that fell out of the window.
    pub expired: usize,
}

/// Whether a recall by `by` takes `entry`: by a certified account, the broadcasts certified for
/// that account (from any of its devices); by a bare device, the broadcasts it published itself.
pub fn recalls(by: &Author, entry: &BroadcastEntry) -> bool {
    match by {
        Author::User(user) => entry
            .message
            .author_cert
            .as_ref()
            .is_some_and(|cert| cert.user == *user),
        Author::Device(device) => entry.from_device == device.to_bytes(),
    }
}

impl Service {
    /// The same service with another broadcast window.
    pub fn with_broadcast_window(mut self, window: BroadcastWindow) -> Self {
        self.broadcast_window = window;
        self
    }

    /// The window of kept broadcasts.
    pub fn broadcast_window(&self) -> BroadcastWindow {
        self.broadcast_window
    }

    /// Carries out `writes` in order in one group-committed transaction, then trims the window
    /// (only when something was kept). Answered after the commit.
    pub async fn apply_broadcast_writes(
        &self,
        writes: Vec<BroadcastWrite>,
    ) -> Result<Applied, StoreError> {
        let window = self.broadcast_window;
        self.store
            .write_batched(move |tx| {
                let now = now_ms();
                let mut applied = Applied::default();
                for write in writes {
                    match write {
                        BroadcastWrite::Keep { source, message } => {
                            let entry = BroadcastEntry {
                                seq: 0,
                                from_device: source.to_bytes(),
                                stored_at: now,
                                message,
                            };
                            match tx.broadcast_append(entry)? {
                                Appended::New(seq) => applied.kept.push(seq),
                                Appended::Already(_) => applied.duplicates += 1,
                            }
                        }
                        BroadcastWrite::Recall { by, id } => {
                            applied.recalled +=
                                tx.broadcast_remove(&id, |e| recalls(&by, e))?.len();
                        }
                    }
                }
                if !applied.kept.is_empty() {
                    applied.expired = window.expire(tx, now)?;
                }
                Ok(applied)
            })
            .await
    }

    /// A page of the kept broadcasts, for logged-in devices.
    pub(super) async fn broadcasts(
        &self,
        device: PeerId,
        after: u64,
        limit: u32,
    ) -> Result<Outcome, Refusal> {
        self.logged_in(device).await?;
        let limit = limit.clamp(1, MAX_SYNC_PAGE) as usize;
        let (entries, last_seq) = self
            .blocking(move |s| {
                s.read(|tx| {
                    Ok::<_, Refusal>((
                        tx.broadcast_page(after, limit, SYNC_PAGE_BYTES)?,
                        tx.broadcast_last_seq()?,
                    ))
                })
            })
            .await?;
        Ok(Outcome {
            response: BootstrapResponse::Broadcasts { entries, last_seq },
            effects: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::tests::{PW, code, reg, service};
    use confab_protocol::bootstrap::{BootstrapRequest as R, DeviceCert, ErrorCode as E};
    use confab_protocol::{GossipFrame, encode};
    use libp2p::identity::Keypair;
    use std::time::Instant;

    fn page(out: &Outcome) -> (Vec<BroadcastEntry>, u64) {
        match &out.response {
            BootstrapResponse::Broadcasts { entries, last_seq } => (entries.clone(), *last_seq),
            other => panic!("{other:?}"),
        }
    }

    fn texts(entries: &[BroadcastEntry]) -> Vec<&str> {
        entries
            .iter()
            .map(|e| e.message.text.as_deref().unwrap_or(""))
            .collect()
    }

    fn keep(source: PeerId, message: &ChatMessage) -> BroadcastWrite {
        BroadcastWrite::Keep {
            source,
            message: message.clone(),
        }
    }

    /// The texts of the kept broadcasts, as `device` pages them.
    async fn kept(s: &Service, device: PeerId) -> Vec<String> {
        let (entries, _) = page(
            &s.handle(
                device,
                None,
                R::Broadcasts {
                    after: 0,
                    limit: 10,
                },
            )
            .await,
        );
        texts(&entries).into_iter().map(str::to_owned).collect()
    }

    /// A registered device and the certificate it got.
    async fn user(s: &Service, name: &str) -> (PeerId, DeviceCert) {
        let device = PeerId::random();
        match s.handle(device, None, reg(name, PW)).await.response {
            BootstrapResponse::Session { cert, .. } => (device, cert),
            other => panic!("{other:?}"),
        }
    }

    fn certified(text: &str, cert: &DeviceCert) -> ChatMessage {
        let mut m = ChatMessage::text("x", text, 1);
        m.author_cert = Some(cert.clone());
        m
    }

    #[tokio::test]
    async fn logged_in_devices_page_through_the_kept_broadcasts() {
        let (s, _dir, _) = service().await;
        let (ann, _) = user(&s, "ann").await;
        let stranger = PeerId::random();
        let writes: Vec<BroadcastWrite> = (0..5)
            .map(|i| keep(stranger, &ChatMessage::text("s", format!("b{i}"), 1)))
            .collect();
        let applied = s.apply_broadcast_writes(writes).await.unwrap();
        assert_eq!(applied.kept, [1, 2, 3, 4, 5]);

        let ask = |after, limit| R::Broadcasts { after, limit };
        assert_eq!(
            code(&s.handle(stranger, None, ask(0, 10)).await),
            Some(E::NotLoggedIn)
        );
        let (entries, last) = page(&s.handle(ann, None, ask(0, 2)).await);
        assert_eq!((texts(&entries), last), (vec!["b0", "b1"], 5));
        assert_eq!(entries[0].from_device, stranger.to_bytes());
        let (entries, last) = page(&s.handle(ann, None, ask(2, 10)).await);
        assert_eq!((texts(&entries), last), (vec!["b2", "b3", "b4"], 5));
        assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4, 5]);
        let (entries, last) = page(&s.handle(ann, None, ask(5, 10)).await);
        assert_eq!((entries.len(), last), (0, 5));
        // A limit of 0 is raised to 1; a huge one is capped.
        let (entries, _) = page(&s.handle(ann, None, ask(0, 0)).await);
        assert_eq!(texts(&entries), ["b0"]);
        let (entries, _) = page(&s.handle(ann, None, ask(0, u32::MAX)).await);
        assert_eq!(entries.len(), 5);
    }

    #[tokio::test]
    async fn the_window_keeps_the_newest_and_the_recent() {
        let (s, _dir, _) = service().await;
        let s = s.with_broadcast_window(BroadcastWindow {
            max_entries: 3,
            retention: Duration::from_secs(3600),
        });
        let (ann, _) = user(&s, "ann").await;
        let source = PeerId::random();
        for i in 0..5 {
            let m = ChatMessage::text("s", format!("b{i}"), 1);
            s.apply_broadcast_writes(vec![keep(source, &m)])
                .await
                .unwrap();
        }
        let (entries, last) = page(
            &s.handle(
                ann,
                None,
                R::Broadcasts {
                    after: 0,
                    limit: 10,
                },
            )
            .await,
        );
        assert_eq!((texts(&entries), last), (vec!["b2", "b3", "b4"], 5));

        // By age: two hours on, all are older than the retention.
        let window = s.broadcast_window();
        let later = now_ms() + 2 * 3600 * 1000;
        let expired = s.store().write(|tx| window.expire(tx, later)).unwrap();
        assert_eq!(expired, 3);
        let (entries, last) = page(
            &s.handle(
                ann,
                None,
                R::Broadcasts {
                    after: 0,
                    limit: 10,
                },
            )
            .await,
        );
        assert_eq!((entries.len(), last), (0, 5), "numbers are not reused");
        // Within the retention nothing goes.
        let m = ChatMessage::text("s", "fresh", 1);
        s.apply_broadcast_writes(vec![keep(source, &m)])
            .await
            .unwrap();
        let expired = s.store().write(|tx| window.expire(tx, now_ms())).unwrap();
        assert_eq!(expired, 0);
    }

    #[tokio::test]
    async fn the_same_device_and_id_is_kept_once() {
        let (s, _dir, _) = service().await;
        let (ann, cert) = user(&s, "ann").await;
        let m = certified("once", &cert);
        let first = s.apply_broadcast_writes(vec![keep(ann, &m)]).await.unwrap();
        let again = s
            .apply_broadcast_writes(vec![keep(ann, &m), keep(ann, &m)])
            .await
            .unwrap();
        assert_eq!(
            (first.kept, again.kept, again.duplicates),
            (vec![1], vec![], 2)
        );
        // Another device with the same id is another broadcast.
        let other = s
            .apply_broadcast_writes(vec![keep(PeerId::random(), &m)])
            .await
            .unwrap();
        assert_eq!(other.kept, [2]);
    }

    #[tokio::test]
    async fn a_recall_removes_only_its_authors_broadcast() {
        let (s, _dir, _) = service().await;
        let (ann, ann_cert) = user(&s, "ann").await;
        let (ben, ben_cert) = user(&s, "ben").await;
        let bare = PeerId::random();
        // The same id from ann, ben and a bare peer (ids are chosen by authors).
        let from_ann = certified("ann's", &ann_cert);
        let mut from_ben = certified("ben's", &ben_cert);
        from_ben.id = from_ann.id;
        let mut from_bare = ChatMessage::text("x", "bare", 1);
        from_bare.id = from_ann.id;
        let other_of_ann = certified("ann's other", &ann_cert);
        s.apply_broadcast_writes(vec![
            keep(ann, &from_ann),
            keep(ben, &from_ben),
            keep(bare, &from_bare),
            keep(ann, &other_of_ann),
        ])
        .await
        .unwrap();

        // A bare device that did not write it takes nothing, not even by the right id.
        let recall = |by, id| BroadcastWrite::Recall { by, id };
        let none = s
            .apply_broadcast_writes(vec![recall(Author::Device(PeerId::random()), from_ann.id)])
            .await
            .unwrap();
        assert_eq!(none.recalled, 0);
        // Ann's account (from any of its devices) takes ann's only.
        let applied = s
            .apply_broadcast_writes(vec![recall(Author::User("ann".into()), from_ann.id)])
            .await
            .unwrap();
        assert_eq!(applied.recalled, 1);
        assert_eq!(kept(&s, ann).await, ["ben's", "bare", "ann's other"]);
        // The bare device takes its own.
        let applied = s
            .apply_broadcast_writes(vec![recall(Author::Device(bare), from_ann.id)])
            .await
            .unwrap();
        assert_eq!(applied.recalled, 1);
        assert_eq!(kept(&s, ann).await, ["ben's", "ann's other"]);
    }

    /// The gate and the writes together, as the event loop runs them: an admin's broadcast is
    /// kept, a non-admin's and a bare peer's are refused and not kept.
    #[tokio::test]
    async fn under_admins_only_an_admins_broadcast_is_kept() {
        let (s, _dir, key) = service().await;
        let (ann, ann_cert) = user(&s, "ann").await;
        let (ben, ben_cert) = user(&s, "ben").await;
        let mut gate = BroadcastGate::new(
            key.public(),
            crate::config::BroadcastPolicy::Admins,
            &["ann".to_owned()],
            30,
            10,
        );
        let now = Instant::now();
        let mut writes = Vec::new();
        for (source, message) in [
            (ann, certified("from the admin", &ann_cert)),
            (ben, certified("from ben", &ben_cert)),
            (PeerId::random(), ChatMessage::text("x", "bare", 1)),
        ] {
            let data = encode(&GossipFrame::Chat(message)).unwrap();
            match gate.judge(Some(source), &data, now) {
                Verdict::Keep {
                    source, message, ..
                } => writes.push(BroadcastWrite::Keep { source, message }),
                Verdict::Reject(_) => {}
                other => panic!("{other:?}"),
            }
        }
        s.apply_broadcast_writes(writes).await.unwrap();
        let (entries, last) = page(
            &s.handle(
                ben,
                None,
                R::Broadcasts {
                    after: 0,
                    limit: 10,
                },
            )
            .await,
        );
        assert_eq!((texts(&entries), last), (vec!["from the admin"], 1));
        // A certificate of another server is no certificate of this one.
        let other_server = Keypair::generate_ed25519();
        let mut foreign = ann_cert.clone();
        foreign.issuer = other_server.public().to_peer_id().to_bytes();
        foreign.signature = other_server.sign(&foreign.to_be_signed()).unwrap();
        let data = encode(&GossipFrame::Chat(certified("foreign", &foreign))).unwrap();
        assert!(matches!(
            gate.judge(Some(ann), &data, now),
            Verdict::Reject(_)
        ));
    }
}
