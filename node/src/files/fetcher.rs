//! Downloads over `/confab/file/1`, carried out: the [`Fetcher`] drives one
//! [`Transfer`](super::transfer::Transfer) per file against a request-response behaviour and a
//! [`BlobStore`], for whichever event loop owns them (a node's `fetch_file`, a bootstrap pulling
//! a file it holds for offline receivers).
//!
//! The transfer decides (sans-IO) what to ask of which source; the fetcher sends its requests,
//! hands responses back, writes verified chunks into the blob store's resumable download one at a
//! time on a blocking thread, reports progress, and at the end finishes the blob (and, if asked,
//! exports it into a destination directory under a sanitised name). A source that does not have
//! the file is dropped; one that serves a chunk that does not verify is banned. A download that
//! stalls (no source has what is missing) ends with an error; what it verified stays on disk, and
//! the next start of the same file resumes from there.
//!
//! The owner's loop polls [`Fetcher::next_work`] beside its other sources, passes each result to
//! [`Fetcher::work_done`], hands every `/confab/file/1` event to [`Fetcher::handle_event`] (which
//! gives back the requests from peers, for the owner to serve), calls
//! [`Fetcher::tick`] now and then (timeouts), and drains [`Fetcher::next_event`] after each call.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::task::Poll;
use std::time::{Duration, Instant};

use confab_protocol::ContentHash;
use confab_protocol::file::{FileRequest, FileResponse};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use libp2p::PeerId;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};

use super::store::{BlobStore, Download, WriteChunkError};
use super::transfer::{Action, RequestId, Transfer};
use crate::net::FileCodec;

/// Progress is reported at most this often per download.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// The `/confab/file/1` behaviour the fetcher sends its requests on.
pub type FileBehaviour = request_response::Behaviour<FileCodec>;

/// What happened to a download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchEvent {
    /// Bytes verified and written so far, of `total`.
    Progress {
        /// The file.
        root: ContentHash,
        /// Bytes had.
        done: u64,
        /// The file's size.
        total: u64,
    },
    /// The download ended: the file is in the blob store (and at the returned path if it was to
    /// be exported), or it failed (what was verified stays for the next start).
    Finished {
        /// The file.
        root: ContentHash,
        /// The exported path (`None` when not exported), or why it failed.
        result: Result<Option<PathBuf>, String>,
    },
}

/// A `/confab/file/1` request from a peer, for the fetcher's owner to serve.
pub struct Inbound {
    /// Who asks.
    pub peer: PeerId,
    /// What.
    pub request: FileRequest,
    /// Where the answer goes.
    pub channel: ResponseChannel<FileResponse>,
}

/// The result of a download's blocking work, for [`Fetcher::work_done`].
pub struct Work {
    root: ContentHash,
    /// The download it belongs to (a late result of an earlier download of the same file is
    /// ignored).
    token: u64,
    kind: WorkKind,
}

enum WorkKind {
    Begun(Result<Download, String>),
    Written {
        index: u32,
        download: Box<Download>,
        result: Result<(), WriteChunkError>,
    },
    Finished(Result<Option<PathBuf>, String>),
}

/// One download under way.
struct Fetch {
    token: u64,
    transfer: Transfer,
    /// Where the file goes and its name there (sanitised on export), if anywhere.
    export: Option<Export>,
    /// The resumable download, when not lent to a blocking write.
    download: Option<Download>,
    /// The resumable download was made (a later result for it is a duplicate).
    begun: bool,
    /// Chunks received and waiting for their turn to be written.
    writes: VecDeque<(u32, Vec<u8>)>,
    /// A write (or the final finish) is running on a blocking thread.
    busy: bool,
    complete: bool,
    last_progress: Instant,
}

/// Where a finished download goes: a directory and a file name there (sanitised), and for the
/// attachment of an encrypted conversation the key that decrypts it on the way out.
#[derive(Debug, Clone)]
pub struct Export {
    /// The directory (created if missing).
    pub dir: PathBuf,
    /// The file name as the sender gave it.
    pub name: String,
    /// The file key ([`super::sealed`]), when the blob is ciphertext.
    pub key: Option<super::sealed::FileKey>,
}

/// Downloads under way, by file root. See the module docs.
pub struct Fetcher {
    blobs: BlobStore,
    fetches: HashMap<ContentHash, Fetch>,
    /// Requests on the wire: which download and which of its requests each answers.
    calls: HashMap<OutboundRequestId, (ContentHash, RequestId)>,
    work: FuturesUnordered<BoxFuture<'static, Work>>,
    events: VecDeque<FetchEvent>,
}

impl Fetcher {
    /// A fetcher writing into `blobs`.
    pub fn new(blobs: BlobStore) -> Self {
        Self {
            blobs,
            fetches: HashMap::new(),
            calls: HashMap::new(),
            work: FuturesUnordered::new(),
            events: VecDeque::new(),
        }
    }

