//! # dyno-core: the Dynamo logic, with no I/O
//!
//! This crate owns every decision a Dyno node makes about data placement,
//! versions and cluster state, as pure functions and state machines. It
//! reads no clock (time comes in as milliseconds or [`Hlc`] values), draws
//! no random numbers (actor ids and gossip peers are chosen by the caller),
//! and opens no file or socket. That keeps it exhaustively testable and lets
//! a whole cluster be simulated deterministically.
//!
//! **It must never depend on** tokio, tonic, prost, rocksdb, or any crate
//! that does I/O. CI enforces this (`.ci/check-core-purity`).
//!
//! ## Where a PUT travels
//!
//! The API handler validates the request and decodes the client's context
//! ([`context`]). The coordinator finds the key's position ([`hash`]) and its
//! preference list ([`ring`]), applies the write to its local [`Object`]
//! ([`object`]: a DVV set), sends the new state to the other replicas and
//! counts acknowledgements with a [`QuorumTracker`] ([`quorum`]). A read
//! merges the replicas' answers with [`reconcile()`](reconcile::reconcile),
//! which also names the stale replicas to repair. Anti-entropy compares
//! per-partition [`MerkleTree`]s ([`merkle`]); gossip merges [`Membership`]
//! views and feeds a [`PhiDetector`] per peer ([`phi`]); ring changes are
//! computed by the [`planner`].
//!
//! ## Example
//!
//! ```
//! use bytes::Bytes;
//! use dyno_core::{ActorId, ConflictMode, Hlc, Object, SiblingLimits, VersionVector, Write};
//!
//! let mut replica = Object::new();
//! let blind = VersionVector::new();
//! let w = Write { context: &blind, actor: ActorId(1), value: Some(Bytes::from_static(b"v1")), timestamp: Hlc(1) };
//! replica.update(w, ConflictMode::Siblings, SiblingLimits::default()).unwrap();
//! let ctx = replica.client_context(dyno_core::context::MAX_CONTEXT_ENTRIES);
//! let token = dyno_core::context::encode_context(&ctx);
//! assert_eq!(dyno_core::context::decode_context(&token).unwrap(), ctx);
//! ```

pub mod apikey;
pub mod codec;
pub mod context;
pub mod coordinator;
pub mod ddbnum;
pub mod hash;
pub mod hlc;
pub mod keys;
pub mod membership;
pub mod merkle;
pub mod names;
pub mod object;
pub mod pbs;
pub mod phi;
pub mod planner;
pub mod quorum;
pub mod reconcile;
pub mod ring;
pub mod rtt;
pub mod sigv4;
pub mod topology;
pub mod version;

pub use hlc::{Hlc, HlcClock};
pub use membership::{Membership, NodeState, NodeStatus};
pub use merkle::{MerkleShape, MerkleTree};
pub use object::{ConflictMode, Object, Sibling, SiblingLimits, UpdateError, UpdateOutcome, Write};
pub use phi::{PhiConfig, PhiDetector};
pub use quorum::{QuorumOutcome, QuorumTracker};
pub use ring::{Member, NodeId, PartitionId, PreferenceList, Ring};
pub use version::{ActorId, Causality, Dot, VersionVector};
