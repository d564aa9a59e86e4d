//! Planning ring changes so that only what must move moves.
//!
//! * **Join**: the new node takes `Q / (k+1)` partitions, one at a time,
//!   always from the node that owns the most, choosing partitions where it
//!   keeps the spacing rule. No other partition changes owner.
//! * **Leave**: each partition of the leaving node goes to the least-loaded
//!   node that keeps the spacing rule there. No other partition changes.
//!
//! When the spacing rule holds, changing one partition's owner changes
//! exactly N replica sets, so the data moved is N times the partitions
//! claimed: the theoretical minimum. [`movement`] measures what a plan
//! actually moves, in partition replicas; the tests hold it to that minimum.

use std::collections::BTreeSet;

use crate::ring::{Member, NodeId, PartitionId, Ring, RingError, check_members};

/// Why a change could not be planned.
pub type PlanError = RingError;

/// True when `x` owns none of the `spacing - 1` partitions on either side
/// of `p`.
fn spacing_ok(owners: &[u16], p: usize, x: u16, spacing: usize) -> bool {
    let q = owners.len();
    (1..spacing.min(q))
        .all(|d| owners.get((p + d) % q) != Some(&x) && owners.get((p + q - d) % q) != Some(&x))
}

fn counts_of(owners: &[u16], k: usize) -> Vec<usize> {
    let mut counts = vec![0usize; k];
    for &o in owners {
        if let Some(c) = counts.get_mut(o as usize) {
            *c += 1;
        }
    }
    counts
}

/// Number of partitions whose owner breaks the spacing rule.
pub fn spacing_violations(ring: &Ring) -> usize {
    let owners = ring.owner_indices();
    (0..owners.len())
        .filter(|&p| {
            owners
                .get(p)
                .is_some_and(|&o| !spacing_ok(owners, p, o, ring.spacing()))
        })
        .count()
}

/// Reassigns partitions that break the spacing rule to the least-loaded node
/// that keeps it, where one exists. Used for new rings.
pub(crate) fn fix_spacing(owners: &mut [u16], k: usize, spacing: usize) {
    if k < spacing {
        return;
    }
    let mut counts = counts_of(owners, k);
    for p in 0..owners.len() {
        let Some(&cur) = owners.get(p) else { continue };
        if spacing_ok(owners, p, cur, spacing) {
            continue;
        }
        let best = (0..k as u16)
            .filter(|&c| c != cur && spacing_ok(owners, p, c, spacing))
            .min_by_key(|&c| (counts.get(c as usize).copied().unwrap_or(0), c));
        if let Some(c) = best {
            set_owner(owners, &mut counts, p, c);
        }
    }
}

fn set_owner(owners: &mut [u16], counts: &mut [usize], p: usize, to: u16) {
    if let Some(slot) = owners.get_mut(p) {
        if let Some(c) = counts.get_mut(*slot as usize) {
            *c -= 1;
        }
        *slot = to;
        if let Some(c) = counts.get_mut(to as usize) {
            *c += 1;
        }
    }
}

/// Plans the join of `member`: the next ring version.
pub fn plan_join(ring: &Ring, member: Member) -> Result<Ring, PlanError> {
    if ring.member(&member.id).is_some() {
        return Err(RingError::DuplicateMember { id: member.id });
    }
    let mut members = ring.members().to_vec();
    members.push(member);
    let q = ring.partition_count();
    check_members(&members, q)?;
    let k = members.len();
    let x = (k - 1) as u16;
    let spacing = ring.spacing();
    let mut owners = ring.owner_indices().to_vec();
    let mut counts = counts_of(&owners, k);
    let target = q / k;
    let stride = (q / target.max(1)).max(1);
    let mut cursor = 0usize;
    while counts.get(x as usize).copied().unwrap_or(0) < target {
        let mut donors: Vec<u16> = (0..x).collect();
        donors.sort_by_key(|&d| {
            (
                std::cmp::Reverse(counts.get(d as usize).copied().unwrap_or(0)),
                d,
            )
        });
        let find = |owners: &[u16], d: u16, need_spacing: bool| {
            (0..q).map(|i| (cursor + i) % q).find(|&p| {
                owners.get(p) == Some(&d) && (!need_spacing || spacing_ok(owners, p, x, spacing))
            })
        };
        let chosen = donors
            .iter()
            .find_map(|&d| find(&owners, d, true))
            .or_else(|| donors.first().and_then(|&d| find(&owners, d, false)));
        let Some(p) = chosen else { break };
        set_owner(&mut owners, &mut counts, p, x);
        cursor = (p + stride) % q;
    }
    Ok(Ring::from_owners(
        ring.version() + 1,
        ring.partition_bits(),
        spacing,
        members,
        owners,
    ))
}

