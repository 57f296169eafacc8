//! Compiled rules and their application to one message.
//!
//! One `apply`: validate (UTF-8, the JSON dialect, nesting depth) and outline in the same pass
//! the members and elements the rules' paths can reach (on the stack for up to 16), then run the
//! rules in order, following their paths through the outline. Rules do not modify the text;
//! they record edits (replace a value / remove a member) in an overlay keyed by the
//! original offset of the value, and later rules look values up through that overlay, so
//! they see the message as earlier rules left it. At the end the edits are spliced into
//! one copy of the original, which is not forwarded if it exceeds the output limit. Small
//! replacement texts and the first edits are stored inline, rename targets are borrowed from
//! the compiled rules: a typical rewrite allocates only the output, and the relay lends it a
//! buffer for that.

use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use smallvec::SmallVec;

use super::config::{
    DirectionFilter, EngineSettings, EpochUnit, LeapSecond, NaiveTimezone, OnInvalid, OutputFormat,
    RuleConfig, RuleError, RuleRef,
};
use super::json::{self, Kids, Member, Outline, Parsed, Reach, Syntax};
use super::path::{push_escaped_key, FieldPath, Segment};
use super::timestamp::{
    convert_timestamp, format_timestamp, write_unix_seconds, ByteSink, TimestampError,
    TimestampInput,
};
use super::{Clock, Direction, Observer, Outcome, RuleResult, TimestampFormat, UnixTime, Unparsed};

/// Validated, precomputed rules. `Send + Sync`; share it behind an `Arc`.
#[derive(Debug)]
pub struct CompiledRules {
    rules: Vec<CompiledRule>,
    /// What the paths of the rules for [client_to_backend, backend_to_client] can reach: what
    /// a message's outline records.
    reach_for: [Reach; 2],
    settings: EngineSettings,
}

#[derive(Debug)]
struct CompiledRule {
    name: String,
    direction: DirectionFilter,
    types: Vec<String>,
    paths: Vec<FieldPath>,
    action: Action,
}

#[derive(Debug)]
enum Action {
    Timestamp(TimestampAction),
    Rename(RenameAction),
}

#[derive(Debug)]
struct TimestampAction {
    output: OutputFormat,
    naive_tz: NaiveTimezone,
    leap: LeapSecond,
    unit: EpochUnit,
    on_invalid: OnInvalid,
}

#[derive(Debug)]
struct RenameAction {
    /// (source string, JSON-encoded target), sorted by source; identity entries dropped.
    lookup: Vec<(String, Vec<u8>)>,
    /// The configured map, for `describe`.
    map: BTreeMap<String, String>,
}

impl CompiledRules {
    /// [`compile_with`](Self::compile_with) the default [`EngineSettings`].
    pub fn compile(rules: &[RuleConfig]) -> Result<CompiledRules, RuleError> {
        Self::compile_with(rules, EngineSettings::default())
    }

    /// Validate and precompute `rules`. Errors name the rule (index and name) and the key.
    pub fn compile_with(
        rules: &[RuleConfig],
        settings: EngineSettings,
    ) -> Result<CompiledRules, RuleError> {
        let mut compiled = Vec::with_capacity(rules.len());
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut reach_for: [Reach; 2] = Default::default();
        for (index, cfg) in rules.iter().enumerate() {
            cfg.validate(Some(index))?;
            if let Some(&first) = seen.get(cfg.name()) {
                return Err(RuleError::DuplicateName {
                    rule: RuleRef {
                        index: Some(index),
                        name: cfg.name().to_owned(),
                    },
                    first,
                });
            }
            seen.insert(cfg.name(), index);
            for dir in Direction::ALL
                .into_iter()
                .filter(|d| cfg.direction().matches(*d))
            {
                for path in cfg.paths() {
                    reach_for[dir.index()].add(path.segments());
                }
            }
            let action = match cfg {
                RuleConfig::Timestamp(t) => Action::Timestamp(TimestampAction {
                    output: t.output,
                    naive_tz: t.naive_timezone,
                    leap: t.leap_second,
                    unit: t.epoch_unit,
                    on_invalid: t.on_invalid,
                }),
                RuleConfig::Rename(r) => {
                    // BTreeMap iteration order is sorted by key, as binary search needs.
                    let lookup = r
                        .map
                        .iter()
                        .filter(|(from, to)| from != to)
                        .map(|(from, to)| {
                            let mut json = Vec::with_capacity(to.len() + 2);
                            json::push_json_string(&mut json, to);
                            (from.clone(), json)
                        })
                        .collect();
                    Action::Rename(RenameAction {
                        lookup,
                        map: r.map.clone(),
                    })
                }
            };
            compiled.push(CompiledRule {
                name: cfg.name().to_owned(),
                direction: cfg.direction(),
                types: cfg.types().to_vec(),
                paths: cfg.paths().to_vec(),
                action,
            });
        }
        Ok(CompiledRules {
            rules: compiled,
            reach_for,
            settings,
        })
    }

