//! OpenAI wire types the gateway needs to look at, and the OpenAI-format error.

pub mod chat;
mod chat_shape;
pub mod error;

pub use chat::{ChatRequestView, CheckedBody};
pub use error::{ApiError, ErrorKind};
