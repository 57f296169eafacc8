//! Borrowing JSON access: validation, and object members / array elements as byte spans
//! of the original text.
//!
//! [`parse`] validates the whole message in one pass (an iterative RFC 8259 validator: in
//! the strict dialect it accepts exactly what serde_json accepts, which is tested
//! differentially against serde_json; the Python dialect also reads `NaN`, `Infinity` and
//! `-Infinity` as values; both with a configured nesting limit) and records on the way an
//! [`Outline`]: the members and elements of the containers the rules' paths can go through
//! ([`Reach`]), as byte spans of the original text. Paths are then followed through the
//! outline, so no part of the message is scanned twice. It is hand-written because it is the
//! hot path: one pass, no recursion, no allocation for small messages, strings skipped 8
//! bytes at a time. serde_json is used to decode escaped strings and to encode strings.
//! All offsets are byte offsets into the message.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use smallvec::SmallVec;

use super::config::JsonDialect;
use super::path::Segment;

/// One value inside a container, an object member or an array element, as the engine sees
/// it: a view of an outline entry, sliced from the text only when asked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Member<'a> {
    src: &'a str,
    entry: Entry,
    /// Its index in the outline: its recorded values follow it there.
    index: u32,
}

impl<'a> Member<'a> {
    /// The key literal including its quotes (still escaped); empty for an array element.
    pub fn key_raw(&self) -> &'a str {
        let start = self.key_start();
        self.src
            .get(start..start + self.entry.key_len as usize)
            .unwrap_or_default()
    }

    /// Whether the key contains escapes (then it must be decoded to compare).
    pub fn key_escaped(&self) -> bool {
        self.entry.key_escaped
    }

    /// Offset of the key's opening quote (of the value, for an array element).
    pub fn key_start(&self) -> usize {
        self.entry.key_start as usize
    }

    /// The value's text.
    pub fn raw(&self) -> &'a str {
        self.src.get(self.start()..self.end()).unwrap_or_default()
    }

    /// Offset of the value.
    pub fn start(&self) -> usize {
        self.entry.start as usize
    }

    /// Offset just after the value.
    pub fn end(&self) -> usize {
        self.entry.end as usize
    }

    /// Its recorded values (none unless a path goes through it).
    pub fn kids(&self) -> Kids {
        Kids {
            from: self.index + 1,
            to: self.entry.link,
        }
    }

    /// Is the (unescaped) key equal to `k`?
    #[inline(always)]
    pub fn key_is(&self, k: &str) -> bool {
        if self.key_escaped() {
            return unescape(self.key_raw()).is_some_and(|d| d == k);
        }
        // Most keys differ in length: that test comes first, then the bytes between the quotes.
        if self.entry.key_len as usize != k.len() + 2 {
            return false;
        }
        let start = self.key_start() + 1;
        self.src.as_bytes().get(start..start + k.len()) == Some(k.as_bytes())
    }
}

/// How the outline stores a [`Member`]: offsets into the text (24 bytes; [`parse`] refuses
/// texts of 4 GiB and more, far above the largest message accepted).
#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    key_start: u32,
    /// 0 for an array element.
    key_len: u32,
    start: u32,
    end: u32,
    /// While the value is being read: the index of the enclosing value being read ([`NONE`]
    /// at the top), so no stack is kept beside the outline. Once it ended: the index of the
    /// entry after its descendants.
    link: u32,
    key_escaped: bool,
}

const NONE: u32 = u32::MAX;

/// The recorded values of one container: outline entries `from..to`, found without a search.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Kids {
    from: u32,
    to: u32,
}

/// The values of a document that [`parse`] recorded (see [`Reach`]), in document order; the
/// first 16 live on the stack.
pub(crate) struct Outline<'a> {
    src: &'a str,
    entries: SmallVec<[Entry; 16]>,
    /// The innermost recorded value being read.
    open: u32,
}

impl<'a> Outline<'a> {
    pub fn new() -> Self {
        Outline {
            src: "",
            entries: SmallVec::new(),
            open: NONE,
        }
    }