    /// No rules: every message is [`Outcome::Unchanged`].
    pub fn empty() -> CompiledRules {
        CompiledRules {
            rules: Vec::new(),
            reach_for: Default::default(),
            settings: EngineSettings::default(),
        }
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether any rule looks at messages of `dir`; if none does, `apply` does not parse them.
    pub fn applies_to(&self, dir: Direction) -> bool {
        !self.reach_for[dir.index()].is_empty()
    }

    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.name.as_str())
    }

    /// Human summary of the effective rules (defaults filled in), one block per rule.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        if self.rules.is_empty() {
            s.push_str("no rules: every message is forwarded unchanged\n");
            return s;
        }
        for (i, r) in self.rules.iter().enumerate() {
            let kind = match r.action {
                Action::Timestamp(_) => "timestamp",
                Action::Rename(_) => "rename",
            };
            let _ = writeln!(s, "rules[{i}] {:?} (kind = {kind})", r.name);
            let _ = writeln!(s, "  direction: {}", r.direction.as_str());
            if r.types.is_empty() {
                s.push_str("  types: (all messages)\n");
            } else {
                let types = quoted_list(r.types.iter().map(String::as_str));
                let _ = writeln!(s, "  types: {types}");
            }
            // Paths as TOML literal strings: exactly what the config says, no escaping.
            let paths: Vec<String> = r.paths.iter().map(|p| format!("'{p}'")).collect();
            let paths = paths.join(", ");
            let _ = writeln!(s, "  paths: {paths}");
            match &r.action {
                Action::Timestamp(t) => {
                    let _ = writeln!(
                        s,
                        "  output: {}; naive_timezone: {}; epoch_unit: {}; on_invalid: {}; \
                         leap_second: {}",
                        t.output.as_str(),
                        t.naive_tz,
                        t.unit.as_str(),
                        t.on_invalid.as_str(),
                        t.leap.as_str()
                    );
                    let idempotent = matches!(
                        (t.unit, t.output),
                        (EpochUnit::Auto, _)
                            | (_, OutputFormat::Rfc3339)
                            | (EpochUnit::Seconds, OutputFormat::UnixSeconds)
                            | (EpochUnit::Millis, OutputFormat::UnixMillis)
                    );
                    if !idempotent {
                        let _ = writeln!(
                            s,
                            "  warning: epoch_unit {} with output {} is not idempotent \
                             (a converted number would be read as {} again)",
                            t.unit.as_str(),
                            t.output.as_str(),
                            t.unit.as_str()
                        );
                    }
                    let array_paths = r.paths.iter().any(|p| {
                        matches!(
                            p.segments().last(),
                            Some(Segment::Any | Segment::Index { .. })
                        )
                    });
                    if t.on_invalid == OnInvalid::Remove && array_paths {
                        s.push_str("  note: on_invalid = remove keeps invalid array elements\n");
                    }
                }
                Action::Rename(rn) => {
                    let pairs: Vec<String> = rn
                        .map
                        .iter()
                        .map(|(a, b)| format!("{a:?} -> {b:?}"))
                        .collect();
                    let _ = writeln!(s, "  map: {}", pairs.join(", "));
                }
            }
        }
        s
    }

    /// Apply the rules to one message. `now` is asked at most once per message, only when a
    /// rule needs it (`on_invalid = "now"`, a reject reply); the engine reads no clock itself.
    pub fn apply(
        &self,
        dir: Direction,
        msg: &[u8],
        now: impl Clock,
        obs: &mut impl Observer,
    ) -> Outcome {
        if !self.applies_to(dir) {
            return Outcome::Unchanged;
        }
        match std::str::from_utf8(msg) {
            Ok(text) => self.apply_text(dir, text, now, obs),
            Err(_) => {
                obs.unparsed(dir, Unparsed::InvalidUtf8);
                Outcome::NotJson
            }
        }
    }

    /// [`apply`](Self::apply) to a message known to be UTF-8 (a WebSocket text message).
    pub fn apply_text(
        &self,
        dir: Direction,
        src: &str,
        now: impl Clock,
        obs: &mut impl Observer,
    ) -> Outcome {
        self.apply_text_into(dir, src, now, obs, Vec::new())
    }

    /// [`apply_text`](Self::apply_text), writing a rewritten message into `spare` (cleared
    /// first): a caller that hands back the buffer of the last [`Outcome::Rewritten`] saves an
    /// allocation per message.
    pub fn apply_text_into(
        &self,
        dir: Direction,
        src: &str,
        now: impl Clock,
        obs: &mut impl Observer,
        spare: Vec<u8>,
    ) -> Outcome {
        if !self.applies_to(dir) {
            return Outcome::Unchanged;
        }
        let mut outline = Outline::new();
        let syntax = Syntax {
            dialect: self.settings.json_dialect,
            max_depth: self.settings.max_json_depth,
        };
        let why = match json::parse(src, &self.reach_for[dir.index()], &mut outline, syntax) {
            Parsed::Object { start } => {
                let now = MessageNow {
                    clock: &now,
                    value: OnceCell::new(),
                };
                return self.run(dir, &outline, start, &now, obs, spare);
            }
            Parsed::Other => return Outcome::Unchanged,
            Parsed::NotJson => Unparsed::InvalidJson,
            Parsed::TooDeep => Unparsed::TooDeep,
        };
        obs.unparsed(dir, why);
        Outcome::NotJson
    }

    fn run(
        &self,
        dir: Direction,
        outline: &Outline<'_>,
        top_start: usize,
        now: &MessageNow<'_>,
        obs: &mut dyn Observer,
        spare: Vec<u8>,
    ) -> Outcome {
        let src = outline.src();
        let top = &src[top_start..];
        let mut edits = Edits::default();
        // Observed once the message's fate is known: a rewrite that is not forwarded because it
        // grew too large is no `rewritten`.
        // With whether the rule changed the message.
        let mut results: SmallVec<[(&str, RuleResult, bool); 4]> = SmallVec::new();
        let report = |obs: &mut dyn Observer, results: &[(&str, RuleResult, bool)]| {
            for (rule, result, _) in results {
                obs.rule_result(rule, dir, *result);
            }
        };
        for rule in &self.rules {
            if !rule.direction.matches(dir) {
                continue;
            }
            if !rule.types.is_empty() {
                let matches = current_top_value(outline, &edits, "type")
                    .and_then(json::unescape)
                    .is_some_and(|t| rule.types.iter().any(|x| *x == *t));
                if !matches {
                    continue;
                }
            }
            let mut run = Run {
                outline,
                edits: &mut edits,
                obs: &mut *obs,
                now,
                rule,
                matched: false,
                changed: false,
                invalid: false,
                reject: None,
            };
            for path in &rule.paths {
                run.descend(top_start, top, outline.top(), path.segments(), &Trail::Root);
                if run.reject.is_some() {
                    break;
                }
            }
            let Run {
                matched,
                changed,
                invalid,
                reject,
                ..
            } = run;
            if let Some(rej) = reject {
                results.push((&rule.name, RuleResult::Rejected, changed));
                report(obs, &results);
                let error = ErrorKind::InvalidTimestamp {
                    rule: &rule.name,
                    path: &rej.path,
                    reason: &rej.reason,
                };
                return Outcome::Rejected {
                    reply: self.error_reply(&error, outline, &edits, now),
                    rule: rule.name.clone(),
                };
            }
            if matched {
                // An invalid value counts as `invalid` also when `on_invalid` replaced it: the
                // count is of bad inputs, whatever the policy made of them.
                let result = if invalid {
                    RuleResult::Invalid
                } else if changed {
                    RuleResult::Rewritten
                } else {
                    RuleResult::Unchanged
                };
                results.push((&rule.name, result, changed));
            }
        }
        if edits.is_empty() {
            report(obs, &results);
            return Outcome::Unchanged;
        }
        let out = splice(src, outline, &edits, spare);
        let limit = self.settings.max_output_bytes;
        if out.len() > limit {
            for (_, result, changed) in results.iter_mut() {
                if *changed {
                    *result = RuleResult::TooLarge;
                }
            }
            report(obs, &results);
            let error = ErrorKind::TooLarge {
                len: out.len(),
                limit,
            };
            return Outcome::TooLarge {
                reply: self.error_reply(&error, outline, &edits, now),
                len: out.len(),
            };
        }
        report(obs, &results);
        if out == src.as_bytes() {
            Outcome::Unchanged
        } else {
            Outcome::Rewritten(out)
        }
    }

    /// The `error_message` for the sender of a message that is not forwarded, with the
    /// message's `message_id` (a string or a finite number). The parts taken from the message
    /// are left out when the reply would exceed the output limit, which holds for replies too
    /// (what remains, ~200 bytes and the rule's name, fits any limit a backend sets in practice).
    fn error_reply(
        &self,
        error: &ErrorKind<'_>,
        outline: &Outline<'_>,
        edits: &Edits<'_>,
        now: &MessageNow<'_>,
    ) -> Vec<u8> {
        let message_id = current_top_value(outline, edits, "message_id").filter(|v| {
            !json::is_non_finite(v)
                && matches!(v.as_bytes().first(), Some(b'"' | b'-' | b'0'..=b'9'))
        });
        let reply = write_error_reply(error, message_id, now.get());
        if reply.len() <= self.settings.max_output_bytes {
            return reply;
        }
        let short = match *error {
            ErrorKind::InvalidTimestamp { rule, reason, .. } => ErrorKind::InvalidTimestamp {
                rule,
                path: "…",
                reason,
            },
            other => other,
        };
        write_error_reply(&short, None, now.get())
    }
}

