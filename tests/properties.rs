//! Property tests for the rule engine (`wsnorm::rules`) and the config parser
//! (`wsnorm::config`).
//!
//! * `apply` never panics: arbitrary bytes, arbitrary strings, JSON-ish token soup, mutated
//!   documents and hostile nesting, under the default rules, a fixed rich rule set and random
//!   rule sets, in both directions; every outcome is consistent with serde_json.
//! * Rewrites preserve everything they do not target: on generated JSON documents (written as
//!   text, so number spellings, escapes and whitespace survive) the output is valid JSON, every
//!   value outside the paths the rules match is byte-identical, key order is unchanged, only
//!   `on_invalid = "remove"` members disappear, and without removals the output is the input
//!   with exactly the matched values' spans replaced.
//! * Idempotence: rules applied to their own output change nothing (instants in 1973..5000,
//!   the documented range, for `epoch_unit = "auto"` and every output form).
//! * Known answers: random instants written as ISO-8601 (naive or zoned) or as numbers come
//!   out as exactly the expected decimal / millisecond / RFC 3339 text, computed here with an
//!   independent calendar.
//! * `Config::from_toml` never panics on arbitrary or mutated TOML, and its errors name the file.
//!
//! Case counts are bounded so the file runs in a few seconds in release mode; set
//! `PROPTEST_CASES` to run every property with that many cases instead.

use std::collections::{BTreeMap, HashSet};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::TestCaseError;
use serde::de::IgnoredAny;
use wsnorm::config::{Config, Overrides, DEFAULT_CONFIG_TOML};
use wsnorm::rules::{
    default_rules, CompiledRules, Direction, DirectionFilter, EngineSettings, EpochUnit, FieldPath,
    JsonDialect, LeapSecond, NaiveTimezone, OnInvalid, Outcome, OutputFormat, RenameRuleConfig,
    RuleConfig, Segment, TimestampRuleConfig, UnixTime,
};
use wsnorm_testkit::oracle::nesting_depth;

/// `cases` cases, unless `PROPTEST_CASES` is set; no regression files are written.
fn config(cases: u32) -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    c.failure_persistence = None;
    c
}

// ---- calendar (independent of chrono: Howard Hinnant's civil-date algorithms) -----------

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day, hour, minute, second) of a Unix second, UTC.
fn civil(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    (
        y,
        m,
        d,
        (sod / 3600) as u32,
        (sod % 3600 / 60) as u32,
        (sod % 60) as u32,
    )
}

fn year_start(y: i64) -> i64 {
    days_from_civil(y, 1, 1) * 86_400
}

#[test]
fn calendar_oracle_sanity() {
    assert_eq!(civil(1_757_350_201), (2025, 9, 8, 16, 50, 1));
    assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
    assert_eq!(civil(-1), (1969, 12, 31, 23, 59, 59));
    assert_eq!(year_start(1), -62_135_596_800);
    assert_eq!(civil(951_782_400), (2000, 2, 29, 0, 0, 0));
    for z in [-800_000, -1, 0, 59, 60, 10_957, 2_932_896] {
        let (y, m, d) = civil_from_days(z);
        assert_eq!(days_from_civil(y, m, d), z);
    }
}

// ---- timestamp spellings --------------------------------------------------------------------

/// An instant: whole seconds (floor) and nanoseconds.
#[derive(Clone, Copy, Debug)]
struct Inst {
    secs: i64,
    nanos: u32,
}

impl Inst {
    fn unix(self) -> UnixTime {
        UnixTime {
            secs: self.secs,
            nanos: self.nanos,
        }
    }
}

/// Instants with `lo <= secs < hi`; nanoseconds of every granularity (0, ms, µs, ns).
fn inst(lo: i64, hi: i64) -> BoxedStrategy<Inst> {
    (
        lo..hi,
        0u32..1_000_000_000,
        select(vec![1_000_000_000u32, 1_000_000, 1000, 1]),
    )
        .prop_map(|(secs, n, g)| Inst {
            secs,
            nanos: n - n % g,
        })
        .boxed()
}

/// The zone part of an ISO string; offsets in minutes.
#[derive(Clone, Copy, Debug)]
enum Zone {
    Naive,
    Z,
    LowerZ,
    Colon(i32),
    Compact(i32),
    Hours(i32),
}

impl Zone {
    fn offset_secs(self) -> i64 {
        match self {
            Zone::Naive | Zone::Z | Zone::LowerZ => 0,
            Zone::Colon(m) | Zone::Compact(m) | Zone::Hours(m) => i64::from(m) * 60,
        }
    }
}

fn zone() -> BoxedStrategy<Zone> {
    prop_oneof![
        3 => Just(Zone::Naive),
        2 => Just(Zone::Z),
        1 => Just(Zone::LowerZ),
        2 => (-1439i32..=1439).prop_map(Zone::Colon),
        1 => (-1439i32..=1439).prop_map(Zone::Compact),
        1 => (-23i32..=23).prop_map(|h| Zone::Hours(h * 60)),
    ]
    .boxed()
}

/// The first `len` digits of the 9-digit fraction (zero-padded beyond 9).
fn frac(nanos: u32, len: usize) -> String {
    let s = format!("{nanos:09}");
    if len <= 9 {
        s[..len].to_owned()
    } else {
        s + &"0".repeat(len - 9)
    }
}

/// `inst` as ISO-8601 local time in `zone`: `YYYY-MM-DD<sep>HH:MM:SS[.f][zone]`.
fn iso(i: Inst, frac_len: usize, sep: char, zone: Zone) -> String {
    let (y, mo, d, h, mi, s) = civil(i.secs + zone.offset_secs());
    let mut out = format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}");
    if frac_len > 0 {
        out.push('.');
        out.push_str(&frac(i.nanos, frac_len));
    }
    let sign_hm = |m: i32| {
        let sign = if m < 0 { '-' } else { '+' };
        let a = m.unsigned_abs();
        (sign, a / 60, a % 60)
    };
    match zone {
        Zone::Naive => {}
        Zone::Z => out.push('Z'),
        Zone::LowerZ => out.push('z'),
        Zone::Colon(m) => {
            let (s, hh, mm) = sign_hm(m);
            out.push_str(&format!("{s}{hh:02}:{mm:02}"));
        }
        Zone::Compact(m) => {
            let (s, hh, mm) = sign_hm(m);
            out.push_str(&format!("{s}{hh:02}{mm:02}"));
        }
        Zone::Hours(m) => {
            let (s, hh, _) = sign_hm(m);
            out.push_str(&format!("{s}{hh:02}"));
        }
    }
    out
}

/// An ISO string as a JSON string literal, sometimes with `\u` escapes in it.
fn iso_json() -> impl Fn((Inst, usize, char, Zone, bool)) -> String {
    |(i, f, sep, z, escape)| {
        let s = iso(i, f, sep, z);
        let s = if escape {
            s.replacen('-', "\\u002d", 1).replacen(':', "\\u003A", 1)
        } else {
            s
        };
        format!("\"{s}\"")
    }
}

/// How a number is spelled.
#[derive(Clone, Copy, Debug)]
struct NumForm {
    /// The power of ten below one second: 0 seconds, 3 millis, 6 micros, 9 nanos.
    unit: u32,
    /// Fraction digits kept (truncated).
    frac: usize,
    /// 0 plain, 1 trailing zero, 2 `d.ddde+k`, 3 `ddddE-k`.
    style: u8,
}

fn num_form() -> BoxedStrategy<NumForm> {
    (select(vec![0u32, 0, 3, 3, 6, 9]), 0usize..=9, 0u8..4)
        .prop_map(|(unit, frac, style)| NumForm { unit, frac, style })
        .boxed()
}

/// `inst` in the unit of `form`, as JSON number text.
fn num_text(i: Inst, form: NumForm) -> String {
    let NumForm { unit, frac, style } = form;
    let total = i128::from(i.secs) * 1_000_000_000 + i128::from(i.nanos);
    let neg = total < 0;
    let a = total.unsigned_abs();
    let scale = 10u128.pow(9 - unit);
    let int = (a / scale).to_string();
    let width = (9 - unit) as usize;
    let all_frac = if width == 0 {
        String::new()
    } else {
        format!("{:0width$}", a % scale)
    };
    let f = &all_frac[..frac.min(width)];
    let sign = if neg { "-" } else { "" };
    match style {
        0 if f.is_empty() => format!("{sign}{int}"),
        0 => format!("{sign}{int}.{f}"),
        1 => format!("{sign}{int}.{f}0"),
        2 if int.len() > 1 => {
            // 1757350201.5 -> 1.7573502015e+9
            format!("{sign}{}.{}{f}e+{}", &int[..1], &int[1..], int.len() - 1)
        }
        2 => format!("{sign}{int}.{f}e0"),
        _ if int == "0" => match f.trim_start_matches('0') {
            "" => format!("{sign}0"),
            t => format!("{sign}{t}E-{}", f.len()),
        },
        _ => format!("{sign}{int}{f}E-{}", f.len()),
    }
}

