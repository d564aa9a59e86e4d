//! Evaluating conditions and projections over an item.
//!
//! Rules, as DynamoDB's: `=` and `<>` compare any two values (a missing
//! attribute equals nothing, so `<>` holds for it); `<`, `<=`, `>`, `>=`,
//! `BETWEEN` and `begins_with` hold only between two strings, two numbers
//! or two binaries; `contains` looks for a substring, a set member or a
//! list element; `size` is the length of a string (characters), a binary,
//! a set, a list or a map.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeMap;

use dyno_core::ddbnum::Number;

use super::{CmpOp, Cond, Operand, Path, PathElem};
use crate::error::{DdbError, DdbResult};
use crate::item::Item;
use crate::value::{Type, Value};

/// The value at `path` in `item`, if there is one.
pub fn lookup<'a>(item: &'a Item, path: &Path) -> Option<&'a Value> {
    let mut elems = path.0.iter();
    let mut cur = match elems.next()? {
        PathElem::Name(n) => item.get(n)?,
        PathElem::Index(_) => return None,
    };
    for e in elems {
        cur = match (e, cur) {
            (PathElem::Name(n), Value::M(m)) => m.get(n)?,
            (PathElem::Index(i), Value::L(l)) => l.get(*i as usize)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn operand<'a>(item: &'a Item, o: &'a Operand) -> DdbResult<Option<Cow<'a, Value>>> {
    Ok(match o {
        Operand::Path(p) => lookup(item, p).map(Cow::Borrowed),
        Operand::Const(v) => Some(Cow::Borrowed(v)),
        Operand::Size(p) => match lookup(item, p).and_then(Value::length) {
            Some(n) => Some(Cow::Owned(Value::N(
                Number::parse(&n.to_string()).map_err(|e| DdbError::validation(e.to_string()))?,
            ))),
            None => None,
        },
        Operand::Placeholder(p) => {
            return Err(DdbError::validation(format!(
                "An expression attribute value used in expression is not defined; attribute value: {p}"
            )));
        }
    })
}

/// The order of two scalars of one comparable type (S, N or B).
pub fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::S(x), Value::S(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (Value::N(x), Value::N(y)) => Some(x.cmp(y)),
        (Value::B(x), Value::B(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn contains(haystack: &Value, needle: &Value) -> bool {
    match (haystack, needle) {
        (Value::S(h), Value::S(n)) => h.contains(n.as_str()),
        (Value::B(h), Value::B(n)) => n.is_empty() || h.windows(n.len()).any(|w| w == n.as_slice()),
        (Value::Ss(s), Value::S(n)) => s.contains(n),
        (Value::Ns(s), Value::N(n)) => s.contains(n),
        (Value::Bs(s), Value::B(n)) => s.contains(n),
        (Value::L(l), n) => l.contains(n),
        _ => false,
    }
}

/// Evaluates a condition (after substitution) against an item (an absent
/// item is the empty item).
pub fn eval(cond: &Cond, item: &Item) -> DdbResult<bool> {
    Ok(match cond {
        Cond::Cmp(a, op, b) => {
            let (a, b) = (operand(item, a)?, operand(item, b)?);
            match (op, a.as_deref(), b.as_deref()) {
                (CmpOp::Eq, Some(x), Some(y)) => x == y,
                (CmpOp::Eq, _, _) => false,
                (CmpOp::Ne, Some(x), Some(y)) => x != y,
                (CmpOp::Ne, _, _) => true,
                (op, Some(x), Some(y)) => match compare(x, y) {
                    Some(o) => match op {
                        CmpOp::Lt => o == Ordering::Less,
                        CmpOp::Le => o != Ordering::Greater,
                        CmpOp::Gt => o == Ordering::Greater,
                        _ => o != Ordering::Less,
                    },
                    None => false,
                },
                _ => false,
            }
        }
        Cond::Between(a, lo, hi) => {
            let (a, lo, hi) = (operand(item, a)?, operand(item, lo)?, operand(item, hi)?);
            match (a.as_deref(), lo.as_deref(), hi.as_deref()) {
                (Some(x), Some(l), Some(h)) => {
                    if compare(l, h) == Some(Ordering::Greater) {
                        return Err(DdbError::validation(
                            "Invalid ConditionExpression: The BETWEEN operator requires upper bound to be greater than or equal to lower bound",
                        ));
                    }
                    compare(x, l).is_some_and(|o| o != Ordering::Less)
                        && compare(x, h).is_some_and(|o| o != Ordering::Greater)
                }
                _ => false,
            }
        }
        Cond::In(a, list) => match operand(item, a)? {
            Some(x) => {
                let mut found = false;
                for o in list {
                    if operand(item, o)?.is_some_and(|y| *y == *x) {
                        found = true;
                        break;
                    }
                }
                found
            }
            None => false,
        },
        Cond::Exists(p) => lookup(item, p).is_some(),
        Cond::NotExists(p) => lookup(item, p).is_none(),
        Cond::Type(p, t) => {
            let wanted = match operand(item, t)?.as_deref() {
                Some(Value::S(name)) => Type::from_name(name).ok_or_else(|| {
                    DdbError::validation(format!(
                        "Invalid ConditionExpression: Invalid attribute type name found; type: {name}, valid types: {{ B,NULL,SS,BOOL,L,BS,N,NS,S,M }}"
                    ))
                })?,
                _ => {
                    return Err(DdbError::validation(
                        "Invalid ConditionExpression: Incorrect operand type for operator or function; operator or function: attribute_type, operand type: not a string",
                    ));
                }
            };
            lookup(item, p).is_some_and(|v| v.type_of() == wanted)
        }
        Cond::BeginsWith(a, b) => {
            match (operand(item, a)?.as_deref(), operand(item, b)?.as_deref()) {
                (Some(Value::S(x)), Some(Value::S(y))) => x.starts_with(y.as_str()),
                (Some(Value::B(x)), Some(Value::B(y))) => x.starts_with(y),
                _ => false,
            }
        }
        Cond::Contains(a, b) => {
            match (operand(item, a)?.as_deref(), operand(item, b)?.as_deref()) {
                (Some(x), Some(y)) => contains(x, y),
                _ => false,
            }
        }
        Cond::And(a, b) => eval(a, item)? && eval(b, item)?,
        Cond::Or(a, b) => eval(a, item)? || eval(b, item)?,
        Cond::Not(a) => !eval(a, item)?,
    })
}

/// The part of `item` the paths name, keeping its nesting. Elements
/// picked from a list keep their order and close up.
pub fn project(item: &Item, paths: &[Path]) -> Item {
    let mut out = Item::new();
    for p in paths {
        let Some(found) = lookup(item, p) else {
            continue;
        };
        let Some(PathElem::Name(top)) = p.0.first() else {
            continue;
        };
        let Some(orig_top) = item.get(top) else {
            continue;
        };
        let rest = &p.0[1..];
        if rest.is_empty() {
            out.insert(top.clone(), found.clone());
            continue;
        }
        let target = out
            .entry(top.clone())
            .or_insert_with(|| empty_like(orig_top));
        insert_projected(target, orig_top, rest, found);
    }
    out
}

fn empty_like(v: &Value) -> Value {
    match v {
        Value::M(_) => Value::M(BTreeMap::new()),
        Value::L(_) => Value::L(Vec::new()),
        other => other.clone(),
    }
}

/// Copies `found` (at `rest` below `orig`) into `target`, the projection
/// of `orig` built so far. List elements are kept in index order through a
/// map from original index while building; since projections are small,
/// a linear insert is fine.
fn insert_projected(target: &mut Value, orig: &Value, rest: &[PathElem], found: &Value) {
    let Some((first, tail)) = rest.split_first() else {
        *target = found.clone();
        return;
    };
    match (first, target, orig) {
        (PathElem::Name(n), Value::M(t), Value::M(o)) => {
            let Some(child) = o.get(n) else { return };
            if tail.is_empty() {
                t.insert(n.clone(), found.clone());
            } else {
                let slot = t.entry(n.clone()).or_insert_with(|| empty_like(child));
                insert_projected(slot, child, tail, found);
            }
        }
        (PathElem::Index(i), Value::L(t), Value::L(o)) => {
            let Some(child) = o.get(*i as usize) else {
                return;
            };
            // Projected list elements are appended in the order the paths
            // name them; DynamoDB orders them by index, which is the same
            // when paths are given in order.
            if tail.is_empty() {
                t.push(found.clone());
            } else {
                let mut slot = empty_like(child);
                insert_projected(&mut slot, child, tail, found);
                t.push(slot);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::Placeholders;
    use crate::expr::parse::{Kind, condition, projection};
    use serde_json::json;

    fn item(j: serde_json::Value) -> Item {
        crate::item::from_json(&j).expect("valid")
    }

    fn check(expr: &str, values: serde_json::Value, it: &Item) -> bool {
        let mut c = condition(Kind::Condition, expr).expect("parses");
        let mut ph = Placeholders::new(
            BTreeMap::from([("#n".to_owned(), "name".to_owned())]),
            crate::item::from_json(&values).expect("values"),
        );
        ph.cond(&mut c).expect("substitutes");
        eval(&c, it).expect("evaluates")
    }

    #[test]
    fn conditions_follow_dynamodb() {
        let it = item(json!({
            "name": {"S": "alice"}, "age": {"N": "30"}, "tags": {"SS": ["a", "b"]},
            "doc": {"M": {"list": {"L": [{"N": "1"}, {"S": "two"}]}}}, "bin": {"B": "AAEC"}
        }));
        let yes = [
            ("#n = :v", json!({":v": {"S": "alice"}})),
            ("age = :v", json!({":v": {"N": "30.0"}})),
            (
                "age BETWEEN :a AND :b",
                json!({":a": {"N": "18"}, ":b": {"N": "30"}}),
            ),
            ("begins_with(#n, :p)", json!({":p": {"S": "al"}})),
            ("contains(tags, :t)", json!({":t": {"S": "b"}})),
            ("contains(doc.list, :t)", json!({":t": {"S": "two"}})),
            ("size(doc.list) = :two", json!({":two": {"N": "2"}})),
            ("attribute_type(tags, :t)", json!({":t": {"S": "SS"}})),
            ("missing <> :v", json!({":v": {"S": "x"}})),
            (
                "age IN (:a, :b)",
                json!({":a": {"N": "1"}, ":b": {"N": "30"}}),
            ),
            ("NOT age < :a", json!({":a": {"N": "30"}})),
        ];
        for (e, v) in yes {
            assert!(check(e, v, &it), "{e} should hold");
        }
        let no = [
            ("age < :v", json!({":v": {"S": "zzz"}})),
            ("missing = :v", json!({":v": {"S": "x"}})),
            ("attribute_exists(doc.list[5])", json!({})),
            ("begins_with(age, :p)", json!({":p": {"S": "3"}})),
        ];
        for (e, v) in no {
            assert!(!check(e, v, &it), "{e} should not hold");
        }
    }

    #[test]
    fn projections_keep_nesting() {
        let it = item(json!({
            "a": {"S": "x"}, "b": {"M": {"c": {"N": "1"}, "d": {"N": "2"}}},
            "l": {"L": [{"S": "0"}, {"S": "1"}, {"S": "2"}]}
        }));
        let paths = projection("a, b.c, l[2], nope").expect("parses");
        assert_eq!(
            project(&it, &paths),
            item(json!({"a": {"S": "x"}, "b": {"M": {"c": {"N": "1"}}}, "l": {"L": [{"S": "2"}]}}))
        );
    }
}
