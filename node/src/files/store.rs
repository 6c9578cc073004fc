//! The blob store: a directory of content-addressed files, complete and partial.
//!
//! Layout of the directory (`<root>` is the root hash in lowercase hex):
//! - `<root>`: a complete blob, byte-identical to the file it came from;
//! - `<root>.hashes`: its encoded [`HashList`], kept beside complete and partial blobs alike, so
//!   any peer holding even part of a file can serve the list;
//! - `<root>.part`: a partial download, preallocated (sparse) to the file's full size, each chunk
//!   written at its place;
//! - `<root>.have`: the bitmap of chunks of `<root>.part` that are verified and on disk
//!   (bit `i % 8` of byte `i / 8` for chunk `i`);
//! - `.tmp-*`: files being imported or written atomically; removed when the store is opened.
//!
//! **Durability.** A chunk is verified against the hash list, written to `<root>.part` and
//! fsynced, and only then its bit is set in `<root>.have` and fsynced. Setting a bit is a
//! one-byte write and bits are only ever set, so the bitmap cannot be torn into a state that
//! claims a chunk that is not on disk. After a crash, [`BlobStore::begin_download`] resumes from
//! the bitmap exactly: a chunk marked had is never fetched again. Two fsyncs per 1 MiB chunk cost
//! little against the network; a store on a slow disk could batch them later.
//!
//! **Completion.** When every bit is set, [`Download::finish`] re-checks the list against the
//! root and renames `<root>.part` to `<root>`: the complete name only ever holds complete,
//! verified content. Readers of a partial blob may race with that rename: [`BlobStore::read_chunk`]
//! falls back to the complete name.
//!
//! **Serving.** [`BlobStore::read_chunk`] serves chunks of complete blobs and the verified chunks
//! of partial ones, reading only that chunk's hash from `<root>.hashes` and checking the chunk
//! against it before handing it out, so bit rot on our disk never makes us the bad source.
//!
//! **Concurrency.** One [`BlobStore`] per directory (the node's). It is a cheap clone; any
//! number of threads may import, read and export at once. A root has at most one [`Download`]
//! at a time: a second [`BlobStore::begin_download`] gets [`BeginDownloadError::InProgress`].
//!
//! Import copies the file in rather than hard-linking it: a user editing the original in place
//! would otherwise change the bytes behind the hash. Every function here does blocking file I/O
//! through a buffer of at most one chunk: run it in `tokio::task::spawn_blocking`.

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use confab_protocol::ContentHash;
use confab_protocol::file::{FileRequest, FileResponse};
use confab_protocol::limits::MAX_HASH_LIST_PAGE;

use super::hashing::{
    self, ChunkError, ChunkHasher, DecodeError, HASH_LEN, HASH_LIST_HEADER_LEN, HashFileError,
    HashList, VerifyError, read_full,
};
use super::{CHUNK_SIZE, MAX_HASH_LIST_BYTES, names};

/// Extension of a partial download's data.
const PART: &str = "part";
/// Extension of a partial download's bitmap of verified chunks.
const HAVE: &str = "have";
/// Extension of a blob's encoded hash list.
const HASHES: &str = "hashes";
/// Prefix of temporary files in the store directory.
const TMP_PREFIX: &str = ".tmp-";
/// How many numbered names (`name (1).ext`…) [`BlobStore::export`] tries before giving up.
const MAX_EXPORT_NAME_ATTEMPTS: u32 = 1000;

/// A directory of content-addressed blobs, complete and partial. See the [module docs](self).
#[derive(Clone)]
pub struct BlobStore {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    /// Chunk size of the hash lists made by [`BlobStore::import`].
    import_chunk_size: u32,
    /// Roots with a [`Download`] in progress.
    active: Mutex<HashSet<ContentHash>>,
}

impl fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobStore")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

/// Which chunks of a blob the store has ([`BlobStore::availability`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Availability {
    /// Nothing.
    Absent,
    /// Some chunks, verified: a partial download.
    Partial(Bitmap),
    /// The whole blob.
    Complete,
}

/// One bit per chunk: set when the chunk is verified and on disk.
///
/// Bit `i % 8` of byte `i / 8` is chunk `i`, as in `<root>.have` on disk; bits past the last
/// chunk are zero.
#[derive(Clone, PartialEq, Eq)]
pub struct Bitmap {
    bytes: Vec<u8>,
    len: u64,
}

impl fmt::Debug for Bitmap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bitmap({}/{})", self.count(), self.len)
    }
}

impl Bitmap {
    /// A bitmap of `len` chunks, none had.
    pub fn new(len: u64) -> Self {
        Self {
            bytes: vec![0; Self::byte_len(len)],
            len,
        }
    }

    /// A bitmap of `len` chunks from its bytes (as on disk or from a peer); `None` if the length
    /// does not match. Bits past `len` are cleared.
    pub fn from_bytes(mut bytes: Vec<u8>, len: u64) -> Option<Self> {
        if bytes.len() != Self::byte_len(len) {
            return None;
        }
        let tail_bits = len % 8;
        if tail_bits != 0
            && let Some(last) = bytes.last_mut()
        {
            *last &= (1u8 << tail_bits) - 1;
        }
        Some(Self { bytes, len })
    }

    /// Bytes needed for `len` bits.
    fn byte_len(len: u64) -> usize {
        len.div_ceil(8) as usize
    }

    /// The number of chunks it covers.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it covers no chunk (an empty file).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether chunk `index` is had (`false` past the end).
    pub fn get(&self, index: u64) -> bool {
        index < self.len && self.bytes[(index / 8) as usize] & (1 << (index % 8)) != 0
    }

    /// Marks chunk `index` had.
    fn set(&mut self, index: u64) {
        debug_assert!(index < self.len);
        self.bytes[(index / 8) as usize] |= 1 << (index % 8);
    }

    /// How many chunks are had.
    pub fn count(&self) -> u64 {
        self.bytes.iter().map(|b| u64::from(b.count_ones())).sum()
    }