/// Strings, booleans, containers: values a timestamp rule treats as invalid.
fn invalid_ts() -> BoxedStrategy<String> {
    prop_oneof![
        select(vec![
            "\"\"",
            "\"now\"",
            "\"garbage\"",
            "\"2025-13-01T00:00:00\"",
            "\"2025-02-30T00:00:00Z\"",
            "\"2025-09-08T24:00:00\"",
            "\"2025-09-08T16:50:01.\"",
            "\"2025-09-08T16:50:01+24:00\"",
            "\"2025-09-08 16:50\"",
            "\" 2025-09-08T16:50:01\"",
            "\"1e\"",
            "\"0x10\"",
            "\"NaN\"",
            "\"\\uff11\\uff12\"",
            "\"\\ud800\"",
            "true",
            "false",
            "{}",
            "[]",
            "[1757350201]",
            "{\"a\":1}",
        ])
        .prop_map(String::from),
        "\"[a-z ]{0,8}\"",
    ]
    .boxed()
}

/// Instants outside every idempotence or formatting range, plus far-out numbers.
fn out_of_range_ts() -> BoxedStrategy<String> {
    select(vec![
        "1e400",
        "-1e400",
        "9e30",
        "123456789012345678901234567890",
        "-99999999999999999999",
        "1e-99999999999999999999",
        "0",
        "-0",
        "-0.0",
        "0.0000000001",
        "\"0000-01-01T00:00:00Z\"",
        "\"9999-12-31T23:59:59.999999999Z\"",
        "\"9999-12-31T23:59:60-23:59\"",
        "\"0000-01-01T00:00:00+23:59\"",
        "\"2016-12-31T23:59:60Z\"",
        "\"1e400\"",
        "\"+.5\"",
        "\"5.\"",
        "\"-1.9999999999\"",
        "\"253402300800\"",
        "253402300800",
        "-62167219200",
        "8210298412799.999",
    ])
    .prop_map(String::from)
    .boxed()
}

/// Timestamp-ish values for instants in 1973..5000 (plus null and invalid values), the
/// documented idempotence range for every output with `epoch_unit = "auto"`: seconds in
/// [1e8, 1e11), so millis are in [1e11, 1e14). Two days of margin for zone offsets.
fn ts_in_range() -> BoxedStrategy<String> {
    let lo = 100_000_000 + 2 * 86_400;
    let hi = days_from_civil(5000, 12, 29) * 86_400;
    prop_oneof![
        4 => (inst(lo, hi), 0usize..=11, select(vec!['T', 'T', 't', ' ']), zone(), any::<bool>())
            .prop_map(iso_json()),
        4 => (inst(lo, hi), num_form()).prop_map(|(i, f)| num_text(i, f)),
        2 => (inst(lo, hi), num_form(), any::<bool>())
            .prop_map(|(i, f, plus)| format!("\"{}{}\"", if plus { "+" } else { "" }, num_text(i, f))),
        1 => invalid_ts(),
        1 => Just("null".to_owned()),
    ]
    .boxed()
}

/// Timestamp-ish values of every kind: years 1..9999 and negative epochs, invalid values,
/// out-of-range values, other JSON.
fn ts_any() -> BoxedStrategy<String> {
    let lo = year_start(1);
    let hi = year_start(10_000);
    prop_oneof![
        3 => (inst(lo, hi), 0usize..=12, select(vec!['T', 't', ' ']), zone(), any::<bool>())
            .prop_map(iso_json()),
        3 => (inst(-200_000_000_000, 200_000_000_000), num_form()).prop_map(|(i, f)| num_text(i, f)),
        1 => (inst(-20_000_000_000, 200_000_000_000), num_form())
            .prop_map(|(i, f)| format!("\"{}\"", num_text(i, f))),
        2 => ts_in_range(),
        1 => invalid_ts(),
        1 => out_of_range_ts(),
        1 => leaf(),
    ]
    .boxed()
}

// ---- JSON text generator ---------------------------------------------------------------------

fn ws() -> BoxedStrategy<&'static str> {
    select(vec![
        "", "", "", "", " ", "  ", "\n", "\t", "\r\n", " \n\t ",
    ])
    .boxed()
}

fn string_lit() -> BoxedStrategy<String> {
    vec(
        prop_oneof![
            3 => "[a-zA-Z0-9 _:.+-]{1,6}",
            2 => select(vec![
                "\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t", "\\u00e9", "\\u00E9",
                "\\u0000", "\\u001f", "\\uD83D\\uDE00", "\\ud800", "\\udc00x", "é", "😀",
                "日本", "\u{7f}", "\u{2028}",
            ])
            .prop_map(String::from),
        ],
        0..6,
    )
    .prop_map(|parts| format!("\"{}\"", parts.concat()))
    .boxed()
}

fn number_lit() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "-?(0|[1-9][0-9]{0,12})(\\.[0-9]{1,8})?([eE][+-]?[0-9]{1,3})?",
        1 => "[1-9][0-9]{19,40}",
        1 => select(vec![
            "1.50", "1e3", "1E3", "1e+3", "1.0e-5", "-0.0", "-0", "0", "0.0", "1.0", "2E-0",
            "123456789012345678901234567890", "-98765432109876543210.5", "1e400", "4.9e-324",
            "1757350201.447585", "1757350201447",
        ])
        .prop_map(String::from),
    ]
    .boxed()
}

fn leaf() -> BoxedStrategy<String> {
    prop_oneof![
        4 => string_lit(),
        4 => number_lit(),
        1 => select(vec!["true", "false", "null"]).prop_map(String::from),
    ]
    .boxed()
}

/// Object keys: (JSON literal, decoded). Timestamp-valued and `type` keys ...
const SPECIAL_KEYS: &[(&str, &str)] = &[
    ("\"timestamp\"", "timestamp"),
    ("\"timestamp\"", "timestamp"),
    ("\"\\u0074imestamp\"", "timestamp"),
    ("\"ts\"", "ts"),
    ("\"ts\"", "ts"),
    ("\"created_at\"", "created_at"),
    ("\"times\"", "times"),
    ("\"type\"", "type"),
    ("\"typ\\u0065\"", "type"),
];

/// ... keys the rule paths descend through ...
const STRUCTURE_KEYS: &[(&str, &str)] = &[
    ("\"payload\"", "payload"),
    ("\"items\"", "items"),
    ("\"meta\"", "meta"),
    ("\"a.b\"", "a.b"),
    ("\"*\"", "*"),
    ("\"0\"", "0"),
    ("\"1\"", "1"),
];

/// ... and others (escaped, empty, non-ASCII, look-alikes).
const OTHER_KEYS: &[(&str, &str)] = &[
    ("\"kind\"", "kind"),
    ("\"message_id\"", "message_id"),
    ("\"00\"", "00"),
    ("\"\"", ""),
    ("\"é\"", "é"),
    ("\"\\u00e9\"", "é"),
    ("\"x\"", "x"),
    ("\"Timestamp\"", "Timestamp"),
    ("\"a\\\\.b\"", "a\\.b"),
];

fn key() -> BoxedStrategy<(String, String)> {
    let pick = |keys: &'static [(&'static str, &'static str)]| {
        select(keys).prop_map(|(r, d)| (r.to_owned(), d.to_owned()))
    };
    prop_oneof![
        4 => pick(SPECIAL_KEYS),
        4 => pick(STRUCTURE_KEYS),
        2 => pick(OTHER_KEYS),
        1 => "[a-z]{1,3}".prop_map(|s| (format!("\"{s}\""), s)),
    ]
    .boxed()
}

/// Strategies for the values of special keys: `timestamp`/`ts`/`created_at` get `ts`,
/// `times` an array of `ts`, `type` gets `ty`.
#[derive(Clone)]
struct DocGen {
    ts: BoxedStrategy<String>,
    ty: BoxedStrategy<String>,
}

fn type_values() -> BoxedStrategy<String> {
    select(vec![
        "\"execute_agent\"",
        "\"EXECUTE_AGENT\"",
        "\"start_agent\"",
        "\"execute\\u005fagent\"",
        "\"chat\"",
        "\"é\"",
        "\"\"",
    ])
    .prop_map(String::from)
    .boxed()
}

fn array_text(items: Vec<(&str, String, &str)>, empty_ws: &str) -> String {
    if items.is_empty() {
        return format!("[{empty_ws}]");
    }
    let parts: Vec<String> = items
        .into_iter()
        .map(|(a, v, b)| format!("{a}{v}{b}"))
        .collect();
    format!("[{}]", parts.join(","))
}

fn member(g: &DocGen, value: BoxedStrategy<String>) -> BoxedStrategy<String> {
    (
        key(),
        (ws(), ws(), ws(), ws()),
        value,
        g.ts.clone(),
        g.ty.clone(),
        vec((ws(), g.ts.clone(), ws()), 0..4),
        ws(),
    )
        .prop_map(|((raw, dec), (w1, w2, w3, w4), v, ts, ty, times, w5)| {
            let val = match dec.as_str() {
                "timestamp" | "ts" | "created_at" => ts,
                "type" => ty,
                "times" => array_text(times, w5),
                _ => v,
            };
            format!("{w1}{raw}{w2}:{w3}{val}{w4}")
        })
        .boxed()
}

fn object(
    g: &DocGen,
    value: BoxedStrategy<String>,
    min: usize,
    max: usize,
) -> BoxedStrategy<String> {
    (vec(member(g, value), min..max), ws())
        .prop_map(|(ms, w)| {
            if ms.is_empty() {
                format!("{{{w}}}")
            } else {
                format!("{{{}}}", ms.join(","))
            }
        })
        .boxed()
}

