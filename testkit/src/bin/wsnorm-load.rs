//! `wsnorm-load`: the load generator and echo backend behind `bench/compare.sh`.
//!
//! * `pingpong` — N connections, M round trips each, K messages in flight per connection.
//!   Every message is the ~256 B incident-style `agent_chat` JSON (`execute_agent` with a naive
//!   ISO timestamp) carrying a per-message sequence number in `message_id`. Every echo is checked
//!   in order against what should come back: the exact bytes sent, or with `--expect-rewrite`
//!   the exactly-rewritten message (`start_agent`, `1757350201.447585`). Prints one JSON object:
//!   msg/s, latency percentiles (HDR, µs), errors, mismatches and, with `--cpu-pid`, the CPU time
//!   those processes used during the measured window (utime+stime from `/proc/PID/stat`, plus the
//!   nanosecond `schedstat` sum of their threads) per round trip.
//! * `idle` — opens N connections, prints `{"event":"open",...}` once all are open, optionally
//!   sends one message on each (`--touch`, then `{"event":"touched",...}`), and holds them for
//!   `--hold-secs` or until killed.
//! * `echo` — a lean echo backend: any path, no auth, no subprotocol, text and binary echoed,
//!   16 KiB read buffers.
//! * `relay` — a plain TCP relay (tokio's `copy_bidirectional`, 4 KiB buffers), WebSocket
//!   handshake and frames passed through as bytes: what any proxy on tokio costs before it looks
//!   at a message, measured beside nginx and wsnorm as a reference.
//!
//! Every phase is bounded in time; nothing here unwraps network input.

use std::collections::VecDeque;
use std::net::SocketAddr;
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
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

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
    /// Open N connections and hold them.
    Idle(Idle),
    /// Echo backend (text and binary), for measuring proxies.
    Echo(Echo),
    /// Plain TCP relay to an upstream (a reference for proxies' CPU per message).
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
}

#[derive(Debug, Args)]
struct PingPong {
    #[command(flatten)]
    client: ClientOpts,
    /// Measured round trips per connection.
    #[arg(long, short = 'm', default_value_t = 1000)]
    messages: u64,
    /// Round trips per connection before the measured window (not counted).
    #[arg(long, default_value_t = 50)]
    warmup: u64,
    /// Messages in flight per connection.
    #[arg(long, short = 'k', default_value_t = 1)]
    inflight: usize,
    /// Echoes must be the exactly-rewritten message (through wsnorm with the default rules);
    /// without it they must be the bytes sent.
    #[arg(long)]
    expect_rewrite: bool,
    /// Processes whose CPU time is measured over the window (repeatable; e.g. the proxy).
    #[arg(long = "cpu-pid")]
    cpu_pids: Vec<u32>,
    /// Clock ticks per second of /proc/PID/stat (default: `getconf CLK_TCK`, else 100).
    #[arg(long)]
    clk_tck: Option<u64>,
    /// Give up on an echo after this long (the connection is then counted as failed).
    #[arg(long, default_value_t = 10.0)]
    reply_timeout_secs: f64,
    /// Bound on the whole run.
    #[arg(long, default_value_t = 120.0)]
    max_secs: f64,
    /// Free-form label copied into the report.
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Debug, Args)]
struct Idle {
    #[command(flatten)]
    client: ClientOpts,
    /// After all are open, send one message on each and wait for its echo.
    #[arg(long)]
    touch: bool,
    /// Seconds between "open" and the touch round.
    #[arg(long, default_value_t = 0.0)]
    touch_after_secs: f64,
    /// How long to hold the connections (or until killed).
    #[arg(long, default_value_t = 60.0)]
    hold_secs: f64,
}

#[derive(Debug, Args)]
struct Echo {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:9001")]
    bind: SocketAddr,
    /// Largest message accepted.
    #[arg(long, default_value_t = 16 << 20)]
    max_message_bytes: usize,
}

