//! `wsnorm-load`: the load generator and echo backend behind `bench/compare.sh` and
//! `bench/deflate.sh`.
//!
//! * `pingpong` — N connections, M round trips each, K messages in flight per connection.
//!   Every message is the ~256 B incident-style `agent_chat` JSON (`execute_agent` with a naive
//!   ISO timestamp) carrying a per-message sequence number in `message_id`. Every echo is checked
//!   in order against what should come back: the exact bytes sent, or with `--expect-rewrite`
//!   the exactly-rewritten message (`start_agent`, `1757350201.447585`). Prints one JSON object:
//!   msg/s, latency percentiles (HDR, µs), errors, mismatches and, with `--cpu-pid`, the CPU time
//!   those processes used during the measured window (utime+stime from `/proc/PID/stat`, plus the
//!   nanosecond `schedstat` sum of their threads) per round trip.
//! * `paced` — the same message and checks at a fixed total rate: N connections, each sending on
//!   its own timer (staggered), so the proxy sleeps between messages as it does in front of a
//!   chat backend. Prints the achieved rate, latency percentiles and CPU per message.
//! * `idle` — opens N connections and holds them; optionally M round trips on each (`--touch`),
//!   then a burst of large messages on each (`--burst`). With `--measure-pid` it reads those
//!   processes' memory (VmRSS, VmHWM) and CPU time before opening and after each stage, once
//!   the proxy has settled (after the round trips: `--touch-quiet-secs`), and prints one JSON
//!   line per stage.
//! * `--deflate` (the three above): permessage-deflate (RFC 7692). The handshake offers what
//!   browsers send (or `--deflate-offer`) and fails unless the 101 accepts it; messages of 32
//!   bytes or more go compressed with the parameters answered, echoes are inflated and checked
//!   as without it.
//!   tungstenite cannot carry RSV1, so these connections take the small frame path of
//!   `wsnorm_testkit::deflate_ws`, compressing with wsnorm's own `relay::deflate`.
//! * `echo` — a lean echo backend: any path, no auth, no subprotocol, text and binary echoed,
//!   16 KiB read buffers. `--deflate`: it accepts permessage-deflate offers, inflates what it
//!   reads and compresses what it echoes, as a backend's python `websockets` does, so proxies
//!   that cannot look inside (nginx, HAProxy) pass compressed frames end to end.
//! * `relay` — a plain TCP relay (tokio's `copy_bidirectional`, 4 KiB buffers), WebSocket
//!   handshake and frames passed through as bytes: what any proxy on tokio costs before it looks
//!   at a message, measured beside nginx and wsnorm as a reference.
//!
//! Every phase is bounded in time; nothing here unwraps network input.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Barrier, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use wsnorm_testkit::deflate_ws::{self, DeflateWs};

/// The message sent, split around the sequence number (`message_id`).
const SENT_HEAD: &str = concat!(
    r#"{"type":"execute_agent","payload":{"user_request":"why is p99 up on checkout since the deploy?","#,
    r#""thread_id":"t-7f3a9c","run_id":"r-2b41e0","context":{},"settings":{}},"#,
    r#""timestamp":"2025-09-08T16:50:01.447585","message_id":"m-"#
);
const SENT_TAIL: &str = r#"","user_id":"abcd1234"}"#;
/// Digits of the sequence number (fixed width: every message has the same size).
const SEQ_DIGITS: usize = 10;

/// Per read of the load tool and the echo backend: 16 messages in flight (~4.2 KiB of frames)
/// arrive in one read, so neither side splits a burst because of its own buffer (with 4 KiB,
/// the unrewritten 257 B messages took two reads at K=16 and the rewritten 246 B ones one).
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// Largest message the load tool reads (and, by default, the echo backend).
const MAX_MESSAGE_BYTES: usize = 16 << 20;

#[derive(Debug, Parser)]
#[command(
    name = "wsnorm-load",
    about = "Load generator and echo backend for wsnorm benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Round trips over N connections with K messages in flight each; JSON report on stdout.
    Pingpong(PingPong),
    /// Messages at a fixed total rate over N connections; JSON report on stdout.
    Paced(Paced),
    /// Open N connections and hold them (round trips and a burst on each, optionally).
    Idle(Idle),
    /// Echo backend (text and binary), for measuring proxies.
    Echo(Echo),
    /// Plain TCP relay to a backend (a reference for proxies' CPU per message).
    Relay(Relay),
}

#[derive(Debug, Args)]
struct ClientOpts {
    /// WebSocket URL (the proxy, or the echo backend itself).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// Number of connections.
    #[arg(long, short = 'n', default_value_t = 50)]
    connections: usize,
    /// Bearer token sent as `Authorization` (empty: none).
    #[arg(long, default_value = "bench-token-0123456789")]
    token: String,
    /// Subprotocol to offer (empty: none; a plain echo backend selects none).
    #[arg(long, default_value = "agent_chat")]
    subprotocol: String,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    open_concurrency: usize,
    /// Time allowed for one connection's TCP connect + handshake.
    #[arg(long, default_value_t = 10.0)]
    connect_timeout_secs: f64,
    /// Offer permessage-deflate as browsers do (`permessage-deflate; client_max_window_bits`),
    /// fail unless the 101 accepts it, and compress every message of 32 bytes or more with the
    /// parameters it answered; echoes are inflated, then checked as without it.
    #[arg(long)]
    deflate: bool,
    /// With `--deflate`, the offer to make instead of the browsers' (a `Sec-WebSocket-Extensions`
    /// value), e.g. `permessage-deflate; client_no_context_takeover; server_no_context_takeover;
    /// client_max_window_bits` for every message compressed on its own both ways.
    #[arg(long, requires = "deflate", default_value = deflate_ws::CLIENT_OFFER)]
    deflate_offer: String,
}

#[derive(Debug, Args)]
struct EchoCheck {
    /// Echoes must be the exactly-rewritten message (through wsnorm with the default rules);
    /// without it they must be the bytes sent.
    #[arg(long)]
    expect_rewrite: bool,
    /// Give up on an echo after this long (the connection is then counted as failed).
    #[arg(long, default_value_t = 10.0)]
    reply_timeout_secs: f64,
}