fn value(g: &DocGen) -> BoxedStrategy<String> {
    let g = g.clone();
    leaf()
        .prop_recursive(3, 40, 5, move |inner| {
            prop_oneof![
                object(&g, inner.clone(), 0, 5),
                (vec((ws(), inner, ws()), 0..5), ws()).prop_map(|(v, w)| array_text(v, w)),
            ]
        })
        .boxed()
}

/// A JSON document whose top level is an object, as text.
fn document(g: &DocGen) -> BoxedStrategy<String> {
    (ws(), object(g, value(g), 1, 10), ws())
        .prop_map(|(a, o, b)| format!("{a}{o}{b}"))
        .boxed()
}

fn any_doc() -> BoxedStrategy<String> {
    document(&DocGen {
        ts: ts_any(),
        ty: prop_oneof![3 => type_values(), 1 => leaf()].boxed(),
    })
}

fn in_range_doc() -> BoxedStrategy<String> {
    document(&DocGen {
        ts: ts_in_range(),
        ty: type_values(),
    })
}

// ---- rule sets -------------------------------------------------------------------------------

fn paths(ps: &[&str]) -> Vec<FieldPath> {
    ps.iter()
        .map(|p| FieldPath::parse(p).unwrap_or_else(|e| panic!("{p}: {e}")))
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn ts_rule(
    name: &str,
    direction: DirectionFilter,
    ps: &[&str],
    types: &[&str],
    output: OutputFormat,
    tz: &str,
    epoch_unit: EpochUnit,
    on_invalid: OnInvalid,
) -> RuleConfig {
    RuleConfig::Timestamp(TimestampRuleConfig {
        name: name.to_owned(),
        direction,
        paths: paths(ps),
        types: types.iter().map(|t| t.to_string()).collect(),
        output,
        naive_timezone: NaiveTimezone::parse(tz).expect("valid zone"),
        epoch_unit,
        on_invalid,
        leap_second: LeapSecond::Reject,
    })
}

fn rename_rule(
    name: &str,
    direction: DirectionFilter,
    ps: &[&str],
    types: &[&str],
    map: &[(&str, &str)],
) -> RuleConfig {
    RuleConfig::Rename(RenameRuleConfig {
        name: name.to_owned(),
        direction,
        paths: paths(ps),
        types: types.iter().map(|t| t.to_string()).collect(),
        map: map
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<BTreeMap<_, _>>(),
    })
}

const OUTPUTS: [OutputFormat; 3] = [
    OutputFormat::UnixSeconds,
    OutputFormat::UnixMillis,
    OutputFormat::Rfc3339,
];
const POLICIES: [OnInvalid; 4] = [
    OnInvalid::Now,
    OnInvalid::Keep,
    OnInvalid::Remove,
    OnInvalid::Reject,
];
const UNITS: [EpochUnit; 5] = [
    EpochUnit::Auto,
    EpochUnit::Seconds,
    EpochUnit::Millis,
    EpochUnit::Micros,
    EpochUnit::Nanos,
];
const DIRECTIONS: [DirectionFilter; 3] = [
    DirectionFilter::ClientToBackend,
    DirectionFilter::BackendToClient,
    DirectionFilter::Both,
];
const ZONES: [&str; 6] = ["UTC", "+02:00", "-07:30", "+23:59", "-0530", "+05"];

/// Every `on_invalid` policy with every output form (rejecting rules last), wildcards,
/// nested and escaped paths, `types` filters, both directions, every epoch unit, a rename.
fn rich_rules() -> Vec<RuleConfig> {
    let mut v = vec![rename_rule(
        "aliases",
        DirectionFilter::Both,
        &["type", "payload.kind", "items.*.type", "*.type"],
        &[],
        &[
            ("execute_agent", "start_agent"),
            ("EXECUTE_AGENT", "start_agent"),
            ("é", "e\"\\\n\u{1}"),
            ("", "empty"),
            ("chat", "chat"),
        ],
    )];
    let path_sets: [&[&str]; 8] = [
        &["timestamp", "payload.timestamp"],
        &["*.ts", "items.*.ts", "ts"],
        &["items.*", "times.*"],
        &["*.*.created_at", "a\\.b", "created_at"],
        &["\\*", "0", "1.ts"],
        &["payload.*", "meta.1.ts", "*.*.*"],
        &["*"],
        &["times.1", "items.0.ts", "payload.timestamp"],
    ];
    let mut n = 0;
    for policy in POLICIES {
        for output in OUTPUTS {
            let types: &[&str] = match n % 4 {
                0 => &["start_agent"],
                1 => &["chat", "execute_agent"],
                _ => &[],
            };
            v.push(ts_rule(
                &format!("ts-{}-{}", policy.as_str(), output.as_str()),
                DIRECTIONS[n % 3],
                path_sets[n % path_sets.len()],
                types,
                output,
                ZONES[n % ZONES.len()],
                UNITS[n % UNITS.len()],
                policy,
            ));
            n += 1;
        }
    }
    v
}

/// The paths random rule sets draw from (wildcards, indexes, escapes).
const PATH_POOL: &[&str] = &[
    "timestamp",
    "payload.timestamp",
    "ts",
    "*.ts",
    "items.*.ts",
    "items.0.ts",
    "items.*",
    "*",
    "*.*",
    "*.*.*",
    "a\\.b",
    "\\*",
    "\\*.ts",
    "payload.*.created_at",
    "0",
    "1",
    "00",
    "times.*",
    "times.1",
    "type",
    "payload.kind",
    "meta.ts",
    "created_at",
    "é",
    "payload",
    "x.y.z.ts",
];

/// Paths that only ever reach special (timestamp-valued) keys in generated documents.
const TS_PATH_POOL: &[&str] = &[
    "timestamp",
    "payload.timestamp",
    "ts",
    "*.ts",
    "items.*.ts",
    "items.0.ts",
    "*.*.created_at",
    "created_at",
    "times.*",
    "times.0",
    "meta.times.1",
    "payload.*.*.ts",
];

const TYPES_POOL: &[&[&str]] = &[
    &[],
    &[],
    &[],
    &[],
    &["start_agent"],
    &["execute_agent"],
    &["chat", "start_agent"],
    &["é"],
];

const MAP_POOL: &[&[(&str, &str)]] = &[
    &[
        ("execute_agent", "start_agent"),
        ("EXECUTE_AGENT", "start_agent"),
    ],
    &[("chat", "chat2"), ("é", "e\"\\\n")],
    &[("", "empty"), ("start_agent", "start_agent")],
    &[("2025-09-08T16:50:01", "renamed"), ("true", "false")],
];

#[derive(Clone, Debug)]
enum RuleSpec {
    Timestamp {
        dir: usize,
        paths: Vec<&'static str>,
        types: usize,
        output: usize,
        tz: usize,
        unit: usize,
        policy: usize,
    },
    Rename {
        dir: usize,
        paths: Vec<&'static str>,
        types: usize,
        map: usize,
    },
}

fn rule_spec(pool: &'static [&'static str]) -> BoxedStrategy<RuleSpec> {
    prop_oneof![
        3 => (0..3usize, vec(select(pool), 1..4), 0..TYPES_POOL.len(), 0..3usize, 0..ZONES.len(),
              0..UNITS.len(), 0..4usize)
            .prop_map(|(dir, paths, types, output, tz, unit, policy)| RuleSpec::Timestamp {
                dir, paths, types, output, tz, unit, policy
            }),
        1 => (0..3usize, vec(select(pool), 1..3), 0..TYPES_POOL.len(), 0..MAP_POOL.len())
            .prop_map(|(dir, paths, types, map)| RuleSpec::Rename { dir, paths, types, map }),
    ]
    .boxed()
}

fn build(specs: &[RuleSpec]) -> Vec<RuleConfig> {
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| match s {
            RuleSpec::Timestamp {
                dir,
                paths,
                types,
                output,
                tz,
                unit,
                policy,
            } => ts_rule(
                &format!("r{i}"),
                DIRECTIONS[*dir],
                paths,
                TYPES_POOL[*types],
                OUTPUTS[*output],
                ZONES[*tz],
                UNITS[*unit],
                POLICIES[*policy],
            ),
            RuleSpec::Rename {
                dir,
                paths,
                types,
                map,
            } => rename_rule(
                &format!("r{i}"),
                DIRECTIONS[*dir],
                paths,
                TYPES_POOL[*types],
                MAP_POOL[*map],
            ),
        })
        .collect()
}

fn random_rules() -> BoxedStrategy<Vec<RuleConfig>> {
    vec(rule_spec(PATH_POOL), 1..7)
        .prop_map(|s| build(&s))
        .boxed()
}

/// In the dialect and depth serde_json, the oracle, reads.
fn compile(cfgs: &[RuleConfig]) -> CompiledRules {
    let settings = EngineSettings {
        json_dialect: JsonDialect::Strict,
        max_json_depth: MAX_DEPTH,
        ..EngineSettings::default()
    };
    CompiledRules::compile_with(cfgs, settings)
        .unwrap_or_else(|e| panic!("rules must compile: {e}"))
}

fn direction() -> BoxedStrategy<Direction> {
    select(Direction::ALL.to_vec()).boxed()
}

const NOW: UnixTime = UnixTime {
    secs: 1_757_350_201,
    nanos: 447_585_123,
};

// ---- oracle: a span-keeping JSON tree of valid text ----------------------------------------

