//! The expression parser (nom).
//!
//! ```text
//! condition  := or
//! or         := and ("OR" and)*
//! and        := not ("AND" not)*
//! not        := "NOT" not | primary
//! primary    := "(" condition ")" | function | operand comparator operand
//!             | operand "BETWEEN" operand "AND" operand
//!             | operand "IN" "(" operand ("," operand)* ")"
//! function   := attribute_exists(path) | attribute_not_exists(path)
//!             | attribute_type(path, operand) | begins_with(operand, operand)
//!             | contains(operand, operand)
//! operand    := size(path) | :value | path
//! path       := name ("." name | "[" digits "]")*
//! name       := identifier | #placeholder
//! update     := ("SET" action,+ | "REMOVE" path,+ | "ADD" path :value,+
//!               | "DELETE" path :value,+)+      each clause at most once
//! action     := path "=" setop (("+" | "-") setop)?
//! setop      := if_not_exists(path, setop) | list_append(setop, setop)
//!             | :value | path
//! projection := path ("," path)*
//! ```
//!
//! Keywords are case-insensitive; function names are not. Input is bounded
//! (4 KB, nesting 64) before parsing, so no input can exhaust the stack.

use nom::IResult;
use nom::branch::alt;
use nom::bytes::complete::{tag, tag_no_case, take_while, take_while1};
use nom::character::complete::{char, digit1, multispace0, satisfy};
use nom::combinator::{all_consuming, map, map_res, not, opt, peek, recognize};
use nom::multi::separated_list1;
use nom::sequence::{delimited, pair, preceded, terminated, tuple};

use super::{CmpOp, Cond, Operand, Path, PathElem, SetOperand, SetValue, Update};
use crate::error::{DdbError, DdbResult};

/// The longest expression, in bytes (DynamoDB's limit).
pub const MAX_EXPRESSION_BYTES: usize = 4096;
/// The deepest nesting of parentheses and `NOT`s.
pub const MAX_NESTING: usize = 64;
/// The most operands of `IN`.
pub const MAX_IN_OPERANDS: usize = 100;

type Res<'a, T> = IResult<&'a str, T>;

const KEYWORDS: &[&str] = &[
    "AND", "OR", "NOT", "BETWEEN", "IN", "SET", "REMOVE", "ADD", "DELETE",
];

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn ws<'a, O>(f: impl FnMut(&'a str) -> Res<'a, O>) -> impl FnMut(&'a str) -> Res<'a, O> {
    delimited(multispace0, f, multispace0)
}

fn keyword<'a>(kw: &'static str) -> impl FnMut(&'a str) -> Res<'a, &'a str> {
    ws(terminated(tag_no_case(kw), not(peek(satisfy(is_word)))))
}

fn identifier(i: &str) -> Res<'_, &str> {
    let (rest, id) = recognize(pair(
        satisfy(|c| c.is_ascii_alphabetic() || c == '_'),
        take_while(is_word),
    ))(i)?;
    if KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(id)) {
        return Err(nom::Err::Error(nom::error::Error::new(
            i,
            nom::error::ErrorKind::Tag,
        )));
    }
    Ok((rest, id))
}

fn name(i: &str) -> Res<'_, String> {
    map(
        alt((recognize(pair(char('#'), take_while1(is_word))), identifier)),
        str::to_owned,
    )(i)
}

fn value_ref(i: &str) -> Res<'_, String> {
    ws(map(
        recognize(pair(char(':'), take_while1(is_word))),
        str::to_owned,
    ))(i)
}

fn path(i: &str) -> Res<'_, Path> {
    let (mut i, first) = ws(name)(i)?;
    let mut elems = vec![PathElem::Name(first)];
    loop {
        if let Ok((rest, n)) = preceded(char::<_, nom::error::Error<&str>>('.'), name)(i) {
            elems.push(PathElem::Name(n));
            i = rest;
        } else if let Ok((rest, x)) = delimited(
            ws(char::<_, nom::error::Error<&str>>('[')),
            map_res(digit1, str::parse::<u32>),
            ws(char(']')),
        )(i)
        {
            elems.push(PathElem::Index(x));
            i = rest;
        } else {
            break;
        }
    }
    let (i, _) = multispace0(i)?;
    Ok((i, Path(elems)))
}

