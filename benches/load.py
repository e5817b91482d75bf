#!/usr/bin/env python3
"""End-to-end load benchmark of the llmux gateway (entry point: benches/load.sh).

Everything runs on 127.0.0.1 on this machine: `llmux mock` as the upstream, the gateway in front
of it, nginx tuned as a production reverse proxy in front of the same mock (the yardstick), and
oha as the load generator. Each comparison is made in the same run, in alternating rounds, and
reported as the median of the rounds, with every process's CPU time per request (so a run where
the mock or the load generator saturates first is visible).

Phases (BENCH_PHASES, comma-separated; default all):
  startup   start-up time and idle RSS
  tput      non-stream throughput: direct, nginx, gateway (req/s, CPU per request)
  large     the same with a request body of BENCH_LARGE_KB KiB (a system prompt and a
            conversation's history, as chat clients send): what reading a body costs each proxy
  stream    20-event streams: direct, nginx, gateway (streams/s, time to last byte, CPU)
  mapped    the same streams through an Anthropic-format deployment (Messages -> OpenAI chunks)
  latency   fixed-rate latency, non-stream and stream: added p50/p99
  ops       (not in the default set: needs perf and tracepoint access) system calls, io_uring
            submissions, io_uring task additions and context switches per request and per
            stream, of the proxy and of the mock, behind nginx and behind the gateway
  features  the same build with features on and off (BENCH_VARIANTS)
  idle      RSS with many idle connections
  hold      many slow streams held open at once (10,000 by default): RSS and the inter-event
            delay added. Where RLIMIT_NOFILE is too low for one process to hold them (three
            descriptors a stream), several gateway processes share the port (SO_REUSEPORT)
  routing   (issue 9) a group with retries, breaker and limits configured against the same
            group with none, and nginx: throughput and CPU per request; and one failing
            deployment of three (injected 500s, num_retries 2) at BENCH_FAILOVER_RATE req/s:
            errors seen by the client and the p99 added against three healthy ones

Only the standard library is used. Output: a markdown report on stdout; progress on stderr.
"""

import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def env(name, default):
    v = os.environ.get(name)
    return default if v in (None, "") else v


BIN = env("BENCH_BIN", os.path.join(ROOT, "target/release/llmux"))
# The mock's binary: another build's gateway is measured against the same upstream.
MOCK_BIN = env("BENCH_MOCK_BIN", BIN)
# A second build of the gateway, measured in the same rounds as the first ("gateway B"): two
# builds compared on the same machine at the same moments, which a noisy machine needs.
BIN_B = env("BENCH_BIN_B", "")
HOLD_BIN = env("BENCH_HOLD_BIN", os.path.join(ROOT, "target/release/examples/stream_hold"))
DURATION = env("BENCH_DURATION", "8s")
ROUNDS = int(env("BENCH_ROUNDS", "5"))
CONNS = int(env("BENCH_CONNS", "64"))
STREAM_CONNS = int(env("BENCH_STREAM_CONNS", "32"))
RATE = int(env("BENCH_RATE", "1000"))
STREAM_RATE = int(env("BENCH_STREAM_RATE", "200"))
CHUNKS = int(env("BENCH_CHUNKS", "20"))
GW_WORKERS = env("BENCH_GATEWAY_WORKERS", str(os.cpu_count() or 2))
MOCK_WORKERS = env("BENCH_MOCK_WORKERS", "1")
NGINX_WORKERS = env("BENCH_NGINX_WORKERS", GW_WORKERS)
IDLE_CONNS = int(env("BENCH_IDLE_CONNS", "10000"))
HOLD_CHUNKS = int(env("BENCH_HOLD_CHUNKS", "10"))
HOLD_DELAY_MS = int(env("BENCH_HOLD_DELAY_MS", "1000"))
HOLD_RAMP = int(env("BENCH_HOLD_RAMP", "2000"))
FAILOVER_RATE = int(env("BENCH_FAILOVER_RATE", "500"))
LARGE_KB = int(env("BENCH_LARGE_KB", "12"))
PHASES = set(env("BENCH_PHASES", "startup,tput,large,stream,mapped,latency,features,idle,hold,routing").split(","))
VARIANTS = env(
    "BENCH_VARIANTS",
    "json checks off={upstream: {check_relayed_json: false}};"
    "master key on={}|general_settings: {master_key: sk-bench-master};"
    "routing headers off={routing_headers: false}",
)
PORT_MOCK, PORT_GW, PORT_NGINX, PORT_GW2, PORT_GW3, PORT_GW_B = 18481, 18480, 18482, 18483, 18484, 18485
MSG = '"messages":[{"role":"user","content":"hi"}]'
# Streams ask for usage (`stream_options.include_usage`; the default, as the workload
# "20 chunks + finish + usage + [DONE]"), so that the gateway, nginx and the direct call get the
# same upstream stream: the gateway asks OpenAI-shaped upstreams for usage either way (spend
# tracking), and without it the mock writes one event more a stream behind the gateway only
# (13 % more of its instructions, benches/mock_callgrind.sh). `BENCH_STREAM_USAGE=0` measures
# that case (the runs before 2026-12-07 midday).
STREAM_USAGE = env("BENCH_STREAM_USAGE", "1") == "1"
HZ = os.sysconf("SC_CLK_TCK")


def log(*a):
    print("[bench]", *a, file=sys.stderr, flush=True)


def nofile_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total


def rss_kib(pid, key="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} for {pid}")


def post(url, body, headers=(), timeout=2.0):
    """Status of one POST (0 when nothing answered)."""
    import http.client
    import urllib.parse
    u = urllib.parse.urlsplit(url)
    try:
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
        hdrs = {"content-type": "application/json"}
        for h in headers:
            k, _, v = h.partition(":")
            hdrs[k.strip()] = v.strip()
        c.request("POST", u.path, body=body, headers=hdrs)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, data
    except OSError:
        return 0, b""


