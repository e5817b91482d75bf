//! The key a client presents, read where LiteLLM reads it and in its order, and the hash a
//! virtual key is stored and looked up by (LiteLLM's `hash_token`: SHA-256 of the raw key's
//! UTF-8 bytes, lower-case hex).

use crate::http1::Request;

/// What the request carried.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented<'r> {
    /// No credential header at all.
    None,
    /// An `Authorization` header without a `Bearer `/`Basic ` scheme (LiteLLM refuses it).
    Malformed,
    Key(&'r str),
}

/// LiteLLM's order (`user_api_key_auth.py`): `x-litellm-api-key` (scheme optional),
/// `Authorization` (`Bearer`/`Basic` required), then the provider-style headers used raw:
/// `api-key` (Azure), `x-api-key` (Anthropic), `x-goog-api-key` (Gemini),
/// `ocp-apim-subscription-key`.
pub fn presented(req: &Request) -> Presented<'_> {
    if let Some(v) = req.header("x-litellm-api-key") {
        return Presented::Key(strip_scheme(v).unwrap_or(v).trim());
    }
    if let Some(v) = req.header("authorization") {
        return match strip_scheme(v) {
            Some(k) => Presented::Key(k.trim()),
            None => Presented::Malformed,
        };
    }
    [
        "api-key",
        "x-api-key",
        "x-goog-api-key",
        "ocp-apim-subscription-key",
    ]
    .iter()
    .find_map(|h| req.header(h))
    .map_or(Presented::None, |v| Presented::Key(v.trim()))
}

fn strip_scheme(v: &str) -> Option<&str> {
    let v = v.trim_start();
    ["Bearer ", "bearer ", "Basic "]
        .iter()
        .find_map(|p| v.strip_prefix(p))
}

/// `sha256(key)` as 64 lower-case hex digits: the `token` column of
/// `LiteLLM_VerificationToken`, the `api_key` of spend rows, the Redis counters' suffix.
pub fn hash_key(raw: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, raw.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest.as_ref() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `sk-...` + the last four characters: how LiteLLM names a key in its messages and in
/// `key_name` (never the whole key).
pub fn abbreviate(raw: &str) -> String {
    let tail: String = raw
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("sk-...{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_litellm_s() {
        // Python's hashlib.sha256(b"sk-1234").hexdigest(), as LiteLLM computes it.
        assert_eq!(
            hash_key("sk-1234"),
            "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b"
        );
        // The SHA-256 test vector of "abc" (FIPS 180-2).
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(abbreviate("sk-abcdefgh"), "sk-...efgh");
    }
}
