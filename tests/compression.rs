//! permessage-deflate through the real wsnorm binary over real sockets: every combination of
//! compressed and uncompressed legs, with and without context takeover, window bits 9 to 15;
//! the rules still rewrite; a decompression bomb and invalid deflate data are closed.
//!
//! Both peers are written here at the frame level with `flate2` (raw deflate), so what crosses
//! each socket is seen byte for byte: whether RSV1 is set and how large the payload is.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use common::*;

const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];
const RSV1: u8 = 4;

/// A `*_max_window_bits=N` parameter of a permessage-deflate header, 15 when absent; read here,
/// not with wsnorm's parser, so the tests check wsnorm's header independently.
fn window_bits(params: &str, name: &str) -> u8 {
    params
        .split(';')
        .find_map(|p| p.trim().strip_prefix(name)?.strip_prefix('='))
        .map_or(15, |bits| bits.parse().expect("window bits are a number"))
}

/// One peer's permessage-deflate state, as the RFC describes it.
struct Pmd {
    compress: Compress,
    decompress: Decompress,
    reset_sent: bool,
    reset_received: bool,
}

impl Pmd {
    fn new(bits: u8, reset_sent: bool, reset_received: bool) -> Pmd {
        Pmd {
            compress: Compress::new_with_window_bits(Compression::default(), false, bits),
            decompress: Decompress::new_with_window_bits(false, bits),
            reset_sent,
            reset_received,
        }
    }

    /// The client's side of what wsnorm answered (one window, as the tests ask it).
    fn client(answer: &str) -> Pmd {
        let bits = window_bits(answer, "server_max_window_bits");
        Pmd::new(
            bits,
            answer.contains("client_no_context_takeover"),
            answer.contains("server_no_context_takeover"),
        )
    }

    fn deflate(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 64);
        let mut input = data;
        loop {
            let before = self.compress.total_in();
            self.compress
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .unwrap();
            input = &input[(self.compress.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity());
        }
        assert!(out.ends_with(&TAIL));
        out.truncate(out.len() - 4);
        if self.reset_sent {
            self.compress.reset();
        }
        out
    }

    fn inflate(&mut self, data: &[u8]) -> Vec<u8> {
        let mut input = data.to_vec();
        input.extend_from_slice(&TAIL);
        let mut out = Vec::with_capacity(data.len() * 4 + 64);
        let mut rest = &input[..];
        loop {
            let before = self.decompress.total_in();
            self.decompress
                .decompress_vec(rest, &mut out, FlushDecompress::Sync)
                .expect("wsnorm sent valid deflate data within the negotiated window");
            rest = &rest[(self.decompress.total_in() - before) as usize..];
            if rest.is_empty() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity());
        }
        if self.reset_received {
            self.decompress.reset(false);
        }
        out
    }
}

/// A whole message as a peer read it: opcode, payload (inflated), and the payload's size on
/// the wire and whether it was compressed.
#[derive(Debug)]
struct Received {
    opcode: u8,
    payload: Vec<u8>,
    wire: usize,
    compressed: bool,
    /// The payload as it crossed the socket (compressed, if it was).
    raw: Vec<u8>,
}

/// Reads one data message (answering nothing; pongs are skipped), inflating it if compressed.
async fn read_message(ws: &mut RawWs, pmd: &mut Option<Pmd>) -> Option<Received> {
    let mut message: Option<Received> = None;
    loop {
        let frame = ws
            .read_frame_within(Duration::from_secs(10))
            .await
            .expect("a frame within 10 s")?;
        if frame.opcode >= 8 {
            if frame.opcode == OP_CLOSE {
                return None;
            }
            continue;
        }
        let m = message.get_or_insert(Received {
            opcode: frame.opcode,
            payload: Vec::new(),
            wire: 0,
            compressed: frame.rsv & RSV1 != 0,
            raw: Vec::new(),
        });
        if frame.opcode != OP_CONT && m.wire > 0 {
            panic!("a new message inside a fragmented one");
        }
        assert!(frame.opcode == m.opcode || frame.opcode == OP_CONT);
        if m.wire > 0 || frame.opcode == OP_CONT {
            assert_eq!(frame.rsv, 0, "RSV1 only on a message's first frame");
        }
        m.wire += frame.payload.len();
        m.payload.extend_from_slice(&frame.payload);
        if frame.fin {
            let mut m = message.take()?;
            m.raw = m.payload.clone();
            if m.compressed {
                let pmd = pmd
                    .as_mut()
                    .expect("RSV1 on a leg without permessage-deflate");
                m.payload = pmd.inflate(&m.payload);
            }
            return Some(m);
        }
    }
}

