//! Version vectors and dots: the causal vocabulary of Dyno.
//!
//! An *actor* is one incarnation of a node's storage: a random 64-bit id made
//! when a data directory is created (the driver draws it; the core never
//! draws random numbers). A wiped node therefore comes back as a new actor
//! and can never reuse a counter it issued before.
//!
//! A [`Dot`] names one write: the actor that coordinated it and that actor's
//! per-key counter. A [`VersionVector`] summarises a set of dots: it *covers*
//! a dot when its entry for the dot's actor is at least the dot's counter.
//! That summary is exact because an actor issues counters for a key in order,
//! and only while it holds every earlier dot of its own for that key (see
//! `object.rs`).

use std::cmp::Ordering;

/// One incarnation of one node's storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ActorId(pub u64);

/// One write event: `(actor, counter)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dot {
    /// The actor that coordinated the write.
    pub actor: ActorId,
    /// The actor's counter for this key, starting at 1.
    pub counter: u64,
}

/// How two version vectors relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Causality {
    /// Left has seen strictly less than right.
    Before,
    /// Left has seen strictly more than right.
    After,
    /// Both have seen exactly the same events.
    Equal,
    /// Each has seen something the other has not.
    Concurrent,
}

/// A version vector: for each actor, the highest counter seen. Entries are
/// kept sorted by actor and never hold a zero counter, so equal vectors have
/// equal representations.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct VersionVector {
    entries: Vec<(ActorId, u64)>,
}

impl VersionVector {
    /// The empty vector: has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a vector from entries in any order; zero counters are dropped
    /// and duplicate actors keep their highest counter.
    pub fn from_entries(entries: impl IntoIterator<Item = (ActorId, u64)>) -> Self {
        let mut vv = Self::new();
        for (actor, counter) in entries {
            vv.witness(Dot { actor, counter });
        }
        vv
    }

    /// The entries, sorted by actor.
    pub fn entries(&self) -> &[(ActorId, u64)] {
        &self.entries
    }

    /// Number of actors with a non-zero counter.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the vector has seen nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The counter for `actor` (zero when absent).
    pub fn get(&self, actor: ActorId) -> u64 {
        match self.entries.binary_search_by_key(&actor, |&(a, _)| a) {
            Ok(i) => self.entries.get(i).map_or(0, |&(_, c)| c),
            Err(_) => 0,
        }
    }

    /// True when the vector covers `dot`.
    pub fn contains(&self, dot: Dot) -> bool {
        dot.counter <= self.get(dot.actor)
    }

    /// Raises the entry for `dot.actor` to at least `dot.counter`.
    pub fn witness(&mut self, dot: Dot) {
        if dot.counter == 0 {
            return;
        }
        match self.entries.binary_search_by_key(&dot.actor, |&(a, _)| a) {
            Ok(i) => {
                if let Some(e) = self.entries.get_mut(i) {
                    e.1 = e.1.max(dot.counter);
                }
            }
            Err(i) => self.entries.insert(i, (dot.actor, dot.counter)),
        }
    }

    /// The next dot for `actor` after everything this vector has seen.
    pub fn next_dot(&self, actor: ActorId) -> Dot {
        Dot {
            actor,
            counter: self.get(actor).saturating_add(1),
        }
    }

    /// Pointwise maximum (the lattice join).
    pub fn merge(&mut self, other: &VersionVector) {
        let mut out = Vec::with_capacity(self.entries.len().max(other.entries.len()));
        let (mut a, mut b) = (
            self.entries.iter().peekable(),
            other.entries.iter().peekable(),
        );
        loop {
            match (a.peek(), b.peek()) {
                (Some(&&(xa, xc)), Some(&&(ya, yc))) => match xa.cmp(&ya) {
                    Ordering::Less => {
                        out.push((xa, xc));
                        a.next();
                    }
                    Ordering::Greater => {
                        out.push((ya, yc));
                        b.next();
                    }
                    Ordering::Equal => {
                        out.push((xa, xc.max(yc)));
                        a.next();
                        b.next();
                    }
                },
                (Some(&&e), None) | (None, Some(&&e)) => {
                    out.push(e);
                    a.next();
                    b.next();
                }
                (None, None) => break,
            }
        }
        self.entries = out;
    }

    /// The join of two vectors, leaving both untouched.
    pub fn merged(&self, other: &VersionVector) -> VersionVector {
        let mut v = self.clone();
        v.merge(other);
        v
    }

    /// True when every event seen by `other` is seen by `self`.
    pub fn descends(&self, other: &VersionVector) -> bool {
        other.entries.iter().all(|&(a, c)| self.get(a) >= c)
    }

    /// Compares the causal histories of two vectors.
    pub fn compare(&self, other: &VersionVector) -> Causality {
        match (self.descends(other), other.descends(self)) {
            (true, true) => Causality::Equal,
            (true, false) => Causality::After,
            (false, true) => Causality::Before,
            (false, false) => Causality::Concurrent,
        }
    }

    /// Keeps only the entries for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(ActorId, u64) -> bool) {
        self.entries.retain(|&(a, c)| keep(a, c));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vv(entries: &[(u64, u64)]) -> VersionVector {
        VersionVector::from_entries(entries.iter().map(|&(a, c)| (ActorId(a), c)))
    }

    #[test]
    fn compare_covers_all_four_outcomes() {
        let a = vv(&[(1, 1)]);
        let b = vv(&[(1, 1), (2, 1)]);
        let c = vv(&[(1, 1), (3, 1)]);
        assert_eq!(a.compare(&b), Causality::Before);
        assert_eq!(b.compare(&a), Causality::After);
        assert_eq!(b.compare(&b.clone()), Causality::Equal);
        assert_eq!(b.compare(&c), Causality::Concurrent);
        assert_eq!(VersionVector::new().compare(&a), Causality::Before);
    }

    #[test]
    fn zero_counters_are_not_stored() {
        assert_eq!(vv(&[(1, 0), (2, 3)]).entries(), &[(ActorId(2), 3)]);
    }

    fn arb_vv() -> impl Strategy<Value = VersionVector> {
        proptest::collection::vec((0u64..6, 0u64..5), 0..6).prop_map(|e| vv(&e))
    }

    proptest! {
        #[test]
        fn merge_is_commutative(a in arb_vv(), b in arb_vv()) {
            prop_assert_eq!(a.merged(&b), b.merged(&a));
        }

        #[test]
        fn merge_is_associative(a in arb_vv(), b in arb_vv(), c in arb_vv()) {
            prop_assert_eq!(a.merged(&b).merged(&c), a.merged(&b.merged(&c)));
        }

        #[test]
        fn merge_is_idempotent(a in arb_vv()) {
            prop_assert_eq!(a.merged(&a), a);
        }

        #[test]
        fn merge_is_an_upper_bound(a in arb_vv(), b in arb_vv()) {
            let m = a.merged(&b);
            prop_assert!(m.descends(&a) && m.descends(&b));
        }

        #[test]
        fn compare_agrees_with_merge(a in arb_vv(), b in arb_vv()) {
            let expected = match (a.merged(&b) == a, a.merged(&b) == b) {
                (true, true) => Causality::Equal,
                (true, false) => Causality::After,
                (false, true) => Causality::Before,
                (false, false) => Causality::Concurrent,
            };
            prop_assert_eq!(a.compare(&b), expected);
        }
    }
}
