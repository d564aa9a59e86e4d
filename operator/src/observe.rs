//! From what the APIs return to what [`crate::decide`] reads: the
//! StatefulSet, its pods and volume claims from Kubernetes, and the
//! cluster view of the data plane (`GET /admin/v1/cluster`). Pure, so the
//! mapping is tested on its own.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;

use crate::children::Names;
use crate::decide::{Change, DataPlane, NodeState};

/// The part of a node's `GET /admin/v1/cluster` the operator reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ClusterView {
    /// The ring.
    pub ring: RingView,
    /// The change under way.
    #[serde(default)]
    pub change: Option<ChangeView>,
    /// Every node known.
    pub nodes: Vec<NodeView>,
    /// The (N, R, W) settings in use.
    #[serde(default)]
    pub replication: Vec<Replication>,
}

/// The ring.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RingView {
    /// The topology's epoch.
    pub epoch: u64,
    /// Members of the current ring.
    pub members: Vec<String>,
    /// Members of the next ring, during a change.
    #[serde(default)]
    pub next_members: Option<Vec<String>>,
}

/// A change's progress.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ChangeView {
    /// Partitions received.
    pub partitions_done: u64,
    /// Partitions to receive, as reported so far.
    pub partitions_reported: u64,
}

/// A node.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NodeView {
    /// Its id (the pod's name).
    pub id: String,
    /// `up`, `down`, `joining`, `leaving`, `left` or `standby`.
    pub status: String,
    /// Its zone.
    #[serde(default)]
    pub zone: Option<String>,
    /// Bytes it stores, as gossiped.
    #[serde(default)]
    pub bytes: Option<u64>,
}

/// Tables sharing one (N, R, W).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Replication {
    /// Replicas.
    pub n: u32,
    /// Read quorum.
    pub r: u32,
    /// Write quorum.
    pub w: u32,
}

/// One entry of a node's `GET /admin/v1/hints`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HintBacklog {
    /// The node the hints are for.
    pub node: String,
    /// How many.
    pub hints: u64,
}

fn node_state(status: &str) -> Option<NodeState> {
    Some(match status {
        "standby" => NodeState::Standby,
        "up" => NodeState::Up,
        "down" => NodeState::Down,
        "joining" => NodeState::Joining,
        "leaving" => NodeState::Leaving,
        "left" => NodeState::Left,
        _ => return None,
    })
}

/// The data plane as [`crate::decide`] sees it. Nodes whose names are not
/// this cluster's pods are left out (and, if they are ring members, the
/// decision reports the ring as unexpected).
pub fn data_plane(names: &Names, view: &ClusterView, hints: &[HintBacklog]) -> DataPlane {
    let ordinals = |ids: &[String]| -> BTreeSet<u32> {
        ids.iter().filter_map(|id| names.ordinal(id)).collect()
    };
    let members = ordinals(&view.ring.members);
    // A member named otherwise keeps the ring from being 0..m, which the
    // decision refuses to act on; represent it by an ordinal it cannot be.
    let strangers = view
        .ring
        .members
        .iter()
        .filter(|id| names.ordinal(id).is_none())
        .count() as u32;
    let members: BTreeSet<u32> = members
        .into_iter()
        .chain((0..strangers).map(|i| u32::MAX - i))
        .collect();
    let nodes = view
        .nodes
        .iter()
        .filter_map(|n| Some((names.ordinal(&n.id)?, node_state(&n.status)?)))
        .collect();
    let change = view.ring.next_members.as_ref().map(|next| {
        let next = ordinals(next);
        Change {
            joining: next.difference(&members).copied().collect(),
            leaving: members.difference(&next).copied().collect(),
            progress: view
                .change
                .as_ref()
                .map_or((0, 0), |c| (c.partitions_done, c.partitions_reported)),
        }
    });
    let mut hint_backlog: BTreeMap<u32, u64> = BTreeMap::new();
    for h in hints {
        if let Some(k) = names.ordinal(&h.node) {
            *hint_backlog.entry(k).or_default() += h.hints;
        }
    }
    DataPlane {
        zone_to_place: None,
        members,
        nodes,
        change,
        hint_backlog,
        largest_n: view.replication.iter().map(|r| r.n).max().unwrap_or(0),
    }
}

