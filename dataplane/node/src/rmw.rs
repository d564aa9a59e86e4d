//! Read-modify-write of one key, as the coordinator runs it: the types.
//!
//! A front-end whose writes depend on the current value (the DynamoDB
//! API's conditions and update expressions) gives the node an
//! [`RmwHandler`]. The write travels, opaque, to the key's coordinator (the
//! first primary up, as for any write), which takes the key's lock, reads
//! the key at a majority, merges what it read into its own replica, asks
//! the handler what to write, writes it with the read's context at a
//! majority, and answers with the handler's reply. Because every such write
//! to a key goes through one coordinator and one lock, concurrent updates
//! lose nothing while that coordinator stays up (see `node/src/ranges.rs`
//! and the README for what holds under failures).
//!
//! Depends on `error` only.

use std::fmt;

use bytes::Bytes;
use dyno_core::Object;
use tokio::sync::{Mutex, MutexGuard};

use crate::error::ServiceError;

/// What the handler decided.
#[derive(Debug, Clone, Default)]
pub struct RmwDecision {
    /// `None`: write nothing; `Some(None)`: delete; `Some(Some(v))`: store
    /// `v`.
    pub write: Option<Option<Bytes>>,
    /// The answer for the client, in the handler's own encoding.
    pub reply: Vec<u8>,
}

/// Decides a read-modify-write. Pure: no I/O, called under the key's lock.
pub trait RmwHandler: Send + Sync + fmt::Debug {
    /// Decides the write of `op` on `table`'s key, given its merged state
    /// (`None` when no replica knows the key).
    fn decide(
        &self,
        table: &str,
        op: &[u8],
        current: Option<&Object>,
    ) -> Result<RmwDecision, ServiceError>;
}

/// Striped async locks over keys: a key's read-modify-writes on this
/// coordinator run one at a time. Unrelated keys share a stripe only by
/// chance (4,096 stripes).
#[derive(Debug)]
pub struct KeyLocks {
    stripes: Vec<Mutex<()>>,
}

impl Default for KeyLocks {
    fn default() -> Self {
        KeyLocks {
            stripes: (0..4096).map(|_| Mutex::new(())).collect(),
        }
    }
}

impl KeyLocks {
    /// Waits for the lock of `(table, key)`.
    pub async fn lock(&self, table: &str, key: &[u8]) -> MutexGuard<'_, ()> {
        let h = dyno_core::hash::key_position(table, key) ^ dyno_core::hash::digest_bytes(key);
        let i = (h % self.stripes.len() as u64) as usize;
        self.stripes[i].lock().await
    }
}
