//! The request path as the backend will route on it. uvicorn percent-decodes the path before
//! Starlette matches its routes, so `/w%73` is the backend's `/ws`; routes are matched on the
//! decoded form here too, with dot segments and empty segments resolved and a trailing slash
//! dropped (as Starlette's slash redirect would). Forms whose meaning depends on who decodes
//! them are refused instead of guessed.

use percent_encoding::percent_decode;

/// Why a path cannot be matched safely; the client gets 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadPath {
    /// `%2F`: one server sees a separator, another a character of a segment.
    #[error("the path contains an encoded slash (%2F)")]
    EncodedSlash,
    /// NUL, raw or encoded: C-based servers stop reading there.
    #[error("the path contains a NUL byte")]
    Nul,
    /// The decoded bytes are not UTF-8, which Python's decoding would replace or reject.
    #[error("the decoded path is not valid UTF-8")]
    NotUtf8,
}

/// The normalised form of `raw` (the path without query string, as received).
pub fn normalize(raw: &str) -> Result<String, BadPath> {
    let lower = raw.to_ascii_lowercase();
    if lower.contains("%2f") {
        return Err(BadPath::EncodedSlash);
    }
    if lower.contains("%00") || raw.contains('\0') {
        return Err(BadPath::Nul);
    }
    let decoded = percent_decode(raw.as_bytes())
        .decode_utf8()
        .map_err(|_| BadPath::NotUtf8)?;
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    Ok(format!("/{}", segments.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_path_normalise_to_it() {
        for raw in [
            "/ws",
            "/w%73",
            "/W%73".to_lowercase().as_str(),
            "/ws/",
            "//ws",
            "/./ws",
            "/x/../ws",
            "/../ws",
            "/%2e/ws",
            "/%2E%2E/ws",
            "/ws//",
            "/%77%73",
        ] {
            assert_eq!(normalize(raw).as_deref(), Ok("/ws"), "{raw}");
        }
        assert_eq!(
            normalize("/api/v1/websocke%74").as_deref(),
            Ok("/api/v1/websocket")
        );
        assert_eq!(normalize("/").as_deref(), Ok("/"));
        assert_eq!(normalize("").as_deref(), Ok("/"));
        assert_eq!(normalize("/ws/a%20b").as_deref(), Ok("/ws/a b"));
        // Decoded once, as the backend decodes: `%2573` is the text `%73`.
        assert_eq!(normalize("/w%2573").as_deref(), Ok("/w%73"));
        assert_eq!(normalize("/.well-known/x").as_deref(), Ok("/.well-known/x"));
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        assert_eq!(normalize("/ws%2Fx"), Err(BadPath::EncodedSlash));
        assert_eq!(normalize("/ws%2fx"), Err(BadPath::EncodedSlash));
        assert_eq!(normalize("/ws%00"), Err(BadPath::Nul));
        assert_eq!(normalize("/ws\0"), Err(BadPath::Nul));
        assert_eq!(normalize("/ws%ff"), Err(BadPath::NotUtf8));
        assert_eq!(normalize("/ws%c3"), Err(BadPath::NotUtf8));
        assert_eq!(normalize("/caf%C3%A9").as_deref(), Ok("/café"));
    }
}
