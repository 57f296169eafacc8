//! The relay between real in-memory byte streams: tungstenite plays the peers where whole
//! messages matter, raw frames where the frames themselves (fragments, order) do. Time is paused,
//! so it only moves once every task waits; keepalives are too long to fire.

use std::io::Cursor;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::Role;

use super::buffers::KEEP_BYTES;
use super::conn::Conn;
use super::frames;
use super::legs::Leg;
use super::*;
use crate::config::Config;
use crate::config::Overrides;
use crate::metrics::Metrics;

const TEXT: OpCode = OpCode::Data(Data::Text);
const BINARY: OpCode = OpCode::Data(Data::Binary);
const CONTINUE: OpCode = OpCode::Data(Data::Continue);

/// What each in-memory pipe holds before its writer waits for the reader.
const PIPE_BYTES: usize = 64 * 1024;

/// The one rule of the tests that need a rejected message.
const REJECTING_RULES: &str = r#"
[[rules]]
name = "strict-timestamps"
kind = "timestamp"
direction = "client_to_backend"
paths = ["timestamp"]
on_invalid = "reject"
"#;

type Ws = WebSocketStream<DuplexStream>;

/// A context as production builds it, from a config file's text ("" is the embedded default).
pub(super) fn context(toml: &str) -> RelayContext {
    let config = Config::from_toml("test.toml", toml, &Overrides::default()).unwrap();
    let metrics = Arc::new(Metrics::new().unwrap());
    RelayContext {
        max_message_bytes: config.websocket.max_message_bytes,
        rules: Some(Arc::new(arc_swap::ArcSwap::new(config.rules.clone()))),
        route_metrics: metrics.relay.route("/ws"),
        metrics,
        // Its sender is dropped at once: no shutdown ever comes.
        shutdown: watch::channel(false).1,
        drain_delay: Duration::ZERO,
        keepalive: Keepalive {
            ping_interval: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(7200),
        },
        log: Default::default(),
        deflate: Deflate {
            client: None,
            backend: None,
            passthrough: false,
            compress_to_backend: true,
            settings: deflate::DeflateSettings {
                level: 6,
                min_message_bytes: 0,
            },
        },
    }
}

/// The test's ends of a running relay's sockets.
struct Running {
    client: DuplexStream,
    backend: DuplexStream,
    relay: JoinHandle<Summary>,
}

fn start(ctx: RelayContext) -> Running {
    let (client, relay_client) = duplex(PIPE_BYTES);
    let (backend, relay_backend) = duplex(PIPE_BYTES);
    let relay =
        tokio::spawn(
            async move { run(relay_client, relay_backend, Leftovers::default(), ctx).await },
        );
    Running {
        client,
        backend,
        relay,
    }
}

/// A relay with the default rules; the test writes raw bytes as the client and plays the
/// backend with tungstenite.
async fn raw_client_and_ws_backend() -> (DuplexStream, Ws, JoinHandle<Summary>) {
    let Running {
        client,
        backend,
        relay,
    } = start(context(""));
    (client, ws_backend(backend).await, relay)
}

/// A `Conn` as `run` builds it, for the tests that look inside it, with the test's ends.
fn conn(ctx: &RelayContext) -> (Conn<DuplexStream, DuplexStream>, DuplexStream, DuplexStream) {
    let (client, relay_client) = duplex(PIPE_BYTES);
    let (backend, relay_backend) = duplex(PIPE_BYTES);
    (
        Conn::new(relay_client, relay_backend, Leftovers::default(), ctx),
        client,
        backend,
    )
}

/// Serves until every task waits (the only moment paused time moves), then stops the relay
/// there, between wakes, so its state can be inspected.
async fn serve_until_idle(conn: &mut Conn<DuplexStream, DuplexStream>, ctx: &RelayContext) {
    let served = tokio::time::timeout(Duration::from_secs(1), conn.serve(ctx)).await;
    assert!(served.is_err(), "the relay ended instead of waiting");
}

/// The test as a WebSocket client, on the client leg.
async fn ws_client(stream: DuplexStream) -> Ws {
    WebSocketStream::from_raw_socket(stream, Role::Client, None).await
}

