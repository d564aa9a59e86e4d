//! Reading request fields, with DynamoDB's errors for wrong types and
//! missing members.

use std::collections::BTreeMap;

use dyno_ddb::expr::Placeholders;
use dyno_ddb::item::{self, Item};
use serde_json::Value as Json;

use super::{ApiError, ApiResult};

/// A request's JSON object.
#[derive(Debug, Clone, Copy)]
pub struct Req<'a>(pub &'a Json);

fn wrong(name: &str, what: &str) -> ApiError {
    ApiError::serialization(format!("{name}: expected {what}"))
}

impl<'a> Req<'a> {
    /// A member, unless absent or null.
    pub fn get(&self, name: &str) -> Option<&'a Json> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    /// A string member.
    pub fn str(&self, name: &str) -> ApiResult<Option<&'a str>> {
        self.get(name)
            .map(|v| v.as_str().ok_or_else(|| wrong(name, "a string")))
            .transpose()
    }

    /// A required string member.
    pub fn required_str(&self, name: &str) -> ApiResult<&'a str> {
        self.str(name)?.ok_or_else(|| missing(name))
    }

    /// A boolean member.
    pub fn bool(&self, name: &str) -> ApiResult<Option<bool>> {
        self.get(name)
            .map(|v| v.as_bool().ok_or_else(|| wrong(name, "a boolean")))
            .transpose()
    }

    /// A non-negative integer member.
    pub fn u64(&self, name: &str) -> ApiResult<Option<u64>> {
        self.get(name)
            .map(|v| {
                v.as_u64()
                    .ok_or_else(|| wrong(name, "a non-negative integer"))
            })
            .transpose()
    }

    /// An object member.
    pub fn object(&self, name: &str) -> ApiResult<Option<Req<'a>>> {
        self.get(name)
            .map(|v| {
                if v.is_object() {
                    Ok(Req(v))
                } else {
                    Err(wrong(name, "an object"))
                }
            })
            .transpose()
    }

    /// A list member.
    pub fn list(&self, name: &str) -> ApiResult<Option<&'a Vec<Json>>> {
        self.get(name)
            .map(|v| v.as_array().ok_or_else(|| wrong(name, "a list")))
            .transpose()
    }

    /// An attribute map member (`Item`, `Key`, ...).
    pub fn item(&self, name: &str) -> ApiResult<Option<Item>> {
        self.get(name)
            .map(|v| item::from_json(v).map_err(ApiError::from))
            .transpose()
    }

    /// `TableName`, checked as DynamoDB checks it (3 to 255 characters of
    /// `[A-Za-z0-9_.-]`).
    pub fn table_name(&self) -> ApiResult<&'a str> {
        let name = self.required_str("TableName")?;
        check_table_name(name)?;
        Ok(name)
    }

    /// `ExpressionAttributeNames` and `ExpressionAttributeValues`.
    pub fn placeholders(&self) -> ApiResult<Placeholders> {
        let names = self.names()?;
        let values = match self.get("ExpressionAttributeValues") {
            None => Item::new(),
            Some(v) => {
                let m = item::from_json(v).map_err(ApiError::from)?;
                if m.is_empty() {
                    return Err(ApiError::validation(
                        "ExpressionAttributeValues must not be empty",
                    ));
                }
                m
            }
        };
        Ok(Placeholders::new(names, values))
    }

    /// `ExpressionAttributeNames`.
    pub fn names(&self) -> ApiResult<BTreeMap<String, String>> {
        let Some(v) = self.get("ExpressionAttributeNames") else {
            return Ok(BTreeMap::new());
        };
        let m = v
            .as_object()
            .ok_or_else(|| wrong("ExpressionAttributeNames", "a map of strings"))?;
        if m.is_empty() {
            return Err(ApiError::validation(
                "ExpressionAttributeNames must not be empty",
            ));
        }
        m.iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|s| (k.clone(), s.to_owned()))
                    .ok_or_else(|| wrong("ExpressionAttributeNames", "a map of strings"))
            })
            .collect()
    }
}

/// A required member is missing.
pub fn missing(name: &str) -> ApiError {
    ApiError::validation(format!(
        "1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null",
        lower_first(name)
    ))
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Checks a DynamoDB table name.
pub fn check_table_name(name: &str) -> ApiResult<()> {
    if dyno_core::names::is_table_name(name, 3) {
        Ok(())
    } else {
        Err(ApiError::validation(format!(
            "1 validation error detected: Value '{name}' at 'tableName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+ and have length between 3 and 255"
        )))
    }
}