/// Frames of one message: compressed (RSV1 on the first) when `pmd` is given, split in two
/// with a ping between when `split`.
fn message_frames(
    opcode: u8,
    payload: &[u8],
    pmd: Option<&mut Pmd>,
    masked: bool,
    split: bool,
) -> Vec<u8> {
    let (data, rsv) = match pmd {
        Some(pmd) => (pmd.deflate(payload), RSV1),
        None => (payload.to_vec(), 0),
    };
    if !split || data.len() < 2 {
        return frame_bytes(true, rsv, opcode, masked, &data);
    }
    let (a, b) = data.split_at(data.len() / 2);
    let mut out = frame_bytes(false, rsv, opcode, masked, a);
    out.extend(frame_bytes(true, 0, OP_PING, masked, b"between"));
    out.extend(frame_bytes(true, 0, OP_CONT, masked, b));
    out
}

/// The backend: answers permessage-deflate when the request says `x-backend-deflate: yes`,
/// bounding what wsnorm may use by what it offered, then echoes every message (compressed when
/// negotiated and 32 bytes or more) and reports what it received.
async fn start_deflate_backend() -> (SocketAddr, mpsc::UnboundedReceiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(serve_backend(stream, tx.clone()));
        }
    });
    (addr, rx)
}

async fn serve_backend(mut stream: TcpStream, seen: mpsc::UnboundedSender<Received>) {
    let head = String::from_utf8(read_request_head(&mut stream).await).unwrap();
    let header = |name: &str| {
        head.lines()
            .find(|l| l.to_ascii_lowercase().starts_with(&format!("{name}:")))
            .map(|l| l[name.len() + 1..].trim().to_string())
    };
    // wsnorm's backend check connects and closes without a request.
    let Some(key) = header("sec-websocket-key") else {
        return;
    };
    let offer = header("sec-websocket-extensions");
    let mut answer = String::new();
    let mut pmd = None;
    if header("x-backend-deflate").as_deref() == Some("yes") {
        let offer = offer.expect("wsnorm offers permessage-deflate");
        assert!(offer.starts_with("permessage-deflate"), "{offer}");
        // What wsnorm asks of the backend it gets; the backend bounds wsnorm's window to the same.
        let bits = window_bits(&offer, "server_max_window_bits");
        // Each direction's context as wsnorm asked: the backend's own, and wsnorm's hint.
        let server_reset = offer.contains("server_no_context_takeover");
        let client_reset = offer.contains("client_no_context_takeover");
        answer = format!(
            "Sec-WebSocket-Extensions: permessage-deflate{}{}; server_max_window_bits={bits}; client_max_window_bits={bits}\r\n",
            if server_reset { "; server_no_context_takeover" } else { "" },
            if client_reset { "; client_no_context_takeover" } else { "" },
        );
        pmd = Some(Pmd::new(bits, server_reset, client_reset));
    }
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n{answer}\r\n",
        derive_accept_key(key.as_bytes())
    );
    stream.write_all(response.as_bytes()).await.unwrap();
    let mut ws = RawWs {
        stream,
        buf: Vec::new(),
    };
    while let Some(m) = read_message(&mut ws, &mut pmd).await {
        let compress = pmd.as_mut().filter(|_| m.payload.len() >= 32);
        let echo = message_frames(m.opcode, &m.payload, compress, false, false);
        ws.send(&echo).await;
        let _ = seen.send(m);
    }
}

