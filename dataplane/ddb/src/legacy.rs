//! DynamoDB's legacy (pre-expression) parameters, translated into
//! expressions with generated placeholders, so that one evaluator serves
//! both: `Expected`, `QueryFilter`, `ScanFilter` and `KeyConditions`
//! (conditions), `AttributeUpdates` (an update) and `AttributesToGet` (a
//! projection).

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json};

use crate::error::{DdbError, DdbResult};

/// An expression with the names and values it refers to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Translated {
    /// The expression.
    pub text: String,
    /// `ExpressionAttributeNames` to use with it.
    pub names: BTreeMap<String, String>,
    /// `ExpressionAttributeValues` to use with it (wire form).
    pub values: Map<String, Json>,
}

impl Translated {
    fn name(&mut self, attr: &str) -> String {
        let n = format!("#l{}", self.names.len());
        self.names.insert(n.clone(), attr.to_owned());
        n
    }

    fn value(&mut self, v: &Json) -> String {
        let n = format!(":l{}", self.values.len());
        self.values.insert(n.clone(), v.clone());
        n
    }
}

fn obj<'a>(v: &'a Json, what: &str) -> DdbResult<&'a Map<String, Json>> {
    v.as_object()
        .ok_or_else(|| DdbError::serialization(format!("{what} must be a map")))
}

fn operands(cond: &Map<String, Json>) -> Vec<Json> {
    cond.get("AttributeValueList")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default()
}

fn need(list: &[Json], n: usize, op: &str) -> DdbResult<()> {
    if list.len() == n {
        Ok(())
    } else {
        Err(DdbError::validation(format!(
            "One or more parameter values were invalid: Invalid number of argument(s) for the {op} ComparisonOperator"
        )))
    }
}

/// One `{ComparisonOperator, AttributeValueList}` (or `{Value, Exists}`)
/// on `attr`, as an expression.
fn one(t: &mut Translated, attr: &str, cond: &Map<String, Json>) -> DdbResult<String> {
    let n = t.name(attr);
    let Some(op) = cond.get("ComparisonOperator").and_then(Json::as_str) else {
        // The Expected form: {Value} or {Exists}.
        let exists = cond.get("Exists").and_then(Json::as_bool).unwrap_or(true);
        return match (cond.get("Value"), exists) {
            (Some(v), true) => Ok(format!("{n} = {}", t.value(v))),
            (None, false) => Ok(format!("attribute_not_exists({n})")),
            (None, true) => Err(DdbError::validation(
                "One or more parameter values were invalid: Value must be provided when Exists is true for Attribute: ".to_owned() + attr,
            )),
            (Some(_), false) => Err(DdbError::validation(
                "One or more parameter values were invalid: Value cannot be used when Exists is false for Attribute: ".to_owned() + attr,
            )),
        };
    };
    let list = operands(cond);
    let binary = |t: &mut Translated, sym: &str, list: &[Json]| -> DdbResult<String> {
        need(list, 1, op)?;
        Ok(format!("{n} {sym} {}", t.value(&list[0])))
    };
    match op {
        "EQ" => binary(t, "=", &list),
        "NE" => binary(t, "<>", &list),
        "LT" => binary(t, "<", &list),
        "LE" => binary(t, "<=", &list),
        "GT" => binary(t, ">", &list),
        "GE" => binary(t, ">=", &list),
        "NOT_NULL" => {
            need(&list, 0, op)?;
            Ok(format!("attribute_exists({n})"))
        }
        "NULL" => {
            need(&list, 0, op)?;
            Ok(format!("attribute_not_exists({n})"))
        }
        "CONTAINS" => {
            need(&list, 1, op)?;
            Ok(format!("contains({n}, {})", t.value(&list[0])))
        }
        "NOT_CONTAINS" => {
            need(&list, 1, op)?;
            Ok(format!("NOT contains({n}, {})", t.value(&list[0])))
        }
        "BEGINS_WITH" => {
            need(&list, 1, op)?;
            Ok(format!("begins_with({n}, {})", t.value(&list[0])))
        }
        "BETWEEN" => {
            need(&list, 2, op)?;
            let (a, b) = (t.value(&list[0]), t.value(&list[1]));
            Ok(format!("{n} BETWEEN {a} AND {b}"))
        }
        "IN" => {
            if list.is_empty() {
                return Err(DdbError::validation(
                    "One or more parameter values were invalid: Invalid number of argument(s) for the IN ComparisonOperator",
                ));
            }
            let vals: Vec<String> = list.iter().map(|v| t.value(v)).collect();
            Ok(format!("{n} IN ({})", vals.join(", ")))
        }
        other => Err(DdbError::validation(format!(
            "1 validation error detected: Value '{other}' at 'comparisonOperator' failed to satisfy constraint: Member must satisfy enum value set: [IN, NULL, BETWEEN, LT, NOT_CONTAINS, EQ, GT, NOT_NULL, NE, LE, BEGINS_WITH, GE, CONTAINS]"
        ))),
    }
}