#[derive(Debug, Args)]
struct Measure {
    /// Processes whose CPU time is measured over the window (repeatable; e.g. the proxy).
    #[arg(long = "cpu-pid")]
    cpu_pids: Vec<u32>,
    /// Clock ticks per second of /proc/PID/stat (default: `getconf CLK_TCK`, else 100).
    #[arg(long)]
    clk_tck: Option<u64>,
    /// Free-form label copied into the report.
    #[arg(long, default_value = "")]
    label: String,
}

/// What `pingpong` and `paced` share: where and how to connect, how echoes are checked, what
/// is measured.
#[derive(Debug, Args)]
struct Load {
    #[command(flatten)]
    client: ClientOpts,
    #[command(flatten)]
    check: EchoCheck,
    #[command(flatten)]
    measure: Measure,
}

#[derive(Debug, Args)]
struct PingPong {
    #[command(flatten)]
    load: Load,
    /// Measured round trips per connection.
    #[arg(long, short = 'm', default_value_t = 1000)]
    messages: u64,
    /// Round trips per connection before the measured window (not counted).
    #[arg(long, default_value_t = 50)]
    warmup: u64,
    /// Messages in flight per connection.
    #[arg(long, short = 'k', default_value_t = 1)]
    inflight: usize,
    /// Bound on the whole run.
    #[arg(long, default_value_t = 120.0)]
    max_secs: f64,
}

#[derive(Debug, Args)]
struct Paced {
    #[command(flatten)]
    load: Load,
    /// Messages per second over all connections together; each connection sends every
    /// connections / rate seconds, whether or not its previous echo is back.
    #[arg(long, default_value_t = 10_000.0)]
    rate: f64,
    /// Length of the measured window.
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// Paced seconds before the measured window (not counted).
    #[arg(long, default_value_t = 2.0)]
    warmup_secs: f64,
}

#[derive(Debug, Args)]
struct Idle {
    #[command(flatten)]
    client: ClientOpts,
    #[command(flatten)]
    check: EchoCheck,
    /// Once all are open: this many round trips on each connection, one at a time, every echo
    /// checked (`--touch` alone: one).
    #[arg(long, num_args = 0..=1, default_value_t = 0, default_missing_value = "1")]
    touch: u64,
    /// Then on each connection this many messages of `--burst-bytes` sent at once, every echo
    /// checked byte for byte (JSON text no rule rewrites).
    #[arg(long, default_value_t = 0)]
    burst: u64,
    /// Size of each burst message.
    #[arg(long, default_value_t = 64 * 1024)]
    burst_bytes: usize,
    /// Connections bursting at the same time.
    #[arg(long, default_value_t = 256)]
    burst_concurrency: usize,
    /// Processes whose memory (VmRSS and VmHWM, summed) and CPU time are read before opening
    /// and after each stage (repeatable; e.g. the proxy).
    #[arg(long = "measure-pid")]
    measure_pids: Vec<u32>,
    /// Seconds between the end of opening or of the round trips and the reading.
    #[arg(long, default_value_t = 2.0)]
    settle_secs: f64,
    /// Seconds the connections stay quiet after the round trips before the reading, instead of
    /// `--settle-secs` (e.g. past wsnorm's keepalive checks, which let quiet legs free their
    /// compressors).
    #[arg(long)]
    touch_quiet_secs: Option<f64>,
    /// Seconds the connections stay quiet after the burst before the reading.
    #[arg(long, default_value_t = 12.0)]
    quiet_secs: f64,
    /// Time allowed for each stage (opening every connection, the round trips, the burst).
    #[arg(long, default_value_t = 120.0)]
    stage_timeout_secs: f64,
    /// How long to hold the connections after the last stage (or until killed).
    #[arg(long, default_value_t = 60.0)]
    hold_secs: f64,
}

#[derive(Debug, Args)]
struct Echo {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:9001")]
    bind: SocketAddr,
    /// Largest message accepted.
    #[arg(long, default_value_t = MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,
    /// Accept permessage-deflate offers (and nothing else), inflate what is read and compress
    /// what is echoed (see `wsnorm_testkit::deflate_ws::echo`).
    #[arg(long)]
    deflate: bool,
}

#[derive(Debug, Args)]
struct Relay {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:9002")]
    bind: SocketAddr,
    /// Where every connection is relayed to.
    #[arg(long, default_value = "127.0.0.1:9001")]
    backend: SocketAddr,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // One thread everywhere: the benchmark pins the load and the echo backend to one CPU.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the runtime")?;
    match cli.command {
        Command::Pingpong(opts) => rt.block_on(pingpong(opts)),
        Command::Paced(opts) => rt.block_on(paced(opts)),
        Command::Idle(opts) => rt.block_on(idle(opts)),
        Command::Echo(opts) => rt.block_on(echo(opts)),
        Command::Relay(opts) => rt.block_on(relay(opts)),
    }
}

fn ws_config(max_message_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_write_buffer_size(max_message_bytes.saturating_mul(2))
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes))
}

// ---------------------------------------------------------------------------------------------
// Messages

/// Builds the sent and the expected message for a sequence number into reusable buffers.
struct Messages {
    sent: (String, String),
    expected: (String, String),
}

