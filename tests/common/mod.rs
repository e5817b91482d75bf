//! Test harness: starts the real `llmux` binary (gateway and mock) on 127.0.0.1 with ephemeral
//! ports, and a tiny blocking HTTP/1.1 client that can also misbehave on purpose.

#![allow(dead_code)]
// The harness collects child-process output from reader threads: a test-side lock, not the data plane.
#![allow(clippy::disallowed_types)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_llmux");

/// The io driver the tests run the gateway with (`LLMUX_TEST_IO_DRIVER`, default auto).
pub fn default_driver() -> String {
    std::env::var("LLMUX_TEST_IO_DRIVER").unwrap_or_else(|_| "auto".to_owned())
}

/// A child process killed on drop, with its stdout lines collected.
pub struct Proc {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.args(args).env("LLMUX_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proc::spawn_command(cmd)
    }

    /// Runs `cmd` (any program) with its output collected line by line.
    pub fn spawn_command(mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn llmux");
        let (tx, rx) = mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()) as Box<dyn Read + Send>,
        ] {
            let tx = tx.clone();
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        Proc {
            child,
            lines: rx,
            log,
        }
    }

    /// Waits for a line containing `needle`; returns it.
    pub fn wait_line(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(_) => panic!(
                    "no line containing {needle:?}; output so far:\n{}",
                    self.log.lock().unwrap().join("\n")
                ),
            }
        }
    }

    pub fn output(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Resident set size in KiB (from /proc). Panics when it cannot be read: a memory test
    /// without its measurement must fail, not pass.
    pub fn rss_kib(&self) -> u64 {
        let path = format!("/proc/{}/status", self.pid());
        let status =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .filter(|&kib: &u64| kib > 0)
            .unwrap_or_else(|| panic!("no VmRSS in {path}"))
    }
}

/// The listen address from the startup line, in text (`addr=…`) or JSON (`"addr":"…"`) form.
pub fn addr_from(line: &str) -> String {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
        return v["addr"]
            .as_str()
            .unwrap_or_else(|| panic!("no addr in {line}"))
            .to_owned();
    }
    let at = line
        .find("addr=")
        .unwrap_or_else(|| panic!("addr= not in {line}"))
        + 5;
    line[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_matches('"')
        .to_owned()
}

pub struct Mock {
    pub proc: Proc,
    pub addr: String,
}

impl Mock {
    pub fn start() -> Mock {
        Mock::start_with_env(&[])
    }

    /// A mock with environment variables (`LLMUX_MOCK_AWS_KEYS` makes it check SigV4).
    pub fn start_with_env(env: &[(&str, &str)]) -> Mock {
        let proc = Proc::spawn(
            &[
                "mock",
                "--listen",
                "127.0.0.1:0",
                "--io-driver",
                &default_driver(),
            ],
            env,
        );
        let line = proc.wait_line("mock listening on", Duration::from_secs(20));
        let addr = line.rsplit(' ').next().unwrap().to_owned();
        Mock { proc, addr }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> serde_json::Value {
        let r = request(&self.addr, "GET", "/mock/stats", &[], b"");
        serde_json::from_slice(&r.body).unwrap()
    }
}

pub struct Gateway {
    pub proc: Proc,
    pub addr: String,
    pub config: PathBuf,
    _dir: TempDir,
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "llmux-test-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct GatewayOpts<'a> {
    pub driver: String,
    pub workers: usize,
    pub extra_args: Vec<&'a str>,
    pub env: Vec<(&'a str, &'a str)>,
}

impl Default for GatewayOpts<'_> {
    fn default() -> Self {
        Self {
            driver: default_driver(),
            workers: 2,
            extra_args: Vec::new(),
            env: Vec::new(),
        }
    }
}

impl Gateway {
    pub fn start(config_yaml: &str) -> Gateway {
        Self::start_with(config_yaml, GatewayOpts::default())
    }

    pub fn start_with(config_yaml: &str, opts: GatewayOpts<'_>) -> Gateway {
        let dir = TempDir::new("gw");
        let config = dir.0.join("llmux.yaml");
        std::fs::write(&config, config_yaml).unwrap();
        let workers = opts.workers.to_string();
        let mut args = vec![
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--workers",
            &workers,
            "--io-driver",
            &opts.driver,
        ];
        args.extend(opts.extra_args.iter().copied());
        let proc = Proc::spawn(&args, &opts.env);
        let line = proc.wait_line("llmux listening", Duration::from_secs(20));
        let addr = addr_from(&line);
        Gateway {
            proc,
            addr,
            config,
            _dir: dir,
        }
    }

