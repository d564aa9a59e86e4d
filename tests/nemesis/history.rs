//! A workload's history and the checkers run on it, free of I/O, so that
//! the nemesis test and the deterministic simulation (`tests/simulate.rs`)
//! apply the same rules; and the seeded generator both draw from.
//!
//! Every written value is unique, so a value names the write that made it.
//! A write that carried a context records what the read behind that
//! context returned (`saw`): those values it supersedes. The checkers, per
//! key, against the values every replica holds after healing:
//!
//! * **no lost write**: every acknowledged put is among the final values,
//!   or some write that may have happened (acknowledged, or of unknown
//!   outcome) superseded it;
//! * **no resurrection**: no value an acknowledged delete superseded is
//!   among the final values;
//! * **no phantom**: every final value, and every value a read returned,
//!   was written by a put that may have happened;
//! * **siblings are concurrent**: no final value superseded another final
//!   value (with no phantoms, there are also never more siblings than
//!   puts).
//!
//! Keys of last-writer-wins tables ([`check_lww`]) keep one value: the
//! write with the highest hybrid timestamp. Clients cannot see timestamps,
//! but on one machine the nodes' clocks agree, so a write acknowledged
//! before another began carries the lower timestamp (hybrid clocks never
//! run behind the wall clock). The checker: the final value is one that was
//! written, and no acknowledged write began after it was acknowledged
//! (give or take `slack_ms` for clock reading order).

use std::collections::{BTreeMap, BTreeSet};

/// SplitMix64: small, seedable, good enough for schedules and workloads
/// (the nemesis test's and the simulation's).
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged.
    Ok,
    /// Refused without effect (a failed condition, a bad request).
    Failed,
    /// No answer, a timeout or a quorum failure: it may have happened.
    Unknown,
}

/// One operation on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    /// A put of a unique value; `saw` is what the read behind its context
    /// returned (`None`: a blind put, superseding nothing).
    Put {
        /// The value written.
        value: String,
        /// The values it supersedes.
        saw: Option<BTreeSet<String>>,
    },
    /// A delete with the context of a read that returned `saw`.
    Delete {
        /// The values it supersedes.
        saw: BTreeSet<String>,
    },
    /// A read and what it returned.
    Read {
        /// The live values.
        values: BTreeSet<String>,
    },
}

/// One operation of the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// The key.
    pub key: String,
    /// What it did.
    pub kind: OpKind,
    /// What became of it.
    pub outcome: Outcome,
    /// When it was sent and when its answer came, ms since the run began.
    pub span: (u64, u64),
}

/// A broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// An acknowledged put vanished without being superseded.
    Lost { key: String, value: String },
    /// A value an acknowledged delete superseded came back.
    Resurrected { key: String, value: String },
    /// A value nobody (possibly) wrote was found or read.
    Phantom { key: String, value: String },
    /// A last-writer-wins key kept a value older than an acknowledged
    /// write that began after it was acknowledged.
    OlderWriterWon {
        key: String,
        kept: String,
        newer: String,
    },
    /// A last-writer-wins key kept more than one value, or none after an
    /// acknowledged put.
    NotOneValue { key: String, values: usize },
    /// A final value superseded another final value.
    NotConcurrent {
        key: String,
        older: String,
        newer: String,
    },
}

/// The operations of each key, in history order.
fn by_key(history: &[Op]) -> BTreeMap<&str, Vec<&Op>> {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    by_key
}

