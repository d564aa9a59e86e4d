//! The node's own records in the `meta` keyspace, typed, each read and
//! written in one place (the catalog's `table/` records live in
//! `catalog.rs`). Every write returns its error: a lost marker would make
//! the node forget a sweep or its own history.
//!
//! | key | value |
//! |---|---|
//! | `actor` | the actor id this node writes versions under, u64 LE |
//! | `clean_shutdown` | present from a clean shutdown until the next start |
//! | `generation` | the last start's generation, u64 LE |
//! | `topology` | `Topology::encode` of the ring this node routes by |
//! | `sweep_due` | the epoch whose sweep of unowned items is due, u64 LE |
//! | `was_member` | present once this node has been a ring member |
//! | `peer/{id}` | the HTTP and RPC URLs last learnt for a peer, `http \n rpc` |

use dyno_core::NodeId;
use dyno_core::topology::Topology;
use dyno_storage::{Keyspace, Store, StoreError};

use crate::sys::{random_u64, wall_ms};

const ACTOR: &[u8] = b"actor";
const GENERATION: &[u8] = b"generation";
const CLEAN_SHUTDOWN: &[u8] = b"clean_shutdown";
const TOPOLOGY: &[u8] = b"topology";
const SWEEP_DUE: &[u8] = b"sweep_due";
const WAS_MEMBER: &[u8] = b"was_member";
const PEER_PREFIX: &[u8] = b"peer/";

/// A little-endian u64 stored under `key` (`None` when absent or not 8
/// bytes long).
fn read_u64(store: &dyn Store, key: &[u8]) -> Result<Option<u64>, StoreError> {
    Ok(store
        .get(Keyspace::Meta, key)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(u64::from_le_bytes))
}

/// The actor id this start writes versions under: the previous one after
/// a clean shutdown, a new one otherwise, made durable before it is used.
///
/// Why: a node that lost its last writes (a power loss under `--durability
/// periodic`, whose unsynced tail of the log is gone) would count its
/// actor's dots again from where its disk left off, and give a new value
/// a dot that another replica already holds for an older one; the two
/// would be taken for the same version and one of them dropped, an
/// acknowledged write lost (found by the deterministic simulation). A new
/// actor after every unclean stop cannot collide with any dot issued
/// before; version vectors gain one entry per such restart.
pub fn actor_for_start(store: &dyn Store) -> Result<u64, StoreError> {
    let clean = store.get(Keyspace::Meta, CLEAN_SHUTDOWN)?.is_some();
    let actor = match read_u64(store, ACTOR)? {
        Some(a) if clean => a,
        _ => random_u64(),
    };
    let mut batch = dyno_storage::WriteBatch::new();
    batch.put(Keyspace::Meta, ACTOR.to_vec(), actor.to_le_bytes().to_vec());
    batch.delete(Keyspace::Meta, CLEAN_SHUTDOWN.to_vec());
    store.write(batch)?;
    store.sync()?;
    Ok(actor)
}

/// Records a clean shutdown (durably): the next start keeps the actor id.
/// Call it once nothing writes any more.
pub fn mark_clean_shutdown(store: &dyn Store) -> Result<(), StoreError> {
    store.put(Keyspace::Meta, CLEAN_SHUTDOWN, b"1")?;
    store.sync()
}

/// The next generation number for this node: above the last one, and at
/// least the wall clock in seconds, so that a node whose data directory was
/// wiped still starts a newer generation than its peers remember (Cassandra
/// does the same).
pub fn next_generation(store: &dyn Store) -> Result<u64, StoreError> {
    let g = read_u64(store, GENERATION)?
        .map_or(1, |g| g + 1)
        .max(wall_ms() / 1000);
    store.put(Keyspace::Meta, GENERATION, &g.to_le_bytes())?;
    // Durable before peers hear of it: a generation lost to a power loss
    // would be used twice, and peers would ignore the second's heartbeats.
    store.sync()?;
    Ok(g)
}

/// The persisted topology, if any.
pub fn topology(store: &dyn Store) -> Result<Option<Topology>, StoreError> {
    match store.get(Keyspace::Meta, TOPOLOGY)? {
        None => Ok(None),
        Some(raw) => Topology::decode(&raw)
            .map(Some)
            .map_err(|e| StoreError::Engine {
                message: format!("stored topology is unreadable: {e}"),
            }),
    }
}

/// Persists the topology `new`, replacing `old`, together with the markers
/// the change implies, in one atomic batch:
///
/// * `was_member` once this node was a member of a real ring (epoch 0 is the
///   placeholder of a node waiting to be joined);
/// * `sweep_due` whenever the ring settles at a new epoch (a commit, an
///   abort, or a first ring): once every live node has applied it, this node
///   deletes the items of every partition it does not replicate. That drops
///   what moved away, what an aborted change had sent here, and writes that
///   reached this node late, routed by an older ring.
pub fn save_topology(
    store: &dyn Store,
    old: &Topology,
    new: &Topology,
    me: &NodeId,
) -> Result<(), StoreError> {
    let mut b = dyno_storage::WriteBatch::new();
    if old.epoch > 0 && old.current.member(me).is_some() {
        b.put(Keyspace::Meta, WAS_MEMBER.to_vec(), vec![1]);
    }
    if new.next.is_none() && new.epoch > old.epoch {
        b.put(
            Keyspace::Meta,
            SWEEP_DUE.to_vec(),
            new.epoch.to_le_bytes().to_vec(),
        );
    }
    b.put(Keyspace::Meta, TOPOLOGY.to_vec(), new.encode());
    store.write(b)
}

