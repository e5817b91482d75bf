//! Google OAuth2 access tokens, as Google's client libraries get them: from a service-account
//! key (an RS256-signed JWT exchanged at the key's `token_uri`), from an `authorized_user`
//! JSON (a refresh token), or from the GCE/GKE metadata server.

use std::path::Path;
use std::time::SystemTime;

use base64::Engine as _;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use serde::Deserialize;

use super::client::{form, Http, FORM};
use super::Secret;
use super::{check_http_url, env, param, read_small_file, Credential, CredentialError, Params};
use crate::config::env::Env;

/// The scope asked for by default: every Google Cloud API the account may use.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Where tokens come from when a JSON key does not say.
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const METADATA_HOST: &str = "metadata.google.internal";
const METADATA_TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";
/// A JWT assertion's lifetime (the most Google accepts).
const ASSERTION_SECONDS: u64 = 3600;

const SERVICE_ACCOUNT: &str = "Google service account";
const AUTHORIZED_USER: &str = "Google authorized user";
const METADATA: &str = "Google metadata server";

/// A Google credential set.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GoogleSpec {
    pub source: GoogleSource,
    /// The OAuth scope of the tokens (not sent to the metadata server, whose tokens have the
    /// instance's scopes).
    pub scope: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum GoogleSource {
    ServiceAccount {
        client_email: String,
        private_key_id: Option<String>,
        /// The PEM text of the RSA key (checked when the spec was built).
        private_key: Secret,
        token_uri: String,
    },
    AuthorizedUser {
        client_id: String,
        client_secret: Secret,
        refresh_token: Secret,
        token_uri: String,
    },
    Metadata {
        /// `host[:port]`.
        host: String,
    },
}

