//! The layout of item keys in storage.
//!
//! ```text
//! item key := position:u64 big-endian ‖ table_len:u8 ‖ table ‖ key
//! ```
//!
//! Leading with the ring position makes every partition, and every Merkle
//! leaf inside it, one contiguous key range: handoff and anti-entropy read a
//! range instead of scanning the whole store.

use crate::codec::DecodeError;
use crate::hash::key_position;

/// Longest table name, in bytes.
pub const MAX_TABLE_NAME: usize = 255;

/// A decoded item key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemKey<'a> {
    /// Ring position of `(table, key)`.
    pub position: u64,
    /// Table name.
    pub table: &'a str,
    /// The user's key.
    pub key: &'a [u8],
}

/// Encodes the storage key of `(table, key)`. Table names longer than
/// [`MAX_TABLE_NAME`] are rejected by the API before they reach here.
pub fn encode_item_key(table: &str, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + table.len() + key.len());
    out.extend_from_slice(&key_position(table, key).to_be_bytes());
    out.push(table.len().min(MAX_TABLE_NAME) as u8);
    out.extend_from_slice(
        table
            .as_bytes()
            .get(..MAX_TABLE_NAME.min(table.len()))
            .unwrap_or(&[]),
    );
    out.extend_from_slice(key);
    out
}

/// Decodes a storage key written by [`encode_item_key`].
pub fn decode_item_key(raw: &[u8]) -> Result<ItemKey<'_>, DecodeError> {
    let mut r = crate::codec::Reader::new(raw);
    let pos = r.bytes(8, "position")?;
    let mut b = [0u8; 8];
    b.copy_from_slice(pos);
    let len = usize::from(r.u8("table length")?);
    let table = std::str::from_utf8(r.bytes(len, "table")?).map_err(|_| DecodeError::Invalid {
        reason: "table name is not UTF-8",
    })?;
    let key = raw.get(9 + len..).unwrap_or(&[]);
    Ok(ItemKey {
        position: u64::from_be_bytes(b),
        table,
        key,
    })
}

/// The smallest key after `k` in byte order (`k ‖ 0x00`): where a scan
/// that has read `k` goes on.
pub fn successor(k: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(k.len() + 1);
    out.extend_from_slice(k);
    out.push(0);
    out
}

/// The storage-key range `[start, end)` holding positions `first..=last`.
/// `end` is `None` when the range runs to the end of the keyspace.
pub fn position_range(first: u64, last: u64) -> (Vec<u8>, Option<Vec<u8>>) {
    (
        first.to_be_bytes().to_vec(),
        last.checked_add(1).map(|e| e.to_be_bytes().to_vec()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_order_by_position() {
        let a = encode_item_key("users", b"\x00\xffkey");
        let d = decode_item_key(&a).expect("decodes");
        assert_eq!((d.table, d.key), ("users", &b"\x00\xffkey"[..]));
        assert_eq!(d.position, key_position("users", b"\x00\xffkey"));
        let mut keys: Vec<Vec<u8>> = (0..100)
            .map(|i| encode_item_key("t", format!("{i}").as_bytes()))
            .collect();
        keys.sort();
        let positions: Vec<u64> = keys
            .iter()
            .map(|k| decode_item_key(k).expect("ok").position)
            .collect();
        assert!(positions.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn malformed_keys_are_errors() {
        assert!(decode_item_key(b"short").is_err());
        let mut k = encode_item_key("t", b"k");
        k[8] = 200;
        assert!(decode_item_key(&k).is_err());
    }

    #[test]
    fn range_bounds() {
        let (s, e) = position_range(5, 9);
        assert_eq!(s, 5u64.to_be_bytes());
        assert_eq!(e, Some(10u64.to_be_bytes().to_vec()));
        assert_eq!(position_range(0, u64::MAX).1, None);
        assert!(successor(b"ab") > b"ab".to_vec() && successor(b"ab") < b"ab\x00\x00".to_vec());
    }
}
