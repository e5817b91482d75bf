//! The provider seam: turns the client's request into the upstream request through the
//! deployment's compiled provider file (`providers/*.llmux`); a failure of that step is a
//! [`Failure`] like any other. No provider is known to Rust: everything provider-specific lives in
//! the mapping files.

use crate::api::{ApiError, ChatRequestView, ErrorKind};
use crate::config::Deployment;
use crate::dsl::{Provider, RequestCtx};
use crate::router::Failure;
use crate::util::UpstreamUrl;

/// An upstream request ready to send.
pub struct PreparedRequest {
    pub url: UpstreamUrl,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub ctx: RequestCtx,
}

/// `stream` is what the upstream request asks for: false for a `fake_stream` provider.
pub fn request_ctx(
    dep: &Deployment,
    view: &ChatRequestView,
    stream: bool,
    request_id: &str,
) -> RequestCtx {
    RequestCtx {
        model: dep.upstream_model.clone(),
        api_base: dep.api_base.clone(),
        api_key: dep.api_key.clone(),
        api_version: dep.api_version.clone(),
        drop_params: dep.drop_params,
        stream,
        include_usage: view.include_usage,
        max_output_tokens: None,
        params: dep.params.clone(),
        request_id: request_id.to_owned(),
        // Seconds: a coarse read (`util::clock`) is exact enough and a fifth of the cost.
        now: crate::util::clock::coarse_unix_secs(),
    }
}

/// Builds the upstream request for `dep` from the client's body.
/// `req` is the parsed client body and `raw` its bytes (a passthrough provider forwards them).
pub fn prepare(
    provider: &Provider,
    dep: &Deployment,
    view: &ChatRequestView,
    req: &serde_json::Value,
    raw: &[u8],
    request_id: &str,
) -> Result<PreparedRequest, Failure> {
    let ctx = request_ctx(
        dep,
        view,
        view.stream && !provider.fake_stream(),
        request_id,
    );
    let memo = dep.dsl_memo.get_or_init(|| provider.new_memo());
    let up = provider
        .build_request_memo(&ctx, memo, req, Some(raw))
        .map_err(|e| Failure::from(&e))?;
    let url = UpstreamUrl::parse(up.url).map_err(|e| {
        // The URL may carry the key (`auth query`): never echo it.
        let secrets: &[&str] = match dep.api_key.as_deref() {
            Some(k) => &[k],
            None => &[],
        };
        let e = crate::telemetry::redact::redact_str(&e, secrets);
        Failure::from(ApiError::new(
            ErrorKind::Internal,
            format!(
                "Provider `{}` built an invalid URL: {}",
                provider.name(),
                crate::util::clip(&e)
            ),
        ))
    })?;
    Ok(PreparedRequest {
        url,
        method: up.method,
        headers: up.headers,
        body: up.body,
        ctx,
    })
}