#[derive(Debug)]
struct Node {
    start: usize,
    end: usize,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Obj(Vec<Member>),
    Arr(Vec<Node>),
    Scalar,
}

#[derive(Debug)]
struct Member {
    key_raw: String,
    key: Option<String>,
    value: Node,
}

/// Parses text serde_json accepted; keeps every value's byte span.
struct TreeParser<'a> {
    b: &'a [u8],
    s: &'a str,
    i: usize,
}

impl TreeParser<'_> {
    fn parse(s: &str) -> Node {
        let mut p = TreeParser {
            b: s.as_bytes(),
            s,
            i: 0,
        };
        p.ws();
        let n = p.value();
        p.ws();
        assert_eq!(p.i, s.len(), "trailing text in {s:?}");
        n
    }

    fn ws(&mut self) {
        while matches!(self.b.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn string(&mut self) -> (usize, usize) {
        let start = self.i;
        assert_eq!(self.b[self.i], b'"');
        self.i += 1;
        loop {
            match self.b[self.i] {
                b'\\' => self.i += 2,
                b'"' => {
                    self.i += 1;
                    return (start, self.i);
                }
                _ => self.i += 1,
            }
        }
    }

    fn value(&mut self) -> Node {
        let start = self.i;
        let kind = match self.b[self.i] {
            b'{' => {
                self.i += 1;
                let mut members = Vec::new();
                self.ws();
                if self.b[self.i] == b'}' {
                    self.i += 1;
                } else {
                    loop {
                        self.ws();
                        let (ks, ke) = self.string();
                        let key_raw = self.s[ks..ke].to_owned();
                        self.ws();
                        assert_eq!(self.b[self.i], b':');
                        self.i += 1;
                        self.ws();
                        let value = self.value();
                        self.ws();
                        members.push(Member {
                            key: serde_json::from_str::<String>(&key_raw).ok(),
                            key_raw,
                            value,
                        });
                        let c = self.b[self.i];
                        self.i += 1;
                        if c == b'}' {
                            break;
                        }
                        assert_eq!(c, b',');
                    }
                }
                Kind::Obj(members)
            }
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.b[self.i] == b']' {
                    self.i += 1;
                } else {
                    loop {
                        self.ws();
                        items.push(self.value());
                        self.ws();
                        let c = self.b[self.i];
                        self.i += 1;
                        if c == b']' {
                            break;
                        }
                        assert_eq!(c, b',');
                    }
                }
                Kind::Arr(items)
            }
            b'"' => {
                self.string();
                Kind::Scalar
            }
            _ => {
                while matches!(
                    self.b.get(self.i),
                    Some(b'-' | b'+' | b'.' | b'0'..=b'9' | b'a'..=b'z' | b'E')
                ) {
                    self.i += 1;
                }
                Kind::Scalar
            }
        };
        Node {
            start,
            end: self.i,
            kind,
        }
    }
}

/// Locations (member / element indexes from the root) some rule path reaches as a terminal,
/// ignoring `direction` and `types` (an over-approximation: anything else must be untouched).
#[derive(Default, Debug)]
struct Matched {
    any: HashSet<Vec<usize>>,
    /// Object members reached by a timestamp rule with `on_invalid = "remove"`.
    removable: HashSet<Vec<usize>>,
}

fn collect(
    node: &Node,
    segs: &[Segment],
    loc: &mut Vec<usize>,
    in_object: bool,
    remove: bool,
    m: &mut Matched,
) {
    let Some((seg, rest)) = segs.split_first() else {
        m.any.insert(loc.clone());
        if remove && in_object {
            m.removable.insert(loc.clone());
        }
        return;
    };
    match &node.kind {
        Kind::Obj(members) => {
            for (i, mem) in members.iter().enumerate() {
                let hit = match (seg, &mem.key) {
                    (Segment::Any, _) => true,
                    (Segment::Key(k) | Segment::Index { key: k, .. }, Some(key)) => k == key,
                    _ => false,
                };
                if hit {
                    loc.push(i);
                    collect(&mem.value, rest, loc, true, remove, m);
                    loc.pop();
                }
            }
        }
        Kind::Arr(items) => {
            for (i, item) in items.iter().enumerate() {
                let hit = match seg {
                    Segment::Any => true,
                    Segment::Index { index, .. } => *index == i,
                    Segment::Key(_) => false,
                };
                if hit {
                    loc.push(i);
                    collect(item, rest, loc, false, remove, m);
                    loc.pop();
                }
            }
        }
        Kind::Scalar => {}
    }
}

fn matched(root: &Node, cfgs: &[RuleConfig]) -> Matched {
    let mut m = Matched::default();
    for cfg in cfgs {
        let remove = matches!(cfg, RuleConfig::Timestamp(t) if t.on_invalid == OnInvalid::Remove);
        for p in cfg.paths() {
            collect(root, p.segments(), &mut Vec::new(), false, remove, &mut m);
        }
    }
    m
}

/// What changed between input and output: replaced spans (input start, end, new text) and
/// whether any member was removed.
#[derive(Default, Clone)]
struct Diff {
    replaced: Vec<(usize, usize, String)>,
    removed: bool,
}

struct Cmp<'a> {
    input: &'a str,
    output: &'a str,
    m: &'a Matched,
}

impl Cmp<'_> {
    fn node(&self, a: &Node, b: &Node, loc: &mut Vec<usize>) -> Result<Diff, String> {
        match (&a.kind, &b.kind) {
            (Kind::Obj(am), Kind::Obj(bm)) => self.members(am, bm, 0, 0, loc),
            (Kind::Arr(ai), Kind::Arr(bi)) => {
                if ai.len() != bi.len() {
                    return Err(format!(
                        "array at {loc:?} has {} elements, was {}",
                        bi.len(),
                        ai.len()
                    ));
                }
                let mut d = Diff::default();
                for (i, (x, y)) in ai.iter().zip(bi).enumerate() {
                    loc.push(i);
                    let r = self.node(x, y, loc);
                    loc.pop();
                    let r = r?;
                    d.replaced.extend(r.replaced);
                    d.removed |= r.removed;
                }
                Ok(d)
            }
            _ => {
                let (ta, tb) = (&self.input[a.start..a.end], &self.output[b.start..b.end]);
                if ta == tb {
                    return Ok(Diff::default());
                }
                if !self.m.any.contains(loc) {
                    return Err(format!(
                        "value at {loc:?} not matched by any rule changed: {ta:?} -> {tb:?}"
                    ));
                }
                if !matches!(b.kind, Kind::Scalar) {
                    return Err(format!(
                        "value at {loc:?} replaced by a container: {ta:?} -> {tb:?}"
                    ));
                }
                Ok(Diff {
                    replaced: vec![(a.start, a.end, tb.to_owned())],
                    removed: false,
                })
            }
        }
    }

    /// Align input members `a[i..]` with output members `b[j..]`: a member is either kept (same
    /// key literal, compared recursively) or removed (only if removable); backtracks.
    fn members(
        &self,
        a: &[Member],
        b: &[Member],
        i: usize,
        j: usize,
        loc: &mut Vec<usize>,
    ) -> Result<Diff, String> {
        if i == a.len() {
            return if j == b.len() {
                Ok(Diff::default())
            } else {
                Err(format!(
                    "object at {loc:?}: extra or reordered member {}",
                    b[j].key_raw
                ))
            };
        }
        loc.push(i);
        let removable = self.m.removable.contains(loc);
        let kept = if j < b.len() && a[i].key_raw == b[j].key_raw {
            self.node(&a[i].value, &b[j].value, loc)
        } else {
            Err(format!(
                "object at {:?}: member {} (#{i}) missing or out of order",
                &loc[..loc.len() - 1],
                a[i].key_raw
            ))
        };
        loc.pop();
        let kept = kept.and_then(|mut d| {
            let rest = self.members(a, b, i + 1, j + 1, loc)?;
            d.replaced.extend(rest.replaced);
            d.removed |= rest.removed;
            Ok(d)
        });
        match kept {
            Ok(d) => Ok(d),
            Err(e) if removable => self
                .members(a, b, i + 1, j, loc)
                .map(|mut d| {
                    d.removed = true;
                    d
                })
                .map_err(|e2| format!("{e}; or removed: {e2}")),
            Err(e) => Err(e),
        }
    }
}

