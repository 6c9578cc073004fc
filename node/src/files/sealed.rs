//! Attachments of end-to-end encrypted conversations: the file is encrypted with a fresh key of
//! its own before it enters the blob store, so every copy that moves — to peers, to the
//! bootstrap that holds it for offline receivers — is ciphertext, named by the root of the
//! ciphertext. The key travels only inside the MLS-encrypted message.
//!
//! Format: the plaintext in segments of [`SEGMENT`] bytes, each sealed with ChaCha20-Poly1305
//! under the file key; the nonce is the segment's index with a flag for the last segment, so
//! segments cannot be reordered, dropped or the file cut short without the decryption failing.
//! An empty file is one empty last segment.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

/// Plaintext bytes per segment.
pub const SEGMENT: usize = 64 * 1024;
/// Bytes the cipher adds to a segment.
const TAG: usize = 16;
/// Bound to every segment: which format this is.
const AAD: &[u8] = b"confab-file/1";

/// A file key: 32 random bytes.
pub type FileKey = [u8; 32];

/// Why a sealed file could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealedFileError {
    /// Reading or writing failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The bytes are not this file under this key (tampered, cut short, or another key).
    #[error("the file does not decrypt under its key (segment {0})")]
    Corrupt(u64),
    /// The key has the wrong length.
    #[error("a file key is 32 bytes, this one {0}")]
    BadKey(usize),
}

/// A new random file key.
pub fn new_key() -> FileKey {
    rand::random()
}

/// The key from its bytes in a message.
pub fn key_from(bytes: &[u8]) -> Result<FileKey, SealedFileError> {
    bytes
        .try_into()
        .map_err(|_| SealedFileError::BadKey(bytes.len()))
}

fn nonce(index: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[0] = u8::from(last);
    n[4..].copy_from_slice(&index.to_be_bytes());
    n.into()
}

/// Reads up to `buf.len()` bytes (fewer only at the end).
fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Encrypts `src` into a new file `dst`; returns the ciphertext's size.
pub fn encrypt_file(src: &Path, dst: &Path, key: &FileKey) -> io::Result<u64> {
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    let mut input = BufReader::new(File::open(src)?);
    let mut output = BufWriter::new(File::create_new(dst)?);
    let mut this = vec![0u8; SEGMENT];
    let mut next = vec![0u8; SEGMENT];
    let mut len = fill(&mut input, &mut this)?;
    let mut index = 0u64;
    let mut written = 0u64;
    loop {
        // One segment ahead, to know which is the last.
        let next_len = if len == SEGMENT {
            fill(&mut input, &mut next)?
        } else {
            0
        };
        let last = next_len == 0;
        let sealed = cipher
            .encrypt(
                &nonce(index, last),
                Payload {
                    msg: &this[..len],
                    aad: AAD,
                },
            )
            .map_err(|_| io::Error::other("encryption failed"))?;
        output.write_all(&sealed)?;
        written += sealed.len() as u64;
        if last {
            break;
        }
        std::mem::swap(&mut this, &mut next);
        len = next_len;
        index += 1;
    }
    let file = output.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(written)
}

/// Decrypts a sealed file read from `input` into `output`.
pub fn decrypt(
    input: &mut impl Read,
    output: &mut impl Write,
    key: &FileKey,
) -> Result<(), SealedFileError> {
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    let mut this = vec![0u8; SEGMENT + TAG];
    let mut next = vec![0u8; SEGMENT + TAG];
    let mut len = fill(input, &mut this)?;
    let mut index = 0u64;
    loop {
        let next_len = if len == SEGMENT + TAG {
            fill(input, &mut next)?
        } else {
            0
        };
        let last = next_len == 0;
        let plain = cipher
            .decrypt(
                &nonce(index, last),
                Payload {
                    msg: &this[..len],
                    aad: AAD,
                },
            )
            .map_err(|_| SealedFileError::Corrupt(index))?;
        output.write_all(&plain)?;
        if last {
            return Ok(());
        }
        std::mem::swap(&mut this, &mut next);
        len = next_len;
        index += 1;
    }
}

/// The plaintext size of a sealed file of `sealed` bytes.
pub fn plain_size(sealed: u64) -> u64 {
    let segment = (SEGMENT + TAG) as u64;
    let segments = sealed.div_ceil(segment).max(1);
    sealed.saturating_sub(segments * TAG as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(len: usize) {
        let dir = tempfile::tempdir().unwrap();
        let plain: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(dir.path().join("p"), &plain).unwrap();
        let key = new_key();
        let size = encrypt_file(&dir.path().join("p"), &dir.path().join("c"), &key).unwrap();
        let sealed = std::fs::read(dir.path().join("c")).unwrap();
        assert_eq!(sealed.len() as u64, size);
        assert_eq!(plain_size(size), len as u64);
        if len >= 32 {
            assert!(!sealed.windows(32).any(|w| w == &plain[..32]));
        }
        let mut out = Vec::new();
        decrypt(&mut sealed.as_slice(), &mut out, &key).unwrap();
        assert_eq!(out, plain);
        // Another key, a flipped bit, a cut, a dropped segment: all refused.
        assert!(decrypt(&mut sealed.as_slice(), &mut Vec::new(), &new_key()).is_err());
        let mut flipped = sealed.clone();
        flipped[sealed.len() / 2] ^= 1;
        assert!(decrypt(&mut flipped.as_slice(), &mut Vec::new(), &key).is_err());
        if len > SEGMENT {
            let cut = &sealed[..SEGMENT + TAG];
            assert!(decrypt(&mut &cut[..], &mut Vec::new(), &key).is_err());
            if len > 2 * SEGMENT {
                let dropped = [&sealed[..SEGMENT + TAG], &sealed[2 * (SEGMENT + TAG)..]].concat();
                assert!(decrypt(&mut dropped.as_slice(), &mut Vec::new(), &key).is_err());
            }
        }
    }

    #[test]
    fn files_of_every_shape_round_trip_and_tampering_is_caught() {
        for len in [
            0,
            1,
            1000,
            SEGMENT - 1,
            SEGMENT,
            SEGMENT + 1,
            3 * SEGMENT,
            3 * SEGMENT + 17,
        ] {
            roundtrip(len);
        }
    }
}
