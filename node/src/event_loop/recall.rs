//! Recall (for everyone) and delete (from this account's history).
//!
//! - **`user:` and `group:`**: the bootstrap decides (only the author recalls; in a group also
//!   the owner and admins), drops the stored body and puts a tombstone into the mailbox of
//!   everyone involved, which every device applies when it syncs (at once when online: the
//!   bootstrap pushes). This device buries its own copy once the bootstrap has said yes. A
//!   deletion is a tombstone in the account's own mailbox only.
//! - **`peer:`**: the author's device sends `Recall` over `/confab/direct/1`; the receiver
//!   applies it only to a message that the same peer wrote.
//! - **`broadcast`**: a `Recall` frame on the broadcast topic, applied only to a message of the
//!   same author (the account its certificate proves, or the same device).
//!
//! Tombstones are kept for good (`store::Tombstone`), so one that arrives before its message
//! still applies, and a later copy never brings the content back.

use confab_protocol::bootstrap::ErrorCode;

use super::accounts::Caller;
use super::*;
use crate::error::RecallError;
use crate::store::{Buried, Tombstone};

/// A recall or deletion waiting for the bootstrap's answer.
#[derive(Debug)]
pub(super) struct PendingBury {
    pub conversation: Conversation,
    pub id: MessageId,
    pub recall: bool,
    pub reply: Reply<Result<(), RecallError>>,
}

impl EventLoop {
    /// A client recalls or deletes message `id`: find it, then do what its conversation needs.
    pub(super) fn handle_bury_command(
        &mut self,
        id: MessageId,
        recall: bool,
        reply: Reply<Result<(), RecallError>>,
    ) {
        let store = self.store.clone();
        self.run_store_op(async move {
            let result = store.find(id).await;
            StoreDone::Found {
                id,
                recall,
                result,
                reply,
            }
        });
    }

    /// The message to recall or delete is found (or not).
    pub(super) fn handle_found(
        &mut self,
        id: MessageId,
        recall: bool,
        result: Result<Option<StoredMessage>, StoreError>,
        reply: Reply<Result<(), RecallError>>,
    ) {
        let record = match result {
            Ok(Some(record)) => record,
            Ok(None) => {
                let _ = reply.send(Err(RecallError::NotFound(id.to_string())));
                return;
            }
            Err(e) => {
                let _ = reply.send(Err(RecallError::Store(e)));
                return;
            }
        };
        let Ok(conversation) = record.conversation.parse::<Conversation>() else {
            let _ = reply.send(Err(RecallError::NotFound(id.to_string())));
            return;
        };
        let mine = record.from_peer == self.local_peer.to_base58();
        match (&conversation, recall) {
            (Conversation::User(_) | Conversation::Group(_), _) => {
                let Some(session) = &self.session else {
                    let _ = reply.send(Err(RecallError::NotLoggedIn));
                    return;
                };
                let Some(peer) = self.bootstraps.target(Some(&session.bootstrap)) else {
                    let _ = reply.send(Err(RecallError::NoBootstrap));
                    return;
                };
                let request = if recall {
                    BootstrapRequest::Recall {
                        conversation: conversation.to_string(),
                        id,
                        author: record.from_user.clone().unwrap_or_default(),
                    }
                } else {
                    BootstrapRequest::Delete {
                        conversation: conversation.to_string(),
                        id,
                    }
                };
                let pending = PendingBury {
                    conversation,
                    id,
                    recall,
                    reply,
                };
                self.send_call(peer, request, Caller::Bury(Box::new(pending)));
            }
            // Deleting is this device's own business everywhere else.
            (_, false) => self.bury_here(conversation, id, Tombstone::Deleted, Some(reply)),
            (_, true) if !mine => {
                let _ = reply.send(Err(RecallError::NotAllowed(
                    "only the device that wrote a message can recall it here".into(),
                )));
            }
            (Conversation::Peer(_), true) => {
                let Some(peer) = conversation.peer_id() else {
                    let _ = reply.send(Err(RecallError::NotFound(id.to_string())));
                    return;
                };
                if !self.swarm.is_connected(&peer) {
                    let _ = reply.send(Err(RecallError::Unreachable(conversation.to_string())));
                    return;
                }
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .direct
                    .send_request(&peer, DirectRequest::Recall { id });
                let by = Some(self.local_peer.to_base58());
                self.bury_here(conversation, id, Tombstone::Recalled { by }, Some(reply));
            }
            (Conversation::Broadcast, true) => {
                let frame = GossipFrame::Recall {
                    group: None,
                    id,
                    cert: self.session.as_ref().map(|s| s.cert.clone()),
                };
                if let Ok(bytes) = encode(&frame)
                    && let Err(e) = self
                        .swarm
                        .behaviour_mut()
                        .gossipsub
                        .publish(self.topic.clone(), bytes)
                {
                    tracing::debug!("recall of {id} not published: {e}");
                }
                let by = Some(self.local_peer.to_base58());
                self.bury_here(conversation, id, Tombstone::Recalled { by }, Some(reply));
            }
        }
    }