class Proc:
    """A started process (and the children it forks, for nginx), stopped on exit."""

    all = []

    def __init__(self, name, cmd, work, env_extra=None, children=False):
        self.name = name
        self.log_path = os.path.join(work, name + ".log")
        e = dict(os.environ)
        e.setdefault("LLMUX_LOG", "warn")
        e.update(env_extra or {})
        self.p = subprocess.Popen(cmd, stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT, env=e)
        self.children = children
        Proc.all.append(self)

    def pids(self):
        pids = [self.p.pid]
        if self.children:
            try:
                out = subprocess.run(["pgrep", "-P", str(self.p.pid)], capture_output=True, text=True).stdout
                pids += [int(x) for x in out.split()]
            except OSError:
                pass
        return pids

    def alive(self):
        return self.p.poll() is None

    def stop(self):
        if self.alive():
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        if self in Proc.all:
            Proc.all.remove(self)


def stop_all():
    for p in list(Proc.all):
        p.stop()


def wait_ok(name, proc, url, body, t0, headers=()):
    deadline = t0 + 20
    while time.monotonic() < deadline:
        if post(url, body, headers, timeout=1)[0] == 200:
            return (time.monotonic() - t0) * 1000
        if not proc.alive():
            raise SystemExit(f"{name} exited during start-up; see {proc.log_path}")
        time.sleep(0.005)
    raise SystemExit(f"{name} did not answer 200 on {url} within 20 s")


def oha(url, body, conns, duration, rate=None, headers=()):
    """One oha run. Returns ok count, req/s, p50/p99 (ms), non-2xx, errors, oha's CPU seconds."""
    cmd = ["oha", "--no-tui", "--output-format", "json", "-z", duration, "-c", str(conns),
           "-m", "POST", "-T", "application/json", "-d", body]
    if rate:
        cmd += ["-q", str(rate), "--latency-correction"]
    for h in headers:
        cmd += ["-H", h]
    cmd.append(url)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = p.stdout.read()
    _, _, usage = os.wait4(p.pid, 0)
    p.returncode = 0
    d = json.loads(out[out.index(b"{"):])
    codes = d.get("statusCodeDistribution") or {}
    ok = sum(int(v) for k, v in codes.items() if str(k).startswith("2"))
    non2xx = sum(int(v) for k, v in codes.items() if not str(k).startswith("2"))
    errors = sum(int(v) for k, v in (d.get("errorDistribution") or {}).items() if "deadline" not in k)
    total = d["summary"].get("total") or 1
    lat = d.get("latencyPercentiles") or {}
    return {
        "ok": ok, "rps": ok / total, "non2xx": non2xx, "errors": errors,
        "p50": (lat.get("p50") or 0) * 1e3, "p99": (lat.get("p99") or 0) * 1e3,
        "oha_cpu": usage.ru_utime + usage.ru_stime,
    }


def measured(url, body, conns, duration, mock, proxy, rate=None, headers=()):
    """An oha run with each process's CPU time per request (µs)."""
    m0, p0 = ticks(mock.pids()), ticks(proxy.pids()) if proxy else 0
    r = oha(url, body, conns, duration, rate, headers)
    m1, p1 = ticks(mock.pids()), ticks(proxy.pids()) if proxy else 0
    n = max(r["ok"], 1)
    r["cpu_mock"] = (m1 - m0) * 1e6 / HZ / n
    r["cpu_proxy"] = (p1 - p0) * 1e6 / HZ / n if proxy else None
    r["cpu_oha"] = r["oha_cpu"] * 1e6 / n
    if r["non2xx"] or r["errors"]:
        WARNINGS.append(f"{url}: non-2xx {r['non2xx']}, errors {r['errors']}")
    return r


WARNINGS = []


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(v, nd=1):
    return "n/a" if v is None else f"{v:,.{nd}f}"


def nginx_conf(work, workers):
    """nginx as a production reverse proxy: every directive is there for a reason."""
    user = "user root;\n" if os.getuid() == 0 else ""
    return f"""{user}daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
# One worker per core, as the gateway has one shard per core.
worker_processes {workers};
events {{
  # Room for every benchmark connection, and several accepts per wake-up.
  worker_connections 16384;
  multi_accept on;
}}
http {{
  # Logging is off in the gateway's benchmark too.
  access_log off;
  # nginx closes client connections after 1,000 requests by default: a production proxy keeps
  # them (the gateway does).
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  # Request bodies up to 128 KiB are read into memory: the default (8 KiB on x86-64) sends a
  # larger one through a temporary file, and a chat request with some history is larger
  # (the `large` phase stalled about 40 ms a request on that path).
  client_body_buffer_size 128k;
  client_body_temp_path {work}/nginx-body;
  proxy_temp_path {work}/nginx-proxy;
  fastcgi_temp_path {work}/nginx-fastcgi;
  uwsgi_temp_path {work}/nginx-uwsgi;
  scgi_temp_path {work}/nginx-scgi;
  upstream mock {{
    server 127.0.0.1:{PORT_MOCK};
    # A pool of idle upstream connections per worker, never closed after N requests.
    keepalive 128;
    keepalive_requests 1000000;
  }}
  server {{
    # One listening socket per worker, as the gateway's SO_REUSEPORT shards, and a deep queue.
    listen 127.0.0.1:{PORT_NGINX} reuseport backlog=4096;
    location / {{
      proxy_pass http://mock;
      # Keep-alive to the upstream needs HTTP/1.1 and no `Connection: close`.
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      # Stream events as they arrive instead of buffering the response (what an LLM proxy
      # must do); read the request body whole first (the gateway does too).
      proxy_buffering off;
      proxy_request_buffering on;
    }}
  }}
}}
"""


