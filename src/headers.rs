//! HTTP headers at wsnorm's edges: the ones it writes itself ([`OutgoingHeaders`]: the backend
//! handshake, forwarded headers, refusals relayed to the client) and the ones it parses itself
//! with httparse ([`OwnedHeaders`]: the backend's handshake response).

use http::header::{HeaderName, HeaderValue};

/// A header wsnorm was asked to write whose name or value is not valid HTTP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("header `{name}`: not a valid header {what} (control characters are never written)")]
pub struct InvalidHeader {
    /// The name as given, escaped for display.
    pub name: String,
    pub what: &'static str,
}

/// Headers wsnorm writes, in order. Every name and value passes `http`'s checks on the way in
/// (no CR, LF, NUL or other control byte), and nothing else can be written: whatever a client,
/// a backend or a config file supplies, no path can add a header line or a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutgoingHeaders(Vec<(HeaderName, HeaderValue)>);

impl OutgoingHeaders {
    /// Adds `name: value` after checking both.
    pub fn push(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), InvalidHeader> {
        let invalid = |what| InvalidHeader {
            name: name.escape_debug().to_string(),
            what,
        };
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid("name"))?;
        let value = HeaderValue::from_bytes(value.as_ref()).map_err(|_| invalid("value"))?;
        self.0.push((name, value));
        Ok(())
    }

    /// Adds a header that is already typed (checked when it was parsed).
    pub fn push_typed(&mut self, name: HeaderName, value: HeaderValue) {
        self.0.push((name, value));
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0
            .iter()
            .any(|(n, _)| n.as_str().eq_ignore_ascii_case(name))
    }

    pub fn iter(&self) -> impl Iterator<Item = &(HeaderName, HeaderValue)> {
        self.0.iter()
    }

    /// The header lines, each ending in CRLF.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        for (name, value) in &self.0 {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Header names and raw values, in the order received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnedHeaders(pub Vec<(String, Vec<u8>)>);

impl OwnedHeaders {
    pub fn from_httparse(headers: &[httparse::Header<'_>]) -> OwnedHeaders {
        OwnedHeaders(
            headers
                .iter()
                .map(|h| (h.name.to_string(), h.value.to_vec()))
                .collect(),
        )
    }

    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Every comma-separated token of the headers called `name`, trimmed.
    pub fn tokens<'a>(&'a self, name: &'a str) -> impl Iterator<Item = String> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| {
                String::from_utf8_lossy(v)
                    .split(',')
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
                    .collect::<Vec<_>>()
            })
    }

    /// Whether the comma-separated header `name` contains `token` (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.tokens(name).any(|t| t.eq_ignore_ascii_case(token))
    }

    pub fn iter(&self) -> impl Iterator<Item = &(String, Vec<u8>)> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_matched_across_repeated_headers_ignoring_case() {
        let h = OwnedHeaders(vec![
            ("Connection".into(), b"keep-alive".to_vec()),
            ("connection".into(), b"foo, Upgrade".to_vec()),
        ]);
        assert!(h.has_token("CONNECTION", "upgrade"));
        assert!(!h.has_token("connection", "close"));
        assert_eq!(h.get("connection"), Some(&b"keep-alive"[..]));
        assert_eq!(h.get("upgrade"), None);
    }

    #[test]
    fn no_control_character_gets_into_an_outgoing_header() {
        let mut h = OutgoingHeaders::default();
        for bad in [
            &b"abc\r\nX-Injected: yes"[..],
            b"abc\nX: y",
            b"abc\r",
            b"a\0b",
            b"a\x7fb",
            b"\r\n\r\nPOST /admin HTTP/1.1",
        ] {
            let err = h.push("Authorization", bad).unwrap_err();
            assert_eq!(err.what, "value");
        }
        assert_eq!(h.push("X\r\nY", "v").unwrap_err().what, "name");
        assert_eq!(h.push("", "v").unwrap_err().what, "name");
        h.push("Authorization", "Bearer abc.def-_~+/=").unwrap();
        let mut out = Vec::new();
        h.write_to(&mut out);
        assert_eq!(out, b"authorization: Bearer abc.def-_~+/=\r\n");
    }
}
