//! Held files in the event loop (see `service::files`): pulling a file from its author's online
//! devices with the node's [`Fetcher`] (every chunk verified against the file's root, resumable
//! across restarts of either side), serving complete holds over `/confab/file/1` to the accounts
//! they are for, and deleting the bytes of holds that ended. Disk work runs on blocking threads;
//! at most [`MAX_FILE_SERVES`] requests are served at once (the others get `Busy`) and
//! [`MAX_FILE_PULLS`] files pulled.

use std::time::Duration;

use confab_node::files::fetcher::{FetchEvent, Fetcher, Inbound};
use confab_node::files::store::{BlobStore, RemoveError};
use confab_protocol::ContentHash;
use confab_protocol::file::{FileRequest, FileResponse};
use libp2p::PeerId;
use libp2p::request_response::{self, ResponseChannel};

use super::{Done, EventLoop};
use crate::config::limits::{MAX_FILE_PULLS, MAX_FILE_SERVES};

/// Seconds between retries of the pulls still pending (see [`EventLoop::retry_pulls`]).
pub(super) const PULL_RETRY_TICKS: u64 = 60;

/// How often, and how many times, deleting a file's bytes is tried while a write of its pull is
/// still finishing.
const REMOVE_RETRY: Duration = Duration::from_millis(200);
const REMOVE_TRIES: u32 = 25;

/// The file side of the loop's state.
pub(super) struct Files {
    pub(super) blobs: BlobStore,
    pub(super) fetcher: Fetcher,
    /// Requests being served now.
    serving: usize,
}

impl Files {
    pub(super) fn new(blobs: BlobStore) -> Self {
        Self {
            fetcher: Fetcher::new(blobs.clone()),
            blobs,
            serving: 0,
        }
    }
}

impl EventLoop {
    /// Pulls `root` from the online devices of `from` (or adds them as sources of a pull under
    /// way). Without a device online, or with [`MAX_FILE_PULLS`] pulls running, it waits for the
    /// next login of a device of `from`.
    pub(super) fn start_pull(&mut self, root: ContentHash, size: u64, from: &str) {
        let sources = self.presence.online_devices(from);
        let rr = &mut self.swarm.behaviour_mut().file;
        let fetcher = &mut self.files.fetcher;
        if fetcher.is_fetching(&root) {
            for peer in sources {
                fetcher.add_source(rr, &root, peer);
            }
        } else if sources.is_empty() {
            tracing::debug!("no device of {from} online to pull {root:?} from; waiting");
        } else if fetcher.len() >= MAX_FILE_PULLS {
            tracing::info!(
                "{MAX_FILE_PULLS} pulls running; {root:?} waits for {from}'s next login"
            );
        } else {
            tracing::info!("pulling {root:?} ({size} bytes) from {from}");
            fetcher.start(rr, root, size, sources, None);
        }
        self.drain_file_events();
    }

    /// A device of `user` is online: resume the pulls of its files.
    pub(super) fn resume_pulls(&mut self, user: String) {
        let service = self.service.clone();
        self.spawn(async move {
            match service.pulls_of(user.clone()).await {
                Ok(pulls) if !pulls.is_empty() => Done::Pulls { user, pulls },
                Ok(_) => Done::Nothing,
                Err(e) => {
                    tracing::error!("pulls of {user}: {e}");
                    Done::Nothing
                }
            }
        });
    }

    /// Retries every hold still being pulled from an author online now (a pull that stopped,
    /// or one that waited for a free slot), every [`PULL_RETRY_TICKS`] seconds.
    pub(super) fn retry_pulls(&mut self) {
        if self.files.fetcher.len() >= MAX_FILE_PULLS {
            return;
        }
        let service = self.service.clone();
        self.spawn(async move {
            match service.pending_pulls().await {
                Ok(pulls) if !pulls.is_empty() => Done::RetryPulls(pulls),
                Ok(_) => Done::Nothing,
                Err(e) => {
                    tracing::error!("pending pulls: {e}");
                    Done::Nothing
                }
            }
        });
    }