/// One message's "now": asked of the caller's clock once, when a rule first needs it, so every
/// field stamped and the reject reply of one message carry the same time.
struct MessageNow<'c> {
    clock: &'c dyn Clock,
    value: OnceCell<UnixTime>,
}

impl MessageNow<'_> {
    fn get(&self) -> UnixTime {
        *self.value.get_or_init(|| self.clock.now().normalized())
    }
}

fn quoted_list<'s>(items: impl Iterator<Item = &'s str>) -> String {
    items
        .map(|p| format!("{p:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The current text of the last (not removed) top-level member named `key`.
fn current_top_value<'x>(
    outline: &'x Outline<'_>,
    edits: &'x Edits<'_>,
    key: &str,
) -> Option<&'x str> {
    outline
        .members(outline.top())
        .filter(|m| m.key_is(key))
        .filter_map(|m| match edits.get(m.start()) {
            Some(Edit::Remove { .. }) => None,
            Some(Edit::Replace { text, .. }) => Some(std::str::from_utf8(text.as_bytes()).ok()),
            None => Some(Some(m.raw())),
        })
        .last()
        .flatten()
}

// ---- edits overlay ---------------------------------------------------------------------

const INLINE: usize = 46;

/// Replacement bytes: short ones inline, rename targets borrowed from the rules.
#[derive(Clone, Debug)]
enum Text<'r> {
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Vec<u8>),
    Shared(&'r [u8]),
}

