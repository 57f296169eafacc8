use super::*;
use crate::config::{Config, Overrides};

fn request(headers: &[(&str, &str)]) -> RequestHeader {
    let mut req = RequestHeader::build("GET", b"/ws?mode=main", None).unwrap();
    for (name, value) in headers {
        req.append_header(name.to_string(), *value).unwrap();
    }
    req
}

const GOOD: &[(&str, &str)] = &[
    ("Host", "example"),
    ("Upgrade", "websocket"),
    ("Connection", "keep-alive, Upgrade"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    GOOD.iter().chain(extra).copied().collect()
}

fn without(name: &str) -> Vec<(&'static str, &'static str)> {
    GOOD.iter().filter(|(n, _)| *n != name).copied().collect()
}

#[test]
fn a_valid_upgrade_lists_offered_subprotocols_in_order() {
    let req = request(&with(&[
        ("Sec-WebSocket-Protocol", "jwt-auth, agent_chat"),
        ("Sec-WebSocket-Protocol", "x"),
    ]));
    assert!(is_websocket_upgrade(&req));
    let up = validate(&req).unwrap();
    assert_eq!(up.key, "dGhlIHNhbXBsZSBub25jZQ==");
    assert_eq!(up.offered, ["jwt-auth", "agent_chat", "x"]);
}

#[test]
fn invalid_upgrades_get_clear_statuses() {
    let status = |headers: &[(&str, &str)]| validate(&request(headers)).unwrap_err().status;
    assert_eq!(status(&without("Sec-WebSocket-Key")), 400);
    assert_eq!(status(&without("Connection")), 400);
    assert_eq!(status(&without("Sec-WebSocket-Version")), 426);
    let mut v8 = without("Sec-WebSocket-Version");
    v8.push(("Sec-WebSocket-Version", "8"));
    assert_eq!(status(&v8), 426);
    let mut short_key = without("Sec-WebSocket-Key");
    short_key.push(("Sec-WebSocket-Key", "c2hvcnQ="));
    assert_eq!(status(&short_key), 400);

    let mut post = RequestHeader::build("POST", b"/ws", None).unwrap();
    for (n, v) in GOOD {
        post.append_header(n.to_string(), *v).unwrap();
    }
    assert_eq!(validate(&post).unwrap_err().status, 405);
}

#[test]
fn a_plain_request_is_not_an_upgrade() {
    assert!(!is_websocket_upgrade(&request(&without("Upgrade"))));
    assert!(!is_websocket_upgrade(&request(&[("Upgrade", "h2c")])));
}

fn offer(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn config(extra: &str) -> Config {
    Config::from_toml("t", extra, &Overrides::default()).unwrap()
}

#[test]
fn the_first_configured_protocol_the_client_offers_is_echoed() {
    let c = config("[websocket]\nsubprotocols = [\"agent_chat\", \"v2\"]\n");
    let route = c.routes.find("/ws").unwrap();
    let n = negotiate(&offer(&["v2", "agent_chat"]), &c.websocket, route, false).unwrap();
    assert_eq!(n.client_protocol.as_deref(), Some("agent_chat"));
    // Default route policy drops what the backend does not know.
    assert!(n.backend_offer.is_empty());
    assert_eq!(n.bearer, None);
}

#[test]
fn token_protocols_go_backend_but_are_never_echoed() {
    let c = config("");
    let route = c.routes.find("/ws").unwrap();
    let n = negotiate(
        &offer(&[
            "jwt-auth",
            "jwt.ZXlKaGJHY2lPaUpJVXpJMU5pSjkuZS5m",
            "agent_chat",
        ]),
        &c.websocket,
        route,
        false,
    )
    .unwrap();
    assert_eq!(n.client_protocol.as_deref(), Some("agent_chat"));
    assert_eq!(n.backend_offer, ["jwt.ZXlKaGJHY2lPaUpJVXpJMU5pSjkuZS5m"]);
}

#[test]
fn tokens_can_become_an_authorization_header() {
    let c = config("[websocket]\ntokens_to_authorization = true\n");
    let route = c.routes.find("/ws").unwrap();
    // base64url("header.payload.sig") without padding
    let n = negotiate(
        &offer(&["jwt.aGVhZGVyLnBheWxvYWQuc2ln"]),
        &c.websocket,
        route,
        false,
    )
    .unwrap();
    assert_eq!(n.bearer.as_deref(), Some("header.payload.sig"));
    assert!(n.backend_offer.is_empty());
    assert_eq!(n.client_protocol, None);
    // An explicit Authorization header wins: the token stays a subprotocol.
    let n = negotiate(
        &offer(&["jwt.aGVhZGVyLnBheWxvYWQuc2ln"]),
        &c.websocket,
        route,
        true,
    )
    .unwrap();
    assert_eq!(n.bearer, None);
    assert_eq!(n.backend_offer, ["jwt.aGVhZGVyLnBheWxvYWQuc2ln"]);
    // A raw three-part JWT is used as it is.
    let n = negotiate(&offer(&["bearer.a.b.c"]), &c.websocket, route, false).unwrap();
    assert_eq!(n.bearer.as_deref(), Some("a.b.c"));
}

#[test]
fn route_policies_decide_the_backend_offer() {
    let c = config(
        r#"
[[websocket.routes]]
path = "/known"
backend_subprotocols = ["jwt-auth"]
[[websocket.routes]]
path = "/fwd"
backend_offer = "forward"
[[websocket.routes]]
path = "/fixed"
backend_offer = "fixed"
fixed_subprotocol = "legacy"
"#,
    );
    let offered = offer(&["agent_chat", "jwt-auth", "bearer.tok12345678"]);
    let backend = |path: &str| {
        negotiate(&offered, &c.websocket, c.routes.find(path).unwrap(), false)
            .unwrap()
            .backend_offer
    };
    assert_eq!(backend("/known"), ["jwt-auth", "bearer.tok12345678"]);
    assert_eq!(
        backend("/fwd"),
        ["agent_chat", "jwt-auth", "bearer.tok12345678"]
    );
    assert_eq!(backend("/fixed"), ["legacy", "bearer.tok12345678"]);
}

#[test]
fn no_common_subprotocol_follows_the_policy() {
    let accept = config("");
    let route = accept.routes.find("/ws").unwrap();
    let n = negotiate(&offer(&["chat.v9"]), &accept.websocket, route, false).unwrap();
    assert_eq!(n.client_protocol, None);
    // Offering nothing is never a mismatch.
    let reject = config("[websocket]\nno_common_subprotocol = \"reject\"\n");
    let route = reject.routes.find("/ws").unwrap();
    assert!(negotiate(&[], &reject.websocket, route, false).is_ok());
    let refusal = negotiate(&offer(&["chat.v9"]), &reject.websocket, route, false).unwrap_err();
    assert_eq!(refusal.status, 400);
    assert_eq!(refusal.result, HandshakeResult::NoCommonSubprotocol);
    assert!(refusal.reason.contains("agent_chat"));
}
