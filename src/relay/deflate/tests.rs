use super::*;

fn window(bits: u8, no_context_takeover: bool) -> Window {
    Window {
        bits,
        no_context_takeover,
    }
}

fn inflate_all(inflater: &mut Inflater, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    inflater.inflate(data, true, &mut out, 1 << 20).unwrap();
    out
}

fn deflate_all(deflater: &mut Deflater, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    deflater.compress(data, true, &mut out).unwrap();
    out
}

#[test]
fn the_rfc_examples_inflate() {
    // RFC 7692 §7.2.3.1 to §7.2.3.4.
    let mut inflater = Inflater::new(window(15, false));
    let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    assert_eq!(inflate_all(&mut inflater, &hello), b"Hello");
    // The same message again, referring to the first one (context takeover).
    assert_eq!(
        inflate_all(&mut inflater, &[0xf2, 0x00, 0x11, 0x00, 0x00]),
        b"Hello"
    );
    let mut fresh = Inflater::new(window(15, true));
    let stored = [
        0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
    ];
    assert_eq!(inflate_all(&mut fresh, &stored), b"Hello");
    // BFINAL set: the stream ends inside the message.
    let bfinal = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
    assert_eq!(inflate_all(&mut fresh, &bfinal), b"Hello");
    assert_eq!(inflate_all(&mut fresh, &hello), b"Hello");
}

#[test]
fn a_message_split_across_frames_inflates_whole() {
    let mut inflater = Inflater::new(window(15, false));
    let mut out = Vec::new();
    inflater
        .inflate(&[0xf2, 0x48, 0xcd], false, &mut out, 100)
        .unwrap();
    inflater
        .inflate(&[0xc9, 0xc9, 0x07, 0x00], true, &mut out, 100)
        .unwrap();
    assert_eq!(out, b"Hello");
}

#[test]
fn hello_compresses_as_the_rfc_shows() {
    let mut deflater = Deflater::new(window(15, false), 6);
    assert_eq!(
        deflate_all(&mut deflater, b"Hello"),
        [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]
    );
}

#[test]
fn every_window_and_takeover_round_trips() {
    let messages: Vec<Vec<u8>> = (0..20)
        .map(|i| {
            format!(
                r#"{{"type":"token","data":{{"text":"part {i} of the answer","seq":{i}}},"timestamp":1757350201.447585}}"#
            )
            .repeat(1 + i % 7)
            .into_bytes()
        })
        .chain([Vec::new(), (0..=255u8).cycle().take(70_000).collect()])
        .collect();
    for bits in 8..=15 {
        for no_context_takeover in [false, true] {
            let w = window(bits, no_context_takeover);
            let mut deflater = Deflater::new(w, 6);
            let mut inflater = Inflater::new(w);
            for message in &messages {
                let compressed = deflate_all(&mut deflater, message);
                assert_eq!(
                    &inflate_all(&mut inflater, &compressed),
                    message,
                    "bits {bits}, no_context_takeover {no_context_takeover}"
                );
                if no_context_takeover {
                    // Each message stands alone: a fresh inflater reads it.
                    let mut fresh = Inflater::new(window(15, true));
                    assert_eq!(&inflate_all(&mut fresh, &compressed), message);
                }
            }
        }
    }
}

/// A quiet leg's deflater is freed; what it sends next still inflates on a peer that kept
/// its context, before and after.
#[test]
fn a_released_deflater_starts_afresh_and_its_peer_still_reads_it() {
    let messages: [&[u8]; 3] = [
        br#"{"type":"agent_thinking","data":{"token":"The p99"}}"#,
        br#"{"type":"agent_thinking","data":{"token":" rose after"}}"#,
        br#"{"type":"agent_thinking","data":{"token":" the deploy"}}"#,
    ];
    let mut deflater = Deflater::new(window(15, false), 7);
    let mut inflater = Inflater::new(window(15, false));
    let first = deflate_all(&mut deflater, messages[0]);
    assert!(
        deflater.stream.is_some(),
        "a stream is kept for context takeover"
    );
    assert_eq!(inflate_all(&mut inflater, &first), messages[0]);
    deflater.release();
    assert!(deflater.stream.is_none(), "released: its ~260 KiB freed");
    for message in &messages[1..] {
        let sent = deflate_all(&mut deflater, message);
        assert_eq!(inflate_all(&mut inflater, &sent), *message);
    }
}