    /// The text the outline is of.
    pub fn src(&self) -> &'a str {
        self.src
    }

    /// A value starts: it is recorded, inside the value being read.
    #[inline]
    fn open(&mut self, mut entry: Entry) {
        entry.link = self.open;
        // Fewer entries than text bytes, and the text is under 4 GiB.
        self.open = self.entries.len() as u32;
        self.entries.push(entry);
    }

    /// The innermost value being read ends at `end`.
    #[inline]
    fn close(&mut self, end: usize) -> Option<()> {
        let next = self.entries.len() as u32;
        let entry = self.entries.get_mut(self.open as usize)?;
        entry.end = end as u32;
        self.open = std::mem::replace(&mut entry.link, next);
        Some(())
    }

    /// The values of the top-level object: every entry is inside it.
    pub fn top(&self) -> Kids {
        Kids {
            from: 0,
            to: self.entries.len() as u32,
        }
    }

    /// The members (or elements) of the container whose text spans `start..end`, in order.
    pub fn children(&self, start: usize, end: usize) -> impl Iterator<Item = Member<'a>> + '_ {
        let from = self
            .entries
            .partition_point(|e| e.key_start as usize <= start);
        let to = from + self.entries[from..].partition_point(|e| (e.key_start as usize) < end);
        self.members(Kids {
            from: from as u32,
            to: to as u32,
        })
    }

    /// The members (or elements) of one container, in order.
    pub fn members(&self, kids: Kids) -> impl Iterator<Item = Member<'a>> + '_ {
        let list = self.entries.get(..kids.to as usize).unwrap_or_default();
        let src = self.src;
        let mut i = kids.from as usize;
        std::iter::from_fn(move || {
            let entry = *list.get(i)?;
            let index = i as u32;
            // Skips the value's descendants; always moves on, even past an unclosed entry.
            i = (entry.link as usize).max(i + 1);
            Some(Member { src, entry, index })
        })
    }
}

/// Which values [`parse`] records: those the rules' paths can reach. The top level's values
/// are recorded when there is any path; a container's values only when some path can go on
/// through it, so a large array no path enters costs no outline entries.
#[derive(Clone, Debug, Default)]
pub(crate) struct Reach {
    any_path: bool,
    /// Per level (0: the top level's values): what the paths that go on below it name there.
    levels: Vec<Through>,
}

#[derive(Clone, Debug, Default)]
struct Through {
    /// Key literals, quotes included: compared with the text as they are.
    keys: Vec<Box<[u8]>>,
    any_key: bool,
    any_index: bool,
}

impl Reach {
    pub fn add(&mut self, segments: &[Segment]) {
        self.any_path = true;
        let through = segments.len().saturating_sub(1);
        for (level, seg) in segments.iter().take(through).enumerate() {
            if self.levels.len() <= level {
                self.levels.push(Through::default());
            }
            let at = &mut self.levels[level];
            let key = match seg {
                Segment::Any => {
                    at.any_key = true;
                    at.any_index = true;
                    continue;
                }
                Segment::Index { key, .. } => {
                    at.any_index = true;
                    key
                }
                Segment::Key(key) => key,
            };
            let literal = format!("\"{key}\"").into_bytes().into_boxed_slice();
            if !at.keys.contains(&literal) {
                at.keys.push(literal);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.any_path
    }

    /// Whether a path goes through the container that is a value at `level`: a member with
    /// the key literal `key` (quotes included), or an array element (`None`).
    fn enters(&self, level: usize, key: Option<(&[u8], bool)>) -> bool {
        let Some(at) = self.levels.get(level) else {
            return false;
        };
        match key {
            None => at.any_index,
            // An escaped key would need decoding: recording it anyway is only extra work.
            Some((_, escaped)) if escaped || at.any_key => true,
            Some((raw, _)) => at.keys.iter().any(|k| **k == *raw),
        }
    }
}

/// The result of [`parse`].
pub(crate) enum Parsed {
    /// A valid document whose top level is an object with its `{` at `start`.
    Object { start: usize },
    /// A valid document with another top level.
    Other,
    /// Not JSON in the dialect.
    NotJson,
    /// Nested deeper than the limit (whatever follows).
    TooDeep,
}

/// What [`parse`] accepts beyond the grammar of RFC 8259.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Syntax {
    pub dialect: JsonDialect,
    pub max_depth: usize,
}

/// Per open container: whether it is an object, and whether its values are recorded. Two words
/// per 64 levels, the first 128 levels inline, so any depth limit works without recursion.
struct Levels {
    words: SmallVec<[[u64; 2]; 2]>,
}

impl Levels {
    const OBJECT: usize = 0;
    const RECORDED: usize = 1;

