//! LLMux: an OpenAI-compatible LLM gateway on a thread-per-core monoio runtime.
//!
//! Module map (dependencies point downwards only; see `docs/ARCHITECTURE.md`):
//! `cli` → `server` → `gateway` → `keys`, `upstream`, `telemetry`, `config`, `api`.

pub mod allocator;
pub mod api;
pub mod cli;
pub mod config;
pub mod dsl;
pub mod gateway;
pub mod http1;
pub mod json;
pub mod keys;
pub mod mock;
pub mod router;
pub mod server;
pub mod telemetry;
pub mod upstream;
pub mod usage;
pub mod util;