impl Messages {
    fn new(expect_rewrite: bool) -> Messages {
        let sent = (SENT_HEAD.to_owned(), SENT_TAIL.to_owned());
        // What wsnorm's default rules make of it, computed once.
        let expected = if expect_rewrite {
            let head = SENT_HEAD
                .replacen(r#""type":"execute_agent""#, r#""type":"start_agent""#, 1)
                .replacen(
                    r#""timestamp":"2025-09-08T16:50:01.447585""#,
                    r#""timestamp":1757350201.447585"#,
                    1,
                );
            (head, SENT_TAIL.to_owned())
        } else {
            sent.clone()
        };
        Messages { sent, expected }
    }

    fn write(parts: &(String, String), seq: u64, out: &mut String) {
        use std::fmt::Write;
        out.clear();
        out.push_str(&parts.0);
        // Writing into a String cannot fail.
        let _ = write!(out, "{seq:0width$}", width = SEQ_DIGITS);
        out.push_str(&parts.1);
    }

    fn sent(&self, seq: u64) -> String {
        let mut s = String::with_capacity(self.sent.0.len() + SEQ_DIGITS + self.sent.1.len());
        Self::write(&self.sent, seq, &mut s);
        s
    }
}

/// A message of exactly `bytes` bytes for the idle burst: JSON no default rule rewrites (no
/// timestamp, no renamed type), so every proxy echoes the bytes sent.
fn burst_message(bytes: usize, seq: u64) -> Result<Utf8Bytes> {
    let head = format!(
        r#"{{"type":"tool_completed","message_id":"b-{seq:0width$}","payload":{{"rows":""#,
        width = SEQ_DIGITS
    );
    let tail = r#""}}"#;
    let Some(pad) = bytes.checked_sub(head.len() + tail.len()) else {
        bail!("--burst-bytes must be at least {}", head.len() + tail.len());
    };
    Ok(Utf8Bytes::from(format!("{head}{}{tail}", "x".repeat(pad))))
}

fn seq_of(conn: usize, i: u64) -> u64 {
    // Connection in the high digits, message in the low ones: unique across the run.
    (conn as u64 % 10_000) * 1_000_000 + i % 1_000_000
}

// ---------------------------------------------------------------------------------------------
// Connecting

type Ws = WebSocketStream<TcpStream>;

/// A client connection: tungstenite's, or with `--deflate` the permessage-deflate frame path
/// (tungstenite cannot carry RSV1). Every subcommand speaks through this, either way.
enum Conn {
    Plain(Box<Ws>),
    Deflate(Box<DeflateWs<TcpStream>>),
}

impl Conn {
    /// Queues a text message (compressed on a compressed connection).
    async fn feed(&mut self, text: Utf8Bytes) -> Result<()> {
        match self {
            Conn::Plain(ws) => ws.feed(Message::Text(text)).await.context("write failed"),
            Conn::Deflate(ws) => ws.feed(&text),
        }
    }

    async fn flush(&mut self) -> Result<()> {
        match self {
            Conn::Plain(ws) => ws.flush().await.context("write failed"),
            Conn::Deflate(ws) => ws.flush().await,
        }
    }

    async fn send(&mut self, text: Utf8Bytes) -> Result<()> {
        self.feed(text).await?;
        self.flush().await
    }

    /// The next text or binary message; pings are answered. A close, the end of the stream or
    /// a read error is an error. Cancel-safe.
    async fn next_data(&mut self) -> Result<Message> {
        let ws = match self {
            Conn::Deflate(ws) => return ws.next_data().await,
            Conn::Plain(ws) => ws,
        };
        loop {
            match ws.next().await {
                None => bail!("connection closed"),
                Some(Err(e)) => bail!("read failed: {e}"),
                Some(Ok(Message::Close(f))) => bail!("peer closed: {f:?}"),
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => return Ok(m),
                Some(Ok(_)) => {}
            }
        }
    }

    /// Lets a quiet connection free what it keeps for compressing (nothing without deflate).
    fn quiet(&mut self) {
        if let Conn::Deflate(ws) = self {
            ws.release_compressor();
        }
    }

    /// A polite close, bounded.
    async fn close(self) {
        let bound = Duration::from_secs(2);
        match self {
            Conn::Plain(mut ws) => {
                let _ = tokio::time::timeout(bound, Ws::close(&mut ws, None)).await;
            }
            Conn::Deflate(mut ws) => {
                let _ = tokio::time::timeout(bound, ws.close()).await;
            }
        }
    }
}

async fn connect(opts: &ClientOpts) -> Result<Conn> {
    let timeout = Duration::from_secs_f64(opts.connect_timeout_secs);
    tokio::time::timeout(timeout, connect_inner(opts))
        .await
        .context("connect timed out")?
}

async fn connect_inner(opts: &ClientOpts) -> Result<Conn> {
    let mut request = opts.url.as_str().into_client_request().context("bad URL")?;
    let host = request
        .uri()
        .host()
        .context("URL without a host")?
        .to_owned();
    let port = request.uri().port_u16().unwrap_or(80);
    if !opts.token.is_empty() {
        request.headers_mut().insert(
            "Authorization",
            HeaderValue::from_str(&format!("Bearer {}", opts.token)).context("bad token")?,
        );
    }
    if !opts.subprotocol.is_empty() {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(&opts.subprotocol).context("bad subprotocol")?,
        );
    }
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("connecting to {host}:{port}"))?;
    tcp.set_nodelay(true)?;
    if opts.deflate {
        let ws = DeflateWs::handshake(request, tcp, &opts.deflate_offer, MAX_MESSAGE_BYTES)
            .await
            .context("WebSocket handshake with permessage-deflate")?;
        return Ok(Conn::Deflate(Box::new(ws)));
    }
    let (ws, _resp) = tokio_tungstenite::client_async_with_config(
        request,
        tcp,
        Some(ws_config(MAX_MESSAGE_BYTES)),
    )
    .await
    .context("WebSocket handshake")?;
    Ok(Conn::Plain(Box::new(ws)))
}

// ---------------------------------------------------------------------------------------------
// CPU time and memory of other processes

#[derive(Clone, Copy, Default)]
struct CpuSample {
    /// utime + stime in clock ticks.
    ticks: u64,
    /// Sum of the threads' schedstat run time in ns (0 if unavailable).
    sched_ns: u64,
}

fn cpu_sample(pids: &[u32]) -> CpuSample {
    let mut total = CpuSample::default();
    for &pid in pids {
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // Fields after the command name, which is in parentheses and may contain spaces.
            if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) {
                let fields: Vec<&str> = rest.split_whitespace().collect();
                // fields[0] is field 3 (state); utime is field 14, stime field 15.
                let get = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
                total.ticks += get(11).unwrap_or(0) + get(12).unwrap_or(0);
            }
        }
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for entry in dir.flatten() {
                let path = entry.path().join("schedstat");
                if let Ok(s) = std::fs::read_to_string(path) {
                    if let Some(ns) = s
                        .split_whitespace()
                        .next()
                        .and_then(|f| f.parse::<u64>().ok())
                    {
                        total.sched_ns += ns;
                    }
                }
            }
        }
    }
    total
}

