//! Rule configuration (the `[[rules]]` tables of the wsnorm TOML file).
//!
//! A table is read as a [`RuleTable`]: every key of every kind, unknown keys refused, each value
//! checked for its type as it is read, so a TOML parser reports a wrong key or value at its own
//! line. [`RuleTable::into_rule`] then does the checks that need several keys or a parsed value
//! (the kind's keys, name and path syntax, `naive_timezone`, empty `paths` / `map`, rename
//! chains); its error names the key ([`RuleError::key`]), which the config loader finds in the
//! file. These checks run after the table is read, not inside serde: an error raised there is
//! placed by toml at the first `[[rules]]` header, whichever rule it is about.
//! [`RuleConfig`] still deserializes (through the same table) for configs read from other
//! formats. [`super::CompiledRules::compile`] repeats the per-rule checks (configs can also be
//! built in code) and adds the cross-rule ones (duplicate names), naming the rule index.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use super::path::{FieldPath, PathError};
use super::Direction;

/// Which traffic a rule applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectionFilter {
    ClientToBackend,
    BackendToClient,
    Both,
}

impl DirectionFilter {
    pub fn as_str(self) -> &'static str {
        match self {
            DirectionFilter::ClientToBackend => "client_to_backend",
            DirectionFilter::BackendToClient => "backend_to_client",
            DirectionFilter::Both => "both",
        }
    }

    /// Does the filter let `dir` through?
    pub fn matches(self, dir: Direction) -> bool {
        matches!(
            (self, dir),
            (DirectionFilter::Both, _)
                | (DirectionFilter::ClientToBackend, Direction::ClientToBackend)
                | (DirectionFilter::BackendToClient, Direction::BackendToClient)
        )
    }
}

/// How a timestamp rule writes converted values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    /// JSON number of seconds with a fraction: `1757350201.447585`, `1757350201.0`.
    UnixSeconds,
    /// JSON integer of milliseconds: `1757350201447`.
    UnixMillis,
    /// JSON string, UTC: `"2025-09-08T16:50:01.447585Z"`.
    Rfc3339,
}

impl OutputFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::UnixSeconds => "unix_seconds",
            OutputFormat::UnixMillis => "unix_millis",
            OutputFormat::Rfc3339 => "rfc3339",
        }
    }
}

/// How bare numbers and numeric strings are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpochUnit {
    /// By magnitude: |v| < 1e11 seconds, < 1e14 millis, < 1e17 micros, else nanos.
    Auto,
    Seconds,
    Millis,
    Micros,
    Nanos,
}

impl EpochUnit {
    pub fn as_str(self) -> &'static str {
        match self {
            EpochUnit::Auto => "auto",
            EpochUnit::Seconds => "seconds",
            EpochUnit::Millis => "millis",
            EpochUnit::Micros => "micros",
            EpochUnit::Nanos => "nanos",
        }
    }
}

/// What a timestamp rule does with a value it cannot read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnInvalid {
    /// Replace it by the current time (the backend's own fallback).
    Now,
    /// Leave it as it is.
    Keep,
    /// Remove the member from its object (array elements are kept).
    Remove,
    /// Do not forward the message; answer the sender with an `INVALID_TIMESTAMP` error.
    Reject,
}

impl OnInvalid {
    pub fn as_str(self) -> &'static str {
        match self {
            OnInvalid::Now => "now",
            OnInvalid::Keep => "keep",
            OnInvalid::Remove => "remove",
            OnInvalid::Reject => "reject",
        }
    }
}

/// What a timestamp rule makes of second 60 (`16:50:60`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeapSecond {
    /// An invalid timestamp (`on_invalid` decides): Python's `datetime.fromisoformat`, which
    /// the backend uses, refuses it too.
    Reject,
    /// The first instant of the next minute, in any minute.
    NextMinute,
}

impl LeapSecond {
    pub fn as_str(self) -> &'static str {
        match self {
            LeapSecond::Reject => "reject",
            LeapSecond::NextMinute => "next_minute",
        }
    }
}