def gateway_config(extra_llmux="{}", extra_top=""):
    return f"""model_list:
  - model_name: bench
    litellm_params:
      model: openai/bench-model
      api_base: http://127.0.0.1:{PORT_MOCK}/v1
      api_key: sk-bench
  - model_name: bench-stream
    litellm_params:
      model: openai/bench-model-mock-chunks-{CHUNKS}
      api_base: http://127.0.0.1:{PORT_MOCK}/v1
      api_key: sk-bench
  - model_name: bench-mapped
    litellm_params:
      model: anthropic/bench-model-mock-chunks-{CHUNKS}
      api_base: http://127.0.0.1:{PORT_MOCK}
      api_key: sk-bench
  - model_name: bench-hold
    litellm_params:
      model: openai/hold-mock-chunks-{HOLD_CHUNKS}-mock-chunk-delay-{HOLD_DELAY_MS}
      api_base: http://127.0.0.1:{PORT_MOCK}/v1
      api_key: sk-bench
      stream_timeout: 60
llmux: {extra_llmux}
{extra_top}
"""


def body(model, stream=False):
    opts = '"stream":true,' if stream else ""
    if stream and STREAM_USAGE:
        opts += '"stream_options":{"include_usage":true},'
    return "{" + f'"model":"{model}",' + opts + MSG + "}"


def large_body(model):
    """A chat request of about LARGE_KB KiB: a system prompt, turns of history and a question,
    with the sampling fields a client sets. The same bytes every time (no randomness), so two
    runs send the same request."""
    words = ("the gateway routes each call to one of many upstream deployments translating "
             "request parameters responses stream events and errors").split()

    def text(n, seed):
        return " ".join(words[(seed + i * 7) % len(words)] for i in range(n))
    msgs = [{"role": "system", "content": text(250, 1)}]
    turn = 0
    while len(json.dumps(msgs)) < LARGE_KB * 1024 - 600:
        turn += 1
        msgs.append({"role": "user", "content": text(120, turn)})
        msgs.append({"role": "assistant", "content": text(100, turn + 3)})
    msgs.append({"role": "user", "content": text(60, 5)})
    return json.dumps({"model": model, "messages": msgs, "temperature": 0.7, "max_tokens": 512,
                       "user": "u-123"}, separators=(",", ":"))


def count_events(url, model, headers=()):
    status, data = post(url, body(model, True), headers, timeout=10)
    return data.count(b"data: {") if status == 200 else 0


def start_gateway(work, name, cfg_text, port=PORT_GW, workers=GW_WORKERS, binary=None):
    cfg = os.path.join(work, name + ".yaml")
    with open(cfg, "w") as f:
        f.write(cfg_text)
    t0 = time.monotonic()
    args = [binary or BIN, "serve", "--config", cfg, "--listen", f"127.0.0.1:{port}", "--workers", str(workers)]
    # BENCH_IO_DRIVER=epoll measures the fallback containers run on (docs/deployment.md).
    if env("BENCH_IO_DRIVER", ""):
        args += ["--io-driver", env("BENCH_IO_DRIVER", "")]
    p = Proc(name, args, work)
    return p, t0


def main():
    for tool in ("oha",):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is required: cargo install oha --locked")
    nginx = shutil.which(env("BENCH_NGINX", "nginx"))
    nofile = nofile_limit()
    work = tempfile.mkdtemp(prefix="llmux-load.")
    R = {}
    try:
        run(work, nginx, nofile, R)
    finally:
        stop_all()
        if env("BENCH_KEEP", "0") != "1":
            shutil.rmtree(work, ignore_errors=True)
        else:
            log("work directory kept:", work)
    report(R, nginx, nofile)


