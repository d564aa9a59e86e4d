//! The catalog: the tables (with their N/R/W, conflict mode and throughput
//! limit), the API keys (without secrets) and the tenants' states.
//!
//! Every node holds the whole catalog in memory and in its `meta` keyspace,
//! so it serves even when the control plane (or any other node) is down.
//! Records are versioned one by one (a hybrid timestamp, or the control
//! plane's catalog version, which is never below it); merging keeps
//! the highest version, so nodes converge whatever order updates arrive in.

use std::collections::{BTreeMap, HashMap};
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

    /// A majority of the N replicas: what read-modify-writes and
    /// consistent DynamoDB reads wait for, so that they overlap.
    pub fn majority(&self) -> u32 {
        self.n / 2 + 1
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
    if dyno_core::names::is_table_name(name, 1) {
        Ok(())
    } else {
        Err(ServiceError::new(
            ErrorCode::InvalidTableName,
            format!("invalid table name {name:?}: use 1 to 255 characters of A-Z a-z 0-9 _ - ."),
        ))
    }
}

/// Checks a tenant name: 2 to 63 characters of `[a-z0-9-]`, starting with a
/// letter or digit.
pub fn validate_tenant_name(name: &str) -> Result<(), ServiceError> {
    if dyno_core::names::is_tenant_name(name) {
        Ok(())
    } else {
        Err(ServiceError::new(
            ErrorCode::InvalidRequest,
            format!(
                "invalid tenant name {name:?}: use 2 to 63 characters of a-z 0-9 -, starting with a letter or digit"
            ),
        ))
    }
}

/// The tenant of tables made without a control plane (through
/// `/admin/v1/tables/{table}`), and of requests made with the cluster's
/// admin credential on the plain `/v1/tables/...` paths.
pub const DEFAULT_TENANT: &str = "default";

fn default_tenant() -> String {
    DEFAULT_TENANT.to_owned()
}

/// One table in the catalog.
///
/// `name` is the table's *storage name*: what item keys, hints and Merkle
/// trees carry. Tables made without a control plane (tenant `default`) are
/// stored under their own name, as before tenancy existed. Tables the
/// control plane provisions are stored under `#<id>`, the id Postgres gave
/// them: `#` is not allowed in a table name, so the two never collide, a
/// tenant's name never reaches the storage key, and a table deleted and
/// created again under the same name starts empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    /// The storage name.
    pub name: String,
    /// The owning tenant.
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// The name clients use (the storage name when empty, for entries
    /// written before tenancy).
    #[serde(default)]
    pub table: String,
    /// Its settings.
    #[serde(flatten)]
    pub config: TableConfig,
    /// Operations per second over the whole cluster, if limited.
    #[serde(default)]
    pub throughput_limit: Option<u32>,
    /// True once the table is deleted (kept as a tombstone so that the
    /// deletion wins every merge).
    #[serde(default)]
    pub deleted: bool,
    /// For a DynamoDB table (stored under `#p<id>`, with composite keys):
    /// its key schema, TTL attribute, tags and billing settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamo: Option<dyno_ddb::schema::TableSchema>,
    /// Version of the last change; the highest wins on merge.
    pub version: u64,
}

impl TableEntry {
    /// A table of the tenant `default`, stored under its own name (made
    /// through the data plane's admin API, without a control plane).
    pub fn in_default_tenant(name: &str, config: TableConfig, version: u64) -> TableEntry {
        TableEntry {
            name: name.to_owned(),
            tenant: DEFAULT_TENANT.to_owned(),
            table: name.to_owned(),
            config,
            throughput_limit: None,
            deleted: false,
            dynamo: None,
            version,
        }
    }

    /// True when the storage name and the schema agree: DynamoDB tables,
    /// and only they, are stored under `#p<id>` (their keys are composite,
    /// see `dyno_core::hash`).
    pub fn layout_ok(&self) -> bool {
        dyno_core::hash::is_partitioned(&self.name) == self.dynamo.is_some()
    }

    /// The name clients use.
    pub fn display_name(&self) -> &str {
        if self.table.is_empty() {
            &self.name
        } else {
            &self.table
        }
    }
}

/// What an API key's scope allows; each level includes the ones before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Get items.
    Read,
    /// Get, put and delete items.
    Write,
    /// Also create, change and delete the tables the scope names.
    Manage,
}

/// One scope of an API key: a table of the key's tenant (or `*`, every
/// table) and the access given to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// A table name, or `*`.
    pub table: String,
    /// The access.
    pub access: Access,
}

/// An API key as the data plane knows it: no secret, only what the key
/// may do. The secret is derived from the key's id with the cluster's key
/// master (see `auth.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    /// The key id (also its SigV4 access key id).
    pub id: String,
    /// Its tenant.
    pub tenant: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// True once revoked (kept so that the revocation wins every merge).
    #[serde(default)]
    pub revoked: bool,
    /// Version of the last change.
    pub version: u64,
}

