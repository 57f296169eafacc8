//! The client side of a WebSocket upgrade: is it one, is it valid (RFC 6455 §4.2.1), and which
//! subprotocols go where. Pure functions over the request header, tested without sockets.

use base64::Engine;
use pingora::http::RequestHeader;

use super::metrics::HandshakeResult;
use super::path;
use crate::config::{Config, NoCommonSubprotocol, Route, UnroutedUpgrades, WebSocketConfig};

/// A refused handshake: the status and the plain-text reason the client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: String,
    pub result: HandshakeResult,
}

impl Refusal {
    fn bad_request(status: u16, reason: impl Into<String>) -> Refusal {
        Refusal {
            status,
            reason: reason.into(),
            result: HandshakeResult::BadRequest,
        }
    }
}

/// True when the request asks for a WebSocket upgrade (whatever else is wrong with it).
pub fn is_websocket_upgrade(req: &RequestHeader) -> bool {
    header_tokens(req, "upgrade").any(|t| t.eq_ignore_ascii_case("websocket"))
}

/// A validated upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientUpgrade {
    pub key: String,
    /// Every subprotocol the client offered, in its order.
    pub offered: Vec<String>,
}

/// Checks method, version, `Connection` and the key.
pub fn validate(req: &RequestHeader) -> Result<ClientUpgrade, Refusal> {
    if req.method != http::Method::GET {
        return Err(Refusal::bad_request(
            405,
            "WebSocket upgrade requires the GET method",
        ));
    }
    if req.version != http::Version::HTTP_11 {
        return Err(Refusal::bad_request(
            400,
            "WebSocket upgrade requires HTTP/1.1",
        ));
    }
    if !header_tokens(req, "connection").any(|t| t.eq_ignore_ascii_case("upgrade")) {
        return Err(Refusal::bad_request(
            400,
            "WebSocket upgrade requires `Connection: Upgrade`",
        ));
    }
    match req
        .headers
        .get("sec-websocket-version")
        .map(|v| v.as_bytes())
    {
        Some(b"13") => {}
        _ => {
            return Err(Refusal::bad_request(
                426,
                "unsupported Sec-WebSocket-Version: only 13 is supported",
            ))
        }
    }
    let key = req
        .headers
        .get("sec-websocket-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| {
            base64::engine::general_purpose::STANDARD
                .decode(k)
                .is_ok_and(|raw| raw.len() == 16)
        })
        .ok_or_else(|| {
            Refusal::bad_request(
                400,
                "missing or invalid Sec-WebSocket-Key (must be 16 bytes, base64)",
            )
        })?;
    Ok(ClientUpgrade {
        key: key.to_string(),
        offered: header_tokens(req, "sec-websocket-protocol")
            .map(str::to_string)
            .collect(),
    })
}

/// The route an upgrade on `raw_path` belongs to, matched on the path the backend will route
/// on. An ambiguous path is refused; one that is no route is relayed without rules or refused,
/// by `unrouted_upgrades`: no WebSocket reaches the backend past the limits and the metrics.
pub fn route_for(raw_path: &str, config: &Config) -> Result<Route, Refusal> {
    let bad_path = |status, reason: String| Refusal {
        status,
        reason,
        result: HandshakeResult::BadPath,
    };
    let path = path::normalize(raw_path).map_err(|e| bad_path(400, e.to_string()))?;
    if let Some(route) = config.routes.find(&path) {
        return Ok(route.clone());
    }
    match config.websocket.unrouted_upgrades {
        UnroutedUpgrades::Relay => Ok(Route::unrouted()),
        UnroutedUpgrades::Refuse => Err(bad_path(404, "no WebSocket endpoint here".into())),
    }
}

/// The outcome of subprotocol negotiation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Negotiation {
    /// Echoed to the client on the 101.
    pub client_protocol: Option<String>,
    /// Offered to the backend, in the client's order.
    pub backend_offer: Vec<String>,
    /// A token moved from a subprotocol into `Authorization: Bearer` (tokens_to_authorization).
    pub bearer: Option<String>,
}