/// The StatefulSet's replicas and template image.
pub fn statefulset(sts: &StatefulSet) -> (u32, String) {
    let spec = &sts.spec;
    let replicas = spec.replicas.map_or(1, |r| u32::try_from(r).unwrap_or(0));
    let image = spec
        .template
        .spec
        .as_ref()
        .and_then(|p| p.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    (replicas, image)
}

/// The cluster's pods, with readiness and how long they have not been
/// Ready at `now`.
pub fn pods(names: &Names, pods: &[Pod], now: Timestamp) -> Vec<crate::decide::Pod> {
    let mut out: Vec<crate::decide::Pod> = pods
        .iter()
        .filter_map(|p| {
            let ordinal = names.ordinal(p.metadata.name.as_deref()?)?;
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
            let is_ready = ready.is_some_and(|c| c.status == "True");
            // Not Ready since the condition last changed, else since the
            // pod was created (a pod that never reported).
            let since = ready
                .and_then(|c| c.last_transition_time.as_ref())
                .or(p.metadata.creation_timestamp.as_ref())
                .map(|t| t.0);
            let not_ready_secs = match (is_ready, since) {
                (false, Some(t)) => u64::try_from(now.duration_since(t).as_secs()).unwrap_or(0),
                _ => 0,
            };
            let image = p
                .spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .and_then(|c| c.image.clone())
                .unwrap_or_default();
            Some(crate::decide::Pod {
                ordinal,
                ready: is_ready && p.metadata.deletion_timestamp.is_none(),
                not_ready_secs,
                image,
            })
        })
        .collect();
    out.sort_by_key(|p| p.ordinal);
    out
}

/// The ordinals that have a volume claim.
pub fn claims(names: &Names, claims: &[PersistentVolumeClaim]) -> BTreeSet<u32> {
    claims
        .iter()
        .filter_map(|c| names.claim_ordinal(c.metadata.name.as_deref()?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names() -> Names {
        Names {
            cluster: "prod".into(),
            peers: "prod-peers".into(),
            secret: "prod-admin".into(),
        }
    }

    #[test]
    fn a_change_under_way_maps_to_joining_and_progress() {
        let view: ClusterView = serde_json::from_value(json!({
            "node": "prod-0",
            "ring": { "epoch": 7, "version": 3, "partitions": 1024,
                      "members": ["prod-0", "prod-1", "prod-2"],
                      "next_members": ["prod-0", "prod-1", "prod-2", "prod-3"] },
            "change": { "partitions_done": 10, "partitions_reported": 256,
                        "partition_replicas_to_move": 768 },
            "nodes": [
                { "id": "prod-0", "status": "up", "zone": "a" },
                { "id": "prod-1", "status": "up" },
                { "id": "prod-2", "status": "down" },
                { "id": "prod-3", "status": "joining" },
                { "id": "other-9", "status": "up" },
                { "id": "prod-4", "status": "weird" },
            ],
            "replication": [ { "n": 3, "r": 2, "w": 2, "tables": 4 }, { "n": 5, "r": 3, "w": 3, "tables": 1 } ],
        }))
        .expect("view");
        let hints = [
            HintBacklog {
                node: "prod-2".into(),
                hints: 5,
            },
            HintBacklog {
                node: "prod-2".into(),
                hints: 2,
            },
            HintBacklog {
                node: "gone".into(),
                hints: 9,
            },
        ];
        let d = data_plane(&names(), &view, &hints);
        assert_eq!(d.members, BTreeSet::from([0, 1, 2]));
        assert_eq!(d.nodes.get(&2), Some(&NodeState::Down));
        assert_eq!(d.nodes.get(&3), Some(&NodeState::Joining));
        assert_eq!(
            d.nodes.len(),
            4,
            "the stranger and the unknown status are left out"
        );
        let c = d.change.expect("change");
        assert_eq!(
            (c.joining, c.leaving, c.progress),
            (vec![3], vec![], (10, 256))
        );
        assert_eq!(d.hint_backlog, BTreeMap::from([(2, 7)]));
        assert_eq!(d.largest_n, 5);
    }

    #[test]
    fn a_stranger_in_the_ring_breaks_the_ordinal_rule() {
        let view: ClusterView = serde_json::from_value(json!({
            "ring": { "epoch": 1, "members": ["prod-0", "intruder"] },
            "nodes": [],
        }))
        .expect("view");
        let d = data_plane(&names(), &view, &[]);
        assert_eq!(d.members.len(), 2);
        assert!(d.members.iter().copied().ne(0..2));
    }

    #[test]
    fn pods_report_readiness_and_time_not_ready() {
        let now: Timestamp = "2026-12-06T12:00:00Z".parse().expect("time");
        let pods: Vec<Pod> = serde_json::from_value(json!([
            { "metadata": { "name": "prod-1", "creationTimestamp": "2026-12-06T11:00:00Z" },
              "spec": { "containers": [ { "name": "dyno", "image": "dyno:2" } ] },
              "status": { "conditions": [ { "type": "Ready", "status": "False",
                                            "lastTransitionTime": "2026-12-06T11:58:20Z" } ] } },
            { "metadata": { "name": "prod-0", "creationTimestamp": "2026-12-06T11:00:00Z" },
              "spec": { "containers": [ { "name": "dyno", "image": "dyno:1" } ] },
              "status": { "conditions": [ { "type": "Ready", "status": "True" } ] } },
            { "metadata": { "name": "prod-2", "creationTimestamp": "2026-12-06T11:59:00Z" },
              "spec": { "containers": [ { "name": "dyno", "image": "dyno:1" } ] } },
            { "metadata": { "name": "unrelated-0" } },
        ]))
        .expect("pods");
        let p = super::pods(&names(), &pods, now);
        assert_eq!(p.len(), 3);
        assert_eq!(
            (p[0].ordinal, p[0].ready, p[0].image.as_str()),
            (0, true, "dyno:1")
        );
        assert_eq!((p[1].ready, p[1].not_ready_secs), (false, 100));
        assert_eq!(
            (p[2].ready, p[2].not_ready_secs),
            (false, 60),
            "never reported: since creation"
        );
    }

    #[test]
    fn claims_and_statefulset() {
        let claims: Vec<PersistentVolumeClaim> = serde_json::from_value(json!([
            { "metadata": { "name": "data-prod-0" } },
            { "metadata": { "name": "data-prod-3" } },
            { "metadata": { "name": "data-other-1" } },
        ]))
        .expect("claims");
        assert_eq!(super::claims(&names(), &claims), BTreeSet::from([0, 3]));
        let sts: StatefulSet = serde_json::from_value(json!({
            "metadata": { "name": "prod" },
            "spec": { "replicas": 4, "serviceName": "prod-peers", "selector": {},
                      "template": { "spec": { "containers": [ { "name": "dyno", "image": "dyno:9" } ] } } },
        }))
        .expect("sts");
        assert_eq!(statefulset(&sts), (4, "dyno:9".to_owned()));
    }
}
