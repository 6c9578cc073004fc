//! `fetch_file`: downloading a message's attachment with [`crate::files::transfer::Transfer`].
//!
//! The transfer decides (sans-IO) what to ask of which source; this module carries it out: sends
//! its `/confab/file/1` requests, hands responses back, writes verified chunks into the blob
//! store's resumable download one at a time on a blocking thread, reports progress, and at the
//! end finishes the blob and exports it into the destination directory under a sanitised name.
//! The sources are the message's author device and up to [`MAX_EXTRA_SOURCES`] other peers
//! connected now (another receiver may have it); a source that does not have the file is
//! dropped, one that serves a chunk that does not verify is banned.
//! A download that stalls (no source has what is missing) fails with `transfer_failed`; what it
//! verified stays on disk, and the next `fetch_file` of the same file resumes from there.

use std::collections::VecDeque;
use std::path::PathBuf;

use confab_protocol::ContentHash;
use confab_protocol::file::FileResponse;

use super::*;
use crate::error::FetchError;
use crate::files::store::{Download, WriteChunkError};
use crate::files::transfer::{Action as TransferAction, RequestId, Transfer};

/// Connected peers asked for a file besides its sender, at most.
const MAX_EXTRA_SOURCES: usize = 8;

/// Progress events are sent at most this often per download.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// One download under way.
pub(super) struct Fetch {
    /// Names this download in the results of its blocking work, so that a result of an earlier
    /// download of the same file (ended meanwhile) is not taken for this one's.
    token: u64,
    transfer: Transfer,
    /// The message whose attachment this is (for the events).
    message: MessageId,
    /// Where the file goes, and its name there (sanitised on export).
    dest: PathBuf,
    name: String,
    /// The resumable download, when not lent to a blocking write.
    download: Option<Download>,
    /// The resumable download was made (a later result for it is a duplicate).
    begun: bool,
    /// Chunks received and waiting for their turn to be written.
    writes: VecDeque<(u32, Vec<u8>)>,
    /// A write (or the final finish) is running on a blocking thread.
    busy: bool,
    complete: bool,
    replies: Vec<Reply<Result<PathBuf, FetchError>>>,
    last_progress: Instant,
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
        let Some(attachment) = record.attachment else {
            let _ = reply.send(Err(FetchError::NotFound(format!("{id} has no file"))));
            return;
        };
        let root = attachment.hash;
        if let Some(fetch) = self.fetches.get_mut(&root) {
            fetch.replies.push(reply);
            return;
        }
        if self.fetches.len() >= MAX_FETCHES {
            let _ = reply.send(Err(FetchError::Failed(format!(
                "{MAX_FETCHES} downloads are running; try again when one is done"
            ))));
            return;
        }
        let mut transfer = Transfer::new(root, attachment.size);
        if let Ok(peer) = record.from_peer.parse::<PeerId>()
            && peer != self.local_peer
        {
            transfer.add_source(peer);
        }
        // Other peers connected now may have it too (other receivers): asked as well, and
        // dropped as sources when they do not have it, or when they serve a wrong chunk.
        let others: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(p, e)| !e.bootstrap && **p != self.local_peer && self.swarm.is_connected(p))
            .map(|(p, _)| *p)
            .take(MAX_EXTRA_SOURCES)
            .collect();
        for peer in others {
            transfer.add_source(peer);
        }
        self.fetches.insert(
            root,
            Fetch {
                token: rand::random(),
                transfer,
                message: id,
                dest,
                name: attachment.name,
                download: None,
                begun: false,
                writes: VecDeque::new(),
                busy: false,
                complete: false,
                replies: vec![reply],
                // The first chunk written is reported at once.
                last_progress: Instant::now()
                    .checked_sub(PROGRESS_EVERY)
                    .unwrap_or_else(Instant::now),
            },
        );
        // Already here (sent from this device, or fetched before): only the export is left.
        if self.blobs.has(&root) {
            if let Some(fetch) = self.fetches.get_mut(&root) {
                fetch.complete = true;
            }
            return self.finish_fetch(root);
        }
        self.drive_fetch(root);
    }

    /// Carries out what the transfer of `root` wants now.
    pub(super) fn drive_fetch(&mut self, root: ContentHash) {
        let now = Instant::now();
        let Some(fetch) = self.fetches.get_mut(&root) else {
            return;
        };
        let token = fetch.token;
        let actions = fetch.transfer.poll(now);
        for action in actions {
            match action {
                TransferAction::Request { id, peer, request } => {
                    let outbound = self.swarm.behaviour_mut().file.send_request(&peer, request);
                    self.file_calls.insert(outbound, (root, id));
                }
                TransferAction::HashListReady(list) => {
                    let blobs = self.blobs.clone();
                    let size = list.size();
                    self.run_store_op(async move {
                        let result = tokio::task::spawn_blocking(move || {
                            blobs
                                .begin_download(root, size, list)
                                .map_err(|e| e.to_string())
                        })
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()));
                        StoreDone::DownloadBegun {
                            root,
                            token,
                            result,
                        }
                    });
                }
                TransferAction::Write { index, bytes } => {
                    if let Some(fetch) = self.fetches.get_mut(&root) {
                        fetch.writes.push_back((index, bytes));
                    }
                }
                TransferAction::DropSource { peer, reason } => {
                    tracing::warn!("dropping {peer} as a source of {root:?}: {reason}");
                }
                TransferAction::Complete => {
                    if let Some(fetch) = self.fetches.get_mut(&root) {
                        fetch.complete = true;
                    }
                }
                TransferAction::Failed { reason } => {
                    return self.fail_fetch(root, reason.to_string());
                }
            }
        }
        self.pump_fetch(root);
    }

    /// Whether `token` names the download of `root` under way now.
    pub(super) fn is_current_fetch(&self, root: &ContentHash, token: u64) -> bool {
        self.fetches.get(root).is_some_and(|f| f.token == token)
    }

    /// The resumable download exists (or could not be made).
    pub(super) fn handle_download_begun(
        &mut self,
        root: ContentHash,
        result: Result<Download, String>,
    ) {
        if self.fetches.get(&root).is_some_and(|f| f.begun) {
            // A second hash list of the same download: the first one is in use.
            tracing::debug!("ignoring a second start of the download of {root:?}: {result:?}");
            return;
        }
        match result {
            Ok(download) => {
                let Some(fetch) = self.fetches.get_mut(&root) else {
                    return;
                };
                fetch.begun = true;
                fetch.transfer.set_missing(download.missing());
                fetch.download = Some(download);
                self.drive_fetch(root);
            }
            Err(e) => self.fail_fetch(root, format!("cannot store the file: {e}")),
        }
    }

    /// Starts the next write, or the finish, if nothing runs.
    fn pump_fetch(&mut self, root: ContentHash) {
        let Some(fetch) = self.fetches.get_mut(&root) else {
            return;
        };
        if fetch.busy {
            return;
        }
        if let Some((index, bytes)) = fetch.writes.pop_front() {
            let Some(mut download) = fetch.download.take() else {
                fetch.writes.push_front((index, bytes));
                return;
            };
            fetch.busy = true;
            let token = fetch.token;
            self.run_store_op(async move {
                let written = tokio::task::spawn_blocking(move || {
                    let result = download.write_chunk(u64::from(index), &bytes);
                    (download, result)
                })
                .await;
                match written {
                    Ok((download, result)) => StoreDone::ChunkWritten {
                        root,
                        token,
                        index,
                        download: Box::new(download),
                        result,
                    },
                    // The download went with the thread; the next fetch resumes from disk.
                    Err(e) => StoreDone::FetchFinished {
                        root,
                        token,
                        result: Err(format!("a chunk write stopped: {e}")),
                    },
                }
            });
            return;
        }
        if fetch.complete {
            self.finish_fetch(root);
        }
    }

    /// A chunk is written (or refused): tell the transfer, report progress, go on.
    pub(super) fn handle_chunk_written(
        &mut self,
        root: ContentHash,
        index: u32,
        download: Download,
        result: Result<(), WriteChunkError>,
    ) {
        let Some(fetch) = self.fetches.get_mut(&root) else {
            return;
        };
        fetch.busy = false;
        fetch.download = Some(download);
        match result {
            Ok(()) => fetch.transfer.chunk_written(index),
            Err(WriteChunkError::Rejected(e)) => {
                tracing::warn!("chunk {index} of {root:?} did not verify: {e}");
                fetch.transfer.chunk_rejected(index);
            }
            Err(e) => {
                tracing::warn!("cannot write chunk {index} of {root:?}: {e}");
                fetch.transfer.chunk_write_failed(index);
            }
        }
        let now = Instant::now();
        let (done, total) = fetch.transfer.progress();
        if now.duration_since(fetch.last_progress) >= PROGRESS_EVERY || done == total {
            fetch.last_progress = now;
            let id = fetch.message;
            self.emit(Event::TransferProgress { id, done, total });
        }
        self.drive_fetch(root);
    }

    /// Every chunk is in: finish the blob and export it.
    fn finish_fetch(&mut self, root: ContentHash) {
        let Some(fetch) = self.fetches.get_mut(&root) else {
            return;
        };
        fetch.busy = true;
        let token = fetch.token;
        let download = fetch.download.take();
        let (blobs, dest, name) = (self.blobs.clone(), fetch.dest.clone(), fetch.name.clone());
        self.run_store_op(async move {
            let result = tokio::task::spawn_blocking(move || {
                if let Some(download) = download {
                    download.finish().map_err(|e| e.to_string())?;
                }
                std::fs::create_dir_all(&dest).map_err(|e| e.to_string())?;
                blobs.export(&root, &dest, &name).map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            StoreDone::FetchFinished {
                root,
                token,
                result,
            }
        });
    }

    /// The file is in its destination (or not).
    pub(super) fn handle_fetch_finished(
        &mut self,
        root: ContentHash,
        result: Result<PathBuf, String>,
    ) {
        let Some(fetch) = self.fetches.remove(&root) else {
            return;
        };
        match result {
            Ok(path) => {
                self.emit(Event::TransferComplete {
                    id: fetch.message,
                    path: path.clone(),
                });
                for reply in fetch.replies {
                    let _ = reply.send(Ok(path.clone()));
                }
            }
            Err(e) => {
                self.fetches.insert(root, fetch);
                self.fail_fetch(root, e);
            }
        }
    }

    /// Gives up on `root` for now (what is verified stays on disk for the next attempt).
    fn fail_fetch(&mut self, root: ContentHash, error: String) {
        let Some(fetch) = self.fetches.remove(&root) else {
            return;
        };
        self.file_calls.retain(|_, (r, _)| *r != root);
        self.emit(Event::TransferFailed {
            id: fetch.message,
            error: error.clone(),
        });
        for reply in fetch.replies {
            let _ = reply.send(Err(FetchError::Failed(error.clone())));
        }
    }

    /// A response (or a failure) to one of this node's file requests.
    pub(super) fn handle_file_answer(
        &mut self,
        request: OutboundRequestId,
        response: Result<FileResponse, ()>,
    ) {
        let Some((root, id)) = self.file_calls.remove(&request) else {
            return;
        };
        let now = Instant::now();
        if let Some(fetch) = self.fetches.get_mut(&root) {
            match response {
                Ok(response) => fetch.transfer.response(id, response, now),
                Err(()) => fetch.transfer.request_failed(id, now),
            }
        }
        self.drive_fetch(root);
    }

    /// Lets every download notice its timeouts (called from the periodic retry tick).
    pub(super) fn tick_fetches(&mut self) {
        let roots: Vec<ContentHash> = self.fetches.keys().copied().collect();
        for root in roots {
            self.drive_fetch(root);
        }
    }
}

/// Kept here so the request id type is named where it is stored.
pub(super) type FileCall = (ContentHash, RequestId);
