//! One download from several sources, sans-IO: which `/confab/file/1` requests to send now and
//! what to do with what comes back.
//!
//! The event loop owns one [`Transfer`] per file being fetched. It reports what happened — a
//! source connected ([`Transfer::add_source`]) or gone ([`Transfer::remove_source`]), a response
//! ([`Transfer::response`]), a failed request ([`Transfer::request_failed`]), the store's verdict on
//! a chunk ([`Transfer::chunk_written`], [`Transfer::chunk_rejected`]) — and after every report asks
//! [`Transfer::poll`] what to do now: the [`Action`]s to perform, in order. Nothing here touches
//! the network or the disk, and time only comes in as `now`.
//!
//! # How a download goes
//!
//! 1. **The hash list.** Pages are asked for ([`FileRequest::HashList`]) from one source at a
//!    time, one page on the wire at a time, and all pages of one attempt come from the same
//!    source: so a list that does not verify has exactly one culprit, who is dropped for good
//!    ([`DropReason::BadHashList`]), and the list is fetched again, from the start, from someone
//!    else. A list is only 32 bytes per chunk (a single page up to 8 GiB of file), so starting
//!    over costs little. A source that does not have the list is dropped ([`DropReason::NoHashList`])
//!    but not banned: it may get the file later. Once the list verifies against the root and the
//!    size from the attachment: [`Action::HashListReady`]. The loop then calls
//!    `BlobStore::begin_download` and reports the chunks still missing with
//!    [`Transfer::set_missing`] (after a restart, only those not yet on disk).
//! 2. **The chunks**, lowest index first, each from one source at a time. At most
//!    [`Limits::window`] chunks are *in flight* in total — requested, or received and handed to
//!    the store but not yet confirmed, so at most that many chunks' bytes are ever in memory —
//!    and at most [`Limits::per_source`] requests wait on any one source. Each chunk goes to the
//!    eligible source with the fewest requests waiting, so sources share the window. A received
//!    chunk becomes [`Action::Write`]; the store verifies it. A chunk the store rejects bans the
//!    source that served it ([`DropReason::BadChunk`]) and goes back to the queue, to be fetched
//!    from another source.
//! 3. **The end.** [`Action::Complete`] once every missing chunk is written (the loop then calls
//!    `Download::finish`).
//!
//! # Sources and failures
//!
//! - `Busy`, a failed request and a timed-out one ([`Limits::request_timeout`]; the transfer
//!   fails its own overdue requests in [`Transfer::poll`]) back the source off:
//!   [`TRANSFER_BACKOFF_MIN`] doubling to [`TRANSFER_BACKOFF_MAX`], reset by a good answer. Several
//!   requests failing together (a peer gone quiet with eight requests waiting) back it off once,
//!   not eight times. The work goes back to the queue at once, for any other source.
//! - `NotFound` for a chunk marks that chunk unavailable from that source only — other receivers
//!   serve what they already have. A source's marks are forgotten after
//!   [`TRANSFER_NOT_FOUND_RETRY`], since such a partial source keeps getting chunks.
//! - A banned source is never asked again: [`Transfer::add_source`] refuses it (the most recent
//!   [`MAX_TRANSFER_BANNED`] bans are remembered). A response that does not answer its request
//!   (a chunk for a hash list, another chunk's index) bans too.
//! - **Stalled is not final.** When no source is left, or the sources left lack every chunk still
//!   missing, the transfer is [`Status::Stalled`] and [`Action::Failed`] is emitted, once per
//!   stall (again only after a source was added or progress was made). The transfer keeps its
//!   state: a later [`Transfer::add_source`] resumes it. Giving up — reporting the transfer as
//!   failed for good and dropping it — is the event loop's call, after a timeout of its choosing.
//!
//! # Bounds
//!
//! Sources ≤ [`MAX_TRANSFER_SOURCES`]; requests on the wire ≤ [`Limits::window`] (one during the
//! hash list); chunks in memory ≤ [`Limits::window`]; the queue and each source's unavailable
//! marks ≤ the file's chunk count (≤ [`MAX_CHUNKS`]); the assembled hash list ≤ 32 bytes ×
//! [`MAX_CHUNKS`]; banned peers ≤ [`MAX_TRANSFER_BANNED`]. Every bound of this module is a `const`
//! below.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use confab_protocol::ContentHash;
use confab_protocol::file::{FileRequest, FileResponse};
use libp2p::PeerId;

use super::MAX_CHUNKS;
use super::hashing::{self, HASH_LEN, HashList, VerifyError};

/// Chunks in flight per transfer at most, by default ([`Limits::window`]): 16 MiB at the 1 MiB
/// chunk size — enough to fill a fast link's bandwidth-delay product, little enough to hold.
pub(crate) const TRANSFER_WINDOW: usize = 16;

/// Requests waiting on one source at most, by default ([`Limits::per_source`]): half the window,
/// so that with two sources or more no single one holds all of it.
pub(crate) const TRANSFER_PER_SOURCE: usize = 8;

/// How long a request may wait for its response, by default ([`Limits::request_timeout`]).
pub(crate) const TRANSFER_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Sources of one transfer at most: the sender's devices, other receivers, the bootstrap.
pub(crate) const MAX_TRANSFER_SOURCES: usize = 64;

/// Banned sources remembered per transfer (the oldest ban is forgotten first).
pub(crate) const MAX_TRANSFER_BANNED: usize = 256;

/// First back-off of a source after `Busy` or a failed request.
pub(crate) const TRANSFER_BACKOFF_MIN: Duration = Duration::from_secs(1);

/// Longest back-off of a source: the back-off doubles up to this.
pub(crate) const TRANSFER_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How long a source's `NotFound` for a chunk is believed: after this it is asked again, since a
/// partial source (another receiver) keeps getting chunks.
pub(crate) const TRANSFER_NOT_FOUND_RETRY: Duration = Duration::from_secs(10);

/// The tunable limits of a [`Transfer`]; [`Limits::default`] takes the `TRANSFER_*` constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Chunks in flight at most: requested, or received and not yet confirmed by the store.
    pub(crate) window: usize,
    /// Requests waiting on one source at most.
    pub(crate) per_source: usize,
    /// How long a request may wait for its response before it is failed.
    pub(crate) request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            window: TRANSFER_WINDOW,
            per_source: TRANSFER_PER_SOURCE,
            request_timeout: TRANSFER_REQUEST_TIMEOUT,
        }
    }
}

/// Names one request of one transfer, so that its answer finds it even after a timeout or a
/// repeat of the same request. Unique within its [`Transfer`] only: the event loop keys its own
/// map by the file's root and this id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct RequestId(u64);

/// What the event loop should do now, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Send `request` to `peer` on `/confab/file/1`; answer with [`Transfer::response`] or
    /// [`Transfer::request_failed`] and `id`.
    Request {
        /// Names the request in the answer.
        id: RequestId,
        /// The source asked.
        peer: PeerId,
        /// What to ask.
        request: FileRequest,
    },
    /// The hash list is complete and verified against the root and size: begin the download
    /// with it (`BlobStore::begin_download`) and report the chunks still missing with
    /// [`Transfer::set_missing`].
    HashListReady(HashList),
    /// Write chunk `index` (`Download::write_chunk`, which verifies it), then report
    /// [`Transfer::chunk_written`] or [`Transfer::chunk_rejected`] (or
    /// [`Transfer::chunk_write_failed`] if the disk failed).
    Write {
        /// Which chunk.
        index: u32,
        /// Its bytes as received, not yet verified.
        bytes: Vec<u8>,
    },
    /// `peer` is no longer a source of this file (for the log); its requests were returned to
    /// the queue.
    DropSource {
        /// The source dropped.
        peer: PeerId,
        /// Why.
        reason: DropReason,
    },
    /// Every chunk is written: finish the download (`Download::finish`).
    Complete,
    /// The transfer is [`Status::Stalled`]: it cannot go on with the sources it has. Not final —
    /// a later [`Transfer::add_source`] resumes it; the loop decides when to give up.
    Failed {
        /// Why.
        reason: FailReason,
    },
}

