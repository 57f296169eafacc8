//! Field paths: which JSON values a rule looks at.
//!
//! Syntax (see also the module docs of [`crate::rules`]):
//!
//! * segments are separated by `.`: `payload.timestamp`;
//! * `*` matches every member of an object and every element of an array;
//! * a segment of ASCII digits without leading zeros (`0`, `3`, `17`) indexes arrays and
//!   also matches an object member of that name;
//! * every other segment matches an object member whose (unescaped) key equals it;
//! * `\.` is a literal dot inside a segment, `\\` a literal backslash and `\*` a literal
//!   `*` key (as opposed to the wildcard); any other `\x` is an error;
//! * empty paths and empty segments (`a..b`, `.a`, `a.`) are errors.

use std::fmt;
use std::str::FromStr;

/// One segment of a [`FieldPath`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Segment {
    /// Matches an object member with exactly this key.
    Key(String),
    /// `*`: any object member, any array element.
    Any,
    /// A digit segment: array element `index`, or an object member named `key`.
    Index { key: String, index: usize },
}

impl Segment {
    /// Does this segment select the object member named `key`?
    #[inline]
    pub fn matches_key(&self, key: &str) -> bool {
        match self {
            Segment::Key(k) | Segment::Index { key: k, .. } => k == key,
            Segment::Any => true,
        }
    }

    /// Does this segment select array element `i`?
    #[inline]
    pub fn matches_index(&self, i: usize) -> bool {
        match self {
            Segment::Any => true,
            Segment::Index { index, .. } => *index == i,
            Segment::Key(_) => false,
        }
    }
}

/// Why a path string was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is empty")]
    Empty,
    #[error(
        "segment {0} is empty (segments are separated by single dots; write a literal dot as `\\.`)"
    )]
    EmptySegment(usize),
    #[error("path ends with a lone `\\` (escapes are `\\.`, `\\\\` and `\\*`)")]
    DanglingEscape,
    #[error("unsupported escape `\\{0}` (escapes are `\\.`, `\\\\` and `\\*`)")]
    BadEscape(char),
}

/// A parsed, validated field path such as `payload.timestamp` or `items.*.ts`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FieldPath {
    text: String,
    segments: Vec<Segment>,
}

impl FieldPath {
    /// Parse a path (see the module docs for the syntax).
    pub fn parse(text: &str) -> Result<FieldPath, PathError> {
        if text.is_empty() {
            return Err(PathError::Empty);
        }
        let mut segments = Vec::new();
        let mut buf = String::new();
        // `escaped`: the segment contained at least one escape, so `\*` is a literal key.
        let mut escaped = false;
        let mut chars = text.chars();
        loop {
            match chars.next() {
                Some('\\') => {
                    escaped = true;
                    match chars.next() {
                        Some(c @ ('.' | '\\' | '*')) => buf.push(c),
                        Some(c) => return Err(PathError::BadEscape(c)),
                        None => return Err(PathError::DanglingEscape),
                    }
                }
                Some('.') => {
                    segments.push(finish_segment(&mut buf, escaped, segments.len())?);
                    escaped = false;
                }
                Some(c) => buf.push(c),
                None => {
                    segments.push(finish_segment(&mut buf, escaped, segments.len())?);
                    break;
                }
            }
        }
        Ok(FieldPath {
            text: text.to_owned(),
            segments,
        })
    }

    /// The segments, in order (never empty).
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The path as written in the configuration.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn finish_segment(buf: &mut String, escaped: bool, index: usize) -> Result<Segment, PathError> {
    if buf.is_empty() {
        return Err(PathError::EmptySegment(index + 1));
    }
    let text = std::mem::take(buf);
    if !escaped && text == "*" {
        return Ok(Segment::Any);
    }
    let digits = text.bytes().all(|b| b.is_ascii_digit());
    if digits && (text.len() == 1 || !text.starts_with('0')) {
        if let Ok(index) = text.parse::<usize>() {
            return Ok(Segment::Index { key: text, index });
        }
    }
    Ok(Segment::Key(text))
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for FieldPath {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FieldPath::parse(s)
    }
}

impl TryFrom<&str> for FieldPath {
    type Error = PathError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        FieldPath::parse(s)
    }
}

/// Append `key` to `out` as one path segment, escaped so that the result parses back
/// to a segment matching exactly this key.
pub(crate) fn push_escaped_key(out: &mut String, key: &str) {
    if key == "*" {
        out.push_str("\\*");
        return;
    }
    for c in key.chars() {
        match c {
            '.' => out.push_str("\\."),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Segment {
        Segment::Key(s.to_owned())
    }
    fn idx(i: usize) -> Segment {
        Segment::Index {
            key: i.to_string(),
            index: i,
        }
    }

    #[test]
    fn parses_valid_paths() {
        let cases: &[(&str, Vec<Segment>)] = &[
            ("timestamp", vec![key("timestamp")]),
            ("payload.timestamp", vec![key("payload"), key("timestamp")]),
            ("items.*.ts", vec![key("items"), Segment::Any, key("ts")]),
            ("items.0", vec![key("items"), idx(0)]),
            ("items.12", vec![key("items"), idx(12)]),
            ("items.012", vec![key("items"), key("012")]),
            ("a\\.b.c", vec![key("a.b"), key("c")]),
            ("a\\\\b", vec![key("a\\b")]),
            ("\\*", vec![key("*")]),
            ("*", vec![Segment::Any]),
            (
                "x.99999999999999999999999",
                vec![key("x"), key("99999999999999999999999")],
            ),
            ("\\.", vec![key(".")]),
            ("é.ü", vec![key("é"), key("ü")]),
        ];
        for (text, want) in cases {
            let p = FieldPath::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(p.segments(), &want[..], "{text}");
            assert_eq!(p.as_str(), *text);
            assert_eq!(p.to_string(), *text);
        }
    }

    #[test]
    fn rejects_invalid_paths() {
        let cases: &[(&str, PathError)] = &[
            ("", PathError::Empty),
            ("a..b", PathError::EmptySegment(2)),
            (".a", PathError::EmptySegment(1)),
            ("a.", PathError::EmptySegment(2)),
            (".", PathError::EmptySegment(1)),
            ("a\\", PathError::DanglingEscape),
            ("a\\b", PathError::BadEscape('b')),
        ];
        for (text, want) in cases {
            assert_eq!(FieldPath::parse(text).unwrap_err(), *want, "{text}");
        }
        assert!(PathError::EmptySegment(2)
            .to_string()
            .contains("segment 2 is empty"));
    }

    #[test]
    fn escaped_keys_round_trip() {
        for k in ["a.b", "*", "a\\b", "plain", "x.*.y", "\\."] {
            let mut s = String::new();
            push_escaped_key(&mut s, k);
            let p = FieldPath::parse(&s).unwrap();
            assert_eq!(p.segments(), &[key(k)][..], "{k} -> {s}");
        }
    }

    #[test]
    fn segment_matching() {
        assert!(key("a").matches_key("a"));
        assert!(!key("a").matches_key("b"));
        assert!(!key("a").matches_index(0));
        assert!(Segment::Any.matches_key("whatever"));
        assert!(Segment::Any.matches_index(7));
        assert!(idx(3).matches_index(3));
        assert!(idx(3).matches_key("3"));
        assert!(!idx(3).matches_index(4));
    }
}
