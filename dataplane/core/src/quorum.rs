//! Quorum trackers for reads and writes.
//!
//! A tracker is told which replicas a request went to and how each answered;
//! it says whether the quorum is [`QuorumOutcome::Pending`],
//! [`QuorumOutcome::Met`] or [`QuorumOutcome::Failed`] (can no longer be met
//! by the replicas still outstanding). Under a sloppy quorum the coordinator
//! adds a fallback target when a primary fails; an ack from a fallback is a
//! *hinted* ack, which counts toward the quorum as in Dynamo, and is reported
//! separately so callers can see how many primaries really have the write.

use std::collections::BTreeMap;

use crate::ring::NodeId;

/// Where a quorum stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuorumOutcome {
    /// Not enough answers yet, but enough replicas are outstanding.
    Pending,
    /// Enough successful answers.
    Met,
    /// Too many failures: the outstanding replicas cannot make up the quorum.
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Outstanding,
    Acked,
    Failed,
}

#[derive(Debug, Clone, Copy)]
struct Target {
    hinted: bool,
    state: State,
}

/// Counts answers toward a quorum of `required`.
#[derive(Debug, Clone)]
pub struct QuorumTracker {
    required: usize,
    targets: BTreeMap<NodeId, Target>,
}

/// A write quorum (W acks).
pub type WriteQuorum = QuorumTracker;
/// A read quorum (R replies).
pub type ReadQuorum = QuorumTracker;

impl QuorumTracker {
    /// A tracker that needs `required` successful answers.
    pub fn new(required: usize) -> Self {
        QuorumTracker {
            required,
            targets: BTreeMap::new(),
        }
    }

    /// The request went to `node`; `hinted` when it stands in for a primary.
    /// Adding a node twice has no effect.
    pub fn add_target(&mut self, node: NodeId, hinted: bool) {
        self.targets.entry(node).or_insert(Target {
            hinted,
            state: State::Outstanding,
        });
    }

    /// `node` answered successfully. Answers from unknown nodes, and repeated
    /// answers, are ignored.
    pub fn ack(&mut self, node: &NodeId) -> QuorumOutcome {
        self.settle(node, State::Acked)
    }

    /// `node` failed or timed out.
    pub fn fail(&mut self, node: &NodeId) -> QuorumOutcome {
        self.settle(node, State::Failed)
    }

    fn settle(&mut self, node: &NodeId, to: State) -> QuorumOutcome {
        if let Some(t) = self.targets.get_mut(node)
            && t.state == State::Outstanding
        {
            t.state = to;
        }
        self.outcome()
    }

    fn count(&self, state: State) -> usize {
        self.targets.values().filter(|t| t.state == state).count()
    }

    /// Where the quorum stands.
    pub fn outcome(&self) -> QuorumOutcome {
        let acks = self.count(State::Acked);
        if acks >= self.required {
            QuorumOutcome::Met
        } else if acks + self.count(State::Outstanding) < self.required {
            QuorumOutcome::Failed
        } else {
            QuorumOutcome::Pending
        }
    }

    /// Successful answers so far.
    pub fn acks(&self) -> usize {
        self.count(State::Acked)
    }

    /// Successful answers from fallbacks.
    pub fn hinted_acks(&self) -> usize {
        self.targets
            .values()
            .filter(|t| t.state == State::Acked && t.hinted)
            .count()
    }

    /// Answers required.
    pub fn required(&self) -> usize {
        self.required
    }

    /// Nodes that have not answered yet.
    pub fn outstanding(&self) -> impl Iterator<Item = &NodeId> {
        self.targets
            .iter()
            .filter(|(_, t)| t.state == State::Outstanding)
            .map(|(n, _)| n)
    }

    /// Nodes that failed.
    pub fn failed(&self) -> impl Iterator<Item = &NodeId> {
        self.targets
            .iter()
            .filter(|(_, t)| t.state == State::Failed)
            .map(|(n, _)| n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).expect("valid")
    }

    #[test]
    fn write_quorum_met_after_w_acks() {
        let mut q = WriteQuorum::new(2);
        for n in ["a", "b", "c"] {
            q.add_target(id(n), false);
        }
        assert_eq!(q.outcome(), QuorumOutcome::Pending);
        assert_eq!(q.ack(&id("a")), QuorumOutcome::Pending);
        assert_eq!(
            q.ack(&id("a")),
            QuorumOutcome::Pending,
            "a repeated ack counts once"
        );
        assert_eq!(q.ack(&id("b")), QuorumOutcome::Met);
        assert_eq!(
            q.fail(&id("c")),
            QuorumOutcome::Met,
            "late failures do not undo a quorum"
        );
    }

    #[test]
    fn fails_once_outstanding_cannot_reach_quorum_and_recovers_with_fallback() {
        let mut q = WriteQuorum::new(2);
        for n in ["a", "b", "c"] {
            q.add_target(id(n), false);
        }
        assert_eq!(q.fail(&id("a")), QuorumOutcome::Pending);
        assert_eq!(q.fail(&id("b")), QuorumOutcome::Failed);
        // The coordinator sends to a fallback instead: the quorum is reachable again.
        q.add_target(id("d"), true);
        assert_eq!(q.outcome(), QuorumOutcome::Pending);
        assert_eq!(q.ack(&id("c")), QuorumOutcome::Pending);
        assert_eq!(q.ack(&id("d")), QuorumOutcome::Met);
        assert_eq!(q.hinted_acks(), 1);
        assert_eq!(q.acks(), 2);
        assert_eq!(q.failed().count(), 2);
    }

    #[test]
    fn answers_from_strangers_are_ignored() {
        let mut q = ReadQuorum::new(1);
        q.add_target(id("a"), false);
        assert_eq!(q.ack(&id("zz")), QuorumOutcome::Pending);
        assert_eq!(q.outstanding().count(), 1);
        assert_eq!(q.ack(&id("a")), QuorumOutcome::Met);
    }

    #[test]
    fn required_zero_is_met_immediately_and_too_few_targets_fail() {
        assert_eq!(QuorumTracker::new(0).outcome(), QuorumOutcome::Met);
        let mut q = QuorumTracker::new(3);
        q.add_target(id("a"), false);
        assert_eq!(q.outcome(), QuorumOutcome::Failed);
    }
}
