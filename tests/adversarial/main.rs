//! The adversarial suite (issue 7): what a hostile client, a hostile or broken upstream and a
//! careless operator can do to the real server binary, and what the gateway answers. Each
//! module covers one area; `docs/security.md` states the guarantees these tests check.

#[path = "../common/mod.rs"]
mod common;

mod config;
mod http;
mod json_depth;
mod media;
mod upstream;
