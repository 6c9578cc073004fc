//! Content addressing: chunks, the per-chunk hash list and the file's root hash.
//!
//! - chunk `i` is bytes `[i * chunk_size, min((i + 1) * chunk_size, size))` of the file;
//!   a file of `size` bytes has `ceil(size / chunk_size)` chunks (none when empty);
//! - the *hash list* is `blake3(chunk_0) ‖ blake3(chunk_1) ‖ …` (plain BLAKE3, so `b3sum` of a
//!   chunk cut out with `dd` matches);
//! - the *root* is BLAKE3 in `derive_key` mode with context [`ROOT_CONTEXT`] over
//!   `size (u64 BE) ‖ chunk_size (u32 BE) ‖ hash list`.
//!
//! The encoded hash list ([`HashList::encode`]) is `size (u64 BE) ‖ chunk_size (u32 BE) ‖ hashes`:
//! what a peer serves and what the store keeps in `<root>.hashes`. Its fixed layout lets the
//! store read the hash of one chunk without loading the list ([`HASH_LIST_HEADER_LEN`] + 32 × i).

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use confab_protocol::ContentHash;

use super::{CHUNK_SIZE, MAX_CHUNK_SIZE, MAX_CHUNKS, MAX_HASH_LIST_BYTES, MIN_CHUNK_SIZE};

/// BLAKE3 `derive_key` context of a file's root: separates roots from every other BLAKE3 use and
/// names the version of the scheme.
pub const ROOT_CONTEXT: &str = "confab 2025-01 file root v1";

/// Length of the encoded hash list's header: size (u64 BE) and chunk size (u32 BE).
pub const HASH_LIST_HEADER_LEN: usize = 8 + 4;

/// Length of one chunk hash.
pub const HASH_LEN: usize = 32;

/// The BLAKE3 hash of every chunk of a file, with the file's size and chunk size.
///
/// Checked once against the root ([`HashList::verify`]); then each chunk is checked against it as
/// it arrives ([`HashList::check_chunk`]).
#[derive(Clone, PartialEq, Eq)]
pub struct HashList {
    size: u64,
    chunk_size: u32,
    hashes: Vec<[u8; HASH_LEN]>,
}

impl std::fmt::Debug for HashList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashList")
            .field("size", &self.size)
            .field("chunk_size", &self.chunk_size)
            .field("chunks", &self.hashes.len())
            .finish()
    }
}

/// Why [`hash_file`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HashFileError {
    /// The file has more than [`MAX_CHUNKS`] chunks.
    #[error("file too large: more than {max} chunks of {chunk_size} bytes")]
    TooLarge {
        /// The chunk size used.
        chunk_size: u32,
        /// The limit, [`MAX_CHUNKS`].
        max: u64,
    },
    /// The chunk size is outside [`MIN_CHUNK_SIZE`]..=[`MAX_CHUNK_SIZE`] or not a power of two.
    #[error("invalid chunk size {0}")]
    BadChunkSize(u32),
    /// Reading the file failed.
    #[error("reading the file: {0}")]
    Io(#[from] io::Error),
}

/// Why a hash list does not match a root ([`HashList::verify`]).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    /// The list describes a file of another size.
    #[error("hash list is for {actual} bytes, expected {expected}")]
    WrongSize {
        /// The size the file is known to have.
        expected: u64,
        /// The size the hash list declares.
        actual: u64,
    },
    /// The list does not hash to the root.
    #[error("hash list does not match the root")]
    RootMismatch,
}

/// Why a chunk was refused ([`HashList::check_chunk`]). Each variant names the chunk, so the
/// caller can fetch it again from another source.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChunkError {
    /// There is no chunk with this index.
    #[error("chunk {index} out of range ({count} chunks)")]
    OutOfRange {
        /// The index given.
        index: u64,
        /// The number of chunks of the file.
        count: u64,
    },
    /// The chunk has the wrong length.
    #[error("chunk {index} is {actual} bytes, expected {expected}")]
    WrongLength {
        /// The chunk.
        index: u64,
        /// Its length in the file.
        expected: usize,
        /// The length received.
        actual: usize,
    },
    /// The chunk's bytes do not hash to its entry in the list.
    #[error("chunk {index} does not match its hash")]
    HashMismatch {
        /// The chunk.
        index: u64,
    },
}

