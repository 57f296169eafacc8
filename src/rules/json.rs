//! Borrowing JSON access: validation, and object members / array elements as byte spans
//! of the original text.
//!
//! [`parse`] validates the whole message in one pass (an iterative RFC 8259 validator
//! that accepts exactly what serde_json accepts — this is tested differentially against
//! serde_json — plus a nesting limit of [`MAX_DEPTH`]) and collects the members of the
//! top-level object on the way. It is hand-written because it is the hot path: one pass,
//! no recursion, no allocation, strings skipped 8 bytes at a time.
//!
//! Nested objects and arrays are then located along configured paths only, by a small
//! scanner that relies on the text being valid: strings are skipped by searching for the
//! closing quote, containers by counting brackets outside strings. The scanner never
//! indexes out of bounds and gives up (returns `None`/nothing) on anything unexpected, so
//! it cannot panic even on text it was not meant for. serde_json is used to decode
//! escaped strings and to encode strings. All offsets are byte offsets into the message.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};

/// Maximum nesting depth of arrays/objects accepted (deeper documents are `NotJson`).
pub(crate) const MAX_DEPTH: usize = 128;

/// One member of an object.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Member<'a> {
    /// The key literal including its quotes (still escaped).
    pub key_raw: &'a str,
    /// Whether the key contains escapes (then it must be decoded to compare).
    pub key_escaped: bool,
    /// Offset of the key's opening quote.
    pub key_start: usize,
    /// The value's text.
    pub raw: &'a str,
    /// Offset of the value.
    pub start: usize,
}

impl<'a> Member<'a> {
    const EMPTY: Member<'static> = Member {
        key_raw: "",
        key_escaped: false,
        key_start: 0,
        raw: "",
        start: 0,
    };

    /// Is the (unescaped) key equal to `k`?
    #[inline]
    pub fn key_is(&self, k: &str) -> bool {
        if self.key_escaped {
            unescape(self.key_raw).is_some_and(|d| d == k)
        } else {
            self.key_raw.len() == k.len() + 2
                && self.key_raw.get(1..self.key_raw.len() - 1) == Some(k)
        }
    }

    /// Offset just after the value.
    pub fn end(&self) -> usize {
        self.start + self.raw.len()
    }
}

/// Members of the top-level object; the first 16 live on the stack.
pub(crate) struct MemberList<'a> {
    inline: [Member<'a>; 16],
    len: usize,
    heap: Vec<Member<'a>>,
}

impl<'a> MemberList<'a> {
    pub fn new() -> Self {
        MemberList {
            inline: [Member::EMPTY; 16],
            len: 0,
            heap: Vec::new(),
        }
    }

    fn push(&mut self, m: Member<'a>) {
        if self.heap.is_empty() && self.len < self.inline.len() {
            self.inline[self.len] = m;
            self.len += 1;
        } else {
            if self.heap.is_empty() {
                self.heap.extend_from_slice(&self.inline[..self.len]);
            }
            self.heap.push(m);
        }
    }

    pub fn as_slice(&self) -> &[Member<'a>] {
        if self.heap.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.heap
        }
    }
}

/// The result of [`parse`].
pub(crate) enum Parsed {
    /// A valid document whose top level is an object with its `{` at `start`; its
    /// members were pushed to the output list.
    Object { start: usize },
    /// A valid document with another top level.
    Other,
    /// Not JSON, or nested deeper than [`MAX_DEPTH`].
    NotJson,
}

#[inline]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// Validate `src` as exactly one JSON document (RFC 8259; whitespace around it allowed;
/// at most [`MAX_DEPTH`] nested arrays/objects) and, if its top level is an object,
/// collect the object's members — in one pass, without recursion or allocation (beyond
/// the member list's spill). Accepts exactly what serde_json accepts (including any
/// `\uXXXX` escape; `src` is already known to be UTF-8).
pub(crate) fn parse<'a>(src: &'a str, out: &mut MemberList<'a>) -> Parsed {
    parse_inner(src, out).unwrap_or(Parsed::NotJson)
}

