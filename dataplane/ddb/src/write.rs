//! A write (PutItem, DeleteItem, UpdateItem) as a pure function of the
//! item it replaces.
//!
//! The node that receives the request validates it ([`WriteOp::prepare`]);
//! the key's coordinator prepares it again (it travels as [`WriteOp`], the
//! request's own texts and values) and runs [`Prepared::execute`] on the
//! item it read at quorum, under the key's lock. The outcome says what to
//! store and what to answer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::{DdbError, DdbResult};
use crate::expr::parse::{self, Kind};
use crate::expr::{Cond, Placeholders, Update, eval, update};
use crate::item::{self, Item};
use crate::schema::KeySchema;

/// What to return (`ReturnValues`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ReturnValues {
    /// Nothing.
    #[default]
    None,
    /// The whole item before.
    AllOld,
    /// The updated attributes before.
    UpdatedOld,
    /// The whole item after.
    AllNew,
    /// The updated attributes after.
    UpdatedNew,
}

impl ReturnValues {
    /// Parses the wire value for an operation that allows `allowed`.
    pub fn parse(raw: Option<&str>, allowed: &[ReturnValues]) -> DdbResult<ReturnValues> {
        let v = match raw {
            None | Some("NONE") => ReturnValues::None,
            Some("ALL_OLD") => ReturnValues::AllOld,
            Some("UPDATED_OLD") => ReturnValues::UpdatedOld,
            Some("ALL_NEW") => ReturnValues::AllNew,
            Some("UPDATED_NEW") => ReturnValues::UpdatedNew,
            Some(other) => {
                return Err(DdbError::validation(format!(
                    "1 validation error detected: Value '{other}' at 'returnValues' failed to satisfy constraint: Member must satisfy enum value set: [ALL_NEW, UPDATED_OLD, ALL_OLD, NONE, UPDATED_NEW]"
                )));
            }
        };
        if v != ReturnValues::None && !allowed.contains(&v) {
            return Err(DdbError::validation("Return values set to invalid value"));
        }
        Ok(v)
    }
}

/// The kind of write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WriteKind {
    /// PutItem: the item (wire form).
    Put(Json),
    /// DeleteItem.
    Delete,
    /// UpdateItem: the update expression (absent: the item is only
    /// created with its key, if missing).
    Update(Option<String>),
}

/// A write as it travels to the key's coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteOp {
    /// The key attributes (wire form).
    pub key: Json,
    /// What to do.
    pub kind: WriteKind,
    /// `ConditionExpression`.
    #[serde(default)]
    pub condition: Option<String>,
    /// `ExpressionAttributeNames`.
    #[serde(default)]
    pub names: BTreeMap<String, String>,
    /// `ExpressionAttributeValues` (wire form).
    #[serde(default)]
    pub values: Option<Json>,
    /// `ReturnValues`.
    #[serde(default)]
    pub return_values: ReturnValues,
    /// `ReturnValuesOnConditionCheckFailure = ALL_OLD`.
    #[serde(default)]
    pub old_on_failure: bool,
}

/// A validated write.
#[derive(Debug, Clone)]
pub struct Prepared {
    key: Item,
    put: Option<Item>,
    delete: bool,
    update: Option<Update>,
    cond: Option<Cond>,
    return_values: ReturnValues,
    old_on_failure: bool,
}

/// What a write does.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The item to store; `None` to delete.
    pub new: Option<Item>,
    /// The `Attributes` to answer with.
    pub attributes: Option<Item>,
}

impl WriteOp {
    /// Parses and checks everything in the request (the key against the
    /// schema, expressions, placeholders, the item's size).
    pub fn prepare(&self, schema: &KeySchema) -> DdbResult<Prepared> {
        let key = item::from_json(&self.key)?;
        let values = match &self.values {
            Some(v) => item::from_json(v)?,
            None => Item::new(),
        };
        if self
            .values
            .as_ref()
            .is_some_and(|v| v.as_object().is_some_and(|m| m.is_empty()))
        {
            return Err(DdbError::validation(
                "ExpressionAttributeValues must not be empty",
            ));
        }
        let mut ph = Placeholders::new(self.names.clone(), values);
        let mut cond = match &self.condition {
            Some(c) => Some(parse::condition(Kind::Condition, c)?),
            None => None,
        };
        if let Some(c) = &mut cond {
            ph.cond(c)?;
        }
        let mut prepared = Prepared {
            key: Item::new(),
            put: None,
            delete: false,
            update: None,
            cond,
            return_values: self.return_values,
            old_on_failure: self.old_on_failure,
        };
        match &self.kind {
            WriteKind::Put(it) => {
                let it = item::from_json(it)?;
                schema.key_of_item(&it)?;
                item::check_item(&it)?;
                prepared.key = schema.key_attrs(&it);
                prepared.put = Some(it);
            }
            WriteKind::Delete => {
                schema.key_of(&key)?;
                prepared.key = key;
                prepared.delete = true;
            }
            WriteKind::Update(expr) => {
                schema.key_of(&key)?;
                prepared.key = key;
                if let Some(text) = expr {
                    let mut u = parse::update(text)?;
                    ph.update(&mut u)?;
                    update::check(&u, schema)?;
                    prepared.update = Some(u);
                }
            }
        }
        ph.finish()?;
        Ok(prepared)
    }
}