/// VmRSS and VmHWM (the peak) of the processes, summed, in KiB.
fn mem_kib(pids: &[u32]) -> (u64, u64) {
    let (mut rss, mut hwm) = (0, 0);
    for &pid in pids {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        for line in status.lines() {
            let kib = || {
                line.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            if line.starts_with("VmRSS:") {
                rss += kib();
            } else if line.starts_with("VmHWM:") {
                hwm += kib();
            }
        }
    }
    (rss, hwm)
}

fn clk_tck() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

// ---------------------------------------------------------------------------------------------
// pingpong

#[derive(Default)]
struct ConnResult {
    connected: bool,
    received: u64,
    errors: u64,
    mismatches: u64,
    error: Option<String>,
    hist: Option<Histogram<u64>>,
}

fn new_hist() -> Result<Histogram<u64>> {
    // Microseconds, 1 µs .. 120 s, 3 significant digits.
    Histogram::new_with_bounds(1, 120_000_000, 3).context("histogram")
}

/// Every connection's result; a task that panicked counts as a failed connection.
async fn join_all(tasks: Vec<tokio::task::JoinHandle<ConnResult>>) -> Vec<ConnResult> {
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.unwrap_or_else(|e| ConnResult {
            errors: 1,
            error: Some(format!("task failed: {e}")),
            ..ConnResult::default()
        }));
    }
    results
}

/// Adds the fields common to `pingpong` and `paced` to `report` (a JSON object): counts,
/// latency percentiles and, with `--cpu-pid`, the CPU time of those processes between two
/// samples, per round trip. Returns the round trips counted.
fn add_results(
    report: &mut serde_json::Value,
    results: &[ConnResult],
    measure: &Measure,
    cpu: (CpuSample, CpuSample),
) -> Result<u64> {
    let mut hist = new_hist()?;
    let (mut received, mut errors, mut mismatches, mut connected) = (0u64, 0u64, 0u64, 0usize);
    let mut first_error = None;
    for r in results {
        received += r.received;
        errors += r.errors;
        mismatches += r.mismatches;
        connected += usize::from(r.connected);
        if let Some(h) = &r.hist {
            hist.add(h).context("merging histograms")?;
        }
        if first_error.is_none() {
            first_error.clone_from(&r.error);
        }
    }
    let q = |p: f64| {
        if hist.is_empty() {
            0
        } else {
            hist.value_at_quantile(p)
        }
    };
    report["label"] = json!(measure.label);
    report["connections_ok"] = json!(connected);
    report["round_trips"] = json!(received);
    report["p50_us"] = json!(q(0.50));
    report["p90_us"] = json!(q(0.90));
    report["p99_us"] = json!(q(0.99));
    report["p999_us"] = json!(q(0.999));
    report["max_us"] = json!(if hist.is_empty() { 0 } else { hist.max() });
    report["mean_us"] = json!(if hist.is_empty() { 0.0 } else { hist.mean() });
    report["errors"] = json!(errors);
    report["mismatches"] = json!(mismatches);
    report["first_error"] = json!(first_error);
    if !measure.cpu_pids.is_empty() {
        let tck = measure.clk_tck.unwrap_or_else(clk_tck);
        let ticks = cpu.1.ticks.saturating_sub(cpu.0.ticks);
        let cpu_us = ticks as f64 * 1e6 / tck as f64;
        let sched_us = cpu.1.sched_ns.saturating_sub(cpu.0.sched_ns) as f64 / 1e3;
        let per = |us: f64| {
            if received > 0 {
                us / received as f64
            } else {
                0.0
            }
        };
        report["cpu_pids"] = json!(measure.cpu_pids);
        report["clk_tck"] = json!(tck);
        report["proxy_cpu_ticks"] = json!(ticks);
        report["proxy_cpu_us"] = json!(cpu_us);
        report["proxy_cpu_us_per_msg"] = json!(per(cpu_us));
        report["proxy_sched_us"] = json!(sched_us);
        report["proxy_sched_us_per_msg"] = json!(per(sched_us));
    }
    Ok(received)
}

async fn pingpong(opts: PingPong) -> Result<()> {
    if opts.inflight == 0 {
        bail!("--inflight must be at least 1");
    }
    let opts = Arc::new(opts);
    let msgs = Arc::new(Messages::new(opts.load.check.expect_rewrite));
    let n = opts.load.client.connections;
    let barrier = Arc::new(Barrier::new(n + 1));
    let open_gate = Arc::new(Semaphore::new(opts.load.client.open_concurrency.max(1)));
    let run_deadline = tokio::time::Instant::now() + Duration::from_secs_f64(opts.max_secs);

    let mut tasks = Vec::with_capacity(n);
    for conn in 0..n {
        let (opts, msgs, barrier, gate) = (
            opts.clone(),
            msgs.clone(),
            barrier.clone(),
            open_gate.clone(),
        );
        tasks.push(tokio::spawn(async move {
            pingpong_conn(conn, &opts, &msgs, &barrier, &gate, run_deadline).await
        }));
    }

    // The measured window starts when every connection is open and warmed up.
    barrier.wait().await;
    let cpu0 = cpu_sample(&opts.load.measure.cpu_pids);
    let t0 = Instant::now();
    let results = join_all(tasks).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_sample(&opts.load.measure.cpu_pids);

    let mut report = json!({
        "mode": "pingpong",
        "url": opts.load.client.url,
        "connections": n,
        "inflight": opts.inflight,
        "messages_per_connection": opts.messages,
        "expect_rewrite": opts.load.check.expect_rewrite,
        "deflate": opts.load.client.deflate,
        "message_bytes": msgs.sent(0).len(),
        "elapsed_s": elapsed,
    });
    let received = add_results(&mut report, &results, &opts.load.measure, (cpu0, cpu1))?;
    report["msg_per_s"] = json!(if elapsed > 0.0 {
        received as f64 / elapsed
    } else {
        0.0
    });
    println!("{report}");
    Ok(())
}

