//! Property tests of the expression parser: what it prints it parses back
//! to the same tree, and no input makes it panic.

use dyno_ddb::expr::parse::{self, Kind};
use dyno_ddb::expr::{CmpOp, Cond, Operand, Path, PathElem, SetOperand, SetValue, Update};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9_]{0,6}".prop_filter("not a keyword", |s| {
            ![
                "and", "or", "not", "between", "in", "set", "remove", "add", "delete",
            ]
            .contains(&s.as_str())
        }),
        "#[a-z0-9]{1,4}",
    ]
}

fn path() -> impl Strategy<Value = Path> {
    (
        name(),
        prop::collection::vec(
            prop_oneof![
                name()
                    .prop_filter("names below the top are plain", |n| !n.starts_with('#'))
                    .prop_map(PathElem::Name),
                (0u32..20).prop_map(PathElem::Index),
            ],
            0..3,
        ),
    )
        .prop_map(|(first, rest)| {
            let mut v = vec![PathElem::Name(first)];
            v.extend(rest);
            Path(v)
        })
}

fn value_ref() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,4}".prop_map(|s| format!(":{s}"))
}

fn operand() -> impl Strategy<Value = Operand> {
    prop_oneof![
        path().prop_map(Operand::Path),
        value_ref().prop_map(Operand::Placeholder),
        path().prop_map(Operand::Size),
    ]
}

fn cmp() -> impl Strategy<Value = CmpOp> {
    prop_oneof![
        Just(CmpOp::Eq),
        Just(CmpOp::Ne),
        Just(CmpOp::Lt),
        Just(CmpOp::Le),
        Just(CmpOp::Gt),
        Just(CmpOp::Ge),
    ]
}

fn cond() -> impl Strategy<Value = Cond> {
    let leaf = prop_oneof![
        (operand(), cmp(), operand()).prop_map(|(a, op, b)| Cond::Cmp(a, op, b)),
        (operand(), operand(), operand()).prop_map(|(a, b, c)| Cond::Between(a, b, c)),
        (operand(), prop::collection::vec(operand(), 1..4)).prop_map(|(a, l)| Cond::In(a, l)),
        path().prop_map(Cond::Exists),
        path().prop_map(Cond::NotExists),
        (path(), operand()).prop_map(|(p, t)| Cond::Type(p, t)),
        (operand(), operand()).prop_map(|(a, b)| Cond::BeginsWith(a, b)),
        (operand(), operand()).prop_map(|(a, b)| Cond::Contains(a, b)),
    ];
    leaf.prop_recursive(4, 24, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Cond::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Cond::Or(Box::new(a), Box::new(b))),
            inner.prop_map(|a| Cond::Not(Box::new(a))),
        ]
    })
}

fn set_operand() -> impl Strategy<Value = SetOperand> {
    let leaf = prop_oneof![
        path().prop_map(SetOperand::Path),
        value_ref().prop_map(SetOperand::Placeholder),
    ];
    leaf.prop_recursive(2, 6, 2, |inner| {
        prop_oneof![
            (path(), inner.clone()).prop_map(|(p, v)| SetOperand::IfNotExists(p, Box::new(v))),
            (inner.clone(), inner)
                .prop_map(|(a, b)| SetOperand::ListAppend(Box::new(a), Box::new(b))),
        ]
    })
}

fn update() -> impl Strategy<Value = Update> {
    let set_value = prop_oneof![
        set_operand().prop_map(SetValue::Operand),
        (set_operand(), set_operand()).prop_map(|(a, b)| SetValue::Plus(a, b)),
        (set_operand(), set_operand()).prop_map(|(a, b)| SetValue::Minus(a, b)),
    ];
    let pv = || (path(), value_ref().prop_map(Operand::Placeholder));
    (
        prop::collection::vec((path(), set_value), 0..3),
        prop::collection::vec(path(), 0..3),
        prop::collection::vec(pv(), 0..3),
        prop::collection::vec(pv(), 0..3),
    )
        .prop_filter("at least one clause", |(s, r, a, d)| {
            !(s.is_empty() && r.is_empty() && a.is_empty() && d.is_empty())
        })
        .prop_map(|(set, remove, add, delete)| Update {
            set,
            remove,
            add,
            delete,
        })
}

proptest! {
    #[test]
    fn conditions_round_trip(c in cond()) {
        let text = c.to_string();
        let parsed = parse::condition(Kind::Condition, &text)
            .map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(parsed, c);
    }

    #[test]
    fn updates_round_trip(u in update()) {
        let text = u.to_string();
        let parsed = parse::update(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(parsed, u);
    }

    #[test]
    fn projections_round_trip(paths in prop::collection::vec(path(), 1..5)) {
        let text = paths.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        prop_assert_eq!(parse::projection(&text).map_err(|e| TestCaseError::fail(e.to_string()))?, paths);
    }

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,80}") {
        let _ = parse::condition(Kind::Filter, &s);
        let _ = parse::update(&s);
        let _ = parse::projection(&s);
    }

    #[test]
    fn expression_like_text_never_panics(
        parts in prop::collection::vec(
            prop_oneof![
                Just("("), Just(")"), Just(" AND "), Just(" OR "), Just("NOT "), Just("a"), Just(":v"),
                Just("#n"), Just(" = "), Just(" < "), Just(","), Just("["), Just("]"), Just("."),
                Just("size("), Just("SET "), Just(" REMOVE "), Just(" + "), Just("if_not_exists("),
                Just(" BETWEEN "), Just(" IN "), Just("1"),
            ],
            0..40,
        )
    ) {
        let s: String = parts.concat();
        let _ = parse::condition(Kind::Condition, &s);
        let _ = parse::update(&s);
        let _ = parse::projection(&s);
    }
}

#[test]
fn deep_nesting_is_refused_without_exhausting_the_stack() {
    let text = format!("{}a = :v{}", "(".repeat(3000), ")".repeat(3000));
    let e = parse::condition(Kind::Condition, &text).expect_err("too long");
    assert!(e.message.contains("maximum allowed size"), "{}", e.message);
    let text = "NOT ".repeat(1000) + "a = :v";
    assert!(parse::condition(Kind::Condition, &text).is_err());
}
