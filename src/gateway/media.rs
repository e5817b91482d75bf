//! Remote images for providers that need their bytes (declared with `fetch_images` in the
//! provider file): fetched by the gateway before translation, outside the pure interpreter,
//! and inlined as `data:` URLs. Guarded against SSRF: https only unless `llmux.media.allow_http`,
//! only public addresses (`gateway::ssrf`: no loopback, private, link-local, reserved or other
//! special-purpose block, IPv4 inside IPv6 included; each redirect hop re-checked) unless the
//! host is in `llmux.media.allow_hosts`, bounded size, time and redirect count.

use std::net::IpAddr;
use std::time::Instant;

use base64::Engine as _;
use serde_json::Value;

use crate::api::ApiError;
use crate::config::{MediaSettings, UpstreamSettings};
use crate::dsl::FetchImages;
use crate::gateway::ssrf::{self, Refusal};
use crate::upstream::{Timeouts, UpstreamClient, UpstreamRequest};
use crate::util::BaseUrl;

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("only https image URLs are fetched (set llmux.media.allow_http to allow http)")]
    HttpNotAllowed,
    #[error("unsupported URL: {0}")]
    BadUrl(String),
    #[error("host {host} resolves to a non-public address ({addr} {why}); add it to llmux.media.allow_hosts to allow it")]
    PrivateAddress {
        host: String,
        addr: IpAddr,
        why: Refusal,
    },
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("fetch failed: {0}")]
    Fetch(String),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("too many redirects")]
    TooManyRedirects,
    #[error("larger than {0} bytes")]
    TooLarge(usize),
    #[error("not an image (content type {0})")]
    NotImage(String),
    #[error("timed out")]
    Timeout,
    #[error("more than {0} images to fetch in one request")]
    TooMany(usize),
}

/// Replaces every image URL the provider cannot take by reference with a `data:` URL.
/// Returns whether the request changed.
pub async fn inline_images(
    req: &mut Value,
    policy: FetchImages,
    client: &UpstreamClient,
    upstream: &UpstreamSettings,
    media: &MediaSettings,
) -> Result<bool, ApiError> {
    if policy == FetchImages::None {
        return Ok(false);
    }
    let mut targets: Vec<(usize, usize)> = Vec::new();
    if let Some(messages) = req.get("messages").and_then(Value::as_array) {
        for (mi, m) in messages.iter().enumerate() {
            for (pi, part) in m
                .get("content")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                if let Some(url) = image_url(part) {
                    if policy.wants(url) {
                        targets.push((mi, pi));
                    }
                }
            }
        }
    }
    if targets.is_empty() {
        return Ok(false);
    }
    if targets.len() > media.max_images {
        return Err(bad(&MediaError::TooMany(media.max_images), ""));
    }
    for (mi, pi) in targets {
        let part = &mut req["messages"][mi]["content"][pi];
        let Some(url) = image_url(part).map(str::to_owned) else {
            continue;
        };
        let (mime, bytes) = fetch(&url, client, upstream, media)
            .await
            .map_err(|e| bad(&e, &url))?;
        let data_url = format!(
            "data:{mime};base64,{}",
            base64::engine::general_purpose::STANDARD.encode(&bytes)
        );
        match part.get_mut("image_url") {
            Some(Value::Object(o)) => {
                o.insert("url".into(), Value::String(data_url));
            }
            Some(slot) => *slot = Value::String(data_url),
            None => {}
        }
    }
    Ok(true)
}

fn bad(e: &MediaError, url: &str) -> ApiError {
    let shown: String = url.chars().take(200).collect();
    ApiError::bad_request(format!("Could not fetch image URL {shown:?}: {e}."))
        .with_param("messages")
}

fn image_url(part: &Value) -> Option<&str> {
    if part.get("type").and_then(Value::as_str) != Some("image_url") {
        return None;
    }
    let iu = part.get("image_url")?;
    iu.get("url")
        .and_then(Value::as_str)
        .or_else(|| iu.as_str())
}