/// `Expected`, `QueryFilter`, `ScanFilter` or `KeyConditions` with
/// `ConditionalOperator` (`AND` by default).
pub fn conditions(map: &Json, conditional_operator: Option<&str>) -> DdbResult<Translated> {
    let joiner = match conditional_operator {
        None | Some("AND") => " AND ",
        Some("OR") => " OR ",
        Some(other) => {
            return Err(DdbError::validation(format!(
                "1 validation error detected: Value '{other}' at 'conditionalOperator' failed to satisfy constraint: Member must satisfy enum value set: [AND, OR]"
            )));
        }
    };
    let mut t = Translated::default();
    let mut parts = Vec::new();
    for (attr, cond) in obj(map, "the condition map")? {
        let c = obj(cond, "a condition")?;
        let part = one(&mut t, attr, c)?;
        parts.push(format!("({part})"));
    }
    if parts.is_empty() {
        return Ok(t);
    }
    t.text = parts.join(joiner);
    Ok(t)
}

/// `AttributeUpdates`: `{attr: {Action: PUT|ADD|DELETE, Value}}`.
pub fn attribute_updates(map: &Json) -> DdbResult<Translated> {
    let mut t = Translated::default();
    let (mut set, mut remove, mut add, mut delete) = (vec![], vec![], vec![], vec![]);
    for (attr, upd) in obj(map, "AttributeUpdates")? {
        let u = obj(upd, "an AttributeValueUpdate")?;
        let action = u.get("Action").and_then(Json::as_str).unwrap_or("PUT");
        let n = t.name(attr);
        match (action, u.get("Value")) {
            ("PUT", Some(v)) => set.push(format!("{n} = {}", t.value(v))),
            ("ADD", Some(v)) => add.push(format!("{n} {}", t.value(v))),
            ("DELETE", None) => remove.push(n),
            ("DELETE", Some(v)) => delete.push(format!("{n} {}", t.value(v))),
            ("PUT" | "ADD", None) => {
                return Err(DdbError::validation(format!(
                    "One or more parameter values were invalid: Only DELETE action is allowed when no attribute value is specified: {attr}"
                )));
            }
            (other, _) => {
                return Err(DdbError::validation(format!(
                    "1 validation error detected: Value '{other}' at 'attributeUpdates.{attr}.member.action' failed to satisfy constraint: Member must satisfy enum value set: [ADD, PUT, DELETE]"
                )));
            }
        }
    }
    let mut clauses = Vec::new();
    for (kw, list) in [
        ("SET", set),
        ("REMOVE", remove),
        ("ADD", add),
        ("DELETE", delete),
    ] {
        if !list.is_empty() {
            clauses.push(format!("{kw} {}", list.join(", ")));
        }
    }
    t.text = clauses.join(" ");
    Ok(t)
}

/// `AttributesToGet`: a projection of top-level attributes.
pub fn attributes_to_get(list: &Json) -> DdbResult<Translated> {
    let names = list
        .as_array()
        .ok_or_else(|| DdbError::serialization("AttributesToGet must be a list"))?;
    let mut t = Translated::default();
    let mut parts = Vec::new();
    for n in names {
        let n = n
            .as_str()
            .ok_or_else(|| DdbError::serialization("AttributesToGet must be a list of strings"))?;
        parts.push(t.name(n));
    }
    if parts.is_empty() {
        return Err(DdbError::validation(
            "1 validation error detected: Value '[]' at 'attributesToGet' failed to satisfy constraint: Member must have length greater than or equal to 1",
        ));
    }
    t.text = parts.join(", ");
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn legacy_parameters_become_expressions() {
        let t = conditions(
            &json!({"a": {"Value": {"S": "x"}}, "b": {"Exists": false},
                    "c": {"ComparisonOperator": "BETWEEN", "AttributeValueList": [{"N": "1"}, {"N": "2"}]}}),
            Some("OR"),
        )
        .expect("valid");
        assert_eq!(
            t.text,
            "(#l0 = :l0) OR (attribute_not_exists(#l1)) OR (#l2 BETWEEN :l1 AND :l2)"
        );
        assert_eq!(t.names["#l2"], "c");
        let u = attribute_updates(
            &json!({"n": {"Action": "ADD", "Value": {"N": "1"}}, "x": {"Action": "DELETE"}}),
        )
        .expect("valid");
        assert_eq!(u.text, "REMOVE #l1 ADD #l0 :l0");
        assert!(conditions(&json!({"a": {"ComparisonOperator": "EQ"}}), None).is_err());
        assert_eq!(
            attributes_to_get(&json!(["a", "b"])).expect("valid").text,
            "#l0, #l1"
        );
    }
}