/// Which JSON the engine reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JsonDialect {
    /// RFC 8259 plus `NaN`, `Infinity` and `-Infinity` as values: what Python's `json.loads`
    /// accepts and `json.dumps` writes.
    Python,
    /// RFC 8259 exactly (what serde_json accepts).
    Strict,
}

impl JsonDialect {
    pub fn as_str(self) -> &'static str {
        match self {
            JsonDialect::Python => "python",
            JsonDialect::Strict => "strict",
        }
    }
}

/// The nesting Python 3.11's `json.loads` can reach with the default recursion limit (1000,
/// less the caller's own frames): deeper messages fail in the backend anyway.
pub const DEFAULT_MAX_JSON_DEPTH: usize = 1000;

/// How the engine reads messages and how large its output may be, for every rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineSettings {
    pub json_dialect: JsonDialect,
    /// Deeper nesting of arrays/objects is not parsed (`NotJson`).
    pub max_json_depth: usize,
    /// A rewrite longer than this is not forwarded ([`super::Outcome::TooLarge`]).
    pub max_output_bytes: usize,
    /// What the relay does with such a rewrite.
    pub on_oversized_rewrite: OnOversizedRewrite,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            json_dialect: JsonDialect::Python,
            max_json_depth: DEFAULT_MAX_JSON_DEPTH,
            max_output_bytes: usize::MAX,
            on_oversized_rewrite: OnOversizedRewrite::Reject,
        }
    }
}

/// What to do with a message whose rewrite would be larger than `max_message_bytes`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnOversizedRewrite {
    /// Do not forward it; answer the sender with a `MESSAGE_TOO_LARGE` error_message.
    Reject,
    /// Close the sender's leg with 1009, as for a message over the limit.
    Close,
}

impl OnOversizedRewrite {
    pub fn as_str(self) -> &'static str {
        match self {
            OnOversizedRewrite::Reject => "reject",
            OnOversizedRewrite::Close => "close",
        }
    }
}

/// The fixed offset zone-less ISO strings are read in: `UTC` or `±hh:mm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NaiveTimezone {
    offset_secs: i32,
}

/// Why a `naive_timezone` value was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("expected \"UTC\" or a fixed offset like \"+02:00\" / \"-07:00\" (named zones are not supported), got {0:?}")]
pub struct OffsetError(pub String);

impl NaiveTimezone {
    pub const UTC: NaiveTimezone = NaiveTimezone { offset_secs: 0 };

    /// Parse `UTC` (any case), `Z`, `±hh:mm`, `±hhmm` or `±hh` (|offset| < 24 h).
    pub fn parse(s: &str) -> Result<NaiveTimezone, OffsetError> {
        let err = || OffsetError(s.to_owned());
        if s.eq_ignore_ascii_case("utc") || s == "Z" {
            return Ok(NaiveTimezone::UTC);
        }
        let b = s.as_bytes();
        let sign = match b.first() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return Err(err()),
        };
        let rest = &b[1..];
        let two = |at: usize| -> Option<i32> {
            let d = rest.get(at..at + 2)?;
            if d.iter().all(u8::is_ascii_digit) {
                Some(i32::from(d[0] - b'0') * 10 + i32::from(d[1] - b'0'))
            } else {
                None
            }
        };
        let (hh, mm) = match rest.len() {
            2 => (two(0), Some(0)),
            4 => (two(0), two(2)),
            5 if rest[2] == b':' => (two(0), two(3)),
            _ => (None, None),
        };
        match (hh, mm) {
            (Some(hh), Some(mm)) if hh <= 23 && mm <= 59 => Ok(NaiveTimezone {
                offset_secs: sign * (hh * 3600 + mm * 60),
            }),
            _ => Err(err()),
        }
    }

    /// Seconds east of UTC.
    pub fn offset_secs(self) -> i32 {
        self.offset_secs
    }
}

impl fmt::Display for NaiveTimezone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.offset_secs == 0 {
            return f.write_str("UTC");
        }
        let sign = if self.offset_secs < 0 { '-' } else { '+' };
        let a = self.offset_secs.unsigned_abs();
        write!(f, "{sign}{:02}:{:02}", a / 3600, a % 3600 / 60)
    }
}

