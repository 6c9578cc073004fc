//! Files and media on disk: content addressing, the blob store, safe names, media sniffing.
//!
//! This is the sans-network foundation of file transfer (issue 6). The `/confab/file/1`
//! request-response protocol built on it only moves bytes: it asks peers for a hash list and for
//! chunks, and hands what arrives to a [`store::Download`], which verifies and writes it.
//!
//! Layout:
//! - [`hashing`]: chunking, the per-chunk BLAKE3 [`hashing::HashList`] and the file's root hash.
//! - [`store`]: the [`store::BlobStore`] directory — complete blobs, resumable partial downloads,
//!   chunk serving, import and export.
//! - [`names`]: [`names::sanitize`] for file names that come from peers.
//! - [`media`]: kind (image / audio / video / file), MIME type, image dimensions and thumbnail,
//!   audio/video duration — all from the content, never the name.
//!
//! # Design
//!
//! **Chunks.** A file is cut into [`CHUNK_SIZE`] (1 MiB) chunks, the last one shorter. A chunk is
//! the unit of transfer, verification and resumption: big enough that per-chunk overhead (a
//! request, a hash, an fsync) is small against the bytes moved, small enough that a bad chunk
//! costs little to fetch again and that nobody ever holds more than a chunk or two in memory.
//!
//! **Hash list and root.** The *hash list* is the BLAKE3 hash of every chunk, in order (32 bytes
//! per MiB: 128 KiB for 4 GiB). The file's *root* — its [`ContentHash`](confab_protocol::ContentHash),
//! the name it is known by in messages and in the store — is BLAKE3 (in `derive_key` mode, so it
//! is domain-separated from any other BLAKE3 use) over the file size, the chunk size and the
//! concatenated chunk hashes. A receiver who knows the root (from the message) first fetches the
//! hash list from any peer and checks it against the root; from then on every chunk is checked
//! against its own hash the moment it arrives, so a peer serving bad bytes is caught at the first
//! bad chunk, which can be fetched again from someone else. (A BLAKE3 Merkle tree à la
//! iroh-blobs/bao would avoid fetching the list up front; a flat list is far simpler and its cost
//! — 0.003 % of the file — is negligible at this chunk size.)
//!
//! **Resume.** A partial download is three files beside each other in the store: the data
//! (`<root>.part`, preallocated sparse to its full size), the hash list (`<root>.hashes`) and a
//! bitmap of verified chunks (`<root>.have`). A chunk is written and fsynced to the data file
//! *before* its bit is set and fsynced, so a set bit always means verified bytes on disk: after a
//! crash or restart the download resumes exactly, and a chunk marked had is never fetched again.
//!
//! **Memory and blocking.** Everything here streams through a fixed buffer (at most one chunk)
//! and uses blocking `std::fs` I/O: call it from `tokio::task::spawn_blocking`, never from the
//! event loop.
//!
//! Every size limit of this module is a `const` below, in one place.

pub mod fetcher;
pub mod hashing;
pub mod media;
pub mod names;
pub mod sealed;
pub mod store;
/// The sans-IO scheduler of one download from several sources over `/confab/file/1`.
pub(crate) mod transfer;

/// Size of a chunk: the unit of transfer, verification and resumption (1 MiB).
pub const CHUNK_SIZE: u32 = 1024 * 1024;

/// Smallest chunk size a hash list may declare (tests use small chunks to get many of them).
pub const MIN_CHUNK_SIZE: u32 = 1024;

/// Largest chunk size a hash list may declare: a peer cannot make us buffer more than this at
/// once by choosing a huge chunk size for content it hashes itself.
pub const MAX_CHUNK_SIZE: u32 = CHUNK_SIZE;

/// Most chunks a file may have: 64 GiB at [`CHUNK_SIZE`]. Bounds the hash list a peer can make
/// us fetch and keep ([`MAX_HASH_LIST_BYTES`]) and the bitmap of a download.
pub const MAX_CHUNKS: u64 = 64 * 1024;

/// Largest encoded hash list accepted from a peer: a 12-byte header and 32 bytes per chunk
/// (2 MiB + 12 bytes).
pub const MAX_HASH_LIST_BYTES: usize = hashing::HASH_LIST_HEADER_LEN + 32 * MAX_CHUNKS as usize;

/// Most bytes of a file read to decide its kind ([`media::detect`]).
pub const SNIFF_LEN: usize = 4096;

/// Images larger than this (in pixels) get dimensions but no thumbnail: decoding them would take
/// hundreds of MiB (decompression bombs declare huge sizes in tiny files).
pub const MAX_THUMBNAIL_SOURCE_PIXELS: u64 = 40_000_000;

/// Image files larger than this get dimensions but no thumbnail (the JPEG decoder reads its
/// whole input into memory).
pub const MAX_THUMBNAIL_SOURCE_BYTES: u64 = 50 * 1024 * 1024;

/// Most memory the image decoder may allocate for one thumbnail source, a backstop behind
/// [`MAX_THUMBNAIL_SOURCE_PIXELS`] (a 40-megapixel RGBA8 image takes 160 MiB).
pub const MAX_THUMBNAIL_DECODE_ALLOC: u64 = 256 * 1024 * 1024;

/// A thumbnail fits in a square of this many pixels, keeping the aspect ratio.
pub const THUMBNAIL_SIDE: u32 = 256;

/// Largest thumbnail (encoded JPEG) carried in a message.
pub const MAX_THUMBNAIL_BYTES: usize = 24 * 1024;

/// Longest file name, in bytes, that [`names::sanitize`] produces (the limit of common file
/// systems).
pub const MAX_NAME_BYTES: usize = 255;
