//! Where things are in a config file: the line of a key path (`rules[2].map`) and the key path
//! at a position, so that every message names both, whichever check found the problem.
//!
//! The file is walked as toml parsed it ([`DeTable`], every key and value with its span).
//! An `[[array]]` element's span is its header line only, so a search by position descends into
//! every element instead of trusting containment.

use std::fmt;
use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A key path as the messages spell it: `server.listen`, `rules[2].map`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(Vec<Segment>);

impl KeyPath {
    /// The path of dotted `keys` (`"server.listen"`); indexes are added with [`KeyPath::index`].
    pub fn of(keys: &str) -> KeyPath {
        KeyPath(
            keys.split('.')
                .filter(|k| !k.is_empty())
                .map(|k| Segment::Key(k.to_string()))
                .collect(),
        )
    }

    pub fn key(mut self, key: &str) -> KeyPath {
        self.0.push(Segment::Key(key.to_string()));
        self
    }

    pub fn index(mut self, index: usize) -> KeyPath {
        self.0.push(Segment::Index(index));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn parent(&self) -> KeyPath {
        KeyPath(self.0[..self.0.len().saturating_sub(1)].to_vec())
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Index(n) => write!(f, "[{n}]")?,
                Segment::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    // A key that is not bare is written quoted, as in the file.
                    let bare = !k.is_empty()
                        && k.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                    if bare {
                        f.write_str(k)?;
                    } else {
                        write!(f, "{k:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Keys renamed since the format was first published, with the name files may still use
/// (serde aliases in [`super::FileConfig`] and [`super::RouteConfig`]).
const OLD_NAMES: [(&str, &str); 2] = [
    ("backend", "upstream"),
    ("backend_offer", "upstream_subprotocols"),
];

fn old_name(key: &str) -> Option<&'static str> {
    OLD_NAMES
        .iter()
        .find(|(new, _)| *new == key)
        .map(|(_, old)| *old)
}

/// A parsed config file, for finding keys in it.
pub struct Document<'a> {
    text: &'a str,
    root: Spanned<DeTable<'a>>,
}

impl<'a> Document<'a> {
    pub fn new(text: &'a str, root: Spanned<DeTable<'a>>) -> Document<'a> {
        Document { text, root }
    }

    pub fn root(&self) -> &Spanned<DeTable<'a>> {
        &self.root
    }

    /// The line of `path`'s key (of its header, for an `[[array]]` element), or `None` when
    /// the file does not contain it (a default, or a value given on the command line).
    pub fn line_of(&self, path: &KeyPath) -> Option<usize> {
        self.lookup(path)
            .map(|(span, _)| line_number(self.text, span.start))
    }

    /// Whether `path` holds a date or time (which serde describes as a table).
    pub fn is_datetime(&self, path: &KeyPath) -> bool {
        matches!(self.lookup(path), Some((_, DeValue::Datetime(_))))
    }

    /// The span of `path`'s key (or `[[array]]` header, or array element) and its value.
    fn lookup(&self, path: &KeyPath) -> Option<(Range<usize>, &DeValue<'a>)> {
        let mut span = self.root.span();
        let mut value: Option<&DeValue> = None;
        let mut table = Some(self.root.get_ref());
        for segment in &path.0 {
            match (segment, table, value) {
                (Segment::Key(k), Some(t), _) => {
                    let (key, v) = t.iter().find(|(key, _)| {
                        key.get_ref() == k || old_name(k) == Some(key.get_ref())
                    })?;
                    span = key.span();
                    value = Some(v.get_ref());
                }
                (Segment::Index(i), _, Some(DeValue::Array(a))) => {
                    let item = a.get(*i)?;
                    span = item.span();
                    value = Some(item.get_ref());
                }
                _ => return None,
            }
            table = match value {
                Some(DeValue::Table(t)) => Some(t),
                _ => None,
            };
        }
        Some((span, value?))
    }

    /// `line N: {path}: {message}`, or `{path}: {message}` when the key is not in the file.
    pub fn problem(&self, path: &KeyPath, message: impl fmt::Display) -> String {
        self.problem_shown(path, path, message)
    }

    /// [`Document::problem`] with the key shown as `shown` (a rule with its name, say).
    pub fn problem_shown(
        &self,
        path: &KeyPath,
        shown: impl fmt::Display,
        message: impl fmt::Display,
    ) -> String {
        match self.line_of(path) {
            Some(line) => format!("line {line}: {shown}: {message}"),
            None => format!("{shown}: {message}"),
        }
    }

    /// The key path of what is at `span`: the table a key belongs to when `span` is that key
    /// (an unknown key is a problem of its table), else the key whose value it is.
    pub fn path_at(&self, span: &Range<usize>) -> KeyPath {
        let mut path = Vec::new();
        match find_in_table(self.root.get_ref(), span, &mut path) {
            Some(Found::Key) => KeyPath(path).parent(),
            Some(Found::Value) => KeyPath(path),
            None => KeyPath::default(),
        }
    }
}

enum Found {
    Key,
    Value,
}

fn find_in_table(table: &DeTable, span: &Range<usize>, path: &mut Vec<Segment>) -> Option<Found> {
    for (key, value) in table.iter() {
        path.push(Segment::Key(key.get_ref().to_string()));
        if key.span() == *span {
            return Some(Found::Key);
        }
        if let Some(found) = find_in_value(value, span, path) {
            return Some(found);
        }
        path.pop();
    }
    None
}

fn find_in_value(
    value: &Spanned<DeValue>,
    span: &Range<usize>,
    path: &mut Vec<Segment>,
) -> Option<Found> {
    let inner = match value.get_ref() {
        DeValue::Table(t) => find_in_table(t, span, path),
        DeValue::Array(a) => a.iter().enumerate().find_map(|(i, item)| {
            path.push(Segment::Index(i));
            let found = find_in_value(item, span, path);
            if found.is_none() {
                path.pop();
            }
            found
        }),
        _ => None,
    };
    // The innermost match wins; the value itself (or an `[[array]]` header) otherwise.
    inner.or_else(|| contains(&value.span(), span).then_some(Found::Value))
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end && !outer.is_empty()
}

/// 1-based line of byte `offset`.
pub fn line_number(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// `line N, column M` of `span` and the line quoted with the span underlined, as toml shows it.
pub fn excerpt(text: &str, span: &Range<usize>) -> (usize, usize, String) {
    let mut start = span.start.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = span.end.clamp(start, text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let content = text[line_start..line_end].trim_end_matches('\r');
    let line = line_number(text, start);
    let column = text[line_start..start].chars().count() + 1;
    let width = text[start..end.clamp(start, line_end)]
        .chars()
        .count()
        .max(1);
    let gutter = " ".repeat(line.to_string().len());
    let quoted = format!(
        "{gutter} |\n{line} | {content}\n{gutter} | {}{}",
        " ".repeat(column - 1),
        "^".repeat(width)
    );
    (line, column, quoted)
}
