//! A table's key schema, the mapping of primary keys to Dyno's composite
//! keys, and the DynamoDB description of a table that the catalog keeps.
//!
//! A primary key becomes `dyno_core::hash::partitioned_key(pk, sk)`: the
//! partition key's bytes place the item (its preference list), the sort
//! key's bytes order it within the partition. Both byte forms preserve
//! DynamoDB's order: strings and binaries by their bytes (DynamoDB compares
//! strings by their UTF-8 bytes), numbers by `Number::key_bytes`.

use std::collections::BTreeMap;

use dyno_core::ddbnum::Number;
use dyno_core::hash::{partitioned_key, split_partitioned};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::{DdbError, DdbResult};
use crate::item::Item;
use crate::value::Value;

/// Largest partition key, in bytes.
pub const MAX_PARTITION_KEY_BYTES: usize = 2048;
/// Largest sort key, in bytes.
pub const MAX_SORT_KEY_BYTES: usize = 1024;

/// The type of a key attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyType {
    /// String.
    S,
    /// Number.
    N,
    /// Binary.
    B,
}

impl KeyType {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::S => "S",
            KeyType::N => "N",
            KeyType::B => "B",
        }
    }
}

/// A key attribute: its name and type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyAttr {
    /// The attribute name.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub ty: KeyType,
}

/// The primary key: a partition (hash) key and an optional sort (range)
/// key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySchema {
    /// The partition key.
    pub hash: KeyAttr,
    /// The sort key.
    #[serde(default)]
    pub range: Option<KeyAttr>,
}

/// What the catalog keeps of a DynamoDB table, beyond Dyno's own settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    /// The primary key.
    pub key: KeySchema,
    /// `PAY_PER_REQUEST` or `PROVISIONED`.
    #[serde(default = "on_demand")]
    pub billing_mode: String,
    /// Provisioned read capacity units (accepted and reported).
    #[serde(default)]
    pub read_capacity: u64,
    /// Provisioned write capacity units (accepted and reported).
    #[serde(default)]
    pub write_capacity: u64,
    /// The TTL attribute, when TTL is enabled.
    #[serde(default)]
    pub ttl_attribute: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

fn on_demand() -> String {
    "PAY_PER_REQUEST".to_owned()
}

fn field<'a>(v: &'a Json, name: &str) -> Option<&'a Json> {
    v.get(name).filter(|x| !x.is_null())
}

impl KeySchema {
    /// Reads CreateTable's `KeySchema` and `AttributeDefinitions`, with
    /// DynamoDB's validation.
    pub fn from_create(key_schema: &Json, definitions: &Json) -> DdbResult<KeySchema> {
        let defs = definitions
            .as_array()
            .ok_or_else(|| DdbError::validation("AttributeDefinitions must be a list"))?;
        let mut types: BTreeMap<&str, KeyType> = BTreeMap::new();
        for d in defs {
            let (Some(name), Some(ty)) = (
                field(d, "AttributeName").and_then(Json::as_str),
                field(d, "AttributeType").and_then(Json::as_str),
            ) else {
                return Err(DdbError::validation(
                    "Each AttributeDefinition needs an AttributeName and an AttributeType",
                ));
            };
            let ty = match ty {
                "S" => KeyType::S,
                "N" => KeyType::N,
                "B" => KeyType::B,
                other => {
                    return Err(DdbError::validation(format!(
                        "1 validation error detected: Value '{other}' at 'attributeDefinitions.1.member.attributeType' failed to satisfy constraint: Member must satisfy enum value set: [B, N, S]"
                    )));
                }
            };
            if types.insert(name, ty).is_some() {
                return Err(DdbError::invalid_parameter(format!(
                    "Duplicate AttributeName in AttributeDefinitions: {name}"
                )));
            }
        }
        let elems = key_schema
            .as_array()
            .ok_or_else(|| DdbError::validation("KeySchema must be a list"))?;
        let mut hash = None;
        let mut range = None;
        for e in elems {
            let (Some(name), Some(kt)) = (
                field(e, "AttributeName").and_then(Json::as_str),
                field(e, "KeyType").and_then(Json::as_str),
            ) else {
                return Err(DdbError::validation(
                    "Each KeySchemaElement needs an AttributeName and a KeyType",
                ));
            };
            let ty = *types.get(name).ok_or_else(|| {
                DdbError::invalid_parameter(
                    "Some index key attributes are not defined in AttributeDefinitions. Keys: ["
                        .to_owned()
                        + name
                        + "], AttributeDefinitions: ["
                        + &types.keys().copied().collect::<Vec<_>>().join(", ")
                        + "]",
                )
            })?;
            let attr = KeyAttr {
                name: name.to_owned(),
                ty,
            };
            let slot = match kt {
                "HASH" => &mut hash,
                "RANGE" => &mut range,
                other => {
                    return Err(DdbError::validation(format!(
                        "Invalid KeyType {other:?}: use HASH or RANGE"
                    )));
                }
            };
            if slot.replace(attr).is_some() {
                return Err(DdbError::invalid_parameter(
                    "Too many hash keys or range keys in KeySchema",
                ));
            }
        }
        let hash = hash.ok_or_else(|| {
            DdbError::invalid_parameter("No Hash Key specified in schema.  All Dynamo DB tables must have exactly one hash key")
        })?;
        if range.as_ref().is_some_and(|r| r.name == hash.name) {
            return Err(DdbError::invalid_parameter(
                "Both the Hash Key and the Range Key element in the KeySchema have the same name",
            ));
        }
        let used = 1 + usize::from(range.is_some());
        if types.len() != used {
            return Err(DdbError::invalid_parameter(
                "Number of attributes in KeySchema does not exactly match number of attributes defined in AttributeDefinitions",
            ));
        }
        Ok(KeySchema { hash, range })
    }

