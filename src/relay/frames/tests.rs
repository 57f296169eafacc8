use super::*;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;

const TEXT: OpCode = OpCode::Data(Data::Text);
const BINARY: OpCode = OpCode::Data(Data::Binary);
const CONTINUE: OpCode = OpCode::Data(Data::Continue);
const PING: OpCode = OpCode::Control(Control::Ping);

/// A frame as a client sends it (masked), for the client leg's codec.
fn from_client(opcode: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_frame(&mut out, Role::Client, opcode, fin, payload);
    out
}

fn server_codec() -> Codec {
    Codec::new(Role::Server, 1000, false)
}

/// Parses one whole frame and returns its event, owned.
fn parse_one(codec: &mut Codec, bytes: &[u8]) -> Result<Option<String>, FrameError> {
    let mut buf = bytes.to_vec();
    match codec.parse(&mut buf)? {
        Parsed::NeedMore(n) => panic!("needs {n} bytes, has {}", bytes.len()),
        Parsed::Frame { consumed, event } => {
            assert_eq!(consumed, bytes.len());
            Ok(event.map(|e| format!("{e:?}")))
        }
    }
}

fn text_event(text: &str) -> Option<String> {
    Some(format!("{:?}", Event::Text(text)))
}

#[test]
fn masking_matches_tungstenite() {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    for len in [0, 1, 3, 4, 5, 7, 8, 9, 13, 15, 16, 125, 126, 1000] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let mut frame = Frame::message(payload.clone(), TEXT, true);
        frame.header_mut().mask = Some(key);
        let mut expected = Vec::new();
        frame.format(&mut expected).unwrap();
        let mut ours = payload.clone();
        apply_mask(&mut ours, key);
        assert_eq!(&expected[expected.len() - len..], &ours[..], "length {len}");
    }
}

#[test]
fn a_masked_frame_round_trips_and_is_unmasked_in_place() {
    let bytes = from_client(TEXT, true, b"{\"type\":\"ping\"}");
    assert_ne!(&bytes[6..], b"{\"type\":\"ping\"}", "masked on the wire");
    let mut codec = server_codec();
    assert_eq!(
        parse_one(&mut codec, &bytes),
        Ok(text_event("{\"type\":\"ping\"}"))
    );
    // The server side writes unmasked frames, which the backend leg's codec accepts.
    let mut out = Vec::new();
    write_frame(&mut out, Role::Server, TEXT, true, b"hi");
    assert_eq!(out, [0x81, 2, b'h', b'i']);
    assert_eq!(
        parse_one(&mut Codec::new(Role::Client, 10, false), &out),
        Ok(text_event("hi"))
    );
}

#[test]
fn masking_is_required_from_clients_and_refused_from_servers() {
    let unmasked = [0x81, 2, b'h', b'i'];
    assert_eq!(
        parse_one(&mut server_codec(), &unmasked),
        Err(FrameError::Protocol("unmasked client frame"))
    );
    let masked = from_client(TEXT, true, b"hi");
    assert_eq!(
        parse_one(&mut Codec::new(Role::Client, 10, false), &masked),
        Err(FrameError::Protocol("masked server frame"))
    );
}

