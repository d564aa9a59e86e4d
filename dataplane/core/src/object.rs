//! The stored state of one key: a *DVV set* (dotted version vector set).
//!
//! An [`Object`] holds a version vector — every write it has seen — and the
//! siblings that are still live, each tagged with the [`Dot`] of the write
//! that made it. A tombstone is a sibling without a value.
//!
//! * **Write** ([`Object::update`]): a client sends its *context* (the version
//!   vector it last read). The write removes exactly the siblings whose dots
//!   the context covers and adds one new sibling with a fresh dot. Siblings
//!   the client never saw survive as concurrent values. Because the new value
//!   carries its own dot instead of a whole new clock, interleaved writers
//!   from stale contexts do not multiply siblings: the sibling explosion of
//!   plain vector clocks that made Riak move to DVVs does not happen.
//! * **Merge** ([`Object::merge`]): a sibling of one side survives unless
//!   the other side has seen its dot and no longer holds it. This is a
//!   join-semilattice (commutative, associative, idempotent; tested below),
//!   so replicas converge whatever the order of delivery.
//! * **Last-writer-wins** tables ([`ConflictMode::Lww`]) keep one sibling:
//!   the one with the highest hybrid timestamp, ties broken by dot.
//!
//! ## The counter invariant
//!
//! A dot is only meaningful if an actor never issues the same counter twice
//! for a key and issues them in order. The coordinator of a write is therefore
//! always a replica that stores the key: the new counter is one past the
//! highest it has seen, either in its local state or in the client's context.
//! An actor id names a storage *incarnation*, so a wiped node comes back as
//! a fresh actor.
//!
//! ## Bounding
//!
//! The object's own version vector is never pruned: forgetting an entry would
//! let its actor reuse counters, and a reused dot silently loses a write. Its
//! size is bounded by the number of storage incarnations that have ever
//! coordinated a write to the key. What *is* bounded is the client context
//! (see [`Object::client_context`]): when it would exceed
//! `context::MAX_CONTEXT_ENTRIES`, entries for actors that no sibling
//! carries are dropped. A smaller context covers fewer dots, so a write made
//! with it can only supersede *less*: it may leave an extra sibling, but it
//! never makes a concurrent write look older.
//!
//! The number of siblings is capped by [`SiblingLimits`]: past `warn_at` a
//! write succeeds with a warning, past `max` it fails with
//! [`UpdateError::TooManySiblings`] and the client must resolve first.

use bytes::Bytes;
use thiserror::Error;

use crate::hlc::Hlc;
use crate::version::{ActorId, Dot, VersionVector};

/// How a table resolves concurrent writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ConflictMode {
    /// Keep concurrent values as siblings and let the client resolve them
    /// (Dynamo's default).
    #[default]
    Siblings,
    /// Keep only the value with the highest hybrid timestamp.
    Lww,
}

/// One version of a key's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sibling {
    /// The write that made this version.
    pub dot: Dot,
    /// When it was written (hybrid time of the coordinator).
    pub timestamp: Hlc,
    /// The value, or `None` for a tombstone.
    pub value: Option<Bytes>,
}

impl Sibling {
    /// True for a delete marker.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }
}

/// Sibling thresholds for coordinated writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiblingLimits {
    /// From this many siblings on, a write reports a warning.
    pub warn_at: usize,
    /// A write that would leave more siblings than this is refused.
    pub max: usize,
}

impl Default for SiblingLimits {
    fn default() -> Self {
        // Riak's defaults are 25 and 100. The cap stays below the context's
        // entry limit so that every sibling's actor fits in a context.
        SiblingLimits {
            warn_at: 25,
            max: 100,
        }
    }
}

/// A new write, as the coordinator applies it.
#[derive(Debug, Clone)]
pub struct Write<'a> {
    /// What the client had seen (empty for a blind write).
    pub context: &'a VersionVector,
    /// The coordinating replica's actor id.
    pub actor: ActorId,
    /// The value, or `None` for a delete.
    pub value: Option<Bytes>,
    /// The coordinator's hybrid time for the write.
    pub timestamp: Hlc,
}

/// What a successful write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateOutcome {
    /// The dot given to the new version.
    pub dot: Dot,
    /// Set to the sibling count when it reached [`SiblingLimits::warn_at`].
    pub sibling_warning: Option<usize>,
}

