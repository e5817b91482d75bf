//! The provider seam: turns the client's request into the upstream request through the
//! deployment's compiled provider file (`providers/*.llmux`); a failure of that step is a
//! [`Failure`] like any other. No provider is known to Rust: everything provider-specific lives in
//! the mapping files.

use std::borrow::Cow;

use crate::api::{ApiError, ChatRequestView, ErrorKind};
use crate::config::Deployment;
use crate::dsl::{Provider, RequestCtx, RequestText};
use crate::router::Failure;
use crate::util::UpstreamUrl;

/// An upstream request ready to send.
pub struct PreparedRequest<'a> {
    pub url: UpstreamUrl,
    pub method: RequestText,
    pub headers: Vec<(RequestText, RequestText)>,
    pub body: Vec<u8>,
    pub ctx: RequestCtx<'a>,
}

/// `stream` is what the upstream request asks for: false for a `fake_stream` provider.
/// Borrows the deployment's text and the request id: nothing is copied.
pub fn request_ctx<'a>(
    dep: &'a Deployment,
    view: &ChatRequestView,
    stream: bool,
    request_id: &'a str,
) -> RequestCtx<'a> {
    RequestCtx {
        model: Cow::Borrowed(&dep.upstream_model),
        api_base: dep.api_base.as_deref().map(Cow::Borrowed),
        api_key: dep.api_key.as_deref().map(Cow::Borrowed),
        api_version: dep.api_version.as_deref().map(Cow::Borrowed),
        drop_params: dep.drop_params,
        stream,
        include_usage: view.include_usage,
        max_output_tokens: None,
        params: Cow::Borrowed(&dep.params),
        request_id: Cow::Borrowed(request_id),
        // Seconds: a coarse read (`util::clock`) is exact enough and a fifth of the cost.
        now: crate::util::clock::coarse_unix_secs(),
    }
}

/// Builds the upstream request for `dep` from the client's body (a passthrough provider
/// forwards its bytes; the tree is parsed only if the provider needs it). `fields`: the
/// OpenAI request fields at the body's top level, bit per id.
pub fn prepare<'a>(
    provider: &Provider,
    dep: &'a Deployment,
    view: &ChatRequestView,
    body: &crate::json::LazyDoc<'_>,
    fields: u64,
    request_id: &'a str,
) -> Result<PreparedRequest<'a>, Failure> {
    let ctx = request_ctx(
        dep,
        view,
        view.stream && !provider.fake_stream(),
        request_id,
    );
    let memo = dep.dsl_memo.get_or_init(|| provider.new_memo());
    let up = provider
        .build_request_doc(&ctx, Some(memo), body, fields)
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
