//! DynamoDB's data model, free of I/O, for the node's DynamoDB-compatible
//! front-end (`dyno_node::dynamo`).
//!
//! * [`value`]: attribute values (`S`, `N`, `B`, `BOOL`, `NULL`, `L`, `M`,
//!   `SS`, `NS`, `BS`) in their JSON wire form, validated as DynamoDB does,
//!   and their sizes;
//! * [`item`]: items, their size rule (400 KB) and their stored form;
//! * [`schema`]: a table's key schema and the mapping of primary keys to
//!   Dyno's composite keys (the partition key places the item, the sort key
//!   orders it on disk), and the table description kept in the catalog;
//! * [`expr`]: the expression language (condition, filter, key condition,
//!   projection and update expressions): parser, name and value
//!   substitution, evaluation;
//! * [`stored`]: what a read sees in a stored state (one deterministic
//!   value), and TTL expiry;
//! * [`legacy`]: the pre-expression parameters, translated to expressions;
//! * [`write`]: a write as a pure function of the current item, run by the
//!   key's coordinator under the key's lock.
//!
//! Errors are [`DdbError`]s whose messages follow DynamoDB's wording where
//! it is known.

pub mod error;
pub mod expr;
pub mod item;
pub mod legacy;
pub mod schema;
pub mod stored;
pub mod value;
pub mod write;

pub use error::{DdbError, ErrorKind};
pub use item::Item;
pub use value::Value;