impl Text<'_> {
    fn new() -> Self {
        Text::Inline {
            len: 0,
            buf: [0; INLINE],
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Text::Inline { len, buf } => &buf[..usize::from(*len)],
            Text::Heap(v) => v,
            Text::Shared(b) => b,
        }
    }
}

impl ByteSink for Text<'_> {
    fn put(&mut self, bytes: &[u8]) {
        match self {
            Text::Inline { len, buf } => {
                let l = usize::from(*len);
                if let Some(dst) = buf.get_mut(l..l + bytes.len()) {
                    dst.copy_from_slice(bytes);
                    *len += bytes.len() as u8; // l + bytes.len() <= INLINE < 256
                } else {
                    let mut v = Vec::with_capacity(l + bytes.len());
                    v.extend_from_slice(&buf[..l]);
                    v.extend_from_slice(bytes);
                    *self = Text::Heap(v);
                }
            }
            Text::Heap(v) => v.extend_from_slice(bytes),
            Text::Shared(b) => {
                let mut v = b.to_vec();
                v.extend_from_slice(bytes);
                *self = Text::Heap(v);
            }
        }
    }
}

/// An edit of the value whose original text starts at the map key.
#[derive(Debug)]
enum Edit<'r> {
    /// The value (original bytes up to `end`) now reads `text`.
    Replace { end: usize, text: Text<'r> },
    /// The member holding the value was removed from the object `obj`.
    Remove { obj: Span },
}