impl Prepared {
    /// The key attributes.
    pub fn key(&self) -> &Item {
        &self.key
    }

    /// True when the write must read the current item first (a condition,
    /// an update, or old values to return).
    pub fn needs_read(&self) -> bool {
        self.cond.is_some()
            || self.update.is_some()
            || self.return_values != ReturnValues::None
            || self.put.is_none() && !self.delete
    }

    /// Runs the write against the current item (`None`: no item, or an
    /// expired one).
    pub fn execute(&self, current: Option<&Item>) -> DdbResult<Outcome> {
        let empty = Item::new();
        let old = current.unwrap_or(&empty);
        if let Some(c) = &self.cond
            && !eval::eval(c, old)?
        {
            return Err(DdbError::condition_failed(
                self.old_on_failure
                    .then(|| current.map(item::to_json))
                    .flatten(),
            ));
        }
        let new = if let Some(it) = &self.put {
            Some(it.clone())
        } else if self.delete {
            None
        } else {
            let base = match current {
                Some(it) => it.clone(),
                None => self.key.clone(),
            };
            let next = match &self.update {
                Some(u) => update::apply(u, &base)?,
                None => base,
            };
            item::check_item(&next)?;
            Some(next)
        };
        let updated_paths = || -> Vec<crate::expr::Path> {
            self.update
                .as_ref()
                .map(|u| u.paths().cloned().collect())
                .unwrap_or_default()
        };
        let non_empty = |i: Item| (!i.is_empty()).then_some(i);
        let attributes = match self.return_values {
            ReturnValues::None => None,
            ReturnValues::AllOld => current.cloned(),
            ReturnValues::AllNew => new.clone(),
            ReturnValues::UpdatedOld => {
                current.and_then(|c| non_empty(eval::project(c, &updated_paths())))
            }
            ReturnValues::UpdatedNew => new
                .as_ref()
                .and_then(|n| non_empty(eval::project(n, &updated_paths()))),
        };
        Ok(Outcome { new, attributes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::schema::{KeyAttr, KeyType};
    use serde_json::json;

    fn schema() -> KeySchema {
        KeySchema {
            hash: KeyAttr {
                name: "pk".into(),
                ty: KeyType::S,
            },
            range: None,
        }
    }

    fn update_op(expr: &str, cond: Option<&str>, values: Json) -> WriteOp {
        WriteOp {
            key: json!({"pk": {"S": "k"}}),
            kind: WriteKind::Update(Some(expr.to_owned())),
            condition: cond.map(str::to_owned),
            names: BTreeMap::new(),
            values: Some(values),
            return_values: ReturnValues::UpdatedNew,
            old_on_failure: true,
        }
    }

    #[test]
    fn an_update_creates_the_item_and_counts() {
        let op = update_op("ADD c :one", None, json!({":one": {"N": "1"}}));
        // The op survives the trip to the coordinator.
        let op: WriteOp =
            serde_json::from_value(serde_json::to_value(&op).expect("json")).expect("back");
        let p = op.prepare(&schema()).expect("valid");
        let first = p.execute(None).expect("runs");
        let new = first.new.expect("stored");
        assert_eq!(
            crate::item::to_json(&new),
            json!({"pk": {"S": "k"}, "c": {"N": "1"}})
        );
        assert_eq!(
            first.attributes.map(|a| crate::item::to_json(&a)),
            Some(json!({"c": {"N": "1"}}))
        );
        let second = p.execute(Some(&new)).expect("runs");
        assert_eq!(
            crate::item::to_json(&second.new.expect("stored"))["c"],
            json!({"N": "2"})
        );
    }

    #[test]
    fn a_failed_condition_returns_the_old_item_when_asked() {
        let op = update_op(
            "SET a = :v",
            Some("attribute_not_exists(pk)"),
            json!({":v": {"S": "x"}}),
        );
        let p = op.prepare(&schema()).expect("valid");
        let old = crate::item::from_json(&json!({"pk": {"S": "k"}})).expect("item");
        let e = p.execute(Some(&old)).expect_err("exists");
        assert_eq!(e.kind, ErrorKind::ConditionalCheckFailed);
        assert_eq!(e.item, Some(crate::item::to_json(&old)));
        assert!(p.execute(None).is_ok());
    }

    #[test]
    fn unused_or_missing_placeholders_are_errors() {
        let op = update_op(
            "SET a = :v",
            None,
            json!({":v": {"S": "x"}, ":w": {"S": "y"}}),
        );
        let e = op.prepare(&schema()).expect_err("unused");
        assert!(
            e.message.contains("unused in expressions: keys: {:w}"),
            "{}",
            e.message
        );
        let op = update_op("SET a = :nope", None, json!({":v": {"S": "x"}}));
        let e = op.prepare(&schema()).expect_err("missing");
        assert!(e.message.contains("not defined"), "{}", e.message);
        let op = WriteOp {
            kind: WriteKind::Put(json!({"other": {"S": "x"}})),
            values: None,
            condition: None,
            ..update_op("SET a = :v", None, json!({}))
        };
        let e = op.prepare(&schema()).expect_err("no key");
        assert!(e.message.contains("Missing the key pk"), "{}", e.message);
    }
}
