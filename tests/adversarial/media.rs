//! Remote images (issue 7, item 14): a client-chosen image URL whose address is not public is
//! refused with a 400 before any connection is made, including the special-purpose IPv4 blocks
//! beyond RFC 1918 and IPv6 forms that carry a private IPv4 address.

use std::io::ErrorKind;
use std::net::TcpListener;

use serde_json::json;

use crate::common::*;

/// An Anthropic deployment (its provider file fetches plain-http image URLs) served by the mock.
fn config(mock: &Mock) -> String {
    format!(
        "model_list:
  - model_name: claude
    litellm_params: {{ model: anthropic/up, api_base: {}, api_key: sk-test-key-123456 }}
llmux:
  media: {{ allow_http: true, timeout: 2 }}
",
        mock.base()
    )
}

fn image_request(url: &str) -> String {
    json!({"model": "claude", "max_tokens": 16, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": url}}
    ]}]})
    .to_string()
}

#[test]
fn image_urls_at_non_public_addresses_are_refused_without_connecting() {
    let mock = Mock::start();
    // A tripwire: the gateway's plain-http proxy. Were an address let through, the fetch would
    // connect here (on 127.0.0.1) instead of leaving the machine, and the accept below would
    // see it. The mock itself is reached directly (NO_PROXY).
    let tripwire = TcpListener::bind("127.0.0.1:0").unwrap();
    tripwire.set_nonblocking(true).unwrap();
    let proxy = format!("http://{}", tripwire.local_addr().unwrap());
    let gw = Gateway::start_with(
        &config(&mock),
        GatewayOpts {
            env: vec![
                ("HTTP_PROXY", proxy.as_str()),
                ("HTTPS_PROXY", proxy.as_str()),
                ("NO_PROXY", "127.0.0.1"),
            ],
            ..Default::default()
        },
    );

    // The deployment works, and the mock counts what reaches it.
    let text = json!({"model": "claude", "max_tokens": 16,
        "messages": [{"role": "user", "content": "hello"}]});
    let r = gw.chat(&text.to_string());
    assert_eq!(r.status, 200, "{}", r.text());
    let before = mock.stats()["requests"].as_u64();
    assert_eq!(before, Some(1));

    for (url, why) in [
        (
            "http://198.18.0.1/x.png",
            "198.18.0.1 in 198.18.0.0/15 (Benchmarking, RFC 2544)",
        ),
        (
            "http://[64:ff9b::7f00:1]/x.png",
            "64:ff9b::7f00:1 carries 127.0.0.1, in 127.0.0.0/8 (Loopback, RFC 1122)",
        ),
        (
            "http://[fec0::1]/x.png",
            "fec0::1 in fec0::/10 (Site-Local (deprecated), RFC 3879)",
        ),
        (
            "http://[::7f00:1]/x.png",
            "::7f00:1 carries 127.0.0.1, in 127.0.0.0/8 (Loopback, RFC 1122)",
        ),
    ] {
        let r = gw.chat(&image_request(url));
        // Checked first: it names the failure best. The response has arrived, so any
        // connection the fetch made is already in the backlog.
        match tripwire.accept() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("{url}: the gateway tried to connect: {other:?}"),
        }
        assert_eq!(r.status, 400, "{url}: {}", r.text());
        let body = r.json();
        let error = &body["error"];
        assert_eq!(error["type"], "invalid_request_error", "{url}: {body}");
        assert_eq!(error["param"], "messages", "{url}: {body}");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("non-public address") && message.contains(why),
            "{url}: {message}"
        );
    }
    assert_eq!(
        mock.stats()["requests"].as_u64(),
        before,
        "no refused request reached the provider"
    );
}
