//! Outbound proxy settings from `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` (upper case first,
//! then lower case), read through the config's [`Env`] on every load so that they follow the
//! config's `environment_variables` and reloads. How a request is routed is `upstream::proxy`.

use super::env::Env;
use crate::util::BaseUrl;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxySettings {
    /// CONNECT tunnel for https upstreams.
    pub https: Option<BaseUrl>,
    /// Absolute-form requests for plain http upstreams.
    pub http: Option<BaseUrl>,
    /// Lower-case host suffixes (leading dots removed) that bypass the proxies; `*` for all.
    pub no_proxy: Vec<String>,
}

impl ProxySettings {
    /// Reads the variables; a malformed proxy URL is left out with a warning.
    pub fn from_env(env: &Env, warnings: &mut Vec<String>) -> Self {
        let mut parse = |names: &[&str]| {
            let (name, value) = names
                .iter()
                .find_map(|n| env.get(n).filter(|v| !v.trim().is_empty()).map(|v| (*n, v)))?;
            let url = if value.contains("://") {
                value.to_owned()
            } else {
                format!("http://{value}")
            };
            match BaseUrl::parse(&url) {
                Ok(u) => Some(u),
                Err(e) => {
                    warnings.push(format!("{name} ignored: {e}"));
                    None
                }
            }
        };
        let https = parse(&["HTTPS_PROXY", "https_proxy"]);
        let http = parse(&["HTTP_PROXY", "http_proxy"]);
        let no_proxy = env
            .first_nonblank(&["NO_PROXY", "no_proxy"])
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().trim_start_matches('.').to_ascii_lowercase())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        ProxySettings {
            https,
            http,
            no_proxy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashMap};

    #[test]
    fn reads_the_config_map_before_the_process() {
        let config: BTreeMap<String, String> =
            [("HTTPS_PROXY".to_owned(), "proxy.internal:3128".to_owned())].into();
        let process: HashMap<String, String> = [
            ("HTTPS_PROXY".to_owned(), "http://other:1".to_owned()),
            ("no_proxy".to_owned(), ".example.com, localhost".to_owned()),
            ("HTTP_PROXY".to_owned(), "http://[bad".to_owned()),
        ]
        .into();
        let mut warnings = Vec::new();
        let p = ProxySettings::from_env(&Env::from_maps(config, process), &mut warnings);
        let https = p.https.unwrap();
        assert_eq!((https.host.as_str(), https.port), ("proxy.internal", 3128));
        assert!(p.http.is_none());
        assert_eq!(p.no_proxy, ["example.com", "localhost"]);
        assert!(
            warnings[0].starts_with("HTTP_PROXY ignored"),
            "{warnings:?}"
        );
    }
}