    fn new() -> Self {
        Levels {
            words: SmallVec::from_buf([[0; 2]; 2]),
        }
    }

    /// The container opened at `depth` (one more than the deepest open one).
    #[inline]
    fn open(&mut self, depth: usize, object: bool, recorded: bool) -> Option<()> {
        let (word, bit) = (depth / 64, 1u64 << (depth % 64));
        if word == self.words.len() {
            self.words.push([0; 2]);
        }
        let pair = self.words.get_mut(word)?;
        for (slot, on) in [(Self::OBJECT, object), (Self::RECORDED, recorded)] {
            if on {
                pair[slot] |= bit;
            } else {
                pair[slot] &= !bit;
            }
        }
        Some(())
    }

    /// (is an object, its values are recorded) of the container open at `depth`.
    #[inline]
    fn get(&self, depth: usize) -> Option<(bool, bool)> {
        let pair = self.words.get(depth / 64)?;
        let bit = 1u64 << (depth % 64);
        Some((
            pair[Self::OBJECT] & bit != 0,
            pair[Self::RECORDED] & bit != 0,
        ))
    }
}

#[inline]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// Validate `src` as exactly one JSON document (RFC 8259 and `syntax.dialect`; whitespace
/// around it allowed; at most `syntax.max_depth` nested arrays/objects) and record in `out` the
/// values `reach` says the paths can get to — in one pass, without recursion or allocation
/// (beyond the outline's spill and levels past 128). The strict dialect accepts exactly what
/// serde_json accepts (including any `\uXXXX` escape; `src` is already known to be UTF-8).
pub(crate) fn parse<'a>(
    src: &'a str,
    reach: &Reach,
    out: &mut Outline<'a>,
    syntax: Syntax,
) -> Parsed {
    parse_inner(src, reach, out, syntax).unwrap_or(Parsed::NotJson)
}

