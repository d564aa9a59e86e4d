//! Request coordination as pure state machines: which node coordinates,
//! where a write goes under a sloppy quorum, when a read has enough answers,
//! and whether a conditional write may proceed.
//!
//! The driver feeds in replica answers and failures; the machines answer
//! with [`WriteEffect`]s to carry out and a [`QuorumOutcome`]. They never
//! wait, sleep or send anything themselves.
//!
//! ## Who coordinates
//!
//! A write's new dot must come from a replica that holds the key (see the
//! counter invariant in `object.rs`), so the node that receives a request
//! coordinates it only if it is a primary for the key; otherwise it forwards
//! it to the first primary it believes up ([`choose_coordinator`]). When no
//! primary is up, the receiving node coordinates as a fallback. It has no
//! trustworthy history of its own dots for the key, so the driver gives
//! such a write a *fresh* actor id: one more version-vector entry, paid only
//! in that degraded case, instead of a risk of reusing a dot.
//!
//! ## Sloppy quorum
//!
//! A write goes to the N primaries. A primary believed down, or one that
//! fails, is replaced by the next fallback believed up, which stores the
//! write as a *hint* for that primary and counts toward W, as in Dynamo.
//! When no fallback is left (a cluster with no node outside the preference
//! list), the coordinator keeps the hint itself, so the dead node still
//! receives the write once back; such a hint does not count toward W.
//!
//! A *timeout* is different from a refusal: the replica may be alive and
//! overloaded, or cut off by a partition. Recruiting a stand-in would add
//! load to an overloaded cluster (ScyllaDB issue 8885), so a timed-out
//! replica is not replaced. The coordinator keeps a hint for it locally
//! instead: it costs no other node anything, it is bounded per target, and
//! it is replayed only once the target answers, at a throttled rate. So a
//! partition that shows itself as timeouts still loses nothing.

use std::collections::{BTreeMap, VecDeque};

use crate::ConflictMode;
use crate::object::Object;
use crate::quorum::{QuorumOutcome, QuorumTracker};
use crate::reconcile::{Reconciled, reconcile};
use crate::ring::{NodeId, PreferenceList};
use crate::version::VersionVector;

/// Who should coordinate a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Coordinator {
    /// This node coordinates, as a primary.
    Local,
    /// This node coordinates as a stand-in: no primary is up. The write
    /// needs a fresh actor id.
    LocalAsFallback,
    /// Forward the request to this primary.
    Forward(NodeId),
}

/// Chooses the coordinator of a write for a node that received it.
pub fn choose_coordinator(
    pl: &PreferenceList<'_>,
    me: &NodeId,
    is_up: impl Fn(&NodeId) -> bool,
) -> Coordinator {
    if pl.is_primary(me) {
        return Coordinator::Local;
    }
    match pl.primaries().iter().find(|m| is_up(&m.id)) {
        Some(m) => Coordinator::Forward(m.id.clone()),
        None => Coordinator::LocalAsFallback,
    }
}

/// Chooses the coordinator of a read-modify-write: the *first* primary
/// believed up, so that every node sends a key's read-modify-writes to the
/// same one and its per-key lock serialises them (plain writes may be
/// coordinated by any primary).
pub fn choose_rmw_coordinator(
    pl: &PreferenceList<'_>,
    me: &NodeId,
    is_up: impl Fn(&NodeId) -> bool,
) -> Coordinator {
    match pl.primaries().iter().find(|m| is_up(&m.id)) {
        Some(m) if &m.id == me => Coordinator::Local,
        Some(m) => Coordinator::Forward(m.id.clone()),
        None => Coordinator::LocalAsFallback,
    }
}

/// How a replica request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaFailure {
    /// Connection refused or reset, or the node is known down: replace it.
    Unreachable,
    /// No answer in time: keep a local hint, recruit no stand-in (see the
    /// module docs).
    Timeout,
    /// The replica answered with an error (for example storage failure).
    Failed,
}