/// Why a write was refused. The object is unchanged after an error.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UpdateError {
    /// The write would leave more siblings than allowed. The client should
    /// read, resolve the siblings, and write back with the merged context.
    #[error(
        "the write would leave {count} siblings, over the cap of {max}; read the key, resolve its siblings and write with the returned context"
    )]
    TooManySiblings {
        /// Siblings the write would have left.
        count: usize,
        /// The cap.
        max: usize,
    },
}

/// The state of one key on one replica.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Object {
    vv: VersionVector,
    /// Sorted by dot; every dot is covered by `vv`.
    siblings: Vec<Sibling>,
}

impl Object {
    /// An object that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds an object from its parts (used by the codec). Returns `None`
    /// when the parts break the invariants: a sibling not covered by the
    /// vector, or two siblings with one dot.
    pub fn from_parts(vv: VersionVector, mut siblings: Vec<Sibling>) -> Option<Self> {
        siblings.sort_by_key(|s| s.dot);
        let distinct = siblings
            .windows(2)
            .all(|w| matches!(w, [a, b] if a.dot != b.dot));
        let covered = siblings.iter().all(|s| vv.contains(s.dot));
        (distinct && covered).then_some(Object { vv, siblings })
    }

    /// Everything this object has seen.
    pub fn version_vector(&self) -> &VersionVector {
        &self.vv
    }

    /// All siblings, tombstones included, sorted by dot.
    pub fn siblings(&self) -> &[Sibling] {
        &self.siblings
    }

    /// The values a read returns: live siblings, sorted by dot.
    pub fn live_values(&self) -> impl Iterator<Item = &Bytes> {
        self.siblings.iter().filter_map(|s| s.value.as_ref())
    }

    /// True when the object holds no live value (never written, or deleted).
    pub fn is_deleted(&self) -> bool {
        self.siblings.iter().all(Sibling::is_tombstone)
    }

    /// True when every sibling is a tombstone and there is at least one.
    pub fn is_tombstone(&self) -> bool {
        !self.siblings.is_empty() && self.is_deleted()
    }

    /// The newest timestamp among the siblings.
    pub fn latest_timestamp(&self) -> Option<Hlc> {
        self.siblings.iter().map(|s| s.timestamp).max()
    }

    /// Applies a client write at the coordinator (see the module docs).
    pub fn update(
        &mut self,
        write: Write<'_>,
        mode: ConflictMode,
        limits: SiblingLimits,
    ) -> Result<UpdateOutcome, UpdateError> {
        let counter = self.vv.get(write.actor).max(write.context.get(write.actor)) + 1;
        let dot = Dot {
            actor: write.actor,
            counter,
        };
        // The new version must order after everything this replica holds, so
        // that a write made with a context wins under last-writer-wins even
        // when the coordinator's wall clock is behind.
        let timestamp = match self.latest_timestamp() {
            Some(t) => write.timestamp.max(t.successor()),
            None => write.timestamp,
        };
        let new = Sibling {
            dot,
            timestamp,
            value: write.value,
        };

        let mut siblings: Vec<Sibling> = match mode {
            ConflictMode::Siblings => self
                .siblings
                .iter()
                .filter(|s| !write.context.contains(s.dot))
                .cloned()
                .collect(),
            ConflictMode::Lww => Vec::new(),
        };
        // Keep the list sorted by dot: merge walks both sides in order.
        let at = siblings.partition_point(|s| s.dot < new.dot);
        siblings.insert(at, new);
        let count = siblings.len();
        if count > limits.max {
            return Err(UpdateError::TooManySiblings {
                count,
                max: limits.max,
            });
        }
        self.vv.merge(write.context);
        self.vv.witness(dot);
        self.siblings = siblings;
        Ok(UpdateOutcome {
            dot,
            sibling_warning: (count >= limits.warn_at).then_some(count),
        })
    }

