//! Attribute values and their JSON wire form (`{"S": "..."}`, `{"N":
//! "1.5"}`, `{"B": "<base64>"}`, ...).
//!
//! Numbers are [`dyno_core::ddbnum::Number`]s, so `1.0` and `1` are the same
//! value and arithmetic is exact. Sets are kept sorted and free of
//! duplicates, so equal sets compare equal whatever the order they came in.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use dyno_core::ddbnum::Number;
use serde_json::{Map, Value as Json, json};

use crate::error::{DdbError, DdbResult};

/// How deep documents may nest (DynamoDB's limit).
pub const MAX_DEPTH: usize = 32;

/// One attribute value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A string (UTF-8).
    S(String),
    /// A number.
    N(Number),
    /// Binary.
    B(Vec<u8>),
    /// A boolean.
    Bool(bool),
    /// Null.
    Null,
    /// A list.
    L(Vec<Value>),
    /// A map.
    M(BTreeMap<String, Value>),
    /// A string set (never empty).
    Ss(BTreeSet<String>),
    /// A number set (never empty).
    Ns(BTreeSet<Number>),
    /// A binary set (never empty).
    Bs(BTreeSet<Vec<u8>>),
}

/// The type of a value, as DynamoDB names it (`attribute_type` takes these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// `S`
    S,
    /// `N`
    N,
    /// `B`
    B,
    /// `BOOL`
    Bool,
    /// `NULL`
    Null,
    /// `L`
    L,
    /// `M`
    M,
    /// `SS`
    Ss,
    /// `NS`
    Ns,
    /// `BS`
    Bs,
}

impl Type {
    /// The type's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Type::S => "S",
            Type::N => "N",
            Type::B => "B",
            Type::Bool => "BOOL",
            Type::Null => "NULL",
            Type::L => "L",
            Type::M => "M",
            Type::Ss => "SS",
            Type::Ns => "NS",
            Type::Bs => "BS",
        }
    }

    /// The type named `name`.
    pub fn from_name(name: &str) -> Option<Type> {
        Some(match name {
            "S" => Type::S,
            "N" => Type::N,
            "B" => Type::B,
            "BOOL" => Type::Bool,
            "NULL" => Type::Null,
            "L" => Type::L,
            "M" => Type::M,
            "SS" => Type::Ss,
            "NS" => Type::Ns,
            "BS" => Type::Bs,
            _ => return None,
        })
    }
}

fn ser(msg: impl Into<String>) -> DdbError {
    DdbError::serialization(msg)
}

fn json_str<'a>(v: &'a Json, ty: &str) -> DdbResult<&'a str> {
    v.as_str()
        .ok_or_else(|| ser(format!("The {ty} value must be a JSON string")))
}

fn json_array<'a>(v: &'a Json, ty: &str) -> DdbResult<&'a Vec<Json>> {
    v.as_array()
        .ok_or_else(|| ser(format!("The {ty} value must be a JSON array")))
}

/// Decodes base64 as DynamoDB's JSON protocol carries binary.
pub fn decode_base64(s: &str) -> DdbResult<Vec<u8>> {
    B64.decode(s)
        .map_err(|e| ser(format!("Base64 encoded binary value is not valid: {e}")))
}

fn parse_number(s: &str) -> DdbResult<Number> {
    Number::parse(s).map_err(|e| DdbError::validation(e.to_string()))
}

fn no_duplicates<T: Ord + std::fmt::Debug>(items: Vec<T>) -> DdbResult<BTreeSet<T>> {
    let len = items.len();
    let shown = format!("{items:?}");
    let set: BTreeSet<T> = items.into_iter().collect();
    if set.len() != len {
        return Err(DdbError::invalid_parameter(format!(
            "Input collection {shown} contains duplicates."
        )));
    }
    Ok(set)
}

impl Value {
    /// Decodes the wire form of one value.
    pub fn from_json(v: &Json) -> DdbResult<Value> {
        Value::from_json_at(v, 0)
    }