/// The edits of one message, sorted by the offset of the value they change. A message has a
/// handful at most, so a sorted list, its first four on the stack, beats a map.
#[derive(Debug, Default)]
struct Edits<'r> {
    list: SmallVec<[(usize, Edit<'r>); 4]>,
    has_removals: bool,
}

impl<'r> Edits<'r> {
    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn len(&self) -> usize {
        self.list.len()
    }

    /// In the order of the values they change.
    fn iter(&self) -> impl Iterator<Item = (usize, &Edit<'r>)> {
        self.list.iter().map(|(start, edit)| (*start, edit))
    }

    /// Where the edit of the value at `start` is, or would go.
    fn position(&self, start: usize) -> Result<usize, usize> {
        self.list.binary_search_by_key(&start, |(k, _)| *k)
    }

    #[inline]
    fn get(&self, start: usize) -> Option<&Edit<'r>> {
        let i = self.position(start).ok()?;
        Some(&self.list[i].1)
    }

    /// Forget edits strictly inside the value at `start..end` (it is being replaced).
    fn clear_inside(&mut self, start: usize, end: usize) {
        let from = self.list.partition_point(|(k, _)| *k <= start);
        let to = self.list.partition_point(|(k, _)| *k < end);
        if from < to {
            self.list.drain(from..to);
        }
    }

    fn set(&mut self, start: usize, edit: Edit<'r>) {
        match self.position(start) {
            Ok(i) => self.list[i].1 = edit,
            Err(i) => self.list.insert(i, (start, edit)),
        }
    }

    fn replace(&mut self, start: usize, end: usize, text: Text<'r>) {
        self.clear_inside(start, end);
        self.set(start, Edit::Replace { end, text });
    }

    fn remove(&mut self, start: usize, end: usize, obj: Span) {
        self.clear_inside(start, end);
        self.set(start, Edit::Remove { obj });
        self.has_removals = true;
    }
}