/// Something the driver must do for a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteEffect {
    /// Send the new state to `to`. With `hint_for`, `to` stores it as a hint
    /// for that primary instead of as its own replica.
    Send {
        /// The target node (may be the coordinator itself).
        to: NodeId,
        /// The primary this write stands in for.
        hint_for: Option<NodeId>,
    },
    /// Store a hint on the coordinator itself for `for_node`. Does not count
    /// toward the quorum.
    StoreLocalHint {
        /// The primary the hint is for.
        for_node: NodeId,
    },
}

/// Coordinates one write.
#[derive(Debug, Clone)]
pub struct WriteCoordinator {
    me: NodeId,
    tracker: QuorumTracker,
    spare: VecDeque<NodeId>,
    /// Targets sent to, with the primary each stands in for.
    sent: BTreeMap<NodeId, Option<NodeId>>,
}

impl WriteCoordinator {
    /// Starts a write needing `w` acks. Returns the machine and the first
    /// effects: one send per target, including the coordinator itself.
    pub fn start(
        me: &NodeId,
        pl: &PreferenceList<'_>,
        w: usize,
        is_up: impl Fn(&NodeId) -> bool,
    ) -> (WriteCoordinator, Vec<WriteEffect>) {
        let up = |id: &NodeId| id == me || is_up(id);
        let mut spare: VecDeque<NodeId> = VecDeque::new();
        // A fallback coordinator is the first stand-in: it has the write already.
        if !pl.is_primary(me) {
            spare.push_back(me.clone());
        }
        spare.extend(
            pl.fallbacks()
                .iter()
                .map(|m| m.id.clone())
                .filter(|id| id != me && up(id)),
        );
        let mut c = WriteCoordinator {
            me: me.clone(),
            tracker: QuorumTracker::new(w),
            spare,
            sent: BTreeMap::new(),
        };
        let mut effects = Vec::new();
        for p in pl.primaries() {
            if up(&p.id) {
                effects.push(c.send(p.id.clone(), None));
            } else {
                effects.push(c.substitute(&p.id));
            }
        }
        (c, effects)
    }

    fn send(&mut self, to: NodeId, hint_for: Option<NodeId>) -> WriteEffect {
        self.tracker.add_target(to.clone(), hint_for.is_some());
        self.sent.insert(to.clone(), hint_for.clone());
        WriteEffect::Send { to, hint_for }
    }

    /// A stand-in for `primary`: the next spare fallback, else a local hint.
    fn substitute(&mut self, primary: &NodeId) -> WriteEffect {
        match self.spare.pop_front() {
            Some(f) => self.send(f, Some(primary.clone())),
            None => WriteEffect::StoreLocalHint {
                for_node: primary.clone(),
            },
        }
    }

    /// `from` acknowledged.
    pub fn on_ack(&mut self, from: &NodeId) -> QuorumOutcome {
        self.tracker.ack(from)
    }

    /// `from` failed. Returns the effects that replace it, if any.
    pub fn on_failure(&mut self, from: &NodeId, why: ReplicaFailure) -> Vec<WriteEffect> {
        let Some(hint_for) = self.sent.get(from).cloned() else {
            return Vec::new();
        };
        if self.tracker.outstanding().all(|n| n != from) {
            return Vec::new(); // already answered
        }
        self.tracker.fail(from);
        // The primary this target was (or stood in for) still needs the write.
        let primary = hint_for.unwrap_or_else(|| from.clone());
        match why {
            _ if from == &self.me => Vec::new(),
            ReplicaFailure::Timeout => vec![WriteEffect::StoreLocalHint { for_node: primary }],
            ReplicaFailure::Unreachable | ReplicaFailure::Failed => vec![self.substitute(&primary)],
        }
    }

    /// Where the write stands.
    pub fn outcome(&self) -> QuorumOutcome {
        self.tracker.outcome()
    }