    fn from_json_at(v: &Json, depth: usize) -> DdbResult<Value> {
        if depth > MAX_DEPTH {
            return Err(DdbError::validation(format!(
                "Nesting Levels have exceeded supported limits: nesting depth is limited to {MAX_DEPTH}"
            )));
        }
        let obj = v
            .as_object()
            .ok_or_else(|| ser("An AttributeValue must be a JSON object"))?;
        let mut fields = obj.iter();
        let (ty, inner) = match (fields.next(), fields.next()) {
            (Some(f), None) => f,
            (None, _) => {
                return Err(DdbError::validation(
                    "Supplied AttributeValue is empty, must contain exactly one of the supported datatypes",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(DdbError::validation(
                    "Supplied AttributeValue has more than one datatypes set, must contain exactly one of the supported datatypes",
                ));
            }
        };
        Ok(match ty.as_str() {
            "S" => Value::S(json_str(inner, "S")?.to_owned()),
            "N" => Value::N(parse_number(json_str(inner, "N")?)?),
            "B" => Value::B(decode_base64(json_str(inner, "B")?)?),
            "BOOL" => Value::Bool(
                inner
                    .as_bool()
                    .ok_or_else(|| ser("The BOOL value must be a JSON boolean"))?,
            ),
            "NULL" => match inner.as_bool() {
                Some(true) => Value::Null,
                Some(false) => {
                    return Err(DdbError::invalid_parameter(
                        "Null attribute value types must have the value of true",
                    ));
                }
                None => return Err(ser("The NULL value must be a JSON boolean")),
            },
            "L" => Value::L(
                json_array(inner, "L")?
                    .iter()
                    .map(|x| Value::from_json_at(x, depth + 1))
                    .collect::<DdbResult<_>>()?,
            ),
            "M" => Value::M(
                inner
                    .as_object()
                    .ok_or_else(|| ser("The M value must be a JSON object"))?
                    .iter()
                    .map(|(k, x)| Ok((k.clone(), Value::from_json_at(x, depth + 1)?)))
                    .collect::<DdbResult<_>>()?,
            ),
            "SS" => {
                let items = json_array(inner, "SS")?
                    .iter()
                    .map(|x| json_str(x, "SS").map(str::to_owned))
                    .collect::<DdbResult<Vec<_>>>()?;
                if items.is_empty() {
                    return Err(DdbError::invalid_parameter(
                        "An string set  may not be empty",
                    ));
                }
                Value::Ss(no_duplicates(items)?)
            }
            "NS" => {
                let items = json_array(inner, "NS")?
                    .iter()
                    .map(|x| json_str(x, "NS").and_then(parse_number))
                    .collect::<DdbResult<Vec<_>>>()?;
                if items.is_empty() {
                    return Err(DdbError::invalid_parameter(
                        "An number set  may not be empty",
                    ));
                }
                let shown: Vec<String> = items.iter().map(ToString::to_string).collect();
                let len = items.len();
                let set: BTreeSet<Number> = items.into_iter().collect();
                if set.len() != len {
                    return Err(DdbError::invalid_parameter(format!(
                        "Input collection {shown:?} contains duplicates."
                    )));
                }
                Value::Ns(set)
            }
            "BS" => {
                let items = json_array(inner, "BS")?
                    .iter()
                    .map(|x| json_str(x, "BS").and_then(decode_base64))
                    .collect::<DdbResult<Vec<_>>>()?;
                if items.is_empty() {
                    return Err(DdbError::invalid_parameter(
                        "Binary sets should not be empty",
                    ));
                }
                Value::Bs(no_duplicates(items)?)
            }
            other => {
                return Err(ser(format!(
                    "Unknown AttributeValue type {other:?}: use one of S, N, B, BOOL, NULL, L, M, SS, NS, BS"
                )));
            }
        })
    }

    /// The wire form.
    pub fn to_json(&self) -> Json {
        match self {
            Value::S(s) => json!({ "S": s }),
            Value::N(n) => json!({ "N": n.to_string() }),
            Value::B(b) => json!({ "B": B64.encode(b) }),
            Value::Bool(b) => json!({ "BOOL": b }),
            Value::Null => json!({ "NULL": true }),
            Value::L(l) => json!({ "L": l.iter().map(Value::to_json).collect::<Vec<_>>() }),
            Value::M(m) => {
                let inner: Map<String, Json> =
                    m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect();
                json!({ "M": inner })
            }
            Value::Ss(s) => json!({ "SS": s }),
            Value::Ns(s) => json!({ "NS": s.iter().map(ToString::to_string).collect::<Vec<_>>() }),
            Value::Bs(s) => json!({ "BS": s.iter().map(|b| B64.encode(b)).collect::<Vec<_>>() }),
        }
    }

    /// Its type.
    pub fn type_of(&self) -> Type {
        match self {
            Value::S(_) => Type::S,
            Value::N(_) => Type::N,
            Value::B(_) => Type::B,
            Value::Bool(_) => Type::Bool,
            Value::Null => Type::Null,
            Value::L(_) => Type::L,
            Value::M(_) => Type::M,
            Value::Ss(_) => Type::Ss,
            Value::Ns(_) => Type::Ns,
            Value::Bs(_) => Type::Bs,
        }
    }

    /// Its size by DynamoDB's rules: strings and binaries their length,
    /// numbers about one byte per two significant digits plus one, booleans
    /// and null one byte, lists and maps three bytes plus one per element
    /// plus the elements (and the keys of a map), sets their elements.
    pub fn size(&self) -> usize {
        match self {
            Value::S(s) => s.len(),
            Value::N(n) => number_size(n),
            Value::B(b) => b.len(),
            Value::Bool(_) | Value::Null => 1,
            Value::L(l) => 3 + l.iter().map(|v| 1 + v.size()).sum::<usize>(),
            Value::M(m) => 3 + m.iter().map(|(k, v)| 1 + k.len() + v.size()).sum::<usize>(),
            Value::Ss(s) => s.iter().map(String::len).sum(),
            Value::Ns(s) => s.iter().map(number_size).sum(),
            Value::Bs(s) => s.iter().map(Vec::len).sum(),
        }
    }

    /// The size `size()` reports for a value (`Some` when it has one:
    /// strings, binaries, sets, lists, maps), as the `size` function
    /// answers.
    pub fn length(&self) -> Option<usize> {
        match self {
            Value::S(s) => Some(s.chars().count()),
            Value::B(b) => Some(b.len()),
            Value::L(l) => Some(l.len()),
            Value::M(m) => Some(m.len()),
            Value::Ss(s) => Some(s.len()),
            Value::Ns(s) => Some(s.len()),
            Value::Bs(s) => Some(s.len()),
            _ => None,
        }
    }
}

fn number_size(n: &Number) -> usize {
    1 + n.significant_digits().div_ceil(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(j: Json) -> DdbResult<Value> {
        Value::from_json(&j)
    }

    #[test]
    fn every_type_round_trips() {
        let all = json!({"M": {
            "s": {"S": "héllo"}, "n": {"N": "1.50"}, "b": {"B": "AAEC"},
            "t": {"BOOL": true}, "z": {"NULL": true},
            "l": {"L": [{"S": ""}, {"N": "-0"}]},
            "ss": {"SS": ["b", "a"]}, "ns": {"NS": ["2", "10"]}, "bs": {"BS": ["AA=="]}
        }});
        let parsed = v(all).expect("valid");
        let again = Value::from_json(&parsed.to_json()).expect("round trip");
        assert_eq!(parsed, again);
        let Value::M(m) = &parsed else {
            panic!("a map")
        };
        assert_eq!(m["n"].to_json(), json!({"N": "1.5"}));
        assert_eq!(m["l"].to_json(), json!({"L": [{"S": ""}, {"N": "0"}]}));
        assert_eq!(m["ss"].to_json(), json!({"SS": ["a", "b"]}));
        assert_eq!(m["b"], Value::B(vec![0, 1, 2]));
    }

    #[test]
    fn malformed_values_get_dynamodb_errors() {
        use crate::error::ErrorKind::*;
        let cases = [
            (json!({}), Validation, "Supplied AttributeValue is empty"),
            (
                json!({"S": "a", "N": "1"}),
                Validation,
                "more than one datatypes",
            ),
            (json!({"S": 1}), Serialization, "JSON string"),
            (
                json!({"N": "abc"}),
                Validation,
                "cannot be converted to a numeric value",
            ),
            (json!({"N": "1e400"}), Validation, "Number overflow"),
            (json!({"NULL": false}), Validation, "Null attribute value"),
            (json!({"SS": []}), Validation, "may not be empty"),
            (
                json!({"NS": ["1", "1.0"]}),
                Validation,
                "contains duplicates",
            ),
            (json!({"B": "***"}), Serialization, "Base64"),
            (
                json!({"X": 1}),
                Serialization,
                "Unknown AttributeValue type",
            ),
            (json!("S"), Serialization, "JSON object"),
        ];
        for (input, kind, msg) in cases {
            let e = v(input.clone()).expect_err("invalid");
            assert_eq!(e.kind, kind, "{input}");
            assert!(e.message.contains(msg), "{input}: {}", e.message);
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut j = json!({"S": "x"});
        for _ in 0..40 {
            j = json!({"L": [j]});
        }
        assert!(v(j).expect_err("too deep").message.contains("Nesting"));
    }

    #[test]
    fn sizes_follow_dynamodb() {
        assert_eq!(Value::S("abc".into()).size(), 3);
        assert_eq!(Value::N(Number::parse("12345").expect("n")).size(), 4);
        assert_eq!(Value::Bool(true).size(), 1);
        assert_eq!(Value::L(vec![Value::Null, Value::Null]).size(), 3 + 2 + 2);
    }
}
