//! Encoding and decoding of frames, with their limits.
//!
//! A frame is the CBOR array `[version, body]`. [`decode`] checks, in order: the size limit (before
//! looking at a single byte), the version, the CBOR structure and types, that nothing trails the
//! frame, and the rules of [`Wire::validate`]. It never panics and never allocates more than the
//! input's size: every length inside the frame is bounded by the (already bounded) input.

use std::fmt;
use std::marker::PhantomData;

use cbor4ii::core::dec::{Read, Reference};
use cbor4ii::core::error::DecodeError as CoreDecodeError;
use cbor4ii::core::utils::SliceReader;
use serde::de::{self, DeserializeOwned, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserializer as _, Serialize};

/// A type that travels as one frame.
pub trait Wire: Serialize + DeserializeOwned {
    /// A human name for the frame kind, used in errors.
    const KIND: &'static str;
    /// The version this build writes and accepts.
    const VERSION: u16;
    /// The largest encoded frame, in bytes.
    const MAX_SIZE: usize;

    /// Rules the type system cannot express (lengths of strings, required content).
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is larger than the frame kind allows; nothing was parsed.
    #[error("{kind} of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The frame kind.
        kind: &'static str,
        /// The input's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The input ends in the middle of a value.
    #[error("{kind} is truncated")]
    Truncated {
        /// The frame kind.
        kind: &'static str,
    },
    /// The frame has a version this build does not speak.
    #[error("{kind} version {found} is not supported (this build speaks {supported})")]
    UnsupportedVersion {
        /// The frame kind.
        kind: &'static str,
        /// The version in the frame.
        found: u64,
        /// The version this build speaks.
        supported: u16,
    },
    /// The bytes are not CBOR, or not the expected shape or types.
    #[error("{kind} is malformed: {detail}")]
    Malformed {
        /// The frame kind.
        kind: &'static str,
        /// What was wrong, for logs.
        detail: String,
    },
    /// Bytes follow the end of the frame.
    #[error("{kind} has {extra} trailing bytes")]
    TrailingBytes {
        /// The frame kind.
        kind: &'static str,
        /// How many (at least).
        extra: usize,
    },
    /// The frame decoded but breaks a protocol rule.
    #[error("{kind} is invalid: {detail}")]
    Invalid {
        /// The frame kind.
        kind: &'static str,
        /// The broken rule.
        detail: String,
    },
}

/// Why a value cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded frame would exceed the frame kind's limit.
    #[error("{kind} of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The frame kind.
        kind: &'static str,
        /// The encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The value breaks a protocol rule.
    #[error("{kind} is invalid: {detail}")]
    Invalid {
        /// The frame kind.
        kind: &'static str,
        /// The broken rule.
        detail: String,
    },
    /// The serializer failed (out of memory).
    #[error("{kind} could not be encoded: {detail}")]
    Serializer {
        /// The frame kind.
        kind: &'static str,
        /// The serializer's message.
        detail: String,
    },
}

/// Encodes `value` as one frame, refusing invalid or oversized values.
pub fn encode<T: Wire>(value: &T) -> Result<Vec<u8>, EncodeError> {
    value.validate().map_err(|detail| EncodeError::Invalid {
        kind: T::KIND,
        detail,
    })?;
    let bytes = cbor4ii::serde::to_vec(Vec::new(), &(T::VERSION, value)).map_err(|e| {
        EncodeError::Serializer {
            kind: T::KIND,
            detail: format!("{e:?}"),
        }
    })?;
    if bytes.len() > T::MAX_SIZE {
        return Err(EncodeError::TooLarge {
            kind: T::KIND,
            size: bytes.len(),
            max: T::MAX_SIZE,
        });
    }
    Ok(bytes)
}

/// Decodes one frame of kind `T` from exactly `buf`.
pub fn decode<T: Wire>(buf: &[u8]) -> Result<T, DecodeError> {
    if buf.len() > T::MAX_SIZE {
        return Err(DecodeError::TooLarge {
            kind: T::KIND,
            size: buf.len(),
            max: T::MAX_SIZE,
        });
    }
    let mut de = cbor4ii::serde::Deserializer::new(SliceReader::new(buf));
    let outcome = (&mut de)
        .deserialize_seq(FrameVisitor::<T>(PhantomData))
        .map_err(|e| map_cbor_error::<T>(e))?;
    let value = match outcome {
        Frame::Body(value) => value,
        Frame::OtherVersion(found) => {
            return Err(DecodeError::UnsupportedVersion {
                kind: T::KIND,
                found,
                supported: T::VERSION,
            });
        }
    };
    let mut rest = de.into_inner();
    let extra = match rest.fill(1) {
        Ok(Reference::Long(b)) => b.len(),
        Ok(Reference::Short(b)) => b.len(),
        Err(never) => match never {},
    };
    if extra > 0 {
        return Err(DecodeError::TrailingBytes {
            kind: T::KIND,
            extra,
        });
    }
    value.validate().map_err(|detail| DecodeError::Invalid {
        kind: T::KIND,
        detail,
    })?;
    Ok(value)
}

enum Frame<T> {
    Body(T),
    OtherVersion(u64),
}

struct FrameVisitor<T>(PhantomData<T>);

impl<'de, T: Wire> Visitor<'de> for FrameVisitor<T> {
    type Value = Frame<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a [version, body] array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Frame<T>, A::Error> {
        let version: u64 = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        if version != u64::from(T::VERSION) {
            // Skip whatever a newer peer put there, so the error is about the version.
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(Frame::OtherVersion(version));
        }
        let body: T = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(1, &self))?;
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(3, &self));
        }
        Ok(Frame::Body(body))
    }
}

fn map_cbor_error<T: Wire>(
    err: cbor4ii::serde::DecodeError<std::convert::Infallible>,
) -> DecodeError {
    match err {
        cbor4ii::serde::DecodeError::Core(CoreDecodeError::Eof { .. }) => {
            DecodeError::Truncated { kind: T::KIND }
        }
        cbor4ii::serde::DecodeError::Core(core) => DecodeError::Malformed {
            kind: T::KIND,
            detail: format!("{core:?}"),
        },
        cbor4ii::serde::DecodeError::Custom(msg) => DecodeError::Malformed {
            kind: T::KIND,
            detail: msg.into(),
        },
    }
}