/// The full "rewrites preserve everything else" check for one outcome.
fn check_outcome(
    cfgs: &[RuleConfig],
    rules: &CompiledRules,
    dir: Direction,
    doc: &str,
    outcome: &Outcome,
) -> Result<Seen, TestCaseError> {
    let mut seen = Seen::default();
    prop_assert!(
        serde_json::from_str::<IgnoredAny>(doc).is_ok(),
        "generator produced invalid JSON: {doc}"
    );
    let input_is_value = serde_json::from_str::<serde_json::Value>(doc).is_ok();
    if !rules.applies_to(dir) {
        prop_assert_eq!(outcome, &Outcome::Unchanged);
        return Ok(seen);
    }
    match outcome {
        Outcome::NotJson => prop_assert!(false, "valid JSON classified NotJson: {doc}"),
        Outcome::TooLarge { .. } => prop_assert!(false, "no output limit is set: {outcome:?}"),
        Outcome::Unchanged => {}
        Outcome::Rejected { reply, rule } => {
            check_reject(cfgs, reply, rule)?;
            seen.rejected = true;
        }
        Outcome::Rewritten(out) => {
            seen.rewritten = true;
            prop_assert_ne!(&out[..], doc.as_bytes(), "Rewritten with identical bytes");
            let out = std::str::from_utf8(out).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(
                serde_json::from_str::<IgnoredAny>(out).is_ok(),
                "output is not JSON:\n in: {doc}\nout: {out}"
            );
            if input_is_value {
                if let Err(e) = serde_json::from_str::<serde_json::Value>(out) {
                    prop_assert!(
                        false,
                        "output not a serde_json Value ({e}):\n in: {doc}\nout: {out}"
                    );
                }
            }
            let (ta, tb) = (TreeParser::parse(doc), TreeParser::parse(out));
            let m = matched(&ta, cfgs);
            let cmp = Cmp {
                input: doc,
                output: out,
                m: &m,
            };
            let diff = cmp
                .node(&ta, &tb, &mut Vec::new())
                .map_err(|e| TestCaseError::fail(format!("{e}\n in: {doc}\nout: {out}")))?;
            seen.removed = diff.removed;
            seen.replaced = diff.replaced.len();
            if !diff.removed {
                // Without removals the output is the input with exactly those spans replaced
                // (whitespace and everything else byte for byte).
                let mut expect = String::new();
                let mut cur = 0;
                let mut reps = diff.replaced.clone();
                reps.sort();
                for (s, e, text) in reps {
                    expect.push_str(&doc[cur..s]);
                    expect.push_str(&text);
                    cur = e;
                }
                expect.push_str(&doc[cur..]);
                prop_assert_eq!(expect.as_str(), out, "splice mismatch; input: {}", doc);
            }
        }
    }
    Ok(seen)
}

/// What one `check_outcome` saw (to show the generators reach the interesting cases).
#[derive(Default, Debug)]
struct Seen {
    rewritten: bool,
    rejected: bool,
    removed: bool,
    replaced: usize,
}

/// An `error_message` reply. `message_id` is echoed verbatim from the message, so it may hold
/// escapes serde_json will not decode into a `String` (`"\ud800"`): kept raw.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Reply {
    #[serde(rename = "type")]
    ty: String,
    error_code: String,
    error_message: String,
    details: ReplyDetails,
    timestamp: serde_json::Number,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyDetails {
    rule: String,
    path: String,
    message_id: Option<Box<serde_json::value::RawValue>>,
}

fn check_reject(cfgs: &[RuleConfig], reply: &[u8], rule: &str) -> Result<(), TestCaseError> {
    let is_reject_rule = cfgs.iter().any(
        |c| matches!(c, RuleConfig::Timestamp(t) if t.name == rule && t.on_invalid == OnInvalid::Reject),
    );
    prop_assert!(is_reject_rule, "rejected by {rule}, which does not reject");
    let r: Reply = serde_json::from_slice(reply).map_err(|e| {
        TestCaseError::fail(format!(
            "reply is not JSON ({e}): {}",
            String::from_utf8_lossy(reply)
        ))
    })?;
    prop_assert_eq!(r.ty, "error_message");
    prop_assert_eq!(r.error_code, "INVALID_TIMESTAMP");
    prop_assert_eq!(&r.details.rule, rule);
    prop_assert!(
        r.error_message.contains(&r.details.path),
        "{} / {}",
        r.error_message,
        r.details.path
    );
    prop_assert!(r.timestamp.as_f64().is_some());
    if let Some(id) = r.details.message_id {
        let first = id.get().as_bytes()[0];
        prop_assert!(
            first == b'"' || first == b'-' || first.is_ascii_digit(),
            "message_id {}",
            id.get()
        );
    }
    Ok(())
}

// ---- 1. apply never panics -----------------------------------------------------------------

/// serde_json's nesting limit, the engine's here (see `compile`): deeper documents are `NotJson`.
const MAX_DEPTH: usize = 128;

/// `apply` on arbitrary bytes: no panic, and the outcome agrees with serde_json: `NotJson`
/// exactly for invalid UTF-8, text serde_json rejects, and nesting deeper than 128.
fn no_panic(cfgs: &[RuleConfig], rules: &CompiledRules, bytes: &[u8]) -> Result<(), TestCaseError> {
    let invalid = match std::str::from_utf8(bytes) {
        Err(e) => Some(e.to_string()),
        Ok(s) => match serde_json::from_str::<IgnoredAny>(s) {
            Err(e) => Some(e.to_string()),
            Ok(_) if nesting_depth(bytes) > MAX_DEPTH => Some("too deep".to_owned()),
            Ok(_) => None,
        },
    };
    for dir in Direction::ALL {
        let outcome = rules.apply(dir, bytes, NOW, &mut ());
        if !rules.applies_to(dir) {
            prop_assert_eq!(&outcome, &Outcome::Unchanged);
            continue;
        }
        match (&outcome, &invalid) {
            (Outcome::NotJson, Some(_)) => {}
            (Outcome::NotJson, None) => prop_assert!(
                false,
                "NotJson but serde_json accepts {:?}",
                String::from_utf8_lossy(bytes)
            ),
            (_, Some(e)) => prop_assert!(
                false,
                "invalid ({e}) but outcome is {outcome:?}: {:?}",
                String::from_utf8_lossy(bytes)
            ),
            (Outcome::Rewritten(out), None) => {
                prop_assert_ne!(&out[..], bytes);
                let ok = std::str::from_utf8(out)
                    .ok()
                    .is_some_and(|s| serde_json::from_str::<IgnoredAny>(s).is_ok());
                prop_assert!(
                    ok,
                    "Rewritten output is not JSON: {:?} -> {:?}",
                    String::from_utf8_lossy(bytes),
                    String::from_utf8_lossy(out)
                );
            }
            (Outcome::Rejected { reply, rule }, None) => check_reject(cfgs, reply, rule)?,
            (Outcome::TooLarge { .. }, None) => {
                prop_assert!(false, "no output limit is set: {outcome:?}")
            }
            (Outcome::Unchanged, None) => {}
        }
    }
    Ok(())
}

fn all_rule_sets(random: Vec<RuleConfig>) -> Vec<(Vec<RuleConfig>, CompiledRules)> {
    [default_rules(), rich_rules(), random]
        .into_iter()
        .map(|c| {
            let r = compile(&c);
            (c, r)
        })
        .collect()
}

const SOUP: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    " ",
    "\n",
    "\"",
    "\\",
    "\"timestamp\"",
    "\"payload\"",
    "\"type\"",
    "\"ts\"",
    "\"items\"",
    "\"times\"",
    "\"*\"",
    "\"a.b\"",
    "\"0\"",
    "\"message_id\"",
    "\"execute_agent\"",
    "\"2025-09-08T16:50:01.447585\"",
    "\"2025-09-08T16:50:01Z\"",
    "\"1757350201\"",
    "1757350201447",
    "1757350201.447585",
    "-0.0",
    "1e400",
    "0",
    "-",
    ".",
    "e",
    "null",
    "true",
    "false",
    "nul",
    "\"\\u00",
    "\"\\ud800\"",
    "\"\\u0074imestamp\"",
    "\u{0}",
    "é",
    "\u{feff}",
];

fn soup() -> BoxedStrategy<Vec<u8>> {
    vec(
        prop_oneof![
            6 => select(SOUP).prop_map(|t| t.as_bytes().to_vec()),
            1 => any::<u8>().prop_map(|b| vec![b]),
        ],
        0..60,
    )
    .prop_map(|parts| parts.concat())
    .boxed()
}

#[derive(Clone, Debug)]
enum ByteEdit {
    Delete(Index, u8),
    Insert(Index, u8),
    Set(Index, u8),
    Dup(Index, u8),
}

fn mutated_doc() -> BoxedStrategy<Vec<u8>> {
    let edit = prop_oneof![
        (any::<Index>(), 1u8..8).prop_map(|(i, n)| ByteEdit::Delete(i, n)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| ByteEdit::Insert(i, b)),
        (any::<Index>(), select(b"{}[]\",:\\ 0-e.nt".to_vec()))
            .prop_map(|(i, b)| ByteEdit::Set(i, b)),
        (any::<Index>(), 1u8..16).prop_map(|(i, n)| ByteEdit::Dup(i, n)),
    ];
    (any_doc(), vec(edit, 1..4))
        .prop_map(|(doc, edits)| {
            let mut b = doc.into_bytes();
            for e in edits {
                if b.is_empty() {
                    break;
                }
                match e {
                    ByteEdit::Delete(i, n) => {
                        let s = i.index(b.len());
                        let e = (s + usize::from(n)).min(b.len());
                        b.drain(s..e);
                    }
                    ByteEdit::Insert(i, x) => {
                        let at = i.index(b.len() + 1);
                        b.insert(at, x);
                    }
                    ByteEdit::Set(i, x) => {
                        let at = i.index(b.len());
                        b[at] = x;
                    }
                    ByteEdit::Dup(i, n) => {
                        let s = i.index(b.len());
                        let e = (s + usize::from(n)).min(b.len());
                        let piece = b[s..e].to_vec();
                        b.splice(s..s, piece);
                    }
                }
            }
            b
        })
        .boxed()
}