fn parse_inner<'a>(
    src: &'a str,
    reach: &Reach,
    out: &mut Outline<'a>,
    syntax: Syntax,
) -> Option<Parsed> {
    if u32::try_from(src.len()).is_err() {
        return None;
    }
    out.src = src;
    let b = src.as_bytes();
    let mut i = skip_ws(b, 0);
    let top_start = i;
    let top_is_object = b.get(i) == Some(&b'{');
    // Level d describes the container at depth d+1; `here` and `in_object` are those of the
    // container being read, kept apart because every value asks them.
    let mut levels = Levels::new();
    let mut here = false;
    let mut in_object = false;
    let mut depth: usize = 0;
    // Whether a path goes through the member value about to be read, if it is a container.
    let mut enter_member = false;
    loop {
        // A value starts at `i`; an array element is recorded here, a member at its key.
        if here && !in_object {
            out.open(Entry {
                key_start: i as u32,
                start: i as u32,
                ..Entry::default()
            });
        }
        match *b.get(i)? {
            open @ (b'{' | b'[') => {
                if depth >= syntax.max_depth {
                    return Some(Parsed::TooDeep);
                }
                let is_object = open == b'{';
                let parent = here;
                let parent_in_object = in_object;
                here = if depth == 0 {
                    // The rules look only into objects: a top-level array is validated only.
                    is_object && !reach.is_empty()
                } else if in_object {
                    enter_member
                } else {
                    here && reach.enters(depth - 1, None)
                };
                levels.open(depth, is_object, here)?;
                depth += 1;
                in_object = is_object;
                i = skip_ws(b, i + 1);
                let close = if is_object { b'}' } else { b']' };
                if b.get(i) == Some(&close) {
                    i += 1;
                    depth -= 1;
                    here = parent;
                    in_object = parent_in_object;
                } else if is_object {
                    (i, enter_member) = key(b, i, here.then_some((reach, depth)), out)?;
                    continue;
                } else {
                    continue;
                }
            }
            b'"' => i = string_end_checked(b, i)?.0,
            b'-' | b'0'..=b'9' => {
                i = match number_end(b, i) {
                    Some(end) => end,
                    None => non_finite(b, i, syntax.dialect)?,
                }
            }
            b't' => i = literal(b, i, b"true")?,
            b'f' => i = literal(b, i, b"false")?,
            b'n' => i = literal(b, i, b"null")?,
            _ => i = non_finite(b, i, syntax.dialect)?,
        }
        // A value ended at `i`: record its end, close containers, find the next value.
        loop {
            if depth == 0 {
                if skip_ws(b, i) != b.len() {
                    return None;
                }
                return Some(if top_is_object {
                    Parsed::Object { start: top_start }
                } else {
                    Parsed::Other
                });
            }
            if here {
                out.close(i)?;
            }
            i = skip_ws(b, i);
            match (b.get(i)?, in_object) {
                (b',', _) => {
                    i = skip_ws(b, i + 1);
                    if in_object {
                        (i, enter_member) = key(b, i, here.then_some((reach, depth)), out)?;
                    }
                    break;
                }
                (b'}', true) | (b']', false) => {
                    i += 1;
                    depth -= 1;
                    (in_object, here) = match depth {
                        0 => (false, false),
                        d => levels.get(d - 1)?,
                    };
                }
                _ => return None,
            }
        }
    }
}

/// A key and `:` at `i` in the object at `depth`, recorded in `out` when that object's values
/// are (`record`): the value's offset, and whether a path goes through the value.
#[inline(always)]
fn key(
    b: &[u8],
    i: usize,
    record: Option<(&Reach, usize)>,
    out: &mut Outline<'_>,
) -> Option<(usize, bool)> {
    let (value, (start, end, escaped)) = parse_key(b, i)?;
    let Some((reach, depth)) = record else {
        return Some((value, false));
    };
    out.open(Entry {
        key_start: start as u32,
        key_len: (end - start) as u32,
        start: value as u32,
        key_escaped: escaped,
        ..Entry::default()
    });
    let container = matches!(b.get(value), Some(b'{' | b'['));
    let enter = container && reach.enters(depth - 1, Some((b.get(start..end)?, escaped)));
    Some((value, enter))
}

/// A key string, `:` and whitespace at `i`: (offset of the value, (key start, key end,
/// key has escapes)).
#[inline]
fn parse_key(b: &[u8], i: usize) -> Option<(usize, (usize, usize, bool))> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let (end, escaped) = string_end_checked(b, i)?;
    let j = skip_ws(b, end);
    if b.get(j) != Some(&b':') {
        return None;
    }
    Some((skip_ws(b, j + 1), (i, end, escaped)))
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

#[inline]
fn word_at(b: &[u8], j: usize) -> Option<u64> {
    let chunk = b.get(j..j + 8)?;
    let mut word = [0u8; 8];
    word.copy_from_slice(chunk);
    Some(u64::from_le_bytes(word))
}