async fn fetch(
    url: &str,
    client: &UpstreamClient,
    upstream: &UpstreamSettings,
    media: &MediaSettings,
) -> Result<(String, Vec<u8>), MediaError> {
    let started = Instant::now();
    let mut current = url.to_owned();
    for _hop in 0..=media.max_redirects {
        let target = BaseUrl::parse(&current).map_err(MediaError::BadUrl)?;
        if !target.tls && !media.allow_http {
            return Err(MediaError::HttpNotAllowed);
        }
        let checked = check_host(client, &target, media).await?;
        let uri: http::Uri = current
            .parse()
            .map_err(|e: http::uri::InvalidUri| MediaError::BadUrl(e.to_string()))?;
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        let left = media.timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(MediaError::Timeout);
        }
        let headers = [("accept", "image/*"), ("user-agent", "llmux")];
        let req = UpstreamRequest {
            tls: target.tls,
            host: &target.host,
            port: target.port,
            method: "GET",
            path: &path,
            headers: &headers,
            body: b"",
            addrs: checked.as_deref(),
        };
        let timeouts = Timeouts {
            first_byte: left,
            idle: left,
            total: Some(left),
            connect: None,
            from: None,
        };
        let mut resp = client.send(&req, upstream, timeouts).await.map_err(|e| {
            if e.is_timeout() {
                MediaError::Timeout
            } else {
                MediaError::Fetch(e.to_string())
            }
        })?;
        let status = resp.status.as_u16();
        if resp.status.is_redirection() {
            let location = resp
                .headers
                .get_str("location")
                .ok_or(MediaError::Status(status))?;
            current = resolve_location(&target, location);
            continue;
        }
        if !resp.status.is_success() {
            return Err(MediaError::Status(status));
        }
        if let Some(n) = resp
            .headers
            .get_str("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            if n > media.max_bytes {
                return Err(MediaError::TooLarge(media.max_bytes));
            }
        }
        let mime = resp
            .headers
            .get_str("content-type")
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .filter(|v| v.starts_with("image/"))
            .or_else(|| mime_from_path(&path))
            .ok_or_else(|| {
                MediaError::NotImage(
                    resp.headers
                        .get_str("content-type")
                        .unwrap_or("none")
                        .to_owned(),
                )
            })?;
        let body = resp
            .body
            .collect(media.max_bytes)
            .await
            .map_err(|e| match e {
                crate::upstream::UpstreamError::BodyTooLarge(n) => MediaError::TooLarge(n),
                e if e.is_timeout() => MediaError::Timeout,
                e => MediaError::Fetch(e.to_string()),
            })?;
        return Ok((mime, body.to_vec()));
    }
    Err(MediaError::TooManyRedirects)
}

/// Rejects hosts that resolve to addresses an outside caller must not reach through us, and
/// returns the addresses that passed: the fetch connects to exactly those (`None` for an
/// allow-listed host, which is resolved as usual).
async fn check_host(
    client: &UpstreamClient,
    target: &BaseUrl,
    media: &MediaSettings,
) -> Result<Option<std::rc::Rc<[std::net::SocketAddr]>>, MediaError> {
    let host = target.host.to_ascii_lowercase();
    if media.allow_hosts.contains(&host) {
        return Ok(None);
    }
    let addrs = client
        .resolve(&target.host, target.port)
        .await
        .map_err(|_| MediaError::Resolve(target.host.clone()))?;
    // Every address, not just the first: the connection may go to any of them.
    for a in addrs.iter() {
        if let Some(why) = ssrf::refusal(a.ip()) {
            return Err(MediaError::PrivateAddress {
                host: target.host.clone(),
                addr: a.ip(),
                why,
            });
        }
    }
    Ok(Some(addrs))
}

fn resolve_location(base: &BaseUrl, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_owned();
    }
    let scheme = if base.tls { "https" } else { "http" };
    if location.starts_with('/') {
        format!("{scheme}://{}{location}", base.authority())
    } else {
        format!("{scheme}://{}/{location}", base.authority())
    }
}

fn mime_from_path(path: &str) -> Option<String> {
    let p = path.split('?').next().unwrap_or(path).to_ascii_lowercase();
    let ext = p.rsplit('.').next()?;
    Some(
        match ext {
            "png" => "image/png",
            "jpg" | "jpeg" => "image/jpeg",
            "gif" => "image/gif",
            "webp" => "image/webp",
            _ => return None,
        }
        .to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_image_urls_in_both_shapes() {
        let a = serde_json::json!({"type": "image_url", "image_url": {"url": "https://x/a.png"}});
        let b = serde_json::json!({"type": "image_url", "image_url": "https://x/b.png"});
        assert_eq!(image_url(&a), Some("https://x/a.png"));
        assert_eq!(image_url(&b), Some("https://x/b.png"));
        assert_eq!(
            image_url(&serde_json::json!({"type": "text", "text": "hi"})),
            None
        );
        assert_eq!(
            mime_from_path("/a/b.JPG?x=1").as_deref(),
            Some("image/jpeg")
        );
    }
}
