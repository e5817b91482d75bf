//! TLS configurations from the config's certificate files (read on every load, so renewed
//! certificates take effect on reload). Errors name the setting they belong to.

use std::path::Path;
use std::sync::Arc;

/// A failed TLS setting: which key, and why.
pub struct TlsError {
    pub key: &'static str,
    pub message: String,
}

fn err(key: &'static str, message: impl Into<String>) -> TlsError {
    TlsError {
        key,
        message: message.into(),
    }
}

fn read_pem(base_dir: &Path, file: &str, key: &'static str) -> Result<Vec<u8>, TlsError> {
    let path = base_dir.join(file);
    std::fs::read(&path).map_err(|e| err(key, format!("cannot read {}: {e}", path.display())))
}

/// The listener's TLS config from `llmux.server.tls`.
pub fn server(
    base_dir: &Path,
    cert_file: &str,
    key_file: &str,
) -> Result<rustls::ServerConfig, Vec<TlsError>> {
    let cert_pem = read_pem(base_dir, cert_file, "cert_file");
    let key_pem = read_pem(base_dir, key_file, "key_file");
    let (cert_pem, key_pem) = match (cert_pem, key_pem) {
        (Ok(c), Ok(k)) => (c, k),
        (c, k) => return Err(c.err().into_iter().chain(k.err()).collect()),
    };
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| vec![err("cert_file", e.to_string())])?;
    if certs.is_empty() {
        return Err(vec![err("cert_file", "holds no PEM certificate")]);
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| vec![err("key_file", e.to_string())])?
        .ok_or_else(|| vec![err("key_file", "holds no PEM private key")])?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| vec![err("cert_file", e.to_string())])?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| {
        vec![err(
            "key_file",
            format!("does not match the certificate: {e}"),
        )]
    })?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// The upstream client's TLS config: the webpki roots, plus `llmux.upstream.ca_file`.
pub fn client(base_dir: &Path, ca_file: Option<&str>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(f) = ca_file {
        let pem = read_pem(base_dir, f, "ca_file")?;
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| err("ca_file", e.to_string()))?;
            roots.add(cert).map_err(|e| err("ca_file", e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(err("ca_file", format!("{f} holds no PEM certificate")));
        }
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| err("ca_file", e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}
