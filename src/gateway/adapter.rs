//! The provider seam. A provider adapter turns an OpenAI request into the upstream request and
//! the upstream answer back into OpenAI's shape. Today the OpenAI wire format is built in as a
//! passthrough; the provider-language work replaces this module with adapters compiled from
//! `providers/*.llmux`, behind the same two calls (`catalog` and `build_request`).

use crate::api::chat::{replace_model, ChatRequestView};
use crate::api::ApiError;
use crate::config::{Deployment, ProviderCatalog};

/// The providers this build can serve, with their default `api_base`.
pub struct Catalog;

/// OpenAI's `api_base` includes `/v1`, as in LiteLLM.
const OPENAI_DEFAULT_BASE: &str = "https://api.openai.com/v1";

impl ProviderCatalog for Catalog {
    fn default_api_base(&self, provider: &str) -> Option<Option<String>> {
        match provider {
            "openai" => Some(Some(OPENAI_DEFAULT_BASE.to_owned())),
            _ => None,
        }
    }
}

/// An upstream request ready to send.
pub struct PreparedRequest {
    pub path: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// Builds the upstream request for `dep` from the client's body.
pub fn build_request(
    dep: &Deployment,
    body: &[u8],
    view: &ChatRequestView,
) -> Result<PreparedRequest, ApiError> {
    let mut headers: Vec<(&'static str, String)> =
        vec![("content-type", "application/json".to_owned())];
    if let Some(key) = &dep.api_key {
        headers.push(("authorization", format!("Bearer {key}")));
    }
    if view.stream {
        headers.push(("accept", "text/event-stream".to_owned()));
    } else {
        headers.push(("accept", "application/json".to_owned()));
    }
    Ok(PreparedRequest {
        path: format!("{}/chat/completions", dep.base.path),
        headers,
        body: replace_model(body, view, &dep.upstream_model),
    })
}