/// Why bytes are not a valid encoded hash list ([`HashList::decode`]).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Longer than [`MAX_HASH_LIST_BYTES`].
    #[error("hash list of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// Length received.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Shorter than its header, or the hashes are not a whole number of 32-byte hashes.
    #[error("malformed hash list ({0} bytes)")]
    Malformed(usize),
    /// The chunk size is outside [`MIN_CHUNK_SIZE`]..=[`MAX_CHUNK_SIZE`] or not a power of two.
    #[error("invalid chunk size {0}")]
    BadChunkSize(u32),
    /// The number of hashes does not match the declared size.
    #[error("{actual} hashes for a file of {expected} chunks")]
    WrongCount {
        /// Chunks of a file of the declared size.
        expected: u64,
        /// Hashes present.
        actual: u64,
    },
}

/// Whether `chunk_size` may be used: a power of two in [`MIN_CHUNK_SIZE`]..=[`MAX_CHUNK_SIZE`].
pub fn valid_chunk_size(chunk_size: u32) -> bool {
    chunk_size.is_power_of_two() && (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size)
}

/// Number of chunks of a file of `size` bytes (0 for an empty file).
pub fn chunk_count(size: u64, chunk_size: u32) -> u64 {
    size.div_ceil(u64::from(chunk_size))
}

/// Hashes a file with [`CHUNK_SIZE`] chunks: its root and hash list.
///
/// Streams through one chunk-sized buffer; never holds the file. Blocking: run it in
/// `tokio::task::spawn_blocking`.
pub fn hash_file(path: &Path) -> Result<(ContentHash, HashList), HashFileError> {
    hash_file_with_chunk_size(path, CHUNK_SIZE)
}

/// [`hash_file`] with another chunk size (tests use small chunks to get many of them).
///
/// Blocking: run it in `tokio::task::spawn_blocking`.
pub fn hash_file_with_chunk_size(
    path: &Path,
    chunk_size: u32,
) -> Result<(ContentHash, HashList), HashFileError> {
    let mut file = File::open(path)?;
    let mut hasher = ChunkHasher::new(chunk_size)?;
    let mut buf = vec![0u8; chunk_size as usize];
    loop {
        let n = read_full(&mut file, &mut buf)?;
        if n == 0 {
            break;
        }
        hasher.push(&buf[..n])?;
        if n < buf.len() {
            break;
        }
    }
    let list = hasher.finish();
    Ok((list.root(), list))
}

/// Builds a [`HashList`] from a file's chunks as they are read (used by [`hash_file`] and by the
/// store's import, which hashes and copies in one pass).
pub(crate) struct ChunkHasher {
    size: u64,
    chunk_size: u32,
    hashes: Vec<[u8; HASH_LEN]>,
    /// Set once a short chunk was pushed: only the last chunk may be short.
    ended: bool,
}

impl ChunkHasher {
    /// Starts a hash list with this chunk size.
    pub(crate) fn new(chunk_size: u32) -> Result<Self, HashFileError> {
        if !valid_chunk_size(chunk_size) {
            return Err(HashFileError::BadChunkSize(chunk_size));
        }
        Ok(Self {
            size: 0,
            chunk_size,
            hashes: Vec::new(),
            ended: false,
        })
    }

    /// Adds the next chunk: exactly `chunk_size` bytes, except the last one, which may be shorter
    /// (but not empty).
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Result<(), HashFileError> {
        debug_assert!(!self.ended, "a short chunk must be the last one");
        debug_assert!(!chunk.is_empty() && chunk.len() <= self.chunk_size as usize);
        if self.hashes.len() as u64 >= MAX_CHUNKS {
            return Err(HashFileError::TooLarge {
                chunk_size: self.chunk_size,
                max: MAX_CHUNKS,
            });
        }
        self.ended = chunk.len() < self.chunk_size as usize;
        self.size += chunk.len() as u64;
        self.hashes.push(*blake3::hash(chunk).as_bytes());
        Ok(())
    }

