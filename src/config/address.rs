//! Addresses as the config writes them (`host:port`, a name or an IP address) and the socket
//! address each stands for. A name is resolved once, when the config is read (at start, on each
//! reload, by `wsnorm check`), so a name that does not resolve is a config error with its line,
//! and nothing resolves names while connections are served.
//!
//! A name that resolves to several addresses stands for the first IPv4 one among them (else the
//! first one), as Go's `net.Listen` picks: `localhost` is 127.0.0.1, where health probes, sidecar
//! backends and their clients look, even where the resolver lists `::1` first. Listening on
//! every address of a name would fail the start wherever one of them cannot be bound (`::1` in a
//! container without IPv6).

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use serde::Deserialize;

/// `host:port` as written, and the socket address it was resolved to when the config was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// A host name or an IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// What `host` resolved to: dialled or bound.
    pub socket: SocketAddr,
}

impl Address {
    /// An IP address and port: nothing to resolve.
    pub fn from_socket(socket: SocketAddr) -> Address {
        Address {
            host: socket.ip().to_string(),
            port: socket.port(),
            socket,
        }
    }

    /// `host:port` (an IPv4 address, a bracketed IPv6 address or a name, and a port
    /// 0..=65535), with the name resolved now. Errors say what is wrong and what is accepted.
    pub fn resolve(s: &str) -> Result<Address, String> {
        let (host, port) = split_host_port(s)?;
        resolve_host(host, port)
    }

    /// A backend: `host:port`, `http://host:port` or `ws://host:port` (a trailing `/` allowed),
    /// resolved now.
    pub fn resolve_backend(s: &str) -> Result<Address, String> {
        let rest = match s.split_once("://") {
            Some(("http" | "ws", rest)) => rest,
            Some((scheme, _)) => {
                return Err(format!(
                    "scheme `{}` is not supported (use host:port, http:// or ws://)",
                    scheme.escape_debug()
                ))
            }
            None => s,
        };
        let authority = rest.trim_end_matches('/');
        if authority.contains('/') {
            return Err(format!(
                "`{}`: give host:port only, without a path",
                s.escape_debug()
            ));
        }
        let (host, port) = split_host_port(authority)?;
        if port == 0 {
            return Err("port 0 cannot be dialled: give the backend's port (1 to 65535)".into());
        }
        resolve_host(host, port)
    }

    /// `host:port`, as sent in `Host` (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// An IP address as it is; a name with the address it resolved to.
impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.parse::<IpAddr>().is_ok() {
            write!(f, "{}", self.socket)
        } else {
            write!(f, "{} ({})", self.authority(), self.socket)
        }
    }
}

impl std::str::FromStr for Address {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Address::resolve(s)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Address::resolve(&s).map_err(serde::de::Error::custom)
    }
}

/// `backend.address`: [`Address::resolve_backend`].
pub(super) fn backend_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
    let s = String::deserialize(d)?;
    Address::resolve_backend(&s).map_err(serde::de::Error::custom)
}

/// Splits `host:port` without resolving anything; every refusal says what is accepted.
pub(super) fn split_host_port(s: &str) -> Result<(&str, u16), String> {
    let shown = s.escape_debug();
    if s.is_empty() {
        return Err("empty: write host:port, like 127.0.0.1:8080".into());
    }
    let (host, port) = if let Some(bracketed) = s.strip_prefix('[') {
        let (ip, rest) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("`{shown}`: `[` without `]`; write [::1]:8080"))?;
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!(
                "`{shown}`: only an IPv6 address goes in brackets, like [::1]:8080"
            ));
        }
        let port = rest
            .strip_prefix(':')
            .ok_or_else(|| format!("`{shown}` has no port: write [{ip}]:8080"))?;
        (ip, port)
    } else {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("`{shown}` has no port: write host:port, like {shown}:8080"))?;
        if host.contains(':') {
            return Err(format!(
                "`{shown}`: an IPv6 address goes in brackets, like [{}]:{}",
                host.escape_debug(),
                port.escape_debug()
            ));
        }
        if host.is_empty() {
            // Both faults at once: `:80800` should not take two rounds to fix.
            let (port, also) = match parse_port(port) {
                Ok(port) => (port.to_string(), String::new()),
                Err(e) => ("PORT".to_string(), format!("; and {e}")),
            };
            return Err(format!(
                "`{shown}` has no host: write 127.0.0.1:{port} (this machine only) or \
                 0.0.0.0:{port} (every interface){also}"
            ));
        }
        // The host is dialled and sent in `Host`: a name or an IP address, nothing else (no
        // `user:pass@`, no spaces or control characters).
        let is_name = host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !is_name {
            return Err(format!(
                "`{}` is not a host name or IP address (letters, digits, `-` and `.`; no \
                 credentials, spaces or control characters)",
                host.escape_debug()
            ));
        }
        (host, port)
    };
    Ok((host, parse_port(port)?))
}

fn parse_port(port: &str) -> Result<u16, String> {
    if port.is_empty() {
        return Err("no port number after `:` (ports are 0 to 65535)".into());
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{}` is not a port number (ports are 0 to 65535)",
            port.escape_debug()
        ));
    }
    port.parse::<u16>()
        .map_err(|_| format!("port {port} is out of range: ports are 0 to 65535"))
}

fn resolve_host(host: &str, port: u16) -> Result<Address, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Address::from_socket(SocketAddr::new(ip, port)));
    }
    let found: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("`{host}` does not resolve: {e}"))?
        .collect();
    let socket = found
        .iter()
        .find(|a| a.is_ipv4())
        .or(found.first())
        .copied()
        .ok_or_else(|| format!("`{host}` resolves to no address"))?;
    Ok(Address {
        host: host.to_string(),
        port,
        socket,
    })
}

/// Would binding `a` and `b` both fail, the second with "address in use"? A wildcard address
/// (`0.0.0.0`, `::`) takes its port on every interface.
pub(super) fn binds_clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Would dialling `to` reach the listener bound at `at` (on this machine)?
pub(super) fn dials_listener(to: SocketAddr, at: SocketAddr) -> bool {
    let local = |ip: IpAddr| ip.is_loopback() || ip.is_unspecified();
    at.port() != 0
        && at.port() == to.port()
        && (at.ip() == to.ip() || (at.ip().is_unspecified() && local(to.ip())))
}
