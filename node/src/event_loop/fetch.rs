//! `fetch_file`: downloading a message's attachment with the [`Fetcher`].
//!
//! The sources are the message's author device, the session's bootstrap for messages that went
//! through it (it holds files for receivers who were offline), and up to [`MAX_EXTRA_SOURCES`]
//! other peers connected now (another receiver may have it); a source that does not have the
//! file is dropped, one that serves a chunk that does not verify is banned. A download that
//! stalls fails with `transfer_failed`; what it verified stays on disk, and the next `fetch_file`
//! of the same file resumes from there.

use std::path::PathBuf;

use confab_protocol::{Attachment, ContentHash};

use super::accounts::Caller;
use super::*;
use crate::error::FetchError;
use crate::files::fetcher::{Export, FetchEvent};

/// Connected peers asked for a file besides its sender, at most.
const MAX_EXTRA_SOURCES: usize = 8;

/// What a download under way is for.
pub(super) struct Wanted {
    /// The message whose attachment this is (for the events).
    message: MessageId,
    /// Whose answers wait for it.
    replies: Vec<Reply<Result<PathBuf, FetchError>>>,
    /// Tell the bootstrap when it is here (it may hold the file for this account).
    report: bool,
}

impl EventLoop {
    /// A client wants message `id`'s attachment in `dest`.
    pub(super) fn handle_fetch_command(
        &mut self,
        id: MessageId,
        dest: PathBuf,
        reply: Reply<Result<PathBuf, FetchError>>,
    ) {
        let store = self.store.clone();
        self.run_store_op(async move {
            let result = store.find(id).await;
            StoreDone::FoundForFetch {
                id,
                dest,
                result,
                reply,
            }
        });
    }

    /// The message is found (or not): start, join or skip the download.
    pub(super) fn handle_found_for_fetch(
        &mut self,
        id: MessageId,
        dest: PathBuf,
        result: Result<Option<StoredMessage>, StoreError>,
        reply: Reply<Result<PathBuf, FetchError>>,
    ) {
        let record = match result {
            Ok(Some(record)) => record,
            Ok(None) => {
                let _ = reply.send(Err(FetchError::NotFound(id.to_string())));
                return;
            }
            Err(e) => {
                let _ = reply.send(Err(FetchError::Store(e.to_string())));
                return;
            }
        };
        let Some(attachment) = record.attachment.clone() else {
            let _ = reply.send(Err(FetchError::NotFound(format!("{id} has no file"))));
            return;
        };
        let root = attachment.hash;
        let key = match record
            .file_key
            .as_deref()
            .map(crate::files::sealed::key_from)
        {
            None => None,
            Some(Ok(key)) => Some(key),
            Some(Err(e)) => {
                let _ = reply.send(Err(FetchError::Failed(e.to_string())));
                return;
            }
        };
        if let Some(wanted) = self.downloads.get_mut(&root) {
            wanted.replies.push(reply);
            return;
        }
        if self.fetcher.len() >= MAX_FETCHES {
            let _ = reply.send(Err(FetchError::Failed(format!(
                "{MAX_FETCHES} downloads are running; try again when one is done"
            ))));
            return;
        }
        let sources = self.file_sources(&record);
        self.downloads.insert(
            root,
            Wanted {
                message: id,
                replies: vec![reply],
                report: through_bootstrap(&record.conversation),
            },
        );
        let export = Some(Export {
            dir: dest,
            name: attachment.name,
            key,
        });
        self.fetcher.start(
            &mut self.swarm.behaviour_mut().file,
            root,
            attachment.size,
            sources,
            export,
        );
        self.drain_fetch_events();
    }

    /// Who may have the attachment of `record`: its author's device, the bootstrap for
    /// conversations that go through it, and other peers connected now.
    fn file_sources(&self, record: &StoredMessage) -> Vec<PeerId> {
        let mut sources = Vec::new();
        if let Ok(peer) = record.from_peer.parse::<PeerId>()
            && peer != self.local_peer
        {
            sources.push(peer);
        }
        if through_bootstrap(&record.conversation)
            && let Some(session) = &self.session
            && let Some(peer) = self.bootstraps.target(Some(&session.bootstrap))
        {
            sources.push(peer);
        }
        sources.extend(
            self.peers
                .iter()
                .filter(|(p, e)| {
                    !e.bootstrap && **p != self.local_peer && self.swarm.is_connected(p)
                })
                .map(|(p, _)| *p)
                .filter(|p| !sources.contains(p))
                .take(MAX_EXTRA_SOURCES)
                .collect::<Vec<_>>(),
        );
        sources
    }