fn parse_inner<'a>(src: &'a str, out: &mut MemberList<'a>) -> Option<Parsed> {
    let b = src.as_bytes();
    let mut i = skip_ws(b, 0);
    let top_start = i;
    let top_is_object = b.get(i) == Some(&b'{');
    // Bit d is set when the container at depth d+1 is an object (MAX_DEPTH <= 128).
    let mut objects: u128 = 0;
    let mut depth: usize = 0;
    // The top-level member being read: key (start, end, escaped) and value start.
    let mut key = (0, 0, false);
    let mut vstart = 0;
    loop {
        // A value starts at `i`.
        if depth == 1 {
            vstart = i;
        }
        match *b.get(i)? {
            open @ (b'{' | b'[') => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                let is_object = open == b'{';
                if is_object {
                    objects |= 1 << depth;
                } else {
                    objects &= !(1 << depth);
                }
                depth += 1;
                i = skip_ws(b, i + 1);
                let close = if is_object { b'}' } else { b']' };
                if b.get(i) == Some(&close) {
                    i += 1;
                    depth -= 1;
                } else if is_object {
                    let (next, k) = parse_key(b, i)?;
                    if depth == 1 {
                        key = k;
                    }
                    i = next;
                    continue;
                } else {
                    continue;
                }
            }
            b'"' => i = string_end_checked(b, i)?.0,
            b'-' | b'0'..=b'9' => i = number_end(b, i)?,
            b't' => i = literal(b, i, b"true")?,
            b'f' => i = literal(b, i, b"false")?,
            b'n' => i = literal(b, i, b"null")?,
            _ => return None,
        }
        // A value ended at `i`: record it, close containers, find the next value.
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
            if depth == 1 && top_is_object {
                out.push(Member {
                    key_raw: src.get(key.0..key.1)?,
                    key_escaped: key.2,
                    key_start: key.0,
                    raw: src.get(vstart..i)?,
                    start: vstart,
                });
            }
            i = skip_ws(b, i);
            let in_object = objects & (1 << (depth - 1)) != 0;
            match (b.get(i)?, in_object) {
                (b',', _) => {
                    i = skip_ws(b, i + 1);
                    if in_object {
                        let (next, k) = parse_key(b, i)?;
                        if depth == 1 {
                            key = k;
                        }
                        i = next;
                    }
                    break;
                }
                (b'}', true) | (b']', false) => {
                    i += 1;
                    depth -= 1;
                }
                _ => return None,
            }
        }
    }
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

/// Validate the string literal at `open`: offset just after it, and whether it has escapes.
fn string_end_checked(b: &[u8], open: usize) -> Option<(usize, bool)> {
    const QUOTES: u64 = ONES * b'"' as u64;
    const BACKSLASHES: u64 = ONES * b'\\' as u64;
    const SPACES: u64 = ONES * 0x20;
    let mut j = open + 1;
    let mut escaped = false;
    loop {
        // Find the next quote, backslash or control character, 8 bytes at a time. Each
        // term's lowest set bit marks its first match exactly.
        while let Some(x) = word_at(b, j) {
            let q = x ^ QUOTES;
            let s = x ^ BACKSLASHES;
            let found = (q.wrapping_sub(ONES) & !q
                | s.wrapping_sub(ONES) & !s
                | x.wrapping_sub(SPACES) & !x)
                & HIGHS;
            if found != 0 {
                j += (found.trailing_zeros() / 8) as usize;
                break;
            }
            j += 8;
        }
        while b
            .get(j)
            .is_some_and(|&c| c != b'"' && c != b'\\' && c >= 0x20)
        {
            j += 1;
        }
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

/// Offset of the next `"` at or after `j` (8 bytes at a time).
#[inline]
fn find_quote(b: &[u8], mut j: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const QUOTES: u64 = ONES * b'"' as u64;
    while let Some(chunk) = b.get(j..j + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word) ^ QUOTES;
        // The lowest set bit marks the first zero byte, i.e. the first quote.
        let found = x.wrapping_sub(ONES) & !x & HIGHS;
        if found != 0 {
            return Some(j + (found.trailing_zeros() / 8) as usize);
        }
        j += 8;
    }
    while let Some(&c) = b.get(j) {
        if c == b'"' {
            return Some(j);
        }
        j += 1;
    }
    None
}

/// Offset just after the string literal whose opening quote is at `open`.
fn string_end(src: &str, open: usize) -> Option<usize> {
    let b = src.as_bytes();
    let mut j = open + 1;
    loop {
        let q = find_quote(b, j)?;
        // The quote closes the string unless preceded by an odd number of backslashes.
        let mut k = q;
        while k > open + 1 && b.get(k - 1) == Some(&b'\\') {
            k -= 1;
        }
        if (q - k) % 2 == 0 {
            return Some(q + 1);
        }
        j = q + 1;
    }
}

/// Offset just after the value starting at `i`, and the value's nesting depth (0 for
/// scalars, 1 for `[]`, ...).
fn value_end(src: &str, i: usize) -> Option<(usize, usize)> {
    let b = src.as_bytes();
    match b.get(i)? {
        b'"' => Some((string_end(src, i)?, 0)),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut max = 0usize;
            let mut j = i;
            while let Some(&c) = b.get(j) {
                match c {
                    b'"' => {
                        j = string_end(src, j)?;
                        continue;
                    }
                    b'{' | b'[' => {
                        depth += 1;
                        max = max.max(depth);
                    }
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some((j + 1, max));
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while b
                .get(j)
                .is_some_and(|c| !matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
            {
                j += 1;
            }
            Some((j, 0))
        }
    }
}

/// Call `f` for each member of the object whose `{` is at `start`; returns the offset
/// just after the object's `}` and the object's nesting depth (`None` if the text is not
/// a well-formed object).
pub(crate) fn members<'a>(
    src: &'a str,
    start: usize,
    f: &mut dyn FnMut(Member<'a>),
) -> Option<(usize, usize)> {
    let b = src.as_bytes();
    if b.get(start) != Some(&b'{') {
        return None;
    }
    let mut i = skip_ws(b, start + 1);
    if b.get(i) == Some(&b'}') {
        return Some((i + 1, 1));
    }
    let mut max_depth = 0;
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(src, i)?;
        let key_raw = src.get(i..key_end)?;
        let key_start = i;
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let vstart = skip_ws(b, i + 1);
        let (vend, depth) = value_end(src, vstart)?;
        max_depth = max_depth.max(depth);
        f(Member {
            key_raw,
            key_escaped: key_raw.as_bytes().contains(&b'\\'),
            key_start,
            raw: src.get(vstart..vend)?,
            start: vstart,
        });
        i = skip_ws(b, vend);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return Some((i + 1, max_depth + 1)),
            _ => return None,
        }
    }
}

/// Call `f(index, value_text, value_offset)` for each element of the array whose `[` is
/// at `start`.
pub(crate) fn elements<'a>(
    src: &'a str,
    start: usize,
    f: &mut dyn FnMut(usize, &'a str, usize),
) -> Option<usize> {
    let b = src.as_bytes();
    if b.get(start) != Some(&b'[') {
        return None;
    }
    let mut i = skip_ws(b, start + 1);
    if b.get(i) == Some(&b']') {
        return Some(i + 1);
    }
    let mut n = 0;
    loop {
        let (vend, _) = value_end(src, i)?;
        f(n, src.get(i..vend)?, i);
        n += 1;
        i = skip_ws(b, vend);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b']') => return Some(i + 1),
            _ => return None,
        }
    }
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