    /// Acks so far, and how many came from stand-ins.
    pub fn acks(&self) -> (usize, usize) {
        (self.tracker.acks(), self.tracker.hinted_acks())
    }

    /// Acks required.
    pub fn required(&self) -> usize {
        self.tracker.required()
    }

    /// True while some target has not answered. The driver keeps feeding
    /// answers after the quorum is decided, so that a late failure still
    /// gets its hint.
    pub fn has_outstanding(&self) -> bool {
        self.tracker.outstanding().next().is_some()
    }
}

/// The nodes a read may ask, best first.
///
/// A read asks only R replicas, not all N as in the Dynamo paper: on a
/// cluster where every node is a replica, asking N costs every read N − R
/// extra replica reads (a third of a 3-node cluster's work at R = 2) for
/// the sake of repairing replicas that anti-entropy repairs anyway. The
/// others are *spares*: asked when an asked one fails, or when it is slow
/// (the driver calls [`ReadCoordinator::on_slow`] after a delay derived from
/// the replicas' round trips), so one slow or dead replica costs a read a
/// short delay, not its timeout. R + W > N still holds: any R distinct
/// primaries overlap every W of them.
///
/// Order: `me` first when it is a primary (its read costs no network), the
/// other primaries believed up, then fallbacks believed up (they hold hints
/// for the primaries believed down, at most one per such primary), and last
/// the primaries believed down (a node in back-off may well be back).
pub fn read_candidates(
    pl: &PreferenceList<'_>,
    me: &NodeId,
    is_up: impl Fn(&NodeId) -> bool,
) -> Vec<NodeId> {
    let primaries = pl.primaries();
    let (up, down): (Vec<&NodeId>, Vec<&NodeId>) = primaries
        .iter()
        .map(|m| &m.id)
        .partition(|id| *id == me || is_up(id));
    let mut out: Vec<NodeId> = Vec::with_capacity(primaries.len() + down.len());
    out.extend(up.iter().filter(|id| **id == me).map(|id| (*id).clone()));
    out.extend(up.iter().filter(|id| **id != me).map(|id| (*id).clone()));
    out.extend(
        pl.fallbacks()
            .iter()
            .map(|m| m.id.clone())
            .filter(|id| is_up(id))
            .take(down.len()),
    );
    out.extend(down.into_iter().cloned());
    out
}

/// Which replicas a read has asked and how they answered: asks R of its
/// candidates, a spare for each one that fails or is slow, and counts
/// replies until R have arrived. [`ReadCoordinator`] adds the replies'
/// states; range reads keep their pages themselves.
#[derive(Debug, Clone)]
pub struct ReadPlan {
    tracker: QuorumTracker,
    spares: VecDeque<NodeId>,
}

impl ReadPlan {
    /// Starts a read needing `r` replies from `candidates` (best first, as
    /// [`read_candidates`] orders them). Returns the plan and the nodes to
    /// ask now: the first `r` candidates (fewer when there are fewer; the
    /// outcome is then [`QuorumOutcome::Failed`]).
    pub fn start(candidates: Vec<NodeId>, r: usize) -> (Self, Vec<NodeId>) {
        let mut spares: VecDeque<NodeId> = candidates.into();
        let ask: Vec<NodeId> = spares.drain(..r.min(spares.len())).collect();
        let mut tracker = QuorumTracker::new(r);
        for t in &ask {
            tracker.add_target(t.clone(), false);
        }
        (ReadPlan { tracker, spares }, ask)
    }

    /// True when `node` was asked and has not answered yet.
    pub fn is_outstanding(&self, node: &NodeId) -> bool {
        self.tracker.outstanding().any(|n| n == node)
    }

    /// `from` answered.
    pub fn on_reply(&mut self, from: &NodeId) -> QuorumOutcome {
        self.tracker.ack(from)
    }

