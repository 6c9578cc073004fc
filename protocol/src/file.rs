//! `/confab/file/1`: fetching a file's content, chunk by chunk, from any peer that has it.
//!
//! A file is named by its *root* ([`ContentHash`]): the BLAKE3 hash over the file's size, its
//! chunk size and the list of its chunks' BLAKE3 hashes (the *hash list*). A receiver that knows
//! the root (from the message's [`crate::message::Attachment`]) first fetches the hash list in
//! pages and checks it against the root, then fetches chunks in any order, from any peer, and
//! checks each against its hash as it arrives: a peer that serves a wrong chunk is caught at once
//! and dropped as a source, and what was verified is never fetched again after a restart.
//! One request, one response, one stream; a chunk is at most [`MAX_FILE_CHUNK`] bytes.

use serde::{Deserialize, Serialize};

use crate::codec::Wire;
use crate::ids::ContentHash;
use crate::limits::{MAX_FILE_CHUNK, MAX_FILE_REQUEST, MAX_FILE_RESPONSE, MAX_HASH_LIST_PAGE};

/// The libp2p protocol name of file transfers.
pub const FILE_PROTOCOL: &str = "/confab/file/1";

/// What a peer asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum FileRequest {
    /// Part of the hash list of `root`: up to [`MAX_HASH_LIST_PAGE`] chunk hashes from
    /// chunk `start` on.
    HashList {
        /// The file.
        root: ContentHash,
        /// The first chunk whose hash is wanted.
        start: u32,
    },
    /// Chunk `index` of `root`.
    Chunk {
        /// The file.
        root: ContentHash,
        /// Which chunk (0-based).
        index: u32,
    },
    /// A request kind this version does not know.
    #[serde(other)]
    Unknown,
}

/// The answer to a [`FileRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum FileResponse {
    /// A page of the hash list.
    HashList {
        /// The file's size in bytes.
        size: u64,
        /// Its chunk size in bytes.
        chunk_size: u32,
        /// The chunk that `hashes` starts at.
        start: u32,
        /// Consecutive 32-byte chunk hashes (a multiple of 32 bytes).
        #[serde(with = "serde_bytes")]
        hashes: Vec<u8>,
    },
    /// A chunk's bytes.
    Chunk {
        /// Which chunk.
        index: u32,
        /// Its bytes (the last chunk may be shorter).
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// This peer does not have it (or not that chunk yet).
    NotFound,
    /// This peer is serving too much right now; ask again later or elsewhere.
    Busy,
    /// A response kind this version does not know.
    #[serde(other)]
    Unknown,
}

impl Wire for FileRequest {
    const KIND: &'static str = "file request";
    const VERSION: u16 = 1;
    const MAX_SIZE: usize = MAX_FILE_REQUEST;
}

impl Wire for FileResponse {
    const KIND: &'static str = "file response";
    const VERSION: u16 = 1;
    const MAX_SIZE: usize = MAX_FILE_RESPONSE;

    fn validate(&self) -> Result<(), String> {
        match self {
            FileResponse::HashList { hashes, .. } => {
                if hashes.len() % 32 != 0 || hashes.len() > MAX_HASH_LIST_PAGE * 32 {
                    return Err(format!("a hash list page of {} bytes", hashes.len()));
                }
                Ok(())
            }
            FileResponse::Chunk { bytes, .. } if bytes.len() > MAX_FILE_CHUNK => {
                Err(format!("a chunk of {} bytes", bytes.len()))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    #[test]
    fn frames_round_trip_and_oversized_ones_are_refused() {
        let root = ContentHash([7; 32]);
        for request in [
            FileRequest::HashList { root, start: 0 },
            FileRequest::Chunk { root, index: 3 },
        ] {
            let back: FileRequest = decode(&encode(&request).unwrap()).unwrap();
            assert_eq!(back, request);
        }
        let full = FileResponse::Chunk {
            index: 1,
            bytes: vec![1; MAX_FILE_CHUNK],
        };
        let back: FileResponse = decode(&encode(&full).unwrap()).unwrap();
        assert_eq!(back, full);
        let too_big = FileResponse::Chunk {
            index: 1,
            bytes: vec![1; MAX_FILE_CHUNK + 1],
        };
        assert!(encode(&too_big).is_err());
        let ragged = FileResponse::HashList {
            size: 1,
            chunk_size: 1,
            start: 0,
            hashes: vec![0; 33],
        };
        assert!(encode(&ragged).is_err());
    }
}