/// Checks `history` against the values every replica holds after healing
/// (`finals`, by key; a key missing from it holds nothing live).
pub fn check(history: &[Op], finals: &BTreeMap<String, BTreeSet<String>>) -> Vec<Violation> {
    let by_key = by_key(history);
    let empty = BTreeSet::new();
    let mut out = Vec::new();
    for (key, ops) in by_key {
        let fin = finals.get(key).unwrap_or(&empty);
        let happened = |o: &&&Op| o.outcome != Outcome::Failed;
        let mut written: BTreeMap<&str, Option<&BTreeSet<String>>> = BTreeMap::new();
        let mut superseded: BTreeSet<&str> = BTreeSet::new();
        for op in ops.iter().filter(happened) {
            match &op.kind {
                OpKind::Put { value, saw } => {
                    written.insert(value, saw.as_ref());
                    superseded.extend(saw.iter().flatten().map(String::as_str));
                }
                OpKind::Delete { saw } => superseded.extend(saw.iter().map(String::as_str)),
                OpKind::Read { .. } => {}
            }
        }
        let v = |s: &str| (key.to_owned(), s.to_owned());
        for op in &ops {
            match (&op.kind, op.outcome) {
                (OpKind::Put { value, .. }, Outcome::Ok)
                    if !fin.contains(value) && !superseded.contains(value.as_str()) =>
                {
                    let (key, value) = v(value);
                    out.push(Violation::Lost { key, value });
                }
                (OpKind::Delete { saw }, Outcome::Ok) => {
                    for value in saw.intersection(fin) {
                        let (key, value) = v(value);
                        out.push(Violation::Resurrected { key, value });
                    }
                }
                (OpKind::Read { values }, Outcome::Ok) => {
                    for value in values.iter().filter(|x| !written.contains_key(x.as_str())) {
                        let (key, value) = v(value);
                        out.push(Violation::Phantom { key, value });
                    }
                }
                _ => {}
            }
        }
        for newer in fin {
            match written.get(newer.as_str()) {
                None => {
                    let (key, value) = v(newer);
                    out.push(Violation::Phantom { key, value });
                }
                Some(saw) => {
                    for older in saw.iter().flat_map(|s| s.intersection(fin)) {
                        out.push(Violation::NotConcurrent {
                            key: key.to_owned(),
                            older: older.clone(),
                            newer: newer.clone(),
                        });
                    }
                }
            }
        }
    }
    out
}