/// A `kind = "timestamp"` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimestampRuleConfig {
    pub name: String,
    pub direction: DirectionFilter,
    pub paths: Vec<FieldPath>,
    /// Only messages whose top-level `type` is one of these; empty = all messages.
    pub types: Vec<String>,
    pub output: OutputFormat,
    pub naive_timezone: NaiveTimezone,
    pub epoch_unit: EpochUnit,
    pub on_invalid: OnInvalid,
    pub leap_second: LeapSecond,
}

/// A `kind = "rename"` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenameRuleConfig {
    pub name: String,
    pub direction: DirectionFilter,
    pub paths: Vec<FieldPath>,
    /// Only messages whose top-level `type` is one of these; empty = all messages.
    pub types: Vec<String>,
    /// String value -> replacement string value.
    pub map: BTreeMap<String, String>,
}

/// One `[[rules]]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RuleTable")]
pub enum RuleConfig {
    Timestamp(TimestampRuleConfig),
    Rename(RenameRuleConfig),
}

impl RuleConfig {
    pub fn name(&self) -> &str {
        match self {
            RuleConfig::Timestamp(r) => &r.name,
            RuleConfig::Rename(r) => &r.name,
        }
    }

    /// `"timestamp"` or `"rename"`.
    pub fn kind(&self) -> &'static str {
        match self {
            RuleConfig::Timestamp(_) => "timestamp",
            RuleConfig::Rename(_) => "rename",
        }
    }

    pub fn direction(&self) -> DirectionFilter {
        match self {
            RuleConfig::Timestamp(r) => r.direction,
            RuleConfig::Rename(r) => r.direction,
        }
    }

    pub fn paths(&self) -> &[FieldPath] {
        match self {
            RuleConfig::Timestamp(r) => &r.paths,
            RuleConfig::Rename(r) => &r.paths,
        }
    }

    pub fn types(&self) -> &[String] {
        match self {
            RuleConfig::Timestamp(r) => &r.types,
            RuleConfig::Rename(r) => &r.types,
        }
    }

    /// Per-rule checks (everything except cross-rule ones). `index` is the rule's position
    /// in the list when known.
    pub(crate) fn validate(&self, index: Option<usize>) -> Result<(), RuleError> {
        let rule = || RuleRef {
            index,
            name: self.name().to_owned(),
        };
        validate_name(self.name()).map_err(|reason| RuleError::InvalidName {
            rule: rule(),
            reason,
        })?;
        if self.paths().is_empty() {
            return Err(RuleError::EmptyPaths { rule: rule() });
        }
        if let RuleConfig::Rename(r) = self {
            if r.map.is_empty() {
                return Err(RuleError::EmptyMap { rule: rule() });
            }
            for (from, to) in &r.map {
                if from != to && r.map.get(to).is_some_and(|next| next != to) {
                    return Err(RuleError::RenameChain {
                        rule: rule(),
                        from: from.clone(),
                        to: to.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}

fn validate_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("must not be empty");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err("may only contain A-Z, a-z, 0-9, '_', '.' and '-'");
    }
    Ok(())
}

/// Names a rule in error messages: `rules[1] "agent-aliases"`, or `rule "agent-aliases"`
/// when the position is not known (errors raised while deserializing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleRef {
    pub index: Option<usize>,
    pub name: String,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(i) => write!(f, "rules[{i}] {:?}", self.name),
            None => write!(f, "rule {:?}", self.name),
        }
    }
}

/// A configuration error. Every message names the rule (index and/or name) and the key:
/// `rules[1] "agent-aliases": key `map`: must contain at least one entry`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleError {
    InvalidName {
        rule: RuleRef,
        reason: &'static str,
    },
    DuplicateName {
        rule: RuleRef,
        first: usize,
    },
    EmptyPaths {
        rule: RuleRef,
    },
    InvalidPath {
        rule: RuleRef,
        path: String,
        source: PathError,
    },
    InvalidTimezone {
        rule: RuleRef,
        source: OffsetError,
    },
    KeyNotForKind {
        rule: RuleRef,
        key: &'static str,
        kind: &'static str,
    },
    MissingKey {
        rule: RuleRef,
        key: &'static str,
        kind: &'static str,
    },
    EmptyMap {
        rule: RuleRef,
    },
    RenameChain {
        rule: RuleRef,
        from: String,
        to: String,
    },
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: key `{}`: {}",
            self.rule(),
            self.key(),
            self.reason()
        )
    }
}

