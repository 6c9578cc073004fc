//! Broadcast history: the broadcasts the bootstrap kept, fetched at every session start.
//!
//! Broadcasts travel by gossip to whoever is online; the bootstrap also keeps the recent ones
//! (a documented window) in a log of its own, numbered. At every session start this device asks
//! for the ones after its cursor, page by page, and stores each page with the new cursor in one
//! transaction (deduplicated: the ones it got by gossip are already here), so a device that was
//! away, or is new, finds them in its history. The cursor belongs to one bootstrap: another
//! bootstrap's log starts again at zero.

use confab_protocol::bootstrap::BroadcastEntry;

use super::accounts::Caller;
use super::*;
use crate::store::BroadcastCursor;

/// Entries asked for per page.
const BROADCAST_PAGE: u32 = 500;

impl EventLoop {
    /// Asks for the kept broadcasts after the cursor, if logged in, connected and not already
    /// asking.
    pub(super) fn sync_broadcasts(&mut self) {
        if self.broadcasts_busy {
            return;
        }
        let Some(session) = &self.session else {
            return;
        };
        let Some(peer) = self.bootstraps.target(Some(&session.bootstrap)) else {
            return;
        };
        let bootstrap = peer.to_base58();
        let after = match &self.broadcast_cursor {
            Some(c) if c.bootstrap == bootstrap => c.seq,
            _ => 0,
        };
        self.broadcasts_busy = true;
        let request = BootstrapRequest::Broadcasts {
            after,
            limit: BROADCAST_PAGE,
        };
        self.send_call(peer, request, Caller::Broadcasts { bootstrap: peer });
    }

    /// A page of kept broadcasts (or why there is none).
    pub(super) fn handle_broadcasts_answer(
        &mut self,
        bootstrap: PeerId,
        result: Result<BootstrapResponse, CallError>,
    ) {
        let (entries, last_seq) = match result {
            Ok(BootstrapResponse::Broadcasts { entries, last_seq }) => (entries, last_seq),
            other => {
                // An older bootstrap does not keep broadcasts; a lost request is asked again at
                // the next session start.
                tracing::debug!("broadcast history not fetched: {other:?}");
                self.broadcasts_busy = false;
                return;
            }
        };
        // Another bootstrap's cursor counts for nothing here.
        let before = self
            .broadcast_cursor
            .as_ref()
            .filter(|c| c.bootstrap == bootstrap.to_base58())
            .map_or(0, |c| c.seq);
        let seq = entries
            .iter()
            .map(|e| e.seq)
            .max()
            .unwrap_or(last_seq)
            .max(before);
        let more = !entries.is_empty() && seq < last_seq;
        let records: Vec<StoredMessage> = entries
            .into_iter()
            .filter_map(|e| self.broadcast_record(e))
            .collect();
        let cursor = BroadcastCursor {
            bootstrap: bootstrap.to_base58(),
            seq,
        };
        let store = self.store.clone();
        self.run_store_op(async move {
            let result = store.store_broadcast_page(cursor.clone(), records).await;
            StoreDone::BroadcastPage {
                cursor,
                more,
                result,
            }
        });
    }

    /// How a kept broadcast is stored here, or `None` if it is unusable or blocked.
    fn broadcast_record(&mut self, entry: BroadcastEntry) -> Option<StoredMessage> {
        let device = PeerId::from_bytes(&entry.from_device).ok()?;
        if device == self.local_peer || entry.message.validate().is_err() {
            return None;
        }
        let user = self.certified_user(&device, &entry.message);
        if user.as_deref().is_some_and(|u| self.blocks_user(u)) {
            return None;
        }
        Some(incoming_record(
            Conversation::Broadcast,
            &device,
            user,
            &entry.message,
        ))
    }

    /// A page of broadcasts is stored (or not): show the new ones, ask for more.
    pub(super) fn handle_broadcast_page_stored(
        &mut self,
        cursor: BroadcastCursor,
        more: bool,
        result: Result<Vec<(Inserted, StoredMessage)>, StoreError>,
    ) {
        self.broadcasts_busy = false;
        match result {
            Ok(stored) => {
                for (outcome, record) in stored {
                    if outcome == Inserted::New {
                        match to_message(record) {
                            Ok(message) => self.emit(Event::Message(message)),
                            Err(e) => tracing::warn!("a stored broadcast: {e}"),
                        }
                    }
                }
                self.broadcast_cursor = Some(cursor);
                if more {
                    self.sync_broadcasts();
                }
            }
            Err(e) => tracing::error!("cannot store kept broadcasts: {e}"),
        }
    }
}
