//! TLS on the listener and to upstreams (with a private CA from `llmux.upstream.ca_file`),
//! name resolution through the DNS threads, and CONNECT tunnels through `HTTPS_PROXY`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;

struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn make_pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert_pem: leaf.pem(),
        key_pem: leaf_key.serialize_pem(),
    }
}

/// A minimal CONNECT proxy on 127.0.0.1 that counts the tunnels it opened.
fn start_connect_proxy() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let tunnels = Arc::new(AtomicUsize::new(0));
    let count = tunnels.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().take(64) {
            let Ok(client) = client else { continue };
            let count = count.clone();
            std::thread::spawn(move || {
                let mut rd = BufReader::new(client.try_clone().unwrap());
                let mut line = String::new();
                rd.read_line(&mut line).unwrap();
                let target = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                loop {
                    let mut h = String::new();
                    if rd.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let Ok(upstream) = TcpStream::connect(&target) else {
                    let _ = (&client).write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                (&client)
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .unwrap();
                let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut u2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Both);
                });
                let mut buf = rd.buffer().to_vec();
                let mut up = upstream;
                if !buf.is_empty() {
                    up.write_all(&buf).unwrap();
                }
                buf.resize(16 * 1024, 0);
                let mut client = client;
                loop {
                    match client.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if up.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = up.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    (addr, tunnels)
}

#[test]
fn tls_listener_and_tls_upstream_with_private_ca_and_proxy() {
    let pki = make_pki();
    let dir = TempDir::new("tls");
    std::fs::write(dir.0.join("ca.pem"), &pki.ca_pem).unwrap();
    std::fs::write(dir.0.join("tls.crt"), &pki.cert_pem).unwrap();
    std::fs::write(dir.0.join("tls.key"), &pki.key_pem).unwrap();
    let p = |f: &str| dir.0.join(f).display().to_string();

    let mock = Mock::start();
    // Gateway A terminates TLS and forwards to the mock.
    let front = Gateway::start(&config_for(
        &mock,
        &[("m", "up-model")],
        &format!(
            "llmux:\n  server:\n    tls:\n      cert_file: {}\n      key_file: {}\n",
            p("tls.crt"),
            p("tls.key")
        ),
    ));
    let port = front.addr.rsplit(':').next().unwrap().to_owned();
    // Plain HTTP to a TLS listener fails the handshake.
    let mut s = connect(&front.addr);
    s.write_all(b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(!out.starts_with(b"HTTP/1.1 200"));

    // Gateway B calls A over https://localhost (DNS threads, TLS, private CA).
    let chain = format!(
        "model_list:
  - model_name: via-tls
    litellm_params:
      model: openai/m
      api_base: https://localhost:{port}/v1
      api_key: sk-inner
llmux:
  upstream:
    ca_file: {}
",
        p("ca.pem")
    );
    let back = Gateway::start(&chain);
    let r = back.chat(r#"{"model":"via-tls","messages":[{"role":"user","content":"hi"}]}"#);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), back.proc.output());
    // The group asked for, as LiteLLM answers.
    assert_eq!(r.json()["model"], "via-tls");
    let r = back
        .chat(r#"{"model":"via-tls","stream":true,"messages":[{"role":"user","content":"hi"}]}"#);
    assert_eq!(r.status, 200);
    assert!(r.text().contains("[DONE]"));

    // Without the CA the handshake is refused: 502.
    let untrusted = Gateway::start(&chain.replace(&format!("    ca_file: {}\n", p("ca.pem")), ""));
    let r = untrusted.chat(r#"{"model":"via-tls","messages":[{"role":"user","content":"hi"}]}"#);
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("TLS"), "{}", r.text());

    // Gateway C goes through a CONNECT proxy.
    let (proxy, tunnels) = start_connect_proxy();
    let proxy_url = format!("http://{proxy}");
    let proxied = Gateway::start_with(
        &chain,
        GatewayOpts {
            env: vec![("HTTPS_PROXY", proxy_url.as_str()), ("NO_PROXY", "")],
            ..Default::default()
        },
    );
    let r = proxied.chat(r#"{"model":"via-tls","messages":[{"role":"user","content":"hi"}]}"#);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), proxied.proc.output());
    assert!(tunnels.load(Ordering::SeqCst) >= 1);
}