fn call<'a, O>(
    fname: &'static str,
    args: impl FnMut(&'a str) -> Res<'a, O>,
) -> impl FnMut(&'a str) -> Res<'a, O> {
    preceded(
        ws(terminated(tag(fname), peek(ws(char('('))))),
        delimited(ws(char('(')), args, ws(char(')'))),
    )
}

fn comma(i: &str) -> Res<'_, char> {
    ws(char(','))(i)
}

fn operand(i: &str) -> Res<'_, Operand> {
    alt((
        map(call("size", path), Operand::Size),
        map(value_ref, Operand::Placeholder),
        map(path, Operand::Path),
    ))(i)
}

fn comparator(i: &str) -> Res<'_, CmpOp> {
    ws(alt((
        map(tag("<="), |_| CmpOp::Le),
        map(tag(">="), |_| CmpOp::Ge),
        map(tag("<>"), |_| CmpOp::Ne),
        map(tag("="), |_| CmpOp::Eq),
        map(tag("<"), |_| CmpOp::Lt),
        map(tag(">"), |_| CmpOp::Gt),
    )))(i)
}

fn function(i: &str) -> Res<'_, Cond> {
    alt((
        map(call("attribute_exists", path), Cond::Exists),
        map(call("attribute_not_exists", path), Cond::NotExists),
        map(
            call("attribute_type", tuple((path, comma, operand))),
            |(p, _, t)| Cond::Type(p, t),
        ),
        map(
            call("begins_with", tuple((operand, comma, operand))),
            |(a, _, b)| Cond::BeginsWith(a, b),
        ),
        map(
            call("contains", tuple((operand, comma, operand))),
            |(a, _, b)| Cond::Contains(a, b),
        ),
    ))(i)
}

fn comparison(i: &str) -> Res<'_, Cond> {
    let (i, a) = operand(i)?;
    alt((
        map(pair(comparator, operand), {
            let a = a.clone();
            move |(op, b)| Cond::Cmp(a.clone(), op, b)
        }),
        map(
            tuple((keyword("BETWEEN"), operand, keyword("AND"), operand)),
            {
                let a = a.clone();
                move |(_, lo, _, hi)| Cond::Between(a.clone(), lo, hi)
            },
        ),
        map(
            preceded(
                keyword("IN"),
                delimited(
                    ws(char('(')),
                    separated_list1(comma, operand),
                    ws(char(')')),
                ),
            ),
            move |list| Cond::In(a.clone(), list),
        ),
    ))(i)
}

fn primary(i: &str) -> Res<'_, Cond> {
    alt((
        delimited(ws(char('(')), or_cond, ws(char(')'))),
        function,
        comparison,
    ))(i)
}

fn not_cond(i: &str) -> Res<'_, Cond> {
    alt((
        map(preceded(keyword("NOT"), not_cond), |c| {
            Cond::Not(Box::new(c))
        }),
        primary,
    ))(i)
}

fn and_cond(i: &str) -> Res<'_, Cond> {
    let (mut i, mut acc) = not_cond(i)?;
    while let Ok((rest, next)) = preceded(keyword("AND"), not_cond)(i) {
        acc = Cond::And(Box::new(acc), Box::new(next));
        i = rest;
    }
    Ok((i, acc))
}

fn or_cond(i: &str) -> Res<'_, Cond> {
    let (mut i, mut acc) = and_cond(i)?;
    while let Ok((rest, next)) = preceded(keyword("OR"), and_cond)(i) {
        acc = Cond::Or(Box::new(acc), Box::new(next));
        i = rest;
    }
    Ok((i, acc))
}

fn set_operand(i: &str) -> Res<'_, SetOperand> {
    alt((
        map(
            call("if_not_exists", tuple((path, comma, set_operand))),
            |(p, _, v)| SetOperand::IfNotExists(p, Box::new(v)),
        ),
        map(
            call("list_append", tuple((set_operand, comma, set_operand))),
            |(a, _, b)| SetOperand::ListAppend(Box::new(a), Box::new(b)),
        ),
        map(value_ref, SetOperand::Placeholder),
        map(path, SetOperand::Path),
    ))(i)
}

fn set_value(i: &str) -> Res<'_, SetValue> {
    let (i, a) = set_operand(i)?;
    let (i, rest) = opt(pair(ws(alt((char('+'), char('-')))), set_operand))(i)?;
    Ok((
        i,
        match rest {
            None => SetValue::Operand(a),
            Some(('+', b)) => SetValue::Plus(a, b),
            Some((_, b)) => SetValue::Minus(a, b),
        },
    ))
}

