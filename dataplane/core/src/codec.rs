//! Binary encoding of [`Object`]s, as stored on disk and sent between nodes.
//!
//! ```text
//! object   := version:u8(=1) vv siblings
//! vv       := count:varint (actor:varint counter:varint)*      actors ascending
//! siblings := count:varint sibling*                             dots ascending
//! sibling  := actor:varint counter:varint timestamp:u64le kind:u8 [len:varint bytes]
//! kind     := 0 tombstone | 1 value
//! ```
//!
//! Varints are LEB128 (7 bits a byte, low first, at most 10 bytes). Decoding
//! checks every length against the bytes left before allocating, rejects
//! trailing bytes, and re-checks the object invariants, so hostile input
//! yields a [`DecodeError`] and never a panic or a huge allocation.

use bytes::Bytes;
use thiserror::Error;

use crate::hlc::Hlc;
use crate::object::{Object, Sibling};
use crate::version::{ActorId, Dot, VersionVector};

/// The current object encoding.
pub const OBJECT_FORMAT_V1: u8 = 1;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The input ended inside a field.
    #[error("input ends early while reading {field}")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// The leading version byte is not one this build reads.
    #[error("unsupported format version {version}")]
    UnsupportedVersion {
        /// The version found.
        version: u8,
    },
    /// A varint is longer than 10 bytes or overflows 64 bits.
    #[error("malformed varint in {field}")]
    BadVarint {
        /// The field being read.
        field: &'static str,
    },
    /// Bytes are left after a complete value.
    #[error("{count} unexpected trailing bytes")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// The fields parse but break a rule (order, zero counter, unknown kind).
    #[error("invalid encoding: {reason}")]
    Invalid {
        /// What rule was broken.
        reason: &'static str,
    },
}

/// Appends `v` as a LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A cursor over input bytes that never reads past the end.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Reads one byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        let (&b, rest) = self
            .buf
            .split_first()
            .ok_or(DecodeError::Truncated { field })?;
        self.buf = rest;
        Ok(b)
    }

    /// Reads `n` bytes.
    pub fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated { field });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// Reads a little-endian u64.
    pub fn u64_le(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let b = self.bytes(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// Reads a LEB128 varint.
    pub fn varint(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8(field)?;
            let part = u64::from(b & 0x7f);
            if i == 9 && part > 1 {
                return Err(DecodeError::BadVarint { field });
            }
            v |= part << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::BadVarint { field })
    }

    /// Reads a varint count and checks that `count * min_item_bytes` fits in
    /// the input, so a hostile count cannot cause a large allocation.
    pub fn count(
        &mut self,
        min_item_bytes: usize,
        field: &'static str,
    ) -> Result<usize, DecodeError> {
        let n = self.varint(field)?;
        let n = usize::try_from(n).map_err(|_| DecodeError::Truncated { field })?;
        if n.saturating_mul(min_item_bytes) > self.remaining() {
            return Err(DecodeError::Truncated { field });
        }
        Ok(n)
    }

    /// Fails unless the input is used up.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.buf.len() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { count }),
        }
    }
}

/// Writes the entries of a version vector.
pub fn encode_vv(out: &mut Vec<u8>, vv: &VersionVector) {
    put_varint(out, vv.len() as u64);
    for &(a, c) in vv.entries() {
        put_varint(out, a.0);
        put_varint(out, c);
    }
}

/// Reads a version vector written by [`encode_vv`], insisting on the
/// canonical form: actors strictly ascending, counters non-zero.
pub fn decode_vv(r: &mut Reader<'_>, max_entries: usize) -> Result<VersionVector, DecodeError> {
    let n = r.count(2, "version vector length")?;
    if n > max_entries {
        return Err(DecodeError::Invalid {
            reason: "too many version vector entries",
        });
    }
    let mut entries = Vec::with_capacity(n);
    let mut last: Option<u64> = None;
    for _ in 0..n {
        let actor = r.varint("actor")?;
        let counter = r.varint("counter")?;
        if last.is_some_and(|l| l >= actor) {
            return Err(DecodeError::Invalid {
                reason: "actors not strictly ascending",
            });
        }
        if counter == 0 {
            return Err(DecodeError::Invalid {
                reason: "zero counter",
            });
        }
        last = Some(actor);
        entries.push((ActorId(actor), counter));
    }
    Ok(VersionVector::from_entries(entries))
}

/// Upper bound on version vector entries accepted from storage or peers.
pub const MAX_STORED_VV_ENTRIES: usize = 4096;