/// Build the output: the original with every edit spliced in.
fn splice(src: &str, outline: &Outline<'_>, edits: &Edits<'_>, mut out: Vec<u8>) -> Vec<u8> {
    let bytes = src.as_bytes();
    out.clear();
    if !edits.has_removals {
        // Fast path: replacements only, already in order and never nested.
        let extra: usize = edits
            .iter()
            .map(|(_, e)| match e {
                Edit::Replace { text, .. } => text.as_bytes().len(),
                Edit::Remove { .. } => 0,
            })
            .sum();
        out.reserve(bytes.len() + extra);
        let mut cur = 0;
        for (start, edit) in edits.iter() {
            if let Edit::Replace { end, text } = edit {
                if let (Some(before), true) = (bytes.get(cur..start), *end <= bytes.len()) {
                    out.extend_from_slice(before);
                    out.extend_from_slice(text.as_bytes());
                    cur = *end;
                }
            }
        }
        out.extend_from_slice(bytes.get(cur..).unwrap_or_default());
        return out;
    }
    let mut ops: Vec<(usize, usize, &[u8])> = Vec::with_capacity(edits.len());
    let mut removed: BTreeMap<Span, Vec<usize>> = BTreeMap::new();
    let mut extra = 0;
    for (start, edit) in edits.iter() {
        match edit {
            Edit::Replace { end, text } => {
                ops.push((start, *end, text.as_bytes()));
                extra += text.as_bytes().len();
            }
            Edit::Remove { obj } => removed.entry(*obj).or_default().push(start),
        }
    }
    for (obj, starts) in removed {
        // `starts` is sorted (edits are in offset order). spans: (key start, value end, value start)
        let spans: Vec<_> = outline
            .children(obj.0, obj.1)
            .map(|m| (m.key_start(), m.end(), m.start()))
            .collect();
        let gone = |i: usize| starts.binary_search(&spans[i].2).is_ok();
        let n = spans.len();
        let mut i = 0;
        while i < n {
            if !gone(i) {
                i += 1;
                continue;
            }
            let mut j = i;
            while j < n && gone(j) {
                j += 1;
            }
            let range = if j < n {
                // a kept member follows: delete up to its key (takes the commas after)
                (spans[i].0, spans[j].0)
            } else if i > 0 {
                // trailing run: delete from the end of the previous (kept) value
                (spans[i - 1].1, spans[n - 1].1)
            } else {
                // every member goes
                (spans[0].0, spans[n - 1].1)
            };
            ops.push((range.0, range.1, b""));
            i = j;
        }
    }
    ops.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    out.reserve(bytes.len() + extra);
    let mut cur = 0;
    for (s, e, text) in ops {
        // Skip edits nested in an earlier deletion (and anything malformed).
        if s < cur || e < s || e > bytes.len() {
            continue;
        }
        out.extend_from_slice(&bytes[cur..s]);
        out.extend_from_slice(text);
        cur = e;
    }
    out.extend_from_slice(&bytes[cur..]);
    out
}

// ---- walking paths ---------------------------------------------------------------------

/// A container's text: the offset of its `{` or `[` and the offset after its end.
type Span = (usize, usize);

/// Where a matched value lives.
#[derive(Clone, Copy)]
enum Container {
    /// A member of this object.
    Object(Span),
    /// An array element.
    Array,
}

/// The concrete path to a value, as a linked list on the stack (rendered only for
/// reject replies). Keys are kept as their JSON literals and decoded when rendered.
enum Trail<'t> {
    Root,
    Key(&'t Trail<'t>, &'t str),
    Index(&'t Trail<'t>, usize),
}

impl Trail<'_> {
    fn render(&self) -> String {
        let mut parts = Vec::new();
        let mut t = self;
        loop {
            match t {
                Trail::Root => break,
                Trail::Key(parent, raw) => {
                    let mut s = String::new();
                    let key = json::unescape(raw);
                    push_escaped_key(&mut s, key.as_deref().unwrap_or(raw));
                    parts.push(s);
                    t = parent;
                }
                Trail::Index(parent, i) => {
                    parts.push(i.to_string());
                    t = parent;
                }
            }
        }
        parts.reverse();
        parts.join(".")
    }
}

struct Rejection {
    path: String,
    reason: String,
}

enum Decision<'r> {
    Keep,
    Replace(Text<'r>),
    Remove,
    Reject(String),
}

/// One rule's pass over the message.
struct Run<'a, 'c, 'r> {
    outline: &'c Outline<'a>,
    edits: &'c mut Edits<'r>,
    obs: &'c mut dyn Observer,
    now: &'c MessageNow<'c>,
    rule: &'r CompiledRule,
    matched: bool,
    changed: bool,
    invalid: bool,
    reject: Option<Rejection>,
}

