//! The catalog: the tables, with their N/R/W and conflict mode.
//!
//! Every node holds the whole catalog in memory and in its `meta` keyspace,
//! so it serves even when the control plane (or any other node) is down.
//! Entries are versioned one by one with a hybrid timestamp; merging keeps
//! the highest version, so nodes converge whatever order updates arrive in.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use dyno_core::ConflictMode;
use dyno_core::planner::Movement;
use dyno_core::topology::Topology;
use dyno_storage::{Keyspace, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, ServiceError};

/// Highest replication factor a table may ask for.
pub const MAX_N: u32 = 7;

/// A table's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableConfig {
    /// Replicas per key.
    pub n: u32,
    /// Default read quorum.
    pub r: u32,
    /// Default write quorum.
    pub w: u32,
    /// How concurrent writes are resolved.
    pub conflict: ConflictArg,
}

/// The conflict mode as the API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ConflictArg {
    /// Keep concurrent values as siblings.
    #[default]
    Siblings,
    /// Last writer wins.
    Lww,
}

impl From<ConflictArg> for ConflictMode {
    fn from(c: ConflictArg) -> Self {
        match c {
            ConflictArg::Siblings => ConflictMode::Siblings,
            ConflictArg::Lww => ConflictMode::Lww,
        }
    }
}

impl From<ConflictMode> for ConflictArg {
    fn from(m: ConflictMode) -> Self {
        match m {
            ConflictMode::Siblings => ConflictArg::Siblings,
            ConflictMode::Lww => ConflictArg::Lww,
        }
    }
}

impl TableConfig {
    /// The conflict mode.
    pub fn mode(&self) -> ConflictMode {
        self.conflict.into()
    }

    /// Checks the settings for a cluster of `members` nodes.
    pub fn validate(&self, members: usize) -> Result<(), ServiceError> {
        if !(1..=MAX_N).contains(&self.n) {
            return Err(ServiceError::new(
                ErrorCode::InvalidTableConfig,
                format!("n must be between 1 and {MAX_N}, got {}", self.n),
            ));
        }
        if self.n as usize > members {
            return Err(ServiceError::new(
                ErrorCode::InvalidTableConfig,
                format!("n = {} but the cluster has only {members} nodes", self.n),
            ));
        }
        for (name, v) in [("r", self.r), ("w", self.w)] {
            if !(1..=self.n).contains(&v) {
                return Err(ServiceError::new(
                    ErrorCode::InvalidTableConfig,
                    format!("{name} must be between 1 and n = {}, got {v}", self.n),
                ));
            }
        }
        Ok(())
    }
}

/// Checks a table name: 1 to 255 bytes of `[A-Za-z0-9_.-]`.
pub fn validate_table_name(name: &str) -> Result<(), ServiceError> {
    let ok = (1..=dyno_core::keys::MAX_TABLE_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::new(
            ErrorCode::InvalidTableName,
            format!("invalid table name {name:?}: use 1 to 255 characters of A-Z a-z 0-9 _ - ."),
        ))
    }
}

/// One catalog entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    /// The table's name.
    pub name: String,
    /// Its settings.
    #[serde(flatten)]
    pub config: TableConfig,
    /// Hybrid timestamp of the last change.
    pub version: u64,
}

/// The node's copy of the catalog.
///
/// Readers (every request) take the `tables` read lock for a map lookup
/// only. Writers are serialised by `writer` and persist an entry *before*
/// taking the write lock, so a slow disk (an fsync under `--durability
/// sync`) never blocks a request.
#[derive(Debug)]
pub struct Catalog {
    tables: RwLock<BTreeMap<String, TableEntry>>,
    writer: Mutex<()>,
    store: Arc<dyn Store>,
}

const PREFIX: &[u8] = b"table/";

impl Catalog {
    /// Loads the catalog from the store.
    pub fn load(store: Arc<dyn Store>) -> Result<Catalog, StoreError> {
        let mut end = PREFIX.to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let mut tables = BTreeMap::new();
        for (_, v) in store.scan(Keyspace::Meta, PREFIX, Some(&end), usize::MAX)? {
            match serde_json::from_slice::<TableEntry>(&v) {
                Ok(e) => {
                    tables.insert(e.name.clone(), e);
                }
                Err(e) => tracing::error!(error = %e, "skipping an unreadable catalog entry"),
            }
        }
        Ok(Catalog {
            tables: RwLock::new(tables),
            writer: Mutex::new(()),
            store,
        })
    }

    /// A table's settings.
    pub fn get(&self, name: &str) -> Option<TableConfig> {
        self.tables.read().ok()?.get(name).map(|e| e.config)
    }

    /// All entries, by name.
    pub fn list(&self) -> Vec<TableEntry> {
        self.tables
            .read()
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The replication factors of the tables, ascending.
    pub fn replication_factors(&self) -> std::collections::BTreeSet<u32> {
        self.list().iter().map(|e| e.config.n).collect()
    }

    /// Merges an entry: kept if newer than what this node has. Returns true
    /// when it changed the catalog.
    pub fn merge(&self, entry: TableEntry) -> Result<bool, StoreError> {
        let _one_writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let newer = self
            .tables
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&entry.name)
            .is_none_or(|old| old.version < entry.version);
        if !newer {
            return Ok(false);
        }
        let mut key = PREFIX.to_vec();
        key.extend_from_slice(entry.name.as_bytes());
        let bytes = serde_json::to_vec(&entry).map_err(|e| StoreError::Engine {
            message: e.to_string(),
        })?;
        self.store.put(Keyspace::Meta, &key, &bytes)?;
        self.tables
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(entry.name.clone(), entry);
        Ok(true)
    }

    /// The conflict mode of the table an item key belongs to (`None` when
    /// the key does not decode or the table is not known here yet).
    pub fn mode_of_item(&self, item_key: &[u8]) -> Option<ConflictMode> {
        let ik = dyno_core::keys::decode_item_key(item_key).ok()?;
        self.get(ik.table).map(|c| c.mode())
    }

    /// The replication factor a ring change is planned with: the largest
    /// among the tables, clamped to the larger ring (the partitions to move
    /// are those of the largest replica sets; sources filter items by their
    /// own table's N).
    pub fn change_n(&self, topology: &Topology) -> usize {
        let members = topology
            .next
            .as_ref()
            .map_or(0, |n| n.members().len())
            .max(topology.current.members().len());
        let largest = self.replication_factors().last().copied();
        (largest.unwrap_or(3) as usize).min(members).max(1)
    }

    /// What the change under way moves, in partition replicas.
    pub fn planned_movement(&self, topology: &Topology) -> Option<Movement> {
        let next = topology.next.as_ref()?;
        Some(dyno_core::planner::movement(
            &topology.current,
            next,
            self.change_n(topology),
        ))
    }
}
