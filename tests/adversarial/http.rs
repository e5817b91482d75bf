//! HTTP/1.1 framing against a hostile client (issue 7, items 4–8): request smuggling through
//! Transfer-Encoding, head size, chunk extensions and trailers, Host, slow bodies. Raw sockets
//! against the real binary; every read has a timeout, so a server that fails to answer or to
//! close makes a test fail instead of hang.

use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;

const HI: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

fn start(server_yaml: &str) -> (Mock, Gateway) {
    let mock = Mock::start();
    let extra = if server_yaml.is_empty() {
        String::new()
    } else {
        format!("llmux:\n  server:\n{server_yaml}")
    };
    let gw = Gateway::start(&config_for(&mock, &[("m", "up")], &extra));
    (mock, gw)
}

/// A connection that has sent `bytes`, and a reader on it.
fn send(addr: &str, bytes: &[u8]) -> (TcpStream, BufReader<TcpStream>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let rd = BufReader::new(s.try_clone().unwrap());
    (s, rd)
}

/// Asserts an OpenAI-format error with `status` that announces the close.
fn assert_refused(r: &Response, status: u16) {
    assert_eq!(r.status, status, "{}", r.text());
    let e = r.json();
    assert!(e["error"]["message"].is_string(), "{e}");
    assert_eq!(e["error"]["code"], status.to_string(), "{e}");
    assert_eq!(r.header("connection"), Some("close"));
}

/// Asserts the server closed the connection with nothing more to say: no second response.
fn assert_closed(rd: &mut BufReader<TcpStream>) {
    let mut rest = Vec::new();
    match rd.read_to_end(&mut rest) {
        Ok(_) => assert!(
            rest.is_empty(),
            "bytes after the response: {:?}",
            String::from_utf8_lossy(&rest)
        ),
        Err(e) => panic!("the connection was not closed cleanly: {e}"),
    }
}

fn chat_head(extra: &str) -> String {
    format!("POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n{extra}\r\n")
}

/// Sends a request with these Transfer-Encoding values and a chunked chat body.
fn with_transfer_encoding(gw: &Gateway, te: &str) -> Response {
    let req = format!(
        "{}{:x}\r\n{HI}\r\n0\r\n\r\n",
        chat_head(&format!("transfer-encoding: {te}\r\n")),
        HI.len()
    );
    let (_s, mut rd) = send(&gw.addr, req.as_bytes());
    let r = read_response(&mut rd);
    assert_closed(&mut rd);
    r
}

#[test]
fn te_identity_cannot_smuggle_a_request() {
    let (mock, gw) = start("");
    let smuggled = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n\r\n{HI}",
        HI.len()
    );
    let req = format!(
        "GET /health/live HTTP/1.1\r\nhost: t\r\ntransfer-encoding: identity\r\n\r\n{smuggled}"
    );
    let (_s, mut rd) = send(&gw.addr, req.as_bytes());
    let r = read_response(&mut rd);
    assert_refused(&r, 501);
    assert_closed(&mut rd);
    assert_eq!(
        mock.stats()["requests"],
        0,
        "the smuggled request reached the upstream"
    );
}

#[test]
fn transfer_codings_other_than_chunked_are_refused() {
    let (mock, gw) = start("");
    assert_refused(&with_transfer_encoding(&gw, "gzip, chunked"), 501);
    assert_refused(&with_transfer_encoding(&gw, "chunked, identity"), 400);
    assert_refused(&with_transfer_encoding(&gw, "chunked, gzip"), 400);
    // Content-Length beside Transfer-Encoding is ambiguous framing.
    let req = format!(
        "{}{:x}\r\n{HI}\r\n0\r\n\r\n",
        chat_head(&format!(
            "content-length: {}\r\ntransfer-encoding: chunked\r\n",
            HI.len()
        )),
        HI.len()
    );
    let (_s, mut rd) = send(&gw.addr, req.as_bytes());
    assert_refused(&read_response(&mut rd), 400);
    assert_closed(&mut rd);
    assert_eq!(mock.stats()["requests"], 0);
    // The plain chunked request is served.
    assert_eq!(chunked_chat_status(&gw), 200);
}

fn chunked_chat_status(gw: &Gateway) -> u16 {
    let req = format!(
        "{}{:x}\r\n{HI}\r\n0\r\n\r\n",
        chat_head("transfer-encoding: chunked\r\n"),
        HI.len()
    );
    let (_s, mut rd) = send(&gw.addr, req.as_bytes());
    read_response(&mut rd).status
}

/// A GET whose head is `size` bytes long (padded by one header field).
fn head_of(size: usize) -> Vec<u8> {
    let start = "GET /health/live HTTP/1.1\r\nhost: t\r\nx-pad: ";
    let end = "\r\n\r\n";
    let pad = "a".repeat(size - start.len() - end.len());
    format!("{start}{pad}{end}").into_bytes()
}

#[test]
fn head_limit_holds_for_a_head_in_one_write() {
    let (_mock, gw) = start("    max_header_bytes: 16384\n");
    let (_s, mut rd) = send(&gw.addr, &head_of(32 * 1024));
    assert_refused(&read_response(&mut rd), 431);
    assert_closed(&mut rd);
    // Just over and just within the limit.
    let (_s, mut rd) = send(&gw.addr, &head_of(16385));
    assert_refused(&read_response(&mut rd), 431);
    let (_s, mut rd) = send(&gw.addr, &head_of(15 * 1024));
    let r = read_response(&mut rd);
    assert_eq!(r.status, 200, "{}", r.text());
    let (_s, mut rd) = send(&gw.addr, &head_of(16384));
    assert_eq!(read_response(&mut rd).status, 200);
}