impl<'a, 'r> Run<'a, '_, 'r> {
    /// A value matched by the path so far; `rest` are the remaining segments.
    fn visit(&mut self, m: Member<'a>, rest: &[Segment], container: Container, trail: &Trail<'_>) {
        let (start, raw) = (m.start(), m.raw());
        match self.edits.get(start) {
            Some(Edit::Remove { .. }) => {}
            Some(Edit::Replace { end, text }) => {
                // Replacements are scalars: only a terminal can match them.
                if rest.is_empty() {
                    let (end, text) = (*end, text.clone());
                    if let Ok(cur) = std::str::from_utf8(text.as_bytes()) {
                        self.terminal(start, end, cur, container, trail);
                    }
                }
            }
            None if rest.is_empty() => {
                self.terminal(start, start + raw.len(), raw, container, trail)
            }
            None => self.descend(start, raw, m.kids(), rest, trail),
        }
    }

    /// Follows `segs` into the object or array `raw` at `start`, whose values are `kids`.
    fn descend(
        &mut self,
        start: usize,
        raw: &'a str,
        kids: Kids,
        segs: &[Segment],
        trail: &Trail<'_>,
    ) {
        let Some((seg, rest)) = segs.split_first() else {
            return;
        };
        let outline = self.outline;
        let span = (start, start + raw.len());
        let children = outline.members(kids);
        match raw.as_bytes().first() {
            Some(b'{') => {
                // Decided once per object, not per member: the key to look for (`*`: none).
                let key = match seg {
                    Segment::Key(k) | Segment::Index { key: k, .. } => Some(k.as_str()),
                    Segment::Any => None,
                };
                for m in children {
                    if self.reject.is_some() {
                        return;
                    }
                    if key.is_none_or(|k| m.key_is(k)) {
                        let t = Trail::Key(trail, m.key_raw());
                        self.visit(m, rest, Container::Object(span), &t);
                    }
                }
            }
            Some(b'[') => {
                for (i, m) in children.enumerate() {
                    if self.reject.is_some() {
                        return;
                    }
                    if seg.matches_index(i) {
                        let t = Trail::Index(trail, i);
                        self.visit(m, rest, Container::Array, &t);
                    }
                }
            }
            _ => {}
        }
    }

    fn terminal(
        &mut self,
        start: usize,
        end: usize,
        cur: &str,
        container: Container,
        trail: &Trail<'_>,
    ) {
        self.matched = true;
        let rule = self.rule;
        let decision = match &rule.action {
            Action::Timestamp(ts) => self.timestamp_decision(ts, cur),
            Action::Rename(rn) => rename_decision(rn, cur),
        };
        match decision {
            Decision::Keep => {}
            Decision::Replace(text) => {
                self.edits.replace(start, end, text);
                self.changed = true;
            }
            Decision::Remove => {
                if let Container::Object(obj) = container {
                    self.edits.remove(start, end, obj);
                    self.changed = true;
                }
            }
            Decision::Reject(reason) => {
                self.reject = Some(Rejection {
                    path: trail.render(),
                    reason,
                })
            }
        }
    }

    fn timestamp_decision(&mut self, ts: &TimestampAction, cur: &str) -> Decision<'r> {
        let result = match cur.as_bytes().first() {
            _ if json::is_non_finite(cur) => {
                Err("a non-finite number (NaN, Infinity) is not a timestamp".to_owned())
            }
            Some(b'n') => return Decision::Keep, // null
            Some(b'"') => match json::unescape(cur) {
                Some(s) => self.convert(ts, TimestampInput::Str(&s), false, cur),
                None => Err(TimestampError::Unparseable.to_string()),
            },
            Some(b'-' | b'0'..=b'9') => self.convert(ts, TimestampInput::Number(cur), true, cur),
            Some(b't' | b'f') => Err("a boolean is not a timestamp".to_owned()),
            Some(b'{') => Err("an object is not a timestamp".to_owned()),
            Some(b'[') => Err("an array is not a timestamp".to_owned()),
            _ => Err(TimestampError::Unparseable.to_string()),
        };
        match result {
            Ok(d) => d,
            Err(reason) => {
                self.obs.timestamp_input(TimestampFormat::Invalid);
                self.invalid = true;
                match ts.on_invalid {
                    OnInvalid::Now => {
                        let mut out = Text::new();
                        match format_timestamp(self.now.get(), ts.output, &mut out) {
                            Ok(()) => Decision::Replace(out),
                            Err(_) => Decision::Keep,
                        }
                    }
                    OnInvalid::Keep => Decision::Keep,
                    OnInvalid::Remove => Decision::Remove,
                    OnInvalid::Reject => Decision::Reject(reason),
                }
            }
        }
    }

    /// Convert a readable value; `Err` (with a reason) if it is not a usable timestamp.
    fn convert(
        &mut self,
        ts: &TimestampAction,
        input: TimestampInput<'_>,
        is_number: bool,
        cur: &str,
    ) -> Result<Decision<'r>, String> {
        let p =
            convert_timestamp(input, ts.naive_tz, ts.leap, ts.unit).map_err(|e| e.to_string())?;
        let in_output_form = is_number
            && match ts.output {
                OutputFormat::UnixSeconds => p.format == TimestampFormat::Seconds,
                OutputFormat::UnixMillis => {
                    p.format == TimestampFormat::Millis && p.time.nanos % 1_000_000 == 0
                }
                OutputFormat::Rfc3339 => false,
            };
        if in_output_form {
            self.obs.timestamp_input(p.format);
            return Ok(Decision::Keep);
        }
        let mut out = Text::new();
        format_timestamp(p.time, ts.output, &mut out).map_err(|e| e.to_string())?;
        self.obs.timestamp_input(p.format);
        if out.as_bytes() == cur.as_bytes() {
            Ok(Decision::Keep)
        } else {
            Ok(Decision::Replace(out))
        }
    }
}

