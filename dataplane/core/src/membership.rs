//! Membership state spread by gossip.
//!
//! Each node owns one [`NodeState`] entry: only the node itself changes it,
//! bumping its heartbeat each gossip round. A restarted node bumps its
//! *generation*, so its new state wins over anything from its previous life.
//! Merging two views keeps, per node, the entry with the highest
//! `(generation, heartbeat)`, with the rest of the state as a deterministic
//! tie-break. That is a maximum under a total order, so merging is
//! commutative, associative and idempotent (tested below), and views
//! converge whatever the gossip order.
//!
//! Whether a peer is *down* is not gossiped: each node decides it for itself
//! from heartbeat arrival times with the φ-accrual detector (`phi.rs`).

use std::collections::BTreeMap;

use crate::ring::NodeId;

/// What a node says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeStatus {
    /// Started, receiving its partitions; not yet serving them.
    Joining,
    /// Serving.
    Up,
    /// Decommissioning: handing its partitions away.
    Leaving,
    /// Has handed everything away and left the ring.
    Left,
}

/// Where a node can be reached.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Addresses {
    /// Public HTTP API, e.g. `http://127.0.0.1:7000`.
    pub http: String,
    /// Internal RPC, e.g. `http://127.0.0.1:7100`.
    pub rpc: String,
}

/// Load figures a node reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Load {
    /// Keys stored.
    pub keys: u64,
    /// Bytes stored.
    pub bytes: u64,
}

/// One node's gossiped state. Field order matters: it is the merge order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeState {
    /// Incremented each time the node starts.
    pub generation: u64,
    /// Incremented by the node every gossip round.
    pub heartbeat: u64,
    /// What the node says it is doing.
    pub status: NodeStatus,
    /// The ring version the node has applied.
    pub ring_version: u64,
    /// Where to reach it.
    pub addresses: Addresses,
    /// How much it stores.
    pub load: Load,
    /// Its part in the ring change under way.
    pub handoff: crate::topology::HandoffProgress,
    /// Its failure zone (`--zone`), used when it joins.
    pub zone: Option<String>,
}

/// A node's view of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Membership {
    nodes: BTreeMap<NodeId, NodeState>,
}

impl Membership {
    /// An empty view.
    pub fn new() -> Self {
        Self::default()
    }

    /// The state of each known node.
    pub fn nodes(&self) -> &BTreeMap<NodeId, NodeState> {
        &self.nodes
    }

    /// The state of one node.
    pub fn get(&self, id: &NodeId) -> Option<&NodeState> {
        self.nodes.get(id)
    }

    /// Sets the local node's own state (only a node changes its own entry).
    pub fn set_local(&mut self, id: NodeId, state: NodeState) {
        self.nodes.insert(id, state);
    }

    /// Bumps the local node's heartbeat; returns false if it is unknown.
    pub fn beat(&mut self, id: &NodeId) -> bool {
        match self.nodes.get_mut(id) {
            Some(s) => {
                s.heartbeat += 1;
                true
            }
            None => false,
        }
    }

    /// Merges another view into this one. Returns the nodes whose entry
    /// changed, so the caller can feed their heartbeats to the detector.
    pub fn merge(&mut self, other: &Membership) -> Vec<NodeId> {
        let mut changed = Vec::new();
        for (id, theirs) in &other.nodes {
            match self.nodes.get_mut(id) {
                Some(ours) if *ours >= *theirs => {}
                Some(ours) => {
                    *ours = theirs.clone();
                    changed.push(id.clone());
                }
                None => {
                    self.nodes.insert(id.clone(), theirs.clone());
                    changed.push(id.clone());
                }
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn state(generation: u64, heartbeat: u64, status: NodeStatus) -> NodeState {
        NodeState {
            generation,
            heartbeat,
            status,
            ring_version: heartbeat / 3,
            addresses: Addresses {
                http: format!("h{generation}"),
                rpc: String::new(),
            },
            load: Load::default(),
            handoff: Default::default(),
            zone: None,
        }
    }

    #[test]
    fn newer_generation_beats_higher_heartbeat() {
        let id = NodeId::new("a").expect("valid");
        let mut old = Membership::new();
        old.set_local(id.clone(), state(1, 500, NodeStatus::Up));
        let mut restarted = Membership::new();
        restarted.set_local(id.clone(), state(2, 1, NodeStatus::Joining));
        assert_eq!(old.merge(&restarted), vec![id.clone()]);
        assert_eq!(old.get(&id).map(|s| s.generation), Some(2));
        assert!(
            old.merge(&restarted).is_empty(),
            "second merge changes nothing"
        );
        assert!(old.beat(&id));
        assert_eq!(old.get(&id).map(|s| s.heartbeat), Some(2));
    }

    fn arb_view() -> impl Strategy<Value = Membership> {
        let statuses = prop_oneof![
            Just(NodeStatus::Joining),
            Just(NodeStatus::Up),
            Just(NodeStatus::Leaving),
            Just(NodeStatus::Left)
        ];
        proptest::collection::vec((0u8..4, 0u64..3, 0u64..5, statuses), 0..6).prop_map(|entries| {
            let mut m = Membership::new();
            for (n, g, h, s) in entries {
                let id = NodeId::new(format!("n{n}")).expect("valid");
                let mut one = Membership::new();
                one.set_local(id, state(g, h, s));
                m.merge(&one);
            }
            m
        })
    }

    fn merged(a: &Membership, b: &Membership) -> Membership {
        let mut m = a.clone();
        m.merge(b);
        m
    }

    proptest! {
        #[test]
        fn merge_is_commutative(a in arb_view(), b in arb_view()) {
            prop_assert_eq!(merged(&a, &b), merged(&b, &a));
        }

        #[test]
        fn merge_is_associative(a in arb_view(), b in arb_view(), c in arb_view()) {
            prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
        }

        #[test]
        fn merge_is_idempotent(a in arb_view()) {
            prop_assert_eq!(merged(&a, &a), a);
        }
    }
}