    /// Downloads under way.
    pub fn len(&self) -> usize {
        self.fetches.len()
    }

    /// Whether none is under way.
    pub fn is_empty(&self) -> bool {
        self.fetches.is_empty()
    }

    /// Whether `root` is being downloaded.
    pub fn is_fetching(&self, root: &ContentHash) -> bool {
        self.fetches.contains_key(root)
    }

    /// Starts downloading `root` (`size` bytes, as the message says) from `sources`, into the
    /// blob store and then, if `export` names a directory and a file name, there. Does nothing if
    /// it is under way already (see [`Fetcher::add_source`]). A file the store has complete
    /// finishes at once (exported if asked).
    pub fn start(
        &mut self,
        rr: &mut FileBehaviour,
        root: ContentHash,
        size: u64,
        sources: impl IntoIterator<Item = PeerId>,
        export: Option<Export>,
    ) {
        if self.fetches.contains_key(&root) {
            return;
        }
        let mut transfer = Transfer::new(root, size);
        for peer in sources {
            transfer.add_source(peer);
        }
        self.fetches.insert(
            root,
            Fetch {
                token: rand::random(),
                transfer,
                export,
                download: None,
                begun: false,
                writes: VecDeque::new(),
                busy: false,
                complete: false,
                // The first chunk written is reported at once.
                last_progress: Instant::now()
                    .checked_sub(PROGRESS_EVERY)
                    .unwrap_or_else(Instant::now),
            },
        );
        if self.blobs.has(&root) {
            // Already here: only the export is left.
            if let Some(fetch) = self.fetches.get_mut(&root) {
                fetch.complete = true;
            }
            return self.finish(root);
        }
        self.drive(rr, root);
    }

    /// Adds `peer` as a source of the download of `root`, if one is under way (a stalled one
    /// goes on).
    pub fn add_source(&mut self, rr: &mut FileBehaviour, root: &ContentHash, peer: PeerId) {
        if let Some(fetch) = self.fetches.get_mut(root) {
            fetch.transfer.add_source(peer);
            self.drive(rr, *root);
        }
    }

    /// Stops the download of `root` without an event (what was verified stays on disk).
    pub fn cancel(&mut self, root: &ContentHash) {
        self.fetches.remove(root);
        self.calls.retain(|_, (r, _)| r != root);
    }

    /// The next event, if any (drain after every call).
    pub fn next_event(&mut self) -> Option<FetchEvent> {
        self.events.pop_front()
    }

    /// The next finished piece of blocking work; pending while there is none (use it in a
    /// `select!` and pass the result to [`Fetcher::work_done`]).
    pub async fn next_work(&mut self) -> Work {
        futures::future::poll_fn(|cx| match self.work.poll_next_unpin(cx) {
            Poll::Ready(Some(work)) => Poll::Ready(work),
            _ => Poll::Pending,
        })
        .await
    }

    /// Blocking work of a download finished.
    pub fn work_done(&mut self, rr: &mut FileBehaviour, work: Work) {
        let Work { root, token, kind } = work;
        if self.fetches.get(&root).is_none_or(|f| f.token != token) {
            // The work of an earlier download of the same file (it ended meanwhile).
            return;
        }
        match kind {
            WorkKind::Begun(result) => self.begun(rr, root, result),
            WorkKind::Written {
                index,
                download,
                result,
            } => self.written(rr, root, index, *download, result),
            WorkKind::Finished(result) => self.finished(root, result),
        }
    }