#[test]
fn partial_frames_say_how_much_they_need() {
    let bytes = from_client(BINARY, true, &[7; 300]);
    let mut codec = server_codec();
    let mut head = bytes[..1].to_vec();
    assert_eq!(codec.parse(&mut head), Ok(Parsed::NeedMore(2)));
    let mut part = bytes[..100].to_vec();
    assert_eq!(codec.parse(&mut part), Ok(Parsed::NeedMore(bytes.len())));
    let mut whole = bytes.clone();
    whole.extend_from_slice(&from_client(PING, true, b"x"));
    match codec.parse(&mut whole) {
        Ok(Parsed::Frame { consumed, event }) => {
            assert_eq!(consumed, bytes.len(), "only the first frame");
            assert_eq!(
                event,
                Some(Event::Binary {
                    payload: &[7; 300],
                    first: true,
                    fin: true
                })
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn fragmented_text_is_assembled_across_a_ping_and_a_split_character() {
    let text = "héllo wörld";
    let bytes = text.as_bytes();
    let mut codec = server_codec();
    // Split inside the two-byte 'é'.
    assert_eq!(
        parse_one(&mut codec, &from_client(TEXT, false, &bytes[..2])),
        Ok(None)
    );
    assert_eq!(
        parse_one(&mut codec, &from_client(PING, true, b"p")),
        Ok(Some(format!("{:?}", Event::Ping(b"p"))))
    );
    assert_eq!(
        parse_one(&mut codec, &from_client(CONTINUE, false, &bytes[2..5])),
        Ok(None)
    );
    assert_eq!(
        parse_one(&mut codec, &from_client(CONTINUE, true, &bytes[5..])),
        Ok(text_event(text))
    );
    // The codec is ready for the next message.
    assert_eq!(
        parse_one(&mut codec, &from_client(TEXT, true, b"next")),
        Ok(text_event("next"))
    );
}

#[test]
fn invalid_utf8_fails_at_the_fragment_that_has_it() {
    let mut codec = server_codec();
    assert_eq!(
        parse_one(&mut codec, &from_client(TEXT, false, b"ok \xff")),
        Err(FrameError::Utf8)
    );
    let mut codec = server_codec();
    assert_eq!(
        parse_one(&mut codec, &from_client(TEXT, false, b"ok")),
        Ok(None)
    );
    assert_eq!(
        parse_one(&mut codec, &from_client(CONTINUE, false, b"\xc3\x28")),
        Err(FrameError::Utf8)
    );
    // A message may not end inside a character.
    let mut codec = server_codec();
    assert_eq!(
        parse_one(&mut codec, &from_client(TEXT, false, b"\xc3")),
        Ok(None)
    );
    assert_eq!(
        parse_one(&mut codec, &from_client(CONTINUE, true, b"")),
        Err(FrameError::Utf8)
    );
    assert_eq!(
        parse_one(
            &mut server_codec(),
            &from_client(TEXT, true, b"\xed\xa0\x80")
        ),
        Err(FrameError::Utf8),
        "surrogates are not UTF-8"
    );
}

#[test]
fn fragmentation_order_is_enforced() {
    assert_eq!(
        parse_one(&mut server_codec(), &from_client(CONTINUE, true, b"x")),
        Err(FrameError::Protocol("continuation without a message"))
    );
    for first in [TEXT, BINARY] {
        for second in [TEXT, BINARY] {
            let mut codec = server_codec();
            assert!(parse_one(&mut codec, &from_client(first, false, b"a")).is_ok());
            assert_eq!(
                parse_one(&mut codec, &from_client(second, true, b"b")),
                Err(FrameError::Protocol("new message inside a fragmented one")),
                "{first:?} then {second:?}"
            );
        }
    }
}

#[test]
fn binary_fragments_are_passed_on_one_by_one() {
    let mut codec = server_codec();
    let events: Vec<_> = [
        from_client(BINARY, false, b"ab"),
        from_client(CONTINUE, false, b"cd"),
        from_client(CONTINUE, true, b"e"),
    ]
    .iter()
    .map(|f| parse_one(&mut codec, f).unwrap().unwrap())
    .collect();
    assert_eq!(
        events,
        [
            format!(
                "{:?}",
                Event::Binary {
                    payload: b"ab",
                    first: true,
                    fin: false
                }
            ),
            format!(
                "{:?}",
                Event::Binary {
                    payload: b"cd",
                    first: false,
                    fin: false
                }
            ),
            format!(
                "{:?}",
                Event::Binary {
                    payload: b"e",
                    first: false,
                    fin: true
                }
            ),
        ]
    );
}

#[test]
fn control_frames_must_be_short_and_whole() {
    assert_eq!(
        parse_one(&mut server_codec(), &from_client(PING, false, b"x")),
        Err(FrameError::Protocol("fragmented control frame"))
    );
    assert_eq!(
        parse_one(&mut server_codec(), &from_client(PING, true, &[0; 126])),
        Err(FrameError::Protocol("control frame too long"))
    );
    assert!(parse_one(&mut server_codec(), &from_client(PING, true, &[0; 125])).is_ok());
}

#[test]
fn the_size_limit_holds_for_frames_and_for_fragmented_messages() {
    let mut codec = Codec::new(Role::Server, 10, false);
    assert!(parse_one(&mut codec, &from_client(TEXT, true, &[b'a'; 10])).is_ok());
    // Refused from the header alone, before the payload arrives.
    let big = from_client(BINARY, true, &[0; 11]);
    assert_eq!(
        codec.parse(&mut big[..6].to_vec()),
        Err(FrameError::TooBig(10))
    );
    for first in [TEXT, BINARY] {
        let mut codec = Codec::new(Role::Server, 10, false);
        assert!(parse_one(&mut codec, &from_client(first, false, &[b'a'; 6])).is_ok());
        // The continuation's header alone tells it goes over.
        let next = from_client(CONTINUE, true, &[b'a'; 5]);
        assert_eq!(
            codec.parse(&mut next[..6].to_vec()),
            Err(FrameError::TooBig(10))
        );
    }
}

/// A client frame header (masked, key 0) with a 64-bit length field.
fn header_with_64_bit_length(len: u64) -> Vec<u8> {
    let mut bytes = vec![0x82, 0x80 | 127];
    bytes.extend_from_slice(&len.to_be_bytes());
    bytes.extend_from_slice(&[0; 4]);
    bytes
}

#[test]
fn the_three_length_forms_parse_and_absurd_lengths_are_refused() {
    let mut codec = Codec::new(Role::Server, 100_000, false);
    for len in [125, 126, 65_535, 65_536, 70_000] {
        let frame = from_client(BINARY, true, &vec![1; len]);
        let header = frame.len() - len;
        assert_eq!(
            header,
            2 + 4 + [0, 2, 8][(len > 125) as usize + (len > 65_535) as usize]
        );
        // Cut inside the extended length: not an error, just more to read.
        if header > 6 {
            assert!(matches!(
                codec.parse(&mut frame[..3].to_vec()),
                Ok(Parsed::NeedMore(_))
            ));
        }
        assert!(parse_one(&mut codec, &frame).is_ok(), "length {len}");
    }
    assert_eq!(
        codec.parse(&mut header_with_64_bit_length(u64::MAX >> 1)),
        Err(FrameError::TooBig(100_000))
    );
    assert_eq!(
        codec.parse(&mut header_with_64_bit_length(u64::MAX)),
        Err(FrameError::Protocol("payload length with its top bit set"))
    );
}

#[test]
fn control_frames_may_come_between_binary_fragments() {
    let mut codec = server_codec();
    assert!(parse_one(&mut codec, &from_client(BINARY, false, b"ab")).is_ok());
    assert_eq!(
        parse_one(&mut codec, &from_client(PING, true, b"p")),
        Ok(Some(format!("{:?}", Event::Ping(b"p"))))
    );
    assert_eq!(
        parse_one(
            &mut codec,
            &from_client(OpCode::Control(Control::Close), true, b"")
        ),
        Ok(Some(format!("{:?}", Event::Close(None))))
    );
    assert_eq!(
        parse_one(&mut codec, &from_client(CONTINUE, true, b"c")),
        Ok(Some(format!(
            "{:?}",
            Event::Binary {
                payload: b"c",
                first: false,
                fin: true
            }
        )))
    );
}

#[test]
fn reserved_bits_and_opcodes_are_refused() {
    let mut rsv = from_client(TEXT, true, b"x");
    rsv[0] |= 0x40;
    assert_eq!(
        parse_one(&mut server_codec(), &rsv),
        Err(FrameError::Protocol("reserved bits set"))
    );
    for opcode in [3u8, 7, 11, 15] {
        let mut frame = from_client(TEXT, true, b"x");
        frame[0] = 0x80 | opcode;
        assert_eq!(
            parse_one(&mut server_codec(), &frame),
            Err(FrameError::Protocol("reserved opcode")),
            "opcode {opcode}"
        );
    }
}

#[test]
fn close_frames_carry_a_valid_code_and_utf8_reason() {
    let close = |payload: &[u8]| {
        parse_one(
            &mut server_codec(),
            &from_client(OpCode::Control(Control::Close), true, payload),
        )
    };
    assert_eq!(close(b""), Ok(Some(format!("{:?}", Event::Close(None)))));
    assert_eq!(
        close(b"\x03\xe8bye"),
        Ok(Some(format!("{:?}", Event::Close(Some((1000, "bye"))))))
    );
    assert_eq!(
        close(b"\x0b\xb8"),
        Ok(Some(format!("{:?}", Event::Close(Some((3000, ""))))))
    );
    assert_eq!(
        close(b"\x03"),
        Err(FrameError::Protocol("one-byte close payload"))
    );
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
        assert_eq!(
            close(&code.to_be_bytes()),
            Err(FrameError::Protocol("invalid close code")),
            "{code}"
        );
    }
    assert_eq!(close(b"\x03\xe8\xff"), Err(FrameError::Utf8));
    // What we write parses back.
    let mut out = Vec::new();
    write_close(&mut out, Role::Client, Some((1011, "backend error")));
    assert_eq!(
        parse_one(&mut server_codec(), &out),
        Ok(Some(format!(
            "{:?}",
            Event::Close(Some((1011, "backend error")))
        )))
    );
}

#[test]
fn each_error_has_its_close_code() {
    assert_eq!(FrameError::Protocol("x").close_code(), 1002);
    assert_eq!(FrameError::TooBig(1).close_code(), 1009);
    assert_eq!(FrameError::Utf8.close_code(), 1007);
}

#[test]
fn rsv1_marks_a_compressed_message_only_where_negotiated() {
    let compressed = |opcode, fin, payload: &[u8]| {
        let mut out = Vec::new();
        write_frame_rsv1(&mut out, Role::Client, opcode, fin, true, payload);
        out
    };
    let reserved = Err(FrameError::Protocol("reserved bits set"));
    // Without permessage-deflate, RSV1 is a protocol error.
    assert_eq!(
        parse_one(&mut server_codec(), &compressed(TEXT, true, b"x")),
        reserved
    );
    let mut codec = Codec::new(Role::Server, 1000, true);
    let event = |payload: &'static [u8], text, first, fin| {
        Ok(Some(format!(
            "{:?}",
            Event::Compressed {
                payload,
                text,
                first,
                fin
            }
        )))
    };
    assert_eq!(
        parse_one(&mut codec, &compressed(TEXT, true, b"ab")),
        event(b"ab", true, true, true)
    );
    // A fragmented one: RSV1 on the first frame only, control frames may come between.
    assert_eq!(
        parse_one(&mut codec, &compressed(BINARY, false, b"a")),
        event(b"a", false, true, false)
    );
    assert_eq!(
        parse_one(&mut codec, &from_client(PING, true, b"p")),
        Ok(Some(format!("{:?}", Event::Ping(b"p"))))
    );
    assert_eq!(
        parse_one(&mut codec, &from_client(CONTINUE, true, b"b")),
        event(b"b", false, false, true)
    );
    assert_eq!(
        parse_one(&mut codec, &compressed(PING, true, b"")),
        reserved
    );
    let mut codec = Codec::new(Role::Server, 1000, true);
    parse_one(&mut codec, &compressed(TEXT, false, b"a")).unwrap();
    assert_eq!(
        parse_one(&mut codec, &compressed(CONTINUE, true, b"b")),
        reserved
    );
    // Uncompressed messages still work on a compressed leg.
    let mut codec = Codec::new(Role::Server, 1000, true);
    assert_eq!(
        parse_one(&mut codec, &from_client(TEXT, true, b"hi")),
        Ok(text_event("hi"))
    );
}
