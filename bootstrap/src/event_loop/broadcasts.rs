//! The broadcast topic in the event loop: each publication is judged at once, without IO
//! ([`BroadcastGate::judge`]); the verdict goes back to gossipsub (relay or not), and what is to
//! be kept or recalled goes to the [`BroadcastWriter`], so the loop never waits for the disk.
//!
//! [`BroadcastGate::judge`]: crate::service::broadcasts::BroadcastGate::judge

use std::time::Instant;

use libp2p::{PeerId, gossipsub};
use tokio::sync::mpsc;

use super::EventLoop;
use crate::config::limits::{MAX_COMMIT_BATCH, MAX_PENDING_BROADCAST_WRITES};
use crate::service::Service;
use crate::service::broadcasts::{BroadcastWrite, Verdict};

/// The task that stores kept broadcasts and applies recalls, in the order the loop accepted
/// them, as many at a time as are waiting (one group-committed transaction per batch). Its queue
/// is bounded: when it is full, a broadcast is still relayed but not kept.
pub(super) struct BroadcastWriter {
    queue: mpsc::Sender<BroadcastWrite>,
    task: tokio::task::JoinHandle<()>,
}

impl BroadcastWriter {
    pub(super) fn spawn(service: Service) -> Self {
        let (queue, writes) = mpsc::channel(MAX_PENDING_BROADCAST_WRITES);
        Self {
            queue,
            task: tokio::spawn(run_writer(service, writes)),
        }
    }

    /// Queues a write; `false` if the queue is full (the writer is behind).
    fn submit(&self, write: BroadcastWrite) -> bool {
        self.queue.try_send(write).is_ok()
    }

    /// Writes what is queued, then stops.
    pub(super) async fn close(self) {
        drop(self.queue);
        if let Err(e) = self.task.await {
            tracing::error!("broadcast writer: {e}");
        }
    }
}

async fn run_writer(service: Service, mut writes: mpsc::Receiver<BroadcastWrite>) {
    let mut batch = Vec::with_capacity(MAX_COMMIT_BATCH);
    while writes.recv_many(&mut batch, MAX_COMMIT_BATCH).await > 0 {
        let n = batch.len();
        match service
            .apply_broadcast_writes(std::mem::take(&mut batch))
            .await
        {
            Ok(applied) => tracing::trace!("broadcast writes: {applied:?}"),
            Err(e) => tracing::error!("{n} broadcast writes failed: {e}"),
        }
    }
}

impl EventLoop {
    /// A publication on a topic this server subscribes to.
    pub(super) fn handle_gossip(
        &mut self,
        propagation_source: PeerId,
        message_id: gossipsub::MessageId,
        message: gossipsub::Message,
    ) {
        use gossipsub::MessageAcceptance::{Accept, Ignore, Reject};
        let verdict = if message.topic == self.broadcast_topic {
            self.gate
                .judge(message.source, &message.data, Instant::now())
        } else {
            Verdict::Ignore(crate::service::broadcasts::gate::Reason::NotBroadcast)
        };
        let (acceptance, write) = match verdict {
            Verdict::Keep {
                source, message, ..
            } => (Accept, Some(BroadcastWrite::Keep { source, message })),
            Verdict::Recall { by, id, .. } => (Accept, Some(BroadcastWrite::Recall { by, id })),
            Verdict::Ignore(why) => {
                tracing::trace!("broadcast from {:?} ignored: {why}", message.source);
                (Ignore, None)
            }
            Verdict::Reject(why) => {
                tracing::debug!("broadcast from {:?} rejected: {why}", message.source);
                (Reject, None)
            }
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&message_id, &propagation_source, acceptance);
        if let Some(write) = write
            && !self.broadcast_writer.submit(write)
        {
            tracing::warn!(
                "the broadcast store is behind: a broadcast or recall from {:?} was relayed but \
                 not applied to the kept broadcasts",
                message.source
            );
        }
    }
}
