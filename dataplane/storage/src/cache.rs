//! A bounded cache of recently written and read items, in front of
//! RocksDB's point reads.
//!
//! Every item write is preceded by a read of the item (the version vectors
//! are merged, the Merkle tree and the table's load are updated from the
//! old state), and for the keys a workload touches often that read is a
//! search of the memtable's skip list: about a tenth of a node's CPU under
//! YCSB-A (bench/MICRO.md, tenth pass). This cache answers those reads
//! from a hash map.
//!
//! Coherence: the store updates the cache after each batch it writes (a
//! put stores the new value, a delete removes the key) and drops the key
//! whenever its bytes change outside a batch (fault injection, quarantine).
//! A read that misses fills the cache only if no write touched the key's
//! shard between its miss and its fill (each shard counts its writes), so a
//! slow reader never puts back a value a writer has replaced. A reader may
//! still see the old value while a write of the same key is between the
//! engine and the cache: the same as a read that ran just before it.
//!
//! Eviction is CLOCK within each shard: entries are queued in insertion
//! order; a hit marks an entry, and eviction gives a marked entry one more
//! round instead of dropping it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Shards (each with its own lock and its own share of the budget).
const SHARDS: usize = 64;
/// What an entry costs beyond its key and value (map slot, queue slot).
const OVERHEAD: usize = 64;

struct Entry {
    value: Option<Box<[u8]>>,
    marked: bool,
}

#[derive(Default)]
struct Shard {
    map: HashMap<Box<[u8]>, Entry>,
    /// Insertion order for CLOCK; may hold keys already gone from `map`.
    queue: VecDeque<Box<[u8]>>,
    bytes: usize,
    /// Writes that touched this shard: a fill is refused if it moved.
    writes: u64,
}

fn cost(key: &[u8], value: &Option<Box<[u8]>>) -> usize {
    key.len() + value.as_ref().map_or(0, |v| v.len()) + OVERHEAD
}

impl Shard {
    fn remove(&mut self, key: &[u8]) {
        if let Some(e) = self.map.remove(key) {
            self.bytes -= cost(key, &e.value);
        }
    }

    fn insert(&mut self, key: &[u8], value: Option<&[u8]>, budget: usize) {
        let value: Option<Box<[u8]>> = value.map(Box::from);
        let size = cost(key, &value);
        if size > budget {
            self.remove(key);
            return;
        }
        match self.map.get_mut(key) {
            Some(e) => {
                self.bytes = self.bytes - cost(key, &e.value) + size;
                e.value = value;
            }
            None => {
                let key: Box<[u8]> = Box::from(key);
                self.queue.push_back(key.clone());
                self.map.insert(
                    key,
                    Entry {
                        value,
                        marked: false,
                    },
                );
                self.bytes += size;
            }
        }
        self.evict(budget);
        // Keys removed by deletes stay queued until eviction reaches them;
        // keep the queue from outgrowing the map by much.
        if self.queue.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.queue.retain(|k| map.contains_key(k));
        }
    }

    fn evict(&mut self, budget: usize) {
        while self.bytes > budget {
            let Some(key) = self.queue.pop_front() else {
                return;
            };
            match self.map.get_mut(&key) {
                Some(e) if e.marked => {
                    e.marked = false;
                    self.queue.push_back(key);
                }
                Some(_) => self.remove(&key),
                None => {}
            }
        }
    }
}

/// What [`ValueCache::get`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The key's value (`None`: known to be absent).
    Hit(Option<Vec<u8>>),
    /// Not cached: read the engine, then [`ValueCache::fill`] with this.
    Miss(Ticket),
}

/// Proof of a miss, for filling the cache after reading the engine.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Ticket {
    shard: usize,
    writes: u64,
}

/// A cache's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads it answered.
    pub hits: u64,
    /// Reads it sent to the engine.
    pub misses: u64,
    /// Bytes held (keys, values and per-entry overhead).
    pub bytes: u64,
}

/// A sharded, byte-bounded map from keys to values (or their absence).
pub struct ValueCache {
    shards: Box<[Mutex<Shard>]>,
    shard_budget: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for ValueCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ValueCache({} bytes)", self.shard_budget * SHARDS)
    }
}

