//! Rule testing for ops: `wsnorm test-rules FILE…` runs fixture cases against the configured
//! rules (like `promtool test rules`), `wsnorm rewrite` shows what the rules make of messages
//! typed or piped in.
//!
//! A fixture file is TOML:
//!
//! ```toml
//! now = 1757350201.5        # optional: the clock for `on_invalid = "now"` (unix seconds)
//!
//! [[case]]
//! name = "incident message"
//! direction = "client_to_backend"   # default
//! input = '{"type":"execute_agent","timestamp":"2025-09-08T16:50:01.447585"}'
//! output = '{"type":"start_agent","timestamp":1757350201.447585}'
//!
//! [[case]]
//! name = "garbage is refused"
//! input = '{"timestamp":"garbage"}'
//! rejected = true
//! ```
//!
//! or JSON lines, one case per line with the same keys (`input`/`output` may then be JSON
//! values instead of strings; values are compared as JSON, strings byte for byte). A case
//! without `output` and without `rejected` expects the message to pass unchanged.

use std::path::Path;

use serde::Deserialize;

use crate::rules::{CompiledRules, Direction, Outcome, UnixTime};

/// Why a fixture file could not be run (not a failing case: that is a [`CaseFailure`]).
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureFile {
    now: Option<f64>,
    #[serde(default, rename = "case")]
    cases: Vec<Case>,
}

/// One expectation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: Option<String>,
    #[serde(default = "default_direction", deserialize_with = "direction")]
    pub direction: Direction,
    pub input: Message,
    pub output: Option<Message>,
    #[serde(default)]
    pub rejected: bool,
    /// Only in JSON-lines files, where there is no file-level `now`.
    pub now: Option<f64>,
}

/// A message as written in a fixture: exact text, or (JSON lines only) a JSON value.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Message {
    Text(String),
    Json(serde_json::Value),
}

impl Message {
    fn text(&self) -> String {
        match self {
            Message::Text(t) => t.clone(),
            Message::Json(v) => v.to_string(),
        }
    }

    /// True when `actual` is what this expects.
    fn matches(&self, actual: &str) -> bool {
        match self {
            Message::Text(t) => t == actual,
            Message::Json(v) => {
                serde_json::from_str::<serde_json::Value>(actual).is_ok_and(|a| &a == v)
            }
        }
    }
}

fn default_direction() -> Direction {
    Direction::ClientToBackend
}

fn direction<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Direction, D::Error> {
    let s = String::deserialize(d)?;
    parse_direction(&s).map_err(serde::de::Error::custom)
}

/// `client_to_backend` or `backend_to_client`.
pub fn parse_direction(s: &str) -> Result<Direction, String> {
    match s {
        "client_to_backend" => Ok(Direction::ClientToBackend),
        "backend_to_client" => Ok(Direction::BackendToClient),
        other => Err(format!(
            "direction `{other}`: expected client_to_backend or backend_to_client"
        )),
    }
}

/// A case whose result differs from its expectation.
#[derive(Debug)]
pub struct CaseFailure {
    pub name: String,
    pub report: String,
}

/// The results of one fixture file.
#[derive(Debug, Default)]
pub struct FileResult {
    pub passed: usize,
    pub failures: Vec<CaseFailure>,
}

/// Reads the cases of a fixture file (TOML, or JSON lines for `.jsonl`/`.ndjson`).
pub fn load_cases(path: &Path) -> Result<(Vec<Case>, Option<f64>), FixtureError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| FixtureError::Read {
        file: file.clone(),
        source,
    })?;
    let parse_err = |message: String| FixtureError::Parse {
        file: file.clone(),
        message,
    };
    match path.extension().and_then(|e| e.to_str()) {
        Some("jsonl" | "ndjson") => {
            let mut cases = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() || line.trim_start().starts_with('#') {
                    continue;
                }
                let case: Case = serde_json::from_str(line).map_err(|e| {
                    // serde_json ends its message with the position; it is given up front.
                    let message = e.to_string();
                    let message = message
                        .rsplit_once(" at line ")
                        .map_or(message.as_str(), |(m, _)| m);
                    parse_err(format!(
                        "line {}, column {}: {}",
                        i + 1,
                        e.column(),
                        crate::config::friendly(message)
                    ))
                })?;
                cases.push(case);
            }
            Ok((cases, None))
        }
        _ => {
            // Worded as config errors are: line, key, the file's words.
            let (parsed, _): (FixtureFile, _) =
                crate::config::read_toml(&text).map_err(parse_err)?;
            Ok((parsed.cases, parsed.now))
        }
    }
}

