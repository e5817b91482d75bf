//! Outbound proxies from `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` (upper or lower case):
//! https upstreams go through a CONNECT tunnel, plain http ones as absolute-form requests.

use crate::util::BaseUrl;

#[derive(Debug, Clone, Default)]
pub struct ProxyConfig {
    https: Option<BaseUrl>,
    http: Option<BaseUrl>,
    no_proxy: Vec<String>,
}

/// How to reach one upstream.
#[derive(Debug, Clone)]
pub struct Route {
    pub proxy: Option<BaseUrl>,
    /// Plain http through a proxy: the request line carries the absolute URL.
    pub absolute_form: bool,
}

fn env(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok())
        .filter(|v| !v.trim().is_empty())
}

impl ProxyConfig {
    pub fn from_env() -> Self {
        let parse = |v: Option<String>| {
            v.and_then(|s| {
                let s = if s.contains("://") {
                    s
                } else {
                    format!("http://{s}")
                };
                match BaseUrl::parse(&s) {
                    Ok(u) => Some(u),
                    Err(e) => {
                        tracing::warn!(error = %e, "ignoring malformed proxy setting");
                        None
                    }
                }
            })
        };
        Self {
            https: parse(env(&["HTTPS_PROXY", "https_proxy"])),
            http: parse(env(&["HTTP_PROXY", "http_proxy"])),
            no_proxy: env(&["NO_PROXY", "no_proxy"])
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().trim_start_matches('.').to_ascii_lowercase())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    fn bypass(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.no_proxy
            .iter()
            .any(|p| p == "*" || host == *p || host.ends_with(&format!(".{p}")))
    }

    pub fn route(&self, tls: bool, host: &str, _port: u16) -> Route {
        let proxy = if self.bypass(host) {
            None
        } else if tls {
            self.https.clone()
        } else {
            self.http.clone()
        };
        Route {
            absolute_form: proxy.is_some() && !tls,
            proxy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_matches_domains() {
        let p = ProxyConfig {
            https: BaseUrl::parse("http://proxy:3128").ok(),
            http: None,
            no_proxy: vec!["internal.example".into(), "localhost".into()],
        };
        assert!(p.route(true, "api.internal.example", 443).proxy.is_none());
        assert!(p.route(true, "localhost", 443).proxy.is_none());
        let r = p.route(true, "api.example.com", 443);
        assert_eq!(r.proxy.unwrap().port, 3128);
        assert!(!r.absolute_form);
        assert!(p.route(false, "api.example.com", 80).proxy.is_none());
    }
}