    /// Takes one event of the `/confab/file/1` behaviour: answers to this fetcher's requests
    /// (and their failures) go to their downloads — drain [`Fetcher::next_event`] after —, failed
    /// inbound streams are logged, and a request from a peer comes back for the owner to serve.
    pub fn handle_event(
        &mut self,
        rr: &mut FileBehaviour,
        event: request_response::Event<FileRequest, FileResponse>,
    ) -> Option<Inbound> {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                return Some(Inbound {
                    peer,
                    request,
                    channel,
                });
            }
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => self.response(rr, request_id, Ok(response)),
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                tracing::debug!("file request to {peer} failed: {error}");
                self.response(rr, request_id, Err(()));
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!("file request from {peer} failed: {error}");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
        None
    }

    /// A response (or a failure) to one of the requests this fetcher sent (others are ignored).
    fn response(
        &mut self,
        rr: &mut FileBehaviour,
        request: OutboundRequestId,
        response: Result<FileResponse, ()>,
    ) {
        let Some((root, id)) = self.calls.remove(&request) else {
            return;
        };
        let now = Instant::now();
        if let Some(fetch) = self.fetches.get_mut(&root) {
            match response {
                Ok(response) => fetch.transfer.response(id, response, now),
                Err(()) => fetch.transfer.request_failed(id, now),
            }
        }
        self.drive(rr, root);
    }

    /// Lets every download notice its timeouts (call every second or so).
    pub fn tick(&mut self, rr: &mut FileBehaviour) {
        let roots: Vec<ContentHash> = self.fetches.keys().copied().collect();
        for root in roots {
            self.drive(rr, root);
        }
    }

    /// Carries out what the transfer of `root` wants now.
    fn drive(&mut self, rr: &mut FileBehaviour, root: ContentHash) {
        let now = Instant::now();
        let Some(fetch) = self.fetches.get_mut(&root) else {
            return;
        };
        if fetch.complete {
            // Every chunk is in (or the file was here already): only writes and the finish are
            // left, never a request.
            return self.pump(root);
        }
        let token = fetch.token;
        for action in fetch.transfer.poll(now) {
            match action {
                Action::Request { id, peer, request } => {
                    let outbound = rr.send_request(&peer, request);
                    self.calls.insert(outbound, (root, id));
                }
                Action::HashListReady(list) => {
                    let blobs = self.blobs.clone();
                    let size = list.size();
                    self.work.push(Box::pin(async move {
                        let result = tokio::task::spawn_blocking(move || {
                            blobs
                                .begin_download(root, size, list)
                                .map_err(|e| e.to_string())
                        })
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()));
                        Work {
                            root,
                            token,
                            kind: WorkKind::Begun(result),
                        }
                    }));
                }
                Action::Write { index, bytes } => fetch.writes.push_back((index, bytes)),
                Action::DropSource { peer, reason } => {
                    tracing::warn!("dropping {peer} as a source of {root:?}: {reason}");
                }
                Action::Complete => fetch.complete = true,
                Action::Failed { reason } => return self.fail(root, reason.to_string()),
            }
        }
        self.pump(root);
    }

    /// The resumable download exists (or could not be made).
    fn begun(
        &mut self,
        rr: &mut FileBehaviour,
        root: ContentHash,
        result: Result<Download, String>,
    ) {
        let Some(fetch) = self.fetches.get_mut(&root) else {
            return;
        };
        if fetch.begun {
            // A second hash list of the same download: the first one is in use.
            tracing::debug!("ignoring a second start of the download of {root:?}");
            return;
        }
        match result {
            Ok(download) => {
                fetch.begun = true;
                fetch.transfer.set_missing(download.missing());
                fetch.download = Some(download);
                self.drive(rr, root);
            }
            Err(e) => self.fail(root, format!("cannot store the file: {e}")),
        }
    }

    /// Starts the next write, or the finish, if nothing runs.
    fn pump(&mut self, root: ContentHash) {
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
            self.work.push(Box::pin(async move {
                let written = tokio::task::spawn_blocking(move || {
                    let result = download.write_chunk(u64::from(index), &bytes);
                    (download, result)
                })
                .await;
                let kind = match written {
                    Ok((download, result)) => WorkKind::Written {
                        index,
                        download: Box::new(download),
                        result,
                    },
                    // The download went with the thread; the next start resumes from disk.
                    Err(e) => WorkKind::Finished(Err(format!("a chunk write stopped: {e}"))),
                };
                Work { root, token, kind }
            }));
            return;
        }
        if fetch.complete {
            self.finish(root);
        }
    }

    /// A chunk is written (or refused): tell the transfer, report progress, go on.
    fn written(
        &mut self,
        rr: &mut FileBehaviour,
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
            self.events
                .push_back(FetchEvent::Progress { root, done, total });
        }
        self.drive(rr, root);
    }

    /// Every chunk is in: finish the blob and export it if asked.
    fn finish(&mut self, root: ContentHash) {
        let Some(fetch) = self.fetches.get_mut(&root) else {
            return;
        };
        fetch.busy = true;
        let token = fetch.token;
        let download = fetch.download.take();
        let (blobs, export) = (self.blobs.clone(), fetch.export.clone());
        self.work.push(Box::pin(async move {
            let result = tokio::task::spawn_blocking(move || {
                if let Some(download) = download {
                    download.finish().map_err(|e| e.to_string())?;
                }
                let Some(Export { dir, name, key }) = export else {
                    return Ok(None);
                };
                std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                match key {
                    Some(key) => blobs.export_decrypted(&root, &dir, &name, &key),
                    None => blobs.export(&root, &dir, &name),
                }
                .map(Some)
                .map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            Work {
                root,
                token,
                kind: WorkKind::Finished(result),
            }
        }));
    }

    /// The download is over.
    fn finished(&mut self, root: ContentHash, result: Result<Option<PathBuf>, String>) {
        match result {
            Ok(path) => {
                self.cancel(&root);
                self.events.push_back(FetchEvent::Finished {
                    root,
                    result: Ok(path),
                });
            }
            Err(e) => self.fail(root, e),
        }
    }

    /// Gives up on `root` for now (what is verified stays on disk for the next attempt).
    fn fail(&mut self, root: ContentHash, error: String) {
        if self.fetches.contains_key(&root) {
            self.cancel(&root);
            self.events.push_back(FetchEvent::Finished {
                root,
                result: Err(error),
            });
        }
    }
}