    /// The hash list of the chunks pushed.
    pub(crate) fn finish(self) -> HashList {
        HashList {
            size: self.size,
            chunk_size: self.chunk_size,
            hashes: self.hashes,
        }
    }
}

/// Reads until `buf` is full or the end of the file; returns the number of bytes read.
pub(crate) fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The root of a file from its size, chunk size and concatenated chunk hashes.
fn compute_root(size: u64, chunk_size: u32, hashes: &[[u8; HASH_LEN]]) -> ContentHash {
    let mut hasher = blake3::Hasher::new_derive_key(ROOT_CONTEXT);
    hasher.update(&size.to_be_bytes());
    hasher.update(&chunk_size.to_be_bytes());
    for hash in hashes {
        hasher.update(hash);
    }
    ContentHash(*hasher.finalize().as_bytes())
}

impl HashList {
    /// The size of the file, in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The chunk size, in bytes.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// The number of chunks (0 for an empty file).
    pub fn chunk_count(&self) -> u64 {
        self.hashes.len() as u64
    }

    /// Where chunk `index` starts in the file.
    pub fn chunk_offset(&self, index: u64) -> u64 {
        index * u64::from(self.chunk_size)
    }

    /// The length of chunk `index` (the last one may be shorter), or `None` past the end.
    pub fn chunk_len(&self, index: u64) -> Option<usize> {
        if index >= self.chunk_count() {
            return None;
        }
        let rest = self.size - self.chunk_offset(index);
        Some(rest.min(u64::from(self.chunk_size)) as usize)
    }

    /// The hash of chunk `index`, or `None` past the end.
    pub fn hash(&self, index: u64) -> Option<&[u8; HASH_LEN]> {
        usize::try_from(index).ok().and_then(|i| self.hashes.get(i))
    }

    /// The file's root: what it is named by in messages and in the store.
    pub fn root(&self) -> ContentHash {
        compute_root(self.size, self.chunk_size, &self.hashes)
    }

    /// Checks that this list belongs to the file named `root` of `size` bytes. Do this once,
    /// before trusting any chunk hash in it.
    pub fn verify(&self, root: &ContentHash, size: u64) -> Result<(), VerifyError> {
        if self.size != size {
            return Err(VerifyError::WrongSize {
                expected: size,
                actual: self.size,
            });
        }
        if self.root() != *root {
            return Err(VerifyError::RootMismatch);
        }
        Ok(())
    }

    /// Checks chunk `index` as received: its length and its hash. Only meaningful on a list that
    /// passed [`HashList::verify`].
    pub fn check_chunk(&self, index: u64, bytes: &[u8]) -> Result<(), ChunkError> {
        let (Some(expected_len), Some(expected_hash)) = (self.chunk_len(index), self.hash(index))
        else {
            return Err(ChunkError::OutOfRange {
                index,
                count: self.chunk_count(),
            });
        };
        if bytes.len() != expected_len {
            return Err(ChunkError::WrongLength {
                index,
                expected: expected_len,
                actual: bytes.len(),
            });
        }
        // `blake3::Hash` compares in constant time; not needed here, but free.
        if blake3::hash(bytes) != blake3::Hash::from_bytes(*expected_hash) {
            return Err(ChunkError::HashMismatch { index });
        }
        Ok(())
    }

