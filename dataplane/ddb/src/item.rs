//! Items: attribute maps, their size rule and their stored form.

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json};

use crate::error::{DdbError, DdbResult};
use crate::value::Value;

/// An item: attribute names to values.
pub type Item = BTreeMap<String, Value>;

/// The largest item, by [`item_size`]: 400 KB.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

/// The format byte of a stored item.
const FORMAT_V1: u8 = 0x01;

/// Decodes an attribute map (`Item`, `Key`, `ExpressionAttributeValues`
/// and the like).
pub fn from_json(v: &Json) -> DdbResult<Item> {
    let obj = v
        .as_object()
        .ok_or_else(|| DdbError::serialization("An attribute map must be a JSON object"))?;
    obj.iter()
        .map(|(k, x)| Ok((k.clone(), Value::from_json(x)?)))
        .collect()
}

/// The wire form of an item.
pub fn to_json(item: &Item) -> Json {
    Json::Object(
        item.iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect::<Map<_, _>>(),
    )
}

/// The item's size: the lengths of its attribute names plus the sizes of
/// its values.
pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + v.size()).sum()
}

/// Checks an item that is about to be stored: names not empty, size
/// within [`MAX_ITEM_BYTES`].
pub fn check_item(item: &Item) -> DdbResult<()> {
    if item.keys().any(String::is_empty) {
        return Err(DdbError::invalid_parameter(
            "An attribute name in the item is empty",
        ));
    }
    let size = item_size(item);
    if size > MAX_ITEM_BYTES {
        return Err(DdbError::validation(format!(
            "Item size has exceeded the maximum allowed size ({size} > {MAX_ITEM_BYTES} bytes)"
        )));
    }
    Ok(())
}

/// The stored form: a format byte and the wire form.
pub fn encode(item: &Item) -> Vec<u8> {
    let mut out = vec![FORMAT_V1];
    // Serialising a `serde_json::Value` cannot fail.
    out.extend(serde_json::to_vec(&to_json(item)).unwrap_or_default());
    out
}

/// Reads a stored item. An error means the stored bytes are not an item
/// (a value written through the native API, or damage).
pub fn decode(raw: &[u8]) -> DdbResult<Item> {
    match raw.split_first() {
        Some((&FORMAT_V1, rest)) => {
            let json: Json = serde_json::from_slice(rest)
                .map_err(|e| DdbError::validation(format!("stored item is damaged: {e}")))?;
            from_json(&json)
        }
        _ => Err(DdbError::validation(
            "the stored value is not a DynamoDB item",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn items_round_trip_through_storage_and_are_sized() {
        let item = from_json(&json!({"pk": {"S": "a"}, "n": {"N": "10"}})).expect("valid");
        assert_eq!(decode(&encode(&item)).expect("decodes"), item);
        assert_eq!(item_size(&item), 2 + 1 + 1 + 2);
        assert!(decode(b"\x02{}").is_err());
        assert!(decode(b"").is_err());
        assert!(decode(b"\x01{").is_err());
    }

    #[test]
    fn oversized_items_are_refused() {
        let mut item = Item::new();
        item.insert("big".into(), Value::S("x".repeat(MAX_ITEM_BYTES)));
        let e = check_item(&item).expect_err("too big");
        assert!(
            e.message.contains("Item size has exceeded"),
            "{}",
            e.message
        );
    }
}