/// Nesting around the 128-level limit, objects and arrays, valid and unbalanced.
fn deep() -> BoxedStrategy<Vec<u8>> {
    (120usize..136, any::<bool>(), any::<bool>(), 0usize..3)
        .prop_map(|(n, objects, top_object, unbalance)| {
            let mut s = String::new();
            if top_object {
                s.push_str("{\"timestamp\":\"2025-09-08T16:50:01\",\"payload\":");
            }
            for _ in 0..n {
                s.push_str(if objects { "{\"timestamp\":" } else { "[" });
            }
            s.push_str("\"2025-09-08T16:50:01\"");
            for _ in 0..n.saturating_sub(unbalance) {
                s.push(if objects { '}' } else { ']' });
            }
            if top_object {
                s.push('}');
            }
            s.into_bytes()
        })
        .boxed()
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn apply_never_panics_on_bytes(bytes in vec(any::<u8>(), 0..200), random in random_rules()) {
        for (c, r) in all_rule_sets(random) {
            no_panic(&c, &r, &bytes)?;
        }
    }

    #[test]
    fn apply_never_panics_on_strings(s in any::<String>(), random in random_rules()) {
        for (c, r) in all_rule_sets(random) {
            no_panic(&c, &r, s.as_bytes())?;
        }
    }

    #[test]
    fn apply_never_panics_on_json_soup(bytes in soup(), random in random_rules()) {
        for (c, r) in all_rule_sets(random) {
            no_panic(&c, &r, &bytes)?;
        }
    }

    #[test]
    fn apply_never_panics_on_mutated_documents(bytes in mutated_doc(), random in random_rules()) {
        for (c, r) in all_rule_sets(random) {
            no_panic(&c, &r, &bytes)?;
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn apply_never_panics_on_deep_nesting(bytes in deep(), random in random_rules()) {
        for (c, r) in all_rule_sets(random) {
            no_panic(&c, &r, &bytes)?;
        }
    }
}

// ---- 2. rewrites preserve what they do not target ---------------------------------------------

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn rewrites_preserve_untargeted_bytes_default_rules(doc in any_doc(), dir in direction()) {
        let cfgs = default_rules();
        let rules = compile(&cfgs);
        let out = rules.apply(dir, doc.as_bytes(), NOW, &mut ());
        check_outcome(&cfgs, &rules, dir, &doc, &out)?;
    }

    #[test]
    fn rewrites_preserve_untargeted_bytes_rich_rules(doc in any_doc(), dir in direction()) {
        let cfgs = rich_rules();
        let rules = compile(&cfgs);
        let out = rules.apply(dir, doc.as_bytes(), NOW, &mut ());
        check_outcome(&cfgs, &rules, dir, &doc, &out)?;
    }

    #[test]
    fn rewrites_preserve_untargeted_bytes_random_rules(
        doc in any_doc(),
        cfgs in random_rules(),
        dir in direction(),
    ) {
        let rules = compile(&cfgs);
        let out = rules.apply(dir, doc.as_bytes(), NOW, &mut ());
        check_outcome(&cfgs, &rules, dir, &doc, &out)?;
    }
}

// ---- 3. idempotence ---------------------------------------------------------------------------

/// `[rename type]` + 1..3 timestamp rules on timestamp-valued paths, `epoch_unit = "auto"`,
/// one output form for all (two rules with different outputs on one value are not
/// idempotent by design), random zones, policies, directions and post-rename `types`.
fn idempotent_rules() -> BoxedStrategy<Vec<RuleConfig>> {
    let ts = (
        0..3usize,
        vec(select(TS_PATH_POOL), 1..4),
        0..3usize,
        0..ZONES.len(),
        0..4usize,
    );
    (0..3usize, vec(ts, 1..4), any::<bool>())
        .prop_map(|(output, specs, with_rename)| {
            let mut v = Vec::new();
            if with_rename {
                v.push(rename_rule(
                    "aliases",
                    DirectionFilter::Both,
                    &["type"],
                    &[],
                    &[
                        ("execute_agent", "start_agent"),
                        ("EXECUTE_AGENT", "start_agent"),
                    ],
                ));
            }
            for (i, (dir, paths, types, tz, policy)) in specs.into_iter().enumerate() {
                let types: &[&str] =
                    [&[][..], &[], &["start_agent"], &["chat", "start_agent"]][types];
                v.push(ts_rule(
                    &format!("ts{i}"),
                    [DirectionFilter::Both, DirectionFilter::ClientToBackend][dir % 2],
                    &paths,
                    types,
                    OUTPUTS[output],
                    ZONES[tz],
                    EpochUnit::Auto,
                    POLICIES[policy],
                ));
            }
            v
        })
        .boxed()
}

fn in_range_now() -> BoxedStrategy<UnixTime> {
    inst(100_000_000, days_from_civil(5000, 12, 29) * 86_400)
        .prop_map(Inst::unix)
        .boxed()
}

fn check_idempotent(
    rules: &CompiledRules,
    dir: Direction,
    doc: &str,
    now1: UnixTime,
    now2: UnixTime,
) -> Result<(), TestCaseError> {
    if let Outcome::Rewritten(out) = rules.apply(dir, doc.as_bytes(), now1, &mut ()) {
        let again = rules.apply(dir, &out, now2, &mut ());
        prop_assert_eq!(
            &again,
            &Outcome::Unchanged,
            "not idempotent:\n  in: {}\n out: {}",
            doc,
            String::from_utf8_lossy(&out)
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn idempotent_default_rules(doc in in_range_doc(), now1 in in_range_now(), now2 in in_range_now()) {
        let rules = compile(&default_rules());
        check_idempotent(&rules, Direction::ClientToBackend, &doc, now1, now2)?;
    }

    #[test]
    fn idempotent_auto_timestamp_rules(
        doc in in_range_doc(),
        cfgs in idempotent_rules(),
        dir in direction(),
        now1 in in_range_now(),
        now2 in in_range_now(),
    ) {
        let rules = compile(&cfgs);
        check_idempotent(&rules, dir, &doc, now1, now2)?;
    }
}

// ---- 4. known answers -------------------------------------------------------------------------

/// `secs.fraction` as the engine writes it: the first 9 fraction digits, trailing zeros
/// trimmed, at least one digit.
fn expected_seconds(secs: i64, digits: &str) -> String {
    let f = &digits[..digits.len().min(9)];
    let f = f.trim_end_matches('0');
    format!("{secs}.{}", if f.is_empty() { "0" } else { f })
}

fn instant_1973_2100() -> std::ops::Range<i64> {
    year_start(1973)..year_start(2100)
}

fn naive_iso(secs: i64, digits: &str, sep: char) -> String {
    let (y, mo, d, h, mi, s) = civil(secs);
    let mut iso = format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}");
    if !digits.is_empty() {
        iso.push('.');
        iso.push_str(digits);
    }
    iso
}

proptest! {
    #![proptest_config(config(4096))]

    /// Naive ISO (default rules, UTC) -> exactly `secs.fraction`.
    #[test]
    fn known_answer_naive_iso_to_seconds(
        secs in instant_1973_2100(),
        digits in "[0-9]{0,12}",
        sep in select(vec!['T', 't', ' ']),
    ) {
        let iso = naive_iso(secs, &digits, sep);
        let doc = format!("{{\"type\":\"chat\",\"timestamp\":\"{iso}\",\"payload\":{{\"timestamp\":\"{iso}\"}}}}");
        let want = expected_seconds(secs, &digits);
        let rules = compile(&default_rules());
        let out = rules.apply(Direction::ClientToBackend, doc.as_bytes(), NOW, &mut ());
        let expect = format!("{{\"type\":\"chat\",\"timestamp\":{want},\"payload\":{{\"timestamp\":{want}}}}}");
        prop_assert_eq!(out, Outcome::Rewritten(expect.into_bytes()), "{}", iso);
    }

    /// Micro fractions: `secs.µµµµµµ` with the micros formatted to 6 digits.
    #[test]
    fn known_answer_micro_fractions(secs in instant_1973_2100(), micros in 0u32..1_000_000) {
        let digits = format!("{micros:06}");
        let iso = naive_iso(secs, &digits, 'T');
        let doc = format!("{{\"timestamp\":\"{iso}\"}}");
        let want = expected_seconds(secs, &digits);
        let rules = compile(&default_rules());
        let out = rules.apply(Direction::ClientToBackend, doc.as_bytes(), NOW, &mut ());
        prop_assert_eq!(out, Outcome::Rewritten(format!("{{\"timestamp\":{want}}}").into_bytes()));
    }

    /// Naive ISO read in a configured `naive_timezone`, and zoned ISO: the zone is honoured.
    #[test]
    fn known_answer_zones(
        secs in instant_1973_2100(),
        digits in "[0-9]{0,9}",
        tz in -1439i32..=1439,
        zoned in any::<bool>(),
    ) {
        let sign = if tz < 0 { '-' } else { '+' };
        let zone = format!("{sign}{:02}:{:02}", tz.unsigned_abs() / 60, tz.unsigned_abs() % 60);
        let local = naive_iso(secs + i64::from(tz) * 60, &digits, 'T');
        let (text, rule_tz) = if zoned {
            (format!("{local}{zone}"), "UTC".to_owned())
        } else {
            (local, zone)
        };
        let cfgs = vec![ts_rule(
            "t", DirectionFilter::Both, &["ts"], &[], OutputFormat::UnixSeconds, &rule_tz,
            EpochUnit::Auto, OnInvalid::Reject,
        )];
        let rules = compile(&cfgs);
        let out = rules.apply(Direction::BackendToClient, format!("{{\"ts\":\"{text}\"}}").as_bytes(), NOW, &mut ());
        let want = expected_seconds(secs, &digits);
        prop_assert_eq!(out, Outcome::Rewritten(format!("{{\"ts\":{want}}}").into_bytes()), "{}", text);
    }

    /// Epoch numbers in every unit -> seconds, millis (floor) and RFC 3339 (AutoSi fraction).
    #[test]
    fn known_answer_numbers(
        // From 1e8 s (1973-03-03): below it `auto` reads epoch millis as seconds.
        secs in 100_000_000..year_start(2100),
        nanos in 0u32..1_000_000_000,
        unit in select(vec![0u32, 3, 6, 9]),
        output in 0..3usize,
    ) {
        // Exactly representable in the unit: drop digits below it.
        let i = Inst { secs, nanos: nanos - nanos % 10u32.pow(9 - unit) };
        let frac = if unit == 0 { 9 } else { 0 };
        let text = num_text(i, NumForm { unit, frac, style: 0 });
        let want = match OUTPUTS[output] {
            // A JSON number read as seconds is already in the output form: left as written.
            OutputFormat::UnixSeconds if unit == 0 => text.clone(),
            OutputFormat::UnixSeconds => expected_seconds(i.secs, &format!("{:09}", i.nanos)),
            OutputFormat::UnixMillis => format!("{}", i.secs * 1000 + i64::from(i.nanos / 1_000_000)),
            OutputFormat::Rfc3339 => {
                let (y, mo, d, h, mi, s) = civil(i.secs);
                let f = match i.nanos {
                    0 => String::new(),
                    n if n % 1_000_000 == 0 => format!(".{:03}", n / 1_000_000),
                    n if n % 1000 == 0 => format!(".{:06}", n / 1000),
                    n => format!(".{n:09}"),
                };
                format!("\"{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{f}Z\"")
            }
        };
        let cfgs = vec![ts_rule(
            "t", DirectionFilter::ClientToBackend, &["ts"], &[], OUTPUTS[output], "UTC",
            EpochUnit::Auto, OnInvalid::Reject,
        )];
        let rules = compile(&cfgs);
        let out = rules.apply(Direction::ClientToBackend, format!("{{\"ts\":{text}}}").as_bytes(), NOW, &mut ());
        let got = match &out {
            Outcome::Rewritten(b) => String::from_utf8_lossy(b).into_owned(),
            Outcome::Unchanged => format!("{{\"ts\":{text}}}"),
            other => format!("{other:?}"),
        };
        prop_assert_eq!(got, format!("{{\"ts\":{want}}}"), "input {}", text);
    }
}

// ---- 5. the config parser ---------------------------------------------------------------------

const FILE: &str = "props/wsnorm.toml";

fn check_config(text: &str) -> Result<(), TestCaseError> {
    match Config::from_toml(FILE, text, &Overrides::default()) {
        Ok(cfg) => {
            let _ = cfg.describe();
            for dir in Direction::ALL {
                let msg = br#"{"type":"execute_agent","timestamp":"2025-09-08T16:50:01.447585","payload":{"timestamp":"x"}}"#;
                let _ = cfg.rules.apply(dir, msg, NOW, &mut ());
            }
        }
        Err(e) => {
            let s = e.to_string();
            prop_assert!(
                s.starts_with(&format!("{FILE}: ")),
                "error does not name the file: {s}"
            );
        }
    }
    Ok(())
}

/// Lines that exercise every key and many invalid values.
const CONFIG_LINES: &[&str] = &[
    "[[rules]]",
    "[rules]",
    "rules = []",
    "[server]",
    "[backend]",
    "[websocket]",
    "[[websocket.routes]]",
    "name = \"x\"",
    "name = \"iso-timestamps\"",
    "name = \"\"",
    "name = \"bad name\"",
    "name = 'ÿ'",
    "kind = \"timestamp\"",
    "kind = \"rename\"",
    "kind = \"bogus\"",
    "direction = \"both\"",
    "direction = \"sideways\"",
    "paths = []",
    "paths = [\"a..b\"]",
    "paths = [\"\\\\q\"]",
    "paths = [\"trailing\\\\\"]",
    "paths = [\"*\", \"\\\\*\", \"a\\\\.b\", \"items.0.ts\"]",
    "paths = [1]",
    "types = [\"start_agent\"]",
    "types = \"start_agent\"",
    "output = \"rfc3339\"",
    "output = \"unix_millis\"",
    "output = \"weeks\"",
    "naive_timezone = \"Europe/Berlin\"",
    "naive_timezone = \"+24:00\"",
    "naive_timezone = \"-05:30\"",
    "naive_timezone = \"+\"",
    "epoch_unit = \"nanos\"",
    "epoch_unit = \"weeks\"",
    "on_invalid = \"reject\"",
    "on_invalid = \"remove\"",
    "on_invalid = \"explode\"",
    "map = { a = \"b\", b = \"c\" }",
    "map = {}",
    "map = { execute_agent = \"start_agent\" }",
    "map = { \"\" = \"x\" }",
    "listen = \"nonsense\"",
    "listen = \"[::1]:0\"",
    "admin = \"127.0.0.1:99999\"",
    "threads = 0",
    "threads = -1",
    "max_connections = 18446744073709551616",
    "max_header_bytes = 1",
    "drain_timeout_secs = 99999",
    "address = \"ws://h:1/x\"",
    "address = \"ftp://x:1\"",
    "address = \":80\"",
    "address = \"[::1]:65535\"",
    "address = \"http://[::1]:8000/\"",
    "address = \"h:99999\"",
    "path = \"*\"",
    "path = \"\"",
    "path = \"/a/*/b\"",
    "path = \"/ws/*\"",
    "path = \"/ws\"",
    "backend_offer = \"fixed\"",
    "backend_offer = \"forward\"",
    "fixed_subprotocol = \"bad proto\"",
    "backend_subprotocols = [\"agent_chat\", \"\"]",
    "subprotocols = [\"\", \"a b\"]",
    "subprotocols = []",
    "no_common_subprotocol = \"reject\"",
    "token_subprotocol_prefixes = [\"\"]",
    "tokens_to_authorization = \"yes\"",
    "handshake_timeout_ms = 0",
    "handshake_timeout_ms = 18446744073709551615",
    "ping_interval_secs = 0",
    "idle_timeout_secs = 1",
    "max_message_bytes = 0",
    "unknown_key = 1",
    "\"",
    "[",
    "= 1",
    "key = \"\"\"",
    "a.b.c = 1",
    "",
    "# comment",
];

fn config_line() -> BoxedStrategy<String> {
    prop_oneof![
        4 => select(CONFIG_LINES).prop_map(String::from),
        1 => ".{0,30}",
        1 => "[a-z_]{1,12} = (\"[^\"\\\\]{0,8}\"|[0-9]{1,20}|true|\\[\\])",
    ]
    .boxed()
}

#[derive(Clone, Debug)]
enum LineEdit {
    Delete(Index),
    Duplicate(Index),
    Swap(Index, Index),
    Replace(Index, String),
    Insert(Index, String),
    Truncate(Index, Index),
}

fn mutated_config() -> BoxedStrategy<String> {
    let edit = prop_oneof![
        any::<Index>().prop_map(LineEdit::Delete),
        any::<Index>().prop_map(LineEdit::Duplicate),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| LineEdit::Swap(a, b)),
        (any::<Index>(), config_line()).prop_map(|(a, l)| LineEdit::Replace(a, l)),
        (any::<Index>(), config_line()).prop_map(|(a, l)| LineEdit::Insert(a, l)),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| LineEdit::Truncate(a, b)),
    ];
    vec(edit, 1..6)
        .prop_map(|edits| {
            let mut lines: Vec<String> = DEFAULT_CONFIG_TOML.lines().map(String::from).collect();
            for e in edits {
                if lines.is_empty() {
                    lines.push(String::new());
                }
                let n = lines.len();
                match e {
                    LineEdit::Delete(i) => {
                        lines.remove(i.index(n));
                    }
                    LineEdit::Duplicate(i) => {
                        let l = lines[i.index(n)].clone();
                        lines.insert(i.index(n), l);
                    }
                    LineEdit::Swap(a, b) => lines.swap(a.index(n), b.index(n)),
                    LineEdit::Replace(i, l) => lines[i.index(n)] = l,
                    LineEdit::Insert(i, l) => lines.insert(i.index(n + 1), l),
                    LineEdit::Truncate(i, at) => {
                        let l = &mut lines[i.index(n)];
                        let mut cut = at.index(l.len() + 1);
                        while !l.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        l.truncate(cut);
                    }
                }
            }
            lines.join("\n")
        })
        .boxed()
}