    /// The encoded list: `size (u64 BE) ‖ chunk_size (u32 BE) ‖ hashes` — what peers exchange and
    /// the store keeps. At most [`MAX_HASH_LIST_BYTES`].
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HASH_LIST_HEADER_LEN + HASH_LEN * self.hashes.len());
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.chunk_size.to_be_bytes());
        for hash in &self.hashes {
            out.extend_from_slice(hash);
        }
        out
    }

    /// Decodes an encoded list, refusing anything over [`MAX_HASH_LIST_BYTES`], a chunk size out
    /// of bounds or a hash count that does not match the size. Says nothing about whether the list
    /// is the right one: follow with [`HashList::verify`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_HASH_LIST_BYTES {
            return Err(DecodeError::TooLong {
                len: bytes.len(),
                max: MAX_HASH_LIST_BYTES,
            });
        }
        let header = parse_header(bytes).ok_or(DecodeError::Malformed(bytes.len()))?;
        let (size, chunk_size) = header?;
        Self::from_parts(size, chunk_size, &bytes[HASH_LIST_HEADER_LEN..])
    }

    /// A list from its parts as a peer sends them — the size, the chunk size and the
    /// concatenated chunk hashes (e.g. the pages of `/confab/file/1` put back together) — with
    /// the checks of [`HashList::decode`]. Follow with [`HashList::verify`].
    pub fn from_parts(size: u64, chunk_size: u32, hashes: &[u8]) -> Result<Self, DecodeError> {
        if !valid_chunk_size(chunk_size) {
            return Err(DecodeError::BadChunkSize(chunk_size));
        }
        if hashes.len() > MAX_HASH_LIST_BYTES - HASH_LIST_HEADER_LEN {
            return Err(DecodeError::TooLong {
                len: hashes.len() + HASH_LIST_HEADER_LEN,
                max: MAX_HASH_LIST_BYTES,
            });
        }
        if !hashes.len().is_multiple_of(HASH_LEN) {
            return Err(DecodeError::Malformed(hashes.len() + HASH_LIST_HEADER_LEN));
        }
        let actual = (hashes.len() / HASH_LEN) as u64;
        let expected = chunk_count(size, chunk_size);
        if actual != expected {
            return Err(DecodeError::WrongCount { expected, actual });
        }
        let hashes = hashes
            .chunks_exact(HASH_LEN)
            .map(|h| h.try_into().expect("chunks_exact yields HASH_LEN bytes"))
            .collect();
        Ok(Self {
            size,
            chunk_size,
            hashes,
        })
    }

    /// Up to `max` chunk hashes from chunk `start` on, concatenated: a page of the list to serve
    /// (empty past the end).
    pub fn page(&self, start: u64, max: usize) -> Vec<u8> {
        let start = usize::try_from(start)
            .unwrap_or(usize::MAX)
            .min(self.hashes.len());
        let end = start.saturating_add(max).min(self.hashes.len());
        self.hashes[start..end].concat()
    }
}

