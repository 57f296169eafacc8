//! The rule engine: rewrites JSON text messages by configured rules.
//!
//! This module is pure: no IO, no clock (the caller passes "now"), no globals, no
//! logging. [`CompiledRules::apply`] takes one message and returns an [`Outcome`];
//! metrics are reported through an [`Observer`].
//!
//! # Messages
//!
//! * Only messages whose top level is a JSON object are candidates. Valid JSON with
//!   another top level is [`Outcome::Unchanged`].
//! * Invalid UTF-8, invalid JSON, and JSON nested deeper than `max_json_depth` (default
//!   1000, what the Python backend's `json.loads` can reach) arrays/objects are
//!   [`Outcome::NotJson`] (forward the original bytes; [`Observer::unparsed`] says why).
//!   JSON is RFC 8259 (numbers of any size and any `\uXXXX` escape are valid): with
//!   `json_dialect = "strict"` exactly what serde_json accepts; with `"python"` (the
//!   default) also `NaN`, `Infinity` and `-Infinity` wherever a value may stand, as Python's
//!   `json.loads` reads them. Checking is one linear, non-recursive pass, so hostile nesting
//!   cannot overflow the stack.
//! * If no rule exists for the message's direction the message is not parsed at all and
//!   the result is [`Outcome::Unchanged`] (even for invalid JSON).
//! * Output preserves the original bytes: key order, whitespace, number spellings
//!   (`1.0e3`, `1.50`, big integers), string escapes (`\u00e9`) and duplicate keys are
//!   kept; only the targeted values are spliced. When nothing changes the result is
//!   [`Outcome::Unchanged`] and no output is allocated. A rewrite longer than
//!   `max_output_bytes` is [`Outcome::TooLarge`]: never forwarded.
//! * With duplicate keys, a path matches every member of that name; the `type` and
//!   `message_id` lookups use the last one (as Python's `json` does).
//!
//! # Paths
//!
//! Dotted segments (`payload.timestamp`); `*` matches every member of an object and
//! every element of an array; a segment of digits without leading zeros (`0`, `12`)
//! indexes arrays and also matches an object member of that name. A literal dot in a
//! key is written `\.`, a literal backslash `\\`, a key that is literally `*` as `\*`.
//! Empty segments (`a..b`) are errors. See [`path`].
//!
//! # Rules
//!
//! Rules run in configuration order with the semantics of applying them one after
//! another to the message: each rule (including its `types` filter, which looks at the
//! top-level `type` string) sees the message as the earlier rules left it, e.g. a
//! timestamp rule with `types = ["start_agent"]` applies to a message that arrived as
//! `execute_agent` and was renamed by an earlier rule. Within a rule, paths are applied
//! in order, too. The document is parsed once; edits are kept as an overlay of byte
//! spans and spliced into a copy of the original at the end.
//!
//! A rule applies to messages of its `direction` (`client_to_backend`,
//! `backend_to_client` or `both`) whose top-level `type` is one of `types` (an absent or
//! empty `types` means all messages).
//!
//! ## `kind = "timestamp"`
//!
//! Each value at a path is read as a timestamp (see [`timestamp`] for the accepted
//! forms: RFC 3339 / ISO-8601 strings with or without zone, numeric strings, JSON
//! numbers; numbers by magnitude with `epoch_unit = "auto"`) and written in the
//! `output` form (`unix_seconds`: `1757350201.447585`; `unix_millis`: `1757350201447`;
//! `rfc3339`: `"2025-09-08T16:50:01.447585Z"`).
//!
//! * A value already in the output form is left untouched: a JSON number read as
//!   seconds for `unix_seconds`, an integral JSON number read as milliseconds for
//!   `unix_millis`, and generally any value whose conversion is byte-identical.
//! * JSON `null` is left alone (the backend accepts null) and no `timestamp_input` is
//!   observed for it.
//! * Invalid values (unparseable strings, booleans, objects, arrays, `NaN`/`Infinity`,
//!   second 60 unless `leap_second = "next_minute"`, instants out of range) are handled by
//!   `on_invalid`: `now` writes the caller's "now" in the output
//!   form; `keep` leaves the value; `remove` removes the member from its object
//!   (key, value and one separating comma) — an array element matched through `*` or an
//!   index is kept instead, since removing it would shift the other elements; `reject`
//!   stops processing and returns [`Outcome::Rejected`] with an `error_message` reply
//!   (`error_code` `INVALID_TIMESTAMP`, `details.rule`, `details.path`,
//!   `details.message_id` when the message had a string/number `message_id`, and
//!   `timestamp` = now in Unix seconds).
//! * Idempotence: applying the rules to their own output changes nothing, as long as a
//!   converted value is read back in the unit it was written in: always for `rfc3339`
//!   (years 0000-9999; other years are invalid for it), for `unix_seconds` with
//!   `epoch_unit` `auto` (instants with |t| < 1e11 s, i.e. years -1200..5138) or
//!   `seconds`, for `unix_millis` with `auto` (1e11 <= |ms| < 1e14, i.e. 1973..5138) or
//!   `millis`. An explicit `epoch_unit` that differs from the output unit is not
//!   idempotent; [`CompiledRules::describe`] warns about it. Rule order matters too: a rule
//!   whose `types` only match what a later rename produces fires on the second pass, so put
//!   renames before the rules that filter on their result.
//!
//! ## `kind = "rename"`
//!
//! At each path, a JSON string whose unescaped value is a key of `map` is replaced by
//! the JSON-encoded target string. Other strings and non-strings are left alone. A map
//! whose target is itself renamed to something else (`a -> b`, `b -> c`) is refused.
//!
//! # Observations
//!
//! For each rule that found at least one of its paths present in a message it applied
//! to, [`Observer::rule_result`] is called once: `rejected` if it rejected the message,
//! else `invalid` if it saw an invalid value (kept, or replaced by `now`/`remove`), else
//! `rewritten` if it changed anything, else `unchanged`; a rule that changed the message gets
//! `too_large` instead when the rewritten message was over `max_output_bytes`.
//! [`Observer::timestamp_input`] is called once per timestamp value examined (not for
//! `null`), with the detected format or `invalid`.