async fn pingpong_conn(
    conn: usize,
    opts: &PingPong,
    msgs: &Messages,
    barrier: &Barrier,
    gate: &Semaphore,
    deadline: tokio::time::Instant,
) -> ConnResult {
    let mut result = ConnResult::default();
    let reply_timeout = Duration::from_secs_f64(opts.load.check.reply_timeout_secs);

    // Phase 1 (bounded by the connect timeout and the reply timeouts): open and warm up.
    let mut ws = open_conn(&opts.load.client, gate, &mut result).await;
    if let Some(w) = ws.as_mut() {
        let mut scratch = Stats::new(false);
        let warm = run_round_trips(
            w,
            conn,
            0,
            opts.warmup,
            opts.inflight,
            msgs,
            &mut scratch,
            reply_timeout,
            deadline,
        )
        .await;
        if let Err(e) = warm {
            result.errors += 1;
            result.error = Some(format!("warmup: {e:#}"));
            ws = None;
        } else if scratch.mismatches > 0 {
            result.mismatches += scratch.mismatches;
            result.error = Some(scratch.first_mismatch.unwrap_or_default());
        }
    }
    barrier.wait().await;

    // Phase 2: the measured window.
    let Some(mut ws) = ws else {
        return result;
    };
    let mut stats = Stats::new(true);
    let run = run_round_trips(
        &mut ws,
        conn,
        opts.warmup,
        opts.messages,
        opts.inflight,
        msgs,
        &mut stats,
        reply_timeout,
        deadline,
    )
    .await;
    result.finish(run, stats);
    ws.close().await;
    result
}

/// Opens one connection through the gate; a failure is recorded in `result`.
async fn open_conn(client: &ClientOpts, gate: &Semaphore, result: &mut ConnResult) -> Option<Conn> {
    let ws = {
        let _permit = gate.acquire().await;
        connect(client).await
    };
    match ws {
        Ok(ws) => {
            result.connected = true;
            Some(ws)
        }
        Err(e) => {
            result.errors += 1;
            result.error = Some(format!("{e:#}"));
            None
        }
    }
}

struct Stats {
    received: u64,
    mismatches: u64,
    first_mismatch: Option<String>,
    hist: Option<Histogram<u64>>,
}

impl Stats {
    fn new(record: bool) -> Stats {
        Stats {
            received: 0,
            mismatches: 0,
            first_mismatch: None,
            hist: if record { new_hist().ok() } else { None },
        }
    }

    fn mismatch(&mut self, what: String) {
        self.mismatches += 1;
        if self.first_mismatch.is_none() {
            self.first_mismatch = Some(what);
        }
    }

    /// Checks an echo against the message `seq` should come back as, and records its latency.
    fn echo(&mut self, msg: &Message, seq: u64, rtt: Duration, msgs: &Messages, buf: &mut String) {
        let text = match msg {
            Message::Text(t) => t.as_str(),
            _ => "<binary>",
        };
        Messages::write(&msgs.expected, seq, buf);
        if text != buf.as_str() {
            self.mismatch(format!(
                "seq {seq}: expected {buf} got {}",
                text.chars().take(400).collect::<String>()
            ));
        }
        if let Some(h) = self.hist.as_mut() {
            let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX).max(1);
            h.saturating_record(us);
        }
        self.received += 1;
    }
}

impl ConnResult {
    /// Records the measured run: its error, or else its first mismatch, and its counts.
    fn finish(&mut self, run: Result<()>, stats: Stats) {
        if let Err(e) = run {
            self.errors += 1;
            self.error = Some(format!("{e:#}"));
        }
        if self.error.is_none() {
            self.error = stats.first_mismatch;
        }
        self.received += stats.received;
        self.mismatches += stats.mismatches;
        self.hist = stats.hist;
    }
}

/// The next text or binary message (pings are answered), within `until`.
async fn next_data(ws: &mut Conn, until: tokio::time::Instant) -> Result<Message> {
    match tokio::time::timeout_at(until, ws.next_data()).await {
        Err(_) => bail!("no echo within the time allowed"),
        Ok(r) => r,
    }
}

