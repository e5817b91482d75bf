//! Why a credential could not be had, in two classes the gateway answers differently: the
//! credentials are bad or were refused (401), or their endpoint could not be used (502).
//! Messages name the source and its endpoint; secrets are masked out of everything an endpoint
//! said before it is kept (see [`CredentialError::masked`]).

/// A failed credential fetch. Cloneable: one failure answers every request that waited on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The deployment's parameters do not make a usable credential source (missing or
    /// unreadable key, token file or JSON).
    #[error("{origin}: {message}")]
    Invalid {
        origin: &'static str,
        message: String,
    },
    /// The endpoint answered, and refused the credentials.
    #[error("{origin}: {endpoint} refused the credentials (HTTP {status}): {message}")]
    Refused {
        origin: &'static str,
        endpoint: String,
        status: u16,
        message: String,
    },
    /// The endpoint could not be reached, timed out, or failed (5xx, throttled).
    #[error("{origin}: {endpoint} is unavailable: {message}")]
    Unavailable {
        origin: &'static str,
        endpoint: String,
        message: String,
    },
    /// The endpoint answered with something that is not a credential.
    #[error("{origin}: unreadable answer from {endpoint}: {message}")]
    BadAnswer {
        origin: &'static str,
        endpoint: String,
        message: String,
    },
    /// The credential thread is not running.
    #[error("the credential service is not running")]
    Stopped,
}

impl CredentialError {
    pub(crate) fn invalid(origin: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            origin,
            message: message.into(),
        }
    }

    pub(crate) fn bad_answer(
        origin: &'static str,
        endpoint: &str,
        message: impl Into<String>,
    ) -> Self {
        Self::BadAnswer {
            origin,
            endpoint: shown_endpoint(endpoint),
            message: message.into(),
        }
    }

    pub(crate) fn unavailable(
        origin: &'static str,
        endpoint: &str,
        message: impl Into<String>,
    ) -> Self {
        Self::Unavailable {
            origin,
            endpoint: shown_endpoint(endpoint),
            message: message.into(),
        }
    }

    /// An error answer (status ≥ 400): refused for client errors, unavailable for throttling
    /// and server errors (worth retrying; the credentials may be fine). `detail` is what the
    /// endpoint said, clipped.
    pub(crate) fn from_status(
        origin: &'static str,
        endpoint: &str,
        status: u16,
        detail: &str,
        throttled: bool,
    ) -> Self {
        let message = crate::util::clip(detail.trim()).into_owned();
        if status == 429 || status >= 500 || throttled {
            Self::Unavailable {
                origin,
                endpoint: shown_endpoint(endpoint),
                message: format!("HTTP {status}: {message}"),
            }
        } else {
            Self::Refused {
                origin,
                endpoint: shown_endpoint(endpoint),
                status,
                message,
            }
        }
    }

    /// The HTTP status the gateway answers a request with when its credential failed: 401 for
    /// bad or refused credentials, 502 when the credential endpoint could not be used.
    pub fn status(&self) -> u16 {
        match self {
            Self::Invalid { .. } | Self::Refused { .. } => 401,
            Self::Unavailable { .. } | Self::BadAnswer { .. } | Self::Stopped => 502,
        }
    }

    /// The message for a client, naming the deployment.
    pub fn for_deployment(&self, deployment: &str) -> String {
        format!("deployment `{deployment}`: cannot get its credentials: {self}")
    }

    /// The same error with every one of `secrets` masked out of its text. Applied to every
    /// failure before it is kept or reported: an endpoint that echoes what it was sent (a
    /// token in an error message) must not hand it on.
    pub(crate) fn masked(self, secrets: &[&str]) -> Self {
        let mask = |s: String| mask(s, secrets);
        match self {
            Self::Invalid { origin, message } => Self::Invalid {
                origin,
                message: mask(message),
            },
            Self::Refused {
                origin,
                endpoint,
                status,
                message,
            } => Self::Refused {
                origin,
                endpoint: mask(endpoint),
                status,
                message: mask(message),
            },
            Self::Unavailable {
                origin,
                endpoint,
                message,
            } => Self::Unavailable {
                origin,
                endpoint: mask(endpoint),
                message: mask(message),
            },
            Self::BadAnswer {
                origin,
                endpoint,
                message,
            } => Self::BadAnswer {
                origin,
                endpoint: mask(endpoint),
                message: mask(message),
            },
            Self::Stopped => Self::Stopped,
        }
    }
}

/// Shortest secret masked by exact match: shorter values would mask ordinary words.
const MIN_MASKED_LEN: usize = 4;

fn mask(mut text: String, secrets: &[&str]) -> String {
    for s in secrets {
        if s.len() >= MIN_MASKED_LEN && text.contains(s) {
            text = text.replace(s, "[redacted]");
        }
    }
    text
}

/// An endpoint as errors show it: without its query (which could carry a key) or user info,
/// clipped.
pub(crate) fn shown_endpoint(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or(url);
    let shown = match no_query.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => no_query.to_owned(),
    };
    crate::util::clip(&shown).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_map_to_401_and_502() {
        let refused =
            CredentialError::from_status("STS", "https://sts.test/", 403, "denied", false);
        assert_eq!(refused.status(), 401);
        let throttled = CredentialError::from_status("STS", "https://sts.test/", 400, "slow", true);
        assert_eq!(throttled.status(), 502);
        assert_eq!(
            CredentialError::from_status("x", "http://e/", 503, "", false).status(),
            502
        );
        assert_eq!(
            CredentialError::from_status("x", "http://e/", 429, "", false).status(),
            502
        );
        assert_eq!(CredentialError::invalid("x", "no key").status(), 401);
        assert_eq!(
            CredentialError::bad_answer("x", "http://e/", "?").status(),
            502
        );
        assert_eq!(CredentialError::Stopped.status(), 502);
    }

    #[test]
    fn secrets_are_masked_and_endpoints_lose_their_query() {
        let e = CredentialError::from_status(
            "token exchange",
            "https://u:p@iam.test/token?apikey=k-12345",
            400,
            "bad key k-12345",
            false,
        )
        .masked(&["k-12345", "ab"]);
        let text = e.to_string();
        assert!(!text.contains("k-12345"), "{text}");
        assert!(!text.contains("u:p"), "{text}");
        assert!(text.contains("https://iam.test/token"), "{text}");
        assert!(
            e.for_deployment("d1").starts_with("deployment `d1`: "),
            "{}",
            e.for_deployment("d1")
        );
    }
}