/// Byte spans of the members of the object whose `{` is at `obj_start`:
/// (key start, value end, value start).
pub(crate) fn member_spans(src: &str, obj_start: usize) -> Vec<(usize, usize, usize)> {
    let mut spans = Vec::new();
    members(src, obj_start, &mut |m| {
        spans.push((m.key_start, m.end(), m.start))
    });
    spans
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::IgnoredAny;

    fn top(src: &str) -> (Option<usize>, Vec<Member<'_>>) {
        let mut list = MemberList::new();
        let span = match parse(src, &mut list) {
            Parsed::Object { start } => Some(start),
            Parsed::Other => None,
            Parsed::NotJson => panic!("not JSON: {src}"),
        };
        (span, list.as_slice().to_vec())
    }

    fn serde_accepts(src: &str) -> bool {
        serde_json::from_str::<IgnoredAny>(src).is_ok() && !too_deep(src.as_bytes(), MAX_DEPTH)
    }

    fn we_accept(src: &str) -> bool {
        !matches!(parse(src, &mut MemberList::new()), Parsed::NotJson)
    }

    #[test]
    fn top_members_and_offsets() {
        let src =
            r#"  {"a" : 1, "b\u0065":{"x":[1,"]}\"",2]} ,"c":"s\\" , "d":-1.5e3,"e":[],"f":{}}  "#;
        let (span, m) = top(src);
        assert_eq!(span, Some(2));
        let got: Vec<_> = m
            .iter()
            .map(|m| {
                (
                    unescape(m.key_raw).unwrap().into_owned(),
                    m.raw,
                    &src[m.start..m.end()],
                    &src[m.key_start..m.key_start + m.key_raw.len()],
                )
            })
            .collect();
        let want: Vec<(String, &str, &str, &str)> = vec![
            ("a".into(), "1", "1", "\"a\""),
            (
                "be".into(),
                r#"{"x":[1,"]}\"",2]}"#,
                r#"{"x":[1,"]}\"",2]}"#,
                r#""b\u0065""#,
            ),
            ("c".into(), r#""s\\""#, r#""s\\""#, "\"c\""),
            ("d".into(), "-1.5e3", "-1.5e3", "\"d\""),
            ("e".into(), "[]", "[]", "\"e\""),
            ("f".into(), "{}", "{}", "\"f\""),
        ];
        assert_eq!(got, want);
        assert!(m[0].key_is("a") && !m[0].key_escaped);
        assert!(m[1].key_is("be") && m[1].key_escaped && !m[1].key_is("b\\u0065"));
        assert!(!m[0].key_is("ab"));
    }

    #[test]
    fn many_members_spill_to_the_heap() {
        let body: Vec<String> = (0..40).map(|i| format!(r#""k{i}":{i}"#)).collect();
        let src = format!("{{{}}}", body.join(","));
        let (_, m) = top(&src);
        assert_eq!(m.len(), 40);
        assert!(m
            .iter()
            .enumerate()
            .all(|(i, m)| m.key_is(&format!("k{i}")) && m.raw == i.to_string()));
    }

    #[test]
    fn elements_and_nested_members() {
        let src = r#"[ 1 , "a,]" ,{"k":[2]}, [ ] ,null,true]"#;
        let mut got = Vec::new();
        let end = elements(src, 0, &mut |i, v, s| got.push((i, v, s)));
        assert_eq!(end, Some(src.len()));
        let texts: Vec<_> = got
            .iter()
            .map(|&(i, v, s)| (i, v, &src[s..s + v.len()]))
            .collect();
        assert_eq!(
            texts,
            vec![
                (0, "1", "1"),
                (1, "\"a,]\"", "\"a,]\""),
                (2, r#"{"k":[2]}"#, r#"{"k":[2]}"#),
                (3, "[ ]", "[ ]"),
                (4, "null", "null"),
                (5, "true", "true")
            ]
        );
        assert_eq!(elements("[]", 0, &mut |_, _, _| panic!()), Some(2));
        assert_eq!(members("{ }", 0, &mut |_| panic!()), Some((3, 1)));
        assert_eq!(
            members(r#"{"a":[{"b":[]}],"c":{}}"#, 0, &mut |_| {}),
            Some((23, 4))
        );
    }

    #[test]
    fn scanner_gives_up_on_garbage_without_panicking() {
        for bad in [
            "",
            "{",
            "{\"a",
            "{\"a\"",
            "{\"a\":",
            "{\"a\":1",
            "{\"a\":1,",
            "{1:2}",
            "{\"a\" 1}",
            "[",
            "[1",
            "[1 2]",
            "\"",
            "{\"a\":\"\\\"}",
            "{\"a\":[}",
        ] {
            let _ = members(bad, 0, &mut |_| {});
            let _ = elements(bad, 0, &mut |_, _, _| {});
            let _ = value_end(bad, 0);
            let _ = member_spans(bad, 0);
        }
        assert_eq!(members("{\"a\":1", 0, &mut |_| {}), None);
        assert_eq!(value_end("}", 0), Some((0, 0)));
    }

    #[test]
    fn validation_matches_serde_json() {
        let ok = [
            "[1,2]",
            "1",
            "\"s\"",
            "null",
            "true",
            "false",
            " 1.5e3 ",
            "{}",
            "[]",
            " [ ] ",
            "{ }",
            "{\"a\":{\"b\":[1,{}]}}",
            "-0",
            "0.5",
            "-1.5E+3",
            "1e-3",
            "0e0",
            "123456789012345678901234567890",
            "\"\\u00e9\\ud800\\\"\\\\\\/\\b\\f\\n\\r\\t\"",
            "\"é😀\"",
            "{\"a\":1,\"a\":2}",
            "\t\n\r {\"a\" : [ 1 , 2 ] }\n",
            "1e999",
            "[[[[]]]]",
            "{\"\":\"\"}",
            "\"\\u0000\"",
            "\"abcdefghijklmnopqrstuvwxyz\\\"0123456789\"",
        ];
        let bad = [
            "",
            " ",
            "{",
            "}",
            "[",
            "]",
            "{\"a\":}",
            "{} x",
            "[1,]",
            "{\"a\":1,}",
            "nul",
            "nulll",
            "tru",
            "{'a':1}",
            "{\"a\":\"\\q\"}",
            "01",
            "-",
            "1.",
            ".5",
            "1e",
            "1e+",
            "+1",
            "--1",
            "0x10",
            "NaN",
            "Infinity",
            "\"abc",
            "\"\\u12\"",
            "\"\\u12g4\"",
            "\"a\u{1}b\"",
            "\"tab\there\"",
            "{1:2}",
            "{\"a\" 1}",
            "{\"a\":1 \"b\":2}",
            "[1 2]",
            "[1,,2]",
            "{,}",
            "[,]",
            "{\"a\"}",
            "\u{feff}{}",
            "{\"a\":[}",
            "{\"a\":{]}",
            "[}",
            "{]",
            "1 2",
            "\"\\\"",
            "\"abcdefghijklmnop\\",
            "\"abcdefgh\u{1f}ijklmnop\"",
        ];
        for src in ok {
            assert!(serde_accepts(src), "oracle rejects {src:?}");
            assert!(we_accept(src), "we reject {src:?}");
        }
        for src in bad {
            assert!(!serde_accepts(src), "oracle accepts {src:?}");
            assert!(!we_accept(src), "we accept {src:?}");
        }
        // depth: 128 levels are fine, 129 are not
        let at = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(we_accept(&at(128)) && !we_accept(&at(129)) && !we_accept(&at(100_000)));
        let obj = |n: usize| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n));
        assert!(we_accept(&obj(128)) && !we_accept(&obj(129)));
    }

    /// Random JSON-ish text: our validator and serde_json agree on every input.
    #[test]
    fn validation_differential() {
        let alphabet: &[&str] = &[
            "{", "}", "[", "]", "\"", ":", ",", " ", "\n", "\\", "\\u", "00e9", "\\n", "-", "+",
            ".", "e", "E", "0", "1", "9", "12", "true", "false", "null", "nul", "a", "é", "\u{1}",
            "\"k\":", "\"s\"", "1.5",
        ];
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut accepted = 0;
        for _ in 0..200_000 {
            let len = 1 + next() % 12;
            let src: String = (0..len)
                .map(|_| alphabet[(next() as usize) % alphabet.len()])
                .collect();
            let (ours, theirs) = (we_accept(&src), serde_accepts(&src));
            assert_eq!(ours, theirs, "disagree on {src:?}");
            accepted += usize::from(ours);
        }
        assert!(accepted > 1000, "too few valid samples: {accepted}");
    }

    #[test]
    fn member_spans_cover_keys() {
        let src = r#"{ "a" : 1 ,	"b":[2] , "c" :{} }"#;
        let spans = member_spans(src, 0);
        let keys: Vec<_> = spans.iter().map(|&(k, e, _)| &src[k..e]).collect();
        assert_eq!(keys, vec![r#""a" : 1"#, r#""b":[2]"#, r#""c" :{}"#]);
    }

    #[test]
    fn depth_check() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(!too_deep(ok.as_bytes(), MAX_DEPTH));
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(too_deep(deep.as_bytes(), MAX_DEPTH));
        let in_string = format!("{{\"a\":\"{}\"}}", "[{".repeat(1000));
        assert!(!too_deep(in_string.as_bytes(), MAX_DEPTH));
        let escaped = format!("{{\"a\":\"\\\"{}\"}}", "[".repeat(1000));
        assert!(!too_deep(escaped.as_bytes(), MAX_DEPTH));
        assert_eq!(count_openers("[{x}]{".repeat(1000).as_bytes()), 3000);
    }

    #[test]
    fn quote_search() {
        let s = "0123456789abcdef\"xyz\"";
        for start in 0..s.len() {
            let want = s.as_bytes()[start..]
                .iter()
                .position(|&c| c == b'"')
                .map(|p| p + start);
            assert_eq!(find_quote(s.as_bytes(), start), want, "{start}");
        }
        assert_eq!(find_quote("é\"".as_bytes(), 0), Some(2));
        assert_eq!(find_quote(b"abcdefghijklmnop", 0), None);
        assert_eq!(find_quote(b"", 5), None);
        assert_eq!(string_end(r#""a\"b\\""#, 0), Some(8));
        assert_eq!(string_end(r#""\\\""#, 0), None);
    }

    #[test]
    fn unescaping() {
        assert_eq!(unescape("\"abc\"").as_deref(), Some("abc"));
        assert_eq!(unescape("\"\\u00e9t\\u00e9\"").as_deref(), Some("été"));
        assert_eq!(unescape("\"\\ud800\"").as_deref(), None);
        assert_eq!(unescape("12").as_deref(), None);
        let mut out = Vec::new();
        push_json_string(&mut out, "a\"b\\é\n");
        assert_eq!(out, b"\"a\\\"b\\\\\xc3\xa9\\n\"");
    }
}