/// Encodes an object.
pub fn encode_object(o: &Object) -> Vec<u8> {
    let payload: usize = o.live_values().map(Bytes::len).sum();
    let mut out =
        Vec::with_capacity(payload + 32 * (o.siblings().len() + 1) + 16 * o.version_vector().len());
    out.push(OBJECT_FORMAT_V1);
    encode_vv(&mut out, o.version_vector());
    put_varint(&mut out, o.siblings().len() as u64);
    for s in o.siblings() {
        put_varint(&mut out, s.dot.actor.0);
        put_varint(&mut out, s.dot.counter);
        out.extend_from_slice(&s.timestamp.0.to_le_bytes());
        match &s.value {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                put_varint(&mut out, v.len() as u64);
                out.extend_from_slice(v);
            }
        }
    }
    out
}

/// Decodes an object written by [`encode_object`].
pub fn decode_object(buf: &[u8]) -> Result<Object, DecodeError> {
    let mut r = Reader::new(buf);
    match r.u8("format version")? {
        OBJECT_FORMAT_V1 => {}
        version => return Err(DecodeError::UnsupportedVersion { version }),
    }
    let vv = decode_vv(&mut r, MAX_STORED_VV_ENTRIES)?;
    // A sibling takes at least 2 + 8 + 1 bytes.
    let n = r.count(11, "sibling count")?;
    let mut siblings = Vec::with_capacity(n);
    for _ in 0..n {
        let actor = ActorId(r.varint("sibling actor")?);
        let counter = r.varint("sibling counter")?;
        let timestamp = Hlc(r.u64_le("sibling timestamp")?);
        let value = match r.u8("sibling kind")? {
            0 => None,
            1 => {
                let len = r.count(1, "value length")?;
                Some(Bytes::copy_from_slice(r.bytes(len, "value")?))
            }
            _ => {
                return Err(DecodeError::Invalid {
                    reason: "unknown sibling kind",
                });
            }
        };
        siblings.push(Sibling {
            dot: Dot { actor, counter },
            timestamp,
            value,
        });
    }
    r.finish()?;
    if siblings
        .windows(2)
        .any(|w| matches!(w, [a, b] if a.dot >= b.dot))
    {
        return Err(DecodeError::Invalid {
            reason: "siblings not strictly ascending by dot",
        });
    }
    Object::from_parts(vv, siblings).ok_or(DecodeError::Invalid {
        reason: "sibling not covered by the version vector",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::{ConflictMode, SiblingLimits, Write};
    use proptest::prelude::*;

    fn sample() -> Object {
        let mut o = Object::new();
        let blind = VersionVector::new();
        for (actor, v) in [(7u64, Some("seven")), (300, None), (u64::MAX, Some(""))] {
            let w = Write {
                context: &blind,
                actor: ActorId(actor),
                value: v.map(|s| Bytes::from(s.as_bytes().to_vec())),
                timestamp: Hlc(actor),
            };
            o.update(w, ConflictMode::Siblings, SiblingLimits::default())
                .expect("ok");
        }
        o
    }

    #[test]
    fn round_trip() {
        let o = sample();
        assert_eq!(decode_object(&encode_object(&o)), Ok(o));
        assert_eq!(
            decode_object(&encode_object(&Object::new())),
            Ok(Object::new())
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = encode_object(&sample());
        for cut in 0..bytes.len() {
            assert!(
                decode_object(&bytes[..cut]).is_err(),
                "prefix of {cut} bytes decoded"
            );
        }
    }

    #[test]
    fn unknown_version_and_trailing_bytes_are_rejected() {
        let mut bytes = encode_object(&sample());
        bytes.push(0);
        assert_eq!(
            decode_object(&bytes),
            Err(DecodeError::TrailingBytes { count: 1 })
        );
        bytes[0] = 9;
        assert_eq!(
            decode_object(&bytes),
            Err(DecodeError::UnsupportedVersion { version: 9 })
        );
    }

    #[test]
    fn varint_overflow_is_rejected() {
        let mut r = Reader::new(&[0xff; 11]);
        assert_eq!(r.varint("x"), Err(DecodeError::BadVarint { field: "x" }));
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(r.varint("x"), Ok(u64::MAX));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_object(&bytes);
        }

        #[test]
        fn mutated_encodings_never_panic(flip in 0usize..200, to in any::<u8>()) {
            let mut bytes = encode_object(&sample());
            let i = flip % bytes.len();
            bytes[i] = to;
            if let Ok(o) = decode_object(&bytes) {
                // Whatever decodes is a valid object that re-encodes.
                prop_assert_eq!(decode_object(&encode_object(&o)), Ok(o));
            }
        }
    }
}