/// The test as the WebSocket server, on the backend leg.
async fn ws_backend(stream: DuplexStream) -> Ws {
    WebSocketStream::from_raw_socket(stream, Role::Server, None).await
}

fn text_of(message: Option<Result<Message, WsError>>) -> String {
    match message {
        Some(Ok(Message::Text(text))) => text.to_string(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

fn close_of(message: Option<Result<Message, WsError>>) -> (u16, String) {
    match message {
        Some(Ok(Message::Close(Some(close)))) => (close.code.into(), close.reason.to_string()),
        other => panic!("expected a close with a code, got {other:?}"),
    }
}

/// `closer` closes with `code`: the other side must get that close, both handshakes must
/// complete and the relay end. Returns the relay's summary.
async fn close_from<A, B>(
    closer: &mut WebSocketStream<A>,
    other: &mut WebSocketStream<B>,
    relay: JoinHandle<Summary>,
    code: u16,
    reason: &str,
) -> Summary
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let close = CloseFrame {
        code: code.into(),
        reason: reason.into(),
    };
    closer.close(Some(close)).await.unwrap();
    let want = (code, reason.to_string());
    assert_eq!(close_of(other.next().await), want, "forwarded close");
    // Polling again sends tungstenite's answer; with both legs closed the relay ends, and
    // dropping its sockets ends both streams.
    assert!(other.next().await.is_none(), "the relay did not end");
    assert_eq!(close_of(closer.next().await), want, "answer to the closer");
    assert!(closer.next().await.is_none());
    relay.await.unwrap()
}

/// A peer writing and reading raw frames, so a test sees the relay's frames as they are on the
/// wire rather than messages reassembled by tungstenite.
struct RawPeer {
    stream: DuplexStream,
    buf: BytesMut,
    /// The role the test plays: `Client` masks what it sends.
    role: Role,
}

impl RawPeer {
    fn new(stream: DuplexStream, role: Role) -> RawPeer {
        RawPeer {
            stream,
            buf: BytesMut::new(),
            role,
        }
    }

    async fn send(&mut self, opcode: OpCode, fin: bool, payload: &[u8]) {
        let mut out = Vec::new();
        frames::write_frame(&mut out, self.role, opcode, fin, payload);
        self.stream.write_all(&out).await.unwrap();
    }

    /// The next frame: opcode, fin and unmasked payload. Cancel-safe (bytes read stay in
    /// `buf`), so it can run under a timeout.
    async fn frame(&mut self) -> (OpCode, bool, Vec<u8>) {
        loop {
            let mut cursor = Cursor::new(&self.buf[..]);
            if let Some((header, len)) = FrameHeader::parse(&mut cursor).unwrap() {
                let start = cursor.position() as usize;
                let end = start + len as usize;
                if self.buf.len() >= end {
                    let mut payload = self.buf[start..end].to_vec();
                    if let Some(key) = header.mask {
                        frames::apply_mask(&mut payload, key);
                    }
                    self.buf.advance(end);
                    return (header.opcode, header.is_final, payload);
                }
            }
            let read = self.stream.read_buf(&mut self.buf).await.unwrap();
            assert!(read > 0, "stream ended inside or before a frame");
        }
    }

    /// Nothing arrives while every other task runs until it waits.
    async fn assert_silent(&mut self) {
        let got = tokio::time::timeout(Duration::from_secs(1), self.frame()).await;
        assert!(got.is_err(), "unexpected frame: {got:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_frame_arriving_one_byte_per_read_is_relayed_as_one_rewritten_message() {
    let (mut client, mut backend, relay) = raw_client_and_ws_backend().await;
    let mut frame = Vec::new();
    let text = br#"{"type":"execute_agent","timestamp":"2025-09-08T16:50:01.447585"}"#;
    frames::write_frame(&mut frame, Role::Client, TEXT, true, text);
    for byte in &frame {
        client.write_all(&[*byte]).await.unwrap();
        // Time moves only once the relay waits again: every byte is a read of its own.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // The default rules: the type renamed, the naive ISO timestamp to Unix seconds (UTC).
    assert_eq!(
        text_of(backend.next().await),
        r#"{"type":"start_agent","timestamp":1757350201.447585}"#
    );
    // Exactly one message: the next thing the backend sees is the close.
    let mut client = ws_client(client).await;
    let summary = close_from(&mut client, &mut backend, relay, 1000, "").await;
    assert_eq!(summary.messages, [1, 0]);
}

#[tokio::test(start_paused = true)]
async fn buffers_grown_for_a_large_message_are_released_once_it_is_relayed() {
    let ctx = context("");
    // The largest message allowed, one frame each way.
    let size = ctx.max_message_bytes;
    let binary: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let text = "x".repeat(size);
    let (mut conn, client, backend) = conn(&ctx);
    // Each direction in turn: the relay reads nothing from a leg while writing to it.
    let client_side = tokio::spawn({
        let text = text.clone();
        async move {
            let mut ws = ws_client(client).await;
            let got = ws.next().await;
            ws.send(Message::text(text)).await.unwrap();
            (got, ws) // Kept open: an ended stream would change the relay's state.
        }
    });
    let backend_side = tokio::spawn({
        let binary = binary.clone();
        async move {
            let mut ws = ws_backend(backend).await;
            ws.send(Message::binary(binary)).await.unwrap();
            (ws.next().await, ws)
        }
    });
    serve_until_idle(&mut conn, &ctx).await;
    let (to_client, _client) = client_side.await.unwrap();
    let (to_backend, _backend) = backend_side.await.unwrap();
    match to_client {
        Some(Ok(Message::Binary(got))) => assert!(got == binary, "binary differs"),
        other => panic!(
            "expected the binary message, got {:?}",
            other.map(|m| m.map(|m| m.len()))
        ),
    }
    assert!(text_of(to_backend) == text, "text differs");

    assert_holds_no_buffer(&conn);
}

/// A quiet connection holds no read or write buffer: they are lent only while bytes move.
fn assert_holds_no_buffer<C, U>(conn: &Conn<C, U>) {
    for leg in [Leg::Client, Leg::Backend] {
        let incoming = &conn.incoming[leg as usize];
        assert!(!incoming.grown, "{leg:?}: read buffer still marked grown");
        assert_eq!(incoming.buf.capacity(), 0, "{leg:?}: read buffer kept");
        let out = &conn.legs.states[leg as usize].out;
        assert_eq!(out.capacity(), 0, "{leg:?}: write buffer kept");
    }
}

#[tokio::test(start_paused = true)]
async fn a_quiet_connection_holds_no_buffer_after_a_conversation() {
    let ctx = context("");
    let (mut conn, client, backend) = conn(&ctx);
    let client_side = tokio::spawn(async move {
        let mut ws = ws_client(client).await;
        for i in 0..20 {
            ws.send(Message::text(format!(r#"{{"type":"chat","n":{i}}}"#)))
                .await
                .unwrap();
            ws.next().await.unwrap().unwrap();
        }
        ws
    });
    let backend_side = tokio::spawn(async move {
        let mut ws = ws_backend(backend).await;
        for _ in 0..20 {
            let got = ws.next().await.unwrap().unwrap();
            ws.send(got).await.unwrap();
        }
        ws
    });
    serve_until_idle(&mut conn, &ctx).await;
    let (_client, _backend) = (client_side.await.unwrap(), backend_side.await.unwrap());
    assert_eq!(conn.legs.summary.messages, [20, 20]);
    assert_holds_no_buffer(&conn);
}

#[tokio::test(start_paused = true)]
async fn a_header_claiming_a_large_frame_grows_the_read_buffer_only_with_what_arrived() {
    let ctx = context("");
    let (mut conn, mut client, _backend) = conn(&ctx);
    let claimed = 1_000_000;
    let header = FrameHeader {
        is_final: true,
        opcode: BINARY,
        mask: Some([1, 2, 3, 4]),
        ..FrameHeader::default()
    };
    let mut bytes = Vec::new();
    header.format(claimed as u64, &mut bytes).unwrap();
    let header_len = bytes.len();
    bytes.extend_from_slice(&[0; 10]);
    client.write_all(&bytes).await.unwrap();
    serve_until_idle(&mut conn, &ctx).await;

    let incoming = &conn.incoming[Leg::Client as usize];
    assert_eq!(incoming.buf.len(), bytes.len(), "the partial frame waits");
    assert_eq!(incoming.need, header_len + claimed, "the codec's NeedMore");
    assert!(
        incoming.buf.capacity() <= 2 * KEEP_BYTES,
        "{} bytes arrived, {} reserved",
        bytes.len(),
        incoming.buf.capacity()
    );
}

/// One side closes with `code`; the summary must name it and the closer as initiator.
async fn close_is_forwarded_and_answered(backend_closes: bool, code: u16, reason: &str) {
    let Running {
        client,
        backend,
        relay,
    } = start(context(""));
    let (mut client, mut backend) = (ws_client(client).await, ws_backend(backend).await);
    let (closer, other, initiator) = if backend_closes {
        (&mut backend, &mut client, "backend")
    } else {
        (&mut client, &mut backend, "client")
    };
    let summary = close_from(closer, other, relay, code, reason).await;
    assert_eq!(summary.close_code, Some(code));
    assert_eq!(summary.close_reason, reason);
    assert_eq!(summary.initiator, Some(initiator));
}

#[tokio::test(start_paused = true)]
async fn a_close_from_the_client_is_forwarded_and_answered() {
    close_is_forwarded_and_answered(false, 1000, "bye").await;
}

#[tokio::test(start_paused = true)]
async fn a_close_from_the_backend_is_forwarded_and_answered() {
    close_is_forwarded_and_answered(true, 4000, "done").await;
}

#[tokio::test(start_paused = true)]
async fn a_reply_to_a_rejected_message_waits_for_the_end_of_a_fragmented_binary_message() {
    let Running {
        client, backend, ..
    } = start(context(REJECTING_RULES));
    let mut client = RawPeer::new(client, Role::Client);
    let mut backend = RawPeer::new(backend, Role::Server);
    backend.send(BINARY, false, b"first half").await;
    assert_eq!(
        client.frame().await,
        (BINARY, false, b"first half".to_vec())
    );

    let rejected = br#"{"type":"chat","timestamp":"yesterday","message_id":"m-1"}"#;
    client.send(TEXT, true, rejected).await;
    // The reply may not go inside the open binary message, and the rejected message goes
    // nowhere else.
    client.assert_silent().await;
    backend.assert_silent().await;

    backend.send(CONTINUE, true, b"second half").await;
    assert_eq!(
        client.frame().await,
        (CONTINUE, true, b"second half".to_vec())
    );
    let (opcode, fin, reply) = client.frame().await;
    assert_eq!((opcode, fin), (TEXT, true));
    let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply["type"], "error_message");
    assert_eq!(reply["error_code"], "INVALID_TIMESTAMP");
    assert_eq!(reply["details"]["message_id"], "m-1");
}

#[tokio::test(start_paused = true)]
async fn a_client_breaking_the_protocol_gets_1002_and_the_backend_1001() {
    let (mut client, mut backend, relay) = raw_client_and_ws_backend().await;
    // A client must mask its frames.
    let mut unmasked = Vec::new();
    frames::write_frame(&mut unmasked, Role::Server, TEXT, true, b"{}");
    client.write_all(&unmasked).await.unwrap();

    let mut client = ws_client(client).await;
    assert_eq!(
        close_of(client.next().await),
        (1002, "protocol error".into())
    );
    // The frame is not relayed: the backend's first message is the close.
    assert_eq!(close_of(backend.next().await), (1001, "client gone".into()));
    assert!(backend.next().await.is_none(), "the relay did not end");
    let summary = relay.await.unwrap();
    assert_eq!(summary.close_code, Some(1002));
    assert_eq!(summary.initiator, Some("proxy"));
    assert_eq!(summary.messages, [0, 0]);
}

/// A client message and the backend's answer, so the relay loop has gone round with traffic
/// and then waits, with its timer and shutdown watch already polled once.
async fn exchange_one_message(client: &mut Ws, backend: &mut Ws) {
    let hello = r#"{"type":"chat","text":"hello"}"#;
    client.send(Message::text(hello)).await.unwrap();
    assert_eq!(text_of(backend.next().await), hello);
    backend.send(Message::text("answer")).await.unwrap();
    assert_eq!(text_of(client.next().await), "answer");
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_while_the_relay_waits_after_traffic_closes_both_legs_with_1001() {
    let (shutdown, watch) = watch::channel(false);
    let mut ctx = context("");
    ctx.shutdown = watch;
    let Running {
        client,
        backend,
        relay,
    } = start(ctx);
    let (mut client, mut backend) = (ws_client(client).await, ws_backend(backend).await);
    exchange_one_message(&mut client, &mut backend).await;
    // Paused time moves only once every task waits: the relay is idle when the signal comes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    shutdown.send_replace(true);

    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        (
            close_of(client.next().await),
            close_of(backend.next().await),
        )
    })
    .await
    .expect("no close after the shutdown signal");
    let going_away = (1001, "going away".to_string());
    assert_eq!(closed, (going_away.clone(), going_away));
    // Both answer the close (tungstenite does so when polled); then the relay ends.
    let (client_end, backend_end) = tokio::join!(client.next(), backend.next());
    assert!(
        client_end.is_none() && backend_end.is_none(),
        "{client_end:?} {backend_end:?}"
    );
    assert_eq!(relay.await.unwrap().close_code, Some(1001));
}

#[tokio::test(start_paused = true)]
async fn a_leg_quiet_after_traffic_gets_a_keepalive_ping() {
    let mut ctx = context("");
    ctx.keepalive.ping_interval = Duration::from_secs(10);
    let Running {
        client, backend, ..
    } = start(ctx);
    let (mut client, mut backend) = (ws_client(client).await, ws_backend(backend).await);
    exchange_one_message(&mut client, &mut backend).await;

    let next = tokio::time::timeout(Duration::from_secs(30), client.next()).await;
    assert!(
        matches!(next, Ok(Some(Ok(Message::Ping(_))))),
        "expected a ping within 30 s of quiet, got {next:?}"
    );
}

#[tokio::test]
async fn the_relay_works_over_pingoras_stream_when_the_socket_cannot_be_taken() {
    // Real sockets, real time: bounded, so a lost write fails the test instead of hanging it.
    let relayed = async {
        // The fallback of `proxy::websocket` (a descriptor that cannot be duplicated): the client
        // leg stays pingora's `Stream`, over a real TCP connection. Built outside a listener it
        // has no write buffer (only pingora's listener can size one), so this checks the relay
        // over pingora's stream type, not that writes are flushed (the relay always flushes).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let connect = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (accepted, connected) = tokio::join!(listener.accept(), connect);
        let pingora_leg: pingora::protocols::Stream = Box::new(
            pingora::protocols::l4::stream::Stream::from(accepted.unwrap().0),
        );
        let (backend, relay_backend) = duplex(PIPE_BYTES);
        let relay = tokio::spawn(async move {
            run(
                pingora_leg,
                relay_backend,
                Leftovers::default(),
                context(""),
            )
            .await
        });
        let mut client =
            WebSocketStream::from_raw_socket(connected.unwrap(), Role::Client, None).await;
        let mut backend = ws_backend(backend).await;

        let incident = r#"{"type":"execute_agent","timestamp":"2025-09-08T16:50:01.447585"}"#;
        client.send(Message::text(incident)).await.unwrap();
        assert_eq!(
            text_of(backend.next().await),
            r#"{"type":"start_agent","timestamp":1757350201.447585}"#
        );
        backend.send(Message::text("ok")).await.unwrap();
        assert_eq!(text_of(client.next().await), "ok");
        let summary = close_from(&mut client, &mut backend, relay, 1000, "done").await;
        assert_eq!(summary.close_code, Some(1000));
        assert_eq!(summary.messages, [1, 1]);
    };
    tokio::time::timeout(Duration::from_secs(10), relayed)
        .await
        .expect("the relay over pingora's stream stalled");
}