/// `count` round trips with `inflight` messages outstanding; echoes are checked in order.
#[allow(clippy::too_many_arguments)]
async fn run_round_trips(
    ws: &mut Conn,
    conn: usize,
    first: u64,
    count: u64,
    inflight: usize,
    msgs: &Messages,
    stats: &mut Stats,
    reply_timeout: Duration,
    deadline: tokio::time::Instant,
) -> Result<()> {
    if count == 0 {
        return Ok(());
    }
    let mut outstanding: VecDeque<(u64, Instant)> = VecDeque::with_capacity(inflight);
    let mut expected = String::new();
    let mut next = first;
    let end = first + count;
    let mut done = 0u64;
    // Fill the window.
    while next < end && outstanding.len() < inflight {
        let seq = seq_of(conn, next);
        ws.feed(msgs.sent(seq).into()).await?;
        outstanding.push_back((seq, Instant::now()));
        next += 1;
    }
    ws.flush().await?;
    while done < count {
        let wait_until = (tokio::time::Instant::now() + reply_timeout).min(deadline);
        let msg = next_data(ws, wait_until)
            .await
            .with_context(|| format!("{done} of {count} received"))?;
        let Some((seq, sent_at)) = outstanding.pop_front() else {
            bail!("unsolicited message");
        };
        stats.echo(&msg, seq, sent_at.elapsed(), msgs, &mut expected);
        done += 1;
        if next < end {
            let seq = seq_of(conn, next);
            ws.send(msgs.sent(seq).into()).await?;
            outstanding.push_back((seq, Instant::now()));
            next += 1;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// paced

/// How often each connection sends, when every connection starts, when the measured window
/// starts and when it ends.
#[derive(Clone, Copy)]
struct Schedule {
    period: Duration,
    begin: tokio::time::Instant,
    measure: tokio::time::Instant,
    end: tokio::time::Instant,
}

async fn paced(opts: Paced) -> Result<()> {
    let n = opts.load.client.connections;
    let warmup = Duration::try_from_secs_f64(opts.warmup_secs).context("--warmup-secs")?;
    let window = Duration::try_from_secs_f64(opts.secs).context("--secs")?;
    let period = Duration::try_from_secs_f64(n as f64 / opts.rate).context("--rate")?;
    if n == 0 || window.is_zero() || period.is_zero() {
        bail!("--connections, --rate and --secs must be positive");
    }
    let opts = Arc::new(opts);
    let msgs = Arc::new(Messages::new(opts.load.check.expect_rewrite));
    // Opened (or failed) and drained: the CPU window lies between the two, so neither the
    // handshakes nor the closes are in it.
    let opened = Arc::new(Barrier::new(n + 1));
    let drained = Arc::new(Barrier::new(n + 1));
    let gate = Arc::new(Semaphore::new(opts.load.client.open_concurrency.max(1)));
    let (schedule_tx, schedule_rx) = tokio::sync::watch::channel(None::<Schedule>);

    let mut tasks = Vec::with_capacity(n);
    for conn in 0..n {
        let (opts, msgs, opened, drained, gate, schedule) = (
            opts.clone(),
            msgs.clone(),
            opened.clone(),
            drained.clone(),
            gate.clone(),
            schedule_rx.clone(),
        );
        tasks.push(tokio::spawn(async move {
            paced_conn(conn, &opts, &msgs, &opened, &drained, &gate, schedule).await
        }));
    }

    opened.wait().await;
    let begin = tokio::time::Instant::now();
    let measure = begin + warmup;
    let schedule = Schedule {
        period,
        begin,
        measure,
        end: measure + window,
    };
    // The receivers live in the tasks, which are all waiting for it.
    let _ = schedule_tx.send(Some(schedule));
    tokio::time::sleep_until(measure).await;
    let cpu0 = cpu_sample(&opts.load.measure.cpu_pids);
    let t0 = Instant::now();
    drained.wait().await;
    let cpu_window = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_sample(&opts.load.measure.cpu_pids);
    let results = join_all(tasks).await;

    let mut report = json!({
        "mode": "paced",
        "url": opts.load.client.url,
        "connections": n,
        "expect_rewrite": opts.load.check.expect_rewrite,
        "deflate": opts.load.client.deflate,
        "message_bytes": msgs.sent(0).len(),
        "target_msg_per_s": opts.rate,
        "secs": opts.secs,
        "window_s": cpu_window,
    });
    let received = add_results(&mut report, &results, &opts.load.measure, (cpu0, cpu1))?;
    report["msg_per_s"] = json!(received as f64 / opts.secs);
    println!("{report}");
    Ok(())
}

async fn paced_conn(
    conn: usize,
    opts: &Paced,
    msgs: &Messages,
    opened: &Barrier,
    drained: &Barrier,
    gate: &Semaphore,
    mut schedule: tokio::sync::watch::Receiver<Option<Schedule>>,
) -> ConnResult {
    let mut result = ConnResult::default();
    let ws = open_conn(&opts.load.client, gate, &mut result).await;
    opened.wait().await;
    let at = match schedule.wait_for(Option::is_some).await {
        Ok(s) => *s,
        Err(_) => None,
    };
    let (Some(mut ws), Some(at)) = (ws, at) else {
        drained.wait().await;
        return result;
    };
    let mut stats = Stats::new(true);
    let run = paced_run(&mut ws, conn, opts, msgs, at, &mut stats).await;
    drained.wait().await;
    result.finish(run, stats);
    ws.close().await;
    result
}

/// Sends on this connection's timer from `at.begin` until `at.end`, reading echoes in between;
/// echoes of messages sent in the measured window are counted and timed.
async fn paced_run(
    ws: &mut Conn,
    conn: usize,
    opts: &Paced,
    msgs: &Messages,
    at: Schedule,
    stats: &mut Stats,
) -> Result<()> {
    let n = opts.load.client.connections;
    let period = at.period;
    let reply_timeout = Duration::from_secs_f64(opts.load.check.reply_timeout_secs);
    // Staggered, so the total rate is even rather than n messages at once every period.
    let first = at.begin + period.mul_f64(conn as f64 / n as f64);
    let mut tick = tokio::time::interval_at(first, period);
    // A tick this task was too late for is not made up: the achieved rate shows it.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut outstanding: VecDeque<(u64, tokio::time::Instant, bool)> = VecDeque::new();
    let mut warm = Stats::new(false);
    let mut expected = String::new();
    let mut next = 0u64;
    let mut sending = true;
    while sending || !outstanding.is_empty() {
        let reply_due = outstanding
            .front()
            .map_or(at.end + reply_timeout, |o| o.1 + reply_timeout);
        tokio::select! {
            t = tick.tick(), if sending => {
                if t >= at.end {
                    sending = false;
                    continue;
                }
                let seq = seq_of(conn, next);
                next += 1;
                ws.send(msgs.sent(seq).into()).await?;
                outstanding.push_back((seq, tokio::time::Instant::now(), t >= at.measure));
            }
            msg = ws.next_data() => {
                let msg = msg?;
                let Some((seq, sent_at, measured)) = outstanding.pop_front() else {
                    bail!("unsolicited message");
                };
                let into = if measured { &mut *stats } else { &mut warm };
                into.echo(&msg, seq, sent_at.elapsed(), msgs, &mut expected);
            }
            () = tokio::time::sleep_until(reply_due), if !outstanding.is_empty() => {
                bail!("no echo within {:?} ({} outstanding)", reply_timeout, outstanding.len());
            }
        }
    }
    if warm.mismatches > 0 {
        stats.mismatches += warm.mismatches;
        stats.first_mismatch = stats.first_mismatch.take().or(warm.first_mismatch);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// idle

/// What the idle connections are asked to do next, in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Open,
    Touch,
    Burst,
}

type StageResult = Result<(), String>;

async fn idle(opts: Idle) -> Result<()> {
    let opts = Arc::new(opts);
    let n = opts.client.connections;
    let gate = Arc::new(Semaphore::new(opts.client.open_concurrency.max(1)));
    let burst_gate = Arc::new(Semaphore::new(opts.burst_concurrency.max(1)));
    let msgs = Arc::new(Messages::new(opts.check.expect_rewrite));
    if opts.burst > 0 {
        burst_message(opts.burst_bytes, 0)?;
    }
    let (stage_tx, stage_rx) = tokio::sync::watch::channel(Stage::Open);
    let (open_tx, mut open_rx) = tokio::sync::mpsc::channel::<StageResult>(n.max(1));
    let (touch_tx, mut touch_rx) = tokio::sync::mpsc::channel::<StageResult>(n.max(1));
    let (burst_tx, mut burst_rx) = tokio::sync::mpsc::channel::<StageResult>(n.max(1));
    let stage_timeout = Duration::from_secs_f64(opts.stage_timeout_secs);
    let settle = Duration::from_secs_f64(opts.settle_secs);
    let open_now = Arc::new(AtomicUsize::new(0));
    let mut probe = Probe::new(&opts.measure_pids, open_now.clone());
    probe.event(
        "start",
        json!({ "connections": n, "deflate": opts.client.deflate }),
    );

    let t0 = Instant::now();
    for conn in 0..n {
        let (opts, gate, burst_gate, msgs, stage, open_now) = (
            opts.clone(),
            gate.clone(),
            burst_gate.clone(),
            msgs.clone(),
            stage_rx.clone(),
            open_now.clone(),
        );
        let txs = [open_tx.clone(), touch_tx.clone(), burst_tx.clone()];
        tokio::spawn(async move {
            let gates = (&*gate, &*burst_gate);
            idle_conn(conn, &opts, gates, &msgs, stage, txs, &open_now).await;
        });
    }
    drop((open_tx, touch_tx, burst_tx));

    let (ok, errors, first_error) =
        collect(&mut open_rx, n, tokio::time::Instant::now() + stage_timeout).await;
    let elapsed = t0.elapsed().as_secs_f64();
    tokio::time::sleep(settle).await;
    probe.event(
        "open",
        json!({ "connections": n, "connections_ok": ok, "errors": errors,
                "first_error": first_error, "elapsed_s": elapsed }),
    );
    let mut alive = ok;
    let stages = [
        (
            Stage::Touch,
            "touched",
            &mut touch_rx,
            opts.touch,
            msgs.sent(0).len(),
            opts.touch_quiet_secs
                .map_or(settle, Duration::from_secs_f64),
        ),
        (
            Stage::Burst,
            "burst",
            &mut burst_rx,
            opts.burst,
            opts.burst_bytes,
            Duration::from_secs_f64(opts.quiet_secs),
        ),
    ];
    for (stage, event, rx, per_conn, bytes, wait) in stages {
        if per_conn == 0 {
            continue;
        }
        let t1 = Instant::now();
        // The receivers live in the tasks; those that failed are gone.
        let _ = stage_tx.send(stage);
        let (ok, errors, first_error) =
            collect(rx, alive, tokio::time::Instant::now() + stage_timeout).await;
        let elapsed = t1.elapsed().as_secs_f64();
        alive = ok;
        tokio::time::sleep(wait).await;
        probe.event(
            event,
            json!({ "connections_ok": ok, "errors": errors, "first_error": first_error,
                    "messages": ok as u64 * per_conn, "message_bytes": bytes,
                    "elapsed_s": elapsed }),
        );
    }
    tokio::time::sleep(Duration::from_secs_f64(opts.hold_secs)).await;
    println!("{}", json!({"event": "done"}));
    Ok(())
}

/// Reads the measured processes for each event: their memory then, and the CPU time they used
/// since the previous event.
struct Probe {
    pids: Vec<u32>,
    tck: u64,
    cpu: CpuSample,
    /// Connections open now (opened, and neither failed nor closed since).
    open: Arc<AtomicUsize>,
}

impl Probe {
    fn new(pids: &[u32], open: Arc<AtomicUsize>) -> Probe {
        Probe {
            pids: pids.to_vec(),
            tck: clk_tck(),
            cpu: cpu_sample(pids),
            open,
        }
    }

    /// Prints one JSON line: `{"event": name, ...fields, connections_open, rss_kib, hwm_kib,
    /// cpu_us}`.
    fn event(&mut self, name: &str, mut fields: serde_json::Value) {
        fields["event"] = json!(name);
        fields["connections_open"] = json!(self.open.load(Ordering::Relaxed));
        if !self.pids.is_empty() {
            let (rss, hwm) = mem_kib(&self.pids);
            let cpu = cpu_sample(&self.pids);
            let ticks = cpu.ticks.saturating_sub(self.cpu.ticks);
            self.cpu = cpu;
            fields["rss_kib"] = json!(rss);
            fields["hwm_kib"] = json!(hwm);
            fields["cpu_us"] = json!(ticks as f64 * 1e6 / self.tck as f64);
        }
        println!("{fields}");
    }
}

/// Counts a connection in `open_now` while it lives.
struct OpenGuard<'a>(&'a AtomicUsize);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One idle connection: opened, then each stage the options ask for when it is announced, then
/// held. Results go to the stage's channel; a connection that failed takes part in no later
/// stage. It is counted in `open_now` from its opening until it fails or is closed.
async fn idle_conn(
    conn: usize,
    opts: &Idle,
    (gate, burst_gate): (&Semaphore, &Semaphore),
    msgs: &Messages,
    mut stage: tokio::sync::watch::Receiver<Stage>,
    [open_tx, touch_tx, burst_tx]: [tokio::sync::mpsc::Sender<StageResult>; 3],
    open_now: &AtomicUsize,
) {
    let ws = {
        let _permit = gate.acquire().await;
        connect(&opts.client).await
    };
    let mut ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            let _ = open_tx.send(Err(format!("{e:#}"))).await;
            return;
        }
    };
    open_now.fetch_add(1, Ordering::Relaxed);
    let _open = OpenGuard(open_now);
    let _ = open_tx.send(Ok(())).await;
    drop(open_tx);
    let reply_timeout = Duration::from_secs_f64(opts.check.reply_timeout_secs);
    let touched = opts.touch == 0
        || stage_step(&mut ws, &mut stage, Stage::Touch, touch_tx, async |ws| {
            touch(ws, conn, opts.touch, msgs, reply_timeout).await?;
            ws.quiet();
            Ok(())
        })
        .await;
    let burst_done = touched
        && (opts.burst == 0
            || stage_step(&mut ws, &mut stage, Stage::Burst, burst_tx, async |ws| {
                let _permit = burst_gate.acquire().await;
                burst(ws, conn, opts, reply_timeout).await
            })
            .await);
    if burst_done {
        // Held, answering pings, until the process ends.
        while ws.next_data().await.is_ok() {}
    }
}

/// Takes part in one stage: waits for it, does `work` and reports to `tx`. False when this
/// connection is done with (it failed, or the run is over).
async fn stage_step(
    ws: &mut Conn,
    stage: &mut tokio::sync::watch::Receiver<Stage>,
    want: Stage,
    tx: tokio::sync::mpsc::Sender<StageResult>,
    work: impl AsyncFnOnce(&mut Conn) -> Result<()>,
) -> bool {
    let r = match wait_stage(ws, stage, want).await {
        Ok(true) => work(ws).await,
        Ok(false) => return false,
        Err(e) => Err(e),
    };
    let ok = r.is_ok();
    let _ = tx.send(r.map_err(|e| format!("{e:#}"))).await;
    ok
}

/// Waits for `want` while reading, so pings are answered and a close is noticed; false when
/// the run is over.
async fn wait_stage(
    ws: &mut Conn,
    stage: &mut tokio::sync::watch::Receiver<Stage>,
    want: Stage,
) -> Result<bool> {
    loop {
        tokio::select! {
            s = stage.wait_for(|s| *s >= want) => return Ok(s.is_ok()),
            msg = ws.next_data() => {
                msg.context("while idle")?;
            }
        }
    }
}

/// `count` round trips one at a time, every echo checked.
async fn touch(
    ws: &mut Conn,
    conn: usize,
    count: u64,
    msgs: &Messages,
    reply_timeout: Duration,
) -> Result<()> {
    let mut stats = Stats::new(false);
    let deadline = tokio::time::Instant::now() + reply_timeout.mul_f64(count as f64);
    run_round_trips(
        ws,
        conn,
        0,
        count,
        1,
        msgs,
        &mut stats,
        reply_timeout,
        deadline,
    )
    .await?;
    match stats.first_mismatch {
        Some(m) => bail!("{m}"),
        None => Ok(()),
    }
}

/// `--burst` messages of `--burst-bytes` written at once, then every echo read and compared.
async fn burst(ws: &mut Conn, conn: usize, opts: &Idle, reply_timeout: Duration) -> Result<()> {
    let sent = (0..opts.burst)
        .map(|i| burst_message(opts.burst_bytes, seq_of(conn, i)))
        .collect::<Result<Vec<_>>>()?;
    for m in &sent {
        ws.feed(m.clone()).await?;
    }
    ws.flush().await?;
    for (i, m) in sent.iter().enumerate() {
        let echo = next_data(ws, tokio::time::Instant::now() + reply_timeout)
            .await
            .with_context(|| format!("burst: {i} of {} echoed", sent.len()))?;
        let same = matches!(&echo, Message::Text(t) if t.as_str() == m.as_str());
        if !same {
            bail!(
                "burst message {i}: the echo ({} bytes) is not the message sent ({} bytes)",
                echo.len(),
                m.len()
            );
        }
    }
    Ok(())
}

/// Counts `expected` results (or until the channel closes / the deadline passes).
async fn collect(
    rx: &mut tokio::sync::mpsc::Receiver<StageResult>,
    expected: usize,
    deadline: tokio::time::Instant,
) -> (usize, usize, Option<String>) {
    let (mut ok, mut errors, mut first) = (0, 0, None);
    while ok + errors < expected {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Ok(()))) => ok += 1,
            Ok(Some(Err(e))) => {
                errors += 1;
                first.get_or_insert(e);
            }
            Ok(None) | Err(_) => break,
        }
    }
    (ok, errors, first)
}