fn unix_time(secs: f64) -> UnixTime {
    UnixTime {
        secs: secs.floor() as i64,
        nanos: ((secs - secs.floor()) * 1e9).round().min(999_999_999.0) as u32,
    }
}

/// Runs `cases` against `rules`.
pub fn run_cases(rules: &CompiledRules, cases: &[Case], file_now: Option<f64>) -> FileResult {
    let mut result = FileResult::default();
    for (i, case) in cases.iter().enumerate() {
        let name = case
            .name
            .clone()
            .unwrap_or_else(|| format!("case {}", i + 1));
        let now = case
            .now
            .or(file_now)
            .map(unix_time)
            .unwrap_or_else(UnixTime::now);
        let input = case.input.text();
        let outcome = rules.apply(case.direction, input.as_bytes(), now, &mut ());
        match check(case, &input, &outcome) {
            None => result.passed += 1,
            Some(report) => result.failures.push(CaseFailure { name, report }),
        }
    }
    result
}

/// What happened to a message, as one line for people.
pub fn describe(input: &str, outcome: &Outcome) -> String {
    match outcome {
        Outcome::Unchanged => input.to_string(),
        Outcome::NotJson => input.to_string(),
        Outcome::Rewritten(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Outcome::Rejected { reply, rule } => format!(
            "(rejected by rule {rule}; the sender gets: {})",
            String::from_utf8_lossy(reply)
        ),
        Outcome::TooLarge { reply, len } => format!(
            "(not forwarded: {len} bytes once rewritten, over max_message_bytes; with \
             on_oversized_rewrite = \"reject\" the sender gets: {})",
            String::from_utf8_lossy(reply)
        ),
    }
}

fn check(case: &Case, input: &str, outcome: &Outcome) -> Option<String> {
    let actual = match outcome {
        Outcome::Rejected { rule, .. } => {
            return (!case.rejected).then(|| {
                format!("expected the message to be forwarded, but rule {rule} rejected it")
            })
        }
        Outcome::TooLarge { len, .. } => {
            return (!case.rejected).then(|| {
                format!("expected the message to be forwarded, but rewritten it is {len} bytes, over max_message_bytes")
            })
        }
        Outcome::Unchanged | Outcome::NotJson => input.to_string(),
        Outcome::Rewritten(bytes) => String::from_utf8_lossy(bytes).into_owned(),
    };
    if case.rejected {
        return Some(format!(
            "expected a rejection, but it was forwarded as:\n  {actual}"
        ));
    }
    let expected = case.output.as_ref().unwrap_or(&case.input);
    if expected.matches(&actual) {
        return None;
    }
    Some(diff(&expected.text(), &actual))
}

/// Expected and actual, with a caret under the first difference.
pub fn diff(expected: &str, actual: &str) -> String {
    let at = expected
        .char_indices()
        .zip(actual.chars())
        .find(|((_, e), a)| e != a)
        .map(|((i, _), _)| i)
        .unwrap_or_else(|| expected.len().min(actual.len()));
    let pad = expected[..at].chars().count();
    format!(
        "- expected: {expected}\n+ actual:   {actual}\n            {}^ first difference at character {}",
        " ".repeat(pad),
        pad + 1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_diff_points_at_the_first_difference() {
        let d = diff(r#"{"a":1}"#, r#"{"a":2}"#);
        assert!(d.contains("- expected: {\"a\":1}"), "{d}");
        assert!(d.contains("+ actual:   {\"a\":2}"), "{d}");
        assert!(d.ends_with("     ^ first difference at character 6"), "{d}");
    }

    #[test]
    fn json_expectations_compare_values_and_text_compares_bytes() {
        let json = Message::Json(serde_json::json!({"a": 1, "b": [2]}));
        assert!(json.matches(r#"{ "b":[2], "a":1 }"#));
        assert!(!json.matches(r#"{"a":1}"#));
        let text = Message::Text(r#"{"a":1}"#.into());
        assert!(text.matches(r#"{"a":1}"#));
        assert!(!text.matches(r#"{ "a":1}"#));
    }

    #[test]
    fn directions_parse_or_say_what_is_allowed() {
        assert_eq!(
            parse_direction("backend_to_client"),
            Ok(Direction::BackendToClient)
        );
        assert!(parse_direction("both")
            .unwrap_err()
            .contains("client_to_backend"));
    }
}