/// Plans the departure of `id`: the next ring version.
pub fn plan_leave(ring: &Ring, id: &NodeId) -> Result<Ring, PlanError> {
    let Some(l) = ring.members().iter().position(|m| &m.id == id) else {
        return Err(RingError::UnknownMember { id: id.clone() });
    };
    if ring.members().len() == 1 {
        return Err(RingError::LastMember);
    }
    let l = l as u16;
    let k = ring.members().len();
    let spacing = ring.spacing();
    let mut owners = ring.owner_indices().to_vec();
    let mut counts = counts_of(&owners, k);
    for p in 0..owners.len() {
        if owners.get(p) != Some(&l) {
            continue;
        }
        let load = |c: &u16| (counts.get(*c as usize).copied().unwrap_or(0), *c);
        let others = (0..k as u16).filter(|&c| c != l);
        let to = others
            .clone()
            .filter(|&c| spacing_ok(&owners, p, c, spacing))
            .min_by_key(load)
            .or_else(|| others.min_by_key(load));
        if let Some(c) = to {
            set_owner(&mut owners, &mut counts, p, c);
        }
    }
    let mut members = ring.members().to_vec();
    members.remove(l as usize);
    for o in &mut owners {
        if *o > l {
            *o -= 1;
        }
    }
    Ok(Ring::from_owners(
        ring.version() + 1,
        ring.partition_bits(),
        spacing,
        members,
        owners,
    ))
}

/// One partition replica that a ring change creates: `to` must receive the
/// partition's data from one of `from` (the replicas that hold it now).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// The partition.
    pub partition: PartitionId,
    /// The node that gains it.
    pub to: NodeId,
    /// The nodes that hold it in the old ring.
    pub from: Vec<NodeId>,
}

/// The primaries of partition `p` with replication factor `n`.
pub(crate) fn replica_set(ring: &Ring, p: PartitionId, n: usize) -> BTreeSet<NodeId> {
    ring.preference_list(p, n)
        .primaries()
        .iter()
        .map(|m| m.id.clone())
        .collect()
}

/// The partition replicas that change hands between two rings with
/// replication factor `n`.
pub fn transfers(old: &Ring, new: &Ring, n: usize) -> Vec<Transfer> {
    let mut out = Vec::new();
    for p in 0..old.partition_count().min(new.partition_count()) as u32 {
        let p = PartitionId(p);
        let before = replica_set(old, p, n);
        for to in replica_set(new, p, n).difference(&before) {
            out.push(Transfer {
                partition: p,
                to: to.clone(),
                from: before.iter().cloned().collect(),
            });
        }
    }
    out
}

/// What a ring change moves, in partition replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Movement {
    /// Partition replicas that change hands.
    pub moved: usize,
    /// Partitions whose owner changed.
    pub partitions_reassigned: usize,
    /// Partition replicas in the cluster (Q × N).
    pub total: usize,
}

/// Measures a change.
pub fn movement(old: &Ring, new: &Ring, n: usize) -> Movement {
    let reassigned = (0..old.partition_count().min(new.partition_count()) as u32)
        .filter(|&p| old.owner(PartitionId(p)) != new.owner(PartitionId(p)))
        .count();
    Movement {
        moved: transfers(old, new, n).len(),
        partitions_reassigned: reassigned,
        total: old.partition_count() * n.min(old.members().len().max(new.members().len())),
    }
}

/// Partition replicas that `id` holds with replication factor `n`.
pub fn replicas_held(ring: &Ring, id: &NodeId, n: usize) -> usize {
    (0..ring.partition_count() as u32)
        .filter(|&p| ring.preference_list(PartitionId(p), n).is_primary(id))
        .count()
}

