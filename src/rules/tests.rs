//! Table-driven tests of the whole engine (`CompiledRules::apply`) and the configuration.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;

/// The fixed "now" of all tests: 1757350300.25.
const NOW: UnixTime = UnixTime {
    secs: 1_757_350_300,
    nanos: 250_000_000,
};
const NOW_SECS: &str = "1757350300.25";

const C2B: Direction = Direction::ClientToBackend;
const B2C: Direction = Direction::BackendToClient;

#[derive(Clone, Debug, PartialEq)]
enum Obs {
    Rule(String, Direction, RuleResult),
    Ts(TimestampFormat),
}

#[derive(Default)]
struct Recorder(Vec<Obs>);

impl Observer for Recorder {
    fn rule_result(&mut self, rule: &str, dir: Direction, result: RuleResult) {
        self.0.push(Obs::Rule(rule.to_owned(), dir, result));
    }
    fn timestamp_input(&mut self, format: TimestampFormat) {
        self.0.push(Obs::Ts(format));
    }
}

fn configs(v: Value) -> Vec<RuleConfig> {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("config {v}: {e}"))
}

fn compile(v: Value) -> CompiledRules {
    CompiledRules::compile(&configs(v)).unwrap_or_else(|e| panic!("compile: {e}"))
}

fn defaults() -> CompiledRules {
    CompiledRules::compile(&default_rules()).unwrap()
}

/// A single timestamp rule named "ts" at `paths` with extra settings.
fn ts_rule(paths: &[&str], extra: Value) -> CompiledRules {
    let mut rule = json!({"name": "ts", "kind": "timestamp", "paths": paths});
    if let (Some(r), Value::Object(extra)) = (rule.as_object_mut(), extra) {
        r.extend(extra);
    }
    compile(json!([rule]))
}

fn apply(rules: &CompiledRules, dir: Direction, msg: &str) -> (Outcome, Vec<Obs>) {
    let mut rec = Recorder::default();
    let out = rules.apply(dir, msg.as_bytes(), NOW, &mut rec);
    (out, rec.0)
}

/// The text that would be forwarded (original for Unchanged/NotJson).
fn forwarded(msg: &str, out: &Outcome) -> String {
    match out {
        Outcome::Unchanged | Outcome::NotJson => msg.to_owned(),
        Outcome::Rewritten(b) => String::from_utf8(b.clone()).expect("output is UTF-8"),
        Outcome::Rejected { .. } | Outcome::TooLarge { .. } => panic!("not forwarded: {out:?}"),
    }
}

/// What `apply` must return.
#[derive(Debug)]
enum Want<'a> {
    Same,
    Out(&'a str),
    Rejected,
}

fn check(rules: &CompiledRules, dir: Direction, input: &str, want: &Want<'_>, label: &str) {
    let (out, _) = apply(rules, dir, input);
    match (want, &out) {
        (Want::Same, Outcome::Unchanged) => {}
        (Want::Rejected, Outcome::Rejected { .. }) => {}
        (Want::Out(w), Outcome::Rewritten(b)) => {
            assert_eq!(std::str::from_utf8(b).unwrap(), *w, "{label}: {input}");
        }
        _ => panic!("{label}: {input}\n  want {want:?}\n  got  {out:?}"),
    }
    if let Outcome::Rewritten(b) = &out {
        serde_json::from_slice::<Value>(b)
            .unwrap_or_else(|e| panic!("{label}: output is not JSON: {e}"));
    }
}

// ---- timestamp inputs ------------------------------------------------------------------

#[test]
fn incident_message_with_default_rules() {
    let input = r#"{"type":"execute_agent","payload":{"user_request":"why is p99 up?","thread_id":"t1","run_id":"r1"},"timestamp":"2025-09-08T16:50:01.447585","message_id":"m1"}"#;
    let want = r#"{"type":"start_agent","payload":{"user_request":"why is p99 up?","thread_id":"t1","run_id":"r1"},"timestamp":1757350201.447585,"message_id":"m1"}"#;
    check(&defaults(), C2B, input, &Want::Out(want), "incident");
    assert!(!forwarded(input, &apply(&defaults(), C2B, input).0).contains("1757377801"));
}

