//! DynamoDB's expression language: condition (and filter and key
//! condition) expressions, update expressions and projection expressions.
//!
//! * [`parse`]: a nom parser from text to the syntax tree below;
//! * [`Placeholders`]: substitutes `#name`s and `:value`s from
//!   `ExpressionAttributeNames`/`ExpressionAttributeValues`, and reports
//!   placeholders that are missing or unused, as DynamoDB does;
//! * [`eval`]: conditions and projections over an item;
//! * [`update`]: applies an update expression to an item.
//!
//! The trees print back as expressions (`Display`); the property tests parse
//! what they print.

pub mod eval;
pub mod parse;
pub mod update;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::error::{DdbError, DdbResult};
use crate::value::Value;

/// One step of a document path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathElem {
    /// An attribute or map key: a plain name, or a `#placeholder` before
    /// substitution.
    Name(String),
    /// A list index.
    Index(u32),
}

/// A document path: `a.b[2].c`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path(pub Vec<PathElem>);

impl Path {
    /// The top-level attribute's name.
    pub fn top(&self) -> &str {
        match self.0.first() {
            Some(PathElem::Name(n)) => n,
            _ => "",
        }
    }
}

/// A value in a condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    /// The value at a path in the item.
    Path(Path),
    /// A `:placeholder` before substitution.
    Placeholder(String),
    /// A value (after substitution).
    Const(Value),
    /// `size(path)`.
    Size(Path),
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    /// The operator's text.
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "<>",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// A condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    /// `a op b`
    Cmp(Operand, CmpOp, Operand),
    /// `a BETWEEN lo AND hi`
    Between(Operand, Operand, Operand),
    /// `a IN (b, c, ...)`
    In(Operand, Vec<Operand>),
    /// `attribute_exists(path)`
    Exists(Path),
    /// `attribute_not_exists(path)`
    NotExists(Path),
    /// `attribute_type(path, :type)`
    Type(Path, Operand),
    /// `begins_with(a, b)`
    BeginsWith(Operand, Operand),
    /// `contains(a, b)`
    Contains(Operand, Operand),
    /// `a AND b`
    And(Box<Cond>, Box<Cond>),
    /// `a OR b`
    Or(Box<Cond>, Box<Cond>),
    /// `NOT a`
    Not(Box<Cond>),
}

/// An operand of a SET action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetOperand {
    /// The value at a path (in the item before the update).
    Path(Path),
    /// A `:placeholder` before substitution.
    Placeholder(String),
    /// A value.
    Const(Value),
    /// `if_not_exists(path, operand)`
    IfNotExists(Path, Box<SetOperand>),
    /// `list_append(a, b)`
    ListAppend(Box<SetOperand>, Box<SetOperand>),
}

/// The right-hand side of a SET action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetValue {
    /// An operand.
    Operand(SetOperand),
    /// `a + b` (numbers).
    Plus(SetOperand, SetOperand),
    /// `a - b` (numbers).
    Minus(SetOperand, SetOperand),
}

/// An update expression, by clause.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    /// `SET path = value, ...`
    pub set: Vec<(Path, SetValue)>,
    /// `REMOVE path, ...`
    pub remove: Vec<Path>,
    /// `ADD path :v, ...` (the operand is a placeholder or, after
    /// substitution, a constant).
    pub add: Vec<(Path, Operand)>,
    /// `DELETE path :v, ...`
    pub delete: Vec<(Path, Operand)>,
}

impl Update {
    /// Every path the update writes or removes.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.set
            .iter()
            .map(|(p, _)| p)
            .chain(self.remove.iter())
            .chain(self.add.iter().map(|(p, _)| p))
            .chain(self.delete.iter().map(|(p, _)| p))
    }
}

// ---- printing -------------------------------------------------------------

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            match e {
                PathElem::Name(n) if i == 0 => write!(f, "{n}")?,
                PathElem::Name(n) => write!(f, ".{n}")?,
                PathElem::Index(x) => write!(f, "[{x}]")?,
            }
        }
        Ok(())
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Path(p) => write!(f, "{p}"),
            Operand::Placeholder(v) => write!(f, "{v}"),
            Operand::Const(v) => write!(f, "{}", v.to_json()),
            Operand::Size(p) => write!(f, "size({p})"),
        }
    }
}