/// `[[rules]]` tables built from random key lines, after the default file's other sections.
fn random_rule_tables() -> BoxedStrategy<String> {
    let prefix = DEFAULT_CONFIG_TOML
        .find("[[rules]]")
        .map_or(DEFAULT_CONFIG_TOML, |at| &DEFAULT_CONFIG_TOML[..at]);
    let table = (
        select(vec![
            "name = \"a\"",
            "name = \"b\"",
            "name = \"a-1.x_y\"",
            "name = \"\"",
            "",
        ]),
        select(vec![
            "kind = \"timestamp\"",
            "kind = \"rename\"",
            "kind = \"other\"",
            "",
        ]),
        vec(config_line(), 0..5),
        select(PATH_POOL),
    )
        .prop_map(|(name, kind, extra, path)| {
            let path = path.replace('\\', "\\\\");
            format!(
                "[[rules]]\n{name}\n{kind}\npaths = [\"{path}\"]\n{}\n",
                extra.join("\n")
            )
        });
    (any::<bool>(), vec(table, 0..4))
        .prop_map(move |(with_prefix, tables)| {
            format!(
                "{}{}",
                if with_prefix { prefix } else { "" },
                tables.concat()
            )
        })
        .boxed()
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn config_never_panics_on_strings(text in any::<String>()) {
        check_config(&text)?;
    }

    #[test]
    fn config_never_panics_on_toml_soup(lines in vec(config_line(), 0..30)) {
        check_config(&lines.join("\n"))?;
    }

    #[test]
    fn config_never_panics_on_mutated_default(text in mutated_config()) {
        check_config(&text)?;
    }

    #[test]
    fn config_never_panics_on_random_rule_tables(text in random_rule_tables()) {
        check_config(&text)?;
    }
}