    /// A hold ended: stop pulling it and delete its bytes.
    pub(super) fn drop_file(&mut self, root: ContentHash) {
        self.files.fetcher.cancel(&root);
        let blobs = self.files.blobs.clone();
        self.spawn(async move {
            for _ in 0..REMOVE_TRIES {
                let blobs = blobs.clone();
                match tokio::task::spawn_blocking(move || blobs.remove(&root)).await {
                    Ok(Ok(())) => {
                        tracing::info!("deleted held file {root:?}");
                        return Done::Nothing;
                    }
                    // A write of the cancelled pull is still finishing.
                    Ok(Err(RemoveError::InProgress)) => tokio::time::sleep(REMOVE_RETRY).await,
                    Ok(Err(e)) => {
                        tracing::error!("cannot delete held file {root:?}: {e}");
                        return Done::Nothing;
                    }
                    Err(e) => {
                        tracing::error!("deleting held file {root:?}: {e}");
                        return Done::Nothing;
                    }
                }
            }
            tracing::error!("held file {root:?} stayed busy; not deleted");
            Done::Nothing
        });
    }

    /// What the fetcher reports: a complete pull makes its hold complete.
    pub(super) fn drain_file_events(&mut self) {
        while let Some(event) = self.files.fetcher.next_event() {
            match event {
                FetchEvent::Progress { root, done, total } => {
                    tracing::trace!("pulling {root:?}: {done} of {total} bytes");
                }
                FetchEvent::Finished {
                    root,
                    result: Ok(_),
                } => {
                    tracing::info!("held file {root:?} is complete");
                    let service = self.service.clone();
                    self.spawn(async move {
                        match service.file_pulled(root).await {
                            Ok(effects) => Done::Effects(effects),
                            Err(e) => {
                                tracing::error!("recording held file {root:?}: {e}");
                                Done::Nothing
                            }
                        }
                    });
                }
                FetchEvent::Finished {
                    root,
                    result: Err(e),
                } => {
                    // Kept as far as it got; retried by `retry_pulls` or at an author's login.
                    tracing::info!("pull of {root:?} stopped: {e}");
                }
            }
        }
    }

    /// `/confab/file/1` traffic: answers to this server's pulls, and requests for held files.
    pub(super) fn handle_file_event(
        &mut self,
        event: request_response::Event<FileRequest, FileResponse>,
    ) {
        let rr = &mut self.swarm.behaviour_mut().file;
        let inbound = self.files.fetcher.handle_event(rr, event);
        self.drain_file_events();
        if let Some(Inbound {
            peer,
            request,
            channel,
        }) = inbound
        {
            self.serve_file(peer, request, channel);
        }
    }

    /// Answers a request for a held file: only a complete hold, only to the accounts it is for.
    fn serve_file(
        &mut self,
        peer: PeerId,
        request: FileRequest,
        channel: ResponseChannel<FileResponse>,
    ) {
        if self.files.serving >= MAX_FILE_SERVES {
            let _ = self
                .swarm
                .behaviour_mut()
                .file
                .send_response(channel, FileResponse::Busy);
            return;
        }
        let root = match &request {
            FileRequest::HashList { root, .. } | FileRequest::Chunk { root, .. } => *root,
            _ => {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .file
                    .send_response(channel, FileResponse::NotFound);
                return;
            }
        };
        self.files.serving += 1;
        let (service, blobs) = (self.service.clone(), self.files.blobs.clone());
        self.spawn(async move {
            let response = tokio::task::spawn_blocking(move || {
                if service.may_fetch_blocking(&peer, &root) {
                    blobs.answer(request)
                } else {
                    FileResponse::NotFound
                }
            })
            .await
            .unwrap_or(FileResponse::Busy);
            Done::FileServed { channel, response }
        });
    }

    /// A file request is answered.
    pub(super) fn file_served(
        &mut self,
        channel: ResponseChannel<FileResponse>,
        response: FileResponse,
    ) {
        self.files.serving = self.files.serving.saturating_sub(1);
        let _ = self
            .swarm
            .behaviour_mut()
            .file
            .send_response(channel, response);
    }
}