// ---------------------------------------------------------------------------------------------
// echo

/// The next accepted connection; failures (EMFILE and friends) are logged and waited out
/// instead of spinning.
async fn accept(listener: &TcpListener) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((tcp, _peer)) => return tcp,
            Err(e) => {
                eprintln!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn relay(opts: Relay) -> Result<()> {
    let listener = TcpListener::bind(opts.bind)
        .await
        .with_context(|| format!("binding {}", opts.bind))?;
    eprintln!(
        "wsnorm-load relay listening on {} -> {}",
        opts.bind, opts.backend
    );
    loop {
        let mut client = accept(&listener).await;
        tokio::spawn(async move {
            let Ok(mut backend) = TcpStream::connect(opts.backend).await else {
                return;
            };
            for s in [&client, &backend] {
                let _ = s.set_nodelay(true);
            }
            let _ = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut backend, 4096, 4096)
                .await;
        });
    }
}

async fn echo(opts: Echo) -> Result<()> {
    let listener = TcpListener::bind(opts.bind)
        .await
        .with_context(|| format!("binding {}", opts.bind))?;
    let with = if opts.deflate {
        " (permessage-deflate)"
    } else {
        ""
    };
    eprintln!("wsnorm-load echo listening on {}{with}", opts.bind);
    let config = ws_config(opts.max_message_bytes);
    loop {
        let tcp = accept(&listener).await;
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            if opts.deflate {
                // Its handshake is bounded as tungstenite's below; then it runs until closed.
                let _ =
                    deflate_ws::echo(tcp, opts.max_message_bytes, Duration::from_secs(10)).await;
                return;
            }
            let handshake = tokio::time::timeout(
                Duration::from_secs(10),
                tokio_tungstenite::accept_async_with_config(tcp, Some(config)),
            )
            .await;
            let Ok(Ok(mut ws)) = handshake else {
                return;
            };
            while let Some(Ok(msg)) = ws.next().await {
                match msg {
                    Message::Text(_) | Message::Binary(_) => {
                        if ws.send(msg).await.is_err() {
                            break;
                        }
                    }
                    // tungstenite answers pings and closes itself.
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                    Message::Close(_) => {}
                }
            }
        });
    }
}
