//! The catalog: the tables, with their N/R/W and conflict mode.
//!
//! Every node holds the whole catalog in memory and in its `meta` keyspace,
//! so it serves even when the control plane (or any other node) is down.
//! Entries are versioned one by one with a hybrid timestamp; merging keeps
//! the highest version, so nodes converge whatever order updates arrive in.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use dyno_core::ConflictMode;
use dyno_storage::{Keyspace, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

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
    pub fn validate(&self, members: usize) -> Result<(), ApiError> {
        if !(1..=MAX_N).contains(&self.n) {
            return Err(ApiError::bad(
                "InvalidTableConfig",
                format!("n must be between 1 and {MAX_N}, got {}", self.n),
            ));
        }
        if self.n as usize > members {
            return Err(ApiError::bad(
                "InvalidTableConfig",
                format!("n = {} but the cluster has only {members} nodes", self.n),
            ));
        }
        for (name, v) in [("r", self.r), ("w", self.w)] {
            if !(1..=self.n).contains(&v) {
                return Err(ApiError::bad(
                    "InvalidTableConfig",
                    format!("{name} must be between 1 and n = {}, got {v}", self.n),
                ));
            }
        }
        Ok(())
    }
}

/// Checks a table name: 1 to 255 bytes of `[A-Za-z0-9_.-]`.
pub fn validate_table_name(name: &str) -> Result<(), ApiError> {
    let ok = (1..=dyno_core::keys::MAX_TABLE_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad(
            "InvalidTableName",
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
#[derive(Debug)]
pub struct Catalog {
    tables: RwLock<BTreeMap<String, TableEntry>>,
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
        let mut tables = self.tables.write().unwrap_or_else(|e| e.into_inner());
        if tables
            .get(&entry.name)
            .is_some_and(|old| old.version >= entry.version)
        {
            return Ok(false);
        }
        let mut key = PREFIX.to_vec();
        key.extend_from_slice(entry.name.as_bytes());
        let bytes = serde_json::to_vec(&entry).map_err(|e| StoreError::Engine {
            message: e.to_string(),
        })?;
        self.store.put(Keyspace::Meta, &key, &bytes)?;
        tables.insert(entry.name.clone(), entry);
        Ok(true)
    }
}
