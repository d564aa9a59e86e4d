//! The cluster's ring over time: the committed ring, and during a change the
//! ring being moved to.
//!
//! A change has two steps, each a new *epoch*:
//!
//! 1. **Begin** (`epoch + 1`): the planner's next ring is attached as
//!    `next`. Reads and quorum writes still use `current`; writes also go to
//!    the replicas that `next` adds ([`Topology::pending_targets`]), and those
//!    new replicas pull the partitions they gain from the current ones.
//! 2. **Commit** (`epoch + 1` again): once every node of both rings reports
//!    that it holds everything it gains ([`Topology::ready_to_commit`]),
//!    `next` becomes `current`. Nodes that lost replicas drop them only
//!    after every live node has applied the commit (the driver checks this
//!    through gossip), so no coordinator still routes to them.
//!
//! Every node decides the commit for itself from the same gossiped facts,
//! and [`Topology::commit`] is a pure function, so two nodes committing the
//! same change produce the same bytes. Topologies spread by gossip and merge
//! by [`Topology::supersedes`]: the higher epoch wins, and equal epochs (two
//! changes begun at once on different nodes) are ordered by their encoding,
//! so every node keeps the same one.

use std::collections::BTreeSet;

use crate::codec::{DecodeError, Reader, put_varint};
use crate::planner::{self, PlanError, replica_set};
use crate::ring::{Member, NodeId, PartitionId, Ring};

const TOPOLOGY_FORMAT_V1: u8 = 1;

/// The ring, and the ring being moved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Incremented by every begin and every commit.
    pub epoch: u64,
    /// The committed ring: reads and quorum writes use it.
    pub current: Ring,
    /// The ring a change is moving to, while the change is under way.
    pub next: Option<Ring>,
}

/// Why a change cannot begin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// One change at a time.
    #[error("a ring change (epoch {epoch}) is still under way; wait for it to finish")]
    Busy {
        /// The epoch of the change under way.
        epoch: u64,
    },
    /// The planner refused.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// There is no change to abort.
    #[error("no ring change is under way")]
    Idle,
    /// A zone can be placed without moving data only on a ring's sole
    /// member.
    #[error(
        "a zone can be placed only on the only member of a ring (this one has {members}): decommission the node and join it again with its zone"
    )]
    ZoneMovesData {
        /// Members of the ring.
        members: usize,
    },
}

/// What a node reports about the change under way (gossiped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HandoffProgress {
    /// The epoch of the change this is about.
    pub epoch: u64,
    /// Partitions received.
    pub done: u32,
    /// Partitions to receive.
    pub total: u32,
    /// Bytes received.
    pub bytes: u64,
}

impl HandoffProgress {
    /// True when the node holds everything it gains in `epoch`.
    pub fn complete_for(&self, epoch: u64) -> bool {
        self.epoch == epoch && self.done >= self.total
    }
}

impl Topology {
    /// A cluster's first topology.
    pub fn new(ring: Ring) -> Topology {
        Topology {
            epoch: 1,
            current: ring,
            next: None,
        }
    }

