//! The decisions against a simulated world: a StatefulSet whose pods take
//! random times to become Ready, a data plane whose ring changes take
//! random times to commit, faults (a pod stuck not-Ready), and a spec
//! that changes its replicas and image at random points. After every step
//! the world checks the rules it must never see broken, and once the spec
//! and the faults stop, the cluster must settle on what the spec asks.

use std::collections::{BTreeMap, BTreeSet};

use dyno_operator::decide::{Action, Change, DataPlane, NodeState, Observed, Pod, Spec, decide};
use proptest::prelude::*;

/// Seconds a simulated step lasts.
const STEP_SECS: u64 = 30;

#[derive(Debug, Clone)]
struct PodW {
    /// Steps until Ready.
    ready_in: u32,
    /// Not-Ready until this many more steps (a fault).
    stuck_for: u32,
    not_ready_secs: u64,
    image: String,
}

#[derive(Debug, Clone)]
struct World {
    sts: Option<(u32, String)>,
    pods: BTreeMap<u32, PodW>,
    claims: BTreeSet<u32>,
    members: BTreeSet<u32>,
    nodes: BTreeMap<u32, NodeState>,
    /// (joining?, node, steps left)
    change: Option<(bool, u32, u32)>,
    hints: BTreeMap<u32, u64>,
    largest_n: u32,
    /// Pseudo-random stream for start and commit times.
    rng: u64,
}

impl World {
    fn new(largest_n: u32, seed: u64) -> World {
        World {
            sts: None,
            pods: BTreeMap::new(),
            claims: BTreeSet::new(),
            members: BTreeSet::new(),
            nodes: BTreeMap::new(),
            change: None,
            hints: BTreeMap::new(),
            largest_n,
            rng: seed | 1,
        }
    }