    /// The chunks not had, in order.
    pub fn missing(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.len).filter(|&i| !self.get(i))
    }

    /// The bytes, as stored in `<root>.have` (and as a peer could be told).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Why [`BlobStore::import`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// Hashing failed (the file is too large, or reading it failed).
    #[error(transparent)]
    Hash(#[from] HashFileError),
    /// Reading the file or writing the store failed.
    #[error("importing: {0}")]
    Io(#[from] io::Error),
}

/// Why [`BlobStore::hash_list`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HashListError {
    /// The store has no hash list for this root.
    #[error("no such blob")]
    NotFound,
    /// The stored list is unreadable.
    #[error("stored hash list is corrupt: {0}")]
    Decode(#[from] DecodeError),
    /// The stored list does not hash to the root.
    #[error("stored hash list does not match: {0}")]
    Verify(#[from] VerifyError),
    /// Reading it failed.
    #[error("reading the hash list: {0}")]
    Io(#[from] io::Error),
}

/// Why [`BlobStore::read_chunk`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadChunkError {
    /// The store has neither the blob nor a partial download of it.
    #[error("no such blob")]
    NotFound,
    /// There is no chunk with this index.
    #[error("chunk {index} out of range ({count} chunks)")]
    OutOfRange {
        /// The index asked for.
        index: u64,
        /// The number of chunks of the blob.
        count: u64,
    },
    /// A partial download that does not have this chunk (yet).
    #[error("chunk {index} not had")]
    Missing {
        /// The chunk.
        index: u64,
    },
    /// The chunk on disk does not match its hash (bit rot, or someone edited the file).
    #[error("chunk {index} on disk does not match its hash")]
    Corrupt {
        /// The chunk.
        index: u64,
    },
    /// The blob's hash list is missing or unreadable.
    #[error("hash list missing or corrupt")]
    BadHashList,
    /// Reading failed.
    #[error("reading a chunk: {0}")]
    Io(#[from] io::Error),
}

/// Why [`BlobStore::begin_download`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BeginDownloadError {
    /// The hash list does not belong to this root and size: the peer that sent it is not a
    /// source for this file.
    #[error("hash list refused: {0}")]
    BadHashList(#[from] VerifyError),
    /// The blob is already complete, here.
    #[error("already complete at {}", .0.display())]
    AlreadyComplete(PathBuf),
    /// Another [`Download`] of this root is in progress.
    #[error("a download of this file is already in progress")]
    InProgress,
    /// Creating or reading the partial files failed.
    #[error("preparing the download: {0}")]
    Io(#[from] io::Error),
}

/// Why [`Download::write_chunk`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteChunkError {
    /// The chunk does not match the hash list; nothing was written. The error names the chunk:
    /// fetch it from another source.
    #[error("chunk refused: {0}")]
    Rejected(#[from] ChunkError),
    /// Writing failed (disk full…); the chunk is still missing and can be written again.
    #[error("writing a chunk: {0}")]
    Io(#[from] io::Error),
}

/// Why [`Download::finish`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FinishError {
    /// Some chunks are still missing; the partial download stays on disk and resumes on the next
    /// [`BlobStore::begin_download`].
    #[error("{missing} chunks still missing")]
    Incomplete {
        /// How many.
        missing: u64,
    },
    /// The hash list no longer matches the root (cannot happen unless memory is corrupted).
    #[error("hash list does not match the root")]
    RootMismatch,
    /// Renaming or syncing failed.
    #[error("completing the download: {0}")]
    Io(#[from] io::Error),
}

/// Why [`BlobStore::export`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The store has no complete blob with this root.
    #[error("no such blob")]
    NotFound,
    /// The blob on disk does not match its hash list; nothing was left in the destination.
    #[error("chunk {index} on disk does not match its hash")]
    Corrupt {
        /// The first bad chunk.
        index: u64,
    },
    /// The blob's hash list is missing or unreadable.
    #[error("hash list: {0}")]
    HashList(#[from] HashListError),
    /// The name and all its numbered variants are taken.
    #[error("no free name for the file")]
    NoFreeName,
    /// An encrypted attachment does not decrypt under its key; nothing was left.
    #[error("{0}")]
    Sealed(String),
    /// Reading the blob or writing the copy failed; nothing was left in the destination.
    #[error("exporting: {0}")]
    Io(#[from] io::Error),
}

/// Why [`BlobStore::remove`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoveError {
    /// A download of this root is in progress.
    #[error("a download of this file is in progress")]
    InProgress,
    /// Deleting failed.
    #[error("removing: {0}")]
    Io(#[from] io::Error),
}

impl BlobStore {
    /// Opens (creating it if needed) the store in `dir`, e.g. `<data dir>/files`, and removes
    /// temporary files a crash left behind. One store per directory.
    ///
    /// Blocking: run it in `tokio::task::spawn_blocking`.
    pub fn open(dir: &Path) -> io::Result<Self> {
        Self::open_with_chunk_size(dir, CHUNK_SIZE)
    }

    /// [`BlobStore::open`] with another chunk size for the files it imports (tests use small
    /// chunks to get many of them). Downloads use whatever chunk size their hash list says.
    ///
    /// Blocking: run it in `tokio::task::spawn_blocking`.
    pub fn open_with_chunk_size(dir: &Path, import_chunk_size: u32) -> io::Result<Self> {
        if !hashing::valid_chunk_size(import_chunk_size) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid chunk size {import_chunk_size}"),
            ));
        }
        fs::create_dir_all(dir)?;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                // Best effort: a leftover we cannot delete does no harm.
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                import_chunk_size,
                active: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Hashes the file at `path` and copies it into the store in one pass, through one
    /// chunk-sized buffer; returns its root. Importing content already in the store changes
    /// nothing. The size and hash list are then in [`BlobStore::hash_list`].
    ///
    /// Blocking (reads and writes the whole file): run it in `tokio::task::spawn_blocking`.
    pub fn import(&self, path: &Path) -> Result<ContentHash, ImportError> {
        let mut src = File::open(path)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(TMP_PREFIX)
            .tempfile_in(&self.inner.dir)?;
        let chunk_size = self.inner.import_chunk_size;
        let mut hasher = ChunkHasher::new(chunk_size)?;
        let mut buf = vec![0u8; chunk_size as usize];
        loop {
            let n = read_full(&mut src, &mut buf)?;
            if n == 0 {
                break;
            }
            hasher.push(&buf[..n])?;
            tmp.write_all(&buf[..n])?;
            if n < buf.len() {
                break;
            }
        }
        tmp.as_file().sync_all()?;
        let list = hasher.finish();
        let root = list.root();

        // The list first: a complete blob always has its list beside it.
        self.save_hash_list(&root, &list)?;
        let complete = self.path(&root, None);
        if !complete.exists() {
            tmp.persist(&complete).map_err(|e| e.error)?;
            self.sync_dir()?;
        }
        // A partial download of the same content is obsolete now, unless one is running.
        if let Some(_claim) = self.claim(root) {
            remove_if_exists(&self.path(&root, Some(PART)))?;
            remove_if_exists(&self.path(&root, Some(HAVE)))?;
        }
        Ok(root)
    }

    /// Whether the store has the complete blob `root`.
    ///
    /// Blocking (one `stat`).
    pub fn has(&self, root: &ContentHash) -> bool {
        self.path(root, None).is_file()
    }

    /// Where the complete blob `root` is, if the store has it. Read it, never write it.
    ///
    /// Blocking (one `stat`).
    pub fn path_of(&self, root: &ContentHash) -> Option<PathBuf> {
        let path = self.path(root, None);
        path.is_file().then_some(path)
    }

    /// Which chunks of `root` the store has: all, some (a partial download) or none.
    ///
    /// Blocking: run it in `tokio::task::spawn_blocking`.
    pub fn availability(&self, root: &ContentHash) -> io::Result<Availability> {
        if self.has(root) {
            return Ok(Availability::Complete);
        }
        if !self.path(root, Some(PART)).is_file() {
            return Ok(Availability::Absent);
        }
        let Ok(list) = self.hash_list(root) else {
            return Ok(Availability::Absent);
        };
        let bytes = match read_bounded(&self.path(root, Some(HAVE)), MAX_HASH_LIST_BYTES) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Availability::Absent),
            Err(e) => return Err(e),
        };
        Ok(Bitmap::from_bytes(bytes, list.chunk_count())
            .map_or(Availability::Absent, Availability::Partial))
    }

    /// The hash list of `root` (complete or partial), checked against the root: what to serve to
    /// a peer that asks for it.
    ///
    /// Blocking: run it in `tokio::task::spawn_blocking`.
    pub fn hash_list(&self, root: &ContentHash) -> Result<HashList, HashListError> {
        let bytes = match read_bounded(&self.path(root, Some(HASHES)), MAX_HASH_LIST_BYTES) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(HashListError::NotFound),
            Err(e) => return Err(e.into()),
        };
        let list = HashList::decode(&bytes)?;
        list.verify(root, list.size())?;
        Ok(list)
    }

    /// Reads chunk `index` of `root` into `buf` (cleared, then filled with exactly the chunk),
    /// from the complete blob or from a partial download that has that chunk. The chunk is
    /// checked against its hash before it is returned.
    ///
    /// Blocking (reads one chunk and one hash): run it in `tokio::task::spawn_blocking`.
    pub fn read_chunk(
        &self,
        root: &ContentHash,
        index: u64,
        buf: &mut Vec<u8>,
    ) -> Result<(), ReadChunkError> {
        buf.clear();
        let (mut data, have) = self.open_for_reading(root)?;
        let (size, chunk_size, hash) = self.read_chunk_hash(root, index)?;
        if let Some(mut have) = have
            && !bit_on_disk(&mut have, index)?
        {
            return Err(ReadChunkError::Missing { index });
        }
        let offset = index * u64::from(chunk_size);
        let len = (size - offset).min(u64::from(chunk_size)) as usize;
        buf.resize(len, 0);
        data.seek(SeekFrom::Start(offset))?;
        data.read_exact(buf)?;
        if blake3::hash(buf) != blake3::Hash::from_bytes(hash) {
            buf.clear();
            return Err(ReadChunkError::Corrupt { index });
        }
        Ok(())
    }

    /// Starts or resumes the download of `root`, a file of `size` bytes whose hash list a peer
    /// sent. The list is verified against the root and size first; then the partial files are
    /// created, or reused if a previous download left them consistent, in which case the chunks
    /// it had are kept (see [`Download::missing`]).
    ///
    /// Blocking: run it in `tokio::task::spawn_blocking`.
    pub fn begin_download(
        &self,
        root: ContentHash,
        size: u64,
        hash_list: HashList,
    ) -> Result<Download, BeginDownloadError> {
        hash_list.verify(&root, size)?;
        let claim = self.claim(root).ok_or(BeginDownloadError::InProgress)?;
        // Checked under the claim: no download of this root can complete meanwhile.
        if let Some(path) = self.path_of(&root) {
            return Err(BeginDownloadError::AlreadyComplete(path));
        }
        self.save_hash_list(&root, &hash_list)?;

        let count = hash_list.chunk_count();
        let mut part = open_rw(&self.path(&root, Some(PART)))?;
        let mut have_file = open_rw(&self.path(&root, Some(HAVE)))?;
        let part_ok = part.metadata()?.len() == size;
        let mut bytes = Vec::new();
        (&have_file)
            .take(Bitmap::byte_len(count) as u64 + 1)
            .read_to_end(&mut bytes)?;
        let resumed = if part_ok {
            Bitmap::from_bytes(bytes, count)
        } else {
            None
        };
        let have = match resumed {
            Some(have) => have,
            None => {
                // Fresh, or left inconsistent by a crash mid-creation: start over. The bitmap is
                // cleared before the data, so no bit ever claims stale data.
                have_file.set_len(0)?;
                have_file.set_len(Bitmap::byte_len(count) as u64)?;
                have_file.sync_all()?;
                part.set_len(0)?;
                part.set_len(size)?;
                part.sync_all()?;
                Bitmap::new(count)
            }
        };
        self.sync_dir()?;
        part.seek(SeekFrom::Start(0))?;
        have_file.seek(SeekFrom::Start(0))?;
        Ok(Download {
            store: self.clone(),
            root,
            list: hash_list,
            part,
            have_file,
            have,
            _claim: claim,
        })
    }

    /// Copies the complete blob `root` out to `dest_dir` (which must exist) under `name`
    /// sanitised ([`names::sanitize`]), never overwriting a file: a taken name becomes
    /// `name (1).ext`, `name (2).ext`… Every chunk is checked against the hash list on the way,
    /// so the user never gets bytes other than the ones named by `root`. Returns the new file's
    /// path; on any failure nothing is left in `dest_dir`.
    ///
    /// Blocking (reads and writes the whole file): run it in `tokio::task::spawn_blocking`.
    pub fn export(
        &self,
        root: &ContentHash,
        dest_dir: &Path,
        name: &str,
    ) -> Result<PathBuf, ExportError> {
        let mut src = match File::open(self.path(root, None)) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ExportError::NotFound),
            Err(e) => return Err(e.into()),
        };
        let list = self.hash_list(root)?;
        let (dest, mut out) = create_unique(dest_dir, &names::sanitize(name))?;
        let copied = copy_verified(&mut src, &mut out, &list);
        if copied.is_err() {
            drop(out);
            let _ = fs::remove_file(&dest);
        }
        copied.map(|()| dest)
    }

    /// Like [`BlobStore::export`] for the attachment of an encrypted conversation: the blob is
    /// ciphertext ([`super::sealed`]) and what lands in `dest_dir` is its decryption under
    /// `key`. Every segment is authenticated; on any failure nothing is left in `dest_dir`.
    ///
    /// Blocking: run it in `tokio::task::spawn_blocking`.
    pub fn export_decrypted(
        &self,
        root: &ContentHash,
        dest_dir: &Path,
        name: &str,
        key: &super::sealed::FileKey,
    ) -> Result<PathBuf, ExportError> {
        let src = match File::open(self.path(root, None)) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ExportError::NotFound),
            Err(e) => return Err(e.into()),
        };
        let (dest, out) = create_unique(dest_dir, &names::sanitize(name))?;
        let mut out = io::BufWriter::new(out);
        let result = super::sealed::decrypt(&mut io::BufReader::new(src), &mut out, key)
            .map_err(|e| match e {
                super::sealed::SealedFileError::Io(e) => ExportError::Io(e),
                other => ExportError::Sealed(other.to_string()),
            })
            .and_then(|()| {
                let file = out
                    .into_inner()
                    .map_err(|e| ExportError::Io(e.into_error()))?;
                file.sync_all()?;
                Ok(())
            });
        if result.is_err() {
            let _ = fs::remove_file(&dest);
        }
        result.map(|()| dest)
    }

    /// Deletes everything the store has of `root`: the complete blob, a partial download, the
    /// hash list. Refused while a download of it is in progress.
    ///
    /// Blocking: run it in `tokio::task::spawn_blocking`.
    pub fn remove(&self, root: &ContentHash) -> Result<(), RemoveError> {
        let _claim = self.claim(*root).ok_or(RemoveError::InProgress)?;
        for ext in [None, Some(PART), Some(HAVE), Some(HASHES)] {
            remove_if_exists(&self.path(root, ext))?;
        }
        self.sync_dir()?;
        Ok(())
    }

    /// The answer to one `/confab/file/1` request from what this store has complete (a file
    /// not here, or a chunk not verified yet, is `NotFound`; disk errors are logged and answered
    /// `NotFound` too).
    ///
    /// Blocking: run it in `tokio::task::spawn_blocking`.
    pub fn answer(&self, request: FileRequest) -> FileResponse {
        match request {
            FileRequest::HashList { root, start } => match self.hash_list(&root) {
                Ok(list) => FileResponse::HashList {
                    size: list.size(),
                    chunk_size: list.chunk_size(),
                    start,
                    hashes: list.page(u64::from(start), MAX_HASH_LIST_PAGE),
                },
                Err(HashListError::NotFound) => FileResponse::NotFound,
                Err(e) => {
                    tracing::warn!("cannot serve the hash list of {root:?}: {e}");
                    FileResponse::NotFound
                }
            },
            FileRequest::Chunk { root, index } => {
                let mut bytes = Vec::new();
                match self.read_chunk(&root, u64::from(index), &mut bytes) {
                    Ok(()) => FileResponse::Chunk { index, bytes },
                    Err(ReadChunkError::NotFound | ReadChunkError::Missing { .. }) => {
                        FileResponse::NotFound
                    }
                    Err(e) => {
                        tracing::warn!("cannot serve chunk {index} of {root:?}: {e}");
                        FileResponse::NotFound
                    }
                }
            }
            _ => FileResponse::NotFound,
        }
    }

    /// `<dir>/<root>` or `<dir>/<root>.<ext>`.
    fn path(&self, root: &ContentHash, ext: Option<&str>) -> PathBuf {
        match ext {
            None => self.inner.dir.join(root.to_string()),
            Some(ext) => self.inner.dir.join(format!("{root}.{ext}")),
        }
    }

    /// Marks `root` as having a download in progress; `None` if it already has.
    fn claim(&self, root: ContentHash) -> Option<Claim> {
        let mut active = self
            .inner
            .active
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        active.insert(root).then(|| Claim {
            inner: self.inner.clone(),
            root,
        })
    }

    /// Writes `<root>.hashes` atomically, unless it already holds this list.
    fn save_hash_list(&self, root: &ContentHash, list: &HashList) -> io::Result<()> {
        let path = self.path(root, Some(HASHES));
        let encoded = list.encode();
        if read_bounded(&path, MAX_HASH_LIST_BYTES).is_ok_and(|existing| existing == encoded) {
            return Ok(());
        }
        let mut tmp = tempfile::Builder::new()
            .prefix(TMP_PREFIX)
            .tempfile_in(&self.inner.dir)?;
        tmp.write_all(&encoded)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path).map_err(|e| e.error)?;
        self.sync_dir()
    }

    /// The data file to read chunks of `root` from, and for a partial blob its bitmap file.
    fn open_for_reading(&self, root: &ContentHash) -> Result<(File, Option<File>), ReadChunkError> {
        match File::open(self.path(root, None)) {
            Ok(file) => return Ok((file, None)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let part = File::open(self.path(root, Some(PART)));
        let have = File::open(self.path(root, Some(HAVE)));
        match (part, have) {
            (Ok(part), Ok(have)) => Ok((part, Some(have))),
            (Err(e), _) | (_, Err(e)) if e.kind() == io::ErrorKind::NotFound => {
                // Perhaps the download just finished and was renamed.
                match File::open(self.path(root, None)) {
                    Ok(file) => Ok((file, None)),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ReadChunkError::NotFound),
                    Err(e) => Err(e.into()),
                }
            }
            (Err(e), _) | (_, Err(e)) => Err(e.into()),
        }
    }

    /// Size, chunk size and the hash of chunk `index`, read from `<root>.hashes` without loading
    /// the whole list.
    fn read_chunk_hash(
        &self,
        root: &ContentHash,
        index: u64,
    ) -> Result<(u64, u32, [u8; HASH_LEN]), ReadChunkError> {
        let bad = |e: io::Error| match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::UnexpectedEof => ReadChunkError::BadHashList,
            _ => ReadChunkError::Io(e),
        };
        let mut file = File::open(self.path(root, Some(HASHES))).map_err(bad)?;
        let mut header = [0u8; HASH_LIST_HEADER_LEN];
        file.read_exact(&mut header).map_err(bad)?;
        let Some(Ok((size, chunk_size))) = hashing::parse_header(&header) else {
            return Err(ReadChunkError::BadHashList);
        };
        let count = hashing::chunk_count(size, chunk_size);
        if index >= count {
            return Err(ReadChunkError::OutOfRange { index, count });
        }
        let mut hash = [0u8; HASH_LEN];
        file.seek(SeekFrom::Start(
            HASH_LIST_HEADER_LEN as u64 + index * HASH_LEN as u64,
        ))
        .map_err(bad)?;
        file.read_exact(&mut hash).map_err(bad)?;
        Ok((size, chunk_size, hash))
    }

    /// Makes renames and creations in the store directory durable.
    fn sync_dir(&self) -> io::Result<()> {
        sync_dir(&self.inner.dir)
    }
}