    /// True when `self` should replace `other` in a node's view.
    pub fn supersedes(&self, other: &Topology) -> bool {
        match self.epoch.cmp(&other.epoch) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => self.encode() > other.encode(),
        }
    }

    /// Begins the join of `member`.
    pub fn begin_join(&self, member: Member) -> Result<Topology, ChangeError> {
        self.check_idle()?;
        let next = planner::plan_join(&self.current, member)?;
        Ok(self.begin(next))
    }

    /// Begins the departure of `id`.
    pub fn begin_leave(&self, id: &NodeId) -> Result<Topology, ChangeError> {
        self.check_idle()?;
        let next = planner::plan_leave(&self.current, id)?;
        Ok(self.begin(next))
    }

    /// Places `zone` on member `id`, in one step (`epoch + 1`, no
    /// handoff). Only while no change is under way and while `id` is the
    /// ring's only member: then every partition's replicas are that node,
    /// whatever its zone, so nothing moves. (A cluster's first node forms
    /// its ring before anyone may know its zone; this gives it one before
    /// the second node joins.) With more members a zone changes preference
    /// lists: that takes a decommission and a join.
    pub fn set_zone(&self, id: &NodeId, zone: String) -> Result<Topology, ChangeError> {
        self.check_idle()?;
        crate::ring::check_zone(&zone)?;
        let members = self.current.members().len();
        if members != 1 {
            return Err(ChangeError::ZoneMovesData { members });
        }
        let ring = self
            .current
            .with_zone(id, Some(zone))
            .ok_or_else(|| crate::ring::RingError::UnknownMember { id: id.clone() })?;
        Ok(Topology {
            epoch: self.epoch + 1,
            current: ring,
            next: None,
        })
    }

    fn check_idle(&self) -> Result<(), ChangeError> {
        match self.next {
            Some(_) => Err(ChangeError::Busy { epoch: self.epoch }),
            None => Ok(()),
        }
    }

    fn begin(&self, next: Ring) -> Topology {
        Topology {
            epoch: self.epoch + 1,
            current: self.current.clone(),
            next: Some(next),
        }
    }

    /// Makes `next` current. A no-op without a change under way.
    pub fn commit(&self) -> Topology {
        match &self.next {
            Some(next) => Topology {
                epoch: self.epoch + 1,
                current: next.clone(),
                next: None,
            },
            None => self.clone(),
        }
    }

    /// Abandons the change under way: the current ring stays, one epoch
    /// later. Writes counted towards W went to the current replicas
    /// throughout, so nothing acknowledged is lost; what gaining nodes
    /// received is theirs to drop.
    pub fn abort(&self) -> Result<Topology, ChangeError> {
        match &self.next {
            Some(_) => Ok(Topology {
                epoch: self.epoch + 1,
                current: self.current.clone(),
                next: None,
            }),
            None => Err(ChangeError::Idle),
        }
    }

    /// Every node of the current and the next ring.
    pub fn nodes(&self) -> BTreeSet<NodeId> {
        let mut all: BTreeSet<NodeId> = self
            .current
            .members()
            .iter()
            .map(|m| m.id.clone())
            .collect();
        if let Some(next) = &self.next {
            all.extend(next.members().iter().map(|m| m.id.clone()));
        }
        all
    }

    /// True when `id` is in the current or the next ring.
    pub fn involves(&self, id: &NodeId) -> bool {
        self.current.member(id).is_some()
            || self.next.as_ref().is_some_and(|n| n.member(id).is_some())
    }

    /// The change under way is complete when every node of both rings
    /// reports that it holds what it gains (`progress` gives each node's
    /// gossiped report).
    pub fn ready_to_commit<'a>(
        &self,
        progress: impl Fn(&NodeId) -> Option<&'a HandoffProgress>,
    ) -> bool {
        self.next.is_some()
            && self
                .nodes()
                .iter()
                .all(|id| progress(id).is_some_and(|p| p.complete_for(self.epoch)))
    }

    /// The nodes that `next` adds to a partition's replicas: they receive
    /// writes during the change, without counting towards W.
    pub fn pending_targets(&self, p: PartitionId, n: usize) -> Vec<NodeId> {
        let Some(next) = &self.next else {
            return Vec::new();
        };
        let now = replica_set(&self.current, p, n);
        replica_set(next, p, n)
            .into_iter()
            .filter(|id| !now.contains(id))
            .collect()
    }

    /// The partitions `id` gains in the change under way, each with the
    /// current replicas it can copy from.
    pub fn incoming(&self, id: &NodeId, n: usize) -> Vec<(PartitionId, Vec<NodeId>)> {
        let Some(next) = &self.next else {
            return Vec::new();
        };
        planner::transfers(&self.current, next, n)
            .into_iter()
            .filter(|t| &t.to == id)
            .map(|t| (t.partition, t.from))
            .collect()
    }
}

/// True when `id` is a primary replica of partition `p` with factor `n`.
pub fn is_replica(ring: &Ring, p: PartitionId, n: usize, id: &NodeId) -> bool {
    ring.preference_list(p, n).is_primary(id)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn get_str(r: &mut Reader<'_>, field: &'static str) -> Result<String, DecodeError> {
    let len = r.count(1, field)?;
    let b = r.bytes(len, field)?;
    String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Invalid {
        reason: "a name is not UTF-8",
    })
}

fn encode_ring(out: &mut Vec<u8>, ring: &Ring) {
    put_varint(out, ring.version());
    out.push(ring.partition_bits());
    put_varint(out, ring.spacing() as u64);
    put_varint(out, ring.members().len() as u64);
    for m in ring.members() {
        put_str(out, m.id.as_str());
        match &m.zone {
            Some(z) => {
                out.push(1);
                put_str(out, z);
            }
            None => out.push(0),
        }
    }
    for &o in ring.owner_indices() {
        put_varint(out, u64::from(o));
    }
}