/// A tenant's state as the data plane needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantEntry {
    /// The tenant's name.
    pub name: String,
    /// A suspended tenant's keys stop working.
    pub suspended: bool,
    /// Version of the last change.
    pub version: u64,
}

/// Any catalog record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    /// A table.
    Table(TableEntry),
    /// An API key.
    Key(KeyEntry),
    /// A tenant.
    Tenant(TenantEntry),
}

impl Record {
    /// The record's kind and id, unique in the catalog.
    pub fn id(&self) -> (&'static str, &str) {
        match self {
            Record::Table(t) => ("table", &t.name),
            Record::Key(k) => ("key", &k.id),
            Record::Tenant(t) => ("tenant", &t.name),
        }
    }

    /// Its version.
    pub fn version(&self) -> u64 {
        match self {
            Record::Table(t) => t.version,
            Record::Key(k) => k.version,
            Record::Tenant(t) => t.version,
        }
    }

    fn meta_key(&self) -> Vec<u8> {
        let (kind, id) = self.id();
        let prefix: &[u8] = match kind {
            "table" => PREFIX,
            "key" => KEY_PREFIX,
            _ => TENANT_PREFIX,
        };
        let mut key = prefix.to_vec();
        key.extend_from_slice(id.as_bytes());
        key
    }
}

/// A record's id and version, for the control plane's reconciler to diff
/// against (`GET /admin/v1/catalog`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordVersion {
    /// `table`, `key` or `tenant`.
    pub kind: String,
    /// Its id.
    pub id: String,
    /// Its version here.
    pub version: u64,
}

#[derive(Debug, Default)]
struct State {
    /// By storage name, deleted ones included.
    tables: BTreeMap<String, Arc<TableEntry>>,
    /// tenant → client name → storage name of the live table.
    by_name: HashMap<String, HashMap<String, String>>,
    keys: HashMap<String, Arc<KeyEntry>>,
    tenants: HashMap<String, TenantEntry>,
}

impl State {
    fn version_of(&self, r: &Record) -> Option<u64> {
        match r {
            Record::Table(t) => self.tables.get(&t.name).map(|e| e.version),
            Record::Key(k) => self.keys.get(&k.id).map(|e| e.version),
            Record::Tenant(t) => self.tenants.get(&t.name).map(|e| e.version),
        }
    }

    fn insert(&mut self, r: Record) {
        match r {
            Record::Table(mut t) => {
                if t.table.is_empty() {
                    t.table = t.name.clone();
                }
                let names = self.by_name.entry(t.tenant.clone()).or_default();
                if t.deleted {
                    if names.get(&t.table) == Some(&t.name) {
                        names.remove(&t.table);
                    }
                } else {
                    // A name taken by two live tables (a legacy table and a
                    // provisioned one): the newer change wins.
                    let keep_old = names
                        .get(&t.table)
                        .and_then(|old| self.tables.get(old))
                        .is_some_and(|old| {
                            old.name != t.name && !old.deleted && old.version > t.version
                        });
                    if !keep_old {
                        names.insert(t.table.clone(), t.name.clone());
                    }
                }
                self.tables.insert(t.name.clone(), Arc::new(t));
            }
            Record::Key(k) => {
                self.keys.insert(k.id.clone(), Arc::new(k));
            }
            Record::Tenant(t) => {
                self.tenants.insert(t.name.clone(), t);
            }
        }
    }
}

/// The node's copy of the catalog: tables, API keys and tenants.
///
/// Readers (every request) take the read lock for map lookups only.
/// Writers are serialised by `writer` and persist a record *before* taking
/// the write lock, so a slow disk (an fsync under `--durability sync`)
/// never blocks a request.
#[derive(Debug)]
pub struct Catalog {
    state: RwLock<State>,
    writer: Mutex<()>,
    store: Arc<dyn Store>,
}

const PREFIX: &[u8] = b"table/";
const KEY_PREFIX: &[u8] = b"apikey/";
const TENANT_PREFIX: &[u8] = b"tenant/";

fn scan_prefix(store: &dyn Store, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    Ok(store
        .scan(Keyspace::Meta, prefix, Some(&end), usize::MAX)?
        .into_iter()
        .map(|(_, v)| v)
        .collect())
}