    /// The bootstrap's answer to a recall or deletion.
    pub(super) fn handle_bury_answer(
        &mut self,
        pending: PendingBury,
        result: Result<BootstrapResponse, CallError>,
    ) {
        match result {
            Ok(BootstrapResponse::Deposited { .. }) => {
                let tombstone = if pending.recall {
                    Tombstone::Recalled { by: None }
                } else {
                    Tombstone::Deleted
                };
                self.bury_here(
                    pending.conversation,
                    pending.id,
                    tombstone,
                    Some(pending.reply),
                );
            }
            Ok(other) => {
                let what = crate::client::response_kind(&other);
                let _ = pending
                    .reply
                    .send(Err(RecallError::Bootstrap(format!("unexpected {what}"))));
            }
            Err(CallError::Refused {
                code: ErrorCode::NotAllowed,
                message,
                ..
            }) => {
                let _ = pending.reply.send(Err(RecallError::NotAllowed(message)));
            }
            Err(e) => {
                let _ = pending.reply.send(Err(RecallError::from(e)));
            }
        }
    }

    /// Applies a tombstone here; tells the front-ends if it changed anything.
    pub(super) fn bury_here(
        &mut self,
        conversation: Conversation,
        id: MessageId,
        tombstone: Tombstone,
        reply: Option<Reply<Result<(), RecallError>>>,
    ) {
        let store = self.store.clone();
        self.run_store_op(async move {
            let result = store
                .bury(conversation.to_string(), id, tombstone.clone())
                .await;
            StoreDone::Buried {
                conversation,
                id,
                tombstone,
                result,
                reply,
            }
        });
    }

    /// A tombstone is stored (or not).
    pub(super) fn handle_buried(
        &mut self,
        conversation: Conversation,
        id: MessageId,
        tombstone: Tombstone,
        result: Result<Buried, StoreError>,
        reply: Option<Reply<Result<(), RecallError>>>,
    ) {
        match &result {
            Ok(outcome) => self.announce_buried(conversation, id, &tombstone, outcome),
            Err(e) => tracing::error!("cannot store a tombstone for {id}: {e}"),
        }
        if let Some(reply) = reply {
            let _ = reply.send(result.map(|_| ()).map_err(RecallError::Store));
        }
    }

    /// The event for a tombstone that changed a message here.
    pub(super) fn announce_buried(
        &mut self,
        conversation: Conversation,
        id: MessageId,
        tombstone: &Tombstone,
        outcome: &Buried,
    ) {
        if *outcome != Buried::Applied {
            return;
        }
        self.emit(match tombstone {
            Tombstone::Recalled { .. } => Event::Recalled { id, conversation },
            Tombstone::Deleted => Event::Deleted { id, conversation },
        });
    }

    /// A peer recalls a message it sent over `/confab/direct/1`.
    pub(super) fn handle_direct_recall(
        &mut self,
        peer: PeerId,
        id: MessageId,
        channel: ResponseChannel<DirectResponse>,
    ) {
        if self.store_ops.len() >= MAX_PENDING_STORE_OPS {
            let reject = DirectResponse::Rejected {
                id: Some(id),
                reason: RejectReason::StorageFailed,
            };
            let _ = self
                .swarm
                .behaviour_mut()
                .direct
                .send_response(channel, reject);
            return;
        }
        // Acknowledged at once: the tombstone is applied only to a message this very peer wrote.
        let _ = self
            .swarm
            .behaviour_mut()
            .direct
            .send_response(channel, DirectResponse::Ack { id });
        let by = Some(peer.to_base58());
        self.bury_here(
            Conversation::peer(&peer),
            id,
            Tombstone::Recalled { by },
            None,
        );
    }

    /// A recall on the broadcast topic: applied to the author's own message only.
    pub(super) fn broadcast_recall(
        &mut self,
        author: Option<PeerId>,
        id: MessageId,
        cert: Option<DeviceCert>,
    ) -> gossipsub::MessageAcceptance {
        let Some(author) = author else {
            return gossipsub::MessageAcceptance::Reject;
        };
        if self.store_ops.len() >= MAX_PENDING_STORE_OPS {
            return gossipsub::MessageAcceptance::Ignore;
        }
        // The account its certificate proves, else the device itself.
        let by = match &cert {
            Some(cert) => match cert::verify(cert, &author, |p| self.bootstraps.trusts(p)) {
                Ok(user) => user.to_owned(),
                Err(_) => return gossipsub::MessageAcceptance::Reject,
            },
            None => author.to_base58(),
        };
        self.bury_here(
            Conversation::Broadcast,
            id,
            Tombstone::Recalled { by: Some(by) },
            None,
        );
        gossipsub::MessageAcceptance::Accept
    }
}