enum Clause {
    Set(Vec<(Path, SetValue)>),
    Remove(Vec<Path>),
    Add(Vec<(Path, Operand)>),
    Delete(Vec<(Path, Operand)>),
}

fn path_value(i: &str) -> Res<'_, (Path, Operand)> {
    map(pair(path, value_ref), |(p, v)| (p, Operand::Placeholder(v)))(i)
}

fn clause(i: &str) -> Res<'_, Clause> {
    alt((
        map(
            preceded(
                keyword("SET"),
                separated_list1(
                    comma,
                    map(tuple((path, ws(char('=')), set_value)), |(p, _, v)| (p, v)),
                ),
            ),
            Clause::Set,
        ),
        map(
            preceded(keyword("REMOVE"), separated_list1(comma, path)),
            Clause::Remove,
        ),
        map(
            preceded(keyword("ADD"), separated_list1(comma, path_value)),
            Clause::Add,
        ),
        map(
            preceded(keyword("DELETE"), separated_list1(comma, path_value)),
            Clause::Delete,
        ),
    ))(i)
}

/// Which expression a message is about.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// `ConditionExpression`
    Condition,
    /// `FilterExpression`
    Filter,
    /// `KeyConditionExpression`
    KeyCondition,
    /// `UpdateExpression`
    Update,
    /// `ProjectionExpression`
    Projection,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Condition => "ConditionExpression",
            Kind::Filter => "FilterExpression",
            Kind::KeyCondition => "KeyConditionExpression",
            Kind::Update => "UpdateExpression",
            Kind::Projection => "ProjectionExpression",
        }
    }
}

/// An error about an expression, worded as DynamoDB words it.
pub fn invalid(kind: Kind, detail: impl std::fmt::Display) -> DdbError {
    DdbError::validation(format!("Invalid {}: {detail}", kind.name()))
}