/// Checks the keys of a last-writer-wins table (puts only) against their
/// final values.
pub fn check_lww(
    history: &[Op],
    finals: &BTreeMap<String, BTreeSet<String>>,
    slack_ms: u64,
) -> Vec<Violation> {
    let by_key = by_key(history);
    let empty = BTreeSet::new();
    let mut out = Vec::new();
    for (key, ops) in by_key {
        let fin = finals.get(key).unwrap_or(&empty);
        let puts: Vec<(&str, &Op)> = ops
            .iter()
            .filter_map(|op| match &op.kind {
                OpKind::Put { value, .. } => Some((value.as_str(), *op)),
                _ => None,
            })
            .collect();
        let acked = puts.iter().any(|(_, op)| op.outcome == Outcome::Ok);
        if fin.len() > 1 || (acked && fin.is_empty()) {
            out.push(Violation::NotOneValue {
                key: key.to_owned(),
                values: fin.len(),
            });
            continue;
        }
        let Some(kept) = fin.iter().next() else {
            continue;
        };
        let Some((_, writer)) = puts
            .iter()
            .find(|(v, op)| *v == kept && op.outcome != Outcome::Failed)
        else {
            out.push(Violation::Phantom {
                key: key.to_owned(),
                value: kept.clone(),
            });
            continue;
        };
        // The kept write's timestamp is at most the wall clock when it was
        // answered; a write sent later reads a later clock.
        if writer.outcome == Outcome::Ok {
            let newer = puts
                .iter()
                .find(|(_, op)| op.outcome == Outcome::Ok && op.span.0 > writer.span.1 + slack_ms);
            if let Some((newer, _)) = newer {
                out.push(Violation::OlderWriterWon {
                    key: key.to_owned(),
                    kept: kept.clone(),
                    newer: (*newer).to_owned(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(xs: &[&str]) -> BTreeSet<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    fn put(value: &str, saw: Option<&[&str]>, outcome: Outcome) -> Op {
        Op {
            key: "k".into(),
            kind: OpKind::Put {
                value: value.into(),
                saw: saw.map(set),
            },
            outcome,
            span: (0, 0),
        }
    }

    fn delete(saw: &[&str], outcome: Outcome) -> Op {
        Op {
            key: "k".into(),
            kind: OpKind::Delete { saw: set(saw) },
            outcome,
            span: (0, 0),
        }
    }

    fn read(values: &[&str]) -> Op {
        Op {
            key: "k".into(),
            kind: OpKind::Read {
                values: set(values),
            },
            outcome: Outcome::Ok,
            span: (0, 0),
        }
    }

    fn finals(values: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
        BTreeMap::from([("k".to_owned(), set(values))])
    }

    #[test]
    fn a_clean_history_passes() {
        let h = vec![
            put("a", None, Outcome::Ok),
            put("b", None, Outcome::Ok),
            read(&["a", "b"]),
            put("c", Some(&["a", "b"]), Outcome::Ok),
            put("d", None, Outcome::Failed),
            put("e", None, Outcome::Unknown),
        ];
        assert_eq!(check(&h, &finals(&["c"])), vec![]);
        assert_eq!(
            check(&h, &finals(&["c", "e"])),
            vec![],
            "e may have happened"
        );
    }

    #[test]
    fn a_vanished_acknowledged_write_is_lost() {
        let h = vec![put("a", None, Outcome::Ok), put("b", None, Outcome::Ok)];
        assert_eq!(
            check(&h, &finals(&["b"])),
            vec![Violation::Lost {
                key: "k".into(),
                value: "a".into()
            }]
        );
        // Superseded by a write of unknown outcome: not lost.
        let mut h = h;
        h.push(put("c", Some(&["a"]), Outcome::Unknown));
        assert_eq!(check(&h, &finals(&["b", "c"])), vec![]);
        // But a refused write supersedes nothing.
        h.push(put("x", Some(&["b"]), Outcome::Failed));
        assert_eq!(
            check(&h, &finals(&["c"])),
            vec![Violation::Lost {
                key: "k".into(),
                value: "b".into()
            }]
        );
    }

    #[test]
    fn a_deleted_value_that_returns_is_a_resurrection() {
        let h = vec![put("a", None, Outcome::Ok), delete(&["a"], Outcome::Ok)];
        assert_eq!(check(&h, &finals(&[])), vec![]);
        let found = check(&h, &finals(&["a"]));
        assert!(found.contains(&Violation::Resurrected {
            key: "k".into(),
            value: "a".into()
        }));
    }

    #[test]
    fn unwritten_and_superseded_siblings_are_caught() {
        let h = vec![
            put("a", None, Outcome::Ok),
            put("b", Some(&["a"]), Outcome::Ok),
            read(&["zz"]),
        ];
        let found = check(&h, &finals(&["a", "b", "q"]));
        assert!(found.contains(&Violation::Phantom {
            key: "k".into(),
            value: "q".into()
        }));
        assert!(found.contains(&Violation::Phantom {
            key: "k".into(),
            value: "zz".into()
        }));
        assert!(found.contains(&Violation::NotConcurrent {
            key: "k".into(),
            older: "a".into(),
            newer: "b".into()
        }));
    }

    fn timed(value: &str, span: (u64, u64), outcome: Outcome) -> Op {
        Op {
            span,
            ..put(value, None, outcome)
        }
    }

    #[test]
    fn last_writer_wins_keeps_a_write_no_later_write_followed() {
        let h = vec![
            timed("a", (0, 10), Outcome::Ok),
            timed("b", (5, 20), Outcome::Ok),
            timed("c", (100, 120), Outcome::Ok),
            timed("d", (130, 140), Outcome::Unknown),
        ];
        // c or d (d may have happened, later) may win; a and b were
        // followed by c.
        assert_eq!(check_lww(&h, &finals(&["c"]), 5), vec![]);
        assert_eq!(check_lww(&h, &finals(&["d"]), 5), vec![]);
        assert_eq!(
            check_lww(&h, &finals(&["b"]), 5),
            vec![Violation::OlderWriterWon {
                key: "k".into(),
                kept: "b".into(),
                newer: "c".into()
            }]
        );
        assert_eq!(
            check_lww(&h, &finals(&["c", "d"]), 5),
            vec![Violation::NotOneValue {
                key: "k".into(),
                values: 2
            }]
        );
        assert_eq!(
            check_lww(&h, &finals(&[]), 5),
            vec![Violation::NotOneValue {
                key: "k".into(),
                values: 0
            }]
        );
        assert_eq!(
            check_lww(&h, &finals(&["zz"]), 5),
            vec![Violation::Phantom {
                key: "k".into(),
                value: "zz".into()
            }]
        );
    }
}
