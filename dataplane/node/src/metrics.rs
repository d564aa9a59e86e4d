//! Prometheus metrics: request latency per operation and table, replica RPC
//! errors per peer and kind, and the hint backlog per target.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Raises a counter that mirrors a count kept elsewhere up to `to`.
fn catch_up(c: &Counter, to: u64) {
    let now = c.get();
    if to > now {
        c.inc_by(to - now);
    }
}

/// A count as a gauge's value.
fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Labels of a request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// get, put or delete.
    pub op: &'static str,
    /// The tenant (`_unknown` when neither the table nor the caller names
    /// a known one).
    pub tenant: String,
    /// The table, as its clients name it (`_unknown` for tables the
    /// catalog does not have, so that the label set stays bounded).
    pub table: String,
    /// ok, or the error code.
    pub outcome: &'static str,
}

/// Labels of a replica RPC error.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// The peer.
    pub peer: String,
    /// unreachable, timeout or failed.
    pub kind: &'static str,
}

/// Labels of per-target hint figures.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    /// The node the hints are for.
    pub target: String,
}

/// Labels of per-table figures.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    /// The owning tenant.
    pub tenant: String,
    /// The table, as its clients name it.
    pub table: String,
}

/// Labels of replica round trips.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RttLabels {
    /// The replica.
    pub peer: String,
    /// `write` or `read`.
    pub op: &'static str,
}

fn latency_histogram() -> Histogram {
    // 100 µs to ~9 s, buckets a factor of √2 apart: quantiles read from
    // them (the console's charts) are within about ±20%.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001,
        std::f64::consts::SQRT_2,
        34,
    ))
}

fn rtt_histogram() -> Histogram {
    // 25 µs to ~2.3 s, a factor of √2 apart.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.000_025,
        std::f64::consts::SQRT_2,
        34,
    ))
}