fn precheck(kind: Kind, text: &str) -> DdbResult<()> {
    if text.trim().is_empty() {
        return Err(invalid(kind, "The expression can not be empty;"));
    }
    if text.len() > MAX_EXPRESSION_BYTES {
        return Err(invalid(
            kind,
            format!(
                "Expression size has exceeded the maximum allowed size; expression size: {}",
                text.len()
            ),
        ));
    }
    let mut depth = 0usize;
    let mut deepest = 0usize;
    for c in text.chars() {
        match c {
            '(' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    let nots = text
        .split(|c: char| !is_word(c))
        .filter(|w| w.eq_ignore_ascii_case("NOT"))
        .count();
    if deepest + nots > MAX_NESTING {
        return Err(invalid(
            kind,
            format!("The expression nests too deeply (more than {MAX_NESTING} levels)"),
        ));
    }
    Ok(())
}

fn syntax_error(kind: Kind, text: &str, rest: &str) -> DdbError {
    let rest = rest.trim_start();
    let token: String = if rest.is_empty() {
        "<EOF>".to_owned()
    } else {
        let word: String = rest.chars().take_while(|c| is_word(*c)).collect();
        if word.is_empty() {
            rest.chars().take(1).collect()
        } else {
            word
        }
    };
    let at = text.len() - rest.len();
    let near: String = text[..at]
        .chars()
        .rev()
        .take(12)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .chain(rest.chars().take(12))
        .collect();
    invalid(
        kind,
        format!(
            "Syntax error; token: \"{token}\", near: \"{}\"",
            near.trim()
        ),
    )
}

fn run<'a, O>(kind: Kind, text: &'a str, p: impl FnMut(&'a str) -> Res<'a, O>) -> DdbResult<O> {
    precheck(kind, text)?;
    match all_consuming(p)(text) {
        Ok((_, o)) => Ok(o),
        Err(nom::Err::Error(e) | nom::Err::Failure(e)) => Err(syntax_error(kind, text, e.input)),
        Err(nom::Err::Incomplete(_)) => Err(syntax_error(kind, text, "")),
    }
}

fn check_in_lists(kind: Kind, c: &Cond) -> DdbResult<()> {
    match c {
        Cond::In(_, list) if list.len() > MAX_IN_OPERANDS => Err(invalid(
            kind,
            format!(
                "The IN operator is provided with too many operands; number of operands: {}",
                list.len()
            ),
        )),
        Cond::And(a, b) | Cond::Or(a, b) => {
            check_in_lists(kind, a)?;
            check_in_lists(kind, b)
        }
        Cond::Not(a) => check_in_lists(kind, a),
        _ => Ok(()),
    }
}

/// Parses a condition (`ConditionExpression`, `FilterExpression`,
/// `KeyConditionExpression`).
pub fn condition(kind: Kind, text: &str) -> DdbResult<Cond> {
    let c = run(kind, text, ws(or_cond))?;
    check_in_lists(kind, &c)?;
    Ok(c)
}

/// Parses an `UpdateExpression`.
pub fn update(text: &str) -> DdbResult<Update> {
    let clauses = run(Kind::Update, text, |i| {
        let (mut i, first) = ws(clause)(i)?;
        let mut all = vec![first];
        while let Ok((rest, c)) = ws(clause)(i) {
            all.push(c);
            i = rest;
        }
        Ok((i, all))
    })?;
    let mut u = Update::default();
    let mut seen = [false; 4];
    for c in clauses {
        let (slot, name) = match &c {
            Clause::Set(_) => (0, "SET"),
            Clause::Remove(_) => (1, "REMOVE"),
            Clause::Add(_) => (2, "ADD"),
            Clause::Delete(_) => (3, "DELETE"),
        };
        if std::mem::replace(&mut seen[slot], true) {
            return Err(invalid(
                Kind::Update,
                format!("The \"{name}\" section can only be used once in an update expression;"),
            ));
        }
        match c {
            Clause::Set(v) => u.set = v,
            Clause::Remove(v) => u.remove = v,
            Clause::Add(v) => u.add = v,
            Clause::Delete(v) => u.delete = v,
        }
    }
    Ok(u)
}

/// Parses a `ProjectionExpression`.
pub fn projection(text: &str) -> DdbResult<Vec<Path>> {
    run(Kind::Projection, text, separated_list1(comma, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(s: &str) -> Cond {
        condition(Kind::Condition, s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn p(s: &str) -> Operand {
        Operand::Path(Path(
            s.split('.').map(|n| PathElem::Name(n.to_owned())).collect(),
        ))
    }

    fn v(s: &str) -> Operand {
        Operand::Placeholder(s.to_owned())
    }

    #[test]
    fn precedence_is_not_then_and_then_or() {
        let c = cond("a = :x OR b = :y AND NOT c = :z");
        let expected = Cond::Or(
            Box::new(Cond::Cmp(p("a"), CmpOp::Eq, v(":x"))),
            Box::new(Cond::And(
                Box::new(Cond::Cmp(p("b"), CmpOp::Eq, v(":y"))),
                Box::new(Cond::Not(Box::new(Cond::Cmp(p("c"), CmpOp::Eq, v(":z"))))),
            )),
        );
        assert_eq!(c, expected);
        let c = cond("(a = :x OR b = :y) and c <> :z");
        assert!(matches!(c, Cond::And(..)), "{c:?}");
    }

    #[test]
    fn every_form_parses() {
        for s in [
            "attribute_exists(#a.b[2].c)",
            "attribute_not_exists(pk)",
            "attribute_type(a, :t)",
            "begins_with(a, :p) AND contains(#tags, :t)",
            "size(a.b) >= :n",
            "a BETWEEN :lo AND :hi",
            "a IN (:x, :y, :z)",
            "NOT (a < b)",
            "a[0][1] <= :v",
        ] {
            cond(s);
        }
        let u = update("SET a = :v, b = b + :one, c = if_not_exists(c, :z), d = list_append(d, :l) REMOVE x, y[1] ADD n :one DELETE s :sub")
            .expect("valid");
        assert_eq!(
            (u.set.len(), u.remove.len(), u.add.len(), u.delete.len()),
            (4, 2, 1, 1)
        );
        assert_eq!(projection("a, b.c, d[3]").expect("valid").len(), 3);
    }

    #[test]
    fn errors_name_the_token() {
        let e = condition(Kind::Condition, "a = = :x").expect_err("bad");
        assert!(
            e.message
                .starts_with("Invalid ConditionExpression: Syntax error; token:"),
            "{}",
            e.message
        );
        let e = update("SET a = :v SET b = :w").expect_err("twice");
        assert!(e.message.contains("can only be used once"), "{}", e.message);
        let e = condition(Kind::Filter, "").expect_err("empty");
        assert!(e.message.contains("can not be empty"), "{}", e.message);
        let deep = format!("{}a = :x{}", "(".repeat(100), ")".repeat(100));
        assert!(condition(Kind::Condition, &deep).is_err());
        assert!(condition(Kind::Condition, "and = :x").is_err());
        assert!(update("SET a = :v REMOVE").is_err());
    }
}
