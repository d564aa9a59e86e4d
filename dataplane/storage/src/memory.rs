//! The in-memory backend, for simulation and tests. It frames values with
//! the format byte like RocksDB does, so both behave the same.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use crate::{BatchOp, Entry, Keyspace, Store, StoreError, WriteBatch, frame, unframe};

type Maps = BTreeMap<Keyspace, BTreeMap<Vec<u8>, Vec<u8>>>;

/// A store that lives in memory and is lost when dropped.
#[derive(Debug, Default)]
pub struct MemoryStore {
    maps: Mutex<Maps>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Maps> {
        // A panic while holding the lock cannot leave a map half-updated
        // (batches are applied to a copy first), so poisoning is harmless.
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Up to `limit` entries in `[start, end)`, in key order or reversed.
    fn range(
        &self,
        keyspace: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<Entry>, StoreError> {
        let maps = self.lock();
        let Some(m) = maps.get(&keyspace) else {
            return Ok(Vec::new());
        };
        if end.is_some_and(|e| e <= start) {
            return Ok(Vec::new());
        }
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        let range = m.range::<[u8], _>((Bound::Included(start), upper));
        let entries: Box<dyn Iterator<Item = (&Vec<u8>, &Vec<u8>)>> = if reverse {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        entries
            .take(limit)
            .map(|(k, v)| Ok((k.clone(), unframe(keyspace, k, v)?)))
            .collect()
    }
}

impl Store for MemoryStore {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let maps = self.lock();
        match maps.get(&keyspace).and_then(|m| m.get(key)) {
            Some(v) => unframe(keyspace, key, v).map(Some),
            None => Ok(None),
        }
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut maps = self.lock();
        for op in batch.ops {
            match op {
                BatchOp::Put {
                    keyspace,
                    key,
                    value,
                } => {
                    let framed = frame(&key, &value);
                    maps.entry(keyspace).or_default().insert(key, framed);
                }
                BatchOp::Delete { keyspace, key } => {
                    if let Some(m) = maps.get_mut(&keyspace) {
                        m.remove(&key);
                    }
                }
            }
        }
        Ok(())
    }

    fn scan(
        &self,
        keyspace: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.range(keyspace, start, end, limit, false)
    }

    fn scan_rev(
        &self,
        keyspace: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.range(keyspace, start, end, limit, true)
    }

    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn get_stored(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().get(&keyspace).and_then(|m| m.get(key)).cloned())
    }

    fn put_stored(
        &self,
        keyspace: Keyspace,
        key: &[u8],
        stored: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.lock()
            .entry(keyspace)
            .or_default()
            .insert(key.to_vec(), stored);
        Ok(())
    }
}