mod config;
mod engine;
mod json;
pub mod path;
pub mod timestamp;

#[cfg(test)]
mod tests;

pub use config::{
    default_rules, DirectionFilter, EngineSettings, EpochUnit, JsonDialect, LeapSecond,
    NaiveTimezone, OffsetError, OnInvalid, OnOversizedRewrite, OutputFormat, RenameRuleConfig,
    RuleConfig, RuleError, RuleRef, RuleTable, TimestampRuleConfig, DEFAULT_MAX_JSON_DEPTH,
};
pub use engine::CompiledRules;
pub use path::{FieldPath, PathError, Segment};
pub use timestamp::{convert_timestamp, ParsedTimestamp, TimestampError, TimestampInput};

/// Which way a message travels through the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    ClientToBackend,
    BackendToClient,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::ClientToBackend, Direction::BackendToClient];

    /// `"client_to_backend"` or `"backend_to_client"` (metric label values).
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ClientToBackend => "client_to_backend",
            Direction::BackendToClient => "backend_to_client",
        }
    }

    /// Its place in [`Direction::ALL`], for arrays kept per direction.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// An instant as seconds + nanoseconds since the Unix epoch (`nanos` < 1e9 when
/// normalized; `secs` negative before 1970).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnixTime {
    pub secs: i64,
    pub nanos: u32,
}

impl UnixTime {
    /// The current time from the system clock. For callers; the engine never reads a
    /// clock itself (pass this function as its [`Clock`]).
    pub fn now() -> UnixTime {
        use std::time::{SystemTime, UNIX_EPOCH};
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => UnixTime {
                secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nanos: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let secs = i64::try_from(d.as_secs()).map_or(i64::MIN, |s| -s);
                match d.subsec_nanos() {
                    0 => UnixTime { secs, nanos: 0 },
                    n => UnixTime {
                        secs: secs.saturating_sub(1),
                        nanos: 1_000_000_000 - n,
                    },
                }
            }
        }
    }

    /// Carry `nanos >= 1e9` into `secs` (saturating).
    pub fn normalized(self) -> UnixTime {
        if self.nanos < 1_000_000_000 {
            return self;
        }
        UnixTime {
            secs: self
                .secs
                .saturating_add(i64::from(self.nanos / 1_000_000_000)),
            nanos: self.nanos % 1_000_000_000,
        }
    }
}

/// Where the engine gets "now" from: a fixed [`UnixTime`], or a clock such as
/// [`UnixTime::now`]. Asked only when a rule needs it (`on_invalid = "now"`, a reject reply),
/// so a message that needs none costs no clock read.
pub trait Clock {
    fn now(&self) -> UnixTime;
}