/// The node's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Request latency in seconds.
    pub requests: Family<OpLabels, Histogram, fn() -> Histogram>,
    /// Replica RPC errors.
    pub rpc_errors: Family<RpcLabels, Counter>,
    /// Round trips of replica writes and reads this node coordinated, per
    /// replica (the staleness model's input).
    pub replica_rtt: Family<RttLabels, Histogram, fn() -> Histogram>,
    /// Hints held per target.
    pub hint_backlog: Family<TargetLabels, Gauge>,
    /// Hint bytes held per target.
    pub hint_backlog_bytes: Family<TargetLabels, Gauge>,
    /// Hints delivered per target.
    pub hints_delivered: Family<TargetLabels, Counter>,
    /// Hints dropped (too old, or backlog full) per target.
    pub hints_dropped: Family<TargetLabels, Counter>,
    /// Read repairs sent.
    pub read_repairs: Counter,
    /// Reads that asked a spare replica because the ones asked were slow.
    pub speculative_reads: Counter,
    /// Request-path storage operations that needed the disk and ran on the
    /// blocking pool instead of the async thread.
    pub disk_reads: Counter,
    /// Request-path operations that found their key's lock stripe busy
    /// and ran on the blocking pool.
    pub stripe_waits: Counter,
    /// Anti-entropy: keys compared with a peer.
    pub aae_keys_compared: Counter,
    /// Anti-entropy: keys that differed and were repaired (either side).
    pub aae_keys_repaired: Counter,
    /// Anti-entropy: object bytes sent to peers.
    pub aae_bytes_sent: Counter,
    /// Anti-entropy: object bytes received from peers.
    pub aae_bytes_received: Counter,
    /// Tombstones removed by garbage collection.
    pub tombstones_dropped: Counter,
    /// Handoff: bytes received while streaming partitions.
    pub handoff_bytes_received: Counter,
    /// Handoff: items dropped after their partition moved away.
    pub handoff_items_dropped: Counter,
    /// DynamoDB items deleted by the TTL reaper.
    pub ttl_deleted: Counter,
    /// Damaged stored items found and set aside.
    damaged_items: Counter,
    /// Damaged stored hints found and set aside.
    damaged_hints: Counter,
    /// Item cache: reads it answered.
    item_cache_hits: Counter,
    /// Item cache: reads it sent to RocksDB.
    item_cache_misses: Counter,
    /// Item cache: bytes held.
    item_cache_bytes: Gauge,
    /// Live items per table held on this node (replica copies).
    table_items: Family<TableLabels, Gauge>,
    /// Their bytes.
    table_bytes: Family<TableLabels, Gauge>,
    /// The replica links' counters.
    link: crate::link::Stats,
    /// The group commit's counters (`--durability sync`).
    wal: crate::durable::Stats,
    /// The tables last set, so that a deleted table's series go away.
    tables_set: std::sync::Mutex<std::collections::HashSet<TableLabels>>,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        Metrics::with_link(crate::link::Stats::default())
    }

    /// Registers every metric, the replica links' counters being `link`
    /// (shared with the node's peers and its link server).
    pub fn with_link(link: crate::link::Stats) -> Metrics {
        let mut registry = Registry::with_prefix("dyno");
        registry.register(
            "replica_link_frames",
            "Replica frames (calls and replies) this node wrote on its replica links",
            link.frames.clone(),
        );
        registry.register(
            "replica_link_writes",
            "Socket writes that carried them (frames / writes: calls per system call)",
            link.writes.clone(),
        );
        registry.register(
            "replica_link_fallbacks",
            "Peers found without a replica link (an older version), called on the gRPC stream",
            link.fallbacks.clone(),
        );
        let wal = crate::durable::Stats::default();
        registry.register(
            "wal_fsyncs",
            "Fsyncs of the write-ahead log run by the group commit (--durability sync)",
            wal.fsyncs.clone(),
        );
        registry.register(
            "wal_fsync_waits",
            "Writes that waited for a group-commit fsync (waits / fsyncs: writes per fsync)",
            wal.waits.clone(),
        );
        let requests = Family::<OpLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "request_duration_seconds",
            "Client request latency by operation, table and outcome",
            requests.clone(),
        );
        let replica_rtt = Family::<RttLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            rtt_histogram as fn() -> Histogram,
        );
        registry.register(
            "replica_rtt_seconds",
            "Round trip of replica writes and reads coordinated by this node, per replica",
            replica_rtt.clone(),
        );
        let rpc_errors = Family::default();
        registry.register(
            "replica_rpc_errors",
            "Failed replica RPCs by peer and kind",
            rpc_errors.clone(),
        );
        let hint_backlog = Family::default();
        registry.register(
            "hint_backlog",
            "Hints held for each unreachable node",
            hint_backlog.clone(),
        );
        let hint_backlog_bytes = Family::default();
        registry.register(
            "hint_backlog_bytes",
            "Bytes of hints held for each node",
            hint_backlog_bytes.clone(),
        );
        let hints_delivered = Family::default();
        registry.register(
            "hints_delivered",
            "Hints delivered to their node",
            hints_delivered.clone(),
        );
        let hints_dropped = Family::default();
        registry.register(
            "hints_dropped",
            "Hints dropped (expired or backlog full)",
            hints_dropped.clone(),
        );
        let read_repairs = Counter::default();
        registry.register(
            "read_repairs",
            "Stale replicas repaired after a read",
            read_repairs.clone(),
        );
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let speculative_reads = counter(
            "speculative_reads",
            "Reads that asked a spare replica because the replicas asked were slower than their usual round trip",
        );
        let disk_reads = counter(
            "request_disk_reads",
            "Request-path storage operations whose reads missed memory (memtables and block cache) and ran on the blocking pool",
        );
        let stripe_waits = counter(
            "request_stripe_waits",
            "Request-path storage operations that found their key's lock stripe held and ran on the blocking pool instead of waiting on a request thread",
        );
        let aae_keys_compared = counter(
            "aae_keys_compared",
            "Keys compared with a peer by anti-entropy",
        );
        let aae_keys_repaired = counter(
            "aae_keys_repaired",
            "Keys that differed and were repaired by anti-entropy",
        );
        let aae_bytes_sent = counter(
            "aae_bytes_sent",
            "Object bytes sent to peers by anti-entropy",
        );
        let aae_bytes_received = counter(
            "aae_bytes_received",
            "Object bytes received from peers by anti-entropy",
        );
        let tombstones_dropped = counter(
            "tombstones_dropped",
            "Tombstones removed once every replica held them past the grace period",
        );
        let handoff_bytes_received = counter(
            "handoff_bytes_received",
            "Bytes received while streaming partitions in a ring change",
        );
        let handoff_items_dropped = counter(
            "handoff_items_dropped",
            "Items dropped after their partition moved to other nodes",
        );
        let ttl_deleted = counter(
            "ttl_deleted",
            "DynamoDB items deleted by the TTL reaper after they expired",
        );
        let damaged_items = counter(
            "damaged_items",
            "Stored items that failed their checksum or decoding, set aside and left to repair from other replicas",
        );
        let damaged_hints = counter(
            "damaged_hints",
            "Stored hints that failed their checksum or decoding, set aside",
        );
        let item_cache_hits = counter(
            "item_cache_hits",
            "Item reads (a request's read, or the read before a write) answered by the item cache (`--item-cache-mib`)",
        );
        let item_cache_misses = counter(
            "item_cache_misses",
            "Item reads the item cache sent to RocksDB",
        );
        let item_cache_bytes = Gauge::default();
        registry.register(
            "item_cache_bytes",
            "Bytes held by the item cache (keys, values and per-entry overhead)",
            item_cache_bytes.clone(),
        );
        let table_items = Family::default();
        registry.register(
            "table_items",
            "Live items of each table held on this node (replica copies: a table's items are about the sum over nodes divided by N)",
            table_items.clone(),
        );
        let table_bytes = Family::default();
        registry.register(
            "table_bytes",
            "Stored bytes of the live items of each table held on this node",
            table_bytes.clone(),
        );
        Metrics {
            table_items,
            table_bytes,
            tables_set: Default::default(),
            link,
            wal,
            ttl_deleted,
            damaged_items,
            damaged_hints,
            item_cache_hits,
            item_cache_misses,
            item_cache_bytes,
            aae_keys_compared,
            aae_keys_repaired,
            aae_bytes_sent,
            aae_bytes_received,
            tombstones_dropped,
            handoff_bytes_received,
            handoff_items_dropped,
            registry,
            requests,
            replica_rtt,
            rpc_errors,
            hint_backlog,
            hint_backlog_bytes,
            hints_delivered,
            hints_dropped,
            read_repairs,
            speculative_reads,
            disk_reads,
            stripe_waits,
        }
    }

    /// The replica links' counters.
    pub fn link(&self) -> &crate::link::Stats {
        &self.link
    }

    /// The group commit's counters.
    pub fn wal(&self) -> &crate::durable::Stats {
        &self.wal
    }

    /// Brings the damaged-record counters up to the replica's counts of
    /// items and hints (which only grow).
    pub fn set_damaged(&self, items: u64, hints: u64) {
        catch_up(&self.damaged_items, items);
        catch_up(&self.damaged_hints, hints);
    }

    /// Brings the item cache's figures up to its counters.
    pub fn set_item_cache(&self, stats: dyno_storage::cache::CacheStats) {
        catch_up(&self.item_cache_hits, stats.hits);
        catch_up(&self.item_cache_misses, stats.misses);
        self.item_cache_bytes.set(clamp(stats.bytes));
    }

    /// Sets the per-table figures to `loads` (every live table: its live
    /// items and their bytes), dropping the series of tables no longer in
    /// it.
    pub fn set_table_loads(&self, loads: impl IntoIterator<Item = (TableLabels, u64, u64)>) {
        let mut set = self.tables_set.lock().unwrap_or_else(|e| e.into_inner());
        let mut now = std::collections::HashSet::new();
        for (labels, items, bytes) in loads {
            self.table_items.get_or_create(&labels).set(clamp(items));
            self.table_bytes.get_or_create(&labels).set(clamp(bytes));
            now.insert(labels);
        }
        for gone in set.difference(&now) {
            self.table_items.remove(gone);
            self.table_bytes.remove(gone);
        }
        *set = now;
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(table: &str) -> TableLabels {
        TableLabels {
            tenant: "acme".into(),
            table: table.into(),
        }
    }

    /// Per-table figures are set for the tables given, and a table that
    /// is no longer given (deleted) loses its series.
    #[test]
    fn table_figures_follow_the_live_tables() {
        let m = Metrics::new();
        m.set_table_loads([(labels("orders"), 40, 4000), (labels("carts"), 2, 20)]);
        let text = m.render();
        assert!(
            text.contains("dyno_table_items{tenant=\"acme\",table=\"orders\"} 40"),
            "{text}"
        );
        assert!(text.contains("dyno_table_bytes{tenant=\"acme\",table=\"carts\"} 20"));
        m.set_table_loads([(labels("orders"), 41, 4100)]);
        let text = m.render();
        assert!(text.contains("dyno_table_items{tenant=\"acme\",table=\"orders\"} 41"));
        assert!(!text.contains("carts"), "{text}");
    }
}