    /// `from` failed or timed out. Returns the spare to ask in its place
    /// when the read still needs one.
    pub fn on_failure(&mut self, from: &NodeId) -> (QuorumOutcome, Option<NodeId>) {
        self.tracker.fail(from);
        let short =
            self.tracker.acks() + self.tracker.outstanding().count() < self.tracker.required();
        // Not short: decided already, or an earlier spare (a slow
        // replica's) covers the failure.
        let spare = if short { self.ask_spare() } else { None };
        (self.tracker.outcome(), spare)
    }

    /// The replicas asked are slow to answer: returns one more to ask,
    /// while the read is undecided and a spare is left.
    pub fn on_slow(&mut self) -> Option<NodeId> {
        if self.tracker.outcome() != QuorumOutcome::Pending {
            return None;
        }
        self.ask_spare()
    }

    fn ask_spare(&mut self) -> Option<NodeId> {
        let next = self.spares.pop_front()?;
        self.tracker.add_target(next.clone(), false);
        Some(next)
    }

    /// True while a spare is left to ask.
    pub fn has_spares(&self) -> bool {
        !self.spares.is_empty()
    }

    /// The spare a slow or failed replica would bring in next.
    pub fn next_spare(&self) -> Option<&NodeId> {
        self.spares.front()
    }

    /// Where the read stands.
    pub fn outcome(&self) -> QuorumOutcome {
        self.tracker.outcome()
    }

    /// True when every node asked has answered or failed.
    pub fn all_answered(&self) -> bool {
        self.tracker.outstanding().next().is_none()
    }
}

/// Coordinates one read of a key: a [`ReadPlan`] and the states the
/// replicas answered with.
#[derive(Debug, Clone)]
pub struct ReadCoordinator {
    plan: ReadPlan,
    replies: Vec<(NodeId, Option<Object>)>,
    mode: ConflictMode,
}

impl ReadCoordinator {
    /// Starts a read needing `r` replies from `candidates` (see
    /// [`ReadPlan::start`]). Returns the machine and the nodes to ask now.
    pub fn start(candidates: Vec<NodeId>, r: usize, mode: ConflictMode) -> (Self, Vec<NodeId>) {
        let (plan, ask) = ReadPlan::start(candidates, r);
        let rc = ReadCoordinator {
            plan,
            replies: Vec::new(),
            mode,
        };
        (rc, ask)
    }

    /// A replica answered with its state (`None`: it has nothing).
    pub fn on_reply(&mut self, from: &NodeId, state: Option<Object>) -> QuorumOutcome {
        if self.plan.is_outstanding(from) {
            self.replies.push((from.clone(), state));
        }
        self.plan.on_reply(from)
    }

    /// See [`ReadPlan::on_failure`].
    pub fn on_failure(&mut self, from: &NodeId) -> (QuorumOutcome, Option<NodeId>) {
        self.plan.on_failure(from)
    }

    /// See [`ReadPlan::on_slow`].
    pub fn on_slow(&mut self) -> Option<NodeId> {
        self.plan.on_slow()
    }

    /// True while a spare is left to ask.
    pub fn has_spares(&self) -> bool {
        self.plan.has_spares()
    }

    /// See [`ReadPlan::next_spare`].
    pub fn next_spare(&self) -> Option<&NodeId> {
        self.plan.next_spare()
    }

    /// Where the read stands.
    pub fn outcome(&self) -> QuorumOutcome {
        self.plan.outcome()
    }

    /// True when every node asked has answered or failed.
    pub fn all_answered(&self) -> bool {
        self.plan.all_answered()
    }

    /// Replies so far.
    pub fn replies(&self) -> usize {
        self.replies.len()
    }

    /// The merged answer so far and the replicas to repair.
    pub fn result(&self) -> Reconciled<NodeId> {
        reconcile(&self.replies, self.mode)
    }
}

/// A precondition on a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// `If-Match: ctx`: the item's current causal history is exactly `ctx`.
    IfMatch(VersionVector),
    /// `If-None-Match: *`: the item has no live value.
    IfNoneMatch,
}