fn rename_decision<'r>(rn: &'r RenameAction, cur: &str) -> Decision<'r> {
    if !cur.starts_with('"') {
        return Decision::Keep;
    }
    let Some(s) = json::unescape(cur) else {
        return Decision::Keep;
    };
    match rn.lookup.binary_search_by(|(k, _)| k.as_str().cmp(&s)) {
        Ok(i) => Decision::Replace(Text::Shared(&rn.lookup[i].1)),
        Err(_) => Decision::Keep,
    }
}

/// Why a message is answered instead of forwarded.
#[derive(Clone, Copy)]
enum ErrorKind<'x> {
    InvalidTimestamp {
        rule: &'x str,
        path: &'x str,
        reason: &'x str,
    },
    TooLarge {
        len: usize,
        limit: usize,
    },
}

fn write_error_reply(error: &ErrorKind<'_>, message_id: Option<&str>, now: UnixTime) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let (code, text) = match error {
        ErrorKind::InvalidTimestamp { path, reason, .. } => (
            "INVALID_TIMESTAMP",
            format!("invalid timestamp in field \"{path}\": {reason}"),
        ),
        ErrorKind::TooLarge { len, limit } => (
            "MESSAGE_TOO_LARGE",
            format!(
                "the message would be {len} bytes once rewritten, over the limit of {limit} bytes"
            ),
        ),
    };
    out.extend_from_slice(br#"{"type":"error_message","error_code":"#);
    json::push_json_string(&mut out, code);
    out.extend_from_slice(br#","error_message":"#);
    json::push_json_string(&mut out, &text);
    match error {
        ErrorKind::InvalidTimestamp { rule, path, .. } => {
            out.extend_from_slice(br#","details":{"rule":"#);
            json::push_json_string(&mut out, rule);
            out.extend_from_slice(br#","path":"#);
            json::push_json_string(&mut out, path);
        }
        ErrorKind::TooLarge { len, limit } => {
            out.extend_from_slice(br#","details":{"bytes":"#);
            out.extend_from_slice(itoa::Buffer::new().format(*len).as_bytes());
            out.extend_from_slice(br#","max_message_bytes":"#);
            out.extend_from_slice(itoa::Buffer::new().format(*limit).as_bytes());
        }
    }
    if let Some(id) = message_id {
        out.extend_from_slice(br#","message_id":"#);
        out.extend_from_slice(id.as_bytes());
    }
    out.extend_from_slice(br#"},"timestamp":"#);
    write_unix_seconds(now, &mut out);
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_text_spills_to_heap() {
        let mut t = Text::new();
        t.put(b"0123456789");
        assert!(matches!(t, Text::Inline { .. }));
        for _ in 0..10 {
            t.put(b"0123456789");
        }
        assert!(matches!(t, Text::Heap(_)));
        assert_eq!(t.as_bytes(), "0123456789".repeat(11).as_bytes());
        let mut s = Text::Shared(b"ab");
        s.put(b"c");
        assert_eq!(s.as_bytes(), b"abc");
    }
}