    /// Starts the gateway on a given I/O driver with default options otherwise.
    pub fn start_on(config_yaml: &str, driver: &str) -> Gateway {
        Self::start_with(
            config_yaml,
            GatewayOpts {
                driver: driver.into(),
                ..Default::default()
            },
        )
    }

    /// Sends a chat request on a new connection and returns the reader once the first stream
    /// event has arrived (the rest is still to be read), with the time that took.
    pub fn open_stream(&self, body: &str) -> (TcpStream, BufReader<TcpStream>, Duration) {
        let mut s = connect(&self.addr);
        write_request(&mut s, "POST", "/v1/chat/completions", &[], body.as_bytes());
        let mut rd = BufReader::new(s.try_clone().unwrap());
        let start = Instant::now();
        let mut line = String::new();
        while !line.starts_with("data: ") {
            line.clear();
            assert!(
                rd.read_line(&mut line).unwrap() > 0,
                "stream ended before its first event"
            );
        }
        (s, rd, start.elapsed())
    }

    pub fn dir(&self) -> PathBuf {
        self._dir.0.clone()
    }

    pub fn chat(&self, body: &str) -> Response {
        request(
            &self.addr,
            "POST",
            "/v1/chat/completions",
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
    }

    pub fn get(&self, path: &str) -> Response {
        request(&self.addr, "GET", path, &[], b"")
    }

    pub fn metrics(&self) -> String {
        String::from_utf8(self.get("/metrics").body).unwrap()
    }

    /// Moves the gateway's wall clock (`POST /debug/clock`; the config needs
    /// `llmux.server.debug_routes: true`), as `bearer` (the master key, when one is set).
    /// `body`: `{"unix_ms": T}` or `{"advance_ms": D}`.
    pub fn move_clock(&self, bearer: Option<&str>, body: &str) {
        let auth = bearer.map(|k| format!("Bearer {k}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        let r = request(
            &self.addr,
            "POST",
            "/debug/clock",
            &headers,
            body.as_bytes(),
        );
        assert_eq!(r.status, 200, "moving the clock: {}", r.text());
    }
}

/// A UNIX time (ms) one second into a minute that starts at least a minute from now: a test
/// that moves its gateways' clocks there has 59 s of one calendar minute before it.
pub fn a_minute_start() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    (now / 60_000 + 2) * 60_000 + 1_000
}

/// A config with one model group per (name, upstream model) against the mock.
pub fn config_for(mock: &Mock, groups: &[(&str, &str)], extra: &str) -> String {
    let mut s = String::from("model_list:\n");
    for (name, upstream) in groups {
        s.push_str(&format!(
            "  - model_name: {name}\n    litellm_params:\n      model: openai/{upstream}\n      api_base: {}/v1\n      api_key: sk-test-key-123456\n",
            mock.base()
        ));
    }
    s.push_str(extra);
    s
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

pub fn write_request(
    s: &mut TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: test\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    s.write_all(&bytes).unwrap();
}

/// Reads one response (Content-Length, chunked, or until close).
pub fn read_response(r: &mut BufReader<TcpStream>) -> Response {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("bad status line {line:?}"))
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap();
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if let Some(n) = get("content-length") {
        body.resize(n.parse().unwrap(), 0);
        r.read_exact(&mut body).unwrap();
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        r.read_to_end(&mut body).unwrap();
    }
    Response {
        status,
        headers,
        body,
    }
}

pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut s = connect(addr);
    write_request(&mut s, method, path, headers, body);
    let mut r = BufReader::new(s);
    read_response(&mut r)
}

/// Polls `f` until it returns true or the timeout passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    f()
}

/// The value of one Prometheus sample whose line starts with `prefix` (name and labels).
pub fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

pub fn data_events(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|e| e.trim().strip_prefix("data: ").map(str::to_owned))
        .collect()
}

/// The rest of a stream opened with [`Gateway::open_stream`], up to its end (the chunked
/// terminator, or the connection closing), with the chunk framing taken out.
pub fn read_stream_rest(rd: &mut BufReader<TcpStream>) -> String {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    while !raw.ends_with(b"\r\n0\r\n\r\n") {
        match rd.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&raw)
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| l.is_empty() || !l.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Like [`request`], but `None` when the connection fails (for servers that are shutting down).
pub fn try_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_whitespace().nth(1)?.parse().ok()
}
pub mod hostile;