    /// Turns what the fetcher reports into events and answers.
    pub(super) fn drain_fetch_events(&mut self) {
        while let Some(event) = self.fetcher.next_event() {
            match event {
                FetchEvent::Progress { root, done, total } => {
                    if let Some(wanted) = self.downloads.get(&root) {
                        let id = wanted.message;
                        self.emit(Event::TransferProgress { id, done, total });
                    }
                }
                FetchEvent::Finished { root, result } => {
                    let Some(wanted) = self.downloads.remove(&root) else {
                        continue;
                    };
                    let id = wanted.message;
                    match result {
                        Ok(path) => {
                            let path = path.unwrap_or_default();
                            self.emit(Event::TransferComplete {
                                id,
                                path: path.clone(),
                            });
                            for reply in wanted.replies {
                                let _ = reply.send(Ok(path.clone()));
                            }
                            if wanted.report {
                                self.report_file_received(root);
                            }
                        }
                        Err(error) => {
                            self.emit(Event::TransferFailed {
                                id,
                                error: error.clone(),
                            });
                            for reply in wanted.replies {
                                let _ = reply.send(Err(FetchError::Failed(error.clone())));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Tells the session's bootstrap that this account has `root` (it stops holding it for
    /// this account); nothing if not connected (the file expires there in time).
    fn report_file_received(&mut self, root: ContentHash) {
        if let Some(session) = &self.session
            && let Some(peer) = self.bootstraps.target(Some(&session.bootstrap))
        {
            let request = BootstrapRequest::FileReceived { root };
            self.send_call(peer, request, Caller::Report("file received"));
        }
    }

    /// If message `m` (being shown) carries a small file from a peer on the LAN connected now,
    /// what to fetch at once.
    pub(super) fn auto_fetch_of(&self, m: &Message) -> Option<AutoFetch> {
        // An encrypted conversation's file needs its key from the store: fetched on request.
        if m.outgoing || m.recalled || m.encrypted {
            return None;
        }
        let attachment = m.attachment.as_deref()?;
        if attachment.size > AUTO_FETCH_MAX_BYTES {
            return None;
        }
        let peer: PeerId = m.from.peer_id.parse().ok()?;
        let lan = self
            .peers
            .get(&peer)
            .is_some_and(|e| e.source == PeerSource::Mdns);
        (lan && self.swarm.is_connected(&peer)).then(|| AutoFetch {
            id: m.id,
            attachment: attachment.clone(),
            peer,
            report: through_bootstrap(&m.conversation.to_string()),
        })
    }

    /// Downloads a small file from a LAN peer into the downloads directory, with the usual
    /// transfer events.
    pub(super) fn auto_fetch(&mut self, auto: AutoFetch) {
        let AutoFetch {
            id,
            attachment,
            peer,
            report,
        } = auto;
        let root = attachment.hash;
        if self.downloads.contains_key(&root) || self.fetcher.len() >= MAX_FETCHES {
            return;
        }
        tracing::debug!("fetching the file of {id} from {peer} at once (small, on the LAN)");
        self.downloads.insert(
            root,
            Wanted {
                message: id,
                replies: Vec::new(),
                report,
            },
        );
        let export = Some(Export {
            dir: self.downloads_dir.clone(),
            name: attachment.name,
            key: None,
        });
        self.fetcher.start(
            &mut self.swarm.behaviour_mut().file,
            root,
            attachment.size,
            [peer],
            export,
        );
        self.drain_fetch_events();
    }

    /// Lets every download notice its timeouts (called from the periodic retry tick).
    pub(super) fn tick_fetches(&mut self) {
        self.fetcher.tick(&mut self.swarm.behaviour_mut().file);
        self.drain_fetch_events();
    }
}

/// A small file from a LAN peer to fetch at once.
pub(super) struct AutoFetch {
    id: MessageId,
    attachment: Attachment,
    peer: PeerId,
    report: bool,
}

/// Whether messages of `conversation` go through the bootstrap (which may hold their files).
fn through_bootstrap(conversation: &str) -> bool {
    conversation.starts_with("user:") || conversation.starts_with("group:")
}

/// Kept for the event loop's file map: which download a root names.
pub(super) type Downloads = HashMap<ContentHash, Wanted>;
