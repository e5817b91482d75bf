//! OpenAI wire types the gateway needs to look at, and the OpenAI-format error.

pub mod chat;
pub mod error;

pub use chat::ChatRequestView;
pub use error::{ApiError, ErrorKind};