fn decode_ring(r: &mut Reader<'_>) -> Result<Ring, DecodeError> {
    let bad = |reason| DecodeError::Invalid { reason };
    let version = r.varint("ring version")?;
    let bits = r.u8("partition bits")?;
    if !(1..=16).contains(&bits) {
        return Err(bad("partition bits out of range"));
    }
    let spacing = usize::try_from(r.varint("spacing")?).map_err(|_| bad("spacing"))?;
    if spacing > 64 {
        return Err(bad("spacing out of range"));
    }
    let count = r.count(2, "members")?;
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        let id = NodeId::new(get_str(r, "member id")?).map_err(|_| bad("bad member id"))?;
        let zone = match r.u8("zone flag")? {
            0 => None,
            1 => Some(get_str(r, "zone")?),
            _ => return Err(bad("zone flag")),
        };
        members.push(Member { id, zone });
    }
    let q = 1usize << bits;
    crate::ring::check_members(&members, q).map_err(|_| bad("bad member list"))?;
    if r.remaining() < q {
        return Err(DecodeError::Truncated { field: "owners" });
    }
    let mut owners = Vec::with_capacity(q);
    for _ in 0..q {
        let o = r.varint("owner")?;
        if o >= members.len() as u64 {
            return Err(bad("owner out of range"));
        }
        owners.push(o as u16);
    }
    Ok(Ring::from_owners(version, bits, spacing, members, owners))
}