def run(work, nginx, nofile, R):
    gw_url = f"http://127.0.0.1:{PORT_GW}/v1/chat/completions"
    mock_url = f"http://127.0.0.1:{PORT_MOCK}/v1/chat/completions"
    mock_msgs = f"http://127.0.0.1:{PORT_MOCK}/v1/messages"
    ng_url = f"http://127.0.0.1:{PORT_NGINX}/v1/chat/completions"

    log(f"mock ({MOCK_WORKERS} worker), gateway ({GW_WORKERS} workers), nginx ({NGINX_WORKERS} workers)")
    mock = Proc("mock", [MOCK_BIN, "mock", "--listen", f"127.0.0.1:{PORT_MOCK}", "--workers", MOCK_WORKERS], work)
    wait_ok("mock", mock, mock_url, body("bench-model"), time.monotonic())

    gw, t0 = start_gateway(work, "gateway", gateway_config())
    R["startup_ms"] = wait_ok("gateway", gw, gw_url, body("bench"), t0)
    time.sleep(1)
    R["idle_rss_kib"] = rss_kib(gw.p.pid)

    ng = None
    if nginx:
        for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(os.path.join(work, "nginx-" + d), exist_ok=True)
        with open(os.path.join(work, "nginx.conf"), "w") as f:
            f.write(nginx_conf(work, NGINX_WORKERS))
        ng = Proc("nginx", [nginx, "-p", work, "-c", os.path.join(work, "nginx.conf")], work, children=True)
        wait_ok("nginx", ng, ng_url, body("bench-model"), time.monotonic())
        R["nginx_version"] = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip()
    else:
        log("nginx not found: the yardstick is skipped (apt-get install nginx-light)")

    events = count_events(gw_url, "bench-stream")
    R["events"] = events
    R["events_direct"] = count_events(mock_url, f"bench-model-mock-chunks-{CHUNKS}")
    log(f"events per stream: gateway {events}, direct {R['events_direct']}")

    # Warm-up: pools, caches, the kernel's socket buffers.
    for url, m in ((gw_url, "bench"), (mock_url, "bench-model")) + (((ng_url, "bench-model"),) if ng else ()):
        oha(url, body(m), CONNS, "2s")

    targets = [("direct", mock_url, "bench-model", None), ("gateway", gw_url, "bench", gw)]
    if ng:
        targets.insert(1, ("nginx", ng_url, "bench-model", ng))
    if BIN_B:
        gw_b, t0 = start_gateway(work, "gateway-b", gateway_config(), port=PORT_GW_B, binary=BIN_B)
        gw_b_url = f"http://127.0.0.1:{PORT_GW_B}/v1/chat/completions"
        wait_ok("gateway B", gw_b, gw_b_url, body("bench"), t0)
        oha(gw_b_url, body("bench"), CONNS, "2s")
        targets.append(("gateway B", gw_b_url, "bench", gw_b))
        log(f"gateway B: {BIN_B}")

    if "tput" in PHASES:
        R["tput"] = alternate(targets, lambda url, m, proxy: measured(url, body(m), CONNS, DURATION, mock, proxy))
        R["hwm_kib"] = rss_kib(gw.p.pid, "VmHWM")
    if "large" in PHASES:
        R["large"] = alternate(targets, lambda url, m, proxy: measured(url, large_body(m), CONNS, DURATION, mock, proxy))
        R["large_bytes"] = len(large_body("bench"))
    if "stream" in PHASES:
        st = [(n, u, (f"bench-model-mock-chunks-{CHUNKS}" if not n.startswith("gateway") else "bench-stream"), p)
              for n, u, _, p in targets]
        R["stream"] = alternate(st, lambda url, m, proxy: measured(url, body(m, True), STREAM_CONNS, DURATION, mock, proxy))
    if "mapped" in PHASES:
        # The Messages-format stream straight from the mock, and through the gateway's mapping.
        mt = [("direct (Messages)", mock_msgs, None, None), ("gateway, mapped", gw_url, "bench-mapped", gw),
              ("gateway, passthrough", gw_url, "bench-stream", gw)]
        anth_body = ('{"model":"bench-model-mock-chunks-' + str(CHUNKS) +
                     '","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}')

        def one(url, m, proxy):
            b = anth_body if m is None else body(m, True)
            return measured(url, b, STREAM_CONNS, DURATION, mock, proxy)
        R["mapped"] = alternate(mt, one, rounds=max(3, ROUNDS // 2))
        R["events_mapped"] = count_events(gw_url, "bench-mapped")
    if "latency" in PHASES:
        R["latency"] = alternate(targets, lambda url, m, proxy: measured(url, body(m), CONNS, DURATION, mock, proxy, rate=RATE), rounds=3)
        st = [(n, u, (f"bench-model-mock-chunks-{CHUNKS}" if not n.startswith("gateway") else "bench-stream"), p)
              for n, u, _, p in targets]
        R["stream_latency"] = alternate(st, lambda url, m, proxy: measured(url, body(m, True), STREAM_CONNS, DURATION, mock, proxy, rate=STREAM_RATE), rounds=3)
    if "ops" in PHASES:
        R["ops"] = ops(work, targets, mock)
    if "features" in PHASES:
        R["features"] = features(work, mock)
    if "idle" in PHASES:
        R["idle"] = idle_conns(gw, nofile)
    if "routing" in PHASES:
        R["routing"] = routing(work, mock, ng, ng_url)
    if "hold" in PHASES:
        gw.stop()
        if ng:
            ng.stop()
        R["hold"] = hold(work, mock, nofile)


def alternate(targets, fn, rounds=None):
    """`fn` for each target, round after round; per target the list of results."""
    rounds = rounds or ROUNDS
    out = {name: [] for name, *_ in targets}
    for r in range(rounds):
        for name, url, model, proxy in targets:
            res = fn(url, model, proxy)
            out[name].append(res)
            log(f"round {r + 1} {name}: {res['rps']:,.0f}/s p50 {res['p50']:.2f} ms p99 {res['p99']:.2f} ms, "
                f"CPU µs/req mock {res['cpu_mock']:.1f} proxy {fmt(res['cpu_proxy'])} oha {res['cpu_oha']:.1f}")
    return out


OPS_EVENTS = {
    "task-clock": "CPU µs",
    "raw_syscalls:sys_enter": "syscalls",
    "io_uring:io_uring_submit_req": "io_uring ops",
    "io_uring:io_uring_task_add": "task adds",
    "context-switches": "switches",
}


def perf_stat(pids, path):
    """`perf stat` on `pids` until stopped (SIGINT); counts land in `path`."""
    events = ",".join(OPS_EVENTS)
    return subprocess.Popen(["perf", "stat", "-x,", "-e", events, "-p", ",".join(map(str, pids)), "-o", path],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def perf_counts(path):
    counts = {}
    with open(path) as f:
        for line in f:
            parts = line.strip().split(",")
            if len(parts) > 3 and parts[2] in OPS_EVENTS:
                try:
                    counts[parts[2]] = float(parts[0])
                except ValueError:
                    counts[parts[2]] = None  # not supported or not counted
    return counts


def ops(work, targets, mock):
    """Operations per request or stream, counted by perf over one run per path and kind. A task
    addition runs in the context of the process whose send completed the other one's posted
    receive: on loopback, a receiver's io_uring wake-ups are paid by its sender."""
    if not shutil.which("perf"):
        log("ops: perf not found (apt-get install linux-perf); skipped")
        return None
    out = {}
    for name, url, model, proxy in targets:
        if proxy is None or name == "gateway B":
            continue
        for kind, conns in (("non-stream", CONNS), ("stream", STREAM_CONNS)):
            m = model
            if kind == "stream":
                m = "bench-stream" if name.startswith("gateway") else f"bench-model-mock-chunks-{CHUNKS}"
            b = body(m, kind == "stream")
            oha(url, b, conns, "1s")
            files = {who: os.path.join(work, f"ops-{name}-{kind}-{who}.txt") for who in ("proxy", "mock")}
            perfs = [perf_stat(proxy.pids(), files["proxy"]), perf_stat(mock.pids(), files["mock"])]
            time.sleep(0.3)  # perf attached before the load starts
            r = oha(url, b, conns, DURATION)
            for p in perfs:
                p.send_signal(signal.SIGINT)
                p.wait(10)
            n = max(r["ok"], 1)
            row = {}
            for who, path in files.items():
                for ev, v in perf_counts(path).items():
                    if v is not None:
                        row[(who, ev)] = v * (1000 if ev == "task-clock" else 1) / n
            out[(name, kind)] = row
            log(f"ops {name} {kind}: " + ", ".join(f"{w} {OPS_EVENTS[e]} {v:.2f}" for (w, e), v in row.items()))
    return out


def features(work, mock):
    """The same build with one setting changed, against the baseline, alternating."""
    variants = []
    for v in VARIANTS.split(";"):
        if not v.strip():
            continue
        name, _, spec = v.partition("=")
        llmux, _, top = spec.partition("|")
        variants.append((name.strip(), llmux.strip() or "{}", top.strip()))
    results = {}
    headers = ("authorization: Bearer sk-bench-master",)
    for name, llmux, top in variants:
        log(f"feature variant: {name}")
        res = {"baseline": {"tput": [], "stream": []}, name: {"tput": [], "stream": []}}
        for r in range(max(3, ROUNDS // 2 + 1)):
            for vname, cfg in (("baseline", gateway_config()), (name, gateway_config(llmux, top))):
                gw, t0 = start_gateway(work, "variant", cfg, port=PORT_GW2)
                url = f"http://127.0.0.1:{PORT_GW2}/v1/chat/completions"
                wait_ok("variant", gw, url, body("bench"), t0, headers)
                oha(url, body("bench"), CONNS, "2s", headers=headers)
                res[vname]["tput"].append(measured(url, body("bench"), CONNS, DURATION, mock, gw, headers=headers))
                res[vname]["stream"].append(measured(url, body("bench-stream", True), STREAM_CONNS, DURATION, mock, gw, headers=headers))
                gw.stop()
        results[name] = res
    return results


def routing_config(configured):
    """One group `bench`, and the failover groups `ok3` (three healthy deployments) and `fail1`
    (two healthy, one answering 500), equal weights. `configured`: retries, cooldowns, the
    breaker and limits that never bind (rpm, tpm, max_parallel_requests); else all of it off."""
    limits = ("      rpm: 100000000\n      tpm: 100000000000\n      max_parallel_requests: 100000\n"
              if configured else "")

    def dep(group, model):
        return (f"  - model_name: {group}\n    litellm_params:\n      model: openai/{model}\n"
                f"      api_base: http://127.0.0.1:{PORT_MOCK}/v1\n      api_key: sk-bench\n{limits}")
    models = dep("bench", "bench-model")
    for g, failing in (("ok3", False), ("fail1", True)):
        models += dep(g, "bench-model") + dep(g, "bench-model")
        models += dep(g, "bench-model-mock-status-500" if failing else "bench-model")
    if configured:
        settings = "router_settings:\n  num_retries: 2\nllmux: {router: {breaker: {enabled: true}}}\n"
    else:
        settings = ("router_settings:\n  num_retries: 0\n  disable_cooldowns: true\n"
                    "llmux: {router: {breaker: {enabled: false}}}\n")
    return "model_list:\n" + models + settings


def routing(work, mock, ng, ng_url):
    """Issue 9's benchmark: (b) the router's cost, (a) one failing deployment of three."""
    out = {}
    gws = {}
    for name, port, configured in (("router off", PORT_GW2, False), ("router on", PORT_GW3, True)):
        gw, t0 = start_gateway(work, name.replace(" ", "-"), routing_config(configured), port=port)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        wait_ok(name, gw, url, body("bench"), t0)
        oha(url, body("bench"), CONNS, "2s")
        gws[name] = (gw, url)
    targets = [(n, u, "bench", g) for n, (g, u) in gws.items()]
    if ng:
        targets.insert(0, ("nginx", ng_url, "bench-model", ng))
    log("routing: router off / on / nginx, non-stream throughput")
    out["cost"] = alternate(targets, lambda url, m, proxy: measured(url, body(m), CONNS, DURATION, mock, proxy))
    gw, url = gws["router on"]
    log(f"routing: one failing deployment of three at {FAILOVER_RATE} req/s")
    ft = [("three healthy", url, "ok3", gw), ("one of three failing", url, "fail1", gw)]
    out["failover"] = alternate(
        ft, lambda u, m, proxy: oha_quiet(u, body(m), CONNS, DURATION, mock, proxy, FAILOVER_RATE), rounds=3)
    for g, _ in gws.values():
        g.stop()
    return out


def oha_quiet(url, b, conns, duration, mock, proxy, rate):
    """`measured`, where non-2xx answers are the result rather than a warning."""
    n = len(WARNINGS)
    r = measured(url, b, conns, duration, mock, proxy, rate=rate)
    del WARNINGS[n:]
    return r


def idle_conns(gw, nofile):
    n = min(IDLE_CONNS, nofile - 512)
    before = rss_kib(gw.p.pid)
    socks, failed = [], 0
    for _ in range(n):
        try:
            socks.append(socket.create_connection(("127.0.0.1", PORT_GW), timeout=5))
        except OSError:
            failed += 1
            if failed > 100:
                break
    time.sleep(2)
    peak = rss_kib(gw.p.pid)
    for s in socks:
        s.close()
    return {"requested": IDLE_CONNS, "opened": len(socks), "before": before, "peak": peak}


def listening(pid, port):
    """Whether process `pid` owns a TCP socket listening on `port` (its fds against /proc/net/tcp)."""
    want = f":{port:04X}"
    inodes = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if cols[1].endswith(want) and cols[3] == "0A":
                inodes.add(cols[9])
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return True
    except OSError:
        pass
    return False


def open_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def hold(work, mock, nofile):
    """Many slow streams at once through the gateway, and straight to the mock."""
    if not os.path.exists(HOLD_BIN):
        WARNINGS.append(f"{HOLD_BIN} missing (cargo build --release --example stream_hold): hold phase skipped")
        return None
    n = int(env("BENCH_HOLD_STREAMS", "10000"))
    # The gateway holds three descriptors per stream (client, upstream, and the duplicate the
    # disconnect watch polls), and RLIMIT_NOFILE is per process. Where its hard limit is below
    # what one process needs, the streams are spread over several gateway processes sharing the
    # port through SO_REUSEPORT, one worker each: the same shards a single process would run,
    # each in a process of its own. The kernel spreads connections by hash, so each process gets
    # a tenth of slack above its even share.
    per_proc = int((nofile - 300) / 3 / 1.1)
    procs = max(1, -(-n // per_proc))
    workers = max(1, int(GW_WORKERS) // procs) if procs > 1 else GW_WORKERS
    # Every stream needs its own upstream connection: lift the per-shard cap (1024 by default).
    cfg = gateway_config("{upstream: {max_connections_per_host: 20000}}")
    url = f"http://127.0.0.1:{PORT_GW2}/v1/chat/completions"
    gws = []
    for i in range(procs):
        gw, t0 = start_gateway(work, f"hold-gateway-{i}", cfg, port=PORT_GW2, workers=workers)
        gws.append(gw)
        deadline = t0 + 20
        while not listening(gw.p.pid, PORT_GW2):
            if not gw.alive() or time.monotonic() > deadline:
                raise SystemExit(f"hold-gateway-{i} did not listen on {PORT_GW2}; see {gw.log_path}")
            time.sleep(0.005)
        wait_ok(f"hold-gateway-{i}", gw, url, body("bench"), t0)
    before = sum(rss_kib(gw.p.pid) for gw in gws)
    out = {"n": n, "nofile": nofile, "rss_before": before, "procs": procs, "workers": workers}
    for name, addr, model in (("direct", f"127.0.0.1:{PORT_MOCK}", f"hold-mock-chunks-{HOLD_CHUNKS}-mock-chunk-delay-{HOLD_DELAY_MS}"),
                              ("gateway", f"127.0.0.1:{PORT_GW2}", "bench-hold")):
        log(f"holding {n} streams ({name}), {HOLD_CHUNKS} events {HOLD_DELAY_MS} ms apart")
        p = subprocess.Popen([HOLD_BIN, addr, "/v1/chat/completions", body(model, True), str(n), str(HOLD_RAMP)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        peak, fds_peak = 0, [0] * procs
        while p.poll() is None:
            if name == "gateway":
                peak = max(peak, sum(rss_kib(gw.p.pid) for gw in gws))
                fds_peak = [max(a, open_fds(gw.p.pid)) for a, gw in zip(fds_peak, gws)]
            time.sleep(0.25)
        res = json.loads(p.stdout.read())
        if name == "gateway":
            res["rss_peak"] = peak
            res["fds_peak"] = fds_peak
        out[name] = res
        log(f"{name}: {res}")
    for gw in gws:
        gw.stop()
    return out


def report(R, nginx, nofile):
    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    oha_v = subprocess.run(["oha", "--version"], capture_output=True, text=True).stdout.strip()
    p = print
    p("## llmux end-to-end load benchmark\n")
    p(f"- Command: `benches/load.sh` (commit {rev}, {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())})")
    p(f"- Machine: {cpu}, {os.cpu_count()} cores, Linux {os.uname().release}; every process shares it")
    p(f"- Upstream: `llmux mock` ({MOCK_WORKERS} worker); gateway {GW_WORKERS} shards; load: {oha_v}")
    if nginx:
        p(f"- Yardstick: {R.get('nginx_version', 'nginx')}, {NGINX_WORKERS} workers, tuned as a production "
          "reverse proxy (keep-alive both sides without request caps, `proxy_buffering off`, reuseport; "
          "see `nginx_conf` in benches/load.py)")
    p(f"- Ratios are medians over alternating rounds ({ROUNDS} unless noted), {DURATION} each; "
      "CPU is each process's utime + stime per request")
    p()
    p("| Start-up and memory | |\n| --- | ---: |")
    p(f"| Start-up: process start to first 200 | {fmt(R.get('startup_ms'), 0)} ms |")
    p(f"| Idle RSS | {fmt(R.get('idle_rss_kib', 0) / 1024)} MiB |")
    if "hwm_kib" in R:
        p(f"| Loaded RSS (VmHWM after the throughput runs) | {fmt(R['hwm_kib'] / 1024)} MiB |")
    if R.get("idle"):
        i = R["idle"]
        per = (i["peak"] - i["before"]) / max(i["opened"], 1)
        p(f"| RSS with {i['opened']:,} idle connections | {fmt(i['peak'] / 1024)} MiB ({per:.1f} KiB per connection) |")
    p()
    for key, title, unit in (("tput", f"Non-stream throughput, {CONNS} connections", "req/s"),
                             ("large", f"Non-stream throughput with a {R.get('large_bytes', 0):,}-byte request body, "
                                       f"{CONNS} connections", "req/s"),
                             ("stream", f"Streams ({R.get('events')} events each), {STREAM_CONNS} connections", "streams/s")):
        if key not in R:
            continue
        table(R[key], title, unit, ttlb=(key == "stream"))
    if "mapped" in R:
        m = R["mapped"]
        p(f"### Mapped streams (Anthropic Messages → OpenAI chunks), {STREAM_CONNS} connections, median of {len(next(iter(m.values())))} rounds\n")
        p("| path | streams/s | TTLB p50 | gateway CPU µs/stream | mock CPU µs/stream |\n| --- | ---: | ---: | ---: | ---: |")
        for name, rs in m.items():
            p(f"| {name} | {fmt(med(r['rps'] for r in rs), 0)} | {fmt(med(r['p50'] for r in rs), 2)} ms | "
              f"{fmt(med(r['cpu_proxy'] for r in rs))} | {fmt(med(r['cpu_mock'] for r in rs))} |")
        mapped = med(r["cpu_proxy"] for r in m["gateway, mapped"])
        passthrough = med(r["cpu_proxy"] for r in m["gateway, passthrough"])
        ev = R.get("events_mapped") or R.get("events") or 1
        if mapped is not None and passthrough is not None:
            p(f"\nMapping costs the gateway {mapped - passthrough:+.1f} µs of CPU per stream against passthrough, "
              f"{(mapped - passthrough) / ev:+.2f} µs per event ({ev} events).\n")
    if "latency" in R:
        lat = R["latency"]
        p(f"### Latency at a fixed rate (median of 3 rounds): non-stream {RATE} req/s, streams {STREAM_RATE}/s\n")
        p("| | p50 | p99 | added p50 | added p99 |\n| --- | ---: | ---: | ---: | ---: |")
        for key, label in (("latency", "non-stream"), ("stream_latency", "stream, time to last byte")):
            d50 = med(r["p50"] for r in R[key]["direct"])
            d99 = med(r["p99"] for r in R[key]["direct"])
            for name, rs in R[key].items():
                a50, a99 = med(r["p50"] for r in rs), med(r["p99"] for r in rs)
                added = "" if name == "direct" else f"| {a50 - d50:+.3f} ms | {a99 - d99:+.3f} ms"
                p(f"| {label}: {name} | {a50:.3f} ms | {a99:.3f} ms {added or '| - | -'} |")
        p()
    if R.get("ops"):
        p("### Operations per request or stream (`perf stat` over one run each; `BENCH_PHASES=ops`)\n")
        p("The proxy's and the mock's system calls, io_uring submissions, io_uring task additions run in "
          "their context (on loopback a receiver's io_uring wake-up is paid by the sender) and context "
          "switches, per request (non-stream) or stream; CPU µs includes perf's own cost of counting.\n")
        evs = list(OPS_EVENTS)
        head = " | ".join(f"proxy {OPS_EVENTS[e]}" for e in evs) + " | " + " | ".join(f"mock {OPS_EVENTS[e]}" for e in evs)
        p(f"| path | {head} |")
        p("| --- | " + " | ".join("---:" for _ in range(2 * len(evs))) + " |")
        for (name, kind), row in R["ops"].items():
            cells = [fmt(row.get((w, e)), 2) for w in ("proxy", "mock") for e in evs]
            p(f"| {name}, {kind} | " + " | ".join(cells) + " |")
        p()
    if R.get("features"):
        p("### Features on and off (same build, alternating, median)\n")
        p("The client's (oha's) CPU is beside the gateway's: some features (response headers) cost "
          "the client more than the gateway.\n")
        p("| variant | req/s | CPU µs/req | oha CPU µs/req | streams/s | CPU µs/stream | cost (CPU/req, CPU/stream) |")
        p("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, res in R["features"].items():
            b, v = res["baseline"], res[name]
            def cell(x, k):
                return med(r[k] for r in x)
            bt, vt = cell(b["tput"], "cpu_proxy"), cell(v["tput"], "cpu_proxy")
            bs, vs = cell(b["stream"], "cpu_proxy"), cell(v["stream"], "cpu_proxy")
            p(f"| baseline (for {name}) | {fmt(cell(b['tput'], 'rps'), 0)} | {fmt(bt)} | {fmt(cell(b['tput'], 'cpu_oha'))} | "
              f"{fmt(cell(b['stream'], 'rps'), 0)} | {fmt(bs)} | |")
            p(f"| {name} | {fmt(cell(v['tput'], 'rps'), 0)} | {fmt(vt)} | {fmt(cell(v['tput'], 'cpu_oha'))} | "
              f"{fmt(cell(v['stream'], 'rps'), 0)} | {fmt(vs)} | "
              f"{(vt / bt - 1) * 100:+.1f} %, {(vs / bs - 1) * 100:+.1f} % |")
        p()
    if R.get("routing"):
        rt = R["routing"]
        c = rt["cost"]
        p(f"### Routing (issue 9): the router's cost, non-stream, {CONNS} connections, median of {len(next(iter(c.values())))} rounds\n")
        p("Router on: `num_retries: 2`, cooldowns, the breaker, and `rpm`/`tpm`/`max_parallel_requests` "
          "set (never binding). Router off: `num_retries: 0`, `disable_cooldowns`, breaker off, no limits.\n")
        p("| | req/s | p50 | p99 | proxy CPU µs/req | vs router off (req/s, CPU/req) |\n| --- | ---: | ---: | ---: | ---: | ---: |")
        off_rps = med(r["rps"] for r in c["router off"])
        off_cpu = med(r["cpu_proxy"] for r in c["router off"])
        for name, rs in c.items():
            rps, cpu = med(r["rps"] for r in rs), med(r["cpu_proxy"] for r in rs)
            vs = "" if name == "router off" else f"{(rps / off_rps - 1) * 100:+.1f} %, {(cpu / off_cpu - 1) * 100:+.1f} %"
            p(f"| {name} | {fmt(rps, 0)} | {fmt(med(r['p50'] for r in rs), 2)} ms | "
              f"{fmt(med(r['p99'] for r in rs), 2)} ms | {fmt(cpu)} | {vs} |")
        f = rt["failover"]
        p(f"\n**One failing deployment of three** (injected 500s, equal weights, `num_retries: 2`) at "
          f"{FAILOVER_RATE} req/s, {DURATION} per round, median of {len(next(iter(f.values())))} rounds:\n")
        p("| group | answered 2xx | errors to the client | p50 | p99 | added p99 |\n| --- | ---: | ---: | ---: | ---: | ---: |")
        base99 = med(r["p99"] for r in f["three healthy"])
        for name, rs in f.items():
            errs = sum(r["non2xx"] + r["errors"] for r in rs)
            p99 = med(r["p99"] for r in rs)
            added = "-" if name == "three healthy" else f"{p99 - base99:+.3f} ms"
            p(f"| {name} | {sum(r['ok'] for r in rs):,} | {errs} | {fmt(med(r['p50'] for r in rs), 3)} ms | "
              f"{fmt(p99, 3)} ms | {added} |")
        p()
    if R.get("hold"):
        h = R["hold"]
        d, g = h["direct"], h["gateway"]
        p(f"### {h['n']:,} slow streams held at once ({HOLD_CHUNKS} events, {HOLD_DELAY_MS} ms apart; "
          f"RLIMIT_NOFILE {h['nofile']:,})\n")
        p("| | completed | failed | peak open | first event p50 / p99 | gap p50 | gap p99 | gap max |")
        p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, x in (("direct", d), ("gateway", g)):
            p(f"| {name} | {x['completed']:,} | {x['failed']:,} | {x['open_peak']:,} | {x['first_event_p50_ms']:.1f} / "
              f"{x['first_event_p99_ms']:.1f} ms | {x['gap_p50_ms']:.1f} ms | {x['gap_p99_ms']:.1f} ms | {x['gap_max_ms']:.1f} ms |")
        if h.get("procs", 1) > 1:
            p(f"\nRLIMIT_NOFILE is per process and {h['nofile']:,} here, below the {3 * h['n'] + 300:,} one process "
              f"needs (three descriptors a stream): the streams went through {h['procs']} gateway processes of "
              f"{h['workers']} worker each on one port (SO_REUSEPORT), whose descriptors peaked at "
              f"{', '.join(f'{x:,}' for x in g.get('fds_peak', []))}.")
        per = (g.get('rss_peak', 0) - h['rss_before']) / max(1, g['open_peak'])
        p(f"\nGateway RSS {h['rss_before'] / 1024:.1f} MiB before, {g.get('rss_peak', 0) / 1024:.1f} MiB at the peak "
          f"({per:.1f} KiB a stream); the gateway adds {g['gap_p99_ms'] - d['gap_p99_ms']:+.1f} ms to the p99 gap "
          f"between events.\n")
    if WARNINGS:
        p("Warnings:")
        for w in WARNINGS:
            p(f"- {w}")


def table(rs, title, unit, ttlb):
    p = print
    n = len(next(iter(rs.values())))
    p(f"### {title} (median of {n} alternating rounds)\n")
    # The machine's speed moves between rounds (other tenants on the same cores), and with it
    # every process's CPU per request. The mock and oha do the same work behind either proxy,
    # so their CPU per request measures how fast the machine was in that round: req/s times it
    # is the throughput at a common speed, and the ratio of those compares nginx's and the
    # gateway's throughput at equal machine speed. Neither reference is quite neutral (the
    # mock's CPU per stream was measured 9-16 % higher behind the gateway than behind nginx,
    # oha's the same), so both are shown.
    head = f"| | {unit} | vs direct | vs nginx | vs nginx, speed-adjusted by mock / oha |"
    sep = "| --- | ---: | ---: | ---: | ---: |"
    if ttlb:
        head += " time to last byte p50 | TTLB vs nginx |"
        sep += " ---: | ---: |"
    head += " CPU µs/req: proxy | mock | oha |"
    sep += " ---: | ---: | ---: |"
    p(head)
    p(sep)
    direct = [r["rps"] for r in rs["direct"]]
    nginx = [r["rps"] for r in rs.get("nginx", [])]
    nginx_adj = [r["rps"] * r["cpu_mock"] for r in rs.get("nginx", [])]
    nginx_adj_oha = [r["rps"] * r["cpu_oha"] for r in rs.get("nginx", [])]
    for name, runs in rs.items():
        rps = [r["rps"] for r in runs]
        vs_direct = med(a / b for a, b in zip(rps, direct))
        vs_nginx = med(a / b for a, b in zip(rps, nginx)) if nginx else None
        adj = [r["rps"] * r["cpu_mock"] for r in runs]
        adj_oha = [r["rps"] * r["cpu_oha"] for r in runs]
        adjusted = "-"
        if nginx and name != "direct":
            by_mock = med(a / b for a, b in zip(adj, nginx_adj))
            by_oha = med(a / b for a, b in zip(adj_oha, nginx_adj_oha))
            adjusted = f"{fmt(by_mock, 2)}x / {fmt(by_oha, 2)}x"
        row = (f"| {name} | {fmt(med(rps), 0)} | {fmt(vs_direct, 2)}x | {fmt(vs_nginx, 2) + 'x' if vs_nginx else '-'} |"
               f" {adjusted} |")
        if ttlb:
            p50 = [r["p50"] for r in runs]
            ng = [r["p50"] for r in rs.get("nginx", [])]
            t_vs = med(a / b for a, b in zip(p50, ng)) if ng else None
            row += f" {fmt(med(p50), 2)} ms | {fmt(t_vs, 2) + 'x' if t_vs else '-'} |"
        row += (f" {fmt(med(r['cpu_proxy'] for r in runs))} | {fmt(med(r['cpu_mock'] for r in runs))} | "
                f"{fmt(med(r['cpu_oha'] for r in runs))} |")
        p(row)
    if nginx and len(direct) > 1:
        # How well the adjustment takes the machine's speed out: the direct call's spread over
        # the rounds, raw and adjusted.
        def spread(xs):
            return (max(xs) - min(xs)) / med(xs) * 100
        d_adj = [r["rps"] * r["cpu_mock"] for r in rs["direct"]]
        d_oha = [r["rps"] * r["cpu_oha"] for r in rs["direct"]]
        p(f"\nSpeed-adjusted: req/s × the mock's (or oha's) CPU µs per request in the same round. The direct "
          f"call's spread over the rounds: {spread(direct):.0f} % raw, {spread(d_adj):.0f} % adjusted by the mock, "
          f"{spread(d_oha):.0f} % by oha.")
    p()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    main()
