//! What a DynamoDB read sees in a stored state, and when an item has
//! expired.

use bytes::Bytes;
use dyno_core::Object;
use dyno_core::ddbnum::Number;

use crate::item::Item;
use crate::schema::TableSchema;
use crate::value::Value;

/// The value a DynamoDB read sees in a state: the sibling with the highest
/// timestamp (then dot), the same choice on every node. `None` when that
/// sibling is a tombstone or there is none. Tables made through the
/// DynamoDB API are last-writer-wins and have one sibling; a siblings-mode
/// table read through the DynamoDB API shows this choice.
pub fn chosen_value(obj: &Object) -> Option<&Bytes> {
    obj.siblings()
        .iter()
        .max_by_key(|s| (s.timestamp, s.dot))
        .and_then(|s| s.value.as_ref())
}

/// `secs` (seconds since the epoch) as a number.
pub fn epoch_number(secs: u64) -> Number {
    Number::parse(&secs.to_string()).unwrap_or_else(|_| Number::zero())
}

/// True when the item's TTL attribute (a number of epoch seconds) is before
/// `now`. Other types, and tables without TTL, never expire.
pub fn expired(schema: &TableSchema, item: &Item, now: &Number) -> bool {
    match schema.ttl_attribute.as_ref().and_then(|a| item.get(a)) {
        Some(Value::N(at)) => at < now,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{KeyAttr, KeySchema, KeyType};

    #[test]
    fn only_numbers_in_the_past_expire() {
        let mut schema = TableSchema {
            key: KeySchema {
                hash: KeyAttr {
                    name: "pk".into(),
                    ty: KeyType::S,
                },
                range: None,
            },
            billing_mode: "PAY_PER_REQUEST".into(),
            read_capacity: 0,
            write_capacity: 0,
            ttl_attribute: Some("exp".into()),
            tags: Default::default(),
        };
        let now = epoch_number(1000);
        let item = |v: Value| Item::from([("exp".to_owned(), v)]);
        assert!(expired(&schema, &item(Value::N(epoch_number(999))), &now));
        assert!(!expired(&schema, &item(Value::N(epoch_number(1000))), &now));
        assert!(!expired(&schema, &item(Value::S("1".into())), &now));
        schema.ttl_attribute = None;
        assert!(!expired(&schema, &item(Value::N(epoch_number(1))), &now));
    }
}