    /// Merges another replica's state into this one (see the module docs).
    pub fn merge(&mut self, other: &Object, mode: ConflictMode) {
        let mut out: Vec<Sibling> = Vec::with_capacity(self.siblings.len() + other.siblings.len());
        let (mut a, mut b) = (
            self.siblings.iter().peekable(),
            other.siblings.iter().peekable(),
        );
        // Both lists are sorted by dot: walk them together.
        loop {
            let (take_a, take_b) = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => (x.dot <= y.dot, y.dot <= x.dot),
                (Some(_), None) => (true, false),
                (None, Some(_)) => (false, true),
                (None, None) => break,
            };
            match (take_a, take_b) {
                // Same dot on both sides: the same write, kept once.
                (true, true) => {
                    if let (Some(x), Some(_)) = (a.next(), b.next()) {
                        out.push(x.clone());
                    }
                }
                (true, false) => {
                    if let Some(x) = a.next()
                        && (mode == ConflictMode::Lww || !other.vv.contains(x.dot))
                    {
                        out.push(x.clone());
                    }
                }
                (false, true) => {
                    if let Some(y) = b.next()
                        && (mode == ConflictMode::Lww || !self.vv.contains(y.dot))
                    {
                        out.push(y.clone());
                    }
                }
                (false, false) => break,
            }
        }
        if mode == ConflictMode::Lww {
            out = out
                .into_iter()
                .max_by_key(|s| (s.timestamp, s.dot))
                .into_iter()
                .collect();
        }
        self.siblings = out;
        self.vv.merge(&other.vv);
    }

    /// The join of two objects, leaving both untouched.
    pub fn merged(&self, other: &Object, mode: ConflictMode) -> Object {
        let mut o = self.clone();
        o.merge(other, mode);
        o
    }

    /// The context handed to a client, trimmed to at most `max_entries`
    /// entries by dropping actors that no sibling carries (see the module
    /// docs for why this is safe). Entries for sibling actors are never
    /// dropped; the sibling cap keeps them under the limit.
    pub fn client_context(&self, max_entries: usize) -> VersionVector {
        let mut ctx = self.vv.clone();
        if ctx.len() > max_entries {
            let mut excess = ctx.len() - max_entries;
            ctx.retain(|actor, _| {
                let carried = self.siblings.iter().any(|s| s.dot.actor == actor);
                if carried || excess == 0 {
                    true
                } else {
                    excess -= 1;
                    false
                }
            });
        }
        ctx
    }

    /// A 64-bit digest of the object's causal state (vector and sibling
    /// dots). Two replicas with equal digests hold the same versions, since a
    /// dot names exactly one value.
    pub fn digest(&self) -> u64 {
        let mut buf = Vec::with_capacity(16 * (self.vv.len() + self.siblings.len()) + 2);
        for &(a, c) in self.vv.entries() {
            buf.extend_from_slice(&a.0.to_le_bytes());
            buf.extend_from_slice(&c.to_le_bytes());
        }
        buf.push(0xff);
        for s in &self.siblings {
            buf.extend_from_slice(&s.dot.actor.0.to_le_bytes());
            buf.extend_from_slice(&s.dot.counter.to_le_bytes());
            buf.push(u8::from(s.is_tombstone()));
        }
        crate::hash::digest_bytes(&buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: ActorId = ActorId(1);
    const B: ActorId = ActorId(2);
    const C: ActorId = ActorId(3);

    fn put(o: &mut Object, ctx: &VersionVector, actor: ActorId, v: &str, ts: u64) -> Dot {
        let w = Write {
            context: ctx,
            actor,
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
            timestamp: Hlc(ts),
        };
        o.update(w, ConflictMode::Siblings, SiblingLimits::default())
            .expect("under the cap")
            .dot
    }

    fn values(o: &Object) -> Vec<String> {
        o.live_values()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }

    /// Section 6.3 of the case study: v1 by Node1; v2 (Node2) and v3 (Node3)
    /// both written from v1's context are siblings; v4, written with the
    /// merged context, supersedes both.
    #[test]
    fn case_study_section_6_3() {
        let (node1, node2, node3) = (A, B, C);
        let mut n1 = Object::new();
        put(&mut n1, &VersionVector::new(), node1, "v1", 1);
        let ctx_v1 = n1.client_context(usize::MAX);
        assert_eq!(ctx_v1.entries(), &[(node1, 1)]);

        // Client B's write is coordinated by Node2, client C's by Node3; both
        // replicas hold v1.
        let mut n2 = n1.clone();
        put(&mut n2, &ctx_v1, node2, "v2", 2);
        assert_eq!(n2.version_vector().entries(), &[(node1, 1), (node2, 1)]);
        let mut n3 = n1.clone();
        put(&mut n3, &ctx_v1, node3, "v3", 3);
        assert_eq!(n3.version_vector().entries(), &[(node1, 1), (node3, 1)]);

        // A read that reaches both sees two siblings.
        let read = n2.merged(&n3, ConflictMode::Siblings);
        assert_eq!(values(&read), vec!["v2", "v3"]);
        let merged_ctx = read.client_context(usize::MAX);
        assert_eq!(merged_ctx.entries(), &[(node1, 1), (node2, 1), (node3, 1)]);

        // The client reconciles and writes v4 through Node1.
        let mut n1 = n1.merged(&read, ConflictMode::Siblings);
        put(&mut n1, &merged_ctx, node1, "v4", 4);
        assert_eq!(values(&n1), vec!["v4"]);
        assert_eq!(
            n1.version_vector().entries(),
            &[(node1, 2), (node2, 1), (node3, 1)]
        );
        // And every replica converges on v4 alone.
        for stale in [&n2, &n3] {
            assert_eq!(
                values(&stale.merged(&n1, ConflictMode::Siblings)),
                vec!["v4"]
            );
        }
    }

    /// Interleaved writers with stale contexts: with plain version vectors
    /// every write would add a sibling. With DVVs, each client's write only
    /// replaces what it saw, so the count stays at the number of writers.
    #[test]
    fn interleaved_writers_do_not_explode_siblings() {
        let mut o = Object::new();
        let mut ctx_x = VersionVector::new();
        let mut ctx_y = VersionVector::new();
        for round in 0..50 {
            put(&mut o, &ctx_x, A, &format!("x{round}"), round);
            ctx_x = o.client_context(usize::MAX);
            put(&mut o, &ctx_y, A, &format!("y{round}"), round);
            ctx_y = o.client_context(usize::MAX);
            assert!(o.siblings().len() <= 2, "round {round}: {:?}", values(&o));
        }
    }

    #[test]
    fn delete_with_context_leaves_tombstone_and_keeps_unseen_sibling() {
        let mut o = Object::new();
        put(&mut o, &VersionVector::new(), A, "a", 1);
        let ctx = o.client_context(usize::MAX);
        let mut other = Object::new();
        put(&mut other, &VersionVector::new(), B, "b", 2);
        let w = Write {
            context: &ctx,
            actor: A,
            value: None,
            timestamp: Hlc(3),
        };
        o.update(w, ConflictMode::Siblings, SiblingLimits::default())
            .expect("ok");
        assert!(o.is_tombstone());
        let m = o.merged(&other, ConflictMode::Siblings);
        assert_eq!(values(&m), vec!["b"]);
        assert!(!m.is_deleted());
    }

    #[test]
    fn lww_keeps_highest_timestamp_and_context_write_wins_over_skewed_clock() {
        let mut o = Object::new();
        let lww = ConflictMode::Lww;
        let lim = SiblingLimits::default();
        let ctx = VersionVector::new();
        let w = |v: &'static str, actor, ts| Write {
            context: &ctx,
            actor,
            value: Some(Bytes::from_static(v.as_bytes())),
            timestamp: Hlc(ts),
        };
        o.update(w("old", A, 100), lww, lim).expect("ok");
        // Coordinator B's clock is behind, but it has the key locally, so the
        // write still orders after what it replaces.
        o.update(w("new", B, 50), lww, lim).expect("ok");
        assert_eq!(values(&o), vec!["new"]);
        // Concurrent writes on two replicas: the later timestamp wins on merge.
        let mut x = Object::new();
        x.update(w("x", A, 10), lww, lim).expect("ok");
        let mut y = Object::new();
        y.update(w("y", B, 20), lww, lim).expect("ok");
        assert_eq!(values(&x.merged(&y, lww)), vec!["y"]);
        assert_eq!(values(&y.merged(&x, lww)), vec!["y"]);
    }

    #[test]
    fn sibling_cap_warns_then_refuses_and_leaves_object_unchanged() {
        let limits = SiblingLimits { warn_at: 3, max: 4 };
        let mut o = Object::new();
        let blind = VersionVector::new();
        let mut warnings = Vec::new();
        for i in 0..4u64 {
            // Blind writes from four different actors are all concurrent.
            let w = Write {
                context: &blind,
                actor: ActorId(i + 10),
                value: Some(Bytes::from(vec![b'v'; 1])),
                timestamp: Hlc(i),
            };
            warnings.push(
                o.update(w, ConflictMode::Siblings, limits)
                    .expect("ok")
                    .sibling_warning,
            );
        }
        assert_eq!(warnings, vec![None, None, Some(3), Some(4)]);
        let before = o.clone();
        let w = Write {
            context: &blind,
            actor: ActorId(99),
            value: None,
            timestamp: Hlc(9),
        };
        let err = o
            .update(w, ConflictMode::Siblings, limits)
            .expect_err("over the cap");
        assert_eq!(err, UpdateError::TooManySiblings { count: 5, max: 4 });
        assert_eq!(o, before);
    }

    #[test]
    fn from_parts_rejects_uncovered_or_duplicate_dots() {
        let dot = Dot {
            actor: A,
            counter: 2,
        };
        let s = Sibling {
            dot,
            timestamp: Hlc(0),
            value: None,
        };
        let vv1 = VersionVector::from_entries([(A, 1)]);
        assert!(Object::from_parts(vv1, vec![s.clone()]).is_none());
        let vv2 = VersionVector::from_entries([(A, 2)]);
        assert!(Object::from_parts(vv2.clone(), vec![s.clone(), s.clone()]).is_none());
        assert!(Object::from_parts(vv2, vec![s]).is_some());
    }

    /// Generates replica states by replaying random writes over a few
    /// replicas with random merges, as a cluster would.
    fn arb_states(mode: ConflictMode) -> impl Strategy<Value = Vec<Object>> {
        let op = (0usize..3, 0usize..3, any::<bool>(), 0u64..4, any::<bool>());
        proptest::collection::vec(op, 1..25).prop_map(move |ops| {
            let mut reps = vec![Object::new(), Object::new(), Object::new()];
            let mut seen = VersionVector::new();
            for (i, (r, from, merge, ts, del)) in ops.into_iter().enumerate() {
                if merge {
                    let src = reps[from].clone();
                    reps[r].merge(&src, mode);
                } else {
                    let ctx = if ts % 2 == 0 {
                        reps[r].client_context(usize::MAX)
                    } else {
                        seen.clone()
                    };
                    let value = (!del).then(|| Bytes::from(format!("w{i}")));
                    let w = Write {
                        context: &ctx,
                        actor: ActorId(r as u64 + 1),
                        value,
                        timestamp: Hlc(ts),
                    };
                    reps[r]
                        .update(
                            w,
                            mode,
                            SiblingLimits {
                                warn_at: 1000,
                                max: 1000,
                            },
                        )
                        .expect("no cap");
                    seen = reps[r].client_context(usize::MAX);
                }
            }
            reps
        })
    }

    fn check_laws(states: &[Object], mode: ConflictMode) -> Result<(), TestCaseError> {
        let [a, b, c] = states else { return Ok(()) };
        prop_assert_eq!(a.merged(b, mode), b.merged(a, mode));
        prop_assert_eq!(
            a.merged(b, mode).merged(c, mode),
            a.merged(&b.merged(c, mode), mode)
        );
        prop_assert_eq!(a.merged(a, mode), a.clone());
        Ok(())
    }

    proptest! {
        #[test]
        fn merge_laws_siblings(states in arb_states(ConflictMode::Siblings)) {
            check_laws(&states, ConflictMode::Siblings)?;
        }

        #[test]
        fn merge_laws_lww(states in arb_states(ConflictMode::Lww)) {
            check_laws(&states, ConflictMode::Lww)?;
            for s in &states { prop_assert!(s.siblings().len() <= 1); }
        }

        /// Trimming the client context never supersedes a sibling the full
        /// context would not, and keeps every sibling the client saw covered.
        #[test]
        fn trimmed_context_only_supersedes_less(states in arb_states(ConflictMode::Siblings), max in 0usize..4) {
            let merged = states.iter().fold(Object::new(), |m, s| m.merged(s, ConflictMode::Siblings));
            let full = merged.client_context(usize::MAX);
            let trimmed = merged.client_context(max);
            prop_assert!(full.descends(&trimmed));
            for s in merged.siblings() { prop_assert!(trimmed.contains(s.dot)); }
        }

        /// The invariant the codec relies on holds after every operation.
        #[test]
        fn siblings_stay_covered_and_sorted(states in arb_states(ConflictMode::Siblings)) {
            for s in &states {
                prop_assert!(Object::from_parts(s.version_vector().clone(), s.siblings().to_vec()).as_ref() == Some(s));
            }
        }
    }
}