    fn roll(&mut self, n: u32) -> u32 {
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % u64::from(n.max(1))) as u32
    }

    fn observe(&self) -> Observed {
        Observed {
            statefulset: self.sts.clone(),
            pods: self
                .pods
                .iter()
                .map(|(k, p)| Pod {
                    ordinal: *k,
                    ready: p.ready_in == 0 && p.stuck_for == 0,
                    not_ready_secs: p.not_ready_secs,
                    image: p.image.clone(),
                })
                .collect(),
            claims: self.claims.clone(),
            data_plane: (!self.members.is_empty()).then(|| DataPlane {
                members: self.members.clone(),
                nodes: self.nodes.clone(),
                change: self.change.map(|(join, k, _)| Change {
                    joining: if join { vec![k] } else { vec![] },
                    leaving: if join { vec![] } else { vec![k] },
                    progress: (0, 1),
                }),
                hint_backlog: self.hints.clone(),
                largest_n: self.largest_n,
                zone_to_place: None,
            }),
        }
    }

    fn all_members_up(&self) -> bool {
        self.members
            .iter()
            .all(|k| self.nodes.get(k) == Some(&NodeState::Up))
    }

    /// Applies an action, panicking on any that breaks a rule.
    fn apply(&mut self, a: &Action) {
        match a {
            Action::Apply { replicas, image } => {
                if let Some((old, _)) = self.sts {
                    // Only nodes that hold no replica may go: not in the
                    // ring, not in the change under way.
                    for k in *replicas..old {
                        let s = self.nodes.get(&k);
                        assert!(
                            !self.members.contains(&k)
                                && !matches!(s, Some(NodeState::Joining | NodeState::Leaving)),
                            "shrank away node {k} ({s:?}) while it held replicas"
                        );
                    }
                } else {
                    // The first pods form the first ring.
                    self.members = (0..*replicas).collect();
                    for k in 0..*replicas {
                        self.nodes.insert(k, NodeState::Down);
                    }
                }
                self.sts = Some((*replicas, image.clone()));
                self.sync_pods();
            }
            Action::Join(k) => {
                assert!(self.change.is_none(), "join {k} during a change");
                assert!(self.all_members_up(), "join {k} with a member down");
                assert_eq!(self.nodes.get(k), Some(&NodeState::Standby), "join {k}");
                let steps = 1 + self.roll(4);
                self.change = Some((true, *k, steps));
                self.nodes.insert(*k, NodeState::Joining);
            }
            Action::Decommission(k) => {
                assert!(self.change.is_none(), "decommission {k} during a change");
                assert!(self.all_members_up(), "decommission {k} with a member down");
                assert!(
                    self.members.len() as u32 > self.largest_n.max(1),
                    "decommission {k} would leave fewer nodes than N"
                );
                assert_eq!(self.members.iter().max(), Some(k), "not the top member");
                let steps = 1 + self.roll(4);
                self.change = Some((false, *k, steps));
                self.nodes.insert(*k, NodeState::Leaving);
            }
            Action::Abort { .. } => {
                let (join, k, _) = self.change.take().expect("abort without a change");
                self.nodes.insert(
                    k,
                    if join {
                        NodeState::Standby
                    } else {
                        NodeState::Up
                    },
                );
            }
            Action::Restart(k) => {
                assert!(self.change.is_none(), "restart {k} during a change");
                assert!(
                    self.pods
                        .values()
                        .all(|p| p.ready_in == 0 && p.stuck_for == 0),
                    "restart {k} while a pod is not Ready"
                );
                assert!(
                    self.hints
                        .iter()
                        .all(|(n, h)| *h == 0 || !self.members.contains(n)),
                    "restart {k} with hints waiting for a member"
                );
                let image = self.sts.as_ref().map(|s| s.1.clone()).unwrap_or_default();
                let ready_in = 1 + self.roll(3);
                let p = self.pods.get_mut(k).expect("restart a missing pod");
                p.image = image;
                p.ready_in = ready_in;
            }
            Action::DeleteClaim(k) => {
                assert!(
                    !self.pods.contains_key(k),
                    "deleted the claim of running pod {k}"
                );
                assert!(!self.members.contains(k), "deleted member {k}'s claim");
                self.claims.remove(k);
            }
            Action::SetZone(..) => panic!("the simulated world has no zones"),
        }
    }

    /// The StatefulSet controller: pods for ordinals below replicas, on the
    /// template's image when created.
    fn sync_pods(&mut self) {
        let Some((replicas, image)) = self.sts.clone() else {
            return;
        };
        self.pods.retain(|k, _| *k < replicas);
        // Gossip forgets a removed pod that was not in the ring; one made
        // again starts fresh and shows up as standby.
        let members = self.members.clone();
        self.nodes
            .retain(|k, _| *k < replicas || members.contains(k));
        for k in 0..replicas {
            if !self.pods.contains_key(&k) {
                let ready_in = 1 + self.roll(3);
                self.pods.insert(
                    k,
                    PodW {
                        ready_in,
                        stuck_for: 0,
                        not_ready_secs: 0,
                        image: image.clone(),
                    },
                );
                self.claims.insert(k);
            }
        }
    }

    /// Time passes: pods start, the change advances, hints drain.
    fn step(&mut self) {
        for (k, p) in &mut self.pods {
            if p.ready_in > 0 {
                p.ready_in -= 1;
            }
            if p.stuck_for > 0 {
                p.stuck_for -= 1;
            }
            let ready = p.ready_in == 0 && p.stuck_for == 0;
            p.not_ready_secs = if ready {
                0
            } else {
                p.not_ready_secs + STEP_SECS
            };
            let state = self.nodes.get(k).copied();
            let next = match (self.members.contains(k), ready, state) {
                (true, true, Some(NodeState::Down)) => Some(NodeState::Up),
                (true, false, Some(NodeState::Up)) => {
                    // Writes meant for it become hints.
                    *self.hints.entry(*k).or_default() += 3;
                    Some(NodeState::Down)
                }
                (false, true, None) => Some(NodeState::Standby),
                _ => None,
            };
            if let Some(s) = next {
                self.nodes.insert(*k, s);
            }
        }
        for (k, h) in &mut self.hints {
            if self.nodes.get(k) == Some(&NodeState::Up) {
                *h = h.saturating_sub(2);
            }
        }
        if let Some((join, k, left)) = self.change {
            if left > 1 {
                self.change = Some((join, k, left - 1));
            } else {
                self.change = None;
                if join {
                    self.members.insert(k);
                    self.nodes.insert(k, NodeState::Up);
                } else {
                    self.members.remove(&k);
                    self.nodes.insert(k, NodeState::Left);
                }
            }
        }
    }
}