#[test]
fn chunk_extensions_and_trailers_are_accepted() {
    let (mock, gw) = start("");
    // 0x41 bytes in the first chunk, the rest in a second; extensions on every size line,
    // including the last, and two trailer fields.
    let content = "extensions and trailers are fine: ".repeat(3);
    let body = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{content}"}}]}}"#);
    let (a, b) = body.as_bytes().split_at(0x41);
    let mut req = chat_head("transfer-encoding: chunked\r\n").into_bytes();
    req.extend_from_slice(b"41;foo=bar\r\n");
    req.extend_from_slice(a);
    req.extend_from_slice(format!("\r\n{:x} ; a=\"q;uoted\" ; b\r\n", b.len()).as_bytes());
    req.extend_from_slice(b);
    req.extend_from_slice(b"\r\n0;end\r\nx-checksum: abc\r\nx-other: 1\r\n\r\n");
    // A second request right behind the trailers: they were consumed exactly.
    req.extend_from_slice(b"GET /health/live HTTP/1.1\r\nhost: t\r\n\r\n");
    let (_s, mut rd) = send(&gw.addr, &req);
    let r = read_response(&mut rd);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["object"], "chat.completion");
    let upstream = request(&mock.addr, "GET", "/mock/last-request", &[], b"").json();
    assert_eq!(upstream["messages"][0]["content"], content.as_str());
    assert_eq!(read_response(&mut rd).status, 200);
}

#[test]
fn host_is_required_once_in_http11() {
    let (_mock, gw) = start("");
    for req in [
        "GET /health/live HTTP/1.1\r\n\r\n",
        "GET /health/live HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
        "GET /health/live HTTP/1.1\r\nhost: a\r\nhost: a\r\n\r\n",
        "GET /health/live HTTP/1.0\r\nhost: a\r\nhost: b\r\n\r\n",
    ] {
        let (_s, mut rd) = send(&gw.addr, req.as_bytes());
        assert_refused(&read_response(&mut rd), 400);
        assert_closed(&mut rd);
    }
    // HTTP/1.0 predates Host.
    let (_s, mut rd) = send(&gw.addr, b"GET /health/live HTTP/1.0\r\n\r\n");
    let r = read_response(&mut rd);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_closed(&mut rd);
}

#[test]
fn slow_body_gets_408() {
    let (mock, gw) = start("    body_timeout: 1\n");
    let head = chat_head(&format!("content-length: {}\r\n", HI.len()));
    let (s, mut rd) = send(&gw.addr, head.as_bytes());
    // One byte every 200 ms: the body would take ~12 s, its timeout is 1 s.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || {
            for b in HI.bytes() {
                if stop.load(Ordering::Relaxed) || s.write_all(&[b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let r = read_response(&mut rd);
    stop.store(true, Ordering::Relaxed);
    assert_refused(&r, 408);
    assert_closed(&mut rd);
    writer.join().unwrap();
    assert_eq!(mock.stats()["requests"], 0);
}

#[test]
fn client_closing_mid_body_gets_no_answer() {
    let (mock, gw) = start("");
    let head = chat_head(&format!("content-length: {}\r\n", HI.len()));
    let (s, mut rd) = send(&gw.addr, head.as_bytes());
    (&s).write_all(&HI.as_bytes()[..10]).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_closed(&mut rd);
    assert_eq!(mock.stats()["requests"], 0);
}

/// A body of known length that arrives in pieces (its head first, then three writes, the
/// last with the next request right behind it) goes upstream whole, and the next request
/// after it: each answer counts the body the mock received as the one sent in one write.
#[test]
fn a_body_in_pieces_goes_upstream_whole() {
    let (mock, gw) = start("");
    let text = "x".repeat(20_000);
    let body = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{text}"}}]}}"#);
    let head = chat_head(&format!("content-length: {}\r\n", body.len()));
    let whole = format!("{head}{body}");
    let (_s, mut rd) = send(&gw.addr, whole.as_bytes());
    let once = read_response(&mut rd);
    assert_eq!(once.status, 200, "{}", once.text());
    let counted = once.json()["usage"]["prompt_tokens"].clone();
    assert!(counted.as_u64().is_some_and(|n| n > 4_000), "{counted}");
    let (s, mut rd) = send(&gw.addr, head.as_bytes());
    let b = body.as_bytes();
    let mut w = &s;
    // The pauses only make separate reads likely; the answers are the same either way.
    w.write_all(&b[..5]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    w.write_all(&b[5..12_000]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let mut last = b[12_000..].to_vec();
    last.extend_from_slice(whole.as_bytes());
    w.write_all(&last).unwrap();
    for _ in 0..2 {
        let r = read_response(&mut rd);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["usage"]["prompt_tokens"], counted);
    }
    assert_eq!(mock.stats()["requests"], 3);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (_mock, gw) = start("");
    let chat = format!(
        "{}{HI}",
        chat_head(&format!("content-length: {}\r\n", HI.len()))
    );
    let req = format!(
        "GET /health/live HTTP/1.1\r\nhost: t\r\n\r\n{chat}GET /nothing HTTP/1.1\r\nhost: t\r\n\r\n{chat}"
    );
    let (_s, mut rd) = send(&gw.addr, req.as_bytes());
    let statuses: Vec<u16> = (0..4).map(|_| read_response(&mut rd).status).collect();
    assert_eq!(statuses, [200, 200, 404, 200]);
}
