//! The forwarding headers wsnorm adds towards the backend (`X-Forwarded-For`, `-Proto`,
//! `-Host`), for plain HTTP and WebSocket requests alike. What a client claims in them is
//! believed only from a peer in `server.trusted_proxies`; from anyone else it is overwritten
//! (and `X-Real-IP` / `Forwarded` dropped), so the backend never logs or trusts a forged
//! address. In the shipped sidecar setups wsnorm is the first hop.

use std::net::IpAddr;

use pingora::http::RequestHeader;

use crate::headers::{InvalidHeader, OutgoingHeaders};

/// Headers through which a peer claims something about the original client.
pub const CLAIMS: [&str; 5] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "forwarded",
];

/// `X-Forwarded-For` (the peer's address, appended to a trusted proxy's list),
/// `X-Forwarded-Proto` and `X-Forwarded-Host`.
pub fn headers(
    req: &RequestHeader,
    peer: Option<IpAddr>,
    trusted: bool,
) -> Result<OutgoingHeaders, InvalidHeader> {
    let claimed = |name: &str| {
        req.headers
            .get(name)
            .filter(|_| trusted)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let mut out = OutgoingHeaders::default();
    if let Some(ip) = peer {
        match claimed("x-forwarded-for") {
            Some(prev) => out.push("X-Forwarded-For", format!("{prev}, {ip}"))?,
            None => out.push("X-Forwarded-For", ip.to_string())?,
        }
    }
    out.push(
        "X-Forwarded-Proto",
        claimed("x-forwarded-proto").unwrap_or("http"),
    )?;
    let host = claimed("x-forwarded-host").or_else(|| {
        req.headers
            .get("host")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    });
    if let Some(host) = host {
        out.push("X-Forwarded-Host", host)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/ws", None).unwrap();
        for (n, v) in [
            ("Host", "chat.example"),
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil.example"),
        ] {
            req.append_header(n, v).unwrap();
        }
        req
    }

    fn lines(h: &OutgoingHeaders) -> Vec<String> {
        h.iter()
            .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
            .collect()
    }

    #[test]
    fn an_untrusted_peer_cannot_claim_another_address() {
        let out = headers(&request(), Some("10.1.2.3".parse().unwrap()), false).unwrap();
        assert_eq!(
            lines(&out),
            [
                "x-forwarded-for: 10.1.2.3",
                "x-forwarded-proto: http",
                "x-forwarded-host: chat.example"
            ]
        );
    }

    #[test]
    fn a_trusted_proxy_is_extended() {
        let out = headers(&request(), Some("10.1.2.3".parse().unwrap()), true).unwrap();
        assert_eq!(
            lines(&out),
            [
                "x-forwarded-for: 6.6.6.6, 10.1.2.3",
                "x-forwarded-proto: https",
                "x-forwarded-host: evil.example"
            ]
        );
    }
}