/// Why a source was dropped ([`Action::DropSource`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum DropReason {
    /// It served a chunk the store rejected (wrong bytes or length). Banned.
    #[error("served chunk {index}, which failed verification")]
    BadChunk {
        /// The chunk.
        index: u32,
    },
    /// It served a hash list that does not verify, or pages that do not fit together. Banned.
    #[error("served a bad hash list: {0}")]
    BadHashList(BadHashList),
    /// It does not have the hash list. Not banned: it may be added again later.
    #[error("does not have the hash list")]
    NoHashList,
    /// It answered something other than what was asked. Banned.
    #[error("answered something other than what was asked")]
    UnexpectedResponse,
}

impl DropReason {
    /// Whether the source is banned from this transfer for good.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn is_ban(&self) -> bool {
        !matches!(self, DropReason::NoHashList)
    }
}

/// What was wrong with a hash list ([`DropReason::BadHashList`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum BadHashList {
    /// A page starting elsewhere than asked.
    #[error("a page starting at chunk {actual}, asked for {expected}")]
    WrongPage {
        /// The chunk asked for.
        expected: u32,
        /// The chunk the page starts at.
        actual: u32,
    },
    /// Pages disagreeing on the chunk size.
    #[error("pages disagree on the chunk size")]
    Inconsistent,
    /// A chunk size that may not be used.
    #[error("invalid chunk size {0}")]
    BadChunkSize(u32),
    /// More chunks than [`MAX_CHUNKS`] at its chunk size.
    #[error("more than {MAX_CHUNKS} chunks")]
    TooLarge,
    /// Not a whole number of hashes.
    #[error("a page of {0} bytes is not a whole number of hashes")]
    Ragged(usize),
    /// An empty page before the end of the list (it would never end).
    #[error("an empty page before the end")]
    EmptyPage,
    /// More hashes than the file has chunks.
    #[error("more hashes than chunks")]
    TooMany,
    /// A list for a file of another size than the attachment's.
    #[error("a hash list for {actual} bytes, expected {expected}")]
    WrongSize {
        /// The size from the attachment.
        expected: u64,
        /// The size the list declares.
        actual: u64,
    },
    /// The list does not hash to the root.
    #[error("the hash list does not match the root")]
    RootMismatch,
    /// The list could not be put together (`HashList::from_parts`; the checks above make this
    /// unreachable, but a refusal is better than a panic).
    #[error("{0}")]
    Decode(String),
}

impl From<VerifyError> for BadHashList {
    fn from(e: VerifyError) -> Self {
        match e {
            VerifyError::WrongSize { expected, actual } => Self::WrongSize { expected, actual },
            _ => Self::RootMismatch,
        }
    }
}

/// Why the transfer is stalled ([`Action::Failed`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum FailReason {
    /// No source is left.
    #[error("no source left")]
    NoSources,
    /// Every source left said it does not have any of the chunks still missing.
    #[error("no source has the {missing} chunks still missing")]
    NotAvailable {
        /// Chunks still missing.
        missing: usize,
    },
}

/// Where a transfer stands ([`Transfer::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Fetching the hash list.
    FetchingHashList,
    /// The hash list is ready; waiting for [`Transfer::set_missing`].
    AwaitingMissing,
    /// Fetching chunks.
    FetchingChunks,
    /// Cannot go on with the sources it has (see [`FailReason`]); resumes when one is added.
    Stalled,
    /// Every chunk is written.
    Complete,
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// The hash list page from chunk `start` on.
    Page { start: u32 },
    /// Chunk `index`.
    Chunk { index: u32 },
}

/// A request on the wire.
#[derive(Debug)]
struct InFlight {
    peer: PeerId,
    want: Want,
    /// Failed by [`Transfer::poll`] from then on.
    deadline: Instant,
}

/// A peer that may have the file.
#[derive(Debug)]
struct Source {
    peer: PeerId,
    /// Requests waiting on it.
    in_flight: usize,
    /// Not asked before then (after `Busy` or a failure).
    retry_at: Option<Instant>,
    /// The next back-off.
    backoff: Duration,
    /// Chunks it said it does not have.
    lacks: BTreeSet<u32>,
    /// When `lacks` is forgotten.
    lacks_until: Option<Instant>,
}

impl Source {
    fn new(peer: PeerId) -> Self {
        Self {
            peer,
            in_flight: 0,
            retry_at: None,
            backoff: TRANSFER_BACKOFF_MIN,
            lacks: BTreeSet::new(),
            lacks_until: None,
        }
    }

    /// Whether it may be asked at `now` (its back-off is over).
    fn ready(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|t| t <= now)
    }

    /// `Busy` or a failure: not asked again for a while. Failures while it is already backed off
    /// (the other requests of a burst) do not lengthen the back-off.
    fn back_off(&mut self, now: Instant) {
        if self.ready(now) {
            self.retry_at = Some(now + self.backoff);
            self.backoff = (self.backoff * 2).min(TRANSFER_BACKOFF_MAX);
        }
    }

    /// A good answer: back to full speed.
    fn answered(&mut self) {
        self.retry_at = None;
        self.backoff = TRANSFER_BACKOFF_MIN;
    }

    /// Whether it said it lacks every one of `chunks`.
    fn lacks_all(&self, chunks: &BTreeSet<u32>) -> bool {
        self.lacks.len() >= chunks.len() && chunks.iter().all(|i| self.lacks.contains(i))
    }
}

/// The hash list being assembled.
#[derive(Debug, Default)]
struct ListFetch {
    /// The source of every page so far (one attempt, one source).
    from: Option<PeerId>,
    /// The chunk size the first page declared.
    chunk_size: Option<u32>,
    /// The hashes so far, concatenated.
    hashes: Vec<u8>,
}

/// Where the transfer is.
#[derive(Debug)]
enum Phase {
    HashList(ListFetch),
    AwaitingMissing,
    Chunks,
    Complete,
}

/// One file being fetched from several sources: the scheduler's state. See the module docs.
#[derive(Debug)]
pub(crate) struct Transfer {
    root: ContentHash,
    /// The file's size, from the attachment.
    size: u64,
    limits: Limits,
    phase: Phase,
    /// In the order added (earlier ones win ties).
    sources: Vec<Source>,
    /// Oldest first.
    banned: VecDeque<PeerId>,
    requests: BTreeMap<RequestId, InFlight>,
    next_id: u64,
    /// Known once the hash list is.
    chunk_size: u32,
    chunk_count: u32,
    /// Chunks to request, neither on the wire nor being written.
    queue: BTreeSet<u32>,
    /// Chunks handed to the store, with the source that served each.
    writing: BTreeMap<u32, PeerId>,
    bytes_had: u64,
    /// Actions produced by the inputs since the last poll.
    out: Vec<Action>,
    /// [`Action::Failed`] was emitted and nothing changed since.
    stall_reported: bool,
}

impl Transfer {
    /// A transfer of the file named `root` of `size` bytes (both from the attachment), with the
    /// default [`Limits`], starting with the hash list. It has no source yet.
    pub(crate) fn new(root: ContentHash, size: u64) -> Self {
        Self::with_limits(root, size, Limits::default())
    }

    /// [`Transfer::new`] with other limits (each at least 1).
    pub(crate) fn with_limits(root: ContentHash, size: u64, limits: Limits) -> Self {
        Self {
            root,
            size,
            limits: Limits {
                window: limits.window.max(1),
                per_source: limits.per_source.max(1),
                request_timeout: limits.request_timeout,
            },
            phase: Phase::HashList(ListFetch::default()),
            sources: Vec::new(),
            banned: VecDeque::new(),
            requests: BTreeMap::new(),
            next_id: 0,
            chunk_size: 0,
            chunk_count: 0,
            queue: BTreeSet::new(),
            writing: BTreeMap::new(),
            bytes_had: 0,
            out: Vec::new(),
            stall_reported: false,
        }
    }