    /// The key attributes, partition key first.
    pub fn attrs(&self) -> impl Iterator<Item = &KeyAttr> {
        std::iter::once(&self.hash).chain(self.range.as_ref())
    }

    /// True when `name` is a key attribute.
    pub fn is_key(&self, name: &str) -> bool {
        self.attrs().any(|a| a.name == name)
    }

    /// The composite key of an item about to be stored (`Item` of
    /// PutItem): its key attributes must be present, typed as the schema
    /// says, not empty and within the size limits.
    pub fn key_of_item(&self, item: &Item) -> DdbResult<Vec<u8>> {
        let mut parts = Vec::with_capacity(2);
        for a in self.attrs() {
            let v = item.get(&a.name).ok_or_else(|| {
                DdbError::invalid_parameter(format!("Missing the key {} in the item", a.name))
            })?;
            parts.push(key_part(a, v)?);
        }
        self.compose(&parts)
    }

    /// The composite key named by a `Key` parameter (GetItem, DeleteItem,
    /// UpdateItem, BatchGetItem, ExclusiveStartKey): exactly the key
    /// attributes.
    pub fn key_of(&self, key: &Item) -> DdbResult<Vec<u8>> {
        let wanted = self.attrs().count();
        if key.len() != wanted || !self.attrs().all(|a| key.contains_key(&a.name)) {
            return Err(DdbError::validation(
                "The provided key element does not match the schema",
            ));
        }
        let mut parts = Vec::with_capacity(2);
        for a in self.attrs() {
            let v = &key[&a.name];
            if key_type_of(v) != Some(a.ty) {
                return Err(DdbError::validation(
                    "The provided key element does not match the schema",
                ));
            }
            parts.push(key_part(a, v)?);
        }
        self.compose(&parts)
    }

    fn compose(&self, parts: &[Vec<u8>]) -> DdbResult<Vec<u8>> {
        let pk = parts.first().map_or(&[][..], Vec::as_slice);
        let sk = parts.get(1).map_or(&[][..], Vec::as_slice);
        if pk.len() > MAX_PARTITION_KEY_BYTES {
            return Err(DdbError::invalid_parameter(format!(
                "Size of hashkey has exceeded the maximum size limit of {MAX_PARTITION_KEY_BYTES} bytes"
            )));
        }
        if sk.len() > MAX_SORT_KEY_BYTES {
            return Err(DdbError::invalid_parameter(format!(
                "Aggregated size of all range keys has exceeded the size limit of {MAX_SORT_KEY_BYTES} bytes"
            )));
        }
        partitioned_key(pk, sk).ok_or_else(|| DdbError::validation("key too large"))
    }