/// Picks the client's subprotocol and what to offer backend.
///
/// The client gets the first protocol of `websocket.subprotocols` (config order = preference)
/// that it offered. Token-bearing protocols go to the backend and are echoed only when selected.
pub fn negotiate(
    offered: &[String],
    ws: &WebSocketConfig,
    route: &Route,
    has_authorization: bool,
) -> Result<Negotiation, Refusal> {
    if route.transparent {
        // The backend's answer decides what the client gets.
        return Ok(Negotiation {
            client_protocol: None,
            backend_offer: offered.to_vec(),
            bearer: None,
        });
    }
    let client_protocol = ws
        .subprotocols
        .iter()
        .find(|p| offered.iter().any(|o| o == *p))
        .cloned();
    if client_protocol.is_none()
        && !offered.is_empty()
        && ws.no_common_subprotocol == NoCommonSubprotocol::Reject
    {
        return Err(Refusal {
            status: 400,
            reason: format!(
                "no supported subprotocol offered; supported: {}",
                ws.subprotocols.join(", ")
            ),
            result: HandshakeResult::NoCommonSubprotocol,
        });
    }

    let plain: Vec<&str> = offered
        .iter()
        .map(String::as_str)
        .filter(|p| !ws.is_token_subprotocol(p))
        .collect();
    let kept = route.backend_offer(&plain);
    let mut bearer = None;
    // A fixed protocol the client never offered goes first; the rest keep the client's order.
    let mut backend_offer: Vec<String> = kept
        .iter()
        .filter(|k| !plain.contains(k))
        .map(|k| k.to_string())
        .collect();
    for p in offered {
        if ws.is_token_subprotocol(p) {
            if ws.tokens_to_authorization && !has_authorization && bearer.is_none() {
                if let Some(token) = token_of(p, &ws.token_subprotocol_prefixes)? {
                    bearer = Some(token);
                    continue;
                }
            }
            backend_offer.push(p.clone());
        } else if kept.contains(&p.as_str()) {
            backend_offer.push(p.clone());
        }
    }
    Ok(Negotiation {
        client_protocol,
        backend_offer,
        bearer,
    })
}

/// The credential inside a token-bearing subprotocol such as `jwt.<base64url>`, to be written
/// as `Authorization: Bearer <token>`. It must be RFC 7235 token68 (what a bearer token is);
/// anything else, above all a control character that would end the header line, is refused.
fn token_of(protocol: &str, prefixes: &[String]) -> Result<Option<String>, Refusal> {
    let Some(prefix) = prefixes.iter().find(|p| protocol.starts_with(p.as_str())) else {
        return Ok(None);
    };
    let rest = &protocol[prefix.len()..];
    if rest.is_empty() {
        return Ok(None);
    }
    let invalid = || Refusal {
        status: 400,
        // The token itself is never echoed or logged.
        reason: format!("the `{prefix}` subprotocol does not carry a valid bearer token"),
        result: HandshakeResult::InvalidToken,
    };
    // A raw three-part JWT is used as is; otherwise it is base64url of the token.
    let token = if rest.split('.').count() == 3 {
        rest.to_string()
    } else {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(rest.trim_end_matches('='))
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .ok_or_else(invalid)?
    };
    if is_token68(&token) {
        Ok(Some(token))
    } else {
        Err(invalid())
    }
}

/// RFC 7235 `token68`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_token68(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// Cross-site WebSocket hijacking protection: with `allowed_origins` on the route, a browser
/// (which always sends `Origin`) from any other origin is refused. Clients that send no
/// `Origin` are not browsers and pass.
pub fn check_origin(req: &RequestHeader, route: &Route) -> Result<(), Refusal> {
    if route.allowed_origins.is_empty() {
        return Ok(());
    }
    let Some(origin) = req.headers.get("origin") else {
        return Ok(());
    };
    let allowed = origin.to_str().is_ok_and(|o| {
        route
            .allowed_origins
            .iter()
            .any(|a| a.eq_ignore_ascii_case(o.trim()))
    });
    if allowed {
        Ok(())
    } else {
        Err(Refusal {
            status: 403,
            reason: "origin not allowed".into(),
            result: HandshakeResult::OriginRejected,
        })
    }
}

/// Comma-separated tokens of every instance of a header.
fn header_tokens<'a>(req: &'a RequestHeader, name: &str) -> impl Iterator<Item = &'a str> {
    req.headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests;
