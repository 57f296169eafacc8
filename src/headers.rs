//! Owned HTTP header lists from httparse, for the places that parse a head themselves (the
//! backend handshake response, the demo backend's requests).

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

    /// Whether the comma-separated header `name` contains `token` (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.0
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .any(|(_, v)| {
                String::from_utf8_lossy(v)
                    .split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case(token))
            })
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
}