impl Topology {
    /// The binary form gossiped and persisted:
    /// `version:u8(=1) epoch:varint ring has_next:u8 [ring]`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + 2 * self.current.partition_count());
        out.push(TOPOLOGY_FORMAT_V1);
        put_varint(&mut out, self.epoch);
        encode_ring(&mut out, &self.current);
        match &self.next {
            Some(n) => {
                out.push(1);
                encode_ring(&mut out, n);
            }
            None => out.push(0),
        }
        out
    }

    /// Decodes [`Topology::encode`]'s output, checking every field.
    pub fn decode(buf: &[u8]) -> Result<Topology, DecodeError> {
        let mut r = Reader::new(buf);
        let version = r.u8("topology version")?;
        if version != TOPOLOGY_FORMAT_V1 {
            return Err(DecodeError::UnsupportedVersion { version });
        }
        let epoch = r.varint("epoch")?;
        let current = decode_ring(&mut r)?;
        let next = match r.u8("next flag")? {
            0 => None,
            1 => Some(decode_ring(&mut r)?),
            _ => {
                return Err(DecodeError::Invalid {
                    reason: "next flag",
                });
            }
        };
        if next
            .as_ref()
            .is_some_and(|n| n.partition_bits() != current.partition_bits())
        {
            return Err(DecodeError::Invalid {
                reason: "rings of different sizes",
            });
        }
        r.finish()?;
        Ok(Topology {
            epoch,
            current,
            next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::DEFAULT_SPACING;
    use proptest::prelude::*;

    fn ring(k: usize) -> Ring {
        let members = (1..=k)
            .map(|i| Member::new(NodeId::new(format!("n{i}")).expect("valid")))
            .collect();
        Ring::new(8, DEFAULT_SPACING, members).expect("ring")
    }

    fn id(s: &str) -> NodeId {
        NodeId::new(s).expect("valid")
    }

    #[test]
    fn encoding_round_trips_and_rejects_garbage() {
        let t = Topology::new(ring(3))
            .begin_join(Member {
                id: id("n4"),
                zone: Some("z1".into()),
            })
            .expect("join");
        let bytes = t.encode();
        assert_eq!(Topology::decode(&bytes).expect("decode"), t);
        for cut in 0..bytes.len() {
            assert!(Topology::decode(&bytes[..cut]).is_err(), "prefix {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(Topology::decode(&extra).is_err());
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Topology::decode(&bytes);
        }
    }

    #[test]
    fn a_zone_is_placed_only_on_a_sole_member_and_moves_nothing() {
        let one = Topology::new(ring(1));
        let zoned = one.set_zone(&id("n1"), "eu-1a".into()).expect("zone");
        assert_eq!(zoned.epoch, one.epoch + 1);
        assert!(zoned.supersedes(&one));
        assert_eq!(zoned.current.members()[0].zone.as_deref(), Some("eu-1a"));
        assert_eq!(zoned.current.version(), one.current.version() + 1);
        let p = PartitionId(7);
        assert_eq!(zoned.current.owner(p), one.current.owner(p), "owners stay");
        assert_eq!(Topology::decode(&zoned.encode()).expect("decode"), zoned);
        // The next join plans over the zone.
        let joined = zoned
            .begin_join(Member {
                id: id("n2"),
                zone: Some("eu-1b".into()),
            })
            .expect("join")
            .commit();
        assert_eq!(joined.current.members().len(), 2);
        assert!(matches!(
            joined.set_zone(&id("n1"), "eu-1c".into()),
            Err(ChangeError::ZoneMovesData { members: 2 })
        ));
        assert!(matches!(
            one.set_zone(&id("n9"), "z".into()),
            Err(ChangeError::Plan(
                crate::ring::RingError::UnknownMember { .. }
            ))
        ));
        assert!(matches!(
            one.set_zone(&id("n1"), "no spaces".into()),
            Err(ChangeError::Plan(crate::ring::RingError::BadZone { .. }))
        ));
        let busy = one.begin_join(Member::new(id("n2"))).expect("join");
        assert!(matches!(
            busy.set_zone(&id("n1"), "z".into()),
            Err(ChangeError::Busy { .. })
        ));
    }

    #[test]
    fn a_change_begins_commits_and_excludes_a_second() {
        let t = Topology::new(ring(3));
        let joining = t.begin_join(Member::new(id("n4"))).expect("join");
        assert_eq!(joining.epoch, 2);
        assert!(matches!(
            joining.begin_leave(&id("n1")),
            Err(ChangeError::Busy { epoch: 2 })
        ));
        assert!(joining.supersedes(&t) && !t.supersedes(&joining));
        let done = joining.commit();
        assert_eq!(done.epoch, 3);
        assert!(done.next.is_none());
        assert!(done.current.member(&id("n4")).is_some());
        assert_eq!(joining.commit(), done, "commit is deterministic");
        assert_eq!(done.commit(), done, "nothing to commit");
    }

    #[test]
    fn an_abort_keeps_the_current_ring_one_epoch_later() {
        let t = Topology::new(ring(3));
        assert_eq!(t.abort(), Err(ChangeError::Idle));
        let joining = t.begin_join(Member::new(id("n4"))).expect("join");
        let aborted = joining.abort().expect("abort");
        assert_eq!(aborted.epoch, joining.epoch + 1);
        assert_eq!(aborted.current, t.current);
        assert!(aborted.next.is_none() && aborted.supersedes(&joining));
        assert!(
            aborted.begin_leave(&id("n1")).is_ok(),
            "a new change can begin"
        );
    }

    #[test]
    fn equal_epochs_order_the_same_way_everywhere() {
        let t = Topology::new(ring(3));
        let a = t.begin_join(Member::new(id("n4"))).expect("join");
        let b = t.begin_join(Member::new(id("n5"))).expect("join");
        assert_eq!(a.epoch, b.epoch);
        assert_ne!(a.supersedes(&b), b.supersedes(&a));
    }

    #[test]
    fn commit_waits_for_every_node_of_both_rings() {
        let t = Topology::new(ring(3))
            .begin_join(Member::new(id("n4")))
            .expect("join");
        let mut reports: std::collections::BTreeMap<NodeId, HandoffProgress> = t
            .nodes()
            .into_iter()
            .map(|n| {
                (
                    n,
                    HandoffProgress {
                        epoch: t.epoch,
                        done: 0,
                        total: 0,
                        bytes: 0,
                    },
                )
            })
            .collect();
        let gains = t.incoming(&id("n4"), 3).len() as u32;
        assert!(gains > 0, "the joiner gains partitions");
        reports.insert(
            id("n4"),
            HandoffProgress {
                epoch: t.epoch,
                done: gains - 1,
                total: gains,
                bytes: 0,
            },
        );
        assert!(!t.ready_to_commit(|n| reports.get(n)));
        if let Some(p) = reports.get_mut(&id("n4")) {
            p.done = gains;
        }
        assert!(t.ready_to_commit(|n| reports.get(n)));
        reports.remove(&id("n2"));
        assert!(
            !t.ready_to_commit(|n| reports.get(n)),
            "a silent node blocks"
        );
    }

    #[test]
    fn pending_targets_are_exactly_the_gained_replicas() {
        let t = Topology::new(ring(3))
            .begin_join(Member::new(id("n4")))
            .expect("join");
        let incoming: BTreeSet<PartitionId> = t
            .incoming(&id("n4"), 3)
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        for p in 0..t.current.partition_count() as u32 {
            let p = PartitionId(p);
            let pending = t.pending_targets(p, 3);
            assert_eq!(pending.contains(&id("n4")), incoming.contains(&p));
            assert!(pending.len() <= 1, "one node changes per replica set");
        }
    }
}