impl Clock for UnixTime {
    fn now(&self) -> UnixTime {
        *self
    }
}

impl<F: Fn() -> UnixTime> Clock for F {
    fn now(&self) -> UnixTime {
        self()
    }
}

/// What to do with a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Forward the original bytes (also for valid JSON no rule touched).
    Unchanged,
    /// Not valid JSON / not UTF-8 / too deep: forward the original bytes unchanged.
    NotJson,
    /// Forward these bytes instead.
    Rewritten(Vec<u8>),
    /// Do not forward; send `reply` (a JSON text) back to the sender.
    Rejected { reply: Vec<u8>, rule: String },
    /// Rewritten, the message would be `len` bytes, over `max_output_bytes`: do not forward
    /// it. `reply` is a `MESSAGE_TOO_LARGE` error for the sender, if the caller answers.
    TooLarge { reply: Vec<u8>, len: usize },
}

/// Why a message was not parsed ([`Outcome::NotJson`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unparsed {
    InvalidUtf8,
    /// Not JSON in the configured dialect.
    InvalidJson,
    /// Nested deeper than `max_json_depth`.
    TooDeep,
}

impl Unparsed {
    pub const ALL: [Unparsed; 3] = [
        Unparsed::InvalidUtf8,
        Unparsed::InvalidJson,
        Unparsed::TooDeep,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Unparsed::InvalidUtf8 => "invalid_utf8",
            Unparsed::InvalidJson => "invalid_json",
            Unparsed::TooDeep => "too_deep",
        }
    }
}

/// The per-rule result reported to an [`Observer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleResult {
    Rewritten,
    Unchanged,
    Invalid,
    Rejected,
    /// It rewrote the message, which then was over `max_output_bytes` and not forwarded.
    TooLarge,
}

impl RuleResult {
    pub const ALL: [RuleResult; 5] = [
        RuleResult::Rewritten,
        RuleResult::Unchanged,
        RuleResult::Invalid,
        RuleResult::Rejected,
        RuleResult::TooLarge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RuleResult::Rewritten => "rewritten",
            RuleResult::Unchanged => "unchanged",
            RuleResult::Invalid => "invalid",
            RuleResult::Rejected => "rejected",
            RuleResult::TooLarge => "too_large",
        }
    }
}

/// How a timestamp value was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimestampFormat {
    /// ISO-8601 without zone, read in the rule's `naive_timezone`.
    IsoNaive,
    /// ISO-8601 / RFC 3339 with `Z` or an offset.
    IsoZoned,
    /// A string holding a number.
    NumericString,
    /// JSON number read as seconds.
    Seconds,
    /// JSON number read as milliseconds.
    Millis,
    /// JSON number read as microseconds.
    Micros,
    /// JSON number read as nanoseconds.
    Nanos,
    /// Not a usable timestamp.
    Invalid,
}

impl TimestampFormat {
    pub const ALL: [TimestampFormat; 8] = [
        TimestampFormat::IsoNaive,
        TimestampFormat::IsoZoned,
        TimestampFormat::NumericString,
        TimestampFormat::Seconds,
        TimestampFormat::Millis,
        TimestampFormat::Micros,
        TimestampFormat::Nanos,
        TimestampFormat::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TimestampFormat::IsoNaive => "iso_naive",
            TimestampFormat::IsoZoned => "iso_zoned",
            TimestampFormat::NumericString => "numeric_string",
            TimestampFormat::Seconds => "seconds",
            TimestampFormat::Millis => "millis",
            TimestampFormat::Micros => "micros",
            TimestampFormat::Nanos => "nanos",
            TimestampFormat::Invalid => "invalid",
        }
    }
}

/// Receives per-message observations (the relay counts them in Prometheus).
/// Every method defaults to doing nothing.
pub trait Observer {
    /// Once per rule that found one of its paths in a message it applied to.
    fn rule_result(&mut self, rule: &str, dir: Direction, result: RuleResult) {
        let _ = (rule, dir, result);
    }
    /// Once per timestamp value examined.
    fn timestamp_input(&mut self, format: TimestampFormat) {
        let _ = format;
    }
    /// Once per message of a direction with rules that was not parsed ([`Outcome::NotJson`]).
    fn unparsed(&mut self, dir: Direction, why: Unparsed) {
        let _ = (dir, why);
    }
}

/// No-op observer.
impl Observer for () {}