/// Persists the first topology of a new data directory.
pub fn init_topology(store: &dyn Store, t: &Topology) -> Result<(), StoreError> {
    store.put(Keyspace::Meta, TOPOLOGY, &t.encode())
}

/// True while a sweep of partitions this node does not replicate is due.
pub fn sweep_due(store: &dyn Store) -> Result<bool, StoreError> {
    Ok(store.get(Keyspace::Meta, SWEEP_DUE)?.is_some())
}

/// The sweep is done.
pub fn clear_sweep_due(store: &dyn Store) -> Result<(), StoreError> {
    store.delete(Keyspace::Meta, SWEEP_DUE)
}

/// True once this node has been a member of a real ring.
pub fn was_member(store: &dyn Store) -> Result<bool, StoreError> {
    Ok(store.get(Keyspace::Meta, WAS_MEMBER)?.is_some())
}

/// Remembers the addresses last learnt for a peer, so that a restarted
/// node can reach its peers before any of them gossips to it (a node
/// started without seeds, the first of a cluster, would otherwise know no
/// address until then).
pub fn save_peer_addresses(
    store: &dyn Store,
    id: &NodeId,
    http: &str,
    rpc: &str,
) -> Result<(), StoreError> {
    let mut key = PEER_PREFIX.to_vec();
    key.extend_from_slice(id.as_str().as_bytes());
    store.put(Keyspace::Meta, &key, format!("{http}\n{rpc}").as_bytes())
}

/// Every peer's remembered addresses: `(id, http, rpc)`. Unreadable
/// records are skipped (gossip relearns them).
pub fn peer_addresses(store: &dyn Store) -> Result<Vec<(NodeId, String, String)>, StoreError> {
    let mut end = PEER_PREFIX.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    let mut out = Vec::new();
    for (k, v) in store.scan(Keyspace::Meta, PEER_PREFIX, Some(&end), usize::MAX)? {
        let id = std::str::from_utf8(&k[PEER_PREFIX.len()..])
            .ok()
            .and_then(|n| NodeId::new(n).ok());
        let addrs = std::str::from_utf8(&v)
            .ok()
            .and_then(|s| s.split_once('\n'))
            .map(|(h, r)| (h.to_owned(), r.to_owned()));
        if let (Some(id), Some((http, rpc))) = (id, addrs) {
            out.push((id, http, rpc));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dyno_core::{Member, Ring};
    use dyno_storage::MemoryStore;

    fn ring(names: &[&str]) -> Topology {
        let members = names
            .iter()
            .map(|n| Member::new(NodeId::new(*n).expect("id")))
            .collect();
        Topology::new(Ring::new(4, 2, members).expect("ring"))
    }

    #[test]
    fn the_actor_survives_only_a_clean_shutdown() {
        let store = MemoryStore::new();
        let first = actor_for_start(&store).expect("actor");
        // Killed, or power lost: a new actor.
        let second = actor_for_start(&store).expect("actor");
        assert_ne!(first, second);
        // Stopped cleanly: the same actor, once.
        mark_clean_shutdown(&store).expect("mark");
        assert_eq!(actor_for_start(&store).expect("actor"), second);
        assert_ne!(actor_for_start(&store).expect("actor"), second);
    }

    #[test]
    fn settling_at_a_new_epoch_marks_a_sweep_and_membership() {
        let store = MemoryStore::new();
        let me = NodeId::new("a").expect("id");
        let first = ring(&["a", "b"]);
        init_topology(&store, &first).expect("init");
        assert!(!sweep_due(&store).expect("read"));
        assert!(!was_member(&store).expect("read"));
        let mut next = first.clone();
        next.epoch += 1;
        save_topology(&store, &first, &next, &me).expect("save");
        assert!(sweep_due(&store).expect("read"));
        assert!(was_member(&store).expect("read"));
        assert_eq!(
            topology(&store).expect("read").map(|t| t.epoch),
            Some(next.epoch)
        );
        clear_sweep_due(&store).expect("clear");
        assert!(!sweep_due(&store).expect("read"));
    }

    #[test]
    fn peer_addresses_are_remembered_and_replaced() {
        let store = MemoryStore::new();
        let (a, b) = (NodeId::new("a").expect("id"), NodeId::new("b").expect("id"));
        save_peer_addresses(&store, &a, "http://1", "http://2").expect("save");
        save_peer_addresses(&store, &b, "http://3", "http://4").expect("save");
        save_peer_addresses(&store, &a, "http://5", "http://6").expect("replace");
        store
            .put(Keyspace::Meta, b"peer/c", b"no separator")
            .expect("junk");
        assert_eq!(
            peer_addresses(&store).expect("read"),
            vec![
                (a, "http://5".to_owned(), "http://6".to_owned()),
                (b, "http://3".to_owned(), "http://4".to_owned()),
            ]
        );
    }

    #[test]
    fn generations_only_grow() {
        let store = MemoryStore::new();
        let g1 = next_generation(&store).expect("g1");
        let g2 = next_generation(&store).expect("g2");
        assert!(g2 > g1);
    }
}