impl ValueCache {
    /// A cache holding up to about `bytes` of keys and values.
    pub fn new(bytes: usize) -> ValueCache {
        ValueCache {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            shard_budget: bytes / SHARDS,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn shard_of(&self, key: &[u8]) -> usize {
        (xxhash_rust::xxh3::xxh3_64(key) as usize) % SHARDS
    }

    fn lock(&self, shard: usize) -> std::sync::MutexGuard<'_, Shard> {
        // A panic while holding a shard leaves at worst a stale byte count.
        self.shards[shard]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached value of `key`, or a ticket to fill it with.
    pub fn get(&self, key: &[u8]) -> Lookup {
        let shard = self.shard_of(key);
        let mut s = self.lock(shard);
        if let Some(e) = s.map.get_mut(key) {
            e.marked = true;
            let value = e.value.as_deref().map(<[u8]>::to_vec);
            drop(s);
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Lookup::Hit(value);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        Lookup::Miss(Ticket {
            shard,
            writes: s.writes,
        })
    }

    /// Caches what the engine answered after `ticket`'s miss, unless a
    /// write touched the shard since.
    pub fn fill(&self, key: &[u8], ticket: Ticket, value: Option<&[u8]>) {
        let mut s = self.lock(ticket.shard);
        if s.writes == ticket.writes {
            s.insert(key, value, self.shard_budget);
        }
    }

    /// Records a write the engine has applied: the key now holds `value`
    /// (`None`: deleted).
    pub fn wrote(&self, key: &[u8], value: Option<&[u8]>) {
        let mut s = self.lock(self.shard_of(key));
        s.writes += 1;
        s.insert(key, value, self.shard_budget);
    }

    /// Forgets `key` (its stored bytes changed outside a batch, or a write
    /// may or may not have been applied).
    pub fn forget(&self, key: &[u8]) {
        let mut s = self.lock(self.shard_of(key));
        s.writes += 1;
        s.remove(key);
    }

    /// Bytes held (keys, values and overhead).
    pub fn bytes(&self) -> usize {
        (0..SHARDS).map(|i| self.lock(i).bytes).sum()
    }

    /// Hits, misses and bytes held.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bytes: self.bytes() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(c: &ValueCache, key: &[u8]) -> Option<Option<Vec<u8>>> {
        match c.get(key) {
            Lookup::Hit(v) => Some(v),
            Lookup::Miss(_) => None,
        }
    }

    #[test]
    fn writes_are_read_back_and_deletes_are_cached_as_absent() {
        let c = ValueCache::new(1 << 20);
        assert_eq!(hit(&c, b"k"), None);
        c.wrote(b"k", Some(b"v1"));
        assert_eq!(hit(&c, b"k"), Some(Some(b"v1".to_vec())));
        c.wrote(b"k", Some(b"v2"));
        assert_eq!(hit(&c, b"k"), Some(Some(b"v2".to_vec())));
        c.wrote(b"k", None);
        assert_eq!(hit(&c, b"k"), Some(None));
        c.forget(b"k");
        assert_eq!(hit(&c, b"k"), None);
        assert_eq!(
            c.stats(),
            CacheStats {
                hits: 3,
                misses: 2,
                bytes: 0
            }
        );
    }

    #[test]
    fn a_fill_after_a_write_to_the_shard_is_refused() {
        let c = ValueCache::new(1 << 20);
        let Lookup::Miss(t) = c.get(b"k") else {
            panic!("empty cache hit")
        };
        // A writer replaced the value after the reader read the engine.
        c.wrote(b"k", Some(b"new"));
        c.fill(b"k", t, Some(b"old"));
        assert_eq!(hit(&c, b"k"), Some(Some(b"new".to_vec())));
        // Forgetting also counts as a write.
        c.forget(b"k");
        let Lookup::Miss(t) = c.get(b"k") else {
            panic!("forgotten key hit")
        };
        c.forget(b"k");
        c.fill(b"k", t, Some(b"old"));
        assert_eq!(hit(&c, b"k"), None);
        // An undisturbed fill is kept.
        let Lookup::Miss(t) = c.get(b"k") else {
            panic!("forgotten key hit")
        };
        c.fill(b"k", t, Some(b"now"));
        assert_eq!(hit(&c, b"k"), Some(Some(b"now".to_vec())));
    }

    #[test]
    fn the_budget_holds_and_hot_keys_survive_eviction() {
        let budget = 64 * 8 * (1024 + OVERHEAD + 8);
        let c = ValueCache::new(budget);
        let value = vec![7u8; 1024];
        for round in 0..50u32 {
            // One hot key read between every batch of cold writes.
            c.wrote(b"hot", Some(&value));
            for i in 0..200u32 {
                let key = format!("cold-{round}-{i}");
                c.wrote(key.as_bytes(), Some(&value));
                if i % 10 == 0 {
                    assert!(
                        hit(&c, b"hot").is_some(),
                        "hot key evicted in round {round}"
                    );
                }
            }
            assert!(c.bytes() <= budget, "{} > {budget}", c.bytes());
        }
        // Values larger than a shard's budget are not cached at all.
        c.wrote(b"huge", Some(&vec![0u8; budget]));
        assert_eq!(hit(&c, b"huge"), None);
    }

    #[test]
    fn deleted_keys_do_not_grow_the_queue_without_bound() {
        let c = ValueCache::new(1 << 30);
        for i in 0..100_000u32 {
            let key = i.to_be_bytes();
            c.wrote(&key, Some(b"v"));
            c.forget(&key);
        }
        let queued: usize = (0..SHARDS).map(|i| c.lock(i).queue.len()).sum();
        assert!(queued < 64 * SHARDS + 2 * SHARDS, "{queued} keys queued");
        assert_eq!(c.bytes(), 0);
    }
}
