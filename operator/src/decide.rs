//! The operator's decisions: what to do next for one `DynoCluster`, as a
//! pure function of what it asks for and what is observed.
//!
//! **Identity.** Node `k` is pod ordinal `k` of the StatefulSet. The ring's
//! members are always the ordinals `0..m`: the cluster grows at the top
//! and shrinks from the top, because a StatefulSet adds and removes its
//! highest ordinal.
//!
//! **One step per pass, in this order of priority:**
//! 1. Create the children when the StatefulSet is missing.
//! 2. A ring change under way: abort it when a pod has been not-Ready for
//!    longer than the threshold, else wait for it to commit.
//! 3. Node 0 formed the ring alone and without a zone: place its
//!    machine's zone while it is the only member (this moves nothing).
//! 4. Finish a scale-down: a pod above the ring whose node has `left`, or
//!    that is not wanted any more (it never joined: no data), is shrunk
//!    away; then its volume claim is deleted unless the policy keeps it.
//! 5. Scale down: decommission the highest member (never below the largest
//!    table's N; the StatefulSet shrinks only after the node has `left`).
//! 6. Scale up: delete a kept claim of the node about to return (its old
//!    data would bring back stale versions), grow the StatefulSet by one,
//!    wait until the pod is Ready and seen in gossip as `standby`, then
//!    join it.
//! 7. Roll out a new image: update the template (pods restart only when
//!    deleted), then restart the highest ordinal still on the old image,
//!    only when every pod is Ready, every member is up, no change is under
//!    way and no hints are waiting for any member; none while the
//!    upgrade is paused.
//!
//! Every join or decommission (5, 6) and every restart (7) first requires every
//! member up: a change while a replica is down would leave partitions with
//! fewer copies than N during the handoff.

use std::collections::{BTreeMap, BTreeSet};

/// What the resource asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Nodes wanted.
    pub replicas: u32,
    /// The container image.
    pub image: String,
    /// Keep a removed node's volume claim (true) or delete it.
    pub keep_claims: bool,
    /// How long a pod may stay not-Ready during a ring change before the
    /// change is aborted, seconds.
    pub abort_after_secs: u64,
    /// Restart no pod for an image change (the template still changes,
    /// so pods that restart for other reasons come back on the new image).
    pub upgrade_paused: bool,
}

/// A node as the data plane's cluster view shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Running, known by gossip, not in the ring.
    Standby,
    /// A ring member believed up.
    Up,
    /// A ring member believed down.
    Down,
    /// Being added by the change under way.
    Joining,
    /// Being removed by the change under way.
    Leaving,
    /// Removed; its data has been handed off.
    Left,
}

/// A ring change under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Nodes it adds.
    pub joining: Vec<u32>,
    /// Nodes it removes.
    pub leaving: Vec<u32>,
    /// Partitions received so far, of those to receive.
    pub progress: (u64, u64),
}

/// The data plane, as one of its nodes reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataPlane {
    /// The current ring's members.
    pub members: BTreeSet<u32>,
    /// Every node gossip knows, by ordinal.
    pub nodes: BTreeMap<u32, NodeState>,
    /// The change under way.
    pub change: Option<Change>,
    /// Hints held for each node, summed over the cluster.
    pub hint_backlog: BTreeMap<u32, u64>,
    /// The largest N among the cluster's tables (0 without tables).
    pub largest_n: u32,
    /// The zone of the machine of the ring's only member, when that member
    /// has none in the ring (node 0 forms the ring before any zone is
    /// known).
    pub zone_to_place: Option<String>,
}

/// A pod of the StatefulSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// Its ordinal.
    pub ordinal: u32,
    /// Its Ready condition.
    pub ready: bool,
    /// Seconds since it last became not-Ready (when not Ready).
    pub not_ready_secs: u64,
    /// The image it runs.
    pub image: String,
}

/// What the operator observes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observed {
    /// The StatefulSet's replicas and template image, if it exists.
    pub statefulset: Option<(u32, String)>,
    /// Its pods.
    pub pods: Vec<Pod>,
    /// The ordinals that have a volume claim.
    pub claims: BTreeSet<u32>,
    /// The data plane's view, when a node answered.
    pub data_plane: Option<DataPlane>,
}

/// One step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Apply the children (StatefulSet, Services, PodDisruptionBudget,
    /// Secret) with this many replicas and this image.
    Apply {
        /// StatefulSet replicas.
        replicas: u32,
        /// Template image.
        image: String,
    },
    /// Ask the data plane to join node `k`.
    Join(u32),
    /// Ask the data plane to decommission node `k`.
    Decommission(u32),
    /// Abort the change under way.
    Abort {
        /// Why, for the event and the condition.
        reason: String,
    },
    /// Delete pod `k` so that it restarts on the template's image.
    Restart(u32),
    /// Delete node `k`'s volume claim.
    DeleteClaim(u32),
    /// Place this zone on node `k`, the ring's only member (nothing moves).
    SetZone(u32, String),
}