impl fmt::Display for Cond {
    /// Fully parenthesised, so that printing and parsing round-trip
    /// whatever the precedence.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cond::Cmp(a, op, b) => write!(f, "{a} {} {b}", op.as_str()),
            Cond::Between(a, lo, hi) => write!(f, "{a} BETWEEN {lo} AND {hi}"),
            Cond::In(a, list) => {
                write!(f, "{a} IN (")?;
                for (i, x) in list.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{x}")?;
                }
                write!(f, ")")
            }
            Cond::Exists(p) => write!(f, "attribute_exists({p})"),
            Cond::NotExists(p) => write!(f, "attribute_not_exists({p})"),
            Cond::Type(p, t) => write!(f, "attribute_type({p}, {t})"),
            Cond::BeginsWith(a, b) => write!(f, "begins_with({a}, {b})"),
            Cond::Contains(a, b) => write!(f, "contains({a}, {b})"),
            Cond::And(a, b) => write!(f, "({a}) AND ({b})"),
            Cond::Or(a, b) => write!(f, "({a}) OR ({b})"),
            Cond::Not(a) => write!(f, "NOT ({a})"),
        }
    }
}

impl fmt::Display for SetOperand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetOperand::Path(p) => write!(f, "{p}"),
            SetOperand::Placeholder(v) => write!(f, "{v}"),
            SetOperand::Const(v) => write!(f, "{}", v.to_json()),
            SetOperand::IfNotExists(p, v) => write!(f, "if_not_exists({p}, {v})"),
            SetOperand::ListAppend(a, b) => write!(f, "list_append({a}, {b})"),
        }
    }
}

impl fmt::Display for SetValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetValue::Operand(a) => write!(f, "{a}"),
            SetValue::Plus(a, b) => write!(f, "{a} + {b}"),
            SetValue::Minus(a, b) => write!(f, "{a} - {b}"),
        }
    }
}

impl fmt::Display for Update {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut clauses = Vec::new();
        if !self.set.is_empty() {
            let items: Vec<String> = self.set.iter().map(|(p, v)| format!("{p} = {v}")).collect();
            clauses.push(format!("SET {}", items.join(", ")));
        }
        if !self.remove.is_empty() {
            let items: Vec<String> = self.remove.iter().map(ToString::to_string).collect();
            clauses.push(format!("REMOVE {}", items.join(", ")));
        }
        for (kw, list) in [("ADD", &self.add), ("DELETE", &self.delete)] {
            if !list.is_empty() {
                let items: Vec<String> = list.iter().map(|(p, v)| format!("{p} {v}")).collect();
                clauses.push(format!("{kw} {}", items.join(", ")));
            }
        }
        write!(f, "{}", clauses.join(" "))
    }
}

// ---- substitution ---------------------------------------------------------

/// `ExpressionAttributeNames` and `ExpressionAttributeValues` of one
/// request, with the record of which were used. Every expression of the
/// request goes through the same `Placeholders`; [`Placeholders::finish`]
/// then reports any that no expression used.
#[derive(Debug, Default)]
pub struct Placeholders {
    names: BTreeMap<String, String>,
    values: BTreeMap<String, Value>,
    used_names: BTreeSet<String>,
    used_values: BTreeSet<String>,
}

impl Placeholders {
    /// The request's maps.
    pub fn new(names: BTreeMap<String, String>, values: BTreeMap<String, Value>) -> Placeholders {
        Placeholders {
            names,
            values,
            ..Placeholders::default()
        }
    }

    fn name(&mut self, raw: &mut String) -> DdbResult<()> {
        if raw.starts_with('#') {
            let real = self.names.get(raw.as_str()).ok_or_else(|| {
                DdbError::validation(format!(
                    "An expression attribute name used in the document path is not defined; attribute name: {raw}"
                ))
            })?;
            self.used_names.insert(raw.clone());
            *raw = real.clone();
        }
        Ok(())
    }