impl GoogleSpec {
    /// The credential source of a deployment, in Google's order for application default
    /// credentials: the parameter named `credentials_param` (the provider file names it; its
    /// value is the JSON itself or a path to it), else `GOOGLE_APPLICATION_CREDENTIALS`, else
    /// gcloud's `application_default_credentials.json` (in `CLOUDSDK_CONFIG`, else
    /// `$HOME/.config/gcloud`), else the metadata server at the `gce_metadata_host` parameter,
    /// `GCE_METADATA_HOST`, or `metadata.google.internal`.
    pub fn from_params(
        params: &dyn Params,
        credentials_param: &str,
        vars: &Env,
    ) -> Result<GoogleSpec, CredentialError> {
        let given = param(params, credentials_param)
            .map(|v| (v, credentials_param))
            .or_else(|| {
                env(vars, "GOOGLE_APPLICATION_CREDENTIALS")
                    .map(|v| (v, "GOOGLE_APPLICATION_CREDENTIALS"))
            });
        let source = if let Some((value, from)) = given {
            from_json_or_path(value, from)?
        } else if let Some(path) = gcloud_file(vars).filter(|p| p.is_file()) {
            let text = read_small_file(&path).map_err(|e| {
                CredentialError::invalid(
                    SERVICE_ACCOUNT,
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            from_json(&text, &path.display().to_string())?
        } else {
            let host = param(params, "gce_metadata_host")
                .or_else(|| env(vars, "GCE_METADATA_HOST"))
                .unwrap_or(METADATA_HOST);
            let valid = host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
            if !valid {
                return Err(CredentialError::invalid(
                    METADATA,
                    format!("`{}` is not a host", crate::util::clip(host)),
                ));
            }
            check_http_url(&format!("http://{host}/"), METADATA, "gce_metadata_host")?;
            GoogleSource::Metadata {
                host: host.to_owned(),
            }
        };
        Ok(GoogleSpec {
            source,
            scope: CLOUD_PLATFORM_SCOPE.to_owned(),
        })
    }

    pub(crate) fn label(&self) -> String {
        match &self.source {
            GoogleSource::ServiceAccount {
                client_email,
                token_uri,
                ..
            } => format!("{SERVICE_ACCOUNT} {client_email} at {token_uri}"),
            GoogleSource::AuthorizedUser { token_uri, .. } => {
                format!("{AUTHORIZED_USER} at {token_uri}")
            }
            GoogleSource::Metadata { host } => format!("{METADATA} at http://{host}"),
        }
    }

    pub(crate) fn secrets(&self) -> Vec<&str> {
        match &self.source {
            GoogleSource::ServiceAccount { private_key, .. } => vec![private_key.expose()],
            GoogleSource::AuthorizedUser {
                client_secret,
                refresh_token,
                ..
            } => vec![client_secret.expose(), refresh_token.expose()],
            GoogleSource::Metadata { .. } => vec![],
        }
    }

    pub(crate) async fn fetch(&self, http: &Http) -> Result<Credential, CredentialError> {
        match &self.source {
            GoogleSource::ServiceAccount {
                client_email,
                private_key_id,
                private_key,
                token_uri,
            } => {
                let jwt = assertion(
                    client_email,
                    private_key_id.as_deref(),
                    private_key,
                    &self.scope,
                    token_uri,
                    SystemTime::now(),
                )?;
                let body = form(&[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", &jwt),
                ]);
                // The signed assertion is itself a credential for as long as it lives.
                token(http, SERVICE_ACCOUNT, token_uri, body)
                    .await
                    .map_err(|e| e.masked(&[&jwt]))
            }
            GoogleSource::AuthorizedUser {
                client_id,
                client_secret,
                refresh_token,
                token_uri,
            } => {
                let body = form(&[
                    ("grant_type", "refresh_token"),
                    ("client_id", client_id),
                    ("client_secret", client_secret.expose()),
                    ("refresh_token", refresh_token.expose()),
                ]);
                token(http, AUTHORIZED_USER, token_uri, body).await
            }
            GoogleSource::Metadata { host } => {
                let url = format!("http://{host}{METADATA_TOKEN_PATH}");
                let answer = http
                    .call(
                        http::Method::GET,
                        &url,
                        &[("metadata-flavor", "Google")],
                        vec![],
                    )
                    .await
                    .map_err(|e| e.into_credential_error(METADATA, &url))?;
                super::oauth::read_token(METADATA, &url, &answer)
            }
        }
    }
}

async fn token(
    http: &Http,
    origin: &'static str,
    token_uri: &str,
    body: Vec<u8>,
) -> Result<Credential, CredentialError> {
    let answer = http
        .call(
            http::Method::POST,
            token_uri,
            &[("content-type", FORM), ("accept", "application/json")],
            body,
        )
        .await
        .map_err(|e| e.into_credential_error(origin, token_uri))?;
    super::oauth::read_token(origin, token_uri, &answer)
}

fn gcloud_file(vars: &Env) -> Option<std::path::PathBuf> {
    let dir = match env(vars, "CLOUDSDK_CONFIG") {
        Some(d) => Path::new(d).to_path_buf(),
        None => Path::new(env(vars, "HOME")?).join(".config/gcloud"),
    };
    Some(dir.join("application_default_credentials.json"))
}

/// The JSON itself (it starts with `{`) or a path to it. `from` names where the value came
/// from, for errors.
fn from_json_or_path(value: &str, from: &str) -> Result<GoogleSource, CredentialError> {
    if value.trim_start().starts_with('{') {
        return from_json(value, from);
    }
    let text = read_small_file(Path::new(value)).map_err(|e| {
        CredentialError::invalid(
            SERVICE_ACCOUNT,
            format!("{from}: cannot read the credentials file {value}: {e}"),
        )
    })?;
    from_json(&text, value)
}

fn from_json(text: &str, from: &str) -> Result<GoogleSource, CredentialError> {
    #[derive(Deserialize)]
    struct Json {
        #[serde(rename = "type")]
        kind: Option<String>,
        client_email: Option<String>,
        private_key_id: Option<String>,
        private_key: Option<String>,
        token_uri: Option<String>,
        client_id: Option<String>,
        client_secret: Option<String>,
        refresh_token: Option<String>,
    }
    // serde's message is not kept: it can quote the value it choked on (a private key).
    let j: Json = serde_json::from_str(text).map_err(|e| {
        CredentialError::invalid(
            SERVICE_ACCOUNT,
            format!(
                "{from}: not a credentials JSON object (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    let need = |v: Option<String>, field: &str, origin: &'static str| {
        v.map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| CredentialError::invalid(origin, format!("{from}: no `{field}`")))
    };
    let token_uri = |origin: &'static str, given: Option<String>| {
        let uri = given
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_TOKEN_URI.to_owned());
        check_http_url(&uri, origin, "token_uri").map(|()| uri)
    };
    match j.kind.as_deref() {
        Some("service_account") => {
            let private_key = Secret::new(need(j.private_key, "private_key", SERVICE_ACCOUNT)?);
            // Checked now, so that a broken key is a config error, not a failure per refresh.
            rsa_key(&private_key)?;
            Ok(GoogleSource::ServiceAccount {
                client_email: need(j.client_email, "client_email", SERVICE_ACCOUNT)?,
                private_key_id: j.private_key_id.filter(|s| !s.trim().is_empty()),
                private_key,
                token_uri: token_uri(SERVICE_ACCOUNT, j.token_uri)?,
            })
        }
        Some("authorized_user") => Ok(GoogleSource::AuthorizedUser {
            client_id: need(j.client_id, "client_id", AUTHORIZED_USER)?,
            client_secret: Secret::new(need(j.client_secret, "client_secret", AUTHORIZED_USER)?),
            refresh_token: Secret::new(need(j.refresh_token, "refresh_token", AUTHORIZED_USER)?),
            token_uri: token_uri(AUTHORIZED_USER, j.token_uri)?,
        }),
        Some(other) => Err(CredentialError::invalid(
            SERVICE_ACCOUNT,
            format!(
                "{from}: credentials of type `{}` are not supported (service_account and \
                 authorized_user are)",
                crate::util::clip(other)
            ),
        )),
        None => Err(CredentialError::invalid(
            SERVICE_ACCOUNT,
            format!("{from}: no `type`"),
        )),
    }
}

/// The RSA key of a PEM text (PKCS#8, as Google issues them, or PKCS#1).
fn rsa_key(pem: &Secret) -> Result<RsaKeyPair, CredentialError> {
    use rustls::pki_types::PrivateKeyDer;
    let refuse =
        |why: &str| CredentialError::invalid(SERVICE_ACCOUNT, format!("private_key: {why}"));
    let der = rustls_pemfile::private_key(&mut pem.expose().as_bytes())
        .map_err(|_| refuse("not a PEM private key"))?
        .ok_or_else(|| refuse("not a PEM private key"))?;
    match der {
        PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
        _ => return Err(refuse("not an RSA key")),
    }
    .map_err(|e| refuse(&format!("unusable RSA key ({e})")))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The signed JWT a service account trades for an access token: header `{alg, typ, kid}`,
/// claims `{iss, scope, aud, iat, exp}`, RS256.
fn assertion(
    client_email: &str,
    private_key_id: Option<&str>,
    private_key: &Secret,
    scope: &str,
    token_uri: &str,
    now: SystemTime,
) -> Result<String, CredentialError> {
    let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = private_key_id {
        header["kid"] = kid.into();
    }
    let iat = super::time::unix(now);
    let claims = serde_json::json!({
        "iss": client_email,
        "scope": scope,
        "aud": token_uri,
        "iat": iat,
        "exp": iat + ASSERTION_SECONDS,
    });
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let key = rsa_key(private_key)?;
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut signature,
    )
    .map_err(|_| CredentialError::invalid(SERVICE_ACCOUNT, "signing the JWT failed"))?;
    Ok(format!("{input}.{}", b64(&signature)))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::upstream::credentials::testutil::{
        block_on, env as vars, params, temp_dir, test_tls, Fake, Reply,
    };

    /// The parameter the tests put the JSON in (provider files name their own).
    const PARAM: &str = "google_credentials";

    pub fn test_key_pem() -> String {
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/credentials/google/TEST-ONLY-rsa-private-key.pem"
        ))
        .expect("the test key")
    }

    fn test_public_key() -> Vec<u8> {
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/credentials/google/TEST-ONLY-rsa-public-key.der"
        ))
        .expect("the test public key")
    }

    pub fn sa_json(token_uri: &str) -> String {
        serde_json::json!({
            "type": "service_account",
            "project_id": "p",
            "private_key_id": "kid-123",
            "private_key": test_key_pem(),
            "client_email": "sa@p.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": token_uri,
        })
        .to_string()
    }

    fn decode(part: &str) -> serde_json::Value {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .expect("base64url");
        serde_json::from_slice(&bytes).expect("JSON")
    }

    /// What a token endpoint checks: the JWT's signature (with the public key alone) and
    /// claims. Returns the claims when it is valid.
    pub fn verify_jwt(jwt: &str, token_uri: &str) -> Option<serde_json::Value> {
        let (input, sig) = jwt.rsplit_once('.')?;
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .ok()?;
        let key = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            test_public_key(),
        );
        key.verify(input.as_bytes(), &sig).ok()?;
        let (header, claims) = input.split_once('.')?;
        let (header, claims) = (decode(header), decode(claims));
        let ok = header == serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "kid-123"})
            && claims["iss"] == "sa@p.iam.gserviceaccount.com"
            && claims["scope"] == CLOUD_PLATFORM_SCOPE
            && claims["aud"] == token_uri
            && claims["exp"].as_u64()? == claims["iat"].as_u64()? + 3600;
        ok.then_some(claims)
    }

    /// A fake token endpoint that answers only a valid assertion.
    pub fn fake_token_endpoint(lifetimes: Vec<u64>) -> Fake {
        let uri = std::sync::Arc::new(std::sync::OnceLock::<String>::new());
        let u = uri.clone();
        let fake = Fake::start(move |n, seen| {
            let form = seen.form();
            let valid = form.get("grant_type").map(String::as_str)
                == Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
                && form
                    .get("assertion")
                    .and_then(|a| verify_jwt(a, u.get().map_or("", String::as_str)))
                    .is_some();
            if !valid {
                return Reply::status(
                    400,
                    r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
                );
            }
            let life = lifetimes
                .get(n - 1)
                .or(lifetimes.last())
                .copied()
                .unwrap_or(3600);
            Reply::ok(format!(
                r#"{{"access_token":"ya29.token-{n}","expires_in":{life},"token_type":"Bearer"}}"#
            ))
        });
        let _ = uri.set(fake.url("/token"));
        fake
    }

    #[test]
    fn service_account_jwt_is_signed_and_exchanged() {
        let fake = fake_token_endpoint(vec![3599]);
        let spec = GoogleSpec::from_params(
            &params(&[(PARAM, &sa_json(&fake.url("/token")))]),
            PARAM,
            &vars(&[]),
        )
        .unwrap();
        assert!(spec.label().contains("sa@p.iam.gserviceaccount.com"));
        let c = block_on(spec.fetch(&Http::new(&test_tls()))).unwrap();
        assert_eq!(c.bearer(), Some("ya29.token-1"));
        let seen = fake.next_seen();
        assert_eq!(seen.target, "/token");
        assert!(seen
            .header("content-type")
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded")));
    }

    #[test]
    fn the_json_may_be_a_file_named_by_the_parameter_or_the_environment() {
        let fake = fake_token_endpoint(vec![3600]);
        let dir = temp_dir("sa");
        let path = dir.join("sa.json");
        std::fs::write(&path, sa_json(&fake.url("/token"))).unwrap();
        let p = path.to_str().unwrap();
        let from_param =
            GoogleSpec::from_params(&params(&[(PARAM, p)]), PARAM, &vars(&[])).unwrap();
        let from_env = GoogleSpec::from_params(
            &params(&[]),
            PARAM,
            &vars(&[("GOOGLE_APPLICATION_CREDENTIALS", p)]),
        )
        .unwrap();
        assert_eq!(from_param, from_env);
        let c = block_on(from_env.fetch(&Http::new(&test_tls()))).unwrap();
        assert_eq!(c.bearer(), Some("ya29.token-1"));
        // gcloud's file, found through CLOUDSDK_CONFIG.
        std::fs::copy(&path, dir.join("application_default_credentials.json")).unwrap();
        let gcloud = GoogleSpec::from_params(
            &params(&[]),
            PARAM,
            &vars(&[("CLOUDSDK_CONFIG", dir.to_str().unwrap())]),
        )
        .unwrap();
        assert_eq!(gcloud, from_param);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn an_assertion_the_endpoint_cannot_verify_is_a_401() {
        let fake = fake_token_endpoint(vec![3600]);
        // Signed for another audience than the endpoint it is sent to.
        let elsewhere = "http://127.0.0.1:9/elsewhere";
        let spec =
            GoogleSpec::from_params(&params(&[(PARAM, &sa_json(elsewhere))]), PARAM, &vars(&[]))
                .unwrap();
        let GoogleSource::ServiceAccount { private_key, .. } = &spec.source else {
            panic!("{spec:?}")
        };
        let jwt = assertion(
            "sa@p.iam.gserviceaccount.com",
            Some("kid-123"),
            private_key,
            CLOUD_PLATFORM_SCOPE,
            elsewhere,
            SystemTime::now(),
        )
        .unwrap();
        assert!(verify_jwt(&jwt, elsewhere).is_some());
        let e = block_on(token(
            &Http::new(&test_tls()),
            SERVICE_ACCOUNT,
            &fake.url("/token"),
            form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", &jwt),
            ]),
        ))
        .unwrap_err();
        assert_eq!(e.status(), 401, "{e}");
        assert!(e.to_string().contains("invalid_grant"), "{e}");
        // A signature over other bytes does not verify.
        let mut forged = jwt.clone();
        forged.insert(10, 'x');
        assert!(verify_jwt(&forged, elsewhere).is_none());
    }

    #[test]
    fn authorized_user_uses_its_refresh_token() {
        let fake = Fake::start(|_, seen| {
            let f = seen.form();
            if f.get("grant_type").map(String::as_str) == Some("refresh_token")
                && f.get("refresh_token").map(String::as_str) == Some("1//refresh-abc")
                && f.get("client_secret").map(String::as_str) == Some("cs-1")
            {
                Reply::ok(r#"{"access_token":"ya29.user","expires_in":3599}"#)
            } else {
                Reply::status(400, r#"{"error":"invalid_grant"}"#)
            }
        });
        let json = serde_json::json!({
            "type": "authorized_user",
            "client_id": "cid.apps.googleusercontent.com",
            "client_secret": "cs-1",
            "refresh_token": "1//refresh-abc",
            "token_uri": fake.url("/token"),
        })
        .to_string();
        let spec = GoogleSpec::from_params(&params(&[(PARAM, &json)]), PARAM, &vars(&[])).unwrap();
        let c = block_on(spec.fetch(&Http::new(&test_tls()))).unwrap();
        assert_eq!(c.bearer(), Some("ya29.user"));
        assert_eq!(spec.secrets(), vec!["cs-1", "1//refresh-abc"]);
    }

    #[test]
    fn metadata_server_with_its_flavor_header() {
        let fake = Fake::start(|_, seen| {
            if seen.header("metadata-flavor") == Some("Google")
                && seen.target == METADATA_TOKEN_PATH
            {
                Reply::ok(r#"{"access_token":"ya29.gce","expires_in":3599,"token_type":"Bearer"}"#)
            } else {
                Reply::status(403, "missing flavor")
            }
        });
        let by_param = GoogleSpec::from_params(
            &params(&[("gce_metadata_host", &fake.host())]),
            PARAM,
            &vars(&[("GCE_METADATA_HOST", "ignored.invalid")]),
        )
        .unwrap();
        let by_env = GoogleSpec::from_params(
            &params(&[]),
            PARAM,
            &vars(&[("GCE_METADATA_HOST", &fake.host())]),
        )
        .unwrap();
        assert_eq!(by_param, by_env);
        let c = block_on(by_env.fetch(&Http::new(&test_tls()))).unwrap();
        assert_eq!(c.bearer(), Some("ya29.gce"));
        let default = GoogleSpec::from_params(&params(&[]), PARAM, &vars(&[])).unwrap();
        assert_eq!(
            default.source,
            GoogleSource::Metadata {
                host: "metadata.google.internal".into()
            }
        );
        assert!(GoogleSpec::from_params(
            &params(&[("gce_metadata_host", "evil.example/x?")]),
            PARAM,
            &vars(&[])
        )
        .is_err());
    }

    #[test]
    fn broken_json_never_quotes_the_key() {
        let pem = test_key_pem();
        let body = pem.lines().nth(3).unwrap().to_owned();
        let cases = [
            format!(r#"{{"type":"service_account","private_key":"{body}","client_email":"a"}}"#),
            format!(r#"{{"type":"service_account","private_key":{body}}}"#),
            format!(r#"{{"type":"external_account","private_key":"{body}"}}"#),
            r#"{"type":"service_account","client_email":"a"}"#.to_owned(),
            "{".to_owned(),
        ];
        for json in cases {
            let e =
                GoogleSpec::from_params(&params(&[(PARAM, &json)]), PARAM, &vars(&[])).unwrap_err();
            assert_eq!(e.status(), 401);
            assert!(!e.to_string().contains(&body), "{e}");
            assert!(!format!("{e:?}").contains(&body));
        }
        let missing = GoogleSpec::from_params(
            &params(&[(PARAM, "/nonexistent/sa.json")]),
            PARAM,
            &vars(&[]),
        )
        .unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/sa.json"),
            "{missing}"
        );
        let spec = GoogleSpec::from_params(
            &params(&[(PARAM, &sa_json("https://t/"))]),
            PARAM,
            &vars(&[]),
        )
        .unwrap();
        assert!(!format!("{spec:?}").contains(&body));
    }
}