    /// A transfer whose hash list is already had — a partial download resumed after a restart,
    /// with the list from the store (which verified it against `root`). It starts waiting for
    /// [`Transfer::set_missing`].
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn with_hash_list(root: ContentHash, list: &HashList, limits: Limits) -> Self {
        let mut transfer = Self::with_limits(root, list.size(), limits);
        transfer.list_ready(list);
        transfer
    }

    /// Where the transfer stands.
    pub(crate) fn status(&self) -> Status {
        match self.phase {
            Phase::Complete => Status::Complete,
            Phase::AwaitingMissing => Status::AwaitingMissing,
            Phase::HashList(_) if self.sources.is_empty() => Status::Stalled,
            Phase::HashList(_) => Status::FetchingHashList,
            Phase::Chunks if self.stuck() => Status::Stalled,
            Phase::Chunks => Status::FetchingChunks,
        }
    }

    /// Bytes verified and written so far, and the file's size. Nothing counts as had before
    /// [`Transfer::set_missing`].
    pub(crate) fn progress(&self) -> (u64, u64) {
        (self.bytes_had, self.size)
    }

    /// The sources, in the order they were added.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn sources(&self) -> impl Iterator<Item = &PeerId> + '_ {
        self.sources.iter().map(|s| &s.peer)
    }

    /// Requests on the wire.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn in_flight(&self) -> usize {
        self.requests.len()
    }

    /// Requests waiting on `peer`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn in_flight_to(&self, peer: &PeerId) -> usize {
        self.source(peer).map_or(0, |s| s.in_flight)
    }

    /// The next time [`Transfer::poll`] has something to do without any input: a request's
    /// deadline, the end of a back-off, a `NotFound` to forget. `None` if only an input can
    /// change anything.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        if matches!(self.phase, Phase::Complete) {
            return None;
        }
        let deadlines = self.requests.values().map(|r| r.deadline);
        let sources = self
            .sources
            .iter()
            .flat_map(|s| [s.retry_at, s.lacks_until].into_iter().flatten());
        deadlines.chain(sources).min()
    }

    /// `peer` may have the file (it connected, or is known to hold it). Returns whether it is a
    /// source now: not if it already was, is banned, or [`MAX_TRANSFER_SOURCES`] are had.
    pub(crate) fn add_source(&mut self, peer: PeerId) -> bool {
        if matches!(self.phase, Phase::Complete)
            || self.sources.len() >= MAX_TRANSFER_SOURCES
            || self.banned.contains(&peer)
            || self.source(&peer).is_some()
        {
            return false;
        }
        self.sources.push(Source::new(peer));
        self.stall_reported = false;
        true
    }

    /// `peer` is gone (disconnected): its requests go back to the queue, for other sources. It
    /// may be added again.
    pub(crate) fn remove_source(&mut self, peer: &PeerId) {
        let Some(at) = self.sources.iter().position(|s| s.peer == *peer) else {
            return;
        };
        self.sources.remove(at);
        let ids: Vec<RequestId> = self
            .requests
            .iter()
            .filter(|(_, r)| r.peer == *peer)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(request) = self.requests.remove(&id) {
                self.give_back(request.want);
            }
        }
    }

    /// The chunks still missing, after [`Action::HashListReady`] (`Download::missing`). Only
    /// these are requested; indices past the end are ignored. Ignored in any other state.
    pub(crate) fn set_missing(&mut self, missing: impl IntoIterator<Item = u64>) {
        if !matches!(self.phase, Phase::AwaitingMissing) {
            return;
        }
        let count = self.chunk_count;
        self.queue = missing
            .into_iter()
            .filter_map(|i| u32::try_from(i).ok())
            .filter(|&i| i < count)
            .collect();
        let missing_bytes: u64 = self.queue.iter().map(|&i| self.chunk_len(i)).sum();
        self.bytes_had = self.size - missing_bytes;
        self.phase = Phase::Chunks;
    }

    /// The answer to request `id`. Answers to requests no longer waited for (timed out, their
    /// source removed) are ignored.
    pub(crate) fn response(&mut self, id: RequestId, response: FileResponse, now: Instant) {
        let Some(request) = self.requests.remove(&id) else {
            return;
        };
        let peer = request.peer;
        if let Some(source) = self.source_mut(&peer) {
            source.in_flight -= 1;
        }
        match (request.want, response) {
            (
                Want::Page { start },
                FileResponse::HashList {
                    size,
                    chunk_size,
                    start: actual,
                    hashes,
                },
            ) => self.page_received(peer, start, size, chunk_size, actual, &hashes),
            (Want::Page { .. }, FileResponse::NotFound) => {
                self.give_back(request.want);
                self.drop_source(peer, DropReason::NoHashList);
            }
            (Want::Chunk { index }, FileResponse::Chunk { index: got, bytes }) if got == index => {
                if let Some(source) = self.source_mut(&peer) {
                    source.answered();
                }
                self.writing.insert(index, peer);
                self.out.push(Action::Write { index, bytes });
            }
            (Want::Chunk { index }, FileResponse::NotFound) => {
                if let Some(source) = self.source_mut(&peer) {
                    source.lacks.insert(index);
                    source
                        .lacks_until
                        .get_or_insert(now + TRANSFER_NOT_FOUND_RETRY);
                }
                self.give_back(request.want);
            }
            // Busy, or an answer from a newer version: try again later.
            (_, FileResponse::Busy | FileResponse::Unknown) => {
                self.give_back(request.want);
                if let Some(source) = self.source_mut(&peer) {
                    source.back_off(now);
                }
            }
            _ => {
                self.give_back(request.want);
                self.ban(peer, DropReason::UnexpectedResponse);
            }
        }
    }

    /// Request `id` failed (the stream broke, the peer refused it, the loop's own timeout): its
    /// work goes back to the queue and the source is backed off.
    pub(crate) fn request_failed(&mut self, id: RequestId, now: Instant) {
        let Some(request) = self.requests.remove(&id) else {
            return;
        };
        if let Some(source) = self.source_mut(&request.peer) {
            source.in_flight -= 1;
            source.back_off(now);
        }
        self.give_back(request.want);
    }

    /// Chunk `index` from an [`Action::Write`] is verified and on disk.
    pub(crate) fn chunk_written(&mut self, index: u32) {
        if self.writing.remove(&index).is_some() {
            self.bytes_had += self.chunk_len(index);
            self.stall_reported = false;
        }
    }

    /// The store rejected chunk `index` from an [`Action::Write`] (it does not match its hash):
    /// the source that served it is banned, and the chunk is fetched again from another.
    pub(crate) fn chunk_rejected(&mut self, index: u32) {
        if let Some(peer) = self.writing.remove(&index) {
            self.queue.insert(index);
            self.ban(peer, DropReason::BadChunk { index });
        }
    }

    /// Writing chunk `index` failed for a reason of our own (the disk): nobody is blamed and the
    /// chunk is fetched again. (A loop that would rather give up just drops the transfer.)
    pub(crate) fn chunk_write_failed(&mut self, index: u32) {
        if self.writing.remove(&index).is_some() {
            self.queue.insert(index);
        }
    }

    /// What to do now: the actions the inputs since the last poll produced, then the requests to
    /// send, then [`Action::Complete`] or [`Action::Failed`] if the transfer just got there.
    /// Fails the requests past their deadline first. Call it after every input and at
    /// [`Transfer::next_deadline`].
    pub(crate) fn poll(&mut self, now: Instant) -> Vec<Action> {
        self.expire(now);
        for source in &mut self.sources {
            if source.retry_at.is_some_and(|t| t <= now) {
                source.retry_at = None;
            }
            if source.lacks_until.is_some_and(|t| t <= now) {
                source.lacks.clear();
                source.lacks_until = None;
            }
        }
        match self.phase {
            Phase::HashList(_) => self.request_page(now),
            Phase::Chunks => {
                self.request_chunks(now);
                if self.queue.is_empty() && self.requests.is_empty() && self.writing.is_empty() {
                    self.phase = Phase::Complete;
                    self.out.push(Action::Complete);
                }
            }
            Phase::AwaitingMissing | Phase::Complete => {}
        }
        if self.status() == Status::Stalled && !self.stall_reported {
            self.stall_reported = true;
            let reason = if self.sources.is_empty() {
                FailReason::NoSources
            } else {
                FailReason::NotAvailable {
                    missing: self.queue.len(),
                }
            };
            self.out.push(Action::Failed { reason });
        }
        std::mem::take(&mut self.out)
    }

    fn source(&self, peer: &PeerId) -> Option<&Source> {
        self.sources.iter().find(|s| s.peer == *peer)
    }

    fn source_mut(&mut self, peer: &PeerId) -> Option<&mut Source> {
        self.sources.iter_mut().find(|s| s.peer == *peer)
    }

    /// The length of chunk `index` (known once the hash list is).
    fn chunk_len(&self, index: u32) -> u64 {
        let start = u64::from(index) * u64::from(self.chunk_size);
        self.size
            .saturating_sub(start)
            .min(u64::from(self.chunk_size))
    }

    /// Chunks are missing, nothing is on the wire and no source has any of them.
    fn stuck(&self) -> bool {
        !self.queue.is_empty()
            && self.requests.is_empty()
            && self.sources.iter().all(|s| s.lacks_all(&self.queue))
    }

    /// The work of a request that got no usable answer goes back: a chunk to the queue, a hash
    /// list attempt starts over.
    fn give_back(&mut self, want: Want) {
        match (want, &mut self.phase) {
            (Want::Chunk { index }, Phase::Chunks) => {
                self.queue.insert(index);
            }
            (Want::Page { .. }, Phase::HashList(fetch)) => *fetch = ListFetch::default(),
            _ => {}
        }
    }

    /// Removes `peer` as a source, returning its work to the queue, and tells the loop.
    fn drop_source(&mut self, peer: PeerId, reason: DropReason) {
        self.remove_source(&peer);
        self.out.push(Action::DropSource { peer, reason });
    }

    /// Drops `peer` for good: it served bad data.
    /// Said once: a second bad chunk of a source already banned (it was being written when the
    /// first was rejected) changes nothing.
    fn ban(&mut self, peer: PeerId, reason: DropReason) {
        if self.banned.contains(&peer) {
            return;
        }
        if self.banned.len() >= MAX_TRANSFER_BANNED {
            self.banned.pop_front();
        }
        self.banned.push_back(peer);
        self.drop_source(peer, reason);
    }

    /// Records a request and emits it.
    fn send(&mut self, peer: PeerId, want: Want, now: Instant) {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        self.requests.insert(
            id,
            InFlight {
                peer,
                want,
                deadline: now + self.limits.request_timeout,
            },
        );
        let request = match want {
            Want::Page { start } => FileRequest::HashList {
                root: self.root,
                start,
            },
            Want::Chunk { index } => FileRequest::Chunk {
                root: self.root,
                index,
            },
        };
        self.out.push(Action::Request { id, peer, request });
    }

    /// Fails the requests past their deadline.
    fn expire(&mut self, now: Instant) {
        let overdue: Vec<RequestId> = self
            .requests
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in overdue {
            self.request_failed(id, now);
        }
    }

    /// Asks for the next hash list page, if none is on the wire: from the source of the pages so
    /// far while it answers, otherwise from the first ready source, from the start.
    fn request_page(&mut self, now: Instant) {
        if !self.requests.is_empty() {
            return;
        }
        let Phase::HashList(fetch) = &mut self.phase else {
            return;
        };
        let continuing = fetch
            .from
            .filter(|peer| self.sources.iter().any(|s| s.peer == *peer && s.ready(now)));
        let peer = match continuing {
            Some(peer) => peer,
            None => {
                let Some(source) = self.sources.iter().find(|s| s.ready(now)) else {
                    return;
                };
                *fetch = ListFetch {
                    from: Some(source.peer),
                    ..ListFetch::default()
                };
                source.peer
            }
        };
        let start = (fetch.hashes.len() / HASH_LEN) as u32;
        if let Some(source) = self.source_mut(&peer) {
            source.in_flight += 1;
        }
        self.send(peer, Want::Page { start }, now);
    }

    /// A hash list page arrived from `peer`, asked for from chunk `expected` on.
    fn page_received(
        &mut self,
        peer: PeerId,
        expected: u32,
        size: u64,
        chunk_size: u32,
        start: u32,
        hashes: &[u8],
    ) {
        let Phase::HashList(fetch) = &mut self.phase else {
            return;
        };
        let have = fetch.hashes.len() / HASH_LEN;
        let fault = if start != expected {
            Some(BadHashList::WrongPage {
                expected,
                actual: start,
            })
        } else if size != self.size {
            Some(BadHashList::WrongSize {
                expected: self.size,
                actual: size,
            })
        } else if !hashing::valid_chunk_size(chunk_size) {
            Some(BadHashList::BadChunkSize(chunk_size))
        } else if fetch.chunk_size.is_some_and(|c| c != chunk_size) {
            Some(BadHashList::Inconsistent)
        } else if hashing::chunk_count(size, chunk_size) > MAX_CHUNKS {
            Some(BadHashList::TooLarge)
        } else if !hashes.len().is_multiple_of(HASH_LEN) {
            Some(BadHashList::Ragged(hashes.len()))
        } else {
            let count = hashing::chunk_count(size, chunk_size) as usize;
            let page = hashes.len() / HASH_LEN;
            if have + page > count {
                Some(BadHashList::TooMany)
            } else if page == 0 && have < count {
                Some(BadHashList::EmptyPage)
            } else {
                None
            }
        };
        if let Some(fault) = fault {
            *fetch = ListFetch::default();
            return self.ban(peer, DropReason::BadHashList(fault));
        }
        fetch.chunk_size = Some(chunk_size);
        fetch.hashes.extend_from_slice(hashes);
        if fetch.hashes.len() / HASH_LEN < hashing::chunk_count(size, chunk_size) as usize {
            // More pages to come, from the same source.
            self.stall_reported = false;
            if let Some(source) = self.source_mut(&peer) {
                source.answered();
            }
            return;
        }
        let fetch = std::mem::take(fetch);
        let list = HashList::from_parts(size, chunk_size, &fetch.hashes)
            .map_err(|e| BadHashList::Decode(e.to_string()))
            .and_then(|list| {
                list.verify(&self.root, self.size)
                    .map(|()| list)
                    .map_err(BadHashList::from)
            });
        match list {
            Ok(list) => {
                self.stall_reported = false;
                if let Some(source) = self.source_mut(&peer) {
                    source.answered();
                }
                self.list_ready(&list);
                self.out.push(Action::HashListReady(list));
            }
            Err(fault) => self.ban(peer, DropReason::BadHashList(fault)),
        }
    }

    /// The hash list is had: chunks come next, once the loop says which are missing.
    fn list_ready(&mut self, list: &HashList) {
        self.chunk_size = list.chunk_size();
        // At most MAX_CHUNKS, checked when the list was assembled or decoded.
        self.chunk_count = u32::try_from(list.chunk_count()).unwrap_or(u32::MAX);
        self.phase = Phase::AwaitingMissing;
    }

    /// Requests queued chunks, lowest first, while the window allows: each from the ready
    /// source with room that has not said it lacks it, the least loaded first.
    fn request_chunks(&mut self, now: Instant) {
        let per_source = self.limits.per_source;
        let mut in_flight = self.requests.len() + self.writing.len();
        let mut picked = Vec::new();
        for &index in &self.queue {
            if in_flight >= self.limits.window {
                break;
            }
            let has_room = |s: &Source| s.ready(now) && s.in_flight < per_source;
            if !self.sources.iter().any(has_room) {
                break;
            }
            let best = self
                .sources
                .iter_mut()
                .filter(|s| has_room(s) && !s.lacks.contains(&index))
                .min_by_key(|s| s.in_flight);
            if let Some(source) = best {
                source.in_flight += 1;
                in_flight += 1;
                picked.push((index, source.peer));
            }
        }
        for (index, peer) in picked {
            self.queue.remove(&index);
            self.send(peer, Want::Chunk { index }, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::MIN_CHUNK_SIZE;
    use crate::files::hashing::ChunkHasher;
    use confab_protocol::limits::MAX_HASH_LIST_PAGE;

    /// Small chunks, to get many of them.
    const CS: u32 = MIN_CHUNK_SIZE;

    /// A file in memory: its bytes, hash list and root.
    struct Blob {
        data: Vec<u8>,
        list: HashList,
        root: ContentHash,
    }

    impl Blob {
        /// `chunks` chunks, the last one `tail` bytes long.
        fn new(chunks: usize, tail: usize) -> Self {
            let len = (chunks - 1) * CS as usize + tail;
            let data: Vec<u8> = (0..len).map(|i| (i * 31 + i / 977) as u8).collect();
            let mut hasher = ChunkHasher::new(CS).unwrap();
            for chunk in data.chunks(CS as usize) {
                hasher.push(chunk).unwrap();
            }
            let list = hasher.finish();
            let root = list.root();
            Self { data, list, root }
        }

        fn chunk(&self, index: u32) -> &[u8] {
            self.data.chunks(CS as usize).nth(index as usize).unwrap()
        }

        fn size(&self) -> u64 {
            self.data.len() as u64
        }
    }

    /// How a fake source behaves.
    #[derive(Debug, Clone, Default)]
    struct Peer {
        /// The chunks it has (`None`: all).
        has: Option<BTreeSet<u32>>,
        /// Answers `NotFound` for the hash list.
        no_list: bool,
        /// Serves a hash list with one hash changed.
        bad_list: bool,
        /// Serves these chunks with a byte flipped.
        corrupt: BTreeSet<u32>,
        /// Hashes per page (0: the most allowed).
        page: usize,
        /// Answers `Busy` to this many requests first.
        busy: u32,
        /// Never answers chunk requests.
        silent_chunks: bool,
    }

    /// A fake network and store around one transfer. Responses are delivered a step after
    /// their request, some at once and some later (a fixed pseudo-random pattern), and every
    /// poll is checked against the limits.
    struct Sim {
        blob: Blob,
        t: Transfer,
        limits: Limits,
        now: Instant,
        peers: BTreeMap<PeerId, Peer>,
        /// Requests sent and not yet answered.
        wire: Vec<(RequestId, PeerId, FileRequest)>,
        /// Missing chunks to report after the hash list (`None`: all).
        missing: Option<Vec<u64>>,
        /// The chunks written to the "store".
        written: BTreeMap<u32, Vec<u8>>,
        /// Chunk requests per source, in order.
        asked: BTreeMap<PeerId, Vec<u32>>,
        /// Hash list requests per source.
        list_asked: BTreeMap<PeerId, usize>,
        /// Who served each written chunk.
        served_by: BTreeMap<u32, PeerId>,
        drops: Vec<(PeerId, DropReason)>,
        failures: Vec<FailReason>,
        complete: bool,
        rng: u64,
    }

    impl Sim {
        fn new(blob: Blob, peers: &[Peer]) -> Self {
            Self::with_limits(blob, peers, Limits::default())
        }

        fn with_limits(blob: Blob, peers: &[Peer], limits: Limits) -> Self {
            let mut t = Transfer::with_limits(blob.root, blob.size(), limits);
            let mut map = BTreeMap::new();
            // Added in the order given: `peer(i)` is the i-th.
            for peer in peers {
                let id = PeerId::random();
                assert!(t.add_source(id));
                map.insert(id, peer.clone());
            }
            Self {
                blob,
                t,
                limits,
                now: Instant::now(),
                peers: map,
                wire: Vec::new(),
                missing: None,
                written: BTreeMap::new(),
                asked: BTreeMap::new(),
                list_asked: BTreeMap::new(),
                served_by: BTreeMap::new(),
                drops: Vec::new(),
                failures: Vec::new(),
                complete: false,
                rng: 0x2545_f491_4f6c_dd1d,
            }
        }

        /// The i-th source added.
        fn peer(&self, i: usize) -> PeerId {
            *self.t.sources().nth(i).unwrap()
        }

        fn coin(&mut self) -> bool {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            !self.rng.is_multiple_of(3)
        }

        /// Polls and performs the actions; checks the limits.
        fn poll(&mut self) -> Vec<Action> {
            let actions = self.t.poll(self.now);
            self.check_limits();
            for action in &actions {
                match action {
                    Action::Request { id, peer, request } => {
                        assert!(
                            !self.drops.iter().any(|(p, r)| p == peer && r.is_ban()),
                            "a banned source asked"
                        );
                        match request {
                            FileRequest::HashList { root, .. } => {
                                assert_eq!(*root, self.blob.root);
                                *self.list_asked.entry(*peer).or_default() += 1;
                            }
                            FileRequest::Chunk { root, index } => {
                                assert_eq!(*root, self.blob.root);
                                assert!(!self.written.contains_key(index), "chunk {index} again");
                                self.asked.entry(*peer).or_default().push(*index);
                            }
                            other => panic!("unexpected request {other:?}"),
                        }
                        self.wire.push((*id, *peer, request.clone()));
                    }
                    Action::HashListReady(list) => {
                        assert_eq!(list.verify(&self.blob.root, self.blob.size()), Ok(()));
                        let missing = self
                            .missing
                            .clone()
                            .unwrap_or_else(|| (0..list.chunk_count()).collect());
                        self.t.set_missing(missing);
                    }
                    Action::Write { index, bytes } => {
                        if self.blob.list.check_chunk(u64::from(*index), bytes).is_ok() {
                            self.written.insert(*index, bytes.clone());
                            self.t.chunk_written(*index);
                        } else {
                            self.t.chunk_rejected(*index);
                        }
                    }
                    Action::DropSource { peer, reason } => {
                        self.drops.push((*peer, reason.clone()));
                    }
                    Action::Complete => {
                        assert!(!self.complete, "Complete twice");
                        self.complete = true;
                    }
                    Action::Failed { reason } => self.failures.push(reason.clone()),
                }
            }
            actions
        }

        /// The limits hold, by the transfer's count and by the wire's.
        fn check_limits(&self) {
            assert!(self.t.in_flight() <= self.limits.window);
            let mut per_peer = BTreeMap::<PeerId, usize>::new();
            for (_, peer, _) in &self.wire {
                *per_peer.entry(*peer).or_default() += 1;
            }
            for n in per_peer.into_values() {
                assert!(n <= self.limits.per_source, "{n} requests on one source");
            }
            for peer in self.t.sources() {
                assert!(self.t.in_flight_to(peer) <= self.limits.per_source);
            }
            let outstanding = self.t.in_flight() + self.t.writing.len();
            assert!(outstanding <= self.limits.window);
        }

        /// What `peer` answers to `request`, or `None` if it stays silent.
        fn answer(&mut self, peer: PeerId, request: &FileRequest) -> Option<FileResponse> {
            let behaviour = self.peers.get_mut(&peer).unwrap();
            if behaviour.busy > 0 {
                behaviour.busy -= 1;
                return Some(FileResponse::Busy);
            }
            let behaviour = behaviour.clone();
            match *request {
                FileRequest::HashList { start, .. } => {
                    if behaviour.no_list {
                        return Some(FileResponse::NotFound);
                    }
                    let page = if behaviour.page == 0 {
                        MAX_HASH_LIST_PAGE
                    } else {
                        behaviour.page
                    };
                    let mut hashes = self.blob.list.page(u64::from(start), page);
                    if behaviour.bad_list && start == 0 {
                        hashes[5] ^= 1;
                    }
                    Some(FileResponse::HashList {
                        size: self.blob.size(),
                        chunk_size: CS,
                        start,
                        hashes,
                    })
                }
                FileRequest::Chunk { index, .. } => {
                    if behaviour.silent_chunks {
                        return None;
                    }
                    if behaviour.has.as_ref().is_some_and(|h| !h.contains(&index)) {
                        return Some(FileResponse::NotFound);
                    }
                    let mut bytes = self.blob.chunk(index).to_vec();
                    if behaviour.corrupt.contains(&index) {
                        bytes[0] ^= 0xFF;
                    }
                    self.served_by.insert(index, peer);
                    Some(FileResponse::Chunk { index, bytes })
                }
                _ => unreachable!(),
            }
        }

        /// Delivers some of the answers waiting, polls, and lets 100 ms pass.
        fn step(&mut self) {
            let wire = std::mem::take(&mut self.wire);
            for (id, peer, request) in wire {
                if !self.coin() {
                    self.wire.push((id, peer, request));
                    continue;
                }
                if let Some(response) = self.answer(peer, &request) {
                    self.t.response(id, response, self.now);
                }
                // A silent peer's request is forgotten by the network; the transfer times it
                // out.
            }
            self.poll();
            self.now += Duration::from_millis(100);
        }

        /// Steps until complete (at most ~5 simulated minutes).
        fn run(&mut self) {
            for _ in 0..3000 {
                if self.complete {
                    return;
                }
                self.step();
            }
            panic!("not complete: {:?}", self.t.status());
        }

        fn assert_whole_file(&self) {
            let data: Vec<u8> = self.written.values().flatten().copied().collect();
            assert_eq!(data, self.blob.data);
            assert_eq!(self.t.progress(), (self.blob.size(), self.blob.size()));
            assert_eq!(self.t.status(), Status::Complete);
        }
    }

    /// The requests among `actions`.
    fn requests(actions: &[Action]) -> Vec<(RequestId, PeerId, FileRequest)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Request { id, peer, request } => Some((*id, *peer, request.clone())),
                _ => None,
            })
            .collect()
    }

    /// The chunk indices requested among `actions`.
    fn chunks_requested(actions: &[Action]) -> Vec<u32> {
        requests(actions)
            .into_iter()
            .filter_map(|(_, _, r)| match r {
                FileRequest::Chunk { index, .. } => Some(index),
                _ => None,
            })
            .collect()
    }

    /// Answers the hash list request among `actions` with the whole list.
    fn serve_list(t: &mut Transfer, blob: &Blob, actions: &[Action], now: Instant) {
        let (id, _, request) = requests(actions).pop().expect("a hash list request");
        assert!(matches!(request, FileRequest::HashList { start: 0, .. }));
        answer_list(t, blob, id, now);
    }

    /// Answers hash list request `id` with the whole list.
    fn answer_list(t: &mut Transfer, blob: &Blob, id: RequestId, now: Instant) {
        let hashes = blob.list.page(0, MAX_HASH_LIST_PAGE);
        t.response(
            id,
            FileResponse::HashList {
                size: blob.size(),
                chunk_size: CS,
                start: 0,
                hashes,
            },
            now,
        );
        let actions = t.poll(now);
        assert!(matches!(&actions[..], [Action::HashListReady(_)]));
    }

    #[test]
    fn happy_path_from_one_source() {
        let mut sim = Sim::new(Blob::new(20, 100), &[Peer::default()]);
        let a = sim.peer(0);
        assert_eq!(sim.t.status(), Status::FetchingHashList);
        assert_eq!(sim.t.progress(), (0, sim.blob.size()));
        let first = sim.poll();
        assert_eq!(requests(&first).len(), 1, "one hash list request");
        assert!(sim.t.next_deadline().is_some());
        sim.run();
        sim.assert_whole_file();
        assert_eq!(sim.list_asked[&a], 1);
        assert_eq!(
            sim.asked[&a],
            (0..20).collect::<Vec<_>>(),
            "in order, once each"
        );
        assert!(sim.drops.is_empty() && sim.failures.is_empty());
        // Done: nothing more, ever.
        assert!(sim.poll().is_empty());
        assert_eq!(sim.t.next_deadline(), None);
        assert!(!sim.t.add_source(PeerId::random()));
    }

    #[test]
    fn an_empty_file_completes_after_its_hash_list() {
        let blob = Blob::new(1, 0);
        assert_eq!(blob.list.chunk_count(), 0);
        let mut sim = Sim::new(blob, &[Peer::default()]);
        sim.run();
        assert_eq!(sim.t.progress(), (0, 0));
        assert!(sim.asked.is_empty());
    }

    #[test]
    fn two_sources_share_the_window() {
        let now = Instant::now();
        let blob = Blob::new(40, CS as usize);
        let mut t = Transfer::new(blob.root, blob.size());
        let (a, b) = (PeerId::random(), PeerId::random());
        assert!(t.add_source(a) && t.add_source(b));
        assert!(!t.add_source(a), "already a source");
        let actions = t.poll(now);
        serve_list(&mut t, &blob, &actions, now);
        assert_eq!(t.status(), Status::AwaitingMissing);
        assert!(t.poll(now).is_empty(), "nothing before set_missing");
        t.set_missing(0..40);

        let sent = requests(&t.poll(now));
        assert_eq!(sent.len(), TRANSFER_WINDOW);
        let to = |peer| {
            sent.iter()
                .filter(|(_, p, _)| *p == peer)
                .map(|(_, _, r)| match r {
                    FileRequest::Chunk { index, .. } => *index,
                    _ => panic!(),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(to(a), [0, 2, 4, 6, 8, 10, 12, 14]);
        assert_eq!(to(b), [1, 3, 5, 7, 9, 11, 13, 15]);
        assert_eq!(t.in_flight_to(&a), TRANSFER_PER_SOURCE);
        assert!(t.poll(now).is_empty(), "the window is full");

        // b answers one: it gets the next chunk, a's share stays as it is.
        let (id, _, _) = sent.iter().find(|(_, p, _)| *p == b).unwrap();
        t.response(
            *id,
            FileResponse::Chunk {
                index: 1,
                bytes: blob.chunk(1).to_vec(),
            },
            now,
        );
        let actions = t.poll(now);
        assert!(matches!(&actions[..], [Action::Write { index: 1, .. }]));
        assert!(
            t.poll(now).is_empty(),
            "a chunk being written still holds its place in the window"
        );
        t.chunk_written(1);
        let actions = t.poll(now);
        assert_eq!(chunks_requested(&actions), [16]);
        assert_eq!(requests(&actions)[0].1, b);
        assert_eq!(t.progress().0, u64::from(CS));

        // The whole run, with answers arriving in any order.
        let mut sim = Sim::new(Blob::new(40, 7), &[Peer::default(), Peer::default()]);
        sim.run();
        sim.assert_whole_file();
        let (a, b) = (sim.peer(0), sim.peer(1));
        assert!(sim.asked[&a].len() >= 10 && sim.asked[&b].len() >= 10);
    }

    #[test]
    fn a_source_serving_a_corrupted_chunk_is_dropped_and_another_serves_it() {
        // a corrupts whatever it serves; it is dropped at the first chunk it serves (`Sim` checks
        // that it is never asked again).
        let bad = Peer {
            corrupt: (0..30).collect(),
            ..Peer::default()
        };
        let mut sim = Sim::new(Blob::new(30, 500), &[bad, Peer::default()]);
        let (a, b) = (sim.peer(0), sim.peer(1));
        sim.run();
        sim.assert_whole_file();
        let [(dropped, DropReason::BadChunk { index })] = sim.drops[..] else {
            panic!("{:?}", sim.drops);
        };
        assert_eq!(dropped, a);
        assert!(sim.asked[&a].contains(&index));
        assert_eq!(
            sim.served_by[&index], b,
            "the chunk came from the other source"
        );
        assert!(sim.served_by.values().all(|p| *p == b));
        assert_eq!(sim.t.sources().collect::<Vec<_>>(), [&b]);
        assert!(!sim.t.add_source(a), "banned for good");
    }

    #[test]
    fn a_bad_hash_list_drops_its_source_and_the_list_comes_from_another() {
        // Pages of 3 hashes: the list comes in 4 pages; the bad one only fails at the end.
        let paged = |bad_list| Peer {
            page: 3,
            bad_list,
            ..Peer::default()
        };
        let absent = Peer {
            no_list: true,
            ..Peer::default()
        };
        let mut sim = Sim::new(Blob::new(11, 9), &[absent, paged(true), paged(false)]);
        let (none, bad, good) = (sim.peer(0), sim.peer(1), sim.peer(2));
        sim.run();
        sim.assert_whole_file();
        assert_eq!(
            sim.drops,
            [
                (none, DropReason::NoHashList),
                (bad, DropReason::BadHashList(BadHashList::RootMismatch)),
            ]
        );
        assert_eq!(sim.list_asked[&bad], 4);
        assert_eq!(sim.list_asked[&good], 4);
        assert!(!sim.asked.contains_key(&bad));
        // Not having the list is no ban.
        assert!(!sim.t.banned.contains(&none));
        assert!(sim.t.banned.contains(&bad));
    }

    #[test]
    fn inconsistent_hash_list_pages_are_refused() {
        let now = Instant::now();
        let blob = Blob::new(5, 1);
        let hashes = blob.list.page(0, MAX_HASH_LIST_PAGE);
        let cases = [
            (blob.size() + 1, CS, 0, hashes.clone(), "wrong size"),
            (blob.size(), CS + 1, 0, hashes.clone(), "bad chunk size"),
            (blob.size(), CS, 1, hashes.clone(), "wrong page"),
            (blob.size(), CS, 0, Vec::new(), "empty page"),
            (
                blob.size(),
                CS,
                0,
                [&hashes[..], &[0; 32][..]].concat(),
                "too many",
            ),
        ];
        for (size, chunk_size, start, hashes, what) in cases {
            let mut t = Transfer::new(blob.root, blob.size());
            let (a, b) = (PeerId::random(), PeerId::random());
            t.add_source(a);
            t.add_source(b);
            let (id, peer, _) = requests(&t.poll(now)).pop().unwrap();
            assert_eq!(peer, a);
            let response = FileResponse::HashList {
                size,
                chunk_size,
                start,
                hashes,
            };
            t.response(id, response, now);
            let actions = t.poll(now);
            assert!(
                matches!(
                    &actions[0],
                    Action::DropSource { peer, reason: DropReason::BadHashList(_) } if *peer == a
                ),
                "{what}: {actions:?}"
            );
            // Another source is asked, from the start.
            assert!(matches!(
                &requests(&actions)[..],
                [(_, p, FileRequest::HashList { start: 0, .. })] if *p == b
            ));
        }
    }

    #[test]
    fn resume_requests_only_the_missing_chunks() {
        let blob = Blob::new(6, 10);
        let size = blob.size();
        let mut sim = Sim::new(blob, &[Peer::default()]);
        sim.missing = Some(vec![1, 4, 5, 99]);
        let a = sim.peer(0);
        sim.run();
        assert_eq!(sim.asked[&a], [1, 4, 5]);
        assert_eq!(sim.t.progress(), (size, size));

        // The same from a list already in the store.
        let blob = Blob::new(6, 10);
        let now = Instant::now();
        let mut t = Transfer::with_hash_list(blob.root, &blob.list, Limits::default());
        assert_eq!(t.status(), Status::AwaitingMissing);
        t.add_source(PeerId::random());
        t.set_missing([1, 4, 5]);
        // Had: chunks 0, 2, 3 (full).
        assert_eq!(t.progress(), (3 * u64::from(CS), blob.size()));
        assert_eq!(chunks_requested(&t.poll(now)), [1, 4, 5]);
    }

    #[test]
    fn timed_out_and_failed_requests_return_their_chunks_to_the_queue() {
        let t0 = Instant::now();
        let blob = Blob::new(10, 3);
        let mut t = Transfer::new(blob.root, blob.size());
        let a = PeerId::random();
        t.add_source(a);
        let actions = t.poll(t0);
        serve_list(&mut t, &blob, &actions, t0);
        t.set_missing(0..10);
        let sent = requests(&t.poll(t0));
        assert_eq!(chunks_requested(&t.poll(t0)), Vec::<u32>::new());
        assert_eq!(sent.len(), TRANSFER_PER_SOURCE);
        assert_eq!(t.next_deadline(), Some(t0 + TRANSFER_REQUEST_TIMEOUT));

        // One fails early: back to the queue, a backed off for 1 s.
        let t1 = t0 + Duration::from_secs(5);
        t.request_failed(sent[2].0, t1);
        assert!(t.poll(t1).is_empty());
        assert_eq!(t.in_flight(), 7);
        let t2 = t1 + TRANSFER_BACKOFF_MIN;
        // Chunk 2 again: lowest first.
        assert_eq!(chunks_requested(&t.poll(t2)), [2]);

        // The rest time out together: a single back-off (now 2 s), their chunks back in the
        // queue.
        let t3 = t0 + TRANSFER_REQUEST_TIMEOUT;
        assert!(t.poll(t3 - Duration::from_millis(1)).is_empty());
        assert!(t.poll(t3).is_empty());
        assert_eq!(t.in_flight(), 1, "2 is still waiting");
        assert_eq!(t.next_deadline(), Some(t3 + 2 * TRANSFER_BACKOFF_MIN));
        let again = chunks_requested(&t.poll(t3 + Duration::from_secs(2)));
        assert_eq!(again, [0, 1, 3, 4, 5, 6, 7]);
        // A late answer to a timed-out request is ignored.
        t.response(
            sent[0].0,
            FileResponse::Chunk {
                index: 0,
                bytes: blob.chunk(0).to_vec(),
            },
            t3,
        );
        assert!(t.poll(t3 + Duration::from_secs(2)).is_empty());

        // A source that never answers chunks: they come from the other one after the timeout.
        let silent = Peer {
            silent_chunks: true,
            ..Peer::default()
        };
        let mut sim = Sim::new(Blob::new(12, 12), &[silent, Peer::default()]);
        let (a, b) = (sim.peer(0), sim.peer(1));
        sim.run();
        sim.assert_whole_file();
        assert!(sim.served_by.values().all(|p| *p == b));
        assert!(!sim.asked[&a].is_empty());
        assert!(sim.now >= t0 + TRANSFER_REQUEST_TIMEOUT);
    }

    #[test]
    fn busy_sources_back_off_doubling_up_to_the_limit() {
        let t0 = Instant::now();
        let blob = Blob::new(3, 3);
        let mut t = Transfer::new(blob.root, blob.size());
        t.add_source(PeerId::random());
        let mut now = t0;
        let mut sent = requests(&t.poll(now));
        let mut waits = Vec::new();
        for _ in 0..8 {
            t.response(sent[0].0, FileResponse::Busy, now);
            let retry = t.next_deadline().unwrap();
            assert!(t.poll(retry - Duration::from_millis(1)).is_empty());
            waits.push((retry - now).as_secs());
            now = retry;
            sent = requests(&t.poll(now));
            assert_eq!(sent.len(), 1);
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(t.status(), Status::FetchingHashList, "busy is no stall");

        // A good answer resets the back-off.
        answer_list(&mut t, &blob, sent[0].0, now);
        t.set_missing(0..3);
        let sent = requests(&t.poll(now));
        t.response(sent[0].0, FileResponse::Busy, now);
        t.response(sent[1].0, FileResponse::Busy, now);
        let actions = t.poll(now);
        assert!(actions.is_empty(), "{actions:?}");
        assert_eq!(
            chunks_requested(&t.poll(now + TRANSFER_BACKOFF_MIN)),
            [0, 1]
        );

        // In a run: a busy source's share goes to the other.
        let busy = Peer {
            busy: 5,
            ..Peer::default()
        };
        let mut sim = Sim::new(Blob::new(20, 1), &[busy, Peer::default()]);
        sim.run();
        sim.assert_whole_file();
    }

    #[test]
    fn without_sources_the_transfer_stalls_and_resumes_when_one_is_added() {
        let now = Instant::now();
        let blob = Blob::new(8, 8);
        let mut t = Transfer::new(blob.root, blob.size());
        assert_eq!(t.status(), Status::Stalled);
        assert_eq!(
            t.poll(now),
            [Action::Failed {
                reason: FailReason::NoSources
            }]
        );
        assert!(t.poll(now).is_empty(), "reported once");

        // A source comes: the transfer goes on.
        let a = PeerId::random();
        t.add_source(a);
        let actions = t.poll(now);
        serve_list(&mut t, &blob, &actions, now);
        t.set_missing(0..8);
        let sent = requests(&t.poll(now));
        assert_eq!(sent.len(), 8);
        for (id, _, request) in &sent[..3] {
            let FileRequest::Chunk { index, .. } = request else {
                panic!()
            };
            let bytes = blob.chunk(*index).to_vec();
            let index = *index;
            t.response(*id, FileResponse::Chunk { index, bytes }, now);
            t.chunk_written(index);
        }

        // It disconnects mid-way: stalled, its chunks back in the queue.
        t.remove_source(&a);
        let actions = t.poll(now);
        assert!(matches!(
            &actions[..],
            [
                ..,
                Action::Failed {
                    reason: FailReason::NoSources
                }
            ]
        ));
        assert_eq!(t.status(), Status::Stalled);
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.progress().0, 3 * u64::from(CS));

        // Another one finishes it.
        let b = PeerId::random();
        assert!(t.add_source(b));
        assert_eq!(chunks_requested(&t.poll(now)), [3, 4, 5, 6, 7]);
        assert_eq!(t.status(), Status::FetchingChunks);

        // The same in a run: a source that disconnects part-way, another added later.
        let mut sim = Sim::new(Blob::new(30, 30), &[Peer::default()]);
        let a = sim.peer(0);
        for _ in 0..5 {
            sim.step();
        }
        sim.t.remove_source(&a);
        sim.wire.clear();
        for _ in 0..50 {
            sim.step();
        }
        assert_eq!(sim.failures, [FailReason::NoSources]);
        assert!(!sim.complete);
        let b = PeerId::random();
        sim.peers.insert(b, Peer::default());
        sim.t.add_source(b);
        sim.run();
        sim.assert_whole_file();
    }

    #[test]
    fn partial_sources_serve_what_they_have_and_are_asked_again_later() {
        let even = Peer {
            has: Some((0..20).step_by(2).collect()),
            ..Peer::default()
        };
        let odd = Peer {
            has: Some((1..20).step_by(2).collect()),
            ..Peer::default()
        };
        let mut sim = Sim::new(Blob::new(20, 20), &[even, odd]);
        let (a, b) = (sim.peer(0), sim.peer(1));
        sim.run();
        sim.assert_whole_file();
        assert!(sim.drops.is_empty());
        assert!(
            sim.served_by
                .iter()
                .all(|(i, p)| *p == if i % 2 == 0 { a } else { b })
        );

        // Nobody has chunk 3 yet: stalled, then asked again once the NotFound is forgotten.
        let now = Instant::now();
        let blob = Blob::new(5, 5);
        let mut t = Transfer::new(blob.root, blob.size());
        t.add_source(a);
        let actions = t.poll(now);
        serve_list(&mut t, &blob, &actions, now);
        t.set_missing([3]);
        let sent = requests(&t.poll(now));
        t.response(sent[0].0, FileResponse::NotFound, now);
        assert_eq!(
            t.poll(now),
            [Action::Failed {
                reason: FailReason::NotAvailable { missing: 1 }
            }]
        );
        assert_eq!(t.status(), Status::Stalled);
        assert_eq!(t.next_deadline(), Some(now + TRANSFER_NOT_FOUND_RETRY));
        let t1 = now + TRANSFER_NOT_FOUND_RETRY;
        let sent = requests(&t.poll(t1));
        assert_eq!(chunks_requested(&t.poll(t1)), Vec::<u32>::new());
        assert_eq!(sent.len(), 1);
        t.response(sent[0].0, FileResponse::NotFound, t1);
        assert!(t.poll(t1).is_empty(), "the same stall is reported once");
        t.response(sent[0].0, FileResponse::NotFound, t1); // stale: ignored
        let t2 = t1 + TRANSFER_NOT_FOUND_RETRY;
        let sent = requests(&t.poll(t2));
        t.response(
            sent[0].0,
            FileResponse::Chunk {
                index: 3,
                bytes: blob.chunk(3).to_vec(),
            },
            t2,
        );
        assert!(matches!(&t.poll(t2)[..], [Action::Write { index: 3, .. }]));
        t.chunk_written(3);
        assert_eq!(t.poll(t2), [Action::Complete]);
    }

    #[test]
    fn unexpected_answers_ban_their_source() {
        let now = Instant::now();
        let blob = Blob::new(4, 4);
        let mut t = Transfer::new(blob.root, blob.size());
        let (a, b) = (PeerId::random(), PeerId::random());
        t.add_source(a);
        t.add_source(b);
        let sent = requests(&t.poll(now));
        let wrong = FileResponse::Chunk {
            index: 0,
            bytes: vec![1],
        };
        t.response(sent[0].0, wrong, now);
        let actions = t.poll(now);
        assert_eq!(
            actions[0],
            Action::DropSource {
                peer: a,
                reason: DropReason::UnexpectedResponse
            }
        );
        serve_list(&mut t, &blob, &actions, now);
        t.set_missing(0..4);
        let sent = requests(&t.poll(now));
        // Another chunk than the one asked for.
        t.response(
            sent[0].0,
            FileResponse::Chunk {
                index: 1,
                bytes: blob.chunk(1).to_vec(),
            },
            now,
        );
        let actions = t.poll(now);
        assert_eq!(
            actions[0],
            Action::DropSource {
                peer: b,
                reason: DropReason::UnexpectedResponse
            }
        );
        assert_eq!(t.status(), Status::Stalled);
        assert!(!t.add_source(a) && !t.add_source(b));
    }

    #[test]
    fn limits_are_never_exceeded() {
        // Many sources, small limits, every kind of trouble; `Sim` checks every poll.
        let limits = Limits {
            window: 10,
            per_source: 3,
            request_timeout: Duration::from_secs(2),
        };
        let peers = [
            Peer::default(),
            Peer {
                busy: 7,
                ..Peer::default()
            },
            Peer {
                corrupt: [9, 40].into(),
                ..Peer::default()
            },
            Peer {
                has: Some((0..100).filter(|i| i % 3 == 0).collect()),
                ..Peer::default()
            },
            Peer {
                silent_chunks: true,
                ..Peer::default()
            },
            Peer::default(),
        ];
        let mut sim = Sim::with_limits(Blob::new(100, 100), &peers, limits);
        let (corrupt, silent) = (sim.peer(2), sim.peer(4));
        sim.run();
        sim.assert_whole_file();
        assert!(sim.drops.iter().all(|(p, _)| *p == corrupt));
        assert!(!sim.asked[&silent].is_empty());
        assert!(sim.served_by.values().all(|p| *p != silent));

        // Sources are bounded too.
        let blob = Blob::new(2, 2);
        let mut t = Transfer::new(blob.root, blob.size());
        for _ in 0..MAX_TRANSFER_SOURCES {
            assert!(t.add_source(PeerId::random()));
        }
        assert!(!t.add_source(PeerId::random()));
        assert_eq!(t.sources().count(), MAX_TRANSFER_SOURCES);

        // And the window holds with the defaults and many sources.
        let peers = vec![Peer::default(); 5];
        let mut sim = Sim::new(Blob::new(64, 64), &peers);
        sim.run();
        sim.assert_whole_file();
    }
}