impl std::error::Error for RuleError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RuleError::InvalidPath { source, .. } => Some(source),
            RuleError::InvalidTimezone { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl RuleError {
    /// The position of the offending rule in the list, when known.
    pub fn rule_index(&self) -> Option<usize> {
        self.rule().index
    }

    /// The offending rule.
    pub fn rule(&self) -> &RuleRef {
        match self {
            RuleError::InvalidName { rule, .. }
            | RuleError::DuplicateName { rule, .. }
            | RuleError::EmptyPaths { rule }
            | RuleError::InvalidPath { rule, .. }
            | RuleError::InvalidTimezone { rule, .. }
            | RuleError::KeyNotForKind { rule, .. }
            | RuleError::MissingKey { rule, .. }
            | RuleError::EmptyMap { rule }
            | RuleError::RenameChain { rule, .. } => rule,
        }
    }

    /// The key of the rule's table the error is about.
    pub fn key(&self) -> &'static str {
        match self {
            RuleError::InvalidName { .. } | RuleError::DuplicateName { .. } => "name",
            RuleError::EmptyPaths { .. } | RuleError::InvalidPath { .. } => "paths",
            RuleError::InvalidTimezone { .. } => "naive_timezone",
            RuleError::KeyNotForKind { key, .. } | RuleError::MissingKey { key, .. } => key,
            RuleError::EmptyMap { .. } | RuleError::RenameChain { .. } => "map",
        }
    }

    /// What is wrong with [`RuleError::key`], without naming the rule or the key.
    pub fn reason(&self) -> String {
        match self {
            RuleError::InvalidName { reason, .. } => format!("invalid rule name: {reason}"),
            RuleError::DuplicateName { first, .. } => {
                format!("duplicate rule name (first used by rules[{first}])")
            }
            RuleError::EmptyPaths { .. } => "must list at least one path".into(),
            RuleError::InvalidPath { path, source, .. } => {
                format!("invalid path {path:?}: {source}")
            }
            RuleError::InvalidTimezone { source, .. } => source.to_string(),
            RuleError::KeyNotForKind { kind, .. } => {
                format!("does not apply to kind = \"{kind}\"")
            }
            RuleError::MissingKey { kind, .. } => format!("is required for kind = \"{kind}\""),
            RuleError::EmptyMap { .. } => "must contain at least one entry".into(),
            RuleError::RenameChain { from, to, .. } => format!(
                "{from:?} -> {to:?} but {to:?} is itself renamed; rules apply once, so map \
                 {from:?} directly to the final value"
            ),
        }
    }
}

// ---- raw (serde) form -------------------------------------------------------------------

/// The `kind` key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RuleKind {
    Timestamp,
    Rename,
}

/// One `[[rules]]` table as written: all keys of every kind in one flat table. A tagged enum
/// would make the TOML parser buffer the table and lose the position of an unknown key; flat,
/// it reports the key's own line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleTable {
    name: String,
    kind: RuleKind,
    #[serde(default = "default_direction")]
    direction: DirectionFilter,
    paths: Vec<String>,
    #[serde(default)]
    types: Vec<String>,
    // timestamp only
    output: Option<OutputFormat>,
    naive_timezone: Option<String>,
    epoch_unit: Option<EpochUnit>,
    on_invalid: Option<OnInvalid>,
    leap_second: Option<LeapSecond>,
    // rename only
    map: Option<BTreeMap<String, String>>,
}

fn default_direction() -> DirectionFilter {
    DirectionFilter::ClientToBackend
}

impl TryFrom<RuleTable> for RuleConfig {
    type Error = RuleError;