    fn value(&mut self, raw: &str) -> DdbResult<Value> {
        let v = self.values.get(raw).ok_or_else(|| {
            DdbError::validation(format!(
                "An expression attribute value used in expression is not defined; attribute value: {raw}"
            ))
        })?;
        self.used_values.insert(raw.to_owned());
        Ok(v.clone())
    }

    /// Substitutes the names in a path.
    pub fn path(&mut self, p: &mut Path) -> DdbResult<()> {
        for e in &mut p.0 {
            if let PathElem::Name(n) = e {
                self.name(n)?;
            }
        }
        Ok(())
    }

    /// Substitutes in an operand.
    pub fn operand(&mut self, o: &mut Operand) -> DdbResult<()> {
        match o {
            Operand::Path(p) | Operand::Size(p) => self.path(p),
            Operand::Placeholder(v) => {
                *o = Operand::Const(self.value(v)?);
                Ok(())
            }
            Operand::Const(_) => Ok(()),
        }
    }

    /// Substitutes in a condition.
    pub fn cond(&mut self, c: &mut Cond) -> DdbResult<()> {
        match c {
            Cond::Cmp(a, _, b) | Cond::BeginsWith(a, b) | Cond::Contains(a, b) => {
                self.operand(a)?;
                self.operand(b)
            }
            Cond::Between(a, b, d) => {
                self.operand(a)?;
                self.operand(b)?;
                self.operand(d)
            }
            Cond::In(a, list) => {
                self.operand(a)?;
                list.iter_mut().try_for_each(|x| self.operand(x))
            }
            Cond::Exists(p) | Cond::NotExists(p) => self.path(p),
            Cond::Type(p, t) => {
                self.path(p)?;
                self.operand(t)
            }
            Cond::And(a, b) | Cond::Or(a, b) => {
                self.cond(a)?;
                self.cond(b)
            }
            Cond::Not(a) => self.cond(a),
        }
    }

    fn set_operand(&mut self, o: &mut SetOperand) -> DdbResult<()> {
        match o {
            SetOperand::Path(p) => self.path(p),
            SetOperand::Placeholder(v) => {
                *o = SetOperand::Const(self.value(v)?);
                Ok(())
            }
            SetOperand::Const(_) => Ok(()),
            SetOperand::IfNotExists(p, v) => {
                self.path(p)?;
                self.set_operand(v)
            }
            SetOperand::ListAppend(a, b) => {
                self.set_operand(a)?;
                self.set_operand(b)
            }
        }
    }

    /// Substitutes in an update expression.
    pub fn update(&mut self, u: &mut Update) -> DdbResult<()> {
        for (p, v) in &mut u.set {
            self.path(p)?;
            match v {
                SetValue::Operand(a) => self.set_operand(a)?,
                SetValue::Plus(a, b) | SetValue::Minus(a, b) => {
                    self.set_operand(a)?;
                    self.set_operand(b)?;
                }
            }
        }
        for p in &mut u.remove {
            self.path(p)?;
        }
        for (p, v) in u.add.iter_mut().chain(u.delete.iter_mut()) {
            self.path(p)?;
            self.operand(v)?;
        }
        Ok(())
    }

    /// Fails if a name or value was given that no expression used.
    pub fn finish(&self) -> DdbResult<()> {
        let unused = |all: Vec<&String>| -> Option<String> {
            (!all.is_empty()).then(|| {
                all.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
        };
        if let Some(keys) = unused(
            self.names
                .keys()
                .filter(|k| !self.used_names.contains(*k))
                .collect(),
        ) {
            return Err(DdbError::validation(format!(
                "Value provided in ExpressionAttributeNames unused in expressions: keys: {{{keys}}}"
            )));
        }
        if let Some(keys) = unused(
            self.values
                .keys()
                .filter(|k| !self.used_values.contains(*k))
                .collect(),
        ) {
            return Err(DdbError::validation(format!(
                "Value provided in ExpressionAttributeValues unused in expressions: keys: {{{keys}}}"
            )));
        }
        Ok(())
    }
}