/// Why a conditional write was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConditionFailed {
    /// The item changed since the context was read (or never had it).
    #[error("the item has changed since the given context was read")]
    ContextMismatch,
    /// `If-None-Match: *`, but a live value exists.
    #[error("the item already exists")]
    Exists,
}

/// Checks a condition against the state read at quorum (`None`: the key
/// was never written). `max_context_entries` is the trimming the client's
/// context went through.
pub fn check_condition(
    cond: &Condition,
    current: Option<&Object>,
    max_context_entries: usize,
) -> Result<(), ConditionFailed> {
    match cond {
        Condition::IfNoneMatch => match current {
            Some(o) if !o.is_deleted() => Err(ConditionFailed::Exists),
            _ => Ok(()),
        },
        Condition::IfMatch(ctx) => {
            let now = current
                .map(|o| o.client_context(max_context_entries))
                .unwrap_or_default();
            if &now == ctx {
                Ok(())
            } else {
                Err(ConditionFailed::ContextMismatch)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{Member, Ring};
    use crate::{ActorId, Hlc, SiblingLimits, Write};
    use bytes::Bytes;
    use std::collections::BTreeSet;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).expect("valid")
    }

    fn ring(k: usize) -> Ring {
        Ring::new(
            6,
            3,
            (0..k).map(|i| Member::new(id(&format!("n{i}")))).collect(),
        )
        .expect("ring")
    }

    fn sends(effects: &[WriteEffect]) -> Vec<(String, Option<String>)> {
        effects
            .iter()
            .filter_map(|e| match e {
                WriteEffect::Send { to, hint_for } => {
                    Some((to.to_string(), hint_for.as_ref().map(ToString::to_string)))
                }
                WriteEffect::StoreLocalHint { .. } => None,
            })
            .collect()
    }

    #[test]
    fn primary_coordinates_others_forward_and_nobody_up_means_fallback() {
        let r = ring(5);
        let pl = r.preference_list(crate::PartitionId(0), 3);
        let primary = pl.primaries()[1].id.clone();
        let outsider = pl.fallbacks()[0].id.clone();
        assert_eq!(
            choose_coordinator(&pl, &primary, |_| true),
            Coordinator::Local
        );
        let first = pl.primaries()[0].id.clone();
        assert_eq!(
            choose_coordinator(&pl, &outsider, |_| true),
            Coordinator::Forward(first.clone())
        );
        let second = pl.primaries()[1].id.clone();
        assert_eq!(
            choose_coordinator(&pl, &outsider, |n| n != &first),
            Coordinator::Forward(second)
        );
        assert_eq!(
            choose_coordinator(&pl, &outsider, |_| false),
            Coordinator::LocalAsFallback
        );
    }

    #[test]
    fn read_modify_writes_go_to_the_first_primary_up() {
        let r = ring(5);
        let pl = r.preference_list(crate::PartitionId(0), 3);
        let first = pl.primaries()[0].id.clone();
        let second = pl.primaries()[1].id.clone();
        let outsider = pl.fallbacks()[0].id.clone();
        // Even another primary forwards to the first one...
        assert_eq!(
            choose_rmw_coordinator(&pl, &second, |_| true),
            Coordinator::Forward(first.clone())
        );
        assert_eq!(
            choose_rmw_coordinator(&pl, &first, |_| true),
            Coordinator::Local
        );
        // ...unless it is down; then the next takes over.
        assert_eq!(
            choose_rmw_coordinator(&pl, &second, |n| n != &first),
            Coordinator::Local
        );
        assert_eq!(
            choose_rmw_coordinator(&pl, &outsider, |n| n != &first),
            Coordinator::Forward(second)
        );
        assert_eq!(
            choose_rmw_coordinator(&pl, &outsider, |_| false),
            Coordinator::LocalAsFallback
        );
    }

    #[test]
    fn healthy_write_goes_to_the_n_primaries() {
        let r = ring(5);
        let pl = r.preference_list(crate::PartitionId(3), 3);
        let me = pl.primaries()[0].id.clone();
        let (mut c, effects) = WriteCoordinator::start(&me, &pl, 2, |_| true);
        let targets: BTreeSet<_> = sends(&effects).into_iter().collect();
        let primaries: BTreeSet<_> = pl
            .primaries()
            .iter()
            .map(|m| (m.id.to_string(), None))
            .collect();
        assert_eq!(targets, primaries);
        assert_eq!(c.on_ack(&me), QuorumOutcome::Pending);
        assert_eq!(c.on_ack(&pl.primaries()[2].id), QuorumOutcome::Met);
        assert_eq!(c.acks(), (2, 0));
    }

    #[test]
    fn down_primary_is_replaced_by_first_up_fallback_with_a_hint() {
        let r = ring(5);
        let pl = r.preference_list(crate::PartitionId(7), 3);
        let me = pl.primaries()[0].id.clone();
        let dead = pl.primaries()[2].id.clone();
        let fb = pl.fallbacks()[0].id.clone();
        let (mut c, effects) = WriteCoordinator::start(&me, &pl, 3, |n| n != &dead);
        assert!(sends(&effects).contains(&(fb.to_string(), Some(dead.to_string()))));
        c.on_ack(&me);
        c.on_ack(&pl.primaries()[1].id);
        assert_eq!(c.on_ack(&fb), QuorumOutcome::Met);
        assert_eq!(c.acks(), (3, 1));
    }

    #[test]
    fn unreachable_replica_is_replaced_but_a_timeout_only_leaves_a_local_hint() {
        let r = ring(5);
        let pl = r.preference_list(crate::PartitionId(9), 3);
        let me = pl.primaries()[0].id.clone();
        let (p1, p2) = (pl.primaries()[1].id.clone(), pl.primaries()[2].id.clone());
        let (mut c, _) = WriteCoordinator::start(&me, &pl, 2, |_| true);
        let e = c.on_failure(&p1, ReplicaFailure::Unreachable);
        assert_eq!(
            sends(&e),
            vec![(pl.fallbacks()[0].id.to_string(), Some(p1.to_string()))]
        );
        assert_eq!(
            c.on_failure(&p2, ReplicaFailure::Timeout),
            vec![WriteEffect::StoreLocalHint {
                for_node: p2.clone()
            }]
        );
        assert!(c.has_outstanding(), "the stand-in has not answered yet");
        assert!(
            c.on_failure(&p2, ReplicaFailure::Unreachable).is_empty(),
            "a second failure report is ignored"
        );
        c.on_ack(&me);
        assert_eq!(c.on_ack(&pl.fallbacks()[0].id), QuorumOutcome::Met);
        assert!(!c.has_outstanding());
    }

    /// A failure that arrives after the quorum is met still produces its
    /// hint: the write must reach that replica eventually.
    #[test]
    fn late_failure_after_quorum_still_hints() {
        let r = ring(3);
        let pl = r.preference_list(crate::PartitionId(5), 3);
        let me = pl.primaries()[0].id.clone();
        let late = pl.primaries()[2].id.clone();
        let (mut c, _) = WriteCoordinator::start(&me, &pl, 1, |_| true);
        assert_eq!(c.on_ack(&me), QuorumOutcome::Met);
        c.on_ack(&pl.primaries()[1].id);
        assert!(c.has_outstanding());
        assert_eq!(
            c.on_failure(&late, ReplicaFailure::Unreachable),
            vec![WriteEffect::StoreLocalHint {
                for_node: late.clone()
            }]
        );
        assert!(!c.has_outstanding());
    }

    #[test]
    fn without_spare_nodes_the_coordinator_keeps_the_hint() {
        // Three nodes, N=3: no node outside the preference list.
        let r = ring(3);
        let pl = r.preference_list(crate::PartitionId(1), 3);
        let me = pl.primaries()[0].id.clone();
        let dead = pl.primaries()[1].id.clone();
        let (mut c, effects) = WriteCoordinator::start(&me, &pl, 2, |n| n != &dead);
        assert!(effects.contains(&WriteEffect::StoreLocalHint {
            for_node: dead.clone()
        }));
        c.on_ack(&me);
        assert_eq!(
            c.on_ack(&pl.primaries()[2].id),
            QuorumOutcome::Met,
            "W=2 of the 2 live nodes"
        );
        // With W=3 the write cannot succeed: the local hint does not count.
        let (c3, _) = WriteCoordinator::start(&me, &pl, 3, |n| n != &dead);
        assert_eq!(c3.outcome(), QuorumOutcome::Failed);
    }

    #[test]
    fn a_fallback_coordinator_stands_in_first() {
        let r = ring(5);
        let pl = r.preference_list(crate::PartitionId(2), 3);
        let me = pl.fallbacks()[1].id.clone();
        let first = pl.primaries()[0].id.clone();
        let (_, effects) = WriteCoordinator::start(&me, &pl, 1, |n| n != &first);
        assert!(sends(&effects).contains(&(me.to_string(), Some(first.to_string()))));
    }

    #[test]
    fn read_candidates_put_me_first_and_fallbacks_only_for_down_primaries() {
        let r = ring(5);
        let pl = r.preference_list(crate::PartitionId(4), 3);
        let p: Vec<NodeId> = pl.primaries().iter().map(|m| m.id.clone()).collect();
        let f: Vec<NodeId> = pl.fallbacks().iter().map(|m| m.id.clone()).collect();
        // All up, asked from the second primary: itself first, no fallback.
        assert_eq!(
            read_candidates(&pl, &p[1], |_| true),
            vec![p[1].clone(), p[0].clone(), p[2].clone()]
        );
        // From outside the preference list: primaries in order.
        assert_eq!(read_candidates(&pl, &f[1], |_| true), p);
        // Two primaries down: the one up, one fallback per down primary,
        // then the down primaries as a last resort.
        let c = read_candidates(&pl, &f[1], |n| n != &p[0] && n != &p[1]);
        assert_eq!(
            c,
            vec![
                p[2].clone(),
                f[0].clone(),
                f[1].clone(),
                p[0].clone(),
                p[1].clone()
            ]
        );
    }

    fn one_value() -> Object {
        let mut o = Object::new();
        let blind = VersionVector::new();
        let w = Write {
            context: &blind,
            actor: ActorId(1),
            value: Some(Bytes::from_static(b"v")),
            timestamp: Hlc(1),
        };
        o.update(w, ConflictMode::Siblings, SiblingLimits::default())
            .expect("ok");
        o
    }

    #[test]
    fn read_coordinator_asks_r_meets_r_and_names_stale_replicas() {
        let (a, b, c) = (id("a"), id("b"), id("c"));
        let (mut rc, ask) = ReadCoordinator::start(
            vec![a.clone(), b.clone(), c.clone()],
            2,
            ConflictMode::Siblings,
        );
        assert_eq!(ask, vec![a.clone(), b.clone()]);
        assert_eq!(rc.next_spare(), Some(&c));
        assert_eq!(rc.on_reply(&a, Some(one_value())), QuorumOutcome::Pending);
        assert_eq!(rc.on_reply(&b, None), QuorumOutcome::Met);
        assert_eq!(rc.result().stale, vec![b.clone()]);
        assert!(rc.all_answered());
        assert_eq!(rc.on_slow(), None, "a decided read asks nobody more");
        // A reply from a node never asked is ignored.
        rc.on_reply(&c, Some(one_value()));
        assert_eq!(rc.replies(), 2);
    }

    #[test]
    fn a_failed_replica_is_replaced_by_a_spare_until_none_is_left() {
        let (a, b, c) = (id("a"), id("b"), id("c"));
        let (mut rc, ask) = ReadCoordinator::start(
            vec![a.clone(), b.clone(), c.clone()],
            2,
            ConflictMode::Siblings,
        );
        assert_eq!(ask.len(), 2);
        assert_eq!(rc.on_failure(&b), (QuorumOutcome::Pending, Some(c.clone())));
        assert!(!rc.has_spares());
        assert_eq!(rc.on_failure(&c), (QuorumOutcome::Failed, None));
        assert_eq!(rc.on_reply(&a, None), QuorumOutcome::Failed);
    }

    #[test]
    fn a_slow_replica_brings_in_a_spare_and_the_first_two_answers_win() {
        let (a, b, c) = (id("a"), id("b"), id("c"));
        let (mut rc, _) = ReadCoordinator::start(
            vec![a.clone(), b.clone(), c.clone()],
            2,
            ConflictMode::Siblings,
        );
        assert_eq!(rc.on_reply(&a, Some(one_value())), QuorumOutcome::Pending);
        assert_eq!(rc.on_slow(), Some(c.clone()));
        assert_eq!(rc.on_slow(), None, "no spare left");
        assert_eq!(rc.on_reply(&c, Some(one_value())), QuorumOutcome::Met);
        assert!(!rc.all_answered(), "b is still out");
        // b fails late: the read is decided, no spare is wanted.
        assert_eq!(rc.on_failure(&b), (QuorumOutcome::Met, None));
        assert!(rc.all_answered());
        assert!(rc.result().stale.is_empty());
    }

    #[test]
    fn a_failure_covered_by_a_speculative_spare_asks_nobody_more() {
        let (a, b, c, d) = (id("a"), id("b"), id("c"), id("d"));
        let (mut rc, _) = ReadCoordinator::start(
            vec![a.clone(), b.clone(), c.clone(), d.clone()],
            2,
            ConflictMode::Siblings,
        );
        assert_eq!(rc.on_slow(), Some(c.clone()));
        // a, b, c asked for two replies: b failing leaves a and c.
        assert_eq!(rc.on_failure(&b), (QuorumOutcome::Pending, None));
        assert!(rc.has_spares());
    }

    #[test]
    fn too_few_candidates_fail_at_once() {
        let (rc, ask) = ReadCoordinator::start(vec![id("a")], 2, ConflictMode::Siblings);
        assert_eq!(ask.len(), 1);
        assert_eq!(rc.outcome(), QuorumOutcome::Failed);
    }

    #[test]
    fn conditions() {
        let blind = VersionVector::new();
        let mut o = Object::new();
        let w = Write {
            context: &blind,
            actor: ActorId(1),
            value: Some(Bytes::from_static(b"v")),
            timestamp: Hlc(1),
        };
        o.update(w, ConflictMode::Siblings, SiblingLimits::default())
            .expect("ok");
        let ctx = o.client_context(128);
        assert_eq!(check_condition(&Condition::IfNoneMatch, None, 128), Ok(()));
        assert_eq!(
            check_condition(&Condition::IfNoneMatch, Some(&o), 128),
            Err(ConditionFailed::Exists)
        );
        assert_eq!(
            check_condition(&Condition::IfMatch(ctx.clone()), Some(&o), 128),
            Ok(())
        );
        assert_eq!(
            check_condition(&Condition::IfMatch(ctx.clone()), None, 128),
            Err(ConditionFailed::ContextMismatch)
        );
        let mut changed = o.clone();
        let w = Write {
            context: &ctx,
            actor: ActorId(2),
            value: None,
            timestamp: Hlc(2),
        };
        changed
            .update(w, ConflictMode::Siblings, SiblingLimits::default())
            .expect("ok");
        assert_eq!(
            check_condition(&Condition::IfMatch(ctx), Some(&changed), 128),
            Err(ConditionFailed::ContextMismatch)
        );
        assert_eq!(
            check_condition(&Condition::IfNoneMatch, Some(&changed), 128),
            Ok(()),
            "deleted counts as absent"
        );
    }
}