/// A condition's state and the reason a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// True or false.
    pub status: bool,
    /// A CamelCase reason.
    pub reason: &'static str,
    /// A sentence.
    pub message: String,
}

impl Condition {
    fn new(status: bool, reason: &'static str, message: impl Into<String>) -> Condition {
        Condition {
            status,
            reason,
            message: message.into(),
        }
    }
}

/// The outcome of one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The step to take, if any.
    pub action: Option<Action>,
    /// The cluster serves: the StatefulSet exists and the ring has members.
    pub available: Condition,
    /// Something is being done or waited for.
    pub progressing: Condition,
    /// Something is wrong or refused.
    pub degraded: Condition,
}

/// What the pass found to do, before the conditions are filled in.
struct Step {
    action: Option<Action>,
    progressing: Option<(&'static str, String)>,
    degraded: Option<(&'static str, String)>,
}

impl Step {
    fn act(action: Action, why: impl Into<String>) -> Step {
        Step {
            action: Some(action),
            progressing: Some(("Acting", why.into())),
            degraded: None,
        }
    }

    fn wait(reason: &'static str, why: impl Into<String>) -> Step {
        Step {
            action: None,
            progressing: Some((reason, why.into())),
            degraded: None,
        }
    }

    fn stuck(reason: &'static str, why: impl Into<String>) -> Step {
        Step {
            action: None,
            progressing: None,
            degraded: Some((reason, why.into())),
        }
    }

    fn idle() -> Step {
        Step {
            action: None,
            progressing: None,
            degraded: None,
        }
    }
}

/// Decides the next step for `spec` given `observed`.
pub fn decide(spec: &Spec, observed: &Observed) -> Decision {
    let mut step = next_step(spec, observed);
    // A refusal that does not block the other work (scaling below N while
    // an upgrade proceeds) still shows.
    if step.degraded.is_none() {
        step.degraded = below_n(spec, observed).map(|m| ("BelowLargestN", m));
    }
    let members = observed.data_plane.as_ref().map_or(0, |d| d.members.len());
    let available = if observed.statefulset.is_some() && members > 0 {
        Condition::new(true, "Serving", format!("{members} nodes in the ring"))
    } else if observed.statefulset.is_none() {
        Condition::new(false, "Creating", "the StatefulSet does not exist yet")
    } else {
        Condition::new(false, "NoDataPlane", "no node of the cluster answers")
    };
    let progressing = match step.progressing {
        Some((reason, m)) => Condition::new(true, reason, m),
        None => Condition::new(false, "Settled", "nothing to do"),
    };
    let degraded = match step.degraded {
        Some((reason, m)) => Condition::new(true, reason, m),
        None => Condition::new(false, "Healthy", "every node is up"),
    };
    Decision {
        action: step.action,
        available,
        progressing,
        degraded,
    }
}

/// The refusal to go below the largest table's N, if the spec asks it.
fn below_n(spec: &Spec, observed: &Observed) -> Option<String> {
    let d = observed.data_plane.as_ref()?;
    (spec.replicas < d.largest_n).then(|| {
        format!(
            "replicas {} is below the largest table's N = {}: the cluster keeps {} nodes",
            spec.replicas,
            d.largest_n,
            d.members.len().max(d.largest_n as usize)
        )
    })
}

fn next_step(spec: &Spec, o: &Observed) -> Step {
    // 1. The children.
    let Some((sts_replicas, sts_image)) = &o.statefulset else {
        return Step::act(
            Action::Apply {
                replicas: spec.replicas.max(1),
                image: spec.image.clone(),
            },
            "creating the StatefulSet and its Services",
        );
    };
    let sts_replicas = *sts_replicas;
    let Some(d) = &o.data_plane else {
        return Step::stuck("NoDataPlane", "no node of the cluster answers");
    };
    let pod = |k: u32| o.pods.iter().find(|p| p.ordinal == k);
    let state = |k: u32| d.nodes.get(&k).copied();

    // 2. A change under way: follow it, or abort it when a pod is stuck.
    if let Some(c) = &d.change {
        if let Some(p) = o
            .pods
            .iter()
            .find(|p| !p.ready && p.not_ready_secs >= spec.abort_after_secs)
        {
            return Step::act(
                Action::Abort {
                    reason: format!(
                        "pod {} has not been Ready for {} s during the change",
                        p.ordinal, p.not_ready_secs
                    ),
                },
                "aborting the change",
            );
        }
        let (done, total) = c.progress;
        return Step::wait(
            "ChangeInProgress",
            format!(
                "joining {:?}, removing {:?}: {done} of {total} partitions received",
                c.joining, c.leaving
            ),
        );
    }
    let m = d.members.len() as u32;
    // The ring must be 0..m for the top-down rules to hold.
    if d.members.iter().copied().ne(0..m) {
        return Step::stuck(
            "UnexpectedMembers",
            format!(
                "the ring's members {:?} are not the ordinals 0..{m}; fix the ring by hand",
                d.members
            ),
        );
    }

    // Node 0 formed the ring without a zone: place its machine's zone
    // before any other node joins, while that moves nothing.
    if m == 1
        && let Some(z) = &d.zone_to_place
    {
        return Step::act(
            Action::SetZone(0, z.clone()),
            format!("placing zone {z} on node 0, the ring's only member"),
        );
    }

    let target = spec.replicas.max(d.largest_n).max(1);

    // 4. Finish a scale-down: remove a pod above the ring whose node has
    //    left, or that is no longer wanted (it never joined, so it holds
    //    no data), then delete its claim.
    if sts_replicas > m {
        let top = sts_replicas - 1;
        if state(top) == Some(NodeState::Left) || top >= target {
            return Step::act(
                Action::Apply {
                    replicas: top,
                    image: sts_image.clone(),
                },
                format!("removing pod {top}, which is not in the ring"),
            );
        }
    }
    if !spec.keep_claims
        && let Some(&k) = o.claims.iter().find(|&&k| k >= sts_replicas)
        && pod(k).is_none()
    {
        return Step::act(
            Action::DeleteClaim(k),
            format!("deleting the volume claim of removed node {k}"),
        );
    }

    let all_up = d.members.iter().all(|k| state(*k) == Some(NodeState::Up));

    // 5. Scale down.
    if m > target {
        if !all_up {
            return Step::stuck(
                "MemberDown",
                "waiting for every node to be up before removing one",
            );
        }
        let top = m - 1;
        return Step::act(
            Action::Decommission(top),
            format!("removing node {top}: {m} nodes, {target} wanted"),
        );
    }

    // 6. Scale up.
    if m < target {
        let k = m;
        if sts_replicas <= k {
            // Under `volumePolicy: keep` a removed node's claim stays. Its
            // data was handed off when it left; started on it again, the
            // node would bring back stale versions (and, past the tombstone
            // grace, deleted items): it starts afresh instead.
            if o.claims.contains(&k) {
                return Step::act(
                    Action::DeleteClaim(k),
                    format!(
                        "deleting the kept volume claim of node {k}, removed earlier: it starts afresh"
                    ),
                );
            }
            return Step::act(
                Action::Apply {
                    replicas: k + 1,
                    image: spec.image.clone(),
                },
                format!("starting node {k}: {m} nodes, {target} wanted"),
            );
        }
        if !all_up {
            return Step::stuck(
                "MemberDown",
                "waiting for every node to be up before adding one",
            );
        }
        let ready = pod(k).is_some_and(|p| p.ready);
        return match (ready, state(k)) {
            (true, Some(NodeState::Standby)) => {
                Step::act(Action::Join(k), format!("joining node {k}"))
            }
            _ => Step::wait(
                "NodeStarting",
                format!("waiting for node {k} to be Ready and in gossip as standby"),
            ),
        };
    }

    // 7. A new image.
    if *sts_image != spec.image {
        return Step::act(
            Action::Apply {
                replicas: sts_replicas,
                image: spec.image.clone(),
            },
            format!("rolling out {}", spec.image),
        );
    }
    let stale: Vec<u32> = o
        .pods
        .iter()
        .filter(|p| p.image != spec.image)
        .map(|p| p.ordinal)
        .collect();
    if let Some(&k) = stale.iter().max() {
        if spec.upgrade_paused {
            return Step::wait(
                "UpgradePaused",
                format!(
                    "{} pods still run an older image; the upgrade is paused",
                    stale.len()
                ),
            );
        }
        if let Some(p) = o.pods.iter().find(|p| !p.ready) {
            return Step::wait(
                "Upgrading",
                format!("waiting for pod {} to be Ready", p.ordinal),
            );
        }
        if !all_up {
            return Step::wait("Upgrading", "waiting for every node to be up in gossip");
        }
        // Hints for nodes no longer in the ring expire on their own.
        if let Some((n, h)) = d
            .hint_backlog
            .iter()
            .find(|(n, h)| **h > 0 && d.members.contains(n))
        {
            return Step::wait(
                "Upgrading",
                format!("waiting for {h} hints for node {n} to be delivered"),
            );
        }
        return Step::act(
            Action::Restart(k),
            format!("restarting node {k} on {}", spec.image),
        );
    }
    if !all_up {
        return Step::stuck("MemberDown", "a node of the ring is down");
    }
    Step::idle()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(replicas: u32) -> Spec {
        Spec {
            replicas,
            image: "dyno:2".into(),
            keep_claims: false,
            abort_after_secs: 300,
            upgrade_paused: false,
        }
    }

    /// A settled cluster of `m` nodes on `image`.
    fn settled(m: u32, image: &str) -> Observed {
        Observed {
            statefulset: Some((m, image.into())),
            pods: (0..m)
                .map(|k| Pod {
                    ordinal: k,
                    ready: true,
                    not_ready_secs: 0,
                    image: image.into(),
                })
                .collect(),
            claims: (0..m).collect(),
            data_plane: Some(DataPlane {
                members: (0..m).collect(),
                nodes: (0..m).map(|k| (k, NodeState::Up)).collect(),
                change: None,
                hint_backlog: BTreeMap::new(),
                largest_n: 3,
                zone_to_place: None,
            }),
        }
    }

    fn dp(o: &mut Observed) -> &mut DataPlane {
        o.data_plane.get_or_insert_with(DataPlane::default)
    }

    #[test]
    fn a_missing_statefulset_is_created() {
        let d = decide(&spec(3), &Observed::default());
        assert_eq!(
            d.action,
            Some(Action::Apply {
                replicas: 3,
                image: "dyno:2".into()
            })
        );
        assert!(!d.available.status);
    }

    #[test]
    fn a_settled_cluster_is_left_alone() {
        let d = decide(&spec(3), &settled(3, "dyno:2"));
        assert_eq!(d.action, None);
        assert!(d.available.status && !d.progressing.status && !d.degraded.status);
    }

    #[test]
    fn scale_up_starts_one_pod_then_joins_it_once_standby() {
        let mut o = settled(3, "dyno:2");
        let d = decide(&spec(5), &o);
        assert_eq!(
            d.action,
            Some(Action::Apply {
                replicas: 4,
                image: "dyno:2".into()
            })
        );
        o.statefulset = Some((4, "dyno:2".into()));
        o.pods.push(Pod {
            ordinal: 3,
            ready: false,
            not_ready_secs: 1,
            image: "dyno:2".into(),
        });
        assert_eq!(decide(&spec(5), &o).action, None, "not Ready yet");
        o.pods[3].ready = true;
        assert_eq!(decide(&spec(5), &o).action, None, "not in gossip yet");
        dp(&mut o).nodes.insert(3, NodeState::Standby);
        assert_eq!(decide(&spec(5), &o).action, Some(Action::Join(3)));
    }

    #[test]
    fn scale_down_decommissions_then_shrinks_then_deletes_the_claim() {
        let mut o = settled(4, "dyno:2");
        assert_eq!(decide(&spec(3), &o).action, Some(Action::Decommission(3)));
        dp(&mut o).members.remove(&3);
        dp(&mut o).nodes.insert(3, NodeState::Left);
        assert_eq!(
            decide(&spec(3), &o).action,
            Some(Action::Apply {
                replicas: 3,
                image: "dyno:2".into()
            })
        );
        o.statefulset = Some((3, "dyno:2".into()));
        o.pods.retain(|p| p.ordinal < 3);
        assert_eq!(decide(&spec(3), &o).action, Some(Action::DeleteClaim(3)));
        let keep = Spec {
            keep_claims: true,
            ..spec(3)
        };
        assert_eq!(decide(&keep, &o).action, None);
    }

    #[test]
    fn never_below_the_largest_n() {
        let o = settled(3, "dyno:2");
        let d = decide(&spec(2), &o);
        assert_eq!(d.action, None);
        assert!(d.degraded.status && d.degraded.reason == "BelowLargestN");
        assert!(
            d.degraded.message.contains("N = 3"),
            "{}",
            d.degraded.message
        );
    }

    #[test]
    fn a_change_under_way_is_followed_or_aborted() {
        let mut o = settled(3, "dyno:2");
        dp(&mut o).change = Some(Change {
            joining: vec![3],
            leaving: vec![],
            progress: (10, 100),
        });
        let d = decide(&spec(4), &o);
        assert_eq!(d.action, None);
        assert!(d.progressing.message.contains("10 of 100"));
        o.pods[1].ready = false;
        o.pods[1].not_ready_secs = 299;
        assert_eq!(decide(&spec(4), &o).action, None);
        o.pods[1].not_ready_secs = 300;
        assert!(matches!(
            decide(&spec(4), &o).action,
            Some(Action::Abort { .. })
        ));
    }

    #[test]
    fn the_first_nodes_zone_is_placed_before_a_second_joins() {
        let mut o = settled(1, "dyno:2");
        dp(&mut o).zone_to_place = Some("z-a".into());
        assert_eq!(
            decide(&spec(3), &o).action,
            Some(Action::SetZone(0, "z-a".into()))
        );
        // Once placed (observe no longer reports it), scaling proceeds.
        dp(&mut o).zone_to_place = None;
        assert!(matches!(
            decide(&spec(3), &o).action,
            Some(Action::Apply { replicas: 2, .. })
        ));
    }

    #[test]
    fn a_kept_claim_of_a_removed_node_is_deleted_before_it_returns() {
        // Scaled 4 -> 3 with volumePolicy keep: node 3 left, its claim
        // stayed. Scaling back to 4 starts it on a fresh volume.
        let mut o = settled(3, "dyno:2");
        o.claims.insert(3);
        dp(&mut o).nodes.insert(3, NodeState::Down);
        let keep = Spec {
            keep_claims: true,
            ..spec(4)
        };
        assert_eq!(decide(&keep, &o).action, Some(Action::DeleteClaim(3)));
        o.claims.remove(&3);
        assert_eq!(
            decide(&keep, &o).action,
            Some(Action::Apply {
                replicas: 4,
                image: "dyno:2".into()
            })
        );
        // Kept while nobody asks for the node back.
        o.claims.insert(3);
        assert_eq!(
            decide(
                &Spec {
                    replicas: 3,
                    ..keep
                },
                &o
            )
            .action,
            None
        );
    }

    #[test]
    fn upgrades_go_top_down_and_wait_for_hints() {
        let mut o = settled(3, "dyno:1");
        assert_eq!(
            decide(&spec(3), &o).action,
            Some(Action::Apply {
                replicas: 3,
                image: "dyno:2".into()
            })
        );
        o.statefulset = Some((3, "dyno:2".into()));
        assert_eq!(decide(&spec(3), &o).action, Some(Action::Restart(2)));
        o.pods[2].image = "dyno:2".into();
        dp(&mut o).hint_backlog.insert(2, 5);
        assert_eq!(decide(&spec(3), &o).action, None, "hints for node 2");
        dp(&mut o).hint_backlog.insert(2, 0);
        assert_eq!(decide(&spec(3), &o).action, Some(Action::Restart(1)));
    }

    #[test]
    fn a_paused_upgrade_changes_the_template_but_restarts_nothing() {
        let mut o = settled(3, "dyno:1");
        let paused = Spec {
            upgrade_paused: true,
            ..spec(3)
        };
        assert_eq!(
            decide(&paused, &o).action,
            Some(Action::Apply {
                replicas: 3,
                image: "dyno:2".into()
            })
        );
        o.statefulset = Some((3, "dyno:2".into()));
        let d = decide(&paused, &o);
        assert_eq!(d.action, None);
        assert_eq!(d.progressing.reason, "UpgradePaused");
        // Ring changes still proceed while paused.
        assert_eq!(
            decide(
                &Spec {
                    replicas: 4,
                    ..paused.clone()
                },
                &o
            )
            .action,
            Some(Action::Apply {
                replicas: 4,
                image: "dyno:2".into()
            })
        );
        assert_eq!(decide(&spec(3), &o).action, Some(Action::Restart(2)));
    }

    #[test]
    fn no_change_begins_while_a_member_is_down() {
        let mut o = settled(3, "dyno:2");
        dp(&mut o).nodes.insert(1, NodeState::Down);
        let d = decide(&spec(4), &o);
        assert_eq!(
            d.action,
            Some(Action::Apply {
                replicas: 4,
                image: "dyno:2".into()
            }),
            "starting a pod is harmless"
        );
        o.statefulset = Some((4, "dyno:2".into()));
        o.pods.push(Pod {
            ordinal: 3,
            ready: true,
            not_ready_secs: 0,
            image: "dyno:2".into(),
        });
        dp(&mut o).nodes.insert(3, NodeState::Standby);
        let d = decide(&spec(4), &o);
        assert_eq!(d.action, None);
        assert_eq!(d.degraded.reason, "MemberDown");
        assert_eq!(
            decide(&spec(2), &settled(4, "dyno:2")).action,
            Some(Action::Decommission(3))
        );
    }
}