/// A download in progress: receives chunks in any order, verifies each, and keeps what it has
/// across restarts. Made by [`BlobStore::begin_download`]; dropping it leaves the partial files
/// for the next `begin_download` to resume.
pub struct Download {
    store: BlobStore,
    root: ContentHash,
    list: HashList,
    part: File,
    have_file: File,
    have: Bitmap,
    /// Released last, after the files are closed.
    _claim: Claim,
}

impl fmt::Debug for Download {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Download")
            .field("root", &self.root)
            .field("have", &self.have)
            .finish_non_exhaustive()
    }
}

impl Download {
    /// The root of the file being downloaded.
    pub fn root(&self) -> &ContentHash {
        &self.root
    }

    /// Its verified hash list (chunk sizes, chunk hashes).
    pub fn hash_list(&self) -> &HashList {
        &self.list
    }

    /// Which chunks are had.
    pub fn have(&self) -> &Bitmap {
        &self.have
    }

    /// The chunks still to fetch, in order. Chunks had — including those a previous run wrote
    /// before a restart — never appear.
    pub fn missing(&self) -> impl Iterator<Item = u64> + '_ {
        self.have.missing()
    }

    /// Bytes verified and on disk, for progress reports.
    pub fn bytes_had(&self) -> u64 {
        let count = self.list.chunk_count();
        let full = self.have.count() * u64::from(self.list.chunk_size());
        match count.checked_sub(1) {
            // The last chunk may be short.
            Some(last) if self.have.get(last) => {
                full - (u64::from(self.list.chunk_size())
                    - self.list.chunk_len(last).unwrap_or(0) as u64)
            }
            _ => full,
        }
    }

    /// Whether every chunk is had (then [`Download::finish`]).
    pub fn is_complete(&self) -> bool {
        self.have.count() == self.list.chunk_count()
    }

    /// Verifies chunk `index` and, if it is right, writes it durably and marks it had. A bad
    /// chunk is refused with an error naming it and nothing is written; a chunk already had is
    /// verified and otherwise ignored.
    ///
    /// Blocking (writes one chunk, two fsyncs): run it in `tokio::task::spawn_blocking`.
    pub fn write_chunk(&mut self, index: u64, bytes: &[u8]) -> Result<(), WriteChunkError> {
        self.list.check_chunk(index, bytes)?;
        if self.have.get(index) {
            return Ok(());
        }
        self.part
            .seek(SeekFrom::Start(self.list.chunk_offset(index)))?;
        self.part.write_all(bytes)?;
        self.part.sync_data()?;
        // Only now that the chunk is on disk, its bit.
        let byte_index = index / 8;
        let byte = self.have.as_bytes()[byte_index as usize] | (1 << (index % 8));
        self.have_file.seek(SeekFrom::Start(byte_index))?;
        self.have_file.write_all(&[byte])?;
        self.have_file.sync_data()?;
        self.have.set(index);
        Ok(())
    }

    /// Completes the download once every chunk is had: re-checks the hash list against the root
    /// and renames the data to the blob's complete name. Returns the blob's path.
    ///
    /// Blocking: run it in `tokio::task::spawn_blocking`.
    pub fn finish(self) -> Result<PathBuf, FinishError> {
        let missing = self.list.chunk_count() - self.have.count();
        if missing > 0 {
            return Err(FinishError::Incomplete { missing });
        }
        if self.list.root() != self.root {
            return Err(FinishError::RootMismatch);
        }
        self.part.sync_all()?;
        let complete = self.store.path(&self.root, None);
        fs::rename(self.store.path(&self.root, Some(PART)), &complete)?;
        self.store.sync_dir()?;
        remove_if_exists(&self.store.path(&self.root, Some(HAVE)))?;
        Ok(complete)
    }
}