#[test]
fn context_takeover_makes_repeated_messages_small() {
    let message =
        br#"{"type":"agent_response","data":{"content":"hello there"},"timestamp":1757350201.5}"#;
    let mut with = Deflater::new(window(15, false), 6);
    let mut without = Deflater::new(window(15, true), 6);
    deflate_all(&mut with, message);
    let second = deflate_all(&mut with, message);
    let alone = deflate_all(&mut without, message);
    assert!(
        second.len() < alone.len() / 3,
        "{} vs {}",
        second.len(),
        alone.len()
    );
}

#[test]
fn a_fragmented_message_compresses_into_one_stream() {
    let mut deflater = Deflater::new(window(15, false), 6);
    let text = b"abcabcabc".repeat(1000);
    let mut out = Vec::new();
    for (i, part) in text.chunks(1000).enumerate() {
        deflater
            .compress(part, i == text.len() / 1000 - 1, &mut out)
            .unwrap();
    }
    let mut inflater = Inflater::new(window(15, false));
    assert_eq!(inflate_all(&mut inflater, &out), text);
}

#[test]
fn a_decompression_bomb_stops_at_the_limit() {
    let mut deflater = Deflater::new(window(15, true), 9);
    let bomb = deflate_all(&mut deflater, &vec![0u8; 50 << 20]);
    assert!(bomb.len() < 100_000, "{}", bomb.len());
    let limit = 1 << 20;
    let mut inflater = Inflater::new(window(15, true));
    let mut out = Vec::new();
    assert_eq!(
        inflater.inflate(&bomb, true, &mut out, limit),
        Err(InflateError::TooBig(limit))
    );
    assert!(out.capacity() <= limit + 1, "{}", out.capacity());
    // Exactly the limit is fine.
    let exact = deflate_all(&mut deflater, &vec![7u8; limit]);
    let mut out = Vec::new();
    Inflater::new(window(15, true))
        .inflate(&exact, true, &mut out, limit)
        .unwrap();
    assert_eq!(out.len(), limit);
}

#[test]
fn garbage_is_invalid_deflate_data() {
    let mut inflater = Inflater::new(window(15, false));
    let mut out = Vec::new();
    assert!(matches!(
        inflater.inflate(&[0xff, 0xff, 0xff, 0xff], true, &mut out, 1000),
        Err(InflateError::Invalid(_))
    ));
}

#[test]
fn messages_without_context_share_the_threads_streams() {
    // Two legs' worth of deflaters and inflaters without context takeover, interleaved: each
    // message borrows a pooled stream and returns it reset, and every message still stands alone.
    let w = window(12, true);
    let (mut a, mut b) = (Deflater::new(w, 7), Deflater::new(w, 7));
    let (mut ia, mut ib) = (Inflater::new(w), Inflater::new(w));
    for i in 0..50 {
        let text = format!(r#"{{"type":"token","seq":{i},"text":"same words again"}}"#);
        let ca = deflate_all(&mut a, text.as_bytes());
        let cb = deflate_all(&mut b, text.as_bytes());
        assert_eq!(
            ca, cb,
            "the same message compresses the same from a reset stream"
        );
        assert_eq!(inflate_all(&mut ib, &ca), text.as_bytes());
        assert_eq!(inflate_all(&mut ia, &cb), text.as_bytes());
        assert!(
            a.stream.is_none() && ia.stream.is_none(),
            "no stream kept per leg"
        );
    }
    // A fragmented message gets a stream of its own until its end.
    let mut out = Vec::new();
    a.compress(b"first half, ", false, &mut out).unwrap();
    assert!(a.stream.is_some());
    a.compress(b"second half", true, &mut out).unwrap();
    assert!(a.stream.is_none());
    assert_eq!(inflate_all(&mut ia, &out), b"first half, second half");
}
