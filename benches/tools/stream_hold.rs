//! Holds many slow streams open at once and timestamps every event: the client of the
//! "10,000 concurrent streams" phase of `benches/load.sh`.
//!
//! `stream_hold ADDR PATH BODY N RAMP_PER_S` opens N connections to ADDR (at most RAMP_PER_S
//! new ones per second), sends `POST PATH` with BODY on each, and reads the streamed answers.
//! Every read that brings an event (`data:`) is timestamped; the gaps between consecutive
//! events of a stream are what a proxy adds to (the mock spaces them evenly). Prints one JSON
//! object: streams completed and failed, events, the peak of streams open at once, the first
//! event's latency and the gap percentiles, in milliseconds.
//!
//! Built with `cargo build --release --example stream_hold`; one monoio runtime on one thread,
//! so that the client costs as little CPU as possible beside the gateway and the mock.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

#[derive(Default)]
struct Stats {
    completed: Cell<usize>,
    failed: Cell<usize>,
    events: Cell<usize>,
    open: Cell<usize>,
    open_peak: Cell<usize>,
    first_event_us: RefCell<Vec<u64>>,
    gaps_us: RefCell<Vec<u64>>,
    last_error: RefCell<String>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, path, body, n, ramp] = args.as_slice() else {
        eprintln!("usage: stream_hold ADDR PATH BODY N RAMP_PER_S");
        std::process::exit(2);
    };
    let n: usize = n.parse().expect("N");
    let ramp: u64 = ramp.parse().expect("RAMP_PER_S");
    raise_nofile();
    let request = Rc::new(
        format!(
            "POST {path} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    );
    let stats = Rc::new(Stats::default());
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .with_entries(32768)
        .build()
        .expect("runtime");
    let started = Instant::now();
    rt.block_on({
        let stats = stats.clone();
        let addr = addr.clone();
        async move {
            let mut handles = Vec::with_capacity(n);
            let interval = Duration::from_micros(1_000_000 / ramp.max(1));
            for i in 0..n {
                let (stats, addr, request) = (stats.clone(), addr.clone(), request.clone());
                handles.push(monoio::spawn(async move {
                    if let Err(e) = one_stream(&addr, &request, &stats).await {
                        stats.failed.set(stats.failed.get() + 1);
                        *stats.last_error.borrow_mut() = e;
                    }
                }));
                if i % 100 == 99 {
                    monoio::time::sleep(interval * 100).await;
                }
            }
            for h in handles {
                h.await;
            }
        }
    });
    let mut first = stats.first_event_us.borrow_mut();
    let mut gaps = stats.gaps_us.borrow_mut();
    first.sort_unstable();
    gaps.sort_unstable();
    let pct = |v: &[u64], p: f64| -> f64 {
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[i] as f64 / 1000.0
    };
    println!(
        "{{\"streams\":{n},\"completed\":{},\"failed\":{},\"events\":{},\"open_peak\":{},\"seconds\":{:.1},\"first_event_p50_ms\":{:.3},\"first_event_p99_ms\":{:.3},\"gap_p50_ms\":{:.3},\"gap_p99_ms\":{:.3},\"gap_max_ms\":{:.3},\"last_error\":{:?}}}",
        stats.completed.get(),
        stats.failed.get(),
        stats.events.get(),
        stats.open_peak.get(),
        started.elapsed().as_secs_f64(),
        pct(&first, 0.5),
        pct(&first, 0.99),
        pct(&gaps, 0.5),
        pct(&gaps, 0.99),
        gaps.last().map_or(f64::NAN, |g| *g as f64 / 1000.0),
        stats.last_error.borrow(),
    );
}

async fn one_stream(addr: &str, request: &[u8], stats: &Stats) -> Result<(), String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = s.set_nodelay(true);
    let sent = Instant::now();
    let (r, _) = s.write_all(request.to_vec()).await;
    r.map_err(|e| format!("write: {e}"))?;
    stats.open.set(stats.open.get() + 1);
    stats
        .open_peak
        .set(stats.open_peak.get().max(stats.open.get()));
    let result = read_stream(&mut s, sent, stats).await;
    stats.open.set(stats.open.get() - 1);
    result
}

async fn read_stream(s: &mut TcpStream, sent: Instant, stats: &Stats) -> Result<(), String> {
    let mut buf = vec![0u8; 8192];
    let mut last_event: Option<Instant> = None;
    let mut tail: Vec<u8> = Vec::new();
    let mut head_seen = false;
    let mut kept = 0usize;
    loop {
        let (r, b) = s.read(buf).await;
        buf = b;
        let n = r.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before [DONE]".into());
        }
        let now = Instant::now();
        // Keep a few bytes of the previous read so that a marker split across reads is seen.
        tail.extend_from_slice(&buf[..n]);
        if !head_seen {
            if !tail.starts_with(b"HTTP/1.1 200") {
                return Err(format!(
                    "status: {}",
                    String::from_utf8_lossy(&tail[..tail.len().min(40)])
                ));
            }
            head_seen = true;
        }
        // Markers that end inside the bytes kept from the previous read were counted then.
        let events = memchr::memmem::find_iter(&tail, b"data: {")
            .filter(|&at| at + 7 > kept)
            .count();
        if events > 0 {
            stats.events.set(stats.events.get() + events);
            match last_event {
                None => stats
                    .first_event_us
                    .borrow_mut()
                    .push(now.duration_since(sent).as_micros() as u64),
                Some(prev) => stats
                    .gaps_us
                    .borrow_mut()
                    .push(now.duration_since(prev).as_micros() as u64),
            }
            last_event = Some(now);
        }
        if memchr::memmem::find(&tail, b"data: [DONE]").is_some() {
            stats.completed.set(stats.completed.get() + 1);
            return Ok(());
        }
        kept = tail.len().min(16);
        tail.drain(..tail.len() - kept);
    }
}

fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