    /// The `u16 length ‖ partition key` prefix shared by every item of one
    /// partition key (`Query` reads the range it starts).
    pub fn partition_prefix(&self, pk: &Value) -> DdbResult<Vec<u8>> {
        let part = key_part(&self.hash, pk)?;
        if part.len() > MAX_PARTITION_KEY_BYTES {
            return Err(DdbError::invalid_parameter(format!(
                "Size of hashkey has exceeded the maximum size limit of {MAX_PARTITION_KEY_BYTES} bytes"
            )));
        }
        partitioned_key(&part, b"").ok_or_else(|| DdbError::validation("key too large"))
    }

    /// The key attributes of a composite key (`LastEvaluatedKey`); `None`
    /// when `raw` is not a key of this schema.
    pub fn decode_key(&self, raw: &[u8]) -> Option<Item> {
        let (prefix, sk) = split_partitioned(raw)?;
        let pk = prefix.get(2..)?;
        let mut out = Item::new();
        out.insert(self.hash.name.clone(), value_of_part(self.hash.ty, pk)?);
        match &self.range {
            Some(r) => {
                out.insert(r.name.clone(), value_of_part(r.ty, sk)?);
            }
            None if !sk.is_empty() => return None,
            None => {}
        }
        Some(out)
    }

    /// The key attributes of an item (for `Keys` in responses).
    pub fn key_attrs(&self, item: &Item) -> Item {
        self.attrs()
            .filter_map(|a| item.get(&a.name).map(|v| (a.name.clone(), v.clone())))
            .collect()
    }

    /// The wire form of `KeySchema`.
    pub fn key_schema_json(&self) -> Json {
        let mut out = vec![serde_json::json!({"AttributeName": self.hash.name, "KeyType": "HASH"})];
        if let Some(r) = &self.range {
            out.push(serde_json::json!({"AttributeName": r.name, "KeyType": "RANGE"}));
        }
        Json::Array(out)
    }

    /// The wire form of `AttributeDefinitions`.
    pub fn definitions_json(&self) -> Json {
        Json::Array(
            self.attrs()
                .map(|a| serde_json::json!({"AttributeName": a.name, "AttributeType": a.ty.name()}))
                .collect(),
        )
    }
}

/// The key type of a value, if it can be a key.
pub fn key_type_of(v: &Value) -> Option<KeyType> {
    match v {
        Value::S(_) => Some(KeyType::S),
        Value::N(_) => Some(KeyType::N),
        Value::B(_) => Some(KeyType::B),
        _ => None,
    }
}

/// The ordered bytes of one key attribute's value.
pub fn key_part(attr: &KeyAttr, v: &Value) -> DdbResult<Vec<u8>> {
    let actual = v.type_of().name();
    let mismatch = || {
        DdbError::invalid_parameter(format!(
            "Type mismatch for key {} expected: {} actual: {actual}",
            attr.name,
            attr.ty.name()
        ))
    };
    let empty = |what: &str| {
        DdbError::invalid_parameter(format!(
            "One or more parameter values are not valid. The AttributeValue for a key attribute cannot contain an empty {what} value. Key: {}",
            attr.name
        ))
    };
    match (attr.ty, v) {
        (KeyType::S, Value::S(s)) if s.is_empty() => Err(empty("string")),
        (KeyType::S, Value::S(s)) => Ok(s.as_bytes().to_vec()),
        (KeyType::B, Value::B(b)) if b.is_empty() => Err(empty("binary")),
        (KeyType::B, Value::B(b)) => Ok(b.clone()),
        (KeyType::N, Value::N(n)) => Ok(n.key_bytes()),
        _ => Err(mismatch()),
    }
}

