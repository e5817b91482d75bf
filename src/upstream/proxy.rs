//! Routing through outbound proxies: https upstreams go through a CONNECT tunnel, plain http
//! ones as absolute-form requests. The settings come from the config snapshot
//! ([`ProxySettings`], read from `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` through the config's
//! environment resolver), so they follow reloads.

pub use crate::config::ProxySettings;
use crate::util::BaseUrl;

/// How to reach one upstream.
#[derive(Debug, Clone)]
pub struct Route {
    pub proxy: Option<BaseUrl>,
    /// Plain http through a proxy: the request line carries the absolute URL.
    pub absolute_form: bool,
}

fn bypass(settings: &ProxySettings, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    settings.no_proxy.iter().any(|p| {
        p == "*"
            || host == *p
            || (host.len() > p.len()
                && host.ends_with(p.as_str())
                && host.as_bytes()[host.len() - p.len() - 1] == b'.')
    })
}

/// The proxy (if any) for an upstream.
pub fn route(settings: &ProxySettings, tls: bool, host: &str, _port: u16) -> Route {
    let proxy = if bypass(settings, host) {
        None
    } else if tls {
        settings.https.clone()
    } else {
        settings.http.clone()
    };
    Route {
        absolute_form: proxy.is_some() && !tls,
        proxy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_matches_domains() {
        let p = ProxySettings {
            https: BaseUrl::parse("http://proxy:3128").ok(),
            http: None,
            no_proxy: vec!["internal.example".into(), "localhost".into()],
        };
        assert!(route(&p, true, "api.internal.example", 443).proxy.is_none());
        assert!(route(&p, true, "localhost", 443).proxy.is_none());
        assert!(route(&p, true, "notinternal.example", 443).proxy.is_some());
        let r = route(&p, true, "api.example.com", 443);
        assert_eq!(r.proxy.unwrap().port, 3128);
        assert!(!r.absolute_form);
        assert!(route(&p, false, "api.example.com", 80).proxy.is_none());
    }
}
