//! Applying an update expression to an item.
//!
//! Every SET value is computed from the item *before* the update, then the
//! clauses are applied: SET, REMOVE (list elements from the highest index
//! down, so that indexes name the original elements), ADD, DELETE. Key
//! attributes cannot be changed, and no two paths may overlap.

use std::cmp::Ordering;

use super::eval::lookup;
use super::parse::{Kind, invalid};
use super::{Operand, Path, PathElem, SetOperand, SetValue, Update};
use crate::error::{DdbError, DdbResult};
use crate::item::Item;
use crate::schema::KeySchema;
use crate::value::Value;

fn wrong_type() -> DdbError {
    DdbError::validation("An operand in the update expression has an incorrect data type")
}

fn bad_path() -> DdbError {
    DdbError::validation(
        "The document path provided in the update expression is invalid for update",
    )
}

fn show(p: &Path) -> String {
    let parts: Vec<String> =
        p.0.iter()
            .map(|e| match e {
                PathElem::Name(n) => n.clone(),
                PathElem::Index(i) => format!("[{i}]"),
            })
            .collect();
    format!("[{}]", parts.join(", "))
}

fn cmp_paths(a: &Path, b: &Path) -> Ordering {
    for (x, y) in a.0.iter().zip(&b.0) {
        let o = match (x, y) {
            (PathElem::Name(x), PathElem::Name(y)) => x.cmp(y),
            (PathElem::Index(x), PathElem::Index(y)) => x.cmp(y),
            (PathElem::Name(_), PathElem::Index(_)) => Ordering::Less,
            (PathElem::Index(_), PathElem::Name(_)) => Ordering::Greater,
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    a.0.len().cmp(&b.0.len())
}

/// Checks the update against the key schema and itself.
pub fn check(update: &Update, key: &KeySchema) -> DdbResult<()> {
    let paths: Vec<&Path> = update.paths().collect();
    for p in &paths {
        if key.is_key(p.top()) {
            return Err(DdbError::invalid_parameter(format!(
                "Cannot update attribute {}. This attribute is part of the key",
                p.top()
            )));
        }
    }
    for (i, a) in paths.iter().enumerate() {
        for b in &paths[i + 1..] {
            let n = a.0.len().min(b.0.len());
            if a.0[..n] == b.0[..n] {
                return Err(invalid(
                    Kind::Update,
                    format!(
                        "Two document paths overlap with each other; must remove or rewrite one of these paths; path one: {}, path two: {}",
                        show(a),
                        show(b)
                    ),
                ));
            }
        }
    }
    for (_, v) in update.add.iter().chain(&update.delete) {
        if let Operand::Const(v) = v
            && !matches!(v, Value::N(_) | Value::Ss(_) | Value::Ns(_) | Value::Bs(_))
        {
            return Err(invalid(
                Kind::Update,
                format!(
                    "Incorrect operand type for operator or function; operator: ADD or DELETE, operand type: {}",
                    v.type_of().name()
                ),
            ));
        }
    }
    Ok(())
}

fn set_operand(item: &Item, o: &SetOperand) -> DdbResult<Value> {
    match o {
        SetOperand::Path(p) => lookup(item, p).cloned().ok_or_else(|| {
            DdbError::validation(
                "The provided expression refers to an attribute that does not exist in the item",
            )
        }),
        SetOperand::Const(v) => Ok(v.clone()),
        SetOperand::Placeholder(p) => Err(DdbError::validation(format!(
            "An expression attribute value used in expression is not defined; attribute value: {p}"
        ))),
        SetOperand::IfNotExists(p, v) => match lookup(item, p) {
            Some(x) => Ok(x.clone()),
            None => set_operand(item, v),
        },
        SetOperand::ListAppend(a, b) => match (set_operand(item, a)?, set_operand(item, b)?) {
            (Value::L(mut x), Value::L(y)) => {
                x.extend(y);
                Ok(Value::L(x))
            }
            _ => Err(wrong_type()),
        },
    }
}

fn set_value(item: &Item, v: &SetValue) -> DdbResult<Value> {
    let arith = |a: &SetOperand, b: &SetOperand, negate: bool| -> DdbResult<Value> {
        match (set_operand(item, a)?, set_operand(item, b)?) {
            (Value::N(x), Value::N(y)) => {
                let y = if negate { y.neg() } else { y };
                x.checked_add(&y)
                    .map(Value::N)
                    .map_err(|e| DdbError::validation(e.to_string()))
            }
            _ => Err(wrong_type()),
        }
    };
    match v {
        SetValue::Operand(a) => set_operand(item, a),
        SetValue::Plus(a, b) => arith(a, b, false),
        SetValue::Minus(a, b) => arith(a, b, true),
    }
}

/// The container holding the last element of `path`, and that element.
fn parent_mut<'a>(item: &'a mut Item, path: &'a Path) -> DdbResult<(Slot<'a>, &'a PathElem)> {
    let (last, init) = path.0.split_last().ok_or_else(bad_path)?;
    let Some((first, middle)) = init.split_first() else {
        return Ok((Slot::Item(item), last));
    };
    let PathElem::Name(top) = first else {
        return Err(bad_path());
    };
    let mut cur = item.get_mut(top).ok_or_else(bad_path)?;
    for e in middle {
        cur = match (e, cur) {
            (PathElem::Name(n), Value::M(m)) => m.get_mut(n).ok_or_else(bad_path)?,
            (PathElem::Index(i), Value::L(l)) => l.get_mut(*i as usize).ok_or_else(bad_path)?,
            _ => return Err(bad_path()),
        };
    }
    Ok((Slot::Value(cur), last))
}

enum Slot<'a> {
    Item(&'a mut Item),
    Value(&'a mut Value),
}

fn assign(item: &mut Item, path: &Path, v: Value) -> DdbResult<()> {
    match parent_mut(item, path)? {
        (Slot::Item(it), PathElem::Name(n)) => {
            it.insert(n.clone(), v);
        }
        (Slot::Value(Value::M(m)), PathElem::Name(n)) => {
            m.insert(n.clone(), v);
        }
        (Slot::Value(Value::L(l)), PathElem::Index(i)) => match l.get_mut(*i as usize) {
            Some(slot) => *slot = v,
            None => l.push(v),
        },
        _ => return Err(bad_path()),
    }
    Ok(())
}

fn remove(item: &mut Item, path: &Path) -> DdbResult<()> {
    match parent_mut(item, path)? {
        (Slot::Item(it), PathElem::Name(n)) => {
            it.remove(n);
        }
        (Slot::Value(Value::M(m)), PathElem::Name(n)) => {
            m.remove(n);
        }
        (Slot::Value(Value::L(l)), PathElem::Index(i)) => {
            if (*i as usize) < l.len() {
                l.remove(*i as usize);
            }
        }
        _ => return Err(bad_path()),
    }
    Ok(())
}

fn add(current: Option<Value>, v: &Value) -> DdbResult<Value> {
    Ok(match (current, v) {
        (None, v) => v.clone(),
        (Some(Value::N(x)), Value::N(y)) => Value::N(
            x.checked_add(y)
                .map_err(|e| DdbError::validation(e.to_string()))?,
        ),
        (Some(Value::Ss(mut x)), Value::Ss(y)) => {
            x.extend(y.iter().cloned());
            Value::Ss(x)
        }
        (Some(Value::Ns(mut x)), Value::Ns(y)) => {
            x.extend(y.iter().cloned());
            Value::Ns(x)
        }
        (Some(Value::Bs(mut x)), Value::Bs(y)) => {
            x.extend(y.iter().cloned());
            Value::Bs(x)
        }
        _ => return Err(wrong_type()),
    })
}

fn delete(current: Value, v: &Value) -> DdbResult<Option<Value>> {
    let out = match (current, v) {
        (Value::Ss(mut x), Value::Ss(y)) => {
            x.retain(|e| !y.contains(e));
            (!x.is_empty()).then_some(Value::Ss(x))
        }
        (Value::Ns(mut x), Value::Ns(y)) => {
            x.retain(|e| !y.contains(e));
            (!x.is_empty()).then_some(Value::Ns(x))
        }
        (Value::Bs(mut x), Value::Bs(y)) => {
            x.retain(|e| !y.contains(e));
            (!x.is_empty()).then_some(Value::Bs(x))
        }
        _ => return Err(wrong_type()),
    };
    Ok(out)
}

fn constant(o: &Operand) -> DdbResult<&Value> {
    match o {
        Operand::Const(v) => Ok(v),
        other => Err(DdbError::validation(format!(
            "An expression attribute value used in expression is not defined; attribute value: {other}"
        ))),
    }
}

/// Applies a checked, substituted update to `item` (the empty item when
/// the key does not exist yet) and returns the new item.
pub fn apply(update: &Update, item: &Item) -> DdbResult<Item> {
    let values: Vec<Value> = update
        .set
        .iter()
        .map(|(_, v)| set_value(item, v))
        .collect::<DdbResult<_>>()?;
    let mut new = item.clone();
    for ((p, _), v) in update.set.iter().zip(values) {
        assign(&mut new, p, v)?;
    }
    let mut removals: Vec<&Path> = update.remove.iter().collect();
    removals.sort_by(|a, b| cmp_paths(b, a));
    for p in removals {
        remove(&mut new, p)?;
    }
    for (p, v) in &update.add {
        let v = constant(v)?;
        let next = add(lookup(&new, p).cloned(), v)?;
        assign(&mut new, p, next)?;
    }
    for (p, v) in &update.delete {
        let v = constant(v)?;
        if !matches!(v, Value::Ss(_) | Value::Ns(_) | Value::Bs(_)) {
            return Err(wrong_type());
        }
        if let Some(cur) = lookup(&new, p).cloned() {
            match delete(cur, v)? {
                Some(left) => assign(&mut new, p, left)?,
                None => remove(&mut new, p)?,
            }
        }
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::Placeholders;
    use crate::expr::parse::update;
    use crate::schema::{KeyAttr, KeyType};
    use serde_json::json;
    use std::collections::BTreeMap;

    fn item(j: serde_json::Value) -> Item {
        crate::item::from_json(&j).expect("valid")
    }

    fn run(expr: &str, values: serde_json::Value, it: &Item) -> DdbResult<Item> {
        let mut u = update(expr)?;
        let mut ph = Placeholders::new(BTreeMap::new(), item(values));
        ph.update(&mut u)?;
        let key = KeySchema {
            hash: KeyAttr {
                name: "pk".into(),
                ty: KeyType::S,
            },
            range: None,
        };
        check(&u, &key)?;
        apply(&u, it)
    }

    #[test]
    fn every_clause_applies() {
        let it = item(json!({
            "pk": {"S": "k"}, "n": {"N": "1"}, "l": {"L": [{"N": "0"}, {"N": "1"}, {"N": "2"}]},
            "s": {"SS": ["a", "b"]}, "d": {"SS": ["a", "b"]}, "m": {"M": {"x": {"N": "1"}}}
        }));
        let out = run(
            "SET n = n + :one, m.y = :one, c = if_not_exists(c, :zero), l = list_append(l, :l) \
             REMOVE m.x ADD s :t, cnt :one DELETE d :a",
            json!({":one": {"N": "1"}, ":zero": {"N": "0"}, ":l": {"L": [{"N": "3"}]},
                   ":t": {"SS": ["c"]}, ":a": {"SS": ["a"]}}),
            &it,
        )
        .expect("applies");
        assert_eq!(
            out,
            item(json!({
                "pk": {"S": "k"}, "n": {"N": "2"}, "c": {"N": "0"}, "cnt": {"N": "1"},
                "l": {"L": [{"N": "0"}, {"N": "1"}, {"N": "2"}, {"N": "3"}]},
                "s": {"SS": ["a", "b", "c"]}, "d": {"SS": ["b"]}, "m": {"M": {"y": {"N": "1"}}}
            }))
        );
        let out = run("REMOVE l[0], l[2]", json!({}), &it).expect("applies");
        assert_eq!(
            out["l"],
            Value::L(vec![Value::N(
                dyno_core::ddbnum::Number::parse("1").expect("n")
            )])
        );
    }

    #[test]
    fn bad_updates_are_refused() {
        let it = item(json!({"pk": {"S": "k"}, "s": {"S": "x"}}));
        for (e, v, msg) in [
            ("SET pk = :v", json!({":v": {"S": "y"}}), "part of the key"),
            ("SET a = :v, a.b = :v", json!({":v": {"S": "y"}}), "overlap"),
            (
                "SET a = s + :v",
                json!({":v": {"N": "1"}}),
                "incorrect data type",
            ),
            ("SET a = nope", json!({}), "does not exist"),
            (
                "SET x.y = :v",
                json!({":v": {"N": "1"}}),
                "invalid for update",
            ),
            ("ADD s :v", json!({":v": {"N": "1"}}), "incorrect data type"),
        ] {
            let err = run(e, v, &it).expect_err(e);
            assert!(err.message.contains(msg), "{e}: {}", err.message);
        }
    }
}