/// The messages of a conversation: what the client sends, what the backend must receive.
fn conversation() -> Vec<(u8, Vec<u8>, Vec<u8>)> {
    let big = format!(
        r#"{{"type":"agent_response","data":"{}"}}"#,
        "the same tokens over and over, ".repeat(8000)
    );
    vec![
        (
            OP_TEXT,
            br#"{"type":"execute_agent","message_id":"m1","timestamp":"2025-09-08T16:50:01.447585"}"#.to_vec(),
            br#"{"type":"start_agent","message_id":"m1","timestamp":1757350201.447585}"#.to_vec(),
        ),
        (OP_TEXT, big.clone().into_bytes(), big.into_bytes()),
        (OP_TEXT, br#"{"a":1}"#.to_vec(), br#"{"a":1}"#.to_vec()),
        (
            OP_BINARY,
            (0..=255u8).cycle().take(30_000).collect(),
            (0..=255u8).cycle().take(30_000).collect(),
        ),
        (
            OP_TEXT,
            br#"{"type":"execute_agent","message_id":"m2","payload":{"x":"y"}}"#.to_vec(),
            br#"{"type":"start_agent","message_id":"m2","payload":{"x":"y"}}"#.to_vec(),
        ),
    ]
}

/// The `[websocket.compression]` keys a conversation runs with (the rest at their defaults).
#[derive(Clone, Copy, Debug)]
struct Setting {
    context_takeover: bool,
    peer_context_takeover: bool,
    passthrough: bool,
    compress_to_backend: bool,
}

impl Setting {
    /// The defaults.
    const DEFAULT: Setting = Setting {
        context_takeover: true,
        peer_context_takeover: false,
        passthrough: true,
        compress_to_backend: false,
    };

    fn toml(self) -> String {
        let Setting {
            context_takeover,
            peer_context_takeover,
            passthrough,
            compress_to_backend,
        } = self;
        format!(
            "[websocket.compression]\ncontext_takeover = {context_takeover}\n\
             peer_context_takeover = {peer_context_takeover}\npassthrough = {passthrough}\n\
             compress_to_backend = {compress_to_backend}\n"
        )
    }
}

/// One connection through `wsnorm`: the client offers permessage-deflate or not, the backend
/// accepts it or not; every message is checked on both sockets.
async fn converse(
    wsnorm: &Wsnorm,
    backend_seen: &mut mpsc::UnboundedReceiver<Received>,
    client_deflate: bool,
    backend_deflate: bool,
    bits: u8,
    setting: Setting,
) {
    let Setting {
        context_takeover,
        peer_context_takeover,
        passthrough,
        compress_to_backend,
    } = setting;
    let label =
        format!("client {client_deflate}, backend {backend_deflate}, bits {bits}, {setting:?}");
    // Passed through, the backend's compressed echoes reach the client as the backend wrote
    // them: a compressor like the backend's, fed the same messages, writes the same bytes.
    let mut backend_mirror = (passthrough && client_deflate && backend_deflate)
        .then(|| Pmd::new(bits, !context_takeover, false));
    let mut extra = format!(
        "x-backend-deflate: {}\r\n",
        if backend_deflate { "yes" } else { "no" }
    );
    if client_deflate {
        extra.push_str("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n");
    }
    let (mut client, head) =
        RawWs::open(wsnorm.listen, upgrade_request("/ws", &extra).as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{label}: {head}");
    let answered = head.lines().find(|l| {
        l.to_ascii_lowercase()
            .starts_with("sec-websocket-extensions:")
    });
    let mut pmd = None;
    if client_deflate {
        let answered = answered.unwrap_or_else(|| panic!("{label}: no extension in {head}"));
        let client_bits = window_bits(answered, "client_max_window_bits");
        let server_bits = window_bits(answered, "server_max_window_bits");
        assert_eq!(
            (client_bits, server_bits),
            (bits, bits),
            "{label}: {answered}"
        );
        assert_eq!(
            answered.contains("server_no_context_takeover"),
            !context_takeover,
            "{label}: {answered}"
        );
        assert_eq!(
            answered.contains("client_no_context_takeover"),
            !peer_context_takeover,
            "{label}: {answered}"
        );
        // The client compresses within the window and context it was given and inflates with
        // wsnorm's: data past either would fail here.
        pmd = Some(Pmd::client(answered));
    } else {
        assert!(answered.is_none(), "{label}: {head}");
    }
    for (i, (opcode, sent, expected)) in conversation().into_iter().enumerate() {
        let compress = pmd.as_mut().filter(|_| sent.len() >= 32);
        let frames = message_frames(opcode, &sent, compress, true, i == 1);
        client.send(&frames).await;
        let got = tokio::time::timeout(Duration::from_secs(10), backend_seen.recv())
            .await
            .unwrap_or_else(|_| panic!("{label}: message {i} reached the backend"))
            .unwrap();
        assert_eq!(got.opcode, opcode, "{label}: message {i}");
        assert!(
            got.payload == expected,
            "{label}: message {i} arrived as {:?}",
            String::from_utf8_lossy(&got.payload[..got.payload.len().min(200)])
        );
        assert_eq!(
            got.compressed,
            backend_deflate && compress_to_backend && expected.len() >= 32,
            "{label}: message {i} on the backend's wire"
        );
        let echoed = read_message(&mut client, &mut pmd)
            .await
            .unwrap_or_else(|| panic!("{label}: echo of message {i}"));
        assert!(echoed.payload == expected, "{label}: echo of message {i}");
        assert_eq!(
            echoed.compressed,
            client_deflate && expected.len() >= 32,
            "{label}: echo of message {i} on the client's wire"
        );
        if let Some(mirror) = backend_mirror.as_mut().filter(|_| echoed.compressed) {
            assert!(
                echoed.raw == mirror.deflate(&expected),
                "{label}: echo of message {i} passed through as the backend compressed it"
            );
        }
        if i == 1 {
            // The large repetitive message crosses each compressed leg as a small part of itself.
            let leg_wire = |compressed: bool, wire: usize| {
                if compressed {
                    assert!(
                        wire * 10 < expected.len(),
                        "{label}: {wire} bytes for {}",
                        expected.len()
                    );
                } else {
                    assert_eq!(wire, expected.len(), "{label}");
                }
            };
            leg_wire(backend_deflate && compress_to_backend, got.wire);
            leg_wire(client_deflate, echoed.wire);
        }
    }
    client
        .send(&client_frame(OP_CLOSE, &1000u16.to_be_bytes()))
        .await;
    assert_eq!(
        client.close_code().await.map(|c| c.0),
        Some(1000),
        "{label}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_combination_of_legs_windows_and_context_takeover() {
    let (backend, mut seen) = start_deflate_backend().await;
    for context_takeover in [true, false] {
        for bits in 9..=15u8 {
            // The other keys alternate with the window: with each value of context_takeover,
            // every pair of the peers' context and passthrough is met, and compressing to the
            // backend on and off with each.
            let setting = Setting {
                context_takeover,
                peer_context_takeover: bits % 2 == 1,
                passthrough: (bits / 2) % 2 == 0,
                compress_to_backend: bits % 3 != 0,
            };
            let config = format!("{}window_bits = {bits}\n", setting.toml());
            let wsnorm = Wsnorm::start(&backend.to_string(), &config).await;
            for client_deflate in [true, false] {
                for backend_deflate in [true, false] {
                    converse(
                        &wsnorm,
                        &mut seen,
                        client_deflate,
                        backend_deflate,
                        bits,
                        setting,
                    )
                    .await;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_is_counted_and_logged_per_leg() {
    let (backend, mut seen) = start_deflate_backend().await;
    // wsnorm compresses for both legs.
    let setting = Setting {
        passthrough: false,
        compress_to_backend: true,
        ..Setting::DEFAULT
    };
    let wsnorm = Wsnorm::start(&backend.to_string(), &setting.toml()).await;
    converse(&wsnorm, &mut seen, true, true, 15, setting).await;
    let metrics = wsnorm.metrics().await;
    let series = |name: &str, leg: &str, dir: &str| {
        metric(
            &metrics,
            &format!("{name}{{direction=\"{dir}\",leg=\"{leg}\"}}"),
        )
    };
    for (leg, dir) in [
        ("client", "backend_to_client"),
        ("backend", "client_to_backend"),
    ] {
        let payload = series("wsnorm_payload_bytes_total", leg, dir);
        let wire = series("wsnorm_wire_bytes_total", leg, dir);
        assert!(
            payload > 240_000.0 && wire * 10.0 < payload,
            "{leg} {dir}: {payload} / {wire}"
        );
    }
    let logs = wsnorm.logs();
    assert!(
        logs.contains(r#""wsnorm.client.extension":"permessage-deflate; client_no_context_takeover""#)
            && logs.contains(r#""wsnorm.backend.extension":"permessage-deflate; server_no_context_takeover; server_max_window_bits=15; client_max_window_bits=15""#),
        "{logs}"
    );
}

/// Peak resident memory of a process, from /proc.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decompression_bomb_is_closed_with_1009_without_being_held() {
    let (backend, mut seen) = start_deflate_backend().await;
    let wsnorm = Wsnorm::start(&backend.to_string(), "").await;
    let extra = "x-backend-deflate: yes\r\nSec-WebSocket-Extensions: permessage-deflate\r\n";
    let mut client = RawWs::connect_with(wsnorm.listen, &upgrade_request("/ws", extra)).await;
    let before = peak_rss_kib(wsnorm.child.id());
    // 256 MiB of zeros: about 250 KB compressed, under the 1 MiB frame limit.
    let mut pmd = Pmd::new(15, true, true);
    let bomb = pmd.deflate(&vec![b' '; 256 << 20]);
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    client
        .send(&frame_bytes(true, RSV1, OP_TEXT, true, &bomb))
        .await;
    assert_eq!(client.close_code().await.map(|c| c.0), Some(1009));
    let grown = peak_rss_kib(wsnorm.child.id()).saturating_sub(before);
    // The limit (1 MiB) and the frame, not the 256 MiB it would inflate to.
    assert!(grown < 16 << 10, "wsnorm grew by {grown} KiB");
    assert!(seen.try_recv().is_err(), "nothing reached the backend");
    // Invalid deflate data: 1007.
    let mut client = RawWs::connect_with(wsnorm.listen, &upgrade_request("/ws", extra)).await;
    client
        .send(&frame_bytes(
            true,
            RSV1,
            OP_TEXT,
            true,
            &[0xff, 0xff, 0xff, 0xff],
        ))
        .await;
    assert_eq!(client.close_code().await.map(|c| c.0), Some(1007));
    // RSV1 on a leg without compression: 1002.
    let mut client = RawWs::connect(wsnorm.listen, "/ws").await;
    client
        .send(&frame_bytes(true, RSV1, OP_TEXT, true, b"hello"))
        .await;
    assert_eq!(client.close_code().await.map(|c| c.0), Some(1002));
}

/// A leg's deflater is given back once a keepalive check finds nothing was compressed for it
/// since the last one (context takeover keeps ~260 KiB otherwise). A repeated message shows it:
/// right after its first copy it compresses to a reference to it; after a quiet spell it is
/// compressed afresh, and the peers, which kept their context, still read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_leg_gives_its_deflater_back() {
    let (backend, mut seen) = start_deflate_backend().await;
    // Keepalive checks every 0.5 s.
    let wsnorm = Wsnorm::start(
        &backend.to_string(),
        "[websocket]\nping_interval_secs = 1\n[websocket.compression]\npassthrough = false\n\
         compress_to_backend = true\n",
    )
    .await;
    let extra = "x-backend-deflate: yes\r\nSec-WebSocket-Extensions: permessage-deflate\r\n";
    let (mut client, head) =
        RawWs::open(wsnorm.listen, upgrade_request("/ws", extra).as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let answered = head
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("sec-websocket-extensions:")
        })
        .expect("permessage-deflate answered");
    let mut pmd = Some(Pmd::client(answered));
    // Little repetition inside it (compresses poorly alone), all of it against its last copy.
    let numbers: Vec<String> = (0..600u32)
        .map(|i| (i * 7919 % 10007).to_string())
        .collect();
    let message = format!(
        r#"{{"type":"agent_response","data":[{}]}}"#,
        numbers.join(",")
    )
    .into_bytes();
    let mut round_trip = async |client: &mut RawWs, pmd: &mut Option<Pmd>| {
        client
            .send(&message_frames(
                OP_TEXT,
                &message,
                pmd.as_mut(),
                true,
                false,
            ))
            .await;
        let got = tokio::time::timeout(Duration::from_secs(10), seen.recv())
            .await
            .expect("the message reached the backend")
            .unwrap();
        let echoed = read_message(client, pmd).await.expect("its echo");
        assert!(got.payload == message && echoed.payload == message);
        (got.wire, echoed.wire)
    };
    let first = round_trip(&mut client, &mut pmd).await;
    let repeated = round_trip(&mut client, &mut pmd).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after_quiet = round_trip(&mut client, &mut pmd).await;
    // (to the backend, to the client): wire bytes of each copy.
    assert!(
        repeated.0 * 4 < first.0 && repeated.1 * 4 < first.1,
        "with context: {first:?} then {repeated:?}"
    );
    assert!(
        after_quiet.0 * 2 > first.0 && after_quiet.1 * 2 > first.1,
        "after a quiet spell, compressed afresh: {first:?}, {repeated:?}, then {after_quiet:?}"
    );
}

/// With passthrough (the default) and no rule for backend-to-client messages, the backend is
/// offered the client's window and context, and its compressed messages reach the client as it
/// wrote them, counted apart; a rule for that direction turns it off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backends_compressed_messages_pass_to_the_client_as_they_came() {
    let (backend, mut seen) = start_deflate_backend().await;
    let wsnorm = Wsnorm::start(&backend.to_string(), "").await;
    converse(&wsnorm, &mut seen, true, true, 15, Setting::DEFAULT).await;
    let metrics = wsnorm.metrics().await;
    let passed = metric(
        &metrics,
        r#"wsnorm_passthrough_bytes_total{direction="backend_to_client"}"#,
    );
    assert!(passed > 0.0, "{passed}");
    let client_leg = metric(
        &metrics,
        r#"wsnorm_wire_bytes_total{direction="backend_to_client",leg="client"}"#,
    );
    // Only the short echo the backend did not compress went through wsnorm's own path.
    assert!(client_leg < 32.0, "{client_leg}");
    let logs = wsnorm.logs();
    assert!(
        logs.contains(r#""wsnorm.backend.extension":"permessage-deflate; server_max_window_bits=15; client_max_window_bits=15""#),
        "the backend keeps its context: {logs}"
    );
    // A rule that reads the backend's messages: they are inflated, and the backend is asked to
    // compress each on its own (peer_context_takeover = false).
    let rules = r#"
[[rules]]
name = "iso-timestamps"
kind = "timestamp"
paths = ["timestamp"]

[[rules]]
name = "agent-aliases"
kind = "rename"
direction = "both"
paths = ["type"]
map = { execute_agent = "start_agent" }
"#;
    let wsnorm = Wsnorm::start(&backend.to_string(), rules).await;
    let inflated = Setting {
        passthrough: false,
        ..Setting::DEFAULT
    };
    converse(&wsnorm, &mut seen, true, true, 15, inflated).await;
    let metrics = wsnorm.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"wsnorm_passthrough_bytes_total{direction="backend_to_client"}"#
        ),
        0.0
    );
    assert!(wsnorm.logs().contains("server_no_context_takeover"));
}
