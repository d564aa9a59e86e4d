//! The causal context handed to clients: opaque, versioned, size-bounded and
//! validated.
//!
//! A context is a version vector. On the wire it is URL-safe base64 (no
//! padding) of
//!
//! ```text
//! version:u8(=1) count:varint (actor:varint counter:varint)* checksum:u32le
//! ```
//!
//! where the checksum is the low 32 bits of XXH3-64 over everything before
//! it. The checksum catches contexts that were truncated or edited by hand;
//! it is not a signature, and nothing depends on a context being unforgeable:
//! the worst a forged context can do is supersede versions the client did not
//! read, which the client could also do by writing a blind delete.
//!
//! Limits: at most [`MAX_CONTEXT_ENTRIES`] entries and
//! [`MAX_CONTEXT_CHARS`] characters. Decoding rejects anything else with a
//! [`ContextError`] and never panics.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use thiserror::Error;

use crate::codec::{DecodeError, Reader, decode_vv, encode_vv};
use crate::version::VersionVector;

/// The current context format.
pub const CONTEXT_FORMAT_V1: u8 = 1;
/// The most entries a context carries.
pub const MAX_CONTEXT_ENTRIES: usize = 128;
/// The longest accepted context string.
pub const MAX_CONTEXT_CHARS: usize = 4096;

/// Why a client's context was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ContextError {
    /// The header was present but empty.
    #[error("the context is empty")]
    Empty,
    /// Longer than [`MAX_CONTEXT_CHARS`].
    #[error("the context is {len} characters long; the limit is {MAX_CONTEXT_CHARS}")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// Not URL-safe base64.
    #[error("the context is not valid base64url")]
    NotBase64,
    /// The checksum does not match: truncated or altered.
    #[error(
        "the context's checksum does not match; pass back a context exactly as Dyno returned it"
    )]
    BadChecksum,
    /// The decoded bytes are malformed.
    #[error("the context is malformed: {0}")]
    Malformed(#[from] DecodeError),
}

/// Encodes a context. Callers pass a vector of at most
/// [`MAX_CONTEXT_ENTRIES`] entries (see `Object::client_context`).
pub fn encode_context(vv: &VersionVector) -> String {
    let mut bytes = Vec::with_capacity(2 + 12 * vv.len() + 4);
    bytes.push(CONTEXT_FORMAT_V1);
    encode_vv(&mut bytes, vv);
    let sum = crate::hash::digest_bytes(&bytes) as u32;
    bytes.extend_from_slice(&sum.to_le_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes and validates a context string.
pub fn decode_context(s: &str) -> Result<VersionVector, ContextError> {
    if s.is_empty() {
        return Err(ContextError::Empty);
    }
    if s.len() > MAX_CONTEXT_CHARS {
        return Err(ContextError::TooLong { len: s.len() });
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(s.trim())
        .map_err(|_| ContextError::NotBase64)?;
    let Some(body_len) = bytes.len().checked_sub(4) else {
        return Err(DecodeError::Truncated { field: "checksum" }.into());
    };
    let (body, sum) = bytes.split_at(body_len);
    let mut expected = [0u8; 4];
    expected.copy_from_slice(sum);
    if crate::hash::digest_bytes(body) as u32 != u32::from_le_bytes(expected) {
        return Err(ContextError::BadChecksum);
    }
    let mut r = Reader::new(body);
    match r.u8("context version")? {
        CONTEXT_FORMAT_V1 => {}
        version => return Err(DecodeError::UnsupportedVersion { version }.into()),
    }
    let vv = decode_vv(&mut r, MAX_CONTEXT_ENTRIES)?;
    r.finish()?;
    Ok(vv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::ActorId;
    use proptest::prelude::*;

    fn sample() -> VersionVector {
        VersionVector::from_entries([(ActorId(1), 3), (ActorId(u64::MAX), 1), (ActorId(77), 9)])
    }

    #[test]
    fn round_trip_and_is_url_safe() {
        let s = encode_context(&sample());
        assert!(
            s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(decode_context(&s), Ok(sample()));
        assert_eq!(
            decode_context(&encode_context(&VersionVector::new())),
            Ok(VersionVector::new())
        );
    }

    #[test]
    fn typed_errors() {
        assert_eq!(decode_context(""), Err(ContextError::Empty));
        assert_eq!(decode_context("not base64!"), Err(ContextError::NotBase64));
        assert!(matches!(
            decode_context(&"A".repeat(5000)),
            Err(ContextError::TooLong { len: 5000 })
        ));
        let s = encode_context(&sample());
        // Drop whole base64 quanta (4 chars = 3 bytes) so it still decodes.
        assert_eq!(
            decode_context(&s[..s.len() - 4]),
            Err(ContextError::BadChecksum)
        );
        let mut edited = s.clone().into_bytes();
        edited[3] = if edited[3] == b'A' { b'B' } else { b'A' };
        let edited = String::from_utf8(edited).expect("ascii");
        assert_eq!(decode_context(&edited), Err(ContextError::BadChecksum));
        assert!(matches!(
            decode_context("AAA"),
            Err(ContextError::Malformed(DecodeError::Truncated { .. }))
        ));
    }

    #[test]
    fn oversized_vectors_are_rejected() {
        let big = VersionVector::from_entries((1..=200).map(|a| (ActorId(a), 1)));
        let s = encode_context(&big);
        assert!(matches!(
            decode_context(&s),
            Err(ContextError::Malformed(DecodeError::Invalid { .. }))
        ));
    }

    #[test]
    fn unsorted_entries_with_valid_checksum_are_rejected() {
        // Hand-build a body with descending actors and a correct checksum.
        let mut body = vec![CONTEXT_FORMAT_V1, 2, 5, 1, 3, 1];
        let sum = crate::hash::digest_bytes(&body) as u32;
        body.extend_from_slice(&sum.to_le_bytes());
        let s = URL_SAFE_NO_PAD.encode(body);
        assert!(matches!(
            decode_context(&s),
            Err(ContextError::Malformed(DecodeError::Invalid { .. }))
        ));
    }

    proptest! {
        #[test]
        fn hostile_strings_never_panic(s in "\\PC{0,300}") {
            let _ = decode_context(&s);
        }

        #[test]
        fn hostile_bytes_with_valid_checksum_never_panic(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut bytes = body.clone();
            let sum = crate::hash::digest_bytes(&body) as u32;
            bytes.extend_from_slice(&sum.to_le_bytes());
            if let Ok(vv) = decode_context(&URL_SAFE_NO_PAD.encode(bytes)) {
                prop_assert_eq!(decode_context(&encode_context(&vv)), Ok(vv));
            }
        }
    }
}