/// A root's slot in the store's set of downloads in progress; freed on drop.
struct Claim {
    inner: Arc<Inner>,
    root: ContentHash,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.inner
            .active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.root);
    }
}

/// Opens a file for reading and writing, creating it if needed, keeping its content.
fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// Reads a whole small file, refusing (as `InvalidData`) one longer than `max`.
fn read_bounded(path: &Path, max: usize) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?
        .take(max as u64 + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is larger than {max} bytes", path.display()),
        ));
    }
    Ok(bytes)
}

/// Whether bit `index` is set in a bitmap file (`false` past its end).
fn bit_on_disk(file: &mut File, index: u64) -> io::Result<bool> {
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(index / 8))?;
    let n = read_full(file, &mut byte)?;
    Ok(n == 1 && byte[0] & (1 << (index % 8)) != 0)
}

/// Deletes a file; one that is already gone is fine.
fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Creates `name` in `dir`, or the first free `name (n)`, without ever replacing a file
/// (`create_new` is atomic, so a file appearing meanwhile is not overwritten either).
fn create_unique(dir: &Path, name: &str) -> Result<(PathBuf, File), ExportError> {
    for n in 0..MAX_EXPORT_NAME_ATTEMPTS {
        let candidate = if n == 0 {
            name.to_owned()
        } else {
            names::numbered(name, n)
        };
        let path = dir.join(candidate);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(ExportError::NoFreeName)
}

/// Copies a blob chunk by chunk, checking each against the list.
fn copy_verified(src: &mut File, out: &mut File, list: &HashList) -> Result<(), ExportError> {
    let mut buf = vec![0u8; list.chunk_size() as usize];
    for index in 0..list.chunk_count() {
        let chunk = &mut buf[..list.chunk_len(index).unwrap_or(0)];
        src.read_exact(chunk)?;
        if list.check_chunk(index, chunk).is_err() {
            return Err(ExportError::Corrupt { index });
        }
        out.write_all(chunk)?;
    }
    out.sync_all()?;
    Ok(())
}

/// Makes renames and creations in `dir` durable (a no-op where directories cannot be synced).
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::MIN_CHUNK_SIZE;
    use crate::files::hashing::hash_file;

    const SMALL: u32 = MIN_CHUNK_SIZE;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new()
            .update(&[seed])
            .finalize_xof()
            .fill(&mut out);
        out
    }

    /// A store with small chunks and a source file of 5½ chunks imported into it.
    struct Fixture {
        _dir: tempfile::TempDir,
        base: PathBuf,
        source: BlobStore,
        data: Vec<u8>,
        root: ContentHash,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_owned();
        let data = pattern(SMALL as usize * 5 + SMALL as usize / 2, 1);
        fs::write(base.join("original.bin"), &data).unwrap();
        let source = BlobStore::open_with_chunk_size(&base.join("a"), SMALL).unwrap();
        let root = source.import(&base.join("original.bin")).unwrap();
        Fixture {
            _dir: dir,
            base,
            source,
            data,
            root,
        }
    }

    impl Fixture {
        fn receiver(&self) -> BlobStore {
            BlobStore::open_with_chunk_size(&self.base.join("b"), SMALL).unwrap()
        }

        fn begin(&self, store: &BlobStore) -> Download {
            let list = self.source.hash_list(&self.root).unwrap();
            store
                .begin_download(self.root, self.data.len() as u64, list)
                .unwrap()
        }

        fn chunk(&self, index: u64) -> Vec<u8> {
            let mut buf = Vec::new();
            self.source.read_chunk(&self.root, index, &mut buf).unwrap();
            buf
        }
    }

    #[test]
    fn import_then_serve_every_chunk_and_the_hash_list() {
        let f = fixture();
        assert!(f.source.has(&f.root));
        let path = f.source.path_of(&f.root).unwrap();
        assert_eq!(fs::read(&path).unwrap(), f.data);
        assert_eq!(
            f.source.availability(&f.root).unwrap(),
            Availability::Complete
        );

        let list = f.source.hash_list(&f.root).unwrap();
        assert_eq!(list.size(), f.data.len() as u64);
        assert_eq!(list.chunk_count(), 6);
        assert_eq!(list.root(), f.root);

        let mut buf = Vec::new();
        for (i, expected) in f.data.chunks(SMALL as usize).enumerate() {
            f.source.read_chunk(&f.root, i as u64, &mut buf).unwrap();
            assert_eq!(buf, expected);
        }
        assert!(matches!(
            f.source.read_chunk(&f.root, 6, &mut buf),
            Err(ReadChunkError::OutOfRange { index: 6, count: 6 })
        ));
        let unknown = ContentHash([7; 32]);
        assert!(!f.source.has(&unknown));
        assert!(matches!(
            f.source.read_chunk(&unknown, 0, &mut buf),
            Err(ReadChunkError::NotFound)
        ));
        assert!(matches!(
            f.source.hash_list(&unknown),
            Err(HashListError::NotFound)
        ));
        assert_eq!(
            f.source.availability(&unknown).unwrap(),
            Availability::Absent
        );

        // Importing the same content again changes nothing.
        assert_eq!(
            f.source.import(&f.base.join("original.bin")).unwrap(),
            f.root
        );
    }

    #[test]
    fn download_between_stores_is_byte_identical() {
        let f = fixture();
        let receiver = f.receiver();
        let mut download = f.begin(&receiver);
        assert_eq!(download.missing().count(), 6);
        // Any order.
        for index in [5, 0, 3, 1, 4, 2] {
            download.write_chunk(index, &f.chunk(index)).unwrap();
        }
        assert!(download.is_complete());
        assert_eq!(download.bytes_had(), f.data.len() as u64);
        let path = download.finish().unwrap();
        assert_eq!(fs::read(&path).unwrap(), f.data);
        assert!(receiver.has(&f.root));
        assert!(!receiver.path(&f.root, Some(PART)).exists());
        assert!(!receiver.path(&f.root, Some(HAVE)).exists());
        // The receiver can serve it in turn.
        let mut buf = Vec::new();
        receiver.read_chunk(&f.root, 5, &mut buf).unwrap();
        assert_eq!(buf, &f.data[5 * SMALL as usize..]);
        assert!(matches!(
            f.begin_err(&receiver),
            BeginDownloadError::AlreadyComplete(p) if p == path
        ));
    }

    impl Fixture {
        fn begin_err(&self, store: &BlobStore) -> BeginDownloadError {
            let list = self.source.hash_list(&self.root).unwrap();
            store
                .begin_download(self.root, self.data.len() as u64, list)
                .unwrap_err()
        }
    }

    #[test]
    fn corrupted_chunk_is_refused_and_the_download_completes_with_the_right_one() {
        let f = fixture();
        let receiver = f.receiver();
        let mut download = f.begin(&receiver);

        let mut bad = f.chunk(2);
        bad[100] ^= 0xFF;
        let err = download.write_chunk(2, &bad).unwrap_err();
        assert!(matches!(
            err,
            WriteChunkError::Rejected(ChunkError::HashMismatch { index: 2 })
        ));
        // A chunk of the right bytes for another index is refused too.
        assert!(matches!(
            download.write_chunk(2, &f.chunk(1)),
            Err(WriteChunkError::Rejected(ChunkError::HashMismatch {
                index: 2
            }))
        ));
        assert!(matches!(
            download.write_chunk(5, &f.chunk(4)),
            Err(WriteChunkError::Rejected(ChunkError::WrongLength {
                index: 5,
                ..
            }))
        ));
        // Nothing was written: still missing, and the bytes on disk are untouched zeros.
        assert!(download.missing().any(|i| i == 2));
        let part = fs::read(receiver.path(&f.root, Some(PART))).unwrap();
        assert!(
            part[2 * SMALL as usize..3 * SMALL as usize]
                .iter()
                .all(|&b| b == 0)
        );

        for index in download.missing().collect::<Vec<_>>() {
            download.write_chunk(index, &f.chunk(index)).unwrap();
        }
        let path = download.finish().unwrap();
        assert_eq!(fs::read(path).unwrap(), f.data);
    }

    #[test]
    fn resume_after_drop_fetches_only_the_rest() {
        let f = fixture();
        let receiver = f.receiver();
        let mut download = f.begin(&receiver);
        for index in [0, 2, 3] {
            download.write_chunk(index, &f.chunk(index)).unwrap();
        }
        drop(download);

        // As after a restart: a new store on the same directory.
        let receiver = f.receiver();
        let mut download = f.begin(&receiver);
        assert_eq!(download.missing().collect::<Vec<_>>(), vec![1, 4, 5]);
        assert_eq!(download.bytes_had(), 3 * u64::from(SMALL));
        // Writing a chunk already had is accepted and changes nothing.
        download.write_chunk(0, &f.chunk(0)).unwrap();
        for index in download.missing().collect::<Vec<_>>() {
            download.write_chunk(index, &f.chunk(index)).unwrap();
        }
        let path = download.finish().unwrap();
        assert_eq!(fs::read(path).unwrap(), f.data);
    }

    #[test]
    fn finish_refuses_an_incomplete_download_which_then_resumes() {
        let f = fixture();
        let receiver = f.receiver();
        let mut download = f.begin(&receiver);
        download.write_chunk(5, &f.chunk(5)).unwrap();
        assert_eq!(download.bytes_had(), u64::from(SMALL / 2));
        assert!(!download.is_complete());
        assert!(matches!(
            download.finish(),
            Err(FinishError::Incomplete { missing: 5 })
        ));
        assert!(!receiver.has(&f.root));
        let download = f.begin(&receiver);
        assert_eq!(download.missing().collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn partial_blobs_serve_the_chunks_they_have() {
        let f = fixture();
        let receiver = f.receiver();
        let mut download = f.begin(&receiver);
        download.write_chunk(0, &f.chunk(0)).unwrap();
        download.write_chunk(3, &f.chunk(3)).unwrap();

        let mut buf = Vec::new();
        receiver.read_chunk(&f.root, 3, &mut buf).unwrap();
        assert_eq!(buf, f.chunk(3));
        assert!(matches!(
            receiver.read_chunk(&f.root, 1, &mut buf),
            Err(ReadChunkError::Missing { index: 1 })
        ));
        assert!(buf.is_empty());
        assert_eq!(receiver.hash_list(&f.root).unwrap().root(), f.root);
        let Availability::Partial(have) = receiver.availability(&f.root).unwrap() else {
            panic!("partial expected");
        };
        assert_eq!(have.missing().collect::<Vec<_>>(), vec![1, 2, 4, 5]);
        assert_eq!(have.as_bytes(), &[0b0000_1001]);
        assert!(!receiver.has(&f.root));
        assert_eq!(receiver.path_of(&f.root), None);
        // Not exportable until complete.
        assert!(matches!(
            receiver.export(&f.root, &f.base, "x"),
            Err(ExportError::NotFound)
        ));
    }

    #[test]
    fn begin_download_refuses_wrong_lists_and_concurrent_downloads() {
        let f = fixture();
        let receiver = f.receiver();
        let list = f.source.hash_list(&f.root).unwrap();
        let size = f.data.len() as u64;
        assert!(matches!(
            receiver.begin_download(ContentHash([1; 32]), size, list.clone()),
            Err(BeginDownloadError::BadHashList(VerifyError::RootMismatch))
        ));
        assert!(matches!(
            receiver.begin_download(f.root, size + 1, list.clone()),
            Err(BeginDownloadError::BadHashList(
                VerifyError::WrongSize { .. }
            ))
        ));

        let download = f.begin(&receiver);
        assert!(matches!(
            f.begin_err(&receiver),
            BeginDownloadError::InProgress
        ));
        assert!(matches!(
            receiver.remove(&f.root),
            Err(RemoveError::InProgress)
        ));
        drop(download);
        drop(f.begin(&receiver));
    }

    #[test]
    fn lost_or_damaged_partial_files_start_over() {
        let f = fixture();
        let receiver = f.receiver();
        let mut download = f.begin(&receiver);
        download.write_chunk(1, &f.chunk(1)).unwrap();
        drop(download);

        // The bitmap lost: nothing can be trusted.
        fs::remove_file(receiver.path(&f.root, Some(HAVE))).unwrap();
        let mut download = f.begin(&receiver);
        assert_eq!(download.missing().count(), 6);
        download.write_chunk(1, &f.chunk(1)).unwrap();
        drop(download);

        // The data truncated: the bitmap no longer describes it.
        File::options()
            .write(true)
            .open(receiver.path(&f.root, Some(PART)))
            .unwrap()
            .set_len(10)
            .unwrap();
        let download = f.begin(&receiver);
        assert_eq!(download.missing().count(), 6);
        assert_eq!(
            fs::metadata(receiver.path(&f.root, Some(PART)))
                .unwrap()
                .len(),
            f.data.len() as u64
        );
    }

    #[test]
    fn corruption_on_disk_is_never_served_or_exported() {
        let f = fixture();
        let path = f.source.path_of(&f.root).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        bytes[SMALL as usize * 4 + 7] ^= 1;
        fs::write(&path, &bytes).unwrap();

        let mut buf = Vec::new();
        assert!(matches!(
            f.source.read_chunk(&f.root, 4, &mut buf),
            Err(ReadChunkError::Corrupt { index: 4 })
        ));
        f.source.read_chunk(&f.root, 3, &mut buf).unwrap();

        let out = f.base.join("out");
        fs::create_dir(&out).unwrap();
        assert!(matches!(
            f.source.export(&f.root, &out, "a.bin"),
            Err(ExportError::Corrupt { index: 4 })
        ));
        assert_eq!(
            fs::read_dir(&out).unwrap().count(),
            0,
            "nothing left behind"
        );
    }

    #[test]
    fn export_sanitises_the_name_and_never_overwrites() {
        let f = fixture();
        let out = f.base.join("downloads");
        fs::create_dir(&out).unwrap();
        fs::write(out.join("evil.txt"), b"the user's own file").unwrap();

        let first = f.source.export(&f.root, &out, "../../evil.txt").unwrap();
        let second = f.source.export(&f.root, &out, "..\\evil.txt").unwrap();
        assert_eq!(first, out.join("evil (1).txt"));
        assert_eq!(second, out.join("evil (2).txt"));
        assert_eq!(
            fs::read(out.join("evil.txt")).unwrap(),
            b"the user's own file"
        );
        assert_eq!(fs::read(&first).unwrap(), f.data);
        assert_eq!(fs::read(&second).unwrap(), f.data);
        let nameless = f.source.export(&f.root, &out, "..").unwrap();
        assert_eq!(nameless, out.join("file"));
        assert_eq!(fs::read_dir(&f.base).unwrap().count(), 3, "nothing escaped");
    }

    #[test]
    fn empty_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("empty"), b"").unwrap();
        let a = BlobStore::open_with_chunk_size(&dir.path().join("a"), SMALL).unwrap();
        let b = BlobStore::open_with_chunk_size(&dir.path().join("b"), SMALL).unwrap();
        let root = a.import(&dir.path().join("empty")).unwrap();
        let list = a.hash_list(&root).unwrap();
        assert_eq!(list.chunk_count(), 0);
        let download = b.begin_download(root, 0, list).unwrap();
        assert_eq!(download.missing().count(), 0);
        assert!(download.is_complete());
        let path = download.finish().unwrap();
        assert_eq!(fs::read(path).unwrap(), b"");
        let out = b.export(&root, dir.path(), "empty copy").unwrap();
        assert_eq!(fs::read(out).unwrap(), b"");
    }

    #[test]
    fn remove_deletes_everything() {
        let f = fixture();
        let receiver = f.receiver();
        let mut download = f.begin(&receiver);
        download.write_chunk(0, &f.chunk(0)).unwrap();
        drop(download);
        receiver.remove(&f.root).unwrap();
        f.source.remove(&f.root).unwrap();
        assert_eq!(fs::read_dir(receiver.dir()).unwrap().count(), 0);
        assert_eq!(fs::read_dir(f.source.dir()).unwrap().count(), 0);
        assert_eq!(
            receiver.availability(&f.root).unwrap(),
            Availability::Absent
        );
    }

    #[test]
    fn opening_removes_leftover_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".tmp-crashed"), b"half an import").unwrap();
        fs::write(dir.path().join("keep"), b"").unwrap();
        BlobStore::open(dir.path()).unwrap();
        assert!(!dir.path().join(".tmp-crashed").exists());
        assert!(dir.path().join("keep").exists());
        assert!(BlobStore::open_with_chunk_size(dir.path(), 1000).is_err());
    }

    #[test]
    fn bitmap_bits() {
        let mut bits = Bitmap::new(10);
        assert_eq!(bits.as_bytes().len(), 2);
        bits.set(0);
        bits.set(9);
        assert!(bits.get(0) && bits.get(9) && !bits.get(1) && !bits.get(10));
        assert_eq!(bits.count(), 2);
        assert_eq!(bits.missing().count(), 8);
        // Bits past the end are cleared; a wrong length is refused.
        let from = Bitmap::from_bytes(vec![0xFF, 0xFF], 10).unwrap();
        assert_eq!(from.count(), 10);
        assert_eq!(from.as_bytes(), &[0xFF, 0b11]);
        assert_eq!(Bitmap::from_bytes(vec![0], 10), None);
        assert!(Bitmap::new(0).is_empty());
    }

    #[test]
    fn large_file_import_download_and_export_with_default_chunks() {
        // 64 MiB, written in 1 MiB pieces; every step streams through one chunk.
        let dir = tempfile::tempdir().unwrap();
        let source_path = dir.path().join("large.bin");
        let mut file = File::create(&source_path).unwrap();
        let mut whole = blake3::Hasher::new();
        for i in 0..64u8 {
            let piece = pattern(CHUNK_SIZE as usize, i);
            file.write_all(&piece).unwrap();
            whole.update(&piece);
        }
        drop(file);
        let whole = whole.finalize();

        let a = BlobStore::open(&dir.path().join("a")).unwrap();
        let b = BlobStore::open(&dir.path().join("b")).unwrap();
        let root = a.import(&source_path).unwrap();
        assert_eq!(root, hash_file(&source_path).unwrap().0);

        let list = a.hash_list(&root).unwrap();
        assert_eq!(list.chunk_count(), 64);
        let mut download = b.begin_download(root, 64 << 20, list).unwrap();
        let mut buf = Vec::with_capacity(CHUNK_SIZE as usize);
        for index in download.missing().collect::<Vec<_>>() {
            a.read_chunk(&root, index, &mut buf).unwrap();
            download.write_chunk(index, &buf).unwrap();
        }
        assert_eq!(download.bytes_had(), 64 << 20);
        download.finish().unwrap();

        let exported = b.export(&root, dir.path(), "copy.bin").unwrap();
        let mut copy = blake3::Hasher::new();
        let mut reader = File::open(exported).unwrap();
        let mut piece = vec![0u8; CHUNK_SIZE as usize];
        loop {
            let n = read_full(&mut reader, &mut piece).unwrap();
            if n == 0 {
                break;
            }
            copy.update(&piece[..n]);
        }
        assert_eq!(copy.finalize(), whole);
    }
}