#[test]
fn timestamp_input_forms_are_recognised() {
    use TimestampFormat::*;
    // What each form becomes is in config/tests/timestamp-forms.toml (run by `wsnorm
    // test-rules`); here, the format each is counted as.
    let rules = ts_rule(&["ts"], json!({}));
    let cases: &[(&str, TimestampFormat)] = &[
        (r#""2025-09-08T16:50:01.447585""#, IsoNaive),
        (r#""2025-09-08T16:50:01.447585Z""#, IsoZoned),
        (r#""2025-09-08T16:50:01.447585z""#, IsoZoned),
        (r#""2025-09-08T16:50:01.447585+00:00""#, IsoZoned),
        (r#""2025-09-08T09:50:01.447585-07:00""#, IsoZoned),
        (r#""2025-09-08T09:50:01.447585-0700""#, IsoZoned),
        (r#""2025-09-08T09:50:01.447585-07""#, IsoZoned),
        (r#""2025-09-08 16:50:01.447585""#, IsoNaive),
        (r#""2025-09-08T16:50:01""#, IsoNaive),
        (r#""2025-09-08T16:50:01.4""#, IsoNaive),
        (r#""2025-09-08T16:50:01.447""#, IsoNaive),
        (r#""2025-09-08T16:50:01.447585""#, IsoNaive),
        (r#""2025-09-08T16:50:01.447585123""#, IsoNaive),
        (r#""2025-09-08T16:50:01.447585123456""#, IsoNaive),
        (r#""2025-09-08T16:50:01.447Z""#, IsoZoned),
        (r#""2025-09-08T16:50:01\u002e447585""#, IsoNaive),
        (r#""1969-12-31T23:59:59.5Z""#, IsoZoned),
        (r#""1960-01-01T00:00:00""#, IsoNaive),
        (r#""1757350201.447585""#, NumericString),
        (r#""1757350201447""#, NumericString),
        (r#""1757350201""#, NumericString),
        ("1757350201", Seconds),
        ("1757350201.447585", Seconds),
        ("1757350201.0", Seconds),
        ("1.757350201447585e9", Seconds),
        ("1.757350201447585E+9", Seconds),
        ("-1.5", Seconds),
        ("0", Seconds),
        ("1757350201447", Millis),
        ("1757350201447.5", Millis),
        ("1.757350201447e12", Millis),
        ("1757350201447585", Micros),
        ("1757350201447585123", Nanos),
        ("-315619200000", Millis),
    ];
    for (value, fmt) in cases {
        let input = format!(r#"{{"ts":{value},"x":1}}"#);
        let (_, obs) = apply(&rules, C2B, &input);
        assert_eq!(obs.first(), Some(&Obs::Ts(*fmt)), "{value}");
    }
}

#[test]
fn null_is_left_alone_and_observes_no_format() {
    let rules = ts_rule(&["ts"], json!({}));
    let (out, obs) = apply(&rules, C2B, r#"{"ts":null}"#);
    assert_eq!(out, Outcome::Unchanged);
    assert_eq!(
        obs,
        vec![Obs::Rule("ts".into(), C2B, RuleResult::Unchanged)]
    );
    // missing path: no observation at all
    let (out, obs) = apply(&rules, C2B, r#"{"other":"2025-09-08T16:50:01Z"}"#);
    assert_eq!(out, Outcome::Unchanged);
    assert_eq!(obs, vec![]);
}

#[test]
fn output_modes_and_reading_options() {
    let cases: &[(Value, &str, Want<'_>)] = &[
        // unix_millis
        (
            json!({"output": "unix_millis"}),
            r#""2025-09-08T16:50:01.447585""#,
            Want::Out("1757350201447"),
        ),
        (
            json!({"output": "unix_millis"}),
            "1757350201447",
            Want::Same,
        ),
        (
            json!({"output": "unix_millis"}),
            "1757350201.447585",
            Want::Out("1757350201447"),
        ),
        (
            json!({"output": "unix_millis"}),
            "1757350201447.5",
            Want::Out("1757350201447"),
        ),
        (
            json!({"output": "unix_millis"}),
            r#""1969-12-31T23:59:59.9995Z""#,
            Want::Out("-1"),
        ),
        // rfc3339
        (
            json!({"output": "rfc3339"}),
            r#""2025-09-08T16:50:01.447585""#,
            Want::Out(r#""2025-09-08T16:50:01.447585Z""#),
        ),
        (
            json!({"output": "rfc3339"}),
            r#""2025-09-08T16:50:01.447585Z""#,
            Want::Same,
        ),
        (
            json!({"output": "rfc3339"}),
            r#""2025-09-08T18:50:01.447585+02:00""#,
            Want::Out(r#""2025-09-08T16:50:01.447585Z""#),
        ),
        (
            json!({"output": "rfc3339"}),
            "1757350201447",
            Want::Out(r#""2025-09-08T16:50:01.447Z""#),
        ),
        (
            json!({"output": "rfc3339"}),
            "1757350201",
            Want::Out(r#""2025-09-08T16:50:01Z""#),
        ),
        (
            json!({"output": "rfc3339"}),
            "1757350201.4",
            Want::Out(r#""2025-09-08T16:50:01.400Z""#),
        ),
        // naive_timezone
        (
            json!({"naive_timezone": "+02:00"}),
            r#""2025-09-08T18:50:01.447585""#,
            Want::Out("1757350201.447585"),
        ),
        (
            json!({"naive_timezone": "-07:00"}),
            r#""2025-09-08T09:50:01.447585""#,
            Want::Out("1757350201.447585"),
        ),
        (
            json!({"naive_timezone": "-07:00"}),
            r#""2025-09-08T16:50:01.447585Z""#,
            Want::Out("1757350201.447585"),
        ),
        // epoch_unit
        (
            json!({"epoch_unit": "millis"}),
            "1757350201",
            Want::Out("1757350.201"),
        ),
        (
            json!({"epoch_unit": "seconds"}),
            "1757350201447",
            Want::Same,
        ),
        (
            json!({"epoch_unit": "micros"}),
            r#""1757350201447585""#,
            Want::Out("1757350201.447585"),
        ),
        (
            json!({"epoch_unit": "nanos"}),
            "1757350201447585123",
            Want::Out("1757350201.447585123"),
        ),
        (
            json!({"epoch_unit": "millis", "output": "unix_millis"}),
            "1757350201",
            Want::Same,
        ),
    ];
    for (extra, value, want) in cases {
        let rules = ts_rule(&["ts"], extra.clone());
        let input = format!(r#"{{"ts":{value}}}"#);
        let want_text;
        let want = match want {
            Want::Out(w) => {
                want_text = format!(r#"{{"ts":{w}}}"#);
                Want::Out(&want_text)
            }
            Want::Same => Want::Same,
            _ => unreachable!(),
        };
        check(&rules, C2B, &input, &want, &extra.to_string());
    }
}

// ---- invalid values and on_invalid -----------------------------------------------------

#[test]
fn invalid_values_under_each_policy() {
    let invalid = [
        r#""garbage""#,
        r#""2025-13-01T00:00:00""#,
        r#""2025-09-08T16:50:01.447585 UTC""#,
        r#""""#,
        "true",
        "false",
        "{}",
        r#"{"ts":"2025-09-08T16:50:01Z"}"#,
        "[1,2]",
        "1e400",
        r#""1e400""#,
        "-99999999999999999999999999999999",
    ];
    for value in invalid {
        let input = format!(r#"{{"a":1, "ts" : {value} ,"b":2}}"#);
        let cases: &[(&str, Want<'_>, RuleResult)] = &[
            (
                "now",
                Want::Out(&format!(r#"{{"a":1, "ts" : {NOW_SECS} ,"b":2}}"#)),
                RuleResult::Invalid,
            ),
            ("keep", Want::Same, RuleResult::Invalid),
            (
                "remove",
                Want::Out(r#"{"a":1, "b":2}"#),
                RuleResult::Invalid,
            ),
            ("reject", Want::Rejected, RuleResult::Rejected),
        ];
        for (policy, want, result) in cases {
            let rules = ts_rule(&["ts"], json!({ "on_invalid": policy }));
            check(&rules, C2B, &input, want, policy);
            let (_, obs) = apply(&rules, C2B, &input);
            assert_eq!(
                obs,
                vec![
                    Obs::Ts(TimestampFormat::Invalid),
                    Obs::Rule("ts".into(), C2B, *result)
                ],
                "{policy} {value}"
            );
        }
    }
}

#[test]
fn now_in_each_output_form() {
    for (output, want) in [
        ("unix_seconds", NOW_SECS),
        ("unix_millis", "1757350300250"),
        ("rfc3339", r#""2025-09-08T16:51:40.250Z""#),
    ] {
        let rules = ts_rule(&["ts"], json!({ "output": output }));
        check(
            &rules,
            C2B,
            r#"{"ts":"nope"}"#,
            &Want::Out(&format!(r#"{{"ts":{want}}}"#)),
            output,
        );
    }
}

#[test]
fn clock_is_read_only_when_a_rule_needs_now() {
    let reads = std::cell::Cell::new(0);
    let clock = || {
        reads.set(reads.get() + 1);
        NOW
    };
    let rules = defaults();
    let valid = r#"{"type":"execute_agent","timestamp":"2025-09-08T16:50:01.447585"}"#;
    assert!(matches!(
        rules.apply_text(C2B, valid, clock, &mut ()),
        Outcome::Rewritten(_)
    ));
    assert_eq!(reads.get(), 0, "a valid timestamp needs no clock");
    let out = rules.apply_text(C2B, r#"{"timestamp":"nope"}"#, clock, &mut ());
    assert_eq!(
        out,
        Outcome::Rewritten(format!(r#"{{"timestamp":{NOW_SECS}}}"#).into())
    );
    assert_eq!(reads.get(), 1, "on_invalid = now reads it once");
    // Two fields stamped in one message get the same time, from one read.
    let ticking = || {
        reads.set(reads.get() + 1);
        UnixTime {
            secs: NOW.secs + reads.get(),
            nanos: 0,
        }
    };
    let both = r#"{"timestamp":"nope","payload":{"timestamp":"nope"}}"#;
    let Outcome::Rewritten(out) = rules.apply_text(C2B, both, ticking, &mut ()) else {
        panic!("both timestamps should be replaced");
    };
    let stamp = format!("{}.0", NOW.secs + 2);
    assert_eq!(
        String::from_utf8_lossy(&out),
        format!(r#"{{"timestamp":{stamp},"payload":{{"timestamp":{stamp}}}}}"#)
    );
    assert_eq!(reads.get(), 2, "one read for the whole message");
    let reject = ts_rule(&["ts"], json!({ "on_invalid": "reject" }));
    let out = reject.apply_text(C2B, r#"{"ts":true}"#, clock, &mut ());
    assert!(matches!(out, Outcome::Rejected { .. }));
    assert_eq!(reads.get(), 3, "a reject reply carries the time");
}

#[test]
fn remove_keeps_json_valid_in_every_position() {
    let rules = ts_rule(&["a", "b", "c", "n.x"], json!({ "on_invalid": "remove" }));
    let cases: &[(&str, &str)] = &[
        (r#"{"a":"x","k":1}"#, r#"{"k":1}"#),
        (r#"{"k":1,"a":"x"}"#, r#"{"k":1}"#),
        (r#"{"k":1,"a":"x","m":2}"#, r#"{"k":1,"m":2}"#),
        (r#"{"a":"x"}"#, r#"{}"#),
        (r#"{ "a" : "x" }"#, r#"{  }"#),
        (r#"{"a":"x","b":true,"c":[]}"#, r#"{}"#),
        (r#"{"a":"x","k":1,"b":true,"c":{}}"#, r#"{"k":1}"#),
        (r#"{"a":"x","b":true,"k":1,"c":{}}"#, r#"{"k":1}"#),
        (r#"{"k":1,"a":"x","b":true}"#, r#"{"k":1}"#),
        (
            r#"{ "k" : 1 , "a" : "x" , "m" : 2 }"#,
            r#"{ "k" : 1 , "m" : 2 }"#,
        ),
        ("{\n  \"k\": 1,\n  \"a\": \"x\"\n}", "{\n  \"k\": 1\n}"),
        (r#"{"n":{"x":false,"y":1},"a":"x"}"#, r#"{"n":{"y":1}}"#),
        (r#"{"n":{"y":1,"x":false}}"#, r#"{"n":{"y":1}}"#),
        (r#"{"n":{"x":false}}"#, r#"{"n":{}}"#),
        // duplicate keys: every member named "a" is examined
        (r#"{"a":"x","a":1757350201,"a":"y"}"#, r#"{"a":1757350201}"#),
    ];
    for (input, want) in cases {
        check(&rules, C2B, input, &Want::Out(want), "remove");
    }
    // An array element matched by `*` is kept (but counted invalid).
    let rules = ts_rule(&["list.*"], json!({ "on_invalid": "remove" }));
    let input = r#"{"list":["x",1757350201447]}"#;
    check(
        &rules,
        C2B,
        input,
        &Want::Out(r#"{"list":["x",1757350201.447]}"#),
        "array",
    );
    let (_, obs) = apply(&rules, C2B, r#"{"list":["x"]}"#);
    assert_eq!(
        obs,
        vec![
            Obs::Ts(TimestampFormat::Invalid),
            Obs::Rule("ts".into(), C2B, RuleResult::Invalid)
        ]
    );
}

#[test]
fn reject_reply_shape() {
    let rules = ts_rule(
        &["timestamp", "payload.timestamp"],
        json!({ "on_invalid": "reject" }),
    );
    let input = r#"{"type":"start_agent","payload":{"timestamp":"yesterday"},"timestamp":"2025-09-08T16:50:01Z","message_id":"m-42"}"#;
    let (out, obs) = apply(&rules, C2B, input);
    let Outcome::Rejected { reply, rule } = out else {
        panic!("not rejected: {out:?}")
    };
    assert_eq!(rule, "ts");
    // the valid top-level timestamp was examined first, then the invalid nested one
    assert_eq!(
        obs,
        vec![
            Obs::Ts(TimestampFormat::IsoZoned),
            Obs::Ts(TimestampFormat::Invalid),
            Obs::Rule("ts".into(), C2B, RuleResult::Rejected)
        ]
    );
    let v: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(v["type"], "error_message");
    assert_eq!(v["error_code"], "INVALID_TIMESTAMP");
    let msg = v["error_message"].as_str().unwrap();
    assert!(msg.contains("payload.timestamp"), "{msg}");
    assert_eq!(
        v["details"],
        json!({"rule": "ts", "path": "payload.timestamp", "message_id": "m-42"})
    );
    assert_eq!(v["timestamp"], json!(1757350300.25));
    assert!(std::str::from_utf8(&reply)
        .unwrap()
        .ends_with(r#""timestamp":1757350300.25}"#));

    // numeric message_id is copied verbatim; other kinds are omitted
    for (id, want) in [
        (
            "123456789012345678901234567890",
            Some("123456789012345678901234567890"),
        ),
        ("7", Some("7")),
        ("{}", None),
        ("null", None),
        ("[1]", None),
    ] {
        let input = format!(r#"{{"timestamp":true,"message_id":{id}}}"#);
        let Outcome::Rejected { reply, .. } = apply(&rules, C2B, &input).0 else {
            panic!()
        };
        let text = String::from_utf8(reply).unwrap();
        match want {
            Some(w) => assert!(text.contains(&format!(r#""message_id":{w}}}"#)), "{text}"),
            None => assert!(!text.contains("message_id"), "{text}"),
        }
        serde_json::from_str::<Value>(&text).unwrap();
    }

    // concrete paths for wildcards, indices and escaped keys
    let rules = ts_rule(&["items.*.ts", "a\\.b"], json!({ "on_invalid": "reject" }));
    for (input, path) in [
        (r#"{"items":[{"ts":1},{"ts":"bad"}]}"#, "items.1.ts"),
        (r#"{"items":{"k.1":{"ts":"bad"}}}"#, "items.k\\.1.ts"),
        (r#"{"a.b":"bad"}"#, "a\\.b"),
    ] {
        let Outcome::Rejected { reply, .. } = apply(&rules, C2B, input).0 else {
            panic!("{input}")
        };
        let v: Value = serde_json::from_slice(&reply).unwrap();
        assert_eq!(v["details"]["path"], path, "{input}");
        assert!(v["details"].get("message_id").is_none());
    }
}

#[test]
fn reject_stops_later_rules() {
    let rules = compile(json!([
        {"name": "r1", "kind": "timestamp", "paths": ["ts"], "on_invalid": "reject"},
        {"name": "r2", "kind": "rename", "paths": ["type"], "map": {"a": "b"}},
    ]));
    let (out, obs) = apply(&rules, C2B, r#"{"type":"a","ts":"bad"}"#);
    assert!(matches!(out, Outcome::Rejected { ref rule, .. } if rule == "r1"));
    assert_eq!(
        obs,
        vec![
            Obs::Ts(TimestampFormat::Invalid),
            Obs::Rule("r1".into(), C2B, RuleResult::Rejected)
        ]
    );
    // earlier rules have been observed normally (rule results once the message's fate is known)
    let rules = compile(json!([
        {"name": "r2", "kind": "rename", "paths": ["type"], "map": {"a": "b"}},
        {"name": "r1", "kind": "timestamp", "paths": ["ts"], "on_invalid": "reject"},
    ]));
    let (out, obs) = apply(&rules, C2B, r#"{"type":"a","ts":"bad"}"#);
    assert!(matches!(out, Outcome::Rejected { .. }));
    assert_eq!(
        obs,
        vec![
            Obs::Ts(TimestampFormat::Invalid),
            Obs::Rule("r2".into(), C2B, RuleResult::Rewritten),
            Obs::Rule("r1".into(), C2B, RuleResult::Rejected)
        ]
    );
}

// ---- byte preservation -----------------------------------------------------------------

#[test]
fn untouched_bytes_are_preserved() {
    let rules = defaults();
    let cases: &[(&str, Want<'_>)] = &[
        (
            r#"{ "big": 123456789012345678901234567890, "f": 1.0e3, "g": 1.50, "s": "caf\u00e9 \"q\" \/", "timestamp" : "2025-09-08T16:50:01Z" ,"dup":1,"dup":2, "z":-0.0 }"#,
            Want::Out(r#"{ "big": 123456789012345678901234567890, "f": 1.0e3, "g": 1.50, "s": "caf\u00e9 \"q\" \/", "timestamp" : 1757350201.0 ,"dup":1,"dup":2, "z":-0.0 }"#),
        ),
        (
            "\n\t{\"type\" :\t\"EXECUTE_AGENT\" ,\n \"x\":[1.0E+2, {\"timestamp\":\"keep\"}]}\r\n",
            Want::Out("\n\t{\"type\" :\t\"start_agent\" ,\n \"x\":[1.0E+2, {\"timestamp\":\"keep\"}]}\r\n"),
        ),
        (r#"{"z":1,"a":2,"m":3,"timestamp":1757350201.4475851234}"#, Want::Same),
        (r#"{"type":"ping","timestamp":1.7573502014e9,"connection_id":"c1"}"#, Want::Same),
        // browser ping: epoch milliseconds
        (
            r#"{"type":"ping","timestamp":1757350201447,"connection_id":"c1"}"#,
            Want::Out(r#"{"type":"ping","timestamp":1757350201.447,"connection_id":"c1"}"#),
        ),
        (r#"{"type":"user_message","payload":{"content":"hello"}}"#, Want::Same),
        (r#"{}"#, Want::Same),
        (r#"  { }  "#, Want::Same),
    ];
    for (input, want) in cases {
        check(&rules, C2B, input, want, "preserve");
    }
}

#[test]
fn escaped_keys_and_values() {
    let rules = defaults();
    check(
        &rules,
        C2B,
        r#"{"\u0074ype":"\u0065xecute_agent","time\u0073tamp":"2025-09-08T16:50:01Z"}"#,
        &Want::Out(r#"{"\u0074ype":"start_agent","time\u0073tamp":1757350201.0}"#),
        "escaped",
    );
    // a key with a literal dot needs `\.` in the path
    let rules = ts_rule(&["meta\\.ts", "a.b"], json!({}));
    check(
        &rules,
        C2B,
        r#"{"meta.ts":"2025-09-08T16:50:01Z","meta":{"ts":"x"},"a":{"b":"2025-09-08T16:50:01Z"},"a.b":"y"}"#,
        &Want::Out(
            r#"{"meta.ts":1757350201.0,"meta":{"ts":"x"},"a":{"b":1757350201.0},"a.b":"y"}"#,
        ),
        "dots",
    );
    // rename output is JSON-escaped
    let rules = compile(
        json!([{"name": "r", "kind": "rename", "paths": ["type"], "map": {"x": "a\"b\\c\u{e9}"}}]),
    );
    check(
        &rules,
        C2B,
        r#"{"type":"x"}"#,
        &Want::Out(r#"{"type":"a\"b\\cé"}"#),
        "escape out",
    );
}

// ---- paths -----------------------------------------------------------------------------

#[test]
fn nested_wildcard_and_index_paths() {
    let iso = r#""2025-09-08T16:50:01Z""#;
    let n = "1757350201.0";
    let cases: &[(&[&str], String, String)] = &[
        (
            &["payload.timestamp"],
            format!(r#"{{"payload":{{"timestamp":{iso}}},"timestamp":{iso}}}"#),
            format!(r#"{{"payload":{{"timestamp":{n}}},"timestamp":{iso}}}"#),
        ),
        (
            &["a.b.c"],
            format!(r#"{{"a":{{"b":{{"c":{iso}}}}}}}"#),
            format!(r#"{{"a":{{"b":{{"c":{n}}}}}}}"#),
        ),
        (
            &["items.*.ts"],
            format!(r#"{{"items":[{{"ts":{iso}}},{{"x":1}},{{"ts":{iso}}},5]}}"#),
            format!(r#"{{"items":[{{"ts":{n}}},{{"x":1}},{{"ts":{n}}},5]}}"#),
        ),
        (
            &["items.*.ts"],
            format!(r#"{{"items":{{"p":{{"ts":{iso}}},"q":{{"ts":{iso}}}}}}}"#),
            format!(r#"{{"items":{{"p":{{"ts":{n}}},"q":{{"ts":{n}}}}}}}"#),
        ),
        (
            &["data.*"],
            format!(r#"{{"data":{{"t1":{iso},"t2":{iso}}}}}"#),
            format!(r#"{{"data":{{"t1":{n},"t2":{n}}}}}"#),
        ),
        (
            &["list.*"],
            format!(r#"{{"list":[{iso},{iso}]}}"#),
            format!(r#"{{"list":[{n},{n}]}}"#),
        ),
        (
            &["list.1"],
            format!(r#"{{"list":[{iso},{iso}]}}"#),
            format!(r#"{{"list":[{iso},{n}]}}"#),
        ),
        (
            &["list.1"],
            format!(r#"{{"list":{{"0":{iso},"1":{iso}}}}}"#),
            format!(r#"{{"list":{{"0":{iso},"1":{n}}}}}"#),
        ),
        (
            &["*.ts"],
            format!(r#"{{"a":{{"ts":{iso}}},"b":[{iso}],"c":{{"ts":{iso}}}}}"#),
            format!(r#"{{"a":{{"ts":{n}}},"b":[{iso}],"c":{{"ts":{n}}}}}"#),
        ),
        (
            &["*.*.*"],
            format!(r#"{{"a":[[{iso}]]}}"#),
            format!(r#"{{"a":[[{n}]]}}"#),
        ),
    ];
    for (paths, input, want) in cases {
        let rules = ts_rule(paths, json!({}));
        check(&rules, C2B, input, &Want::Out(want), &paths.join(","));
    }
    // paths that do not exist, or go through scalars: nothing happens, nothing observed
    let rules = ts_rule(&["a.b", "list.5", "s.x", "n.0"], json!({}));
    for input in [
        r#"{"a":{"c":1},"list":[1],"s":"str","n":[]}"#,
        r#"{"a":5}"#,
        r#"{"a":null}"#,
    ] {
        let (out, obs) = apply(&rules, C2B, input);
        assert_eq!((out, obs), (Outcome::Unchanged, vec![]), "{input}");
    }
}

// ---- filters and ordering --------------------------------------------------------------

#[test]
fn type_and_direction_filters() {
    let rules = compile(json!([
        {"name": "c2b", "kind": "timestamp", "paths": ["ts"], "types": ["start_agent", "ping"]},
        {"name": "b2c", "kind": "timestamp", "direction": "backend_to_client", "paths": ["ts"], "output": "unix_millis"},
        {"name": "both", "kind": "rename", "direction": "both", "paths": ["kind"], "map": {"a": "b"}},
    ]));
    let iso = r#""2025-09-08T16:50:01.5Z""#;
    let cases: &[(Direction, String, Want<'_>)] = &[
        (
            C2B,
            format!(r#"{{"type":"start_agent","ts":{iso}}}"#),
            Want::Out(r#"{"type":"start_agent","ts":1757350201.5}"#),
        ),
        (
            C2B,
            format!(r#"{{"type":"ping","ts":{iso}}}"#),
            Want::Out(r#"{"type":"ping","ts":1757350201.5}"#),
        ),
        (C2B, format!(r#"{{"type":"pong","ts":{iso}}}"#), Want::Same),
        (C2B, format!(r#"{{"ts":{iso}}}"#), Want::Same),
        (C2B, format!(r#"{{"type":5,"ts":{iso}}}"#), Want::Same),
        (
            C2B,
            format!(r#"{{"type":"ping","type":"pong","ts":{iso}}}"#),
            Want::Same,
        ),
        (
            C2B,
            format!(r#"{{"type":"pong","type":"ping","ts":{iso}}}"#),
            Want::Out(r#"{"type":"pong","type":"ping","ts":1757350201.5}"#),
        ),
        (
            C2B,
            format!(r#"{{"type":"st\u0061rt_agent","ts":{iso}}}"#),
            Want::Out(r#"{"type":"st\u0061rt_agent","ts":1757350201.5}"#),
        ),
        (
            B2C,
            format!(r#"{{"type":"pong","ts":{iso}}}"#),
            Want::Out(r#"{"type":"pong","ts":1757350201500}"#),
        ),
        (C2B, r#"{"kind":"a"}"#.into(), Want::Out(r#"{"kind":"b"}"#)),
        (B2C, r#"{"kind":"a"}"#.into(), Want::Out(r#"{"kind":"b"}"#)),
    ];
    for (dir, input, want) in cases {
        check(&rules, *dir, input, want, dir.as_str());
    }
    // observations carry the direction; rules of the other direction are not observed
    let (_, obs) = apply(&rules, B2C, r#"{"kind":"zzz","ts":1757350201447}"#);
    assert_eq!(
        obs,
        vec![
            Obs::Ts(TimestampFormat::Millis),
            Obs::Rule("b2c".into(), B2C, RuleResult::Unchanged),
            Obs::Rule("both".into(), B2C, RuleResult::Unchanged)
        ]
    );
    // default rules are client_to_backend only: backend traffic is not even parsed
    let d = defaults();
    for input in [
        r#"{"type":"execute_agent","timestamp":"2025-09-08T16:50:01"}"#,
        "not json",
    ] {
        assert_eq!(apply(&d, B2C, input), (Outcome::Unchanged, vec![]));
    }
}

#[test]
fn rules_apply_in_order() {
    let rename = json!({"name": "alias", "kind": "rename", "paths": ["type"], "map": {"execute_agent": "start_agent"}});
    let typed_ts = json!({"name": "ts", "kind": "timestamp", "paths": ["timestamp"], "types": ["start_agent"]});
    let input = r#"{"type":"execute_agent","timestamp":"2025-09-08T16:50:01.447585"}"#;
    // rename first: the timestamp rule sees the new type
    let rules = compile(json!([rename.clone(), typed_ts.clone()]));
    check(
        &rules,
        C2B,
        input,
        &Want::Out(r#"{"type":"start_agent","timestamp":1757350201.447585}"#),
        "rename first",
    );
    // timestamp first: it still sees execute_agent
    let rules = compile(json!([typed_ts, rename]));
    check(
        &rules,
        C2B,
        input,
        &Want::Out(r#"{"type":"start_agent","timestamp":"2025-09-08T16:50:01.447585"}"#),
        "ts first",
    );

    // a later rule sees the earlier rule's value at the same path
    let rules = compile(json!([
        {"name": "to-millis", "kind": "timestamp", "paths": ["ts"], "output": "unix_millis"},
        {"name": "to-iso", "kind": "timestamp", "paths": ["ts"], "output": "rfc3339"},
    ]));
    let (out, obs) = apply(&rules, C2B, r#"{"ts":"2025-09-08T18:50:01.447+02:00"}"#);
    assert_eq!(forwarded("", &out), r#"{"ts":"2025-09-08T16:50:01.447Z"}"#);
    assert_eq!(
        obs,
        vec![
            Obs::Ts(TimestampFormat::IsoZoned),
            Obs::Ts(TimestampFormat::Millis),
            Obs::Rule("to-millis".into(), C2B, RuleResult::Rewritten),
            Obs::Rule("to-iso".into(), C2B, RuleResult::Rewritten),
        ]
    );
    // rename then rename back: net result is the original → Unchanged
    let rules = compile(json!([
        {"name": "a", "kind": "rename", "paths": ["type"], "map": {"x": "y"}},
        {"name": "b", "kind": "rename", "paths": ["type"], "map": {"y": "x"}},
    ]));
    assert_eq!(apply(&rules, C2B, r#"{"type":"x"}"#).0, Outcome::Unchanged);
    // an earlier edit inside a value that a later rule replaces as a whole
    let rules = compile(json!([
        {"name": "inner", "kind": "timestamp", "paths": ["p.ts"]},
        {"name": "outer", "kind": "timestamp", "paths": ["p"]},
    ]));
    check(
        &rules,
        C2B,
        r#"{"p":{"ts":"2025-09-08T16:50:01Z"}}"#,
        &Want::Out(&format!(r#"{{"p":{NOW_SECS}}}"#)),
        "outer",
    );
    // a member removed by one rule is gone for the next
    let rules = compile(json!([
        {"name": "rm", "kind": "timestamp", "paths": ["p.ts"], "on_invalid": "remove"},
        {"name": "again", "kind": "timestamp", "paths": ["p.ts"]},
        {"name": "parent", "kind": "rename", "paths": ["p"], "map": {"q": "r"}},
    ]));
    let (out, obs) = apply(&rules, C2B, r#"{"p":{"ts":"bad","k":1}}"#);
    assert_eq!(forwarded("", &out), r#"{"p":{"k":1}}"#);
    assert_eq!(
        obs,
        vec![
            Obs::Ts(TimestampFormat::Invalid),
            Obs::Rule("rm".into(), C2B, RuleResult::Invalid),
            Obs::Rule("parent".into(), C2B, RuleResult::Unchanged),
        ]
    );
    // the type a filter sees can also have been removed
    let rules = compile(json!([
        {"name": "rm", "kind": "timestamp", "paths": ["type"], "on_invalid": "remove"},
        {"name": "typed", "kind": "rename", "paths": ["x"], "types": ["t"], "map": {"a": "b"}},
    ]));
    check(
        &rules,
        C2B,
        r#"{"type":"t","x":"a"}"#,
        &Want::Out(r#"{"x":"a"}"#),
        "type removed",
    );
}

#[test]
fn rename_rules() {
    let rules = compile(json!([{
        "name": "aliases", "kind": "rename", "paths": ["type", "payload.kind"],
        "map": {"user": "user_message", "chat_message": "user_message", "same": "same"}
    }]));
    let cases: &[(&str, Want<'_>, Option<RuleResult>)] = &[
        (
            r#"{"type":"user"}"#,
            Want::Out(r#"{"type":"user_message"}"#),
            Some(RuleResult::Rewritten),
        ),
        (
            r#"{"type":"chat_message","payload":{"kind":"user"}}"#,
            Want::Out(r#"{"type":"user_message","payload":{"kind":"user_message"}}"#),
            Some(RuleResult::Rewritten),
        ),
        (
            r#"{"type":"user_message"}"#,
            Want::Same,
            Some(RuleResult::Unchanged),
        ),
        (
            r#"{"type":"same"}"#,
            Want::Same,
            Some(RuleResult::Unchanged),
        ),
        (
            r#"{"type":"USER"}"#,
            Want::Same,
            Some(RuleResult::Unchanged),
        ),
        (r#"{"type":7}"#, Want::Same, Some(RuleResult::Unchanged)),
        (
            r#"{"type":["user"]}"#,
            Want::Same,
            Some(RuleResult::Unchanged),
        ),
        (r#"{"content":"user"}"#, Want::Same, None),
    ];
    for (input, want, result) in cases {
        check(&rules, C2B, input, want, "rename");
        let (_, obs) = apply(&rules, C2B, input);
        let want_obs: Vec<Obs> = result
            .iter()
            .map(|r| Obs::Rule("aliases".into(), C2B, *r))
            .collect();
        assert_eq!(obs, want_obs, "{input}");
    }
}

// ---- idempotence -----------------------------------------------------------------------

fn apply_twice_equals_once(rules: &CompiledRules, input: &str) {
    let once = forwarded(input, &apply(rules, C2B, input).0);
    let (again, _) = apply(rules, C2B, &once);
    assert_eq!(
        again,
        Outcome::Unchanged,
        "not idempotent: {input} -> {once} -> {again:?}"
    );
}

#[test]
fn idempotence() {
    let values = [
        r#""2025-09-08T16:50:01.447585""#,
        r#""2025-09-08T16:50:01.447585123456Z""#,
        r#""2025-09-08T09:50:01-07:00""#,
        r#""2025-09-08 16:50:01""#,
        r#""1757350201.447585""#,
        r#""1757350201447""#,
        "1757350201",
        "1757350201.5",
        "1757350201447",
        "1757350201447.25",
        "1757350201447585",
        "1757350201447585123",
        "1.5e12",
        "-1.5",
        r#""1969-07-20T20:17:40Z""#,
        r#""0001-01-01T00:00:00Z""#,
        r#""bad""#,
        "true",
        "null",
        "{}",
    ];
    let mut rule_sets = vec![defaults()];
    for output in ["unix_seconds", "unix_millis", "rfc3339"] {
        for on_invalid in ["now", "keep", "remove"] {
            rule_sets.push(ts_rule(
                &["ts", "p.*"],
                json!({"output": output, "on_invalid": on_invalid}),
            ));
        }
    }
    rule_sets.push(ts_rule(&["ts", "p.*"], json!({"epoch_unit": "seconds"})));
    rule_sets.push(ts_rule(
        &["ts", "p.*"],
        json!({"epoch_unit": "millis", "output": "unix_millis"}),
    ));
    rule_sets.push(ts_rule(
        &["ts", "p.*"],
        json!({"epoch_unit": "nanos", "output": "rfc3339"}),
    ));
    rule_sets.push(ts_rule(&["ts", "p.*"], json!({"naive_timezone": "+05:30"})));
    for (i, rules) in rule_sets.iter().enumerate() {
        for v in values {
            // unix_millis with auto cannot round-trip pre-1973 instants (documented)
            if (4..7).contains(&i)
                && matches!(
                    v,
                    "-1.5" | r#""1969-07-20T20:17:40Z""# | r#""0001-01-01T00:00:00Z""#
                )
            {
                continue;
            }
            let input = format!(
                r#"{{"type":"execute_agent","ts":{v},"timestamp":{v},"p":{{"a":{v},"b":[{v}]}},"payload":{{"timestamp":{v}}}}}"#
            );
            apply_twice_equals_once(rules, &input);
        }
    }
}

// ---- not JSON / not objects ------------------------------------------------------------

#[test]
fn not_json_and_non_objects() {
    let rules = defaults();
    let not_json: &[&[u8]] = &[
        b"",
        b"   ",
        b"{",
        b"{\"timestamp\":\"2025-09-08T16:50:01\"",
        b"{\"a\":1}}",
        b"{\"a\":1,}",
        b"{'a':1}",
        b"{\"a\":-NaN}",
        b"{\"a\":01}",
        b"{\"a\":\"\x01\"}",
        b"{\"a\":\"\\x\"}",
        b"{\"timestamp\":\"\xff\xfe\"}",
        b"\xef\xbb\xbf{}",
        b"hello",
    ];
    for msg in not_json {
        let mut rec = Recorder::default();
        assert_eq!(
            rules.apply(C2B, msg, NOW, &mut rec),
            Outcome::NotJson,
            "{:?}",
            String::from_utf8_lossy(msg)
        );
        assert!(rec.0.is_empty());
    }
    for msg in [
        r#"[{"timestamp":"2025-09-08T16:50:01"}]"#,
        r#""2025-09-08T16:50:01""#,
        "1757350201",
        "null",
        " true ",
    ] {
        assert_eq!(
            apply(&rules, C2B, msg),
            (Outcome::Unchanged, vec![]),
            "{msg}"
        );
    }
    assert_eq!(
        CompiledRules::empty().apply(C2B, b"{\"timestamp\":\"x\"}", NOW, &mut ()),
        Outcome::Unchanged
    );
}

#[test]
fn absurd_nesting_is_not_json_and_fast() {
    let rules = defaults();
    let n = 100_000;
    let deep_array = format!("{}{}", "[".repeat(n), "]".repeat(n));
    let deep_object = format!(
        r#"{{"timestamp":"2025-09-08T16:50:01Z","x":{}1{}}}"#,
        "{\"a\":".repeat(n),
        "}".repeat(n)
    );
    let deep_mixed = format!(
        r#"{{"payload":{}{}}}"#,
        "[{\"timestamp\":".repeat(n),
        "0}]".repeat(n)
    );
    let unbalanced = "[".repeat(n);
    let started = Instant::now();
    for msg in [&deep_array, &deep_object, &deep_mixed, &unbalanced] {
        assert_eq!(apply(&rules, C2B, msg), (Outcome::NotJson, vec![]));
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    // 1000 levels are fine (what Python's json.loads can reach), 1001 are not
    let nested = |n: usize| {
        format!(
            r#"{{"timestamp":"2025-09-08T16:50:01Z","x":{}{}}}"#,
            "[".repeat(n - 1),
            "]".repeat(n - 1)
        )
    };
    let ok = nested(DEFAULT_MAX_JSON_DEPTH);
    assert!(matches!(apply(&rules, C2B, &ok).0, Outcome::Rewritten(_)));
    let deep = nested(DEFAULT_MAX_JSON_DEPTH + 1);
    assert_eq!(apply(&rules, C2B, &deep).0, Outcome::NotJson);
    // brackets inside strings do not count
    let stringy = format!(
        r#"{{"timestamp":"2025-09-08T16:50:01Z","x":"{}"}}"#,
        "[{".repeat(n)
    );
    assert!(matches!(
        apply(&rules, C2B, &stringy).0,
        Outcome::Rewritten(_)
    ));
}

#[test]
fn large_messages_stay_linear() {
    // many matches and many removals must not be quadratic
    let n = 20_000;
    let items: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"ts":"{}","k":{i}}}"#,
                if i % 2 == 0 {
                    "2025-09-08T16:50:01Z"
                } else {
                    "bad"
                }
            )
        })
        .collect();
    let input = format!(r#"{{"items":[{}]}}"#, items.join(","));
    let members: Vec<String> = (0..n).map(|i| format!(r#""k{i}":"bad""#)).collect();
    let wide = format!(r#"{{"keep":1,{}}}"#, members.join(","));
    let started = Instant::now();
    let rules = ts_rule(&["items.*.ts"], json!({"on_invalid": "remove"}));
    let out = forwarded(&input, &apply(&rules, C2B, &input).0);
    assert_eq!(out.matches("1757350201.0").count(), n / 2);
    assert_eq!(out.matches("\"ts\"").count(), n / 2);
    let rules = ts_rule(&["*"], json!({"on_invalid": "remove"}));
    assert_eq!(
        forwarded(&wide, &apply(&rules, C2B, &wide).0),
        r#"{"keep":1}"#
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

/// Deterministic mutation fuzzing: no panics, and every rewrite is valid JSON.
#[test]
fn mutated_inputs_never_panic() {
    let seeds = [
        r#"{"type":"execute_agent","payload":{"user_request":"x","timestamp":"2025-09-08T16:50:01.447585"},"timestamp":"2025-09-08T16:50:01.447585","message_id":"m1"}"#,
        r#"{"type":"ping","timestamp":1757350201447,"connection_id":"c1","list":[{"ts":"1757350201"},{"ts":1e3}]}"#,
        r#"{ "a" : [ 1 , { "ts" : "2025-09-08T16:50:01Z" } ] , "ts" : -1.5e-3 , "k\u00e9" : "\ud83d\ude00" }"#,
    ];
    let rule_sets = [
        defaults(),
        ts_rule(
            &["ts", "*.ts", "list.*.ts", "a.1.ts", "payload.*"],
            json!({"on_invalid": "remove"}),
        ),
        ts_rule(
            &["ts", "*", "*.*", "*.*.*"],
            json!({"on_invalid": "reject", "output": "rfc3339"}),
        ),
        ts_rule(
            &["*", "*.*", "*.*.*"],
            json!({"on_invalid": "now", "output": "unix_millis"}),
        ),
    ];
    let alphabet = b"{}[]\":,.-+eE0123456789 \\tnulfasrZT\xc3\xa9\xff";
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for seed in seeds {
        for _ in 0..1500 {
            let mut msg = seed.as_bytes().to_vec();
            for _ in 0..(1 + next() % 4) {
                let pos = (next() as usize) % (msg.len() + 1);
                let byte = alphabet[(next() as usize) % alphabet.len()];
                match next() % 3 {
                    0 if pos < msg.len() => msg[pos] = byte,
                    1 if pos < msg.len() => {
                        msg.remove(pos);
                    }
                    _ => msg.insert(pos, byte),
                }
            }
            // Oracle: UTF-8, serde_json accepts it, and not too deep.
            let valid = std::str::from_utf8(&msg).is_ok_and(|text| {
                serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
                    && !json::too_deep(&msg, DEFAULT_MAX_JSON_DEPTH)
            });
            for rules in &rule_sets {
                let out = rules.apply(C2B, &msg, NOW, &mut ());
                assert_eq!(
                    valid,
                    out != Outcome::NotJson,
                    "validity disagrees on {:?}",
                    String::from_utf8_lossy(&msg)
                );
                match out {
                    Outcome::Rewritten(out) => {
                        // Syntax check only: serde_json's `Value` refuses numbers like 1e999
                        // that are valid JSON (and are forwarded untouched).
                        serde_json::from_slice::<serde::de::IgnoredAny>(&out).unwrap_or_else(|e| {
                            panic!("invalid output {e}: {}", String::from_utf8_lossy(&out))
                        });
                        assert!(out.trim_ascii_start().starts_with(b"{"));
                        assert!(matches!(
                            rules.apply(C2B, &out, NOW, &mut ()),
                            Outcome::Unchanged | Outcome::Rewritten(_) | Outcome::Rejected { .. }
                        ));
                    }
                    Outcome::Rejected { reply, .. } | Outcome::TooLarge { reply, .. } => {
                        serde_json::from_slice::<Value>(&reply).unwrap();
                    }
                    Outcome::NotJson | Outcome::Unchanged => {}
                }
            }
        }
    }
}

// ---- observer --------------------------------------------------------------------------

#[test]
fn observer_calls_for_default_rules() {
    let d = defaults();
    let cases: &[(&str, Vec<Obs>)] = &[
        (
            r#"{"type":"execute_agent","timestamp":"2025-09-08T16:50:01.447585","payload":{"timestamp":1757350201447}}"#,
            vec![
                Obs::Ts(TimestampFormat::IsoNaive),
                Obs::Ts(TimestampFormat::Millis),
                Obs::Rule("iso-timestamps".into(), C2B, RuleResult::Rewritten),
                Obs::Rule("agent-aliases".into(), C2B, RuleResult::Rewritten),
            ],
        ),
        (
            r#"{"type":"ping","timestamp":1757350201.5}"#,
            vec![
                Obs::Ts(TimestampFormat::Seconds),
                Obs::Rule("iso-timestamps".into(), C2B, RuleResult::Unchanged),
                Obs::Rule("agent-aliases".into(), C2B, RuleResult::Unchanged),
            ],
        ),
        (
            r#"{"type":"ping","timestamp":"soon","payload":{"timestamp":"2025-09-08T16:50:01+02:00"}}"#,
            vec![
                Obs::Ts(TimestampFormat::Invalid),
                Obs::Ts(TimestampFormat::IsoZoned),
                // An invalid input counts as such though "now" replaced it.
                Obs::Rule("iso-timestamps".into(), C2B, RuleResult::Invalid),
                Obs::Rule("agent-aliases".into(), C2B, RuleResult::Unchanged),
            ],
        ),
        (r#"{"content":"hi"}"#, vec![]),
        (
            r#"{"type":"chat"}"#,
            vec![Obs::Rule(
                "agent-aliases".into(),
                C2B,
                RuleResult::Unchanged,
            )],
        ),
    ];
    for (input, want) in cases {
        assert_eq!(&apply(&d, C2B, input).1, want, "{input}");
    }
}

// ---- configuration ---------------------------------------------------------------------

#[test]
fn default_rules_are_the_documented_ones() {
    let rules = default_rules();
    assert_eq!(rules.len(), 2);
    let RuleConfig::Timestamp(ts) = &rules[0] else {
        panic!()
    };
    assert_eq!(ts.name, "iso-timestamps");
    assert_eq!(ts.direction, DirectionFilter::ClientToBackend);
    assert_eq!(
        ts.paths.iter().map(FieldPath::as_str).collect::<Vec<_>>(),
        ["timestamp", "payload.timestamp"]
    );
    assert!(ts.types.is_empty());
    assert_eq!(
        (ts.output, ts.naive_timezone, ts.epoch_unit, ts.on_invalid),
        (
            OutputFormat::UnixSeconds,
            NaiveTimezone::UTC,
            EpochUnit::Auto,
            OnInvalid::Now
        )
    );
    let RuleConfig::Rename(rn) = &rules[1] else {
        panic!()
    };
    assert_eq!(rn.name, "agent-aliases");
    assert_eq!(rn.direction, DirectionFilter::ClientToBackend);
    assert_eq!(
        rn.paths.iter().map(FieldPath::as_str).collect::<Vec<_>>(),
        ["type"]
    );
    assert_eq!(rn.map.len(), 2);
    assert_eq!(rn.map["execute_agent"], "start_agent");
    assert_eq!(rn.map["EXECUTE_AGENT"], "start_agent");
    // The same rules written as config.
    let written = configs(json!([
        {"name": "iso-timestamps", "kind": "timestamp", "direction": "client_to_backend", "paths": ["timestamp", "payload.timestamp"],
         "output": "unix_seconds", "naive_timezone": "UTC", "epoch_unit": "auto", "on_invalid": "now"},
        {"name": "agent-aliases", "kind": "rename", "paths": ["type"], "types": [],
         "map": {"execute_agent": "start_agent", "EXECUTE_AGENT": "start_agent"}},
    ]));
    assert_eq!(written, rules);
    let compiled = CompiledRules::compile(&rules).unwrap();
    assert_eq!((compiled.len(), compiled.is_empty()), (2, false));
    assert_eq!(
        compiled.rule_names().collect::<Vec<_>>(),
        ["iso-timestamps", "agent-aliases"]
    );
    let text = compiled.describe();
    for needle in [
        "rules[0] \"iso-timestamps\" (kind = timestamp)",
        "direction: client_to_backend",
        "paths: 'timestamp', 'payload.timestamp'",
        "output: unix_seconds; naive_timezone: UTC; epoch_unit: auto; on_invalid: now",
        "rules[1] \"agent-aliases\" (kind = rename)",
        "types: (all messages)",
        "\"EXECUTE_AGENT\" -> \"start_agent\"",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    assert!(!text.contains("warning"));
    let empty = CompiledRules::empty();
    assert_eq!((empty.len(), empty.is_empty()), (0, true));
    assert!(empty.describe().contains("no rules"));
}

#[test]
fn config_defaults_and_options() {
    let rules = configs(json!([
        {"name": "a", "kind": "timestamp", "paths": ["ts"]},
        {"name": "b.c_d-9", "kind": "timestamp", "paths": ["x.*.0"], "direction": "both", "types": ["ping"],
         "output": "rfc3339", "naive_timezone": "-07:00", "epoch_unit": "millis", "on_invalid": "reject"},
    ]));
    let RuleConfig::Timestamp(a) = &rules[0] else {
        panic!()
    };
    assert_eq!(
        (
            a.direction,
            a.output,
            a.naive_timezone,
            a.epoch_unit,
            a.on_invalid,
            a.types.len()
        ),
        (
            DirectionFilter::ClientToBackend,
            OutputFormat::UnixSeconds,
            NaiveTimezone::UTC,
            EpochUnit::Auto,
            OnInvalid::Now,
            0
        )
    );
    let RuleConfig::Timestamp(b) = &rules[1] else {
        panic!()
    };
    assert_eq!(
        (
            b.direction,
            b.output,
            b.naive_timezone.offset_secs(),
            b.epoch_unit,
            b.on_invalid,
            b.types.clone()
        ),
        (
            DirectionFilter::Both,
            OutputFormat::Rfc3339,
            -7 * 3600,
            EpochUnit::Millis,
            OnInvalid::Reject,
            vec!["ping".to_owned()]
        )
    );
    assert_eq!(b.naive_timezone.to_string(), "-07:00");
    for (tz, secs) in [
        ("UTC", 0),
        ("utc", 0),
        ("Z", 0),
        ("+02:00", 7200),
        ("+0530", 19800),
        ("-03", -10800),
        ("+23:59", 86340),
        ("-00:00", 0),
    ] {
        assert_eq!(
            NaiveTimezone::parse(tz).unwrap().offset_secs(),
            secs,
            "{tz}"
        );
    }
    let warn = CompiledRules::compile(&configs(json!([
        {"name": "w", "kind": "timestamp", "paths": ["ts", "l.*"], "epoch_unit": "millis", "on_invalid": "remove"}
    ])))
    .unwrap()
    .describe();
    assert!(
        warn.contains("warning: epoch_unit millis with output unix_seconds is not idempotent"),
        "{warn}"
    );
    assert!(warn.contains("keeps invalid array elements"), "{warn}");
}

#[test]
fn config_errors_name_rule_and_key() {
    let cases: &[(Value, &[&str])] = &[
        (
            json!({"name": "x", "kind": "timestamp", "paths": ["a"], "bogus": 1}),
            &["unknown field `bogus`"],
        ),
        (
            json!({"name": "x", "kind": "rename", "paths": ["a"], "map": {"a": "b"}, "bogus": 1}),
            &["unknown field `bogus`"],
        ),
        (
            json!({"name": "x", "kind": "timestamp", "paths": ["a"], "map": {"a": "b"}}),
            &[
                "rule \"x\"",
                "key `map`: does not apply to kind = \"timestamp\"",
            ],
        ),
        (
            json!({"name": "x", "kind": "rename", "paths": ["a"], "map": {"a": "b"}, "on_invalid": "keep"}),
            &[
                "rule \"x\"",
                "key `on_invalid`: does not apply to kind = \"rename\"",
            ],
        ),
        (
            json!({"name": "x", "kind": "rename", "paths": ["a"]}),
            &["rule \"x\"", "key `map`: is required"],
        ),
        (
            json!({"name": "x", "kind": "rename", "paths": ["a"], "map": {"a": "b"}, "output": "rfc3339"}),
            &["key `output`: does not apply to kind = \"rename\""],
        ),
        (
            json!({"name": "x", "kind": "shout", "paths": ["a"]}),
            &["unknown variant `shout`"],
        ),
        (
            json!({"name": "x", "paths": ["a"]}),
            &["missing field `kind`"],
        ),
        (
            json!({"name": "x", "kind": "timestamp"}),
            &["missing field `paths`"],
        ),
        (
            json!({"kind": "timestamp", "paths": ["a"]}),
            &["missing field `name`"],
        ),
        (
            json!({"name": "x", "kind": "rename", "paths": ["a"]}),
            &["key `map`: is required for kind = \"rename\""],
        ),
        (
            json!({"name": "x", "kind": "timestamp", "paths": ["a"], "output": "iso"}),
            &["unknown variant `iso`"],
        ),
        (
            json!({"name": "x", "kind": "timestamp", "paths": ["a"], "direction": "up"}),
            &["unknown variant `up`"],
        ),
        (
            json!({"name": "x", "kind": "timestamp", "paths": ["a..b"]}),
            &["rule \"x\"", "`paths`", "\"a..b\"", "segment 2 is empty"],
        ),
        (
            json!({"name": "x", "kind": "rename", "paths": ["ok", "b\\q"], "map": {"a": "b"}}),
            &["rule \"x\"", "`paths`", "unsupported escape"],
        ),
        (
            json!({"name": "x", "kind": "timestamp", "paths": []}),
            &["rule \"x\"", "`paths`", "at least one"],
        ),
        (
            json!({"name": "x", "kind": "timestamp", "paths": ["a"], "naive_timezone": "+25:00"}),
            &["rule \"x\"", "`naive_timezone`", "\"+25:00\""],
        ),
        (
            json!({"name": "x", "kind": "timestamp", "paths": ["a"], "naive_timezone": "Europe/Berlin"}),
            &["rule \"x\"", "`naive_timezone`", "named zones"],
        ),
        (
            json!({"name": "x", "kind": "timestamp", "paths": ["a"], "naive_timezone": "+02:60"}),
            &["`naive_timezone`"],
        ),
        (
            json!({"name": "x", "kind": "rename", "paths": ["a"], "map": {}}),
            &["rule \"x\"", "`map`", "at least one"],
        ),
        (
            json!({"name": "x", "kind": "rename", "paths": ["a"], "map": {"a": "b", "b": "c"}}),
            &["rule \"x\"", "`map`", "\"a\" -> \"b\""],
        ),
        (
            json!({"name": "bad name!", "kind": "timestamp", "paths": ["a"]}),
            &["rule \"bad name!\"", "`name`"],
        ),
        (
            json!({"name": "", "kind": "timestamp", "paths": ["a"]}),
            &["`name`", "empty"],
        ),
    ];
    for (cfg, needles) in cases {
        let err = serde_json::from_value::<RuleConfig>(cfg.clone())
            .expect_err(&cfg.to_string())
            .to_string();
        for needle in *needles {
            assert!(err.contains(needle), "{cfg}: {err:?} lacks {needle:?}");
        }
    }
    // compile() names the index, too
    let dup = configs(json!([
        {"name": "x", "kind": "timestamp", "paths": ["a"]},
        {"name": "y", "kind": "timestamp", "paths": ["a"]},
        {"name": "x", "kind": "rename", "paths": ["a"], "map": {"a": "b"}},
    ]));
    let err = CompiledRules::compile(&dup).unwrap_err();
    assert_eq!(
        err.to_string(),
        "rules[2] \"x\": key `name`: duplicate rule name (first used by rules[0])"
    );
    let mut built = default_rules();
    if let RuleConfig::Rename(r) = &mut built[1] {
        r.map.clear();
    }
    assert_eq!(
        CompiledRules::compile(&built).unwrap_err().to_string(),
        "rules[1] \"agent-aliases\": key `map`: must contain at least one entry"
    );
    let mut built = default_rules();
    if let RuleConfig::Timestamp(t) = &mut built[0] {
        t.paths.clear();
        t.name = "ok".into();
    }
    assert_eq!(
        CompiledRules::compile(&built).unwrap_err().to_string(),
        "rules[0] \"ok\": key `paths`: must list at least one path"
    );
    let mut built = default_rules();
    if let RuleConfig::Timestamp(t) = &mut built[0] {
        t.name = "with space".into();
    }
    assert!(CompiledRules::compile(&built)
        .unwrap_err()
        .to_string()
        .starts_with("rules[0] \"with space\": key `name`"));
}

#[test]
fn public_types_are_shareable() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<CompiledRules>();
    assert_send_sync::<RuleConfig>();
    assert_send_sync::<RuleError>();
    assert_eq!(Direction::ClientToBackend.as_str(), "client_to_backend");
    assert_eq!(Direction::BackendToClient.as_str(), "backend_to_client");
    assert_eq!(
        RuleResult::ALL.map(RuleResult::as_str),
        ["rewritten", "unchanged", "invalid", "rejected", "too_large"]
    );
    assert_eq!(
        TimestampFormat::ALL.map(TimestampFormat::as_str),
        [
            "iso_naive",
            "iso_zoned",
            "numeric_string",
            "seconds",
            "millis",
            "micros",
            "nanos",
            "invalid"
        ]
    );
    let now = UnixTime::now();
    assert!(now.secs > 1_700_000_000 && now.nanos < 1_000_000_000);
    assert_eq!(
        UnixTime {
            secs: 1,
            nanos: 2_500_000_000
        }
        .normalized(),
        UnixTime {
            secs: 3,
            nanos: 500_000_000
        }
    );
    // convert_timestamp is public for benchmarks
    let p = convert_timestamp(
        TimestampInput::Str("2025-09-08T16:50:01.447585"),
        NaiveTimezone::UTC,
        LeapSecond::Reject,
        EpochUnit::Auto,
    )
    .unwrap();
    let mut out = Vec::new();
    timestamp::write_unix_seconds(p.time, &mut out);
    assert_eq!(out, b"1757350201.447585");
}

// ---- hardening: output limit, Python's JSON, leap seconds -------------------------------

/// Records why messages were not parsed.
#[derive(Default)]
struct UnparsedRecorder(Vec<(Direction, Unparsed)>);

impl Observer for UnparsedRecorder {
    fn unparsed(&mut self, dir: Direction, why: Unparsed) {
        self.0.push((dir, why));
    }
}

/// The reply to a message `rules` must reject.
fn rejection(rules: &CompiledRules, input: &str) -> Value {
    match apply(rules, C2B, input).0 {
        Outcome::Rejected { reply, .. } => serde_json::from_slice(&reply).unwrap(),
        out => panic!("not rejected: {}", out_summary(&out)),
    }
}

fn with_settings(v: Value, settings: EngineSettings) -> CompiledRules {
    CompiledRules::compile_with(&configs(v), settings).unwrap_or_else(|e| panic!("compile: {e}"))
}

fn limited(max_output_bytes: usize) -> EngineSettings {
    EngineSettings {
        max_output_bytes,
        ..EngineSettings::default()
    }
}

/// The reproduction: `"timestamp":""` repeated to just under 1 MiB, each one replaced by "now".
fn repeated_empty_timestamps(total: usize) -> String {
    let member = r#""timestamp":"","#;
    let tail = r#""message_id":"m-9"}"#;
    let n = (total - 1 - tail.len()) / member.len();
    let mut msg = String::with_capacity(total);
    msg.push('{');
    msg.push_str(&member.repeat(n));
    msg.push_str(tail);
    msg
}

#[test]
fn a_rewrite_over_the_output_limit_is_not_forwarded() {
    let limit = 1 << 20;
    let rules = with_settings(
        json!([{"name": "ts", "kind": "timestamp", "paths": ["timestamp"], "on_invalid": "now"}]),
        limited(limit),
    );
    let msg = repeated_empty_timestamps(1_048_561);
    assert!(msg.len() <= limit);
    let (out, obs) = apply(&rules, C2B, &msg);
    let Outcome::TooLarge { reply, len } = out else {
        panic!("forwarded: {:?}", out_summary(&out))
    };
    assert!(len > limit, "{len}");
    let v: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(v["type"], "error_message");
    assert_eq!(v["error_code"], "MESSAGE_TOO_LARGE");
    assert_eq!(
        v["details"],
        json!({"bytes": len, "max_message_bytes": limit, "message_id": "m-9"})
    );
    assert_eq!(v["timestamp"], json!(1757350300.25));
    assert!(v["error_message"].as_str().unwrap().contains("limit"));
    // The rule rewrote it, but the rewrite was not forwarded.
    assert_eq!(
        obs.last(),
        Some(&Obs::Rule("ts".into(), C2B, RuleResult::TooLarge))
    );
    assert!(!obs.contains(&Obs::Rule("ts".into(), C2B, RuleResult::Rewritten)));

    // Exactly at the limit it is forwarded; one byte over, not.
    let small = r#"{"timestamp":""}"#;
    let rewritten = format!(r#"{{"timestamp":{NOW_SECS}}}"#);
    let at = |n| {
        with_settings(
            json!([{"name": "ts", "kind": "timestamp", "paths": ["timestamp"]}]),
            limited(n),
        )
    };
    assert_eq!(
        apply(&at(rewritten.len()), C2B, small).0,
        Outcome::Rewritten(rewritten.clone().into_bytes())
    );
    assert!(matches!(
        apply(&at(rewritten.len() - 1), C2B, small).0,
        Outcome::TooLarge { len, .. } if len == rewritten.len()
    ));
    // Unchanged and not-JSON messages are not measured: they are forwarded as received.
    assert_eq!(
        apply(
            &at(125),
            C2B,
            &format!(r#"{{"timestamp":1.5,"pad":"{}"}}"#, "x".repeat(200))
        )
        .0,
        Outcome::Unchanged
    );
}

fn out_summary(out: &Outcome) -> String {
    let s = format!("{out:?}");
    s.chars().take(200).collect()
}

#[test]
fn error_replies_keep_to_the_output_limit() {
    // A message_id of most of the message would make the reply as large as the message.
    let limit = 4096;
    let id = "i".repeat(4000);
    let reject = with_settings(
        json!([{"name": "ts", "kind": "timestamp", "paths": ["timestamp"], "on_invalid": "reject"}]),
        limited(limit),
    );
    let input = format!(r#"{{"timestamp":"bad","message_id":"{id}"}}"#);
    let Outcome::Rejected { reply, .. } = apply(&reject, C2B, &input).0 else {
        panic!("not rejected")
    };
    assert!(reply.len() <= limit, "{}", reply.len());
    let v: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(v["error_code"], "INVALID_TIMESTAMP");
    assert!(v["details"].get("message_id").is_none());
    // A short one is kept.
    let input = r#"{"timestamp":"bad","message_id":"m1"}"#;
    assert_eq!(rejection(&reject, input)["details"]["message_id"], "m1");

    let now = with_settings(
        json!([{"name": "ts", "kind": "timestamp", "paths": ["timestamp"]}]),
        limited(limit),
    );
    let input = format!(
        r#"{{"message_id":"{}",{}"timestamp":""}}"#,
        "i".repeat(3900),
        r#""timestamp":"","#.repeat(10)
    );
    assert!(input.len() <= limit);
    let Outcome::TooLarge { reply, .. } = apply(&now, C2B, &input).0 else {
        panic!("forwarded")
    };
    assert!(reply.len() <= limit);
    assert!(serde_json::from_slice::<Value>(&reply).unwrap()["details"]
        .get("message_id")
        .is_none());
}

#[test]
fn python_dialect_messages_get_the_rules() {
    // The reproduction: json.dumps writes NaN, json.loads reads it; the rules must still apply.
    let input = r#"{"type":"execute_agent","timestamp":"2025-09-08T16:50:01.447585","score":NaN,"lo":-Infinity,"hi":Infinity}"#;
    let want = r#"{"type":"start_agent","timestamp":1757350201.447585,"score":NaN,"lo":-Infinity,"hi":Infinity}"#;
    // Not `check`: serde_json, which it parses the output with, reads no NaN.
    assert_eq!(
        apply(&defaults(), C2B, input).0,
        Outcome::Rewritten(want.as_bytes().to_vec())
    );

    // The strict dialect reads RFC 8259 only, and says why it did not parse.
    let strict = CompiledRules::compile_with(
        &default_rules(),
        EngineSettings {
            json_dialect: JsonDialect::Strict,
            ..EngineSettings::default()
        },
    )
    .unwrap();
    let mut rec = UnparsedRecorder::default();
    assert_eq!(
        strict.apply(C2B, input.as_bytes(), NOW, &mut rec),
        Outcome::NotJson
    );
    assert_eq!(rec.0, [(C2B, Unparsed::InvalidJson)]);

    // Not keys, not -NaN, nothing glued on; inside strings they are just text.
    for bad in [
        r#"{"timestamp":-NaN}"#,
        r#"{"timestamp":Infinityx}"#,
        r#"{NaN:1,"timestamp":"2025-09-08T16:50:01"}"#,
        r#"{"timestamp":"2025-09-08T16:50:01","x":[NaN,]}"#,
        r#"{"timestamp":nan}"#,
    ] {
        let mut rec = UnparsedRecorder::default();
        assert_eq!(
            defaults().apply(C2B, bad.as_bytes(), NOW, &mut rec),
            Outcome::NotJson,
            "{bad}"
        );
        assert_eq!(rec.0, [(C2B, Unparsed::InvalidJson)], "{bad}");
    }
    check(
        &defaults(),
        C2B,
        r#"{"type":"NaN","timestamp":"2025-09-08T16:50:01Z","note":"Infinity"}"#,
        &Want::Out(r#"{"type":"NaN","timestamp":1757350201.0,"note":"Infinity"}"#),
        "in strings",
    );

    // Deeper than the limit: not parsed, and counted as such; no direction's rules: not even looked at.
    let shallow = with_settings(
        json!([{"name": "ts", "kind": "timestamp", "paths": ["timestamp"]}]),
        EngineSettings {
            max_json_depth: 3,
            ..EngineSettings::default()
        },
    );
    let mut rec = UnparsedRecorder::default();
    let at_limit = r#"{"timestamp":"2025-09-08T16:50:01Z","a":[[1]]}"#;
    assert!(matches!(
        shallow.apply(C2B, at_limit.as_bytes(), NOW, &mut rec),
        Outcome::Rewritten(_)
    ));
    let over = r#"{"timestamp":"2025-09-08T16:50:01Z","a":[[[1]]]}"#;
    assert_eq!(
        shallow.apply(C2B, over.as_bytes(), NOW, &mut rec),
        Outcome::NotJson
    );
    assert_eq!(
        shallow.apply(B2C, over.as_bytes(), NOW, &mut rec),
        Outcome::Unchanged
    );
    assert_eq!(
        shallow.apply(C2B, b"{\"a\":\"\xff\"}", NOW, &mut rec),
        Outcome::NotJson
    );
    assert_eq!(
        rec.0,
        [(C2B, Unparsed::TooDeep), (C2B, Unparsed::InvalidUtf8)]
    );
}

#[test]
fn non_finite_numbers_are_invalid_timestamps() {
    for value in ["NaN", "Infinity", "-Infinity"] {
        let input = format!(r#"{{"timestamp":{value},"message_id":"m1"}}"#);
        for (on_invalid, want) in [
            (
                "now",
                Some(format!(r#"{{"timestamp":{NOW_SECS},"message_id":"m1"}}"#)),
            ),
            ("keep", None),
            ("remove", Some(r#"{"message_id":"m1"}"#.to_owned())),
        ] {
            let rules = ts_rule(&["timestamp"], json!({ "on_invalid": on_invalid }));
            let (out, obs) = apply(&rules, C2B, &input);
            let forwarded = forwarded(&input, &out);
            assert_eq!(
                forwarded,
                want.unwrap_or(input.clone()),
                "{value} {on_invalid}"
            );
            assert!(obs.contains(&Obs::Ts(TimestampFormat::Invalid)));
        }
        for output in ["unix_millis", "rfc3339"] {
            let rules = ts_rule(&["timestamp"], json!({ "output": output }));
            let out = forwarded(&input, &apply(&rules, C2B, &input).0);
            assert!(!out.contains(value), "{out}");
        }
        let rules = ts_rule(&["timestamp"], json!({ "on_invalid": "reject" }));
        let v = rejection(&rules, &input);
        assert!(
            v["error_message"].as_str().unwrap().contains("non-finite"),
            "{v}"
        );
    }
    // A non-finite message_id is not copied into a reply (which is strict JSON).
    let rules = ts_rule(&["timestamp"], json!({ "on_invalid": "reject" }));
    for id in ["NaN", "-Infinity"] {
        let input = format!(r#"{{"timestamp":"bad","message_id":{id}}}"#);
        assert!(rejection(&rules, &input)["details"]
            .get("message_id")
            .is_none());
    }
}

#[test]
fn second_sixty_is_invalid_unless_configured() {
    let input = r#"{"timestamp":"2025-09-08T16:50:60"}"#;
    // Default: invalid, so on_invalid decides (here "now"), never 16:51:00.
    let (out, obs) = apply(&defaults(), C2B, input);
    assert_eq!(
        forwarded(input, &out),
        format!(r#"{{"timestamp":{NOW_SECS}}}"#)
    );
    assert!(obs.contains(&Obs::Ts(TimestampFormat::Invalid)));
    let reject = ts_rule(&["timestamp"], json!({ "on_invalid": "reject" }));
    let v = rejection(&reject, input);
    assert!(
        v["error_message"].as_str().unwrap().contains("second 60"),
        "{v}"
    );
    // next_minute keeps the old reading, in any minute.
    let next = ts_rule(&["timestamp"], json!({ "leap_second": "next_minute" }));
    check(
        &next,
        C2B,
        input,
        &Want::Out(r#"{"timestamp":1757350260.0}"#),
        "next_minute",
    );
    check(
        &next,
        C2B,
        r#"{"timestamp":"2016-12-31T23:59:60.5Z"}"#,
        &Want::Out(r#"{"timestamp":1483228800.5}"#),
        "next_minute, real leap second",
    );
    assert!(next.describe().contains("leap_second: next_minute"));
    assert!(defaults().describe().contains("leap_second: reject"));
    // Only for timestamp rules.
    let err = serde_json::from_value::<Vec<RuleConfig>>(json!([{
        "name": "r", "kind": "rename", "paths": ["type"], "map": {"a": "b"}, "leap_second": "reject"
    }]))
    .unwrap_err()
    .to_string();
    assert!(err.contains("leap_second"), "{err}");
}