/// Parses the header of an encoded hash list: `None` if too short, an error if the chunk size is
/// invalid, else `(size, chunk_size)`.
pub(crate) fn parse_header(bytes: &[u8]) -> Option<Result<(u64, u32), DecodeError>> {
    let header: &[u8; HASH_LIST_HEADER_LEN] = bytes.get(..HASH_LIST_HEADER_LEN)?.try_into().ok()?;
    let size = u64::from_be_bytes(header[..8].try_into().ok()?);
    let chunk_size = u32::from_be_bytes(header[8..].try_into().ok()?);
    if !valid_chunk_size(chunk_size) {
        return Some(Err(DecodeError::BadChunkSize(chunk_size)));
    }
    Some(Ok((size, chunk_size)))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const SMALL: u32 = MIN_CHUNK_SIZE;

    /// Deterministic, non-repeating test bytes.
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
            .collect()
    }

    fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = dir.join(name);
        File::create(&path).unwrap().write_all(bytes).unwrap();
        path
    }

    #[test]
    fn chunk_counts() {
        assert_eq!(chunk_count(0, SMALL), 0);
        assert_eq!(chunk_count(1, SMALL), 1);
        assert_eq!(chunk_count(u64::from(SMALL), SMALL), 1);
        assert_eq!(chunk_count(u64::from(SMALL) + 1, SMALL), 2);
        assert_eq!(chunk_count(4 << 30, CHUNK_SIZE), 4096);
    }

    #[test]
    fn multi_chunk_file_hashes_each_chunk_and_the_root_commits_to_all() {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(SMALL as usize * 5 + 123, 7);
        let path = write_file(dir.path(), "f", &data);

        let (root, list) = hash_file_with_chunk_size(&path, SMALL).unwrap();
        assert_eq!(list.size(), data.len() as u64);
        assert_eq!(list.chunk_count(), 6);
        assert_eq!(list.chunk_len(5), Some(123));
        assert_eq!(list.chunk_len(6), None);
        for (i, chunk) in data.chunks(SMALL as usize).enumerate() {
            assert_eq!(list.hash(i as u64).unwrap(), blake3::hash(chunk).as_bytes());
            list.check_chunk(i as u64, chunk).unwrap();
        }

        // The root, computed independently from the definition.
        let mut h = blake3::Hasher::new_derive_key(ROOT_CONTEXT);
        h.update(&(data.len() as u64).to_be_bytes());
        h.update(&SMALL.to_be_bytes());
        for chunk in data.chunks(SMALL as usize) {
            h.update(blake3::hash(chunk).as_bytes());
        }
        assert_eq!(root.0, *h.finalize().as_bytes());
        list.verify(&root, data.len() as u64).unwrap();

        // Another chunk size is another root.
        let (root2, _) = hash_file_with_chunk_size(&path, SMALL * 2).unwrap();
        assert_ne!(root, root2);
    }

    #[test]
    fn empty_and_exact_multiple_files() {
        let dir = tempfile::tempdir().unwrap();
        let empty = write_file(dir.path(), "empty", b"");
        let (root, list) = hash_file_with_chunk_size(&empty, SMALL).unwrap();
        assert_eq!((list.size(), list.chunk_count()), (0, 0));
        list.verify(&root, 0).unwrap();

        let exact = write_file(dir.path(), "exact", &pattern(SMALL as usize * 3, 1));
        let (root, list) = hash_file_with_chunk_size(&exact, SMALL).unwrap();
        assert_eq!(list.chunk_count(), 3);
        assert_eq!(list.chunk_len(2), Some(SMALL as usize));
        list.verify(&root, u64::from(SMALL) * 3).unwrap();
    }

    #[test]
    fn verify_refuses_wrong_size_root_or_tampered_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(dir.path(), "f", &pattern(5000, 3));
        let (root, list) = hash_file_with_chunk_size(&path, SMALL).unwrap();

        assert_eq!(
            list.verify(&root, 5001),
            Err(VerifyError::WrongSize {
                expected: 5001,
                actual: 5000
            })
        );
        assert_eq!(
            list.verify(&ContentHash([0; 32]), 5000),
            Err(VerifyError::RootMismatch)
        );
        let mut tampered = list.clone();
        tampered.hashes[2][0] ^= 1;
        assert_eq!(tampered.verify(&root, 5000), Err(VerifyError::RootMismatch));
    }

    #[test]
    fn check_chunk_names_the_bad_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(3000, 9);
        let path = write_file(dir.path(), "f", &data);
        let (_, list) = hash_file_with_chunk_size(&path, SMALL).unwrap();

        let mut bad = data[1024..2048].to_vec();
        bad[17] ^= 0x80;
        assert_eq!(
            list.check_chunk(1, &bad),
            Err(ChunkError::HashMismatch { index: 1 })
        );
        assert_eq!(
            list.check_chunk(2, &data[2048..]),
            Ok(()),
            "the short last chunk"
        );
        assert_eq!(
            list.check_chunk(2, &data[2047..]),
            Err(ChunkError::WrongLength {
                index: 2,
                expected: 952,
                actual: 953
            })
        );
        assert_eq!(
            list.check_chunk(3, &[]),
            Err(ChunkError::OutOfRange { index: 3, count: 3 })
        );
        assert_eq!(
            list.check_chunk(u64::MAX, &[]),
            Err(ChunkError::OutOfRange {
                index: u64::MAX,
                count: 3
            })
        );
    }

    #[test]
    fn encode_decode_round_trip_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(dir.path(), "f", &pattern(10_000, 4));
        let (root, list) = hash_file_with_chunk_size(&path, SMALL).unwrap();
        let bytes = list.encode();
        assert_eq!(bytes.len(), HASH_LIST_HEADER_LEN + 10 * HASH_LEN);
        let decoded = HashList::decode(&bytes).unwrap();
        assert_eq!(decoded, list);
        decoded.verify(&root, 10_000).unwrap();

        assert_eq!(
            HashList::decode(&bytes[..5]),
            Err(DecodeError::Malformed(5))
        );
        assert_eq!(
            HashList::decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Malformed(bytes.len() - 1))
        );
        assert_eq!(
            HashList::decode(&bytes[..bytes.len() - HASH_LEN]),
            Err(DecodeError::WrongCount {
                expected: 10,
                actual: 9
            })
        );
        let mut huge_chunks = bytes.clone();
        huge_chunks[8..12].copy_from_slice(&(64u32 << 20).to_be_bytes());
        assert_eq!(
            HashList::decode(&huge_chunks),
            Err(DecodeError::BadChunkSize(64 << 20))
        );
        let mut odd_chunks = bytes.clone();
        odd_chunks[8..12].copy_from_slice(&1500u32.to_be_bytes());
        assert_eq!(
            HashList::decode(&odd_chunks),
            Err(DecodeError::BadChunkSize(1500))
        );
        let too_long = vec![0u8; MAX_HASH_LIST_BYTES + 1];
        assert!(matches!(
            HashList::decode(&too_long),
            Err(DecodeError::TooLong { .. })
        ));
        // A hostile size whose chunk count is absurd is refused without allocating.
        let mut absurd = vec![0u8; HASH_LIST_HEADER_LEN];
        absurd[..8].copy_from_slice(&u64::MAX.to_be_bytes());
        absurd[8..12].copy_from_slice(&SMALL.to_be_bytes());
        assert!(matches!(
            HashList::decode(&absurd),
            Err(DecodeError::WrongCount { actual: 0, .. })
        ));
    }

    #[test]
    fn pages_put_back_together_make_the_list() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(dir.path(), "f", &pattern(10_000, 5));
        let (root, list) = hash_file_with_chunk_size(&path, SMALL).unwrap();
        let mut hashes = Vec::new();
        let mut start = 0;
        loop {
            let page = list.page(start, 3);
            if page.is_empty() {
                break;
            }
            start += (page.len() / HASH_LEN) as u64;
            hashes.extend(page);
        }
        assert_eq!(start, 10);
        assert!(list.page(u64::MAX, 3).is_empty());
        let back = HashList::from_parts(10_000, SMALL, &hashes).unwrap();
        assert_eq!(back, list);
        back.verify(&root, 10_000).unwrap();
        assert_eq!(
            HashList::from_parts(10_000, SMALL, &hashes[..HASH_LEN * 9]),
            Err(DecodeError::WrongCount {
                expected: 10,
                actual: 9
            })
        );
        assert_eq!(
            HashList::from_parts(10_000, 3, &hashes),
            Err(DecodeError::BadChunkSize(3))
        );
    }

    #[test]
    fn invalid_chunk_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(dir.path(), "f", b"x");
        assert!(matches!(
            hash_file_with_chunk_size(&path, 1000),
            Err(HashFileError::BadChunkSize(1000))
        ));
        assert!(matches!(
            hash_file_with_chunk_size(&path, CHUNK_SIZE * 2),
            Err(HashFileError::BadChunkSize(_))
        ));
    }

    #[test]
    fn hashing_a_large_file_streams_with_the_default_chunk_size() {
        // 64 MiB written in 1 MiB pieces and hashed through one 1 MiB buffer.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("large");
        let mut file = File::create(&path).unwrap();
        let mut whole = blake3::Hasher::new();
        let mut expected = Vec::new();
        for i in 0..64u8 {
            let piece = pattern(CHUNK_SIZE as usize, i);
            file.write_all(&piece).unwrap();
            whole.update(&piece);
            expected.push(*blake3::hash(&piece).as_bytes());
        }
        drop(file);

        let (root, list) = hash_file(&path).unwrap();
        assert_eq!(list.size(), 64 << 20);
        assert_eq!(list.chunk_count(), 64);
        assert_eq!(list.hashes, expected);
        list.verify(&root, 64 << 20).unwrap();
        // 64 chunk hashes: the whole hash list is 2 KiB.
        assert_eq!(list.encode().len(), HASH_LIST_HEADER_LEN + 64 * HASH_LEN);
    }
}