/// The offset of the first quote, backslash or control character at or after `j` (`b.len()`
/// if none): 8 bytes at a time, then one.
#[inline(always)]
fn next_special(b: &[u8], mut j: usize) -> usize {
    const QUOTES: u64 = ONES * b'"' as u64;
    const BACKSLASHES: u64 = ONES * b'\\' as u64;
    const SPACES: u64 = ONES * 0x20;
    // Each term's lowest set bit marks its first match exactly.
    while let Some(x) = word_at(b, j) {
        let q = x ^ QUOTES;
        let s = x ^ BACKSLASHES;
        let found =
            (q.wrapping_sub(ONES) & !q | s.wrapping_sub(ONES) & !s | x.wrapping_sub(SPACES) & !x)
                & HIGHS;
        if found != 0 {
            return j + (found.trailing_zeros() / 8) as usize;
        }
        j += 8;
    }
    while b
        .get(j)
        .is_some_and(|&c| c != b'"' && c != b'\\' && c >= 0x20)
    {
        j += 1;
    }
    j
}

/// Validate the string literal at `open`: offset just after it, and whether it has escapes.
#[inline(always)]
fn string_end_checked(b: &[u8], open: usize) -> Option<(usize, bool)> {
    let mut j = open + 1;
    let mut escaped = false;
    loop {
        j = next_special(b, j);
        match *b.get(j)? {
            b'"' => return Some((j + 1, escaped)),
            b'\\' => {
                escaped = true;
                match *b.get(j + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => j += 2,
                    b'u' => {
                        if !b.get(j + 2..j + 6)?.iter().all(u8::is_ascii_hexdigit) {
                            return None;
                        }
                        j += 6;
                    }
                    _ => return None,
                }
            }
            _ => return None, // control character
        }
    }
}

/// Validate the number at `i` (`-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`).
fn number_end(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |mut j: usize| {
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        j
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match *b.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i = digits(i + 1),
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        let j = digits(i + 1);
        if j == i + 1 {
            return None;
        }
        i = j;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let j = digits(i);
        if j == i {
            return None;
        }
        i = j;
    }
    Some(i)
}

#[inline]
fn literal(b: &[u8], i: usize, lit: &[u8]) -> Option<usize> {
    (b.get(i..i + lit.len())? == lit).then_some(i + lit.len())
}

/// `NaN`, `Infinity` or `-Infinity` at `i`, in the Python dialect only: Python's `json.loads`
/// reads them as floats wherever a value may stand (not `-NaN`), and `json.dumps` writes them.
#[cold]
fn non_finite(b: &[u8], i: usize, dialect: JsonDialect) -> Option<usize> {
    if dialect != JsonDialect::Python {
        return None;
    }
    [b"NaN".as_slice(), b"Infinity", b"-Infinity"]
        .into_iter()
        .find_map(|lit| literal(b, i, lit))
}

/// Is `raw`, a valid value, one of the Python dialect's non-finite numbers?
pub(crate) fn is_non_finite(raw: &str) -> bool {
    matches!(raw, "NaN" | "Infinity" | "-Infinity")
}

/// A string, borrowed unless it contains escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// The unescaped content of a JSON string literal (`raw` includes the quotes).
/// Borrowed unless it contains escapes. `None` if it is not a valid string literal
/// (e.g. a lone surrogate escape).
pub(crate) fn unescape(raw: &str) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.as_bytes().contains(&b'\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<Str<'_>>(raw).ok().map(|k| k.0)
}

/// Append `s` as a JSON string literal.
pub(crate) fn push_json_string(out: &mut Vec<u8>, s: &str) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Is the (valid) document nested deeper than `limit` arrays/objects? (Test oracle.)
#[cfg(test)]
pub(crate) fn too_deep(b: &[u8], limit: usize) -> bool {
    // Nesting deeper than `limit` needs more than `limit` opening and closing brackets.
    if b.len() <= 2 * limit + 1 || count_openers(b) <= limit {
        return false;
    }
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() {
                    match b[i] {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
}

/// Number of `[` and `{` bytes (vectorizable: `c | 0x20 == b'{'` holds exactly for both).
#[cfg(test)]
fn count_openers(b: &[u8]) -> usize {
    b.chunks(255)
        .map(|chunk| {
            let n: u8 = chunk.iter().map(|&c| u8::from(c | 0x20 == b'{')).sum();
            usize::from(n)
        })
        .sum()
}

#[cfg(test)]
mod tests;
