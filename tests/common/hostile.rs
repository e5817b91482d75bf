//! A scripted upstream for tests: it answers every request with bytes the test chooses (deep
//! JSON, broken streams, echoed secrets), which the mock upstream will not send, or lets the
//! test write the response itself at its own pace (a stream held until the test says go).
//! Plain blocking sockets on 127.0.0.1, one thread per connection, one response per connection
//! (`connection: close`), so every exchange is independent.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// A go signal for a scripted upstream that holds its answer back: the upstream blocks in
/// [`Gate::wait`] until the test calls [`Gate::go`] (after it has seen what came before).
// The upstream's thread waits behind a lock: test code, not the data plane.
#[allow(clippy::disallowed_types)]
pub struct Gate {
    tx: mpsc::Sender<()>,
    rx: std::sync::Mutex<mpsc::Receiver<()>>,
}

#[allow(clippy::disallowed_types)]
impl Gate {
    pub fn new() -> Arc<Gate> {
        let (tx, rx) = mpsc::channel();
        Arc::new(Gate {
            tx,
            rx: std::sync::Mutex::new(rx),
        })
    }

    pub fn go(&self) {
        let _ = self.tx.send(());
    }

    /// Waits for the go (at most 20 s, so a failing test ends).
    pub fn wait(&self) {
        if let Ok(rx) = self.rx.lock() {
            let _ = rx.recv_timeout(Duration::from_secs(20));
        }
    }
}

/// The head of a streamed response (`connection: close`, the body ends at close).
pub const SSE_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub head: String,
    pub body: Vec<u8>,
}

impl Received {
    /// The request target (`/v1/messages`).
    pub fn path(&self) -> &str {
        self.head.split_whitespace().nth(1).unwrap_or("")
    }

    /// The model the gateway asked for (from the body, or from a Gemini-style path).
    pub fn model(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["model"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

type Handler = dyn Fn(&Received, &mut TcpStream) + Send + Sync;

pub struct Hostile {
    pub addr: String,
    pub requests: Arc<AtomicUsize>,
    received: mpsc::Receiver<Received>,
    stop: Arc<AtomicBool>,
}

impl Hostile {
    /// Starts the upstream; `answer` returns the raw HTTP response for each request.
    pub fn start(answer: impl Fn(&Received) -> Vec<u8> + Send + Sync + 'static) -> Hostile {
        Self::start_writing(move |req, conn| {
            let _ = conn.write_all(&answer(req));
        })
    }

    /// Starts the upstream; `write` writes the raw HTTP response for each request to the
    /// connection itself (and may block, e.g. until the test lets a stream go on).
    pub fn start_writing(
        write: impl Fn(&Received, &mut TcpStream) + Send + Sync + 'static,
    ) -> Hostile {
        let answer: Arc<Handler> = Arc::new(write);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind hostile upstream");
        let addr = listener.local_addr().expect("addr").to_string();
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        {
            let (requests, stop) = (requests.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    let (answer, requests, tx) = (answer.clone(), requests.clone(), tx.clone());
                    std::thread::spawn(move || serve(conn, &*answer, &requests, &tx));
                }
            });
        }
        Hostile {
            addr,
            requests,
            received: rx,
            stop,
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next request the upstream received (waits for it).
    pub fn next_request(&self) -> Received {
        self.received
            .recv_timeout(Duration::from_secs(20))
            .expect("the upstream received a request")
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(&self.addr);
    }
}

fn serve(
    mut conn: TcpStream,
    answer: &Handler,
    requests: &AtomicUsize,
    tx: &mpsc::Sender<Received>,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(20)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let req = Received {
        head,
        body: buf[head_end..head_end + length].to_vec(),
    };
    requests.fetch_add(1, Ordering::Relaxed);
    let _ = tx.send(req.clone());
    answer(&req, &mut conn);
    let _ = conn.shutdown(std::net::Shutdown::Write);
    // Let the gateway read everything before the socket goes away.
    let _ = conn.read(&mut chunk);
}

/// A complete response with a Content-Length body.
pub fn response(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A streamed response: the events as given, then the connection closes (no length, no
/// chunking: the body ends at close).
pub fn sse(events: &[u8]) -> Vec<u8> {
    let mut out = SSE_HEAD.to_vec();
    out.extend_from_slice(events);
    out
}

/// `[[[...]]]` nested `depth` levels.
pub fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}