#[test]
fn default_config_parses_and_names_file_on_error() {
    Config::from_toml(FILE, DEFAULT_CONFIG_TOML, &Overrides::default()).expect("default parses");
    let e = Config::from_toml(FILE, "[server]\nthreads = 0\n", &Overrides::default())
        .expect_err("threads = 0 is invalid");
    assert!(e.to_string().starts_with(FILE), "{e}");
}

// ---- the generators reach the interesting cases -----------------------------------------------

fn sample<S: Strategy>(s: S, n: usize) -> Vec<S::Value> {
    use proptest::strategy::ValueTree as _;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    (0..n)
        .map(|_| s.new_tree(&mut runner).expect("sample").current())
        .collect()
}

/// Guards against vacuous properties: on a fixed sample, rewrites, removals, rejections,
/// first-pass rewrites for idempotence, NotJson and valid configs all occur often.
#[test]
fn generators_reach_interesting_cases() {
    let mut n = BTreeMap::<&str, usize>::new();
    let rich = rich_rules();
    let rich_c = compile(&rich);
    for (doc, cfgs, dir) in sample((any_doc(), random_rules(), direction()), 400) {
        let rules = compile(&cfgs);
        for (c, r, label) in [(&cfgs, &rules, "random"), (&rich, &rich_c, "rich")] {
            let out = r.apply(dir, doc.as_bytes(), NOW, &mut ());
            let seen = check_outcome(c, r, dir, &doc, &out).expect("property holds");
            *n.entry(label).or_default() += 1;
            if seen.rewritten {
                *n.entry(if label == "rich" {
                    "rich rewritten"
                } else {
                    "random rewritten"
                })
                .or_default() += 1;
            }
            if seen.removed {
                *n.entry("removed").or_default() += 1;
            }
            if seen.rejected {
                *n.entry("rejected").or_default() += 1;
            }
            if seen.replaced > 1 {
                *n.entry("several values replaced").or_default() += 1;
            }
        }
    }
    let default_c = compile(&default_rules());
    for doc in sample(in_range_doc(), 400) {
        if let Outcome::Rewritten(_) =
            default_c.apply(Direction::ClientToBackend, doc.as_bytes(), NOW, &mut ())
        {
            *n.entry("idempotence: default rewritten").or_default() += 1;
        }
    }
    for (doc, cfgs) in sample((in_range_doc(), idempotent_rules()), 400) {
        if let Outcome::Rewritten(_) =
            compile(&cfgs).apply(Direction::ClientToBackend, doc.as_bytes(), NOW, &mut ())
        {
            *n.entry("idempotence: auto rules rewritten").or_default() += 1;
        }
    }
    for bytes in sample(mutated_doc(), 400) {
        let label = match default_c.apply(Direction::ClientToBackend, &bytes, NOW, &mut ()) {
            Outcome::NotJson => "mutated: NotJson",
            _ => "mutated: JSON",
        };
        *n.entry(label).or_default() += 1;
    }
    for text in sample(mutated_config(), 300) {
        let label = match Config::from_toml(FILE, &text, &Overrides::default()) {
            Ok(_) => "config: ok",
            Err(_) => "config: error",
        };
        *n.entry(label).or_default() += 1;
    }
    for text in sample(random_rule_tables(), 300) {
        if Config::from_toml(FILE, &text, &Overrides::default()).is_ok() {
            *n.entry("rule tables: ok").or_default() += 1;
        }
    }
    eprintln!("{n:#?}");
    for (what, min) in [
        ("random rewritten", 50),
        ("rich rewritten", 150),
        ("removed", 50),
        ("rejected", 30),
        ("several values replaced", 50),
        ("idempotence: default rewritten", 100),
        ("idempotence: auto rules rewritten", 60),
        ("mutated: NotJson", 100),
        ("mutated: JSON", 20),
        ("config: ok", 20),
        ("config: error", 100),
        ("rule tables: ok", 20),
    ] {
        let got = n.get(what).copied().unwrap_or(0);
        assert!(got >= min, "{what}: {got} < {min} ({n:?})");
    }
}

/// The preservation oracle itself: it accepts the engine's real output and rejects outputs
/// with the kinds of damage it is meant to catch.
#[test]
fn oracle_detects_tampering() {
    let cfgs = default_rules();
    let rules = compile(&cfgs);
    let dir = Direction::ClientToBackend;
    let doc = r#"{"a": 1.50, "timestamp": "2025-09-08T16:50:01", "b": [1e3, "\u00e9"]}"#;
    let good = r#"{"a": 1.50, "timestamp": 1757350201.0, "b": [1e3, "\u00e9"]}"#;
    let real = rules.apply(dir, doc.as_bytes(), NOW, &mut ());
    assert_eq!(real, Outcome::Rewritten(good.as_bytes().to_vec()));
    check_outcome(&cfgs, &rules, dir, doc, &real).expect("real output passes");
    for bad in [
        r#"{"a": 1.5, "timestamp": 1757350201.0, "b": [1e3, "\u00e9"]}"#,
        r#"{"a": 1.50, "timestamp": 1757350201.0, "b": [1e3, "é"]}"#,
        r#"{"timestamp": 1757350201.0, "a": 1.50, "b": [1e3, "\u00e9"]}"#,
        r#"{"a": 1.50, "b": [1e3, "\u00e9"]}"#,
        r#"{"a": 1.50,  "timestamp": 1757350201.0, "b": [1e3, "\u00e9"]}"#,
        r#"{"a": 1.50, "timestamp": {"x": 1}, "b": [1e3, "\u00e9"]}"#,
        r#"{"a": 1.50, "timestamp": 1757350201.0, "b": [1e3]}"#,
        r#"{"a": 1.50, "timestamp": 1757350201.0, "b": [1e3, "\u00e9"], "c": 1}"#,
        r#"{"a": 1.50, "timestamp": 1757350201.0, "b": [1e3, "\u00e9"]"#,
    ] {
        let tampered = Outcome::Rewritten(bad.as_bytes().to_vec());
        assert!(
            check_outcome(&cfgs, &rules, dir, doc, &tampered).is_err(),
            "oracle accepted {bad}"
        );
    }
    // Removal is accepted only where an `on_invalid = "remove"` rule matches.
    let cfgs = vec![ts_rule(
        "rm",
        DirectionFilter::Both,
        &["ts"],
        &[],
        OutputFormat::UnixSeconds,
        "UTC",
        EpochUnit::Auto,
        OnInvalid::Remove,
    )];
    let rules = compile(&cfgs);
    let doc = r#"{"ts": "bad", "ts": 5, "x": "bad"}"#;
    let real = rules.apply(dir, doc.as_bytes(), NOW, &mut ());
    assert_eq!(
        real,
        Outcome::Rewritten(br#"{"ts": 5, "x": "bad"}"#.to_vec())
    );
    check_outcome(&cfgs, &rules, dir, doc, &real).expect("real output passes");
    let tampered = Outcome::Rewritten(br#"{"ts": "bad", "ts": 5}"#.to_vec());
    assert!(check_outcome(&cfgs, &rules, dir, doc, &tampered).is_err());
}

/// Found by `rewrites_preserve_untargeted_bytes_random_rules`: the reply echoes `message_id`
/// verbatim, so a lone-surrogate escape (valid RFC 8259 text, but not decodable into a Rust
/// `String`) comes back as sent.
#[test]
fn reject_reply_echoes_message_id_verbatim() {
    let cfgs = vec![ts_rule(
        "r",
        DirectionFilter::Both,
        &["timestamp"],
        &[],
        OutputFormat::Rfc3339,
        "UTC",
        EpochUnit::Seconds,
        OnInvalid::Reject,
    )];
    let rules = compile(&cfgs);
    let doc = r#"{"message_id":"\ud800","timestamp":8210266876800}"#;
    let out = rules.apply(Direction::ClientToBackend, doc.as_bytes(), NOW, &mut ());
    let Outcome::Rejected { reply, .. } = &out else {
        panic!("{out:?}")
    };
    assert!(String::from_utf8_lossy(reply).contains(r#""message_id":"\ud800""#));
    check_outcome(&cfgs, &rules, Direction::ClientToBackend, doc, &out).unwrap();
}
