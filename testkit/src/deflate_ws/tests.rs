use super::*;
use tokio::io::duplex;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use wsnorm::relay::deflate::Window;

fn request() -> Request {
    let mut r = "ws://127.0.0.1/ws".into_client_request().unwrap();
    r.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("agent_chat"),
    );
    r
}

fn window(bits: u8, no_context_takeover: bool) -> Window {
    Window {
        bits,
        no_context_takeover,
    }
}

#[test]
fn answers_are_read_strictly() {
    let plain = read_answer(Some("permessage-deflate")).unwrap();
    assert_eq!(
        (plain.send, plain.receive),
        (window(15, false), window(15, false))
    );
    let bounded = read_answer(Some(
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; \
         client_max_window_bits=12",
    ))
    .unwrap();
    assert_eq!(
        (bounded.send, bounded.receive),
        (window(12, false), window(10, true))
    );
    for (answer, says) in [
        ("x-webkit-deflate-frame", "other than one valid"),
        (
            "permessage-deflate, permessage-deflate",
            "other than one valid",
        ),
        ("permessage-deflate, foo", "other than one valid"),
        (
            "permessage-deflate; client_max_window_bits",
            "without a value",
        ),
        (
            "permessage-deflate; server_max_window_bits=16",
            "other than one valid",
        ),
        (
            "permessage-deflate; server_max_window_bits=09",
            "other than one valid",
        ),
        ("permessage-deflate; foo", "other than one valid"),
    ] {
        let e = read_answer(Some(answer)).unwrap_err().to_string();
        assert!(e.contains(says), "{answer}: {e}");
    }
    let e = read_answer(None).unwrap_err().to_string();
    assert!(e.contains("not negotiated"), "{e}");
}

#[test]
fn the_echo_answers_what_it_can_honour() {
    let answer = |offer: &str| {
        echo_answer(offer).map(|(answer, windows)| (answer, windows.send, windows.receive))
    };
    // Chrome's and wsnorm's default offers.
    assert_eq!(
        answer(CLIENT_OFFER),
        Some((
            "permessage-deflate".into(),
            window(15, false),
            window(15, false)
        ))
    );
    // Everything asked is honoured: wsnorm asking for no context takeover, bounded windows.
    assert_eq!(
        answer(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=12"
        ),
        Some((
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=12"
                .into(),
            window(10, true),
            window(12, true)
        ))
    );
    // The first offer it can honour; invalid ones are skipped.
    for (offer, expected) in [
        (
            "foo, permessage-deflate; bar, permessage-deflate; client_no_context_takeover",
            Some("permessage-deflate; client_no_context_takeover"),
        ),
        (
            "permessage-deflate; server_max_window_bits=09, permessage-deflate",
            Some("permessage-deflate"),
        ),
        ("x-webkit-deflate-frame", None),
    ] {
        assert_eq!(
            echo_answer(offer).map(|(a, _)| a).as_deref(),
            expected,
            "{offer}"
        );
    }
}

#[tokio::test]
async fn a_client_and_the_echo_round_trip_compressed_messages() {
    let (client_io, server_io) = duplex(64 * 1024);
    let server = tokio::spawn(echo(server_io, 1 << 20, Duration::from_secs(5)));
    let mut ws = DeflateWs::handshake(request_without_protocol(), client_io, CLIENT_OFFER, 1 << 20)
        .await
        .unwrap();
    assert_eq!(ws.negotiated.send, window(15, false));
    let long = format!("{{\"rows\":\"{}\"}}", "abc".repeat(5000));
    let messages = [
        "short",
        long.as_str(),
        long.as_str(),
        "{\"type\":\"agent_thinking\",\"token\":\"x\"}",
    ];
    for m in messages {
        ws.feed(m).unwrap();
    }
    ws.flush().await.unwrap();
    for m in messages {
        match ws.next_data().await.unwrap() {
            Message::Text(t) => assert_eq!(t.as_str(), m),
            other => panic!("{other:?}"),
        }
    }
    ws.close().await.unwrap();
    server.await.unwrap().unwrap();
}

fn request_without_protocol() -> Request {
    "ws://127.0.0.1/ws".into_client_request().unwrap()
}

/// A server written by hand: the 101 `answer`, then `frames`.
async fn fake_server(
    answer: &'static str,
    frames: &'static [u8],
) -> Result<DeflateWs<tokio::io::DuplexStream>> {
    let (client_io, mut server_io) = duplex(64 * 1024);
    tokio::spawn(async move {
        let mut buf = Vec::new();
        let len = read_head(&mut server_io, &mut buf).await.unwrap();
        let head = String::from_utf8_lossy(&buf[..len]).to_string();
        let offer = format!("sec-websocket-extensions: {CLIENT_OFFER}\r\n");
        assert!(head.to_ascii_lowercase().contains(&offer), "{head}");
        let key = head
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap();
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: agent_chat\r\n{answer}\r\n",
            derive_accept_key(key.as_bytes())
        );
        server_io.write_all(response.as_bytes()).await.unwrap();
        server_io.write_all(frames).await.unwrap();
        // Hold the stream open until the client is done.
        let mut sink = Vec::new();
        let _ = server_io.read_to_end(&mut sink).await;
    });
    DeflateWs::handshake(request(), client_io, CLIENT_OFFER, 1 << 20).await
}

#[tokio::test]
async fn a_101_without_permessage_deflate_fails_the_handshake() {
    let e = fake_server("", b"").await.err().unwrap().to_string();
    assert!(e.contains("not negotiated"), "{e}");
}

#[tokio::test]
async fn pings_and_fragments_and_uncompressed_messages_are_read() {
    // "Hello" compressed (RFC 7692 §7.2.3.1), split in two frames with a ping between them,
    // then "Hi" uncompressed, then a close.
    const FRAMES: &[u8] = &[
        0x41, 0x03, 0xf2, 0x48, 0xcd, // text, RSV1, not final
        0x89, 0x01, b'p', // ping
        0x80, 0x04, 0xc9, 0xc9, 0x07, 0x00, // continuation, final
        0x81, 0x02, b'H', b'i', // text, uncompressed
        0x88, 0x02, 0x03, 0xe8, // close 1000
    ];
    let mut ws = fake_server(
        "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n",
        FRAMES,
    )
    .await
    .unwrap();
    assert_eq!(ws.negotiated.receive, window(15, true));
    for expected in ["Hello", "Hi"] {
        match ws.next_data().await.unwrap() {
            Message::Text(t) => assert_eq!(t.as_str(), expected),
            other => panic!("{other:?}"),
        }
    }
    let e = ws.next_data().await.unwrap_err().to_string();
    assert_eq!(e, "peer closed: code 1000 ");
}