fn value_of_part(ty: KeyType, raw: &[u8]) -> Option<Value> {
    match ty {
        KeyType::S => String::from_utf8(raw.to_vec()).ok().map(Value::S),
        KeyType::B => Some(Value::B(raw.to_vec())),
        KeyType::N => {
            let (n, len) = Number::from_key_bytes(raw)?;
            (len == raw.len()).then_some(Value::N(n))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(range: Option<KeyType>) -> KeySchema {
        KeySchema {
            hash: KeyAttr {
                name: "pk".into(),
                ty: KeyType::S,
            },
            range: range.map(|ty| KeyAttr {
                name: "sk".into(),
                ty,
            }),
        }
    }

    fn item(j: Json) -> Item {
        crate::item::from_json(&j).expect("valid item")
    }

    #[test]
    fn create_table_parameters_are_validated() {
        let ks = json!([{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]);
        let defs = json!([{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "N"}]);
        assert_eq!(
            KeySchema::from_create(&ks, &defs).expect("valid"),
            schema(Some(KeyType::N))
        );
        let only_hash = json!([{"AttributeName": "pk", "KeyType": "HASH"}]);
        let e = KeySchema::from_create(&only_hash, &defs).expect_err("extra definition");
        assert!(
            e.message.contains("does not exactly match"),
            "{}",
            e.message
        );
        let no_hash = json!([{"AttributeName": "sk", "KeyType": "RANGE"}]);
        assert!(KeySchema::from_create(&no_hash, &defs).is_err());
        let undefined = json!([{"AttributeName": "x", "KeyType": "HASH"}]);
        assert!(KeySchema::from_create(&undefined, &defs).is_err());
    }

    #[test]
    fn keys_are_checked_and_decode_back() {
        let s = schema(Some(KeyType::N));
        let it = item(json!({"pk": {"S": "u1"}, "sk": {"N": "-1.5"}, "x": {"S": ""}}));
        let k = s.key_of_item(&it).expect("valid");
        assert_eq!(s.decode_key(&k).expect("decodes"), s.key_attrs(&it));
        assert_eq!(s.key_of(&s.key_attrs(&it)).expect("same key"), k);
        assert!(k.starts_with(&s.partition_prefix(&Value::S("u1".into())).expect("ok")));
        for bad in [
            json!({"pk": {"S": "u1"}}),
            json!({"pk": {"N": "1"}, "sk": {"N": "1"}}),
            json!({"pk": {"S": ""}, "sk": {"N": "1"}}),
            json!({"pk": {"S": "x".repeat(2049)}, "sk": {"N": "1"}}),
        ] {
            assert!(s.key_of_item(&item(bad.clone())).is_err(), "{bad}");
        }
        let s = schema(Some(KeyType::S));
        assert!(
            s.key_of_item(&item(
                json!({"pk": {"S": "p"}, "sk": {"S": "y".repeat(1024)}})
            ))
            .is_ok()
        );
        for bad in [
            json!({"pk": {"S": "p"}, "sk": {"S": "y".repeat(1025)}}),
            json!({"pk": {"S": "x".repeat(2048)}, "sk": {"S": ""}}),
        ] {
            assert!(s.key_of_item(&item(bad.clone())).is_err(), "{bad}");
        }
        let e = s.key_of(&it).expect_err("extra attribute");
        assert_eq!(
            e.message,
            "The provided key element does not match the schema"
        );
    }

    #[test]
    fn sort_keys_order_as_dynamodb_does() {
        let s = schema(Some(KeyType::N));
        let keys: Vec<Vec<u8>> = ["-10", "-1.5", "0", "2", "10", "1e3"]
            .iter()
            .map(|n| {
                s.key_of_item(&item(json!({"pk": {"S": "p"}, "sk": {"N": n}})))
                    .expect("valid")
            })
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        let s = schema(Some(KeyType::S));
        let a = s.key_of_item(&item(json!({"pk": {"S": "p"}, "sk": {"S": "a"}})));
        let ab = s.key_of_item(&item(json!({"pk": {"S": "p"}, "sk": {"S": "ab"}})));
        let b = s.key_of_item(&item(json!({"pk": {"S": "p"}, "sk": {"S": "b"}})));
        assert!(a.expect("a") < ab.clone().expect("ab") && ab.expect("ab") < b.expect("b"));
    }
}