/// The first ring is the planner's work too: it lives here so that the
/// ring module (placement) never depends on the planner (change).
impl Ring {
    /// A new ring (version 1) over `members`.
    ///
    /// The first `spacing + 1` members get the partitions dealt round-robin
    /// (adjusted at the wrap so the spacing rule holds where it can); the
    /// rest join one by one through the planner. Joining gives every node
    /// varied neighbours, which a pure round-robin layout does not: there,
    /// all of a node's partitions sit between the same few nodes, and a
    /// leave could hand them only to the others, unbalancing the ring.
    pub fn new(
        partition_bits: u8,
        spacing: usize,
        members: Vec<Member>,
    ) -> Result<Ring, RingError> {
        if !(1..=16).contains(&partition_bits) {
            return Err(RingError::BadPartitionBits {
                bits: partition_bits,
            });
        }
        let q = 1usize << partition_bits;
        check_members(&members, q)?;
        let base = members.len().min(spacing + 1);
        let mut owners: Vec<u16> = (0..q).map(|p| (p % base) as u16).collect();
        fix_spacing(&mut owners, base, spacing);
        let mut rest = members;
        let joiners = rest.split_off(base);
        let mut ring = Ring::from_owners(1, partition_bits, spacing, rest, owners);
        for m in joiners {
            ring = plan_join(&ring, m)?;
        }
        ring.version = 1;
        Ok(ring)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const N: usize = 3;

    fn node(i: usize) -> Member {
        Member::new(NodeId::new(format!("n{i}")).expect("valid"))
    }

    fn ring(k: usize) -> Ring {
        Ring::new(10, 3, (0..k).map(node).collect()).expect("ring")
    }

    fn balance(r: &Ring) -> f64 {
        let c = r.ownership_counts();
        *c.iter().max().expect("nodes") as f64 / *c.iter().min().expect("nodes") as f64
    }

    /// Join k → k+1: the new node takes a fair share, nothing else moves, and
    /// balance stays tight. Prints the figures the issue asks for.
    fn check_join(k: usize, max_balance: f64) {
        let old = ring(k);
        let new = plan_join(&old, node(k)).expect("join");
        let joined = NodeId::new(format!("n{k}")).expect("valid");
        let m = movement(&old, &new, N);
        let held = replicas_held(&new, &joined, N);
        let fair = (N * old.partition_count()) as f64 / (k + 1) as f64;
        // Everything that moved went to the new node: the minimum.
        assert!(transfers(&old, &new, N).iter().all(|t| t.to == joined));
        assert_eq!(m.moved, held);
        assert!(
            held as f64 >= fair * 0.95 && held as f64 <= fair * 1.05,
            "held {held}, fair {fair}"
        );
        let b = balance(&new);
        println!(
            "join {k}->{}: moved {} replicas ({} partitions), minimum {held}, fair share {fair:.1}, \
             moved/fair {:.3}, balance {b:.3}, spacing violations {}",
            k + 1,
            m.moved,
            m.partitions_reassigned,
            m.moved as f64 / fair,
            spacing_violations(&new)
        );
        assert!(b <= max_balance, "balance {b} over {max_balance}");
        assert_eq!(new.version(), old.version() + 1);
    }

    /// Leave k → k-1: only the leaver's replicas move.
    fn check_leave(k: usize, max_balance: f64, max_ratio: f64) {
        let old = ring(k);
        let leaving = NodeId::new("n1").expect("valid");
        let new = plan_leave(&old, &leaving).expect("leave");
        let m = movement(&old, &new, N);
        let minimum = replicas_held(&old, &leaving, N);
        let ratio = m.moved as f64 / minimum as f64;
        let b = balance(&new);
        println!(
            "leave {k}->{}: moved {} replicas, minimum {minimum}, ratio {ratio:.3}, balance {b:.3}",
            k - 1,
            m.moved
        );
        assert!(m.moved >= minimum);
        assert!(ratio <= max_ratio, "moved {ratio}x the minimum");
        assert!(b <= max_balance, "balance {b}");
        assert!(new.member(&leaving).is_none());
    }

    #[test]
    fn join_3_to_4() {
        check_join(3, 1.01);
    }

    #[test]
    fn join_10_to_11() {
        check_join(10, 1.05);
    }

    #[test]
    fn join_64_to_65() {
        check_join(64, 1.07);
    }

    #[test]
    fn leave_4_to_3() {
        check_leave(4, 1.01, 1.0);
    }

    #[test]
    fn leave_11_to_10() {
        check_leave(11, 1.05, 1.0);
    }

    #[test]
    fn leave_65_to_64() {
        check_leave(65, 1.07, 1.0);
    }

    #[test]
    fn plan_errors() {
        let r = ring(3);
        assert!(matches!(
            plan_join(&r, node(0)),
            Err(RingError::DuplicateMember { .. })
        ));
        let ghost = NodeId::new("ghost").expect("valid");
        assert!(matches!(
            plan_leave(&r, &ghost),
            Err(RingError::UnknownMember { .. })
        ));
        let one = ring(1);
        assert_eq!(
            plan_leave(&one, &NodeId::new("n0").expect("valid")),
            Err(RingError::LastMember)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// Any sequence of joins and leaves keeps preference lists free of
        /// repeated nodes and keeps every partition owned by a member.
        #[test]
        fn preference_lists_never_repeat_a_node(ops in proptest::collection::vec(any::<bool>(), 1..12)) {
            let mut r = Ring::new(7, 3, (0..3).map(node).collect()).expect("ring");
            let mut next = 3;
            for join in ops {
                r = if join || r.members().len() <= 1 {
                    next += 1;
                    plan_join(&r, node(next)).expect("join")
                } else {
                    let id = r.members()[next % r.members().len()].id.clone();
                    plan_leave(&r, &id).expect("leave")
                };
                for p in 0..r.partition_count() as u32 {
                    let pl = r.preference_list(PartitionId(p), 3);
                    let ids: BTreeSet<_> = pl.all().iter().map(|m| &m.id).collect();
                    prop_assert_eq!(ids.len(), pl.all().len());
                    prop_assert_eq!(pl.all().len(), r.members().len());
                }
            }
        }
    }
}