fn spec(replicas: u32, image: u32) -> Spec {
    Spec {
        replicas,
        image: format!("dyno:{image}"),
        keep_claims: false,
        abort_after_secs: 120,
        upgrade_paused: false,
    }
}

/// Runs `spec_changes` (step, replicas, image) and `faults` (step, pod,
/// steps stuck) and then lets the world settle.
fn run(
    largest_n: u32,
    seed: u64,
    spec_changes: &[(u32, u32, u32)],
    faults: &[(u32, u32, u32)],
) -> (World, Spec) {
    let mut w = World::new(largest_n, seed);
    let mut s = spec(3, 1);
    let busy_until = spec_changes
        .iter()
        .chain(faults)
        .map(|c| c.0)
        .max()
        .unwrap_or(0);
    for t in 0..busy_until + 400 {
        for (_, r, i) in spec_changes.iter().filter(|c| c.0 == t) {
            s = spec(*r, *i);
        }
        for (_, pod, steps) in faults.iter().filter(|c| c.0 == t) {
            if let Some(p) = w.pods.get_mut(pod) {
                p.stuck_for = *steps;
            }
        }
        let before = w.observe();
        let d = decide(&s, &before);
        // The same observation, decided again, gives the same step.
        assert_eq!(decide(&s, &before), d);
        if let Some(a) = &d.action {
            w.apply(a);
        }
        w.step();
        w.sync_pods();
    }
    (w, s)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_rules_hold_and_the_cluster_settles(
        largest_n in 1u32..=3,
        seed in any::<u64>(),
        spec_changes in prop::collection::vec((0u32..60, 1u32..=7, 1u32..=3), 0..6),
        faults in prop::collection::vec((0u32..60, 0u32..7, 1u32..12), 0..4),
    ) {
        let (w, s) = run(largest_n, seed, &spec_changes, &faults);
        let want = s.replicas.max(largest_n);
        let o = w.observe();
        let d = decide(&s, &o);
        prop_assert_eq!(d.action.clone(), None, "settled: {:?}", d);
        prop_assert_eq!(w.members.len() as u32, want);
        prop_assert_eq!(w.sts.as_ref().map(|x| x.0), Some(want));
        prop_assert!(w.pods.values().all(|p| p.image == s.image), "every pod on {}", s.image);
        prop_assert!(w.claims.iter().all(|k| *k < want), "claims {:?}", w.claims);
        prop_assert!(d.available.status && !d.progressing.status);
    }
}

#[test]
fn scale_3_to_5_to_3_takes_the_expected_steps() {
    let mut w = World::new(3, 7);
    let mut log = Vec::new();
    for t in 0..200 {
        let s = spec(if (20..60).contains(&t) { 5 } else { 3 }, 1);
        if let Some(a) = decide(&s, &w.observe()).action {
            w.apply(&a);
            log.push(a);
        }
        w.step();
        w.sync_pods();
    }
    let ring: Vec<&Action> = log
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::Join(_) | Action::Decommission(_) | Action::DeleteClaim(_)
            )
        })
        .collect();
    assert_eq!(
        ring,
        [
            &Action::Join(3),
            &Action::Join(4),
            &Action::Decommission(4),
            &Action::DeleteClaim(4),
            &Action::Decommission(3),
            &Action::DeleteClaim(3)
        ],
        "{log:?}"
    );
    assert_eq!(w.members, (0..3).collect());
    assert_eq!(w.claims, (0..3).collect());
}
