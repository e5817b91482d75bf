//! Virtual keys, budgets and spend, LiteLLM-compatible (docs/keys.md).
//!
//! - [`credential`]: where a request's key is read from, and its hash (LiteLLM's rules);
//! - [`record`]: what a key may do, and the checks in LiteLLM's order with its errors;
//! - [`shard`]: a shard's key cache and spend buffer: a request waits on the control plane
//!   only for a key it has not cached;
//! - [`control`]: the `llmux-keys` thread: lookups (the config's keys, the database), spend
//!   totals, and batched writes of spend rows and spend increments;
//! - [`db`]: the PostgreSQL side (LiteLLM's tables);
//! - [`admin`]: the key management API (`/key/*`, `/team/*`), carried out by the control plane.

pub mod admin;
pub mod control;
pub mod credential;
pub mod db;
pub mod record;
pub mod shard;

pub use record::{KeyRecord, Refusal, TeamRecord};