    fn try_from(table: RuleTable) -> Result<Self, Self::Error> {
        table.into_rule(None)
    }
}

impl RuleTable {
    /// The rule this table describes, after the checks that involve several keys. `index` is
    /// the table's position in the file, when known; errors name it.
    pub fn into_rule(self, index: Option<usize>) -> Result<RuleConfig, RuleError> {
        let r = self;
        let rule = || RuleRef {
            index,
            name: r.name.clone(),
        };
        let paths = r
            .paths
            .iter()
            .map(|p| {
                FieldPath::parse(p).map_err(|source| RuleError::InvalidPath {
                    rule: rule(),
                    path: p.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cfg = match r.kind {
            RuleKind::Timestamp => {
                if r.map.is_some() {
                    return Err(RuleError::KeyNotForKind {
                        rule: rule(),
                        key: "map",
                        kind: "timestamp",
                    });
                }
                let naive_timezone = match &r.naive_timezone {
                    None => NaiveTimezone::UTC,
                    Some(s) => {
                        NaiveTimezone::parse(s).map_err(|source| RuleError::InvalidTimezone {
                            rule: rule(),
                            source,
                        })?
                    }
                };
                RuleConfig::Timestamp(TimestampRuleConfig {
                    direction: r.direction,
                    paths,
                    output: r.output.unwrap_or(OutputFormat::UnixSeconds),
                    naive_timezone,
                    epoch_unit: r.epoch_unit.unwrap_or(EpochUnit::Auto),
                    on_invalid: r.on_invalid.unwrap_or(OnInvalid::Now),
                    leap_second: r.leap_second.unwrap_or(LeapSecond::Reject),
                    name: r.name,
                    types: r.types,
                })
            }
            RuleKind::Rename => {
                let timestamp_keys = [
                    ("output", r.output.is_some()),
                    ("naive_timezone", r.naive_timezone.is_some()),
                    ("epoch_unit", r.epoch_unit.is_some()),
                    ("on_invalid", r.on_invalid.is_some()),
                    ("leap_second", r.leap_second.is_some()),
                ];
                if let Some((key, _)) = timestamp_keys.iter().find(|(_, set)| *set) {
                    return Err(RuleError::KeyNotForKind {
                        rule: rule(),
                        key,
                        kind: "rename",
                    });
                }
                let Some(map) = r.map else {
                    return Err(RuleError::MissingKey {
                        rule: rule(),
                        key: "map",
                        kind: "rename",
                    });
                };
                RuleConfig::Rename(RenameRuleConfig {
                    name: r.name,
                    direction: r.direction,
                    paths,
                    types: r.types,
                    map,
                })
            }
        };
        cfg.validate(index)?;
        Ok(cfg)
    }
}

/// The built-in rules: ISO/epoch timestamps at `timestamp` and `payload.timestamp` become
/// Unix seconds, and the `type` aliases `execute_agent` / `EXECUTE_AGENT` become
/// `start_agent` (both client -> backend).
pub fn default_rules() -> Vec<RuleConfig> {
    let path = |p: &str| FieldPath::parse(p).expect("built-in path is valid");
    vec![
        RuleConfig::Timestamp(TimestampRuleConfig {
            name: "iso-timestamps".to_owned(),
            direction: DirectionFilter::ClientToBackend,
            paths: vec![path("timestamp"), path("payload.timestamp")],
            types: Vec::new(),
            output: OutputFormat::UnixSeconds,
            naive_timezone: NaiveTimezone::UTC,
            epoch_unit: EpochUnit::Auto,
            on_invalid: OnInvalid::Now,
            leap_second: LeapSecond::Reject,
        }),
        RuleConfig::Rename(RenameRuleConfig {
            name: "agent-aliases".to_owned(),
            direction: DirectionFilter::ClientToBackend,
            paths: vec![path("type")],
            types: Vec::new(),
            map: [
                ("execute_agent", "start_agent"),
                ("EXECUTE_AGENT", "start_agent"),
            ]
            .into_iter()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect(),
        }),
    ]
}
