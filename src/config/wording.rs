//! Messages in the config file's own words. serde and toml describe a wrong value with Rust's
//! type names (`invalid type: string "x", expected usize`); here that becomes what an operator
//! writes in TOML (`expected a whole number, found the string "x"`), and a misspelt key or
//! value gets the closest valid one suggested.
//!
//! serde words its messages in a few fixed forms (`serde::de::Error::invalid_type`,
//! `unknown_field`, ...); [`friendly`] rewrites those forms and leaves every other message
//! (wsnorm's own, toml's syntax errors) as it is.

use super::locate::{excerpt, Document};

/// Reads `text` as a `T`, any error worded by [`render_toml_error`]; with the parsed file, to
/// find keys in it.
pub fn read_toml<'a, T: serde::de::DeserializeOwned>(
    text: &'a str,
) -> Result<(T, Document<'a>), String> {
    let root = toml::de::DeTable::parse(text).map_err(|e| render_toml_error(text, None, &e))?;
    let doc = Document::new(text, root);
    let value = T::deserialize(toml::de::Deserializer::from(doc.root().clone()))
        .map_err(|e| render_toml_error(text, Some(&doc), &e))?;
    Ok((value, doc))
}

/// A toml error as wsnorm shows it: `line N, column M: key.path: message`, then the line
/// quoted with the offending part underlined. `doc` is the parsed file (none when the file
/// does not parse: then the message is toml's syntax error and there is no key).
pub fn render_toml_error(text: &str, doc: Option<&Document>, err: &toml::de::Error) -> String {
    let message = friendly(err.message().trim_end());
    let Some(span) = err.span() else {
        return message;
    };
    let (line, column, quoted) = excerpt(text, &span);
    let path = doc.map(|d| d.path_at(&span)).unwrap_or_default();
    let message = match doc {
        // serde sees a TOML date as a table.
        Some(doc) if doc.is_datetime(&path) => message.replace("found a table", "found a date"),
        _ => message,
    };
    if path.is_empty() {
        format!("line {line}, column {column}: {message}\n{quoted}")
    } else {
        format!("line {line}, column {column}: {path}: {message}\n{quoted}")
    }
}

/// Rewrites a serde message in the config's words; other messages are returned unchanged.
pub fn friendly(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((key, allowed)) = split_unknown(rest, "fields") {
            return match closest(key, &allowed) {
                Some(best) => format!("unknown key `{key}`, did you mean `{best}`?"),
                None if allowed.is_empty() => format!("unknown key `{key}`: this table has none"),
                None => format!(
                    "unknown key `{key}`; the keys here are {}",
                    allowed.join(", ")
                ),
            };
        }
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        if let Some((value, allowed)) = split_unknown(rest, "variants") {
            let choices = allowed
                .iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            return match closest(value, &allowed) {
                Some(best) => {
                    format!("unknown value {value:?}, did you mean {best:?}? (one of {choices})")
                }
                None => format!("unknown value {value:?}: expected one of {choices}"),
            };
        }
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some((found, expected)) = message
            .strip_prefix(prefix)
            .and_then(|rest| rest.rsplit_once(", expected "))
        {
            let (expected, found) = (expected_words(expected), found_words(found));
            if expected.starts_with("a list") && found == "a table" {
                return format!(
                    "expected {expected}, found {found} (a list of tables is written [[name]] \
                     before each one)"
                );
            }
            return format!("expected {expected}, found {found}");
        }
    }
    if let Some(key) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        return format!("missing key `{key}` (it is required)");
    }
    message.to_string()
}

/// `name`, then the names serde listed: from "x`, expected one of `a`, `b`" (or "`a` or `b`",
/// "`a`", "there are no fields").
fn split_unknown<'m>(rest: &'m str, what: &str) -> Option<(&'m str, Vec<&'m str>)> {
    if let Some(name) = rest.strip_suffix(&format!("`, there are no {what}")) {
        return Some((name, Vec::new()));
    }
    let (name, expected) = rest.rsplit_once("`, expected ")?;
    // The allowed names are the odd pieces between backticks.
    let allowed = expected.split('`').skip(1).step_by(2).collect();
    Some((name, allowed))
}

/// The allowed name closest to `word`, when close enough to be a slip (at most one edit in
/// three characters, ignoring case).
pub fn closest<'a>(word: &str, allowed: &[&'a str]) -> Option<&'a str> {
    let word = word.to_lowercase();
    allowed
        .iter()
        .map(|a| (strsim::damerau_levenshtein(&word, &a.to_lowercase()), *a))
        .filter(|(distance, a)| *distance <= (a.chars().count() / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, a)| a)
}

/// serde's `Expected` for the types the config uses, as TOML calls them.
fn expected_words(expected: &str) -> String {
    match expected {
        "usize" | "u64" | "u32" | "u16" | "u8" => "a whole number (0 or more)".into(),
        "isize" | "i64" | "i32" | "i16" | "i8" => "a whole number".into(),
        "f64" | "f32" => "a number".into(),
        "a boolean" => "true or false".into(),
        "a string" | "a borrowed string" | "a character" => "a string".into(),
        "a sequence" => "a list ([...])".into(),
        "a map" => "a table".into(),
        e if e.starts_with("struct ") => "a table".into(),
        // Every enum of the config is written as a string (`kind = "rename"`).
        e if e.starts_with("enum ") => "a string".into(),
        e => e.to_string(),
    }
}

/// serde's `Unexpected`, as TOML calls it.
fn found_words(found: &str) -> String {
    let quoted = |prefix: &str| {
        found
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('`'))
            .and_then(|rest| rest.strip_suffix('`'))
            .map(str::to_string)
    };
    if let Some(s) = found.strip_prefix("string ") {
        return format!("the string {s}");
    }
    if let Some(n) = quoted("integer ").or_else(|| quoted("floating point ")) {
        return format!("the number {n}");
    }
    // Past 64 bits: "integer `18446744073709551616` as i128".
    if let Some((n, _)) = found
        .strip_prefix("integer `")
        .and_then(|rest| rest.split_once('`'))
    {
        return format!("the number {n}, which is too large");
    }
    if let Some(b) = quoted("boolean ") {
        return b;
    }
    match found {
        "sequence" => "a list".into(),
        "map" => "a table".into(),
        "unit value" => "nothing".into(),
        f => f.to_string(),
    }
}