impl Catalog {
    /// Loads the catalog from the store.
    pub fn load(store: Arc<dyn Store>) -> Result<Catalog, StoreError> {
        let mut state = State::default();
        for v in scan_prefix(store.as_ref(), PREFIX)? {
            match serde_json::from_slice::<TableEntry>(&v) {
                Ok(e) => state.insert(Record::Table(e)),
                Err(e) => tracing::error!(error = %e, "skipping an unreadable catalog entry"),
            }
        }
        for v in scan_prefix(store.as_ref(), KEY_PREFIX)? {
            match serde_json::from_slice::<KeyEntry>(&v) {
                Ok(e) => state.insert(Record::Key(e)),
                Err(e) => tracing::error!(error = %e, "skipping an unreadable API key entry"),
            }
        }
        for v in scan_prefix(store.as_ref(), TENANT_PREFIX)? {
            match serde_json::from_slice::<TenantEntry>(&v) {
                Ok(e) => state.insert(Record::Tenant(e)),
                Err(e) => tracing::error!(error = %e, "skipping an unreadable tenant entry"),
            }
        }
        Ok(Catalog {
            state: RwLock::new(state),
            writer: Mutex::new(()),
            store,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// A live table's settings, by storage name.
    pub fn get(&self, name: &str) -> Option<TableConfig> {
        self.read()
            .tables
            .get(name)
            .filter(|e| !e.deleted)
            .map(|e| e.config)
    }

    /// A live table's entry, by storage name.
    pub fn entry(&self, name: &str) -> Option<Arc<TableEntry>> {
        self.read().tables.get(name).filter(|e| !e.deleted).cloned()
    }

    /// A tenant's live table, by the name its clients use.
    pub fn resolve(&self, tenant: &str, table: &str) -> Option<Arc<TableEntry>> {
        let state = self.read();
        let storage = state.by_name.get(tenant)?.get(table)?;
        state.tables.get(storage).filter(|e| !e.deleted).cloned()
    }

    /// Every live table, by storage name.
    pub fn list(&self) -> Vec<TableEntry> {
        self.read()
            .tables
            .values()
            .filter(|e| !e.deleted)
            .map(|e| TableEntry::clone(e))
            .collect()
    }

    /// A tenant's live tables, by name.
    pub fn list_tenant(&self, tenant: &str) -> Vec<TableEntry> {
        let mut v: Vec<TableEntry> = self
            .read()
            .tables
            .values()
            .filter(|e| !e.deleted && e.tenant == tenant)
            .map(|e| TableEntry::clone(e))
            .collect();
        v.sort_by(|a, b| a.table.cmp(&b.table));
        v
    }

    /// An API key (shared: requests hold it without copying).
    pub fn key(&self, id: &str) -> Option<Arc<KeyEntry>> {
        self.read().keys.get(id).cloned()
    }

    /// True when the tenant is suspended.
    pub fn tenant_suspended(&self, tenant: &str) -> bool {
        self.read().tenants.get(tenant).is_some_and(|t| t.suspended)
    }

    /// Every record, deleted tables and revoked keys included (what the
    /// catalog exchange sends).
    pub fn records(&self) -> Vec<Record> {
        let state = self.read();
        state
            .tables
            .values()
            .map(|e| Record::Table(TableEntry::clone(e)))
            .chain(state.keys.values().map(|k| Record::Key(KeyEntry::clone(k))))
            .chain(state.tenants.values().cloned().map(Record::Tenant))
            .collect()
    }

    /// Every record's id and version, read without copying the records.
    pub fn versions(&self) -> Vec<RecordVersion> {
        let state = self.read();
        let v = |kind: &str, id: &str, version: u64| RecordVersion {
            kind: kind.to_owned(),
            id: id.to_owned(),
            version,
        };
        state
            .tables
            .values()
            .map(|t| v("table", &t.name, t.version))
            .chain(state.keys.values().map(|k| v("key", &k.id, k.version)))
            .chain(
                state
                    .tenants
                    .values()
                    .map(|t| v("tenant", &t.name, t.version)),
            )
            .collect()
    }

    /// The replication factors of the live tables, ascending.
    pub fn replication_factors(&self) -> std::collections::BTreeSet<u32> {
        self.list().iter().map(|e| e.config.n).collect()
    }

    /// Merges a table entry (see [`Catalog::merge_record`]).
    pub fn merge(&self, entry: TableEntry) -> Result<bool, StoreError> {
        self.merge_record(Record::Table(entry))
    }

    /// Merges a record: kept if newer than what this node has. Returns true
    /// when it changed the catalog.
    pub fn merge_record(&self, record: Record) -> Result<bool, StoreError> {
        let _one_writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let newer = self
            .read()
            .version_of(&record)
            .is_none_or(|old| old < record.version());
        if !newer {
            return Ok(false);
        }
        let bytes = match &record {
            Record::Table(t) => serde_json::to_vec(t),
            Record::Key(k) => serde_json::to_vec(k),
            Record::Tenant(t) => serde_json::to_vec(t),
        }
        .map_err(|e| StoreError::Engine {
            message: e.to_string(),
        })?;
        self.store.put(Keyspace::Meta, &record.meta_key(), &bytes)?;
        self.state
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(record);
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