#[derive(Debug, Args)]
struct Relay {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:9002")]
    bind: SocketAddr,
    /// Where every connection is relayed to.
    #[arg(long, default_value = "127.0.0.1:9001")]
    upstream: SocketAddr,
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

fn seq_of(conn: usize, i: u64) -> u64 {
    // Connection in the high digits, message in the low ones: unique across the run.
    (conn as u64 % 10_000) * 1_000_000 + i % 1_000_000
}

// ---------------------------------------------------------------------------------------------
// Connecting

type Ws = WebSocketStream<TcpStream>;

async fn connect(opts: &ClientOpts) -> Result<Ws> {
    let timeout = Duration::from_secs_f64(opts.connect_timeout_secs);
    tokio::time::timeout(timeout, connect_inner(opts))
        .await
        .context("connect timed out")?
}

async fn connect_inner(opts: &ClientOpts) -> Result<Ws> {
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
    let (ws, _resp) =
        tokio_tungstenite::client_async_with_config(request, tcp, Some(ws_config(16 << 20)))
            .await
            .context("WebSocket handshake")?;
    Ok(ws)
}

// ---------------------------------------------------------------------------------------------
// CPU accounting of other processes

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

async fn pingpong(opts: PingPong) -> Result<()> {
    if opts.inflight == 0 {
        bail!("--inflight must be at least 1");
    }
    let opts = Arc::new(opts);
    let msgs = Arc::new(Messages::new(opts.expect_rewrite));
    let n = opts.client.connections;
    let barrier = Arc::new(Barrier::new(n + 1));
    let open_gate = Arc::new(Semaphore::new(opts.client.open_concurrency.max(1)));
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
    let cpu0 = cpu_sample(&opts.cpu_pids);
    let t0 = Instant::now();
    let mut results = Vec::with_capacity(n);
    for task in tasks {
        match task.await {
            Ok(r) => results.push(r),
            Err(e) => results.push(ConnResult {
                errors: 1,
                error: Some(format!("task failed: {e}")),
                ..ConnResult::default()
            }),
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_sample(&opts.cpu_pids);

    let mut hist = new_hist()?;
    let (mut received, mut errors, mut mismatches, mut connected) = (0u64, 0u64, 0u64, 0usize);
    let mut first_error = None;
    for r in &results {
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
    let mut report = json!({
        "mode": "pingpong",
        "label": opts.label,
        "url": opts.client.url,
        "connections": n,
        "connections_ok": connected,
        "inflight": opts.inflight,
        "messages_per_connection": opts.messages,
        "expect_rewrite": opts.expect_rewrite,
        "message_bytes": msgs.sent(0).len(),
        "round_trips": received,
        "elapsed_s": elapsed,
        "msg_per_s": if elapsed > 0.0 { received as f64 / elapsed } else { 0.0 },
        "p50_us": q(0.50),
        "p90_us": q(0.90),
        "p99_us": q(0.99),
        "p999_us": q(0.999),
        "max_us": if hist.is_empty() { 0 } else { hist.max() },
        "mean_us": if hist.is_empty() { 0.0 } else { hist.mean() },
        "errors": errors,
        "mismatches": mismatches,
        "first_error": first_error,
    });
    if !opts.cpu_pids.is_empty() {
        let tck = opts.clk_tck.unwrap_or_else(clk_tck);
        let ticks = cpu1.ticks.saturating_sub(cpu0.ticks);
        let cpu_us = ticks as f64 * 1e6 / tck as f64;
        let sched_us = cpu1.sched_ns.saturating_sub(cpu0.sched_ns) as f64 / 1e3;
        let per = |us: f64| {
            if received > 0 {
                us / received as f64
            } else {
                0.0
            }
        };
        if let Some(obj) = report.as_object_mut() {
            obj.insert("cpu_pids".into(), json!(opts.cpu_pids));
            obj.insert("clk_tck".into(), json!(tck));
            obj.insert("proxy_cpu_ticks".into(), json!(ticks));
            obj.insert("proxy_cpu_us".into(), json!(cpu_us));
            obj.insert("proxy_cpu_us_per_msg".into(), json!(per(cpu_us)));
            obj.insert("proxy_sched_us".into(), json!(sched_us));
            obj.insert("proxy_sched_us_per_msg".into(), json!(per(sched_us)));
        }
    }
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
    let reply_timeout = Duration::from_secs_f64(opts.reply_timeout_secs);

    // Phase 1 (bounded by the connect timeout and the reply timeouts): open and warm up.
    let ws = {
        let permit = gate.acquire().await;
        let ws = connect(&opts.client).await;
        drop(permit);
        ws
    };
    let mut ws = match ws {
        Ok(ws) => Some(ws),
        Err(e) => {
            result.errors += 1;
            result.error = Some(format!("{e:#}"));
            None
        }
    };
    if let Some(w) = ws.as_mut() {
        result.connected = true;
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
    if let Err(e) = run {
        result.errors += 1;
        result.error = Some(format!("{e:#}"));
    }
    if result.error.is_none() {
        result.error.clone_from(&stats.first_mismatch);
    }
    result.received += stats.received;
    result.mismatches += stats.mismatches;
    result.hist = stats.hist;
    // A polite close, bounded.
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    result
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
}

/// `count` round trips with `inflight` messages outstanding; echoes are checked in order.
#[allow(clippy::too_many_arguments)]
async fn run_round_trips(
    ws: &mut Ws,
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
        ws.feed(Message::text(msgs.sent(seq))).await?;
        outstanding.push_back((seq, Instant::now()));
        next += 1;
    }
    ws.flush().await?;
    while done < count {
        let wait_until = (tokio::time::Instant::now() + reply_timeout).min(deadline);
        let msg = match tokio::time::timeout_at(wait_until, ws.next()).await {
            Err(_) => bail!("no echo within the time allowed ({done} of {count} received)"),
            Ok(None) => bail!("connection closed ({done} of {count} received)"),
            Ok(Some(Err(e))) => bail!("read failed: {e} ({done} of {count} received)"),
            Ok(Some(Ok(m))) => m,
        };
        let text = match &msg {
            Message::Text(t) => t.as_str(),
            Message::Binary(_) => "<binary>",
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            Message::Close(f) => bail!("peer closed: {f:?} ({done} of {count} received)"),
        };
        let Some((seq, sent_at)) = outstanding.pop_front() else {
            bail!("unsolicited message");
        };
        let rtt = sent_at.elapsed();
        Messages::write(&msgs.expected, seq, &mut expected);
        if text != expected {
            stats.mismatch(format!(
                "seq {seq}: expected {expected} got {}",
                text.chars().take(400).collect::<String>()
            ));
        }
        if let Some(h) = stats.hist.as_mut() {
            let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX).max(1);
            h.saturating_record(us);
        }
        stats.received += 1;
        done += 1;
        if next < end {
            let seq = seq_of(conn, next);
            ws.send(Message::text(msgs.sent(seq))).await?;
            outstanding.push_back((seq, Instant::now()));
            next += 1;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// idle

async fn idle(opts: Idle) -> Result<()> {
    let opts = Arc::new(opts);
    let n = opts.client.connections;
    let gate = Arc::new(Semaphore::new(opts.client.open_concurrency.max(1)));
    let msgs = Arc::new(Messages::new(false));
    let (open_tx, mut open_rx) = tokio::sync::mpsc::channel::<Result<(), String>>(n.max(1));
    let (touch_tx, touch_rx) = tokio::sync::watch::channel(false);
    let (touched_tx, mut touched_rx) = tokio::sync::mpsc::channel::<Result<(), String>>(n.max(1));
    let hold = Duration::from_secs_f64(opts.hold_secs);
    let t0 = Instant::now();

    for conn in 0..n {
        let (opts, gate, msgs, open_tx, mut touch_rx, touched_tx) = (
            opts.clone(),
            gate.clone(),
            msgs.clone(),
            open_tx.clone(),
            touch_rx.clone(),
            touched_tx.clone(),
        );
        tokio::spawn(async move {
            let ws = {
                let _permit = gate.acquire().await;
                connect(&opts.client).await
            };
            let mut ws = match ws {
                Ok(ws) => {
                    let _ = open_tx.send(Ok(())).await;
                    ws
                }
                Err(e) => {
                    let _ = open_tx.send(Err(format!("{e:#}"))).await;
                    return;
                }
            };
            drop(open_tx);
            if touch_rx.wait_for(|t| *t).await.is_err() {
                return;
            }
            let seq = seq_of(conn, 0);
            let r = tokio::time::timeout(Duration::from_secs(30), async {
                ws.send(Message::text(msgs.sent(seq))).await?;
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Text(_) | Message::Binary(_))) => return Ok(()),
                        Some(Ok(Message::Close(_))) | None => bail!("closed"),
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Err(e.into()),
                    }
                }
            })
            .await;
            let r = match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(_) => Err("no echo within 30 s".to_owned()),
            };
            let _ = touched_tx.send(r).await;
            drop(touched_tx);
            // Hold, answering pings and noticing closes, until the process ends.
            while let Some(Ok(_)) = ws.next().await {}
        });
    }
    drop((open_tx, touched_tx));

    let deadline = tokio::time::Instant::now() + hold;
    let (ok, errors, first_error) = collect(&mut open_rx, n, deadline).await;
    println!(
        "{}",
        json!({
            "event": "open",
            "connections": n,
            "connections_ok": ok,
            "errors": errors,
            "first_error": first_error,
            "elapsed_s": t0.elapsed().as_secs_f64(),
        })
    );
    if opts.touch {
        tokio::time::sleep(Duration::from_secs_f64(opts.touch_after_secs)).await;
        let t1 = Instant::now();
        let _ = touch_tx.send(true);
        let (ok, errors, first_error) = collect(&mut touched_rx, ok, deadline).await;
        println!(
            "{}",
            json!({
                "event": "touched",
                "connections_ok": ok,
                "errors": errors,
                "first_error": first_error,
                "elapsed_s": t1.elapsed().as_secs_f64(),
            })
        );
    }
    tokio::time::sleep_until(deadline).await;
    println!("{}", json!({"event": "done"}));
    Ok(())
}

/// Counts `expected` results (or until the channel closes / the deadline passes).
async fn collect(
    rx: &mut tokio::sync::mpsc::Receiver<Result<(), String>>,
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
        opts.bind, opts.upstream
    );
    loop {
        let mut client = accept(&listener).await;
        tokio::spawn(async move {
            let Ok(mut upstream) = TcpStream::connect(opts.upstream).await else {
                return;
            };
            for s in [&client, &upstream] {
                let _ = s.set_nodelay(true);
            }
            let _ =
                tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, 4096, 4096)
                    .await;
        });
    }
}

async fn echo(opts: Echo) -> Result<()> {
    let listener = TcpListener::bind(opts.bind)
        .await
        .with_context(|| format!("binding {}", opts.bind))?;
    eprintln!("wsnorm-load echo listening on {}", opts.bind);
    let config = ws_config(opts.max_message_bytes);
    loop {
        let tcp = accept(&listener).await;
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
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
