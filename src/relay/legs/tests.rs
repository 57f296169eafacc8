//! The legs' state machine on its own: events in, queued frames and the summary out. No
//! sockets; time is tokio's paused clock.

use std::time::Duration;

use super::*;
use crate::relay::frames::{Codec, Parsed};
use crate::relay::tests::context;

/// A frame as the leg's peer reads it.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    Text(String),
    Binary { payload: Vec<u8>, fin: bool },
    Ping,
    Pong,
    Close(Option<(u16, String)>),
}

fn legs() -> (Legs, RelayContext) {
    let ctx = context("");
    (Legs::new(&ctx), ctx)
}

/// Takes what is queued for `leg` and decodes it as that leg's peer would.
fn sent(legs: &mut Legs, leg: Leg) -> Vec<Got> {
    let state = &mut legs.states[leg as usize];
    let mut out = std::mem::take(&mut state.out);
    // The peer's role is the opposite of ours on that leg.
    let peer = match state.role {
        Role::Server => Role::Client,
        Role::Client => Role::Server,
    };
    let mut codec = Codec::new(peer, 1 << 20, false);
    let mut got = Vec::new();
    let mut at = 0;
    while at < out.len() {
        let Parsed::Frame { consumed, event } = codec.parse(&mut out[at..]).unwrap() else {
            panic!("a partial frame was queued");
        };
        if let Some(event) = event {
            got.push(match event {
                Event::Text(text) => Got::Text(text.to_string()),
                Event::Binary { payload, fin, .. } => Got::Binary {
                    payload: payload.to_vec(),
                    fin,
                },
                Event::Compressed { .. } => panic!("compressed on an uncompressed leg"),
                Event::Ping(_) => Got::Ping,
                Event::Pong => Got::Pong,
                Event::Close(close) => Got::Close(close.map(|(c, r)| (c, r.to_string()))),
            });
            codec.release();
        }
        at += consumed;
    }
    got
}

fn close(code: u16, reason: &str) -> Got {
    Got::Close(Some((code, reason.to_string())))
}

#[test]
fn a_close_is_answered_on_its_leg_and_forwarded_to_the_other() {
    let (mut legs, ctx) = legs();
    legs.on_event(Leg::Client, Event::Close(Some((4000, "bye"))), &ctx);
    assert_eq!(sent(&mut legs, Leg::Client), [close(4000, "bye")]);
    assert_eq!(sent(&mut legs, Leg::Backend), [close(4000, "bye")]);
    // The backend's answer completes its handshake and is not forwarded again.
    legs.on_event(Leg::Backend, Event::Close(Some((4000, "bye"))), &ctx);
    assert_eq!(sent(&mut legs, Leg::Client), []);
    assert_eq!(sent(&mut legs, Leg::Backend), []);
    assert!(legs.states.iter().all(|s| s.done));
    assert_eq!(legs.summary.close_code, Some(4000));
    assert_eq!(legs.summary.initiator, Some("client"));
}

#[test]
fn a_message_towards_a_closing_leg_is_dropped_but_counted() {
    let (mut legs, ctx) = legs();
    legs.on_event(Leg::Client, Event::Close(None), &ctx);
    sent(&mut legs, Leg::Backend);
    legs.on_event(Leg::Backend, Event::Text("{\"type\":\"late\"}"), &ctx);
    assert_eq!(sent(&mut legs, Leg::Client), [Got::Close(None)]);
    assert_eq!(legs.summary.messages, [0, 1]);
}

#[test]
fn a_peer_breaking_the_protocol_is_closed_with_its_code_and_lingered_on() {
    let (mut legs, _ctx) = legs();
    legs.on_frame_error(Leg::Client, &FrameError::Utf8);
    assert_eq!(sent(&mut legs, Leg::Client), [close(1007, "invalid UTF-8")]);
    assert_eq!(sent(&mut legs, Leg::Backend), [close(1001, "client gone")]);
    let client = &legs.states[Leg::Client as usize];
    assert!(client.done && client.linger);
    assert_eq!(legs.summary.initiator, Some("proxy"));
}

#[test]
fn a_backend_gone_without_a_close_gets_the_client_1011() {
    let (mut legs, _ctx) = legs();
    legs.on_end(Leg::Backend);
    assert_eq!(sent(&mut legs, Leg::Client), [close(1011, "backend error")]);
    assert!(!legs.states[Leg::Backend as usize].writable());
}

#[test]
fn binary_frames_are_forwarded_one_by_one_and_pings_answered_on_their_leg() {
    let (mut legs, ctx) = legs();
    let frame = |payload: &'static [u8], first, fin| Event::Binary {
        payload,
        first,
        fin,
    };
    legs.on_event(Leg::Backend, frame(b"ab", true, false), &ctx);
    legs.on_event(Leg::Backend, Event::Ping(b"p"), &ctx);
    legs.on_event(Leg::Backend, frame(b"cd", false, true), &ctx);
    let fragments = [(b"ab", false), (b"cd", true)].map(|(payload, fin)| Got::Binary {
        payload: payload.to_vec(),
        fin,
    });
    assert_eq!(sent(&mut legs, Leg::Client), fragments);
    // The pong went back to the backend; nothing else did.
    assert_eq!(sent(&mut legs, Leg::Backend), [Got::Pong]);
    assert_eq!(legs.summary.messages, [0, 1]);
}

#[tokio::test(start_paused = true)]
async fn a_quiet_leg_is_pinged_and_a_silent_one_closed_for_the_other() {
    let (mut legs, _ctx) = legs();
    let keepalive = Keepalive {
        ping_interval: Duration::from_secs(20),
        idle_timeout: Duration::from_secs(60),
    };
    legs.keepalive(keepalive);
    assert_eq!(sent(&mut legs, Leg::Client), []);
    tokio::time::advance(Duration::from_secs(20)).await;
    legs.keepalive(keepalive);
    assert_eq!(sent(&mut legs, Leg::Client), [Got::Ping]);
    assert_eq!(sent(&mut legs, Leg::Backend), [Got::Ping]);
    // The backend keeps answering; the client goes silent.
    for _ in 0..4 {
        tokio::time::advance(Duration::from_secs(10)).await;
        legs.states[Leg::Backend as usize].heard = true;
        legs.keepalive(keepalive);
    }
    assert!(!legs.states[Leg::Backend as usize].done);
    assert_eq!(sent(&mut legs, Leg::Client), [Got::Ping]);
    tokio::time::advance(Duration::from_secs(20)).await;
    legs.states[Leg::Backend as usize].heard = true;
    legs.keepalive(keepalive);
    assert!(legs.states[Leg::Client as usize].done);
    assert_eq!(sent(&mut legs, Leg::Backend), [close(1001, "client gone")]);
}

#[test]
fn a_text_goes_through_the_rules_of_its_direction() {
    let (mut legs, ctx) = legs();
    let sent_by_client = r#"{"type":"execute_agent","timestamp":"2025-09-08T16:50:01.447585"}"#;
    legs.on_event(Leg::Client, Event::Text(sent_by_client), &ctx);
    let rewritten = r#"{"type":"start_agent","timestamp":1757350201.447585}"#;
    assert_eq!(sent(&mut legs, Leg::Backend), [Got::Text(rewritten.into())]);
    assert_eq!(sent(&mut legs, Leg::Client), []);
}
